//! Sidecar: scope of a workload's proxy configuration (ingress listeners, egress hosts).

use serde::{Deserialize, Serialize};

use super::destination_rule::ConnectionPoolSettings;
use super::gateway::ServerTlsSettings;
use crate::common::{Destination, LabelsSelector};

/// `Sidecar.spec`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SidecarSpec {
    /// Workloads the Sidecar applies to; none = the whole namespace.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workload_selector: Option<LabelsSelector>,
    /// Inbound listeners.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ingress: Vec<IstioIngressListener>,
    /// Outbound hosts (`namespace/dnsName`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub egress: Vec<IstioEgressListener>,
    /// Inbound connection pool for all ports.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inbound_connection_pool: Option<ConnectionPoolSettings>,
    /// Treatment of unknown outbound destinations.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outbound_traffic_policy: Option<OutboundTrafficPolicy>,
}

/// `SidecarPort` (Sidecar listener port).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SidecarPort {
    /// Port number.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub number: Option<u32>,
    /// Protocol.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    /// Port name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Deprecated target port.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_port: Option<u32>,
}

/// `IstioIngressListener`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IstioIngressListener {
    /// Port to listen on.
    #[serde(default)]
    pub port: SidecarPort,
    /// Address to bind.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bind: Option<String>,
    /// Capture mode.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capture_mode: Option<CaptureMode>,
    /// Where to forward (`127.0.0.1:PORT`, `0.0.0.0:PORT`, `unix://...`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_endpoint: Option<String>,
    /// TLS settings.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<ServerTlsSettings>,
    /// Connection pool for this port.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connection_pool: Option<ConnectionPoolSettings>,
}

/// `IstioEgressListener`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IstioEgressListener {
    /// Port to listen on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<SidecarPort>,
    /// Address to bind.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bind: Option<String>,
    /// Capture mode.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capture_mode: Option<CaptureMode>,
    /// Reachable hosts as `namespace/dnsName` (`*`, `.`, `~` allowed as namespace).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
}

/// `CaptureMode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CaptureMode {
    Default,
    Iptables,
    None,
}

/// `OutboundTrafficPolicy`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OutboundTrafficPolicy {
    /// REGISTRY_ONLY or ALLOW_ANY.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<OutboundMode>,
    /// Proxy for unknown destinations.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub egress_proxy: Option<Destination>,
}

/// `OutboundTrafficPolicy.Mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OutboundMode {
    RegistryOnly,
    AllowAny,
}
