//! Data-driven conformance: every `tests/conformance/*.yaml` file is a mesh configuration
//! (VirtualServices, DestinationRules, HTTPRoutes, policies, ... over the base model of
//! `common`) and a list of requests with what must happen. Each file runs against a fresh
//! in-process mesh: client pod → ztunnel → waypoint → ztunnel → backend pods, all real HBONE.
//! The format is documented in `tests/conformance/README.md`. Every failing case is reported,
//! not just the first.

mod common;

use std::collections::{BTreeMap, HashMap};
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
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Case {
    name: String,
    #[serde(default)]
    request: Req,
    #[serde(default = "one")]
    repeat: usize,
    /// Requests sent at once, each on its own connection (instead of `repeat`).
    parallel: Option<usize>,
    expect: Expect,
    /// Milliseconds to wait before sending (ejection times running out, ...).
    #[serde(default)]
    wait_millis: u64,
    /// The case fails because of a known waypoint bug (one line: what, where). Such a case
    /// failing is reported and tolerated; passing fails the run, so the marker is removed.
    known_bug: Option<String>,
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
    /// Paths used in turn by the requests of the case (instead of `path`).
    #[serde(default)]
    paths: Vec<String>,
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
    /// At least this many different backend pods answered.
    distinct_backends: Option<usize>,
    /// Increase of `istio_requests_total` per `response_flags` value during the case.
    #[serde(default)]
    response_flags: BTreeMap<String, f64>,
    /// At least this many requests received by each pod during the case.
    #[serde(default)]
    seen_at_least: BTreeMap<String, usize>,
    /// Requests each pod received during the case, as a fraction of the requests sent,
    /// within `tolerance` (sampled mirrors); checked once the counts stop moving.
    #[serde(default)]
    seen_share: BTreeMap<String, f64>,
    /// The Host header each pod saw on the last request it received (e.g. a mirror's
    /// `<host>-shadow`).
    #[serde(default)]
    seen_hosts: BTreeMap<String, String>,
    /// Headers each pod saw on the last request it received (mirrors included).
    #[serde(default)]
    seen_headers: BTreeMap<String, BTreeMap<String, String>>,
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

/// `tests/conformance`, or `CONFORMANCE_DIR` (to try suites kept elsewhere).
fn suites_dir() -> PathBuf {
    match std::env::var_os("CONFORMANCE_DIR") {
        Some(d) => PathBuf::from(d),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/conformance"),
    }
}

/// The `i`th request of a case.
fn build(r: &Req, i: usize) -> Result<Request<Full<Bytes>>, String> {
    let path = if r.paths.is_empty() { &r.path } else { &r.paths[i % r.paths.len()] };
    let mut b = Request::builder().method(r.method.as_str());
    b = if r.h2 {
        b.uri(format!("http://{}{}", r.host.as_deref().unwrap_or(&r.service), path))
    } else {
        b.uri(path.as_str()).header("host", r.host.as_deref().unwrap_or(&r.service))
    };
    for (k, v) in &r.headers {
        b = b.header(k, v);
    }
    b.body(Full::new(Bytes::from(r.body.clone()))).map_err(|e| format!("building request: {e}"))
}

async fn run_case(mesh: &Mesh, case: &Case) -> Result<(), String> {
    tokio::time::sleep(Duration::from_millis(case.wait_millis)).await;
    mesh.backends.clear();
    let r = &case.request;
    let dst = SocketAddr::new(mesh.vip(&r.service), r.port);
    let e = &case.expect;
    let flags_before = if e.response_flags.is_empty() { HashMap::new() } else { mesh.requests_by_flags() };
    let start = Instant::now();
    let mut answers = Vec::with_capacity(case.repeat);
    if let Some(n) = case.parallel {
        let mut tasks = Vec::new();
        for i in 0..n {
            let mut sender = client(mesh, dst, r.h2).await;
            let req = build(r, i)?;
            tasks.push(tokio::spawn(async move { sender.send(req).await }));
        }
        for t in tasks {
            answers.push(t.await.map_err(|e| e.to_string())?.map_err(|e| e.to_string())?);
        }
    }
    let mut sender = client(mesh, dst, r.h2).await;
    let repeat = if case.parallel.is_some() { 0 } else { case.repeat };
    for i in 0..repeat {
        let req = build(r, i)?;
        match sender.send(req).await {
            Ok(a) => answers.push(a),
            Err(e) => return Err(format!("request {i}: {e}")),
        }
    }
    let elapsed = start.elapsed();
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
    if let Some(min) = e.distinct_backends {
        let pods: std::collections::BTreeSet<_> = answers.iter().filter_map(|a| a.backend()).collect();
        if pods.len() < min {
            return Err(format!("answered by {pods:?}, want at least {min} different pods"));
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
            let got = joined(&seen.headers, k);
            if got.as_deref() != Some(v.as_str()) {
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
    for (pod, min) in &e.seen_at_least {
        let got = mesh.backends.seen_by(pod).len();
        if got < *min {
            return Err(format!("{pod} saw {got} requests, want at least {min}"));
        }
    }
    if !e.seen_share.is_empty() {
        // Fire-and-forget copies may still be on their way: wait for 300 ms without change.
        let count = || e.seen_share.keys().map(|p| mesh.backends.seen_by(p).len()).collect::<Vec<_>>();
        let (mut last, mut stable) = (count(), Instant::now());
        let deadline = Instant::now() + Duration::from_secs(5);
        while stable.elapsed() < Duration::from_millis(300) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let now = count();
            if now != last {
                (last, stable) = (now, Instant::now());
            }
        }
        for ((pod, frac), got) in e.seen_share.iter().zip(last) {
            let g = got as f64 / n;
            if (g - frac).abs() > e.tolerance {
                return Err(format!("{pod} saw {got} requests ({g:.3}), want {frac} ± {}", e.tolerance));
            }
        }
    }
    for (pod, host) in &e.seen_hosts {
        let got = wait_seen(mesh, pod).await.ok_or_else(|| format!("{pod} saw no request"))?;
        if got.host != *host {
            return Err(format!("{pod} saw host {:?}, want {host:?}", got.host));
        }
    }
    for (pod, want) in &e.seen_headers {
        let got = wait_seen(mesh, pod).await.ok_or_else(|| format!("{pod} saw no request"))?;
        for (k, v) in want {
            let h = joined(&got.headers, k);
            if h.as_deref() != Some(v.as_str()) {
                return Err(format!("{pod} saw {k}: {h:?}, want {v:?} (all: {:?})", got.headers));
            }
        }
    }
    // Metrics are recorded when a response body ends, possibly just after the client saw it.
    if !e.response_flags.is_empty() {
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            let now = mesh.requests_by_flags();
            let grew =
                |f: &str| now.get(f).copied().unwrap_or(0.0) - flags_before.get(f).copied().unwrap_or(0.0);
            if e.response_flags.iter().all(|(f, n)| grew(f) == *n) {
                break;
            }
            if Instant::now() > deadline {
                let all: BTreeMap<&str, f64> =
                    now.keys().map(|f| (f.as_str(), grew(f))).filter(|(_, n)| *n != 0.0).collect();
                return Err(format!(
                    "requests by response_flags grew by {all:?}, want {:?}",
                    e.response_flags
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    Ok(())
}

/// Every value of header `k`, joined with `,` (repeated lines are one list, RFC 9110 §5.3).
fn joined(h: &http::HeaderMap, k: &str) -> Option<String> {
    let all: Vec<&str> = h.get_all(k).iter().filter_map(|v| v.to_str().ok()).collect();
    (!all.is_empty()).then(|| all.join(","))
}

/// The last request `pod` received, waiting a little for fire-and-forget copies.
async fn wait_seen(mesh: &Mesh, pod: &str) -> Option<Seen> {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        if let Some(s) = mesh.backends.seen_by(pod).pop() {
            return Some(s);
        }
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
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
    // CONFORMANCE_ONLY=<part of a file name> runs only the matching suites (while writing one);
    // the address blocks stay those of the full run.
    let only = std::env::var("CONFORMANCE_ONLY").ok();
    assert!(!files.is_empty(), "no suites in {}", suites_dir().display());
    let mut failures = Vec::new();
    let mut known = Vec::new();
    let mut total = 0;
    let mut ran = 0;
    for (i, file) in files.iter().enumerate() {
        if only.as_ref().is_some_and(|o| !file.to_string_lossy().contains(o.as_str())) {
            continue;
        }
        ran += 1;
        let text = std::fs::read_to_string(file).unwrap();
        let mut suite: Suite =
            serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        // `{{net}}` stands for the suite's address block: pod IPs 127.<net>.x.y, VIPs 10.<net>.x.y.
        let net = 200 + i as u8;
        suite.config = suite.config.replace("{{net}}", &net.to_string());
        // A suite whose config does not load would silently test the defaults.
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("config.yaml"), &suite.config).unwrap();
        let loaded = mesh_model::load_paths(&[tmp.path().join("config.yaml")]);
        let errors: Vec<String> =
            loaded.diagnostics.iter().filter(|d| d.is_error()).map(|d| d.to_string()).collect();
        assert!(errors.is_empty(), "{}: config does not load:\n{}", file.display(), errors.join("\n"));
        let mesh = start_mesh(net, &suite.config).await;
        for case in &suite.cases {
            total += 1;
            let r = tokio::time::timeout(Duration::from_secs(30), run_case(&mesh, case)).await;
            let r = r.unwrap_or_else(|_| Err("timed out after 30 s".into()));
            let what = format!("{} [{}] {}", file.display(), suite.name, case.name);
            match (r, &case.known_bug) {
                (Err(why), None) => failures.push(format!("{what}: {why}")),
                (Err(why), Some(bug)) => known.push(format!("{what}: {bug} (fails: {why})")),
                (Ok(()), Some(bug)) => {
                    failures.push(format!("{what}: passes but is marked knownBug {bug:?}; remove the marker"))
                }
                (Ok(()), None) => {}
            }
        }
        mesh.shutdown().await;
    }
    println!(
        "conformance: {total} cases in {ran} files, {} failed, {} known bugs",
        failures.len(),
        known.len()
    );
    for k in &known {
        println!("known bug: {k}");
    }
    assert!(failures.is_empty(), "{} of {total} cases failed:\n{}", failures.len(), failures.join("\n"));
}
