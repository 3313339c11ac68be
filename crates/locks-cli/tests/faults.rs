//! Fault injection through the `locks` binary and its mutual-exclusion checker
//! (`locks check`, docs/reliability.md):
//!
//! - the holder killed with SIGKILL (file, etcd, ZooKeeper): the next waiter
//!   proceeds (file: at once; etcd and ZooKeeper: within the TTL or session
//!   timeout + 1 s) and the checker's log shows no overlap;
//! - etcd and ZooKeeper frozen with SIGSTOP past the holder's TTL or session
//!   timeout (a server of their own, never the shared one): the holder is told
//!   the lock is lost before anybody else acquires it;
//! - etcd restarted with its data dir: a holder whose lease is still valid
//!   keeps its lock, clients reconnect, waiters acquire afterwards;
//! - the lock directory deleted, or replaced by a file; a symlink planted at a
//!   lock path; names that try to leave the directory: typed errors, no escape;
//! - credentials in URLs never appear in `Debug` output, messages or stderr.
//!
//! The server tests run when `LOCKS_TEST_ETCD` / `LOCKS_TEST_ZK` are set (the
//! sign that the servers are installed), and fail instead of skipping under
//! `CI=true`.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::{Running, locks, output};

// ---------------------------------------------------------------- helpers

/// The address in `var`, or `None` to skip (a failure under `CI=true`).
fn server(var: &str) -> Option<String> {
    locks_core::testing::server_from_env(var)
}

fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec to the pointer it is given.
    assert_eq!(
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &raw mut ts) },
        0
    );
    u64::try_from(ts.tv_sec).expect("positive") * 1_000_000_000
        + u64::try_from(ts.tv_nsec).expect("positive")
}

/// A directory with a config whose Node scope is a lock directory in it and
/// whose Global scope is `global` (the same lock directory when `None`).
struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Env {
        Env {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn config(&self, file: &str, global: Option<&str>) -> PathBuf {
        let locks = self.path("locks");
        let global = global.map_or_else(|| format!("file://{}", locks.display()), str::to_owned);
        let path = self.path(file);
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
}

/// A `locks check-worker --announce` holding the lock once, for `hold`.
struct Holder {
    run: Running,
    token: u64,
    pid: u32,
    enter: u64,
}

impl Holder {
    fn start(config: &Path, scope: &str, name: &str, hold: Duration, log: &Path) -> Holder {
        Holder::start_with(config, scope, name, hold, log, &[])
    }

    /// [`start`](Self::start) with more `check-worker` arguments.
    fn start_with(
        config: &Path,
        scope: &str,
        name: &str,
        hold: Duration,
        log: &Path,
        more: &[&str],
    ) -> Holder {
        let mut cmd = locks(config);
        cmd.args(["check-worker", "--announce", "--iterations", "1"])
            .args(more)
            .args(["--scope", scope, "--name", name, "--timeout", "30s"])
            .arg("--hold-us")
            .arg(hold.as_micros().to_string())
            .arg("--log")
            .arg(log);
        let mut holder = Holder {
            run: Running::start(cmd),
            token: 0,
            pid: 0,
            enter: 0,
        };
        let line = holder.expect_line("acquired ", Duration::from_secs(30));
        let fields: Vec<u64> = line
            .split_ascii_whitespace()
            .skip(1)
            .map(|f| f.parse().expect("numeric field"))
            .collect();
        holder.token = fields[0];
        holder.pid = u32::try_from(fields[1]).expect("pid");
        holder.enter = fields[2];
        holder
    }

    fn expect_line(&self, prefix: &str, limit: Duration) -> String {
        self.run.expect_line_within(prefix, limit)
    }

    /// Sends `signal` to the holder's process.
    fn signal(&self, signal: libc::c_int) {
        let pid = libc::pid_t::try_from(self.run.child.id()).expect("pid fits");
        // SAFETY: plain kill(2) on our own child process.
        assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
    }

    /// SIGKILL; returns the monotonic time read just before the signal, a
    /// lower bound of the moment the holder died.
    fn kill9(&mut self) -> u64 {
        let at = monotonic_ns();
        let pid = libc::pid_t::try_from(self.run.child.id()).expect("pid fits");
        // SAFETY: plain kill(2) on our own child process.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
        self.run.child.wait().expect("wait for the killed holder");
        at
    }

    fn wait(&mut self, limit: Duration) -> i32 {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.run.child.try_wait().expect("try_wait") {
                return status.code().unwrap_or(-1);
            }
            assert!(
                Instant::now() < deadline,
                "the holder still runs after {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// `locks check` in the background, appending to `log`.
fn start_check(
    config: &Path,
    scope: &str,
    name: &str,
    processes: usize,
    iterations: usize,
    log: &Path,
) -> Child {
    start_check_holding(config, scope, name, processes, iterations, 0, log)
}

/// `locks check` in the background, each holding lasting `hold_us` µs.
fn start_check_holding(
    config: &Path,
    scope: &str,
    name: &str,
    processes: usize,
    iterations: usize,
    hold_us: u64,
    log: &Path,
) -> Child {
    locks(config)
        .args(["check", "--scope", scope, "--name", name])
        .args(["--timeout", "60s", "--hold-us"])
        .arg(hold_us.to_string())
        .arg("--processes")
        .arg(processes.to_string())
        .arg("--iterations")
        .arg(iterations.to_string())
        .arg("--log")
        .arg(log)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn locks check")
}

/// The checker's stdout, asserting it succeeded with no overlap and no regression.
fn expect_clean(out: &Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last = stdout.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("handoffs=") && last.ends_with(" overlaps=0 token_regressions=0"),
        "checker: {stdout}\n{stderr}"
    );
    assert!(out.status.success(), "checker: {stdout}\n{stderr}");
    stdout
}

/// Verifies `log` alone (`--processes 0`).
fn reverify(config: &Path, log: &Path) -> String {
    let out = locks(config)
        .args(["check", "--scope", "node", "--name", "unused"])
        .args(["--processes", "0", "--iterations", "0", "--log"])
        .arg(log)
        .output()
        .expect("run locks check");
    expect_clean(&out)
}

fn append_line(log: &Path, line: &str) {
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .mode(0o600)
        .open(log)
        .expect("open log");
    assert_eq!(f.write(line.as_bytes()).expect("append"), line.len());
}

/// `(token, pid, enter, exit, lost)` per line.
fn holdings(log: &Path) -> Vec<(u64, u32, u64, u64, bool)> {
    std::fs::read_to_string(log)
        .expect("read log")
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split_ascii_whitespace().collect();
            (
                f[0].parse().expect("token"),
                f[1].parse().expect("pid"),
                f[2].parse().expect("enter"),
                f[3].parse().expect("exit"),
                f.get(4) == Some(&"lost"),
            )
        })
        .collect()
}

/// A server of this test's own (ci/etcd.sh or ci/zookeeper.sh into a temporary
/// directory), continued and stopped on drop.
struct Dedicated {
    dir: tempfile::TempDir,
    script: &'static str,
    addr: String,
    pid: i32,
}

impl Dedicated {
    fn start(script: &'static str) -> Dedicated {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut server = Dedicated {
            dir,
            script,
            addr: String::new(),
            pid: 0,
        };
        server.run("start");
        server
    }

    fn script_path(&self) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("../../ci/{}.sh", self.script))
    }

    fn run(&mut self, action: &str) {
        let out = Command::new("bash")
            .arg(self.script_path())
            .arg(action)
            .arg(self.dir.path())
            .output()
            .expect("run the server script");
        assert!(
            out.status.success(),
            "ci/{}.sh {action}: {}{}",
            self.script,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let env = std::fs::read_to_string(self.dir.path().join(format!("{}.env", self.script)))
            .expect("server env file");
        let var = if self.script == "etcd" {
            "LOCKS_TEST_ETCD"
        } else {
            "LOCKS_TEST_ZK"
        };
        let value = |key: String| {
            env.lines()
                .find_map(|l| l.strip_prefix(&format!("{key}=")).map(str::to_owned))
                .unwrap_or_else(|| panic!("{key} missing: {env}"))
        };
        self.addr = value(var.to_owned());
        self.pid = value(format!("{var}_PID")).parse().expect("pid");
    }

    fn signal(&self, signal: libc::c_int) {
        // SAFETY: plain kill(2) on the server this test started.
        assert_eq!(unsafe { libc::kill(self.pid, signal) }, 0);
    }
}

impl Drop for Dedicated {
    fn drop(&mut self) {
        // SAFETY: plain kill(2) on the server this test started.
        unsafe { libc::kill(self.pid, libc::SIGCONT) };
        let _ = Command::new("bash")
            .arg(self.script_path())
            .arg("stop")
            .arg(self.dir.path())
            .output();
    }
}

// ---------------------------------------------------------------- kill -9

/// The holder is killed while M waiters of `locks check` queue behind it; the
/// killed holding (from its `acquired` line to the kill) goes into the log,
/// which must show no overlap; the first waiter enters within `bound`.
fn killed_holder(config: &Path, env: &Env, bound: Duration) {
    let log = env.path("check.log");
    let name = "fault-kill9";
    let mut holder = Holder::start(config, "global", name, Duration::from_secs(60), &log);
    let checker = start_check(config, "global", name, 3, 10, &log);
    std::thread::sleep(Duration::from_millis(700));
    let killed_at = holder.kill9();
    append_line(
        &log,
        &format!(
            "{} {} {} {killed_at}\n",
            holder.token, holder.pid, holder.enter
        ),
    );
    let out = checker.wait_with_output().expect("wait for the checker");
    expect_clean(&out);
    let all = reverify(config, &log);
    assert!(
        all.lines().last().unwrap().starts_with("handoffs=30 "),
        "{all}"
    );
    let first_after = holdings(&log)
        .iter()
        .filter(|h| h.1 != holder.pid)
        .map(|h| h.2)
        .min()
        .expect("waiters held the lock");
    assert!(first_after > killed_at, "a waiter entered before the kill");
    let delay = Duration::from_nanos(first_after - killed_at);
    eprintln!("first waiter entered {delay:?} after the holder was killed");
    assert!(delay < bound, "the next waiter entered after {delay:?}");
}

#[test]
fn killed_holder_file_next_waiter_at_once() {
    let env = Env::new();
    let config = env.config("file.toml", None);
    killed_holder(&config, &env, Duration::from_secs(1));
}

#[test]
fn killed_holder_etcd_next_waiter_within_ttl() {
    let Some(addr) = server("LOCKS_TEST_ETCD") else {
        return;
    };
    let env = Env::new();
    let prefix = format!("/locks-faults-{}/", std::process::id());
    let url = format!("etcd://{addr}?ttl=2s&prefix={}", prefix.replace('/', "%2F"));
    let config = env.config("etcd.toml", Some(&url));
    killed_holder(&config, &env, Duration::from_secs(3));
}

#[test]
fn killed_holder_zookeeper_next_waiter_within_session_timeout() {
    let Some(addr) = server("LOCKS_TEST_ZK") else {
        return;
    };
    let env = Env::new();
    let url = format!(
        "zookeeper://{addr}/locks-faults-{}?session_timeout=2s",
        std::process::id()
    );
    let config = env.config("zk.toml", Some(&url));
    killed_holder(&config, &env, Duration::from_secs(3));
}

/// The `ci/redis.sh start` server as a `redis://` URL with a 2 s lock
/// timeout and a namespace of this run.
fn redis_url() -> Option<String> {
    let addr = server("LOCKS_TEST_REDIS")?;
    let password = std::env::var("LOCKS_TEST_REDIS_PASSWORD").unwrap_or_default();
    Some(format!(
        "redis://:{password}@{addr}?lock_timeout=2&namespace=locks-faults-{}",
        std::process::id()
    ))
}

#[test]
fn killed_holder_redis_next_waiter_within_lock_timeout() {
    let Some(url) = redis_url() else {
        return;
    };
    let env = Env::new();
    let config = env.config("redis.toml", Some(&url));
    killed_holder(&config, &env, Duration::from_secs(3));
}

// ---------------------------------------------------------------- SIGSTOP

/// The server is frozen while one holder (short TTL) holds and two checker
/// processes (long TTL) wait; the server is continued only once the holder
/// printed `lost`, so its recorded exit comes before any other enter.
fn frozen_server(script: &'static str, holder_options: &str, waiter_options: &str) {
    let server = Dedicated::start(script);
    let env = Env::new();
    let scheme = if script == "etcd" {
        "etcd"
    } else {
        "zookeeper"
    };
    let holder_config = env.config(
        "holder.toml",
        Some(&format!("{scheme}://{}{holder_options}", server.addr)),
    );
    let waiter_config = env.config(
        "waiter.toml",
        Some(&format!("{scheme}://{}{waiter_options}", server.addr)),
    );
    let log = env.path("check.log");
    let name = "fault-sigstop";
    let mut holder = Holder::start(
        &holder_config,
        "global",
        name,
        Duration::from_secs(60),
        &log,
    );
    let checker = start_check(&waiter_config, "global", name, 2, 5, &log);
    std::thread::sleep(Duration::from_millis(1500));
    let stopped = Instant::now();
    server.signal(libc::SIGSTOP);
    holder.expect_line("lost ", Duration::from_secs(15));
    let lost_after = stopped.elapsed();
    eprintln!("{script}: the holder saw the lock lost {lost_after:?} after SIGSTOP");
    assert!(
        lost_after >= Duration::from_millis(900),
        "lost after only {lost_after:?}"
    );
    std::thread::sleep(Duration::from_millis(300));
    server.signal(libc::SIGCONT);
    assert_eq!(
        holder.wait(Duration::from_secs(30)),
        0,
        "the holder ends normally"
    );
    let out = checker.wait_with_output().expect("wait for the checker");
    let stdout = expect_clean(&out);
    assert!(stdout.contains(" lost=1 "), "{stdout}");
    let all = holdings(&log);
    assert_eq!(all.len(), 11, "{all:?}");
    let lost: Vec<_> = all.iter().filter(|h| h.4).collect();
    assert_eq!(lost.len(), 1, "{all:?}");
    assert_eq!(lost[0].1, holder.pid);
    assert!(
        all.iter()
            .filter(|h| h.1 != holder.pid)
            .all(|h| h.2 > lost[0].3),
        "every other holding entered after the holder saw the loss: {all:?}"
    );
}

#[test]
fn frozen_etcd_the_holder_is_told_before_anyone_else_acquires() {
    if server("LOCKS_TEST_ETCD").is_none() {
        return;
    }
    frozen_server("etcd", "?ttl=2s", "?ttl=20s&connect_timeout=10s");
}

#[test]
fn frozen_zookeeper_the_holder_is_told_before_anyone_else_acquires() {
    if server("LOCKS_TEST_ZK").is_none() {
        return;
    }
    frozen_server(
        "zookeeper",
        "/locks-faults?session_timeout=2s",
        "/locks-faults?session_timeout=20s&connect_timeout=10s",
    );
}

// ---------------------------------------------------------------- partitioned `locks run`

/// `locks run` holds a lock through a fault proxy while its command runs; the
/// proxy then blackholes (a partition). `locks run` must stop its command
/// (SIGTERM) at least min(TTL/5, 1 s) before the server can expire its lease
/// or session, which is no later than the moment another client, talking
/// to the server directly, holds the lock. Both instants are CLOCK_MONOTONIC
/// stamps: the command's own on SIGTERM, the other holder's on entering.
fn partitioned_run(scheme: &str, server: &str, path: &str, expiry: &str, ttl: Duration) {
    let upstream = server.parse().expect("a host:port");
    let proxy = locks_fault_proxy::FaultProxy::start(upstream).expect("proxy");
    let env = Env::new();
    let cut_off = env.config(
        "cut-off.toml",
        Some(&format!("{scheme}://{}{path}?{expiry}", proxy.addr())),
    );
    let direct = env.config("direct.toml", Some(&format!("{scheme}://{server}{path}")));
    let name = format!("fault-partitioned-run-{}", std::process::id());
    let mut cmd = locks(&cut_off);
    cmd.args(["run", "--scope", "global", "--name", &name, "--"])
        .args(["python3", "-c"])
        .arg(
            "import signal, sys, time\n\
             def term(*_):\n    \
                 print('term', time.clock_gettime_ns(time.CLOCK_MONOTONIC), flush=True)\n    \
                 sys.exit(0)\n\
             signal.signal(signal.SIGTERM, term)\n\
             print('started', flush=True)\n\
             time.sleep(120)\n",
        );
    let mut run = Running::start(cmd);
    run.expect_line_within("started", Duration::from_secs(30));
    proxy.set(locks_fault_proxy::Fault::Blackhole);
    let mut next = Holder::start(
        &direct,
        "global",
        &name,
        Duration::from_millis(100),
        &env.path("next.log"),
    );
    let term: u64 = run.expect_line_within("term ", Duration::from_secs(30))[5..]
        .trim()
        .parse()
        .expect("the command's stamp");
    let margin = Duration::from_nanos(next.enter.saturating_sub(term));
    let cut = proxy.faulted_at().expect("the partition's stamp");
    eprintln!(
        "{scheme}: the command was stopped {:?} after the partition, {margin:?} before another client held the lock",
        Duration::from_nanos(term.saturating_sub(cut))
    );
    let required = (ttl / 5).min(Duration::from_secs(1));
    assert!(
        next.enter > term && margin >= required,
        "the command was stopped {margin:?} before the next holder entered; at least {required:?} is required"
    );
    let status = run.child.wait().expect("wait for locks run");
    assert_eq!(status.code(), Some(75), "the lock-unavailable status");
    assert_eq!(next.wait(Duration::from_secs(30)), 0);
}

#[test]
fn partitioned_etcd_locks_run_stops_its_command_before_the_lease_can_expire() {
    let Some(server) = server("LOCKS_TEST_ETCD") else {
        return;
    };
    partitioned_run("etcd", &server, "", "ttl=3s", Duration::from_secs(3));
}

#[test]
fn partitioned_zookeeper_locks_run_stops_its_command_before_the_session_can_expire() {
    let Some(server) = server("LOCKS_TEST_ZK") else {
        return;
    };
    partitioned_run(
        "zookeeper",
        &server,
        "/locks-faults",
        "session_timeout=3s",
        Duration::from_secs(3),
    );
}

// ---------------------------------------------------------------- paused holder

/// A holder paused with SIGSTOP past its TTL (a zombie) while another
/// process takes the lock. Both write their fencing token to the fenced
/// resource of `locks check --fenced`. On SIGCONT the zombie's guard is lost
/// at once, its write with the old token is refused, and the checker finds
/// no accepted stale write; the new holder's token is greater.
fn paused_holder(url: &str) {
    let env = Env::new();
    let config = env.config("global.toml", Some(url));
    let log = env.path("check.log");
    let name = "fault-zombie";
    let fenced = ["--fenced"];
    let mut zombie = Holder::start_with(
        &config,
        "global",
        name,
        Duration::from_secs(60),
        &log,
        &fenced,
    );
    zombie.signal(libc::SIGSTOP);
    // Acquires once the zombie's lease or session has expired on the server,
    // and writes its token to the resource before it announces the lock.
    let mut next = Holder::start_with(
        &config,
        "global",
        name,
        Duration::from_millis(500),
        &log,
        &fenced,
    );
    assert!(
        next.token > zombie.token,
        "the next holder's token {} is above the zombie's {}",
        next.token,
        zombie.token
    );
    let continued = Instant::now();
    zombie.signal(libc::SIGCONT);
    zombie.expect_line("lost ", Duration::from_secs(5));
    eprintln!(
        "{url}: the resumed holder saw its lock lost {:?} after SIGCONT",
        continued.elapsed()
    );
    assert_eq!(zombie.wait(Duration::from_secs(30)), 0);
    assert_eq!(next.wait(Duration::from_secs(30)), 0);
    let (code, stdout, stderr) = output(
        locks(&config)
            .args(["check", "--scope", "global", "--name", name, "--fenced"])
            .args(["--processes", "0", "--iterations", "0", "--log"])
            .arg(&log),
    );
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stdout.contains("fenced writes_accepted=3 writes_refused=1 zombie_overlaps=1"),
        "the zombie's late write is the one refused: {stdout}"
    );
    assert!(
        stdout.contains("overlaps=0 token_regressions=0 stale_writes=0"),
        "{stdout}"
    );
}

/// `locks run` paused with SIGSTOP past its TTL while its command runs on;
/// another process takes the lock; on SIGCONT `locks run` stops its command
/// (SIGTERM) at once and exits with the lock-unavailable status.
fn paused_run(url: &str) {
    let env = Env::new();
    let config = env.config("global.toml", Some(url));
    let name = "fault-zombie-run";
    let mut cmd = locks(&config);
    cmd.args(["run", "--scope", "global", "--name", name, "--"])
        .args(["sh", "-c", "echo command $$; exec sleep 60"]);
    let mut run = Running::start(cmd);
    let line = run.expect_line_within("command ", Duration::from_secs(30));
    let command: libc::pid_t = line[8..].trim().parse().expect("the command's pid");
    let pid = libc::pid_t::try_from(run.child.id()).expect("pid fits");
    // SAFETY: plain kill(2) on our own child process.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);
    let mut next = Holder::start(
        &config,
        "global",
        name,
        Duration::from_millis(200),
        &env.path("next.log"),
    );
    let alive = |pid: libc::pid_t| Path::new(&format!("/proc/{pid}")).exists();
    assert!(
        alive(command),
        "the command runs on while `locks run` is paused"
    );
    let continued = Instant::now();
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGCONT) }, 0);
    let status = loop {
        if let Some(status) = run.child.try_wait().expect("try_wait") {
            break status;
        }
        assert!(
            continued.elapsed() < Duration::from_secs(10),
            "`locks run` still runs 10 s after it was continued"
        );
        std::thread::sleep(Duration::from_millis(1));
    };
    eprintln!(
        "{url}: `locks run` stopped its command and exited {:?} after SIGCONT",
        continued.elapsed()
    );
    assert_eq!(status.code(), Some(75), "the lock-unavailable status");
    assert!(!alive(command), "the command was stopped");
    assert_eq!(next.wait(Duration::from_secs(30)), 0);
}

#[test]
fn paused_redis_locks_run_stops_its_command_when_continued() {
    let Some(url) = redis_url() else {
        return;
    };
    paused_run(&url);
}

#[test]
fn paused_redis_holder_is_lost_at_once_and_its_stale_write_refused() {
    let Some(url) = redis_url() else {
        return;
    };
    paused_holder(&url);
}

#[test]
fn paused_etcd_locks_run_stops_its_command_when_continued() {
    let Some(addr) = server("LOCKS_TEST_ETCD") else {
        return;
    };
    paused_run(&format!("etcd://{addr}?ttl=2s"));
}

#[test]
fn paused_zookeeper_locks_run_stops_its_command_when_continued() {
    let Some(addr) = server("LOCKS_TEST_ZK") else {
        return;
    };
    paused_run(&format!(
        "zookeeper://{addr}/locks-faults?session_timeout=2s"
    ));
}

#[test]
fn paused_etcd_holder_is_lost_at_once_and_its_stale_write_refused() {
    let Some(addr) = server("LOCKS_TEST_ETCD") else {
        return;
    };
    paused_holder(&format!("etcd://{addr}?ttl=2s"));
}

#[test]
fn paused_zookeeper_holder_is_lost_at_once_and_its_stale_write_refused() {
    let Some(addr) = server("LOCKS_TEST_ZK") else {
        return;
    };
    paused_holder(&format!(
        "zookeeper://{addr}/locks-faults?session_timeout=2s"
    ));
}

// ---------------------------------------------------------------- etcd restart

/// etcd restarted (same ports, same data dir) while a holder with a 30 s
/// lease holds and, with `waiters_across`, two checker processes wait.
fn etcd_restart(waiters_across: bool) {
    if server("LOCKS_TEST_ETCD").is_none() {
        return;
    }
    let mut server = Dedicated::start("etcd");
    let env = Env::new();
    let config = env.config(
        "etcd.toml",
        Some(&format!(
            "etcd://{}?ttl=30s&connect_timeout=10s",
            server.addr
        )),
    );
    let log = env.path("check.log");
    let name = "fault-restart";
    let mut holder = Holder::start(&config, "global", name, Duration::from_secs(6), &log);
    let checker = waiters_across.then(|| start_check(&config, "global", name, 2, 5, &log));
    std::thread::sleep(Duration::from_millis(1000));
    let old_pid = server.pid;
    server.run("restart");
    assert_ne!(server.pid, old_pid, "a new etcd process");
    let checker = checker.unwrap_or_else(|| start_check(&config, "global", name, 2, 5, &log));
    assert_eq!(
        holder.wait(Duration::from_secs(40)),
        0,
        "the holder ends normally"
    );
    let kept = *holdings(&log)
        .iter()
        .find(|h| h.1 == holder.pid)
        .expect("the holder's holding");
    assert!(!kept.4, "the holder kept its lock across the restart");
    assert!(
        Duration::from_nanos(kept.3 - kept.2) >= Duration::from_secs(5),
        "held for the whole 6 s: {kept:?}"
    );
    let out = checker.wait_with_output().expect("wait for the checker");
    let stdout = expect_clean(&out);
    assert!(stdout.contains(" lost=0 "), "{stdout}");
    let all = holdings(&log);
    assert_eq!(all.len(), 11, "the waiters acquired: {all:?}");
}

/// The holder keeps its lock (its lease outlives the restart) and releases
/// normally; clients started after the restart acquire after it.
#[test]
fn etcd_restarted_with_its_data_dir_holders_keep_their_locks() {
    etcd_restart(false);
}

/// Waiters queued before the restart should wait through it and acquire.
#[test]
fn etcd_restarted_with_its_data_dir_waiters_acquire_afterwards() {
    etcd_restart(true);
}

// ---------------------------------------------------------------- lock directory

#[test]
fn lock_directory_deleted_under_running_holders_is_a_typed_error_never_an_overlap() {
    let env = Env::new();
    let config = env.config("file.toml", None);
    let log = env.path("check.log");
    let checker = start_check_holding(&config, "node", "fault-rmdir", 3, 300, 2000, &log);
    // Holders need about 2 s for their 900 holdings of 2 ms; remove the directory meanwhile.
    std::thread::sleep(Duration::from_millis(300));
    std::fs::remove_dir_all(env.path("locks")).expect("remove the lock directory");
    let out = checker.wait_with_output().expect("wait");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stdout}{stderr}");
    assert!(
        stdout.contains("overlaps=0 token_regressions=0"),
        "{stdout}{stderr}"
    );
    assert!(stderr.contains("its directory is gone"), "{stderr}");
}

#[test]
fn lock_directory_replaced_by_a_file_is_a_typed_error() {
    let env = Env::new();
    let config = env.config("file.toml", None);
    std::fs::write(env.path("locks"), "not a directory").expect("write");
    let (code, _, stderr) =
        output(locks(&config).args(["run", "--scope", "node", "--name", "x", "--", "true"]));
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("is not a directory"), "{stderr}");
}

#[test]
fn a_planted_symlink_is_refused_and_names_stay_inside_the_directory() {
    let env = Env::new();
    let config = env.config("file.toml", None);
    let dir = env.path("locks");
    std::fs::create_dir(&dir).expect("mkdir");
    let victim = env.path("victim");
    std::os::unix::fs::symlink(&victim, dir.join("x")).expect("symlink");
    let (code, _, stderr) =
        output(locks(&config).args(["run", "--scope", "node", "--name", "x", "--", "true"]));
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("symlink"), "{stderr}");
    assert!(!victim.exists(), "the symlink target was not created");

    for name in ["../escape", "../../escape", "/etc/escape", "a/../../escape"] {
        let (code, _, stderr) =
            output(locks(&config).args(["run", "--scope", "node", "--name", name, "--", "true"]));
        assert!(code == 0 || code == 1, "{name}: {code} {stderr}");
    }
    for outside in [env.path("escape"), env.dir.path().join("../escape")] {
        assert!(!outside.exists(), "{} was created", outside.display());
    }
    assert!(!Path::new("/etc/escape").exists());
    for entry in std::fs::read_dir(&dir).expect("read lock dir") {
        let entry = entry.expect("entry");
        let kind = entry.file_type().expect("type");
        assert!(
            kind.is_file() || (kind.is_symlink() && entry.file_name() == "x"),
            "only lock files in the directory: {}",
            entry.path().display()
        );
    }
}

#[test]
fn the_lock_directory_is_created_private() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::new();
    let config = env.config("file.toml", None);
    let (code, _, stderr) =
        output(locks(&config).args(["run", "--scope", "node", "--name", "x", "--", "true"]));
    assert_eq!(code, 0, "{stderr}");
    let mode = std::fs::metadata(env.path("locks"))
        .expect("lock dir")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700, "mode {mode:o}");
}

// ---------------------------------------------------------------- credentials

/// `locks run` on `config`: (exit code, stdout + stderr).
fn run_once(config: &Path, name: &str) -> (i32, String) {
    let (code, stdout, stderr) = output(locks(config).args([
        "run",
        "--scope",
        "global",
        "--name",
        name,
        "--timeout",
        "5s",
        "--",
        "true",
    ]));
    (code, format!("{stdout}{stderr}"))
}

/// `format!("{:?}")` of a client opened on `config`, or of the error opening it.
fn debug_of_client(config: &Path) -> String {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        match locks::Config::from_file(config) {
            Ok(c) => match locks::Locks::open(c).await {
                Ok(client) => format!("{client:?} {:?}", client.backend(locks::Scope::Global)),
                Err(e) => format!("{e:?} {}", e.report()),
            },
            Err(e) => format!("{e:?} {}", e.report()),
        }
    })
}

#[test]
fn etcd_with_authentication_never_shows_the_password() {
    const PW: &str = "R00t-Pw-ofEtcd";
    const WRONG: &str = "Wr0ng-Pw-ofEtcd";
    if server("LOCKS_TEST_ETCD").is_none() {
        return;
    }
    let etcd = Dedicated::start("etcd");
    for args in [
        vec!["user", "add", &format!("root:{PW}")],
        vec!["auth", "enable"],
    ] {
        let out = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .args(["--endpoints", &etcd.addr])
            .args(&args)
            .output()
            .expect("etcdctl");
        assert!(
            out.status.success(),
            "etcdctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let env = Env::new();
    let right = env.config(
        "right.toml",
        Some(&format!("etcd://root:{PW}@{}?ttl=5s", etcd.addr)),
    );
    let wrong = env.config(
        "wrong.toml",
        Some(&format!("etcd://root:{WRONG}@{}?ttl=5s", etcd.addr)),
    );
    let anonymous = env.config("anonymous.toml", Some(&format!("etcd://{}", etcd.addr)));

    let (code, text) = run_once(&right, "auth");
    assert_eq!(code, 0, "{text}");
    assert!(!text.contains(PW), "{text}");
    let log = env.path("check.log");
    let out = start_check(&right, "global", "auth-check", 2, 10, &log)
        .wait_with_output()
        .expect("checker");
    expect_clean(&out);
    assert!(!String::from_utf8_lossy(&out.stderr).contains(PW));

    for (config, what) in [(&wrong, "wrong password"), (&anonymous, "no password")] {
        let (code, text) = run_once(config, "auth");
        assert_eq!(code, 1, "{what}: {text}");
        assert!(
            !text.contains(PW) && !text.contains(WRONG),
            "{what}: {text}"
        );
        assert!(
            text.to_lowercase().contains("permission")
                || text.to_lowercase().contains("auth")
                || text.contains("credentials")
                || text.contains("user and password"),
            "{what}: the message says what is wrong: {text}"
        );
    }
    for config in [&right, &wrong] {
        let shown = debug_of_client(config);
        assert!(!shown.contains(PW) && !shown.contains(WRONG), "{shown}");
    }
}

#[test]
fn zookeeper_digest_credentials_never_show() {
    const PW: &str = "Zk-Digest-Pw1";
    const WRONG: &str = "Zk-Wrong-Pw2";
    let Some(addr) = server("LOCKS_TEST_ZK") else {
        return;
    };
    let env = Env::new();
    let ns = format!("/locks-faults-acl-{}", std::process::id());
    let right = env.config(
        "right.toml",
        Some(&format!("zookeeper://cinder:{PW}@{addr}{ns}")),
    );
    let wrong = env.config(
        "wrong.toml",
        Some(&format!("zookeeper://cinder:{WRONG}@{addr}{ns}")),
    );
    let (code, text) = run_once(&right, "acl");
    assert_eq!(code, 0, "{text}");
    assert!(!text.contains(PW), "{text}");

    // The owner holds the lock; a client with the wrong password meets the ACL.
    let log = env.path("check.log");
    let holder = Holder::start(&right, "global", "acl", Duration::from_secs(20), &log);
    let (code, text) = run_once(&wrong, "acl");
    assert_ne!(code, 0, "the wrong password is refused: {text}");
    assert!(!text.contains(PW) && !text.contains(WRONG), "{text}");
    drop(holder);
    for config in [&right, &wrong] {
        let shown = debug_of_client(config);
        assert!(!shown.contains(PW) && !shown.contains(WRONG), "{shown}");
    }
}
