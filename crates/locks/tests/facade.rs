//! The facade: configuration to backends, catalog locks, re-entry detection,
//! multi-lock order and partial failure, and the blocking client.

use std::time::Duration;

use locks::{BlockingLocks, Config, ErrorKind, LockRequest, Locks, Params, Scope, Wait};

fn config_in(dir: &std::path::Path, prefix: &str) -> Config {
    let text = format!(
        "prefix = \"{prefix}\"\n[backends]\nnode = \"file://{0}/node\"\nglobal = \"file://{0}/global\"\n",
        dir.display()
    );
    Config::from_toml_str(&text, dir, "test").expect("valid config")
}

async fn open(dir: &std::path::Path) -> Locks {
    Locks::open(config_in(dir, "cinder-")).await.expect("open")
}

#[tokio::test]
async fn catalog_locks_render_prefix_and_pick_the_scope_backend() {
    let dir = tempfile::tempdir().unwrap();
    let locks = open(dir.path()).await;
    let guard = locks.lock("lio", &Params::new()).await.unwrap();
    assert_eq!(guard.name().as_str(), "cinder-lioadm");
    assert_eq!(guard.scope(), Scope::Node);
    assert!(dir.path().join("node/cinder-lioadm").exists());
    guard.release().await.unwrap();

    let params = Params::new().with("management_address", "10.0.0.1");
    let guard = locks.lock("infinidat", &params).await.unwrap();
    assert_eq!(guard.scope(), Scope::Global);
    assert!(
        dir.path()
            .join("global/cinder-infinidat-10.0.0.1-lock")
            .exists()
    );
    guard.release().await.unwrap();

    let guard = locks
        .lock_name(Scope::Process, "BlkioCgroup", Wait::TryOnce)
        .await
        .unwrap();
    assert_eq!(guard.name().as_str(), "cinder-BlkioCgroup");
    assert_eq!(locks.backend(Scope::Process).kind(), "memory");
    guard.release().await.unwrap();
    assert_eq!(
        locks.warnings().len(),
        1,
        "global on lock files is host-local: {:?}",
        locks.warnings()
    );
    assert!(
        locks.warnings()[0].contains("backends.global is file://"),
        "{:?}",
        locks.warnings()
    );
}

#[tokio::test]
async fn request_errors_are_typed() {
    let dir = tempfile::tempdir().unwrap();
    let locks = open(dir.path()).await;
    let err = locks.lock("nope", &Params::new()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::UnknownLock);
    let err = locks
        .lock("kaminario-fc", &Params::new())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::MissingParameter);
    assert!(
        err.message().contains("kaminario-fc") && err.message().contains("san_ip"),
        "{err}"
    );
    let err = locks
        .lock("lio", &Params::new().with("volume", "v1"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::UnknownParameter);
    let err = locks
        .lock_name(Scope::Node, "", Wait::TryOnce)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidName);
    let err = locks
        .lock_name(Scope::Node, &"x".repeat(1020), Wait::TryOnce)
        .await
        .unwrap_err();
    assert_eq!(
        err.kind(),
        ErrorKind::InvalidName,
        "the prefix counts towards the limit"
    );
}

#[tokio::test]
async fn a_task_asking_again_for_what_it_holds_gets_would_deadlock() {
    let dir = tempfile::tempdir().unwrap();
    let locks = open(dir.path()).await;
    let adapter = Params::new()
        .with("client.host", "unity-a")
        .with("host_name", "h1");
    let client = Params::new()
        .with("self.host", "unity-a")
        .with("name", "h1");
    let guard = locks
        .lock("unity-create-host-and-attach", &adapter)
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let err = locks.lock("unity-create-host", &client).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::WouldDeadlock);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "reported at once"
    );
    assert!(err.message().contains("unity-a-h1"), "{err}");

    // Another task is not the holder: it waits, and gets the lock after release.
    let other = {
        let locks = locks.clone();
        tokio::spawn(async move {
            locks
                .lock_with(
                    "unity-create-host",
                    &client,
                    Wait::Timeout(Duration::from_secs(10)),
                )
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!other.is_finished());
    guard.release().await.unwrap();
    let inner = other.await.unwrap().unwrap();
    inner.release().await.unwrap();

    // After release the same task may take it again.
    let again = locks
        .lock("unity-create-host-and-attach", &adapter)
        .await
        .unwrap();
    drop(again);
    let again = locks
        .lock_with("unity-create-host-and-attach", &adapter, Wait::TryOnce)
        .await
        .unwrap();
    again.release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn re_entry_on_the_memory_scope_is_detected_per_task() {
    let dir = tempfile::tempdir().unwrap();
    let locks = open(dir.path()).await;
    let guard = locks
        .lock_name(Scope::Process, "p", Wait::Forever)
        .await
        .unwrap();
    for wait in [
        Wait::Forever,
        Wait::TryOnce,
        Wait::Timeout(Duration::from_secs(5)),
    ] {
        let err = locks
            .lock_name(Scope::Process, "p", wait)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::WouldDeadlock, "{wait}");
        assert!(err.message().contains("cinder-p"), "{err}");
    }
    let req = |name: &str| locks.raw_request(Scope::Process, name).unwrap();
    let err = locks
        .lock_many(vec![req("o"), req("p")], Wait::Forever)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::WouldDeadlock);
    let o = locks
        .lock_name(Scope::Process, "o", Wait::TryOnce)
        .await
        .expect("lock_many took nothing");
    o.release().await.unwrap();

    // A guard moved to another task still counts for the task that took it;
    // the other task is not the holder, so it waits (here: times out).
    let other = {
        let locks = locks.clone();
        tokio::spawn(async move {
            let again = locks
                .lock_name(
                    Scope::Process,
                    "p",
                    Wait::Timeout(Duration::from_millis(50)),
                )
                .await;
            (guard, again.unwrap_err().kind())
        })
    };
    let (guard, kind) = other.await.unwrap();
    assert_eq!(kind, ErrorKind::Timeout);
    let err = locks
        .lock_name(Scope::Process, "p", Wait::TryOnce)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::WouldDeadlock);

    // A waiter in another task gets it after release, and then it is that task's.
    let waiter = {
        let locks = locks.clone();
        tokio::spawn(async move {
            let g = locks
                .lock_name(Scope::Process, "p", Wait::Forever)
                .await
                .unwrap();
            let again = locks
                .lock_name(Scope::Process, "p", Wait::TryOnce)
                .await
                .map(|_| ())
                .unwrap_err()
                .kind();
            g.release().await.unwrap();
            again
        })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    guard.release().await.unwrap();
    assert_eq!(waiter.await.unwrap(), ErrorKind::WouldDeadlock);
    let g = locks
        .lock_name(Scope::Process, "p", Wait::TryOnce)
        .await
        .unwrap();
    drop(g);
    let g = locks
        .lock_name(Scope::Process, "p", Wait::TryOnce)
        .await
        .expect("a dropped guard leaves no holder behind");
    g.release().await.unwrap();
}

/// The memory backend takes a free lock by its name as text
/// (`try_acquire_name_now`): the guard carries the full, prefixed name,
/// re-entry is still detected, and names the fast path cannot take (too
/// long for its buffer, invalid) go the full way.
#[tokio::test]
async fn a_known_memory_name_is_taken_again_by_text() {
    let dir = tempfile::tempdir().unwrap();
    let locks = open(dir.path()).await;
    let first = locks
        .try_acquire_name_now(Scope::Process, "vol-1")
        .expect("free");
    assert_eq!(first.name().as_str(), "cinder-vol-1");
    let token = first.token();
    first.release().await.unwrap();
    let again = locks
        .try_acquire_name_now(Scope::Process, "vol-1")
        .expect("known and free");
    assert_eq!(again.name().as_str(), "cinder-vol-1");
    assert_eq!(again.scope(), Scope::Process);
    assert!(again.token() > token);
    assert!(
        locks
            .try_acquire_name_now(Scope::Process, "vol-1")
            .is_none(),
        "held"
    );
    let err = locks
        .lock_name(Scope::Process, "vol-1", Wait::Forever)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::WouldDeadlock, "{}", err.report());
    again.release().await.unwrap();
    let third = locks
        .lock_name(Scope::Process, "vol-1", Wait::TryOnce)
        .await
        .unwrap();
    assert_eq!(third.name().as_str(), "cinder-vol-1");
    third.release().await.unwrap();

    // Longer than the fast path's buffer: still served, by the full path.
    let long = "v".repeat(400);
    for _ in 0..2 {
        let g = locks
            .lock_name(Scope::Process, &long, Wait::TryOnce)
            .await
            .unwrap();
        assert_eq!(g.name().as_str(), format!("cinder-{long}"));
        g.release().await.unwrap();
    }
    for bad in ["bad\0name", ""] {
        assert!(locks.try_acquire_name_now(Scope::Process, bad).is_none());
        let err = locks
            .lock_name(Scope::Process, bad, Wait::TryOnce)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidName);
    }
    // A backend that does not serve names by text (file) sends every call the full way.
    let g = locks
        .lock_name(Scope::Node, "n", Wait::TryOnce)
        .await
        .unwrap();
    g.release().await.unwrap();
    assert!(locks.try_acquire_name_now(Scope::Node, "n").is_none());
}

#[tokio::test]
async fn lock_many_takes_sorted_deduplicated_names_and_releases_a_partial_set() {
    let dir = tempfile::tempdir().unwrap();
    let locks = open(dir.path()).await;
    let req = |name: &str| locks.raw_request(Scope::Node, name).unwrap();
    let many = locks
        .lock_many(vec![req("c"), req("a"), req("b"), req("a")], Wait::TryOnce)
        .await
        .unwrap();
    let names: Vec<&str> = many.guards().iter().map(|g| g.name().as_str()).collect();
    assert_eq!(names, ["cinder-a", "cinder-b", "cinder-c"]);
    many.release().await.unwrap();

    // Someone else holds `b`: taking {a, b, c} fails on b and leaves a free.
    let holder = {
        let locks = locks.clone();
        tokio::spawn(async move {
            locks
                .lock_name(Scope::Node, "b", Wait::TryOnce)
                .await
                .unwrap()
        })
        .await
        .unwrap()
    };
    let err = locks
        .lock_many(vec![req("c"), req("b"), req("a")], Wait::TryOnce)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::WouldBlock);
    assert!(err.message().contains("cinder-b"), "{err}");
    let a = locks
        .lock_name(Scope::Node, "a", Wait::TryOnce)
        .await
        .expect("a was released");
    let c = locks
        .lock_name(Scope::Node, "c", Wait::TryOnce)
        .await
        .expect("c was never taken");
    a.release().await.unwrap();
    c.release().await.unwrap();

    // A timeout bounds the whole set.
    let started = std::time::Instant::now();
    let err = locks
        .lock_many(
            vec![req("a"), req("b")],
            Wait::Timeout(Duration::from_millis(300)),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout);
    assert!(started.elapsed() < Duration::from_secs(3));
    holder.release().await.unwrap();
    let a = locks
        .lock_name(Scope::Node, "a", Wait::TryOnce)
        .await
        .expect("a released after the timeout");
    a.release().await.unwrap();
}

#[tokio::test]
async fn a_backend_that_cannot_honour_its_scope_is_a_config_error_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    for (key, text) in [
        ("backends.node", "[backends]\nnode = \"memory://\"\n"),
        (
            "backends.global",
            "[backends]\nnode = \"file:///tmp/x\"\nglobal = \"memory://\"\n",
        ),
    ] {
        let config = Config::from_toml_str(text, dir.path(), "t").unwrap();
        let err = Locks::open(config).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidConfig);
        assert!(
            err.message().contains(key) && err.message().contains("cannot honour"),
            "{err}"
        );
    }
}

#[tokio::test]
async fn scope_mismatch_errors_and_urls_never_show_passwords() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config::from_toml_str(
        "[backends]\nprocess = \"file://u:s3cret@localhost/tmp/x\"\n",
        dir.path(),
        "t",
    )
    .unwrap();
    let err = Locks::open(config).await.unwrap_err();
    assert!(!err.report().contains("s3cret"), "{}", err.report());
}

#[tokio::test]
async fn scopes_sharing_a_backend_share_their_locks() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[backends]\nnode = \"file://{0}\"\nglobal = \"file://{0}\"\n",
        dir.path().display()
    );
    let locks = Locks::open(Config::from_toml_str(&text, dir.path(), "t").unwrap())
        .await
        .unwrap();
    let node = locks
        .lock_name(Scope::Node, "x", Wait::TryOnce)
        .await
        .unwrap();
    // The same file: asking for it as a Global lock would wait for ourselves.
    let err = locks
        .lock_name(Scope::Global, "x", Wait::Forever)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::WouldDeadlock);
    node.release().await.unwrap();
    let both = vec![
        locks.raw_request(Scope::Global, "x").unwrap(),
        locks.raw_request(Scope::Node, "x").unwrap(),
    ];
    let many = locks
        .lock_many(both, Wait::Timeout(Duration::from_secs(2)))
        .await
        .unwrap();
    assert_eq!(many.guards().len(), 1, "one lock, taken once");
    many.release().await.unwrap();
    let huge = locks
        .lock_many(
            vec![locks.raw_request(Scope::Node, "y").unwrap()],
            Wait::Timeout(Duration::MAX),
        )
        .await
        .unwrap();
    huge.release().await.unwrap();
}

#[tokio::test]
async fn embedded_defaults_warn_that_global_is_host_local() {
    let locks = Locks::open(Config::embedded()).await.unwrap();
    assert_eq!(locks.backend(Scope::Process).kind(), "memory");
    assert_eq!(locks.backend(Scope::Node).kind(), "file");
    assert_eq!(locks.warnings().len(), 1);
    assert!(
        locks.warnings()[0].contains("only processes on this host"),
        "{:?}",
        locks.warnings()
    );
    assert!(
        std::sync::Arc::ptr_eq(locks.backend(Scope::Node), locks.backend(Scope::Global)),
        "one URL, one backend"
    );
}

#[test]
fn blocking_client_works_without_a_runtime_and_refuses_inside_one() {
    let dir = tempfile::tempdir().unwrap();
    let locks = BlockingLocks::open(config_in(dir.path(), "")).unwrap();
    let guard = locks.lock("nvmet", &Params::new()).unwrap();
    assert_eq!(guard.name().as_str(), "nvmetcli");
    let err = locks
        .lock_with("nvmet", &Params::new(), Wait::TryOnce)
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::WouldDeadlock, "same thread");
    let from_other_thread = std::thread::scope(|s| {
        s.spawn(|| {
            locks
                .lock_with("nvmet", &Params::new(), Wait::TryOnce)
                .map(|_| ())
                .unwrap_err()
                .kind()
        })
        .join()
        .unwrap()
    });
    assert_eq!(from_other_thread, ErrorKind::WouldBlock);
    locks.release(guard).unwrap();
    let many = locks
        .lock_many(
            vec![LockRequest::new(
                locks::LockName::new("x").unwrap(),
                Scope::Process,
            )],
            Wait::TryOnce,
        )
        .unwrap();
    drop(many);

    let rt = tokio::runtime::Runtime::new().unwrap();
    let err = rt.block_on(async { locks.lock("nvmet", &Params::new()).map(|_| ()).unwrap_err() });
    assert_eq!(err.kind(), ErrorKind::Unsupported);
}

#[test]
fn blocking_re_entry_on_the_memory_scope_is_per_thread() {
    let dir = tempfile::tempdir().unwrap();
    let locks = BlockingLocks::open(config_in(dir.path(), "")).unwrap();
    let guard = locks.lock_name(Scope::Process, "m", Wait::Forever).unwrap();
    let err = locks
        .lock_name(Scope::Process, "m", Wait::Forever)
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::WouldDeadlock, "same thread");
    let from_other_thread = std::thread::scope(|s| {
        s.spawn(|| {
            locks
                .lock_name(Scope::Process, "m", Wait::TryOnce)
                .map(|_| ())
                .unwrap_err()
                .kind()
        })
        .join()
        .unwrap()
    });
    assert_eq!(from_other_thread, ErrorKind::WouldBlock);
    let waited_elsewhere = std::thread::scope(|s| {
        s.spawn(|| {
            locks
                .lock_name(
                    Scope::Process,
                    "m",
                    Wait::Timeout(Duration::from_millis(20)),
                )
                .map(drop)
                .unwrap_err()
                .kind()
        })
        .join()
        .unwrap()
    });
    assert_eq!(waited_elsewhere, ErrorKind::Timeout);
    locks.release(guard).unwrap();
    let again = locks.lock_name(Scope::Process, "m", Wait::TryOnce).unwrap();
    locks.release(again).unwrap();
    let next = std::thread::scope(|s| {
        s.spawn(|| locks.lock_name(Scope::Process, "m", Wait::TryOnce))
            .join()
            .unwrap()
    });
    locks.release(next.expect("free after release")).unwrap();

    // The runtime-free fast path is refused inside a runtime like the rest.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let inside = runtime.block_on(async {
        locks
            .lock_name(Scope::Process, "m2", Wait::TryOnce)
            .map(drop)
            .unwrap_err()
            .kind()
    });
    assert_eq!(inside, ErrorKind::Unsupported);
}

#[test]
fn dropping_the_blocking_client_does_not_wait_for_an_abandoned_file_waiter() {
    let dir = tempfile::tempdir().unwrap();
    let holder = BlockingLocks::open(config_in(dir.path(), "")).unwrap();
    let guard = holder.lock("lio", &Params::new()).unwrap();
    let waiter = BlockingLocks::open(config_in(dir.path(), "")).unwrap();
    let err = waiter
        .lock_with(
            "lio",
            &Params::new(),
            Wait::Timeout(Duration::from_millis(100)),
        )
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout);
    // The timed-out waiter's thread is still blocked in the kernel behind `guard`.
    let started = std::time::Instant::now();
    drop(waiter);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "drop took {:?}",
        started.elapsed()
    );
    holder.release(guard).unwrap();
}
