//! The waypoint's HTTP/2 upstream connections against real h2c backends: one multiplexed
//! connection per endpoint carries concurrent requests, `maxRequestsPerConnection` moves new
//! streams to a fresh connection, `tcp.connectTimeout` bounds the dial (503 `UF`), and a stream
//! the backend refuses (`REFUSED_STREAM`) is retried under Istio's default retry policy. The
//! waypoint runs in-process with its plaintext listener (real mesh-ca); the backends are pods
//! outside the mesh, dialled in plain TCP, whose Service ports are named `http2`.

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

mod common;

/// Pods on 127.NET.x.y, apart from the other suites' address blocks.
const NET: u8 = 172;

fn ip(sub: u8, host: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, NET, sub, host))
}

/// Services `mux` (no policy), `capped` (3 requests per connection), `refuse` (no policy, so
/// Istio's default retries) and `blackhole` (200 ms connect timeout), one pod each.
fn model(sub: u8) -> String {
    let mut y = common::demo_namespace_with_waypoint(ip(sub, 250));
    for (i, app) in ["mux", "capped", "refuse", "blackhole"].iter().enumerate() {
        y += &common::demo_pod(
            &format!("{app}-0"),
            &format!("app: {app}, istio.io/dataplane-mode: none"),
            ip(sub, i as u8 + 10),
        );
        y += &common::demo_service(app, &format!("10.{NET}.0.{}", i + 1), "http2");
    }
    y += "---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: capped, namespace: demo}\n\
          spec:\n  host: capped\n  trafficPolicy: {connectionPool: {http: {maxRequestsPerConnection: 3}}}\n\
          ---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: blackhole, namespace: demo}\n\
          spec:\n  host: blackhole\n  trafficPolicy: {connectionPool: {tcp: {connectTimeout: 200ms}}}\n";
    y
}

/// An h2c backend counting the connections and the requests it accepted.
#[derive(Clone, Default)]
struct Backend {
    connections: Arc<AtomicUsize>,
    requests: Arc<AtomicUsize>,
}

async fn start_backend(addr: SocketAddr) -> Backend {
    let b = Backend::default();
    let l = TcpListener::bind(addr).await.unwrap_or_else(|e| panic!("bind {addr}: {e}"));
    let me = b.clone();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else { continue };
            me.connections.fetch_add(1, Ordering::SeqCst);
            let requests = me.requests.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    requests.fetch_add(1, Ordering::SeqCst);
                    async move {
                        let _ = req.into_body().collect().await;
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

struct Harness {
    _dir: tempfile::TempDir,
    _ca: mesh_ca::RunningCa,
    waypoint: waypoint::ctx::Waypoint,
}

/// Each test uses its own block 127.NET.`sub`.x (the listeners bind fixed pod addresses).
async fn start(sub: u8) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let ca = common::start_ca(dir.path(), &model(sub)).await;
    let mut config = common::waypoint_config(dir.path(), &ca, SocketAddr::new(ip(sub, 250), 15008));
    config.plaintext_http_addr = Some("127.0.0.1:0".parse().unwrap());
    let waypoint = waypoint::ctx::start(config, None).await.unwrap();
    Harness { _dir: dir, _ca: ca, waypoint }
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
    let mux = start_backend(SocketAddr::new(ip(sub, 10), 8080)).await;
    let capped = start_backend(SocketAddr::new(ip(sub, 11), 8080)).await;
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
    let seen = start_refusing_backend(SocketAddr::new(ip(sub, 12), 8080)).await;
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
    let _blackhole = start_blackhole(SocketAddr::new(ip(sub, 13), 8080)).await;
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
