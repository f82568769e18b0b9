//! Config-update latency (issue 7): how long after a route file changes does the waypoint
//! answer with the new route, with 1,000 and 100,000 workloads in its model.
//!
//! Everything is real and on loopback, outside the lab: a model folder written the way a user
//! would (one file per namespace of workloads, the bench namespace in its own file, the
//! VirtualService alone in `route.yaml`), two echo backends (`meshctl echo`), `mesh-ca` and the
//! waypoint (release binaries from `MESH_BIN_DIR` or beside this one) with its file source on
//! the folder and its plaintext HTTP listener on 127.0.0.1. Each repetition replaces
//! `route.yaml` atomically (a dot-file written, then renamed over it, as editors do) to flip
//! the route of Service `echo` between backends A and B, and a keep-alive HTTP/1.1 client
//! sends one request after another to the plaintext listener until an answer carries the new
//! route's header and comes from the new backend. Latency is the time from the rename to that
//! answer; the client's round trip (well under a millisecond) bounds its resolution.
//!
//! The waypoint logs at `warn` except the config store (`mesh_model=info`, JSON lines), whose
//! `config applied` line splits each latency into the file source and translation (write →
//! applied) and what follows (route compilation on the next request, the request itself).
//! The waypoint's RSS (VmRSS) is read after each repetition.
//!
//! Shape of the model: workloads are pods of Deployments of [`PODS_PER_SERVICE`] replicas, each
//! with its Service, in namespaces of [`PODS_PER_NAMESPACE`] pods; pods on 100 nodes, IPs from
//! 10.0.0.0/8. mesh-ca reads only the bench namespace (a folder of its own): it is not what is
//! measured, and it only needs the waypoint's pod.

use std::fmt::Write as _;
use std::io::{Read as _, Write as _};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use http::Request;
use http::header::HOST;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::net::TcpStream;

use crate::results::{Better, Report, Row, Stat};

/// Replicas of each workload Deployment, all behind one Service (pods).
pub const PODS_PER_SERVICE: usize = 10;
/// Pods in each workload namespace (one file each).
pub const PODS_PER_NAMESPACE: usize = 1000;
/// Nodes the workload pods are spread over.
const NODES: usize = 100;
/// The namespace of the waypoint, the target Service and the backends.
const NS: &str = "bench";
/// The Service whose route flips; the `Host` of every request.
const TARGET: &str = "echo";
/// Loopback block of the backends (pod IPs) and the waypoint pod's address in the model.
const BACKEND_NET: [u8; 3] = [127, 77, 0];
const TOKEN: &str = "config-update-bench-node-a-0123456789";
/// The longest the waypoint may take to load the model and serve route A.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(300);
/// The longest one update may take to show.
const UPDATE_TIMEOUT: Duration = Duration::from_secs(120);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Requests sent after the first new answer, each of which must show the new route too.
const CONFIRM: usize = 50;
/// Quiet time between repetitions, so a repetition never overlaps the previous reload.
const SETTLE: Duration = Duration::from_secs(1);

/// Repetitions and model sizes of a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Route flips per model size (count).
    pub reps: usize,
    /// Workload pods in the model (counts).
    pub sizes: Vec<usize>,
}

impl Plan {
    /// 5 flips at 1,000 and 100,000 workloads; `--quick`: 2 flips at 1,000. `reps` overrides.
    pub fn new(quick: bool, reps: Option<usize>) -> Plan {
        Plan {
            reps: reps.unwrap_or(if quick { 2 } else { 5 }).max(1),
            sizes: if quick { vec![1000] } else { vec![1000, 100_000] },
        }
    }
}

/// What [`measure`] got: rows for the sizes that worked, a reason for each that did not.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Outcome {
    pub rows: Vec<Row>,
    pub skipped: Vec<String>,
}

/// Runs the plan and adds its rows and skipped sizes to `report` (the harness's hook).
pub fn append(report: &mut Report, plan: &Plan) {
    let out = measure(plan.reps, &plan.sizes);
    report.rows.extend(out.rows);
    report.skipped.extend(out.skipped);
}

/// Measures each size in turn, each with a fresh model, mesh-ca and waypoint. A size that
/// fails is reported in [`Outcome::skipped`] and the others still run.
pub fn measure(reps: usize, sizes: &[usize]) -> Outcome {
    let mut out = Outcome::default();
    for &n in sizes {
        match measure_size(n, reps) {
            Ok(m) => out.rows.extend(m.rows()),
            Err(e) => {
                progress(&format!("config-update: {n} workloads: {e:#}"));
                out.skipped.push(format!("config_update/{n}workloads: {e:#}"));
            }
        }
    }
    out
}

/// One size's figures.
#[derive(Debug, Clone, PartialEq)]
pub struct Measured {
    /// Workload pods in the model (count).
    pub workloads: usize,
    /// Rename → first answer with the new route, per repetition (ms).
    pub latency_ms: Vec<f64>,
    /// Rename → the store's `config applied` line, per repetition (ms; NaN when not found).
    pub applied_ms: Vec<f64>,
    /// Waypoint VmRSS after each repetition (MiB).
    pub rss_mib: Vec<f64>,
    /// Waypoint start → first answer with route A (s).
    pub startup_s: f64,
}

impl Measured {
    /// The harness's rows: `config_update/<n>workloads` (ms) and `rss_config/<n>workloads` (MiB).
    pub fn rows(&self) -> Vec<Row> {
        let row = |metric: &str, unit: &str, values: &[f64]| Row {
            scenario: "waypoint".to_string(),
            metric: format!("{metric}/{}workloads", self.workloads),
            unit: unit.to_string(),
            better: Better::Lower,
            value: Stat::of(values.to_vec()),
        };
        vec![row("config_update", "ms", &self.latency_ms), row("rss_config", "MiB", &self.rss_mib)]
    }
}

/// Starts everything for `workloads` pods, flips the route `reps` times, stops everything.
pub fn measure_size(workloads: usize, reps: usize) -> anyhow::Result<Measured> {
    let bins = Bins::find()?;
    let dir = tempfile::Builder::new().prefix("mesh-config-update-").tempdir().context("temp dir")?;
    let d = dir.path();
    // Children are declared after `dir` so they are dropped (killed) before it is removed.
    let mut procs = Procs::default();

    let backends = Backends { a: procs.echo(&bins, d, Route::A)?, b: procs.echo(&bins, d, Route::B)? };
    let t = Instant::now();
    let bytes = write_model(&d.join("model"), workloads, &backends)?;
    progress(&format!(
        "config-update: {workloads} workloads: model written ({:.1} MB) in {:.2} s",
        bytes as f64 / 1e6,
        t.elapsed().as_secs_f64()
    ));
    std::fs::create_dir(d.join("ca-model"))?;
    std::fs::write(d.join("ca-model/bench.yaml"), bench_yaml(&backends))?;
    std::fs::write(d.join("tokens"), format!("node-a {TOKEN}\n"))?;
    std::fs::write(d.join("node-a.token"), TOKEN)?;
    std::fs::write(
        d.join("ca.yaml"),
        "trustDomain: cluster.local\nmodel: [ca-model]\nnodeTokensFile: tokens\n",
    )?;
    let ca_addr = free_port()?;
    let ca = procs.spawn(
        "mesh-ca",
        Command::new(&bins.ca)
            .arg("--config")
            .arg(d.join("ca.yaml"))
            .arg("--state-dir")
            .arg(d.join("ca"))
            .arg("--listen")
            .arg(ca_addr.to_string()),
        d.join("ca.log"),
        true,
    )?;
    let root = d.join("ca/root-cert.pem");
    procs.wait_for(ca, "serving", Duration::from_secs(30), || {
        std::fs::metadata(&root).is_ok_and(|m| m.len() > 0) && std::net::TcpStream::connect(ca_addr).is_ok()
    })?;

    let (plain, readiness) = (free_port()?, free_port()?);
    let config = format!(
        "namespace: {NS}\ngateway: waypoint\npod: waypoint-0\nnode: node-a\ncaAddress: https://{ca_addr}\n\
         caRoot: ca/root-cert.pem\ntokenFile: node-a.token\nmodel: [model]\nhboneAddr: {}\nadminAddr: {}\n\
         metricsAddr: {}\nreadinessAddr: {readiness}\nplaintextHttpAddr: {plain}\n\
         logFormat: json\nlogLevel: \"warn,mesh_model=info\"\n",
        free_port()?,
        free_port()?,
        free_port()?,
    );
    std::fs::write(d.join("waypoint.yaml"), config)?;
    let log = d.join("waypoint.log");
    let started = Instant::now();
    let waypoint = procs.spawn(
        "waypoint",
        Command::new(&bins.waypoint).arg("--config").arg(d.join("waypoint.yaml")),
        log.clone(),
        true,
    )?;
    procs.wait_for(waypoint, "ready", STARTUP_TIMEOUT, || {
        http_status(readiness, "/healthz/ready") == Some(200)
    })?;
    let ready_s = started.elapsed().as_secs_f64();

    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let mut client = Poller::new(plain);
    let mut current = Route::A;
    let first = rt.block_on(async {
        let deadline = started + STARTUP_TIMEOUT;
        loop {
            if let Some(a) = client.get().await
                && a.shows(Route::A)
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("no answer with route A after {} s", STARTUP_TIMEOUT.as_secs());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    if let Err(e) = first {
        bail!("{e}\n{}", procs.tail(waypoint));
    }
    let pid = procs.pid(waypoint);
    let startup_s = started.elapsed().as_secs_f64();
    progress(&format!(
        "config-update: {workloads} workloads: waypoint ready in {ready_s:.2} s, route A served at \
         {startup_s:.2} s, RSS {:.1} MiB",
        crate::lab::rss_mib(pid)?
    ));

    let mut m = Measured {
        workloads,
        latency_ms: Vec::new(),
        applied_ms: Vec::new(),
        rss_mib: Vec::new(),
        startup_s,
    };
    let route_file = d.join("model/route.yaml");
    for rep in 1..=reps {
        std::thread::sleep(SETTLE);
        procs.check_alive(waypoint)?;
        let to = current.flip();
        let (flip, wall) = replace_file(&route_file, &route_yaml(to))?;
        let seen = rt.block_on(client.until(to, current, flip + UPDATE_TIMEOUT));
        let seen = match seen {
            Ok(s) => s,
            Err(e) => bail!("rep {rep} ({} → {}): {e}\n{}", current.name(), to.name(), procs.tail(waypoint)),
        };
        let latency = seen.at.duration_since(flip);
        let applied = applied_after(&std::fs::read_to_string(&log).unwrap_or_default(), wall);
        let applied_ms = applied.first().map_or(f64::NAN, |t| (*t - wall).as_seconds_f64() * 1e3);
        let rss = crate::lab::rss_mib(pid)?;
        progress(&format!(
            "config-update: {workloads} workloads: rep {rep} {}→{}: {:.1} ms (config applied at +{applied_ms:.1} ms; \
             {} requests before, {} old, {} other, {} failed; {} applies; RSS {rss:.1} MiB)",
            current.name(),
            to.name(),
            latency.as_secs_f64() * 1e3,
            seen.requests,
            seen.old,
            seen.other,
            seen.failed,
            applied.len(),
        ));
        if seen.regressed > 0 {
            bail!(
                "rep {rep}: {} of {CONFIRM} answers after the first new one showed the old route",
                seen.regressed
            );
        }
        m.latency_ms.push(latency.as_secs_f64() * 1e3);
        m.applied_ms.push(applied_ms);
        m.rss_mib.push(rss);
        current = to;
    }
    drop(procs);
    drop(dir);
    Ok(m)
}

// ---------------------------------------------------------------------------------------------
// The model

/// The two routes the VirtualService flips between, each to its own backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    A,
    B,
}

impl Route {
    /// The `x-route` header the route sets, and the backend Service's suffix.
    pub fn name(self) -> &'static str {
        match self {
            Route::A => "a",
            Route::B => "b",
        }
    }

    pub fn flip(self) -> Route {
        match self {
            Route::A => Route::B,
            Route::B => Route::A,
        }
    }

    /// The backend's pod, named in each of its answers.
    fn pod(self) -> String {
        format!("echo-{}-0", self.name())
    }

    /// The backend pod's address.
    fn ip(self) -> IpAddr {
        let [a, b, c] = BACKEND_NET;
        IpAddr::V4(Ipv4Addr::new(a, b, c, if self == Route::A { 1 } else { 2 }))
    }
}

/// Where the two backends listen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backends {
    pub a: SocketAddr,
    pub b: SocketAddr,
}

/// Writes the model folder: `bench.yaml`, `route.yaml` (route A) and `workloads/wl-NNN.yaml`;
/// the bytes written.
pub fn write_model(dir: &Path, workloads: usize, backends: &Backends) -> anyhow::Result<usize> {
    let wl = dir.join("workloads");
    std::fs::create_dir_all(&wl).with_context(|| format!("creating {}", wl.display()))?;
    let mut bytes = 0;
    let mut put = |path: PathBuf, text: String| -> anyhow::Result<()> {
        bytes += text.len();
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))
    };
    put(dir.join("bench.yaml"), bench_yaml(backends))?;
    put(dir.join("route.yaml"), route_yaml(Route::A))?;
    for ns in 0..workloads.div_ceil(PODS_PER_NAMESPACE) {
        let pods = ns * PODS_PER_NAMESPACE..((ns + 1) * PODS_PER_NAMESPACE).min(workloads);
        put(wl.join(format!("wl-{ns:03}.yaml")), namespace_yaml(ns, pods))?;
    }
    Ok(bytes)
}

/// The bench namespace (using waypoint `waypoint`), the waypoint's Gateway and pod, the
/// backend pods (out of the mesh, so the waypoint dials them in plain TCP), their Services
/// `echo-a` and `echo-b`, and the target Service `echo`.
pub fn bench_yaml(backends: &Backends) -> String {
    let [a, b, c] = BACKEND_NET;
    let mut y = format!(
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {NS}\n  labels: {{istio.io/dataplane-mode: ambient, istio.io/use-waypoint: waypoint}}\n\
         ---\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: waypoint, namespace: {NS}}}\n\
         spec:\n  gatewayClassName: istio-waypoint\n  listeners: [{{name: mesh, port: 15008, protocol: HBONE}}]\n\
         ---\napiVersion: v1\nkind: Pod\nmetadata: {{name: waypoint-0, namespace: {NS}, labels: {{gateway.networking.k8s.io/gateway-name: waypoint, istio.io/dataplane-mode: none}}}}\n\
         spec: {{nodeName: node-a, serviceAccountName: waypoint, containers: [{{name: istio-proxy, image: waypoint}}]}}\n\
         status: {{phase: Running, podIP: {a}.{b}.{c}.10, podIPs: [{{ip: {a}.{b}.{c}.10}}]}}\n"
    );
    for (i, (route, addr)) in [(Route::A, backends.a), (Route::B, backends.b)].into_iter().enumerate() {
        let (name, ip) = (format!("echo-{}", route.name()), route.ip());
        let _ = write!(
            y,
            "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: {pod}, namespace: {NS}, labels: {{app: {name}, istio.io/dataplane-mode: none}}}}\n\
             spec: {{nodeName: node-a, serviceAccountName: {name}, containers: [{{name: echo, image: echo, ports: [{{name: http, containerPort: {port}}}]}}]}}\n\
             status: {{phase: Running, podIP: {ip}, podIPs: [{{ip: {ip}}}]}}\n\
             ---\napiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: {NS}}}\n\
             spec: {{clusterIP: 10.201.0.{vip}, selector: {{app: {name}}}, ports: [{{name: http, port: 80, targetPort: {port}}}]}}\n",
            pod = route.pod(),
            port = addr.port(),
            vip = i + 2,
        );
        debug_assert_eq!(addr.ip(), ip);
    }
    let _ = write!(
        y,
        "---\napiVersion: v1\nkind: Service\nmetadata: {{name: {TARGET}, namespace: {NS}}}\n\
         spec: {{clusterIP: 10.201.0.1, selector: {{app: echo-a}}, ports: [{{name: http, port: 80, targetPort: {}}}]}}\n",
        backends.a.port()
    );
    y
}

/// The VirtualService of `echo`, alone in its file: everything to `echo-<route>`, with
/// `x-route: <route>` on the response.
pub fn route_yaml(route: Route) -> String {
    let r = route.name();
    format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: {TARGET}, namespace: {NS}}}\n\
         spec:\n  hosts: [{TARGET}]\n  http:\n\
         \x20 - name: to-{r}\n    route: [{{destination: {{host: echo-{r}}}}}]\n\
         \x20   headers: {{response: {{set: {{x-route: {r}}}}}}}\n"
    )
}

/// Workload namespace `wl-NNN` (ambient) with the global pod indexes `pods`: Deployments of
/// [`PODS_PER_SERVICE`] replicas, each with its Service and ServiceAccount name.
fn namespace_yaml(ns: usize, pods: std::ops::Range<usize>) -> String {
    let name = format!("wl-{ns:03}");
    let mut y = String::with_capacity(pods.len() * 400);
    let _ = write!(
        y,
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {name}\n  labels: {{istio.io/dataplane-mode: ambient}}\n"
    );
    for i in pods {
        let app = i / PODS_PER_SERVICE;
        if i % PODS_PER_SERVICE == 0 || i % PODS_PER_NAMESPACE == 0 {
            // VIPs from 10.200.0.0/16, pods from 10.0.0.0/12: apart up to a million pods.
            let vip = app + 1;
            let _ = write!(
                y,
                "---\napiVersion: v1\nkind: Service\nmetadata: {{name: app-{app}, namespace: {name}}}\n\
                 spec: {{clusterIP: 10.200.{}.{}, selector: {{app: app-{app}}}, ports: [{{name: http, port: 80, targetPort: 8080}}]}}\n",
                (vip >> 8) & 0xff,
                vip & 0xff,
            );
        }
        let ip = Ipv4Addr::from(0x0a00_0000u32 + i as u32 + 1);
        let _ = write!(
            y,
            "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: app-{app}-{replica}, namespace: {name}, labels: {{app: app-{app}, version: v1}}}}\n\
             spec: {{nodeName: node-{node}, serviceAccountName: app-{app}, containers: [{{name: app, image: app, ports: [{{name: http, containerPort: 8080}}]}}]}}\n\
             status: {{phase: Running, podIP: {ip}, podIPs: [{{ip: {ip}}}]}}\n",
            replica = i % PODS_PER_SERVICE,
            node = i % NODES,
        );
    }
    y
}

/// Replaces `path` with `text` as editors do: a dot-file beside it (which the file source
/// skips), then a rename over it. The instant and wall-clock time right after the rename.
fn replace_file(path: &Path, text: &str) -> anyhow::Result<(Instant, OffsetDateTime)> {
    let name = path.file_name().and_then(|n| n.to_str()).context("file name")?;
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path)
        .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
    Ok((Instant::now(), OffsetDateTime::now_utc()))
}

/// The times of the config store's `config applied` lines (JSON log) at or after `since`.
fn applied_after(log: &str, since: OffsetDateTime) -> Vec<OffsetDateTime> {
    log.lines()
        .filter(|l| l.contains("config applied"))
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["message"] == "config applied")
        .filter_map(|v| OffsetDateTime::parse(v["timestamp"].as_str()?, &Rfc3339).ok())
        .filter(|t| *t >= since)
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The client

/// One answer of the waypoint.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Answer {
    status: u16,
    /// The `x-route` response header.
    route: Option<String>,
    body: Bytes,
}

impl Answer {
    /// Whether this answer went through `route`: its header, and its backend's pod named in
    /// the echo app's JSON.
    fn shows(&self, route: Route) -> bool {
        self.status == 200
            && self.route.as_deref() == Some(route.name())
            && contains(&self.body, format!("\"pod\":\"{}\"", route.pod()).as_bytes())
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// What happened between a flip and its first new answer.
#[derive(Debug, Clone, Copy)]
struct Seen {
    /// When the first new answer arrived.
    at: Instant,
    /// Answers before it, all kinds (count).
    requests: u64,
    /// Of those, answers through the old route (count).
    old: u64,
    /// Of those, answers through neither route (count).
    other: u64,
    /// Requests that failed (count).
    failed: u64,
    /// Answers after the first new one that showed the old route again (count).
    regressed: usize,
}

/// A keep-alive HTTP/1.1 client of the plaintext listener, redialled when the connection ends.
#[derive(Debug)]
struct Poller {
    target: SocketAddr,
    conn: Option<http1::SendRequest<Empty<Bytes>>>,
    failed: u64,
}

impl Poller {
    fn new(target: SocketAddr) -> Poller {
        Poller { target, conn: None, failed: 0 }
    }

    /// One GET `/` for Service `echo`; None when it failed (counted).
    async fn get(&mut self) -> Option<Answer> {
        match tokio::time::timeout(REQUEST_TIMEOUT, self.exchange()).await {
            Ok(Ok(a)) => Some(a),
            _ => {
                self.conn = None;
                self.failed += 1;
                None
            }
        }
    }

    async fn exchange(&mut self) -> anyhow::Result<Answer> {
        let conn = match &mut self.conn {
            Some(c) if !c.is_closed() => c,
            slot => {
                let s = TcpStream::connect(self.target).await?;
                s.set_nodelay(true)?;
                let (send, driver) = http1::handshake(TokioIo::new(s)).await?;
                tokio::spawn(async move {
                    let _ = driver.await;
                });
                slot.insert(send)
            }
        };
        conn.ready().await?;
        let req = Request::get("/").header(HOST, TARGET).body(Empty::new())?;
        let resp = conn.send_request(req).await?;
        let status = resp.status().as_u16();
        let route = resp.headers().get("x-route").and_then(|v| v.to_str().ok()).map(str::to_string);
        let body = resp.into_body().collect().await?.to_bytes();
        Ok(Answer { status, route, body })
    }

    /// Requests back to back until one shows `to`, then [`CONFIRM`] more.
    async fn until(&mut self, to: Route, from: Route, deadline: Instant) -> anyhow::Result<Seen> {
        let failed_before = self.failed;
        let (mut requests, mut old, mut other) = (0, 0, 0);
        let at = loop {
            match self.get().await {
                Some(a) if a.shows(to) => break Instant::now(),
                Some(a) if a.shows(from) => old += 1,
                Some(_) => other += 1,
                None => tokio::time::sleep(Duration::from_millis(5)).await,
            }
            requests += 1;
            if Instant::now() > deadline {
                bail!(
                    "route {} not seen after {} s ({requests} requests, {old} old, {other} other, {} failed)",
                    to.name(),
                    UPDATE_TIMEOUT.as_secs(),
                    self.failed - failed_before
                );
            }
        };
        let mut regressed = 0;
        for _ in 0..CONFIRM {
            if self.get().await.is_some_and(|a| a.shows(from)) {
                regressed += 1;
            }
        }
        Ok(Seen { at, requests, old, other, failed: self.failed - failed_before, regressed })
    }
}

/// A one-shot GET's status (readiness probes).
fn http_status(addr: SocketAddr, path: &str) -> Option<u16> {
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nhost: bench\r\nconnection: close\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    out.split(' ').nth(1)?.parse().ok()
}

// ---------------------------------------------------------------------------------------------
// Processes

/// The release binaries: `MESH_BIN_DIR`, else the folder of this binary.
#[derive(Debug)]
struct Bins {
    ca: PathBuf,
    waypoint: PathBuf,
    meshctl: PathBuf,
}

impl Bins {
    fn find() -> anyhow::Result<Bins> {
        let dir = match std::env::var_os("MESH_BIN_DIR") {
            Some(d) => PathBuf::from(d),
            None => std::env::current_exe()
                .context("current_exe")?
                .parent()
                .context("binary folder")?
                .to_path_buf(),
        };
        let bin = |name: &str| {
            let p = dir.join(name);
            if p.is_file() {
                Ok(p)
            } else {
                bail!("{} missing: `cargo build --release -p mesh-ca -p waypoint -p meshctl`", p.display())
            }
        };
        Ok(Bins { ca: bin("mesh-ca")?, waypoint: bin("waypoint")?, meshctl: bin("meshctl")? })
    }
}

/// A child process and where its output goes.
#[derive(Debug)]
struct Proc {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

/// Every child started for one size; each is killed (SIGKILL) and reaped when this is dropped,
/// whatever the path out. Children also get SIGKILL if this process dies first.
#[derive(Debug, Default)]
struct Procs(Vec<Proc>);

/// Index of a child in [`Procs`].
#[derive(Debug, Clone, Copy)]
struct ProcId(usize);

impl Drop for Procs {
    fn drop(&mut self) {
        for p in self.0.iter_mut().rev() {
            let _ = p.child.kill();
            let _ = p.child.wait();
        }
    }
}

impl Procs {
    /// Starts `cmd` with stderr (and stdout when `stdout_to_log`, else nothing) into `log`.
    fn spawn(
        &mut self,
        name: &'static str,
        cmd: &mut Command,
        log: PathBuf,
        stdout_to_log: bool,
    ) -> anyhow::Result<ProcId> {
        let out = std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let stdout = if stdout_to_log { Stdio::from(out.try_clone()?) } else { Stdio::null() };
        // SAFETY: prctl is async-signal-safe and touches no memory of ours.
        unsafe {
            use std::os::unix::process::CommandExt as _;
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(out)
            .spawn()
            .with_context(|| format!("spawning {name} ({})", Path::new(cmd.get_program()).display()))?;
        self.0.push(Proc { name, child, log });
        Ok(ProcId(self.0.len() - 1))
    }

    /// An echo backend for `route` on its pod address, port chosen by the kernel.
    fn echo(&mut self, bins: &Bins, dir: &Path, route: Route) -> anyhow::Result<SocketAddr> {
        let log = dir.join(format!("echo-{}.log", route.name()));
        let id = self.spawn(
            "echo",
            Command::new(&bins.meshctl)
                .args(["echo", "--namespace", NS, "--port", "0", "--pod"])
                .arg(route.pod())
                .arg("--listen")
                .arg(route.ip().to_string()),
            log.clone(),
            // One JSON line per request: not needed here.
            false,
        )?;
        let mut addr = None;
        self.wait_for(id, "listening", Duration::from_secs(10), || {
            addr = std::fs::read_to_string(&log).ok().and_then(|t| {
                t.lines().find_map(|l| l.strip_prefix("echo listening on ")?.trim().parse().ok())
            });
            addr.is_some()
        })?;
        addr.context("echo listening line")
    }

    fn pid(&self, id: ProcId) -> i32 {
        self.0[id.0].child.id() as i32
    }

    /// The last lines of a child's log.
    fn tail(&self, id: ProcId) -> String {
        let p = &self.0[id.0];
        let text = std::fs::read_to_string(&p.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        format!(
            "{} log ({}):\n{}",
            p.name,
            p.log.display(),
            lines[lines.len().saturating_sub(20)..].join("\n")
        )
    }

    fn check_alive(&mut self, id: ProcId) -> anyhow::Result<()> {
        if let Some(status) = self.0[id.0].child.try_wait()? {
            bail!("{} exited ({status})\n{}", self.0[id.0].name, self.tail(id));
        }
        Ok(())
    }

    /// Polls `ok` every 50 ms until it holds; fails when the child exits or `limit` passes.
    fn wait_for(
        &mut self,
        id: ProcId,
        what: &str,
        limit: Duration,
        mut ok: impl FnMut() -> bool,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + limit;
        loop {
            self.check_alive(id)?;
            if ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("{}: not {what} after {} s\n{}", self.0[id.0].name, limit.as_secs(), self.tail(id));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// A free loopback port (bound, then released: a small race, as in the other benches).
fn free_port() -> anyhow::Result<SocketAddr> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

/// A progress line on stderr.
#[allow(clippy::print_stderr)]
fn progress(line: &str) {
    eprintln!("{line}");
}

#[cfg(test)]
mod tests;
