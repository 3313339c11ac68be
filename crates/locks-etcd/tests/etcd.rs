//! etcd-specific behaviour against the shared test server (`LOCKS_TEST_ETCD`):
//! key layouts, the shared lease, cancellation, release safety, interop with
//! `etcdctl lock`, and errors for unreachable servers.

mod common;

use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use etcd_client::{Compare, CompareOp, PutOptions, Txn, TxnOp};
use locks_core::{Backend, ErrorKind, LockState, Wait, acquire};
use locks_etcd::{EtcdBackend, EtcdConfig, Layout};

/// A prefix no other test or run uses.
fn unique_prefix(test: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("locks-test/{test}-{}-{nanos:x}/", std::process::id())
}

async fn prefixed(addr: &str, test: &str) -> (EtcdBackend, String) {
    let prefix = unique_prefix(test);
    let mut config = config(addr, Layout::Mutex);
    config.prefix = prefix.clone();
    (connect_with(config).await, prefix)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_names_on_one_lease() {
    let Some(addr) = server() else { return };
    let (backend, prefix) = prefixed(&addr, "many").await;
    let backend = Arc::new(backend);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for t in 0..50 {
        let backend = Arc::clone(&backend);
        tasks.push(tokio::spawn(async move {
            let mut guards = Vec::new();
            for i in 0..200 {
                let name = locks_core::LockName::new(format!("n{t}-{i}")).expect("valid name");
                let guard = acquire(&*backend, &request(&name, Wait::TryOnce))
                    .await
                    .unwrap_or_else(|e| panic!("acquire {name}: {}", e.report()));
                guards.push(guard);
            }
            guards
        }));
    }
    let mut guards = Vec::new();
    for task in tasks {
        guards.extend(task.await.expect("acquiring task"));
    }
    eprintln!("10 000 acquires took {:?}", start.elapsed());
    assert_eq!(guards.len(), 10_000);
    assert!(guards.iter().all(|g| g.state() == LockState::Held));

    let lease = backend.lease_id().await.expect("lease");
    let mut raw = raw(&addr).await;
    let keys = keys_under(&mut raw, prefix.as_bytes()).await;
    assert_eq!(keys.len(), 10_000, "one key per name");
    assert!(
        keys.iter().all(|(_, l, _)| *l == lease),
        "every key carries the one lease {lease:x}"
    );
    assert!(
        keys.iter()
            .all(|(k, _, _)| k.ends_with(&format!("/{lease:x}")))
    );
    let mut tokens: Vec<u64> = guards.iter().map(|g| g.token()).collect();
    tokens.sort_unstable();
    tokens.dedup();
    assert_eq!(tokens.len(), 10_000, "every holding has its own token");

    let mut releases = Vec::new();
    let mut chunk = Vec::new();
    for guard in guards {
        chunk.push(guard);
        if chunk.len() == 200 {
            let batch = std::mem::take(&mut chunk);
            releases.push(tokio::spawn(async move {
                for guard in batch {
                    guard
                        .release()
                        .await
                        .unwrap_or_else(|e| panic!("release: {}", e.report()));
                }
            }));
        }
    }
    for release in releases {
        release.await.expect("releasing task");
    }
    assert!(keys_under(&mut raw, prefix.as_bytes()).await.is_empty());
    assert_eq!(backend.active_names(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutex_keys_follow_concurrency_mutex() {
    let Some(addr) = server() else { return };
    let backend = connect(&addr, Layout::Mutex).await;
    let name = name("layout-mutex");
    let guard = acquire(&backend, &request(&name, Wait::TryOnce))
        .await
        .expect("acquire");
    let lease = backend.lease_id().await.expect("lease");
    let mut raw = raw(&addr).await;
    let keys = keys_under(&mut raw, format!("{name}/").as_bytes()).await;
    assert_eq!(
        keys,
        vec![(
            format!("{name}/{lease:x}"),
            lease,
            i64::try_from(guard.token()).unwrap()
        )]
    );
    assert_eq!(backend.key_of(&name), format!("{name}/").into_bytes());
    guard.release().await.expect("release");
    assert!(
        keys_under(&mut raw, format!("{name}/").as_bytes())
            .await
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tooz_keys_follow_tooz() {
    let Some(addr) = server() else { return };
    let backend = connect(&addr, Layout::Tooz).await;
    let name = name("layout-tooz");
    let guard = acquire(&backend, &request(&name, Wait::TryOnce))
        .await
        .expect("acquire");
    let key = format!("/tooz/locks{name}");
    assert_eq!(backend.key_of(&name), key.clone().into_bytes());
    let mut raw = raw(&addr).await;
    let got = raw.get(key.clone(), None).await.expect("get");
    let kv = got.kvs().first().expect("the tooz key exists");
    assert_eq!(kv.value().len(), 16, "16 random bytes, as tooz writes");
    assert_eq!(kv.lease(), backend.lease_id().await.expect("lease"));
    assert_eq!(kv.create_revision(), i64::try_from(guard.token()).unwrap());
    guard.release().await.expect("release");
    assert!(raw.get(key, None).await.expect("get").kvs().is_empty());
}

/// A tooz-style holder (create-if-absent txn with its own lease, as tooz's
/// etcd3gw driver does) blocks us; we get the lock once it deletes its key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tooz_layout_excludes_a_tooz_style_holder() {
    let Some(addr) = server() else { return };
    let backend = Arc::new(connect(&addr, Layout::Tooz).await);
    let name = name("tooz-interop");
    let key = format!("/tooz/locks{name}");
    let mut raw = raw(&addr).await;
    let lease = raw.lease_grant(30, None).await.expect("lease").id();
    let value = b"0123456789abcdef".to_vec();
    let took = raw
        .txn(
            Txn::new()
                .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
                .and_then([TxnOp::put(
                    key.clone(),
                    value.clone(),
                    Some(PutOptions::new().with_lease(lease)),
                )]),
        )
        .await
        .expect("txn");
    assert!(took.succeeded());

    let err = acquire(&*backend, &request(&name, Wait::TryOnce))
        .await
        .expect_err("held by the tooz-style client");
    assert_eq!(err.kind(), ErrorKind::WouldBlock);

    let waiter = {
        let (backend, name) = (Arc::clone(&backend), name.clone());
        tokio::spawn(async move {
            acquire(
                &*backend,
                &request(&name, Wait::Timeout(Duration::from_secs(10))),
            )
            .await
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiter.is_finished());
    let released_at = Instant::now();
    let released = raw
        .txn(
            Txn::new()
                .when([Compare::value(key.clone(), CompareOp::Equal, value)])
                .and_then([TxnOp::delete(key.clone(), None)]),
        )
        .await
        .expect("release txn");
    assert!(released.succeeded());
    let guard = waiter
        .await
        .expect("waiter")
        .expect("acquired after release");
    assert!(
        released_at.elapsed() < Duration::from_millis(900),
        "a watch, not tooz's 1 s polling: {:?}",
        released_at.elapsed()
    );
    guard.release().await.expect("release");
    raw.lease_revoke(lease).await.expect("revoke");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_and_timed_out_waiters_leave_no_key() {
    let Some(addr) = server() else { return };
    let (backend, prefix) = prefixed(&addr, "cancel").await;
    let other = {
        let mut config = config(&addr, Layout::Mutex);
        config.prefix = prefix.clone();
        connect_with(config).await
    };
    let name = locks_core::LockName::new("x").expect("name");
    let holder = acquire(&other, &request(&name, Wait::TryOnce))
        .await
        .expect("acquire");
    let mut raw = raw(&addr).await;

    let err = acquire(&backend, &request(&name, Wait::TryOnce))
        .await
        .expect_err("held");
    assert_eq!(err.kind(), ErrorKind::WouldBlock);
    let err = acquire(
        &backend,
        &request(&name, Wait::Timeout(Duration::from_millis(300))),
    )
    .await
    .expect_err("held");
    assert_eq!(err.kind(), ErrorKind::Timeout);
    let dropped = tokio::time::timeout(
        Duration::from_millis(300),
        backend.acquire(&request(&name, Wait::Forever)),
    )
    .await;
    assert!(dropped.is_err());
    // Cancel at many different points of an acquire.
    for i in 0..40u64 {
        let _ = tokio::time::timeout(
            Duration::from_micros(i * 150),
            backend.acquire(&request(&name, Wait::Forever)),
        )
        .await;
    }
    let only_holder = eventually(Duration::from_secs(5), || {
        let (mut raw, prefix) = (raw.clone(), prefix.clone());
        async move { keys_under(&mut raw, prefix.as_bytes()).await.len() == 1 }
    })
    .await;
    assert!(
        only_holder,
        "keys left: {:?}",
        keys_under(&mut raw, prefix.as_bytes()).await
    );
    assert!(
        eventually(Duration::from_secs(5), || async {
            backend.active_names() == 0
        })
        .await
    );
    holder.release().await.expect("release");

    // Cancelled acquires of a free name: the lock may have been taken and
    // dropped at any point; nothing stays behind either.
    for i in 0..40u64 {
        let _ = tokio::time::timeout(
            Duration::from_micros(i * 150),
            backend.acquire(&request(&name, Wait::Forever)),
        )
        .await;
    }
    let none_left = eventually(Duration::from_secs(5), || {
        let (mut raw, prefix) = (raw.clone(), prefix.clone());
        async move { keys_under(&mut raw, prefix.as_bytes()).await.is_empty() }
    })
    .await;
    assert!(
        none_left,
        "keys left: {:?}",
        keys_under(&mut raw, prefix.as_bytes()).await
    );
    let again = acquire(&other, &request(&name, Wait::TryOnce))
        .await
        .expect("free again");
    again.release().await.expect("release");
}

/// Release deletes only the key this holding created: if the key was deleted
/// and recreated meanwhile (even on our lease), release reports `Lost` and
/// leaves the newer key alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_deletes_only_our_own_key() {
    let Some(addr) = server() else { return };
    let mut raw = raw(&addr).await;
    for layout in [Layout::Mutex, Layout::Tooz] {
        let backend = connect(&addr, layout).await;
        let name = name("own-key");
        let guard = acquire(&backend, &request(&name, Wait::TryOnce))
            .await
            .expect("acquire");
        let lease = backend.lease_id().await.expect("lease");
        let key = match layout {
            Layout::Mutex => format!("{name}/{lease:x}"),
            Layout::Tooz => format!("/tooz/locks{name}"),
        };
        raw.delete(key.clone(), None).await.expect("delete");
        raw.put(
            key.clone(),
            "someone else",
            Some(PutOptions::new().with_lease(lease)),
        )
        .await
        .expect("put");
        let err = guard
            .release()
            .await
            .expect_err("the key is not ours any more");
        assert_eq!(err.kind(), ErrorKind::Lost, "{layout}: {}", err.report());
        assert!(err.message().contains(name.as_str()), "{err}");
        let left = raw.get(key.clone(), None).await.expect("get");
        assert_eq!(
            left.kvs().first().map(|kv| kv.value().to_vec()),
            Some(b"someone else".to_vec()),
            "{layout}: the newer key survives"
        );
        raw.delete(key, None).await.expect("cleanup");
    }
}

/// Locks outlive many TTLs while the keep-alive runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_holds_locks_past_the_ttl() {
    let Some(addr) = server() else { return };
    let mut config = config(&addr, Layout::Mutex);
    config.ttl = Duration::from_secs(2);
    let backend = connect_with(config).await;
    let name = name("keepalive");
    let guard = acquire(&backend, &request(&name, Wait::TryOnce))
        .await
        .expect("acquire");
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(guard.state(), LockState::Held);
    let mut raw = raw(&addr).await;
    assert_eq!(
        keys_under(&mut raw, format!("{name}/").as_bytes())
            .await
            .len(),
        1
    );
    guard.release().await.expect("release after 2.5 TTLs");
}

/// Waiters of different clients are served in the order they queued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_queue_in_order() {
    let Some(addr) = server() else { return };
    let holder = connect(&addr, Layout::Mutex).await;
    let name = name("queue");
    let guard = acquire(&holder, &request(&name, Wait::TryOnce))
        .await
        .expect("acquire");
    let order = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut waiters = Vec::new();
    for i in 0..3 {
        let backend = connect(&addr, Layout::Mutex).await;
        let (name, order) = (name.clone(), Arc::clone(&order));
        waiters.push(tokio::spawn(async move {
            let guard = acquire(
                &backend,
                &request(&name, Wait::Timeout(Duration::from_secs(10))),
            )
            .await
            .expect("waiter acquires");
            order.lock().unwrap().push((i, guard.token()));
            guard.release().await.expect("release");
        }));
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    guard.release().await.expect("release");
    for waiter in waiters {
        waiter.await.expect("waiter");
    }
    let order = order.lock().unwrap().clone();
    assert_eq!(order.iter().map(|(i, _)| *i).collect::<Vec<_>>(), [0, 1, 2]);
    assert!(order.windows(2).all(|w| w[0].1 < w[1].1), "{order:?}");
}

/// A waiter whose predecessor gives up keeps waiting for the holder: the
/// predecessor's delete hands over the turn only when nobody else is ahead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_behind_a_quitter_still_waits_for_the_holder() {
    let Some(addr) = server() else { return };
    let holder = connect(&addr, Layout::Mutex).await;
    let quitter = connect(&addr, Layout::Mutex).await;
    let waiter = connect(&addr, Layout::Mutex).await;
    let name = name("quitter");
    let guard = acquire(&holder, &request(&name, Wait::TryOnce))
        .await
        .expect("acquire");
    let quit_name = name.clone();
    let quitting = tokio::spawn(async move {
        acquire(
            &quitter,
            &request(&quit_name, Wait::Timeout(Duration::from_millis(400))),
        )
        .await
        .map(drop)
    });
    tokio::time::sleep(Duration::from_millis(150)).await;
    let wait_name = name.clone();
    let waiting = tokio::spawn(async move {
        let guard = acquire(&waiter, &request(&wait_name, Wait::Forever))
            .await
            .expect("waiter acquires");
        let at = Instant::now();
        guard.release().await.expect("release");
        at
    });
    let quit = quitting.await.expect("quitter task");
    assert_eq!(
        quit.expect_err("quitter times out").kind(),
        ErrorKind::Timeout
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(
        !waiting.is_finished(),
        "the waiter got the lock while it was held"
    );
    let released = Instant::now();
    guard.release().await.expect("release");
    let acquired = waiting.await.expect("waiter task");
    assert!(acquired >= released);
}

/// The lease goes away with the backend once no guard needs it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_backend_revokes_its_lease() {
    let Some(addr) = server() else { return };
    let backend = connect(&addr, Layout::Mutex).await;
    let name = name("revoke");
    let guard = acquire(&backend, &request(&name, Wait::TryOnce))
        .await
        .expect("acquire");
    let lease = backend.lease_id().await.expect("lease");
    drop(backend);
    // The guard keeps the lease alive...
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(guard.state(), LockState::Held);
    let mut raw = raw(&addr).await;
    let ttl = raw
        .lease_time_to_live(lease, None)
        .await
        .expect("ttl")
        .ttl();
    assert!(ttl > 0, "still alive while a guard holds it");
    guard.release().await.expect("release");
    // ...and once it is gone, so is the lease.
    let revoked = eventually(Duration::from_secs(3), || {
        let mut raw = raw.clone();
        async move {
            raw.lease_time_to_live(lease, None)
                .await
                .map(|r| r.ttl() <= 0)
                .unwrap_or(true)
        }
    })
    .await;
    assert!(revoked, "lease {lease:x} outlived its backend");
}

/// A port nothing listens on: every call fails with `Unavailable` naming the
/// endpoint within the connect timeout, never a hang.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_server_is_unavailable_and_named() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr").port()
    };
    let endpoint = format!("127.0.0.1:{port}");
    let mut config = EtcdConfig::new([endpoint.clone()]);
    config.connect_timeout = Duration::from_secs(1);
    let start = Instant::now();
    let err = EtcdBackend::connect(config)
        .await
        .expect_err("nothing listens there");
    let took = start.elapsed();
    eprintln!("after {took:?}: {}", err.report());
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{}", err.report());
    assert!(err.message().contains(&endpoint), "{err}");
    assert!(took < Duration::from_millis(2500), "took {took:?}");
}

/// Lock names that etcd keys and `etcdctl` treat specially still work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn awkward_names() {
    let Some(addr) = server() else { return };
    for layout in [Layout::Mutex, Layout::Tooz] {
        let backend = connect(&addr, layout).await;
        for raw_name in ["with space", "ünïcödé", "a/b/c", "-dash"] {
            let name = locks_core::LockName::new(format!(
                "{raw_name}-{}",
                locks_core::testing::unique_name("awk")
            ))
            .expect("valid name");
            let guard = acquire(&backend, &request(&name, Wait::TryOnce))
                .await
                .expect("acquire");
            let err = acquire(&backend, &request(&name, Wait::TryOnce))
                .await
                .expect_err("held");
            assert_eq!(err.kind(), ErrorKind::WouldBlock);
            guard.release().await.expect("release");
        }
    }
}

/// Reads lines of a child's stdout into a channel.
fn lines_of(stdout: std::process::ChildStdout) -> tokio::sync::mpsc::UnboundedReceiver<String> {
    use std::io::BufRead;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Stops a child process on drop (a failed assertion must not leave
/// `etcdctl` holding a lock).
struct Child(std::process::Child);

impl Child {
    fn signal(&self, signal: &str) {
        let _ = std::process::Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.0.id().to_string())
            .status();
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn etcdctl_lock(
    addr: &str,
    name: &str,
    ttl: u32,
) -> (Child, tokio::sync::mpsc::UnboundedReceiver<String>) {
    let mut child = etcdctl(addr)
        .arg("lock")
        .arg(format!("--ttl={ttl}"))
        .arg(name)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("etcdctl runs (install etcd-client)");
    let stdout = child.stdout.take().expect("piped stdout");
    (Child(child), lines_of(stdout))
}

/// `etcdctl lock` holds: we cannot try-lock, and our waiter gets the lock
/// once etcdctl lets go (SIGTERM makes it unlock).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_holder_excludes_us() {
    let Some(addr) = server() else { return };
    let backend = Arc::new(connect(&addr, Layout::Mutex).await);
    let name = name("etcdctl-holds");
    let (etcdctl, mut lines) = etcdctl_lock(&addr, name.as_str(), 10);
    let key = tokio::time::timeout(Duration::from_secs(10), lines.recv())
        .await
        .expect("etcdctl takes the free lock")
        .expect("etcdctl prints its key");
    assert!(key.starts_with(&format!("{name}/")), "{key}");

    let err = acquire(&*backend, &request(&name, Wait::TryOnce))
        .await
        .expect_err("etcdctl holds it");
    assert_eq!(err.kind(), ErrorKind::WouldBlock, "{}", err.report());

    let waiter = {
        let (backend, name) = (Arc::clone(&backend), name.clone());
        tokio::spawn(async move {
            acquire(
                &*backend,
                &request(&name, Wait::Timeout(Duration::from_secs(15))),
            )
            .await
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!waiter.is_finished(), "we must wait while etcdctl holds");
    let mut raw = raw(&addr).await;
    let etcdctl_rev = raw
        .get(key.clone(), None)
        .await
        .expect("get")
        .kvs()
        .first()
        .map(|kv| kv.create_revision())
        .expect("etcdctl's key exists");
    etcdctl.signal("TERM");
    let guard = waiter
        .await
        .expect("waiter")
        .unwrap_or_else(|e| panic!("acquire after etcdctl: {}", e.report()));
    assert!(i64::try_from(guard.token()).unwrap() > etcdctl_rev);
    guard.release().await.expect("release");
    drop(etcdctl);
}

/// A `kill -9`ed `etcdctl lock` holder: its session lease expires and our
/// waiter gets the lock within the TTL plus a second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_etcdctl_holder_expires_within_ttl() {
    let Some(addr) = server() else { return };
    let backend = connect(&addr, Layout::Mutex).await;
    let name = name("etcdctl-killed");
    let (etcdctl, mut lines) = etcdctl_lock(&addr, name.as_str(), 2);
    tokio::time::timeout(Duration::from_secs(10), lines.recv())
        .await
        .expect("etcdctl takes the free lock")
        .expect("etcdctl prints its key");
    etcdctl.signal("KILL");
    let killed = Instant::now();
    let guard = acquire(
        &backend,
        &request(&name, Wait::Timeout(Duration::from_secs(10))),
    )
    .await
    .unwrap_or_else(|e| panic!("acquire after the holder died: {}", e.report()));
    let took = killed.elapsed();
    assert!(took < Duration::from_secs(3), "took {took:?} (ttl 2 s)");
    guard.release().await.expect("release");
    drop(etcdctl);
}

/// We hold: `etcdctl lock` waits (prints nothing) until we release.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn we_exclude_an_etcdctl_waiter() {
    let Some(addr) = server() else { return };
    let backend = connect(&addr, Layout::Mutex).await;
    let name = name("we-hold");
    let guard = acquire(&backend, &request(&name, Wait::TryOnce))
        .await
        .expect("acquire");
    let (etcdctl, mut lines) = etcdctl_lock(&addr, name.as_str(), 10);
    let early = tokio::time::timeout(Duration::from_millis(1500), lines.recv()).await;
    assert!(
        early.is_err(),
        "etcdctl got the lock while we hold it: {early:?}"
    );
    guard.release().await.expect("release");
    let key = tokio::time::timeout(Duration::from_secs(10), lines.recv())
        .await
        .expect("etcdctl gets the lock after our release")
        .expect("etcdctl prints its key");
    assert!(key.starts_with(&format!("{name}/")), "{key}");
    // And now etcdctl holds it against us.
    let err = acquire(&backend, &request(&name, Wait::TryOnce))
        .await
        .expect_err("etcdctl holds it");
    assert_eq!(err.kind(), ErrorKind::WouldBlock);
    etcdctl.signal("TERM");
    let again = acquire(
        &backend,
        &request(&name, Wait::Timeout(Duration::from_secs(10))),
    )
    .await
    .expect("free after etcdctl");
    again.release().await.expect("release");
    drop(etcdctl);
}

/// Guards can be dropped on threads outside any runtime (the delete runs on
/// the backend's runtime), and after their runtime is gone (no panic; the
/// key then expires with the lease).
#[test]
fn guards_drop_outside_and_after_the_runtime() {
    let Some(addr) = server() else { return };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut config = config(&addr, Layout::Mutex);
    config.ttl = Duration::from_secs(2);
    let backend = runtime.block_on(connect_with(config));
    let name = name("foreign-drop");
    let guard = runtime
        .block_on(acquire(&backend, &request(&name, Wait::TryOnce)))
        .expect("acquire");
    std::thread::spawn(move || drop(guard))
        .join()
        .expect("dropping on a plain thread");
    runtime.block_on(async {
        let mut raw = raw(&addr).await;
        let prefix = format!("{name}/");
        let gone = eventually(Duration::from_secs(3), || {
            let (mut raw, prefix) = (raw.clone(), prefix.clone());
            async move { keys_under(&mut raw, prefix.as_bytes()).await.is_empty() }
        })
        .await;
        assert!(gone, "{:?}", keys_under(&mut raw, prefix.as_bytes()).await);
    });

    // The background release deletes the key, then ends the in-process
    // turn: wait for both rather than racing them with a try-once.
    let outlives = runtime
        .block_on(acquire(
            &backend,
            &request(&name, Wait::Timeout(Duration::from_secs(3))),
        ))
        .expect("acquire again");
    drop(runtime);
    drop(outlives);
    drop(backend);

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let other = connect(&addr, Layout::Mutex).await;
        let guard = acquire(
            &other,
            &request(&name, Wait::Timeout(Duration::from_secs(5))),
        )
        .await
        .expect("the orphaned key expires with its lease");
        guard.release().await.expect("release");
    });
}
