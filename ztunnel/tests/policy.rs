//! Policy end to end on loopback: L4 AuthorizationPolicy ALLOW/DENY over HBONE, and
//! PeerAuthentication on the plaintext port (STRICT refuses, PERMISSIVE accepts), with the
//! Istio metrics both ztunnels report afterwards.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

const POLICIES: &str = "
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-client, namespace: demo}
spec:
  selector: {matchLabels: {version: v1}}
  action: ALLOW
  rules:
  - from: [{source: {principals: [cluster.local/ns/demo/sa/client]}}]
    to: [{operation: {ports: [\"8080\"]}}]
  - from: [{source: {ipBlocks: [127.111.2.20/32]}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-client, namespace: demo}
spec:
  selector: {matchLabels: {version: v2}}
  action: DENY
  rules:
  - from: [{source: {principals: [\"*/sa/client\"]}}]
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: v1-permissive, namespace: demo}
spec:
  selector: {matchLabels: {version: v1}}
  mtls: {mode: PERMISSIVE}
";

async fn plaintext(from: std::net::IpAddr, to: SocketAddr, data: &[u8]) -> Vec<u8> {
    let sock = TcpSocket::new_v4().unwrap();
    sock.bind(SocketAddr::new(from, 0)).unwrap();
    let mut s: TcpStream = sock.connect(to).await.unwrap();
    // A refused connection is closed by ztunnel; the write may or may not fail first.
    let _ = s.write_all(data).await;
    let _ = s.shutdown().await;
    let mut out = Vec::new();
    let _ =
        tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await.expect("closed in time");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authz_and_peer_authn_with_metrics() {
    let net = 111;
    let mesh = start_mesh(net, POLICIES).await;
    let v1 = echo_server(SocketAddr::new(ip(net, 2, 10), 8080)).await;
    let v2 = echo_server(SocketAddr::new(ip(net, 2, 11), 8080)).await;
    let client = ip(net, 1, 10);
    let data = pattern(4096);

    // ALLOW matches the client's principal: tunnel opens, bytes echo.
    let (code, s) =
        socks_connect(client, mesh.a.socks5_addr, Dest::Addr(SocketAddr::new(ip(net, 2, 10), 8080))).await;
    assert_eq!(code, 0);
    assert!(echo_roundtrip(s, data.clone()).await.unwrap() == *data);

    // DENY matches (suffix form `*/sa/client`): node-b answers 401, the client is refused
    // (SOCKS5 "not allowed") and its connection closed; the app never sees it.
    let (code, mut s) =
        socks_connect(client, mesh.a.socks5_addr, Dest::Addr(SocketAddr::new(ip(net, 2, 11), 8080))).await;
    assert_eq!(code, 2);
    let mut rest = Vec::new();
    assert_eq!(s.read_to_end(&mut rest).await.unwrap_or(0), 0);
    assert_eq!(v2.total(), 0);

    // Plaintext to the pods' 15006: v1 is PERMISSIVE (accepted, delivered: its ALLOW policy
    // admits the outsider's IP block), v2 STRICT (closed).
    let outsider = ip(net, 2, 20);
    let back = plaintext(outsider, SocketAddr::new(ip(net, 2, 10), 15006), b"hello plaintext").await;
    assert_eq!(back, b"hello plaintext");
    let back = plaintext(outsider, SocketAddr::new(ip(net, 2, 11), 15006), b"hello strict").await;
    assert!(back.is_empty());
    assert_eq!(v2.total(), 0);
    assert_eq!(v1.total(), 2);

    // Metrics. Counters are final once the guards dropped; poll briefly for the last close.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let (a, b) = loop {
        let a = scrape(&mesh.a).await;
        let b = scrape(&mesh.b).await;
        let closed = metric(&b, "istio_tcp_connections_closed_total", &[("reporter", "destination")]);
        if closed >= 4.0 || std::time::Instant::now() > deadline {
            break (a, b);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let client_p = "spiffe://cluster.local/ns/demo/sa/client";
    let server_p = "spiffe://cluster.local/ns/demo/sa/server";
    let src = [
        ("reporter", "source"),
        ("source_workload", "client"),
        ("source_workload_namespace", "demo"),
        ("source_principal", client_p),
        ("source_app", "client"),
        ("source_version", "v1"),
        ("source_cluster", "Kubernetes"),
        ("destination_workload", "server-v1"),
        ("destination_workload_namespace", "demo"),
        ("destination_principal", server_p),
        ("destination_app", "server"),
        ("destination_version", "v1"),
        ("request_protocol", "tcp"),
        ("connection_security_policy", "mutual_tls"),
    ];
    assert_eq!(metric(&a, "istio_tcp_connections_opened_total", &src), 1.0, "{a}");
    assert_eq!(metric(&a, "istio_tcp_connections_closed_total", &src), 1.0);
    assert_eq!(metric(&a, "istio_tcp_received_bytes_total", &src), 4096.0);
    assert_eq!(metric(&a, "istio_tcp_sent_bytes_total", &src), 4096.0);
    let mut dst = src;
    dst[0] = ("reporter", "destination");
    assert_eq!(metric(&b, "istio_tcp_connections_opened_total", &dst), 1.0, "{b}");
    // node-b knows which service the pod's port belongs to.
    let svc = [
        ("reporter", "destination"),
        ("destination_workload", "server-v1"),
        ("destination_service", "echo.demo.svc.cluster.local"),
        ("destination_service_name", "echo"),
        ("destination_service_namespace", "demo"),
    ];
    assert_eq!(metric(&b, "istio_tcp_connections_opened_total", &svc), 2.0, "HBONE and plaintext");
    assert_eq!(metric(&b, "istio_tcp_received_bytes_total", &dst), 4096.0);
    assert_eq!(metric(&b, "istio_tcp_sent_bytes_total", &dst), 4096.0);
    // The denied connection, on both sides, with the DENY flag on close.
    let denied = [("destination_workload", "server-v2"), ("response_flags", "DENY")];
    assert_eq!(
        metric(
            &b,
            "istio_tcp_connections_closed_total",
            &[&denied[..], &[("reporter", "destination"), ("connection_security_policy", "mutual_tls")]]
                .concat()
        ),
        1.0
    );
    assert_eq!(
        metric(&a, "istio_tcp_connections_closed_total", &[&denied[..], &[("reporter", "source")]].concat()),
        1.0
    );
    // Plaintext: accepted (connection_security_policy none) and STRICT-refused.
    let plain = [("reporter", "destination"), ("connection_security_policy", "none")];
    assert_eq!(metric(&b, "istio_tcp_connections_opened_total", &plain), 2.0);
    assert_eq!(
        metric(
            &b,
            "istio_tcp_received_bytes_total",
            &[&plain[..], &[("destination_workload", "server-v1")]].concat()
        ),
        15.0
    );
    assert_eq!(
        metric(
            &b,
            "istio_tcp_connections_closed_total",
            &[&plain[..], &[("destination_workload", "server-v2"), ("response_flags", "DENY")]].concat()
        ),
        1.0
    );
    assert!(a.ends_with("# EOF\n"));
}
