//! What a backend hands back: the [`LockGuard`] with its [`LockState`], the
//! backend's half of it ([`HeldLock`]), and the release future.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::sync::watch;

use crate::reentry::ReentryTicket;
use crate::{
    Error, ErrorKind, HolderId, LocalTurn, LockName, LockRequest, ReentryRegistry, Result, Scope,
};

/// A number that grows with every new holder of a lock, for fencing writes.
///
/// A resource that remembers the highest token it has seen can refuse a write
/// carrying a smaller one, which stops a holder whose lock was lost (paused
/// process, expired lease) from corrupting data after the next holder took over.
/// Each backend documents where its tokens come from and how far they are ordered.
pub type FencingToken = u64;

/// Whether a held lock is still safely held.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LockState {
    /// The lock is held.
    Held,
    /// The connection to the server is interrupted; the lock may be lost soon
    /// (ZooKeeper `Disconnected`). Stop starting new work under the lock.
    AtRisk,
    /// The lock is gone (lease or session expired, node deleted). Another
    /// holder may already have it: stop the critical section.
    Lost,
    /// The guard was released.
    Released,
}

/// The backend's end of a guard's state: publishes [`LockState`] changes.
///
/// One sender may feed many guards (all locks on one etcd lease).
#[derive(Debug, Clone)]
pub struct LockStateSender(watch::Sender<LockState>);

impl LockStateSender {
    /// A new state channel, starting at [`LockState::Held`].
    pub fn new() -> Self {
        LockStateSender(watch::Sender::new(LockState::Held))
    }

    /// A receiver for a new guard.
    pub fn subscribe(&self) -> watch::Receiver<LockState> {
        self.0.subscribe()
    }

    /// Publishes `state` to every guard of this sender. [`LockState::Lost`] is final.
    ///
    /// A change is also a `tracing` event of target `locks::state`: a
    /// warning for [`LockState::AtRisk`] and [`LockState::Lost`], info for
    /// the way back to [`LockState::Held`], with the number of guards that
    /// share the sender.
    pub fn set(&self, state: LockState) {
        let mut previous = None;
        self.0.send_if_modified(|current| {
            if *current == LockState::Lost || *current == state {
                false
            } else {
                previous = Some(*current);
                *current = state;
                true
            }
        });
        let Some(previous) = previous else {
            return;
        };
        let guards = self.0.receiver_count();
        match state {
            LockState::Held => tracing::info!(
                target: "locks::state",
                state = ?state,
                ?previous,
                guards,
                "held locks are safe again"
            ),
            LockState::AtRisk => tracing::warn!(
                target: "locks::state",
                state = ?state,
                ?previous,
                guards,
                "held locks are at risk: the backend cannot confirm them"
            ),
            LockState::Lost => tracing::warn!(
                target: "locks::state",
                state = ?state,
                ?previous,
                guards,
                "held locks are lost: another holder may enter"
            ),
            LockState::Released => {}
        }
    }

    /// The state last published.
    pub fn get(&self) -> LockState {
        *self.0.borrow()
    }
}

impl Default for LockStateSender {
    fn default() -> Self {
        Self::new()
    }
}

/// A receiver for backends whose locks cannot be lost while the process lives
/// (memory, file): always [`LockState::Held`].
pub fn never_lost() -> watch::Receiver<LockState> {
    never_lost_channel().1.clone()
}

/// The one channel of [`never_lost`]: it never changes, and building a
/// channel per guard was a quarter of a memory-backend cycle. The receiver
/// kept here means a guard's receiver is never the last one, whose drop would
/// wake the (nonexistent) waiters on the sender.
fn never_lost_channel() -> &'static (watch::Sender<LockState>, watch::Receiver<LockState>) {
    static HELD: std::sync::OnceLock<(watch::Sender<LockState>, watch::Receiver<LockState>)> =
        std::sync::OnceLock::new();
    HELD.get_or_init(|| watch::channel(LockState::Held))
}

/// The backend half of a guard: what it takes to let go of one held lock.
#[async_trait]
pub trait HeldLock: fmt::Debug + Send + Sync + 'static {
    /// Releases the lock and reports whether that worked.
    async fn release(self: Box<Self>) -> Result<()>;

    /// Releases the lock without waiting, from `Drop`. It must not block, and
    /// must work outside a tokio runtime (backends that need one keep a
    /// `Handle` from their construction).
    fn release_on_drop(self: Box<Self>);

    /// Releases the lock on the calling thread and reports the outcome, when
    /// that takes no waiting (a system call that cannot block, such as
    /// unlocking a file); `None`, leaving the lock held, when it needs
    /// [`release`](Self::release). After `Some`, dropping the lock does
    /// nothing. Default: `None`.
    fn try_release_now(&mut self) -> Option<Result<()>> {
        None
    }
}

/// Told when a hold ends, for metrics: see [`LockGuard::observe_release`].
pub trait ReleaseObserver: Send + Sync + 'static {
    /// The hold ended after `held_for`; `lost` if the lock had been lost
    /// before it was let go. Called once, from the releasing (or dropping)
    /// thread: it must not block.
    fn released(&self, held_for: Duration, lost: bool);
}

/// What a guard lets go of when it is released.
enum Held {
    /// A backend's held lock.
    Backend(Box<dyn HeldLock>),
    /// A lock that is nothing but a turn on a local table (memory backend),
    /// ended by dropping it.
    Local { _turn: LocalTurn<LockName> },
}

/// A held lock. Releasing it (explicitly, or by dropping it) lets the next waiter in.
///
/// The guard is owned and `'static`: it can be moved into tasks, threads, or
/// across the C ABI. Prefer [`release`](LockGuard::release), which reports
/// errors; dropping the guard releases in the background, best effort.
#[must_use = "if unused the lock is released immediately"]
#[clippy::has_significant_drop]
pub struct LockGuard {
    name: LockName,
    scope: Scope,
    token: FencingToken,
    /// `None` for a lock that cannot be lost while the process lives.
    state: Option<watch::Receiver<LockState>>,
    held: Option<Held>,
    /// Boxed: only clients without a holder-aware backend (etcd, ZooKeeper,
    /// Redis) have one, and the guard stays small for the others.
    ticket: Option<Box<ReentryTicket>>,
    /// Told when the hold ends, with the time it began (boxed: most guards
    /// have none, and the guard stays small).
    observer: Option<Box<(Arc<dyn ReleaseObserver>, Instant)>>,
}

impl LockGuard {
    /// Wraps a lock a backend acquired for `request`.
    pub fn new(
        request: &LockRequest,
        token: FencingToken,
        state: watch::Receiver<LockState>,
        held: Box<dyn HeldLock>,
    ) -> Self {
        LockGuard {
            name: request.name.clone(),
            scope: request.scope,
            token,
            state: Some(state),
            held: Some(Held::Backend(held)),
            ticket: None,
            observer: None,
        }
    }

    /// Wraps a lock a backend acquired for `request` that cannot be lost
    /// while this process lives (a kernel file lock): [`new`](Self::new)
    /// with a state that stays `Held` until release, without a channel.
    pub fn unlosable(request: &LockRequest, token: FencingToken, held: Box<dyn HeldLock>) -> Self {
        LockGuard {
            name: request.name.clone(),
            scope: request.scope,
            token,
            state: None,
            held: Some(Held::Backend(held)),
            ticket: None,
            observer: None,
        }
    }

    /// Wraps a lock that is nothing but `turn` on a [`LocalLocks`](crate::LocalLocks)
    /// table (the memory backend): it cannot be lost, and releasing it ends
    /// the turn. Unlike [`new`](Self::new), this allocates nothing.
    pub fn local(request: &LockRequest, token: FencingToken, turn: LocalTurn<LockName>) -> Self {
        Self::local_named(request.name.clone(), request.scope, token, turn)
    }

    /// [`local`](Self::local) for `name` in `scope`, without a request.
    pub fn local_named(
        name: LockName,
        scope: Scope,
        token: FencingToken,
        turn: LocalTurn<LockName>,
    ) -> Self {
        LockGuard {
            name,
            scope,
            token,
            state: None,
            held: Some(Held::Local { _turn: turn }),
            ticket: None,
            observer: None,
        }
    }

    /// Records in `registry` that `holder` now holds this lock, until the
    /// guard is released or dropped, so that the holder asking again gets
    /// [`ErrorKind::WouldDeadlock`]. `scope` is the scope passed to
    /// [`ReentryRegistry::check`] (a client whose scopes share one backend
    /// checks them as one).
    pub fn track_in(&mut self, registry: &ReentryRegistry, holder: HolderId, scope: Scope) {
        self.ticket = Some(Box::new(registry.ticket(holder, scope, &self.name)));
    }

    /// Has `observer` told when this hold ends (released, dropped or found
    /// lost), with how long it lasted; the hold is taken to begin now. The
    /// `locks` facade uses this for its metrics.
    pub fn observe_release(&mut self, observer: Arc<dyn ReleaseObserver>) {
        self.observer = Some(Box::new((observer, Instant::now())));
    }

    /// Tells the observer, if any, that the hold ended.
    fn notify_observer(&mut self, lost: bool) {
        if let Some(observed) = self.observer.take() {
            let (observer, since) = *observed;
            observer.released(since.elapsed(), lost);
        }
    }

    /// The full lock name.
    pub fn name(&self) -> &LockName {
        &self.name
    }

    /// The scope the lock was taken in.
    pub fn scope(&self) -> Scope {
        self.scope
    }

    /// The fencing token of this holding; see [`FencingToken`].
    pub fn token(&self) -> FencingToken {
        self.token
    }

    /// The current state.
    pub fn state(&self) -> LockState {
        if self.held.is_none() {
            return LockState::Released;
        }
        self.reported()
    }

    /// What the backend last reported, released or not.
    fn reported(&self) -> LockState {
        match &self.state {
            Some(rx) => *rx.borrow(),
            None => LockState::Held,
        }
    }

    /// Whether the lock was lost while held.
    pub fn is_lost(&self) -> bool {
        self.state() == LockState::Lost
    }

    /// Resolves when the lock is lost. Never resolves for backends that cannot lose locks.
    ///
    /// # Cancel safety
    /// Cancel safe: dropping the future changes nothing.
    pub async fn lost(&self) {
        let Some(rx) = &self.state else {
            return std::future::pending().await;
        };
        let mut rx = rx.clone();
        loop {
            if *rx.borrow_and_update() == LockState::Lost {
                return;
            }
            if rx.changed().await.is_err() {
                // The backend can no longer report anything: the state is final.
                if *rx.borrow() == LockState::Lost {
                    return;
                }
                std::future::pending::<()>().await;
            }
        }
    }

    /// Whether the lock is nothing but an in-process turn (memory backend):
    /// it cannot be lost, and [`try_release_now`](Self::try_release_now) always ends it.
    pub fn is_local(&self) -> bool {
        matches!(self.held, Some(Held::Local { .. }))
    }

    /// Whether the backend can lose this lock while the process lives (a
    /// lease or session of a server); file and memory locks cannot.
    pub fn can_be_lost(&self) -> bool {
        self.state
            .as_ref()
            .is_some_and(|state| !state.same_channel(&never_lost_channel().1))
    }

    /// A receiver of state changes, for `select!` loops.
    pub fn watch_state(&self) -> watch::Receiver<LockState> {
        match &self.state {
            Some(rx) => rx.clone(),
            None => never_lost(),
        }
    }

    /// Releases the lock.
    ///
    /// Like an `async fn`, the returned future does nothing until it is first
    /// polled; dropped before that, it drops the guard (which releases in the
    /// background).
    ///
    /// # Errors
    /// [`ErrorKind::Lost`] if the lock had been lost before release (the
    /// critical section was not protected to the end); backend errors such as
    /// [`ErrorKind::Unavailable`] if the release could not be confirmed (the
    /// lock then expires with its lease or session).
    pub fn release(self) -> impl Future<Output = Result<()>> + Send + 'static {
        // A hand-written future: a local turn is released at the first poll
        // without the state machine of an `async fn` around the guard.
        Release::Start(self)
    }

    /// Releases at once, on the calling thread and without a runtime, when
    /// that needs no waiting (a lock of the memory backend, or one whose
    /// backend [releases at once](HeldLock::try_release_now), such as a file
    /// lock); otherwise hands the guard back for [`release`](Self::release).
    ///
    /// ```
    /// # use locks_core::{LocalLocks, LockGuard, LockName, LockRequest, Scope};
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// let table = LocalLocks::<LockName>::new();
    /// let request = LockRequest::new(LockName::new("vol-1")?, Scope::Process);
    /// let guard = LockGuard::local(&request, 1, table.lock(&request.name).await);
    /// assert!(guard.try_release_now().is_ok_and(|released| released.is_ok()));
    /// assert!(table.is_empty());
    /// # Ok::<(), locks_core::Error>(())
    /// # }).unwrap();
    /// ```
    ///
    /// # Errors
    /// The inner result: as [`release`](Self::release).
    pub fn try_release_now(mut self) -> std::result::Result<Result<()>, LockGuard> {
        self.release_in_place().ok_or(self)
    }

    /// Ends the hold on the calling thread if that needs no waiting (a local
    /// turn, or a backend lock that [releases at once](HeldLock::try_release_now))
    /// and returns the outcome; `None`, leaving the guard as it was, if the
    /// backend's release future is needed. Works in place: moving the guard
    /// or its turn around costs more than the rest of a memory release.
    fn release_in_place(&mut self) -> Option<Result<()>> {
        if self.ticket.is_none()
            && self.state.is_none()
            && self.observer.is_none()
            && self.is_local()
        {
            // The common case, kept short: a turn that cannot be lost and
            // that no re-entry record tracks ends by being dropped.
            self.held = None;
            return Some(Ok(()));
        }
        let outcome = match &mut self.held {
            Some(Held::Backend(held)) => held.try_release_now()?,
            _ => Ok(()),
        };
        let lost = self.settle();
        // Ends a local turn (or drops a released backend lock) where it lies.
        self.held = None;
        Some(lost.map_or(outcome, Err))
    }

    /// What every release does besides letting go: forgets the holding in
    /// the client's re-entry record, and returns the [`ErrorKind::Lost`]
    /// error to report if the lock was lost before it was released.
    #[inline]
    fn settle(&mut self) -> Option<Error> {
        if let Some(ticket) = self.ticket.take() {
            ticket.forget(&self.name);
        }
        let lost = self.reported() == LockState::Lost;
        self.notify_observer(lost);
        lost.then(|| {
            Error::new(
                ErrorKind::Lost,
                format!(
                    "lock `{}` ({} scope) was lost before it was released: another holder may have run concurrently",
                    self.name, self.scope
                ),
            )
        })
    }
}

type BoxedRelease = Pin<Box<dyn Future<Output = Result<()>> + Send>>;

/// The future of [`LockGuard::release`].
enum Release {
    /// Not polled yet.
    Start(LockGuard),
    /// The backend's release in progress, and the error to report after it.
    Pending(BoxedRelease, Option<Error>),
    /// Completed.
    Done,
}

impl Future for Release {
    type Output = Result<()>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        let this = &mut *self;
        if let Release::Start(guard) = this {
            if let Some(result) = guard.release_in_place() {
                // Drops the guard, which has nothing left to release.
                *this = Release::Done;
                return Poll::Ready(result);
            }
            let lost = guard.settle();
            let Some(Held::Backend(held)) = guard.held.take() else {
                unreachable!("only a backend lock is not released at once");
            };
            *this = Release::Pending(held.release(), lost);
        }
        let Release::Pending(release, lost) = this else {
            panic!("LockGuard::release polled after it completed");
        };
        let result = std::task::ready!(release.as_mut().poll(cx));
        let lost = lost.take();
        *this = Release::Done;
        Poll::Ready(match lost {
            Some(lost) => Err(lost),
            None => result,
        })
    }
}

impl fmt::Debug for LockGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LockGuard")
            .field("name", &self.name)
            .field("scope", &self.scope)
            .field("token", &self.token)
            .field("state", &self.state())
            .finish()
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        if self.observer.is_some() {
            let lost = self.reported() == LockState::Lost;
            self.notify_observer(lost);
        }
        if let Some(Held::Backend(_)) = &self.held
            && let Some(Held::Backend(held)) = self.held.take()
        {
            held.release_on_drop();
        }
        // Ends a local turn where it lies (the field would drop it anyway).
        self.held = None;
        if let Some(ticket) = self.ticket.take() {
            ticket.forget(&self.name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lost_is_final() {
        let tx = LockStateSender::new();
        let rx = tx.subscribe();
        tx.set(LockState::AtRisk);
        assert_eq!(*rx.borrow(), LockState::AtRisk);
        tx.set(LockState::Lost);
        tx.set(LockState::Held);
        assert_eq!(*rx.borrow(), LockState::Lost);
    }

    /// A backend lock that counts how it was let go, and whose release
    /// waits for one extra poll.
    #[derive(Debug, Default)]
    struct Counted {
        released: std::sync::atomic::AtomicUsize,
        dropped: std::sync::atomic::AtomicUsize,
    }

    #[derive(Debug)]
    struct CountedHeld(std::sync::Arc<Counted>);

    #[async_trait]
    impl HeldLock for CountedHeld {
        async fn release(self: Box<Self>) -> Result<()> {
            tokio::task::yield_now().await;
            self.0
                .released
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Ok(())
        }

        fn release_on_drop(self: Box<Self>) {
            self.0
                .dropped
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    #[tokio::test]
    async fn release_is_lazy_waits_for_the_backend_and_reports_lost() {
        use std::sync::atomic::Ordering::SeqCst;
        let req = LockRequest::new(LockName::new("x").unwrap(), Scope::Global);
        let counts = std::sync::Arc::new(Counted::default());
        let guard = |state: &LockStateSender| {
            LockGuard::new(
                &req,
                1,
                state.subscribe(),
                Box::new(CountedHeld(counts.clone())),
            )
        };

        let state = LockStateSender::new();
        guard(&state).release().await.unwrap();
        assert_eq!(counts.released.load(SeqCst), 1);

        // Never polled: nothing happens until the future is dropped, which
        // drops the guard, which releases in the background.
        let unpolled = guard(&state).release();
        assert_eq!(counts.released.load(SeqCst), 1);
        assert_eq!(counts.dropped.load(SeqCst), 0);
        drop(unpolled);
        assert_eq!(counts.dropped.load(SeqCst), 1);

        // Lost before release: the backend still releases, then Lost is reported.
        let g = guard(&state);
        state.set(LockState::Lost);
        assert!(g.is_lost());
        let err = g.release().await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Lost);
        assert!(err.message().contains("`x` (global scope)"), "{err}");
        assert_eq!(counts.released.load(SeqCst), 2);
        assert_eq!(counts.dropped.load(SeqCst), 1);
    }

    /// Records each end of a hold it is told about.
    #[derive(Default)]
    struct Ends(std::sync::Mutex<Vec<bool>>);

    impl ReleaseObserver for Ends {
        fn released(&self, _held_for: Duration, lost: bool) {
            self.0.lock().unwrap().push(lost);
        }
    }

    #[tokio::test]
    async fn the_release_observer_hears_every_end_once() {
        let req = LockRequest::new(LockName::new("x").unwrap(), Scope::Global);
        let ends = Arc::new(Ends::default());
        let counts = Arc::new(Counted::default());
        let state = LockStateSender::new();
        let observed = |state: &LockStateSender| {
            let mut guard = LockGuard::new(
                &req,
                1,
                state.subscribe(),
                Box::new(CountedHeld(counts.clone())),
            );
            guard.observe_release(ends.clone());
            guard
        };
        observed(&state).release().await.unwrap();
        drop(observed(&state));
        let lost = observed(&state);
        state.set(LockState::Lost);
        assert!(lost.release().await.is_err());
        // A local turn, released in place.
        let table = crate::LocalLocks::<LockName>::new();
        let mut local = LockGuard::local(&req, 1, table.lock(&req.name).await);
        local.observe_release(ends.clone());
        assert!(local.try_release_now().is_ok());
        assert_eq!(*ends.0.lock().unwrap(), [false, false, true, false]);
    }

    #[tokio::test]
    async fn only_locks_with_a_state_of_their_own_can_be_lost() {
        let req = LockRequest::new(LockName::new("x").unwrap(), Scope::Global);
        let counts = Arc::new(Counted::default());
        let table = crate::LocalLocks::<LockName>::new();
        let local = LockGuard::local(&req, 1, table.lock(&req.name).await);
        let file_like =
            LockGuard::new(&req, 1, never_lost(), Box::new(CountedHeld(counts.clone())));
        let state = LockStateSender::new();
        let leased = LockGuard::new(&req, 1, state.subscribe(), Box::new(CountedHeld(counts)));
        assert!(!local.can_be_lost());
        assert!(!file_like.can_be_lost());
        assert!(leased.can_be_lost());
    }
}
