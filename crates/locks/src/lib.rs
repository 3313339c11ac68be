//! `locks`: one catalog of named locks for storage-driver code, across three
//! scopes, with the backend of each scope chosen by configuration.
//!
//! - [`Scope::Process`]: tasks and threads of one process (`memory://`).
//! - [`Scope::Node`]: every process on one host (`file:///dir`, lock files
//!   that exclude OpenStack's oslo.concurrency on the same files).
//! - [`Scope::Global`]: every host of a cluster (`etcd://`, `zookeeper://`).
//!
//! Lock names come from the [`Catalog`] (by default the built-in Cinder
//! catalog) as templates filled from parameters.
//!
//! ```
//! use locks::{Config, Locks, Params, Wait};
//!
//! # let dir = tempfile::tempdir().unwrap();
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let mut config = Config::embedded();
//! # config.backends.node = Some(format!("file://{}", dir.path().display()));
//! # config.backends.global = config.backends.node.clone();
//! let locks = Locks::open(config).await?;
//! let guard = locks.lock("solidfire", &Params::new().with("resource_id", "img-1")).await?;
//! assert_eq!(guard.name().as_str(), "solidfire-img-1");
//! // The same task asking again would wait for itself: reported at once.
//! let again = locks.lock_with("solidfire", &Params::new().with("resource_id", "img-1"), Wait::TryOnce).await;
//! assert_eq!(again.unwrap_err().kind(), locks::ErrorKind::WouldDeadlock);
//! guard.release().await?;
//! # Ok::<(), locks::Error>(())
//! # }).unwrap();
//! ```
//!
//! # Code layout
//! `config` (the TOML file, [`Config`]), `backends` (a URL's scheme picks the
//! backend crate, which parses the rest; `backends/tooz` translates tooz's
//! spellings), `client` ([`Locks`]: catalog, re-entry, the acquire span),
//! `blocking` ([`BlockingLocks`]) and `cancel`, `hold` (release events and
//! per-lock state events), `lock_metrics` (the `metrics` facade).
//!
//! # Configuration
//! A TOML file ([`Config`]) named by `--config` or `$LOCKS_CONFIG`, with one
//! backend URL per scope; without one, the embedded defaults (memory, and lock
//! files in [`default_lock_dir`]).
//!
//! # Feature flags
//! - `etcd` (default): the `etcd://` backend.
//! - `zookeeper` (default): the `zookeeper://` backend.
//! - `macros` (default): the [`locked`] attribute, which wraps an async
//!   method in a catalog lock as Cinder's `synchronized` decorators do.
//!
//! # Layout
//! - `client.rs`: [`Locks`], the async client.
//! - `blocking.rs`: [`BlockingLocks`], the same with a runtime of its own, for
//!   plain threads and the C ABI (re-entry per thread or per task,
//!   cancellation, bounded shutdown).
//! - `cancel.rs`: [`CancelToken`], which cancels a blocking acquire from
//!   another thread.
//! - `config.rs`: [`Config`] and where it comes from.
//! - `backends/`: the one place that turns a backend URL into a backend.

mod backends;
mod blocking;
mod cancel;
mod client;
mod config;
mod hold;
mod lock_metrics;

pub use backends::SCHEMES;
pub use blocking::BlockingLocks;
pub use cancel::CancelToken;
pub use client::Locks;
pub use config::{BackendUrls, CONFIG_ENV, CatalogSource, Compat, Config, default_lock_dir};
pub use lock_metrics::names as metric_names;
pub use locks_core::{
    Backend, Capabilities, Catalog, CatalogEntry, CleanReport, Error, ErrorKind, FencingToken,
    LintFinding, LockGuard, LockName, LockRequest, LockState, LockStatus, MultiGuard, NameTemplate,
    Params, Party, Result, Scope, Severity, TemplateError, Wait,
};
/// `#[locked(locks = ..., id = "...")]`: runs an `async fn` method while it holds a catalog lock named from its arguments and fields.
#[cfg(feature = "macros")]
pub use locks_macros::locked;

/// The README's Rust examples, compiled as doctests so they cannot drift.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeDoctests;
