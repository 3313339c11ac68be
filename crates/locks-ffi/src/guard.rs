//! `locks_guard`: a held lock, read, released and freed from C.

use std::cell::UnsafeCell;
use std::ffi::{CString, c_char, c_int};
use std::mem::ManuallyDrop;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use locks::{BlockingLocks, LockGuard, LockName, LockState};
use tokio::sync::watch;

use crate::boundary::{FfiResult, c_string, fallible, infallible};
use crate::status::{locks_error, locks_status};
use crate::types::{ClientInner, locks_scope};

/// Whether a guard's lock is still safely held.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum locks_lock_state {
    /// The lock is held.
    Held = 0,
    /// The connection to the server is interrupted and the lock may be lost
    /// soon: start no new work under it.
    AtRisk = 1,
    /// The lock is gone (lease or session expired): another holder may have
    /// it. Stop the critical section.
    Lost = 2,
    /// The guard was released.
    Released = 3,
}

impl From<LockState> for locks_lock_state {
    fn from(state: LockState) -> Self {
        match state {
            LockState::Held => locks_lock_state::Held,
            LockState::AtRisk => locks_lock_state::AtRisk,
            LockState::Lost => locks_lock_state::Lost,
            LockState::Released => locks_lock_state::Released,
        }
    }
}

/// A lock acquired by `locks_client_lock` or `locks_client_lock_name`.
///
/// Owned by the caller: release it with `locks_guard_release` (which reports
/// errors), then free it with `locks_guard_free` (which releases first if that
/// was not done). It keeps its client's backends alive, so it may outlive the
/// `locks_client` handle.
#[derive(Debug)]
pub struct locks_guard {
    // Declared first so that it drops before the client it may need.
    held: TakeOnce<LockGuard>,
    name: LockName,
    /// `name` as a C string, made the first time C asks for it.
    c_name: OnceLock<CString>,
    scope: locks_scope,
    token: u64,
    /// The lock's state while held; `None` for a lock that cannot be lost
    /// (memory, lock files), which is `Held` until released.
    state: Option<watch::Receiver<LockState>>,
    /// The client, for a release that needs its runtime; `None` for a local
    /// lock, which is released on the calling thread (its table lives as
    /// long as the lock).
    client: Option<Arc<ClientInner>>,
    /// What `locks_guard_wait_state` blocks on, made by the first wait (most
    /// guards are never waited on).
    mirror: OnceLock<Arc<StateMirror>>,
}

impl locks_guard {
    pub(crate) fn new(client: &Arc<ClientInner>, guard: LockGuard) -> Self {
        let local = guard.is_local();
        locks_guard {
            name: guard.name().clone(),
            c_name: OnceLock::new(),
            scope: guard.scope().into(),
            token: guard.token(),
            state: guard.can_be_lost().then(|| guard.watch_state()),
            client: (!local).then(|| Arc::clone(client)),
            held: TakeOnce::new(guard),
            mirror: OnceLock::new(),
        }
    }

    /// The state now: `Released` once taken out, else the backend's.
    fn current_state(&self) -> locks_lock_state {
        if self.held.is_taken() {
            return locks_lock_state::Released;
        }
        self.state
            .as_ref()
            .map_or(locks_lock_state::Held, |rx| (*rx.borrow()).into())
    }

    /// Blocks until the state is no longer `seen` or `timeout` (`None`:
    /// never) passes, and returns the state then.
    fn wait_state(&self, seen: c_int, timeout: Option<Duration>) -> locks_lock_state {
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        let mirror = self.follow_state();
        let mut changed = mirror
            .changed
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        loop {
            // Read under the mirror's mutex, which a release and the follower
            // take before they notify: no change slips between read and wait.
            let now = self.current_state();
            if now as c_int != seen {
                return now;
            }
            changed = match deadline {
                None => mirror
                    .wake
                    .wait(changed)
                    .unwrap_or_else(PoisonError::into_inner),
                Some(deadline) => {
                    let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                        return now;
                    };
                    let (changed, _) = mirror
                        .wake
                        .wait_timeout(changed, left)
                        .unwrap_or_else(PoisonError::into_inner);
                    changed
                }
            };
        }
    }

    /// The guard's mirror, made on the first call, with a task on the
    /// client's runtime that wakes the waiters on each change of a lock that
    /// can be lost until it is lost or released.
    fn follow_state(&self) -> &Arc<StateMirror> {
        let mirror = self.mirror.get_or_init(|| {
            let mirror = Arc::new(StateMirror::default());
            if let (Some(rx), Some(client)) = (&self.state, &self.client) {
                let mut rx = rx.clone();
                let follower = Arc::clone(&mirror);
                client.blocking.runtime().spawn(async move {
                    loop {
                        tokio::select! {
                            changed = rx.changed() => {
                                if changed.is_err() {
                                    break;
                                }
                                let lost = *rx.borrow_and_update() == LockState::Lost;
                                follower.notify();
                                if lost {
                                    break;
                                }
                            }
                            () = follower.released.notified() => break,
                        }
                    }
                });
            }
            mirror
        });
        // After the mirror exists: either the release sees this mark and
        // wakes the mirror, or this waiter sees the lock taken out.
        self.held.watch();
        mirror
    }

    /// Ends the lock: the first call takes it and releases it, later ones
    /// (from any thread) get `None`.
    fn release(&self) -> Option<FfiResult> {
        let (held, watched) = self.held.take()?;
        if watched && let Some(mirror) = self.mirror.get() {
            mirror.released.notify_one();
            mirror.notify();
        }
        Some(match held.try_release_now() {
            Ok(released) => released.map_err(Into::into),
            Err(held) => match &self.client {
                Some(client) => client.blocking.release(held).map_err(Into::into),
                None => unreachable!("only local locks have no client, and they release now"),
            },
        })
    }
}

/// Where threads wait for a guard's state to change: woken by the follower
/// task on each change of the backend's state and by the release.
#[derive(Debug, Default)]
struct StateMirror {
    /// Taken around each check of the state and each wake-up.
    changed: Mutex<()>,
    wake: Condvar,
    /// Ends the follower task when the guard is released.
    released: tokio::sync::Notify,
}

impl StateMirror {
    fn notify(&self) {
        drop(self.changed.lock().unwrap_or_else(PoisonError::into_inner));
        self.wake.notify_all();
    }
}

/// A value that one caller, on any thread, can take out once; cheaper than a
/// mutex around an `Option` (one atomic read-modify-write), and all a guard
/// needs: its lock is only ever taken out to be released. It also records
/// whether anyone waits for the taking ([`watch`](Self::watch)), in the same
/// atomic, so that a release pays for waking waiters only when there are any.
struct TakeOnce<T> {
    /// [`TAKEN`] and [`WATCHED`].
    flags: AtomicU8,
    value: UnsafeCell<ManuallyDrop<T>>,
}

/// The value was taken out.
const TAKEN: u8 = 1;
/// Someone waits for the value to be taken out.
const WATCHED: u8 = 2;

// SAFETY: the value is only reached by the one caller whose `fetch_or` set
// `TAKEN`, which moves it out; it is never shared, only sent.
unsafe impl<T: Send> Sync for TakeOnce<T> {}

impl<T> TakeOnce<T> {
    fn new(value: T) -> Self {
        TakeOnce {
            flags: AtomicU8::new(0),
            value: UnsafeCell::new(ManuallyDrop::new(value)),
        }
    }

    fn is_taken(&self) -> bool {
        self.flags.load(Ordering::Acquire) & TAKEN != 0
    }

    /// Marks the value watched. Both marks are read-modify-writes of one
    /// atomic, so of a `watch` and a `take` the later one sees the earlier.
    fn watch(&self) {
        self.flags.fetch_or(WATCHED, Ordering::AcqRel);
    }

    /// The value, and whether it was watched before; `None` once taken.
    fn take(&self) -> Option<(T, bool)> {
        let before = self.flags.fetch_or(TAKEN, Ordering::AcqRel);
        if before & TAKEN != 0 {
            return None;
        }
        // SAFETY: this caller set `TAKEN`, so it is the only one ever to
        // reach the value, which is still there.
        let value = unsafe { ManuallyDrop::take(&mut *self.value.get()) };
        Some((value, before & WATCHED != 0))
    }
}

impl<T> Drop for TakeOnce<T> {
    fn drop(&mut self) {
        if *self.flags.get_mut() & TAKEN == 0 {
            // SAFETY: not taken, so still there; `&mut self` is exclusive.
            unsafe { ManuallyDrop::drop(self.value.get_mut()) }
        }
    }
}

impl<T> std::fmt::Debug for TakeOnce<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TakeOnce")
            .field("taken", &self.is_taken())
            .finish_non_exhaustive()
    }
}

/// The full lock name, as rendered from the template with the configured
/// prefix (`"infinidat-10.0.0.1-lock"`). Borrowed from the guard: valid until
/// `locks_guard_free`, also after release. NULL when `guard` is NULL.
///
/// # Safety
/// `guard` is NULL or a live guard.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn locks_guard_name(guard: *const locks_guard) -> *const c_char {
    infallible(std::ptr::null(), || {
        // SAFETY: NULL or a live guard per the contract.
        unsafe { guard.as_ref() }.map_or(std::ptr::null(), |g| {
            g.c_name.get_or_init(|| c_string(g.name.as_str())).as_ptr()
        })
    })
}

/// The scope the lock was taken in; `LOCKS_SCOPE_PROCESS` when `guard` is NULL.
///
/// # Safety
/// `guard` is NULL or a live guard.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn locks_guard_scope(guard: *const locks_guard) -> locks_scope {
    infallible(locks_scope::Process, || {
        // SAFETY: NULL or a live guard per the contract.
        unsafe { guard.as_ref() }.map_or(locks_scope::Process, |g| g.scope)
    })
}

/// The fencing token of this holding: it grows with every new holder of the
/// lock, so a resource that remembers the highest token it saw can refuse a
/// late write from a holder whose lock was lost. 0 when `guard` is NULL.
///
/// # Safety
/// `guard` is NULL or a live guard.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn locks_guard_token(guard: *const locks_guard) -> u64 {
    infallible(0, || {
        // SAFETY: NULL or a live guard per the contract.
        unsafe { guard.as_ref() }.map_or(0, |g| g.token)
    })
}

/// The current state of the lock (it changes while held when a lease or
/// session is lost); `LOCKS_LOCK_STATE_RELEASED` when released or when `guard`
/// is NULL.
///
/// # Safety
/// `guard` is NULL or a live guard.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn locks_guard_state(guard: *const locks_guard) -> locks_lock_state {
    infallible(locks_lock_state::Released, || {
        // SAFETY: NULL or a live guard per the contract.
        unsafe { guard.as_ref() }.map_or(locks_lock_state::Released, locks_guard::current_state)
    })
}

/// Blocks the calling thread until the guard's state is no longer `seen` (a
/// `LOCKS_LOCK_STATE_*` value, usually the state last read; any other value
/// returns at once) or `timeout_ms` passes, and returns the
/// state then: a critical section can wait for its lock to be lost instead
/// of polling `locks_guard_state`. `timeout_ms` < 0 waits as long as it
/// takes, 0 returns the state at once. A release by another thread ends the
/// wait with `LOCKS_LOCK_STATE_RELEASED`; a lock that cannot be lost (memory,
/// lock files) changes only then. Returns `LOCKS_LOCK_STATE_RELEASED` when
/// `guard` is NULL.
///
/// The first wait on a guard starts a task that follows its state until it
/// is lost or released. A brief `LOCKS_LOCK_STATE_AT_RISK` that is over
/// before the waiter runs can be missed; `_LOST` and `_RELEASED` are final
/// and never missed.
///
/// # Safety
/// `guard` is NULL or a live guard, which another thread may release (not
/// free) during the wait.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn locks_guard_wait_state(
    guard: *const locks_guard,
    seen: c_int,
    timeout_ms: i64,
) -> locks_lock_state {
    infallible(locks_lock_state::Released, || {
        // SAFETY: NULL or a live guard per the contract.
        let Some(guard) = (unsafe { guard.as_ref() }) else {
            return locks_lock_state::Released;
        };
        let timeout = u64::try_from(timeout_ms).ok().map(Duration::from_millis);
        guard.wait_state(seen, timeout)
    })
}

/// Whether the lock was lost while held: the critical section is no longer
/// protected. False when released or when `guard` is NULL.
///
/// # Safety
/// `guard` is NULL or a live guard.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn locks_guard_is_lost(guard: *const locks_guard) -> bool {
    // SAFETY: the same contract.
    infallible(
        false,
        || unsafe { locks_guard_state(guard) } == locks_lock_state::Lost,
    )
}

/// Releases the lock, blocking until the backend confirms. The guard stays
/// allocated (its name, scope and token stay readable) until
/// `locks_guard_free`. Releasing again is safe and returns
/// `LOCKS_STATUS_ALREADY_RELEASED`.
///
/// # Errors
/// `LOCKS_STATUS_NULL_ARGUMENT`, `_ALREADY_RELEASED`, `_LOST` (the lock had
/// been lost before release: the critical section was not protected to the
/// end), `_UNAVAILABLE` (the release could not be confirmed; the lock then
/// expires with its lease or session). After any of the last two the lock is
/// no longer held by this guard.
///
/// # Safety
/// `guard` is NULL or a live guard; `err_out` is NULL or valid for writes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn locks_guard_release(
    guard: *mut locks_guard,
    err_out: *mut *mut locks_error,
) -> locks_status {
    fallible("locks_guard_release", err_out, |call| {
        // SAFETY: NULL or a live guard per the contract.
        let guard = unsafe { call.arg(guard, "guard") }?;
        // Refused before the guard is taken, so that the lock stays held and
        // the guard can still be released from a thread outside the runtime.
        BlockingLocks::check_outside_runtime()?;
        guard.release().unwrap_or_else(|| {
            Err(call.fail(
                locks_status::AlreadyReleased,
                format_args!(
                    "lock `{}` was already released by this guard",
                    guard.name.as_str()
                ),
            ))
        })
    })
}

/// Frees a guard, releasing its lock first if `locks_guard_release` was not
/// called (any release error is then ignored: call `locks_guard_release`
/// to see it). `locks_guard_free(NULL)` does nothing.
///
/// # Safety
/// `guard` is NULL or a live guard, not used afterwards (nor the strings read
/// from it) and not in use by another thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn locks_guard_free(guard: *mut locks_guard) {
    infallible((), || {
        if guard.is_null() {
            return;
        }
        // SAFETY: the caller hands back ownership of a live guard.
        let guard = unsafe { Box::from_raw(guard) };
        if !guard.held.is_taken() {
            let _ = guard.release();
        }
    });
}
