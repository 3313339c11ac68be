//! [`ZkBackend`]: the lock recipe, release and clean.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use locks_core::{
    Backend, Capabilities, CleanReport, Error, ErrorKind, FencingToken, HeldLock, LocalLocks,
    LocalTurn, LockGuard, LockName, LockRequest, Result, Scope, Wait, async_trait,
};
use tokio::runtime::Handle;
use tokio::sync::Mutex as AsyncMutex;
use zookeeper_client as zk;

use crate::ZkConfig;
use crate::path;
use crate::session::{Session, outcome_unknown};

/// How often a contender creation is retried when `clean` removed the lock
/// directory between creating the directory and creating the contender.
const CREATE_ATTEMPTS: usize = 10;

/// Pause between attempts to open a session within a wait's timeout.
const REOPEN_PAUSE: Duration = Duration::from_millis(100);

/// How many requests `clean` keeps in flight at once.
const CLEAN_BATCH: usize = 512;

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

    /// The error of a wait whose timeout ends while the ensemble cannot be
    /// reached: `Unavailable`, saying what is down. `None` when the session
    /// is healthy (the lock is simply busy).
    fn unreachable(&self, request: &LockRequest, limit: Duration) -> Option<Error> {
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

    async fn acquire_now(&self, request: &LockRequest, dir: String) -> Result<LockGuard> {
        let turn = match request.wait {
            Wait::TryOnce => self
                .inner
                .table
                .try_lock(&request.name)
                .ok_or_else(|| request.would_block(&self.describe()))?,
            Wait::Forever | Wait::Timeout(_) => self.inner.table.lock(&request.name).await,
        };
        let session = loop {
            match self.session().await {
                Ok(session) => break session,
                // A wait with a timeout keeps trying to open a session (an
                // ensemble regaining its quorum) until its timeout ends it.
                Err(e)
                    if matches!(request.wait, Wait::Timeout(_))
                        && e.kind() == ErrorKind::Unavailable =>
                {
                    tokio::time::sleep(REOPEN_PAUSE).await;
                }
                Err(e) => return Err(e),
            }
        };
        let (path, token) = self.contend(&session, &dir, request).await?;
        let state = session.state.subscribe();
        let held = ZkHeld {
            session,
            path,
            turn: Some(turn),
            settled: false,
        };
        Ok(LockGuard::new(request, token, state, Box::new(held)))
    }

    /// Creates our contender and waits until it is the lowest: the standard
    /// recipe. Each time the contender just below ours goes, the directory
    /// is listed once and the new predecessor watched, so a handoff costs one
    /// round trip however long the queue. Returns the node's path and czxid.
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
        };
        let client = session.client()?;
        let data = request.holder_identity();
        let (node, stat, mut children) = self
            .create_contender(&mut contender, data.as_bytes(), request)
            .await?;
        let node_path = format!("{dir}/{node}");
        let own_sequence = &node[contender.prefix.len()..];
        let mut lost = session.state.subscribe();

        loop {
            let predecessor = match children.take() {
                Some(children) => predecessor(&children, &node, own_sequence)
                    .ok_or_else(|| session.node_vanished(&node_path, request))?,
                None => {
                    let listed = session.list(&client, dir).await.map_err(|e| {
                        if session.usable() {
                            session.error(format_args!("listing lock directory {dir}"), e)
                        } else {
                            session.lost_while_waiting(request)
                        }
                    })?;
                    predecessor(&listed, &node, own_sequence)
                        .ok_or_else(|| session.node_vanished(&node_path, request))?
                }
            };
            let (Some(predecessor), smaller) = predecessor else {
                break;
            };
            if request.wait == Wait::TryOnce {
                contender.withdraw().await;
                return Err(request.would_block(&self.describe()));
            }
            let predecessor_path = format!("{dir}/{predecessor}");
            let watched = tokio::select! {
                result = session.retrying(|| client.check_and_watch_stat(&predecessor_path)) => result,
                () = crate::session::until_lost(&mut lost) => return Err(session.lost_while_waiting(request)),
            };
            let deleted = match watched {
                Ok((None, _)) => true,
                Ok((Some(_), watcher)) => {
                    // The watch survives disconnections (the client sets it
                    // again on reconnecting), so a waiter keeps its place.
                    let event = tokio::select! {
                        event = watcher.changed() => event,
                        () = crate::session::until_lost(&mut lost) => return Err(session.lost_while_waiting(request)),
                    };
                    if event.event_type == zk::EventType::Session
                        && event.session_state.is_terminated()
                    {
                        return Err(session.lost_while_waiting(request));
                    }
                    event.event_type == zk::EventType::NodeDeleted
                }
                Err(_) if !session.usable() => return Err(session.lost_while_waiting(request)),
                Err(e) => {
                    return Err(session.error(
                        format_args!(
                            "watching contender {predecessor_path} of lock `{}`",
                            request.name
                        ),
                        e,
                    ));
                }
            };
            // Sequences only grow, so no contender below ours can appear
            // later: when the only one below ours is gone, the lock is ours
            // without listing. Otherwise list once for the new predecessor.
            if deleted && smaller == 1 {
                break;
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
    /// lists the directory. Creates missing parents. When the creation's
    /// outcome is unknown (the connection broke), looks for our node by its
    /// unique prefix (as Curator's protected mode and kazoo do) before
    /// creating again, so there is never a second contender of ours; a node
    /// under our prefix counts only if our session owns it (CURATOR-604).
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
        let mut missing_dir = 0;
        loop {
            contender.node = NodeState::Sent;
            // Both requests leave now, in this order; the server answers the
            // listing after the creation, so the listing holds our node.
            let create = client.create(&create_path, data, &options);
            let list = client.list_children(&dir);
            let (created, listed) = tokio::join!(create, list);
            let failed = match created {
                Ok((stat, sequence)) => {
                    let node = format!("{}{sequence}", contender.prefix);
                    contender.node = NodeState::Known(node.clone());
                    return Ok((node, stat, listed.ok()));
                }
                Err(e) => e,
            };
            match failed {
                zk::Error::NoNode if missing_dir < CREATE_ATTEMPTS => {
                    missing_dir += 1;
                    contender.node = NodeState::NotSent;
                    let parents = zk::CreateMode::Persistent.with_acls(acls);
                    if let Err(e) = session.retrying(|| client.mkdir(&dir, &parents)).await {
                        return Err(session.error(format_args!("creating lock directory {dir}"), e));
                    }
                }
                e if outcome_unknown(&e) && session.usable() => {
                    // The creation may have happened: look for our prefix.
                    if let Some(found) = self.find_own(&session, client, contender, request).await?
                    {
                        return Ok(found);
                    }
                    contender.node = NodeState::NotSent;
                }
                zk::Error::NoNode => {
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
                _ if !session.usable() => return Err(session.lost_while_waiting(request)),
                e => {
                    return Err(session.error(
                        format_args!("creating a contender for lock `{}` in {dir}", request.name),
                        e,
                    ));
                }
            }
        }
    }

    /// Our node under `contender.prefix`, if a creation whose outcome was
    /// unknown made one, with its Stat and the directory's children.
    async fn find_own(
        &self,
        session: &Session,
        client: &zk::Client,
        contender: &mut Contender,
        request: &LockRequest,
    ) -> Result<Option<(String, zk::Stat, Option<Vec<String>>)>> {
        let dir = contender.dir.clone();
        let children = match session.list(client, &dir).await {
            Ok(children) => children,
            Err(zk::Error::NoNode) => return Ok(None),
            Err(_) if !session.usable() => return Err(session.lost_while_waiting(request)),
            Err(e) => return Err(session.error(format_args!("listing lock directory {dir}"), e)),
        };
        let Some(node) = children
            .iter()
            .find(|c| c.starts_with(&contender.prefix))
            .cloned()
        else {
            return Ok(None);
        };
        contender.node = NodeState::Known(node.clone());
        let node_path = format!("{dir}/{node}");
        match session.retrying(|| client.check_stat(&node_path)).await {
            // A node of another session (an expired one of ours) is not ours:
            // its server-side deletion would leave us holding nothing.
            Ok(Some(stat)) if stat.ephemeral_owner != session.id.0 => {
                Err(session.node_vanished(&node_path, request))
            }
            Ok(Some(stat)) => Ok(Some((node, stat, Some(children)))),
            Ok(None) => Ok(None),
            Err(_) if !session.usable() => Err(session.lost_while_waiting(request)),
            Err(e) => Err(session.error(format_args!("reading lock node {node_path}"), e)),
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

/// The contender just below ours (`None` when ours is the lowest) and how
/// many contenders are below ours; `None` if our node `own` is not among the
/// children.
fn predecessor(
    children: &[String],
    own: &str,
    own_sequence: &str,
) -> Option<(Option<String>, usize)> {
    let mut found = false;
    let mut smaller = 0;
    let mut best: Option<(&str, &String)> = None;
    for child in children {
        if child == own {
            found = true;
        } else if let Some(sequence) = path::contender_sequence(child)
            && sequence < own_sequence
        {
            smaller += 1;
            if best.is_none_or(|(b, _)| sequence > b) {
                best = Some((sequence, child));
            }
        }
    }
    found.then(|| (best.map(|(_, child)| child.clone()), smaller))
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
}

impl Contender {
    /// The lock is ours: keep the node.
    fn disarm(&mut self) {
        self.node = NodeState::NotSent;
    }

    /// Deletes the node now (cancel safe: if dropped midway, `Drop` finishes).
    async fn withdraw(&mut self) {
        if let NodeState::Known(name) = &self.node
            && let Ok(client) = self.session.client()
        {
            let path = format!("{}/{name}", self.dir);
            match self.session.retrying(|| client.delete(&path, None)).await {
                Ok(()) | Err(zk::Error::NoNode) => self.disarm(),
                // Left to `Drop`, which retries in the background.
                Err(_) => {}
            }
        }
    }
}

impl Drop for Contender {
    fn drop(&mut self) {
        let node = std::mem::replace(&mut self.node, NodeState::NotSent);
        let session = Arc::clone(&self.session);
        match node {
            NodeState::NotSent => {}
            NodeState::Known(name) => session.delete_later(format!("{}/{name}", self.dir)),
            NodeState::Sent => {
                // Listed after the creation, the directory shows its node
                // (requests of one session are answered in order).
                let dir = std::mem::take(&mut self.dir);
                let prefix = std::mem::take(&mut self.prefix);
                let handle = session.handle().clone();
                handle.spawn(async move {
                    let Ok(client) = session.client() else { return };
                    if let Ok(children) = session.list(&client, &dir).await {
                        for child in children.into_iter().filter(|c| c.starts_with(&prefix)) {
                            session.delete_later(format!("{dir}/{child}"));
                        }
                    }
                });
            }
        }
    }
}

/// A held lock: our node, the session it lives in, and the in-process claim.
struct ZkHeld {
    session: Arc<Session>,
    path: String,
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

/// Deletes our lock node, retrying while the outcome is unknown and the
/// session lives: until the delete succeeds, or the node is found gone after
/// a retry (the first attempt deleted it), or the session ends.
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
    let attempts = AtomicUsize::new(0);
    let result = session
        .retrying(|| {
            attempts.fetch_add(1, Ordering::Relaxed);
            client.delete(path, None)
        })
        .await;
    let retried = attempts.load(Ordering::Relaxed) > 1;
    match result {
        Ok(()) => Ok(()),
        // A retry finds the node gone: the first attempt deleted it.
        Err(zk::Error::NoNode) if retried => Ok(()),
        Err(e @ (zk::Error::NoNode | zk::Error::SessionExpired | zk::Error::ClientClosed)) => {
            Err(gone(&e).with_source(e))
        }
        Err(e) if outcome_unknown(&e) => Err(gone(&e).with_source(e)),
        Err(e) => Err(session.error(format_args!("releasing lock node {path}"), e)),
    }
}

impl Drop for ZkHeld {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        self.settled = true;
        // The next task of this client queues only after our node is gone.
        self.session
            .delete_later_then(self.path.clone(), self.turn.take());
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
    fn the_predecessor_is_the_next_smaller_contender() {
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
        assert_eq!(
            predecessor(&children, &own, "0000000005"),
            Some((
                Some("aaaa456789abcdef0123456789abcdef__lock__0000000004".to_owned()),
                2
            ))
        );
        assert_eq!(predecessor(&children[..2], &own, "0000000005"), None);
        let lowest = [own.clone(), format!("{hex}__lock__0000000007")];
        assert_eq!(predecessor(&lowest, &own, "0000000005"), Some((None, 0)));
    }
}
