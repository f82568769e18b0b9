//! The command line: argument parsing (clap) and rendering of analysis results as text or
//! JSON. Exit codes: 0 no errors, 1 errors found, 2 usage or I/O error.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};
use mesh_api::{ObjectRef, Origin, Severity};

use crate::analyze::{self, Analysis};

/// Exit code when analysis found at least one error.
pub const EXIT_ERRORS: u8 = 1;
/// Exit code for usage and I/O errors (a path that cannot be read).
pub const EXIT_USAGE: u8 = 2;

/// Command-line tool of the mesh.
#[derive(Debug, Parser)]
#[command(name = "meshctl", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate YAML/JSON files or folders of Kubernetes, Istio and Gateway API objects:
    /// per-object checks, translation into the model, and cross-object references.
    #[command(after_help = "Exit status: 0 when there are no errors (warnings allowed), 1 when there are \
                            errors, 2 on usage errors or a path that cannot be read.")]
    Analyze(AnalyzeArgs),
    /// Request a workload certificate from a CA as a node's ztunnel would (node bootstrap
    /// with its token, then the workload identity) and print it, without its key.
    Cert(crate::cert::CertArgs),
    /// A cluster on this machine from the same YAML: network namespaces for nodes and pods,
    /// mesh-ca, one ztunnel per node and an echo app per pod (needs root).
    Lab(crate::lab::LabArgs),
    /// The lab's echo app (run by `lab up` inside each pod; also usable on its own).
    #[command(hide = true)]
    Echo(crate::echo::EchoArgs),
    /// Install the mesh into a Kubernetes cluster (server-side apply), or print the
    /// manifests with --dry-run.
    Install(Box<crate::install::cli::InstallArgs>),
    /// Remove everything `install` and `waypoint apply` created, eBPF pins included.
    Uninstall(crate::install::cli::UninstallArgs),
    /// Create or delete a namespace's waypoint.
    Waypoint(crate::install::cli::WaypointArgs),
}

#[derive(Debug, Args)]
pub struct AnalyzeArgs {
    /// Files or folders (searched recursively for .yaml, .yml and .json) to analyze together.
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// Output format of the diagnostics on stdout.
    #[arg(short, long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
    /// Also list objects that were recognised but ignored (other API groups), as notes.
    #[arg(short, long)]
    pub verbose: bool,
}

/// How diagnostics are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// One `path:doc kind namespace/name: field: message` line per diagnostic.
    Text,
    /// A JSON array of diagnostics (origin, object, field, severity, message).
    Json,
}

/// Runs a parsed command line, printing to the process's stdout and stderr.
pub fn run(cli: Cli) -> ExitCode {
    let mut out = std::io::stdout().lock();
    let mut err = std::io::stderr().lock();
    let code = match cli.command {
        Command::Analyze(args) => run_analyze(&args, &mut out, &mut err),
        Command::Cert(args) => match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(rt) => rt.block_on(crate::cert::run_cert(&args, &mut out, &mut err)),
            Err(e) => {
                let _ = writeln!(err, "meshctl: cannot start the async runtime: {e}");
                EXIT_USAGE
            }
        },
        Command::Lab(args) => crate::lab::run(args, &mut out, &mut err),
        Command::Echo(args) => crate::echo::run(args, &mut err),
        Command::Install(args) => crate::install::cli::run_install(*args, &mut out, &mut err),
        Command::Uninstall(args) => crate::install::cli::run_uninstall(args, &mut err),
        Command::Waypoint(args) => crate::install::cli::run_waypoint(args, &mut err),
    };
    ExitCode::from(code)
}

/// `meshctl analyze`: returns the exit code. Diagnostics go to `out`, the summary and I/O
/// errors to `err`.
pub fn run_analyze(args: &AnalyzeArgs, out: &mut dyn Write, err: &mut dyn Write) -> u8 {
    let analysis = match analyze::analyze_paths(&args.paths) {
        Ok(a) => a,
        Err(e) => {
            let _ = writeln!(err, "meshctl analyze: {e}");
            return EXIT_USAGE;
        }
    };
    let written = match args.output {
        OutputFormat::Text => write_text(&analysis, args.verbose, out),
        OutputFormat::Json => write_json(&analysis, args.verbose, out, err),
    };
    if let Err(e) = written.and_then(|()| out.flush()) {
        let _ = writeln!(err, "meshctl analyze: writing the report: {e}");
        return EXIT_USAGE;
    }
    let _ = writeln!(err, "{}", summary(&analysis));
    if analysis.has_errors() { EXIT_ERRORS } else { 0 }
}

fn write_text(analysis: &Analysis, verbose: bool, out: &mut dyn Write) -> std::io::Result<()> {
    for d in &analysis.diagnostics {
        writeln!(out, "{d}")?;
    }
    if verbose {
        for (object, origin, reason) in &analysis.ignored {
            writeln!(out, "{}", ignored_note(object, origin, reason))?;
        }
    }
    Ok(())
}

fn write_json(
    analysis: &Analysis,
    verbose: bool,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> std::io::Result<()> {
    serde_json::to_writer_pretty(&mut *out, &analysis.diagnostics)?;
    writeln!(out)?;
    // stdout stays one JSON document; notes are for people, so they go to stderr.
    if verbose {
        for (object, origin, reason) in &analysis.ignored {
            writeln!(err, "{}", ignored_note(object, origin, reason))?;
        }
    }
    Ok(())
}

/// `path:doc kind ns/name: note: ignored: ...`; the loader's reason is the apiVersion.
fn ignored_note(object: &ObjectRef, origin: &Origin, api_version: &str) -> String {
    format!("{origin} {object}: note: ignored: {api_version} objects are not read by the mesh")
}

fn summary(analysis: &Analysis) -> String {
    let errors = analysis.count(Severity::Error);
    let warnings = analysis.diagnostics.len() - errors;
    format!(
        "meshctl analyze: {}, {} in {} from {} ({} ignored): {}",
        plural(errors, "error"),
        plural(warnings, "warning"),
        plural(analysis.objects, "object"),
        plural(analysis.files, "file"),
        analysis.ignored.len(),
        if errors > 0 { "FAILED" } else { "ok" }
    )
}

fn plural(n: usize, word: &str) -> String {
    if n == 1 { format!("1 {word}") } else { format!("{n} {word}s") }
}
