//! What a cluster exists to survive (issue 15): member and leader failures,
//! loss of quorum, partitions and blips between one client and the server,
//! lost replies, clients that quit while waiting.
//!
//! Tests that kill members start a 3-member cluster of their own with
//! `ci/etcd.sh start-cluster` (so they cannot disturb other tests), and run
//! one at a time. Tests with network faults put the in-tree TCP proxy
//! (`locks-fault-proxy`) between one client and a server of their own. All
//! run when `LOCKS_TEST_ETCD_CLUSTER` is set (ci/test.sh sets it up; it is
//! the sign that etcd is installed) and fail without it under `CI=true`.
//! Instants are stamped with CLOCK_MONOTONIC.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use etcd_client::{EventType, WatchOptions};
use locks_core::{ErrorKind, LockGuard, LockState, Wait, acquire};
use locks_etcd::{EtcdBackend, EtcdConfig, Layout};
use locks_fault_proxy::{Direction, Fault, FaultProxy};

/// Whether the cluster fixture is available (panics under `CI=true` when not).
fn cluster_fixture() -> bool {
    locks_core::testing::server_from_env("LOCKS_TEST_ETCD_CLUSTER").is_some()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// Records every state a guard goes through, until dropped.
struct States {
    seen: Arc<Mutex<Vec<LockState>>>,
    task: tokio::task::JoinHandle<()>,
}

impl States {
    fn of(guard: &LockGuard) -> States {
        let mut rx = guard.watch_state();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let task = {
            let seen = Arc::clone(&seen);
            tokio::spawn(async move {
                loop {
                    let state = *rx.borrow_and_update();
                    {
                        let mut seen = seen.lock().unwrap();
                        if seen.last() != Some(&state) {
                            seen.push(state);
                        }
                    }
                    if rx.changed().await.is_err() {
                        return;
                    }
                }
            })
        };
        States { seen, task }
    }

    fn seen(&self) -> Vec<LockState> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for States {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn with_ttl(mut config: EtcdConfig, ttl: u64) -> EtcdConfig {
    config.ttl = Duration::from_secs(ttl);
    config
}

/// Counts the puts and deletes of keys under a prefix (by a watch of
/// another client), from its start until [`stop`](Self::stop).
struct Writes {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<(usize, usize)>,
}

impl Writes {
    async fn start(addr: &str, prefix: &str) -> Writes {
        let mut watcher = raw(addr).await;
        let mut stream = watcher
            .watch(prefix, Some(WatchOptions::new().with_prefix()))
            .await
            .expect("watch");
        // The first message confirms the watch.
        stream.message().await.expect("watch created");
        let (stop, mut stopped) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let _keep = watcher;
            let (mut puts, mut deletes) = (0, 0);
            loop {
                tokio::select! {
                    _ = &mut stopped => return (puts, deletes),
                    message = stream.message() => {
                        let response = message.expect("watch").expect("watch open");
                        for event in response.events() {
                            match event.event_type() {
                                EventType::Put => puts += 1,
                                EventType::Delete => deletes += 1,
                            }
                        }
                    }
                }
            }
        });
        Writes { stop, task }
    }

    /// (puts, deletes) seen so far (give the watch a moment first).
    async fn stop(self) -> (usize, usize) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let _ = self.stop.send(());
        self.task.await.expect("watch task")
    }
}

/// Waits until `count` keys exist under `prefix`, or panics after 10 s.
async fn until_keys(addr: &str, prefix: &str, count: usize) -> Vec<(String, i64, i64)> {
    let mut raw = raw(addr).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let keys = keys_under(&mut raw, prefix.as_bytes()).await;
        if keys.len() == count {
            return keys;
        }
        assert!(
            Instant::now() < deadline,
            "expected {count} keys under {prefix}, have {keys:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The leader is killed with SIGKILL while four clients take turns on one
/// name, a fifth holds another name and a sixth waits behind it; the leader
/// comes back 3 s later. Every acquire and release succeeds, no two holdings
/// overlap, the long holding is never `Lost`, and the waiter keeps its key
/// (its place in the queue). Half of the clients list the leader first (so
/// they talk to it), half a follower.
#[test]
fn leader_killed_mid_run_every_operation_completes() {
    if !cluster_fixture() {
        return;
    }
    let _turn = one_at_a_time();
    let cluster = DedicatedCluster::start(3);
    runtime().block_on(async {
        let leader = cluster.leader();
        let follower = if leader == 1 { 2 } else { 1 };
        let ordered = |first: usize| {
            // The TTL: an election under a loaded CI (seen up to
            // 2.4 s here) must fit in the TTL less the lost margin.
            let mut config = with_ttl(cluster.config(Layout::Mutex), 5);
            config.endpoints.rotate_left(first - 1);
            config
        };
        let all = cluster.members.join(",");

        let long_name = name("cluster-long");
        let long_holder = connect_with(ordered(leader)).await;
        let long_guard = acquire(&long_holder, &request(&long_name, Wait::TryOnce))
            .await
            .expect("long holder");
        let long_states = States::of(&long_guard);
        let queued = Arc::new(connect_with(ordered(leader)).await);
        let queued_task = {
            let (queued, long_name) = (Arc::clone(&queued), long_name.clone());
            tokio::spawn(async move {
                acquire(
                    &*queued,
                    &request(&long_name, Wait::Timeout(Duration::from_secs(60))),
                )
                .await
            })
        };
        let keys = until_keys(&all, &format!("{long_name}/"), 2).await;
        let queued_rev = keys.iter().map(|k| k.2).max().expect("the waiter's key");

        let busy = name("cluster-busy");
        let stop = Arc::new(AtomicBool::new(false));
        let holdings = Arc::new(Mutex::new(Vec::<(u64, u64, u64)>::new()));
        let errors = Arc::new(Mutex::new(Vec::<String>::new()));
        let mut workers = Vec::new();
        for w in 0..4 {
            let config = ordered(if w % 2 == 0 { leader } else { follower });
            let (busy, stop, holdings, errors) = (
                busy.clone(),
                Arc::clone(&stop),
                Arc::clone(&holdings),
                Arc::clone(&errors),
            );
            workers.push(tokio::spawn(async move {
                let backend = connect_with(config).await;
                while !stop.load(Ordering::Relaxed) {
                    let guard = match acquire(
                        &backend,
                        &request(&busy, Wait::Timeout(Duration::from_secs(30))),
                    )
                    .await
                    {
                        Ok(guard) => guard,
                        Err(e) => {
                            errors
                                .lock()
                                .unwrap()
                                .push(format!("acquire: {}", e.report()));
                            continue;
                        }
                    };
                    let entered = monotonic_ns();
                    tokio::time::sleep(Duration::from_millis(2)).await;
                    let lost = guard.is_lost();
                    let exited = monotonic_ns();
                    let token = guard.token();
                    if let Err(e) = guard.release().await {
                        errors
                            .lock()
                            .unwrap()
                            .push(format!("release: {}", e.report()));
                    }
                    if lost {
                        errors.lock().unwrap().push("a holding was lost".to_owned());
                    }
                    holdings.lock().unwrap().push((entered, exited, token));
                }
            }));
        }

        tokio::time::sleep(Duration::from_secs(1)).await;
        let before = holdings.lock().unwrap().len();
        cluster.stop_member(leader, "KILL");
        let killed = Instant::now();
        let killed_ns = monotonic_ns();
        tokio::time::sleep(Duration::from_secs(3)).await;
        cluster.start_member(leader);
        tokio::time::sleep(Duration::from_secs(2)).await;
        stop.store(true, Ordering::Relaxed);
        for worker in workers {
            worker.await.expect("worker");
        }

        let errors = errors.lock().unwrap().clone();
        assert!(errors.is_empty(), "operations failed: {errors:#?}");
        let mut holdings = holdings.lock().unwrap().clone();
        holdings.sort_unstable();
        let after = holdings.len();
        assert!(after > before, "nobody held the lock after the kill");
        for pair in holdings.windows(2) {
            assert!(
                pair[1].0 > pair[0].1,
                "holdings overlap: {:?} and {:?}",
                pair[0],
                pair[1]
            );
            assert!(pair[1].2 > pair[0].2, "token regression: {pair:?}");
        }
        let next_entry = holdings
            .iter()
            .map(|h| h.0)
            .filter(|&entered| entered > killed_ns)
            .min()
            .expect("a holding after the kill");
        eprintln!(
            "leader (member {leader}) killed after {before} holdings; {after} in all, \
             0 overlaps; next holder entered {:?} after the kill ({:?} from the kill to the end)",
            Duration::from_nanos(next_entry - killed_ns),
            killed.elapsed()
        );

        let seen = long_states.seen();
        assert!(
            !seen.contains(&LockState::Lost),
            "the long holding was lost: {seen:?}"
        );
        assert_eq!(long_guard.state(), LockState::Held, "states {seen:?}");
        eprintln!("long holder's states across the kill: {seen:?}");
        assert!(!queued_task.is_finished(), "the waiter stopped waiting");
        long_guard.release().await.expect("long release");
        let next = tokio::time::timeout(Duration::from_secs(10), queued_task)
            .await
            .expect("the waiter gets the lock")
            .expect("waiter task")
            .unwrap_or_else(|e| panic!("the waiter failed: {}", e.report()));
        assert_eq!(
            next.token(),
            u64::try_from(queued_rev).unwrap(),
            "the waiter kept its key, so its place"
        );
        next.release().await.expect("release");
    });
}

/// A member down from the start (the first one listed): clients connect,
/// acquire and release through the others, ten times over.
#[test]
fn member_down_from_the_start_is_skipped() {
    if !cluster_fixture() {
        return;
    }
    let _turn = one_at_a_time();
    let cluster = DedicatedCluster::start(3);
    cluster.stop_member(1, "KILL");
    runtime().block_on(async {
        for layout in [Layout::Mutex, Layout::Tooz] {
            let lock = name("member-down");
            for round in 0..5 {
                let config = with_ttl(cluster.config(layout), 3);
                let client = EtcdBackend::connect(config)
                    .await
                    .unwrap_or_else(|e| panic!("{layout} round {round}: connect: {}", e.report()));
                let guard = acquire(&client, &request(&lock, Wait::TryOnce))
                    .await
                    .unwrap_or_else(|e| panic!("{layout} round {round}: acquire: {}", e.report()));
                guard
                    .release()
                    .await
                    .unwrap_or_else(|e| panic!("{layout} round {round}: release: {}", e.report()));
            }
        }
    });
}

/// A waiter cut off from the member its requests and its watch go to (a
/// partition between that client and that member only; the member itself
/// is fine): its keep-alive fails over to another member and so does its
/// watch, so it keeps its place and gets the lock when the holder releases.
#[test]
fn waiter_cut_off_from_its_member_follows_the_failover() {
    if !cluster_fixture() {
        return;
    }
    let _turn = one_at_a_time();
    let cluster = DedicatedCluster::start(3);
    let proxies: Vec<FaultProxy> = cluster
        .members
        .iter()
        .map(|m| FaultProxy::start(m.parse().expect("address")).expect("proxy"))
        .collect();
    runtime().block_on(async {
        let all = cluster.members.join(",");
        let holder = connect_with(with_ttl(cluster.config(Layout::Mutex), 3)).await;
        let mut through_proxies = cluster.config(Layout::Mutex);
        through_proxies.endpoints = proxies.iter().map(|p| p.addr().to_string()).collect();
        let waiter = Arc::new(connect_with(with_ttl(through_proxies, 3)).await);
        let lock = name("cut-member");
        let guard = acquire(&holder, &request(&lock, Wait::TryOnce))
            .await
            .expect("acquire");
        let waiting = {
            let (waiter, lock) = (Arc::clone(&waiter), lock.clone());
            tokio::spawn(async move {
                acquire(
                    &*waiter,
                    &request(&lock, Wait::Timeout(Duration::from_secs(30))),
                )
                .await
            })
        };
        let keys = until_keys(&all, &format!("{lock}/"), 2).await;
        let queued_rev = keys.iter().map(|k| k.2).max().expect("the waiter's key");

        // The waiter talks to the first member listed; give it the time to
        // open its watch there.
        tokio::time::sleep(Duration::from_millis(500)).await;
        proxies[0].set(Fault::Blackhole);
        tokio::time::sleep(Duration::from_millis(1500)).await;
        guard.release().await.expect("release");
        let released = Instant::now();
        let next = tokio::time::timeout(Duration::from_secs(10), waiting)
            .await
            .expect("the waiter gets the lock while still cut off from its first member")
            .expect("waiter task")
            .unwrap_or_else(|e| panic!("the waiter failed: {}", e.report()));
        eprintln!(
            "the cut-off waiter entered {:?} after the release",
            released.elapsed()
        );
        assert_eq!(
            next.token(),
            u64::try_from(queued_rev).unwrap(),
            "the waiter kept its key, so its place"
        );
        next.release().await.expect("release");
        proxies[0].set(Fault::Pass);
    });
}

/// Two of three members killed: the holder goes `AtRisk`, then `Lost`
/// within the TTL; a waiter ends at its timeout with `Unavailable` naming
/// the members that are down; once they are back, the same clients acquire
/// again without being reopened, and the next holder enters only after the
/// first was told `Lost`.
#[test]
fn quorum_loss_then_quorum_back() {
    if !cluster_fixture() {
        return;
    }
    let _turn = one_at_a_time();
    let cluster = DedicatedCluster::start(3);
    runtime().block_on(async {
        let ttl = 3;
        let holder = connect_with(with_ttl(cluster.config(Layout::Mutex), ttl)).await;
        let waiter = Arc::new(connect_with(with_ttl(cluster.config(Layout::Mutex), ttl)).await);
        let lock = name("quorum");
        let guard = acquire(&holder, &request(&lock, Wait::TryOnce))
            .await
            .expect("acquire");
        let states = States::of(&guard);
        let limit = Duration::from_secs(6);
        let waiting = {
            let (waiter, lock) = (Arc::clone(&waiter), lock.clone());
            tokio::spawn(async move {
                let start = Instant::now();
                let got = acquire(&*waiter, &request(&lock, Wait::Timeout(limit))).await;
                (got.map(|g| g.token()), start.elapsed())
            })
        };
        until_keys(&cluster.members.join(","), &format!("{lock}/"), 2).await;

        let down = [1, 2];
        for i in down {
            cluster.stop_member(i, "KILL");
        }
        let killed = Instant::now();
        tokio::time::timeout(Duration::from_secs(ttl + 3), guard.lost())
            .await
            .unwrap_or_else(|_| panic!("not lost; states {:?}", states.seen()));
        let lost_after = killed.elapsed();
        let lost_at = monotonic_ns();
        // (The recorder sees the last change a moment later.)
        tokio::time::sleep(Duration::from_millis(50)).await;
        let seen = states.seen();
        // (A leader that lost its followers may still renew the lease once,
        // until it notices and steps down: at risk, held, at risk, lost.)
        assert!(
            seen.first() == Some(&LockState::Held)
                && seen.ends_with(&[LockState::AtRisk, LockState::Lost]),
            "held, at risk, lost: {seen:?}"
        );
        // Within a TTL of the last renewal, which may come up to the
        // election timeout (1 s) after the kill.
        assert!(
            lost_after < Duration::from_secs(ttl + 1),
            "lost only after {lost_after:?}"
        );

        let (got, waited) = waiting.await.expect("waiter task");
        let err = got.expect_err("no lock without a quorum");
        eprintln!("waiter after {waited:?}: {}", err.report());
        assert_eq!(err.kind(), ErrorKind::Unavailable, "{}", err.report());
        assert!(
            waited >= limit - Duration::from_millis(100),
            "the waiter gave up after {waited:?}, before its {limit:?} timeout"
        );
        for i in down {
            assert!(
                err.message().contains(&cluster.members[i - 1]),
                "the error names member {i}: {err}"
            );
        }

        for i in down {
            cluster.start_member(i);
        }
        let back = Instant::now();
        let err = guard.release().await.expect_err("the lock was lost");
        assert_eq!(err.kind(), ErrorKind::Lost, "{}", err.report());
        let again = acquire(
            &*waiter,
            &request(&lock, Wait::Timeout(Duration::from_secs(20))),
        )
        .await
        .unwrap_or_else(|e| panic!("after the quorum came back: {}", e.report()));
        let entered = monotonic_ns();
        assert!(entered > lost_at);
        eprintln!(
            "lost {lost_after:?} after the kill; acquired {:?} after the members came back",
            back.elapsed()
        );
        again.release().await.expect("release");
        let mine = acquire(
            &holder,
            &request(&lock, Wait::Timeout(Duration::from_secs(20))),
        )
        .await
        .unwrap_or_else(|e| panic!("the first client after the outage: {}", e.report()));
        mine.release().await.expect("release");
    });
}

/// A holder cut off from the server by a partition (proxy blackholes) is told
/// `Lost` at least min(TTL/5, 1 s) before the server expires its lease (seen
/// by a watch of another client on the holder's key) and before the next
/// holder enters.
#[test]
fn partitioned_holder_is_told_lost_before_the_server_expires_its_lease() {
    if !cluster_fixture() {
        return;
    }
    let etcd = DedicatedEtcd::start();
    let proxy = FaultProxy::start(etcd.addr.parse().expect("address")).expect("proxy");
    runtime().block_on(async {
        let ttl = 3;
        // min(TTL/5, 1 s)
        let needed = Duration::from_millis(ttl * 1000 / 5).min(Duration::from_secs(1));
        let holder = connect_with(with_ttl(
            config(&proxy.addr().to_string(), Layout::Mutex),
            ttl,
        ))
        .await;
        let other = Arc::new(connect_with(with_ttl(config(&etcd.addr, Layout::Mutex), 10)).await);
        let lock = name("partition");
        let guard = acquire(&holder, &request(&lock, Wait::TryOnce))
            .await
            .expect("acquire");
        let keys = until_keys(&etcd.addr, &format!("{lock}/"), 1).await;
        let holder_key = keys[0].0.clone();

        // Another client watches the holder's key go: the server expired the lease.
        let mut watcher = raw(&etcd.addr).await;
        let mut stream = watcher
            .watch(holder_key.clone(), Some(WatchOptions::new()))
            .await
            .expect("watch");
        let expired = tokio::spawn(async move {
            while let Some(response) = stream.message().await.expect("watch message") {
                if response
                    .events()
                    .iter()
                    .any(|e| e.event_type() == EventType::Delete)
                {
                    return monotonic_ns();
                }
            }
            panic!("the watch ended");
        });
        let next = {
            let (other, lock) = (Arc::clone(&other), lock.clone());
            tokio::spawn(async move {
                let guard = acquire(
                    &*other,
                    &request(&lock, Wait::Timeout(Duration::from_secs(20))),
                )
                .await
                .expect("the next holder");
                (monotonic_ns(), guard)
            })
        };
        tokio::time::sleep(Duration::from_millis(300)).await;

        proxy.set(Fault::Blackhole);
        let partitioned = proxy.faulted_at().expect("stamped");
        tokio::time::timeout(Duration::from_secs(ttl + 1), guard.lost())
            .await
            .expect("the holder is told Lost");
        let lost = monotonic_ns();
        let expired = expired.await.expect("watch task");
        let (entered, next_guard) = next.await.expect("next holder task");
        let ms = |ns: u64| Duration::from_nanos(ns);
        eprintln!(
            "partition -> Lost {:?}; Lost -> server expiry {:?}; Lost -> next holder {:?} (needed {needed:?})",
            ms(lost - partitioned),
            ms(expired.saturating_sub(lost)),
            ms(entered.saturating_sub(lost)),
        );
        assert!(
            expired >= lost + u64::try_from(needed.as_nanos()).unwrap(),
            "told Lost only {:?} before the server expired the lease",
            ms(expired.saturating_sub(lost))
        );
        assert!(
            entered >= lost + u64::try_from(needed.as_nanos()).unwrap(),
            "the next holder entered only {:?} after the holder was told Lost",
            ms(entered.saturating_sub(lost))
        );
        assert!(next_guard.token() > guard.token());
        proxy.set(Fault::Pass);
        next_guard.release().await.expect("release");
        let err = guard.release().await.expect_err("lost");
        assert_eq!(err.kind(), ErrorKind::Lost, "{}", err.report());
    });
}

/// A blip of half the TTL (every connection reset, new ones refused) leaves
/// the holder holding (at most `AtRisk` meanwhile) and the waiter waiting
/// with its key, so in its place.
#[test]
fn blip_of_half_the_ttl_leaves_holders_holding() {
    if !cluster_fixture() {
        return;
    }
    let etcd = DedicatedEtcd::start();
    let proxy = FaultProxy::start(etcd.addr.parse().expect("address")).expect("proxy");
    let via_proxy = proxy.addr().to_string();
    runtime().block_on(async {
        let ttl = 3;
        for layout in [Layout::Mutex, Layout::Tooz] {
            let holder = connect_with(with_ttl(config(&via_proxy, layout), ttl)).await;
            let waiter = Arc::new(connect_with(with_ttl(config(&via_proxy, layout), ttl)).await);
            let lock = name("blip");
            let guard = acquire(&holder, &request(&lock, Wait::TryOnce))
                .await
                .expect("acquire");
            let states = States::of(&guard);
            let waiting = {
                let (waiter, lock) = (Arc::clone(&waiter), lock.clone());
                tokio::spawn(async move {
                    acquire(
                        &*waiter,
                        &request(&lock, Wait::Timeout(Duration::from_secs(30))),
                    )
                    .await
                })
            };
            let queued_rev = match layout {
                Layout::Mutex => {
                    let keys = until_keys(&etcd.addr, &format!("{lock}/"), 2).await;
                    keys.iter().map(|k| k.2).max()
                }
                Layout::Tooz => {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    None
                }
            };

            // Several blips, so that some start just before a keep-alive was due.
            for _ in 0..3 {
                proxy.set(Fault::Refuse);
                proxy.reset_connections();
                tokio::time::sleep(Duration::from_millis(ttl * 1000 / 2)).await;
                proxy.set(Fault::Pass);
                tokio::time::sleep(Duration::from_millis(700)).await;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
            let seen = states.seen();
            eprintln!("{layout}: holder's states across the blips: {seen:?}");
            assert!(!seen.contains(&LockState::Lost), "{layout}: lost: {seen:?}");
            assert_eq!(guard.state(), LockState::Held, "{layout}: {seen:?}");
            assert!(
                !waiting.is_finished(),
                "{layout}: the waiter stopped waiting"
            );
            if let Some(rev) = queued_rev {
                let keys = until_keys(&etcd.addr, &format!("{lock}/"), 2).await;
                assert!(
                    keys.iter().any(|k| k.2 == rev),
                    "{layout}: the waiter's key changed: {keys:?}"
                );
            }
            guard.release().await.expect("release after the blips");
            let next = tokio::time::timeout(Duration::from_secs(10), waiting)
                .await
                .expect("the waiter gets the lock")
                .expect("waiter task")
                .unwrap_or_else(|e| panic!("{layout}: the waiter failed: {}", e.report()));
            if let Some(rev) = queued_rev {
                assert_eq!(
                    next.token(),
                    u64::try_from(rev).unwrap(),
                    "{layout}: kept its place"
                );
            }
            next.release().await.expect("release");
        }
    });
}

/// The reply to the create of a waiter's key is lost and its connection
/// reset: the acquire retries without creating a second contender, keeps the
/// key it created, and gets the lock when the holder releases.
#[test]
fn lost_create_reply_is_retried_without_a_second_contender() {
    if !cluster_fixture() {
        return;
    }
    let etcd = DedicatedEtcd::start();
    let proxy = FaultProxy::start(etcd.addr.parse().expect("address")).expect("proxy");
    let via_proxy = proxy.addr().to_string();
    runtime().block_on(async {
        for layout in [Layout::Mutex, Layout::Tooz] {
            let holder = connect_with(config(&etcd.addr, layout)).await;
            // A long TTL: no keep-alive crosses the proxy during the test.
            let waiter = Arc::new(connect_with(with_ttl(config(&via_proxy, layout), 60)).await);
            let lock = name("lost-reply");
            let prefix = match layout {
                Layout::Mutex => format!("{lock}/"),
                Layout::Tooz => format!("/tooz/locks{lock}"),
            };
            let guard = acquire(&holder, &request(&lock, Wait::TryOnce))
                .await
                .expect("acquire");
            tokio::time::sleep(Duration::from_millis(100)).await;
            let writes = Writes::start(&etcd.addr, &prefix).await;
            proxy.lose_next(Direction::Reply);
            let waiting = {
                let (waiter, lock) = (Arc::clone(&waiter), lock.clone());
                tokio::spawn(async move {
                    acquire(
                        &*waiter,
                        &request(&lock, Wait::Timeout(Duration::from_secs(20))),
                    )
                    .await
                })
            };
            let lost = eventually(Duration::from_secs(5), || async {
                !proxy.losing(Direction::Reply)
            })
            .await;
            assert!(lost, "{layout}: no reply crossed the proxy");
            tokio::time::sleep(Duration::from_millis(500)).await;
            let mut raw = raw(&etcd.addr).await;
            let keys = keys_under(&mut raw, prefix.as_bytes()).await;
            assert!(
                !waiting.is_finished(),
                "{layout}: the waiter gave up: {:?}",
                waiting
                    .await
                    .map(|r| r.map(|g| g.token()).map_err(|e| e.report()))
            );
            let expected = match layout {
                Layout::Mutex => 2,
                Layout::Tooz => 1,
            };
            assert_eq!(
                keys.len(),
                expected,
                "{layout}: one key per contender: {keys:?}"
            );
            let (puts, deletes) = writes.stop().await;
            assert_eq!(
                (puts, deletes),
                (expected - 1, 0),
                "{layout}: the waiter's key was written once and never deleted (puts, deletes)"
            );
            let queued_rev = keys.iter().map(|k| k.2).max().expect("keys");
            guard.release().await.expect("release");
            let next = tokio::time::timeout(Duration::from_secs(10), waiting)
                .await
                .expect("the waiter gets the lock")
                .expect("waiter task")
                .unwrap_or_else(|e| panic!("{layout}: the waiter failed: {}", e.report()));
            if layout == Layout::Mutex {
                assert_eq!(
                    next.token(),
                    u64::try_from(queued_rev).unwrap(),
                    "the waiter kept the key whose reply was lost"
                );
            }
            next.release().await.expect("release");
        }
    });
}

/// The same with a try-once acquire of a free lock whose create reply is
/// lost: the retry finds the key it created and takes the lock with it.
#[test]
fn lost_create_reply_of_a_free_lock_takes_it_once() {
    if !cluster_fixture() {
        return;
    }
    let etcd = DedicatedEtcd::start();
    let proxy = FaultProxy::start(etcd.addr.parse().expect("address")).expect("proxy");
    runtime().block_on(async {
        let client = connect_with(with_ttl(
            config(&proxy.addr().to_string(), Layout::Mutex),
            60,
        ))
        .await;
        let lock = name("lost-reply-free");
        tokio::time::sleep(Duration::from_millis(100)).await;
        let writes = Writes::start(&etcd.addr, &format!("{lock}/")).await;
        proxy.lose_next(Direction::Reply);
        let guard = acquire(
            &client,
            &request(&lock, Wait::Timeout(Duration::from_secs(10))),
        )
        .await
        .unwrap_or_else(|e| panic!("acquire after a lost reply: {}", e.report()));
        assert!(!proxy.losing(Direction::Reply), "no reply was lost");
        let mut raw = raw(&etcd.addr).await;
        let keys = keys_under(&mut raw, format!("{lock}/").as_bytes()).await;
        assert_eq!(keys.len(), 1, "{keys:?}");
        assert_eq!(
            writes.stop().await,
            (1, 0),
            "the key was created once and never deleted (puts, deletes)"
        );
        assert_eq!(guard.token(), u64::try_from(keys[0].2).unwrap());
        guard.release().await.expect("release");
    });
}

/// etcd issue 11456 (Jepsen): a lock must not go to a waiter whose lease
/// expired while it waited. The waiter is partitioned past its TTL (its key
/// expires with its lease), the holder releases, a third client takes the
/// lock; healed, the first waiter must wait for that client, and gets a
/// larger token.
#[test]
fn expired_waiter_is_not_granted_the_lock() {
    if !cluster_fixture() {
        return;
    }
    let etcd = DedicatedEtcd::start();
    let proxy = FaultProxy::start(etcd.addr.parse().expect("address")).expect("proxy");
    runtime().block_on(async {
        let holder = connect_with(config(&etcd.addr, Layout::Mutex)).await;
        let waiter = Arc::new(
            connect_with(with_ttl(
                config(&proxy.addr().to_string(), Layout::Mutex),
                2,
            ))
            .await,
        );
        let third = Arc::new(connect_with(config(&etcd.addr, Layout::Mutex)).await);
        let lock = name("expired-waiter");
        let prefix = format!("{lock}/");
        let guard = acquire(&holder, &request(&lock, Wait::TryOnce))
            .await
            .expect("acquire");
        let waiting = {
            let (waiter, lock) = (Arc::clone(&waiter), lock.clone());
            tokio::spawn(async move {
                let got = acquire(
                    &*waiter,
                    &request(&lock, Wait::Timeout(Duration::from_secs(40))),
                )
                .await;
                (got, monotonic_ns())
            })
        };
        until_keys(&etcd.addr, &prefix, 2).await;
        let third_waiting = {
            let (third, lock) = (Arc::clone(&third), lock.clone());
            tokio::spawn(async move {
                let got = acquire(
                    &*third,
                    &request(&lock, Wait::Timeout(Duration::from_secs(40))),
                )
                .await
                .expect("the third client");
                (got, monotonic_ns())
            })
        };
        until_keys(&etcd.addr, &prefix, 3).await;

        proxy.set(Fault::Blackhole);
        // The waiter's lease expires on the server: its key goes.
        until_keys(&etcd.addr, &prefix, 2).await;
        guard.release().await.expect("release");
        let (third_guard, third_entered) = third_waiting.await.expect("third task");
        proxy.set(Fault::Pass);
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(
            !waiting.is_finished(),
            "the expired waiter got an answer while the third client holds: {:?}",
            waiting
                .await
                .map(|(r, _)| r.map(|g| g.token()).map_err(|e| e.report()))
        );
        let third_token = third_guard.token();
        let third_exited = monotonic_ns();
        third_guard.release().await.expect("release");
        let (got, entered) = waiting.await.expect("waiter task");
        let got = got.unwrap_or_else(|e| panic!("the healed waiter: {}", e.report()));
        assert!(entered > third_exited && third_exited > third_entered);
        assert!(got.token() > third_token, "fencing token grows");
        got.release().await.expect("release");
    });
}

/// A release whose request or whose reply is lost (and its connection
/// reset) is sent again: it succeeds, and the next client gets the lock at
/// once, not when the lease expires.
#[test]
fn lost_release_request_or_reply_is_retried() {
    if !cluster_fixture() {
        return;
    }
    let etcd = DedicatedEtcd::start();
    let proxy = FaultProxy::start(etcd.addr.parse().expect("address")).expect("proxy");
    runtime().block_on(async {
        for layout in [Layout::Mutex, Layout::Tooz] {
            for direction in [Direction::Request, Direction::Reply] {
                // A long TTL: no keep-alive crosses the proxy during the test,
                // and a key left behind would block the next client for it.
                let holder =
                    connect_with(with_ttl(config(&proxy.addr().to_string(), layout), 60)).await;
                let next = connect_with(config(&etcd.addr, layout)).await;
                let lock = name("lost-release");
                let guard = acquire(&holder, &request(&lock, Wait::TryOnce))
                    .await
                    .expect("acquire");
                tokio::time::sleep(Duration::from_millis(100)).await;
                proxy.lose_next(direction);
                guard
                    .release()
                    .await
                    .unwrap_or_else(|e| panic!("{layout} {direction:?}: release: {}", e.report()));
                assert!(
                    !proxy.losing(direction),
                    "{layout} {direction:?}: nothing lost"
                );
                let got = acquire(&next, &request(&lock, Wait::TryOnce))
                    .await
                    .unwrap_or_else(|e| {
                        panic!("{layout} {direction:?}: the next client: {}", e.report())
                    });
                got.release().await.expect("release");
            }
        }
    });
}

/// A waiter whose timeout ends while it is cut off from the server leaves
/// no key behind once the connection is back, while its client lives.
#[test]
fn waiter_timing_out_while_cut_off_leaves_no_key() {
    if !cluster_fixture() {
        return;
    }
    let etcd = DedicatedEtcd::start();
    let proxy = FaultProxy::start(etcd.addr.parse().expect("address")).expect("proxy");
    runtime().block_on(async {
        let ttl = 6;
        let holder = connect_with(config(&etcd.addr, Layout::Mutex)).await;
        let waiter = connect_with(with_ttl(
            config(&proxy.addr().to_string(), Layout::Mutex),
            ttl,
        ))
        .await;
        let lock = name("cut-waiter");
        let prefix = format!("{lock}/");
        let guard = acquire(&holder, &request(&lock, Wait::TryOnce))
            .await
            .expect("acquire");
        let waiting_request = request(&lock, Wait::Timeout(Duration::from_millis(1500)));
        let waiting = acquire(&waiter, &waiting_request);
        let cut = async {
            until_keys(&etcd.addr, &prefix, 2).await;
            proxy.set(Fault::Blackhole);
        };
        let (err, ()) = tokio::join!(waiting, cut);
        let err = err.expect_err("the lock is held");
        eprintln!("the cut-off waiter: {}", err.report());
        proxy.set(Fault::Pass);
        let healed = Instant::now();
        let mut raw = raw(&etcd.addr).await;
        let gone = eventually(Duration::from_secs(ttl / 2), || {
            let (mut raw, prefix) = (raw.clone(), prefix.clone());
            async move { keys_under(&mut raw, prefix.as_bytes()).await.len() == 1 }
        })
        .await;
        assert!(
            gone,
            "the waiter's key is still there: {:?}",
            keys_under(&mut raw, prefix.as_bytes()).await
        );
        eprintln!(
            "the waiter's key went {:?} after the heal",
            healed.elapsed()
        );
        guard.release().await.expect("release");
        drop(waiter);
    });
}

/// A waiter that gives up (timeout or cancellation) in a process that then
/// exits at once (its runtime shut down right after) leaves nothing that
/// blocks others: closing the client revokes its lease, so the next acquire
/// after the holder's release is immediate rather than a TTL later.
#[test]
fn a_quitting_waiter_leaves_nothing_behind() {
    let Some(addr) = server() else { return };
    if !cluster_fixture() {
        return;
    }
    let ttl = 10;
    let runtime = runtime();
    let lock = name("quitter");
    let holder = runtime.block_on(connect(&addr, Layout::Mutex));
    let guard = runtime
        .block_on(acquire(&holder, &request(&lock, Wait::TryOnce)))
        .expect("acquire");
    for cancel in [false, true] {
        let (quitter_addr, quitter_lock) = (addr.clone(), lock.clone());
        let lease = std::thread::spawn(move || {
            let (addr, lock) = (quitter_addr, quitter_lock);
            let quitter_runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .expect("runtime");
            let quitter =
                quitter_runtime.block_on(connect_with(with_ttl(config(&addr, Layout::Mutex), ttl)));
            let lease = quitter_runtime.block_on(quitter.lease_id()).expect("lease");
            quitter_runtime.block_on(async {
                if cancel {
                    let gave_up = tokio::time::timeout(
                        Duration::from_millis(300),
                        locks_core::Backend::acquire(&quitter, &request(&lock, Wait::Forever)),
                    )
                    .await;
                    assert!(gave_up.is_err(), "the lock is held");
                } else {
                    let err = acquire(
                        &quitter,
                        &request(&lock, Wait::Timeout(Duration::from_millis(300))),
                    )
                    .await
                    .expect_err("the lock is held");
                    assert_eq!(err.kind(), ErrorKind::Timeout, "{}", err.report());
                }
            });
            // The process exits: client closed, runtime gone.
            drop(quitter);
            drop(quitter_runtime);
            lease
        })
        .join()
        .expect("quitter thread");
        runtime.block_on(async {
            let mut raw = raw(&addr).await;
            let left = raw
                .lease_time_to_live(lease, None)
                .await
                .map(|r| r.ttl())
                .unwrap_or(-1);
            assert!(
                left <= 0,
                "cancel={cancel}: the quitter's lease {lease:x} outlived its client ({left} s left)"
            );
        });
    }
    runtime.block_on(async {
        let mut raw = raw(&addr).await;
        let keys = keys_under(&mut raw, format!("{lock}/").as_bytes()).await;
        assert_eq!(keys.len(), 1, "only the holder's key is left: {keys:?}");
        guard.release().await.expect("release");
        let next = connect(&addr, Layout::Mutex).await;
        let start = Instant::now();
        let got = acquire(
            &next,
            &request(&lock, Wait::Timeout(Duration::from_secs(ttl))),
        )
        .await
        .unwrap_or_else(|e| panic!("the next client: {}", e.report()));
        let took = start.elapsed();
        eprintln!("next acquire after the quitters: {took:?}");
        assert!(
            took < Duration::from_secs(ttl / 2),
            "the next acquire waited {took:?}, as for the quitters' leases to expire"
        );
        got.release().await.expect("release");
    });
    drop(holder);
}

/// Closing a client (dropping the backend once its guards are gone) revokes
/// its lease before the drop returns, even when its runtime is gone at once.
#[test]
fn closing_a_client_revokes_its_lease_at_once() {
    let Some(addr) = server() else { return };
    let first = runtime();
    let backend: EtcdBackend = first.block_on(connect(&addr, Layout::Mutex));
    let lease = first.block_on(backend.lease_id()).expect("lease");
    drop(first);
    drop(backend);
    runtime().block_on(async {
        let mut raw = raw(&addr).await;
        let left = raw
            .lease_time_to_live(lease, None)
            .await
            .map(|r| r.ttl())
            .unwrap_or(-1);
        assert!(
            left <= 0,
            "lease {lease:x} outlived its client ({left} s left)"
        );
    });
}
