//! The effective traffic policy of one cluster (service host × subset × port), compiled from
//! the DestinationRules of the host into typed settings with Istio's defaults.
//!
//! Merging follows Istio: the top-level `trafficPolicy`, replaced as a whole by the
//! `portLevelSettings` entry for the port (port-level settings do not inherit: omitted fields
//! take their defaults); then, for a subset, each of `loadBalancer`, `connectionPool`,
//! `outlierDetection` and `tls` that the subset's policy sets replaces the inherited one, and
//! the subset's own `portLevelSettings` entry for the port replaces all of them again.

use std::collections::HashSet;
use std::time::Duration;

use http::HeaderName;
use mesh_api::istio::networking::{
    ClientTlsMode, ClientTlsSettings, ConnectionPoolSettings, DestinationRuleSpec, H2UpgradePolicy,
    LoadBalancerSettings, OutlierDetection, SimpleLb, TrafficPolicy,
};
use mesh_api::{Diagnostic, ObjectRef};
use mesh_model::Sourced;

/// Mesh default `connectTimeout` (Istio's `meshConfig.connectTimeout`).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Istio's default idle timeout of upstream connections (HTTP pool and TCP proxy).
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);
/// Envoy's default `minimum_ring_size`, which Istio keeps.
pub const DEFAULT_RING_SIZE: u64 = 1024;
/// Envoy's default `maximum_ring_size`: larger minimums are capped.
pub const MAX_RING_SIZE: u64 = 8 * 1024 * 1024;
/// Envoy's default Maglev table size (a prime).
pub const DEFAULT_MAGLEV_TABLE_SIZE: u64 = 65537;
/// Envoy's largest accepted Maglev table size.
pub const MAX_MAGLEV_TABLE_SIZE: u64 = 5_000_011;
/// Outlier detection defaults (Istio documents Envoy's).
pub const DEFAULT_CONSECUTIVE_5XX: u32 = 5;
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);
pub const DEFAULT_BASE_EJECTION_TIME: Duration = Duration::from_secs(30);
pub const DEFAULT_MAX_EJECTION_PERCENT: u32 = 10;
/// Envoy's default `max_ejection_time`: an ejection never lasts longer than
/// `max(baseEjectionTime, 300s)` however often the host was ejected.
pub const DEFAULT_MAX_EJECTION_TIME: Duration = Duration::from_secs(300);

/// How a cluster picks an endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LbPolicy {
    RoundRobin,
    /// Power of two choices over active requests (Istio's default, also for `LEAST_CONN`
    /// and `UNSPECIFIED`).
    LeastRequest,
    Random,
    /// Envoy's ORIGINAL_DST: forward to the address the client dialled
    /// ([`crate::upstream::PickContext::original_dst`]) instead of choosing an endpoint.
    Passthrough,
    ConsistentHash(HashPolicy),
}

/// `consistentHash`: what is hashed and onto which structure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HashPolicy {
    pub key: HashKey,
    pub algorithm: HashAlgorithm,
}

/// The request attribute a consistent hash is computed from. When it is absent the request
/// goes to a random endpoint, as Envoy does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashKey {
    Header(HeaderName),
    Cookie(CookieKey),
    SourceIp,
    QueryParameter(Box<str>),
}

/// `httpCookie`: the cookie hashed; with a `ttl`, a cookie is generated when absent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CookieKey {
    pub name: Box<str>,
    pub path: Option<Box<str>>,
    /// `None`: never generate; `Some(ZERO)`: generate a session cookie (no `Max-Age`).
    pub ttl: Option<Duration>,
    pub attributes: Box<[CookieAttribute]>,
}

/// A cookie attribute: name and optional value (`SameSite=Strict`, `Secure`).
pub type CookieAttribute = (Box<str>, Option<Box<str>>);

/// Ring hash (Istio's default for `consistentHash`) or Maglev.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashAlgorithm {
    RingHash { minimum_ring_size: u64 },
    Maglev { table_size: u64 },
}

/// `connectionPool`, with Istio's defaults (`u32::MAX` is Istio's "2^32-1", i.e. unlimited).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolSettings {
    /// `tcp.maxConnections`: open upstream connections of the cluster.
    pub max_connections: u32,
    /// `tcp.connectTimeout` (default 10 s).
    pub connect_timeout: Duration,
    /// `tcp.idleTimeout` for TCP proxying (default 1 h; `None` when set to 0 = disabled).
    pub tcp_idle_timeout: Option<Duration>,
    /// `tcp.maxConnectionDuration`.
    pub max_connection_duration: Option<Duration>,
    /// `http.http1MaxPendingRequests`: requests waiting for a connection.
    pub max_pending_requests: u32,
    /// `http.http2MaxRequests`: active requests of the cluster (every protocol, as Envoy).
    pub max_requests: u32,
    /// `http.maxRequestsPerConnection` (`None`: unlimited).
    pub max_requests_per_connection: Option<u32>,
    /// `http.maxRetries`: retries outstanding at once.
    pub max_retries: u32,
    /// `http.idleTimeout` (default 1 h; `None` when set to 0 = disabled).
    pub idle_timeout: Option<Duration>,
    /// `http.maxConcurrentStreams` per HTTP/2 upstream connection.
    pub max_concurrent_streams: Option<u32>,
    /// `http.h2UpgradePolicy`.
    pub h2_upgrade: H2UpgradePolicy,
    /// `http.useClientProtocol`.
    pub use_client_protocol: bool,
}

impl Default for PoolSettings {
    fn default() -> Self {
        PoolSettings {
            max_connections: u32::MAX,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            tcp_idle_timeout: Some(DEFAULT_IDLE_TIMEOUT),
            max_connection_duration: None,
            max_pending_requests: u32::MAX,
            max_requests: u32::MAX,
            max_requests_per_connection: None,
            max_retries: u32::MAX,
            idle_timeout: Some(DEFAULT_IDLE_TIMEOUT),
            max_concurrent_streams: None,
            h2_upgrade: H2UpgradePolicy::Default,
            use_client_protocol: false,
        }
    }
}

/// `outlierDetection` with defaults applied. Present only when the policy sets it: without
/// it no host is ever ejected (Istio configures no outlier detection then).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutlierSettings {
    /// Consecutive 5xx (local-origin failures included) before ejection; 0 disables.
    pub consecutive_5xx: u32,
    /// Consecutive 502/503/504 (and connect failures, resets, timeouts); 0 disables.
    pub consecutive_gateway: u32,
    /// Time between sweeps that return hosts.
    pub interval: Duration,
    pub base_ejection_time: Duration,
    pub max_ejection_percent: u32,
    /// Below this share of healthy hosts ejections are ignored (panic); 0 disables panic.
    pub min_health_percent: u32,
}

impl Default for OutlierSettings {
    fn default() -> Self {
        OutlierSettings {
            consecutive_5xx: DEFAULT_CONSECUTIVE_5XX,
            consecutive_gateway: 0,
            interval: DEFAULT_INTERVAL,
            base_ejection_time: DEFAULT_BASE_EJECTION_TIME,
            max_ejection_percent: DEFAULT_MAX_EJECTION_PERCENT,
            min_health_percent: 0,
        }
    }
}

impl OutlierSettings {
    /// How long an ejection that is the host's `multiplier`-th lasts.
    pub fn ejection_time(&self, multiplier: u32) -> Duration {
        let cap = self.base_ejection_time.max(DEFAULT_MAX_EJECTION_TIME);
        self.base_ejection_time.saturating_mul(multiplier).min(cap)
    }
}

/// Everything a cluster needs from its DestinationRules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterPolicy {
    pub lb: LbPolicy,
    pub pool: PoolSettings,
    pub outlier: Option<OutlierSettings>,
}

impl Default for ClusterPolicy {
    fn default() -> Self {
        ClusterPolicy { lb: LbPolicy::LeastRequest, pool: PoolSettings::default(), outlier: None }
    }
}

/// Diagnostics collected during one update, each reported once however many clusters share
/// the offending object.
#[derive(Debug, Default)]
pub(crate) struct Diags {
    pub(crate) list: Vec<Diagnostic>,
    seen: HashSet<Diagnostic>,
}

impl Diags {
    pub(crate) fn warn(
        &mut self,
        dr: &Sourced<DestinationRuleSpec>,
        field: &str,
        message: impl Into<String>,
    ) {
        let d = Diagnostic::warning(object_ref(dr), field, message).at(dr.1.clone());
        if self.seen.insert(d.clone()) {
            self.list.push(d);
        }
    }
}

fn object_ref(dr: &Sourced<DestinationRuleSpec>) -> ObjectRef {
    ObjectRef { kind: "DestinationRule".into(), namespace: dr.0.namespace().into(), name: dr.0.name().into() }
}

/// One setting with the rule and field path it came from (for diagnostics).
#[derive(Clone)]
struct Part<'m, T> {
    value: &'m T,
    dr: &'m Sourced<DestinationRuleSpec>,
    path: String,
}

#[derive(Clone, Default)]
struct Parts<'m> {
    lb: Option<Part<'m, LoadBalancerSettings>>,
    pool: Option<Part<'m, ConnectionPoolSettings>>,
    od: Option<Part<'m, OutlierDetection>>,
    tls: Option<Part<'m, ClientTlsSettings>>,
}

/// A traffic policy as written in one rule, at `path` (`spec.trafficPolicy`,
/// `spec.subsets[1].trafficPolicy`).
#[derive(Clone, Copy)]
pub(crate) struct PolicyAt<'m> {
    pub(crate) tp: &'m TrafficPolicy,
    pub(crate) dr: &'m Sourced<DestinationRuleSpec>,
    pub(crate) index: Option<usize>,
}

impl PolicyAt<'_> {
    fn path(&self) -> String {
        match self.index {
            None => "spec.trafficPolicy".to_string(),
            Some(i) => format!("spec.subsets[{i}].trafficPolicy"),
        }
    }
}

fn part<'m, T>(
    value: &'m Option<T>,
    dr: &'m Sourced<DestinationRuleSpec>,
    path: String,
) -> Option<Part<'m, T>> {
    value.as_ref().map(|value| Part { value, dr, path })
}

/// Applies one level: fields the policy sets replace `parts`; a matching port-level entry
/// then replaces all four.
fn apply<'m>(parts: &mut Parts<'m>, at: PolicyAt<'m>, port: u16) {
    let (tp, dr, base) = (at.tp, at.dr, at.path());
    if let Some(p) = part(&tp.load_balancer, dr, format!("{base}.loadBalancer")) {
        parts.lb = Some(p);
    }
    if let Some(p) = part(&tp.connection_pool, dr, format!("{base}.connectionPool")) {
        parts.pool = Some(p);
    }
    if let Some(p) = part(&tp.outlier_detection, dr, format!("{base}.outlierDetection")) {
        parts.od = Some(p);
    }
    if let Some(p) = part(&tp.tls, dr, format!("{base}.tls")) {
        parts.tls = Some(p);
    }
    if let Some((i, pl)) = tp
        .port_level_settings
        .iter()
        .enumerate()
        .find(|(_, p)| p.port.as_ref().and_then(|s| s.number) == Some(u32::from(port)))
    {
        let pb = format!("{base}.portLevelSettings[{i}]");
        *parts = Parts {
            lb: part(&pl.load_balancer, dr, format!("{pb}.loadBalancer")),
            pool: part(&pl.connection_pool, dr, format!("{pb}.connectionPool")),
            od: part(&pl.outlier_detection, dr, format!("{pb}.outlierDetection")),
            tls: part(&pl.tls, dr, format!("{pb}.tls")),
        };
    }
}

/// The policy of the cluster for `port`, from the host's top-level policy and the subset's.
pub(crate) fn resolve(
    top: Option<PolicyAt<'_>>,
    subset: Option<PolicyAt<'_>>,
    port: u16,
    diags: &mut Diags,
) -> ClusterPolicy {
    let mut parts = Parts::default();
    if let Some(t) = top {
        apply(&mut parts, t, port);
    }
    if let Some(s) = subset {
        apply(&mut parts, s, port);
    }
    if let Some(tls) = &parts.tls
        && matches!(tls.value.mode, Some(ClientTlsMode::Simple | ClientTlsMode::Mutual))
    {
        diags.warn(
            tls.dr,
            &format!("{}.mode", tls.path),
            "TLS origination to the application is not done by the waypoint (traffic leaves in HBONE \
             mutual TLS); ignored",
        );
    }
    ClusterPolicy {
        lb: parts.lb.as_ref().map(|p| load_balancer(p, diags)).unwrap_or(LbPolicy::LeastRequest),
        pool: parts.pool.as_ref().map(pool).unwrap_or_default(),
        outlier: parts.od.as_ref().map(|p| outlier(p, diags)),
    }
}

/// Warnings about a rule's policy fields the waypoint does not implement, reported once per
/// rule (not per cluster).
pub(crate) fn lint(at: PolicyAt<'_>, diags: &mut Diags) {
    let (tp, dr, base) = (at.tp, at.dr, at.path());
    if tp.tunnel.is_some() {
        diags.warn(dr, &format!("{base}.tunnel"), "tunnelling is not supported by the waypoint; ignored");
    }
    if tp.proxy_protocol.is_some() {
        diags.warn(
            dr,
            &format!("{base}.proxyProtocol"),
            "PROXY protocol is not supported by the waypoint; ignored",
        );
    }
    if tp.retry_budget.is_some() {
        diags.warn(
            dr,
            &format!("{base}.retryBudget"),
            "retry budgets are not supported; connectionPool.http.maxRetries limits retries",
        );
    }
}

fn positive(v: Option<i32>) -> Option<u32> {
    // Istio cannot tell 0 from unset for these int32 fields: both mean "default".
    v.and_then(|v| u32::try_from(v).ok()).filter(|v| *v > 0)
}

fn timeout(v: Option<mesh_api::Duration>) -> Option<Option<Duration>> {
    // Set to 0: disabled (Envoy's meaning); unset: the caller's default.
    v.map(|d| Some(d.as_std()).filter(|d| !d.is_zero()))
}

fn pool(p: &Part<'_, ConnectionPoolSettings>) -> PoolSettings {
    let mut out = PoolSettings::default();
    if let Some(tcp) = &p.value.tcp {
        out.max_connections = positive(tcp.max_connections).unwrap_or(u32::MAX);
        if let Some(t) = tcp.connect_timeout.map(|d| d.as_std()).filter(|d| !d.is_zero()) {
            out.connect_timeout = t;
        }
        if let Some(t) = timeout(tcp.idle_timeout) {
            out.tcp_idle_timeout = t;
        }
        out.max_connection_duration = timeout(tcp.max_connection_duration).flatten();
    }
    if let Some(h) = &p.value.http {
        out.max_pending_requests = positive(h.http1_max_pending_requests).unwrap_or(u32::MAX);
        out.max_requests = positive(h.http2_max_requests).unwrap_or(u32::MAX);
        out.max_requests_per_connection = positive(h.max_requests_per_connection);
        out.max_retries = positive(h.max_retries).unwrap_or(u32::MAX);
        if let Some(t) = timeout(h.idle_timeout) {
            out.idle_timeout = t;
        }
        out.max_concurrent_streams = positive(h.max_concurrent_streams);
        out.h2_upgrade = h.h2_upgrade_policy.unwrap_or(H2UpgradePolicy::Default);
        out.use_client_protocol = h.use_client_protocol.unwrap_or(false);
    }
    out
}

fn outlier(p: &Part<'_, OutlierDetection>, diags: &mut Diags) -> OutlierSettings {
    let od = p.value;
    let mut out = OutlierSettings::default();
    // Istio maps the deprecated consecutiveErrors to gateway errors only (istio/api#617).
    if let Some(n) = od.consecutive_errors.and_then(|n| u32::try_from(n).ok()).filter(|n| *n > 0) {
        out.consecutive_gateway = n;
        out.consecutive_5xx = 0;
    }
    if let Some(n) = od.consecutive_gateway_errors {
        out.consecutive_gateway = n;
    }
    if let Some(n) = od.consecutive_5xx_errors {
        out.consecutive_5xx = n;
    }
    if let Some(i) = od.interval.map(|d| d.as_std()) {
        if i.is_zero() {
            diags.warn(p.dr, &format!("{}.interval", p.path), "must be positive; using the default 10s");
        } else {
            out.interval = i;
        }
    }
    if let Some(b) = od.base_ejection_time.map(|d| d.as_std()) {
        if b.is_zero() {
            diags.warn(
                p.dr,
                &format!("{}.baseEjectionTime", p.path),
                "must be positive; using the default 30s",
            );
        } else {
            out.base_ejection_time = b;
        }
    }
    match od.max_ejection_percent {
        Some(0) => diags.warn(
            p.dr,
            &format!("{}.maxEjectionPercent", p.path),
            "0 means unset in Istio: the default 10% applies (set consecutive5xxErrors: 0 to disable ejection)",
        ),
        Some(n) => out.max_ejection_percent = n.clamp(0, 100) as u32,
        None => {}
    }
    if let Some(n) = od.min_health_percent {
        out.min_health_percent = n.clamp(0, 100) as u32;
    }
    if od.split_external_local_origin_errors == Some(true) || od.consecutive_local_origin_failures.is_some() {
        diags.warn(
            p.dr,
            &format!("{}.splitExternalLocalOriginErrors", p.path),
            "local-origin errors are not tracked separately; connect failures, resets and timeouts count \
             as gateway errors",
        );
    }
    out
}

fn load_balancer(p: &Part<'_, LoadBalancerSettings>, diags: &mut Diags) -> LbPolicy {
    let lb = p.value;
    if lb.locality_lb_setting.as_ref().is_some_and(|l| l.enabled != Some(false)) {
        diags.warn(
            p.dr,
            &format!("{}.localityLbSetting", p.path),
            "locality load balancing is not implemented by the waypoint; all localities are used",
        );
    }
    if lb.warmup.is_some() || lb.warmup_duration_secs.is_some() {
        diags.warn(
            p.dr,
            &format!("{}.warmup", p.path),
            "slow start is not implemented by the waypoint; new endpoints get full traffic at once",
        );
    }
    if let Some(ch) = &lb.consistent_hash {
        let chp = format!("{}.consistentHash", p.path);
        let key = if let Some(h) = &ch.http_header_name {
            match HeaderName::from_bytes(h.to_ascii_lowercase().as_bytes()) {
                Ok(n) => HashKey::Header(n),
                Err(_) => {
                    diags.warn(
                        p.dr,
                        &format!("{chp}.httpHeaderName"),
                        format!("{h:?} is not a valid header name; LEAST_REQUEST is used"),
                    );
                    return LbPolicy::LeastRequest;
                }
            }
        } else if let Some(c) = &ch.http_cookie {
            HashKey::Cookie(CookieKey {
                name: c.name.as_str().into(),
                path: c.path.as_deref().filter(|p| !p.is_empty()).map(Into::into),
                ttl: c.ttl.map(|d| d.as_std()),
                attributes: c
                    .attributes
                    .iter()
                    .map(|a| (a.name.as_str().into(), a.value.as_deref().map(Into::into)))
                    .collect(),
            })
        } else if ch.use_source_ip == Some(true) {
            HashKey::SourceIp
        } else if let Some(q) = &ch.http_query_parameter_name {
            HashKey::QueryParameter(q.as_str().into())
        } else {
            diags.warn(p.dr, &chp, "no hash key is set; LEAST_REQUEST is used");
            return LbPolicy::LeastRequest;
        };
        let algorithm = if let Some(m) = &ch.maglev {
            let mut size = m.table_size.filter(|s| *s > 0).unwrap_or(DEFAULT_MAGLEV_TABLE_SIZE);
            if size > MAX_MAGLEV_TABLE_SIZE || !is_prime(size) {
                diags.warn(
                    p.dr,
                    &format!("{chp}.maglev.tableSize"),
                    format!(
                        "{size} is not a prime of at most {MAX_MAGLEV_TABLE_SIZE}; the default \
                         {DEFAULT_MAGLEV_TABLE_SIZE} is used"
                    ),
                );
                size = DEFAULT_MAGLEV_TABLE_SIZE;
            }
            HashAlgorithm::Maglev { table_size: size }
        } else {
            let (written, field) = match &ch.ring_hash {
                Some(r) => (r.minimum_ring_size, "ringHash.minimumRingSize"),
                None => (ch.minimum_ring_size, "minimumRingSize"),
            };
            let mut size = written.filter(|s| *s > 0).unwrap_or(DEFAULT_RING_SIZE);
            if size > MAX_RING_SIZE {
                diags.warn(
                    p.dr,
                    &format!("{chp}.{field}"),
                    format!("{size} is above the maximum ring size {MAX_RING_SIZE}; capped"),
                );
                size = MAX_RING_SIZE;
            }
            HashAlgorithm::RingHash { minimum_ring_size: size }
        };
        return LbPolicy::ConsistentHash(HashPolicy { key, algorithm });
    }
    match lb.simple {
        Some(SimpleLb::RoundRobin) => LbPolicy::RoundRobin,
        Some(SimpleLb::Random) => LbPolicy::Random,
        Some(SimpleLb::Passthrough) => LbPolicy::Passthrough,
        Some(SimpleLb::LeastRequest | SimpleLb::LeastConn | SimpleLb::Unspecified) | None => {
            LbPolicy::LeastRequest
        }
    }
}

pub(crate) fn is_prime(n: u64) -> bool {
    if n < 2 {
        return false;
    }
    if n.is_multiple_of(2) {
        return n == 2;
    }
    let mut d = 3;
    while d * d <= n {
        if n.is_multiple_of(d) {
            return false;
        }
        d += 2;
    }
    true
}
