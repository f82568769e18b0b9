//! The results of a run: what `bench --json` writes, what the report and `--compare` read.
//! Every figure is a [`Stat`] over the repetitions (median, min, max and each value).

use serde::{Deserialize, Serialize};

/// Format version of the JSON; bumped when a field changes meaning.
pub const FORMAT: u32 = 1;

/// One run of the harness.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// [`FORMAT`] of the writer.
    pub format: u32,
    /// The machine the run was on.
    pub machine: Machine,
    /// `git describe --always --dirty` of the checkout, or "unknown".
    pub commit: String,
    /// UTC time the run started (RFC 3339).
    pub started: String,
    /// Repetitions of each measurement (count).
    pub reps: usize,
    /// The command line that reruns it.
    pub command: String,
    /// Scalar figures, one per (scenario, metric).
    pub rows: Vec<Row>,
    /// Latency percentile curves, one per (scenario, protocol, rate).
    pub curves: Vec<Curve>,
    /// What the run could not measure and why (a missing peer binary, a rate the machine cannot
    /// hold); shown in the report.
    pub skipped: Vec<String>,
}

/// The machine a run was on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Machine {
    /// `model name` from /proc/cpuinfo.
    pub cpu_model: String,
    /// Online CPUs (count).
    pub cpus: usize,
    /// `uname -r`.
    pub kernel: String,
    /// MemTotal (GiB).
    pub mem_gib: f64,
}

/// A figure over the repetitions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stat {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    /// Each repetition's value, in run order.
    pub values: Vec<f64>,
}

impl Stat {
    /// The statistic of `values`; NaN figures when there are none.
    pub fn of(values: Vec<f64>) -> Stat {
        let mut sorted: Vec<f64> = values.iter().copied().filter(|v| !v.is_nan()).collect();
        sorted.sort_by(f64::total_cmp);
        let median = match sorted.len() {
            0 => f64::NAN,
            n if n % 2 == 1 => sorted[n / 2],
            n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
        };
        Stat {
            median,
            min: sorted.first().copied().unwrap_or(f64::NAN),
            max: sorted.last().copied().unwrap_or(f64::NAN),
            values,
        }
    }

    /// (max − min) / median: the run's own spread, the noise `--compare` allows.
    pub fn spread(&self) -> f64 {
        if self.median == 0.0 || self.median.is_nan() {
            0.0
        } else {
            (self.max - self.min) / self.median.abs()
        }
    }
}

/// Whether a larger value of a metric is better.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Better {
    Higher,
    Lower,
}

/// One scalar figure of one scenario.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Row {
    /// Scenario name: `direct`, `l4`, `l7`, `envoy`, ...
    pub scenario: String,
    /// Metric id, stable across runs: e.g. `latency_p99/h1/1000rps`, `throughput/1stream`.
    pub metric: String,
    /// Unit shown in the report: `µs`, `MB/s`, `req/s`, `MiB`, `ms CPU`, ...
    pub unit: String,
    pub better: Better,
    pub value: Stat,
}

/// Latency at each percentile of one fixed-rate run (merged over the repetitions).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Curve {
    pub scenario: String,
    /// `h1` or `h2`.
    pub proto: String,
    /// Offered rate (requests per second).
    pub rate: u64,
    /// (percentile in 0..=100, latency in µs), ascending by percentile.
    pub points: Vec<(f64, f64)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_min_max_and_spread() {
        let s = Stat::of(vec![3.0, 1.0, 2.0]);
        assert_eq!((s.median, s.min, s.max), (2.0, 1.0, 3.0));
        assert_eq!(s.values, vec![3.0, 1.0, 2.0]);
        assert!((s.spread() - 1.0).abs() < 1e-9);
        let even = Stat::of(vec![4.0, 1.0, 2.0, 3.0]);
        assert_eq!(even.median, 2.5);
        let empty = Stat::of(vec![]);
        assert!(empty.median.is_nan() && empty.min.is_nan());
        assert_eq!(empty.spread(), 0.0);
        let nan = Stat::of(vec![f64::NAN, 5.0]);
        assert_eq!(nan.median, 5.0);
    }
}
