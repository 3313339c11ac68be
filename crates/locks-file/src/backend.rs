//! [`FileBackend`]: the [`Backend`] implementation, holdings ([`FileHeld`])
//! and fencing tokens.
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
//! Releasing a lock unlocks the file and keeps its descriptor open for the
//! next holder in this process (`cache.rs`);
//! it **never unlinks** the file, because unlinking a file someone else waits
//! on would let two holders in at once. Use [`Backend::clean`] to remove lock
//! files nobody holds.
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

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use locks_core::{
    Backend, Capabilities, CleanReport, Error, ErrorKind, FencingToken, HeldLock, HolderId,
    LocalLocks, LocalTurn, LockGuard, LockName, LockRequest, LockStatus, Result, Scope, Wait,
    async_trait,
};
use tokio::sync::oneshot;

use crate::cache::{self, Cache};
use crate::dir::{self, clean_dir, prepare_dir};
use crate::lockfile::{self, Attempt, LockedFile, Target};
use crate::path::{Key, lock_file_path};
use crate::sys;
use crate::{FileConfig, Layout, Mechanism};

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
    pub(crate) shared: Arc<Shared>,
    layout: Layout,
    pub(crate) table: LocalLocks<Key>,
}

/// What a backend shares with its holdings and its waiting threads.
pub(crate) struct Shared {
    dir: PathBuf,
    mechanism: Mechanism,
    /// See [`sys::later_ctime_after_read`].
    pub(crate) later_ctime_after_read: bool,
    /// Unlocked lock files kept open for the next holder.
    pub(crate) cache: Cache,
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

/// Runs `job` where it may block: on tokio's blocking pool inside a runtime,
/// on a plain thread otherwise.
/// Runs `job` on a blocking thread and waits for its answer; `what` says
/// what it does, for the error when the thread never answers.
async fn off_runtime<T: Send + 'static>(
    what: &'static str,
    job: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    let (tx, rx) = oneshot::channel();
    run_blocking(move || {
        let _ = tx.send(job());
    })?;
    rx.await.unwrap_or_else(|_| {
        Err(Error::new(
            ErrorKind::Internal,
            format!("the thread {what} stopped without an answer (is the runtime shutting down?)"),
        ))
    })
}

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

    fn try_release_now(&mut self) -> Option<Result<()>> {
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
    /// call and the check of the descriptor (see the module docs), on the
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
        match lockfile::lock_file(&target, Some(open), self.shared.mechanism, false, &|| false) {
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
    /// at once (see the module docs).
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
            return Err(request.would_block(&self.describe()));
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
        let open =
            match lockfile::lock_file(&target, cached, self.shared.mechanism, false, &|| false)? {
                Attempt::Acquired(file) => return Ok(self.guard(request, file, key, turn)),
                Attempt::Busy(open) if !blocking => {
                    if let Some(open) = open {
                        self.shared.cache.put(&key, open);
                    }
                    return Err(request.would_block(&self.describe()));
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
            let attempt = lockfile::lock_file(
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
            Ok(Ok(None)) => Err(request.would_block(&self.describe())),
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

    /// Read from the kernel (`/proc/locks` and `/proc/PID/fdinfo`): the
    /// holder's pid, how many processes wait; see the `status` module.
    async fn status(&self, name: &LockName, scope: Scope) -> Result<LockStatus> {
        let path = self.path_for(name)?;
        let (name, backend) = (name.clone(), self.describe());
        off_runtime("reading the kernel's lock table", move || {
            crate::status::status(&path, &name, scope, backend)
        })
        .await
    }

    /// Every lock file in the directory that is held or waited for, named
    /// by its path in the directory.
    async fn statuses(&self, scope: Scope) -> Result<Vec<LockStatus>> {
        let (dir, backend) = (self.shared.dir.clone(), self.describe());
        off_runtime("reading the kernel's lock table", move || {
            crate::status::all(&dir, scope, &backend)
        })
        .await
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
    /// The descriptors this backend keeps open (see the module docs) are
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
        let dir = self.shared.dir.clone();
        let layout = self.layout;
        off_runtime("cleaning the lock directory", move || {
            let mut report = CleanReport::default();
            dir::Dir::open(&dir)
                .and_then(|top| clean_dir(&top, layout, 0, &mut report))
                .map(|()| {
                    report.removed.sort();
                    report
                })
        })
        .await
    }
}
