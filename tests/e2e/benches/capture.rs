//! The L4 benchmark through real capture: the same client→server pair across two lab nodes,
//! direct (namespace outside the mesh) and captured (ambient: eBPF redirect, ztunnel on each
//! node, HBONE between them). Prints throughput, round-trip latency and connection rate for
//! both and the difference. Needs root and release binaries:
//!
//! ```text
//! cargo build --release --workspace --bins && cargo bench -p mesh-e2e --bench capture
//! ```
//! Env: `BENCH_SECONDS` (default 5) per throughput/connection-rate run, `BENCH_ROUNDS`
//! (default 5000) latency round trips, `BENCH_WORKERS` (default 4) connection-rate threads.

use std::path::Path;

use mesh_e2e::lab::Lab;
use serde_json::Value;

fn env(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

fn run(lab: &Lab, pod: &str, args: &[&str]) -> Value {
    let v = lab.probe_args(pod, args);
    assert_eq!(v["ok"], true, "{pod} {args:?}: {v}");
    v
}

fn main() {
    // `cargo bench` passes `--bench`; nothing to parse.
    let seconds = env("BENCH_SECONDS", "5");
    let rounds = env("BENCH_ROUNDS", "5000");
    let workers = env("BENCH_WORKERS", "4");
    let yaml = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/bench.yaml");
    let lab = Lab::up(&[&yaml], &[]).expect("lab up");
    let mut rows = Vec::new();
    for (label, pod, server) in
        [("direct", "plain/client", "10.244.2.50:7000"), ("captured", "mesh/client", "10.244.2.60:7000")]
    {
        let tp = run(&lab, pod, &["throughput", server, &seconds]);
        let lat = run(&lab, pod, &["latency", server, &rounds]);
        let cr = run(&lab, pod, &["connrate", server, &seconds, &workers]);
        println!("{label:>9}: {tp}\n{label:>9}: {lat}\n{label:>9}: {cr}");
        rows.push((label, tp, lat, cr));
    }
    let f = |v: &Value, k: &str| v[k].as_f64().unwrap_or(f64::NAN);
    let (d, c) = (&rows[0], &rows[1]);
    println!();
    println!("| pod→pod across nodes | direct | captured | captured/direct or added |");
    println!("|---|---:|---:|---:|");
    let tp = (f(&d.1, "mb_per_s"), f(&c.1, "mb_per_s"));
    println!("| throughput, 1 stream (MB/s) | {:.0} | {:.0} | {:.0} % |", tp.0, tp.1, 100.0 * tp.1 / tp.0);
    for (k, name) in [("p50_us", "p50"), ("p99_us", "p99")] {
        let l = (f(&d.2, k), f(&c.2, k));
        println!("| round trip {name}, 64 B (µs) | {:.0} | {:.0} | +{:.0} µs |", l.0, l.1, l.1 - l.0);
    }
    let cr = (f(&d.3, "per_s"), f(&c.3, "per_s"));
    println!(
        "| connections/s ({workers} workers) | {:.0} | {:.0} | {:.0} % |",
        cr.0,
        cr.1,
        100.0 * cr.1 / cr.0
    );
}
