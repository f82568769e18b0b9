//! OTLP/HTTP span export off the request path: requests hand finished spans to a bounded
//! queue (`try_send`; a full queue drops the span and counts it), and one background task
//! batches them (a batch goes when it is full or `flushInterval` after its first span) and
//! POSTs `application/x-protobuf` to the collector, each try under `exportTimeout`, retrying
//! 429/502/503/504 and connection failures with capped exponential backoff (or the
//! collector's `Retry-After`) up to `maxRetries` times.

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use prometheus_client::metrics::counter::Counter;
use prost::Message;
use tokio::sync::mpsc;

use super::otlp::{
    ExportTraceServiceRequest, ExportTraceServiceResponse, Resource, ResourceSpans, ScopeSpans, Span,
};

/// The exporter's counters, registered as `waypoint_tracing_*`.
#[derive(Debug, Clone, Default)]
pub struct ExportMetrics {
    /// Spans dropped: queue full, or the export failed for good.
    pub dropped: Counter,
    /// Spans the collector accepted.
    pub exported: Counter,
    /// Export requests that failed for good (after retries).
    pub failed_exports: Counter,
}

impl ExportMetrics {
    pub fn register(registry: &mut prometheus_client::registry::Registry) -> Self {
        let m = ExportMetrics::default();
        registry.register(
            "waypoint_tracing_spans_dropped",
            "Spans dropped (export queue full or export failed)",
            m.dropped.clone(),
        );
        registry.register(
            "waypoint_tracing_spans_exported",
            "Spans accepted by the collector",
            m.exported.clone(),
        );
        registry.register(
            "waypoint_tracing_export_failures",
            "OTLP export requests that failed after retries",
            m.failed_exports.clone(),
        );
        m
    }
}

/// Checks an OTLP/HTTP endpoint: `http://host[:port]/path` (plain HTTP; no TLS client here).
pub fn parse_endpoint(url: &str) -> Result<Uri, String> {
    let uri: Uri = url.parse().map_err(|e| format!("not a URL: {e}"))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => return Err("only http:// is supported (no TLS to the collector)".into()),
        _ => return Err("must start with http://".into()),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err("has no host".into());
    }
    Ok(uri)
}

/// Settings of the background task.
#[derive(Debug, Clone)]
pub struct ExportSettings {
    pub endpoint: Uri,
    pub max_queue: usize,
    pub max_batch: usize,
    pub flush_interval: Duration,
    pub export_timeout: Duration,
    pub max_retries: u32,
}

/// The request side's handle: hands spans to the background task.
#[derive(Debug)]
pub struct Exporter {
    tx: mpsc::Sender<Span>,
    metrics: ExportMetrics,
}

impl Exporter {
    /// Spawns the export task (on the current tokio runtime).
    pub fn start(settings: ExportSettings, resource: Resource, metrics: ExportMetrics) -> Exporter {
        let (tx, rx) = mpsc::channel(settings.max_queue);
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(settings.export_timeout));
        connector.set_nodelay(true);
        let client: Client<HttpConnector, Full<Bytes>> =
            Client::builder(TokioExecutor::new()).build(connector);
        let m = metrics.clone();
        let (max_batch, flush) = (settings.max_batch, settings.flush_interval);
        tokio::spawn(batch_loop(rx, max_batch, flush, move |spans| {
            let (client, settings, resource, m) =
                (client.clone(), settings.clone(), resource.clone(), m.clone());
            async move {
                let n = spans.len() as u64;
                match export(&client, &settings, resource, spans).await {
                    Ok(()) => {
                        m.exported.inc_by(n);
                    }
                    Err(e) => {
                        m.dropped.inc_by(n);
                        m.failed_exports.inc();
                        tracing::warn!(endpoint = %settings.endpoint, spans = n, "span export failed: {e}");
                    }
                }
            }
        }));
        Exporter { tx, metrics }
    }

    /// Queues a span; never waits. A full queue drops it (counted).
    pub fn send(&self, span: Span) {
        if self.tx.try_send(span).is_err() {
            self.metrics.dropped.inc();
        }
    }

    pub fn metrics(&self) -> &ExportMetrics {
        &self.metrics
    }
}

/// Collects spans into batches of at most `max_batch`, each sent when full or `flush` after
/// its first span, and once more when the queue closes.
pub async fn batch_loop<F, Fut>(mut rx: mpsc::Receiver<Span>, max_batch: usize, flush: Duration, mut sink: F)
where
    F: FnMut(Vec<Span>) -> Fut,
    Fut: Future<Output = ()>,
{
    while let Some(first) = rx.recv().await {
        let deadline = tokio::time::Instant::now() + flush;
        let mut batch = vec![first];
        let mut closed = false;
        while batch.len() < max_batch {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(s)) => batch.push(s),
                Ok(None) => {
                    closed = true;
                    break;
                }
                Err(_) => break,
            }
        }
        sink(batch).await;
        if closed {
            return;
        }
    }
}

/// Why an export failed for good.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("collector answered {0}")]
    Status(StatusCode),
    #[error("collector unreachable: {0}")]
    Connect(String),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

/// One outcome of a try: retry after this long, or stop.
fn retry_after(status: StatusCode, headers: &http::HeaderMap) -> Option<Option<Duration>> {
    if !matches!(status.as_u16(), 429 | 502 | 503 | 504) {
        return None;
    }
    let given = headers
        .get(header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|s| Duration::from_secs(s.min(30)));
    Some(given)
}

/// Exponential backoff: 100 ms doubling, capped at 5 s, with up to 50 % jitter.
fn backoff(attempt: u32, jitter: f64) -> Duration {
    let base = Duration::from_millis(100).saturating_mul(1 << attempt.min(6)).min(Duration::from_secs(5));
    base.mul_f64(1.0 - 0.5 * jitter.clamp(0.0, 1.0))
}

async fn export(
    client: &Client<HttpConnector, Full<Bytes>>,
    s: &ExportSettings,
    resource: Resource,
    spans: Vec<Span>,
) -> Result<(), ExportError> {
    let body = Bytes::from(
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(resource),
                scope_spans: vec![ScopeSpans {
                    scope: Some(super::otlp::InstrumentationScope {
                        name: "waypoint".into(),
                        version: env!("CARGO_PKG_VERSION").into(),
                    }),
                    spans,
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            }],
        }
        .encode_to_vec(),
    );
    let mut attempt = 0;
    loop {
        let req = Request::post(s.endpoint.clone())
            .header(header::CONTENT_TYPE, "application/x-protobuf")
            .body(Full::new(body.clone()))
            .expect("valid request");
        let tried = tokio::time::timeout(s.export_timeout, async {
            let resp = client.request(req).await.map_err(|e| ExportError::Connect(e.to_string()))?;
            let (parts, body) = resp.into_parts();
            let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
            Ok::<_, ExportError>((parts.status, parts.headers, body))
        })
        .await
        .unwrap_or(Err(ExportError::Timeout(s.export_timeout)));
        let (err, wait) = match tried {
            Ok((status, _, body)) if status.is_success() => {
                if let Ok(r) = ExportTraceServiceResponse::decode(body)
                    && let Some(p) = r.partial_success.filter(|p| p.rejected_spans > 0)
                {
                    tracing::debug!(
                        rejected = p.rejected_spans,
                        "collector rejected spans: {}",
                        p.error_message
                    );
                }
                return Ok(());
            }
            Ok((status, headers, _)) => match retry_after(status, &headers) {
                Some(wait) => (ExportError::Status(status), wait),
                None => return Err(ExportError::Status(status)),
            },
            Err(e) => (e, None),
        };
        if attempt >= s.max_retries {
            return Err(err);
        }
        tokio::time::sleep(wait.unwrap_or_else(|| backoff(attempt, rand::random()))).await;
        attempt += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(n: u8) -> Span {
        Span { name: n.to_string(), ..Span::default() }
    }

    #[tokio::test(start_paused = true)]
    async fn batches_go_when_full_or_after_the_interval() {
        let (tx, rx) = mpsc::channel(100);
        let (out_tx, mut out) = mpsc::unbounded_channel::<(Vec<String>, tokio::time::Instant)>();
        let start = tokio::time::Instant::now();
        let task = tokio::spawn(batch_loop(rx, 3, Duration::from_secs(5), move |b| {
            let out_tx = out_tx.clone();
            async move {
                let _ = out_tx.send((b.into_iter().map(|s| s.name).collect(), tokio::time::Instant::now()));
            }
        }));
        for i in 0..4 {
            tx.send(span(i)).await.unwrap();
        }
        let (b, at) = out.recv().await.unwrap();
        assert_eq!(b, ["0", "1", "2"], "a full batch goes at once");
        assert_eq!(at, start);
        let (b, at) = out.recv().await.unwrap();
        assert_eq!(b, ["3"]);
        assert_eq!(at - start, Duration::from_secs(5), "a partial batch waits for the interval");
        tokio::time::sleep(Duration::from_secs(60)).await;
        tx.send(span(9)).await.unwrap();
        drop(tx);
        let (b, at) = out.recv().await.unwrap();
        assert_eq!(b, ["9"]);
        assert!(at - start < Duration::from_secs(66), "closing the queue flushes at once");
        task.await.unwrap();
    }

    #[test]
    fn retryable_answers_and_backoff() {
        let mut h = http::HeaderMap::new();
        assert_eq!(retry_after(StatusCode::BAD_REQUEST, &h), None);
        assert_eq!(retry_after(StatusCode::OK, &h), None);
        assert_eq!(retry_after(StatusCode::SERVICE_UNAVAILABLE, &h), Some(None));
        h.insert(header::RETRY_AFTER, "2".parse().unwrap());
        assert_eq!(retry_after(StatusCode::TOO_MANY_REQUESTS, &h), Some(Some(Duration::from_secs(2))));
        h.insert(header::RETRY_AFTER, "99999".parse().unwrap());
        assert_eq!(retry_after(StatusCode::GATEWAY_TIMEOUT, &h), Some(Some(Duration::from_secs(30))));
        assert_eq!(backoff(0, 0.0), Duration::from_millis(100));
        assert_eq!(backoff(1, 0.0), Duration::from_millis(200));
        assert_eq!(backoff(20, 0.0), Duration::from_secs(5));
        assert_eq!(backoff(1, 1.0), Duration::from_millis(100));
    }

    #[test]
    fn endpoints_must_be_plain_http_urls() {
        assert!(parse_endpoint("http://collector:4318/v1/traces").is_ok());
        assert!(parse_endpoint("http://127.0.0.1:4318/v1/traces").is_ok());
        assert!(parse_endpoint("https://c/v1/traces").unwrap_err().contains("only http://"));
        assert!(parse_endpoint("collector:4318").unwrap_err().contains("http://"));
        assert!(parse_endpoint("").is_err());
        assert!(parse_endpoint("http:///x").is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_queue_drops_and_counts() {
        let (tx, _rx) = mpsc::channel(2);
        let e = Exporter { tx, metrics: ExportMetrics::default() };
        for i in 0..5 {
            e.send(span(i));
        }
        assert_eq!(e.metrics().dropped.get(), 3);
    }
}
