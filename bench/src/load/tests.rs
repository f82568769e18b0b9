//! Runs against a small hyper server on 127.0.0.1 answering 1 KiB. Assertions are on counts
//! and on effects far larger than a busy 2-core machine's jitter, not on tight timings.

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

use super::*;

/// The test server's counters.
#[derive(Debug, Default)]
struct Served {
    requests: AtomicU64,
    connections: AtomicU64,
}

/// Serves `proto` on a fresh port until the runtime ends; the request numbered `stall.0`
/// (from 0) is answered only after `stall.1`.
async fn server(proto: Proto, stall: Option<(u64, Duration)>) -> (SocketAddr, Arc<Served>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let served = Arc::new(Served::default());
    let body = Bytes::from(vec![b'r'; 1024]);
    let counters = Arc::clone(&served);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            stream.set_nodelay(true).unwrap();
            counters.connections.fetch_add(1, Ordering::Relaxed);
            let (counters, body) = (Arc::clone(&counters), body.clone());
            let service = service_fn(move |req: Request<Incoming>| {
                let (counters, body) = (Arc::clone(&counters), body.clone());
                async move {
                    let n = counters.requests.fetch_add(1, Ordering::Relaxed);
                    let _ = req.into_body().collect().await;
                    if let Some((at, pause)) = stall
                        && n == at
                    {
                        tokio::time::sleep(pause).await;
                    }
                    Ok::<_, Infallible>(Response::new(Full::new(body)))
                }
            });
            let io = TokioIo::new(stream);
            tokio::spawn(async move {
                let _ = match proto {
                    Proto::H1 => {
                        hyper::server::conn::http1::Builder::new().serve_connection(io, service).await
                    }
                    Proto::H2 => {
                        hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                            .serve_connection(io, service)
                            .await
                    }
                };
            });
        }
    });
    (addr, served)
}

fn spec(target: SocketAddr, proto: Proto, rate: u64, duration_ms: u64) -> RateSpec {
    RateSpec {
        target,
        host: "bench.test".to_string(),
        path: "/bench".to_string(),
        proto,
        rate,
        duration: Duration::from_millis(duration_ms),
        warmup: Duration::ZERO,
        body: 0,
        connections: 4,
        timeout: Duration::from_secs(10),
    }
}

fn assert_curve_ascends(r: &RateResult) {
    let ps: Vec<f64> = r.curve.iter().map(|p| p.0).collect();
    for want in [50.0, 75.0, 90.0, 95.0, 99.0, 99.5, 99.9, 99.95, 99.99, 100.0] {
        assert!(ps.contains(&want), "curve lacks p{want}: {:?}", r.curve);
    }
    for pair in r.curve.windows(2) {
        assert!(pair[0].0 < pair[1].0 && pair[0].1 <= pair[1].1, "curve not ascending: {:?}", r.curve);
    }
    assert_eq!(r.curve.last().unwrap().1, r.max_us);
}

fn assert_fast_run(r: &RateResult, rate: u64) {
    assert_eq!((r.sent, r.ok, r.errors, r.non_2xx), (rate, rate, 0, 0), "{r:?}");
    assert!(r.p50_us < 5_000.0, "p50 {} µs", r.p50_us);
    assert!((r.achieved_rps - rate as f64).abs() <= rate as f64 * 0.1, "achieved {}", r.achieved_rps);
    assert_curve_ascends(r);
    assert_eq!(hist::decode(&r.histogram).unwrap().len(), rate);
}

#[tokio::test]
async fn h1_500_rps_for_a_second_all_ok_within_the_connection_bound() {
    let (addr, served) = server(Proto::H1, None).await;
    let mut s = spec(addr, Proto::H1, 500, 1000);
    s.warmup = Duration::from_millis(200);
    let r = run_rate(&s).await.unwrap();
    assert_fast_run(&r, 500);
    // Warmup requests were sent but not recorded.
    assert_eq!(served.requests.load(Ordering::Relaxed), 600);
    let opened = served.connections.load(Ordering::Relaxed);
    assert!((1..=4).contains(&opened), "{opened} connections");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_500_rps_for_a_second_all_ok_over_every_connection() {
    let (addr, served) = server(Proto::H2, None).await;
    let mut s = spec(addr, Proto::H2, 500, 1000);
    s.body = 512;
    let r = run_rate(&s).await.unwrap();
    assert_fast_run(&r, 500);
    assert_eq!(served.connections.load(Ordering::Relaxed), 4);
}

#[tokio::test]
async fn a_stall_on_one_h1_connection_shows_in_every_request_behind_it() {
    // 300 rps with one connection; request 100 is held 200 ms. The ~60 requests scheduled during
    // the stall queue behind it and are counted from their scheduled times: latencies from
    // ~200 ms down, one every 3.3 ms. p99 (the 3rd worst) is then ~193 ms and p90 (the 30th
    // worst) ~100 ms; measured from the actual send, only one request would be slow.
    let (addr, _) = server(Proto::H1, Some((100, Duration::from_millis(200)))).await;
    let mut s = spec(addr, Proto::H1, 300, 1000);
    s.connections = 1;
    let r = run_rate(&s).await.unwrap();
    assert_eq!((r.sent, r.ok, r.errors), (300, 300, 0), "{r:?}");
    assert!(r.max_us >= 190_000.0, "max {} µs", r.max_us);
    assert!(r.p99_us >= 150_000.0, "p99 {} µs", r.p99_us);
    assert!(r.p90_us >= 50_000.0, "p90 {} µs", r.p90_us);
    assert!(r.p50_us < 100_000.0, "p50 {} µs: more than the stall's requests were slow", r.p50_us);
    assert_curve_ascends(&r);
}

#[tokio::test]
async fn a_refused_target_is_all_errors_not_a_failure() {
    let refused = {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap()
    };
    for proto in [Proto::H1, Proto::H2] {
        let r = run_rate(&spec(refused, proto, 100, 200)).await.unwrap();
        assert_eq!((r.sent, r.ok, r.errors, r.non_2xx), (20, 0, 20, 0), "{proto:?}: {r:?}");
        assert_eq!((r.p50_us, r.max_us, r.achieved_rps), (0.0, 0.0, 0.0));
        assert_eq!(hist::decode(&r.histogram).unwrap().len(), 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_10k_rps_sends_exactly_the_schedule() {
    let (addr, _) = server(Proto::H2, None).await;
    let r = run_rate(&spec(addr, Proto::H2, 10_000, 500)).await.unwrap();
    assert_eq!(r.sent, 5000);
    assert_eq!((r.ok, r.errors, r.non_2xx), (5000, 0, 0), "{r:?}");
    assert!(r.late_starts <= r.sent);
    assert_curve_ascends(&r);
}

fn synthetic(values: std::ops::Range<u64>, late_starts: u64) -> RateResult {
    let mut h = hist::new();
    for v in values {
        h.record(v).unwrap();
    }
    let n = h.len();
    let counts = Counts { sent: n, ok: n, errors: 0, non_2xx: 0, late_starts };
    result(&counts, &h, n as f64)
}

#[test]
fn merge_sums_counts_and_reads_percentiles_from_the_summed_histogram() {
    let fast = synthetic(100..200, 1);
    let slow = synthetic(1000..1100, 2);
    let merged = merge(&[fast.clone(), slow.clone()]).unwrap();
    assert_eq!((merged.sent, merged.ok, merged.errors, merged.late_starts), (200, 200, 0, 3));
    assert!(fast.p50_us <= merged.p50_us && merged.p50_us <= slow.p50_us, "{merged:?}");
    assert_eq!(merged.max_us, slow.max_us);
    assert_eq!(merged.achieved_rps, 100.0);
    assert_curve_ascends(&merged);
    assert_eq!(hist::decode(&merged.histogram).unwrap().len(), 200);
    // A merge of one is the run itself.
    assert_eq!(merge(std::slice::from_ref(&fast)).unwrap(), fast);
}

#[test]
fn merge_refuses_nothing_and_damaged_histograms() {
    assert!(matches!(merge(&[]), Err(LoadError::NothingToMerge)));
    let mut bad = synthetic(1..10, 0);
    bad.histogram = "1c84".to_string();
    let err = merge(&[synthetic(1..10, 0), bad]).unwrap_err();
    assert!(matches!(err, LoadError::Histogram { index: 1, .. }), "{err}");
}

#[tokio::test]
async fn an_unsendable_spec_names_the_target() {
    let target: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let mut s = spec(target, Proto::H1, 0, 1000);
    let err = run_rate(&s).await.unwrap_err();
    assert!(err.to_string().contains("127.0.0.1:9"), "{err}");
    s.rate = 100;
    s.host = "bad host".to_string();
    assert!(matches!(run_rate(&s).await, Err(LoadError::Uri { .. })));
}

#[test]
fn proto_names_round_trip() {
    for p in [Proto::H1, Proto::H2] {
        assert_eq!(Proto::parse(p.as_str()), Some(p));
        assert_eq!(serde_json::to_string(&p).unwrap(), format!("\"{}\"", p.as_str()));
    }
    assert_eq!(Proto::parse("h3"), None);
}

#[test]
fn the_schedule_spaces_requests_exactly() {
    assert_eq!(requests_in(10_000, Duration::from_millis(500)), 5000);
    assert_eq!(requests_in(3, Duration::from_millis(999)), 2);
    let start = Instant::now();
    assert_eq!(scheduled(start, 3, 3) - start, Duration::from_secs(1));
    assert_eq!(scheduled(start, 1, 3) - start, Duration::from_nanos(333_333_333));
}
