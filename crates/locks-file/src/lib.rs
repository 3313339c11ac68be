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
//! Releasing a lock unlocks and closes the file; it **never unlinks** it,
//! because unlinking a file someone else waits on would let two holders in at
//! once. Use [`Backend::clean`] to remove lock files nobody holds.
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
//! the lock it sees that nobody wants it any more and unlocks and closes at
//! once, so no lock is ever left held; until then it keeps this process's
//! in-process entry for the name, and later acquires of the name in this
//! process queue behind it (they would have to wait for the holder anyway).
//! Consequences: each such thread occupies one slot of tokio's blocking pool
//! (512 threads by default), and dropping a tokio runtime waits for its
//! blocking threads, so a runtime shut down while an abandoned waiter lingers
//! blocks until the holder releases; use
//! [`Runtime::shutdown_timeout`](tokio::runtime::Runtime::shutdown_timeout) if
//! that matters.
//!
//! # Files unlinked while locked
//!
//! After the kernel grants a lock, the backend checks that the path still
//! names the file it locked (`fstat` of the descriptor against `lstat` of the
//! path, device and inode). If the file was unlinked or replaced meanwhile
//! (an operator's `rm`, or `locks clean` racing with a waiter), the lock
//! protects nothing: it is dropped and the acquire starts again on a fresh
//! file. This makes cleaning safe for processes using this crate; Python
//! processes do not check, which is why oslo advises cleaning only while the
//! services are stopped.
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
use std::sync::atomic::{AtomicU64, Ordering};

use locks_core::{
    Backend, Capabilities, CleanReport, Error, ErrorKind, FencingToken, HeldLock, LocalLocks,
    LocalTurn, LockGuard, LockName, LockRequest, Result, Scope, Wait, async_trait, never_lost,
};
use tokio::sync::oneshot;

mod sys;
#[cfg(test)]
mod tests;

use sys::{Attempt, LockedFile};

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
    dir: PathBuf,
    mechanism: Mechanism,
    layout: Layout,
    table: LocalLocks<PathBuf>,
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
        Ok(FileBackend {
            dir,
            mechanism,
            layout,
            table: LocalLocks::default(),
        })
    }

    /// The lock directory (absolute).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The kernel lock this backend takes.
    pub fn mechanism(&self) -> Mechanism {
        self.mechanism
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
        Ok(self.dir.join(lock_file_path(name, self.layout)?))
    }

    /// Creates the subdirectories a tree-layout path needs, and checks that
    /// none of them leads out of the lock directory through a symlink.
    fn prepare_parent(&self, path: &Path) -> Result<()> {
        let Some(parent) = path.parent().filter(|p| *p != self.dir) else {
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
        let real_dir = self.dir.canonicalize().map_err(|e| {
            Error::io(
                format_args!("resolving lock directory {}", self.dir.display()),
                e,
            )
        })?;
        if !real_parent.starts_with(&real_dir) {
            return Err(Error::new(
                ErrorKind::PermissionDenied,
                format!(
                    "lock subdirectory {} leads out of the lock directory {} through a symlink; refused",
                    parent.display(),
                    self.dir.display()
                ),
            ));
        }
        Ok(())
    }

    /// How many names this process currently holds or waits for (for leak checks).
    #[doc(hidden)]
    pub fn active_names(&self) -> usize {
        self.table.len()
    }
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
            .field("dir", &self.dir)
            .field("mechanism", &self.mechanism)
            .field("active_names", &self.active_names())
            .finish()
    }
}

/// A held lock file and the in-process turn in front of it.
struct FileHeld {
    // Field order matters: the file is unlocked and closed before the
    // in-process turn ends.
    file: LockedFile,
    _turn: LocalTurn<PathBuf>,
}

impl fmt::Debug for FileHeld {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileHeld")
            .field("path", &self.file.path())
            .finish()
    }
}

#[async_trait]
impl HeldLock for FileHeld {
    async fn release(self: Box<Self>) -> Result<()> {
        let FileHeld { file, _turn } = *self;
        let result = file.unlock();
        drop(_turn);
        result
    }

    fn release_on_drop(self: Box<Self>) {
        // Unlock and close are plain system calls: no runtime needed.
        drop(self);
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
            Layout::Flat => format!("file://{} ({})", self.dir.display(), self.mechanism),
            Layout::Tree => format!("file://{} ({}, tree)", self.dir.display(), self.mechanism),
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
        let relative = lock_file_path(&request.name, self.layout)?;
        let path = self.dir.join(&relative);
        if self.layout == Layout::Tree {
            self.prepare_parent(&path)?;
        }
        let blocking = request.wait != Wait::TryOnce;
        let turn = if blocking {
            self.table.lock(&relative).await
        } else {
            self.table
                .try_lock(&relative)
                .ok_or_else(|| request.would_block(self))?
        };

        // Fast path: a free lock is taken with non-blocking calls on this
        // thread (an open and an fcntl of a few microseconds), without a round
        // trip through the blocking pool.
        match sys::lock_path(&path, self.mechanism, false, &|| false)? {
            Attempt::Acquired(file) => {
                let held = FileHeld { file, _turn: turn };
                return Ok(LockGuard::new(
                    request,
                    next_token(),
                    never_lost(),
                    Box::new(held),
                ));
            }
            Attempt::Busy if !blocking => return Err(request.would_block(self)),
            Attempt::Busy => {}
        }

        // Slow path: wait in the kernel on a blocking thread.
        let (tx, rx) = oneshot::channel::<Answer>();
        let mechanism = self.mechanism;
        let job_path = path.clone();
        run_blocking(move || {
            let attempt = sys::lock_path(&job_path, mechanism, true, &|| tx.is_closed());
            let answer = match attempt {
                Ok(Attempt::Acquired(file)) => {
                    let token = next_token();
                    let held = FileHeld { file, _turn: turn };
                    Ok(Some((held, token)))
                }
                Ok(Attempt::Busy) => {
                    drop(turn);
                    Ok(None)
                }
                Err(e) => {
                    drop(turn);
                    Err(e)
                }
            };
            if let Err(Ok(Some((held, _)))) = tx.send(answer) {
                // The acquire future is gone (timeout or cancellation) while
                // this thread waited in the kernel: let go at once.
                let FileHeld { file, _turn } = held;
                let _ = file.unlock();
            }
        })?;

        match rx.await {
            Ok(Ok(Some((held, token)))) => {
                Ok(LockGuard::new(request, token, never_lost(), Box::new(held)))
            }
            Ok(Ok(None)) => Err(request.would_block(self)),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(Error::new(
                ErrorKind::Internal,
                format!(
                    "the thread locking {} stopped without an answer (is the runtime shutting down?)",
                    path.display()
                ),
            )),
        }
    }

    /// Removes every lock file directly in the directory that nobody holds.
    ///
    /// Only regular files at the top of the directory are considered
    /// (symlinks, directories and anything else are left alone), so lock files
    /// in the subdirectories of [`Layout::Tree`] are not cleaned. Each is opened without following symlinks and
    /// try-locked with every mechanism this platform has (OFD and `flock` on
    /// Linux), so a holder of either kind keeps its file. A file that is free
    /// is unlinked while this call still holds its lock, and only if the path
    /// still names the locked file. Held files are counted in
    /// [`CleanReport::busy`].
    ///
    /// Waiters of this crate that were blocked on a removed file notice it and
    /// retry on a fresh file. Python processes do not: clean while they are
    /// stopped, as oslo advises.
    ///
    /// # Errors
    /// [`ErrorKind::Io`] / [`ErrorKind::PermissionDenied`] naming the path
    /// when the directory cannot be listed or a lock file cannot be opened,
    /// locked or removed; files removed before the error stay removed.
    async fn clean(&self) -> Result<CleanReport> {
        let (tx, rx) = oneshot::channel();
        let dir = self.dir.clone();
        run_blocking(move || {
            let _ = tx.send(clean_dir(&dir));
        })?;
        rx.await.unwrap_or_else(|_| {
            Err(Error::new(
                ErrorKind::Internal,
                format!(
                    "the thread cleaning {} stopped without an answer (is the runtime shutting down?)",
                    self.dir.display()
                ),
            ))
        })
    }
}

fn clean_dir(dir: &Path) -> Result<CleanReport> {
    let list_error = |e| {
        Error::io(
            format_args!("cannot list lock directory {}", dir.display()),
            e,
        )
    };
    let mut report = CleanReport::default();
    for entry in std::fs::read_dir(dir).map_err(list_error)? {
        let entry = entry.map_err(list_error)?;
        let path = entry.path();
        // `file_type` does not follow symlinks.
        let file_type = entry
            .file_type()
            .map_err(|e| Error::io(format_args!("cannot stat {}", path.display()), e))?;
        if !file_type.is_file() {
            continue;
        }
        match sys::remove_if_unheld(&path, Mechanism::available())? {
            sys::Cleaned::Removed => report.removed.push(path.display().to_string()),
            sys::Cleaned::Busy => report.busy += 1,
            sys::Cleaned::Gone => {}
        }
    }
    report.removed.sort();
    Ok(report)
}
