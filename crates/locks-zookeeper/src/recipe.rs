//! The lock recipe, kazoo's: an ephemeral sequential contender node in the
//! lock's directory, and a wait on the contender just below ours until ours
//! is the lowest. One listing per handoff; a creation whose outcome is
//! unknown (a broken connection) is found again by its unique prefix.

use std::sync::Arc;
use std::time::Duration;

use locks_core::{Backend, Error, ErrorKind, FencingToken, LockGuard, LockRequest, Result, Wait};
use zookeeper_client as zk;

use crate::backend::ZkBackend;
use crate::held::ZkHeld;
use crate::path;
use crate::session::{Session, outcome_unknown};

/// How often a contender creation is retried when `clean` removed the lock
/// directory between creating the directory and creating the contender.
const CREATE_ATTEMPTS: usize = 10;

/// Pause between attempts to open a session within a wait's timeout.
const REOPEN_PAUSE: Duration = Duration::from_millis(100);

impl ZkBackend {
    pub(crate) async fn acquire_now(
        &self,
        request: &LockRequest,
        dir: String,
    ) -> Result<LockGuard> {
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
            // How many contenders are ahead, for the caller's acquire span.
            tracing::Span::current().record("queue_position", smaller);
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
