//! The operating-system calls behind the file backend: whole-file write
//! locks (OFD `fcntl` or `flock`) and their errors, `fstat`, the multigrain
//! timestamp probe and the clocks (of the checks and of the fencing tokens).
//! Everything here is synchronous and may block; nothing here knows lock
//! names, caches or backends.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::Path;

use locks_core::Error;

use crate::Mechanism;

/// Tries to lock `file` without waiting. `Ok(false)` if someone else holds it.
pub(crate) fn try_lock(file: &File, mechanism: Mechanism) -> io::Result<bool> {
    let result = match mechanism {
        Mechanism::Ofd => ofd::set_lock(file, false, true),
        Mechanism::Flock => fs2::FileExt::try_lock_exclusive(file),
    };
    match result {
        Ok(()) => Ok(true),
        Err(e) if is_contended(&e) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Waits in the kernel until `file` is locked, retrying on `EINTR`.
pub(crate) fn lock_wait(file: &File, mechanism: Mechanism) -> io::Result<()> {
    loop {
        let result = match mechanism {
            Mechanism::Ofd => ofd::set_lock(file, true, true),
            Mechanism::Flock => fs2::FileExt::lock_exclusive(file),
        };
        match result {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

/// Releases the lock on `file` (the descriptor stays open).
pub(crate) fn unlock(file: &File, mechanism: Mechanism) -> io::Result<()> {
    match mechanism {
        Mechanism::Ofd => ofd::set_lock(file, false, false),
        // Called through the trait: `File` has an inherent `unlock` since Rust 1.89.
        Mechanism::Flock => fs2::FileExt::unlock(file),
    }
}

/// The error numbers that mean "someone else holds the lock".
fn is_contended(err: &io::Error) -> bool {
    matches!(
        err.raw_os_error(),
        Some(code) if code == libc::EAGAIN || code == libc::EACCES || code == libc::EWOULDBLOCK
    )
}

pub(crate) fn lock_error(
    path: &Path,
    mechanism: Mechanism,
    blocking: bool,
    err: io::Error,
) -> Error {
    let call = match (mechanism, blocking) {
        (Mechanism::Ofd, true) => "fcntl(F_OFD_SETLKW, F_WRLCK)",
        (Mechanism::Ofd, false) => "fcntl(F_OFD_SETLK, F_WRLCK)",
        (Mechanism::Flock, true) => "flock(LOCK_EX)",
        (Mechanism::Flock, false) => "flock(LOCK_EX|LOCK_NB)",
    };
    let hint = match err.raw_os_error() {
        Some(libc::EINVAL) if mechanism == Mechanism::Ofd => {
            " (OFD locks need Linux 3.15 or newer; use the `flock` mechanism on older kernels)"
        }
        Some(libc::ENOLCK) => " (the file system offers no locks here: on NFS, is lockd running?)",
        Some(libc::EDEADLK) => " (the kernel detected a deadlock between lock holders)",
        _ => "",
    };
    Error::io(
        format_args!("cannot lock {} with {call}{hint}", path.display()),
        err,
    )
}

/// Whether the file system of `dir` gives a file a strictly later ctime at
/// every change that follows a read of its ctime, even within one tick of the
/// coarse clock: Linux's multigrain timestamps (6.13 and newer, on ext4, xfs,
/// btrfs and tmpfs), meant for exactly this kind of change detection.
///
/// Probed, not assumed: an unnamed file (`O_TMPFILE`, gone when closed) in
/// `dir` has its mode changed three times, its ctime read after each, all
/// while the coarse clock stands still; coarse timestamps would repeat. Any
/// failure (no `O_TMPFILE`, no write access, the clock ticked every time)
/// answers `false`.
pub(crate) fn later_ctime_after_read(dir: &Path) -> bool {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        let Ok(file) = OpenOptions::new()
            .read(true)
            .write(true)
            .mode(0o600)
            .custom_flags(libc::O_TMPFILE)
            .open(dir)
        else {
            return false;
        };
        let ctime = || fstat(&file).ok().map(|s| s.ctime);
        for _ in 0..3 {
            let before = coarse_clock();
            let mut increasing = true;
            let mut last = ctime();
            for mode in [0o640, 0o600, 0o640] {
                if file
                    .set_permissions(std::fs::Permissions::from_mode(mode))
                    .is_err()
                {
                    return false;
                }
                let now = ctime();
                increasing &= matches!((last, now), (Some(a), Some(b)) if b > a);
                last = now;
            }
            if before.is_some() && coarse_clock() == before {
                return increasing;
            }
        }
        false
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = dir;
        false
    }
}

/// The parts of `struct stat` the checks use.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Stat {
    pub(crate) dev: u64,
    pub(crate) ino: u64,
    pub(crate) mode: u32,
    pub(crate) nlink: u64,
    /// The status-change time in nanoseconds.
    pub(crate) ctime: i128,
    /// The nanoseconds part of `ctime` as the file system stored it.
    pub(crate) ctime_nsec: i64,
}

/// `fstat(2)` of `file`.
#[allow(clippy::unnecessary_cast)] // The field types differ between targets.
pub(crate) fn fstat(file: &File) -> io::Result<Stat> {
    use std::os::fd::AsRawFd;
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    let fd = file.as_raw_fd();
    // The plain `fstat` system call: the C library's `fstat` goes through
    // `fstatat(fd, "", AT_EMPTY_PATH)`, which costs the kernel a look at the
    // empty path. The kernel's `struct stat` is the C library's on x86-64.
    #[cfg(all(
        target_os = "linux",
        target_arch = "x86_64",
        target_pointer_width = "64"
    ))]
    // SAFETY: `fd` is open for the lifetime of `file` and `st` is writable
    // memory the size of the kernel's `struct stat` on this target.
    let rc = unsafe { libc::syscall(libc::SYS_fstat, fd, st.as_mut_ptr()) };
    #[cfg(not(all(
        target_os = "linux",
        target_arch = "x86_64",
        target_pointer_width = "64"
    )))]
    // SAFETY: as above.
    let rc = unsafe { libc::fstat(fd, st.as_mut_ptr()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the call succeeded, so it filled `st`.
    let st = unsafe { st.assume_init() };
    Ok(Stat {
        dev: st.st_dev as u64,
        ino: st.st_ino as u64,
        mode: st.st_mode as u32,
        nlink: st.st_nlink as u64,
        ctime: i128::from(st.st_ctime) * 1_000_000_000 + i128::from(st.st_ctime_nsec),
        ctime_nsec: st.st_ctime_nsec as i64,
    })
}

/// The coarse real-time clock in nanoseconds: the clock, truncated to the
/// file system's granularity, that the kernel stamps inode changes with (a
/// change may get a finer, later time, never an earlier one). `None` where
/// there is no such clock.
pub(crate) fn coarse_clock() -> Option<i128> {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: all-zero bytes are a valid `timespec`.
        let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
        // SAFETY: `ts` is a valid, writable `timespec` for the call.
        let rc = unsafe { libc::clock_gettime(libc::CLOCK_REALTIME_COARSE, &mut ts) };
        (rc == 0).then(|| i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec))
    }
    #[cfg(not(target_os = "linux"))]
    {
        None
    }
}

/// Nanoseconds of `CLOCK_BOOTTIME` (`CLOCK_MONOTONIC` where there is no boot
/// clock); 0 if the clock cannot be read.
pub(crate) fn clock_nanos() -> u64 {
    #[cfg(target_os = "linux")]
    const CLOCK: libc::clockid_t = libc::CLOCK_BOOTTIME;
    #[cfg(not(target_os = "linux"))]
    const CLOCK: libc::clockid_t = libc::CLOCK_MONOTONIC;

    // SAFETY: `timespec` is a plain C struct for which all-zero bytes are a valid value.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: `ts` is a valid, writable `timespec` for the duration of the call.
    let rc = unsafe { libc::clock_gettime(CLOCK, &mut ts) };
    if rc != 0 {
        return 0;
    }
    let secs = u64::try_from(ts.tv_sec).unwrap_or(0);
    let nanos = u64::try_from(ts.tv_nsec).unwrap_or(0);
    secs.saturating_mul(1_000_000_000).saturating_add(nanos)
}

#[cfg(target_os = "linux")]
mod ofd {
    use std::fs::File;
    use std::io;
    use std::os::fd::AsRawFd;

    /// `fcntl(F_OFD_SETLK[W])` over the whole file: a write lock if `lock`, else an unlock.
    pub(super) fn set_lock(file: &File, wait: bool, lock: bool) -> io::Result<()> {
        // SAFETY: `flock` is a plain C struct for which all-zero bytes are a
        // valid value; OFD locks require `l_pid` to be 0, which this gives.
        let mut fl: libc::flock = unsafe { std::mem::zeroed() };
        // The constants are small (0..=2); `c_short` holds them on every target.
        fl.l_type = if lock { libc::F_WRLCK } else { libc::F_UNLCK } as libc::c_short;
        fl.l_whence = libc::SEEK_SET as libc::c_short;
        fl.l_start = 0;
        fl.l_len = 0;
        fl.l_pid = 0;
        let cmd = if wait {
            libc::F_OFD_SETLKW
        } else {
            libc::F_OFD_SETLK
        };
        // SAFETY: the descriptor is open for the lifetime of `file`, and `fl`
        // is a valid `struct flock` that outlives the call.
        let rc = unsafe { libc::fcntl(file.as_raw_fd(), cmd, &mut fl) };
        if rc == -1 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }
}

#[cfg(not(target_os = "linux"))]
mod ofd {
    use std::fs::File;
    use std::io;

    /// OFD locks exist only on Linux; `FileBackend::open` refuses them elsewhere.
    pub(super) fn set_lock(_file: &File, _wait: bool, _lock: bool) -> io::Result<()> {
        Err(io::Error::from(io::ErrorKind::Unsupported))
    }
}
