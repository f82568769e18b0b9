//! Upstream HTTP connections, pooled per cluster endpoint. An endpoint's connections live in
//! its runtime state ([`crate::upstream::Endpoint`]), so taking one is a short lock and no
//! map lookup.
//!
//! HTTP/1.1: the newest idle connection is reused first (its socket and the peer's are the
//! warmest). The DestinationRule's `connectionPool` applies here:
//! `tcp.connectTimeout` bounds the dial, `tcp.maxConnections` caps the cluster's open
//! connections (a request over it waits as pending, failing fast with `UO` past
//! `http1MaxPendingRequests`), `http.maxRequestsPerConnection` retires a connection after that
//! many requests, and `http.idleTimeout` closes connections idle longer than that.
//!
//! A connection goes back to the pool only when its response body has ended ([`Lease`]):
//! HTTP/1.1 cannot start the next request mid-body. A request sent on a pooled connection that
//! the peer closed meanwhile comes back unsent from hyper and goes out on another connection.
//!
//! HTTP/2 (h2c, gRPC): one multiplexed connection per endpoint, as Envoy keeps, and another
//! only when each has `maxConcurrentStreams` open streams; a dial happens with the endpoint's
//! connections locked, so concurrent requests wait for it rather than dial their own.
//! `tcp.connectTimeout` bounds the dial, `maxRequestsPerConnection` moves new streams to a fresh
//! connection (the old one finishes its streams, then closes), and `idleTimeout` closes a
//! connection without streams for that long. `tcp.maxConnections` does not apply:
//! `http2MaxRequests` bounds HTTP/2 (see [`crate::upstream::Cluster`]).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::Request;
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::TokioExecutor;
use tokio::time::Instant;

use crate::proxy::upstream::{Body, ConnectError, MeshConnector};
use crate::upstream::{Cluster, Endpoint, Overflow};

/// One idle connection.
#[derive(Debug)]
pub struct Idle {
    send: http1::SendRequest<Body>,
    /// Requests it has carried.
    served: u32,
    since: Instant,
}

/// An endpoint's idle connections, newest last.
#[derive(Debug, Default)]
pub struct IdleConns(Mutex<Vec<Idle>>);

impl IdleConns {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Idle>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The newest connection idle for less than `idle_timeout`; older ones are closed.
    fn take(&self, idle_timeout: Option<std::time::Duration>) -> Option<Idle> {
        let mut idle = self.lock();
        if let Some(t) = idle_timeout {
            let now = Instant::now();
            idle.retain(|c| now.duration_since(c.since) < t && !c.send.is_closed());
        }
        while let Some(c) = idle.pop() {
            if !c.send.is_closed() {
                return Some(c);
            }
        }
        None
    }

    /// Closes one idle connection (freeing a `tcp.maxConnections` slot); whether there was one.
    fn evict_one(&self) -> bool {
        self.lock().pop().is_some()
    }

    /// How many connections are idle.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no connection is idle.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Why a request could not be sent upstream.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error(transparent)]
    Overflow(#[from] Overflow),
    #[error("connect timeout after {0:?}")]
    ConnectTimeout(std::time::Duration),
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error("HTTP handshake: {0}")]
    Handshake(#[source] hyper::Error),
    #[error(transparent)]
    Request(hyper::Error),
}

impl SendError {
    /// The request never reached the endpoint (Envoy's `connect-failure`, flag `UF`).
    pub fn is_connect(&self) -> bool {
        matches!(self, SendError::ConnectTimeout(_) | SendError::Connect(_) | SendError::Handshake(_))
    }

    /// The HTTP/2 peer refused the stream (`RST_STREAM` with `REFUSED_STREAM`): it did not
    /// process the request, so Istio's default policy retries it (`refused-stream`).
    pub fn is_refused_stream(&self) -> bool {
        let SendError::Request(e) = self else { return false };
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
        while let Some(err) = source {
            if let Some(h2) = err.downcast_ref::<h2::Error>() {
                return h2.reason() == Some(h2::Reason::REFUSED_STREAM);
            }
            source = err.source();
        }
        false
    }
}

/// A connection carrying a response: [`Lease::release`] when its body has ended puts an
/// HTTP/1.1 connection back, and dropping the lease closes it. An HTTP/2 lease counts an open
/// stream on the shared connection until it is released or dropped.
#[derive(Debug)]
pub struct Lease(Held);

#[derive(Debug)]
enum Held {
    Http1 {
        conn: Option<Idle>,
        endpoint: Arc<Endpoint>,
        cluster: Arc<Cluster>,
    },
    /// Held for its drop, which ends the stream.
    Http2 {
        _open: OpenStream,
    },
}

impl Lease {
    /// The response body ended: the connection may carry another request.
    pub fn release(self) {
        let Held::Http1 { conn, endpoint, cluster } = self.0 else { return };
        let Some(mut c) = conn else { return };
        let spent = cluster.max_requests_per_connection().is_some_and(|max| c.served >= max);
        if spent || c.send.is_closed() {
            return;
        }
        c.since = Instant::now();
        endpoint.state.idle.lock().push(c);
        // A request pending on tcp.maxConnections may take it.
        cluster.notify_connection_available();
    }
}

/// Sends `req` (origin-form URI, `Host` set) to `endpoint` of `cluster` on a pooled or new
/// connection.
pub async fn send(
    connector: &MeshConnector,
    cluster: &Arc<Cluster>,
    endpoint: &Arc<Endpoint>,
    mut req: Request<Body>,
) -> Result<(http::Response<Incoming>, Lease), SendError> {
    let mut pending = None;
    loop {
        let (mut conn, fresh) = match endpoint.state.idle.take(cluster.idle_timeout()) {
            Some(c) => (c, false),
            None => match cluster.try_connection() {
                // Boxed: dialling (HBONE's TLS handshake) is a large future on a cold path, and
                // it would otherwise grow every request's future, which is moved per request.
                Ok(slot) => (Box::pin(open(connector, cluster, endpoint.addr, slot)).await?, true),
                Err(_) => {
                    // At tcp.maxConnections: wait for a connection to come back or close.
                    if pending.is_none() {
                        pending = Some(cluster.try_pending()?);
                    }
                    let available = cluster.connection_available();
                    tokio::pin!(available);
                    available.as_mut().enable();
                    if !endpoint.state.idle.is_empty() {
                        continue;
                    }
                    // A slot held by an idle connection to another endpoint is freed for this
                    // one; its close wakes us like any other.
                    let _ = cluster.endpoints().iter().any(|e| e.state.idle.evict_one());
                    available.await;
                    continue;
                }
            },
        };
        // No longer waiting for a connection.
        pending = None;
        if !fresh && conn.send.ready().await.is_err() {
            continue;
        }
        match conn.send.try_send_request(req).await {
            Ok(resp) => {
                conn.served += 1;
                let lease = Lease(Held::Http1 {
                    conn: Some(conn),
                    endpoint: endpoint.clone(),
                    cluster: cluster.clone(),
                });
                return Ok((resp, lease));
            }
            Err(mut e) => match e.take_message() {
                // The peer closed the pooled connection before the request was written.
                Some(r) if !fresh => req = r,
                _ => return Err(SendError::Request(e.into_error())),
            },
        }
    }
}

/// Dials `addr` within the connect timeout and starts an HTTP/1.1 connection on it; the
/// connection holds its `tcp.maxConnections` slot until it closes.
async fn open(
    connector: &MeshConnector,
    cluster: &Cluster,
    addr: SocketAddr,
    slot: crate::upstream::ConnectionPermit,
) -> Result<Idle, SendError> {
    let timeout = cluster.connect_timeout();
    let io = tokio::time::timeout(timeout, connector.connect(addr))
        .await
        .map_err(|_| SendError::ConnectTimeout(timeout))??;
    let (send, conn) = http1::Builder::new().handshake(io).await.map_err(SendError::Handshake)?;
    tokio::spawn(async move {
        let _slot = slot;
        if let Err(e) = conn.await {
            tracing::debug!(%addr, error = %e, "upstream HTTP/1.1 connection ended with an error");
        }
    });
    Ok(Idle { send, served: 0, since: Instant::now() })
}

/// An endpoint's HTTP/2 connections, shared by its requests. The lock is held while dialling,
/// so concurrent requests share one dial.
#[derive(Debug, Default)]
pub struct H2Conns(tokio::sync::Mutex<Vec<Multiplexed>>);

/// One HTTP/2 connection.
#[derive(Debug)]
struct Multiplexed {
    send: http2::SendRequest<Body>,
    /// Streams it has been given.
    served: u32,
    streams: Arc<Streams>,
}

/// The open streams of an HTTP/2 connection and when the last one ended (for `idleTimeout`).
#[derive(Debug)]
struct Streams {
    open: AtomicUsize,
    idle_since: Mutex<Instant>,
}

impl Streams {
    /// Whether no stream has been open for `t` or longer.
    fn idle_for(&self, t: Duration) -> bool {
        self.open.load(Ordering::Acquire) == 0
            && self.idle_since.lock().unwrap_or_else(|e| e.into_inner()).elapsed() >= t
    }
}

/// One open stream; its end marks the connection idle when it was the last.
#[derive(Debug)]
struct OpenStream(Arc<Streams>);

impl OpenStream {
    fn new(streams: Arc<Streams>) -> OpenStream {
        streams.open.fetch_add(1, Ordering::AcqRel);
        OpenStream(streams)
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        // Stamp first: a reader that sees no open stream sees this stream's end time.
        *self.0.idle_since.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Sends `req` (absolute URI) to `endpoint` of `cluster` on one of its HTTP/2 connections: the
/// oldest with a free stream under `maxConcurrentStreams`, or a new one. Connections that
/// closed, carried `maxRequestsPerConnection` streams or sat idle past `idleTimeout` are let go.
pub async fn send_h2(
    connector: &MeshConnector,
    cluster: &Arc<Cluster>,
    endpoint: &Arc<Endpoint>,
    req: Request<Body>,
) -> Result<(http::Response<Incoming>, Lease), SendError> {
    let (mut send, stream) = {
        let mut conns = endpoint.state.h2.0.lock().await;
        // Dropping a handle lets its connection finish its streams and close.
        conns.retain(|c| {
            !c.send.is_closed()
                && cluster.max_requests_per_connection().is_none_or(|max| c.served < max)
                && !cluster.idle_timeout().is_some_and(|t| c.streams.idle_for(t))
        });
        let free = |c: &&mut Multiplexed| {
            cluster
                .max_concurrent_streams()
                .is_none_or(|max| c.streams.open.load(Ordering::Acquire) < max as usize)
        };
        let c = match conns.iter_mut().find(free) {
            Some(c) => c,
            None => {
                // Boxed: the dial is a large future on a cold path (see `send`).
                conns.push(Box::pin(open_h2(connector, cluster, endpoint.addr)).await?);
                conns.last_mut().expect("just pushed")
            }
        };
        c.served += 1;
        (c.send.clone(), OpenStream::new(c.streams.clone()))
    };
    send.ready().await.map_err(SendError::Request)?;
    let resp = send.send_request(req).await.map_err(SendError::Request)?;
    Ok((resp, Lease(Held::Http2 { _open: stream })))
}

/// Dials `addr` within the connect timeout and starts an HTTP/2 connection on it, closed by
/// its task once it has had no stream for the cluster's `idleTimeout`.
async fn open_h2(
    connector: &MeshConnector,
    cluster: &Cluster,
    addr: SocketAddr,
) -> Result<Multiplexed, SendError> {
    let timeout = cluster.connect_timeout();
    let io = tokio::time::timeout(timeout, connector.connect(addr))
        .await
        .map_err(|_| SendError::ConnectTimeout(timeout))??;
    let (send, conn) =
        http2::Builder::new(TokioExecutor::new()).handshake(io).await.map_err(SendError::Handshake)?;
    let streams = Arc::new(Streams { open: AtomicUsize::new(0), idle_since: Mutex::new(Instant::now()) });
    let idle_timeout = cluster.idle_timeout();
    let watched = streams.clone();
    tokio::spawn(async move {
        tokio::pin!(conn);
        loop {
            let check = async {
                match idle_timeout {
                    Some(t) => tokio::time::sleep(t).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        tracing::debug!(%addr, error = %e, "upstream HTTP/2 connection ended with an error");
                    }
                    return;
                }
                // Dropping the connection closes it; the handle in the pool then reads closed.
                () = check => if idle_timeout.is_some_and(|t| watched.idle_for(t)) { return },
            }
        }
    });
    Ok(Multiplexed { send, served: 0, streams })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use hyper_util::rt::TokioIo;
    use tokio::net::{TcpListener, TcpStream};

    use super::*;
    use crate::proxy::upstream::UpstreamIo;

    /// An HTTP/1.1 client connection to a real socket; the server end is returned to keep open.
    async fn connection() -> (http1::SendRequest<Body>, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let (c, s) = tokio::join!(TcpStream::connect(addr), l.accept());
        let io = UpstreamIo::Plain(TokioIo::new(c.unwrap()));
        let (send, conn) = http1::handshake::<_, Body>(io).await.unwrap();
        tokio::spawn(conn);
        (send, s.unwrap().0)
    }

    #[tokio::test(start_paused = true)]
    async fn idle_connections_are_reused_newest_first_until_the_idle_timeout() {
        let idle = IdleConns::default();
        let (old, _s1) = connection().await;
        idle.lock().push(Idle { send: old, served: 7, since: Instant::now() });
        tokio::time::advance(Duration::from_secs(6)).await;
        let (new, _s2) = connection().await;
        idle.lock().push(Idle { send: new, served: 1, since: Instant::now() });
        assert_eq!(idle.len(), 2);

        let c = idle.take(Some(Duration::from_secs(10))).expect("an idle connection");
        assert_eq!(c.served, 1, "the newest first");
        idle.lock().push(c);

        tokio::time::advance(Duration::from_secs(5)).await;
        // The old one has been idle 11 s, the new one 5 s.
        let c = idle.take(Some(Duration::from_secs(10))).expect("the new connection");
        assert_eq!(c.served, 1);
        assert!(idle.is_empty(), "the old connection is closed, not kept");
    }

    #[tokio::test(start_paused = true)]
    async fn an_http2_connection_is_idle_only_without_streams_for_the_idle_timeout() {
        let streams = Arc::new(Streams { open: AtomicUsize::new(0), idle_since: Mutex::new(Instant::now()) });
        let t = Duration::from_secs(10);
        tokio::time::advance(Duration::from_secs(6)).await;
        let stream = OpenStream::new(streams.clone());
        tokio::time::advance(Duration::from_secs(30)).await;
        assert!(!streams.idle_for(t), "a long stream keeps the connection busy");
        drop(stream);
        tokio::time::advance(Duration::from_secs(9)).await;
        assert!(!streams.idle_for(t), "idle 9 s of 10");
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(streams.idle_for(t), "idle for the whole timeout since the last stream ended");
    }

    #[tokio::test]
    async fn closed_connections_are_not_handed_out() {
        let idle = IdleConns::default();
        let (send, server) = connection().await;
        idle.lock().push(Idle { send, served: 1, since: Instant::now() });
        drop(server);
        // hyper notices the peer's close on its next read.
        tokio::time::timeout(Duration::from_secs(5), async {
            while !idle.lock().iter().all(|c| c.send.is_closed()) {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("hyper sees the close");
        assert!(idle.take(None).is_none());
    }
}
