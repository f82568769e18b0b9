//! One run of the harness over the lab: every measurement of every scenario, repeated, into a
//! [`Report`]. Scenarios are interleaved within each repetition, so a burst of outside load
//! falls on all of them alike.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, bail};
use mesh_e2e::lab::Lab;
use serde_json::Value;

use crate::hold::{self, Holder};
use crate::lab::{self, MeshProc, OnPath, Scenario};
use crate::load::{Proto, RateResult};
use crate::peers::{self, Peer};
use crate::results::{Better, Curve, Machine, Report, Row, Stat};
use crate::saturation;

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
    /// Measured window of a saturation run (h2load `-D`, whole seconds), per protocol,
    /// scenario and repetition.
    pub saturation: Duration,
    /// h2load's warm-up before it (`--warm-up-time`, whole seconds).
    pub saturation_warmup: Duration,
    /// Connections held open at once in the open-connections phase (once per run).
    pub hold_connections: usize,
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
            saturation: Duration::from_secs(if quick { 2 } else { 5 }),
            saturation_warmup: Duration::from_secs(1),
            hold_connections: if quick { 1000 } else { 10_000 },
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
    // Before anything runs: a run without saturation figures is not a run of this harness.
    saturation::binary()?;
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
    // h2load posts this, as the fixed-rate runs post `plan.body` bytes.
    let body_file = dir.join("body");
    std::fs::write(&body_file, vec![b'x'; plan.body])
        .with_context(|| format!("writing {}", body_file.display()))?;

    // Idle memory: the lab is up and configured, nothing has flowed yet.
    for p in &procs {
        c.add(&p.label, "rss_idle".into(), "MiB", Better::Lower, lab::rss_mib(p.pid)?);
        c.add(&p.label, "rss_idle/anon".into(), "MiB", Better::Lower, lab::rss_anon_mib(p.pid)?);
    }

    skipped.push(
        "l7: TCP throughput and connection rate (pod-addressed TCP skips a service waypoint, as in \
         Istio, so it would measure the l4 path; HTTP only); \
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
            if let Some((_, server_ip)) = s.raw_tcp {
                if iperf.is_some() {
                    for streams in [1, 8] {
                        let gbps = iperf3(lab, s.client, server_ip, streams, plan.transfer)?;
                        c.add(s.name, format!("throughput/{streams}stream"), "Gbit/s", Better::Higher, gbps);
                    }
                }
                let cr = connrate(lab, s.client, server_ip, plan.transfer)?;
                c.add(s.name, "connections_per_s/4workers".into(), "conn/s", Better::Higher, cr);
            }
            for proto in [Proto::H1, Proto::H2] {
                saturate(lab, s, &mine, proto, plan, &body_file, &mut c, &mut skipped)?;
            }
        }
    }
    skipped.push(format!(
        "saturation: closed-loop h2load in the client pod (HTTP/1.1: {} connections; h2c: {} \
         connections × {} streams; {} s after {} s of warm-up) on the same {} CPUs as the proxies \
         and the echo server, so the figure is what the whole machine serves through the path, \
         not a proxy's capacity alone; `cpu_per_1k/h2load` is the client's own share (with \
         `meshctl lab exec`'s start-up, a few ms)",
        saturation::concurrency(Proto::H1).0,
        saturation::concurrency(Proto::H2).0,
        saturation::concurrency(Proto::H2).1,
        plan.saturation.as_secs(),
        plan.saturation_warmup.as_secs(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
    ));

    // Memory with many connections open: once per run, after everything else (it leaves
    // allocator memory behind that would colour the runs after it).
    hold_phase(&scenarios, &procs, plan, &mut c, &mut skipped)?;

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

/// One saturation run (h2load, closed loop): `saturation/<proto>` (2xx per second),
/// `saturation/<proto>/failed` (every other outcome, a count: never hidden), and CPU per 1,000
/// requests of each process on the path and of h2load itself.
#[allow(clippy::too_many_arguments)]
fn saturate(
    lab: &Lab,
    s: &Scenario,
    mine: &[&MeshProc],
    proto: Proto,
    plan: &Plan,
    body_file: &std::path::Path,
    c: &mut Collect,
    notes: &mut Vec<String>,
) -> anyhow::Result<()> {
    let path = format!("/api/items?size={}", plan.body);
    let before: Vec<f64> = mine.iter().map(|p| lab::cpu_seconds(p.pid)).collect::<Result<_, _>>()?;
    let client_before = saturation::children_cpu_seconds();
    let tag = proto.as_str();
    let r = match saturation::run(lab, s, proto, &path, body_file, plan.saturation, plan.saturation_warmup) {
        Ok(r) => r,
        // A hung or failed h2load costs this figure, not the run: said in the report.
        Err(e) => {
            let note = format!("saturation of {} over {}: no figure: {e:#}", s.name, proto_name(proto));
            progress(&format!("  ! {note}"));
            notes.push(note);
            return Ok(());
        }
    };
    let client_cpu = saturation::children_cpu_seconds() - client_before;
    c.add(s.name, format!("saturation/{tag}"), "req/s", Better::Higher, r.ok_rps());
    c.add(s.name, format!("saturation/{tag}/failed"), "req", Better::Lower, r.not_ok() as f64);
    if let Some(problem) = r.problem() {
        let note = format!("saturation of {} over {}: {problem}", s.name, proto_name(proto));
        progress(&format!("  ! {note}"));
        notes.push(note);
    }
    if r.done == 0 {
        return Ok(());
    }
    // Every request on the CPU clocks, the warm-up's too (h2load counts only the measured
    // window's; the warm-up ran at about the same rate).
    let window = plan.saturation.as_secs().max(1) as f64;
    let warm = plan.saturation_warmup.as_secs().max(1) as f64;
    let requests = r.done as f64 * (window + warm) / window;
    let per_1k = |cpu: f64| cpu * 1e3 / (requests / 1e3);
    for (p, b) in mine.iter().zip(&before) {
        let cpu = lab::cpu_seconds(p.pid)? - b;
        c.add(
            s.name,
            format!("cpu_per_1k/{}/{tag}/saturation", p.label),
            "ms CPU",
            Better::Lower,
            per_1k(cpu),
        );
    }
    if client_cpu.is_finite() {
        c.add(
            s.name,
            format!("cpu_per_1k/h2load/{tag}/saturation"),
            "ms CPU",
            Better::Lower,
            per_1k(client_cpu),
        );
    }
    Ok(())
}

fn proto_name(proto: Proto) -> &'static str {
    match proto {
        Proto::H1 => "HTTP/1.1",
        Proto::H2 => "h2c",
    }
}

/// Connections being opened at once by `bench hold`.
const HOLD_CONCURRENCY: usize = 128;

/// The open-connections phase: per scenario, `plan.hold_connections` HTTP/1.1 keep-alive
/// connections from the client pod through the path, each with one request answered, held
/// idle while the RSS of every process on the path is read, then closed. Rows (N as `10k`):
/// `rss_<N>_conns/<proc>` with them open, `.../before` just before, `.../after_close` a second
/// after they closed; `kib_per_conn/<proc>/<N>_conns` = (with − before) / connections open.
fn hold_phase(
    scenarios: &[Scenario],
    procs: &[MeshProc],
    plan: &Plan,
    c: &mut Collect,
    notes: &mut Vec<String>,
) -> anyhow::Result<()> {
    let n = plan.hold_connections;
    let label = hold::conns_label(n);
    let path = format!("/api/items?size={}", plan.body);
    let rss =
        |mine: &[&MeshProc]| mine.iter().map(|p| lab::rss_mib(p.pid)).collect::<anyhow::Result<Vec<f64>>>();
    let (n_s, conc) = (n.to_string(), HOLD_CONCURRENCY.to_string());
    for s in scenarios {
        progress(&format!("[{label} connections] {}", s.name));
        let mine = procs_of(s, procs);
        let before = rss(&mine)?;
        let holder = Holder::start(
            s.client,
            &[
                "--target",
                &s.h1_target,
                "--host",
                s.host,
                "--path",
                &path,
                "--connections",
                &n_s,
                "--concurrency",
                &conc,
                "--hold-secs",
                "120",
            ],
        )?;
        let o = holder.opened.clone();
        progress(&format!(
            "  {} open, {} failed in {:.1} s (RLIMIT_NOFILE {}, ports {}-{}{})",
            o.open,
            o.failed,
            o.secs,
            o.nofile,
            o.port_range.0,
            o.port_range.1,
            if o.widened { ", widened" } else { "" }
        ));
        // Let what the opening left in flight (pool returns, deferred frees) settle.
        std::thread::sleep(Duration::from_secs(1));
        let with = rss(&mine)?;
        let closed = holder.close()?;
        std::thread::sleep(Duration::from_secs(1));
        let after = rss(&mine)?;
        if o.failed > 0 {
            notes.push(format!(
                "{label} connections through {}: {} of {n} could not be opened (first: {})",
                s.name,
                o.failed,
                o.first_error.as_deref().unwrap_or("?")
            ));
        }
        if closed.closed_by_peer + closed.unexpected_data > 0 {
            notes.push(format!(
                "{label} connections through {}: {} closed by the far side and {} sent unasked data \
                 during the {:.1} s hold",
                s.name, closed.closed_by_peer, closed.unexpected_data, closed.held_secs
            ));
        }
        if o.open == 0 {
            continue;
        }
        for (i, p) in mine.iter().enumerate() {
            let metric = format!("rss_{label}_conns/{}", p.label);
            c.add(s.name, metric.clone(), "MiB", Better::Lower, with[i]);
            c.add(s.name, format!("{metric}/before"), "MiB", Better::Lower, before[i]);
            c.add(s.name, format!("{metric}/after_close"), "MiB", Better::Lower, after[i]);
            let kib = (with[i] - before[i]) * 1024.0 / o.open as f64;
            c.add(s.name, format!("kib_per_conn/{}/{label}_conns", p.label), "KiB", Better::Lower, kib);
        }
    }
    notes.push(format!(
        "{label} open connections: once per run, after the other measurements, scenario by scenario \
         ({HOLD_CONCURRENCY} being opened at a time, each with one GET answered, then held idle); \
         RSS is VmRSS, so memory an allocator kept from earlier phases and reuses does not show \
         again (the ztunnels carry l4's connections before l7's: compare `after_close`)"
    ));
    Ok(())
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
