//! Workload identity: SPIFFE certificates and their keys (made in this process), the
//! certificate manager that keeps them fresh, the client of Istio's CA API, and the rustls
//! configurations HBONE uses (TLS 1.3, SPIFFE peer verification).

pub mod ca_client;
pub mod cert;
mod error;
pub mod manager;
pub mod node;
pub mod tls;

/// Istio's CA API (`istio.v1.auth`), client and server.
#[allow(missing_debug_implementations, clippy::all)]
pub mod proto {
    tonic::include_proto!("istio.v1.auth");
}

pub use ca_client::{CaAuth, CaClient, CaClientConfig, NodeBootstrap, TokenSource, bootstrap_node};
pub use cert::{CertDump, CsrAndKey, WorkloadCert, new_csr};
pub use error::{CaClientError, IdentityError, TlsError};
pub use manager::{CertManager, CertManagerConfig, CertificateProvider};
pub use mesh_api::SpiffeId;
pub use node::{Identity, NodeId, NodeIdError};
pub use tls::{PeerRejected, TrustBundle, client_config, peer_identity, server_config};
