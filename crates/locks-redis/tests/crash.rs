//! A holder process killed with SIGKILL (no release, no destructor, no
//! background task left): its lock frees within the lock timeout + 1 s, on
//! the plain server of `ci/redis.sh start` (`LOCKS_TEST_REDIS`).
//!
//! The holder is this test binary run again with only [`holder_process`]
//! selected and `LOCKS_REDIS_HOLDER` naming the lock.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use locks_core::testing::unique_name;
use locks_core::{ErrorKind, LockName, LockRequest, Scope, Wait, acquire};

/// The variable that makes [`holder_process`] the holder.
const HOLDER: &str = "LOCKS_REDIS_HOLDER";

fn request(name: &LockName, wait: Wait) -> LockRequest {
    LockRequest::new(name.clone(), Scope::Global).wait(wait)
}

/// The holder: takes the lock named by `LOCKS_REDIS_HOLDER`, says `HELD`,
/// and keeps it (refreshing it) until killed. Without the variable (an
/// ordinary test run) it does nothing.
#[test]
fn holder_process() {
    let Ok(name) = std::env::var(HOLDER) else {
        return;
    };
    let config = common::plain_config().expect("LOCKS_TEST_REDIS for the holder");
    let name = LockName::new(name).expect("a valid name");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let backend = common::connect(config).await;
        let guard = acquire(&backend, &request(&name, Wait::TryOnce))
            .await
            .unwrap_or_else(|e| panic!("the holder's acquire: {}", e.report()));
        println!("HELD");
        std::io::stdout().flush().expect("stdout");
        // Held (and refreshed in the background) until SIGKILL.
        tokio::time::sleep(Duration::from_secs(600)).await;
        drop(guard);
    });
}

#[test]
fn a_killed_holder_process_frees_its_lock_within_the_lock_timeout_and_a_second() {
    let Some(config) = common::plain_config() else {
        return;
    };
    let name = unique_name("killed-holder");
    let mut child = Command::new(std::env::current_exe().expect("the test binary"))
        .args([
            "holder_process",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(HOLDER, name.as_str())
        .stdout(Stdio::piped())
        .spawn()
        .expect("starting the holder process");
    let stdout = child.stdout.take().expect("piped stdout");
    let (said, heard) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            // libtest prints `test holder_process ... ` without a newline first.
            if line.ends_with("HELD") && said.send(()).is_err() {
                break;
            }
        }
    });
    if heard.recv_timeout(Duration::from_secs(30)).is_err() {
        let _ = child.kill();
        panic!("the holder process never said HELD");
    }
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let peer = common::connect(config.clone()).await;
        // Past its lock timeout the live holder still holds: its refreshes
        // work, so what frees the lock below is the kill.
        tokio::time::sleep(config.lock_timeout + Duration::from_millis(500)).await;
        let err = acquire(&peer, &request(&name, Wait::TryOnce))
            .await
            .expect_err("the live holder process holds the lock");
        assert_eq!(err.kind(), ErrorKind::WouldBlock, "{}", err.report());

        child.kill().expect("SIGKILL to the holder process");
        let killed = Instant::now();
        let status = child.wait().expect("reaping the holder");
        assert!(!status.success(), "the holder was killed: {status:?}");
        let guard = loop {
            match acquire(&peer, &request(&name, Wait::TryOnce)).await {
                Ok(guard) => break guard,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    assert!(
                        killed.elapsed() < config.lock_timeout + Duration::from_secs(5),
                        "still held {:?} after the kill",
                        killed.elapsed()
                    );
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!("{}", e.report()),
            }
        };
        let took = killed.elapsed();
        eprintln!(
            "the killed holder's lock was free {took:?} after SIGKILL (lock timeout {:?})",
            config.lock_timeout
        );
        assert!(
            took <= config.lock_timeout + Duration::from_secs(1),
            "free {took:?} after the kill: more than the lock timeout + 1 s"
        );
        guard.release().await.unwrap();
    });
}
