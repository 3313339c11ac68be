//! Network faults between one client and the server, through the in-tree
//! TCP proxy (`locks-fault-proxy`): lost requests and replies, resets,
//! partitions and blips. Runs against the server in `LOCKS_TEST_ZK`; the
//! client under test talks to it through a proxy, the others directly.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{children, config, connect, eventually, name, raw, server};
use locks_core::{Backend, ErrorKind, LockGuard, LockName, LockRequest, LockState, Scope, Wait};
use locks_fault_proxy::{Direction, Fault, FaultProxy, monotonic_ns};
use locks_zookeeper::ZkConfig;

fn global(name: &LockName, wait: Wait) -> LockRequest {
    LockRequest::new(name.clone(), Scope::Global).wait(wait)
}

/// A proxy in front of the test server, and a configuration through it on
/// the same namespace as `direct`.
fn through_proxy(direct: &ZkConfig) -> (FaultProxy, ZkConfig) {
    let upstream: SocketAddr = direct.hosts[0].parse().expect("LOCKS_TEST_ZK is host:port");
    let proxy = FaultProxy::start(upstream).expect("start the fault proxy");
    let mut proxied = direct.clone();
    proxied.hosts = vec![proxy.addr().to_string()];
    (proxy, proxied)
}

/// Every state `guard` goes through from now on, with CLOCK_MONOTONIC stamps.
fn record_states(guard: &LockGuard) -> Arc<Mutex<Vec<(LockState, u64)>>> {
    let seen = Arc::new(Mutex::new(vec![(guard.state(), monotonic_ns())]));
    let mut rx = guard.watch_state();
    let log = Arc::clone(&seen);
    tokio::spawn(async move {
        while rx.changed().await.is_ok() {
            let state = *rx.borrow_and_update();
            log.lock().unwrap().push((state, monotonic_ns()));
        }
    });
    seen
}

/// A release whose delete request is lost to a reset must still delete the
/// node: the next client enters while the releasing client lives on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_whose_request_is_lost_leaves_no_node() {
    let Some(addr) = server() else { return };
    let direct = config(&addr, "lost-release").session_timeout(Duration::from_secs(10));
    let (proxy, proxied) = through_proxy(&direct);
    let holder = connect(proxied).await;
    let next = connect(direct.clone()).await;
    let lock = name("lost-release");
    let dir = holder.lock_dir(&lock).unwrap();
    let client = raw(&addr).await;

    let guard = holder.acquire(&global(&lock, Wait::TryOnce)).await.unwrap();
    let waiting = {
        let (next, lock) = (next.clone(), lock.clone());
        tokio::spawn(async move {
            let started = Instant::now();
            let got =
                locks_core::acquire(&next, &global(&lock, Wait::Timeout(Duration::from_secs(6))))
                    .await;
            (got, started.elapsed())
        })
    };
    eventually(Duration::from_secs(5), "the second client queued", || {
        let (client, dir) = (&client, &dir);
        async move { children(client, dir).await.len() == 2 }
    })
    .await;

    proxy.lose_next(Direction::Request);
    let released = guard.release().await;
    assert!(
        !proxy.losing(Direction::Request),
        "the delete request went through the proxy"
    );
    let (got, waited) = waiting.await.unwrap();
    let taken = got.unwrap_or_else(|e| {
        panic!(
            "the next client must get the lock while the releasing client lives: {}",
            e.report()
        )
    });
    eprintln!("lost delete request: next holder entered after {waited:?}");
    released.unwrap_or_else(|e| panic!("the release is retried and succeeds: {}", e.report()));
    taken.release().await.unwrap();
    drop(holder);
}

/// A release whose reply is lost: the delete happened; the retry finds the
/// node gone and reports success, not an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_whose_reply_is_lost_succeeds() {
    let Some(addr) = server() else { return };
    let direct = config(&addr, "lost-reply").session_timeout(Duration::from_secs(10));
    let (proxy, proxied) = through_proxy(&direct);
    let holder = connect(proxied).await;
    let lock = name("lost-reply");
    let dir = holder.lock_dir(&lock).unwrap();
    let client = raw(&addr).await;
    let guard = holder.acquire(&global(&lock, Wait::TryOnce)).await.unwrap();
    proxy.lose_next(Direction::Reply);
    guard
        .release()
        .await
        .unwrap_or_else(|e| panic!("the release is retried and succeeds: {}", e.report()));
    assert!(children(&client, &dir).await.is_empty());
    // The same client goes on working on the same session.
    let again = holder.acquire(&global(&lock, Wait::TryOnce)).await.unwrap();
    assert_eq!(again.state(), LockState::Held);
    again.release().await.unwrap();
}

/// A contender whose create reply is lost is found again by its unique
/// prefix, not created a second time; the acquire succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_whose_reply_is_lost_is_retried_without_a_second_contender() {
    let Some(addr) = server() else { return };
    let direct = config(&addr, "lost-create").session_timeout(Duration::from_secs(10));
    let (proxy, proxied) = through_proxy(&direct);
    let first = connect(direct.clone()).await;
    let waiter = connect(proxied).await;
    let lock = name("lost-create");
    let dir = first.lock_dir(&lock).unwrap();
    let client = raw(&addr).await;
    let held = first.acquire(&global(&lock, Wait::TryOnce)).await.unwrap();

    proxy.lose_next(Direction::Reply);
    let waiting = {
        let (waiter, lock) = (waiter.clone(), lock.clone());
        tokio::spawn(async move {
            locks_core::acquire(
                &waiter,
                &global(&lock, Wait::Timeout(Duration::from_secs(8))),
            )
            .await
        })
    };
    let p = &proxy;
    eventually(
        Duration::from_secs(5),
        "the lost reply was dropped",
        || async move { !p.losing(Direction::Reply) },
    )
    .await;
    // Let the retry happen, then count the contenders.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let queued = children(&client, &dir).await;
    assert!(
        queued.len() <= 2,
        "one contender per client, found {queued:?}"
    );
    held.release().await.unwrap();
    let guard = waiting
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("the acquire retries and succeeds: {}", e.report()));
    assert_eq!(
        children(&client, &dir).await.len(),
        1,
        "no second contender of ours"
    );
    guard.release().await.unwrap();
    assert!(children(&client, &dir).await.is_empty());
}

/// kazoo issue 732: a waiter whose timeout ends while its connection is cut
/// leaves no contender that blocks the others while it lives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kazoo_732_a_try_lock_ending_during_a_partition_leaves_no_contender() {
    let Some(addr) = server() else { return };
    let direct = config(&addr, "kazoo-732").session_timeout(Duration::from_secs(3));
    let (proxy, proxied) = through_proxy(&direct);
    let holder = connect(direct.clone()).await;
    let quitter = connect(proxied).await;
    let lock = name("kazoo-732");
    let dir = holder.lock_dir(&lock).unwrap();
    let client = raw(&addr).await;
    let held = holder.acquire(&global(&lock, Wait::TryOnce)).await.unwrap();

    let trying = {
        let (quitter, lock) = (quitter.clone(), lock.clone());
        tokio::spawn(async move {
            locks_core::acquire(
                &quitter,
                &global(&lock, Wait::Timeout(Duration::from_millis(800))),
            )
            .await
        })
    };
    eventually(Duration::from_secs(5), "the quitter queued", || {
        let (client, dir) = (&client, &dir);
        async move { children(client, dir).await.len() == 2 }
    })
    .await;
    // Cut the quitter off before its timeout ends; heal after half the session timeout.
    proxy.set(Fault::Blackhole);
    let err = trying.await.unwrap().unwrap_err();
    assert!(
        matches!(err.kind(), ErrorKind::Timeout | ErrorKind::Unavailable),
        "{}",
        err.report()
    );
    tokio::time::sleep(Duration::from_millis(700)).await;
    proxy.set(Fault::Pass);

    held.release().await.unwrap();
    let started = Instant::now();
    let next = locks_core::acquire(
        &holder,
        &global(&lock, Wait::Timeout(Duration::from_secs(8))),
    )
    .await
    .unwrap_or_else(|e| {
        panic!(
            "the quitter's contender blocks the lock while it lives: {}",
            e.report()
        )
    });
    eprintln!(
        "kazoo 732: next holder entered {:?} after the release",
        started.elapsed()
    );
    next.release().await.unwrap();
    eventually(Duration::from_secs(5), "no contender left", || {
        let (client, dir) = (&client, &dir);
        async move { children(client, dir).await.is_empty() }
    })
    .await;
    let p = &quitter;
    eventually(
        Duration::from_secs(5),
        "no deletion pending",
        || async move { p.pending_cleanups().await == 0 },
    )
    .await;
    // The quitter's session survived the partition and still works.
    let own = quitter
        .acquire(&global(&lock, Wait::TryOnce))
        .await
        .unwrap();
    assert_eq!(own.state(), LockState::Held);
    own.release().await.unwrap();
}

/// kazoo issue 732, try-once form: a try-lock that finds the lock held and
/// whose withdrawal (the delete of its contender) is lost to a reset leaves
/// no contender behind while its client lives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kazoo_732_a_try_once_whose_withdrawal_is_lost_leaves_no_contender() {
    let Some(addr) = server() else { return };
    let direct = config(&addr, "kazoo-732-once").session_timeout(Duration::from_secs(10));
    let (proxy, proxied) = through_proxy(&direct);
    let holder = connect(direct.clone()).await;
    let quitter = connect(proxied).await;
    let lock = name("kazoo-732-once");
    let held = holder.acquire(&global(&lock, Wait::TryOnce)).await.unwrap();

    // Slow the quitter's traffic down, so that its create is seen on the
    // server before its answer reaches it; then its next request, the delete
    // withdrawing its contender, is lost and the connection reset.
    proxy.set(Fault::Delay(Duration::from_millis(200)));
    let trying = {
        let (quitter, lock) = (quitter.clone(), lock.clone());
        tokio::spawn(async move { quitter.acquire(&global(&lock, Wait::TryOnce)).await })
    };
    let dir = holder.lock_dir(&lock).unwrap();
    let client = raw(&addr).await;
    eventually(
        Duration::from_secs(5),
        "the quitter's contender exists",
        || {
            let (client, dir) = (&client, &dir);
            async move { children(client, dir).await.len() == 2 }
        },
    )
    .await;
    proxy.lose_next(Direction::Request);
    let err = tokio::time::timeout(Duration::from_secs(10), trying)
        .await
        .expect("the try-lock returns")
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::Unavailable),
        "{}",
        err.report()
    );

    held.release().await.unwrap();
    let next = locks_core::acquire(
        &holder,
        &global(&lock, Wait::Timeout(Duration::from_secs(5))),
    )
    .await
    .unwrap_or_else(|e| {
        panic!(
            "the try-lock's contender blocks the lock while its client lives: {}",
            e.report()
        )
    });
    assert!(!proxy.losing(Direction::Request), "the delete was lost");
    proxy.set(Fault::Pass);
    next.release().await.unwrap();
    drop(quitter);
}

/// A reset lasting half the session timeout: the holder stays held (AtRisk
/// meanwhile, never Lost) and the waiter keeps its place in the queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blip_of_half_the_session_timeout_keeps_holders_and_waiters() {
    let Some(addr) = server() else { return };
    let session_timeout = Duration::from_secs(3);
    let direct = config(&addr, "blip").session_timeout(session_timeout);
    let (proxy, proxied) = through_proxy(&direct);
    let blipped = connect(proxied).await;
    let other = connect(direct.clone()).await;
    let later = connect(direct.clone()).await;
    let (mine, queue) = (name("blip-held"), name("blip-queue"));
    let client = raw(&addr).await;
    let queue_dir = other.lock_dir(&queue).unwrap();

    let guard = blipped
        .acquire(&global(&mine, Wait::TryOnce))
        .await
        .unwrap();
    let states = record_states(&guard);
    let first = other.acquire(&global(&queue, Wait::TryOnce)).await.unwrap();
    let order = Arc::new(Mutex::new(Vec::new()));
    let spawn_waiter = |backend: locks_zookeeper::ZkBackend, who: &'static str| {
        let (queue, order) = (queue.clone(), Arc::clone(&order));
        tokio::spawn(async move {
            let guard = backend.acquire(&global(&queue, Wait::Forever)).await?;
            order.lock().unwrap().push((who, guard.token()));
            tokio::time::sleep(Duration::from_millis(20)).await;
            guard.release().await
        })
    };
    let blipped_waiter = spawn_waiter(blipped.clone(), "blipped");
    eventually(Duration::from_secs(5), "the blipped client queued", || {
        let (client, dir) = (&client, &queue_dir);
        async move { children(client, dir).await.len() == 2 }
    })
    .await;
    let later_waiter = spawn_waiter(later.clone(), "later");
    eventually(Duration::from_secs(5), "the later client queued", || {
        let (client, dir) = (&client, &queue_dir);
        async move { children(client, dir).await.len() == 3 }
    })
    .await;

    // The blip: refuse new connections, reset the open one, heal.
    proxy.set(Fault::Refuse);
    proxy.reset_connections();
    tokio::time::sleep(session_timeout / 2).await;
    proxy.set(Fault::Pass);

    let mut watch = guard.watch_state();
    tokio::time::timeout(
        session_timeout * 2,
        watch.wait_for(|s| *s != LockState::AtRisk),
    )
    .await
    .expect("the holder is held again after the blip")
    .unwrap();
    let seen: Vec<LockState> = states.lock().unwrap().iter().map(|(s, _)| *s).collect();
    eprintln!(
        "blip of {:?}: holder went through {seen:?}",
        session_timeout / 2
    );
    assert!(
        !seen.contains(&LockState::Lost),
        "the holder was told Lost: {seen:?}"
    );
    assert_eq!(guard.state(), LockState::Held);

    first.release().await.unwrap();
    for waiter in [blipped_waiter, later_waiter] {
        tokio::time::timeout(Duration::from_secs(10), waiter)
            .await
            .expect("waiters get the lock")
            .unwrap()
            .unwrap_or_else(|e| panic!("a waiter failed: {}", e.report()));
    }
    let order = order.lock().unwrap().clone();
    assert_eq!(
        order.iter().map(|(who, _)| *who).collect::<Vec<_>>(),
        ["blipped", "later"],
        "the blipped waiter keeps its place"
    );
    assert!(order[0].1 < order[1].1);
    guard.release().await.unwrap();
}

/// A partitioned holder is told Lost at least min(timeout / 5, 1 s) before
/// the server expires its session, stamped with CLOCK_MONOTONIC: the expiry
/// instant is when its node disappears or another client's acquire succeeds,
/// whichever is seen first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_holder_is_lost_before_the_server_expires_its_session() {
    let Some(addr) = server() else { return };
    let session_timeout = Duration::from_secs(3);
    let margin = (session_timeout / 5).min(Duration::from_secs(1));
    let direct = config(&addr, "partition").session_timeout(session_timeout);
    let (proxy, proxied) = through_proxy(&direct);
    let holder = connect(proxied).await;
    let next = connect(direct.clone()).await;
    let lock = name("partition");
    let dir = holder.lock_dir(&lock).unwrap();
    let client = raw(&addr).await;
    let guard = holder.acquire(&global(&lock, Wait::TryOnce)).await.unwrap();
    let node = children(&client, &dir).await.remove(0);
    let node_path = format!("{dir}/{node}");
    let states = record_states(&guard);
    let waiting = {
        let (next, lock) = (next.clone(), lock.clone());
        tokio::spawn(async move {
            let got = locks_core::acquire(
                &next,
                &global(&lock, Wait::Timeout(Duration::from_secs(15))),
            )
            .await;
            (got, monotonic_ns())
        })
    };
    eventually(Duration::from_secs(5), "the next client queued", || {
        let (client, dir) = (&client, &dir);
        async move { children(client, dir).await.len() == 2 }
    })
    .await;

    proxy.set(Fault::Blackhole);
    let cut = proxy.faulted_at().expect("the partition is stamped");
    let gone = {
        let client = raw(&addr).await;
        tokio::spawn(async move {
            loop {
                if client.check_stat(&node_path).await.unwrap().is_none() {
                    return monotonic_ns();
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    let (got, entered) = waiting.await.unwrap();
    let taken = got.unwrap_or_else(|e| panic!("the next client: {}", e.report()));
    let gone = tokio::time::timeout(Duration::from_secs(5), gone)
        .await
        .unwrap()
        .unwrap();
    let expired = entered.min(gone);
    let lost = states
        .lock()
        .unwrap()
        .iter()
        .find(|(s, _)| *s == LockState::Lost)
        .map(|(_, at)| *at)
        .expect("the partitioned holder is told Lost");
    let ms = |ns: u64| Duration::from_nanos(ns);
    eprintln!(
        "partition: lost {:?} after the cut, server expiry {:?} after the cut, margin {:?} (required {margin:?})",
        ms(lost - cut),
        ms(expired - cut),
        ms(expired.saturating_sub(lost))
    );
    assert!(
        lost < expired,
        "told Lost only after the server expired the session"
    );
    assert!(
        ms(expired - lost) >= margin,
        "told Lost only {:?} before the server expired the session",
        ms(expired - lost)
    );
    assert!(taken.token() > guard.token());
    proxy.set(Fault::Pass);
    assert_eq!(guard.release().await.unwrap_err().kind(), ErrorKind::Lost);
    taken.release().await.unwrap();
}

/// Curator CURATOR-604: after the session expired during a create whose
/// outcome is unknown, a node of the old session is never taken for one's
/// own. Whatever the acquire returns, a guard it returns is really held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curator_604_a_node_of_an_expired_session_is_not_taken_for_ours() {
    let Some(addr) = server() else { return };
    let session_timeout = Duration::from_secs(2);
    let direct = config(&addr, "curator-604").session_timeout(session_timeout);
    let (proxy, proxied) = through_proxy(&direct);
    let subject = connect(proxied).await;
    let other = connect(direct.clone()).await;
    let lock = name("curator-604");
    let dir = other.lock_dir(&lock).unwrap();
    let client = raw(&addr).await;

    // The create's reply is lost, then the client is cut off past its session.
    proxy.lose_next(Direction::Reply);
    let attempt = {
        let (subject, lock) = (subject.clone(), lock.clone());
        tokio::spawn(async move {
            locks_core::acquire(
                &subject,
                &global(&lock, Wait::Timeout(Duration::from_secs(10))),
            )
            .await
        })
    };
    let p = &proxy;
    eventually(
        Duration::from_secs(5),
        "the reply was dropped",
        || async move { !p.losing(Direction::Reply) },
    )
    .await;
    // The create was applied before its reply was lost.
    eventually(Duration::from_secs(5), "the contender exists", || {
        let (client, dir) = (&client, &dir);
        async move { children(client, dir).await.len() == 1 }
    })
    .await;
    proxy.set(Fault::Blackhole);
    // The server expires the session and deletes its node.
    eventually(
        session_timeout * 4,
        "the old session's node is gone",
        || {
            let (client, dir) = (&client, &dir);
            async move { children(client, dir).await.is_empty() }
        },
    )
    .await;
    proxy.set(Fault::Pass);

    match attempt.await.unwrap() {
        // Taken before the partition: the guard must have been told Lost.
        Ok(guard) if guard.state() != LockState::Held => {
            assert_eq!(guard.state(), LockState::Lost);
            assert_eq!(guard.release().await.unwrap_err().kind(), ErrorKind::Lost);
        }
        // Held: only on a node of a live session of ours.
        Ok(guard) => {
            assert_eq!(children(&client, &dir).await.len(), 1);
            let err = other
                .acquire(&global(&lock, Wait::TryOnce))
                .await
                .unwrap_err();
            assert_eq!(err.kind(), ErrorKind::WouldBlock, "{}", err.report());
            guard.release().await.unwrap();
        }
        Err(e) => assert_eq!(e.kind(), ErrorKind::Unavailable, "{}", e.report()),
    }
    // Either way the client recovers without being reopened.
    let again = locks_core::acquire(
        &subject,
        &global(&lock, Wait::Timeout(Duration::from_secs(10))),
    )
    .await
    .unwrap_or_else(|e| panic!("a new session: {}", e.report()));
    let err = other
        .acquire(&global(&lock, Wait::TryOnce))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::WouldBlock);
    again.release().await.unwrap();
}
