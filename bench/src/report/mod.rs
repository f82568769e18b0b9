//! What a run's [`Report`] becomes for people: `BENCHMARKS.md` ([`markdown`]) with the goals
//! of issue 7 checked ([`goals`]), its SVG plots ([`plots`]) and the regression check of `--compare` ([`compare`], [`check_format`]).
//!
//! Everything here is a pure function of the report: the same input gives byte-identical output,
//! so a rerun on an unchanged tree leaves the committed files alone.

mod compare;
mod goals;
mod markdown;
mod svg;

pub use compare::{Change, CompareError, Comparison, check_format, compare};
pub use goals::{Goal, goals};
pub use markdown::markdown;
pub use svg::plots;

use crate::results::Report;

/// One SVG plot, written next to `BENCHMARKS.md` and embedded in it.
#[derive(Debug, Clone)]
pub struct Plot {
    /// File name relative to `BENCHMARKS.md`, e.g. `latency-h1-1000rps.svg`.
    pub file: String,
    /// Human title, also the image's alt text.
    pub title: String,
    /// The standalone SVG document.
    pub svg: String,
}

/// The group of a metric id: its part before the first `/` (`latency_p99/h1/1000rps` →
/// `latency_p99`).
fn group_of(metric: &str) -> &str {
    metric.split_once('/').map_or(metric, |(group, _)| group)
}

/// The part of a metric id after its group, empty when there is none.
fn suffix_of(metric: &str) -> &str {
    metric.split_once('/').map_or("", |(_, suffix)| suffix)
}

/// Scenarios in first-appearance order, rows then curves: the column order of the tables and the
/// colour of each scenario in every plot, so a scenario looks the same everywhere.
fn scenario_order(report: &Report) -> Vec<&str> {
    let mut order: Vec<&str> = Vec::new();
    let names = report
        .rows
        .iter()
        .map(|r| r.scenario.as_str())
        .chain(report.curves.iter().map(|c| c.scenario.as_str()));
    for name in names {
        if !order.contains(&name) {
            order.push(name);
        }
    }
    order
}

/// Decimals for a figure of this size: 0 from 100, 1 from 10, 2 below (`1234`, `12.3`, `1.23`).
fn decimals_for(v: f64) -> usize {
    let a = v.abs();
    if a >= 100.0 {
        0
    } else if a >= 10.0 {
        1
    } else {
        2
    }
}

/// A figure with `decimals`; `–` for NaN or infinity, which a failed measurement leaves.
fn fixed(v: f64, decimals: usize) -> String {
    if v.is_finite() { format!("{v:.decimals$}") } else { "–".to_string() }
}

/// A figure with as many decimals as its size calls for (see [`decimals_for`]).
fn num(v: f64) -> String {
    fixed(v, decimals_for(v))
}

/// A figure with its unit, `123 µs`; no trailing space for unitless figures.
fn with_unit(value: &str, unit: &str) -> String {
    if unit.is_empty() { value.to_string() } else { format!("{value} {unit}") }
}

/// A small run for the tests of every part of the report: three scenarios, three groups, curves.
#[cfg(test)]
pub(crate) mod testdata {
    use crate::results::{Better, Curve, FORMAT, Machine, Report, Row, Stat};

    pub(crate) fn row(scenario: &str, metric: &str, unit: &str, better: Better, values: &[f64]) -> Row {
        Row {
            scenario: scenario.to_string(),
            metric: metric.to_string(),
            unit: unit.to_string(),
            better,
            value: Stat::of(values.to_vec()),
        }
    }

    fn curve(scenario: &str, proto: &str, rate: u64, scale: f64) -> Curve {
        let points = [(50.0, 80.0), (90.0, 90.0), (99.0, 100.0), (99.9, 120.0), (100.0, 200.0)];
        Curve {
            scenario: scenario.to_string(),
            proto: proto.to_string(),
            rate,
            points: points.iter().map(|&(p, us)| (p, us * scale)).collect(),
        }
    }

    pub(crate) fn sample() -> Report {
        use Better::{Higher, Lower};
        Report {
            format: FORMAT,
            machine: Machine {
                cpu_model: "Test CPU @ 2.0GHz".to_string(),
                cpus: 2,
                kernel: "6.1.0-test".to_string(),
                mem_gib: 7.77,
            },
            commit: "abc1234".to_string(),
            started: "2026-01-02T03:04:05Z".to_string(),
            reps: 5,
            command: "bench run --reps 5".to_string(),
            rows: vec![
                row("direct", "latency_p99/h1/1000rps", "µs", Lower, &[95.0, 100.0, 105.0, 98.0, 102.0]),
                row("l4", "latency_p99/h1/1000rps", "µs", Lower, &[104.0, 110.0, 115.0, 108.0, 112.0]),
                row("l7", "latency_p99/h1/1000rps", "µs", Lower, &[125.0, 130.0, 140.0, 128.0, 132.0]),
                row("direct", "throughput/1stream", "MB/s", Higher, &[40.0, 42.0, 44.0]),
                row("l7", "throughput/1stream", "MB/s", Higher, &[30.0, 31.0, 32.0]),
                row("direct", "cpu_per_1k/h1/1000rps", "ms CPU", Lower, &[1.4, 1.5, 1.6]),
                row("l4", "cpu_per_1k/h1/1000rps", "ms CPU", Lower, &[2.0, 2.1, 2.2]),
                row("l7", "cpu_per_1k/h1/1000rps", "ms CPU", Lower, &[4.0, 4.5, 5.0]),
            ],
            curves: vec![
                curve("direct", "h1", 1000, 1.0),
                curve("l4", "h1", 1000, 1.1),
                curve("l7", "h1", 1000, 1.3),
                curve("direct", "h2", 1000, 1.0),
            ],
            skipped: vec!["envoy: no envoy binary".to_string()],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_and_suffix_split_at_the_first_slash() {
        assert_eq!(group_of("latency_p99/h1/1000rps"), "latency_p99");
        assert_eq!(suffix_of("latency_p99/h1/1000rps"), "h1/1000rps");
        assert_eq!(group_of("rss"), "rss");
        assert_eq!(suffix_of("rss"), "");
    }

    #[test]
    fn numbers_get_fewer_decimals_as_they_grow() {
        assert_eq!(num(123.4), "123");
        assert_eq!(num(12.34), "12.3");
        assert_eq!(num(1.234), "1.23");
        assert_eq!(num(-150.2), "-150");
        assert_eq!(num(f64::NAN), "–");
        assert_eq!(num(f64::INFINITY), "–");
        assert_eq!(with_unit("5", ""), "5");
        assert_eq!(with_unit("5", "µs"), "5 µs");
    }
}
