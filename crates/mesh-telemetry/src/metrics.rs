//! The metric families (registered in a caller's [`Registry`], no globals), grouped in
//! [`Metrics`] so one `Arc` travels to every connection, and the `/metrics` encoder.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use mesh_api::spiffe::SpiffeId;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use crate::labels::TrafficLabels;

/// The `Content-Type` of [`encode`]'s output.
pub const METRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Interned principals kept at most; past it the cache restarts (identities are few in
/// practice: one per service account).
const MAX_INTERNED_PRINCIPALS: usize = 4096;

/// Istio's TCP metric families. prometheus-client appends `_total` to a counter's name, so they
/// are registered without it and exposed with Istio's exact names.
#[derive(Debug, Default)]
pub struct TcpMetrics {
    /// `istio_tcp_connections_opened_total`.
    pub connections_opened: Family<TrafficLabels, Counter>,
    /// `istio_tcp_connections_closed_total`.
    pub connections_closed: Family<TrafficLabels, Counter>,
    /// `istio_tcp_sent_bytes_total`: bytes server → client (the response direction), whatever
    /// the reporter (Istio's definition).
    pub sent_bytes: Family<TrafficLabels, Counter>,
    /// `istio_tcp_received_bytes_total`: bytes client → server (the request direction).
    pub received_bytes: Family<TrafficLabels, Counter>,
}

impl TcpMetrics {
    fn register(&self, registry: &mut Registry) {
        registry.register(
            "istio_tcp_connections_opened",
            "The total number of TCP connections opened",
            self.connections_opened.clone(),
        );
        registry.register(
            "istio_tcp_connections_closed",
            "The total number of TCP connections closed",
            self.connections_closed.clone(),
        );
        registry.register(
            "istio_tcp_sent_bytes",
            "The size of total bytes sent during response in case of a TCP connection",
            self.sent_bytes.clone(),
        );
        registry.register(
            "istio_tcp_received_bytes",
            "The size of total bytes received during request in case of a TCP connection",
            self.received_bytes.clone(),
        );
    }
}

/// Every metric family a proxy reports, plus the shared label text they reuse. Create once,
/// wrap in an `Arc`, hand to every connection.
#[derive(Debug)]
pub struct Metrics {
    pub tcp: TcpMetrics,
    /// `spiffe://` text of identities, so a connection's principal labels share one allocation.
    principals: RwLock<HashMap<SpiffeId, Arc<str>>>,
}

impl Metrics {
    /// Creates the families and registers them in `registry`, which must not carry a prefix
    /// (the names already start with `istio_`).
    pub fn new(registry: &mut Registry) -> Self {
        let tcp = TcpMetrics::default();
        tcp.register(registry);
        Metrics { tcp, principals: RwLock::default() }
    }

    /// The principal label text (`spiffe://td/ns/x/sa/y`) of `id`, shared between connections.
    pub fn principal(&self, id: &SpiffeId) -> Arc<str> {
        // A poisoned lock only means a panic elsewhere mid-insert; the map is still valid.
        let read = self.principals.read().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = read.get(id) {
            return p.clone();
        }
        drop(read);
        let text: Arc<str> = id.to_string().into();
        let mut write = self.principals.write().unwrap_or_else(|e| e.into_inner());
        if write.len() >= MAX_INTERNED_PRINCIPALS {
            write.clear();
        }
        write.entry(id.clone()).or_insert(text).clone()
    }
}

/// Encodes `registry` in the OpenMetrics text format (for `/metrics`, served with
/// [`METRICS_CONTENT_TYPE`]), ending with `# EOF`.
///
/// Writing to a `String` cannot fail; an error can only come from a metric's own encoder.
pub fn encode(registry: &Registry) -> Result<String, std::fmt::Error> {
    let mut out = String::with_capacity(4096);
    prometheus_client::encoding::text::encode(&mut out, registry)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn principal_is_interned() {
        let m = Metrics::new(&mut Registry::default());
        let id = SpiffeId::new("cluster.local", "ns", "sa").unwrap_or_else(|e| panic!("{e}"));
        let a = m.principal(&id);
        let b = m.principal(&id);
        assert_eq!(&*a, "spiffe://cluster.local/ns/ns/sa/sa");
        assert!(Arc::ptr_eq(&a, &b));
    }
}
