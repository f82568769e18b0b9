//! Starts a real etcd and kube-apiserver (binaries from `ETCD` and `KUBE_APISERVER`) for the
//! integration suite, with a generated serving CA, an admin client certificate in
//! `system:masters`, a ServiceAccount signing key (so TokenRequest and TokenReview work) and RBAC
//! authorization. Everything lives in a temp dir and is torn down when [`Cluster`] is dropped.
//!
//! There is no kubelet and no controller-manager: pods are created with `spec.nodeName` and their
//! status is patched by the test ([`Cluster::run_pod`]); ServiceAccounts are created explicitly.

mod objects;
mod process;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
    KeyPair, KeyUsagePurpose, SanType,
};

pub use objects::PodSpec;
use process::Proc;

/// What the suite prints when the API server binary is not given.
pub const NOT_RUN: &str =
    "NOT RUN: KUBE_APISERVER is not set (kube-apiserver binary); see tests/kube/README.md";

/// How long the API server may take to become ready (it is slow on a loaded 2-core machine).
pub const READY_TIMEOUT: Duration = Duration::from_secs(120);

/// The ServiceAccount token issuer the API server is started with.
pub const SA_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

/// The binaries, from the environment.
#[derive(Debug, Clone)]
pub struct Binaries {
    pub kube_apiserver: PathBuf,
    pub etcd: PathBuf,
}

impl Binaries {
    /// `None` when `KUBE_APISERVER` is unset: the suite must not run (and must say so).
    /// `ETCD` defaults to `etcd` on `PATH`.
    pub fn from_env() -> Option<Binaries> {
        let api = std::env::var_os("KUBE_APISERVER").filter(|v| !v.is_empty())?;
        let etcd = std::env::var_os("ETCD").filter(|v| !v.is_empty()).unwrap_or_else(|| "etcd".into());
        Some(Binaries { kube_apiserver: api.into(), etcd: etcd.into() })
    }
}

/// Writes the NOT RUN line straight to the process's stderr (not the test harness's captured
/// output), so it shows in every `cargo test` run.
pub fn report_not_run(test: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{test}: {NOT_RUN}");
}

/// A running etcd + kube-apiserver pair and an admin client.
pub struct Cluster {
    /// Admin client (`system:masters`).
    pub client: kube::Client,
    /// Kubeconfig file with the admin credential (paths to files in the temp dir).
    pub kubeconfig: PathBuf,
    /// `https://127.0.0.1:<port>`.
    pub server: String,
    /// PEM of the CA that signed the API server's serving certificate.
    pub ca_pem: String,
    // Dropped in field order: the API server stops before etcd, the temp dir goes last.
    apiserver: Proc,
    etcd: Proc,
    dir: tempfile::TempDir,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster").field("server", &self.server).field("dir", &self.dir.path()).finish()
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn write(path: &Path, data: &str, mode: u32) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(data.as_bytes()).with_context(|| format!("writing {}", path.display()))
}

/// Test PKI: a CA, the API server's serving cert, the admin client cert, the SA signing key.
struct Pki {
    ca_pem: String,
}

impl Pki {
    fn create(dir: &Path) -> anyhow::Result<Pki> {
        let ca_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut ca = CertificateParams::default();
        ca.distinguished_name = DistinguishedName::new();
        ca.distinguished_name.push(DnType::CommonName, "mesh-kube-it CA");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
        let ca_cert = ca.self_signed(&ca_key)?;
        let ca_pem = ca_cert.pem();
        let issuer = Issuer::new(ca, ca_key);

        let serving_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut serving =
            CertificateParams::new(vec!["localhost".to_string(), "kubernetes.default.svc".to_string()])?;
        serving.subject_alt_names.push(SanType::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()));
        serving.distinguished_name = DistinguishedName::new();
        serving.distinguished_name.push(DnType::CommonName, "kube-apiserver");
        serving.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let serving_cert = serving.signed_by(&serving_key, &issuer)?;

        let admin_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut admin = CertificateParams::default();
        admin.distinguished_name = DistinguishedName::new();
        admin.distinguished_name.push(DnType::CommonName, "mesh-kube-it-admin");
        admin.distinguished_name.push(DnType::OrganizationName, "system:masters");
        admin.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let admin_cert = admin.signed_by(&admin_key, &issuer)?;

        let sa_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;

        write(&dir.join("ca.crt"), &ca_pem, 0o644)?;
        write(&dir.join("apiserver.crt"), &format!("{}{}", serving_cert.pem(), ca_pem), 0o644)?;
        write(&dir.join("apiserver.key"), &serving_key.serialize_pem(), 0o600)?;
        write(&dir.join("admin.crt"), &admin_cert.pem(), 0o644)?;
        write(&dir.join("admin.key"), &admin_key.serialize_pem(), 0o600)?;
        write(&dir.join("sa.key"), &sa_key.serialize_pem(), 0o600)?;
        // The API server's public-key reader does not take PKCS#8 private keys: give it the SPKI.
        write(&dir.join("sa.pub"), &sa_key.public_key_pem(), 0o644)?;
        Ok(Pki { ca_pem })
    }
}

impl Cluster {
    /// Starts etcd and the API server and waits for `/readyz`. Any failure is an error
    /// carrying the tail of the failing process's log.
    pub async fn start(bins: &Binaries) -> anyhow::Result<Cluster> {
        let dir = tempfile::Builder::new().prefix("mesh-kube-it-").tempdir()?;
        let d = dir.path();
        let pki = Pki::create(d)?;

        let (client_port, peer_port) = (free_port()?, free_port()?);
        let etcd_url = format!("http://127.0.0.1:{client_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        let etcd = Proc::spawn(
            "etcd",
            &bins.etcd,
            &[
                "--name=it".into(),
                format!("--data-dir={}", d.join("etcd").display()),
                format!("--listen-client-urls={etcd_url}"),
                format!("--advertise-client-urls={etcd_url}"),
                format!("--listen-peer-urls={peer_url}"),
                format!("--initial-advertise-peer-urls={peer_url}"),
                format!("--initial-cluster=it={peer_url}"),
                "--log-level=warn".into(),
            ],
            &d.join("etcd.log"),
        )?;

        let port = free_port()?;
        let p = |f: &str| d.join(f).display().to_string();
        let apiserver = Proc::spawn(
            "kube-apiserver",
            &bins.kube_apiserver,
            &[
                format!("--etcd-servers={etcd_url}"),
                "--bind-address=127.0.0.1".into(),
                "--advertise-address=127.0.0.1".into(),
                format!("--secure-port={port}"),
                format!("--cert-dir={}", p("certs")),
                format!("--tls-cert-file={}", p("apiserver.crt")),
                format!("--tls-private-key-file={}", p("apiserver.key")),
                format!("--client-ca-file={}", p("ca.crt")),
                format!("--service-account-issuer={SA_ISSUER}"),
                format!("--service-account-key-file={}", p("sa.pub")),
                format!("--service-account-signing-key-file={}", p("sa.key")),
                "--authorization-mode=RBAC".into(),
                "--service-cluster-ip-range=10.96.0.0/24".into(),
                "--enable-priority-and-fairness=false".into(),
                "--profiling=false".into(),
                "--v=1".into(),
            ],
            &d.join("kube-apiserver.log"),
        )?;

        let kubeconfig = d.join("kubeconfig");
        let server = format!("https://127.0.0.1:{port}");
        write(&kubeconfig, &kubeconfig_text(&server, d), 0o600)?;
        let mut cluster = Cluster {
            client: admin_client(&kubeconfig).await?,
            kubeconfig,
            server,
            ca_pem: pki.ca_pem,
            apiserver,
            etcd,
            dir,
        };
        cluster.wait_ready().await?;
        Ok(cluster)
    }

    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            for p in [&mut self.etcd, &mut self.apiserver] {
                if let Some(status) = p.exited()? {
                    bail!(
                        "{} exited with {status} before the API server was ready\n{}",
                        p.name,
                        p.log_tail()
                    );
                }
            }
            let req = http::Request::get("/readyz").body(Vec::new())?;
            let last = match self.client.request_text(req).await {
                Ok(body) if body.trim() == "ok" => return Ok(()),
                Ok(body) => body,
                Err(e) => e.to_string(),
            };
            if Instant::now() > deadline {
                bail!(
                    "kube-apiserver not ready after {:?}: {last}\n{}",
                    READY_TIMEOUT,
                    self.apiserver.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// The temp dir holding the PKI, logs and etcd data.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Writes a kubeconfig named `name` in the temp dir that authenticates with `token` (e.g. a
    /// ServiceAccount token), for programs under test that take a kubeconfig.
    pub fn token_kubeconfig(&self, name: &str, token: &str) -> anyhow::Result<PathBuf> {
        let path = self.dir.path().join(format!("{name}.kubeconfig"));
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: it\n  cluster:\n    server: {}\n    \
             certificate-authority: {}\nusers:\n- name: {name}\n  user:\n    token: {token}\ncontexts:\n\
             - name: it\n  context:\n    cluster: it\n    user: {name}\ncurrent-context: it\n",
            self.server,
            self.dir.path().join("ca.crt").display()
        );
        let _ = std::fs::remove_file(&path);
        write(&path, &text, 0o600)?;
        Ok(path)
    }

    /// A client for another kubeconfig-less identity: the API server with a bearer token
    /// (e.g. a ServiceAccount token), trusting the cluster CA.
    pub async fn token_client(&self, token: &str) -> anyhow::Result<kube::Client> {
        let mut config = kube::Config::new(self.server.parse()?);
        config.root_cert = Some(vec![rustls_der(&self.ca_pem)?]);
        config.auth_info.token = Some(token.to_string().into());
        Ok(kube::Client::try_from(config)?)
    }
}

fn rustls_der(pem: &str) -> anyhow::Result<Vec<u8>> {
    use rustls_pki_types::pem::PemObject;
    let der = rustls_pki_types::CertificateDer::from_pem_slice(pem.as_bytes())?;
    Ok(der.to_vec())
}

fn kubeconfig_text(server: &str, d: &Path) -> String {
    let p = |f: &str| d.join(f).display().to_string();
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: it\n  cluster:\n    server: {server}\n    \
         certificate-authority: {}\nusers:\n- name: admin\n  user:\n    client-certificate: {}\n    \
         client-key: {}\ncontexts:\n- name: it\n  context:\n    cluster: it\n    user: admin\n\
         current-context: it\n",
        p("ca.crt"),
        p("admin.crt"),
        p("admin.key")
    )
}

/// A client from a kubeconfig file (its current context).
pub async fn admin_client(kubeconfig: &Path) -> anyhow::Result<kube::Client> {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig)
        .with_context(|| format!("reading {}", kubeconfig.display()))?;
    let config =
        kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default()).await?;
    Ok(kube::Client::try_from(config)?)
}

/// Starts a cluster, or reports NOT RUN and returns `None` when `KUBE_APISERVER` is unset.
pub async fn start_or_skip(test: &str) -> anyhow::Result<Option<Cluster>> {
    let Some(bins) = Binaries::from_env() else {
        report_not_run(test);
        return Ok(None);
    };
    Cluster::start(&bins).await.map(Some)
}
