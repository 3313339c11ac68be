//! The panic boundary every export runs in, and checked conversion of C arguments.
//!
//! Every exported function's body is a closure passed to [`fallible`] (calls
//! that return a [`locks_status`]) or [`infallible`] (accessors and `_free`
//! functions, which return a documented default instead). Both catch
//! unwinding, so no panic ever crosses into C.

use std::any::Any;
use std::ffi::{CStr, CString, c_char};
use std::fmt::Display;
use std::panic::{AssertUnwindSafe, catch_unwind};

use crate::status::{locks_error, locks_status};

/// Why a call failed: the status to return and the message for `err_out`.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) status: locks_status,
    pub(crate) message: String,
}

impl From<locks::Error> for Failure {
    fn from(e: locks::Error) -> Self {
        Failure {
            status: locks_status::from_kind(e.kind()),
            message: e.report(),
        }
    }
}

pub(crate) type FfiResult<T = ()> = Result<T, Failure>;

/// The exported function being run, for messages about its arguments.
#[derive(Debug)]
pub(crate) struct Call {
    pub(crate) name: &'static str,
}

impl Call {
    pub(crate) fn fail(&self, status: locks_status, message: impl Display) -> Failure {
        Failure {
            status,
            message: format!("{}: {message}", self.name),
        }
    }

    fn null(&self, arg: &str) -> Failure {
        self.fail(
            locks_status::NullArgument,
            format_args!("argument `{arg}` is NULL"),
        )
    }

    /// A shared reference from a pointer argument that must not be NULL.
    ///
    /// # Safety
    /// `ptr` is NULL or valid for reads as a `T` for `'a`.
    pub(crate) unsafe fn arg<'a, T>(&self, ptr: *const T, arg: &str) -> FfiResult<&'a T> {
        // SAFETY: per this function's contract.
        unsafe { ptr.as_ref() }.ok_or_else(|| self.null(arg))
    }

    /// Checks that an out-parameter is not NULL, before any work is done, so
    /// that nothing is acquired that could not be handed back.
    pub(crate) fn out<T>(&self, ptr: *mut T, arg: &str) -> FfiResult<()> {
        if ptr.is_null() {
            Err(self.null(arg))
        } else {
            Ok(())
        }
    }

    /// A `&str` from a NUL-terminated C string that must not be NULL and must be UTF-8.
    ///
    /// # Safety
    /// `ptr` is NULL or points to a NUL-terminated string valid for `'a`.
    pub(crate) unsafe fn str<'a>(&self, ptr: *const c_char, arg: &str) -> FfiResult<&'a str> {
        if ptr.is_null() {
            return Err(self.null(arg));
        }
        // SAFETY: non-NULL and NUL-terminated per this function's contract.
        let bytes = unsafe { CStr::from_ptr(ptr) }.to_bytes();
        if bytes.is_ascii() {
            // SAFETY: ASCII is UTF-8. (The common case, checked a word at a
            // time, which costs less than full UTF-8 validation.)
            return Ok(unsafe { std::str::from_utf8_unchecked(bytes) });
        }
        std::str::from_utf8(bytes).map_err(|e| {
            self.fail(
                locks_status::InvalidUtf8,
                format_args!(
                    "argument `{arg}` is not valid UTF-8 (invalid byte at offset {})",
                    e.valid_up_to()
                ),
            )
        })
    }
}

/// Runs the body of a fallible export.
///
/// Returns the body's status; on failure, and when `err_out` is not NULL,
/// stores a new `locks_error` (owned by the caller) in `*err_out`. A panic
/// becomes [`locks_status::Panic`].
pub(crate) fn fallible(
    name: &'static str,
    err_out: *mut *mut locks_error,
    body: impl FnOnce(&Call) -> FfiResult,
) -> locks_status {
    let call = Call { name };
    let result = catch_unwind(AssertUnwindSafe(|| body(&call)))
        .unwrap_or_else(|payload| Err(panicked(name, payload.as_ref())));
    match result {
        Ok(()) => locks_status::Ok,
        Err(failure) => {
            let status = failure.status;
            // Building the error object can only fail by aborting (out of memory),
            // but keep it behind the boundary all the same.
            let _ = catch_unwind(AssertUnwindSafe(|| {
                if !err_out.is_null() {
                    let err = Box::new(locks_error::new(status, &failure.message));
                    // SAFETY: the caller passes NULL or a pointer valid for writes.
                    unsafe { err_out.write(Box::into_raw(err)) };
                }
            }));
            status
        }
    }
}

/// Runs the body of an export that cannot report errors (accessors, `_free`),
/// returning `default` if it panics.
pub(crate) fn infallible<T>(default: T, body: impl FnOnce() -> T) -> T {
    catch_unwind(AssertUnwindSafe(body)).unwrap_or(default)
}

fn panicked(name: &str, payload: &(dyn Any + Send)) -> Failure {
    let what = payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("a non-string panic payload");
    Failure {
        status: locks_status::Panic,
        message: format!(
            "{name}: the library panicked ({what}); the call was abandoned. This is a bug in locks-ffi"
        ),
    }
}

/// A C string from Rust text; an interior NUL (possible in TOML strings)
/// becomes U+FFFD rather than truncating the text.
pub(crate) fn c_string(text: &str) -> CString {
    CString::new(text.replace('\0', "\u{FFFD}")).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_becomes_a_status_and_a_message() {
        let mut err: *mut locks_error = std::ptr::null_mut();
        let status = fallible("locks_test", &mut err, |_| panic!("boom"));
        assert_eq!(status, locks_status::Panic);
        assert!(!err.is_null());
        // SAFETY: `err` was just created by `fallible`.
        let err = unsafe { Box::from_raw(err) };
        assert_eq!(err.status, locks_status::Panic);
        let message = err.message.to_str().unwrap();
        assert!(
            message.contains("locks_test") && message.contains("boom"),
            "{message}"
        );

        let status = fallible("locks_test", std::ptr::null_mut(), |_| {
            std::panic::panic_any(7_u32)
        });
        assert_eq!(status, locks_status::Panic);
        assert_eq!(infallible(3, || panic!("boom")), 3);
    }

    #[test]
    fn success_leaves_err_out_alone() {
        let mut err: *mut locks_error = std::ptr::null_mut();
        assert_eq!(
            fallible("locks_test", &mut err, |_| Ok(())),
            locks_status::Ok
        );
        assert!(err.is_null());
    }

    #[test]
    fn interior_nul_is_replaced() {
        assert_eq!(c_string("a\0b").to_str().unwrap(), "a\u{FFFD}b");
    }
}
