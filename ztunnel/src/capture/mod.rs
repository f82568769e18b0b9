//! In-pod eBPF capture (`capture.mode: ebpf`). Owns, for each local captured pod: its network
//! namespace (found from `capture.netnsPath`), the outbound (15001), inbound plaintext (15006)
//! and HBONE (15008) listeners opened inside it, the reserved ports and the policy-routing rule
//! that lets inbound delivery keep the client's address, and the pod's registration with the
//! eBPF programs (netns cookie, listeners). Also makes the sockets ztunnel connects from
//! inside a pod, so peers see the pod's own address.
//!
//! Netns discovery (`capture.netnsPath`): a path template (`{namespace}`, `{name}`, `{uid}`;
//! the lab's is `/var/run/netns/mlab-p-{namespace}.{name}`), or `proc:` — on Kubernetes —
//! which scans `/proc/*/cgroup` for a process whose cgroup path carries the pod UID (the
//! kubelet names pod cgroups `...pod<uid>...`, with `-` or `_`) and opens its
//! `/proc/<pid>/ns/net`; or `kube:` (optionally `kube:<cgroup v2 root>`), which finds the
//! pod's cgroup from its UID under the systemd or cgroupfs driver's layout and takes a process
//! of it ([`discover`]), waiting briefly for a sandbox that is not there yet.

pub mod discover;
pub mod netns;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use mesh_ebpf::{ListenerKind, PodConfig, PodFlags};
use mesh_model::Workload;
use tokio::net::{TcpListener, TcpStream};

use crate::config::CaptureConfig;
pub use netns::{NetnsFd, NetnsRunner};

/// Ports of the in-pod listeners (fixed: the programs know them).
pub const OUTBOUND_PORT: u16 = 15001;
pub const PLAINTEXT_PORT: u16 = 15006;
pub const HBONE_PORT: u16 = 15008;

/// Routing table and mark offset for inbound delivery that keeps the client's address: the
/// app's replies to a foreign source carry this mark (`tcp_fwmark_accept`) and are routed back
/// to ztunnel's transparent socket through `local 0.0.0.0/0 dev lo`.
const DELIVERY_TABLE: &str = "15006";

/// Why a pod could not be captured (or released).
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("loading the eBPF capture programs: {0}")]
    Load(#[source] mesh_ebpf::EbpfError),
    #[error("pod {pod}: opening its network namespace {path}: {source}")]
    Netns {
        pod: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("pod {pod}: {step}: {source}")]
    Setup {
        pod: String,
        step: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("pod {pod}: registering with the eBPF programs: {source}")]
    Ebpf {
        pod: String,
        #[source]
        source: mesh_ebpf::EbpfError,
    },
    #[error("cannot start the netns thread: {0}")]
    Thread(#[source] std::io::Error),
    #[error("pod {pod}: finding its network namespace: {source}")]
    Discover {
        pod: String,
        #[source]
        source: discover::DiscoverError,
    },
}

/// A captured pod's namespace as ztunnel holds it.
#[derive(Debug)]
pub struct PodNetns {
    /// `namespace/name`, for logs.
    pub pod: String,
    pub netns: NetnsFd,
    pub cookie: u64,
}

/// The listeners opened inside a pod.
#[derive(Debug)]
pub struct PodListeners {
    pub outbound: TcpListener,
    pub plaintext: TcpListener,
    pub hbone: TcpListener,
}

/// The capture state shared by every connection.
#[derive(Debug)]
pub struct Capture {
    config: CaptureConfig,
    ebpf: mesh_ebpf::Capture,
    runner: NetnsRunner,
    /// cgroup v2 root searched for pod cgroups (`netnsPath: kube:`).
    kube_root: Option<PathBuf>,
    /// Local captured pods by address.
    pods: RwLock<HashMap<IpAddr, Arc<PodNetns>>>,
}

/// Hands the heap's free pages back to the kernel. Loading the programs parses their object
/// file and the kernel's BTF (megabytes, freed at once); glibc keeps such memory in the heap,
/// so a first start held ~2.3 MiB more resident memory than a restart for nothing (issue 7).
fn release_freed_heap() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only walks glibc's own arenas; no pointer of ours is involved.
    unsafe {
        libc::malloc_trim(0);
    }
}

impl Capture {
    /// Loads (or re-opens, after a restart) the programs and starts the netns thread.
    pub fn start(config: &CaptureConfig) -> Result<Capture, CaptureError> {
        let proxy_cgroup = own_cgroup().map_err(|source| CaptureError::Setup {
            pod: "-".into(),
            step: "finding ztunnel's own cgroup v2",
            source,
        })?;
        let ebpf = mesh_ebpf::Capture::open(mesh_ebpf::CaptureOptions {
            pin_dir: config.bpf_pin_dir.clone(),
            pods_cgroup: config.pods_cgroup.clone(),
            proxy_cgroup,
            proxy_mark: config.mark,
            force_tc_fallback: false,
        })
        .map_err(CaptureError::Load)?;
        release_freed_heap();
        let runner = NetnsRunner::start().map_err(CaptureError::Thread)?;
        let kube_root = if config.netns_path.starts_with("kube:") {
            Some(discover::root_from_spec(&config.netns_path).map_err(|source| CaptureError::Setup {
                pod: "-".into(),
                step: "finding the cgroup v2 root for pod discovery",
                source,
            })?)
        } else {
            None
        };
        Ok(Capture { config: config.clone(), ebpf, runner, kube_root, pods: RwLock::default() })
    }

    /// How pods' inbound is steered: `sk_lookup`, or `tc` when the kernel refused sk_lookup
    /// (Linux < 5.17); in `/config_dump` and the `ztunnel_capture_inbound` metric.
    pub fn inbound(&self) -> &'static str {
        self.ebpf.inbound().name()
    }

    /// The mark on ztunnel's sockets.
    pub fn mark(&self) -> u32 {
        self.config.mark
    }

    /// Mark of inbound-delivery sockets (routed back through the delivery table).
    fn delivery_mark(&self) -> u32 {
        self.config.mark.wrapping_add(1)
    }

    /// Where `w`'s network namespace is.
    fn netns_path(&self, w: &Workload) -> PathBuf {
        if self.config.netns_path == "proc:" {
            return proc_netns_of(&w.uid)
                .unwrap_or_else(|| PathBuf::from(format!("<no process of pod uid {}>", w.uid)));
        }
        PathBuf::from(
            self.config
                .netns_path
                .replace("{namespace}", &w.namespace)
                .replace("{name}", &w.name)
                .replace("{uid}", &w.uid),
        )
    }

    /// Captures a pod: enters its netns, opens and registers its listeners. Idempotent for
    /// the eBPF side (a restarted ztunnel re-registers the same pod).
    pub async fn add_pod(&self, w: &Workload) -> Result<PodListeners, CaptureError> {
        let pod = format!("{}/{}", w.namespace, w.name);
        let path = match &self.kube_root {
            // A sandbox still starting is waited for briefly; the workload loop retries later.
            Some(root) => discover::wait_for_netns(root, &w.uid, DISCOVER_FIRST_RETRY, DISCOVER_WAIT)
                .await
                .map_err(|source| CaptureError::Discover { pod: pod.clone(), source })?,
            None => self.netns_path(w),
        };
        let netns = netns::open_netns(&path).map_err(|source| CaptureError::Netns {
            pod: pod.clone(),
            path: path.clone(),
            source,
        })?;
        let setup = |step: &'static str| {
            let pod = pod.clone();
            move |source| CaptureError::Setup { pod, step, source }
        };
        let mark = self.config.mark;
        let v6 = w.ips.iter().any(|ip| ip.is_ipv6());
        let v4 = w.ips.iter().any(|ip| ip.is_ipv4());
        let delivery_mark = self.delivery_mark();
        let proc_root = self.config.proc_path.clone();
        let (outbound, plaintext, hbone) = self
            .runner
            .run(&netns, move || {
                netns::reserve_ports(&proc_root, &[OUTBOUND_PORT, PLAINTEXT_PORT, HBONE_PORT])?;
                // Accepted sockets inherit the SYN's mark, so the app's replies to a
                // delivery socket bound to the client's address find their way back.
                netns::sysctl(&proc_root, "net/ipv4/tcp_fwmark_accept", "1")?;
                let any = if v6 && !v4 {
                    IpAddr::V6(Ipv6Addr::UNSPECIFIED)
                } else {
                    IpAddr::V4(Ipv4Addr::UNSPECIFIED)
                };
                let l = |port| netns::listener(SocketAddr::new(any, port), mark);
                Ok((l(OUTBOUND_PORT)?, l(PLAINTEXT_PORT)?, l(HBONE_PORT)?))
            })
            .await
            .map_err(setup("opening listeners 15001/15006/15008 inside the pod"))?;
        ensure_delivery_route(&netns, delivery_mark).map_err(setup("policy routing for inbound delivery"))?;

        let cfg = PodConfig {
            ipv4: w.ips.iter().find_map(|ip| match ip {
                IpAddr::V4(v) => Some(*v),
                IpAddr::V6(_) => None,
            }),
            ipv6: w.ips.iter().find_map(|ip| match ip {
                IpAddr::V6(v) => Some(*v),
                IpAddr::V4(_) => None,
            }),
            flags: if fail_open(w) { PodFlags::FAIL_OPEN } else { PodFlags::default() },
        };
        let ebpf_err = |source| CaptureError::Ebpf { pod: pod.clone(), source };
        let cookie = self.ebpf.add_pod(netns.as_fd(), &cfg).map_err(ebpf_err)?;
        self.ebpf.set_listener(cookie, ListenerKind::Outbound, outbound.as_fd()).map_err(ebpf_err)?;
        self.ebpf
            .set_listener(cookie, ListenerKind::InboundPlaintext, plaintext.as_fd())
            .map_err(ebpf_err)?;
        self.ebpf.set_listener(cookie, ListenerKind::Hbone, hbone.as_fd()).map_err(ebpf_err)?;

        let entry = Arc::new(PodNetns { pod: pod.clone(), netns, cookie });
        {
            let mut pods = self.pods.write().unwrap_or_else(|e| e.into_inner());
            for ip in w.ips.iter() {
                pods.insert(*ip, entry.clone());
            }
        }
        let to_tokio = |l: std::net::TcpListener| {
            l.set_nonblocking(true)?;
            TcpListener::from_std(l)
        };
        Ok(PodListeners {
            outbound: to_tokio(outbound).map_err(setup("handing listener 15001 to the runtime"))?,
            plaintext: to_tokio(plaintext).map_err(setup("handing listener 15006 to the runtime"))?,
            hbone: to_tokio(hbone).map_err(setup("handing listener 15008 to the runtime"))?,
        })
    }

    /// Releases a pod that left the node or the mesh: unregisters it from the programs and,
    /// in the background, undoes what was set inside its netns (reserved ports, mark
    /// acceptance, the delivery rule). Its open connections stay.
    pub fn remove_pod(&self, ips: &[IpAddr]) {
        let mut pods = self.pods.write().unwrap_or_else(|e| e.into_inner());
        let mut gone = None;
        for ip in ips {
            if let Some(p) = pods.remove(ip) {
                gone = Some(p);
            }
        }
        drop(pods);
        let Some(p) = gone else { return };
        if let Err(e) = self.ebpf.remove_pod(p.cookie) {
            tracing::warn!(pod = %p.pod, error = %e, "cannot unregister pod from the capture programs");
        }
        let proc_root = self.config.proc_path.clone();
        self.runner.run_detached(&p.netns, move || {
            let _ = netns::unreserve_ports(&proc_root, &[OUTBOUND_PORT, PLAINTEXT_PORT, HBONE_PORT]);
            let _ = netns::sysctl(&proc_root, "net/ipv4/tcp_fwmark_accept", "0");
        });
        let mark = self.delivery_mark();
        let pod = p.pod.clone();
        std::thread::spawn(move || {
            if let Err(e) = remove_delivery_route(&p.netns, mark) {
                // The pod (and its netns) may be gone already.
                tracing::debug!(%pod, error = %e, "removing the delivery rule");
            }
        });
    }

    /// Unregisters pods a previous ztunnel registered that are not local captured pods any
    /// more (they left while we were down).
    pub fn forget_others(&self, keep: &[u64]) {
        match self.ebpf.pods() {
            Ok(pods) => {
                for (cookie, _) in pods.into_iter().filter(|(c, _)| !keep.contains(c)) {
                    if let Err(e) = self.ebpf.remove_pod(cookie) {
                        tracing::warn!(cookie, error = %e, "cannot unregister a stale pod");
                    } else {
                        tracing::info!(cookie, "unregistered a pod that is no longer captured here");
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot list registered pods"),
        }
    }

    /// Cookies of the pods captured now.
    pub fn cookies(&self) -> Vec<u64> {
        let pods = self.pods.read().unwrap_or_else(|e| e.into_inner());
        let mut v: Vec<u64> = pods.values().map(|p| p.cookie).collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    /// The captured local pod with address `ip`.
    pub fn pod(&self, ip: IpAddr) -> Option<Arc<PodNetns>> {
        self.pods.read().unwrap_or_else(|e| e.into_inner()).get(&ip).cloned()
    }

    /// Connects to `addr` from inside `pod`'s netns (source: the pod's own address).
    pub async fn connect_from_pod(&self, pod: &PodNetns, addr: SocketAddr) -> std::io::Result<TcpStream> {
        let mark = self.config.mark;
        let v6 = addr.is_ipv6();
        let sock = self.runner.run(&pod.netns, move || netns::client_socket(v6, mark, None)).await?;
        let s = sock.connect(addr).await?;
        s.set_nodelay(true)?;
        Ok(s)
    }

    /// Delivers to the app at `addr` inside `pod`, from the original client's address when
    /// the families match (the app sees its real peer), else from the pod's own.
    pub async fn deliver(
        &self,
        pod: &PodNetns,
        client: IpAddr,
        addr: SocketAddr,
    ) -> std::io::Result<TcpStream> {
        let mark = self.delivery_mark();
        let v6 = addr.is_ipv6();
        let from =
            (client.is_ipv6() == v6 && !client.is_unspecified() && client != addr.ip()).then_some(client);
        let sock = self.runner.run(&pod.netns, move || netns::client_socket(v6, mark, from)).await?;
        let s = sock.connect(addr).await?;
        s.set_nodelay(true)?;
        Ok(s)
    }

    /// Skip/drop counters of the programs, by reason.
    pub fn counters(&self) -> Vec<(&'static str, u64)> {
        match self.ebpf.counters() {
            Ok(c) => c.into_iter().map(|(r, n)| (r.name(), n)).collect(),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read capture counters");
                Vec::new()
            }
        }
    }
}

/// First retry delay and overall wait of `kube:` discovery inside one `add_pod`.
const DISCOVER_FIRST_RETRY: std::time::Duration = std::time::Duration::from_millis(50);
const DISCOVER_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// `ztunnel.mesh/capture-fail-open: "true"` on the pod lets its traffic bypass the proxy
/// while ztunnel is down instead of failing closed.
fn fail_open(w: &Workload) -> bool {
    w.labels.get("ztunnel.mesh/capture-fail-open").is_some_and(|v| v == "true")
}

/// Inside the pod: marked delivery traffic (both ztunnel's SYN to the app and the app's
/// replies, which inherit the mark) is routed through `local 0.0.0.0/0 dev lo` (table 15006).
/// The rule goes before the `local` table (moved from priority 0 to 1) so that even packets to
/// the pod's own address resolve to `lo`: the steering program then sees them arrive on `lo`
/// and leaves them to the app instead of sending them back to 15006.
fn ensure_delivery_route(netns: &NetnsFd, mark: u32) -> std::io::Result<()> {
    let mark = mark.to_string();
    // Idempotent: a restarted ztunnel finds its rules in place.
    while netns::ip_in(netns, &["rule", "del", "fwmark", &mark, "lookup", DELIVERY_TABLE]).is_ok() {}
    while netns::ip_in(netns, &["rule", "del", "priority", "1", "lookup", "local"]).is_ok() {}
    netns::ip_in(netns, &["rule", "add", "priority", "1", "lookup", "local"])?;
    while netns::ip_in(netns, &["rule", "del", "priority", "0", "lookup", "local"]).is_ok() {}
    netns::ip_in(netns, &["rule", "add", "priority", "0", "fwmark", &mark, "lookup", DELIVERY_TABLE])?;
    netns::ip_in(netns, &["route", "replace", "local", "0.0.0.0/0", "dev", "lo", "table", DELIVERY_TABLE])
}

/// Undoes [`ensure_delivery_route`]: the `local` table back at priority 0. The mark's rule goes
/// last, so a netns without it is fully released (what observers key on).
fn remove_delivery_route(netns: &NetnsFd, mark: u32) -> std::io::Result<()> {
    let mark = mark.to_string();
    while netns::ip_in(netns, &["rule", "del", "priority", "0", "lookup", "local"]).is_ok() {}
    netns::ip_in(netns, &["rule", "add", "priority", "0", "lookup", "local"])?;
    while netns::ip_in(netns, &["rule", "del", "priority", "1", "lookup", "local"]).is_ok() {}
    while netns::ip_in(netns, &["rule", "del", "fwmark", &mark, "lookup", DELIVERY_TABLE]).is_ok() {}
    let _ = netns::ip_in(netns, &["route", "flush", "table", DELIVERY_TABLE]);
    Ok(())
}

/// `/proc/<pid>/ns/net` of a process in the pod with UID `uid` (its cgroup path names it).
fn proc_netns_of(uid: &str) -> Option<PathBuf> {
    if uid.is_empty() {
        return None;
    }
    let alt = uid.replace('-', "_");
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let name = e.file_name();
        let pid = name.to_str()?;
        if !pid.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let cg = std::fs::read_to_string(e.path().join("cgroup")).ok()?;
        (cg.contains(uid) || cg.contains(&alt)).then(|| e.path().join("ns/net"))
    })
}

/// ztunnel's own cgroup v2 folder (from `/proc/self/cgroup` and the cgroup2 mount).
pub fn own_cgroup() -> std::io::Result<PathBuf> {
    let cg = std::fs::read_to_string("/proc/self/cgroup")?;
    let rel = cg
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .ok_or_else(|| std::io::Error::other("no cgroup v2 entry in /proc/self/cgroup"))?;
    let mount = cgroup2_mount()?;
    Ok(mount.join(rel.trim_start_matches('/')))
}

/// Where cgroup v2 is mounted (`/sys/fs/cgroup`, or `/sys/fs/cgroup/unified` on hybrid hosts).
pub fn cgroup2_mount() -> std::io::Result<PathBuf> {
    let mi = std::fs::read_to_string("/proc/self/mountinfo")?;
    mi.lines()
        .find_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            let is_cg2 = post.split_whitespace().next()? == "cgroup2";
            if is_cg2 { Some(PathBuf::from(pre.split_whitespace().nth(4)?)) } else { None }
        })
        .ok_or_else(|| std::io::Error::other("cgroup v2 is not mounted (no cgroup2 in /proc/self/mountinfo)"))
}
