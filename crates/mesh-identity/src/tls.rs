//! rustls configurations for HBONE: aws-lc-rs, TLS 1.3 only, AES-GCM suites, ALPN `h2`, no SNI.
//! The server requires a client certificate chaining to our roots whose URI SAN is a workload
//! SPIFFE ID of our trust domain; the client accepts only the expected server identities.
//! Both verifiers use webpki for the chain and validity (with the `now` rustls passes in).

use std::sync::Arc;

use mesh_api::SpiffeId;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ParsedCertificate, WebPkiClientVerifier};
use rustls::{
    CertificateError, ClientConfig, CommonState, DigitallySignedStruct, DistinguishedName, RootCertStore,
    ServerConfig, SignatureScheme,
};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::cert::uri_sans;
use crate::{IdentityError, TlsError, WorkloadCert};

/// ALPN protocol of HBONE.
pub const ALPN_H2: &[u8] = b"h2";

/// The crypto provider all our TLS uses: aws-lc-rs restricted to TLS 1.3 AES-GCM suites.
pub fn provider() -> Arc<CryptoProvider> {
    use rustls::crypto::aws_lc_rs::{self, cipher_suite};
    let mut p = aws_lc_rs::default_provider();
    p.cipher_suites = vec![cipher_suite::TLS13_AES_128_GCM_SHA256, cipher_suite::TLS13_AES_256_GCM_SHA384];
    Arc::new(p)
}

/// The roots we trust and the trust domain peers must belong to.
#[derive(Debug, Clone)]
pub struct TrustBundle {
    trust_domain: String,
    roots: Arc<RootCertStore>,
}

impl TrustBundle {
    /// A bundle from DER roots.
    pub fn new(
        trust_domain: &str,
        roots: impl IntoIterator<Item = CertificateDer<'static>>,
    ) -> Result<Self, IdentityError> {
        let mut store = RootCertStore::empty();
        for (i, r) in roots.into_iter().enumerate() {
            store
                .add(r)
                .map_err(|e| IdentityError::Trust { reason: format!("root {i} is not usable: {e}") })?;
        }
        if store.is_empty() {
            return Err(IdentityError::Trust { reason: "no root certificate".into() });
        }
        Ok(TrustBundle { trust_domain: trust_domain.to_string(), roots: Arc::new(store) })
    }

    /// A bundle from a PEM file's contents (one or more CERTIFICATE blocks).
    /// Reads a PEM root file: the bundle and the PEM text (proxies also hand the text to their
    /// CA client). Errors are `(path, reason)` for the caller's own error type.
    pub fn load_file(trust_domain: &str, path: &std::path::Path) -> Result<(Self, String), (String, String)> {
        let shown = || path.display().to_string();
        let pem = std::fs::read_to_string(path).map_err(|e| (shown(), e.to_string()))?;
        let bundle = Self::from_pem(trust_domain, &pem).map_err(|e| (shown(), e.to_string()))?;
        Ok((bundle, pem))
    }

    pub fn from_pem(trust_domain: &str, pem: &str) -> Result<Self, IdentityError> {
        use rustls::pki_types::pem::PemObject;
        let roots = CertificateDer::pem_slice_iter(pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| IdentityError::Trust { reason: format!("root PEM: {e}") })?;
        Self::new(trust_domain, roots)
    }

    /// The bundle a certificate's own chain implies: its last certificate as the root.
    pub fn from_cert(cert: &WorkloadCert) -> Result<Self, IdentityError> {
        Self::new(cert.identity().trust_domain(), [cert.root().clone()])
    }

    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    pub fn roots(&self) -> &Arc<RootCertStore> {
        &self.roots
    }
}

/// The peer identity of a certificate: exactly one URI SAN, a workload SPIFFE ID.
pub fn identity_of_cert(cert: &CertificateDer<'_>) -> Result<SpiffeId, TlsError> {
    let (_, parsed) = X509Certificate::from_der(cert).map_err(|e| TlsError::PeerParse(e.to_string()))?;
    let sans = uri_sans(&parsed);
    if sans.len() != 1 {
        return Err(TlsError::PeerSanCount { count: sans.len() });
    }
    sans[0]
        .parse::<SpiffeId>()
        .map_err(|e| TlsError::NotWorkload { uri: sans[0].clone(), reason: e.to_string() })
}

/// The SPIFFE ID of the peer of an established connection (client or server side).
pub fn peer_identity(conn: &CommonState) -> Result<SpiffeId, TlsError> {
    let certs = conn.peer_certificates().ok_or(TlsError::NoPeerCertificate)?;
    identity_of_cert(certs.first().ok_or(TlsError::NoPeerCertificate)?)
}

/// Our reason for refusing a peer certificate, carried inside rustls'
/// `CertificateError::Other`; its `Debug` is the readable message, since rustls prints it so.
/// Downcast `OtherError.0` to this to get the [`TlsError`].
pub struct PeerRejected(pub TlsError);

impl std::fmt::Debug for PeerRejected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(&self.0, f)
    }
}

impl std::fmt::Display for PeerRejected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(&self.0, f)
    }
}

impl std::error::Error for PeerRejected {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

fn to_rustls(e: TlsError) -> rustls::Error {
    // The handshake error carries our precise reason into the logs of both sides.
    rustls::Error::InvalidCertificate(CertificateError::Other(rustls::OtherError(Arc::new(PeerRejected(e)))))
}

/// Requires a client certificate chaining to the roots whose URI SAN is a workload identity
/// in our trust domain.
#[derive(Debug)]
struct SpiffeClientVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    trust_domain: String,
}

impl ClientCertVerifier for SpiffeClientVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.inner.verify_client_cert(end_entity, intermediates, now)?;
        let id = identity_of_cert(end_entity).map_err(to_rustls)?;
        if id.trust_domain() != self.trust_domain {
            return Err(to_rustls(TlsError::TrustDomain {
                peer: id.to_string(),
                expected: self.trust_domain.clone(),
            }));
        }
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Accepts a server certificate chaining to the roots whose URI SAN is one of `expected`.
/// The server name (SNI) is not used: identity is the SPIFFE ID.
#[derive(Debug)]
struct SpiffeServerVerifier {
    roots: Arc<RootCertStore>,
    expected: Vec<SpiffeId>,
    algs: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for SpiffeServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let parsed = ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &parsed,
            &self.roots,
            intermediates,
            now,
            self.algs.all,
        )?;
        let id = identity_of_cert(end_entity).map_err(to_rustls)?;
        if !self.expected.contains(&id) {
            return Err(to_rustls(TlsError::UnexpectedIdentity {
                peer: id.to_string(),
                expected: self.expected.iter().map(|e| e.to_string()).collect(),
            }));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

/// Server config presenting `cert` and requiring a workload client certificate from the
/// bundle's trust domain. Read the client's identity with [`peer_identity`].
pub fn server_config(cert: &WorkloadCert, trust: &TrustBundle) -> Result<ServerConfig, TlsError> {
    let provider = provider();
    let inner = WebPkiClientVerifier::builder_with_provider(trust.roots.clone(), provider.clone())
        .build()
        .map_err(|e| TlsError::Verifier(e.to_string()))?;
    let verifier = Arc::new(SpiffeClientVerifier { inner, trust_domain: trust.trust_domain.clone() });
    let resolver = Arc::new(rustls::sign::SingleCertAndKey::from(cert.certified_key()));
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(config)
}

/// Client config presenting `cert` and accepting only a server whose identity is in `expected`.
/// Use any server name when connecting (e.g. the destination IP); it is neither sent as SNI
/// nor checked.
pub fn client_config(
    cert: &WorkloadCert,
    trust: &TrustBundle,
    expected: Vec<SpiffeId>,
) -> Result<ClientConfig, TlsError> {
    if expected.is_empty() {
        return Err(TlsError::NoExpectedIdentity);
    }
    let provider = provider();
    let verifier = Arc::new(SpiffeServerVerifier {
        roots: trust.roots.clone(),
        expected,
        algs: provider.signature_verification_algorithms,
    });
    let resolver = Arc::new(rustls::sign::SingleCertAndKey::from(cert.certified_key()));
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_cert_resolver(resolver);
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    config.enable_sni = false;
    Ok(config)
}
