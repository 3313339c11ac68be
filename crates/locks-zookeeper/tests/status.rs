//! `Backend::status` against the server in `LOCKS_TEST_ZK`: a holder and two
//! waiters (one client each) field by field, free locks, and a contender
//! node that is not ours (kazoo's data).

mod common;

use std::time::{Duration, SystemTime};

use common::{DedicatedServer, config, connect, eventually, name, raw, server};
use locks_core::{Backend, LockRequest, Scope, Wait, acquire, host_name};
use zookeeper_client as zk;

fn global(name: &locks_core::LockName) -> LockRequest {
    LockRequest::new(name.clone(), Scope::Global).wait(Wait::Timeout(Duration::from_secs(30)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_the_holder_and_two_waiters_in_queue_order() {
    let Some(addr) = server() else { return };
    let cfg = config(&addr, "status");
    let (a, b, c) = (
        connect(cfg.clone()).await,
        connect(cfg.clone()).await,
        connect(cfg.clone()).await,
    );
    let lock = name("status-queue");

    let free = a.status(&lock, Scope::Global).await.unwrap();
    assert!(!free.is_held() && free.waiters.is_empty(), "{free:?}");

    let before = SystemTime::now() - Duration::from_secs(5);
    let guard = acquire(&a, &global(&lock).label("volume_attach"))
        .await
        .unwrap();
    let first = {
        let (b, lock) = (b.clone(), lock.clone());
        tokio::spawn(async move { acquire(&b, &global(&lock)).await.unwrap() })
    };
    eventually(Duration::from_secs(10), "first waiter queued", || async {
        a.status(&lock, Scope::Global).await.unwrap().waiters.len() == 1
    })
    .await;
    let second = {
        let (c, lock) = (c.clone(), lock.clone());
        tokio::spawn(async move { acquire(&c, &global(&lock).label("backup")).await.unwrap() })
    };
    eventually(Duration::from_secs(10), "second waiter queued", || async {
        a.status(&lock, Scope::Global).await.unwrap().waiters.len() == 2
    })
    .await;

    // Asked through another client than the holder's: it reads the server.
    let status = c.status(&lock, Scope::Global).await.unwrap();
    assert_eq!(status.name, lock);
    assert_eq!(status.scope, Scope::Global);
    assert_eq!(status.backend, c.describe());
    let holder = status.holder.clone().expect("held");
    let me = (Some(host_name()), Some(std::process::id()));
    assert_eq!((holder.host.clone(), holder.pid), me);
    assert_eq!(holder.label.as_deref(), Some("volume_attach"));
    assert_eq!(holder.token, Some(guard.token()));
    assert!(holder.program.is_some(), "same host: the program is known");
    let since = holder.since.expect("ctime");
    assert!(since > before && since < SystemTime::now() + Duration::from_secs(5));
    assert_eq!(status.waiters.len(), 2, "{status:?}");
    let (w1, w2) = (&status.waiters[0], &status.waiters[1]);
    assert_eq!((w1.host.clone(), w1.pid), me);
    assert_eq!((w2.host.clone(), w2.pid), me);
    assert_eq!(w1.label, None);
    assert_eq!(w2.label.as_deref(), Some("backup"));
    let (t1, t2) = (w1.token.expect("czxid"), w2.token.expect("czxid"));
    assert!(guard.token() < t1 && t1 < t2, "{status:?}");
    assert!(since <= w1.since.unwrap() && w1.since <= w2.since);
    assert!(
        status.notes.iter().all(|n| !n.contains("not a client")),
        "{:?}",
        status.notes
    );

    // The queue moves in that order, and the tokens shown are the guards'.
    guard.release().await.unwrap();
    let first = first.await.unwrap();
    assert_eq!(first.token(), t1);
    let now = a.status(&lock, Scope::Global).await.unwrap();
    assert_eq!(now.holder.unwrap().token, Some(t1));
    assert_eq!(now.waiters.len(), 1);
    first.release().await.unwrap();
    let second = second.await.unwrap();
    assert_eq!(second.token(), t2);
    second.release().await.unwrap();
    let after = a.status(&lock, Scope::Global).await.unwrap();
    assert!(!after.is_held() && after.waiters.is_empty(), "{after:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_reads_without_disturbing_and_leaves_nothing() {
    let Some(addr) = server() else { return };
    let backend = connect(config(&addr, "status-ro")).await;
    let lock = name("status-ro");
    // A name never used: no directory, and asking makes none.
    assert!(
        !backend
            .status(&lock, Scope::Global)
            .await
            .unwrap()
            .is_held()
    );
    let client = raw(&addr).await;
    let dir = backend.lock_dir(&lock).unwrap();
    assert!(client.check_stat(&dir).await.unwrap().is_none());
    // A held lock stays held by its guard, which releases normally.
    let guard = acquire(&backend, &global(&lock)).await.unwrap();
    for _ in 0..3 {
        assert!(
            backend
                .status(&lock, Scope::Global)
                .await
                .unwrap()
                .is_held()
        );
    }
    assert_eq!(guard.state(), locks_core::LockState::Held);
    guard.release().await.unwrap();
    assert!(
        !backend
            .status(&lock, Scope::Global)
            .await
            .unwrap()
            .is_held()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_that_is_not_ours_shows_what_can_be_known() {
    let Some(addr) = server() else { return };
    let backend = connect(config(&addr, "status-foreign")).await;
    let lock = name("status-foreign");
    let dir = backend.lock_dir(&lock).unwrap();
    // A contender as kazoo makes it: its data is tooz's member id.
    let client = raw(&addr).await;
    let parents = zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all());
    client.mkdir(&dir, &parents).await.unwrap();
    let mode = zk::CreateMode::EphemeralSequential.with_acls(zk::Acls::anyone_all());
    let (stat, _) = client
        .create(
            &format!("{dir}/0123456789abcdef0123456789abcdef__lock__"),
            b"cinder-volume-host-1d002e4c",
            &mode,
        )
        .await
        .unwrap();
    let waiter = {
        let (backend, lock) = (backend.clone(), lock.clone());
        tokio::spawn(async move { acquire(&backend, &global(&lock)).await.unwrap() })
    };
    eventually(Duration::from_secs(10), "our waiter queued", || async {
        backend
            .status(&lock, Scope::Global)
            .await
            .unwrap()
            .waiters
            .len()
            == 1
    })
    .await;
    let status = backend.status(&lock, Scope::Global).await.unwrap();
    let holder = status.holder.clone().expect("held by the foreign node");
    assert_eq!(
        (holder.host.clone(), holder.pid, holder.label.clone()),
        (None, None, None)
    );
    assert_eq!(holder.token, u64::try_from(stat.czxid).ok());
    assert!(holder.since.is_some());
    assert_eq!(status.waiters[0].pid, Some(std::process::id()));
    assert!(
        status
            .notes
            .iter()
            .any(|n| n.contains("holder is not a client") && n.contains("cinder-volume-host")),
        "{:?}",
        status.notes
    );
    drop(client);
    // The foreign session's end releases it to our waiter.
    waiter.await.unwrap().release().await.unwrap();
}

/// A frozen server: `status` ends with `Unavailable` within
/// `connect_timeout` instead of hanging, and disturbed nothing once the
/// server is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_of_a_frozen_server_is_unavailable() {
    if server().is_none() {
        return;
    }
    let zk = DedicatedServer::start();
    let cfg = locks_zookeeper::ZkConfig::new([zk.addr.as_str()])
        .session_timeout(Duration::from_secs(10))
        .connect_timeout(Duration::from_secs(1));
    let backend = connect(cfg).await;
    let lock = name("status-frozen");
    let guard = acquire(&backend, &global(&lock)).await.unwrap();
    // `zk` resumes the server when dropped, also when an assertion fails.
    zk.signal("STOP");
    let asked = tokio::time::timeout(
        Duration::from_secs(30),
        backend.status(&lock, Scope::Global),
    )
    .await;
    zk.signal("CONT");
    let err = asked.expect("status hung").expect_err("server frozen");
    assert_eq!(err.kind(), locks_core::ErrorKind::Unavailable, "{err}");
    assert!(err.message().contains(&zk.addr), "{err}");
    let status = backend.status(&lock, Scope::Global).await.unwrap();
    assert_eq!(status.holder.unwrap().token, Some(guard.token()));
    guard.release().await.unwrap();
}

/// `statuses` walks the namespace: every lock with a contender, nested
/// names included, and nothing once they are released.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statuses_lists_every_busy_lock_of_the_namespace() {
    let Some(addr) = server() else { return };
    let cfg = config(&addr, "statuses");
    let (a, b) = (connect(cfg.clone()).await, connect(cfg).await);
    assert!(a.statuses(Scope::Global).await.unwrap().is_empty());
    let plain = locks_core::LockName::new("volume-1").unwrap();
    let nested = locks_core::LockName::new("host-7/volume-2").unwrap();
    let first = acquire(&a, &global(&plain)).await.unwrap();
    let second = acquire(&a, &global(&nested).label("attach")).await.unwrap();
    let waiter = {
        let (b, plain) = (b.clone(), plain.clone());
        tokio::spawn(async move { acquire(&b, &global(&plain)).await.unwrap() })
    };
    eventually(Duration::from_secs(10), "waiter queued", || async {
        a.status(&plain, Scope::Global).await.unwrap().waiters.len() == 1
    })
    .await;
    let mut all = b.statuses(Scope::Global).await.unwrap();
    all.sort_by(|x, y| x.name.as_str().cmp(y.name.as_str()));
    let names: Vec<&str> = all.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["host-7/volume-2", "volume-1"]);
    assert_eq!(all[0].holder.as_ref().unwrap().token, Some(second.token()));
    assert_eq!(
        all[0].holder.as_ref().unwrap().label.as_deref(),
        Some("attach")
    );
    assert_eq!(all[1].holder.as_ref().unwrap().token, Some(first.token()));
    assert_eq!(all[1].waiters.len(), 1);
    first.release().await.unwrap();
    second.release().await.unwrap();
    waiter.await.unwrap().release().await.unwrap();
    assert!(b.statuses(Scope::Global).await.unwrap().is_empty());
}
