//! [`BlockingLocks`]: the same client for callers without an async runtime
//! (plain threads; the C ABI of `locks-ffi` is built on it).

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};

use locks_core::{
    CleanReport, Error, ErrorKind, LockGuard, LockRequest, MultiGuard, Params, Result, Scope, Wait,
};

use crate::{CancelToken, Config, Locks};

/// A [`Locks`] client with its own tokio runtime, whose calls block the calling thread.
///
/// For threads that are not inside an async runtime (plain threads, C or Go
/// callers). Each call detects a caller that *is* inside a runtime and fails
/// with [`ErrorKind::Unsupported`] instead of panicking: use [`Locks`] there.
/// Re-entry is detected per OS thread unless turned off
/// ([`set_reentry_per_thread`](Self::set_reentry_per_thread)). Acquires can
/// be cancelled from another thread with a [`CancelToken`]. Dropping the
/// client waits a bounded time for its runtime's threads.
#[derive(Debug)]
pub struct BlockingLocks {
    // Always `Some` until dropped; `Drop` takes it to shut it down with a bound.
    runtime: Option<tokio::runtime::Runtime>,
    locks: Locks,
    /// Whether a caller is its OS thread for re-entry detection; else each
    /// acquire runs as a task of its own.
    reentry_per_thread: AtomicBool,
}

/// How long dropping a [`BlockingLocks`] waits for its runtime's threads. A
/// lock-file waiter that timed out may stay blocked in the kernel until the
/// holder releases (see `locks-file`); the drop does not wait for it (it then
/// unlocks and exits on its own).
const SHUTDOWN_WAIT: std::time::Duration = std::time::Duration::from_millis(200);

impl BlockingLocks {
    /// Starts a runtime and opens the backends `config` names.
    ///
    /// # Errors
    /// [`ErrorKind::Internal`] when the runtime cannot start; otherwise as [`Locks::open`].
    pub fn open(config: Config) -> Result<Self> {
        Self::open_with_thread_name(config, "locks-runtime")
    }

    /// [`open`](Self::open), naming the runtime's two worker threads
    /// `thread_name` (the C ABI's are `locks-ffi`).
    ///
    /// # Errors
    /// As [`open`](Self::open).
    pub fn open_with_thread_name(config: Config, thread_name: &str) -> Result<Self> {
        not_in_runtime()?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name(thread_name)
            .enable_all()
            .build()
            .map_err(|e| {
                Error::new(
                    ErrorKind::Internal,
                    format!("cannot start the lock runtime: {e}"),
                )
                .with_source(e)
            })?;
        let locks = match runtime.block_on(Locks::open(config)) {
            Ok(locks) => locks,
            Err(e) => {
                // Bounded, as in `Drop`: a backend may have left a blocking thread.
                runtime.shutdown_timeout(SHUTDOWN_WAIT);
                return Err(e);
            }
        };
        Ok(BlockingLocks {
            runtime: Some(runtime),
            locks,
            reentry_per_thread: AtomicBool::new(true),
        })
    }

    /// Chooses who holds a lock for re-entry detection.
    ///
    /// On (the default), the holder is the calling OS thread: a thread asking
    /// again for a lock it holds through this client fails at once with
    /// [`ErrorKind::WouldDeadlock`]. Off, each acquire runs as a task of its
    /// own and no re-entry is detected: a caller asking again waits like any
    /// other waiter. Turn it off when callers are not OS threads (goroutines,
    /// which Go moves between threads).
    pub fn set_reentry_per_thread(&self, per_thread: bool) {
        self.reentry_per_thread.store(per_thread, Ordering::Relaxed);
    }

    /// Whether re-entry is detected per OS thread (see
    /// [`set_reentry_per_thread`](Self::set_reentry_per_thread)).
    #[inline]
    pub fn reentry_per_thread(&self) -> bool {
        self.reentry_per_thread.load(Ordering::Relaxed)
    }

    /// Checks that the calling thread may block in this client's calls, as
    /// each call does first: for callers that must refuse before they give
    /// up something (a guard they would release).
    ///
    /// # Errors
    /// [`ErrorKind::Unsupported`] on a thread inside an async runtime, where
    /// blocking would stall it.
    #[inline]
    pub fn check_outside_runtime() -> Result<()> {
        not_in_runtime()
    }

    /// The async client this one wraps.
    pub fn locks(&self) -> &Locks {
        &self.locks
    }

    /// The runtime the calls run on (for spawning work that outlives a call).
    pub fn runtime(&self) -> &tokio::runtime::Runtime {
        self.runtime
            .as_ref()
            .unwrap_or_else(|| unreachable!("the runtime lives until drop"))
    }

    fn run<T>(&self, future: impl Future<Output = Result<T>>) -> Result<T> {
        not_in_runtime()?;
        self.runtime().block_on(future)
    }

    /// [`Locks::lock_with`], blocking.
    ///
    /// # Errors
    /// As [`Locks::lock_with`].
    pub fn lock_with(&self, id: &str, params: &Params, wait: Wait) -> Result<LockGuard> {
        let request = self.locks.request(id, params)?.wait(wait);
        self.acquire(request)
    }

    /// [`Locks::lock`], blocking.
    ///
    /// # Errors
    /// As [`Locks::lock`].
    pub fn lock(&self, id: &str, params: &Params) -> Result<LockGuard> {
        self.lock_with(id, params, Wait::Forever)
    }

    /// [`Locks::lock_name`], blocking.
    ///
    /// # Errors
    /// As [`Locks::lock_name`].
    #[inline]
    pub fn lock_name(&self, scope: Scope, name: &str, wait: Wait) -> Result<LockGuard> {
        match self.free_name_or_request(scope, name, wait, None)? {
            Ok(guard) => Ok(guard),
            Err(request) => self
                .acquire_outside_runtime(request, None)
                .map(|guard| guard.unwrap_or_else(|| unreachable!("no token, no cancellation"))),
        }
    }

    /// [`lock_name`](Self::lock_name), given up when `cancel` is triggered
    /// before or while it waits: then `Ok(None)`, with nothing held or
    /// queued. A token triggered before the call makes it return `Ok(None)`
    /// without trying the lock (errors in `name` are reported first).
    ///
    /// # Errors
    /// As [`Locks::lock_name`].
    pub fn lock_name_cancellable(
        &self,
        scope: Scope,
        name: &str,
        wait: Wait,
        cancel: &CancelToken,
    ) -> Result<Option<LockGuard>> {
        match self.free_name_or_request(scope, name, wait, Some(cancel))? {
            Ok(guard) => Ok(Some(guard)),
            Err(request) => self.acquire_outside_runtime(request, Some(cancel)),
        }
    }

    /// The start of both `lock_name`s: the lock if it is free and its backend
    /// knows the name (taken without building a request), else the request.
    /// The fast path only per thread (it records the calling thread as the
    /// holder) and not for a triggered `cancel`.
    #[inline]
    fn free_name_or_request(
        &self,
        scope: Scope,
        name: &str,
        wait: Wait,
        cancel: Option<&CancelToken>,
    ) -> Result<std::result::Result<LockGuard, LockRequest>> {
        not_in_runtime()?;
        if self.reentry_per_thread()
            && !cancel.is_some_and(CancelToken::is_triggered)
            && let Some(guard) = self.locks.try_acquire_name_now(scope, name)
        {
            return Ok(Ok(guard));
        }
        Ok(Err(self.locks.raw_request(scope, name)?.wait(wait)))
    }

    /// [`Locks::acquire`], blocking.
    ///
    /// # Errors
    /// As [`Locks::acquire`].
    pub fn acquire(&self, request: LockRequest) -> Result<LockGuard> {
        not_in_runtime()?;
        self.acquire_outside_runtime(request, None)
            .map(|guard| guard.unwrap_or_else(|| unreachable!("no token, no cancellation")))
    }

    /// [`acquire`](Self::acquire), given up when `cancel` is triggered before
    /// or while it waits: then `Ok(None)`, with nothing held or queued (the
    /// acquire future is dropped, which every backend leaves clean). A token
    /// triggered before the call makes it return `Ok(None)` without trying
    /// the lock.
    ///
    /// # Errors
    /// As [`Locks::acquire`].
    pub fn acquire_cancellable(
        &self,
        request: LockRequest,
        cancel: &CancelToken,
    ) -> Result<Option<LockGuard>> {
        not_in_runtime()?;
        self.acquire_outside_runtime(request, Some(cancel))
    }

    /// An acquire once the caller is known to be outside a runtime: on the
    /// calling thread (re-entry detected per thread) or, with that off, as a
    /// task of its own (never detected), raced against `cancel` inside
    /// whichever of the two runs it. `None` when `cancel` won.
    fn acquire_outside_runtime(
        &self,
        request: LockRequest,
        cancel: Option<&CancelToken>,
    ) -> Result<Option<LockGuard>> {
        if cancel.is_some_and(CancelToken::is_triggered) {
            return Ok(None);
        }
        // A free lock of a backend that can take it on this thread (memory,
        // a cached lock file) needs no runtime. Only per thread, as above.
        let per_thread = self.reentry_per_thread();
        if per_thread && let Some(guard) = self.locks.try_acquire_now(&request) {
            return Ok(Some(guard));
        }
        let cancel = cancel.cloned();
        let runtime = self.runtime();
        if per_thread {
            return runtime.block_on(acquire_or_cancel(&self.locks, request, cancel));
        }
        let locks = self.locks.clone();
        let task = runtime.spawn(async move { acquire_or_cancel(&locks, request, cancel).await });
        match runtime.block_on(task) {
            Ok(result) => result,
            // The panic of the task is the caller's.
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => Err(Error::new(
                ErrorKind::Internal,
                format!("the acquire task did not finish (is the client shutting down?): {e}"),
            )),
        }
    }

    /// [`Locks::lock_many`], blocking.
    ///
    /// # Errors
    /// As [`Locks::lock_many`].
    pub fn lock_many(&self, requests: Vec<LockRequest>, wait: Wait) -> Result<MultiGuard> {
        self.run(self.locks.lock_many(requests, wait))
    }

    /// [`LockGuard::release`], blocking.
    ///
    /// # Errors
    /// As [`LockGuard::release`].
    #[inline]
    pub fn release(&self, guard: LockGuard) -> Result<()> {
        not_in_runtime()?;
        match guard.try_release_now() {
            Ok(released) => released,
            Err(guard) => self.runtime().block_on(guard.release()),
        }
    }

    /// [`Locks::clean`], blocking.
    ///
    /// # Errors
    /// As [`Locks::clean`].
    pub fn clean(&self, scope: Scope) -> Result<CleanReport> {
        self.run(self.locks.clean(scope))
    }
}

impl Drop for BlockingLocks {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_timeout(SHUTDOWN_WAIT);
        }
    }
}

/// `locks.acquire(request)`, raced against `cancel`: `None` if the token
/// wins, and then the acquire is dropped without being polled again.
async fn acquire_or_cancel(
    locks: &Locks,
    request: LockRequest,
    cancel: Option<CancelToken>,
) -> Result<Option<LockGuard>> {
    let Some(cancel) = cancel else {
        return locks.acquire(request).await.map(Some);
    };
    tokio::select! {
        // The token first: once triggered, the acquire is not polled again.
        biased;
        () = cancel.cancelled() => Ok(None),
        acquired = locks.acquire(request) => acquired.map(Some),
    }
}

#[inline]
fn not_in_runtime() -> Result<()> {
    if tokio::runtime::Handle::try_current().is_ok() {
        return Err(Error::new(
            ErrorKind::Unsupported,
            "BlockingLocks was called from inside an async runtime, where blocking would stall it; \
             use the async `Locks` client there",
        ));
    }
    Ok(())
}
