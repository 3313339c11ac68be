//! [`Backend::status`](locks_core::Backend::status) for ZooKeeper: the
//! contender nodes of a lock's directory, read and never written.
//!
//! The contenders are the children kazoo counts (see [`path`]), in sequence
//! order: the first holds the lock, the others wait in that order. For each,
//! the node's data is the identity our backend writes
//! (`host:pid[:catalog-id]`, parsed by [`Party::from_identity`]), its `ctime`
//! is since when it holds or waits, and its `czxid` is the fencing token its
//! guard has (or will have, for a waiter). A node whose data is not such an
//! identity was made by kazoo (tooz, Cinder) or another client: its host and
//! pid stay unknown and a note says so.

use std::time::{Duration, SystemTime};

use locks_core::{Error, ErrorKind, Excerpt, LockName, LockStatus, Party, Result, Scope};
use zookeeper_client as zk;

use crate::backend::ZkBackend;
use crate::path;
use crate::session::Session;

/// Who holds `name` and who waits for it, bounded by the backend's
/// `connect_timeout`.
pub(crate) async fn status(
    backend: &ZkBackend,
    name: &LockName,
    scope: Scope,
    describe: String,
) -> Result<LockStatus> {
    let dir = backend.lock_dir(name)?;
    let limit = backend.config().connect_timeout;
    let reading = async {
        let session = backend.current_session().await?;
        read(&session, name, scope, describe, &dir).await
    };
    match tokio::time::timeout(limit, reading).await {
        Ok(result) => result,
        Err(_) => Err(Error::new(
            ErrorKind::Unavailable,
            format!(
                "reading who holds lock `{name}` ({dir}) on {}: no answer within {limit:?}; check that the ZooKeeper servers run and are reachable, then retry",
                backend.config().describe()
            ),
        )),
    }
}

async fn read(
    session: &Session,
    name: &LockName,
    scope: Scope,
    describe: String,
    dir: &str,
) -> Result<LockStatus> {
    let mut status = LockStatus::free(name.clone(), scope, describe);
    let client = session.client()?;
    let children = match session.list(&client, dir).await {
        Ok(children) => children,
        Err(zk::Error::NoNode) => return Ok(status),
        Err(e) => return Err(session.error(format_args!("listing lock directory {dir}"), e)),
    };
    let mut contenders: Vec<(String, String)> = children
        .into_iter()
        .filter_map(|child| {
            let sequence = path::contender_sequence(&child)?.to_owned();
            Some((sequence, child))
        })
        .collect();
    // As the recipe (and kazoo) compare them: as strings.
    contenders.sort();
    // Every read leaves before the first answer is awaited.
    let pending: Vec<_> = contenders
        .iter()
        .map(|(_, child)| client.get_data(&format!("{dir}/{child}")))
        .collect();
    let mut foreign = 0usize;
    let mut first_foreign: Option<String> = None;
    let here = locks_core::host_name();
    for ((_, child), answer) in contenders.iter().zip(pending) {
        let (data, stat) = match answer.await {
            Ok(found) => found,
            // Released or given up since the listing: no longer a contender.
            Err(zk::Error::NoNode) => continue,
            Err(e) => {
                return Err(session.error(format_args!("reading lock node {dir}/{child}"), e));
            }
        };
        let text = String::from_utf8_lossy(&data);
        let mut party = Party::from_identity(&text);
        if party.pid.is_none() {
            foreign += 1;
            first_foreign.get_or_insert_with(|| text.into_owned());
        } else if party.host.as_deref() == Some(here.as_str()) {
            // A live session's node on this host: the pid is a running process.
            party.program = party.pid.and_then(locks_core::program_of);
        }
        party.since = u64::try_from(stat.ctime)
            .ok()
            .map(|ms| SystemTime::UNIX_EPOCH + Duration::from_millis(ms));
        party.token = u64::try_from(stat.czxid).ok();
        if status.holder.is_none() {
            status.holder = Some(party);
        } else {
            status.waiters.push(party);
        }
    }
    if let Some(data) = first_foreign {
        let holder_foreign = status.holder.as_ref().is_some_and(|h| h.pid.is_none());
        let whose = if holder_foreign {
            "the holder is not a client of this library"
        } else {
            "a waiter is not a client of this library"
        };
        status.notes.push(format!(
            "{whose} ({foreign} contender(s) whose node data {} is not `host:pid`: kazoo, as tooz and Cinder use it, or another client): their host and pid are unknown",
            Excerpt::quoted(&data)
        ));
    }
    if status.holder.is_some() {
        status.notes.push(
            "program names are known only for contenders on this host; `since` is the node's creation time on the server"
                .to_owned(),
        );
    }
    Ok(status)
}

/// How many listings the walk of [`all`] keeps in flight at once.
const WALK_BATCH: usize = 512;

/// Every lock with a contender under the namespace's lock root, as
/// [`status`] tells each, within the backend's `connect_timeout`.
pub(crate) async fn all(
    backend: &ZkBackend,
    scope: Scope,
    describe: String,
) -> Result<Vec<LockStatus>> {
    let root = path::locks_root(&backend.config().namespace);
    let limit = backend.config().connect_timeout;
    let walking = async {
        let session = backend.current_session().await?;
        let mut statuses = Vec::new();
        for dir in busy_dirs(&session, &root).await? {
            let Some(name) = dir
                .strip_prefix(root.as_str())
                .and_then(|rest| rest.strip_prefix('/'))
                .and_then(|rest| LockName::new(rest).ok())
            else {
                continue;
            };
            let status = read(&session, &name, scope, describe.clone(), &dir).await?;
            // Released since the walk saw it: nothing to show.
            if status.is_held() || !status.waiters.is_empty() {
                statuses.push(status);
            }
        }
        Ok(statuses)
    };
    match tokio::time::timeout(limit, walking).await {
        Ok(result) => result,
        Err(_) => Err(Error::new(
            ErrorKind::Unavailable,
            format!(
                "listing the locks under {root} on {}: not done within {limit:?}; check that the ZooKeeper servers run and are reachable, then retry",
                backend.config().describe()
            ),
        )),
    }
}

/// The directories under `root` that hold a contender, walked breadth first
/// with up to [`WALK_BATCH`] listings in flight.
async fn busy_dirs(session: &Session, root: &str) -> Result<Vec<String>> {
    let client = session.client()?;
    let mut busy = Vec::new();
    let mut next = vec![root.to_owned()];
    while !next.is_empty() {
        let mut below = Vec::new();
        for chunk in next.chunks(WALK_BATCH) {
            let pending: Vec<_> = chunk.iter().map(|dir| client.list_children(dir)).collect();
            for (dir, answer) in chunk.iter().zip(pending) {
                let children = match answer.await {
                    Ok(children) => children,
                    Err(zk::Error::NoNode) => continue,
                    Err(e) => {
                        return Err(session.error(format_args!("listing lock directory {dir}"), e));
                    }
                };
                let mut contenders = false;
                for child in children {
                    if path::contender_sequence(&child).is_some() {
                        contenders = true;
                    } else {
                        below.push(format!("{dir}/{child}"));
                    }
                }
                if contenders && dir != root {
                    busy.push(dir.clone());
                }
            }
        }
        next = below;
    }
    busy.sort();
    Ok(busy)
}
