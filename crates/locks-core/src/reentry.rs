//! Detection of a task (or thread) asking for a lock it already holds.
//!
//! A lock is not re-entrant: the second acquire would wait for the first
//! release, which the same caller can never perform. The registry turns that
//! hang into an immediate [`ErrorKind::WouldDeadlock`].
//!
//! What is detected: the same tokio task (by [`tokio::task::Id`]) or, outside
//! a task, the same OS thread asking again for a name in the same scope it
//! holds through the same registry (one `Locks` client). Not detected: cycles
//! between different tasks (A holds x and waits for y while B holds y and
//! waits for x; use [`lock_many`](crate::MultiGuard) to take sets in one
//! order), and re-entry through two separate clients. A guard moved to another
//! task still counts for the task that acquired it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::ThreadId;

use crate::{Error, ErrorKind, LockGuard, LockName, Result, Scope};

/// Who is asking: a tokio task, or a thread outside any task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HolderId {
    /// A tokio task.
    Task(tokio::task::Id),
    /// An OS thread not running a tokio task (blocking callers, C callers).
    Thread(ThreadId),
}

impl HolderId {
    /// The caller running now.
    pub fn current() -> Self {
        match tokio::task::try_id() {
            Some(id) => HolderId::Task(id),
            None => HolderId::Thread(std::thread::current().id()),
        }
    }
}

type Held = HashMap<(Scope, LockName), Vec<HolderId>>;

/// Remembers which caller holds which lock, per client.
#[derive(Debug, Clone, Default)]
pub struct ReentryRegistry {
    held: Arc<Mutex<Held>>,
}

impl ReentryRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Fails if the current caller already holds `name` in `scope`; otherwise
    /// returns the caller's id for [`track`](Self::track).
    ///
    /// # Errors
    /// [`ErrorKind::WouldDeadlock`].
    pub fn check(&self, scope: Scope, name: &LockName) -> Result<HolderId> {
        let me = HolderId::current();
        let held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        if held
            .get(&(scope, name.clone()))
            .is_some_and(|holders| holders.contains(&me))
        {
            return Err(Error::new(
                ErrorKind::WouldDeadlock,
                format!(
                    "this task already holds lock `{name}`; acquiring it again would wait \
                     for itself forever. Release it first, or call the unlocked variant of the operation"
                ),
            ));
        }
        Ok(me)
    }

    /// Records that `holder` now holds the guard's lock, until the guard is
    /// released or dropped. `scope` is the scope passed to [`check`](Self::check)
    /// (a client whose scopes share one backend checks them as one).
    pub fn track(&self, holder: HolderId, scope: Scope, guard: &mut LockGuard) {
        let key = (scope, guard.name().clone());
        self.held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(key.clone())
            .or_default()
            .push(holder);
        guard.attach_ticket(ReentryTicket {
            registry: Arc::clone(&self.held),
            key,
            holder,
        });
    }

    /// How many (scope, name) pairs are currently held through this registry.
    pub fn held_count(&self) -> usize {
        self.held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

/// Removes a registry entry when its guard goes away.
#[derive(Debug)]
pub(crate) struct ReentryTicket {
    registry: Arc<Mutex<Held>>,
    key: (Scope, LockName),
    holder: HolderId,
}

impl Drop for ReentryTicket {
    fn drop(&mut self) {
        let mut held = self.registry.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(holders) = held.get_mut(&self.key) {
            if let Some(pos) = holders.iter().position(|h| *h == self.holder) {
                holders.swap_remove(pos);
            }
            if holders.is_empty() {
                held.remove(&self.key);
            }
        }
    }
}
