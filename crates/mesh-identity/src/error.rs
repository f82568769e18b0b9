//! Error types of the identity crate: certificates and keys, the CA client and the TLS configs.

use crate::Identity;

/// A certificate, key or CSR could not be made or does not fit what was asked for.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("generating a key for {identity}: {source}")]
    KeyGen { identity: String, source: rcgen::Error },
    #[error("building a CSR for {identity}: {source}")]
    Csr { identity: String, source: rcgen::Error },
    #[error("certificate chain for {identity} is empty")]
    EmptyChain { identity: String },
    #[error("certificate {index} of the chain for {identity} is not valid PEM: {reason}")]
    Pem { identity: String, index: usize, reason: String },
    #[error("certificate {index} of the chain for {identity} cannot be parsed: {reason}")]
    Parse { identity: String, index: usize, reason: String },
    #[error("leaf certificate for {identity} carries URI SAN(s) {found:?}, expected exactly {identity}")]
    WrongSan { identity: Identity, found: Vec<String> },
    #[error("leaf certificate for {identity} does not certify the key that was sent in the CSR")]
    KeyMismatch { identity: Identity },
    #[error("private key for {identity} is unusable by rustls: {reason}")]
    Key { identity: String, reason: String },
    #[error("invalid identity URI {uri:?}: {reason}")]
    Uri { uri: String, reason: String },
    #[error("trust bundle: {reason}")]
    Trust { reason: String },
}

/// A certificate request to the CA failed.
#[derive(Debug, thiserror::Error)]
pub enum CaClientError {
    #[error("CA address {address:?} is invalid: {reason}")]
    Address { address: String, reason: String },
    #[error("TLS setup towards the CA at {address}: {reason}")]
    Tls { address: String, reason: String },
    #[error("connecting to the CA at {address}: {reason}")]
    Connect { address: String, reason: String },
    #[error("reading the CA token file {path}: {source}")]
    Token { path: String, source: std::io::Error },
    #[error("CA token file {path} is empty")]
    EmptyToken { path: String },
    #[error("CA token is not a valid metadata value")]
    TokenValue,
    #[error("CA refused the certificate for {identity}: {code:?}: {message}")]
    Status { identity: Identity, code: tonic::Code, message: String },
    #[error("CA answered for {identity} with an empty certificate chain")]
    EmptyResponse { identity: Identity },
    #[error(transparent)]
    Certificate(#[from] IdentityError),
    #[error("no certificate could be obtained for {identity}: {reason}")]
    Unavailable { identity: Identity, reason: String },
}

impl CaClientError {
    /// Whether a later retry may succeed without anyone changing the configuration.
    pub fn is_retryable(&self) -> bool {
        match self {
            CaClientError::Connect { .. } | CaClientError::Unavailable { .. } => true,
            CaClientError::Status { code, .. } => matches!(
                code,
                tonic::Code::Unavailable
                    | tonic::Code::DeadlineExceeded
                    | tonic::Code::Unknown
                    | tonic::Code::Internal
                    | tonic::Code::ResourceExhausted
                    | tonic::Code::Aborted
            ),
            _ => false,
        }
    }
}

/// A TLS configuration could not be built, or a peer failed our identity checks.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("building the TLS config: {0}")]
    Config(#[from] rustls::Error),
    #[error("building the client-certificate verifier: {0}")]
    Verifier(String),
    #[error("peer presented no certificate")]
    NoPeerCertificate,
    #[error("peer certificate cannot be parsed: {0}")]
    PeerParse(String),
    #[error("peer certificate has {count} URI SANs, expected exactly one SPIFFE ID")]
    PeerSanCount { count: usize },
    #[error("peer identity {uri:?} is not a workload SPIFFE ID: {reason}")]
    NotWorkload { uri: String, reason: String },
    #[error("peer identity {peer} is not in trust domain {expected}")]
    TrustDomain { peer: String, expected: String },
    #[error("peer identity {peer} is not one of the expected {expected:?}")]
    UnexpectedIdentity { peer: String, expected: Vec<String> },
    #[error("no expected server identity given")]
    NoExpectedIdentity,
}
