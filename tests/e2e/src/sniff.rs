//! Packet capture on a lab link: an `AF_PACKET` socket opened inside a netns on one interface
//! (both directions), decoding IPv4/TCP so tests can assert ports and look for payload bytes.

use std::ffi::CString;
use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

/// One captured TCP segment.
#[derive(Debug, Clone)]
pub struct Segment {
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub payload: Vec<u8>,
}

/// A running capture; [`Sniffer::stop`] returns what it saw.
#[derive(Debug)]
pub struct Sniffer {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<anyhow::Result<Vec<Segment>>>>,
}

impl Sniffer {
    /// Starts capturing on `ifname` inside the netns at `netns_path`; returns once the socket
    /// is bound (nothing sent after this returns is missed).
    pub fn start(netns_path: &str, ifname: &str) -> anyhow::Result<Sniffer> {
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (path, ifname, flag) = (netns_path.to_string(), ifname.to_string(), stop.clone());
        let thread = std::thread::spawn(move || capture(&path, &ifname, &flag, ready_tx));
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(Sniffer { stop, thread: Some(thread) }),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(thread
                .join()
                .map_err(|_| anyhow::anyhow!("sniffer panicked"))?
                .err()
                .unwrap_or_else(|| anyhow::anyhow!("sniffer stopped before it was ready"))),
        }
    }

    /// Stops and returns the TCP segments seen.
    pub fn stop(mut self) -> anyhow::Result<Vec<Segment>> {
        self.stop.store(true, Ordering::SeqCst);
        let t = self.thread.take().expect("stopped once");
        t.join().map_err(|_| anyhow::anyhow!("sniffer panicked"))?
    }
}

impl Drop for Sniffer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn capture(
    path: &str,
    ifname: &str,
    stop: &AtomicBool,
    ready: std::sync::mpsc::Sender<anyhow::Result<()>>,
) -> anyhow::Result<Vec<Segment>> {
    let setup = || -> anyhow::Result<libc::c_int> {
        let ns = File::open(path).map_err(|e| anyhow::anyhow!("open {path}: {e}"))?;
        // SAFETY: this thread is dedicated to the capture; setns changes only it.
        if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            anyhow::bail!("setns {path}: {}", std::io::Error::last_os_error());
        }
        let name = CString::new(ifname)?;
        // SAFETY: `name` is a valid C string.
        let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
        if index == 0 {
            anyhow::bail!("interface {ifname} in {path}: {}", std::io::Error::last_os_error());
        }
        let proto = (libc::ETH_P_ALL as u16).to_be() as libc::c_int;
        // SAFETY: plain socket(2).
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, proto) };
        if fd < 0 {
            anyhow::bail!("AF_PACKET socket: {}", std::io::Error::last_os_error());
        }
        // SAFETY: sockaddr_ll is plain data; zero is valid, then filled in.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = proto as u16;
        sll.sll_ifindex = index as i32;
        // SAFETY: `sll` is a valid sockaddr_ll of the size passed.
        let rc = unsafe {
            libc::bind(fd, (&raw const sll).cast(), size_of::<libc::sockaddr_ll>() as libc::socklen_t)
        };
        if rc != 0 {
            anyhow::bail!("bind AF_PACKET to {ifname}: {}", std::io::Error::last_os_error());
        }
        let tv = libc::timeval { tv_sec: 0, tv_usec: 50_000 };
        // SAFETY: `tv` is a valid timeval of the size passed.
        unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&raw const tv).cast(),
                size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        Ok(fd)
    };
    let fd = match setup() {
        Ok(fd) => {
            let _ = ready.send(Ok(()));
            fd
        }
        Err(e) => {
            let _ = ready.send(Err(e));
            return Ok(Vec::new());
        }
    };
    let mut out = Vec::new();
    let mut buf = vec![0u8; 65536];
    while !stop.load(Ordering::SeqCst) {
        // SAFETY: `buf` is writable for its length.
        let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n <= 0 {
            continue;
        }
        if let Some(seg) = decode(&buf[..n as usize]) {
            out.push(seg);
        }
    }
    // SAFETY: closing our own fd once.
    unsafe { libc::close(fd) };
    Ok(out)
}

/// Ethernet + IPv4 + TCP; anything else is skipped.
fn decode(f: &[u8]) -> Option<Segment> {
    if f.len() < 14 + 20 || u16::from_be_bytes([f[12], f[13]]) != 0x0800 {
        return None;
    }
    let ip = &f[14..];
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([ip[2], ip[3]])).min(ip.len());
    if ip[9] != 6 || total < ihl + 20 {
        return None;
    }
    let src_ip = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
    let dst_ip = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
    let tcp = &ip[ihl..total];
    let doff = usize::from(tcp[12] >> 4) * 4;
    let src = SocketAddr::V4(SocketAddrV4::new(src_ip, u16::from_be_bytes([tcp[0], tcp[1]])));
    let dst = SocketAddr::V4(SocketAddrV4::new(dst_ip, u16::from_be_bytes([tcp[2], tcp[3]])));
    Some(Segment { src, dst, payload: tcp.get(doff..).unwrap_or_default().to_vec() })
}
