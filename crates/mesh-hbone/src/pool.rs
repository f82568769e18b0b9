//! The HBONE client: a pool of mTLS HTTP/2 connections keyed by (source identity, accepted
//! server identities, address). Many CONNECT streams share a connection up to a cap (ours and
//! the peer's SETTINGS_MAX_CONCURRENT_STREAMS), then another connection is opened; callers
//! that find no room join a dial under way for the same key (up to as many callers as that
//! connection will take) instead of dialing too. Each connection is driven by its own task (so streams are not pinned to one
//! thread), which also pings the peer and closes the connection once idle.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bytes::Bytes;
use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use h2::client::SendRequest;
use mesh_api::SpiffeId;
use mesh_identity::{CertManager, TrustBundle, WorkloadCert, client_config};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::{Instant, sleep_until, timeout};
use tracing::{debug, warn};

use crate::connect::{ConnectParams, build_connect};
use crate::error::HboneError;
use crate::stream::H2Stream;

/// Default HTTP/2 stream window (bytes), chosen from `benches/throughput.rs`.
pub(crate) const DEFAULT_STREAM_WINDOW: u32 = 4 * 1024 * 1024;
/// Default HTTP/2 connection window (bytes).
pub(crate) const DEFAULT_CONN_WINDOW: u32 = 16 * 1024 * 1024;
/// Default max HTTP/2 frame size we accept (bytes).
pub(crate) const DEFAULT_MAX_FRAME: u32 = 256 * 1024;
/// Default per-stream send buffer (bytes).
pub(crate) const DEFAULT_SEND_BUFFER: usize = 1024 * 1024;

/// How much encrypted data rustls may queue for the socket (bytes). Its 64 KiB default splits
/// each 64 KiB HTTP/2 DATA frame (plus TLS overhead) into two `writev` calls.
pub(crate) const TLS_BUFFER_LIMIT: usize = 256 * 1024;

/// Which pooled connection a stream may use: same source identity, same accepted server
/// identities, same address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PoolKey {
    /// Our identity (the client certificate presented).
    pub src: SpiffeId,
    /// The server identities accepted for this destination (workload or waypoint).
    pub dst_identities: Arc<[SpiffeId]>,
    /// The TCP destination (`<pod ip>:15008` or the waypoint's address).
    pub addr: SocketAddr,
    /// The source pod's address when connections must leave from it (in-pod capture: the
    /// socket is made in that pod's netns), so pods never share a connection. `None`: any.
    pub src_addr: Option<std::net::IpAddr>,
}

/// Pool tuning.
#[derive(Debug, Clone)]
pub struct PoolSettings {
    /// Max concurrent streams per connection before another connection is opened (count).
    pub max_streams_per_conn: u32,
    /// A connection with no stream for this long is closed (Istio ztunnel's default is 5 min).
    pub idle_timeout: Duration,
    /// HTTP/2 initial stream window, bytes.
    pub stream_window: u32,
    /// HTTP/2 connection window, bytes.
    pub conn_window: u32,
    /// HTTP/2 max frame size we accept, bytes (16 KiB..16 MiB).
    pub max_frame_size: u32,
    /// Per-stream send buffer limit, bytes.
    pub max_send_buffer: usize,
    /// Interval between HTTP/2 PINGs on a connection.
    pub ping_interval: Duration,
    /// A PING unanswered for this long marks the connection dead.
    pub ping_timeout: Duration,
    /// Time allowed for certificate, TCP connect, TLS and HTTP/2 handshakes together; also
    /// for the answer to a CONNECT.
    pub connect_timeout: Duration,
}

impl Default for PoolSettings {
    fn default() -> Self {
        PoolSettings {
            max_streams_per_conn: 100,
            idle_timeout: Duration::from_secs(60),
            stream_window: DEFAULT_STREAM_WINDOW,
            conn_window: DEFAULT_CONN_WINDOW,
            max_frame_size: DEFAULT_MAX_FRAME,
            max_send_buffer: DEFAULT_SEND_BUFFER,
            ping_interval: Duration::from_secs(10),
            ping_timeout: Duration::from_secs(20),
            connect_timeout: Duration::from_secs(10),
        }
    }
}

/// A snapshot of the pool.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Live connections.
    pub connections: usize,
    /// Streams open on them.
    pub active_streams: usize,
    /// Dials under way.
    pub dialing: usize,
    /// Connections established since the pool was made.
    pub opened_total: u64,
    /// Connections closed (idle, dead, refused) since the pool was made.
    pub closed_total: u64,
}

/// Opens the TCP sockets of the pool (ztunnel opens them in the source pod's netns with
/// SO_MARK).
pub trait Dialer: Send + Sync + 'static {
    /// Opens the TCP connection for `key` (to `key.addr`).
    fn dial(&self, key: &PoolKey) -> BoxFuture<'_, io::Result<TcpStream>>;
}

/// Plain `TcpStream::connect` with TCP_NODELAY.
#[derive(Debug, Clone, Copy, Default)]
pub struct TcpDialer;

impl Dialer for TcpDialer {
    fn dial(&self, key: &PoolKey) -> BoxFuture<'_, io::Result<TcpStream>> {
        let addr = key.addr;
        async move {
            let s = TcpStream::connect(addr).await?;
            s.set_nodelay(true)?;
            Ok(s)
        }
        .boxed()
    }
}

/// Provides the client certificate of an identity and the roots to check servers against.
pub trait ClientCerts: Send + Sync + 'static {
    fn cert(&self, id: &SpiffeId) -> BoxFuture<'_, Result<Arc<WorkloadCert>, HboneError>>;
    fn trust(&self) -> Arc<TrustBundle>;
}

/// A fixed set of certificates (tests, tools).
#[derive(Debug, Clone)]
pub struct StaticCerts {
    certs: HashMap<SpiffeId, Arc<WorkloadCert>>,
    trust: Arc<TrustBundle>,
}

impl StaticCerts {
    pub fn new(certs: impl IntoIterator<Item = (SpiffeId, Arc<WorkloadCert>)>, trust: TrustBundle) -> Self {
        StaticCerts { certs: certs.into_iter().collect(), trust: Arc::new(trust) }
    }
}

/// The error of asking [`StaticCerts`] for an identity it does not hold.
#[derive(Debug, thiserror::Error)]
#[error("no certificate held for this identity")]
struct NotHeld;

impl ClientCerts for StaticCerts {
    fn cert(&self, id: &SpiffeId) -> BoxFuture<'_, Result<Arc<WorkloadCert>, HboneError>> {
        let r = self
            .certs
            .get(id)
            .cloned()
            .ok_or_else(|| HboneError::Certificate { identity: id.clone(), source: Arc::new(NotHeld) });
        futures::future::ready(r).boxed()
    }

    fn trust(&self) -> Arc<TrustBundle> {
        self.trust.clone()
    }
}

/// Certificates from a [`CertManager`]: fetched (and renewed) by the manager on first use of
/// an identity. What the ztunnel and the waypoint give their pools.
#[derive(Debug)]
pub struct ManagedCerts {
    pub certs: CertManager,
    pub trust: Arc<TrustBundle>,
}

impl ClientCerts for ManagedCerts {
    fn cert(&self, id: &SpiffeId) -> BoxFuture<'_, Result<Arc<WorkloadCert>, HboneError>> {
        let id = id.clone();
        async move {
            self.certs
                .fetch(&id)
                .await
                .map_err(|e| HboneError::Certificate { identity: id, source: Arc::new(e) })
        }
        .boxed()
    }

    fn trust(&self) -> Arc<TrustBundle> {
        self.trust.clone()
    }
}

/// The HBONE connection pool. Cheap to clone (shared state).
#[derive(Clone)]
pub struct Pool {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool").field("settings", &self.inner.settings).field("stats", &self.stats()).finish()
    }
}

type DialResult = Result<(), Arc<HboneError>>;

struct Inner {
    settings: PoolSettings,
    certs: Arc<dyn ClientCerts>,
    dialer: Arc<dyn Dialer>,
    keys: Mutex<HashMap<PoolKey, KeyState>>,
    opened: AtomicU64,
    closed: AtomicU64,
    next_dial: AtomicU64,
}

#[derive(Default)]
struct KeyState {
    conns: Vec<Arc<Conn>>,
    dialing: Vec<Dial>,
}

/// A dial under way and how many callers it is expected to serve.
struct Dial {
    id: u64,
    waiters: u32,
    done: Shared<BoxFuture<'static, DialResult>>,
}

struct Conn {
    sender: SendRequest<Bytes>,
    /// Streams in use; changed under the pool lock when reserving, so the idle check (also
    /// under the lock) and reservations never race.
    active: watch::Sender<u32>,
    dead: AtomicBool,
}

impl Conn {
    fn has_room(&self, cap: u32) -> bool {
        let peer = u32::try_from(self.sender.current_max_send_streams()).unwrap_or(u32::MAX);
        !self.dead.load(Ordering::Acquire) && *self.active.borrow() < cap.min(peer)
    }
}

/// One reserved stream on a connection, released on drop.
struct Slot {
    conn: Arc<Conn>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.conn.active.send_modify(|n| *n = n.saturating_sub(1));
    }
}

/// Why sending the CONNECT failed, and whether another connection may succeed.
enum SendFailure {
    Retry(HboneError),
    Fatal(HboneError),
}

impl Pool {
    pub fn new(settings: PoolSettings, certs: Arc<dyn ClientCerts>, dialer: Arc<dyn Dialer>) -> Self {
        Pool {
            inner: Arc::new(Inner {
                settings,
                certs,
                dialer,
                keys: Mutex::new(HashMap::new()),
                opened: AtomicU64::new(0),
                closed: AtomicU64::new(0),
                next_dial: AtomicU64::new(0),
            }),
        }
    }

    pub fn settings(&self) -> &PoolSettings {
        &self.inner.settings
    }

    /// Opens a CONNECT stream to `params.authority` through a pooled connection for `key`;
    /// a non-200 answer is [`HboneError::Status`]. A connection that turns out to be closing
    /// (GOAWAY, refused stream) is dropped from the pool and the CONNECT retried once on
    /// another.
    pub async fn connect(&self, key: &PoolKey, params: ConnectParams) -> Result<H2Stream, HboneError> {
        let mut retried = false;
        loop {
            let slot = self.checkout(key).await?;
            match self.send(key.addr, slot, &params).await {
                Ok(s) => return Ok(s),
                Err(SendFailure::Retry(e)) if !retried => {
                    debug!(addr = %key.addr, error = %e, "pooled HBONE connection is closing; retrying on another");
                    retried = true;
                }
                Err(SendFailure::Retry(e) | SendFailure::Fatal(e)) => return Err(e),
            }
        }
    }

    /// Current counts.
    pub fn stats(&self) -> PoolStats {
        let keys = self.inner.keys.lock().expect("pool lock");
        let mut s = PoolStats {
            opened_total: self.inner.opened.load(Ordering::Relaxed),
            closed_total: self.inner.closed.load(Ordering::Relaxed),
            ..PoolStats::default()
        };
        for ks in keys.values() {
            for c in ks.conns.iter().filter(|c| !c.dead.load(Ordering::Acquire)) {
                s.connections += 1;
                s.active_streams += *c.active.borrow() as usize;
            }
            s.dialing += ks.dialing.len();
        }
        s
    }

    /// Reserves a stream slot on a connection for `key`, dialing one when none has room.
    async fn checkout(&self, key: &PoolKey) -> Result<Slot, HboneError> {
        let cap = self.inner.settings.max_streams_per_conn.max(1);
        // Each round either reserves, or waits for one dial; a dial that succeeds but whose
        // room others took leads to another round.
        for _ in 0..64 {
            let wait = {
                let mut keys = self.inner.keys.lock().expect("pool lock");
                let ks = keys.entry(key.clone()).or_default();
                ks.conns.retain(|c| !c.dead.load(Ordering::Acquire));
                if let Some(c) = ks.conns.iter().find(|c| c.has_room(cap)) {
                    c.active.send_modify(|n| *n += 1);
                    return Ok(Slot { conn: c.clone() });
                }
                // Join a dial whose connection will have room for us; otherwise start one.
                match ks.dialing.iter_mut().find(|d| d.waiters < cap) {
                    Some(d) => {
                        d.waiters += 1;
                        d.done.clone()
                    }
                    None => {
                        let id = self.inner.next_dial.fetch_add(1, Ordering::Relaxed);
                        let done = Inner::start_dial(&self.inner, key.clone(), id);
                        ks.dialing.push(Dial { id, waiters: 1, done: done.clone() });
                        done
                    }
                }
            };
            wait.await.map_err(|e| e.duplicate())?;
        }
        Err(HboneError::H2 { addr: key.addr, source: h2::Error::from(h2::Reason::REFUSED_STREAM) })
    }

    async fn send(
        &self,
        addr: SocketAddr,
        slot: Slot,
        params: &ConnectParams,
    ) -> Result<H2Stream, SendFailure> {
        let to = self.inner.settings.connect_timeout;
        let mark_dead = |slot: &Slot| slot.conn.dead.store(true, Ordering::Release);
        let sender = slot.conn.sender.clone();
        let attempt = async {
            let mut sender = sender.ready().await.map_err(|e| (true, e))?;
            let (resp, send) = sender.send_request(build_connect(params), false).map_err(|e| (true, e))?;
            let resp = resp.await.map_err(|e| (e.reason() == Some(h2::Reason::REFUSED_STREAM), e))?;
            Ok::<_, (bool, h2::Error)>((resp, send))
        };
        match timeout(to, attempt).await {
            Err(_) => Err(SendFailure::Fatal(HboneError::Timeout { addr, stage: "CONNECT response" })),
            Ok(Err((retry, e))) => {
                let retry = retry || e.is_go_away() || e.is_io();
                if retry {
                    mark_dead(&slot);
                    Err(SendFailure::Retry(HboneError::from_h2(addr, e)))
                } else {
                    Err(SendFailure::Fatal(HboneError::from_h2(addr, e)))
                }
            }
            Ok(Ok((resp, send))) => {
                if resp.status() != http::StatusCode::OK {
                    return Err(SendFailure::Fatal(HboneError::Status { addr, status: resp.status() }));
                }
                Ok(H2Stream::new(send, resp.into_body(), Some(Box::new(slot))))
            }
        }
    }
}

impl Inner {
    /// Starts dialing `key` in its own task (it completes even if the caller goes away) and
    /// returns a future every waiter can share.
    fn start_dial(this: &Arc<Inner>, key: PoolKey, id: u64) -> Shared<BoxFuture<'static, DialResult>> {
        let inner = this.clone();
        let addr = key.addr;
        let task = tokio::spawn(async move {
            let res = timeout(inner.settings.connect_timeout, inner.dial(&key))
                .await
                .unwrap_or(Err(HboneError::Timeout { addr: key.addr, stage: "HBONE connect" }));
            let mut keys = inner.keys.lock().expect("pool lock");
            let ks = keys.entry(key.clone()).or_default();
            ks.dialing.retain(|d| d.id != id);
            match res {
                Ok(conn) => {
                    ks.conns.push(conn);
                    Ok(())
                }
                Err(e) => {
                    if ks.conns.is_empty() && ks.dialing.is_empty() {
                        keys.remove(&key);
                    }
                    Err(Arc::new(e))
                }
            }
        });
        async move {
            task.await.unwrap_or_else(|_| {
                Err(Arc::new(HboneError::H2 { addr, source: h2::Error::from(h2::Reason::INTERNAL_ERROR) }))
            })
        }
        .boxed()
        .shared()
    }

    async fn dial(self: &Arc<Self>, key: &PoolKey) -> Result<Arc<Conn>, HboneError> {
        let addr = key.addr;
        let s = &self.settings;
        let cert = self.certs.cert(&key.src).await?;
        let trust = self.certs.trust();
        let config = client_config(&cert, &trust, key.dst_identities.to_vec())
            .map_err(|e| HboneError::TlsConfig { addr, source: Arc::new(e) })?;
        let tcp = self.dialer.dial(key).await.map_err(|source| HboneError::Connect { addr, source })?;
        // The name is neither sent (no SNI) nor checked: identity is the SPIFFE ID.
        let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
        let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .map_err(|source| HboneError::Tls { addr, source })?;
        let mut tls = tls;
        tls.get_mut().1.set_buffer_limit(Some(TLS_BUFFER_LIMIT));
        let (sender, mut conn) = h2::client::Builder::new()
            .initial_window_size(s.stream_window)
            .initial_connection_window_size(s.conn_window)
            .max_frame_size(s.max_frame_size)
            .max_send_buffer_size(s.max_send_buffer)
            .enable_push(false)
            .handshake::<_, Bytes>(tls)
            .await
            .map_err(|e| HboneError::from_h2(addr, e))?;
        let (active, active_rx) = watch::channel(0u32);
        let c = Arc::new(Conn { sender, active, dead: AtomicBool::new(false) });
        let ping = conn.ping_pong();
        self.opened.fetch_add(1, Ordering::Relaxed);
        debug!(%addr, src = %key.src, "HBONE connection opened");
        tokio::spawn(drive(Arc::downgrade(self), key.clone(), c.clone(), conn, ping, active_rx));
        Ok(c)
    }
}

/// Why a connection's driver stopped.
#[derive(Debug)]
enum End {
    Closed(Result<(), h2::Error>),
    Idle,
    PingTimeout,
}

/// Drives one connection: its frames, keepalive pings, and the idle close.
async fn drive<T>(
    pool: Weak<Inner>,
    key: PoolKey,
    conn: Arc<Conn>,
    mut h2conn: h2::client::Connection<T, Bytes>,
    ping: Option<h2::PingPong>,
    active: watch::Receiver<u32>,
) where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send,
{
    let settings = match pool.upgrade() {
        Some(p) => p.settings.clone(),
        None => return,
    };
    let watchdog = watchdog(&pool, &conn, &settings, ping, active);
    let end = tokio::select! {
        r = &mut h2conn => End::Closed(r),
        e = watchdog => e,
    };
    conn.dead.store(true, Ordering::Release);
    match &end {
        End::Closed(Ok(())) | End::Idle => debug!(addr = %key.addr, ?end, "HBONE connection closed"),
        End::Closed(Err(e)) => debug!(addr = %key.addr, error = %e, "HBONE connection failed"),
        End::PingTimeout => warn!(addr = %key.addr, "HBONE peer did not answer PING; connection dropped"),
    }
    if let Some(p) = pool.upgrade() {
        p.closed.fetch_add(1, Ordering::Relaxed);
        let mut keys = p.keys.lock().expect("pool lock");
        if let Some(ks) = keys.get_mut(&key) {
            ks.conns.retain(|c| !Arc::ptr_eq(c, &conn));
            if ks.conns.is_empty() && ks.dialing.is_empty() {
                keys.remove(&key);
            }
        }
    }
}

async fn watchdog(
    pool: &Weak<Inner>,
    conn: &Arc<Conn>,
    settings: &PoolSettings,
    mut ping: Option<h2::PingPong>,
    mut active: watch::Receiver<u32>,
) -> End {
    let mut next_ping = Instant::now() + settings.ping_interval;
    let mut idle_since: Option<Instant> = None;
    loop {
        let n = *active.borrow_and_update();
        idle_since = if n == 0 { Some(idle_since.unwrap_or_else(Instant::now)) } else { None };
        let idle_deadline = idle_since.map(|t| t + settings.idle_timeout);
        let idle = async {
            match idle_deadline {
                Some(d) => sleep_until(d).await,
                None => futures::future::pending().await,
            }
        };
        tokio::select! {
            _ = sleep_until(next_ping), if ping.is_some() => {
                let p = ping.as_mut().expect("checked");
                match timeout(settings.ping_timeout, p.ping(h2::Ping::opaque())).await {
                    Ok(Ok(_)) => next_ping = Instant::now() + settings.ping_interval,
                    Ok(Err(_)) => ping = None, // the connection future reports the error
                    Err(_) => return End::PingTimeout,
                }
            }
            _ = idle => {
                let Some(p) = pool.upgrade() else { return End::Idle };
                // Under the pool lock, so no reservation can slip in between.
                let _keys = p.keys.lock().expect("pool lock");
                if *conn.active.borrow() == 0 {
                    conn.dead.store(true, Ordering::Release);
                    return End::Idle;
                }
            }
            r = active.changed() => {
                if r.is_err() {
                    return End::Idle;
                }
            }
        }
    }
}
