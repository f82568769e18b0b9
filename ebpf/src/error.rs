//! `EbpfError`: every failure of the loader, naming the program, map, pin path or netns and
//! the step that failed.

use std::io;
use std::path::PathBuf;

/// A capture loader failure.
#[derive(Debug, thiserror::Error)]
pub enum EbpfError {
    /// bpffs could not be checked or mounted.
    #[error("bpffs at {path}: {step}: {source}")]
    Bpffs {
        /// The folder that must be on bpffs.
        path: PathBuf,
        /// What was being done (statfs, mount).
        step: &'static str,
        /// The OS error.
        source: io::Error,
    },
    /// A pin folder is not on a bpf filesystem.
    #[error("{path} is not on a bpf filesystem (statfs magic {magic:#x}, want 0xcafe4a11)")]
    NotBpffs {
        /// The folder.
        path: PathBuf,
        /// Its filesystem magic.
        magic: i64,
    },
    /// A pin folder could not be created or removed.
    #[error("pin folder {path}: {step}: {source}")]
    PinDir {
        /// The folder.
        path: PathBuf,
        /// create / remove.
        step: &'static str,
        /// The OS error.
        source: io::Error,
    },
    /// A cgroup folder could not be opened or attached to.
    #[error("cgroup {path} (for {program}): {step}: {source}")]
    Cgroup {
        /// The cgroup folder.
        path: PathBuf,
        /// The program to attach there.
        program: &'static str,
        /// open, BPF_LINK_CREATE.
        step: &'static str,
        /// The OS error.
        source: io::Error,
    },
    /// The BPF object could not be parsed or its maps created/re-opened.
    #[error("BPF object {object}.o (maps pinned under {maps_dir}): load: {source}")]
    Object {
        /// The object (attach point) name.
        object: &'static str,
        /// Where its maps are pinned.
        maps_dir: PathBuf,
        /// aya's error.
        source: Box<aya::EbpfError>,
    },
    /// A program is missing from its object, or has an unexpected type.
    #[error("program {program} in {object}.o: {reason}")]
    ProgramMissing {
        /// The program (function) name.
        program: &'static str,
        /// The object.
        object: &'static str,
        /// Why it cannot be used.
        reason: String,
    },
    /// A program could not be loaded, opened from its pin, attached or detached.
    #[error("program {program}: {step}: {source}")]
    Program {
        /// The program name.
        program: &'static str,
        /// load (verifier), pin, open pin, attach, take link.
        step: &'static str,
        /// aya's error (a verifier failure includes the log).
        source: Box<aya::programs::ProgramError>,
    },
    /// A program, map or link could not be pinned.
    #[error("pinning {what} at {path}: {source}")]
    Pin {
        /// The object pinned.
        what: &'static str,
        /// The pin path.
        path: PathBuf,
        /// aya's error.
        source: aya::pin::PinError,
    },
    /// A link could not be converted to a pinnable fd link.
    #[error("link of {program}: {step}: {source}")]
    Link {
        /// The program it belongs to.
        program: &'static str,
        /// The step.
        step: &'static str,
        /// aya's error.
        source: aya::programs::links::LinkError,
    },
    /// A map operation failed.
    #[error("map {map}: {step}: {source}")]
    Map {
        /// The map name.
        map: &'static str,
        /// open pin, insert, remove, lookup, iterate.
        step: String,
        /// aya's error.
        source: Box<aya::maps::MapError>,
    },
    /// Entering a network namespace or reading its cookie failed.
    #[error("netns {netns}: {step}: {source}")]
    Netns {
        /// The netns (`net:[inode]` or cookie).
        netns: String,
        /// setns, socket, getsockopt(SO_NETNS_COOKIE), list interfaces.
        step: &'static str,
        /// The OS error.
        source: io::Error,
    },
    /// Attaching inbound capture to a pod's netns failed with sk_lookup and the tc fallback.
    #[error("netns {netns}: attaching inbound capture: sk_lookup: {sk_lookup}; tc fallback: {tc}")]
    Inbound {
        /// The netns.
        netns: String,
        /// Why sk_lookup failed.
        sk_lookup: Box<EbpfError>,
        /// Why the tc fallback failed.
        tc: Box<EbpfError>,
    },
    /// sk_lookup was not loaded because `CaptureOptions::force_tc_fallback` is set (stands in
    /// for the verifier refusing it, as Linux < 5.17 does).
    #[error("program mesh_sk_lookup: load: not attempted (force_tc_fallback is set)")]
    SkLookupDisabled,
    /// The pod config cannot be captured.
    #[error("pod in netns {netns}: {reason}")]
    InvalidPod {
        /// The netns.
        netns: String,
        /// What is wrong.
        reason: &'static str,
    },
}
