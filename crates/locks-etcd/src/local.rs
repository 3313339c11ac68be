//! The in-process lock in front of etcd: one FIFO async mutex per name.
//!
//! etcd's mutex is re-entrant per lease, and all locks of one backend share
//! one lease, so two tasks of one backend asking for one name would both
//! "hold" it. The local mutex makes them take turns, and guarantees at most
//! one contender key per name per backend. Entries live only while a task
//! holds or waits for the name.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use locks_core::LockName;
use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

struct Slot {
    mutex: Arc<AsyncMutex<()>>,
    /// Holders plus waiters; the slot goes away when this reaches zero.
    users: usize,
}

type Table = Arc<Mutex<HashMap<LockName, Slot>>>;

/// The per-backend table of local mutexes.
#[derive(Default)]
pub(crate) struct LocalTable {
    table: Table,
}

impl LocalTable {
    /// Waits for the local turn on `name`.
    ///
    /// Cancel safe: a dropped future leaves the queue and the table.
    pub(crate) async fn lock(&self, name: &LockName) -> LocalGuard {
        let membership = self.enter(name);
        let guard = Arc::clone(&membership.mutex).lock_owned().await;
        LocalGuard {
            _guard: guard,
            _membership: membership,
        }
    }

    /// Takes the local turn on `name` if nobody in this backend has it.
    pub(crate) fn try_lock(&self, name: &LockName) -> Option<LocalGuard> {
        let membership = self.enter(name);
        let guard = Arc::clone(&membership.mutex).try_lock_owned().ok()?;
        Some(LocalGuard {
            _guard: guard,
            _membership: membership,
        })
    }

    /// How many names are held or waited for in this process.
    pub(crate) fn len(&self) -> usize {
        self.table
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    fn enter(&self, name: &LockName) -> Membership {
        let mut table = self.table.lock().unwrap_or_else(PoisonError::into_inner);
        let slot = table.entry(name.clone()).or_insert_with(|| Slot {
            mutex: Arc::new(AsyncMutex::new(())),
            users: 0,
        });
        slot.users += 1;
        Membership {
            table: Arc::clone(&self.table),
            name: name.clone(),
            mutex: Arc::clone(&slot.mutex),
        }
    }
}

/// Keeps a slot in the table while it lives.
struct Membership {
    table: Table,
    name: LockName,
    mutex: Arc<AsyncMutex<()>>,
}

impl Drop for Membership {
    fn drop(&mut self) {
        let mut table = self.table.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(slot) = table.get_mut(&self.name) {
            slot.users = slot.users.saturating_sub(1);
            if slot.users == 0 {
                table.remove(&self.name);
            }
        }
    }
}

/// The local turn on one name. Dropping it lets the next local task in.
pub(crate) struct LocalGuard {
    // Field order: the mutex is unlocked before the slot may be removed.
    _guard: OwnedMutexGuard<()>,
    _membership: Membership,
}

impl std::fmt::Debug for LocalGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalGuard")
            .field("name", &self._membership.name)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn turns_exclude_and_the_table_empties() {
        let table = LocalTable::default();
        let name = LockName::new("x").unwrap();
        let first = table.lock(&name).await;
        assert!(table.try_lock(&name).is_none());
        assert_eq!(table.len(), 1);
        let waiting = tokio::time::timeout(std::time::Duration::from_millis(20), table.lock(&name));
        assert!(waiting.await.is_err());
        drop(first);
        assert_eq!(table.len(), 0);
        let again = table.try_lock(&name).expect("free again");
        drop(again);
        assert_eq!(table.len(), 0);
    }
}
