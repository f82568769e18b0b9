//! `bench`: the benchmark harness. Brings the lab up with `bench/data/lab.yaml`, measures every
//! scenario, writes `BENCHMARKS.md` with its plots and the results as JSON, and compares with
//! an earlier run. `bench load` is the fixed-rate client it runs inside the lab's pods.
#![allow(clippy::print_stderr)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use mesh_bench::load::{self, Proto, RateSpec};
use mesh_bench::results::Report;
use mesh_bench::{config_update, report, run};

#[derive(Debug, Parser)]
#[command(name = "bench", about = "Measure the mesh against no mesh; write BENCHMARKS.md")]
struct Args {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    /// Short runs, one repetition, 1,000 req/s only: a smoke run, not numbers to publish.
    #[arg(long)]
    quick: bool,
    /// Repetitions of each measurement (default 3; 1 with --quick).
    #[arg(long)]
    reps: Option<usize>,
    /// Folder for BENCHMARKS.md; plots and results.json go to its `benchmarks/` folder.
    #[arg(long, default_value = ".")]
    out: PathBuf,
    /// Also write the results as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Compare with an earlier results JSON; exit 1 when a figure regressed beyond the noise.
    #[arg(long)]
    compare: Option<PathBuf>,
    /// Do not run: regenerate BENCHMARKS.md and the plots from this results JSON.
    #[arg(long)]
    report: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// The fixed-rate HTTP client (run inside a lab pod); prints its result as JSON.
    Load {
        #[arg(long)]
        target: std::net::SocketAddr,
        #[arg(long)]
        host: String,
        #[arg(long, default_value = "/")]
        path: String,
        /// h1 or h2 (h2c with prior knowledge).
        #[arg(long, value_parser = parse_proto)]
        proto: Proto,
        /// Requests per second.
        #[arg(long)]
        rate: u64,
        /// Measured window (seconds).
        #[arg(long)]
        seconds: f64,
        /// Unrecorded load first (seconds).
        #[arg(long, default_value_t = 1.0)]
        warmup: f64,
        /// Request body (bytes; 0 sends GETs).
        #[arg(long, default_value_t = 1024)]
        body: usize,
        /// HTTP/1.1: most connections; HTTP/2: connections the streams share.
        #[arg(long, default_value_t = 64)]
        connections: usize,
        /// Per-request timeout (seconds).
        #[arg(long, default_value_t = 10.0)]
        timeout: f64,
    },
    /// Opens N keep-alive connections (run inside a lab pod), one request each, and holds them
    /// until a line on stdin; prints a JSON line when they are open and one when they close.
    Hold(mesh_bench::hold::HoldArgs),
    /// Config-update latency alone (no lab): prints the rows as JSON; exit 1 if a size failed.
    ConfigUpdate {
        /// Workload pods in the model (repeatable; default 1000 and 100000).
        #[arg(long = "workloads")]
        workloads: Vec<usize>,
        /// Route flips per size.
        #[arg(long, default_value_t = 5)]
        reps: usize,
    },
}

fn parse_proto(s: &str) -> Result<Proto, String> {
    Proto::parse(s).ok_or_else(|| format!("{s:?}: want h1 or h2"))
}

fn main() -> ExitCode {
    match real_main() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("bench: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn real_main() -> anyhow::Result<ExitCode> {
    let args = Args::parse();
    if let Some(Cmd::Hold(hold)) = &args.cmd {
        mesh_bench::hold::main(hold)?;
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(Cmd::Load { target, host, path, proto, rate, seconds, warmup, body, connections, timeout }) =
        args.cmd
    {
        let spec = RateSpec {
            target,
            host,
            path,
            proto,
            rate,
            duration: Duration::from_secs_f64(seconds),
            warmup: Duration::from_secs_f64(warmup),
            body,
            connections,
            timeout: Duration::from_secs_f64(timeout),
        };
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let r = rt.block_on(load::run_rate(&spec))?;
        println!("{}", serde_json::to_string(&r)?);
        return Ok(ExitCode::SUCCESS);
    }

    if let Some(Cmd::ConfigUpdate { workloads, reps }) = &args.cmd {
        let sizes = if workloads.is_empty() {
            config_update::Plan::new(false, None).sizes
        } else {
            workloads.clone()
        };
        let out = config_update::measure(*reps, &sizes);
        println!("{}", serde_json::to_string_pretty(&out.rows)?);
        return Ok(if out.skipped.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(1) });
    }
    let results = match &args.report {
        Some(path) => read_report(path)?,
        None => {
            let plan = run::Plan::new(args.quick, args.reps);
            let command = std::env::args().collect::<Vec<_>>().join(" ");
            let lab = mesh_bench::lab::up()?;
            let mut report = run::run(&lab, &plan, command)?;
            drop(lab);
            config_update::append(&mut report, &config_update::Plan::new(args.quick, args.reps));
            report
        }
    };
    write_outputs(&args, &results)?;
    if let Some(old) = &args.compare {
        let old = read_report(old)?;
        report::check_format(&old, &results)?;
        let cmp = report::compare(&old, &results);
        println!("{}", cmp.text());
        if cmp.has_regressions() {
            return Ok(ExitCode::from(1));
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn read_report(path: &std::path::Path) -> anyhow::Result<Report> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{}: not a bench results file", path.display()))
}

fn write_outputs(args: &Args, results: &Report) -> anyhow::Result<()> {
    let dir = args.out.join("benchmarks");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let json = serde_json::to_string_pretty(results)?;
    let mut json_paths = vec![dir.join("results.json")];
    json_paths.extend(args.json.clone());
    for p in json_paths {
        std::fs::write(&p, &json).with_context(|| format!("writing {}", p.display()))?;
    }
    let plots = report::plots(results);
    for p in &plots {
        let path = dir.join(&p.file);
        std::fs::write(&path, &p.svg).with_context(|| format!("writing {}", path.display()))?;
    }
    // The Markdown links the plots relative to itself.
    let linked: Vec<report::Plot> =
        plots.into_iter().map(|p| report::Plot { file: format!("benchmarks/{}", p.file), ..p }).collect();
    let md = args.out.join("BENCHMARKS.md");
    std::fs::write(&md, report::markdown(results, &linked))
        .with_context(|| format!("writing {}", md.display()))?;
    eprintln!("wrote {} and {}/", md.display(), dir.display());
    Ok(())
}
