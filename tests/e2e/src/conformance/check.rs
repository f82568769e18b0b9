//! Runs one case against a [`Target`] (the in-process mesh or the lab) and checks every
//! expectation of the suite format, reporting the first that does not hold.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::time::{Duration, Instant};

use super::client::Answer;
use super::format::Case;

/// One request a backend pod received.
#[derive(Debug, Clone)]
pub struct Seen {
    pub pod: String,
    pub method: String,
    pub path: String,
    pub host: String,
    pub headers: http::HeaderMap,
}

/// Where cases run: sends requests, reports what the backends received and the waypoint's
/// request metrics.
pub trait Target {
    /// Called before each case: what backends saw so far is forgotten.
    fn begin(&self) -> impl Future<Output = ()>;
    /// Sends the case's requests and returns the answers.
    fn send(&self, case: &Case) -> impl Future<Output = Result<Vec<Answer>, String>>;
    /// Requests the backend pods received since `begin`, in arrival order.
    fn seen(&self) -> impl Future<Output = Vec<Seen>>;
    /// The waypoint's `istio_requests_total` summed per `response_flags` value.
    fn requests_by_flags(&self) -> impl Future<Output = HashMap<String, f64>>;
}

fn count(all: &[Seen], pod: &str) -> usize {
    all.iter().filter(|s| s.pod == pod).count()
}

/// Runs `case` and checks its expectations.
pub async fn run_case<T: Target>(target: &T, case: &Case) -> Result<(), String> {
    tokio::time::sleep(Duration::from_millis(case.wait_millis)).await;
    target.begin().await;
    let e = &case.expect;
    let flags_before =
        if e.response_flags.is_empty() { HashMap::new() } else { target.requests_by_flags().await };
    let start = Instant::now();
    let answers = target.send(case).await?;
    let elapsed = start.elapsed();
    let last = answers.last().ok_or("no answer")?;
    if let Some(s) = e.status
        && let Some(bad) = answers.iter().find(|a| a.status != s)
    {
        return Err(format!("status {} (want {s}), body {:?}", bad.status, bad.body));
    }
    if let Some(want) = &e.backend
        && let Some(bad) = answers.iter().find(|a| a.backend().as_deref() != Some(want.as_str()))
    {
        return Err(format!("answered by {:?} (want {want}), status {}", bad.backend(), bad.status));
    }
    let n = answers.len() as f64;
    if let Some(want) = &e.backends {
        let mut got: BTreeMap<String, f64> = BTreeMap::new();
        for a in &answers {
            *got.entry(a.backend().unwrap_or_else(|| format!("status {}", a.status))).or_default() += 1.0 / n;
        }
        for (pod, frac) in want {
            let g = got.get(pod).copied().unwrap_or(0.0);
            if (g - frac).abs() > e.tolerance {
                return Err(format!(
                    "{pod}: {g:.3} of answers, want {frac} ± {} (all: {got:?})",
                    e.tolerance
                ));
            }
        }
    }
    if let Some(want) = &e.statuses {
        for (code, frac) in want {
            let g = answers.iter().filter(|a| a.status == *code).count() as f64 / n;
            if (g - frac).abs() > e.tolerance {
                return Err(format!("status {code}: {g:.3} of answers, want {frac} ± {}", e.tolerance));
            }
        }
    }
    for (k, v) in &e.headers {
        let got = last.headers.get(k).and_then(|h| h.to_str().ok());
        if got != Some(v.as_str()) {
            return Err(format!("response header {k}: {got:?}, want {v:?}"));
        }
    }
    for k in &e.present_headers {
        if !last.headers.contains_key(k.as_str()) {
            return Err(format!("response header {k} missing (all: {:?})", last.headers));
        }
    }
    if e.same_backend {
        let first = answers[0].backend();
        if first.is_none() || answers.iter().any(|a| a.backend() != first) {
            let all: Vec<_> = answers.iter().map(|a| a.backend()).collect();
            return Err(format!("answers from different backends: {all:?}"));
        }
    }
    if let Some(min) = e.distinct_backends {
        let pods: std::collections::BTreeSet<_> = answers.iter().filter_map(|a| a.backend()).collect();
        if pods.len() < min {
            return Err(format!("answered by {pods:?}, want at least {min} different pods"));
        }
    }
    for (code, min) in &e.min_count {
        let got = answers.iter().filter(|a| a.status == *code).count();
        if got < *min {
            return Err(format!("{got} answers with status {code}, want at least {min}"));
        }
    }
    for k in &e.absent_headers {
        if last.headers.contains_key(k.as_str()) {
            return Err(format!("response header {k} present: {:?}", last.headers.get(k)));
        }
    }
    if let Some(loc) = &e.location {
        let got = last.headers.get("location").and_then(|h| h.to_str().ok());
        if got != Some(loc.as_str()) {
            return Err(format!("location {got:?}, want {loc:?}"));
        }
    }
    if let Some(text) = &e.body_contains
        && !last.body.contains(text.as_str())
    {
        return Err(format!("body {:?} lacks {text:?}", last.body));
    }
    if let Some(text) = &e.any_body_contains
        && !answers.iter().any(|a| a.body.contains(text.as_str()))
    {
        return Err(format!("no answer's body has {text:?}"));
    }
    if let Some(ms) = e.min_millis
        && elapsed < Duration::from_millis(ms)
    {
        return Err(format!("took {elapsed:?}, want at least {ms} ms"));
    }
    if let Some(ms) = e.max_millis
        && elapsed > Duration::from_millis(ms)
    {
        return Err(format!("took {elapsed:?}, want at most {ms} ms"));
    }
    // What the backend saw: the last request that reached one.
    let needs_upstream = !e.upstream_headers.is_empty()
        || !e.absent_upstream_headers.is_empty()
        || !e.present_upstream_headers.is_empty()
        || e.upstream_path.is_some()
        || e.upstream_host.is_some();
    if needs_upstream {
        let seen = target.seen().await.into_iter().rev().find(|s| s.pod != "mirror-v1");
        let seen = seen.ok_or("no backend saw the request")?;
        for (k, v) in &e.upstream_headers {
            let got = joined(&seen.headers, k);
            if got.as_deref() != Some(v.as_str()) {
                return Err(format!("backend saw {k}: {got:?}, want {v:?} (all: {:?})", seen.headers));
            }
        }
        for k in &e.absent_upstream_headers {
            if seen.headers.contains_key(k.as_str()) {
                return Err(format!("backend saw {k}: {:?}", seen.headers.get(k)));
            }
        }
        for k in &e.present_upstream_headers {
            if !seen.headers.contains_key(k.as_str()) {
                return Err(format!("backend did not see {k} (all: {:?})", seen.headers));
            }
        }
        if let Some(p) = &e.upstream_path
            && seen.path != *p
        {
            return Err(format!("backend saw path {:?}, want {p:?}", seen.path));
        }
        if let Some(h) = &e.upstream_host
            && seen.host != *h
        {
            return Err(format!("backend saw host {:?}, want {h:?}", seen.host));
        }
    }
    if !e.seen_by.is_empty() {
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            let counts: BTreeMap<String, usize> = {
                let all = target.seen().await;
                e.seen_by.keys().map(|p| (p.clone(), count(&all, p))).collect()
            };
            if counts == e.seen_by {
                break;
            }
            if Instant::now() > deadline {
                return Err(format!("backends saw {counts:?}, want {:?}", e.seen_by));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    for (pod, min) in &e.seen_at_least {
        let got = count(&target.seen().await, pod);
        if got < *min {
            return Err(format!("{pod} saw {got} requests, want at least {min}"));
        }
    }
    if !e.seen_share.is_empty() {
        // Fire-and-forget copies may still be on their way: wait for 300 ms without change.
        let counts = async || {
            let all = target.seen().await;
            e.seen_share.keys().map(|p| count(&all, p)).collect::<Vec<_>>()
        };
        let (mut last, mut stable) = (counts().await, Instant::now());
        let deadline = Instant::now() + Duration::from_secs(5);
        while stable.elapsed() < Duration::from_millis(300) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let now = counts().await;
            if now != last {
                (last, stable) = (now, Instant::now());
            }
        }
        for ((pod, frac), got) in e.seen_share.iter().zip(last) {
            let g = got as f64 / n;
            if (g - frac).abs() > e.tolerance {
                return Err(format!("{pod} saw {got} requests ({g:.3}), want {frac} ± {}", e.tolerance));
            }
        }
    }
    for (pod, host) in &e.seen_hosts {
        let got = wait_seen(target, pod).await.ok_or_else(|| format!("{pod} saw no request"))?;
        if got.host != *host {
            return Err(format!("{pod} saw host {:?}, want {host:?}", got.host));
        }
    }
    for (pod, want) in &e.seen_headers {
        let got = wait_seen(target, pod).await.ok_or_else(|| format!("{pod} saw no request"))?;
        for (k, v) in want {
            let h = joined(&got.headers, k);
            if h.as_deref() != Some(v.as_str()) {
                return Err(format!("{pod} saw {k}: {h:?}, want {v:?} (all: {:?})", got.headers));
            }
        }
    }
    // Metrics are recorded when a response body ends, possibly just after the client saw it.
    if !e.response_flags.is_empty() {
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            let now = target.requests_by_flags().await;
            let grew =
                |f: &str| now.get(f).copied().unwrap_or(0.0) - flags_before.get(f).copied().unwrap_or(0.0);
            if e.response_flags.iter().all(|(f, n)| grew(f) == *n) {
                break;
            }
            if Instant::now() > deadline {
                let all: BTreeMap<&str, f64> =
                    now.keys().map(|f| (f.as_str(), grew(f))).filter(|(_, n)| *n != 0.0).collect();
                return Err(format!(
                    "requests by response_flags grew by {all:?}, want {:?}",
                    e.response_flags
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    Ok(())
}

/// Every value of header `k`, joined with `,` (repeated lines are one list, RFC 9110 §5.3).
fn joined(h: &http::HeaderMap, k: &str) -> Option<String> {
    let all: Vec<&str> = h.get_all(k).iter().filter_map(|v| v.to_str().ok()).collect();
    (!all.is_empty()).then(|| all.join(","))
}

/// The last request `pod` received, waiting a little for fire-and-forget copies.
async fn wait_seen<T: Target>(target: &T, pod: &str) -> Option<Seen> {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        if let Some(s) = target.seen().await.into_iter().rev().find(|s| s.pod == pod) {
            return Some(s);
        }
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `istio_requests_total` in a Prometheus text exposition, summed per `response_flags` value
/// (`-` for none).
pub fn flags_from_metrics(text: &str) -> HashMap<String, f64> {
    let mut out = HashMap::new();
    for l in text.lines().filter(|l| l.starts_with("istio_requests_total{")) {
        let Some(flags) = l.split("response_flags=\"").nth(1).and_then(|r| r.split('"').next()) else {
            continue;
        };
        if let Some(v) = l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) {
            *out.entry(flags.to_string()).or_default() += v;
        }
    }
    out
}
