//! The `tracing` output of the client: a `locks.acquire` span per waiting
//! acquire that ends with its outcome, an event for an acquire at once, and
//! warnings when held locks are at risk or lost. Nothing is emitted without a
//! subscriber (that is `tracing`'s own contract); here a test subscriber
//! writes everything into a buffer.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use locks::{BackendUrls, Config, ErrorKind, LockState, Locks, Scope, Wait};
use locks_core::LockStateSender;

/// A writer into a shared buffer, for the subscriber.
#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl Write for Buffer {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Buffer {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// Runs `test` on a current-thread runtime with a subscriber that records
/// every level into the returned buffer.
fn traced(test: impl AsyncFnOnce()) -> String {
    let buffer = Buffer::default();
    let writer = buffer.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    tracing::subscriber::with_default(subscriber, || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(test());
    });
    buffer.text()
}

async fn memory_client() -> Locks {
    let config = Config {
        backends: BackendUrls {
            process: Some("memory://".to_owned()),
            ..BackendUrls::default()
        },
        ..Config::default()
    };
    Locks::open(config).await.unwrap()
}

#[test]
fn acquires_say_their_outcome_and_wait() {
    let text = traced(async || {
        let locks = memory_client().await;
        let held = locks
            .lock_name(Scope::Process, "traced", Wait::Forever)
            .await
            .unwrap();
        // Another task: the holder's own would be WouldDeadlock.
        let contender = locks.clone();
        let err = tokio::spawn(async move {
            let request = contender.raw_request(Scope::Process, "traced").unwrap();
            contender
                .acquire(request.wait(Wait::Timeout(Duration::from_millis(30))))
                .await
        })
        .await
        .unwrap();
        assert_eq!(err.unwrap_err().kind(), ErrorKind::Timeout);
        let token = held.token();
        held.release().await.unwrap();
        let again = locks
            .acquire(locks.raw_request(Scope::Process, "traced").unwrap())
            .await
            .unwrap();
        assert!(again.token() > token);
        again.release().await.unwrap();
    });
    assert!(
        text.contains("lock not acquired outcome=\"timeout\""),
        "the timeout's event: {text}"
    );
    assert!(
        text.contains("locks.acquire{lock=traced id=\"-\" scope=\"process\" backend=\"memory\" wait=waiting at most 30ms}"),
        "the span's fields: {text}"
    );
    assert!(
        text.contains("lock acquired at once"),
        "the fast path's event: {text}"
    );
}

#[test]
fn held_locks_at_risk_or_lost_are_warnings() {
    let text = traced(async || {
        let sender = LockStateSender::new();
        let _guard_side = sender.subscribe();
        sender.set(LockState::AtRisk);
        sender.set(LockState::Held);
        sender.set(LockState::Lost);
        // Lost is final: no event for a change that does not happen.
        sender.set(LockState::Held);
    });
    assert!(
        text.contains("WARN locks::state: held locks are at risk"),
        "{text}"
    );
    assert!(
        text.contains("INFO locks::state: held locks are safe again"),
        "{text}"
    );
    assert_eq!(text.matches("held locks are lost").count(), 1, "{text}");
    assert!(text.contains("guards=1"), "{text}");
}

#[test]
fn releases_say_how_long_the_lock_was_held() {
    let text = traced(async || {
        let locks = memory_client().await;
        let fast = locks
            .lock_name(Scope::Process, "held-a-while", Wait::Forever)
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        fast.release().await.unwrap();
        // A dropped guard ends its hold too.
        drop(
            locks
                .lock_name(Scope::Process, "dropped", Wait::Forever)
                .await
                .unwrap(),
        );
    });
    let released: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("locks::hold: lock released"))
        .collect();
    assert_eq!(released.len(), 2, "{text}");
    assert!(
        released[0].contains("lock=held-a-while id=\"-\" scope=\"process\" backend=\"memory\""),
        "{text}"
    );
    let held_ms: f64 = released[0]
        .split("held_ms=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|ms| ms.parse().ok())
        .unwrap_or_else(|| panic!("no held_ms in {}", released[0]));
    assert!(held_ms >= 20.0, "{held_ms} ms: {text}");
    assert!(released[1].contains("lock=dropped"), "{text}");
    // Inside the hold's span.
    assert!(
        released[0].contains("locks.hold{lock=held-a-while"),
        "{text}"
    );
}

/// A member that does not answer: requests move on to the next one, and the
/// move is a warning naming both (needs a test etcd, `LOCKS_TEST_ETCD`).
#[test]
fn an_etcd_failover_is_a_warning_naming_both_members() {
    let Some(etcd) = locks_core::testing::server_from_env("LOCKS_TEST_ETCD") else {
        return;
    };
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .to_string();
    let text = traced(async || {
        let config = Config {
            backends: BackendUrls {
                process: Some("memory://".to_owned()),
                global: Some(format!(
                    "etcd://{dead},{etcd}?prefix=/locks-tracing-{}/&connect_timeout=2",
                    std::process::id()
                )),
                ..BackendUrls::default()
            },
            ..Config::default()
        };
        let locks = Locks::open(config).await.unwrap();
        let guard = locks
            .lock_name(Scope::Global, "failover", Wait::Forever)
            .await
            .unwrap();
        guard.release().await.unwrap();
    });
    let line = text
        .lines()
        .find(|l| l.contains("WARN locks::failover"))
        .unwrap_or_else(|| panic!("no failover warning: {text}"));
    assert!(
        line.contains(&dead) && line.contains(etcd.as_str()) && line.contains("backend=\"etcd\""),
        "{line}"
    );
}

/// A ZooKeeper connection reset under a held lock: a warning that it broke,
/// then word that the session is connected again (needs `LOCKS_TEST_ZK`).
#[test]
fn a_zookeeper_reconnect_is_traced() {
    let Some(zk) = locks_core::testing::server_from_env("LOCKS_TEST_ZK") else {
        return;
    };
    let proxy = locks_fault_proxy::FaultProxy::start(zk.parse().unwrap()).unwrap();
    let text = traced(async || {
        let config = Config {
            backends: BackendUrls {
                process: Some("memory://".to_owned()),
                global: Some(format!(
                    "zookeeper://{}/locks-tracing-{}?timeout=4",
                    proxy.addr(),
                    std::process::id()
                )),
                ..BackendUrls::default()
            },
            ..Config::default()
        };
        let locks = Locks::open(config).await.unwrap();
        let guard = locks
            .lock_name(Scope::Global, "reconnect", Wait::Forever)
            .await
            .unwrap();
        proxy.reset_connections();
        // The session survives a reset well within its timeout.
        let mut state = guard.watch_state();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
        while *state.borrow_and_update() != LockState::AtRisk
            && tokio::time::Instant::now() < deadline
        {
            let _ = tokio::time::timeout_at(deadline, state.changed()).await;
        }
        while *state.borrow_and_update() != LockState::Held
            && tokio::time::Instant::now() < deadline + Duration::from_secs(3)
        {
            let _ = tokio::time::timeout(Duration::from_secs(1), state.changed()).await;
        }
        assert_eq!(guard.state(), LockState::Held);
        guard.release().await.unwrap();
    });
    let broke = text
        .find("WARN locks::failover: the ZooKeeper connection broke")
        .unwrap_or_else(|| panic!("no warning: {text}"));
    let again = text
        .find("INFO locks::failover: the ZooKeeper session is connected again")
        .unwrap_or_else(|| panic!("no reconnection: {text}"));
    assert!(broke < again, "{text}");
    // The held lock itself, with its fields: at risk, then safe again.
    let fields = "lock=reconnect id=\"-\" scope=\"global\" backend=\"zookeeper\"";
    let at_risk = text
        .lines()
        .position(|l| l.contains("WARN locks::state: lock at risk") && l.contains(fields))
        .unwrap_or_else(|| panic!("no per-lock warning: {text}"));
    let safe = text
        .lines()
        .position(|l| l.contains("INFO locks::state: lock safe again") && l.contains(fields))
        .unwrap_or_else(|| panic!("no per-lock recovery: {text}"));
    assert!(at_risk < safe, "{text}");
}

/// A ZooKeeper waiter knows how many contenders are ahead of it: the acquire
/// span says so (needs `LOCKS_TEST_ZK`).
#[test]
fn a_zookeeper_waiter_records_its_queue_position() {
    let Some(zk) = locks_core::testing::server_from_env("LOCKS_TEST_ZK") else {
        return;
    };
    let text = traced(async || {
        let config = Config {
            backends: BackendUrls {
                process: Some("memory://".to_owned()),
                global: Some(format!(
                    "zookeeper://{zk}/locks-tracing-queue-{}?timeout=4",
                    std::process::id()
                )),
                ..BackendUrls::default()
            },
            ..Config::default()
        };
        let holder = Locks::open(config.clone()).await.unwrap();
        let waiter = Locks::open(config).await.unwrap();
        let guard = holder
            .lock_name(Scope::Global, "queued", Wait::Forever)
            .await
            .unwrap();
        let err = waiter
            .lock_name(
                Scope::Global,
                "queued",
                Wait::Timeout(Duration::from_millis(300)),
            )
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Timeout);
        guard.release().await.unwrap();
    });
    assert!(
        text.lines()
            .any(|l| l.contains("locks.acquire{") && l.contains("queue_position=1")),
        "{text}"
    );
}
