//! `locks-bench run --quick`: one table per backend, with the rows the benchmark
//! issue names, and every row that has a target ending in
//! `ratio=X.XX target=Y.YY` so that scripts can read it. Only the shape and
//! the sanity of the numbers are checked here: speed is for the benchmark
//! itself to report, never for a timed test to assert.

use std::process::Command;

use locks_core::testing::server_from_env;

/// Runs `cmd`: its exit code, stdout and stderr.
fn output(cmd: &mut Command) -> (i32, String, String) {
    let out = cmd.output().expect("run locks-bench");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The value of `key=` in a row, as a number.
fn field(row: &str, key: &str) -> Option<f64> {
    row.split_whitespace()
        .find_map(|f| f.strip_prefix(key)?.strip_prefix('='))
        .and_then(|v| v.trim_end_matches('x').parse().ok())
}

/// The rows of section `name` (`[memory]`, `[etcd 127.0.0.1:2379]`, …).
fn section<'a>(report: &'a str, name: &str) -> Vec<&'a str> {
    let mut lines = report.lines().skip_while(|l| {
        !(l.starts_with(&format!("[{name}]")) || l.starts_with(&format!("[{name} ")))
    });
    assert!(lines.next().is_some(), "no [{name}] section in:\n{report}");
    lines
        .take_while(|l| !l.trim().is_empty() && !l.starts_with('['))
        .collect()
}

fn row<'a>(rows: &[&'a str], what: &str) -> &'a str {
    rows.iter()
        .copied()
        .find(|r| r.contains(what))
        .unwrap_or_else(|| panic!("no row {what:?} in {rows:#?}"))
}

#[test]
fn quick_bench_prints_a_readable_table_per_backend() {
    let mut only = vec!["memory", "file"];
    let etcd = server_from_env("LOCKS_TEST_ETCD").is_some();
    let zookeeper = server_from_env("LOCKS_TEST_ZK").is_some();
    if etcd {
        only.extend(["etcd", "etcd-cluster"]);
    }
    if zookeeper {
        only.extend(["zookeeper", "zookeeper-cluster"]);
    }
    let redis = server_from_env("LOCKS_TEST_REDIS").is_some();
    if redis {
        only.push("redis");
    }
    let python = server_from_env("LOCKS_TEST_PYTHON").is_some();
    if python {
        only.push("python");
    }
    let (code, report, stderr) = output(
        Command::new(env!("CARGO_BIN_EXE_locks-bench"))
            .env_remove("LOCKS_CONFIG")
            .args(["run", "--quick", "--only", &only.join(",")]),
    );
    assert_eq!(code, 0, "locks-bench run failed:\n{report}\n{stderr}");
    assert!(report.starts_with("locks-bench run --quick:"), "{report}");

    // Every row with a target ends in ratio=X.XX target=Y.YY, with sane numbers.
    let targeted: Vec<&str> = report.lines().filter(|l| l.contains("target=")).collect();
    assert!(targeted.len() >= 4, "{report}");
    for line in &targeted {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [.., ratio, target] = fields[..] else {
            panic!("short row {line:?}")
        };
        for (field, key) in [(ratio, "ratio="), (target, "target=")] {
            let value = field
                .strip_prefix(key)
                .unwrap_or_else(|| panic!("{line:?} does not end in ratio=X.XX target=Y.YY"));
            assert_eq!(value.split('.').nth(1).map(str::len), Some(2), "{line:?}");
            let value: f64 = value.parse().expect("a number");
            // A ratio rounds to 0.00 against a floor 200× slower (tooz polling).
            assert!(value.is_finite() && value >= 0.0, "{line:?}");
        }
        assert!(number(line, "target") > 0.0, "{line:?}");
        let (ours, floor) = (number(line, "ours"), number(line, "floor"));
        assert!(ours > 0.0 && floor > 0.0, "{line:?}");
        // ratio = ours / floor, up to the rounding of all three to two
        // decimals (±0.005 on ours and floor moves ours/floor by at most
        // 0.005 (1 + ratio) / (floor - 0.005)).
        let ratio = number(line, "ratio");
        if floor > 0.01 {
            let slack = 0.005 * (1.0 + ratio) / (floor - 0.005) + 0.01;
            assert!((ratio - ours / floor).abs() <= slack, "{line:?}");
        }
    }

    let memory = section(&report, "memory");
    row(&memory, "cycle vs raw tokio::sync::Mutex cycle");
    row(&memory, "distinct names vs raw mutex cycle");

    let file = section(&report, "file");
    row(&file, "cycle vs raw OFD lock+unlock on an open fd");
    let handoff = row(&file, "handoff between processes p50");
    assert!(field(handoff, "p99").unwrap() >= field(handoff, "ours").unwrap());
    row(&file, "handoff vs raw OFD handoff");
    contention(&file);
    queue(&file);

    if etcd {
        let rows = section(&report, "etcd");
        row(&rows, "cycle vs raw put+delete");
        row(&rows, "handoff p50 vs one write round trip");
        let held = row(&rows, "names held on one lease");
        assert!(field(held, "held").unwrap() >= 1000.0, "{held}");
        contention(&rows);
        queue(&rows);
    }
    if zookeeper {
        let rows = section(&report, "zookeeper");
        row(&rows, "cycle vs raw create+delete");
        row(&rows, "handoff p50 vs one write round trip");
        let held = row(&rows, "names held on one session");
        assert!(field(held, "held").unwrap() >= 1000.0, "{held}");
        contention(&rows);
        queue(&rows);
    }
    if redis {
        let rows = section(&report, "redis");
        // The server's address, never the password of LOCKS_TEST_REDIS_PASSWORD.
        if let Ok(password) = std::env::var("LOCKS_TEST_REDIS_PASSWORD")
            && !password.is_empty()
        {
            assert!(!report.contains(&password), "{report}");
        }
        let cycle = row(&rows, "cycle vs raw SET NX PX+DEL");
        assert!(cycle.ends_with("target=1.30"), "{cycle}");
        let handoff = row(&rows, "handoff p50 vs one write round trip");
        assert!(
            number(handoff, "p99") >= number(handoff, "ours"),
            "{handoff}"
        );
        let held = row(&rows, "names held on one connection");
        assert!(field(held, "held").unwrap() >= 1000.0, "{held}");
        contention(&rows);
        queue(&rows);
    }
    for (present, service) in [(etcd, "etcd"), (zookeeper, "zookeeper")] {
        if present {
            // The section starts a 3-member cluster of its own and kills its leader.
            let rows = section(&report, &format!("{service} cluster"));
            let line = row(&rows, "unavailability after a leader kill, ms");
            assert!(line.ends_with("target=2.00"), "{line}");
            assert!(number(line, "max") >= number(line, "ours"), "{line}");
        }
    }
    if python {
        let rows = section(&report, "python");
        row(&rows, "file cycle vs Python's raw fcntl.lockf");
        for what in ["cycle", "handoff"] {
            for theirs in ["oslo-external (lock_path)", "tooz file"] {
                let line = row(&rows, &format!("file {what} vs {theirs}"));
                assert!(number(line, "speedup") > 0.0, "{line}");
            }
            if etcd {
                row(&rows, &format!("etcd {what} vs tooz etcd3+http"));
            }
            if zookeeper {
                row(&rows, &format!("zookeeper {what} vs tooz zookeeper"));
            }
            if redis {
                let line = row(&rows, &format!("redis {what} vs tooz redis"));
                assert!(line.ends_with("target=0.10"), "{line}");
            }
        }
    }
    assert!(report.lines().any(|l| l.starts_with("total ")), "{report}");
}

/// `ours=` of a row, which every row has.
fn number(row: &str, key: &str) -> f64 {
    field(row, key).unwrap_or_else(|| panic!("no {key}= in {row:?}"))
}

/// The queue rows: handoffs with 1, 16 and 64 processes waiting on one name,
/// the longest queue held to 1.5× the handoff of one.
fn queue(rows: &[&str]) {
    let single = number(row(rows, "handoff, 1 process queued p50"), "ours");
    let middle = row(rows, "handoff, 16 processes queued p50 vs 1 queued");
    assert!(!middle.contains("target="), "{middle}");
    let longest = row(rows, "handoff, 64 processes queued p50 vs 1 queued");
    assert!(longest.ends_with("target=1.50"), "{longest}");
    for line in [middle, longest] {
        assert!(number(line, "p99") >= number(line, "ours"), "{line}");
        assert!((number(line, "floor") - single).abs() < 0.01, "{line}");
    }
}

/// The contention row: four processes all got turns, and fairness is min/max.
fn contention(rows: &[&str]) {
    let line = row(rows, "contention: 4 processes on one name");
    let fairness = number(line, "fairness");
    assert!(fairness > 0.0 && fairness <= 1.0, "{line}");
    assert!(number(line, "cycles/s") > 0.0, "{line}");
}
