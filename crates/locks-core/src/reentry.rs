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

use std::fmt;

use std::sync::Arc;
use std::thread::ThreadId;

use hashbrown::HashTable;

use crate::shard::Sharded;
use crate::{Error, ErrorKind, LockName, Result, Scope};

/// Who is asking: a tokio task, or a thread outside any task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HolderId {
    /// A tokio task.
    Task(tokio::task::Id),
    /// An OS thread not running a tokio task (blocking callers, C callers).
    Thread(ThreadId),
}

thread_local! {
    static THREAD: ThreadId = std::thread::current().id();
}

impl HolderId {
    /// The caller running now.
    pub fn current() -> Self {
        match tokio::task::try_id() {
            Some(id) => HolderId::Task(id),
            None => HolderId::Thread(THREAD.with(|id| *id)),
        }
    }
}

/// The holders of one (scope, name). Almost always one: a second appears only
/// for the moment between a dropped guard letting the next holder in and its
/// own entry going away.
struct Entry {
    scope: Scope,
    name: LockName,
    hash: u64,
    first: HolderId,
    more: Vec<HolderId>,
}

type Shared = Sharded<HashTable<Entry>>;

/// The [`ErrorKind::WouldDeadlock`] error for the current caller asking
/// again for `name`, in the words of what the caller is: a task, or a thread
/// (blocking callers, C and Go).
pub(crate) fn would_deadlock(name: &LockName) -> Error {
    let caller = match HolderId::current() {
        HolderId::Task(_) => "task",
        HolderId::Thread(_) => "thread",
    };
    Error::new(
        ErrorKind::WouldDeadlock,
        format!(
            "this {caller} already holds lock `{name}`; acquiring it again would wait \
             for itself forever. Release it first, or do the work that needs it without \
             taking the lock again"
        ),
    )
}

fn hash(shared: &Shared, scope: Scope, name: &str) -> u64 {
    shared.hash(&(scope, name))
}

/// Remembers which caller holds which lock, per client.
#[derive(Clone)]
pub struct ReentryRegistry {
    held: Arc<Shared>,
}

impl Default for ReentryRegistry {
    fn default() -> Self {
        ReentryRegistry {
            held: Arc::new(Sharded::new(HashTable::new)),
        }
    }
}

impl fmt::Debug for ReentryRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReentryRegistry")
            .field("held", &self.held_count())
            .finish()
    }
}

impl ReentryRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Fails if the current caller already holds `name` in `scope`; otherwise
    /// returns the caller's id for [`LockGuard::track_in`](crate::LockGuard::track_in).
    ///
    /// # Errors
    /// [`ErrorKind::WouldDeadlock`].
    pub fn check(&self, scope: Scope, name: &LockName) -> Result<HolderId> {
        let me = HolderId::current();
        let hash = hash(&self.held, scope, name.as_str());
        let held = self.held.lock(hash);
        let mine = held
            .find(hash, |e| {
                e.hash == hash && e.scope == scope && e.name == *name
            })
            .is_some_and(|e| e.first == me || e.more.contains(&me));
        drop(held);
        if mine {
            return Err(would_deadlock(name));
        }
        Ok(me)
    }

    /// Records that `holder` now holds lock `name`; the ticket, kept by the
    /// guard, forgets it when the guard is released or dropped.
    pub(crate) fn ticket(&self, holder: HolderId, scope: Scope, name: &LockName) -> ReentryTicket {
        let hash = hash(&self.held, scope, name.as_str());
        let mut held = self.held.lock(hash);
        match held.entry(
            hash,
            |e| e.hash == hash && e.scope == scope && e.name == *name,
            |e| e.hash,
        ) {
            hashbrown::hash_table::Entry::Occupied(mut entry) => entry.get_mut().more.push(holder),
            hashbrown::hash_table::Entry::Vacant(entry) => {
                entry.insert(Entry {
                    scope,
                    name: name.clone(),
                    hash,
                    first: holder,
                    more: Vec::new(),
                });
            }
        }
        drop(held);
        ReentryTicket {
            registry: Arc::clone(&self.held),
            scope,
            hash,
            holder,
        }
    }

    /// How many (scope, name) pairs are currently held through this registry.
    pub fn held_count(&self) -> usize {
        self.held.each().map(|shard| shard.len()).sum()
    }
}

/// A guard's entry in the registry; the guard hands it back, with its name,
/// when it is released or dropped.
pub(crate) struct ReentryTicket {
    registry: Arc<Shared>,
    scope: Scope,
    hash: u64,
    holder: HolderId,
}

impl fmt::Debug for ReentryTicket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReentryTicket")
            .field("scope", &self.scope)
            .field("holder", &self.holder)
            .finish()
    }
}

impl ReentryTicket {
    /// Removes the entry of `name`, the name of the guard holding the ticket.
    pub(crate) fn forget(self, name: &LockName) {
        let mut held = self.registry.lock(self.hash);
        if let Ok(mut entry) = held.find_entry(self.hash, |e| {
            e.hash == self.hash && e.scope == self.scope && e.name == *name
        }) {
            let e = entry.get_mut();
            if e.first == self.holder {
                match e.more.pop() {
                    Some(next) => e.first = next,
                    None => {
                        let (gone, _) = entry.remove();
                        drop(held);
                        drop(gone);
                    }
                }
            } else if let Some(pos) = e.more.iter().position(|h| *h == self.holder) {
                e.more.swap_remove(pos);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_would_deadlock_message_names_what_the_caller_is() {
        let name = LockName::new("lioadm").expect("name");
        let from_thread = would_deadlock(&name);
        assert_eq!(from_thread.kind(), ErrorKind::WouldDeadlock);
        assert!(
            from_thread
                .message()
                .starts_with("this thread already holds lock `lioadm`"),
            "{from_thread}"
        );
        assert!(!from_thread.message().contains("variant"), "{from_thread}");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let from_task = runtime
            .block_on(async move { tokio::spawn(async move { would_deadlock(&name) }).await })
            .expect("task");
        assert!(
            from_task
                .message()
                .starts_with("this task already holds lock `lioadm`"),
            "{from_task}"
        );
    }
}
