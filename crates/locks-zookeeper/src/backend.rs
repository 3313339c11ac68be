//! [`ZkBackend`]: the session, the lock recipe, release and clean.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use locks_core::{
    Backend, Capabilities, CleanReport, Error, ErrorKind, FencingToken, HeldLock, LocalLocks,
    LocalTurn, LockGuard, LockName, LockRequest, LockState, LockStateSender, Result, Scope, Wait,
    async_trait,
};
use tokio::runtime::Handle;
use tokio::sync::{Mutex as AsyncMutex, watch};
use tokio::task::AbortHandle;
use zookeeper_client as zk;

use crate::ZkConfig;
use crate::path;

type ZkResult<T> = std::result::Result<T, zk::Error>;

/// Pause before retrying an operation that failed with a connection loss.
/// Retried requests wait in the client until it has reconnected, so this only
/// keeps a flapping connection from turning the retry into a busy loop.
const RETRY_PAUSE: Duration = Duration::from_millis(20);

/// How often a contender creation is retried when `clean` removed the lock
/// directory between creating the directory and creating the contender.
const CREATE_ATTEMPTS: usize = 10;

/// How many requests `clean` keeps in flight at once.
const CLEAN_BATCH: usize = 512;

/// Global-scope locks on a ZooKeeper ensemble, in the node layout of kazoo's
/// `Lock` recipe (see the [crate docs](crate)).
///
/// One backend is one ZooKeeper session, shared by every lock it holds;
/// clones share it too. When the session expires, the next acquire opens a
/// new one. Dropping the last clone (and the last guard) closes the session.
#[derive(Clone)]
pub struct ZkBackend {
    inner: Arc<Inner>,
}

struct Inner {
    config: ZkConfig,
    describe: String,
    handle: Handle,
    session: AsyncMutex<Arc<Session>>,
    table: LocalLocks<LockName>,
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
        Ok(ZkBackend {
            inner: Arc::new(Inner {
                config,
                describe,
                handle,
                session: AsyncMutex::new(session),
                table: LocalLocks::default(),
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

    /// The current session, or a new one if it expired or was given up.
    async fn session(&self) -> Result<Arc<Session>> {
        let mut current = self.inner.session.lock().await;
        if current.usable() {
            return Ok(Arc::clone(&current));
        }
        let fresh =
            Session::open(&self.inner.config, &self.inner.describe, &self.inner.handle).await?;
        *current = Arc::clone(&fresh);
        Ok(fresh)
    }

    /// Creates our contender and waits until it is the lowest. Returns the
    /// node's path and its czxid.
    async fn contend(
        &self,
        session: &Arc<Session>,
        dir: &str,
        request: &LockRequest,
    ) -> Result<(String, FencingToken)> {
        let mut contender = Contender {
            session: Arc::clone(session),
            dir: dir.to_owned(),
            prefix: path::new_prefix(),
            node: NodeState::NotSent,
            handle: self.inner.handle.clone(),
        };
        let client = session.client()?;
        let data = request.holder_identity();
        let (node, stat, children) = self
            .create_contender(&mut contender, data.as_bytes(), request)
            .await?;
        let node_path = format!("{dir}/{node}");
        let own_sequence = &node[contender.prefix.len()..];
        let mut lost = session.state.subscribe();

        // Every contender below ours, by sequence; the last is our predecessor.
        // Sequences of one directory only grow, so no smaller one can appear
        // later: once these are gone, the lock is ours without listing again.
        let mut smaller: Vec<(String, String)> = match children {
            Some(children) => smaller_contenders(&children, &node, own_sequence),
            None => None,
        }
        .ok_or_else(|| session.node_vanished(&node_path, request))?;

        while let Some((_, predecessor)) = smaller.last() {
            if request.wait == Wait::TryOnce {
                contender.withdraw().await;
                return Err(request.would_block(self));
            }
            let predecessor_path = format!("{dir}/{predecessor}");
            let watched = tokio::select! {
                result = client.check_and_watch_stat(&predecessor_path) => result,
                () = until_lost(&mut lost) => return Err(session.lost_while_waiting(request)),
            };
            match watched {
                Ok((None, _)) => {
                    smaller.pop();
                }
                Ok((Some(_), watcher)) => {
                    let event = tokio::select! {
                        event = watcher.changed() => event,
                        () = until_lost(&mut lost) => return Err(session.lost_while_waiting(request)),
                    };
                    match event.event_type {
                        zk::EventType::NodeDeleted => {
                            smaller.pop();
                        }
                        zk::EventType::Session if event.session_state.is_terminated() => {
                            return Err(session.lost_while_waiting(request));
                        }
                        // Data changes and non-final session events: watch again.
                        _ => {}
                    }
                }
                Err(zk::Error::ConnectionLoss) => tokio::time::sleep(RETRY_PAUSE).await,
                Err(e) => {
                    return Err(session.error(
                        format_args!(
                            "watching contender {predecessor_path} of lock `{}`",
                            request.name
                        ),
                        e,
                    ));
                }
            }
        }

        let czxid = if stat.czxid > 0 {
            stat.czxid
        } else {
            // The client sends `create` (no Stat in the answer) only to servers
            // it was told are older than 3.5. ZOOKEEPER-4026 (invalid Stat on
            // 3.8.0) concerns creates inside `multi`, not this plain create2:
            // the layout test checks the token against the node's czxid.
            match session.retrying(|| client.check_stat(&node_path)).await {
                Ok(Some(stat)) => stat.czxid,
                Ok(None) => return Err(session.node_vanished(&node_path, request)),
                Err(e) => {
                    return Err(session.error(format_args!("reading lock node {node_path}"), e));
                }
            }
        };
        let token = FencingToken::try_from(czxid).map_err(|_| {
            Error::new(
                ErrorKind::Internal,
                format!(
                    "lock node {node_path} on {} has an invalid czxid {czxid}",
                    session.endpoint
                ),
            )
        })?;
        contender.disarm();
        Ok((node_path, token))
    }

    /// Creates our ephemeral sequential node and, in the same round trip,
    /// lists the directory. Creates missing parents; after a connection loss
    /// finds our node again by its unique prefix instead of creating another.
    async fn create_contender(
        &self,
        contender: &mut Contender,
        data: &[u8],
        request: &LockRequest,
    ) -> Result<(String, zk::Stat, Option<Vec<String>>)> {
        let session = Arc::clone(&contender.session);
        let client = &session.client()?;
        let dir = contender.dir.clone();
        let create_path = format!("{dir}/{}", contender.prefix);
        let acls = self.acls();
        let options = zk::CreateMode::EphemeralSequential.with_acls(acls);
        let mut attempts = 0;
        loop {
            attempts += 1;
            contender.node = NodeState::Sent;
            // Both requests leave now, in this order; the server answers the
            // listing after the creation, so the listing holds our node.
            let create = client.create(&create_path, data, &options);
            let list = client.list_children(&dir);
            let (created, listed) = tokio::join!(create, list);
            match created {
                Ok((stat, sequence)) => {
                    let node = format!("{}{sequence}", contender.prefix);
                    contender.node = NodeState::Known(node.clone());
                    let children = match listed {
                        Ok(children) => Some(children),
                        Err(_) => session.list(client, &dir).await.ok(),
                    };
                    return Ok((node, stat, children));
                }
                Err(zk::Error::NoNode) if attempts < CREATE_ATTEMPTS => {
                    contender.node = NodeState::NotSent;
                    let parents = zk::CreateMode::Persistent.with_acls(acls);
                    if let Err(e) = session.retrying(|| client.mkdir(&dir, &parents)).await {
                        return Err(session.error(format_args!("creating lock directory {dir}"), e));
                    }
                }
                Err(zk::Error::ConnectionLoss) if attempts < CREATE_ATTEMPTS => {
                    // The creation may have happened: look for our prefix.
                    match session.list(client, &dir).await {
                        Ok(children) => {
                            if let Some(node) =
                                children.iter().find(|c| c.starts_with(&contender.prefix))
                            {
                                let node = node.clone();
                                contender.node = NodeState::Known(node.clone());
                                let node_path = format!("{dir}/{node}");
                                return match session
                                    .retrying(|| client.check_stat(&node_path))
                                    .await
                                {
                                    Ok(Some(stat)) => Ok((node, stat, Some(children))),
                                    Ok(None) => Err(session.node_vanished(&node_path, request)),
                                    Err(e) => Err(session
                                        .error(format_args!("reading lock node {node_path}"), e)),
                                };
                            }
                            contender.node = NodeState::NotSent;
                        }
                        Err(zk::Error::NoNode) => contender.node = NodeState::NotSent,
                        Err(e) => {
                            return Err(
                                session.error(format_args!("listing lock directory {dir}"), e)
                            );
                        }
                    }
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
                Err(zk::Error::NoNode) => {
                    return Err(Error::new(
                        ErrorKind::Unavailable,
                        format!(
                            "lock directory {dir} on {} kept disappearing while a contender for `{}` was \
                             created ({CREATE_ATTEMPTS} attempts): something is deleting lock directories \
                             (a `locks clean` loop?); try again",
                            session.endpoint, request.name
                        ),
                    ));
                }
                Err(e) => {
                    return Err(session.error(
                        format_args!("creating a contender for lock `{}` in {dir}", request.name),
                        e,
                    ));
                }
            }
        }
    }

    fn acls(&self) -> zk::Acls<'static> {
        if self.inner.config.credentials.is_some() {
            zk::Acls::creator_all()
        } else {
            zk::Acls::anyone_all()
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

/// The contenders below `own_sequence`, ascending, as (sequence, child); `None`
/// if our node `own` is not among the children.
fn smaller_contenders(
    children: &[String],
    own: &str,
    own_sequence: &str,
) -> Option<Vec<(String, String)>> {
    let mut found = false;
    let mut smaller = Vec::new();
    for child in children {
        if child == own {
            found = true;
        } else if let Some(sequence) = path::contender_sequence(child)
            && sequence < own_sequence
        {
            smaller.push((sequence.to_owned(), child.clone()));
        }
    }
    smaller.sort();
    found.then_some(smaller)
}

/// Resolves once `state` reports [`LockState::Lost`].
async fn until_lost(state: &mut watch::Receiver<LockState>) {
    loop {
        if *state.borrow_and_update() == LockState::Lost {
            return;
        }
        if state.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
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
    /// # Cancel safety
    /// Cancel safe: a dropped future leaves the in-process queue, and a
    /// background task deletes its contender node (found by its unique prefix
    /// if the creation was still under way).
    async fn acquire(&self, request: &LockRequest) -> Result<LockGuard> {
        let dir = self.lock_dir(&request.name)?;
        let turn = match request.wait {
            Wait::TryOnce => self
                .inner
                .table
                .try_lock(&request.name)
                .ok_or_else(|| request.would_block(self))?,
            Wait::Forever | Wait::Timeout(_) => self.inner.table.lock(&request.name).await,
        };
        let session = self.session().await?;
        let (path, token) = self.contend(&session, &dir, request).await?;
        let state = session.state.subscribe();
        let held = ZkHeld {
            session,
            path,
            handle: self.inner.handle.clone(),
            turn: Some(turn),
            settled: false,
        };
        Ok(LockGuard::new(request, token, state, Box::new(held)))
    }

    /// Deletes lock directories under `/<namespace>/locks` that have no
    /// children, deepest first. ZooKeeper refuses to delete a node with
    /// children, so a directory a contender entered meanwhile stays and is
    /// counted busy, as are directories with contenders.
    async fn clean(&self) -> Result<CleanReport> {
        let session = self.session().await?;
        clean(&session, &path::locks_root(&self.inner.config.namespace)).await
    }
}

/// One node seen by `clean`.
struct Visited {
    path: String,
    version: i32,
    removable: bool,
}

async fn clean(session: &Session, root: &str) -> Result<CleanReport> {
    let client = &session.client()?;
    let mut report = CleanReport::default();
    // Breadth first: levels[0] is the root, levels[k] its descendants at depth k.
    let mut levels: Vec<Vec<Visited>> = Vec::new();
    let mut next = vec![root.to_owned()];
    while !next.is_empty() {
        let mut level = Vec::new();
        let mut below = Vec::new();
        for chunk in next.chunks(CLEAN_BATCH) {
            // All requests of a chunk leave before the first answer is awaited.
            let pending: Vec<_> = chunk.iter().map(|p| client.get_children(p)).collect();
            for (dir, answer) in chunk.iter().zip(pending) {
                let (children, stat) = match answer.await {
                    Ok(found) => found,
                    Err(zk::Error::NoNode) => continue,
                    Err(e) => return Err(session.error(format_args!("cleaning: listing {dir}"), e)),
                };
                let mut contenders = false;
                for child in children {
                    if path::contender_sequence(&child).is_some() {
                        contenders = true;
                    } else {
                        below.push(format!("{dir}/{child}"));
                    }
                }
                if contenders {
                    report.busy += 1;
                }
                level.push(Visited {
                    path: dir.clone(),
                    version: stat.version,
                    // Ephemeral nodes are somebody's session; the root stays.
                    removable: !contenders && stat.ephemeral_owner == 0 && !levels.is_empty(),
                });
            }
        }
        levels.push(level);
        next = below;
    }
    for level in levels.iter().rev() {
        let candidates: Vec<&Visited> = level.iter().filter(|v| v.removable).collect();
        for chunk in candidates.chunks(CLEAN_BATCH) {
            let pending: Vec<_> = chunk
                .iter()
                .map(|v| client.delete(&v.path, Some(v.version)))
                .collect();
            for (visited, answer) in chunk.iter().zip(pending) {
                match answer.await {
                    Ok(()) => report.removed.push(visited.path.clone()),
                    Err(zk::Error::NoNode) => {}
                    Err(zk::Error::NotEmpty | zk::Error::BadVersion) => report.busy += 1,
                    Err(e) => {
                        return Err(
                            session.error(format_args!("cleaning: deleting {}", visited.path), e)
                        );
                    }
                }
            }
        }
    }
    Ok(report)
}

/// One ZooKeeper session and the state channel of every guard it holds.
struct Session {
    /// `None` once given up: dropping the last client closes the session, so
    /// the server deletes its nodes as soon as it hears from it again.
    client: Mutex<Option<zk::Client>>,
    /// For messages and `Debug`.
    id: zk::SessionId,
    /// Fed by the monitor task: Held, AtRisk while disconnected, Lost when
    /// the session expired, closed, or stayed disconnected too long.
    state: LockStateSender,
    /// `zookeeper://…`, for messages.
    endpoint: String,
    monitor: AbortHandle,
}

impl Session {
    async fn open(config: &ZkConfig, endpoint: &str, handle: &Handle) -> Result<Arc<Session>> {
        let mut connector = zk::Client::connector().with_session_timeout(config.session_timeout);
        if let Some((user, password)) = &config.credentials {
            connector = connector.with_auth("digest", format!("{user}:{password}").as_bytes());
        }
        let connect_string = config.connect_string();
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
                return Err(Error::new(
                    ErrorKind::Unavailable,
                    format!(
                        "no ZooKeeper server at {endpoint} answered within {:?} (connect_timeout): check that one runs and listens there, and that nothing blocks the port",
                        config.connect_timeout
                    ),
                ));
            }
        };
        let state = LockStateSender::new();
        // The client reports Disconnected after 2/5 of the session timeout
        // without an answer. Give the session up 2/5 later, before the server
        // can expire it (a full timeout) and let another holder in.
        let grace = client.session_timeout() * 2 / 5;
        let watcher = client.state_watcher();
        Ok(Arc::new_cyclic(|session| {
            let monitor = handle
                .spawn(monitor(watcher, state.clone(), grace, Weak::clone(session)))
                .abort_handle();
            Session {
                id: client.session_id(),
                client: Mutex::new(Some(client)),
                state,
                endpoint: endpoint.to_owned(),
                monitor,
            }
        }))
    }

    /// Whether new locks may be taken on this session.
    fn usable(&self) -> bool {
        self.state.get() != LockState::Lost
            && self
                .client
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .as_ref()
                .is_some_and(|c| !c.state().is_terminated())
    }

    /// A handle on the session for requests, unless it was given up.
    fn client(&self) -> Result<zk::Client> {
        self.client
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::Unavailable,
                    format!(
                        "the ZooKeeper session {} at {} was given up after staying disconnected too long: retry, which opens a new session",
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

    /// Runs `op` again while it fails with a connection loss (the client
    /// reconnects meanwhile; a final session state ends the retries).
    async fn retrying<T, F, Fut>(&self, op: F) -> ZkResult<T>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = ZkResult<T>>,
    {
        loop {
            match op().await {
                Err(zk::Error::ConnectionLoss) if self.usable() => {
                    tokio::time::sleep(RETRY_PAUSE).await
                }
                result => return result,
            }
        }
    }

    async fn list(&self, client: &zk::Client, dir: &str) -> ZkResult<Vec<String>> {
        self.retrying(|| client.list_children(dir)).await
    }

    /// Turns a client error into ours, naming what was done, the endpoint and what to do.
    fn error(&self, doing: impl fmt::Display, e: zk::Error) -> Error {
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
            zk::Error::ConnectionLoss | zk::Error::Timeout | zk::Error::NoHosts => (
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

    fn lost_while_waiting(&self, request: &LockRequest) -> Error {
        Error::new(
            ErrorKind::Unavailable,
            format!(
                "the ZooKeeper session at {} ended or stayed disconnected too long while waiting for lock `{}`: retry, which opens a new session",
                self.endpoint, request.name
            ),
        )
    }

    fn node_vanished(&self, node_path: &str, request: &LockRequest) -> Error {
        Error::new(
            ErrorKind::Unavailable,
            format!(
                "our contender {node_path} for lock `{}` disappeared from {} (session expired, or somebody deleted it): retry",
                request.name, self.endpoint
            ),
        )
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.monitor.abort();
    }
}

/// Publishes the session's state to its guards until the session ends.
async fn monitor(
    mut watcher: zk::StateWatcher,
    state: LockStateSender,
    grace: Duration,
    session: Weak<Session>,
) {
    let mut current = watcher.peek_state();
    let mut give_up_at: Option<tokio::time::Instant> = None;
    loop {
        match current {
            zk::SessionState::SyncConnected | zk::SessionState::ConnectedReadOnly => {
                give_up_at = None;
                state.set(LockState::Held);
            }
            zk::SessionState::Disconnected => {
                give_up_at.get_or_insert_with(|| tokio::time::Instant::now() + grace);
                state.set(LockState::AtRisk);
            }
            zk::SessionState::Expired | zk::SessionState::Closed | zk::SessionState::AuthFailed => {
                state.set(LockState::Lost);
                return;
            }
        }
        current = match give_up_at {
            None => watcher.changed().await,
            Some(at) => match tokio::time::timeout_at(at, watcher.changed()).await {
                Ok(next) => next,
                Err(_) => {
                    state.set(LockState::Lost);
                    if let Some(session) = session.upgrade() {
                        session.close();
                    }
                    return;
                }
            },
        };
    }
}

/// Where the creation of our contender node stands, for cleanup.
#[derive(Debug)]
enum NodeState {
    /// No creation request has left.
    NotSent,
    /// A creation request left; the node may exist under our prefix.
    Sent,
    /// Our node's name (without the directory).
    Known(String),
}

/// Our contender while acquiring: deletes the node if the acquire ends
/// without the lock (error, try-once failure, or the future dropped).
struct Contender {
    session: Arc<Session>,
    dir: String,
    prefix: String,
    node: NodeState,
    handle: Handle,
}

impl Contender {
    /// The lock is ours: keep the node.
    fn disarm(&mut self) {
        self.node = NodeState::NotSent;
    }

    /// Deletes the node now (cancel safe: if dropped midway, `Drop` finishes).
    async fn withdraw(&mut self) {
        remove_contender(&self.session, &self.dir, &self.prefix, &self.node).await;
        self.disarm();
    }
}

impl Drop for Contender {
    fn drop(&mut self) {
        let node = std::mem::replace(&mut self.node, NodeState::NotSent);
        if matches!(node, NodeState::NotSent) {
            return;
        }
        let session = Arc::clone(&self.session);
        let dir = std::mem::take(&mut self.dir);
        let prefix = std::mem::take(&mut self.prefix);
        self.handle.spawn(async move {
            remove_contender(&session, &dir, &prefix, &node).await;
        });
    }
}

/// Best effort: deletes our contender (by name, or by prefix if the name is
/// unknown). Failures leave it to the session's end.
async fn remove_contender(session: &Session, dir: &str, prefix: &str, node: &NodeState) {
    let Ok(client) = session.client() else {
        // Given up: the node goes with the session.
        return;
    };
    let names = match node {
        NodeState::NotSent => return,
        NodeState::Known(name) => vec![name.clone()],
        // Sent after the creation, this listing sees its node.
        NodeState::Sent => match session.list(&client, dir).await {
            Ok(children) => children
                .into_iter()
                .filter(|c| c.starts_with(prefix))
                .collect(),
            Err(_) => return,
        },
    };
    for name in names {
        let path = format!("{dir}/{name}");
        let _ = session.retrying(|| client.delete(&path, None)).await;
    }
}

/// A held lock: our node, the session it lives in, and the in-process claim.
struct ZkHeld {
    session: Arc<Session>,
    path: String,
    handle: Handle,
    turn: Option<LocalTurn<LockName>>,
    /// The node was deleted (or found gone). Until then, dropping this (a
    /// release future cancelled half way, or a dropped guard) deletes it in
    /// the background.
    settled: bool,
}

impl fmt::Debug for ZkHeld {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ZkHeld")
            .field("path", &self.path)
            .field("endpoint", &self.session.endpoint)
            .field("session", &self.session.id)
            .finish()
    }
}

/// Deletes our lock node, retrying a lost connection while the session lives.
async fn delete_node(session: &Session, path: &str) -> Result<()> {
    let gone = |why: &dyn fmt::Display| {
        Error::new(
            ErrorKind::Lost,
            format!(
                "lock node {path} on {} was gone at release ({why}): the session ended or somebody deleted the node, so another holder may have run concurrently",
                session.endpoint
            ),
        )
    };
    let client = session.client().map_err(|e| gone(&e))?;
    let mut retried = false;
    loop {
        return match client.delete(path, None).await {
            Ok(()) => Ok(()),
            // The first attempt may have deleted it before the connection broke.
            Err(zk::Error::NoNode) if retried => Ok(()),
            Err(zk::Error::ConnectionLoss) if session.usable() => {
                retried = true;
                tokio::time::sleep(RETRY_PAUSE).await;
                continue;
            }
            Err(
                e @ (zk::Error::NoNode
                | zk::Error::SessionExpired
                | zk::Error::ClientClosed
                | zk::Error::ConnectionLoss),
            ) => Err(gone(&e).with_source(e)),
            Err(e) => Err(session.error(format_args!("releasing lock node {path}"), e)),
        };
    }
}

impl Drop for ZkHeld {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        self.settled = true;
        let (session, path, turn) = (
            Arc::clone(&self.session),
            self.path.clone(),
            self.turn.take(),
        );
        self.handle.spawn(async move {
            let _ = delete_node(&session, &path).await;
            // The next task of this client queues only after our node is gone.
            drop(turn);
        });
    }
}

#[async_trait]
impl HeldLock for ZkHeld {
    async fn release(mut self: Box<Self>) -> Result<()> {
        // Delete before the in-process turn ends, so the next task of this
        // client does not queue behind our own node.
        let result = delete_node(&self.session, &self.path).await;
        self.settled = true;
        result
    }

    fn release_on_drop(self: Box<Self>) {
        // `Drop` deletes the node in the background.
        drop(self);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn predecessors_are_the_smaller_contenders_in_order() {
        let hex = "0123456789abcdef0123456789abcdef";
        let own = format!("{hex}__lock__0000000005");
        let children: Vec<String> = [
            format!("{hex}__lock__0000000007"),
            "ffff456789abcdef0123456789abcdef__lock__0000000003".to_owned(),
            "_c_xyz-lock-0000000001".to_owned(),
            own.clone(),
            "aaaa456789abcdef0123456789abcdef__lock__0000000004".to_owned(),
            "bbbb456789abcdef0123456789abcdef__rlock__0000000002".to_owned(),
        ]
        .into();
        let smaller = smaller_contenders(&children, &own, "0000000005").unwrap();
        let sequences: Vec<&str> = smaller.iter().map(|(s, _)| s.as_str()).collect();
        assert_eq!(sequences, ["0000000003", "0000000004"]);
        assert!(smaller_contenders(&children[..2], &own, "0000000005").is_none());
    }
}
