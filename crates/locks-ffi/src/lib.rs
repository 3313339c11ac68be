//! The C ABI of the `locks` workspace: named locks from the catalog, in
//! Process, Node and Global scopes, for C (header `include/locks.h`) and, through
//! cgo, Go (`crates/locks-ffi/go`).
//!
//! The conventions (ownership, NULL, errors, threads, fork) are in this
//! crate's README. In short: every type is opaque, every fallible call
//! returns a [`locks_status`] and can hand back a [`locks_error`], out-params
//! are written only on success, `_free(NULL)` does nothing, and no panic ever
//! crosses the boundary.
//!
//! The Rust items are the exports themselves; Rust code should use the
//! `locks` crate instead.
//!
//! # Layout
//! - `types.rs`: the C types several modules share: `locks_client` (and what
//!   it shares with its guards), `locks_catalog_entry`, `locks_scope`.
//! - `client.rs`: opening a client and acquiring, on `locks::BlockingLocks`
//!   (runtime, shutdown, re-entry modes and cancellation live there).
//! - `catalog.rs`: reading the catalog; `guard.rs`: a held lock;
//!   `cancel.rs`: `locks_cancel`, over `locks::CancelToken`.
//! - `status.rs`: statuses and `locks_error`; `boundary.rs`: the panic
//!   boundary and checked conversion of C arguments.
//!
//! `types.rs` imports only `boundary.rs`; `catalog.rs` and `guard.rs` import
//! `types.rs`, not each other nor `client.rs`, which hands out their guards
//! and takes `cancel.rs`'s handles.

#![allow(non_camel_case_types)]

// cbindgen writes the exports of each module in the order the modules are
// declared; each blank line keeps rustfmt from sorting them.
mod status;

mod types;

mod client;

mod catalog;

mod guard;

mod cancel;

mod boundary;

pub use cancel::{
    locks_cancel, locks_cancel_free, locks_cancel_is_triggered, locks_cancel_new,
    locks_cancel_trigger,
};
pub use catalog::{
    locks_catalog_entry_critical_section, locks_catalog_entry_driver, locks_catalog_entry_id,
    locks_catalog_entry_parameter, locks_catalog_entry_parameter_count, locks_catalog_entry_scope,
    locks_catalog_entry_template, locks_client_catalog_entry, locks_client_catalog_find,
    locks_client_catalog_len,
};
pub use client::{
    LOCKS_MAX_PARAMS, locks_client_free, locks_client_lock, locks_client_lock_cancellable,
    locks_client_lock_name, locks_client_lock_name_cancellable, locks_client_open_default,
    locks_client_open_file, locks_client_open_string, locks_client_set_reentry_check,
    locks_client_warning, locks_client_warnings_len,
};
pub use guard::{
    locks_guard, locks_guard_free, locks_guard_is_lost, locks_guard_name, locks_guard_release,
    locks_guard_scope, locks_guard_state, locks_guard_token, locks_guard_wait_state,
    locks_lock_state,
};
pub use status::{
    locks_error, locks_error_free, locks_error_message, locks_error_status, locks_status,
    locks_status_name,
};
pub use types::{locks_catalog_entry, locks_client, locks_scope};

use std::ffi::c_char;

/// The version of the library, `"MAJOR.MINOR.PATCH"` (the crate version).
/// Compare it with the header's `LOCKS_VERSION` to catch a header and a
/// library from different builds. The string is static: never free it.
#[unsafe(no_mangle)]
pub extern "C" fn locks_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}
