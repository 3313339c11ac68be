//! `locks_cancel`: a handle that cancels acquires blocked in other threads.

use locks::CancelToken;

use crate::boundary::{fallible, infallible};
use crate::status::{locks_error, locks_status};

/// A cancellation handle for `locks_client_lock_cancellable` and
/// `locks_client_lock_name_cancellable`.
///
/// Created by `locks_cancel_new`; owned by the caller, who frees it with
/// `locks_cancel_free`. `locks_cancel_trigger`, from any thread, makes every
/// acquire waiting with the handle return `LOCKS_STATUS_CANCELLED`, and every
/// later one return it at once. A triggered handle stays triggered: use a new
/// handle for the next operation. One handle may be shared by any number of
/// acquires on any threads.
#[derive(Debug)]
pub struct locks_cancel {
    /// Shared with the acquires it was passed to: a spawned acquire task may
    /// outlive the call that started it by a moment.
    pub(crate) inner: CancelToken,
}

/// Creates a cancellation handle, not triggered.
///
/// On success stores the new handle in `*cancel_out`, owned by the caller,
/// who frees it with `locks_cancel_free`.
///
/// # Errors
/// `LOCKS_STATUS_NULL_ARGUMENT`.
///
/// # Safety
/// `cancel_out` and `err_out` are NULL or valid for writes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn locks_cancel_new(
    cancel_out: *mut *mut locks_cancel,
    err_out: *mut *mut locks_error,
) -> locks_status {
    fallible("locks_cancel_new", err_out, |call| {
        call.out(cancel_out, "cancel_out")?;
        let cancel = Box::new(locks_cancel {
            inner: CancelToken::new(),
        });
        // SAFETY: checked not NULL above; valid for writes per the contract.
        unsafe { cancel_out.write(Box::into_raw(cancel)) };
        Ok(())
    })
}

/// Triggers a cancellation handle: every acquire waiting with it returns
/// `LOCKS_STATUS_CANCELLED` promptly, from whichever thread it is blocked
/// in, leaving nothing held or queued; every later acquire given it returns
/// `LOCKS_STATUS_CANCELLED` at once, without trying the lock. An acquire
/// that got its lock before the trigger is not affected: its guard is held.
///
/// May be called from any thread, concurrently with the acquires using the
/// handle, and any number of times (triggering again does nothing). Not
/// async-signal-safe: do not call it from a signal handler.
///
/// # Errors
/// `LOCKS_STATUS_NULL_ARGUMENT`.
///
/// # Safety
/// `cancel` is NULL or a live handle (not freed, and not being freed by
/// another thread); `err_out` is NULL or valid for writes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn locks_cancel_trigger(
    cancel: *const locks_cancel,
    err_out: *mut *mut locks_error,
) -> locks_status {
    fallible("locks_cancel_trigger", err_out, |call| {
        // SAFETY: NULL or a live handle per the contract.
        let cancel = unsafe { call.arg(cancel, "cancel") }?;
        cancel.inner.trigger();
        Ok(())
    })
}

/// Whether the handle was triggered. False when `cancel` is NULL.
///
/// # Safety
/// `cancel` is NULL or a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn locks_cancel_is_triggered(cancel: *const locks_cancel) -> bool {
    infallible(false, || {
        // SAFETY: NULL or a live handle per the contract.
        unsafe { cancel.as_ref() }.is_some_and(|c| c.inner.is_triggered())
    })
}

/// Frees a cancellation handle. `locks_cancel_free(NULL)` does nothing.
///
/// # Safety
/// `cancel` is NULL or a live handle, not used afterwards: no acquire that
/// was given it may still be running, and no other thread may trigger it
/// any more.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn locks_cancel_free(cancel: *mut locks_cancel) {
    infallible((), || {
        if !cancel.is_null() {
            // SAFETY: the caller hands back ownership of a live handle.
            drop(unsafe { Box::from_raw(cancel) });
        }
    });
}
