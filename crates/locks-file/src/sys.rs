//! The operating-system calls behind the file backend: opening lock files,
//! whole-file write locks (OFD `fcntl` or `flock`), inode checks and the clock
//! of the fencing tokens. Everything here is synchronous and may block.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use locks_core::{Error, ErrorKind, Result};

use crate::Mechanism;

/// A lock file this process holds a write lock on.
///
/// Dropping it unlocks (best effort) and then closes the descriptor; it never
/// unlinks the file. [`LockedFile::unlock`] does the same and reports errors.
pub(crate) struct LockedFile {
    file: File,
    path: PathBuf,
    mechanism: Mechanism,
    unlocked: bool,
}

impl LockedFile {
    /// The path the file was opened at.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Unlocks, then closes the file.
    pub(crate) fn unlock(mut self) -> Result<()> {
        self.unlocked = true;
        unlock(&self.file, self.mechanism).map_err(|e| {
            Error::io(
                format_args!(
                    "cannot release the {} lock on {}",
                    self.mechanism,
                    self.path.display()
                ),
                e,
            )
        })
        // `self` drops here and closes the descriptor, which releases the lock
        // even if the unlock call above failed.
    }
}

impl Drop for LockedFile {
    fn drop(&mut self) {
        if !self.unlocked {
            // Best effort: closing the descriptor below releases the lock anyway.
            let _ = unlock(&self.file, self.mechanism);
        }
    }
}

impl std::fmt::Debug for LockedFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LockedFile")
            .field("path", &self.path)
            .field("mechanism", &self.mechanism)
            .finish()
    }
}

/// What one attempt to lock a path ended with.
#[derive(Debug)]
pub(crate) enum Attempt {
    /// The lock is held on the file that `path` names.
    Acquired(LockedFile),
    /// Someone else holds it (only for non-blocking attempts).
    Busy,
}

/// How often [`lock_path`] starts again on a fresh file before giving up.
const MAX_STALE_RETRIES: usize = 1000;

/// Opens (creating if needed) the lock file at `path` and locks it.
///
/// With `blocking`, waits in the kernel until the lock is granted; `give_up`
/// is asked between retries whether anybody still wants the result. After
/// the lock is granted, the path is checked to still name the locked inode;
/// if someone unlinked or replaced the file meanwhile, the lock is dropped and
/// the whole thing starts again on a fresh file (at most
/// [`MAX_STALE_RETRIES`] times).
pub(crate) fn lock_path(
    path: &Path,
    mechanism: Mechanism,
    blocking: bool,
    give_up: &dyn Fn() -> bool,
) -> Result<Attempt> {
    for _ in 0..MAX_STALE_RETRIES {
        let file = open_lock_file(path)?;
        let granted = if blocking {
            lock_wait(&file, mechanism).map(|()| true)
        } else {
            try_lock(&file, mechanism)
        }
        .map_err(|e| lock_error(path, mechanism, blocking, e))?;
        if !granted {
            return Ok(Attempt::Busy);
        }
        let locked = LockedFile {
            file,
            path: path.to_owned(),
            mechanism,
            unlocked: false,
        };
        if names_same_file(&locked.file, path)? {
            return Ok(Attempt::Acquired(locked));
        }
        // The file was unlinked (or replaced) while we waited: the lock we got
        // protects nothing. Let go and lock whatever the path names now.
        locked.unlock()?;
        if give_up() {
            return Ok(Attempt::Busy);
        }
    }
    Err(Error::new(
        ErrorKind::Io,
        format!(
            "lock file {} was replaced or removed {MAX_STALE_RETRIES} times in a row while \
             being locked: stop whatever keeps deleting files in the lock directory",
            path.display()
        ),
    ))
}

/// Opens the lock file at `path` for a write lock: `O_RDWR|O_CREAT|O_NOFOLLOW|O_CLOEXEC`, mode 0644.
pub(crate) fn open_lock_file(path: &Path) -> Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .mode(0o644)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| open_error(path, e))?;
    ensure_regular(&file, path)?;
    Ok(file)
}

/// Opens an existing lock file for [`crate::FileBackend::clean`]: never creates,
/// never follows a symlink. `Ok(None)` if the path is gone or became a symlink.
pub(crate) fn open_existing(path: &Path) -> Result<Option<File>> {
    let opened = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path);
    match opened {
        Ok(file) => {
            let meta = file.metadata().map_err(|e| {
                Error::io(format_args!("cannot stat lock file {}", path.display()), e)
            })?;
            Ok(meta.file_type().is_file().then_some(file))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound || is_symlink_refusal(&e) => Ok(None),
        Err(e) => Err(open_error(path, e)),
    }
}

/// What [`remove_if_unheld`] did with one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cleaned {
    /// Nobody held it; it was unlinked.
    Removed,
    /// Someone holds it (with one of the mechanisms); it stays.
    Busy,
    /// It disappeared, or the path no longer names a regular file; nothing done.
    Gone,
}

/// Unlinks the lock file at `path` if nobody holds it with any of `mechanisms`.
///
/// The file is unlinked while this call holds its lock(s), and only if the
/// path still names the locked inode.
pub(crate) fn remove_if_unheld(path: &Path, mechanisms: &[Mechanism]) -> Result<Cleaned> {
    let Some(file) = open_existing(path)? else {
        return Ok(Cleaned::Gone);
    };
    let mut taken = Vec::with_capacity(mechanisms.len());
    let mut outcome = Ok(Cleaned::Busy);
    for &mechanism in mechanisms {
        match try_lock(&file, mechanism) {
            Ok(true) => taken.push(mechanism),
            Ok(false) => break,
            Err(e) => {
                outcome = Err(lock_error(path, mechanism, false, e));
                break;
            }
        }
    }
    if taken.len() == mechanisms.len() {
        outcome = match names_same_file(&file, path) {
            Ok(true) => match std::fs::remove_file(path) {
                Ok(()) => Ok(Cleaned::Removed),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Cleaned::Gone),
                Err(e) => Err(Error::io(
                    format_args!(
                        "cannot remove unheld lock file {}: this user needs write access to \
                         the lock directory",
                        path.display()
                    ),
                    e,
                )),
            },
            Ok(false) => Ok(Cleaned::Gone),
            Err(e) => Err(e),
        };
    }
    for mechanism in taken {
        // Best effort: closing the descriptor below releases the lock anyway.
        let _ = unlock(&file, mechanism);
    }
    drop(file);
    outcome
}

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
fn lock_wait(file: &File, mechanism: Mechanism) -> io::Result<()> {
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

/// Whether `path`, without following symlinks, still names the inode `file` is open on.
pub(crate) fn names_same_file(file: &File, path: &Path) -> Result<bool> {
    let held = file.metadata().map_err(|e| {
        Error::io(
            format_args!("cannot fstat the lock file opened at {}", path.display()),
            e,
        )
    })?;
    match std::fs::symlink_metadata(path) {
        Ok(now) => Ok(now.dev() == held.dev() && now.ino() == held.ino()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(Error::io(
            format_args!("cannot stat lock file {}", path.display()),
            e,
        )),
    }
}

/// The error numbers that mean "someone else holds the lock".
fn is_contended(err: &io::Error) -> bool {
    matches!(
        err.raw_os_error(),
        Some(code) if code == libc::EAGAIN || code == libc::EACCES || code == libc::EWOULDBLOCK
    )
}

/// Whether `open` failed because `O_NOFOLLOW` met a symlink.
fn is_symlink_refusal(err: &io::Error) -> bool {
    match err.raw_os_error() {
        Some(code) if code == libc::ELOOP => true,
        // FreeBSD and DragonFly report a refused symlink as EMLINK.
        #[cfg(any(target_os = "freebsd", target_os = "dragonfly"))]
        Some(code) if code == libc::EMLINK => true,
        _ => false,
    }
}

fn open_error(path: &Path, err: io::Error) -> Error {
    let path = path.display();
    if is_symlink_refusal(&err) {
        return Error::new(
            ErrorKind::Io,
            format!(
                "a symlink was found at lock path {path} and was refused: lock files must be \
                 regular files; remove the symlink (the next locker creates the file)"
            ),
        )
        .with_source(err);
    }
    match err.kind() {
        io::ErrorKind::PermissionDenied => Error::io(
            format_args!(
                "cannot open lock file {path} for writing (a write lock needs write access): \
                 let this user write the file and its directory, e.g. share a group-owned \
                 directory with mode 2770 and run every user with umask 002"
            ),
            err,
        ),
        io::ErrorKind::NotFound => Error::io(
            format_args!(
                "cannot open lock file {path}: its directory is gone; recreate it or reopen the backend"
            ),
            err,
        ),
        _ => Error::io(format_args!("cannot open lock file {path}"), err),
    }
}

fn lock_error(path: &Path, mechanism: Mechanism, blocking: bool, err: io::Error) -> Error {
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

fn ensure_regular(file: &File, path: &Path) -> Result<()> {
    let meta = file
        .metadata()
        .map_err(|e| Error::io(format_args!("cannot stat lock file {}", path.display()), e))?;
    if meta.file_type().is_file() {
        Ok(())
    } else {
        Err(Error::new(
            ErrorKind::Io,
            format!(
                "lock path {} is not a regular file: remove it, or use another lock directory",
                path.display()
            ),
        ))
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
