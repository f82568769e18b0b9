//! The client of Istio's CA API (`istio.v1.auth.IstioCertificateService/CreateCertificate`)
//! over TLS, so the same code works against mesh-ca, istiod or cert-manager istio-csr.
//! It authenticates with a bearer token (to bootstrap a node certificate) or with the node
//! certificate (held and renewed by a [`CertManager`]), and says which identity it asks for in
//! the `ImpersonatedIdentity` metadata, as Istio's ztunnel does.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use prost_types::{Struct, Value, value::Kind};
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

use crate::manager::{BoxFuture, CertManager, CertManagerConfig, CertificateProvider};
use crate::proto::IstioCertificateRequest;
use crate::proto::istio_certificate_service_client::IstioCertificateServiceClient;
use crate::{CaClientError, Identity, NodeId};

/// Default name the CA's serving certificate is checked against.
pub const DEFAULT_CA_SERVER_NAME: &str = "mesh-ca";

/// Metadata key naming the identity requested, as Istio's ztunnel sends it.
pub const IMPERSONATED_IDENTITY: &str = "ImpersonatedIdentity";

/// Where the CA is and how its serving certificate is verified.
#[derive(Debug, Clone)]
pub struct CaClientConfig {
    /// CA URL, `https://host:port`.
    pub address: String,
    /// DNS name the CA's serving certificate must carry (default `mesh-ca`); not resolved.
    pub server_name: String,
    /// PEM root(s) the CA's serving certificate chains to.
    pub roots_pem: String,
    /// Timeout of connecting and of each request (default 10 s).
    pub timeout: Duration,
}

impl CaClientConfig {
    pub fn new(address: impl Into<String>, roots_pem: impl Into<String>) -> Self {
        CaClientConfig {
            address: address.into(),
            server_name: DEFAULT_CA_SERVER_NAME.to_string(),
            roots_pem: roots_pem.into(),
            timeout: Duration::from_secs(10),
        }
    }
}

/// A bearer token: read from a file at each use (so rotation needs no restart), or given.
#[derive(Clone)]
pub enum TokenSource {
    File(PathBuf),
    Static(String),
}

impl fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenSource::File(p) => f.debug_tuple("File").field(p).finish(),
            TokenSource::Static(_) => f.write_str("Static(<redacted>)"),
        }
    }
}

impl TokenSource {
    async fn read(&self) -> Result<String, CaClientError> {
        match self {
            TokenSource::Static(t) => Ok(t.clone()),
            TokenSource::File(p) => {
                let path = p.display().to_string();
                let raw = tokio::fs::read_to_string(p)
                    .await
                    .map_err(|source| CaClientError::Token { path: path.clone(), source })?;
                let token = raw.trim();
                if token.is_empty() {
                    return Err(CaClientError::EmptyToken { path });
                }
                Ok(token.to_string())
            }
        }
    }
}

/// How the client proves who it is.
#[derive(Debug, Clone)]
pub enum CaAuth {
    /// `authorization: Bearer <token>`.
    Token(TokenSource),
    /// TLS client certificate: the node's, held and renewed by `manager`.
    NodeCert { manager: CertManager, node: NodeId },
}

/// A gRPC client of the CA. Implements [`CertificateProvider`] for a [`CertManager`].
pub struct CaClient {
    config: CaClientConfig,
    auth: CaAuth,
    /// The connection, with the serial of the client certificate it was made with.
    channel: tokio::sync::Mutex<Option<(Option<String>, Channel)>>,
}

impl fmt::Debug for CaClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CaClient").field("config", &self.config).field("auth", &self.auth).finish()
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

impl CaClient {
    pub fn new(config: CaClientConfig, auth: CaAuth) -> Self {
        CaClient { config, auth, channel: tokio::sync::Mutex::new(None) }
    }

    pub fn config(&self) -> &CaClientConfig {
        &self.config
    }

    async fn channel(&self) -> Result<Channel, CaClientError> {
        let node_cert = match &self.auth {
            CaAuth::Token(_) => None,
            CaAuth::NodeCert { manager, node } => Some(manager.fetch_node(node).await?),
        };
        let serial = node_cert.as_ref().map(|c| c.serial().to_string());
        let mut cached = self.channel.lock().await;
        if let Some((s, ch)) = cached.as_ref()
            && *s == serial
        {
            return Ok(ch.clone());
        }
        let address = self.config.address.clone();
        let mut tls = ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(&self.config.roots_pem))
            .domain_name(self.config.server_name.clone());
        if let Some(cert) = &node_cert {
            let (chain, key) = cert.identity_pem();
            tls = tls.identity(tonic::transport::Identity::from_pem(chain, key));
        }
        let endpoint = Endpoint::from_shared(address.clone())
            .map_err(|e| CaClientError::Address { address: address.clone(), reason: error_chain(&e) })?
            .tls_config(tls)
            .map_err(|e| CaClientError::Tls { address: address.clone(), reason: error_chain(&e) })?
            .connect_timeout(self.config.timeout)
            .timeout(self.config.timeout);
        let channel = endpoint
            .connect()
            .await
            .map_err(|e| CaClientError::Connect { address: address.clone(), reason: error_chain(&e) })?;
        *cached = Some((serial, channel.clone()));
        Ok(channel)
    }

    /// Sends one CSR for `identity`; returns the PEM chain, leaf first.
    pub async fn create_certificate(
        &self,
        identity: &Identity,
        csr_pem: &str,
        validity: Duration,
    ) -> Result<Vec<String>, CaClientError> {
        let channel = self.channel().await?;
        let metadata = Struct {
            fields: BTreeMap::from([(
                IMPERSONATED_IDENTITY.to_string(),
                Value { kind: Some(Kind::StringValue(identity.to_string())) },
            )]),
        };
        let mut req = tonic::Request::new(IstioCertificateRequest {
            csr: csr_pem.to_string(),
            validity_duration: i64::try_from(validity.as_secs()).unwrap_or(i64::MAX),
            metadata: Some(metadata),
        });
        req.set_timeout(self.config.timeout);
        if let CaAuth::Token(source) = &self.auth {
            let token = source.read().await?;
            let value = format!("Bearer {token}").parse().map_err(|_| CaClientError::TokenValue)?;
            req.metadata_mut().insert("authorization", value);
        }
        let mut client = IstioCertificateServiceClient::new(channel);
        match client.create_certificate(req).await {
            Ok(resp) => {
                let chain = resp.into_inner().cert_chain;
                if chain.is_empty() {
                    return Err(CaClientError::EmptyResponse { identity: identity.clone() });
                }
                Ok(chain)
            }
            Err(status) => {
                if status.code() == tonic::Code::Unavailable {
                    // Reconnect next time rather than reuse a broken channel.
                    *self.channel.lock().await = None;
                }
                let mut message = status.message().to_string();
                if let Some(src) = std::error::Error::source(&status) {
                    message.push_str(": ");
                    message.push_str(&error_chain(src));
                }
                Err(CaClientError::Status { identity: identity.clone(), code: status.code(), message })
            }
        }
    }
}

impl CertificateProvider for CaClient {
    fn create<'a>(
        &'a self,
        identity: &'a Identity,
        csr_pem: &'a str,
        validity: Duration,
    ) -> BoxFuture<'a, Result<Vec<String>, CaClientError>> {
        Box::pin(self.create_certificate(identity, csr_pem, validity))
    }
}

/// A node's standing with the CA after bootstrap.
#[derive(Debug, Clone)]
pub struct NodeBootstrap {
    pub node: NodeId,
    /// Holds (and renews, with the token) the node certificate.
    pub node_certs: CertManager,
    /// A client authenticated by the node certificate: the provider for workload certificates.
    pub client: Arc<CaClient>,
}

impl NodeBootstrap {
    /// A manager for the workload certificates of the pods on this node, requested with the
    /// node certificate.
    pub fn workload_manager(&self, config: CertManagerConfig) -> CertManager {
        CertManager::new(self.client.clone(), config)
    }
}

/// Obtains the node certificate `spiffe://<td>/node/<node>` with the bearer token in
/// `token_file`, and returns a CA client authenticated by it. The node certificate is renewed
/// by `node_certs` like any other (with the token, so a lapse can always be repaired).
pub async fn bootstrap_node(
    config: CaClientConfig,
    trust_domain: &str,
    node: &str,
    token_file: PathBuf,
    manager_config: CertManagerConfig,
) -> Result<NodeBootstrap, CaClientError> {
    let node_id = NodeId::new(trust_domain, node).map_err(|e| {
        CaClientError::Certificate(crate::IdentityError::Uri {
            uri: format!("spiffe://{trust_domain}/node/{node}"),
            reason: e.to_string(),
        })
    })?;
    let token_client = Arc::new(CaClient::new(config.clone(), CaAuth::Token(TokenSource::File(token_file))));
    let node_certs = CertManager::new(token_client, manager_config);
    let cert = node_certs.fetch_node(&node_id).await?;
    tracing::info!(node = %node_id, serial = cert.serial(), "node certificate bootstrapped");
    let client = Arc::new(CaClient::new(
        config,
        CaAuth::NodeCert { manager: node_certs.clone(), node: node_id.clone() },
    ));
    Ok(NodeBootstrap { node: node_id, node_certs, client })
}
