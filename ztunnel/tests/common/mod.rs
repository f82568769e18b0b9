//! Loopback mesh for the integration tests: a real mesh-ca in-process, two ztunnels
//! ("node-a", "node-b") on 127.0.0.1 with their pods on 127.<net>.x.y addresses (unique per
//! test so fixed pod ports never collide), echo servers as the applications, and a SOCKS5
//! client bound to a pod's address.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mesh_ca::{CaConfig, CaOptions, RunningCa};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use ztunnel::{Config, Ztunnel};

pub const TOKEN_A: &str = "token-node-a-0123456789";
pub const TOKEN_B: &str = "token-node-b-0123456789";

pub fn ip(net: u8, sub: u8, host: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, net, sub, host))
}

/// The base model: namespace `demo` (ambient, STRICT), a client pod on node-a, two server
/// pods on node-b behind Service `echo` (VIP 10.<net>.0.1:80 → 8080), and an uncaptured pod
/// in namespace `plain` on node-b.
/// A Running pod with container port 8080 (`tcp-echo`).
pub fn pod(name: &str, ns: &str, node: &str, sa: &str, labels: &str, ip: IpAddr) -> String {
    format!(
        "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: {ns}, labels: {{{labels}}}}}\n\
         spec:\n  nodeName: {node}\n  serviceAccountName: {sa}\n  containers:\n  - name: app\n    image: echo\n    \
         ports: [{{containerPort: 8080, name: tcp-echo}}]\nstatus: {{phase: Running, podIP: {ip}}}\n"
    )
}

pub fn base_model(net: u8) -> String {
    let mut y = String::from(
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: demo\n  labels: {istio.io/dataplane-mode: ambient}\n\
         ---\napiVersion: v1\nkind: Namespace\nmetadata: {name: plain}\n\
         ---\napiVersion: v1\nkind: ServiceAccount\nmetadata: {name: client, namespace: demo}\n\
         ---\napiVersion: v1\nkind: ServiceAccount\nmetadata: {name: server, namespace: demo}\n\
         ---\napiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: default, namespace: demo}\n\
         spec: {mtls: {mode: STRICT}}\n",
    );
    y += &pod("client", "demo", "node-a", "client", "app: client, version: v1", ip(net, 1, 10));
    y += &pod("server-v1", "demo", "node-b", "server", "app: server, version: v1", ip(net, 2, 10));
    y += &pod("server-v2", "demo", "node-b", "server", "app: server, version: v2", ip(net, 2, 11));
    y += &pod("outsider", "plain", "node-b", "default", "app: outsider", ip(net, 2, 20));
    y += &format!(
        "---\napiVersion: v1\nkind: Service\nmetadata: {{name: echo, namespace: demo}}\n\
         spec:\n  clusterIP: 10.{net}.0.1\n  selector: {{app: server}}\n  ports: [{{name: tcp, port: 80, targetPort: 8080}}]\n"
    );
    y
}

pub struct Mesh {
    pub dir: tempfile::TempDir,
    pub ca: RunningCa,
    pub a: Ztunnel,
    pub b: Ztunnel,
    pub net: u8,
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

/// Test config for one node: every listener on 127.0.0.1:0, pods' HBONE on 15008.
pub fn node_config(dir: &Path, ca: &RunningCa, node: &str) -> Config {
    Config {
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
        plaintext_fallback_port: 8080,
        drain_deadline: Duration::from_secs(2),
        ..Config::default()
    }
}

/// Starts a CA and two ztunnels over `base_model(net)` plus `extra` YAML.
pub async fn start_mesh(net: u8, extra: &str) -> Mesh {
    start_mesh_with(net, extra, None).await
}

/// As [`start_mesh`], node-a reading `a_model` instead when given (a node with a different
/// view of the mesh; then only node-b is awaited ready).
pub async fn start_mesh_with(net: u8, extra: &str, a_model: Option<String>) -> Mesh {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("model")).unwrap();
    write(&dir.path().join("model/mesh.yaml"), &format!("{}{}", base_model(net), extra));
    write(&dir.path().join("tokens"), &format!("node-a {TOKEN_A}\nnode-b {TOKEN_B}\n"));
    write(&dir.path().join("node-a.token"), TOKEN_A);
    write(&dir.path().join("node-b.token"), TOKEN_B);
    write(
        &dir.path().join("ca.yaml"),
        "trustDomain: cluster.local\ndefaultTtl: 1h\nmaxTtl: 2d\nmodel: [model]\nnodeTokensFile: tokens\n",
    );
    let config = CaConfig::load(&dir.path().join("ca.yaml")).unwrap();
    let opts =
        CaOptions { config, state_dir: dir.path().join("state"), listen: "127.0.0.1:0".parse().unwrap() };
    let ca = mesh_ca::start(opts).await.unwrap();
    write(&dir.path().join("root.pem"), &ca.root_pem);
    let a_separate = a_model.is_some();
    let mut a_config = node_config(dir.path(), &ca, "node-a");
    if let Some(m) = a_model {
        std::fs::create_dir(dir.path().join("model-a")).unwrap();
        write(&dir.path().join("model-a/mesh.yaml"), &m);
        a_config.model = vec![dir.path().join("model-a")];
    }
    let a = ztunnel::start(a_config, None).await.unwrap();
    let b = ztunnel::start(node_config(dir.path(), &ca, "node-b"), None).await.unwrap();
    if !a_separate {
        wait_ready(&a).await;
    }
    wait_ready(&b).await;
    Mesh { dir, ca, a, b, net }
}

pub async fn wait_ready(z: &Ztunnel) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match ztunnel::workloads::readiness(&z.ctx) {
            Ok(()) => return,
            Err(why) if Instant::now() > deadline => panic!("{} not ready: {why}", z.ctx.config.node),
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

/// An echo application on `addr`; counts connections per peer IP.
#[derive(Clone, Default)]
pub struct Echo {
    pub accepted: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl Echo {
    pub fn total(&self) -> usize {
        self.accepted.lock().unwrap().values().sum()
    }
}

pub async fn echo_server(addr: SocketAddr) -> Echo {
    let l = TcpListener::bind(addr).await.unwrap_or_else(|e| panic!("bind echo {addr}: {e}"));
    let echo = Echo::default();
    let e = echo.clone();
    tokio::spawn(async move {
        loop {
            let Ok((s, peer)) = l.accept().await else { continue };
            *e.accepted.lock().unwrap().entry(peer.ip()).or_default() += 1;
            tokio::spawn(async move {
                let (mut r, mut w) = s.into_split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    });
    echo
}

pub enum Dest {
    Addr(SocketAddr),
    Host(&'static str, u16),
}

/// SOCKS5 CONNECT from `from` (a pod IP) through `socks`. Returns the reply code and the
/// stream (usable when the code is 0).
pub async fn socks_connect(from: IpAddr, socks: SocketAddr, dest: Dest) -> (u8, TcpStream) {
    let sock = TcpSocket::new_v4().unwrap();
    sock.bind(SocketAddr::new(from, 0)).unwrap();
    let mut s = sock.connect(socks).await.unwrap();
    s.write_all(&[5, 1, 0]).await.unwrap();
    let mut m = [0u8; 2];
    s.read_exact(&mut m).await.unwrap();
    assert_eq!(m, [5, 0]);
    let mut req = vec![5, 1, 0];
    match dest {
        Dest::Addr(SocketAddr::V4(a)) => {
            req.push(1);
            req.extend_from_slice(&a.ip().octets());
            req.extend_from_slice(&a.port().to_be_bytes());
        }
        Dest::Addr(SocketAddr::V6(_)) => unreachable!("tests use IPv4"),
        Dest::Host(h, port) => {
            req.push(3);
            req.push(h.len() as u8);
            req.extend_from_slice(h.as_bytes());
            req.extend_from_slice(&port.to_be_bytes());
        }
    }
    s.write_all(&req).await.unwrap();
    let mut r = [0u8; 10];
    match s.read_exact(&mut r).await {
        Ok(_) => (r[1], s),
        Err(_) => (0xff, s),
    }
}

/// Sends `data` and reads everything back (writer and reader concurrently).
pub async fn echo_roundtrip(s: TcpStream, data: Arc<Vec<u8>>) -> std::io::Result<Vec<u8>> {
    let (mut r, mut w) = s.into_split();
    let d = data.clone();
    let writer = tokio::spawn(async move {
        w.write_all(&d).await?;
        w.shutdown().await
    });
    let mut out = Vec::with_capacity(data.len());
    r.read_to_end(&mut out).await?;
    writer.await.unwrap()?;
    Ok(out)
}

pub fn pattern(len: usize) -> Arc<Vec<u8>> {
    Arc::new((0..len).map(|i| (i * 31 + i / 251) as u8).collect())
}

/// Raises the soft fd limit to the hard limit; returns the new soft limit.
pub fn raise_fd_limit() -> u64 {
    let mut l = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit write/read the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) != 0 {
            return 1024;
        }
        l.rlim_cur = l.rlim_max.min(1 << 20);
        libc::setrlimit(libc::RLIMIT_NOFILE, &l);
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut l);
    }
    l.rlim_cur
}

/// GET `path` on `addr` over HTTP/1.1; returns (status, body).
pub async fn http_get(addr: SocketAddr, method: &str, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(
        format!("{method} {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-length: 0\r\n\r\n")
            .as_bytes(),
    )
    .await
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    let status = out.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}

/// Sum of the samples of metric `name` whose labels include every `(label, value)` pair.
pub fn metric(text: &str, name: &str, want: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (n, labels) = series.split_once('{').unwrap_or((series, "}"));
            if n != name {
                return None;
            }
            let labels = labels.strip_suffix('}')?;
            let ok = want.iter().all(|(k, v)| labels.contains(&format!("{k}=\"{v}\"")));
            ok.then(|| value.parse::<f64>().ok()).flatten()
        })
        .sum()
}

/// `/metrics` of a ztunnel.
pub async fn scrape(z: &Ztunnel) -> String {
    let (status, body) = http_get(z.metrics_addr, "GET", "/metrics").await;
    assert_eq!(status, 200);
    body
}
