//! The CA's key material: the root certificate and key, loaded from configured files or
//! generated into the state folder on first start (key file mode 0600) and reused after, and
//! the serving certificate for the gRPC endpoint, made fresh at each start.

use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
    KeyPair, KeyUsagePurpose, PublicKeyData, SanType,
};
use x509_parser::prelude::{FromDer, X509Certificate};

/// Root certificate file name in the state folder.
pub const ROOT_CERT_FILE: &str = "root-cert.pem";
/// Root key file name in the state folder (mode 0600).
pub const ROOT_KEY_FILE: &str = "root-key.pem";

/// The CA's root could not be loaded or created.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{path}: {reason}")]
    Invalid { path: String, reason: String },
    #[error("generating {what}: {source}")]
    Generate { what: &'static str, source: rcgen::Error },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> StateError + '_ {
    move |source| StateError::Io { path: path.display().to_string(), source }
}

/// The root that signs everything.
pub struct RootCa {
    pub(crate) issuer: Issuer<'static, KeyPair>,
    /// The trust anchor clients hold (the root; for a plug-in CA, its `root-cert.pem`).
    pub(crate) cert_pem: String,
    /// What follows an issued leaf: the signing certificate, any intermediates, the root last.
    pub(crate) chain_pem: Vec<String>,
    /// Where the root certificate lives (for operators and clients).
    pub cert_path: PathBuf,
}

impl std::fmt::Debug for RootCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RootCa").field("cert_path", &self.cert_path).field("key", &"<redacted>").finish()
    }
}

impl RootCa {
    /// The trust anchor (PEM).
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The certificates after an issued leaf, root last (PEM each).
    pub fn chain_pem(&self) -> &[String] {
        &self.chain_pem
    }

    /// Loads the configured root, or the one in `state_dir`, or generates one there.
    pub fn load_or_create(
        configured: Option<(&Path, &Path)>,
        state_dir: &Path,
        trust_domain: &str,
    ) -> Result<Self, StateError> {
        if let Some((cert, key)) = configured {
            return Self::load(cert, key);
        }
        let cert = state_dir.join(ROOT_CERT_FILE);
        let key = state_dir.join(ROOT_KEY_FILE);
        if cert.exists() || key.exists() {
            return Self::load(&cert, &key);
        }
        std::fs::create_dir_all(state_dir).map_err(io_err(state_dir))?;
        let (mut root, key_pem) = Self::generate(trust_domain)?;
        // Key first, written 0600 from the start: it must never exist world-readable.
        write_new(&key, key_pem.as_bytes(), 0o600)?;
        write_new(&cert, root.cert_pem.as_bytes(), 0o644)?;
        tracing::info!(cert = %cert.display(), key = %key.display(), "generated a new root CA");
        root.cert_path = cert;
        Ok(root)
    }

    /// A new self-signed root (ECDSA P-256, 10 years) and its key as PKCS#8 PEM, which the
    /// caller stores (a file or a Secret). `cert_path` is left empty.
    pub fn generate(trust_domain: &str) -> Result<(Self, String), StateError> {
        let key_pair = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(|source| StateError::Generate { what: "root key", source })?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::OrganizationName, trust_domain);
        params.distinguished_name.push(DnType::CommonName, "mesh-ca root");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::minutes(1);
        params.not_after = now + time::Duration::days(3650);
        let root = params
            .self_signed(&key_pair)
            .map_err(|source| StateError::Generate { what: "root certificate", source })?;
        let key_pem = key_pair.serialize_pem();
        let cert_pem = root.pem();
        let ca = RootCa {
            issuer: Issuer::new(params, key_pair),
            chain_pem: vec![cert_pem.clone()],
            cert_pem,
            cert_path: PathBuf::new(),
        };
        Ok((ca, key_pem))
    }

    fn load(cert_path: &Path, key_path: &Path) -> Result<Self, StateError> {
        let cert_pem = std::fs::read_to_string(cert_path).map_err(io_err(cert_path))?;
        let key_pem = std::fs::read_to_string(key_path).map_err(io_err(key_path))?;
        let mode = std::fs::metadata(key_path).map_err(io_err(key_path))?.permissions().mode();
        if mode & 0o077 != 0 {
            tracing::warn!(key = %key_path.display(), mode = format!("{:o}", mode & 0o777), "root key file is readable by others; use mode 0600");
        }
        let mut ca = Self::from_pem(&cert_pem, &key_pem, None, None, &cert_path.display().to_string())?;
        ca.cert_path = cert_path.to_path_buf();
        Ok(ca)
    }

    /// A signing CA from PEM text: `cert_pem` with its PKCS#8/SEC1 `key_pem`; for an
    /// intermediate (plug-in) CA also the `chain_pem` from it up to the root and the `root_pem`
    /// clients trust. `origin` names where the text came from in errors. `cert_path` is left
    /// empty.
    pub fn from_pem(
        cert_pem: &str,
        key_pem: &str,
        chain_pem: Option<&str>,
        root_pem: Option<&str>,
        origin: &str,
    ) -> Result<Self, StateError> {
        let invalid =
            |what: &str, reason: String| StateError::Invalid { path: format!("{origin}{what}"), reason };
        let key = KeyPair::from_pem(key_pem)
            .map_err(|e| invalid(" (key)", format!("not a usable private key: {e}")))?;
        let der = first_cert(cert_pem).map_err(|e| invalid("", e))?;
        let (_, x509) =
            X509Certificate::from_der(&der).map_err(|e| invalid("", format!("cannot parse: {e}")))?;
        if x509.tbs_certificate.subject_pki.raw != key.subject_public_key_info().as_slice() {
            return Err(invalid(" (key)", "does not match the certificate".into()));
        }
        if !x509.is_ca() {
            return Err(invalid("", "is not a CA certificate (basicConstraints CA:false)".into()));
        }
        let issuer = Issuer::from_ca_cert_der(&der.as_slice().into(), key)
            .map_err(|e| invalid("", format!("cannot be used as issuer: {e}")))?;
        let signing_pem = pem_block(&der);
        let root_pem = match root_pem {
            Some(r) => pem_block(&first_cert(r).map_err(|e| invalid(" (root)", e))?),
            None => signing_pem.clone(),
        };
        let mut chain: Vec<String> =
            match chain_pem.map(all_certs).transpose().map_err(|e| invalid(" (chain)", e))? {
                Some(c) if !c.is_empty() => c.iter().map(|d| pem_block(d)).collect(),
                _ => vec![signing_pem.clone()],
            };
        if chain[0] != signing_pem {
            chain.insert(0, signing_pem);
        }
        if chain.last() != Some(&root_pem) {
            chain.push(root_pem.clone());
        }
        Ok(RootCa { issuer, cert_pem: root_pem, chain_pem: chain, cert_path: PathBuf::new() })
    }

    /// A serving certificate for the gRPC endpoint: DNS SANs `mesh-ca`, `localhost`, the extra
    /// names, and the listen IP. Returns (chain PEM, key PEM).
    pub fn serving_cert(&self, names: &[String], ip: Option<IpAddr>) -> Result<(String, String), StateError> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(|source| StateError::Generate { what: "serving key", source })?;
        let mut dns: Vec<String> = vec!["mesh-ca".into(), "localhost".into()];
        dns.extend(names.iter().cloned());
        let mut params = CertificateParams::new(dns)
            .map_err(|source| StateError::Generate { what: "serving certificate", source })?;
        if let Some(ip) = ip.filter(|ip| !ip.is_unspecified()) {
            params.subject_alt_names.push(SanType::IpAddress(ip));
        }
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, "mesh-ca");
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::minutes(1);
        params.not_after = now + time::Duration::days(365);
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(|source| StateError::Generate { what: "serving certificate", source })?;
        Ok((format!("{}{}", cert.pem(), self.chain_pem.concat()), key.serialize_pem()))
    }
}

fn first_cert(pem: &str) -> Result<Vec<u8>, String> {
    all_certs(pem)?.into_iter().next().ok_or_else(|| "no CERTIFICATE block".to_string())
}

fn all_certs(pem: &str) -> Result<Vec<Vec<u8>>, String> {
    use rustls_pki_types::pem::PemObject;
    rustls_pki_types::CertificateDer::pem_slice_iter(pem.as_bytes())
        .map(|c| c.map(|d| d.to_vec()).map_err(|e| format!("not a PEM certificate: {e}")))
        .collect()
}

/// DER to one PEM CERTIFICATE block, so certificates from different sources compare equal.
fn pem_block(der: &[u8]) -> String {
    ::pem::encode(&::pem::Pem::new("CERTIFICATE", der.to_vec())).replace("\r\n", "\n")
}

/// Creates `path` with `mode` (failing if it exists) and writes `data` to it.
fn write_new(path: &Path, data: &[u8], mode: u32) -> Result<(), StateError> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(io_err(path))?;
    f.write_all(data).map_err(io_err(path))?;
    f.sync_all().map_err(io_err(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An intermediate CA signed by `root`, as (cert PEM, key PEM).
    fn intermediate(root: &RootCa) -> (String, String) {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut p = CertificateParams::default();
        p.distinguished_name.push(DnType::CommonName, "intermediate");
        p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
        (p.signed_by(&key, &root.issuer).unwrap().pem(), key.serialize_pem())
    }

    #[test]
    fn plugin_ca_chain_in_istio_layout() {
        let (root, _) = RootCa::generate("cluster.local").unwrap();
        let (inter, inter_key) = intermediate(&root);
        let root_pem = root.cert_pem().to_string();
        // cert-chain.pem from the intermediate up to the root, as Istio's tooling writes it.
        let chain = format!("{inter}{root_pem}");
        let ca = RootCa::from_pem(&inter, &inter_key, Some(&chain), Some(&root_pem), "secret s").unwrap();
        assert_eq!(ca.cert_pem(), root_pem.replace("\r\n", "\n"));
        assert_eq!(ca.chain_pem().len(), 2);
        assert!(ca.chain_pem()[1] == ca.cert_pem(), "root last");
        // Without cert-chain.pem the chain is the CA certificate, then the root.
        let ca = RootCa::from_pem(&inter, &inter_key, None, Some(&root_pem), "secret s").unwrap();
        assert_eq!(ca.chain_pem().len(), 2);
        // A self-signed root is its own chain.
        assert_eq!(root.chain_pem(), [root.cert_pem().to_string()]);
    }

    #[test]
    fn plugin_ca_errors_name_the_origin() {
        let (root, root_key) = RootCa::generate("cluster.local").unwrap();
        let (inter, _) = intermediate(&root);
        let e = RootCa::from_pem(&inter, &root_key, None, None, "secret mesh-system/cacerts").unwrap_err();
        assert_eq!(e.to_string(), "secret mesh-system/cacerts (key): does not match the certificate");
        let e = RootCa::from_pem("junk", &root_key, None, None, "secret x").unwrap_err().to_string();
        assert!(e.starts_with("secret x: "), "{e}");
        let e = RootCa::from_pem(root.cert_pem(), "junk", None, None, "secret x").unwrap_err().to_string();
        assert!(e.contains("secret x (key): not a usable private key"), "{e}");
    }
}
