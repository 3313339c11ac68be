//! Keeping held keys alive: one task per backend re-arms the expiry of every
//! key its guards hold, each a third of the lock timeout after its last
//! confirmed refresh, and reports `AtRisk` and `Lost`.
//!
//! One task for all holds, rather than one per hold, so that an uncontended
//! acquire and release spawn nothing and wake no other thread: a hold is an
//! entry in a table, and the task is woken only when a new entry is due
//! before the task would look anyway (in a loop of acquires and releases,
//! once per third of the lock timeout). Each refresh, when due, runs as a
//! task of its own, so a slow one holds up no other. A wake-up also
//! refreshes the holds due within the next eighth of the refresh interval
//! (early, which only shortens the interval; not a retry), so the task, which looks at
//! every hold when it wakes, wakes at most about eight times per interval
//! however many holds there are and however their times are spread.
//!
//! The rules, per hold: a refresh that fails makes the lock
//! [`LockState::AtRisk`] (and is retried every 100 ms); a key found gone or
//! someone else's, or no refresh confirmed until min(lock timeout / 5, 1 s)
//! before the server could expire the key (the send time of the last
//! confirmed refresh plus the lock timeout), makes it [`LockState::Lost`]:
//! the holder is told before anybody else can take the key.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use locks_core::{LockState, LockStateSender};
use tokio::sync::{Notify, oneshot};
use tokio::time::Instant;

use crate::core::Core;

/// How often a failed refresh is tried again.
const REFRESH_RETRY: Duration = Duration::from_millis(100);

/// One held key.
struct Entry {
    key: Arc<str>,
    token: Arc<str>,
    state: LockStateSender,
    /// When to refresh next.
    next: Instant,
    /// When to report `Lost` unless a refresh is confirmed before.
    lost_at: Instant,
    /// A refresh of this key is under way.
    refreshing: bool,
}

impl Entry {
    /// When the task must look at this entry next.
    fn due(&self) -> Instant {
        if self.refreshing {
            self.lost_at
        } else {
            self.next.min(self.lost_at)
        }
    }
}

#[derive(Default)]
struct Table {
    entries: HashMap<u64, Entry>,
    next_id: u64,
    /// When the task looks next on its own; `None` while it waits for work.
    alarm: Option<Instant>,
}

/// The table of held keys and the wake-up of the task that refreshes them.
pub(crate) struct Refresher {
    table: Mutex<Table>,
    wake: Notify,
    /// The lock timeout, its third (the refresh interval) and the margin
    /// before the server could expire a key.
    ttl: Duration,
    interval: Duration,
    margin: Duration,
    /// How early a hold may be refreshed along with others (an eighth of
    /// the interval).
    slack: Duration,
}

/// A hold's place in the [`Refresher`]'s table.
pub(crate) type HoldId = u64;

impl Refresher {
    pub(crate) fn new(ttl: Duration) -> Refresher {
        Refresher {
            table: Mutex::new(Table::default()),
            wake: Notify::new(),
            ttl,
            interval: ttl / 3,
            margin: (ttl / 5).min(Duration::from_secs(1)),
            slack: ttl / 24,
        }
    }

    fn table(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts keeping `key` (holding `token`, set by a request sent at
    /// `sent`) alive, reporting on `state`.
    pub(crate) fn hold(
        &self,
        key: Arc<str>,
        token: Arc<str>,
        state: LockStateSender,
        sent: Instant,
    ) -> HoldId {
        let entry = Entry {
            key,
            token,
            state,
            next: sent + self.interval,
            lost_at: sent + self.ttl - self.margin,
            refreshing: false,
        };
        let due = entry.due();
        let mut table = self.table();
        let id = table.next_id;
        table.next_id += 1;
        table.entries.insert(id, entry);
        let wake = table.alarm.is_none_or(|alarm| due < alarm);
        drop(table);
        if wake {
            self.wake.notify_one();
        }
        id
    }

    /// Stops keeping hold `id` alive (released, or handed to a background delete).
    pub(crate) fn forget(&self, id: HoldId) {
        self.table().entries.remove(&id);
    }

    /// Records how the refresh of hold `id`, sent at `sent`, ended.
    fn refreshed(&self, id: HoldId, sent: Instant, outcome: Outcome) {
        let mut table = self.table();
        let Some(entry) = table.entries.get_mut(&id) else {
            // Released (or already reported lost) meanwhile.
            return;
        };
        entry.refreshing = false;
        match outcome {
            Outcome::Renewed => {
                entry.lost_at = sent + self.ttl - self.margin;
                entry.next = sent + self.interval;
                entry.state.set(LockState::Held);
            }
            Outcome::Failed => {
                entry.state.set(LockState::AtRisk);
                entry.next = Instant::now() + REFRESH_RETRY;
            }
            Outcome::Gone => {
                entry.state.set(LockState::Lost);
                table.entries.remove(&id);
                return;
            }
        }
        let due = entry.due();
        let wake = table.alarm.is_none_or(|alarm| due < alarm);
        drop(table);
        if wake {
            self.wake.notify_one();
        }
    }
}

/// How one refresh ended.
enum Outcome {
    /// The expiry was re-armed.
    Renewed,
    /// No answer (in time): try again.
    Failed,
    /// The key was gone or someone else's, or no answer came before the
    /// key could expire.
    Gone,
}

/// Starts the refresh task of `core` on its runtime; it ends when `stop`'s
/// sender (a field of the core) is dropped.
pub(crate) fn start(core: &Arc<Core>, stop: oneshot::Receiver<()>) {
    core.handle
        .spawn(run(Arc::downgrade(core), Arc::clone(&core.refresher), stop));
}

async fn run(core: Weak<Core>, refresher: Arc<Refresher>, mut stop: oneshot::Receiver<()>) {
    loop {
        let now = Instant::now();
        let soon = now + refresher.slack;
        let mut due = Vec::new();
        let alarm = {
            let mut table = refresher.table();
            table.entries.retain(|_, entry| {
                if entry.lost_at <= now {
                    entry.state.set(LockState::Lost);
                    return false;
                }
                true
            });
            for (id, entry) in &mut table.entries {
                // A retry (AtRisk) waits its 100 ms.
                let early = entry.state.get() == LockState::Held;
                if !entry.refreshing && (entry.next <= now || early && entry.next <= soon) {
                    entry.refreshing = true;
                    due.push((
                        *id,
                        Arc::clone(&entry.key),
                        Arc::clone(&entry.token),
                        entry.lost_at,
                    ));
                }
            }
            let alarm = table.entries.values().map(Entry::due).min();
            table.alarm = alarm;
            alarm
        };
        if !due.is_empty() {
            // Holds exist, so their guards keep the core alive.
            let Some(core) = core.upgrade() else { return };
            for (id, key, token, lost_at) in due {
                let core = Arc::clone(&core);
                let refresher = Arc::clone(&refresher);
                core.handle.clone().spawn(async move {
                    let sent = Instant::now();
                    let outcome =
                        match tokio::time::timeout_at(lost_at, core.refresh(&key, &token)).await {
                            Ok(Ok(true)) => Outcome::Renewed,
                            Ok(Ok(false)) | Err(_) => Outcome::Gone,
                            Ok(Err(_)) => Outcome::Failed,
                        };
                    refresher.refreshed(id, sent, outcome);
                });
            }
        }
        let sleep = async {
            match alarm {
                Some(alarm) => tokio::time::sleep_until(alarm).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = &mut stop => return,
            () = refresher.wake.notified() => {}
            () = sleep => {}
        }
    }
}
