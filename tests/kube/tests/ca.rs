//! mesh-ca in Kubernetes mode against a real kube-apiserver: callers present projected
//! ServiceAccount tokens (TokenRequest bound to their pod, audience `istio-ca`), mesh-ca reviews
//! them with TokenReview under a minimal RBAC role, a ztunnel gets identities of pods on its own
//! node only, other workloads only their own; the root lives in a Secret created once and reused
//! after a restart; a plug-in CA Secret (Istio `cacerts` layout) is preferred when present;
//! the root certificate is published in a ConfigMap and follows a change of CA.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use kube::api::{Api, DeleteParams, PostParams};
use mesh_ca::{CaConfig, CaOptions, KubeSettings, RunningCa};
use mesh_identity::{
    CaAuth, CaClient, CaClientConfig, CaClientError, Identity, NodeId, SpiffeId, TokenSource, WorkloadCert,
    new_csr,
};
use mesh_kube_it::{Cluster, PodSpec};

const TD: &str = "cluster.local";
const AUDIENCE: &str = "istio-ca";
const HOUR: Duration = Duration::from_secs(3600);

fn wl(ns: &str, sa: &str) -> Identity {
    Identity::Workload(SpiffeId::new(TD, ns, sa).unwrap())
}

fn pod<'a>(namespace: &'a str, name: &'a str, sa: &'a str, node: &'a str, ip: &'a str) -> PodSpec<'a> {
    PodSpec { namespace, name, service_account: sa, node, ip, labels: BTreeMap::new() }
}

/// mesh-ca's own ServiceAccount with the least it needs: create TokenReviews, read pods, and
/// read/create Secrets in its namespace. Returns a kubeconfig with that ServiceAccount's token.
async fn mesh_ca_rbac(cluster: &Cluster) -> anyhow::Result<std::path::PathBuf> {
    cluster.ensure_namespace("mesh-system", &[]).await?;
    cluster.ensure_service_account("mesh-system", "mesh-ca").await?;
    let c = &cluster.client;
    let pp = PostParams::default();
    let role: ClusterRole = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "mesh-ca"},
        "rules": [
            {"apiGroups": ["authentication.k8s.io"], "resources": ["tokenreviews"], "verbs": ["create"]},
            {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]},
        ]
    }))?;
    Api::<ClusterRole>::all(c.clone()).create(&pp, &role).await?;
    let subjects =
        serde_json::json!([{"kind": "ServiceAccount", "name": "mesh-ca", "namespace": "mesh-system"}]);
    let binding: ClusterRoleBinding = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "mesh-ca"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "mesh-ca"},
        "subjects": subjects,
    }))?;
    Api::<ClusterRoleBinding>::all(c.clone()).create(&pp, &binding).await?;
    let role: Role = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "mesh-ca", "namespace": "mesh-system"},
        "rules": [
            {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "create"]},
            {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "create", "update"]},
        ]
    }))?;
    Api::<Role>::namespaced(c.clone(), "mesh-system").create(&pp, &role).await?;
    let binding: RoleBinding = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "mesh-ca", "namespace": "mesh-system"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "mesh-ca"},
        "subjects": subjects,
    }))?;
    Api::<RoleBinding>::namespaced(c.clone(), "mesh-system").create(&pp, &binding).await?;
    let token = cluster.sa_token("mesh-system", "mesh-ca", HOUR).await?;
    cluster.token_kubeconfig("mesh-ca", &token)
}

async fn start_ca(kubeconfig: &Path, state: &Path) -> anyhow::Result<RunningCa> {
    let config = CaConfig {
        kubernetes: Some(KubeSettings {
            kubeconfig: Some(kubeconfig.to_path_buf()),
            ..KubeSettings::default()
        }),
        ..CaConfig::default()
    };
    let opts = CaOptions { config, state_dir: state.to_path_buf(), listen: "127.0.0.1:0".parse()? };
    Ok(mesh_ca::start(opts).await?)
}

fn client(ca: &RunningCa, token: &str) -> CaClient {
    let config = CaClientConfig::new(format!("https://{}", ca.local_addr), ca.root_pem.clone());
    CaClient::new(config, CaAuth::Token(TokenSource::Static(token.to_string())))
}

/// Asks for `id`; on success checks the chain (leaf for our key and identity, root last).
async fn ask(ca: &RunningCa, token: &str, id: &Identity) -> Result<Vec<String>, CaClientError> {
    let csr = new_csr(id).unwrap();
    let chain = client(ca, token).create_certificate(id, &csr.csr_pem.clone(), HOUR).await?;
    WorkloadCert::from_issued(id.clone(), csr, chain.clone()).expect("issued chain is valid for our key");
    assert_eq!(chain.last().map(|c| c.trim()), Some(ca.root_pem.trim()), "root last");
    Ok(chain)
}

fn refusal(r: Result<Vec<String>, CaClientError>) -> (tonic::Code, String) {
    match r {
        Err(CaClientError::Status { code, message, .. }) => (code, message),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

async fn root_secret(cluster: &Cluster) -> anyhow::Result<Secret> {
    Api::<Secret>::namespaced(cluster.client.clone(), "mesh-system")
        .get("mesh-ca-root")
        .await
        .context("root Secret mesh-system/mesh-ca-root")
}

async fn root_config_map(cluster: &Cluster) -> anyhow::Result<String> {
    let cm = Api::<ConfigMap>::namespaced(cluster.client.clone(), "mesh-system")
        .get("mesh-ca-root-cert")
        .await
        .context("ConfigMap mesh-system/mesh-ca-root-cert")?;
    cm.data.unwrap_or_default().remove("root-cert.pem").context("no root-cert.pem key")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mesh_ca_in_a_cluster() -> anyhow::Result<()> {
    let Some(cluster) = mesh_kube_it::start_or_skip("mesh_ca_in_a_cluster").await? else { return Ok(()) };
    let kubeconfig = mesh_ca_rbac(&cluster).await?;

    let zt_a = cluster.run_pod(&pod("mesh-system", "ztunnel-a", "ztunnel", "node-a", "10.0.1.2")).await?;
    let zt_b = cluster.run_pod(&pod("mesh-system", "ztunnel-b", "ztunnel", "node-b", "10.0.2.2")).await?;
    let cart = cluster.run_pod(&pod("shop", "cart-a", "cart", "node-a", "10.0.1.10")).await?;
    cluster.run_pod(&pod("shop", "pay-b", "pay", "node-b", "10.0.2.10")).await?;
    let waypoint = cluster.run_pod(&pod("shop", "waypoint-1", "waypoint", "node-b", "10.0.2.11")).await?;

    let state = tempfile::tempdir()?;
    let ca = start_ca(&kubeconfig, state.path()).await?;
    let first = root_secret(&cluster).await?;
    let data = first.data.clone().unwrap_or_default();
    assert_eq!(data.get("root-cert.pem").map(|b| b.0.as_slice()), Some(ca.root_pem.as_bytes()));
    assert!(data.contains_key("root-key.pem"));
    assert_eq!(std::fs::read_to_string(&ca.root_cert_path)?, ca.root_pem, "root published to the state dir");
    assert_eq!(root_config_map(&cluster).await?, ca.root_pem, "root published for the proxies");

    // node-a's ztunnel: the pods on node-a, its node, itself; not node-b's pods or node.
    let tok_a = cluster.pod_token(&zt_a, AUDIENCE, HOUR).await?;
    ask(&ca, &tok_a, &wl("shop", "cart")).await?;
    ask(&ca, &tok_a, &wl("mesh-system", "ztunnel")).await?;
    ask(&ca, &tok_a, &Identity::Node(NodeId::new(TD, "node-a")?)).await?;
    let (code, msg) = refusal(ask(&ca, &tok_a, &wl("shop", "pay")).await);
    assert_eq!(code, tonic::Code::PermissionDenied, "{msg}");
    assert!(
        msg.contains(
            "no pod on node node-a runs as spiffe://cluster.local/ns/shop/sa/pay (pods with it run on node-b)"
        ),
        "{msg}"
    );
    let (code, msg) = refusal(ask(&ca, &tok_a, &Identity::Node(NodeId::new(TD, "node-b")?)).await);
    assert_eq!(code, tonic::Code::PermissionDenied, "{msg}");
    let (code, msg) = refusal(ask(&ca, &tok_a, &wl("shop", "nobody")).await);
    assert_eq!(code, tonic::Code::PermissionDenied, "{msg}");
    assert!(msg.contains("no pod anywhere has this identity"), "{msg}");

    // node-b's ztunnel gets node-b's pod.
    let tok_b = cluster.pod_token(&zt_b, AUDIENCE, HOUR).await?;
    ask(&ca, &tok_b, &wl("shop", "pay")).await?;
    let (code, _) = refusal(ask(&ca, &tok_b, &wl("shop", "cart")).await);
    assert_eq!(code, tonic::Code::PermissionDenied);

    // A workload and a waypoint: their own identity only.
    let tok_cart = cluster.pod_token(&cart, AUDIENCE, HOUR).await?;
    ask(&ca, &tok_cart, &wl("shop", "cart")).await?;
    let (code, msg) = refusal(ask(&ca, &tok_cart, &wl("shop", "pay")).await);
    assert_eq!(code, tonic::Code::PermissionDenied, "{msg}");
    assert!(msg.contains("may only obtain its own identity spiffe://cluster.local/ns/shop/sa/cart"), "{msg}");
    let tok_wp = cluster.pod_token(&waypoint, AUDIENCE, HOUR).await?;
    ask(&ca, &tok_wp, &wl("shop", "waypoint")).await?;
    let (code, _) = refusal(ask(&ca, &tok_wp, &Identity::Node(NodeId::new(TD, "node-b")?)).await);
    assert_eq!(code, tonic::Code::PermissionDenied);

    // Wrong audience, garbage, a token whose pod is gone: unauthenticated, token never echoed.
    let wrong = cluster.pod_token(&zt_a, "some-other-audience", HOUR).await?;
    let (code, msg) = refusal(ask(&ca, &wrong, &wl("shop", "cart")).await);
    assert_eq!(code, tonic::Code::Unauthenticated, "{msg}");
    assert!(msg.contains("rejected by the API server"), "{msg}");
    assert!(!msg.contains(&wrong), "the token must not be echoed");
    let (code, _) = refusal(ask(&ca, "not-a-token-at-all", &wl("shop", "cart")).await);
    assert_eq!(code, tonic::Code::Unauthenticated);
    let gone = cluster.run_pod(&pod("mesh-system", "ztunnel-gone", "ztunnel", "node-a", "10.0.1.3")).await?;
    let tok_gone = cluster.pod_token(&gone, AUDIENCE, HOUR).await?;
    ask(&ca, &tok_gone, &wl("shop", "cart")).await?;
    Api::<Pod>::namespaced(cluster.client.clone(), "mesh-system")
        .delete("ztunnel-gone", &DeleteParams { grace_period_seconds: Some(0), ..DeleteParams::default() })
        .await?;
    // The API server caches successful token reviews for a few seconds, so the refusal comes
    // from TokenReview (pod gone) or from mesh-ca's own pod lookup (UID no longer found).
    let (code, msg) = refusal(ask(&ca, &tok_gone, &wl("shop", "cart")).await);
    assert!(matches!(code, tonic::Code::Unauthenticated | tonic::Code::PermissionDenied), "{code:?} {msg}");

    // Restart: the same root, from the same Secret (not re-created).
    let root = ca.root_pem.clone();
    ca.shutdown().await?;
    let ca = start_ca(&kubeconfig, state.path()).await?;
    assert_eq!(ca.root_pem, root);
    let again = root_secret(&cluster).await?;
    assert_eq!(again.metadata.uid, first.metadata.uid);
    assert_eq!(again.metadata.resource_version, first.metadata.resource_version);
    ask(&ca, &tok_a, &wl("shop", "cart")).await?;
    ca.shutdown().await?;

    // A plug-in CA (Istio's cacerts layout) is preferred: leaf, intermediate, plug-in root.
    let plugin = plugin_ca()?;
    let secret = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some("cacerts".into()),
            namespace: Some("mesh-system".into()),
            ..Default::default()
        },
        data: Some(BTreeMap::from([
            ("ca-cert.pem".to_string(), ByteString(plugin.ca_cert.clone().into_bytes())),
            ("ca-key.pem".to_string(), ByteString(plugin.ca_key.into_bytes())),
            ("root-cert.pem".to_string(), ByteString(plugin.root_cert.clone().into_bytes())),
            (
                "cert-chain.pem".to_string(),
                ByteString(format!("{}{}", plugin.ca_cert, plugin.root_cert).into_bytes()),
            ),
        ])),
        ..Secret::default()
    };
    Api::<Secret>::namespaced(cluster.client.clone(), "mesh-system")
        .create(&PostParams::default(), &secret)
        .await?;
    let ca = start_ca(&kubeconfig, state.path()).await?;
    assert_eq!(ca.root_pem.trim(), plugin.root_cert.trim());
    assert_eq!(root_config_map(&cluster).await?, ca.root_pem, "published root follows the plug-in CA");
    let chain = ask(&ca, &tok_a, &wl("shop", "cart")).await?;
    assert_eq!(chain.len(), 3, "leaf, plug-in CA, root");
    assert_eq!(chain[1].trim(), plugin.ca_cert.trim());
    ca.shutdown().await?;
    Ok(())
}

struct PluginCa {
    root_cert: String,
    ca_cert: String,
    ca_key: String,
}

/// A root and an intermediate signed by it, as an operator would plug in.
fn plugin_ca() -> anyhow::Result<PluginCa> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
    let ca_params = |cn: &str, constraint| {
        let mut p = CertificateParams::default();
        p.distinguished_name.push(DnType::CommonName, cn);
        p.is_ca = IsCa::Ca(constraint);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
        p
    };
    let root_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let root_params = ca_params("plug-in root", BasicConstraints::Unconstrained);
    let root_cert = root_params.self_signed(&root_key)?.pem();
    let root = Issuer::new(root_params, root_key);
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let ca_cert =
        ca_params("plug-in intermediate", BasicConstraints::Constrained(0)).signed_by(&key, &root)?.pem();
    Ok(PluginCa { root_cert, ca_cert, ca_key: key.serialize_pem() })
}
