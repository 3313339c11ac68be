//! Node-scope locks: one lock file per lock name in one directory, locked with
//! a whole-file write lock by the kernel.
//!
//! A lock taken here excludes every task and thread of this process and every
//! other process on the host that locks the same file, including the Python
//! services of OpenStack (oslo.concurrency, fasteners, tooz `file://`).
//!
//! ```
//! use locks_core::{Backend, ErrorKind, LockName, LockRequest, Scope, Wait};
//! use locks_file::{FileBackend, FileConfig};
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let dir = std::env::temp_dir().join(format!("locks-file-doc-{}", std::process::id()));
//! let backend = FileBackend::open(FileConfig::new(&dir))?;
//! let name = LockName::new("cinder-lioadm")?;
//! assert_eq!(backend.path_for(&name)?, dir.join("cinder-lioadm"));
//!
//! let request = LockRequest::new(name, Scope::Node);
//! let guard = backend.acquire(&request).await?;
//! let busy = backend.acquire(&request.clone().wait(Wait::TryOnce)).await;
//! assert_eq!(busy.unwrap_err().kind(), ErrorKind::WouldBlock);
//! guard.release().await?;
//! # std::fs::remove_dir_all(&dir).ok();
//! # Ok::<(), locks_core::Error>(())
//! # }).unwrap();
//! ```
//!
//! # Mechanisms: OFD locks on Linux, `flock` elsewhere
//!
//! Python's oslo.concurrency (through fasteners) and tooz take classic POSIX
//! record locks: `fcntl.lockf(f, LOCK_EX)`, that is `fcntl(F_SETLK, F_WRLCK)`
//! over the whole file. To exclude them a Rust process must use the same lock
//! family, and [`Mechanism::Ofd`] (the default on Linux) does: a whole-file
//! write lock with `fcntl(F_OFD_SETLK / F_OFD_SETLKW)`, `l_start = 0`,
//! `l_len = 0`. Open-file-description locks (Linux 3.15 and newer) conflict
//! with classic POSIX locks in both directions, but unlike them they belong
//! to the open file, not the process: two descriptors in one process exclude
//! each other, and closing some unrelated descriptor of the file does not drop
//! the lock.
//!
//! [`Mechanism::Flock`] uses `flock(2)` (through `fs2`). On local file systems
//! it does **not** conflict with Python's `lockf` locks, so use it only where
//! no Python process shares the lock files, or on systems without OFD locks.
//! It is the default outside Linux, where [`Mechanism::Ofd`] is refused with
//! [`ErrorKind::Unsupported`]. All processes sharing a directory must use the
//! same mechanism.
//!
//! # File names
//!
//! A lock name maps to a file name the way oslo.concurrency does it: every
//! `/` becomes `_` ([`lock_file_name`]); any prefix such as `cinder-` is part
//! of the name the caller passes. The result is always a single path
//! component inside the lock directory; the names `.` and `..` are refused
//! with [`ErrorKind::InvalidName`], and so are names longer than the 255 bytes
//! a file name may have. Note that `a/b` and `a_b` are the same lock, as they
//! are for oslo.
//!
//! Lock files are opened with `O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC` and
//! mode `0644` (before the umask): a child process never inherits a lock, and a
//! symlink planted at a lock path is refused instead of followed.
//!
//! Releasing a lock unlocks the file and keeps its descriptor open for the
//! next holder in this process (see [Descriptors kept open](#descriptors-kept-open));
//! it **never unlinks** the file, because unlinking a file someone else waits
//! on would let two holders in at once. Use [`Backend::clean`] to remove lock
//! files nobody holds.
//!
//! # Permissions and sharing the directory between users
//!
//! [`FileBackend::open`] creates a missing lock directory with mode `0700`:
//! only its owner can lock. It never changes the mode of an existing directory.
//! To share locks between several users (say `cinder` and an operator's
//! tools), create the directory yourself, owned by a common group, with the
//! setgid bit so new lock files inherit that group, and let every user run
//! with a umask that keeps group write access:
//!
//! ```text
//! install -d -o cinder -g cinder -m 2770 /var/lib/cinder/locks
//! umask 002    # in every process that locks (0644 & ~002 would drop the group's write bit)
//! ```
//!
//! Lock files are created `0644 & ~umask`; a write lock needs write access, so
//! a file created by another user with umask `022` cannot be locked by the
//! group until its mode is fixed (the error then says so).
//!
//! # Waiting, fairness and cancellation
//!
//! Inside one process each lock name has a FIFO async mutex in front of the
//! file: the tasks of this process are served in the order they asked, and
//! only one of them waits in the kernel per name. Entries exist only while
//! somebody holds or waits for the name, so memory stays flat however many
//! names pass through. Across processes the kernel does not promise any
//! order, so [`Capabilities::fifo`] is `false`.
//!
//! A free lock is taken at once with non-blocking calls on the calling
//! thread. Waiting for a held one does not poll: the wait happens in a
//! blocking `F_OFD_SETLKW` (or `flock(LOCK_EX)`) call on a thread of tokio's
//! blocking pool (a plain thread when no tokio runtime is running), and the
//! result comes back through a channel. A [`Wait::TryOnce`] acquire uses the non-blocking call and fails
//! with [`ErrorKind::WouldBlock`] when the lock, or the in-process mutex, is
//! busy.
//!
//! Timeouts ([`locks_core::acquire`] with [`Wait::Timeout`]) and cancellation
//! drop the acquire future. A blocking call in the kernel cannot be
//! interrupted, so an abandoned waiter **lingers**: one blocked thread stays
//! in the kernel until the current holder releases. When that thread then gets
//! the lock it sees that nobody wants it any more and unlocks at once, so no
//! lock is ever left held; until then it keeps this process's in-process
//! entry for the name, and later acquires of the name in this process queue
//! behind it (they would have to wait for the holder anyway).
//! Consequences: each such thread occupies one slot of tokio's blocking pool
//! (512 threads by default), and dropping a tokio runtime waits for its
//! blocking threads, so a runtime shut down while an abandoned waiter lingers
//! blocks until the holder releases; use
//! [`Runtime::shutdown_timeout`](tokio::runtime::Runtime::shutdown_timeout) if
//! that matters.
//!
//! # Descriptors kept open
//!
//! Opening a lock file costs more than locking it, so a backend keeps the
//! descriptors of recently released lock files open, **unlocked**, and the
//! next acquire of the same name in this process locks that descriptor again:
//! a free lock then costs the lock call, one `fstat` and the unlock call. A
//! descriptor is out of the cache, owned by one task, from the moment an
//! acquire takes it until its holding is released; two tasks never lock one
//! open file description (the second lock would be granted too).
//!
//! - **Bounds.** A backend keeps at most a sixteenth of the soft
//!   `RLIMIT_NOFILE` at the time it was opened, and at most 256, descriptors;
//!   all backends of the process together at most a quarter of it (4096 with
//!   no limit). When the cache is full, a file is only let in the second
//!   time it comes by in a while, in place of one not used lately (the CLOCK
//!   approximation of least-recently-used): names used once close their own
//!   descriptor instead of pushing out busier ones. Any number of distinct
//!   names can pass through without descriptors or memory growing.
//! - **Where.** Only on Linux, and only when the lock directory is on a local
//!   file system known to give a renamed or unlinked file a new ctime and to
//!   show it to `fstat` at once (ext2/3/4, xfs, btrfs, tmpfs, ramfs, f2fs,
//!   overlayfs, ZFS, bcachefs, JFS, ReiserFS; checked with `statfs` when the
//!   backend is opened). Elsewhere, NFS and other network or FUSE file systems
//!   included, every acquire opens the file and every release closes it.
//! - **Forks.** A child process shares its parent's open file descriptions,
//!   hence their locks: after `fork` (detected with `pthread_atfork`), the
//!   child never locks nor unlocks a descriptor inherited from its parent, so
//!   a child neither shares a lock with its parent nor releases the parent's
//!   holding when it drops an inherited guard; it opens its own.
//! - **Cleaning.** [`Backend::clean`] closes the cached descriptors of its own
//!   backend first. Cached descriptors are unlocked, so a `clean` from
//!   anywhere else removes their files too; the next acquire notices (below).
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
//! # Fencing tokens
//!
//! The token of a holding is the number of nanoseconds of `CLOCK_BOOTTIME`
//! read right after the lock is granted, raised if needed to stay strictly
//! above every token handed out before in this process. Tokens strictly
//! increase across all holders of a name on this host, in every process using
//! this crate, because each holder reads the clock before it unlocks, and the
//! next holder reads it after. The clock restarts at boot, when every node lock
//! is gone anyway; tokens mean nothing on other hosts.
//!
//! [`Capabilities::fifo`]: locks_core::Capabilities::fifo

use std::fmt;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use locks_core::{
    Backend, Capabilities, CleanReport, Error, ErrorKind, FencingToken, HeldLock, HolderId,
    LocalLocks, LocalTurn, LockGuard, LockName, LockRequest, Result, Scope, Wait, async_trait,
};
use tokio::sync::oneshot;

mod cache;
mod dir;
mod sys;
#[cfg(test)]
mod tests;

use cache::{Cache, Key};
use sys::{Attempt, LockedFile, Target};

/// The longest file name (in bytes) most file systems accept (`NAME_MAX`).
const MAX_FILE_NAME: usize = 255;

/// Which kernel lock the backend takes on a lock file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mechanism {
    /// Linux open-file-description locks: `fcntl(F_OFD_SETLK[W])`, a write
    /// lock over the whole file. Conflicts with the classic POSIX locks of
    /// Python's oslo.concurrency, fasteners and tooz. Linux only.
    Ofd,
    /// BSD `flock(2)` exclusive locks. Does not exclude Python's `lockf`
    /// locks on local file systems.
    Flock,
}

impl Mechanism {
    /// The lower-case name used in configuration: `"ofd"` or `"flock"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Mechanism::Ofd => "ofd",
            Mechanism::Flock => "flock",
        }
    }

    /// Every mechanism this platform offers.
    fn available() -> &'static [Mechanism] {
        if cfg!(target_os = "linux") {
            &[Mechanism::Ofd, Mechanism::Flock]
        } else {
            &[Mechanism::Flock]
        }
    }
}

impl Default for Mechanism {
    /// [`Mechanism::Ofd`] on Linux, [`Mechanism::Flock`] elsewhere.
    fn default() -> Self {
        if cfg!(target_os = "linux") {
            Mechanism::Ofd
        } else {
            Mechanism::Flock
        }
    }
}

impl fmt::Display for Mechanism {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Mechanism {
    type Err = Error;

    /// Parses `"ofd"` or `"flock"` (ASCII case ignored).
    ///
    /// # Errors
    /// [`ErrorKind::InvalidConfig`] for anything else.
    fn from_str(s: &str) -> Result<Self> {
        if s.eq_ignore_ascii_case("ofd") {
            Ok(Mechanism::Ofd)
        } else if s.eq_ignore_ascii_case("flock") {
            Ok(Mechanism::Flock)
        } else {
            Err(Error::new(
                ErrorKind::InvalidConfig,
                format!(
                    "unknown file lock mechanism {s:?}: expected \"ofd\" (Linux, interoperates \
                     with Python's fcntl locks) or \"flock\""
                ),
            ))
        }
    }
}

/// How lock names map to paths inside the lock directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Layout {
    /// One file per name directly in the directory, every `/` replaced by `_`:
    /// oslo.concurrency's external locks ([`lock_file_name`]).
    #[default]
    Flat,
    /// A `/` in the name makes subdirectories, as OpenStack tooz's `file://`
    /// driver does: the path is normalised (`a//b/./c` is `a/b/c`), may not
    /// leave the directory, and tooz's reserved paths (`groups`, `tmp`,
    /// `.driver_lock`) are refused ([`lock_file_path`]).
    Tree,
}

impl Layout {
    /// The name used in URLs (`flat`, `tree`).
    pub fn as_str(self) -> &'static str {
        match self {
            Layout::Flat => "flat",
            Layout::Tree => "tree",
        }
    }
}

impl fmt::Display for Layout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

impl FromStr for Layout {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "flat" => Ok(Layout::Flat),
            "tree" => Ok(Layout::Tree),
            _ => Err(Error::new(
                ErrorKind::InvalidConfig,
                format!(
                    "unknown lock file layout {s:?}: expected \"flat\" (oslo.concurrency: `/` becomes `_`) \
                     or \"tree\" (tooz file driver: `/` makes subdirectories)"
                ),
            )),
        }
    }
}

/// How to build a [`FileBackend`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileConfig {
    /// The lock directory: one file per lock name. Created (mode `0700`) if missing.
    pub dir: PathBuf,
    /// The kernel lock to take.
    pub mechanism: Mechanism,
    /// How names map to paths. Default [`Layout::Flat`].
    pub layout: Layout,
}

impl FileConfig {
    /// A configuration for `dir` with the platform's default [`Mechanism`] and the flat layout.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        FileConfig {
            dir: dir.into(),
            mechanism: Mechanism::default(),
            layout: Layout::default(),
        }
    }
}

/// The path, relative to the lock directory, that `name` is locked through.
///
/// ```
/// use locks_core::LockName;
/// use locks_file::{Layout, lock_file_path};
/// use std::path::Path;
/// let name = LockName::new("cinder-a//b/./c")?;
/// assert_eq!(lock_file_path(&name, Layout::Flat)?, Path::new("cinder-a__b_._c"));
/// assert_eq!(lock_file_path(&name, Layout::Tree)?, Path::new("cinder-a/b/c"));
/// assert!(lock_file_path(&LockName::new("a/../../x")?, Layout::Tree).is_err());
/// assert!(lock_file_path(&LockName::new("groups")?, Layout::Tree).is_err());
/// # Ok::<(), locks_core::Error>(())
/// ```
///
/// # Errors
/// [`ErrorKind::InvalidName`] as [`lock_file_name`] for the flat layout; for
/// the tree layout, absolute names, names that leave the directory or
/// normalise to nothing, components longer than 255 bytes, and tooz's
/// reserved paths.
pub fn lock_file_path(name: &LockName, layout: Layout) -> Result<PathBuf> {
    if layout == Layout::Flat {
        return lock_file_name(name).map(PathBuf::from);
    }
    let refuse = |why: &str| {
        Error::new(
            ErrorKind::InvalidName,
            format!(
                "lock name {:?} cannot be a lock file path in the tree layout: {why}",
                name.as_str()
            ),
        )
    };
    if name.as_str().starts_with('/') {
        return Err(refuse("it is absolute (tooz refuses such names too)"));
    }
    let mut parts: Vec<&str> = Vec::new();
    for part in name.as_str().split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.pop().is_none() {
                    return Err(refuse("it leaves the lock directory"));
                }
            }
            _ if part.len() > MAX_FILE_NAME => {
                return Err(refuse("a path component is longer than 255 bytes"));
            }
            _ => parts.push(part),
        }
    }
    if parts.is_empty() {
        return Err(refuse("it names the lock directory itself"));
    }
    if matches!(parts.as_slice(), ["groups"] | ["tmp"] | [".driver_lock"]) {
        return Err(refuse(
            "tooz reserves `groups`, `tmp` and `.driver_lock` in its directory",
        ));
    }
    Ok(parts.iter().collect())
}

/// The file name `name` is locked through: every `/` replaced by `_`, as
/// oslo.concurrency does.
///
/// ```
/// use locks_core::LockName;
/// assert_eq!(locks_file::lock_file_name(&LockName::new("cinder-a/b/c")?)?, "cinder-a_b_c");
/// assert!(locks_file::lock_file_name(&LockName::new("..")?).is_err());
/// # Ok::<(), locks_core::Error>(())
/// ```
///
/// # Errors
/// [`ErrorKind::InvalidName`] for `.` and `..`, and for names longer than 255 bytes.
pub fn lock_file_name(name: &LockName) -> Result<String> {
    let file = name.as_str().replace('/', "_");
    if file == "." || file == ".." {
        return Err(Error::new(
            ErrorKind::InvalidName,
            format!(
                "lock name {:?} cannot be used as a lock file name: `.` and `..` name \
                 directories; choose another name",
                name.as_str()
            ),
        ));
    }
    if file.len() > MAX_FILE_NAME {
        return Err(Error::new(
            ErrorKind::InvalidName,
            format!(
                "lock name `{}...` is {} bytes long, but a lock file name may have at most \
                 {MAX_FILE_NAME}; use a shorter name",
                name.as_str().chars().take(40).collect::<String>(),
                file.len()
            ),
        ));
    }
    Ok(file)
}

static LAST_TOKEN: AtomicU64 = AtomicU64::new(0);

/// The fencing token of a lock granted just now: `CLOCK_BOOTTIME` in
/// nanoseconds, kept strictly above every token this process handed out.
fn next_token() -> FencingToken {
    let now = sys::clock_nanos();
    let step = |prev: u64| now.max(prev.saturating_add(1));
    match LAST_TOKEN.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |prev| Some(step(prev))) {
        Ok(prev) | Err(prev) => step(prev),
    }
}

/// The Node-scope backend: lock files in one directory.
///
/// Build it with [`FileBackend::open`]. Each backend has its own in-process
/// queue per name; two backends on the same directory in one process still
/// exclude each other through the kernel.
pub struct FileBackend {
    shared: Arc<Shared>,
    layout: Layout,
    table: LocalLocks<Key>,
}

/// What a backend shares with its holdings and its waiting threads.
struct Shared {
    dir: PathBuf,
    mechanism: Mechanism,
    /// See [`sys::later_ctime_after_read`].
    later_ctime_after_read: bool,
    /// Unlocked lock files kept open for the next holder.
    cache: Cache,
}

impl Shared {
    fn target<'a>(&'a self, key: &'a Key, layout: Layout) -> Target<'a> {
        Target {
            dir: &self.dir,
            relative: key.path(),
            tree: layout == Layout::Tree,
            later_ctime_after_read: self.later_ctime_after_read,
        }
    }
}

impl FileBackend {
    /// Opens the lock directory `config.dir`, creating it (and its parents)
    /// with mode `0700` if it is missing. An existing directory is used as it
    /// is, whatever its mode.
    ///
    /// # Errors
    /// - [`ErrorKind::InvalidConfig`] if `dir` is empty.
    /// - [`ErrorKind::Unsupported`] for [`Mechanism::Ofd`] outside Linux.
    /// - [`ErrorKind::Io`] if `dir` exists but is not a directory, or cannot be
    ///   created; [`ErrorKind::PermissionDenied`] if the OS refused access.
    pub fn open(config: FileConfig) -> Result<FileBackend> {
        let FileConfig {
            dir,
            mechanism,
            layout,
        } = config;
        if !Mechanism::available().contains(&mechanism) {
            return Err(Error::new(
                ErrorKind::Unsupported,
                format!(
                    "the `{mechanism}` file lock mechanism is not available on this system \
                     (OFD locks are Linux-only); use \"flock\""
                ),
            ));
        }
        if dir.as_os_str().is_empty() {
            return Err(Error::new(
                ErrorKind::InvalidConfig,
                "the lock directory is empty: set the directory the lock files live in",
            ));
        }
        let dir = std::path::absolute(&dir).map_err(|e| {
            Error::io(
                format_args!("cannot resolve the lock directory {}", dir.display()),
                e,
            )
        })?;
        prepare_dir(&dir)?;
        let capacity = cache::capacity_for(&dir);
        let later_ctime_after_read = capacity > 0 && sys::later_ctime_after_read(&dir);
        Ok(FileBackend {
            shared: Arc::new(Shared {
                dir,
                mechanism,
                later_ctime_after_read,
                cache: Cache::new(capacity),
            }),
            layout,
            table: LocalLocks::default(),
        })
    }

    /// The lock directory (absolute).
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// The kernel lock this backend takes.
    pub fn mechanism(&self) -> Mechanism {
        self.shared.mechanism
    }

    /// How names map to paths.
    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// The lock file `name` is locked through: the directory joined with
    /// [`lock_file_path`].
    ///
    /// # Errors
    /// As [`lock_file_path`].
    pub fn path_for(&self, name: &LockName) -> Result<PathBuf> {
        Ok(self.shared.dir.join(lock_file_path(name, self.layout)?))
    }

    /// How many names this process currently holds or waits for (for leak checks).
    #[doc(hidden)]
    pub fn active_names(&self) -> usize {
        self.table.len()
    }

    /// The guard of a lock granted just now on this thread.
    fn guard(
        &self,
        request: &LockRequest,
        file: LockedFile,
        key: Key,
        turn: LocalTurn<Key>,
    ) -> LockGuard {
        let held = FileHeld {
            file: Some(file),
            key,
            shared: Arc::clone(&self.shared),
            _turn: turn,
        };
        LockGuard::unlosable(request, next_token(), Box::new(held))
    }

    /// How many unlocked lock files this backend keeps open (for leak checks).
    #[doc(hidden)]
    pub fn cached_files(&self) -> usize {
        self.shared.cache.len()
    }
}

/// Creates the subdirectories a tree-layout `path` inside `dir` needs, and
/// checks that none of them leads out of `dir` through a symlink.
pub(crate) fn prepare_parent(dir: &Path, path: &Path) -> Result<()> {
    let Some(parent) = path.parent().filter(|p| *p != dir) else {
        return Ok(());
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(parent)
        .map_err(|e| {
            Error::io(
                format_args!("creating lock subdirectory {}", parent.display()),
                e,
            )
        })?;
    let real_parent = parent.canonicalize().map_err(|e| {
        Error::io(
            format_args!("resolving lock subdirectory {}", parent.display()),
            e,
        )
    })?;
    let real_dir = dir.canonicalize().map_err(|e| {
        Error::io(
            format_args!("resolving lock directory {}", dir.display()),
            e,
        )
    })?;
    if !real_parent.starts_with(&real_dir) {
        return Err(Error::new(
            ErrorKind::PermissionDenied,
            format!(
                "lock subdirectory {} leads out of the lock directory {} through a symlink; refused",
                parent.display(),
                dir.display()
            ),
        ));
    }
    Ok(())
}

/// Makes sure `dir` is a directory, creating it with mode 0700 if missing.
fn prepare_dir(dir: &Path) -> Result<()> {
    let not_a_dir = || {
        Error::new(
            ErrorKind::Io,
            format!(
                "lock directory {} exists but is not a directory: remove it or choose \
                 another lock directory",
                dir.display()
            ),
        )
    };
    match std::fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => return Ok(()),
        Ok(_) => return Err(not_a_dir()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(Error::io(
                format_args!(
                    "cannot inspect lock directory {}: check that this user may search its \
                     parent directories",
                    dir.display()
                ),
                e,
            ));
        }
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| {
            Error::io(
                format_args!(
                    "cannot create lock directory {}: create it yourself (for several users, \
                     a group-owned directory with mode 2770) or choose another lock directory",
                    dir.display()
                ),
                e,
            )
        })?;
    match std::fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => Ok(()),
        Ok(_) => Err(not_a_dir()),
        Err(e) => Err(Error::io(
            format_args!("cannot inspect lock directory {}", dir.display()),
            e,
        )),
    }
}

/// Runs `job` where it may block: on tokio's blocking pool inside a runtime,
/// on a plain thread otherwise.
fn run_blocking(job: impl FnOnce() + Send + 'static) -> Result<()> {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) => {
            // Detached: the job answers through its channel.
            drop(handle.spawn_blocking(job));
            Ok(())
        }
        Err(_) => std::thread::Builder::new()
            .name("locks-file".to_owned())
            .spawn(job)
            .map(drop)
            .map_err(|e| Error::io("cannot start a thread to take a lock file", e)),
    }
}

impl fmt::Debug for FileBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileBackend")
            .field("dir", &self.shared.dir)
            .field("mechanism", &self.shared.mechanism)
            .field("layout", &self.layout)
            .field("active_names", &self.active_names())
            .field("cache", &self.shared.cache)
            .finish()
    }
}

/// A held lock file and the in-process turn in front of it.
struct FileHeld {
    // Field order matters: the file is unlocked and back in the cache (see
    // `Drop`) before the in-process turn ends, so the next holder of this
    // process finds it there.
    /// `None` once released.
    file: Option<LockedFile>,
    key: Key,
    shared: Arc<Shared>,
    _turn: LocalTurn<Key>,
}

impl FileHeld {
    /// Unlocks the file and puts it back in the cache (it is closed instead
    /// if unlocking fails, which releases the lock anyway).
    fn let_go(&mut self) -> Result<()> {
        let Some(file) = self.file.take() else {
            return Ok(());
        };
        let mechanism = file.mechanism();
        match file.unlock() {
            Ok(open) => {
                self.shared.cache.put(&self.key, open);
                Ok(())
            }
            Err(e) => Err(Error::io(
                format_args!(
                    "cannot release the {mechanism} lock on {}",
                    self.shared.dir.join(self.key.path()).display()
                ),
                e,
            )),
        }
    }
}

impl Drop for FileHeld {
    fn drop(&mut self) {
        // Best effort: on error the descriptor is closed, which releases the lock.
        let _ = self.let_go();
    }
}

impl fmt::Debug for FileHeld {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileHeld")
            .field("dir", &self.shared.dir)
            .field("file", &self.key)
            .field("held", &self.file.is_some())
            .finish()
    }
}

#[async_trait]
impl HeldLock for FileHeld {
    async fn release(mut self: Box<Self>) -> Result<()> {
        self.let_go()
    }

    fn release_on_drop(self: Box<Self>) {
        // Unlocking is a plain system call: no runtime needed.
        drop(self);
    }

    fn release_at_once(&mut self) -> Option<Result<()>> {
        Some(self.let_go())
    }
}

/// What the locking thread sends back.
type Answer = Result<Option<(FileHeld, FencingToken)>>;

#[async_trait]
impl Backend for FileBackend {
    fn kind(&self) -> &'static str {
        "file"
    }

    fn describe(&self) -> String {
        match self.layout {
            Layout::Flat => format!(
                "file://{} ({})",
                self.shared.dir.display(),
                self.shared.mechanism
            ),
            Layout::Tree => format!(
                "file://{} ({}, tree)",
                self.shared.dir.display(),
                self.shared.mechanism
            ),
        }
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            scopes: &[Scope::Node, Scope::Global],
            fifo: false,
            fencing: true,
            can_lose: false,
        }
    }

    /// Takes the lock at once if this backend has the descriptor of its file
    /// cached and the lock is free: the in-process turn, a non-blocking lock
    /// call and the check of the descriptor (see the crate docs), on the
    /// calling thread. `None` in every other case, errors included: the
    /// caller then goes through [`acquire`](Backend::acquire), which opens
    /// files, waits and reports errors.
    fn try_acquire_now(&self, request: &LockRequest) -> Option<LockGuard> {
        let relative = Key::relative(&request.name, self.layout).ok()?;
        let (key, cached) = self.shared.cache.find(&relative)?;
        let open = cached?;
        let Some(turn) = self.table.try_lock(&key) else {
            self.shared.cache.put(&key, open);
            return None;
        };
        let target = self.shared.target(&key, self.layout);
        match sys::lock_file(&target, Some(open), self.shared.mechanism, false, &|| false) {
            Ok(Attempt::Acquired(file)) => Some(self.guard(request, file, key, turn)),
            Ok(Attempt::Busy(open)) => {
                if let Some(open) = open {
                    self.shared.cache.put(&key, open);
                }
                None
            }
            Err(_) => None,
        }
    }

    fn knows_holders(&self) -> bool {
        true
    }

    /// Whether `holder` has the in-process turn on the file of
    /// `request.name`: it holds the lock, or was handed the turn and is about
    /// to lock the file.
    fn held_by(&self, request: &LockRequest, holder: HolderId) -> bool {
        Key::relative(&request.name, self.layout)
            .is_ok_and(|relative| self.table.held_by(&*relative, holder))
    }

    /// Locks the file of `request.name`, creating it if needed.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidName`] for names that cannot be file names,
    /// [`ErrorKind::WouldBlock`] for a contended [`Wait::TryOnce`],
    /// [`ErrorKind::Io`] / [`ErrorKind::PermissionDenied`] when the file cannot
    /// be opened or locked (the message names the path and the call).
    ///
    /// # Cancel safety
    /// Cancel safe: a dropped future leaves no lock held. A waiter already
    /// blocked in the kernel lingers until the holder releases, then lets go
    /// at once (see the crate docs).
    async fn acquire(&self, request: &LockRequest) -> Result<LockGuard> {
        let relative = Key::relative(&request.name, self.layout)?;
        // The descriptor, if cached, is taken out at once: from then on this
        // task is the only one using it (two locks on one open file
        // description would both be granted).
        let (key, mut cached) = match self.shared.cache.find(&relative) {
            Some(found) => found,
            None => (Key::from(&*relative), None),
        };
        let blocking = request.wait != Wait::TryOnce;
        let turn = if blocking {
            self.table.lock(&key).await
        } else if let Some(turn) = self.table.try_lock(&key) {
            turn
        } else {
            if let Some(open) = cached {
                self.shared.cache.put(&key, open);
            }
            return Err(request.would_block(self));
        };
        if cached.is_none() {
            // The previous holder of this process put its descriptor back
            // before its turn ended.
            cached = self.shared.cache.take(&key);
        }

        // Fast path: a free lock is taken with non-blocking calls on this
        // thread (on a cached descriptor: a lock and an fstat), without a
        // round trip through the blocking pool.
        let target = self.shared.target(&key, self.layout);
        let open = match sys::lock_file(&target, cached, self.shared.mechanism, false, &|| false)? {
            Attempt::Acquired(file) => return Ok(self.guard(request, file, key, turn)),
            Attempt::Busy(open) if !blocking => {
                if let Some(open) = open {
                    self.shared.cache.put(&key, open);
                }
                return Err(request.would_block(self));
            }
            Attempt::Busy(open) => open,
        };

        // Slow path: wait in the kernel on a blocking thread. That wait may
        // outlive this future (timeout, cancellation): meanwhile the turn is
        // nobody's, so that this task, asking again, queues behind it
        // instead of being told it holds the lock.
        turn.disown();
        let (tx, rx) = oneshot::channel::<Answer>();
        let shared = Arc::clone(&self.shared);
        let layout = self.layout;
        let job_key = key.clone();
        run_blocking(move || {
            let key = job_key;
            let attempt = sys::lock_file(
                &shared.target(&key, layout),
                open,
                shared.mechanism,
                true,
                &|| tx.is_closed(),
            );
            let answer = match attempt {
                Ok(Attempt::Acquired(file)) => {
                    let token = next_token();
                    let held = FileHeld {
                        file: Some(file),
                        key,
                        shared,
                        _turn: turn,
                    };
                    Ok(Some((held, token)))
                }
                Ok(Attempt::Busy(open)) => {
                    if let Some(open) = open {
                        shared.cache.put(&key, open);
                    }
                    drop(turn);
                    Ok(None)
                }
                Err(e) => {
                    drop(turn);
                    Err(e)
                }
            };
            // If the acquire future is gone (timeout or cancellation) while
            // this thread waited in the kernel, the holding comes back here
            // and is dropped: unlocked and cached at once, then the turn ends.
            drop(tx.send(answer));
        })?;

        match rx.await {
            Ok(Ok(Some((held, token)))) => {
                held._turn.claim();
                Ok(LockGuard::unlosable(request, token, Box::new(held)))
            }
            Ok(Ok(None)) => Err(request.would_block(self)),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(Error::new(
                ErrorKind::Internal,
                format!(
                    "the thread locking {} stopped without an answer (is the runtime shutting down?)",
                    self.shared.dir.join(key.path()).display()
                ),
            )),
        }
    }

    /// Removes every lock file in the directory that nobody holds.
    ///
    /// Only regular files are considered (symlinks and anything else are
    /// left alone). With [`Layout::Flat`] those are the files at the top of
    /// the directory; with [`Layout::Tree`] also those in its subdirectories,
    /// at any depth, except tooz's `groups` and `tmp` at the top, which hold
    /// no locks. Directories themselves are never removed (a locker may be
    /// about to create a file in one). The walk goes by directory
    /// descriptors (`openat` with `O_NOFOLLOW`, `unlinkat`), so a
    /// subdirectory swapped for a symlink meanwhile cannot lead it outside
    /// the lock directory. Each file is opened without following symlinks and
    /// try-locked with every mechanism this platform has (OFD and `flock` on
    /// Linux), so a holder of either kind keeps its file. A file that is free
    /// is unlinked while this call still holds its lock, and only if the path
    /// still names the locked file. Held files are counted in
    /// [`CleanReport::busy`].
    ///
    /// The descriptors this backend keeps open (see the crate docs) are
    /// closed first. Waiters of this crate that were blocked on a removed
    /// file, and other backends that kept it open, notice it and retry on a
    /// fresh file. Python processes do not: clean while they are
    /// stopped, as oslo advises.
    ///
    /// # Errors
    /// [`ErrorKind::Io`] / [`ErrorKind::PermissionDenied`] naming the path
    /// when the directory cannot be listed or a lock file cannot be opened,
    /// locked or removed; files removed before the error stay removed.
    async fn clean(&self) -> Result<CleanReport> {
        // Files this backend only keeps open are unheld: close them, so that
        // removing them frees them at once.
        self.shared.cache.clear();
        let (tx, rx) = oneshot::channel();
        let dir = self.shared.dir.clone();
        let layout = self.layout;
        run_blocking(move || {
            let mut report = CleanReport::default();
            let result = dir::Dir::open(&dir)
                .and_then(|top| clean_dir(&top, layout, 0, &mut report))
                .map(|()| {
                    report.removed.sort();
                    report
                });
            let _ = tx.send(result);
        })?;
        rx.await.unwrap_or_else(|_| {
            Err(Error::new(
                ErrorKind::Internal,
                format!(
                    "the thread cleaning {} stopped without an answer (is the runtime shutting down?)",
                    self.shared.dir.display()
                ),
            ))
        })
    }
}

/// How deep [`clean`](FileBackend::clean) descends into a tree layout.
const MAX_CLEAN_DEPTH: usize = 64;

/// Cleans `dir`, which is `depth` levels below the lock directory, into `report`.
fn clean_dir(dir: &dir::Dir, layout: Layout, depth: usize, report: &mut CleanReport) -> Result<()> {
    for (name, kind) in dir.entries()? {
        match kind {
            dir::Kind::Directory if layout == Layout::Tree && depth < MAX_CLEAN_DEPTH => {
                let tooz_data = depth == 0 && (name == "groups" || name == "tmp");
                if tooz_data {
                    continue;
                }
                // Entered without following a symlink: `None` if it was
                // swapped for something else meanwhile.
                if let Some(sub) = dir.subdir(&name)? {
                    clean_dir(&sub, layout, depth + 1, report)?;
                }
            }
            dir::Kind::File => match dir.remove_if_unheld(&name, Mechanism::available())? {
                dir::Cleaned::Removed => {
                    report
                        .removed
                        .push(dir.path().join(&name).display().to_string());
                }
                dir::Cleaned::Busy => report.busy += 1,
                dir::Cleaned::Gone => {}
            },
            dir::Kind::Directory | dir::Kind::Other => {}
        }
    }
    Ok(())
}
