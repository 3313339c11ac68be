//! Global-scope locks on etcd v3.
//!
//! [`EtcdBackend`] implements [`Backend`] for the [`Scope::Global`] locks of
//! the `locks` workspace: locks that exclude every process on every node
//! talking to the same etcd cluster. The `locks` facade builds it from an
//! `etcd://host:port[,host:port…]?ttl=…&prefix=…&layout=…` URL; using this
//! crate alone, fill in an [`EtcdConfig`].
//!
//! # Code layout
//! After etcd's own `concurrency` package: `url` (an `etcd://` URL into an
//! [`EtcdConfig`]), `config`, `members` (one client per member, failover),
//! `core` (the session: the lease every lock shares), `mutex` and `tooz` (the
//! two key layouts' recipes), `wait` (a contender waiting for the one before),
//! `held` (a held lock, its release), `status`, `tls`. `locks-zookeeper` and
//! `locks-redis` use the same names for the same jobs.
//!
//! # Layouts
//! - [`Layout::Mutex`] (default) speaks the protocol of etcd's own
//!   `concurrency.Mutex`, which `etcdctl lock` and the server's Lock RPC use:
//!   every contender creates the key `<prefix><name>/<lease id in hex>` on its
//!   lease; the key with the lowest create revision holds the lock; every other
//!   contender watches only the key created just before its own. Contenders
//!   are served in the order they created their keys (FIFO; a task queued
//!   behind another task of this backend creates its key when that task's
//!   turn ends, see below), and a release wakes exactly one of them. A waiter that had only the holder ahead of it takes the lock on the
//!   holder's delete event without reading the queue again, as long as its
//!   own lease is provably alive (the last keep-alive answered leaves more
//!   than a quarter of the TTL); otherwise it reads the queue once more, as
//!   `concurrency.Mutex` does. A handoff thus costs the release's write and
//!   the watch event. With the default empty prefix, `etcdctl lock <name>` and this backend
//!   exclude each other. As in etcd, the range of a name includes the keys of
//!   names that extend it with a `/` (lock `a` also sees contenders for `a/b`),
//!   which can only make `a` wait longer, never let two holders in.
//! - [`Layout::Tooz`] uses the keys of OpenStack tooz's etcd3 driver: the key
//!   `/tooz/locks<name>` (no separator) holds 16 random bytes and is created
//!   only if absent; release deletes it only while it still holds our value.
//!   Where tooz polls once a second, waiters here watch the key for its delete.
//!   Not FIFO. tooz grants one lease per lock, this backend one lease for all;
//!   that does not matter to tooz, which only looks at the key.
//!
//! # Status
//! [`Backend::status`] tells who holds a lock and who waits. For that, each
//! lease carries one identity key, `<prefix>__locks_holders/<lease id in
//! hex>` (`/tooz/__locks_holders/…` with [`Layout::Tooz`]), value
//! `host:pid:program` and `granted_unix=<seconds>`, written once per lease
//! grant (best effort); and with [`Layout::Mutex`] the contender key's value,
//! empty in `etcdctl lock`, is `host:pid[:label]`. Neither changes what
//! `etcdctl lock` or tooz see (the lock name `__locks_holders`, whose range
//! holds these keys, is refused with [`Layout::Mutex`]). Waiters show in queue order with
//! [`Layout::Mutex`] only; etcd records no times, so `since` is unknown;
//! contenders of other clients (etcdctl, tooz) show their token only.
//! [`Backend::statuses`] (`locks status --all`) finds the locks by their
//! keys: under the prefix, keys named after the lease they are on
//! ([`Layout::Mutex`]; with an empty prefix that reads every key name of the
//! cluster, in pages), or every key under `/tooz/locks` ([`Layout::Tooz`]).
//!
//! # Clusters and failover
//! List every member (`EtcdConfig::endpoints`). Requests go to one member at
//! a time; one that fails for a transport reason (connection refused or
//! reset, no leader, no answer in time) is sent again to the next member,
//! within the request timeout, so while a quorum of the members is up no
//! lock operation fails for a member or leader failure: holders keep their
//! locks (at most [`AtRisk`](locks_core::LockState::AtRisk) for a moment),
//! waiters keep their key and so their place. Every request is safe to
//! repeat: a create whose answer was lost finds its own key and keeps it (no
//! second contender). etcd-client's own endpoint balancing does not fail over
//! (see `members.rs` for why we rotate ourselves). Choose a TTL well above
//! the time the cluster needs to elect a new leader (with etcd's default
//! election timeout of 1 s, elections took 1–2 s here): a keep-alive that
//! gets no answer for most of the TTL loses the lock, election or not.
//!
//! # The lease
//! One backend (one `Locks` client) has one lease, shared by every lock it
//! holds and kept alive by one background task that pings every TTL/8 (and
//! every 50 ms, member after member, after a failed ping). A crashed or
//! frozen holder's locks therefore vanish within the TTL (default 10 s).
//! Closing the backend (dropping it once every guard it handed out is gone)
//! revokes the lease before the drop returns, so no key of the client
//! outlives it, not even when the process exits right after.
//!
//! # Lost locks
//! If a ping fails, every guard of the lease reports
//! [`LockState::AtRisk`](locks_core::LockState::AtRisk) until the next ping
//! gets through. If the server says the lease expired, or no ping got through
//! until min(TTL/5, 1 s) + 100 ms before the server could first expire the
//! lease (the send time of the last successful ping plus the TTL), every
//! guard reports [`LockState::Lost`](locks_core::LockState::Lost):
//! [`LockGuard::lost`] resolves and [`LockGuard::release`] fails with
//! [`ErrorKind::Lost`]. A holder cut off from
//! the cluster is thus told before anybody else can get its lock; an outage
//! of up to half the TTL loses nothing. The lease given up is revoked as soon
//! as a member takes the request, and the next acquire grants a new lease
//! (no need to reopen the client when the cluster comes back). Deleting a
//! held key behind the backend's back (`etcdctl del`) is only noticed at
//! release, which then reports `Lost` too.
//!
//! # Fencing tokens
//! A guard's [`token`](LockGuard::token) is the create revision of its key:
//! strictly increasing across all holders of a name (indeed across all keys of
//! the cluster). A resource can guard writes by comparing it, as Go's
//! `Mutex.IsOwner` does.
//!
//! # Timeouts and cancellation
//! Every request to etcd, failover included, is bounded by
//! [`EtcdConfig::connect_timeout`] but never by more than the TTL, so an
//! unreachable cluster fails with
//! [`ErrorKind::Unavailable`] naming the
//! endpoints and what each did, instead of hanging. Waiting for a held lock is
//! bounded only by the request's [`Wait`]; a waiter with a timeout keeps
//! trying through an outage and, if the cluster still does not serve when its
//! timeout ends, fails with `Unavailable` saying what is down rather than
//! with a plain timeout; one that waits forever keeps its place through an
//! outage shorter than its lease and fails with `Unavailable` once the lease
//! is lost and no member grants a new one. An acquire may be dropped at any point (that is how
//! timeouts work): the contender key it may have created is deleted in the
//! background, later acquires of the same name in this process wait for that
//! delete, and closing the backend revokes the lease (and with it the key)
//! if the delete has not run. Two tasks of one backend asking for one name
//! take turns in an in-process FIFO queue first, because etcd's mutex would
//! let two users of one lease in at once.
//!
//! # TLS
//! `https://` endpoints and [`TlsConfig`] need this crate's `tls` feature
//! ([`TLS_SUPPORTED`]); without it, connecting with TLS settings fails with
//! [`ErrorKind::Unsupported`]. Without a CA file the server is verified
//! against the system's trust roots (`SSL_CERT_FILE` / `SSL_CERT_DIR` when
//! set), as Python's `requests` does for tooz; a client certificate needs no
//! CA file. The files are checked before connecting: an unreadable or non-PEM
//! file, an encrypted key or a key of another certificate fails at once with
//! an error naming the file; a wrong CA, an expired certificate or a host name
//! mismatch with an [`ErrorKind::InvalidConfig`] saying which.
//!
//! # Example
//! ```no_run
//! use std::time::Duration;
//! use locks_core::{Backend, LockName, LockRequest, Scope, Wait, acquire};
//! use locks_etcd::{EtcdBackend, EtcdConfig};
//!
//! # async fn run() -> locks_core::Result<()> {
//! let mut config = EtcdConfig::new(["127.0.0.1:2379"]);
//! config.ttl = Duration::from_secs(5);
//! let backend = EtcdBackend::connect(config).await?;
//! let request = LockRequest::new(LockName::new("cinder-vol-7")?, Scope::Global)
//!     .wait(Wait::Timeout(Duration::from_secs(30)));
//! let guard = acquire(&backend, &request).await?;
//! println!("holding {} with fencing token {}", guard.name(), guard.token());
//! tokio::select! {
//!     () = guard.lost() => eprintln!("lost the lock: stop writing"),
//!     () = tokio::time::sleep(Duration::from_secs(1)) => {}
//! }
//! guard.release().await?;
//! # Ok(())
//! # }
//! ```

mod config;
mod core;
mod held;
mod members;
mod mutex;
mod status;
#[cfg(feature = "tls")]
mod tls;
mod tooz;
mod url;
mod wait;

use std::sync::Arc;
use std::time::Duration;

pub use config::{
    DEFAULT_CONNECT_TIMEOUT, DEFAULT_TTL, EtcdConfig, Layout, MIN_TTL, TLS_SUPPORTED, TOOZ_PREFIX,
    TlsConfig,
};
use locks_core::{
    Backend, Capabilities, Error, ErrorKind, FencingToken, LockGuard, LockRequest, Result, Scope,
    Wait, async_trait,
};

use crate::core::Core;

/// Global-scope locks on an etcd cluster. Cheap to clone; clones share the
/// connection, the lease and the in-process queues.
#[derive(Clone)]
pub struct EtcdBackend {
    core: Arc<Core>,
    describe: String,
}

impl EtcdBackend {
    /// Connects to etcd and grants the lease the backend's locks will share.
    ///
    /// Must run inside a tokio runtime; that runtime also runs the keep-alive
    /// task and the background deletes of dropped guards.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidConfig`] for a bad configuration,
    /// [`ErrorKind::Unsupported`] for TLS in a build without it,
    /// [`ErrorKind::Unavailable`] if no member grants the lease within
    /// [`EtcdConfig::connect_timeout`] (at most the TTL), naming each member
    /// and what it did, [`ErrorKind::PermissionDenied`] for refused
    /// credentials. Messages name the endpoints, never the password.
    pub async fn connect(config: EtcdConfig) -> Result<EtcdBackend> {
        let core = Core::connect(&config).await?;
        let describe = format!(
            "etcd://{} (layout={})",
            config.endpoint_list(),
            config.layout
        );
        Ok(EtcdBackend { core, describe })
    }

    /// The layout this backend uses.
    pub fn layout(&self) -> Layout {
        self.core.layout
    }

    /// The id of the lease the backend's locks currently live on (for
    /// diagnostics: `etcdctl lease timetolive <id in hex>`). If the last lease
    /// was lost, this grants the next one, as the next acquire would.
    ///
    /// # Errors
    /// As [`connect`](Self::connect), when a new lease cannot be granted.
    pub async fn lease_id(&self) -> Result<i64> {
        Ok(self.core.lease().await?.id)
    }

    /// The etcd key prefix under which the contenders for `name` live
    /// ([`Layout::Mutex`]: `<prefix><name>/`), or the one key of `name`
    /// ([`Layout::Tooz`]: `/tooz/locks<name>`).
    pub fn key_of(&self, name: &locks_core::LockName) -> Vec<u8> {
        match self.core.layout {
            Layout::Mutex => mutex::name_prefix(&self.core, name.as_str()),
            Layout::Tooz => tooz::key_of(&self.core, name.as_str()),
        }
    }

    /// How many names tasks of this process hold or wait for through this
    /// backend (for leak checks).
    pub fn active_names(&self) -> usize {
        self.core.local.len()
    }
}

impl std::fmt::Debug for EtcdBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdBackend")
            .field("endpoints", &self.core.endpoints)
            .field("layout", &self.core.layout)
            .field("active_names", &self.active_names())
            .finish()
    }
}

#[async_trait]
impl Backend for EtcdBackend {
    fn kind(&self) -> &'static str {
        "etcd"
    }

    fn describe(&self) -> String {
        self.describe.clone()
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            scopes: &[Scope::Global],
            fifo: self.core.layout == Layout::Mutex,
            fencing: true,
            can_lose: true,
        }
    }

    /// The contenders of the lock as etcd has them (see the crate docs,
    /// "Status"): holder and waiters by create revision ([`Layout::Mutex`]),
    /// or only whether the key is held ([`Layout::Tooz`]). Reads only, within
    /// the request timeout.
    ///
    /// # Errors
    /// [`ErrorKind::Unavailable`] when no member answers in time,
    /// [`ErrorKind::PermissionDenied`] for refused credentials.
    async fn status(
        &self,
        name: &locks_core::LockName,
        scope: Scope,
    ) -> Result<locks_core::LockStatus> {
        status::status(&self.core, name, scope, self.describe.clone()).await
    }

    /// Every lock with a contender key (`locks status --all`): the prefix's
    /// keys read page by page, keys only; each lock as
    /// [`status`](Backend::status) tells it. With an empty prefix
    /// ([`Layout::Mutex`]) that reads every key of the cluster. The whole
    /// walk within the request timeout.
    ///
    /// # Errors
    /// As [`status`](Backend::status).
    async fn statuses(&self, scope: Scope) -> Result<Vec<locks_core::LockStatus>> {
        status::all(&self.core, scope, self.describe.clone()).await
    }

    /// Acquires `request.name` in etcd.
    ///
    /// # Errors
    /// [`ErrorKind::WouldBlock`] for a
    /// held lock with [`Wait::TryOnce`];
    /// [`ErrorKind::Unavailable`] when no
    /// member serves (for a [`Wait::Timeout`], only once the timeout is
    /// nearly over, saying what each member did);
    /// [`ErrorKind::PermissionDenied`]
    /// for refused credentials.
    ///
    /// # Cancel safety
    /// Cancel safe: a dropped acquire deletes the key it may have created, in
    /// the background, before the next local acquire of the name proceeds.
    async fn acquire(&self, request: &LockRequest) -> Result<LockGuard> {
        let Wait::Timeout(limit) = request.wait else {
            return self.acquire_within(request).await;
        };
        // `locks_core::acquire` drops this future at `limit` and reports a
        // plain timeout. A waiter that spent its time failing to reach the
        // cluster must say so instead: shortly before the limit, if no member
        // serves, end with `Unavailable` naming what each member did.
        let Some(early) = limit
            .checked_sub(UNAVAILABLE_NOTICE)
            .filter(|early| !early.is_zero())
        else {
            return self.acquire_within(request).await;
        };
        let started = tokio::time::Instant::now();
        let acquiring = self.acquire_within(request);
        tokio::pin!(acquiring);
        tokio::select! {
            result = &mut acquiring => return result,
            () = tokio::time::sleep_until(started + early) => {}
        }
        match self.core.outage() {
            Some(outage) => Err(Error::new(
                ErrorKind::Unavailable,
                format!(
                    "waited {limit:?} for lock `{}` ({}) while the cluster did not serve: {outage}; \
                     check that a majority of the members run and reach each other",
                    request.name, self.describe
                ),
            )),
            None => acquiring.await,
        }
    }
}

/// How long before a waiter's timeout it checks whether the cluster serves
/// (see [`EtcdBackend::acquire`]); the caller's own timer fires at the limit.
const UNAVAILABLE_NOTICE: Duration = Duration::from_millis(10);

impl EtcdBackend {
    /// [`Backend::acquire`] without the check at the timeout.
    async fn acquire_within(&self, request: &LockRequest) -> Result<LockGuard> {
        let local = match request.wait {
            Wait::TryOnce => self
                .core
                .local
                .try_lock(&request.name)
                .ok_or_else(|| request.would_block(&self.describe()))?,
            Wait::Forever | Wait::Timeout(_) => self.core.local.lock(&request.name).await,
        };
        let (held, revision) = match self.core.layout {
            Layout::Mutex => mutex::acquire(&self.core, self, request, local).await?,
            Layout::Tooz => tooz::acquire(&self.core, self, request, local).await?,
        };
        let token = FencingToken::try_from(revision).unwrap_or(0);
        let state = held.lease_state();
        Ok(LockGuard::new(request, token, state, Box::new(held)))
    }
}
