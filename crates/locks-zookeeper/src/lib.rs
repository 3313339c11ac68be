//! Global-scope locks on ZooKeeper, interoperable with OpenStack tooz (kazoo).
//!
//! [`ZkBackend`] implements [`locks_core::Backend`] for
//! [`Scope::Global`](locks_core::Scope::Global): every host that talks to the
//! same ZooKeeper ensemble and namespace excludes every other.
//!
//! # Node layout (kazoo's `Lock`, as tooz uses it)
//!
//! The lock named `N` lives in the directory `/<namespace>/locks/N`
//! (namespace `tooz` by default, so a tooz-based service such as Cinder and
//! this crate contend for the same locks). Missing directories are created as
//! persistent nodes; a `/` inside `N` makes nested directories, as in tooz.
//!
//! Each contender is an ephemeral sequential child named
//! `<32 lowercase hex>__lock__<10-digit sequence>`: a random UUID, kazoo's
//! marker, and the sequence ZooKeeper appends. Its data is a readable holder
//! identity, `host:pid[:catalog-id]`. Children that do not match kazoo's
//! pattern `(?:__lock__)(-?\d{10})$` are ignored, as kazoo ignores them.
//! The contender with the lowest sequence (compared as strings, like kazoo)
//! holds the lock. Every other contender watches only its immediate
//! predecessor, so waiters are served first come, first served, and a release
//! wakes exactly one waiter, which lists the directory once to find its new
//! predecessor or learn it holds the lock: a handoff is one round trip
//! however long the queue.
//!
//! Releasing deletes the contender node. Directories are never deleted on
//! release, because that races with new contenders;
//! [`Backend::clean`](locks_core::Backend::clean) deletes empty ones (the
//! server refuses to delete a directory that a contender entered meanwhile).
//!
//! # Sessions, "at risk" and "lost"
//!
//! One backend keeps one ZooKeeper session for all its locks. Two tasks of one
//! backend asking for one name still exclude each other: an in-process FIFO
//! queue per name sits in front of the ZooKeeper recipe, so each client has at
//! most one contender node per name, and its tasks join the ZooKeeper queue in
//! the order they asked, one after the other.
//!
//! A lock lives as long as its ephemeral node, that is, as long as the
//! session. The server expires a session a session timeout `T` (as
//! negotiated) after it last heard from the client. The backend sends a cheap
//! request every `T/20` and remembers when the last answered one left.
//! Guards follow the session state
//! ([`LockGuard::state`](locks_core::LockGuard::state)):
//! - disconnected from the server, or no answer for `4T/10`:
//!   [`LockState::AtRisk`](locks_core::LockState::AtRisk). The session may
//!   still recover; stop starting new work under the lock;
//! - reconnected in time: [`LockState::Held`](locks_core::LockState::Held)
//!   again. Waiters keep their place in the queue meanwhile;
//! - expired or closed, or no answer until `min(T/5, 1 s)` (plus
//!   `min(T/30, 100 ms)` for late timers) before the server could expire
//!   the session: [`LockState::Lost`](locks_core::LockState::Lost),
//!   which is final. In the last case the backend gives the session up and
//!   closes it, so its nodes go as soon as the server hears from it. So a
//!   guard reports the loss before anyone else can get the lock (unless this
//!   process itself stalls that long: use the fencing token), and a
//!   connection that is back within about `T/2` loses nothing. Releasing a
//!   lost guard reports [`ErrorKind::Lost`](locks_core::ErrorKind::Lost).
//!
//! A request that fails because the connection broke has an unknown
//! outcome; it is retried while the session lives: a creation looks for its
//! node by its unique prefix first (never making a second contender, and
//! never taking a node of another session for its own), a release retries
//! its delete until the node is gone. Deletions that cannot finish at once
//! (a dropped guard, a cancelled acquire) are retried in the background
//! ([`ZkBackend::pending_cleanups`]); whatever is left goes with the
//! session when it closes. Closing the backend (its last clone, guard and
//! background deletion gone) closes the session on the server before the
//! drop returns (1 s at most), also when the runtime is shutting down: a
//! process that gives up a wait and exits at once leaves no node behind.
//!
//! A wait whose timeout ends while the ensemble cannot be reached fails with
//! [`ErrorKind::Unavailable`](locks_core::ErrorKind::Unavailable), saying
//! since when no server answered and which members refuse connections.
//!
//! After the session is lost, the next acquire opens a new session; the old
//! guards stay lost.
//!
//! # Fencing
//!
//! The fencing token of a holding is the `czxid` of its contender node: the
//! ZooKeeper transaction id that created it. Transaction ids grow across the
//! whole ensemble, and holders of one lock hold in creation order, so tokens
//! strictly increase from one holder to the next, across processes and hosts.
//!
//! # Status
//!
//! [`Backend::status`](locks_core::Backend::status) lists the lock's
//! contender nodes in sequence order: the first is the holder, the others
//! wait in that order. Each shows the host, pid and label from its node data,
//! since when it holds or waits (the node's creation time on the server) and
//! its fencing token (czxid); the program only for contenders on this host.
//! A contender made by kazoo (tooz, Cinder) holds tooz's member id instead:
//! its host and pid stay unknown and a note says so. It only reads, within
//! `connect_timeout`. [`Backend::statuses`](locks_core::Backend::statuses)
//! (`locks status --all`) walks `/<namespace>/locks` for every directory with
//! a contender and tells each the same way, within `connect_timeout` too.
//!
//! # Cancel safety
//!
//! The acquire future can be dropped at any point (the facade applies
//! timeouts that way). A dropped or failed acquire deletes its contender node
//! in a background task on the runtime the backend was connected on; if the
//! creation request was still in flight, the task finds the node by its
//! unique prefix. A try-once acquire that finds the lock held deletes its node
//! before returning [`ErrorKind::WouldBlock`](locks_core::ErrorKind::WouldBlock).
//! After a connection loss during creation, the acquire looks for its own node
//! by that prefix instead of creating a second one.
//!
//! # Credentials
//!
//! With [`ZkConfig::credentials`] the session authenticates with the `digest`
//! scheme and creates every node with an ACL granting all rights to that user
//! only, as tooz does; without, nodes are open to everyone.
//!
//! # TLS (feature `tls`)
//!
//! [`ZkConfig::tls`] ([`TlsConfig`]: CA, client certificate and key, the
//! password of an encrypted PKCS#8 key) connects to the secure client port
//! through zookeeper-client's rustls. URLs take tooz's (kazoo's) keys on
//! `zookeeper://` itself, so OpenStack-Ansible's URL pastes: `use_ssl=True`,
//! `verify_certs=True` (`False` is refused: the chain is always verified),
//! `ca`, `certfile`, `keyfile`, `keyfile_password`. Unlike kazoo under tooz,
//! the host name is checked too, unless `check_hostname=False`. A wrong CA,
//! an expired certificate or a host name mismatch is an
//! [`ErrorKind::InvalidConfig`](locks_core::ErrorKind) saying which (found by a handshake of our own after a failed connect, in
//! `tls.rs`); files are named in errors, their content and the password never.
//!
//! # Layout
//! Read alike with `locks-etcd`: `url` (the URL into a [`ZkConfig`]),
//! `config`, `session` (one ZooKeeper session, its health and retries),
//! `recipe` (create the contender, wait for the one below), `held` (a held
//! lock and its release), `clean`, `status`, `path` (names to nodes), `tls`
//! (PEM files into zookeeper-client's options, certificate diagnosis), and
//! `backend` (the [`Backend`](locks_core::Backend) impl putting them together).
//!
//! # Example
//!
//! ```no_run
//! use std::time::Duration;
//! use locks_core::{Backend, LockName, LockRequest, Scope, Wait, acquire};
//! use locks_zookeeper::{ZkBackend, ZkConfig};
//!
//! # async fn run() -> locks_core::Result<()> {
//! let config = ZkConfig::new(["zk1:2181", "zk2:2181", "zk3:2181"])
//!     .session_timeout(Duration::from_secs(10));
//! let backend = ZkBackend::connect(config).await?;
//! let request = LockRequest::new(LockName::new("cinder-infinidat-10.0.0.1-lock")?, Scope::Global)
//!     .wait(Wait::Timeout(Duration::from_secs(30)));
//! let guard = acquire(&backend, &request).await?;
//! // Fence writes with guard.token(); stop if guard.lost() resolves.
//! guard.release().await?;
//! # Ok(())
//! # }
//! ```

mod backend;
mod clean;
mod config;
mod held;
mod path;
mod recipe;
mod session;
mod status;
#[cfg(feature = "tls")]
mod tls;
mod url;

pub use backend::ZkBackend;
pub use config::{
    DEFAULT_CONNECT_TIMEOUT, DEFAULT_NAMESPACE, DEFAULT_PORT, DEFAULT_SESSION_TIMEOUT,
    TLS_SUPPORTED, TlsConfig, ZkConfig,
};
