//! VirtualService: L7/L4 routing rules for hosts (every field of Istio's API).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::common::{Destination, Headers, Percent, StringMatch};
use crate::duration::Duration;

/// `VirtualService.spec`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VirtualServiceSpec {
    /// Destination hosts the rules apply to (short names resolve in the object's namespace).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// Gateways (and `mesh`) the rules apply to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gateways: Vec<String>,
    /// Ordered HTTP routes; the first match wins.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub http: Vec<HttpRoute>,
    /// Ordered TLS passthrough routes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tls: Vec<TlsRoute>,
    /// Ordered TCP routes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tcp: Vec<TcpRoute>,
    /// Namespaces this object is visible to (`.`, `*`, names).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub export_to: Vec<String>,
}

/// One HTTP route.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRoute {
    /// Route name, for logs and delegation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Match conditions, ORed; empty matches everything.
    #[serde(default, rename = "match")]
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub matches: Vec<HttpMatchRequest>,
    /// Weighted destinations.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub route: Vec<HttpRouteDestination>,
    /// Answer with a redirect instead of forwarding.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redirect: Option<HttpRedirect>,
    /// Answer directly instead of forwarding.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub direct_response: Option<HttpDirectResponse>,
    /// Delegate to another VirtualService (not supported by the waypoint).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delegate: Option<Delegate>,
    /// Rewrite of URI/authority before forwarding.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rewrite: Option<HttpRewrite>,
    /// Overall request timeout.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    /// Retry policy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retries: Option<HttpRetry>,
    /// Fault injection.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fault: Option<HttpFaultInjection>,
    /// Mirror target (fire and forget).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mirror: Option<Destination>,
    /// Several mirror targets, each with its percentage.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mirrors: Vec<HttpMirrorPolicy>,
    /// Deprecated integer mirror percentage (0-100).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mirror_percent: Option<u32>,
    /// Deprecated snake_case spelling of `mirrorPercent`.
    #[serde(rename = "mirror_percent")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mirror_percent_snake: Option<u32>,
    /// Percentage of requests mirrored (0.0-100.0).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mirror_percentage: Option<Percent>,
    /// CORS policy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cors_policy: Option<CorsPolicy>,
    /// Header manipulation for all destinations.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub headers: Option<Headers>,
}

/// `HTTPMatchRequest`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpMatchRequest {
    /// Name of the match, appended to the route name in logs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Path (and query) match.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uri: Option<StringMatch>,
    /// Scheme match.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scheme: Option<StringMatch>,
    /// Method match.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Option<StringMatch>,
    /// Host/:authority match.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authority: Option<StringMatch>,
    /// Header matches (lower-case names); `{}` means present.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, StringMatch>,
    /// Destination port.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u32>,
    /// Labels of the calling workload.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub source_labels: BTreeMap<String, String>,
    /// Gateways this match applies to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gateways: Vec<String>,
    /// Query parameter matches (exact/regex).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub query_params: BTreeMap<String, StringMatch>,
    /// Case-insensitive URI match.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ignore_uri_case: Option<bool>,
    /// Headers that must NOT match.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub without_headers: BTreeMap<String, StringMatch>,
    /// Namespace of the calling workload.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_namespace: Option<String>,
    /// Stat prefix for this match.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stat_prefix: Option<String>,
}

/// `HTTPRouteDestination`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRouteDestination {
    /// Where to send the request.
    pub destination: Destination,
    /// Relative weight in percent (all weights of a route sum to 100).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weight: Option<i32>,
    /// Header manipulation for this destination.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub headers: Option<Headers>,
}

/// `HTTPRedirect`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRedirect {
    /// Replacement path.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    /// Replacement authority.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authority: Option<String>,
    /// Replacement port.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u32>,
    /// Port derived from the protocol or the request (instead of `port`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub derive_port: Option<RedirectPortSelection>,
    /// Replacement scheme.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scheme: Option<String>,
    /// HTTP status code (default 301).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redirect_code: Option<u32>,
}

/// `HTTPRedirect.RedirectPortSelection`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RedirectPortSelection {
    FromProtocolDefault,
    FromRequestPort,
}

/// `HTTPDirectResponse`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpDirectResponse {
    /// HTTP status code.
    pub status: u32,
    /// Response body.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<HttpBody>,
}

/// `HTTPBody`: string or base64 bytes.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpBody {
    /// Body as text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub string: Option<String>,
    /// Body as base64.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes: Option<String>,
}

/// `Delegate`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Delegate {
    /// Name of the delegate VirtualService.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Namespace of the delegate VirtualService.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// `HTTPRewrite`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRewrite {
    /// Replacement for the matched prefix/whole path.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    /// Replacement authority.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authority: Option<String>,
    /// Regex rewrite of the path.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uri_regex_rewrite: Option<RegexRewrite>,
}

/// `RegexRewrite`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RegexRewrite {
    /// RE2 pattern.
    #[serde(rename = "match")]
    pub pattern: crate::common::Regex,
    /// Replacement with `\1` style groups.
    pub rewrite: String,
}

/// `HTTPRetry`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRetry {
    /// Number of retries (not counting the first try).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempts: Option<i32>,
    /// Timeout per try.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub per_try_timeout: Option<Duration>,
    /// Comma-separated conditions (5xx, gateway-error, reset, connect-failure, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_on: Option<String>,
    /// Retry in other localities.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_remote_localities: Option<bool>,
    /// Avoid hosts already tried.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_ignore_previous_hosts: Option<bool>,
    /// Base interval of exponential backoff.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backoff: Option<Duration>,
}

/// `HTTPFaultInjection`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpFaultInjection {
    /// Delay before forwarding.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delay: Option<FaultDelay>,
    /// Abort with an error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub abort: Option<FaultAbort>,
}

/// `HTTPFaultInjection.Delay`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FaultDelay {
    /// Fixed delay.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fixed_delay: Option<Duration>,
    /// Exponential delay (not implemented by Istio).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exponential_delay: Option<Duration>,
    /// Percentage of requests delayed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub percentage: Option<Percent>,
    /// Deprecated integer percentage (0-100).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub percent: Option<i32>,
}

/// `HTTPFaultInjection.Abort`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FaultAbort {
    /// HTTP status to answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_status: Option<i32>,
    /// gRPC status name (e.g. UNAVAILABLE).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grpc_status: Option<String>,
    /// HTTP/2 error (not implemented by Istio).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http2_error: Option<String>,
    /// Percentage of requests aborted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub percentage: Option<Percent>,
}

/// `HTTPMirrorPolicy`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpMirrorPolicy {
    /// Mirror target.
    pub destination: Destination,
    /// Percentage of requests mirrored (default 100).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub percentage: Option<Percent>,
}

/// `CorsPolicy`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CorsPolicy {
    /// Deprecated exact origins.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_origin: Vec<String>,
    /// Allowed origins.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_origins: Vec<StringMatch>,
    /// Allowed methods.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_methods: Vec<String>,
    /// Allowed request headers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_headers: Vec<String>,
    /// Headers exposed to the browser.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expose_headers: Vec<String>,
    /// How long a preflight may be cached.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_age: Option<Duration>,
    /// Allow credentials.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_credentials: Option<bool>,
    /// What to do with preflights whose origin matches nothing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unmatched_preflights: Option<UnmatchedPreflights>,
}

/// `CorsPolicy.UnmatchedPreflights`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum UnmatchedPreflights {
    Unspecified,
    Forward,
    Ignore,
}

/// `TLSRoute`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TlsRoute {
    /// Match conditions (SNI).
    #[serde(default, rename = "match")]
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub matches: Vec<TlsMatchAttributes>,
    /// Weighted destinations.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub route: Vec<RouteDestination>,
}

/// `TLSMatchAttributes`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TlsMatchAttributes {
    /// SNI names to match.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sni_hosts: Vec<String>,
    /// Destination CIDRs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub destination_subnets: Vec<String>,
    /// Destination port.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u32>,
    /// Labels of the calling workload.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub source_labels: BTreeMap<String, String>,
    /// Gateways this match applies to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gateways: Vec<String>,
    /// Namespace of the calling workload.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_namespace: Option<String>,
}

/// `TCPRoute`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TcpRoute {
    /// Match conditions.
    #[serde(default, rename = "match")]
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub matches: Vec<L4MatchAttributes>,
    /// Weighted destinations.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub route: Vec<RouteDestination>,
}

/// `L4MatchAttributes`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct L4MatchAttributes {
    /// Destination CIDRs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub destination_subnets: Vec<String>,
    /// Destination port.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u32>,
    /// Source CIDR (deprecated).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_subnet: Option<String>,
    /// Labels of the calling workload.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub source_labels: BTreeMap<String, String>,
    /// Gateways this match applies to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gateways: Vec<String>,
    /// Namespace of the calling workload.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_namespace: Option<String>,
}

/// `RouteDestination` (TLS/TCP routes).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteDestination {
    /// Where to send the connection.
    pub destination: Destination,
    /// Weight in percent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weight: Option<i32>,
}
