//! `meshctl lab`: a cluster on this machine from the same YAML as everything else. Owns the
//! command line of `lab up/down/status/exec/logs/apply/delete` and the error type; the model
//! (materialised pods, addresses, hosts files) is in [`model`], the state file in [`state`],
//! kernel plumbing (netns, veth, cgroups, daemons) in [`sys`], the flows in `up`, `down` and
//! `ops`. Needs root.

mod down;
pub mod model;
mod ops;
pub mod state;
pub mod sys;
mod up;
mod waypoint;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Subcommand, ValueEnum};

/// `meshctl lab` arguments.
#[derive(Debug, clap::Args)]
pub struct LabArgs {
    #[command(subcommand)]
    pub command: LabCommand,
}

/// The lab's subcommands.
#[derive(Debug, Subcommand)]
pub enum LabCommand {
    /// Bring up a lab from YAML files or folders (validated first; nothing is made on errors).
    Up(UpArgs),
    /// Remove everything a lab made (processes, netns, veths, cgroups, pins, files); also after
    /// a crashed `lab up`. Idempotent.
    Down,
    /// Show nodes, pods, proxies and the CA of the running lab.
    Status,
    /// Run a command inside a pod: its netns, its cgroup, its hosts file.
    Exec(ExecArgs),
    /// Print a pod app's log.
    Logs(LogsArgs),
    /// Add or change objects of the running lab (new Running pods get a netns and an app).
    Apply(FileArgs),
    /// Remove objects from the running lab (their pods' netns and apps go away).
    Delete(FileArgs),
    /// Restart a node's ztunnel (stopping it first if it still runs), as deleting a DaemonSet
    /// pod would; waits until the new one is ready.
    Restart(RestartArgs),
}

/// `lab restart` arguments.
#[derive(Debug, clap::Args)]
pub struct RestartArgs {
    /// What to restart (only `ztunnel` for now).
    #[arg(value_parser = ["ztunnel"])]
    pub what: String,
    /// The node whose ztunnel restarts.
    pub node: String,
}

/// `lab up` arguments.
#[derive(Debug, clap::Args)]
pub struct UpArgs {
    /// YAML/JSON files or folders (recursive), as for `meshctl analyze`.
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// How ztunnel captures the pods' traffic.
    #[arg(long, value_enum, default_value_t = CaptureMode::Ebpf)]
    pub capture: CaptureMode,
    /// How long to wait for each process to become ready (e.g. 30s, 500ms).
    #[arg(long, default_value = "30s", value_parser = parse_timeout)]
    pub timeout: Duration,
}

/// Capture mode written into each ztunnel's configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CaptureMode {
    /// No capture: ztunnel runs, pods' traffic goes direct.
    None,
    /// In-pod eBPF capture (cgroup programs on the lab's pods cgroup, sk_lookup per pod).
    Ebpf,
}

impl CaptureMode {
    pub fn as_str(self) -> &'static str {
        match self {
            CaptureMode::None => "none",
            CaptureMode::Ebpf => "ebpf",
        }
    }
}

/// `lab exec` arguments.
#[derive(Debug, clap::Args)]
pub struct ExecArgs {
    /// `name` or `namespace/name` of a Running pod.
    pub pod: String,
    /// The command and its arguments (after `--`).
    #[arg(required = true, last = true, value_name = "CMD")]
    pub command: Vec<String>,
}

/// `lab logs` arguments.
#[derive(Debug, clap::Args)]
pub struct LogsArgs {
    /// `name` or `namespace/name` of a pod.
    pub pod: String,
    /// Keep printing lines as they are written (until interrupted).
    #[arg(short, long)]
    pub follow: bool,
}

/// `lab apply` / `lab delete` arguments.
#[derive(Debug, clap::Args)]
pub struct FileArgs {
    /// File or folder of objects.
    #[arg(short = 'f', long = "filename", required = true, value_name = "PATH")]
    pub files: Vec<PathBuf>,
    /// Apply even when the lab's whole input then has cross-object errors (a route to an
    /// undefined subset, ...): they are printed as warnings and the proxies handle them as they
    /// would in a cluster. Invalid documents are still refused.
    #[arg(long)]
    pub force: bool,
}

fn parse_timeout(s: &str) -> Result<Duration, String> {
    mesh_api::duration::parse_config(s).map_err(|e| e.to_string())
}

/// Why a lab command failed. Each names the step, the object (file, netns, pod, process) and
/// the reason.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error("the input has {errors} error(s) (listed above); nothing was created")]
    Invalid { errors: usize },
    #[error("{}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{object}: {field}: {reason}")]
    Workload { object: String, field: String, reason: String },
    #[error("a lab is already up (state {}{}): run `meshctl lab down` first", state.display(), detail)]
    AlreadyUp { state: PathBuf, detail: String },
    #[error("no lab is up (no {})", state.display())]
    NotUp { state: PathBuf },
    #[error("{}: unreadable lab state: {reason}", path.display())]
    State { path: PathBuf, reason: String },
    #[error("{step}: `{command}` failed: {reason}")]
    Command { step: String, command: String, reason: String },
    #[error("{step}: {}: {source}", path.display())]
    Io { step: String, path: PathBuf, source: std::io::Error },
    #[error("{what}: binary {name} not found at {} ({hint}; or set MESHLAB_BIN_DIR)", path.display())]
    MissingBinary { what: String, name: String, path: PathBuf, hint: String },
    #[error("{what}: starting {}: {source}", program.display())]
    Spawn { what: String, program: PathBuf, source: std::io::Error },
    #[error("{what}: not ready after {waited:?}: {reason}{}", tail_text(log_tail))]
    NotReady { what: String, waited: Duration, reason: String, log_tail: String },
    #[error("{what}: exited ({status}){}", tail_text(log_tail))]
    Exited { what: String, status: String, log_tail: String },
    #[error("no cgroup v2 mount found in /proc/self/mountinfo (the lab puts pods in cgroup v2)")]
    NoCgroup2,
    #[error("the lab needs root (network namespaces, cgroups, bpffs)")]
    NotRoot,
    #[error("pod {pod:?}: {reason}")]
    Pod { pod: String, reason: String },
}

fn tail_text(tail: &str) -> String {
    if tail.trim().is_empty() { String::new() } else { format!("; last log lines:\n{}", tail.trim_end()) }
}

/// The lab's state folder: `/run/meshlab`, or `$MESHLAB_STATE_DIR`.
/// Made absolute: the lab's processes run from `/` and read paths from their configs.
pub fn state_dir() -> PathBuf {
    let dir = std::env::var_os("MESHLAB_STATE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/run/meshlab"));
    if dir.is_relative() { std::env::current_dir().map(|c| c.join(&dir)).unwrap_or(dir) } else { dir }
}

/// The file lock tests (and scripts) hold around `lab up` .. `lab down`, because the lab's
/// netns and cgroup names are global: `/run/meshlab.lock`.
pub const GLOBAL_LOCK: &str = "/run/meshlab.lock";

/// An exclusive `flock` on [`GLOBAL_LOCK`]; released on drop.
#[derive(Debug)]
pub struct LabLock {
    _file: std::fs::File,
}

/// Takes the global lab lock, waiting for other holders (tests run labs one at a time).
pub fn global_lock() -> std::io::Result<LabLock> {
    lock_file(Path::new(GLOBAL_LOCK))
}

/// Takes an exclusive `flock` on `path` (created if missing), waiting for other holders.
pub fn lock_file(path: &Path) -> std::io::Result<LabLock> {
    use std::os::fd::AsRawFd;
    let file = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(path)?;
    loop {
        // SAFETY: flock on an fd we own; no memory is passed.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
        if rc == 0 {
            return Ok(LabLock { _file: file });
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Runs a lab command; returns the exit code.
pub fn run(args: LabArgs, out: &mut dyn Write, err: &mut dyn Write) -> u8 {
    if let LabCommand::Exec(a) = &args.command {
        return match ops::exec(a) {
            Ok(code) => code,
            Err(e) => {
                let _ = writeln!(err, "meshctl lab exec: {e}");
                126
            }
        };
    }
    let (name, result) = match args.command {
        LabCommand::Up(a) => ("up", up::up(&a, out, err)),
        LabCommand::Down => ("down", down::down(out)),
        LabCommand::Status => ("status", ops::status(out)),
        LabCommand::Logs(a) => ("logs", ops::logs(&a, out)),
        LabCommand::Apply(a) => ("apply", ops::apply(&a.files, false, a.force, out, err)),
        LabCommand::Delete(a) => ("delete", ops::apply(&a.files, true, a.force, out, err)),
        LabCommand::Restart(a) => ("restart", ops::restart_ztunnel(&a.node, out)),
        LabCommand::Exec(_) => unreachable!("handled above"),
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            let _ = writeln!(err, "meshctl lab {name}: {e}");
            1
        }
    }
}

/// Fails unless running as root.
fn require_root() -> Result<(), LabError> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 { Err(LabError::NotRoot) } else { Ok(()) }
}
