//! The typed `source` setting the proxies share (files or the API server) and the helper
//! that starts the chosen source into a store.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use mesh_model::{ConfigSource, ConfigStore, MeshConfig};
use serde::{Deserialize, Serialize};

use crate::source::{KubeSource, KubeSourceOptions, Readiness};

/// Where the model's objects come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    /// The `model` files and folders, watched.
    #[default]
    Files,
    /// The Kubernetes API server.
    Kube,
}

/// The `source` section of a proxy's configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct SourceConfig {
    /// `files` (the `model` paths) or `kube` (the API server) (enum; default files).
    pub kind: SourceKind,
    /// For `kube`: kubeconfig file (path; empty = in-cluster: the pod's service account and
    /// `KUBERNETES_SERVICE_HOST`).
    pub kubeconfig: PathBuf,
    /// For `kube`: how long events are gathered into one model update (duration; default 30ms).
    #[serde(with = "mesh_api::duration::config")]
    pub batch_window: Duration,
}

impl Default for SourceConfig {
    fn default() -> Self {
        SourceConfig {
            kind: SourceKind::Files,
            kubeconfig: PathBuf::new(),
            batch_window: KubeSourceOptions::default().batch_window,
        }
    }
}

impl SourceConfig {
    /// Makes a relative kubeconfig path relative to `base` (the config file's folder).
    pub fn resolve_paths(&mut self, base: &Path) {
        if !self.kubeconfig.as_os_str().is_empty() && self.kubeconfig.is_relative() {
            self.kubeconfig = base.join(&self.kubeconfig);
        }
    }
}

/// Why the API server source could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("kubeconfig {path}: {source}")]
    Kubeconfig {
        path: String,
        #[source]
        source: kube::config::KubeconfigError,
    },
    #[error("in-cluster Kubernetes configuration: {0}")]
    InCluster(#[source] kube::config::InClusterError),
    #[error("Kubernetes client: {0}")]
    Client(#[source] kube::Error),
}

/// A client from a kubeconfig file, or in-cluster when `kubeconfig` is empty. Requests that
/// fail with 429/503/504 are retried by the client, honouring `Retry-After`.
pub async fn client(kubeconfig: &Path) -> Result<kube::Client, StartError> {
    let mut config = if kubeconfig.as_os_str().is_empty() {
        kube::Config::incluster().map_err(StartError::InCluster)?
    } else {
        let path = kubeconfig.display().to_string();
        let kc = kube::config::Kubeconfig::read_from(kubeconfig)
            .map_err(|source| StartError::Kubeconfig { path: path.clone(), source })?;
        kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
            .await
            .map_err(|source| StartError::Kubeconfig { path, source })?
    };
    config.default_retry = true;
    kube::Client::try_from(config).map_err(StartError::Client)
}

/// Starts the configured source on the current runtime: the file source over `paths`
/// (loaded before returning, ready at once) or the API server source (ready after its first
/// full sync: wait on the returned [`Readiness`]).
pub async fn start_store(
    mesh: MeshConfig,
    source: &SourceConfig,
    paths: &[PathBuf],
) -> Result<(Arc<ConfigStore>, Readiness), StartError> {
    match source.kind {
        SourceKind::Files => Ok((mesh_model::watched_store(mesh, paths), Readiness::ready())),
        SourceKind::Kube => {
            let client = client(&source.kubeconfig).await?;
            let opts =
                KubeSourceOptions { batch_window: source.batch_window, ..KubeSourceOptions::default() };
            let src = KubeSource::new(client, opts);
            let ready = src.readiness();
            let store = Arc::new(ConfigStore::new(mesh));
            let s = store.clone();
            tokio::spawn(async move {
                if let Err(e) = src.run(s).await {
                    tracing::error!(error = %e, "kube source stopped");
                }
            });
            Ok((store, ready))
        }
    }
}
