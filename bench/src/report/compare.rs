//! `--compare`: which figures of a new run moved beyond the noise of an old one.
//!
//! Rows match by (scenario, metric). The noise a row is allowed is the larger of the two runs'
//! own spreads ((max − min) / median), and never under 5%: a change inside what repetitions of
//! one run already disagree by is not a finding.

use std::collections::{BTreeMap, BTreeSet};

use super::{num, with_unit};
use crate::results::{Better, Report, Row};

/// The smallest relative change counted, however steady both runs were.
const MIN_NOISE: f64 = 0.05;

/// Why two reports cannot be compared.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompareError {
    #[error(
        "the reports have different formats (old: format {old}, new: format {new}); rerun the old commit"
    )]
    Format { old: u32, new: u32 },
}

/// One figure that moved beyond its noise.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub scenario: String,
    pub metric: String,
    pub unit: String,
    /// Old median.
    pub old: f64,
    /// New median.
    pub new: f64,
    /// Relative change, (new − old) / old.
    pub change: f64,
    /// Relative noise allowed (see the module docs).
    pub noise: f64,
}

/// The outcome of comparing two runs; lists keep the old report's row order (the new one's for
/// `only_new`).
#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    pub regressions: Vec<Change>,
    pub improvements: Vec<Change>,
    /// Matched rows within their noise, or without a figure to compare.
    pub unchanged: usize,
    /// `scenario metric` of rows only the old run has.
    pub only_old: Vec<String>,
    /// `scenario metric` of rows only the new run has.
    pub only_new: Vec<String>,
}

/// Refuses reports whose [`Report::format`] differ: their figures may not mean the same.
pub fn check_format(old: &Report, new: &Report) -> Result<(), CompareError> {
    if old.format == new.format {
        Ok(())
    } else {
        Err(CompareError::Format { old: old.format, new: new.format })
    }
}

/// Compares `new` against `old`, row by row.
pub fn compare(old: &Report, new: &Report) -> Comparison {
    let old_rows = index(old);
    let new_rows = index(new);
    let new_by_key: BTreeMap<(&str, &str), &Row> = new_rows.iter().copied().collect();
    let mut comparison = Comparison {
        regressions: Vec::new(),
        improvements: Vec::new(),
        unchanged: 0,
        only_old: Vec::new(),
        only_new: Vec::new(),
    };

    for (key, o) in &old_rows {
        let Some(n) = new_by_key.get(key) else {
            comparison.only_old.push(format!("{} {}", key.0, key.1));
            continue;
        };
        let (old_m, new_m) = (o.value.median, n.value.median);
        // Nothing to compare against: a failed measurement or a zero baseline.
        if !old_m.is_finite() || !new_m.is_finite() || old_m == 0.0 {
            comparison.unchanged += 1;
            continue;
        }
        let noise = MIN_NOISE.max(o.value.spread()).max(n.value.spread());
        let change = (new_m - old_m) / old_m;
        // The new run's notion of better: a metric whose direction was fixed is judged as now.
        let worse = match n.better {
            Better::Lower => new_m > old_m,
            Better::Higher => new_m < old_m,
        };
        let found = Change {
            scenario: key.0.to_string(),
            metric: key.1.to_string(),
            unit: n.unit.clone(),
            old: old_m,
            new: new_m,
            change,
            noise,
        };
        if change.abs() <= noise {
            comparison.unchanged += 1;
        } else if worse {
            comparison.regressions.push(found);
        } else {
            comparison.improvements.push(found);
        }
    }

    let old_keys: BTreeSet<(&str, &str)> = old_rows.iter().map(|(k, _)| *k).collect();
    comparison.only_new = new_rows
        .iter()
        .filter(|(k, _)| !old_keys.contains(k))
        .map(|(k, _)| format!("{} {}", k.0, k.1))
        .collect();
    comparison
}

/// A report's rows by (scenario, metric) in report order; the first of a repeated key wins.
fn index(report: &Report) -> Vec<((&str, &str), &Row)> {
    let mut seen: BTreeSet<(&str, &str)> = BTreeSet::new();
    let mut rows = Vec::new();
    for r in &report.rows {
        let key = (r.scenario.as_str(), r.metric.as_str());
        if seen.insert(key) {
            rows.push((key, r));
        }
    }
    rows
}

impl Comparison {
    /// Whether any figure got worse beyond its noise (what makes `--compare` fail).
    pub fn has_regressions(&self) -> bool {
        !self.regressions.is_empty()
    }

    /// A summary for a terminal: counts, then one line per change, then the unmatched rows.
    pub fn text(&self) -> String {
        let mut lines = vec![format!(
            "{} regression{}, {} improvement{}, {} unchanged (noise allowed: the larger spread of the two runs, at least {:.0}%)",
            self.regressions.len(),
            plural(self.regressions.len()),
            self.improvements.len(),
            plural(self.improvements.len()),
            self.unchanged,
            MIN_NOISE * 100.0,
        )];
        for (heading, changes) in [("Regressions:", &self.regressions), ("Improvements:", &self.improvements)]
        {
            if !changes.is_empty() {
                lines.push(heading.to_string());
                lines.extend(changes.iter().map(|c| {
                    format!(
                        "  {} {}: {} → {} ({:+.1}%, noise ±{:.1}%)",
                        c.scenario,
                        c.metric,
                        with_unit(&num(c.old), &c.unit),
                        with_unit(&num(c.new), &c.unit),
                        c.change * 100.0,
                        c.noise * 100.0
                    )
                }));
            }
        }
        for (heading, keys) in
            [("Only in the old run:", &self.only_old), ("Only in the new run:", &self.only_new)]
        {
            if !keys.is_empty() {
                lines.push(heading.to_string());
                lines.extend(keys.iter().map(|k| format!("  {k}")));
            }
        }
        let mut text = lines.join("\n");
        text.push('\n');
        text
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::testdata::{row, sample};
    use crate::results::Better::{Higher, Lower};

    const P99: &str = "latency_p99/h1/1000rps";

    /// A report with just `rows`.
    fn with_rows(rows: Vec<Row>) -> Report {
        Report { rows, ..sample() }
    }

    /// Three repetitions around `median` spread by `spread` of it.
    fn around(median: f64, spread: f64) -> [f64; 3] {
        [median * (1.0 - spread / 2.0), median, median * (1.0 + spread / 2.0)]
    }

    #[test]
    fn thirty_percent_slower_p99_is_a_regression() {
        let old = with_rows(vec![row("l7", P99, "µs", Lower, &around(100.0, 0.05))]);
        let new = with_rows(vec![row("l7", P99, "µs", Lower, &around(130.0, 0.05))]);
        let c = compare(&old, &new);
        assert!(c.has_regressions());
        assert_eq!(c.regressions.len(), 1);
        assert!(c.improvements.is_empty());
        assert_eq!(c.unchanged, 0);
        let r = &c.regressions[0];
        assert_eq!((r.scenario.as_str(), r.metric.as_str(), r.unit.as_str()), ("l7", P99, "µs"));
        assert_eq!((r.old, r.new), (100.0, 130.0));
        assert!((r.change - 0.30).abs() < 1e-9);
        assert!((r.noise - 0.05).abs() < 1e-9, "{}", r.noise);
        let text = c.text();
        assert!(text.contains("1 regression, 0 improvements, 0 unchanged"), "{text}");
        assert!(text.contains("l7 latency_p99/h1/1000rps: 100 µs → 130 µs (+30.0%, noise ±5.0%)"), "{text}");
    }

    #[test]
    fn two_percent_is_unchanged() {
        let old = with_rows(vec![row("l7", P99, "µs", Lower, &around(100.0, 0.01))]);
        let new = with_rows(vec![row("l7", P99, "µs", Lower, &around(102.0, 0.01))]);
        let c = compare(&old, &new);
        assert!(!c.has_regressions());
        assert!(c.improvements.is_empty());
        assert_eq!(c.unchanged, 1);
        // Also 2% better is not an improvement.
        let c = compare(&new, &old);
        assert_eq!((c.regressions.len(), c.improvements.len(), c.unchanged), (0, 0, 1));
    }

    #[test]
    fn throughput_drop_regresses_and_rise_improves() {
        let old = with_rows(vec![row("l4", "throughput/1stream", "MB/s", Higher, &[99.0, 100.0, 101.0])]);
        let new = with_rows(vec![row("l4", "throughput/1stream", "MB/s", Higher, &[79.0, 80.0, 81.0])]);
        let drop = compare(&old, &new);
        assert_eq!(drop.regressions.len(), 1);
        assert!(drop.improvements.is_empty());
        assert!((drop.regressions[0].change + 0.20).abs() < 1e-9);

        let rise = compare(&new, &old);
        assert!(!rise.has_regressions());
        assert_eq!(rise.improvements.len(), 1);
        assert!((rise.improvements[0].change - 0.25).abs() < 1e-9);
        assert!(rise.text().contains("Improvements:\n  l4 throughput/1stream: 80.0 MB/s → 100 MB/s (+25.0%"));
    }

    #[test]
    fn a_noisy_run_absorbs_a_large_change() {
        // The new run's repetitions span 40% of its median, so 30% slower is within its noise.
        let old = with_rows(vec![row("l7", P99, "µs", Lower, &around(100.0, 0.05))]);
        let new = with_rows(vec![row("l7", P99, "µs", Lower, &around(130.0, 0.40))]);
        let c = compare(&old, &new);
        assert!(!c.has_regressions());
        assert_eq!(c.unchanged, 1);
        // The same 30% with the noise in the old run instead.
        let old = with_rows(vec![row("l7", P99, "µs", Lower, &around(100.0, 0.40))]);
        let new = with_rows(vec![row("l7", P99, "µs", Lower, &around(130.0, 0.05))]);
        assert_eq!(compare(&old, &new).unchanged, 1);
        // Beyond the noise it counts again, noise reported.
        let new = with_rows(vec![row("l7", P99, "µs", Lower, &around(150.0, 0.05))]);
        let c = compare(&old, &new);
        assert_eq!(c.regressions.len(), 1);
        assert!((c.regressions[0].noise - 0.40).abs() < 1e-9);
    }

    #[test]
    fn nan_and_zero_baselines_are_unchanged() {
        let old = with_rows(vec![
            row("direct", "a", "", Lower, &[]),
            row("direct", "b", "", Lower, &[0.0, 0.0]),
            row("direct", "c", "", Lower, &[10.0]),
        ]);
        let new = with_rows(vec![
            row("direct", "a", "", Lower, &[5.0]),
            row("direct", "b", "", Lower, &[5.0]),
            row("direct", "c", "", Lower, &[f64::NAN]),
        ]);
        let c = compare(&old, &new);
        assert_eq!((c.regressions.len(), c.improvements.len(), c.unchanged), (0, 0, 3));
    }

    #[test]
    fn unmatched_rows_are_listed() {
        let old =
            with_rows(vec![row("envoy", P99, "µs", Lower, &[1.0]), row("l7", P99, "µs", Lower, &[1.0])]);
        let new =
            with_rows(vec![row("l7", P99, "µs", Lower, &[1.0]), row("l7", "rss", "MiB", Lower, &[9.0])]);
        let c = compare(&old, &new);
        assert_eq!(c.only_old, ["envoy latency_p99/h1/1000rps"]);
        assert_eq!(c.only_new, ["l7 rss"]);
        assert_eq!(c.unchanged, 1);
        let text = c.text();
        assert!(text.contains("Only in the old run:\n  envoy latency_p99/h1/1000rps\n"), "{text}");
        assert!(text.contains("Only in the new run:\n  l7 rss\n"), "{text}");
    }

    #[test]
    fn same_report_is_all_unchanged() {
        let report = sample();
        let c = compare(&report, &report);
        assert_eq!(c.unchanged, report.rows.len());
        assert!(c.regressions.is_empty() && c.improvements.is_empty());
        assert!(c.only_old.is_empty() && c.only_new.is_empty());
    }

    #[test]
    fn format_mismatch_names_both_versions() {
        let old = sample();
        let new = Report { format: old.format + 1, ..sample() };
        assert_eq!(check_format(&old, &old), Ok(()));
        let err = check_format(&old, &new);
        assert_eq!(err, Err(CompareError::Format { old: old.format, new: old.format + 1 }));
        let message = err.map_or_else(|e| e.to_string(), |()| String::new());
        assert!(message.contains(&format!("old: format {}", old.format)), "{message}");
        assert!(message.contains(&format!("new: format {}", old.format + 1)), "{message}");
    }
}
