//! ServiceEntry: services added to the mesh's registry (external hosts, VMs).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::common::LabelsSelector;

/// `ServiceEntry.spec`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceEntrySpec {
    /// Host names of the service.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// Virtual IPs/CIDRs of the service.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<String>,
    /// Ports of the service.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<ServicePort>,
    /// Inside or outside the mesh.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<Location>,
    /// How endpoints are found.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resolution: Option<Resolution>,
    /// Static endpoints.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<WorkloadEntry>,
    /// Pods/WorkloadEntries backing the service (exclusive with endpoints).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workload_selector: Option<LabelsSelector>,
    /// Namespaces this object is visible to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub export_to: Vec<String>,
    /// Accepted server SANs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subject_alt_names: Vec<String>,
}

/// `ServicePort`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServicePort {
    /// Port number.
    #[serde(default)]
    pub number: u32,
    /// Protocol (HTTP, HTTPS, GRPC, HTTP2, TCP, TLS, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    /// Port name.
    #[serde(default)]
    pub name: String,
    /// Endpoint port, when different.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_port: Option<u32>,
}

/// `ServiceEntry.Location`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Location {
    MeshExternal,
    MeshInternal,
}

/// `ServiceEntry.Resolution`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Resolution {
    None,
    Static,
    Dns,
    DnsRoundRobin,
    DynamicDns,
}

/// `WorkloadEntry` (inline endpoint of a ServiceEntry).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadEntry {
    /// IP, host name or `unix://` path.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// Port name → endpoint port.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub ports: BTreeMap<String, u32>,
    /// Endpoint labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Network of the endpoint.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    /// Locality (`region/zone/subzone`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub locality: Option<String>,
    /// Load-balancing weight.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
    /// Service account of the endpoint.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service_account: Option<String>,
}
