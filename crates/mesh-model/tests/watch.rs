//! The file watcher: edits, breakage and deletion of watched files reach the model within a
//! second (polled with a deadline).

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mesh_model::{ConfigSource, ConfigStore, FileSource, MeshConfig, Model};

fn pod(name: &str, ip: &str, version: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: demo\n  labels: {{app: demo, version: {version}}}\n\
         spec:\n  nodeName: node-a\n  containers: [{{name: app, image: echo}}]\nstatus:\n  phase: Running\n  podIP: {ip}\n"
    )
}

fn write(path: &Path, docs: &[String]) {
    std::fs::write(path, docs.join("---\n")).unwrap();
}

/// Polls the model until `cond` holds; returns the time it took, failing after `limit`.
async fn wait_for(
    store: &ConfigStore,
    limit: Duration,
    what: &str,
    cond: impl Fn(&Model) -> bool,
) -> Duration {
    let start = Instant::now();
    loop {
        if cond(&store.current()) {
            return start.elapsed();
        }
        assert!(start.elapsed() < limit, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn version(m: &Model, ip: &str) -> Option<String> {
    m.workload_by_ip(ip.parse::<IpAddr>().unwrap()).and_then(|w| w.labels.get("version").map(str::to_string))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watched_file_changes_reach_the_model_within_a_second() {
    let dir = tempfile::tempdir().unwrap();
    let nested = dir.path().join("nested");
    std::fs::create_dir(&nested).unwrap();
    let file = nested.join("pods.yaml");
    write(&file, &[pod("p1", "10.0.0.1", "v1"), pod("p2", "10.0.0.2", "v1")]);
    let store = Arc::new(ConfigStore::new(MeshConfig::default()));
    let task = tokio::spawn(FileSource::new([dir.path()]).run(store.clone()));
    wait_for(&store, Duration::from_secs(5), "initial load", |m| m.workloads().len() == 2).await;

    // An edit.
    write(&file, &[pod("p1", "10.0.0.1", "v2"), pod("p2", "10.0.0.2", "v1")]);
    let took =
        wait_for(&store, Duration::from_secs(5), "edit", |m| version(m, "10.0.0.1").as_deref() == Some("v2"))
            .await;
    assert!(took < Duration::from_secs(1), "edit took {took:?}");

    // A type error in one document, while the other document changes.
    let bad = pod("p1", "10.0.0.1", "v3").replace("nodeName: node-a", "nodeName: [node-a]");
    write(&file, &[bad, pod("p2", "10.0.0.2", "v2")]);
    let took = wait_for(&store, Duration::from_secs(5), "other doc update", |m| {
        version(m, "10.0.0.2").as_deref() == Some("v2")
    })
    .await;
    assert!(took < Duration::from_secs(1), "update took {took:?}");
    let m = store.current();
    assert_eq!(version(&m, "10.0.0.1").as_deref(), Some("v2"), "previous p1 still in force");
    let diags = store.diagnostics();
    let err = diags.iter().find(|d| d.is_error()).expect("the error is reported");
    let text = err.to_string();
    assert!(text.contains("pods.yaml:0 Pod demo/p1: spec.nodeName: "), "{text}");

    // A YAML syntax error: p2's document is broken; p1 (now fixed) applies.
    write(&file, &[pod("p1", "10.0.0.1", "v4"), "kind: Pod\nmetadata: {name: p2\n".to_string()]);
    wait_for(&store, Duration::from_secs(5), "p1 fixed", |m| version(m, "10.0.0.1").as_deref() == Some("v4"))
        .await;
    assert_eq!(version(&store.current(), "10.0.0.2").as_deref(), Some("v2"), "p2 kept from before");
    let diags = store.diagnostics();
    let err = diags.iter().find(|d| d.is_error()).expect("syntax error reported");
    assert!(err.to_string().contains("pods.yaml:1: invalid YAML at line 16"), "{err}");

    // A new file, then deleting the first one.
    write(&dir.path().join("more.yml"), &[pod("p3", "10.0.0.3", "v1")]);
    wait_for(&store, Duration::from_secs(5), "new file", |m| m.workloads().len() == 3).await;
    std::fs::remove_file(&file).unwrap();
    let took = wait_for(&store, Duration::from_secs(5), "deletion", |m| m.workloads().len() == 1).await;
    assert!(took < Duration::from_secs(1), "deletion took {took:?}");
    assert!(store.diagnostics().is_empty(), "errors of the deleted file are gone: {:?}", store.diagnostics());
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_file_replaced_by_rename_is_still_watched() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pods.yaml");
    write(&file, &[pod("p1", "10.0.0.1", "v1")]);
    let store = Arc::new(ConfigStore::new(MeshConfig::default()));
    let task = tokio::spawn(FileSource::new([&file]).run(store.clone()));
    wait_for(&store, Duration::from_secs(5), "initial load", |m| m.workloads().len() == 1).await;
    for v in ["v2", "v3"] {
        // Editors save by writing a temporary file and renaming it over the original.
        let tmp = dir.path().join(".pods.yaml.swp");
        write(&tmp, &[pod("p1", "10.0.0.1", v)]);
        std::fs::rename(&tmp, &file).unwrap();
        let took =
            wait_for(&store, Duration::from_secs(5), v, |m| version(m, "10.0.0.1").as_deref() == Some(v))
                .await;
        assert!(took < Duration::from_secs(1), "{v} took {took:?}");
    }
    task.abort();
}
