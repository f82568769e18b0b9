//! The SVG plots of `BENCHMARKS.md`: latency percentile curves on a nines scale, one per
//! (protocol, rate), and as bars with min–max whiskers: CPU time per 1,000 requests (at the
//! fixed rates, and at saturation), saturation requests per second, and RSS with many
//! connections open.
//!
//! Hand-written SVG, standalone (no fonts, scripts or links) and deterministic: coordinates are
//! printed with one decimal, and every order comes from the report.

use super::{Plot, group_of, num, scenario_order, suffix_of};
use crate::results::{Report, Row};

/// Scenario colours, by first appearance in the report (Okabe–Ito: tells apart for colour-blind
/// readers too). Past its end the colours repeat dashed.
const PALETTE: [&str; 8] =
    ["#0072b2", "#d55e00", "#009e73", "#cc79a7", "#e69f00", "#56b4e9", "#000000", "#999999"];

/// Percentile ticks of the latency plots, each with its place on the nines scale.
const NINES_TICKS: [(&str, f64); 8] = [
    ("50", std::f64::consts::LOG10_2),
    ("90", 1.0),
    ("99", 2.0),
    ("99.9", 3.0),
    ("99.99", 4.0),
    ("99.999", 5.0),
    ("99.9999", 6.0),
    ("99.99999", 7.0),
];

/// Slack for comparing positions computed in floating point (a tick at the last percentile).
const EPS: f64 = 1e-9;

/// Every plot the report has data for: latency curves, then CPU bars (fixed rates, then
/// saturation), saturation throughput, memory with connections open.
pub fn plots(report: &Report) -> Vec<Plot> {
    let order = scenario_order(report);
    let mut plots = Vec::new();

    let mut runs: Vec<(&str, u64)> = Vec::new();
    for c in &report.curves {
        if !runs.contains(&(c.proto.as_str(), c.rate)) {
            runs.push((c.proto.as_str(), c.rate));
        }
    }
    plots.extend(runs.into_iter().filter_map(|(proto, rate)| latency_plot(report, &order, proto, rate)));

    let mut cpu_groups: Vec<&str> = Vec::new();
    for row in &report.rows {
        let group = group_of(&row.metric);
        if group.starts_with("cpu_per_1k") && !cpu_groups.contains(&group) {
            cpu_groups.push(group);
        }
    }
    for group in &cpu_groups {
        let title = if *group == "cpu_per_1k" {
            "CPU time per 1,000 requests".to_string()
        } else {
            format!("CPU time per 1,000 requests ({group})")
        };
        let file = file_part(&group.replace('_', "-"));
        let fixed: Vec<&Row> =
            group_rows(report, group).filter(|r| !r.metric.ends_with(SATURATION)).collect();
        plots.extend(bar_plot(&order, fixed, &title, &format!("{file}.svg"), ""));
        let saturated: Vec<&Row> =
            group_rows(report, group).filter(|r| r.metric.ends_with(SATURATION)).collect();
        let title = format!("{title} at saturation");
        plots.extend(bar_plot(&order, saturated, &title, &format!("{file}-saturation.svg"), SATURATION));
    }
    let served: Vec<&Row> = group_rows(report, "saturation").filter(|r| r.unit == "req/s").collect();
    plots.extend(bar_plot(
        &order,
        served,
        "Saturation: 2xx responses per second (h2load)",
        "saturation.svg",
        "",
    ));
    let mut conn_groups: Vec<&str> = Vec::new();
    for row in &report.rows {
        let group = group_of(&row.metric);
        if group.starts_with("rss_") && group.ends_with("_conns") && !conn_groups.contains(&group) {
            conn_groups.push(group);
        }
    }
    for group in conn_groups {
        // With the connections open; not the before and after rows.
        let open: Vec<&Row> =
            group_rows(report, group).filter(|r| !suffix_of(&r.metric).contains('/')).collect();
        let n = group.trim_start_matches("rss_").trim_end_matches("_conns");
        let title = format!("RSS with {n} connections open");
        plots.extend(bar_plot(
            &order,
            open,
            &title,
            &format!("{}.svg", file_part(&group.replace('_', "-"))),
            "",
        ));
    }

    // Protocols or groups that differ only in characters a file name cannot hold would collide.
    let mut used: Vec<String> = Vec::new();
    for plot in &mut plots {
        if used.contains(&plot.file) {
            let stem = plot.file.trim_end_matches(".svg").to_string();
            let mut n = 2;
            while used.contains(&format!("{stem}-{n}.svg")) {
                n += 1;
            }
            plot.file = format!("{stem}-{n}.svg");
        }
        used.push(plot.file.clone());
    }
    plots
}

/// The place of percentile `p` on the nines scale, -log10(1 - p/100): 50 → 0.30, 90 → 1,
/// 99 → 2. None where it has no place: p = 100 (the maximum) is at infinity.
pub(crate) fn nines(p: f64) -> Option<f64> {
    if (0.0..100.0).contains(&p) { Some(-(1.0 - p / 100.0).log10()) } else { None }
}

/// The curves of one (protocol, rate) against each other, one line per scenario.
fn latency_plot(report: &Report, order: &[&str], proto: &str, rate: u64) -> Option<Plot> {
    // The first curve wins should a scenario repeat.
    let mut series: Vec<Series<'_>> = Vec::new();
    for c in report.curves.iter().filter(|c| c.proto == proto && c.rate == rate) {
        if series.iter().any(|s| s.scenario == c.scenario) {
            continue;
        }
        let points: Vec<(f64, f64)> = c
            .points
            .iter()
            .filter(|(_, us)| us.is_finite() && *us >= 0.0)
            .filter_map(|&(p, us)| nines(p).map(|x| (x, us)))
            .collect();
        if !points.is_empty() {
            series.push(Series { colour: colour_index(order, &c.scenario), scenario: &c.scenario, points });
        }
    }
    if series.is_empty() {
        return None;
    }

    let xs = series.iter().flat_map(|s| s.points.iter().map(|p| p.0));
    let (lo, hi) = xs.fold((NINES_TICKS[0].1, f64::NEG_INFINITY), |(lo, hi), x| (lo.min(x), hi.max(x)));
    // A single percentile still gets an axis of some width.
    let hi = if hi - lo < EPS { lo + 1.0 } else { hi };
    let max_us = series.iter().flat_map(|s| s.points.iter().map(|p| p.1)).fold(0.0, f64::max);
    let (y_top, y_step) = nice_axis(max_us);

    let title = format!("Latency percentiles, {} at {rate} req/s", proto_name(proto));
    let (width, height) = (720.0, 420.0);
    let area = Area { left: 70.0, right: 570.0, top: 44.0, bottom: 360.0 };
    let px = |x: f64| area.left + (x - lo) / (hi - lo) * (area.right - area.left);
    let py = |us: f64| area.bottom - us.clamp(0.0, y_top) / y_top * (area.bottom - area.top);

    let mut svg = open(width, height, &title);
    for v in ticks(y_top, y_step) {
        let y = py(v);
        svg.push(grid_line(area.left, y, area.right, y));
        svg.push(text(area.left - 6.0, y + 4.0, "end", &fixed_tick(v, y_step)));
    }
    for (label, x) in NINES_TICKS.iter().filter(|(_, x)| *x >= lo - EPS && *x <= hi + EPS) {
        let x = px(*x);
        svg.push(grid_line(x, area.top, x, area.bottom));
        svg.push(text(x, area.bottom + 18.0, "middle", label));
    }
    svg.push(axes(&area));
    svg.push(text((area.left + area.right) / 2.0, height - 14.0, "middle", "Percentile (%)"));
    svg.push(y_title(16.0, (area.top + area.bottom) / 2.0, "Latency (µs)"));

    for (i, Series { colour, scenario, points }) in series.iter().enumerate() {
        let stroke = stroke(*colour);
        let coords: Vec<String> =
            points.iter().map(|&(x, us)| format!("{:.1},{:.1}", px(x), py(us))).collect();
        svg.push(format!(
            r#"<polyline fill="none" {stroke} stroke-width="2" stroke-linejoin="round" points="{}"/>"#,
            coords.join(" ")
        ));
        // A lone point draws no line: mark it.
        if let [(x, us)] = points.as_slice() {
            svg.push(format!(
                r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{}"/>"#,
                px(*x),
                py(*us),
                PALETTE[colour % PALETTE.len()]
            ));
        }
        let y = area.top + 10.0 + 20.0 * i as f64;
        svg.push(format!(
            r#"<line x1="{:.1}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" {stroke} stroke-width="2"/>"#,
            area.right + 16.0,
            area.right + 40.0
        ));
        svg.push(text(area.right + 46.0, y + 4.0, "start", scenario));
    }

    Some(Plot { file: format!("latency-{}-{rate}rps.svg", file_part(proto)), title, svg: close(svg) })
}

/// Suffix of the CPU rows of the saturation runs.
const SATURATION: &str = "/saturation";

/// The rows of a metric group with a value.
fn group_rows<'a>(report: &'a Report, group: &'a str) -> impl Iterator<Item = &'a Row> + 'a {
    report.rows.iter().filter(move |r| group_of(&r.metric) == group && r.value.median.is_finite())
}

/// One horizontal bar per row; rows of the same metric suffix (a load, a process) stand
/// together so the scenarios compare at a glance. Bars are labelled with the scenario and the
/// suffix less `trim`.
fn bar_plot(order: &[&str], rows: Vec<&Row>, title: &str, file: &str, trim: &str) -> Option<Plot> {
    if rows.is_empty() {
        return None;
    }
    let mut suffixes: Vec<&str> = Vec::new();
    for r in &rows {
        if !suffixes.contains(&suffix_of(&r.metric)) {
            suffixes.push(suffix_of(&r.metric));
        }
    }
    let mut bars = rows;
    // Stable: a repeated (scenario, metric) keeps report order.
    bars.sort_by_key(|r| {
        (suffixes.iter().position(|s| *s == suffix_of(&r.metric)), colour_index(order, &r.scenario))
    });

    let max =
        bars.iter().flat_map(|r| [r.value.median, r.value.max]).filter(|v| v.is_finite()).fold(0.0, f64::max);
    let (x_top, x_step) = nice_axis(max);
    let unit = bars[0].unit.as_str();

    let (bar_h, gap) = (18.0, 10.0);
    let area =
        Area { left: 210.0, right: 630.0, top: 44.0, bottom: 44.0 + gap + (bar_h + gap) * bars.len() as f64 };
    let (width, height) = (720.0, area.bottom + 50.0);
    let px = |v: f64| area.left + v.clamp(0.0, x_top) / x_top * (area.right - area.left);

    let mut svg = open(width, height, title);
    for v in ticks(x_top, x_step) {
        let x = px(v);
        svg.push(grid_line(x, area.top, x, area.bottom));
        svg.push(text(x, area.bottom + 18.0, "middle", &fixed_tick(v, x_step)));
    }
    for (i, r) in bars.iter().enumerate() {
        let y = area.top + gap + (bar_h + gap) * i as f64;
        let mid = y + bar_h / 2.0;
        let colour = PALETTE[colour_index(order, &r.scenario) % PALETTE.len()];
        let suffix = suffix_of(&r.metric);
        let suffix = suffix.strip_suffix(trim).unwrap_or(suffix);
        // `envoy envoy` says it twice.
        let label =
            if suffix == r.scenario { suffix.to_string() } else { format!("{} {suffix}", r.scenario) };
        svg.push(text(area.left - 8.0, mid + 4.0, "end", label.trim_end()));
        svg.push(format!(
            r#"<rect x="{:.1}" y="{y:.1}" width="{:.1}" height="{bar_h:.1}" fill="{colour}"/>"#,
            area.left,
            px(r.value.median) - area.left
        ));
        let mut end = px(r.value.median);
        if r.value.min.is_finite() && r.value.max.is_finite() {
            let (x1, x2) = (px(r.value.min), px(r.value.max));
            let (c1, c2) = (mid - bar_h * 0.3, mid + bar_h * 0.3);
            svg.push(format!(
                r##"<path d="M{x1:.1},{mid:.1}H{x2:.1}M{x1:.1},{c1:.1}V{c2:.1}M{x2:.1},{c1:.1}V{c2:.1}" stroke="#333333" stroke-width="1.5" fill="none"/>"##
            ));
            end = end.max(x2);
        }
        svg.push(text(end + 6.0, mid + 4.0, "start", &num(r.value.median)));
    }
    svg.push(axes(&area));
    let axis_title = if unit.is_empty() { "per 1,000 requests".to_string() } else { unit.to_string() };
    svg.push(text((area.left + area.right) / 2.0, height - 14.0, "middle", &axis_title));

    Some(Plot { file: file.to_string(), title: title.to_string(), svg: close(svg) })
}

/// One scenario's line in a latency plot.
#[derive(Debug)]
struct Series<'a> {
    /// Index into the report-wide scenario order (see [`colour_index`]).
    colour: usize,
    scenario: &'a str,
    /// (place on the nines scale, latency in µs).
    points: Vec<(f64, f64)>,
}

/// The plotting area inside the margins, in SVG units.
#[derive(Debug, Clone, Copy)]
struct Area {
    left: f64,
    right: f64,
    top: f64,
    bottom: f64,
}

/// The document's start: size, background (plots stay legible on dark pages) and title.
fn open(width: f64, height: f64, title: &str) -> Vec<String> {
    vec![
        format!(
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" viewBox="0 0 {width:.0} {height:.0}" font-family="sans-serif" font-size="12">"#
        ),
        format!("<title>{}</title>", xml(title)),
        r##"<rect width="100%" height="100%" fill="#ffffff"/>"##.to_string(),
        format!(
            r#"<text x="{:.1}" y="24" text-anchor="middle" font-size="15">{}</text>"#,
            width / 2.0,
            xml(title)
        ),
    ]
}

fn close(mut svg: Vec<String>) -> String {
    svg.push("</svg>".to_string());
    let mut doc = svg.join("\n");
    doc.push('\n');
    doc
}

fn text(x: f64, y: f64, anchor: &str, s: &str) -> String {
    format!(r#"<text x="{x:.1}" y="{y:.1}" text-anchor="{anchor}">{}</text>"#, xml(s))
}

fn y_title(x: f64, y: f64, s: &str) -> String {
    format!(
        r#"<text x="{x:.1}" y="{y:.1}" text-anchor="middle" transform="rotate(-90 {x:.1} {y:.1})">{}</text>"#,
        xml(s)
    )
}

fn grid_line(x1: f64, y1: f64, x2: f64, y2: f64) -> String {
    format!(r##"<line x1="{x1:.1}" y1="{y1:.1}" x2="{x2:.1}" y2="{y2:.1}" stroke="#dddddd"/>"##)
}

fn axes(a: &Area) -> String {
    format!(
        r##"<path d="M{:.1},{:.1}V{:.1}H{:.1}" stroke="#333333" fill="none"/>"##,
        a.left, a.top, a.bottom, a.right
    )
}

/// Stroke attributes of a scenario's line: its colour, dashed once the palette has wrapped.
fn stroke(colour: usize) -> String {
    let dash = if colour >= PALETTE.len() { r#" stroke-dasharray="6 3""# } else { "" };
    format!(r#"stroke="{}"{dash}"#, PALETTE[colour % PALETTE.len()])
}

/// A scenario's colour: its place in the report-wide order.
fn colour_index(order: &[&str], scenario: &str) -> usize {
    order.iter().position(|s| *s == scenario).unwrap_or(0)
}

/// An axis from 0 to a round top over `max`, with a round step (1, 2 or 5 × 10ⁿ), about five ticks.
fn nice_axis(max: f64) -> (f64, f64) {
    let max = if max.is_finite() && max > 0.0 { max } else { 1.0 };
    let raw = max / 5.0;
    let magnitude = 10f64.powf(raw.log10().floor());
    let norm = raw / magnitude;
    let step = magnitude
        * if norm <= 1.0 {
            1.0
        } else if norm <= 2.0 {
            2.0
        } else if norm <= 5.0 {
            5.0
        } else {
            10.0
        };
    ((max / step).ceil() * step, step)
}

/// The tick values 0, step, ..., top; multiplied rather than summed so no error creeps in.
fn ticks(top: f64, step: f64) -> impl Iterator<Item = f64> {
    let n = (top / step).round() as usize;
    (0..=n).map(move |i| i as f64 * step)
}

/// A tick label with just the decimals its step needs.
fn fixed_tick(v: f64, step: f64) -> String {
    let decimals = if step >= 1.0 { 0 } else { (-step.log10().floor()) as usize };
    format!("{v:.decimals$}")
}

fn proto_name(proto: &str) -> &str {
    match proto {
        "h1" => "HTTP/1.1",
        "h2" => "HTTP/2",
        "h3" => "HTTP/3",
        other => other,
    }
}

/// A piece of a file name: letters, digits, `.`, `-` and `_`; anything else becomes `-`.
fn file_part(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') { c } else { '-' })
        .collect()
}

/// Text for SVG content and attributes. Control characters are not allowed in XML 1.0 at all.
fn xml(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if c.is_control() || c == '\u{fffe}' || c == '\u{ffff}' => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::testdata::{row, sample};
    use crate::results::Better;

    /// Tags nest and close, attribute quotes pair, `&` starts an entity: enough of well-formed
    /// XML to catch what hand-written SVG gets wrong.
    fn assert_well_formed(svg: &str) {
        let mut stack: Vec<&str> = Vec::new();
        let mut rest = svg;
        while let Some(start) = rest.find('<') {
            let text = &rest[..start];
            assert!(!text.contains('>'), "stray > in {text:?}");
            let Some(end) = rest[start..].find('>') else { panic!("unclosed tag in {rest:?}") };
            let tag = &rest[start + 1..start + end];
            assert_eq!(tag.matches('"').count() % 2, 0, "unbalanced quotes in {tag:?}");
            if let Some(name) = tag.strip_prefix('/') {
                assert_eq!(stack.pop(), Some(name), "mismatched </{name}>");
            } else if !tag.ends_with('/') {
                stack.push(tag.split_whitespace().next().unwrap_or(""));
            }
            rest = &rest[start + end + 1..];
        }
        assert!(stack.is_empty(), "unclosed {stack:?}");
        for (i, _) in svg.match_indices('&') {
            let entity = &svg[i..];
            assert!(
                ["&amp;", "&lt;", "&gt;", "&quot;"].iter().any(|e| entity.starts_with(e)),
                "bare & at {i}"
            );
        }
    }

    #[test]
    fn nines_scale() {
        let x50 = nines(50.0).unwrap_or(f64::NAN);
        assert!((x50 - 0.301).abs() < 1e-3, "{x50}");
        assert!((nines(90.0).unwrap_or(f64::NAN) - 1.0).abs() < 1e-9);
        assert!((nines(99.0).unwrap_or(f64::NAN) - 2.0).abs() < 1e-9);
        assert!((nines(99.9).unwrap_or(f64::NAN) - 3.0).abs() < 1e-9);
        assert_eq!(nines(0.0), Some(0.0));
        assert_eq!(nines(100.0), None);
        assert_eq!(nines(f64::NAN), None);
        assert_eq!(nines(-1.0), None);
    }

    #[test]
    fn latency_plot_per_proto_and_rate() {
        let plots = plots(&sample());
        let files: Vec<&str> = plots.iter().map(|p| p.file.as_str()).collect();
        assert_eq!(files, ["latency-h1-1000rps.svg", "latency-h2-1000rps.svg", "cpu-per-1k.svg"]);
        let h1 = &plots[0];
        assert_eq!(h1.title, "Latency percentiles, HTTP/1.1 at 1000 req/s");
        assert!(h1.svg.starts_with("<svg"));
        assert!(h1.svg.contains(r#"xmlns="http://www.w3.org/2000/svg""#));
        assert!(h1.svg.contains("viewBox=") && h1.svg.contains("width=") && h1.svg.contains("height="));
        assert_eq!(h1.svg.matches("<polyline").count(), 3, "one line per scenario");
        assert_eq!(plots[1].svg.matches("<polyline").count(), 1);
        for name in ["direct", "l4", "l7"] {
            assert!(h1.svg.contains(&format!(">{name}</text>")), "legend entry {name}");
        }
        // Distinct colours for the three scenarios.
        for colour in &PALETTE[..3] {
            assert!(h1.svg.contains(&format!(r#"<polyline fill="none" stroke="{colour}""#)));
        }
        for plot in &plots {
            assert!(!plot.svg.contains("NaN") && !plot.svg.contains("inf"), "{}", plot.svg);
            assert_eq!(plot.svg.matches("http").count(), 1, "no external resources, only the xmlns");
            assert_well_formed(&plot.svg);
        }
    }

    #[test]
    fn p100_is_left_out_and_ticks_stop_at_the_largest_percentile() {
        let plots = plots(&sample());
        let h1 = &plots[0].svg;
        let Some(line) = h1.lines().find(|l| l.starts_with("<polyline")) else { panic!("no polyline") };
        // Five points in the curve, p = 100 dropped.
        let Some(points) = line.split("points=\"").nth(1) else { panic!("no points") };
        assert_eq!(points.split_whitespace().count(), 4, "{line}");
        for tick in ["50", "90", "99", "99.9"] {
            assert!(h1.contains(&format!(">{tick}</text>")), "tick {tick}");
        }
        assert!(!h1.contains(">99.99</text>"));
    }

    #[test]
    fn y_axis_has_round_ticks() {
        assert_eq!(nice_axis(156.0), (200.0, 50.0));
        assert_eq!(nice_axis(100.0), (100.0, 20.0));
        assert_eq!(nice_axis(0.0), (1.0, 0.2));
        assert_eq!(nice_axis(f64::NAN), (1.0, 0.2));
        assert_eq!(fixed_tick(0.4, 0.2), "0.4");
        assert_eq!(fixed_tick(150.0, 50.0), "150");
        assert_eq!(ticks(200.0, 50.0).collect::<Vec<_>>(), [0.0, 50.0, 100.0, 150.0, 200.0]);
        // The h1 plot: l7 peaks at 120 × 1.3 = 156 µs below p100, so the axis tops at 200.
        let h1 = &plots(&sample())[0].svg;
        assert!(h1.contains(">200</text>") && h1.contains(">150</text>") && !h1.contains(">250</text>"));
    }

    #[test]
    fn cpu_bars_with_whiskers() {
        let plots = plots(&sample());
        let Some(cpu) = plots.iter().find(|p| p.file == "cpu-per-1k.svg") else { panic!("no cpu plot") };
        assert_eq!(cpu.title, "CPU time per 1,000 requests");
        // One bar per row, plus the background rect.
        assert_eq!(cpu.svg.matches("<rect").count(), 4);
        assert_eq!(cpu.svg.matches("<path d=\"M").count(), 4, "three whiskers and the axes");
        for label in ["direct h1/1000rps", "l4 h1/1000rps", "l7 h1/1000rps"] {
            assert!(cpu.svg.contains(&format!(">{label}</text>")), "{label}");
        }
        assert!(cpu.svg.contains(">ms CPU</text>"));
        assert!(cpu.svg.contains(">4.50</text>"), "median value label");
    }

    #[test]
    fn saturation_and_connection_bars() {
        let mut report = sample();
        let (h, l) = (Better::Higher, Better::Lower);
        report.rows.extend([
            row("l4", "cpu_per_1k/ztunnel node-a/h1/saturation", "ms CPU", l, &[9.0]),
            row("l4", "cpu_per_1k/h2load/h1/saturation", "ms CPU", l, &[20.0]),
            row("direct", "saturation/h1", "req/s", h, &[30_000.0, 31_000.0]),
            row("direct", "saturation/h1/failed", "req", l, &[0.0]),
            row("l4", "saturation/h1", "req/s", h, &[12_000.0]),
            row("l4", "rss_10k_conns/ztunnel node-a", "MiB", l, &[80.0]),
            row("l4", "rss_10k_conns/ztunnel node-a/before", "MiB", l, &[10.0]),
            row("l4", "rss_10k_conns/ztunnel node-a/after_close", "MiB", l, &[20.0]),
            row("l4", "kib_per_conn/ztunnel node-a/10k_conns", "KiB", l, &[7.0]),
        ]);
        let plots = plots(&report);
        let get = |file: &str| plots.iter().find(|p| p.file == file).unwrap_or_else(|| panic!("no {file}"));
        // The fixed-rate CPU plot keeps its three bars; saturation CPU has its own.
        assert_eq!(get("cpu-per-1k.svg").svg.matches("<rect").count(), 4);
        let cpu = get("cpu-per-1k-saturation.svg");
        assert_eq!(cpu.title, "CPU time per 1,000 requests at saturation");
        assert!(cpu.svg.contains(">l4 ztunnel node-a/h1</text>") && cpu.svg.contains(">l4 h2load/h1</text>"));
        let sat = get("saturation.svg");
        assert_eq!(sat.svg.matches("<rect").count(), 3, "two req/s bars, not the failed count");
        assert!(sat.svg.contains(">direct h1</text>") && sat.svg.contains(">req/s</text>"));
        let rss = get("rss-10k-conns.svg");
        assert_eq!(rss.title, "RSS with 10k connections open");
        assert_eq!(rss.svg.matches("<rect").count(), 2, "only the row with the connections open");
        assert!(rss.svg.contains(">l4 ztunnel node-a</text>"));
        for p in &plots {
            assert_well_formed(&p.svg);
        }
    }

    #[test]
    fn empty_input_gives_no_plots() {
        let mut report = sample();
        report.curves.clear();
        report.rows.retain(|r| !r.metric.starts_with("cpu_per_1k"));
        assert!(plots(&report).is_empty());
        // Curves made only of p = 100 or NaN have nothing to draw either.
        let mut report = sample();
        for c in &mut report.curves {
            c.points = vec![(100.0, 5.0), (50.0, f64::NAN)];
        }
        report.rows.clear();
        assert!(plots(&report).is_empty());
    }

    #[test]
    fn text_is_escaped_and_files_are_safe() {
        let mut report = sample();
        report.curves.truncate(1);
        report.curves[0].proto = "a<b>&c/d".to_string();
        report.curves[0].scenario = "x&y".to_string();
        report.rows = vec![row("<s>", "cpu_per_1k/a&b", "ms CPU", Better::Lower, &[1.0])];
        let plots = plots(&report);
        assert_eq!(plots[0].file, "latency-a-b--c-d-1000rps.svg");
        assert!(plots[0].svg.contains("a&lt;b&gt;&amp;c/d") && plots[0].svg.contains(">x&amp;y</text>"));
        assert!(plots[1].svg.contains(">&lt;s&gt; a&amp;b</text>"));
        for plot in &plots {
            assert_well_formed(&plot.svg);
        }
        assert_eq!(xml("a\u{1}b"), "a\u{fffd}b");
    }

    #[test]
    fn deterministic_and_file_names_unique() {
        let mut report = sample();
        assert_eq!(
            plots(&report).iter().map(|p| &p.svg).collect::<Vec<_>>(),
            plots(&report.clone()).iter().map(|p| &p.svg).collect::<Vec<_>>()
        );
        report.curves[0].proto = "h 1".to_string();
        report.curves[1].proto = "h/1".to_string();
        let files: Vec<String> = plots(&report).into_iter().map(|p| p.file).collect();
        assert_eq!(files[..2], ["latency-h-1-1000rps.svg", "latency-h-1-1000rps-2.svg"]);
    }
}
