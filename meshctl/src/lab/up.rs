//! `lab up`: validate, build the model, then make the lab step by step (files, hub and node
//! network, pods, mesh-ca, ztunnels, apps), journaling each resource in the state file before
//! making it; any failure rolls back everything made so far.

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use serde_json::json;

use super::model::{self, LabModel, LabPod};
use super::state::{self, LabState, Node, Phase, Proc, Resource};
use super::sys::{self, Launch};
use super::{CaptureMode, LabError, UpArgs};

const STEPS: usize = 8;
/// The mark ztunnel sets on its own sockets (the capture programs skip them).
pub const PROXY_MARK: u32 = 1337;
/// mesh-ca's port on the hub.
pub const CA_PORT: u16 = 15012;
/// ztunnel's readiness port in each node netns.
pub const READY_PORT: u16 = 15021;
/// Link-local gateway every pod routes through (Calico style, answered by proxy ARP).
const POD_GATEWAY: &str = "169.254.1.1";
/// Each pod's /etc/resolv.conf.
const RESOLV_CONF: &str = "# written by meshctl lab: the lab has no DNS server\nnameserver 127.0.0.1\noptions timeout:1 attempts:1\n";

/// The lab's file layout under the state folder.
#[derive(Debug, Clone)]
pub struct Layout {
    pub dir: PathBuf,
}

impl Layout {
    pub fn model(&self) -> PathBuf {
        self.dir.join("model")
    }
    pub fn config(&self) -> PathBuf {
        self.dir.join("config")
    }
    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca")
    }
    pub fn inputs(&self) -> PathBuf {
        self.dir.join("inputs.json")
    }
    pub fn logs(&self) -> PathBuf {
        self.dir.join("logs")
    }
    pub fn pod_log(&self, ns: &str, name: &str) -> PathBuf {
        self.logs().join(format!("{ns}.{name}.log"))
    }
}

/// Where a binary the lab runs is: `$MESHLAB_BIN_DIR/<name>`, else next to this executable.
pub fn binary(name: &str) -> Result<PathBuf, LabError> {
    let exe = std::env::current_exe().unwrap_or_default();
    let dir = std::env::var_os("MESHLAB_BIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| exe.parent().map(Path::to_path_buf).unwrap_or_default());
    let path = dir.join(name);
    if path.is_file() {
        return Ok(path);
    }
    if name == "meshctl" && std::env::var_os("MESHLAB_BIN_DIR").is_none() {
        return Ok(exe);
    }
    Err(LabError::MissingBinary {
        what: "looking for the lab's programs".into(),
        name: name.into(),
        path,
        hint: format!("build it with `cargo build -p {name}`"),
    })
}

/// The pod's node-side veth name: `mlp` + 8 hex digits of a hash of `namespace/name`
/// (interface names are at most 15 bytes).
pub fn pod_veth(pod: &LabPod) -> String {
    format!("mlp{:08x}", model::fnv64(pod.key().as_bytes()) as u32)
}

/// The pod's cgroup: `<root>/<node>/pods/<namespace>.<name>`.
pub fn pod_cgroup(root: &Path, pod: &LabPod) -> PathBuf {
    root.join(&pod.node).join("pods").join(format!("{}.{}", pod.namespace, pod.name))
}

/// The folder whose `hosts` the pod sees as /etc/hosts.
pub fn pod_etc(pod: &LabPod) -> PathBuf {
    Path::new("/etc/netns").join(state::pod_netns(&pod.namespace, &pod.name))
}

/// `lab up`.
pub fn up(args: &UpArgs, out: &mut dyn Write, err: &mut dyn Write) -> Result<(), LabError> {
    let t0 = Instant::now();
    super::require_root()?;
    let dir = super::state_dir();
    refuse_if_up(&dir)?;
    let analysis = crate::analyze::analyze_paths(&args.paths).map_err(|e| match e {
        crate::analyze::AnalyzeError::Unreadable { path, source } => LabError::Read { path, source },
    })?;
    for d in &analysis.diagnostics {
        let _ = writeln!(err, "{d}");
    }
    if analysis.has_errors() {
        return Err(LabError::Invalid { errors: analysis.count(mesh_api::Severity::Error) });
    }
    let docs = model::read_documents(&args.paths)?;
    let m = model::build(&docs, &[])?;
    let layout = Layout { dir: dir.clone() };
    let problems = model::analyze(&m, &layout.model());
    let errors = problems.iter().filter(|d| d.is_error()).count();
    if errors > 0 {
        for d in &problems {
            let _ = writeln!(err, "{d}");
        }
        return Err(LabError::Invalid { errors });
    }
    let bins = Bins::find()?;
    let cg_root = sys::cgroup2_root()?.join("meshlab");
    let running = m.running().count();
    let _ = writeln!(
        out,
        "[1/{STEPS}] model: {} pods ({running} running, {} from {} workloads) on {} nodes ({})",
        m.pods.len(),
        m.pods.iter().filter(|p| p.owner.is_some()).count(),
        m.workloads,
        m.nodes.len(),
        m.nodes.join(", ")
    );
    let inputs = args.paths.iter().map(|p| std::fs::canonicalize(p).unwrap_or_else(|_| p.clone())).collect();
    let mut st = LabState {
        version: state::VERSION,
        phase: Phase::Creating,
        started: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs(),
        capture: args.capture,
        inputs,
        cgroup_root: cg_root.clone(),
        nodes: Vec::new(),
        pods: m.pods.clone(),
        resources: Vec::new(),
    };
    let io = |step: &str, path: &Path, source| LabError::Io { step: step.into(), path: path.into(), source };
    std::fs::create_dir_all(&dir).map_err(|e| io("creating the state folder", &dir, e))?;
    let mut lab = Lab {
        st: &mut st,
        layout,
        m: &m,
        cg_root,
        bins,
        capture: args.capture,
        timeout: args.timeout,
        children: Vec::new(),
    };
    match lab.make(&docs, out) {
        Ok(()) => {
            let _ = writeln!(
                out,
                "lab up in {:.1}s: {} nodes, {running} pods, capture {} (state {}). Try `meshctl lab status`.",
                t0.elapsed().as_secs_f64(),
                m.nodes.len(),
                args.capture.as_str(),
                dir.display()
            );
            Ok(())
        }
        Err(e) => {
            let _ = writeln!(out, "lab up failed: {e}\nrolling back:");
            // The children are ours: reap them so nothing lingers as a zombie.
            let mut children = std::mem::take(&mut lab.children);
            super::down::teardown(Some(&st), &dir, out);
            for (_, _, c) in &mut children {
                let _ = c.try_wait();
            }
            Err(e)
        }
    }
}

/// Refuses when a lab (or what is left of one) exists.
fn refuse_if_up(dir: &Path) -> Result<(), LabError> {
    if state::path(dir).exists() {
        let detail = match LabState::load(dir) {
            Ok(Some(s)) => format!(", {} nodes, {} pods, phase {:?}", s.nodes.len(), s.pods.len(), s.phase),
            _ => String::new(),
        };
        return Err(LabError::AlreadyUp { state: dir.into(), detail });
    }
    let left = sys::netns_list(state::NETNS_PREFIX);
    if !left.is_empty() {
        return Err(LabError::AlreadyUp {
            state: dir.into(),
            detail: format!("; netns of a lab exist: {}", left.join(", ")),
        });
    }
    Ok(())
}

/// The programs the lab runs.
#[derive(Debug)]
pub(super) struct Bins {
    ca: PathBuf,
    ztunnel: PathBuf,
    meshctl: PathBuf,
}

impl Bins {
    pub fn find() -> Result<Bins, LabError> {
        Ok(Bins { ca: binary("mesh-ca")?, ztunnel: binary("ztunnel")?, meshctl: binary("meshctl")? })
    }
}

/// A lab being made (or changed by `lab apply`).
pub(super) struct Lab<'a> {
    pub st: &'a mut LabState,
    pub layout: Layout,
    pub m: &'a LabModel,
    pub cg_root: PathBuf,
    pub bins: Bins,
    pub capture: CaptureMode,
    /// How long to wait for each process.
    pub timeout: Duration,
    /// Started processes, watched for early exits while waiting.
    pub children: Vec<(String, PathBuf, Child)>,
}

impl std::fmt::Debug for Lab<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lab").field("dir", &self.layout.dir).finish_non_exhaustive()
    }
}

impl Lab<'_> {
    pub fn dir(&self) -> PathBuf {
        self.layout.dir.clone()
    }

    pub fn record(&mut self, r: Resource) -> Result<(), LabError> {
        let dir = self.dir();
        self.st.record(r, &dir)
    }

    fn mkdir(&mut self, step: &str, path: &Path) -> Result<(), LabError> {
        self.record(Resource::Dir { path: path.into() })?;
        std::fs::create_dir_all(path).map_err(|source| LabError::Io {
            step: step.into(),
            path: path.into(),
            source,
        })
    }

    fn cgroup(&mut self, step: &str, path: &Path) -> Result<(), LabError> {
        self.record(Resource::Cgroup { path: path.into() })?;
        match std::fs::create_dir(path) {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
                Err(LabError::Io { step: step.into(), path: path.into(), source: e })
            }
            _ => Ok(()),
        }
    }

    fn netns(&mut self, step: &str, name: &str) -> Result<(), LabError> {
        self.record(Resource::Netns { name: name.into() })?;
        sys::ip(step, &["netns", "add", name])?;
        sys::ip(step, &["-n", name, "link", "set", "lo", "up"])
    }

    fn make(&mut self, docs: &[(String, serde_json::Value)], out: &mut dyn Write) -> Result<(), LabError> {
        let t = Instant::now();
        self.files()?;
        save_inputs(&self.layout, docs)?;
        let _ = writeln!(
            out,
            "[2/{STEPS}] files: model, configs, node tokens in {} ({})",
            self.dir().display(),
            ms(t)
        );
        let t = Instant::now();
        self.network()?;
        let _ = writeln!(
            out,
            "[3/{STEPS}] network: hub {} ({}/24 on {}), {} node netns joined by veth ({})",
            state::HUB_NETNS,
            state::HUB_IP,
            state::HUB_BRIDGE,
            self.m.nodes.len(),
            ms(t)
        );
        let t = Instant::now();
        let running: Vec<LabPod> = self.m.running().cloned().collect();
        let n = self.pods(&running)?;
        self.hosts_files(&running)?;
        let _ =
            writeln!(out, "[4/{STEPS}] pods: {n} netns, {n} veth, {n} cgroups, {n} hosts files ({})", ms(t));
        let t = Instant::now();
        self.mesh_ca()?;
        let _ = writeln!(out, "[5/{STEPS}] mesh-ca: serving on {}:{CA_PORT} ({})", state::HUB_IP, ms(t));
        let t = Instant::now();
        self.ztunnels()?;
        let _ = writeln!(
            out,
            "[6/{STEPS}] ztunnel: {} ready, capture {} ({})",
            self.m.nodes.len(),
            self.capture.as_str(),
            ms(t)
        );
        let t = Instant::now();
        let apps = self.apps(&running)?;
        let waypoints = self.waypoints(&running)?;
        let _ =
            writeln!(out, "[7/{STEPS}] apps: {apps} echo listening, {waypoints} waypoints ready ({})", ms(t));
        self.st.phase = Phase::Up;
        let dir = self.dir();
        self.st.save(&dir)?;
        let _ = writeln!(out, "[8/{STEPS}] state: {}", state::path(&dir).display());
        Ok(())
    }

    /// State folders, model files, node tokens, mesh-ca's and each ztunnel's configuration.
    fn files(&mut self) -> Result<(), LabError> {
        let step = "writing the lab's files";
        let io = |path: &Path, source| LabError::Io { step: step.into(), path: path.into(), source };
        let l = self.layout.clone();
        for d in [l.model(), l.config(), l.ca(), l.logs()] {
            self.mkdir(step, &d)?;
        }
        model::write(&l.model(), self.m).map_err(|e| io(&l.model(), e))?;
        let mut tokens = String::new();
        for node in &self.m.nodes {
            let token = sys::random_token().map_err(|e| io(Path::new("/dev/urandom"), e))?;
            let file = l.config().join(format!("{node}.token"));
            sys::write_private(&file, &token).map_err(|e| io(&file, e))?;
            tokens.push_str(&format!("{node} {token}\n"));
        }
        let tokens_file = l.config().join("node-tokens");
        sys::write_private(&tokens_file, &tokens).map_err(|e| io(&tokens_file, e))?;
        let ca = json!({
            "trustDomain": mesh_api::DEFAULT_TRUST_DOMAIN,
            "model": [l.model()],
            "nodeTokensFile": tokens_file,
        });
        let ca_file = l.config().join("mesh-ca.yaml");
        write_yaml(&ca_file, &ca).map_err(|e| io(&ca_file, e))?;
        for (k, node) in self.m.nodes.iter().enumerate() {
            let file = l.config().join(format!("ztunnel-{node}.yaml"));
            let pin_dir = Path::new(state::PIN_ROOT).join(node);
            let mut capture = json!({ "mode": self.capture.as_str() });
            if self.capture == CaptureMode::Ebpf {
                capture = json!({
                    "mode": "ebpf",
                    "netnsPath": format!("/var/run/netns/{}", state::pod_netns("{namespace}", "{name}")),
                    "podsCgroup": self.cg_root.join(node).join("pods"),
                    "bpfPinDir": pin_dir,
                    "mark": PROXY_MARK,
                });
            }
            let z = json!({
                "node": node,
                "trustDomain": mesh_api::DEFAULT_TRUST_DOMAIN,
                "caAddress": format!("https://{}:{CA_PORT}", state::HUB_IP),
                "caRoot": l.ca().join("root-cert.pem"),
                "caServerName": "mesh-ca",
                "tokenFile": l.config().join(format!("{node}.token")),
                "model": [l.model()],
                "drainDeadline": "1s",
                "logFormat": "text",
                "capture": capture,
            });
            write_yaml(&file, &z).map_err(|e| io(&file, e))?;
            self.st.nodes.push(Node {
                name: node.clone(),
                ip: LabModel::node_ip(k),
                netns: state::node_netns(node),
                cgroup: self.cg_root.join(node),
                pin_dir,
                ztunnel_config: file,
            });
        }
        let dir = self.dir();
        self.st.save(&dir)
    }

    /// Hub netns with the bridge; per node a netns joined to it by a veth; the cgroup tree.
    fn network(&mut self) -> Result<(), LabError> {
        let hub = state::HUB_NETNS;
        self.netns("hub netns", hub)?;
        let step = "hub bridge";
        self.record(Resource::Link { netns: hub.into(), name: state::HUB_BRIDGE.into() })?;
        sys::ip(step, &["-n", hub, "link", "add", state::HUB_BRIDGE, "type", "bridge"])?;
        sys::ip(
            step,
            &["-n", hub, "addr", "add", &format!("{}/24", state::HUB_IP), "dev", state::HUB_BRIDGE],
        )?;
        sys::ip(step, &["-n", hub, "link", "set", state::HUB_BRIDGE, "up"])?;
        let root = self.cg_root.clone();
        self.cgroup("lab cgroup root", &root)?;
        self.cgroup("mesh-ca cgroup", &root.join("ca"))?;
        if self.capture == CaptureMode::Ebpf {
            sys::ensure_bpffs()?;
            self.record(Resource::PinDir { path: state::PIN_ROOT.into() })?;
            std::fs::create_dir_all(state::PIN_ROOT).map_err(|source| LabError::Io {
                step: "bpffs pin folder".into(),
                path: state::PIN_ROOT.into(),
                source,
            })?;
        }
        for (k, node) in self.st.nodes.clone().iter().enumerate() {
            let step = format!("node {}", node.name);
            self.netns(&step, &node.netns)?;
            let hub_end = format!("mlab-h{k}");
            self.record(Resource::Link { netns: hub.into(), name: hub_end.clone() })?;
            sys::ip(
                &step,
                &[
                    "-n",
                    hub,
                    "link",
                    "add",
                    &hub_end,
                    "type",
                    "veth",
                    "peer",
                    "name",
                    "eth0",
                    "netns",
                    &node.netns,
                ],
            )?;
            sys::ip(&step, &["-n", hub, "link", "set", &hub_end, "master", state::HUB_BRIDGE, "up"])?;
            sys::ip(&step, &["-n", &node.netns, "addr", "add", &format!("{}/24", node.ip), "dev", "eth0"])?;
            sys::ip(&step, &["-n", &node.netns, "link", "set", "eth0", "up"])?;
            // A node has a default route (like a real one); proxy ARP for the pods' gateway
            // 169.254.1.1 only answers when the node has a route to it out another interface.
            let hub_ip = state::HUB_IP.to_string();
            sys::ip(&step, &["-n", &node.netns, "route", "add", "default", "via", &hub_ip, "dev", "eth0"])?;
            let mut ctl = vec![
                ("net/ipv4/ip_forward", "1"),
                ("net/ipv4/conf/all/rp_filter", "0"),
                ("net/ipv4/conf/default/rp_filter", "0"),
                ("net/ipv4/conf/eth0/rp_filter", "0"),
            ];
            if self.capture == CaptureMode::None {
                // Loopback-mode ztunnel binds listeners on its pods' IPs; let those binds
                // succeed (unused) so it becomes ready without capture.
                ctl.push(("net/ipv4/ip_nonlocal_bind", "1"));
            }
            sys::sysctls(&step, &node.netns, &ctl)?;
            self.cgroup(&step, &node.cgroup)?;
            self.cgroup(&step, &node.cgroup.join("pods"))?;
            self.cgroup(&step, &node.cgroup.join("ztunnel"))?;
            if self.capture == CaptureMode::Ebpf {
                self.record(Resource::PinDir { path: node.pin_dir.clone() })?;
                std::fs::create_dir_all(&node.pin_dir).map_err(|source| LabError::Io {
                    step: step.clone(),
                    path: node.pin_dir.clone(),
                    source,
                })?;
            }
        }
        Ok(())
    }

    /// One netns per Running pod behind a veth with /32 routes, its cgroup and hosts file;
    /// then each node's routes to the other nodes' pods. Returns the number of pods.
    pub fn pods(&mut self, pods: &[LabPod]) -> Result<usize, LabError> {
        let mut per_node: std::collections::BTreeMap<String, Vec<String>> = Default::default();
        for pod in pods.iter().filter(|p| p.running) {
            let step = format!("pod {}", pod.key());
            let ip = pod
                .ip
                .ok_or_else(|| LabError::Pod { pod: pod.key(), reason: "no IP left to allocate".into() })?;
            let ns = state::pod_netns(&pod.namespace, &pod.name);
            let node_ns = state::node_netns(&pod.node);
            let veth = pod_veth(pod);
            self.netns(&step, &ns)?;
            self.record(Resource::Link { netns: node_ns.clone(), name: veth.clone() })?;
            sys::ip(
                &step,
                &["-n", &node_ns, "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns],
            )?;
            sys::ip(&step, &["-n", &node_ns, "link", "set", &veth, "up"])?;
            sys::ip(
                &step,
                &["-n", &node_ns, "route", "add", &format!("{ip}/32"), "dev", &veth, "scope", "link"],
            )?;
            sys::ip(&step, &["-n", &ns, "addr", "add", &format!("{ip}/32"), "dev", "eth0"])?;
            sys::ip(&step, &["-n", &ns, "link", "set", "eth0", "up"])?;
            sys::ip(
                &step,
                &["-n", &ns, "route", "add", "default", "via", POD_GATEWAY, "dev", "eth0", "onlink"],
            )?;
            sys::sysctls(
                &step,
                &ns,
                &[
                    ("net/ipv4/conf/all/rp_filter", "0"),
                    ("net/ipv4/conf/eth0/rp_filter", "0"),
                    ("net/ipv4/ip_local_reserved_ports", "15001,15006,15008"),
                ],
            )?;
            per_node.entry(node_ns).or_default().push(veth);
            let cg = pod_cgroup(&self.cg_root, pod);
            self.cgroup(&step, &cg)?;
            self.mkdir(&step, &pod_etc(pod))?;
        }
        // The node answers ARP for the pods' gateway on their veths (proxy ARP).
        for (node_ns, veths) in &per_node {
            let keys: Vec<(String, String)> = veths
                .iter()
                .flat_map(|v| {
                    [
                        (format!("net/ipv4/conf/{v}/proxy_arp"), "1".into()),
                        (format!("net/ipv4/conf/{v}/rp_filter"), "0".into()),
                    ]
                })
                .collect();
            let refs: Vec<(&str, &str)> = keys.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            sys::sysctls(&format!("proxy ARP in {node_ns}"), node_ns, &refs)?;
        }
        for node in &self.st.nodes {
            for pod in pods.iter().filter(|p| p.node != node.name && p.running) {
                let Some(owner) = self.st.nodes.iter().find(|n| n.name == pod.node) else { continue };
                let ip = pod.ip.map(|i| i.to_string()).unwrap_or_default();
                sys::ip(
                    &format!("node {}: route to pod {}", node.name, pod.key()),
                    &[
                        "-n",
                        &node.netns,
                        "route",
                        "add",
                        &format!("{ip}/32"),
                        "via",
                        &owner.ip.to_string(),
                        "dev",
                        "eth0",
                    ],
                )?;
            }
        }
        // The hub routes pod addresses to their nodes, so pods reach what runs on the hub
        // (mesh-ca) and the hub's answers find their way back.
        for pod in pods.iter().filter(|p| p.running) {
            let Some(owner) = self.st.nodes.iter().find(|n| n.name == pod.node) else { continue };
            let ip = pod.ip.map(|i| i.to_string()).unwrap_or_default();
            sys::ip(
                &format!("hub: route to pod {}", pod.key()),
                &[
                    "-n",
                    state::HUB_NETNS,
                    "route",
                    "replace",
                    &format!("{ip}/32"),
                    "via",
                    &owner.ip.to_string(),
                ],
            )?;
        }
        Ok(pods.len())
    }

    pub(super) fn start(&mut self, role: &str, name: &str, launch: Launch<'_>) -> Result<(), LabError> {
        self.record(Resource::Process(Proc {
            role: role.into(),
            name: name.into(),
            pid: 0,
            start_time: 0,
            netns: launch.netns.into(),
            cgroup: launch.cgroup.into(),
            log: launch.log.into(),
        }))?;
        let child = sys::spawn(&launch)?;
        let pid = child.id() as i32;
        let start_time = sys::proc_start_time(pid).unwrap_or(0);
        let dir = self.dir();
        self.st.set_pid(role, name, pid, start_time, &dir)?;
        self.children.push((launch.what.clone(), launch.log.to_path_buf(), child));
        Ok(())
    }

    /// Polls `ready` until it says yes, the process `idx` exits, or the timeout.
    pub(super) fn wait(
        &mut self,
        idx: usize,
        mut ready: impl FnMut() -> Result<(), String>,
    ) -> Result<(), LabError> {
        let t = Instant::now();
        loop {
            let (what, log, child) = &mut self.children[idx];
            let last = match ready() {
                Ok(()) => return Ok(()),
                Err(why) => why,
            };
            if let Ok(Some(status)) = child.try_wait() {
                return Err(LabError::Exited {
                    what: what.clone(),
                    status: status.to_string(),
                    log_tail: sys::log_tail(log, 15),
                });
            }
            if t.elapsed() > self.timeout {
                return Err(LabError::NotReady {
                    what: what.clone(),
                    waited: self.timeout,
                    reason: last,
                    log_tail: sys::log_tail(log, 15),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn mesh_ca(&mut self) -> Result<(), LabError> {
        let l = self.layout.clone();
        let log = l.logs().join("mesh-ca.log");
        let cgroup = self.cg_root.join("ca");
        let program = self.bins.ca.clone();
        let args = vec![
            "--config".into(),
            l.config().join("mesh-ca.yaml").display().to_string(),
            "--state-dir".into(),
            l.ca().display().to_string(),
            "--listen".into(),
            SocketAddr::from((state::HUB_IP, CA_PORT)).to_string(),
        ];
        let launch = Launch {
            what: "mesh-ca".into(),
            program: &program,
            args,
            netns: state::HUB_NETNS,
            cgroup: &cgroup,
            log: &log,
            env: Vec::new(),
        };
        self.start("mesh-ca", "mesh-ca", launch)?;
        let root = l.ca().join("root-cert.pem");
        let idx = self.children.len() - 1;
        self.wait(idx, || {
            let served = std::fs::read_to_string(&log).unwrap_or_default().contains("mesh-ca serving");
            let cert = std::fs::metadata(&root).is_ok_and(|m| m.len() > 0);
            match (cert, served) {
                (true, true) => Ok(()),
                (false, _) => Err(format!("{} not written yet", root.display())),
                (true, false) => Err("no \"mesh-ca serving\" log line yet".into()),
            }
        })
    }

    fn ztunnels(&mut self) -> Result<(), LabError> {
        let nodes = self.st.nodes.clone();
        self.start_ztunnels(&nodes)
    }

    /// Starts the ztunnel of each of `nodes` and waits until each is ready.
    pub fn start_ztunnels(&mut self, nodes: &[state::Node]) -> Result<(), LabError> {
        let l = self.layout.clone();
        let program = self.bins.ztunnel.clone();
        let first = self.children.len();
        for node in nodes.iter().cloned() {
            let log = l.logs().join(format!("ztunnel-{}.log", node.name));
            let cgroup = node.cgroup.join("ztunnel");
            let args = vec!["--config".into(), node.ztunnel_config.display().to_string()];
            let what = format!("ztunnel on {}", node.name);
            let launch = Launch {
                what,
                program: &program,
                args,
                netns: &node.netns,
                cgroup: &cgroup,
                log: &log,
                env: Vec::new(),
            };
            self.start("ztunnel", &node.name, launch)?;
        }
        for (i, node) in nodes.iter().enumerate() {
            let addr = SocketAddr::from((node.ip, READY_PORT));
            self.wait(first + i, || match sys::http_get_status(&node.netns, addr, "/healthz/ready") {
                Ok(200) => Ok(()),
                Ok(code) => Err(format!("GET http://{addr}/healthz/ready answered {code}")),
                Err(e) => Err(format!("GET http://{addr}/healthz/ready: {e}")),
            })?;
        }
        Ok(())
    }

    /// Writes (or rewrites) the pods' hosts files from the model's Services.
    pub fn hosts_files(&self, pods: &[LabPod]) -> Result<(), LabError> {
        let suffix = mesh_model::MeshConfig::default().domain_suffix.to_string();
        for pod in pods.iter().filter(|p| p.running) {
            let hosts = pod_etc(pod).join("hosts");
            let tmp = pod_etc(pod).join(".hosts.tmp");
            std::fs::write(&tmp, model::hosts_file(self.m, pod, &suffix))
                .and_then(|()| std::fs::rename(&tmp, &hosts))
                .map_err(|source| LabError::Io {
                    step: format!("pod {}: hosts file", pod.key()),
                    path: hosts,
                    source,
                })?;
            // No DNS server in the lab: a resolver on 127.0.0.1 fails at once (port
            // unreachable) instead of timing out on the host's servers, so names not in the
            // hosts file (and IPv6 lookups of names in it) fail fast.
            let resolv = pod_etc(pod).join("resolv.conf");
            std::fs::write(&resolv, RESOLV_CONF).map_err(|source| LabError::Io {
                step: format!("pod {}: resolv.conf", pod.key()),
                path: resolv,
                source,
            })?;
        }
        Ok(())
    }

    /// The echo app in every Running pod that declares containerPorts. Returns how many.
    pub fn apps(&mut self, pods: &[LabPod]) -> Result<usize, LabError> {
        let program = self.bins.meshctl.clone();
        let mut started: Vec<(usize, LabPod)> = Vec::new();
        let with_app = |p: &&LabPod| p.running && !p.ports.is_empty() && p.waypoint.is_none();
        for pod in pods.iter().filter(with_app).cloned().collect::<Vec<_>>() {
            let log = self.layout.pod_log(&pod.namespace, &pod.name);
            let cgroup = pod_cgroup(&self.cg_root, &pod);
            let ns = state::pod_netns(&pod.namespace, &pod.name);
            let mut args: Vec<String> = vec![
                "echo".into(),
                "--pod".into(),
                pod.name.clone(),
                "--namespace".into(),
                pod.namespace.clone(),
            ];
            for p in &pod.ports {
                args.extend(["--port".into(), p.to_string()]);
            }
            let what = format!("echo in pod {}", pod.key());
            self.start(
                "echo",
                &pod.key(),
                Launch {
                    what,
                    program: &program,
                    args,
                    netns: &ns,
                    cgroup: &cgroup,
                    log: &log,
                    env: Vec::new(),
                },
            )?;
            started.push((self.children.len() - 1, pod));
        }
        for (idx, pod) in &started {
            let ns = state::pod_netns(&pod.namespace, &pod.name);
            let ip = pod.ip.unwrap_or(Ipv4Addr::UNSPECIFIED);
            self.wait(*idx, || {
                // Read the pod's listening sockets rather than connect: a probe connection
                // would show up in the app's log.
                let listening = sys::listening_ports(&ns).unwrap_or_default();
                match pod.ports.iter().find(|p| !listening.contains(p)) {
                    None => Ok(()),
                    Some(p) => Err(format!("nothing listens on {ip}:{p}")),
                }
            })?;
        }
        Ok(started.len())
    }
}

/// The input documents of the running lab (`lab apply` merges into them): `<state>/inputs.json`.
pub fn save_inputs(l: &Layout, docs: &[(String, serde_json::Value)]) -> Result<(), LabError> {
    let path = l.inputs();
    let text = serde_json::to_vec(docs).map_err(std::io::Error::other);
    text.and_then(|t| std::fs::write(&path, t)).map_err(|source| LabError::Io {
        step: "saving the input documents".into(),
        path,
        source,
    })
}

/// Reads what [`save_inputs`] wrote.
pub fn load_inputs(l: &Layout) -> Result<Vec<(String, serde_json::Value)>, LabError> {
    let path = l.inputs();
    let text = std::fs::read(&path).map_err(|source| LabError::Read { path: path.clone(), source })?;
    serde_json::from_slice(&text).map_err(|e| LabError::State { path, reason: e.to_string() })
}

pub(super) fn write_yaml(path: &Path, v: &serde_json::Value) -> std::io::Result<()> {
    let text = serde_yaml::to_string(v).map_err(std::io::Error::other)?;
    std::fs::write(path, format!("# written by meshctl lab\n{text}"))
}

fn ms(t: Instant) -> String {
    format!("{:.0} ms", t.elapsed().as_secs_f64() * 1000.0)
}
