//! The lab's state file `<state>/lab.json`: what the lab is (nodes, pods, processes) and a
//! journal of every resource it made, each written BEFORE the resource is made, so
//! `lab down` finds everything after a crash or `kill -9` of `lab up`.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::model::LabPod;
use super::{CaptureMode, LabError};

/// File name of the state file in the state folder.
pub const STATE_FILE: &str = "lab.json";
/// Format version of the state file.
pub const VERSION: u32 = 1;

/// Where the lab is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// `lab up` is making resources (or crashed while doing so).
    Creating,
    /// Everything is up and ready.
    Up,
}

/// A resource the lab made, in the order made. `lab down` undoes them in reverse.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Resource {
    /// A named network namespace (`ip netns`).
    Netns { name: String },
    /// A network interface (a veth goes away with either end's netns).
    Link { netns: String, name: String },
    /// A cgroup v2 folder.
    Cgroup { path: PathBuf },
    /// A bpffs folder of pins.
    PinDir { path: PathBuf },
    /// A folder the lab made (state, `/etc/netns/<netns>`).
    Dir { path: PathBuf },
    /// A process started by the lab.
    Process(Proc),
}

/// A process the lab started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proc {
    /// `mesh-ca`, `ztunnel` or `echo`.
    pub role: String,
    /// What it serves: node name, `namespace/pod`, or `mesh-ca`.
    pub name: String,
    /// 0 until started.
    pub pid: i32,
    /// Start time (clock ticks since boot, /proc/<pid>/stat field 22): guards against pid reuse.
    pub start_time: u64,
    pub netns: String,
    pub cgroup: PathBuf,
    pub log: PathBuf,
}

/// A node of the lab.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    pub name: String,
    pub ip: Ipv4Addr,
    pub netns: String,
    /// The node's cgroup folder (`<cg2>/meshlab/<node>`).
    pub cgroup: PathBuf,
    pub pin_dir: PathBuf,
    pub ztunnel_config: PathBuf,
}

/// Everything `lab.json` holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LabState {
    pub version: u32,
    pub phase: Phase,
    /// Seconds since the Unix epoch when `lab up` began.
    pub started: u64,
    pub capture: CaptureMode,
    /// The paths `lab up` was given.
    pub inputs: Vec<PathBuf>,
    /// The lab's cgroup root (`<cg2>/meshlab`).
    pub cgroup_root: PathBuf,
    pub nodes: Vec<Node>,
    pub pods: Vec<LabPod>,
    pub resources: Vec<Resource>,
}

/// `lab.json` in a state folder.
pub fn path(state_dir: &Path) -> PathBuf {
    state_dir.join(STATE_FILE)
}

impl LabState {
    /// Reads `<state_dir>/lab.json`; `Ok(None)` when there is none.
    pub fn load(state_dir: &Path) -> Result<Option<LabState>, LabError> {
        let p = path(state_dir);
        let text = match std::fs::read_to_string(&p) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(LabError::Read { path: p, source }),
        };
        serde_json::from_str(&text).map(Some).map_err(|e| LabError::State { path: p, reason: e.to_string() })
    }

    /// Writes the state atomically (temp file, rename), so a crash never leaves half a file.
    pub fn save(&self, state_dir: &Path) -> Result<(), LabError> {
        let p = path(state_dir);
        let tmp = state_dir.join(format!(".{STATE_FILE}.tmp"));
        let io = |source| LabError::Io { step: "saving the lab state".into(), path: p.clone(), source };
        let text = serde_json::to_vec_pretty(self).map_err(|e| io(std::io::Error::other(e)))?;
        std::fs::write(&tmp, text).map_err(io)?;
        std::fs::rename(&tmp, &p).map_err(io)
    }

    /// Journals a resource about to be made, and saves.
    pub fn record(&mut self, r: Resource, state_dir: &Path) -> Result<(), LabError> {
        self.resources.push(r);
        self.save(state_dir)
    }

    /// The recorded processes.
    pub fn processes(&self) -> impl Iterator<Item = &Proc> {
        self.resources.iter().filter_map(|r| if let Resource::Process(p) = r { Some(p) } else { None })
    }

    /// Updates the recorded process `(role, name)` once started, and saves.
    pub fn set_pid(
        &mut self,
        role: &str,
        name: &str,
        pid: i32,
        start_time: u64,
        dir: &Path,
    ) -> Result<(), LabError> {
        for r in self.resources.iter_mut().rev() {
            if let Resource::Process(p) = r
                && p.role == role
                && p.name == name
            {
                p.pid = pid;
                p.start_time = start_time;
                break;
            }
        }
        self.save(dir)
    }

    /// Finds a pod by `name` or `namespace/name`.
    pub fn find_pod(&self, spec: &str) -> Result<&LabPod, LabError> {
        let matches: Vec<&LabPod> = match spec.split_once('/') {
            Some((ns, name)) => self.pods.iter().filter(|p| p.namespace == ns && p.name == name).collect(),
            None => self.pods.iter().filter(|p| p.name == spec).collect(),
        };
        match matches.as_slice() {
            [one] => Ok(one),
            [] => Err(LabError::Pod {
                pod: spec.into(),
                reason: format!(
                    "no such pod in the lab (pods: {})",
                    self.pods.iter().map(LabPod::key).collect::<Vec<_>>().join(", ")
                ),
            }),
            many => Err(LabError::Pod {
                pod: spec.into(),
                reason: format!(
                    "ambiguous, name it as namespace/name: {}",
                    many.iter().map(|p| p.key()).collect::<Vec<_>>().join(", ")
                ),
            }),
        }
    }
}

/// The netns name of a pod: `mlab-p-<namespace>.<name>`.
pub fn pod_netns(namespace: &str, name: &str) -> String {
    format!("mlab-p-{namespace}.{name}")
}

/// The netns name of a node: `mlab-n-<node>`.
pub fn node_netns(node: &str) -> String {
    format!("mlab-n-{node}")
}

/// The hub's netns.
pub const HUB_NETNS: &str = "mlab-hub";
/// The hub's bridge.
pub const HUB_BRIDGE: &str = "mlab0";
/// The hub's address (mesh-ca listens here).
pub const HUB_IP: Ipv4Addr = Ipv4Addr::new(172, 30, 0, 1);
/// Prefix of every netns (and /etc/netns folder) the lab makes.
pub const NETNS_PREFIX: &str = "mlab-";
/// bpffs folder of the lab's pins.
pub const PIN_ROOT: &str = "/sys/fs/bpf/meshlab";

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(ns: &str, name: &str) -> LabPod {
        LabPod {
            namespace: ns.into(),
            name: name.into(),
            node: "node-a".into(),
            ip: None,
            running: true,
            ports: vec![],
            owner: None,
            template_hash: String::new(),
            waypoint: None,
            waypoint_plaintext_port: None,
            waypoint_log_level: None,
            waypoint_worker_threads: None,
        }
    }

    fn lab(pods: Vec<LabPod>) -> LabState {
        LabState {
            version: VERSION,
            phase: Phase::Up,
            started: 0,
            capture: CaptureMode::None,
            inputs: vec![],
            cgroup_root: "/cg/meshlab".into(),
            nodes: vec![],
            pods,
            resources: vec![],
        }
    }

    #[test]
    fn pods_are_found_by_name_or_namespace_and_name() {
        let st = lab(vec![pod("a", "web"), pod("b", "web"), pod("a", "db")]);
        assert_eq!(st.find_pod("db").unwrap().namespace, "a");
        assert_eq!(st.find_pod("b/web").unwrap().namespace, "b");
        let e = st.find_pod("web").unwrap_err().to_string();
        assert!(e.contains("ambiguous") && e.contains("a/web") && e.contains("b/web"), "{e}");
        let e = st.find_pod("nope").unwrap_err().to_string();
        assert!(e.contains("no such pod") && e.contains("a/db"), "{e}");
    }

    #[test]
    fn state_round_trips_and_journals_before_pids_are_known() {
        let dir = tempfile::tempdir().unwrap();
        let mut st = lab(vec![pod("a", "web")]);
        st.record(Resource::Netns { name: "mlab-hub".into() }, dir.path()).unwrap();
        let proc = Proc {
            role: "echo".into(),
            name: "a/web".into(),
            pid: 0,
            start_time: 0,
            netns: "mlab-p-a.web".into(),
            cgroup: "/cg".into(),
            log: "/l".into(),
        };
        st.record(Resource::Process(proc), dir.path()).unwrap();
        let saved = LabState::load(dir.path()).unwrap().unwrap();
        assert_eq!(saved.resources, st.resources, "the journal is on disk before the process starts");
        st.set_pid("echo", "a/web", 42, 7, dir.path()).unwrap();
        let saved = LabState::load(dir.path()).unwrap().unwrap();
        assert_eq!(saved.processes().next().map(|p| (p.pid, p.start_time)), Some((42, 7)));
        let text = std::fs::read_to_string(path(dir.path())).unwrap();
        assert!(text.contains("\"kind\": \"netns\"") && text.contains("\"phase\": \"up\""), "{text}");
        assert!(LabState::load(&dir.path().join("none")).unwrap().is_none());
    }
}
