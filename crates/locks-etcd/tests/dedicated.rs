//! Tests that pause, stop or reconfigure etcd, each on a server of its own
//! (started with ci/etcd.sh), so they cannot disturb other tests. They run
//! when the shared server is configured (`LOCKS_TEST_ETCD`), which is the
//! sign that `etcd` is installed.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use locks_core::{ErrorKind, LockState, Wait, acquire};
use locks_etcd::{EtcdBackend, Layout};

/// etcd frozen with SIGSTOP past the TTL: the holder's guard reports `Lost`
/// while the server is still frozen, so before anybody else can acquire;
/// after SIGCONT another client gets the lock and the first release reports
/// `Lost`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frozen_server_loses_the_lock_before_anyone_else_gets_it() {
    if server().is_none() {
        return;
    }
    for layout in [Layout::Mutex, Layout::Tooz] {
        let etcd = DedicatedEtcd::start();
        let mut first = config(&etcd.addr, layout);
        first.ttl = Duration::from_secs(2);
        let first = connect_with(first).await;
        let mut second = config(&etcd.addr, layout);
        second.ttl = Duration::from_secs(10);
        second.connect_timeout = Duration::from_secs(10);
        let second = Arc::new(connect_with(second).await);

        let name = name("sigstop");
        let guard = acquire(&first, &request(&name, Wait::TryOnce))
            .await
            .expect("acquire");
        let first_token = guard.token();

        etcd.signal("STOP");
        let stopped = Instant::now();
        let contender = {
            let (second, name) = (Arc::clone(&second), name.clone());
            tokio::spawn(async move {
                let got = acquire(
                    &*second,
                    &request(&name, Wait::Timeout(Duration::from_secs(30))),
                )
                .await;
                (got, Instant::now())
            })
        };
        let lost = tokio::time::timeout(Duration::from_secs(5), guard.lost()).await;
        let lost_after = stopped.elapsed();
        assert!(
            lost.is_ok(),
            "{layout}: the guard did not report Lost within 5 s of a frozen server (ttl 2 s); state {:?}",
            guard.state()
        );
        let lost_at = Instant::now();
        assert!(
            lost_after >= Duration::from_millis(1000),
            "{layout}: lost after only {lost_after:?}"
        );
        assert!(
            !contender.is_finished(),
            "{layout}: nobody can acquire from a frozen server"
        );
        eprintln!("{layout}: lost {lost_after:?} after SIGSTOP");
        etcd.signal("CONT");

        let (got, acquired_at) = contender.await.expect("contender task");
        let next = got.unwrap_or_else(|e| panic!("{layout}: second client: {}", e.report()));
        assert!(lost_at < acquired_at);
        assert!(next.token() > first_token, "{layout}: fencing token grows");
        eprintln!(
            "{layout}: second client acquired {:?} after SIGCONT",
            acquired_at - lost_at
        );

        let err = guard.release().await.expect_err("the lock was lost");
        assert_eq!(err.kind(), ErrorKind::Lost, "{layout}: {}", err.report());
        next.release().await.expect("release");

        // The first client recovers with a new lease.
        let again = acquire(
            &first,
            &request(&name, Wait::Timeout(Duration::from_secs(10))),
        )
        .await
        .unwrap_or_else(|e| panic!("{layout}: acquire on a new lease: {}", e.report()));
        assert_eq!(again.state(), LockState::Held);
        again.release().await.expect("release");
    }
}

/// The server goes away for good: the holder's guard goes at-risk, then lost
/// within the TTL; waiters and new acquires fail with `Unavailable` naming
/// the endpoint instead of hanging.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vanished_server_gives_lost_and_unavailable() {
    if server().is_none() {
        return;
    }
    let etcd = DedicatedEtcd::start();
    let mut holder = config(&etcd.addr, Layout::Mutex);
    holder.ttl = Duration::from_secs(2);
    holder.connect_timeout = Duration::from_secs(1);
    let holder = Arc::new(connect_with(holder.clone()).await);
    let mut other = config(&etcd.addr, Layout::Mutex);
    other.ttl = Duration::from_secs(2);
    other.connect_timeout = Duration::from_secs(1);
    let other = Arc::new(connect_with(other).await);

    let name = name("vanish");
    let guard = acquire(&*holder, &request(&name, Wait::TryOnce))
        .await
        .expect("acquire");
    let waiter = {
        let (other, name) = (Arc::clone(&other), name.clone());
        tokio::spawn(async move { acquire(&*other, &request(&name, Wait::Forever)).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiter.is_finished());

    let mut states = guard.watch_state();
    etcd.stop();
    let gone = Instant::now();
    let mut seen = Vec::new();
    let lost = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let state = *states.borrow_and_update();
            if seen.last() != Some(&state) {
                seen.push(state);
            }
            if state == LockState::Lost {
                return;
            }
            if states.changed().await.is_err() {
                return;
            }
        }
    })
    .await;
    assert!(lost.is_ok(), "not lost within 5 s; states {seen:?}");
    assert_eq!(guard.state(), LockState::Lost, "states {seen:?}");
    eprintln!(
        "states after the server went away: {seen:?} ({:?})",
        gone.elapsed()
    );

    let waited = tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .expect("the waiter gives up instead of hanging")
        .expect("waiter task");
    let err = waited.expect_err("no lock from a dead server");
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{}", err.report());
    assert!(err.message().contains(&etcd.addr), "{err}");

    // (The lost guard still holds its name locally until released.)
    let start = Instant::now();
    let err = acquire(
        &*holder,
        &request(&common::name("vanish-new"), Wait::TryOnce),
    )
    .await
    .expect_err("no lock from a dead server");
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{}", err.report());
    assert!(err.message().contains(&etcd.addr), "{err}");
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );

    let err = guard.release().await.expect_err("lost");
    assert_eq!(err.kind(), ErrorKind::Lost, "{}", err.report());
}

/// With authentication on: the right password works (also past the TTL, so
/// the keep-alive is authenticated too), a wrong one and none are
/// `PermissionDenied`, and no message shows the password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_are_checked() {
    if server().is_none() {
        return;
    }
    let etcd = DedicatedEtcd::start();
    for args in [
        &["user", "add", "root:s3cret-pw"][..],
        &["user", "add", "locker:l0cker-pw"],
        &["role", "add", "locker"],
        &[
            "role",
            "grant-permission",
            "locker",
            "--prefix=true",
            "readwrite",
            "locks/",
        ],
        &["user", "grant-role", "locker", "locker"],
        &["auth", "enable"],
    ] {
        let out = etcdctl(&etcd.addr).args(args).output().expect("etcdctl");
        assert!(
            out.status.success(),
            "etcdctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    let mut wrong = config(&etcd.addr, Layout::Mutex);
    wrong.user = Some("locker".into());
    wrong.password = Some("not-the-pw".into());
    let err = EtcdBackend::connect(wrong)
        .await
        .expect_err("wrong password");
    assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{}", err.report());
    assert!(err.message().contains(&etcd.addr), "{err}");
    assert!(!err.report().contains("not-the-pw"), "{}", err.report());
    // The status in words, once; not the gRPC client's debug output.
    assert!(!err.report().contains("metadata"), "{}", err.report());

    // No credentials: refused at connect or at the first lock.
    let anonymous = EtcdBackend::connect(config(&etcd.addr, Layout::Mutex)).await;
    let err = match anonymous {
        Err(e) => e,
        Ok(backend) => acquire(&backend, &request(&name("anon"), Wait::TryOnce))
            .await
            .expect_err("anonymous writes are refused"),
    };
    assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{}", err.report());

    let mut right = config(&etcd.addr, Layout::Mutex);
    right.user = Some("locker".into());
    right.password = Some("l0cker-pw".into());
    right.prefix = "locks/".into();
    right.ttl = Duration::from_secs(2);
    let backend = connect_with(right.clone()).await;
    let name = name("auth");
    let guard = acquire(&backend, &request(&name, Wait::TryOnce))
        .await
        .unwrap_or_else(|e| panic!("acquire with credentials: {}", e.report()));
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(guard.state(), LockState::Held);
    guard.release().await.expect("release");

    // A prefix the role does not cover: permission denied, not a hang.
    let mut outside = right;
    outside.prefix = "elsewhere/".into();
    let backend = connect_with(outside).await;
    let err = acquire(&backend, &request(&name, Wait::TryOnce))
        .await
        .expect_err("outside the role's prefix");
    assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{}", err.report());
    assert!(!err.report().contains("metadata"), "{}", err.report());
}

/// TLS with client certificates (feature `tls`): the right files work, a
/// missing client certificate or plain text fail with typed errors naming
/// the endpoint.
#[cfg(feature = "tls")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_client_certificates() {
    use locks_etcd::TlsConfig;
    if server().is_none() {
        return;
    }
    let etcd = DedicatedEtcd::start_tls(true);
    let mut secure = config(&etcd.addr, Layout::Mutex);
    secure.tls = Some(TlsConfig {
        ca: Some(etcd.tls_file("ca.pem")),
        cert: Some(etcd.tls_file("client.pem")),
        key: Some(etcd.tls_file("client-key.pem")),
    });
    let backend = connect_with(secure.clone()).await;
    let name = name("tls");
    let guard = acquire(&backend, &request(&name, Wait::TryOnce))
        .await
        .unwrap_or_else(|e| panic!("acquire over TLS: {}", e.report()));
    let err = acquire(&backend, &request(&name, Wait::TryOnce))
        .await
        .expect_err("held");
    assert_eq!(err.kind(), ErrorKind::WouldBlock);
    guard.release().await.expect("release");

    let mut plain = config(&etcd.addr, Layout::Mutex);
    plain.connect_timeout = Duration::from_secs(2);
    let err = EtcdBackend::connect(plain)
        .await
        .expect_err("plain text to a TLS server");
    eprintln!("plain text: {}", err.report());
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{}", err.report());
    assert!(err.message().contains(&etcd.addr), "{err}");

    let mut anonymous = secure.clone();
    anonymous.connect_timeout = Duration::from_secs(2);
    if let Some(tls) = &mut anonymous.tls {
        tls.cert = None;
        tls.key = None;
    }
    let err = EtcdBackend::connect(anonymous)
        .await
        .expect_err("no client certificate");
    eprintln!("no client certificate: {}", err.report());
    assert!(
        matches!(
            err.kind(),
            ErrorKind::Unavailable | ErrorKind::PermissionDenied
        ),
        "{}",
        err.report()
    );

    let mut missing = secure;
    if let Some(tls) = &mut missing.tls {
        tls.ca = Some("/nonexistent/ca.pem".into());
    }
    let err = EtcdBackend::connect(missing).await.expect_err("no CA file");
    assert_eq!(err.kind(), ErrorKind::Io, "{}", err.report());
    assert!(err.message().contains("/nonexistent/ca.pem"), "{err}");
}

#[cfg(not(feature = "tls"))]
#[tokio::test]
async fn tls_settings_need_the_tls_feature() {
    let mut config = config("127.0.0.1:2379", Layout::Mutex);
    config.tls = Some(locks_etcd::TlsConfig {
        ca: Some("/etc/etcd/ca.pem".into()),
        cert: None,
        key: None,
    });
    let err = EtcdBackend::connect(config)
        .await
        .expect_err("no TLS in this build");
    assert_eq!(err.kind(), ErrorKind::Unsupported);
    assert!(
        err.message().contains("TLS is not supported by this build"),
        "{err}"
    );
}
