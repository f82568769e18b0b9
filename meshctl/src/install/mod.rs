//! `meshctl install` / `uninstall`: the mesh's Kubernetes manifests, rendered from typed
//! k8s-openapi objects (namespace, embedded CRDs, RBAC, config maps, `mesh-ca`, the ztunnel
//! DaemonSet), printed for GitOps (`--dry-run -o yaml|json`) or applied with server-side
//! apply, and removed again (eBPF pins included, by a cleanup DaemonSet).
//!
//! Library API (the kube integration suite calls it): [`render`] → [`Object`]s, [`apply`],
//! [`wait_rollout`], [`uninstall`].

mod apply;
pub mod cli;
mod config;
mod crds;
mod mesh_ca;
mod object;
pub(crate) mod pod;
mod rbac;
mod ztunnel;

/// Renderers `waypoint_cmd` shares.
pub(crate) mod object_helpers {
    pub use super::config::{config_map, waypoint_config};
    pub use super::object::{Object, labels, meta};
    pub use super::rbac::{cluster_binding, service_account};
}

use std::time::Duration;

pub use apply::{
    ApplyOptions, Progress, Recorded, Stderr, UninstallOptions, apply, apply_one, client, delete_one,
    describe, publish_root, uninstall, wait_installed, wait_rollout,
};
pub use crds::{CRD_FILES, crds};
pub use object::{Object, to_json, to_yaml};
pub use ztunnel::cleanup_daemonset;

/// Namespace the mesh's own components run in.
pub const NAMESPACE: &str = "mesh-system";
/// Field manager of every server-side apply.
pub const FIELD_MANAGER: &str = "meshctl";
/// `app.kubernetes.io/managed-by` value on everything meshctl creates.
pub const MANAGED_BY: &str = "meshctl";
/// `app.kubernetes.io/part-of` value on everything meshctl creates.
pub const PART_OF: &str = "mesh";
/// Default image registry and organisation (`<hub>/<binary>:<tag>`).
pub const DEFAULT_HUB: &str = "ghcr.io/mesh-project";
/// Port `mesh-ca` serves Istio's CA API on (istiod's 15012).
pub const CA_PORT: u16 = 15012;
/// Audience of the projected ServiceAccount tokens the proxies present to `mesh-ca` (Istio's,
/// so the proxies' tokens also work against istiod's CA).
pub const CA_TOKEN_AUDIENCE: &str = "istio-ca";
/// ConfigMap (in each namespace that needs it) holding the mesh root certificate (key
/// [`ROOT_CERT_KEY`]), as Istio's `istio-ca-root-cert`. `install --wait` publishes it in the
/// mesh namespace from mesh-ca's Secret when absent; `waypoint apply` copies it.
pub const ROOT_CERT_CONFIGMAP: &str = "mesh-ca-root-cert";
/// Key of the root certificate PEM in [`ROOT_CERT_CONFIGMAP`].
pub const ROOT_CERT_KEY: &str = "root-cert.pem";
/// Secret mesh-ca keeps its generated root in (mesh-ca's `kubernetes.rootSecret`).
pub const CA_ROOT_SECRET: &str = "mesh-ca-root";
/// Secret of a plug-in CA in Istio's layout (mesh-ca's `kubernetes.pluginSecret`).
pub const CA_PLUGIN_SECRET: &str = "cacerts";
/// ClusterRole granting read access to everything the model is built from.
pub const READER_CLUSTER_ROLE: &str = "mesh-model-reader";

/// How the ztunnel DaemonSet is updated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ZtunnelUpdate {
    /// `maxUnavailable: 1, maxSurge: 0`: the old pod stops, then the new one starts; captured
    /// pods on that node fail closed (or open, by label) for the restart gap. Default, because
    /// two ztunnels on one node cannot both bind their host-network and in-pod ports yet.
    #[default]
    Replace,
    /// `maxSurge: 1, maxUnavailable: 0`: the new pod starts before the old one stops. Needs a
    /// ztunnel that hands its listeners over (SO_REUSEPORT); with today's ztunnel the new pod
    /// fails to bind and the rollout stalls (the old pod keeps serving).
    Surge,
}

/// What [`render`] produces. Every field has a default (`InstallOptions::default()`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstallOptions {
    /// Namespace of mesh-ca, ztunnel and their config (name).
    pub namespace: String,
    /// Image registry and organisation, images are `<hub>/<binary>:<tag>` (text).
    pub hub: String,
    /// Image tag (text; default this meshctl's version).
    pub tag: String,
    /// SPIFFE trust domain of every identity (text).
    pub trust_domain: String,
    /// Cluster name reported in telemetry (text).
    pub cluster_id: String,
    /// Include the CustomResourceDefinitions (bool).
    pub crds: bool,
    /// cgroup v2 folder holding every pod's cgroup, as seen inside the ztunnel container
    /// (path; the host's `/sys/fs/cgroup` is mounted at `/host/sys/fs/cgroup`; the systemd
    /// cgroup driver's `kubepods.slice` by default, `kubepods` under cgroupfs).
    pub pods_cgroup: String,
    /// bpffs folder of ztunnel's pins on the node (path).
    pub bpf_pin_dir: String,
    /// How the ztunnel DaemonSet rolls out.
    pub ztunnel_update: ZtunnelUpdate,
    /// Lifetime of the projected ServiceAccount tokens presented to mesh-ca (duration,
    /// whole seconds, at least 10 minutes: the API server's minimum).
    pub token_ttl: Duration,
}

impl Default for InstallOptions {
    fn default() -> Self {
        InstallOptions {
            namespace: NAMESPACE.to_string(),
            hub: DEFAULT_HUB.to_string(),
            tag: env!("CARGO_PKG_VERSION").to_string(),
            trust_domain: mesh_api::DEFAULT_TRUST_DOMAIN.to_string(),
            cluster_id: "Kubernetes".to_string(),
            crds: true,
            pods_cgroup: "/host/sys/fs/cgroup/kubepods.slice".to_string(),
            bpf_pin_dir: "/sys/fs/bpf/ztunnel".to_string(),
            ztunnel_update: ZtunnelUpdate::Replace,
            token_ttl: Duration::from_secs(3600),
        }
    }
}

impl InstallOptions {
    /// `<hub>/<binary>:<tag>`.
    pub fn image(&self, binary: &str) -> String {
        format!("{}/{binary}:{}", self.hub.trim_end_matches('/'), self.tag)
    }

    /// The in-cluster address of mesh-ca (`https://mesh-ca.<ns>.svc:15012`).
    pub fn ca_address(&self) -> String {
        format!("https://mesh-ca.{}.svc:{CA_PORT}", self.namespace)
    }

    /// Every problem with the options at once.
    pub fn validate(&self) -> Result<(), InstallError> {
        let mut problems = Vec::new();
        if !is_dns_label(&self.namespace) {
            problems.push(format!("namespace: {:?} is not a DNS-1123 label", self.namespace));
        }
        if self.hub.is_empty() || self.hub.contains(char::is_whitespace) {
            problems.push(format!("hub: {:?} is not an image registry path", self.hub));
        }
        let tag_ok = !self.tag.is_empty()
            && self.tag.len() <= 128
            && self.tag.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
        if !tag_ok {
            problems.push(format!("tag: {:?} is not an image tag", self.tag));
        }
        if mesh_api::SpiffeId::new(&self.trust_domain, "ns", "sa").is_err() {
            problems.push(format!("trustDomain: {:?} is not a valid trust domain", self.trust_domain));
        }
        if !self.pods_cgroup.starts_with('/') {
            problems.push(format!("podsCgroup: {:?} must be an absolute path", self.pods_cgroup));
        }
        if !self.bpf_pin_dir.starts_with("/sys/fs/bpf/") {
            problems.push(format!("bpfPinDir: {:?} must be under /sys/fs/bpf/", self.bpf_pin_dir));
        }
        if self.token_ttl < Duration::from_secs(600) {
            problems.push(format!(
                "tokenTtl: {}s is under the API server's 600s minimum",
                self.token_ttl.as_secs()
            ));
        }
        if problems.is_empty() { Ok(()) } else { Err(InstallError::Options(problems)) }
    }
}

/// Why install, uninstall or a waypoint command failed.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("invalid options: {}", .0.join("; "))]
    Options(Vec<String>),
    #[error("embedded CRD {file}: {reason}")]
    Crd { file: &'static str, reason: String },
    #[error("cannot reach the cluster: {0}")]
    Client(String),
    #[error("{verb} {object}: {reason}")]
    Api { verb: &'static str, object: String, reason: String },
    #[error("timed out after {}s waiting for {what}", .after.as_secs())]
    Timeout { what: String, after: Duration },
    #[error("writing the manifests: {0}")]
    Output(String),
}

/// Renders every object of the installation, in apply order (namespace, CRDs, service
/// accounts, RBAC, config maps, services, workloads).
pub fn render(opts: &InstallOptions) -> Result<Vec<Object>, InstallError> {
    opts.validate()?;
    let mut out = vec![object::namespace(&opts.namespace)];
    if opts.crds {
        out.extend(crds()?);
    }
    out.extend(rbac::render(opts));
    out.extend(config::render(opts));
    out.extend(mesh_ca::render(opts));
    out.extend(ztunnel::render(opts));
    Ok(out)
}

/// A DNS-1123 label (namespace, object name): lowercase alphanumerics and `-`, at most 63.
pub fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

#[cfg(test)]
mod tests;
