//! `locks_status`, the error object `locks_error`, and the calls that read them.

use std::ffi::{CString, c_char, c_int};

use locks::ErrorKind;

use crate::boundary::infallible;

/// The result of every fallible call.
///
/// The numbers are pinned: they are only ever added, never renumbered or
/// reused. 1 to 16 follow the Rust `ErrorKind` one to one, in its order; 100
/// and up belong to the C boundary itself (its failures, and cancellation
/// through a `locks_cancel` handle).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum locks_status {
    /// Success.
    Ok = 0,
    /// A name template does not parse (unbalanced brace, malformed placeholder).
    InvalidTemplate = 1,
    /// Rendering a template needs a parameter the caller did not pass.
    MissingParameter = 2,
    /// The caller passed a parameter the template does not use.
    UnknownParameter = 3,
    /// A rendered or raw lock name is empty, too long, or holds control characters.
    InvalidName = 4,
    /// No catalog entry has the requested id.
    UnknownLock = 5,
    /// A catalog file is malformed or fails its lint.
    InvalidCatalog = 6,
    /// A configuration file, key, or backend URL is malformed or unknown.
    InvalidConfig = 7,
    /// The operation or backend is not available.
    Unsupported = 8,
    /// A try-once acquire (`timeout_ms` 0) found the lock held by someone else.
    WouldBlock = 9,
    /// The lock could not be acquired before `timeout_ms` elapsed.
    Timeout = 10,
    /// The calling thread already holds this lock through this client.
    WouldDeadlock = 11,
    /// The lock was lost while held (lease or session expired).
    Lost = 12,
    /// The coordination server could not be reached or went away.
    Unavailable = 13,
    /// The server refused the credentials, or the OS refused access to a lock file.
    PermissionDenied = 14,
    /// An I/O error from the operating system.
    Io = 15,
    /// A bug or an invariant violation inside the library.
    Internal = 16,
    /// A pointer argument that must not be NULL was NULL (the message names it).
    NullArgument = 100,
    /// A string argument is not valid UTF-8 (the message names it).
    InvalidUtf8 = 101,
    /// The library panicked; the call was abandoned and nothing crossed the boundary.
    Panic = 102,
    /// The guard was already released (`locks_guard_release` called twice).
    AlreadyReleased = 103,
    /// An argument is out of range: a scope that is not a `LOCKS_SCOPE_*`
    /// value, or the same parameter key given twice.
    InvalidArgument = 104,
    /// The acquire was cancelled: its `locks_cancel` handle was triggered
    /// (`locks_cancel_trigger`) before or while it waited. Nothing is held.
    Cancelled = 105,
}

impl locks_status {
    /// Every status, in numeric order.
    const ALL: [locks_status; 23] = [
        locks_status::Ok,
        locks_status::InvalidTemplate,
        locks_status::MissingParameter,
        locks_status::UnknownParameter,
        locks_status::InvalidName,
        locks_status::UnknownLock,
        locks_status::InvalidCatalog,
        locks_status::InvalidConfig,
        locks_status::Unsupported,
        locks_status::WouldBlock,
        locks_status::Timeout,
        locks_status::WouldDeadlock,
        locks_status::Lost,
        locks_status::Unavailable,
        locks_status::PermissionDenied,
        locks_status::Io,
        locks_status::Internal,
        locks_status::NullArgument,
        locks_status::InvalidUtf8,
        locks_status::Panic,
        locks_status::AlreadyReleased,
        locks_status::InvalidArgument,
        locks_status::Cancelled,
    ];

    /// The status for `kind`. A kind added to the Rust enum after this crate
    /// was written maps to [`locks_status::Internal`].
    pub fn from_kind(kind: ErrorKind) -> Self {
        match kind {
            ErrorKind::InvalidTemplate => locks_status::InvalidTemplate,
            ErrorKind::MissingParameter => locks_status::MissingParameter,
            ErrorKind::UnknownParameter => locks_status::UnknownParameter,
            ErrorKind::InvalidName => locks_status::InvalidName,
            ErrorKind::UnknownLock => locks_status::UnknownLock,
            ErrorKind::InvalidCatalog => locks_status::InvalidCatalog,
            ErrorKind::InvalidConfig => locks_status::InvalidConfig,
            ErrorKind::Unsupported => locks_status::Unsupported,
            ErrorKind::WouldBlock => locks_status::WouldBlock,
            ErrorKind::Timeout => locks_status::Timeout,
            ErrorKind::WouldDeadlock => locks_status::WouldDeadlock,
            ErrorKind::Lost => locks_status::Lost,
            ErrorKind::Unavailable => locks_status::Unavailable,
            ErrorKind::PermissionDenied => locks_status::PermissionDenied,
            ErrorKind::Io => locks_status::Io,
            ErrorKind::Internal => locks_status::Internal,
            _ => locks_status::Internal,
        }
    }

    /// Every status, in numeric order.
    pub fn all() -> impl Iterator<Item = locks_status> {
        Self::ALL.into_iter()
    }

    /// The short lower-case name (`"would_block"`); for 1 to 16 it is the
    /// `ErrorKind`'s own name.
    pub fn as_str(self) -> &'static str {
        self.as_c_str().to_str().unwrap_or("unknown")
    }

    fn as_c_str(self) -> &'static std::ffi::CStr {
        match self {
            locks_status::Ok => c"ok",
            locks_status::InvalidTemplate => c"invalid_template",
            locks_status::MissingParameter => c"missing_parameter",
            locks_status::UnknownParameter => c"unknown_parameter",
            locks_status::InvalidName => c"invalid_name",
            locks_status::UnknownLock => c"unknown_lock",
            locks_status::InvalidCatalog => c"invalid_catalog",
            locks_status::InvalidConfig => c"invalid_config",
            locks_status::Unsupported => c"unsupported",
            locks_status::WouldBlock => c"would_block",
            locks_status::Timeout => c"timeout",
            locks_status::WouldDeadlock => c"would_deadlock",
            locks_status::Lost => c"lost",
            locks_status::Unavailable => c"unavailable",
            locks_status::PermissionDenied => c"permission_denied",
            locks_status::Io => c"io",
            locks_status::Internal => c"internal",
            locks_status::NullArgument => c"null_argument",
            locks_status::InvalidUtf8 => c"invalid_utf8",
            locks_status::Panic => c"panic",
            locks_status::AlreadyReleased => c"already_released",
            locks_status::InvalidArgument => c"invalid_argument",
            locks_status::Cancelled => c"cancelled",
        }
    }

    /// The status with this number, if there is one.
    pub fn from_int(value: c_int) -> Option<Self> {
        Self::ALL.into_iter().find(|s| *s as c_int == value)
    }
}

/// An error: a status and a human-readable message.
///
/// Created by the library on a failed call (through the call's `err_out`);
/// owned by the caller, who frees it with `locks_error_free`.
#[derive(Debug)]
pub struct locks_error {
    pub(crate) status: locks_status,
    pub(crate) message: CString,
}

impl locks_error {
    pub(crate) fn new(status: locks_status, message: &str) -> Self {
        locks_error {
            status,
            message: crate::boundary::c_string(message),
        }
    }
}

/// The status an error carries.
///
/// Returns `LOCKS_STATUS_OK` when `err` is NULL (no error).
///
/// # Safety
/// `err` is NULL or an error from this library that was not freed.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn locks_error_status(err: *const locks_error) -> locks_status {
    infallible(locks_status::Ok, || {
        // SAFETY: the caller passes NULL or a live error.
        unsafe { err.as_ref() }.map_or(locks_status::Ok, |e| e.status)
    })
}

/// The human-readable message of an error: what went wrong and, where it
/// helps, what to do about it, followed by its causes. UTF-8; a cause such as
/// a TOML parse error may add lines.
///
/// The string is owned by `err` and valid until `locks_error_free(err)`.
/// Returns NULL when `err` is NULL.
///
/// # Safety
/// `err` is NULL or an error from this library that was not freed.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn locks_error_message(err: *const locks_error) -> *const c_char {
    infallible(std::ptr::null(), || {
        // SAFETY: the caller passes NULL or a live error.
        unsafe { err.as_ref() }.map_or(std::ptr::null(), |e| e.message.as_ptr())
    })
}

/// Frees an error. `locks_error_free(NULL)` does nothing.
///
/// # Safety
/// `err` is NULL or an error from this library that was not freed; it must
/// not be used afterwards (nor the string `locks_error_message` returned).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn locks_error_free(err: *mut locks_error) {
    infallible((), || {
        if !err.is_null() {
            // SAFETY: the caller hands back ownership of a live error.
            drop(unsafe { Box::from_raw(err) });
        }
    });
}

/// The short, stable, lower-case name of a status (`"would_block"`), for
/// logs. `status` is an `int` so that any number can be passed; numbers that
/// are not a `LOCKS_STATUS_*` value give `"unknown"`.
///
/// The string is static: never free it.
#[unsafe(no_mangle)]
pub extern "C" fn locks_status_name(status: c_int) -> *const c_char {
    infallible(c"unknown".as_ptr(), || {
        locks_status::from_int(status).map_or(c"unknown".as_ptr(), |s| s.as_c_str().as_ptr())
    })
}
