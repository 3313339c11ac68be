//! [`Session`]: one ZooKeeper session, its health (Held, AtRisk, Lost) and
//! the deletions it still owes.
//!
//! # What the client crate's errors mean (zookeeper-client 0.11.2)
//!
//! The client fails every request in flight when its connection breaks, with
//! the error that broke it: [`zk::Error::ConnectionLoss`] only for a clean
//! EOF, otherwise a [`zk::Error::Custom`] carrying the I/O error (`Connection
//! reset by peer`) or `no response from connection in …ms` (silence for 2/5
//! of the session timeout), and `UnexpectedError` / `UnmarshalError` for a
//! garbled stream. Such a request may or may not have been applied by the
//! server. Requests made while disconnected wait in the client and leave
//! after it reconnected; a final session state fails them with
//! `SessionExpired`, `ClientClosed` or `AuthFailed`.
//!
//! We work around this in the backend instead of patching the crate: the
//! crate reports every failure faithfully (the operation's outcome *is*
//! unknown), only with more kinds than `ConnectionLoss`, so
//! [`outcome_unknown`] classifies them all as "unknown" and every caller
//! retries idempotently: reads and deletes as they are, creates by looking for
//! the node under its unique prefix first. A patch would have to be carried
//! for every release of the crate for no change in what we must do.
//!
//! # Lost before the server can expire the session
//!
//! The server expires a session `T` (the negotiated session timeout) after
//! it last heard from the client, never earlier. The monitor sends a cheap
//! request every `T / 20` and keeps the send instant of the last one answered:
//! the server heard from us at or after that instant. The session is given
//! up and its guards told [`LockState::Lost`] at that instant plus `T` minus
//! `min(T / 5, 1 s)` and `min(T / 30, 100 ms)` of slack for late timers: before the server can
//! expire it, and no earlier than needed, so a connection that is back
//! within about `T / 2` (the client reconnects with a doubling backoff) keeps
//! every holder holding and every waiter in its place.

use std::collections::HashSet;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use locks_core::{Error, ErrorKind, LockRequest, LockState, LockStateSender, Result};
use tokio::runtime::Handle;
use tokio::sync::watch;
use tokio::task::AbortHandle;
use tokio::time::Instant;
use zookeeper_client as zk;

use crate::ZkConfig;

pub(crate) type ZkResult<T> = std::result::Result<T, zk::Error>;

/// First pause before retrying a request whose outcome is unknown; doubles
/// up to [`MAX_RETRY_PAUSE`]. Requests made while disconnected wait in the
/// client until it reconnected, so this only keeps a flapping connection
/// from turning retries into a busy loop.
const RETRY_PAUSE: Duration = Duration::from_millis(20);
const MAX_RETRY_PAUSE: Duration = Duration::from_millis(500);

/// How long a member check waits for a TCP connection.
const MEMBER_CHECK_TIMEOUT: Duration = Duration::from_millis(300);

/// Whether `e` leaves the outcome of the request unknown: the connection
/// broke while it was in flight (see the module docs). The request may have
/// been applied; retry it idempotently while the session lives.
pub(crate) fn outcome_unknown(e: &zk::Error) -> bool {
    matches!(
        e,
        zk::Error::ConnectionLoss
            | zk::Error::Custom(_)
            | zk::Error::Timeout
            | zk::Error::UnexpectedError(_)
            | zk::Error::UnmarshalError { .. }
    )
}

/// The timings of a session, derived from its negotiated timeout.
#[derive(Debug, Clone, Copy)]
struct Timing {
    /// The negotiated session timeout.
    timeout: Duration,
    /// How often the monitor checks that the server hears us.
    probe_every: Duration,
    /// The session is given up this long after the server last heard from us.
    give_up_after: Duration,
    /// Guards are AtRisk after this long without hearing the server.
    at_risk_after: Duration,
}

impl Timing {
    fn new(timeout: Duration) -> Timing {
        let margin = (timeout / 5).min(Duration::from_secs(1));
        // Timers fire late on a loaded machine; keep the margin nonetheless.
        let slack = (timeout / 30).min(Duration::from_millis(100));
        let probe_every = (timeout / 20).max(Duration::from_millis(10));
        Timing {
            timeout,
            probe_every,
            give_up_after: timeout.saturating_sub(margin + slack),
            at_risk_after: timeout * 2 / 5,
        }
    }
}

/// One ZooKeeper session and the state channel of every guard it holds.
pub(crate) struct Session {
    /// `None` once given up: dropping the last client closes the session, so
    /// the server deletes its nodes as soon as it hears from it again.
    client: Mutex<Option<zk::Client>>,
    /// For messages and `Debug`.
    pub(crate) id: zk::SessionId,
    /// Fed by the monitor task: Held, AtRisk while the server is not heard,
    /// Lost when the session expired, closed, or could expire soon.
    pub(crate) state: LockStateSender,
    /// `zookeeper://…`, for messages.
    pub(crate) endpoint: String,
    /// The configured servers, for saying which are down.
    hosts: Vec<String>,
    /// For closing the session from `Drop`.
    close_with: CloseWith,
    timing: Timing,
    /// Since when the server has not been heard, and what the members
    /// answered to a TCP connection meanwhile.
    health: Mutex<Health>,
    /// Nodes whose deletion is still under way in the background.
    cleanup: Mutex<HashSet<String>>,
    handle: Handle,
    monitor: AbortHandle,
}

#[derive(Debug, Default)]
struct Health {
    unheard_since: Option<Instant>,
    members: Option<String>,
}

impl Session {
    pub(crate) async fn open(
        config: &ZkConfig,
        endpoint: &str,
        handle: &Handle,
    ) -> Result<Arc<Session>> {
        let mut connector = zk::Client::connector().with_session_timeout(config.session_timeout);
        if let Some((user, password)) = &config.credentials {
            connector = connector.with_auth("digest", format!("{user}:{password}").as_bytes());
        }
        let tls = client_tls(config, endpoint)?;
        connector = with_tls(connector, &tls);
        let connect_string = config.connect_string();
        // The server heard us no earlier than this.
        let started = Instant::now();
        let client = match tokio::time::timeout(
            config.connect_timeout,
            connector.connect(&connect_string),
        )
        .await
        {
            Ok(Ok(client)) => client,
            Ok(Err(e @ (zk::Error::AuthFailed | zk::Error::NoAuth))) => {
                return Err(Error::new(
                    ErrorKind::PermissionDenied,
                    format!("the ZooKeeper server at {endpoint} refused the credentials: check user:password@ in the URL"),
                )
                .with_source(e));
            }
            Ok(Err(e)) => {
                return Err(Error::new(
                    ErrorKind::Unavailable,
                    format!(
                        "cannot open a ZooKeeper session at {endpoint} ({e}): check that a server runs and listens there"
                    ),
                )
                .with_source(e));
            }
            Err(_) => {
                if let Some(problem) = refused_certificate(config).await {
                    return Err(Error::new(
                        ErrorKind::InvalidConfig,
                        format!("ZooKeeper at {endpoint}: TLS refused: {problem}"),
                    ));
                }
                let members = check_members(&config.hosts).await;
                return Err(Error::new(
                    ErrorKind::Unavailable,
                    format!(
                        "no ZooKeeper server at {endpoint} granted a session within {:?} (connect_timeout): {members}; check that a majority of the ensemble runs and that nothing blocks the ports",
                        config.connect_timeout
                    ),
                ));
            }
        };
        let state = LockStateSender::new();
        let timing = Timing::new(client.session_timeout());
        Ok(Arc::new_cyclic(|session| {
            let monitor = handle
                .spawn(monitor(
                    client.clone(),
                    state.clone(),
                    timing,
                    started,
                    Weak::clone(session),
                ))
                .abort_handle();
            Session {
                id: client.session_id(),
                client: Mutex::new(Some(client)),
                state,
                endpoint: endpoint.to_owned(),
                hosts: config.hosts.clone(),
                close_with: CloseWith {
                    tls,
                    connect_string: config.connect_string(),
                    session_timeout: config.session_timeout,
                    limit: config.connect_timeout.min(CLOSE_LIMIT),
                },
                timing,
                health: Mutex::new(Health::default()),
                cleanup: Mutex::new(HashSet::new()),
                handle: handle.clone(),
                monitor,
            }
        }))
    }

    /// Whether new locks may be taken on this session.
    pub(crate) fn usable(&self) -> bool {
        self.state.get() != LockState::Lost
            && self
                .client
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .as_ref()
                .is_some_and(|c| !c.state().is_terminated())
    }

    /// A handle on the session for requests, unless it was given up.
    pub(crate) fn client(&self) -> Result<zk::Client> {
        self.client
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::Unavailable,
                    format!(
                        "the ZooKeeper session {} at {} was given up before it could expire: retry, which opens a new session",
                        self.id, self.endpoint
                    ),
                )
            })
    }

    /// Gives the session up: once the clients still in use are dropped, the
    /// session closes and the server deletes its nodes.
    fn close(&self) {
        let client = self
            .client
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        drop(client);
    }

    /// Runs `op` again while its outcome is unknown (see [`outcome_unknown`])
    /// and the session lives; ends with `ClientClosed` when the session is lost.
    pub(crate) async fn retrying<T, F, Fut>(&self, op: F) -> ZkResult<T>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = ZkResult<T>>,
    {
        let mut pause = RETRY_PAUSE;
        let mut lost = self.state.subscribe();
        loop {
            let result = tokio::select! {
                result = op() => result,
                () = until_lost(&mut lost) => return Err(zk::Error::ClientClosed),
            };
            match result {
                Err(e) if outcome_unknown(&e) && self.usable() => {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(MAX_RETRY_PAUSE);
                }
                result => return result,
            }
        }
    }

    pub(crate) async fn list(&self, client: &zk::Client, dir: &str) -> ZkResult<Vec<String>> {
        self.retrying(|| client.list_children(dir)).await
    }

    /// Deletes `path` in the background, retrying while its outcome is
    /// unknown and the session lives; until then it counts as pending
    /// ([`pending_cleanups`](Session::pending_cleanups)). When the session
    /// ends first, the server deletes the node with it.
    pub(crate) fn delete_later(self: &Arc<Self>, path: String) {
        self.delete_later_then(path, ());
    }

    /// [`delete_later`](Session::delete_later), dropping `after` once done
    /// (an in-process turn that must outlast the node).
    pub(crate) fn delete_later_then<A: Send + 'static>(self: &Arc<Self>, path: String, after: A) {
        self.cleanup
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(path.clone());
        let session = Arc::clone(self);
        self.handle.spawn(async move {
            if let Ok(client) = session.client() {
                let _ = session.retrying(|| client.delete(&path, None)).await;
            }
            session
                .cleanup
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&path);
            drop(after);
        });
    }

    /// How many deletions are still under way in the background.
    pub(crate) fn pending_cleanups(&self) -> usize {
        self.cleanup
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Whether the server has not been heard lately (guards AtRisk).
    pub(crate) fn unheard(&self) -> bool {
        self.health
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .unheard_since
            .is_some()
    }

    /// What is down, for messages: how long the server has not been heard,
    /// and what each member answered to a TCP connection.
    pub(crate) fn what_is_down(&self) -> String {
        let health = self.health.lock().unwrap_or_else(PoisonError::into_inner);
        let since = match health.unheard_since {
            Some(at) => format!(
                "no ZooKeeper server of {} has answered session {} for {:.1?}",
                self.endpoint,
                self.id,
                at.elapsed()
            ),
            None => format!(
                "the ZooKeeper session {} at {} ended",
                self.id, self.endpoint
            ),
        };
        match &health.members {
            Some(members) => format!("{since} ({members})"),
            None => since,
        }
    }

    /// Turns a client error into ours, naming what was done, the endpoint and what to do.
    pub(crate) fn error(&self, doing: impl fmt::Display, e: zk::Error) -> Error {
        let (kind, hint) = match &e {
            zk::Error::NoAuth => (
                ErrorKind::PermissionDenied,
                "the node belongs to other credentials: use the user:password@ that created it",
            ),
            zk::Error::AuthFailed => (
                ErrorKind::PermissionDenied,
                "the server refused the credentials: check user:password@ in the URL",
            ),
            zk::Error::SessionExpired | zk::Error::ClientClosed => (
                ErrorKind::Unavailable,
                "the ZooKeeper session ended: retry, which opens a new session",
            ),
            e if outcome_unknown(e) => (
                ErrorKind::Unavailable,
                "check that the ZooKeeper servers run and are reachable, then retry",
            ),
            zk::Error::NoHosts => (
                ErrorKind::Unavailable,
                "check that the ZooKeeper servers run and are reachable, then retry",
            ),
            zk::Error::Throttled | zk::Error::QuotaExceeded => (
                ErrorKind::Unavailable,
                "the server is overloaded or a quota is exhausted: retry later or ask its operator",
            ),
            zk::Error::NoChildrenForEphemerals => (
                ErrorKind::InvalidName,
                "a node on the lock's path is ephemeral (somebody else's lock node): rename the lock",
            ),
            _ => (
                ErrorKind::Internal,
                "unexpected answer from ZooKeeper: please report it with the server version",
            ),
        };
        Error::new(kind, format!("{doing} on {}: {e}; {hint}", self.endpoint)).with_source(e)
    }

    pub(crate) fn lost_while_waiting(&self, request: &LockRequest) -> Error {
        Error::new(
            ErrorKind::Unavailable,
            format!(
                "gave up waiting for lock `{}`: {}, so the session was given up before the server could expire it; retry, which opens a new session",
                request.name,
                self.what_is_down()
            ),
        )
    }

    pub(crate) fn node_vanished(&self, node_path: &str, request: &LockRequest) -> Error {
        Error::new(
            ErrorKind::Unavailable,
            format!(
                "our contender {node_path} for lock `{}` disappeared from {} (session expired, or somebody deleted it): retry",
                request.name, self.endpoint
            ),
        )
    }

    /// The runtime the backend was connected on, for background tasks.
    pub(crate) fn handle(&self) -> &Handle {
        &self.handle
    }

    /// The negotiated session timeout.
    pub(crate) fn timeout(&self) -> Duration {
        self.timing.timeout
    }

    fn set_health(&self, unheard_since: Option<Instant>) {
        let mut health = self.health.lock().unwrap_or_else(PoisonError::into_inner);
        health.unheard_since = unheard_since;
        if unheard_since.is_none() {
            health.members = None;
        }
    }
}

impl Drop for Session {
    /// Closing the session (the backend's last clone, every guard and every
    /// background deletion gone) closes it on the server at once, so that no
    /// node of ours (a contender whose background delete was cut off, say)
    /// outlives the client by a session timeout. The client crate would
    /// close it too, but only if its runtime runs on; a process that exits
    /// right after dropping the backend shuts the runtime down first. So this
    /// closes it on a thread of its own, with a runtime and a connection of
    /// its own that take the session over, and waits for it: bounded by the
    /// connect timeout (1 s at most), on a healthy ensemble two round trips.
    fn drop(&mut self) {
        self.monitor.abort();
        let client = self
            .client
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let Some(client) = client else { return };
        if client.state().is_terminated() || self.state.get() == LockState::Lost {
            return;
        }
        let info = client.session().clone();
        drop(client);
        self.close_with.close_blocking(info);
    }
}

/// zookeeper-client's TLS options, built once per session from the files.
#[cfg(feature = "tls")]
type ClientTls = Option<zk::TlsOptions>;
#[cfg(not(feature = "tls"))]
type ClientTls = Option<std::convert::Infallible>;

#[cfg(feature = "tls")]
fn client_tls(config: &ZkConfig, endpoint: &str) -> Result<ClientTls> {
    config
        .tls
        .as_ref()
        .map(|tls| crate::tls::options(tls, endpoint))
        .transpose()
}

#[cfg(not(feature = "tls"))]
fn client_tls(_: &ZkConfig, _: &str) -> Result<ClientTls> {
    // `ZkConfig::validate` refuses TLS settings in this build.
    Ok(None)
}

fn with_tls(connector: zk::Connector, tls: &ClientTls) -> zk::Connector {
    #[cfg(feature = "tls")]
    if let Some(tls) = tls {
        return connector.with_tls(tls.clone());
    }
    #[cfg(not(feature = "tls"))]
    let _ = tls;
    connector
}

/// After a connect that timed out over TLS: the certificate problem the
/// first reachable server's handshake shows, if that was it.
async fn refused_certificate(config: &ZkConfig) -> Option<String> {
    #[cfg(feature = "tls")]
    if let Some(tls) = config.tls.clone() {
        let hosts = config.hosts.clone();
        let limit = config.connect_timeout.min(Duration::from_secs(2));
        return tokio::task::spawn_blocking(move || {
            hosts
                .iter()
                .find_map(|host| crate::tls::certificate_problem(host, &tls, limit))
        })
        .await
        .ok()
        .flatten();
    }
    #[cfg(not(feature = "tls"))]
    let _ = config;
    None
}

/// At most this long is spent closing a session from `Drop`.
const CLOSE_LIMIT: Duration = Duration::from_secs(1);

/// What closing a session from `Drop` needs.
struct CloseWith {
    tls: ClientTls,
    connect_string: String,
    session_timeout: Duration,
    limit: Duration,
}

impl CloseWith {
    /// Takes session `info` over on a connection of its own and closes it,
    /// from a thread with a runtime of its own (so it works from `Drop`,
    /// inside or outside a runtime, and while that runtime shuts down);
    /// waits for it at most `limit`.
    fn close_blocking(&self, info: zk::SessionInfo) {
        let connect_string = self.connect_string.clone();
        // Copy without the `tls` feature (always `None`), Clone with it.
        #[cfg_attr(not(feature = "tls"), allow(clippy::clone_on_copy))]
        let tls = self.tls.clone();
        let (session_timeout, limit) = (self.session_timeout, self.limit);
        let (done, finished) = std::sync::mpsc::channel::<()>();
        let closing = std::thread::Builder::new()
            .name("locks-zk-close".to_owned())
            .spawn(move || {
                if let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    runtime.block_on(async {
                        let _ = tokio::time::timeout(limit, async {
                            let connector = zk::Client::connector()
                                .with_session_timeout(session_timeout)
                                .with_session(info)
                                .with_fail_eagerly();
                            let client = with_tls(connector, &tls).connect(&connect_string).await?;
                            let mut watcher = client.state_watcher();
                            // The last handle gone, the client sends
                            // CloseSession and ends once it is answered.
                            drop(client);
                            while !watcher.changed().await.is_terminated() {}
                            Ok::<(), zk::Error>(())
                        })
                        .await;
                    });
                }
                let _ = done.send(());
            });
        if closing.is_ok() {
            // The thread ends by itself within `limit`; do not wait longer.
            let _ = finished.recv_timeout(limit + Duration::from_millis(100));
        }
    }
}

/// Resolves once `state` reports [`LockState::Lost`].
pub(crate) async fn until_lost(state: &mut watch::Receiver<LockState>) {
    loop {
        if *state.borrow_and_update() == LockState::Lost {
            return;
        }
        if state.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Publishes the session's state to its guards until the session ends (see
/// the module docs for the deadlines).
async fn monitor(
    client: zk::Client,
    state: LockStateSender,
    timing: Timing,
    opened: Instant,
    session: Weak<Session>,
) {
    let mut watcher = client.state_watcher();
    // The server heard from us no earlier than this instant.
    let mut heard_at = opened;
    let mut probe: Option<(Instant, Probe)> = None;
    let mut next_probe = Instant::now() + timing.probe_every;
    let mut next_member_check = Instant::now();
    let mut connected = is_connected(watcher.peek_state());
    let with_session = |f: &dyn Fn(&Session)| {
        if let Some(session) = session.upgrade() {
            f(&session);
        }
    };
    loop {
        let lost_at = heard_at + timing.give_up_after;
        let at_risk_at = heard_at + timing.at_risk_after;
        let healthy = connected && Instant::now() < at_risk_at;
        if healthy {
            state.set(LockState::Held);
            with_session(&|s| s.set_health(None));
        } else {
            state.set(LockState::AtRisk);
            with_session(&|s| {
                let mut health = s.health.lock().unwrap_or_else(PoisonError::into_inner);
                health.unheard_since.get_or_insert(heard_at);
            });
        }
        let wake = if healthy { at_risk_at } else { lost_at };
        tokio::select! {
            biased;
            changed = watcher.changed() => {
                if changed.is_terminated() {
                    state.set(LockState::Lost);
                    with_session(&|s| s.close());
                    return;
                }
                let now_connected = is_connected(changed);
                if now_connected != connected {
                    if now_connected {
                        tracing::info!(
                            target: "locks::failover",
                            backend = "zookeeper",
                            state = ?changed,
                            "the ZooKeeper session is connected again"
                        );
                    } else {
                        tracing::warn!(
                            target: "locks::failover",
                            backend = "zookeeper",
                            state = ?changed,
                            "the ZooKeeper connection broke: the client reconnects to a server of the ensemble"
                        );
                    }
                }
                connected = now_connected;
                if connected && probe.is_none() {
                    // Learn at once that the server hears us again.
                    next_probe = Instant::now();
                }
            }
            () = tokio::time::sleep_until(wake) => {
                if Instant::now() >= lost_at {
                    state.set(LockState::Lost);
                    with_session(&|s| s.close());
                    return;
                }
            }
            (sent, result) = async {
                let (sent, fut) = probe.as_mut().expect("polled only when some");
                (*sent, fut.await)
            }, if probe.is_some() => {
                probe = None;
                match result {
                    Ok(()) => {
                        heard_at = heard_at.max(sent);
                        next_probe = sent + timing.probe_every;
                    }
                    Err(e) if e_is_final(&e) => {
                        state.set(LockState::Lost);
                        with_session(&|s| s.close());
                        return;
                    }
                    // Broken connection: ask again; it waits for the reconnection.
                    Err(_) => next_probe = Instant::now() + RETRY_PAUSE,
                }
            }
            () = tokio::time::sleep_until(next_probe), if probe.is_none() => {
                let check = client.check_stat("/");
                probe = Some((Instant::now(), Box::pin(async move { check.await.map(drop) })));
            }
            members = async {
                tokio::time::sleep_until(next_member_check).await;
                check_members_of(&session).await
            }, if !healthy => {
                next_member_check = Instant::now() + timing.probe_every * 2;
                if let Some(members) = members {
                    with_session(&|s| s.health.lock().unwrap_or_else(PoisonError::into_inner).members = Some(members.clone()));
                }
            }
        }
    }
}

fn e_is_final(e: &zk::Error) -> bool {
    matches!(
        e,
        zk::Error::SessionExpired | zk::Error::ClientClosed | zk::Error::AuthFailed
    )
}

/// A request in flight that proves the server hears us.
type Probe = std::pin::Pin<Box<dyn Future<Output = ZkResult<()>> + Send>>;

fn is_connected(state: zk::SessionState) -> bool {
    matches!(
        state,
        zk::SessionState::SyncConnected | zk::SessionState::ConnectedReadOnly
    )
}

async fn check_members_of(session: &Weak<Session>) -> Option<String> {
    let hosts = session.upgrade()?.hosts.clone();
    Some(check_members(&hosts).await)
}

/// Tries a TCP connection to every member and says what each answered:
/// "127.0.0.1:2181 refuses connections, 127.0.0.1:2182 accepts connections".
/// A member that accepts connections but grants no session has no quorum.
pub(crate) async fn check_members(hosts: &[String]) -> String {
    let checks = hosts.iter().map(|host| async move {
        let target = if host.starts_with('[') {
            if host.contains("]:") {
                host.clone()
            } else {
                format!("{host}:{}", crate::DEFAULT_PORT)
            }
        } else if host.contains(':') {
            host.clone()
        } else {
            format!("{host}:{}", crate::DEFAULT_PORT)
        };
        let answer = match tokio::time::timeout(
            MEMBER_CHECK_TIMEOUT,
            tokio::net::TcpStream::connect(target.as_str()),
        )
        .await
        {
            Ok(Ok(_)) => "accepts connections".to_owned(),
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                "refuses connections (down)".to_owned()
            }
            Ok(Err(e)) => format!("cannot be reached ({e})"),
            Err(_) => format!("does not answer within {MEMBER_CHECK_TIMEOUT:?}"),
        };
        format!("{host} {answer}")
    });
    let answers = futures_join_all(checks).await;
    let mut text = answers.join(", ");
    if answers.iter().any(|a| a.ends_with("accepts connections")) {
        text.push_str(
            "; members that accept connections but grant no session have no quorum (a majority of the ensemble is down or cut off)",
        );
    }
    text
}

/// Runs the futures concurrently and collects their outputs in order.
async fn futures_join_all<F: Future>(futures: impl IntoIterator<Item = F>) -> Vec<F::Output> {
    let mut set = Vec::new();
    for f in futures {
        set.push(Box::pin(f));
    }
    let mut out: Vec<Option<F::Output>> = (0..set.len()).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (slot, fut) in out.iter_mut().zip(set.iter_mut()) {
            if slot.is_none() {
                match fut.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => *slot = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.into_iter()
        .map(|v| v.expect("every future finished"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_give_up_deadline_keeps_the_margin() {
        for secs in [1u64, 2, 3, 5, 10, 30, 60] {
            let timeout = Duration::from_secs(secs);
            let timing = Timing::new(timeout);
            let margin = (timeout / 5).min(Duration::from_secs(1));
            assert!(timing.give_up_after + margin <= timeout, "{timing:?}");
            // A blip of half the timeout, plus a probe interval, stays within it.
            assert!(
                timing.give_up_after >= timeout / 2 + timing.probe_every,
                "{timing:?}"
            );
        }
    }

    #[test]
    fn transport_errors_leave_the_outcome_unknown() {
        assert!(outcome_unknown(&zk::Error::ConnectionLoss));
        assert!(outcome_unknown(&zk::Error::Timeout));
        assert!(!outcome_unknown(&zk::Error::NoNode));
        assert!(!outcome_unknown(&zk::Error::SessionExpired));
        assert!(!outcome_unknown(&zk::Error::NodeExists));
    }
}
