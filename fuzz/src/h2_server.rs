//! The server side of HBONE's HTTP/2 fed raw bytes: an `h2::server` connection, built with
//! `mesh_hbone::ServerSettings::default()` as the HBONE server builds it, over an in-memory
//! duplex instead of TLS. The client half writes the HTTP/2 preface and then the fuzz input,
//! lets the server work through it, and closes; every request h2 decodes goes through [`crate::hbone::check_request`] and is
//! answered as `mesh_hbone`'s server answers (error status and end of stream, or `200` and a
//! tunnel, here an echo of the request body). This fuzzes h2's frame and HPACK decoding
//! together with our request handling.

use std::time::Duration;

use bytes::Bytes;
use h2::RecvStream;
use h2::server::SendResponse;
use http::{Response, StatusCode};
use mesh_hbone::ServerSettings;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::runtime::Runtime;
use tokio::task::JoinSet;

/// The client connection preface (RFC 9113 §3.4); the fuzz input follows it.
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Bytes of one direction of the in-memory pipe.
const PIPE_BYTES: usize = 64 * 1024;
/// Most body bytes a tunnel echoes, so one input cannot make the server work for long.
const ECHO_LIMIT: usize = 256 * 1024;
/// Scheduler turns given to the server between the last input byte and the client's close.
const SETTLE_YIELDS: usize = 32;
/// Time one input may take; the client has closed by then, so the server must be done.
const DEADLINE: Duration = Duration::from_secs(2);

thread_local! {
    // One runtime for all inputs: building one per input would dominate the run time.
    static RUNTIME: Runtime =
        tokio::runtime::Builder::new_current_thread().enable_time().build().expect("tokio runtime");
}

/// Runs one input: the server must finish (client closed after the input) without panic.
pub fn check_frames(data: &[u8]) {
    RUNTIME.with(|rt| {
        let done = rt.block_on(async { tokio::time::timeout(DEADLINE, run(data)).await.is_ok() });
        assert!(done, "h2 server still running {DEADLINE:?} after the client closed");
    });
}

async fn run(data: &[u8]) {
    let (client, server) = tokio::io::duplex(PIPE_BYTES);
    let (mut from_server, mut to_server) = tokio::io::split(client);
    let write = async move {
        // The server may stop reading early (GOAWAY); a failed write is then expected.
        let _ = to_server.write_all(PREFACE).await;
        let _ = to_server.write_all(data).await;
        // h2's `accept` drops requests still queued when it sees EOF in the same poll, so let
        // the server (and its tunnel tasks) handle what was sent before closing.
        for _ in 0..SETTLE_YIELDS {
            tokio::task::yield_now().await;
        }
        let _ = to_server.shutdown().await;
    };
    let read = async move {
        let mut sink = vec![0u8; 16 * 1024];
        while let Ok(n) = from_server.read(&mut sink).await {
            if n == 0 {
                break;
            }
        }
    };
    tokio::join!(write, read, serve(server));
}

/// What `mesh_hbone`'s server does with one connection, minus TLS and the handler.
async fn serve(io: tokio::io::DuplexStream) {
    let s = ServerSettings::default();
    let handshake = h2::server::Builder::new()
        .initial_window_size(s.stream_window)
        .initial_connection_window_size(s.conn_window)
        .max_frame_size(s.max_frame_size)
        .max_send_buffer_size(s.max_send_buffer)
        .max_concurrent_streams(s.max_concurrent_streams)
        .handshake::<_, Bytes>(io);
    let Ok(mut conn) = handshake.await else { return };
    // Tunnels end with the connection (dropping the set aborts them), as their streams do.
    let mut tunnels = JoinSet::new();
    while let Some(next) = conn.accept().await {
        let Ok((req, respond)) = next else { break };
        let (parts, body) = req.into_parts();
        let head = http::Request::from_parts(parts, ());
        match crate::hbone::check_request(&head) {
            Err(status) => send_status(respond, status),
            Ok(_) => {
                tunnels.spawn(echo(respond, body));
            }
        }
        // Reap finished tunnels so a long input does not pile them up.
        while tunnels.try_join_next().is_some() {}
    }
}

fn send_status(mut respond: SendResponse<Bytes>, status: StatusCode) {
    let resp = Response::builder().status(status).body(()).expect("static response");
    let _ = respond.send_response(resp, true);
}

/// An accepted CONNECT: `200`, then the request body back, with flow control released as
/// it is consumed (as `H2Stream` does), and END_STREAM when the client's body ends.
async fn echo(mut respond: SendResponse<Bytes>, mut body: RecvStream) {
    let resp = Response::builder().status(StatusCode::OK).body(()).expect("static response");
    let Ok(mut send) = respond.send_response(resp, false) else { return };
    let mut echoed = 0usize;
    while let Some(chunk) = body.data().await {
        let Ok(chunk) = chunk else { return };
        let _ = body.flow_control().release_capacity(chunk.len());
        echoed += chunk.len();
        if echoed > ECHO_LIMIT || send.send_data(chunk, false).is_err() {
            return;
        }
    }
    let _ = send.send_data(Bytes::new(), true);
}
