//! What an acquire leaves behind: the key while it may be ours (deleted if
//! the acquire fails or is dropped), and the held lock afterwards, kept alive
//! by the backend's refresh task (`refresh`), which reports `AtRisk` and `Lost`.

use std::sync::Arc;

use locks_core::{
    Error, ErrorKind, HeldLock, LocalTurn, LockName, LockState, LockStateSender, Result,
    async_trait,
};
use tokio::time::Instant;

use crate::core::Core;
use crate::refresh::HoldId;

/// The state of one acquire in progress. Dropped while our key may exist (the
/// acquire failed after sending, timed out or was cancelled), it deletes the
/// key in the background, keeping the local turn on the name until then.
pub(crate) struct Contender {
    core: Arc<Core>,
    local: Option<LocalTurn<LockName>>,
    pub(crate) key: String,
    pub(crate) token: String,
    /// A request of ours that may have set the key was sent.
    pub(crate) armed: bool,
}

impl Contender {
    /// A contender for `key` whose token names `identity` (`host:pid[:label]`).
    pub(crate) fn new(
        core: Arc<Core>,
        local: LocalTurn<LockName>,
        key: String,
        identity: &str,
    ) -> Self {
        let token = format!(
            "{}{}:{identity}",
            crate::core::TOKEN_PREFIX,
            uuid::Uuid::new_v4().simple()
        );
        Contender {
            core,
            local: Some(local),
            key,
            token,
            armed: false,
        }
    }

    /// The acquire succeeded with the request sent at `sent`: the key
    /// becomes a held lock, refreshed by the backend's refresh task.
    pub(crate) fn into_held(mut self, name: &LockName, sent: Instant) -> RedisHeld {
        self.armed = false;
        let state = LockStateSender::new();
        let hold = self.core.refresher.hold(
            Arc::from(self.key.as_str()),
            Arc::from(self.token.as_str()),
            state.clone(),
            sent,
        );
        RedisHeld {
            core: Arc::clone(&self.core),
            name: name.clone(),
            key: std::mem::take(&mut self.key),
            token: std::mem::take(&mut self.token),
            state,
            hold,
            local: self.local.take(),
            settled: false,
        }
    }
}

impl Drop for Contender {
    fn drop(&mut self) {
        let local = self.local.take();
        if self.armed {
            self.core.release_in_background(
                std::mem::take(&mut self.key),
                std::mem::take(&mut self.token),
                local,
            );
        }
    }
}

/// A lock held in Redis: our key and token, its entry in the backend's
/// refresh table (removed when this is released or dropped), and the local
/// turn on the name.
pub(crate) struct RedisHeld {
    core: Arc<Core>,
    name: LockName,
    key: String,
    token: String,
    state: LockStateSender,
    hold: HoldId,
    local: Option<LocalTurn<LockName>>,
    /// The key was deleted or handed to a background delete. Until then,
    /// dropping this (a release cancelled half way) deletes it in the background.
    settled: bool,
}

impl RedisHeld {
    /// A receiver of this lock's state.
    pub(crate) fn state(&self) -> tokio::sync::watch::Receiver<LockState> {
        self.state.subscribe()
    }
}

impl Drop for RedisHeld {
    fn drop(&mut self) {
        self.core.refresher.forget(self.hold);
        if !self.settled {
            self.settled = true;
            let local = self.local.take();
            self.core.release_in_background(
                std::mem::take(&mut self.key),
                std::mem::take(&mut self.token),
                local,
            );
        }
    }
}

impl std::fmt::Debug for RedisHeld {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisHeld")
            .field("name", &self.name)
            .field("key", &self.key)
            .field("state", &self.state.get())
            .finish()
    }
}

#[async_trait]
impl HeldLock for RedisHeld {
    async fn release(mut self: Box<Self>) -> Result<()> {
        let lost = self.state.get() == LockState::Lost;
        let released = self.core.release(&self.key, &self.token).await;
        self.settled = true;
        let local = self.local.take();
        match released {
            Ok(true) if !lost => Ok(()),
            Ok(_) => Err(Error::new(
                ErrorKind::Lost,
                format!(
                    "lock `{}`: its key `{}` had expired or been taken over at redis {} before the \
                     release (the holder could not refresh it within the lock timeout of {:?}): \
                     another holder may have run concurrently",
                    self.name, self.key, self.core.conn.describe, self.core.lock_timeout
                ),
            )),
            Err(e) => {
                // Keep trying in the background; the local turn keeps the
                // name locked here until then, the expiry at the latest.
                let (key, token) = (self.key.clone(), self.token.clone());
                self.core.release_in_background(key, token, local);
                let message = format!(
                    "releasing lock `{}`: {}; retrying in the background (the key expires within {:?} at the latest)",
                    self.name,
                    e.message(),
                    self.core.lock_timeout
                );
                Err(Error::new(e.kind(), message).with_source(e))
            }
        }
    }

    fn release_on_drop(self: Box<Self>) {
        // `Drop` hands the key to a background delete.
        drop(self);
    }
}
