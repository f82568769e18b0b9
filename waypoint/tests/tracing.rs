//! Tracing end to end: a waypoint in-process (real mesh-ca, plaintext listener, backends that
//! are pods outside the mesh, as in `plaintext.rs`) exporting to a real OTLP/HTTP collector
//! written here (a hyper server decoding the protobuf with the waypoint's own OTLP structs).
//! Checked: the spans' ids, parents, tags, status and resource; the backend seeing the
//! waypoint's span as parent in `traceparent` and B3; a Telemetry object setting sampling to
//! 0 (headers still propagated, nothing exported); export retried on 503; a collector that
//! never answers neither slows requests nor grows memory (spans dropped and counted).

use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use prost::Message;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use waypoint::config::TracingConfig;
use waypoint::trace::otlp::{
    ExportTraceServiceRequest, ExportTraceServiceResponse, Span, SpanKind, StatusCode as Otlp,
};

mod common;

fn ip(net: u8, sub: u8, host: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, net, sub, host))
}

/// Namespace `demo` with waypoint `demo/waypoint`; Service `web` (pod web-v1, out of the mesh).
fn model(net: u8, extra: &str) -> String {
    let mut y = common::demo_namespace_with_waypoint(ip(net, 1, 250));
    y += &common::demo_pod("web-v1", "app: web, istio.io/dataplane-mode: none", ip(net, 2, 10));
    y += &common::demo_service("web", &format!("10.{net}.0.1"), "http");
    y + extra
}

const SEEN: [&str; 8] = [
    "traceparent",
    "tracestate",
    "b3",
    "x-b3-traceid",
    "x-b3-spanid",
    "x-b3-parentspanid",
    "x-b3-sampled",
    "x-b3-flags",
];

/// Answers `?status=N` (default 200) and echoes the trace headers it saw as `x-seen-<name>`.
async fn start_backend(addr: SocketAddr) {
    let l = TcpListener::bind(addr).await.unwrap_or_else(|e| panic!("bind {addr}: {e}"));
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else { continue };
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| async move {
                    let status = req
                        .uri()
                        .query()
                        .and_then(|q| q.strip_prefix("status="))
                        .and_then(|s| s.parse().ok())
                        .unwrap_or(200u16);
                    let mut resp = Response::builder().status(status);
                    for name in SEEN {
                        for v in req.headers().get_all(name) {
                            resp = resp.header(format!("x-seen-{name}"), v);
                        }
                    }
                    let _ = req.into_body().collect().await;
                    Ok::<_, Infallible>(resp.body(Full::new(Bytes::from_static(b"ok"))).unwrap())
                });
                let _ =
                    hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(s), svc).await;
            });
        }
    });
}

/// An OTLP/HTTP collector: decodes each export and passes its spans (with the resource's
/// attributes) on; answers 503 to the first `fail_first` exports.
struct Collector {
    addr: SocketAddr,
    spans: mpsc::UnboundedReceiver<(Span, Vec<(String, String)>)>,
    requests: Arc<AtomicUsize>,
}

async fn start_collector(fail_first: usize) -> Collector {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (tx, spans) = mpsc::unbounded_channel();
    let requests = Arc::new(AtomicUsize::new(0));
    let count = requests.clone();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else { continue };
            let (tx, count) = (tx.clone(), count.clone());
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let (tx, count) = (tx.clone(), count.clone());
                    async move {
                        let n = count.fetch_add(1, Ordering::SeqCst);
                        assert_eq!(req.method(), http::Method::POST);
                        assert_eq!(req.uri().path(), "/v1/traces");
                        assert_eq!(req.headers()["content-type"], "application/x-protobuf");
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        if n < fail_first {
                            let r = Response::builder().status(StatusCode::SERVICE_UNAVAILABLE);
                            return Ok::<_, Infallible>(r.body(Full::new(Bytes::new())).unwrap());
                        }
                        let export = ExportTraceServiceRequest::decode(body).expect("valid OTLP protobuf");
                        for rs in export.resource_spans {
                            let res: Vec<(String, String)> = rs
                                .resource
                                .iter()
                                .flat_map(|r| &r.attributes)
                                .map(|kv| (kv.key.clone(), kv.as_str().unwrap_or_default().to_string()))
                                .collect();
                            for ss in rs.scope_spans {
                                for span in ss.spans {
                                    let _ = tx.send((span, res.clone()));
                                }
                            }
                        }
                        let ok = ExportTraceServiceResponse::default().encode_to_vec();
                        let r = Response::builder().header("content-type", "application/x-protobuf");
                        Ok(r.body(Full::new(Bytes::from(ok))).unwrap())
                    }
                });
                let _ =
                    hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(s), svc).await;
            });
        }
    });
    Collector { addr, spans, requests }
}

impl Collector {
    /// The span of `trace_id`, waiting up to 10 s; spans of other traces are returned too.
    async fn span_of(&mut self, trace_id: u128) -> (Span, Vec<(String, String)>, Vec<Span>) {
        let mut others = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let got = tokio::time::timeout_at(deadline, self.spans.recv()).await;
            let (span, res) = got.unwrap_or_else(|_| panic!("no span of trace {trace_id:032x}")).unwrap();
            if span.trace_id == trace_id.to_be_bytes() {
                return (span, res, others);
            }
            others.push(span);
        }
    }
}

struct Harness {
    _dir: tempfile::TempDir,
    _ca: mesh_ca::RunningCa,
    waypoint: waypoint::ctx::Waypoint,
}

async fn start(net: u8, extra_model: &str, tracing: TracingConfig) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let ca = common::start_ca(dir.path(), &model(net, extra_model)).await;
    start_backend(SocketAddr::new(ip(net, 2, 10), 8080)).await;
    let mut config = common::waypoint_config(dir.path(), &ca, SocketAddr::new(ip(net, 1, 250), 15008));
    config.plaintext_http_addr = Some("127.0.0.1:0".parse().unwrap());
    config.tracing = tracing;
    let waypoint = waypoint::ctx::start(config, None).await.unwrap();
    Harness { _dir: dir, _ca: ca, waypoint }
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

async fn client(addr: SocketAddr) -> Sender {
    let s = TcpStream::connect(addr).await.unwrap();
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s)).await.unwrap();
    tokio::spawn(conn);
    send
}

async fn get(c: &mut Sender, host: &str, path: &str, headers: &[(&str, &str)]) -> (u16, http::HeaderMap) {
    let mut b = Request::get(path).header(http::header::HOST, host);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let resp = c.send_request(b.body(Full::new(Bytes::new())).unwrap()).await.unwrap();
    let (parts, body) = resp.into_parts();
    let _ = body.collect().await.unwrap();
    (parts.status.as_u16(), parts.headers)
}

async fn http_get_text(addr: SocketAddr, path: &str) -> String {
    let mut c = client(addr).await;
    let resp = c
        .send_request(Request::get(path).header("host", "admin").body(Full::new(Bytes::new())).unwrap())
        .await
        .unwrap();
    String::from_utf8_lossy(&resp.into_body().collect().await.unwrap().to_bytes()).into_owned()
}

fn seen<'a>(h: &'a http::HeaderMap, name: &str) -> &'a str {
    h.get(format!("x-seen-{name}")).and_then(|v| v.to_str().ok()).unwrap_or("")
}

fn tag<'a>(s: &'a Span, key: &str) -> &'a str {
    s.attributes.iter().find(|kv| kv.key == key).and_then(|kv| kv.as_str()).unwrap_or_else(|| {
        panic!("no tag {key} in {:?}", s.attributes.iter().map(|kv| &kv.key).collect::<Vec<_>>())
    })
}

fn hex_u64(s: &[u8]) -> String {
    s.iter().map(|b| format!("{b:02x}")).collect()
}

fn tracing_to(collector: &Collector, sampling_percent: f64) -> TracingConfig {
    TracingConfig {
        otlp_endpoint: Some(format!("http://{}/v1/traces", collector.addr)),
        sampling_percent,
        flush_interval: Duration::from_millis(20),
        export_timeout: Duration::from_secs(2),
        ..TracingConfig::default()
    }
}

#[tokio::test]
async fn spans_carry_the_callers_context_and_istio_tags() {
    // The first export is answered 503: the span still arrives (retried).
    let mut col = start_collector(1).await;
    let h = start(181, "", tracing_to(&col, 100.0)).await;
    let mut c = client(h.waypoint.plaintext_http_addr.unwrap()).await;

    // W3C, sampled by the caller, with tracestate.
    let tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let (status, seen_h) = get(
        &mut c,
        "web",
        "/hello",
        &[("traceparent", tp), ("tracestate", "rojo=1"), ("x-request-id", "rid-1")],
    )
    .await;
    assert_eq!(status, 200);
    let up = seen(&seen_h, "traceparent");
    assert!(up.starts_with("00-0af7651916cd43dd8448eb211c80319c-") && up.ends_with("-01"), "{up}");
    let up_parent = &up[36..52];
    assert_ne!(up_parent, "b7ad6b7169203331", "the backend's parent is the waypoint's span");
    assert_eq!(seen(&seen_h, "tracestate"), "rojo=1");
    assert_eq!(seen(&seen_h, "x-b3-traceid"), "", "no B3 came in, none goes out");

    let (span, resource, _) = col.span_of(0x0af7651916cd43dd8448eb211c80319c).await;
    assert_eq!(hex_u64(&span.span_id), up_parent);
    assert_eq!(hex_u64(&span.parent_span_id), "b7ad6b7169203331");
    assert_eq!(span.kind, SpanKind::Server as i32);
    assert_eq!(span.name, "web.demo.svc.cluster.local:80/*");
    assert_eq!(span.trace_state, "rojo=1");
    assert!(span.status.is_none(), "a 200 leaves the status unset");
    assert!(span.end_time_unix_nano >= span.start_time_unix_nano && span.start_time_unix_nano > 0);
    for (k, v) in [
        ("http.method", "GET"),
        ("http.url", "http://web/hello"),
        ("http.status_code", "200"),
        ("upstream_cluster", "inbound-vip|80|http|web.demo.svc.cluster.local"),
        ("response_flags", "-"),
        ("guid:x-request-id", "rid-1"),
        ("peer.address", "127.0.0.1"),
        ("istio.namespace", "demo"),
        ("component", "proxy"),
        ("upstream_address", "127.181.2.10:8080"),
        ("response_size", "2"),
    ] {
        assert_eq!(tag(&span, k), v, "{k}");
    }
    assert!(tag(&span, "node_id").starts_with("waypoint~127.181.1.250~waypoint-0.demo~"), "{span:?}");
    for (k, v) in
        [("service.name", "waypoint.demo"), ("k8s.pod.name", "waypoint-0"), ("k8s.namespace.name", "demo")]
    {
        assert!(resource.contains(&(k.to_string(), v.to_string())), "{k} in {resource:?}");
    }
    assert!(col.requests.load(Ordering::SeqCst) >= 2, "the 503 was retried");

    // B3 multi-header in, sampled: B3 goes out updated, traceparent too.
    let (_, seen_h) = get(
        &mut c,
        "web",
        "/b3",
        &[
            ("x-b3-traceid", "463ac35c9f6413ad48485a3953bb6124"),
            ("x-b3-spanid", "a2fb4a1d1a96d312"),
            ("x-b3-sampled", "1"),
        ],
    )
    .await;
    assert_eq!(seen(&seen_h, "x-b3-traceid"), "463ac35c9f6413ad48485a3953bb6124");
    assert_eq!(seen(&seen_h, "x-b3-parentspanid"), "a2fb4a1d1a96d312");
    assert_eq!(seen(&seen_h, "x-b3-sampled"), "1");
    let b3_span = seen(&seen_h, "x-b3-spanid").to_string();
    assert_eq!(seen(&seen_h, "traceparent"), format!("00-463ac35c9f6413ad48485a3953bb6124-{b3_span}-01"));
    let (span, _, _) = col.span_of(0x463ac35c9f6413ad48485a3953bb6124).await;
    assert_eq!(hex_u64(&span.span_id), b3_span);
    assert_eq!(hex_u64(&span.parent_span_id), "a2fb4a1d1a96d312");

    // The caller said "not sampled": followed even at 100 %, and nothing is exported.
    let (_, seen_h) = get(&mut c, "web", "/no", &[("b3", "64fe8b2a57d3eff7-e457b5a2e4d86bd1-0")]).await;
    let b3 = seen(&seen_h, "b3");
    assert!(b3.starts_with("64fe8b2a57d3eff7-") && b3.ends_with("-0-e457b5a2e4d86bd1"), "{b3}");
    assert!(seen(&seen_h, "traceparent").ends_with("-00"));

    // A 503 from the backend: status ERROR; a fresh trace (no context) is a root span.
    let (status, seen_h) = get(&mut c, "web", "/fail?status=503", &[]).await;
    assert_eq!(status, 503);
    let tp = seen(&seen_h, "traceparent").to_string();
    assert!(tp.ends_with("-01"), "100 % samples a new trace: {tp}");
    let trace_id = u128::from_str_radix(&tp[3..35], 16).unwrap();
    let (span, _, others) = col.span_of(trace_id).await;
    assert!(
        others.iter().all(|s| s.trace_id != 0x64fe8b2a57d3eff7u128.to_be_bytes()),
        "the unsampled request was exported"
    );
    assert_eq!(span.status.as_ref().unwrap().code, Otlp::Error as i32);
    assert_eq!((tag(&span, "http.status_code"), tag(&span, "error")), ("503", "true"));
    assert!(span.parent_span_id.is_empty());

    let dump = http_get_text(h.waypoint.admin_addr, "/config_dump").await;
    let dump: serde_json::Value = serde_json::from_str(&dump).unwrap();
    assert_eq!(dump["tracing"]["samplingPercent"], 100.0);
    assert_eq!(dump["tracing"]["spanReporting"], true);
    h.waypoint.shutdown().await;
}

#[tokio::test]
async fn telemetry_sampling_zero_exports_nothing_but_propagates() {
    let mut col = start_collector(0).await;
    let telemetry = "---\napiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {name: quiet, namespace: demo}\n\
        spec:\n  targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: waypoint}]\n  \
        tracing: [{randomSamplingPercentage: 0, customTags: {team: {literal: {value: shop}}}}]\n";
    let h = start(182, telemetry, TracingConfig { emit_b3: true, ..tracing_to(&col, 100.0) }).await;
    let mut c = client(h.waypoint.plaintext_http_addr.unwrap()).await;
    let mut unsampled = Vec::new();
    for _ in 0..20 {
        let (status, seen_h) = get(&mut c, "web", "/", &[]).await;
        assert_eq!(status, 200);
        let tp = seen(&seen_h, "traceparent");
        assert!(tp.starts_with("00-") && tp.ends_with("-00"), "{tp}");
        // emitB3: B3 goes out even though none came in.
        assert_eq!(seen(&seen_h, "x-b3-traceid"), &tp[3..35]);
        assert_eq!(seen(&seen_h, "x-b3-sampled"), "0");
        unsampled.push(tp[3..35].to_string());
    }
    // A caller's "sampled" is still honoured: its span is the first and only one exported.
    let tp = "00-11111111111111111111111111111111-2222222222222222-01";
    let (_, seen_h) = get(&mut c, "web", "/", &[("traceparent", tp)]).await;
    assert!(seen(&seen_h, "traceparent").ends_with("-01"));
    let (span, _, others) = col.span_of(0x11111111111111111111111111111111).await;
    assert!(others.is_empty(), "unsampled spans exported: {}", others.len());
    assert_eq!(tag(&span, "team"), "shop");
    let dump = http_get_text(h.waypoint.admin_addr, "/config_dump").await;
    let dump: serde_json::Value = serde_json::from_str(&dump).unwrap();
    assert_eq!(dump["tracing"]["samplingPercent"], 0.0);
    assert_eq!(dump["tracing"]["telemetry"]["sources"][0], "demo/quiet");
    h.waypoint.shutdown().await;
}

#[tokio::test]
async fn a_collector_that_never_answers_does_not_slow_requests() {
    // Accepts connections and never reads: every export hangs until its timeout.
    let hole = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hole_addr = hole.local_addr().unwrap();
    let tracing = TracingConfig {
        otlp_endpoint: Some(format!("http://{hole_addr}/v1/traces")),
        sampling_percent: 100.0,
        max_queue: 4,
        max_batch: 2,
        flush_interval: Duration::from_millis(1),
        export_timeout: Duration::from_secs(30),
        ..TracingConfig::default()
    };
    let h = start(183, "", tracing).await;
    let mut c = client(h.waypoint.plaintext_http_addr.unwrap()).await;
    let started = std::time::Instant::now();
    for _ in 0..100 {
        let (status, seen_h) = get(&mut c, "web", "/", &[]).await;
        assert_eq!(status, 200);
        assert!(seen(&seen_h, "traceparent").ends_with("-01"));
    }
    let took = started.elapsed();
    assert!(took < Duration::from_secs(10), "100 requests took {took:?}");
    let metrics = http_get_text(h.waypoint.metrics_addr, "/metrics").await;
    let dropped: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("waypoint_tracing_spans_dropped_total "))
        .unwrap_or_else(|| panic!("no drop counter in {metrics}"))
        .trim()
        .parse()
        .unwrap();
    // At most one batch in flight and four queued: the rest were dropped.
    assert!(dropped >= 100 - 2 - 4, "dropped {dropped}");
    drop(hole);
    h.waypoint.shutdown().await;
}
