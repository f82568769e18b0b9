//! Analysis of a set of objects as the mesh would read them: per-object validation (from
//! `mesh-api`, via the loader), translation into the model (`mesh-model`) and the
//! cross-object checks of this module (references to missing hosts, Services and subsets,
//! selectors that select nothing, conflicting PeerAuthentications). Reusable: `meshctl lab`
//! and the proxies call [`analyze_objects`] on objects they hold, or [`cross_check`] on a
//! model they already translated.

mod checks;
mod collect;
mod facts;
mod hosts;

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use mesh_api::{Diagnostic, Object, ObjectRef, Origin, Severity};
use mesh_model::{MeshConfig, Model};

/// The outcome of analyzing some objects.
#[derive(Debug, Default)]
pub struct Analysis {
    /// Every error and warning, sorted by file then document, without duplicates.
    pub diagnostics: Vec<Diagnostic>,
    /// Objects recognised but not used (other API groups), with the reason.
    pub ignored: Vec<(ObjectRef, Origin, String)>,
    /// Number of objects loaded (valid or not).
    pub objects: usize,
    /// Number of distinct files the objects and diagnostics came from.
    pub files: usize,
}

impl Analysis {
    pub fn has_errors(&self) -> bool {
        self.diagnostics.iter().any(Diagnostic::is_error)
    }

    pub fn count(&self, severity: Severity) -> usize {
        self.diagnostics.iter().filter(|d| d.severity == severity).count()
    }
}

/// Why analysis could not run at all (as opposed to finding problems in the input).
#[derive(Debug, thiserror::Error)]
pub enum AnalyzeError {
    #[error("{}: {source}", path.display())]
    Unreadable { path: PathBuf, source: std::io::Error },
}

/// Loads `paths` as the file source does and analyzes everything in them together, with the
/// default mesh settings.
pub fn analyze_paths(paths: &[PathBuf]) -> Result<Analysis, AnalyzeError> {
    analyze_paths_with(paths, &MeshConfig::default())
}

/// [`analyze_paths`] with explicit mesh settings (root namespace, DNS suffix).
pub fn analyze_paths_with(paths: &[PathBuf], config: &MeshConfig) -> Result<Analysis, AnalyzeError> {
    for path in paths {
        check_readable(path)?;
    }
    let loaded = mesh_model::load_paths(paths);
    let objects = loaded.objects.len();
    let mut files: HashSet<&str> = HashSet::new();
    let origins = loaded
        .objects
        .iter()
        .map(|(_, o)| o)
        .chain(loaded.diagnostics.iter().map(|d| &d.origin))
        .chain(loaded.ignored.iter().map(|(_, o, _)| o));
    for origin in origins {
        if let Origin::File { path, .. } = origin {
            files.insert(path);
        }
    }
    let files = files.len();
    let diagnostics = analyze_objects(&loaded.objects, loaded.diagnostics, config);
    let mut ignored = loaded.ignored;
    ignored.sort_by(|a, b| origin_key(&a.1).cmp(&origin_key(&b.1)));
    Ok(Analysis { diagnostics, ignored, objects, files })
}

/// A path the user named must exist and be readable; nested files that are not are reported
/// by the loader as diagnostics.
fn check_readable(path: &Path) -> Result<(), AnalyzeError> {
    let unreadable = |source| AnalyzeError::Unreadable { path: path.to_path_buf(), source };
    let meta = std::fs::metadata(path).map_err(unreadable)?;
    if meta.is_dir() {
        std::fs::read_dir(path).map_err(unreadable)?;
    } else {
        std::fs::File::open(path).map_err(unreadable)?;
    }
    Ok(())
}

/// Analyzes loaded objects: `diagnostics` are what loading and per-object validation already
/// found; translation and cross-object checks run over the objects without errors (an
/// object with an error does not take effect, so what it references is not checked).
/// Returns all diagnostics sorted by file then document, duplicates removed.
pub fn analyze_objects(
    objects: &[(Object, Origin)],
    mut diagnostics: Vec<Diagnostic>,
    config: &MeshConfig,
) -> Vec<Diagnostic> {
    let rejected: HashSet<&Origin> = diagnostics
        .iter()
        .filter(|d| d.is_error() && d.origin != Origin::Unknown)
        .map(|d| &d.origin)
        .collect();
    let valid: Vec<(Object, Origin)> =
        objects.iter().filter(|(_, origin)| !rejected.contains(origin)).cloned().collect();
    let (model, translated) = mesh_model::translate(&valid, config);
    let cross = cross_check(&model);
    diagnostics.extend(translated);
    diagnostics.extend(cross);
    sort_dedup(diagnostics)
}

/// The cross-object checks alone, over the objects in force in `model`. Unsorted.
pub fn cross_check(model: &Model) -> Vec<Diagnostic> {
    let facts = collect::facts(model);
    checks::run(&facts, model)
}

/// Sort key: files by path then document; API-server and unknown origins after files.
fn origin_key(origin: &Origin) -> (u8, &str, usize) {
    match origin {
        Origin::File { path, doc } => (0, path, *doc),
        Origin::Kube => (1, "", 0),
        Origin::Unknown => (2, "", 0),
    }
}

/// Sorts by origin (stable, so the order within a document is kept: per-object checks first)
/// and drops exact duplicates (a problem both the loader and the translation report).
fn sort_dedup(diagnostics: Vec<Diagnostic>) -> Vec<Diagnostic> {
    let mut seen = HashSet::new();
    let mut out: Vec<Diagnostic> = diagnostics.into_iter().filter(|d| seen.insert(d.clone())).collect();
    out.sort_by(|a, b| origin_key(&a.origin).cmp(&origin_key(&b.origin)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn diag(path: &str, doc: usize, msg: &str) -> Diagnostic {
        Diagnostic::error(ObjectRef::default(), "", msg).at(Origin::File { path: path.into(), doc })
    }

    #[test]
    fn sorted_by_file_then_document_and_deduplicated() {
        let got = sort_dedup(vec![
            diag("b.yaml", 0, "x"),
            diag("a.yaml", 10, "y"),
            diag("a.yaml", 2, "z"),
            diag("a.yaml", 2, "w"),
            diag("a.yaml", 10, "y"),
        ]);
        let msgs: Vec<&str> = got.iter().map(|d| d.message.as_str()).collect();
        assert_eq!(msgs, ["z", "w", "y", "x"]);
    }

    #[test]
    fn missing_path_is_named() {
        let err = analyze_paths(&[PathBuf::from("/nonexistent/meshctl-test")]).unwrap_err();
        assert!(err.to_string().starts_with("/nonexistent/meshctl-test: "), "{err}");
    }
}
