//! The core of the `locks` workspace: [`Scope`]s, lock-name templates
//! ([`NameTemplate`]), the [`Catalog`] of declared locks, the one [`Error`]
//! type with its stable [`ErrorKind`], and the object-safe async [`Backend`]
//! trait with the [`LockGuard`] it returns.
//!
//! Backends (memory, file, etcd, ZooKeeper, Redis) depend only on this
//! crate; the `locks` facade picks them from configuration.
//!
//! # Layout
//! One concept a module: `scope`, `template` (names and their templates),
//! `catalog`, `error` (with `excerpt`, long values cut short), `request`
//! ([`Wait`], [`LockRequest`]: what a caller asks for), `guard`
//! ([`LockGuard`], [`LockState`], [`HeldLock`], [`ReleaseObserver`]: what a
//! backend hands back), `backend` (the [`Backend`] trait, [`Capabilities`],
//! [`acquire`]), `backend_url` ([`BackendUrl`]: what every backend's URL
//! parser shares), `status` (who holds and waits), `reentry` (a holder asking
//! again), `local` and `shard` (in-process FIFO turns, shared by the memory and
//! file backends), `multi` (sets of locks in one order), `testing` (the
//! conformance suite).
//!
//! ```
//! use locks_core::{Catalog, Params, Scope};
//!
//! let entry = Catalog::cinder().get("solidfire")?;
//! assert_eq!(entry.scope, Scope::Process);
//! let name = entry.render(&Params::new().with("resource_id", "vol-7"))?;
//! assert_eq!(name.as_str(), "solidfire-vol-7");
//! # Ok::<(), locks_core::Error>(())
//! ```
//!
//! # Feature flags
//! - `testing`: the `conformance_tests!` suite every backend runs.
//! - `tls`: [`tls::certificate_problem`], refused certificates found in TLS error chains.

mod backend;
mod backend_url;
mod catalog;
mod error;
mod excerpt;
mod guard;
mod local;
mod multi;
mod reentry;
mod request;
mod scope;
mod shard;
mod status;
mod template;
#[cfg(feature = "testing")]
pub mod testing;
#[cfg(feature = "tls")]
pub mod tls;

pub use backend::{Backend, Capabilities, CleanReport, acquire};
pub use backend_url::{
    BackendUrl, fold_host_list, percent_decode, redact, redact_text, split_host_port,
};
pub use catalog::{CINDER_CATALOG_TOML, Catalog, CatalogEntry, LintFinding, Severity};
pub use error::{BoxError, Error, ErrorKind, Result};
pub use excerpt::Excerpt;
pub use guard::{
    FencingToken, HeldLock, LockGuard, LockState, LockStateSender, ReleaseObserver, never_lost,
};
pub use local::{LocalLocks, LocalTurn, Turns};
pub use multi::{MultiGuard, canonical_order};
pub use reentry::{HolderId, ReentryRegistry};
pub use request::{LockRequest, Wait};
pub use scope::Scope;
pub use status::{LockStatus, Party, host_name, program_of};
pub use template::{LockName, MAX_NAME_LEN, NameTemplate, Params, TemplateError};

/// Re-exported so backends implement [`Backend`] with the same macro version.
pub use async_trait::async_trait;

#[cfg(test)]
mod auto_traits {
    use super::*;

    fn send_sync<T: Send + Sync>(_: &T) {}
    fn send<T: Send>(_: &T) {}

    /// Guards, turns and tables move between tasks and threads, and the
    /// futures of acquiring and releasing run on multi-threaded runtimes.
    #[test]
    fn guards_tables_and_their_futures_are_send_and_sync() {
        let locks = LocalLocks::<LockName>::new();
        let name = LockName::new("x").unwrap();
        send_sync(&locks);
        send(&locks.lock(&name));
        let turn = locks.try_lock(&name).unwrap();
        send_sync(&turn);
        let request = LockRequest::new(name, Scope::Process);
        let guard = LockGuard::local(&request, 1, turn);
        send_sync(&guard);
        send(&guard.release());
        send_sync(&ReentryRegistry::new());
        send_sync(&MultiGuard::new(Vec::new()));
    }
}
