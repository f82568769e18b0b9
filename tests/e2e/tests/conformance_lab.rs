//! The waypoint conformance suites (`tests/conformance/*.yaml`) against the lab (root; FAILS,
//! never skips, without it): one lab with the base model, where the lab starts the waypoint for
//! the `istio-waypoint` Gateway and every pod is the echo app; each suite's config is applied,
//! its cases sent from the client pod (`mesh-probe conformance`, captured by eBPF), what the
//! backends saw read from their echo logs and the response flags from the waypoint's metrics;
//! then the suite's config is deleted again. Cases that cannot hold against echo pods carry
//! `labSkip` with the reason and run in-process only.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use mesh_e2e::conformance::{
    self, Answer, Case, Placement, Seen, Target, WireAnswer, base_model, demo_vips, flags_from_metrics,
};
use mesh_e2e::lab::{Lab, bin_dir};
use serde_json::Value;

/// The lab's address block: VIPs 10.77.0.x, pods 10.77.1-2.x.
const NET: u8 = 77;

struct LabTarget<'a> {
    lab: &'a Lab,
    logs: PathBuf,
    suite_file: PathBuf,
    index: Cell<usize>,
    vips: HashMap<String, IpAddr>,
    waypoint: String,
    /// Log sizes of each pod at the start of the case.
    offsets: RefCell<HashMap<PathBuf, u64>>,
}

impl LabTarget<'_> {
    /// The echo logs of namespace `demo`'s pods (the client's included: it sees nothing).
    fn pod_logs(&self) -> Vec<PathBuf> {
        let Ok(dir) = std::fs::read_dir(&self.logs) else { return Vec::new() };
        dir.flatten()
            .map(|e| e.path())
            .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("demo.")))
            .collect()
    }
}

fn seen_from_line(line: &str) -> Option<(String, Seen)> {
    let v: Value = serde_json::from_str(line).ok()?;
    if v["kind"] != "http" {
        return None;
    }
    let mut headers = http::HeaderMap::new();
    for (k, vals) in v["headers"].as_object()? {
        let name = http::HeaderName::from_bytes(k.as_bytes()).ok()?;
        for val in vals.as_array()? {
            headers.append(name.clone(), http::HeaderValue::from_str(val.as_str()?).ok()?);
        }
    }
    let seen = Seen {
        pod: v["pod"].as_str()?.to_string(),
        method: v["method"].as_str()?.to_string(),
        path: v["path"].as_str()?.to_string(),
        host: v["host"].as_str()?.to_string(),
        headers,
    };
    Some((v["ts"].as_str().unwrap_or("").to_string(), seen))
}

impl Target for LabTarget<'_> {
    async fn begin(&self) {
        let mut offsets = self.offsets.borrow_mut();
        offsets.clear();
        for p in self.pod_logs() {
            let len = std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
            offsets.insert(p, len);
        }
    }

    async fn send(&self, case: &Case) -> Result<Vec<Answer>, String> {
        let r = &case.request;
        let vip = self.vips.get(&r.service).ok_or_else(|| format!("no Service {} with a VIP", r.service))?;
        let addr = SocketAddr::new(*vip, r.port).to_string();
        let scope = format!("{}#{}", self.suite_file.display(), self.index.get());
        let probe = bin_dir().join("mesh-probe");
        let index = self.index.get().to_string();
        let args = [
            probe.to_str().expect("utf-8 path"),
            "conformance",
            self.suite_file.to_str().expect("utf-8 path"),
            &index,
            &addr,
            &scope,
        ];
        let out = self.lab.exec("demo/client", &args).map_err(|e| format!("lab exec: {e}"))?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let v: Value = serde_json::from_str(stdout.trim()).map_err(|e| {
            format!("probe output not JSON ({e}): {stdout} stderr: {}", String::from_utf8_lossy(&out.stderr))
        })?;
        if let Some(e) = v.get("error") {
            return Err(format!("probe: {e}"));
        }
        let wire: Vec<WireAnswer> = serde_json::from_value(v).map_err(|e| format!("probe answers: {e}"))?;
        wire.into_iter().map(Answer::try_from).collect()
    }

    async fn seen(&self) -> Vec<Seen> {
        let offsets = self.offsets.borrow();
        let mut all: Vec<(String, Seen)> = Vec::new();
        for p in self.pod_logs() {
            let from = offsets.get(&p).copied().unwrap_or(0) as usize;
            let Ok(bytes) = std::fs::read(&p) else { continue };
            let text = String::from_utf8_lossy(bytes.get(from..).unwrap_or_default());
            // Only whole lines: the last one may still be being written.
            let complete = text.rsplit_once('\n').map_or("", |(done, _)| done);
            all.extend(complete.lines().filter_map(seen_from_line));
        }
        // RFC 3339 timestamps of one clock and format sort as text.
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all.into_iter().map(|(_, s)| s).collect()
    }

    async fn requests_by_flags(&self) -> HashMap<String, f64> {
        match self.lab.pod_get("demo", &self.waypoint, 15020, "/metrics") {
            Ok(text) => flags_from_metrics(&text),
            Err(e) => panic!("waypoint metrics: {e}"),
        }
    }
}

/// The model generation each proxy (waypoint, both ztunnels) has in force.
fn generations(lab: &Lab, waypoint: &str) -> Vec<u64> {
    let gen_of = |text: anyhow::Result<String>| -> u64 {
        let v: Value = text.ok().and_then(|t| serde_json::from_str(&t).ok()).unwrap_or(Value::Null);
        v.pointer("/generation")
            .or_else(|| v.pointer("/model/generation"))
            .and_then(Value::as_u64)
            .unwrap_or(0)
    };
    vec![
        gen_of(lab.pod_get("demo", waypoint, 15000, "/config_dump")),
        gen_of(lab.node_get("node-a", 15000, "/config_dump")),
        gen_of(lab.node_get("node-b", 15000, "/config_dump")),
    ]
}

/// `lab apply`/`delete` of `file` (forced: suites reference undefined subsets and the like on
/// purpose, to see how the waypoint handles them), then waits until every proxy has loaded a newer model and
/// it has stayed the same for 400 ms (the model is written in more than one file).
fn change(lab: &Lab, file: &Path, delete: bool, waypoint: &str) {
    let before = generations(lab, waypoint);
    let verb = if delete { "delete" } else { "apply" };
    let out = mesh_e2e::lab::meshctl(&["lab", verb, "--force", "-f", file.to_str().expect("utf-8 path")])
        .output()
        .expect("meshctl lab");
    assert!(
        out.status.success(),
        "lab {verb} {}: {}{}",
        file.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let (mut last, mut stable) = (before.clone(), Instant::now());
    loop {
        let now = generations(lab, waypoint);
        if now != last {
            (last, stable) = (now.clone(), Instant::now());
        }
        let newer = now.iter().zip(&before).all(|(n, b)| n > b);
        if newer && stable.elapsed() >= Duration::from_millis(400) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "proxies did not load the {verb} of {}: {before:?} → {now:?}",
            file.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The waypoint pod's name, from `lab status`.
fn waypoint_pod(lab: &Lab) -> String {
    let status = lab.status();
    status
        .split_whitespace()
        .find_map(|w| w.strip_prefix("demo/waypoint-"))
        .map(|rest| format!("waypoint-{rest}"))
        .unwrap_or_else(|| panic!("no waypoint pod in lab status:\n{status}"))
}

#[tokio::test(flavor = "current_thread")]
async fn conformance_suites_in_the_lab() {
    let tmp = tempfile_dir();
    let base_file = tmp.join("base.yaml");
    let base = base_model(NET, Placement::Lab);
    std::fs::write(&base_file, &base).expect("write base model");
    let mut lab = Lab::up(&[&base_file], &[]).expect("lab up");
    let waypoint = waypoint_pod(&lab);
    let only = std::env::var("CONFORMANCE_ONLY").ok();
    let (mut total, mut skipped) = (0, 0);
    let (mut failures, mut known, mut skips) = (Vec::new(), Vec::new(), Vec::new());
    for file in conformance::suite_files() {
        if only.as_ref().is_some_and(|o| !file.to_string_lossy().contains(o.as_str())) {
            continue;
        }
        let suite = conformance::load_suite(&file);
        if let Some(why) = &suite.lab_skip {
            skipped += suite.cases.len();
            skips.push(format!("{}: whole suite: {why}", file.display()));
            continue;
        }
        let config = Placement::Lab.suite_config(&suite.config, NET);
        let config_file = tmp.join("suite.yaml");
        std::fs::write(&config_file, &config).expect("write suite config");
        if !config.trim().is_empty() {
            change(&lab, &config_file, false, &waypoint);
        }
        let target = LabTarget {
            lab: &lab,
            logs: lab.state_dir.join("logs"),
            suite_file: file.clone(),
            index: Cell::new(0),
            vips: demo_vips(&format!("{base}\n---\n{config}")),
            waypoint: waypoint.clone(),
            offsets: RefCell::new(HashMap::new()),
        };
        for (i, case) in suite.cases.iter().enumerate() {
            let what = format!("{} [{}] {}", file.display(), suite.name, case.name);
            if let Some(why) = &case.lab_skip {
                skipped += 1;
                skips.push(format!("{what}: {why}"));
                continue;
            }
            total += 1;
            target.index.set(i);
            let r = tokio::time::timeout(Duration::from_secs(30), conformance::run_case(&target, case)).await;
            let r = r.unwrap_or_else(|_| Err("timed out after 30 s".into()));
            match (r, &case.known_bug) {
                (Err(why), None) => failures.push(format!("{what}: {why}")),
                (Err(why), Some(bug)) => known.push(format!("{what}: {bug} (fails: {why})")),
                (Ok(()), Some(bug)) => {
                    failures.push(format!("{what}: passes but is marked knownBug {bug:?}; remove the marker"))
                }
                (Ok(()), None) => {}
            }
        }
        if !config.trim().is_empty() {
            change(&lab, &config_file, true, &waypoint);
        }
    }
    lab.down().expect("lab down");
    let _ = std::fs::remove_dir_all(&tmp);
    println!(
        "conformance in the lab: {total} cases run, {} failed, {} known bugs, {skipped} not run in the lab",
        failures.len(),
        known.len()
    );
    for s in &skips {
        println!("labSkip: {s}");
    }
    for k in &known {
        println!("known bug: {k}");
    }
    assert!(only.is_some() || total >= 150, "only {total} cases ran in the lab");
    assert!(
        failures.is_empty(),
        "{} of {total} cases failed in the lab:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

fn tempfile_dir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("mesh-conformance-lab-{}", std::process::id()));
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}
