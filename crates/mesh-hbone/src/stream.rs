//! [`H2Stream`]: the body of a CONNECT stream as a byte stream, with HTTP/2 flow control
//! honoured — receive window released only as the reader consumes data (so a slow reader
//! slows the sender), send capacity reserved before writing. Written bytes are copied into
//! shared write arenas (see [`ARENA`]) rather than a fresh allocation per write.

use std::io;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes, BytesMut};
use h2::{RecvStream, SendStream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Size of one write arena, bytes; also the most one `poll_write` takes. Writes are copied
/// into an arena and split off it as frames, so busy streams allocate once per arena, not
/// once per write. Page faults on fresh allocations were ~12 % of HBONE's CPU in the
/// throughput bench, most from the per-write copy (glibc returns freed memory to the kernel
/// and it faults back in zeroed); reused arenas stay mapped.
const ARENA: usize = 128 * 1024;
/// Writes smaller than this get their own exact allocation (bytes): small blocks are cheap
/// in malloc's bins, and small-message streams then hold no arena.
const SMALL_WRITE: usize = 4 * 1024;
/// Arenas kept for reuse, process-wide (count): at most 4 MiB held while idle.
const SPARE_ARENAS: usize = 32;

/// Write arenas, shared by all streams. One may still be referenced by frames h2 has not
/// written yet; it is reused through its unused tail, or whole once those are gone
/// (`try_reclaim`).
static SPARE: Mutex<Vec<BytesMut>> = Mutex::new(Vec::new());

/// An arena with room for `min` (≤ [`ARENA`]) bytes; the most recently returned first, so a
/// stream writing steadily keeps filling the same arena.
fn take_arena(min: usize) -> BytesMut {
    let mut spare = SPARE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(i) = spare.iter_mut().rposition(|a| a.capacity() >= min || a.try_reclaim(ARENA)) {
        return spare.remove(i);
    }
    drop(spare);
    BytesMut::with_capacity(ARENA)
}

fn give_arena(arena: BytesMut) {
    let mut spare = SPARE.lock().unwrap_or_else(|e| e.into_inner());
    if spare.len() >= SPARE_ARENAS {
        // Full: make room by forgetting a used-up arena whose frames are still in flight
        // (freed when they are), never one that can still take writes.
        let useless = |a: &mut BytesMut| a.capacity() < SMALL_WRITE && !a.try_reclaim(ARENA);
        match spare.iter_mut().position(useless) {
            Some(i) => drop(spare.remove(i)),
            None => return,
        }
    }
    spare.push(arena);
}

/// Something kept alive as long as the stream (the pool's slot on its connection).
pub(crate) type Guard = Box<dyn Send + Sync>;

/// A CONNECT tunnel: `AsyncRead + AsyncWrite + Unpin`. `shutdown()` sends END_STREAM (a
/// half-close; reading continues); a peer reset surfaces as an I/O error
/// (`ConnectionReset`); the peer's END_STREAM as EOF. Dropping it resets the stream if it is
/// still open.
pub struct H2Stream {
    send: SendStream<Bytes>,
    recv: RecvStream,
    /// Received data not yet read; its window is released as it is read.
    pending: Bytes,
    write_closed: bool,
    _guard: Option<Guard>,
}

impl std::fmt::Debug for H2Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H2Stream")
            .field("stream_id", &self.send.stream_id())
            .field("pending", &self.pending.len())
            .field("write_closed", &self.write_closed)
            .finish()
    }
}

impl H2Stream {
    pub(crate) fn new(send: SendStream<Bytes>, recv: RecvStream, guard: Option<Guard>) -> Self {
        H2Stream { send, recv, pending: Bytes::new(), write_closed: false, _guard: guard }
    }

    /// `data` as an owned frame payload, copied once.
    fn copy_in(&mut self, data: &[u8]) -> Bytes {
        if data.len() < SMALL_WRITE {
            return Bytes::copy_from_slice(data);
        }
        // Taken and handed back per write: a stream between writes holds no arena (ztunnel
        // keeps 10,000s of mostly idle streams), and concurrent streams share the tails.
        let mut arena = take_arena(data.len());
        arena.extend_from_slice(data);
        let out = arena.split().freeze();
        give_arena(arena);
        out
    }

    /// The HTTP/2 stream id (for logs).
    pub fn stream_id(&self) -> u32 {
        self.send.stream_id().into()
    }
}

fn h2_to_io(e: h2::Error) -> io::Error {
    if e.is_io() {
        return e.into_io().unwrap_or_else(|| io::Error::other("h2 I/O error"));
    }
    let kind =
        if e.is_reset() || e.is_go_away() { io::ErrorKind::ConnectionReset } else { io::ErrorKind::Other };
    io::Error::new(kind, e)
}

impl AsyncRead for H2Stream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        while this.pending.is_empty() {
            match ready!(this.recv.poll_data(cx)) {
                None => return Poll::Ready(Ok(())),
                Some(Ok(b)) => this.pending = b,
                Some(Err(e)) if e.reason() == Some(h2::Reason::NO_ERROR) && !e.is_io() => {
                    // A NO_ERROR reset after the peer is done writing is a clean close.
                    return Poll::Ready(Ok(()));
                }
                Some(Err(e)) => return Poll::Ready(Err(h2_to_io(e))),
            }
        }
        let n = this.pending.len().min(buf.remaining());
        buf.put_slice(&this.pending[..n]);
        this.pending.advance(n);
        // Releasing as we consume: the peer may send more only as fast as we read.
        let _ = this.recv.flow_control().release_capacity(n);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for H2Stream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let this = &mut *self;
        if this.write_closed {
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::BrokenPipe, "stream already shut down")));
        }
        let buf = &buf[..buf.len().min(ARENA)];
        this.send.reserve_capacity(buf.len());
        loop {
            match ready!(this.send.poll_capacity(cx)) {
                Some(Ok(0)) => continue,
                Some(Ok(n)) => {
                    let data = this.copy_in(&buf[..n.min(buf.len())]);
                    let n = data.len();
                    this.send.send_data(data, false).map_err(h2_to_io)?;
                    return Poll::Ready(Ok(n));
                }
                Some(Err(e)) => return Poll::Ready(Err(h2_to_io(e))),
                None => {
                    // The stream can no longer send: find out why.
                    let reason = ready!(this.send.poll_reset(cx)).map_err(h2_to_io)?;
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::ConnectionReset,
                        format!("stream reset by peer: {reason}"),
                    )));
                }
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // The connection task writes queued frames out; nothing is buffered here.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if !this.write_closed {
            this.write_closed = true;
            this.send.send_data(Bytes::new(), true).map_err(h2_to_io)?;
        }
        Poll::Ready(Ok(()))
    }
}
