//! `mesh-ca --config PATH --state-dir DIR --listen ADDR`: runs the CA until SIGINT/SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;

/// Issues SPIFFE certificates over Istio's CA API to nodes, for the pods on them.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// YAML configuration file (trustDomain, defaultTtl, maxTtl, model, nodeTokensFile, ...).
    #[arg(long)]
    config: PathBuf,
    /// Folder for the generated root certificate and key (created if missing).
    #[arg(long)]
    state_dir: PathBuf,
    /// Address to serve gRPC (TLS) on.
    #[arg(long, default_value = "127.0.0.1:15012")]
    listen: SocketAddr,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    let config = mesh_ca::CaConfig::load(&args.config)?;
    let ca = mesh_ca::start(mesh_ca::CaOptions { config, state_dir: args.state_dir, listen: args.listen })
        .await
        .context("starting mesh-ca")?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r?,
        _ = term.recv() => {}
    }
    tracing::info!("shutting down");
    ca.shutdown().await?;
    Ok(())
}
