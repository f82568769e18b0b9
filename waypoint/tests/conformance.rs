//! Data-driven conformance: every `tests/conformance/*.yaml` file is a mesh configuration
//! (VirtualServices, DestinationRules, HTTPRoutes, policies, ... over the base model of
//! `common`) and a list of requests with what must happen. Each file runs against a fresh
//! in-process mesh: client pod → ztunnel → waypoint → ztunnel → backend pods, all real HBONE.
//! The format is documented in `tests/conformance/README.md`. Every failing case is reported,
//! not just the first.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use http::Request;
use http_body_util::Full;
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Suite {
    name: String,
    #[serde(default)]
    config: String,
    cases: Vec<Case>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    #[serde(default)]
    request: Req,
    #[serde(default = "one")]
    repeat: usize,
    /// Requests sent at once, each on its own connection (instead of `repeat`).
    parallel: Option<usize>,
    expect: Expect,
}

fn one() -> usize {
    1
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
struct Req {
    #[serde(default = "default_service")]
    service: String,
    #[serde(default = "default_port")]
    port: u16,
    #[serde(default = "default_method")]
    method: String,
    #[serde(default = "default_path")]
    path: String,
    /// Host header (default: the Service name).
    host: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    body: String,
    #[serde(default)]
    h2: bool,
}

impl Default for Req {
    fn default() -> Self {
        Req {
            service: default_service(),
            port: default_port(),
            method: default_method(),
            path: default_path(),
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
struct Expect {
    status: Option<u16>,
    /// The backend pod that answered every request.
    backend: Option<String>,
    /// Fraction of answers per backend pod, each within `tolerance`.
    backends: Option<BTreeMap<String, f64>>,
    #[serde(default = "default_tolerance")]
    tolerance: f64,
    /// Fraction of requests answered with each status, within `tolerance`.
    statuses: Option<BTreeMap<u16, f64>>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    absent_headers: Vec<String>,
    #[serde(default)]
    present_headers: Vec<String>,
    /// Every answer from the same backend pod (which one is not specified).
    #[serde(default)]
    same_backend: bool,
    /// At least this many answers with each status.
    #[serde(default)]
    min_count: BTreeMap<u16, usize>,
    #[serde(default)]
    upstream_headers: BTreeMap<String, String>,
    #[serde(default)]
    absent_upstream_headers: Vec<String>,
    #[serde(default)]
    present_upstream_headers: Vec<String>,
    upstream_path: Option<String>,
    upstream_host: Option<String>,
    location: Option<String>,
    body_contains: Option<String>,
    /// Requests each backend pod received during the case (retries, mirrors); waited for.
    #[serde(default)]
    seen_by: BTreeMap<String, usize>,
    min_millis: Option<u64>,
    max_millis: Option<u64>,
}

fn default_tolerance() -> f64 {
    0.05
}

fn suites_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/conformance")
}

fn build(r: &Req) -> Result<Request<Full<Bytes>>, String> {
    let mut b = Request::builder().method(r.method.as_str());
    b = if r.h2 {
        b.uri(format!("http://{}{}", r.host.as_deref().unwrap_or(&r.service), r.path))
    } else {
        b.uri(r.path.as_str()).header("host", r.host.as_deref().unwrap_or(&r.service))
    };
    for (k, v) in &r.headers {
        b = b.header(k, v);
    }
    b.body(Full::new(Bytes::from(r.body.clone()))).map_err(|e| format!("building request: {e}"))
}

async fn run_case(mesh: &Mesh, case: &Case) -> Result<(), String> {
    mesh.backends.clear();
    let r = &case.request;
    let dst = SocketAddr::new(mesh.vip(&r.service), r.port);
    let start = Instant::now();
    let mut answers = Vec::with_capacity(case.repeat);
    if let Some(n) = case.parallel {
        let mut tasks = Vec::new();
        for _ in 0..n {
            let mut sender = client(mesh, dst, r.h2).await;
            let req = build(r)?;
            tasks.push(tokio::spawn(async move { sender.send(req).await }));
        }
        for t in tasks {
            answers.push(t.await.map_err(|e| e.to_string())?.map_err(|e| e.to_string())?);
        }
    }
    let mut sender = client(mesh, dst, r.h2).await;
    let repeat = if case.parallel.is_some() { 0 } else { case.repeat };
    for i in 0..repeat {
        let req = build(r)?;
        match sender.send(req).await {
            Ok(a) => answers.push(a),
            Err(e) => return Err(format!("request {i}: {e}")),
        }
    }
    let elapsed = start.elapsed();
    let e = &case.expect;
    let last = answers.last().ok_or("no answer")?;
    if let Some(s) = e.status
        && let Some(bad) = answers.iter().find(|a| a.status != s)
    {
        return Err(format!("status {} (want {s}), body {:?}", bad.status, bad.body));
    }
    if let Some(want) = &e.backend
        && let Some(bad) = answers.iter().find(|a| a.backend().as_deref() != Some(want.as_str()))
    {
        return Err(format!("answered by {:?} (want {want}), status {}", bad.backend(), bad.status));
    }
    let n = answers.len() as f64;
    if let Some(want) = &e.backends {
        let mut got: BTreeMap<String, f64> = BTreeMap::new();
        for a in &answers {
            *got.entry(a.backend().unwrap_or_else(|| format!("status {}", a.status))).or_default() += 1.0 / n;
        }
        for (pod, frac) in want {
            let g = got.get(pod).copied().unwrap_or(0.0);
            if (g - frac).abs() > e.tolerance {
                return Err(format!(
                    "{pod}: {g:.3} of answers, want {frac} ± {} (all: {got:?})",
                    e.tolerance
                ));
            }
        }
    }
    if let Some(want) = &e.statuses {
        for (code, frac) in want {
            let g = answers.iter().filter(|a| a.status == *code).count() as f64 / n;
            if (g - frac).abs() > e.tolerance {
                return Err(format!("status {code}: {g:.3} of answers, want {frac} ± {}", e.tolerance));
            }
        }
    }
    for (k, v) in &e.headers {
        let got = last.headers.get(k).and_then(|h| h.to_str().ok());
        if got != Some(v.as_str()) {
            return Err(format!("response header {k}: {got:?}, want {v:?}"));
        }
    }
    for k in &e.present_headers {
        if !last.headers.contains_key(k.as_str()) {
            return Err(format!("response header {k} missing (all: {:?})", last.headers));
        }
    }
    if e.same_backend {
        let first = answers[0].backend();
        if first.is_none() || answers.iter().any(|a| a.backend() != first) {
            let all: Vec<_> = answers.iter().map(|a| a.backend()).collect();
            return Err(format!("answers from different backends: {all:?}"));
        }
    }
    for (code, min) in &e.min_count {
        let got = answers.iter().filter(|a| a.status == *code).count();
        if got < *min {
            return Err(format!("{got} answers with status {code}, want at least {min}"));
        }
    }
    for k in &e.absent_headers {
        if last.headers.contains_key(k.as_str()) {
            return Err(format!("response header {k} present: {:?}", last.headers.get(k)));
        }
    }
    if let Some(loc) = &e.location {
        let got = last.headers.get("location").and_then(|h| h.to_str().ok());
        if got != Some(loc.as_str()) {
            return Err(format!("location {got:?}, want {loc:?}"));
        }
    }
    if let Some(text) = &e.body_contains
        && !last.body.contains(text.as_str())
    {
        return Err(format!("body {:?} lacks {text:?}", last.body));
    }
    if let Some(ms) = e.min_millis
        && elapsed < Duration::from_millis(ms)
    {
        return Err(format!("took {elapsed:?}, want at least {ms} ms"));
    }
    if let Some(ms) = e.max_millis
        && elapsed > Duration::from_millis(ms)
    {
        return Err(format!("took {elapsed:?}, want at most {ms} ms"));
    }
    // What the backend saw: the last request that reached one.
    let needs_upstream = !e.upstream_headers.is_empty()
        || !e.absent_upstream_headers.is_empty()
        || !e.present_upstream_headers.is_empty()
        || e.upstream_path.is_some()
        || e.upstream_host.is_some();
    if needs_upstream {
        let seen = mesh.backends.seen.lock().unwrap().iter().rev().find(|s| s.pod != "mirror-v1").cloned();
        let seen = seen.ok_or("no backend saw the request")?;
        for (k, v) in &e.upstream_headers {
            let got = seen.headers.get(k).and_then(|h| h.to_str().ok());
            if got != Some(v.as_str()) {
                return Err(format!("backend saw {k}: {got:?}, want {v:?} (all: {:?})", seen.headers));
            }
        }
        for k in &e.absent_upstream_headers {
            if seen.headers.contains_key(k.as_str()) {
                return Err(format!("backend saw {k}: {:?}", seen.headers.get(k)));
            }
        }
        for k in &e.present_upstream_headers {
            if !seen.headers.contains_key(k.as_str()) {
                return Err(format!("backend did not see {k} (all: {:?})", seen.headers));
            }
        }
        if let Some(p) = &e.upstream_path
            && seen.path != *p
        {
            return Err(format!("backend saw path {:?}, want {p:?}", seen.path));
        }
        if let Some(h) = &e.upstream_host
            && seen.host != *h
        {
            return Err(format!("backend saw host {:?}, want {h:?}", seen.host));
        }
    }
    if !e.seen_by.is_empty() {
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            let counts: BTreeMap<String, usize> =
                e.seen_by.keys().map(|p| (p.clone(), mesh.backends.seen_by(p).len())).collect();
            if counts == e.seen_by {
                break;
            }
            if Instant::now() > deadline {
                return Err(format!("backends saw {counts:?}, want {:?}", e.seen_by));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_suites() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(suites_dir())
        .expect("tests/conformance")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no suites in {}", suites_dir().display());
    let mut failures = Vec::new();
    let mut total = 0;
    for (i, file) in files.iter().enumerate() {
        let text = std::fs::read_to_string(file).unwrap();
        let suite: Suite = serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        // A suite whose config does not load would silently test the defaults.
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("config.yaml"), &suite.config).unwrap();
        let loaded = mesh_model::load_paths(&[tmp.path().join("config.yaml")]);
        let errors: Vec<String> =
            loaded.diagnostics.iter().filter(|d| d.is_error()).map(|d| d.to_string()).collect();
        assert!(errors.is_empty(), "{}: config does not load:\n{}", file.display(), errors.join("\n"));
        let mesh = start_mesh(200 + i as u8, &suite.config).await;
        for case in &suite.cases {
            total += 1;
            let r = tokio::time::timeout(Duration::from_secs(30), run_case(&mesh, case)).await;
            let r = r.unwrap_or_else(|_| Err("timed out after 30 s".into()));
            if let Err(why) = r {
                failures.push(format!("{} [{}] {}: {why}", file.display(), suite.name, case.name));
            }
        }
        mesh.shutdown().await;
    }
    println!("conformance: {total} cases in {} files, {} failed", files.len(), failures.len());
    assert!(failures.is_empty(), "{} of {total} cases failed:\n{}", failures.len(), failures.join("\n"));
}
