//! Runs every driver example and checks what it prints: the locked part is
//! clean and shows the lock at work (its name, one operation at a time, the
//! example's own evidence), the unlocked part shows the simulated device
//! catching the overlap, and the exit status is success.
//!
//! The examples run on lock files in a temporary directory (never the user's
//! default directory), and again with Global scope on etcd, ZooKeeper and
//! Redis when `LOCKS_TEST_ETCD` / `LOCKS_TEST_ZK` / `LOCKS_TEST_REDIS` name
//! test servers (as `ci/test.sh`
//! sets them); under `CI` a missing server is a failure instead of a skip.
//!
//! `cargo test -p locks-examples` builds the examples before it runs this;
//! when a binary is missing or older than its sources it is rebuilt here.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::SystemTime;

/// Each example and lines its locked part must print: substrings of one line,
/// `*` standing for any text. Lock names may carry a configured prefix, so
/// they are matched without their start.
const EXAMPLES: &[(&str, &[&str])] = &[
    (
        "lio",
        &[
            "lioadm` (token",
            "] volume-p2-1  holds",
            "every target and initiator of both processes was saved",
            "the LIO configuration: 6 operations, one at a time",
        ],
    ),
    (
        "nvmet",
        &[
            "nvmetcli`: create nqn.nvme-subsystem-1-vol-new-1",
            "] p2:vol-old-1 holds",
            "every create and every delete of both processes was kept",
            "one at a time",
        ],
    ),
    (
        "hgst",
        &[
            "hgst-devices`",
            "refused: not enough space: 20 GiB free, 40 GiB asked",
            "2 volumes created, 80 GiB of 100 GiB in use",
            "the HGST cluster: 3 operations, one at a time",
        ],
    ),
    (
        "solidfire",
        &[
            "holds `",
            "solidfire-img-A`",
            "solidfire-img-B`",
            "solidfire-vol-src`",
            "solidfire-snap-1`",
            "img-A: 1 template volume(s)",
            "SolidFire vol-src: 2 operations, one at a time",
        ],
    ),
    (
        "infinidat",
        &[
            "infinidat-10.0.0.1-lock`",
            "infinidat-10.0.0.2-lock`",
            "InfiniBox 10.0.0.1: compute-1 [*vol-1*]",
            "InfiniBox 10.0.0.1: 4 operations, one at a time",
        ],
    ),
    (
        "kaminario",
        &[
            "Kaminario-10.0.1.5`: one lock",
            "FC    holds `",
            "iSCSI holds `",
            "Kaminario-10.0.1.6`",
            "K2 10.0.1.5: 4 operations, one at a time",
        ],
    ),
    (
        "unity",
        &[
            "detach_and_delete_host holds `",
            "create_host_and_attach holds `",
            "unity-a-h1`",
            "create_host holds `",
            "WouldDeadlock after",
            "Unity host h1: * operations, one at a time",
        ],
    ),
    (
        "stx",
        &[
            "map_volume holds `",
            "STXClient-A1-map`",
            "HPMSAClient-A2-map`",
            "A1: compute-1 [1=vol-* 2=vol-* 3=vol-*]",
            "A1 management API: * operations, one at a time",
        ],
    ),
];

/// Whether `line` holds the parts of `pattern` between its `*`s, in order.
fn matches(line: &str, pattern: &str) -> bool {
    let mut rest = line;
    for part in pattern.split('*') {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    true
}

/// `<target>/<profile>`, from this test's own path (`<target>/<profile>/deps/run_examples-HASH`).
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test's own path");
    exe.parent()
        .and_then(Path::parent)
        .expect("the test runs from <target>/<profile>/deps")
        .to_path_buf()
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// The example binaries, rebuilt first if one is missing or older than the
/// example sources.
fn binaries() -> PathBuf {
    let dir = profile_dir();
    let examples = dir.join("examples");
    let sources = Path::new(env!("CARGO_MANIFEST_DIR"));
    let newest_source = EXAMPLES
        .iter()
        .map(|(name, _)| sources.join(format!("{name}.rs")))
        .chain([sources.join("support/lib.rs"), sources.join("Cargo.toml")])
        .filter_map(|p| modified(&p))
        .max();
    let stale =
        EXAMPLES.iter().any(
            |(name, _)| match (modified(&examples.join(name)), newest_source) {
                (None, _) => true,
                (Some(built), Some(source)) => built < source,
                (Some(_), None) => false,
            },
        );
    if stale {
        let target = dir.parent().expect("<target>").to_path_buf();
        let mut cargo = Command::new(env!("CARGO"));
        cargo
            .args(["build", "--quiet", "--examples", "-p", "locks-examples"])
            .current_dir(sources)
            .env("CARGO_TARGET_DIR", &target);
        if dir.file_name().is_some_and(|n| n == "release") {
            cargo.arg("--release");
        }
        eprintln!("building the examples: {cargo:?}");
        let status = cargo.status().expect("running cargo");
        assert!(status.success(), "cargo build --examples failed");
    }
    examples
}

/// A configuration in a fresh directory: lock files there for Node scope,
/// `global` (or lock files too) for Global scope.
fn config(dir: &Path, global: Option<&str>) -> PathBuf {
    let files = format!("file://{}", dir.join("locks").display());
    let global = global.map_or_else(|| files.clone(), str::to_owned);
    // A prefix of its own keeps runs sharing a server apart.
    let prefix = format!(
        "ex{}-{}-",
        std::process::id(),
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_micros()
    );
    let text = format!(
        "prefix = \"{prefix}\"\n[backends]\nprocess = \"memory://\"\nnode = \"{files}\"\nglobal = \"{global}\"\n"
    );
    let path = dir.join("locks.toml");
    std::fs::write(&path, text).expect("writing the test configuration");
    path
}

fn run(binary: &Path, config: &Path, args: &[&str]) -> (Output, String) {
    let output = Command::new(binary)
        .args(args)
        .env("LOCKS_CONFIG", config)
        .env_remove("LOCKS_EXAMPLE_EPOCH_US")
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", binary.display()));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    (output, stdout)
}

/// Runs every example with `global` as the Global-scope backend.
fn check_all(global: Option<&str>, what: &str) {
    let examples = binaries();
    let mut failures = Vec::new();
    for (name, expected) in EXAMPLES {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let config = config(dir.path(), global);
        let binary = examples.join(name);
        let (output, stdout) = run(&binary, &config, &[]);
        let report = |problem: String| {
            format!(
                "{name} ({what}): {problem}\n--- stdout\n{stdout}--- stderr\n{}",
                String::from_utf8_lossy(&output.stderr)
            )
        };
        if !output.status.success() {
            failures.push(report(format!("exit status {}", output.status)));
            continue;
        }
        let (Some(locked_at), Some(unlocked_at)) = (
            stdout.find("-- with the lock"),
            stdout.find("-- without the lock"),
        ) else {
            failures.push(report("no locked and unlocked parts".to_owned()));
            continue;
        };
        let locked = &stdout[locked_at..unlocked_at];
        let unlocked = &stdout[unlocked_at..];
        let mut problems = Vec::new();
        if locked.contains("CORRUPTED") {
            problems.push("the locked part caught an overlap".to_owned());
        }
        if !locked.contains("locked part: clean") {
            problems.push("the locked part is not reported clean".to_owned());
        }
        for line in *expected {
            if !locked.lines().any(|l| matches(l, line)) {
                problems.push(format!("the locked part lacks {line:?}"));
            }
        }
        if !stdout.contains(&format!("OK: {name}:")) {
            problems.push("no OK line".to_owned());
        }
        // Without the lock the overlap is a matter of timing: a loaded
        // machine gets two more tries.
        let mut caught = unlocked.contains("CORRUPTED") && unlocked.contains("caught");
        for _ in 0..2 {
            if caught {
                break;
            }
            let (again, out) = run(&binary, &config, &["--unlocked"]);
            caught = again.status.success() && out.contains("CORRUPTED");
        }
        if !caught {
            problems.push("the unlocked part never caught an overlap".to_owned());
        }
        if problems.is_empty() {
            eprintln!("{name} ({what}): ok");
        } else {
            failures.push(report(problems.join("; ")));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// The server address in `var`: skipped when unset, a failure under `CI=true`.
fn server(var: &str) -> Option<String> {
    locks_core::testing::server_from_env(var)
}

#[test]
fn every_example_on_lock_files() {
    check_all(None, "lock files");
}

#[test]
fn every_example_on_etcd() {
    if let Some(addr) = server("LOCKS_TEST_ETCD") {
        check_all(Some(&format!("etcd://{addr}")), "etcd");
    }
}

#[test]
fn every_example_on_zookeeper() {
    if let Some(addr) = server("LOCKS_TEST_ZK") {
        check_all(
            Some(&format!("zookeeper://{addr}/locks-examples")),
            "zookeeper",
        );
    }
}

#[test]
fn every_example_on_redis() {
    if let Some(addr) = server("LOCKS_TEST_REDIS") {
        // `ci/redis.sh start`'s server takes a password (user `default`).
        let password = std::env::var("LOCKS_TEST_REDIS_PASSWORD").unwrap_or_default();
        check_all(
            Some(&format!(
                "redis://:{password}@{addr}?namespace=locks-examples"
            )),
            "redis",
        );
    }
}

#[test]
fn an_unknown_flag_is_a_usage_error() {
    let examples = binaries();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let config = config(dir.path(), None);
    let (output, _) = run(&examples.join("hgst"), &config, &["--bogus"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("usage: hgst"));
}
