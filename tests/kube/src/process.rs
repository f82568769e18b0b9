//! A child process of the suite (etcd, kube-apiserver): output to a log file in the temp dir,
//! killed and reaped when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};

use anyhow::Context;

/// Lines of a process log shown when it fails.
const TAIL_LINES: usize = 40;

pub(crate) struct Proc {
    pub(crate) name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Proc {
    pub(crate) fn spawn(name: &'static str, bin: &Path, args: &[String], log: &Path) -> anyhow::Result<Proc> {
        let out = std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone()?;
        let child = Command::new(bin)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("starting {name} from {}", bin.display()))?;
        Ok(Proc { name, child, log: log.to_path_buf() })
    }

    pub(crate) fn exited(&mut self) -> anyhow::Result<Option<ExitStatus>> {
        Ok(self.child.try_wait()?)
    }

    /// The last lines of the log, for error messages.
    pub(crate) fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let start = lines.len().saturating_sub(TAIL_LINES);
        format!("--- last lines of {} ---\n{}", self.log.display(), lines[start..].join("\n"))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
