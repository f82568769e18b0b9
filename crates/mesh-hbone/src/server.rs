//! The HBONE server: TLS (config per connection, chosen by local address so one listener
//! can serve several local identities), then an HTTP/2 server whose CONNECT streams are each
//! handed to a [`ConnectHandler`] in their own task. Graceful drain sends GOAWAY and lets
//! open streams finish until a deadline.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use h2::RecvStream;
use h2::server::SendResponse;
use http::{Response, StatusCode};
use mesh_identity::peer_identity;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use crate::connect::{ConnectRequest, parse_connect};
use crate::error::HboneError;
use crate::stream::H2Stream;

/// Server tuning. Windows default to the values the throughput bench chose.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// HTTP/2 initial stream window, bytes.
    pub stream_window: u32,
    /// HTTP/2 connection window, bytes.
    pub conn_window: u32,
    /// HTTP/2 max frame size we accept, bytes (16 KiB..16 MiB).
    pub max_frame_size: u32,
    /// Per-stream send buffer limit, bytes.
    pub max_send_buffer: usize,
    /// SETTINGS_MAX_CONCURRENT_STREAMS we advertise, streams per connection.
    pub max_concurrent_streams: u32,
    /// Time allowed for the TLS and HTTP/2 handshakes of a new connection.
    pub handshake_timeout: Duration,
    /// How long open streams may run after shutdown begins before connections are cut.
    pub drain_timeout: Duration,
}

impl Default for ServerSettings {
    fn default() -> Self {
        ServerSettings {
            stream_window: crate::pool::DEFAULT_STREAM_WINDOW,
            conn_window: crate::pool::DEFAULT_CONN_WINDOW,
            max_frame_size: crate::pool::DEFAULT_MAX_FRAME,
            max_send_buffer: crate::pool::DEFAULT_SEND_BUFFER,
            max_concurrent_streams: 1000,
            handshake_timeout: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(30),
        }
    }
}

/// Picks the TLS server config of a connection from its local (destination) address; `None`
/// drops the connection (no local identity there).
pub type ServerConfigResolver = dyn Fn(SocketAddr) -> Option<Arc<rustls::ServerConfig>> + Send + Sync;

/// The TLS side of a server: one fixed config, or one per local address.
#[derive(Clone)]
pub enum ServerTls {
    Fixed(Arc<rustls::ServerConfig>),
    ByLocalAddr(Arc<ServerConfigResolver>),
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServerTls::Fixed(_) => f.write_str("ServerTls::Fixed"),
            ServerTls::ByLocalAddr(_) => f.write_str("ServerTls::ByLocalAddr"),
        }
    }
}

impl ServerTls {
    /// A resolver-backed config.
    pub fn by_local_addr(
        f: impl Fn(SocketAddr) -> Option<Arc<rustls::ServerConfig>> + Send + Sync + 'static,
    ) -> Self {
        ServerTls::ByLocalAddr(Arc::new(f))
    }

    fn config_for(&self, local: SocketAddr) -> Option<Arc<rustls::ServerConfig>> {
        match self {
            ServerTls::Fixed(c) => Some(c.clone()),
            ServerTls::ByLocalAddr(f) => f(local),
        }
    }
}

impl From<Arc<rustls::ServerConfig>> for ServerTls {
    fn from(c: Arc<rustls::ServerConfig>) -> Self {
        ServerTls::Fixed(c)
    }
}

/// Receives every valid CONNECT. It must answer through the [`Responder`]: `accept()` for
/// the tunnel or `refuse(status)`; a responder dropped unanswered (also by a panic) answers
/// 503. Each call runs in its own task; a panic affects only its stream.
pub trait ConnectHandler: Send + Sync + 'static {
    fn handle(&self, req: ConnectRequest, responder: Responder) -> impl Future<Output = ()> + Send;
}

/// The answer channel of one CONNECT stream.
pub struct Responder {
    respond: Option<SendResponse<Bytes>>,
    recv: Option<RecvStream>,
    peer: SocketAddr,
}

impl std::fmt::Debug for Responder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Responder").field("peer", &self.peer).finish()
    }
}

impl Responder {
    /// Answers 200 and returns the tunnel.
    pub fn accept(mut self) -> Result<H2Stream, HboneError> {
        let mut respond = self.respond.take().expect("responder answers once");
        let recv = self.recv.take().expect("responder answers once");
        let resp = Response::builder().status(StatusCode::OK).body(()).expect("static response");
        let send = respond
            .send_response(resp, false)
            .map_err(|source| HboneError::H2 { addr: self.peer, source })?;
        Ok(H2Stream::new(send, recv, None))
    }

    /// Answers `status` (e.g. 401 denied by policy, 503 upstream unreachable) and ends the stream.
    pub fn refuse(mut self, status: StatusCode) {
        if let Some(r) = self.respond.take() {
            send_status(r, status);
        }
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        if let Some(r) = self.respond.take() {
            warn!(peer = %self.peer, "CONNECT handler returned without answering; sending 503");
            send_status(r, StatusCode::SERVICE_UNAVAILABLE);
        }
    }
}

fn send_status(mut respond: SendResponse<Bytes>, status: StatusCode) {
    let resp = Response::builder().status(status).body(()).expect("static response");
    // The peer may already have gone; nothing to do then.
    let _ = respond.send_response(resp, true);
}

/// An HBONE server. Serve it on an already-bound listener (ztunnel binds inside pod netns).
pub struct HboneServer<H> {
    settings: ServerSettings,
    tls: ServerTls,
    handler: Arc<H>,
}

impl<H> std::fmt::Debug for HboneServer<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HboneServer").field("settings", &self.settings).field("tls", &self.tls).finish()
    }
}

impl<H: ConnectHandler> HboneServer<H> {
    pub fn new(settings: ServerSettings, tls: impl Into<ServerTls>, handler: Arc<H>) -> Self {
        HboneServer { settings, tls: tls.into(), handler }
    }

    /// Accepts connections until `shutdown` completes, then drains: stops accepting, sends
    /// GOAWAY on every connection, lets open streams finish for up to
    /// `settings.drain_timeout`, then closes what is left. Returns after the drain.
    pub async fn serve(self, listener: TcpListener, shutdown: impl Future) -> Result<(), HboneError> {
        let listen_addr = listener
            .local_addr()
            .map_err(|source| HboneError::Listener { addr: SocketAddr::from(([0, 0, 0, 0], 0)), source })?;
        let settings = Arc::new(self.settings);
        let (drain_tx, drain_rx) = watch::channel(false);
        let mut conns = JoinSet::new();
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
                accepted = listener.accept() => match accepted {
                    Ok((tcp, peer)) => {
                        let conn = ServerConn {
                            settings: settings.clone(),
                            tls: self.tls.clone(),
                            handler: self.handler.clone(),
                            drain: drain_rx.clone(),
                        };
                        conns.spawn(conn.run(tcp, peer));
                    }
                    Err(e) => {
                        // Usually EMFILE/ENFILE: back off briefly rather than spin.
                        warn!(listener = %listen_addr, error = %e, "HBONE accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
            }
        }
        drop(listener);
        info!(listener = %listen_addr, connections = conns.len(), "HBONE server draining");
        let _ = drain_tx.send(true);
        let drained = tokio::time::timeout(settings.drain_timeout, async {
            while conns.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            warn!(listener = %listen_addr, left = conns.len(), "drain deadline reached; closing connections");
            conns.shutdown().await;
        }
        Ok(())
    }
}

struct ServerConn<H> {
    settings: Arc<ServerSettings>,
    tls: ServerTls,
    handler: Arc<H>,
    drain: watch::Receiver<bool>,
}

impl<H: ConnectHandler> ServerConn<H> {
    async fn run(mut self, tcp: TcpStream, peer: SocketAddr) {
        let local = match tcp.local_addr() {
            Ok(a) => a,
            Err(e) => {
                debug!(%peer, error = %e, "HBONE connection lost before start");
                return;
            }
        };
        let _ = tcp.set_nodelay(true);
        let Some(config) = self.tls.config_for(local) else {
            warn!(%peer, %local, "no HBONE identity serves this local address; dropping connection");
            return;
        };
        let settings = self.settings.clone();
        let handshake = async {
            let mut tls = tokio_rustls::TlsAcceptor::from(config)
                .accept(tcp)
                .await
                .map_err(|source| HboneError::Tls { addr: peer, source })?;
            tls.get_mut().1.set_buffer_limit(Some(crate::pool::TLS_BUFFER_LIMIT));
            let identity = peer_identity(tls.get_ref().1).map_err(|e| HboneError::Tls {
                addr: peer,
                source: std::io::Error::new(std::io::ErrorKind::PermissionDenied, e),
            })?;
            let conn = h2::server::Builder::new()
                .initial_window_size(settings.stream_window)
                .initial_connection_window_size(settings.conn_window)
                .max_frame_size(settings.max_frame_size)
                .max_send_buffer_size(settings.max_send_buffer)
                .max_concurrent_streams(settings.max_concurrent_streams)
                .handshake::<_, Bytes>(tls)
                .await
                .map_err(|e| HboneError::from_h2(peer, e))?;
            Ok::<_, HboneError>((identity, conn))
        };
        let (identity, mut conn) = match tokio::time::timeout(settings.handshake_timeout, handshake).await {
            Ok(Ok(v)) => v,
            Ok(Err(e)) => {
                // Peers without a valid certificate end here: the TLS layer refused them.
                warn!(%peer, %local, error = %e, "HBONE handshake failed");
                return;
            }
            Err(_) => {
                warn!(%peer, %local, "HBONE handshake timed out");
                return;
            }
        };
        debug!(%peer, %local, %identity, "HBONE connection established");
        let mut draining = *self.drain.borrow();
        if draining {
            conn.graceful_shutdown();
        }
        loop {
            let next = tokio::select! {
                next = conn.accept() => next,
                changed = self.drain.changed(), if !draining => {
                    if changed.is_err() || *self.drain.borrow() {
                        draining = true;
                        conn.graceful_shutdown();
                    }
                    continue;
                }
            };
            match next {
                None => break,
                Some(Ok((req, respond))) => self.dispatch(req, respond, &identity, peer, local),
                Some(Err(e)) => {
                    if !e.is_go_away() || e.reason() != Some(h2::Reason::NO_ERROR) {
                        debug!(%peer, error = %e, "HBONE connection ended");
                    }
                    break;
                }
            }
        }
    }

    fn dispatch(
        &self,
        req: http::Request<RecvStream>,
        mut respond: SendResponse<Bytes>,
        identity: &mesh_api::SpiffeId,
        peer: SocketAddr,
        local: SocketAddr,
    ) {
        let (parts, body) = req.into_parts();
        let head = http::Request::from_parts(parts, ());
        let parsed = match parse_connect(&head) {
            Ok(p) => p,
            Err(status) => {
                debug!(%peer, %identity, method = %head.method(), uri = %head.uri(), %status, "refusing HBONE request");
                let resp = Response::builder().status(status).body(()).expect("static response");
                let _ = respond.send_response(resp, true);
                return;
            }
        };
        let req = ConnectRequest {
            authority: parsed.authority,
            peer_identity: identity.clone(),
            peer_addr: peer,
            local_addr: local,
            forwarded_for: parsed.forwarded_for,
            baggage: parsed.baggage,
            traceparent: parsed.traceparent,
        };
        let responder = Responder { respond: Some(respond), recv: Some(body), peer };
        let handler = self.handler.clone();
        // Own task per stream: streams run in parallel across worker threads and a panicking
        // handler ends only its own task (its Responder answers 503 on unwind).
        tokio::spawn(async move { handler.handle(req, responder).await });
    }
}
