//! The kazoo node layout, FIFO across sessions, scale, cancellation, clean,
//! credentials and connection errors, against the server in `LOCKS_TEST_ZK`.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{children, config, connect, eventually, name, raw, server};
use locks_core::{Backend, ErrorKind, LockRequest, LockState, Scope, Wait, acquire};
use locks_zookeeper::{ZkBackend, ZkConfig};
use zookeeper_client as zk;

fn global(name: &locks_core::LockName, wait: Wait) -> LockRequest {
    LockRequest::new(name.clone(), Scope::Global).wait(wait)
}

fn is_kazoo_node(child: &str) -> bool {
    let Some((hex, seq)) = child.split_once("__lock__") else {
        return false;
    };
    hex.len() == 32
        && hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        && seq.len() == 10
        && seq.bytes().all(|b| b.is_ascii_digit())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_follow_kazoos_layout_and_tokens_are_czxids() {
    let Some(addr) = server() else { return };
    let backend = connect(config(&addr, "layout")).await;
    let client = raw(&addr).await;
    let lock = name("cinder-volume");
    let dir = backend.lock_dir(&lock).unwrap();
    assert_eq!(dir, format!("/{}/locks/{lock}", backend.config().namespace));
    let request = global(&lock, Wait::TryOnce).label("volume_attach");
    let guard = backend.acquire(&request).await.unwrap();
    let nodes = children(&client, &dir).await;
    assert_eq!(nodes.len(), 1, "{nodes:?}");
    assert!(is_kazoo_node(&nodes[0]), "{nodes:?}");
    let (data, stat) = client
        .get_data(&format!("{dir}/{}", nodes[0]))
        .await
        .unwrap();
    assert_eq!(String::from_utf8(data).unwrap(), request.holder_identity());
    assert!(String::from_utf8_lossy(&client.get_data(&dir).await.unwrap().0).is_empty());
    assert_ne!(stat.ephemeral_owner, 0, "contenders are ephemeral");
    assert_eq!(guard.token(), u64::try_from(stat.czxid).unwrap());
    assert_eq!(guard.state(), LockState::Held);
    guard.release().await.unwrap();
    assert!(children(&client, &dir).await.is_empty());
    // The directory stays: deleting it would race with new contenders.
    assert!(client.check_stat(&dir).await.unwrap().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nested_names_make_nested_directories() {
    let Some(addr) = server() else { return };
    let backend = connect(config(&addr, "nested")).await;
    let client = raw(&addr).await;
    let parent = name("pool");
    let child = locks_core::LockName::new(format!("{parent}/vol-1")).unwrap();
    let outer = backend
        .acquire(&global(&parent, Wait::TryOnce))
        .await
        .unwrap();
    let inner = backend
        .acquire(&global(&child, Wait::TryOnce))
        .await
        .unwrap();
    let dir = backend.lock_dir(&child).unwrap();
    assert!(dir.ends_with(&format!("/locks/{parent}/vol-1")));
    assert_eq!(children(&client, &dir).await.len(), 1);
    // The parent lock's directory holds its contender and the child directory.
    assert_eq!(
        children(&client, &backend.lock_dir(&parent).unwrap())
            .await
            .len(),
        2
    );
    inner.release().await.unwrap();
    outer.release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_children_are_ignored_but_kazoo_contenders_count() {
    let Some(addr) = server() else { return };
    let backend = connect(config(&addr, "foreign")).await;
    let client = raw(&addr).await;
    let lock = name("shared");
    let dir = backend.lock_dir(&lock).unwrap();
    let open = zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all());
    client.mkdir(&dir, &open).await.unwrap();
    // A Curator-style contender and a plain node: not kazoo contenders.
    let ephemeral = zk::CreateMode::Ephemeral.with_acls(zk::Acls::anyone_all());
    client
        .create(
            &format!("{dir}/_c_xyz-lock-0000000001"),
            b"curator",
            &ephemeral,
        )
        .await
        .unwrap();
    client
        .create(&format!("{dir}/notes"), b"", &open)
        .await
        .unwrap();
    let guard = backend
        .acquire(&global(&lock, Wait::TryOnce))
        .await
        .unwrap();
    guard.release().await.unwrap();

    // A kazoo contender (as kazoo names it) holds the lock against us.
    let kazoo = zk::CreateMode::EphemeralSequential.with_acls(zk::Acls::anyone_all());
    let prefix = format!("{dir}/{}__lock__", "f".repeat(32));
    let (_, sequence) = client.create(&prefix, b"kazoo", &kazoo).await.unwrap();
    let kazoo_node = format!("{prefix}{sequence}");
    let err = backend
        .acquire(&global(&lock, Wait::TryOnce))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::WouldBlock, "{}", err.report());
    // The failed try left nothing behind.
    assert_eq!(
        children(&client, &dir)
            .await
            .iter()
            .filter(|c| c.contains("__lock__"))
            .count(),
        1
    );
    let waiter = {
        let (backend, lock) = (backend.clone(), lock.clone());
        tokio::spawn(async move { backend.acquire(&global(&lock, Wait::Forever)).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!waiter.is_finished(), "the kazoo holder blocks us");
    client.delete(&kazoo_node, None).await.unwrap();
    let guard = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("handed over within 5 s")
        .unwrap()
        .unwrap();
    guard.release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_waiters_on_twenty_sessions_acquire_in_order() {
    let Some(addr) = server() else { return };
    let config = config(&addr, "fifo");
    let client = raw(&addr).await;
    let holder_backend = connect(config.clone()).await;
    let lock = name("fifo");
    let dir = holder_backend.lock_dir(&lock).unwrap();
    let holder = holder_backend
        .acquire(&global(&lock, Wait::TryOnce))
        .await
        .unwrap();
    let order = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut waiters = Vec::new();
    for i in 0..20 {
        let backend = connect(config.clone()).await;
        let (lock, order) = (lock.clone(), order.clone());
        waiters.push(tokio::spawn(async move {
            let guard = backend
                .acquire(&global(&lock, Wait::Forever))
                .await
                .unwrap();
            order.lock().unwrap().push(i);
            tokio::time::sleep(Duration::from_millis(2)).await;
            guard.release().await.unwrap();
        }));
        // Wait until this waiter's node exists before the next one asks.
        eventually(Duration::from_secs(5), "waiter queued", || {
            let (client, dir) = (&client, &dir);
            async move { children(client, dir).await.len() == i + 2 }
        })
        .await;
    }
    holder.release().await.unwrap();
    for waiter in waiters {
        tokio::time::timeout(Duration::from_secs(30), waiter)
            .await
            .expect("all waiters get the lock")
            .unwrap();
    }
    assert_eq!(*order.lock().unwrap(), (0..20).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_thousand_names_held_on_one_session() {
    let Some(addr) = server() else { return };
    let backend = connect(config(&addr, "many")).await;
    let prefix = name("vol");
    let start = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..50 {
        let (backend, prefix) = (backend.clone(), prefix.clone());
        tasks.push(tokio::spawn(async move {
            let mut guards = Vec::new();
            for i in (worker..10_000).step_by(50) {
                let lock = locks_core::LockName::new(format!("{prefix}-{i}")).unwrap();
                guards.push(
                    backend
                        .acquire(&global(&lock, Wait::TryOnce))
                        .await
                        .unwrap(),
                );
            }
            guards
        }));
    }
    let mut guards = Vec::new();
    for task in tasks {
        guards.extend(task.await.unwrap());
    }
    let acquired = start.elapsed();
    assert_eq!(guards.len(), 10_000);
    assert_eq!(backend.active_names(), 10_000);
    assert!(guards.iter().all(|g| g.state() == LockState::Held));
    let mut tokens: Vec<u64> = guards.iter().map(|g| g.token()).collect();
    tokens.sort_unstable();
    tokens.dedup();
    assert_eq!(tokens.len(), 10_000, "every holding has its own czxid");
    // A second client cannot take any of them.
    let other = connect(backend.config().clone()).await;
    let probe = locks_core::LockName::new(format!("{prefix}-9999")).unwrap();
    assert_eq!(
        other
            .acquire(&global(&probe, Wait::TryOnce))
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::WouldBlock
    );
    for guard in guards {
        guard.release().await.unwrap();
    }
    assert_eq!(backend.active_names(), 0);
    let report = backend.clean().await.unwrap();
    assert_eq!(report.removed.len(), 10_000, "busy: {}", report.busy);
    eprintln!(
        "10 000 names acquired in {acquired:?}, all released and cleaned after {:?}",
        start.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_and_timed_out_waiters_leave_no_contender() {
    let Some(addr) = server() else { return };
    let backend = connect(config(&addr, "cancel")).await;
    let client = raw(&addr).await;
    let lock = name("busy");
    let dir = backend.lock_dir(&lock).unwrap();
    let holder = backend
        .acquire(&global(&lock, Wait::TryOnce))
        .await
        .unwrap();
    // Another session, so its waiter really queues in ZooKeeper.
    let other = connect(backend.config().clone()).await;
    for _ in 0..3 {
        let timed = acquire(
            &other,
            &global(&lock, Wait::Timeout(Duration::from_millis(150))),
        )
        .await
        .unwrap_err();
        assert_eq!(timed.kind(), ErrorKind::Timeout);
        let dropped = tokio::time::timeout(
            Duration::from_millis(150),
            other.acquire(&global(&lock, Wait::Forever)),
        )
        .await;
        assert!(dropped.is_err());
    }
    // Cancelled right after the creation request left.
    let forever = global(&lock, Wait::Forever);
    for _ in 0..20 {
        let mut fut = Box::pin(other.acquire(&forever));
        let _ = futures_poll_once(fut.as_mut()).await;
        drop(fut);
    }
    eventually(
        Duration::from_secs(5),
        "only the holder's node remains",
        || {
            let (client, dir) = (&client, &dir);
            async move { children(client, dir).await.len() == 1 }
        },
    )
    .await;
    holder.release().await.unwrap();
    // A cancelled waiter's cleanup deletes its node, then ends its in-process
    // turn: wait for both rather than racing them with a try-once.
    let next = acquire(
        &other,
        &global(&lock, Wait::Timeout(Duration::from_secs(3))),
    )
    .await
    .unwrap();
    next.release().await.unwrap();
    assert_eq!(other.active_names(), 0);
}

/// A waiter that gives up and whose process ends at once (its runtime shut
/// down right after the acquire returned, before any background task ran)
/// leaves nothing behind: closing the backend closes its session, so the
/// next client takes the lock when the holder releases, not a session
/// timeout later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quitter_whose_process_ends_at_once_leaves_no_contender() {
    let Some(addr) = server() else { return };
    let config = config(&addr, "quitter").session_timeout(Duration::from_secs(10));
    let holder = connect(config.clone()).await;
    let lock = name("quitter");
    let held = holder.acquire(&global(&lock, Wait::TryOnce)).await.unwrap();
    let quitter = {
        let (config, lock) = (config.clone(), lock.clone());
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let err = runtime.block_on(async {
                let backend = ZkBackend::connect(config).await.unwrap();
                acquire(
                    &backend,
                    &global(&lock, Wait::Timeout(Duration::from_millis(300))),
                )
                .await
                .unwrap_err()
            });
            // As a process exiting: the runtime goes, then the backend.
            drop(runtime);
            err.kind()
        })
    };
    assert_eq!(quitter.join().unwrap(), ErrorKind::Timeout);
    let started = Instant::now();
    held.release().await.unwrap();
    let next = acquire(
        &holder,
        &global(&lock, Wait::Timeout(Duration::from_secs(5))),
    )
    .await
    .unwrap_or_else(|e| {
        panic!(
            "the quitter's contender outlived its process: {}",
            e.report()
        )
    });
    eprintln!("next holder {:?} after the release", started.elapsed());
    next.release().await.unwrap();
}

/// Polls a future once (so its first requests leave), then gives it back.
async fn futures_poll_once<F: Future + Unpin>(mut fut: F) -> Option<F::Output> {
    std::future::poll_fn(|cx| {
        std::task::Poll::Ready(match std::pin::Pin::new(&mut fut).poll(cx) {
            std::task::Poll::Ready(out) => Some(out),
            std::task::Poll::Pending => None,
        })
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clean_removes_empty_directories_and_keeps_busy_ones() {
    let Some(addr) = server() else { return };
    let backend = connect(config(&addr, "clean")).await;
    let client = raw(&addr).await;
    let (idle, busy, nested) = (name("idle"), name("busy"), name("outer"));
    let nested = locks_core::LockName::new(format!("{nested}/inner")).unwrap();
    for lock in [&idle, &nested] {
        backend
            .acquire(&global(lock, Wait::TryOnce))
            .await
            .unwrap()
            .release()
            .await
            .unwrap();
    }
    let held = backend
        .acquire(&global(&busy, Wait::TryOnce))
        .await
        .unwrap();
    let report = backend.clean().await.unwrap();
    let idle_dir = backend.lock_dir(&idle).unwrap();
    let busy_dir = backend.lock_dir(&busy).unwrap();
    let nested_dir = backend.lock_dir(&nested).unwrap();
    let outer_dir = nested_dir.trim_end_matches("/inner").to_owned();
    assert!(report.removed.contains(&idle_dir), "{report:?}");
    assert!(report.removed.contains(&nested_dir), "{report:?}");
    assert!(report.removed.contains(&outer_dir), "{report:?}");
    assert!(!report.removed.contains(&busy_dir), "{report:?}");
    assert_eq!(report.busy, 1, "{report:?}");
    assert!(client.check_stat(&idle_dir).await.unwrap().is_none());
    assert_eq!(children(&client, &busy_dir).await.len(), 1);
    assert_eq!(held.state(), LockState::Held);
    // Locks still work after their directory was cleaned away.
    backend
        .acquire(&global(&idle, Wait::TryOnce))
        .await
        .unwrap()
        .release()
        .await
        .unwrap();
    held.release().await.unwrap();
    let report = backend.clean().await.unwrap();
    assert!(report.removed.contains(&busy_dir), "{report:?}");
    assert_eq!(report.busy, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guards_dropped_outside_the_runtime_release() {
    let Some(addr) = server() else { return };
    let backend = connect(config(&addr, "drop-thread")).await;
    let lock = name("moved");
    let guard = backend
        .acquire(&global(&lock, Wait::TryOnce))
        .await
        .unwrap();
    std::thread::spawn(move || drop(guard)).join().unwrap();
    let other = connect(backend.config().clone()).await;
    let again = acquire(
        &other,
        &global(&lock, Wait::Timeout(Duration::from_secs(5))),
    )
    .await
    .unwrap();
    again.release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_protect_the_nodes() {
    let Some(addr) = server() else { return };
    let owner = connect(config(&addr, "acl").credentials("cinder", "s3cret")).await;
    let lock = name("private");
    let guard = owner.acquire(&global(&lock, Wait::TryOnce)).await.unwrap();
    let dir = owner.lock_dir(&lock).unwrap();
    // Reading an ACL needs rights on the node: a client without credentials has none.
    let anonymous = raw(&addr).await;
    assert_eq!(
        anonymous.get_acl(&dir).await.unwrap_err(),
        zk::Error::NoAuth
    );
    let client = zk::Client::connector()
        .with_auth("digest", b"cinder:s3cret")
        .connect(&addr)
        .await
        .unwrap();
    let (acls, _) = client.get_acl(&dir).await.unwrap();
    assert_eq!(acls.len(), 1, "{acls:?}");
    assert_eq!(acls[0].scheme(), "digest");
    assert!(acls[0].id().starts_with("cinder:"), "{acls:?}");
    assert!(format!("{owner:?}").contains("***"));
    assert!(!format!("{owner:?}").contains("s3cret"));
    assert!(!owner.describe().contains("s3cret"));

    let intruder = connect(owner.config().clone().credentials("cinder", "wrong")).await;
    let err = intruder
        .acquire(&global(&lock, Wait::TryOnce))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{}", err.report());
    assert!(err.message().contains(&addr), "{err}");
    guard.release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_server_is_unavailable_within_the_connect_timeout() {
    // A port nothing listens on: bind one, then close it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let endpoint = format!("127.0.0.1:{port}");
    let limit = Duration::from_millis(800);
    let start = Instant::now();
    let err = ZkBackend::connect(ZkConfig::new([endpoint.as_str()]).connect_timeout(limit))
        .await
        .unwrap_err();
    let took = start.elapsed();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{}", err.report());
    assert!(err.message().contains(&endpoint), "{err}");
    assert!(err.message().contains("connect_timeout"), "{err}");
    assert!(took < limit + Duration::from_millis(500), "took {took:?}");
}

#[tokio::test]
async fn malformed_configurations_are_rejected_before_connecting() {
    for config in [
        ZkConfig::new(Vec::<String>::new()),
        ZkConfig::new(["127.0.0.1:70000"]),
        ZkConfig::new(["127.0.0.1:2181"]).namespace("/abs"),
    ] {
        let err = ZkBackend::connect(config).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidConfig, "{}", err.report());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_zookeeper_cannot_store_are_invalid() {
    let Some(addr) = server() else { return };
    let backend = connect(config(&addr, "names")).await;
    for bad in ["a//b", "/lead", "trail/", "x/../y"] {
        let lock = locks_core::LockName::new(bad).unwrap();
        let err = backend
            .acquire(&global(&lock, Wait::TryOnce))
            .await
            .unwrap_err();
        assert_eq!(
            err.kind(),
            ErrorKind::InvalidName,
            "{bad}: {}",
            err.report()
        );
    }
    assert_eq!(backend.active_names(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_backend_ends_its_session_and_tasks() {
    let Some(addr) = server() else { return };
    let metrics = tokio::runtime::Handle::current().metrics();
    let before = metrics.num_alive_tasks();
    let backend = connect(config(&addr, "tasks")).await;
    let lock = name("t");
    let guard = backend
        .acquire(&global(&lock, Wait::TryOnce))
        .await
        .unwrap();
    assert!(metrics.num_alive_tasks() > before);
    let watch = guard.watch_state();
    guard.release().await.unwrap();
    drop(backend);
    eventually(
        Duration::from_secs(5),
        "session and monitor tasks end",
        || async { metrics.num_alive_tasks() == before },
    )
    .await;
    // The state channel's sender went with the session.
    assert!(watch.has_changed().is_err());
}
