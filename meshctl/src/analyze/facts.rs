//! What the cross-object checks need to know about the objects beyond what the model
//! indexes: which names exist (namespaces, Services, ServiceEntries, Gateways, pods) and
//! which references, selectors and PeerAuthentications the objects make, each with the field
//! path it was written at.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use mesh_api::{ObjectRef, Origin};

/// An object diagnostics can be about.
#[derive(Debug, Clone)]
pub(super) struct Subject {
    pub object: ObjectRef,
    pub origin: Origin,
}

/// A pod's namespace and labels (what selectors match against).
#[derive(Debug)]
pub(super) struct PodFacts {
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
}

/// An Istio `Destination` (host and optional subset) at `path` in a subject.
#[derive(Debug)]
pub(super) struct DestinationRef {
    pub subject: usize,
    /// Namespace short host names resolve in.
    pub namespace: String,
    /// Field path of the destination, e.g. `spec.http[0].route[1].destination`.
    pub path: String,
    pub host: String,
    pub subset: Option<String>,
}

/// What a Gateway API `backendRef` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum BackendKind {
    /// A Kubernetes Service by name in a namespace.
    Service,
    /// Istio's `networking.istio.io/Hostname`: a host name.
    Hostname,
}

/// A Gateway API `backendRef` at `path` in a subject.
#[derive(Debug)]
pub(super) struct BackendRef {
    pub subject: usize,
    /// Field path of the reference, e.g. `spec.rules[0].backendRefs[1]`.
    pub path: String,
    pub kind: BackendKind,
    /// Effective namespace (the reference's own, or the route's).
    pub namespace: String,
    pub name: String,
}

/// The kinds of object a policy `targetRef` or route `parentRef` can name that are checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum AttachKind {
    Service,
    ServiceEntry,
    /// Gateway API Gateway.
    Gateway,
}

impl AttachKind {
    /// From a reference's group (None = the reference's default) and kind.
    pub fn from_group_kind(group: Option<&str>, kind: &str, default_group: &str) -> Option<Self> {
        match (group.unwrap_or(default_group), kind) {
            ("" | "core", "Service") => Some(AttachKind::Service),
            ("networking.istio.io", "ServiceEntry") => Some(AttachKind::ServiceEntry),
            ("gateway.networking.k8s.io", "Gateway") => Some(AttachKind::Gateway),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            AttachKind::Service => "Service",
            AttachKind::ServiceEntry => "ServiceEntry",
            AttachKind::Gateway => "Gateway",
        }
    }
}

/// A policy `targetRef` or a route `parentRef`: the object the subject attaches to.
#[derive(Debug)]
pub(super) struct AttachRef {
    pub subject: usize,
    /// Field path, e.g. `spec.targetRefs[0]` or `spec.parentRefs[1]`.
    pub field: String,
    pub kind: AttachKind,
    pub namespace: String,
    pub name: String,
}

/// A workload selector at `field` in a subject of `namespace`.
#[derive(Debug)]
pub(super) struct SelectorRef {
    pub subject: usize,
    pub field: String,
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
}

/// The scope-defining parts of a PeerAuthentication.
#[derive(Debug)]
pub(super) struct PeerAuthFacts {
    pub subject: usize,
    pub namespace: String,
    pub name: String,
    /// `matchLabels`; empty for a namespace-wide (or, in the root namespace, mesh-wide) policy.
    pub selector: BTreeMap<String, String>,
    /// `metadata.creationTimestamp`; `None` (files usually have none) sorts first.
    pub created: Option<Time>,
}

/// Everything the checks look at.
#[derive(Debug, Default)]
pub(super) struct Facts {
    /// Namespace whose policies apply mesh-wide (`istio-system`).
    pub root_namespace: Arc<str>,
    pub subjects: Vec<Subject>,
    /// Namespaces declared or used by any object.
    pub namespaces: BTreeSet<String>,
    /// Services as (namespace, name).
    pub services: BTreeSet<(String, String)>,
    /// ServiceEntries as (namespace, name).
    pub service_entries: BTreeSet<(String, String)>,
    /// Gateway API Gateways as (namespace, name).
    pub gateways: BTreeSet<(String, String)>,
    pub pods: Vec<PodFacts>,
    pub destinations: Vec<DestinationRef>,
    pub backends: Vec<BackendRef>,
    pub selectors: Vec<SelectorRef>,
    pub attachments: Vec<AttachRef>,
    pub peer_auths: Vec<PeerAuthFacts>,
}

impl Facts {
    pub fn new(root_namespace: Arc<str>) -> Self {
        Facts { root_namespace, ..Facts::default() }
    }

    /// Registers an object diagnostics can be about; returns its index.
    pub fn subject(&mut self, object: ObjectRef, origin: Origin) -> usize {
        if !object.namespace.is_empty() {
            self.namespaces.insert(object.namespace.clone());
        }
        self.subjects.push(Subject { object, origin });
        self.subjects.len() - 1
    }
}
