//! `locks check`, the mutual-exclusion checker: its interface (the last line
//! reads `handoffs=H overlaps=O token_regressions=T`), short runs on every
//! backend, and that it does catch overlapping holdings and token regressions
//! in a log. The long runs (>= 2000 handoffs per backend) are in ci/test.sh.

use std::path::{Path, PathBuf};
use std::process::Command;

fn server(var: &str) -> Option<String> {
    locks_core::testing::server_from_env(var)
}

fn config(dir: &Path, global: Option<String>) -> PathBuf {
    let locks = dir.join("locks");
    let global = global.unwrap_or_else(|| format!("file://{}", locks.display()));
    let path = dir.join("locks.toml");
    std::fs::write(
        &path,
        format!(
            "[backends]\nnode = \"file://{}\"\nglobal = \"{global}\"\n",
            locks.display()
        ),
    )
    .expect("write config");
    path
}

/// Runs `locks --config CONFIG check ARGS`: (exit code, stdout, stderr).
fn check(config: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_locks"))
        .env_remove("LOCKS_CONFIG")
        .arg("--config")
        .arg(config)
        .arg("check")
        .args(args)
        .output()
        .expect("run locks check");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn last_line(stdout: &str) -> &str {
    stdout.lines().last().unwrap_or_default()
}

fn run(config: &Path, scope: &str, processes: usize, iterations: usize) {
    let (processes, iterations) = (processes.to_string(), iterations.to_string());
    let (code, stdout, stderr) = check(
        config,
        &[
            "--scope",
            scope,
            "--name",
            "checker-test",
            "--processes",
            &processes,
            "--iterations",
            &iterations,
            "--hold-us",
            "100",
        ],
    );
    eprintln!("{stdout}");
    let holdings = processes.parse::<usize>().unwrap() * iterations.parse::<usize>().unwrap();
    assert_eq!(
        last_line(&stdout),
        format!("handoffs={} overlaps=0 token_regressions=0", holdings - 1),
        "{stdout}{stderr}"
    );
    assert_eq!(code, 0, "{stdout}{stderr}");
}

#[test]
fn memory_tasks() {
    let dir = tempfile::tempdir().expect("tempdir");
    run(&config(dir.path(), None), "process", 8, 50);
}

#[test]
fn file_processes() {
    let dir = tempfile::tempdir().expect("tempdir");
    run(&config(dir.path(), None), "node", 4, 50);
}

/// Lock files are not first come, first served: a releasing process mostly
/// takes the lock again before a waiter the kernel woke runs. `--pause-us`
/// makes holders wait after each release, so that handoffs cross processes
/// (`ci/test.sh` relies on it for its node-scope run).
#[test]
fn a_pause_after_release_lets_the_other_processes_in() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config(dir.path(), None);
    let (code, stdout, stderr) = check(
        &config,
        &[
            "--scope",
            "node",
            "--name",
            "checker-pause",
            "--processes",
            "3",
            "--iterations",
            "40",
            "--pause-us",
            "1000",
        ],
    );
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert_eq!(
        last_line(&stdout),
        "handoffs=119 overlaps=0 token_regressions=0",
        "{stdout}{stderr}"
    );
    let switches: usize = stdout
        .split_whitespace()
        .find_map(|f| f.strip_prefix("process_switches="))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no process_switches= in {stdout}"));
    assert!(
        switches >= 30,
        "only {switches} of 119 handoffs crossed processes: {stdout}"
    );
}

#[test]
fn etcd_processes() {
    let Some(addr) = server("LOCKS_TEST_ETCD") else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!(
        "etcd://{addr}?prefix=%2Flocks-checker-{}%2F",
        std::process::id()
    );
    run(&config(dir.path(), Some(url)), "global", 3, 30);
}

#[test]
fn zookeeper_processes() {
    let Some(addr) = server("LOCKS_TEST_ZK") else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("zookeeper://{addr}/locks-checker-{}", std::process::id());
    run(&config(dir.path(), Some(url)), "global", 3, 30);
}

#[test]
fn the_checker_catches_overlaps_and_token_regressions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config(dir.path(), None);
    let verify = |log: &str| {
        let path = dir.path().join("crafted.log");
        std::fs::write(&path, log).expect("write log");
        let path = path.display().to_string();
        let out = check(
            &config,
            &[
                "--scope",
                "node",
                "--name",
                "x",
                "--processes",
                "0",
                "--iterations",
                "0",
                "--log",
                &path,
            ],
        );
        (out.0, last_line(&out.1).to_owned())
    };
    assert_eq!(
        verify("1 10 100 200\n2 11 200 300\n3 10 300 400 lost\n"),
        (0, "handoffs=2 overlaps=0 token_regressions=0".to_owned())
    );
    assert_eq!(
        verify("1 10 100 200\n2 11 150 300\n"),
        (1, "handoffs=1 overlaps=1 token_regressions=0".to_owned())
    );
    assert_eq!(
        verify("5 10 100 200\n4 11 250 300\n"),
        (1, "handoffs=1 overlaps=0 token_regressions=1".to_owned())
    );
    // A holding nested in a long one overlaps it, and so does the next one.
    assert_eq!(
        verify("1 1 0 1000\n2 2 10 20\n3 3 30 40\n").1,
        "handoffs=2 overlaps=2 token_regressions=0"
    );
    let (code, _) = verify("garbage\n");
    assert_eq!(code, 1, "a malformed log fails");
}

#[test]
fn bad_arguments_are_usage_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config(dir.path(), None);
    let (code, _, stderr) = check(&config, &["--scope", "nowhere", "--name", "x"]);
    assert_eq!(code, 2, "{stderr}");
    let (code, _, stderr) = check(
        &config,
        &[
            "--scope",
            "node",
            "--name",
            "",
            "--processes",
            "1",
            "--iterations",
            "1",
        ],
    );
    assert_ne!(code, 0, "an empty name is refused: {stderr}");
}
