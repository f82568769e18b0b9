//! The goals of issue 7, checked against one run's medians: each as a ratio or difference of
//! two scenarios measured in the same run, so the machine's speed cancels out.

use crate::results::Report;

/// One goal and how the run fared.
#[derive(Debug, Clone, PartialEq)]
pub struct Goal {
    /// What is aimed at, e.g. `L4 added p50 ≤ 100 µs`.
    pub goal: String,
    /// Which figure, e.g. `HTTP/1.1 at 1000 req/s`.
    pub figure: String,
    /// The run's value, formatted with its unit; `None` when an input was not measured.
    pub value: Option<String>,
    /// Whether the value meets the goal; `None` when not measured.
    pub met: Option<bool>,
}

fn median(report: &Report, scenario: &str, metric: &str) -> Option<f64> {
    report
        .rows
        .iter()
        .find(|r| r.scenario == scenario && r.metric == metric)
        .map(|r| r.value.median)
        .filter(|v| v.is_finite())
}

/// The loads present in the run (`h1/1000rps`, ...), from the direct path's p50 rows.
fn loads(report: &Report) -> Vec<String> {
    let mut out: Vec<String> = report
        .rows
        .iter()
        .filter(|r| r.scenario == "direct")
        .filter_map(|r| r.metric.strip_prefix("latency_p50/").map(str::to_string))
        .collect();
    out.dedup();
    out
}

fn load_name(load: &str) -> String {
    let (proto, rate) = load.split_once('/').unwrap_or((load, ""));
    let proto = if proto == "h2" { "HTTP/2" } else { "HTTP/1.1" };
    if rate == "saturation" {
        format!("{proto} at saturation")
    } else {
        format!("{proto} at {} req/s", rate.trim_end_matches("rps"))
    }
}

/// Every goal, in the order of the issue.
pub fn goals(report: &Report) -> Vec<Goal> {
    let mut out = Vec::new();
    let mut push = |goal: &str,
                    figure: String,
                    v: Option<f64>,
                    show: &dyn Fn(f64) -> String,
                    ok: &dyn Fn(f64) -> bool| {
        out.push(Goal { goal: goal.to_string(), figure, value: v.map(show), met: v.map(ok) });
    };
    for load in loads(report) {
        let metric = format!("latency_p50/{load}");
        let added = median(report, "l4", &metric).zip(median(report, "direct", &metric)).map(|(l, d)| l - d);
        push("L4 added p50 ≤ 100 µs", load_name(&load), added, &|v| format!("{v:.0} µs"), &|v| {
            v <= 100.0
        });
    }
    for streams in ["1stream", "8stream"] {
        let metric = format!("throughput/{streams}");
        let share = median(report, "l4", &metric).zip(median(report, "direct", &metric)).map(|(l, d)| l / d);
        let figure = format!("{} TCP stream(s)", streams.trim_end_matches("stream"));
        push("L4 throughput ≥ 60 % of direct", figure, share, &|v| format!("{:.0} %", v * 100.0), &|v| {
            v >= 0.6
        });
    }
    // The fixed rates, then the closed-loop saturation runs (h2load) where the run has them.
    let mut cpu_loads = loads(report);
    for proto in ["h1", "h2"] {
        let load = format!("{proto}/saturation");
        if median(report, "envoy", &format!("cpu_per_1k/envoy/{load}")).is_some() {
            cpu_loads.push(load);
        }
    }
    for load in cpu_loads {
        // Requests per CPU-second are the inverse of CPU per request.
        let ratio = median(report, "envoy", &format!("cpu_per_1k/envoy/{load}"))
            .zip(median(report, "waypoint", &format!("cpu_per_1k/waypoint peers/{load}")))
            .map(|(e, w)| e / w);
        push(
            "waypoint ≥ 2× Envoy's requests per CPU-second",
            load_name(&load),
            ratio,
            &|v| format!("{v:.2}×"),
            &|v| v >= 2.0,
        );
    }
    for load in loads(report) {
        let p99 = |s| median(report, s, &format!("latency_p99/{load}"));
        // Added over the direct path; at or below its noise an added latency counts as zero.
        let ratio = match (p99("waypoint"), p99("envoy"), p99("direct")) {
            (Some(w), Some(e), Some(d)) => Some((w - d).max(0.0) / (e - d).max(1.0)),
            _ => None,
        };
        push(
            "waypoint ≤ 0.5× Envoy's added p99",
            load_name(&load),
            ratio,
            &|v| format!("{v:.2}×"),
            &|v| v <= 0.5,
        );
    }
    for node in ["node-a", "node-b"] {
        // Reported in MiB; the goal is in MB.
        let mb = median(report, &format!("ztunnel {node}"), "rss_idle").map(|mib| mib * 1.048_576);
        push("ztunnel RSS idle ≤ 10 MB", format!("ztunnel {node}"), mb, &|v| format!("{v:.1} MB"), &|v| {
            v <= 10.0
        });
    }
    for node in ["node-a", "node-b"] {
        // VmRSS counts the binary's code pages, shared by every ztunnel; this is the rest.
        let mb = median(report, &format!("ztunnel {node}"), "rss_idle/anon").map(|mib| mib * 1.048_576);
        let figure = format!("ztunnel {node}: anonymous memory only (RssAnon)");
        push("ztunnel RSS idle ≤ 10 MB", figure, mb, &|v| format!("{v:.1} MB"), &|v| v <= 10.0);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::testdata::{row, sample};
    use crate::results::Better;

    #[test]
    fn goals_from_same_run_ratios() {
        let mut r = sample();
        r.rows.clear();
        let l = Better::Lower;
        for (s, m, v) in [
            ("direct", "latency_p50/h1/1000rps", 200.0),
            ("l4", "latency_p50/h1/1000rps", 350.0),
            ("direct", "latency_p99/h1/1000rps", 400.0),
            ("waypoint", "latency_p99/h1/1000rps", 500.0),
            ("envoy", "latency_p99/h1/1000rps", 800.0),
            ("waypoint", "cpu_per_1k/waypoint peers/h1/1000rps", 100.0),
            ("envoy", "cpu_per_1k/envoy/h1/1000rps", 250.0),
            ("waypoint", "cpu_per_1k/waypoint peers/h2/saturation", 40.0),
            ("envoy", "cpu_per_1k/envoy/h2/saturation", 60.0),
            ("ztunnel node-a", "rss_idle", 18.0),
        ] {
            r.rows.push(row(s, m, "x", l, &[v]));
        }
        r.rows.push(row("direct", "throughput/1stream", "Gbit/s", Better::Higher, &[10.0]));
        r.rows.push(row("l4", "throughput/1stream", "Gbit/s", Better::Higher, &[7.0]));
        let g = goals(&r);
        let find = |goal: &str, figure: &str| {
            g.iter().find(|x| x.goal.starts_with(goal) && x.figure == figure).unwrap()
        };
        let p50 = find("L4 added p50", "HTTP/1.1 at 1000 req/s");
        assert_eq!((p50.value.as_deref(), p50.met), (Some("150 µs"), Some(false)));
        let tp = find("L4 throughput", "1 TCP stream(s)");
        assert_eq!((tp.value.as_deref(), tp.met), (Some("70 %"), Some(true)));
        let cpu = find("waypoint ≥ 2×", "HTTP/1.1 at 1000 req/s");
        assert_eq!((cpu.value.as_deref(), cpu.met), (Some("2.50×"), Some(true)));
        let sat = find("waypoint ≥ 2×", "HTTP/2 at saturation");
        assert_eq!((sat.value.as_deref(), sat.met), (Some("1.50×"), Some(false)));
        assert!(
            !g.iter().any(|x| x.figure == "HTTP/1.1 at saturation"),
            "no h1 saturation rows, no goal row"
        );
        let tail = find("waypoint ≤ 0.5×", "HTTP/1.1 at 1000 req/s");
        assert_eq!((tail.value.as_deref(), tail.met), (Some("0.25×"), Some(true)));
        let rss = find("ztunnel RSS", "ztunnel node-a");
        assert_eq!(rss.met, Some(false));
        // Not measured: no value, no verdict.
        let missing = find("L4 throughput", "8 TCP stream(s)");
        assert_eq!((missing.value.as_deref(), missing.met), (None, None));
        assert_eq!(find("ztunnel RSS", "ztunnel node-b").met, None);
    }
}
