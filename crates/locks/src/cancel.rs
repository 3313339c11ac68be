//! [`CancelToken`]: stops a blocking acquire from another thread.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::Notify;

/// A handle that cancels the [`BlockingLocks`](crate::BlockingLocks)
/// acquires it is given ([`acquire_cancellable`], [`lock_name_cancellable`]),
/// from any thread.
///
/// [`trigger`](Self::trigger) makes every acquire waiting with the token give
/// up promptly, leaving nothing held or queued, and every later one give up at
/// once without trying the lock. A triggered token stays triggered: use a new
/// one for the next operation. Clones share one state; one token may serve
/// any number of acquires on any threads.
///
/// [`acquire_cancellable`]: crate::BlockingLocks::acquire_cancellable
/// [`lock_name_cancellable`]: crate::BlockingLocks::lock_name_cancellable
#[derive(Debug, Clone, Default)]
pub struct CancelToken {
    inner: Arc<State>,
}

#[derive(Debug, Default)]
struct State {
    triggered: AtomicBool,
    notify: Notify,
}

impl CancelToken {
    /// A token, not triggered.
    pub fn new() -> Self {
        CancelToken::default()
    }

    /// Whether [`trigger`](Self::trigger) was called.
    pub fn is_triggered(&self) -> bool {
        self.inner.triggered.load(Ordering::SeqCst)
    }

    /// Cancels every acquire waiting with this token, and every later one.
    /// Triggering again does nothing. Not async-signal-safe.
    pub fn trigger(&self) {
        self.inner.triggered.store(true, Ordering::SeqCst);
        self.inner.notify.notify_waiters();
    }

    /// Completes once the token is triggered (at once if it already was).
    ///
    /// # Cancel safety
    /// Cancel safe: it only waits.
    pub async fn cancelled(&self) {
        // Created before the flag is read: `notify_waiters` wakes every
        // `Notified` that exists when it is called, polled or not, so a
        // trigger between the read and the await is not missed. Only
        // `trigger` notifies, after setting the flag.
        let notified = self.inner.notify.notified();
        if !self.is_triggered() {
            notified.await;
        }
    }
}
