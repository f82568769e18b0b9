//! Data-driven conformance: every `tests/conformance/*.yaml` file is a mesh configuration
//! (VirtualServices, DestinationRules, HTTPRoutes, policies, ... over the base model) and a
//! list of requests with what must happen. Each file runs against a fresh in-process mesh:
//! client pod → ztunnel → waypoint → ztunnel → backend pods, all real HBONE. The format, the
//! client and the checks are shared with the lab runner (`mesh_e2e::conformance`); the format
//! is documented in `tests/conformance/README.md`. Every failing case is reported, not just
//! the first.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use mesh_e2e::conformance::{self as conf, Answer, Case, Placement, Target};

impl Target for Mesh {
    async fn begin(&self) {
        self.backends.clear();
    }

    async fn send(&self, case: &Case) -> Result<Vec<Answer>, String> {
        let r = &case.request;
        let dst = SocketAddr::new(self.vip(&r.service), r.port);
        let (from, socks) = (self.client_ip(), self.a.socks5_addr);
        conf::send_case(case, &[], || async move { Ok(socks_connect(from, socks, dst).await) }).await
    }

    async fn seen(&self) -> Vec<conf::Seen> {
        self.backends.seen.lock().unwrap().clone()
    }

    async fn requests_by_flags(&self) -> HashMap<String, f64> {
        Mesh::requests_by_flags(self)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_suites() {
    let files = conf::suite_files();
    // CONFORMANCE_ONLY=<part of a file name> runs only the matching suites (while writing one);
    // the address blocks stay those of the full run.
    let only = std::env::var("CONFORMANCE_ONLY").ok();
    let mut failures = Vec::new();
    let mut known = Vec::new();
    let mut total = 0;
    let mut ran = 0;
    for (i, file) in files.iter().enumerate() {
        if only.as_ref().is_some_and(|o| !file.to_string_lossy().contains(o.as_str())) {
            continue;
        }
        ran += 1;
        let mut suite = conf::load_suite(file);
        // `{{net}}` stands for the suite's address block: pod IPs 127.<net>.x.y, VIPs 10.<net>.x.y.
        let net = 200 + i as u8;
        suite.config = Placement::InProcess.suite_config(&suite.config, net);
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
            let r = tokio::time::timeout(Duration::from_secs(30), conf::run_case(&mesh, case)).await;
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
