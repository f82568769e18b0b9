//! Istio's standard metric labels ([`TrafficLabels`]) and the values they take, encoded with
//! Istio's label names, in Istio's order, with `unknown` for anything not known.
//!
//! Semantics follow Istio's ztunnel:
//! - `reporter` is `source` for the outbound side of a connection, `destination` for the
//!   inbound side (and `waypoint` for a waypoint, issue 5).
//! - `*_workload` is the owner (Deployment-like) name, `*_canonical_service`/`*_app` the
//!   canonical service name, `*_canonical_revision`/`*_version` the canonical revision.
//! - `source_principal` is only set from an identity proven by mTLS (the peer certificate
//!   inbound, our own certificate outbound over HBONE); `destination_principal` is the
//!   destination workload's identity. Principals are full `spiffe://` URIs.
//! - `destination_service` is the service host name, `destination_service_name`/`_namespace`
//!   its name and namespace, all `unknown` when the connection did not go to a service.
//! - `response_flags` is `-` on `opened` and on the byte counters (looked up when the
//!   connection opens), and the final flags on `closed`.

use std::fmt::{self, Write as _};
use std::sync::Arc;

use mesh_model::{Service, Workload};
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelSetEncoder, LabelValueEncoder};

use crate::flags::ResponseFlags;

/// The value Istio reports for a label it does not know.
pub const UNKNOWN: &str = "unknown";

/// Which proxy reports the metric.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Reporter {
    /// The proxy on the client side (outbound).
    #[default]
    Source,
    /// The proxy on the server side (inbound).
    Destination,
    /// A waypoint between the two.
    Waypoint,
}

impl Reporter {
    pub const fn as_str(self) -> &'static str {
        match self {
            Reporter::Source => "source",
            Reporter::Destination => "destination",
            Reporter::Waypoint => "waypoint",
        }
    }
}

/// The `request_protocol` label.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum RequestProtocol {
    #[default]
    Tcp,
    Http,
    Grpc,
}

impl RequestProtocol {
    pub const fn as_str(self) -> &'static str {
        match self {
            RequestProtocol::Tcp => "tcp",
            RequestProtocol::Http => "http",
            RequestProtocol::Grpc => "grpc",
        }
    }
}

/// The `connection_security_policy` label.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum SecurityPolicy {
    /// Not known (Istio ztunnel's value for plaintext passthrough).
    #[default]
    Unknown,
    /// Mutual TLS (HBONE).
    MutualTls,
    /// Known plaintext (Envoy's value for a plaintext inbound connection).
    None,
}

impl SecurityPolicy {
    pub const fn as_str(self) -> &'static str {
        match self {
            SecurityPolicy::Unknown => "unknown",
            SecurityPolicy::MutualTls => "mutual_tls",
            SecurityPolicy::None => "none",
        }
    }
}

macro_rules! static_label_value {
    ($($t:ty),*) => {$(
        impl EncodeLabelValue for $t {
            fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> fmt::Result {
                encoder.write_str(self.as_str())
            }
        }
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    )*};
}
static_label_value!(Reporter, RequestProtocol, SecurityPolicy);

/// A label value: shared text, `unknown` when absent or empty.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct LabelValue(Option<Arc<str>>);

impl LabelValue {
    /// The text, or `None` when the label would read `unknown`.
    pub fn get(&self) -> Option<&str> {
        self.0.as_deref().filter(|s| !s.is_empty())
    }

    /// The text as exposed (`unknown` when absent).
    pub fn as_str(&self) -> &str {
        self.get().unwrap_or(UNKNOWN)
    }
}

impl From<Arc<str>> for LabelValue {
    fn from(s: Arc<str>) -> Self {
        LabelValue(Some(s))
    }
}

impl From<&Arc<str>> for LabelValue {
    fn from(s: &Arc<str>) -> Self {
        LabelValue(Some(s.clone()))
    }
}

impl From<Option<Arc<str>>> for LabelValue {
    fn from(s: Option<Arc<str>>) -> Self {
        LabelValue(s)
    }
}

impl From<&str> for LabelValue {
    /// Allocates; for tests and one-off values. Hot paths pass `Arc<str>`.
    fn from(s: &str) -> Self {
        LabelValue(Some(s.into()))
    }
}

impl fmt::Display for LabelValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl EncodeLabelValue for LabelValue {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> fmt::Result {
        encoder.write_str(self.as_str())
    }
}

/// The labels describing one end (source or destination workload) of a connection.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct PeerLabels {
    /// `*_workload`: owner (Deployment-like) name.
    pub workload: LabelValue,
    /// `*_canonical_service`.
    pub canonical_service: LabelValue,
    /// `*_canonical_revision`.
    pub canonical_revision: LabelValue,
    /// `*_workload_namespace`.
    pub namespace: LabelValue,
    /// `*_principal`: `spiffe://...`.
    pub principal: LabelValue,
    /// `*_app`.
    pub app: LabelValue,
    /// `*_version`.
    pub version: LabelValue,
    /// `*_cluster`.
    pub cluster: LabelValue,
}

impl PeerLabels {
    /// The labels of a model workload, as Istio's ztunnel fills them (`app`/`version` are the
    /// canonical name/revision). The principal is left unknown: set it with
    /// [`PeerLabels::with_principal`] when mTLS proved it (see the module docs).
    pub fn from_workload(w: &Workload, cluster: &Arc<str>) -> Self {
        PeerLabels {
            workload: (&w.workload_name).into(),
            canonical_service: (&w.canonical_name).into(),
            canonical_revision: (&w.canonical_revision).into(),
            namespace: (&w.namespace).into(),
            principal: LabelValue::default(),
            app: (&w.canonical_name).into(),
            version: (&w.canonical_revision).into(),
            cluster: cluster.into(),
        }
    }

    /// Sets the principal (a full `spiffe://` URI, e.g. from [`crate::Metrics::principal`]).
    #[must_use]
    pub fn with_principal(mut self, principal: Arc<str>) -> Self {
        self.principal = principal.into();
        self
    }
}

/// The `destination_service*` labels.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct ServiceLabels {
    /// `destination_service`: the host name (`name.ns.svc.cluster.local`).
    pub host: LabelValue,
    /// `destination_service_name`.
    pub name: LabelValue,
    /// `destination_service_namespace`.
    pub namespace: LabelValue,
}

impl ServiceLabels {
    pub fn from_service(s: &Service) -> Self {
        ServiceLabels { host: (&s.hostname).into(), name: (&s.name).into(), namespace: (&s.namespace).into() }
    }
}

/// Istio's label set for TCP metrics (and, with response code etc. added in issue 5, for the
/// request metrics). Built once per connection; every text field is a shared `Arc<str>`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct TrafficLabels {
    pub reporter: Reporter,
    pub source: PeerLabels,
    pub destination_service: ServiceLabels,
    pub destination: PeerLabels,
    pub request_protocol: RequestProtocol,
    pub response_flags: ResponseFlags,
    pub connection_security_policy: SecurityPolicy,
}

/// Every label name of [`TrafficLabels`], in exposition order (tests and docs use it).
pub const TRAFFIC_LABEL_NAMES: [&str; 23] = [
    "reporter",
    "source_workload",
    "source_canonical_service",
    "source_canonical_revision",
    "source_workload_namespace",
    "source_principal",
    "source_app",
    "source_version",
    "source_cluster",
    "destination_service",
    "destination_service_namespace",
    "destination_service_name",
    "destination_workload",
    "destination_canonical_service",
    "destination_canonical_revision",
    "destination_workload_namespace",
    "destination_principal",
    "destination_app",
    "destination_version",
    "destination_cluster",
    "request_protocol",
    "response_flags",
    "connection_security_policy",
];

/// Encodes one `name="value"` label (used by the request labels too).
pub(crate) fn encode_str(encoder: &mut LabelSetEncoder<'_>, name: &str, value: &str) -> fmt::Result {
    label(encoder, name, &value)
}

fn label(encoder: &mut LabelSetEncoder<'_>, name: &str, value: &impl EncodeLabelValue) -> fmt::Result {
    let mut label = encoder.encode_label();
    let mut key = label.encode_label_key()?;
    key.write_str(name)?;
    let mut value_encoder = key.encode_label_value()?;
    value.encode(&mut value_encoder)?;
    value_encoder.finish()
}

fn peer(encoder: &mut LabelSetEncoder<'_>, names: &[&str], p: &PeerLabels) -> fmt::Result {
    let values = [
        &p.workload,
        &p.canonical_service,
        &p.canonical_revision,
        &p.namespace,
        &p.principal,
        &p.app,
        &p.version,
        &p.cluster,
    ];
    for (name, value) in names.iter().zip(values) {
        label(encoder, name, value)?;
    }
    Ok(())
}

impl EncodeLabelSet for TrafficLabels {
    fn encode(&self, encoder: &mut LabelSetEncoder<'_>) -> fmt::Result {
        let n = &TRAFFIC_LABEL_NAMES;
        label(encoder, n[0], &self.reporter)?;
        peer(encoder, &n[1..9], &self.source)?;
        label(encoder, n[9], &self.destination_service.host)?;
        label(encoder, n[10], &self.destination_service.namespace)?;
        label(encoder, n[11], &self.destination_service.name)?;
        peer(encoder, &n[12..20], &self.destination)?;
        label(encoder, n[20], &self.request_protocol)?;
        label(encoder, n[21], &self.response_flags)?;
        label(encoder, n[22], &self.connection_security_policy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn value_defaults_to_unknown() {
        assert_eq!(LabelValue::default().as_str(), "unknown");
        assert_eq!(LabelValue::from("").as_str(), "unknown");
        assert_eq!(LabelValue::from("x").get(), Some("x"));
    }

    #[test]
    fn enum_values_are_istios() {
        assert_eq!(Reporter::Source.to_string(), "source");
        assert_eq!(Reporter::Destination.to_string(), "destination");
        assert_eq!(SecurityPolicy::MutualTls.to_string(), "mutual_tls");
        assert_eq!(SecurityPolicy::None.to_string(), "none");
        assert_eq!(SecurityPolicy::Unknown.to_string(), "unknown");
        assert_eq!(RequestProtocol::Tcp.to_string(), "tcp");
    }
}
