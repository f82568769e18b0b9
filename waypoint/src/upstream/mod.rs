//! Upstream clusters of the waypoint, one per (service host, subset, service port), built from
//! the model's Services and DestinationRules: the endpoints (pod IP and the target port of the
//! service port, restricted to the subset's labels), load balancing (ROUND_ROBIN,
//! LEAST_REQUEST, RANDOM, PASSTHROUGH, consistent hashing on a ring or a Maglev table),
//! circuit breakers from `connectionPool` (fail fast with 503 `UO`) and outlier detection
//! (`outlierDetection`: consecutive 5xx / gateway errors eject hosts for a time that grows
//! with each ejection; sweeps return them; below `minHealthPercent` ejections are ignored).
//!
//! [`Clusters::update`] compiles a model generation into immutable clusters looked up without
//! locking; per-cluster and per-endpoint runtime state (active requests, breaker counters,
//! consecutive errors, ejections) is carried over to the new generation for endpoints that
//! still exist, and a cluster whose inputs did not change is reused as is.
//!
//! Which DestinationRules apply to a host (Istio's precedence, for a proxy in namespace P):
//! rules in P, else in the service's namespace, else in the root namespace, else elsewhere;
//! within that namespace an exact host before the most specific wildcard. Rules of the same
//! rank merge as Istio merges them: subsets are appended (the first of a name wins) and the
//! first rule's `trafficPolicy` is used. Rules with a `workloadSelector` target sidecars and
//! do not apply to the waypoint.
//!
//! Outlier sweeps run lazily: each pick first replays the sweeps due since the last one, so
//! no timer task is needed (a timer may call [`Clusters::sweep`] for idle clusters).
//! PASSTHROUGH forwards to [`PickContext::original_dst`], the address the client dialled.
//!
//! Not implemented, reported as a warning where configured: `localityLbSetting`, `warmup`
//! (slow start), `tunnel`, `proxyProtocol`, `retryBudget`, TLS origination (`tls.mode`
//! SIMPLE/MUTUAL), split local-origin errors. Also not done: ServiceEntry endpoint weights
//! (every endpoint weighs the same) and ServiceEntry endpoints given by DNS name (they need
//! resolution; only IP endpoints become cluster endpoints).

mod cluster;
mod hash;
mod policy;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use mesh_api::Diagnostic;
use mesh_api::istio::networking::{DestinationRuleSpec, Subset};
use mesh_model::{Labels, Model, Service, Sourced};

pub use cluster::{
    Cluster, ClusterKey, ConnectionPermit, Endpoint, EndpointGuard, Outcome, Overflow, PendingPermit, Pick,
    PickContext, PickError, RequestPermit, RetryPermit,
};
pub use policy::{
    ClusterPolicy, CookieKey, DEFAULT_CONNECT_TIMEOUT, DEFAULT_IDLE_TIMEOUT, DEFAULT_MAGLEV_TABLE_SIZE,
    DEFAULT_RING_SIZE, HashAlgorithm, HashKey, HashPolicy, LbPolicy, OutlierSettings, PoolSettings,
};

use cluster::{ClusterRuntime, EndpointSpec, HostState, new_endpoint};
use policy::{Diags, PolicyAt};

/// The clusters of one generation, by host then port.
#[derive(Debug, Default)]
struct Snapshot {
    hosts: HashMap<Arc<str>, Box<[PortClusters]>>,
}

#[derive(Debug)]
struct PortClusters {
    port: u16,
    default: Arc<Cluster>,
    subsets: Box<[(Arc<str>, Arc<Cluster>)]>,
}

impl Snapshot {
    fn get(&self, host: &str, subset: Option<&str>, port: u16) -> Option<&Arc<Cluster>> {
        let host = host.strip_suffix('.').unwrap_or(host);
        let pc = self.hosts.get(host)?.iter().find(|p| p.port == port)?;
        match subset {
            None => Some(&pc.default),
            Some(s) => pc.subsets.iter().find(|(n, _)| &**n == s).map(|(_, c)| c),
        }
    }
}

/// Every cluster of the waypoint; cheap to read from any task.
#[derive(Debug, Default)]
pub struct Clusters {
    snapshot: ArcSwap<Snapshot>,
    /// The waypoint's namespace, for DestinationRule precedence and `exportTo`.
    namespace: Option<Arc<str>>,
    /// Serialises updates (each carries state over from the previous snapshot).
    update: Mutex<()>,
}

impl Clusters {
    /// Clusters without a proxy namespace: rules are chosen by the service's namespace first
    /// and `exportTo` is not checked.
    pub fn new() -> Clusters {
        Clusters::default()
    }

    /// Clusters for a waypoint running in `namespace`.
    pub fn for_namespace(namespace: &str) -> Clusters {
        Clusters { namespace: Some(namespace.into()), ..Default::default() }
    }

    /// The cluster for a Service host (FQDN), optional subset name and service port; `None`
    /// when the host, port or subset is unknown.
    pub fn get(&self, host: &str, subset: Option<&str>, port: u16) -> Option<Arc<Cluster>> {
        self.snapshot.load().get(host, subset, port).cloned()
    }

    /// Runs due outlier sweeps on every cluster (picks do this for their own cluster; a timer
    /// may call this so that idle clusters return hosts on time too).
    pub fn sweep(&self) {
        for pcs in self.snapshot.load().hosts.values() {
            for pc in pcs.iter() {
                pc.default.sweep();
                for (_, c) in pc.subsets.iter() {
                    c.sweep();
                }
            }
        }
    }

    /// Every cluster with its policy, endpoints and runtime state, sorted by host, port and
    /// subset (for `/config_dump` and debugging).
    pub fn dump(&self) -> serde_json::Value {
        let snap = self.snapshot.load();
        let mut all: Vec<&Arc<Cluster>> = snap
            .hosts
            .values()
            .flat_map(|pcs| pcs.iter())
            .flat_map(|pc| std::iter::once(&pc.default).chain(pc.subsets.iter().map(|(_, c)| c)))
            .collect();
        all.sort_by(|a, b| {
            let (a, b) = (a.key(), b.key());
            (&a.host, a.port, &a.subset).cmp(&(&b.host, b.port, &b.subset))
        });
        serde_json::Value::Array(all.into_iter().map(|c| c.dump()).collect())
    }

    /// Rebuilds from a new model, keeping per-endpoint runtime state (active requests,
    /// outlier ejections, consecutive error counts) of endpoints that still exist. Returns
    /// warnings about DestinationRule settings that cannot take effect.
    pub fn update(&self, model: &Model) -> Vec<Diagnostic> {
        let _g = self.update.lock().unwrap_or_else(|e| e.into_inner());
        let old = self.snapshot.load_full();
        let mut diags = Diags::default();
        let root = &*model.config().root_namespace;
        let mut hosts: HashMap<Arc<str>, Box<[PortClusters]>> = HashMap::new();
        for svc in model.services() {
            if svc.hostname.is_empty() || svc.ports.is_empty() || hosts.contains_key(&svc.hostname) {
                continue;
            }
            let rules = rules_for(model, svc, self.namespace.as_deref(), root, &mut diags);
            let mut ports = Vec::with_capacity(svc.ports.len());
            for (idx, sp) in svc.ports.iter().enumerate() {
                let build = |subset: Option<&Arc<str>>,
                             sub: Option<PolicyAt<'_>>,
                             labels: Option<&Labels>,
                             diags: &mut Diags| {
                    let key =
                        ClusterKey { host: svc.hostname.clone(), subset: subset.cloned(), port: sp.port };
                    let policy = policy::resolve(rules.top, sub, sp.port, diags);
                    let specs = endpoint_specs(svc, idx, labels);
                    let prev = old.get(&svc.hostname, subset.map(|s| &**s), sp.port);
                    build_cluster(key, policy, specs, prev)
                };
                let default = build(None, None, None, &mut diags);
                let subsets = rules
                    .subsets
                    .iter()
                    .map(|s| (s.name.clone(), build(Some(&s.name), s.policy, Some(&s.labels), &mut diags)))
                    .collect();
                ports.push(PortClusters { port: sp.port, default, subsets });
            }
            hosts.insert(svc.hostname.clone(), ports.into());
        }
        self.snapshot.store(Arc::new(Snapshot { hosts }));
        diags.list
    }
}

/// A subset as compiled for one host.
struct SubsetRule<'m> {
    name: Arc<str>,
    labels: Labels,
    policy: Option<PolicyAt<'m>>,
}

/// The rules in force for one host, merged.
struct Rules<'m> {
    top: Option<PolicyAt<'m>>,
    subsets: Vec<SubsetRule<'m>>,
}

fn exported_to(dr: &DestinationRuleSpec, dr_ns: &str, proxy_ns: Option<&str>) -> bool {
    let Some(p) = proxy_ns else { return true };
    dr.export_to.is_empty() || dr.export_to.iter().any(|e| e == "*" || e == p || (e == "." && dr_ns == p))
}

fn rules_for<'m>(
    model: &'m Model,
    svc: &'m Service,
    proxy_ns: Option<&str>,
    root: &str,
    diags: &mut Diags,
) -> Rules<'m> {
    let rank = |dr: &Sourced<DestinationRuleSpec>| {
        let ns = dr.0.namespace();
        let ns_rank = if Some(ns) == proxy_ns {
            0
        } else if ns == &*svc.namespace {
            1
        } else if ns == root {
            2
        } else {
            3
        };
        let host = &dr.0.spec.host;
        let host_rank = if host.starts_with('*') { usize::MAX - host.len() } else { 0 };
        (ns_rank, host_rank)
    };
    let candidates: Vec<&'m Sourced<DestinationRuleSpec>> = model
        .destination_rules_for_host(&svc.hostname)
        .filter(|dr| dr.0.spec.workload_selector.is_none())
        .filter(|dr| exported_to(&dr.0.spec, dr.0.namespace(), proxy_ns))
        .collect();
    let mut rules = Rules { top: None, subsets: Vec::new() };
    let Some(best) = candidates.iter().map(|dr| rank(dr)).min() else { return rules };
    for dr in candidates.into_iter().filter(|dr| rank(dr) == best) {
        if let Some(tp) = &dr.0.spec.traffic_policy {
            let at = PolicyAt { tp, dr, index: None };
            policy::lint(at, diags);
            match &rules.top {
                None => rules.top = Some(at),
                Some(first) => diags.warn(
                    dr,
                    "spec.trafficPolicy",
                    format!(
                        "ignored: DestinationRule {}/{} already sets the traffic policy of {}",
                        first.dr.0.namespace(),
                        first.dr.0.name(),
                        svc.hostname
                    ),
                ),
            }
        }
        for (i, s) in dr.0.spec.subsets.iter().enumerate() {
            if s.name.is_empty() {
                continue;
            }
            if rules.subsets.iter().any(|r| *r.name == *s.name) {
                diags.warn(
                    dr,
                    &format!("spec.subsets[{i}].name"),
                    format!(
                        "subset {:?} of {} is already defined by another rule; ignored",
                        s.name, svc.hostname
                    ),
                );
                continue;
            }
            let policy = s.traffic_policy.as_ref().map(|tp| PolicyAt { tp, dr, index: Some(i) });
            if let Some(at) = policy {
                policy::lint(at, diags);
            }
            rules.subsets.push(subset_rule(s, policy));
        }
    }
    rules
}

fn subset_rule<'m>(s: &Subset, policy: Option<PolicyAt<'m>>) -> SubsetRule<'m> {
    SubsetRule {
        name: s.name.as_str().into(),
        labels: Labels::from_pairs(s.labels.iter().map(|(k, v)| (k.as_str(), v.as_str()))),
        policy,
    }
}

/// Ready endpoints serving service port index `idx` (the model resolved named target ports
/// against each pod's container ports; 0 means the pod lacks it), matching `labels`.
fn endpoint_specs(svc: &Service, idx: usize, labels: Option<&Labels>) -> Vec<EndpointSpec> {
    svc.endpoints
        .iter()
        .filter(|e| e.ready && labels.is_none_or(|l| e.labels.matches(l)))
        .filter_map(|e| {
            Some(EndpointSpec {
                addr: SocketAddr::new(e.ip, e.port_at(idx)?),
                workload: e.workload.clone(),
                identity: e.identity.clone(),
                labels: e.labels.clone(),
                weight: e.weight,
            })
        })
        .collect()
}

/// The cluster for a new generation: the previous one when nothing changed, else a new one
/// that takes over the previous runtime state and the state of endpoints that remain.
fn build_cluster(
    key: ClusterKey,
    policy: ClusterPolicy,
    specs: Vec<EndpointSpec>,
    prev: Option<&Arc<Cluster>>,
) -> Arc<Cluster> {
    if let Some(p) = prev
        && *p.policy() == policy
        && p.endpoints().len() == specs.len()
        && p.endpoints().iter().zip(&specs).all(|(e, s)| e.same_as(s))
    {
        return p.clone();
    }
    let old_states: HashMap<SocketAddr, &Arc<HostState>> =
        prev.map(|p| p.endpoints().iter().map(|e| (e.addr, &e.state)).collect()).unwrap_or_default();
    let mut seen = std::collections::HashSet::new();
    let endpoints: Box<[Arc<Endpoint>]> = specs
        .into_iter()
        // A pod listed twice (two slices) is one endpoint.
        .filter(|s| seen.insert(s.addr))
        .map(|s| {
            let state = old_states.get(&s.addr).map(|st| (*st).clone()).unwrap_or_default();
            Arc::new(new_endpoint(s, state))
        })
        .collect();
    let runtime = match prev {
        Some(p) => p.runtime.clone(),
        None => Arc::new(ClusterRuntime::new(
            policy.outlier.as_ref().map(|o| o.interval).unwrap_or(policy::DEFAULT_INTERVAL),
        )),
    };
    Arc::new(Cluster::new(key, policy, endpoints, runtime))
}
