//! The gRPC service `istio.v1.auth.IstioCertificateService/CreateCertificate`: authenticate
//! the caller (node token, node certificate, or in Kubernetes mode a ServiceAccount token),
//! check the CSR, authorize the identity (placement, or the Kubernetes rules), issue. Every
//! refusal is logged with caller, node, identity and reason; tokens never are.

use std::sync::Arc;

use mesh_identity::ca_client::IMPERSONATED_IDENTITY;
use mesh_identity::proto::istio_certificate_service_server::IstioCertificateService;
use mesh_identity::proto::{IstioCertificateRequest, IstioCertificateResponse};
use mesh_identity::{Identity, NodeId};
use prost_types::value::Kind;
use tonic::{Code, Request, Response, Status};

use crate::auth::NodeTokens;
use crate::authority::{Authority, check_csr};
use crate::kubernetes::KubeAuth;
use crate::kubernetes::rules::{KubeCaller, Role};
use crate::placement::Placement;

/// Everything a call needs, shared by all calls.
#[derive(Debug)]
pub struct CaState {
    pub authority: Authority,
    pub trust_domain: String,
    /// Bearer tokens of nodes; `None` disables token bootstrap.
    pub tokens: Option<NodeTokens>,
    pub placement: Arc<dyn Placement>,
    /// Kubernetes mode: ServiceAccount tokens by TokenReview. `None`: file mode only.
    pub kube: Option<KubeAuth>,
}

/// How a caller proved it is node `node`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    Token {
        node: String,
    },
    NodeCert {
        node: String,
    },
    /// A ServiceAccount token, reviewed by the API server.
    Kube {
        caller: KubeCaller,
        role: Role,
    },
}

impl Caller {
    fn node(&self) -> Option<&str> {
        match self {
            Caller::Token { node } | Caller::NodeCert { node } => Some(node),
            Caller::Kube { caller, .. } => caller.node.as_deref(),
        }
    }
}

impl std::fmt::Display for Caller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Caller::Token { node } => write!(f, "node {node} (token)"),
            Caller::NodeCert { node } => write!(f, "node {node} (certificate)"),
            Caller::Kube { caller, role: Role::Ztunnel } => write!(f, "ztunnel {caller}"),
            Caller::Kube { caller, role: Role::Workload } => write!(f, "{caller}"),
        }
    }
}

/// The tonic service.
#[derive(Debug, Clone)]
pub struct CaService {
    state: Arc<CaState>,
}

impl CaService {
    pub fn new(state: Arc<CaState>) -> Self {
        CaService { state }
    }

    /// The bearer token of the call, if it has an `authorization` header.
    fn bearer<T>(req: &Request<T>) -> Result<Option<String>, Status> {
        let Some(value) = req.metadata().get("authorization") else { return Ok(None) };
        let text = value.to_str().map_err(|_| Status::unauthenticated("authorization header is not text"))?;
        let token = text
            .strip_prefix("Bearer ")
            .or_else(|| text.strip_prefix("bearer "))
            .ok_or_else(|| Status::unauthenticated("authorization header is not `Bearer <token>`"))?
            .trim();
        Ok(Some(token.to_string()))
    }

    /// A node token from the tokens file first (local, constant time), then a ServiceAccount
    /// token by TokenReview.
    async fn authenticate_token(&self, token: &str) -> Result<Caller, Status> {
        if let Some(tokens) = &self.state.tokens {
            match tokens.node_for(token) {
                Ok(Some(node)) => return Ok(Caller::Token { node }),
                Ok(None) if self.state.kube.is_some() => {}
                Ok(None) => return Err(Status::unauthenticated("bearer token matches no node")),
                Err(e) => {
                    tracing::error!(error = %e, "node tokens file unusable");
                    return Err(Status::unavailable("node tokens cannot be read"));
                }
            }
        }
        let Some(kube) = &self.state.kube else {
            return Err(Status::unauthenticated("token authentication is not configured (nodeTokensFile)"));
        };
        let (caller, role) = kube.authenticate(token).await.map_err(|e| e.status())?;
        Ok(Caller::Kube { caller, role })
    }

    async fn authenticate<T>(&self, req: &Request<T>) -> Result<Caller, Status> {
        if let Some(token) = Self::bearer(req)? {
            return self.authenticate_token(&token).await;
        }
        let certs = req.peer_certs().filter(|c| !c.is_empty()).ok_or_else(|| {
            Status::unauthenticated("no credentials: neither a bearer token nor a client certificate")
        })?;
        // tonic's TLS already verified the chain to our root; what remains is who it names.
        let (_, leaf) = x509_parser::parse_x509_certificate(&certs[0])
            .map_err(|e| Status::unauthenticated(format!("client certificate cannot be parsed: {e}")))?;
        let uris: Vec<String> = match leaf.subject_alternative_name() {
            Ok(Some(san)) => san
                .value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    x509_parser::extensions::GeneralName::URI(u) => Some((*u).to_string()),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        };
        let [uri] = uris.as_slice() else {
            return Err(Status::permission_denied(format!(
                "client certificate has {} URI SANs, expected one node identity",
                uris.len()
            )));
        };
        match uri.parse::<NodeId>() {
            Ok(n) if n.trust_domain() == self.state.trust_domain => {
                Ok(Caller::NodeCert { node: n.node().to_string() })
            }
            Ok(n) => Err(Status::permission_denied(format!(
                "client certificate {n} is not in trust domain {}",
                self.state.trust_domain
            ))),
            Err(_) => Err(Status::permission_denied(format!(
                "client certificate identity {uri} is not a node identity; only nodes may request certificates"
            ))),
        }
    }

    async fn authorize(&self, caller: &Caller, requested: &Identity) -> Result<(), Status> {
        if requested.trust_domain() != self.state.trust_domain {
            return Err(Status::permission_denied(format!(
                "{requested} is not in trust domain {}",
                self.state.trust_domain
            )));
        }
        match (caller, requested) {
            (Caller::Kube { caller, role }, _) => {
                let Some(kube) = &self.state.kube else {
                    return Err(Status::internal("Kubernetes caller without Kubernetes mode"));
                };
                kube.authorize(caller, *role, requested).await.map_err(|e| e.status())
            }
            (_, Identity::Node(n)) if Some(n.node()) == caller.node() => Ok(()),
            (_, Identity::Node(n)) => Err(Status::permission_denied(format!(
                "node {} may not obtain the identity of node {}",
                caller.node().unwrap_or("-"),
                n.node()
            ))),
            (Caller::Token { node }, Identity::Workload(_)) => Err(Status::permission_denied(format!(
                "a token authenticates node {node} for its node certificate only; workload identities need the node certificate"
            ))),
            (Caller::NodeCert { node }, Identity::Workload(id)) => self
                .state
                .placement
                .node_may_request(node, id)
                .map_err(|r| Status::permission_denied(r.to_string())),
        }
    }

    async fn handle(&self, req: Request<IstioCertificateRequest>) -> Result<Issued, Refused> {
        let caller = self.authenticate(&req).await.map_err(|status| Refused {
            caller: None,
            requested: None,
            status,
        })?;
        let body = req.into_inner();
        let fail = |requested: Option<String>, status: Status| Refused {
            caller: Some(caller.clone()),
            requested,
            status,
        };
        let impersonated =
            body.metadata.as_ref().and_then(|m| m.fields.get(IMPERSONATED_IDENTITY)).map(|v| match &v.kind {
                Some(Kind::StringValue(s)) => Ok(s.clone()),
                _ => Err(()),
            });
        let impersonated = match impersonated {
            None => None,
            Some(Ok(s)) => Some(s),
            Some(Err(())) => {
                return Err(fail(
                    None,
                    Status::invalid_argument(format!("metadata {IMPERSONATED_IDENTITY} is not a string")),
                ));
            }
        };
        let csr = check_csr(&body.csr)
            .map_err(|e| fail(impersonated.clone(), Status::invalid_argument(e.to_string())))?;
        let requested = csr.identity.clone();
        if let Some(imp) = &impersonated
            && *imp != requested.to_string()
        {
            return Err(fail(
                Some(imp.clone()),
                Status::invalid_argument(format!(
                    "metadata {IMPERSONATED_IDENTITY} {imp} does not match the CSR's SAN {requested}"
                )),
            ));
        }
        let name = Some(requested.to_string());
        self.authorize(&caller, &requested).await.map_err(|s| fail(name.clone(), s))?;
        let ttl = self.state.authority.effective_ttl(body.validity_duration).ok_or_else(|| {
            fail(
                name.clone(),
                Status::invalid_argument(format!("validity_duration {} is negative", body.validity_duration)),
            )
        })?;
        let chain = self.state.authority.issue(&csr, ttl).map_err(|e| {
            tracing::error!(identity = %requested, error = %e, "signing failed");
            fail(name.clone(), Status::internal("signing failed"))
        })?;
        Ok(Issued { caller, identity: requested, response: IstioCertificateResponse { cert_chain: chain } })
    }
}

/// A call that succeeded, for the log line.
struct Issued {
    caller: Caller,
    identity: Identity,
    response: IstioCertificateResponse,
}

/// A call that was refused, with what is known of it for the log line.
struct Refused {
    caller: Option<Caller>,
    requested: Option<String>,
    status: Status,
}

#[tonic::async_trait]
impl IstioCertificateService for CaService {
    async fn create_certificate(
        &self,
        request: Request<IstioCertificateRequest>,
    ) -> Result<Response<IstioCertificateResponse>, Status> {
        let peer = request.remote_addr().map(|a| a.to_string()).unwrap_or_else(|| "unknown".into());
        let ttl_asked = request.get_ref().validity_duration;
        match self.handle(request).await {
            Ok(Issued { caller, identity, response }) => {
                tracing::info!(peer, caller = %caller, node = caller.node().unwrap_or("-"), identity = %identity, ttl_asked, "certificate issued");
                Ok(Response::new(response))
            }
            Err(Refused { caller, requested, status }) => {
                let caller_text =
                    caller.as_ref().map(|c| c.to_string()).unwrap_or_else(|| "unauthenticated".into());
                let node = caller.as_ref().and_then(|c| c.node()).unwrap_or("-").to_string();
                let code = status.code();
                let level_warn = matches!(code, Code::PermissionDenied | Code::Unauthenticated);
                if level_warn {
                    tracing::warn!(peer, caller = caller_text, node, identity = requested.as_deref().unwrap_or("-"), code = ?code, reason = status.message(), "certificate refused");
                } else {
                    tracing::info!(peer, caller = caller_text, node, identity = requested.as_deref().unwrap_or("-"), code = ?code, reason = status.message(), "certificate refused");
                }
                Err(status)
            }
        }
    }
}
