//! `meshctl install`, `waypoint apply` / `delete` and `uninstall` (their library API) against a
//! real API server: everything rendered is created; mesh-ca, started from the rendered config
//! under the rendered RBAC, stores its root (`install` publishes it) and issues a ztunnel the
//! identity of a pod on its node; a waypoint comes and goes
//! with its namespace label; `uninstall` leaves no object of the mesh behind.
//!
//! No controller-manager or kubelet runs: one Node object exists, and a stand-in marks
//! DaemonSets as rolled out and ready on it, as the DaemonSet controller and kubelet would, so
//! `uninstall`'s pin cleanup DaemonSet runs and ends; without the namespace controller a deleted namespace stays
//! `Terminating`, which counts as removed here.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context;
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{Namespace, Node};
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams};
use mesh_ca::{CaConfig, CaOptions};
use mesh_identity::{
    CaAuth, CaClient, CaClientConfig, Identity, SpiffeId, TokenSource, WorkloadCert, new_csr,
};
use mesh_kube_it::{Cluster, PodSpec};
use meshctl::install::{self, ApplyOptions, InstallOptions, Object, Recorded, UninstallOptions};

fn api(cluster: &Cluster, o: &Object) -> Api<DynamicObject> {
    match &o.namespace {
        Some(ns) => Api::namespaced_with(cluster.client.clone(), ns, &o.resource),
        None => Api::all_with(cluster.client.clone(), &o.resource),
    }
}

/// Objects of `objects` still present (a namespace being deleted counts as gone).
async fn present(cluster: &Cluster, objects: &[Object]) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    for o in objects {
        let live = match api(cluster, o).get_opt(&o.name).await {
            Ok(live) => live,
            // The kind is no longer served (its CRD was removed): nothing of it can exist.
            Err(kube::Error::Api(s)) if s.code == 404 => None,
            Err(e) => return Err(e).with_context(|| format!("get {}", o.display())),
        };
        if let Some(live) = live {
            if o.is("Namespace") && live.metadata.deletion_timestamp.is_some() {
                continue;
            }
            out.push(o.display());
        }
    }
    Ok(out)
}

/// Stands in for the DaemonSet controller and the kubelets: a DaemonSet whose generation is
/// not yet observed is marked rolled out and ready on every node. Polls until aborted.
async fn daemonset_controller(client: kube::Client) {
    let api = Api::<DaemonSet>::all(client.clone());
    let node_api = Api::<Node>::all(client.clone());
    loop {
        let nodes = node_api.list(&ListParams::default()).await.map(|l| l.items.len()).unwrap_or(0);
        if let Ok(list) = api.list(&ListParams::default()).await {
            for ds in list.items {
                let generation = ds.metadata.generation;
                if ds.status.as_ref().and_then(|s| s.observed_generation) == generation {
                    continue;
                }
                let (Some(ns), Some(name)) = (ds.metadata.namespace, ds.metadata.name) else { continue };
                let status = serde_json::json!({"status": {
                    "observedGeneration": generation, "desiredNumberScheduled": nodes,
                    "currentNumberScheduled": nodes, "numberMisscheduled": 0, "numberReady": nodes,
                    "updatedNumberScheduled": nodes, "numberAvailable": nodes,
                }});
                let _ = Api::<DaemonSet>::namespaced(client.clone(), &ns)
                    .patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
                    .await;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn mesh_ca_config_text(objects: &[Object]) -> anyhow::Result<String> {
    let cm =
        objects.iter().find(|o| o.is("ConfigMap") && o.name == "mesh-ca-config").context("mesh-ca-config")?;
    let text = cm.body.pointer("/data/mesh-ca.yaml").and_then(|v| v.as_str()).context("mesh-ca.yaml key")?;
    Ok(text.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn install_waypoint_uninstall_leave_the_cluster_clean() -> anyhow::Result<()> {
    let Some(cluster) =
        mesh_kube_it::start_or_skip("install_waypoint_uninstall_leave_the_cluster_clean").await?
    else {
        return Ok(());
    };
    let node: Node = serde_json::from_value(serde_json::json!({"metadata": {"name": "node-a"}}))?;
    Api::<Node>::all(cluster.client.clone()).create(&Default::default(), &node).await?;
    let controller = tokio::spawn(daemonset_controller(cluster.client.clone()));
    let opts = InstallOptions::default();
    let objects = install::render(&opts)?;
    let progress = Recorded::default();
    if let Err(errors) = install::apply(&cluster.client, &objects, &ApplyOptions::default(), &progress).await
    {
        anyhow::bail!("install failed: {errors:?}\n{}", progress.lines().join("\n"));
    }
    assert_eq!(present(&cluster, &objects).await?.len(), objects.len(), "everything rendered exists");

    let shop = PodSpec {
        namespace: "shop",
        name: "cart-a",
        service_account: "cart",
        node: "node-a",
        ip: "10.0.1.10",
        labels: BTreeMap::new(),
    };
    cluster.run_pod(&shop).await?;

    // mesh-ca from the rendered config, as its rendered ServiceAccount: it stores its root, and
    // install publishes the root certificate ConfigMap from it.
    let mut config = CaConfig::parse(&mesh_ca_config_text(&objects)?, "rendered mesh-ca.yaml")?;
    let token = cluster.sa_token(&opts.namespace, "mesh-ca", Duration::from_secs(3600)).await?;
    config.kubernetes.as_mut().context("rendered config has no kubernetes section")?.kubeconfig =
        Some(cluster.token_kubeconfig("mesh-ca", &token)?);
    let state = tempfile::tempdir()?;
    let ca =
        mesh_ca::start(CaOptions { config, state_dir: state.path().into(), listen: "127.0.0.1:0".parse()? })
            .await
            .context("mesh-ca under the rendered RBAC")?;
    assert!(install::publish_root(&cluster.client, &opts, &progress).await?, "root stored by mesh-ca");
    let cm =
        Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(cluster.client.clone(), &opts.namespace)
            .get(install::ROOT_CERT_CONFIGMAP)
            .await?;
    assert_eq!(cm.data.unwrap_or_default().get(install::ROOT_CERT_KEY), Some(&ca.root_pem));
    // The rendered RBAC lets mesh-ca review a ztunnel's token and find the pods on its node.
    let zt =
        PodSpec { namespace: &opts.namespace, name: "ztunnel-a", service_account: "ztunnel", ..shop.clone() };
    let zt = cluster.run_pod(&PodSpec { ip: "10.0.1.2", labels: BTreeMap::new(), ..zt }).await?;
    let token = cluster.pod_token(&zt, install::CA_TOKEN_AUDIENCE, Duration::from_secs(3600)).await?;
    let client = CaClient::new(
        CaClientConfig::new(format!("https://{}", ca.local_addr), ca.root_pem.clone()),
        CaAuth::Token(TokenSource::Static(token)),
    );
    let id = Identity::Workload(SpiffeId::new(&opts.trust_domain, "shop", "cart")?);
    let csr = new_csr(&id)?;
    let chain = client.create_certificate(&id, &csr.csr_pem, Duration::from_secs(3600)).await?;
    WorkloadCert::from_issued(id, csr, chain)?;
    ca.shutdown().await?;

    // A waypoint in an application namespace (with a pod there), then deleted again.
    if let Err(e) =
        meshctl::waypoint_cmd::apply(&cluster.client, &opts, "shop", "waypoint", None, &progress).await
    {
        anyhow::bail!("waypoint apply failed: {e:?}\n{}", progress.lines().join("\n"));
    }
    let waypoint = meshctl::waypoint_cmd::render(&opts, "shop", "waypoint", true)?;
    assert_eq!(present(&cluster, &waypoint).await?.len(), waypoint.len());
    let namespaces = Api::<Namespace>::all(cluster.client.clone());
    let label = |ns: Namespace| ns.metadata.labels.unwrap_or_default().get("istio.io/use-waypoint").cloned();
    assert_eq!(label(namespaces.get("shop").await?).as_deref(), Some("waypoint"));
    if let Err(e) = meshctl::waypoint_cmd::delete(&cluster.client, &opts, "shop", "waypoint", &progress).await
    {
        anyhow::bail!("waypoint delete failed: {e:?}\n{}", progress.lines().join("\n"));
    }
    assert_eq!(present(&cluster, &waypoint).await?, Vec::<String>::new());
    assert_eq!(label(namespaces.get("shop").await?), None);

    // Another waypoint left in place: uninstall removes it too.
    if let Err(e) =
        meshctl::waypoint_cmd::apply(&cluster.client, &opts, "shop", "waypoint", None, &progress).await
    {
        anyhow::bail!("waypoint apply failed: {e:?}\n{}", progress.lines().join("\n"));
    }
    let uninstall =
        UninstallOptions { install: opts.clone(), purge_crds: true, timeout: Duration::from_secs(30) };
    if let Err(errors) = install::uninstall(&cluster.client, &uninstall, &progress).await {
        anyhow::bail!("uninstall failed: {errors:?}\n{}", progress.lines().join("\n"));
    }
    let cleanup = install::cleanup_daemonset(&opts);
    let mut all = objects.clone();
    all.extend(waypoint);
    all.push(cleanup);
    // CRDs go once the API server's finalizer has removed their objects: poll, bounded.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut left = present(&cluster, &all).await?;
    while !left.is_empty() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        left = present(&cluster, &all).await?;
    }
    assert_eq!(left, Vec::<String>::new(), "{}", progress.lines().join("\n"));
    assert_eq!(label(namespaces.get("shop").await?), None);
    let lines = progress.lines();
    assert!(!lines.iter().any(|l| l.contains("skipping the eBPF pin cleanup")), "{}", lines.join("\n"));
    assert!(
        lines
            .iter()
            .any(|l| l.contains("ztunnel-cleanup: applied (removes /sys/fs/bpf/ztunnel on every node)")),
        "{}",
        lines.join("\n")
    );
    controller.abort();
    Ok(())
}
