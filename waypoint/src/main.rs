//! `waypoint --config PATH`: starts the L7 proxy (see the library), waits for SIGTERM/SIGINT
//! and drains.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;

/// The mesh's L7 proxy for one namespace.
#[derive(Debug, Parser)]
#[command(name = "waypoint", version)]
struct Args {
    /// YAML config file (fields as in /config_dump's `config`).
    #[arg(long)]
    config: PathBuf,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let config = waypoint::config::Config::load(&args.config)?;
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
