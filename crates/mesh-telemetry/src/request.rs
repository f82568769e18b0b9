//! Istio's HTTP/gRPC request metrics and the per-request access-log line, recorded in one place
//! ([`RequestRecord::finish`]) so a request can't be counted without being logged or the other
//! way round. The labels are the connection's [`TrafficLabels`] (shared `Arc<str>`s, cloned per
//! request without copying text) plus `response_code` and `grpc_response_status`.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use prometheus_client::encoding::{EncodeLabelSet, LabelSetEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::conn::ACCESS_LOG_TARGET;
use crate::flags::{ResponseFlag, ResponseFlags};
use crate::labels::TrafficLabels;

/// Istio's `istio_request_duration_milliseconds` buckets.
pub const DURATION_BUCKETS_MS: [f64; 19] = [
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0, 60000.0,
    300000.0, 600000.0, 1800000.0, 3600000.0,
];

/// Istio's `istio_request_bytes` / `istio_response_bytes` buckets.
pub const SIZE_BUCKETS_BYTES: [f64; 9] =
    [1.0, 10.0, 100.0, 1000.0, 10000.0, 100000.0, 1000000.0, 10000000.0, 100000000.0];

/// Labels of the request metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct RequestLabels {
    pub traffic: TrafficLabels,
    pub response_code: u16,
    /// gRPC status (`grpc-status`), for gRPC requests.
    pub grpc_response_status: Option<u32>,
}

impl EncodeLabelSet for RequestLabels {
    fn encode(&self, encoder: &mut LabelSetEncoder<'_>) -> fmt::Result {
        self.traffic.encode(encoder)?;
        let mut code = itoa_buf(self.response_code.into());
        let text = code.as_str();
        crate::labels::encode_str(encoder, "response_code", text)?;
        match self.grpc_response_status {
            Some(s) => {
                code = itoa_buf(s);
                crate::labels::encode_str(encoder, "grpc_response_status", code.as_str())
            }
            None => crate::labels::encode_str(encoder, "grpc_response_status", ""),
        }
    }
}

/// A small stack buffer for a decimal number (label values without allocating).
struct NumBuf([u8; 10], usize);

impl NumBuf {
    fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0[self.1..]).unwrap_or("0")
    }
}

fn itoa_buf(mut n: u32) -> NumBuf {
    let mut b = [0u8; 10];
    let mut i = b.len();
    loop {
        i -= 1;
        b[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    NumBuf(b, i)
}

type HistFamily = Family<RequestLabels, Histogram, fn() -> Histogram>;

/// Istio's request metric families.
#[derive(Debug)]
pub struct HttpMetrics {
    /// `istio_requests_total`.
    pub requests: Family<RequestLabels, Counter>,
    /// `istio_request_duration_milliseconds`.
    pub duration_ms: HistFamily,
    /// `istio_request_bytes`.
    pub request_bytes: HistFamily,
    /// `istio_response_bytes`.
    pub response_bytes: HistFamily,
}

fn duration_hist() -> Histogram {
    Histogram::new(DURATION_BUCKETS_MS.iter().copied())
}

fn size_hist() -> Histogram {
    Histogram::new(SIZE_BUCKETS_BYTES.iter().copied())
}

impl HttpMetrics {
    /// Creates the families and registers them in `registry`.
    pub fn new(registry: &mut Registry) -> HttpMetrics {
        let m = HttpMetrics {
            requests: Family::default(),
            duration_ms: Family::new_with_constructor(duration_hist as fn() -> Histogram),
            request_bytes: Family::new_with_constructor(size_hist as fn() -> Histogram),
            response_bytes: Family::new_with_constructor(size_hist as fn() -> Histogram),
        };
        registry.register("istio_requests", "Total requests", m.requests.clone());
        registry.register(
            "istio_request_duration_milliseconds",
            "Request duration in milliseconds",
            m.duration_ms.clone(),
        );
        registry.register("istio_request_bytes", "Request size in bytes", m.request_bytes.clone());
        registry.register("istio_response_bytes", "Response size in bytes", m.response_bytes.clone());
        m
    }
}

/// The metric handles of one label set, kept per connection: its requests almost always share
/// their labels, so recording skips the families' hashed lookups. A family never drops a
/// series, so a cached handle stays the registered one.
#[derive(Debug, Default)]
pub struct HandleCache(std::sync::Mutex<Option<(RequestLabels, Handles)>>);

#[derive(Debug)]
struct Handles {
    requests: Counter,
    duration_ms: Histogram,
    request_bytes: Histogram,
    response_bytes: Histogram,
}

/// What the access log says about a request besides the labels.
#[derive(Debug, Default)]
pub struct RequestInfo {
    pub src_addr: Option<SocketAddr>,
    /// The upstream endpoint the (last) attempt went to.
    pub upstream: Option<SocketAddr>,
    pub method: String,
    pub authority: String,
    pub path: String,
    pub protocol: &'static str,
    pub request_id: String,
    /// `namespace/name` of the route that matched.
    pub route: Option<Arc<str>>,
    pub attempts: u32,
    pub error: Option<String>,
}

/// One request's record: filled while the request runs, recorded once by [`Self::finish`].
#[derive(Debug)]
pub struct RequestRecord {
    pub labels: RequestLabels,
    pub info: RequestInfo,
    pub flags: ResponseFlags,
    pub request_bytes: u64,
    pub response_bytes: u64,
    start: Instant,
}

impl RequestRecord {
    /// Starts the clock.
    pub fn start(traffic: TrafficLabels, info: RequestInfo) -> RequestRecord {
        RequestRecord {
            labels: RequestLabels { traffic, ..RequestLabels::default() },
            info,
            flags: ResponseFlags::default(),
            request_bytes: 0,
            response_bytes: 0,
            start: Instant::now(),
        }
    }

    pub fn flag(&mut self, f: ResponseFlag) {
        self.flags.insert(f);
    }

    /// Records the metrics and writes the access-log line.
    pub fn finish(self, metrics: &HttpMetrics) {
        self.finish_cached(metrics, &HandleCache::default());
    }

    /// [`Self::finish`], reusing `cache`'s metric handles when the labels are the ones it
    /// holds (a connection's requests mostly are), instead of four hashed family lookups.
    pub fn finish_cached(mut self, metrics: &HttpMetrics, cache: &HandleCache) {
        self.labels.traffic.response_flags = self.flags;
        let ms = self.start.elapsed().as_secs_f64() * 1000.0;
        {
            let mut c = cache.0.lock().unwrap_or_else(|e| e.into_inner());
            let fresh = !matches!(&*c, Some((l, _)) if *l == self.labels);
            if fresh {
                let h = Handles {
                    requests: metrics.requests.get_or_create(&self.labels).clone(),
                    duration_ms: metrics.duration_ms.get_or_create(&self.labels).clone(),
                    request_bytes: metrics.request_bytes.get_or_create(&self.labels).clone(),
                    response_bytes: metrics.response_bytes.get_or_create(&self.labels).clone(),
                };
                *c = Some((self.labels.clone(), h));
            }
            if let Some((_, h)) = &*c {
                h.requests.inc();
                h.duration_ms.observe(ms);
                h.request_bytes.observe(self.request_bytes as f64);
                h.response_bytes.observe(self.response_bytes as f64);
            }
        }
        let t = &self.labels.traffic;
        let src_addr = self.info.src_addr.map(tracing::field::display);
        let upstream = self.info.upstream.map(tracing::field::display);
        tracing::event!(
            target: ACCESS_LOG_TARGET,
            parent: None,
            tracing::Level::INFO,
            src.addr = src_addr,
            src.workload = t.source.workload.as_str(),
            src.namespace = t.source.namespace.as_str(),
            src.identity = t.source.principal.as_str(),
            dst.service = t.destination_service.host.as_str(),
            dst.workload = t.destination.workload.as_str(),
            upstream = upstream,
            method = %self.info.method,
            authority = %self.info.authority,
            path = %self.info.path,
            protocol = self.info.protocol,
            response_code = self.labels.response_code,
            grpc_status = self.labels.grpc_response_status,
            response_flags = %self.flags,
            route = self.info.route.as_deref(),
            attempts = self.info.attempts,
            request_id = %self.info.request_id,
            bytes_recv = self.request_bytes,
            bytes_sent = self.response_bytes,
            duration_ms = ms as u64,
            error = self.info.error.as_deref(),
            "request complete"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::labels::Reporter;

    #[test]
    fn numbers_render_without_allocating() {
        for n in [0u32, 7, 200, 503, 4_294_967_295] {
            assert_eq!(itoa_buf(n).as_str(), n.to_string());
        }
    }

    #[test]
    fn request_metrics_have_istio_names_and_labels() {
        let mut registry = Registry::default();
        let m = HttpMetrics::new(&mut registry);
        let traffic = TrafficLabels { reporter: Reporter::Waypoint, ..TrafficLabels::default() };
        let mut r = RequestRecord::start(traffic, RequestInfo::default());
        r.labels.response_code = 503;
        r.flag(ResponseFlag::UpstreamOverflow);
        r.response_bytes = 1500;
        r.finish(&m);
        let text = crate::encode(&registry).unwrap();
        let line = text.lines().find(|l| l.starts_with("istio_requests_total{")).expect(&text);
        for needle in ["reporter=\"waypoint\"", "response_code=\"503\"", "response_flags=\"UO\"", "} 1"] {
            assert!(line.contains(needle), "{needle} missing in {line}");
        }
        assert!(text.contains("istio_request_duration_milliseconds_bucket{"), "{text}");
        assert!(text.contains("istio_response_bytes_bucket{") && text.contains("le=\"10000.0\""), "{text}");
    }

    #[test]
    fn cached_handles_count_into_the_registered_series() {
        let mut registry = Registry::default();
        let m = HttpMetrics::new(&mut registry);
        let cache = HandleCache::default();
        let traffic = TrafficLabels { reporter: Reporter::Waypoint, ..TrafficLabels::default() };
        for code in [200u16, 200, 503, 200] {
            let mut r = RequestRecord::start(traffic.clone(), RequestInfo::default());
            r.labels.response_code = code;
            r.finish_cached(&m, &cache);
        }
        let text = crate::encode(&registry).unwrap();
        let count = |code: &str| {
            text.lines()
                .find(|l| {
                    l.starts_with("istio_requests_total{") && l.contains(&format!("response_code=\"{code}\""))
                })
                .and_then(|l| l.rsplit(' ').next())
                .map(str::to_string)
        };
        assert_eq!(count("200").as_deref(), Some("3"), "{text}");
        assert_eq!(count("503").as_deref(), Some("1"), "{text}");
        let sizes = text
            .lines()
            .find(|l| l.starts_with("istio_response_bytes_count{") && l.contains("response_code=\"200\""))
            .expect("response bytes series");
        assert!(sizes.ends_with(" 3"), "{sizes}");
    }
}
