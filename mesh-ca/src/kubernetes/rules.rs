//! Kubernetes mode's authorization rules, with no API calls: who the TokenReview says the
//! caller is, and which identities that caller may obtain. A ztunnel (one of the configured
//! ServiceAccounts) may obtain its node's identity, its own, and those of pods on its node; any
//! other caller (a waypoint included) only its own ServiceAccount's identity.

use std::collections::BTreeMap;

use mesh_api::SpiffeId;
use mesh_identity::Identity;

/// Username prefix of ServiceAccount tokens in a TokenReview.
pub const SA_USER_PREFIX: &str = "system:serviceaccount:";
/// TokenReview `user.extra` keys of a token bound to a pod (and, since Kubernetes 1.30's
/// ServiceAccountTokenPodNodeInfo, to the pod's node).
pub const EXTRA_POD_NAME: &str = "authentication.kubernetes.io/pod-name";
pub const EXTRA_POD_UID: &str = "authentication.kubernetes.io/pod-uid";
pub const EXTRA_NODE_NAME: &str = "authentication.kubernetes.io/node-name";
pub const EXTRA_NODE_UID: &str = "authentication.kubernetes.io/node-uid";

/// The pod a token is bound to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoundPod {
    pub name: String,
    pub uid: String,
}

/// A caller authenticated by TokenReview.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeCaller {
    pub namespace: String,
    pub service_account: String,
    /// The pod the token is bound to, if it is bound to one.
    pub pod: Option<BoundPod>,
    /// The node of that pod: from the token's node claim, or looked up from the pod.
    pub node: Option<String>,
}

/// Why a caller is refused. Messages name the caller and the reason, never the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KubeRefusal {
    #[error("caller {user:?} is not a ServiceAccount; only ServiceAccount tokens are accepted")]
    NotServiceAccount { user: String },
    #[error(
        "ztunnel {caller} presented a token not bound to a pod; use a projected ServiceAccount token so its node is known"
    )]
    NotBoundToPod { caller: String },
    #[error("ztunnel {caller}: the node of its pod {pod} is unknown (pod not scheduled)")]
    NodeUnknown { caller: String, pod: String },
    #[error("{caller} may only obtain its own identity {own}, not {requested}")]
    NotOwnIdentity { caller: String, own: String, requested: String },
    #[error("{caller} may not obtain node identity {requested}; only a ztunnel may, for its own node")]
    NodeIdentityNotAllowed { caller: String, requested: String },
    #[error("ztunnel {caller} on node {node} may not obtain the identity of node {requested}")]
    OtherNode { caller: String, node: String, requested: String },
}

/// What a caller is to the CA.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Ztunnel,
    Workload,
}

/// Granted now, or granted if a live pod on `node` runs as `id` (looked up by the caller of
/// [`decide`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Grant {
    Now,
    IfPodOnNode { node: String, id: SpiffeId },
}

impl KubeCaller {
    /// From a TokenReview's `status.user`: `system:serviceaccount:<ns>:<sa>` and the bound
    /// object claims in `extra`.
    pub fn from_user(username: &str, extra: &BTreeMap<String, Vec<String>>) -> Result<Self, KubeRefusal> {
        let not_sa = || KubeRefusal::NotServiceAccount { user: username.to_string() };
        let rest = username.strip_prefix(SA_USER_PREFIX).ok_or_else(not_sa)?;
        let (namespace, sa) = rest.split_once(':').ok_or_else(not_sa)?;
        if namespace.is_empty() || sa.is_empty() || sa.contains(':') {
            return Err(not_sa());
        }
        let one = |k: &str| extra.get(k).and_then(|v| v.first()).filter(|v| !v.is_empty()).cloned();
        let pod = match (one(EXTRA_POD_NAME), one(EXTRA_POD_UID)) {
            (Some(name), Some(uid)) => Some(BoundPod { name, uid }),
            _ => None,
        };
        Ok(KubeCaller {
            namespace: namespace.to_string(),
            service_account: sa.to_string(),
            node: pod.as_ref().and(one(EXTRA_NODE_NAME)),
            pod,
        })
    }

    /// The role among the configured ztunnel ServiceAccounts (`(namespace, name)`).
    pub fn role(&self, ztunnels: &[(String, String)]) -> Role {
        if ztunnels.iter().any(|(n, s)| *n == self.namespace && *s == self.service_account) {
            Role::Ztunnel
        } else {
            Role::Workload
        }
    }

    fn own(&self, trust_domain: &str) -> String {
        format!("spiffe://{trust_domain}/ns/{}/sa/{}", self.namespace, self.service_account)
    }
}

impl std::fmt::Display for KubeCaller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "serviceaccount {}/{}", self.namespace, self.service_account)?;
        if let Some(p) = &self.pod {
            write!(f, " (pod {}", p.name)?;
            if let Some(n) = &self.node {
                write!(f, " on node {n}")?;
            }
            f.write_str(")")?;
        }
        Ok(())
    }
}

/// Decides whether `caller` with `role` may obtain `requested` (already checked to be in
/// `trust_domain`).
pub fn decide(
    caller: &KubeCaller,
    role: Role,
    requested: &Identity,
    trust_domain: &str,
) -> Result<Grant, KubeRefusal> {
    let own =
        |id: &SpiffeId| id.namespace() == caller.namespace && id.service_account() == caller.service_account;
    match (role, requested) {
        (_, Identity::Workload(id)) if own(id) => Ok(Grant::Now),
        (Role::Workload, Identity::Workload(id)) => Err(KubeRefusal::NotOwnIdentity {
            caller: caller.to_string(),
            own: caller.own(trust_domain),
            requested: id.to_string(),
        }),
        (Role::Workload, Identity::Node(n)) => {
            Err(KubeRefusal::NodeIdentityNotAllowed { caller: caller.to_string(), requested: n.to_string() })
        }
        (Role::Ztunnel, _) => {
            let pod = caller
                .pod
                .as_ref()
                .ok_or_else(|| KubeRefusal::NotBoundToPod { caller: caller.to_string() })?;
            let node = caller.node.clone().ok_or_else(|| KubeRefusal::NodeUnknown {
                caller: caller.to_string(),
                pod: pod.name.clone(),
            })?;
            match requested {
                Identity::Node(n) if n.node() == node => Ok(Grant::Now),
                Identity::Node(n) => Err(KubeRefusal::OtherNode {
                    caller: caller.to_string(),
                    node,
                    requested: n.node().to_string(),
                }),
                Identity::Workload(id) => Ok(Grant::IfPodOnNode { node, id: id.clone() }),
            }
        }
    }
}

/// What the placement check needs of a pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodFacts {
    pub namespace: String,
    pub service_account: String,
    pub node: Option<String>,
    /// `Succeeded` or `Failed`: such a pod gets no certificate.
    pub finished: bool,
}

impl PodFacts {
    pub fn from_pod(pod: &k8s_openapi::api::core::v1::Pod) -> Self {
        let spec = pod.spec.as_ref();
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
        PodFacts {
            namespace: pod.metadata.namespace.clone().unwrap_or_default(),
            // An empty serviceAccountName means `default`, as the API server's admission sets it.
            service_account: spec
                .and_then(|s| s.service_account_name.clone())
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "default".into()),
            node: spec.and_then(|s| s.node_name.clone()).filter(|n| !n.is_empty()),
            finished: matches!(phase, Some("Succeeded" | "Failed")),
        }
    }

    /// A live pod on `node` running as `id`.
    pub fn grants(&self, node: &str, id: &SpiffeId) -> bool {
        !self.finished
            && self.node.as_deref() == Some(node)
            && self.namespace == id.namespace()
            && self.service_account == id.service_account()
    }
}

#[cfg(test)]
#[path = "rules_tests.rs"]
mod tests;
