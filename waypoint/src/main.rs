//! `waypoint --config PATH`: starts the L7 proxy (see the library), waits for SIGTERM/SIGINT
//! and drains.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;

// The request path allocates and frees many small buffers per request from several threads;
// mimalloc's per-thread free lists cost less than glibc malloc there (~6 % of CPU in profiles).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The mesh's L7 proxy for one namespace.
#[derive(Debug, Parser)]
#[command(name = "waypoint", version)]
struct Args {
    /// YAML config file (fields as in /config_dump's `config`).
    #[arg(long)]
    config: PathBuf,
    /// This pod's name, overriding `pod` (in a cluster: `$(POD_NAME)` from the downward API).
    #[arg(long)]
    pod: Option<String>,
    /// This pod's node, overriding `node` (in a cluster: `$(NODE_NAME)`).
    #[arg(long)]
    node: Option<String>,
}

fn main() -> anyhow::Result<()> {
    // Before any thread exists; logged once logging is set up.
    let nofile = mesh_telemetry::raise_open_files_limit();
    // One worker (TOKIO_WORKER_THREADS=1, as in a one-CPU pod) runs on a current-thread
    // runtime: the same single thread without the work-stealing scheduler's cross-thread
    // bookkeeping on every wake-up.
    let one_worker = std::env::var("TOKIO_WORKER_THREADS").is_ok_and(|v| v.trim() == "1");
    let rt = if one_worker {
        tokio::runtime::Builder::new_current_thread().enable_all().build()?
    } else {
        tokio::runtime::Builder::new_multi_thread().enable_all().build()?
    };
    rt.block_on(run(nofile))
}

async fn run(nofile: std::io::Result<(u64, u64)>) -> anyhow::Result<()> {
    let args = Args::parse();
    let mut config = waypoint::config::Config::load(&args.config)?;
    config.pod = args.pod.unwrap_or(config.pod);
    config.node = args.node.unwrap_or(config.node);
    let log = mesh_telemetry::init_logging(config.log_format, &config.log_level)?;
    match nofile {
        Ok((soft, hard)) => tracing::info!(soft, hard, "open files limit"),
        Err(e) => tracing::warn!(error = %e, "could not raise the open files limit"),
    }
    let w = waypoint::ctx::start(config, Some(log)).await.context("starting the waypoint")?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r?,
        _ = term.recv() => {}
    }
    tracing::info!("shutting down");
    w.shutdown().await;
    Ok(())
}
