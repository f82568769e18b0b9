//! Throughput over loopback: HBONE (mTLS + HTTP/2 CONNECT, pooled) against a plain TCP copy,
//! 1 and 8 concurrent streams, one direction (client writes, server discards). Prints MB/s.
//! Window sizes can be swept with HBONE_STREAM_WINDOW / HBONE_CONN_WINDOW / HBONE_FRAME /
//! HBONE_SEND_BUFFER (bytes); HBONE_BENCH_MB sets the total volume per run.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use mesh_hbone::{
    ConnectHandler, ConnectParams, ConnectRequest, HboneServer, Pool, PoolKey, PoolSettings, Responder,
    ServerSettings, SpiffeId, StaticCerts, TcpDialer,
};
use mesh_identity::cert::local::LocalCa;
use mesh_identity::{Identity, TrustBundle, server_config};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const CHUNK: usize = 64 * 1024;

struct Sink;

impl ConnectHandler for Sink {
    async fn handle(&self, _req: ConnectRequest, responder: Responder) {
        if let Ok(s) = responder.accept() {
            let _ = sink(s).await;
        }
    }
}

/// Reads to EOF, then answers with the byte count so the writer knows all arrived.
async fn sink<S: AsyncRead + AsyncWrite + Unpin>(mut s: S) -> std::io::Result<()> {
    let mut buf = vec![0u8; CHUNK];
    let mut total = 0u64;
    loop {
        let n = s.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        total += n as u64;
    }
    s.write_all(&total.to_be_bytes()).await?;
    s.shutdown().await
}

async fn push<S: AsyncRead + AsyncWrite + Unpin>(mut s: S, bytes: u64) -> std::io::Result<()> {
    let buf = vec![0x5au8; CHUNK];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(CHUNK as u64) as usize;
        s.write_all(&buf[..n]).await?;
        left -= n as u64;
    }
    s.shutdown().await?;
    let mut ack = [0u8; 8];
    s.read_exact(&mut ack).await?;
    assert_eq!(u64::from_be_bytes(ack), bytes);
    Ok(())
}

fn env_u(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn mbps(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / d.as_secs_f64() / 1e6
}

#[allow(clippy::print_stdout)]
fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(run());
}

#[allow(clippy::print_stdout)]
async fn run() {
    let total = env_u("HBONE_BENCH_MB", 512) * 1024 * 1024;
    let defaults = PoolSettings::default();
    let stream_window = env_u("HBONE_STREAM_WINDOW", defaults.stream_window.into()) as u32;
    let conn_window = env_u("HBONE_CONN_WINDOW", defaults.conn_window.into()) as u32;
    let frame = env_u("HBONE_FRAME", defaults.max_frame_size.into()) as u32;
    let send_buffer = env_u("HBONE_SEND_BUFFER", defaults.max_send_buffer as u64) as usize;

    // Plain TCP baseline.
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let tcp_addr = tcp.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (s, _) = tcp.accept().await.unwrap();
            s.set_nodelay(true).unwrap();
            tokio::spawn(sink(s));
        }
    });

    // HBONE.
    let ca = LocalCa::new("bench").unwrap();
    let trust = TrustBundle::new("cluster.local", [ca.root_der().clone()]).unwrap();
    let now = SystemTime::now() - Duration::from_secs(60);
    let issue = |id: &SpiffeId| {
        Arc::new(ca.issue(&Identity::Workload(id.clone()), now, Duration::from_secs(3600)).unwrap())
    };
    let sid = SpiffeId::new("cluster.local", "srv", "srv").unwrap();
    let cid = SpiffeId::new("cluster.local", "cli", "cli").unwrap();
    let scert = issue(&sid);
    let ccert = issue(&cid);
    let server_settings = ServerSettings {
        stream_window,
        conn_window,
        max_frame_size: frame,
        max_send_buffer: send_buffer,
        ..ServerSettings::default()
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let config = Arc::new(server_config(&scert, &trust).unwrap());
    tokio::spawn(
        HboneServer::new(server_settings, config, Arc::new(Sink))
            .serve(listener, std::future::pending::<()>()),
    );
    let pool = Pool::new(
        PoolSettings {
            stream_window,
            conn_window,
            max_frame_size: frame,
            max_send_buffer: send_buffer,
            ..PoolSettings::default()
        },
        Arc::new(StaticCerts::new([(cid.clone(), ccert)], trust)),
        Arc::new(TcpDialer),
    );
    let key = PoolKey { src: cid, dst_identities: Arc::from(vec![sid]), addr };
    let target: SocketAddr = "127.0.0.1:9".parse().unwrap();
    // Warm the pool (handshake not measured).
    let s = pool.connect(&key, ConnectParams::new(target)).await.unwrap();
    push(s, 1024).await.unwrap();

    println!(
        "windows: stream {stream_window} conn {conn_window} frame {frame} send_buffer {send_buffer}; {} MiB per run",
        total >> 20
    );
    for streams in [1u64, 8] {
        let per = total / streams;
        let t = Instant::now();
        let tasks: Vec<_> = (0..streams)
            .map(|_| {
                tokio::spawn(async move {
                    let s = TcpStream::connect(tcp_addr).await.unwrap();
                    s.set_nodelay(true).unwrap();
                    push(s, per).await.unwrap();
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        let tcp_rate = mbps(per * streams, t.elapsed());

        let t = Instant::now();
        let tasks: Vec<_> = (0..streams)
            .map(|_| {
                let (pool, key) = (pool.clone(), key.clone());
                tokio::spawn(async move {
                    let s = pool.connect(&key, ConnectParams::new(target)).await.unwrap();
                    push(s, per).await.unwrap();
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        let hbone_rate = mbps(per * streams, t.elapsed());
        println!(
            "{streams} stream(s): plain TCP {tcp_rate:8.0} MB/s   HBONE {hbone_rate:8.0} MB/s   ({:.0} %)",
            hbone_rate / tcp_rate * 100.0
        );
    }
}
