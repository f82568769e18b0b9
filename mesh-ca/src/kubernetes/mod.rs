//! Kubernetes mode: callers authenticate with a projected ServiceAccount token, verified by
//! TokenReview against the configured audiences; [`rules`] decide what they may obtain, with
//! the pods looked up from the API server when a ztunnel asks for a pod's identity; [`root`]
//! keeps the CA's key material in Secrets.
//!
//! API cost: one TokenReview per call, one pod GET when the token carries no node claim (API
//! servers before 1.30), and one pod LIST (field-selected by node) per ztunnel request for
//! a pod identity. Certificates live for hours, so this is a few calls per pod per day.

pub mod root;
pub mod rules;

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, PostParams};
use mesh_identity::Identity;

use crate::config::KubeSettings;
use crate::placement::Refusal;
use rules::{Grant, KubeCaller, KubeRefusal, PodFacts, Role};

/// Kubernetes mode could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum KubeSetupError {
    #[error("reading kubeconfig {path}: {source}")]
    Kubeconfig { path: String, source: kube::config::KubeconfigError },
    #[error("no Kubernetes configuration (in-cluster or KUBECONFIG): {0}")]
    Infer(#[from] kube::config::InferConfigError),
    #[error("building the Kubernetes client: {0}")]
    Client(#[source] kube::Error),
    #[error(transparent)]
    Root(#[from] root::RootSecretError),
}

/// Why a call is refused in Kubernetes mode.
#[derive(Debug, thiserror::Error)]
pub enum KubeAuthError {
    #[error("ServiceAccount token rejected by the API server: {0}")]
    Unauthenticated(String),
    #[error(transparent)]
    Refused(#[from] KubeRefusal),
    #[error(transparent)]
    NotOnNode(#[from] Refusal),
    #[error("{what}: {source}")]
    Api { what: String, source: kube::Error },
}

impl KubeAuthError {
    /// The gRPC status for the caller.
    pub fn status(&self) -> tonic::Status {
        match self {
            KubeAuthError::Unauthenticated(_) => tonic::Status::unauthenticated(self.to_string()),
            KubeAuthError::Refused(_) | KubeAuthError::NotOnNode(_) => {
                tonic::Status::permission_denied(self.to_string())
            }
            KubeAuthError::Api { .. } => tonic::Status::unavailable(self.to_string()),
        }
    }
}

/// A client for the settings: their kubeconfig, or in-cluster / `KUBECONFIG`.
pub async fn client(settings: &KubeSettings) -> Result<kube::Client, KubeSetupError> {
    let config = match &settings.kubeconfig {
        Some(path) => {
            let err = |source| KubeSetupError::Kubeconfig { path: path.display().to_string(), source };
            let kc = kube::config::Kubeconfig::read_from(path).map_err(err)?;
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(err)?
        }
        None => kube::Config::infer().await?,
    };
    kube::Client::try_from(config).map_err(KubeSetupError::Client)
}

/// TokenReview authentication and API-backed authorization.
#[derive(Clone)]
pub struct KubeAuth {
    client: kube::Client,
    audiences: Vec<String>,
    ztunnels: Vec<(String, String)>,
    trust_domain: String,
}

impl std::fmt::Debug for KubeAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeAuth")
            .field("audiences", &self.audiences)
            .field("ztunnels", &self.ztunnels)
            .finish_non_exhaustive()
    }
}

impl KubeAuth {
    pub fn new(client: kube::Client, settings: &KubeSettings, trust_domain: &str) -> Self {
        KubeAuth {
            client,
            audiences: settings.audiences.clone(),
            ztunnels: settings.ztunnels(),
            trust_domain: trust_domain.to_string(),
        }
    }

    fn api_err(what: impl Into<String>) -> impl FnOnce(kube::Error) -> KubeAuthError {
        let what = what.into();
        move |source| KubeAuthError::Api { what, source }
    }

    /// Who the token belongs to. For a ztunnel, also the node of its pod (from the token's
    /// node claim, or the pod itself when the API server adds no node claim).
    pub async fn authenticate(&self, token: &str) -> Result<(KubeCaller, Role), KubeAuthError> {
        let review = TokenReview {
            spec: TokenReviewSpec { token: Some(token.to_string()), audiences: Some(self.audiences.clone()) },
            ..TokenReview::default()
        };
        let out = Api::<TokenReview>::all(self.client.clone())
            .create(&PostParams::default(), &review)
            .await
            .map_err(Self::api_err("TokenReview"))?;
        let status = out.status.unwrap_or_default();
        if status.authenticated != Some(true) {
            let reason = status.error.filter(|e| !e.is_empty()).unwrap_or_else(|| "not authenticated".into());
            return Err(KubeAuthError::Unauthenticated(reason));
        }
        // The API server checked the audiences; make sure it did (an old server ignores them).
        let audiences = status.audiences.unwrap_or_default();
        if !audiences.iter().any(|a| self.audiences.contains(a)) {
            return Err(KubeAuthError::Unauthenticated(format!(
                "token audiences {audiences:?} include none of {:?}",
                self.audiences
            )));
        }
        let user = status.user.unwrap_or_default();
        let mut caller =
            KubeCaller::from_user(user.username.as_deref().unwrap_or(""), &user.extra.unwrap_or_default())?;
        let role = caller.role(&self.ztunnels);
        if role == Role::Ztunnel
            && caller.node.is_none()
            && let Some(bound) = &caller.pod
        {
            let what = format!("reading pod {}/{}", caller.namespace, bound.name);
            let pod = Api::<Pod>::namespaced(self.client.clone(), &caller.namespace)
                .get_opt(&bound.name)
                .await
                .map_err(Self::api_err(what))?;
            // TokenReview checked the pod still exists with this UID; re-check after the GET.
            caller.node = pod
                .filter(|p| p.metadata.uid.as_deref() == Some(bound.uid.as_str()))
                .and_then(|p| p.spec.and_then(|s| s.node_name))
                .filter(|n| !n.is_empty());
        }
        Ok((caller, role))
    }

    /// Whether `caller` may obtain `requested` (already checked to be in the trust domain).
    pub async fn authorize(
        &self,
        caller: &KubeCaller,
        role: Role,
        requested: &Identity,
    ) -> Result<(), KubeAuthError> {
        let (node, id) = match rules::decide(caller, role, requested, &self.trust_domain)? {
            Grant::Now => return Ok(()),
            Grant::IfPodOnNode { node, id } => (node, id),
        };
        let api = Api::<Pod>::namespaced(self.client.clone(), id.namespace());
        let on_node = ListParams::default().fields(&format!("spec.nodeName={node}"));
        let what = format!("listing pods of namespace {} on node {node}", id.namespace());
        let pods = api.list(&on_node).await.map_err(Self::api_err(what))?;
        if pods.items.iter().any(|p| PodFacts::from_pod(p).grants(&node, &id)) {
            return Ok(());
        }
        // Refused: say where pods with this identity do run, to help the operator.
        let what = format!("listing pods of namespace {}", id.namespace());
        let all = api.list(&ListParams::default()).await.map_err(Self::api_err(what))?;
        let mut on_nodes: Vec<String> = all
            .items
            .iter()
            .map(PodFacts::from_pod)
            .filter(|f| !f.finished && f.service_account == id.service_account())
            .filter_map(|f| f.node)
            .collect();
        on_nodes.sort();
        on_nodes.dedup();
        Err(Refusal::NotOnNode { node, identity: id.to_string(), on_nodes }.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_map_to_grpc_codes() {
        let unauth = KubeAuthError::Unauthenticated("token has expired".into()).status();
        assert_eq!(unauth.code(), tonic::Code::Unauthenticated);
        assert_eq!(unauth.message(), "ServiceAccount token rejected by the API server: token has expired");
        let refused = KubeAuthError::from(KubeRefusal::NotServiceAccount { user: "admin".into() }).status();
        assert_eq!(refused.code(), tonic::Code::PermissionDenied);
        let not_on_node = KubeAuthError::from(Refusal::NotOnNode {
            node: "a".into(),
            identity: "x".into(),
            on_nodes: vec![],
        });
        assert_eq!(not_on_node.status().code(), tonic::Code::PermissionDenied);
        assert!(not_on_node.to_string().contains("no pod on node a runs as x"));
    }
}
