//! Behaviour of locks-redis beyond the conformance suite, against the plain
//! server of `ci/redis.sh start` (`LOCKS_TEST_REDIS`): tooz's key layout,
//! refreshes, Lost and AtRisk, a crashed holder, one client's queue order.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use locks_core::testing::unique_name;
use locks_core::{Backend, ErrorKind, LockName, LockRequest, LockState, Scope, Wait, acquire};
use locks_fault_proxy::{Fault, FaultProxy};
use locks_redis::{RedisBackend, RedisConfig, Server};

/// A raw connection to the server of `config` (no sentinels), for looking
/// at keys behind the backend's back.
async fn raw(config: &RedisConfig) -> redis::aio::MultiplexedConnection {
    let Server::Direct(address) = &config.server else {
        panic!("a plain server")
    };
    let mut settings = redis::RedisConnectionInfo::default();
    if let Some(c) = &config.credentials {
        settings = settings.set_password(&c.password);
    }
    let info = redis::IntoConnectionInfo::into_connection_info(redis::ConnectionAddr::Tcp(
        address.host.clone(),
        address.port,
    ))
    .expect("connection info")
    .set_redis_settings(settings);
    redis::Client::open(info)
        .expect("client")
        .get_multiplexed_async_connection()
        .await
        .expect("raw connection")
}

fn request(name: &LockName, wait: Wait) -> LockRequest {
    LockRequest::new(name.clone(), Scope::Global).wait(wait)
}

async fn take(backend: &dyn Backend, name: &LockName, wait: Wait) -> locks_core::LockGuard {
    acquire(backend, &request(name, wait))
        .await
        .unwrap_or_else(|e| panic!("acquire `{name}`: {}", e.report()))
}

fn short(mut config: RedisConfig) -> RedisConfig {
    config.lock_timeout = Duration::from_secs(1);
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_toozs_and_fences_count_per_name() {
    let Some(config) = common::plain_config() else {
        return;
    };
    let backend = common::connect(config.clone()).await;
    let mut conn = raw(&config).await;
    let name = unique_name("layout");
    let key = format!("_tooz_{name}_lock");
    assert_eq!(backend.key_of(&name), key);

    let guard = take(&backend, &name, Wait::TryOnce).await;
    let value: String = redis::cmd("GET")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(value.starts_with("locks-redis:"), "{value}");
    let pttl: i64 = redis::cmd("PTTL")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(
        pttl > 0 && pttl <= 3000,
        "the key expires with the lock timeout: {pttl}"
    );
    let fence: u64 = redis::cmd("GET")
        .arg(format!("{key}:fence"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(fence, guard.token());
    let first = guard.token();
    guard.release().await.unwrap();
    let gone: Option<String> = redis::cmd("GET")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(gone, None, "release deletes the key");

    // A holder that is not ours (tooz's SET NX PX) excludes us, and our
    // counter does not move for it.
    let () = redis::cmd("SET")
        .arg(&key)
        .arg("0123456789abcdef0123456789abcdef")
        .arg("NX")
        .arg("PX")
        .arg(30_000)
        .query_async(&mut conn)
        .await
        .unwrap();
    let err = acquire(&backend, &request(&name, Wait::TryOnce))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::WouldBlock, "{}", err.report());
    let () = redis::cmd("DEL")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap();
    let guard = take(&backend, &name, Wait::TryOnce).await;
    assert_eq!(guard.token(), first + 1);
    guard.release().await.unwrap();
}

/// The test server's configuration with a 2 s lock timeout, a backend on it
/// and a raw connection to look at its keys; `None` without a server.
async fn two_second_backend()
-> Option<(RedisConfig, RedisBackend, redis::aio::MultiplexedConnection)> {
    let mut config = common::plain_config()?;
    config.lock_timeout = Duration::from_secs(2);
    let backend = common::connect(config.clone()).await;
    let conn = raw(&config).await;
    Some((config, backend, conn))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refreshes_keep_a_lock_past_its_timeout() {
    let Some((config, backend, mut conn)) = two_second_backend().await else {
        return;
    };
    let peer = common::connect(config.clone()).await;
    let name = unique_name("refresh");
    let key = backend.key_of(&name);
    let guard = take(&backend, &name, Wait::TryOnce).await;
    // Over two lock timeouts: without refreshes the key would be long gone.
    // Refreshes come at most a third of the lock timeout apart, so the key's
    // remaining time never falls much below two thirds of it (the slack is
    // for a busy machine; refreshes half the timeout apart would let it
    // fall to a half).
    let until = Instant::now() + Duration::from_millis(4500);
    let mut lowest = i64::MAX;
    while Instant::now() < until {
        let pttl: i64 = redis::cmd("PTTL")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .unwrap();
        lowest = lowest.min(pttl);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let floor = i64::try_from((config.lock_timeout * 2 / 3).as_millis()).unwrap() - 250;
    eprintln!(
        "lowest PTTL {lowest} ms (lock timeout {:?})",
        config.lock_timeout
    );
    assert!(
        lowest >= floor,
        "the key's PTTL fell to {lowest} ms: refreshes more than a third of the lock timeout apart"
    );
    assert_eq!(guard.state(), LockState::Held);
    let err = acquire(&peer, &request(&name, Wait::TryOnce))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::WouldBlock, "{}", err.report());
    guard.release().await.unwrap();
    take(&peer, &name, Wait::TryOnce)
        .await
        .release()
        .await
        .unwrap();
}

/// The lowest PTTL of each of `keys` over `span`, looked at every 10 ms.
async fn lowest_pttls(
    conn: &mut redis::aio::MultiplexedConnection,
    keys: &[&str],
    span: Duration,
) -> Vec<i64> {
    let until = Instant::now() + span;
    let mut lowest = vec![i64::MAX; keys.len()];
    while Instant::now() < until {
        for (key, lowest) in keys.iter().zip(&mut lowest) {
            let pttl: i64 = redis::cmd("PTTL").arg(key).query_async(conn).await.unwrap();
            *lowest = (*lowest).min(pttl);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    lowest
}

/// One task refreshes every key a backend holds: holds taken at different
/// times, amid many short ones, each keep their own schedule; one lost does
/// not disturb the others; and a hold taken after the backend held nothing
/// for a while is refreshed too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_backends_holds_are_each_refreshed_on_their_own_schedule() {
    let Some((config, backend, mut conn)) = two_second_backend().await else {
        return;
    };
    // As in `refreshes_keep_a_lock_past_its_timeout`: refreshes a third of
    // the lock timeout apart keep the PTTL above two thirds of it.
    let floor = i64::try_from((config.lock_timeout * 2 / 3).as_millis()).unwrap() - 250;
    let names: Vec<LockName> = ["first", "second", "victim", "after-idle"]
        .iter()
        .map(|n| unique_name(&format!("shared-refresh-{n}")))
        .collect();
    let keys: Vec<String> = names.iter().map(|n| backend.key_of(n)).collect();
    let first = take(&backend, &names[0], Wait::TryOnce).await;
    let victim = take(&backend, &names[2], Wait::TryOnce).await;
    // Short holds of other names come and go meanwhile.
    let churn = unique_name("shared-refresh-churn");
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(300) {
        take(&backend, &churn, Wait::TryOnce)
            .await
            .release()
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(600)).await;
    // Taken a third of a lock timeout later: due later than the first.
    let second = take(&backend, &names[1], Wait::TryOnce).await;
    // Someone else takes the victim's key over.
    let () = redis::cmd("SET")
        .arg(&keys[2])
        .arg("intruder")
        .query_async(&mut conn)
        .await
        .unwrap();
    let lowest = lowest_pttls(
        &mut conn,
        &[&keys[0], &keys[1]],
        Duration::from_millis(2500),
    )
    .await;
    eprintln!("lowest PTTLs {lowest:?} ms (floor {floor} ms)");
    assert!(
        lowest.iter().all(|&l| l >= floor),
        "PTTLs fell to {lowest:?} ms: a hold was not refreshed every third of the lock timeout"
    );
    assert_eq!(
        victim.state(),
        LockState::Lost,
        "the victim's key was taken over"
    );
    assert_eq!(first.state(), LockState::Held);
    assert_eq!(second.state(), LockState::Held);
    assert_eq!(victim.release().await.unwrap_err().kind(), ErrorKind::Lost);
    first.release().await.unwrap();
    // The second alone, then nothing held for longer than a refresh interval.
    let lowest = lowest_pttls(&mut conn, &[&keys[1]], Duration::from_millis(800)).await;
    assert!(
        lowest[0] >= floor,
        "the second's PTTL fell to {lowest:?} ms"
    );
    second.release().await.unwrap();
    tokio::time::sleep(Duration::from_millis(900)).await;
    let after_idle = take(&backend, &names[3], Wait::TryOnce).await;
    let lowest = lowest_pttls(&mut conn, &[&keys[3]], Duration::from_millis(2500)).await;
    assert!(
        lowest[0] >= floor,
        "a hold taken after an idle spell was not refreshed: PTTL fell to {lowest:?} ms"
    );
    assert_eq!(after_idle.state(), LockState::Held);
    after_idle.release().await.unwrap();
    let () = redis::cmd("DEL")
        .arg(&keys[2])
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(backend.active_names(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_taken_over_is_lost_and_left_alone() {
    let Some(config) = common::plain_config() else {
        return;
    };
    let backend = common::connect(short(config.clone())).await;
    let mut conn = raw(&config).await;
    let name = unique_name("taken-over");
    let key = backend.key_of(&name);
    let guard = take(&backend, &name, Wait::TryOnce).await;
    // Someone deletes the key and another holder takes it (as after an
    // expiry, or a failover that lost the key).
    let () = redis::cmd("SET")
        .arg(&key)
        .arg("intruder")
        .query_async(&mut conn)
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(2), guard.lost())
        .await
        .expect("the next refresh finds the key someone else's");
    let err = guard.release().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Lost, "{}", err.report());
    let value: String = redis::cmd("GET")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        value, "intruder",
        "a lost lock's release leaves the new holder's key"
    );
    let () = redis::cmd("DEL")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_off_holder_is_at_risk_then_lost_before_expiry() {
    let Some(config) = common::plain_config() else {
        return;
    };
    let Server::Direct(address) = &config.server else {
        unreachable!()
    };
    let upstream = format!("{address}").parse().expect("an IP address");
    let proxy = FaultProxy::start(upstream).expect("proxy");
    let mut through = short(config.clone());
    through.server = Server::Direct(locks_redis::Address::new(
        proxy.addr().ip().to_string(),
        proxy.addr().port(),
    ));
    through.request_timeout = Duration::from_millis(300);
    let backend = common::connect(through).await;
    let peer = common::connect(short(config)).await;
    let name = unique_name("cut-off");
    let guard = take(&backend, &name, Wait::TryOnce).await;
    let mut state = guard.watch_state();
    proxy.set(Fault::Blackhole);
    let cut = Instant::now();
    let mut seen = Vec::new();
    while *state.borrow_and_update() != LockState::Lost {
        seen.push(*state.borrow());
        tokio::time::timeout(Duration::from_secs(3), state.changed())
            .await
            .expect("the state changes within the lock timeout")
            .expect("state sender alive");
    }
    let lost_after = cut.elapsed();
    assert!(
        seen.contains(&LockState::AtRisk),
        "AtRisk when a refresh failed, before Lost: saw {seen:?}"
    );
    // Our key can expire no earlier than one lock timeout after the last
    // refresh was sent; the guard says Lost before that.
    let peer_took = loop {
        match acquire(&peer, &request(&name, Wait::TryOnce)).await {
            Ok(guard) => break (cut.elapsed(), guard),
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("{}", e.report()),
        }
    };
    eprintln!(
        "states {seen:?}, Lost after {lost_after:?}, the peer took the lock after {:?}",
        peer_took.0
    );
    assert!(
        lost_after < peer_took.0,
        "Lost ({lost_after:?}) must come before anybody else can hold the lock ({:?})",
        peer_took.0
    );
    peer_took.1.release().await.unwrap();
    proxy.set(Fault::Pass);
    let err = guard.release().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Lost, "{}", err.report());
    // The same client works again once the server is back.
    take(&backend, &name, Wait::Timeout(Duration::from_secs(5)))
        .await
        .release()
        .await
        .unwrap();
}

#[test]
fn a_crashed_holders_lock_frees_within_the_lock_timeout() {
    let Some(config) = common::plain_config() else {
        return;
    };
    let config = short(config);
    let name = unique_name("crash");
    // The holder's runtime is shut down without a release: its refreshes
    // stop as in a killed process, and nothing deletes the key.
    let crashed = tokio::runtime::Runtime::new().expect("runtime");
    let guard = crashed.block_on(async {
        let backend = common::connect(config.clone()).await;
        take(&backend, &name, Wait::TryOnce).await
    });
    let held_until = Instant::now();
    std::mem::forget(guard);
    crashed.shutdown_background();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let peer = common::connect(config.clone()).await;
        let guard = take(&peer, &name, Wait::Timeout(Duration::from_secs(10))).await;
        let took = held_until.elapsed();
        eprintln!("the crashed holder's lock was free after {took:?}");
        assert!(
            took <= config.lock_timeout + Duration::from_secs(1),
            "freed after {took:?}, more than the lock timeout + 1 s"
        );
        guard.release().await.unwrap();
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_clients_waiters_go_in_the_order_they_asked() {
    let Some(config) = common::plain_config() else {
        return;
    };
    let holder = common::connect(config.clone()).await;
    let waiters: Arc<RedisBackend> = Arc::new(common::connect(config).await);
    let name = unique_name("order");
    let guard = take(&holder, &name, Wait::TryOnce).await;
    let order = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for i in 0..5 {
        let (waiters, name, order) = (Arc::clone(&waiters), name.clone(), Arc::clone(&order));
        tasks.push(tokio::spawn(async move {
            let guard = take(&*waiters, &name, Wait::Timeout(Duration::from_secs(20))).await;
            order.lock().unwrap().push(i);
            guard.release().await.unwrap();
        }));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    guard.release().await.unwrap();
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(*order.lock().unwrap(), [0, 1, 2, 3, 4]);
    assert_eq!(waiters.active_names(), 0, "nothing left queued");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_is_permission_denied_without_the_password() {
    let Some(mut config) = common::plain_config() else {
        return;
    };
    config.credentials = Some(locks_redis::Credentials {
        username: None,
        password: "not-the-password-x9".into(),
    });
    let err = RedisBackend::connect(config).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{}", err.report());
    assert!(
        !err.report().contains("not-the-password-x9"),
        "{}",
        err.report()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_the_server_lacks_is_a_config_error() {
    let Some(mut config) = common::plain_config() else {
        return;
    };
    config.db = 99;
    let started = Instant::now();
    let err = RedisBackend::connect(config.clone()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidConfig, "{}", err.report());
    assert!(err.message().contains("database 99"), "{}", err.report());
    assert!(
        started.elapsed() < config.request_timeout,
        "refused at once"
    );
    // Another database than 0 works, and its locks are its own.
    config.db = 1;
    let other = common::connect(config).await;
    let plain = common::connect(common::plain_config().unwrap()).await;
    let name = unique_name("db");
    let a = take(&other, &name, Wait::TryOnce).await;
    let b = take(&plain, &name, Wait::TryOnce).await;
    a.release().await.unwrap();
    b.release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_names_our_holders_and_admits_what_it_cannot_know() {
    let Some(config) = common::plain_config() else {
        return;
    };
    let backend = common::connect(config.clone()).await;
    let peer = common::connect(config.clone()).await;
    let mut conn = raw(&config).await;
    let name = unique_name("status");

    let free = peer.status(&name, Scope::Global).await.unwrap();
    assert!(!free.is_held(), "{free:?}");
    assert!(
        free.notes.iter().any(|n| n.contains("no queue")),
        "{free:?}"
    );

    let guard = acquire(&backend, &request(&name, Wait::TryOnce).label("infinidat"))
        .await
        .unwrap();
    let held = peer.status(&name, Scope::Global).await.unwrap();
    let holder = held.holder.clone().expect("held");
    assert_eq!(holder.pid, Some(std::process::id()), "{held:?}");
    assert_eq!(holder.label.as_deref(), Some("infinidat"), "{held:?}");
    assert_eq!(holder.token, Some(guard.token()), "{held:?}");
    guard.release().await.unwrap();

    // A tooz holder's token says nothing about it: held, by someone unknown.
    let key = backend.key_of(&name);
    let () = redis::cmd("SET")
        .arg(&key)
        .arg("0123456789abcdef0123456789abcdef")
        .arg("PX")
        .arg(30_000)
        .query_async(&mut conn)
        .await
        .unwrap();
    let foreign = peer.status(&name, Scope::Global).await.unwrap();
    assert_eq!(
        foreign.holder,
        Some(locks_core::Party::default()),
        "{foreign:?}"
    );
    assert!(
        foreign
            .notes
            .iter()
            .any(|n| n.contains("does not say who it is")),
        "{foreign:?}"
    );
    let () = redis::cmd("DEL")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap();
}

/// A guard dropped (its delete handed to the background) and an acquire
/// cancelled, right before the runtime shuts down (as when a process exits):
/// closing the backend deletes both keys at once instead of leaving them for
/// the lock timeout (30 s here).
#[test]
fn closing_deletes_what_the_background_did_not() {
    let Some(mut config) = common::plain_config() else {
        return;
    };
    config.lock_timeout = Duration::from_secs(30);
    let (held, waited) = (unique_name("close-held"), unique_name("close-waited"));
    // One thread: the background deletes cannot run before the shutdown.
    let exiting = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    exiting.block_on(async {
        let backend = common::connect(config.clone()).await;
        let guard = take(&backend, &held, Wait::TryOnce).await;
        // An acquire cancelled at its first wait for the server: whatever it
        // may have set is left to a background delete too.
        let cancelled = request(&waited, Wait::Forever);
        let _ = tokio::time::timeout(Duration::ZERO, acquire(&backend, &cancelled)).await;
        // Dropped last, so that its background delete is never polled.
        drop(guard);
    });
    drop(exiting);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let peer = common::connect(config).await;
        let mut left = Vec::new();
        for name in [&held, &waited] {
            match acquire(&peer, &request(name, Wait::TryOnce)).await {
                Ok(guard) => guard.release().await.unwrap(),
                Err(e) if e.kind() == ErrorKind::WouldBlock => left.push(name.to_string()),
                Err(e) => panic!("{}", e.report()),
            }
        }
        assert!(left.is_empty(), "keys left behind after closing: {left:?}");
    });
}
