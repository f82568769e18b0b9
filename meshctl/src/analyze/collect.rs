//! Gathers [`Facts`] from the typed objects in force in a model: the only place that walks
//! their specs, and where the field paths of references are spelled.

use std::collections::BTreeMap;

use mesh_api::gateway::{HttpBackendRef, ParentReference};
use mesh_api::istio::networking::VirtualServiceSpec;
use mesh_api::{Destination, Object, PolicyTargetReference, WorkloadSelector};
use mesh_model::Model;

use super::facts::{
    AttachKind, AttachRef, BackendKind, BackendRef, DestinationRef, Facts, PeerAuthFacts, PodFacts,
    SelectorRef,
};

/// Facts of the objects in force in `model`.
pub(super) fn facts(model: &Model) -> Facts {
    let mut f = Facts::new(model.config().root_namespace.clone());
    for (object, origin) in model.objects() {
        let subject = f.subject(object.object_ref(), origin.clone());
        let ns = object.namespace().to_string();
        match object {
            Object::Namespace(_) => {
                f.namespaces.insert(object.name().to_string());
            }
            Object::Pod(_) => f.pods.push(PodFacts { namespace: ns, labels: object.labels().clone() }),
            Object::Service(_) => {
                f.services.insert((ns, object.name().to_string()));
            }
            Object::ServiceEntry(se) => {
                f.service_entries.insert((ns.clone(), object.name().to_string()));
                if let Some(sel) = &se.spec.workload_selector {
                    selector(&mut f, subject, &ns, "spec.workloadSelector.labels", &sel.labels);
                }
            }
            Object::KubeGateway(_) => {
                f.gateways.insert((ns, object.name().to_string()));
            }
            Object::DestinationRule(dr) => {
                if let Some(sel) = &dr.spec.workload_selector {
                    selector(&mut f, subject, &ns, "spec.workloadSelector.matchLabels", &sel.match_labels);
                }
            }
            Object::VirtualService(vs) => virtual_service(&mut f, subject, &ns, &vs.spec),
            Object::HttpRoute(route) => {
                parent_refs(&mut f, subject, &ns, &route.spec.parent_refs);
                for (i, rule) in route.spec.rules.iter().enumerate() {
                    backend_refs(&mut f, subject, &ns, &format!("spec.rules[{i}]"), &rule.backend_refs);
                }
            }
            Object::GrpcRoute(route) => {
                parent_refs(&mut f, subject, &ns, &route.spec.parent_refs);
                for (i, rule) in route.spec.rules.iter().enumerate() {
                    backend_refs(&mut f, subject, &ns, &format!("spec.rules[{i}]"), &rule.backend_refs);
                }
            }
            Object::Sidecar(sc) => {
                if let Some(sel) = &sc.spec.workload_selector {
                    selector(&mut f, subject, &ns, "spec.workloadSelector.labels", &sel.labels);
                }
            }
            Object::PeerAuthentication(pa) => {
                match_labels(&mut f, subject, &ns, pa.spec.selector.as_ref());
                f.peer_auths.push(PeerAuthFacts {
                    subject,
                    namespace: ns,
                    name: object.name().to_string(),
                    selector: pa.spec.selector.as_ref().map(|s| s.match_labels.clone()).unwrap_or_default(),
                    created: pa.metadata.creation_timestamp.clone(),
                });
            }
            Object::AuthorizationPolicy(p) => {
                match_labels(&mut f, subject, &ns, p.spec.selector.as_ref());
                target_refs(&mut f, subject, &ns, p.spec.target_ref.as_ref(), &p.spec.target_refs);
            }
            Object::RequestAuthentication(p) => {
                match_labels(&mut f, subject, &ns, p.spec.selector.as_ref());
                target_refs(&mut f, subject, &ns, p.spec.target_ref.as_ref(), &p.spec.target_refs);
            }
            Object::Telemetry(p) => {
                match_labels(&mut f, subject, &ns, p.spec.selector.as_ref());
                target_refs(&mut f, subject, &ns, p.spec.target_ref.as_ref(), &p.spec.target_refs);
            }
            Object::EnvoyFilter(ef) => {
                if let Some(sel) = &ef.spec.workload_selector {
                    selector(&mut f, subject, &ns, "spec.workloadSelector.labels", &sel.labels);
                }
                target_refs(&mut f, subject, &ns, None, &ef.spec.target_refs);
            }
            // Gateways select gateway deployments (often installed outside these files), and
            // EndpointSlices and ServiceAccounts reference nothing checked.
            Object::Gateway(_) | Object::EndpointSlice(_) | Object::ServiceAccount(_) => {}
        }
    }
    f
}

fn selector(f: &mut Facts, subject: usize, ns: &str, field: &str, labels: &BTreeMap<String, String>) {
    f.selectors.push(SelectorRef {
        subject,
        field: field.to_string(),
        namespace: ns.to_string(),
        labels: labels.clone(),
    });
}

fn match_labels(f: &mut Facts, subject: usize, ns: &str, sel: Option<&WorkloadSelector>) {
    if let Some(sel) = sel {
        selector(f, subject, ns, "spec.selector.matchLabels", &sel.match_labels);
    }
}

fn destination(f: &mut Facts, subject: usize, ns: &str, path: String, d: &Destination) {
    f.destinations.push(DestinationRef {
        subject,
        namespace: ns.to_string(),
        path,
        host: d.host.clone(),
        subset: d.subset.clone(),
    });
}

fn virtual_service(f: &mut Facts, subject: usize, ns: &str, spec: &VirtualServiceSpec) {
    for (i, http) in spec.http.iter().enumerate() {
        for (j, r) in http.route.iter().enumerate() {
            destination(f, subject, ns, format!("spec.http[{i}].route[{j}].destination"), &r.destination);
        }
        if let Some(m) = &http.mirror {
            destination(f, subject, ns, format!("spec.http[{i}].mirror"), m);
        }
        for (j, m) in http.mirrors.iter().enumerate() {
            destination(f, subject, ns, format!("spec.http[{i}].mirrors[{j}].destination"), &m.destination);
        }
    }
    for (i, tls) in spec.tls.iter().enumerate() {
        for (j, r) in tls.route.iter().enumerate() {
            destination(f, subject, ns, format!("spec.tls[{i}].route[{j}].destination"), &r.destination);
        }
    }
    for (i, tcp) in spec.tcp.iter().enumerate() {
        for (j, r) in tcp.route.iter().enumerate() {
            destination(f, subject, ns, format!("spec.tcp[{i}].route[{j}].destination"), &r.destination);
        }
    }
}

fn backend_refs(f: &mut Facts, subject: usize, ns: &str, rule: &str, refs: &[HttpBackendRef]) {
    for (j, r) in refs.iter().enumerate() {
        let group = r.group.as_deref().unwrap_or("");
        let kind = match (group, r.kind.as_deref().unwrap_or("Service")) {
            ("" | "core", "Service") => BackendKind::Service,
            ("networking.istio.io", "Hostname") => BackendKind::Hostname,
            // ServiceEntry, InferencePool and other backends are not checked.
            _ => continue,
        };
        f.backends.push(BackendRef {
            subject,
            path: format!("{rule}.backendRefs[{j}]"),
            kind,
            namespace: r.namespace.clone().unwrap_or_else(|| ns.to_string()),
            name: r.name.clone(),
        });
    }
}

/// `targetRef` and `targetRefs` of a policy (always in the policy's namespace).
fn target_refs(
    f: &mut Facts,
    subject: usize,
    ns: &str,
    single: Option<&PolicyTargetReference>,
    many: &[PolicyTargetReference],
) {
    let all = single
        .map(|t| ("spec.targetRef".to_string(), t))
        .into_iter()
        .chain(many.iter().enumerate().map(|(i, t)| (format!("spec.targetRefs[{i}]"), t)));
    for (field, t) in all {
        if let Some(kind) = AttachKind::from_group_kind(t.group.as_deref(), &t.kind, "") {
            let namespace = t.namespace.clone().unwrap_or_else(|| ns.to_string());
            f.attachments.push(AttachRef { subject, field, kind, namespace, name: t.name.clone() });
        }
    }
}

/// `parentRefs` of a Gateway API route (Gateway by default, or a Service for mesh routes).
fn parent_refs(f: &mut Facts, subject: usize, ns: &str, refs: &[ParentReference]) {
    for (i, p) in refs.iter().enumerate() {
        let kind = p.kind.as_deref().unwrap_or("Gateway");
        if let Some(kind) = AttachKind::from_group_kind(p.group.as_deref(), kind, "gateway.networking.k8s.io")
        {
            f.attachments.push(AttachRef {
                subject,
                field: format!("spec.parentRefs[{i}]"),
                kind,
                namespace: p.namespace.clone().unwrap_or_else(|| ns.to_string()),
                name: p.name.clone(),
            });
        }
    }
}
