//! The echo app's sockets: accept loops, first-bytes sniffing, HTTP/1.1 and h2c serving
//! (hyper) and the raw TCP echo. Decisions are [`super::route`]'s; this only moves bytes.

use std::convert::Infallible;
use std::fs::File;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::SystemTime;

use bytes::Bytes;
use http::{Request, Response, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

use super::hooks::{self, FailCounts};
use super::route::{self, Identity, RawStats, RequestHead, Sniff};

/// Most bytes looked at before deciding; the HTTP/2 preface is the longest thing needed.
const SNIFF_BUF: usize = 64;

/// Where log lines go: a duplicate of the process's stdout. Not `io::stdout()`: the CLI
/// holds the stdout lock on the main thread for the whole run, so worker threads taking it
/// would wait forever.
#[derive(Debug)]
pub struct Log(File);

impl Log {
    /// Duplicates fd 1.
    pub fn stdout() -> io::Result<Log> {
        Ok(Log(File::from(io::stdout().as_fd().try_clone_to_owned()?)))
    }

    /// Writes one line in a single write, so concurrent lines never interleave.
    fn line(&self, line: &str) {
        let mut buf = Vec::with_capacity(line.len() + 1);
        buf.extend_from_slice(line.as_bytes());
        buf.push(b'\n');
        // A closed stdout must not take the echo down: answering matters more than logging.
        let _ = (&self.0).write_all(&buf);
    }
}

/// Accepts connections on `listener` forever, one task per connection.
/// `fail_counts` is shared by all listeners of the app (`x-fail-first` counts per pod).
pub async fn accept_loop(
    listener: TcpListener,
    id: Arc<Identity>,
    log: Arc<Log>,
    fail_counts: Arc<FailCounts>,
) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let Ok(local) = stream.local_addr() else { continue };
                let ctx = ConnCtx {
                    id: id.clone(),
                    log: log.clone(),
                    fail_counts: fail_counts.clone(),
                    peer,
                    local,
                };
                tokio::spawn(async move {
                    // A connection's own failure (reset, bad request) only ends that connection.
                    let _ = serve_connection(stream, ctx).await;
                });
            }
            // EMFILE and friends: back off briefly instead of spinning.
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
        }
    }
}

/// Sniffs the first bytes and serves the connection as h2c, HTTP/1.x or raw TCP echo.
async fn serve_connection(mut stream: TcpStream, ctx: ConnCtx) -> io::Result<()> {
    let _ = stream.set_nodelay(true);
    // Bytes are read (not peeked) while undecided, then replayed to whoever serves the
    // connection: peeking would spin, since readiness stays set while data is queued.
    let mut prefix = Vec::with_capacity(SNIFF_BUF);
    let mut kind = Sniff::NeedMore;
    while kind == Sniff::NeedMore {
        let mut chunk = [0u8; SNIFF_BUF];
        let room = SNIFF_BUF - prefix.len();
        let n = stream.read(&mut chunk[..room]).await?;
        if n == 0 {
            // EOF before anything decisive: echo what came and close.
            kind = Sniff::Raw;
            break;
        }
        prefix.extend_from_slice(&chunk[..n]);
        kind = route::sniff(&prefix);
        if kind == Sniff::NeedMore && prefix.len() == SNIFF_BUF {
            kind = Sniff::Raw;
        }
    }
    let ctx = Arc::new(ctx);
    let io = Prefixed { prefix, pos: 0, inner: stream };
    match kind {
        Sniff::Http2 => {
            let svc = service_fn(move |req| handle(req, ctx.clone()));
            hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(io), svc)
                .await
                .map_err(io::Error::other)
        }
        Sniff::Http1 => {
            let svc = service_fn(move |req| handle(req, ctx.clone()));
            hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(io), svc)
                .await
                .map_err(io::Error::other)
        }
        Sniff::Raw | Sniff::NeedMore => raw_echo(io, &ctx).await,
    }
}

/// What every request on one connection shares.
#[derive(Debug)]
struct ConnCtx {
    id: Arc<Identity>,
    log: Arc<Log>,
    fail_counts: Arc<FailCounts>,
    peer: SocketAddr,
    local: SocketAddr,
}

/// One HTTP request: route from the head, log, read the body, wait out the delay, answer.
async fn handle(req: Request<Incoming>, ctx: Arc<ConnCtx>) -> Result<Response<Full<Bytes>>, Infallible> {
    let arrived = Instant::now();
    let (parts, mut body) = req.into_parts();
    let head = RequestHead::from_parts(&parts, ctx.peer, ctx.local);
    let mut reply = route::route(&head, &ctx.id);
    hooks::apply(&mut reply, &head, &ctx.id.pod, &ctx.fail_counts);
    // Logged now, before the body and any delay: tests read "reached" from this line.
    ctx.log.line(&route::http_log_line(&reply, SystemTime::now()));

    let mut body_bytes: u64 = 0;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(f) => body_bytes += f.data_ref().map_or(0, |d| d.len() as u64),
            // The client went away mid-body; the answer below will not be delivered anyway.
            Err(_) => break,
        }
    }
    reply.body.insert("bodyBytes".into(), body_bytes.into());
    // Only when asked: tokio rounds a timer up to its next millisecond tick, so even a
    // deadline already passed would add ~1 ms to every answer.
    if !reply.delay.is_zero() {
        tokio::time::sleep_until(arrived + reply.delay).await;
    }

    let status = reply.status;
    // 204 and 304 carry no body by definition; HEAD answers are stripped by hyper.
    let payload = if matches!(status.as_u16(), 204 | 304) {
        Bytes::new()
    } else {
        Bytes::from(route::payload(reply.body, reply.size))
    };
    let mut resp = Response::new(Full::new(payload));
    *resp.status_mut() = status;
    if !reply.headers.iter().any(|(k, _)| k == header::CONTENT_TYPE) {
        resp.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/json"));
    }
    for (name, value) in reply.headers {
        resp.headers_mut().append(name, value);
    }
    Ok(resp)
}

/// Copies everything back until the client's EOF, then closes; logs the byte counts.
async fn raw_echo(mut io: Prefixed<TcpStream>, ctx: &ConnCtx) -> io::Result<()> {
    let mut stats = RawStats::default();
    let result = async {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = io.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            stats.bytes_in += n as u64;
            io.write_all(&buf[..n]).await?;
            stats.bytes_out += n as u64;
        }
        io.shutdown().await
    }
    .await;
    ctx.log.line(&route::tcp_log_line(&ctx.id, ctx.peer, ctx.local, stats, SystemTime::now()));
    result
}

/// A stream whose first bytes (already read while sniffing) are replayed before the rest.
#[derive(Debug)]
struct Prefixed<S> {
    prefix: Vec<u8>,
    pos: usize,
    inner: S,
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.pos < this.prefix.len() {
            let n = buf.remaining().min(this.prefix.len() - this.pos);
            buf.put_slice(&this.prefix[this.pos..this.pos + n]);
            this.pos += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
