//! A lock file: opening it (creating it if needed), locking it with the
//! kernel calls of `sys.rs`, and checking that the path still names the file
//! the lock was granted on ([`lock_file`]). [`OpenFile`] is an unlocked
//! descriptor (what the cache keeps), [`LockedFile`] a locked one.
//!
//! Lock files are opened with `O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC` and
//! mode `0644` (before the umask): a child process never inherits a lock, and a
//! symlink planted at a lock path is refused instead of followed.
//!
//! # Files unlinked while locked
//!
//! A lock on a file that no longer has the lock's path protects nothing: the
//! next process to open the path creates a new file and locks that. So after
//! the kernel grants a lock, the backend checks that the path still names the
//! file it locked; if the file was unlinked or replaced meanwhile (an
//! operator's `rm`, `locks clean` racing with a waiter, a file moved away),
//! the lock is dropped, the descriptor closed, and the acquire starts again
//! on a fresh file. This makes cleaning safe for processes using this crate;
//! Python processes do not check, which is why oslo advises cleaning only
//! while the services are stopped.
//!
//! - **A freshly opened file** gets the full check: `lstat` of the path must
//!   give the device and inode that `fstat` of the descriptor gives.
//! - **A cached descriptor** gets one `fstat` after the grant. The file must
//!   still have links (`st_nlink > 0`: not unlinked, not renamed over), and
//!   its status-change time (ctime) must be the one it had when the path was
//!   last checked to name it. Every unlink, rename (of this file, or of
//!   another file over it), link or `chmod` of the file gives it a new ctime,
//!   so a file renamed away, even with its links intact, is caught too. When
//!   the ctime differs, the full check decides (a `chmod` or a hard link
//!   merely costs one `lstat`). Where the file system has multigrain
//!   timestamps (Linux 6.13 and newer on ext4, xfs, btrfs and tmpfs: a change
//!   that follows a read of the ctime always gets a later one; probed when
//!   the backend is opened, with an unnamed `O_TMPFILE` file in the lock
//!   directory), a ctime is trusted as soon as it was read. Elsewhere a
//!   change can get the ctime of the change before it if both fall in one
//!   tick of the coarse clock, so a ctime is only trusted once the clock has
//!   moved past it by more than the file system's timestamp granularity
//!   (guessed from the timestamp itself: whole seconds, milliseconds, ...);
//!   until then, for example in the first milliseconds after a file is
//!   created, every acquire on the cached descriptor gets the full check.
//!
//! What the check of a cached descriptor does **not** see:
//!
//! - the lock directory itself (or a subdirectory of [`Layout::Tree`]) being
//!   renamed, or replaced by another directory or a mount: the file keeps its
//!   links and its ctime, and this process keeps locking the file in the old
//!   directory while others lock in the new one, until the descriptor leaves
//!   the cache (the directory's path is looked up again only when a file is
//!   opened). Reopen the backends after moving a lock directory;
//! - a change of the file that comes with a ctime equal to the recorded one:
//!   only possible if the system clock is stepped back to within the
//!   timestamp granularity of the recorded ctime.
//!
//! A file unlinked or replaced *between* the check and the release is not
//! noticed by this holder (nor by the kernel); the next acquire notices it.
//!
//! [`Layout::Tree`]: crate::Layout::Tree

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use locks_core::{Error, ErrorKind, Result};

use crate::Mechanism;
use crate::budget::{BudgetSlot, fork_generation};
use crate::dir::prepare_parent;
use crate::sys::{Stat, coarse_clock, fstat, lock_error, lock_wait, try_lock, unlock};

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
    /// ([`later_ctime_after_read`](crate::sys::later_ctime_after_read)), elsewhere once the clock has moved on
    /// from `ctime` by more than the timestamps' granularity (see the module
    /// docs).
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
    /// ctime was read ([`later_ctime_after_read`](crate::sys::later_ctime_after_read)).
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
                    prepare_parent(target.dir, &path)?;
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
