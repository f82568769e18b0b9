//! The config store: the objects of each unit (file) with the last good version of each,
//! the snapshot built from them (swapped atomically), the diagnostics of the latest load, and
//! the handles through which every component reads the current model.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use arc_swap::{ArcSwap, Guard};
use mesh_api::{Diagnostic, Object, ObjectKey, ObjectRef, Origin, Parsed};
use tokio::sync::watch;

use crate::config::MeshConfig;
use crate::model::Model;
use crate::source::{Batch, Doc, Update};
use crate::translate::translate;

/// An object ignored because its API group is not ours: what it is, where, its apiVersion.
pub type IgnoredObject = (ObjectRef, Origin, String);

/// What one unit contributes now.
#[derive(Debug, Default)]
pub(crate) struct Unit {
    pub(crate) entries: Vec<(ObjectKey, Object, Origin)>,
    pub(crate) diagnostics: Vec<Diagnostic>,
    pub(crate) ignored: Vec<IgnoredObject>,
}

impl Unit {
    /// The unit's new content; `prev` supplies the last good version of objects whose new
    /// document is invalid (and, when `complete` is false, of everything now absent).
    pub(crate) fn from_docs(docs: Vec<Doc>, complete: bool, prev: Option<&Unit>) -> Unit {
        let mut out = Unit::default();
        let mut seen: HashMap<ObjectKey, Origin> = HashMap::new();
        let mut invalid: Vec<(ObjectKey, Origin)> = Vec::new();
        let mut first_broken: Option<Origin> = None;
        for Doc { origin, parsed } in docs {
            match parsed {
                Parsed::Object { object, warnings } => {
                    out.diagnostics.extend(warnings.into_iter().map(|d| d.at(origin.clone())));
                    let key = object.key();
                    if let Some(first) = seen.get(&key) {
                        out.diagnostics.push(duplicate(&object, &origin, first));
                        continue;
                    }
                    seen.insert(key.clone(), origin.clone());
                    out.entries.push((key, object, origin));
                }
                Parsed::Ignored { object, api_version } => out.ignored.push((object, origin, api_version)),
                Parsed::Invalid { key, diagnostics } => {
                    out.diagnostics.extend(diagnostics.into_iter().map(|d| d.at(origin.clone())));
                    match key {
                        Some(k) => invalid.push((k, origin)),
                        None => {
                            first_broken.get_or_insert(origin);
                        }
                    }
                }
            }
        }
        let Some(prev) = prev else { return out };
        let mut kept_whole = 0;
        for (key, object, prev_origin) in &prev.entries {
            if seen.contains_key(key) {
                continue;
            }
            if let Some((_, origin)) = invalid.iter().find(|(k, _)| k == key) {
                out.diagnostics.push(
                    Diagnostic::warning(
                        object.object_ref(),
                        "",
                        format!("this document is invalid; the last good version (from {prev_origin}) stays in force"),
                    )
                    .at(origin.clone()),
                );
            } else if complete {
                continue;
            } else {
                kept_whole += 1;
            }
            seen.insert(key.clone(), prev_origin.clone());
            out.entries.push((key.clone(), object.clone(), prev_origin.clone()));
        }
        if kept_whole > 0
            && let Some(origin) = first_broken
        {
            out.diagnostics.push(
                Diagnostic::warning(
                    ObjectRef::default(),
                    "",
                    format!(
                        "the file could not be read whole; {kept_whole} object(s) it defined before and that are \
                         missing now stay in force"
                    ),
                )
                .at(origin),
            );
        }
        out
    }
}

fn duplicate(object: &Object, origin: &Origin, first: &Origin) -> Diagnostic {
    Diagnostic::error(
        object.object_ref(),
        "metadata.name",
        format!("already defined at {first}; this definition is ignored"),
    )
    .at(origin.clone())
}

/// The objects in force across units (in unit order), the first definition of each key
/// winning, with an error for every later duplicate.
pub(crate) fn merge<'a>(
    units: impl IntoIterator<Item = &'a Unit>,
) -> (Vec<(Object, Origin)>, Vec<Diagnostic>) {
    let mut seen: HashMap<&ObjectKey, &Origin> = HashMap::new();
    let mut objects = Vec::new();
    let mut diags = Vec::new();
    for unit in units {
        for (key, object, origin) in &unit.entries {
            if let Some(first) = seen.get(key) {
                diags.push(duplicate(object, origin, first));
            } else {
                seen.insert(key, origin);
                objects.push((object.clone(), origin.clone()));
            }
        }
    }
    (objects, diags)
}

#[derive(Debug)]
struct Shared {
    model: ArcSwap<Model>,
    diagnostics: ArcSwap<Vec<Diagnostic>>,
    generation: watch::Sender<u64>,
}

#[derive(Debug, Default)]
struct State {
    units: BTreeMap<Arc<str>, Unit>,
    generation: u64,
}

/// Holds every unit's objects and publishes the model built from them.
#[derive(Debug)]
pub struct ConfigStore {
    config: MeshConfig,
    state: Mutex<State>,
    shared: Arc<Shared>,
}

impl ConfigStore {
    /// A store with an empty model (generation 0).
    pub fn new(config: MeshConfig) -> Self {
        let shared = Arc::new(Shared {
            model: ArcSwap::from_pointee(Model::empty(config.clone())),
            diagnostics: ArcSwap::from_pointee(Vec::new()),
            generation: watch::Sender::new(0),
        });
        ConfigStore { config, state: Mutex::new(State::default()), shared }
    }

    pub fn config(&self) -> &MeshConfig {
        &self.config
    }

    /// A cheap, cloneable reader of the current model.
    pub fn handle(&self) -> ModelHandle {
        ModelHandle { rx: self.shared.generation.subscribe(), shared: self.shared.clone() }
    }

    /// Applies a batch: updates the units, re-translates everything in force, publishes one
    /// new snapshot and notifies subscribers. Returns the new generation.
    pub fn apply(&self, batch: Batch) -> u64 {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        for update in batch.updates {
            match update {
                Update::Replace { unit, docs, complete } => {
                    let new = Unit::from_docs(docs, complete, st.units.get(&unit));
                    st.units.insert(unit, new);
                }
                Update::Remove { unit } => {
                    st.units.remove(&unit);
                }
            }
        }
        let (objects, dup_diags) = merge(st.units.values());
        let mut diags: Vec<Diagnostic> =
            st.units.values().flat_map(|u| u.diagnostics.iter().cloned()).collect();
        diags.extend(dup_diags);
        let (mut model, translate_diags) = translate(&objects, &self.config);
        diags.extend(translate_diags);

        st.generation += 1;
        model.generation = st.generation;
        let generation = st.generation;
        let previous = self.shared.diagnostics.load();
        let before: HashSet<&Diagnostic> = previous.iter().collect();
        for d in diags.iter().filter(|d| !before.contains(d)) {
            if d.is_error() {
                tracing::warn!(generation, "{d}");
            } else {
                tracing::info!(generation, "{d}");
            }
        }
        tracing::info!(
            generation,
            objects = objects.len(),
            workloads = model.workloads().len(),
            services = model.services().len(),
            errors = diags.iter().filter(|d| d.is_error()).count(),
            "config applied"
        );
        // Diagnostics first: whoever is woken by the new model sees matching diagnostics.
        self.shared.diagnostics.store(Arc::new(diags));
        self.shared.model.store(Arc::new(model));
        self.shared.generation.send_replace(generation);
        generation
    }

    /// The current model.
    pub fn current(&self) -> Arc<Model> {
        self.shared.model.load_full()
    }

    /// Diagnostics of the objects in force now (parse errors and warnings of each unit's
    /// latest content, duplicates, translation warnings).
    pub fn diagnostics(&self) -> Arc<Vec<Diagnostic>> {
        self.shared.diagnostics.load_full()
    }

    /// Objects recognised as not ours (other API groups), with their apiVersion.
    pub fn ignored(&self) -> Vec<IgnoredObject> {
        let st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.units.values().flat_map(|u| u.ignored.iter().cloned()).collect()
    }
}

/// A reader of the current model: cheap to clone, one atomic load per `current()`.
#[derive(Debug, Clone)]
pub struct ModelHandle {
    shared: Arc<Shared>,
    rx: watch::Receiver<u64>,
}

impl ModelHandle {
    /// The current model (kept alive as long as the caller holds it).
    pub fn current(&self) -> Arc<Model> {
        self.shared.model.load_full()
    }

    /// The current model without touching its reference count (short-lived reads).
    pub fn load(&self) -> Guard<Arc<Model>> {
        self.shared.model.load()
    }

    /// Waits until a snapshot newer than the last one this handle saw through `changed` is
    /// published.
    pub async fn changed(&mut self) {
        // The sender lives in `shared`, which this handle keeps alive: it never closes.
        let _ = self.rx.changed().await;
    }

    /// The generation of the current snapshot.
    pub fn generation(&self) -> u64 {
        *self.rx.borrow()
    }

    /// Diagnostics of the latest load.
    pub fn diagnostics(&self) -> Arc<Vec<Diagnostic>> {
        self.shared.diagnostics.load_full()
    }
}
