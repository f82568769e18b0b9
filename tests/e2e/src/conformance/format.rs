//! The conformance suites' YAML format (documented in `tests/conformance/README.md`): a mesh
//! configuration and the requests to send with what must hold. Shared by the in-process runner
//! (`waypoint/tests/conformance.rs`) and the lab runner (`tests/e2e/tests/conformance_lab.rs`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Suite {
    pub name: String,
    #[serde(default)]
    pub config: String,
    pub cases: Vec<Case>,
    /// The suite cannot run in the lab (one line: why); it still runs in-process.
    #[serde(default)]
    pub lab_skip: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Case {
    pub name: String,
    #[serde(default)]
    pub request: Req,
    #[serde(default = "one")]
    pub repeat: usize,
    /// Requests sent at once, each on its own connection (instead of `repeat`).
    pub parallel: Option<usize>,
    pub expect: Expect,
    /// Milliseconds to wait before sending (ejection times running out, ...).
    #[serde(default)]
    pub wait_millis: u64,
    /// The case fails because of a known waypoint bug (one line: what, where). Such a case
    /// failing is reported and tolerated; passing fails the run, so the marker is removed.
    pub known_bug: Option<String>,
    /// The case cannot run against the lab's echo backends (one line: why); it still runs
    /// in-process.
    pub lab_skip: Option<String>,
}

pub fn one() -> usize {
    1
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct Req {
    #[serde(default = "default_service")]
    pub service: String,
    #[serde(default = "default_port")]
    pub port: u16,
    #[serde(default = "default_method")]
    pub method: String,
    #[serde(default = "default_path")]
    pub path: String,
    /// Paths used in turn by the requests of the case (instead of `path`).
    #[serde(default)]
    pub paths: Vec<String>,
    /// Host header (default: the Service name).
    pub host: Option<String>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub body: String,
    #[serde(default)]
    pub h2: bool,
}

impl Default for Req {
    fn default() -> Self {
        Req {
            service: default_service(),
            port: default_port(),
            method: default_method(),
            path: default_path(),
            paths: Vec::new(),
            host: None,
            headers: BTreeMap::new(),
            body: String::new(),
            h2: false,
        }
    }
}

fn default_service() -> String {
    "a".into()
}
fn default_port() -> u16 {
    80
}
fn default_method() -> String {
    "GET".into()
}
fn default_path() -> String {
    "/".into()
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Expect {
    pub status: Option<u16>,
    /// The backend pod that answered every request.
    pub backend: Option<String>,
    /// Fraction of answers per backend pod, each within `tolerance`.
    pub backends: Option<BTreeMap<String, f64>>,
    #[serde(default = "default_tolerance")]
    pub tolerance: f64,
    /// Fraction of requests answered with each status, within `tolerance`.
    pub statuses: Option<BTreeMap<u16, f64>>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub absent_headers: Vec<String>,
    #[serde(default)]
    pub present_headers: Vec<String>,
    /// Every answer from the same backend pod (which one is not specified).
    #[serde(default)]
    pub same_backend: bool,
    /// At least this many different backend pods answered.
    pub distinct_backends: Option<usize>,
    /// Increase of `istio_requests_total` per `response_flags` value during the case.
    #[serde(default)]
    pub response_flags: BTreeMap<String, f64>,
    /// At least this many requests received by each pod during the case.
    #[serde(default)]
    pub seen_at_least: BTreeMap<String, usize>,
    /// Requests each pod received during the case, as a fraction of the requests sent,
    /// within `tolerance` (sampled mirrors); checked once the counts stop moving.
    #[serde(default)]
    pub seen_share: BTreeMap<String, f64>,
    /// The Host header each pod saw on the last request it received (e.g. a mirror's
    /// `<host>-shadow`).
    #[serde(default)]
    pub seen_hosts: BTreeMap<String, String>,
    /// Headers each pod saw on the last request it received (mirrors included).
    #[serde(default)]
    pub seen_headers: BTreeMap<String, BTreeMap<String, String>>,
    /// At least this many answers with each status.
    #[serde(default)]
    pub min_count: BTreeMap<u16, usize>,
    #[serde(default)]
    pub upstream_headers: BTreeMap<String, String>,
    #[serde(default)]
    pub absent_upstream_headers: Vec<String>,
    #[serde(default)]
    pub present_upstream_headers: Vec<String>,
    pub upstream_path: Option<String>,
    pub upstream_host: Option<String>,
    pub location: Option<String>,
    pub body_contains: Option<String>,
    /// Some answer's body contains this (parallel cases, where which one is last varies).
    pub any_body_contains: Option<String>,
    /// Requests each backend pod received during the case (retries, mirrors); waited for.
    #[serde(default)]
    pub seen_by: BTreeMap<String, usize>,
    pub min_millis: Option<u64>,
    pub max_millis: Option<u64>,
}

fn default_tolerance() -> f64 {
    0.05
}

/// `tests/conformance`, or `CONFORMANCE_DIR` (to try suites kept elsewhere).
pub fn suites_dir() -> PathBuf {
    match std::env::var_os("CONFORMANCE_DIR") {
        Some(d) => PathBuf::from(d),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../conformance"),
    }
}

/// The suite files, sorted (their index picks each suite's address block).
pub fn suite_files() -> Vec<PathBuf> {
    let dir = suites_dir();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no suites in {}", dir.display());
    files
}

/// Reads one suite; `{{net}}` in its config is left for the runner to fill.
pub fn load_suite(file: &Path) -> Suite {
    let text = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", file.display()))
}
