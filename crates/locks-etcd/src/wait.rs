//! Waiting for a key to go away, by a watch.

use std::time::Duration;

use etcd_client::{EventType, WatchFilterType, WatchOptions};
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

/// Waits until `key` is deleted at a revision >= `start_revision`, or `lease`
/// is lost. A server that cannot be reached gives [`Watched::Retry`] while the
/// lease lives, so queued waiters ride out a restart shorter than the TTL. Creating the watch is bounded by the request timeout; the wait
/// itself is not (the caller's [`Wait`](locks_core::Wait) bounds it).
///
/// Cancel safe: dropping the future drops the watch.
pub(crate) async fn until_deleted(
    core: &Core,
    key: &[u8],
    start_revision: i64,
    lease: &Lease,
) -> Result<Watched> {
    let options = WatchOptions::new()
        .with_start_revision(start_revision)
        .with_filters([WatchFilterType::NoPut]);
    let mut watcher = core.client.watch_client();
    let mut stream = match core
        .call(
            "watching a lock key",
            watcher.watch(key.to_vec(), Some(options)),
        )
        .await
    {
        Ok(stream) => stream,
        // The server is restarting or briefly unreachable: the caller looks
        // again after a pause, for as long as its lease lives.
        Err(e) if e.kind() == ErrorKind::Unavailable && !lease.is_lost() => {
            return Ok(Watched::Retry);
        }
        Err(e) => return Err(e),
    };
    loop {
        tokio::select! {
            message = stream.message() => match message {
                Ok(Some(response)) => {
                    if response
                        .events()
                        .iter()
                        .any(|event| event.event_type() == EventType::Delete)
                    {
                        return Ok(Watched::Deleted);
                    }
                    if response.canceled() {
                        return Ok(Watched::Retry);
                    }
                }
                Ok(None) | Err(_) => return Ok(Watched::Retry),
            },
            () = lease.lost() => return Ok(Watched::LeaseLost),
        }
    }
}
