//! The components' config files, as ConfigMaps: the same camelCase YAML the binaries read with
//! `--config` (see `ztunnel/src/config.rs`, `waypoint/src/config.rs`, `mesh-ca/src/config.rs`),
//! pointing at the in-cluster CA, the projected ServiceAccount token and the published root.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use serde_json::{Value, json};

use super::object::{Object, meta, yaml_text};
use super::{CA_PLUGIN_SECRET, CA_PORT, CA_ROOT_SECRET, CA_TOKEN_AUDIENCE, InstallOptions, ROOT_CERT_KEY};

/// Folder the config ConfigMap is mounted at in every component.
pub const CONFIG_DIR: &str = "/etc/mesh";
/// Folder the root certificate ConfigMap is mounted at.
pub const ROOT_DIR: &str = "/var/run/mesh/ca";
/// Folder of the projected ServiceAccount token for mesh-ca.
pub const TOKEN_DIR: &str = "/var/run/secrets/tokens";
/// File name of that token.
pub const TOKEN_FILE: &str = "mesh-ca-token";
/// Where the host's cgroup v2 root is mounted in the ztunnel container.
pub const HOST_CGROUP: &str = "/host/sys/fs/cgroup";

/// The part every proxy shares: trust domain, CA, token, the API server as model source.
fn proxy_common(opts: &InstallOptions) -> Value {
    json!({
        "trustDomain": opts.trust_domain,
        "clusterId": opts.cluster_id,
        "caAddress": opts.ca_address(),
        "caRoot": format!("{ROOT_DIR}/{ROOT_CERT_KEY}"),
        "caServerName": "mesh-ca",
        "tokenFile": format!("{TOKEN_DIR}/{TOKEN_FILE}"),
        "source": { "kind": mesh_kube::SourceKind::Kube },
        "logFormat": "json",
    })
}

fn merge(mut base: Value, extra: Value) -> Value {
    if let (Value::Object(b), Value::Object(e)) = (&mut base, extra) {
        b.extend(e);
    }
    base
}

/// ztunnel's config (`node` comes from `--node $(NODE_NAME)`).
pub fn ztunnel_config(opts: &InstallOptions) -> Value {
    merge(
        proxy_common(opts),
        json!({
            "capture": {
                "mode": "ebpf",
                // Pods' netns from their cgroup under the host's cgroup v2 root.
                "netnsPath": format!("kube:{HOST_CGROUP}"),
                "podsCgroup": opts.pods_cgroup,
                "bpfPinDir": opts.bpf_pin_dir,
                "mark": 1337,
                "procPath": super::ztunnel::HOST_PROC,
            },
        }),
    )
}

/// A waypoint's config (its pod and node come from `--pod $(POD_NAME) --node $(NODE_NAME)`).
pub fn waypoint_config(opts: &InstallOptions, namespace: &str, gateway: &str) -> Value {
    merge(proxy_common(opts), json!({ "namespace": namespace, "gateway": gateway }))
}

/// mesh-ca's config: Kubernetes mode (TokenReview, placement from the API server, root in a
/// Secret) and the serving certificate names callers use in the cluster.
pub fn mesh_ca_config(opts: &InstallOptions) -> Value {
    let ns = &opts.namespace;
    json!({
        "trustDomain": opts.trust_domain,
        "serverNames": [format!("mesh-ca.{ns}.svc"), format!("mesh-ca.{ns}.svc.cluster.local")],
        "kubernetes": {
            "namespace": ns,
            "audiences": [CA_TOKEN_AUDIENCE],
            "rootSecret": CA_ROOT_SECRET,
            "pluginSecret": CA_PLUGIN_SECRET,
            "ztunnelServiceAccounts": [format!("{ns}/ztunnel")],
        },
    })
}

/// A ConfigMap holding one config file.
pub fn config_map(name: &str, namespace: &str, component: &str, file: &str, config: &Value) -> Object {
    Object::typed(&ConfigMap {
        metadata: meta(name, Some(namespace), component),
        data: Some(BTreeMap::from([(file.to_string(), yaml_text(config))])),
        ..Default::default()
    })
}

/// The ConfigMaps of the installation.
pub fn render(opts: &InstallOptions) -> Vec<Object> {
    let ns = &opts.namespace;
    vec![
        config_map("mesh-ca-config", ns, "mesh-ca", "mesh-ca.yaml", &mesh_ca_config(opts)),
        config_map("ztunnel-config", ns, "ztunnel", "ztunnel.yaml", &ztunnel_config(opts)),
    ]
}

/// The mesh-ca listen address inside its pod.
pub fn ca_listen() -> String {
    format!("0.0.0.0:{CA_PORT}")
}
