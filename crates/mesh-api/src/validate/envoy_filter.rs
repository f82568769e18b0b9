//! Checks of EnvoyFilter: selection (as the CRD's rules), then every patch through
//! [`EnvoyFilterSpec::rate_limit_patches`]: errors for a malformed local-rate-limit config,
//! a warning for each patch the mesh ignores.

use super::checks::Ctx;
use crate::istio::networking::EnvoyFilterSpec;

pub(super) fn envoy_filter(cx: &mut Ctx, ef: &EnvoyFilterSpec) {
    if let Some(s) = &ef.workload_selector {
        cx.labels("spec.workloadSelector.labels", &s.labels);
        for (k, v) in &s.labels {
            if v.contains('*') {
                cx.err(format!("spec.workloadSelector.labels.{k}"), "wildcard is not supported in selector");
            }
        }
        if !ef.target_refs.is_empty() {
            cx.err("spec", "only one of targetRefs or workloadSelector can be set");
        }
    }
    if ef.target_refs.len() > 16 {
        cx.err("spec.targetRefs", format!("at most 16 references, got {}", ef.target_refs.len()));
    }
    for (i, r) in ef.target_refs.iter().enumerate() {
        let f = format!("spec.targetRefs[{i}]");
        cx.required(&format!("{f}.kind"), &r.kind);
        cx.required(&format!("{f}.name"), &r.name);
        if r.namespace.as_deref().is_some_and(|n| !n.is_empty()) {
            cx.err(format!("{f}.namespace"), "cross namespace referencing is not currently supported");
        }
        let group = r.group.as_deref().unwrap_or("");
        if !r.kind.is_empty() && (r.kind != "Gateway" || group != "gateway.networking.k8s.io") {
            cx.warn(
                f,
                format!(
                    "{}{} is not supported: only a waypoint (kind Gateway, group gateway.networking.k8s.io); \
                     this reference selects nothing",
                    if group.is_empty() { String::new() } else { format!("{group}/") },
                    r.kind
                ),
            );
        }
    }
    let (_, problems) = ef.rate_limit_patches();
    for p in problems {
        if p.error {
            cx.err(p.field, p.message);
        } else {
            cx.warn(p.field, p.message);
        }
    }
}
