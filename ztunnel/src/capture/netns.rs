//! Socket creation inside other network namespaces. `setns` only moves the calling thread, so
//! one dedicated OS thread does it: it enters the pod's netns, makes the socket, and comes
//! back before the next job. A socket keeps the netns it was made in, so the tokio runtime
//! can use it from any thread afterwards.

use std::fs::File;
use std::io;
use std::mem::size_of;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;

type Job = Box<dyn FnOnce() + Send>;

/// The thread that runs jobs inside network namespaces.
#[derive(Debug, Clone)]
pub struct NetnsRunner {
    tx: mpsc::Sender<(Arc<OwnedFd>, Job)>,
}

/// An open network namespace (the file keeps it alive and identifies it).
pub type NetnsFd = Arc<OwnedFd>;

/// Opens a netns file (`/var/run/netns/NAME`, `/proc/PID/ns/net`).
pub fn open_netns(path: &Path) -> io::Result<NetnsFd> {
    Ok(Arc::new(OwnedFd::from(File::open(path)?)))
}

impl NetnsRunner {
    /// Starts the thread. It remembers its own netns to come back to after each job.
    pub fn start() -> io::Result<NetnsRunner> {
        let home = File::open("/proc/thread-self/ns/net")?;
        let (tx, rx) = mpsc::channel::<(Arc<OwnedFd>, Job)>();
        std::thread::Builder::new().name("netns".into()).spawn(move || {
            for (netns, job) in rx {
                if let Err(e) = setns(netns.as_raw_fd()) {
                    tracing::error!(error = %e, "setns into a pod netns failed");
                    drop(job); // the caller sees its reply channel closed
                    continue;
                }
                job();
                if let Err(e) = setns(home.as_raw_fd()) {
                    // A thread stuck in a pod's netns would make the next pod's sockets in
                    // the wrong namespace: stop instead.
                    tracing::error!(error = %e, "cannot return to the proxy's netns; capture stops");
                    return;
                }
            }
        })?;
        Ok(NetnsRunner { tx })
    }

    /// Runs `f` inside `netns` without waiting for it (clean-up from synchronous code).
    pub fn run_detached(&self, netns: &NetnsFd, f: impl FnOnce() + Send + 'static) {
        let _ = self.tx.send((netns.clone(), Box::new(f)));
    }

    /// Runs `f` inside `netns` and returns its result.
    pub async fn run<R: Send + 'static>(
        &self,
        netns: &NetnsFd,
        f: impl FnOnce() -> io::Result<R> + Send + 'static,
    ) -> io::Result<R> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = tx.send(f());
        });
        self.tx.send((netns.clone(), job)).map_err(|_| io::Error::other("the netns thread has stopped"))?;
        rx.await.map_err(|_| io::Error::other("entering the pod's network namespace failed"))?
    }
}

fn setns(fd: libc::c_int) -> io::Result<()> {
    // SAFETY: setns only changes this thread's namespace; `fd` is an open netns file.
    let rc = unsafe { libc::setns(fd, libc::CLONE_NEWNET) };
    if rc != 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

fn check(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(rc) }
}

fn set_int(fd: &OwnedFd, level: libc::c_int, opt: libc::c_int, v: libc::c_int) -> io::Result<()> {
    // SAFETY: `v` lives across the call and its exact size is passed.
    check(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            opt,
            (&raw const v).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    })
    .map(drop)
}

fn tcp_socket(v6: bool, mark: u32) -> io::Result<OwnedFd> {
    let family = if v6 { libc::AF_INET6 } else { libc::AF_INET };
    // SAFETY: plain socket(2); the fd is owned right away.
    let fd = check(unsafe {
        libc::socket(family, libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC, 0)
    })?;
    // SAFETY: `fd` was just returned by socket(2) and nothing else owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    set_int(&fd, libc::SOL_SOCKET, libc::SO_MARK, mark as libc::c_int)?;
    Ok(fd)
}

fn bind(fd: &OwnedFd, addr: SocketAddr) -> io::Result<()> {
    let (storage, len) = sockaddr(addr);
    // SAFETY: `storage` holds a valid sockaddr of `len` bytes.
    check(unsafe { libc::bind(fd.as_raw_fd(), (&raw const storage).cast(), len) }).map(drop)
}

fn sockaddr(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: sockaddr_storage is plain data; all-zero is a valid value.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr { s_addr: u32::from(*a.ip()).to_be() },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than sockaddr_in and suitably aligned.
            unsafe { std::ptr::write((&raw mut storage).cast(), sin) };
            (storage, size_of::<libc::sockaddr_in>() as libc::socklen_t)
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: 0,
                sin6_addr: libc::in6_addr { s6_addr: a.ip().octets() },
                sin6_scope_id: 0,
            };
            // SAFETY: as above, for sockaddr_in6.
            unsafe { std::ptr::write((&raw mut storage).cast(), sin6) };
            (storage, size_of::<libc::sockaddr_in6>() as libc::socklen_t)
        }
    }
}

/// A listening socket on `addr` (call inside the pod's netns). `IP_TRANSPARENT` lets it accept
/// connections steered to it for any local address of the pod.
pub fn listener(addr: SocketAddr, mark: u32) -> io::Result<std::net::TcpListener> {
    let fd = tcp_socket(addr.is_ipv6(), mark)?;
    set_int(&fd, libc::SOL_SOCKET, libc::SO_REUSEADDR, 1)?;
    if addr.is_ipv6() {
        set_int(&fd, libc::IPPROTO_IPV6, libc::IPV6_TRANSPARENT, 1)?;
        set_int(&fd, libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, 1)?;
    } else {
        set_int(&fd, libc::SOL_IP, libc::IP_TRANSPARENT, 1)?;
    }
    bind(&fd, addr)?;
    // SAFETY: listen(2) on our own socket.
    check(unsafe { libc::listen(fd.as_raw_fd(), 1024) })?;
    Ok(std::net::TcpListener::from(fd))
}

/// An unconnected socket (call inside the pod's netns). With `from`, bound transparently to
/// that address (another host's, e.g. the original client's) with the port chosen at connect
/// time so 4-tuples stay unique.
pub fn client_socket(v6: bool, mark: u32, from: Option<IpAddr>) -> io::Result<tokio::net::TcpSocket> {
    let fd = tcp_socket(v6, mark)?;
    if let Some(ip) = from {
        if v6 {
            set_int(&fd, libc::IPPROTO_IPV6, libc::IPV6_TRANSPARENT, 1)?;
        } else {
            set_int(&fd, libc::SOL_IP, libc::IP_TRANSPARENT, 1)?;
        }
        set_int(&fd, libc::SOL_IP, libc::IP_BIND_ADDRESS_NO_PORT, 1)?;
        bind(&fd, SocketAddr::new(ip, 0))?;
    }
    Ok(tokio::net::TcpSocket::from_std_stream(std::net::TcpStream::from(fd)))
}

/// `<proc_root>/sys/<name>`: a sysctl file. `/proc/sys/net` shows the netns of the thread that
/// opens it (whatever procfs mount it is reached through), so the netns thread writes pods'
/// sysctls through the host's writable procfs too.
pub fn sysctl_path(proc_root: &Path, name: &str) -> PathBuf {
    proc_root.join("sys").join(name)
}

const RESERVED_PORTS: &str = "net/ipv4/ip_local_reserved_ports";

/// Adds ports to `net.ipv4.ip_local_reserved_ports` of the current thread's netns, so no
/// ephemeral port (ours or the app's) collides with the proxy's listeners.
pub fn reserve_ports(proc_root: &Path, ports: &[u16]) -> io::Result<()> {
    let path = sysctl_path(proc_root, RESERVED_PORTS);
    let now = std::fs::read_to_string(&path)?;
    let mut list: Vec<String> =
        now.trim().split(',').filter(|s| !s.is_empty()).map(|s| s.trim().to_string()).collect();
    for p in ports {
        if !list.iter().any(|x| *x == p.to_string()) {
            list.push(p.to_string());
        }
    }
    std::fs::write(&path, list.join(","))
}

/// Removes ports from `net.ipv4.ip_local_reserved_ports` of the current thread's netns.
pub fn unreserve_ports(proc_root: &Path, ports: &[u16]) -> io::Result<()> {
    let path = sysctl_path(proc_root, RESERVED_PORTS);
    let now = std::fs::read_to_string(&path)?;
    let keep: Vec<&str> = now
        .trim()
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty() && !ports.iter().any(|p| p.to_string() == *s))
        .collect();
    std::fs::write(&path, if keep.is_empty() { "\n".to_string() } else { keep.join(",") })
}

/// Writes a sysctl of the current thread's netns (`net/ipv4/tcp_fwmark_accept`).
pub fn sysctl(proc_root: &Path, name: &str, value: &str) -> io::Result<()> {
    std::fs::write(sysctl_path(proc_root, name), value)
}

/// Runs `ip ARGS...` inside `netns` (policy routing has no procfs interface).
pub fn ip_in(netns: &NetnsFd, args: &[&str]) -> io::Result<()> {
    use std::os::unix::process::CommandExt;
    let fd = netns.as_raw_fd();
    let mut cmd = std::process::Command::new("ip");
    cmd.args(args);
    // SAFETY: the closure only calls async-signal-safe setns(2) in the forked child.
    unsafe {
        cmd.pre_exec(move || setns(fd));
    }
    let out = cmd.output()?;
    if out.status.success() {
        Ok(())
    } else {
        let stderr = String::from_utf8_lossy(&out.stderr);
        Err(io::Error::other(format!("ip {}: {}", args.join(" "), stderr.trim())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sysctl_path_is_built_from_the_proc_root() {
        assert_eq!(
            sysctl_path(Path::new("/host/proc"), "net/ipv4/tcp_fwmark_accept"),
            PathBuf::from("/host/proc/sys/net/ipv4/tcp_fwmark_accept")
        );
        assert_eq!(
            sysctl_path(Path::new("/proc"), RESERVED_PORTS),
            PathBuf::from("/proc/sys/net/ipv4/ip_local_reserved_ports")
        );
    }

    /// The writes go under the configured root, not `/proc` (a directory standing in for it).
    #[test]
    fn sysctl_writes_go_through_the_configured_root() {
        let root = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(root.path().join("sys/net/ipv4")).expect("mkdir");
        let ports = root.path().join("sys").join(RESERVED_PORTS);
        std::fs::write(&ports, "80,15001\n").expect("seed");
        reserve_ports(root.path(), &[15001, 15006, 15008]).expect("reserve");
        assert_eq!(std::fs::read_to_string(&ports).unwrap(), "80,15001,15006,15008");
        unreserve_ports(root.path(), &[15001, 15006, 15008]).expect("unreserve");
        assert_eq!(std::fs::read_to_string(&ports).unwrap(), "80");
        sysctl(root.path(), "net/ipv4/tcp_fwmark_accept", "1").expect("sysctl");
        let fwmark = root.path().join("sys/net/ipv4/tcp_fwmark_accept");
        assert_eq!(std::fs::read_to_string(fwmark).unwrap(), "1");
    }
}
