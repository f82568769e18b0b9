//! Checks of Gateway API objects (HTTPRoute, GRPCRoute, Gateway).

use std::collections::HashSet;

use super::checks::Ctx;
use crate::gateway::*;

const METHODS: &[&str] = &["GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"];
/// Gateway API backend weights are proportional (they need not sum to 100), bounded by the CRD.
const MAX_WEIGHT: i64 = 1_000_000;

fn parent_refs(cx: &mut Ctx, refs: &[ParentReference]) {
    for (i, p) in refs.iter().enumerate() {
        cx.required(&format!("spec.parentRefs[{i}].name"), &p.name);
        cx.opt_port(|| format!("spec.parentRefs[{i}].port"), p.port.map(i64::from));
    }
}

/// A backend of core kind Service (the default) must name its port.
fn is_service(group: &Option<String>, kind: &Option<String>) -> bool {
    group.as_deref().unwrap_or("").is_empty() && kind.as_deref().unwrap_or("Service") == "Service"
}

fn backend_refs(cx: &mut Ctx, f: &str, refs: &[HttpBackendRef], grpc: bool) {
    for (i, b) in refs.iter().enumerate() {
        let bf = format!("{f}[{i}]");
        cx.required(&format!("{bf}.name"), &b.name);
        match b.port {
            Some(p) => cx.port(&format!("{bf}.port"), p.into()),
            None if is_service(&b.group, &b.kind) => {
                cx.err(format!("{bf}.port"), "is required for a Service backend")
            }
            None => {}
        }
        cx.int_range(|| format!("{bf}.weight"), b.weight.map(i64::from), 0, MAX_WEIGHT);
        filters(cx, &format!("{bf}.filters"), &b.filters, grpc);
    }
}

fn header_matches(cx: &mut Ctx, f: &str, list: &[HttpHeaderMatch]) {
    for (i, h) in list.iter().enumerate() {
        cx.required(&format!("{f}[{i}].name"), &h.name);
        if h.type_ == Some(ValueMatchType::RegularExpression) {
            cx.regex_str(&format!("{f}[{i}].value"), &h.value);
        }
    }
}

fn filters(cx: &mut Ctx, f: &str, list: &[HttpRouteFilter], grpc: bool) {
    let mut redirect = false;
    let mut rewrite = false;
    for (i, flt) in list.iter().enumerate() {
        let ff = format!("{f}[{i}]");
        use HttpFilterType as T;
        let (name, set) = match flt.type_ {
            T::RequestHeaderModifier => ("requestHeaderModifier", flt.request_header_modifier.is_some()),
            T::ResponseHeaderModifier => ("responseHeaderModifier", flt.response_header_modifier.is_some()),
            T::RequestMirror => ("requestMirror", flt.request_mirror.is_some()),
            T::RequestRedirect => ("requestRedirect", flt.request_redirect.is_some()),
            T::UrlRewrite => ("urlRewrite", flt.url_rewrite.is_some()),
            T::ExtensionRef => ("extensionRef", flt.extension_ref.is_some()),
            T::Cors => ("cors", flt.cors.is_some()),
        };
        if grpc && matches!(flt.type_, T::RequestRedirect | T::UrlRewrite | T::Cors) {
            cx.err(format!("{ff}.type"), format!("{:?} is not allowed in a GRPCRoute", flt.type_));
        }
        if !set {
            cx.err(ff.clone(), format!("type {:?} requires {name}", flt.type_));
        }
        let others = [
            flt.request_header_modifier.is_some(),
            flt.response_header_modifier.is_some(),
            flt.request_mirror.is_some(),
            flt.request_redirect.is_some(),
            flt.url_rewrite.is_some(),
            flt.extension_ref.is_some(),
            flt.cors.is_some(),
        ];
        if others.iter().filter(|s| **s).count() > usize::from(set) {
            cx.err(ff.clone(), format!("only {name} may be set for this type"));
        }
        if let Some(m) = &flt.request_mirror {
            cx.required(&format!("{ff}.requestMirror.backendRef.name"), &m.backend_ref.name);
            cx.opt_port(|| format!("{ff}.requestMirror.backendRef.port"), m.backend_ref.port.map(i64::from));
            cx.int_range(|| format!("{ff}.requestMirror.percent"), m.percent.map(i64::from), 0, 100);
            if let Some(fr) = &m.fraction {
                let den = fr.denominator.unwrap_or(100);
                if den < 1 || fr.numerator < 0 || fr.numerator > den {
                    cx.err(
                        format!("{ff}.requestMirror.fraction"),
                        "needs 0 <= numerator <= denominator, denominator >= 1",
                    );
                }
                if m.percent.is_some() {
                    cx.err(format!("{ff}.requestMirror"), "percent and fraction cannot both be set");
                }
            }
        }
        if let Some(r) = &flt.request_redirect {
            redirect = true;
            let rf = format!("{ff}.requestRedirect");
            cx.opt_port(|| format!("{rf}.port"), r.port.map(i64::from));
            if let Some(code) = r.status_code
                && ![301, 302, 303, 307, 308].contains(&code)
            {
                cx.err(format!("{rf}.statusCode"), format!("{code} is not one of 301, 302, 303, 307, 308"));
            }
            if let Some(s) = &r.scheme
                && s != "http"
                && s != "https"
            {
                cx.err(format!("{rf}.scheme"), format!("{s:?} is not http or https"));
            }
            if let Some(p) = &r.path {
                path_modifier(cx, &format!("{rf}.path"), p);
            }
        }
        if let Some(r) = &flt.url_rewrite {
            rewrite = true;
            if let Some(p) = &r.path {
                path_modifier(cx, &format!("{ff}.urlRewrite.path"), p);
            }
        }
    }
    if redirect && rewrite {
        cx.err(f, "RequestRedirect and URLRewrite cannot both be used");
    }
}

fn path_modifier(cx: &mut Ctx, f: &str, p: &HttpPathModifier) {
    match p.type_ {
        None => cx.err(format!("{f}.type"), "is required"),
        Some(PathModifierType::ReplaceFullPath) if p.replace_full_path.is_none() => {
            cx.err(format!("{f}.replaceFullPath"), "is required for type ReplaceFullPath")
        }
        Some(PathModifierType::ReplacePrefixMatch) if p.replace_prefix_match.is_none() => {
            cx.err(format!("{f}.replacePrefixMatch"), "is required for type ReplacePrefixMatch")
        }
        _ => {}
    }
}

pub(super) fn http_route(cx: &mut Ctx, r: &HttpRouteSpec) {
    parent_refs(cx, &r.parent_refs);
    for (i, rule) in r.rules.iter().enumerate() {
        let f = format!("spec.rules[{i}]");
        for (j, m) in rule.matches.iter().enumerate() {
            let mf = format!("{f}.matches[{j}]");
            if let Some(p) = &m.path {
                let value = p.value.as_deref().unwrap_or("/");
                match p.type_.unwrap_or(PathMatchType::PathPrefix) {
                    PathMatchType::RegularExpression => cx.regex_str(&format!("{mf}.path.value"), value),
                    _ if !value.starts_with('/') => {
                        cx.err(format!("{mf}.path.value"), format!("{value:?} must start with '/'"))
                    }
                    _ => {}
                }
            }
            header_matches(cx, &format!("{mf}.headers"), &m.headers);
            header_matches(cx, &format!("{mf}.queryParams"), &m.query_params);
            if let Some(method) = &m.method
                && !METHODS.contains(&method.as_str())
            {
                cx.err(format!("{mf}.method"), format!("unknown method {method:?}"));
            }
        }
        filters(cx, &format!("{f}.filters"), &rule.filters, false);
        backend_refs(cx, &format!("{f}.backendRefs"), &rule.backend_refs, false);
        if let Some(t) = &rule.timeouts
            && let (Some(req), Some(be)) = (t.request, t.backend_request)
            && req.0 > std::time::Duration::ZERO
            && be > req
        {
            cx.err(
                format!("{f}.timeouts.backendRequest"),
                format!("{be} is longer than request timeout {req}"),
            );
        }
        if let Some(rt) = &rule.retry {
            cx.non_negative(|| format!("{f}.retry.attempts"), rt.attempts);
            for (k, c) in rt.codes.iter().enumerate() {
                cx.int_range(|| format!("{f}.retry.codes[{k}]"), Some((*c).into()), 400, 599);
            }
        }
    }
}

pub(super) fn grpc_route(cx: &mut Ctx, r: &GrpcRouteSpec) {
    parent_refs(cx, &r.parent_refs);
    for (i, rule) in r.rules.iter().enumerate() {
        let f = format!("spec.rules[{i}]");
        for (j, m) in rule.matches.iter().enumerate() {
            let mf = format!("{f}.matches[{j}]");
            if let Some(mm) = &m.method {
                if mm.service.is_none() && mm.method.is_none() {
                    cx.err(format!("{mf}.method"), "one of service, method is required");
                }
                if mm.type_ == Some(ValueMatchType::RegularExpression) {
                    for (name, v) in [("service", &mm.service), ("method", &mm.method)] {
                        if let Some(v) = v {
                            cx.regex_str(&format!("{mf}.method.{name}"), v);
                        }
                    }
                }
            }
            header_matches(cx, &format!("{mf}.headers"), &m.headers);
        }
        filters(cx, &format!("{f}.filters"), &rule.filters, true);
        backend_refs(cx, &format!("{f}.backendRefs"), &rule.backend_refs, true);
    }
}

pub(super) fn kube_gateway(cx: &mut Ctx, g: &KubeGatewaySpec) {
    cx.required("spec.gatewayClassName", &g.gateway_class_name);
    if g.listeners.is_empty() {
        cx.err("spec.listeners", "at least one listener is required");
    }
    let mut names = HashSet::new();
    for (i, l) in g.listeners.iter().enumerate() {
        let f = format!("spec.listeners[{i}]");
        if l.name.is_empty() {
            cx.err(format!("{f}.name"), "is required");
        } else if !names.insert(l.name.as_str()) {
            cx.err(format!("{f}.name"), format!("duplicate listener {:?}", l.name));
        }
        cx.port(&format!("{f}.port"), l.port.into());
        cx.required(&format!("{f}.protocol"), &l.protocol);
    }
}
