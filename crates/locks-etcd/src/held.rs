//! What an acquire leaves behind: the contender key while it runs (removed if
//! the acquire fails or is dropped) and the held lock afterwards.

use std::sync::Arc;

use locks_core::{Error, ErrorKind, HeldLock, LockName, Result, async_trait};

use crate::core::{Check, Core, OwnedKey};
use locks_core::LocalTurn;

/// The state of one acquire in progress. Dropped while a key of ours may
/// exist in etcd (the acquire failed, timed out or was cancelled), it deletes
/// that key in the background, keeping the local turn on the name until the
/// delete is done.
pub(crate) struct Contender {
    core: Arc<Core>,
    local: Option<LocalTurn<LockName>>,
    key: Option<OwnedKey>,
}

impl Contender {
    pub(crate) fn new(core: Arc<Core>, local: LocalTurn<LockName>) -> Self {
        Contender {
            core,
            local: Some(local),
            key: None,
        }
    }

    /// From now on a key of ours may exist: delete it if the acquire does not finish.
    pub(crate) fn arm(&mut self, owned: OwnedKey) {
        self.key = Some(owned);
    }

    /// Narrows how the key is recognised once its create revision is known.
    pub(crate) fn set_check(&mut self, check: Check) {
        if let Some(owned) = &mut self.key {
            owned.check = check;
        }
    }

    /// No key of ours exists (any more).
    pub(crate) fn disarm(&mut self) {
        self.key = None;
    }

    /// Deletes our key now. On failure the key stays armed, so dropping the
    /// contender retries in the background.
    pub(crate) async fn withdraw(&mut self) -> Result<()> {
        if let Some(owned) = &self.key {
            self.core.delete_owned(owned).await?;
        }
        self.key = None;
        Ok(())
    }

    /// The acquire succeeded: the key becomes a held lock.
    pub(crate) fn into_held(mut self, name: &LockName) -> Result<EtcdHeld> {
        let (Some(owned), Some(local)) = (self.key.take(), self.local.take()) else {
            return Err(Error::new(
                ErrorKind::Internal,
                format!("etcd: acquiring `{name}` finished without a key (a bug in locks-etcd)"),
            ));
        };
        Ok(EtcdHeld {
            core: Arc::clone(&self.core),
            name: name.clone(),
            owned,
            local: Some(local),
            settled: false,
        })
    }
}

impl Drop for Contender {
    fn drop(&mut self) {
        let local = self.local.take();
        if let Some(owned) = self.key.take() {
            self.core.delete_in_background(owned, local);
        }
    }
}

/// A lock held in etcd: our key, the lease it lives on, and the local turn on
/// the name.
pub(crate) struct EtcdHeld {
    core: Arc<Core>,
    name: LockName,
    owned: OwnedKey,
    local: Option<LocalTurn<LockName>>,
    /// The key was deleted, handed to a background delete, or went with the
    /// lease. Until then, dropping this (a release future cancelled half way)
    /// deletes the key in the background.
    settled: bool,
}

impl Drop for EtcdHeld {
    fn drop(&mut self) {
        if !self.settled {
            self.settled = true;
            let local = self.local.take();
            self.core.delete_in_background(self.owned.clone(), local);
        }
    }
}

impl EtcdHeld {
    /// A receiver of the state of the lease this lock lives on.
    pub(crate) fn lease_state(&self) -> tokio::sync::watch::Receiver<locks_core::LockState> {
        self.owned.lease.state.subscribe()
    }
}

impl std::fmt::Debug for EtcdHeld {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdHeld")
            .field("name", &self.name)
            .field("key", &String::from_utf8_lossy(&self.owned.key))
            .field("lease", &format_args!("{:x}", self.owned.lease.id))
            .finish()
    }
}

#[async_trait]
impl HeldLock for EtcdHeld {
    async fn release(mut self: Box<Self>) -> Result<()> {
        if self.owned.lease.is_lost() {
            self.settled = true;
            // The key went (or is about to go) with the lease; a request
            // would only wait for a server that may be gone.
            return Err(Error::new(
                ErrorKind::Lost,
                format!(
                    "lock `{}`: the lease it lived on expired before the release \
                     (etcd at {} was unreachable or paused for longer than the ttl): \
                     another holder may have run concurrently",
                    self.name, self.core.endpoints
                ),
            ));
        }
        let deleted = self.core.delete_owned(&self.owned).await;
        self.settled = true;
        let local = self.local.take();
        match deleted {
            Ok(true) => Ok(()),
            Ok(false) => Err(Error::new(
                ErrorKind::Lost,
                format!(
                    "lock `{}`: its key `{}` was already gone from etcd at {} when it was released \
                     (the lease expired or someone deleted the key): another holder may have run concurrently",
                    self.name,
                    String::from_utf8_lossy(&self.owned.key),
                    self.core.endpoints
                ),
            )),
            Err(e) => {
                // Keep trying while the lease lives; until then the key (and
                // the local turn) keep the name locked.
                let owned = self.owned.clone();
                self.core.delete_in_background(owned, local);
                let message = format!(
                    "releasing lock `{}`: {}; retrying in the background (the key expires with the lease at the latest)",
                    self.name,
                    e.message()
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
