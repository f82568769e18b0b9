//! Workload (and node) certificates with their private keys: key generation (ECDSA P-256, in
//! this process), CSRs with exactly one URI SAN, checking what the CA returned, and a key-free
//! view for `/config_dump`.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{CertificateParams, DistinguishedName, KeyPair, PublicKeyData, SanType};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::sign::CertifiedKey;
use serde::Serialize;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

use crate::{Identity, IdentityError};

/// A freshly generated key and the PEM CSR that asks for `identity` with it.
pub struct CsrAndKey {
    pub csr_pem: String,
    key: KeyPair,
}

impl fmt::Debug for CsrAndKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CsrAndKey").field("csr_pem", &self.csr_pem).field("key", &"<redacted>").finish()
    }
}

/// Generates an ECDSA P-256 key and a CSR whose only SAN is the URI of `identity`.
pub fn new_csr(identity: &Identity) -> Result<CsrAndKey, IdentityError> {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|source| IdentityError::KeyGen { identity: identity.to_string(), source })?;
    let csr_err = |source| IdentityError::Csr { identity: identity.to_string(), source };
    let mut params = CertificateParams::default();
    // Istio's CSRs carry no subject; the identity lives in the SAN only.
    params.distinguished_name = DistinguishedName::new();
    let uri = identity.to_string().try_into().map_err(csr_err)?;
    params.subject_alt_names = vec![SanType::URI(uri)];
    let csr = params.serialize_request(&key).map_err(csr_err)?;
    let csr_pem = csr.pem().map_err(csr_err)?;
    Ok(CsrAndKey { csr_pem, key })
}

/// The URI SANs of a parsed certificate.
pub(crate) fn uri_sans(cert: &X509Certificate<'_>) -> Vec<String> {
    match cert.subject_alternative_name() {
        Ok(Some(san)) => san
            .value
            .general_names
            .iter()
            .filter_map(|n| match n {
                GeneralName::URI(u) => Some((*u).to_string()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// All SANs, printable, for dumps.
fn all_sans(cert: &X509Certificate<'_>) -> Vec<String> {
    match cert.subject_alternative_name() {
        Ok(Some(san)) => san.value.general_names.iter().map(|n| n.to_string()).collect(),
        _ => Vec::new(),
    }
}

fn to_system_time(t: x509_parser::time::ASN1Time) -> SystemTime {
    let secs = t.timestamp();
    if secs >= 0 {
        UNIX_EPOCH + Duration::from_secs(secs as u64)
    } else {
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
    }
}

fn rfc3339(t: SystemTime) -> String {
    let secs = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    };
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_else(|| secs.to_string())
}

/// A summary of one certificate of a chain, without key material.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct CertSummary {
    pub subject: String,
    pub issuer: String,
    pub serial: String,
    pub sans: Vec<String>,
    pub not_before: String,
    pub not_after: String,
}

/// What `/config_dump` shows of a certificate: never the key.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct CertDump {
    pub identity: String,
    pub serial: String,
    pub not_before: String,
    pub not_after: String,
    /// Leaf first, root last.
    pub chain: Vec<CertSummary>,
}

/// A certificate for one identity: leaf, chain up to the root, and its private key.
///
/// The key never leaves this value except into rustls (and tonic for the node certificate);
/// `Debug` redacts it and there is no `Serialize`.
pub struct WorkloadCert {
    identity: Identity,
    /// Leaf first, root last, as the CA returned it.
    chain: Vec<CertificateDer<'static>>,
    chain_pem: Vec<String>,
    key_pkcs8: Vec<u8>,
    certified: Arc<CertifiedKey>,
    serial: String,
    not_before: SystemTime,
    not_after: SystemTime,
    summaries: Vec<CertSummary>,
}

impl fmt::Debug for WorkloadCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkloadCert")
            .field("identity", &self.identity.to_string())
            .field("serial", &self.serial)
            .field("not_before", &rfc3339(self.not_before))
            .field("not_after", &rfc3339(self.not_after))
            .field("chain_len", &self.chain.len())
            .field("key", &"<redacted>")
            .finish()
    }
}

impl WorkloadCert {
    /// Checks what a CA returned for our CSR: a parsable chain whose leaf carries exactly the
    /// requested identity and certifies our key.
    pub fn from_issued(
        identity: Identity,
        csr: CsrAndKey,
        chain_pem: Vec<String>,
    ) -> Result<Self, IdentityError> {
        Self::from_parts(identity, csr.key, chain_pem)
    }

    fn from_parts(identity: Identity, key: KeyPair, chain_pem: Vec<String>) -> Result<Self, IdentityError> {
        let id = identity.to_string();
        // A CA may return one PEM string holding several certificates; split them all out.
        let mut chain = Vec::new();
        for (index, pem) in chain_pem.iter().enumerate() {
            let mut found = false;
            for der in CertificateDer::pem_slice_iter(pem.as_bytes()) {
                let der = der.map_err(|e| IdentityError::Pem {
                    identity: id.clone(),
                    index,
                    reason: e.to_string(),
                })?;
                chain.push(der);
                found = true;
            }
            if !found {
                return Err(IdentityError::Pem {
                    identity: id.clone(),
                    index,
                    reason: "no CERTIFICATE block".into(),
                });
            }
        }
        if chain.is_empty() {
            return Err(IdentityError::EmptyChain { identity: id });
        }
        let mut summaries = Vec::with_capacity(chain.len());
        let mut leaf_info = None;
        for (index, der) in chain.iter().enumerate() {
            let (_, cert) = X509Certificate::from_der(der).map_err(|e| IdentityError::Parse {
                identity: id.clone(),
                index,
                reason: e.to_string(),
            })?;
            let nb = to_system_time(cert.validity().not_before);
            let na = to_system_time(cert.validity().not_after);
            let serial = cert.tbs_certificate.raw_serial_as_string();
            summaries.push(CertSummary {
                subject: cert.subject().to_string(),
                issuer: cert.issuer().to_string(),
                serial: serial.clone(),
                sans: all_sans(&cert),
                not_before: rfc3339(nb),
                not_after: rfc3339(na),
            });
            if index == 0 {
                let sans = uri_sans(&cert);
                if sans.len() != 1 || sans[0] != id {
                    return Err(IdentityError::WrongSan { identity, found: sans });
                }
                if cert.tbs_certificate.subject_pki.raw != key.subject_public_key_info().as_slice() {
                    return Err(IdentityError::KeyMismatch { identity });
                }
                leaf_info = Some((serial, nb, na));
            }
        }
        let Some((serial, not_before, not_after)) = leaf_info else {
            return Err(IdentityError::EmptyChain { identity: id });
        };
        let key_pkcs8 = key.serialize_der();
        let signing = rustls::crypto::aws_lc_rs::default_provider()
            .key_provider
            .load_private_key(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key_pkcs8.clone())))
            .map_err(|e| IdentityError::Key { identity: id.clone(), reason: e.to_string() })?;
        // Peers hold the root already; send the leaf and any intermediates.
        let presented = if chain.len() > 1 { chain[..chain.len() - 1].to_vec() } else { chain.clone() };
        let certified = Arc::new(CertifiedKey::new(presented, signing));
        Ok(WorkloadCert {
            identity,
            chain,
            chain_pem,
            key_pkcs8,
            certified,
            serial,
            not_before,
            not_after,
            summaries,
        })
    }

    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// The leaf certificate.
    pub fn leaf(&self) -> &CertificateDer<'static> {
        &self.chain[0]
    }

    /// Leaf first, root last.
    pub fn chain(&self) -> &[CertificateDer<'static>] {
        &self.chain
    }

    /// The chain as the CA returned it (PEM), leaf first.
    pub fn chain_pem(&self) -> &[String] {
        &self.chain_pem
    }

    /// The last certificate of the chain: the CA's root as it told us.
    pub fn root(&self) -> &CertificateDer<'static> {
        &self.chain[self.chain.len() - 1]
    }

    /// The chain and key ready for rustls.
    pub fn certified_key(&self) -> Arc<CertifiedKey> {
        self.certified.clone()
    }

    pub fn serial(&self) -> &str {
        &self.serial
    }

    pub fn not_before(&self) -> SystemTime {
        self.not_before
    }

    pub fn not_after(&self) -> SystemTime {
        self.not_after
    }

    /// Whether the certificate is within its validity at `now`.
    pub fn is_valid_at(&self, now: SystemTime) -> bool {
        self.not_before <= now && now < self.not_after
    }

    /// The key-free view for `/config_dump`.
    pub fn to_dump(&self) -> CertDump {
        CertDump {
            identity: self.identity.to_string(),
            serial: self.serial.clone(),
            not_before: rfc3339(self.not_before),
            not_after: rfc3339(self.not_after),
            chain: self.summaries.clone(),
        }
    }

    /// PEM of the leaf followed by the intermediates, and the PKCS#8 key PEM, for tonic's client
    /// identity (the node certificate towards the CA). Crate-private so keys stay in-process.
    pub(crate) fn identity_pem(&self) -> (String, String) {
        let n = if self.chain_pem.len() > 1 { self.chain_pem.len() - 1 } else { 1 };
        let certs = self.chain_pem[..n].join("\n");
        let key = pem_encode("PRIVATE KEY", &self.key_pkcs8);
        (certs, key)
    }
}

/// Minimal PEM encoder (base64, 64-column lines) so the key never passes through a logger.
pub(crate) fn pem_encode(label: &str, der: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut b64 = String::with_capacity(der.len().div_ceil(3) * 4);
    for chunk in der.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                b64.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                b64.push('=');
            }
        }
    }
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// A self-contained signer for tests and tools: a CA in this process that answers CSRs like
/// mesh-ca does for the parts the identity crate relies on (SAN copied, validity honoured).
pub mod local {
    use super::*;
    use rcgen::{
        BasicConstraints, CertificateSigningRequestParams, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyUsagePurpose,
    };

    /// An in-process CA: a self-signed root that signs CSRs.
    pub struct LocalCa {
        issuer: Issuer<'static, KeyPair>,
        root_pem: String,
        root_der: CertificateDer<'static>,
    }

    impl fmt::Debug for LocalCa {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("LocalCa").field("key", &"<redacted>").finish()
        }
    }

    impl LocalCa {
        /// Creates a root named `name` valid for ten years.
        pub fn new(name: &str) -> Result<Self, rcgen::Error> {
            let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
            let mut params = CertificateParams::default();
            params.distinguished_name = DistinguishedName::new();
            params.distinguished_name.push(rcgen::DnType::OrganizationName, name);
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
            let now = time::OffsetDateTime::now_utc();
            params.not_before = now - time::Duration::minutes(1);
            params.not_after = now + time::Duration::days(3650);
            let cert = params.self_signed(&key)?;
            Ok(LocalCa {
                issuer: Issuer::new(params, key),
                root_pem: cert.pem(),
                root_der: cert.der().clone(),
            })
        }

        pub fn root_pem(&self) -> &str {
            &self.root_pem
        }

        pub fn root_der(&self) -> &CertificateDer<'static> {
            &self.root_der
        }

        /// Signs `csr_pem` valid from `not_before` for `validity`; returns leaf and root PEM.
        pub fn sign(
            &self,
            csr_pem: &str,
            not_before: SystemTime,
            validity: Duration,
        ) -> Result<Vec<String>, rcgen::Error> {
            let csr = CertificateSigningRequestParams::from_pem(csr_pem)?;
            let mut params = CertificateParams::default();
            params.distinguished_name = DistinguishedName::new();
            params.subject_alt_names = csr.params.subject_alt_names.clone();
            params.is_ca = IsCa::ExplicitNoCa;
            params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
            params.extended_key_usages =
                vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
            params.not_before = time::OffsetDateTime::from(not_before);
            params.not_after = time::OffsetDateTime::from(not_before + validity);
            let mut serial = [0u8; 16];
            rand::Rng::fill(&mut rand::rng(), &mut serial[..]);
            serial[0] &= 0x7f;
            params.serial_number = Some(rcgen::SerialNumber::from_slice(&serial));
            let leaf = params.signed_by(&csr.public_key, &self.issuer)?;
            Ok(vec![leaf.pem(), self.root_pem.clone()])
        }

        /// Issues a certificate for `identity` directly (key made here), e.g. for test peers.
        pub fn issue(
            &self,
            identity: &Identity,
            not_before: SystemTime,
            validity: Duration,
        ) -> Result<WorkloadCert, IdentityError> {
            let csr = new_csr(identity)?;
            let chain = self
                .sign(&csr.csr_pem, not_before, validity)
                .map_err(|source| IdentityError::Csr { identity: identity.to_string(), source })?;
            WorkloadCert::from_issued(identity.clone(), csr, chain)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::local::LocalCa;
    use super::*;

    #[test]
    fn issue_and_dump_without_key() {
        let ca = LocalCa::new("test").unwrap();
        let id = Identity::parse_uri("spiffe://cluster.local/ns/a/sa/b").unwrap();
        let cert = ca.issue(&id, SystemTime::now(), Duration::from_secs(3600)).unwrap();
        assert_eq!(cert.chain().len(), 2);
        assert!(cert.is_valid_at(SystemTime::now()));
        let dump = serde_json::to_string(&cert.to_dump()).unwrap();
        assert!(dump.contains("spiffe://cluster.local/ns/a/sa/b"));
        assert!(!dump.contains("PRIVATE"));
        let dbg = format!("{cert:?}");
        assert!(dbg.contains("<redacted>"));
        let (_, key_pem) = cert.identity_pem();
        assert!(key_pem.starts_with("-----BEGIN PRIVATE KEY-----"));
        assert!(PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).is_ok());
        assert!(!dbg.contains(key_pem.lines().nth(1).unwrap()));
    }

    #[test]
    fn refuses_wrong_san_and_foreign_key() {
        let ca = LocalCa::new("test").unwrap();
        let asked = Identity::parse_uri("spiffe://cluster.local/ns/a/sa/b").unwrap();
        let other = Identity::parse_uri("spiffe://cluster.local/ns/a/sa/c").unwrap();
        let csr = new_csr(&other).unwrap();
        let chain = ca.sign(&csr.csr_pem, SystemTime::now(), Duration::from_secs(60)).unwrap();
        let err = WorkloadCert::from_issued(asked.clone(), csr, chain).unwrap_err();
        assert!(matches!(err, IdentityError::WrongSan { .. }), "{err}");

        let csr1 = new_csr(&asked).unwrap();
        let csr2 = new_csr(&asked).unwrap();
        let chain = ca.sign(&csr1.csr_pem, SystemTime::now(), Duration::from_secs(60)).unwrap();
        let err = WorkloadCert::from_issued(asked, csr2, chain).unwrap_err();
        assert!(matches!(err, IdentityError::KeyMismatch { .. }), "{err}");
    }
}
