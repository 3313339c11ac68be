//! Interoperation with tooz's redis driver (the real tooz 9.1.0 and redis-py
//! 8.2.0 from `ci/python.sh`), both ways, on one Redis server and through
//! Sentinel with a URL shaped as kolla-ansible writes it.
//!
//! The Rust side is a [`Locks`] client opened from a `compat = "openstack"`
//! configuration with prefix `cinder` and the very URL the Python side gets;
//! the Python side is `tests/python/peer.py tooz-redis URL NAME`, a tooz
//! coordinator (with its heartbeat) taking `b"cinder-" + NAME` as Cinder does.
//!
//! Needs `LOCKS_TEST_PYTHON`, and `LOCKS_TEST_REDIS` (+ `_PASSWORD`),
//! `LOCKS_TEST_REDIS_TLS` (+ `_PASSWORD`, `_CA`, `_CERT`, `_KEY`) or
//! `LOCKS_TEST_REDIS_SENTINELS` (+ `_SENTINEL_MASTER`, `_SENTINEL_PASSWORD`)
//! from `ci/redis.sh`; each test skips without them unless `CI=true`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use locks::{Config, ErrorKind, Locks, Scope, Wait};
use locks_core::testing::server_from_env;
use locks_tests::{Peer, python_from_env};

/// How long a blocked acquire must stay blocked to count as waiting.
const BLOCKED_FOR: Duration = Duration::from_millis(600);
/// How long the other side may take to get in after a release (redis-py's
/// blocking acquire sleeps 0.1 s between tries).
const HANDOVER: Duration = Duration::from_secs(10);
/// Alternations of the holder between tooz and us.
const ALTERNATIONS: usize = 200;

static COUNTER: AtomicUsize = AtomicUsize::new(0);

fn unique_name(test: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "redis-interop-{test}-{}-{nanos:x}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// The tooz URL of the plain server: `redis://:PASSWORD@HOST:PORT`.
fn plain_url() -> Option<String> {
    let server = server_from_env("LOCKS_TEST_REDIS")?;
    let password = std::env::var("LOCKS_TEST_REDIS_PASSWORD").unwrap_or_default();
    Some(format!("redis://:{password}@{server}?lock_timeout=5"))
}

/// The Sentinel setup's URL in kolla-ansible's shape: the first sentinel as
/// host, the others as `sentinel_fallback`, `db`, `socket_timeout`,
/// `retry_on_timeout`, and the master's password for the user `default`.
fn kolla_url() -> Option<String> {
    let sentinels = server_from_env("LOCKS_TEST_REDIS_SENTINELS")?;
    let master =
        std::env::var("LOCKS_TEST_REDIS_SENTINEL_MASTER").unwrap_or_else(|_| "locks".into());
    let password = std::env::var("LOCKS_TEST_REDIS_SENTINEL_PASSWORD").unwrap_or_default();
    let mut sentinels = sentinels.split(',');
    let first = sentinels.next().expect("a sentinel");
    let mut url = format!("redis://default:{password}@{first}?sentinel={master}");
    for other in sentinels {
        url.push_str(&format!("&sentinel_fallback={other}"));
    }
    url.push_str("&db=0&socket_timeout=60&retry_on_timeout=yes");
    Some(url)
}

/// The TLS server (`ci/redis.sh start-tls`) with tooz's TLS options: the CA,
/// and a client certificate and key.
fn tls_url() -> Option<String> {
    let server = server_from_env("LOCKS_TEST_REDIS_TLS")?;
    let var = |name: &str| std::env::var(name).unwrap_or_default();
    Some(format!(
        "redis://:{}@{server}?ssl=true&ssl_ca_certs={}&ssl_certfile={}&ssl_keyfile={}&lock_timeout=5",
        var("LOCKS_TEST_REDIS_TLS_PASSWORD"),
        var("LOCKS_TEST_REDIS_TLS_CA"),
        var("LOCKS_TEST_REDIS_TLS_CERT"),
        var("LOCKS_TEST_REDIS_TLS_KEY"),
    ))
}

struct Setup {
    python: std::path::PathBuf,
    url: String,
    locks: Locks,
    _dir: tempfile::TempDir,
    name: String,
}

impl Setup {
    async fn new(url: Option<String>, test: &str) -> Option<Setup> {
        let python = python_from_env()?;
        let url = url?;
        let dir = tempfile::tempdir().expect("temp dir");
        let text = format!(
            "compat = \"openstack\"\nprefix = \"cinder\"\nlock_path = \"{}\"\n[backends]\nglobal = \"{url}\"\n",
            dir.path().display()
        );
        let config = Config::from_toml_str(&text, dir.path(), "redis interop test")
            .unwrap_or_else(|e| panic!("config: {}", e.report()));
        let locks = Locks::open(config)
            .await
            .unwrap_or_else(|e| panic!("open {url}: {}", e.report()));
        Some(Setup {
            python,
            url,
            locks,
            _dir: dir,
            name: unique_name(test),
        })
    }

    fn peer(&self) -> Peer {
        Peer::start(&self.python, ["tooz-redis", &self.url, &self.name], &[])
    }

    async fn try_once(&self) -> locks::Result<locks::LockGuard> {
        self.locks
            .lock_name(Scope::Global, &self.name, Wait::TryOnce)
            .await
    }
}

/// tooz holding excludes our try-once and our wait pends until its release;
/// ours holding makes tooz's non-blocking acquire fail and its blocking one
/// pend until ours is released. Both use the key `_tooz_cinder-NAME_lock`.
async fn both_ways(setup: &Setup) {
    let mut peer = setup.peer();
    peer.ask(
        "key",
        &format!("KEY _tooz_cinder-{}_lock", setup.name),
        HANDOVER,
    );

    peer.ask("try", "GOT", HANDOVER);
    let err = setup.try_once().await.expect_err("tooz holds the lock");
    assert_eq!(err.kind(), ErrorKind::WouldBlock, "{}", err.report());
    let waiter = {
        let (locks, name) = (setup.locks.clone(), setup.name.clone());
        tokio::spawn(async move {
            let guard = locks
                .lock_name(Scope::Global, &name, Wait::Timeout(Duration::from_secs(30)))
                .await;
            (guard, Instant::now())
        })
    };
    tokio::time::sleep(BLOCKED_FOR).await;
    assert!(!waiter.is_finished(), "our wait pends while tooz holds");
    let released = Instant::now();
    peer.ask("release", "RELEASED", HANDOVER);
    let (guard, got) = waiter.await.expect("waiter task");
    let guard = guard.unwrap_or_else(|e| panic!("our wait after tooz's release: {}", e.report()));
    eprintln!(
        "{}: tooz release -> we hold in {:?}",
        setup.url.split('@').next_back().unwrap_or(""),
        got.saturating_duration_since(released)
    );

    peer.ask("try", "BUSY", HANDOVER);
    peer.send("acquire");
    peer.expect_silence(BLOCKED_FOR);
    let released = Instant::now();
    guard.release().await.expect("release");
    peer.expect("HELD", HANDOVER);
    eprintln!("we release -> tooz holds in {:?}", released.elapsed());
    let err = setup.try_once().await.expect_err("tooz holds the lock");
    assert_eq!(err.kind(), ErrorKind::WouldBlock, "{}", err.report());
    peer.ask("release", "RELEASED", HANDOVER);
    peer.quit();
}

/// The holder alternates between tooz and us: each side's hold shuts the
/// other out, and each release lets it in at once.
async fn alternations(setup: &Setup) {
    let mut peer = setup.peer();
    let started = Instant::now();
    for round in 0..ALTERNATIONS {
        peer.ask("try", "GOT", HANDOVER);
        let err = setup
            .try_once()
            .await
            .expect_err("tooz holds the lock: our try-once must fail");
        assert_eq!(
            err.kind(),
            ErrorKind::WouldBlock,
            "round {round}: {}",
            err.report()
        );
        peer.ask("release", "RELEASED", HANDOVER);
        let guard = setup.try_once().await.unwrap_or_else(|e| {
            panic!(
                "round {round}: our try-once after tooz's release: {}",
                e.report()
            )
        });
        peer.ask("try", "BUSY", HANDOVER);
        guard.release().await.expect("release");
    }
    eprintln!("{ALTERNATIONS} alternations in {:?}", started.elapsed());
    peer.quit();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tooz_redis_both_ways() {
    let Some(setup) = Setup::new(plain_url(), "both").await else {
        return;
    };
    both_ways(&setup).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tooz_redis_alternations() {
    let Some(setup) = Setup::new(plain_url(), "alternate").await else {
        return;
    };
    alternations(&setup).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tooz_redis_tls_both_ways() {
    let Some(setup) = Setup::new(tls_url(), "tls").await else {
        return;
    };
    both_ways(&setup).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tooz_redis_sentinel_kolla_url_both_ways() {
    let Some(setup) = Setup::new(kolla_url(), "kolla").await else {
        return;
    };
    both_ways(&setup).await;
    alternations(&setup).await;
}

/// Opening a `redis://` Global backend warns about asynchronous replication
/// and shows neither the master's nor the sentinels' password anywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opening_warns_and_shows_no_password() {
    let Some(url) = kolla_url() else {
        return;
    };
    let password = std::env::var("LOCKS_TEST_REDIS_SENTINEL_PASSWORD").unwrap_or_default();
    // The fixture's sentinels take no password; tooz sends this one only
    // when asked to, and so do we.
    let url = format!("{url}&sentinel_password=sentinel-secret-7");
    let dir = tempfile::tempdir().expect("temp dir");
    let text = format!(
        "compat = \"openstack\"\nprefix = \"cinder\"\nlock_path = \"{}\"\n[backends]\nglobal = \"{url}\"\n",
        dir.path().display()
    );
    let config = Config::from_toml_str(&text, dir.path(), "redis warning test").expect("config");
    // The fixture's sentinels have no password, so they refuse AUTH: a
    // typed error at once, naming the sentinels, without either password.
    let err = Locks::open(config)
        .await
        .expect_err("the sentinels refuse the sentinel password");
    assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{}", err.report());
    let first = std::env::var("LOCKS_TEST_REDIS_SENTINELS").unwrap_or_default();
    let first = first.split(',').next().unwrap_or_default();
    assert!(err.report().contains(first), "{}", err.report());
    let shown = err.report();
    assert!(
        !shown.contains(&password) && !shown.contains("sentinel-secret-7"),
        "{shown}"
    );

    let Some(setup) = Setup::new(kolla_url(), "warning").await else {
        return;
    };
    let warnings: Vec<&str> = setup.locks.warnings_for(Scope::Global).collect();
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("Redis replicates asynchronously")),
        "{warnings:?}"
    );
    let shown = format!(
        "{warnings:?} {} {:?}",
        setup.locks.backend_url(Scope::Global),
        setup.locks.backend(Scope::Global)
    );
    assert!(!shown.contains(&password), "{shown}");
}
