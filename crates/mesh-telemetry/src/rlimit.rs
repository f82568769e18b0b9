//! The open-files limit. A proxy holds two descriptors per proxied connection (more with
//! pooled upstreams), so the usual default soft limit of 1024 caps it near 1,000 connections.
//! As Istio's ztunnel does, the soft limit is raised to the hard limit at startup.

use std::io;

/// Raises `RLIMIT_NOFILE`'s soft limit to its hard limit and returns `(soft, hard)` as they
/// are afterwards (`u64::MAX` for `RLIM_INFINITY`). Nothing is changed when the soft limit
/// already equals the hard one.
pub fn raise_open_files_limit() -> io::Result<(u64, u64)> {
    let mut lim = get()?;
    if lim.rlim_cur != lim.rlim_max {
        lim.rlim_cur = lim.rlim_max;
        // SAFETY: `lim` is a valid, initialised `rlimit` that outlives the call; setrlimit
        // only reads it.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
            return Err(io::Error::last_os_error());
        }
        lim = get()?;
    }
    Ok((lim.rlim_cur as u64, lim.rlim_max as u64))
}

fn get() -> io::Result<libc::rlimit> {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: `lim` is a valid, writable `rlimit` that outlives the call; getrlimit only
    // writes it.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(lim)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn soft_limit_is_raised_to_the_hard_limit() {
        // Start below the hard limit (when not already), so the raise is what is checked; never
        // below the usual default of 1024, as other tests in this process run meanwhile.
        let before = get().unwrap();
        if before.rlim_cur == before.rlim_max && before.rlim_max > 1024 {
            let lower = libc::rlimit { rlim_cur: 1024, rlim_max: before.rlim_max };
            // SAFETY: as in `raise_open_files_limit`; lowering the soft limit is always allowed.
            assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lower) }, 0);
            assert_eq!(get().unwrap().rlim_cur, 1024);
        }
        let (soft, hard) = raise_open_files_limit().unwrap();
        assert_eq!(soft, hard);
        let after = get().unwrap();
        assert_eq!(after.rlim_cur, after.rlim_max, "getrlimit: soft == hard");
        assert_eq!((after.rlim_cur as u64, after.rlim_max as u64), (soft, hard));
        assert_eq!(after.rlim_max, before.rlim_max, "the hard limit is untouched");
        // Idempotent.
        assert_eq!(raise_open_files_limit().unwrap(), (soft, hard));
    }
}
