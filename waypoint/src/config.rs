//! The waypoint's typed configuration: a YAML file (`--config`), a default for every field,
//! every problem reported at once. Shown in the admin's `/config_dump`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use mesh_telemetry::LogFormat;
use serde::{Deserialize, Serialize};

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {field}: {reason}")]
    Parse { path: String, field: String, reason: String },
    #[error("invalid configuration: {}", .0.join("; "))]
    Invalid(Vec<String>),
}

/// Everything the waypoint needs to run.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct Config {
    /// Namespace of the waypoint (its Gateway and pod) (text).
    pub namespace: String,
    /// Name of the waypoint's Gateway (`gatewayClassName: istio-waypoint`) (text).
    pub gateway: String,
    /// Name of the waypoint's own pod, whose identity it presents (text).
    pub pod: String,
    /// Node the waypoint pod runs on; its bootstrap token proves placement to the CA (text).
    pub node: String,
    /// SPIFFE trust domain (text).
    pub trust_domain: String,
    /// Cluster name reported in telemetry (text).
    pub cluster_id: String,
    /// CA address (URL, `https://host:port`).
    pub ca_address: String,
    /// PEM file of the mesh root (path).
    pub ca_root: PathBuf,
    /// DNS name the CA's serving certificate must carry (text).
    pub ca_server_name: String,
    /// File holding the node's bootstrap token for the CA (path).
    pub token_file: PathBuf,
    /// Files or folders of mesh YAML, watched and hot-reloaded (paths).
    pub model: Vec<PathBuf>,
    /// Where the model comes from: the `model` files or the Kubernetes API server.
    pub source: mesh_kube::SourceConfig,
    /// HBONE listener (socket address; default 0.0.0.0:15008).
    pub hbone_addr: SocketAddr,
    /// Admin server (socket address; default 127.0.0.1:15000; loopback only unless forced).
    pub admin_addr: SocketAddr,
    /// Allow the admin server on a non-loopback address (bool).
    pub admin_allow_remote: bool,
    /// Optional plaintext HTTP listener (socket address; default none): HTTP/1.1 and h2c
    /// requests routed to the Service named by `Host`/`:authority`, for ingress-style use and
    /// benchmarks. Callers are unauthenticated: authorization sees no principal. Loopback only
    /// unless `plaintextHttpAllowRemote`.
    pub plaintext_http_addr: Option<SocketAddr>,
    /// Allow the plaintext HTTP listener on a non-loopback address (bool).
    pub plaintext_http_allow_remote: bool,
    /// Prometheus `/metrics` (socket address; default 0.0.0.0:15020).
    pub metrics_addr: SocketAddr,
    /// Readiness `/healthz/ready` (socket address; default 0.0.0.0:15021).
    pub readiness_addr: SocketAddr,
    /// How long open requests may run after SIGTERM (duration).
    #[serde(with = "mesh_api::duration::config")]
    pub drain_deadline: Duration,
    /// Largest request body buffered for retries and mirroring (bytes); larger bodies are
    /// streamed and not retried.
    pub max_buffered_body: usize,
    /// Log line format (`text` or `json`).
    pub log_format: LogFormat,
    /// Initial log filter (EnvFilter directives).
    pub log_level: String,
    /// Trace context propagation and span export (see [`TracingConfig`]).
    pub tracing: TracingConfig,
}

/// Tracing: W3C `traceparent` and B3 propagated, one span per request exported over OTLP/HTTP
/// when `otlpEndpoint` is set. A Telemetry object targeting the waypoint, its namespace or the
/// root namespace overrides the sampling percentage and the on/off switches.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct TracingConfig {
    /// OTLP/HTTP traces URL (URL, `http://collector:4318/v1/traces`; default none: no export).
    pub otlp_endpoint: Option<String>,
    /// Requests sampled when the caller did not decide (percent, 0–100; Istio's default 1).
    pub sampling_percent: f64,
    /// Also send B3 `x-b3-*` headers upstream when the request came without B3 (bool).
    pub emit_b3: bool,
    /// Spans waiting for export; more are dropped and counted (spans).
    pub max_queue: usize,
    /// Spans per export request (spans).
    pub max_batch: usize,
    /// Longest wait before a partial batch is sent (duration).
    #[serde(with = "mesh_api::duration::config")]
    pub flush_interval: Duration,
    /// Time limit of one export request (duration).
    #[serde(with = "mesh_api::duration::config")]
    pub export_timeout: Duration,
    /// Retries of an export answered 429/502/503/504 or failing to connect (count).
    pub max_retries: u32,
    /// `service.name` of the spans (text; default `<gateway>.<namespace>`).
    pub service_name: Option<String>,
}

impl Default for TracingConfig {
    fn default() -> Self {
        TracingConfig {
            otlp_endpoint: None,
            sampling_percent: 1.0,
            emit_b3: false,
            max_queue: 2048,
            max_batch: 512,
            flush_interval: Duration::from_secs(5),
            export_timeout: Duration::from_secs(10),
            max_retries: 3,
            service_name: None,
        }
    }
}

impl TracingConfig {
    /// Every problem of the tracing fields, named as in the YAML.
    pub fn problems(&self) -> Vec<String> {
        let mut errs = Vec::new();
        if let Some(url) = &self.otlp_endpoint
            && let Err(reason) = crate::trace::parse_endpoint(url)
        {
            errs.push(format!("tracing.otlpEndpoint: {url:?}: {reason}"));
        }
        if !(0.0..=100.0).contains(&self.sampling_percent) {
            errs.push(format!("tracing.samplingPercent: {} is not within 0-100", self.sampling_percent));
        }
        let mut positive = |ok: bool, what: &str| {
            if !ok {
                errs.push(format!("tracing.{what}: must be greater than 0"));
            }
        };
        positive(self.max_queue > 0, "maxQueue");
        positive(self.max_batch > 0, "maxBatch");
        positive(!self.flush_interval.is_zero(), "flushInterval");
        positive(!self.export_timeout.is_zero(), "exportTimeout");
        if self.service_name.as_deref() == Some("") {
            errs.push("tracing.serviceName: empty (leave it out for the default)".to_string());
        }
        errs
    }
}

impl Default for Config {
    fn default() -> Self {
        let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let any = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
        Config {
            namespace: String::new(),
            gateway: "waypoint".to_string(),
            pod: String::new(),
            node: String::new(),
            trust_domain: mesh_api::DEFAULT_TRUST_DOMAIN.to_string(),
            cluster_id: "Kubernetes".to_string(),
            ca_address: String::new(),
            ca_root: PathBuf::new(),
            ca_server_name: "mesh-ca".to_string(),
            token_file: PathBuf::new(),
            model: Vec::new(),
            source: mesh_kube::SourceConfig::default(),
            hbone_addr: SocketAddr::new(any, 15008),
            admin_addr: SocketAddr::new(lo, 15000),
            admin_allow_remote: false,
            plaintext_http_addr: None,
            plaintext_http_allow_remote: false,
            metrics_addr: SocketAddr::new(any, 15020),
            readiness_addr: SocketAddr::new(any, 15021),
            drain_deadline: Duration::from_secs(5),
            max_buffered_body: 1 << 20,
            log_format: LogFormat::Text,
            log_level: "info".to_string(),
            tracing: TracingConfig::default(),
        }
    }
}

impl Config {
    /// Reads a YAML file; relative paths in it are taken from the file's folder.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: shown.clone(), source })?;
        let mut c = Self::parse(&text, &shown)?;
        if let Some(base) = path.parent() {
            let fix = |p: &mut PathBuf| {
                if !p.as_os_str().is_empty() && p.is_relative() {
                    *p = base.join(&*p);
                }
            };
            fix(&mut c.ca_root);
            fix(&mut c.token_file);
            c.model.iter_mut().for_each(fix);
            c.source.resolve_paths(base);
        }
        Ok(c)
    }

    /// Parses YAML text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self, ConfigError> {
        if text.trim().is_empty() {
            return Ok(Config::default());
        }
        let de = serde_yaml::Deserializer::from_str(text);
        serde_path_to_error::deserialize(de).map_err(|e| ConfigError::Parse {
            path: origin.to_string(),
            field: e.path().to_string(),
            reason: e.inner().to_string(),
        })
    }

    /// Checks what must be set; every problem at once.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut errs = Vec::new();
        let mut need = |ok: bool, what: &str| {
            if !ok {
                errs.push(format!("{what}: required"));
            }
        };
        need(!self.namespace.is_empty(), "namespace");
        need(!self.pod.is_empty(), "pod");
        need(!self.node.is_empty(), "node");
        need(!self.ca_address.is_empty(), "caAddress");
        need(!self.ca_root.as_os_str().is_empty(), "caRoot");
        need(!self.token_file.as_os_str().is_empty(), "tokenFile");
        need(!self.model.is_empty() || self.source.kind == mesh_kube::SourceKind::Kube, "model");
        if !self.admin_addr.ip().is_loopback() && !self.admin_allow_remote {
            errs.push(format!(
                "adminAddr: {} is not a loopback address (set adminAllowRemote to force)",
                self.admin_addr
            ));
        }
        if let Some(addr) = self.plaintext_http_addr
            && !addr.ip().is_loopback()
            && !self.plaintext_http_allow_remote
        {
            errs.push(format!(
                "plaintextHttpAddr: {addr} is not a loopback address (set plaintextHttpAllowRemote to force)"
            ));
        }
        errs.extend(self.tracing.problems());
        if errs.is_empty() { Ok(()) } else { Err(ConfigError::Invalid(errs)) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_problem_at_once() {
        let e = Config::default().validate().unwrap_err().to_string();
        for f in ["namespace", "pod", "node", "caAddress", "caRoot", "tokenFile", "model"] {
            assert!(e.contains(&format!("{f}: required")), "{f}: {e}");
        }
        let e = Config::parse("hboneAddr: nope\n", "w.yaml").unwrap_err().to_string();
        assert!(e.starts_with("w.yaml: hboneAddr:"), "{e}");
        let c = Config::parse("namespace: b\ndrainDeadline: 250ms\n", "w.yaml").unwrap();
        assert_eq!(c.drain_deadline, Duration::from_millis(250));
    }

    fn valid() -> Config {
        Config::parse(
            "namespace: n\npod: p\nnode: x\ncaAddress: https://ca\ncaRoot: r.pem\ntokenFile: t\nmodel: [m]\n",
            "w.yaml",
        )
        .unwrap()
    }

    #[test]
    fn plaintext_listener_is_off_by_default() {
        let c = valid();
        assert_eq!(c.plaintext_http_addr, None);
        assert!(!c.plaintext_http_allow_remote);
        c.validate().unwrap();
    }

    #[test]
    fn plaintext_listener_on_loopback_is_accepted() {
        let mut c = valid();
        c.plaintext_http_addr = Some("127.0.0.1:8080".parse().unwrap());
        c.validate().unwrap();
        c.plaintext_http_addr = Some("[::1]:8080".parse().unwrap());
        c.validate().unwrap();
    }

    #[test]
    fn plaintext_listener_elsewhere_needs_the_force_flag() {
        let mut c = valid();
        c.plaintext_http_addr = Some("0.0.0.0:8080".parse().unwrap());
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("plaintextHttpAddr: 0.0.0.0:8080 is not a loopback address"), "{e}");
        c.plaintext_http_allow_remote = true;
        c.validate().unwrap();
    }

    #[test]
    fn plaintext_fields_parse_from_yaml() {
        let c = Config::parse("plaintextHttpAddr: 127.0.0.1:18080\nplaintextHttpAllowRemote: true\n", "w")
            .unwrap();
        assert_eq!(c.plaintext_http_addr, Some("127.0.0.1:18080".parse().unwrap()));
        assert!(c.plaintext_http_allow_remote);
        let e = Config::parse("plaintextHttpAddr: 8080\n", "w.yaml").unwrap_err().to_string();
        assert!(e.starts_with("w.yaml: plaintextHttpAddr:"), "{e}");
    }

    #[test]
    fn tracing_defaults_and_yaml() {
        let c = valid();
        assert_eq!(c.tracing, TracingConfig::default());
        assert_eq!(c.tracing.sampling_percent, 1.0);
        let c = Config::parse(
            "tracing:\n  otlpEndpoint: http://collector:4318/v1/traces\n  samplingPercent: 25\n  \
             flushInterval: 200ms\n  exportTimeout: 2s\n  maxQueue: 10\n  maxBatch: 5\n  emitB3: true\n",
            "w",
        )
        .unwrap();
        assert_eq!(c.tracing.otlp_endpoint.as_deref(), Some("http://collector:4318/v1/traces"));
        assert_eq!(c.tracing.sampling_percent, 25.0);
        assert_eq!(c.tracing.flush_interval, Duration::from_millis(200));
        assert_eq!((c.tracing.max_queue, c.tracing.max_batch, c.tracing.emit_b3), (10, 5, true));
        let e = Config::parse("tracing: {samplingRate: 3}\n", "w.yaml").unwrap_err().to_string();
        assert!(e.starts_with("w.yaml: tracing.samplingRate:"), "{e}");
    }

    #[test]
    fn tracing_problems_are_all_reported() {
        let mut c = valid();
        c.tracing = TracingConfig {
            otlp_endpoint: Some("https://collector:4318/v1/traces".into()),
            sampling_percent: 150.0,
            max_queue: 0,
            max_batch: 0,
            flush_interval: Duration::ZERO,
            export_timeout: Duration::ZERO,
            service_name: Some(String::new()),
            ..TracingConfig::default()
        };
        let e = c.validate().unwrap_err().to_string();
        for needle in [
            "tracing.otlpEndpoint: \"https://collector:4318/v1/traces\": only http:// is supported",
            "tracing.samplingPercent: 150 is not within 0-100",
            "tracing.maxQueue: must be greater than 0",
            "tracing.maxBatch: must be greater than 0",
            "tracing.flushInterval: must be greater than 0",
            "tracing.exportTimeout: must be greater than 0",
            "tracing.serviceName: empty",
        ] {
            assert!(e.contains(needle), "{needle} missing in {e}");
        }
        c.tracing.sampling_percent = f64::NAN;
        c.tracing.otlp_endpoint = Some("collector:4318".into());
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("tracing.samplingPercent: NaN"), "{e}");
        assert!(e.contains("tracing.otlpEndpoint: \"collector:4318\""), "{e}");
    }
}
