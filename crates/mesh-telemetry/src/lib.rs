//! Istio-compatible telemetry for the mesh's proxies: the standard metric families with
//! Istio's names and labels ([`Metrics`], registered in a caller's registry), the per-connection
//! guard that records metrics and the JSON access-log line in one place ([`ConnGuard`]),
//! Envoy/Istio response flags, the `/metrics` encoder, the reloadable logging setup, and
//! [`raise_open_files_limit`] for the proxies' startup.
//!
//! ```
//! use std::sync::Arc;
//! use mesh_telemetry::{ConnGuard, ConnInfo, Metrics, Registry, Reporter, ResponseFlag, encode};
//!
//! let mut registry = Registry::default();
//! let metrics = Arc::new(Metrics::new(&mut registry)); // once per process
//!
//! // Per connection: labels built once (from the model: `PeerLabels::from_workload`, ...).
//! let info = ConnInfo::new(Reporter::Source, "10.0.1.10:40000".parse()?, "10.96.0.20:80".parse()?);
//! let mut guard = ConnGuard::open(&metrics, info);
//! guard.add_to_server(512); // per chunk, from either copy half (`&guard`)
//! guard.add_to_client(2048);
//! guard.fail(ResponseFlag::UpstreamConnectionTermination, "reset by peer");
//! drop(guard); // closed counter + one access-log line
//!
//! let text = encode(&registry)?; // `/metrics` body
//! assert!(text.contains("istio_tcp_sent_bytes_total{reporter=\"source\""));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod conn;
pub mod flags;
pub mod labels;
pub mod logging;
pub mod metrics;
pub mod request;
pub mod rlimit;

pub use conn::{ACCESS_LOG_TARGET, ConnGuard, ConnInfo, Decision, Direction};
pub use flags::{ResponseFlag, ResponseFlags, UnknownResponseFlag};
pub use labels::{
    LabelValue, PeerLabels, Reporter, RequestProtocol, SecurityPolicy, ServiceLabels, TRAFFIC_LABEL_NAMES,
    TrafficLabels, UNKNOWN,
};
pub use logging::{LogError, LogFormat, LogHandle, init_logging, logging_subscriber};
pub use metrics::{METRICS_CONTENT_TYPE, Metrics, TcpMetrics, encode};
pub use prometheus_client::registry::Registry;
pub use request::{HandleCache, HttpMetrics, RequestInfo, RequestLabels, RequestRecord};
pub use rlimit::raise_open_files_limit;
