//! Policies (PeerAuthentication, AuthorizationPolicy, RequestAuthentication, Telemetry)
//! indexed by kind, namespace and selector, and routing objects (VirtualService,
//! DestinationRule by host; HTTPRoute/GRPCRoute by parent) kept for the proxies to read.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;

use mesh_api::{Object, Origin};

use crate::intern::{Interner, Labels};
use crate::workload::Workload;

/// The policy APIs the model indexes by selector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub enum PolicyKind {
    PeerAuthentication,
    AuthorizationPolicy,
    RequestAuthentication,
    Telemetry,
}

/// How widely a policy applies, Istio's precedence order (narrowest last).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub enum PolicyScope {
    /// In the root namespace without a selector: every workload of the mesh.
    Mesh,
    /// No selector: every workload of its namespace.
    Namespace,
    /// A selector: the matching workloads (of every namespace when in the root namespace).
    Workload,
    /// `targetRef(s)`: applies where the target (a waypoint Gateway, a Service) is served.
    Targeted,
}

/// A `targetRef` of a policy, with the namespace defaulted to the policy's.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
pub struct TargetRef {
    pub group: Arc<str>,
    pub kind: Arc<str>,
    pub namespace: Arc<str>,
    pub name: Arc<str>,
}

/// One policy object and its index data.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Policy {
    pub kind: PolicyKind,
    pub namespace: Arc<str>,
    pub name: Arc<str>,
    pub scope: PolicyScope,
    /// `selector.matchLabels`, when set.
    pub selector: Option<Labels>,
    pub target_refs: Box<[TargetRef]>,
    /// The typed object (`Object::AuthorizationPolicy(..)` etc.); dumped with the objects.
    #[serde(skip)]
    pub object: Object,
    pub origin: Origin,
}

impl Policy {
    /// Whether this policy applies to `workload` through its namespace scope or selector
    /// (targeted policies apply at waypoints, not here).
    pub fn selects(&self, workload: &Workload, root_namespace: &str) -> bool {
        if !self.target_refs.is_empty() {
            return false;
        }
        if *self.namespace != *workload.namespace && *self.namespace != *root_namespace {
            return false;
        }
        self.selector.as_ref().is_none_or(|s| workload.labels.matches(s))
    }
}

/// Policies sorted by (kind, namespace, name) with the range of each (kind, namespace).
#[derive(Debug, Default)]
pub(crate) struct PolicyIndex {
    pub(crate) policies: Box<[Policy]>,
    /// Per namespace, the range of each kind (indexed by `PolicyKind as usize`).
    ranges: HashMap<Arc<str>, [Range<usize>; 4]>,
}

impl PolicyIndex {
    pub(crate) fn build(mut policies: Vec<Policy>) -> Self {
        policies.sort_by(|a, b| (a.kind, &a.namespace, &a.name).cmp(&(b.kind, &b.namespace, &b.name)));
        let mut ranges: HashMap<Arc<str>, [Range<usize>; 4]> = HashMap::new();
        for (idx, p) in policies.iter().enumerate() {
            let r = &mut ranges.entry(p.namespace.clone()).or_default()[p.kind as usize];
            if r.start == r.end {
                *r = idx..idx + 1;
            } else {
                r.end = idx + 1;
            }
        }
        PolicyIndex { policies: policies.into(), ranges }
    }

    pub(crate) fn in_namespace(&self, kind: PolicyKind, namespace: &str) -> &[Policy] {
        match self.ranges.get(namespace) {
            Some(r) => &self.policies[r[kind as usize].clone()],
            None => &[],
        }
    }
}

/// Policy-specific fields read from the typed objects.
pub(crate) fn policy_of(
    object: &Object,
    origin: &Origin,
    root_namespace: &str,
    i: &mut Interner,
) -> Option<Policy> {
    let (kind, meta, selector, target_ref, target_refs) = match object {
        Object::PeerAuthentication(r) => {
            (PolicyKind::PeerAuthentication, &r.metadata, r.spec.selector.as_ref(), None, &[][..])
        }
        Object::AuthorizationPolicy(r) => (
            PolicyKind::AuthorizationPolicy,
            &r.metadata,
            r.spec.selector.as_ref(),
            r.spec.target_ref.as_ref(),
            &r.spec.target_refs[..],
        ),
        Object::RequestAuthentication(r) => (
            PolicyKind::RequestAuthentication,
            &r.metadata,
            r.spec.selector.as_ref(),
            r.spec.target_ref.as_ref(),
            &r.spec.target_refs[..],
        ),
        Object::Telemetry(r) => (
            PolicyKind::Telemetry,
            &r.metadata,
            r.spec.selector.as_ref(),
            r.spec.target_ref.as_ref(),
            &r.spec.target_refs[..],
        ),
        _ => return None,
    };
    let namespace = i.str(meta.namespace.as_deref().unwrap_or("default"));
    let name = i.str(meta.name.as_deref().unwrap_or_default());
    let selector = selector.map(|s| i.labels(Some(&s.match_labels)));
    let target_refs: Box<[TargetRef]> = target_ref
        .into_iter()
        .chain(target_refs)
        .map(|t| TargetRef {
            group: i.str(t.group.as_deref().unwrap_or_default()),
            kind: i.str(&t.kind),
            namespace: t.namespace.as_deref().map(|n| i.str(n)).unwrap_or_else(|| namespace.clone()),
            name: i.str(&t.name),
        })
        .collect();
    let scope = if !target_refs.is_empty() {
        PolicyScope::Targeted
    } else if selector.is_some() {
        PolicyScope::Workload
    } else if *namespace == *root_namespace {
        PolicyScope::Mesh
    } else {
        PolicyScope::Namespace
    };
    Some(Policy {
        kind,
        namespace,
        name,
        scope,
        selector,
        target_refs,
        object: object.clone(),
        origin: origin.clone(),
    })
}

/// What a Gateway API route attaches to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ParentKey {
    /// A Service (GAMMA mesh routing), by namespace/name.
    Service(Arc<str>, Arc<str>),
    /// A Gateway (ingress or waypoint), by namespace/name.
    Gateway(Arc<str>, Arc<str>),
}

pub(crate) fn parent_keys(object: &Object, i: &mut Interner) -> Vec<ParentKey> {
    let (meta, refs) = match object {
        Object::HttpRoute(r) => (&r.metadata, &r.spec.parent_refs),
        Object::GrpcRoute(r) => (&r.metadata, &r.spec.parent_refs),
        _ => return Vec::new(),
    };
    let own_ns = meta.namespace.as_deref().unwrap_or("default");
    refs.iter()
        .filter_map(|p| {
            let ns = i.str(p.namespace.as_deref().unwrap_or(own_ns));
            let name = i.str(&p.name);
            let group = p.group.as_deref().unwrap_or("gateway.networking.k8s.io");
            match (group, p.kind.as_deref().unwrap_or("Gateway")) {
                ("" | "core", "Service") => Some(ParentKey::Service(ns, name)),
                ("gateway.networking.k8s.io", "Gateway") => Some(ParentKey::Gateway(ns, name)),
                _ => None,
            }
        })
        .collect()
}
