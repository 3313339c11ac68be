//! [`BlockingLocks`]: the same client for callers without an async runtime.

use std::future::Future;

use locks_core::{
    CleanReport, Error, ErrorKind, LockGuard, LockRequest, MultiGuard, Params, Result, Scope, Wait,
};

use crate::{Config, Locks};

/// A [`Locks`] client with its own tokio runtime, whose calls block the calling thread.
///
/// For threads that are not inside an async runtime (plain threads, C or Go
/// callers). Each call detects a caller that *is* inside a runtime and fails
/// with [`ErrorKind::Unsupported`] instead of panicking: use [`Locks`] there.
/// Re-entry is detected per OS thread.
#[derive(Debug)]
pub struct BlockingLocks {
    // Always `Some` until dropped; `Drop` takes it to shut it down with a bound.
    runtime: Option<tokio::runtime::Runtime>,
    locks: Locks,
}

/// How long dropping a [`BlockingLocks`] waits for its runtime's threads. A
/// lock-file waiter that timed out may stay blocked in the kernel until the
/// holder releases (see `locks-file`); the drop does not wait for it.
const SHUTDOWN_WAIT: std::time::Duration = std::time::Duration::from_millis(200);

impl BlockingLocks {
    /// Starts a runtime and opens the backends `config` names.
    ///
    /// # Errors
    /// [`ErrorKind::Internal`] when the runtime cannot start; otherwise as [`Locks::open`].
    pub fn open(config: Config) -> Result<Self> {
        not_in_runtime()?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("locks-runtime")
            .enable_all()
            .build()
            .map_err(|e| {
                Error::new(
                    ErrorKind::Internal,
                    format!("cannot start the lock runtime: {e}"),
                )
                .with_source(e)
            })?;
        let locks = runtime.block_on(Locks::open(config))?;
        Ok(BlockingLocks {
            runtime: Some(runtime),
            locks,
        })
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
    pub fn lock_name(&self, scope: Scope, name: &str, wait: Wait) -> Result<LockGuard> {
        not_in_runtime()?;
        if let Some(guard) = self.locks.acquire_name_if_free(scope, name) {
            return Ok(guard);
        }
        let request = self.locks.raw_request(scope, name)?.wait(wait);
        self.acquire_outside_runtime(request)
    }

    /// [`Locks::acquire`], blocking.
    ///
    /// # Errors
    /// As [`Locks::acquire`].
    pub fn acquire(&self, request: LockRequest) -> Result<LockGuard> {
        not_in_runtime()?;
        self.acquire_outside_runtime(request)
    }

    /// [`acquire`](Self::acquire) once the caller is known to be outside a runtime.
    fn acquire_outside_runtime(&self, request: LockRequest) -> Result<LockGuard> {
        if let Some(guard) = self.locks.acquire_if_free(&request) {
            return Ok(guard);
        }
        self.runtime().block_on(self.locks.acquire(request))
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
    pub fn release(&self, guard: LockGuard) -> Result<()> {
        not_in_runtime()?;
        match guard.release_now() {
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
