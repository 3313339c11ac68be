//! Cross-process tests with the real `locks` binary: two processes exclude
//! each other on a Node lock, a killed holder frees the lock at once, Python's
//! `fcntl.lockf` (what oslo.concurrency uses) and `locks run` exclude each
//! other both ways, and bad configuration gives typed exit codes.

mod common;

use std::io::Write;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Running, locks, output};

const EXIT_LOCK_UNAVAILABLE: i32 = 75;
const EXIT_CONFIG: i32 = 78;

struct Env {
    dir: tempfile::TempDir,
    config: PathBuf,
}

/// A config with Node and Global on lock files in a fresh directory, prefix `cinder-`.
fn env() -> Env {
    let dir = tempfile::tempdir().expect("tempdir");
    let locks = dir.path().join("locks");
    let config = dir.path().join("locks.toml");
    std::fs::write(
        &config,
        format!(
            "prefix = \"cinder-\"\n[backends]\nnode = \"file://{0}\"\nglobal = \"file://{0}\"\n",
            locks.display()
        ),
    )
    .expect("write config");
    Env { dir, config }
}

#[test]
fn two_processes_exclude_each_other_on_a_node_lock() {
    let env = env();
    let log = env.dir.path().join("log");
    let holder = Running::start({
        let mut c = locks(&env.config);
        c.args(["run", "lio", "--", "sh", "-c"]).arg(format!(
            "echo enter-A >> {0}; echo ACQUIRED; sleep 1; echo exit-A >> {0}",
            log.display()
        ));
        c
    });
    holder.expect_line("ACQUIRED");

    let (code, _, stderr) =
        output(locks(&env.config).args(["run", "--timeout", "0", "lio", "--", "true"]));
    assert_eq!(
        code, EXIT_LOCK_UNAVAILABLE,
        "try-once on a held lock: {stderr}"
    );
    assert!(
        stderr.contains("cinder-lioadm"),
        "the message names the lock: {stderr}"
    );

    let (code, _, stderr) =
        output(locks(&env.config).args(["run", "--timeout", "300ms", "lio", "--", "true"]));
    assert_eq!(code, EXIT_LOCK_UNAVAILABLE, "{stderr}");
    assert!(stderr.contains("timed out"), "{stderr}");

    let waiter = Running::start({
        let mut c = locks(&env.config);
        c.args(["run", "--timeout", "20s", "lio", "--", "sh", "-c"])
            .arg(format!(
                "echo enter-B >> {0}; echo exit-B >> {0}",
                log.display()
            ));
        c
    });
    assert_eq!(holder.wait(), 0);
    assert_eq!(waiter.wait(), 0);
    let log = std::fs::read_to_string(&log).expect("log");
    assert_eq!(
        log, "enter-A\nexit-A\nenter-B\nexit-B\n",
        "B ran only after A finished"
    );
    assert!(
        env.dir.path().join("locks/cinder-lioadm").exists(),
        "the lock file stays after release"
    );
}

#[test]
fn killing_the_holder_frees_the_lock_at_once_even_while_its_command_runs() {
    let env = env();
    let holder = Running::start({
        let mut c = locks(&env.config);
        c.args([
            "run",
            "infinidat",
            "-p",
            "management_address=10.0.0.1",
            "--",
            "sh",
            "-c",
        ])
        .arg("echo PID $$; exec sleep 30");
        c
    });
    let line = holder.expect_line("PID ");
    let command_pid: i32 = line[4..].trim().parse().expect("pid");
    let locks_pid = i32::try_from(holder.child.id()).expect("pid fits");
    // SAFETY: plain kill(2) on our own child process.
    assert_eq!(unsafe { libc::kill(locks_pid, libc::SIGKILL) }, 0);
    let start = Instant::now();
    let (code, _, stderr) = output(locks(&env.config).args([
        "run",
        "--timeout",
        "5s",
        "infinidat",
        "-p",
        "management_address=10.0.0.1",
        "--",
        "true",
    ]));
    let took = start.elapsed();
    assert_eq!(
        code, 0,
        "the lock is free once its holder is killed: {stderr}"
    );
    assert!(took < Duration::from_secs(3), "took {took:?}");
    // SAFETY: signal 0 only checks that the process exists.
    let alive = unsafe { libc::kill(command_pid, 0) } == 0;
    assert!(
        alive,
        "the command (which does not inherit the lock) was still running"
    );
    // SAFETY: plain kill(2) of the orphaned command.
    unsafe { libc::kill(command_pid, libc::SIGKILL) };
}

const PY_HOLD: &str = r#"
import fcntl, sys
f = open(sys.argv[1], 'a')
fcntl.lockf(f, fcntl.LOCK_EX)
print('HELD', flush=True)
sys.stdin.readline()
fcntl.lockf(f, fcntl.LOCK_UN)
print('RELEASED', flush=True)
"#;

const PY_TRY: &str = r#"
import fcntl, sys
f = open(sys.argv[1], 'a')
try:
    fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    print('ACQUIRED')
except OSError:
    print('BUSY')
"#;

fn python() -> Command {
    Command::new(std::env::var("PYTHON").unwrap_or_else(|_| "python3".to_owned()))
}

#[test]
fn python_lockf_holder_blocks_locks_run_and_then_lets_it_in() {
    let env = env();
    let path = env.dir.path().join("locks");
    std::fs::create_dir_all(&path).expect("mkdir");
    let file = path.join("cinder-lioadm");
    let mut py = Running::start({
        let mut c = python();
        c.arg("-c").arg(PY_HOLD).arg(&file);
        c
    });
    py.expect_line("HELD");
    let (code, _, stderr) =
        output(locks(&env.config).args(["run", "--timeout", "0", "lio", "--", "true"]));
    assert_eq!(
        code, EXIT_LOCK_UNAVAILABLE,
        "oslo's lockf excludes us: {stderr}"
    );
    writeln!(py.child.stdin.as_mut().expect("stdin")).expect("tell python to release");
    py.expect_line("RELEASED");
    let (code, _, stderr) =
        output(locks(&env.config).args(["run", "--timeout", "0", "lio", "--", "true"]));
    assert_eq!(code, 0, "free after python released: {stderr}");
}

#[test]
fn locks_run_holder_blocks_python_lockf() {
    let env = env();
    let file = env.dir.path().join("locks/cinder-nvmetcli");
    let holder = Running::start({
        let mut c = locks(&env.config);
        c.args([
            "run",
            "nvmet",
            "--",
            "sh",
            "-c",
            "echo ACQUIRED; read line || true",
        ]);
        c
    });
    holder.expect_line("ACQUIRED");
    let py_try = || {
        let (code, stdout, stderr) = output(python().arg("-c").arg(PY_TRY).arg(&file));
        assert_eq!(code, 0, "python failed: {stderr}");
        stdout.trim().to_owned()
    };
    assert_eq!(py_try(), "BUSY", "our OFD lock excludes Python's lockf");
    let mut holder = holder;
    drop(holder.child.stdin.take());
    assert_eq!(holder.wait(), 0);
    assert_eq!(py_try(), "ACQUIRED");
}

#[test]
fn bad_configuration_gives_typed_exit_codes_and_names_the_key() {
    let env = env();
    let bad = env.dir.path().join("bad.toml");
    for (text, needle) in [
        ("prefx = \"cinder-\"\n", "prefx"),
        ("[backends]\nnode = \"memory://\"\n", "backends.node"),
        (
            "[backends]\nglobal = \"consul://127.0.0.1\"\n",
            "unknown scheme `consul`",
        ),
        (
            "[backends]\nnode = \"file:///tmp/x?mechanism=lockf\"\n",
            "mechanism",
        ),
    ] {
        std::fs::write(&bad, text).expect("write");
        let (code, _, stderr) = output(locks(&bad).args(["run", "lio", "--", "true"]));
        assert_eq!(code, EXIT_CONFIG, "{text}: {stderr}");
        assert!(stderr.contains(needle), "{text}: {stderr}");
    }
    let (code, _, stderr) = output(locks(&env.config).args(["run", "infinidat", "--", "true"]));
    assert_eq!(code, 1);
    assert!(
        stderr.contains("missing parameter `management_address`"),
        "{stderr}"
    );
    let (code, _, stderr) = output(locks(&env.config).args(["run", "nope", "--", "true"]));
    assert_eq!(code, 1);
    assert!(stderr.contains("no lock `nope`"), "{stderr}");
    let (code, _, stderr) =
        output(locks(&env.config).args(["run", "--timeout", "5", "lio", "--", "true"]));
    assert_eq!(code, 2, "usage error: {stderr}");
    assert!(stderr.contains("no unit"), "{stderr}");
}

#[test]
fn config_is_accepted_after_the_subcommand_and_from_the_environment() {
    let env = env();
    let (code, stdout, stderr) = output(
        Command::new(env!("CARGO_BIN_EXE_locks"))
            .env_remove("LOCKS_CONFIG")
            .args(["run", "--scope", "node", "--name", "raw/name", "--config"])
            .arg(&env.config)
            .args(["--", "sh", "-c", "echo $LOCKS_LOCK_NAME"]),
    );
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout.trim(), "cinder-raw/name");
    assert!(
        env.dir.path().join("locks/cinder-raw_name").exists(),
        "`/` maps to `_` as in oslo"
    );
    let (code, _, stderr) = output(
        Command::new(env!("CARGO_BIN_EXE_locks"))
            .env("LOCKS_CONFIG", &env.config)
            .args(["run", "lio", "--", "true"]),
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(env.dir.path().join("locks/cinder-lioadm").exists());
}

#[test]
fn the_command_exit_status_is_passed_through() {
    let env = env();
    let (code, _, _) = output(locks(&env.config).args(["run", "lio", "--", "sh", "-c", "exit 7"]));
    assert_eq!(code, 7);
    let (code, _, stderr) =
        output(locks(&env.config).args(["run", "lio", "--", "/nonexistent/cmd"]));
    assert_eq!(code, 127, "{stderr}");
}

#[test]
fn clean_removes_only_unheld_lock_files() {
    let env = env();
    for id in ["lio", "nvmet"] {
        let (code, _, stderr) = output(locks(&env.config).args(["run", id, "--", "true"]));
        assert_eq!(code, 0, "{stderr}");
    }
    let holder = Running::start({
        let mut c = locks(&env.config);
        c.args([
            "run",
            "nvmet",
            "--",
            "sh",
            "-c",
            "echo ACQUIRED; read line || true",
        ]);
        c
    });
    holder.expect_line("ACQUIRED");
    let (code, stdout, stderr) = output(locks(&env.config).arg("clean"));
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("1 removed, 1 held"), "{stdout}");
    assert!(!env.dir.path().join("locks/cinder-lioadm").exists());
    assert!(env.dir.path().join("locks/cinder-nvmetcli").exists());
}

#[test]
fn catalog_commands() {
    let env = env();
    let (code, stdout, _) = output(locks(&env.config).args(["catalog", "list"]));
    assert_eq!(code, 0);
    // The seed document's twelve entries and Cinder 29.0.0's two STX ones.
    assert_eq!(stdout.lines().count(), 14);
    let (code, stdout, _) =
        output(locks(&env.config).args(["catalog", "show", "unity-create-host"]));
    assert_eq!(code, 0);
    assert!(
        stdout.contains("parameters:       self.host, name"),
        "{stdout}"
    );
    let (code, stdout, _) = output(locks(&env.config).args(["catalog", "lint"]));
    assert_eq!(code, 0, "{stdout}");
    assert!(stdout.contains("0 errors"), "{stdout}");
    let (code, stdout, _) = output(locks(&env.config).args(["catalog", "doc", "--format", "rst"]));
    assert_eq!(code, 0);
    assert!(stdout.starts_with("Drivers Locking Examples\n"));
    let bad = env.dir.path().join("bad-catalog.toml");
    std::fs::write(
        &bad,
        "[[lock]]\nid = \"a\"\ndriver = \"d\"\nname = \"{x}-y\"\nscope = \"node\"\ncritical_section = \"c\"\n\
         where = []\nfile = \"f\"\n[[lock]]\nid = \"b\"\ndriver = \"d\"\nname = \"{z}-y\"\nscope = \"global\"\n\
         critical_section = \"c\"\nwhere = []\nfile = \"f\"\n",
    )
    .expect("write");
    let config = env.dir.path().join("with-catalog.toml");
    std::fs::write(&config, "catalog = \"bad-catalog.toml\"\n").expect("write");
    let (code, stdout, _) = output(locks(&config).args(["catalog", "lint"]));
    assert_eq!(code, EXIT_CONFIG, "{stdout}");
    assert!(stdout.contains("1 errors"), "{stdout}");
    let (code, _, stderr) = output(locks(&config).args(["run", "a", "-p", "x=1", "--", "true"]));
    assert_eq!(
        code, EXIT_CONFIG,
        "a catalog with lint errors is refused: {stderr}"
    );
}

#[test]
fn demo_runs_and_reports_no_overlap() {
    let env = env();
    let (code, stdout, stderr) = output(locks(&env.config).args(["demo", "--work-ms", "40"]));
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(stdout.contains("overlapping holders: 0"), "{stdout}");
    // The two clones of image-A start together: whichever is second waits
    // for the other. The clone of image-B waits for nobody.
    let waited_for = |worker: &str| {
        stdout
            .lines()
            .any(|l| l.contains("waited") && l.contains(&format!("for {worker} ")))
    };
    assert!(
        waited_for("sf-clone-1") || waited_for("sf-clone-2"),
        "one clone of image-A waited for the other: {stdout}"
    );
    assert!(
        stdout
            .lines()
            .any(|l| l.contains("sf-clone-3   waited") && l.contains("(free)")),
        "{stdout}"
    );
    assert!(
        stdout.contains("refused at once instead of hanging"),
        "{stdout}"
    );
}
