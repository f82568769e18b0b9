//! Which identities a node may obtain: those of pods the model places on it. The CA logic
//! sees only the [`Placement`] trait; [`ModelPlacement`] answers from the mesh model, loaded
//! from the configured files and kept current by the watching file source.

use std::path::PathBuf;
use std::sync::Arc;

use mesh_api::SpiffeId;
use mesh_model::{ConfigSource, ConfigStore, FileSource, MeshConfig, ModelHandle, PodPhase};

/// Why a node may not have an identity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("no pod on node {node} runs as {identity}{}", on_nodes_text(.on_nodes))]
    NotOnNode { node: String, identity: String, on_nodes: Vec<String> },
}

fn on_nodes_text(nodes: &[String]) -> String {
    if nodes.is_empty() {
        " (no pod anywhere has this identity)".to_string()
    } else {
        format!(" (pods with it run on {})", nodes.join(", "))
    }
}

/// Decides whether `node` may obtain `id`.
pub trait Placement: Send + Sync + std::fmt::Debug {
    fn node_may_request(&self, node: &str, id: &SpiffeId) -> Result<(), Refusal>;
}

/// Placement from the mesh model: a node may obtain the identity of any pod on it that has
/// not finished (Running, Pending, Unknown), so certificates can be ready before traffic.
#[derive(Debug, Clone)]
pub struct ModelPlacement {
    model: ModelHandle,
}

impl ModelPlacement {
    pub fn new(model: ModelHandle) -> Self {
        ModelPlacement { model }
    }

    /// Loads `paths` now and watches them (the watcher task lives on the current runtime).
    /// Load problems are logged; they never stop the CA (the last good objects stay in force).
    pub fn watch_files(paths: Vec<PathBuf>, trust_domain: &str) -> Self {
        let config = MeshConfig { trust_domain: trust_domain.into(), ..MeshConfig::default() };
        let store = Arc::new(ConfigStore::new(config));
        let mut source = FileSource::new(paths.clone());
        source.load_into(&store);
        let handle = store.handle();
        for d in handle.diagnostics().iter() {
            tracing::warn!(diagnostic = %d, "model");
        }
        let model = handle.current();
        tracing::info!(workloads = model.workloads().len(), paths = ?paths, "model loaded");
        tokio::spawn(async move {
            if let Err(e) = source.run(store).await {
                tracing::error!(error = %e, "model watch stopped; the last model stays in force");
            }
        });
        ModelPlacement { model: handle }
    }
}

impl Placement for ModelPlacement {
    fn node_may_request(&self, node: &str, id: &SpiffeId) -> Result<(), Refusal> {
        let model = self.model.load();
        let live =
            |w: &&Arc<mesh_model::Workload>| !matches!(w.phase, PodPhase::Succeeded | PodPhase::Failed);
        if model.workloads_on_node(node).filter(live).any(|w| *w.identity == *id) {
            return Ok(());
        }
        let mut on_nodes: Vec<String> = model
            .workloads()
            .iter()
            .filter(live)
            .filter(|w| *w.identity == *id)
            .filter_map(|w| w.node.as_deref().map(str::to_string))
            .collect();
        on_nodes.sort();
        on_nodes.dedup();
        Err(Refusal::NotOnNode { node: node.to_string(), identity: id.to_string(), on_nodes })
    }
}
