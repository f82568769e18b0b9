//! `meshctl waypoint apply|delete -n NS [--name N]`: a namespace's waypoint as Istio lays it
//! out — ServiceAccount, config, Deployment and Service named after the waypoint, a Gateway
//! (`gatewayClassName: istio-waypoint`) when the Gateway API CRDs are present, read access to
//! the model, the mesh root copied into the namespace — and the namespace labelled
//! `istio.io/use-waypoint=<name>` (server-side apply under its own field manager, so delete
//! removes exactly that label).

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, ContainerPort, PodSpec, PodTemplateSpec, Service, ServicePort, ServiceSpec,
};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::Client;
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::json;

use crate::install::object_helpers::{Object, config_map, labels, meta, service_account, waypoint_config};
use crate::install::pod::{
    ca_volumes, config_volume, downward_env, proxy_mounts, readiness, requests, restricted,
};
use crate::install::{
    ApplyOptions, InstallError, InstallOptions, Progress, READER_CLUSTER_ROLE, ROOT_CERT_CONFIGMAP,
};

/// Default waypoint name (Istio's).
pub const DEFAULT_NAME: &str = "waypoint";
/// Field manager of the namespace label.
pub const LABEL_MANAGER: &str = "meshctl-waypoint";
/// `app.kubernetes.io/component` of every waypoint object (how uninstall finds them).
pub const COMPONENT: &str = "waypoint";
/// The Gateway API CRD whose presence makes `apply` create a Gateway object.
pub const GATEWAY_CRD: &str = "gateways.gateway.networking.k8s.io";

fn wp_meta(name: &str, ns: &str) -> ObjectMeta {
    let mut m = meta(name, Some(ns), name);
    let l = m.labels.get_or_insert_with(BTreeMap::new);
    l.insert("app.kubernetes.io/component".into(), COMPONENT.into());
    l.insert("gateway.networking.k8s.io/gateway-name".into(), name.into());
    m
}

fn pod_selector(name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([("gateway.networking.k8s.io/gateway-name".to_string(), name.to_string())])
}

/// ClusterRoleBinding name for a waypoint (cluster-scoped, so namespace and name are in it).
pub fn binding_name(ns: &str, name: &str) -> String {
    format!("mesh-waypoint-{ns}-{name}")
}

/// The waypoint's objects, in apply order (the Gateway only when `gateway_api`).
pub fn render(
    opts: &InstallOptions,
    ns: &str,
    name: &str,
    gateway_api: bool,
) -> Result<Vec<Object>, InstallError> {
    let mut problems = Vec::new();
    for (field, v) in [("namespace", ns), ("name", name)] {
        if !crate::install::is_dns_label(v) {
            problems.push(format!("{field}: {v:?} is not a DNS-1123 label"));
        }
    }
    if let Err(InstallError::Options(p)) = opts.validate() {
        problems.extend(p);
    }
    if !problems.is_empty() {
        return Err(InstallError::Options(problems));
    }
    let config_name = format!("{name}-config");
    let mut pod_labels = labels(name);
    pod_labels.extend(pod_selector(name));
    pod_labels.insert("app.kubernetes.io/component".into(), COMPONENT.into());
    // The waypoint terminates HBONE itself: ztunnel must not capture it.
    pod_labels.insert("istio.io/dataplane-mode".into(), "none".into());
    let port = |n: &str, p: i32| ContainerPort {
        name: Some(n.into()),
        container_port: p,
        protocol: Some("TCP".into()),
        ..Default::default()
    };
    let container = Container {
        name: "waypoint".into(),
        image: Some(opts.image("waypoint")),
        args: Some(
            ["--config", "/etc/mesh/waypoint.yaml", "--pod", "$(POD_NAME)", "--node", "$(NODE_NAME)"]
                .map(String::from)
                .to_vec(),
        ),
        env: Some(downward_env()),
        ports: Some(vec![port("mesh", 15008), port("http-metrics", 15020), port("status-port", 15021)]),
        readiness_probe: Some(readiness()),
        resources: Some(requests("100m", "128Mi")),
        security_context: Some(restricted()),
        volume_mounts: Some(proxy_mounts()),
        ..Default::default()
    };
    let mut volumes = vec![config_volume(&config_name)];
    volumes.extend(ca_volumes(opts));
    let deployment = Deployment {
        metadata: wp_meta(name, ns),
        spec: Some(DeploymentSpec {
            replicas: Some(1),
            selector: LabelSelector { match_labels: Some(pod_selector(name)), ..Default::default() },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta { labels: Some(pod_labels), ..Default::default() }),
                spec: Some(PodSpec {
                    service_account_name: Some(name.into()),
                    containers: vec![container],
                    volumes: Some(volumes),
                    termination_grace_period_seconds: Some(30),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        ..Default::default()
    };
    let svc_port = |n: &str, p: i32| ServicePort {
        name: Some(n.into()),
        port: p,
        target_port: Some(IntOrString::Int(p)),
        protocol: Some("TCP".into()),
        ..Default::default()
    };
    let service = Service {
        metadata: wp_meta(name, ns),
        spec: Some(ServiceSpec {
            selector: Some(pod_selector(name)),
            ports: Some(vec![svc_port("mesh", 15008), svc_port("status-port", 15021)]),
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut sa = service_account(name, ns, name);
    sa.body["metadata"]["labels"]["app.kubernetes.io/component"] = json!(COMPONENT);
    let mut binding = crate::install::object_helpers::cluster_binding(
        &binding_name(ns, name),
        READER_CLUSTER_ROLE,
        name,
        ns,
        name,
    );
    binding.body["metadata"]["labels"]["app.kubernetes.io/component"] = json!(COMPONENT);
    let mut config = config_map(&config_name, ns, name, "waypoint.yaml", &waypoint_config(opts, ns, name));
    config.body["metadata"]["labels"]["app.kubernetes.io/component"] = json!(COMPONENT);
    let mut out = vec![sa, binding, config, Object::typed(&service), Object::typed(&deployment)];
    if gateway_api {
        out.push(gateway(ns, name));
    }
    Ok(out)
}

/// The Gateway API object Istio represents a waypoint with.
fn gateway(ns: &str, name: &str) -> Object {
    let mut m = serde_json::to_value(wp_meta(name, ns)).expect("metadata serializes");
    m["labels"]["istio.io/waypoint-for"] = json!("service");
    let body = json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "Gateway",
        "metadata": m,
        "spec": {
            "gatewayClassName": "istio-waypoint",
            "listeners": [{ "name": "mesh", "port": 15008, "protocol": "HBONE" }],
        },
    });
    Object::dynamic("gateway.networking.k8s.io", "v1", "Gateway", "gateways", body)
}

/// The namespace label patch (`labels` empty removes what this manager set).
fn namespace_label(ns: &str, waypoint: Option<&str>) -> serde_json::Value {
    let labels = match waypoint {
        Some(w) => json!({ "istio.io/use-waypoint": w }),
        None => json!({}),
    };
    json!({ "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": ns, "labels": labels } })
}

async fn label_namespace(client: &Client, ns: &str, waypoint: Option<&str>) -> Result<(), InstallError> {
    let api = Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone());
    api.patch(ns, &PatchParams::apply(LABEL_MANAGER), &Patch::Apply(namespace_label(ns, waypoint)))
        .await
        .map(|_| ())
        .map_err(|e| InstallError::Api {
            verb: "label",
            object: format!("Namespace {ns}"),
            reason: crate::install::describe(&e),
        })
}

async fn namespace_exists(client: &Client, ns: &str) -> Result<bool, InstallError> {
    let api = Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone());
    api.get_opt(ns).await.map(|n| n.is_some()).map_err(|e| InstallError::Api {
        verb: "get",
        object: format!("Namespace {ns}"),
        reason: crate::install::describe(&e),
    })
}

async fn gateway_api_present(client: &Client) -> Result<bool, InstallError> {
    Api::<CustomResourceDefinition>::all(client.clone())
        .get_opt(GATEWAY_CRD)
        .await
        .map(|c| c.is_some())
        .map_err(|e| InstallError::Api {
            verb: "get",
            object: format!("CustomResourceDefinition {GATEWAY_CRD}"),
            reason: crate::install::describe(&e),
        })
}

/// Copies the root certificate mesh-ca published in its namespace into `ns`. Not published
/// yet (mesh-ca not running): a note; the waypoint pod waits for the ConfigMap.
async fn copy_root(
    client: &Client,
    opts: &InstallOptions,
    ns: &str,
    progress: &dyn Progress,
) -> Result<(), InstallError> {
    let src = Api::<ConfigMap>::namespaced(client.clone(), &opts.namespace);
    let err = |verb, object: String| {
        move |e: kube::Error| InstallError::Api { verb, object, reason: crate::install::describe(&e) }
    };
    let from = format!("ConfigMap {}/{ROOT_CERT_CONFIGMAP}", opts.namespace);
    let Some(root) = src.get_opt(ROOT_CERT_CONFIGMAP).await.map_err(err("get", from.clone()))? else {
        progress.line(&format!(
            "{from}: not published yet (is mesh-ca running?); the waypoint starts once it is copied"
        ));
        return Ok(());
    };
    let mut m = meta(ROOT_CERT_CONFIGMAP, Some(ns), "mesh-ca");
    m.labels.get_or_insert_with(BTreeMap::new).insert("app.kubernetes.io/component".into(), COMPONENT.into());
    let copy = ConfigMap { metadata: m, data: root.data, ..Default::default() };
    let o = Object::typed(&copy);
    crate::install::apply_one(client, &o, &ApplyOptions::default()).await?;
    progress.line(&format!("{}: applied (copy of {from})", o.display()));
    Ok(())
}

/// Creates (or updates) the waypoint `name` in `ns` and labels the namespace; with `wait`,
/// waits for its Deployment to roll out.
pub async fn apply(
    client: &Client,
    opts: &InstallOptions,
    ns: &str,
    name: &str,
    wait: Option<Duration>,
    progress: &dyn Progress,
) -> Result<(), Vec<InstallError>> {
    let objects = render(opts, ns, name, false).map_err(|e| vec![e])?;
    if !namespace_exists(client, ns).await.map_err(|e| vec![e])? {
        let reason = "not found: create it first (kubectl create namespace)".to_string();
        return Err(vec![InstallError::Api { verb: "look up", object: format!("Namespace {ns}"), reason }]);
    }
    let gw = gateway_api_present(client).await.map_err(|e| vec![e])?;
    let objects = if gw { render(opts, ns, name, true).map_err(|e| vec![e])? } else { objects };
    if !gw {
        progress.line(&format!("no {GATEWAY_CRD} CRD: no Gateway object (the waypoint works without it)"));
    }
    crate::install::apply(client, &objects, &ApplyOptions::default(), progress).await?;
    let mut errors = Vec::new();
    if let Err(e) = copy_root(client, opts, ns, progress).await {
        errors.push(e);
    }
    match label_namespace(client, ns, Some(name)).await {
        Ok(()) => progress.line(&format!("Namespace {ns}: labelled istio.io/use-waypoint={name}")),
        Err(e) => errors.push(e),
    }
    if let Some(timeout) = wait
        && errors.is_empty()
        && let Err(e) = crate::install::wait_rollout(client, &objects, timeout, progress).await
    {
        errors.push(e);
    }
    if errors.is_empty() { Ok(()) } else { Err(errors) }
}

/// Deletes the waypoint `name` in `ns` (every object `apply` made, the Gateway if any) and
/// removes the namespace label this tool set.
pub async fn delete(
    client: &Client,
    opts: &InstallOptions,
    ns: &str,
    name: &str,
    progress: &dyn Progress,
) -> Result<(), Vec<InstallError>> {
    let gw = gateway_api_present(client).await.map_err(|e| vec![e])?;
    let mut objects = render(opts, ns, name, gw).map_err(|e| vec![e])?;
    let root = Object::typed(&ConfigMap {
        metadata: meta(ROOT_CERT_CONFIGMAP, Some(ns), "mesh-ca"),
        ..Default::default()
    });
    objects.insert(0, root);
    // Server-side apply would create a missing namespace: look first.
    if !namespace_exists(client, ns).await.map_err(|e| vec![e])? {
        progress.line(&format!("Namespace {ns}: not found, nothing to delete"));
        return Ok(());
    }
    let mut errors = Vec::new();
    match label_namespace(client, ns, None).await {
        Ok(()) => progress.line(&format!("Namespace {ns}: istio.io/use-waypoint label removed")),
        Err(e) => errors.push(e),
    }
    for o in objects.iter().rev() {
        // Another waypoint in the namespace may still need the root copy.
        if o.name == ROOT_CERT_CONFIGMAP && others_in(client, ns, name).await {
            continue;
        }
        if let Err(e) = crate::install::delete_one(client, o, progress).await {
            errors.push(e);
        }
    }
    if errors.is_empty() { Ok(()) } else { Err(errors) }
}

async fn others_in(client: &Client, ns: &str, name: &str) -> bool {
    let sel = format!("app.kubernetes.io/component={COMPONENT},app.kubernetes.io/managed-by=meshctl");
    match Api::<Deployment>::namespaced(client.clone(), ns).list(&ListParams::default().labels(&sel)).await {
        Ok(l) => l.items.iter().any(|d| d.metadata.name.as_deref() != Some(name)),
        Err(_) => true,
    }
}

/// Deletes every waypoint meshctl made, in every namespace (`uninstall`).
pub async fn delete_all(
    client: &Client,
    opts: &InstallOptions,
    progress: &dyn Progress,
) -> Result<(), Vec<InstallError>> {
    let sel = format!("app.kubernetes.io/component={COMPONENT},app.kubernetes.io/managed-by=meshctl");
    let list = Api::<Deployment>::all(client.clone())
        .list(&ListParams::default().labels(&sel))
        .await
        .map_err(|e| {
            vec![InstallError::Api {
                verb: "list",
                object: format!("Deployments -l {sel}"),
                reason: crate::install::describe(&e),
            }]
        })?;
    let mut errors = Vec::new();
    for d in list.items {
        let (Some(ns), Some(name)) = (d.metadata.namespace, d.metadata.name) else { continue };
        progress.line(&format!("waypoint {ns}/{name}: deleting"));
        if let Err(e) = delete(client, opts, &ns, &name, progress).await {
            errors.extend(e);
        }
    }
    if errors.is_empty() { Ok(()) } else { Err(errors) }
}
