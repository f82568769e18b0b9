//! Which local-rate-limit patches apply to this waypoint, and where: selection of the
//! EnvoyFilters (namespace, `targetRefs`, `workloadSelector`, `match.context`), then per
//! Service port the filter chain and the routes' own configs (see the module docs above).

use std::sync::Arc;

use mesh_api::Resource;
use mesh_api::istio::networking::{
    EnvoyFilterSpec, LocalRateLimit, PatchContext, RateLimitPatch, RateLimitScope, RouteMatchAction,
    VhostName,
};
use mesh_model::{Model, Service, WaypointRef};
use tokio::time::Instant;

use super::{Limiter, PortLimits};
use crate::route::{Action, RouteKind, RouteOrigin, RouteTable};

/// The label Istio puts on a waypoint's pods.
pub const GATEWAY_NAME_LABEL: &str = "gateway.networking.k8s.io/gateway-name";

/// A patch that applies to this waypoint, with its config shared by the limiters built from it.
#[derive(Debug, Clone)]
pub struct Applicable {
    /// `namespace/name` of the EnvoyFilter.
    pub source: String,
    pub patch: RateLimitPatch,
    pub config: Arc<LocalRateLimit>,
}

/// The rate-limit patches of every EnvoyFilter selecting `waypoint`, in application order.
pub fn applicable_patches(model: &Model, waypoint: &WaypointRef) -> Vec<Applicable> {
    let root = &*model.config().root_namespace;
    let mut filters: Vec<&Arc<Resource<EnvoyFilterSpec>>> = Vec::new();
    if *waypoint.namespace != *root {
        filters.extend(model.envoy_filters_in_namespace(root).iter().map(|(e, _)| e));
    }
    filters.extend(model.envoy_filters_in_namespace(&waypoint.namespace).iter().map(|(e, _)| e));
    filters.retain(|e| selects(model, e, waypoint, root));
    filters.sort_by(|a, b| {
        let key = |e: &Resource<EnvoyFilterSpec>| {
            (
                e.spec.priority,
                e.namespace() != root,
                e.metadata.creation_timestamp.clone(),
                e.name().to_string(),
            )
        };
        key(a).cmp(&key(b))
    });
    let mut out = Vec::new();
    for e in filters {
        let (patches, _) = e.spec.rate_limit_patches();
        for patch in patches {
            if patch.context == PatchContext::SidecarOutbound {
                continue;
            }
            let config = Arc::new(patch.config.clone());
            out.push(Applicable { source: format!("{}/{}", e.namespace(), e.name()), patch, config });
        }
    }
    out
}

/// Whether EnvoyFilter `e` (in this waypoint's namespace or the root namespace) selects it.
pub fn selects(model: &Model, e: &Resource<EnvoyFilterSpec>, waypoint: &WaypointRef, root: &str) -> bool {
    if !e.spec.target_refs.is_empty() {
        return e.namespace() == &*waypoint.namespace
            && e.spec.target_refs.iter().any(|t| {
                t.kind == "Gateway"
                    && t.group.as_deref() == Some("gateway.networking.k8s.io")
                    && t.name == *waypoint.name
                    && t.namespace.as_deref().is_none_or(|n| n.is_empty() || n == &*waypoint.namespace)
            });
    }
    let Some(sel) = e.spec.workload_selector.as_ref().filter(|s| !s.labels.is_empty()) else {
        return e.namespace() == &*waypoint.namespace || e.namespace() == root;
    };
    let pods: Vec<_> = model
        .workloads_in_namespace(&waypoint.namespace)
        .iter()
        .filter(|w| w.labels.get(GATEWAY_NAME_LABEL) == Some(&*waypoint.name))
        .collect();
    if pods.is_empty() {
        return sel.labels.len() == 1
            && sel.labels.get(GATEWAY_NAME_LABEL).map(String::as_str) == Some(&*waypoint.name);
    }
    pods.iter().any(|w| sel.labels.iter().all(|(k, v)| w.labels.get(k) == Some(v.as_str())))
}

/// Whether a `<host>:<port>` virtual host names `svc`.
fn names_service(host: &str, svc: &Service) -> bool {
    let host = host.to_ascii_lowercase();
    if host == *svc.hostname {
        return true;
    }
    if !svc.is_kubernetes() {
        return false;
    }
    let (name, ns) = (&*svc.name, &*svc.namespace);
    host == name || host == format!("{name}.{ns}") || host == format!("{name}.{ns}.svc")
}

/// The routes a Service's table can pick: its compiled routes and the default route, as
/// (origin, name, action kind).
fn routes_of(table: Option<&RouteTable>) -> Vec<(RouteOrigin, Option<Arc<str>>, RouteMatchAction)> {
    let default = RouteOrigin { kind: RouteKind::Default, namespace: "".into(), name: "".into(), index: 0 };
    let mut out = vec![(default, Some(Arc::from("default")), RouteMatchAction::Route)];
    for r in table.map(RouteTable::routes).unwrap_or_default() {
        let action = match r.action {
            Action::Forward(_) => RouteMatchAction::Route,
            Action::Redirect(_) => RouteMatchAction::Redirect,
            Action::DirectResponse { .. } => RouteMatchAction::DirectResponse,
        };
        if !out.iter().any(|(o, _, _)| *o == r.origin) {
            out.push((r.origin.clone(), r.name.clone(), action));
        }
    }
    out
}

/// The limiters of `svc` on `port`. Limiters of `prev` whose config is unchanged at the same
/// place are reused (with their buckets).
pub(super) fn port_limits(
    patches: &[Applicable],
    svc: &Service,
    port: u16,
    table: Option<&RouteTable>,
    prev: Option<&PortLimits>,
    now: Instant,
) -> PortLimits {
    let routes = routes_of(table);
    let mut filters: Vec<Arc<Limiter>> = Vec::new();
    let mut per_route: Vec<(RouteOrigin, Arc<LocalRateLimit>)> = Vec::new();
    for a in patches.iter().filter(|a| a.patch.port.is_none_or(|p| p == port)) {
        match &a.patch.scope {
            RateLimitScope::Filter => {
                if a.config.token_bucket.is_none() {
                    continue;
                }
                let reused = prev.and_then(|p| {
                    p.filters
                        .iter()
                        .find(|l| *l.config == *a.config && !filters.iter().any(|f| Arc::ptr_eq(f, l)))
                        .cloned()
                });
                if let Some(l) = reused.or_else(|| Limiter::new(a.config.clone(), now)) {
                    filters.push(l);
                }
            }
            RateLimitScope::Route { vhost, route, action } => {
                let vhost_ok = match vhost {
                    None => true,
                    Some(VhostName::InboundPort(p)) => *p == port,
                    Some(VhostName::HostPort(h, p)) => *p == port && names_service(h, svc),
                };
                if !vhost_ok {
                    continue;
                }
                for (origin, name, kind) in &routes {
                    let name_ok = route.as_deref().is_none_or(|n| name.as_deref() == Some(n));
                    let action_ok = *action == RouteMatchAction::Any || action == kind;
                    if name_ok && action_ok {
                        // Later merges replace earlier ones (one config per filter name).
                        per_route.retain(|(o, _)| o != origin);
                        per_route.push((origin.clone(), a.config.clone()));
                    }
                }
            }
        }
    }
    let mut routes_out = Vec::new();
    for (origin, config) in per_route {
        let reused = prev
            .and_then(|p| p.routes.iter().find(|(o, l)| *o == origin && *l.config == *config))
            .map(|(_, l)| l.clone());
        if let Some(l) = reused.or_else(|| Limiter::new(config, now)) {
            routes_out.push((origin, l));
        }
    }
    PortLimits { port, filters: filters.into(), routes: routes_out.into() }
}
