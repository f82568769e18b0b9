//! Drives `meshctl lab` for tests: finds the built binaries, serialises labs with a lock
//! (netns, cgroup and pin names are machine-wide), runs commands inside pods, and always
//! takes the lab down again.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use anyhow::{Context, bail};
use serde_json::Value;

/// Lock shared with every other user of the lab on this machine.
pub const LOCK_PATH: &str = "/run/meshlab.lock";

/// The folder with `meshctl`, `ztunnel`, `mesh-ca` and `mesh-probe`: `MESH_BIN_DIR`, else the
/// profile folder this test binary was built into (`target/<profile>/deps/..`).
pub fn bin_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("MESH_BIN_DIR") {
        return PathBuf::from(d);
    }
    let exe = std::env::current_exe().expect("current_exe");
    let deps = exe.parent().expect("test binary folder");
    let dir = if deps.ends_with("deps") { deps.parent().expect("profile folder") } else { deps };
    dir.to_path_buf()
}

/// Fails (does not skip) when a prerequisite of the lab is missing.
pub fn require_prerequisites() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "the lab tests need root (netns, cgroups, eBPF); CI runs as root"
    );
    let dir = bin_dir();
    for b in ["meshctl", "ztunnel", "mesh-ca", "mesh-probe"] {
        assert!(
            dir.join(b).is_file(),
            "{} is missing: build the binaries first (`cargo build --workspace --bins`, as scripts/test does)",
            dir.join(b).display()
        );
    }
}

/// An exclusive `flock` on [`LOCK_PATH`], held while the value lives.
#[derive(Debug)]
pub struct LabLock(#[allow(dead_code, reason = "holds the flock until dropped")] File);

impl LabLock {
    pub fn acquire() -> LabLock {
        let f =
            File::options().create(true).write(true).truncate(false).open(LOCK_PATH).expect("open lab lock");
        // SAFETY: flock on our own open file.
        let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) };
        assert_eq!(rc, 0, "flock {LOCK_PATH}: {}", std::io::Error::last_os_error());
        LabLock(f)
    }
}

/// A lab that is up; dropping it runs `lab down`.
#[derive(Debug)]
pub struct Lab {
    _lock: LabLock,
    pub state_dir: PathBuf,
    is_down: bool,
}

/// `meshctl ARGS...` with the lab's binaries.
pub fn meshctl(args: &[&str]) -> Command {
    let mut c = Command::new(bin_dir().join("meshctl"));
    c.args(args).env("MESHLAB_BIN_DIR", bin_dir());
    c
}

fn run(mut c: Command) -> anyhow::Result<Output> {
    let out = c.output().with_context(|| format!("running {c:?}"))?;
    Ok(out)
}

impl Lab {
    /// Takes the lock, clears leftovers of a crashed lab, and brings a lab up from `paths`.
    pub fn up(paths: &[&Path], extra: &[&str]) -> anyhow::Result<Lab> {
        require_prerequisites();
        let lock = LabLock::acquire();
        let down = run(meshctl(&["lab", "down"]))?;
        if !down.status.success() {
            bail!("lab down (cleanup before up) failed: {}", String::from_utf8_lossy(&down.stderr));
        }
        let mut args = vec!["lab", "up"];
        args.extend(extra);
        let shown: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
        args.extend(shown.iter().map(String::as_str));
        let out = run(meshctl(&args))?;
        if !out.status.success() {
            bail!(
                "lab up failed ({}):\n{}\n{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let state_dir =
            std::env::var_os("MESHLAB_STATE_DIR").map(PathBuf::from).unwrap_or_else(|| "/run/meshlab".into());
        Ok(Lab { _lock: lock, state_dir, is_down: false })
    }

    /// `lab exec POD -- ARGS...`.
    pub fn exec(&self, pod: &str, args: &[&str]) -> anyhow::Result<Output> {
        let mut a = vec!["lab", "exec", pod, "--"];
        a.extend(args);
        run(meshctl(&a))
    }

    /// Runs `mesh-probe ADDR ARGS...` in `pod`; returns its JSON report.
    pub fn probe(&self, pod: &str, addr: &str, args: &[&str]) -> Value {
        self.probe_args(pod, &[&[addr][..], args].concat())
    }

    /// Runs `mesh-probe ARGS...` in `pod` (e.g. `throughput ADDR 5`); returns its JSON report.
    pub fn probe_args(&self, pod: &str, args: &[&str]) -> Value {
        let probe = bin_dir().join("mesh-probe");
        let probe = probe.to_str().expect("utf-8 path");
        let mut a = vec![probe];
        a.extend(args);
        let out = self.exec(pod, &a).expect("lab exec");
        let stdout = String::from_utf8_lossy(&out.stdout);
        serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
            panic!(
                "probe {args:?} in {pod}: not JSON ({e}): {stdout}\nstderr: {}",
                String::from_utf8_lossy(&out.stderr)
            )
        })
    }

    /// The pid of `node`'s ztunnel, from the lab's state file (the latest one started).
    pub fn ztunnel_pid(&self, node: &str) -> Option<i32> {
        let text = std::fs::read_to_string(self.state_dir.join("lab.json")).ok()?;
        let state: Value = serde_json::from_str(&text).ok()?;
        state["resources"]
            .as_array()?
            .iter()
            .rev()
            .find(|r| r["kind"] == "process" && r["role"] == "ztunnel" && r["name"] == node)
            .and_then(|r| r["pid"].as_i64())
            .map(|p| p as i32)
    }

    /// `lab restart ztunnel NODE`: starts node's ztunnel again and waits until it is ready.
    pub fn restart_ztunnel(&self, node: &str) -> anyhow::Result<()> {
        let out = run(meshctl(&["lab", "restart", "ztunnel", node]))?;
        if !out.status.success() {
            bail!("lab restart ztunnel {node}: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(())
    }

    /// `GET path` on `127.0.0.1:port` inside `node`'s netns (ztunnel's admin 15000, metrics
    /// 15020): the body, from a thread that enters the netns.
    pub fn node_get(&self, node: &str, port: u16, path: &str) -> anyhow::Result<String> {
        netns_get(&format!("mlab-n-{node}"), port, path)
    }

    /// `GET path` on `127.0.0.1:port` inside pod `ns/name`'s netns (a waypoint's admin or
    /// metrics; the pod must not be captured, as the request does not join its cgroup).
    pub fn pod_get(&self, ns: &str, name: &str, port: u16, path: &str) -> anyhow::Result<String> {
        netns_get(&format!("mlab-p-{ns}.{name}"), port, path)
    }

    /// `lab apply -f FILE`.
    pub fn apply(&self, file: &Path) -> anyhow::Result<Output> {
        run(meshctl(&["lab", "apply", "-f", file.to_str().expect("utf-8 path")]))
    }

    /// `lab logs POD`.
    pub fn logs(&self, pod: &str) -> String {
        let out = run(meshctl(&["lab", "logs", pod])).expect("lab logs");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `lab status` output.
    pub fn status(&self) -> String {
        let out = run(meshctl(&["lab", "status"])).expect("lab status");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Takes the lab down now and returns `lab down`'s output (the lock is kept until drop).
    pub fn down(&mut self) -> anyhow::Result<Output> {
        self.is_down = true;
        run(meshctl(&["lab", "down"]))
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if !self.is_down {
            let _ = run(meshctl(&["lab", "down"]));
        }
    }
}

/// Where cgroup v2 is mounted (`/sys/fs/cgroup` or `/sys/fs/cgroup/unified`).
pub fn cgroup2_mount() -> PathBuf {
    let mi = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    mi.lines()
        .find_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            let is_cg2 = post.split_whitespace().next()? == "cgroup2";
            if is_cg2 { Some(PathBuf::from(pre.split_whitespace().nth(4)?)) } else { None }
        })
        .expect("cgroup v2 is not mounted")
}

/// `GET path` (HTTP/1.0, so the body is not chunked) on `127.0.0.1:port` inside the named
/// netns, from a thread that enters it.
fn netns_get(name: &str, port: u16, path: &str) -> anyhow::Result<String> {
    let netns = format!("/var/run/netns/{name}");
    let path = path.to_string();
    std::thread::spawn(move || -> anyhow::Result<String> {
        use std::io::{Read, Write};
        let f = File::open(&netns).with_context(|| format!("open {netns}"))?;
        // SAFETY: this thread only makes this request; setns changes only it.
        if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            bail!("setns {netns}: {}", std::io::Error::last_os_error());
        }
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
        write!(s, "GET {path} HTTP/1.0\r\nhost: localhost\r\n\r\n")?;
        let mut text = String::new();
        s.read_to_string(&mut text)?;
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let status = head.split_whitespace().nth(1).unwrap_or("");
        if status != "200" {
            bail!("GET {path} in {netns}: {}", head.lines().next().unwrap_or(""));
        }
        Ok(body.to_string())
    })
    .join()
    .map_err(|_| anyhow::anyhow!("request thread panicked"))?
}
