//! [`LocalLocks`]: one FIFO async mutex per key, for the in-process half of
//! every backend.
//!
//! Backends put it in front of their mechanism so that two tasks of one
//! process asking for one name take turns in the order they asked, and the
//! process has at most one contender (lock file descriptor, etcd key,
//! ZooKeeper node) per name. The memory backend is nothing else. Entries exist
//! only while somebody holds or waits for their key, so any number of
//! distinct names can pass through without memory growing.

use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

struct Slot {
    mutex: Arc<AsyncMutex<()>>,
    /// Holders plus waiters; the slot goes away when this reaches zero.
    users: usize,
}

type Table<K> = Arc<Mutex<HashMap<K, Slot>>>;

/// A table of per-key FIFO async mutexes; cheap to clone, clones share it.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let locks = locks_core::LocalLocks::<String>::new();
/// let turn = locks.lock(&"vol-1".to_owned()).await;
/// assert!(locks.try_lock(&"vol-1".to_owned()).is_none());
/// drop(turn);
/// assert_eq!(locks.len(), 0);
/// # });
/// ```
pub struct LocalLocks<K> {
    table: Table<K>,
}

impl<K> Clone for LocalLocks<K> {
    fn clone(&self) -> Self {
        LocalLocks {
            table: Arc::clone(&self.table),
        }
    }
}

impl<K> Default for LocalLocks<K> {
    fn default() -> Self {
        LocalLocks {
            table: Arc::default(),
        }
    }
}

impl<K> fmt::Debug for LocalLocks<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let active = self
            .table
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len();
        f.debug_struct("LocalLocks")
            .field("active", &active)
            .finish()
    }
}

impl<K: Hash + Eq + Clone + Send + 'static> LocalLocks<K> {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Waits for the turn on `key`, after everyone who asked before.
    ///
    /// # Cancel safety
    /// Cancel safe: a dropped future leaves the queue, and the entry goes
    /// away if nobody else uses it.
    pub async fn lock(&self, key: &K) -> LocalTurn<K> {
        let membership = self.enter(key);
        let guard = Arc::clone(&membership.mutex).lock_owned().await;
        LocalTurn {
            _guard: guard,
            _membership: membership,
        }
    }

    /// Takes the turn on `key` if nobody holds it right now; `None` otherwise.
    pub fn try_lock(&self, key: &K) -> Option<LocalTurn<K>> {
        let membership = self.enter(key);
        let guard = Arc::clone(&membership.mutex).try_lock_owned().ok()?;
        Some(LocalTurn {
            _guard: guard,
            _membership: membership,
        })
    }

    /// How many keys are held or waited for right now (for leak checks).
    pub fn len(&self) -> usize {
        self.table
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// How many keys the table has room for without growing (for tests that
    /// memory stays flat).
    #[doc(hidden)]
    pub fn capacity(&self) -> usize {
        self.table
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .capacity()
    }

    /// Whether no key is held or waited for.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn enter(&self, key: &K) -> Membership<K> {
        let mut table = self.table.lock().unwrap_or_else(PoisonError::into_inner);
        let slot = table.entry(key.clone()).or_insert_with(|| Slot {
            mutex: Arc::new(AsyncMutex::new(())),
            users: 0,
        });
        slot.users += 1;
        Membership {
            table: Arc::clone(&self.table),
            key: key.clone(),
            mutex: Arc::clone(&slot.mutex),
        }
    }
}

/// Keeps a slot in the table while it lives.
struct Membership<K: Hash + Eq> {
    table: Table<K>,
    key: K,
    mutex: Arc<AsyncMutex<()>>,
}

impl<K: Hash + Eq> Drop for Membership<K> {
    fn drop(&mut self) {
        let mut table = self.table.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(slot) = table.get_mut(&self.key) {
            slot.users = slot.users.saturating_sub(1);
            if slot.users == 0 {
                table.remove(&self.key);
            }
        }
    }
}

/// The turn on one key. Dropping it lets the next task in.
#[must_use = "the turn ends when this is dropped"]
pub struct LocalTurn<K: Hash + Eq> {
    // Field order matters: the mutex is unlocked before the slot may be removed.
    _guard: OwnedMutexGuard<()>,
    _membership: Membership<K>,
}

impl<K: Hash + Eq + fmt::Debug> fmt::Debug for LocalTurn<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalTurn")
            .field("key", &self._membership.key)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn turns_are_fifo_and_the_table_empties() {
        let locks = LocalLocks::<u32>::new();
        let first = locks.lock(&1).await;
        assert!(locks.try_lock(&1).is_none());
        assert!(locks.try_lock(&2).is_some(), "other keys are independent");
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut waiters = Vec::new();
        for i in 0..3 {
            let (locks, order) = (locks.clone(), order.clone());
            waiters.push(tokio::spawn(async move {
                let _turn = locks.lock(&1).await;
                order.lock().unwrap().push(i);
            }));
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        drop(first);
        for w in waiters {
            w.await.unwrap();
        }
        assert_eq!(*order.lock().unwrap(), [0, 1, 2]);
        assert!(locks.is_empty());
    }

    #[tokio::test]
    async fn a_cancelled_waiter_leaves_no_entry() {
        let locks = LocalLocks::<u32>::new();
        let held = locks.lock(&7).await;
        assert!(
            tokio::time::timeout(Duration::from_millis(10), locks.lock(&7))
                .await
                .is_err()
        );
        drop(held);
        assert!(locks.is_empty());
    }
}
