//! `Capture`: opens (or re-opens from bpffs pins) the capture programs and maps, attaches the
//! cgroup programs once, and registers pods (pods map, pod-IP map, sk_lookup link per netns,
//! tc fallback) and their listeners.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use aya::maps::{Array, HashMap, Map, MapData, MapError, PerCpuArray, SockHash};
use aya::programs::links::FdLink;
use aya::programs::{CgroupSockAddrAttachType, SchedClassifier, SkLookup, TcAttachType};

use crate::programs::{self, Kind, Layout, Prog};
use crate::types::{ConfigValue, IpKey, ListenerKey, PodValue};
use crate::{EbpfError, ListenerKind, PodConfig, Reason, bpffs, netns};

/// Where and how to capture.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CaptureOptions {
    /// bpffs folder for this ztunnel's maps, programs and links.
    pub pin_dir: PathBuf,
    /// cgroup v2 folder that is the parent of all captured pods.
    pub pods_cgroup: PathBuf,
    /// ztunnel's own cgroup (cgroup/getsockopt attaches here).
    pub proxy_cgroup: PathBuf,
    /// SO_MARK ztunnel sets on its sockets; connect4/6 skip them (0: no mark is skipped).
    pub proxy_mark: u32,
    /// Do not load sk_lookup: take the path of a kernel whose verifier refuses it (Linux <
    /// 5.17), steering every pod's inbound with the tc fallback (tests; forcing it).
    pub force_tc_fallback: bool,
}

/// How inbound connections to captured pods reach their listeners.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Inbound {
    /// sk_lookup per pod netns (Linux >= 5.17).
    SkLookup,
    /// tc ingress + `bpf_sk_assign` on the pod's interfaces (sk_lookup refused at load).
    TcFallback,
}

impl Inbound {
    /// Label value for logs and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Inbound::SkLookup => "sk_lookup",
            Inbound::TcFallback => "tc",
        }
    }
}

/// Open capture state: the pinned maps and the sk_lookup/tc programs for new pods.
#[derive(Debug)]
pub struct Capture {
    opts: CaptureOptions,
    layout: Layout,
    inbound: Inbound,
    state: Mutex<State>,
}

struct State {
    pods: HashMap<MapData, u64, PodValue>,
    pod_ips: HashMap<MapData, IpKey, u64>,
    listeners: SockHash<MapData, ListenerKey>,
    counters: PerCpuArray<MapData, u64>,
    /// None when the kernel refused it: every pod gets the tc fallback.
    sk_lookup: Option<SkLookup>,
    tc: Option<SchedClassifier>,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field("sk_lookup_loaded", &self.sk_lookup.is_some())
            .field("tc_loaded", &self.tc.is_some())
            .finish_non_exhaustive()
    }
}

/// The cgroup programs and where they attach (true: pods cgroup, false: proxy cgroup).
const CGROUP_PROGS: &[(Prog, bool)] = &[
    (Prog { name: "mesh_connect4", kind: Kind::SockAddr(CgroupSockAddrAttachType::Connect4) }, true),
    (Prog { name: "mesh_connect6", kind: Kind::SockAddr(CgroupSockAddrAttachType::Connect6) }, true),
    (Prog { name: "mesh_sockops", kind: Kind::SockOps }, true),
    (Prog { name: "mesh_getpeername4", kind: Kind::SockAddr(CgroupSockAddrAttachType::GetPeerName4) }, true),
    (Prog { name: "mesh_getpeername6", kind: Kind::SockAddr(CgroupSockAddrAttachType::GetPeerName6) }, true),
    (Prog { name: "mesh_getsockopt", kind: Kind::GetSockopt }, false),
];

fn map_err(map: &'static str, step: impl Into<String>) -> impl FnOnce(MapError) -> EbpfError {
    let step = step.into();
    move |source| EbpfError::Map { map, step, source: Box::new(source) }
}

fn open_map(layout: &Layout, name: &'static str, wrap: fn(MapData) -> Map) -> Result<Map, EbpfError> {
    let path = layout.map(name);
    let data = MapData::from_pin(&path).map_err(map_err(name, format!("open pin {}", path.display())))?;
    Ok(wrap(data))
}

fn not_found(e: &MapError) -> bool {
    matches!(e, MapError::KeyNotFound | MapError::ElementNotFound)
        || matches!(e, MapError::SyscallError(s) if s.io_error.raw_os_error() == Some(libc::ENOENT))
}

impl Capture {
    /// Loads and attaches the cgroup programs, or re-opens them from the pins when a previous
    /// ztunnel left them (restart keeps capture in place, nothing is attached twice).
    pub fn open(opts: CaptureOptions) -> Result<Capture, EbpfError> {
        let layout = Layout { root: opts.pin_dir.clone() };
        bpffs::ensure_pin_dir(&layout.root)?;
        for dir in [layout.maps(), layout.progs(), layout.links(), layout.netns_root()] {
            bpffs::create_dir(&dir)?;
        }
        let sk_lookup_err = programs::load_missing(&layout, !opts.force_tc_fallback)?;
        for (prog, on_pods) in CGROUP_PROGS {
            let cgroup = if *on_pods { &opts.pods_cgroup } else { &opts.proxy_cgroup };
            programs::attach_cgroup(&layout, *prog, cgroup)?;
        }

        let mut config: Array<MapData, ConfigValue> = open_map(&layout, "mesh_config", Map::Array)?
            .try_into()
            .map_err(map_err("mesh_config", "type"))?;
        config
            .set(0, ConfigValue { proxy_mark: opts.proxy_mark, pad: 0 }, 0)
            .map_err(map_err("mesh_config", "set proxy_mark"))?;
        let state = State {
            pods: open_map(&layout, "mesh_pods", Map::HashMap)?
                .try_into()
                .map_err(map_err("mesh_pods", "type"))?,
            pod_ips: open_map(&layout, "mesh_pod_ips", Map::HashMap)?
                .try_into()
                .map_err(map_err("mesh_pod_ips", "type"))?,
            listeners: open_map(&layout, "mesh_listeners", Map::SockHash)?
                .try_into()
                .map_err(map_err("mesh_listeners", "type"))?,
            counters: open_map(&layout, "mesh_counters", Map::PerCpuArray)?
                .try_into()
                .map_err(map_err("mesh_counters", "type"))?,
            sk_lookup: match sk_lookup_err {
                None => Some(programs::sk_lookup(&layout)?),
                Some(e) => {
                    tracing::warn!(error = %e,
                        "sk_lookup program not loaded (Linux < 5.17's verifier refuses it); inbound capture \
                         uses the tc ingress fallback for every pod");
                    None
                }
            },
            tc: None,
        };
        let inbound = if state.sk_lookup.is_some() { Inbound::SkLookup } else { Inbound::TcFallback };
        tracing::info!(inbound = inbound.name(), "capture programs ready");
        Ok(Capture { opts, layout, inbound, state: Mutex::new(state) })
    }

    /// The options this capture was opened with.
    pub fn options(&self) -> &CaptureOptions {
        &self.opts
    }

    /// How new pods' inbound is steered (tc when sk_lookup could not be loaded).
    pub fn inbound(&self) -> Inbound {
        self.inbound
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock leaves the maps consistent (each call is one syscall).
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a pod: pods map entry keyed by the netns cookie, sk_lookup attached to that
    /// netns (link pinned under pin_dir). Idempotent. Returns the netns cookie.
    pub fn add_pod(&self, netns: BorrowedFd<'_>, pod: &PodConfig) -> Result<u64, EbpfError> {
        self.register(netns, pod, false)
    }

    /// Like [`Capture::add_pod`], but steers inbound with the tc ingress + `bpf_sk_assign`
    /// fallback on the netns's non-loopback interfaces instead of sk_lookup (what kernels
    /// whose verifier refuses sk_lookup get automatically; exposed for tests).
    pub fn add_pod_tc_fallback(&self, netns: BorrowedFd<'_>, pod: &PodConfig) -> Result<u64, EbpfError> {
        self.register(netns, pod, true)
    }

    fn register(&self, netns: BorrowedFd<'_>, pod: &PodConfig, force_tc: bool) -> Result<u64, EbpfError> {
        let label = netns::label(netns);
        if pod.ipv4.is_none() && pod.ipv6.is_none() {
            return Err(EbpfError::InvalidPod { netns: label, reason: "no IPv4 or IPv6 address" });
        }
        let cookie = netns::netns_cookie(netns).map_err(|source| EbpfError::Netns {
            netns: label.clone(),
            step: "read netns cookie (SO_NETNS_COOKIE)",
            source,
        })?;
        let value = PodValue::from_config(pod);
        let mut st = self.state();
        // A re-registration with other addresses must not leave the old ones pointing here.
        if let Ok(old) = st.pods.get(&cookie, 0) {
            for key in old.ip_keys() {
                if !value.ip_keys().contains(&key) {
                    remove_ignoring_missing(&mut st.pod_ips, &key, "mesh_pod_ips")?;
                }
            }
        }
        for key in value.ip_keys() {
            st.pod_ips
                .insert(key, cookie, 0)
                .map_err(map_err("mesh_pod_ips", format!("insert netns {cookie}")))?;
        }
        st.pods.insert(cookie, value, 0).map_err(map_err("mesh_pods", format!("insert netns {cookie}")))?;
        if let Err(e) = self.attach_inbound(&mut st, netns, cookie, &label, force_tc) {
            drop(st);
            let _ = self.remove_pod(cookie);
            return Err(e);
        }
        tracing::info!(netns = %label, cookie, ?pod, "pod captured");
        Ok(cookie)
    }

    /// sk_lookup on the netns, or the tc fallback; nothing when already pinned.
    fn attach_inbound(
        &self,
        st: &mut State,
        ns: BorrowedFd<'_>,
        cookie: u64,
        label: &str,
        force_tc: bool,
    ) -> Result<(), EbpfError> {
        let dir = self.layout.netns(cookie);
        let pinned = std::fs::read_dir(&dir).map(|mut rd| rd.next().is_some()).unwrap_or(false);
        if pinned {
            return Ok(());
        }
        bpffs::create_dir(&dir)?;
        let Some(sk_lookup) = st.sk_lookup.as_mut().filter(|_| !force_tc) else {
            return self.attach_tc(st, ns, &dir, label);
        };
        let sk_err = match attach_sk_lookup(sk_lookup, ns, &dir.join("sk_lookup")) {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        tracing::warn!(netns = label, error = %sk_err,
            "sk_lookup attach failed, using the tc ingress fallback");
        let tc_err = match self.attach_tc(st, ns, &dir, label) {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        Err(EbpfError::Inbound { netns: label.into(), sk_lookup: Box::new(sk_err), tc: Box::new(tc_err) })
    }

    /// The tc ingress fallback on every non-loopback interface of the netns. On kernels with
    /// TCX the links are pinned under `dir`; netlink filters stay until the netns goes.
    fn attach_tc(
        &self,
        st: &mut State,
        ns: BorrowedFd<'_>,
        dir: &Path,
        label: &str,
    ) -> Result<(), EbpfError> {
        if st.tc.is_none() {
            st.tc = Some(programs::tc_ingress(&self.layout)?);
        }
        let prog = st.tc.as_mut().expect("set above");
        let result = netns::run_in(ns, || attach_tc_here(prog, dir)).map_err(|source| EbpfError::Netns {
            netns: label.into(),
            step: "setns for tc attach",
            source,
        })?;
        result.map_err(|source| EbpfError::Netns { netns: label.into(), step: "list interfaces", source })?
    }

    /// Puts a listener (created in that pod's netns) into the SOCKHASH for (cookie, kind).
    /// The kernel drops the entry when the socket closes (the pod then fails closed).
    pub fn set_listener(
        &self,
        netns_cookie: u64,
        kind: ListenerKind,
        sock: BorrowedFd<'_>,
    ) -> Result<(), EbpfError> {
        let key = ListenerKey { netns_cookie, kind: kind as u32, pad: 0 };
        let mut st = self.state();
        st.listeners
            .insert(key, sock.as_raw_fd(), 0)
            .map_err(map_err("mesh_listeners", format!("insert {kind:?} listener of netns {netns_cookie}")))
    }

    /// Unregisters a pod: map entries and its sk_lookup link (pins removed). Unknown cookies
    /// are not an error (reconciliation after a restart may repeat it).
    pub fn remove_pod(&self, netns_cookie: u64) -> Result<(), EbpfError> {
        let mut st = self.state();
        if let Ok(old) = st.pods.get(&netns_cookie, 0) {
            for key in old.ip_keys() {
                // Only if still ours: another pod may have taken the IP since.
                if st.pod_ips.get(&key, 0).ok() == Some(netns_cookie) {
                    remove_ignoring_missing(&mut st.pod_ips, &key, "mesh_pod_ips")?;
                }
            }
        }
        for kind in [ListenerKind::Outbound, ListenerKind::InboundPlaintext, ListenerKind::Hbone] {
            let key = ListenerKey { netns_cookie, kind: kind as u32, pad: 0 };
            match st.listeners.remove(&key) {
                Ok(()) => {}
                Err(e) if not_found(&e) => {}
                Err(e) => {
                    return Err(map_err("mesh_listeners", format!("remove {kind:?} of {netns_cookie}"))(e));
                }
            }
        }
        remove_ignoring_missing(&mut st.pods, &netns_cookie, "mesh_pods")?;
        bpffs::remove_tree(&self.layout.netns(netns_cookie))
    }

    /// Registered pods (after a restart, to reconcile).
    pub fn pods(&self) -> Result<Vec<(u64, PodConfig)>, EbpfError> {
        let st = self.state();
        st.pods
            .iter()
            .map(|r| r.map(|(k, v)| (k, v.to_config())).map_err(map_err("mesh_pods", "iterate")))
            .collect()
    }

    /// Per-reason counters (summed over CPUs), for metrics.
    pub fn counters(&self) -> Result<Vec<(Reason, u64)>, EbpfError> {
        let st = self.state();
        Reason::ALL
            .iter()
            .map(|r| {
                let values = st.counters.get(&(*r as u32), 0).map_err(map_err("mesh_counters", r.name()))?;
                Ok((*r, values.iter().sum()))
            })
            .collect()
    }

    /// Detaches everything and removes pin_dir (ztunnel uninstall / lab down). Links detach
    /// when their pins go; a missing pin_dir is fine.
    pub fn remove_all(pin_dir: &Path) -> Result<(), EbpfError> {
        if !programs::pinned(pin_dir) {
            return Ok(());
        }
        bpffs::check_bpffs(pin_dir)?;
        let layout = Layout { root: pin_dir.into() };
        // A netlink tc filter (the fallback on kernels without TCX) is not pinned and outlives
        // the pins, holding the maps: with no pod addresses left it lets everything pass.
        if let Ok(mut ips) = open_map(&layout, "mesh_pod_ips", Map::HashMap).and_then(|m| {
            HashMap::<MapData, IpKey, u64>::try_from(m).map_err(map_err("mesh_pod_ips", "type"))
        }) {
            let keys: Vec<IpKey> = ips.keys().filter_map(Result::ok).collect();
            for key in keys {
                remove_ignoring_missing(&mut ips, &key, "mesh_pod_ips")?;
            }
        }
        // Links first (detach), then programs and maps.
        bpffs::remove_tree(&layout.netns_root())?;
        bpffs::remove_tree(&layout.links())?;
        bpffs::remove_tree(pin_dir)
    }
}

// ztunnel shares one Capture between tasks.
const _: fn() = || {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Capture>();
};

fn remove_ignoring_missing<K: aya::Pod, V: aya::Pod>(
    map: &mut HashMap<MapData, K, V>,
    key: &K,
    name: &'static str,
) -> Result<(), EbpfError> {
    match map.remove(key) {
        Ok(()) => Ok(()),
        Err(e) if not_found(&e) => Ok(()),
        Err(e) => Err(map_err(name, "remove")(e)),
    }
}

fn attach_sk_lookup(prog: &mut SkLookup, ns: BorrowedFd<'_>, pin: &Path) -> Result<(), EbpfError> {
    let step = |step: &'static str| {
        move |source| EbpfError::Program { program: "mesh_sk_lookup", step, source: Box::new(source) }
    };
    let id = prog.attach(ns.as_fd()).map_err(step("attach to netns"))?;
    let link = prog.take_link(id).map_err(step("take link"))?;
    let fd: FdLink = link.into();
    fd.pin(pin).map_err(|source| EbpfError::Pin { what: "sk_lookup link", path: pin.into(), source })?;
    Ok(())
}

/// Runs on a thread inside the pod netns.
fn attach_tc_here(prog: &mut SchedClassifier, dir: &Path) -> io::Result<Result<(), EbpfError>> {
    let mut names = Vec::new();
    // SAFETY: if_nameindex returns a NULL-terminated array we free with if_freenameindex.
    unsafe {
        let list = libc::if_nameindex();
        if list.is_null() {
            return Err(io::Error::last_os_error());
        }
        let mut cur = list;
        while (*cur).if_index != 0 {
            names.push(std::ffi::CStr::from_ptr((*cur).if_name).to_string_lossy().into_owned());
            cur = cur.add(1);
        }
        libc::if_freenameindex(list);
    }
    let step = |step: &'static str| {
        move |source| EbpfError::Program { program: "mesh_tc_ingress", step, source: Box::new(source) }
    };
    for name in names.iter().filter(|n| n.as_str() != "lo") {
        let id = match prog.attach(name, TcAttachType::Ingress) {
            Ok(id) => id,
            Err(_) => {
                // netlink mode needs the clsact qdisc first
                let _ = aya::programs::tc::qdisc_add_clsact(name);
                match prog.attach(name, TcAttachType::Ingress) {
                    Ok(id) => id,
                    Err(e) => return Ok(Err(step("attach ingress")(e))),
                }
            }
        };
        let link = match prog.take_link(id) {
            Ok(l) => l,
            Err(e) => return Ok(Err(step("take link")(e))),
        };
        match FdLink::try_from(link) {
            Ok(fd) => {
                let pin = dir.join(format!("tc_{name}"));
                if let Err(source) = fd.pin(&pin) {
                    return Ok(Err(EbpfError::Pin { what: "tc link", path: pin, source }));
                }
            }
            // A netlink filter: keep it attached (dropping the link would detach it).
            Err(_) => tracing::warn!(interface = %name, "tc ingress attached via netlink, not pinned"),
        }
    }
    Ok(Ok(()))
}
