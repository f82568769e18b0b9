//! The real ztunnel (`ztunnel::start`, capture mode none) with `source.kind: kube` against a
//! real API server and mesh-ca in Kubernetes mode: it stays unready (its readiness port not
//! even bound) while its ServiceAccount cannot list the model's kinds, starts and answers
//! readiness once the RBAC exists and the first full sync is done, then shows a pod created on
//! its node in `/config_dump` within a second and opens its listeners on the pod's address.

#![allow(clippy::print_stderr, reason = "the measured timings are shown with --nocapture")]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use kube::api::{Api, PostParams};
use mesh_ca::{CaConfig, CaOptions, KubeSettings, RunningCa};
use mesh_kube_it::{Cluster, PodSpec};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const HOUR: Duration = Duration::from_secs(3600);
/// How quickly ztunnel's model must follow the API server.
const FOLLOW: Duration = Duration::from_secs(1);
/// Node this ztunnel serves.
const NODE: &str = "node-a";
/// The app pod's address: loopback, so capture mode none can bind its listeners.
const POD_IP: &str = "127.0.77.10";

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// GET `path` on `addr` (HTTP/1.1, connection closed after the answer): (status, body).
async fn get(addr: SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    let mut s = TcpStream::connect(addr).await?;
    let req = format!("GET {path} HTTP/1.1\r\nhost: ztunnel\r\nconnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await?;
    let mut out = String::new();
    s.read_to_string(&mut out).await?;
    let status = out.split(' ').nth(1).and_then(|c| c.parse().ok()).context("no HTTP status")?;
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    Ok((status, body))
}

/// Polls `f` until it returns something, for at most `within`; returns it and how long it took.
async fn poll<T>(
    within: Duration,
    what: &str,
    mut f: impl AsyncFnMut() -> anyhow::Result<Option<T>>,
) -> anyhow::Result<(T, Duration)> {
    let start = Instant::now();
    loop {
        if let Some(t) = f().await? {
            return Ok((t, start.elapsed()));
        }
        anyhow::ensure!(start.elapsed() < within, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A free port on 127.0.0.1 (readiness must be probed before `start` returns its address).
fn free_port() -> anyhow::Result<SocketAddr> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

async fn start_ca(cluster: &Cluster, state: &Path) -> anyhow::Result<RunningCa> {
    let config = CaConfig {
        kubernetes: Some(KubeSettings {
            kubeconfig: Some(cluster.kubeconfig.clone()),
            ..KubeSettings::default()
        }),
        ..CaConfig::default()
    };
    let opts = CaOptions { config, state_dir: state.to_path_buf(), listen: "127.0.0.1:0".parse()? };
    Ok(mesh_ca::start(opts).await?)
}

/// Lets mesh-system/ztunnel list and watch what the model reads (the installer's rules).
async fn grant_model_rbac(cluster: &Cluster) -> anyhow::Result<()> {
    let pp = PostParams::default();
    let role = ClusterRole {
        metadata: kube::api::ObjectMeta { name: Some("ztunnel-model".into()), ..Default::default() },
        rules: Some(mesh_kube::required_rbac()),
        ..ClusterRole::default()
    };
    Api::<ClusterRole>::all(cluster.client.clone()).create(&pp, &role).await?;
    let binding: ClusterRoleBinding = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "ztunnel-model"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "ztunnel-model"},
        "subjects": [{"kind": "ServiceAccount", "name": "ztunnel", "namespace": "mesh-system"}],
    }))?;
    Api::<ClusterRoleBinding>::all(cluster.client.clone()).create(&pp, &binding).await?;
    Ok(())
}

fn workload<'a>(dump: &'a Value, namespace: &str, name: &str) -> Option<&'a Value> {
    dump["model"]["workloads"].as_array()?.iter().find(|w| w["namespace"] == namespace && w["name"] == name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ztunnel_follows_the_cluster() -> anyhow::Result<()> {
    let Some(cluster) = mesh_kube_it::start_or_skip("ztunnel_follows_the_cluster").await? else {
        return Ok(());
    };
    cluster.apply_crds(&repo_root().join("deploy/crds")).await?;
    let dir = tempfile::tempdir()?;

    // ztunnel's own pod (its CA token is bound to it) and a kubeconfig for its ServiceAccount,
    // which has no RBAC yet.
    let zt_pod = PodSpec {
        namespace: "mesh-system",
        name: "ztunnel-a",
        service_account: "ztunnel",
        node: NODE,
        ip: "10.0.1.2",
        labels: Default::default(),
    };
    let zt_pod = cluster.run_pod(&zt_pod).await?;
    let token_file = dir.path().join("ca-token");
    std::fs::write(&token_file, cluster.pod_token(&zt_pod, "istio-ca", HOUR).await?)?;
    let sa_token = cluster.sa_token("mesh-system", "ztunnel", HOUR).await?;
    let kubeconfig = cluster.token_kubeconfig("ztunnel", &sa_token)?;
    let ca = start_ca(&cluster, &dir.path().join("ca")).await?;

    let readiness_addr = free_port()?;
    let lo: SocketAddr = "127.0.0.1:0".parse()?;
    let config = ztunnel::Config {
        node: NODE.into(),
        ca_address: format!("https://{}", ca.local_addr),
        ca_root: ca.root_cert_path.clone(),
        token_file,
        source: mesh_kube::SourceConfig {
            kind: mesh_kube::SourceKind::Kube,
            kubeconfig,
            ..mesh_kube::SourceConfig::default()
        },
        outbound_addr: lo,
        socks5_addr: lo,
        admin_addr: lo,
        metrics_addr: lo,
        readiness_addr,
        ..ztunnel::Config::default()
    };
    let mut starting = tokio::spawn(ztunnel::start(config, None));

    // Forbidden to list: no first sync, so no start and nothing answering readiness.
    let early = tokio::time::timeout(Duration::from_millis(1500), &mut starting).await;
    assert!(early.is_err(), "ztunnel started without its first sync: {early:?}");
    let refused = TcpStream::connect(readiness_addr).await;
    assert!(refused.is_err(), "readiness answered before the first sync");

    // With the RBAC the sync completes (after the watchers' backoff): start, then ready.
    grant_model_rbac(&cluster).await?;
    let granted = Instant::now();
    let z = tokio::time::timeout(Duration::from_secs(30), starting)
        .await
        .context("ztunnel did not start within 30 s of its RBAC")???;
    eprintln!("ztunnel started {:?} after its RBAC was granted", granted.elapsed());
    assert_eq!(z.readiness_addr, readiness_addr);
    let (status, body) = get(z.readiness_addr, "/healthz/ready").await?;
    assert_eq!(status, 200, "{body}");
    let (_, dump) = get(z.admin_addr, "/config_dump").await?;
    let dump: Value = serde_json::from_str(&dump)?;
    assert!(dump["model"]["generation"].as_u64() > Some(0), "model loaded: {}", dump["model"]);
    assert_eq!(dump["config"]["source"]["kind"], "kube");
    assert!(workload(&dump, "mesh-system", "ztunnel-a").is_some(), "ztunnel's own pod is in the model");

    // A pod on this node in an ambient namespace: in /config_dump within a second.
    cluster.ensure_namespace("shop", &[("istio.io/dataplane-mode", "ambient")]).await?;
    let app = PodSpec {
        namespace: "shop",
        name: "cart-a",
        service_account: "cart",
        node: NODE,
        ip: POD_IP,
        labels: Default::default(),
    };
    cluster.run_pod(&app).await?;
    let (w, took) = poll(FOLLOW, "pod cart-a in /config_dump", async || {
        let (_, body) = get(z.admin_addr, "/config_dump").await?;
        let dump: Value = serde_json::from_str(&body)?;
        Ok(workload(&dump, "shop", "cart-a")
            .filter(|w| w["ips"].as_array().is_some_and(|ips| ips.iter().any(|ip| ip == POD_IP)))
            .cloned())
    })
    .await?;
    assert!(took < FOLLOW, "{took:?}");
    assert_eq!(w["node"], NODE);
    assert_eq!(w["captured"], true, "{w}");
    assert_eq!(w["identity"], "spiffe://cluster.local/ns/shop/sa/cart");

    // ztunnel acts on it: the pod's listeners come up on its address, and mesh-ca (which
    // places pods from the API server) grants ztunnel, calling with its node certificate,
    // the pod's identity: readiness turns 200 again once that certificate is in.
    let (_, listen) = poll(Duration::from_secs(5), "HBONE listener on the pod's address", async || {
        Ok(TcpStream::connect((POD_IP, 15008)).await.ok().map(drop))
    })
    .await?;
    let (_, cert) = poll(Duration::from_secs(10), "ready with the pod's certificate", async || {
        let (status, _) = get(z.readiness_addr, "/healthz/ready").await?;
        Ok((status == 200).then_some(()))
    })
    .await?;
    eprintln!(
        "pod cart-a in /config_dump after {took:?}; its listeners {listen:?} later; certificate {cert:?}"
    );

    z.shutdown().await;
    ca.shutdown().await?;
    Ok(())
}
