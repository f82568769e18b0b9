//! The original destination of a redirected connection: `getsockopt(SO_ORIGINAL_DST)` (IPv4,
//! `SOL_IP`) or `IP6T_SO_ORIGINAL_DST` (IPv6, `SOL_IPV6`). Answered by netfilter after an
//! iptables REDIRECT, or by our `cgroup/getsockopt` eBPF program under eBPF capture.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::AsRawFd;

/// `SO_ORIGINAL_DST` and `IP6T_SO_ORIGINAL_DST` share the number 80.
const SO_ORIGINAL_DST: libc::c_int = 80;

/// The original destination of `sock`, or an error when the connection was not redirected
/// (`ENOENT`) or the option is not available.
pub fn original_dst(sock: &impl AsRawFd, local_is_v6: bool) -> io::Result<SocketAddr> {
    let fd = sock.as_raw_fd();
    if local_is_v6 {
        // SAFETY: `addr` is a zeroed sockaddr_in6 and `len` its exact size; the kernel writes
        // at most `len` bytes into it.
        let mut addr: libc::sockaddr_in6 = unsafe { zeroed() };
        let mut len = size_of::<libc::sockaddr_in6>() as libc::socklen_t;
        let rc = unsafe {
            libc::getsockopt(fd, libc::SOL_IPV6, SO_ORIGINAL_DST, (&raw mut addr).cast(), &mut len)
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        let ip = Ipv6Addr::from(addr.sin6_addr.s6_addr);
        let ip = ip.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(IpAddr::V6(ip));
        Ok(SocketAddr::new(ip, u16::from_be(addr.sin6_port)))
    } else {
        // SAFETY: as above, with sockaddr_in.
        let mut addr: libc::sockaddr_in = unsafe { zeroed() };
        let mut len = size_of::<libc::sockaddr_in>() as libc::socklen_t;
        let rc =
            unsafe { libc::getsockopt(fd, libc::SOL_IP, SO_ORIGINAL_DST, (&raw mut addr).cast(), &mut len) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        let ip = Ipv4Addr::from(u32::from_be(addr.sin_addr.s_addr));
        Ok(SocketAddr::new(IpAddr::V4(ip), u16::from_be(addr.sin_port)))
    }
}

/// The original destination, or the socket's local address when it was not redirected
/// (connections made straight to the listener, as in loopback mode).
pub fn original_dst_or_local(sock: &tokio::net::TcpStream) -> io::Result<(SocketAddr, bool)> {
    let local = sock.local_addr()?;
    match original_dst(sock, local.is_ipv6()) {
        Ok(dst) if dst != local => Ok((dst, true)),
        _ => Ok((local, false)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn not_redirected_falls_back_to_local() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let _c = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (s, _) = l.accept().await.unwrap();
        // Without netfilter state the kernel has no original destination.
        assert!(original_dst(&s, false).is_err());
        assert_eq!(original_dst_or_local(&s).unwrap(), (addr, false));
    }
}
