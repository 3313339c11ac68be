//! `locks_guard`: a held lock, read, released and freed from C.

use std::ffi::{CString, c_char};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use locks::{LockGuard, LockName, LockState};

use crate::boundary::{c_string, fallible, infallible};
use crate::client::{ClientInner, locks_scope, not_in_runtime};
use crate::status::{locks_error, locks_status};

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
    held: Mutex<Option<LockGuard>>,
    name: LockName,
    /// `name` as a C string, made the first time C asks for it.
    c_name: OnceLock<CString>,
    scope: locks_scope,
    token: u64,
    client: Arc<ClientInner>,
}

impl locks_guard {
    pub(crate) fn new(client: Arc<ClientInner>, guard: LockGuard) -> Self {
        locks_guard {
            name: guard.name().clone(),
            c_name: OnceLock::new(),
            scope: guard.scope().into(),
            token: guard.token(),
            held: Mutex::new(Some(guard)),
            client,
        }
    }

    fn take(&self) -> Option<LockGuard> {
        self.held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
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
        let Some(guard) = (unsafe { guard.as_ref() }) else {
            return locks_lock_state::Released;
        };
        let held = guard.held.lock().unwrap_or_else(PoisonError::into_inner);
        held.as_ref()
            .map_or(locks_lock_state::Released, |g| g.state().into())
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
        not_in_runtime()?;
        let Some(held) = guard.take() else {
            return Err(call.fail(
                locks_status::AlreadyReleased,
                format_args!(
                    "lock `{}` was already released by this guard",
                    guard.name.as_str()
                ),
            ));
        };
        guard.client.release(held)
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
        if let Some(held) = guard.take() {
            let _ = guard.client.release(held);
        }
    });
}
