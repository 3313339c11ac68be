//! The end of each hold, told to whoever asked: a `tracing` event (target
//! `locks::hold`) when a subscriber wants one, and the metrics when the
//! configuration asks for them.
//!
//! The event is `debug` for a release, with how long the lock was held, and
//! a `warn` for a lock found lost when it was let go (another holder may have
//! run concurrently). A guard is watched only when someone listens: without
//! a subscriber and metrics, a hold costs nothing more.

use std::sync::Arc;
use std::time::Duration;

use locks_core::{LockGuard, LockName, LockRequest, ReleaseObserver, Scope};
use tracing::Level;

/// Whether a subscriber wants the release of every lock.
#[inline]
pub(crate) fn traced() -> bool {
    tracing::enabled!(target: "locks::hold", Level::DEBUG)
}

/// Has `guard`, acquired for `request` on a `backend` (kind), tell the
/// subscriber and `metrics` (if any) when its hold ends.
#[inline]
pub(crate) fn watch(
    guard: &mut LockGuard,
    request: &LockRequest,
    backend: &'static str,
    metrics: Option<Arc<dyn ReleaseObserver>>,
) {
    // A loss is worth a warning even to a subscriber that does not want
    // every release; only locks of servers can be lost.
    let trace =
        traced() || guard.can_be_lost() && tracing::enabled!(target: "locks::hold", Level::WARN);
    let observer: Arc<dyn ReleaseObserver> = match (trace, metrics) {
        (false, None) => return,
        (false, Some(metrics)) => metrics,
        (true, then) => Arc::new(HoldTrace {
            name: guard.name().clone(),
            id: request.label.clone(),
            scope: request.scope,
            backend,
            then,
        }),
    };
    guard.observe_release(observer);
}

/// Says when one hold ended, then tells the next observer (the metrics).
struct HoldTrace {
    name: LockName,
    id: Option<String>,
    scope: Scope,
    backend: &'static str,
    then: Option<Arc<dyn ReleaseObserver>>,
}

impl ReleaseObserver for HoldTrace {
    fn released(&self, held_for: Duration, lost: bool) {
        let held_ms = held_for.as_secs_f64() * 1e3;
        let id = self.id.as_deref().unwrap_or("-");
        if lost {
            tracing::warn!(
                target: "locks::hold",
                lock = %self.name,
                id,
                scope = self.scope.as_str(),
                backend = self.backend,
                held_ms,
                "lock was lost while held: another holder may have run concurrently"
            );
        } else {
            tracing::debug!(
                target: "locks::hold",
                lock = %self.name,
                id,
                scope = self.scope.as_str(),
                backend = self.backend,
                held_ms,
                "lock released"
            );
        }
        if let Some(then) = &self.then {
            then.released(held_for, lost);
        }
    }
}
