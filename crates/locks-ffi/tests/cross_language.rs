//! A C process, a Go process and a Rust process contend for one Node lock
//! (catalog id `lio`, the lock file `lioadm`) and never overlap.
//!
//! Each takes the lock N times and, while holding it, appends `enter WHO
//! TOKEN` and then `exit WHO` to one log opened with O_APPEND. The log must
//! alternate strictly between an `enter` and the `exit` of the same process,
//! every process must have entered N times, and the fencing tokens must grow.

mod common;

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;

const ROUNDS: usize = 30;
const CONTENDER_ENV: &str = "LOCKS_FFI_RUST_CONTENDER";

/// The Rust contender: this test binary run again with [`CONTENDER_ENV`]
/// set, through the `locks` crate itself. Without the variable it does nothing.
#[test]
fn rust_contender() {
    let Ok(args) = std::env::var(CONTENDER_ENV) else {
        return;
    };
    let args: Vec<&str> = args.split('\n').collect();
    let [config, log, who, rounds] = args[..] else {
        panic!("{CONTENDER_ENV}: CONFIG\\nLOG\\nWHO\\nN");
    };
    let rounds: usize = rounds.parse().unwrap();
    let locks = locks::BlockingLocks::open(locks::Config::from_file(config).unwrap()).unwrap();
    let mut log = OpenOptions::new()
        .append(true)
        .create(true)
        .open(log)
        .unwrap();
    for _ in 0..rounds {
        let guard = locks
            .lock_with(
                "lio",
                &locks::Params::new(),
                locks::Wait::from_millis(60_000),
            )
            .unwrap();
        log.write_all(format!("enter {who} {}\n", guard.token()).as_bytes())
            .unwrap();
        std::thread::sleep(Duration::from_millis(1));
        log.write_all(format!("exit {who}\n").as_bytes()).unwrap();
        locks.release(guard).unwrap();
    }
}

fn check_log(log: &Path, who: &[&str]) {
    let text = std::fs::read_to_string(log).unwrap();
    let mut inside: Option<&str> = None;
    let mut last_token = 0u64;
    let mut entered = vec![0usize; who.len()];
    for (n, line) in text.lines().enumerate() {
        let n = n + 1;
        let words: Vec<&str> = line.split(' ').collect();
        match (words.as_slice(), inside) {
            (["enter", w, token], None) => {
                let token: u64 = token.parse().unwrap();
                assert!(
                    token > last_token,
                    "line {n}: token {token} after {last_token}:\n{text}"
                );
                last_token = token;
                let i = who.iter().position(|x| x == w).unwrap();
                entered[i] += 1;
                inside = Some(who[i]);
            }
            (["exit", w], Some(holder)) if *w == holder => inside = None,
            _ => panic!(
                "line {n}: `{line}` while {inside:?} holds the lock: critical sections overlapped\n{text}"
            ),
        }
    }
    assert_eq!(inside, None, "the log ends inside a critical section");
    let holders: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("enter "))
        .map(|l| l.split(' ').next().unwrap())
        .collect();
    let switches = holders.windows(2).filter(|w| w[0] != w[1]).count();
    eprintln!(
        "{} rounds, the holder changed {switches} times",
        holders.len()
    );
    // Typically more than 80 of 89: the processes really took turns.
    assert!(
        switches >= ROUNDS / 3,
        "the processes hardly contended ({switches} changes of holder):\n{text}"
    );
    for (w, count) in who.iter().zip(&entered) {
        assert_eq!(*count, ROUNDS, "{w} entered {count} times:\n{text}");
    }
}

#[test]
fn c_go_and_rust_processes_never_overlap() {
    if !have("go", "apt-get install golang-go") {
        return;
    }
    let c = compile_c("contend");
    let go = build_go_example("contend");
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path());
    let log = dir.path().join("log");
    let rounds = ROUNDS.to_string();
    let args = |who: &str| {
        vec![
            config.display().to_string(),
            log.display().to_string(),
            who.to_owned(),
            rounds.clone(),
        ]
    };

    // Hold the lock while all three start, so that they contend from the first round.
    let client = locks::BlockingLocks::open(locks::Config::from_file(&config).unwrap()).unwrap();
    let gate = client
        .lock_with("lio", &locks::Params::new(), locks::Wait::TryOnce)
        .unwrap();

    let mut c_cmd = Command::new(&c);
    c_cmd.args(args("c"));
    let mut go_cmd = Command::new(&go);
    go_cmd.args(args("go"));
    let mut rust_cmd = Command::new(std::env::current_exe().unwrap());
    rust_cmd
        .args([
            "rust_contender",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CONTENDER_ENV, args("rust").join("\n"));
    let handles: Vec<_> = [("c", c_cmd), ("go", go_cmd), ("rust", rust_cmd)]
        .into_iter()
        .map(|(who, mut cmd)| {
            std::thread::spawn(move || (who, run(&mut cmd, Duration::from_secs(300))))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    client.release(gate).unwrap();
    for h in handles {
        let (who, ran) = h.join().unwrap();
        assert_eq!(ran.code(), 0, "{who} contender: {ran:?}");
    }
    check_log(&log, &["c", "go", "rust"]);
}
