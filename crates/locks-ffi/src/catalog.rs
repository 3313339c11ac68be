//! `locks_catalog_entry`: the client's catalog, read from C.

use std::ffi::{CString, c_char};

use crate::boundary::{fallible, infallible};
use crate::status::{locks_error, locks_status};
use crate::types::{locks_catalog_entry, locks_client, locks_scope};

/// The number of entries in the client's catalog; 0 when `client` is NULL.
///
/// # Safety
/// `client` is NULL or a live client.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn locks_client_catalog_len(client: *const locks_client) -> usize {
    infallible(0, || {
        // SAFETY: NULL or a live client per the contract.
        unsafe { client.as_ref() }.map_or(0, |c| c.inner.entries.len())
    })
}

/// Catalog entry `index` (0-based, in catalog order), borrowed from the client
/// (see `locks_catalog_entry`). NULL when `client` is NULL or `index` is not
/// below `locks_client_catalog_len`.
///
/// # Safety
/// `client` is NULL or a live client.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn locks_client_catalog_entry(
    client: *const locks_client,
    index: usize,
) -> *const locks_catalog_entry {
    infallible(std::ptr::null(), || {
        // SAFETY: NULL or a live client per the contract.
        unsafe { client.as_ref() }
            .and_then(|c| c.inner.entries.get(index))
            .map_or(std::ptr::null(), |e| e as *const _)
    })
}

/// Looks up the catalog entry with id `id`. On success stores it in
/// `*entry_out`, borrowed from the client (see `locks_catalog_entry`; never
/// free it). `id` is borrowed for the call.
///
/// # Errors
/// `LOCKS_STATUS_NULL_ARGUMENT`, `_INVALID_UTF8`, `_UNKNOWN_LOCK` (the message
/// lists the known ids).
///
/// # Safety
/// `client` is NULL or a live client; `id` is NULL or a NUL-terminated string;
/// `entry_out` and `err_out` are NULL or valid for writes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn locks_client_catalog_find(
    client: *const locks_client,
    id: *const c_char,
    entry_out: *mut *const locks_catalog_entry,
    err_out: *mut *mut locks_error,
) -> locks_status {
    fallible("locks_client_catalog_find", err_out, |call| {
        // SAFETY (both): per the contract.
        let client = unsafe { call.arg(client, "client") }?;
        let id = unsafe { call.str(id, "id") }?;
        call.out(entry_out, "entry_out")?;
        let catalog = client.inner.blocking.locks().catalog();
        let found = catalog.get(id)?;
        let index = catalog
            .entries()
            .iter()
            .position(|e| std::ptr::eq(e, found))
            .ok_or_else(|| call.fail(locks_status::Internal, "catalog entry out of step"))?;
        let entry: *const locks_catalog_entry = &client.inner.entries[index];
        // SAFETY: checked not NULL; valid for writes per the contract.
        unsafe { entry_out.write(entry) };
        Ok(())
    })
}

/// Reads one string field of an entry, NULL for a NULL entry.
///
/// # Safety
/// `entry` is NULL or an entry of a live client.
unsafe fn field(
    entry: *const locks_catalog_entry,
    get: impl FnOnce(&locks_catalog_entry) -> &CString,
) -> *const c_char {
    infallible(std::ptr::null(), || {
        // SAFETY: per this function's contract.
        unsafe { entry.as_ref() }.map_or(std::ptr::null(), |e| get(e).as_ptr())
    })
}

/// The entry's id (`"infinidat"`). Borrowed (see `locks_catalog_entry`); NULL
/// when `entry` is NULL.
///
/// # Safety
/// `entry` is NULL or an entry of a live client.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn locks_catalog_entry_id(
    entry: *const locks_catalog_entry,
) -> *const c_char {
    // SAFETY: the same contract.
    unsafe { field(entry, |e| &e.id) }
}

/// The driver or component the lock belongs to (`"Infinidat driver"`).
/// Borrowed; NULL when `entry` is NULL.
///
/// # Safety
/// `entry` is NULL or an entry of a live client.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn locks_catalog_entry_driver(
    entry: *const locks_catalog_entry,
) -> *const c_char {
    // SAFETY: the same contract.
    unsafe { field(entry, |e| &e.driver) }
}

/// The lock-name template (`"infinidat-{management_address}-lock"`).
/// Borrowed; NULL when `entry` is NULL.
///
/// # Safety
/// `entry` is NULL or an entry of a live client.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn locks_catalog_entry_template(
    entry: *const locks_catalog_entry,
) -> *const c_char {
    // SAFETY: the same contract.
    unsafe { field(entry, |e| &e.template) }
}

/// What the lock protects. Borrowed; NULL when `entry` is NULL.
///
/// # Safety
/// `entry` is NULL or an entry of a live client.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn locks_catalog_entry_critical_section(
    entry: *const locks_catalog_entry,
) -> *const c_char {
    // SAFETY: the same contract.
    unsafe { field(entry, |e| &e.critical_section) }
}

/// The entry's scope; `LOCKS_SCOPE_PROCESS` when `entry` is NULL.
///
/// # Safety
/// `entry` is NULL or an entry of a live client.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn locks_catalog_entry_scope(
    entry: *const locks_catalog_entry,
) -> locks_scope {
    infallible(locks_scope::Process, || {
        // SAFETY: NULL or an entry of a live client per the contract.
        unsafe { entry.as_ref() }.map_or(locks_scope::Process, |e| e.scope)
    })
}

/// The number of distinct parameters the template uses; 0 when `entry` is NULL.
///
/// # Safety
/// `entry` is NULL or an entry of a live client.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn locks_catalog_entry_parameter_count(
    entry: *const locks_catalog_entry,
) -> usize {
    infallible(0, || {
        // SAFETY: NULL or an entry of a live client per the contract.
        unsafe { entry.as_ref() }.map_or(0, |e| e.parameters.len())
    })
}

/// Parameter `index` (0-based, in order of first use in the template), the
/// key to pass to `locks_client_lock`. Borrowed; NULL when `entry` is NULL or
/// `index` is out of range.
///
/// # Safety
/// `entry` is NULL or an entry of a live client.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn locks_catalog_entry_parameter(
    entry: *const locks_catalog_entry,
    index: usize,
) -> *const c_char {
    infallible(std::ptr::null(), || {
        // SAFETY: NULL or an entry of a live client per the contract.
        unsafe { entry.as_ref() }
            .and_then(|e| e.parameters.get(index))
            .map_or(std::ptr::null(), |p| p.as_ptr())
    })
}
