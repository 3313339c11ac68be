//! Acquiring: try the key, and while someone else holds it, wait for a
//! release notice (from a holder of ours) or look again after a backed-off
//! pause (a holder that publishes nothing, such as tooz).

use std::sync::Arc;
use std::time::Duration;

use locks_core::{Backend, ErrorKind, LocalTurn, LockName, LockRequest, Result, Wait};
use tokio::time::Instant;

use crate::conn::RETRY_PAUSE;
use crate::core::{Attempt, Core};
use crate::held::{Contender, RedisHeld};
use crate::notify::Subscription;

/// The first pause before looking again at a key whose holder publishes
/// nothing; it doubles up to [`MAX_RECHECK`].
pub(crate) const MIN_RECHECK: Duration = Duration::from_millis(10);

/// The longest pause between looks at a key whose holder publishes nothing:
/// the 100 ms redis-py's blocking acquire (tooz's) sleeps between tries.
pub(crate) const MAX_RECHECK: Duration = Duration::from_millis(100);

/// Acquires `request.name` for the task holding `local` (its turn among the
/// tasks of this backend). Returns the held lock and its fencing token.
///
/// Cancel safe: a dropped acquire deletes the key it may have set, in the
/// background, before the local turn (and so the next local acquire of the
/// name) moves on.
pub(crate) async fn acquire(
    core: &Arc<Core>,
    backend: &dyn Backend,
    request: &LockRequest,
    local: LocalTurn<LockName>,
) -> Result<(RedisHeld, u64)> {
    let key = core.key_of(request.name.as_str());
    let mut contender = Contender::new(
        Arc::clone(core),
        local,
        key.clone(),
        &core.identity_of(request),
    );
    // A waiter with a timeout keeps trying through an outage until its
    // timeout (the backend then says what is down); the others report it.
    let ride_out = matches!(request.wait, Wait::Timeout(_));
    let mut subscription: Option<Subscription> = None;
    let mut recheck = MIN_RECHECK;
    loop {
        if let Some(subscription) = &mut subscription {
            subscription.mark_seen();
        }
        let sent = Instant::now();
        contender.armed = true;
        let attempt = match core.try_take(&key, &contender.token).await {
            Ok(attempt) => attempt,
            Err(e) if ride_out && e.kind() == ErrorKind::Unavailable => {
                // The request may have been applied: stay armed, so a
                // cancellation deletes the key; the next try finds it ours.
                tokio::time::sleep(RETRY_PAUSE).await;
                continue;
            }
            Err(e) => return Err(e),
        };
        let (ours, expires_in) = match attempt {
            Attempt::Taken(fence) => return Ok((contender.into_held(&request.name, sent), fence)),
            Attempt::Busy { ours, expires_in } => (ours, expires_in),
        };
        // Someone else holds the key; none of ours exists.
        contender.armed = false;
        if request.wait == Wait::TryOnce {
            return Err(request.would_block(&backend.describe()));
        }
        let Some(subscription) = &mut subscription else {
            // Subscribe first, then look again: a release after that look
            // cannot go unheard.
            subscription = Some(core.notifier.subscribe(&Core::channel_of(&key)));
            continue;
        };
        let pause = match expires_in {
            // A holder of ours publishes its release; without one (crashed)
            // the key expires: look again then.
            Some(left) if ours && subscription.is_live() => left.max(MIN_RECHECK),
            _ => {
                let pause = recheck;
                recheck = (recheck * 2).min(MAX_RECHECK);
                pause
            }
        };
        tokio::select! {
            () = subscription.changed() => recheck = MIN_RECHECK,
            () = tokio::time::sleep(pause) => {}
        }
    }
}
