//! Bidirectional relay between a client and a server stream: half-close aware (EOF one way
//! shuts down that write side while the other way keeps flowing), bytes counted per chunk
//! into the connection's [`ConnGuard`], and cut short when the drain deadline passes.

use std::io;

use mesh_telemetry::ConnGuard;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::drain::DrainWatch;

/// Buffer per direction, bytes: large enough for full TLS records, small enough for 10,000
/// connections.
const BUF: usize = 32 * 1024;

async fn one_way<R, W>(mut r: R, mut w: W, count: impl Fn(u64)) -> io::Result<u64>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; BUF];
    let mut total = 0u64;
    loop {
        let n = r.read(&mut buf).await?;
        if n == 0 {
            // Half-close: the peer may still answer.
            let _ = w.shutdown().await;
            return Ok(total);
        }
        w.write_all(&buf[..n]).await?;
        total += n as u64;
        count(n as u64);
    }
}

/// Why a relay ended early.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("closed at the drain deadline")]
    Drained,
}

/// Copies both ways until both sides finished, an error, or the drain deadline.
pub async fn relay<C, S>(
    client: C,
    server: S,
    guard: &ConnGuard,
    drain: &DrainWatch,
) -> Result<(), RelayError>
where
    C: AsyncRead + AsyncWrite + Send,
    S: AsyncRead + AsyncWrite + Send,
{
    let (cr, cw) = tokio::io::split(client);
    let (sr, sw) = tokio::io::split(server);
    let up = one_way(cr, sw, |n| guard.add_to_server(n));
    let down = one_way(sr, cw, |n| guard.add_to_client(n));
    tokio::select! {
        r = async { tokio::try_join!(up, down) } => r.map(|_| ()).map_err(RelayError::from),
        _ = drain.forced() => Err(RelayError::Drained),
    }
}
