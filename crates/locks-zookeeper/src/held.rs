//! A held lock: our contender node, the session it lives in and the
//! in-process claim; released by deleting the node.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use locks_core::{Error, ErrorKind, HeldLock, LocalTurn, LockName, Result, async_trait};
use zookeeper_client as zk;

use crate::session::{Session, outcome_unknown};

/// A held lock: our node, the session it lives in, and the in-process claim.
pub(crate) struct ZkHeld {
    pub(crate) session: Arc<Session>,
    pub(crate) path: String,
    pub(crate) turn: Option<LocalTurn<LockName>>,
    /// The node was deleted (or found gone). Until then, dropping this (a
    /// release future cancelled half way, or a dropped guard) deletes it in
    /// the background.
    pub(crate) settled: bool,
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
