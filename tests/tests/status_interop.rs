//! `status` of a lock held by the real tooz (Python, `tests/python/peer.py`,
//! as Cinder takes it): held, with what can be known (the token; on
//! ZooKeeper since when), host and pid unknown with a note saying the holder
//! is not ours; our own waiter shows behind it where the backend shows
//! waiters, and holds next.
//!
//! Needs `LOCKS_TEST_PYTHON` (from `ci/python.sh`) and `LOCKS_TEST_ETCD` /
//! `LOCKS_TEST_ZK`; each is skipped without its variable unless `CI=true`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use locks::{Config, Locks, Scope, Wait};
use locks_core::testing::server_from_env;
use locks_tests::{Peer, python_from_env};

const HANDOVER: Duration = Duration::from_secs(10);

static COUNTER: AtomicUsize = AtomicUsize::new(0);

fn unique_name(test: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "status-{test}-{}-{nanos:x}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// A client whose Global backend is `url`, as Cinder's configuration names it.
async fn open(url: &str, dir: &std::path::Path) -> Locks {
    let text = format!(
        "compat = \"openstack\"\nprefix = \"cinder\"\nlock_path = \"{}\"\n[backends]\nglobal = \"{url}\"\n",
        dir.display()
    );
    let config = Config::from_toml_str(&text, dir, "status interop test")
        .unwrap_or_else(|e| panic!("config:\n{text}\n{}", e.report()));
    Locks::open(config)
        .await
        .unwrap_or_else(|e| panic!("open:\n{text}\n{}", e.report()))
}

/// tooz holds `name` through `url`; what `status` shows, before and after
/// it releases to our waiter.
async fn tooz_holder(url: &str, test: &str, waiters_visible: bool) {
    let Some(python) = python_from_env() else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let locks = open(url, dir.path()).await;
    let name = unique_name(test);
    let free = locks.status_name(Scope::Global, &name).await.unwrap();
    assert!(!free.is_held(), "{free:?}");

    let mut peer = Peer::start(&python, ["tooz", url, &name], &[]);
    peer.ask("try", "GOT", HANDOVER);
    let held = locks.status_name(Scope::Global, &name).await.unwrap();
    assert_eq!(held.name.as_str(), format!("cinder-{name}"));
    eprintln!("{url}: tooz holds: {held:?}");
    let holder = held.holder.clone().expect("tooz holds it");
    assert_eq!((holder.host, holder.pid, holder.label), (None, None, None));
    assert!(holder.token.is_some(), "{held:?}");
    assert!(
        held.notes
            .iter()
            .any(|n| n.contains("holder is not a client") && n.contains("tooz")),
        "{:?}",
        held.notes
    );

    // Our waiter queues behind tooz, where the backend shows waiters.
    let waiter = {
        let (locks, name) = (locks.clone(), name.clone());
        tokio::spawn(async move {
            locks
                .lock_name(Scope::Global, &name, Wait::Timeout(Duration::from_secs(30)))
                .await
        })
    };
    if waiters_visible {
        let deadline = tokio::time::Instant::now() + HANDOVER;
        loop {
            let status = locks.status_name(Scope::Global, &name).await.unwrap();
            if let [ours] = status.waiters.as_slice() {
                assert_eq!(ours.pid, Some(std::process::id()));
                assert_eq!(status.holder.unwrap().pid, None, "tooz still holds");
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "{status:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    peer.ask("release", "RELEASED", HANDOVER);
    let guard = waiter.await.unwrap().expect("ours after tooz released");
    let ours = locks.status_name(Scope::Global, &name).await.unwrap();
    let holder = ours.holder.clone().expect("we hold it");
    assert_eq!(holder.pid, Some(std::process::id()));
    assert_eq!(holder.token, Some(guard.token()));
    guard.release().await.unwrap();
    peer.quit();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tooz_etcd3_holder_shows_as_held() {
    let Some(addr) = server_from_env("LOCKS_TEST_ETCD") else {
        return;
    };
    tooz_holder(&format!("etcd3+http://{addr}"), "etcd", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tooz_zookeeper_holder_shows_as_held_with_our_waiter_behind() {
    let Some(addr) = server_from_env("LOCKS_TEST_ZK") else {
        return;
    };
    tooz_holder(&format!("zookeeper://{addr}"), "zk", true).await;
}
