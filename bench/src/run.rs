//! One run of the harness over the lab: every measurement of every scenario, repeated, into a
//! [`Report`]. Scenarios are interleaved within each repetition, so a burst of outside load
//! falls on all of them alike.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, bail};
use mesh_e2e::lab::Lab;
use serde_json::Value;

use crate::lab::{self, MeshProc, OnPath, Scenario};
use crate::load::{Proto, RateResult};
use crate::peers::{self, Peer};
use crate::results::{Better, Curve, Machine, Report, Row, Stat};

/// Durations and counts of a run.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Repetitions of each measurement (count).
    pub reps: usize,
    /// Measured window of a fixed-rate run (duration).
    pub latency: Duration,
    /// Unrecorded load before each fixed-rate run (duration).
    pub warmup: Duration,
    /// Offered rates of the latency runs (requests per second).
    pub rates: Vec<u64>,
    /// Length of a throughput or connection-rate run (duration).
    pub transfer: Duration,
    /// Request and response body size (bytes).
    pub body: usize,
}

impl Plan {
    pub fn new(quick: bool, reps: Option<usize>) -> Plan {
        Plan {
            reps: reps.unwrap_or(if quick { 1 } else { 3 }),
            latency: Duration::from_secs(if quick { 2 } else { 10 }),
            warmup: Duration::from_secs(1),
            rates: if quick { vec![1000] } else { vec![1000, 10_000] },
            transfer: Duration::from_secs(if quick { 2 } else { 5 }),
            body: 1024,
        }
    }
}

/// Rows in report order: (position of the scenario, scenario, metric).
type RowKey = (usize, String, String);

/// Values collected per (scenario, metric) over the repetitions.
#[derive(Debug, Default)]
struct Collect {
    rows: BTreeMap<RowKey, (String, Better, Vec<f64>)>,
    rate_runs: BTreeMap<(usize, String), Vec<RateResult>>,
    order: Vec<String>,
}

impl Collect {
    fn add(&mut self, scenario: &str, metric: String, unit: &str, better: Better, v: f64) {
        let pos = match self.order.iter().position(|s| s == scenario) {
            Some(p) => p,
            None => {
                self.order.push(scenario.to_string());
                self.order.len() - 1
            }
        };
        self.rows
            .entry((pos, scenario.to_string(), metric))
            .or_insert_with(|| (unit.to_string(), better, Vec::new()))
            .2
            .push(v);
    }
}

/// Runs the plan on a lab that is up.
pub fn run(lab: &Lab, plan: &Plan, command: String) -> anyhow::Result<Report> {
    let started = utc_now();
    let mut procs = lab::mesh_procs(lab)?;
    let mut c = Collect::default();
    let mut skipped = Vec::new();

    // The scenarios: the mesh's, then the plain L7 hops (ours, then each peer that starts).
    let mut scenarios = lab::mesh_scenarios();
    scenarios.push(lab::waypoint_peer(lab)?);
    let dir = std::env::temp_dir().join(format!("mesh-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    for peer in Peer::ALL {
        match peer.binary() {
            Ok(_) => {
                let running = peers::start(lab, peer, &dir)?;
                procs.push(MeshProc { label: peer.name().to_string(), pid: running.pid });
                scenarios.push(lab::peer_scenario(&running));
            }
            Err(why) => skipped.push(format!("{}: {why}", peer.name())),
        }
    }
    for s in &scenarios {
        c.order.push(s.name.to_string());
    }

    // Idle memory: the lab is up and configured, nothing has flowed yet.
    for p in &procs {
        c.add(&p.label, "rss_idle".into(), "MiB", Better::Lower, lab::rss_mib(p.pid)?);
    }

    skipped.push(
        "l7: TCP throughput and connection rate (iperf3 between its pods fails; HTTP only); \
         waypoint, envoy, nginx, haproxy: HTTP only (L7 hops)"
            .to_string(),
    );
    let iperf = which("iperf3");
    if iperf.is_none() {
        skipped.push("throughput: iperf3 is not installed (`apt-get install iperf3`)".to_string());
    } else {
        for (server, _) in scenarios.iter().filter_map(|s| s.raw_tcp) {
            // One server per scenario for the whole run; `-D` daemonises it inside the pod.
            lab::exec(lab, server, &["iperf3", "-s", "-D", "-p", "5201"])?;
        }
        // The daemon is up once its port answers; give it its first accept.
        std::thread::sleep(Duration::from_millis(300));
    }

    // The first seconds after `lab up` stall requests by up to ~0.4 s (seen on the direct
    // path too: the machine is busy with what the lab just started); one unrecorded run per
    // scenario lets that pass and warms every connection pool on the way.
    for s in &scenarios {
        progress(&format!("[settle] {}", s.name));
        let settle = Plan { latency: Duration::from_secs(2), ..plan.clone() };
        for proto in [Proto::H1, Proto::H2] {
            fixed_rate(lab, s, proto, 1000, &settle)?;
        }
    }

    for rep in 0..plan.reps {
        for s in &scenarios {
            progress(&format!("[rep {}/{}] {}", rep + 1, plan.reps, s.name));
            let mine = procs_of(s, &procs);
            for proto in [Proto::H1, Proto::H2] {
                for &rate in &plan.rates {
                    let before: Vec<f64> =
                        mine.iter().map(|p| lab::cpu_seconds(p.pid)).collect::<Result<_, _>>()?;
                    let r = fixed_rate(lab, s, proto, rate, plan)?;
                    let tag = format!("{}/{}rps", proto.as_str(), rate);
                    for (p, b) in mine.iter().zip(&before) {
                        let cpu = lab::cpu_seconds(p.pid)? - b;
                        // Every request of the run, the warm-up's too, was on the CPU clock.
                        let requests = r.sent as f64 + rate as f64 * plan.warmup.as_secs_f64();
                        if r.ok > 0 {
                            // CPU milliseconds per 1,000 requests.
                            let v = cpu * 1e3 / (requests / 1e3);
                            c.add(
                                s.name,
                                format!("cpu_per_1k/{}/{tag}", p.label),
                                "ms CPU",
                                Better::Lower,
                                v,
                            );
                        }
                        c.add(&p.label, "rss_load".into(), "MiB", Better::Lower, lab::rss_mib(p.pid)?);
                    }
                    for (name, v) in [
                        ("latency_p50", r.p50_us),
                        ("latency_p90", r.p90_us),
                        ("latency_p99", r.p99_us),
                        ("latency_p999", r.p999_us),
                    ] {
                        c.add(s.name, format!("{name}/{tag}"), "µs", Better::Lower, v);
                    }
                    c.add(s.name, format!("achieved/{tag}"), "req/s", Better::Higher, r.achieved_rps);
                    c.add(s.name, format!("errors/{tag}"), "req", Better::Lower, r.errors as f64);
                    c.rate_runs
                        .entry((rate as usize, format!("{}\t{}", s.name, proto.as_str())))
                        .or_default()
                        .push(r);
                }
            }
            let Some((_, server_ip)) = s.raw_tcp else {
                continue;
            };
            if iperf.is_some() {
                for streams in [1, 8] {
                    let gbps = iperf3(lab, s.client, server_ip, streams, plan.transfer)?;
                    c.add(s.name, format!("throughput/{streams}stream"), "Gbit/s", Better::Higher, gbps);
                }
            }
            let cr = connrate(lab, s.client, server_ip, plan.transfer)?;
            c.add(s.name, "connections_per_s/4workers".into(), "conn/s", Better::Higher, cr);
        }
    }

    let mut curves = Vec::new();
    for ((rate, key), runs) in &c.rate_runs {
        let (scenario, proto) = key.split_once('\t').context("curve key")?;
        let merged = crate::load::merge(runs)?;
        curves.push(Curve {
            scenario: scenario.into(),
            proto: proto.into(),
            rate: *rate as u64,
            points: merged.curve,
        });
    }
    let rows = c
        .rows
        .into_iter()
        .map(|((_, scenario, metric), (unit, better, values))| Row {
            scenario,
            metric,
            unit,
            better,
            value: Stat::of(values),
        })
        .collect();
    Ok(Report {
        format: crate::results::FORMAT,
        machine: machine(),
        commit: commit(),
        started,
        reps: plan.reps,
        command,
        rows,
        curves,
        skipped,
    })
}

/// A progress line for whoever watches the run (the report goes to files).
#[allow(clippy::print_stderr)]
fn progress(line: &str) {
    eprintln!("{line}");
}

/// The processes on a scenario's path.
fn procs_of<'a>(s: &Scenario, procs: &'a [MeshProc]) -> Vec<&'a MeshProc> {
    procs
        .iter()
        .filter(|p| match &s.on_path {
            OnPath::Nothing => false,
            OnPath::Ztunnels => p.label.starts_with("ztunnel "),
            OnPath::ZtunnelsAndWaypoint(ns) => {
                p.label.starts_with("ztunnel ") || p.label == format!("waypoint {ns}")
            }
            OnPath::Waypoint(ns) => p.label == format!("waypoint {ns}"),
            OnPath::Pid(_, pid) => p.pid == *pid,
        })
        .collect()
}

/// A fixed-rate run from the scenario's client pod (this binary's `load` subcommand).
fn fixed_rate(lab: &Lab, s: &Scenario, proto: Proto, rate: u64, plan: &Plan) -> anyhow::Result<RateResult> {
    let exe = std::env::current_exe().context("current_exe")?;
    let exe = exe.to_str().context("binary path is not UTF-8")?;
    // `/api/...` takes the second of the three routes: the first is tried and missed.
    let path = format!("/api/items?size={}", plan.body);
    let (rate_s, secs, warm, body) = (
        rate.to_string(),
        plan.latency.as_secs_f64().to_string(),
        plan.warmup.as_secs_f64().to_string(),
        plan.body.to_string(),
    );
    let conns = if proto == Proto::H1 { "64" } else { "1" };
    let out = lab::exec(
        lab,
        s.client,
        &[
            exe,
            "load",
            "--target",
            if proto == Proto::H1 { &s.h1_target } else { &s.h2_target },
            "--host",
            s.host,
            "--path",
            &path,
            "--proto",
            proto.as_str(),
            "--rate",
            &rate_s,
            "--seconds",
            &secs,
            "--warmup",
            &warm,
            "--body",
            &body,
            "--connections",
            conns,
        ],
    )?;
    serde_json::from_str(out.trim()).with_context(|| format!("load in {}: not a result: {out}", s.client))
}

/// iperf3 from the client pod to the server: received Gbit/s.
fn iperf3(lab: &Lab, client: &str, server_ip: &str, streams: usize, dur: Duration) -> anyhow::Result<f64> {
    let (p, t) = (streams.to_string(), format!("{:.0}", dur.as_secs_f64().max(1.0)));
    let out = lab::exec(lab, client, &["iperf3", "-c", server_ip, "-p", "5201", "-J", "-P", &p, "-t", &t])?;
    let v: Value = serde_json::from_str(&out).with_context(|| format!("iperf3 in {client}: not JSON"))?;
    let bps = v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .with_context(|| format!("iperf3 in {client}: no end.sum_received: {}", v["error"]))?;
    Ok(bps / 1e9)
}

/// New connections per second (connect, one echo round trip, close) from 4 workers.
fn connrate(lab: &Lab, client: &str, server_ip: &str, dur: Duration) -> anyhow::Result<f64> {
    let addr = format!("{server_ip}:8080");
    let v = lab.probe_args(client, &["connrate", &addr, &format!("{}", dur.as_secs_f64()), "4"]);
    if v["ok"] != true {
        bail!("connrate in {client}: {v}");
    }
    v["per_s"].as_f64().with_context(|| format!("connrate in {client}: no per_s: {v}"))
}

/// `bin` on PATH.
pub(crate) fn which(bin: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| std::path::Path::new(d).join(bin))
        .find(|p| p.is_file())
}

fn machine() -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu_model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or_else(|| "unknown".to_string(), |(_, m)| m.trim().to_string());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kib = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(f64::NAN);
    Machine {
        cpu_model,
        cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_string(),
        mem_gib: mem_kib / 1024.0 / 1024.0,
    }
}

fn commit() -> String {
    std::process::Command::new("git")
        .args(["describe", "--always", "--dirty"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map_or_else(|| "unknown".to_string(), |o| String::from_utf8_lossy(&o.stdout).trim().to_string())
}

/// Now as RFC 3339 UTC, to the second.
fn utc_now() -> String {
    let now = time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .unwrap_or_else(|_| time::OffsetDateTime::now_utc());
    now.format(&time::format_description::well_known::Rfc3339).unwrap_or_else(|_| "unknown".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_dates() {
        let s = utc_now();
        assert_eq!(s.len(), 20, "{s}");
        assert!(s.starts_with("20") && s.ends_with('Z'), "{s}");
        assert!(
            time::OffsetDateTime::parse(&s, &time::format_description::well_known::Rfc3339).is_ok(),
            "{s}"
        );
    }

    #[test]
    fn scenario_processes() {
        let procs = vec![
            MeshProc { label: "ztunnel node-a".into(), pid: 1 },
            MeshProc { label: "ztunnel node-b".into(), pid: 2 },
            MeshProc { label: "waypoint l7".into(), pid: 3 },
            MeshProc { label: "waypoint peers".into(), pid: 4 },
            MeshProc { label: "envoy".into(), pid: 5 },
        ];
        let names = |s: &Scenario| procs_of(s, &procs).iter().map(|p| p.label.clone()).collect::<Vec<_>>();
        let mesh = lab::mesh_scenarios();
        assert!(names(&mesh[0]).is_empty());
        assert_eq!(names(&mesh[1]), ["ztunnel node-a", "ztunnel node-b"]);
        assert_eq!(names(&mesh[2]), ["ztunnel node-a", "ztunnel node-b", "waypoint l7"]);
        let plain = Scenario { on_path: OnPath::Waypoint("peers"), ..mesh[0].clone() };
        assert_eq!(names(&plain), ["waypoint peers"]);
        let envoy = Scenario { on_path: OnPath::Pid("envoy".into(), 5), ..mesh[0].clone() };
        assert_eq!(names(&envoy), ["envoy"]);
    }
}
