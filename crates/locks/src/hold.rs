//! The end of each hold, told to whoever asked: a `tracing` event (target
//! `locks::hold`) when a subscriber wants one, and the metrics when the
//! configuration asks for them.
//!
//! The event is `debug` for a release, with how long the lock was held, and
//! a `warn` for a lock found lost when it was let go (another holder may have
//! run concurrently). While a lock of a server is held, a subscriber of
//! `locks::state` warnings also hears when that lock goes at risk, comes back
//! or is lost, with its name, catalog id, scope and backend (a task per held
//! lock, ended with the hold). A guard is watched only when someone listens:
//! without a subscriber and metrics, a hold costs nothing more.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use locks_core::{LockGuard, LockName, LockRequest, LockState, ReleaseObserver, Scope};
use tokio::sync::{oneshot, watch};
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
    // every release; only locks of servers can be lost. The cheap checks
    // (cached by `tracing`) come first.
    let warn_hold = tracing::enabled!(target: "locks::hold", Level::WARN);
    let warn_state = tracing::enabled!(target: "locks::state", Level::WARN);
    let can_be_lost = (warn_hold || warn_state) && guard.can_be_lost();
    let trace = traced() || warn_hold && can_be_lost;
    let follow_state = warn_state && can_be_lost && tokio::runtime::Handle::try_current().is_ok();
    let observer: Arc<dyn ReleaseObserver> = match (trace || follow_state, metrics) {
        (false, None) => return,
        (false, Some(metrics)) => metrics,
        (true, then) => {
            let fields = Fields {
                name: guard.name().clone(),
                id: request.label.clone(),
                scope: request.scope,
                backend,
            };
            let stop = follow_state.then(|| follow(guard.watch_state(), fields.clone()));
            // The hold as a span, from now to the release (its event's parent).
            let span = tracing::debug_span!(
                target: "locks::hold",
                "locks.hold",
                lock = %fields.name,
                id = fields.id(),
                scope = fields.scope.as_str(),
                backend = fields.backend,
            );
            Arc::new(HoldTrace {
                fields,
                stop: Mutex::new(stop),
                span,
                then,
            })
        }
    };
    guard.observe_release(observer);
}

/// What every event about one hold carries.
#[derive(Clone)]
struct Fields {
    name: LockName,
    id: Option<String>,
    scope: Scope,
    backend: &'static str,
}

impl Fields {
    fn id(&self) -> &str {
        self.id.as_deref().unwrap_or("-")
    }
}

/// Follows one held lock's state until its hold ends (the returned sender is
/// used or dropped), saying each change with the lock's fields.
fn follow(mut state: watch::Receiver<LockState>, fields: Fields) -> oneshot::Sender<()> {
    let (stop, mut stopped) = oneshot::channel();
    state.mark_unchanged();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = &mut stopped => return,
                changed = state.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
            }
            let now = *state.borrow_and_update();
            let (lock, id, scope, backend) = (
                &fields.name,
                fields.id(),
                fields.scope.as_str(),
                fields.backend,
            );
            match now {
                LockState::AtRisk => tracing::warn!(
                    target: "locks::state",
                    lock = %lock, id, scope, backend,
                    "lock at risk: the backend cannot confirm it; stop starting new work under it"
                ),
                LockState::Held => tracing::info!(
                    target: "locks::state",
                    lock = %lock, id, scope, backend,
                    "lock safe again"
                ),
                LockState::Lost => {
                    tracing::warn!(
                        target: "locks::state",
                        lock = %lock, id, scope, backend,
                        "lock lost while held: another holder may enter; stop the critical section"
                    );
                    return;
                }
                LockState::Released => return,
            }
        }
    });
    stop
}

/// Says when one hold ended, stops following its state, then tells the next
/// observer (the metrics).
struct HoldTrace {
    fields: Fields,
    /// Ends the task following the lock's state, if there is one.
    stop: Mutex<Option<oneshot::Sender<()>>>,
    /// The hold, closed with the release.
    span: tracing::Span,
    then: Option<Arc<dyn ReleaseObserver>>,
}

impl ReleaseObserver for HoldTrace {
    fn released(&self, held_for: Duration, lost: bool) {
        if let Some(stop) = self
            .stop
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            let _ = stop.send(());
        }
        let _in_hold = self.span.enter();
        let held_ms = held_for.as_secs_f64() * 1e3;
        let id = self.fields.id();
        if lost {
            tracing::warn!(
                target: "locks::hold",
                lock = %self.fields.name,
                id,
                scope = self.fields.scope.as_str(),
                backend = self.fields.backend,
                held_ms,
                "lock was lost while held: another holder may have run concurrently"
            );
        } else {
            tracing::debug!(
                target: "locks::hold",
                lock = %self.fields.name,
                id,
                scope = self.fields.scope.as_str(),
                backend = self.fields.backend,
                held_ms,
                "lock released"
            );
        }
        if let Some(then) = &self.then {
            then.released(held_for, lost);
        }
    }
}
