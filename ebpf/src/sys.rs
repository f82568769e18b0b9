//! Raw `bpf(2)` calls aya 0.14 does not expose: creating a cgroup link for a program whose aya
//! link type cannot become a pinnable `FdLink` (cgroup/getsockopt), and pinning that link.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// enum bpf_cmd values (uapi linux/bpf.h).
const BPF_OBJ_PIN: libc::c_long = 6;
const BPF_LINK_CREATE: libc::c_long = 28;
/// enum bpf_attach_type value (uapi linux/bpf.h).
pub(crate) const BPF_CGROUP_GETSOCKOPT: u32 = 21;

/// A zeroed `union bpf_attr` prefix (the kernel checks unused tail bytes are zero).
#[repr(C, align(8))]
struct Attr([u32; 16]);

fn bpf(cmd: libc::c_long, attr: &mut Attr) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a valid, initialised buffer of the size passed; the kernel reads only
    // the fields of `cmd` and checks the rest is zero.
    let rc = unsafe {
        libc::syscall(libc::SYS_bpf, cmd, attr as *mut Attr, std::mem::size_of::<Attr>() as libc::c_uint)
    };
    if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(rc) }
}

/// `BPF_LINK_CREATE` of `prog` on the cgroup `target` (flags 0: links stack).
pub(crate) fn link_create(
    prog: BorrowedFd<'_>,
    target: BorrowedFd<'_>,
    attach_type: u32,
) -> io::Result<OwnedFd> {
    let mut attr = Attr([0; 16]);
    attr.0[0] = prog.as_raw_fd() as u32;
    attr.0[1] = target.as_raw_fd() as u32;
    attr.0[2] = attach_type;
    let fd = bpf(BPF_LINK_CREATE, &mut attr)?;
    // SAFETY: the kernel returned a fresh link fd that nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) })
}

/// `BPF_OBJ_PIN` of any bpf fd at `path` (on bpffs).
pub(crate) fn obj_pin(fd: BorrowedFd<'_>, path: &Path) -> io::Result<()> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let mut attr = Attr([0; 16]);
    let ptr = c.as_ptr() as u64;
    attr.0[0] = ptr as u32;
    attr.0[1] = (ptr >> 32) as u32;
    attr.0[2] = fd.as_raw_fd() as u32;
    bpf(BPF_OBJ_PIN, &mut attr).map(|_| ())
}

const BPF_OBJ_GET: libc::c_long = 7;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;

/// `BPF_OBJ_GET`: opens a pinned object.
pub(crate) fn obj_get(path: &Path) -> io::Result<OwnedFd> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let mut attr = Attr([0; 16]);
    let ptr = c.as_ptr() as u64;
    attr.0[0] = ptr as u32;
    attr.0[1] = (ptr >> 32) as u32;
    let fd = bpf(BPF_OBJ_GET, &mut attr)?;
    // SAFETY: the kernel returned a fresh fd that nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) })
}

/// The cgroup id a cgroup link is attached to (0 once the cgroup is gone: defunct link).
pub(crate) fn link_cgroup_id(link: BorrowedFd<'_>) -> io::Result<u64> {
    // struct bpf_link_info: type, id, prog_id, then the (8-aligned) union at byte 16, whose
    // cgroup member starts with the u64 cgroup_id.
    let mut info = Attr([0; 16]);
    let mut attr = Attr([0; 16]);
    let ptr = &mut info as *mut Attr as u64;
    attr.0[0] = link.as_raw_fd() as u32;
    attr.0[1] = std::mem::size_of::<Attr>() as u32;
    attr.0[2] = ptr as u32;
    attr.0[3] = (ptr >> 32) as u32;
    bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr)?;
    Ok(u64::from(info.0[4]) | (u64::from(info.0[5]) << 32))
}
