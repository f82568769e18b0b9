//! Checks of `security.istio.io` and `telemetry.istio.io` objects.

use super::checks::Ctx;
use crate::common::{PolicyTargetReference, WorkloadSelector};
use crate::istio::security::*;
use crate::istio::telemetry::*;

/// Istio: a policy targets by `selector` or by `targetRef`/`targetRefs`, never both.
fn targeting(
    cx: &mut Ctx,
    selector: &Option<WorkloadSelector>,
    target_ref: &Option<PolicyTargetReference>,
    target_refs: &[PolicyTargetReference],
) {
    if let Some(s) = selector {
        cx.labels("spec.selector.matchLabels", &s.match_labels);
    }
    let refs = target_ref.is_some() || !target_refs.is_empty();
    if selector.is_some() && refs {
        let which = if target_ref.is_some() { "targetRef" } else { "targetRefs" };
        cx.err("spec", format!("selector and {which} cannot both be set"));
    }
    if target_ref.is_some() && !target_refs.is_empty() {
        cx.err("spec", "targetRef and targetRefs cannot both be set");
    }
    let all = target_ref.iter().map(|r| ("spec.targetRef".to_string(), r));
    let all = all.chain(target_refs.iter().enumerate().map(|(i, r)| (format!("spec.targetRefs[{i}]"), r)));
    for (f, r) in all {
        cx.required(&format!("{f}.kind"), &r.kind);
        cx.required(&format!("{f}.name"), &r.name);
    }
}

pub(super) fn peer_authentication(cx: &mut Ctx, pa: &PeerAuthenticationSpec) {
    if let Some(s) = &pa.selector {
        cx.labels("spec.selector.matchLabels", &s.match_labels);
    }
    let has_selector = pa.selector.as_ref().is_some_and(|s| !s.match_labels.is_empty());
    if !pa.port_level_mtls.is_empty() && !has_selector {
        cx.err("spec.portLevelMtls", "requires a workload selector");
    }
    for port in pa.port_level_mtls.keys() {
        match port.parse::<i64>() {
            Ok(p) => cx.port(&format!("spec.portLevelMtls.{port}"), p),
            Err(_) => cx.err(format!("spec.portLevelMtls.{port}"), format!("{port:?} is not a port number")),
        }
    }
}

/// Attribute keys Istio accepts in `when` conditions (those with `[...]` take a name).
const WHEN_KEYS: &[&str] = &[
    "source.ip",
    "source.namespace",
    "source.principal",
    "remote.ip",
    "request.auth.principal",
    "request.auth.audiences",
    "request.auth.presenter",
    "destination.ip",
    "destination.port",
    "connection.sni",
    "source.remote_ip",
];
const WHEN_PREFIXES: &[&str] = &["request.headers[", "request.auth.claims[", "experimental.envoy.filters."];

pub(super) fn authorization_policy(cx: &mut Ctx, ap: &AuthorizationPolicySpec) {
    targeting(cx, &ap.selector, &ap.target_ref, &ap.target_refs);
    let custom = ap.action == Some(AuthorizationAction::Custom);
    match (&ap.provider, custom) {
        (None, true) => cx.err("spec.provider", "is required when action is CUSTOM"),
        (Some(_), false) => cx.err("spec.provider", "is only allowed when action is CUSTOM"),
        (Some(p), true) if p.name.as_deref().unwrap_or("").is_empty() => {
            cx.err("spec.provider.name", "is required")
        }
        _ => {}
    }
    for (i, rule) in ap.rules.iter().enumerate() {
        let f = format!("spec.rules[{i}]");
        for (j, from) in rule.from.iter().enumerate() {
            let ff = format!("{f}.from[{j}].source");
            match &from.source {
                None => cx.err(ff, "is required"),
                Some(s) => source(cx, &ff, s),
            }
        }
        for (j, to) in rule.to.iter().enumerate() {
            let tf = format!("{f}.to[{j}].operation");
            match &to.operation {
                None => cx.err(tf, "is required"),
                Some(op) => {
                    for (name, list) in [("ports", &op.ports), ("notPorts", &op.not_ports)] {
                        for (k, p) in list.iter().enumerate() {
                            match p.parse::<i64>() {
                                Ok(n) => cx.port(&format!("{tf}.{name}[{k}]"), n),
                                Err(_) => {
                                    cx.err(format!("{tf}.{name}[{k}]"), format!("{p:?} is not a port number"))
                                }
                            }
                        }
                    }
                }
            }
        }
        for (j, c) in rule.when.iter().enumerate() {
            let wf = format!("{f}.when[{j}]");
            if c.key.is_empty() {
                cx.err(format!("{wf}.key"), "is required");
            } else if !WHEN_KEYS.contains(&c.key.as_str())
                && !(WHEN_PREFIXES.iter().any(|p| c.key.starts_with(p))
                    && (c.key.ends_with(']') || c.key.starts_with("experimental.")))
            {
                cx.err(format!("{wf}.key"), format!("unknown attribute {:?}", c.key));
            }
            if c.values.is_empty() && c.not_values.is_empty() {
                cx.err(wf, "one of values, notValues is required");
            }
        }
    }
}

fn source(cx: &mut Ctx, f: &str, s: &Source) {
    for (name, list) in [("principals", &s.principals), ("notPrincipals", &s.not_principals)] {
        for (k, p) in list.iter().enumerate() {
            if let Some(rest) = p.strip_prefix("spiffe://") {
                cx.warn(
                    format!("{f}.{name}[{k}]"),
                    format!("principals are written without the spiffe:// scheme: use {rest:?}"),
                );
            }
        }
    }
    for (name, list) in [
        ("ipBlocks", &s.ip_blocks),
        ("notIpBlocks", &s.not_ip_blocks),
        ("remoteIpBlocks", &s.remote_ip_blocks),
        ("notRemoteIpBlocks", &s.not_remote_ip_blocks),
    ] {
        for (k, b) in list.iter().enumerate() {
            cx.ip_or_cidr(&format!("{f}.{name}[{k}]"), b);
        }
    }
}

pub(super) fn request_authentication(cx: &mut Ctx, ra: &RequestAuthenticationSpec) {
    targeting(cx, &ra.selector, &ra.target_ref, &ra.target_refs);
    for (i, r) in ra.jwt_rules.iter().enumerate() {
        let f = format!("spec.jwtRules[{i}]");
        if r.issuer.as_deref().unwrap_or("").is_empty() {
            cx.err(format!("{f}.issuer"), "is required");
        }
        let uri = r.jwks_uri.as_ref().or(r.jwks_uri_snake.as_ref());
        if r.jwks.is_some() && uri.is_some() {
            cx.err(f.clone(), "jwks and jwksUri cannot both be set");
        }
        if r.jwks_uri.is_some() && r.jwks_uri_snake.is_some() {
            cx.err(f.clone(), "jwksUri and jwks_uri cannot both be set");
        }
        if let Some(u) = uri
            && !(u.starts_with("https://") || u.starts_with("http://"))
        {
            cx.err(format!("{f}.jwksUri"), format!("{u:?} is not an http(s) URL"));
        }
        for (j, h) in r.from_headers.iter().enumerate() {
            cx.required(&format!("{f}.fromHeaders[{j}].name"), &h.name);
        }
        for (j, c) in r.output_claim_to_headers.iter().enumerate() {
            cx.required(&format!("{f}.outputClaimToHeaders[{j}].header"), &c.header);
            cx.required(&format!("{f}.outputClaimToHeaders[{j}].claim"), &c.claim);
        }
    }
}

pub(super) fn telemetry(cx: &mut Ctx, t: &TelemetrySpec) {
    targeting(cx, &t.selector, &t.target_ref, &t.target_refs);
    for (i, tr) in t.tracing.iter().enumerate() {
        if let Some(p) = tr.random_sampling_percentage {
            cx.percent_value(&format!("spec.tracing[{i}].randomSamplingPercentage"), p);
        }
        for (name, tag) in &tr.custom_tags {
            let n = [
                tag.literal.is_some(),
                tag.environment.is_some(),
                tag.header.is_some(),
                tag.formatter.is_some(),
            ]
            .iter()
            .filter(|s| **s)
            .count();
            if n != 1 {
                cx.err(
                    format!("spec.tracing[{i}].customTags.{name}"),
                    "exactly one of literal, environment, header, formatter is required",
                );
            }
        }
    }
    for (i, m) in t.metrics.iter().enumerate() {
        for (j, o) in m.overrides.iter().enumerate() {
            let f = format!("spec.metrics[{i}].overrides[{j}]");
            if let Some(sel) = &o.match_
                && sel.metric.is_some()
                && sel.custom_metric.is_some()
            {
                cx.err(format!("{f}.match"), "metric and customMetric cannot both be set");
            }
            for (tag, ov) in &o.tag_overrides {
                if ov.operation.unwrap_or(TagOperation::Upsert) == TagOperation::Upsert && ov.value.is_none()
                {
                    cx.err(format!("{f}.tagOverrides.{tag}.value"), "is required for UPSERT");
                }
            }
        }
    }
}
