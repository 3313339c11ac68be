//! `Backend::status` against the shared test server (`LOCKS_TEST_ETCD`): a
//! holder and two waiters (one client each) field by field, free locks, the
//! identity key on the lease, and holders that are not ours (a bare
//! `concurrency.Mutex` key, a tooz key).

mod common;

use std::time::Duration;

use common::*;
use etcd_client::PutOptions;
use locks_core::{Backend, LockState, Scope, Wait, acquire, host_name};
use locks_etcd::Layout;

const WAIT: Wait = Wait::Timeout(Duration::from_secs(30));

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutex_status_shows_the_holder_and_two_waiters_in_queue_order() {
    let Some(addr) = server() else { return };
    let (a, b, c) = (
        connect(&addr, Layout::Mutex).await,
        connect(&addr, Layout::Mutex).await,
        connect(&addr, Layout::Mutex).await,
    );
    let lock = name("status-queue");
    let free = a.status(&lock, Scope::Global).await.unwrap();
    assert!(!free.is_held() && free.waiters.is_empty(), "{free:?}");

    let guard = acquire(&a, &request(&lock, WAIT).label("volume_attach"))
        .await
        .unwrap();
    let first = {
        let (b, lock) = (b.clone(), lock.clone());
        tokio::spawn(async move { acquire(&b, &request(&lock, WAIT)).await.unwrap() })
    };
    let queued = |n: usize| {
        let (a, lock) = (a.clone(), lock.clone());
        async move {
            eventually(Duration::from_secs(10), || async {
                a.status(&lock, Scope::Global).await.unwrap().waiters.len() == n
            })
            .await
        }
    };
    assert!(queued(1).await, "first waiter queued");
    let second = {
        let (c, lock) = (c.clone(), lock.clone());
        tokio::spawn(async move {
            acquire(&c, &request(&lock, WAIT).label("backup"))
                .await
                .unwrap()
        })
    };
    assert!(queued(2).await, "second waiter queued");

    // Asked through a client that is neither holder nor first waiter.
    let status = c.status(&lock, Scope::Global).await.unwrap();
    assert_eq!(
        (status.name.clone(), status.scope),
        (lock.clone(), Scope::Global)
    );
    assert_eq!(status.backend, c.describe());
    let holder = status.holder.clone().expect("held");
    let me = (Some(host_name()), Some(std::process::id()));
    assert_eq!((holder.host.clone(), holder.pid), me);
    assert_eq!(holder.label.as_deref(), Some("volume_attach"));
    assert_eq!(holder.program, locks_core::program_of(std::process::id()));
    assert!(holder.program.is_some());
    assert_eq!(holder.token, Some(guard.token()));
    assert_eq!(holder.since, None, "etcd records no times");
    assert_eq!(status.waiters.len(), 2, "{status:?}");
    let (w1, w2) = (&status.waiters[0], &status.waiters[1]);
    assert_eq!(
        (w1.host.clone(), w1.pid, w1.label.clone()),
        (me.0.clone(), me.1, None)
    );
    assert_eq!(w2.label.as_deref(), Some("backup"));
    assert_eq!((w2.host.clone(), w2.pid), me);
    let (t1, t2) = (w1.token.unwrap(), w2.token.unwrap());
    assert!(guard.token() < t1 && t1 < t2, "{status:?}");
    assert!(
        status.notes.iter().any(|n| n.contains("no times"))
            && status.notes.iter().any(|n| n.contains("got its lease"))
            && status.notes.iter().all(|n| !n.contains("not a client")),
        "{:?}",
        status.notes
    );

    // Reading disturbed nothing: the holder holds, the queue moves in that
    // order, and the waiters' tokens are their guards'.
    assert_eq!(guard.state(), LockState::Held);
    guard.release().await.unwrap();
    let first = first.await.unwrap();
    assert_eq!(first.token(), t1);
    first.release().await.unwrap();
    let second = second.await.unwrap();
    assert_eq!(second.token(), t2);
    second.release().await.unwrap();
    let after = a.status(&lock, Scope::Global).await.unwrap();
    assert!(!after.is_held() && after.waiters.is_empty(), "{after:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_lease_carries_one_identity_key() {
    let Some(addr) = server() else { return };
    let backend = connect(&addr, Layout::Mutex).await;
    let lease = backend.lease_id().await.unwrap();
    let mut raw = raw(&addr).await;
    let key = format!("__locks_holders/{lease:x}");
    let found = raw.get(key.clone(), None).await.unwrap();
    let kv = found
        .kvs()
        .first()
        .unwrap_or_else(|| panic!("{key} missing"));
    assert_eq!(kv.lease(), lease, "the identity goes with the lease");
    let value = String::from_utf8_lossy(kv.value()).into_owned();
    let first_line = format!(
        "{}:{}:{}",
        host_name(),
        std::process::id(),
        locks_core::program_of(std::process::id()).unwrap()
    );
    assert!(
        value.starts_with(&(first_line + "\ngranted_unix=")),
        "{value}"
    );
    // Acquires add nothing under it.
    let lock = name("status-identity");
    let guard = acquire(&backend, &request(&lock, Wait::TryOnce))
        .await
        .unwrap();
    let all = raw
        .get(
            "__locks_holders/",
            Some(etcd_client::GetOptions::new().with_prefix()),
        )
        .await
        .unwrap();
    assert_eq!(all.kvs().iter().filter(|kv| kv.lease() == lease).count(), 1);
    guard.release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mutex_holder_that_is_not_ours_shows_its_token() {
    let Some(addr) = server() else { return };
    let backend = connect(&addr, Layout::Mutex).await;
    let lock = name("status-foreign");
    // What `etcdctl lock` writes: an empty value on its own lease.
    let mut raw = raw(&addr).await;
    let lease = raw.lease_grant(30, None).await.unwrap().id();
    let put = raw
        .put(
            format!("{lock}/{lease:x}"),
            "",
            Some(PutOptions::new().with_lease(lease)),
        )
        .await
        .unwrap();
    let revision = put.header().unwrap().revision();
    let status = backend.status(&lock, Scope::Global).await.unwrap();
    let holder = status.holder.clone().expect("held");
    assert_eq!((holder.host, holder.pid, holder.label), (None, None, None));
    assert_eq!(holder.token, u64::try_from(revision).ok());
    assert!(
        status
            .notes
            .iter()
            .any(|n| n.contains("holder is not a client") && n.contains(&format!("{lease:x}"))),
        "{:?}",
        status.notes
    );
    raw.lease_revoke(lease).await.unwrap();
    assert!(
        !backend
            .status(&lock, Scope::Global)
            .await
            .unwrap()
            .is_held()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tooz_status_shows_the_holder_and_says_waiters_are_invisible() {
    let Some(addr) = server() else { return };
    let (a, b) = (
        connect(&addr, Layout::Tooz).await,
        connect(&addr, Layout::Tooz).await,
    );
    let lock = name("status-tooz");
    assert!(!b.status(&lock, Scope::Global).await.unwrap().is_held());
    let guard = acquire(&a, &request(&lock, WAIT).label("volume_attach"))
        .await
        .unwrap();
    let status = b.status(&lock, Scope::Global).await.unwrap();
    let holder = status.holder.clone().expect("held");
    assert_eq!(
        (holder.host.clone(), holder.pid),
        (Some(host_name()), Some(std::process::id()))
    );
    assert!(holder.program.is_some());
    assert_eq!(holder.label, None, "tooz's value is random bytes");
    assert_eq!(holder.token, Some(guard.token()));
    assert!(status.waiters.is_empty());
    assert!(
        status
            .notes
            .iter()
            .any(|n| n.contains("waiters are not visible")),
        "{:?}",
        status.notes
    );
    guard.release().await.unwrap();
    assert!(!b.status(&lock, Scope::Global).await.unwrap().is_held());

    // A key as tooz writes it, on a lease of its own: held, by someone unknown.
    let mut raw = raw(&addr).await;
    let lease = raw.lease_grant(30, None).await.unwrap().id();
    raw.put(
        format!("/tooz/locks{lock}"),
        vec![7u8; 16],
        Some(PutOptions::new().with_lease(lease)),
    )
    .await
    .unwrap();
    let foreign = b.status(&lock, Scope::Global).await.unwrap();
    let holder = foreign.holder.clone().expect("held by tooz");
    assert_eq!((holder.host, holder.pid), (None, None));
    assert!(holder.token.is_some());
    assert!(
        foreign
            .notes
            .iter()
            .any(|n| n.contains("holder is not a client") && n.contains("tooz")),
        "{:?}",
        foreign.notes
    );
    raw.lease_revoke(lease).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_name_of_the_identity_keys_is_refused() {
    let Some(addr) = server() else { return };
    let backend = connect(&addr, Layout::Mutex).await;
    let reserved = locks_core::LockName::new("__locks_holders").unwrap();
    let err = acquire(&backend, &request(&reserved, Wait::TryOnce))
        .await
        .expect_err("reserved");
    assert_eq!(err.kind(), locks_core::ErrorKind::InvalidName, "{err}");
    assert!(err.message().contains("__locks_holders"), "{err}");
    let err = backend.status(&reserved, Scope::Global).await.unwrap_err();
    assert_eq!(err.kind(), locks_core::ErrorKind::InvalidName, "{err}");
    // Names under it are ordinary locks.
    let below = locks_core::LockName::new("__locks_holders/x").unwrap();
    acquire(&backend, &request(&below, Wait::TryOnce))
        .await
        .unwrap()
        .release()
        .await
        .unwrap();
}

/// A frozen server: `status` ends with `Unavailable` within the request
/// timeout instead of hanging, and disturbed nothing once the server is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_of_a_frozen_server_is_unavailable() {
    if server().is_none() {
        return;
    }
    let etcd = DedicatedEtcd::start();
    let mut cfg = config(&etcd.addr, Layout::Mutex);
    cfg.connect_timeout = Duration::from_secs(1);
    let backend = connect_with(cfg).await;
    let lock = name("status-frozen");
    let guard = acquire(&backend, &request(&lock, Wait::TryOnce))
        .await
        .unwrap();
    etcd.signal("STOP");
    let asked = tokio::time::timeout(
        Duration::from_secs(30),
        backend.status(&lock, Scope::Global),
    )
    .await;
    etcd.signal("CONT");
    let err = asked.expect("status hung").expect_err("server frozen");
    assert_eq!(err.kind(), locks_core::ErrorKind::Unavailable, "{err}");
    assert!(err.message().contains(&etcd.addr), "{err}");
    let status = backend.status(&lock, Scope::Global).await.unwrap();
    assert_eq!(status.holder.unwrap().token, Some(guard.token()));
    guard.release().await.unwrap();
}

/// etcd's mutex range of `a` holds the contenders of `a/b`: status shows
/// them (they do make `a` wait) and says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contenders_of_longer_names_show_with_a_note() {
    let Some(addr) = server() else { return };
    let backend = connect(&addr, Layout::Mutex).await;
    let parent = name("status-parent");
    let child = locks_core::LockName::new(format!("{parent}/child")).unwrap();
    let guard = acquire(&backend, &request(&child, Wait::TryOnce))
        .await
        .unwrap();
    let status = backend.status(&parent, Scope::Global).await.unwrap();
    assert_eq!(status.holder.unwrap().token, Some(guard.token()));
    assert!(
        status
            .notes
            .iter()
            .any(|n| n.contains("longer names") && n.contains(child.as_str())),
        "{:?}",
        status.notes
    );
    let own = backend.status(&child, Scope::Global).await.unwrap();
    assert!(own.notes.iter().all(|n| !n.contains("longer names")));
    guard.release().await.unwrap();
}

/// `statuses` finds every lock with a contender key under the prefix (ours,
/// nested, and one of another client), but not the identity keys nor other
/// keys; nothing once they are released.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statuses_lists_every_busy_lock_under_the_prefix() {
    let Some(addr) = server() else { return };
    let prefix = format!("locks-test/{}/", name("statuses"));
    let mut cfg = config(&addr, Layout::Mutex);
    cfg.prefix = prefix.clone();
    let (a, b) = (connect_with(cfg.clone()).await, connect_with(cfg).await);
    assert!(a.statuses(Scope::Global).await.unwrap().is_empty());
    let plain = locks_core::LockName::new("volume-1").unwrap();
    let nested = locks_core::LockName::new("host-7/volume-2").unwrap();
    let first = acquire(&a, &request(&plain, WAIT)).await.unwrap();
    let second = acquire(&a, &request(&nested, WAIT).label("attach"))
        .await
        .unwrap();
    let waiter = {
        let (b, plain) = (b.clone(), plain.clone());
        tokio::spawn(async move { acquire(&b, &request(&plain, WAIT)).await.unwrap() })
    };
    assert!(
        eventually(Duration::from_secs(10), || async {
            a.status(&plain, Scope::Global).await.unwrap().waiters.len() == 1
        })
        .await
    );
    let mut raw = raw(&addr).await;
    let lease = raw.lease_grant(30, None).await.unwrap().id();
    let with_lease = Some(PutOptions::new().with_lease(lease));
    raw.put(format!("{prefix}foreign/{lease:x}"), "", with_lease.clone())
        .await
        .unwrap();
    // Not contenders: a key without a lease, one not named after its lease.
    raw.put(format!("{prefix}settings"), "x", None)
        .await
        .unwrap();
    raw.put(format!("{prefix}other/key"), "x", with_lease)
        .await
        .unwrap();

    let all = b.statuses(Scope::Global).await.unwrap();
    let names: Vec<&str> = all.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["foreign", "host-7/volume-2", "volume-1"]);
    assert_eq!(all[0].holder.as_ref().unwrap().pid, None);
    assert_eq!(all[1].holder.as_ref().unwrap().token, Some(second.token()));
    assert_eq!(
        all[1].holder.as_ref().unwrap().label.as_deref(),
        Some("attach")
    );
    assert_eq!(all[2].holder.as_ref().unwrap().token, Some(first.token()));
    assert_eq!(all[2].waiters.len(), 1);

    raw.lease_revoke(lease).await.unwrap();
    first.release().await.unwrap();
    second.release().await.unwrap();
    waiter.await.unwrap().release().await.unwrap();
    assert!(b.statuses(Scope::Global).await.unwrap().is_empty());
    raw.delete(format!("{prefix}settings"), None).await.unwrap();
}

/// With `layout=tooz`, `statuses` finds the held keys under `/tooz/locks`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tooz_statuses_lists_held_keys() {
    let Some(addr) = server() else { return };
    let backend = connect(&addr, Layout::Tooz).await;
    let lock = name("statuses-tooz");
    let guard = acquire(&backend, &request(&lock, WAIT)).await.unwrap();
    let all = backend.statuses(Scope::Global).await.unwrap();
    let ours = all
        .iter()
        .find(|s| s.name == lock)
        .unwrap_or_else(|| panic!("{lock} missing from {all:?}"));
    assert_eq!(ours.holder.as_ref().unwrap().token, Some(guard.token()));
    guard.release().await.unwrap();
    let all = backend.statuses(Scope::Global).await.unwrap();
    assert!(all.iter().all(|s| s.name != lock));
}
