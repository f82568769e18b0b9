//! The ztunnel DaemonSet (one per node: host network and PID namespace, root with only the
//! capabilities capture needs, bpffs / cgroup v2 / host /proc mounted, every taint tolerated,
//! `system-node-critical`) and the cleanup DaemonSet `uninstall` runs to remove the eBPF pins.
//!
//! Capabilities, and why each: `BPF` (load programs, create and pin maps), `PERFMON` (with
//! `BPF`, the verifier's "privileged" mode: pointer comparisons and arithmetic the programs
//! use, bounded loops; without it some programs are refused), `NET_ADMIN`
//! (attach cgroup/sk_lookup/tc programs, `SO_MARK`, `IP_TRANSPARENT`, policy routing inside
//! pods), `SYS_ADMIN` (`setns` into pods' network namespaces, mounting bpffs when the node
//! has none), `SYS_PTRACE` (opening `/proc/<pid>/ns/net` of pod processes that run as another
//! user: procfs checks ptrace access for it). Everything else is dropped.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{DaemonSet, DaemonSetSpec, DaemonSetUpdateStrategy, RollingUpdateDaemonSet};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, HostPathVolumeSource, PodSpec, PodTemplateSpec, SeccompProfile, SecurityContext,
    Toleration, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::config::CONFIG_DIR;
use super::object::{Object, labels, meta, selector};
use super::pod::{ca_volumes, config_volume, downward_env, mount, proxy_mounts, readiness, requests};
use super::{InstallOptions, ZtunnelUpdate};

/// Name of the DaemonSet (and its ServiceAccount and config).
pub const NAME: &str = "ztunnel";
/// Name of the cleanup DaemonSet `uninstall` runs.
pub const CLEANUP_NAME: &str = "ztunnel-cleanup";
/// Where the host's /proc is mounted (writable: pods' sysctls are written through it, the
/// container's own `/proc/sys` is read-only); ztunnel's `capture.procPath`.
pub const HOST_PROC: &str = "/host/proc";
/// Capabilities ztunnel adds (see the module docs).
pub const CAPABILITIES: &[&str] = &["BPF", "PERFMON", "NET_ADMIN", "SYS_ADMIN", "SYS_PTRACE"];

fn host_path(name: &str, path: &str, type_: &str) -> Volume {
    Volume {
        name: name.into(),
        host_path: Some(HostPathVolumeSource { path: path.into(), type_: Some(type_.into()) }),
        ..Default::default()
    }
}

/// Tolerates every taint: a node without ztunnel leaves its mesh pods failing closed.
fn tolerate_all() -> Vec<Toleration> {
    vec![Toleration { operator: Some("Exists".into()), ..Default::default() }]
}

fn root_with(caps: &[&str]) -> SecurityContext {
    SecurityContext {
        // allowPrivilegeEscalation is left unset: the API refuses `false` with CAP_SYS_ADMIN,
        // and ztunnel runs `ip` as a child that must keep the capabilities.
        capabilities: Some(Capabilities {
            add: (!caps.is_empty()).then(|| caps.iter().map(|c| c.to_string()).collect()),
            drop: Some(vec!["ALL".into()]),
        }),
        privileged: Some(false),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(false),
        run_as_user: Some(0),
        run_as_group: Some(0),
        seccomp_profile: Some(SeccompProfile { type_: "RuntimeDefault".into(), ..Default::default() }),
        ..Default::default()
    }
}

fn bpffs_mount() -> VolumeMount {
    VolumeMount {
        name: "bpffs".into(),
        mount_path: "/sys/fs/bpf".into(),
        // Pins made by ztunnel must be the host's; host mounts appear in the container.
        mount_propagation: Some("HostToContainer".into()),
        ..Default::default()
    }
}

fn update_strategy(u: ZtunnelUpdate) -> DaemonSetUpdateStrategy {
    let (surge, unavailable) = match u {
        ZtunnelUpdate::Replace => (0, 1),
        ZtunnelUpdate::Surge => (1, 0),
    };
    DaemonSetUpdateStrategy {
        type_: Some("RollingUpdate".into()),
        rolling_update: Some(RollingUpdateDaemonSet {
            max_surge: Some(IntOrString::Int(surge)),
            max_unavailable: Some(IntOrString::Int(unavailable)),
        }),
    }
}

fn daemonset(name: &str, ns: &str, pod: PodSpec, strategy: DaemonSetUpdateStrategy) -> DaemonSet {
    let annotations = (name == NAME).then(|| {
        BTreeMap::from([
            ("prometheus.io/scrape".to_string(), "true".to_string()),
            ("prometheus.io/port".to_string(), "15020".to_string()),
            ("prometheus.io/path".to_string(), "/metrics".to_string()),
        ])
    });
    DaemonSet {
        metadata: meta(name, Some(ns), name),
        spec: Some(DaemonSetSpec {
            selector: LabelSelector { match_labels: Some(selector(name)), ..Default::default() },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta { labels: Some(labels(name)), annotations, ..Default::default() }),
                spec: Some(pod),
            },
            update_strategy: Some(strategy),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn node_selector() -> Option<BTreeMap<String, String>> {
    Some(BTreeMap::from([("kubernetes.io/os".to_string(), "linux".to_string())]))
}

/// The ztunnel DaemonSet.
pub fn render(opts: &InstallOptions) -> Vec<Object> {
    let mut mounts = proxy_mounts();
    mounts.push(bpffs_mount());
    mounts.push(mount("cgroup", super::config::HOST_CGROUP));
    let mut proc_mount = mount("proc", HOST_PROC);
    proc_mount.read_only = Some(false);
    mounts.push(proc_mount);
    let container = Container {
        name: NAME.into(),
        image: Some(opts.image(NAME)),
        args: Some(vec![
            "--config".into(),
            format!("{CONFIG_DIR}/ztunnel.yaml"),
            "--node".into(),
            "$(NODE_NAME)".into(),
        ]),
        env: Some(downward_env()),
        readiness_probe: Some(readiness()),
        resources: Some(requests("200m", "256Mi")),
        security_context: Some(root_with(CAPABILITIES)),
        volume_mounts: Some(mounts),
        ..Default::default()
    };
    let mut volumes = vec![config_volume("ztunnel-config")];
    volumes.extend(ca_volumes(opts));
    volumes.push(host_path("bpffs", "/sys/fs/bpf", "Directory"));
    volumes.push(host_path("cgroup", "/sys/fs/cgroup", "Directory"));
    volumes.push(host_path("proc", "/proc", "Directory"));
    let pod = PodSpec {
        service_account_name: Some(NAME.into()),
        host_network: Some(true),
        host_pid: Some(true),
        // Host network: resolve cluster names (mesh-ca's Service) through cluster DNS.
        dns_policy: Some("ClusterFirstWithHostNet".into()),
        priority_class_name: Some("system-node-critical".into()),
        tolerations: Some(tolerate_all()),
        node_selector: node_selector(),
        // ztunnel drains for `drainDeadline` (5 s) after SIGTERM.
        termination_grace_period_seconds: Some(30),
        containers: vec![container],
        volumes: Some(volumes),
        ..Default::default()
    };
    vec![Object::typed(&daemonset(NAME, &opts.namespace, pod, update_strategy(opts.ztunnel_update)))]
}

/// The DaemonSet `uninstall` runs after ztunnel is gone: on every node an init container runs
/// `ztunnel cleanup` (removes the pin folder: links detach, capture stops, pods' traffic goes
/// direct); the pod is Ready once that succeeded, then meshctl deletes the DaemonSet.
pub fn cleanup_daemonset(opts: &InstallOptions) -> Object {
    let args = |stay: bool| {
        let mut a = vec!["cleanup".to_string(), "--bpf-pin-dir".into(), opts.bpf_pin_dir.clone()];
        if stay {
            a.push("--stay".into());
        }
        a
    };
    let container = |name: &str, stay: bool| Container {
        name: name.into(),
        image: Some(opts.image(NAME)),
        args: Some(args(stay)),
        resources: Some(requests("10m", "16Mi")),
        // Unlinking pins needs no capability: root owns them.
        security_context: Some(root_with(&[])),
        volume_mounts: Some(vec![bpffs_mount()]),
        ..Default::default()
    };
    let pod = PodSpec {
        automount_service_account_token: Some(false),
        priority_class_name: Some("system-node-critical".into()),
        tolerations: Some(tolerate_all()),
        node_selector: node_selector(),
        init_containers: Some(vec![container("cleanup", false)]),
        containers: vec![container("done", true)],
        volumes: Some(vec![host_path("bpffs", "/sys/fs/bpf", "Directory")]),
        termination_grace_period_seconds: Some(1),
        ..Default::default()
    };
    Object::typed(&daemonset(CLEANUP_NAME, &opts.namespace, pod, update_strategy(ZtunnelUpdate::Replace)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// ztunnel writes pods' sysctls through the writable host /proc the DaemonSet mounts.
    #[test]
    fn config_proc_path_is_the_writable_host_proc_mount() {
        let opts = InstallOptions::default();
        let cfg = super::super::config::ztunnel_config(&opts);
        assert_eq!(cfg["capture"]["procPath"], HOST_PROC);
        let ds = &render(&opts)[0].body;
        let mounts = ds["spec"]["template"]["spec"]["containers"][0]["volumeMounts"].as_array().unwrap();
        let proc = mounts.iter().find(|m| m["mountPath"] == HOST_PROC).expect("host /proc mounted");
        assert_ne!(proc["readOnly"], true, "pods' sysctls are written through it");
        let vols = ds["spec"]["template"]["spec"]["volumes"].as_array().unwrap();
        let vol = vols.iter().find(|v| v["name"] == proc["name"]).expect("its volume");
        assert_eq!(vol["hostPath"]["path"], "/proc");
    }
}
