//! [`ZkBackend`]: the session it shares, and the [`Backend`] impl that
//! puts the recipe ([`recipe`](crate::recipe)), held locks
//! ([`held`](crate::held)) and cleaning ([`clean`](crate::clean)) together.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use locks_core::{
    Backend, Capabilities, CleanReport, Error, ErrorKind, LocalLocks, LockGuard, LockName,
    LockRequest, Result, Scope, Wait, async_trait,
};
use tokio::runtime::Handle;
use tokio::sync::Mutex as AsyncMutex;
use zookeeper_client as zk;

use crate::ZkConfig;
use crate::path;
use crate::session::Session;

/// A waiter whose timeout is about to end this much later, while the
/// ensemble is unreachable, ends with `Unavailable` saying what is down,
/// before the caller's own timeout would end it with a plain `Timeout`.
const TIMEOUT_LEAD: Duration = Duration::from_millis(2);

/// Global-scope locks on a ZooKeeper ensemble, in the node layout of kazoo's
/// `Lock` recipe (see the [crate docs](crate)).
///
/// One backend is one ZooKeeper session, shared by every lock it holds;
/// clones share it too. When the session expires, the next acquire opens a
/// new one. Dropping the last clone (and the last guard) closes the session.
#[derive(Clone)]
pub struct ZkBackend {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) config: ZkConfig,
    pub(crate) describe: String,
    pub(crate) handle: Handle,
    pub(crate) session: AsyncMutex<Arc<Session>>,
    pub(crate) table: LocalLocks<LockName>,
    /// The ACL of every node created: the user's digest with credentials
    /// (empty: anyone).
    pub(crate) acls: Vec<zk::Acl>,
}

impl ZkBackend {
    /// Checks `config` and opens a session.
    ///
    /// Must be called within a tokio runtime (with timers enabled); the
    /// backend keeps a handle to it for background releases and session
    /// monitoring.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidConfig`] for a malformed configuration;
    /// [`ErrorKind::Unavailable`] when no server answers within
    /// [`connect_timeout`](ZkConfig::connect_timeout);
    /// [`ErrorKind::PermissionDenied`] when the server refuses the credentials.
    pub async fn connect(config: ZkConfig) -> Result<ZkBackend> {
        config.validate()?;
        let describe = config.describe();
        let handle = Handle::try_current().map_err(|_| {
            Error::new(
                ErrorKind::Internal,
                format!(
                    "connecting to {describe}: ZkBackend::connect must run inside a tokio runtime"
                ),
            )
        })?;
        let session = Session::open(&config, &describe, &handle).await?;
        let acls = config
            .credentials
            .as_ref()
            .map(|(user, password)| vec![digest_acl(user, password)])
            .unwrap_or_default();
        Ok(ZkBackend {
            inner: Arc::new(Inner {
                config,
                describe,
                handle,
                session: AsyncMutex::new(session),
                table: LocalLocks::default(),
                acls,
            }),
        })
    }

    /// The configuration this backend was opened with.
    pub fn config(&self) -> &ZkConfig {
        &self.inner.config
    }

    /// The lock directory of `name`: `/<namespace>/locks/<name>`.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidName`] for names that cannot be ZooKeeper paths
    /// (empty components, `.` or `..`, characters ZooKeeper refuses).
    pub fn lock_dir(&self, name: &LockName) -> Result<String> {
        path::lock_dir(&self.inner.config.namespace, name)
    }

    /// The negotiated session timeout of the current session, which decides
    /// when a cut-off holder is told lost (see the crate docs).
    pub async fn session_timeout(&self) -> Duration {
        self.inner.session.lock().await.timeout()
    }

    /// How many node deletions (of released locks and abandoned contenders
    /// whose first attempt did not get through) are still being retried in
    /// the background on the current session.
    pub async fn pending_cleanups(&self) -> usize {
        self.inner.session.lock().await.pending_cleanups()
    }

    /// The current session, or a new one if it expired or was given up (for `status`).
    pub(crate) async fn current_session(&self) -> Result<Arc<Session>> {
        self.session().await
    }

    /// The current session, or a new one if it expired or was given up.
    pub(crate) async fn session(&self) -> Result<Arc<Session>> {
        let mut current = self.inner.session.lock().await;
        if current.usable() {
            return Ok(Arc::clone(&current));
        }
        let fresh =
            Session::open(&self.inner.config, &self.inner.describe, &self.inner.handle).await?;
        *current = Arc::clone(&fresh);
        Ok(fresh)
    }

    /// The error of a wait whose timeout ends while the ensemble cannot be
    /// reached: `Unavailable`, saying what is down. `None` when the session
    /// is healthy (the lock is simply busy).
    pub(crate) fn unreachable(&self, request: &LockRequest, limit: Duration) -> Option<Error> {
        let why = match self.inner.session.try_lock() {
            // Somebody is opening a new session: the old one was lost.
            Err(_) => format!(
                "no ZooKeeper server of {} granted a new session yet",
                self.inner.describe
            ),
            Ok(session) if !session.usable() || session.unheard() => session.what_is_down(),
            Ok(_) => return None,
        };
        Some(Error::new(
            ErrorKind::Unavailable,
            format!(
                "waited {limit:?} for lock `{}` while the ensemble was unreachable: {why}; check that a majority of the ZooKeeper members run and are reachable",
                request.name
            ),
        ))
    }

    /// The ACL of the nodes this backend creates.
    pub(crate) fn acls(&self) -> zk::Acls<'_> {
        if self.inner.acls.is_empty() {
            zk::Acls::anyone_all()
        } else {
            zk::Acls::new(&self.inner.acls)
        }
    }

    /// How many names this client currently holds or waits for (for leak checks).
    pub fn active_names(&self) -> usize {
        self.inner.table.len()
    }
}

impl fmt::Debug for ZkBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ZkBackend")
            .field("endpoint", &self.inner.describe)
            .field("config", &self.inner.config)
            .field("active_names", &self.active_names())
            .finish()
    }
}

#[async_trait]
impl Backend for ZkBackend {
    fn kind(&self) -> &'static str {
        "zookeeper"
    }

    fn describe(&self) -> String {
        self.inner.describe.clone()
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            scopes: &[Scope::Global],
            fifo: true,
            fencing: true,
            can_lose: true,
        }
    }

    /// Acquires `request.name` with kazoo's recipe (see the crate docs).
    ///
    /// A [`Wait::Timeout`] ends with [`ErrorKind::Unavailable`] (saying what
    /// is down) instead of [`ErrorKind::Timeout`] when the ensemble could not
    /// be reached at its end.
    ///
    /// # Cancel safety
    /// Cancel safe: a dropped future leaves the in-process queue, and a
    /// background task deletes its contender node (found by its unique prefix
    /// if the creation was still under way).
    async fn acquire(&self, request: &LockRequest) -> Result<LockGuard> {
        let dir = self.lock_dir(&request.name)?;
        match request.wait {
            Wait::Timeout(limit) => {
                let start = tokio::time::Instant::now();
                let work = self.acquire_now(request, dir);
                tokio::pin!(work);
                tokio::select! {
                    biased;
                    result = &mut work => return result,
                    () = tokio::time::sleep_until(start + limit.saturating_sub(TIMEOUT_LEAD)) => {}
                }
                if let Some(err) = self.unreachable(request, limit) {
                    return Err(err);
                }
                // A busy lock: wait the whole limit (the caller's own timeout
                // usually ends the wait first, with the same error).
                match tokio::time::timeout_at(start + limit, work).await {
                    Ok(result) => result,
                    Err(_) => Err(request.timed_out(&self.describe(), limit)),
                }
            }
            Wait::Forever | Wait::TryOnce => self.acquire_now(request, dir).await,
        }
    }

    /// Deletes lock directories under `/<namespace>/locks` that have no
    /// children, deepest first. ZooKeeper refuses to delete a node with
    /// children, so a directory a contender entered meanwhile stays and is
    /// counted busy, as are directories with contenders.
    /// The contender nodes of the lock's directory, first in sequence order
    /// first: the holder, then the waiters. Host, pid and label come from the
    /// node data our backend writes; kazoo's (tooz's) nodes leave them unknown
    /// and a note says so. `since` is the node's creation time, the token its
    /// czxid (as the guards'). Reads only, within `connect_timeout`.
    async fn status(&self, name: &LockName, scope: Scope) -> Result<locks_core::LockStatus> {
        crate::status::status(self, name, scope, self.describe()).await
    }

    /// Every lock of the namespace with a contender (a walk of
    /// `/<namespace>/locks`), each as [`status`](Backend::status) tells it;
    /// within `connect_timeout`.
    async fn statuses(&self, scope: Scope) -> Result<Vec<locks_core::LockStatus>> {
        crate::status::all(self, scope, self.describe()).await
    }

    async fn clean(&self) -> Result<CleanReport> {
        let session = self.session().await?;
        crate::clean::clean(&session, &path::locks_root(&self.inner.config.namespace)).await
    }
}

/// All rights for `user` of the digest scheme, as tooz's
/// `make_digest_acl(user, password, all=True)`: the id is
/// `user:base64(sha1("user:password"))`, ZooKeeper's digest.
///
/// Not the `auth` scheme (all identities of the creator's session): over TLS
/// with a client certificate the server adds an `x509` identity, and every
/// session with that certificate would share the nodes without the password.
fn digest_acl(user: &str, password: &str) -> zk::Acl {
    use base64::Engine as _;
    let hash = sha1_smol::Sha1::from(format!("{user}:{password}"))
        .digest()
        .bytes();
    let id = format!(
        "{user}:{}",
        base64::engine::general_purpose::STANDARD.encode(hash)
    );
    zk::Acl::new(zk::Permission::ALL, zk::AuthId::new("digest", &id))
}
