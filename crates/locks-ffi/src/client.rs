//! `locks_client`: opening a client and acquiring locks, on
//! [`locks::BlockingLocks`] (its runtime, shutdown, re-entry modes and
//! cancellation); the types live in `types.rs`.

use std::ffi::{CStr, OsStr, c_char, c_int};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;

use locks::{BlockingLocks, Config, LockGuard, LockRequest, Params, Scope, Wait};

use crate::boundary::{Call, Failure, FfiResult, fallible, infallible};
use crate::cancel::locks_cancel;
use crate::guard::locks_guard;
use crate::status::{locks_error, locks_status};
use crate::types::{ClientInner, locks_client};

/// The most parameters one `locks_client_lock` call accepts. A larger
/// `n_params` is rejected with `LOCKS_STATUS_INVALID_ARGUMENT` (it is most
/// likely a negative count cast to `size_t`).
pub const LOCKS_MAX_PARAMS: usize = 1024;

fn scope_from_int(call: &Call, scope: c_int) -> FfiResult<Scope> {
    match scope {
        0 => Ok(Scope::Process),
        1 => Ok(Scope::Node),
        2 => Ok(Scope::Global),
        other => Err(call.fail(
            locks_status::InvalidArgument,
            format_args!(
                "argument `scope` is {other}, which is not a LOCKS_SCOPE_* value \
                 (0 process, 1 node, 2 global)"
            ),
        )),
    }
}

/// Opens a client on `config`, with a runtime of its own (threads named
/// `locks-ffi`).
fn open(config: Config) -> FfiResult<locks_client> {
    let blocking = BlockingLocks::open_with_thread_name(config, "locks-ffi")?;
    Ok(locks_client::new(blocking))
}

/// Runs an acquire, cancellable through `cancel` if given (see
/// [`BlockingLocks::acquire_cancellable`]).
fn acquire(
    call: &Call,
    client: &ClientInner,
    request: LockRequest,
    cancel: Option<&locks_cancel>,
) -> FfiResult<LockGuard> {
    let Some(cancel) = cancel else {
        return Ok(client.blocking.acquire(request)?);
    };
    let (name, scope) = (request.name.clone(), request.scope);
    client
        .blocking
        .acquire_cancellable(request, &cancel.inner)?
        .ok_or_else(|| cancelled(call, name.as_str(), scope))
}

/// The failure of an acquire of `name` that `locks_cancel_trigger` ended.
fn cancelled(call: &Call, name: &str, scope: Scope) -> Failure {
    call.fail(
        locks_status::Cancelled,
        format_args!(
            "acquiring lock `{name}` ({scope} scope) was cancelled through its locks_cancel handle"
        ),
    )
}

/// Hands a new client to C.
fn hand_out(client: locks_client, client_out: *mut *mut locks_client) {
    // SAFETY: the caller checked `client_out` (not NULL) and promised it is valid for writes.
    unsafe { client_out.write(Box::into_raw(Box::new(client))) };
}

/// Opens a client from a TOML configuration file (the same format as the Rust
/// `Config`: `prefix`, `catalog`, `[backends]`). A relative `catalog` path is
/// relative to the file's directory. Connects to the configured servers.
///
/// On success stores a new client in `*client_out`, owned by the caller, who
/// frees it with `locks_client_free`. `path` is borrowed for the call; it is
/// taken as bytes (a Unix path need not be UTF-8).
///
/// # Errors
/// `LOCKS_STATUS_NULL_ARGUMENT`, `_IO` / `_PERMISSION_DENIED` (unreadable file),
/// `_INVALID_CONFIG`, `_INVALID_CATALOG`, `_UNAVAILABLE` (server unreachable).
///
/// # Safety
/// `path` is NULL or a NUL-terminated string; `client_out` is NULL or valid
/// for writes; `err_out` is NULL or valid for writes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn locks_client_open_file(
    path: *const c_char,
    client_out: *mut *mut locks_client,
    err_out: *mut *mut locks_error,
) -> locks_status {
    fallible("locks_client_open_file", err_out, |call| {
        call.out(client_out, "client_out")?;
        if path.is_null() {
            return Err(call.fail(locks_status::NullArgument, "argument `path` is NULL"));
        }
        // SAFETY: not NULL, and NUL-terminated per the contract.
        let path = Path::new(OsStr::from_bytes(
            unsafe { CStr::from_ptr(path) }.to_bytes(),
        ));
        let client = open(Config::from_file(path)?)?;
        hand_out(client, client_out);
        Ok(())
    })
}

/// Opens a client from TOML text (the format of `locks_client_open_file`). A
/// relative `catalog` path is relative to the current directory.
///
/// On success stores a new client in `*client_out`, owned by the caller, who
/// frees it with `locks_client_free`. `toml` is borrowed for the call.
///
/// # Errors
/// As `locks_client_open_file`, and `LOCKS_STATUS_INVALID_UTF8`.
///
/// # Safety
/// `toml` is NULL or a NUL-terminated string; `client_out` and `err_out` are
/// NULL or valid for writes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn locks_client_open_string(
    toml: *const c_char,
    client_out: *mut *mut locks_client,
    err_out: *mut *mut locks_error,
) -> locks_status {
    fallible("locks_client_open_string", err_out, |call| {
        call.out(client_out, "client_out")?;
        // SAFETY: NULL or NUL-terminated per the contract.
        let text = unsafe { call.str(toml, "toml") }?;
        let config = Config::from_toml_str(text, Path::new("."), "<string>")?;
        hand_out(open(config)?, client_out);
        Ok(())
    })
}

/// Opens a client on the embedded defaults: the built-in catalog, Process
/// locks in memory, Node and Global locks as lock files in a per-user
/// directory (`$XDG_RUNTIME_DIR/locks` or `/tmp/locks-<uid>`), so Global locks
/// then exclude only this host (see `locks_client_warning`).
///
/// On success stores a new client in `*client_out`, owned by the caller, who
/// frees it with `locks_client_free`.
///
/// # Errors
/// `LOCKS_STATUS_NULL_ARGUMENT`, `_PERMISSION_DENIED` (the default directory
/// belongs to another user), `_IO`.
///
/// # Safety
/// `client_out` and `err_out` are NULL or valid for writes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn locks_client_open_default(
    client_out: *mut *mut locks_client,
    err_out: *mut *mut locks_error,
) -> locks_status {
    fallible("locks_client_open_default", err_out, |call| {
        call.out(client_out, "client_out")?;
        hand_out(open(Config::embedded())?, client_out);
        Ok(())
    })
}

/// Frees a client. `locks_client_free(NULL)` does nothing.
///
/// Catalog entries and warning strings read from the client become invalid.
/// Guards it handed out stay valid and must still be freed; the backends and
/// the runtime shut down when the client and all its guards are freed.
///
/// # Safety
/// `client` is NULL or a client from this library that was not freed, and no
/// other thread is using it.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn locks_client_free(client: *mut locks_client) {
    infallible((), || {
        if !client.is_null() {
            // SAFETY: the caller hands back ownership of a live client.
            drop(unsafe { Box::from_raw(client) });
        }
    });
}

/// Chooses whether an acquire detects a caller asking again for a lock it
/// already holds through this client (`LOCKS_STATUS_WOULD_DEADLOCK` at once
/// instead of waiting for itself).
///
/// On (the default), the holder is the calling OS thread: right for C
/// threads. Off, no re-entry is detected and a thread that asks again waits
/// for `timeout_ms` like any other waiter. Turn it off when callers are not OS
/// threads, for example goroutines, which Go moves between threads (the Go
/// package does). Set it before sharing the client between threads.
///
/// # Errors
/// `LOCKS_STATUS_NULL_ARGUMENT`.
///
/// # Safety
/// `client` is NULL or a live client; `err_out` is NULL or valid for writes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn locks_client_set_reentry_check(
    client: *mut locks_client,
    per_thread: bool,
    err_out: *mut *mut locks_error,
) -> locks_status {
    fallible("locks_client_set_reentry_check", err_out, |call| {
        // SAFETY: NULL or a live client per the contract.
        let client = unsafe { call.arg(client, "client") }?;
        client.inner.blocking.set_reentry_per_thread(per_thread);
        Ok(())
    })
}

/// The number of configuration warnings (for example: Global locks on a
/// host-local backend). 0 when `client` is NULL.
///
/// # Safety
/// `client` is NULL or a live client.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn locks_client_warnings_len(client: *const locks_client) -> usize {
    infallible(0, || {
        // SAFETY: NULL or a live client per the contract.
        unsafe { client.as_ref() }.map_or(0, |c| c.inner.warnings.len())
    })
}

/// Configuration warning `index` (0-based), for the caller to show. Borrowed
/// from the client: valid until `locks_client_free`. NULL when `client` is
/// NULL or `index` is out of range.
///
/// # Safety
/// `client` is NULL or a live client.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn locks_client_warning(
    client: *const locks_client,
    index: usize,
) -> *const c_char {
    infallible(std::ptr::null(), || {
        // SAFETY: NULL or a live client per the contract.
        unsafe { client.as_ref() }
            .and_then(|c| c.inner.warnings.get(index))
            .map_or(std::ptr::null(), |w| w.as_ptr())
    })
}

/// Reads the parallel key/value arrays of `locks_client_lock`.
///
/// # Safety
/// As `locks_client_lock`.
unsafe fn read_params(
    call: &Call,
    keys: *const *const c_char,
    values: *const *const c_char,
    n_params: usize,
) -> FfiResult<Params> {
    let mut params = Params::new();
    if n_params == 0 {
        return Ok(params);
    }
    if n_params > LOCKS_MAX_PARAMS {
        return Err(call.fail(
            locks_status::InvalidArgument,
            format_args!(
                "argument `n_params` is {n_params}, more than LOCKS_MAX_PARAMS ({LOCKS_MAX_PARAMS}); \
                 is it a negative count?"
            ),
        ));
    }
    for (array, arg) in [(keys, "keys"), (values, "values")] {
        if array.is_null() {
            return Err(call.fail(
                locks_status::NullArgument,
                format_args!("argument `{arg}` is NULL but `n_params` is {n_params}"),
            ));
        }
    }
    for i in 0..n_params {
        // SAFETY: both arrays hold `n_params` pointers per the contract, and
        // `n_params` is small enough for the offset not to overflow.
        let (key, value) = unsafe { (*keys.add(i), *values.add(i)) };
        // SAFETY: each element is NULL or NUL-terminated per the contract.
        let key = unsafe { call.str(key, &format!("keys[{i}]")) }?;
        // SAFETY: as above.
        let value = unsafe { call.str(value, &format!("values[{i}]")) }?;
        if params.get(key).is_some() {
            return Err(call.fail(
                locks_status::InvalidArgument,
                format_args!("parameter `{key}` is given twice (keys[{i}] repeats an earlier key)"),
            ));
        }
        params.insert(key, value);
    }
    Ok(params)
}

/// Hands a new guard to C.
fn hand_out_guard(client: &Arc<ClientInner>, guard: LockGuard, guard_out: *mut *mut locks_guard) {
    let guard = Box::new(locks_guard::new(client, guard));
    // SAFETY: the caller checked `guard_out` (not NULL) and promised it is valid for writes.
    unsafe { guard_out.write(Box::into_raw(guard)) };
}

/// The body of `locks_client_lock` and `locks_client_lock_cancellable`.
///
/// # Safety
/// As `locks_client_lock_cancellable`.
#[allow(clippy::too_many_arguments)]
unsafe fn lock_catalog(
    call: &Call,
    client: *const locks_client,
    id: *const c_char,
    keys: *const *const c_char,
    values: *const *const c_char,
    n_params: usize,
    timeout_ms: i64,
    cancel: *const locks_cancel,
    guard_out: *mut *mut locks_guard,
) -> FfiResult {
    // SAFETY (all four): per the contract.
    let client = unsafe { call.arg(client, "client") }?;
    let id = unsafe { call.str(id, "id") }?;
    let params = unsafe { read_params(call, keys, values, n_params) }?;
    let cancel = unsafe { cancel.as_ref() };
    call.out(guard_out, "guard_out")?;
    let request = client
        .inner
        .blocking
        .locks()
        .request(id, &params)?
        .wait(Wait::from_millis(timeout_ms));
    let guard = acquire(call, &client.inner, request, cancel)?;
    hand_out_guard(&client.inner, guard, guard_out);
    Ok(())
}

/// The body of `locks_client_lock_name` and `locks_client_lock_name_cancellable`.
///
/// # Safety
/// As `locks_client_lock_name_cancellable`.
unsafe fn lock_raw(
    call: &Call,
    client: *const locks_client,
    scope: c_int,
    name: *const c_char,
    timeout_ms: i64,
    cancel: *const locks_cancel,
    guard_out: *mut *mut locks_guard,
) -> FfiResult {
    // SAFETY (all three): per the contract.
    let client = unsafe { call.arg(client, "client") }?;
    let name = unsafe { call.str(name, "name") }?;
    let cancel = unsafe { cancel.as_ref() };
    let scope = scope_from_int(call, scope)?;
    call.out(guard_out, "guard_out")?;
    let blocking = &client.inner.blocking;
    let wait = Wait::from_millis(timeout_ms);
    let guard = match cancel {
        None => blocking.lock_name(scope, name, wait)?,
        Some(cancel) => match blocking.lock_name_cancellable(scope, name, wait, &cancel.inner)? {
            Some(guard) => guard,
            // The full name (with the prefix) for the message, as the
            // acquire itself rendered it.
            None => {
                let request = blocking.locks().raw_request(scope, name)?;
                return Err(cancelled(call, request.name.as_str(), scope));
            }
        },
    };
    hand_out_guard(&client.inner, guard, guard_out);
    Ok(())
}

/// Acquires catalog lock `id`, its name rendered from the parameters given as
/// two parallel arrays of `n_params` keys and values (`keys[i]` = `values[i]`).
/// Blocks the calling thread: `timeout_ms` < 0 waits as long as it takes, 0
/// tries once, > 0 waits at most that many milliseconds. To be able to stop
/// the wait from another thread, use `locks_client_lock_cancellable`.
///
/// On success stores a new guard in `*guard_out`, owned by the caller, who
/// releases it with `locks_guard_release` and frees it with `locks_guard_free`.
/// All strings are borrowed for the call. With `n_params` 0, `keys` and
/// `values` may be NULL.
///
/// # Errors
/// `LOCKS_STATUS_NULL_ARGUMENT`, `_INVALID_UTF8`, `_INVALID_ARGUMENT` (a key
/// given twice, `n_params` > `LOCKS_MAX_PARAMS`), `_UNKNOWN_LOCK`,
/// `_MISSING_PARAMETER`, `_UNKNOWN_PARAMETER`, `_INVALID_NAME`, `_WOULD_BLOCK`
/// (try once, held elsewhere), `_TIMEOUT`, `_WOULD_DEADLOCK` (this thread holds
/// it already), `_UNAVAILABLE`, `_PERMISSION_DENIED`, `_IO`.
///
/// # Safety
/// `client` is NULL or a live client; `id` is NULL or a NUL-terminated string;
/// unless `n_params` is 0, `keys` and `values` are NULL or point to
/// `n_params` pointers, each NULL or a NUL-terminated string; `guard_out` and
/// `err_out` are NULL or valid for writes.
#[unsafe(no_mangle)]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn locks_client_lock(
    client: *const locks_client,
    id: *const c_char,
    keys: *const *const c_char,
    values: *const *const c_char,
    n_params: usize,
    timeout_ms: i64,
    guard_out: *mut *mut locks_guard,
    err_out: *mut *mut locks_error,
) -> locks_status {
    fallible("locks_client_lock", err_out, |call| {
        // SAFETY: the same contract, and no cancellation handle.
        unsafe {
            lock_catalog(
                call,
                client,
                id,
                keys,
                values,
                n_params,
                timeout_ms,
                std::ptr::null(),
                guard_out,
            )
        }
    })
}

/// Acquires a raw lock `name` (no catalog entry; the configured prefix is
/// put before it) in `scope`, a `LOCKS_SCOPE_*` value. Blocks the calling
/// thread; `timeout_ms` as in `locks_client_lock`. To be able to stop the
/// wait from another thread, use `locks_client_lock_name_cancellable`.
///
/// On success stores a new guard in `*guard_out`, owned by the caller (see
/// `locks_client_lock`). `name` is borrowed for the call.
///
/// # Errors
/// `LOCKS_STATUS_NULL_ARGUMENT`, `_INVALID_UTF8`, `_INVALID_ARGUMENT` (not a
/// scope), `_INVALID_NAME`, and the acquire errors of `locks_client_lock`.
///
/// # Safety
/// `client` is NULL or a live client; `name` is NULL or a NUL-terminated
/// string; `guard_out` and `err_out` are NULL or valid for writes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn locks_client_lock_name(
    client: *const locks_client,
    scope: c_int,
    name: *const c_char,
    timeout_ms: i64,
    guard_out: *mut *mut locks_guard,
    err_out: *mut *mut locks_error,
) -> locks_status {
    fallible("locks_client_lock_name", err_out, |call| {
        // SAFETY: the same contract, and no cancellation handle.
        unsafe {
            lock_raw(
                call,
                client,
                scope,
                name,
                timeout_ms,
                std::ptr::null(),
                guard_out,
            )
        }
    })
}

/// `locks_client_lock`, which another thread can cancel: when `cancel` is
/// triggered (`locks_cancel_trigger`) before or while the call waits, it
/// returns `LOCKS_STATUS_CANCELLED` promptly, with a message naming the
/// lock, and leaves nothing held or queued; its place in the lock's queue
/// is given up only then. A handle triggered before the call makes it
/// return at once without trying the lock. `cancel` NULL is
/// `locks_client_lock`: not cancellable. `timeout_ms` applies as well;
/// whichever ends the wait first decides the status.
///
/// # Errors
/// Those of `locks_client_lock`, and `LOCKS_STATUS_CANCELLED`.
///
/// # Safety
/// As `locks_client_lock`; `cancel` is NULL or a live handle, which must not
/// be freed before this call returns.
#[unsafe(no_mangle)]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn locks_client_lock_cancellable(
    client: *const locks_client,
    id: *const c_char,
    keys: *const *const c_char,
    values: *const *const c_char,
    n_params: usize,
    timeout_ms: i64,
    cancel: *const locks_cancel,
    guard_out: *mut *mut locks_guard,
    err_out: *mut *mut locks_error,
) -> locks_status {
    fallible("locks_client_lock_cancellable", err_out, |call| {
        // SAFETY: the same contract.
        unsafe {
            lock_catalog(
                call, client, id, keys, values, n_params, timeout_ms, cancel, guard_out,
            )
        }
    })
}

/// `locks_client_lock_name`, which another thread can cancel through
/// `cancel`, as `locks_client_lock_cancellable` describes. `cancel` NULL is
/// `locks_client_lock_name`: not cancellable.
///
/// # Errors
/// Those of `locks_client_lock_name`, and `LOCKS_STATUS_CANCELLED`.
///
/// # Safety
/// As `locks_client_lock_name`; `cancel` is NULL or a live handle, which
/// must not be freed before this call returns.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn locks_client_lock_name_cancellable(
    client: *const locks_client,
    scope: c_int,
    name: *const c_char,
    timeout_ms: i64,
    cancel: *const locks_cancel,
    guard_out: *mut *mut locks_guard,
    err_out: *mut *mut locks_error,
) -> locks_status {
    fallible("locks_client_lock_name_cancellable", err_out, |call| {
        // SAFETY: the same contract.
        unsafe { lock_raw(call, client, scope, name, timeout_ms, cancel, guard_out) }
    })
}
