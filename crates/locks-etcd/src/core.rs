//! The connection shared by a backend and its guards: the etcd client, the
//! per-request timeout, error mapping and the shared lease.

use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, LeaseKeepAliveStream, LeaseKeeper, Txn, TxnOp,
};
use locks_core::{Error, ErrorKind, LockState, LockStateSender, Result};
use tokio::runtime::Handle;
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::config::{EtcdConfig, Layout};
use crate::members::{Failure, Members, describe};
use locks_core::{LocalLocks, LockName};

/// What a backend and all its guards share.
pub(crate) struct Core {
    /// The cluster's members, with failover between them.
    pub(crate) members: Arc<Members>,
    /// `host:port,host:port`, for messages.
    pub(crate) endpoints: String,
    pub(crate) layout: Layout,
    pub(crate) prefix: Vec<u8>,
    pub(crate) ttl_secs: i64,
    /// Bounds every request, failover to other members included: the
    /// configured `connect_timeout`, but never longer than the TTL (a
    /// request that outlasts the lease it works for is pointless, and a
    /// release stuck that long would hold up the next holder).
    pub(crate) timeout: Duration,
    /// The runtime the backend was created on, for work started from `Drop`.
    pub(crate) handle: Handle,
    pub(crate) local: LocalLocks<LockName>,
    /// TLS without a client certificate: a server that wants one closes the
    /// connection after the handshake, which reads like a broken connection.
    tls_without_client_certificate: bool,
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
        let ttl = Duration::from_secs(u64::try_from(config.ttl_secs()).unwrap_or(u64::MAX));
        let timeout = config.connect_timeout.min(ttl);
        // require_leader: a member without a leader answers at once instead of
        // holding the request (see members.rs).
        let mut options = ConnectOptions::new()
            .with_connect_timeout(timeout)
            .with_require_leader(true);
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
        let members = Arc::new(Members::new(&config.endpoints, urls, options, timeout));
        let core = Arc::new(Core {
            members,
            endpoints,
            layout: config.layout,
            prefix: config.effective_prefix().as_bytes().to_vec(),
            ttl_secs: config.ttl_secs(),
            timeout,
            handle,
            local: LocalLocks::default(),
            tls_without_client_certificate: config
                .tls
                .as_ref()
                .is_some_and(|tls| tls.cert.is_none()),
            lease: Mutex::new(None),
            granting: tokio::sync::Mutex::new(()),
        });
        // Granting the lease now proves the server answers (and accepts our
        // credentials) and takes that round trip off the first acquire.
        core.lease().await?;
        Ok(core)
    }

    /// Runs one request (`op` on a member's client), failing over to the
    /// other members within the request timeout.
    ///
    /// # Errors
    /// The server's answer as [`map_error`] maps it, or
    /// [`ErrorKind::Unavailable`] naming what each member did when none
    /// served the request in time.
    pub(crate) async fn call<T, F, Fut>(&self, what: &str, op: F) -> Result<T>
    where
        F: FnMut(Client) -> Fut,
        Fut: Future<Output = std::result::Result<T, etcd_client::Error>>,
    {
        let deadline = Instant::now() + self.timeout;
        self.members
            .call(deadline, op)
            .await
            .map_err(|failure| self.failure(what, failure))
    }

    /// The error for a request that failed on every member.
    fn failure(&self, what: &str, failure: Failure) -> Error {
        match failure {
            Failure::Answer(e) => map_error(&self.endpoints, what, e),
            Failure::Unreachable(report) => {
                let mut error = unreachable(
                    &self.endpoints,
                    self.members.len(),
                    what,
                    self.timeout,
                    &report,
                );
                // Without a client certificate, a server that wants one
                // either ends the TLS 1.3 handshake with an alert or breaks
                // the connection right after it (which one varies by timing).
                if self.tls_without_client_certificate
                    && [
                        "broken pipe",
                        "reset",
                        "closed",
                        "BadCertificate",
                        "CertificateRequired",
                    ]
                    .iter()
                    .any(|word| report.contains(word))
                {
                    error = Error::new(
                        error.kind(),
                        format!(
                            "{}; the server ended the connections at or right after the TLS \
                             handshake: if etcd wants client certificates (--client-cert-auth), \
                             give `cert` and `key`",
                            error.message()
                        ),
                    );
                }
                error
            }
            Failure::Certificate(report) => Error::new(
                ErrorKind::InvalidConfig,
                format!(
                    "etcd at {}: {what} failed: TLS refused ({report}); check the URL's `ca` (the CA \
                     that signed etcd's certificate, else the system's roots), its host names and \
                     the certificate's dates",
                    self.endpoints
                ),
            ),
        }
    }

    /// What is down, when the last request on every member failed: the
    /// members and what each did; `None` while some member serves.
    pub(crate) fn outage(&self) -> Option<String> {
        self.members.outage()
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
        let ttl_secs = self.ttl_secs;
        let granted = self
            .call("granting a lease", |client| async move {
                client.lease_client().grant(ttl_secs, None).await
            })
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
            members: Arc::clone(&self.members),
            id: lease.id,
            ttl,
            deadline: sent + ttl,
            expiry,
            state: lease.state.clone(),
            stopped,
            timeout: self.timeout,
        }));
        *self.lease.lock().unwrap_or_else(PoisonError::into_inner) = Some(Arc::clone(&lease));
        // Who this client is, for `status` (one key on the lease; best effort).
        crate::status::announce(self, lease.id).await;
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
    ///
    /// A delete sent again to another member after an attempt that failed
    /// may find the key gone because that attempt was applied (its answer
    /// lost with the member): while our lease lives (so the server cannot
    /// have expired the key), that counts as deleted.
    pub(crate) async fn delete_owned(&self, owned: &OwnedKey) -> Result<bool> {
        let mut attempts = 0u32;
        let key = &owned.key;
        let deleted = match &owned.check {
            Check::KeyIsOurs => {
                let deleted = self
                    .call("deleting a lock key", |client| {
                        attempts += 1;
                        async move { client.kv_client().delete(key.clone(), None).await }
                    })
                    .await?;
                deleted.deleted() > 0
            }
            Check::CreateRevision(rev) => {
                let txn = Txn::new()
                    .when([Compare::create_revision(
                        key.clone(),
                        CompareOp::Equal,
                        *rev,
                    )])
                    .and_then([TxnOp::delete(key.clone(), None)]);
                self.counted_txn("deleting a lock key", &txn, &mut attempts)
                    .await?
                    .succeeded()
            }
            Check::Value(value) => {
                let txn = Txn::new()
                    .when([Compare::value(key.clone(), CompareOp::Equal, value.clone())])
                    .and_then([TxnOp::delete(key.clone(), None)]);
                self.counted_txn("deleting a lock key", &txn, &mut attempts)
                    .await?
                    .succeeded()
            }
        };
        Ok(deleted || (attempts > 1 && !owned.lease.is_lost()))
    }

    /// [`txn`](Self::txn), counting the attempts in `attempts` (more than one:
    /// an earlier attempt failed, maybe after it was applied).
    pub(crate) async fn counted_txn(
        &self,
        what: &str,
        txn: &Txn,
        attempts: &mut u32,
    ) -> Result<etcd_client::TxnResponse> {
        self.call(what, |client| {
            *attempts += 1;
            let txn = txn.clone();
            async move { client.kv_client().txn(txn).await }
        })
        .await
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

impl Core {
    /// Runs `txn` through [`call`](Self::call).
    pub(crate) async fn txn(&self, what: &str, txn: &Txn) -> Result<etcd_client::TxnResponse> {
        self.call(what, |client| {
            let txn = txn.clone();
            async move { client.kv_client().txn(txn).await }
        })
        .await
    }
}

impl Drop for Core {
    /// Closing the backend (its last clone and every guard gone) revokes the
    /// lease at once, so that no key of ours (a contender whose background
    /// delete was cut off, say) outlives the client by its TTL. The keep-alive
    /// task would revoke it too, but only if its runtime runs on; a process
    /// that exits right after dropping the backend shuts the runtime down
    /// first. So this revokes on a thread of its own, with a client and a
    /// runtime of its own, and waits for it: bounded by the request timeout
    /// (1 s at most), on a healthy cluster one round trip.
    fn drop(&mut self) {
        let lease = self
            .lease
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let Some(lease) = lease.filter(|lease| !lease.is_lost()) else {
            return;
        };
        self.members
            .revoke_blocking(lease.id, self.timeout.min(Duration::from_secs(1)));
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

/// The error for a request that no member served within `limit`; `report`
/// says what each member did.
fn unreachable(
    endpoints: &str,
    members: usize,
    what: &str,
    limit: Duration,
    report: &str,
) -> Error {
    let hint = if members > 1 {
        "check that a majority of the members run and reach each other"
    } else {
        "check that etcd runs and is reachable there"
    };
    Error::new(
        ErrorKind::Unavailable,
        format!(
            "etcd at {endpoints}: {what} failed: no member served it within {limit:?} ({report}); {hint}"
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
    members: Arc<Members>,
    id: i64,
    ttl: Duration,
    /// The earliest moment the server may expire the lease: the send time of
    /// the last keep-alive it answered, plus the TTL.
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
    Failed(String),
}

/// How long before the server can first expire a lease its guards are told
/// [`LockState::Lost`]: min(TTL/5, 1 s), plus 100 ms for a timer that fires
/// late on a busy machine. A holder must stop before anybody else can get
/// its lock, and needs time to notice (a descheduled thread, a callback that
/// runs late); min(TTL/5, 1 s) is what issue 15 asked for.
pub(crate) fn safety_margin(ttl: Duration) -> Duration {
    (ttl / 5).min(Duration::from_secs(1)) + Duration::from_millis(100)
}

/// The time between keep-alives while they succeed: TTL/8 (at least 100 ms).
/// An outage of up to TTL/2 must not lose the lease: it may start just
/// before a ping was due, so ping interval + TTL/2 + the reconnect must stay
/// below TTL minus [`safety_margin`]; at TTL/8 that leaves about TTL/8 for
/// the reconnect (375 ms at a 3 s TTL). Etcd's Go client pings every TTL/3,
/// which with the margin would tolerate outages of only TTL/3.
pub(crate) fn ping_interval(ttl: Duration) -> Duration {
    (ttl / 8).max(Duration::from_millis(100))
}

/// Pause before the next keep-alive after a failed one (on the next member).
const PING_RETRY: Duration = Duration::from_millis(50);

/// Keeps one lease alive: a ping every [`ping_interval`] on the current member, and after
/// a failure one every 50 ms, moving on to the next member each time (the
/// keep-alive fails over as requests do). A failed ping marks the guards
/// [`LockState::AtRisk`], the next successful one [`LockState::Held`] again.
/// The lease counts as lost when the server says so (ttl <= 0 or "lease not
/// found") or [`safety_margin`] before the server can first expire it (the
/// send time of the last answered ping plus the TTL), so a holder cut off
/// from the cluster is told before anybody else can get its lock. A lease we
/// gave up on is then revoked as soon as a member takes the request, so that
/// its keys do not make others wait for the server to expire it.
async fn keep_alive(mut task: KeepAlive) {
    let interval = ping_interval(task.ttl);
    let margin = safety_margin(task.ttl);
    // One ping may take this long on one member before the next is tried.
    let attempt = (task.ttl / 6).clamp(Duration::from_millis(200), Duration::from_secs(1));
    let (id, ttl) = (task.id, task.ttl);
    let mut stream: Option<(usize, LeaseKeeper, LeaseKeepAliveStream)> = None;
    let mut next = Instant::now() + interval;
    loop {
        let lost_at = task.deadline.checked_sub(margin).unwrap_or(task.deadline);
        tokio::select! {
            _ = &mut task.stopped => break,
            () = tokio::time::sleep_until(lost_at) => {
                task.state.set(LockState::Lost);
                revoke_lost(&task.members, id, ttl).await;
                return;
            }
            () = tokio::time::sleep_until(next) => {}
        }
        let sent = Instant::now();
        let member = task.members.current();
        if stream.as_ref().is_some_and(|(on, _, _)| *on != member) {
            // The requests moved on to another member: follow them.
            stream = None;
        }
        let members = &task.members;
        let ping = async {
            if stream.is_none() {
                let opened = match members.client(member).await {
                    Ok(client) => client.lease_client().keep_alive(id).await,
                    Err(e) => Err(e),
                };
                match opened {
                    // Opening the stream sends the first ping and reads its answer.
                    Ok((keeper, replies)) => {
                        stream = Some((member, keeper, replies));
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
                    Err(e) => return Ping::Failed(describe(&e)),
                }
            }
            let Some((_, keeper, replies)) = stream.as_mut() else {
                return Ping::Failed("no keep-alive stream".to_owned());
            };
            if let Err(e) = keeper.keep_alive().await {
                return Ping::Failed(describe(&e));
            }
            match replies.message().await {
                Ok(Some(reply)) if reply.ttl() > 0 => {
                    Ping::Alive(Duration::from_secs(u64::try_from(reply.ttl()).unwrap_or(1)))
                }
                Ok(Some(_)) => Ping::Gone,
                Ok(None) => Ping::Failed("the keep-alive stream ended".to_owned()),
                Err(e) => Ping::Failed(describe(&e)),
            }
        };
        let outcome = tokio::select! {
            _ = &mut task.stopped => break,
            () = tokio::time::sleep_until(lost_at) => {
                task.state.set(LockState::Lost);
                revoke_lost(&task.members, id, ttl).await;
                return;
            }
            outcome = tokio::time::timeout(attempt, ping) => outcome,
        };
        let failed = match outcome {
            Ok(Ping::Alive(granted)) => {
                task.deadline = sent + granted.min(task.ttl);
                *task.expiry.lock().unwrap_or_else(PoisonError::into_inner) = task.deadline;
                task.members.succeeded(member);
                task.state.set(LockState::Held);
                next = sent + interval;
                continue;
            }
            Ok(Ping::Gone) => {
                task.state.set(LockState::Lost);
                return;
            }
            Ok(Ping::Failed(why)) => format!("keep-alive failed: {why}"),
            Err(_) => format!("no answer to a keep-alive within {attempt:?}"),
        };
        stream = None;
        task.members.failed(member, failed);
        task.state.set(LockState::AtRisk);
        next = Instant::now() + PING_RETRY;
    }
    // Every guard of the lease is gone and so is the backend: let go of the
    // lease now rather than after its TTL.
    drop(stream);
    let deadline = Instant::now() + task.timeout;
    let _ = task
        .members
        .call(deadline, |client| async move {
            client.lease_client().revoke(id).await
        })
        .await;
}

/// Revokes a lease whose guards were told it is lost, as soon as a member
/// takes the request (for up to three TTLs; after that the server has
/// expired it anyway).
async fn revoke_lost(members: &Members, id: i64, ttl: Duration) {
    let give_up = Instant::now() + ttl * 3;
    while Instant::now() < give_up {
        let deadline = (Instant::now() + ttl).min(give_up);
        match members
            .call(deadline, |client| async move {
                client.lease_client().revoke(id).await
            })
            .await
        {
            Ok(_) | Err(Failure::Answer(_) | Failure::Certificate(_)) => return,
            Err(Failure::Unreachable(_)) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// For every TTL the backend accepts: holders are told `Lost` at least
    /// min(TTL/5, 1 s) before the server can expire the lease, and an outage
    /// of half the TTL that starts just before a keep-alive was due still
    /// leaves time for the reconnect and a few retries before that.
    #[test]
    fn margin_and_ping_interval_leave_room_for_half_ttl_outages() {
        for secs in 2..=120 {
            let ttl = Duration::from_secs(secs);
            let margin = safety_margin(ttl);
            let required = (ttl / 5).min(Duration::from_secs(1));
            assert!(margin >= required, "ttl {ttl:?}: margin {margin:?}");
            let room = ttl
                .checked_sub(margin + ping_interval(ttl) + ttl / 2)
                .unwrap_or_default();
            assert!(
                room >= Duration::from_millis(240),
                "ttl {ttl:?}: only {room:?} to reconnect after an outage of half the TTL"
            );
        }
    }
}
