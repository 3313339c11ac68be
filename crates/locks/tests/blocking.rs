//! `BlockingLocks` beyond the plain calls (those are in facade.rs): cancelling
//! an acquire from another thread, re-entry per thread or per task, and the
//! runtime's thread name.

use std::time::Duration;

use locks::{BlockingLocks, CancelToken, Config, ErrorKind, LockName, LockRequest, Scope, Wait};

fn open(dir: &std::path::Path) -> BlockingLocks {
    let text = format!(
        "[backends]\nnode = \"file://{0}/node\"\nglobal = \"file://{0}/global\"\n",
        dir.display()
    );
    let config = Config::from_toml_str(&text, dir, "test").expect("valid config");
    BlockingLocks::open(config).expect("open")
}

fn request(scope: Scope, name: &str, wait: Wait) -> LockRequest {
    LockRequest::new(LockName::new(name).unwrap(), scope).wait(wait)
}

/// Whether another thread can take `name` at once (and lets it go).
fn free_elsewhere(locks: &BlockingLocks, scope: Scope, name: &str) -> bool {
    std::thread::scope(|s| {
        s.spawn(|| match locks.lock_name(scope, name, Wait::TryOnce) {
            Ok(guard) => {
                locks.release(guard).unwrap();
                true
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => false,
            Err(e) => panic!("{}", e.report()),
        })
        .join()
        .unwrap()
    })
}

#[test]
fn a_token_triggered_from_another_thread_ends_the_wait_and_leaves_nothing_queued() {
    let dir = tempfile::tempdir().unwrap();
    let locks = open(dir.path());
    for scope in [Scope::Process, Scope::Node] {
        let held = locks.lock_name(scope, "c", Wait::Forever).unwrap();
        let cancel = CancelToken::new();
        let outcome = std::thread::scope(|s| {
            let waiter =
                s.spawn(|| locks.acquire_cancellable(request(scope, "c", Wait::Forever), &cancel));
            std::thread::sleep(Duration::from_millis(50));
            assert!(!waiter.is_finished(), "{scope}: waits while held");
            cancel.trigger();
            waiter.join().unwrap()
        });
        assert!(cancel.is_triggered());
        assert!(outcome.unwrap().is_none(), "{scope}: cancelled");
        locks.release(held).unwrap();
        // Nothing held or queued by the cancelled waiter: free for anyone.
        assert!(free_elsewhere(&locks, scope, "c"), "{scope}");
    }
}

#[test]
fn a_token_triggered_before_the_call_does_not_try_the_lock_but_bad_names_come_first() {
    let dir = tempfile::tempdir().unwrap();
    let locks = open(dir.path());
    let cancel = CancelToken::new();
    cancel.trigger();
    let free = request(Scope::Process, "free", Wait::TryOnce);
    assert!(locks.acquire_cancellable(free, &cancel).unwrap().is_none());
    let by_name = locks.lock_name_cancellable(Scope::Node, "free", Wait::TryOnce, &cancel);
    assert!(by_name.unwrap().is_none());
    assert!(
        !dir.path().join("node/free").exists(),
        "the lock was not tried"
    );
    let bad = locks.lock_name_cancellable(Scope::Node, "", Wait::TryOnce, &cancel);
    assert_eq!(bad.unwrap_err().kind(), ErrorKind::InvalidName);

    // A token not triggered changes nothing.
    let untouched = CancelToken::new();
    let guard = locks
        .lock_name_cancellable(Scope::Node, "free", Wait::TryOnce, &untouched)
        .unwrap()
        .expect("taken");
    assert!(!free_elsewhere(&locks, Scope::Node, "free"));
    locks.release(guard).unwrap();
}

#[test]
fn re_entry_per_task_lets_a_thread_wait_for_itself_instead_of_failing() {
    let dir = tempfile::tempdir().unwrap();
    let locks = open(dir.path());
    assert!(locks.reentry_per_thread(), "the default");
    for scope in [Scope::Process, Scope::Node] {
        let guard = locks.lock_name(scope, "r", Wait::Forever).unwrap();
        let again = locks.lock_name(scope, "r", Wait::TryOnce).unwrap_err();
        assert_eq!(
            again.kind(),
            ErrorKind::WouldDeadlock,
            "{scope}: per thread"
        );

        locks.set_reentry_per_thread(false);
        assert!(!locks.reentry_per_thread());
        let again = locks
            .lock_name(scope, "r", Wait::Timeout(Duration::from_millis(20)))
            .unwrap_err();
        assert_eq!(again.kind(), ErrorKind::Timeout, "{scope}: per task");
        let by_request = locks.acquire(request(scope, "r", Wait::TryOnce));
        assert_eq!(by_request.unwrap_err().kind(), ErrorKind::WouldBlock);
        locks.release(guard).unwrap();
        let taken = locks.lock_name(scope, "r", Wait::TryOnce).unwrap();
        locks.release(taken).unwrap();
        locks.set_reentry_per_thread(true);
    }
}

#[test]
fn the_runtime_threads_carry_the_given_name() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[backends]\nnode = \"file://{}/node\"\n",
        dir.path().display()
    );
    let config = Config::from_toml_str(&text, dir.path(), "test").unwrap();
    let locks = BlockingLocks::open_with_thread_name(config, "locks-test-rt").unwrap();
    let name = locks.runtime().block_on(async {
        tokio::spawn(async { std::thread::current().name().map(str::to_owned) })
            .await
            .unwrap()
    });
    assert_eq!(name.as_deref(), Some("locks-test-rt"));
    assert_eq!(
        BlockingLocks::check_outside_runtime().map_err(|e| e.kind()),
        Ok(())
    );
    let inside = locks
        .runtime()
        .block_on(async { BlockingLocks::check_outside_runtime().unwrap_err().kind() });
    assert_eq!(inside, ErrorKind::Unsupported);
}
