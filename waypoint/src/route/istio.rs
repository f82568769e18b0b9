//! VirtualService `http` and `tcp` routes → route table entries.

use std::sync::Arc;

use base64::Engine;
use bytes::Bytes;
use http::StatusCode;
use http::header::{HeaderName, HeaderValue};
use mesh_api::istio::networking::{
    CorsPolicy as IstioCors, HttpFaultInjection, HttpMatchRequest, HttpRedirect, HttpRetry, HttpRewrite,
    HttpRoute, RedirectPortSelection, RouteDestination, UnmatchedPreflights, VirtualServiceSpec,
};
use mesh_api::{Destination, Diagnostic, HeaderOperations, ObjectRef, Origin, StringMatch};
use mesh_model::{Labels, Model, Sourced};

use super::actions::{grpc_code, regex_substitution};
use super::matcher::{HeaderCond, HeaderKey, HttpMatch, PathMatch, StrMatch, TcpMatch};
use super::{
    Abort, AbortFault, Action, CorsPolicy, DelayFault, Entry, Fault, HeaderOps, Mirror, PathRewrite,
    Redirect, RedirectPath, RedirectPort, RetryOn, RetryPolicy, Rewrite, Route, RouteKind, RouteOrigin,
    RouteTable, TcpEntry, WeightedDestination,
};

type Vs = Sourced<VirtualServiceSpec>;

/// Whether a VirtualService applies inside the mesh (not only at ingress gateways).
fn bound_to_mesh(gateways: &[String]) -> bool {
    gateways.is_empty() || gateways.iter().any(|g| g == "mesh")
}

/// How specifically `vs` names `host`: 0 for an exact host, larger for shorter wildcards.
fn specificity(model: &Model, vs: &Vs, host: &str) -> Option<usize> {
    let ns = vs.0.namespace();
    vs.0.spec
        .hosts
        .iter()
        .filter_map(|h| {
            let c = model.canonical_host(h, ns);
            if c == host {
                Some(0)
            } else if let Some(sfx) = c.strip_prefix('*') {
                host.ends_with(sfx).then(|| usize::MAX - sfx.len())
            } else {
                None
            }
        })
        .min()
}

fn object_ref(vs: &Vs) -> ObjectRef {
    ObjectRef { kind: "VirtualService".into(), namespace: vs.0.namespace().into(), name: vs.0.name().into() }
}

/// The VirtualService that routes `host`: the most specific host entry, then the oldest.
/// Others at the same specificity are ignored for this host, with a warning.
pub(super) fn select<'m>(model: &'m Model, host: &'m str, diags: &mut Vec<Diagnostic>) -> Option<&'m Vs> {
    let mut cands: Vec<(usize, &Vs)> = model
        .virtual_services_for_host(host)
        .filter(|vs| bound_to_mesh(&vs.0.spec.gateways))
        .filter_map(|vs| Some((specificity(model, vs, host)?, vs)))
        .collect();
    cands.sort_by(|(sa, a), (sb, b)| {
        let key = |v: &'m Vs| (v.0.metadata.creation_timestamp.as_ref(), v.0.name(), v.0.namespace());
        sa.cmp(sb).then_with(|| key(a).cmp(&key(b)))
    });
    let (best_spec, winner) = *cands.first()?;
    for (s, vs) in &cands[1..] {
        if *s == best_spec {
            diags.push(
                Diagnostic::warning(
                    object_ref(vs),
                    "spec.hosts",
                    format!(
                        "host {host} is also routed by the older VirtualService {}/{}, which wins; \
                         this one does not apply to it",
                        winner.0.namespace(),
                        winner.0.name()
                    ),
                )
                .at(vs.1.clone()),
            );
        }
    }
    Some(winner)
}

/// Reporting context of one VirtualService.
struct Cx<'a> {
    model: &'a Model,
    ns: &'a str,
    oref: ObjectRef,
    origin: Origin,
    diags: &'a mut Vec<Diagnostic>,
}

impl Cx<'_> {
    fn err(&mut self, field: impl Into<String>, msg: impl Into<String>) {
        self.diags.push(Diagnostic::error(self.oref.clone(), field, msg).at(self.origin.clone()));
    }

    fn warn(&mut self, field: impl Into<String>, msg: impl Into<String>) {
        self.diags.push(Diagnostic::warning(self.oref.clone(), field, msg).at(self.origin.clone()));
    }

    fn host(&self, h: &str) -> Arc<str> {
        self.model.canonical_host(h, self.ns).into()
    }
}

/// Adds the routes of `vs` to `table`.
pub(super) fn compile_into(model: &Model, table: &mut RouteTable, vs: &Vs, diags: &mut Vec<Diagnostic>) {
    let mut cx = Cx { model, ns: vs.0.namespace(), oref: object_ref(vs), origin: vs.1.clone(), diags };
    let mut entries = Vec::new();
    let mut routes = Vec::new();
    for (i, r) in vs.0.spec.http.iter().enumerate() {
        let f = format!("spec.http[{i}]");
        let Some((matches, route)) = http_route(&mut cx, &f, i, r) else { continue };
        let idx = routes.len() as u32;
        routes.push(route);
        if r.matches.is_empty() {
            entries.push(Entry { matcher: HttpMatch::default(), route: idx, name: None });
        }
        for (m, name) in matches {
            entries.push(Entry { matcher: m, route: idx, name });
        }
    }
    let mut tcp = Vec::new();
    for (i, r) in vs.0.spec.tcp.iter().enumerate() {
        if let Some(t) = tcp_route(&mut cx, &format!("spec.tcp[{i}]"), &r.matches, &r.route) {
            tcp.push(t);
        }
    }
    if !vs.0.spec.tls.is_empty() {
        cx.warn("spec.tls", "TLS routes are not applied by the waypoint (it does not terminate TLS)");
    }
    table.user_http = !entries.is_empty();
    table.entries = entries.into();
    table.routes = routes.into();
    table.tcp = tcp.into();
}

/// One HTTP route: its matches (with their names) and the route; `None` when refused.
#[allow(clippy::type_complexity)]
fn http_route(
    cx: &mut Cx<'_>,
    f: &str,
    index: usize,
    r: &HttpRoute,
) -> Option<(Vec<(HttpMatch, Option<Arc<str>>)>, Route)> {
    if r.delegate.is_some() {
        cx.err(
            format!("{f}.delegate"),
            "delegation is not supported by the waypoint; this route is not applied",
        );
        return None;
    }
    let mut matches = Vec::new();
    for (j, m) in r.matches.iter().enumerate() {
        match http_match(cx, &format!("{f}.match[{j}]"), m) {
            Ok(Some(hm)) => matches.push((hm, m.name.as_deref().map(Arc::from))),
            Ok(None) => {}
            Err(()) => return None,
        }
    }
    if !r.matches.is_empty() && matches.is_empty() {
        // Every match is for gateways only: nothing of this route applies in the mesh.
        return None;
    }
    let action = if let Some(rd) = &r.redirect {
        Action::Redirect(redirect(cx, f, rd))
    } else if let Some(dr) = &r.direct_response {
        let status = StatusCode::from_u16(u16::try_from(dr.status).unwrap_or(0)).unwrap_or_else(|_| {
            cx.err(format!("{f}.directResponse.status"), format!("{} is not an HTTP status", dr.status));
            StatusCode::INTERNAL_SERVER_ERROR
        });
        let body = dr.body.as_ref().and_then(|b| match (&b.string, &b.bytes) {
            (Some(s), _) => Some(Bytes::from(s.clone())),
            (None, Some(b64)) => match base64::engine::general_purpose::STANDARD.decode(b64) {
                Ok(v) => Some(Bytes::from(v)),
                Err(e) => {
                    cx.err(format!("{f}.directResponse.body.bytes"), format!("not base64: {e}"));
                    None
                }
            },
            (None, None) => None,
        });
        Action::DirectResponse { status, body }
    } else {
        let n = r.route.len();
        let dests: Vec<WeightedDestination> = r
            .route
            .iter()
            .enumerate()
            .map(|(j, d)| {
                let df = format!("{f}.route[{j}]");
                let w = weight(d.weight, n);
                let mut wd = destination(cx, &format!("{df}.destination"), &d.destination, w);
                if let Some(h) = &d.headers {
                    wd.request_headers = header_ops(cx, &format!("{df}.headers.request"), h.request.as_ref());
                    wd.response_headers =
                        header_ops(cx, &format!("{df}.headers.response"), h.response.as_ref());
                }
                wd
            })
            .collect();
        if dests.iter().all(|d| d.weight == 0) {
            cx.err(format!("{f}.route"), "the destination weights sum to 0; the route is not applied");
            return None;
        }
        Action::Forward(dests)
    };
    let (request_headers, response_headers) = match &r.headers {
        Some(h) => (
            header_ops(cx, &format!("{f}.headers.request"), h.request.as_ref()),
            header_ops(cx, &format!("{f}.headers.response"), h.response.as_ref()),
        ),
        None => Default::default(),
    };
    let rewrite = match &r.rewrite {
        Some(rw) => Some(rewrite(cx, f, rw)?),
        None => None,
    };
    let cors = r.cors_policy.as_ref().map(|c| cors(cx, &format!("{f}.corsPolicy"), c));
    let route = Route {
        name: r.name.as_deref().map(Arc::from),
        origin: RouteOrigin {
            kind: RouteKind::VirtualService,
            namespace: cx.oref.namespace.as_str().into(),
            name: cx.oref.name.as_str().into(),
            index,
        },
        action,
        timeout: r.timeout.map(|d| d.0).filter(|d| !d.is_zero()),
        retries: retries(cx, &format!("{f}.retries"), r.retries.as_ref()),
        fault: r.fault.as_ref().and_then(|fi| fault(cx, &format!("{f}.fault"), fi)),
        mirrors: mirrors(cx, f, r),
        request_headers,
        response_headers,
        rewrite,
        cors,
    };
    Some((matches, route))
}

/// Istio: a single destination without weight takes everything; otherwise absent = 0.
fn weight(w: Option<i32>, n: usize) -> u32 {
    match w {
        Some(w) => u32::try_from(w).unwrap_or(0),
        None if n == 1 => 100,
        None => 0,
    }
}

fn destination(cx: &mut Cx<'_>, f: &str, d: &Destination, weight: u32) -> WeightedDestination {
    let port = d.port.as_ref().and_then(|p| p.number).and_then(|n| match u16::try_from(n) {
        Ok(p) if p != 0 => Some(p),
        _ => {
            cx.err(format!("{f}.port.number"), format!("{n} is not a port number; the request port is used"));
            None
        }
    });
    WeightedDestination {
        host: cx.host(&d.host),
        subset: d.subset.as_deref().filter(|s| !s.is_empty()).map(Arc::from),
        port,
        weight,
        request_headers: HeaderOps::default(),
        response_headers: HeaderOps::default(),
    }
}

/// One match entry; `Ok(None)` when it is for gateways only, `Err` when it cannot be compiled
/// (reported; the whole route is then refused rather than widened).
fn http_match(cx: &mut Cx<'_>, f: &str, m: &HttpMatchRequest) -> Result<Option<HttpMatch>, ()> {
    if !bound_to_mesh(&m.gateways) {
        return Ok(None);
    }
    let mut bad = false;
    let sm = |cx: &mut Cx<'_>, field: String, m: &StringMatch, bad: &mut bool| match StrMatch::istio(m) {
        Ok(s) => Some(s),
        Err(e) => {
            cx.err(field, format!("invalid regex: {e}; the route is not applied"));
            *bad = true;
            None
        }
    };
    let path = match &m.uri {
        None | Some(StringMatch::Any) => None,
        Some(StringMatch::Exact(e)) => Some(PathMatch::Exact(e.as_str().into())),
        Some(StringMatch::Prefix(p)) => Some(PathMatch::Prefix(p.as_str().into())),
        Some(u) => match sm(cx, format!("{f}.uri.regex"), u, &mut bad) {
            Some(StrMatch::Regex(r)) => Some(PathMatch::Regex(r)),
            _ => None,
        },
    };
    let method = m.method.as_ref().and_then(|x| sm(cx, format!("{f}.method.regex"), x, &mut bad));
    let authority = m.authority.as_ref().and_then(|x| sm(cx, format!("{f}.authority.regex"), x, &mut bad));
    let scheme = m.scheme.as_ref().and_then(|x| sm(cx, format!("{f}.scheme.regex"), x, &mut bad));
    let mut headers = Vec::new();
    for (field, list, invert) in
        [("headers", &m.headers, false), ("withoutHeaders", &m.without_headers, true)]
    {
        for (name, v) in list {
            let Some(key) = HeaderKey::parse(name) else {
                cx.err(format!("{f}.{field}.{name}"), "not a valid header name; the route is not applied");
                bad = true;
                continue;
            };
            if let Some(m) = sm(cx, format!("{f}.{field}.{name}.regex"), v, &mut bad) {
                headers.push(HeaderCond { key, m, invert });
            }
        }
    }
    let mut query = Vec::new();
    for (name, v) in &m.query_params {
        if let Some(m) = sm(cx, format!("{f}.queryParams.{name}.regex"), v, &mut bad) {
            query.push((Box::from(name.as_str()), m));
        }
    }
    let ports: Box<[u16]> = match m.port.map(u16::try_from) {
        None => Box::default(),
        Some(Ok(p)) => Box::new([p]),
        Some(Err(_)) => {
            cx.err(format!("{f}.port"), "not a port number; the route is not applied");
            return Err(());
        }
    };
    if bad {
        return Err(());
    }
    Ok(Some(HttpMatch {
        path,
        ignore_case: m.ignore_uri_case.unwrap_or(false),
        method,
        authority,
        scheme,
        headers,
        query,
        ports,
        source_labels: labels(&m.source_labels),
        source_namespace: m.source_namespace.as_deref().filter(|n| !n.is_empty()).map(Arc::from),
    }))
}

fn labels(map: &std::collections::BTreeMap<String, String>) -> Option<Labels> {
    (!map.is_empty()).then(|| Labels::from_pairs(map.iter().map(|(k, v)| (k.as_str(), v.as_str()))))
}

/// Istio `HeaderOperations` → [`HeaderOps`]; invalid names or values are reported and skipped.
fn header_ops(cx: &mut Cx<'_>, f: &str, ops: Option<&HeaderOperations>) -> HeaderOps {
    let Some(ops) = ops else { return HeaderOps::default() };
    let mut out = HeaderOps::default();
    for (kind, list) in [("set", &ops.set), ("add", &ops.add)] {
        for (name, value) in list {
            match (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(value)) {
                (Ok(n), Ok(v)) => {
                    if kind == "set" {
                        out.set.push((n, v))
                    } else {
                        out.add.push((n, v))
                    }
                }
                _ => cx.err(format!("{f}.{kind}.{name}"), "invalid header name or value; ignored"),
            }
        }
    }
    for (i, name) in ops.remove.iter().enumerate() {
        match HeaderName::from_bytes(name.as_bytes()) {
            Ok(n) => out.remove.push(n),
            Err(_) => cx.err(format!("{f}.remove[{i}]"), "invalid header name; ignored"),
        }
    }
    out
}

fn redirect(cx: &mut Cx<'_>, f: &str, rd: &HttpRedirect) -> Redirect {
    let port = match (rd.port, rd.derive_port) {
        (Some(p), _) => match u16::try_from(p) {
            Ok(p) if p != 0 => RedirectPort::Fixed(p),
            _ => {
                cx.err(format!("{f}.redirect.port"), format!("{p} is not a port number; ignored"));
                RedirectPort::Keep
            }
        },
        (None, Some(RedirectPortSelection::FromProtocolDefault)) => RedirectPort::ProtocolDefault,
        (None, Some(RedirectPortSelection::FromRequestPort)) => RedirectPort::RequestPort,
        (None, None) => RedirectPort::Keep,
    };
    let status = match rd.redirect_code {
        None => StatusCode::MOVED_PERMANENTLY,
        Some(c) => match u16::try_from(c).ok().and_then(|c| StatusCode::from_u16(c).ok()) {
            Some(s) if s.is_redirection() => s,
            _ => {
                cx.err(format!("{f}.redirect.redirectCode"), format!("{c} is not a 3xx status; 301 is used"));
                StatusCode::MOVED_PERMANENTLY
            }
        },
    };
    Redirect {
        scheme: rd.scheme.as_deref().filter(|s| !s.is_empty()).map(|s| Arc::from(s.to_ascii_lowercase())),
        host: rd.authority.as_deref().filter(|s| !s.is_empty()).map(Arc::from),
        port,
        path: rd.uri.as_deref().filter(|s| !s.is_empty()).map(|u| RedirectPath::Full(u.into())),
        status,
    }
}

fn rewrite(cx: &mut Cx<'_>, f: &str, rw: &HttpRewrite) -> Option<Rewrite> {
    let path = if let Some(rr) = &rw.uri_regex_rewrite {
        match regex::Regex::new(rr.pattern.as_str()) {
            Ok(pattern) => {
                Some(PathRewrite::Regex { pattern, substitution: regex_substitution(&rr.rewrite).into() })
            }
            Err(_) => {
                let msg = rr.pattern.compiled().err().unwrap_or("invalid regex").to_string();
                cx.err(
                    format!("{f}.rewrite.uriRegexRewrite.match"),
                    format!("invalid regex: {msg}; the route is not applied"),
                );
                return None;
            }
        }
    } else {
        rw.uri.as_deref().filter(|u| !u.is_empty()).map(|u| PathRewrite::MatchedPrefix(u.into()))
    };
    Some(Rewrite { path, authority: rw.authority.as_deref().filter(|a| !a.is_empty()).map(Arc::from) })
}

/// Istio's `ConvertPolicy`: absent → the default; `attempts: 0` → none; otherwise the
/// default overridden field by field (numbers in `retryOn` are retriable status codes).
fn retries(cx: &mut Cx<'_>, f: &str, r: Option<&HttpRetry>) -> Option<RetryPolicy> {
    let Some(r) = r else { return Some(RetryPolicy::istio_default()) };
    let attempts = r.attempts.unwrap_or(0);
    if attempts <= 0 {
        return None;
    }
    let mut p = RetryPolicy::istio_default();
    p.attempts = attempts as u32;
    if let Some(on) = r.retry_on.as_deref().filter(|s| !s.trim().is_empty()) {
        p.retry_on = RetryOn::empty();
        p.retriable_status_codes.clear();
        for cond in on.split(',').map(str::trim).filter(|c| !c.is_empty()) {
            if let Ok(code) = cond.parse::<u16>() {
                p.retriable_status_codes.push(code);
                p.retry_on = p.retry_on.union(RetryOn::RETRIABLE_STATUS_CODES);
                continue;
            }
            match RetryOn::parse_one(cond) {
                Ok(Some(c)) => p.retry_on = p.retry_on.union(c),
                Ok(None) => {
                    cx.warn(format!("{f}.retryOn"), format!("{cond:?} is not evaluated by the waypoint"))
                }
                Err(e) => cx.err(format!("{f}.retryOn"), format!("{e}; ignored")),
            }
        }
    }
    p.per_try_timeout = r.per_try_timeout.map(|d| d.0).filter(|d| !d.is_zero());
    if let Some(b) = r.backoff.map(|d| d.0).filter(|d| !d.is_zero()) {
        p.backoff_base = b;
        p.backoff_max = b * 10;
    }
    Some(p)
}

fn percent_of(p: Option<f64>) -> f64 {
    p.unwrap_or(100.0).clamp(0.0, 100.0)
}

fn fault(cx: &mut Cx<'_>, f: &str, fi: &HttpFaultInjection) -> Option<Fault> {
    let delay = fi.delay.as_ref().and_then(|d| {
        let Some(delay) = d.fixed_delay else {
            cx.warn(format!("{f}.delay"), "only fixedDelay is supported; the delay is not applied");
            return None;
        };
        let pct = d.percentage.map(|p| p.value).or(d.percent.map(f64::from));
        Some(DelayFault { percent: percent_of(pct), delay: delay.0 })
    });
    let abort = fi.abort.as_ref().and_then(|a| {
        let abort = if let Some(s) = a.http_status {
            match u16::try_from(s).ok().and_then(|s| StatusCode::from_u16(s).ok()) {
                Some(s) => Abort::Http(s),
                None => {
                    cx.err(format!("{f}.abort.httpStatus"), format!("{s} is not an HTTP status; ignored"));
                    return None;
                }
            }
        } else if let Some(g) = &a.grpc_status {
            match grpc_code(g) {
                Some(c) => Abort::Grpc(c),
                None => {
                    cx.err(format!("{f}.abort.grpcStatus"), format!("unknown gRPC status {g:?}; ignored"));
                    return None;
                }
            }
        } else {
            cx.warn(format!("{f}.abort"), "only httpStatus and grpcStatus are supported; not applied");
            return None;
        };
        Some(AbortFault { percent: percent_of(a.percentage.map(|p| p.value)), abort })
    });
    (delay.is_some() || abort.is_some()).then_some(Fault { delay, abort })
}

fn mirrors(cx: &mut Cx<'_>, f: &str, r: &HttpRoute) -> Vec<Mirror> {
    let mut out = Vec::new();
    if let Some(m) = &r.mirror {
        let pct = r
            .mirror_percentage
            .map(|p| p.value)
            .or(r.mirror_percent.map(f64::from))
            .or(r.mirror_percent_snake.map(f64::from));
        out.push(Mirror { dest: destination(cx, &format!("{f}.mirror"), m, 100), percent: percent_of(pct) });
    }
    for (j, m) in r.mirrors.iter().enumerate() {
        let dest = destination(cx, &format!("{f}.mirrors[{j}].destination"), &m.destination, 100);
        out.push(Mirror { dest, percent: percent_of(m.percentage.map(|p| p.value)) });
    }
    out
}

fn joined(list: &[String], sep: &str) -> Option<HeaderValue> {
    (!list.is_empty()).then(|| HeaderValue::from_str(&list.join(sep)).ok()).flatten()
}

fn cors(cx: &mut Cx<'_>, f: &str, c: &IstioCors) -> CorsPolicy {
    let mut origins = Vec::new();
    for (i, o) in c.allow_origins.iter().enumerate() {
        match StrMatch::istio(o) {
            Ok(m) => origins.push(m),
            Err(e) => cx.err(format!("{f}.allowOrigins[{i}].regex"), format!("invalid regex: {e}; ignored")),
        }
    }
    for o in &c.allow_origin {
        origins.push(if o == "*" { StrMatch::Any } else { StrMatch::Exact(o.as_str().into()) });
    }
    CorsPolicy {
        origins,
        allow_methods: joined(&c.allow_methods, ","),
        allow_headers: joined(&c.allow_headers, ","),
        expose_headers: joined(&c.expose_headers, ","),
        max_age: c.max_age.map(|d| HeaderValue::from(d.0.as_secs())),
        allow_credentials: c.allow_credentials.unwrap_or(false),
        forward_unmatched_preflights: c.unmatched_preflights != Some(UnmatchedPreflights::Ignore),
    }
}

fn tcp_route(
    cx: &mut Cx<'_>,
    f: &str,
    matches: &[mesh_api::istio::networking::L4MatchAttributes],
    route: &[RouteDestination],
) -> Option<TcpEntry> {
    let mut out = Vec::new();
    for (j, m) in matches.iter().enumerate() {
        if !bound_to_mesh(&m.gateways) {
            continue;
        }
        if !m.destination_subnets.is_empty() || m.source_subnet.is_some() {
            cx.warn(
                format!("{f}.match[{j}]"),
                "destinationSubnets/sourceSubnet are not evaluated by the waypoint; this match is not applied",
            );
            continue;
        }
        out.push(TcpMatch {
            port: m.port.and_then(|p| u16::try_from(p).ok()),
            source_labels: labels(&m.source_labels),
            source_namespace: m.source_namespace.as_deref().filter(|n| !n.is_empty()).map(Arc::from),
        });
    }
    if !matches.is_empty() && out.is_empty() {
        return None;
    }
    let n = route.len();
    let dests: Vec<WeightedDestination> = route
        .iter()
        .enumerate()
        .map(|(j, d)| {
            destination(cx, &format!("{f}.route[{j}].destination"), &d.destination, weight(d.weight, n))
        })
        .collect();
    if dests.iter().all(|d| d.weight == 0) {
        cx.err(format!("{f}.route"), "the destination weights sum to 0; the route is not applied");
        return None;
    }
    Some(TcpEntry { matches: out.into(), dests: dests.into() })
}
