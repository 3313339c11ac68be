//! The connection shared by a backend and its guards: the etcd client, the
//! per-request timeout, error mapping and the shared lease.

use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use etcd_client::{Client, Compare, CompareOp, ConnectOptions, Txn, TxnOp};
use locks_core::{Error, ErrorKind, LockState, LockStateSender, Result};
use tokio::runtime::Handle;
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::config::{EtcdConfig, Layout};
use locks_core::{LocalLocks, LockName};

/// What a backend and all its guards share.
pub(crate) struct Core {
    pub(crate) client: Client,
    /// `host:port,host:port`, for messages.
    pub(crate) endpoints: String,
    pub(crate) layout: Layout,
    pub(crate) prefix: Vec<u8>,
    pub(crate) ttl_secs: i64,
    /// Bounds every unary request.
    pub(crate) timeout: Duration,
    /// The runtime the backend was created on, for work started from `Drop`.
    pub(crate) handle: Handle,
    pub(crate) local: LocalLocks<LockName>,
    lease: Mutex<Option<Arc<Lease>>>,
    granting: tokio::sync::Mutex<()>,
}

/// The lease all locks of one backend share, with the state every guard of
/// the lease watches.
///
/// Dropping the last reference stops its keep-alive task, which then revokes
/// the lease (best effort).
pub(crate) struct Lease {
    pub(crate) id: i64,
    pub(crate) state: LockStateSender,
    /// The earliest moment the server may expire the lease: the send time of
    /// the last keep-alive the server answered, plus the TTL it granted.
    expiry: Arc<Mutex<Instant>>,
    ttl: Duration,
    _stop: oneshot::Sender<()>,
}

impl Lease {
    pub(crate) fn is_lost(&self) -> bool {
        self.state.get() == LockState::Lost
    }

    /// Whether the server provably still has the lease, and so every key on
    /// it: the last answered keep-alive leaves more than a quarter of the TTL
    /// before the server could expire it. Keys on the lease can still go by
    /// a revoke or a delete from outside, which the keep-alive or the guard
    /// notices later; this is the same trust a held lock puts in its lease.
    pub(crate) fn surely_alive(&self) -> bool {
        let expiry = *self.expiry.lock().unwrap_or_else(PoisonError::into_inner);
        !self.is_lost() && Instant::now() + self.ttl / 4 < expiry
    }

    /// Resolves once the lease is known to be lost.
    pub(crate) async fn lost(&self) {
        let mut rx = self.state.subscribe();
        loop {
            if *rx.borrow_and_update() == LockState::Lost {
                return;
            }
            if rx.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("id", &format_args!("{:x}", self.id))
            .field("state", &self.state.get())
            .finish()
    }
}

/// How a delete makes sure it removes only our key.
#[derive(Debug, Clone)]
pub(crate) enum Check {
    /// The key name is ours alone (it carries our lease id).
    KeyIsOurs,
    /// Delete only if the key was created at this revision.
    CreateRevision(i64),
    /// Delete only if the key still holds our value.
    Value(Vec<u8>),
}

/// A key this backend may have written, and how to delete only that.
#[derive(Debug, Clone)]
pub(crate) struct OwnedKey {
    pub(crate) key: Vec<u8>,
    pub(crate) check: Check,
    pub(crate) lease: Arc<Lease>,
}

impl Core {
    pub(crate) async fn connect(config: &EtcdConfig) -> Result<Arc<Core>> {
        config.validate()?;
        let endpoints = config.endpoint_list();
        let handle = Handle::try_current().map_err(|_| {
            Error::new(
                ErrorKind::Internal,
                format!("etcd at {endpoints}: connect must run inside a tokio runtime"),
            )
        })?;
        let mut options = ConnectOptions::new().with_connect_timeout(config.connect_timeout);
        if let (Some(user), password) = (&config.user, &config.password) {
            options = options
                .with_user(user.clone(), password.clone().unwrap_or_default())
                .with_auto_token_refresh(true);
        }
        #[cfg(feature = "tls")]
        if let Some(tls) = &config.tls {
            options = options.with_tls(crate::tls::options(tls, &endpoints)?);
        }
        let urls: Vec<String> = config
            .endpoints
            .iter()
            .map(|e| endpoint_url(e, config.tls.is_some()))
            .collect();
        let client = match tokio::time::timeout(
            config.connect_timeout,
            Client::connect(&urls, Some(options)),
        )
        .await
        {
            Ok(Ok(client)) => client,
            Ok(Err(e)) => return Err(map_error(&endpoints, "connecting", e)),
            Err(_) => return Err(no_answer(&endpoints, "connecting", config.connect_timeout)),
        };
        let core = Arc::new(Core {
            client,
            endpoints,
            layout: config.layout,
            prefix: config.effective_prefix().as_bytes().to_vec(),
            ttl_secs: config.ttl_secs(),
            timeout: config.connect_timeout,
            handle,
            local: LocalLocks::default(),
            lease: Mutex::new(None),
            granting: tokio::sync::Mutex::new(()),
        });
        // Granting the lease now proves the server answers (and accepts our
        // credentials) and takes that round trip off the first acquire.
        core.lease().await?;
        Ok(core)
    }

    /// Runs one request, bounded by the request timeout.
    pub(crate) async fn call<T>(
        &self,
        what: &str,
        request: impl Future<Output = std::result::Result<T, etcd_client::Error>>,
    ) -> Result<T> {
        match tokio::time::timeout(self.timeout, request).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(map_error(&self.endpoints, what, e)),
            Err(_) => Err(no_answer(&self.endpoints, what, self.timeout)),
        }
    }

    /// The current lease, granting a new one if there is none or it was lost.
    pub(crate) async fn lease(&self) -> Result<Arc<Lease>> {
        if let Some(lease) = self.current_lease() {
            return Ok(lease);
        }
        let _granting = self.granting.lock().await;
        if let Some(lease) = self.current_lease() {
            return Ok(lease);
        }
        let sent = Instant::now();
        let mut leases = self.client.lease_client();
        let granted = self
            .call("granting a lease", leases.grant(self.ttl_secs, None))
            .await?;
        if !granted.error().is_empty() || granted.ttl() <= 0 {
            return Err(Error::new(
                ErrorKind::Unavailable,
                format!(
                    "etcd at {}: granting a lease failed: {} (ttl {})",
                    self.endpoints,
                    granted.error(),
                    granted.ttl()
                ),
            ));
        }
        let (stop, stopped) = oneshot::channel();
        let ttl = Duration::from_secs(u64::try_from(granted.ttl()).unwrap_or(1));
        let expiry = Arc::new(Mutex::new(sent + ttl));
        let lease = Arc::new(Lease {
            id: granted.id(),
            state: LockStateSender::new(),
            expiry: Arc::clone(&expiry),
            ttl,
            _stop: stop,
        });
        self.handle.spawn(keep_alive(KeepAlive {
            client: self.client.clone(),
            id: lease.id,
            ttl,
            deadline: sent + ttl,
            expiry,
            state: lease.state.clone(),
            stopped,
            timeout: self.timeout,
        }));
        *self.lease.lock().unwrap_or_else(PoisonError::into_inner) = Some(Arc::clone(&lease));
        Ok(lease)
    }

    fn current_lease(&self) -> Option<Arc<Lease>> {
        self.lease
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .filter(|lease| !lease.is_lost())
            .cloned()
    }

    /// Deletes `owned.key` if it is still ours. `Ok(false)`: it was not there
    /// (or no longer ours).
    pub(crate) async fn delete_owned(&self, owned: &OwnedKey) -> Result<bool> {
        let mut kv = self.client.kv_client();
        match &owned.check {
            Check::KeyIsOurs => {
                let deleted = self
                    .call("deleting a lock key", kv.delete(owned.key.clone(), None))
                    .await?;
                Ok(deleted.deleted() > 0)
            }
            Check::CreateRevision(rev) => {
                let txn = Txn::new()
                    .when([Compare::create_revision(
                        owned.key.clone(),
                        CompareOp::Equal,
                        *rev,
                    )])
                    .and_then([TxnOp::delete(owned.key.clone(), None)]);
                Ok(self
                    .call("deleting a lock key", kv.txn(txn))
                    .await?
                    .succeeded())
            }
            Check::Value(value) => {
                let txn = Txn::new()
                    .when([Compare::value(
                        owned.key.clone(),
                        CompareOp::Equal,
                        value.clone(),
                    )])
                    .and_then([TxnOp::delete(owned.key.clone(), None)]);
                Ok(self
                    .call("deleting a lock key", kv.txn(txn))
                    .await?
                    .succeeded())
            }
        }
    }

    /// Deletes `owned` in the background, retrying while the server is
    /// unreachable and the lease (which would take the key with it) lives.
    /// `keep` (the local turn on the name) is dropped only afterwards, so no
    /// later acquire in this process races with the delete.
    pub(crate) fn delete_in_background<K: Send + 'static>(
        self: &Arc<Self>,
        owned: OwnedKey,
        keep: K,
    ) {
        let core = Arc::clone(self);
        // If the runtime is gone the future is dropped unrun; the lease (no
        // longer kept alive) then takes the key away within its TTL.
        self.handle.spawn(async move {
            core.delete_with_retries(&owned).await;
            drop(keep);
        });
    }

    /// Deletes `owned` until that works or its lease is lost. An unreachable
    /// server is retried for as long as the lease lives (the key must not
    /// outlive a release while the keep-alive holds the lease); other errors
    /// (say permission denied) are retried a few times, then left to the
    /// lease.
    pub(crate) async fn delete_with_retries(&self, owned: &OwnedKey) {
        const OTHER_ERRORS: u32 = 30;
        let mut other_errors = 0;
        for attempt in 0u32.. {
            // A lost lease takes its keys with it: nothing left to delete.
            if owned.lease.is_lost() {
                return;
            }
            match self.delete_owned(owned).await {
                Ok(_) => return,
                Err(e) if e.kind() == ErrorKind::Unavailable => {}
                Err(_) => {
                    other_errors += 1;
                    if other_errors >= OTHER_ERRORS {
                        return;
                    }
                }
            }
            let pause = Duration::from_millis(100 * u64::from(attempt.min(10) + 1));
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                () = owned.lease.lost() => return,
            }
        }
    }
}

impl std::fmt::Debug for Core {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Core")
            .field("endpoints", &self.endpoints)
            .field("layout", &self.layout)
            .field("lease", &self.current_lease())
            .finish()
    }
}

/// The URL etcd-client needs: it adds `http://` itself to bare `host:port`
/// only without TLS options.
fn endpoint_url(endpoint: &str, tls: bool) -> String {
    if endpoint.contains("://") {
        endpoint.to_owned()
    } else if tls {
        format!("https://{endpoint}")
    } else {
        format!("http://{endpoint}")
    }
}

/// Whether `e` says the lease we used no longer exists.
pub(crate) fn is_lease_not_found(e: &Error) -> bool {
    e.kind() == ErrorKind::Unavailable && e.message().contains("lease not found")
}

fn no_answer(endpoints: &str, what: &str, limit: Duration) -> Error {
    Error::new(
        ErrorKind::Unavailable,
        format!(
            "etcd at {endpoints}: no answer to {what} within {limit:?}; check that etcd runs and is reachable there"
        ),
    )
}

/// Maps an etcd-client error to the workspace error, naming the endpoints.
pub(crate) fn map_error(endpoints: &str, what: &str, e: etcd_client::Error) -> Error {
    use etcd_client::Error as E;
    use tonic_code::classify;
    let (kind, detail) = match &e {
        E::GRpcStatus(status) => (
            classify(status.code() as i32, status.message()),
            format!("{} ({:?})", status.message(), status.code()),
        ),
        E::InvalidArgs(_) | E::InvalidUri(_) => (ErrorKind::InvalidConfig, e.to_string()),
        _ => (ErrorKind::Unavailable, e.to_string()),
    };
    let hint = match kind {
        ErrorKind::PermissionDenied => {
            "; check the user and password (etcd://user:password@host:port) and the user's roles"
        }
        ErrorKind::Unavailable => "; check that etcd runs and is reachable there",
        _ => "",
    };
    Error::new(
        kind,
        format!("etcd at {endpoints}: {what} failed: {detail}{hint}"),
    )
    .with_source(e)
}

mod tonic_code {
    use locks_core::ErrorKind;

    /// gRPC status codes, as numbers (tonic is not a direct dependency).
    pub(super) fn classify(code: i32, message: &str) -> ErrorKind {
        const INVALID_ARGUMENT: i32 = 3;
        const PERMISSION_DENIED: i32 = 7;
        const FAILED_PRECONDITION: i32 = 9;
        const UNAUTHENTICATED: i32 = 16;
        let auth_message = [
            "authentication failed",
            "user name is empty",
            "invalid auth token",
            "permission denied",
            "authentication is not enabled",
            "user name not found",
        ]
        .iter()
        .any(|m| message.contains(m));
        match code {
            PERMISSION_DENIED | UNAUTHENTICATED => ErrorKind::PermissionDenied,
            INVALID_ARGUMENT | FAILED_PRECONDITION if auth_message => ErrorKind::PermissionDenied,
            _ => ErrorKind::Unavailable,
        }
    }
}

struct KeepAlive {
    client: Client,
    id: i64,
    ttl: Duration,
    /// When the server may expire the lease if no ping gets through.
    deadline: Instant,
    /// The same moment, shared with the [`Lease`].
    expiry: Arc<Mutex<Instant>>,
    state: LockStateSender,
    stopped: oneshot::Receiver<()>,
    timeout: Duration,
}

enum Ping {
    Alive(Duration),
    Gone,
    Failed,
}

/// Keeps one lease alive: a ping every ttl/3. The lease counts as lost when
/// the server says so (ttl <= 0 or "lease not found") or when no ping got
/// through for a whole TTL (measured from the send time of the last ping
/// that did, so the client gives up no later than the server can expire it).
/// A failed ping in between marks the guards [`LockState::AtRisk`].
async fn keep_alive(mut task: KeepAlive) {
    let interval = task.ttl / 3;
    let (id, ttl) = (task.id, task.ttl);
    let mut leases = task.client.lease_client();
    let mut stream = None;
    loop {
        tokio::select! {
            _ = &mut task.stopped => break,
            () = tokio::time::sleep_until(task.deadline) => {
                task.state.set(LockState::Lost);
                return;
            }
            () = tokio::time::sleep(interval) => {}
        }
        let sent = Instant::now();
        let ping = async {
            if stream.is_none() {
                match leases.keep_alive(id).await {
                    // Opening the stream sends the first ping and reads its answer.
                    Ok((keeper, replies)) => {
                        stream = Some((keeper, replies));
                        return Ping::Alive(ttl);
                    }
                    Err(etcd_client::Error::LeaseKeepAliveError(m)) if m.contains("not found") => {
                        return Ping::Gone;
                    }
                    Err(etcd_client::Error::GRpcStatus(s))
                        if s.message().contains("lease not found") =>
                    {
                        return Ping::Gone;
                    }
                    Err(_) => return Ping::Failed,
                }
            }
            let Some((keeper, replies)) = stream.as_mut() else {
                return Ping::Failed;
            };
            if keeper.keep_alive().await.is_err() {
                return Ping::Failed;
            }
            match replies.message().await {
                Ok(Some(reply)) if reply.ttl() > 0 => {
                    Ping::Alive(Duration::from_secs(u64::try_from(reply.ttl()).unwrap_or(1)))
                }
                Ok(Some(_)) => Ping::Gone,
                Ok(None) | Err(_) => Ping::Failed,
            }
        };
        let outcome = tokio::select! {
            _ = &mut task.stopped => break,
            () = tokio::time::sleep_until(task.deadline) => {
                task.state.set(LockState::Lost);
                return;
            }
            outcome = tokio::time::timeout(interval.max(Duration::from_millis(200)), ping) => outcome,
        };
        match outcome {
            Ok(Ping::Alive(ttl)) => {
                task.deadline = sent + ttl.min(task.ttl);
                *task.expiry.lock().unwrap_or_else(PoisonError::into_inner) = task.deadline;
                task.state.set(LockState::Held);
            }
            Ok(Ping::Gone) => {
                task.state.set(LockState::Lost);
                return;
            }
            Ok(Ping::Failed) | Err(_) => {
                stream = None;
                task.state.set(LockState::AtRisk);
            }
        }
    }
    // Every guard of the lease is gone and so is the backend: let go of the
    // lease now rather than after its TTL.
    drop(stream);
    let _ = tokio::time::timeout(task.timeout, leases.revoke(task.id)).await;
}
