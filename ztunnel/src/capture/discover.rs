//! Pod discovery on a Kubernetes node (`capture.netnsPath: kube:` or `kube:<cgroup v2 root>`):
//! from a local pod's UID to its cgroup and its network namespace, without asking the
//! container runtime.
//!
//! The kubelet names pod cgroups after the UID under either cgroup driver:
//! - systemd: `kubepods.slice/kubepods-<qos>.slice/kubepods-<qos>-pod<uid>.slice`, with `-` in
//!   the UID replaced by `_`; Guaranteed pods directly as `kubepods.slice/kubepods-pod<uid>.slice`;
//!   containerd's containers below as `cri-containerd-<id>.scope`;
//! - cgroupfs: `kubepods/<qos>/pod<uid>` (Guaranteed: `kubepods/pod<uid>`), containers below
//!   as `<id>`.
//!
//! Every container of a pod (the sandbox included) shares the pod's netns, so any process in
//! the pod cgroup's subtree gives it: `/proc/<pid>/ns/net`. The cgroup v2 root is found from
//! `/proc/self/mountinfo` (`/sys/fs/cgroup`, or `/sys/fs/cgroup/unified` on hybrid hosts)
//! unless given after `kube:` (a host mount inside ztunnel's container).
//!
//! **Start-up race, and the default.** ztunnel captures a pod once it knows three things:
//! the pod is on this node and captured (the model), its address (`status.podIPs`, which the
//! kubelet reports only after the sandbox and CNI are up) and its netns (a process in its
//! cgroup). They arrive in any order. The model side is followed by the workload loop; a pod
//! whose cgroup or sandbox process is not there yet is waited for briefly
//! ([`wait_for_netns`]: 50 ms doubling, 2 s per attempt), then retried by the workload loop
//! with backoff (0.5 s doubling to 10 s) until it is found: the pod is captured as soon as
//! both are known, with no further model change needed.
//!
//! Between the app's first instruction and the registration (typically the kubelet's status
//! update plus the 30 ms batch window plus discovery, around a second) the pod is **not
//! captured: the window is fail-open**, because the programs act only on registered pods and
//! cannot tell a mesh pod they have not been told about from any other pod. Inbound mesh
//! traffic to it is refused meanwhile (nothing listens on its 15008 yet), and peers with STRICT
//! PeerAuthentication refuse its plaintext, so only plaintext to and from non-STRICT peers
//! passes. Once registered, a pod fails closed whenever its listeners are gone (ztunnel
//! restarting); the knob is the pod label `ztunnel.mesh/capture-fail-open: "true"`, which lets
//! its traffic pass instead. There is no knob to fail closed during the start-up window yet:
//! that needs registering the netns (with the addresses read from inside it) when the sandbox
//! appears, before the kubelet reports the IP, or a CNI hook that holds the pod's start.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// The cgroup driver a pod's cgroup was found under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupDriver {
    Systemd,
    Cgroupfs,
}

/// A pod's cgroup folder and the driver that named it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodCgroup {
    pub driver: CgroupDriver,
    pub path: PathBuf,
}

/// Why a pod's netns is not found (yet).
#[derive(Debug, thiserror::Error)]
pub enum DiscoverError {
    #[error("no cgroup for pod uid {uid} under {root} (tried the systemd and cgroupfs layouts)")]
    NoCgroup { uid: String, root: PathBuf },
    #[error("no process in pod cgroup {} yet (sandbox not started?)", .0.display())]
    NoProcess(PathBuf),
    #[error("pod has no uid")]
    NoUid,
}

/// QoS classes as the kubelet spells them in cgroup names ("" = Guaranteed, directly under
/// the root of the pods).
const QOS: [&str; 3] = ["", "burstable", "besteffort"];

/// The candidate cgroup folders of pod `uid` under `root`, systemd layout first.
pub fn candidates(root: &Path, uid: &str) -> Vec<(CgroupDriver, PathBuf)> {
    let u = uid.replace('-', "_");
    let mut out = Vec::with_capacity(6);
    for qos in QOS {
        let p = if qos.is_empty() {
            root.join("kubepods.slice").join(format!("kubepods-pod{u}.slice"))
        } else {
            root.join("kubepods.slice")
                .join(format!("kubepods-{qos}.slice"))
                .join(format!("kubepods-{qos}-pod{u}.slice"))
        };
        out.push((CgroupDriver::Systemd, p));
    }
    for qos in QOS {
        let base = if qos.is_empty() { root.join("kubepods") } else { root.join("kubepods").join(qos) };
        out.push((CgroupDriver::Cgroupfs, base.join(format!("pod{uid}"))));
    }
    out
}

/// The cgroup of pod `uid` under the cgroup v2 root `root`, if it exists.
pub fn pod_cgroup(root: &Path, uid: &str) -> Option<PodCgroup> {
    candidates(root, uid)
        .into_iter()
        .find(|(_, p)| p.is_dir())
        .map(|(driver, path)| PodCgroup { driver, path })
}

/// A process in `cgroup` or below it (containers' scopes), depth first, sorted by name.
pub fn pid_in(cgroup: &Path) -> Option<u32> {
    fn walk(dir: &Path, depth: u32) -> Option<u32> {
        if let Ok(procs) = std::fs::read_to_string(dir.join("cgroup.procs"))
            && let Some(pid) = procs.lines().find_map(|l| l.trim().parse::<u32>().ok())
        {
            return Some(pid);
        }
        if depth == 0 {
            return None;
        }
        let mut subs: Vec<PathBuf> = std::fs::read_dir(dir)
            .ok()?
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| e.path())
            .collect();
        subs.sort();
        subs.iter().find_map(|d| walk(d, depth - 1))
    }
    walk(cgroup, 4)
}

/// `/proc/<pid>/ns/net` of a process of pod `uid`.
pub fn pod_netns(root: &Path, uid: &str) -> Result<PathBuf, DiscoverError> {
    if uid.is_empty() {
        return Err(DiscoverError::NoUid);
    }
    let cg = pod_cgroup(root, uid)
        .ok_or_else(|| DiscoverError::NoCgroup { uid: uid.to_string(), root: root.to_path_buf() })?;
    let pid = pid_in(&cg.path).ok_or(DiscoverError::NoProcess(cg.path))?;
    Ok(PathBuf::from(format!("/proc/{pid}/ns/net")))
}

/// [`pod_netns`], retried with backoff (`first`, doubling up to 1 s) until `timeout`; the
/// last error when it runs out.
pub async fn wait_for_netns(
    root: &Path,
    uid: &str,
    first: Duration,
    timeout: Duration,
) -> Result<PathBuf, DiscoverError> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut delay = first;
    loop {
        match pod_netns(root, uid) {
            Ok(p) => return Ok(p),
            Err(e @ DiscoverError::NoUid) => return Err(e),
            Err(e) if tokio::time::Instant::now() + delay > deadline => return Err(e),
            Err(_) => {}
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(1));
    }
}

/// The cgroup v2 root for `kube:` / `kube:<root>`.
pub fn root_from_spec(spec: &str) -> std::io::Result<PathBuf> {
    match spec.strip_prefix("kube:") {
        Some(r) if !r.is_empty() => Ok(PathBuf::from(r)),
        _ => super::cgroup2_mount(),
    }
}
