//! Istio's Telemetry API for the waypoint's tracing, compiled once per model generation: the
//! Telemetry objects of the root namespace, of the waypoint's namespace (both without
//! `selector`/`targetRefs`) and those whose `targetRef(s)` name the waypoint's Gateway are
//! merged in that order, field by field, so the most specific one wins (`customTags` merge by
//! tag name). At one level the oldest object wins (`creationTimestamp`, then name), as Istio
//! does. Only `tracing` entries for the server side (or both sides) apply: the waypoint's
//! span is a SERVER span.

use std::sync::Arc;

use http::HeaderName;
use mesh_api::istio::telemetry::{TelemetrySpec, WorkloadMode};
use mesh_api::{Object, Resource};
use mesh_model::{Model, WaypointRef};
use serde::Serialize;

/// One custom tag's source.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum TagSource {
    /// A fixed value (literals, and environment variables read at compile time).
    Literal(Arc<str>),
    /// A request header, with the value used when it is absent.
    Header {
        #[serde(serialize_with = "ser_header")]
        name: HeaderName,
        default: Option<Arc<str>>,
    },
}

fn ser_header<S: serde::Serializer>(n: &HeaderName, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(n.as_str())
}

/// What the Telemetry objects say about the waypoint's tracing; unset fields fall back to the
/// waypoint's config.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TelemetryTracing {
    pub random_sampling_percentage: Option<f64>,
    pub disable_span_reporting: Option<bool>,
    pub disable_context_propagation: Option<bool>,
    pub custom_tags: Vec<(Arc<str>, TagSource)>,
    /// The objects applied, least specific first (`namespace/name`).
    pub sources: Vec<String>,
}

fn targets_waypoint(spec: &TelemetrySpec, waypoint: &WaypointRef) -> bool {
    spec.target_ref.iter().chain(&spec.target_refs).any(|t| {
        t.kind == "Gateway"
            && t.group.as_deref().is_none_or(|g| g == "gateway.networking.k8s.io")
            && t.name == *waypoint.name
            && t.namespace.as_deref().is_none_or(|n| n == &*waypoint.namespace)
    })
}

fn untargeted(spec: &TelemetrySpec) -> bool {
    spec.selector.is_none() && spec.target_ref.is_none() && spec.target_refs.is_empty()
}

/// The oldest of `candidates`: a missing timestamp counts as oldest, then by name.
fn oldest(mut candidates: Vec<&Arc<Resource<TelemetrySpec>>>) -> Option<&Arc<Resource<TelemetrySpec>>> {
    candidates.sort_by(|a, b| {
        let t = |r: &Resource<TelemetrySpec>| r.metadata.creation_timestamp.as_ref().map(|t| t.0);
        t(a).cmp(&t(b)).then_with(|| a.metadata.name.cmp(&b.metadata.name))
    });
    candidates.first().copied()
}

impl TelemetryTracing {
    /// Compiles the tracing Telemetry for `waypoint`; warnings name what is not supported.
    pub fn compile(model: &Model, waypoint: &WaypointRef) -> (TelemetryTracing, Vec<String>) {
        let root = &*model.config().root_namespace;
        let all: Vec<&Arc<Resource<TelemetrySpec>>> = model
            .objects()
            .iter()
            .filter_map(|(o, _)| match o {
                Object::Telemetry(t) => Some(t),
                _ => None,
            })
            .collect();
        let ns = |r: &Resource<TelemetrySpec>| r.metadata.namespace.clone().unwrap_or_default();
        let levels = [
            oldest(all.iter().copied().filter(|t| ns(t) == root && untargeted(&t.spec)).collect()),
            oldest(
                all.iter()
                    .copied()
                    .filter(|t| ns(t) == *waypoint.namespace && *waypoint.namespace != *root)
                    .filter(|t| untargeted(&t.spec))
                    .collect(),
            ),
            oldest(
                all.iter()
                    .copied()
                    .filter(|t| ns(t) == *waypoint.namespace && targets_waypoint(&t.spec, waypoint))
                    .collect(),
            ),
        ];
        let mut out = TelemetryTracing::default();
        let mut warnings = Vec::new();
        for t in levels.into_iter().flatten() {
            let name = format!("{}/{}", ns(t), t.metadata.name.as_deref().unwrap_or_default());
            out.merge(&t.spec, &name, &mut warnings);
            out.sources.push(name);
        }
        (out, warnings)
    }

    fn merge(&mut self, spec: &TelemetrySpec, name: &str, warnings: &mut Vec<String>) {
        let server = |m: &Option<mesh_api::istio::telemetry::ModeSelector>| {
            m.as_ref()
                .and_then(|m| m.mode)
                .is_none_or(|m| matches!(m, WorkloadMode::Server | WorkloadMode::ClientAndServer))
        };
        for (i, tr) in spec.tracing.iter().enumerate().filter(|(_, t)| server(&t.match_)) {
            if let Some(p) = tr.random_sampling_percentage.filter(|p| (0.0..=100.0).contains(p)) {
                self.random_sampling_percentage = Some(p);
            }
            if let Some(d) = tr.disable_span_reporting {
                self.disable_span_reporting = Some(d);
            }
            if let Some(d) = tr.disable_context_propagation {
                self.disable_context_propagation = Some(d);
            }
            for (tag, src) in &tr.custom_tags {
                let field = format!("Telemetry {name}: spec.tracing[{i}].customTags.{tag}");
                let compiled = if let Some(l) = &src.literal {
                    Some(TagSource::Literal(l.value.as_str().into()))
                } else if let Some(e) = &src.environment {
                    // Read once per generation: the environment does not change under us.
                    std::env::var(&e.name)
                        .ok()
                        .or_else(|| e.default_value.clone())
                        .map(|v| TagSource::Literal(v.into()))
                } else if let Some(h) = &src.header {
                    match HeaderName::try_from(h.name.as_str()) {
                        Ok(n) => Some(TagSource::Header {
                            name: n,
                            default: h.default_value.as_deref().map(Into::into),
                        }),
                        Err(_) => {
                            warnings.push(format!("{field}: {:?} is not a header name; tag ignored", h.name));
                            None
                        }
                    }
                } else {
                    warnings.push(format!("{field}: formatter tags are not supported; tag ignored"));
                    None
                };
                self.custom_tags.retain(|(k, _)| **k != **tag);
                if let Some(c) = compiled {
                    self.custom_tags.push((tag.as_str().into(), c));
                }
            }
        }
    }
}
