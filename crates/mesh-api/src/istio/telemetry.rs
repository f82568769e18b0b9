//! `telemetry.istio.io` (v1, v1alpha1): Telemetry (tracing, metrics, access logging).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::common::{PolicyTargetReference, WorkloadSelector};
use crate::duration::Duration;

/// `Telemetry.spec`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TelemetrySpec {
    /// Workloads it applies to (exclusive with targetRef(s)).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub selector: Option<WorkloadSelector>,
    /// Single target.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<PolicyTargetReference>,
    /// Several targets.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub target_refs: Vec<PolicyTargetReference>,
    /// Tracing configuration.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tracing: Vec<Tracing>,
    /// Metrics configuration.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metrics: Vec<Metrics>,
    /// Access log configuration.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub access_logging: Vec<AccessLogging>,
}

/// `ProviderRef`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProviderRef {
    /// Provider name from mesh config.
    #[serde(default)]
    pub name: String,
}

/// `WorkloadMode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum WorkloadMode {
    ClientAndServer,
    Client,
    Server,
}

/// `Tracing.TracingSelector` / `AccessLogging.LogSelector`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ModeSelector {
    /// Client side, server side or both.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<WorkloadMode>,
}

/// `Tracing`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Tracing {
    /// Which side this applies to.
    #[serde(rename = "match")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub match_: Option<ModeSelector>,
    /// Tracing providers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub providers: Vec<ProviderRef>,
    /// Sampling percentage (0.0-100.0).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub random_sampling_percentage: Option<f64>,
    /// Stop reporting spans.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disable_span_reporting: Option<bool>,
    /// Don't propagate trace context.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disable_context_propagation: Option<bool>,
    /// Extra span tags.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub custom_tags: BTreeMap<String, CustomTag>,
    /// Sample by request id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub use_request_id_for_trace_sampling: Option<bool>,
    /// Add Istio's own tags.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enable_istio_tags: Option<bool>,
}

/// `Tracing.CustomTag` (one of literal, environment, header, formatter).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CustomTag {
    /// Fixed value.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub literal: Option<LiteralTag>,
    /// From an environment variable.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub environment: Option<NamedTag>,
    /// From a request header.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub header: Option<NamedTag>,
    /// From an access-log formatter expression.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub formatter: Option<LiteralTag>,
}

/// `Tracing.Literal` / `Tracing.Formatter`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LiteralTag {
    /// Value or expression.
    #[serde(default)]
    pub value: String,
}

/// `Tracing.Environment` / `Tracing.RequestHeader`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NamedTag {
    /// Variable or header name.
    #[serde(default)]
    pub name: String,
    /// Value when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_value: Option<String>,
}

/// `Metrics`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Metrics {
    /// Metrics providers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub providers: Vec<ProviderRef>,
    /// Per-metric overrides.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub overrides: Vec<MetricsOverrides>,
    /// Reporting interval for long-lived connections.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reporting_interval: Option<Duration>,
}

/// `MetricsOverrides`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MetricsOverrides {
    /// Which metric(s) this applies to.
    #[serde(rename = "match")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub match_: Option<MetricSelector>,
    /// Turn the metric(s) off.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disabled: Option<bool>,
    /// Label changes.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tag_overrides: BTreeMap<String, TagOverride>,
}

/// `MetricSelector` (metric or customMetric, plus mode).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MetricSelector {
    /// Istio standard metric.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metric: Option<IstioMetric>,
    /// Custom metric name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub custom_metric: Option<String>,
    /// Client side, server side or both.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<WorkloadMode>,
}

/// `MetricSelector.IstioMetric`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum IstioMetric {
    AllMetrics,
    RequestCount,
    RequestDuration,
    RequestSize,
    ResponseSize,
    TcpOpenedConnections,
    TcpClosedConnections,
    TcpSentBytes,
    TcpReceivedBytes,
    GrpcRequestMessages,
    GrpcResponseMessages,
}

/// `MetricsOverrides.TagOverride`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TagOverride {
    /// UPSERT or REMOVE.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub operation: Option<TagOperation>,
    /// CEL expression of the new value.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

/// `TagOverride.Operation`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TagOperation {
    Upsert,
    Remove,
}

/// `AccessLogging`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AccessLogging {
    /// Which side this applies to.
    #[serde(rename = "match")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub match_: Option<ModeSelector>,
    /// Log providers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub providers: Vec<ProviderRef>,
    /// Turn logging off.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disabled: Option<bool>,
    /// CEL filter.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filter: Option<AccessLogFilter>,
}

/// `AccessLogging.Filter`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AccessLogFilter {
    /// CEL expression.
    #[serde(default)]
    pub expression: String,
}
