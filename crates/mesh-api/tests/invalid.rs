//! Every `tests/data/invalid/NN-*.yaml` (NN 01..39) holds one deliberately wrong object and
//! `# expect:` lines giving exactly the diagnostics (without origin) it must produce.

use std::path::{Path, PathBuf};

use mesh_api::{Parsed, parse_object, split_documents};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Diagnostics of a file's documents, as `Diagnostic` prints them minus the origin prefix.
fn diagnostics_of(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for doc in split_documents(text) {
        let doc = match doc {
            Ok(d) => d,
            Err(e) => {
                out.push(e.to_string());
                continue;
            }
        };
        let diags = match parse_object(doc.value) {
            Parsed::Object { warnings, .. } => warnings,
            Parsed::Invalid { diagnostics, .. } => diagnostics,
            Parsed::Ignored { .. } => Vec::new(),
        };
        for d in diags {
            let text = d.to_string();
            // Origin::Unknown prints as "- ".
            out.push(text.strip_prefix("- ").unwrap_or(&text).to_string());
        }
    }
    out
}

fn owned_invalid_files() -> Vec<PathBuf> {
    // Warning-only cases (accepted, but flagged) live beside the invalid ones.
    let dirs = [repo_root().join("tests/data/invalid"), repo_root().join("tests/data/warnings")];
    let mut files: Vec<PathBuf> = dirs
        .iter()
        .flat_map(|dir| std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())))
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy().to_string();
            let nn: Option<u32> = name.get(..2).and_then(|n| n.parse().ok());
            name.ends_with(".yaml")
                && name.as_bytes().get(2) == Some(&b'-')
                && nn.is_some_and(|n| (1..=39).contains(&n))
        })
        .collect();
    files.sort();
    files
}

#[test]
fn every_invalid_file_gives_exactly_its_expected_diagnostics() {
    let files = owned_invalid_files();
    assert!(files.len() >= 22, "expected at least 22 invalid files, found {}", files.len());
    let mut failures = Vec::new();
    for path in &files {
        let text = std::fs::read_to_string(path).unwrap();
        let expected: Vec<String> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# expect: "))
            .map(|l| l.trim_end().to_string())
            .collect();
        assert!(!expected.is_empty(), "{}: no `# expect:` line", path.display());
        let got = diagnostics_of(&text);
        if got != expected && std::env::var_os("MESH_API_BLESS").is_some() {
            // Rewrites the `# expect:` header from what the parser says now; review the diff.
            let body: Vec<&str> = text.lines().filter(|l| !l.starts_with("# expect: ")).collect();
            let header: Vec<String> = got.iter().map(|g| format!("# expect: {g}")).collect();
            std::fs::write(path, format!("{}\n{}\n", header.join("\n"), body.join("\n"))).unwrap();
            continue;
        }
        if got != expected {
            failures.push(format!("{}:\n  expected: {expected:#?}\n  got:      {got:#?}", path.display()));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn all_examples_parse_without_errors() {
    let dir = repo_root().join("deploy/examples");
    let Ok(entries) = std::fs::read_dir(&dir) else { return };
    let mut stack: Vec<PathBuf> = entries.map(|e| e.unwrap().path()).collect();
    let mut errors = Vec::new();
    while let Some(p) = stack.pop() {
        if p.is_dir() {
            stack.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
            continue;
        }
        let ext = p.extension().and_then(|e| e.to_str()).unwrap_or("");
        if !matches!(ext, "yaml" | "yml" | "json") {
            continue;
        }
        let text = std::fs::read_to_string(&p).unwrap();
        for doc in split_documents(&text) {
            match doc {
                Err(e) => errors.push(format!("{}: {e}", p.display())),
                Ok(doc) => {
                    if let Parsed::Invalid { diagnostics, .. } = parse_object(doc.value) {
                        for d in diagnostics.iter().filter(|d| d.is_error()) {
                            errors.push(format!("{}:{} {d}", p.display(), doc.index));
                        }
                    }
                }
            }
        }
    }
    assert!(errors.is_empty(), "examples have errors:\n{}", errors.join("\n"));
}
