//! Write coalescing for downstream HTTP/2 connections. Many streams share one connection and
//! their responses become ready one task at a time. The h2 codec keeps a DATA payload of 1 KiB
//! or more by reference and writes it out before it encodes the next frame, so without help
//! every response costs a `writev` of its own (on loopback each write also pays for the peer's
//! receive path and wake-up). [`Coalesce`] copies what the codec writes into a buffer and,
//! when the codec flushes, leaves the bytes there and wakes the connection task instead: the
//! other ready streams queue their frames meanwhile, and the buffer goes out in one write when
//! the task runs again, before it reads. The delay is one pass of the scheduler's queue, not a
//! timer; the buffer is written at once when it would exceed [`MAX_BUFFERED`] bytes, and
//! writes of [`WRITE_THROUGH`] bytes or more are not copied.
//!
//! HTTP/1.1 has one response in flight per connection, nothing to batch: the wrapper works only
//! when the connection starts with the HTTP/2 preface, and passes everything through otherwise.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

const PREFACE: &[u8] = b"PRI * HTTP/2";

/// Bytes held before a write goes out regardless (bytes).
pub const MAX_BUFFERED: usize = 64 * 1024;

/// Writes at least this large go to the socket as they are, after what is buffered: copying
/// them would cost more than the write they share (bytes).
pub const WRITE_THROUGH: usize = 8 * 1024;

/// A connection whose writes are coalesced once it is known to carry HTTP/2.
#[derive(Debug)]
pub struct Coalesce<T> {
    inner: T,
    /// `None` until the first bytes are read.
    h2: Option<bool>,
    /// Written by the codec, not yet by us.
    buf: Vec<u8>,
    /// The task was woken to write `buf` out.
    scheduled: bool,
}

impl<T> Coalesce<T> {
    pub fn new(inner: T) -> Self {
        Coalesce { inner, h2: None, buf: Vec::new(), scheduled: false }
    }

    fn coalescing(&self) -> bool {
        self.h2 == Some(true)
    }
}

impl<T: AsyncWrite + Unpin> Coalesce<T> {
    /// Writes the buffer out.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.buf.is_empty() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.buf))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.buf.drain(..n);
        }
        self.scheduled = false;
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncRead for Coalesce<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        // The task runs again: what the last run left buffered goes out first. A full socket
        // leaves it buffered, with this task registered for writability.
        if !self.buf.is_empty()
            && let Poll::Ready(Err(e)) = self.poll_drain(cx)
        {
            return Poll::Ready(Err(e));
        }
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if self.h2.is_none() && buf.filled().len() > before {
            let got = &buf.filled()[before..];
            let n = got.len().min(PREFACE.len());
            // A first read shorter than the preface's start decides on what it has.
            self.h2 = Some(got[..n] == PREFACE[..n]);
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Coalesce<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        if !self.coalescing() {
            return Pin::new(&mut self.inner).poll_write(cx, data);
        }
        if data.len() >= WRITE_THROUGH {
            ready!(self.poll_drain(cx))?;
            return Pin::new(&mut self.inner).poll_write(cx, data);
        }
        if self.buf.len() + data.len() > MAX_BUFFERED {
            ready!(self.poll_drain(cx))?;
        }
        self.buf.extend_from_slice(data);
        Poll::Ready(Ok(data.len()))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if !self.coalescing() {
            return Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        }
        let len: usize = bufs.iter().map(|b| b.len()).sum();
        if len >= WRITE_THROUGH {
            ready!(self.poll_drain(cx))?;
            return Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        }
        if self.buf.len() + len > MAX_BUFFERED {
            ready!(self.poll_drain(cx))?;
        }
        for b in bufs {
            self.buf.extend_from_slice(b);
        }
        Poll::Ready(Ok(len))
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.buf.is_empty() {
            return Pin::new(&mut self.inner).poll_flush(cx);
        }
        // Deferred to this task's next run (see the module comment).
        if !self.scheduled {
            self.scheduled = true;
            cx.waker().wake_by_ref();
        }
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_drain(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Wake;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn write<T: AsyncWrite + Unpin>(io: &mut Coalesce<T>, cx: &mut Context<'_>, data: &[u8]) {
        assert!(matches!(Pin::new(io).poll_write(cx, data), Poll::Ready(Ok(n)) if n == data.len()));
    }

    #[tokio::test]
    async fn h2_flushes_are_deferred_to_the_next_run_and_go_out_in_one_write() {
        let (a, mut b) = tokio::io::duplex(1 << 20);
        let mut io = Coalesce::new(a);
        b.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await.unwrap();
        let mut pre = [0u8; 24];
        io.read_exact(&mut pre).await.unwrap();

        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = std::task::Waker::from(count.clone());
        let mut cx = Context::from_waker(&waker);
        write(&mut io, &mut cx, b"one ");
        assert!(Pin::new(&mut io).poll_flush(&mut cx).is_ready());
        write(&mut io, &mut cx, b"two ");
        assert!(Pin::new(&mut io).poll_flush(&mut cx).is_ready());
        assert_eq!(count.0.load(Ordering::SeqCst), 1, "one wake-up for the whole run");
        let mut peek = [0u8; 1];
        assert!(
            tokio::time::timeout(std::time::Duration::from_millis(20), b.read(&mut peek)).await.is_err(),
            "nothing is written during the run"
        );

        // The next run reads first; that writes the buffer out.
        b.write_all(b"x").await.unwrap();
        let mut one = [0u8; 1];
        io.read_exact(&mut one).await.unwrap();
        let mut got = [0u8; 8];
        b.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"one two ");
    }

    #[tokio::test]
    async fn a_full_buffer_and_shutdown_write_at_once() {
        let (a, mut b) = tokio::io::duplex(1 << 20);
        let mut io = Coalesce::new(a);
        b.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await.unwrap();
        let mut pre = [0u8; 24];
        io.read_exact(&mut pre).await.unwrap();
        let chunk = vec![7u8; MAX_BUFFERED / 2 + 1];
        io.write_all(&chunk).await.unwrap();
        io.write_all(&chunk).await.unwrap();
        let mut got = vec![0u8; chunk.len()];
        b.read_exact(&mut got).await.unwrap();
        assert_eq!(got, chunk, "the first chunk went out to make room");
        io.write_all(b"tail").await.unwrap();
        io.shutdown().await.unwrap();
        let mut rest = Vec::new();
        b.read_to_end(&mut rest).await.unwrap();
        assert_eq!(rest.len(), chunk.len() + 4);
    }

    #[tokio::test]
    async fn large_writes_follow_the_buffer_without_waiting() {
        let (a, mut b) = tokio::io::duplex(1 << 20);
        let mut io = Coalesce::new(a);
        b.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await.unwrap();
        let mut pre = [0u8; 24];
        io.read_exact(&mut pre).await.unwrap();
        let mut cx = Context::from_waker(std::task::Waker::noop());
        write(&mut io, &mut cx, b"head");
        let big = vec![9u8; WRITE_THROUGH];
        write(&mut io, &mut cx, &big);
        let mut got = vec![0u8; 4 + big.len()];
        b.read_exact(&mut got).await.unwrap();
        assert_eq!(&got[..4], b"head", "the buffered bytes go first");
        assert!(got[4..].iter().all(|&x| x == 9));
    }

    #[tokio::test]
    async fn http1_writes_go_straight_through() {
        let (a, mut b) = tokio::io::duplex(1024);
        let mut io = Coalesce::new(a);
        b.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        let mut line = [0u8; 18];
        io.read_exact(&mut line).await.unwrap();
        let mut cx = Context::from_waker(std::task::Waker::noop());
        write(&mut io, &mut cx, b"HTTP/1.1 200 OK\r\n");
        let mut got = [0u8; 17];
        b.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"HTTP/1.1 200 OK\r\n");
    }
}
