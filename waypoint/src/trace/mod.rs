//! Distributed tracing at the waypoint: trace context in and out ([`context`]: W3C
//! `traceparent`/`tracestate`, B3 single and multi-header), the sampling decision (a caller's
//! decision is honoured either way, B3 debug forces sampling, otherwise random at the effective
//! percentage), one SERVER span per request with Envoy/Istio's tags, exported over OTLP/HTTP
//! ([`export`], [`otlp`]), and Istio's Telemetry API overrides ([`policy`]).
//!
//! The request path holds a [`Traced`]: the request's `RequestRecord` plus its trace state.
//! Finishing it records metrics and the access log as before and hands the span (if sampled
//! and reported) to the export queue. The upstream request carries the waypoint's span as
//! parent: `traceparent` always, B3 in the forms it came in (or multi-header when `emitB3`).
//! Mirrored requests get no span of their own: they carry the same context as the primary
//! upstream request, so the mirror's spans join the trace under the waypoint's span.

pub mod context;
pub mod export;
pub mod otlp;
pub mod policy;

use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use http::HeaderMap;
use mesh_model::Workload;
use mesh_telemetry::{HttpMetrics, RequestRecord};

pub use context::{ContextError, Extracted, Outgoing};
pub use export::{ExportMetrics, ExportSettings, Exporter, parse_endpoint};
pub use policy::{TagSource, TelemetryTracing};

use crate::config::{Config, TracingConfig};
use crate::proxy::http::Conn;
use crate::route::WeightedDestination;
use otlp::{KeyValue, SpanKind, Status, StatusCode};

/// The waypoint's tracing: its settings, the fixed span tags, and the exporter (when an OTLP
/// endpoint is configured).
#[derive(Debug)]
pub struct Tracer {
    config: TracingConfig,
    exporter: Option<Exporter>,
    metrics: ExportMetrics,
    /// Tags every span carries (node_id, component, istio.*), built once.
    fixed_tags: Vec<KeyValue>,
    service_name: String,
}

impl Tracer {
    /// Builds the tracer and, when `tracing.otlpEndpoint` is set, starts the export task (on the
    /// current tokio runtime). `pod` is the waypoint's own pod, for its tags.
    pub fn new(config: &Config, pod: Option<&Workload>, registry: &mut mesh_telemetry::Registry) -> Tracer {
        let t = &config.tracing;
        let metrics = ExportMetrics::register(registry);
        let service_name =
            t.service_name.clone().unwrap_or_else(|| format!("{}.{}", config.gateway, config.namespace));
        let ip = pod.and_then(|p| p.ips.first()).map(|ip| ip.to_string()).unwrap_or_default();
        let node_id = format!(
            "waypoint~{ip}~{}.{}~{}.svc.cluster.local",
            config.pod, config.namespace, config.namespace
        );
        let canonical = pod.map(|p| p.canonical_name.to_string()).unwrap_or_else(|| config.gateway.clone());
        let mut fixed_tags = vec![
            KeyValue::string("node_id", node_id),
            KeyValue::string("component", "proxy"),
            KeyValue::string("istio.namespace", config.namespace.as_str()),
            KeyValue::string("istio.canonical_service", canonical),
            KeyValue::string("istio.cluster_id", config.cluster_id.as_str()),
        ];
        if let Some(rev) = pod.map(|p| &p.canonical_revision).filter(|r| !r.is_empty()) {
            fixed_tags.push(KeyValue::string("istio.canonical_revision", &**rev));
        }
        let exporter = t.otlp_endpoint.as_deref().and_then(|url| parse_endpoint(url).ok()).map(|endpoint| {
            let resource = otlp::Resource {
                attributes: vec![
                    KeyValue::string("service.name", service_name.as_str()),
                    KeyValue::string("k8s.pod.name", config.pod.as_str()),
                    KeyValue::string("k8s.namespace.name", config.namespace.as_str()),
                ],
            };
            let settings = ExportSettings {
                endpoint,
                max_queue: t.max_queue,
                max_batch: t.max_batch,
                flush_interval: t.flush_interval,
                export_timeout: t.export_timeout,
                max_retries: t.max_retries,
            };
            Exporter::start(settings, resource, metrics.clone())
        });
        Tracer { config: t.clone(), exporter, metrics, fixed_tags, service_name }
    }

    /// The sampling percentage in force: the Telemetry's, else the config's.
    pub fn sampling_percent(&self, t: &TelemetryTracing) -> f64 {
        t.random_sampling_percentage.unwrap_or(self.config.sampling_percent)
    }

    /// The effective tracing configuration, for `/config_dump`.
    pub fn dump(&self, t: &TelemetryTracing) -> serde_json::Value {
        serde_json::json!({
            "otlpEndpoint": self.config.otlp_endpoint,
            "serviceName": self.service_name,
            "samplingPercent": self.sampling_percent(t),
            "spanReporting": self.exporter.is_some() && t.disable_span_reporting != Some(true),
            "contextPropagation": t.disable_context_propagation != Some(true),
            "emitB3": self.config.emit_b3,
            "maxQueue": self.config.max_queue,
            "maxBatch": self.config.max_batch,
            "flushInterval": format!("{:?}", self.config.flush_interval),
            "exportTimeout": format!("{:?}", self.config.export_timeout),
            "maxRetries": self.config.max_retries,
            "telemetry": t,
            "spansExported": self.metrics.exported.get(),
            "spansDropped": self.metrics.dropped.get(),
        })
    }
}

/// A sampled, reported request's span while it runs.
#[derive(Debug)]
struct Active {
    tracer: Arc<Tracer>,
    trace_id: u128,
    span_id: u64,
    parent: Option<u64>,
    flags: u8,
    trace_state: String,
    start: SystemTime,
    started: Instant,
    name: String,
    /// Tags known at the start (user agent, peer, custom tags).
    tags: Vec<KeyValue>,
    /// Istio's waypoint cluster name of the destination, once routed.
    cluster: Option<String>,
}

/// A request's record and its trace state; derefs to the [`RequestRecord`].
#[derive(Debug)]
pub struct Traced {
    rec: RequestRecord,
    /// What goes upstream; `None` when propagation is disabled.
    out: Option<Outgoing>,
    span: Option<Box<Active>>,
}

impl Deref for Traced {
    type Target = RequestRecord;
    fn deref(&self) -> &RequestRecord {
        &self.rec
    }
}

impl DerefMut for Traced {
    fn deref_mut(&mut self) -> &mut RequestRecord {
        &mut self.rec
    }
}

/// Starts a request's trace: reads the caller's context, decides sampling, picks the
/// waypoint's span id. Nothing is allocated for requests that are neither sampled nor reported
/// beyond the record itself.
pub fn start(conn: &Conn, telemetry: &TelemetryTracing, headers: &HeaderMap, rec: RequestRecord) -> Traced {
    let tracer = &conn.ctx.tracer;
    let x = context::extract(headers);
    let sampled = context::decide(&x, tracer.sampling_percent(telemetry), rand::random::<f64>() * 100.0);
    let (trace_id, parent) = match x.parent {
        Some((t, p)) => (t, Some(p)),
        None => (context::random_u128(), None),
    };
    let span_id = context::random_u64();
    let out = (telemetry.disable_context_propagation != Some(true)).then_some(Outgoing {
        trace_id,
        span_id,
        parent_span_id: parent,
        sampled,
        debug: x.debug,
        w3c_flags: x.w3c_flags,
        b3_short: x.b3_short,
        b3_single: x.formats.b3_single,
        b3_multi: x.formats.b3_multi || tracer.config.emit_b3,
        keep_tracestate: x.keep_tracestate,
    });
    let report = sampled && tracer.exporter.is_some() && telemetry.disable_span_reporting != Some(true);
    let span = report.then(|| {
        let mut tags = Vec::with_capacity(24);
        if let Some(ua) = headers.get(http::header::USER_AGENT).and_then(|v| v.to_str().ok()) {
            tags.push(KeyValue::string("user_agent", ua));
        }
        for (name, src) in &telemetry.custom_tags {
            let v = match src {
                TagSource::Literal(v) => Some(&**v),
                TagSource::Header { name, default } => {
                    headers.get(name).and_then(|v| v.to_str().ok()).or(default.as_deref())
                }
            };
            if let Some(v) = v {
                tags.push(KeyValue::string(&**name, v));
            }
        }
        let trace_state = match x.keep_tracestate {
            true => {
                let all: Vec<&str> =
                    headers.get_all(&context::TRACESTATE).iter().filter_map(|v| v.to_str().ok()).collect();
                all.join(",")
            }
            false => String::new(),
        };
        Box::new(Active {
            tracer: tracer.clone(),
            trace_id,
            span_id,
            parent,
            flags: x.w3c_flags & context::FLAG_RANDOM | context::FLAG_SAMPLED,
            trace_state,
            start: SystemTime::now(),
            started: Instant::now(),
            // Istio's default operation name: the destination Service and port.
            name: format!("{}:{}/*", conn.service.hostname, conn.port),
            tags,
            cluster: None,
        })
    });
    Traced { rec, out, span }
}

/// Istio's name for a waypoint's cluster: `inbound-vip|<port>|http[/<subset>]|<host>`.
fn cluster_name(dest: &WeightedDestination, port: u16) -> String {
    match &dest.subset {
        Some(s) => format!("inbound-vip|{port}|http/{s}|{}", dest.host),
        None => format!("inbound-vip|{port}|http|{}", dest.host),
    }
}

impl Traced {
    /// Writes the waypoint's context into the upstream request's headers (unless propagation
    /// is disabled) and notes the destination for the span; `port` is the request's port.
    pub fn inject(&mut self, headers: &mut HeaderMap, dest: &WeightedDestination, port: u16) {
        if let Some(o) = &self.out {
            context::inject(headers, o);
        }
        if let Some(s) = &mut self.span {
            s.cluster = Some(cluster_name(dest, dest.port.unwrap_or(port)));
        }
    }

    /// Records metrics and the access log, then queues the span.
    pub fn finish(self, metrics: &HttpMetrics, cache: &mesh_telemetry::HandleCache) {
        let Traced { rec, span, .. } = self;
        if let Some(s) = span {
            let tracer = s.tracer.clone();
            if let Some(e) = &tracer.exporter {
                e.send(build_span(*s, &rec));
            }
        }
        rec.finish_cached(metrics, cache);
    }
}

fn nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

/// The finished span in OTLP form, with Envoy's HTTP tags from the record.
fn build_span(s: Active, rec: &RequestRecord) -> otlp::Span {
    let Active { tracer, mut tags, .. } = s;
    let end = s.start + s.started.elapsed();
    let code = rec.labels.response_code;
    let i = &rec.info;
    tags.extend([
        KeyValue::string("http.method", i.method.as_str()),
        KeyValue::string("http.url", format!("http://{}{}", i.authority, i.path)),
        KeyValue::string("http.protocol", i.protocol),
        KeyValue::string("http.status_code", code.to_string()),
        KeyValue::string("response_flags", rec.flags.to_string()),
        KeyValue::string("request_size", rec.request_bytes.to_string()),
        KeyValue::string("response_size", rec.response_bytes.to_string()),
        KeyValue::string("guid:x-request-id", i.request_id.as_str()),
        KeyValue::string("downstream_cluster", "-"),
    ]);
    if let Some(a) = i.src_addr {
        tags.push(KeyValue::string("peer.address", a.ip().to_string()));
    }
    if let Some(c) = s.cluster {
        tags.push(KeyValue::string("upstream_cluster", c.as_str()));
        tags.push(KeyValue::string("upstream_cluster.name", c));
    }
    if let Some(u) = i.upstream {
        tags.push(KeyValue::string("upstream_address", u.to_string()));
    }
    if let Some(g) = rec.labels.grpc_response_status {
        tags.push(KeyValue::string("grpc.status_code", g.to_string()));
    }
    let error = code >= 500 || code == 0;
    if error {
        tags.push(KeyValue::string("error", "true"));
    }
    tags.extend(tracer.fixed_tags.iter().cloned());
    otlp::Span {
        trace_id: s.trace_id.to_be_bytes().to_vec(),
        span_id: s.span_id.to_be_bytes().to_vec(),
        trace_state: s.trace_state,
        parent_span_id: s.parent.map(|p| p.to_be_bytes().to_vec()).unwrap_or_default(),
        name: s.name,
        kind: SpanKind::Server as i32,
        start_time_unix_nano: nanos(s.start),
        end_time_unix_nano: nanos(end),
        attributes: tags,
        status: error.then(|| Status { message: String::new(), code: StatusCode::Error as i32 }),
        // Trace flags; with a caller's parent, bits 8 and 9: "is-remote is known" and "remote".
        flags: u32::from(s.flags) | if s.parent.is_some() { 0x300 } else { 0 },
    }
}

#[cfg(test)]
mod tests;
