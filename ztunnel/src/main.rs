//! `ztunnel --config PATH --node NAME --ca-address ADDR ...`: parses flags, starts the proxy
//! (see the library), waits for SIGTERM/SIGINT and drains.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use ztunnel::Config;

/// The mesh's node proxy. Flags override the config file.
#[derive(Debug, Parser)]
#[command(name = "ztunnel", version)]
struct Args {
    /// YAML config file (fields as in /config_dump's `config`).
    #[arg(long)]
    config: Option<PathBuf>,
    /// This node's name (as in pods' spec.nodeName).
    #[arg(long)]
    node: Option<String>,
    /// CA address, https://host:port.
    #[arg(long)]
    ca_address: Option<String>,
    /// PEM root of the CA's serving certificate (also the mesh trust root).
    #[arg(long)]
    ca_root: Option<PathBuf>,
    /// DNS name the CA's certificate must carry.
    #[arg(long)]
    ca_server_name: Option<String>,
    /// File with this node's bootstrap token.
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// SPIFFE trust domain.
    #[arg(long)]
    trust_domain: Option<String>,
    /// Mesh YAML file or folder (repeatable), watched.
    #[arg(long)]
    model: Vec<PathBuf>,
    /// Captured outbound listener address (default 127.0.0.1:15001).
    #[arg(long)]
    outbound_addr: Option<SocketAddr>,
    /// SOCKS5 listener address (default 127.0.0.1:15080).
    #[arg(long)]
    socks5_addr: Option<SocketAddr>,
    /// Inbound HBONE port on each local pod IP (default 15008).
    #[arg(long)]
    hbone_port: Option<u16>,
    /// Inbound plaintext port on each local pod IP (default 15006; 0 disables).
    #[arg(long)]
    plaintext_port: Option<u16>,
    /// Admin address, loopback only (default 127.0.0.1:15000).
    #[arg(long)]
    admin_addr: Option<SocketAddr>,
    /// Prometheus /metrics address (default 0.0.0.0:15020).
    #[arg(long)]
    metrics_addr: Option<SocketAddr>,
    /// Readiness /healthz/ready address (default 0.0.0.0:15021).
    #[arg(long)]
    readiness_addr: Option<SocketAddr>,
    /// Drain deadline after SIGTERM (e.g. 5s, 500ms).
    #[arg(long, value_parser = ztunnel::config::parse_duration)]
    drain_deadline: Option<std::time::Duration>,
    /// Log format: text or json.
    #[arg(long, value_parser = parse_log_format)]
    log_format: Option<mesh_telemetry::LogFormat>,
    /// Initial log filter (e.g. info,access=info).
    #[arg(long)]
    log_level: Option<String>,
}

fn parse_log_format(s: &str) -> Result<mesh_telemetry::LogFormat, String> {
    match s {
        "json" => Ok(mesh_telemetry::LogFormat::Json),
        "text" => Ok(mesh_telemetry::LogFormat::Text),
        _ => Err(format!("{s:?}: use text or json")),
    }
}

impl Args {
    fn into_config(self) -> anyhow::Result<Config> {
        let mut c = match &self.config {
            Some(p) => Config::load(p)?,
            None => Config::default(),
        };
        macro_rules! set {
            ($($f:ident),*) => {$( if let Some(v) = self.$f { c.$f = v; } )*};
        }
        set!(
            node,
            ca_address,
            ca_root,
            ca_server_name,
            token_file,
            trust_domain,
            outbound_addr,
            socks5_addr,
            hbone_port,
            plaintext_port,
            admin_addr,
            metrics_addr,
            readiness_addr,
            drain_deadline,
            log_format,
            log_level
        );
        if !self.model.is_empty() {
            c.model = self.model;
        }
        Ok(c)
    }
}

/// `ztunnel cleanup`: removes the capture's pins (detaching every program), so captured
/// pods' traffic goes direct; run on each node by `meshctl uninstall`.
#[derive(Debug, Parser)]
#[command(name = "ztunnel cleanup")]
struct CleanupArgs {
    /// bpffs folder of the pins (capture.bpfPinDir).
    #[arg(long, default_value = "/sys/fs/bpf/ztunnel")]
    bpf_pin_dir: PathBuf,
    /// Then wait for SIGTERM (a DaemonSet's long-running container).
    #[arg(long)]
    stay: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    if std::env::args().nth(1).as_deref() == Some("cleanup") {
        let args = CleanupArgs::parse_from(std::env::args().skip(1));
        let dir = &args.bpf_pin_dir;
        mesh_ebpf::Capture::remove_all(dir).with_context(|| format!("removing {}", dir.display()))?;
        println!("ztunnel cleanup: {} removed", dir.display());
        if args.stay {
            ztunnel::drain::shutdown_signal().await?;
        }
        return Ok(());
    }
    let nofile = mesh_telemetry::raise_open_files_limit();
    let config = Args::parse().into_config()?;
    let log = mesh_telemetry::init_logging(config.log_format, &config.log_level)?;
    match nofile {
        Ok((soft, hard)) => tracing::info!(soft, hard, "open files limit"),
        Err(e) => tracing::warn!(error = %e, "could not raise the open files limit"),
    }
    let z = ztunnel::start(config, Some(log)).await.context("starting ztunnel")?;
    let signal = ztunnel::drain::shutdown_signal().await?;
    tracing::info!(signal, open = z.drain.open_connections(), "shutting down: draining");
    let outcome = z.shutdown().await;
    tracing::info!(?outcome, "bye");
    Ok(())
}
