//! The immutable model snapshot and its lookups. Built by [`crate::translate`]; read by the
//! proxies, the CA and `meshctl` through an `Arc<Model>` that never changes once published.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use mesh_api::gateway::{GrpcRouteSpec, HttpRouteSpec, KubeGatewaySpec};
use mesh_api::istio::networking::{
    DestinationRuleSpec, EnvoyFilterSpec, GatewaySpec, SidecarSpec, VirtualServiceSpec,
};
use mesh_api::{Object, Origin, Resource, SpiffeId};

use crate::config::MeshConfig;
use crate::policy::{ParentKey, Policy, PolicyIndex, PolicyKind};
use crate::service::Service;
use crate::workload::{NamespaceInfo, PodPhase, WaypointFor, WaypointRef, Workload};

/// A typed object with where it came from.
pub type Sourced<T> = (Arc<Resource<T>>, Origin);

/// One snapshot of the mesh: workloads, services, policies and routes, with their indexes.
#[derive(Debug, Default)]
pub struct Model {
    pub(crate) generation: u64,
    pub(crate) config: MeshConfig,
    pub(crate) namespaces: HashMap<Arc<str>, NamespaceInfo>,
    /// Sorted by (namespace, name).
    pub(crate) workloads: Box<[Arc<Workload>]>,
    pub(crate) workload_by_ip: HashMap<IpAddr, u32>,
    pub(crate) workloads_by_node: HashMap<Arc<str>, Box<[u32]>>,
    /// Sorted by (namespace, name, hostname).
    pub(crate) services: Box<[Arc<Service>]>,
    pub(crate) service_by_vip: HashMap<IpAddr, u32>,
    pub(crate) service_by_host: HashMap<Arc<str>, u32>,
    /// `*.suffix` ServiceEntry hosts: (suffix with its leading dot, service).
    pub(crate) wildcard_services: Box<[(Arc<str>, u32)]>,
    pub(crate) policies: PolicyIndex,
    pub(crate) virtual_services: Box<[Sourced<VirtualServiceSpec>]>,
    pub(crate) vs_by_host: HostIndex,
    pub(crate) destination_rules: Box<[Sourced<DestinationRuleSpec>]>,
    pub(crate) dr_by_host: HostIndex,
    pub(crate) http_routes: Box<[Sourced<HttpRouteSpec>]>,
    pub(crate) grpc_routes: Box<[Sourced<GrpcRouteSpec>]>,
    /// Parent → (HTTP route indexes, gRPC route indexes).
    pub(crate) routes_by_parent: HashMap<ParentKey, (Vec<u32>, Vec<u32>)>,
    pub(crate) gateways: Box<[Sourced<GatewaySpec>]>,
    pub(crate) kube_gateways: Box<[Sourced<KubeGatewaySpec>]>,
    /// Gateways whose `istio.io/waypoint-for` is not the default `service`.
    pub(crate) waypoint_for: HashMap<WaypointRef, WaypointFor>,
    pub(crate) sidecars: Box<[Sourced<SidecarSpec>]>,
    /// Sorted by (namespace, name).
    pub(crate) envoy_filters: Box<[Sourced<EnvoyFilterSpec>]>,
    pub(crate) objects: Box<[(Object, Origin)]>,
}

impl Model {
    /// An empty model (before the first load).
    pub fn empty(config: MeshConfig) -> Self {
        Model { config, ..Default::default() }
    }

    /// Bumped by the store on every published snapshot (0 for a model built directly).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    pub fn config(&self) -> &MeshConfig {
        &self.config
    }

    /// Every object in force, with its origin (for `/config_dump` and diagnostics).
    pub fn objects(&self) -> &[(Object, Origin)] {
        &self.objects
    }

    // ---- namespaces and workloads ----

    /// A namespace, defined by a Namespace object or implied by the objects in it.
    pub fn namespace(&self, name: &str) -> Option<&NamespaceInfo> {
        self.namespaces.get(name)
    }

    pub fn namespaces(&self) -> impl Iterator<Item = &NamespaceInfo> {
        self.namespaces.values()
    }

    /// All workloads, sorted by namespace and name (including pods without addresses).
    pub fn workloads(&self) -> &[Arc<Workload>] {
        &self.workloads
    }

    /// The Running pod that owns `ip`.
    pub fn workload_by_ip(&self, ip: IpAddr) -> Option<&Arc<Workload>> {
        self.workload_by_ip.get(&ip).map(|i| &self.workloads[*i as usize])
    }

    /// A pod by namespace and name, addressable or not.
    pub fn workload(&self, namespace: &str, name: &str) -> Option<&Arc<Workload>> {
        self.workloads
            .binary_search_by(|w| (&*w.namespace, &*w.name).cmp(&(namespace, name)))
            .ok()
            .map(|i| &self.workloads[i])
    }

    /// The pods of one namespace.
    pub fn workloads_in_namespace(&self, namespace: &str) -> &[Arc<Workload>] {
        let start = self.workloads.partition_point(|w| &*w.namespace < namespace);
        let end = start + self.workloads[start..].partition_point(|w| &*w.namespace == namespace);
        &self.workloads[start..end]
    }

    /// The pods placed on `node` (`spec.nodeName`), in every phase.
    pub fn workloads_on_node(&self, node: &str) -> impl Iterator<Item = &Arc<Workload>> {
        self.workloads_by_node.get(node).into_iter().flatten().map(|i| &self.workloads[*i as usize])
    }

    /// Whether a pod on `node` that has not finished (Pending or Running: a starting pod needs
    /// its certificate) has identity `id`: what that node's ztunnel may obtain from the CA.
    pub fn node_has_identity(&self, node: &str, id: &SpiffeId) -> bool {
        self.workloads_on_node(node)
            .any(|w| !matches!(w.phase, PodPhase::Succeeded | PodPhase::Failed) && *w.identity == *id)
    }

    // ---- services ----

    pub fn services(&self) -> &[Arc<Service>] {
        &self.services
    }

    pub fn service_by_vip(&self, ip: IpAddr) -> Option<&Arc<Service>> {
        self.service_by_vip.get(&ip).map(|i| &self.services[*i as usize])
    }

    /// A Kubernetes Service by namespace and name.
    pub fn service(&self, namespace: &str, name: &str) -> Option<&Arc<Service>> {
        let start = self.services.partition_point(|s| (&*s.namespace, &*s.name) < (namespace, name));
        self.services[start..]
            .iter()
            .take_while(|s| &*s.namespace == namespace && &*s.name == name)
            .find(|s| s.is_kubernetes())
    }

    /// A service by a host name that needs no namespace context: the FQDN
    /// (`name.ns.svc.<suffix>`), `name.ns.svc`, `name.ns`, or a ServiceEntry host (wildcards
    /// included). A trailing dot is ignored.
    pub fn service_by_host(&self, host: &str) -> Option<&Arc<Service>> {
        let host = host.strip_suffix('.').unwrap_or(host);
        if let Some(i) = self.service_by_host.get(host) {
            return Some(&self.services[*i as usize]);
        }
        let suffix = &self.config.domain_suffix;
        let expanded = if host.ends_with(".svc") {
            Some(format!("{host}.{suffix}"))
        } else if host.matches('.').count() == 1 {
            Some(format!("{host}.svc.{suffix}"))
        } else {
            None
        };
        if let Some(i) = expanded.and_then(|h| self.service_by_host.get(h.as_str())) {
            return Some(&self.services[*i as usize]);
        }
        self.wildcard_services
            .iter()
            .filter(|(sfx, _)| host.ends_with(&**sfx))
            .max_by_key(|(sfx, _)| sfx.len())
            .map(|(_, i)| &self.services[*i as usize])
    }

    /// A service by a host name as written in `from_namespace`: short names (`reviews`) are
    /// that namespace's Services; longer forms as [`Model::service_by_host`].
    pub fn resolve_host(&self, host: &str, from_namespace: &str) -> Option<&Arc<Service>> {
        let host = host.strip_suffix('.').unwrap_or(host);
        if !host.contains('.') {
            let fqdn = format!("{host}.{from_namespace}.svc.{}", self.config.domain_suffix);
            return self.service_by_host.get(fqdn.as_str()).map(|i| &self.services[*i as usize]);
        }
        self.service_by_host(host)
    }

    /// The canonical form of a host written in `namespace`: the service's FQDN when it names
    /// one, the short-name expansion otherwise, else the host as written (lower-cased).
    pub fn canonical_host(&self, host: &str, namespace: &str) -> String {
        canonical_host(host, namespace, &self.config, |h, ns| {
            self.resolve_host(h, ns).map(|s| s.hostname.clone())
        })
    }

    // ---- policies ----

    /// Policies of `kind` that apply to `workload`: mesh-wide ones (root namespace) first,
    /// then the workload's namespace, each filtered by selector. Targeted policies
    /// (`targetRefs`) are not included; see [`Model::policies_targeting`].
    pub fn policies_for<'a>(
        &'a self,
        kind: PolicyKind,
        workload: &'a Workload,
    ) -> impl Iterator<Item = &'a Policy> {
        let root = &*self.config.root_namespace;
        let root_policies =
            if *workload.namespace != *root { self.policies.in_namespace(kind, root) } else { &[] };
        root_policies
            .iter()
            .chain(self.policies.in_namespace(kind, &workload.namespace))
            .filter(move |p| p.selects(workload, root))
    }

    /// All policies of `kind` in `namespace`.
    pub fn policies_in_namespace(&self, kind: PolicyKind, namespace: &str) -> &[Policy] {
        self.policies.in_namespace(kind, namespace)
    }

    /// Policies of `kind` whose `targetRef(s)` name the object `target_kind` `namespace/name`
    /// (e.g. a waypoint's `Gateway`, a `Service`).
    pub fn policies_targeting<'a>(
        &'a self,
        kind: PolicyKind,
        target_kind: &'a str,
        namespace: &'a str,
        name: &'a str,
    ) -> impl Iterator<Item = &'a Policy> {
        self.policies.in_namespace(kind, namespace).iter().filter(move |p| {
            p.target_refs
                .iter()
                .any(|t| *t.kind == *target_kind && *t.namespace == *namespace && *t.name == *name)
        })
    }

    /// Every indexed policy, sorted by kind, namespace and name.
    pub fn policies(&self) -> &[Policy] {
        &self.policies.policies
    }

    // ---- routes ----

    /// VirtualServices listing `host` (use [`Model::canonical_host`] forms: FQDNs for
    /// services; exact external hosts; wildcard entries like `*.example.com` match too).
    pub fn virtual_services_for_host<'a>(
        &'a self,
        host: &'a str,
    ) -> impl Iterator<Item = &'a Sourced<VirtualServiceSpec>> {
        self.vs_by_host.get(host).map(|i| &self.virtual_services[i as usize])
    }

    pub fn virtual_services(&self) -> &[Sourced<VirtualServiceSpec>] {
        &self.virtual_services
    }

    /// DestinationRules for `host` (same host forms as VirtualServices).
    pub fn destination_rules_for_host<'a>(
        &'a self,
        host: &'a str,
    ) -> impl Iterator<Item = &'a Sourced<DestinationRuleSpec>> {
        self.dr_by_host.get(host).map(|i| &self.destination_rules[i as usize])
    }

    pub fn destination_rules(&self) -> &[Sourced<DestinationRuleSpec>] {
        &self.destination_rules
    }

    /// HTTPRoutes attached to a parent (a Service for mesh routing, or a Gateway).
    pub fn http_routes_for(&self, parent: &ParentKey) -> impl Iterator<Item = &Sourced<HttpRouteSpec>> {
        self.routes_by_parent
            .get(parent)
            .into_iter()
            .flat_map(|(h, _)| h)
            .map(|i| &self.http_routes[*i as usize])
    }

    /// GRPCRoutes attached to a parent.
    pub fn grpc_routes_for(&self, parent: &ParentKey) -> impl Iterator<Item = &Sourced<GrpcRouteSpec>> {
        self.routes_by_parent
            .get(parent)
            .into_iter()
            .flat_map(|(_, g)| g)
            .map(|i| &self.grpc_routes[*i as usize])
    }

    pub fn http_routes(&self) -> &[Sourced<HttpRouteSpec>] {
        &self.http_routes
    }

    pub fn grpc_routes(&self) -> &[Sourced<GrpcRouteSpec>] {
        &self.grpc_routes
    }

    /// Istio Gateways.
    pub fn gateways(&self) -> &[Sourced<GatewaySpec>] {
        &self.gateways
    }

    /// Gateway API Gateways (ingress gateways and waypoints).
    pub fn kube_gateways(&self) -> &[Sourced<KubeGatewaySpec>] {
        &self.kube_gateways
    }

    /// A Gateway API Gateway by namespace/name (e.g. a waypoint named by `istio.io/use-waypoint`).
    pub fn kube_gateway(&self, namespace: &str, name: &str) -> Option<&Sourced<KubeGatewaySpec>> {
        self.kube_gateways.iter().find(|(g, _)| {
            g.metadata.namespace.as_deref() == Some(namespace) && g.metadata.name.as_deref() == Some(name)
        })
    }

    pub fn sidecars(&self) -> &[Sourced<SidecarSpec>] {
        &self.sidecars
    }

    /// EnvoyFilters of one namespace, by name (the root namespace's apply mesh-wide).
    pub fn envoy_filters_in_namespace(&self, namespace: &str) -> &[Sourced<EnvoyFilterSpec>] {
        let start = self.envoy_filters.partition_point(|(e, _)| e.namespace() < namespace);
        let end = start + self.envoy_filters[start..].partition_point(|(e, _)| e.namespace() == namespace);
        &self.envoy_filters[start..end]
    }

    /// Which traffic a waypoint takes (`istio.io/waypoint-for` on its Gateway; `service` when
    /// the Gateway does not say, or is not in the model).
    pub fn waypoint_for(&self, waypoint: &WaypointRef) -> WaypointFor {
        self.waypoint_for.get(waypoint).copied().unwrap_or_default()
    }

    /// The Service that fronts a waypoint (Istio gives a waypoint Gateway a Service of the
    /// same name, whose VIP is where captured traffic is sent).
    pub fn waypoint_service(&self, waypoint: &WaypointRef) -> Option<&Arc<Service>> {
        self.service(&waypoint.namespace, &waypoint.name)
    }

    /// A JSON view of the snapshot for `/config_dump`: generation, namespaces, workloads,
    /// services, the policy index and every object (full spec) with its origin.
    pub fn dump(&self) -> serde_json::Value {
        let objects: Vec<serde_json::Value> = self
            .objects
            .iter()
            .map(|(o, origin)| {
                serde_json::json!({ "object": o.object_ref(), "origin": origin, "spec": object_json(o) })
            })
            .collect();
        let mut namespaces: Vec<&NamespaceInfo> = self.namespaces.values().collect();
        namespaces.sort_by(|a, b| a.name.cmp(&b.name));
        serde_json::json!({
            "generation": self.generation,
            "namespaces": namespaces,
            "workloads": self.workloads,
            "services": self.services,
            "policies": self.policies.policies,
            "objects": objects,
        })
    }
}

impl Service {
    /// Whether this is a Kubernetes Service (not a ServiceEntry host).
    pub fn is_kubernetes(&self) -> bool {
        matches!(self.source, crate::service::ServiceSource::Kubernetes { .. })
    }
}

/// The object as JSON (core objects whole, CRDs as their envelope with spec).
fn object_json(o: &Object) -> serde_json::Value {
    let v = match o {
        Object::Namespace(x) => serde_json::to_value(&**x),
        Object::Pod(x) => serde_json::to_value(&**x),
        Object::Service(x) => serde_json::to_value(&**x),
        Object::EndpointSlice(x) => serde_json::to_value(&**x),
        Object::ServiceAccount(x) => serde_json::to_value(&**x),
        Object::VirtualService(x) => serde_json::to_value(&**x),
        Object::DestinationRule(x) => serde_json::to_value(&**x),
        Object::ServiceEntry(x) => serde_json::to_value(&**x),
        Object::Gateway(x) => serde_json::to_value(&**x),
        Object::Sidecar(x) => serde_json::to_value(&**x),
        Object::PeerAuthentication(x) => serde_json::to_value(&**x),
        Object::AuthorizationPolicy(x) => serde_json::to_value(&**x),
        Object::RequestAuthentication(x) => serde_json::to_value(&**x),
        Object::Telemetry(x) => serde_json::to_value(&**x),
        Object::HttpRoute(x) => serde_json::to_value(&**x),
        Object::GrpcRoute(x) => serde_json::to_value(&**x),
        Object::KubeGateway(x) => serde_json::to_value(&**x),
        Object::EnvoyFilter(x) => serde_json::to_value(&**x),
    };
    v.unwrap_or_else(|e| serde_json::Value::String(format!("not serializable: {e}")))
}

/// Positions in one of the model's object lists.
type Indexes = Box<[u32]>;

/// Objects by host: exact hosts hashed, wildcard hosts (`*.example.com`, `*`) scanned (few).
#[derive(Debug, Default)]
pub(crate) struct HostIndex {
    pub(crate) exact: HashMap<Arc<str>, Indexes>,
    pub(crate) wildcard: Box<[(Arc<str>, Indexes)]>,
}

impl HostIndex {
    pub(crate) fn build(entries: Vec<(Arc<str>, u32)>) -> Self {
        let mut exact: HashMap<Arc<str>, Vec<u32>> = HashMap::new();
        let mut wildcard: HashMap<Arc<str>, Vec<u32>> = HashMap::new();
        for (host, idx) in entries {
            let map = if host.starts_with('*') { &mut wildcard } else { &mut exact };
            let v = map.entry(host).or_default();
            if !v.contains(&idx) {
                v.push(idx);
            }
        }
        let mut wildcard: Vec<_> = wildcard.into_iter().map(|(k, v)| (k, v.into_boxed_slice())).collect();
        // Most specific (longest) wildcard first.
        wildcard.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.0.cmp(&b.0)));
        HostIndex {
            exact: exact.into_iter().map(|(k, v)| (k, v.into_boxed_slice())).collect(),
            wildcard: wildcard.into(),
        }
    }

    /// Exact matches first, then wildcard matches from the most specific.
    fn get<'a>(&'a self, host: &'a str) -> impl Iterator<Item = u32> + 'a {
        let exact = self.exact.get(host).into_iter().flatten().copied();
        let wild = self
            .wildcard
            .iter()
            .filter(move |(k, _)| **k != *host && host.ends_with(&k[1..]))
            .flat_map(|(_, v)| v.iter().copied());
        exact.chain(wild)
    }
}

pub(crate) fn canonical_host(
    host: &str,
    namespace: &str,
    config: &MeshConfig,
    resolve: impl Fn(&str, &str) -> Option<Arc<str>>,
) -> String {
    let host = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
    if let Some(h) = resolve(&host, namespace) {
        return h.to_string();
    }
    if !host.contains('.') && !host.contains('*') {
        return format!("{host}.{namespace}.svc.{}", config.domain_suffix);
    }
    host
}
