//! ztunnel's model from the API server ([`mesh_kube::KubeSource`]) follows a real cluster:
//! the CRDs from `deploy/crds` apply, the first full sync completes, and namespaces, pods
//! (status patched, as there is no kubelet) and Services show in the model within a second of
//! the API call that made them.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use mesh_kube::{KubeSource, KubeSourceOptions};
use mesh_kube_it::PodSpec;
use mesh_model::{ConfigSource, ConfigStore, MeshConfig, Model, ModelHandle, PodPhase};

/// How quickly the model must follow the API server.
const FOLLOW: Duration = Duration::from_secs(1);

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Waits (without sleeping: on model changes) until `found` returns something, for at most
/// `within`; returns it and how long it took.
async fn wait_for<T>(
    handle: &mut ModelHandle,
    within: Duration,
    what: &str,
    found: impl Fn(&Model) -> Option<T>,
) -> anyhow::Result<(T, Duration)> {
    let start = Instant::now();
    loop {
        if let Some(t) = found(&handle.current()) {
            return Ok((t, start.elapsed()));
        }
        let left =
            within.checked_sub(start.elapsed()).with_context(|| format!("{what}: not within {within:?}"))?;
        tokio::time::timeout(left, handle.changed())
            .await
            .with_context(|| format!("{what}: not within {within:?}"))?;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ztunnel_model_follows_the_cluster() -> anyhow::Result<()> {
    let Some(cluster) = mesh_kube_it::start_or_skip("ztunnel_model_follows_the_cluster").await? else {
        return Ok(());
    };
    let crds = cluster.apply_crds(&repo_root().join("deploy/crds")).await?;
    assert!(crds.iter().any(|c| c == "authorizationpolicies.security.istio.io"), "{crds:?}");
    assert!(crds.iter().any(|c| c == "httproutes.gateway.networking.k8s.io"), "{crds:?}");

    let store = Arc::new(ConfigStore::new(MeshConfig::default()));
    let source = KubeSource::new(cluster.client.clone(), KubeSourceOptions::default());
    let ready = source.readiness();
    let s = store.clone();
    let task = tokio::spawn(async move { source.run(s).await });
    tokio::time::timeout(Duration::from_secs(30), ready.wait()).await.context("first full sync")?;
    let mut handle = store.handle();

    // A pod in an ambient namespace: in the model, captured, with its IP, node and identity.
    cluster.ensure_namespace("shop", &[("istio.io/dataplane-mode", "ambient")]).await?;
    let labels = BTreeMap::from([("app".to_string(), "cart".to_string())]);
    let spec = PodSpec {
        namespace: "shop",
        name: "cart-a",
        service_account: "cart",
        node: "node-a",
        ip: "10.0.1.10",
        labels,
    };
    cluster.run_pod(&spec).await?;
    let ip: std::net::IpAddr = "10.0.1.10".parse()?;
    let (w, took) = wait_for(&mut handle, FOLLOW, "pod cart-a running in the model", |m| {
        m.workloads()
            .iter()
            .find(|w| &*w.name == "cart-a" && w.ips.contains(&ip) && w.phase == PodPhase::Running)
            .cloned()
    })
    .await?;
    assert!(took < FOLLOW);
    assert!(w.captured, "namespace is ambient");
    assert_eq!(w.node.as_deref(), Some("node-a"));
    assert_eq!(w.identity.to_string(), "spiffe://cluster.local/ns/shop/sa/cart");
    assert_eq!(handle.current().workloads_on_node("node-a").count(), 1);

    // A Service selecting it: its cluster IP (allocated by the API server) in the model.
    let svc: Service = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "cart", "namespace": "shop"},
        "spec": {"selector": {"app": "cart"}, "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}
    }))?;
    let svc = Api::<Service>::namespaced(cluster.client.clone(), "shop")
        .create(&PostParams::default(), &svc)
        .await?;
    let vip: std::net::IpAddr =
        svc.spec.and_then(|s| s.cluster_ip).context("no clusterIP allocated")?.parse()?;
    let (_, took) = wait_for(&mut handle, FOLLOW, "service cart in the model", |m| {
        m.services().iter().find(|s| &*s.name == "cart" && s.vips.contains(&vip)).cloned()
    })
    .await?;
    assert!(took < FOLLOW);

    // The namespace leaves ambient: the pod is no longer captured.
    let patch = serde_json::json!({"metadata": {"labels": {"istio.io/dataplane-mode": null}}});
    Api::<Namespace>::all(cluster.client.clone())
        .patch("shop", &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    wait_for(&mut handle, FOLLOW, "pod cart-a no longer captured", |m| {
        m.workloads().iter().find(|w| &*w.name == "cart-a" && !w.captured).map(|_| ())
    })
    .await?;

    // The pod is deleted: gone from the model.
    Api::<Pod>::namespaced(cluster.client.clone(), "shop")
        .delete("cart-a", &DeleteParams { grace_period_seconds: Some(0), ..DeleteParams::default() })
        .await?;
    wait_for(&mut handle, FOLLOW, "pod cart-a gone from the model", |m| {
        (!m.workloads().iter().any(|w| &*w.name == "cart-a")).then_some(())
    })
    .await?;

    task.abort();
    Ok(())
}
