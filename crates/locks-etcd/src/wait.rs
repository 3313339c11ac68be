//! Waiting for a key to go away, by a watch.

use std::time::Duration;

use etcd_client::{EventType, GetOptions, WatchFilterType, WatchOptions};
use locks_core::{ErrorKind, Result};

use crate::core::{Core, Lease};

/// How a wait for a delete ended.
pub(crate) enum Watched {
    /// The key was deleted (released, or expired with its lease).
    Deleted,
    /// The watch ended without an answer (stream broken, compacted start
    /// revision): look again.
    Retry,
    /// Our own lease was lost meanwhile.
    LeaseLost,
}

/// Pause before looking again after a broken watch, so a flapping server is
/// not hammered.
pub(crate) const RETRY_PAUSE: Duration = Duration::from_millis(100);

/// Waits until `key`, seen with create revision `create_revision` at
/// revision `seen_revision`, is deleted (or replaced), or `lease` is lost. A
/// server that cannot be reached gives [`Watched::Retry`] while the lease
/// lives (so queued waiters ride out a restart shorter than the TTL), and
/// [`Watched::LeaseLost`] afterwards. Creating
/// the watch is bounded by the request timeout; the wait itself is not (the
/// caller's [`Wait`](locks_core::Wait) bounds it).
///
/// The watch starts at the server's current revision, not at
/// `seen_revision + 1`: etcd puts a watch whose start revision is already
/// past into its "unsynced" group, which it catches up only every 100 ms, so
/// under contention (other contenders writing between our read and the
/// watch) the delete would arrive up to 100 ms late. If the server moved on
/// between `seen_revision` and the watch, one read closes the gap: the key
/// gone or recreated then counts as deleted.
///
/// Cancel safe: dropping the future drops the watch.
pub(crate) async fn until_deleted(
    core: &Core,
    key: &[u8],
    create_revision: i64,
    seen_revision: i64,
    lease: &Lease,
) -> Result<Watched> {
    let opened = |client: etcd_client::Client| async move {
        let options = WatchOptions::new().with_filters([WatchFilterType::NoPut]);
        let mut stream = client
            .watch_client()
            .watch(key.to_vec(), Some(options))
            .await?;
        // The first message confirms the watch, with the revision from which
        // on it reports every delete.
        let created = stream.message().await?;
        Ok::<_, etcd_client::Error>((stream, created))
    };
    let (mut stream, created) = match core.call("watching a lock key", opened).await {
        Ok(opened) => opened,
        // The server is restarting or briefly unreachable: the caller looks
        // again after a pause, for as long as its lease lives.
        Err(e) if e.kind() == ErrorKind::Unavailable => {
            return Ok(if lease.is_lost() {
                Watched::LeaseLost
            } else {
                Watched::Retry
            });
        }
        Err(e) => return Err(e),
    };
    // The member that served the watch (a success leaves requests where
    // they are).
    let member = core.members.current();
    let Some(created) = created else {
        return Ok(Watched::Retry);
    };
    if has_delete(&created) {
        return Ok(Watched::Deleted);
    }
    if created.canceled() || !created.created() {
        return Ok(Watched::Retry);
    }
    let watched_from = created.header().map_or(i64::MAX, |h| h.revision());
    if watched_from > seen_revision {
        // Writes happened between our read and the watch: the key may have
        // gone in that gap, where the watch does not look.
        let got = match core
            .call("checking a lock key", |client| async move {
                client
                    .kv_client()
                    .get(key.to_vec(), Some(GetOptions::new().with_keys_only()))
                    .await
            })
            .await
        {
            Ok(got) => got,
            Err(e) if e.kind() == ErrorKind::Unavailable => {
                return Ok(if lease.is_lost() {
                    Watched::LeaseLost
                } else {
                    Watched::Retry
                });
            }
            Err(e) => return Err(e),
        };
        match got.kvs().first() {
            Some(kv) if kv.create_revision() == create_revision => {}
            _ => return Ok(Watched::Deleted),
        }
    }
    loop {
        tokio::select! {
            message = stream.message() => match message {
                Ok(Some(response)) => {
                    if has_delete(&response) {
                        return Ok(Watched::Deleted);
                    }
                    if response.canceled() {
                        return Ok(Watched::Retry);
                    }
                }
                Ok(None) | Err(_) => return Ok(Watched::Retry),
            },
            () = lease.lost() => return Ok(Watched::LeaseLost),
            // Requests failed over to another member (the keep-alive found
            // this one unreachable, say): the watch may be stuck on a dead
            // connection, so look again there.
            () = core.members.moved_from(member) => return Ok(Watched::Retry),
        }
    }
}

fn has_delete(response: &etcd_client::WatchResponse) -> bool {
    response
        .events()
        .iter()
        .any(|event| event.event_type() == EventType::Delete)
}
