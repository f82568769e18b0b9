//! Client → SOCKS5 → ztunnel node-a → HBONE → ztunnel node-b → echo, on loopback with a real
//! CA: byte-exact payloads, many concurrent connections, service VIPs and names, uncaptured
//! and out-of-mesh destinations.
// Timings are printed for the report (`cargo test -- --nocapture`).
#![allow(clippy::print_stderr)]

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socks5_to_pod_over_hbone_is_byte_exact() {
    let net = 101;
    let mesh = start_mesh(net, "").await;
    let server = SocketAddr::new(ip(net, 2, 10), 8080);
    let echo = echo_server(server).await;
    for len in [1usize, 64 * 1024, 16 * 1024 * 1024, 100 * 1024 * 1024] {
        let data = pattern(len);
        let start = Instant::now();
        let (code, s) = socks_connect(ip(net, 1, 10), mesh.a.socks5_addr, Dest::Addr(server)).await;
        assert_eq!(code, 0, "SOCKS5 reply for {len} B");
        let back = echo_roundtrip(s, data.clone()).await.unwrap();
        assert_eq!(back.len(), len);
        assert!(back == *data, "payload of {len} B differs");
        eprintln!("{len} B echoed in {:?}", start.elapsed());
    }
    // The application saw node-b's ztunnel deliver, from the pod's own address.
    assert_eq!(echo.total(), 4);
    // All four streams shared one pooled HBONE connection.
    assert_eq!(mesh.a.ctx.pool.stats().opened_total, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_connections() {
    let net = 102;
    let limit = raise_fd_limit();
    let n = if limit >= 16_384 { 1000 } else { 200 };
    let mesh = start_mesh(net, "").await;
    let server = SocketAddr::new(ip(net, 2, 10), 8080);
    let echo = echo_server(server).await;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..n {
        let socks = mesh.a.socks5_addr;
        tasks.push(tokio::spawn(async move {
            let data = std::sync::Arc::new(format!("connection {i} payload").repeat(50).into_bytes());
            let (code, s) = socks_connect(ip(net, 1, 10), socks, Dest::Addr(server)).await;
            assert_eq!(code, 0);
            let back = echo_roundtrip(s, data.clone()).await.unwrap();
            assert!(back == *data, "connection {i} payload differs");
        }));
    }
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(60), t).await.expect("connection timed out").unwrap();
    }
    eprintln!("{n} concurrent connections in {:?} (fd limit {limit})", start.elapsed());
    assert_eq!(echo.total(), n);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_vip_and_name_and_plain_destinations() {
    let net = 103;
    let mesh = start_mesh(net, "").await;
    let v1 = echo_server(SocketAddr::new(ip(net, 2, 10), 8080)).await;
    let v2 = echo_server(SocketAddr::new(ip(net, 2, 11), 8080)).await;
    let outsider = echo_server(SocketAddr::new(ip(net, 2, 20), 8080)).await;
    let external = echo_server(SocketAddr::new(ip(net, 9, 9), 9999)).await;
    let data = pattern(1000);
    let client = ip(net, 1, 10);
    let vip: SocketAddr = format!("10.{net}.0.1:80").parse().unwrap();
    for dest in [Dest::Addr(vip), Dest::Host("echo", 80), Dest::Host("echo.demo.svc.cluster.local", 80)] {
        let (code, s) = socks_connect(client, mesh.a.socks5_addr, dest).await;
        assert_eq!(code, 0);
        assert!(echo_roundtrip(s, data.clone()).await.unwrap() == *data);
    }
    // Round robin over the two endpoints (default policy).
    assert_eq!(v1.total() + v2.total(), 3);
    assert!(v1.total() >= 1 && v2.total() >= 1, "v1 {} v2 {}", v1.total(), v2.total());
    // An uncaptured pod and an address outside the mesh get plain TCP (from the client's IP).
    let plain = [
        (SocketAddr::new(ip(net, 2, 20), 8080), &outsider),
        (SocketAddr::new(ip(net, 9, 9), 9999), &external),
    ];
    for (dest, echo) in plain {
        let (code, s) = socks_connect(client, mesh.a.socks5_addr, Dest::Addr(dest)).await;
        assert_eq!(code, 0);
        assert!(echo_roundtrip(s, data.clone()).await.unwrap() == *data);
        assert_eq!(echo.accepted.lock().unwrap().get(&client), Some(&1), "plain TCP from the pod's IP");
    }
    // Unknown names and ports are refused with SOCKS5 host-unreachable.
    let (code, _) = socks_connect(client, mesh.a.socks5_addr, Dest::Host("nope", 80)).await;
    assert_eq!(code, 4);
    let (code, _) =
        socks_connect(client, mesh.a.socks5_addr, Dest::Addr(format!("10.{net}.0.1:81").parse().unwrap()))
            .await;
    assert_eq!(code, 4);
    // A client that is not a local pod is refused.
    let (code, _) = socks_connect(ip(net, 1, 99), mesh.a.socks5_addr, Dest::Addr(vip)).await;
    assert_eq!(code, 2);
}
