//! What a backend and its guards share, and the three scripts that act on a
//! lock key.
//!
//! The key is tooz's: `<namespace>_<name>_lock`, holding the holder's token,
//! set with `SET key token NX PX <lock timeout>` (as redis-py's `Lock.acquire`
//! does), re-armed and deleted only while it still holds that token (the
//! checks of redis-py's `LUA_REACQUIRE_SCRIPT` and `LUA_RELEASE_SCRIPT`).
//! Two additions that tooz neither sees nor needs: the sibling key
//! `<key>:fence`, a counter incremented by every successful acquire of ours
//! (the fencing token), and a `PUBLISH` on the channel
//! `locks-redis:released:<key>` by every release of ours, which wakes our
//! waiters at once.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use locks_core::{LocalLocks, LockName, Result};
use tokio::runtime::Handle;

use crate::config::RedisConfig;
use crate::conn::Conn;
use crate::notify::Notifier;
use crate::refresh::Refresher;

/// The prefix of the tokens this crate writes, `locks-redis:<32 hex>:<host>:<pid>[:<label>]`:
/// a holder whose token starts with it releases with a `PUBLISH`, and says
/// who it is (for [`status`](crate::RedisBackend)). redis-py's tokens (tooz's)
/// are bare uuid hex.
pub(crate) const TOKEN_PREFIX: &str = "locks-redis:";

/// Takes the key if it is free (and counts the fence), or reports who holds it.
///
/// KEYS: the lock key, the fence key. ARGV: our token, the expiry in ms.
/// Returns `{1, fence}` when taken, `{2, fence}` when the key already holds
/// our token (a repeated request whose first answer was lost), `{0, holder's
/// token, PTTL}` when someone else holds it.
const ACQUIRE: &str = r"
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return {1, redis.call('INCR', KEYS[2])}
end
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then
  return {2, tonumber(redis.call('GET', KEYS[2]) or '0')}
end
return {0, holder or '', redis.call('PTTL', KEYS[1])}
";

/// Re-arms the expiry of the key if it still holds our token (redis-py's
/// `LUA_REACQUIRE_SCRIPT`). KEYS: the lock key. ARGV: our token, the expiry
/// in ms. Returns 1 when re-armed, 0 when the key is gone or someone else's.
const REFRESH: &str = r"
local token = redis.call('GET', KEYS[1])
if not token or token ~= ARGV[1] then
  return 0
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
";

/// Deletes the key if it still holds our token (redis-py's
/// `LUA_RELEASE_SCRIPT`) and tells our waiters. KEYS: the lock key. ARGV:
/// our token, the channel. Returns 1 when deleted, 0 when it was gone or
/// someone else's.
const RELEASE: &str = r"
local token = redis.call('GET', KEYS[1])
if not token or token ~= ARGV[1] then
  return 0
end
redis.call('DEL', KEYS[1])
redis.call('PUBLISH', ARGV[2], '')
return 1
";

/// What one acquire attempt found.
pub(crate) enum Attempt {
    /// We hold the key now; the fencing token.
    Taken(u64),
    /// Someone else holds it.
    Busy {
        /// The holder is a client of this crate (it publishes its release).
        ours: bool,
        /// How long until the key expires unless refreshed; `None` without
        /// an expiry (or already gone).
        expires_in: Option<Duration>,
    },
}

/// What a backend and all its guards share.
pub(crate) struct Core {
    pub(crate) conn: Arc<Conn>,
    pub(crate) local: LocalLocks<LockName>,
    pub(crate) notifier: Notifier,
    /// The held keys, kept alive by one task (see `refresh`).
    pub(crate) refresher: Arc<Refresher>,
    /// Dropped with the core, it ends the refresh task.
    _stop_refresh: tokio::sync::oneshot::Sender<()>,
    /// The runtime the backend was created on, for work started from `Drop`.
    pub(crate) handle: Handle,
    pub(crate) lock_timeout: Duration,
    lock_timeout_ms: u64,
    acquire: redis::Script,
    refresh: redis::Script,
    release: redis::Script,
    /// Keys of ours handed to a background delete that has not finished,
    /// by a number of their own: deleted when the backend closes.
    pending: Mutex<HashMap<u64, (String, String)>>,
    next_pending: AtomicU64,
    /// `host:pid` of this process, read once (the holder identity of
    /// [`LockRequest::holder_identity`](locks_core::LockRequest::holder_identity)
    /// without its label, which reads the host name on every call).
    process: String,
}

impl Core {
    pub(crate) async fn connect(config: RedisConfig) -> Result<Arc<Core>> {
        config.validate()?;
        let handle = Handle::try_current().map_err(|_| {
            locks_core::Error::new(
                locks_core::ErrorKind::Internal,
                format!(
                    "redis at {}: connect must run inside a tokio runtime",
                    config.describe()
                ),
            )
        })?;
        let lock_timeout = config.lock_timeout;
        let lock_timeout_ms = config.lock_timeout_ms();
        let conn = Arc::new(Conn::new(config));
        // One round trip now proves the server (or a sentinel and the master
        // it names) answers and takes our credentials.
        conn.call("checking the connection", |mut c| async move {
            redis::cmd("PING").query_async::<()>(&mut c).await
        })
        .await?;
        let notifier = Notifier::start(Arc::clone(&conn), &handle);
        let (stop_refresh, refresh_stopped) = tokio::sync::oneshot::channel();
        let core = Arc::new(Core {
            conn,
            local: LocalLocks::default(),
            notifier,
            refresher: Arc::new(Refresher::new(lock_timeout)),
            _stop_refresh: stop_refresh,
            handle,
            lock_timeout,
            lock_timeout_ms,
            acquire: redis::Script::new(ACQUIRE),
            refresh: redis::Script::new(REFRESH),
            release: redis::Script::new(RELEASE),
            pending: Mutex::new(HashMap::new()),
            next_pending: AtomicU64::new(0),
            process: format!("{}:{}", locks_core::host_name(), std::process::id()),
        });
        crate::refresh::start(&core, refresh_stopped);
        Ok(core)
    }

    /// The identity a holder writes into its token: `host:pid[:label]`, as
    /// [`LockRequest::holder_identity`](locks_core::LockRequest::holder_identity).
    pub(crate) fn identity_of(&self, request: &locks_core::LockRequest) -> String {
        match &request.label {
            Some(label) => format!("{}:{label}", self.process),
            None => self.process.clone(),
        }
    }

    pub(crate) fn key_of(&self, name: &str) -> String {
        self.conn.config.key_of(name)
    }

    /// The channel a release of `key` is published on.
    pub(crate) fn channel_of(key: &str) -> String {
        format!("locks-redis:released:{key}")
    }

    /// One acquire attempt. Safe to repeat: a repeat finds our own token.
    pub(crate) async fn try_take(&self, key: &str, token: &str) -> Result<Attempt> {
        let fence_key = format!("{key}:fence");
        let reply: Vec<redis::Value> = self
            .conn
            .call("acquiring a lock", |mut c| {
                let mut invocation = self.acquire.key(key);
                invocation
                    .key(&fence_key)
                    .arg(token)
                    .arg(self.lock_timeout_ms);
                async move { invocation.invoke_async(&mut c).await }
            })
            .await?;
        let int = |v: Option<&redis::Value>| match v {
            Some(redis::Value::Int(n)) => Some(*n),
            _ => None,
        };
        match int(reply.first()) {
            Some(1 | 2) => Ok(Attempt::Taken(
                u64::try_from(int(reply.get(1)).unwrap_or(0)).unwrap_or(0),
            )),
            _ => {
                let ours = match reply.get(1) {
                    Some(redis::Value::BulkString(holder)) => {
                        holder.starts_with(TOKEN_PREFIX.as_bytes())
                    }
                    _ => false,
                };
                let expires_in = int(reply.get(2))
                    .and_then(|ms| u64::try_from(ms).ok())
                    .map(Duration::from_millis);
                Ok(Attempt::Busy { ours, expires_in })
            }
        }
    }

    /// The holder's token and the fence counter of `key` (read only).
    pub(crate) async fn peek(&self, key: &str) -> Result<(Option<Vec<u8>>, Option<u64>)> {
        let fence_key = format!("{key}:fence");
        self.conn
            .call("reading a lock", |mut c| {
                let mut pipe = redis::pipe();
                pipe.cmd("GET").arg(key).cmd("GET").arg(&fence_key);
                async move { pipe.query_async(&mut c).await }
            })
            .await
    }

    /// Re-arms our key's expiry; `false` when it is no longer ours.
    pub(crate) async fn refresh(&self, key: &str, token: &str) -> Result<bool> {
        let done: i64 = self
            .conn
            .call("refreshing a lock", |mut c| {
                let mut invocation = self.refresh.key(key);
                invocation.arg(token).arg(self.lock_timeout_ms);
                async move { invocation.invoke_async(&mut c).await }
            })
            .await?;
        Ok(done == 1)
    }

    /// Deletes our key and wakes our waiters; `false` when it was not ours
    /// (any more). A repeated request (the first answer lost) that finds the
    /// key gone counts as deleted: the first one deleted it.
    pub(crate) async fn release(&self, key: &str, token: &str) -> Result<bool> {
        let channel = Self::channel_of(key);
        let mut attempts = 0u32;
        let done: i64 = self
            .conn
            .call("releasing a lock", |mut c| {
                attempts += 1;
                let mut invocation = self.release.key(key);
                invocation.arg(token).arg(&channel);
                async move { invocation.invoke_async(&mut c).await }
            })
            .await?;
        Ok(done == 1 || attempts > 1)
    }

    /// Deletes our key in the background, retrying until that works or the
    /// key has expired anyway; `keep` (the local turn on the name) is
    /// dropped only afterwards, so no later acquire in this process races
    /// with the delete.
    pub(crate) fn release_in_background<K: Send + 'static>(
        self: &Arc<Self>,
        key: String,
        token: String,
        keep: K,
    ) {
        let core = Arc::clone(self);
        let id = self.next_pending.fetch_add(1, Ordering::Relaxed);
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, (key.clone(), token.clone()));
        // If the runtime shuts down before this is done (the process exits
        // right after dropping a guard, say), the future is dropped and with
        // it this reference to the core: closing the core deletes the key
        // then (see `Drop`).
        self.handle.spawn(async move {
            let give_up = tokio::time::Instant::now() + core.lock_timeout;
            let mut pause = Duration::from_millis(50);
            while tokio::time::Instant::now() < give_up {
                if core.release(&key, &token).await.is_ok() {
                    break;
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(1));
            }
            core.pending
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&id);
            drop(keep);
        });
    }
}

impl Drop for Core {
    /// Closing the backend (its last clone, guard and background task gone)
    /// deletes the keys whose background delete did not finish, so that none
    /// outlives the client by the lock timeout: a process that exits right
    /// after dropping a guard or cancelling an acquire shuts its runtime down
    /// first, dropping those deletes. This runs them on a thread of its own,
    /// with a connection and a runtime of its own, and waits for it: bounded
    /// by the request timeout, 1 s at most (on a healthy server one round
    /// trip per key).
    fn drop(&mut self) {
        let pending: Vec<(String, String)> = self
            .pending
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .drain()
            .map(|(_, entry)| entry)
            .collect();
        if pending.is_empty() {
            return;
        }
        let bound = self.conn.timeout.min(Duration::from_secs(1));
        let mut config = self.conn.config.clone();
        config.request_timeout = bound;
        let closing = std::thread::Builder::new()
            .name("locks-redis-close".to_owned())
            .spawn(move || {
                let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                else {
                    return;
                };
                runtime.block_on(async move {
                    let conn = Conn::new(config);
                    let script = redis::Script::new(RELEASE);
                    let deletes = async {
                        for (key, token) in &pending {
                            let channel = Self::channel_of(key);
                            let _ = conn
                                .call("releasing a lock", |mut c| {
                                    let mut invocation = script.key(key);
                                    invocation.arg(token).arg(&channel);
                                    async move { invocation.invoke_async::<i64>(&mut c).await }
                                })
                                .await;
                        }
                    };
                    let _ = tokio::time::timeout(bound, deletes).await;
                });
            });
        if let Ok(closing) = closing {
            let _ = closing.join();
        }
    }
}
