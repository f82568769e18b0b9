//! Private test topology for the root capture tests: a pod netns and a peer netns joined by a
//! veth, cgroups under `<cg2>/mesh-ebpf-test-<pid>/<n>/`, a pin folder under bpffs, helpers
//! to run code inside a netns, spawn the "app" in the pod's cgroup+netns, and inspect with
//! bpftool. Everything is removed in Drop (also when a test panics).

#![allow(dead_code)]

use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Tests share the process's cgroup membership: run them one at a time.
pub static SERIAL: Mutex<()> = Mutex::new(());

pub const POD_IP: Ipv4Addr = Ipv4Addr::new(10, 213, 0, 2);
pub const PEER_IP: Ipv4Addr = Ipv4Addr::new(10, 213, 0, 1);
pub const POD_IP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x213, 0, 0, 0, 0, 0, 2);
pub const PEER_IP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x213, 0, 0, 0, 0, 0, 1);
pub const MARK: u32 = 1337;

/// Fails (never skips) when the test cannot run here.
pub fn require_root_and_tools() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(euid, 0, "mesh-ebpf capture tests need root (netns, cgroups, bpf); run as root");
    for (tool, arg) in [("ip", "-V"), ("bpftool", "version"), ("python3", "--version")] {
        let ok = Command::new(tool).arg(arg).output().map(|o| o.status.success()).unwrap_or(false);
        assert!(ok, "`{tool}` is required by the capture tests (apt-get install iproute2 bpftool python3)");
    }
}

/// The cgroup v2 mount point, from /proc/self/mountinfo.
pub fn cgroup2_mount() -> PathBuf {
    let info = std::fs::read_to_string("/proc/self/mountinfo").expect("read /proc/self/mountinfo");
    for line in info.lines() {
        let Some((left, right)) = line.split_once(" - ") else { continue };
        if right.split_whitespace().next() == Some("cgroup2") {
            let mount = left.split_whitespace().nth(4).expect("mount point field");
            return PathBuf::from(mount);
        }
    }
    panic!("no cgroup2 mount in /proc/self/mountinfo: the capture tests need cgroup v2");
}

fn own_cgroup(cg2: &Path) -> PathBuf {
    let s = std::fs::read_to_string("/proc/self/cgroup").expect("read /proc/self/cgroup");
    let rel = s.lines().find_map(|l| l.strip_prefix("0::")).expect("cgroup v2 line in /proc/self/cgroup");
    cg2.join(rel.trim_start_matches('/'))
}

pub fn run(cmd: &str, args: &[&str]) {
    let out = Command::new(cmd).args(args).output().unwrap_or_else(|e| panic!("running {cmd}: {e}"));
    assert!(
        out.status.success(),
        "`{cmd} {}` failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

pub struct Topo {
    pub pod_ns: String,
    pub peer_ns: String,
    pub cg_base: PathBuf,
    pub cg_root: PathBuf,
    pub pods_cg: PathBuf,
    pub pod_cg: PathBuf,
    pub proxy_cg: PathBuf,
    pub pin_base: PathBuf,
    pub pin_dir: PathBuf,
    orig_cg: PathBuf,
    joined: bool,
}

impl Topo {
    /// `n` distinguishes the tests of one process.
    pub fn new(n: u32) -> Topo {
        require_root_and_tools();
        let pid = std::process::id();
        let cg2 = cgroup2_mount();
        let cg_base = cg2.join(format!("mesh-ebpf-test-{pid}"));
        let cg_root = cg_base.join(n.to_string());
        let pin_base = PathBuf::from(format!("/sys/fs/bpf/mesh-ebpf-test-{pid}"));
        let t = Topo {
            pod_ns: format!("mebt-{pid}-{n}-pod"),
            peer_ns: format!("mebt-{pid}-{n}-peer"),
            pods_cg: cg_root.join("pods"),
            pod_cg: cg_root.join("pods/app"),
            proxy_cg: cg_root.join("proxy"),
            cg_root,
            cg_base,
            pin_dir: pin_base.join(n.to_string()),
            pin_base,
            orig_cg: own_cgroup(&cg2),
            joined: false,
        };
        // From here on Drop cleans up whatever was made.
        for cg in [&t.pod_cg, &t.proxy_cg] {
            std::fs::create_dir_all(cg).unwrap_or_else(|e| panic!("mkdir cgroup {}: {e}", cg.display()));
        }
        run("ip", &["netns", "add", &t.pod_ns]);
        run("ip", &["netns", "add", &t.peer_ns]);
        run(
            "ip",
            &[
                "-n", &t.pod_ns, "link", "add", "eth0", "type", "veth", "peer", "name", "p0", "netns",
                &t.peer_ns,
            ],
        );
        run("ip", &["-n", &t.pod_ns, "addr", "add", &format!("{POD_IP}/24"), "dev", "eth0"]);
        run("ip", &["-n", &t.peer_ns, "addr", "add", &format!("{PEER_IP}/24"), "dev", "p0"]);
        run("ip", &["-n", &t.pod_ns, "addr", "add", &format!("{POD_IP6}/64"), "dev", "eth0", "nodad"]);
        run("ip", &["-n", &t.peer_ns, "addr", "add", &format!("{PEER_IP6}/64"), "dev", "p0", "nodad"]);
        for (ns, dev) in [(&t.pod_ns, "eth0"), (&t.pod_ns, "lo"), (&t.peer_ns, "p0"), (&t.peer_ns, "lo")] {
            run("ip", &["-n", ns, "link", "set", dev, "up"]);
        }
        run("ip", &["-n", &t.pod_ns, "route", "add", "default", "via", &PEER_IP.to_string()]);
        t
    }

    pub fn netns(&self, name: &str) -> File {
        let path = format!("/var/run/netns/{name}");
        File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"))
    }

    /// Moves this test process into the proxy cgroup (sockets made afterwards belong to it).
    pub fn join_proxy_cgroup(&mut self) {
        let procs = self.proxy_cg.join("cgroup.procs");
        std::fs::write(&procs, std::process::id().to_string())
            .unwrap_or_else(|e| panic!("join {}: {e}", procs.display()));
        self.joined = true;
    }

    pub fn options(&self) -> mesh_ebpf::CaptureOptions {
        mesh_ebpf::CaptureOptions {
            pin_dir: self.pin_dir.clone(),
            pods_cgroup: self.pods_cg.clone(),
            proxy_cgroup: self.proxy_cg.clone(),
            proxy_mark: MARK,
            force_tc_fallback: false,
        }
    }

    /// Runs the app script in the pod's netns and cgroup; returns its stdout lines.
    /// `args`: host port [mark].
    pub fn app(&self, args: &[&str]) -> Vec<String> {
        let child = self.spawn_app(args);
        let out = child.wait_with_output().expect("wait app");
        assert!(out.status.success(), "app failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).lines().map(str::to_owned).collect()
    }

    pub fn spawn_app(&self, args: &[&str]) -> std::process::Child {
        let ns = self.netns(&self.pod_ns);
        let procs = std::fs::OpenOptions::new()
            .write(true)
            .open(self.pod_cg.join("cgroup.procs"))
            .expect("open pod cgroup.procs");
        let (ns_fd, procs_fd) = (ns.as_raw_fd(), procs.as_raw_fd());
        let mut cmd = Command::new("python3");
        cmd.arg("-c").arg(APP).args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
        // SAFETY: the closure only makes async-signal-safe syscalls (setns, write) on fds that
        // stay open in the parent until spawn returns.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(ns_fd, libc::CLONE_NEWNET) != 0 {
                    return Err(io::Error::last_os_error());
                }
                if libc::write(procs_fd, b"0".as_ptr().cast(), 1) != 1 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().expect("spawn python3 app");
        drop((ns, procs));
        child
    }

    /// Runs `f` on a thread inside netns `name`.
    pub fn in_netns<T: Send>(&self, name: &str, f: impl FnOnce() -> T + Send) -> T {
        let ns = self.netns(name);
        in_netns(ns.as_fd(), f)
    }

    /// Binds a TCP listener on 0.0.0.0:`port` inside the pod netns.
    pub fn pod_listener(&self, port: u16) -> TcpListener {
        self.pod_listener_on(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port)
    }

    /// Binds a TCP listener on `ip`:`port` inside the pod netns ([::] is dual-stack).
    pub fn pod_listener_on(&self, ip: IpAddr, port: u16) -> TcpListener {
        self.in_netns(&self.pod_ns, || TcpListener::bind((ip, port)))
            .unwrap_or_else(|e| panic!("bind {ip}:{port} in pod netns: {e}"))
    }

    /// Connects from the peer netns to the pod's IPv4 address.
    pub fn connect_from_peer(&self, port: u16) -> io::Result<TcpStream> {
        self.connect_from_peer_to(IpAddr::V4(POD_IP), port, Duration::from_secs(3))
    }

    /// Connects from the peer netns.
    pub fn connect_from_peer_to(&self, ip: IpAddr, port: u16, timeout: Duration) -> io::Result<TcpStream> {
        self.in_netns(&self.peer_ns, || TcpStream::connect_timeout(&SocketAddr::from((ip, port)), timeout))
    }

    /// Inode of the pod netns (bpftool shows it for netns links).
    pub fn pod_netns_ino(&self) -> u64 {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(format!("/var/run/netns/{}", self.pod_ns)).expect("stat netns").ino()
    }
}

impl Drop for Topo {
    #[allow(clippy::print_stderr)] // Drop cannot fail: say what may be left behind
    fn drop(&mut self) {
        if self.joined {
            let _ = std::fs::write(self.orig_cg.join("cgroup.procs"), std::process::id().to_string());
        }
        if let Err(e) = mesh_ebpf::Capture::remove_all(&self.pin_dir) {
            eprintln!("cleanup: remove_all {}: {e}", self.pin_dir.display());
        }
        let _ = std::fs::remove_dir(&self.pin_base);
        // An app left running by a failed assertion would keep its cgroup busy.
        let _ = std::fs::write(self.pod_cg.join("cgroup.kill"), "1");
        let deadline = Instant::now() + Duration::from_secs(2);
        while std::fs::read_to_string(self.pod_cg.join("cgroup.procs")).is_ok_and(|p| !p.trim().is_empty())
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(10));
        }
        for cg in [&self.pod_cg, &self.pods_cg, &self.proxy_cg, &self.cg_root, &self.cg_base] {
            let _ = std::fs::remove_dir(cg);
        }
        for ns in [&self.pod_ns, &self.peer_ns] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

pub fn in_netns<T: Send>(ns: BorrowedFd<'_>, f: impl FnOnce() -> T + Send) -> T {
    let fd = ns.as_raw_fd();
    std::thread::scope(|s| {
        s.spawn(move || {
            // SAFETY: `fd` is a netns fd borrowed for the scope; setns affects only this thread.
            let rc = unsafe { libc::setns(fd, libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", io::Error::last_os_error());
            f()
        })
        .join()
        .expect("netns thread")
    })
}

/// Accepts one connection within `timeout`.
pub fn accept_within(l: &TcpListener, timeout: Duration) -> io::Result<(TcpStream, SocketAddr)> {
    l.set_nonblocking(true)?;
    let deadline = Instant::now() + timeout;
    loop {
        match l.accept() {
            Ok((s, a)) => {
                s.set_nonblocking(false)?;
                return Ok((s, a));
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => return Err(e),
        }
    }
}

/// getsockopt(SOL_IP, SO_ORIGINAL_DST) of an accepted socket.
pub fn original_dst(s: &TcpStream) -> io::Result<SocketAddr> {
    // SAFETY: all-zero is a valid sockaddr_in.
    let mut sa: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: `sa`/`len` are valid for writes of `len` bytes.
    let rc = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::SOL_IP,
            80,
            (&mut sa as *mut libc::sockaddr_in).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    assert_eq!(len as usize, std::mem::size_of::<libc::sockaddr_in>(), "SO_ORIGINAL_DST optlen");
    assert_eq!(sa.sin_family, libc::AF_INET as libc::sa_family_t, "SO_ORIGINAL_DST family");
    Ok(SocketAddr::from((Ipv4Addr::from(u32::from_be(sa.sin_addr.s_addr)), u16::from_be(sa.sin_port))))
}

/// getsockopt(SOL_IPV6, IP6T_SO_ORIGINAL_DST) of an accepted socket.
pub fn original_dst6(s: &TcpStream) -> io::Result<SocketAddr> {
    // SAFETY: all-zero is a valid sockaddr_in6.
    let mut sa: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t;
    // SAFETY: `sa`/`len` are valid for writes of `len` bytes.
    let rc = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::SOL_IPV6,
            80,
            (&mut sa as *mut libc::sockaddr_in6).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    assert_eq!(len as usize, std::mem::size_of::<libc::sockaddr_in6>(), "IP6T_SO_ORIGINAL_DST optlen");
    assert_eq!(sa.sin6_family, libc::AF_INET6 as libc::sa_family_t, "IP6T_SO_ORIGINAL_DST family");
    Ok(SocketAddr::from((Ipv6Addr::from(sa.sin6_addr.s6_addr), u16::from_be(sa.sin6_port))))
}

/// The id of the program pinned at `path`.
pub fn pinned_prog_id(path: &Path) -> u64 {
    let out =
        Command::new("bpftool").args(["-j", "prog", "show", "pinned"]).arg(path).output().expect("bpftool");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("bpftool prog show pinned {}: {e}", path.display()));
    v["id"].as_u64().expect("prog id")
}

/// `bpftool -j link show`: links of program `prog_id`.
pub fn prog_links(prog_id: u64) -> usize {
    let out = Command::new("bpftool").args(["-j", "link", "show"]).output().expect("bpftool");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("bpftool link json");
    v.as_array().expect("array").iter().filter(|l| l["prog_id"].as_u64() == Some(prog_id)).count()
}

/// Reads a line-ish message (up to 100 bytes).
pub fn read_msg(s: &mut TcpStream) -> String {
    s.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    let mut buf = [0u8; 100];
    let n = s.read(&mut buf).expect("read");
    String::from_utf8_lossy(&buf[..n]).trim().to_owned()
}

pub fn write_msg(s: &mut TcpStream, msg: &str) {
    s.write_all(format!("{msg}\n").as_bytes()).expect("write");
}

/// `bpftool -j cgroup show <cg>`: the attach types attached directly to the cgroup.
pub fn cgroup_attachments(cg: &Path) -> Vec<(String, String)> {
    let out = Command::new("bpftool").args(["-j", "cgroup", "show"]).arg(cg).output().expect("bpftool");
    assert!(
        out.status.success(),
        "bpftool cgroup show {}: {}",
        cg.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    if text.trim().is_empty() {
        return Vec::new();
    }
    let v: serde_json::Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("bpftool json {text}: {e}"));
    v.as_array()
        .expect("array")
        .iter()
        .map(|e| {
            (
                e["attach_type"].as_str().unwrap_or_default().to_owned(),
                e["name"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

/// `bpftool -j link show`: sk_lookup links on the netns with inode `ino`.
pub fn netns_links(ino: u64) -> usize {
    let out = Command::new("bpftool").args(["-j", "link", "show"]).output().expect("bpftool");
    assert!(out.status.success(), "bpftool link show: {}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("bpftool link json");
    v.as_array()
        .expect("array")
        .iter()
        .filter(|l| l["type"] == "netns" && l["netns_ino"].as_u64() == Some(ino))
        .count()
}

/// The app: connect to argv[1]:argv[2] (optionally with SO_MARK argv[3]), report getpeername,
/// send "hello", print the reply. Connect errors are printed, not raised.
const APP: &str = r#"
import socket, sys
host, port = sys.argv[1], int(sys.argv[2])
s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
if len(sys.argv) > 3:
    s.setsockopt(socket.SOL_SOCKET, 36, int(sys.argv[3]))
s.settimeout(5)
try:
    s.connect((host, port))
except OSError as e:
    print("connect-error", e.errno)
    sys.exit(0)
print("peer %s:%d" % s.getpeername()[:2])
print("sock %s:%d" % s.getsockname()[:2])
s.sendall(b"hello\n")
print("reply", s.recv(100).decode().strip())
"#;
