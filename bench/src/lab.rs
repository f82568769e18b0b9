//! The harness's view of the lab: the topology in `bench/data/lab.yaml`, the scenarios it
//! holds, commands run inside its pods, and the mesh processes measured from /proc.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use mesh_e2e::lab::Lab;
use serde_json::Value;

/// Which mesh or peer processes a scenario's requests pass through (measured from /proc).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OnPath {
    /// Nothing but the kernel.
    Nothing,
    /// Both nodes' ztunnels.
    Ztunnels,
    /// Both ztunnels and the waypoint of this namespace.
    ZtunnelsAndWaypoint(&'static str),
    /// The waypoint of this namespace alone (its plaintext listener).
    Waypoint(&'static str),
    /// A peer proxy's process.
    Pid(String, i32),
}

/// One client→server path of the topology.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// Name in the report.
    pub name: &'static str,
    /// What the path is, for the report.
    pub about: &'static str,
    /// The client pod (`namespace/name`), on node-a.
    pub client: &'static str,
    /// Where the client sends HTTP/1.1: the pod for direct and L4, the Service VIP for L7 (a
    /// waypoint serves a Service's traffic, not traffic to a pod address), the proxy for peers.
    pub h1_target: String,
    /// Where the client sends h2c.
    pub h2_target: String,
    /// The Host header.
    pub host: &'static str,
    /// The server pod and its address when raw TCP (iperf3, connection rate) is measured.
    pub raw_tcp: Option<(&'static str, &'static str)>,
    /// What the requests pass through.
    pub on_path: OnPath,
}

/// The mesh scenarios of `bench/data/lab.yaml`, in report order.
pub fn mesh_scenarios() -> Vec<Scenario> {
    let s = |name, about, client, target: &str, host, raw_tcp, on_path| Scenario {
        name,
        about,
        client,
        h1_target: target.to_string(),
        h2_target: target.to_string(),
        host,
        raw_tcp,
        on_path,
    };
    vec![
        s(
            "direct",
            "no mesh: pod to pod across the nodes",
            "direct/client",
            "10.244.2.50:8080",
            "server.direct",
            Some(("direct/server", "10.244.2.50")),
            OnPath::Nothing,
        ),
        s(
            "l4",
            "ambient: eBPF capture, ztunnel on both nodes, HBONE (mTLS) between them",
            "l4/client",
            "10.244.2.60:8080",
            "server.l4",
            Some(("l4/server", "10.244.2.60")),
            OnPath::Ztunnels,
        ),
        // HTTP only: raw TCP between the l7 pods is addressed to the pod, which Istio's default
        // waypoint (`istio.io/waypoint-for: service`) does not take, so it would be l4 again.
        s(
            "l7",
            "ambient with the namespace's waypoint: client ztunnel → waypoint → server ztunnel",
            "l7/client",
            "10.96.0.70:80",
            "server.l7.svc.cluster.local",
            None,
            OnPath::ZtunnelsAndWaypoint("l7"),
        ),
    ]
}

/// The plain L7 hop through our waypoint's plaintext listener in namespace `peers`.
pub fn waypoint_peer(lab: &Lab) -> anyhow::Result<Scenario> {
    let ip = waypoint_ip(lab, "peers")?;
    Ok(Scenario {
        name: "waypoint",
        about: "no mesh, one L7 hop: our waypoint's plaintext listener with the VirtualService's routes",
        client: "peers/client",
        h1_target: format!("{ip}:8080"),
        h2_target: format!("{ip}:8080"),
        host: "server.peers.svc.cluster.local",
        raw_tcp: None,
        on_path: OnPath::Waypoint("peers"),
    })
}

/// The plain L7 hop through a running peer proxy.
pub fn peer_scenario(p: &crate::peers::Running) -> Scenario {
    let (name, about) = match p.peer {
        crate::peers::Peer::Envoy => ("envoy", "no mesh, one L7 hop: Envoy 1.40 with the same routes"),
        crate::peers::Peer::Nginx => {
            ("nginx", "no mesh, one L7 hop: nginx as a reverse proxy with the same routes")
        }
        crate::peers::Peer::Haproxy => ("haproxy", "no mesh, one L7 hop: haproxy with the same routes"),
    };
    Scenario {
        name,
        about,
        client: "peers/client",
        h1_target: format!("{}:8080", p.peer.ip()),
        h2_target: format!("{}:{}", p.peer.ip(), p.peer.h2_port()),
        host: "server.peers.svc.cluster.local",
        raw_tcp: None,
        on_path: OnPath::Pid(name.to_string(), p.pid),
    }
}

/// The address of namespace `ns`'s waypoint pod, from the lab's state file.
fn waypoint_ip(lab: &Lab, ns: &str) -> anyhow::Result<String> {
    let state = state(lab)?;
    state["pods"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["namespace"] == ns && p["waypoint"].is_string())
        .and_then(|p| p["ip"].as_str())
        .map(str::to_string)
        .with_context(|| format!("lab state: no waypoint pod with an address in namespace {ns}"))
}

fn state(lab: &Lab) -> anyhow::Result<Value> {
    let path = lab.state_dir.join("lab.json");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

/// The topology file.
pub fn topology() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("data/lab.yaml")
}

/// The lab, up with the topology (root; the lab's binaries from `MESH_BIN_DIR` or beside
/// this one). Dropping it takes the lab down.
pub fn up() -> anyhow::Result<Lab> {
    if std::env::var_os("MESH_BIN_DIR").is_none() {
        let here = std::env::current_exe().context("current_exe")?;
        let dir = here.parent().context("binary folder")?;
        // SAFETY: set before any thread of ours reads the environment.
        unsafe { std::env::set_var("MESH_BIN_DIR", dir) };
    }
    // Every process of the lab (ztunnels, waypoints, echo apps, peers) inherits this limit
    // through `meshctl lab up`/`exec`; none of them raises its own, and the 10,000-connection
    // phase needs ~10,000 descriptors in each process on the path.
    raise_nofile(LAB_NOFILE).context("raising RLIMIT_NOFILE for the lab")?;
    Lab::up(&[&topology()], &[])
}

/// Open files the lab's processes get (the soft and, when it is lower and we are root, the hard
/// RLIMIT_NOFILE): room for 10,000 connections on each side of a proxy.
pub const LAB_NOFILE: u64 = 65_536;

/// Raises this process's RLIMIT_NOFILE soft limit to `want`: to the hard limit when that is
/// lower, past it when we may (root: CAP_SYS_RESOURCE, up to `fs.nr_open`). Never lowers
/// either limit. Returns the soft limit now in force.
pub fn raise_nofile(want: u64) -> std::io::Result<u64> {
    let mut l = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        if l.rlim_cur >= want {
            return Ok(l.rlim_cur);
        }
        if l.rlim_max < want {
            // Refused without the capability; then the hard limit is as far as we go.
            let both = libc::rlimit { rlim_cur: want, rlim_max: want };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &both) == 0 {
                return Ok(want);
            }
        }
        let soft = libc::rlimit { rlim_cur: want.min(l.rlim_max), rlim_max: l.rlim_max };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &soft) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(soft.rlim_cur)
    }
}

/// Runs `args` inside `pod`; its stdout, or an error with both streams.
pub fn exec(lab: &Lab, pod: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = lab.exec(pod, args)?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!(
            "in pod {pod}: {} exited with {}:\n{stdout}\n{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(stdout)
}

/// A mesh process of the lab, measured from /proc.
#[derive(Debug, Clone)]
pub struct MeshProc {
    /// Name in the report: `ztunnel node-a`, `waypoint`.
    pub label: String,
    pub pid: i32,
}

/// The lab's ztunnels and waypoints, from its state file: `ztunnel node-a`, `ztunnel node-b`,
/// `waypoint l7`, `waypoint peers`.
pub fn mesh_procs(lab: &Lab) -> anyhow::Result<Vec<MeshProc>> {
    let state = state(lab)?;
    let mut out = Vec::new();
    for r in state["resources"].as_array().into_iter().flatten() {
        let (Some(role), Some(name), Some(pid)) = (r["role"].as_str(), r["name"].as_str(), r["pid"].as_i64())
        else {
            continue;
        };
        let label = match role {
            "ztunnel" => format!("ztunnel {name}"),
            "waypoint" => format!("waypoint {}", name.split('/').next().unwrap_or(name)),
            _ => continue,
        };
        // A restarted process is journaled again: the latest entry wins.
        out.retain(|p: &MeshProc| p.label != label);
        out.push(MeshProc { label, pid: pid as i32 });
    }
    for want in ["waypoint l7", "waypoint peers"] {
        if !out.iter().any(|p| p.label == want) {
            bail!("lab state: no {want} process; the topology's Gateways should have started them");
        }
    }
    Ok(out)
}

/// utime + stime of `pid` (seconds).
pub fn cpu_seconds(pid: i32) -> anyhow::Result<f64> {
    let path = format!("/proc/{pid}/stat");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    // Fields after the parenthesised command name, which may contain spaces.
    let rest = text.rsplit_once(')').map(|(_, r)| r).context("stat format")?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks =
        |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).with_context(|| format!("{path}: field"));
    // utime and stime are fields 14 and 15 of stat, 12 and 13 after the command name.
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Ok((ticks(11)? + ticks(12)?) / hz)
}

/// VmRSS of `pid` (MiB).
pub fn rss_mib(pid: i32) -> anyhow::Result<f64> {
    status_mib(pid, "VmRSS:")
}

/// The anonymous part of a process's resident memory (`RssAnon`), MiB: what is the process's
/// own, without the pages of its binary and libraries mapped from the page cache, which
/// processes running the same binary share.
pub fn rss_anon_mib(pid: i32) -> anyhow::Result<f64> {
    status_mib(pid, "RssAnon:")
}

fn status_mib(pid: i32, field: &str) -> anyhow::Result<f64> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let kib = text
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<f64>().ok())
        .with_context(|| format!("{path}: no {field}"))?;
    Ok(kib / 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_cpu_and_rss_are_read() {
        let pid = std::process::id() as i32;
        let before = cpu_seconds(pid).unwrap();
        let mut x = 0u64;
        let t = std::time::Instant::now();
        while t.elapsed() < std::time::Duration::from_millis(100) {
            x = x.wrapping_add(std::hint::black_box(1));
        }
        assert!(x > 0);
        assert!(cpu_seconds(pid).unwrap() > before, "100 ms of spinning shows in utime");
        let rss = rss_mib(pid).unwrap();
        assert!(rss > 0.5 && rss < 4096.0, "{rss}");
        assert!(cpu_seconds(-1).is_err());
    }

    #[test]
    fn nofile_is_raised_never_lowered() {
        let now = raise_nofile(0).unwrap();
        assert!(now > 0);
        // Asking for less changes nothing; asking for what we have keeps it.
        assert_eq!(raise_nofile(1).unwrap(), now);
        let more = raise_nofile(now.saturating_add(1)).unwrap();
        assert!(more >= now, "{more} < {now}");
    }

    #[test]
    fn topology_names_the_scenarios_addresses() {
        let text = std::fs::read_to_string(topology()).unwrap();
        for s in mesh_scenarios() {
            let host = s.h1_target.split(':').next().unwrap();
            assert!(text.contains(host), "{host} missing from the topology");
            if let Some((_, ip)) = s.raw_tcp {
                assert!(text.contains(ip), "{ip} missing from the topology");
            }
        }
        for p in crate::peers::Peer::ALL {
            assert!(text.contains(p.ip()), "{} missing from the topology", p.ip());
        }
        assert!(text.contains(crate::peers::UPSTREAM.split(':').next().unwrap()));
    }
}
