//! Commands on a running lab: `status`, `exec`, `logs`, and `apply`/`delete` (hot changes of
//! the lab's objects: the model files are rewritten for the proxies to reload, pods that
//! appear get a netns and an app, pods that go away lose theirs).

use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::model::{self, LabPod};
use super::state::{self, LabState, Phase, Resource};
use super::sys;
use super::up::{self, Bins, Lab, Layout};
use super::{ExecArgs, LabError, LogsArgs};

fn load_up() -> Result<(PathBuf, LabState), LabError> {
    let dir = super::state_dir();
    match LabState::load(&dir)? {
        Some(st) => Ok((dir, st)),
        None => Err(LabError::NotUp { state: state::path(&dir) }),
    }
}

fn alive_text(pid: i32, start: u64) -> &'static str {
    if sys::alive(pid, start) { "running" } else { "DEAD" }
}

/// `lab status`.
pub fn status(out: &mut dyn Write) -> Result<(), LabError> {
    let (dir, st) = load_up()?;
    let procs: HashMap<(&str, &str), &state::Proc> =
        st.processes().map(|p| ((p.role.as_str(), p.name.as_str()), p)).collect();
    let _ = writeln!(
        out,
        "lab {} (state {}), capture {}, inputs {}",
        if st.phase == Phase::Up {
            "up"
        } else {
            "INCOMPLETE (lab up did not finish: run `meshctl lab down`)"
        },
        dir.display(),
        st.capture.as_str(),
        st.inputs.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(" ")
    );
    match procs.get(&("mesh-ca", "mesh-ca")) {
        Some(p) => {
            let _ = writeln!(
                out,
                "mesh-ca: pid {} {}, https://{}:{} in netns {}",
                p.pid,
                alive_text(p.pid, p.start_time),
                state::HUB_IP,
                up::CA_PORT,
                state::HUB_NETNS
            );
        }
        None => {
            let _ = writeln!(out, "mesh-ca: not started");
        }
    }
    let _ = writeln!(out, "nodes:");
    for n in &st.nodes {
        let zt = match procs.get(&("ztunnel", n.name.as_str())) {
            Some(p) if sys::alive(p.pid, p.start_time) => {
                let addr = SocketAddr::from((n.ip, up::READY_PORT));
                let ready = match sys::http_get_status(&n.netns, addr, "/healthz/ready") {
                    Ok(200) => "ready".to_string(),
                    Ok(c) => format!("NOT READY ({c})"),
                    Err(e) => format!("NOT READY ({e})"),
                };
                format!("ztunnel pid {} {ready}", p.pid)
            }
            Some(p) => format!("ztunnel pid {} DEAD", p.pid),
            None => "ztunnel not started".into(),
        };
        let pods = st.pods.iter().filter(|p| p.node == n.name && p.running).count();
        let _ = writeln!(out, "  {:<12} {:<12} netns {:<20} {pods} pods  {zt}", n.name, n.ip, n.netns);
    }
    let _ = writeln!(out, "pods:");
    for p in &st.pods {
        let ip = p.ip.map(|i| i.to_string()).unwrap_or_else(|| "-".into());
        let app = if !p.running {
            "not Running (no netns)".to_string()
        } else if p.ports.is_empty() {
            "no app (no containerPorts)".to_string()
        } else {
            match procs.get(&("echo", p.key().as_str())) {
                Some(pr) => format!(
                    "echo pid {} {} on {}",
                    pr.pid,
                    alive_text(pr.pid, pr.start_time),
                    p.ports.iter().map(u16::to_string).collect::<Vec<_>>().join(",")
                ),
                None => "echo not started".into(),
            }
        };
        let _ = writeln!(out, "  {:<40} {:<12} {:<14} {app}", p.key(), p.node, ip);
    }
    Ok(())
}

/// `lab exec POD -- CMD...`: returns the command's exit code.
pub fn exec(args: &ExecArgs) -> Result<u8, LabError> {
    super::require_root()?;
    let (_, st) = load_up()?;
    let pod = st.find_pod(&args.pod)?;
    if !pod.running {
        return Err(LabError::Pod { pod: pod.key(), reason: "not Running: it has no netns".into() });
    }
    let netns = state::pod_netns(&pod.namespace, &pod.name);
    let cgroup = up::pod_cgroup(&st.cgroup_root, pod);
    sys::exec_in_pod(&netns, &cgroup, &up::pod_etc(pod), &args.command)
}

/// `lab logs POD`.
pub fn logs(args: &LogsArgs, out: &mut dyn Write) -> Result<(), LabError> {
    let (dir, st) = load_up()?;
    let pod = st.find_pod(&args.pod)?;
    let path = Layout { dir }.pod_log(&pod.namespace, &pod.name);
    match std::fs::read(&path) {
        Ok(bytes) => {
            let _ = out.write_all(&bytes);
            let _ = out.flush();
            let mut at = bytes.len() as u64;
            if args.follow {
                loop {
                    std::thread::sleep(Duration::from_millis(200));
                    at += follow(&path, at, out)?;
                }
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(LabError::Pod {
            pod: pod.key(),
            reason: if pod.ports.is_empty() || !pod.running {
                "runs no app (not Running, or no containerPorts), so it has no log".into()
            } else {
                format!("no log at {}", path.display())
            },
        }),
        Err(source) => Err(LabError::Read { path, source }),
    }
}

/// Prints what was appended to `path` after `from`; returns how many bytes.
fn follow(path: &std::path::Path, from: u64, out: &mut dyn Write) -> Result<u64, LabError> {
    use std::io::{Read, Seek};
    let read = |source| LabError::Read { path: path.to_path_buf(), source };
    let mut f = std::fs::File::open(path).map_err(read)?;
    f.seek(std::io::SeekFrom::Start(from)).map_err(read)?;
    let mut buf = Vec::new();
    f.read_to_end(&mut buf).map_err(read)?;
    let _ = out.write_all(&buf);
    let _ = out.flush();
    Ok(buf.len() as u64)
}

/// `lab apply -f` (`delete` false) or `lab delete -f` (true).
pub fn apply(
    files: &[PathBuf],
    delete: bool,
    force: bool,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<(), LabError> {
    super::require_root()?;
    let t0 = Instant::now();
    let (dir, mut st) = load_up()?;
    if st.phase != Phase::Up {
        return Err(LabError::NotUp { state: state::path(&dir) });
    }
    if !delete {
        // Per-object problems of the new files, named by their files; cross-object checks run
        // below over the lab's whole input with these files merged in (the files alone may
        // reference Services already in the lab).
        for f in files {
            std::fs::metadata(f).map_err(|source| LabError::Read { path: f.clone(), source })?;
        }
        let loaded = mesh_model::load_paths(files);
        let errors: Vec<&mesh_api::Diagnostic> = loaded.diagnostics.iter().filter(|d| d.is_error()).collect();
        for d in &errors {
            let _ = writeln!(err, "{d}");
        }
        if !errors.is_empty() {
            return Err(LabError::Invalid { errors: errors.len() });
        }
    }
    let layout = Layout { dir: dir.clone() };
    let mut docs = up::load_inputs(&layout)?;
    let (mut added, mut changed, mut removed) = (0, 0, 0);
    for (origin, v) in model::read_documents(files)? {
        let key = model::doc_key(&v);
        match docs.iter().position(|(_, d)| model::doc_key(d) == key) {
            Some(i) if delete => {
                docs.remove(i);
                removed += 1;
            }
            Some(i) if docs[i].1 != v => {
                docs[i] = (origin, v);
                changed += 1;
            }
            Some(_) => {}
            None if !delete => {
                docs.push((origin, v));
                added += 1;
            }
            None => {
                let _ = writeln!(err, "warning: {origin}: {key} is not in the lab");
            }
        }
    }
    let m = model::build(&docs, &st.pods)?;
    let problems = model::analyze(&m, &layout.model());
    let errors = problems.iter().filter(|d| d.is_error()).count();
    for d in problems.iter().filter(|d| d.is_error()) {
        let _ = writeln!(err, "{}{d}", if force { "warning (--force): " } else { "" });
    }
    if errors > 0 && !force {
        return Err(LabError::Invalid { errors });
    }
    if let Some(n) = m.nodes.iter().find(|n| !st.nodes.iter().any(|x| &x.name == *n)) {
        return Err(LabError::Workload {
            object: files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>().join(" "),
            field: "spec.nodeName".into(),
            reason: format!("node {n} is not in the running lab; `lab down` and `lab up` to add nodes"),
        });
    }
    let same = |a: &LabPod, b: &LabPod| {
        a.key() == b.key() && a.ip == b.ip && a.node == b.node && a.running == b.running && a.ports == b.ports
    };
    let gone: Vec<LabPod> =
        st.pods.iter().filter(|p| p.running && !m.pods.iter().any(|q| same(p, q))).cloned().collect();
    let new: Vec<LabPod> =
        m.pods.iter().filter(|p| p.running && !st.pods.iter().any(|q| same(p, q))).cloned().collect();
    // Pods going away first (their names may come back with new settings).
    for p in &gone {
        remove_pod(&mut st, p, &dir);
    }
    let cg_root = st.cgroup_root.clone();
    let capture = st.capture;
    let mut lab = Lab {
        st: &mut st,
        layout: layout.clone(),
        m: &m,
        cg_root,
        bins: Bins::find()?,
        capture,
        timeout: Duration::from_secs(30),
        children: Vec::new(),
    };
    lab.pods(&new)?;
    let running: Vec<LabPod> = m.running().cloned().collect();
    lab.hosts_files(&running)?;
    // The model changes once the new pods' netns exist, so ztunnel finds them when it reloads.
    model::write(&layout.model(), &m).map_err(|source| LabError::Io {
        step: "writing the model".into(),
        path: layout.model(),
        source,
    })?;
    let apps = lab.apps(&new)?;
    lab.waypoints(&new)?;
    st.pods = m.pods.clone();
    st.save(&dir)?;
    up::save_inputs(&layout, &docs)?;
    let _ = writeln!(
        out,
        "lab {}: {added} added, {changed} changed, {removed} removed objects; pods: {} started ({apps} apps), {} stopped ({:.1}s)",
        if delete { "delete" } else { "apply" },
        new.len(),
        gone.len(),
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Stops a pod's app, removes its netns, routes on other nodes, hosts folder and cgroup, and
/// drops them from the journal.
fn remove_pod(st: &mut LabState, pod: &LabPod, dir: &std::path::Path) {
    let key = pod.key();
    let cg = up::pod_cgroup(&st.cgroup_root, pod);
    let mut pids: Vec<i32> = sys::cgroup_pids(&cg);
    pids.extend(
        st.processes()
            .filter(|p| p.role == "echo" && p.name == key && sys::alive(p.pid, p.start_time))
            .map(|p| p.pid),
    );
    for pid in &pids {
        sys::signal(*pid, libc::SIGKILL);
    }
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline && pids.iter().any(|p| sys::alive(*p, 0)) {
        std::thread::sleep(Duration::from_millis(20));
    }
    if let Some(ip) = pod.ip {
        for n in st.nodes.iter().filter(|n| n.name != pod.node) {
            let _ = sys::ip("removing a route", &["-n", &n.netns, "route", "del", &format!("{ip}/32")]);
        }
        let _ = sys::ip("removing a route", &["-n", state::HUB_NETNS, "route", "del", &format!("{ip}/32")]);
    }
    let netns = state::pod_netns(&pod.namespace, &pod.name);
    let _ = sys::ip("removing a pod netns", &["netns", "del", &netns]);
    let _ = std::fs::remove_dir_all(up::pod_etc(pod));
    let _ = std::fs::remove_dir(&cg);
    let veth = up::pod_veth(pod);
    let etc = up::pod_etc(pod);
    st.resources.retain(|r| match r {
        Resource::Netns { name } => *name != netns,
        Resource::Link { name, .. } => *name != veth,
        Resource::Cgroup { path } => *path != cg,
        Resource::Dir { path } => *path != etc,
        Resource::Process(p) => !(p.role == "echo" && p.name == key),
        Resource::PinDir { .. } => true,
    });
    let _ = st.save(dir);
}

/// `lab restart ztunnel NODE`: stops the node's ztunnel if it still runs (SIGTERM, then SIGKILL
/// after 3 s) and starts a new one with the same configuration, netns and cgroup.
pub fn restart_ztunnel(node: &str, out: &mut dyn Write) -> Result<(), LabError> {
    super::require_root()?;
    let t0 = Instant::now();
    let (dir, mut st) = load_up()?;
    if st.phase != Phase::Up {
        return Err(LabError::NotUp { state: state::path(&dir) });
    }
    let Some(n) = st.nodes.iter().find(|n| n.name == node).cloned() else {
        let known: Vec<&str> = st.nodes.iter().map(|n| n.name.as_str()).collect();
        return Err(LabError::Workload {
            object: format!("node {node}"),
            field: "NODE".into(),
            reason: format!("not a node of the lab (nodes: {})", known.join(", ")),
        });
    };
    let old = st.resources.iter().rev().find_map(|r| match r {
        Resource::Process(p) if p.role == "ztunnel" && p.name == node => Some((p.pid, p.start_time)),
        _ => None,
    });
    if let Some((pid, start)) = old.filter(|(pid, start)| *pid > 0 && sys::alive(*pid, *start)) {
        // SAFETY: signalling a process the lab started (start time checked against pid reuse).
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let t = Instant::now();
        while sys::alive(pid, start) && t.elapsed() < Duration::from_secs(3) {
            std::thread::sleep(Duration::from_millis(20));
        }
        if sys::alive(pid, start) {
            // SAFETY: as above.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
    let layout = Layout { dir: dir.clone() };
    let docs = up::load_inputs(&layout)?;
    let m = model::build(&docs, &st.pods)?;
    let (cg_root, capture) = (st.cgroup_root.clone(), st.capture);
    let mut lab = Lab {
        st: &mut st,
        layout,
        m: &m,
        cg_root,
        bins: Bins::find()?,
        capture,
        timeout: Duration::from_secs(30),
        children: Vec::new(),
    };
    lab.start_ztunnels(&[n])?;
    let _ = writeln!(out, "lab restart: ztunnel on {node} ready ({:.1}s)", t0.elapsed().as_secs_f64());
    Ok(())
}
