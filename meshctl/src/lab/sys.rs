//! Kernel plumbing for the lab: `ip` commands, running code inside a netns (one thread with
//! `setns`), per-netns sysctls, cgroup v2 discovery, bpffs mounting, and starting daemons in a
//! netns + cgroup (`pre_exec`: `setns`, `cgroup.procs`, `setsid`) rather than `ip netns exec`,
//! which remounts /sys and would hide bpffs and cgroupfs from ztunnel.

use std::ffi::CString;
use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::LabError;

/// Runs `ip ARGS`; a failure names the step, the command line and ip's message.
pub fn ip(step: &str, args: &[&str]) -> Result<(), LabError> {
    let out = Command::new("ip").args(args).stdin(Stdio::null()).output();
    let command = format!("ip {}", args.join(" "));
    match out {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => Err(LabError::Command {
            step: step.into(),
            command,
            reason: format!("{}: {}", o.status, String::from_utf8_lossy(&o.stderr).trim()),
        }),
        Err(e) => {
            Err(LabError::Command { step: step.into(), command, reason: format!("cannot run ip: {e}") })
        }
    }
}

/// The file of a named netns.
pub fn netns_path(name: &str) -> PathBuf {
    Path::new("/run/netns").join(name)
}

/// Names of the existing netns starting with `prefix`.
pub fn netns_list(prefix: &str) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir("/run/netns")
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with(prefix))
        .collect();
    v.sort();
    v
}

/// Runs `f` on a new thread that has joined the named netns (setns only affects the calling
/// thread); returns its result.
pub fn in_netns<T: Send>(netns: &str, f: impl FnOnce() -> std::io::Result<T> + Send) -> std::io::Result<T> {
    let file = File::open(netns_path(netns))?;
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: setns on an open netns fd; affects only this thread, which ends after f.
            if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(std::io::Error::last_os_error());
            }
            f()
        })
        .join()
        .unwrap_or_else(|_| Err(std::io::Error::other("netns thread panicked")))
    })
}

/// Sets sysctls (`net/ipv4/ip_forward` = `1` ...) in a netns: /proc/sys/net shows the netns
/// of the thread that opens it.
pub fn sysctls(step: &str, netns: &str, settings: &[(&str, &str)]) -> Result<(), LabError> {
    in_netns(netns, || {
        for (key, value) in settings {
            std::fs::write(Path::new("/proc/sys").join(key), value)
                .map_err(|e| std::io::Error::new(e.kind(), format!("{key}={value}: {e}")))?;
        }
        Ok(())
    })
    .map_err(|source| LabError::Io { step: step.into(), path: netns_path(netns), source })
}

/// The cgroup v2 mount point, from /proc/self/mountinfo (fstype `cgroup2`).
pub fn cgroup2_root() -> Result<PathBuf, LabError> {
    let text = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|source| LabError::Read { path: "/proc/self/mountinfo".into(), source })?;
    for line in text.lines() {
        let Some((left, right)) = line.split_once(" - ") else { continue };
        if right.split(' ').next() == Some("cgroup2")
            && let Some(mount) = left.split(' ').nth(4)
        {
            return Ok(PathBuf::from(mount.replace("\\040", " ")));
        }
    }
    Err(LabError::NoCgroup2)
}

/// Pids in a cgroup folder and all its descendants.
pub fn cgroup_pids(dir: &Path) -> Vec<i32> {
    let mut pids: Vec<i32> = std::fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            pids.extend(cgroup_pids(&e.path()));
        }
    }
    pids
}

/// Cgroup folders under `dir` (included), deepest first: the order rmdir needs.
pub fn cgroup_tree(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            out.extend(cgroup_tree(&e.path()));
        }
    }
    if dir.is_dir() {
        out.push(dir.to_path_buf());
    }
    out
}

const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// Mounts bpffs on /sys/fs/bpf unless it is one already.
pub fn ensure_bpffs() -> Result<(), LabError> {
    let p = CString::new("/sys/fs/bpf").unwrap_or_default();
    // SAFETY: statfs with a valid C string and an out-struct we own.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::statfs(p.as_ptr(), &mut st) } == 0 && st.f_type as i64 == BPF_FS_MAGIC {
        return Ok(());
    }
    let fs = CString::new("bpf").unwrap_or_default();
    // SAFETY: mount with valid C strings and no data.
    if unsafe { libc::mount(fs.as_ptr(), p.as_ptr(), fs.as_ptr(), 0, std::ptr::null()) } != 0 {
        return Err(LabError::Io {
            step: "mounting bpffs".into(),
            path: "/sys/fs/bpf".into(),
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(())
}

/// A process to start in a netns and cgroup.
#[derive(Debug)]
pub struct Launch<'a> {
    /// For errors: `ztunnel on node-a`.
    pub what: String,
    pub program: &'a Path,
    pub args: Vec<String>,
    pub netns: &'a str,
    pub cgroup: &'a Path,
    /// stdout and stderr go here (appended).
    pub log: &'a Path,
    /// Added to the inherited environment.
    pub env: Vec<(&'static str, String)>,
}

/// Starts a daemon: own session (survives meshctl), netns and cgroup joined before exec,
/// stdin from /dev/null, output to its log. Returns the child (not waited for).
pub fn spawn(l: &Launch<'_>) -> Result<Child, LabError> {
    let io = |path: &Path, source| LabError::Io {
        step: format!("{}: preparing", l.what),
        path: path.into(),
        source,
    };
    let netns = File::open(netns_path(l.netns)).map_err(|e| io(&netns_path(l.netns), e))?;
    let procs = l.cgroup.join("cgroup.procs");
    let cg = std::fs::OpenOptions::new().write(true).open(&procs).map_err(|e| io(&procs, e))?;
    let log = std::fs::OpenOptions::new().create(true).append(true).open(l.log).map_err(|e| io(l.log, e))?;
    let log2 = log.try_clone().map_err(|e| io(l.log, e))?;
    let (ns_fd, cg_fd) = (netns.as_raw_fd(), cg.as_raw_fd());
    let mut cmd = Command::new(l.program);
    cmd.args(&l.args)
        .envs(l.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2)
        .current_dir("/");
    // SAFETY: the closure only makes raw syscalls (setns, write, setsid) on fds opened before
    // the fork; it allocates nothing, so it is safe between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setns(ns_fd, libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::write(cg_fd, b"0".as_ptr().cast(), 1) != 1 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn().map_err(|source| LabError::Spawn {
        what: l.what.clone(),
        program: l.program.to_path_buf(),
        source,
    })?;
    drop((netns, cg));
    Ok(child)
}

/// Runs a command in a pod: its netns, its cgroup, and a private mount namespace where each
/// file of its `/etc/netns/<netns>` folder (hosts, resolv.conf) is bind-mounted over the one
/// in /etc, as `ip netns exec` does. Inherits stdio; returns the exit code (128 + signal when
/// killed).
pub fn exec_in_pod(netns: &str, cgroup: &Path, etc: &Path, argv: &[String]) -> Result<u8, LabError> {
    let io = |path: &Path, source| LabError::Io { step: "preparing exec".into(), path: path.into(), source };
    let nsf = File::open(netns_path(netns)).map_err(|e| io(&netns_path(netns), e))?;
    let procs = cgroup.join("cgroup.procs");
    let cg = std::fs::OpenOptions::new().write(true).open(&procs).map_err(|e| io(&procs, e))?;
    let cstr = |p: &Path| CString::new(p.as_os_str().as_bytes()).unwrap_or_default();
    let root = cstr(Path::new("/"));
    // (source, target) pairs; only files whose target exists can be bind-mounted over.
    let mut binds: Vec<(CString, CString)> = Vec::new();
    for e in std::fs::read_dir(etc).into_iter().flatten().flatten() {
        let target = Path::new("/etc").join(e.file_name());
        let hidden = e.file_name().as_bytes().starts_with(b".");
        if e.file_type().is_ok_and(|t| t.is_file()) && target.exists() && !hidden {
            binds.push((cstr(&e.path()), cstr(&target)));
        }
    }
    let (ns_fd, cg_fd) = (nsf.as_raw_fd(), cg.as_raw_fd());
    let Some((prog, rest)) = argv.split_first() else {
        return Err(LabError::Pod { pod: netns.into(), reason: "no command given".into() });
    };
    let mut cmd = Command::new(prog);
    cmd.args(rest);
    // SAFETY: raw syscalls on fds and C strings prepared before the fork; nothing allocates.
    unsafe {
        cmd.pre_exec(move || {
            let fail = || Err(std::io::Error::last_os_error());
            if libc::setns(ns_fd, libc::CLONE_NEWNET) != 0 {
                return fail();
            }
            if libc::write(cg_fd, b"0".as_ptr().cast(), 1) != 1 {
                return fail();
            }
            if !binds.is_empty() {
                if libc::unshare(libc::CLONE_NEWNS) != 0 {
                    return fail();
                }
                // Our mounts must not propagate back to the host.
                let flags = libc::MS_REC | libc::MS_SLAVE;
                let null = std::ptr::null();
                if libc::mount(null, root.as_ptr(), null, flags, std::ptr::null()) != 0 {
                    return fail();
                }
                for (src, dst) in &binds {
                    if libc::mount(src.as_ptr(), dst.as_ptr(), null, libc::MS_BIND, std::ptr::null()) != 0 {
                        return fail();
                    }
                }
            }
            Ok(())
        });
    }
    let status = cmd.status().map_err(|source| LabError::Spawn {
        what: format!("exec in {netns}"),
        program: prog.into(),
        source,
    })?;
    use std::os::unix::process::ExitStatusExt;
    Ok(match (status.code(), status.signal()) {
        (Some(c), _) => c as u8,
        (None, Some(s)) => 128u8.wrapping_add(s as u8),
        _ => 1,
    })
}

/// Start time of a live (non-zombie) process, from /proc/<pid>/stat; None when gone.
pub fn proc_start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    if fields.first() == Some(&"Z") || fields.first() == Some(&"X") {
        return None;
    }
    fields.get(19)?.parse().ok()
}

/// Whether `pid` is still the process recorded with `start_time` (0: any).
pub fn alive(pid: i32, start_time: u64) -> bool {
    pid > 0 && proc_start_time(pid).is_some_and(|t| start_time == 0 || t == start_time)
}

/// Sends a signal; errors (already gone) are ignored.
pub fn signal(pid: i32, sig: i32) {
    if pid > 0 {
        // SAFETY: kill has no memory preconditions.
        unsafe { libc::kill(pid, sig) };
    }
}

/// The last `n` lines of a log file.
pub fn log_tail(path: &Path, n: usize) -> String {
    let mut text = String::new();
    if let Ok(mut f) = File::open(path) {
        let _ = f.read_to_string(&mut text);
    }
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].iter().map(|l| format!("  | {l}\n")).collect()
}

/// `GET path` over HTTP/1.1 from inside a netns; returns the status code.
pub fn http_get_status(netns: &str, addr: SocketAddr, path: &str) -> std::io::Result<u16> {
    let path = path.to_string();
    in_netns(netns, move || {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(500))?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")?;
        let mut head = [0u8; 64];
        let n = s.read(&mut head)?;
        let line = String::from_utf8_lossy(&head[..n]);
        line.split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("not an HTTP answer: {line:?}")))
    })
}

/// TCP ports with a listening socket in a netns (IPv4 and IPv6), from
/// /proc/thread-self/net/tcp{,6}: the thread's netns, unlike /proc/self/net.
pub fn listening_ports(netns: &str) -> std::io::Result<Vec<u16>> {
    in_netns(netns, || {
        let mut ports = Vec::new();
        for f in ["/proc/thread-self/net/tcp", "/proc/thread-self/net/tcp6"] {
            let text = std::fs::read_to_string(f).unwrap_or_default();
            for line in text.lines().skip(1) {
                let cols: Vec<&str> = line.split_whitespace().collect();
                // st 0A is TCP_LISTEN; local address is `ADDR:PORT` in hex.
                if cols.get(3) == Some(&"0A")
                    && let Some(port) = cols.get(1).and_then(|a| a.rsplit(':').next())
                    && let Ok(p) = u16::from_str_radix(port, 16)
                {
                    ports.push(p);
                }
            }
        }
        Ok(ports)
    })
}

/// Writes a file readable by its owner only (tokens).
pub fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new().create(true).truncate(true).write(true).mode(0o600).open(path)?;
    f.write_all(text.as_bytes())
}

/// 24 random bytes as hex (node tokens).
pub fn random_token() -> std::io::Result<String> {
    let mut b = [0u8; 24];
    File::open("/dev/urandom")?.read_exact(&mut b)?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_is_alive_with_its_start_time() {
        let me = std::process::id() as i32;
        let t = proc_start_time(me).expect("start time of this process");
        assert!(alive(me, t) && alive(me, 0));
        assert!(!alive(me, t + 1), "another start time is another process");
        assert!(!alive(0, 0) && !alive(i32::MAX, 0));
    }

    #[test]
    fn cgroup2_mount_is_found() {
        let root = cgroup2_root().expect("cgroup v2 is mounted on the test machines");
        assert!(root.join("cgroup.procs").is_file(), "{}", root.display());
    }

    #[test]
    fn failing_ip_command_names_step_and_reason() {
        let e = ip("test step", &["link", "show", "dev", "mlab-no-such-link"]).unwrap_err().to_string();
        assert!(e.starts_with("test step: `ip link show dev mlab-no-such-link` failed: "), "{e}");
        assert!(e.contains("does not exist"), "{e}");
    }
}
