//! The L7 request path, in order: request id and tracing headers, JWT authentication (401),
//! authorization on the normalised path (403 `RBAC: access denied`), route selection (404
//! `NR` when the Service has routes and none matches), local rate limits (429 `RL`, see
//! [`crate::ratelimit`]), then the route's action: redirect,
//! direct response, or forward — CORS, fault injection (`DI`/`FI`), weighted destination,
//! rewrite and header operations, mirrors (fire-and-forget), and attempts with retries,
//! per-try and overall timeouts, circuit breakers (`UO`), endpoint choice (`UH`), outlier
//! feedback. One [`RequestRecord`] per request records metrics and the access log when the
//! response body ends.

use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper::body::{Body as _, Frame, Incoming, SizeHint};
use mesh_api::SpiffeId;
use mesh_model::{Service, Workload};
use mesh_telemetry::{
    PeerLabels, Reporter, RequestProtocol, RequestRecord, ResponseFlag, SecurityPolicy, ServiceLabels,
    TrafficLabels,
};

use crate::ctx::Ctx;
use crate::proxy::headers::{add_forwarded, authority_of, host_problem, request_id, strip_hop_by_hop};
use crate::proxy::inbound::PortProtocol;
use crate::proxy::pool;
use crate::proxy::upstream::{Body, BoxError, upstream_h2};
use crate::route::{self, Action, AttemptOutcome, RequestInfo, RetryPolicy, WeightedDestination};
use crate::trace::Traced;
use crate::upstream::{Outcome, PickContext};

/// One tunnel's context: who is calling which Service port.
#[derive(Debug)]
pub struct Conn {
    pub ctx: Arc<Ctx>,
    pub service: Arc<Service>,
    /// Set when the tunnel named a pod address rather than a VIP.
    pub pod: Option<Arc<Workload>>,
    pub port: u16,
    pub peer_addr: SocketAddr,
    /// The peer's SPIFFE identity from mTLS; `None` for plaintext callers (authorization then
    /// sees no principal, so `principals: ["*"]` does not match them).
    pub peer_identity: Option<SpiffeId>,
    pub source: Option<Arc<Workload>>,
    /// The original client per the peer's `forwarded: for`.
    pub remote_ip: Option<IpAddr>,
    pub protocol: PortProtocol,
    /// This connection's buckets for per-connection local rate limits.
    pub ratelimit: crate::ratelimit::ConnBuckets,
    /// The request metrics' handles for this connection's labels.
    pub metric_cache: mesh_telemetry::HandleCache,
    /// The client IP's text, made on first use.
    pub client_ip: std::sync::OnceLock<HeaderValue>,
}

impl Conn {
    /// The client's IP as a header value (made once per connection: `x-forwarded-for`).
    pub(crate) fn client_ip_header(&self) -> HeaderValue {
        self.client_ip
            .get_or_init(|| {
                let ip = self.remote_ip.unwrap_or(self.peer_addr.ip()).to_string();
                HeaderValue::from_str(&ip).unwrap_or_else(|_| HeaderValue::from_static("unknown"))
            })
            .clone()
    }
}

/// hyper's service for one tunnel.
#[derive(Debug, Clone)]
pub struct HttpService {
    conn: Arc<Conn>,
}

impl HttpService {
    pub fn new(conn: Arc<Conn>) -> Self {
        HttpService { conn }
    }
}

impl hyper::service::Service<Request<Incoming>> for HttpService {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        // `handle` is the whole request future: no wrapper around it, whose construction would
        // copy the (large) inner future once more per request.
        Box::pin(handle(self.conn.clone(), req))
    }
}

static ENVOY_ATTEMPT: HeaderName = HeaderName::from_static("x-envoy-attempt-count");

fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).map_err(|never| match never {}).boxed()
}

fn local_reply(status: StatusCode, body: &'static str) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain")
        .body(full(body))
        .expect("static response")
}

/// Envoy's answer to a request refused by a circuit breaker (`UO`).
fn overflow_reply() -> Response<Body> {
    local_reply(
        StatusCode::SERVICE_UNAVAILABLE,
        "upstream connect error or disconnect/reset before headers. reset reason: overflow",
    )
}

/// The request's protocol label.
fn protocol_label(conn: &Conn, req: &http::request::Parts) -> RequestProtocol {
    let grpc = conn.protocol == PortProtocol::Grpc
        || req
            .headers
            .get(header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    if grpc { RequestProtocol::Grpc } else { RequestProtocol::Http }
}

fn traffic_labels(conn: &Conn, protocol: RequestProtocol) -> TrafficLabels {
    let ctx = &conn.ctx;
    let mut source =
        conn.source.as_ref().map(|w| PeerLabels::from_workload(w, &ctx.cluster)).unwrap_or_default();
    if let Some(id) = &conn.peer_identity {
        source.principal = ctx.metrics.principal(id).into();
    }
    TrafficLabels {
        reporter: Reporter::Waypoint,
        source,
        destination_service: ServiceLabels::from_service(&conn.service),
        request_protocol: protocol,
        connection_security_policy: SecurityPolicy::MutualTls,
        ..TrafficLabels::default()
    }
}

async fn handle(conn: Arc<Conn>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    // Set by local rate limits; on the upstream request and on every response.
    let mut rl = crate::ratelimit::RateLimitHeaders::default();
    let ctx = conn.ctx.clone();
    let compiled = ctx.compiled();
    let (mut parts, body) = req.into_parts();
    let protocol = protocol_label(&conn, &parts);
    let id = request_id(&mut parts.headers);
    let authority = authority_of(&parts);
    let info = mesh_telemetry::RequestInfo {
        src_addr: Some(conn.peer_addr),
        method: parts.method.to_string(),
        authority: authority.clone(),
        path: parts.uri.path_and_query().map(|p| p.as_str().to_string()).unwrap_or_default(),
        protocol: if parts.version == http::Version::HTTP_2 { "HTTP/2" } else { "HTTP/1.1" },
        request_id: id,
        ..Default::default()
    };
    let rec = RequestRecord::start(traffic_labels(&conn, protocol), info);
    let mut rec = crate::trace::start(&conn, &compiled.tracing, &parts.headers, rec);

    // The waypoint routes requests; it does not open tunnels for clients (a 2xx to CONNECT
    // would promise one), and `*` is a target only OPTIONS may have (RFC 9110 §9.3.6, 9113 §8.3.1).
    if parts.method == http::Method::CONNECT {
        rec.info.error = Some("CONNECT is not proxied".into());
        return Ok(finish_local(
            rec,
            local_reply(StatusCode::METHOD_NOT_ALLOWED, "CONNECT is not supported"),
            &conn,
            &rl,
        ));
    }
    if parts.uri.path() == "*" && parts.method != http::Method::OPTIONS {
        rec.info.error = Some("asterisk-form target outside OPTIONS".into());
        return Ok(finish_local(rec, local_reply(StatusCode::BAD_REQUEST, "bad request target"), &conn, &rl));
    }
    // One authority per request: two Host lines, or an HTTP/2 Host that differs from
    // `:authority`, could be routed by one and read by the upstream as the other
    // (RFC 9112 §3.2, RFC 9113 §8.3.1).
    if let Some(why) = host_problem(parts.version, &parts.uri, &parts.headers) {
        rec.flag(ResponseFlag::DownstreamProtocolError);
        rec.info.error = Some(why.into());
        return Ok(finish_local(rec, local_reply(StatusCode::BAD_REQUEST, "bad Host header"), &conn, &rl));
    }

    // Path normalisation, JWT authentication, then authorization (on the normalised path,
    // which is also what goes upstream).
    let Some(security) = compiled.security.get(&conn.service.namespace, &conn.service.name) else {
        rec.info.error = Some(format!("{} does not use this waypoint", conn.service.hostname));
        return Ok(finish_local(rec, local_reply(StatusCode::FORBIDDEN, "RBAC: access denied"), &conn, &rl));
    };
    let info = crate::security::ConnInfo {
        source_ip: conn.peer_addr.ip(),
        remote_ip: conn.remote_ip,
        peer: conn.peer_identity.as_ref(),
        destination_ip: conn
            .pod
            .as_ref()
            .and_then(|w| w.ips.first().copied())
            .or_else(|| conn.service.vips.first().copied())
            .unwrap_or(conn.peer_addr.ip()),
        destination_port: conn.port,
    };
    if let Err(rejected) = security.check(&mut parts, &info).await {
        rec.info.error = Some(rejected.details().to_string());
        let resp = rejected.response(&parts).map(full);
        return Ok(finish_local(rec, resp, &conn, &rl));
    }

    let table = compiled.routes.for_service(&conn.service.hostname);
    let view = RequestInfo {
        method: &parts.method,
        uri: &parts.uri,
        authority: &authority,
        headers: &parts.headers,
        port: conn.port,
        source: conn.source.as_deref(),
    };
    // Every Service has a table; without user routes it holds the default route.
    let Some(m) = table.and_then(|t| t.route(&view)) else {
        rec.flag(ResponseFlag::NoRouteFound);
        return Ok(finish_local(rec, local_reply(StatusCode::NOT_FOUND, ""), &conn, &rl));
    };
    let route = m.route;
    rec.info.route = route.name.clone();
    let limit = compiled.ratelimit.check(&conn, &route.origin, &parts.headers);
    rl = limit.headers;
    if let Some(resp) = limit.limited {
        rec.flag(ResponseFlag::RateLimited);
        return Ok(finish_local(rec, resp.map(full), &conn, &rl));
    }
    let dests: &[WeightedDestination] = match &route.action {
        Action::Forward(d) => d.as_slice(),
        // Envoy applies the route's response header operations to local answers too.
        Action::Redirect(r) => {
            let mut resp = r.response(&m, &view).map(|()| Body::default());
            route.apply_response_headers(None, resp.headers_mut());
            return Ok(finish_local(rec, resp, &conn, &rl));
        }
        Action::DirectResponse { status, body } => {
            let mut resp = Response::builder()
                .status(*status)
                .body(full(body.clone().unwrap_or_default()))
                .expect("valid status");
            route.apply_response_headers(None, resp.headers_mut());
            return Ok(finish_local(rec, resp, &conn, &rl));
        }
    };

    // CORS preflight is answered here.
    if let Some(cors) = &route.cors
        && let route::CorsAction::Respond(resp) = cors.preflight(&view)
    {
        return Ok(finish_local(rec, resp.map(|()| Body::default()), &conn, &rl));
    }

    // Fault injection.
    if let Some(fault) = &route.fault {
        if let Some(delay) = fault.delay_for(rand::random::<f64>() * 100.0) {
            rec.flag(ResponseFlag::DelayInjected);
            tokio::time::sleep(delay).await;
        }
        if let Some(abort) = fault.abort_for(rand::random::<f64>() * 100.0) {
            rec.flag(ResponseFlag::FaultInjected);
            return Ok(finish_local(rec, abort_response(&abort), &conn, &rl));
        }
    }

    let Some(dest) = route::pick_weighted(dests, rand::random()) else {
        rec.flag(ResponseFlag::NoClusterFound);
        return Ok(finish_local(
            rec,
            local_reply(StatusCode::INTERNAL_SERVER_ERROR, "no backend"),
            &conn,
            &rl,
        ));
    };

    // The request as it goes upstream.
    strip_hop_by_hop(&mut parts.headers);
    let mut up_authority = authority.clone();
    if let Some(rw) = &route.rewrite {
        parts.uri = rw.apply(&m, &parts.uri, &mut up_authority);
    }
    route.apply_request_headers(Some(dest), &mut parts.headers);
    if let Ok(v) = HeaderValue::from_str(&up_authority) {
        parts.headers.insert(header::HOST, v);
    }
    add_forwarded(&mut parts.headers, &conn);
    rl.apply_request(&mut parts.headers);
    rec.inject(&mut parts.headers, dest, conn.port);

    // Bodies small enough (or absent) are buffered so retries and mirrors can resend them.
    let limit = ctx.config.max_buffered_body as u64;
    let size = body.size_hint().exact();
    let (buffered, mut streamed): (Option<Bytes>, Option<Incoming>) = match size {
        Some(n) if n <= limit => match body.collect().await {
            Ok(b) => (Some(b.to_bytes()), None),
            Err(e) => {
                rec.flag(ResponseFlag::DownstreamConnectionTermination);
                rec.info.error = Some(format!("reading the request body: {e}"));
                return Ok(finish_local(
                    rec,
                    local_reply(StatusCode::BAD_REQUEST, "bad request body"),
                    &conn,
                    &rl,
                ));
            }
        },
        _ => (None, Some(body)),
    };
    rec.request_bytes = buffered.as_ref().map(|b| b.len() as u64).unwrap_or(0);

    // Mirrors: copies sent and forgotten.
    if let Some(b) = &buffered {
        for mirror in &route.mirrors {
            if mirror.sampled(rand::random::<f64>() * 100.0) {
                spawn_mirror(&conn, &parts, b.clone(), &mirror.dest);
            }
        }
    }

    let no_retries = RetryPolicy { attempts: 0, ..RetryPolicy::istio_default() };
    let policy = route.retries.as_ref().unwrap_or(&no_retries);
    let timeout = route.timeout.filter(|t| !t.is_zero());
    let started = tokio::time::Instant::now();
    let dest_port = dest.port.unwrap_or(conn.port);
    let Some(cluster) = ctx.clusters.get(&dest.host, dest.subset.as_deref(), dest_port) else {
        rec.flag(ResponseFlag::NoClusterFound);
        rec.info.error = Some(format!("no cluster for {}:{dest_port} subset {:?}", dest.host, dest.subset));
        return Ok(finish_local(
            rec,
            local_reply(StatusCode::SERVICE_UNAVAILABLE, "no healthy upstream"),
            &conn,
            &rl,
        ));
    };
    let Ok(_permit) = cluster.try_request() else {
        rec.flag(ResponseFlag::UpstreamOverflow);
        return Ok(finish_local(rec, overflow_reply(), &conn, &rl));
    };
    let use_h2 = upstream_h2(conn.protocol, parts.version, &parts.method, &cluster.policy().pool);

    let mut attempt = 0u32;
    let mut tried: Vec<SocketAddr> = Vec::new();
    loop {
        attempt += 1;
        rec.info.attempts = attempt;
        let mut pick_ctx = PickContext::new(&parts.headers, &parts.uri, conn.peer_addr.ip());
        pick_ctx.previous_hosts = &tried;
        let pick = match cluster.pick(&pick_ctx) {
            Ok(p) => p,
            Err(_) => {
                rec.flag(ResponseFlag::NoHealthyUpstream);
                return Ok(finish_local(
                    rec,
                    local_reply(StatusCode::SERVICE_UNAVAILABLE, "no healthy upstream"),
                    &conn,
                    &rl,
                ));
            }
        };
        rec.info.upstream = Some(pick.endpoint.addr);
        tried.push(pick.endpoint.addr);
        if let Some(w) = &pick.endpoint.workload {
            rec.labels.traffic.destination =
                PeerLabels::from_workload(w, &ctx.cluster).with_principal(ctx.metrics.principal(&w.identity));
        }
        let target =
            if use_h2 { upstream_uri(pick.endpoint.addr, &parts.uri) } else { origin_form(&parts.uri) };
        // No attempt can follow this one (and CORS needs no request header later): the request
        // itself goes, not a copy.
        let last = attempt > policy.attempts && route.cors.is_none();
        let up_parts =
            if last { std::mem::replace(&mut parts, Request::new(()).into_parts().0) } else { parts.clone() };
        let mut up = Request::from_parts(up_parts, ());
        *up.uri_mut() = target;
        if attempt > 1
            && let Ok(v) = HeaderValue::from_str(&attempt.to_string())
        {
            up.headers_mut().insert(ENVOY_ATTEMPT.clone(), v);
        }
        let body: Body = match (&buffered, streamed.take()) {
            (Some(b), _) => full(b.clone()),
            (None, Some(s)) => s.map_err(|e| Box::new(e) as BoxError).boxed(),
            (None, None) => full(Bytes::new()),
        };
        let mut up = up.map(|()| body);
        let per_try = policy
            .per_try_timeout
            .into_iter()
            .chain(timeout.map(|t| t.saturating_sub(started.elapsed())))
            .min();
        let sent = async {
            if use_h2 {
                *up.version_mut() = http::Version::HTTP_2;
                match pool::send_h2(&ctx.upstreams.connector, &cluster, &pick.endpoint, up).await {
                    Ok((r, lease)) => Ok((r, Some(lease))),
                    Err(e) if e.is_connect() => Err(SendFailure::Connect(e.to_string())),
                    Err(e) if e.is_refused_stream() => Err(SendFailure::Refused(e.to_string())),
                    Err(e) => Err(SendFailure::Reset(e.to_string())),
                }
            } else {
                *up.version_mut() = http::Version::HTTP_11;
                match pool::send(&ctx.upstreams.connector, &cluster, &pick.endpoint, up).await {
                    Ok((r, lease)) => Ok((r, Some(lease))),
                    Err(pool::SendError::Overflow(o)) => Err(SendFailure::Overflow(o)),
                    Err(e) if e.is_connect() => Err(SendFailure::Connect(e.to_string())),
                    Err(e) => Err(SendFailure::Reset(e.to_string())),
                }
            }
        };
        let result = match per_try {
            Some(t) => tokio::time::timeout(t, sent).await.ok(),
            None => Some(sent.await),
        };
        let (outcome, resp) = match result {
            None => (AttemptOutcome::Timeout, None),
            Some(Err(SendFailure::Overflow(o))) => {
                // tcp.maxConnections with http1MaxPendingRequests waiting: fail fast, no retry.
                rec.flag(ResponseFlag::UpstreamOverflow);
                rec.info.error = Some(o.to_string());
                return Ok(finish_local(rec, overflow_reply(), &conn, &rl));
            }
            Some(Err(SendFailure::Connect(e))) => {
                rec.info.error = Some(format!("upstream {}: {e}", pick.endpoint.addr));
                (AttemptOutcome::ConnectFailure, None)
            }
            Some(Err(SendFailure::Reset(e))) => {
                rec.info.error = Some(format!("upstream {}: {e}", pick.endpoint.addr));
                (AttemptOutcome::Reset, None)
            }
            Some(Err(SendFailure::Refused(e))) => {
                rec.info.error = Some(format!("upstream {}: {e}", pick.endpoint.addr));
                (AttemptOutcome::RefusedStream, None)
            }
            Some(Ok((r, lease))) => {
                (AttemptOutcome::from_response(r.status(), r.headers(), None), Some((r, lease)))
            }
        };
        pick.guard.finish(match &outcome {
            AttemptOutcome::Timeout => Outcome::Timeout,
            AttemptOutcome::ConnectFailure => Outcome::ConnectFailure,
            AttemptOutcome::Reset | AttemptOutcome::RefusedStream => Outcome::Reset,
            AttemptOutcome::Response { status, .. } => Outcome::Status(*status),
        });
        let retriable = buffered.is_some()
            || attempt == 1 && resp.is_none() && matches!(outcome, AttemptOutcome::ConnectFailure);
        let overall_left = timeout.map(|t| t.saturating_sub(started.elapsed()));
        let can_retry = retriable
            && attempt <= policy.attempts
            && policy.should_retry(&outcome)
            && overall_left.is_none_or(|l| !l.is_zero())
            && cluster.try_retry().is_ok();
        if can_retry {
            let backoff = policy.backoff(attempt, rand::random());
            tokio::time::sleep(overall_left.map_or(backoff, |l| backoff.min(l))).await;
            continue;
        }
        match resp {
            Some((r, lease)) => {
                if attempt > 1 && policy.should_retry(&outcome) {
                    rec.flag(ResponseFlag::UpstreamRetryLimitExceeded);
                }
                let (mut rp, rb) = r.into_parts();
                strip_hop_by_hop(&mut rp.headers);
                route.apply_response_headers(Some(dest), &mut rp.headers);
                if let Some(c) = &route.cors {
                    c.apply_response(&parts.headers, &mut rp.headers);
                }
                if let Some(c) = pick.set_cookie {
                    rp.headers.append(header::SET_COOKIE, c);
                }
                rec.labels.response_code = rp.status.as_u16();
                rec.labels.grpc_response_status = grpc_status(&rp.headers);
                let mut body = Recorded { inner: rb, rec: Some(rec), conn: conn.clone(), lease };
                if body.inner.is_end_stream() {
                    body.release();
                }
                rl.apply_response(&mut rp.headers);
                return Ok(Response::from_parts(rp, body.boxed()));
            }
            None => {
                let (flag, status, text) = match outcome {
                    AttemptOutcome::Timeout => (
                        ResponseFlag::UpstreamRequestTimeout,
                        StatusCode::GATEWAY_TIMEOUT,
                        "upstream request timeout",
                    ),
                    AttemptOutcome::ConnectFailure => (
                        ResponseFlag::UpstreamConnectionFailure,
                        StatusCode::SERVICE_UNAVAILABLE,
                        "upstream connect error or disconnect/reset before headers. reset reason: connection failure",
                    ),
                    _ => (
                        ResponseFlag::UpstreamRemoteReset,
                        StatusCode::SERVICE_UNAVAILABLE,
                        "upstream connect error or disconnect/reset before headers. reset reason: remote reset",
                    ),
                };
                rec.flag(flag);
                // URX means the retry limit was reached, not that time ran out first.
                let timed_out = timeout.is_some_and(|t| started.elapsed() >= t);
                if attempt > 1 && !timed_out {
                    rec.flag(ResponseFlag::UpstreamRetryLimitExceeded);
                }
                return Ok(finish_local(rec, local_reply(status, text), &conn, &rl));
            }
        }
    }
}

/// Why an attempt got no response.
enum SendFailure {
    /// The connection limit is reached and too many requests wait (`UO`).
    Overflow(crate::upstream::Overflow),
    /// The request never reached the endpoint.
    Connect(String),
    /// The connection failed after the request was sent.
    Reset(String),
    /// The HTTP/2 peer refused the stream without processing it.
    Refused(String),
}

/// The origin-form target (`/path?query`) an HTTP/1.1 request line carries.
fn origin_form(uri: &Uri) -> Uri {
    if uri.scheme().is_none() && uri.authority().is_none() {
        return uri.clone();
    }
    let mut p = http::uri::Parts::default();
    p.path_and_query =
        Some(uri.path_and_query().cloned().unwrap_or_else(|| http::uri::PathAndQuery::from_static("/")));
    Uri::from_parts(p).unwrap_or_else(|_| Uri::from_static("/"))
}

/// A fault-injected abort: the HTTP status, or gRPC's `grpc-status` on a 200.
fn abort_response(abort: &route::Abort) -> Response<Body> {
    match abort {
        route::Abort::Http(status) => Response::builder()
            .status(*status)
            .header(header::CONTENT_TYPE, "text/plain")
            .body(full("fault filter abort"))
            .expect("valid status"),
        route::Abort::Grpc(code) => Response::builder()
            .status(StatusCode::OK)
            .header(header::CONTENT_TYPE, "application/grpc")
            .header("grpc-status", code.to_string())
            .header("grpc-message", "fault filter abort")
            .body(full(Bytes::new()))
            .expect("static response"),
    }
}

fn grpc_status(h: &http::HeaderMap) -> Option<u32> {
    h.get("grpc-status").and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok())
}

/// `http://<endpoint>/<path and query>`: the client's connector dials the endpoint in HBONE.
fn upstream_uri(endpoint: SocketAddr, uri: &Uri) -> Uri {
    let pq = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    Uri::builder()
        .scheme("http")
        .authority(endpoint.to_string())
        .path_and_query(pq)
        .build()
        .unwrap_or_else(|_| Uri::from_static("http://0.0.0.0/"))
}

fn spawn_mirror(conn: &Arc<Conn>, parts: &http::request::Parts, body: Bytes, dest: &WeightedDestination) {
    let ctx = conn.ctx.clone();
    let port = dest.port.unwrap_or(conn.port);
    let Some(cluster) = ctx.clusters.get(&dest.host, dest.subset.as_deref(), port) else {
        tracing::debug!(host = %dest.host, port, "mirror destination has no cluster");
        return;
    };
    let mut parts = parts.clone();
    // Envoy's shadow convention: the mirror sees `<host>-shadow`.
    if let Some(host) = parts.headers.get(header::HOST).and_then(|h| h.to_str().ok())
        && let Ok(v) = HeaderValue::from_str(&route::shadow_authority(host))
    {
        parts.headers.insert(header::HOST, v);
    }
    let h2 = matches!(conn.protocol, PortProtocol::Http2 | PortProtocol::Grpc);
    let source_ip = conn.peer_addr.ip();
    tokio::spawn(async move {
        let pick_ctx = PickContext::new(&parts.headers, &parts.uri, source_ip);
        let Ok(pick) = cluster.pick(&pick_ctx) else { return };
        let mut req = Request::from_parts(parts.clone(), full(body));
        *req.uri_mut() = upstream_uri(pick.endpoint.addr, &parts.uri);
        *req.version_mut() = if h2 { http::Version::HTTP_2 } else { http::Version::HTTP_11 };
        let client = if h2 { &ctx.upstreams.http2 } else { &ctx.upstreams.http1 };
        let r = tokio::time::timeout(Duration::from_secs(30), client.request(req)).await;
        let outcome = match r {
            Ok(Ok(resp)) => {
                let status = resp.status().as_u16();
                // Drain so the connection can be reused.
                let _ = resp.into_body().collect().await;
                Outcome::Status(status)
            }
            Ok(Err(_)) => Outcome::ConnectFailure,
            Err(_) => Outcome::Timeout,
        };
        pick.guard.finish(outcome);
    });
}

/// A local reply's record is finished at once.
fn finish_local(
    mut rec: Traced,
    mut resp: Response<Body>,
    conn: &Conn,
    rl: &crate::ratelimit::RateLimitHeaders,
) -> Response<Body> {
    rl.apply_response(resp.headers_mut());
    rec.labels.response_code = resp.status().as_u16();
    rec.response_bytes = resp.body().size_hint().exact().unwrap_or(0);
    rec.finish(&conn.ctx.http_metrics, &conn.metric_cache);
    resp
}

/// The upstream response body, counting bytes; the request is recorded when it ends (or is
/// dropped: client gone).
struct Recorded {
    inner: Incoming,
    rec: Option<Traced>,
    conn: Arc<Conn>,
    /// The pooled HTTP/1.1 connection, back to its pool when the body has ended.
    lease: Option<pool::Lease>,
}

impl Recorded {
    fn release(&mut self) {
        if let Some(l) = self.lease.take() {
            l.release();
        }
    }
}

impl hyper::body::Body for Recorded {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(f))) => {
                if let Some(rec) = &mut this.rec {
                    if let Some(d) = f.data_ref() {
                        rec.response_bytes += d.len() as u64;
                    } else if let Some(t) = f.trailers_ref()
                        && let Some(s) = grpc_status(t)
                    {
                        rec.labels.grpc_response_status = Some(s);
                    }
                }
                Poll::Ready(Some(Ok(f)))
            }
            Poll::Ready(Some(Err(e))) => {
                if let Some(mut rec) = this.rec.take() {
                    rec.flag(ResponseFlag::UpstreamConnectionTermination);
                    rec.info.error = Some(format!("response body: {e}"));
                    rec.finish(&this.conn.ctx.http_metrics, &this.conn.metric_cache);
                }
                Poll::Ready(Some(Err(Box::new(e))))
            }
            Poll::Ready(None) => {
                this.release();
                if let Some(rec) = this.rec.take() {
                    rec.finish(&this.conn.ctx.http_metrics, &this.conn.metric_cache);
                }
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Recorded {
    fn drop(&mut self) {
        // hyper stops polling a body that says it has ended: that is a complete response.
        let ended = self.inner.is_end_stream();
        if ended {
            self.release();
        }
        if let Some(mut rec) = self.rec.take() {
            if !ended {
                rec.flag(ResponseFlag::DownstreamConnectionTermination);
            }
            rec.finish(&self.conn.ctx.http_metrics, &self.conn.metric_cache);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_uri_keeps_path_and_query() {
        let u = upstream_uri("10.0.0.1:9080".parse().unwrap(), &"/a/b?c=d".parse().unwrap());
        assert_eq!(u.to_string(), "http://10.0.0.1:9080/a/b?c=d");
    }
}
