//! Session loss against a dedicated server (started with `ci/zookeeper.sh`,
//! so pausing it disturbs no other test). Runs when `LOCKS_TEST_ZK` is set,
//! like the other server tests.

mod common;

use std::time::{Duration, Instant};

use common::{DedicatedServer, connect, name, server};
use locks_core::{Backend, ErrorKind, LockRequest, LockState, Scope, Wait, acquire};
use locks_zookeeper::ZkConfig;

/// Waits until `guard` reports `state`, failing after `limit`.
async fn wait_for_state(
    guard: &locks_core::LockGuard,
    state: LockState,
    limit: Duration,
) -> Duration {
    let start = Instant::now();
    let mut rx = guard.watch_state();
    let reached = tokio::time::timeout(limit, async {
        loop {
            if *rx.borrow_and_update() == state
                || (state == LockState::AtRisk && *rx.borrow() == LockState::Lost)
            {
                return;
            }
            if rx.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    })
    .await;
    assert!(
        reached.is_ok(),
        "the guard did not report {state:?} within {limit:?} (it reports {:?})",
        guard.state()
    );
    start.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_server_makes_the_guard_lost_before_anyone_else_acquires() {
    if server().is_none() {
        return;
    }
    let zk = DedicatedServer::start();
    let session_timeout = Duration::from_secs(2);
    let config = ZkConfig::new([zk.addr.as_str()]).session_timeout(session_timeout);
    let holder = connect(config.clone()).await;
    let lock = name("paused");
    let request = LockRequest::new(lock.clone(), Scope::Global).wait(Wait::TryOnce);
    let guard = holder.acquire(&request).await.unwrap();
    assert_eq!(guard.state(), LockState::Held);

    // `zk` resumes the server when dropped, also when an assertion fails.
    zk.signal("STOP");
    let at_risk = wait_for_state(&guard, LockState::AtRisk, session_timeout * 2).await;
    let lost = wait_for_state(&guard, LockState::Lost, session_timeout * 3).await;
    eprintln!(
        "paused server: at risk after {at_risk:?}, lost after {:?}",
        at_risk + lost
    );
    assert!(
        at_risk + lost < session_timeout,
        "lost only after {:?}, later than the server could expire the session",
        at_risk + lost
    );
    zk.signal("CONT");

    // Another client gets the lock once the server expired the old session.
    let other = connect(config.clone()).await;
    let start = Instant::now();
    let taken = acquire(
        &other,
        &request
            .clone()
            .wait(Wait::Timeout(session_timeout * 3 + Duration::from_secs(1))),
    )
    .await
    .unwrap_or_else(|e| panic!("second client: {}\nserver log:\n{}", e.report(), zk.log()));
    eprintln!(
        "second client acquired {:?} after the server resumed",
        start.elapsed()
    );
    assert!(guard.is_lost(), "the old guard stays lost");
    assert!(
        taken.token() > guard.token(),
        "fencing tokens still increase"
    );

    let err = guard.release().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Lost, "{}", err.report());

    // The first client opens a new session for its next lock.
    let again = holder
        .acquire(&LockRequest::new(name("after"), Scope::Global).wait(Wait::TryOnce))
        .await
        .unwrap_or_else(|e| panic!("acquire on a new session: {}", e.report()));
    assert_eq!(again.state(), LockState::Held);
    again.release().await.unwrap();
    taken.release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_pause_is_at_risk_then_held_again() {
    if server().is_none() {
        return;
    }
    let zk = DedicatedServer::start();
    let session_timeout = Duration::from_secs(4);
    let config = ZkConfig::new([zk.addr.as_str()]).session_timeout(session_timeout);
    let backend = connect(config).await;
    let guard = backend
        .acquire(&LockRequest::new(name("blip"), Scope::Global).wait(Wait::TryOnce))
        .await
        .unwrap();
    zk.signal("STOP");
    wait_for_state(&guard, LockState::AtRisk, session_timeout).await;
    zk.signal("CONT");
    wait_for_state(&guard, LockState::Held, session_timeout).await;
    guard.release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_server_fails_waiters_and_the_monitor_ends_with_the_backend() {
    if server().is_none() {
        return;
    }
    let zk = DedicatedServer::start();
    let session_timeout = Duration::from_secs(2);
    let config = ZkConfig::new([zk.addr.as_str()])
        .session_timeout(session_timeout)
        .connect_timeout(Duration::from_secs(1));
    let holder = connect(config.clone()).await;
    let waiter = connect(config.clone()).await;
    let lock = name("stopped");
    let guard = holder
        .acquire(&LockRequest::new(lock.clone(), Scope::Global))
        .await
        .unwrap();
    let waiting = {
        let (waiter, lock) = (waiter.clone(), lock.clone());
        tokio::spawn(async move { waiter.acquire(&LockRequest::new(lock, Scope::Global)).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(zk);
    let err = tokio::time::timeout(session_timeout * 3, waiting)
        .await
        .expect("the waiter gives up once its session is lost")
        .unwrap()
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{}", err.report());
    assert!(err.message().contains("zookeeper://127.0.0.1:"), "{err}");
    wait_for_state(&guard, LockState::Lost, session_timeout * 3).await;
    // With the server gone, a new session cannot be opened.
    let err = waiter
        .acquire(&LockRequest::new(lock, Scope::Global).wait(Wait::TryOnce))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{}", err.report());
    assert!(err.message().contains("connect_timeout"), "{err}");
    let err = guard.release().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Lost);
    // Dropping the backends ends their sessions and monitor tasks.
    let weak = holder.clone();
    drop((holder, weak, waiter));
}
