//! What the CA signs and how: CSR checks (signature, key type, exactly one URI SAN, no CA
//! request) and issuing the leaf (SAN copied, serverAuth+clientAuth, not a CA, validity
//! clamped to the maximum, notBefore backdated one minute for clock skew).
//!
//! Accepted keys: ECDSA P-256 (what our proxies make), and for istio-proxy compatibility
//! ECDSA P-384 and RSA of at least 2048 bits.

use std::time::Duration;

use mesh_identity::Identity;
use rcgen::{
    CertificateParams, CertificateSigningRequestParams, DistinguishedName, ExtendedKeyUsagePurpose, IsCa,
    KeyUsagePurpose, SanType,
};
use rustls_pki_types::CertificateSigningRequestDer;
use rustls_pki_types::pem::PemObject;
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::FromDer;
use x509_parser::public_key::PublicKey;

use crate::state::RootCa;

const OID_P256: &str = "1.2.840.10045.3.1.7";
const OID_P384: &str = "1.3.132.0.34";

/// The key type of a CSR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    EcdsaP256,
    EcdsaP384,
    Rsa { bits: usize },
}

/// Why a CSR is refused. `Problems` lists every problem found at once.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CsrError {
    #[error("csr is not a PEM CERTIFICATE REQUEST: {0}")]
    Pem(String),
    #[error("csr cannot be parsed: {0}")]
    Parse(String),
    #[error("csr signature does not verify")]
    Signature,
    #[error("csr: {}", .0.join("; "))]
    Problems(Vec<String>),
}

/// A CSR that passed every check.
#[derive(Debug)]
pub struct CheckedCsr {
    /// The identity in its only SAN.
    pub identity: Identity,
    pub key: KeyKind,
    params: CertificateSigningRequestParams,
}

/// Checks a PEM CSR: parsable, self-signature valid, an accepted key type whose signature
/// algorithm fits it, exactly one SAN which is a SPIFFE URI, no CA request.
pub fn check_csr(pem: &str) -> Result<CheckedCsr, CsrError> {
    let der = CertificateSigningRequestDer::from_pem_slice(pem.as_bytes())
        .map_err(|e| CsrError::Pem(e.to_string()))?;
    let (_, req) = X509CertificationRequest::from_der(&der).map_err(|e| CsrError::Parse(e.to_string()))?;
    req.verify_signature().map_err(|_| CsrError::Signature)?;
    let mut problems = Vec::new();

    let spki = &req.certification_request_info.subject_pki;
    let key = match spki.parsed() {
        Ok(PublicKey::EC(_)) => {
            let curve =
                spki.algorithm.parameters.as_ref().and_then(|p| p.as_oid().ok()).map(|o| o.to_id_string());
            match curve.as_deref() {
                Some(OID_P256) => Some(KeyKind::EcdsaP256),
                Some(OID_P384) => Some(KeyKind::EcdsaP384),
                other => {
                    problems.push(format!(
                        "key: ECDSA curve {} is not accepted (P-256 or P-384)",
                        other.unwrap_or("<missing>")
                    ));
                    None
                }
            }
        }
        Ok(PublicKey::RSA(rsa)) => {
            let bits = rsa.key_size();
            if bits < 2048 {
                problems.push(format!("key: RSA {bits} bits is too short (at least 2048)"));
                None
            } else {
                Some(KeyKind::Rsa { bits })
            }
        }
        Ok(_) => {
            let oid = spki.algorithm.algorithm.to_id_string();
            let name = match oid.as_str() {
                "1.3.101.112" => "Ed25519",
                "1.3.101.113" => "Ed448",
                "1.2.840.10040.4.1" => "DSA",
                _ => oid.as_str(),
            };
            problems.push(format!("key: {name} keys are not accepted (ECDSA P-256, P-384 or RSA >= 2048)"));
            None
        }
        Err(e) => {
            problems.push(format!("key: cannot be parsed: {e}"));
            None
        }
    };

    let mut sans = Vec::new();
    let mut is_ca = false;
    if let Some(exts) = req.requested_extensions() {
        for ext in exts {
            match ext {
                ParsedExtension::SubjectAlternativeName(san) => {
                    sans.extend(san.general_names.iter().cloned())
                }
                ParsedExtension::BasicConstraints(bc) => is_ca |= bc.ca,
                _ => {}
            }
        }
    }
    if is_ca {
        problems.push("basicConstraints: asks for a CA certificate".into());
    }
    let mut identity = None;
    match sans.as_slice() {
        [GeneralName::URI(uri)] => match Identity::parse_uri(uri) {
            Ok(id) => identity = Some(id),
            Err(e) => problems.push(format!("SAN: {e}")),
        },
        [other] => problems.push(format!("SAN: {} is not a SPIFFE URI", name_text(other))),
        [] => problems.push("SAN: none, expected exactly one SPIFFE URI".into()),
        many => problems.push(format!(
            "SAN: {} names ({}), expected exactly one SPIFFE URI",
            many.len(),
            many.iter().map(name_text).collect::<Vec<_>>().join(", ")
        )),
    }

    // rcgen re-verifies and gives us the public key in the form it signs.
    let params = match CertificateSigningRequestParams::from_der(&der) {
        Ok(p) => Some(p),
        Err(rcgen::Error::UnsupportedExtension) => {
            problems.push(
                "extensions: only SAN, key usage, extended key usage and basic constraints are accepted"
                    .into(),
            );
            None
        }
        Err(e) => {
            problems.push(format!("csr: {e}"));
            None
        }
    };
    if let (Some(p), Some(k)) = (&params, key) {
        let alg = p.public_key.algorithm();
        let fits = match k {
            KeyKind::EcdsaP256 => *alg == rcgen::PKCS_ECDSA_P256_SHA256,
            KeyKind::EcdsaP384 => *alg == rcgen::PKCS_ECDSA_P384_SHA384,
            KeyKind::Rsa { .. } => {
                *alg == rcgen::PKCS_RSA_SHA256
                    || *alg == rcgen::PKCS_RSA_SHA384
                    || *alg == rcgen::PKCS_RSA_SHA512
            }
        };
        if !fits {
            problems.push(format!("signature algorithm {alg:?} does not fit the {k:?} key"));
        }
    }
    match (problems.is_empty(), identity, key, params) {
        (true, Some(identity), Some(key), Some(params)) => Ok(CheckedCsr { identity, key, params }),
        _ => Err(CsrError::Problems(problems)),
    }
}

/// A SAN as `URI:...`, `DNS:...`, `IP:...` for messages.
fn name_text(n: &GeneralName<'_>) -> String {
    match n {
        GeneralName::URI(u) => format!("URI:{u}"),
        GeneralName::DNSName(d) => format!("DNS:{d}"),
        GeneralName::RFC822Name(e) => format!("email:{e}"),
        GeneralName::IPAddress(b) => match b.len() {
            4 => format!("IP:{}", std::net::Ipv4Addr::from(<[u8; 4]>::try_from(*b).unwrap_or_default())),
            16 => format!("IP:{}", std::net::Ipv6Addr::from(<[u8; 16]>::try_from(*b).unwrap_or_default())),
            _ => "IP:<malformed>".to_string(),
        },
        other => other.to_string(),
    }
}

/// Signs checked CSRs with the root.
#[derive(Debug)]
pub struct Authority {
    root: RootCa,
    /// Lifetime when a request asks for 0.
    pub default_ttl: Duration,
    /// Longest lifetime issued.
    pub max_ttl: Duration,
}

impl Authority {
    pub fn new(root: RootCa, default_ttl: Duration, max_ttl: Duration) -> Self {
        Authority { root, default_ttl, max_ttl }
    }

    pub fn root(&self) -> &RootCa {
        &self.root
    }

    /// The lifetime given for a requested `validity_duration` (seconds): 0 → default, capped
    /// at the maximum. `None` for a negative request.
    pub fn effective_ttl(&self, requested_secs: i64) -> Option<Duration> {
        match requested_secs {
            0 => Some(self.default_ttl),
            s if s > 0 => Some(Duration::from_secs(s as u64).min(self.max_ttl)),
            _ => None,
        }
    }

    /// Issues the leaf for `csr`, valid from one minute before `now` until `now + ttl`.
    /// Returns the chain as PEM, leaf first, then the signing CA and any intermediates, root last.
    pub fn issue_at(
        &self,
        csr: &CheckedCsr,
        now: time::OffsetDateTime,
        ttl: Duration,
    ) -> Result<Vec<String>, rcgen::Error> {
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.subject_alt_names = vec![SanType::URI(csr.identity.to_string().try_into()?)];
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = match csr.key {
            KeyKind::Rsa { .. } => vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment],
            _ => vec![KeyUsagePurpose::DigitalSignature],
        };
        params.extended_key_usages =
            vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        params.not_before = now - time::Duration::minutes(1);
        params.not_after = now + ttl;
        let mut serial = [0u8; 16];
        rand::Rng::fill(&mut rand::rng(), &mut serial[..]);
        serial[0] &= 0x7f;
        params.serial_number = Some(rcgen::SerialNumber::from_slice(&serial));
        let leaf = params.signed_by(&csr.params.public_key, &self.root.issuer)?;
        let mut chain = Vec::with_capacity(1 + self.root.chain_pem.len());
        chain.push(leaf.pem());
        chain.extend(self.root.chain_pem.iter().cloned());
        Ok(chain)
    }

    /// Issues the leaf valid from now (see [`Authority::issue_at`]).
    pub fn issue(&self, csr: &CheckedCsr, ttl: Duration) -> Result<Vec<String>, rcgen::Error> {
        self.issue_at(csr, time::OffsetDateTime::now_utc(), ttl)
    }
}
