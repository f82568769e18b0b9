//! Command-line surface of `meshctl install`, `uninstall` and `waypoint apply|delete`:
//! arguments, the async runtime, progress on stderr, errors listed one per line.
//! Exit codes: 0 done, 1 the cluster refused something or a wait timed out, 2 usage or output.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};

use super::{
    ApplyOptions, InstallError, InstallOptions, Stderr, UninstallOptions, ZtunnelUpdate, apply, client,
    render, to_json, to_yaml, uninstall, wait_installed,
};
use crate::cli::EXIT_USAGE;

/// Exit code when the cluster refused something or a wait timed out.
pub const EXIT_FAILED: u8 = 1;

/// Which cluster to talk to.
#[derive(Debug, Clone, Args)]
pub struct ClusterArgs {
    /// kubeconfig file (default: $KUBECONFIG, ~/.kube/config, or the in-cluster account).
    #[arg(long, value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,
    /// kubeconfig context (default: the current one).
    #[arg(long)]
    pub context: Option<String>,
}

/// What the manifests name and point at.
#[derive(Debug, Clone, Args)]
pub struct MeshArgs {
    /// Namespace of mesh-ca and ztunnel.
    #[arg(long, default_value = super::NAMESPACE)]
    pub mesh_namespace: String,
    /// Image registry and organisation: images are <hub>/<binary>:<tag>.
    #[arg(long, default_value = super::DEFAULT_HUB)]
    pub hub: String,
    /// Image tag (default: this meshctl's version).
    #[arg(long, default_value = env!("CARGO_PKG_VERSION"))]
    pub tag: String,
    /// SPIFFE trust domain.
    #[arg(long, default_value = mesh_api::DEFAULT_TRUST_DOMAIN)]
    pub trust_domain: String,
}

impl MeshArgs {
    fn options(&self) -> InstallOptions {
        InstallOptions {
            namespace: self.mesh_namespace.clone(),
            hub: self.hub.clone(),
            tag: self.tag.clone(),
            trust_domain: self.trust_domain.clone(),
            ..Default::default()
        }
    }
}

/// Manifest formats for `--dry-run`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ManifestFormat {
    /// Multi-document YAML.
    Yaml,
    /// A JSON `v1` List.
    Json,
}

/// `meshctl install`.
#[derive(Debug, Args)]
pub struct InstallArgs {
    /// Print the manifests instead of applying them (no cluster needed).
    #[arg(long)]
    pub dry_run: bool,
    /// Manifest format for --dry-run.
    #[arg(short, long, value_enum, default_value_t = ManifestFormat::Yaml, requires = "dry_run")]
    pub output: ManifestFormat,
    /// Leave the CustomResourceDefinitions out (they are in deploy/crds/ for GitOps).
    #[arg(long)]
    pub skip_crds: bool,
    /// Wait for mesh-ca and the ztunnel DaemonSet to roll out.
    #[arg(long)]
    pub wait: bool,
    /// Longest wait with --wait (e.g. 300s, 5m).
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Take over fields another field manager owns (server-side apply force).
    #[arg(long)]
    pub force_conflicts: bool,
    /// cgroup v2 folder of the pods, inside the ztunnel container (the host's cgroup root is
    /// at /host/sys/fs/cgroup; `kubepods` for the cgroupfs driver).
    #[arg(long, default_value = "/host/sys/fs/cgroup/kubepods.slice")]
    pub pods_cgroup: String,
    /// ztunnel DaemonSet update strategy.
    #[arg(long, value_enum, default_value_t = ZtunnelUpdate::Replace)]
    pub ztunnel_update: ZtunnelUpdate,
    /// Cluster name reported in telemetry.
    #[arg(long, default_value = "Kubernetes")]
    pub cluster_id: String,
    #[command(flatten)]
    pub mesh: MeshArgs,
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

/// `meshctl uninstall`.
#[derive(Debug, Args)]
pub struct UninstallArgs {
    /// Also delete the CRDs meshctl created (never those installed by Istio or others).
    #[arg(long)]
    pub purge_crds: bool,
    /// Longest wait for ztunnel to stop and the eBPF pin cleanup to finish on every node.
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    pub timeout: Duration,
    #[command(flatten)]
    pub mesh: MeshArgs,
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

/// `meshctl waypoint`.
#[derive(Debug, Args)]
pub struct WaypointArgs {
    #[command(subcommand)]
    pub command: WaypointCommand,
}

/// Waypoint subcommands.
#[derive(Debug, Subcommand)]
pub enum WaypointCommand {
    /// Create or update a namespace's waypoint and label the namespace to use it.
    Apply(WaypointTarget),
    /// Delete a namespace's waypoint and its namespace label.
    Delete(WaypointTarget),
}

/// Which waypoint.
#[derive(Debug, Args)]
pub struct WaypointTarget {
    /// Namespace of the waypoint.
    #[arg(short, long)]
    pub namespace: String,
    /// Waypoint name.
    #[arg(long, default_value = crate::waypoint_cmd::DEFAULT_NAME)]
    pub name: String,
    /// Wait for the waypoint's Deployment to roll out (apply).
    #[arg(long)]
    pub wait: bool,
    /// Longest wait with --wait.
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    pub timeout: Duration,
    #[command(flatten)]
    pub mesh: MeshArgs,
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    mesh_api::duration::parse_config(s).map_err(|e| e.to_string())
}

fn runtime(err: &mut dyn Write) -> Option<tokio::runtime::Runtime> {
    match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => Some(rt),
        Err(e) => {
            let _ = writeln!(err, "meshctl: cannot start the async runtime: {e}");
            None
        }
    }
}

fn report(cmd: &str, errors: &[InstallError], err: &mut dyn Write) -> u8 {
    if errors.is_empty() {
        return 0;
    }
    let _ = writeln!(err, "meshctl {cmd}: {} error(s):", errors.len());
    for e in errors {
        let _ = writeln!(err, "  {e}");
    }
    if errors.iter().any(|e| matches!(e, InstallError::Options(_))) { EXIT_USAGE } else { EXIT_FAILED }
}

/// `meshctl install`.
pub fn run_install(args: InstallArgs, out: &mut dyn Write, err: &mut dyn Write) -> u8 {
    let opts = InstallOptions {
        crds: !args.skip_crds,
        pods_cgroup: args.pods_cgroup.clone(),
        ztunnel_update: args.ztunnel_update,
        cluster_id: args.cluster_id.clone(),
        ..args.mesh.options()
    };
    let objects = match render(&opts) {
        Ok(o) => o,
        Err(e) => return report("install", &[e], err),
    };
    if args.dry_run {
        let text = match args.output {
            ManifestFormat::Yaml => to_yaml(&objects),
            ManifestFormat::Json => to_json(&objects),
        };
        return match text
            .map(|t| out.write_all(t.as_bytes()).map_err(|e| InstallError::Output(e.to_string())))
        {
            Ok(Ok(())) => 0,
            Ok(Err(e)) | Err(e) => {
                let _ = writeln!(err, "meshctl install: {e}");
                EXIT_USAGE
            }
        };
    }
    let Some(rt) = runtime(err) else { return EXIT_USAGE };
    let errors = rt.block_on(async {
        let c = client(args.cluster.kubeconfig.as_deref(), args.cluster.context.as_deref())
            .await
            .map_err(|e| vec![e])?;
        apply(&c, &objects, &ApplyOptions { force_conflicts: args.force_conflicts }, &Stderr).await?;
        if args.wait {
            wait_installed(&c, &objects, &opts, args.timeout, &Stderr).await.map_err(|e| vec![e])?;
        }
        Ok::<(), Vec<InstallError>>(())
    });
    match errors {
        Ok(()) => {
            let _ = writeln!(err, "meshctl install: {} objects applied", objects.len());
            0
        }
        Err(e) => report("install", &e, err),
    }
}

/// `meshctl uninstall`.
pub fn run_uninstall(args: UninstallArgs, err: &mut dyn Write) -> u8 {
    let opts =
        UninstallOptions { install: args.mesh.options(), purge_crds: args.purge_crds, timeout: args.timeout };
    let Some(rt) = runtime(err) else { return EXIT_USAGE };
    let result = rt.block_on(async {
        let c = client(args.cluster.kubeconfig.as_deref(), args.cluster.context.as_deref())
            .await
            .map_err(|e| vec![e])?;
        uninstall(&c, &opts, &Stderr).await
    });
    match result {
        Ok(()) => {
            let _ = writeln!(err, "meshctl uninstall: done");
            0
        }
        Err(e) => report("uninstall", &e, err),
    }
}

/// `meshctl waypoint apply|delete`.
pub fn run_waypoint(args: WaypointArgs, err: &mut dyn Write) -> u8 {
    let Some(rt) = runtime(err) else { return EXIT_USAGE };
    let (verb, t) = match &args.command {
        WaypointCommand::Apply(t) => ("waypoint apply", t),
        WaypointCommand::Delete(t) => ("waypoint delete", t),
    };
    let opts = t.mesh.options();
    let result = rt.block_on(async {
        let c = client(t.cluster.kubeconfig.as_deref(), t.cluster.context.as_deref())
            .await
            .map_err(|e| vec![e])?;
        match &args.command {
            WaypointCommand::Apply(_) => {
                let wait = t.wait.then_some(t.timeout);
                crate::waypoint_cmd::apply(&c, &opts, &t.namespace, &t.name, wait, &Stderr).await
            }
            WaypointCommand::Delete(_) => {
                crate::waypoint_cmd::delete(&c, &opts, &t.namespace, &t.name, &Stderr).await
            }
        }
    });
    match result {
        Ok(()) => {
            let _ = writeln!(err, "meshctl {verb}: waypoint {}/{} done", t.namespace, t.name);
            0
        }
        Err(e) => report(verb, &e, err),
    }
}
