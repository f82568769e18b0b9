//! The embedded BPF objects (one per attach point, built by build.rs) and the pin layout:
//! loading each program once and pinning it, re-opening programs from their pins, and
//! attaching cgroup programs with pinned links.

use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use aya::programs::links::FdLink;
use aya::programs::{
    CgroupAttachMode, CgroupSockAddr, CgroupSockAddrAttachType, CgroupSockopt, CgroupSockoptAttachType,
    ProgramError, SchedClassifier, SkLookup, SockOps,
};
use aya::{EbpfLoader, include_bytes_aligned};

use crate::{EbpfError, sys};

/// Every map, as named in bpf/include/maps.h (pinned as `<pin_dir>/maps/<name>`).
pub(crate) const MAPS: &[&str] = &[
    "mesh_pods",
    "mesh_pod_ips",
    "mesh_listeners",
    "mesh_orig_ck",
    "mesh_orig_tup",
    "mesh_counters",
    "mesh_config",
];

/// Program type and attach point.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Kind {
    /// cgroup/connect4, connect6, getpeername4/6, on the pods cgroup.
    SockAddr(CgroupSockAddrAttachType),
    /// sockops on the pods cgroup.
    SockOps,
    /// cgroup/getsockopt on the proxy cgroup.
    GetSockopt,
    /// sk_lookup, per pod netns.
    SkLookup,
    /// tc ingress fallback, per pod interface.
    Tc,
}

/// A program of an object.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Prog {
    /// Function name in the C file (also the pin name).
    pub name: &'static str,
    pub kind: Kind,
}

/// An embedded object.
pub(crate) struct Object {
    pub name: &'static str,
    pub bytes: &'static [u8],
    pub progs: &'static [Prog],
}

macro_rules! object {
    ($name:literal, [$($prog:literal => $kind:expr),+ $(,)?]) => {
        Object {
            name: $name,
            bytes: include_bytes_aligned!(concat!(env!("OUT_DIR"), "/", $name, ".o")),
            progs: &[$(Prog { name: $prog, kind: $kind }),+],
        }
    };
}

/// All objects, in load order.
pub(crate) fn objects() -> [Object; 7] {
    [
        object!("connect4", ["mesh_connect4" => Kind::SockAddr(CgroupSockAddrAttachType::Connect4)]),
        object!("connect6", ["mesh_connect6" => Kind::SockAddr(CgroupSockAddrAttachType::Connect6)]),
        object!("sockops", ["mesh_sockops" => Kind::SockOps]),
        object!("getsockopt", ["mesh_getsockopt" => Kind::GetSockopt]),
        object!("getpeername", [
            "mesh_getpeername4" => Kind::SockAddr(CgroupSockAddrAttachType::GetPeerName4),
            "mesh_getpeername6" => Kind::SockAddr(CgroupSockAddrAttachType::GetPeerName6),
        ]),
        object!("sk_lookup", ["mesh_sk_lookup" => Kind::SkLookup]),
        object!("tc_ingress", ["mesh_tc_ingress" => Kind::Tc]),
    ]
}

/// Paths under a pin folder.
#[derive(Clone, Debug)]
pub(crate) struct Layout {
    pub root: PathBuf,
}

impl Layout {
    pub fn maps(&self) -> PathBuf {
        self.root.join("maps")
    }
    pub fn map(&self, name: &str) -> PathBuf {
        self.maps().join(name)
    }
    pub fn progs(&self) -> PathBuf {
        self.root.join("progs")
    }
    pub fn prog(&self, name: &str) -> PathBuf {
        self.progs().join(name)
    }
    pub fn links(&self) -> PathBuf {
        self.root.join("links")
    }
    pub fn link(&self, name: &str) -> PathBuf {
        self.links().join(name)
    }
    pub fn netns_root(&self) -> PathBuf {
        self.root.join("netns")
    }
    pub fn netns(&self, cookie: u64) -> PathBuf {
        self.netns_root().join(cookie.to_string())
    }
}

fn prog_err(program: &'static str, step: &'static str) -> impl FnOnce(ProgramError) -> EbpfError {
    move |source| EbpfError::Program { program, step, source: Box::new(source) }
}

/// The object whose load failure is not fatal: pods then get the tc ingress fallback.
pub(crate) const SK_LOOKUP_OBJECT: &str = "sk_lookup";

/// Loads and pins every program not pinned yet. Maps are created once and pinned by name
/// (aya re-opens a pinned map instead of creating it), so every object shares them.
/// sk_lookup is optional: Linux < 5.17's verifier refuses it (it reads `ingress_ifindex`), so
/// its failure (or `want_sk_lookup == false`) is returned instead of failing the load.
pub(crate) fn load_missing(layout: &Layout, want_sk_lookup: bool) -> Result<Option<EbpfError>, EbpfError> {
    let mut sk_lookup_err = None;
    for object in objects() {
        let optional = object.name == SK_LOOKUP_OBJECT;
        let result = if optional && !want_sk_lookup {
            Err(EbpfError::SkLookupDisabled)
        } else {
            load_object(layout, &object)
        };
        match result {
            Ok(()) => {}
            Err(e) if optional => sk_lookup_err = Some(e),
            Err(e) => return Err(e),
        }
    }
    Ok(sk_lookup_err)
}

fn load_object(layout: &Layout, object: &Object) -> Result<(), EbpfError> {
    if object.progs.iter().all(|p| layout.prog(p.name).exists()) {
        return Ok(());
    }
    let mut loader = EbpfLoader::new();
    let map_paths: Vec<(&'static str, PathBuf)> = MAPS.iter().map(|m| (*m, layout.map(m))).collect();
    for (name, path) in &map_paths {
        loader.map_pin_path(name, path.as_path());
    }
    let mut ebpf = loader.load(object.bytes).map_err(|source| EbpfError::Object {
        object: object.name,
        maps_dir: layout.maps(),
        source: Box::new(source),
    })?;
    for prog in object.progs {
        let path = layout.prog(prog.name);
        if path.exists() {
            continue;
        }
        let program = ebpf.program_mut(prog.name).ok_or_else(|| EbpfError::ProgramMissing {
            program: prog.name,
            object: object.name,
            reason: "not in the object".into(),
        })?;
        load_and_pin(program, *prog, &path)?;
        tracing::debug!(program = prog.name, path = %path.display(), "loaded and pinned");
    }
    Ok(())
}

/// Loads one program of a parsed object (typed by its attach point) and pins it.
fn load_and_pin(program: &mut aya::programs::Program, prog: Prog, path: &Path) -> Result<(), EbpfError> {
    let ty = |e| prog_err(prog.name, "program type")(e);
    let load = |e| prog_err(prog.name, "load (verifier)")(e);
    let pin = |source| EbpfError::Pin { what: "program", path: path.into(), source };
    macro_rules! go {
        ($t:ty) => {{
            let p: &mut $t = program.try_into().map_err(ty)?;
            p.load().map_err(load)?;
            p.pin(path).map_err(pin)?;
        }};
    }
    match prog.kind {
        Kind::SockAddr(_) => go!(CgroupSockAddr),
        Kind::SockOps => go!(SockOps),
        Kind::GetSockopt => go!(CgroupSockopt),
        Kind::SkLookup => go!(SkLookup),
        Kind::Tc => go!(SchedClassifier),
    }
    Ok(())
}

fn open_cgroup(path: &Path, program: &'static str) -> Result<File, EbpfError> {
    File::open(path).map_err(|source| EbpfError::Cgroup { path: path.into(), program, step: "open", source })
}

/// Attaches a pinned cgroup program to `cgroup` unless its link is already pinned (restart:
/// the kernel keeps it attached, attaching again would run it twice). Returns whether it
/// attached.
pub(crate) fn attach_cgroup(layout: &Layout, prog: Prog, cgroup: &Path) -> Result<bool, EbpfError> {
    let link_path = layout.link(prog.name);
    if pinned(&link_path) {
        // Keep it only if it is still attached to this cgroup (the cgroup may have been
        // recreated, leaving a defunct link, or the configured cgroup changed).
        let want = std::fs::metadata(cgroup).map(|m| m.ino()).ok();
        let have = sys::obj_get(&link_path).and_then(|fd| sys::link_cgroup_id(fd.as_fd())).ok();
        if want.is_some() && want == have {
            return Ok(false);
        }
        tracing::warn!(program = prog.name, link = %link_path.display(), ?have, ?want,
            "pinned link is not on the configured cgroup, re-attaching");
        std::fs::remove_file(&link_path).map_err(|source| EbpfError::PinDir {
            path: link_path.clone(),
            step: "remove stale link pin",
            source,
        })?;
    }
    let prog_path = layout.prog(prog.name);
    let cg = open_cgroup(cgroup, prog.name)?;
    let link: FdLink = match prog.kind {
        Kind::SockAddr(attach) => {
            let mut p =
                CgroupSockAddr::from_pin(&prog_path, attach).map_err(prog_err(prog.name, "open pin"))?;
            let id = p.attach(&cg, CgroupAttachMode::Single).map_err(prog_err(prog.name, "attach"))?;
            let link = p.take_link(id).map_err(prog_err(prog.name, "take link"))?;
            link.try_into().map_err(|source| EbpfError::Link {
                program: prog.name,
                step: "as fd link",
                source,
            })?
        }
        Kind::SockOps => {
            let mut p = SockOps::from_pin(&prog_path).map_err(prog_err(prog.name, "open pin"))?;
            let id = p.attach(&cg, CgroupAttachMode::Single).map_err(prog_err(prog.name, "attach"))?;
            let link = p.take_link(id).map_err(prog_err(prog.name, "take link"))?;
            link.try_into().map_err(|source| EbpfError::Link {
                program: prog.name,
                step: "as fd link",
                source,
            })?
        }
        Kind::GetSockopt => {
            // aya's CgroupSockoptLink cannot become an FdLink: create and pin the link directly.
            let p = CgroupSockopt::from_pin(&prog_path, CgroupSockoptAttachType::Get)
                .map_err(prog_err(prog.name, "open pin"))?;
            let prog_fd = p.fd().map_err(prog_err(prog.name, "program fd"))?;
            let link = sys::link_create(prog_fd.as_fd(), cg.as_fd(), sys::BPF_CGROUP_GETSOCKOPT).map_err(
                |source| EbpfError::Cgroup {
                    path: cgroup.into(),
                    program: prog.name,
                    step: "BPF_LINK_CREATE",
                    source,
                },
            )?;
            sys::obj_pin(link.as_fd(), &link_path).map_err(|source| EbpfError::PinDir {
                path: link_path.clone(),
                step: "pin getsockopt link",
                source,
            })?;
            tracing::info!(program = prog.name, cgroup = %cgroup.display(), "attached");
            return Ok(true);
        }
        Kind::SkLookup | Kind::Tc => {
            return Err(EbpfError::ProgramMissing {
                program: prog.name,
                object: "-",
                reason: "not a cgroup program".into(),
            });
        }
    };
    link.pin(&link_path).map_err(|source| EbpfError::Pin {
        what: "link",
        path: link_path.clone(),
        source,
    })?;
    tracing::info!(program = prog.name, cgroup = %cgroup.display(), "attached");
    Ok(true)
}

/// The pinned sk_lookup program.
pub(crate) fn sk_lookup(layout: &Layout) -> Result<SkLookup, EbpfError> {
    SkLookup::from_pin(layout.prog("mesh_sk_lookup")).map_err(prog_err("mesh_sk_lookup", "open pin"))
}

/// The pinned tc ingress program.
pub(crate) fn tc_ingress(layout: &Layout) -> Result<SchedClassifier, EbpfError> {
    SchedClassifier::from_pin(layout.prog("mesh_tc_ingress")).map_err(prog_err("mesh_tc_ingress", "open pin"))
}

/// Whether a path exists, treating errors other than NotFound as present (so we never attach
/// twice because of a transient error).
pub(crate) fn pinned(path: &Path) -> bool {
    match std::fs::symlink_metadata(path) {
        Ok(_) => true,
        Err(e) => e.kind() != io::ErrorKind::NotFound,
    }
}
