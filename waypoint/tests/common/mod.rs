//! Loopback mesh with a waypoint, for the waypoint's integration and conformance tests: a real
//! mesh-ca in-process, ztunnels "node-a" (the client pod and the waypoint pod) and "node-b"
//! (the backends) on 127.0.0.1, pods on 127.<net>.x.y, namespace `demo` in the ambient mesh
//! using waypoint `demo/waypoint`, and test backends that answer like the lab's echo app
//! (JSON of the request they saw) and remember every request.
#![allow(dead_code)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use mesh_ca::{CaConfig, CaOptions, RunningCa};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use ztunnel::Ztunnel;

pub const TOKEN_A: &str = "token-node-a-0123456789";
pub const TOKEN_B: &str = "token-node-b-0123456789";

pub fn ip(net: u8, sub: u8, host: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, net, sub, host))
}

pub use mesh_e2e::conformance::BACKENDS;

/// A pod of namespace `demo` on node-a, with its own ServiceAccount.
pub fn demo_pod(name: &str, labels: &str, ip: IpAddr) -> String {
    format!(
        "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: demo, labels: {{{labels}}}}}\n\
         spec: {{nodeName: node-a, serviceAccountName: {name}}}\nstatus: {{phase: Running, podIP: {ip}}}\n"
    )
}

/// Service `name` of namespace `demo` selecting `app: name`, port 80 named `port_name` to
/// target port 8080.
pub fn demo_service(name: &str, cluster_ip: &str, port_name: &str) -> String {
    format!(
        "---\napiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: demo}}\n\
         spec:\n  clusterIP: {cluster_ip}\n  selector: {{app: {name}}}\n  ports: [{{name: {port_name}, port: 80, targetPort: 8080}}]\n"
    )
}

/// Namespace `demo` in the ambient mesh using waypoint `demo/waypoint`, its Gateway, and the
/// waypoint's pod `waypoint-0` (out of the mesh itself) on `waypoint_ip`.
pub fn demo_namespace_with_waypoint(waypoint_ip: IpAddr) -> String {
    String::from(
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: demo\n  labels: {istio.io/dataplane-mode: ambient, istio.io/use-waypoint: waypoint}\n\
         ---\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: waypoint, namespace: demo}\n\
         spec:\n  gatewayClassName: istio-waypoint\n  listeners: [{name: mesh, port: 15008, protocol: HBONE}]\n",
    ) + &demo_pod(
        "waypoint-0",
        "gateway.networking.k8s.io/gateway-name: waypoint, istio.io/dataplane-mode: none",
        waypoint_ip,
    )
}

/// The base model on loopback (see `mesh_e2e::conformance::base`). Service VIPs: a
/// 10.<net>.0.1, b 10.<net>.0.2, mirror 10.<net>.0.3.
pub fn base_model(net: u8) -> String {
    mesh_e2e::conformance::base_model(net, mesh_e2e::conformance::Placement::InProcess)
}

/// One request a backend saw.
pub use mesh_e2e::conformance::Seen;

/// Every backend's requests, in arrival order.
#[derive(Debug, Clone, Default)]
pub struct Backends {
    pub seen: Arc<Mutex<Vec<Seen>>>,
    /// (pod, path) → requests answered so far, for `x-fail-first`.
    counts: Arc<Mutex<HashMap<(String, String), u32>>>,
}

impl Backends {
    pub fn seen_by(&self, pod: &str) -> Vec<Seen> {
        self.seen.lock().unwrap().iter().filter(|s| s.pod == pod).cloned().collect()
    }

    pub fn clear(&self) {
        self.seen.lock().unwrap().clear();
        self.counts.lock().unwrap().clear();
    }
}

/// Answers like the lab's echo app: JSON of the request (`pod`, `method`, `path`, `host`,
/// `headers`); `/status/NNN` answers NNN; `?delay=<ms>` (or `<n>ms`, the echo app's form) waits; request header
/// `x-fail-first: N` answers 503 to the first N requests of this pod for this path;
/// `x-fail-pod: <pod>[,<pod>...]` makes those pods answer 500 (or `x-fail-status`);
/// `x-slow-pod: <pod>:<ms>[,...]` delays those pods' answers; a gRPC request (`content-type:
/// application/grpc...`) is answered `content-type: application/grpc` and `grpc-status: 0`.
async fn backend(pod: String, backends: Backends, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let _ = body.collect().await;
    let path = parts.uri.path_and_query().map(|p| p.as_str().to_string()).unwrap_or_default();
    let host = parts.headers.get(http::header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("").to_string();
    backends.seen.lock().unwrap().push(Seen {
        pod: pod.clone(),
        method: parts.method.to_string(),
        path: path.clone(),
        host: host.clone(),
        headers: parts.headers.clone(),
    });
    let query = parts.uri.query().unwrap_or("");
    if let Some(ms) = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("delay="))
        .and_then(|v| v.strip_suffix("ms").unwrap_or(v).parse::<u64>().ok())
    {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    // `x-slow-pod: a-v1:400` delays only that pod (a busy or slow endpoint).
    let slow = parts.headers.get("x-slow-pod").and_then(|v| v.to_str().ok()).unwrap_or("");
    if let Some(ms) = slow
        .split(',')
        .filter_map(|e| e.trim().split_once(':'))
        .find(|(p, _)| *p == pod)
        .and_then(|(_, ms)| ms.parse::<u64>().ok())
    {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let mut status = parts
        .uri
        .path()
        .rsplit_once("/status/")
        .and_then(|(_, c)| c.parse::<u16>().ok())
        .and_then(|c| StatusCode::from_u16(c).ok())
        .unwrap_or(StatusCode::OK);
    let failing = parts.headers.get("x-fail-pod").and_then(|v| v.to_str().ok()).unwrap_or("");
    if failing.split(',').any(|p| p.trim() == pod) {
        status = parts
            .headers
            .get("x-fail-status")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u16>().ok())
            .and_then(|c| StatusCode::from_u16(c).ok())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    }
    if let Some(n) =
        parts.headers.get("x-fail-first").and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u32>().ok())
    {
        let mut counts = backends.counts.lock().unwrap();
        let c = counts.entry((pod.clone(), parts.uri.path().to_string())).or_default();
        *c += 1;
        if *c <= n {
            status = StatusCode::SERVICE_UNAVAILABLE;
        }
    }
    // gRPC callers get gRPC's success marker (trailers-only style, in the headers).
    let grpc = parts
        .headers
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    let mut headers = serde_json::Map::new();
    for (k, v) in &parts.headers {
        let e = headers.entry(k.as_str().to_string()).or_insert_with(|| json!([]));
        if let Some(a) = e.as_array_mut() {
            a.push(json!(v.to_str().unwrap_or("")));
        }
    }
    let body =
        json!({"pod": pod, "method": parts.method.as_str(), "path": path, "host": host, "headers": headers});
    let mut resp = Response::builder().status(status).header("x-backend", pod);
    resp = if grpc {
        resp.header(http::header::CONTENT_TYPE, "application/grpc").header("grpc-status", "0")
    } else {
        resp.header(http::header::CONTENT_TYPE, "application/json")
    };
    resp.body(Full::new(Bytes::from(body.to_string()))).unwrap()
}

pub async fn start_backend(pod: &str, addr: SocketAddr, backends: Backends) {
    let l = TcpListener::bind(addr).await.unwrap_or_else(|e| panic!("bind backend {addr}: {e}"));
    let pod = pod.to_string();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else { continue };
            let (pod, backends) = (pod.clone(), backends.clone());
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let (pod, backends) = (pod.clone(), backends.clone());
                    async move { Ok::<_, Infallible>(backend(pod, backends, req).await) }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
}

pub struct Mesh {
    pub dir: tempfile::TempDir,
    pub ca: RunningCa,
    pub a: Ztunnel,
    pub b: Ztunnel,
    pub waypoint: waypoint::ctx::Waypoint,
    pub backends: Backends,
    pub net: u8,
}

impl Mesh {
    /// Service VIP by name: the base model's, or the first VIP of a Service of namespace
    /// `demo` that the suite's configuration added.
    pub fn vip(&self, service: &str) -> IpAddr {
        let i = match service {
            "a" => 1,
            "b" => 2,
            "mirror" => 3,
            other => {
                let host = format!("{other}.demo.svc.cluster.local");
                let model = self.waypoint.ctx.model.load();
                let svc =
                    model.service_by_host(&host).unwrap_or_else(|| panic!("no service {other} in the model"));
                return *svc.vips.first().unwrap_or_else(|| panic!("service {other} has no VIP"));
            }
        };
        IpAddr::V4(Ipv4Addr::new(10, self.net, 0, i))
    }

    /// `istio_requests_total` summed per `response_flags` value (`-` for none).
    pub fn requests_by_flags(&self) -> HashMap<String, f64> {
        mesh_e2e::conformance::flags_from_metrics(
            &mesh_telemetry::encode(&self.waypoint.ctx.registry).unwrap_or_default(),
        )
    }

    pub fn client_ip(&self) -> IpAddr {
        ip(self.net, 1, 10)
    }

    pub async fn shutdown(self) {
        self.waypoint.shutdown().await;
        self.a.shutdown().await;
        self.b.shutdown().await;
    }
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

fn node_config(dir: &Path, ca: &RunningCa, node: &str) -> ztunnel::Config {
    ztunnel::Config {
        node: node.to_string(),
        ca_address: format!("https://{}", ca.local_addr),
        ca_root: dir.join("root.pem"),
        token_file: dir.join(format!("{node}.token")),
        model: vec![dir.join("model")],
        outbound_addr: "127.0.0.1:0".parse().unwrap(),
        socks5_addr: "127.0.0.1:0".parse().unwrap(),
        admin_addr: "127.0.0.1:0".parse().unwrap(),
        metrics_addr: "127.0.0.1:0".parse().unwrap(),
        readiness_addr: "127.0.0.1:0".parse().unwrap(),
        plaintext_port: 0,
        drain_deadline: Duration::from_secs(1),
        ..ztunnel::Config::default()
    }
}

/// CA, two ztunnels, the waypoint and the backends over `base_model(net)` plus `extra`.
/// Writes `model` under `dir/model`, node-a's and node-b's tokens and a CA config, starts
/// mesh-ca in-process and writes its root to `dir/root.pem`.
pub async fn start_ca(dir: &Path, model: &str) -> RunningCa {
    std::fs::create_dir_all(dir.join("model")).unwrap();
    write(&dir.join("model/mesh.yaml"), model);
    write(&dir.join("tokens"), &format!("node-a {TOKEN_A}\nnode-b {TOKEN_B}\n"));
    write(&dir.join("node-a.token"), TOKEN_A);
    write(&dir.join("node-b.token"), TOKEN_B);
    write(
        &dir.join("ca.yaml"),
        "trustDomain: cluster.local\ndefaultTtl: 1h\nmaxTtl: 2d\nmodel: [model]\nnodeTokensFile: tokens\n",
    );
    let config = CaConfig::load(&dir.join("ca.yaml")).unwrap();
    let opts = CaOptions { config, state_dir: dir.join("state"), listen: "127.0.0.1:0".parse().unwrap() };
    let ca = mesh_ca::start(opts).await.unwrap();
    write(&dir.join("root.pem"), &ca.root_pem);
    ca
}

/// A mesh-ca serving a model and an in-process waypoint on it, with its plaintext HTTP
/// listener on an ephemeral loopback port (callers reach it without HBONE).
pub struct PlainWaypoint {
    pub dir: tempfile::TempDir,
    _ca: RunningCa,
    pub waypoint: waypoint::ctx::Waypoint,
}

/// Starts a mesh-ca on `model` and waypoint `demo/waypoint` with HBONE on `hbone` and a
/// plaintext listener.
pub async fn start_plain_waypoint(model: &str, hbone: SocketAddr) -> PlainWaypoint {
    let dir = tempfile::tempdir().unwrap();
    let ca = start_ca(dir.path(), model).await;
    let mut config = waypoint_config(dir.path(), &ca, hbone);
    config.plaintext_http_addr = Some("127.0.0.1:0".parse().unwrap());
    let waypoint = waypoint::ctx::start(config, None).await.unwrap();
    PlainWaypoint { dir, _ca: ca, waypoint }
}

/// The config of waypoint `demo/waypoint` (pod waypoint-0 on node-a) reading `dir/model`,
/// HBONE on `hbone`, the other listeners on ephemeral loopback ports.
pub fn waypoint_config(dir: &Path, ca: &RunningCa, hbone: SocketAddr) -> waypoint::config::Config {
    waypoint::config::Config {
        namespace: "demo".into(),
        gateway: "waypoint".into(),
        pod: "waypoint-0".into(),
        node: "node-a".into(),
        ca_address: format!("https://{}", ca.local_addr),
        ca_root: dir.join("root.pem"),
        token_file: dir.join("node-a.token"),
        model: vec![dir.join("model")],
        hbone_addr: hbone,
        admin_addr: "127.0.0.1:0".parse().unwrap(),
        metrics_addr: "127.0.0.1:0".parse().unwrap(),
        readiness_addr: "127.0.0.1:0".parse().unwrap(),
        drain_deadline: Duration::from_secs(1),
        ..waypoint::config::Config::default()
    }
}

pub async fn start_mesh(net: u8, extra: &str) -> Mesh {
    let dir = tempfile::tempdir().unwrap();
    let ca = start_ca(dir.path(), &format!("{}---\n{}", base_model(net), extra)).await;
    let backends = Backends::default();
    for b in BACKENDS {
        start_backend(b.name, SocketAddr::new(ip(net, b.sub, b.host), 8080), backends.clone()).await;
    }
    let a = ztunnel::start(node_config(dir.path(), &ca, "node-a"), None).await.unwrap();
    let b = ztunnel::start(node_config(dir.path(), &ca, "node-b"), None).await.unwrap();
    let wconfig = waypoint_config(dir.path(), &ca, SocketAddr::new(ip(net, 1, 250), 15008));
    let waypoint = waypoint::ctx::start(wconfig, None).await.unwrap();
    for z in [&a, &b] {
        let deadline = Instant::now() + Duration::from_secs(15);
        while let Err(why) = ztunnel::workloads::readiness(&z.ctx) {
            assert!(Instant::now() < deadline, "{} not ready: {why}", z.ctx.config.node);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    Mesh { dir, ca, a, b, waypoint, backends, net }
}

/// A SOCKS5 tunnel from pod `from` through `socks` to `dst`.
pub async fn socks_connect(from: IpAddr, socks: SocketAddr, dst: SocketAddr) -> TcpStream {
    let sock = TcpSocket::new_v4().unwrap();
    sock.bind(SocketAddr::new(from, 0)).unwrap();
    let mut s = sock.connect(socks).await.unwrap();
    s.write_all(&[5, 1, 0]).await.unwrap();
    let mut m = [0u8; 2];
    s.read_exact(&mut m).await.unwrap();
    let mut req = vec![5, 1, 0, 1];
    match dst {
        SocketAddr::V4(a) => {
            req.extend_from_slice(&a.ip().octets());
            req.extend_from_slice(&a.port().to_be_bytes());
        }
        SocketAddr::V6(_) => unreachable!("tests use IPv4"),
    }
    s.write_all(&req).await.unwrap();
    let mut r = [0u8; 10];
    s.read_exact(&mut r).await.unwrap();
    assert_eq!(r[1], 0, "SOCKS5 CONNECT to {dst} refused: {}", r[1]);
    s
}
