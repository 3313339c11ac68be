//! The operating-system calls behind the file backend: opening lock files,
//! whole-file write locks (OFD `fcntl` or `flock`), inode checks and the clock
//! of the fencing tokens. Everything here is synchronous and may block.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use locks_core::{Error, ErrorKind, Result};

use crate::Mechanism;
use crate::cache::{BudgetSlot, fork_generation};

/// An open lock file descriptor that this process does not hold locked
/// (any more): what the cache keeps between holders.
pub(crate) struct OpenFile {
    file: File,
    /// What the last check that the path names this file saw; `None` until
    /// such a check passed.
    stamp: Option<Stamp>,
    /// The fork generation the descriptor was opened in: a child process
    /// shares the open file description, hence the lock, with its parent.
    generation: u64,
    /// The descriptor's place in the process-wide budget of cached
    /// descriptors, once it was cached.
    pub(crate) slot: Option<BudgetSlot>,
}

impl OpenFile {
    /// Whether the descriptor was opened in this process (not inherited
    /// through `fork`).
    pub(crate) fn is_own(&self) -> bool {
        self.generation == fork_generation()
    }
}

impl std::fmt::Debug for OpenFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenFile")
            .field("file", &self.file)
            .field("stamp", &self.stamp)
            .finish_non_exhaustive()
    }
}

/// What a check of a lock file against its path established: the file's
/// status-change time (`ctime`, in nanoseconds) when the path named it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    ctime: i128,
    /// Whether every later change of the file's status (unlink, rename,
    /// link, chmod) is sure to give it a different ctime: at once on a file
    /// system that gives a later ctime to any change after the ctime was read
    /// ([`later_ctime_after_read`]), elsewhere once the clock has moved on
    /// from `ctime` by more than the timestamps' granularity (see the crate
    /// docs, "Files unlinked while locked").
    settled: bool,
}

impl Stamp {
    /// The stamp of a file whose status `stat` was read before `now` (the
    /// coarse real-time clock) was, and both before the path was checked.
    fn new(stat: &Stat, now: Option<i128>, later_ctime_after_read: bool) -> Stamp {
        let settled = later_ctime_after_read
            || now.is_some_and(|now| stat.ctime + granularity(stat.ctime_nsec) <= now);
        Stamp {
            ctime: stat.ctime,
            settled,
        }
    }
}

/// An upper bound of the timestamp granularity of a file system, guessed
/// from one timestamp's nanoseconds: a file system that keeps whole seconds
/// (or FAT's two seconds) stores 0, one that keeps 10 ms stores multiples of
/// 10^7, and so on. A guess too large only delays [`Stamp::settled`].
fn granularity(nsec: i64) -> i128 {
    if nsec == 0 {
        return 2_000_000_000;
    }
    let (mut n, mut step) = (nsec, 1);
    while n % 10 == 0 {
        n /= 10;
        step *= 10;
    }
    step
}

/// A lock file this process holds a write lock on.
///
/// Dropping it unlocks (best effort) and then closes the descriptor; it never
/// unlinks the file. [`LockedFile::unlock`] unlocks and hands the open
/// descriptor back for reuse.
pub(crate) struct LockedFile {
    /// `None` once unlocked.
    open: Option<OpenFile>,
    mechanism: Mechanism,
}

impl LockedFile {
    fn new(open: OpenFile, mechanism: Mechanism) -> LockedFile {
        LockedFile {
            open: Some(open),
            mechanism,
        }
    }

    /// The kernel lock held.
    pub(crate) fn mechanism(&self) -> Mechanism {
        self.mechanism
    }

    /// Unlocks and returns the descriptor, still open. On error the
    /// descriptor is closed, which releases the lock anyway.
    ///
    /// In a child process forked while the lock was held, the descriptor is
    /// only given back (to be closed): unlocking it would release the
    /// parent's lock, which the child shares.
    pub(crate) fn unlock(mut self) -> io::Result<OpenFile> {
        let Some(open) = self.open.take() else {
            return Err(io::Error::other("the lock file was already unlocked"));
        };
        if open.is_own() {
            unlock(&open.file, self.mechanism)?;
        }
        Ok(open)
    }
}

impl Drop for LockedFile {
    fn drop(&mut self) {
        if let Some(open) = self.open.take()
            && open.is_own()
        {
            // Best effort: closing the descriptor below releases the lock anyway.
            let _ = unlock(&open.file, self.mechanism);
        }
    }
}

impl std::fmt::Debug for LockedFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LockedFile")
            .field("open", &self.open)
            .field("mechanism", &self.mechanism)
            .finish()
    }
}

/// What one attempt to lock a path ended with.
#[derive(Debug)]
pub(crate) enum Attempt {
    /// The lock is held on the file that the path names.
    Acquired(LockedFile),
    /// Someone else holds it (only for non-blocking attempts), or nobody
    /// wants it any more; the descriptor tried, if any, for reuse.
    Busy(Option<OpenFile>),
}

/// Where a lock file lives: the lock directory and the path inside it. The
/// full path is only built when needed (opening, checking, errors).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Target<'a> {
    pub(crate) dir: &'a Path,
    pub(crate) relative: &'a Path,
    /// Whether missing subdirectories are created ([`crate::Layout::Tree`]).
    pub(crate) tree: bool,
    /// Whether the file system gives a later ctime to any change after the
    /// ctime was read ([`later_ctime_after_read`]).
    pub(crate) later_ctime_after_read: bool,
}

impl Target<'_> {
    pub(crate) fn path(&self) -> PathBuf {
        self.dir.join(self.relative)
    }
}

/// How often [`lock_file`] starts again on a fresh file before giving up.
const MAX_STALE_RETRIES: usize = 1000;

/// Locks the lock file of `target`: first `cached` (a descriptor kept open
/// from an earlier holding) if there is one, else a freshly opened (and if
/// needed created) one.
///
/// With `blocking`, waits in the kernel until the lock is granted; `give_up`
/// is asked between retries whether anybody still wants the result. After
/// the lock is granted, the file is checked to still be the one the path
/// names ([`verify`]); if it was unlinked or replaced meanwhile, the lock
/// protects nothing: it is dropped and the whole thing starts again on a
/// fresh file (at most [`MAX_STALE_RETRIES`] times).
pub(crate) fn lock_file(
    target: &Target<'_>,
    cached: Option<OpenFile>,
    mechanism: Mechanism,
    blocking: bool,
    give_up: &dyn Fn() -> bool,
) -> Result<Attempt> {
    let mut cached = cached;
    for _ in 0..MAX_STALE_RETRIES {
        let (open, opened) = match cached.take() {
            Some(open) => (open, None),
            None => {
                let path = target.path();
                if target.tree {
                    crate::prepare_parent(target.dir, &path)?;
                }
                let (open, stat) = open_lock_file(&path)?;
                (open, Some((path, stat)))
            }
        };
        let granted = if blocking {
            lock_wait(&open.file, mechanism).map(|()| true)
        } else {
            try_lock(&open.file, mechanism)
        }
        .map_err(|e| lock_error(&target.path(), mechanism, blocking, e))?;
        if !granted {
            return Ok(Attempt::Busy(Some(open)));
        }
        let mut locked = LockedFile::new(open, mechanism);
        if verify(&mut locked, opened, target)? {
            return Ok(Attempt::Acquired(locked));
        }
        // The file was unlinked (or replaced) while we waited: the lock we got
        // protects nothing. Let go and lock whatever the path names now.
        locked.unlock().map_err(|e| {
            Error::io(
                format_args!(
                    "cannot release the {mechanism} lock on the removed lock file {} (closing \
                     its descriptor releases it); remove lock files only with `locks clean`, \
                     which takes each lock first",
                    target.path().display()
                ),
                e,
            )
        })?;
        if give_up() {
            return Ok(Attempt::Busy(None));
        }
    }
    Err(Error::new(
        ErrorKind::Io,
        format!(
            "lock file {} was replaced or removed {MAX_STALE_RETRIES} times in a row while \
             being locked: stop whatever keeps deleting files in the lock directory",
            target.path().display()
        ),
    ))
}

/// Whether the file `locked` holds (just granted) is still the one the path
/// of `target` names; records what the check saw for the next holding.
///
/// `opened` carries the path and status of a descriptor opened for this
/// attempt (read before the lock was granted). Such a descriptor gets the
/// full check: the path, not following symlinks, must name its device and
/// inode. A cached descriptor whose file still has links and the ctime of
/// its last full check, settled, passes with that one `fstat`; otherwise it
/// gets the full check too.
fn verify(
    locked: &mut LockedFile,
    opened: Option<(PathBuf, Stat)>,
    target: &Target<'_>,
) -> Result<bool> {
    let Some(open) = locked.open.as_mut() else {
        return Ok(false);
    };
    let (path, stat) = match opened {
        Some(opened) => opened,
        None => {
            let stat = fstat(&open.file).map_err(|e| {
                Error::io(
                    format_args!(
                        "cannot fstat the lock file opened at {}",
                        target.path().display()
                    ),
                    e,
                )
            })?;
            if stat.nlink == 0 {
                return Ok(false);
            }
            if let Some(stamp) = open.stamp
                && stamp.settled
                && stamp.ctime == stat.ctime
            {
                return Ok(true);
            }
            (target.path(), stat)
        }
    };
    #[cfg(test)]
    FULL_CHECKS.with(|n| n.set(n.get() + 1));
    // Read the clock before the path: every change after the path check
    // gets a ctime at or after this reading.
    let now = coarse_clock();
    let same = match std::fs::symlink_metadata(&path) {
        Ok(now) => now.dev() == stat.dev && now.ino() == stat.ino,
        Err(e) if e.kind() == io::ErrorKind::NotFound => false,
        Err(e) => {
            return Err(Error::io(
                format_args!("cannot stat lock file {}", path.display()),
                e,
            ));
        }
    };
    open.stamp = same.then(|| Stamp::new(&stat, now, target.later_ctime_after_read));
    Ok(same)
}

#[cfg(test)]
thread_local! {
    /// How many times [`verify`] checked a path on this thread.
    pub(crate) static FULL_CHECKS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// A descriptor of the lock file at `path`, opened as for locking (for tests
/// of the cache).
#[cfg(test)]
pub(crate) fn open_for_test(path: &Path) -> OpenFile {
    open_lock_file(path)
        .unwrap_or_else(|e| panic!("{}", e.report()))
        .0
}

/// Opens (creating if needed) the lock file at `path` for a write lock:
/// `O_RDWR|O_CREAT|O_NOFOLLOW|O_CLOEXEC`, mode 0644. Refuses anything but a
/// regular file.
fn open_lock_file(path: &Path) -> Result<(OpenFile, Stat)> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .mode(0o644)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| open_error(path, e))?;
    let stat = fstat(&file)
        .map_err(|e| Error::io(format_args!("cannot stat lock file {}", path.display()), e))?;
    if stat.mode & libc::S_IFMT != libc::S_IFREG {
        return Err(Error::new(
            ErrorKind::Io,
            format!(
                "lock path {} is not a regular file: remove it, or use another lock directory",
                path.display()
            ),
        ));
    }
    let open = OpenFile {
        file,
        stamp: None,
        generation: fork_generation(),
        slot: None,
    };
    Ok((open, stat))
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
    dev: u64,
    ino: u64,
    mode: u32,
    nlink: u64,
    /// The status-change time in nanoseconds.
    ctime: i128,
    /// The nanoseconds part of `ctime` as the file system stored it.
    ctime_nsec: i64,
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
fn coarse_clock() -> Option<i128> {
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
