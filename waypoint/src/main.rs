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

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut config = waypoint::config::Config::load(&args.config)?;
    config.pod = args.pod.unwrap_or(config.pod);
    config.node = args.node.unwrap_or(config.node);
    let log = mesh_telemetry::init_logging(config.log_format, &config.log_level)?;
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
