//! Process-scope locks: one FIFO async mutex per lock name, in memory.
//!
//! Excludes the tasks and threads of one process. Waiters are served in the
//! order they asked (the queue each name has in [`LocalLocks`]). Any number of
//! distinct names can pass through without memory growing: the table keeps
//! an entry while somebody holds or waits for its name, and a bounded few
//! idle ones, so that a name used again and again costs no allocation.
//!
//! Fencing tokens are the turns' tickets: strictly increasing across the
//! holders of one name in this process, and meaningless outside it.
//!
//! ```
//! use locks_core::{Backend, LockName, LockRequest, Scope, Wait};
//! use locks_memory::MemoryBackend;
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let backend = MemoryBackend::new();
//! let request = LockRequest::new(LockName::new("hgst-devices")?, Scope::Process);
//! let guard = backend.acquire(&request).await?;
//! let busy = backend.acquire(&request.clone().wait(Wait::TryOnce)).await;
//! assert_eq!(busy.unwrap_err().kind(), locks_core::ErrorKind::WouldBlock);
//! guard.release().await?;
//! # Ok::<(), locks_core::Error>(())
//! # }).unwrap();
//! ```

use locks_core::{
    Backend, Capabilities, HolderId, LocalLocks, LocalTurn, LockGuard, LockName, LockRequest,
    LockStatus, Party, Result, Scope, Wait, async_trait,
};

/// The in-memory backend. Cheap to clone; clones share their locks.
#[derive(Clone, Default)]
pub struct MemoryBackend {
    table: LocalLocks<LockName>,
}

/// The guard of a turn: the turn is the whole lock, and its ticket, which
/// grows with every turn on the name, is the fencing token.
fn guard(request: &LockRequest, turn: LocalTurn<LockName>) -> LockGuard {
    LockGuard::local(request, turn.ticket(), turn)
}

impl MemoryBackend {
    /// A backend with no locks held.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many names are currently held or waited for (for leak checks).
    pub fn active_names(&self) -> usize {
        self.table.len()
    }
}

impl std::fmt::Debug for MemoryBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryBackend")
            .field("active_names", &self.active_names())
            .finish()
    }
}

#[async_trait]
impl Backend for MemoryBackend {
    fn kind(&self) -> &'static str {
        "memory"
    }

    fn describe(&self) -> String {
        "memory://".to_owned()
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            scopes: &[Scope::Process],
            fifo: true,
            fencing: true,
            can_lose: false,
        }
    }

    /// Acquires the in-memory lock of `request.name`.
    ///
    /// # Cancel safety
    /// Cancel safe: a dropped future leaves the queue and, if nobody else
    /// uses the name, removes its entry.
    async fn acquire(&self, request: &LockRequest) -> Result<LockGuard> {
        let turn = match request.wait {
            Wait::TryOnce => self
                .table
                .try_lock(&request.name)
                .ok_or_else(|| request.would_block(&self.describe()))?,
            Wait::Forever | Wait::Timeout(_) => self.table.lock(&request.name).await,
        };
        Ok(guard(request, turn))
    }

    /// Takes `request.name` if nobody holds or waits for it: no waiting, no
    /// allocation besides the table entry.
    fn try_acquire_now(&self, request: &LockRequest) -> Option<LockGuard> {
        let turn = self.table.try_lock(&request.name)?;
        Some(guard(request, turn))
    }

    /// The table has the name already when it served it lately; otherwise it
    /// is built (and validated) here, once.
    fn try_acquire_name_now(&self, name: &str, scope: Scope) -> Option<LockGuard> {
        let (turn, name) = self
            .table
            .try_lock_by(name, |text| LockName::new(text).ok())?;
        Some(LockGuard::local_named(name, scope, turn.ticket(), turn))
    }

    /// The table records the task (or thread) of each turn.
    fn knows_holders(&self) -> bool {
        true
    }

    fn held_by(&self, request: &LockRequest, holder: HolderId) -> bool {
        self.table.held_by(&request.name, holder)
    }

    /// The holder and the waiters are tasks or threads of this process; the
    /// holder's token is its ticket. Labels and times are not recorded (the
    /// acquire path writes nothing for a status).
    async fn status(&self, name: &LockName, scope: Scope) -> Result<LockStatus> {
        let mut status = LockStatus::free(name.clone(), scope, self.describe());
        status.notes.push(
            "memory locks live in one process: this answer covers only the process that asked, \
             whose tasks or threads are the holder and waiters; labels and since-times are not \
             recorded"
                .to_owned(),
        );
        if let Some(turns) = self.table.turns(name) {
            status.holder = Some(Party {
                token: Some(turns.owner),
                ..Party::this_process()
            });
            status.waiters = turns
                .waiting
                .iter()
                .map(|_| Party::this_process())
                .collect();
        }
        Ok(status)
    }

    /// Every name this process holds or waits for.
    async fn statuses(&self, scope: Scope) -> Result<Vec<LockStatus>> {
        let mut all = Vec::new();
        for name in self.table.busy_keys() {
            all.push(self.status(&name, scope).await?);
        }
        all.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(all)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use locks_core::acquire;

    // The memory backend's locks live in one instance: the peer is a clone.
    locks_core::conformance_tests!(|| async {
        let backend = std::sync::Arc::new(crate::MemoryBackend::new());
        let peer: std::sync::Arc<dyn locks_core::Backend> = backend.clone();
        Some((backend as std::sync::Arc<dyn locks_core::Backend>, peer))
    });

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn status_shows_the_holder_and_the_waiters_in_order() {
        let backend = std::sync::Arc::new(MemoryBackend::new());
        let name = LockName::new("status").unwrap();
        let free = backend.status(&name, Scope::Process).await.unwrap();
        assert!(!free.is_held() && free.waiters.is_empty());
        let guard = acquire(&*backend, &LockRequest::new(name.clone(), Scope::Process))
            .await
            .unwrap();
        let mut waiters = Vec::new();
        for _ in 0..2 {
            let (peer, wanted) = (backend.clone(), name.clone());
            waiters.push(tokio::spawn(async move {
                let request = LockRequest::new(wanted, Scope::Process);
                acquire(&*peer, &request).await.unwrap().release().await
            }));
            while backend.table.turns(&name).map_or(0, |t| t.waiting.len()) < waiters.len() {
                tokio::task::yield_now().await;
            }
        }
        let held = backend.status(&name, Scope::Process).await.unwrap();
        let holder = held.holder.as_ref().expect("held");
        assert_eq!(holder.token, Some(guard.token()));
        assert_eq!(holder.pid, Some(std::process::id()));
        assert_eq!(held.waiters.len(), 2);
        assert_eq!(held.backend, "memory://");
        let all = backend.statuses(Scope::Process).await.unwrap();
        assert_eq!(all, vec![held.clone()]);
        guard.release().await.unwrap();
        for waiter in waiters {
            waiter.await.unwrap().unwrap();
        }
        assert!(
            !backend
                .status(&name, Scope::Process)
                .await
                .unwrap()
                .is_held()
        );
        assert!(backend.statuses(Scope::Process).await.unwrap().is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_million_names_leave_the_table_empty() {
        let backend = MemoryBackend::new();
        for i in 0..1_000_000u32 {
            let req = LockRequest::new(LockName::new(format!("vol-{i}")).unwrap(), Scope::Process);
            let guard = backend.acquire(&req).await.unwrap();
            guard.release().await.unwrap();
        }
        assert_eq!(backend.active_names(), 0);
        // 16 shards, each keeping a handful of idle slots (room for at most 112).
        let capacity = backend.table.capacity();
        assert!(capacity <= 16 * 112, "the table stayed small: {capacity}");
    }

    #[tokio::test]
    async fn the_fast_path_takes_only_free_names_and_its_guards_behave() {
        use locks_core::LockState;
        let backend = MemoryBackend::new();
        let req = LockRequest::new(LockName::new("fast").unwrap(), Scope::Process);
        let guard = backend.try_acquire_now(&req).expect("free");
        assert!(backend.try_acquire_now(&req).is_none(), "held");
        assert_eq!(guard.state(), LockState::Held);
        assert_eq!(*guard.watch_state().borrow(), LockState::Held);
        assert!(!guard.is_lost());
        assert!(
            tokio::time::timeout(std::time::Duration::from_millis(10), guard.lost())
                .await
                .is_err(),
            "never lost"
        );
        let waiter = {
            let (backend, req) = (backend.clone(), req.clone());
            tokio::spawn(async move { backend.acquire(&req).await.unwrap().token() })
        };
        tokio::task::yield_now().await;
        assert!(
            backend.try_acquire_now(&req).is_none(),
            "a waiter keeps it busy"
        );
        let first = guard.token();
        guard.release().await.unwrap();
        assert!(waiter.await.unwrap() > first);
        assert_eq!(backend.active_names(), 0);
        drop(backend.try_acquire_now(&req).expect("free again"));
        assert_eq!(backend.active_names(), 0);
    }

    #[tokio::test]
    async fn cancelled_and_timed_out_waiters_leave_no_entry() {
        let backend = MemoryBackend::new();
        let req = LockRequest::new(LockName::new("x").unwrap(), Scope::Process);
        let guard = backend.acquire(&req).await.unwrap();
        let timed = acquire(
            &backend,
            &req.clone()
                .wait(Wait::Timeout(std::time::Duration::from_millis(20))),
        )
        .await;
        assert!(timed.is_err());
        assert!(
            backend
                .acquire(&req.clone().wait(Wait::TryOnce))
                .await
                .is_err()
        );
        drop(guard);
        assert_eq!(backend.active_names(), 0);
    }
}
