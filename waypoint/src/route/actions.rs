//! What a matched route does to a request: header operations, rewrites, redirects, retries
//! (Envoy's conditions and backoff), fault injection, mirroring, CORS and the weighted pick.

use std::sync::Arc;
use std::time::Duration;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Response, StatusCode, Uri};

use super::matcher::{MatchedPath, RequestInfo, StrMatch};
use super::{RouteMatch, WeightedDestination};

// ---- weighted choice ----

/// The destination `rnd` selects: `rnd % total weight` walks the cumulative weights, so a
/// uniform `rnd` gives each destination its share. `None` when every weight is 0.
pub fn pick_weighted(dests: &[WeightedDestination], rnd: u32) -> Option<&WeightedDestination> {
    let total: u64 = dests.iter().map(|d| u64::from(d.weight)).sum();
    if total == 0 {
        return None;
    }
    let mut r = u64::from(rnd) % total;
    for d in dests {
        let w = u64::from(d.weight);
        if r < w {
            return Some(d);
        }
        r -= w;
    }
    None
}

/// The `Host` a mirrored request carries: Envoy appends `-shadow` to the host, before any port.
pub fn shadow_authority(authority: &str) -> String {
    match split_authority(authority) {
        (host, Some(port)) => format!("{host}-shadow:{port}"),
        (host, None) => format!("{host}-shadow"),
    }
}

/// Splits `host[:port]` (IPv6 literals in brackets).
fn split_authority(authority: &str) -> (&str, Option<u16>) {
    let (host, port) = match authority.rfind(':') {
        Some(i) if !authority[i..].contains(']') => (&authority[..i], authority[i + 1..].parse::<u16>().ok()),
        _ => (authority, None),
    };
    match port {
        Some(p) => (host, Some(p)),
        None => (authority, None),
    }
}

// ---- headers ----

/// Header operations (Istio `HeaderOperations`, Gateway `HTTPHeaderFilter`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HeaderOps {
    /// Overwrite (or add).
    pub set: Vec<(HeaderName, HeaderValue)>,
    /// Append a line.
    pub add: Vec<(HeaderName, HeaderValue)>,
    pub remove: Vec<HeaderName>,
}

impl HeaderOps {
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.add.is_empty() && self.remove.is_empty()
    }

    /// Remove, then set, then add (Envoy removes before it adds).
    pub fn apply(&self, h: &mut HeaderMap) {
        for n in &self.remove {
            h.remove(n);
        }
        for (n, v) in &self.set {
            h.insert(n.clone(), v.clone());
        }
        for (n, v) in &self.add {
            h.append(n.clone(), v.clone());
        }
    }
}

// ---- rewrite ----

/// How a path is rewritten before forwarding.
#[derive(Debug, Clone)]
pub enum PathRewrite {
    /// Istio `rewrite.uri`: replaces the matched prefix (`/` without a uri match), or the whole
    /// path for exact and regex matches.
    MatchedPrefix(Arc<str>),
    /// Gateway `ReplacePrefixMatch`: replaces the matched path segments.
    GatewayPrefix(Arc<str>),
    /// Gateway `ReplaceFullPath`.
    FullPath(Arc<str>),
    /// Istio `uriRegexRewrite`: every match of `pattern` replaced (`\1` groups).
    Regex { pattern: regex::Regex, substitution: Arc<str> },
}

impl PathRewrite {
    /// The new path for `path`, matched as `m`.
    pub fn new_path(&self, m: MatchedPath, path: &str) -> String {
        match self {
            PathRewrite::MatchedPrefix(rep) => {
                let len = match m {
                    MatchedPath::Prefix(n) => n,
                    MatchedPath::None => usize::from(path.starts_with('/')),
                    MatchedPath::Exact | MatchedPath::Regex => path.len(),
                };
                format!("{rep}{}", path.get(len..).unwrap_or(""))
            }
            PathRewrite::GatewayPrefix(rep) => {
                let len = match m {
                    MatchedPath::Prefix(n) => n,
                    MatchedPath::None => 0,
                    MatchedPath::Exact | MatchedPath::Regex => path.len(),
                };
                let rest = path.get(len..).unwrap_or("");
                let out = format!("{}{rest}", rep.trim_end_matches('/'));
                if out.is_empty() { "/".to_string() } else { out }
            }
            PathRewrite::FullPath(p) => p.to_string(),
            PathRewrite::Regex { pattern, substitution } => {
                pattern.replace_all(path, &**substitution).into_owned()
            }
        }
    }
}

/// Converts an RE2/Envoy substitution (`\1`) to the `regex` crate's (`${1}`), escaping `$`.
pub(crate) fn regex_substitution(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 4);
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.peek() {
                Some(d) if d.is_ascii_digit() => {
                    out.push_str("${");
                    out.push(*d);
                    out.push('}');
                    chars.next();
                }
                Some('\\') => {
                    out.push('\\');
                    chars.next();
                }
                _ => out.push('\\'),
            },
            '$' => out.push_str("$$"),
            c => out.push(c),
        }
    }
    out
}

/// Rewrite of path and authority before forwarding.
#[derive(Debug, Clone)]
pub struct Rewrite {
    pub path: Option<PathRewrite>,
    pub authority: Option<Arc<str>>,
}

impl Rewrite {
    /// The rewritten URI (query kept); sets `authority` when the rewrite replaces it.
    pub fn apply(&self, m: &RouteMatch<'_>, uri: &Uri, authority: &mut String) -> Uri {
        if let Some(a) = &self.authority {
            authority.clear();
            authority.push_str(a);
        }
        let path = match &self.path {
            Some(p) => p.new_path(m.path, if uri.path().is_empty() { "/" } else { uri.path() }),
            None if self.authority.is_none() || uri.authority().is_none() => return uri.clone(),
            None => uri.path().to_string(),
        };
        let pq = match uri.query() {
            Some(q) => format!("{path}?{q}"),
            None => path,
        };
        let mut parts = uri.clone().into_parts();
        match pq.parse() {
            Ok(pq) => parts.path_and_query = Some(pq),
            // A rewrite producing an invalid path keeps the original (the config is at fault,
            // and forwarding garbage would be worse).
            Err(_) => return uri.clone(),
        }
        if parts.authority.is_some()
            && let Some(a) = self.authority.as_deref().and_then(|a| a.parse().ok())
        {
            parts.authority = Some(a);
        }
        Uri::from_parts(parts).unwrap_or_else(|_| uri.clone())
    }
}

// ---- redirect ----

/// The port of a redirect's `Location`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedirectPort {
    /// The request's port as written in its authority (dropped when only the scheme changes
    /// and it was the old scheme's default).
    Keep,
    Fixed(u16),
    /// The new scheme's default: no port in `Location`.
    ProtocolDefault,
    /// The Service port the request arrived on.
    RequestPort,
}

/// A redirect's path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedirectPath {
    /// Replace the whole path (a `?query` in it replaces the request's query).
    Full(Arc<str>),
    /// Gateway `ReplacePrefixMatch`.
    GatewayPrefix(Arc<str>),
}

/// A redirect answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Redirect {
    pub scheme: Option<Arc<str>>,
    pub host: Option<Arc<str>>,
    pub port: RedirectPort,
    pub path: Option<RedirectPath>,
    pub status: StatusCode,
}

fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" => Some(80),
        "https" => Some(443),
        _ => None,
    }
}

impl Redirect {
    /// The `Location` for `req` matched as `m`.
    pub fn location(&self, m: &RouteMatch<'_>, req: &RequestInfo<'_>) -> String {
        let old_scheme = req.uri.scheme_str().unwrap_or("http");
        let scheme = self.scheme.as_deref().unwrap_or(old_scheme);
        let (req_host, req_port) = split_authority(req.authority);
        // A redirect authority with its own port brings that port (unless one is configured).
        let (host, host_port) = match self.host.as_deref() {
            Some(h) => split_authority(h),
            None => (req_host, None),
        };
        let port = match self.port {
            RedirectPort::Keep if host_port.is_some() => host_port,
            RedirectPort::Fixed(p) => Some(p),
            RedirectPort::ProtocolDefault => None,
            RedirectPort::RequestPort => Some(req.port),
            RedirectPort::Keep if self.scheme.is_some() && req_port == default_port(old_scheme) => None,
            RedirectPort::Keep => req_port,
        }
        .filter(|p| Some(*p) != default_port(scheme));
        let path = req.path();
        let (new_path, query) = match &self.path {
            None => (path.to_string(), req.uri.query()),
            Some(RedirectPath::Full(p)) => match p.split_once('?') {
                Some((p, q)) => (p.to_string(), Some(q)),
                None => (p.to_string(), req.uri.query()),
            },
            Some(RedirectPath::GatewayPrefix(rep)) => {
                (PathRewrite::GatewayPrefix(rep.clone()).new_path(m.path, path), req.uri.query())
            }
        };
        let mut out = format!("{scheme}://{host}");
        if let Some(p) = port {
            out.push(':');
            out.push_str(&p.to_string());
        }
        out.push_str(&new_path);
        if let Some(q) = query.filter(|q| !q.is_empty()) {
            out.push('?');
            out.push_str(q);
        }
        out
    }

    /// The redirect response: status and `Location`, no body.
    pub fn response(&self, m: &RouteMatch<'_>, req: &RequestInfo<'_>) -> Response<()> {
        let mut resp = Response::new(());
        *resp.status_mut() = self.status;
        if let Ok(v) = HeaderValue::from_str(&self.location(m, req)) {
            resp.headers_mut().insert(header::LOCATION, v);
        }
        resp
    }
}

// ---- retries ----

/// Envoy `retry_on` conditions, as a bit set.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetryOn(u32);

impl RetryOn {
    pub const SERVER_5XX: RetryOn = RetryOn(1);
    pub const GATEWAY_ERROR: RetryOn = RetryOn(1 << 1);
    pub const RESET: RetryOn = RetryOn(1 << 2);
    pub const CONNECT_FAILURE: RetryOn = RetryOn(1 << 3);
    pub const REFUSED_STREAM: RetryOn = RetryOn(1 << 4);
    pub const RETRIABLE_4XX: RetryOn = RetryOn(1 << 5);
    pub const RETRIABLE_STATUS_CODES: RetryOn = RetryOn(1 << 6);
    pub const GRPC_CANCELLED: RetryOn = RetryOn(1 << 7);
    pub const GRPC_DEADLINE_EXCEEDED: RetryOn = RetryOn(1 << 8);
    pub const GRPC_INTERNAL: RetryOn = RetryOn(1 << 9);
    pub const GRPC_RESOURCE_EXHAUSTED: RetryOn = RetryOn(1 << 10);
    pub const GRPC_UNAVAILABLE: RetryOn = RetryOn(1 << 11);
    pub const RESET_BEFORE_REQUEST: RetryOn = RetryOn(1 << 12);

    pub const fn empty() -> Self {
        RetryOn(0)
    }

    pub const fn union(self, o: RetryOn) -> Self {
        RetryOn(self.0 | o.0)
    }

    pub const fn contains(self, o: RetryOn) -> bool {
        self.0 & o.0 == o.0 && o.0 != 0
    }

    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// One condition by its Envoy name; `Ok(None)` for conditions that need data the waypoint
    /// does not evaluate (`retriable-headers`, `envoy-ratelimited`, `http3-post-connect-failure`).
    pub fn parse_one(name: &str) -> Result<Option<RetryOn>, UnknownRetryCondition> {
        Ok(Some(match name {
            "5xx" => Self::SERVER_5XX,
            "gateway-error" => Self::GATEWAY_ERROR,
            "reset" => Self::RESET,
            "reset-before-request" => Self::RESET_BEFORE_REQUEST,
            "connect-failure" => Self::CONNECT_FAILURE,
            "refused-stream" => Self::REFUSED_STREAM,
            "retriable-4xx" => Self::RETRIABLE_4XX,
            "retriable-status-codes" => Self::RETRIABLE_STATUS_CODES,
            "cancelled" => Self::GRPC_CANCELLED,
            "deadline-exceeded" => Self::GRPC_DEADLINE_EXCEEDED,
            "internal" => Self::GRPC_INTERNAL,
            "resource-exhausted" => Self::GRPC_RESOURCE_EXHAUSTED,
            "unavailable" => Self::GRPC_UNAVAILABLE,
            "retriable-headers" | "envoy-ratelimited" | "http3-post-connect-failure" => return Ok(None),
            _ => return Err(UnknownRetryCondition(name.to_string())),
        }))
    }
}

/// A `retryOn` entry that is neither an Envoy condition nor a status code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown retry condition {0:?}")]
pub struct UnknownRetryCondition(pub String);

/// How one upstream attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptOutcome {
    /// A response arrived (`grpc_status` from the headers, or the trailers of a gRPC stream).
    Response { status: u16, grpc_status: Option<u32> },
    /// The connection to the endpoint could not be made.
    ConnectFailure,
    /// The stream or connection was reset (or closed) before a response.
    Reset,
    /// The upstream refused the HTTP/2 stream (`REFUSED_STREAM`).
    RefusedStream,
    /// The per-try timeout fired.
    Timeout,
}

impl AttemptOutcome {
    /// From a response's status and headers (and trailers, when already received).
    pub fn from_response(status: StatusCode, headers: &HeaderMap, trailers: Option<&HeaderMap>) -> Self {
        let grpc = |h: &HeaderMap| h.get("grpc-status").and_then(|v| v.to_str().ok()?.trim().parse().ok());
        let grpc_status = grpc(headers).or_else(|| trailers.and_then(grpc));
        AttemptOutcome::Response { status: status.as_u16(), grpc_status }
    }
}

/// Envoy's default backoff base interval.
pub const DEFAULT_BACKOFF_BASE: Duration = Duration::from_millis(25);

/// A compiled retry policy.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Retries after the first try.
    pub attempts: u32,
    pub per_try_timeout: Option<Duration>,
    pub retry_on: RetryOn,
    pub retriable_status_codes: Vec<u16>,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
}

impl RetryPolicy {
    /// Istio's policy when a route sets no `retries`: 2 retries on connect-failure,
    /// refused-stream, unavailable, cancelled and retriable-status-codes (503).
    pub fn istio_default() -> Self {
        RetryPolicy {
            attempts: 2,
            per_try_timeout: None,
            retry_on: RetryOn::CONNECT_FAILURE
                .union(RetryOn::REFUSED_STREAM)
                .union(RetryOn::GRPC_UNAVAILABLE)
                .union(RetryOn::GRPC_CANCELLED)
                .union(RetryOn::RETRIABLE_STATUS_CODES),
            retriable_status_codes: vec![503],
            backoff_base: DEFAULT_BACKOFF_BASE,
            backoff_max: DEFAULT_BACKOFF_BASE * 10,
        }
    }

    /// Whether an attempt that ended with `outcome` should be retried (the caller counts the
    /// attempts and the budget).
    pub fn should_retry(&self, outcome: &AttemptOutcome) -> bool {
        let on = self.retry_on;
        // 5xx, gateway-error and reset all cover "no response at all" (Envoy's wouldRetryFromReset).
        let no_response = on.contains(RetryOn::SERVER_5XX)
            || on.contains(RetryOn::GATEWAY_ERROR)
            || on.contains(RetryOn::RESET);
        match *outcome {
            AttemptOutcome::ConnectFailure => {
                no_response
                    || on.contains(RetryOn::CONNECT_FAILURE)
                    || on.contains(RetryOn::RESET_BEFORE_REQUEST)
            }
            AttemptOutcome::RefusedStream => {
                no_response
                    || on.contains(RetryOn::REFUSED_STREAM)
                    || on.contains(RetryOn::RESET_BEFORE_REQUEST)
            }
            AttemptOutcome::Reset | AttemptOutcome::Timeout => no_response,
            AttemptOutcome::Response { status, grpc_status } => {
                if on.contains(RetryOn::SERVER_5XX) && (500..=599).contains(&status) {
                    return true;
                }
                if on.contains(RetryOn::GATEWAY_ERROR) && matches!(status, 502..=504) {
                    return true;
                }
                if on.contains(RetryOn::RETRIABLE_4XX) && status == 409 {
                    return true;
                }
                if on.contains(RetryOn::RETRIABLE_STATUS_CODES)
                    && self.retriable_status_codes.contains(&status)
                {
                    return true;
                }
                match grpc_status {
                    Some(1) => on.contains(RetryOn::GRPC_CANCELLED),
                    Some(4) => on.contains(RetryOn::GRPC_DEADLINE_EXCEEDED),
                    Some(8) => on.contains(RetryOn::GRPC_RESOURCE_EXHAUSTED),
                    Some(13) => on.contains(RetryOn::GRPC_INTERNAL),
                    Some(14) => on.contains(RetryOn::GRPC_UNAVAILABLE),
                    _ => false,
                }
            }
        }
    }

    /// The wait before retry number `attempt` (1 for the first retry): Envoy's fully jittered
    /// exponential backoff, `rnd × base × (2^attempt − 1)` capped at `backoff_max`, with
    /// `rnd` uniform in `[0, 1)`.
    pub fn backoff(&self, attempt: u32, rnd: f64) -> Duration {
        let factor = (1u64 << attempt.clamp(1, 32)) - 1;
        let ceiling = self.backoff_base.saturating_mul(u32::try_from(factor).unwrap_or(u32::MAX));
        let ceiling = ceiling.min(self.backoff_max);
        ceiling.mul_f64(rnd.clamp(0.0, 1.0)).min(self.backoff_max)
    }
}

// ---- faults ----

/// An injected abort.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Abort {
    Http(StatusCode),
    /// gRPC status code (answered as HTTP 200 with `grpc-status`).
    Grpc(u32),
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DelayFault {
    /// Share of requests delayed, 0-100.
    pub percent: f64,
    pub delay: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AbortFault {
    /// Share of requests aborted, 0-100.
    pub percent: f64,
    pub abort: Abort,
}

/// Fault injection of a route.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fault {
    pub delay: Option<DelayFault>,
    pub abort: Option<AbortFault>,
}

impl Fault {
    /// The delay for a request whose draw is `rnd_percent`, uniform in `[0, 100)`.
    pub fn delay_for(&self, rnd_percent: f64) -> Option<Duration> {
        self.delay.filter(|d| rnd_percent < d.percent).map(|d| d.delay)
    }

    /// The abort for a request whose draw is `rnd_percent`, uniform in `[0, 100)`.
    pub fn abort_for(&self, rnd_percent: f64) -> Option<Abort> {
        self.abort.filter(|a| rnd_percent < a.percent).map(|a| a.abort)
    }
}

/// The gRPC status code of an Istio `grpcStatus` name (or number).
pub(crate) fn grpc_code(name: &str) -> Option<u32> {
    const NAMES: [&str; 17] = [
        "OK",
        "CANCELLED",
        "UNKNOWN",
        "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
        "UNAUTHENTICATED",
    ];
    let n = name.trim();
    if let Ok(code) = n.parse::<u32>() {
        return (code < 17).then_some(code);
    }
    NAMES.iter().position(|x| x.eq_ignore_ascii_case(n)).map(|i| i as u32)
}

// ---- mirroring ----

/// A mirror target: requests are copied fire-and-forget (with [`shadow_authority`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Mirror {
    pub dest: WeightedDestination,
    /// Share of requests mirrored, 0-100.
    pub percent: f64,
}

impl Mirror {
    /// Whether a request whose draw is `rnd_percent` (uniform in `[0, 100)`) is mirrored.
    pub fn sampled(&self, rnd_percent: f64) -> bool {
        rnd_percent < self.percent
    }
}

// ---- CORS ----

/// A compiled CORS policy (Istio `corsPolicy`, Gateway `CORS` filter).
#[derive(Debug, Clone)]
pub struct CorsPolicy {
    pub(crate) origins: Vec<StrMatch>,
    pub allow_methods: Option<HeaderValue>,
    pub allow_headers: Option<HeaderValue>,
    pub expose_headers: Option<HeaderValue>,
    /// Seconds, as sent in `access-control-max-age`.
    pub max_age: Option<HeaderValue>,
    pub allow_credentials: bool,
    /// Preflights from origins not allowed go upstream (Istio's default `FORWARD`) instead of
    /// being answered without CORS headers (`IGNORE`).
    pub forward_unmatched_preflights: bool,
}

/// What to do with a request under a CORS policy.
#[derive(Debug)]
pub enum CorsAction {
    /// Not a preflight: forward, then [`CorsPolicy::apply_response`].
    Forward,
    /// A preflight the waypoint answers itself.
    Respond(Response<()>),
}

impl CorsPolicy {
    pub fn origin_allowed(&self, origin: &str) -> bool {
        self.origins.iter().any(|m| m.matches(origin))
    }

    fn is_preflight(req: &RequestInfo<'_>) -> bool {
        req.method == http::Method::OPTIONS
            && req.headers.contains_key(header::ORIGIN)
            && req.headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
    }

    /// Preflight handling (Envoy's CORS filter): an allowed origin gets a 200 with the
    /// policy's headers; an unknown one is forwarded or answered bare per the policy.
    pub fn preflight(&self, req: &RequestInfo<'_>) -> CorsAction {
        if !Self::is_preflight(req) {
            return CorsAction::Forward;
        }
        let origin = req.headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()).unwrap_or("");
        let mut resp = Response::new(());
        if !self.origin_allowed(origin) {
            if self.forward_unmatched_preflights {
                return CorsAction::Forward;
            }
            return CorsAction::Respond(resp);
        }
        let h = resp.headers_mut();
        if let Some(o) = req.headers.get(header::ORIGIN) {
            h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, o.clone());
        }
        for (name, v) in [
            (header::ACCESS_CONTROL_ALLOW_METHODS, &self.allow_methods),
            (header::ACCESS_CONTROL_ALLOW_HEADERS, &self.allow_headers),
            (header::ACCESS_CONTROL_MAX_AGE, &self.max_age),
        ] {
            if let Some(v) = v {
                h.insert(name, v.clone());
            }
        }
        if self.allow_credentials {
            h.insert(header::ACCESS_CONTROL_ALLOW_CREDENTIALS, HeaderValue::from_static("true"));
        }
        CorsAction::Respond(resp)
    }

    /// Adds the CORS headers of an actual (non-preflight) request from an allowed origin.
    pub fn apply_response(&self, request_headers: &HeaderMap, response: &mut HeaderMap) {
        let Some(origin) = request_headers.get(header::ORIGIN) else { return };
        if !origin.to_str().is_ok_and(|o| self.origin_allowed(o)) {
            return;
        }
        response.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
        if self.allow_credentials {
            response.insert(header::ACCESS_CONTROL_ALLOW_CREDENTIALS, HeaderValue::from_static("true"));
        }
        if let Some(v) = &self.expose_headers {
            response.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, v.clone());
        }
    }
}
