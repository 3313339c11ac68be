//! A 3-member ensemble of its own (`ci/zookeeper.sh start-cluster`): the
//! leader killed mid-run, and a majority down then back. Runs when
//! `LOCKS_TEST_ZK` is set, like the other server tests.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{Ensemble, connect, name, server};
use locks_core::{Backend, ErrorKind, LockRequest, LockState, Scope, Wait, acquire};

fn global(name: &locks_core::LockName, wait: Wait) -> LockRequest {
    LockRequest::new(name.clone(), Scope::Global).wait(wait)
}

/// Four clients take one lock in turns while the leader is killed with
/// SIGKILL and restarted 3 s later: every acquire and release succeeds,
/// nothing overlaps, tokens increase.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_leader_killed_mid_run_every_operation_completes() {
    if server().is_none() {
        return;
    }
    let ensemble = Ensemble::start(3);
    let config = ensemble
        .config("leader-kill")
        .session_timeout(Duration::from_secs(5));
    let lock = name("leader-kill");
    let inside = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for _ in 0..4 {
        let backend = connect(config.clone()).await;
        let (lock, inside, done, stop) = (lock.clone(), inside.clone(), done.clone(), stop.clone());
        workers.push(tokio::spawn(async move {
            let mut tokens = Vec::new();
            let mut held_states = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let guard = acquire(
                    &backend,
                    &global(&lock, Wait::Timeout(Duration::from_secs(30))),
                )
                .await
                .map_err(|e| format!("acquire: {}", e.report()))?;
                assert!(!inside.swap(true, Ordering::SeqCst), "two holders at once");
                tokens.push(guard.token());
                tokio::time::sleep(Duration::from_millis(1)).await;
                held_states.push(guard.state());
                inside.store(false, Ordering::SeqCst);
                guard
                    .release()
                    .await
                    .map_err(|e| format!("release: {}", e.report()))?;
                done.fetch_add(1, Ordering::Relaxed);
            }
            Ok::<_, String>((tokens, held_states))
        }));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let leader = ensemble.leader();
    let before = done.load(Ordering::Relaxed);
    let killed = Instant::now();
    ensemble.stop_member(leader, "KILL");
    // Measure when holdings resume.
    let mut resumed = None;
    while killed.elapsed() < Duration::from_secs(3) {
        if resumed.is_none() && done.load(Ordering::Relaxed) > before + 1 {
            resumed = Some(killed.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    ensemble.start_member(leader);
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    for worker in workers {
        let (tokens, states) = tokio::time::timeout(Duration::from_secs(60), worker)
            .await
            .expect("every worker finishes")
            .unwrap()
            .unwrap_or_else(|e| panic!("an operation failed across the leader kill: {e}"));
        assert!(!states.contains(&LockState::Lost), "{states:?}");
        all.extend(tokens);
    }
    eprintln!(
        "leader {leader} killed: {} holdings, first holding after the kill {:?}",
        done.load(Ordering::Relaxed),
        resumed
    );
    let mut sorted = all.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), all.len(), "every holding has its own token");
    assert!(
        done.load(Ordering::Relaxed) > before,
        "holdings went on after the kill"
    );
}

/// Two of three members down: a waiter ends at its timeout with a typed
/// Unavailable error that says what is down; the holder goes AtRisk, then
/// Lost; once the quorum is back, the same clients acquire again without
/// being reopened.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_of_three_down_waiters_fail_typed_holders_lose_and_quorum_back_works() {
    if server().is_none() {
        return;
    }
    let ensemble = Ensemble::start(3);
    let session_timeout = Duration::from_secs(4);
    let config = ensemble
        .config("majority-down")
        .session_timeout(session_timeout);
    let holder = connect(config.clone()).await;
    let waiter = connect(config.clone()).await;
    let lock = name("majority-down");
    let guard = holder.acquire(&global(&lock, Wait::TryOnce)).await.unwrap();
    let mut states = guard.watch_state();
    let limit = Duration::from_secs(3);
    let waiting = {
        let (waiter, lock) = (waiter.clone(), lock.clone());
        tokio::spawn(async move {
            let started = Instant::now();
            let result = acquire(&waiter, &global(&lock, Wait::Timeout(limit))).await;
            (result, started.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let leader = ensemble.leader();
    let down: Vec<usize> = [leader, leader % 3 + 1].into();
    for &i in &down {
        ensemble.stop_member(i, "KILL");
    }
    let cut = Instant::now();

    let (result, waited) = waiting.await.unwrap();
    let err = result.unwrap_err();
    eprintln!("majority down: waiter ended after {waited:?}: {err}");
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{}", err.report());
    assert!(
        waited >= limit - Duration::from_millis(50),
        "ended early: {waited:?}"
    );
    for &i in &down {
        let member = &ensemble.members[i - 1];
        assert!(
            err.message()
                .contains(&format!("{member} refuses connections")),
            "the error names the down member {member}: {err}"
        );
    }

    tokio::time::timeout(
        session_timeout * 2,
        states.wait_for(|s| *s != LockState::Held),
    )
    .await
    .expect("the holder goes AtRisk")
    .unwrap();
    tokio::time::timeout(
        session_timeout * 2,
        states.wait_for(|s| *s == LockState::Lost),
    )
    .await
    .expect("then Lost")
    .unwrap();
    eprintln!(
        "majority down: holder lost {:?} after the kill",
        cut.elapsed()
    );
    assert!(
        cut.elapsed() < session_timeout,
        "lost only after {:?}",
        cut.elapsed()
    );
    assert_eq!(guard.release().await.unwrap_err().kind(), ErrorKind::Lost);

    for &i in &down {
        ensemble.start_member(i);
    }
    // Wait until the ensemble has a leader again, then ask at once.
    let restarted = Instant::now();
    ensemble.leader();
    let back = Instant::now();
    let again = acquire(
        &waiter,
        &global(&lock, Wait::Timeout(Duration::from_secs(30))),
    )
    .await
    .unwrap_or_else(|e| {
        panic!(
            "the waiter's client after the quorum came back: {}",
            e.report()
        )
    });
    eprintln!(
        "quorum back: a leader {:?} after restarting the members, acquired {:?} after that",
        back - restarted,
        back.elapsed()
    );
    let err = holder
        .acquire(&global(&lock, Wait::TryOnce))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::WouldBlock, "{}", err.report());
    again.release().await.unwrap();
    let mine = acquire(
        &holder,
        &global(&lock, Wait::Timeout(Duration::from_secs(10))),
    )
    .await
    .unwrap_or_else(|e| {
        panic!(
            "the holder's client after the quorum came back: {}",
            e.report()
        )
    });
    mine.release().await.unwrap();
}
