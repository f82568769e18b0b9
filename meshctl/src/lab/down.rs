//! `lab down` (and `lab up`'s rollback): removes everything a lab made, from its state file
//! and by sweeping the lab's names (`mlab-*` netns and /etc/netns folders, the `meshlab`
//! cgroup tree, `/sys/fs/bpf/meshlab`), so it also works after a crashed `lab up`. Idempotent.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::LabError;
use super::state::{self, LabState, Resource};
use super::sys;

/// `lab down`.
pub fn down(out: &mut dyn Write) -> Result<(), LabError> {
    super::require_root()?;
    let t = Instant::now();
    let dir = super::state_dir();
    let st = match LabState::load(&dir) {
        Ok(s) => s,
        Err(e) => {
            // A corrupt state file must not keep the lab alive: sweep by name.
            let _ = writeln!(out, "warning: {e}; sweeping by name");
            None
        }
    };
    let removed = teardown(st.as_ref(), &dir, out);
    let _ = writeln!(
        out,
        "lab down in {:.1}s: {}",
        t.elapsed().as_secs_f64(),
        if removed == 0 { "nothing to remove".to_string() } else { format!("{removed} things removed") }
    );
    Ok(())
}

/// Removes what `st` recorded plus whatever carries the lab's names; prints a line per kind
/// of thing removed. Returns how many things were removed.
pub fn teardown(st: Option<&LabState>, dir: &Path, out: &mut dyn Write) -> usize {
    let cg_root = st
        .map(|s| s.cgroup_root.clone())
        .or_else(|| sys::cgroup2_root().ok().map(|r| r.join("meshlab")))
        .unwrap_or_default();
    let mut total = 0;

    // 1. Processes: the recorded ones (if still the same process), and anything in the lab's
    // cgroups (started by a crashed `lab up` before it recorded the pid, or by `lab exec`).
    let mut pids: Vec<(i32, String)> = Vec::new();
    for p in st.into_iter().flat_map(LabState::processes) {
        if sys::alive(p.pid, p.start_time) {
            pids.push((p.pid, format!("{} {} (pid {})", p.role, p.name, p.pid)));
        }
    }
    for pid in sys::cgroup_pids(&cg_root) {
        if !pids.iter().any(|(p, _)| *p == pid) {
            pids.push((pid, format!("pid {pid}")));
        }
    }
    report(out, &mut total, "processes", stop(&pids, &cg_root));

    // 2. bpffs pins (after the proxies are gone).
    let mut pins: Vec<PathBuf> = vec![PathBuf::from(state::PIN_ROOT)];
    for r in st.into_iter().flat_map(|s| s.resources.iter()) {
        if let Resource::PinDir { path } = r
            && !pins.contains(path)
        {
            pins.push(path.clone());
        }
    }
    let mut gone = Vec::new();
    for p in pins {
        if p.exists() && std::fs::remove_dir_all(&p).is_ok() {
            gone.push(p.display().to_string());
        } else if p.exists() {
            let _ = writeln!(out, "  warning: cannot remove {}", p.display());
        }
    }
    report(out, &mut total, "bpffs pin folders", gone);

    // 3. Network namespaces: pods first, then nodes, then the hub. Their veths go with them.
    let mut links: Vec<String> = Vec::new();
    for r in st.into_iter().flat_map(|s| s.resources.iter()) {
        if let Resource::Link { netns, name } = r
            && sys::netns_path(netns).exists()
        {
            links.push(format!("{netns}:{name}"));
        }
    }
    let mut names: Vec<String> = sys::netns_list(state::NETNS_PREFIX);
    for r in st.into_iter().flat_map(|s| s.resources.iter()) {
        if let Resource::Netns { name } = r
            && sys::netns_path(name).exists()
            && !names.contains(name)
        {
            names.push(name.clone());
        }
    }
    names.sort_by_key(|n| {
        (
            if n.starts_with("mlab-p-") {
                0
            } else if n.starts_with("mlab-n-") {
                1
            } else {
                2
            },
            n.clone(),
        )
    });
    let mut gone = Vec::new();
    for n in names {
        match sys::ip("deleting netns", &["netns", "del", &n]) {
            Ok(()) => gone.push(n),
            Err(e) => {
                let _ = writeln!(out, "  warning: {e}");
            }
        }
    }
    report(out, &mut total, "netns", gone);
    report(out, &mut total, "links (with their netns)", links);

    // 4. /etc/netns/mlab-* (hosts files).
    let mut gone = Vec::new();
    for e in std::fs::read_dir("/etc/netns").into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if name.starts_with(state::NETNS_PREFIX) && std::fs::remove_dir_all(e.path()).is_ok() {
            gone.push(e.path().display().to_string());
        }
    }
    report(out, &mut total, "/etc/netns folders", gone);

    // 5. cgroups, children first (a process may take a moment to leave after SIGKILL).
    let mut gone = Vec::new();
    let mut left = Vec::new();
    for cg in sys::cgroup_tree(&cg_root) {
        let mut tries = 0;
        loop {
            match std::fs::remove_dir(&cg) {
                Ok(()) => {
                    let base = cg_root.parent().unwrap_or(Path::new("/"));
                    gone.push(cg.strip_prefix(base).unwrap_or(&cg).display().to_string());
                    break;
                }
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) && tries < 40 => {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => {
                    left.push(format!("{}: {e}", cg.display()));
                    break;
                }
            }
        }
    }
    report(out, &mut total, "cgroups", gone);
    for l in left {
        let _ = writeln!(out, "  warning: cannot remove cgroup {l}");
    }

    // 6. The state folder's files (only those the lab writes: the folder may be the user's).
    let mut gone = Vec::new();
    for name in ["model", "config", "ca", "logs"] {
        let p = dir.join(name);
        if p.exists() && std::fs::remove_dir_all(&p).is_ok() {
            gone.push(name.to_string());
        }
    }
    for name in [state::STATE_FILE, ".lab.json.tmp", "inputs.json"] {
        if std::fs::remove_file(dir.join(name)).is_ok() {
            gone.push(name.to_string());
        }
    }
    if !gone.is_empty() && std::fs::remove_dir(dir).is_ok() {
        gone.push(format!("{}/", dir.display()));
    }
    report(out, &mut total, "state files", gone);
    total
}

/// SIGTERM, a short wait, then SIGKILL (and `cgroup.kill` on the lab's root for anything
/// that escaped the list). Returns what was stopped.
fn stop(pids: &[(i32, String)], cg_root: &Path) -> Vec<String> {
    for (pid, _) in pids {
        sys::signal(*pid, libc::SIGTERM);
    }
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline && pids.iter().any(|(p, _)| sys::alive(*p, 0)) {
        std::thread::sleep(Duration::from_millis(50));
    }
    for (pid, _) in pids {
        if sys::alive(*pid, 0) {
            sys::signal(*pid, libc::SIGKILL);
        }
    }
    if cg_root.is_dir() {
        let _ = std::fs::write(cg_root.join("cgroup.kill"), "1");
    }
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline
        && (pids.iter().any(|(p, _)| sys::alive(*p, 0)) || !sys::cgroup_pids(cg_root).is_empty())
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    pids.iter().map(|(_, what)| what.clone()).collect()
}

fn report(out: &mut dyn Write, total: &mut usize, what: &str, names: Vec<String>) {
    if !names.is_empty() {
        let _ = writeln!(out, "  removed {} {what}: {}", names.len(), names.join(", "));
        *total += names.len();
    }
}
