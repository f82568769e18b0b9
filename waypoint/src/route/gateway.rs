//! Gateway API HTTPRoute and GRPCRoute rules attached to a Service (GAMMA) → route table
//! entries, ordered by the Gateway API precedence rules.

use std::cmp::Reverse;
use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use http::header::{HeaderName, HeaderValue};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use mesh_api::gateway::{
    BackendObjectReference, CorsFilter, GrpcRouteMatch, HeaderFilter, HttpBackendRef, HttpFilterType,
    HttpPathModifier, HttpRouteFilter, HttpRouteMatch, HttpRouteRetry, HttpRouteTimeouts, ParentReference,
    PathMatchType, PathModifierType, RequestRedirectFilter, ValueMatchType,
};
use mesh_api::{Diagnostic, ObjectRef, Origin, Resource};
use mesh_model::{Model, ParentKey, Service};

use super::matcher::{HeaderCond, HeaderKey, HttpMatch, PathMatch, StrMatch, full_regex};
use super::{
    Action, CorsPolicy, Entry, HeaderOps, Mirror, PathRewrite, Redirect, RedirectPath, RedirectPort, RetryOn,
    RetryPolicy, Rewrite, Route, RouteKind, RouteOrigin, RouteTable, WeightedDestination,
};

fn object_ref<S>(kind: &str, r: &Resource<S>) -> ObjectRef {
    ObjectRef { kind: kind.into(), namespace: r.namespace().into(), name: r.name().into() }
}

/// Warns every route attached to `parent` that a VirtualService takes the Service.
pub(super) fn warn_shadowed(
    model: &Model,
    parent: &ParentKey,
    vs: &mesh_model::Sourced<mesh_api::istio::networking::VirtualServiceSpec>,
    diags: &mut Vec<Diagnostic>,
) {
    let ParentKey::Service(ns, name) = parent else { return };
    let msg = format!(
        "Service {ns}/{name} is also routed by VirtualService {}/{}, which takes precedence (as in \
         Istio); this route does not apply to it",
        vs.0.namespace(),
        vs.0.name()
    );
    let http = model.http_routes_for(parent).map(|(r, o)| (object_ref("HTTPRoute", r), o));
    let grpc = model.grpc_routes_for(parent).map(|(r, o)| (object_ref("GRPCRoute", r), o));
    for (oref, origin) in http.chain(grpc) {
        diags.push(Diagnostic::warning(oref, "spec.parentRefs", msg.clone()).at(origin.clone()));
    }
}

/// Reporting context of one route object.
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
}

/// The Gateway API precedence of one match; sorting ascending puts the winner first.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct Precedence<'a> {
    /// Exact (2) > prefix (1) > regex (0).
    path_rank: Reverse<u8>,
    path_len: Reverse<usize>,
    method: Reverse<bool>,
    headers: Reverse<usize>,
    query: Reverse<usize>,
    /// Oldest first; a missing timestamp counts as oldest.
    created: Option<&'a Time>,
    namespace: &'a str,
    name: &'a str,
    /// HTTPRoutes before GRPCRoutes when everything else ties.
    grpc: bool,
    rule: usize,
    index: usize,
}

struct Pending<'a> {
    key: Precedence<'a>,
    matcher: HttpMatch,
    route: u32,
}

/// The Service ports `refs` attach the route to (empty = every port); `None` when no
/// reference names this Service.
fn attached_ports(cx: &mut Cx<'_>, refs: &[ParentReference], svc: &Service) -> Option<Box<[u16]>> {
    let mut ports = Vec::new();
    let mut any = false;
    let mut found = false;
    for (i, p) in refs.iter().enumerate() {
        let group = p.group.as_deref().unwrap_or("gateway.networking.k8s.io");
        let is_service = matches!(group, "" | "core") && p.kind.as_deref() == Some("Service");
        if !is_service || p.name != *svc.name || p.namespace.as_deref().unwrap_or(cx.ns) != &*svc.namespace {
            continue;
        }
        let port = match (&p.port, &p.section_name) {
            (Some(n), _) => u16::try_from(*n).ok(),
            (None, Some(section)) => {
                match svc.ports.iter().find(|sp| sp.name.as_deref() == Some(section.as_str())) {
                    Some(sp) => Some(sp.port),
                    None => {
                        cx.warn(
                            format!("spec.parentRefs[{i}].sectionName"),
                            format!(
                                "Service {}/{} has no port named {section:?}; not attached",
                                svc.namespace, svc.name
                            ),
                        );
                        continue;
                    }
                }
            }
            (None, None) => None,
        };
        found = true;
        match port {
            Some(p) => ports.push(p),
            None => any = true,
        }
    }
    if !found {
        return None;
    }
    Some(if any { Box::default() } else { ports.into() })
}

/// Adds the routes attached to `parent` to `table`; whether there were any.
pub(super) fn compile_into(
    model: &Model,
    svc: &Service,
    parent: &ParentKey,
    table: &mut RouteTable,
    diags: &mut Vec<Diagnostic>,
) -> bool {
    let mut pending: Vec<Pending<'_>> = Vec::new();
    let mut routes: Vec<Route> = Vec::new();
    for (r, origin) in model.http_routes_for(parent) {
        let mut cx = Cx {
            model,
            ns: r.namespace(),
            oref: object_ref("HTTPRoute", r),
            origin: origin.clone(),
            diags: &mut *diags,
        };
        let Some(ports) = attached_ports(&mut cx, &r.spec.parent_refs, svc) else { continue };
        for (i, rule) in r.spec.rules.iter().enumerate() {
            let f = format!("spec.rules[{i}]");
            let idx = routes.len() as u32;
            let base = RouteOrigin {
                kind: RouteKind::HttpRoute,
                namespace: r.namespace().into(),
                name: r.name().into(),
                index: i,
            };
            let mut matches = Vec::new();
            let mut bad = false;
            for (j, m) in rule.matches.iter().enumerate() {
                match http_match(&mut cx, &format!("{f}.matches[{j}]"), m, &ports) {
                    Some(x) => matches.push(x),
                    None => bad = true,
                }
            }
            if bad {
                continue;
            }
            if rule.matches.is_empty() {
                let (hm, rank, len) = default_match(&ports);
                matches.push((hm, rank, len, false, 0, 0));
            }
            let route = rule_route(
                &mut cx,
                &f,
                base,
                rule.name.as_deref(),
                &rule.filters,
                &rule.backend_refs,
                rule.timeouts.as_ref(),
                rule.retry.as_ref(),
                &matches,
            );
            routes.push(route);
            for (j, (matcher, rank, len, method, headers, query)) in matches.into_iter().enumerate() {
                pending.push(Pending {
                    key: Precedence {
                        path_rank: Reverse(rank),
                        path_len: Reverse(len),
                        method: Reverse(method),
                        headers: Reverse(headers),
                        query: Reverse(query),
                        created: r.metadata.creation_timestamp.as_ref(),
                        namespace: r.namespace(),
                        name: r.name(),
                        grpc: false,
                        rule: i,
                        index: j,
                    },
                    matcher,
                    route: idx,
                });
            }
        }
    }
    for (r, origin) in model.grpc_routes_for(parent) {
        let mut cx = Cx {
            model,
            ns: r.namespace(),
            oref: object_ref("GRPCRoute", r),
            origin: origin.clone(),
            diags: &mut *diags,
        };
        let Some(ports) = attached_ports(&mut cx, &r.spec.parent_refs, svc) else { continue };
        for (i, rule) in r.spec.rules.iter().enumerate() {
            let f = format!("spec.rules[{i}]");
            let idx = routes.len() as u32;
            let base = RouteOrigin {
                kind: RouteKind::GrpcRoute,
                namespace: r.namespace().into(),
                name: r.name().into(),
                index: i,
            };
            let mut matches = Vec::new();
            let mut bad = false;
            for (j, m) in rule.matches.iter().enumerate() {
                match grpc_match(&mut cx, &format!("{f}.matches[{j}]"), m, &ports) {
                    Some(x) => matches.push(x),
                    None => bad = true,
                }
            }
            if bad {
                continue;
            }
            if rule.matches.is_empty() {
                let (hm, rank, len) = default_match(&ports);
                matches.push((hm, rank, len, false, 0, 0));
            }
            let route = rule_route(
                &mut cx,
                &f,
                base,
                rule.name.as_deref(),
                &rule.filters,
                &rule.backend_refs,
                None,
                None,
                &matches,
            );
            routes.push(route);
            for (j, (matcher, rank, len, _, headers, _)) in matches.into_iter().enumerate() {
                pending.push(Pending {
                    key: Precedence {
                        path_rank: Reverse(rank),
                        path_len: Reverse(len),
                        method: Reverse(false),
                        headers: Reverse(headers),
                        query: Reverse(0),
                        created: r.metadata.creation_timestamp.as_ref(),
                        namespace: r.namespace(),
                        name: r.name(),
                        grpc: true,
                        rule: i,
                        index: j,
                    },
                    matcher,
                    route: idx,
                });
            }
        }
    }
    if pending.is_empty() {
        return false;
    }
    pending.sort_by(|a, b| a.key.cmp(&b.key));
    table.entries =
        pending.into_iter().map(|p| Entry { matcher: p.matcher, route: p.route, name: None }).collect();
    table.routes = routes.into();
    table.user_http = true;
    true
}

/// A compiled match with its precedence inputs: (match, path rank, path length, has method,
/// header count, query count).
type Compiled = (HttpMatch, u8, usize, bool, usize, usize);

/// A rule without matches: path prefix `/`.
fn default_match(ports: &[u16]) -> (HttpMatch, u8, usize) {
    let hm =
        HttpMatch { path: Some(PathMatch::Segments("".into())), ports: ports.into(), ..Default::default() };
    (hm, 1, 1)
}

fn value_match(cx: &mut Cx<'_>, f: &str, t: Option<ValueMatchType>, value: &str) -> Option<StrMatch> {
    match t.unwrap_or(ValueMatchType::Exact) {
        ValueMatchType::Exact => Some(StrMatch::Exact(value.into())),
        ValueMatchType::RegularExpression => match StrMatch::regex(value) {
            Ok(m) => Some(m),
            Err(e) => {
                cx.err(f, format!("invalid regex: {e}; the rule is not applied"));
                None
            }
        },
    }
}

fn header_conds(
    cx: &mut Cx<'_>,
    f: &str,
    list: &[mesh_api::gateway::HttpHeaderMatch],
) -> Option<Vec<HeaderCond>> {
    let mut out = Vec::new();
    for (i, h) in list.iter().enumerate() {
        let Some(key) = HeaderKey::parse(&h.name) else {
            cx.err(format!("{f}[{i}].name"), "not a valid header name; the rule is not applied");
            return None;
        };
        // Only the first entry of a name counts (Gateway API).
        if out.iter().any(
            |c: &HeaderCond| matches!((&c.key, &key), (HeaderKey::Name(a), HeaderKey::Name(b)) if a == b),
        ) {
            continue;
        }
        let m = value_match(cx, &format!("{f}[{i}].value"), h.type_, &h.value)?;
        out.push(HeaderCond { key, m, invert: false });
    }
    Some(out)
}

fn http_match(cx: &mut Cx<'_>, f: &str, m: &HttpRouteMatch, ports: &[u16]) -> Option<Compiled> {
    let (path, rank, len) = match &m.path {
        None => (PathMatch::Segments("".into()), 1, 1),
        Some(p) => {
            let value = p.value.as_deref().unwrap_or("/");
            match p.type_.unwrap_or(PathMatchType::PathPrefix) {
                PathMatchType::Exact => (PathMatch::Exact(value.into()), 2, value.len()),
                PathMatchType::PathPrefix => {
                    (PathMatch::Segments(value.trim_end_matches('/').into()), 1, value.len())
                }
                PathMatchType::RegularExpression => match full_regex(value) {
                    Ok(r) => (PathMatch::Regex(r), 0, value.len()),
                    Err(e) => {
                        cx.err(
                            format!("{f}.path.value"),
                            format!("invalid regex: {e}; the rule is not applied"),
                        );
                        return None;
                    }
                },
            }
        }
    };
    let headers = header_conds(cx, &format!("{f}.headers"), &m.headers)?;
    let mut query: Vec<(Box<str>, StrMatch)> = Vec::new();
    for (i, q) in m.query_params.iter().enumerate() {
        if query.iter().any(|(n, _)| **n == *q.name) {
            continue;
        }
        let sm = value_match(cx, &format!("{f}.queryParams[{i}].value"), q.type_, &q.value)?;
        query.push((q.name.as_str().into(), sm));
    }
    let method = m.method.as_deref().map(|x| StrMatch::Exact(x.into()));
    let (nh, nq, has_method) = (headers.len(), query.len(), method.is_some());
    let hm =
        HttpMatch { path: Some(path), method, headers, query, ports: ports.into(), ..Default::default() };
    Some((hm, rank, len, has_method, nh, nq))
}

fn grpc_match(cx: &mut Cx<'_>, f: &str, m: &GrpcRouteMatch, ports: &[u16]) -> Option<Compiled> {
    let (path, rank, len) = match &m.method {
        None => (PathMatch::Segments("".into()), 1, 1),
        Some(mm) => {
            let svc = mm.service.as_deref().filter(|s| !s.is_empty());
            let method = mm.method.as_deref().filter(|s| !s.is_empty());
            match (mm.type_.unwrap_or(ValueMatchType::Exact), svc, method) {
                (ValueMatchType::Exact, Some(s), Some(m)) => {
                    let p = format!("/{s}/{m}");
                    let len = p.len();
                    (PathMatch::Exact(p.into()), 2, len)
                }
                (ValueMatchType::Exact, Some(s), None) => {
                    let p = format!("/{s}/");
                    let len = p.len();
                    (PathMatch::Prefix(p.into()), 1, len)
                }
                (t, s, m) => {
                    let part = |x: Option<&str>| match (t, x) {
                        (_, None) => "[^/]+".to_string(),
                        (ValueMatchType::Exact, Some(x)) => regex::escape(x),
                        (ValueMatchType::RegularExpression, Some(x)) => format!("(?:{x})"),
                    };
                    let pattern = format!("/{}/{}", part(s), part(m));
                    match full_regex(&pattern) {
                        Ok(r) => (PathMatch::Regex(r), 0, pattern.len()),
                        Err(e) => {
                            cx.err(
                                format!("{f}.method"),
                                format!("invalid regex: {e}; the rule is not applied"),
                            );
                            return None;
                        }
                    }
                }
            }
        }
    };
    let headers = header_conds(cx, &format!("{f}.headers"), &m.headers)?;
    let nh = headers.len();
    let hm = HttpMatch { path: Some(path), headers, ports: ports.into(), ..Default::default() };
    Some((hm, rank, len, false, nh, 0))
}

fn header_filter(cx: &mut Cx<'_>, f: &str, hf: &HeaderFilter, out: &mut HeaderOps) {
    for (kind, list) in [("set", &hf.set), ("add", &hf.add)] {
        for (i, h) in list.iter().enumerate() {
            match (HeaderName::from_bytes(h.name.as_bytes()), HeaderValue::from_str(&h.value)) {
                (Ok(n), Ok(v)) => {
                    if kind == "set" {
                        out.set.push((n, v))
                    } else {
                        out.add.push((n, v))
                    }
                }
                _ => cx.err(format!("{f}.{kind}[{i}]"), "invalid header name or value; ignored"),
            }
        }
    }
    for (i, name) in hf.remove.iter().enumerate() {
        match HeaderName::from_bytes(name.as_bytes()) {
            Ok(n) => out.remove.push(n),
            Err(_) => cx.err(format!("{f}.remove[{i}]"), "invalid header name; ignored"),
        }
    }
}

/// A backend Service by reference: its FQDN, or why not.
fn backend(
    cx: &mut Cx<'_>,
    group: Option<&str>,
    kind: Option<&str>,
    name: &str,
    namespace: Option<&str>,
) -> Result<Arc<str>, String> {
    let (group, kind) = (group.unwrap_or(""), kind.unwrap_or("Service"));
    if !(matches!(group, "" | "core") && kind == "Service") {
        return Err(format!("backend kind {group}/{kind} is not supported (only Service)"));
    }
    let ns = namespace.unwrap_or(cx.ns);
    match cx.model.service(ns, name) {
        Some(s) => Ok(s.hostname.clone()),
        None => Err(format!("Service {ns}/{name} does not exist")),
    }
}

fn port_of(p: Option<i32>) -> Option<u16> {
    p.and_then(|p| u16::try_from(p).ok()).filter(|p| *p != 0)
}

fn path_modifier(cx: &mut Cx<'_>, f: &str, p: &HttpPathModifier) -> Option<(bool, Arc<str>)> {
    let t = p.type_.or(if p.replace_full_path.is_some() {
        Some(PathModifierType::ReplaceFullPath)
    } else if p.replace_prefix_match.is_some() {
        Some(PathModifierType::ReplacePrefixMatch)
    } else {
        None
    });
    match t {
        Some(PathModifierType::ReplaceFullPath) => {
            Some((true, p.replace_full_path.as_deref().unwrap_or("/").into()))
        }
        Some(PathModifierType::ReplacePrefixMatch) => {
            Some((false, p.replace_prefix_match.as_deref().unwrap_or("/").into()))
        }
        None => {
            cx.err(f, "one of replaceFullPath, replacePrefixMatch is required; ignored");
            None
        }
    }
}

fn redirect(cx: &mut Cx<'_>, f: &str, rr: &RequestRedirectFilter, prefix_ok: bool) -> Redirect {
    let scheme = rr.scheme.as_deref().filter(|s| !s.is_empty()).map(|s| Arc::from(s.to_ascii_lowercase()));
    // Gateway API: without a port, the scheme's well-known port when the scheme changes, else
    // the listener's (for a Service parent, the Service port).
    let port = match port_of(rr.port) {
        Some(p) => RedirectPort::Fixed(p),
        None if scheme.is_some() => RedirectPort::ProtocolDefault,
        None => RedirectPort::RequestPort,
    };
    let path = rr.path.as_ref().and_then(|p| path_modifier(cx, &format!("{f}.path"), p)).map(|(full, v)| {
        if full || !prefix_ok { RedirectPath::Full(v) } else { RedirectPath::GatewayPrefix(v) }
    });
    let status = rr
        .status_code
        .and_then(|c| u16::try_from(c).ok())
        .and_then(|c| StatusCode::from_u16(c).ok())
        .filter(StatusCode::is_redirection)
        .unwrap_or(StatusCode::FOUND);
    Redirect {
        scheme,
        host: rr.hostname.as_deref().filter(|h| !h.is_empty()).map(Arc::from),
        port,
        path,
        status,
    }
}

fn cors(c: &CorsFilter) -> CorsPolicy {
    let origins = c
        .allow_origins
        .iter()
        .filter_map(|o| {
            if o == "*" {
                Some(StrMatch::Any)
            } else if o.contains('*') {
                let pattern = o.split('*').map(regex::escape).collect::<Vec<_>>().join("[^/]*");
                StrMatch::regex(&pattern).ok()
            } else {
                Some(StrMatch::Exact(o.as_str().into()))
            }
        })
        .collect();
    let joined = |l: &[String]| (!l.is_empty()).then(|| HeaderValue::from_str(&l.join(",")).ok()).flatten();
    CorsPolicy {
        origins,
        allow_methods: joined(&c.allow_methods),
        allow_headers: joined(&c.allow_headers),
        expose_headers: joined(&c.expose_headers),
        // Gateway API: 5 seconds when unset.
        max_age: Some(HeaderValue::from(c.max_age.unwrap_or(5).max(0) as u64)),
        allow_credentials: c.allow_credentials.unwrap_or(false),
        forward_unmatched_preflights: false,
    }
}

fn mirror_percent(percent: Option<i32>, fraction: Option<&mesh_api::gateway::Fraction>) -> f64 {
    if let Some(p) = percent {
        return f64::from(p).clamp(0.0, 100.0);
    }
    match fraction {
        Some(fr) => {
            let den = fr.denominator.unwrap_or(100);
            if den <= 0 { 0.0 } else { (f64::from(fr.numerator) * 100.0 / f64::from(den)).clamp(0.0, 100.0) }
        }
        None => 100.0,
    }
}

fn mirror(cx: &mut Cx<'_>, f: &str, b: &BackendObjectReference, percent: f64) -> Option<Mirror> {
    match backend(cx, b.group.as_deref(), b.kind.as_deref(), &b.name, b.namespace.as_deref()) {
        Ok(host) => Some(Mirror {
            dest: WeightedDestination {
                host,
                subset: None,
                port: port_of(b.port),
                weight: 100,
                request_headers: HeaderOps::default(),
                response_headers: HeaderOps::default(),
            },
            percent,
        }),
        Err(e) => {
            cx.err(format!("{f}.backendRef"), format!("{e}; the mirror is not applied"));
            None
        }
    }
}

/// Gateway `retry`: `attempts` retries (default 2) on connection failures and `codes`
/// (default 503); without `retry`, Istio's default policy.
fn retry(r: Option<&HttpRouteRetry>) -> Option<RetryPolicy> {
    let Some(r) = r else { return Some(RetryPolicy::istio_default()) };
    let attempts = r.attempts.unwrap_or(2);
    if attempts <= 0 {
        return None;
    }
    let mut p = RetryPolicy::istio_default();
    p.attempts = attempts as u32;
    p.retry_on = RetryOn::CONNECT_FAILURE
        .union(RetryOn::REFUSED_STREAM)
        .union(RetryOn::GRPC_UNAVAILABLE)
        .union(RetryOn::GRPC_CANCELLED)
        .union(RetryOn::RETRIABLE_STATUS_CODES);
    if !r.codes.is_empty() {
        p.retriable_status_codes = r.codes.iter().filter_map(|c| u16::try_from(*c).ok()).collect();
    }
    if let Some(b) = r.backoff.map(|d| d.0).filter(|d| !d.is_zero()) {
        p.backoff_base = b;
        p.backoff_max = b * 10;
    }
    Some(p)
}

#[allow(clippy::too_many_arguments)]
fn rule_route(
    cx: &mut Cx<'_>,
    f: &str,
    origin: RouteOrigin,
    name: Option<&str>,
    filters: &[HttpRouteFilter],
    backend_refs: &[HttpBackendRef],
    timeouts: Option<&HttpRouteTimeouts>,
    retry_cfg: Option<&HttpRouteRetry>,
    matches: &[Compiled],
) -> Route {
    let prefix_ok = matches.iter().all(|m| matches!(m.0.path, Some(PathMatch::Segments(_))));
    let mut request_headers = HeaderOps::default();
    let mut response_headers = HeaderOps::default();
    let mut redirect_to = None;
    let mut rewrite = None;
    let mut mirrors = Vec::new();
    let mut cors_policy = None;
    let mut failed = false;
    for (i, flt) in filters.iter().enumerate() {
        let ff = format!("{f}.filters[{i}]");
        match flt.type_ {
            HttpFilterType::RequestHeaderModifier => {
                if let Some(h) = &flt.request_header_modifier {
                    header_filter(cx, &format!("{ff}.requestHeaderModifier"), h, &mut request_headers);
                }
            }
            HttpFilterType::ResponseHeaderModifier => {
                if let Some(h) = &flt.response_header_modifier {
                    header_filter(cx, &format!("{ff}.responseHeaderModifier"), h, &mut response_headers);
                }
            }
            HttpFilterType::RequestRedirect => {
                if let Some(rr) = &flt.request_redirect {
                    redirect_to = Some(redirect(cx, &format!("{ff}.requestRedirect"), rr, prefix_ok));
                }
            }
            HttpFilterType::UrlRewrite => {
                if let Some(u) = &flt.url_rewrite {
                    let path =
                        u.path.as_ref().and_then(|p| path_modifier(cx, &format!("{ff}.urlRewrite.path"), p));
                    let path = path.map(|(full, v)| {
                        if !full && !prefix_ok {
                            cx.warn(
                                format!("{ff}.urlRewrite.path"),
                                "ReplacePrefixMatch needs PathPrefix matches; the whole path is replaced",
                            );
                        }
                        if full || !prefix_ok {
                            PathRewrite::FullPath(v)
                        } else {
                            PathRewrite::GatewayPrefix(v)
                        }
                    });
                    rewrite = Some(Rewrite {
                        path,
                        authority: u.hostname.as_deref().filter(|h| !h.is_empty()).map(Arc::from),
                    });
                }
            }
            HttpFilterType::RequestMirror => {
                if let Some(m) = &flt.request_mirror {
                    let pct = mirror_percent(m.percent, m.fraction.as_ref());
                    mirrors.extend(mirror(cx, &format!("{ff}.requestMirror"), &m.backend_ref, pct));
                }
            }
            HttpFilterType::Cors => cors_policy = flt.cors.as_ref().map(cors),
            HttpFilterType::ExtensionRef => {
                // Gateway API: an unresolvable filter must not be skipped; its requests get 500.
                cx.err(
                    format!("{ff}.extensionRef"),
                    "extension filters are not supported; the rule answers 500",
                );
                failed = true;
            }
        }
    }
    let mut dests = Vec::new();
    let mut invalid = 0;
    for (i, b) in backend_refs.iter().enumerate() {
        let bf = format!("{f}.backendRefs[{i}]");
        let host = match backend(cx, b.group.as_deref(), b.kind.as_deref(), &b.name, b.namespace.as_deref()) {
            Ok(h) => h,
            Err(e) => {
                cx.err(&bf, format!("{e}; the backend is not used"));
                invalid += 1;
                continue;
            }
        };
        let mut d = WeightedDestination {
            host,
            subset: None,
            port: port_of(b.port),
            weight: b.weight.map(|w| w.max(0) as u32).unwrap_or(1),
            request_headers: HeaderOps::default(),
            response_headers: HeaderOps::default(),
        };
        for (j, flt) in b.filters.iter().enumerate() {
            let ff = format!("{bf}.filters[{j}]");
            match (flt.type_, &flt.request_header_modifier, &flt.response_header_modifier) {
                (HttpFilterType::RequestHeaderModifier, Some(h), _) => {
                    header_filter(cx, &format!("{ff}.requestHeaderModifier"), h, &mut d.request_headers)
                }
                (HttpFilterType::ResponseHeaderModifier, _, Some(h)) => {
                    header_filter(cx, &format!("{ff}.responseHeaderModifier"), h, &mut d.response_headers)
                }
                _ => cx.warn(&ff, "only header modifiers are supported on a backend; ignored"),
            }
        }
        dests.push(d);
    }
    let server_error = || Action::DirectResponse { status: StatusCode::INTERNAL_SERVER_ERROR, body: None };
    let action = if failed {
        server_error()
    } else if let Some(r) = redirect_to {
        Action::Redirect(r)
    } else if dests.iter().all(|d| d.weight == 0) {
        if invalid == 0 && !dests.is_empty() {
            cx.warn(format!("{f}.backendRefs"), "every backend has weight 0; requests get 500");
        }
        server_error()
    } else {
        Action::Forward(dests)
    };
    let nonzero = |d: Option<mesh_api::Duration>| d.map(|d| d.0).filter(|d| !d.is_zero());
    let mut timeout = timeouts.and_then(|t| nonzero(t.request));
    let per_try: Option<Duration> = timeouts.and_then(|t| nonzero(t.backend_request));
    let mut retries = retry(retry_cfg);
    match (&mut retries, per_try) {
        (Some(p), Some(pt)) => p.per_try_timeout = Some(pt),
        (None, Some(pt)) => timeout = Some(timeout.map_or(pt, |t| t.min(pt))),
        _ => {}
    }
    Route {
        name: name.map(Arc::from),
        origin,
        action,
        timeout,
        retries,
        fault: None,
        mirrors,
        request_headers,
        response_headers,
        rewrite,
        cors: cors_policy,
    }
}
