//! bpffs handling: mounting it at /sys/fs/bpf when it is not a bpf mount, checking that a pin
//! folder is on bpffs, and creating/removing pin folders.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::EbpfError;

/// statfs f_type of bpffs.
const BPF_FS_MAGIC: i64 = 0xcafe4a11;
/// Where bpffs is conventionally mounted.
pub(crate) const BPFFS_ROOT: &str = "/sys/fs/bpf";

fn cpath(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes()).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
}

/// The filesystem magic of `path`.
pub(crate) fn fs_magic(path: &Path) -> io::Result<i64> {
    let c = cpath(path)?;
    // SAFETY: an all-zero statfs is a valid value for the kernel to overwrite.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a NUL-terminated path and `st` a valid, writable statfs.
    let rc = unsafe { libc::statfs(c.as_ptr(), &mut st) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    #[allow(clippy::unnecessary_cast)] // f_type's width differs between targets
    Ok(st.f_type as i64)
}

/// Mounts bpffs at /sys/fs/bpf if `pin_dir` lives there and it is not a bpf mount yet, then
/// creates `pin_dir` and checks it is on bpffs.
pub(crate) fn ensure_pin_dir(pin_dir: &Path) -> Result<(), EbpfError> {
    let root = Path::new(BPFFS_ROOT);
    if pin_dir.starts_with(root) {
        let magic = fs_magic(root).map_err(|source| EbpfError::Bpffs {
            path: root.into(),
            step: "statfs",
            source,
        })?;
        if magic != BPF_FS_MAGIC {
            mount_bpffs(root)?;
        }
    }
    create_dir(pin_dir)?;
    check_bpffs(pin_dir)
}

/// Errors unless `path` is on bpffs (guards `remove_dir_all` against a wrong path).
pub(crate) fn check_bpffs(path: &Path) -> Result<(), EbpfError> {
    let magic =
        fs_magic(path).map_err(|source| EbpfError::Bpffs { path: path.into(), step: "statfs", source })?;
    if magic != BPF_FS_MAGIC {
        return Err(EbpfError::NotBpffs { path: path.into(), magic });
    }
    Ok(())
}

fn mount_bpffs(root: &Path) -> Result<(), EbpfError> {
    let err = |source| EbpfError::Bpffs { path: root.into(), step: "mount -t bpf", source };
    let target = cpath(root).map_err(err)?;
    let fstype = c"bpf";
    // SAFETY: all pointers are NUL-terminated strings that outlive the call; data is NULL.
    let rc = unsafe { libc::mount(fstype.as_ptr(), target.as_ptr(), fstype.as_ptr(), 0, std::ptr::null()) };
    if rc != 0 {
        return Err(err(io::Error::last_os_error()));
    }
    tracing::info!(path = %root.display(), "mounted bpffs");
    Ok(())
}

/// `mkdir -p` on bpffs.
pub(crate) fn create_dir(path: &Path) -> Result<(), EbpfError> {
    std::fs::create_dir_all(path).map_err(|source| EbpfError::PinDir {
        path: path.into(),
        step: "create",
        source,
    })
}

/// `rm -r` of a pin folder (unpinning links detaches them). Missing is fine.
pub(crate) fn remove_tree(path: &Path) -> Result<(), EbpfError> {
    match std::fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(EbpfError::PinDir { path: PathBuf::from(path), step: "remove", source }),
    }
}
