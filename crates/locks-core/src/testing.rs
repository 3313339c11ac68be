//! The conformance suite every backend runs (feature `testing`).
//!
//! Each check is a public async function taking two clients of one lock
//! space: `backend`, the client under test, and `peer`, another client of the
//! same locks (a second lock-file backend on the same directory, a second etcd
//! connection with its own lease, a second ZooKeeper session; for the memory
//! backend, whose locks live in one instance, a clone). Contenders are spread
//! over both, so a check passes only if the mechanism itself excludes, not
//! just the in-process queue in front of it. The checks panic on failure.
//!
//! [`conformance_tests!`](crate::conformance_tests) expands to one
//! `#[tokio::test]` per check from a factory returning
//! `Option<(Arc<dyn Backend>, Arc<dyn Backend>)>`; `None` skips the check
//! (a server that is not configured):
//!
//! ```ignore
//! locks_core::conformance_tests!(|| async {
//!     let dir = std::env::temp_dir().join("x");
//!     let a = std::sync::Arc::new(MyBackend::open(&dir)?);
//!     let b = std::sync::Arc::new(MyBackend::open(&dir)?);
//!     Some((a as _, b as _))
//! });
//! ```
//!
//! Lock names carry the process id and a counter, so suites of several
//! processes can share one server.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::{
    Backend, ErrorKind, LockGuard, LockName, LockRequest, LockState, Scope, Wait, acquire,
};

/// Expands to one `#[tokio::test]` per conformance check. `$factory` is a
/// closure returning a future of `Option<(Arc<dyn Backend>, Arc<dyn Backend>)>`:
/// the client under test and a peer client of the same locks, or `None` to skip.
#[macro_export]
macro_rules! conformance_tests {
    ($factory:expr) => {
        $crate::conformance_tests!(@cases $factory;
            mutual_exclusion,
            try_once_on_held_name_fails,
            timeout_elapses,
            release_lets_next_in,
            drop_releases,
            cancelled_release_still_releases,
            distinct_names_are_independent,
            fencing_tokens_increase,
            fifo_order,
            cancelled_acquire_leaves_nothing_behind,
            many_names_at_once,
        );
    };
    (@cases $factory:expr; $($case:ident),* $(,)?) => {
        mod conformance {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let clients: ::std::option::Option<(
                        ::std::sync::Arc<dyn $crate::Backend>,
                        ::std::sync::Arc<dyn $crate::Backend>,
                    )> = ($factory)().await;
                    let ::std::option::Option::Some((backend, peer)) = clients else {
                        return;
                    };
                    $crate::testing::$case(backend, peer).await;
                }
            )*
        }
    };
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A name no other check, process or earlier run uses.
pub fn unique_name(check: &str) -> LockName {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    LockName::new(format!(
        "conformance-{check}-{}-{nanos:x}-{n}",
        std::process::id()
    ))
    .unwrap_or_else(|e| panic!("test names are valid: {e}"))
}

fn scope_of(backend: &dyn Backend) -> Scope {
    *backend
        .capabilities()
        .scopes
        .first()
        .unwrap_or_else(|| panic!("{} declares no scope", backend.describe()))
}

fn request(backend: &dyn Backend, name: &LockName, wait: Wait) -> LockRequest {
    LockRequest::new(name.clone(), scope_of(backend)).wait(wait)
}

async fn take(backend: &dyn Backend, name: &LockName, wait: Wait) -> LockGuard {
    acquire(backend, &request(backend, name, wait))
        .await
        .unwrap_or_else(|e| {
            panic!(
                "acquire `{name}` ({wait}) on {}: {}",
                backend.describe(),
                e.report()
            )
        })
}

const PATIENCE: Wait = Wait::Timeout(Duration::from_secs(20));

/// The client for contender `i`: even ones use `backend`, odd ones `peer`.
fn client(i: usize, backend: &Arc<dyn Backend>, peer: &Arc<dyn Backend>) -> Arc<dyn Backend> {
    if i.is_multiple_of(2) {
        Arc::clone(backend)
    } else {
        Arc::clone(peer)
    }
}

async fn release(guard: LockGuard) {
    guard
        .release()
        .await
        .unwrap_or_else(|e| panic!("release: {}", e.report()));
}

/// Tasks on both clients contending for one name never overlap, and tokens
/// follow hold order.
pub async fn mutual_exclusion(backend: Arc<dyn Backend>, peer: Arc<dyn Backend>) {
    let name = unique_name("mutex");
    let inside = Arc::new(AtomicBool::new(false));
    let tokens = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for i in 0..6 {
        let (client, name, inside, tokens) = (
            client(i, &backend, &peer),
            name.clone(),
            inside.clone(),
            tokens.clone(),
        );
        tasks.push(tokio::spawn(async move {
            for _ in 0..10 {
                let guard = take(&*client, &name, PATIENCE).await;
                assert!(
                    !inside.swap(true, Ordering::SeqCst),
                    "two holders inside `{name}` at once"
                );
                tokens
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(guard.token());
                tokio::time::sleep(Duration::from_millis(1)).await;
                inside.store(false, Ordering::SeqCst);
                release(guard).await;
            }
        }));
    }
    for task in tasks {
        task.await
            .unwrap_or_else(|e| panic!("contender task failed: {e}"));
    }
    let tokens = tokens.lock().unwrap_or_else(|e| e.into_inner()).clone();
    assert_eq!(tokens.len(), 60);
    if backend.capabilities().fencing {
        assert!(
            tokens.windows(2).all(|w| w[0] < w[1]),
            "tokens must strictly increase in hold order: {tokens:?}"
        );
    }
}

/// Trying once on a held name fails with `WouldBlock`, from the holding
/// client and from the peer; after release it succeeds.
pub async fn try_once_on_held_name_fails(backend: Arc<dyn Backend>, peer: Arc<dyn Backend>) {
    let name = unique_name("try");
    let guard = take(&*backend, &name, Wait::TryOnce).await;
    assert_eq!(guard.state(), LockState::Held);
    for (who, client) in [("the holding client", &backend), ("the peer", &peer)] {
        let err = acquire(&**client, &request(&**client, &name, Wait::TryOnce))
            .await
            .expect_err("a held lock cannot be taken again");
        assert_eq!(err.kind(), ErrorKind::WouldBlock, "{who}: {}", err.report());
        assert!(
            err.message().contains(name.as_str()),
            "the error names the lock: {err}"
        );
    }
    release(guard).await;
    release(take(&*peer, &name, PATIENCE).await).await;
}

/// A timeout on a name the peer holds elapses with `Timeout`, not earlier and
/// not much later.
pub async fn timeout_elapses(backend: Arc<dyn Backend>, peer: Arc<dyn Backend>) {
    let name = unique_name("timeout");
    let guard = take(&*peer, &name, Wait::TryOnce).await;
    let limit = Duration::from_millis(300);
    let start = Instant::now();
    let err = acquire(&*backend, &request(&*backend, &name, Wait::Timeout(limit)))
        .await
        .expect_err("a held lock cannot be taken within the timeout");
    let waited = start.elapsed();
    assert_eq!(err.kind(), ErrorKind::Timeout, "{}", err.report());
    assert!(
        waited >= limit,
        "gave up after {waited:?}, before the {limit:?} timeout"
    );
    assert!(
        waited < limit + Duration::from_secs(3),
        "gave up only after {waited:?}"
    );
    release(guard).await;
}

/// A waiter on the peer gets the lock once the holder releases it.
pub async fn release_lets_next_in(backend: Arc<dyn Backend>, peer: Arc<dyn Backend>) {
    let name = unique_name("handoff");
    let guard = take(&*backend, &name, Wait::TryOnce).await;
    let waiter = {
        let (peer, name) = (peer.clone(), name.clone());
        tokio::spawn(async move { take(&*peer, &name, PATIENCE).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!waiter.is_finished(), "the waiter must not get a held lock");
    release(guard).await;
    let next = waiter
        .await
        .unwrap_or_else(|e| panic!("waiter failed: {e}"));
    assert_eq!(next.state(), LockState::Held);
    release(next).await;
}

/// Dropping a guard releases the lock (in the background for network
/// backends): the peer gets it.
pub async fn drop_releases(backend: Arc<dyn Backend>, peer: Arc<dyn Backend>) {
    let name = unique_name("drop");
    let guard = take(&*backend, &name, Wait::TryOnce).await;
    drop(guard);
    release(take(&*peer, &name, Wait::Timeout(Duration::from_secs(10))).await).await;
}

/// A release whose future is dropped before it finishes (a timeout or a
/// `select!` around it) still releases the lock, in the background.
pub async fn cancelled_release_still_releases(backend: Arc<dyn Backend>, peer: Arc<dyn Backend>) {
    let name = unique_name("cancel-release");
    let guard = take(&*backend, &name, Wait::TryOnce).await;
    // Polled once, then dropped: a network release is cut off mid-request.
    let _ = tokio::time::timeout(Duration::ZERO, guard.release()).await;
    release(take(&*peer, &name, Wait::Timeout(Duration::from_secs(10))).await).await;
    release(take(&*backend, &name, Wait::Timeout(Duration::from_secs(10))).await).await;
}

/// Different names (different template parameters) are different locks.
pub async fn distinct_names_are_independent(backend: Arc<dyn Backend>, peer: Arc<dyn Backend>) {
    let a = unique_name("array-a");
    let b = unique_name("array-b");
    let guard_a = take(&*backend, &a, Wait::TryOnce).await;
    let guard_b = take(&*peer, &b, Wait::TryOnce).await;
    assert_ne!(guard_a.name(), guard_b.name());
    release(guard_b).await;
    release(guard_a).await;
}

/// Each new holder of a name, on either client, gets a larger token (where
/// the backend claims fencing).
pub async fn fencing_tokens_increase(backend: Arc<dyn Backend>, peer: Arc<dyn Backend>) {
    if !backend.capabilities().fencing {
        return;
    }
    let name = unique_name("fence");
    let mut last = None;
    for i in 0..6 {
        let guard = take(&*client(i, &backend, &peer), &name, PATIENCE).await;
        if let Some(prev) = last {
            assert!(guard.token() > prev, "token {} after {prev}", guard.token());
        }
        last = Some(guard.token());
        release(guard).await;
    }
}

/// Where the backend claims FIFO: the waiters of one client acquire in the
/// order they asked, and across clients a waiter that reached the shared
/// queue goes before one that reached it later. (A waiter queued behind a
/// task of its own client reaches a server's queue only when that task's
/// turn ends, so "later" is not always "asked later"; see
/// [`Capabilities::fifo`](crate::Capabilities::fifo).)
pub async fn fifo_order(backend: Arc<dyn Backend>, peer: Arc<dyn Backend>) {
    if !backend.capabilities().fifo {
        return;
    }
    // One client: five waiters behind a holder on the other client.
    let name = unique_name("fifo");
    let holder = take(&*backend, &name, Wait::TryOnce).await;
    let order = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut waiters = Vec::new();
    for i in 0..5 {
        waiters.push(queue_up(&peer, &name, &order, i).await);
    }
    release(holder).await;
    for w in waiters {
        w.await.unwrap_or_else(|e| panic!("waiter failed: {e}"));
    }
    assert_eq!(
        *order.lock().unwrap_or_else(|e| e.into_inner()),
        [0, 1, 2, 3, 4],
        "one client's waiters in the order they asked"
    );

    // Across clients: a waiter of the other client, queued while the holder
    // holds, goes before a waiter of the holder's own client that asked
    // after it.
    let name = unique_name("fifo-across");
    let holder = take(&*backend, &name, Wait::TryOnce).await;
    let order = Arc::new(std::sync::Mutex::new(Vec::new()));
    let other = queue_up(&peer, &name, &order, 0).await;
    let own = queue_up(&backend, &name, &order, 1).await;
    release(holder).await;
    for w in [other, own] {
        w.await.unwrap_or_else(|e| panic!("waiter failed: {e}"));
    }
    assert_eq!(
        *order.lock().unwrap_or_else(|e| e.into_inner()),
        [0, 1],
        "the other client's waiter, which queued first, goes first"
    );
}

/// Starts a task that waits for `name` on `client`, records `i` once it
/// holds it and releases; returns once the waiter has had time to queue.
async fn queue_up(
    client: &Arc<dyn Backend>,
    name: &LockName,
    order: &Arc<std::sync::Mutex<Vec<usize>>>,
    i: usize,
) -> tokio::task::JoinHandle<()> {
    let (client, name, order) = (Arc::clone(client), name.clone(), Arc::clone(order));
    let waiter = tokio::spawn(async move {
        let guard = take(&*client, &name, PATIENCE).await;
        order.lock().unwrap_or_else(|e| e.into_inner()).push(i);
        release(guard).await;
    });
    // Let this waiter queue up before the next one asks.
    tokio::time::sleep(Duration::from_millis(150)).await;
    waiter
}

/// An acquire that times out or is dropped leaves nothing that blocks later
/// holders, on its own client or the peer.
pub async fn cancelled_acquire_leaves_nothing_behind(
    backend: Arc<dyn Backend>,
    peer: Arc<dyn Backend>,
) {
    let name = unique_name("cancel");
    let holder = take(&*peer, &name, Wait::TryOnce).await;
    let dropped = tokio::time::timeout(
        Duration::from_millis(200),
        acquire(&*backend, &request(&*backend, &name, Wait::Forever)),
    )
    .await;
    assert!(dropped.is_err(), "the waiter cannot get a held lock");
    let timed_out = acquire(
        &*backend,
        &request(&*backend, &name, Wait::Timeout(Duration::from_millis(200))),
    )
    .await;
    assert_eq!(
        timed_out.map(|_| ()).map_err(|e| e.kind()),
        Err(ErrorKind::Timeout)
    );
    release(holder).await;
    // Nothing left behind: the peer gets in, then the cancelled client itself,
    // and then a try-once succeeds too.
    release(take(&*peer, &name, Wait::Timeout(Duration::from_secs(5))).await).await;
    release(take(&*backend, &name, Wait::Timeout(Duration::from_secs(5))).await).await;
    release(take(&*peer, &name, Wait::TryOnce).await).await;
}

/// Hundreds of distinct names can be held at once and all released.
pub async fn many_names_at_once(backend: Arc<dyn Backend>, peer: Arc<dyn Backend>) {
    let mut guards = Vec::new();
    for i in 0..200 {
        let name = unique_name(&format!("many{i}"));
        guards.push(take(&*client(i, &backend, &peer), &name, Wait::TryOnce).await);
    }
    for guard in guards {
        release(guard).await;
    }
}

/// What a test needs from the environment variable `var`, as `ci/test.sh`
/// exports it: a server address (`LOCKS_TEST_ETCD`, `LOCKS_TEST_ZK`) or a
/// tool (`LOCKS_TEST_PYTHON`).
///
/// Without it, tests of that server are skipped with a printed notice, except
/// when `CI=true`: there a missing server fails the test, so a suite that ran
/// nothing cannot pass for one that passed.
pub fn server_from_env(var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(addr) if !addr.trim().is_empty() => Some(addr.trim().to_owned()),
        _ if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!(
                "{var} is not set but CI=true: ci/test.sh sets it up (its servers, ci/python.sh)"
            )
        }
        _ => {
            eprintln!(
                "skipping: {var} is not set (run ci/test.sh, or set up what it names and export {var})"
            );
            None
        }
    }
}
