//! `meshctl cert`: asks a CA for a workload certificate the way a node's ztunnel does
//! (bootstrap the node certificate with the node's token, then request the workload identity
//! with it) and prints what was issued, without the key. For checking a CA and its placement
//! rules by hand; the quick start uses it.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use mesh_api::SpiffeId;
use mesh_identity::{CaClientConfig, CertManagerConfig, bootstrap_node};

/// Arguments of `meshctl cert`.
#[derive(Debug, Args)]
pub struct CertArgs {
    /// CA address, `https://host:port`.
    #[arg(long, default_value = "https://127.0.0.1:15012")]
    pub ca: String,
    /// PEM file of the root the CA's serving certificate chains to.
    #[arg(long, value_name = "FILE")]
    pub ca_root: PathBuf,
    /// DNS name the CA's serving certificate must carry.
    #[arg(long, default_value = "mesh-ca")]
    pub ca_server_name: String,
    /// Node to act as.
    #[arg(long)]
    pub node: String,
    /// File holding the node's bootstrap token.
    #[arg(long, value_name = "FILE")]
    pub token_file: PathBuf,
    /// Workload identity to request, `spiffe://<td>/ns/<ns>/sa/<sa>`.
    #[arg(long)]
    pub identity: SpiffeId,
    /// Requested lifetime in seconds (0: the CA's default).
    #[arg(long, default_value_t = 0)]
    pub ttl_seconds: u64,
}

/// Runs `meshctl cert`; returns the exit code: 0 issued, 1 refused or failed, 2 usage error.
pub async fn run_cert(args: &CertArgs, out: &mut dyn Write, err: &mut dyn Write) -> u8 {
    let roots_pem = match std::fs::read_to_string(&args.ca_root) {
        Ok(p) => p,
        Err(e) => {
            let _ = writeln!(err, "meshctl cert: cannot read --ca-root {}: {e}", args.ca_root.display());
            return crate::cli::EXIT_USAGE;
        }
    };
    let mut config = CaClientConfig::new(args.ca.clone(), roots_pem);
    config.server_name = args.ca_server_name.clone();
    let manager_config =
        CertManagerConfig { validity: Duration::from_secs(args.ttl_seconds), ..CertManagerConfig::default() };
    let td = args.identity.trust_domain().to_string();
    let node = match bootstrap_node(config, &td, &args.node, args.token_file.clone(), manager_config.clone())
        .await
    {
        Ok(n) => n,
        Err(e) => {
            let _ =
                writeln!(err, "meshctl cert: node {} could not bootstrap with {}: {e}", args.node, args.ca);
            return crate::cli::EXIT_ERRORS;
        }
    };
    let workloads = node.workload_manager(manager_config);
    match workloads.fetch(&args.identity).await {
        Ok(cert) => {
            let dump = serde_json::to_string_pretty(&cert.to_dump()).unwrap_or_default();
            let _ = writeln!(out, "{dump}");
            0
        }
        Err(e) => {
            let _ = writeln!(err, "meshctl cert: node {} was refused {}: {e}", args.node, args.identity);
            crate::cli::EXIT_ERRORS
        }
    }
}
