//! Many open connections at once: `bench hold`, run inside a lab pod, opens N HTTP/1.1
//! keep-alive connections to a target (bounded concurrency), completes one request on each,
//! says so with a JSON line on stdout, keeps them all open and idle until a line (or EOF) on
//! stdin or its hold time is up, counts how many the far side closed meanwhile, prints a second
//! JSON line and closes them. The harness ([`Holder`]) measures the processes on the path while
//! the connections are held.
//!
//! The holder makes room for itself first: RLIMIT_NOFILE soft up to the hard limit (past it as
//! root), and the pod's ephemeral port range (`net.ipv4.ip_local_port_range`, scoped to the
//! pod's netns) widened when it is too narrow for N more connections next to the sockets the
//! netns already has (TIME_WAIT from the connection-rate runs among them).

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Child, ChildStdin, ChildStdout, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

/// `bench hold`'s command line.
#[derive(Debug, Clone, clap::Args)]
pub struct HoldArgs {
    /// Where to connect (`ip:port`).
    #[arg(long)]
    pub target: SocketAddr,
    /// The Host header of the one request per connection.
    #[arg(long)]
    pub host: String,
    /// Path and query of that request.
    #[arg(long, default_value = "/")]
    pub path: String,
    /// Connections to open and hold.
    #[arg(long, default_value_t = 10_000)]
    pub connections: usize,
    /// Connections being opened (connect + request) at once.
    #[arg(long, default_value_t = 128)]
    pub concurrency: usize,
    /// Longest hold (seconds) when stdin stays open and silent; the harness ends it sooner.
    #[arg(long, default_value_t = 300.0)]
    pub hold_secs: f64,
    /// Per connection: connect, request and response (seconds).
    #[arg(long, default_value_t = 10.0)]
    pub timeout: f64,
}

/// A checked [`HoldArgs`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HoldSpec {
    pub target: SocketAddr,
    /// `GET {path} HTTP/1.1` with the Host header, as sent on every connection.
    pub request: String,
    pub connections: usize,
    pub concurrency: usize,
    pub hold: Duration,
    pub timeout: Duration,
}

/// Why `bench hold` cannot run.
#[derive(Debug, thiserror::Error)]
pub enum HoldError {
    #[error("hold: {0}")]
    Invalid(&'static str),
    #[error("hold: host {0:?} cannot be sent as a Host header")]
    Host(String),
    #[error("hold: path {0:?} is not an origin-form request target")]
    Path(String),
    #[error(
        "hold: {connections} connections need {need} open files; RLIMIT_NOFILE is {have} \
         (raise the hard limit, e.g. `ulimit -Hn 65536` as root)"
    )]
    NoFile { connections: usize, need: u64, have: u64 },
    #[error("hold: {what}: {source}")]
    Io { what: String, source: std::io::Error },
}

impl HoldArgs {
    pub fn spec(&self) -> Result<HoldSpec, HoldError> {
        if self.connections == 0 {
            return Err(HoldError::Invalid("--connections must be > 0"));
        }
        if self.concurrency == 0 {
            return Err(HoldError::Invalid("--concurrency must be > 0"));
        }
        let secs = |v: f64, what| {
            if v.is_finite() && v > 0.0 && v < 1e6 { Ok(Duration::from_secs_f64(v)) } else { Err(what) }
        };
        let hold = secs(self.hold_secs, "--hold-secs must be a positive number of seconds")
            .map_err(HoldError::Invalid)?;
        let timeout = secs(self.timeout, "--timeout must be a positive number of seconds")
            .map_err(HoldError::Invalid)?;
        if self.host.is_empty() || self.host.bytes().any(|b| b.is_ascii_control() || b == b' ') {
            return Err(HoldError::Host(self.host.clone()));
        }
        if !self.path.starts_with('/') || self.path.bytes().any(|b| b.is_ascii_control() || b == b' ') {
            return Err(HoldError::Path(self.path.clone()));
        }
        Ok(HoldSpec {
            target: self.target,
            request: format!(
                "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: mesh-bench-hold\r\n\r\n",
                self.path, self.host
            ),
            connections: self.connections,
            concurrency: self.concurrency.min(self.connections),
            hold,
            timeout,
        })
    }
}

/// The first line `bench hold` prints: the connections are open (those that could be).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Opened {
    /// Connections open, each with one 2xx response read to its end.
    pub open: usize,
    /// Connections that failed (connect, timeout, non-2xx, a response that ends the
    /// connection); closed again.
    pub failed: usize,
    /// What the first failure was, when there was one.
    pub first_error: Option<String>,
    /// From the first connect to the last response (seconds).
    pub secs: f64,
    /// RLIMIT_NOFILE soft limit in force.
    pub nofile: u64,
    /// `net.ipv4.ip_local_port_range` in force.
    pub port_range: (u32, u32),
    /// Whether the holder widened it.
    pub widened: bool,
}

/// The second line: how the held connections fared.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Closed {
    /// Still open when the hold ended (then closed by the holder).
    pub still_open: usize,
    /// Closed or reset by the far side during the hold.
    pub closed_by_peer: usize,
    /// Sent bytes nobody asked for during the hold.
    pub unexpected_data: usize,
    /// How long they were held (seconds).
    pub held_secs: f64,
}

/// Descriptors beyond the connections: stdio, the runtime's, the odd file.
const FD_SLACK: u64 = 64;

/// `bench hold`: prints [`Opened`], waits, prints [`Closed`].
#[allow(clippy::print_stdout)]
pub fn main(args: &HoldArgs) -> anyhow::Result<()> {
    let spec = args.spec()?;
    let need = spec.connections as u64 + FD_SLACK;
    let have = crate::lab::raise_nofile(need)
        .map_err(|source| HoldError::Io { what: "raising RLIMIT_NOFILE".into(), source })?;
    if have < need {
        return Err(HoldError::NoFile { connections: spec.connections, need, have }.into());
    }
    let (port_range, widened) = make_port_room(spec.connections)?;

    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let started = Instant::now();
    let (conns, failed, first_error) = rt.block_on(open_all(&spec));
    let opened = Opened {
        open: conns.len(),
        failed,
        first_error,
        secs: started.elapsed().as_secs_f64(),
        nofile: have,
        port_range,
        widened,
    };
    println!("{}", serde_json::to_string(&opened)?);
    std::io::stdout().flush()?;

    // Any line, or EOF (the harness gone), ends the hold; so does the hold time.
    let held = Instant::now();
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    std::thread::Builder::new().name("hold-stdin".into()).spawn(move || {
        let mut line = String::new();
        let _ = std::io::stdin().lock().read_line(&mut line);
        let _ = tx.send(());
    })?;
    let _ = rx.recv_timeout(spec.hold);

    let mut closed = Closed { still_open: 0, closed_by_peer: 0, unexpected_data: 0, held_secs: 0.0 };
    for s in &conns {
        match state(s) {
            Held::Open => closed.still_open += 1,
            Held::Closed => closed.closed_by_peer += 1,
            Held::Data => closed.unexpected_data += 1,
        }
    }
    closed.held_secs = held.elapsed().as_secs_f64();
    println!("{}", serde_json::to_string(&closed)?);
    std::io::stdout().flush()?;
    drop(conns);
    Ok(())
}

/// What became of a held connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Held {
    /// Nothing to read, no FIN or reset.
    Open,
    /// FIN or reset from the far side.
    Closed,
    /// Bytes nobody asked for.
    Data,
}

/// Asks the kernel directly (a peeking, non-blocking recv): the runtime has not run during the
/// hold, so its idea of the socket's readiness is stale.
fn state(s: &TcpStream) -> Held {
    use std::os::fd::AsRawFd;
    let mut b = [0u8; 1];
    // SAFETY: recv into our own one-byte buffer on a socket we own.
    let n =
        unsafe { libc::recv(s.as_raw_fd(), b.as_mut_ptr().cast(), 1, libc::MSG_PEEK | libc::MSG_DONTWAIT) };
    match n {
        0 => Held::Closed,
        n if n > 0 => Held::Data,
        _ => match std::io::Error::last_os_error().kind() {
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted => Held::Open,
            _ => Held::Closed,
        },
    }
}

/// Makes sure the netns's ephemeral range has room for `connections` more: the range in force
/// and whether it was widened.
fn make_port_room(connections: usize) -> Result<((u32, u32), bool), HoldError> {
    const RANGE: &str = "/proc/sys/net/ipv4/ip_local_port_range";
    let io = |what: &str| {
        let what = what.to_string();
        move |source| HoldError::Io { what, source }
    };
    let text = std::fs::read_to_string(RANGE).map_err(io(&format!("reading {RANGE}")))?;
    let current = parse_port_range(&text).ok_or_else(|| HoldError::Io {
        what: format!("{RANGE}: {text:?}"),
        source: std::io::Error::other("not two ports"),
    })?;
    // Sockets of this netns (this /proc/net follows our netns): they may hold ports.
    let in_use = ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .map(|t| t.lines().count().saturating_sub(1))
        .sum::<usize>();
    match wider_range(current, connections + in_use) {
        None => Ok((current, false)),
        Some((lo, hi)) => {
            std::fs::write(RANGE, format!("{lo} {hi}")).map_err(io(&format!("widening {RANGE}")))?;
            Ok(((lo, hi), true))
        }
    }
}

/// `net.ipv4.ip_local_port_range`'s two numbers.
pub fn parse_port_range(text: &str) -> Option<(u32, u32)> {
    let mut it = text.split_whitespace().map(str::parse::<u32>);
    match (it.next(), it.next(), it.next()) {
        (Some(Ok(lo)), Some(Ok(hi)), None) if lo <= hi && hi <= 65_535 => Some((lo, hi)),
        _ => None,
    }
}

/// A range with room for `needed` ports and a quarter more, ending at 65535 and starting no
/// lower than 1024; `None` when `current` already has that room.
pub fn wider_range(current: (u32, u32), needed: usize) -> Option<(u32, u32)> {
    let want = u32::try_from(needed + needed / 4).unwrap_or(u32::MAX);
    let size = current.1 - current.0 + 1;
    if size >= want {
        return None;
    }
    let lo = 65_535u32.saturating_sub(want - 1).max(1024).min(current.0);
    Some((lo, 65_535))
}

/// Opens every connection, `concurrency` at a time: the open ones, the count that failed and
/// the first failure.
async fn open_all(spec: &HoldSpec) -> (Vec<TcpStream>, usize, Option<String>) {
    let request: Arc<[u8]> = spec.request.as_bytes().into();
    let mut conns = Vec::with_capacity(spec.connections);
    let (mut failed, mut first_error) = (0, None);
    let mut tasks = JoinSet::new();
    let mut started = 0;
    loop {
        while started < spec.connections && tasks.len() < spec.concurrency {
            let (target, request, timeout) = (spec.target, Arc::clone(&request), spec.timeout);
            tasks.spawn(async move {
                match tokio::time::timeout(timeout, open_one(target, &request)).await {
                    Ok(r) => r,
                    Err(_) => Err(format!("no response within {timeout:?}")),
                }
            });
            started += 1;
        }
        let Some(done) = tasks.join_next().await else { break };
        match done {
            Ok(Ok(s)) => conns.push(s),
            Ok(Err(e)) => {
                failed += 1;
                first_error.get_or_insert(e);
            }
            Err(e) => {
                failed += 1;
                first_error.get_or_insert(format!("connection task: {e}"));
            }
        }
    }
    (conns, failed, first_error)
}

/// One connection with one request answered 2xx and read to its end, ready to be held.
async fn open_one(target: SocketAddr, request: &[u8]) -> Result<TcpStream, String> {
    let mut s = TcpStream::connect(target).await.map_err(|e| format!("connect {target}: {e}"))?;
    s.set_nodelay(true).map_err(|e| format!("TCP_NODELAY: {e}"))?;
    s.write_all(request).await.map_err(|e| format!("sending the request: {e}"))?;
    let mut buf = Vec::with_capacity(2048);
    let mut chunk = [0u8; 4096];
    loop {
        let n = s.read(&mut chunk).await.map_err(|e| format!("reading the response: {e}"))?;
        if n == 0 {
            return Err(format!("closed after {} bytes, before the response ended", buf.len()));
        }
        buf.extend_from_slice(&chunk[..n]);
        match parse_response(&buf) {
            Err(e) => return Err(e.to_string()),
            Ok(None) => {}
            Ok(Some(r)) if !(200..300).contains(&r.status) => return Err(format!("status {}", r.status)),
            Ok(Some(r)) if r.close => {
                return Err("the response ends the connection (Connection: close)".into());
            }
            Ok(Some(r)) if r.len != buf.len() => {
                return Err(format!("{} bytes after the response", buf.len() - r.len));
            }
            Ok(Some(_)) => return Ok(s),
        }
    }
}

/// An HTTP/1.1 response read to its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    /// Bytes of head and body.
    pub len: usize,
    /// The server closes the connection after it (`Connection: close`, or HTTP/1.0 without
    /// keep-alive).
    pub close: bool,
}

/// Why a response cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResponseError {
    #[error("not an HTTP/1.x status line: {0:?}")]
    StatusLine(String),
    #[error("bad header line: {0:?}")]
    Header(String),
    #[error("bad Content-Length: {0:?}")]
    Length(String),
    #[error("bad chunk size line: {0:?}")]
    Chunk(String),
    #[error("response without Content-Length or chunked encoding: it ends only with the connection")]
    UntilClose,
    #[error("response head over 64 KiB")]
    HeadTooLong,
}

/// The response at the start of `buf` when it has all arrived, `None` while more is to come.
pub fn parse_response(buf: &[u8]) -> Result<Option<Response>, ResponseError> {
    let Some(head_end) = find(buf, b"\r\n\r\n") else {
        return if buf.len() > 65_536 { Err(ResponseError::HeadTooLong) } else { Ok(None) };
    };
    let head = String::from_utf8_lossy(&buf[..head_end]);
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let (version, code) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
    let status = match (version, code.parse::<u16>()) {
        ("HTTP/1.1" | "HTTP/1.0", Ok(c)) if (100..1000).contains(&c) => c,
        _ => return Err(ResponseError::StatusLine(status_line.to_string())),
    };
    let (mut length, mut chunked) = (None, false);
    let mut close = version == "HTTP/1.0";
    for line in lines {
        let (name, value) = line.split_once(':').ok_or_else(|| ResponseError::Header(line.to_string()))?;
        let value = value.trim();
        match name.trim().to_ascii_lowercase().as_str() {
            "content-length" => {
                length = Some(value.parse::<usize>().map_err(|_| ResponseError::Length(value.to_string()))?)
            }
            "transfer-encoding" => {
                chunked = value.to_ascii_lowercase().split(',').any(|t| t.trim() == "chunked")
            }
            "connection" => {
                let tokens = value.to_ascii_lowercase();
                let has = |t: &str| tokens.split(',').any(|x| x.trim() == t);
                if has("close") {
                    close = true;
                } else if has("keep-alive") {
                    close = false;
                }
            }
            _ => {}
        }
    }
    let body_start = head_end + 4;
    let no_body = status < 200 || status == 204 || status == 304;
    let end = if no_body {
        Some(body_start)
    } else if chunked {
        chunked_end(buf, body_start)?
    } else if let Some(n) = length {
        let end = body_start + n;
        (buf.len() >= end).then_some(end)
    } else {
        return Err(ResponseError::UntilClose);
    };
    Ok(end.map(|len| Response { status, len, close }))
}

/// Where a chunked body starting at `at` ends (after its trailers), `None` while incomplete.
fn chunked_end(buf: &[u8], mut at: usize) -> Result<Option<usize>, ResponseError> {
    loop {
        let Some(eol) = find(&buf[at.min(buf.len())..], b"\r\n") else { return Ok(None) };
        let line = String::from_utf8_lossy(&buf[at..at + eol]).into_owned();
        let size_text = line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16).map_err(|_| ResponseError::Chunk(line.clone()))?;
        at += eol + 2;
        if size == 0 {
            // Trailer lines until an empty one.
            loop {
                let Some(eol) = find(&buf[at.min(buf.len())..], b"\r\n") else { return Ok(None) };
                at += eol + 2;
                if eol == 0 {
                    return Ok(Some(at));
                }
            }
        }
        if buf.len() < at + size + 2 {
            return Ok(None);
        }
        if &buf[at + size..at + size + 2] != b"\r\n" {
            return Err(ResponseError::Chunk(format!("chunk of {size} bytes not followed by CRLF")));
        }
        at += size + 2;
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The metric label of a connection count: `10k`, `1k`, `2500`.
pub fn conns_label(n: usize) -> String {
    if n >= 1000 && n.is_multiple_of(1000) { format!("{}k", n / 1000) } else { n.to_string() }
}

/// The harness's side: `bench hold` running in a pod, its connections open.
#[derive(Debug)]
pub struct Holder {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    pub opened: Opened,
    what: String,
}

impl Holder {
    /// Starts `bench hold ARGS...` in `pod` (through `meshctl lab exec`) and waits until it has
    /// opened its connections.
    pub fn start(pod: &str, args: &[&str]) -> anyhow::Result<Holder> {
        let exe = std::env::current_exe().context("current_exe")?;
        let exe = exe.to_str().context("binary path is not UTF-8")?;
        let mut a = vec!["lab", "exec", pod, "--", exe, "hold"];
        a.extend(args);
        let what = format!("bench hold in {pod}");
        let mut child = mesh_e2e::lab::meshctl(&a)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {what}"))?;
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().context("holder stdout")?);
        let mut h = Holder {
            child,
            stdin,
            stdout,
            opened: Opened {
                open: 0,
                failed: 0,
                first_error: None,
                secs: 0.0,
                nofile: 0,
                port_range: (0, 0),
                widened: false,
            },
            what,
        };
        h.opened = h.line()?;
        Ok(h)
    }

    fn line<T: serde::de::DeserializeOwned>(&mut self) -> anyhow::Result<T> {
        let mut line = String::new();
        self.stdout.read_line(&mut line).with_context(|| format!("reading from {}", self.what))?;
        if line.is_empty() {
            let status = self.child.wait().with_context(|| format!("waiting for {}", self.what))?;
            anyhow::bail!("{} ended ({status}) without its result (its error is above)", self.what);
        }
        serde_json::from_str(line.trim()).with_context(|| format!("{}: not a result: {line}", self.what))
    }

    /// Ends the hold: the holder checks its connections, closes them and exits.
    pub fn close(mut self) -> anyhow::Result<Closed> {
        if let Some(mut stdin) = self.stdin.take() {
            // A holder that is already gone shows below.
            let _ = stdin.write_all(b"close\n");
        }
        let closed = self.line()?;
        let status = self.child.wait().with_context(|| format!("waiting for {}", self.what))?;
        anyhow::ensure!(status.success(), "{} exited with {status}", self.what);
        Ok(closed)
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        // Closing stdin ends the hold; the holder then exits on its own.
        drop(self.stdin.take());
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> HoldArgs {
        HoldArgs {
            target: "10.0.0.1:8080".parse().unwrap(),
            host: "server.l7.svc.cluster.local".into(),
            path: "/api/items?size=1024".into(),
            connections: 10_000,
            concurrency: 128,
            hold_secs: 300.0,
            timeout: 10.0,
        }
    }

    #[test]
    fn arguments_are_checked() {
        let s = args().spec().unwrap();
        assert_eq!(
            s.request,
            "GET /api/items?size=1024 HTTP/1.1\r\nHost: server.l7.svc.cluster.local\r\n\
             User-Agent: mesh-bench-hold\r\n\r\n"
        );
        assert_eq!((s.connections, s.concurrency), (10_000, 128));
        assert_eq!(s.hold, Duration::from_secs(300));
        let small = HoldArgs { connections: 10, ..args() }.spec().unwrap();
        assert_eq!(small.concurrency, 10, "no more in flight than connections");
        for bad in [
            HoldArgs { connections: 0, ..args() },
            HoldArgs { concurrency: 0, ..args() },
            HoldArgs { hold_secs: 0.0, ..args() },
            HoldArgs { hold_secs: f64::NAN, ..args() },
            HoldArgs { timeout: -1.0, ..args() },
            HoldArgs { host: "a b".into(), ..args() },
            HoldArgs { host: "a\r\nX: y".into(), ..args() },
            HoldArgs { host: String::new(), ..args() },
            HoldArgs { path: "api".into(), ..args() },
            HoldArgs { path: "/a\r\n".into(), ..args() },
        ] {
            assert!(bad.spec().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn command_line_parses() {
        use clap::Parser;
        #[derive(Debug, Parser)]
        struct Cli {
            #[command(flatten)]
            hold: HoldArgs,
        }
        let cli = Cli::try_parse_from([
            "hold",
            "--target",
            "10.244.2.50:8080",
            "--host",
            "server.direct",
            "--connections",
            "1000",
        ])
        .unwrap();
        assert_eq!(cli.hold.connections, 1000);
        assert_eq!(cli.hold.path, "/");
        assert_eq!(cli.hold.concurrency, 128);
        assert!(Cli::try_parse_from(["hold", "--target", "nowhere", "--host", "h"]).is_err());
    }

    #[test]
    fn content_length_responses() {
        let r = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Route: api\r\n\r\nhello";
        let head = r.len() - 5;
        assert_eq!(parse_response(r).unwrap(), Some(Response { status: 200, len: r.len(), close: false }));
        for cut in [0, 10, head - 1, head, r.len() - 1] {
            assert_eq!(parse_response(&r[..cut]).unwrap(), None, "cut at {cut}");
        }
        let closing = b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";
        assert_eq!(
            parse_response(closing).unwrap(),
            Some(Response { status: 503, len: closing.len(), close: true })
        );
        let old = b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n";
        assert!(parse_response(old).unwrap().unwrap().close);
        let old_kept = b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\nConnection: keep-alive\r\n\r\n";
        assert!(!parse_response(old_kept).unwrap().unwrap().close);
        let no_content = b"HTTP/1.1 204 No Content\r\n\r\n";
        assert_eq!(parse_response(no_content).unwrap().unwrap().len, no_content.len());
    }

    #[test]
    fn chunked_responses() {
        let r = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n10\r\n0123456789abcdef\r\n0\r\nx-trailer: 1\r\n\r\n";
        assert_eq!(parse_response(r).unwrap(), Some(Response { status: 200, len: r.len(), close: false }));
        for cut in 40..r.len() {
            assert_eq!(parse_response(&r[..cut]).unwrap(), None, "cut at {cut}");
        }
        let bare = b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n0\r\n\r\n";
        assert_eq!(parse_response(bare).unwrap().unwrap().len, bare.len());
        let bad = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n";
        assert!(matches!(parse_response(bad), Err(ResponseError::Chunk(_))));
        let short = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabcd\r\n";
        assert!(matches!(parse_response(short), Err(ResponseError::Chunk(_))));
    }

    #[test]
    fn unusable_responses() {
        assert!(matches!(parse_response(b"SSH-2.0-x\r\n\r\n"), Err(ResponseError::StatusLine(_))));
        assert!(matches!(parse_response(b"HTTP/1.1 abc OK\r\n\r\n"), Err(ResponseError::StatusLine(_))));
        assert!(matches!(
            parse_response(b"HTTP/1.1 200 OK\r\nnocolon\r\n\r\n"),
            Err(ResponseError::Header(_))
        ));
        assert!(matches!(
            parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n"),
            Err(ResponseError::Length(_))
        ));
        assert_eq!(parse_response(b"HTTP/1.1 200 OK\r\n\r\n"), Err(ResponseError::UntilClose));
        assert_eq!(parse_response(&vec![b'a'; 70_000]), Err(ResponseError::HeadTooLong));
    }

    #[test]
    fn port_ranges() {
        assert_eq!(parse_port_range("32768\t60999\n"), Some((32768, 60999)));
        assert_eq!(parse_port_range("1 2 3"), None);
        assert_eq!(parse_port_range("60999 32768"), None);
        assert_eq!(parse_port_range("x y"), None);
        // 28,232 ports: room for 10,000 plus some thousands in use.
        assert_eq!(wider_range((32768, 60999), 10_000 + 5_000), None);
        // Not for 30,000.
        assert_eq!(wider_range((32768, 60999), 30_000), Some((28_036, 65_535)));
        // Never below 1024, never narrower than before.
        assert_eq!(wider_range((32768, 60999), 100_000), Some((1024, 65_535)));
        assert_eq!(wider_range((40000, 40010), 20), Some((40000, 65_535)));
        assert_eq!(wider_range((1000, 1010), 20), Some((1000, 65_535)));
    }

    #[test]
    fn connection_count_labels() {
        assert_eq!(conns_label(10_000), "10k");
        assert_eq!(conns_label(1000), "1k");
        assert_eq!(conns_label(2500), "2500");
        assert_eq!(conns_label(500), "500");
    }

    /// A real hold against a local keep-alive server: opens, holds, counts a peer's close.
    #[test]
    fn opens_and_holds_against_a_server() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let target = listener.local_addr().unwrap();
            tokio::spawn(async move {
                let mut n = 0;
                loop {
                    let Ok((mut s, _)) = listener.accept().await else { return };
                    n += 1;
                    let close_after = n == 3;
                    tokio::spawn(async move {
                        let mut buf = [0u8; 1024];
                        let _ = s.read(&mut buf).await;
                        let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").await;
                        if close_after {
                            return;
                        }
                        let _ = s.read(&mut buf).await;
                    });
                }
            });
            let spec = HoldArgs { target, host: "h".into(), connections: 20, concurrency: 4, ..args() }
                .spec()
                .unwrap();
            let (conns, failed, first) = open_all(&spec).await;
            assert_eq!((conns.len(), failed, first), (20, 0, None));
            tokio::time::sleep(Duration::from_millis(100)).await;
            let states: Vec<Held> = conns.iter().map(state).collect();
            assert_eq!(states.iter().filter(|s| **s == Held::Closed).count(), 1, "the server closed one");
            assert_eq!(states.iter().filter(|s| **s == Held::Open).count(), 19);

            let refused =
                HoldArgs { target: "127.0.0.1:1".parse().unwrap(), connections: 3, ..args() }.spec().unwrap();
            let (conns, failed, first) = open_all(&refused).await;
            assert_eq!((conns.len(), failed), (0, 3));
            assert!(first.unwrap().starts_with("connect 127.0.0.1:1"));
        });
    }
}
