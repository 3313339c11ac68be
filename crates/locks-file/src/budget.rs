//! The process-wide budget of cached lock file descriptors, and fork
//! tracking: what every backend of the process shares.
//!
//! - **Budget.** All descriptor caches of the process together keep at most
//!   a quarter of the soft `RLIMIT_NOFILE` (4096 with no limit) open
//!   ([`share`]). A descriptor takes a [`BudgetSlot`] the first time it is
//!   cached and keeps it until it is closed, also while a holder has it out
//!   of its cache, so taking and putting back costs no shared counter.
//! - **Forks.** A child process shares its parent's open file descriptions,
//!   hence their locks: after `fork` (detected with `pthread_atfork`,
//!   [`watch_forks`]), the child never locks nor unlocks a descriptor
//!   inherited from its parent ([`fork_generation`]), so a child neither
//!   shares a lock with its parent nor releases the parent's holding when it
//!   drops an inherited guard; it opens its own.

use std::fmt;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// The most descriptors all caches of the process keep open together when
/// there is no soft limit.
const MAX_PER_PROCESS: usize = 4096;

/// Sets the budget to a quarter of `soft`, the soft limit on open
/// descriptors ([`soft_fd_limit`]), at most [`MAX_PER_PROCESS`].
pub(crate) fn share(soft: usize) {
    BUDGET_LIMIT.store((soft / 4).min(MAX_PER_PROCESS), Ordering::Relaxed);
}

/// The soft limit on open descriptors (`usize::MAX` when unlimited).
pub(crate) fn soft_fd_limit() -> usize {
    // SAFETY: all-zero bytes are a valid `rlimit`.
    let mut limit: libc::rlimit = unsafe { std::mem::zeroed() };
    // SAFETY: `limit` is a valid, writable `rlimit` for the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return 0;
    }
    if limit.rlim_cur == libc::RLIM_INFINITY {
        usize::MAX
    } else {
        usize::try_from(limit.rlim_cur).unwrap_or(usize::MAX)
    }
}

/// How many descriptors all caches of the process may hold.
static BUDGET_LIMIT: AtomicUsize = AtomicUsize::new(0);
/// How many they hold (including those a holder has out of its cache).
static BUDGET_USED: AtomicUsize = AtomicUsize::new(0);

/// One descriptor's place in the process-wide budget of cached descriptors;
/// given back when dropped (with the descriptor).
pub(crate) struct BudgetSlot(());

impl BudgetSlot {
    /// A slot, if the budget has one left.
    pub(crate) fn take() -> Option<BudgetSlot> {
        let limit = BUDGET_LIMIT.load(Ordering::Relaxed);
        BUDGET_USED
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| {
                (used < limit).then_some(used + 1)
            })
            .ok()
            .map(|_| BudgetSlot(()))
    }
}

impl Drop for BudgetSlot {
    fn drop(&mut self) {
        BUDGET_USED.fetch_sub(1, Ordering::Relaxed);
    }
}

impl fmt::Debug for BudgetSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BudgetSlot")
    }
}

/// Bumped in the child of every `fork`.
static FORK_GENERATION: AtomicU64 = AtomicU64::new(0);

/// The number of `fork`s between the first process and this one.
pub(crate) fn fork_generation() -> u64 {
    FORK_GENERATION.load(Ordering::Relaxed)
}

/// Makes [`fork_generation`] count forks, from the first call on. `false`
/// if the C library refused the handler.
pub(crate) fn watch_forks() -> bool {
    static WATCHED: OnceLock<bool> = OnceLock::new();
    extern "C" fn forked() {
        // Async-signal-safe: one atomic add.
        FORK_GENERATION.fetch_add(1, Ordering::Relaxed);
    }
    *WATCHED.get_or_init(|| {
        // SAFETY: `forked` is a valid handler for the whole life of the
        // process and only does an atomic add, which is fine in a child.
        unsafe { libc::pthread_atfork(None, None, Some(forked)) == 0 }
    })
}
