//! Network-namespace helpers: running a closure on a dedicated thread that `setns`'d into a
//! netns (setns only moves the calling thread), and reading a netns cookie.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

/// `SO_NETNS_COOKIE` (include/uapi/asm-generic/socket.h).
const SO_NETNS_COOKIE: libc::c_int = 71;

/// `net:[inode]` of a netns fd, for error messages.
pub(crate) fn label(netns: BorrowedFd<'_>) -> String {
    std::fs::read_link(format!("/proc/self/fd/{}", netns.as_raw_fd()))
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| format!("fd {}", netns.as_raw_fd()))
}

/// Runs `f` on a fresh thread that has entered `netns`; the caller's thread is untouched.
pub(crate) fn run_in<T: Send>(
    netns: BorrowedFd<'_>,
    f: impl FnOnce() -> io::Result<T> + Send,
) -> Result<io::Result<T>, io::Error> {
    let fd = netns.as_raw_fd();
    std::thread::scope(|s| {
        s.spawn(move || {
            // SAFETY: `fd` is a valid netns fd borrowed for the scope; setns only affects this
            // thread, which ends when `f` returns.
            if unsafe { libc::setns(fd, libc::CLONE_NEWNET) } != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(f())
        })
        .join()
        .map_err(|_| io::Error::other("netns thread panicked"))?
    })
}

/// The netns cookie of `netns`, read with `SO_NETNS_COOKIE` from a socket made in it.
pub fn netns_cookie(netns: BorrowedFd<'_>) -> io::Result<u64> {
    run_in(netns, socket_netns_cookie_here)?
}

fn socket_netns_cookie_here() -> io::Result<u64> {
    // SAFETY: plain socket(2); the result is checked and owned below.
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by socket(2) and is owned by nobody else.
    let sock = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    socket_netns_cookie(sock.as_raw_fd())
}

/// `getsockopt(SO_NETNS_COOKIE)` of any socket.
pub(crate) fn socket_netns_cookie(fd: libc::c_int) -> io::Result<u64> {
    let mut cookie: u64 = 0;
    let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
    // SAFETY: `cookie`/`len` are valid for writes of the given size.
    let rc = unsafe {
        libc::getsockopt(fd, libc::SOL_SOCKET, SO_NETNS_COOKIE, (&mut cookie as *mut u64).cast(), &mut len)
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(cookie)
}
