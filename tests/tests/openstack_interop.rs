//! Interoperation with OpenStack's own lock libraries, tested both ways
//! against the real oslo.concurrency and tooz (see docs/openstack.md).
//!
//! The Rust side is an in-process [`Locks`] client opened from a
//! `compat = "openstack"` configuration with prefix `cinder`; the Python side
//! is `tests/python/peer.py`, which takes the same lock as Cinder does:
//!
//! | mechanism        | Python                                            | Rust                                |
//! |------------------|---------------------------------------------------|-------------------------------------|
//! | oslo external    | `lockutils.lock(n, 'cinder-', external=True)`, lock path from `$OSLO_LOCK_PATH` | Node scope, `lock_path = DIR` |
//! | tooz file        | `get_coordinator("file://DIR")`                   | Global, `global = "file://DIR"`     |
//! | tooz etcd3+http  | `get_coordinator("etcd3+http://H:P")`             | Global, the same URL pasted         |
//! | tooz zookeeper   | `get_coordinator("zookeeper://H:P")`              | Global, the same URL                |
//!
//! For each: a Python holder makes our try-once fail and our wait pend until
//! it releases; our holder makes Python's non-blocking acquire fail and its
//! blocking acquire pend until we release. And a Python and a Rust contender
//! take turns 100 times each, stamping CLOCK_MONOTONIC enter/exit lines into
//! one file; no two intervals may overlap.
//!
//! Needs `LOCKS_TEST_PYTHON` (from `ci/python.sh`), and `LOCKS_TEST_ETCD` /
//! `LOCKS_TEST_ZK` for the server mechanisms; each is skipped without its
//! variable unless `CI=true`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use locks::{Config, ErrorKind, LockGuard, Locks, Scope, Wait};
use locks_core::testing::server_from_env;
use locks_tests::{Peer, python_from_env};
use tempfile::TempDir;

/// How long a blocked acquire must stay blocked to count as waiting: more
/// than tooz etcd3gw's 1 s poll, so a Python waiter that should not get in
/// has had a chance to try.
const BLOCKED_FOR: Duration = Duration::from_millis(1300);
/// How long the other side may take to get in after a release (etcd3gw polls
/// once a second; fasteners backs off to 0.1 s).
const HANDOVER: Duration = Duration::from_secs(10);
/// Critical sections per side in the alternation test.
const ROUNDS: usize = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mechanism {
    OsloExternal,
    ToozFile,
    ToozEtcd,
    ToozZookeeper,
}

/// One mechanism, set up on both sides.
struct Setup {
    mechanism: Mechanism,
    python: PathBuf,
    /// Holds the oslo lock path (`DIR/oslo`) and the tooz file dir (`DIR/tooz`).
    dir: TempDir,
    locks: Locks,
    /// The lock name without the `cinder-` prefix.
    name: String,
    /// `peer.py` arguments before the name, and its extra environment.
    peer_mech: &'static str,
    peer_target: String,
    peer_env: Vec<(String, String)>,
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A name no other test, process or run uses; the `/` exercises each
/// library's rule for it (`_` in oslo, a subdirectory in tooz file, nested
/// znodes in ZooKeeper, a plain byte in etcd).
fn unique_name(test: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "interop-{test}-{}-{nanos:x}-{}/volume-1",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

impl Setup {
    /// `None` (skipped) when the Python or the server is not configured.
    async fn new(mechanism: Mechanism, test: &str) -> Option<Setup> {
        let python = python_from_env()?;
        let dir = tempfile::tempdir().expect("temp dir");
        let oslo_dir = dir.path().join("oslo");
        let tooz_dir = dir.path().join("tooz");
        std::fs::create_dir_all(&oslo_dir).expect("mkdir oslo");
        let tooz_file_url = format!("file://{}", tooz_dir.display());
        let (global, peer_mech, peer_target, peer_env) = match mechanism {
            Mechanism::OsloExternal => (
                tooz_file_url,
                "oslo",
                "-".to_owned(),
                vec![("OSLO_LOCK_PATH".to_owned(), oslo_dir.display().to_string())],
            ),
            Mechanism::ToozFile => (tooz_file_url.clone(), "tooz", tooz_file_url, vec![]),
            Mechanism::ToozEtcd => {
                let url = format!("etcd3+http://{}", server_from_env("LOCKS_TEST_ETCD")?);
                (url.clone(), "tooz", url, vec![])
            }
            Mechanism::ToozZookeeper => {
                let url = format!("zookeeper://{}", server_from_env("LOCKS_TEST_ZK")?);
                (url.clone(), "tooz", url, vec![])
            }
        };
        let text = format!(
            "compat = \"openstack\"\nprefix = \"cinder\"\nlock_path = \"{}\"\n[backends]\nglobal = \"{global}\"\n",
            oslo_dir.display()
        );
        let config = Config::from_toml_str(&text, dir.path(), "interop test")
            .unwrap_or_else(|e| panic!("config:\n{text}\n{}", e.report()));
        let locks = Locks::open(config)
            .await
            .unwrap_or_else(|e| panic!("open:\n{text}\n{}", e.report()));
        assert_eq!(locks.prefix(), "cinder-", "oslo's prefix rule adds the `-`");
        Some(Setup {
            mechanism,
            python,
            dir,
            locks,
            name: unique_name(test),
            peer_mech,
            peer_target,
            peer_env,
        })
    }

    fn scope(&self) -> Scope {
        match self.mechanism {
            Mechanism::OsloExternal => Scope::Node,
            _ => Scope::Global,
        }
    }

    fn peer(&self) -> Peer {
        let env: Vec<(&str, &str)> = self
            .peer_env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        Peer::start(
            &self.python,
            [self.peer_mech, &self.peer_target, &self.name],
            &env,
        )
    }

    async fn lock(&self, wait: Wait) -> locks::Result<LockGuard> {
        self.locks.lock_name(self.scope(), &self.name, wait).await
    }

    /// The file both sides lock, for the file mechanisms.
    fn lock_file(&self) -> Option<PathBuf> {
        let full = format!("cinder-{}", self.name);
        match self.mechanism {
            // oslo: `/` becomes `_`, flat in the lock path.
            Mechanism::OsloExternal => {
                Some(self.dir.path().join("oslo").join(full.replace('/', "_")))
            }
            // tooz file: `/` makes a subdirectory.
            Mechanism::ToozFile => Some(self.dir.path().join("tooz").join(full)),
            _ => None,
        }
    }
}

/// A Python holder excludes us, and we get the lock once it releases.
async fn python_holds_rust_waits(setup: &Setup) {
    let mut peer = setup.peer();
    peer.ask("try", "GOT", HANDOVER);
    if let Some(file) = setup.lock_file() {
        assert!(
            file.is_file(),
            "Python's lock file {} exists",
            file.display()
        );
    }

    let err = setup
        .lock(Wait::TryOnce)
        .await
        .expect_err("Python holds the lock: our try-once must fail");
    assert_eq!(err.kind(), ErrorKind::WouldBlock, "{}", err.report());

    let waiter = {
        let locks = setup.locks.clone();
        let (scope, name) = (setup.scope(), setup.name.clone());
        tokio::spawn(async move {
            let guard = locks
                .lock_name(scope, &name, Wait::Timeout(Duration::from_secs(30)))
                .await;
            (guard, Instant::now())
        })
    };
    tokio::time::sleep(BLOCKED_FOR).await;
    assert!(
        !waiter.is_finished(),
        "our wait must still pend while Python holds the lock"
    );
    let released = Instant::now();
    peer.ask("release", "RELEASED", HANDOVER);
    let (guard, got) = waiter.await.expect("waiter task");
    let guard = guard.unwrap_or_else(|e| panic!("our wait after Python's release: {}", e.report()));
    let handover = got.saturating_duration_since(released);
    assert!(
        handover < HANDOVER,
        "got in {handover:?} after Python's release"
    );
    eprintln!(
        "{:?}: Python release → Rust holds in {handover:?}",
        setup.mechanism
    );

    // Held by us now: Python is shut out in turn.
    peer.ask("try", "BUSY", HANDOVER);
    guard
        .release()
        .await
        .unwrap_or_else(|e| panic!("release: {}", e.report()));
    peer.quit();
}

/// Our holder excludes Python, and Python gets the lock once we release.
async fn rust_holds_python_waits(setup: &Setup) {
    let guard = setup
        .lock(Wait::TryOnce)
        .await
        .unwrap_or_else(|e| panic!("our try-once on a free lock: {}", e.report()));
    if let Some(file) = setup.lock_file() {
        assert!(file.is_file(), "our lock file {} exists", file.display());
    }
    let mut peer = setup.peer();
    peer.ask("try", "BUSY", HANDOVER);
    peer.send("acquire");
    peer.expect_silence(BLOCKED_FOR);
    let released = Instant::now();
    guard
        .release()
        .await
        .unwrap_or_else(|e| panic!("release: {}", e.report()));
    peer.expect("HELD", HANDOVER);
    eprintln!(
        "{:?}: Rust release → Python holds in {:?}",
        setup.mechanism,
        released.elapsed()
    );

    // Python holds now: we are shut out in turn, and get in after it.
    let err = setup
        .lock(Wait::TryOnce)
        .await
        .expect_err("Python holds the lock: our try-once must fail");
    assert_eq!(err.kind(), ErrorKind::WouldBlock, "{}", err.report());
    peer.ask("release", "RELEASED", HANDOVER);
    let again = setup
        .lock(Wait::Timeout(HANDOVER))
        .await
        .unwrap_or_else(|e| panic!("after Python's release: {}", e.report()));
    again
        .release()
        .await
        .unwrap_or_else(|e| panic!("release: {}", e.report()));
    if let Some(file) = setup.lock_file() {
        assert!(file.is_file(), "release never unlinks {}", file.display());
    }
    peer.quit();
}

async fn both_ways(mechanism: Mechanism) {
    let Some(setup) = Setup::new(mechanism, "both").await else {
        return;
    };
    python_holds_rust_waits(&setup).await;
    rust_holds_python_waits(&setup).await;
    if mechanism == Mechanism::OsloExternal {
        // The oslo lock path holds exactly the one oslo file: same name, same place.
        let files: Vec<String> = std::fs::read_dir(setup.dir.path().join("oslo"))
            .expect("list the lock path")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(files, [format!("cinder-{}", setup.name.replace('/', "_"))]);
    }
}

/// CLOCK_MONOTONIC in nanoseconds, the clock of Python's `time.monotonic_ns()`.
fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always exists on Linux.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_MONOTONIC)");
    u64::try_from(ts.tv_sec).expect("non-negative") * 1_000_000_000
        + u64::try_from(ts.tv_nsec).expect("non-negative")
}

/// One line on an `O_APPEND` file, in one write, as the Python side does.
fn stamp(log: &mut std::fs::File, what: &str) {
    log.write_all(format!("{what} rs {}\n", monotonic_ns()).as_bytes())
        .expect("append to the interval log");
}

/// The intervals of the log, `(enter, exit, who)`, sorted by entry.
fn intervals(log: &Path) -> Vec<(u64, u64, String)> {
    let text = std::fs::read_to_string(log).expect("read the interval log");
    let mut open: std::collections::HashMap<String, u64> = Default::default();
    let mut out = Vec::new();
    for line in text.lines() {
        let parts: Vec<&str> = line.split(' ').collect();
        let [what, who, ns] = parts[..] else {
            panic!("malformed log line `{line}`")
        };
        let ns: u64 = ns.parse().unwrap_or_else(|e| panic!("`{line}`: {e}"));
        match what {
            "enter" => {
                assert!(
                    open.insert(who.to_owned(), ns).is_none(),
                    "{who} entered twice"
                );
            }
            "exit" => {
                let enter = open
                    .remove(who)
                    .unwrap_or_else(|| panic!("{who} exited without entering"));
                assert!(enter <= ns, "{who}: exit before enter");
                out.push((enter, ns, who.to_owned()));
            }
            _ => panic!("malformed log line `{line}`"),
        }
    }
    assert!(open.is_empty(), "unfinished intervals: {open:?}");
    out.sort();
    out
}

/// Python and Rust take turns, `ROUNDS` each; the intervals never overlap.
async fn alternation(mechanism: Mechanism) {
    let Some(setup) = Setup::new(mechanism, "alternate").await else {
        return;
    };
    let log_path = setup.dir.path().join("intervals.log");
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .expect("open the interval log");
    // etcd3gw's blocking acquire polls once a second, which makes 100 handovers
    // take minutes: there Python tries without blocking every 5 ms instead.
    let poll_ms = if mechanism == Mechanism::ToozEtcd {
        5
    } else {
        0
    };
    let (hold_ms, gap_ms) = (1, 3);
    let mut peer = setup.peer();
    let start = Instant::now();
    peer.send(&format!(
        "contend {} {ROUNDS} {hold_ms} {gap_ms} {poll_ms}",
        log_path.display()
    ));
    for _ in 0..ROUNDS {
        let guard = setup
            .lock(Wait::Timeout(Duration::from_secs(60)))
            .await
            .unwrap_or_else(|e| panic!("our acquire: {}", e.report()));
        stamp(&mut log, "enter");
        tokio::time::sleep(Duration::from_millis(hold_ms)).await;
        stamp(&mut log, "exit");
        guard
            .release()
            .await
            .unwrap_or_else(|e| panic!("release: {}", e.report()));
        tokio::time::sleep(Duration::from_millis(gap_ms)).await;
    }
    peer.expect("DONE", Duration::from_secs(120));
    let took = start.elapsed();
    peer.quit();

    let all = intervals(&log_path);
    for who in ["py", "rs"] {
        let n = all.iter().filter(|i| i.2 == who).count();
        assert_eq!(n, ROUNDS, "{who} completed {n} critical sections");
    }
    for pair in all.windows(2) {
        let ((_, exit, a), (enter, _, b)) = (&pair[0], &pair[1]);
        assert!(
            exit <= enter,
            "{a} still held the lock ({exit}) when {b} entered ({enter}): {} ns overlap",
            exit - enter
        );
    }
    let handovers = all.windows(2).filter(|p| p[0].2 != p[1].2).count();
    eprintln!(
        "{mechanism:?}: {} critical sections, {handovers} handovers between Python and Rust, {took:?}",
        all.len()
    );
    assert!(
        handovers >= 20,
        "the two sides hardly contended ({handovers} handovers): the test proves little"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oslo_external_lock_both_ways() {
    both_ways(Mechanism::OsloExternal).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tooz_file_both_ways() {
    both_ways(Mechanism::ToozFile).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tooz_etcd3_http_both_ways() {
    both_ways(Mechanism::ToozEtcd).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tooz_zookeeper_both_ways() {
    both_ways(Mechanism::ToozZookeeper).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oslo_external_lock_alternation() {
    alternation(Mechanism::OsloExternal).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tooz_file_alternation() {
    alternation(Mechanism::ToozFile).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tooz_etcd3_http_alternation() {
    alternation(Mechanism::ToozEtcd).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tooz_zookeeper_alternation() {
    alternation(Mechanism::ToozZookeeper).await;
}

/// As in oslo, a missing lock path is an error, not a silent temporary directory.
#[tokio::test]
async fn missing_oslo_lock_path_is_an_error() {
    if std::env::var_os("OSLO_LOCK_PATH").is_some_and(|p| !p.is_empty()) {
        eprintln!("skipping: OSLO_LOCK_PATH is set in this environment");
        return;
    }
    let text =
        "compat = \"openstack\"\nprefix = \"cinder\"\n[backends]\nglobal = \"file:///tmp\"\n";
    let config = Config::from_toml_str(text, Path::new("."), "t").expect("parses");
    let err = Locks::open(config).await.expect_err("no lock path");
    assert_eq!(err.kind(), ErrorKind::InvalidConfig, "{}", err.report());
    assert!(err.message().contains("lock_path"), "{}", err.report());
}

/// tooz's file driver normalizes a name into a path below its directory
/// (`x//y/./z` is `x/y/z`) and refuses names that leave it: so do we.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tooz_file_names_normalize_and_cannot_escape() {
    let Some(setup) = Setup::new(Mechanism::ToozFile, "paths").await else {
        return;
    };
    let base = setup.name.replace('/', "-");
    let spelled = format!("{base}//y/./z");
    let mut peer = Peer::start(
        &setup.python,
        [setup.peer_mech, &setup.peer_target, &spelled],
        &[],
    );
    peer.ask("try", "GOT", HANDOVER);
    let file = setup
        .dir
        .path()
        .join("tooz")
        .join(format!("cinder-{base}"))
        .join("y/z");
    assert!(file.is_file(), "tooz locked {}", file.display());
    let err = setup
        .locks
        .lock_name(Scope::Global, &format!("{base}/y/z"), Wait::TryOnce)
        .await
        .expect_err("the same normalized path is the same lock");
    assert_eq!(err.kind(), ErrorKind::WouldBlock, "{}", err.report());
    peer.ask("release", "RELEASED", HANDOVER);
    peer.quit();

    let escaping = format!("{base}/../../escape");
    let result = setup
        .locks
        .lock_name(Scope::Global, &escaping, Wait::TryOnce)
        .await;
    assert!(
        result.is_err(),
        "`cinder-{escaping}` leaves the tooz directory and must be refused"
    );
    assert!(!setup.dir.path().join("escape").exists());

    // `cinder-..` is a plain file name to tooz, not a parent directory.
    let guard = setup
        .locks
        .lock_name(Scope::Global, "../escape", Wait::TryOnce)
        .await
        .unwrap_or_else(|e| panic!("`cinder-../escape` stays inside: {}", e.report()));
    assert!(
        setup.dir.path().join("tooz/cinder-../escape").is_file(),
        "as tooz: DIR/cinder-../escape"
    );
    guard
        .release()
        .await
        .unwrap_or_else(|e| panic!("release: {}", e.report()));
}
