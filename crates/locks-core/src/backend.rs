//! The trait every lock mechanism implements ([`Backend`]), what it offers
//! ([`Capabilities`]), and [`acquire`], which applies the caller's timeout.

use std::fmt;

use async_trait::async_trait;

use crate::{Error, ErrorKind, HolderId, LockGuard, LockName, LockRequest, Result, Scope, Wait};

/// What a backend offers, for callers and for the conformance suite.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// The scopes this backend can honour.
    pub scopes: &'static [Scope],
    /// Waiters on one name acquire in the order they asked: always among the
    /// tasks of one backend value (client); across clients (processes), in
    /// the order they reached the shared queue (a server's), which a task
    /// queued behind another task of its own client reaches only when that
    /// task's turn ends, so another client's waiter that reached it
    /// meanwhile goes first.
    pub fifo: bool,
    /// Fencing tokens strictly increase across holders of one name.
    pub fencing: bool,
    /// Held locks can be lost (lease or session expiry) and are reported through [`LockState`](crate::LockState).
    pub can_lose: bool,
}

/// What [`Backend::clean`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CleanReport {
    /// What was removed (paths or keys).
    pub removed: Vec<String>,
    /// How many entries were left because someone held or waited on them.
    pub busy: usize,
}

/// A lock mechanism: memory, lock files, etcd, ZooKeeper.
///
/// Backends are object safe and shared as `Arc<dyn Backend>`. They depend only
/// on `locks-core`; the `locks` facade builds them from configuration.
///
/// Contract for implementors:
/// - [`acquire`](Backend::acquire) honours [`Wait::TryOnce`] itself (fail with
///   [`LockRequest::would_block`]). Timeouts are applied by [`acquire`](crate::acquire)
///   dropping the future, so the future must be cancel safe: dropped at any
///   point, it leaves no lock held and no contender behind.
/// - Two tasks of one process asking for one name exclude each other.
#[async_trait]
pub trait Backend: fmt::Debug + Send + Sync + 'static {
    /// A short name of the mechanism (`"memory"`, `"file"`, `"etcd"`).
    fn kind(&self) -> &'static str;

    /// Where the backend points, for messages: `file:///var/lib/locks`,
    /// `etcd://127.0.0.1:2379`. Never includes credentials.
    fn describe(&self) -> String;

    /// What this backend offers.
    fn capabilities(&self) -> Capabilities;

    /// Acquires a lock.
    ///
    /// # Errors
    /// [`ErrorKind::WouldBlock`] for a contended [`Wait::TryOnce`]; backend
    /// errors ([`ErrorKind::Unavailable`], [`ErrorKind::Io`], ...) otherwise.
    ///
    /// # Cancel safety
    /// Cancel safe (see the trait docs).
    async fn acquire(&self, request: &LockRequest) -> Result<LockGuard>;

    /// Acquires `request` at once if that needs neither waiting nor I/O: a
    /// fast path for a free lock, which callers may try before
    /// [`acquire`](Backend::acquire) (the `locks` client does).
    ///
    /// `None` sends the caller to [`acquire`](Backend::acquire): the lock is
    /// busy, or taking it needs more than this backend does here (the
    /// default, for every request). A guard returned here must be one that
    /// `acquire` could have returned. Return one only for a lock nobody in
    /// this process holds: the `locks` client skips its re-entry check when
    /// this succeeds, because a caller cannot hold a free lock.
    fn try_acquire_now(&self, request: &LockRequest) -> Option<LockGuard> {
        let _ = request;
        None
    }

    /// [`try_acquire_now`](Backend::try_acquire_now) for a lock given by its
    /// full name as text (a request in `scope`), for when building the
    /// [`LockName`] costs as much as the rest (the memory backend builds one
    /// only for a name it has not served lately). `name` is not validated:
    /// a backend builds its [`LockName`] (which validates) or finds one it
    /// built; `None` for an invalid name. Default: `None`.
    fn try_acquire_name_now(&self, name: &str, scope: Scope) -> Option<LockGuard> {
        let _ = (name, scope);
        None
    }

    /// Whether this backend records who holds each of its locks and answers
    /// [`held_by`](Backend::held_by). When it does, the `locks` client asks it
    /// instead of keeping its own record of holders for re-entry detection.
    /// Default: `false`.
    fn knows_holders(&self) -> bool {
        false
    }

    /// Whether `holder` (the task or thread that acquired it) holds the lock
    /// of `request` through this backend right now. Only meaningful when
    /// [`knows_holders`](Backend::knows_holders); the default says `false`.
    fn held_by(&self, request: &LockRequest, holder: HolderId) -> bool {
        let _ = (request, holder);
        false
    }

    /// Who holds the lock `name` (a full name, prefix applied) asked for in
    /// `scope`, and who waits for it, as far as this backend can know.
    ///
    /// # Errors
    /// [`ErrorKind::Unsupported`] (the default) where the backend cannot
    /// tell; backend errors ([`ErrorKind::Unavailable`], [`ErrorKind::Io`])
    /// otherwise.
    ///
    /// # Cancel safety
    /// Cancel safe: it only reads.
    async fn status(&self, name: &LockName, scope: Scope) -> Result<crate::LockStatus> {
        let _ = (name, scope);
        Err(Error::new(
            ErrorKind::Unsupported,
            format!("the {} backend cannot tell who holds a lock", self.kind()),
        ))
    }

    /// Every lock of this backend that is held or waited for right now, as
    /// [`status`](Backend::status) would tell each, for `scope`.
    ///
    /// # Errors
    /// [`ErrorKind::Unsupported`] (the default) where the backend cannot
    /// list its locks; backend errors otherwise.
    ///
    /// # Cancel safety
    /// Cancel safe: it only reads.
    async fn statuses(&self, scope: Scope) -> Result<Vec<crate::LockStatus>> {
        let _ = scope;
        Err(Error::new(
            ErrorKind::Unsupported,
            format!("the {} backend cannot list its locks", self.kind()),
        ))
    }

    /// Removes state nobody holds (lock files, empty lock directories).
    ///
    /// # Errors
    /// [`ErrorKind::Unsupported`] where there is nothing to clean.
    async fn clean(&self) -> Result<CleanReport> {
        Err(Error::new(
            ErrorKind::Unsupported,
            format!("the {} backend keeps no state to clean", self.kind()),
        ))
    }
}

/// Acquires through `backend`, applying [`Wait::Timeout`] by dropping the
/// backend's future when the time is up.
///
/// # Errors
/// [`ErrorKind::Timeout`] when the timeout elapses, otherwise as [`Backend::acquire`].
///
/// # Cancel safety
/// Cancel safe, as every backend's acquire.
pub async fn acquire(backend: &dyn Backend, request: &LockRequest) -> Result<LockGuard> {
    match request.wait {
        Wait::Timeout(limit) => match tokio::time::timeout(limit, backend.acquire(request)).await {
            Ok(result) => result,
            Err(_) => Err(request.timed_out(&backend.describe(), limit)),
        },
        Wait::Forever | Wait::TryOnce => backend.acquire(request).await,
    }
}
