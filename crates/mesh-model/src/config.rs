//! Mesh-wide settings the translation needs (trust domain, root namespace, DNS suffix).

use std::sync::Arc;

/// Settings that shape how objects become the model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeshConfig {
    /// SPIFFE trust domain of workload identities (text, e.g. `cluster.local`).
    pub trust_domain: Arc<str>,
    /// Namespace whose policies apply mesh-wide (text, Istio's `istio-system`).
    pub root_namespace: Arc<str>,
    /// Name of this cluster, reported in telemetry (text, Istio's `Kubernetes`).
    pub cluster_id: Arc<str>,
    /// DNS suffix of Service host names (text, `name.ns.svc.<suffix>`).
    pub domain_suffix: Arc<str>,
}

impl Default for MeshConfig {
    fn default() -> Self {
        MeshConfig {
            trust_domain: mesh_api::DEFAULT_TRUST_DOMAIN.into(),
            root_namespace: "istio-system".into(),
            cluster_id: "Kubernetes".into(),
            domain_suffix: "cluster.local".into(),
        }
    }
}
