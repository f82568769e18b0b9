//! Local rate limiting: the EnvoyFilters that insert `envoy.filters.http.local_ratelimit`
//! (see `mesh_api::istio::networking::rate_limit_patch`), compiled once per model generation
//! into per-Service-port limiters ([`RateLimits`]) and checked on the request path after
//! authorization and route selection, before CORS, faults and the upstream.
//!
//! Semantics, and the choices where Envoy/Istio leave room:
//!
//! - **Which EnvoyFilters.** Those in this waypoint's namespace and in the mesh's root
//!   namespace (`istio-system`): with `targetRefs`, one naming this waypoint (kind `Gateway`,
//!   group `gateway.networking.k8s.io`, same namespace); with `workloadSelector`, labels that
//!   all match a pod of this waypoint (pods labelled `gateway.networking.k8s.io/gateway-name:
//!   <waypoint>`; that label alone counts when no pod is in the model); with neither, every
//!   waypoint of the namespace (root namespace: every waypoint). `match.context` ANY (or
//!   unset), SIDECAR_INBOUND, GATEWAY and WAYPOINT apply; SIDECAR_OUTBOUND never does.
//!   Order: `priority`, then root namespace first, then creation time, then name.
//! - **Filter level** (`HTTP_FILTER`): as in Istio's waypoint Envoy, every Service port has
//!   its own HTTP chain, so each (Service, port) gets its own bucket; `portNumber` limits a
//!   patch to one port. Several filter patches are a chain: a request must pass each (each
//!   takes a token). A filter config without `token_bucket` limits nothing at that level.
//!   The filter's position is fixed (after authorization) whatever INSERT_* says.
//! - **Route level** (`HTTP_ROUTE` MERGE): a route's config replaces the filter-level ones
//!   for that route (Envoy's per-route override), one bucket per (Service, port, route). Route
//!   names are VirtualService `http[].name` or HTTPRoute rule `name`; `default` is the route
//!   of a Service without routing objects. `vhost.name` may be `inbound|http|<port>` or
//!   `<host>:<port>`. When several patches merge into one route, the last one wins. Unlike
//!   Envoy, a route config applies even if no filter patch inserted the filter.
//! - **Buckets across generations.** Envoy resets a bucket whenever the listener or route
//!   configuration holding it is replaced. Here a limiter keeps its bucket (and its id, which
//!   keys per-connection buckets) when its own config is unchanged at the same place (Service,
//!   port, route), so unrelated mesh changes do not hand every client a fresh burst; a
//!   changed config starts full.
//! - **Answer.** Limited: `status.code` (429) with body `local_rate_limited`, the
//!   `response_headers_to_add`, response flag `RL`; gRPC requests get HTTP 200 with
//!   `grpc-status` 14 (UNAVAILABLE, or 8 with `rate_limited_as_resource_exhausted`).
//!   `filter_enabled` samples which requests are counted (absent = none, Envoy's default);
//!   `filter_enforced` samples which over-limit requests are refused (absent = none: counted,
//!   passed with `request_headers_to_add_when_not_enforced`). With
//!   `enable_x_ratelimit_headers: DRAFT_VERSION_03`, every response of a checked request
//!   carries `x-ratelimit-limit` (max tokens), `x-ratelimit-remaining` and `x-ratelimit-reset`
//!   (whole seconds to the next fill), as of the check.

pub mod bucket;
mod select;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderName, HeaderValue};
use http::{HeaderMap, Response, StatusCode};
use mesh_api::istio::networking::{AppendAction, HeaderValueOption, LocalRateLimit};
use mesh_model::{Model, WaypointRef};
use tokio::time::Instant;

pub use bucket::{Bucket, ConnBuckets, Take};
pub use select::applicable_patches;

use crate::proxy::http::Conn;
use crate::route::{RouteOrigin, RouteTables};

/// The body of a limited response (Envoy's).
pub const LIMITED_BODY: &str = "local_rate_limited";

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// One compiled LocalRateLimit at one place: its bucket (or per-connection buckets), its
/// samplers and its prepared headers.
#[derive(Debug)]
pub struct Limiter {
    /// Stable while the limiter is reused across generations; keys per-connection buckets.
    id: u64,
    config: Arc<LocalRateLimit>,
    /// The shared bucket; `None` for per-connection limiting.
    shared: Option<Bucket>,
    enabled_ppm: u32,
    enforced_ppm: u32,
    status: StatusCode,
    response_headers: Box<[(HeaderName, HeaderValue, AppendAction)]>,
    request_headers: Box<[(HeaderName, HeaderValue, AppendAction)]>,
}

impl Limiter {
    /// A limiter for `config`, which must have a token bucket.
    fn new(config: Arc<LocalRateLimit>, now: Instant) -> Option<Arc<Limiter>> {
        let tb = config.token_bucket?;
        Some(Arc::new(Limiter {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            shared: (!config.per_connection).then(|| Bucket::new(tb, now)),
            enabled_ppm: config.filter_enabled.map_or(0, |f| f.per_million()),
            enforced_ppm: config.filter_enforced.map_or(0, |f| f.per_million()),
            status: StatusCode::from_u16(config.status).unwrap_or(StatusCode::TOO_MANY_REQUESTS),
            response_headers: prepare(&config.response_headers_to_add),
            request_headers: prepare(&config.request_headers_to_add_when_not_enforced),
            config,
        }))
    }

    pub fn config(&self) -> &LocalRateLimit {
        &self.config
    }

    pub fn id(&self) -> u64 {
        self.id
    }

    /// Takes a token from the shared bucket or this connection's.
    fn take(&self, conn: &ConnBuckets, now: Instant) -> Option<Take> {
        match &self.shared {
            Some(b) => Some(b.take(now)),
            None => {
                let tb = self.config.token_bucket.as_ref()?;
                Some(conn.get(self.id, tb, now).take(now))
            }
        }
    }
}

fn prepare(list: &[HeaderValueOption]) -> Box<[(HeaderName, HeaderValue, AppendAction)]> {
    list.iter()
        .filter_map(|h| {
            let name = HeaderName::from_bytes(h.key.as_bytes()).ok()?;
            let value = HeaderValue::from_str(&h.value).ok()?;
            Some((name, value, h.action))
        })
        .collect()
}

fn apply_headers(list: &[(HeaderName, HeaderValue, AppendAction)], h: &mut HeaderMap) {
    for (name, value, action) in list {
        match action {
            AppendAction::AppendIfExistsOrAdd => {
                h.append(name.clone(), value.clone());
            }
            AppendAction::AddIfAbsent => {
                if !h.contains_key(name) {
                    h.insert(name.clone(), value.clone());
                }
            }
            AppendAction::OverwriteIfExistsOrAdd => {
                h.insert(name.clone(), value.clone());
            }
            AppendAction::OverwriteIfExists => {
                if h.contains_key(name) {
                    h.insert(name.clone(), value.clone());
                }
            }
        }
    }
}

/// The limiters of one Service port.
#[derive(Debug, Default)]
struct PortLimits {
    port: u16,
    /// Filter-level chain (configs with a token bucket).
    filters: Box<[Arc<Limiter>]>,
    /// Routes with their own config.
    routes: Box<[(RouteOrigin, Arc<Limiter>)]>,
}

/// Every limiter of this waypoint for one model generation.
#[derive(Debug, Default)]
pub struct RateLimits {
    /// Service host → its ports that have limiters.
    services: HashMap<Arc<str>, Box<[PortLimits]>>,
}

/// `x-ratelimit-*` values of a checked request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct XRateLimit {
    pub limit: u32,
    pub remaining: u32,
    /// Whole seconds to the next fill (truncated, as Envoy).
    pub reset: u64,
}

/// What the request path applies after the check: `x-ratelimit-*` on the response, and the
/// not-enforced request headers.
#[derive(Debug, Default)]
pub struct RateLimitHeaders {
    x: Option<XRateLimit>,
    request: Option<Arc<Limiter>>,
}

impl RateLimitHeaders {
    pub fn x_ratelimit(&self) -> Option<XRateLimit> {
        self.x
    }

    /// Adds `request_headers_to_add_when_not_enforced` if the request was over a limit that
    /// is not enforced.
    pub fn apply_request(&self, h: &mut HeaderMap) {
        if let Some(l) = &self.request {
            apply_headers(&l.request_headers, h);
        }
    }

    /// Adds `x-ratelimit-limit`, `x-ratelimit-remaining`, `x-ratelimit-reset` when enabled.
    pub fn apply_response(&self, h: &mut HeaderMap) {
        if let Some(x) = self.x {
            h.insert(HeaderName::from_static("x-ratelimit-limit"), HeaderValue::from(x.limit));
            h.insert(HeaderName::from_static("x-ratelimit-remaining"), HeaderValue::from(x.remaining));
            h.insert(HeaderName::from_static("x-ratelimit-reset"), HeaderValue::from(x.reset));
        }
    }
}

/// The outcome of [`RateLimits::check`].
#[derive(Debug, Default)]
pub struct Decision {
    /// The local reply when the request is refused.
    pub limited: Option<Response<Bytes>>,
    pub headers: RateLimitHeaders,
}

impl RateLimits {
    /// Compiles the limiters of the Services `waypoint` serves. `previous` (the last
    /// generation's) gives back the buckets whose config is unchanged at the same place.
    pub fn build(
        model: &Model,
        waypoint: &WaypointRef,
        routes: &RouteTables,
        previous: Option<&RateLimits>,
    ) -> RateLimits {
        let patches = applicable_patches(model, waypoint);
        if patches.is_empty() {
            return RateLimits::default();
        }
        let now = Instant::now();
        let mut services = HashMap::new();
        for svc in model.services().iter().filter(|s| s.waypoint.as_ref() == Some(waypoint)) {
            if services.contains_key(&svc.hostname) {
                continue;
            }
            let table = routes.for_service(&svc.hostname);
            let prev = previous.and_then(|p| p.services.get(&svc.hostname));
            let mut ports = Vec::new();
            for sp in svc.ports.iter() {
                let prev = prev.and_then(|p| p.iter().find(|l| l.port == sp.port));
                let pl = select::port_limits(&patches, svc, sp.port, table, prev, now);
                if !pl.filters.is_empty() || !pl.routes.is_empty() {
                    ports.push(pl);
                }
            }
            if !ports.is_empty() {
                services.insert(svc.hostname.clone(), ports.into_boxed_slice());
            }
        }
        RateLimits { services }
    }

    /// Number of limiters (for logs and tests).
    pub fn len(&self) -> usize {
        self.services.values().flatten().map(|p| p.filters.len() + p.routes.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.services.is_empty()
    }

    /// The limiters for a request to `host`:`port` that matched `route`: the route's own, or
    /// the filter chain.
    pub fn limiters(&self, host: &str, port: u16, route: &RouteOrigin) -> &[Arc<Limiter>] {
        let Some(p) = self.services.get(host).and_then(|ports| ports.iter().find(|p| p.port == port)) else {
            return &[];
        };
        match p.routes.iter().find(|(o, _)| o == route) {
            Some((_, l)) => std::slice::from_ref(l),
            None => &p.filters,
        }
    }

    /// Checks a request of `conn` that matched `route`, taking tokens.
    pub fn check(&self, conn: &Conn, route: &RouteOrigin, headers: &HeaderMap) -> Decision {
        self.check_at(&conn.service.hostname, conn.port, route, &conn.ratelimit, headers)
    }

    /// Checks a request against its limiters, taking tokens. `headers` are the request's
    /// (gRPC is answered in gRPC's way).
    pub fn check_at(
        &self,
        host: &str,
        port: u16,
        route: &RouteOrigin,
        conn: &ConnBuckets,
        headers: &HeaderMap,
    ) -> Decision {
        let limiters = self.limiters(host, port, route);
        let mut out = Decision::default();
        if limiters.is_empty() {
            return out;
        }
        let now = Instant::now();
        for l in limiters {
            if !sampled(l.enabled_ppm) {
                continue;
            }
            let Some(t) = l.take(conn, now) else { continue };
            if l.config.x_ratelimit_headers {
                out.headers.x = Some(XRateLimit {
                    limit: l.config.token_bucket.map_or(0, |b| b.max_tokens),
                    remaining: t.remaining,
                    reset: t.reset.as_secs(),
                });
            }
            if t.allowed {
                continue;
            }
            if !sampled(l.enforced_ppm) {
                out.headers.request = Some(l.clone());
                continue;
            }
            out.limited = Some(limited_response(l, headers));
            return out;
        }
        out
    }
}

/// True for `ppm` parts per million of calls.
fn sampled(ppm: u32) -> bool {
    match ppm {
        0 => false,
        1_000_000.. => true,
        p => rand::random::<u32>() % 1_000_000 < p,
    }
}

fn limited_response(l: &Limiter, req: &HeaderMap) -> Response<Bytes> {
    let grpc = req.get(CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    let mut resp = if grpc {
        let code = if l.config.rate_limited_as_resource_exhausted { "8" } else { "14" };
        let mut r = Response::new(Bytes::new());
        r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
        r.headers_mut().insert("grpc-status", HeaderValue::from_static(code));
        r.headers_mut().insert("grpc-message", HeaderValue::from_static(LIMITED_BODY));
        r
    } else {
        let mut r = Response::new(Bytes::from_static(LIMITED_BODY.as_bytes()));
        *r.status_mut() = l.status;
        r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        r
    };
    apply_headers(&l.response_headers, resp.headers_mut());
    resp
}
