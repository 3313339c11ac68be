//! The `locks` binary against real etcd and ZooKeeper servers (addresses from
//! `LOCKS_TEST_ETCD` / `LOCKS_TEST_ZK`, as ci/test.sh exports them): two OS
//! processes exclude each other on a Global lock, a holder killed with
//! SIGKILL frees the lock within the TTL / session timeout + 1 s, and
//! `locks run` and `locks demo` work with the server as the Global backend.

mod common;

use std::time::{Duration, Instant};

use common::{Running, locks, output};
use locks_core::testing::server_from_env;

const EXIT_LOCK_UNAVAILABLE: i32 = 75;
/// The lease TTL / session timeout these tests configure.
const EXPIRY: Duration = Duration::from_secs(2);

/// A config whose Global scope is `global` (node locks in a temp dir).
fn config(dir: &tempfile::TempDir, global: &str) -> std::path::PathBuf {
    let path = dir.path().join("locks.toml");
    std::fs::write(
        &path,
        format!(
            "prefix = \"cli-{}-\"\n[backends]\nnode = \"file://{}\"\nglobal = \"{global}\"\n",
            std::process::id(),
            dir.path().join("node").display()
        ),
    )
    .expect("write config");
    path
}

fn servers() -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    if let Some(addr) = server_from_env("LOCKS_TEST_ETCD") {
        out.push(("etcd", format!("etcd://{addr}?ttl=2s")));
    }
    if let Some(addr) = server_from_env("LOCKS_TEST_ZK") {
        out.push((
            "zookeeper",
            format!("zookeeper://{addr}?session_timeout=2s"),
        ));
    }
    out
}

#[test]
fn two_processes_exclude_each_other_on_a_global_lock() {
    for (server, url) in servers() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = config(&dir, &url);
        let log = dir.path().join("log");
        let holder = Running::start({
            let mut c = locks(&config);
            c.args([
                "run",
                "kaminario-fc",
                "-p",
                "san_ip=10.0.1.5",
                "--",
                "sh",
                "-c",
            ])
            .arg(format!(
                "echo enter-A >> {0}; echo ACQUIRED; sleep 1; echo exit-A >> {0}",
                log.display()
            ));
            c
        });
        holder.expect_line("ACQUIRED");
        let (code, _, stderr) = output(locks(&config).args([
            "run",
            "--timeout",
            "0",
            "kaminario-iscsi",
            "-p",
            "san_ip=10.0.1.5",
            "--",
            "true",
        ]));
        assert_eq!(
            code, EXIT_LOCK_UNAVAILABLE,
            "{server}: the iSCSI driver shares the FC lock: {stderr}"
        );
        let waiter = Running::start({
            let mut c = locks(&config);
            c.args([
                "run",
                "--timeout",
                "20s",
                "kaminario-iscsi",
                "-p",
                "san_ip=10.0.1.5",
                "--",
                "sh",
                "-c",
            ])
            .arg(format!(
                "echo enter-B >> {0}; echo exit-B >> {0}",
                log.display()
            ));
            c
        });
        assert_eq!(holder.wait(), 0, "{server}");
        assert_eq!(waiter.wait(), 0, "{server}");
        let log = std::fs::read_to_string(&log).expect("log");
        assert_eq!(
            log, "enter-A\nexit-A\nenter-B\nexit-B\n",
            "{server}: B ran only after A"
        );
    }
}

#[test]
fn a_killed_holder_frees_a_global_lock_within_its_expiry() {
    for (server, url) in servers() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = config(&dir, &url);
        let holder = Running::start({
            let mut c = locks(&config);
            c.args([
                "run",
                "infinidat",
                "-p",
                "management_address=10.9.9.9",
                "--",
                "sh",
                "-c",
            ])
            .arg("echo PID $$; exec sleep 30");
            c
        });
        let line = holder.expect_line("PID ");
        let command_pid: i32 = line[4..].trim().parse().expect("pid");
        let pid = i32::try_from(holder.child.id()).expect("pid");
        // SAFETY: kill(2) of our own child.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
        let killed = Instant::now();
        let (code, _, stderr) = output(locks(&config).args([
            "run",
            "--timeout",
            "10s",
            "infinidat",
            "-p",
            "management_address=10.9.9.9",
            "--",
            "true",
        ]));
        let took = killed.elapsed();
        assert_eq!(code, 0, "{server}: {stderr}");
        assert!(
            took < EXPIRY + Duration::from_secs(1),
            "{server}: the next waiter got the lock {took:?} after the kill (expiry {EXPIRY:?})"
        );
        drop(holder);
        // SAFETY: kill(2) of the orphaned command, which never held the lock.
        unsafe { libc::kill(command_pid, libc::SIGKILL) };
    }
}

#[test]
fn demo_and_run_work_with_a_server_as_global_backend() {
    for (server, url) in servers() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = config(&dir, &url);
        let (code, stdout, stderr) = output(locks(&config).args(["demo", "--work-ms", "40"]));
        assert_eq!(code, 0, "{server}: {stdout}\n{stderr}");
        assert!(
            stdout.contains(&format!("global  locks on {server}://")),
            "{server}: {stdout}"
        );
        assert!(
            stdout.contains("overlapping holders: 0"),
            "{server}: {stdout}"
        );
        assert!(
            stdout.contains("for ibox-1") || stdout.contains("for ibox-2"),
            "{server}: the second call on one Infinidat array waited for the first: {stdout}"
        );
        let (code, stdout, _) = output(locks(&config).args([
            "run",
            "dothill-map",
            "-p",
            "driver_name=dothill",
            "-p",
            "array_name=A1",
            "--",
            "sh",
            "-c",
            "echo $LOCKS_LOCK_NAME $LOCKS_FENCING_TOKEN",
        ]));
        assert_eq!(code, 0, "{server}");
        let mut words = stdout.split_whitespace();
        assert!(
            words.next().is_some_and(|n| n.ends_with("dothill-A1-map")),
            "{server}: {stdout}"
        );
        let token: u64 = words
            .next()
            .and_then(|t| t.parse().ok())
            .expect("a numeric fencing token");
        assert!(token > 0, "{server}");
    }
}
