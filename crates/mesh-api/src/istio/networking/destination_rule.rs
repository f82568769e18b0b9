//! DestinationRule: subsets and traffic policies (load balancing, connection pools, outlier
//! detection, TLS) for a host. `ConnectionPoolSettings` is shared with Sidecar.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::common::PortSelector;
use crate::duration::Duration;

/// `DestinationRule.spec`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DestinationRuleSpec {
    /// Service host the rule applies to.
    #[serde(default)]
    pub host: String,
    /// Policy for all traffic to the host.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub traffic_policy: Option<TrafficPolicy>,
    /// Named subsets by pod labels.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subsets: Vec<Subset>,
    /// Namespaces this object is visible to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub export_to: Vec<String>,
    /// Workloads the rule applies to (sidecar-scoped rules).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workload_selector: Option<crate::common::WorkloadSelector>,
}

/// `TrafficPolicy`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TrafficPolicy {
    /// Load-balancing algorithm.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub load_balancer: Option<LoadBalancerSettings>,
    /// Circuit-breaker limits.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connection_pool: Option<ConnectionPoolSettings>,
    /// Passive health checking.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outlier_detection: Option<OutlierDetection>,
    /// Upstream TLS.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<ClientTlsSettings>,
    /// Per-port overrides.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub port_level_settings: Vec<PortTrafficPolicy>,
    /// HTTP CONNECT tunnelling to the upstream.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tunnel: Option<TunnelSettings>,
    /// PROXY protocol towards the upstream.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proxy_protocol: Option<ProxyProtocol>,
    /// Retry budget.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_budget: Option<RetryBudget>,
}

/// `TrafficPolicy.PortTrafficPolicy`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PortTrafficPolicy {
    /// Port the settings apply to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<PortSelector>,
    /// Load-balancing algorithm.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub load_balancer: Option<LoadBalancerSettings>,
    /// Circuit-breaker limits.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connection_pool: Option<ConnectionPoolSettings>,
    /// Passive health checking.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outlier_detection: Option<OutlierDetection>,
    /// Upstream TLS.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<ClientTlsSettings>,
}

/// `TrafficPolicy.TunnelSettings`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TunnelSettings {
    /// CONNECT or POST.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    /// Host to tunnel to.
    #[serde(default)]
    pub target_host: String,
    /// Port to tunnel to.
    #[serde(default)]
    pub target_port: u32,
}

/// `TrafficPolicy.ProxyProtocol`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProxyProtocol {
    /// PROXY protocol version.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<ProxyProtocolVersion>,
}

/// `ProxyProtocol.VERSION`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub enum ProxyProtocolVersion {
    V1,
    V2,
}

/// `TrafficPolicy.RetryBudget`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RetryBudget {
    /// Max share of active requests that may be retries, in percent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub percent: Option<f64>,
    /// Retries always allowed regardless of the budget.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_retry_concurrency: Option<u32>,
}

/// `Subset`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Subset {
    /// Subset name, referenced by routes.
    #[serde(default)]
    pub name: String,
    /// Pod labels selecting the subset's endpoints.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Policy overriding the rule's for this subset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub traffic_policy: Option<TrafficPolicy>,
}

/// `LoadBalancerSettings`: `simple` or `consistentHash` (one of), plus locality settings.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LoadBalancerSettings {
    /// Standard algorithm.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub simple: Option<SimpleLb>,
    /// Hash-based affinity.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consistent_hash: Option<ConsistentHashLb>,
    /// Locality-weighted load balancing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub locality_lb_setting: Option<LocalityLoadBalancerSetting>,
    /// Deprecated slow-start window.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warmup_duration_secs: Option<Duration>,
    /// Slow start.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warmup: Option<WarmupConfiguration>,
}

/// `LoadBalancerSettings.SimpleLB`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SimpleLb {
    Unspecified,
    LeastConn,
    Random,
    Passthrough,
    RoundRobin,
    LeastRequest,
}

/// `LoadBalancerSettings.ConsistentHashLB`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConsistentHashLb {
    /// Hash on this request header.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_header_name: Option<String>,
    /// Hash on this cookie (generated when absent if `ttl` is set).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_cookie: Option<HttpCookie>,
    /// Hash on the source IP.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub use_source_ip: Option<bool>,
    /// Hash on this query parameter.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_query_parameter_name: Option<String>,
    /// Ring hash algorithm.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ring_hash: Option<RingHash>,
    /// Maglev algorithm.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub maglev: Option<MagLev>,
    /// Deprecated ring size (use ringHash).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub minimum_ring_size: Option<u64>,
}

/// `ConsistentHashLB.HTTPCookie`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpCookie {
    /// Cookie name.
    #[serde(default)]
    pub name: String,
    /// Cookie path.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Lifetime of a generated cookie.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttl: Option<Duration>,
    /// Extra cookie attributes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attributes: Vec<CookieAttribute>,
}

/// `HTTPCookie.Attribute`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CookieAttribute {
    /// Attribute name.
    #[serde(default)]
    pub name: String,
    /// Attribute value.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

/// `ConsistentHashLB.RingHash`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RingHash {
    /// Minimum number of virtual nodes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub minimum_ring_size: Option<u64>,
}

/// `ConsistentHashLB.MagLev`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MagLev {
    /// Lookup table size (prime).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub table_size: Option<u64>,
}

/// `LocalityLoadBalancerSetting`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LocalityLoadBalancerSetting {
    /// Traffic distribution between localities.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub distribute: Vec<LocalityDistribute>,
    /// Failover between regions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failover: Vec<LocalityFailover>,
    /// Label keys ordering failover priority.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failover_priority: Vec<String>,
    /// Enable locality load balancing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
}

/// `LocalityLoadBalancerSetting.Distribute`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LocalityDistribute {
    /// Source locality (`region/zone/subzone`, `*` wildcards).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// Destination locality → weight in percent.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub to: BTreeMap<String, u32>,
}

/// `LocalityLoadBalancerSetting.Failover`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LocalityFailover {
    /// Region that fails over.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// Region failed over to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
}

/// `WarmupConfiguration`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WarmupConfiguration {
    /// Slow-start window.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration: Option<Duration>,
    /// Starting share of traffic, in percent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub minimum_percent: Option<f64>,
    /// Speed of traffic increase (non-linear when > 1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aggression: Option<f64>,
}

/// `ConnectionPoolSettings`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConnectionPoolSettings {
    /// TCP limits.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tcp: Option<TcpSettings>,
    /// HTTP limits.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpSettings>,
}

/// `ConnectionPoolSettings.TCPSettings`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TcpSettings {
    /// Maximum connections to the host.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<i32>,
    /// TCP connect timeout.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connect_timeout: Option<Duration>,
    /// Keepalive settings.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tcp_keepalive: Option<TcpKeepalive>,
    /// Maximum lifetime of a connection.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_connection_duration: Option<Duration>,
    /// Idle timeout of a TCP connection.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Option<Duration>,
}

/// `TCPSettings.TcpKeepalive`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TcpKeepalive {
    /// Probes before the connection is dead.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub probes: Option<u32>,
    /// Idle time before probes start.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time: Option<Duration>,
    /// Interval between probes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interval: Option<Duration>,
}

/// `ConnectionPoolSettings.HTTPSettings`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpSettings {
    /// Maximum queued requests.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http1_max_pending_requests: Option<i32>,
    /// Maximum active requests.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http2_max_requests: Option<i32>,
    /// Requests per connection before it is closed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_requests_per_connection: Option<i32>,
    /// Maximum concurrent retries.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_retries: Option<i32>,
    /// Idle timeout of an upstream connection.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Option<Duration>,
    /// Whether to upgrade HTTP/1.1 to HTTP/2.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub h2_upgrade_policy: Option<H2UpgradePolicy>,
    /// Use the client's protocol upstream.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub use_client_protocol: Option<bool>,
    /// Maximum concurrent streams per HTTP/2 connection.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_concurrent_streams: Option<i32>,
}

/// `HTTPSettings.H2UpgradePolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum H2UpgradePolicy {
    Default,
    DoNotUpgrade,
    Upgrade,
}

/// `OutlierDetection`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OutlierDetection {
    /// Split local-origin errors from upstream errors.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub split_external_local_origin_errors: Option<bool>,
    /// Consecutive local-origin failures before ejection.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consecutive_local_origin_failures: Option<u32>,
    /// Consecutive 502/503/504 before ejection.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consecutive_gateway_errors: Option<u32>,
    /// Consecutive 5xx before ejection.
    #[serde(rename = "consecutive5xxErrors")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consecutive_5xx_errors: Option<u32>,
    /// Deprecated: use consecutive5xxErrors.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consecutive_errors: Option<i32>,
    /// Time between ejection sweeps.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interval: Option<Duration>,
    /// Minimum ejection duration (grows with each ejection).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base_ejection_time: Option<Duration>,
    /// Maximum share of hosts ejected, in percent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_ejection_percent: Option<i32>,
    /// Outlier detection is off below this share of healthy hosts, in percent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_health_percent: Option<i32>,
}

/// `ClientTLSSettings`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClientTlsSettings {
    /// TLS mode.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<ClientTlsMode>,
    /// Client certificate file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_certificate: Option<String>,
    /// Client private key file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub private_key: Option<String>,
    /// CA certificates file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_certificates: Option<String>,
    /// Secret holding the client certificate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credential_name: Option<String>,
    /// Accepted server SANs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subject_alt_names: Vec<String>,
    /// SNI to send.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sni: Option<String>,
    /// Skip server certificate verification.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub insecure_skip_verify: Option<bool>,
    /// CRL file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_crl: Option<String>,
}

/// `ClientTLSSettings.TLSmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ClientTlsMode {
    Disable,
    Simple,
    Mutual,
    IstioMutual,
}
