//! Node-scope locks: one lock file per lock name in one directory, locked with
//! a whole-file write lock by the kernel.
//!
//! A lock taken here excludes every task and thread of this process and every
//! other process on the host that locks the same file, including the Python
//! services of OpenStack (oslo.concurrency, fasteners, tooz `file://`).
//!
//! ```
//! use locks_core::{Backend, ErrorKind, LockName, LockRequest, Scope, Wait};
//! use locks_file::{FileBackend, FileConfig};
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let dir = std::env::temp_dir().join(format!("locks-file-doc-{}", std::process::id()));
//! let backend = FileBackend::open(FileConfig::new(&dir))?;
//! let name = LockName::new("cinder-lioadm")?;
//! assert_eq!(backend.path_for(&name)?, dir.join("cinder-lioadm"));
//!
//! let request = LockRequest::new(name, Scope::Node);
//! let guard = backend.acquire(&request).await?;
//! let busy = backend.acquire(&request.clone().wait(Wait::TryOnce)).await;
//! assert_eq!(busy.unwrap_err().kind(), ErrorKind::WouldBlock);
//! guard.release().await?;
//! # std::fs::remove_dir_all(&dir).ok();
//! # Ok::<(), locks_core::Error>(())
//! # }).unwrap();
//! ```
//!
//! - OFD locks on Linux (they exclude Python's `fcntl.lockf` locks), `flock`
//!   elsewhere ([`Mechanism`]); all processes sharing a directory must use
//!   the same mechanism.
//! - Names map to files as oslo.concurrency maps them ([`lock_file_name`]),
//!   or to subdirectories as tooz's `file://` driver does ([`Layout::Tree`]).
//! - A missing directory is created with mode `0700`; to share it between
//!   users, create it group-owned with mode `2770` and run every user with
//!   umask `002`.
//! - Releasing never unlinks a lock file; [`Backend::clean`] removes the
//!   files nobody holds.
//!
//! # Layout
//!
//! The design notes live with the code that implements them:
//!
//! - `config.rs`: [`FileConfig`], [`Mechanism`] (OFD or `flock`, and why),
//!   [`Layout`].
//! - `path.rs`: names to paths, the one copy of the flat-name rule
//!   ([`lock_file_name`], [`lock_file_path`]) and the key of the in-process
//!   turns and of the cache.
//! - `backend.rs`: [`FileBackend`], the [`Backend`] impl: waiting, fairness,
//!   cancellation, releasing, fencing tokens.
//! - `lockfile.rs`: opening and locking one lock file, and the check that its
//!   path still names it (files unlinked while locked).
//! - `cache.rs`: the descriptors a backend keeps open between holders.
//! - `budget.rs`: what all backends of the process share: the budget of
//!   cached descriptors and fork tracking.
//! - `dir.rs`: preparing the lock directory (permissions, sharing it between
//!   users) and cleaning it.
//! - `sys.rs`: the system calls (lock calls, `fstat`, clocks).
//!
//! [`Backend`]: locks_core::Backend
//! [`Backend::clean`]: locks_core::Backend::clean

mod backend;
mod budget;
mod cache;
mod config;
mod dir;
mod lockfile;
mod path;
mod status;
mod sys;
#[cfg(test)]
mod tests;
mod url;

pub use backend::FileBackend;
pub use config::{FileConfig, Layout, Mechanism};
pub use path::{lock_file_name, lock_file_path};
