//! The configuration's warning that Global locks on lock files are
//! host-local is shown once, by the command that takes a Global lock, and
//! never to a command that takes only Node or Process locks.

mod common;

use common::{locks, output};

const HOST_LOCAL: &str = "which excludes only processes on this host";

/// A configuration whose Global scope is the lock directory of Node.
fn host_local_config(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("locks.toml");
    std::fs::write(
        &path,
        format!(
            "[backends]\nnode = \"file://{0}/locks\"\nglobal = \"file://{0}/locks\"\n",
            dir.display()
        ),
    )
    .expect("write config");
    path
}

fn warnings(stderr: &str) -> usize {
    stderr.matches(HOST_LOCAL).count()
}

#[test]
fn node_locks_are_not_warned_about_global_ones() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = host_local_config(dir.path());
    let (code, _, stderr) =
        output(locks(&config).args(["run", "--scope", "node", "--name", "n", "--", "true"]));
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(warnings(&stderr), 0, "{stderr}");
    let (code, _, stderr) = output(locks(&config).args([
        "check",
        "--scope",
        "node",
        "--name",
        "n",
        "--processes",
        "3",
        "--iterations",
        "2",
    ]));
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(warnings(&stderr), 0, "{stderr}");
}

#[test]
fn a_global_lock_is_warned_about_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = host_local_config(dir.path());
    let (code, _, stderr) =
        output(locks(&config).args(["run", "--scope", "global", "--name", "g", "--", "true"]));
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(warnings(&stderr), 1, "{stderr}");
    assert!(
        stderr.contains("locks: warning: backends.global is file://"),
        "one `warning:`, from the command: {stderr}"
    );
    assert!(!stderr.contains("warning: warning"), "{stderr}");
    // Three worker processes, one warning.
    let (code, _, stderr) = output(locks(&config).args([
        "check",
        "--scope",
        "global",
        "--name",
        "g",
        "--processes",
        "3",
        "--iterations",
        "2",
    ]));
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(warnings(&stderr), 1, "{stderr}");
}

#[test]
fn verbose_logs_each_acquire_and_quiet_logs_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = host_local_config(dir.path());
    let run = ["run", "--scope", "node", "--name", "logged", "--", "true"];
    let (code, _, stderr) = output(locks(&config).arg("-vv").args(run));
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("locks.acquire{lock=logged") && stderr.contains("outcome=\"acquired\""),
        "{stderr}"
    );
    assert!(
        !stderr.contains('\u{1b}'),
        "no colours off a terminal: {stderr:?}"
    );
    let (code, _, stderr) = output(locks(&config).args(run));
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.is_empty(), "{stderr}");
}
