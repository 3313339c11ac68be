//! `locks status` on lock files: a holder and two waiters, each a `locks run`
//! process, read from the kernel; exit status 1 while held, 0 when free, 2 on
//! an error.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{locks, output};

/// A `locks run` holding (or waiting for) lock `name` in `scope` while `sleep` runs.
fn run_holding(config: &std::path::Path, scope: &str, name: &str) -> Child {
    locks(config)
        .args(["run", "--scope", scope, "--name", name, "--", "sleep", "30"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn locks run")
}

/// `locks status` of lock `name` in `scope`: exit code, stdout, stderr.
fn status(config: &std::path::Path, scope: &str, name: &str, json: bool) -> (i32, String, String) {
    let mut cmd: Command = locks(config);
    cmd.args(["status", "--scope", scope, "--name", name]);
    if json {
        cmd.arg("--json");
    }
    output(&mut cmd)
}

/// Polls `locks status` until `ready` holds for its stdout (15 s at most).
fn status_when(
    config: &std::path::Path,
    scope: &str,
    name: &str,
    ready: impl Fn(&str) -> bool,
) -> (i32, String) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (code, stdout, stderr) = status(config, scope, name, false);
        if ready(&stdout) {
            return (code, stdout);
        }
        assert!(
            Instant::now() < deadline,
            "status never got there: {code} {stdout}{stderr}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_lock_file_shows_its_holder_and_how_many_wait() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("locks.toml");
    std::fs::write(
        &config,
        format!(
            // Global on the same directory: `--all` sees only this test's locks.
            "[backends]\nnode = \"file://{0}/locks\"\nglobal = \"file://{0}/locks\"\n",
            dir.path().display()
        ),
    )
    .expect("config");
    let name = "status-lioadm";

    let (code, stdout, stderr) = status(&config, "node", name, false);
    assert_eq!(code, 0, "free: {stdout}{stderr}");
    assert!(stdout.contains("state     free\n"), "{stdout}");

    let mut holder = run_holding(&config, "node", name);
    let (code, stdout) = status_when(&config, "node", name, |s| s.contains("state     held"));
    assert_eq!(code, 1, "{stdout}");
    assert!(
        stdout.contains("holder    host=") && stdout.contains(&format!(" pid={} ", holder.id())),
        "the holder is the `locks run` process {}: {stdout}",
        holder.id()
    );
    assert!(stdout.contains("program=locks "), "{stdout}");
    assert!(stdout.contains("token=unknown"), "{stdout}");

    let mut waiters: Vec<Child> = (0..2).map(|_| run_holding(&config, "node", name)).collect();
    let (code, stdout) = status_when(&config, "node", name, |s| s.contains("waiter 2 "));
    assert_eq!(code, 1, "{stdout}");
    assert!(
        stdout.contains("waiter 1  host=") && stdout.contains("pid=unknown"),
        "OFD waiters are counted, not named: {stdout}"
    );
    assert!(
        stdout.contains("note      the kernel does not say"),
        "{stdout}"
    );

    let (code, all, stderr) = output(locks(&config).args(["status", "--all"]));
    assert_eq!(code, 1, "{all}{stderr}");
    assert!(
        all.contains(&format!("lock      {name} (node scope, file://")),
        "{all}"
    );
    assert!(all.contains("waiter 2 "), "{all}");

    let (code, json, stderr) = status(&config, "node", name, true);
    assert_eq!(code, 1, "{stderr}");
    assert!(json.contains("\"held\":true"), "{json}");
    assert!(json.contains(&format!("\"pid\":{}", holder.id())), "{json}");

    for child in waiters.iter_mut().chain(std::iter::once(&mut holder)) {
        let _ = child.kill();
        let _ = child.wait();
    }
    let (code, stdout) = status_when(&config, "node", name, |s| s.contains("state     free"));
    assert_eq!(code, 0, "{stdout}");
    let (code, all, stderr) = output(locks(&config).args(["status", "--all"]));
    assert_eq!(code, 0, "{all}{stderr}");
    assert!(all.contains("nothing held or waited for"), "{all}");
}

#[test]
fn errors_exit_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("locks.toml");
    std::fs::write(&config, "[backends]\nnode = \"file:///dev/null/x\"\n").expect("config");
    let (code, _, stderr) = output(locks(&config).args(["status", "lio"]));
    assert_eq!(code, 2, "a bad configuration: {stderr}");
    assert!(stderr.contains("/dev/null/x"), "{stderr}");
    let good = dir.path().join("good.toml");
    std::fs::write(
        &good,
        format!(
            "[backends]\nnode = \"file://{}/locks\"\n",
            dir.path().display()
        ),
    )
    .expect("config");
    let (code, _, stderr) = output(locks(&good).args(["status", "no-such-lock"]));
    assert_eq!(code, 2, "an unknown id: {stderr}");
    assert!(stderr.contains("no lock `no-such-lock`"), "{stderr}");
}

/// The holder and two waiters, each a `locks run` process, in the order they
/// came, pid by pid, on the Global backend `url`.
fn holder_and_waiters_in_order(url: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("locks.toml");
    std::fs::write(
        &config,
        format!(
            "[backends]\nnode = \"file://{}/locks\"\nglobal = \"{url}\"\n",
            dir.path().display()
        ),
    )
    .expect("config");
    let name = format!("status-cli-{}", std::process::id());
    let mut holder = run_holding(&config, "global", &name);
    let (code, stdout) = status_when(&config, "global", &name, |s| s.contains("state     held"));
    assert_eq!(code, 1, "{stdout}");
    let holder_line = stdout
        .lines()
        .find(|l| l.starts_with("holder "))
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(
        holder_line.contains(&format!(" pid={} ", holder.id())) && holder_line.contains("host="),
        "the holder is `locks run` {}: {stdout}",
        holder.id()
    );
    let mut first = run_holding(&config, "global", &name);
    status_when(&config, "global", &name, |s| s.contains("waiter 1 "));
    let mut second = run_holding(&config, "global", &name);
    let (code, stdout) = status_when(&config, "global", &name, |s| s.contains("waiter 2 "));
    assert_eq!(code, 1, "{stdout}");
    let waiter = |n: usize| {
        stdout
            .lines()
            .find(|l| l.starts_with(&format!("waiter {n} ")))
            .unwrap_or_else(|| panic!("no waiter {n}: {stdout}"))
            .to_owned()
    };
    assert!(
        waiter(1).contains(&format!(" pid={} ", first.id())),
        "{stdout}"
    );
    assert!(
        waiter(2).contains(&format!(" pid={} ", second.id())),
        "{stdout}"
    );

    for child in [&mut holder, &mut first, &mut second] {
        let _ = child.kill();
        let _ = child.wait();
    }
}

#[test]
fn an_etcd_lock_shows_its_holder_and_waiters_in_order() {
    if let Some(addr) = locks_core::testing::server_from_env("LOCKS_TEST_ETCD") {
        holder_and_waiters_in_order(&format!("etcd://{addr}?ttl=2"));
    }
}

#[test]
fn a_zookeeper_lock_shows_its_holder_and_waiters_in_order() {
    if let Some(addr) = locks_core::testing::server_from_env("LOCKS_TEST_ZK") {
        holder_and_waiters_in_order(&format!("zookeeper://{addr}/locks-cli-status?timeout=4"));
    }
}
