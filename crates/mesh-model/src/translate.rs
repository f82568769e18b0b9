//! Translation of a set of objects into a [`Model`]: namespaces, workloads, services and
//! their endpoints, policies and routes, with warnings for what cannot take effect.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use k8s_openapi::api::discovery::v1::EndpointSlice;
use mesh_api::{Diagnostic, Kind, Object, Origin};

use crate::config::MeshConfig;
use crate::intern::{Interner, Labels};
use crate::model::{HostIndex, Model, canonical_host};
use crate::policy::{ParentKey, PolicyIndex, parent_keys, policy_of};
use crate::service::{self, EndpointsFrom, SERVICE_NAME_LABEL, Service};
use crate::workload::{
    NamespaceInfo, PodError, WAYPOINT_FOR_LABEL, WaypointFor, WaypointRef, Workload, namespace_from_labels,
    namespace_info, workload_from_pod,
};

/// Builds a model from the objects in force. Objects must have distinct keys (the store and
/// `load_paths` keep the first definition). The diagnostics are warnings and errors about
/// what could not take effect (e.g. a Service port that is not a port number), located at
/// each object's origin.
pub fn translate(objects: &[(Object, Origin)], config: &MeshConfig) -> (Model, Vec<Diagnostic>) {
    let mut t = Translator { i: Interner::default(), diags: Vec::new(), namespaces: HashMap::new() };

    for (o, _) in objects {
        if let Object::Namespace(ns) = o
            && let Some(info) = namespace_info(ns, &mut t.i)
        {
            t.namespaces.insert(info.name.clone(), info);
        }
    }

    // Workloads, sorted by (namespace, name) so per-namespace slices are contiguous.
    let mut pods: Vec<(Arc<Workload>, usize)> = Vec::new();
    for (idx, (o, origin)) in objects.iter().enumerate() {
        let Object::Pod(pod) = o else { continue };
        let ns = t.namespace(pod.metadata.namespace.as_deref());
        match workload_from_pod(pod, &ns, config, &mut t.i) {
            Ok(w) => pods.push((Arc::new(w), idx)),
            Err(PodError::NoName) => {}
            Err(PodError::Identity(msg)) => t
                .diags
                .push(Diagnostic::error(o.object_ref(), "spec.serviceAccountName", msg).at(origin.clone())),
        }
    }
    pods.sort_by(|a, b| (&a.0.namespace, &a.0.name).cmp(&(&b.0.namespace, &b.0.name)));
    let mut workload_by_ip: HashMap<IpAddr, u32> = HashMap::new();
    let mut by_node: HashMap<Arc<str>, Vec<u32>> = HashMap::new();
    for (idx, (w, obj_idx)) in pods.iter().enumerate() {
        for ip in &w.ips {
            if let Some(prev) = workload_by_ip.get(ip) {
                let other = &pods[*prev as usize].0;
                let (o, origin) = &objects[*obj_idx];
                t.diags.push(
                    Diagnostic::warning(
                        o.object_ref(),
                        "status.podIP",
                        format!(
                            "IP {ip} is also used by pod {}/{}, which keeps it",
                            other.namespace, other.name
                        ),
                    )
                    .at(origin.clone()),
                );
            } else {
                workload_by_ip.insert(*ip, idx as u32);
            }
        }
        if let Some(node) = &w.node {
            by_node.entry(node.clone()).or_default().push(idx as u32);
        }
    }
    let workloads: Box<[Arc<Workload>]> = pods.into_iter().map(|(w, _)| w).collect();
    let ns_workloads = |ns: &str| -> &[Arc<Workload>] {
        let start = workloads.partition_point(|w| &*w.namespace < ns);
        let end = start + workloads[start..].partition_point(|w| &*w.namespace == ns);
        &workloads[start..end]
    };
    let lookup = |ip: IpAddr| workload_by_ip.get(&ip).map(|i| workloads[*i as usize].clone());

    // EndpointSlices by (namespace, service name).
    let mut slices: HashMap<(String, String), Vec<(&EndpointSlice, usize)>> = HashMap::new();
    for (idx, (o, origin)) in objects.iter().enumerate() {
        let Object::EndpointSlice(s) = o else { continue };
        match s.metadata.labels.as_ref().and_then(|l| l.get(SERVICE_NAME_LABEL)) {
            Some(svc) => slices
                .entry((s.metadata.namespace.clone().unwrap_or_else(|| "default".into()), svc.clone()))
                .or_default()
                .push((s, idx)),
            None => t.diags.push(
                Diagnostic::warning(
                    o.object_ref(),
                    "metadata.labels",
                    format!("no {SERVICE_NAME_LABEL} label: the slice belongs to no Service and is ignored"),
                )
                .at(origin.clone()),
            ),
        }
    }

    let mut services: Vec<Service> = Vec::new();
    for (o, origin) in objects {
        match o {
            Object::Service(svc) => {
                let ns = t.namespace(svc.metadata.namespace.as_deref());
                let Some(draft) = service::kube_service(svc, &ns, config, &mut t.i) else { continue };
                t.warn(o, origin, draft.warnings);
                let mut s = draft.service;
                let key = (s.namespace.to_string(), s.name.to_string());
                if let Some(list) = slices.remove(&key) {
                    let list: Vec<&EndpointSlice> = list.into_iter().map(|(s, _)| s).collect();
                    s.endpoints = service::endpoints_from_slices(&s, &list, &lookup).into();
                    s.endpoints_from = EndpointsFrom::EndpointSlices;
                } else if s.selector.is_some() {
                    s.endpoints = service::endpoints_from_selector(&s, ns_workloads(&s.namespace)).into();
                    s.endpoints_from = EndpointsFrom::Selector;
                }
                services.push(s);
            }
            Object::ServiceEntry(se) => {
                let ns = t.namespace(se.metadata.namespace.as_deref());
                let labels = t.i.labels(se.metadata.labels.as_ref());
                let name = se.metadata.name.as_deref().unwrap_or_default();
                let draft = service::service_entry(
                    name,
                    &se.spec,
                    labels,
                    &ns,
                    ns_workloads(&ns.name),
                    config,
                    &mut t.i,
                );
                t.warn(o, origin, draft.warnings);
                for host in &se.spec.hosts {
                    let mut s = draft.service.clone();
                    s.hostname = t.i.str(&host.to_ascii_lowercase());
                    services.push(s);
                }
            }
            _ => {}
        }
    }
    for list in slices.into_values() {
        for (s, idx) in list {
            let (o, origin) = &objects[idx];
            let svc = s
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(SERVICE_NAME_LABEL))
                .cloned()
                .unwrap_or_default();
            t.diags.push(
                Diagnostic::warning(
                    o.object_ref(),
                    format!("metadata.labels.{SERVICE_NAME_LABEL}"),
                    format!("Service {svc:?} does not exist in this namespace; the slice is ignored"),
                )
                .at(origin.clone()),
            );
        }
    }
    services.sort_by(|a, b| (&a.namespace, &a.name, &a.hostname).cmp(&(&b.namespace, &b.name, &b.hostname)));
    let services: Box<[Arc<Service>]> = services.into_iter().map(Arc::new).collect();
    let mut service_by_vip: HashMap<IpAddr, u32> = HashMap::new();
    let mut service_by_host: HashMap<Arc<str>, u32> = HashMap::new();
    let mut wildcard_services = Vec::new();
    // Kubernetes Services first, so a ServiceEntry cannot shadow a Service's host or VIP.
    let order = (0..services.len()).filter(|i| services[*i].is_kubernetes());
    let order = order.chain((0..services.len()).filter(|i| !services[*i].is_kubernetes()));
    for idx in order.collect::<Vec<_>>() {
        let s = &services[idx];
        for vip in &s.vips {
            service_by_vip.entry(*vip).or_insert(idx as u32);
        }
        if let Some(suffix) = s.hostname.strip_prefix('*') {
            wildcard_services.push((t.i.str(suffix), idx as u32));
        } else {
            service_by_host.entry(s.hostname.clone()).or_insert(idx as u32);
        }
    }

    let mut model = Model {
        generation: 0,
        config: config.clone(),
        workloads,
        workload_by_ip,
        workloads_by_node: by_node.into_iter().map(|(k, v)| (k, v.into_boxed_slice())).collect(),
        services,
        service_by_vip,
        service_by_host,
        wildcard_services: wildcard_services.into(),
        ..Default::default()
    };

    // Policies and routes.
    let mut policies = Vec::new();
    let (mut vs, mut vs_hosts, mut dr, mut dr_hosts) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut http, mut grpc) = (Vec::new(), Vec::new());
    let mut routes_by_parent: HashMap<ParentKey, (Vec<u32>, Vec<u32>)> = HashMap::new();
    let (mut gateways, mut kube_gateways, mut sidecars) = (Vec::new(), Vec::new(), Vec::new());
    let mut envoy_filters = Vec::new();
    let resolve = |m: &Model, h: &str, ns: &str| {
        canonical_host(h, ns, config, |h, ns| m.resolve_host(h, ns).map(|s| s.hostname.clone()))
    };
    for (o, origin) in objects {
        if let Some(p) = policy_of(o, origin, &config.root_namespace, &mut t.i) {
            policies.push(p);
            continue;
        }
        match o {
            Object::VirtualService(r) => {
                let ns = r.metadata.namespace.as_deref().unwrap_or("default");
                for h in &r.spec.hosts {
                    vs_hosts.push((t.i.str(&resolve(&model, h, ns)), vs.len() as u32));
                }
                vs.push((r.clone(), origin.clone()));
            }
            Object::DestinationRule(r) => {
                let ns = r.metadata.namespace.as_deref().unwrap_or("default");
                if !r.spec.host.is_empty() {
                    dr_hosts.push((t.i.str(&resolve(&model, &r.spec.host, ns)), dr.len() as u32));
                }
                dr.push((r.clone(), origin.clone()));
            }
            Object::HttpRoute(r) => {
                for k in parent_keys(o, &mut t.i) {
                    routes_by_parent.entry(k).or_default().0.push(http.len() as u32);
                }
                http.push((r.clone(), origin.clone()));
            }
            Object::GrpcRoute(r) => {
                for k in parent_keys(o, &mut t.i) {
                    routes_by_parent.entry(k).or_default().1.push(grpc.len() as u32);
                }
                grpc.push((r.clone(), origin.clone()));
            }
            Object::Gateway(r) => gateways.push((r.clone(), origin.clone())),
            Object::KubeGateway(r) => kube_gateways.push((r.clone(), origin.clone())),
            Object::Sidecar(r) => sidecars.push((r.clone(), origin.clone())),
            Object::EnvoyFilter(r) => envoy_filters.push((r.clone(), origin.clone())),
            _ => {}
        }
    }
    // Every namespace some object lives in exists in the model, labelled or not.
    for (o, _) in objects {
        let key = o.key();
        if o.kind() != Kind::Namespace && !key.namespace.is_empty() {
            t.namespace(Some(&key.namespace));
        }
    }
    model.policies = PolicyIndex::build(policies);
    model.virtual_services = vs.into();
    model.vs_by_host = HostIndex::build(vs_hosts);
    model.destination_rules = dr.into();
    model.dr_by_host = HostIndex::build(dr_hosts);
    model.http_routes = http.into();
    model.grpc_routes = grpc.into();
    model.routes_by_parent = routes_by_parent;
    model.gateways = gateways.into();
    for (g, _) in &kube_gateways {
        let value = g.metadata.labels.as_ref().and_then(|l| l.get(WAYPOINT_FOR_LABEL));
        let takes = WaypointFor::from_label(value.map(String::as_str));
        if let (WaypointFor::Workload | WaypointFor::All | WaypointFor::None, Some(ns), Some(name)) =
            (takes, g.metadata.namespace.as_deref(), g.metadata.name.as_deref())
        {
            model.waypoint_for.insert(WaypointRef { namespace: t.i.str(ns), name: t.i.str(name) }, takes);
        }
    }
    model.kube_gateways = kube_gateways.into();
    model.sidecars = sidecars.into();
    envoy_filters.sort_by(|(a, _), (b, _)| (a.namespace(), a.name()).cmp(&(b.namespace(), b.name())));
    model.envoy_filters = envoy_filters.into();
    model.objects = objects.into();
    model.namespaces = t.namespaces;
    (model, t.diags)
}

struct Translator {
    i: Interner,
    diags: Vec<Diagnostic>,
    namespaces: HashMap<Arc<str>, NamespaceInfo>,
}

impl Translator {
    /// The namespace `name` (default `default`), created without labels when no Namespace
    /// object defines it.
    fn namespace(&mut self, name: Option<&str>) -> NamespaceInfo {
        let name = name.filter(|n| !n.is_empty()).unwrap_or("default");
        if let Some(ns) = self.namespaces.get(name) {
            return ns.clone();
        }
        let name = self.i.str(name);
        let info = namespace_from_labels(name.clone(), Labels::default(), false, &mut self.i);
        self.namespaces.insert(name, info.clone());
        info
    }

    fn warn(&mut self, o: &Object, origin: &Origin, warnings: Vec<(String, String)>) {
        for (field, msg) in warnings {
            self.diags.push(Diagnostic::warning(o.object_ref(), field, msg).at(origin.clone()));
        }
    }
}
