//! The file source: a file or folder (recursive; `.yaml`, `.yml`, `.json`) of multi-document
//! YAML/JSON, read once (`load_paths`, for `meshctl analyze`) or watched with inotify,
//! debounced and hot-reloaded into a [`ConfigStore`].

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use mesh_api::{Diagnostic, Object, ObjectRef, Origin, Parsed, parse_object, split_documents};
use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;

use crate::source::{Batch, ConfigSource, Doc, SourceError, Update};
use crate::store::{ConfigStore, IgnoredObject, Unit, merge};

/// Everything read from some paths, for one-shot users (`meshctl analyze`).
#[derive(Debug, Default)]
pub struct Loaded {
    /// Valid objects, first definition of each key only, in path and document order.
    pub objects: Vec<(Object, Origin)>,
    /// Errors and warnings: unreadable files, syntax errors, invalid documents, duplicates.
    pub diagnostics: Vec<Diagnostic>,
    /// Objects of other API groups, recognised and ignored, with their apiVersion.
    pub ignored: Vec<IgnoredObject>,
}

/// Reads files and folders (recursively) as given; every path in the result's origins keeps
/// the form the caller used (e.g. `deploy/examples/bookinfo.yaml`).
pub fn load_paths(paths: &[PathBuf]) -> Loaded {
    let mut diagnostics = Vec::new();
    let files = list_files(paths, &mut diagnostics);
    let units: Vec<Unit> = files
        .iter()
        .map(|f| {
            let (docs, complete) = read_file(&f.path, &f.unit);
            Unit::from_docs(docs, complete, None)
        })
        .collect();
    let (objects, dups) = merge(&units);
    diagnostics.extend(units.iter().flat_map(|u| u.diagnostics.iter().cloned()));
    diagnostics.extend(dups);
    Loaded { objects, diagnostics, ignored: units.into_iter().flat_map(|u| u.ignored).collect() }
}

/// A file found under the given paths.
struct Listed {
    path: PathBuf,
    /// The path as shown to users (and the store's unit name).
    unit: Arc<str>,
}

fn file_error(unit: &str, message: String) -> Diagnostic {
    Diagnostic::error(ObjectRef::default(), "", message).at(Origin::File { path: unit.into(), doc: 0 })
}

fn is_config_file(p: &Path) -> bool {
    matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml" | "json"))
}

/// Files under `paths`, sorted within each folder; a path given explicitly is read whatever
/// its extension. Folders and files whose names start with `.` are skipped in folders.
fn list_files(paths: &[PathBuf], diags: &mut Vec<Diagnostic>) -> Vec<Listed> {
    fn walk(dir: &Path, out: &mut Vec<Listed>, diags: &mut Vec<Diagnostic>) {
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) => {
                return diags
                    .push(file_error(&dir.display().to_string(), format!("cannot read folder: {e}")));
            }
        };
        let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        paths.sort();
        for p in paths {
            if p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with('.')) {
                continue;
            }
            if p.is_dir() {
                walk(&p, out, diags);
            } else if is_config_file(&p) && p.is_file() {
                out.push(Listed { unit: p.display().to_string().into(), path: p });
            }
        }
    }
    let mut out = Vec::new();
    for p in paths {
        match std::fs::metadata(p) {
            Ok(m) if m.is_dir() => walk(p, &mut out, diags),
            Ok(_) => out.push(Listed { unit: p.display().to_string().into(), path: p.clone() }),
            Err(e) => diags.push(file_error(&p.display().to_string(), format!("cannot read: {e}"))),
        }
    }
    out
}

/// Parses one file's documents; `complete` is false when some document could not be read
/// (YAML syntax error), so the store keeps what the file defined before.
fn parse_text(unit: &Arc<str>, text: &str) -> (Vec<Doc>, bool) {
    let mut docs = Vec::new();
    let mut complete = true;
    for doc in split_documents(text) {
        match doc {
            Ok(d) => {
                let origin = Origin::File { path: unit.clone(), doc: d.index };
                docs.push(Doc { origin, parsed: parse_object(d.value) });
            }
            Err(e) => {
                complete = false;
                let origin = Origin::File { path: unit.clone(), doc: e.index };
                let d = Diagnostic::error(ObjectRef::default(), "", e.message);
                docs.push(Doc { origin, parsed: Parsed::Invalid { key: None, diagnostics: vec![d] } });
            }
        }
    }
    (docs, complete)
}

fn read_file(path: &Path, unit: &Arc<str>) -> (Vec<Doc>, bool) {
    match std::fs::read_to_string(path) {
        Ok(text) => parse_text(unit, &text),
        Err(e) => (vec![unreadable(unit, &e)], false),
    }
}

fn unreadable(unit: &Arc<str>, e: &std::io::Error) -> Doc {
    let d = Diagnostic::error(ObjectRef::default(), "", format!("cannot read file: {e}"));
    Doc {
        origin: Origin::File { path: unit.clone(), doc: 0 },
        parsed: Parsed::Invalid { key: None, diagnostics: vec![d] },
    }
}

/// The content hash recorded for a path that cannot be listed (reported once, not re-sent).
const MISSING: u64 = u64::MAX;

/// Watches files and folders and feeds their content into a store.
#[derive(Debug)]
pub struct FileSource {
    paths: Vec<PathBuf>,
    debounce: Duration,
    /// Unit → hash of the content last sent, so unchanged files are not re-parsed.
    known: HashMap<Arc<str>, u64>,
    /// Whether a first snapshot was published (even an empty one).
    loaded: bool,
}

impl FileSource {
    /// A source over `paths` (files or folders), with a 50 ms debounce.
    pub fn new(paths: impl IntoIterator<Item = impl Into<PathBuf>>) -> Self {
        FileSource {
            paths: paths.into_iter().map(Into::into).collect(),
            debounce: Duration::from_millis(50),
            known: HashMap::new(),
            loaded: false,
        }
    }

    /// Sets how long the source waits for changes to settle before reloading.
    pub fn with_debounce(mut self, debounce: Duration) -> Self {
        self.debounce = debounce;
        self
    }

    /// Reads every file now and applies what changed since the last read (everything, the
    /// first time) as one batch. Returns the store's generation afterwards.
    pub fn load_into(&mut self, store: &ConfigStore) -> u64 {
        let batch = self.sync();
        if batch.is_empty() && self.loaded {
            return store.current().generation();
        }
        self.loaded = true;
        store.apply(batch)
    }

    /// The updates that bring the store in line with the files: changed or new files are
    /// re-parsed, vanished ones removed.
    fn sync(&mut self) -> Batch {
        let mut diags = Vec::new();
        let files = list_files(&self.paths, &mut diags);
        let mut updates = Vec::new();
        let mut present: HashMap<Arc<str>, u64> = HashMap::new();
        for f in &files {
            let (hash, docs) = match std::fs::read(&f.path) {
                Ok(bytes) => {
                    let mut h = DefaultHasher::new();
                    bytes.hash(&mut h);
                    let hash = h.finish();
                    if self.known.get(&f.unit) == Some(&hash) {
                        present.insert(f.unit.clone(), hash);
                        continue;
                    }
                    match String::from_utf8(bytes) {
                        Ok(text) => (hash, parse_text(&f.unit, &text)),
                        Err(e) => {
                            let e = std::io::Error::new(std::io::ErrorKind::InvalidData, e.utf8_error());
                            (hash, (vec![unreadable(&f.unit, &e)], false))
                        }
                    }
                }
                // Vanished between listing and reading, or unreadable: report, keep its objects.
                Err(e) => (0, (vec![unreadable(&f.unit, &e)], false)),
            };
            present.insert(f.unit.clone(), hash);
            updates.push(Update::Replace { unit: f.unit.clone(), docs: docs.0, complete: docs.1 });
        }
        for unit in self.known.keys() {
            if !present.contains_key(unit) {
                updates.push(Update::Remove { unit: unit.clone() });
            }
        }
        // A path that cannot be read at all (a missing folder) is reported as its own unit.
        for d in diags {
            if let Origin::File { path, .. } = &d.origin {
                let unit = path.clone();
                if self.known.get(&unit) == Some(&MISSING) {
                    present.insert(unit, MISSING);
                    continue;
                }
                let parsed = Parsed::Invalid { key: None, diagnostics: vec![d.clone()] };
                let doc = Doc { origin: d.origin.clone(), parsed };
                present.insert(unit.clone(), MISSING);
                updates.push(Update::Replace { unit, docs: vec![doc], complete: false });
            }
        }
        self.known = present;
        Batch { updates }
    }

    fn watch(&self, watcher: &mut impl Watcher) -> Result<(), SourceError> {
        for p in &self.paths {
            let abs = std::path::absolute(p).unwrap_or_else(|_| p.clone());
            // A file is watched through its folder: editors replace files by renaming, which
            // would end a watch on the file itself.
            let (target, mode) = if abs.is_dir() {
                (abs, RecursiveMode::Recursive)
            } else {
                (abs.parent().map(Path::to_path_buf).unwrap_or(abs), RecursiveMode::NonRecursive)
            };
            watcher
                .watch(&target, mode)
                .map_err(|source| SourceError::Watch { path: target.display().to_string(), source })?;
        }
        Ok(())
    }
}

impl ConfigSource for FileSource {
    async fn run(self, store: Arc<ConfigStore>) -> Result<(), SourceError> {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut watcher = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
            // Only the fact that something changed matters: every sync re-lists and re-hashes.
            let relevant = match &ev {
                Ok(ev) => !matches!(ev.kind, notify::EventKind::Access(_)),
                Err(_) => true,
            };
            if relevant {
                let _ = tx.send(());
            }
        })
        .map_err(|source| SourceError::Watch { path: String::new(), source })?;
        // Watch before the first read so no change between the two is missed.
        self.watch(&mut watcher)?;
        let mut source = self;
        let mut first = true;
        loop {
            if !first {
                if rx.recv().await.is_none() {
                    return Ok(());
                }
                // Debounce: wait until no event arrived for `debounce`, but no longer than ten
                // debounce periods, so a file written continuously still reloads.
                let deadline = tokio::time::Instant::now() + source.debounce * 10;
                loop {
                    let wait =
                        source.debounce.min(deadline.saturating_duration_since(tokio::time::Instant::now()));
                    match tokio::time::timeout(wait, rx.recv()).await {
                        Ok(Some(())) => continue,
                        Ok(None) => return Ok(()),
                        Err(_) => break,
                    }
                }
            }
            first = false;
            // Reading, parsing and translating are blocking work: keep them off the reactor.
            let store = store.clone();
            source = tokio::task::spawn_blocking(move || {
                source.load_into(&store);
                source
            })
            .await
            .map_err(|e| SourceError::Reload(e.to_string()))?;
        }
    }
}

/// A config store loaded from `paths` now and kept in step with them by a watcher task on the
/// current tokio runtime (what each proxy runs from its `model` setting).
pub fn watched_store(
    mesh: crate::MeshConfig,
    paths: &[std::path::PathBuf],
) -> std::sync::Arc<crate::ConfigStore> {
    let store = std::sync::Arc::new(crate::ConfigStore::new(mesh));
    let mut source = FileSource::new(paths.iter().cloned());
    source.load_into(&store);
    let watch_store = store.clone();
    tokio::spawn(async move {
        use crate::ConfigSource;
        if let Err(e) = source.run(watch_store).await {
            tracing::error!(error = %e, "model source stopped");
        }
    });
    store
}
