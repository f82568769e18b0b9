//! Token buckets: Envoy's timer-based local rate limit bucket, computed lazily. A bucket starts
//! full; every `fill_interval` after its creation `tokens_per_fill` tokens are added, up to
//! `max_tokens`; each checked request takes one. The state is one `AtomicU64` (fills seen,
//! tokens) updated by compare-and-swap: no lock and no allocation per request. Time is
//! `tokio::time::Instant`, so tests run with paused time.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mesh_api::istio::networking::TokenBucket;
use tokio::time::Instant;

/// One bucket.
#[derive(Debug)]
pub struct Bucket {
    config: TokenBucket,
    start: Instant,
    /// High 32 bits: fills applied (count modulo 2^32); low 32 bits: tokens.
    state: AtomicU64,
}

/// What taking a token found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Take {
    /// A token was taken.
    pub allowed: bool,
    /// Tokens left after this request.
    pub remaining: u32,
    /// Time until the next fill.
    pub reset: Duration,
}

impl Bucket {
    /// A full bucket whose fills are counted from `now`.
    pub fn new(config: TokenBucket, now: Instant) -> Self {
        Bucket { config, start: now, state: AtomicU64::new(u64::from(config.max_tokens)) }
    }

    pub fn config(&self) -> &TokenBucket {
        &self.config
    }

    /// Fills due at `now` since the start, and the time left until the next one.
    fn fills_at(&self, now: Instant) -> (u64, Duration) {
        let elapsed = now.saturating_duration_since(self.start);
        let interval = self.config.fill_interval.max(Duration::from_nanos(1));
        let n = elapsed.as_nanos() / interval.as_nanos();
        let into = elapsed.as_nanos() % interval.as_nanos();
        let reset = interval - Duration::from_nanos(into as u64);
        (n as u64, reset)
    }

    /// Refills as of `now` and takes one token if there is one.
    pub fn take(&self, now: Instant) -> Take {
        let (fills, reset) = self.fills_at(now);
        let max = self.config.max_tokens;
        let mut cur = self.state.load(Ordering::Acquire);
        loop {
            let (seen, tokens) = ((cur >> 32) as u32, cur as u32);
            // Fills since the last update; wrapping covers the counter's 32-bit window.
            let due = (fills as u32).wrapping_sub(seen);
            let tokens = if due == 0 {
                tokens
            } else {
                let added = u64::from(due) * u64::from(self.config.tokens_per_fill);
                (u64::from(tokens) + added).min(u64::from(max)) as u32
            };
            let (allowed, left) = if tokens > 0 { (true, tokens - 1) } else { (false, 0) };
            let next = (u64::from(fills as u32) << 32) | u64::from(left);
            if next == cur {
                return Take { allowed, remaining: left, reset };
            }
            match self.state.compare_exchange_weak(cur, next, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return Take { allowed, remaining: left, reset },
                Err(actual) => cur = actual,
            }
        }
    }
}

/// Buckets one connection keeps (one per limiter it went through).
const MAX_PER_CONN: usize = 32;

/// The buckets of one downstream connection (`local_rate_limit_per_downstream_connection`),
/// keyed by the limiter's id; made on the connection's first request through each limiter.
#[derive(Debug, Default)]
pub struct ConnBuckets {
    buckets: Mutex<Vec<(u64, Arc<Bucket>)>>,
}

impl ConnBuckets {
    /// This connection's bucket for limiter `id` (created full at `now`).
    pub fn get(&self, id: u64, config: &TokenBucket, now: Instant) -> Arc<Bucket> {
        let mut g = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, b)) = g.iter().find(|(i, b)| *i == id && b.config() == config) {
            return b.clone();
        }
        g.retain(|(i, _)| *i != id);
        // Limiters replaced by config changes leave entries behind; keep the newest few.
        if g.len() >= MAX_PER_CONN {
            g.remove(0);
        }
        let b = Arc::new(Bucket::new(*config, now));
        g.push((id, b.clone()));
        b
    }

    pub fn len(&self) -> usize {
        self.buckets.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
