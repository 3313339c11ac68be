//! [`LocalLocks`]: one FIFO async mutex per key, for the in-process half of
//! every backend.
//!
//! Backends put it in front of their mechanism so that two tasks of one
//! process asking for one name take turns in the order they asked, and the
//! process has at most one contender (lock file descriptor, etcd key,
//! ZooKeeper node) per name. The memory backend is nothing else. Any number
//! of distinct names can pass through without memory growing: a shard keeps
//! at most as many idle entries as it has busy ones (or a handful), see below.
//!
//! # How it works
//! The table is split in `SHARDS` (16) shards, each a [`std::sync::Mutex`] around
//! a hash table (foldhash, randomly seeded) of *slots*. A slot is the mutex of
//! one key: the key (stored once), the ticket that owns the turn, and the
//! queue of waiting tickets. Taking a free key is one critical section that
//! finds (or inserts) its slot and marks it owned; ending the turn is one that
//! hands the slot to the first waiter or marks it idle. Idle slots stay, so a
//! key used again and again costs no insertion, removal or key copy; once a
//! shard has more idle slots than `max(IDLE_KEPT, busy slots)`, it drops all
//! of them at once (and shrinks its table after a peak), which keeps the
//! amortized cost per turn constant and the table within a small multiple of
//! what is in use. There is no per-key allocation besides
//! the slot in the table (and the waiter queue, only under contention).

use std::borrow::Borrow;
use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::hash::Hash;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use hashbrown::HashTable;

use crate::HolderId;
#[cfg(test)]
use crate::shard::SHARDS;
use crate::shard::Sharded;

/// The `owner` of an idle slot: nobody holds or waits for its key.
const IDLE: u64 = u64::MAX;

/// Idle slots a shard may keep however few are busy.
const IDLE_KEPT: usize = 8;

/// Room for waiters an idle slot may keep.
const WAITERS_KEPT: usize = 4;

/// The mutex of one key.
struct Slot<K> {
    key: K,
    hash: u64,
    /// Identifies the slot in its shard: a key that comes back after its slot
    /// went away gets a new slot with a new id.
    id: u64,
    /// The ticket that owns the turn: the holder, or the first waiter, handed
    /// the turn and not yet polled; [`IDLE`] when nobody does.
    owner: u64,
    /// The task (or thread) that asked for the owning ticket; `None` once
    /// the turn is [disowned](LocalTurn::disown).
    holder: Option<HolderId>,
    /// Tickets waiting, first come first served.
    waiters: VecDeque<Waiter>,
}

/// Who has a key's turn and who waits for it: [`LocalLocks::turns`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Turns {
    /// The ticket that owns the turn ([`LocalTurn::ticket`]).
    pub owner: u64,
    /// The tickets waiting, first in line first.
    pub waiting: Vec<u64>,
}

struct Waiter {
    ticket: u64,
    holder: HolderId,
    waker: Option<Waker>,
}

struct ShardState<K> {
    slots: HashTable<Slot<K>>,
    /// The next ticket (and slot id): unique within the shard, and growing,
    /// so the tickets that own one key's turns grow too.
    next_ticket: u64,
    /// How many slots are idle.
    idle: usize,
}

type Shared<K> = Sharded<ShardState<K>>;

impl<K> ShardState<K> {
    fn empty() -> Self {
        ShardState {
            slots: HashTable::new(),
            // Starts at 1: a ticket is also a fencing token, where 0 means none.
            next_ticket: 1,
            idle: 0,
        }
    }

    /// Ends the turn of `ticket` (the slot it owns): hands it to the first
    /// waiter, or makes the slot idle. Returns what to wake, and the slots to
    /// drop once the shard is unlocked (when there were too many idle ones).
    fn pass_on(&mut self, hash: u64, ticket: u64) -> (Option<Waker>, Vec<Slot<K>>) {
        let Some(slot) = self.slots.find_mut(hash, |s| s.owner == ticket) else {
            debug_assert!(false, "a live turn's slot is in the table");
            return (None, Vec::new());
        };
        if let Some(next) = slot.waiters.pop_front() {
            slot.owner = next.ticket;
            slot.holder = Some(next.holder);
            return (next.waker, Vec::new());
        }
        slot.owner = IDLE;
        if slot.waiters.capacity() > WAITERS_KEPT {
            // A crowd once queued here: its room goes, the key may stay.
            slot.waiters = VecDeque::new();
        }
        self.idle += 1;
        let busy = self.slots.len() - self.idle;
        if self.idle <= IDLE_KEPT.max(busy) {
            return (None, Vec::new());
        }
        self.idle = 0;
        let gone = self.slots.extract_if(|s| s.owner == IDLE).collect();
        // A sweep walks the whole table, which never shrinks by itself: after
        // a peak of busy keys it is shrunk, so that sweeps stay as cheap as
        // the turns they pay for.
        let needed = self.slots.len() + IDLE_KEPT;
        if self.slots.capacity() > 4 * needed {
            self.slots.shrink_to(2 * needed, |s| s.hash);
        }
        (None, gone)
    }

    /// Draws the next ticket for `holder`, asking for the key `key` stands
    /// for, and gives it the turn if the key's slot is idle, or absent (then
    /// a slot keyed by `make(key)` is added; `None` if `make` gives none).
    /// A busy slot is handed back with the ticket, for the caller to queue
    /// it or not.
    fn take<Q>(
        &mut self,
        hash: u64,
        key: &Q,
        holder: HolderId,
        make: impl FnOnce(&Q) -> Option<K>,
    ) -> Option<Taken<'_, K>>
    where
        K: Borrow<Q>,
        Q: Eq + ?Sized,
    {
        let ShardState {
            slots,
            next_ticket,
            idle,
        } = self;
        let ticket = *next_ticket;
        let slot = match slots.find_entry(hash, |s| s.hash == hash && s.key.borrow() == key) {
            Ok(entry) => {
                let slot = entry.into_mut();
                if slot.owner != IDLE {
                    *next_ticket = ticket + 1;
                    return Some(Taken::Busy { slot, ticket });
                }
                slot.owner = ticket;
                slot.holder = Some(holder);
                *idle -= 1;
                slot
            }
            Err(absent) => {
                let slot = Slot {
                    key: make(key)?,
                    hash,
                    id: ticket,
                    owner: ticket,
                    holder: Some(holder),
                    waiters: VecDeque::new(),
                };
                absent
                    .into_table()
                    .insert_unique(hash, slot, |s| s.hash)
                    .into_mut()
            }
        };
        *next_ticket = ticket + 1;
        Some(Taken::Turn { slot, ticket })
    }
}

/// What [`ShardState::take`] found.
enum Taken<'a, K> {
    /// `ticket` has the turn on `slot`.
    Turn { slot: &'a mut Slot<K>, ticket: u64 },
    /// `slot` is busy; `ticket` is the caller's place, if it queues.
    Busy { slot: &'a mut Slot<K>, ticket: u64 },
}

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
    shared: Arc<Shared<K>>,
}

impl<K> Clone for LocalLocks<K> {
    fn clone(&self) -> Self {
        LocalLocks {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<K> Default for LocalLocks<K> {
    fn default() -> Self {
        LocalLocks {
            shared: Arc::new(Sharded::new(ShardState::empty)),
        }
    }
}

impl<K> fmt::Debug for LocalLocks<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let active: usize = self.shared.each().map(|s| s.slots.len() - s.idle).sum();
        f.debug_struct("LocalLocks")
            .field("active", &active)
            .finish()
    }
}

/// The outcome of asking for a key: the turn, or a place in its queue.
enum Entered<K> {
    Turn(LocalTurn<K>),
    Queued { slot: u64, ticket: u64 },
}

impl<K: Hash + Eq + Clone + Send + 'static> LocalLocks<K> {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Waits for the turn on `key`, after everyone who asked before.
    ///
    /// # Cancel safety
    /// Cancel safe: a dropped future leaves the queue (passing the turn on if
    /// it had just been handed it), and the entry turns idle (see the module
    /// docs) if nobody else uses it.
    pub async fn lock(&self, key: &K) -> LocalTurn<K> {
        let hash = self.shared.hash(key);
        match self.enter(key, hash, true) {
            Some(Entered::Turn(turn)) => turn,
            Some(Entered::Queued { slot, ticket }) => {
                Waiting {
                    shared: &self.shared,
                    hash,
                    slot,
                    ticket,
                    done: false,
                }
                .await
            }
            None => unreachable!("a waiting enter always enters"),
        }
    }

    /// Takes the turn on `key` if nobody holds or waits for it right now;
    /// `None` otherwise.
    pub fn try_lock(&self, key: &K) -> Option<LocalTurn<K>> {
        let hash = self.shared.hash(key);
        match self.enter(key, hash, false)? {
            Entered::Turn(turn) => Some(turn),
            Entered::Queued { .. } => None,
        }
    }

    /// Takes the turn on the key `key` stands for (its borrowed form: a
    /// `&str` for a name) if nobody holds or waits for it, and returns the
    /// table's copy of the key with it; `None` if somebody does. A key the
    /// table has no slot for is made by `make` (which runs with the shard
    /// locked; its `None` is this call's `None`). Lets a caller skip
    /// building the key when the table has it already.
    pub fn try_lock_by<Q>(
        &self,
        key: &Q,
        make: impl FnOnce(&Q) -> Option<K>,
    ) -> Option<(LocalTurn<K>, K)>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let hash = self.shared.hash(key);
        let mut shard = self.shared.lock(hash);
        let Taken::Turn { slot, ticket } = shard.take(hash, key, HolderId::current(), make)? else {
            return None;
        };
        let key = slot.key.clone();
        drop(shard);
        Some((self.turn(hash, ticket), key))
    }

    /// The turn of `ticket` on the key of `hash`, which it was just given.
    fn turn(&self, hash: u64, ticket: u64) -> LocalTurn<K> {
        LocalTurn {
            shared: Arc::clone(&self.shared),
            hash,
            ticket,
            _key: PhantomData,
        }
    }

    /// How many keys are held or waited for right now (for leak checks).
    pub fn len(&self) -> usize {
        self.shared.each().map(|s| s.slots.len() - s.idle).sum()
    }

    /// How many keys the table has room for without growing, idle slots
    /// included (for tests that memory stays flat).
    #[doc(hidden)]
    pub fn capacity(&self) -> usize {
        self.shared.each().map(|s| s.slots.capacity()).sum()
    }

    /// Whether no key is held or waited for.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the turn on `key` belongs to `holder`: the task (or thread)
    /// that called [`lock`](Self::lock) or [`try_lock`](Self::try_lock) for
    /// it, even if the turn has since moved elsewhere. A waiter handed the
    /// turn owns it from then on, before it resumes.
    ///
    /// `key` may be the key's borrowed form (a `&str` for a name).
    pub fn held_by<Q>(&self, key: &Q, holder: HolderId) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let hash = self.shared.hash(key);
        let shard = self.shared.lock(hash);
        shard
            .slots
            .find(hash, |s| s.hash == hash && s.key.borrow() == key)
            .is_some_and(|s| s.owner != IDLE && s.holder == Some(holder))
    }

    /// The turns on `key` right now: the ticket that owns it and the
    /// waiting tickets, first come first; `None` when nobody holds or waits.
    ///
    /// `key` may be the key's borrowed form (a `&str` for a name).
    pub fn turns<Q>(&self, key: &Q) -> Option<Turns>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let hash = self.shared.hash(key);
        let shard = self.shared.lock(hash);
        shard
            .slots
            .find(hash, |s| s.hash == hash && s.key.borrow() == key)
            .filter(|s| s.owner != IDLE)
            .map(|s| Turns {
                owner: s.owner,
                waiting: s.waiters.iter().map(|w| w.ticket).collect(),
            })
    }

    /// The keys someone holds or waits for right now.
    pub fn busy_keys(&self) -> Vec<K>
    where
        K: Clone,
    {
        let mut keys = Vec::new();
        for shard in self.shared.each() {
            keys.extend(
                shard
                    .slots
                    .iter()
                    .filter(|s| s.owner != IDLE)
                    .map(|s| s.key.clone()),
            );
        }
        keys
    }

    /// Takes the turn if the key is free; otherwise queues (when `queue`) or
    /// gives up (`None`).
    fn enter(&self, key: &K, hash: u64, queue: bool) -> Option<Entered<K>> {
        let holder = HolderId::current();
        let mut shard = self.shared.lock(hash);
        let entered = match shard.take(hash, key, holder, |k| Some(k.clone()))? {
            Taken::Turn { ticket, .. } => Entered::Turn(self.turn(hash, ticket)),
            Taken::Busy { .. } if !queue => return None,
            Taken::Busy { slot, ticket } => {
                slot.waiters.push_back(Waiter {
                    ticket,
                    holder,
                    waker: None,
                });
                Entered::Queued {
                    slot: slot.id,
                    ticket,
                }
            }
        };
        drop(shard);
        Some(entered)
    }
}

/// A place in the queue of one key; resolves to the turn.
struct Waiting<'a, K> {
    shared: &'a Arc<Shared<K>>,
    hash: u64,
    slot: u64,
    ticket: u64,
    /// The turn was taken: nothing left to undo on drop.
    done: bool,
}

impl<K> Future for Waiting<'_, K> {
    type Output = LocalTurn<K>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<LocalTurn<K>> {
        let this = &mut *self;
        let mut shard = this.shared.lock(this.hash);
        let Some(slot) = shard.slots.find_mut(this.hash, |s| s.id == this.slot) else {
            unreachable!("a waiter's slot stays in the table")
        };
        if slot.owner == this.ticket {
            drop(shard);
            this.done = true;
            return Poll::Ready(LocalTurn {
                shared: Arc::clone(this.shared),
                hash: this.hash,
                ticket: this.ticket,
                _key: PhantomData,
            });
        }
        let Some(me) = slot.waiters.iter_mut().find(|w| w.ticket == this.ticket) else {
            unreachable!("a waiter that does not own the turn is queued")
        };
        let replaced = match &me.waker {
            Some(waker) if waker.will_wake(cx.waker()) => None,
            _ => me.waker.replace(cx.waker().clone()),
        };
        // Dropping a waker may run any code (an executor's last reference to
        // a task drops its future, which may come back to this table).
        drop(shard);
        drop(replaced);
        Poll::Pending
    }
}

impl<K> Drop for Waiting<'_, K> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let mut shard = self.shared.lock(self.hash);
        let Some(slot) = shard.slots.find_mut(self.hash, |s| s.id == self.slot) else {
            return;
        };
        if slot.owner == self.ticket {
            // Handed the turn but dropped before taking it: pass it on.
            let (waker, gone) = shard.pass_on(self.hash, self.ticket);
            drop(shard);
            drop(gone);
            if let Some(waker) = waker {
                waker.wake();
            }
        } else if let Some(at) = slot.waiters.iter().position(|w| w.ticket == self.ticket) {
            let _left = slot.waiters.remove(at);
            drop(shard);
        }
    }
}

/// The turn on one key. Dropping it lets the next task in.
#[must_use = "the turn ends when this is dropped"]
pub struct LocalTurn<K> {
    shared: Arc<Shared<K>>,
    hash: u64,
    /// The ticket that was handed the turn: it identifies the slot, whose
    /// `owner` it is until the turn ends.
    ticket: u64,
    _key: PhantomData<fn() -> K>,
}

impl<K> LocalTurn<K> {
    /// A number that grows with every turn on this key (and is never 0): a
    /// fencing token for a lock that is nothing but this turn.
    pub fn ticket(&self) -> u64 {
        self.ticket
    }

    /// Stops counting the turn as held by the task (or thread) that asked
    /// for it: [`held_by`](LocalLocks::held_by) says `false` for everyone
    /// until [`claim`](Self::claim). For a turn that goes on without its
    /// caller, such as a wait in the kernel that outlives a timed-out acquire:
    /// that caller may ask again, and must then queue, not be told it holds
    /// the lock.
    pub fn disown(&self) {
        self.set_holder(None);
    }

    /// Counts the turn as held by the caller running now.
    pub fn claim(&self) {
        self.set_holder(Some(HolderId::current()));
    }

    fn set_holder(&self, holder: Option<HolderId>) {
        let mut shard = self.shared.lock(self.hash);
        if let Some(slot) = shard.slots.find_mut(self.hash, |s| s.owner == self.ticket) {
            slot.holder = holder;
        }
    }
}

impl<K> Drop for LocalTurn<K> {
    fn drop(&mut self) {
        let mut shard = self.shared.lock(self.hash);
        let (waker, gone) = shard.pass_on(self.hash, self.ticket);
        drop(shard);
        drop(gone);
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

impl<K: fmt::Debug> fmt::Debug for LocalTurn<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shard = self.shared.lock(self.hash);
        let mut d = f.debug_struct("LocalTurn");
        if let Some(slot) = shard.slots.find(self.hash, |s| s.owner == self.ticket) {
            d.field("key", &slot.key)
                .field("waiters", &slot.waiters.len());
        }
        d.finish()
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
        let order = Arc::new(std::sync::Mutex::new(Vec::new()));
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

    #[test]
    fn idle_slots_are_reused_and_bounded_and_tickets_grow() {
        let locks = LocalLocks::<u32>::new();
        let mut last = 0;
        for _ in 0..3 {
            let turn = locks.try_lock(&1).expect("free");
            assert!(turn.ticket() > last, "tickets grow on one key");
            last = turn.ticket();
            assert!(locks.held_by(&1, HolderId::current()));
            drop(turn);
            assert!(
                !locks.held_by(&1, HolderId::current()),
                "idle: nobody holds it"
            );
            assert!(locks.is_empty(), "an idle slot is not counted");
        }
        // Many distinct keys, each used once: the idle slots are dropped in
        // bulk, so the table stays within its allowance.
        for key in 0..100_000 {
            drop(locks.try_lock(&key).expect("free"));
        }
        assert!(locks.is_empty());
        let idle: usize = locks.shared.each().map(|s| s.idle).sum();
        let slots: usize = locks.shared.each().map(|s| s.slots.len()).sum();
        assert_eq!(idle, slots, "every slot left is idle");
        assert!(slots <= SHARDS * (IDLE_KEPT + 1), "{slots} idle slots kept");
        // Busy slots raise the allowance: 1 000 held keys let as many idle
        // ones stay, but never more.
        let held: Vec<_> = (0..1_000)
            .map(|k| locks.try_lock(&(k + 1_000_000)).unwrap())
            .collect();
        for key in 0..100_000 {
            drop(locks.try_lock(&key).expect("free"));
        }
        let slots: usize = locks.shared.each().map(|s| s.slots.len()).sum();
        assert!(
            slots <= 2 * 1_000 + SHARDS * (IDLE_KEPT + 1),
            "{slots} slots"
        );
        assert_eq!(locks.len(), 1_000);
        drop(held);
        assert!(locks.is_empty());
    }

    #[tokio::test]
    async fn after_a_peak_the_table_shrinks_and_idle_slots_drop_their_queues() {
        let locks = LocalLocks::<u32>::new();
        let held: Vec<_> = (0..100_000).map(|k| locks.try_lock(&k).unwrap()).collect();
        let peak = locks.capacity();
        assert!(peak >= 100_000);
        drop(held);
        // One-off keys after the peak: sweeps come often, and each walks a
        // table that has been shrunk to what is in use.
        for key in 1_000_000..1_010_000 {
            drop(locks.try_lock(&key).expect("free"));
        }
        assert!(locks.is_empty());
        let capacity = locks.capacity();
        assert!(
            capacity < 4_096,
            "{capacity} slots of room left after a peak of {peak}"
        );

        // A crowd queued on one key leaves no room for it behind.
        let first = locks.lock(&7).await;
        let crowd: Vec<_> = (0..64).map(|_| Box::pin(locks.lock(&7))).collect();
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        let mut crowd = crowd;
        for w in &mut crowd {
            assert!(w.as_mut().poll(&mut cx).is_pending());
        }
        drop(first);
        for mut w in crowd {
            let Poll::Ready(turn) = w.as_mut().poll(&mut cx) else {
                panic!("handed the turn in order")
            };
            drop(turn);
        }
        assert!(locks.is_empty());
        let room: usize = locks
            .shared
            .each()
            .map(|s| {
                s.slots
                    .iter()
                    .map(|slot| slot.waiters.capacity())
                    .sum::<usize>()
            })
            .sum();
        assert!(room <= WAITERS_KEPT, "{room}");
    }

    #[test]
    fn a_key_is_taken_by_its_borrowed_form() {
        let locks = LocalLocks::<String>::new();
        assert!(
            locks.try_lock_by("bad", |_| None).is_none(),
            "unknown, and not made"
        );
        assert!(locks.is_empty());
        let (first, key) = locks
            .try_lock_by("vol", |k| Some(k.to_owned()))
            .expect("made");
        assert_eq!(key, "vol");
        assert!(locks.try_lock(&key).is_none(), "held");
        assert!(
            locks.try_lock_by("vol", |_| panic!("known")).is_none(),
            "held"
        );
        let ticket = first.ticket();
        drop(first);
        let (turn, key) = locks
            .try_lock_by("vol", |_| panic!("known: not made again"))
            .expect("idle, known");
        assert_eq!(key, "vol");
        assert!(turn.ticket() > ticket);
        assert!(locks.held_by(&key, HolderId::current()));
        assert_eq!(locks.len(), 1);
        drop(turn);
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

    #[tokio::test]
    async fn a_waiter_dropped_after_being_handed_the_turn_passes_it_on() {
        let locks = LocalLocks::<u32>::new();
        let held = locks.lock(&3).await;
        let mut first = Box::pin(locks.lock(&3));
        let mut second = Box::pin(locks.lock(&3));
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        assert!(first.as_mut().poll(&mut cx).is_pending());
        assert!(second.as_mut().poll(&mut cx).is_pending());
        drop(held); // hands the turn to `first`, which never takes it
        drop(first);
        let Poll::Ready(turn) = second.as_mut().poll(&mut cx) else {
            panic!("the turn passed on to the second waiter")
        };
        assert!(locks.try_lock(&3).is_none());
        drop(turn);
        drop(second);
        assert!(locks.is_empty());
    }

    #[tokio::test]
    async fn a_cancelled_waiter_in_the_middle_keeps_the_order() {
        let locks = LocalLocks::<u32>::new();
        let held = locks.lock(&5).await;
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        let mut futs: Vec<_> = (0..3).map(|_| Box::pin(locks.lock(&5))).collect();
        for f in &mut futs {
            assert!(f.as_mut().poll(&mut cx).is_pending());
        }
        let mut last = futs.pop().unwrap();
        let middle = futs.pop().unwrap();
        let mut head = futs.pop().unwrap();
        drop(middle);
        drop(held);
        assert!(
            last.as_mut().poll(&mut cx).is_pending(),
            "still behind the head"
        );
        let Poll::Ready(turn) = head.as_mut().poll(&mut cx) else {
            panic!("the head of the queue goes first")
        };
        drop(turn);
        let Poll::Ready(turn) = last.as_mut().poll(&mut cx) else {
            panic!("then the last one")
        };
        drop(turn);
        drop((head, last));
        assert!(locks.is_empty());
        assert_eq!(format!("{locks:?}"), "LocalLocks { active: 0 }");
    }

    #[tokio::test]
    async fn the_turn_belongs_to_the_task_that_asked() {
        let locks = LocalLocks::<u32>::new();
        let me = HolderId::current();
        let held = locks.lock(&9).await;
        assert!(locks.held_by(&9, me));
        assert!(!locks.held_by(&8, me), "nobody holds 8");
        let waiter = {
            let locks = locks.clone();
            tokio::spawn(async move {
                let turn = locks.lock(&9).await;
                let mine = locks.held_by(&9, HolderId::current());
                (turn, mine)
            })
        };
        tokio::task::yield_now().await;
        drop(held);
        let (turn, mine) = waiter.await.unwrap();
        assert!(mine);
        assert!(!locks.held_by(&9, me), "handed on");
        drop(turn);
        assert!(!locks.held_by(&9, me));
    }

    #[tokio::test]
    async fn a_disowned_turn_is_held_by_nobody_until_claimed() {
        let locks = LocalLocks::<u32>::new();
        let me = HolderId::current();
        let turn = locks.lock(&4).await;
        turn.disown();
        assert!(!locks.held_by(&4, me));
        assert!(locks.try_lock(&4).is_none(), "still taken");
        let other = locks.clone();
        let (claimed, mine) = tokio::spawn(async move {
            turn.claim();
            let mine = other.held_by(&4, HolderId::current());
            (turn, mine)
        })
        .await
        .unwrap();
        assert!(mine, "claimed by the other task");
        assert!(!locks.held_by(&4, me));
        drop(claimed);
        assert!(locks.is_empty());
    }

    /// A waker replaced by a later poll is dropped after the shard is
    /// unlocked: dropping a waker may run arbitrary code (an executor's last
    /// reference to a task drops its future, whose turn or queue place goes
    /// back to this table).
    #[test]
    fn a_replaced_waker_is_dropped_outside_the_shard() {
        /// A waker whose last reference, when dropped, looks at the table.
        struct Probe(LocalLocks<u32>);
        impl std::task::Wake for Probe {
            fn wake(self: Arc<Self>) {}
        }
        impl Drop for Probe {
            fn drop(&mut self) {
                // Locks every shard in turn, the waiter's included.
                let _ = self.0.len();
            }
        }
        let locks = LocalLocks::<u32>::new();
        let (done, finished) = std::sync::mpsc::channel();
        let worker = {
            let locks = locks.clone();
            std::thread::spawn(move || {
                let held = locks.try_lock(&1).expect("free");
                let mut waiting = Box::pin(locks.lock(&1));
                let waker = Waker::from(Arc::new(Probe(locks.clone())));
                assert!(
                    waiting
                        .as_mut()
                        .poll(&mut Context::from_waker(&waker))
                        .is_pending()
                );
                // The table keeps the only reference left.
                drop(waker);
                // Polled with another waker: the probe's is replaced, and dropped.
                assert!(
                    waiting
                        .as_mut()
                        .poll(&mut Context::from_waker(Waker::noop()))
                        .is_pending()
                );
                drop((waiting, held));
                done.send(()).unwrap();
            })
        };
        assert!(
            finished.recv_timeout(Duration::from_secs(5)).is_ok(),
            "dropping the replaced waker deadlocked on the shard mutex"
        );
        worker.join().unwrap();
        assert!(locks.is_empty());
    }

    #[test]
    fn many_threads_many_keys_exclude_and_leave_nothing() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(4)
            .enable_time()
            .build()
            .unwrap();
        let locks = LocalLocks::<u32>::new();
        let inside: Arc<[std::sync::atomic::AtomicU32; 8]> = Arc::new(Default::default());
        rt.block_on(async {
            let mut tasks = Vec::new();
            for t in 0..16u32 {
                let (locks, inside) = (locks.clone(), inside.clone());
                tasks.push(tokio::spawn(async move {
                    for i in 0..2_000u32 {
                        let key = (t * 7 + i) % 8;
                        let turn = if i % 3 == 0 {
                            match tokio::time::timeout(Duration::from_micros(50), locks.lock(&key))
                                .await
                            {
                                Ok(turn) => turn,
                                Err(_) => continue,
                            }
                        } else {
                            locks.lock(&key).await
                        };
                        let n = &inside[key as usize];
                        assert_eq!(n.fetch_add(1, std::sync::atomic::Ordering::SeqCst), 0);
                        tokio::task::yield_now().await;
                        n.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                        drop(turn);
                    }
                }));
            }
            for t in tasks {
                t.await.unwrap();
            }
        });
        assert!(locks.is_empty());
    }
}
