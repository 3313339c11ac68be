//! The C types that the exports of several modules share: the client
//! ([`locks_client`], and [`ClientInner`], what it shares with its guards),
//! the catalog entries it hands out ([`locks_catalog_entry`]) and
//! [`locks_scope`]. `client.rs`, `catalog.rs` and `guard.rs` build on these
//! and not on each other.

use std::ffi::CString;
use std::sync::Arc;

use locks::{BlockingLocks, CatalogEntry, Scope};

use crate::boundary::c_string;

/// How far a lock reaches.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum locks_scope {
    /// Threads of one process (`memory://`).
    Process = 0,
    /// Every process on one host (`file:///DIR`).
    Node = 1,
    /// Every host of a cluster (`etcd://`, `zookeeper://`).
    Global = 2,
}

impl From<Scope> for locks_scope {
    fn from(scope: Scope) -> Self {
        match scope {
            Scope::Process => locks_scope::Process,
            Scope::Node => locks_scope::Node,
            Scope::Global => locks_scope::Global,
        }
    }
}

/// A client for the locks of one catalog, with one backend per scope and its
/// own runtime.
///
/// Created by `locks_client_open_file`, `locks_client_open_string` or
/// `locks_client_open_default`; owned by the caller, who frees it with
/// `locks_client_free`. Safe to use from many threads at once.
#[derive(Debug)]
pub struct locks_client {
    pub(crate) inner: Arc<ClientInner>,
}

/// What a client and every guard it handed out share: the guards keep it
/// (and the runtime of its [`BlockingLocks`]) alive until the last of them
/// is freed; dropping the last one shuts the runtime down, waiting a bounded
/// time for its threads (see [`BlockingLocks`]).
#[derive(Debug)]
pub(crate) struct ClientInner {
    pub(crate) blocking: BlockingLocks,
    pub(crate) entries: Vec<locks_catalog_entry>,
    pub(crate) warnings: Vec<CString>,
}

impl locks_client {
    /// A client for `blocking`, its catalog and warnings made C strings once.
    pub(crate) fn new(blocking: BlockingLocks) -> Self {
        let entries = blocking
            .locks()
            .catalog()
            .entries()
            .iter()
            .map(locks_catalog_entry::new)
            .collect();
        let warnings = blocking
            .locks()
            .warnings()
            .iter()
            .map(|w| c_string(w))
            .collect();
        locks_client {
            inner: Arc::new(ClientInner {
                blocking,
                entries,
                warnings,
            }),
        }
    }
}

/// One declared lock of the client's catalog.
///
/// Borrowed from the client: never freed by the caller, valid until
/// `locks_client_free`. Every string read from it is borrowed the same way.
#[derive(Debug)]
pub struct locks_catalog_entry {
    pub(crate) id: CString,
    pub(crate) driver: CString,
    pub(crate) template: CString,
    pub(crate) critical_section: CString,
    pub(crate) scope: locks_scope,
    pub(crate) parameters: Vec<CString>,
}

impl locks_catalog_entry {
    pub(crate) fn new(entry: &CatalogEntry) -> Self {
        locks_catalog_entry {
            id: c_string(&entry.id),
            driver: c_string(&entry.driver),
            template: c_string(entry.template.as_str()),
            critical_section: c_string(&entry.critical_section),
            scope: entry.scope.into(),
            parameters: entry.template.parameters().map(c_string).collect(),
        }
    }
}
