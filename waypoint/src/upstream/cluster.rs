//! One cluster (service host × subset × port): its endpoints, the balancer, the circuit
//! breakers and outlier detection.
//!
//! The endpoint list and policy are immutable per model generation; the runtime state
//! (breaker counters, round-robin position, sweep clock, and per endpoint the active requests,
//! consecutive error counts and ejection record) lives in `Arc`s that the next generation's
//! cluster takes over. Picking reads a cached [`HealthView`] (usable endpoints and, for
//! consistent hashing, the ring or table over them) that is rebuilt only when an ejection or a
//! return changes the healthy set.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use arc_swap::ArcSwap;
use http::{HeaderMap, HeaderValue, StatusCode, Uri};
use mesh_api::SpiffeId;
use mesh_model::{Labels, Workload};
use mesh_telemetry::ResponseFlag;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::hash::{HashTable, request_hash};
use super::policy::{ClusterPolicy, HashAlgorithm, LbPolicy, OutlierSettings};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Identifies a cluster.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClusterKey {
    /// The Service's FQDN.
    pub host: Arc<str>,
    pub subset: Option<Arc<str>>,
    /// The service port.
    pub port: u16,
}

/// One upstream endpoint of a cluster.
#[derive(Debug)]
pub struct Endpoint {
    /// Pod IP and the target port serving the cluster's service port.
    pub addr: SocketAddr,
    /// The pod behind the address (`None` for ServiceEntry endpoints and unknown addresses).
    pub workload: Option<Arc<Workload>>,
    /// The identity the endpoint must present.
    pub identity: Option<Arc<SpiffeId>>,
    pub labels: Labels,
    /// ServiceEntry weight (1 otherwise); not used by the balancers yet.
    pub weight: u32,
    pub(crate) state: Arc<HostState>,
}

impl Endpoint {
    /// Requests picked for this endpoint and not yet finished (the least-request load).
    pub fn active_requests(&self) -> u32 {
        self.state.active.load(Ordering::Relaxed)
    }

    /// Whether outlier detection has ejected the endpoint.
    pub fn is_ejected(&self) -> bool {
        self.state.ejected.load(Ordering::Acquire)
    }

    /// How many times the endpoint was ejected since the waypoint started.
    pub fn ejections(&self) -> u64 {
        lock(&self.state.ejection).total
    }

    /// Whether a new generation may keep this endpoint as is.
    pub(crate) fn same_as(&self, other: &EndpointSpec) -> bool {
        self.addr == other.addr
            && self.workload == other.workload
            && self.identity == other.identity
            && self.labels == other.labels
            && self.weight == other.weight
    }
}

/// An endpoint as the model describes it, before runtime state is attached.
#[derive(Debug, Clone)]
pub(crate) struct EndpointSpec {
    pub(crate) addr: SocketAddr,
    pub(crate) workload: Option<Arc<Workload>>,
    pub(crate) identity: Option<Arc<SpiffeId>>,
    pub(crate) labels: Labels,
    pub(crate) weight: u32,
}

/// Runtime state of one endpoint in one cluster, kept across model generations.
#[derive(Debug, Default)]
pub(crate) struct HostState {
    active: AtomicU32,
    consecutive_5xx: AtomicU32,
    consecutive_gateway: AtomicU32,
    ejected: AtomicBool,
    ejection: Mutex<Ejection>,
    /// Pooled idle HTTP/1.1 connections to the endpoint.
    pub(crate) idle: crate::proxy::pool::IdleConns,
    /// The HTTP/2 connections to the endpoint.
    pub(crate) h2: crate::proxy::pool::H2Conns,
}

#[derive(Debug, Default)]
struct Ejection {
    /// Envoy's ejection time multiplier: +1 per ejection, -1 per sweep the host spends healthy.
    multiplier: u32,
    last: Option<Instant>,
    total: u64,
}

/// Runtime state of a cluster, kept across model generations.
#[derive(Debug)]
pub(crate) struct ClusterRuntime {
    requests: AtomicU32,
    pending: AtomicU32,
    connections: AtomicU32,
    retries: AtomicU32,
    connection_freed: Notify,
    round_robin: AtomicUsize,
    /// Bumped whenever a host is ejected or returned: views older than this are stale.
    epoch: AtomicU64,
    /// Sweep clock: the next sweep, in nanoseconds after `base`.
    base: Instant,
    next_sweep: AtomicU64,
    /// Serialises ejection decisions and sweeps (error paths only).
    outlier: Mutex<()>,
}

impl ClusterRuntime {
    pub(crate) fn new(interval: Duration) -> Self {
        ClusterRuntime {
            requests: AtomicU32::new(0),
            pending: AtomicU32::new(0),
            connections: AtomicU32::new(0),
            retries: AtomicU32::new(0),
            connection_freed: Notify::new(),
            // Replicas start at different endpoints.
            round_robin: AtomicUsize::new(rand::random_range(0..1024)),
            epoch: AtomicU64::new(0),
            base: Instant::now(),
            next_sweep: AtomicU64::new(interval.as_nanos() as u64),
            outlier: Mutex::new(()),
        }
    }
}

/// The endpoints picks choose from, for one ejection epoch.
#[derive(Debug)]
struct HealthView {
    epoch: u64,
    /// Indexes into the cluster's endpoints: the healthy ones, or all of them in panic.
    hosts: Box<[u32]>,
    /// By endpoint index: whether it is in `hosts`.
    usable: Box<[bool]>,
    panic: bool,
    hash: Option<HashTable>,
}

/// What the proxy knows of the request when picking.
#[derive(Debug, Clone, Copy)]
pub struct PickContext<'a> {
    pub headers: &'a HeaderMap,
    pub uri: &'a Uri,
    /// The downstream client's address (for `useSourceIp`).
    pub source_ip: IpAddr,
    /// The address the client dialled, for PASSTHROUGH.
    pub original_dst: Option<SocketAddr>,
    /// Endpoints already tried by this request (retries go elsewhere when possible).
    pub previous_hosts: &'a [SocketAddr],
}

impl<'a> PickContext<'a> {
    pub fn new(headers: &'a HeaderMap, uri: &'a Uri, source_ip: IpAddr) -> Self {
        PickContext { headers, uri, source_ip, original_dst: None, previous_hosts: &[] }
    }
}

/// Why no endpoint could be picked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PickError {
    /// No endpoint, every endpoint ejected, or PASSTHROUGH without an original destination.
    #[error("no healthy upstream")]
    NoHealthyUpstream,
}

impl PickError {
    pub fn status(&self) -> StatusCode {
        StatusCode::SERVICE_UNAVAILABLE
    }

    pub fn flag(&self) -> ResponseFlag {
        ResponseFlag::NoHealthyUpstream
    }
}

/// A circuit breaker that refused (fail fast: 503 with `UO`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Overflow {
    #[error("upstream overflow: {max} active requests (http2MaxRequests)")]
    Requests { max: u32 },
    #[error("upstream overflow: {max} pending requests (http1MaxPendingRequests)")]
    Pending { max: u32 },
    #[error("upstream overflow: {max} connections (tcp.maxConnections)")]
    Connections { max: u32 },
    #[error("upstream overflow: {max} outstanding retries (maxRetries)")]
    Retries { max: u32 },
}

impl Overflow {
    pub fn status(&self) -> StatusCode {
        StatusCode::SERVICE_UNAVAILABLE
    }

    pub fn flag(&self) -> ResponseFlag {
        ResponseFlag::UpstreamOverflow
    }
}

/// How an attempt on an endpoint ended: feeds least-request counts and outlier detection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The upstream answered with this status.
    Status(u16),
    /// The connection could not be established (a gateway error, like Envoy's 503).
    ConnectFailure,
    /// The upstream reset the stream or connection (a gateway error).
    Reset,
    /// No answer in time (a gateway error, like Envoy's 504).
    Timeout,
}

impl Outcome {
    /// The status Envoy maps the outcome to for outlier detection.
    fn code(self) -> u16 {
        match self {
            Outcome::Status(c) => c,
            Outcome::ConnectFailure | Outcome::Reset => 503,
            Outcome::Timeout => 504,
        }
    }
}

/// The chosen endpoint.
#[derive(Debug)]
pub struct Pick {
    pub endpoint: Arc<Endpoint>,
    /// Counts the request as active on the endpoint until finished or dropped.
    pub guard: EndpointGuard,
    /// `Set-Cookie` to add to the response when a hash cookie was generated.
    pub set_cookie: Option<HeaderValue>,
}

/// An active request on an endpoint. [`EndpointGuard::finish`] reports the outcome; dropping
/// it unfinished means the request was cancelled (no outlier signal).
#[derive(Debug)]
pub struct EndpointGuard {
    cluster: Arc<Cluster>,
    endpoint: Arc<Endpoint>,
    /// False for a PASSTHROUGH address outside the cluster: nothing to eject.
    member: bool,
}

impl EndpointGuard {
    pub fn finish(self, outcome: Outcome) {
        if self.member {
            self.cluster.record(&self.endpoint, outcome);
        }
    }
}

impl Drop for EndpointGuard {
    fn drop(&mut self) {
        self.endpoint.state.active.fetch_sub(1, Ordering::Relaxed);
    }
}

macro_rules! permit {
    ($(#[$doc:meta])* $name:ident, $field:ident) => {
        $(#[$doc])*
        #[derive(Debug)]
        pub struct $name(Arc<ClusterRuntime>);

        impl Drop for $name {
            fn drop(&mut self) {
                self.0.$field.fetch_sub(1, Ordering::AcqRel);
            }
        }
    };
}

permit!(
    /// One active request of the cluster (`http2MaxRequests`); released on drop.
    RequestPermit,
    requests
);
permit!(
    /// One request waiting for a connection (`http1MaxPendingRequests`); released on drop.
    PendingPermit,
    pending
);
permit!(
    /// One outstanding retry (`maxRetries`); released on drop.
    RetryPermit,
    retries
);

/// One open upstream connection (`tcp.maxConnections`); released on drop, waking a request
/// waiting in [`Cluster::acquire_connection`].
#[derive(Debug)]
pub struct ConnectionPermit(Arc<ClusterRuntime>);

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::AcqRel);
        self.0.connection_freed.notify_one();
    }
}

fn take(counter: &AtomicU32, max: u32) -> bool {
    counter.fetch_update(Ordering::AcqRel, Ordering::Acquire, |c| (c < max).then_some(c + 1)).is_ok()
}

/// A cluster of one model generation.
#[derive(Debug)]
pub struct Cluster {
    key: ClusterKey,
    policy: ClusterPolicy,
    endpoints: Box<[Arc<Endpoint>]>,
    pub(crate) runtime: Arc<ClusterRuntime>,
    view: ArcSwap<HealthView>,
    view_lock: Mutex<()>,
}

impl Cluster {
    pub(crate) fn new(
        key: ClusterKey,
        policy: ClusterPolicy,
        endpoints: Box<[Arc<Endpoint>]>,
        runtime: Arc<ClusterRuntime>,
    ) -> Cluster {
        let epoch = runtime.epoch.load(Ordering::Acquire);
        let view = build_view(&policy, &endpoints, epoch);
        Cluster {
            key,
            policy,
            endpoints,
            runtime,
            view: ArcSwap::from_pointee(view),
            view_lock: Mutex::new(()),
        }
    }

    pub fn key(&self) -> &ClusterKey {
        &self.key
    }

    pub fn policy(&self) -> &ClusterPolicy {
        &self.policy
    }

    /// Every endpoint, ejected or not.
    pub fn endpoints(&self) -> &[Arc<Endpoint>] {
        &self.endpoints
    }

    pub fn connect_timeout(&self) -> Duration {
        self.policy.pool.connect_timeout
    }

    /// Idle timeout of pooled upstream HTTP connections (`None`: never closed for idleness).
    pub fn idle_timeout(&self) -> Option<Duration> {
        self.policy.pool.idle_timeout
    }

    /// Idle timeout of proxied TCP connections.
    pub fn tcp_idle_timeout(&self) -> Option<Duration> {
        self.policy.pool.tcp_idle_timeout
    }

    pub fn max_requests_per_connection(&self) -> Option<u32> {
        self.policy.pool.max_requests_per_connection
    }

    /// `http.maxConcurrentStreams`: streams per upstream HTTP/2 connection (`None`: no limit
    /// of ours; the peer's SETTINGS still apply).
    pub fn max_concurrent_streams(&self) -> Option<u32> {
        self.policy.pool.max_concurrent_streams
    }

    /// Admits one request (`http2MaxRequests`, which Envoy applies to every protocol).
    pub fn try_request(&self) -> Result<RequestPermit, Overflow> {
        let max = self.policy.pool.max_requests;
        if take(&self.runtime.requests, max) {
            Ok(RequestPermit(self.runtime.clone()))
        } else {
            Err(Overflow::Requests { max })
        }
    }

    /// Admits one retry (`maxRetries`, Istio default 2^32-1). On overflow Envoy does not
    /// retry and returns the response it has; it does not answer 503.
    pub fn try_retry(&self) -> Result<RetryPermit, Overflow> {
        let max = self.policy.pool.max_retries;
        if take(&self.runtime.retries, max) {
            Ok(RetryPermit(self.runtime.clone()))
        } else {
            Err(Overflow::Retries { max })
        }
    }

    /// Opens one connection slot if `tcp.maxConnections` allows.
    pub fn try_connection(&self) -> Result<ConnectionPermit, Overflow> {
        let max = self.policy.pool.max_connections;
        if take(&self.runtime.connections, max) {
            Ok(ConnectionPermit(self.runtime.clone()))
        } else {
            Err(Overflow::Connections { max })
        }
    }

    /// Resolves when a connection was closed or went back to a pool (at most one waiter is
    /// woken per event); `enable` it before checking, as with any [`Notify`].
    pub fn connection_available(&self) -> tokio::sync::futures::Notified<'_> {
        self.runtime.connection_freed.notified()
    }

    /// A connection went back to a pool: wakes one request waiting for a connection.
    pub fn notify_connection_available(&self) {
        self.runtime.connection_freed.notify_one();
    }

    /// Counts one request waiting for a connection, if `http1MaxPendingRequests` allows.
    pub fn try_pending(&self) -> Result<PendingPermit, Overflow> {
        let max = self.policy.pool.max_pending_requests;
        if take(&self.runtime.pending, max) {
            Ok(PendingPermit(self.runtime.clone()))
        } else {
            Err(Overflow::Pending { max })
        }
    }

    /// A connection slot: at once when below `tcp.maxConnections`; otherwise the request
    /// waits as pending (failing fast when `http1MaxPendingRequests` are already waiting)
    /// until a connection is closed. Bound the wait with the request's timeout.
    pub async fn acquire_connection(&self) -> Result<ConnectionPermit, Overflow> {
        if let Ok(p) = self.try_connection() {
            return Ok(p);
        }
        let _pending = self.try_pending()?;
        loop {
            let freed = self.runtime.connection_freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            if let Ok(p) = self.try_connection() {
                return Ok(p);
            }
            freed.await;
        }
    }

    /// Active requests, pending requests, open connections and outstanding retries.
    pub fn load(&self) -> (u32, u32, u32, u32) {
        let r = &self.runtime;
        (
            r.requests.load(Ordering::Relaxed),
            r.pending.load(Ordering::Relaxed),
            r.connections.load(Ordering::Relaxed),
            r.retries.load(Ordering::Relaxed),
        )
    }

    /// A JSON view of the cluster for debugging.
    pub fn dump(&self) -> serde_json::Value {
        let (requests, pending, connections, retries) = self.load();
        let endpoints: Vec<serde_json::Value> = self
            .endpoints
            .iter()
            .map(|e| {
                serde_json::json!({
                    "address": e.addr.to_string(),
                    "workload": e.workload.as_ref().map(|w| format!("{}/{}", w.namespace, w.name)),
                    "active_requests": e.active_requests(),
                    "ejected": e.is_ejected(),
                    "ejections": e.ejections(),
                })
            })
            .collect();
        serde_json::json!({
            "host": &*self.key.host,
            "subset": self.key.subset.as_deref(),
            "port": self.key.port,
            "lb": format!("{:?}", self.policy.lb),
            "outlier_detection": self.policy.outlier.is_some(),
            "panic": self.in_panic(),
            "active_requests": requests,
            "pending_requests": pending,
            "connections": connections,
            "retries": retries,
            "endpoints": endpoints,
        })
    }

    /// Whether the cluster is in panic (too few healthy hosts: ejections are ignored).
    pub fn in_panic(&self) -> bool {
        self.sweep();
        self.current_view().panic
    }

    /// Picks an endpoint for one request attempt.
    pub fn pick(self: &Arc<Self>, ctx: &PickContext<'_>) -> Result<Pick, PickError> {
        self.sweep();
        if self.policy.lb == LbPolicy::Passthrough {
            return self.passthrough(ctx);
        }
        let view = self.current_view();
        let hosts = &view.hosts;
        if hosts.is_empty() {
            return Err(PickError::NoHealthyUpstream);
        }
        // Retries go to hosts not tried yet when there are some (Envoy's `previous_hosts`
        // predicate, which Istio enables); hashing keeps its affinity.
        let hashing = matches!(self.policy.lb, LbPolicy::ConsistentHash(_));
        let fresh: Option<Vec<u32>> = (!ctx.previous_hosts.is_empty() && !hashing)
            .then(|| {
                hosts
                    .iter()
                    .copied()
                    .filter(|i| !ctx.previous_hosts.contains(&self.endpoints[*i as usize].addr))
                    .collect::<Vec<u32>>()
            })
            .filter(|v| !v.is_empty());
        let hosts: &[u32] = fresh.as_deref().unwrap_or(hosts);
        let mut set_cookie = None;
        let idx = match &self.policy.lb {
            LbPolicy::RoundRobin => {
                hosts[self.runtime.round_robin.fetch_add(1, Ordering::Relaxed) % hosts.len()]
            }
            LbPolicy::Random => hosts[rand::random_range(0..hosts.len())],
            LbPolicy::LeastRequest => self.two_choices(hosts),
            LbPolicy::ConsistentHash(h) => {
                let (hash, cookie) = request_hash(&h.key, ctx.headers, ctx.uri, ctx.source_ip);
                set_cookie = cookie;
                let hash = hash.unwrap_or_else(rand::random);
                match view.hash.as_ref().and_then(|t| t.lookup(hash, |i| view.usable[i as usize])) {
                    Some(i) => i,
                    None => return Err(PickError::NoHealthyUpstream),
                }
            }
            LbPolicy::Passthrough => unreachable!("handled above"),
        };
        let endpoint = self.endpoints[idx as usize].clone();
        Ok(self.guarded(endpoint, true, set_cookie))
    }

    fn guarded(
        self: &Arc<Self>,
        endpoint: Arc<Endpoint>,
        member: bool,
        set_cookie: Option<HeaderValue>,
    ) -> Pick {
        endpoint.state.active.fetch_add(1, Ordering::Relaxed);
        let guard = EndpointGuard { cluster: self.clone(), endpoint: endpoint.clone(), member };
        Pick { endpoint, guard, set_cookie }
    }

    /// Power of two choices: two distinct random hosts, the one with fewer active requests.
    /// (Envoy may draw the same host twice; distinct draws are never worse.)
    fn two_choices(&self, hosts: &[u32]) -> u32 {
        let n = hosts.len();
        if n == 1 {
            return hosts[0];
        }
        let a = rand::random_range(0..n);
        let mut b = rand::random_range(0..n - 1);
        if b >= a {
            b += 1;
        }
        let (ha, hb) = (hosts[a], hosts[b]);
        let load = |i: u32| self.endpoints[i as usize].state.active.load(Ordering::Relaxed);
        if load(hb) < load(ha) { hb } else { ha }
    }

    /// PASSTHROUGH: the original destination, tracked as the cluster's endpoint when it is one.
    fn passthrough(self: &Arc<Self>, ctx: &PickContext<'_>) -> Result<Pick, PickError> {
        let addr = ctx.original_dst.ok_or(PickError::NoHealthyUpstream)?;
        if let Some(e) = self.endpoints.iter().find(|e| e.addr == addr) {
            return Ok(self.guarded(e.clone(), true, None));
        }
        let endpoint = Arc::new(Endpoint {
            addr,
            workload: None,
            identity: None,
            labels: Labels::default(),
            weight: 1,
            state: Arc::default(),
        });
        Ok(self.guarded(endpoint, false, None))
    }

    fn current_view(&self) -> Arc<HealthView> {
        let epoch = self.runtime.epoch.load(Ordering::Acquire);
        let view = self.view.load_full();
        if view.epoch == epoch {
            return view;
        }
        let _g = lock(&self.view_lock);
        let epoch = self.runtime.epoch.load(Ordering::Acquire);
        let view = self.view.load_full();
        if view.epoch == epoch {
            return view;
        }
        let fresh = Arc::new(build_view(&self.policy, &self.endpoints, epoch));
        self.view.store(fresh.clone());
        fresh
    }

    /// Feeds an outcome to outlier detection: consecutive counters, and an ejection when one
    /// reaches its threshold.
    fn record(&self, endpoint: &Endpoint, outcome: Outcome) {
        let Some(od) = &self.policy.outlier else { return };
        let s = &endpoint.state;
        let code = outcome.code();
        if !(500..600).contains(&code) {
            s.consecutive_5xx.store(0, Ordering::Relaxed);
            s.consecutive_gateway.store(0, Ordering::Relaxed);
            return;
        }
        let mut eject = false;
        if matches!(code, 502..=504) {
            let n = s.consecutive_gateway.fetch_add(1, Ordering::AcqRel).wrapping_add(1);
            if od.consecutive_gateway > 0 && n == od.consecutive_gateway {
                s.consecutive_gateway.store(0, Ordering::Relaxed);
                eject = true;
            }
        } else {
            s.consecutive_gateway.store(0, Ordering::Relaxed);
        }
        let n = s.consecutive_5xx.fetch_add(1, Ordering::AcqRel).wrapping_add(1);
        if od.consecutive_5xx > 0 && n == od.consecutive_5xx {
            s.consecutive_5xx.store(0, Ordering::Relaxed);
            eject = true;
        }
        if eject {
            self.eject(endpoint, od);
        }
    }

    /// Ejects `endpoint` unless it already is or `maxEjectionPercent` would be exceeded by it
    /// (Envoy 1.31+: the share ejected including this host must stay within the maximum),
    /// except that a first host may always be ejected (so small clusters under the 10 %
    /// default still get outlier detection).
    fn eject(&self, endpoint: &Endpoint, od: &OutlierSettings) {
        let _g = lock(&self.runtime.outlier);
        if endpoint.is_ejected() {
            return;
        }
        let total = self.endpoints.len() as u64;
        let ejected = self.endpoints.iter().filter(|e| e.is_ejected()).count() as u64;
        if ejected > 0 && (ejected + 1) * 100 > u64::from(od.max_ejection_percent) * total {
            return;
        }
        let mut e = lock(&endpoint.state.ejection);
        // Grow the multiplier only while the ejection time is below its cap, as Envoy.
        if od.base_ejection_time.saturating_mul(e.multiplier) < od.ejection_time(u32::MAX) {
            e.multiplier += 1;
        }
        e.last = Some(Instant::now());
        e.total += 1;
        endpoint.state.ejected.store(true, Ordering::Release);
        self.runtime.epoch.fetch_add(1, Ordering::AcqRel);
    }

    /// Runs the sweeps due since the last one: each returns the hosts whose ejection time has
    /// passed and lowers the multiplier of hosts that stayed healthy. Picks call this, so the
    /// sweeps need no timer task; sweeps missed while idle are replayed in one go.
    pub fn sweep(&self) {
        let Some(od) = &self.policy.outlier else { return };
        let rt = &self.runtime;
        let now = Instant::now();
        let now_ns = now.saturating_duration_since(rt.base).as_nanos() as u64;
        if now_ns < rt.next_sweep.load(Ordering::Acquire) {
            return;
        }
        let _g = lock(&rt.outlier);
        let next = rt.next_sweep.load(Ordering::Acquire);
        if now_ns < next {
            return;
        }
        let interval = od.interval.as_nanos().max(1) as u64;
        let sweeps = (now_ns - next) / interval + 1;
        let first = rt.base + Duration::from_nanos(next);
        let mut changed = false;
        for ep in self.endpoints.iter() {
            let mut e = lock(&ep.state.ejection);
            if !ep.is_ejected() {
                e.multiplier = e.multiplier.saturating_sub(sweeps.min(u64::from(u32::MAX)) as u32);
                continue;
            }
            let Some(last) = e.last else { continue };
            let due = last + od.ejection_time(e.multiplier);
            // Index of the first sweep at or after `due`.
            let j = if due <= first {
                0
            } else {
                (due - first).as_nanos().div_ceil(u128::from(interval)).min(u128::from(u64::MAX)) as u64
            };
            if j < sweeps {
                ep.state.ejected.store(false, Ordering::Release);
                e.multiplier = e.multiplier.saturating_sub((sweeps - j - 1).min(u64::from(u32::MAX)) as u32);
                changed = true;
            }
        }
        rt.next_sweep.store(next + sweeps * interval, Ordering::Release);
        if changed {
            rt.epoch.fetch_add(1, Ordering::AcqRel);
        }
    }
}

/// The usable hosts: all without outlier detection; else the non-ejected ones, or all of
/// them when fewer than `minHealthPercent` are healthy (Envoy's panic threshold).
fn build_view(policy: &ClusterPolicy, endpoints: &[Arc<Endpoint>], epoch: u64) -> HealthView {
    let all = || (0..endpoints.len() as u32).collect::<Box<[u32]>>();
    let (hosts, panic) = match &policy.outlier {
        None => (all(), false),
        Some(od) => {
            let healthy: Box<[u32]> =
                (0..endpoints.len() as u32).filter(|i| !endpoints[*i as usize].is_ejected()).collect();
            let total = endpoints.len() as u64;
            if (healthy.len() as u64) * 100 < u64::from(od.min_health_percent) * total {
                (all(), true)
            } else {
                (healthy, false)
            }
        }
    };
    let mut usable = vec![false; endpoints.len()];
    for i in hosts.iter() {
        usable[*i as usize] = true;
    }
    let hash = match &policy.lb {
        LbPolicy::ConsistentHash(h) => {
            let placed: Vec<u32> = match h.algorithm {
                HashAlgorithm::RingHash { .. } => (0..endpoints.len() as u32).collect(),
                HashAlgorithm::Maglev { .. } => hosts.to_vec(),
            };
            let keyed: Vec<(u32, String)> =
                placed.iter().map(|i| (*i, endpoints[*i as usize].addr.to_string())).collect();
            Some(HashTable::build(h.algorithm, &keyed))
        }
        _ => None,
    };
    HealthView { epoch, hosts, usable: usable.into(), panic, hash }
}

pub(crate) fn new_endpoint(spec: EndpointSpec, state: Arc<HostState>) -> Endpoint {
    Endpoint {
        addr: spec.addr,
        workload: spec.workload,
        identity: spec.identity,
        labels: spec.labels,
        weight: spec.weight,
        state,
    }
}
