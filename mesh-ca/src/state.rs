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
    pub(crate) cert_pem: String,
    /// Where the root certificate lives (for operators and clients).
    pub cert_path: PathBuf,
}

impl std::fmt::Debug for RootCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RootCa").field("cert_path", &self.cert_path).field("key", &"<redacted>").finish()
    }
}

impl RootCa {
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
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
        // Key first, written 0600 from the start: it must never exist world-readable.
        write_new(&key, key_pair.serialize_pem().as_bytes(), 0o600)?;
        write_new(&cert, root.pem().as_bytes(), 0o644)?;
        tracing::info!(cert = %cert.display(), key = %key.display(), "generated a new root CA");
        Ok(RootCa { issuer: Issuer::new(params, key_pair), cert_pem: root.pem(), cert_path: cert })
    }

    fn load(cert_path: &Path, key_path: &Path) -> Result<Self, StateError> {
        let invalid =
            |path: &Path, reason: String| StateError::Invalid { path: path.display().to_string(), reason };
        let cert_pem = std::fs::read_to_string(cert_path).map_err(io_err(cert_path))?;
        let key_pem = std::fs::read_to_string(key_path).map_err(io_err(key_path))?;
        let mode = std::fs::metadata(key_path).map_err(io_err(key_path))?.permissions().mode();
        if mode & 0o077 != 0 {
            tracing::warn!(key = %key_path.display(), mode = format!("{:o}", mode & 0o777), "root key file is readable by others; use mode 0600");
        }
        let key = KeyPair::from_pem(&key_pem)
            .map_err(|e| invalid(key_path, format!("not a usable private key: {e}")))?;
        let der = rustls_pki_types::pem::PemObject::from_pem_slice(cert_pem.as_bytes())
            .map_err(|e| invalid(cert_path, format!("not a PEM certificate: {e}")))?;
        let der: rustls_pki_types::CertificateDer<'static> = der;
        let (_, x509) =
            X509Certificate::from_der(&der).map_err(|e| invalid(cert_path, format!("cannot parse: {e}")))?;
        if x509.tbs_certificate.subject_pki.raw != key.subject_public_key_info().as_slice() {
            return Err(invalid(key_path, format!("does not match the certificate {}", cert_path.display())));
        }
        if !x509.is_ca() {
            return Err(invalid(cert_path, "is not a CA certificate (basicConstraints CA:false)".into()));
        }
        let issuer = Issuer::from_ca_cert_der(&der, key)
            .map_err(|e| invalid(cert_path, format!("cannot be used as issuer: {e}")))?;
        Ok(RootCa { issuer, cert_pem, cert_path: cert_path.to_path_buf() })
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
        Ok((format!("{}{}", cert.pem(), self.cert_pem), key.serialize_pem()))
    }
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
