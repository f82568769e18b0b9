//! The plaintext HTTP listener end to end: a waypoint in-process (real mesh-ca, no ztunnel)
//! with `plaintextHttpAddr` set, backends that are pods outside the mesh
//! (`istio.io/dataplane-mode: none`, so the waypoint dials them in plain TCP), and a
//! VirtualService whose header match sends canary requests elsewhere and sets a response
//! header. Checked over HTTP/1.1 and h2c (prior knowledge).

use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpListener, TcpStream};

/// Pods on 127.NET.x.y, apart from the other suites' address blocks.
mod common;
const NET: u8 = 170;

fn ip(sub: u8, host: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, NET, sub, host))
}

/// Namespace `demo` using waypoint `demo/waypoint`; Services `web` (pod web-v1) and
/// `web-canary` (pod web-canary) whose pods are out of the mesh; a VirtualService on `web`.
fn model() -> String {
    let mut y = common::demo_namespace_with_waypoint(ip(1, 250));
    y += &common::demo_pod("web-v1", "app: web, istio.io/dataplane-mode: none", ip(2, 10));
    y += &common::demo_pod("web-canary", "app: web-canary, istio.io/dataplane-mode: none", ip(2, 11));
    for (i, app) in ["web", "web-canary"].iter().enumerate() {
        y += &common::demo_service(app, &format!("10.{NET}.0.{}", i + 1), "http");
    }
    y += "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: web, namespace: demo}\n\
          spec:\n  hosts: [web]\n  http:\n\
          \x20 - name: canary\n    match: [{headers: {x-canary: {exact: \"yes\"}}}]\n\
          \x20   route: [{destination: {host: web-canary}}]\n\
          \x20   headers: {response: {set: {x-route: canary}}}\n\
          \x20 - name: default\n    route: [{destination: {host: web}}]\n";
    // Any authenticated caller may call web-canary directly; plaintext callers are not.
    y += "---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: canary-mtls-only, namespace: demo}\n\
          spec:\n  targetRefs: [{kind: Service, group: \"\", name: web-canary}]\n  action: ALLOW\n\
          \x20 rules: [{from: [{source: {principals: [\"*\"]}}]}]\n";
    y
}

/// Answers with `x-backend: <pod>` and the path it saw, over HTTP/1.1 only (as a legacy app
/// would), so the waypoint's plaintext upstream is what talks to it.
async fn start_backend(name: &'static str, addr: SocketAddr) {
    let l = TcpListener::bind(addr).await.unwrap_or_else(|e| panic!("bind {addr}: {e}"));
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else { continue };
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| async move {
                    let path = req.uri().path().to_string();
                    let _ = req.into_body().collect().await;
                    Ok::<_, Infallible>(
                        Response::builder()
                            .header("x-backend", name)
                            .body(Full::new(Bytes::from(path)))
                            .unwrap(),
                    )
                });
                let _ =
                    hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(s), svc).await;
            });
        }
    });
}

type Harness = common::PlainWaypoint;

async fn start() -> Harness {
    start_backend("web-v1", SocketAddr::new(ip(2, 10), 8080)).await;
    start_backend("web-canary", SocketAddr::new(ip(2, 11), 8080)).await;
    common::start_plain_waypoint(&model(), SocketAddr::new(ip(1, 250), 15008)).await
}

enum Client {
    H1(hyper::client::conn::http1::SendRequest<Full<Bytes>>),
    H2(hyper::client::conn::http2::SendRequest<Full<Bytes>>),
}

impl Client {
    async fn connect(addr: SocketAddr, h2: bool) -> Client {
        let s = TcpStream::connect(addr).await.unwrap();
        if h2 {
            let (send, conn) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(s)).await.unwrap();
            tokio::spawn(conn);
            Client::H2(send)
        } else {
            let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s)).await.unwrap();
            tokio::spawn(conn);
            Client::H1(send)
        }
    }

    /// POSTs `path` to `authority` with `headers`; (status, response headers, body).
    async fn post(
        &mut self,
        authority: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> (u16, http::HeaderMap, String) {
        let h2 = matches!(self, Client::H2(_));
        let mut b = Request::post(if h2 { format!("http://{authority}{path}") } else { path.to_string() });
        if !h2 {
            b = b.header(http::header::HOST, authority);
        }
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let req = b.body(Full::new(Bytes::from_static(b"hello"))).unwrap();
        let resp = match self {
            Client::H1(s) => s.send_request(req).await.unwrap(),
            Client::H2(s) => s.send_request(req).await.unwrap(),
        };
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        (parts.status.as_u16(), parts.headers, String::from_utf8_lossy(&body).into())
    }
}

fn backend(h: &http::HeaderMap) -> &str {
    h.get("x-backend").and_then(|v| v.to_str().ok()).unwrap_or("")
}

async fn routes_by_header(h: &Harness, h2: bool) {
    let addr = h.waypoint.plaintext_http_addr.expect("plaintext listener bound");
    assert!(addr.ip().is_loopback());
    let mut c = Client::connect(addr, h2).await;

    let (status, headers, body) = c.post("web", "/hello", &[]).await;
    assert_eq!((status, backend(&headers), body.as_str()), (200, "web-v1", "/hello"));
    assert!(headers.get("x-route").is_none());

    let (status, headers, _) = c.post("web", "/hello", &[("x-canary", "yes")]).await;
    assert_eq!((status, backend(&headers)), (200, "web-canary"));
    assert_eq!(headers.get("x-route").unwrap(), "canary");

    let (status, headers, _) = c.post("web", "/hello", &[("x-canary", "no")]).await;
    assert_eq!((status, backend(&headers)), (200, "web-v1"));

    // The FQDN and an explicit port name the same Service on the same connection.
    let (status, headers, _) = c.post("web.demo.svc.cluster.local:80", "/x", &[("x-canary", "yes")]).await;
    assert_eq!((status, backend(&headers)), (200, "web-canary"));

    // Plaintext callers have no principal: `principals: ["*"]` does not admit them.
    let (status, _, body) = c.post("web-canary", "/", &[]).await;
    assert_eq!((status, body.as_str()), (403, "RBAC: access denied"));

    // A Service nobody declared: 404 like a missing virtual host.
    let (status, _, body) = c.post("nope", "/", &[]).await;
    assert_eq!(status, 404, "{body}");
}

/// One waypoint (the backends' addresses are fixed) for both downstream protocols.
#[tokio::test]
async fn http1_and_h2c_requests_are_routed_by_the_virtual_service() {
    let h = start().await;
    routes_by_header(&h, false).await;
    routes_by_header(&h, true).await;
    // A request without any authority cannot be given a Service.
    let mut s = TcpStream::connect(h.waypoint.plaintext_http_addr.unwrap()).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    assert!(out.starts_with("HTTP/1.0 400"), "{out}");
    host_header_checks(&h).await;
    h.waypoint.shutdown().await;
}

/// Sends `head` (a raw HTTP/1.1 request head, `Connection: close`) and returns the response.
async fn raw_http1(addr: SocketAddr, head: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(head.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

/// RFC 9112 §3.2 / RFC 9113 §8.3.1: one authority per request, else 400 before any routing.
async fn host_header_checks(h: &Harness) {
    let addr = h.waypoint.plaintext_http_addr.unwrap();
    // One Host still routes.
    let out = raw_http1(addr, "GET /one HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n").await;
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(out.to_ascii_lowercase().contains("x-backend: web-v1"), "{out}");
    // Two Host lines (what `h2load --h1 -H 'Host: x'` sends): 400, whether they agree or not,
    // and whichever comes first.
    for hosts in [["web", "web"], ["web", "web-canary"], ["nope", "web"]] {
        let head = format!(
            "GET /two HTTP/1.1\r\nHost: {}\r\nHost: {}\r\nConnection: close\r\n\r\n",
            hosts[0], hosts[1]
        );
        let out = raw_http1(addr, &head).await;
        assert!(out.starts_with("HTTP/1.1 400"), "{hosts:?}: {out}");
        assert!(!out.to_ascii_lowercase().contains("x-backend"), "{hosts:?} reached a backend: {out}");
    }
    // h2c: a Host that differs from :authority is malformed; an equal one is fine.
    let mut c = Client::connect(addr, true).await;
    let (status, headers, _) = c.post("web", "/h2", &[("host", "web")]).await;
    assert_eq!((status, backend(&headers)), (200, "web-v1"));
    let (status, headers, body) = c.post("web", "/h2", &[("host", "web-canary")]).await;
    assert_eq!((status, backend(&headers)), (400, ""), "{body}");
}
