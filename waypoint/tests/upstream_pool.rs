//! The waypoint's HTTP/1.1 upstream pool against real backends that count their connections:
//! connections are reused, `maxRequestsPerConnection` retires them, and `tcp.maxConnections`
//! with `http1MaxPendingRequests` makes a request wait for the busy connection and fails the
//! next one fast with 503 `UO`. The waypoint runs in-process with its plaintext listener
//! (real mesh-ca); the backends are pods outside the mesh, dialled in plain TCP.

use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

mod common;

/// Pods on 127.NET.x.y, apart from the other suites' address blocks.
const NET: u8 = 171;
/// Permits of a backend's gate: taking them all holds every request.
const GATE_PERMITS: u32 = 1 << 20;

fn ip(sub: u8, host: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, NET, sub, host))
}

/// Services `reuse` (no policy), `capped` (3 requests per connection) and `narrow` (one
/// connection, one pending request), each with one pod outside the mesh.
fn model(sub: u8) -> String {
    let mut y = common::demo_namespace_with_waypoint(ip(sub, 250));
    for (i, app) in ["reuse", "capped", "narrow"].iter().enumerate() {
        y += &common::demo_pod(
            &format!("{app}-0"),
            &format!("app: {app}, istio.io/dataplane-mode: none"),
            ip(sub, i as u8 + 10),
        );
        y += &common::demo_service(app, &format!("10.{NET}.0.{}", i + 1), "http");
    }
    y += "---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: capped, namespace: demo}\n\
          spec:\n  host: capped\n  trafficPolicy: {connectionPool: {http: {maxRequestsPerConnection: 3}}}\n\
          ---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: narrow, namespace: demo}\n\
          spec:\n  host: narrow\n  trafficPolicy: {connectionPool: {tcp: {maxConnections: 1}, http: {http1MaxPendingRequests: 1}}}\n";
    y
}

/// An HTTP/1.1 backend counting the connections it accepted; each request first takes a
/// permit from `gate` (so a test can hold requests in the backend).
#[derive(Clone)]
struct Backend {
    accepted: Arc<AtomicUsize>,
    gate: Arc<Semaphore>,
}

async fn start_backend(addr: SocketAddr) -> Backend {
    let b = Backend { accepted: Arc::default(), gate: Arc::new(Semaphore::new(GATE_PERMITS as usize)) };
    let l = TcpListener::bind(addr).await.unwrap_or_else(|e| panic!("bind {addr}: {e}"));
    let me = b.clone();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else { continue };
            me.accepted.fetch_add(1, Ordering::SeqCst);
            let gate = me.gate.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let gate = gate.clone();
                    async move {
                        let _ = req.into_body().collect().await;
                        let _permit = gate.acquire().await;
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
                    }
                });
                let _ =
                    hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(s), svc).await;
            });
        }
    });
    b
}

struct Harness {
    plain: common::PlainWaypoint,
    backends: Vec<Backend>,
}

/// Each test uses its own block 127.NET.`sub`.x (the listeners bind fixed pod addresses).
async fn start(sub: u8) -> Harness {
    let mut backends = Vec::new();
    for i in 0..3u8 {
        backends.push(start_backend(SocketAddr::new(ip(sub, i + 10), 8080)).await);
    }
    let plain = common::start_plain_waypoint(&model(sub), SocketAddr::new(ip(sub, 250), 15008)).await;
    Harness { plain, backends }
}

/// A downstream HTTP/1.1 connection to the waypoint.
async fn client(h: &Harness) -> hyper::client::conn::http1::SendRequest<Full<Bytes>> {
    let s =
        TcpStream::connect(h.plain.waypoint.plaintext_http_addr.expect("plaintext listener")).await.unwrap();
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s)).await.unwrap();
    tokio::spawn(conn);
    send
}

/// GET / on `host`: (status, response body).
async fn get(c: &mut hyper::client::conn::http1::SendRequest<Full<Bytes>>, host: &str) -> (u16, String) {
    c.ready().await.unwrap();
    let req = Request::get("/").header(http::header::HOST, host).body(Full::new(Bytes::new())).unwrap();
    let resp = c.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into())
}

#[tokio::test]
async fn connections_are_reused_and_retired_after_max_requests() {
    let h = start(2).await;
    let mut c = client(&h).await;
    for _ in 0..20 {
        assert_eq!(get(&mut c, "reuse").await, (200, "ok".to_string()));
    }
    assert_eq!(h.backends[0].accepted.load(Ordering::SeqCst), 1, "20 sequential requests, one connection");

    for _ in 0..9 {
        assert_eq!(get(&mut c, "capped").await.0, 200);
    }
    assert_eq!(
        h.backends[1].accepted.load(Ordering::SeqCst),
        3,
        "maxRequestsPerConnection: 3 spreads 9 requests over 3 connections"
    );
    h.plain.waypoint.shutdown().await;
}

#[tokio::test]
async fn max_connections_queues_one_pending_request_and_overflows_the_next() {
    let h = start(3).await;
    let narrow = &h.backends[2];
    let cluster =
        h.plain.waypoint.ctx.clusters.get("narrow.demo.svc.cluster.local", None, 80).expect("cluster narrow");
    // Hold every request in the backend.
    let held = narrow.gate.acquire_many(GATE_PERMITS).await.unwrap();
    let mut tasks = Vec::new();
    for _ in 0..2 {
        let mut c = client(&h).await;
        tasks.push(tokio::spawn(async move { get(&mut c, "narrow").await }));
        tokio::time::timeout(Duration::from_secs(10), async {
            // The first request holds the only connection; the second waits as pending.
            while narrow.accepted.load(Ordering::SeqCst) == 0 || (tasks.len() == 2 && cluster.load().1 == 0) {
                tokio::task::yield_now().await;
            }
        })
        .await
        .unwrap_or_else(|_| {
            panic!(
                "the requests reach the backend and the pending queue: accepted {}, load {:?}",
                narrow.accepted.load(Ordering::SeqCst),
                cluster.load()
            )
        });
    }
    let mut c = client(&h).await;
    let (status, body) = get(&mut c, "narrow").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("reset reason: overflow"), "{body}");
    drop(held);
    for t in tasks {
        assert_eq!(t.await.unwrap(), (200, "ok".to_string()), "the held and the pending request complete");
    }
    assert_eq!(narrow.accepted.load(Ordering::SeqCst), 1, "maxConnections: 1 means one connection");
    let (requests, pending, connections, _) = cluster.load();
    assert_eq!(
        (requests, pending, connections),
        (0, 0, 1),
        "nothing active or pending, one pooled connection"
    );
    let text = metrics_text(h.plain.waypoint.metrics_addr).await;
    let uo = text
        .lines()
        .find(|l| {
            l.starts_with("istio_requests_total{")
                && l.contains("destination_service_name=\"narrow\"")
                && l.contains("response_flags=\"UO\"")
        })
        .unwrap_or_else(|| panic!("no UO series for narrow:\n{text}"));
    assert!(uo.contains("response_code=\"503\"") && uo.ends_with(" 1"), "{uo}");
    h.plain.waypoint.shutdown().await;
}

/// The waypoint's Prometheus text.
async fn metrics_text(addr: SocketAddr) -> String {
    let s = TcpStream::connect(addr).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s)).await.unwrap();
    tokio::spawn(conn);
    let req =
        Request::get("/metrics").header(http::header::HOST, "metrics").body(Full::new(Bytes::new())).unwrap();
    let resp = send.send_request(req).await.unwrap();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8_lossy(&body).into()
}
