//! Starting the CA: root material (files, or Secrets in Kubernetes mode), the serving
//! certificate, node tokens, the placement, Kubernetes auth, and the gRPC server over TLS
//! (client certificates optional, so token bootstrap works).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use mesh_identity::proto::istio_certificate_service_server::IstioCertificateServiceServer;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};

use crate::auth::{NodeTokens, TokenFileError};
use crate::authority::Authority;
use crate::config::{CaConfig, ConfigError};
use crate::kubernetes::root::RootOrigin;
use crate::kubernetes::{KubeAuth, KubeSetupError};
use crate::placement::{ModelPlacement, Placement};
use crate::service::{CaService, CaState};
use crate::state::{RootCa, StateError};

/// How long a shutdown waits for open calls and connections before closing them.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Where and how to run.
#[derive(Debug, Clone)]
pub struct CaOptions {
    pub config: CaConfig,
    /// Folder holding the generated root (created if missing).
    pub state_dir: PathBuf,
    /// Address to listen on (port 0 picks one).
    pub listen: SocketAddr,
}

/// The CA could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("root CA: {0}")]
    State(#[from] StateError),
    #[error("node tokens: {0}")]
    Tokens(#[from] TokenFileError),
    #[error("Kubernetes mode: {0}")]
    Kube(#[from] KubeSetupError),
    #[error("listening on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("gRPC server: {0}")]
    Server(#[from] tonic::transport::Error),
    #[error("gRPC server task: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// A running CA.
#[derive(Debug)]
pub struct RunningCa {
    /// The address actually bound.
    pub local_addr: SocketAddr,
    /// The root clients must trust (PEM).
    pub root_pem: String,
    /// Where the root certificate file is.
    pub root_cert_path: PathBuf,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), tonic::transport::Error>>,
}

impl RunningCa {
    /// Stops accepting calls and lets running ones finish for up to [`DRAIN_TIMEOUT`]; then
    /// closes the remaining connections (clients keep idle channels open indefinitely).
    pub async fn shutdown(self) -> Result<(), CaError> {
        self.shutdown_within(DRAIN_TIMEOUT).await
    }

    /// Like [`RunningCa::shutdown`] with a given drain deadline.
    pub async fn shutdown_within(mut self, drain: Duration) -> Result<(), CaError> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        match tokio::time::timeout(drain, &mut self.task).await {
            Ok(r) => r??,
            Err(_) => {
                tracing::info!(
                    drain_s = drain.as_secs_f64(),
                    "drain deadline reached; closing remaining connections"
                );
                self.task.abort();
            }
        }
        Ok(())
    }

    /// Waits until the server ends on its own (an error) — it normally runs forever.
    pub async fn wait(mut self) -> Result<(), CaError> {
        (&mut self.task).await??;
        Ok(())
    }
}

impl Drop for RunningCa {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// Starts the CA with the placement model: in Kubernetes mode the cluster's pods and
/// namespaces (watched through the API server), else the files of `config.model` (watched).
pub async fn start(opts: CaOptions) -> Result<RunningCa, CaError> {
    let placement = match &opts.config.kubernetes {
        Some(settings) => {
            let client = crate::kubernetes::client(settings).await?;
            Arc::new(kube_placement(client, &opts.config.trust_domain).await)
        }
        None => Arc::new(ModelPlacement::watch_files(opts.config.model.clone(), &opts.config.trust_domain)),
    };
    start_with(opts, placement).await
}

/// How long start waits for the first full list of pods before serving anyway (requests
/// for pods not yet known are refused and retried by the callers).
const PLACEMENT_SYNC_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// Node-certificate callers (ztunnels after bootstrap) are checked against the pods the API
/// server places on their node: the kube source feeds a model of Pods only (mesh-ca's RBAC:
/// pods get, list, watch).
async fn kube_placement(client: kube::Client, trust_domain: &str) -> ModelPlacement {
    use mesh_api::Kind;
    let config = mesh_model::MeshConfig { trust_domain: trust_domain.into(), ..Default::default() };
    let store = Arc::new(mesh_model::ConfigStore::new(config));
    let opts = mesh_kube::KubeSourceOptions { kinds: vec![Kind::Pod], ..Default::default() };
    let source = mesh_kube::KubeSource::new(client, opts);
    let ready = source.readiness();
    let s = store.clone();
    tokio::spawn(async move {
        use mesh_model::ConfigSource;
        if let Err(e) = source.run(s).await {
            tracing::error!(error = %e, "pod watch stopped; the last placement stays in force");
        }
    });
    if tokio::time::timeout(PLACEMENT_SYNC_WAIT, ready.wait()).await.is_err() {
        tracing::warn!(
            "pods not listed yet (RBAC or API server?); serving, placement refuses until they are"
        );
    }
    let placement = ModelPlacement::new(store.handle());
    tracing::info!(workloads = store.handle().current().workloads().len(), "placement from the API server");
    placement
}

/// Starts the CA with a given placement.
pub async fn start_with(opts: CaOptions, placement: Arc<dyn Placement>) -> Result<RunningCa, CaError> {
    let config = &opts.config;
    let configured = config.root_cert.as_deref().zip(config.root_key.as_deref());
    let mut kube = None;
    let root = match &config.kubernetes {
        Some(settings) => {
            let client = crate::kubernetes::client(settings).await?;
            let root = if configured.is_some() {
                RootCa::load_or_create(configured, &opts.state_dir, &config.trust_domain)?
            } else {
                let (mut root, origin) =
                    crate::kubernetes::root::load_or_create(&client, settings, &config.trust_domain)
                        .await
                        .map_err(KubeSetupError::from)?;
                match &origin {
                    RootOrigin::Plugin { secret } => tracing::info!(secret, "signing with the plug-in CA"),
                    RootOrigin::Existing { secret } => tracing::info!(secret, "using the root CA Secret"),
                    RootOrigin::Created { secret } => tracing::info!(secret, "created the root CA Secret"),
                }
                root.cert_path = publish_root(&opts.state_dir, root.cert_pem())?;
                let cm = format!("{}/{}", settings.namespace, settings.root_config_map);
                // Not fatal: the CA works without it, and meshctl can publish it too.
                match crate::kubernetes::root::publish_root(&client, settings, root.cert_pem()).await {
                    Ok(true) => tracing::info!(configmap = cm, "published the root certificate"),
                    Ok(false) => {}
                    Err(e) => {
                        tracing::warn!(configmap = cm, error = %e, "cannot publish the root certificate")
                    }
                }
                root
            };
            kube = Some(KubeAuth::new(client, settings, &config.trust_domain));
            root
        }
        None => RootCa::load_or_create(configured, &opts.state_dir, &config.trust_domain)?,
    };
    let tokens = config.node_tokens_file.as_deref().map(NodeTokens::open).transpose()?;
    if tokens.is_none() {
        tracing::warn!("no nodeTokensFile: nodes cannot bootstrap with a token");
    }
    let listener = tokio::net::TcpListener::bind(opts.listen)
        .await
        .map_err(|source| CaError::Bind { addr: opts.listen, source })?;
    let local_addr = listener.local_addr().map_err(|source| CaError::Bind { addr: opts.listen, source })?;
    let (chain, key) = root.serving_cert(&config.server_names, Some(local_addr.ip()))?;
    let root_pem = root.cert_pem().to_string();
    let root_cert_path = root.cert_path.clone();
    let tls = ServerTlsConfig::new()
        .identity(Identity::from_pem(chain, key))
        .client_ca_root(Certificate::from_pem(&root_pem))
        .client_auth_optional(true);
    let state = Arc::new(CaState {
        authority: Authority::new(root, config.default_ttl, config.max_ttl),
        trust_domain: config.trust_domain.clone(),
        tokens,
        placement,
        kube,
    });
    let router = Server::builder()
        .tls_config(tls)?
        .add_service(IstioCertificateServiceServer::new(CaService::new(state)));
    let (tx, rx) = oneshot::channel::<()>();
    let incoming = TcpIncoming::from(listener);
    let task = tokio::spawn(router.serve_with_incoming_shutdown(incoming, async {
        let _ = rx.await;
    }));
    tracing::info!(%local_addr, root = %root_cert_path.display(), trust_domain = %config.trust_domain, "mesh-ca serving");
    Ok(RunningCa { local_addr, root_pem, root_cert_path, shutdown: Some(tx), task })
}

/// Writes the root certificate (public) to `<state_dir>/root-cert.pem` for operators and
/// local clients, replacing an older one: in Kubernetes mode the Secret is the source of truth.
fn publish_root(state_dir: &std::path::Path, pem: &str) -> Result<PathBuf, StateError> {
    let io = |source| StateError::Io { path: state_dir.display().to_string(), source };
    std::fs::create_dir_all(state_dir).map_err(io)?;
    let path = state_dir.join(crate::state::ROOT_CERT_FILE);
    let tmp = state_dir.join(format!(".{}.tmp", crate::state::ROOT_CERT_FILE));
    std::fs::write(&tmp, pem).map_err(io)?;
    std::fs::rename(&tmp, &path).map_err(io)?;
    Ok(path)
}
