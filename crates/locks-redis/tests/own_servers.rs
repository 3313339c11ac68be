//! Tests that start servers of their own with `ci/redis.sh` (so they can
//! count a server's commands or kill its master without disturbing other
//! tests): waiting without polling, the bounds of the re-check on a silent
//! holder, and a Sentinel failover. They run where `LOCKS_TEST_REDIS` is set
//! (the servers are installed), and fail without it under `CI=true`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use locks_core::testing::{server_from_env, unique_name};
use locks_core::{ErrorKind, LockName, LockRequest, LockState, Scope, Wait, acquire};
use locks_redis::{Address, Credentials, RedisConfig};

/// Servers started by `ci/redis.sh ACTION` in a state directory of their own,
/// stopped on drop.
struct Servers {
    dir: tempfile::TempDir,
    env: Vec<(String, String)>,
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../ci/redis.sh")
}

impl Servers {
    fn start(action: &str, env_file: &str) -> Option<Servers> {
        Self::start_with(&[action], env_file)
    }

    fn start_with(args: &[&str], env_file: &str) -> Option<Servers> {
        server_from_env("LOCKS_TEST_REDIS")?;
        let dir = tempfile::tempdir().expect("temp dir");
        let status = Command::new("bash")
            .arg(script())
            .arg(args[0])
            .arg(dir.path())
            .args(&args[1..])
            .status()
            .expect("running ci/redis.sh");
        assert!(status.success(), "ci/redis.sh {args:?} failed");
        let text = std::fs::read_to_string(dir.path().join(env_file)).expect("env file");
        let env = text
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        Some(Servers { dir, env })
    }

    fn get(&self, key: &str) -> &str {
        self.env
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("{key} missing"))
    }

    fn run(&self, args: &[&str]) -> String {
        let out = Command::new("bash")
            .arg(script())
            .arg(args[0])
            .arg(self.dir.path())
            .args(&args[1..])
            .output()
            .expect("running ci/redis.sh");
        assert!(
            out.status.success(),
            "ci/redis.sh {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(script())
            .arg("stop")
            .arg(self.dir.path())
            .status();
    }
}

fn address(text: &str) -> Address {
    let (host, port) = text.rsplit_once(':').expect("host:port");
    Address::new(host, port.parse().expect("port"))
}

fn password(text: &str) -> Option<Credentials> {
    Some(Credentials {
        username: None,
        password: text.to_owned(),
    })
}

fn request(name: &LockName, wait: Wait) -> LockRequest {
    LockRequest::new(name.clone(), Scope::Global).wait(wait)
}

async fn raw(address: &Address, password: &str) -> redis::aio::MultiplexedConnection {
    let info = redis::IntoConnectionInfo::into_connection_info(redis::ConnectionAddr::Tcp(
        address.host.clone(),
        address.port,
    ))
    .expect("connection info")
    .set_redis_settings(redis::RedisConnectionInfo::default().set_password(password));
    redis::Client::open(info)
        .expect("client")
        .get_multiplexed_async_connection()
        .await
        .expect("raw connection")
}

/// How many scripts the server ran since the last call (and resets the count).
async fn scripts_run(conn: &mut redis::aio::MultiplexedConnection) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(conn)
        .await
        .expect("INFO");
    let () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query_async(conn)
        .await
        .expect("RESETSTAT");
    info.lines()
        .filter(|l| l.starts_with("cmdstat_evalsha:") || l.starts_with("cmdstat_eval:"))
        .filter_map(|l| {
            l.split([':', ','])
                .find_map(|f| f.strip_prefix("calls="))
                .and_then(|n| n.parse::<u64>().ok())
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_do_not_poll_our_holders_and_recheck_silent_ones_every_10_to_100_ms() {
    let Some(servers) = Servers::start("start", "redis.env") else {
        return;
    };
    let server = address(servers.get("LOCKS_TEST_REDIS"));
    let pw = servers.get("LOCKS_TEST_REDIS_PASSWORD");
    let mut config = RedisConfig::new(server.host.clone(), server.port);
    config.credentials = password(pw);
    // Long enough that no refresh runs while the test counts scripts.
    config.lock_timeout = Duration::from_secs(30);
    let holder = common::connect(config.clone()).await;
    let waiter = std::sync::Arc::new(common::connect(config).await);
    let mut conn = raw(&server, pw).await;
    let watch = Duration::from_secs(3);

    // A holder of ours: the waiter waits for its release notice.
    let name = unique_name("no-poll");
    let guard = acquire(&holder, &request(&name, Wait::TryOnce))
        .await
        .unwrap();
    let waiting = {
        let (waiter, name) = (waiter.clone(), name.clone());
        tokio::spawn(async move {
            acquire(
                &*waiter,
                &request(&name, Wait::Timeout(Duration::from_secs(20))),
            )
            .await
        })
    };
    // Time to subscribe and settle (the confirmation wakes it once more).
    tokio::time::sleep(Duration::from_secs(1)).await;
    scripts_run(&mut conn).await;
    tokio::time::sleep(watch).await;
    let polls = scripts_run(&mut conn).await;
    let released = Instant::now();
    guard.release().await.unwrap();
    let next = waiting.await.unwrap().unwrap();
    let handoff = released.elapsed();
    eprintln!("behind our holder: {polls} scripts in {watch:?}; handoff {handoff:?}");
    assert!(
        polls <= 1,
        "the waiter polled: {polls} scripts in {watch:?}"
    );
    next.release().await.unwrap();

    // A holder that publishes nothing (tooz's SET NX PX): re-checks, backed
    // off from 10 ms to at most 100 ms.
    let name = unique_name("silent");
    let key = waiter.key_of(&name);
    let () = redis::cmd("SET")
        .arg(&key)
        .arg("0123456789abcdef0123456789abcdef")
        .arg("NX")
        .arg("PX")
        .arg(30_000)
        .query_async(&mut conn)
        .await
        .unwrap();
    let waiting = {
        let (waiter, name) = (waiter.clone(), name.clone());
        tokio::spawn(async move {
            acquire(
                &*waiter,
                &request(&name, Wait::Timeout(Duration::from_secs(20))),
            )
            .await
        })
    };
    // Time to subscribe and settle (the confirmation wakes it once more).
    tokio::time::sleep(Duration::from_secs(1)).await;
    scripts_run(&mut conn).await;
    tokio::time::sleep(watch).await;
    let checks = scripts_run(&mut conn).await;
    let () = redis::cmd("DEL")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap();
    let next = waiting.await.unwrap().unwrap();
    eprintln!("behind a silent holder: {checks} checks in {watch:?}");
    // At most every 100 ms: 30 in 3 s, at least 15 even with round trips
    // of 100 ms on a loaded machine; at least every 10 ms: at most 300
    // (plus the one in flight).
    assert!(
        (15..=302).contains(&checks),
        "{checks} checks in {watch:?}: the re-check pause must stay within 10..100 ms"
    );
    next.release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sentinel_failover_is_followed_without_reopening() {
    let Some(servers) = Servers::start("start-sentinel", "redis-sentinel.env") else {
        return;
    };
    let sentinels: Vec<Address> = servers
        .get("LOCKS_TEST_REDIS_SENTINELS")
        .split(',')
        .map(address)
        .collect();
    let mut config =
        RedisConfig::sentinel(servers.get("LOCKS_TEST_REDIS_SENTINEL_MASTER"), sentinels);
    config.credentials = password(servers.get("LOCKS_TEST_REDIS_SENTINEL_PASSWORD"));
    config.lock_timeout = Duration::from_secs(5);
    let backend = common::connect(config.clone()).await;
    let peer = common::connect(config).await;

    let held = unique_name("held-over-failover");
    let guard = acquire(&backend, &request(&held, Wait::TryOnce))
        .await
        .unwrap();
    // A second lock of ours with the peer waiting for it across the failover.
    let awaited = unique_name("awaited-over-failover");
    let awaited_guard = acquire(&backend, &request(&awaited, Wait::TryOnce))
        .await
        .unwrap();
    let waiter = {
        let (peer, awaited) = (peer.clone(), awaited.clone());
        tokio::spawn(async move {
            let guard = acquire(
                &peer,
                &request(&awaited, Wait::Timeout(Duration::from_secs(60))),
            )
            .await;
            (guard, Instant::now())
        })
    };
    // Let the key reach the replica (replication is asynchronous).
    tokio::time::sleep(Duration::from_millis(200)).await;
    let old = servers.run(&["master"]);
    let killed = Instant::now();
    let new = servers.run(&["stop-master", "KILL"]);
    let promoted = killed.elapsed();
    assert_ne!(old.split(' ').next(), Some(new.as_str()));

    // New acquires through the same backend value work on the new master.
    let fresh = unique_name("after-failover");
    let next = acquire(
        &backend,
        &request(&fresh, Wait::Timeout(Duration::from_secs(30))),
    )
    .await
    .unwrap_or_else(|e| panic!("acquire after the failover: {}", e.report()));
    let served = killed.elapsed();
    let err = acquire(&peer, &request(&fresh, Wait::TryOnce))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::WouldBlock, "{}", err.report());
    next.release().await.unwrap();
    acquire(&peer, &request(&fresh, Wait::TryOnce))
        .await
        .unwrap()
        .release()
        .await
        .unwrap();

    // The waiter queued before the failover gets the lock promptly after the
    // release on the new master: by the notice once its subscriber is back
    // on the new master, by the 10-100 ms re-check while it is not; never
    // only when the refreshed key could expire (seconds later).
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !waiter.is_finished(),
        "the waiter waits while the lock is held"
    );
    let released = Instant::now();
    awaited_guard.release().await.unwrap();
    let (next, got) = waiter.await.unwrap();
    let woken = got.saturating_duration_since(released);
    next.unwrap_or_else(|e| panic!("the waiter across the failover: {}", e.report()))
        .release()
        .await
        .unwrap();
    eprintln!("a waiter queued before the failover got the lock {woken:?} after the release");
    assert!(
        woken < Duration::from_secs(2),
        "the waiter stalled after the release on the new master: {woken:?}"
    );

    // The lock held across the failover: the key was replicated before the
    // kill, so it still holds (refreshed on the new master); had it not
    // been, the refresh would find it gone and report Lost.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let state = guard.state();
    eprintln!(
        "old master {old}, new master {new}: promoted after {promoted:?}, first acquire served \
         after {served:?}; the lock held across it is {state:?}"
    );
    assert!(
        matches!(state, LockState::Held | LockState::Lost),
        "{state:?}"
    );
    if state == LockState::Held {
        let err = acquire(&peer, &request(&held, Wait::TryOnce))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::WouldBlock, "{}", err.report());
        guard.release().await.unwrap();
    } else {
        assert_eq!(guard.release().await.unwrap_err().kind(), ErrorKind::Lost);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_master_is_given_up_for_the_promoted_replica() {
    let Some(servers) = Servers::start("start-sentinel", "redis-sentinel.env") else {
        return;
    };
    let sentinels: Vec<Address> = servers
        .get("LOCKS_TEST_REDIS_SENTINELS")
        .split(',')
        .map(address)
        .collect();
    let mut config =
        RedisConfig::sentinel(servers.get("LOCKS_TEST_REDIS_SENTINEL_MASTER"), sentinels);
    config.credentials = password(servers.get("LOCKS_TEST_REDIS_SENTINEL_PASSWORD"));
    config.lock_timeout = Duration::from_secs(6);
    // kolla's socket_timeout: far longer than the lock timeout.
    config.request_timeout = Duration::from_secs(60);
    let backend = common::connect(config.clone()).await;
    let peer = common::connect(config.clone()).await;

    let held = unique_name("held-over-freeze");
    let guard = acquire(&backend, &request(&held, Wait::TryOnce))
        .await
        .unwrap();
    let mut state = guard.watch_state();
    tokio::time::sleep(Duration::from_millis(200)).await;
    // SIGSTOP: connections to the master stay open and unanswered.
    let new = servers.run(&["stop-master", "STOP"]);
    let frozen = Instant::now();
    let mut seen = vec![*state.borrow_and_update()];
    // Watch the guard for more than a lock timeout past the freeze: its
    // refreshes must leave the frozen master for the promoted replica.
    let until = frozen + config.lock_timeout + Duration::from_secs(2);
    while Instant::now() < until {
        if tokio::time::timeout_at(until.into(), state.changed())
            .await
            .is_ok()
        {
            seen.push(*state.borrow_and_update());
        }
    }
    eprintln!("new master {new}; the guard went through {seen:?}");
    assert!(
        !seen.contains(&LockState::Lost),
        "the holder was lost while a promoted replica served: {seen:?}"
    );
    assert_eq!(guard.state(), LockState::Held);
    let err = acquire(&peer, &request(&held, Wait::TryOnce))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::WouldBlock, "{}", err.report());
    guard.release().await.unwrap();
    acquire(&peer, &request(&held, Wait::TryOnce))
        .await
        .unwrap()
        .release()
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_client_certificate() {
    let Some(servers) = Servers::start("start-tls", "redis-tls.env") else {
        return;
    };
    let server = address(servers.get("LOCKS_TEST_REDIS_TLS"));
    let mut config = RedisConfig::new(server.host.clone(), server.port);
    config.credentials = password(servers.get("LOCKS_TEST_REDIS_TLS_PASSWORD"));
    config.tls = Some(locks_redis::TlsConfig {
        ca: Some(servers.get("LOCKS_TEST_REDIS_TLS_CA").into()),
        cert: Some(servers.get("LOCKS_TEST_REDIS_TLS_CERT").into()),
        key: Some(servers.get("LOCKS_TEST_REDIS_TLS_KEY").into()),
    });
    if !locks_redis::TLS_SUPPORTED {
        let err = locks_redis::RedisBackend::connect(config)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unsupported, "{}", err.report());
        return;
    }
    let backend = common::connect(config.clone()).await;
    let peer = common::connect(config.clone()).await;
    let name = unique_name("tls");
    let guard = acquire(&backend, &request(&name, Wait::TryOnce))
        .await
        .unwrap();
    let err = acquire(&peer, &request(&name, Wait::TryOnce))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::WouldBlock, "{}", err.report());
    let waiting = {
        let (peer, name) = (peer.clone(), name.clone());
        tokio::spawn(async move {
            acquire(
                &peer,
                &request(&name, Wait::Timeout(Duration::from_secs(10))),
            )
            .await
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    guard.release().await.unwrap();
    waiting.await.unwrap().unwrap().release().await.unwrap();

    // Plain text to a TLS-only port, or a CA that did not sign the server's
    // certificate, fails with a typed error instead of hanging.
    let mut plain = config.clone();
    plain.tls = None;
    plain.request_timeout = Duration::from_millis(500);
    let err = locks_redis::RedisBackend::connect(plain).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{}", err.report());
    let mut wrong_ca = config;
    wrong_ca.request_timeout = Duration::from_millis(500);
    if let Some(tls) = &mut wrong_ca.tls {
        tls.ca = Some(servers.get("LOCKS_TEST_REDIS_TLS_CERT").into());
    }
    let err = locks_redis::RedisBackend::connect(wrong_ca)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err.kind(),
            ErrorKind::Unavailable | ErrorKind::InvalidConfig
        ),
        "{}",
        err.report()
    );
    eprintln!("a CA that did not sign the server: {}", err.report());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinels_with_a_password_of_their_own() {
    let Some(servers) = Servers::start_with(&["start-sentinel", "auth"], "redis-sentinel.env")
    else {
        return;
    };
    let sentinels: Vec<Address> = servers
        .get("LOCKS_TEST_REDIS_SENTINELS")
        .split(',')
        .map(address)
        .collect();
    let mut config =
        RedisConfig::sentinel(servers.get("LOCKS_TEST_REDIS_SENTINEL_MASTER"), sentinels);
    config.credentials = password(servers.get("LOCKS_TEST_REDIS_SENTINEL_PASSWORD"));
    config.lock_timeout = Duration::from_secs(5);

    // Without the sentinels' password, or with a wrong one: refused at once,
    // naming the sentinels, never showing a password.
    for wrong in [None, password("not-the-sentinel-password")] {
        let mut c = config.clone();
        c.sentinel_credentials = wrong;
        let started = Instant::now();
        let err = locks_redis::RedisBackend::connect(c).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{}", err.report());
        assert!(
            err.report().contains(
                servers
                    .get("LOCKS_TEST_REDIS_SENTINELS")
                    .split(',')
                    .next()
                    .unwrap()
            ),
            "{}",
            err.report()
        );
        assert!(
            !err.report().contains("not-the-sentinel-password"),
            "{}",
            err.report()
        );
        assert!(
            !err.report()
                .contains(servers.get("LOCKS_TEST_REDIS_SENTINEL_PASSWORD"))
        );
        assert!(
            started.elapsed() < config.request_timeout,
            "refused at once"
        );
    }

    config.sentinel_credentials = password(servers.get("LOCKS_TEST_REDIS_SENTINEL_AUTH_PASSWORD"));
    let backend = common::connect(config.clone()).await;
    let peer = common::connect(config).await;
    let name = unique_name("sentinel-auth");
    let guard = acquire(&backend, &request(&name, Wait::TryOnce))
        .await
        .unwrap();
    let err = acquire(&peer, &request(&name, Wait::TryOnce))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::WouldBlock, "{}", err.report());
    guard.release().await.unwrap();
    // And after a failover the sentinels are asked again with it.
    servers.run(&["failover"]);
    let next = acquire(
        &peer,
        &request(&name, Wait::Timeout(Duration::from_secs(20))),
    )
    .await
    .unwrap_or_else(|e| panic!("after the failover: {}", e.report()));
    next.release().await.unwrap();
}
