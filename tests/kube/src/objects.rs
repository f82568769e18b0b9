//! Creating the objects tests need on a cluster with no kubelet and no controller-manager:
//! namespaces, ServiceAccounts, pods "running" on a node (status patched), projected-style
//! ServiceAccount tokens bound to a pod, and the CRDs from a folder.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Container, Namespace, Pod, ServiceAccount};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use serde::Deserialize as _;

use crate::Cluster;

/// A pod to create "running" on a node.
#[derive(Debug, Clone)]
pub struct PodSpec<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    pub service_account: &'a str,
    pub node: &'a str,
    pub ip: &'a str,
    pub labels: BTreeMap<String, String>,
}

fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

impl Cluster {
    /// Creates the namespace (labels given) unless it exists.
    pub async fn ensure_namespace(&self, name: &str, labels: &[(&str, &str)]) -> anyhow::Result<()> {
        let ns = Namespace {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: Some(labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        };
        match Api::<Namespace>::all(self.client.clone()).create(&PostParams::default(), &ns).await {
            Ok(_) => Ok(()),
            Err(e) if is_conflict(&e) => Ok(()),
            Err(e) => Err(e).with_context(|| format!("creating namespace {name}")),
        }
    }

    /// Creates the ServiceAccount unless it exists (no controller-manager makes `default`).
    pub async fn ensure_service_account(&self, namespace: &str, name: &str) -> anyhow::Result<()> {
        let sa = ServiceAccount {
            metadata: ObjectMeta { name: Some(name.into()), ..ObjectMeta::default() },
            ..ServiceAccount::default()
        };
        let api = Api::<ServiceAccount>::namespaced(self.client.clone(), namespace);
        match api.create(&PostParams::default(), &sa).await {
            Ok(_) => Ok(()),
            Err(e) if is_conflict(&e) => Ok(()),
            Err(e) => Err(e).with_context(|| format!("creating serviceaccount {namespace}/{name}")),
        }
    }

    /// Creates the namespace and ServiceAccount if needed, the pod bound to `node`, and patches
    /// its status to Running + Ready with `ip` (what a kubelet would do).
    pub async fn run_pod(&self, spec: &PodSpec<'_>) -> anyhow::Result<Pod> {
        self.ensure_namespace(spec.namespace, &[]).await?;
        self.ensure_service_account(spec.namespace, spec.service_account).await?;
        let what = format!("pod {}/{}", spec.namespace, spec.name);
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": { "name": spec.name, "namespace": spec.namespace, "labels": spec.labels },
            "spec": {
                "nodeName": spec.node,
                "serviceAccountName": spec.service_account,
                "containers": [Container {
                    name: "app".into(),
                    image: Some("registry.invalid/app:1".into()),
                    ..Container::default()
                }],
            },
        }))?;
        let api = Api::<Pod>::namespaced(self.client.clone(), spec.namespace);
        api.create(&PostParams::default(), &pod).await.with_context(|| format!("creating {what}"))?;
        let status = serde_json::json!({
            "status": {
                "phase": "Running",
                "podIP": spec.ip,
                "podIPs": [{ "ip": spec.ip }],
                "hostIP": "127.0.0.1",
                "conditions": [
                    { "type": "Ready", "status": "True" },
                    { "type": "ContainersReady", "status": "True" },
                    { "type": "PodScheduled", "status": "True" },
                ],
            }
        });
        api.patch_status(spec.name, &PatchParams::default(), &Patch::Merge(&status))
            .await
            .with_context(|| format!("patching the status of {what}"))
    }

    /// A ServiceAccount token for `audience`, bound to `pod` (as a projected token volume would
    /// carry), valid for `expiry`.
    pub async fn pod_token(&self, pod: &Pod, audience: &str, expiry: Duration) -> anyhow::Result<String> {
        let ns = pod.metadata.namespace.as_deref().context("pod without namespace")?;
        let name = pod.metadata.name.as_deref().context("pod without name")?;
        let sa = pod
            .spec
            .as_ref()
            .and_then(|s| s.service_account_name.as_deref())
            .context("pod without serviceAccountName")?;
        let req = TokenRequest {
            spec: TokenRequestSpec {
                audiences: vec![audience.to_string()],
                expiration_seconds: Some(i64::try_from(expiry.as_secs())?),
                bound_object_ref: Some(BoundObjectReference {
                    api_version: Some("v1".into()),
                    kind: Some("Pod".into()),
                    name: Some(name.into()),
                    uid: pod.metadata.uid.clone(),
                }),
            },
            ..TokenRequest::default()
        };
        let out = Api::<ServiceAccount>::namespaced(self.client.clone(), ns)
            .create_token_request(sa, &PostParams::default(), &req)
            .await
            .with_context(|| format!("TokenRequest for {ns}/{sa} bound to pod {name}"))?;
        Ok(out.status.context("TokenRequest without status")?.token)
    }

    /// An unbound ServiceAccount token for the API server's own audience (what a controller's
    /// projected token is), valid for `expiry`.
    pub async fn sa_token(&self, namespace: &str, sa: &str, expiry: Duration) -> anyhow::Result<String> {
        let req = TokenRequest {
            spec: TokenRequestSpec {
                audiences: Vec::new(),
                expiration_seconds: Some(i64::try_from(expiry.as_secs())?),
                bound_object_ref: None,
            },
            ..TokenRequest::default()
        };
        let out = Api::<ServiceAccount>::namespaced(self.client.clone(), namespace)
            .create_token_request(sa, &PostParams::default(), &req)
            .await
            .with_context(|| format!("TokenRequest for {namespace}/{sa}"))?;
        Ok(out.status.context("TokenRequest without status")?.token)
    }

    /// Applies every CRD (`*.yaml`, one or more documents each) in `dir` with server-side apply.
    /// Returns the names applied.
    pub async fn apply_crds(&self, dir: &Path) -> anyhow::Result<Vec<String>> {
        let api = Api::<CustomResourceDefinition>::all(self.client.clone());
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .with_context(|| format!("reading {}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
            .collect();
        files.sort();
        let mut names = Vec::new();
        let pp = PatchParams::apply("mesh-kube-it").force();
        for f in files {
            let text = std::fs::read_to_string(&f)?;
            for doc in serde_yaml::Deserializer::from_str(&text) {
                let value = serde_json::Value::deserialize(doc)
                    .with_context(|| format!("{}: not YAML", f.display()))?;
                if value.get("kind").and_then(|k| k.as_str()) != Some("CustomResourceDefinition") {
                    continue;
                }
                let crd: CustomResourceDefinition =
                    serde_json::from_value(value).with_context(|| format!("{}: not a CRD", f.display()))?;
                let name = crd.metadata.name.clone().context("CRD without a name")?;
                api.patch(&name, &pp, &Patch::Apply(&crd))
                    .await
                    .with_context(|| format!("applying CRD {name} from {}", f.display()))?;
                names.push(name);
            }
        }
        Ok(names)
    }
}
