//! L4 data-path bench: the same client and servers on loopback, **direct** (client → pod IP)
//! and **meshed** (client → SOCKS5 on ztunnel node-a → HBONE/mTLS → ztunnel node-b → pod).
//! The two ztunnels run as real processes (the `ztunnel` binary with a YAML config) so their
//! RSS is their own; mesh-ca runs in-process. Prints a Markdown table; never asserts timings.
//!
//! Run: `cargo bench -p ztunnel --bench l4` (add `-- --quick` for a shorter smoke run).
//! Each measurement is repeated (direct and meshed interleaved) and the median is shown with
//! the min–max of the repetitions in brackets.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hdrhistogram::Histogram;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

/// Pods live on 127.NET.x.y; chosen apart from the integration tests' nets (101..141).
const NET: u8 = 250;
const TOKEN_A: &str = "bench-token-node-a-0123456789";
const TOKEN_B: &str = "bench-token-node-b-0123456789";
/// Open connections for the memory scenario.
const MEM_CONNS: usize = 10_000;

/// Durations and counts of one run.
#[derive(Debug, Clone, Copy)]
struct Plan {
    /// Repetitions of each measurement (count).
    reps: usize,
    /// Unmeasured lead-in before each measurement (duration).
    warmup: Duration,
    /// Measured window of a throughput run (duration).
    bulk: Duration,
    /// Measured window of a latency run (duration).
    latency: Duration,
    /// Request rate of the latency runs (requests per second).
    rate: u64,
    /// Measured window of a connection-rate run (duration).
    cps: Duration,
    /// Concurrent connectors in the connection-rate runs (count).
    cps_concurrency: usize,
}

impl Plan {
    fn new(quick: bool) -> Self {
        let s = |ms| Duration::from_millis(if quick { ms / 4 } else { ms });
        Plan {
            reps: if quick { 1 } else { 3 },
            warmup: s(400),
            bulk: s(2000),
            latency: s(4000),
            rate: 1000,
            cps: s(2000),
            cps_concurrency: 16,
        }
    }
}

fn pod_ip(sub: u8, host: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, NET, sub, host))
}

fn client_ip() -> IpAddr {
    pod_ip(1, 10)
}

fn echo_addr() -> SocketAddr {
    SocketAddr::new(pod_ip(2, 10), 8080)
}

fn sink_addr() -> SocketAddr {
    SocketAddr::new(pod_ip(2, 11), 8080)
}

/// Echo pod of the memory scenario, served by a child process so the 10k server-side sockets
/// don't count against this process's descriptor limit.
fn holder_addr() -> SocketAddr {
    SocketAddr::new(pod_ip(2, 12), 8080)
}

fn pod(name: &str, node: &str, sa: &str, ip: IpAddr) -> String {
    format!(
        "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: bench, labels: {{app: {name}}}}}\n\
         spec:\n  nodeName: {node}\n  serviceAccountName: {sa}\n  containers:\n  - name: app\n    image: echo\n    \
         ports: [{{containerPort: 8080, name: tcp}}]\nstatus: {{phase: Running, podIP: {ip}}}\n"
    )
}

/// Namespace `bench` (ambient, STRICT mTLS): a client pod on node-a, echo and sink pods on node-b.
fn model() -> String {
    let mut y = String::from(
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: bench\n  labels: {istio.io/dataplane-mode: ambient}\n\
         ---\napiVersion: v1\nkind: ServiceAccount\nmetadata: {name: client, namespace: bench}\n\
         ---\napiVersion: v1\nkind: ServiceAccount\nmetadata: {name: server, namespace: bench}\n\
         ---\napiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: default, namespace: bench}\n\
         spec: {mtls: {mode: STRICT}}\n",
    );
    y += &pod("client", "node-a", "client", client_ip());
    y += &pod("echo", "node-b", "server", echo_addr().ip());
    y += &pod("sink", "node-b", "server", sink_addr().ip());
    y += &pod("holder", "node-b", "server", holder_addr().ip());
    y
}

// ---------------------------------------------------------------------------------------------
// Processes

/// A child process, killed when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// This bench binary again, as an echo server on `addr` (see [`holder_addr`]).
async fn spawn_echo_process(addr: SocketAddr) -> anyhow::Result<Proc> {
    let exe = std::env::current_exe()?;
    let child = Command::new(exe).arg("--serve-echo").arg(addr.to_string()).stdin(Stdio::null()).spawn()?;
    let p = Proc(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(addr).await.is_err() {
        if Instant::now() > deadline {
            bail!("echo helper process not listening on {addr}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(p)
}

/// A ztunnel child process; killed when dropped.
struct Node {
    name: &'static str,
    child: Child,
    socks5: SocketAddr,
    readiness: SocketAddr,
    log: PathBuf,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Node {
    /// VmRSS of the process, in KiB.
    fn rss_kib(&self) -> anyhow::Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .context("no VmRSS in /proc/<pid>/status")
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }
}

/// A free loopback port (bound and released; the tiny race is acceptable for a bench).
fn free_port() -> anyhow::Result<SocketAddr> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

fn spawn_node(dir: &Path, ca: SocketAddr, name: &'static str, token: &str) -> anyhow::Result<Node> {
    let token_file = dir.join(format!("{name}.token"));
    std::fs::write(&token_file, token)?;
    let (socks5, readiness) = (free_port()?, free_port()?);
    let config = format!(
        "node: {name}\ncaAddress: https://{ca}\ncaRoot: root.pem\ntokenFile: {name}.token\nmodel: [model]\n\
         outboundAddr: {}\nsocks5Addr: {socks5}\nadminAddr: {}\nmetricsAddr: {}\nreadinessAddr: {readiness}\n",
        free_port()?,
        free_port()?,
        free_port()?,
    );
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(&path, config)?;
    let log = dir.join(format!("{name}.log"));
    let out = std::fs::File::create(&log)?;
    let child = Command::new(env!("CARGO_BIN_EXE_ztunnel"))
        .arg("--config")
        .arg(&path)
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .spawn()
        .context("spawning the ztunnel binary")?;
    Ok(Node { name, child, socks5, readiness, log })
}

async fn wait_ready(node: &mut Node) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = node.child.try_wait()? {
            bail!("{} exited ({status}):\n{}", node.name, node.log_tail());
        }
        if http_status(node.readiness, "/healthz/ready").await == Some(200) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{} not ready after 30 s:\n{}", node.name, node.log_tail());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn http_status(addr: SocketAddr, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect(addr).await.ok()?;
    let req = format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).await.ok()?;
    out.split(' ').nth(1)?.parse().ok()
}

/// Raises RLIMIT_NOFILE (the hard limit too when we may); returns the soft limit in force.
/// Children inherit it.
fn raise_fd_limit(want: u64) -> u64 {
    let mut l = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit only read/write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) != 0 {
            return 1024;
        }
        if l.rlim_max < want {
            // Works with CAP_SYS_RESOURCE (root); otherwise we keep the old hard limit.
            let raised = libc::rlimit { rlim_cur: want, rlim_max: want };
            libc::setrlimit(libc::RLIMIT_NOFILE, &raised);
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut l);
        }
        l.rlim_cur = l.rlim_max.min(want.max(l.rlim_cur));
        libc::setrlimit(libc::RLIMIT_NOFILE, &l);
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut l);
    }
    l.rlim_cur
}

// ---------------------------------------------------------------------------------------------
// Servers (in this process) and clients

/// Echo: writes back what it reads, until EOF.
async fn echo_server(addr: SocketAddr) -> anyhow::Result<()> {
    let l = TcpListener::bind(addr).await.with_context(|| format!("bind echo {addr}"))?;
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else { continue };
            let _ = s.set_nodelay(true);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 16 * 1024];
                loop {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if s.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                    }
                }
                let _ = s.shutdown().await;
            });
        }
    });
    Ok(())
}

/// Sink: reads and counts bytes.
async fn sink_server(addr: SocketAddr, count: Arc<AtomicU64>) -> anyhow::Result<()> {
    let l = TcpListener::bind(addr).await.with_context(|| format!("bind sink {addr}"))?;
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else { continue };
            let count = count.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 256 * 1024];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    count.fetch_add(n as u64, Ordering::Relaxed);
                }
            });
        }
    });
    Ok(())
}

/// How the client reaches a destination.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Via {
    Direct,
    Meshed(SocketAddr),
}

/// A socket bound to the client pod's IP. IP_BIND_ADDRESS_NO_PORT lets the kernel pick the
/// port at connect time (per destination), so connection-rate runs don't exhaust ports.
fn client_socket() -> std::io::Result<TcpSocket> {
    use std::os::fd::AsRawFd;
    let sock = TcpSocket::new_v4()?;
    let one: libc::c_int = 1;
    // SAFETY: setsockopt reads `one` (an int) for the length we pass.
    unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
    sock.bind(SocketAddr::new(client_ip(), 0))?;
    Ok(sock)
}

/// Connects from the client pod to `dst`, directly or through SOCKS5 on node-a.
async fn connect(path: Via, dst: SocketAddr) -> anyhow::Result<TcpStream> {
    match path {
        Via::Direct => {
            let s = client_socket()?.connect(dst).await?;
            s.set_nodelay(true)?;
            Ok(s)
        }
        Via::Meshed(socks) => {
            let mut s = client_socket()?.connect(socks).await?;
            s.set_nodelay(true)?;
            s.write_all(&[5, 1, 0]).await?;
            let mut m = [0u8; 2];
            s.read_exact(&mut m).await?;
            if m != [5, 0] {
                bail!("SOCKS5 method reply {m:?}");
            }
            let SocketAddr::V4(d) = dst else { bail!("IPv4 only") };
            let mut req = vec![5, 1, 0, 1];
            req.extend_from_slice(&d.ip().octets());
            req.extend_from_slice(&d.port().to_be_bytes());
            s.write_all(&req).await?;
            let mut r = [0u8; 10];
            s.read_exact(&mut r).await?;
            if r[1] != 0 {
                bail!("SOCKS5 reply code {}", r[1]);
            }
            Ok(s)
        }
    }
}

/// Bulk one-way send over `streams` connections to the sink.
/// Result of a bulk run: MB/s (10^6 B/s) at the sink, and the ztunnels' CPU seconds per GB.
async fn throughput(
    plan: Plan,
    path: Via,
    streams: usize,
    sunk: &Arc<AtomicU64>,
    pids: &[u32],
) -> anyhow::Result<(f64, f64)> {
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for _ in 0..streams {
        let mut s = connect(path, sink_addr()).await?;
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let chunk = vec![0x5au8; 128 * 1024];
            while !stop.load(Ordering::Relaxed) {
                if s.write_all(&chunk).await.is_err() {
                    break;
                }
            }
            let _ = s.shutdown().await;
        }));
    }
    tokio::time::sleep(plan.warmup).await;
    let (c0, t0, cpu0) = (sunk.load(Ordering::Relaxed), Instant::now(), cpu_secs(pids));
    tokio::time::sleep(plan.bulk).await;
    let (c1, t1, cpu1) = (sunk.load(Ordering::Relaxed), Instant::now(), cpu_secs(pids));
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
    }
    let bytes = (c1 - c0) as f64;
    Ok((bytes / (t1 - t0).as_secs_f64() / 1e6, (cpu1 - cpu0) / (bytes / 1e9)))
}

/// User + system CPU seconds consumed so far by the processes `pids` (from /proc/<pid>/stat).
fn cpu_secs(pids: &[u32]) -> f64 {
    // SAFETY: sysconf has no memory effects.
    let tick = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    pids.iter()
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // Fields after the command name: state is field 3, utime 14, stime 15.
            let rest: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
            let ticks: u64 = rest.get(11)?.parse::<u64>().ok()? + rest.get(12)?.parse::<u64>().ok()?;
            Some(ticks as f64 / tick)
        })
        .sum()
}

/// Latency percentiles of one run, microseconds: p50, p99, p99.9.
type Percentiles = [f64; 3];

/// 1 KB ping-pong over one long-lived connection on a fixed timetable, on a dedicated thread
/// with blocking I/O (tokio's 1 ms timer would blur the schedule). Each latency is measured
/// from the *intended* send time, so a stall also counts against the requests queued behind
/// it (no coordinated omission).
async fn latency(plan: Plan, path: Via) -> anyhow::Result<Percentiles> {
    let s = connect(path, echo_addr()).await?.into_std()?;
    s.set_nonblocking(false)?;
    tokio::task::spawn_blocking(move || ping_pong(plan, s)).await?
}

fn ping_pong(plan: Plan, mut s: std::net::TcpStream) -> anyhow::Result<Percentiles> {
    use std::io::{Read, Write};
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3)?;
    let req = [0xa5u8; 1024];
    let mut resp = [0u8; 1024];
    let interval = Duration::from_nanos(1_000_000_000 / plan.rate);
    let warm = (plan.warmup.as_nanos() / interval.as_nanos()) as u64;
    let total = warm + (plan.latency.as_nanos() / interval.as_nanos()) as u64;
    let start = Instant::now() + Duration::from_millis(5);
    for i in 0..total {
        let intended = start + interval * i as u32;
        // Sleep most of the way, then spin the last ~150 µs for a precise send time.
        loop {
            let now = Instant::now();
            if now >= intended {
                break;
            }
            let left = intended - now;
            if left > Duration::from_micros(150) {
                std::thread::sleep(left - Duration::from_micros(150));
            } else {
                std::hint::spin_loop();
            }
        }
        s.write_all(&req)?;
        s.read_exact(&mut resp)?;
        if i >= warm {
            hist.record(intended.elapsed().as_nanos() as u64)?;
        }
    }
    let us = |q| hist.value_at_quantile(q) as f64 / 1000.0;
    Ok([us(0.5), us(0.99), us(0.999)])
}

/// New connections per second: connect + 64 B round trip + close, `concurrency` at once.
/// Returns (completed per second, errors, the ztunnels' CPU milliseconds per 1,000).
async fn conn_rate(plan: Plan, path: Via, pids: &[u32]) -> (f64, u64, f64) {
    let stop = Arc::new(AtomicBool::new(false));
    let (done, errors) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut tasks = Vec::new();
    for _ in 0..plan.cps_concurrency {
        let (stop, done, errors) = (stop.clone(), done.clone(), errors.clone());
        tasks.push(tokio::spawn(async move {
            let mut buf = [0u8; 64];
            while !stop.load(Ordering::Relaxed) {
                let one = async {
                    let mut s = connect(path, echo_addr()).await?;
                    s.write_all(&[7u8; 64]).await?;
                    s.read_exact(&mut buf).await?;
                    anyhow::Ok(())
                };
                match tokio::time::timeout(Duration::from_secs(5), one).await {
                    Ok(Ok(())) => done.fetch_add(1, Ordering::Relaxed),
                    _ => errors.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }
    tokio::time::sleep(plan.warmup).await;
    let (c0, e0, t0) = (done.load(Ordering::Relaxed), errors.load(Ordering::Relaxed), Instant::now());
    let cpu0 = cpu_secs(pids);
    tokio::time::sleep(plan.cps).await;
    let (c1, e1, t1) = (done.load(Ordering::Relaxed), errors.load(Ordering::Relaxed), Instant::now());
    let cpu1 = cpu_secs(pids);
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    let n = (c1 - c0) as f64;
    (n / (t1 - t0).as_secs_f64(), e1 - e0, (cpu1 - cpu0) * 1e6 / n.max(1.0))
}

/// Opens `n` tunneled connections (each proven by a round trip) and holds them; returns them
/// and the number that failed.
async fn open_many(socks: SocketAddr, dst: SocketAddr, n: usize) -> (Vec<TcpStream>, usize) {
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let next = next.clone();
        tasks.push(tokio::spawn(async move {
            let (mut held, mut failed) = (Vec::new(), 0usize);
            while next.fetch_add(1, Ordering::Relaxed) < n as u64 {
                let one = async {
                    let mut s = connect(Via::Meshed(socks), dst).await?;
                    s.write_all(b"hello").await?;
                    let mut b = [0u8; 5];
                    s.read_exact(&mut b).await?;
                    anyhow::Ok(s)
                };
                match tokio::time::timeout(Duration::from_secs(10), one).await {
                    Ok(Ok(s)) => held.push(s),
                    _ => failed += 1,
                }
            }
            (held, failed)
        }));
    }
    let (mut all, mut failed) = (Vec::with_capacity(n), 0);
    for t in tasks {
        if let Ok((h, f)) = t.await {
            all.extend(h);
            failed += f;
        }
    }
    (all, failed)
}

// ---------------------------------------------------------------------------------------------
// Statistics and output

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s[s.len() / 2]
}

/// "median (min–max)" when there are several runs.
fn cell(v: &[f64], digits: usize) -> String {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let m = median(&s);
    if s.len() > 1 {
        format!("{m:.digits$} ({:.digits$}–{:.digits$})", s[0], s[s.len() - 1])
    } else {
        format!("{m:.digits$}")
    }
}

fn machine() -> String {
    let nproc = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines().find_map(|l| {
                l.strip_prefix("model name").map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
            })
        })
        .unwrap_or_default();
    format!("nproc {nproc}, kernel {}, CPU {cpu}", kernel.trim())
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split(' ')
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

// ---------------------------------------------------------------------------------------------

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    // Each process (this one, the echo helper, each ztunnel) holds ~10k sockets at most.
    let fd_limit = raise_fd_limit(MEM_CONNS as u64 + 4096);
    if let Some(i) = args.iter().position(|a| a == "--serve-echo") {
        let addr: SocketAddr = args.get(i + 1).context("--serve-echo ADDR")?.parse()?;
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        return rt.block_on(async {
            echo_server(addr).await?;
            std::future::pending::<anyhow::Result<()>>().await
        });
    }
    let plan = Plan::new(args.iter().any(|a| a == "--quick"));
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.block_on(run(plan, fd_limit))
}

async fn run(plan: Plan, fd_limit: u64) -> anyhow::Result<()> {
    let started = Instant::now();
    let load_before = loadavg();
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    std::fs::create_dir(d.join("model"))?;
    std::fs::write(d.join("model/mesh.yaml"), model())?;
    std::fs::write(d.join("tokens"), format!("node-a {TOKEN_A}\nnode-b {TOKEN_B}\n"))?;
    std::fs::write(
        d.join("ca.yaml"),
        "trustDomain: cluster.local\ndefaultTtl: 1h\nmaxTtl: 2d\nmodel: [model]\nnodeTokensFile: tokens\n",
    )?;
    let config = mesh_ca::CaConfig::load(&d.join("ca.yaml"))?;
    let opts = mesh_ca::CaOptions { config, state_dir: d.join("state"), listen: "127.0.0.1:0".parse()? };
    let ca = mesh_ca::start(opts).await?;
    std::fs::write(d.join("root.pem"), &ca.root_pem)?;

    echo_server(echo_addr()).await?;
    let sunk = Arc::new(AtomicU64::new(0));
    sink_server(sink_addr(), sunk.clone()).await?;

    let mut a = spawn_node(d, ca.local_addr, "node-a", TOKEN_A)?;
    let mut b = spawn_node(d, ca.local_addr, "node-b", TOKEN_B)?;
    wait_ready(&mut a).await?;
    wait_ready(&mut b).await?;
    // Idle: ready, certificates loaded, no traffic yet.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle = (a.rss_kib()?, b.rss_kib()?);
    let meshed = Via::Meshed(a.socks5);
    let pids = [a.child.id(), b.child.id()];
    eprintln!("mesh up in {:?}; measuring ({} reps each)", started.elapsed(), plan.reps);

    // Prove both paths once before timing anything.
    for p in [Via::Direct, meshed] {
        let mut s = connect(p, echo_addr()).await.with_context(|| format!("{p:?}"))?;
        s.write_all(b"ping").await?;
        let mut b4 = [0u8; 4];
        s.read_exact(&mut b4).await?;
    }

    let mut rows: Vec<[String; 5]> = Vec::new();
    for streams in [1usize, 8] {
        let (mut dv, mut mv, mut cpu) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..plan.reps {
            dv.push(throughput(plan, Via::Direct, streams, &sunk, &pids).await?.0);
            let (rate, c) = throughput(plan, meshed, streams, &sunk, &pids).await?;
            mv.push(rate);
            cpu.push(c);
        }
        eprintln!("throughput x{streams}: direct {dv:.0?} meshed {mv:.0?} MB/s");
        rows.push([
            format!("throughput, {streams} stream{}", if streams > 1 { "s" } else { "" }),
            "MB/s".into(),
            cell(&dv, 0),
            cell(&mv, 0),
            format!("{:.0} % of direct", 100.0 * median(&mv) / median(&dv)),
        ]);
        rows.push([
            format!("throughput, {streams} stream{}", if streams > 1 { "s" } else { "" }),
            "ztunnel CPU-s per GB (a+b)".into(),
            "–".into(),
            cell(&cpu, 2),
            String::new(),
        ]);
    }

    let (mut dl, mut ml) = (Vec::new(), Vec::new());
    for _ in 0..plan.reps {
        dl.push(latency(plan, Via::Direct).await?);
        ml.push(latency(plan, meshed).await?);
    }
    eprintln!("latency µs [p50,p99,p999]: direct {dl:.0?} meshed {ml:.0?}");
    for (i, name) in ["p50", "p99", "p99.9"].iter().enumerate() {
        let d: Vec<f64> = dl.iter().map(|p| p[i]).collect();
        let m: Vec<f64> = ml.iter().map(|p| p[i]).collect();
        rows.push([
            format!("latency, 1 KB ping-pong @ {} req/s, 1 conn", plan.rate),
            format!("{name} µs"),
            cell(&d, 0),
            cell(&m, 0),
            format!("{:+.0} µs", median(&m) - median(&d)),
        ]);
    }

    let (mut dc, mut mc, mut cpu, mut errs) = (Vec::new(), Vec::new(), Vec::new(), (0, 0));
    for _ in 0..plan.reps {
        let (r, e, _) = conn_rate(plan, Via::Direct, &pids).await;
        dc.push(r);
        errs.0 += e;
        let (r, e, c) = conn_rate(plan, meshed, &pids).await;
        mc.push(r);
        cpu.push(c);
        errs.1 += e;
    }
    eprintln!("conn/s: direct {dc:.0?} meshed {mc:.0?} errors {errs:?}");
    rows.push([
        format!("new connections, concurrency {} (errors {}/{})", plan.cps_concurrency, errs.0, errs.1),
        "conn/s".into(),
        cell(&dc, 0),
        cell(&mc, 0),
        format!("{:.0} % of direct", 100.0 * median(&mc) / median(&dc)),
    ]);
    rows.push([
        "new connections".into(),
        "ztunnel CPU-ms per 1k conns (a+b)".into(),
        "–".into(),
        cell(&cpu, 0),
        String::new(),
    ]);

    let loaded = (a.rss_kib()?, b.rss_kib()?);
    // Leave room for this process's other descriptors.
    let n = MEM_CONNS.min(fd_limit.saturating_sub(1024) as usize);
    let holder = spawn_echo_process(holder_addr()).await?;
    let t = Instant::now();
    let (held, failed) = open_many(a.socks5, holder_addr(), n).await;
    let open_time = t.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let busy = (a.rss_kib()?, b.rss_kib()?);
    let open = held.len();
    drop(held);
    drop(holder);
    eprintln!("{open} tunneled connections open ({failed} failed) in {open_time:?}");
    for (node, i, l, h) in [("node-a", idle.0, loaded.0, busy.0), ("node-b", idle.1, loaded.1, busy.1)] {
        rows.push([
            format!("memory {node}"),
            "RSS idle MiB".into(),
            "–".into(),
            format!("{:.1}", mib(i)),
            String::new(),
        ]);
        rows.push([
            format!("memory {node}"),
            "RSS after the runs above MiB".into(),
            "–".into(),
            format!("{:.1}", mib(l)),
            String::new(),
        ]);
        let per = if open > 0 { h.saturating_sub(l) as f64 / open as f64 } else { 0.0 };
        rows.push([
            format!("memory {node}"),
            format!("RSS with {open} open tunneled conns MiB"),
            "–".into(),
            format!("{:.1}", mib(h)),
            format!("+{per:.1} KiB/conn"),
        ]);
    }

    println!();
    println!("## L4 bench: direct vs ztunnel pair (SOCKS5 → HBONE → inbound), loopback");
    println!();
    println!("| scenario | metric | direct | meshed | ratio / added |");
    println!("|---|---|---|---|---|");
    for r in &rows {
        println!("| {} |", r.join(" | "));
    }
    println!();
    println!(
        "Machine: {}. Load average before/after: {load_before} / {} (the cores are shared with other \
         work; numbers are indicative). Everything (client, servers, mesh-ca, both ztunnels) runs on \
         this machine. Values: median of {} runs (min–max). fd limit {fd_limit}.",
        machine(),
        loadavg(),
        plan.reps,
    );
    println!(
        "Meshed connections include the SOCKS5 handshake to node-a; ztunnels log at their default \
         level (access log on). Total bench time {:.0} s.",
        started.elapsed().as_secs_f64()
    );
    if open < MEM_CONNS || failed > 0 {
        println!(
            "Note: {open} of {MEM_CONNS} connections held ({failed} failed; fd limit {fd_limit}). For the \
             full count raise the hard limit (e.g. `ulimit -Hn 65536` with CAP_SYS_RESOURCE, `LimitNOFILE=` \
             or /etc/security/limits.conf) to at least {}.",
            MEM_CONNS + 4096
        );
    }
    drop((a, b));
    Ok(())
}
