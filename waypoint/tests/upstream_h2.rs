//! The waypoint's HTTP/2 upstream connections against real h2c backends: one multiplexed
//! connection per endpoint carries concurrent requests, `maxRequestsPerConnection` moves new
//! streams to a fresh connection, `maxConcurrentStreams` opens another connection,
//! `tcp.connectTimeout` bounds the dial (503 `UF`), `h2UpgradePolicy: UPGRADE` sends an `http`
//! port's requests as HTTP/2, and a stream the backend refuses (`REFUSED_STREAM`) is retried
//! under Istio's default retry policy. The
//! waypoint runs in-process with its plaintext listener (real mesh-ca); the backends are pods
//! outside the mesh, dialled in plain TCP.

use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::Semaphore;

mod common;

/// Pods on 127.NET.x.y, apart from the other suites' address blocks.
const NET: u8 = 172;

fn ip(sub: u8, host: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, NET, sub, host))
}

/// The Services, one pod each (pod i on host i + 10), with their port names.
const APPS: [(&str, &str); 6] = [
    ("mux", "http2"),
    ("capped", "http2"),
    ("refuse", "http2"),
    ("blackhole", "http2"),
    ("upgrade", "http"),
    ("streams", "http2"),
];

/// `mux` (no policy), `capped` (3 requests per connection), `refuse` (no policy, so Istio's
/// default retries), `blackhole` (200 ms connect timeout), `upgrade` (an `http` port with
/// `h2UpgradePolicy: UPGRADE`) and `streams` (2 concurrent streams per connection).
fn model(sub: u8) -> String {
    let mut y = common::demo_namespace_with_waypoint(ip(sub, 250));
    for (i, (app, port)) in APPS.iter().enumerate() {
        y += &common::demo_pod(
            &format!("{app}-0"),
            &format!("app: {app}, istio.io/dataplane-mode: none"),
            ip(sub, i as u8 + 10),
        );
        y += &common::demo_service(app, &format!("10.{NET}.0.{}", i + 1), port);
    }
    for (host, pool) in [
        ("capped", "{http: {maxRequestsPerConnection: 3}}"),
        ("blackhole", "{tcp: {connectTimeout: 200ms}}"),
        ("upgrade", "{http: {h2UpgradePolicy: UPGRADE}}"),
        ("streams", "{http: {maxConcurrentStreams: 2}}"),
    ] {
        y += &format!(
            "---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: {host}, namespace: demo}}\n\
             spec:\n  host: {host}\n  trafficPolicy: {{connectionPool: {pool}}}\n"
        );
    }
    y
}

/// The address of `app`'s pod.
fn pod_addr(sub: u8, app: &str) -> SocketAddr {
    let i = APPS.iter().position(|(a, _)| *a == app).expect("a known app");
    SocketAddr::new(ip(sub, i as u8 + 10), 8080)
}

/// Permits of a backend's gate: taking them all holds every request.
const GATE_PERMITS: u32 = 1 << 20;

/// An h2c-only backend counting the connections and the requests it accepted; each request
/// then takes a permit from `gate` (so a test can hold requests in the backend).
#[derive(Clone)]
struct Backend {
    connections: Arc<AtomicUsize>,
    requests: Arc<AtomicUsize>,
    gate: Arc<Semaphore>,
}

async fn start_backend(addr: SocketAddr) -> Backend {
    let b = Backend {
        connections: Arc::default(),
        requests: Arc::default(),
        gate: Arc::new(Semaphore::new(GATE_PERMITS as usize)),
    };
    let l = TcpListener::bind(addr).await.unwrap_or_else(|e| panic!("bind {addr}: {e}"));
    let me = b.clone();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else { continue };
            me.connections.fetch_add(1, Ordering::SeqCst);
            let (requests, gate) = (me.requests.clone(), me.gate.clone());
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    requests.fetch_add(1, Ordering::SeqCst);
                    let gate = gate.clone();
                    async move {
                        let _ = req.into_body().collect().await;
                        let _permit = gate.acquire().await;
                        // Long enough for concurrent requests to overlap on the connection.
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
                    }
                });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    b
}

/// An h2c backend (the h2 crate's server) that refuses every odd-numbered stream it receives
/// with `REFUSED_STREAM` and answers the others, recording each request's
/// `x-envoy-attempt-count`.
async fn start_refusing_backend(addr: SocketAddr) -> Arc<std::sync::Mutex<Vec<Option<String>>>> {
    let seen: Arc<std::sync::Mutex<Vec<Option<String>>>> = Arc::default();
    let l = TcpListener::bind(addr).await.unwrap_or_else(|e| panic!("bind {addr}: {e}"));
    let log = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else { continue };
            let log = log.clone();
            tokio::spawn(async move {
                let Ok(mut conn) = h2::server::handshake(s).await else { return };
                while let Some(Ok((req, mut respond))) = conn.accept().await {
                    let attempt =
                        req.headers().get("x-envoy-attempt-count").map(|v| v.to_str().unwrap().to_owned());
                    let n = {
                        let mut log = log.lock().unwrap();
                        log.push(attempt);
                        log.len()
                    };
                    if n % 2 == 1 {
                        respond.send_reset(h2::Reason::REFUSED_STREAM);
                        continue;
                    }
                    let resp = Response::builder().status(200).body(()).unwrap();
                    if let Ok(mut body) = respond.send_response(resp, false) {
                        let _ = body.send_data(Bytes::from_static(b"ok"), true);
                    }
                }
            });
        }
    });
    seen
}

/// A listener that never accepts, its one-slot accept queue already full: further SYNs to it
/// are dropped, so a dial hangs until the dialler gives up.
async fn start_blackhole(addr: SocketAddr) -> (TcpListener, TcpStream) {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(addr).unwrap_or_else(|e| panic!("bind {addr}: {e}"));
    let l = socket.listen(0).unwrap();
    let filler = TcpStream::connect(addr).await.expect("the first connection fills the accept queue");
    (l, filler)
}

type Harness = common::PlainWaypoint;

/// Each test uses its own block 127.NET.`sub`.x (the listeners bind fixed pod addresses).
async fn start(sub: u8) -> Harness {
    common::start_plain_waypoint(&model(sub), SocketAddr::new(ip(sub, 250), 15008)).await
}

/// GET / on `host` over a new downstream HTTP/1.1 connection: (status, response body).
async fn get(h: &Harness, host: &str) -> (u16, String) {
    let s = TcpStream::connect(h.waypoint.plaintext_http_addr.expect("plaintext listener")).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s)).await.unwrap();
    tokio::spawn(conn);
    let req = Request::get("/").header(http::header::HOST, host).body(Full::new(Bytes::new())).unwrap();
    let resp = send.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into())
}

#[tokio::test]
async fn concurrent_requests_share_one_connection_until_max_requests() {
    let sub = 2;
    let mux = start_backend(pod_addr(sub, "mux")).await;
    let capped = start_backend(pod_addr(sub, "capped")).await;
    let h = Arc::new(start(sub).await);

    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let h = h.clone();
            tokio::spawn(async move { get(&h, "mux").await })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap(), (200, "ok".to_string()));
    }
    assert_eq!(mux.requests.load(Ordering::SeqCst), 20);
    assert_eq!(mux.connections.load(Ordering::SeqCst), 1, "20 concurrent requests, one HTTP/2 connection");

    for _ in 0..9 {
        assert_eq!(get(&h, "capped").await.0, 200);
    }
    assert_eq!(
        capped.connections.load(Ordering::SeqCst),
        3,
        "maxRequestsPerConnection: 3 spreads 9 requests over 3 connections"
    );
    h.waypoint.shutdown().await;
}

#[tokio::test]
async fn a_refused_stream_is_retried_under_istios_default_policy() {
    let sub = 3;
    let seen = start_refusing_backend(pod_addr(sub, "refuse")).await;
    let h = start(sub).await;
    assert_eq!(get(&h, "refuse").await, (200, "ok".to_string()), "the second attempt is answered");
    assert_eq!(
        *seen.lock().unwrap(),
        vec![None, Some("2".to_string())],
        "the refused first attempt, then the retry marked as attempt 2"
    );
    h.waypoint.shutdown().await;
}

#[tokio::test]
async fn the_connect_timeout_bounds_the_dial() {
    let sub = 4;
    let _blackhole = start_blackhole(pod_addr(sub, "blackhole")).await;
    let h = start(sub).await;
    let started = std::time::Instant::now();
    let (status, body) = get(&h, "blackhole").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("connection failure"), "Envoy's connect-failure body: {body}");
    // Three attempts of 200 ms each and the backoff between them: each dial hung until the
    // timeout (a refused dial would fail at once), and none waited for TCP's SYN retries
    // (over a minute).
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(600) && took < Duration::from_secs(10), "took {took:?}");
    h.waypoint.shutdown().await;
}

#[tokio::test]
async fn max_concurrent_streams_opens_another_connection_and_upgrade_makes_http2() {
    let sub = 5;
    let streams = start_backend(pod_addr(sub, "streams")).await;
    let upgrade = start_backend(pod_addr(sub, "upgrade")).await;
    let h = Arc::new(start(sub).await);

    // Hold every request in the backend, so that all six streams are open at once.
    let held = streams.gate.acquire_many(GATE_PERMITS).await.unwrap();
    let tasks: Vec<_> = (0..6)
        .map(|_| {
            let h = h.clone();
            tokio::spawn(async move { get(&h, "streams").await })
        })
        .collect();
    tokio::time::timeout(Duration::from_secs(10), async {
        while streams.requests.load(Ordering::SeqCst) < 6 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("six streams reach the backend: {}", streams.requests.load(Ordering::SeqCst)));
    assert_eq!(
        streams.connections.load(Ordering::SeqCst),
        3,
        "maxConcurrentStreams: 2 puts 6 streams on 3 connections"
    );
    drop(held);
    for t in tasks {
        assert_eq!(t.await.unwrap(), (200, "ok".to_string()));
    }

    // The `upgrade` backend speaks only h2c: an HTTP/1.1 request would not be answered.
    assert_eq!(get(&h, "upgrade").await, (200, "ok".to_string()), "h2UpgradePolicy: UPGRADE sends HTTP/2");
    assert_eq!(upgrade.requests.load(Ordering::SeqCst), 1);
    h.waypoint.shutdown().await;
}
