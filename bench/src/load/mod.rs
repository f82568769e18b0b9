//! Fixed-rate (open-loop) HTTP load: the client the harness runs inside a lab pod to measure
//! latency at an offered rate. Owns the send schedule, the connections it sends over
//! ([`client`]), the latency histogram and its text form ([`hist`]), and the merge of
//! repetitions.
//!
//! Request `i` is scheduled at `start + i / rate` and its latency is counted from that scheduled
//! time, not from when it actually left, so a stall shows in every request it held up: the
//! latencies are free of coordinated omission.

mod client;
mod hist;
#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use tokio::task::JoinSet;
use tokio::time::Instant;

use client::Client;

/// The HTTP version requests are sent with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    /// HTTP/1.1.
    H1,
    /// HTTP/2 with prior knowledge (h2c).
    H2,
}

impl Proto {
    /// `h1` or `h2`, as [`Proto::as_str`] writes them.
    pub fn parse(s: &str) -> Option<Proto> {
        match s {
            "h1" => Some(Proto::H1),
            "h2" => Some(Proto::H2),
            _ => None,
        }
    }

    /// The name in results and on the command line: `h1` or `h2`.
    pub fn as_str(self) -> &'static str {
        match self {
            Proto::H1 => "h1",
            Proto::H2 => "h2",
        }
    }
}

/// One fixed-rate run.
#[derive(Debug, Clone)]
pub struct RateSpec {
    pub target: SocketAddr,
    /// Host header (HTTP/1.1) or `:authority` (HTTP/2).
    pub host: String,
    /// Path and query, e.g. `/bench`.
    pub path: String,
    pub proto: Proto,
    /// Offered rate (requests per second).
    pub rate: u64,
    /// The measured window.
    pub duration: Duration,
    /// Unrecorded load at the same rate before the measured window.
    pub warmup: Duration,
    /// Request body (bytes): a POST when > 0, a GET when 0.
    pub body: usize,
    /// HTTP/1.1: most connections open at once (a request waits for a free one, and the wait is
    /// latency). HTTP/2: connections the streams are spread over, round-robin.
    pub connections: usize,
    /// Per request, from its scheduled time; a timed-out request is an error, recorded at this
    /// value.
    pub timeout: Duration,
}

/// What a run measured (or several, merged by [`merge`]).
///
/// Every measured request is one of `ok`, `non_2xx` or `errors`. The histogram holds the latency
/// of every response (2xx or not) and of every timeout (at the timeout); other failures (refused,
/// reset) are only counted, since how fast a connection is refused says nothing about latency.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RateResult {
    /// Requests scheduled in the measured window (= rate × duration).
    pub sent: u64,
    /// Responses with a 2xx status, read to the end.
    pub ok: u64,
    /// Timeouts and failed exchanges (connect, protocol, reset).
    pub errors: u64,
    /// Responses with another status, read to the end.
    pub non_2xx: u64,
    /// `ok` per second of the measured window (for a merge: the mean over the repetitions).
    pub achieved_rps: f64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
    /// (percentile, µs), ascending in both, from the minimum (0) to the maximum (100).
    pub curve: Vec<(f64, f64)>,
    /// Requests whose task started more than 1 ms after their scheduled time: the client (or the
    /// machine it runs on) fell behind the schedule.
    pub late_starts: u64,
    /// The latency histogram (µs, 1 µs..60 s, 3 significant digits) in HdrHistogram's
    /// uncompressed V2 encoding, hex encoded; [`merge`] adds them bin for bin.
    pub histogram: String,
}

/// Why a run could not be made or results could not be merged. Failed requests are not among
/// them: those are counted in [`RateResult::errors`].
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// A field of the [`RateSpec`] out of range.
    #[error("load against {target}: {what}")]
    InvalidSpec { target: SocketAddr, what: &'static str },
    /// `host` and `path` do not make a request URI.
    #[error("load against {target}: no request URI from host {host:?} and path {path:?}")]
    Uri {
        target: SocketAddr,
        host: String,
        path: String,
        #[source]
        source: http::Error,
    },
    /// `host` cannot be sent as a Host header.
    #[error("load against {target}: host {host:?} is not a valid Host header")]
    HostHeader {
        target: SocketAddr,
        host: String,
        #[source]
        source: http::header::InvalidHeaderValue,
    },
    /// A request task panicked (a bug in this module).
    #[error("load against {target}: a request task panicked")]
    Task {
        target: SocketAddr,
        #[source]
        source: tokio::task::JoinError,
    },
    /// [`merge`] of an empty slice.
    #[error("merge: no results to merge")]
    NothingToMerge,
    /// The ticker thread could not be started.
    #[error("load against {target}: starting the ticker thread: {source}")]
    Ticker { target: SocketAddr, source: std::io::Error },
    /// The histogram of `results[index]` is damaged or of another layout.
    #[error("merge: the histogram of result {index} {what}")]
    Histogram { index: usize, what: &'static str },
}

/// A request started later than this after its scheduled time is a late start.
const LATE: Duration = Duration::from_millis(1);

/// Most requests sent in one catch-up before yielding, so that on a current-thread runtime the
/// request tasks (and the connections) still run while the client is behind.
const MAX_BATCH: usize = 256;

/// Percentiles of [`RateResult::curve`] (the max is added as 100).
const CURVE: [f64; 14] =
    [0.0, 25.0, 50.0, 75.0, 90.0, 95.0, 97.5, 99.0, 99.5, 99.75, 99.9, 99.95, 99.99, 99.999];

/// Sends `spec.rate` requests per second for the warmup and then the measured window, each
/// without waiting for earlier ones, and measures the latency of those in the window.
///
/// Failed requests are data (in `errors`), not a failure of the run; the run itself fails only
/// on a spec it cannot send (see [`LoadError`]).
pub async fn run_rate(spec: &RateSpec) -> Result<RateResult, LoadError> {
    let invalid = |what| Err(LoadError::InvalidSpec { target: spec.target, what });
    if spec.rate == 0 || spec.rate > 1_000_000_000 {
        return invalid("rate must be 1..=10⁹ requests per second");
    }
    if spec.connections == 0 {
        return invalid("connections must be > 0");
    }
    if spec.timeout.is_zero() {
        return invalid("timeout must be > 0");
    }
    let warmup_n = requests_in(spec.rate, spec.warmup);
    let measured_n = requests_in(spec.rate, spec.duration);
    if measured_n == 0 {
        return invalid("rate × duration is less than one request");
    }
    let client = Arc::new(Client::new(spec)?);
    let total = warmup_n + measured_n;

    let mut tally = Tally::default();
    let mut tasks = JoinSet::new();
    let collect = |tally: &mut Tally, done| match done {
        Ok(sample) => {
            tally.add(sample);
            Ok(())
        }
        Err(source) => Err(LoadError::Task { target: spec.target, source }),
    };

    // tokio's timer rounds to whole milliseconds and wakes 1–2 ms late, which would bury a
    // proxy's tens of microseconds under the client's own delay. So a ticker thread sleeps to
    // each due time with the kernel's hrtimer (timer slack 1 ns) and wakes this task; then
    // every request whose time has come is sent in a tight catch-up, so the schedule stays exact
    // even when a wake-up is late. A request still counts from its scheduled time (strictly free
    // of coordinated omission); `late_starts` says when the client fell behind by more than
    // [`LATE`], i.e. when the client rather than the target was the bottleneck.
    let start = Instant::now();
    let tick = Arc::new(tokio::sync::Notify::new());
    let ticker = {
        let (tick, start, rate) = (Arc::clone(&tick), start.into_std(), spec.rate);
        std::thread::Builder::new()
            .name("load-ticker".into())
            .spawn(move || ticker(&tick, start, rate, total))
            .map_err(|source| LoadError::Ticker { target: spec.target, source })?
    };
    let mut next = 0u64;
    while next < total {
        let now = Instant::now();
        let mut batch = 0;
        while next < total && batch < MAX_BATCH {
            let at = scheduled(start, next, spec.rate);
            if at > now {
                break;
            }
            let measured = next >= warmup_n;
            let client = Arc::clone(&client);
            tasks.spawn(async move { exchange(&client, at, measured).await });
            next += 1;
            batch += 1;
        }
        while let Some(done) = tasks.try_join_next() {
            collect(&mut tally, done)?;
        }
        if next < total {
            let at = scheduled(start, next, spec.rate);
            if at > Instant::now() {
                // The ticker's wake-up, or the tokio timer should that thread be starved.
                tokio::select! {
                    () = tick.notified() => {}
                    () = tokio::time::sleep_until(at + TICKER_FALLBACK) => {}
                }
            } else {
                tokio::task::yield_now().await;
            }
        }
    }
    // Every task ends by its deadline (scheduled time + timeout).
    while let Some(done) = tasks.join_next().await {
        collect(&mut tally, done)?;
    }
    // It has passed its last due time, so it has ended or is about to.
    let _ = ticker.join();

    let achieved_rps = tally.counts.ok as f64 / spec.duration.as_secs_f64();
    Ok(result(&tally.counts, &tally.hist, achieved_rps))
}

/// How late past a due time the scheduler wakes on tokio's own timer when the ticker has not
/// woken it.
const TICKER_FALLBACK: Duration = Duration::from_millis(2);

/// The ticker thread: wakes the scheduler at each of the `total` due times.
fn ticker(tick: &tokio::sync::Notify, start: std::time::Instant, rate: u64, total: u64) {
    // SAFETY: prctl(PR_SET_TIMERSLACK) only changes this thread's timer slack; 1 ns asks the
    // kernel not to defer our wake-ups (the default slack is 50 µs).
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong, 0, 0, 0) };
    for i in 0..total {
        let at = start
            + Duration::from_nanos(
                u64::try_from(u128::from(i) * 1_000_000_000 / u128::from(rate)).unwrap_or(u64::MAX),
            );
        let now = std::time::Instant::now();
        if at > now {
            std::thread::sleep(at - now);
        }
        // Stores a permit when the scheduler is not waiting: no wake-up is lost.
        tick.notify_one();
    }
}

/// Several runs (repetitions of one measurement) as one: counts summed, histograms added bin for
/// bin and the percentiles read from the sum; `achieved_rps` is the mean of the runs'.
pub fn merge(results: &[RateResult]) -> Result<RateResult, LoadError> {
    if results.is_empty() {
        return Err(LoadError::NothingToMerge);
    }
    let mut hist = hist::new();
    let mut counts = Counts::default();
    for (index, r) in results.iter().enumerate() {
        let h = hist::decode(&r.histogram).map_err(|what| LoadError::Histogram { index, what })?;
        // Same layout as `hist` (decode checks), so adding cannot run out of range.
        hist.add(&h)
            .map_err(|_| LoadError::Histogram { index, what: "does not fit the 1 µs..60 s range" })?;
        counts.sent += r.sent;
        counts.ok += r.ok;
        counts.errors += r.errors;
        counts.non_2xx += r.non_2xx;
        counts.late_starts += r.late_starts;
    }
    let achieved_rps = results.iter().map(|r| r.achieved_rps).sum::<f64>() / results.len() as f64;
    Ok(result(&counts, &hist, achieved_rps))
}

/// Requests in `window` at `rate` per second (rounded down).
fn requests_in(rate: u64, window: Duration) -> u64 {
    u64::try_from(u128::from(rate) * window.as_nanos() / 1_000_000_000).unwrap_or(u64::MAX)
}

/// When request `i` is due. From `start` each time, so rounding never accumulates into drift.
fn scheduled(start: Instant, i: u64, rate: u64) -> Instant {
    let nanos = u128::from(i) * 1_000_000_000 / u128::from(rate);
    start + Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

/// What became of one request.
#[derive(Debug)]
struct Sample {
    /// In the measured window (not warmup).
    measured: bool,
    late_start: bool,
    outcome: Outcome,
    /// From the scheduled time to the end of the response body, or the timeout.
    latency: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Ok,
    Non2xx,
    Timeout,
    Failed,
}

/// One request task: the exchange, bounded by the deadline its scheduled time implies.
async fn exchange(client: &Client, at: Instant, measured: bool) -> Sample {
    let late_start = Instant::now().saturating_duration_since(at) > LATE;
    let outcome = match tokio::time::timeout_at(at + client.timeout, client.exchange()).await {
        Ok(Ok(status)) if status.is_success() => Outcome::Ok,
        Ok(Ok(_)) => Outcome::Non2xx,
        Ok(Err(client::Failed)) => Outcome::Failed,
        Err(_) => Outcome::Timeout,
    };
    let latency = match outcome {
        Outcome::Timeout => client.timeout,
        _ => at.elapsed(),
    };
    Sample { measured, late_start, outcome, latency }
}

#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    sent: u64,
    ok: u64,
    errors: u64,
    non_2xx: u64,
    late_starts: u64,
}

/// The measured samples so far.
#[derive(Debug)]
struct Tally {
    counts: Counts,
    hist: Histogram<u64>,
}

impl Default for Tally {
    fn default() -> Tally {
        Tally { counts: Counts::default(), hist: hist::new() }
    }
}

impl Tally {
    fn add(&mut self, sample: Sample) {
        if !sample.measured {
            return;
        }
        let c = &mut self.counts;
        c.sent += 1;
        c.late_starts += u64::from(sample.late_start);
        match sample.outcome {
            Outcome::Ok => c.ok += 1,
            Outcome::Non2xx => c.non_2xx += 1,
            Outcome::Timeout | Outcome::Failed => c.errors += 1,
        }
        if sample.outcome != Outcome::Failed {
            let us = u64::try_from(sample.latency.as_micros()).unwrap_or(u64::MAX);
            // Beyond 60 s counts as 60 s rather than being lost.
            self.hist.saturating_record(us.max(hist::LOW_US));
        }
    }
}

fn result(counts: &Counts, h: &Histogram<u64>, achieved_rps: f64) -> RateResult {
    // An empty histogram's max is undefined in hdrhistogram; 0 like its percentiles.
    let max = if h.is_empty() { 0 } else { h.max() };
    let at = |p: f64| h.value_at_quantile(p / 100.0) as f64;
    let mut curve: Vec<(f64, f64)> = CURVE.iter().map(|&p| (p, at(p))).collect();
    curve.push((100.0, max as f64));
    RateResult {
        sent: counts.sent,
        ok: counts.ok,
        errors: counts.errors,
        non_2xx: counts.non_2xx,
        achieved_rps,
        p50_us: at(50.0),
        p90_us: at(90.0),
        p99_us: at(99.0),
        p999_us: at(99.9),
        max_us: max as f64,
        curve,
        late_starts: counts.late_starts,
        histogram: hist::encode(h),
    }
}
