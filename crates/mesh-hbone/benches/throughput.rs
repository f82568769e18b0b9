//! HBONE (mTLS + HTTP/2 CONNECT, pooled) against plain TCP over loopback, client and server in
//! one process (2 worker threads). Two modes (`HBONE_BENCH_MODE=throughput|latency|all`,
//! default `all`):
//!
//! - throughput: 1 and 8 concurrent streams, one direction (client writes, server discards).
//!   Prints MB/s and process CPU (user+system) per GB moved — CPU per byte is much steadier
//!   than MB/s on a shared machine. Plain TCP and HBONE runs are interleaved
//!   `HBONE_BENCH_RUNS` times (default 3) and the medians printed.
//! - latency: 1 KB request / 1 KB response ping-pong over one connection (one HBONE stream vs
//!   one TCP connection) at `HBONE_LAT_RPS` (default 1000) for `HBONE_LAT_N` requests
//!   (default 5000) per run; latency counts from the scheduled send time whenever the client
//!   is behind schedule (no coordinated omission), else from the actual send (so timer slop is
//!   not counted). Prints p50/p99/p99.9 of each and HBONE's added latency (medians over runs).
//!
//! Tuning knobs (bytes): HBONE_STREAM_WINDOW / HBONE_CONN_WINDOW / HBONE_FRAME /
//! HBONE_SEND_BUFFER; HBONE_CHUNK sets the application read/write size (default 64 KiB);
//! HBONE_BENCH_MB the volume per throughput run.

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

/// The port of the CONNECT authority that selects the echo handler (others sink).
const ECHO_PORT: u16 = 7;
/// Request and response size of the latency mode, bytes.
const MSG: usize = 1024;

fn env_u(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn chunk() -> usize {
    env_u("HBONE_CHUNK", 64 * 1024) as usize
}

struct Handler;

impl ConnectHandler for Handler {
    async fn handle(&self, req: ConnectRequest, responder: Responder) {
        if let Ok(s) = responder.accept() {
            let _ = if req.authority.port() == ECHO_PORT { echo(s).await } else { sink(s).await };
        }
    }
}

/// Reads to EOF, then answers with the byte count so the writer knows all arrived.
async fn sink<S: AsyncRead + AsyncWrite + Unpin>(mut s: S) -> std::io::Result<()> {
    let mut buf = vec![0u8; chunk()];
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

/// Answers each `MSG`-byte request with `MSG` bytes.
async fn echo<S: AsyncRead + AsyncWrite + Unpin>(mut s: S) -> std::io::Result<()> {
    let mut buf = [0u8; MSG];
    loop {
        match s.read_exact(&mut buf).await {
            Ok(_) => s.write_all(&buf).await?,
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return s.shutdown().await,
            Err(e) => return Err(e),
        }
    }
}

async fn push<S: AsyncRead + AsyncWrite + Unpin>(mut s: S, bytes: u64) -> std::io::Result<()> {
    let chunk = chunk();
    let buf = vec![0x5au8; chunk];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(chunk as u64) as usize;
        s.write_all(&buf[..n]).await?;
        left -= n as u64;
    }
    s.shutdown().await?;
    let mut ack = [0u8; 8];
    s.read_exact(&mut ack).await?;
    assert_eq!(u64::from_be_bytes(ack), bytes);
    Ok(())
}

/// Process CPU time (user + system) so far, from /proc (10 ms resolution).
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name: state is field 3, utime 14, stime 15 (clock ticks).
    let rest = stat.rsplit_once(") ").map(|(_, r)| r).unwrap_or("");
    let f: Vec<u64> = rest.split(' ').map(|x| x.parse().unwrap_or(0)).collect();
    let ticks = f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0);
    Duration::from_millis(ticks * 10) // USER_HZ is 100 on Linux
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() { 0.0 } else { v[v.len() / 2] }
}

struct Setup {
    tcp_addr: SocketAddr,
    pool: Pool,
    key: PoolKey,
}

#[allow(clippy::print_stdout)]
fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(run());
}

#[allow(clippy::print_stdout)]
async fn run() {
    let mode = std::env::var("HBONE_BENCH_MODE").unwrap_or_else(|_| "all".into());
    let setup = setup().await;
    if mode == "throughput" || mode == "all" {
        throughput(&setup).await;
    }
    if mode == "latency" || mode == "all" {
        latency(&setup).await;
    }
}

#[allow(clippy::print_stdout)]
async fn setup() -> Setup {
    let defaults = PoolSettings::default();
    let stream_window = env_u("HBONE_STREAM_WINDOW", defaults.stream_window.into()) as u32;
    let conn_window = env_u("HBONE_CONN_WINDOW", defaults.conn_window.into()) as u32;
    let frame = env_u("HBONE_FRAME", defaults.max_frame_size.into()) as u32;
    let send_buffer = env_u("HBONE_SEND_BUFFER", defaults.max_send_buffer as u64) as usize;

    // Plain TCP baseline: the same handlers, chosen by the listener.
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let tcp_addr = tcp.local_addr().unwrap();
    let echo_tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let echo_addr = echo_tcp.local_addr().unwrap();
    for (l, is_echo) in [(tcp, false), (echo_tcp, true)] {
        tokio::spawn(async move {
            loop {
                let (s, _) = l.accept().await.unwrap();
                s.set_nodelay(true).unwrap();
                if is_echo {
                    tokio::spawn(echo(s));
                } else {
                    tokio::spawn(sink(s));
                }
            }
        });
    }

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
        HboneServer::new(server_settings, config, Arc::new(Handler))
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
    let key = PoolKey { src: cid, dst_identities: Arc::from(vec![sid]), addr, src_addr: None };
    // Warm the pool (handshake not measured).
    let s = pool.connect(&key, ConnectParams::new(sink_target())).await.unwrap();
    push(s, 1024).await.unwrap();
    println!(
        "windows: stream {stream_window} conn {conn_window} frame {frame} send_buffer {send_buffer}; chunk {}",
        chunk()
    );
    LATENCY_TCP.set(echo_addr).unwrap();
    Setup { tcp_addr, pool, key }
}

static LATENCY_TCP: std::sync::OnceLock<SocketAddr> = std::sync::OnceLock::new();

fn sink_target() -> SocketAddr {
    "127.0.0.1:9".parse().unwrap()
}

/// Runs `streams` concurrent pushes of `total` bytes; returns (MB/s, CPU seconds per GB).
async fn measure<F, Fut>(streams: u64, total: u64, open: F) -> (f64, f64)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let cpu = cpu_time();
    let t = Instant::now();
    let tasks: Vec<_> = (0..streams).map(|_| tokio::spawn(open())).collect();
    for t in tasks {
        t.await.unwrap();
    }
    let wall = t.elapsed();
    let cpu = cpu_time() - cpu;
    let gb = total as f64 / 1e9;
    (gb * 1e3 / wall.as_secs_f64(), cpu.as_secs_f64() / gb)
}

#[allow(clippy::print_stdout)]
async fn throughput(s: &Setup) {
    let total = env_u("HBONE_BENCH_MB", 512) * 1024 * 1024;
    let runs = env_u("HBONE_BENCH_RUNS", 3).max(1);
    println!("throughput: {} MiB per run, {runs} runs, medians", total >> 20);
    for streams in [1u64, 8] {
        let per = total / streams;
        let (mut tcp, mut hb) = ((vec![], vec![]), (vec![], vec![]));
        for _ in 0..runs {
            let tcp_addr = s.tcp_addr;
            // HBONE_BENCH_SKIP_TCP=1 leaves the baseline out (for profiling HBONE alone).
            if env_u("HBONE_BENCH_SKIP_TCP", 0) == 0 {
                let (r, c) = measure(streams, per * streams, || async move {
                    let s = TcpStream::connect(tcp_addr).await.unwrap();
                    s.set_nodelay(true).unwrap();
                    push(s, per).await.unwrap();
                })
                .await;
                tcp.0.push(r);
                tcp.1.push(c);
            }
            let (r, c) = measure(streams, per * streams, || {
                let (pool, key) = (s.pool.clone(), s.key.clone());
                async move {
                    let s = pool.connect(&key, ConnectParams::new(sink_target())).await.unwrap();
                    push(s, per).await.unwrap();
                }
            })
            .await;
            hb.0.push(r);
            hb.1.push(c);
        }
        let (tr, tc, hr, hc) = (median(tcp.0), median(tcp.1), median(hb.0), median(hb.1));
        println!(
            "{streams} stream(s): plain TCP {tr:6.0} MB/s {tc:5.2} CPU-s/GB   HBONE {hr:6.0} MB/s {hc:5.2} CPU-s/GB   \
             ({:.0} % of TCP throughput, {:.1}x CPU per byte)",
            hr / tr * 100.0,
            hc / tc
        );
    }
}

/// One fixed-rate ping-pong series; latencies in microseconds, sorted.
async fn ping_pong<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S, n: usize, rps: u64) -> Vec<f64> {
    let req = [0xa5u8; MSG];
    let mut resp = [0u8; MSG];
    let interval = Duration::from_nanos(1_000_000_000 / rps.max(1));
    // Warm-up, not recorded.
    for _ in 0..200 {
        s.write_all(&req).await.unwrap();
        s.read_exact(&mut resp).await.unwrap();
    }
    let mut lat = Vec::with_capacity(n);
    let start = Instant::now();
    let mut prev_done = start;
    for i in 0..n {
        let scheduled = start + interval * i as u32;
        if prev_done < scheduled {
            tokio::time::sleep_until(scheduled.into()).await;
        }
        // Behind schedule: the wait is the system's fault and counts. Otherwise count from
        // now, so the timer's millisecond granularity is not charged to the transport.
        let from = if prev_done >= scheduled { scheduled } else { Instant::now() };
        s.write_all(&req).await.unwrap();
        s.read_exact(&mut resp).await.unwrap();
        prev_done = Instant::now();
        lat.push(prev_done.duration_since(from).as_secs_f64() * 1e6);
    }
    lat.sort_by(|a, b| a.total_cmp(b));
    lat
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 * p / 100.0).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

#[allow(clippy::print_stdout)]
async fn latency(s: &Setup) {
    let rps = env_u("HBONE_LAT_RPS", 1000);
    let n = env_u("HBONE_LAT_N", 5000) as usize;
    let runs = env_u("HBONE_BENCH_RUNS", 3).max(1);
    let echo_addr = *LATENCY_TCP.get().unwrap();
    let target = SocketAddr::new(echo_addr.ip(), ECHO_PORT);
    println!("latency: {MSG} B ping-pong at {rps}/s, {n} requests per run, {runs} runs, medians (µs)");
    let ps = [50.0, 99.0, 99.9];
    let (mut tcp, mut hb) = (vec![vec![]; 3], vec![vec![]; 3]);
    for _ in 0..runs {
        let mut t = TcpStream::connect(echo_addr).await.unwrap();
        t.set_nodelay(true).unwrap();
        let l = ping_pong(&mut t, n, rps).await;
        for (i, p) in ps.iter().enumerate() {
            tcp[i].push(pct(&l, *p));
        }
        let mut h = s.pool.connect(&s.key, ConnectParams::new(target)).await.unwrap();
        let l = ping_pong(&mut h, n, rps).await;
        for (i, p) in ps.iter().enumerate() {
            hb[i].push(pct(&l, *p));
        }
    }
    println!("{:>8} {:>10} {:>10} {:>10}", "", "plain TCP", "HBONE", "added");
    for (i, p) in ps.iter().enumerate() {
        let (t, h) = (median(tcp[i].clone()), median(hb[i].clone()));
        println!("{:>8} {t:10.1} {h:10.1} {:10.1}", format!("p{p}"), h - t);
    }
}
