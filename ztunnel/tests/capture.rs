//! Redirection as under capture, with iptables DNAT (needs root: this test FAILS, not skips,
//! without it; CI runs as root). Outbound: the client's connection to a pod is redirected to
//! node-a's outbound listener, which finds the original destination with SO_ORIGINAL_DST and
//! tunnels it. Inbound plaintext: a connection to a pod port is redirected to the pod's 15006,
//! which delivers to the original port (not the loopback fallback port).
//!
//! The test runs in a network namespace of its own (unshared on the test thread before the
//! runtime starts, so every runtime thread and the `iptables` child inherit it): the host's
//! NAT table is never touched, and the namespace goes away with the test.

mod common;

use std::net::SocketAddr;
use std::process::Command;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct NatRules(Vec<Vec<String>>);

impl NatRules {
    fn add(&mut self, spec: &[&str]) {
        let spec: Vec<String> = spec.iter().map(|s| s.to_string()).collect();
        let out = Command::new("iptables").args(["-t", "nat", "-A", "OUTPUT"]).args(&spec).output();
        let out = out.expect("iptables must be installed (apt-get install iptables)");
        assert!(out.status.success(), "iptables: {}", String::from_utf8_lossy(&out.stderr));
        self.0.push(spec);
    }
}

impl Drop for NatRules {
    fn drop(&mut self) {
        for spec in &self.0 {
            let _ = Command::new("iptables").args(["-t", "nat", "-D", "OUTPUT"]).args(spec).status();
        }
    }
}

const PERMISSIVE_V1: &str = "
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: v1-permissive, namespace: demo}
spec:
  selector: {matchLabels: {version: v1}}
  mtls: {mode: PERMISSIVE}
";

async fn connect_from(from: std::net::IpAddr, to: SocketAddr) -> tokio::net::TcpStream {
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind(SocketAddr::new(from, 0)).unwrap();
    sock.connect(to).await.unwrap()
}

/// Moves the calling thread into a new network namespace with loopback up.
fn private_netns() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(unsafe { libc::geteuid() }, 0, "this test needs root (netns, iptables); CI runs as root");
    // SAFETY: unshare only changes this thread's namespaces; no memory is involved.
    let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "unshare(CLONE_NEWNET): {}", std::io::Error::last_os_error());
    let up = Command::new("ip")
        .args(["link", "set", "lo", "up"])
        .status()
        .expect("ip (iproute2) must be installed");
    assert!(up.success(), "ip link set lo up failed");
}

#[test]
fn redirected_connections_use_the_original_destination() {
    private_netns();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(redirected());
}

async fn redirected() {
    let net = 141;
    let mesh = start_mesh(net, PERMISSIVE_V1).await;
    let (client, outsider) = (ip(net, 1, 10), ip(net, 2, 20));
    let (v1, v2) = (ip(net, 2, 10), ip(net, 2, 11));
    let v1_app = echo_server(SocketAddr::new(v1, 7070)).await;
    let v2_app = echo_server(SocketAddr::new(v2, 7070)).await;
    let mut rules = NatRules(Vec::new());
    let a_out = mesh.a.outbound_addr.to_string();
    let tag = ["-m", "comment", "--comment", "ztunnel-capture-test"];
    rules.add(
        &[
            &["-p", "tcp", "-s", &client.to_string(), "-d", &v2.to_string(), "--dport", "7070"][..],
            &tag,
            &["-j", "DNAT", "--to-destination", &a_out],
        ]
        .concat(),
    );
    let v1_plain = format!("{v1}:15006");
    rules.add(
        &[
            &["-p", "tcp", "-s", &outsider.to_string(), "-d", &v1.to_string(), "--dport", "7070"][..],
            &tag,
            &["-j", "DNAT", "--to-destination", &v1_plain],
        ]
        .concat(),
    );

    // Outbound capture: plain connect by the app, tunnelled by node-a, delivered by node-b.
    let s = connect_from(client, SocketAddr::new(v2, 7070)).await;
    let data = pattern(300_000);
    assert!(echo_roundtrip(s, data.clone()).await.unwrap() == *data);
    assert_eq!(v2_app.total(), 1);
    let m = scrape(&mesh.b).await;
    let tunnelled = [
        ("reporter", "destination"),
        ("source_workload", "client"),
        ("connection_security_policy", "mutual_tls"),
    ];
    assert_eq!(metric(&m, "istio_tcp_received_bytes_total", &tunnelled), 300_000.0, "{m}");

    // Inbound plaintext capture: delivered to the original port 7070 (the fallback is 8080).
    let mut s = connect_from(outsider, SocketAddr::new(v1, 7070)).await;
    s.write_all(b"plain").await.unwrap();
    s.shutdown().await.unwrap();
    let mut back = Vec::new();
    s.read_to_end(&mut back).await.unwrap();
    assert_eq!(back, b"plain");
    assert_eq!(v1_app.total(), 1);
    drop(rules);
}
