//! The benchmark runner behind `locks-bench run`.
//!
//! Every backend is measured against its physical floor in the same run: the
//! memory backend against a raw [`tokio::sync::Mutex`], lock files against the
//! raw OFD `fcntl` calls on an open descriptor, etcd against a put and a
//! delete from one raw client, ZooKeeper against a raw create and delete,
//! Redis against a raw `SET NX PX` and `DEL`.
//! Floor and ours run in alternating batches, so drift of a noisy machine
//! hits both alike; a row reports the median of the per-batch means.
//!
//! Every row with a target ends in `ratio=X.XX target=Y.YY`, where the ratio
//! is ours divided by the floor (or by the other tool), so a target is met
//! when `ratio <= target`.
//!
//! Handoff and contention need other processes: [`run`] re-executes
//! [`BenchOptions::peer_exe`] with the hidden `peer` subcommand, whose
//! body is [`peer`]. Timestamps cross the pipe as `CLOCK_MONOTONIC`
//! nanoseconds, one clock for every process of the host.
//!
//! # Layout
//! - `main.rs`: the `locks-bench` binary (`run`, hidden `peer`).
//! - `lib.rs` (here): options, the plan of a run, [`run`], and the helpers
//!   every section shares (rows, paired batches, the raw OFD call).
//! - One module per section: `memory.rs`, `file.rs`, `etcd.rs`,
//!   `zookeeper.rs`, `redis.rs`, `c_abi.rs` (with `c_loop.c`), `python.rs` (with
//!   `python/anchors.py`), `failover.rs` (cluster leader kills).
//! - `server.rs`: the rows etcd, ZooKeeper and Redis share; `queue.rs`: the queued
//!   handoff rows; `peer.rs`: the peer processes and [`peer`];
//!   `stats.rs`: distributions.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use locks::{BackendUrls, Config, Error, ErrorKind, Locks, Result, Scope, Wait};

mod c_abi;
mod etcd;
mod failover;
mod file;
mod memory;
mod peer;
mod python;
mod queue;
mod redis;
mod server;
mod stats;
mod zookeeper;

use self::redis::redis;
use c_abi::c_abi;
use etcd::etcd;
use file::file;
use memory::memory;
pub use peer::{PeerOptions, peer};
use python::python;
use stats::Dist;
use zookeeper::zookeeper;

/// The Python timing script, written to a temporary file when used.
pub(crate) const PYTHON_ANCHORS: &str = include_str!("../python/anchors.py");
/// The C loop of the C ABI row.
pub(crate) const C_LOOP: &str = include_str!("c_loop.c");

/// What to run and where.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Fewer rounds and smaller sets: the whole run in under a minute.
    pub quick: bool,
    /// The configuration file of `--config`: its Global URL picks the etcd,
    /// ZooKeeper or Redis server when it is one.
    pub config: Option<PathBuf>,
    /// The `locks-bench` binary to re-execute as `locks-bench peer` for the
    /// cross-process rows.
    pub peer_exe: PathBuf,
    /// The etcd server (`host:port`), default `$LOCKS_TEST_ETCD`.
    pub etcd: Option<String>,
    /// The ZooKeeper server (`host:port`), default `$LOCKS_TEST_ZK`.
    pub zookeeper: Option<String>,
    /// The Redis server as `redis://[:PASSWORD@]HOST:PORT`, default from
    /// `$LOCKS_TEST_REDIS` and `$LOCKS_TEST_REDIS_PASSWORD`.
    pub redis: Option<String>,
    /// A Python with oslo.concurrency, tooz, etcd3gw, kazoo and redis-py, default `$LOCKS_TEST_PYTHON`.
    pub python: Option<PathBuf>,
    /// `include/locks.h` and the directory holding `liblocks_ffi.a`, for the C ABI row.
    pub ffi: Option<(PathBuf, PathBuf)>,
    /// Run only these sections (`memory`, `file`, `etcd`, `zookeeper`,
    /// `redis`, `c`, `python`); empty runs all.
    pub only: Vec<String>,
}

impl BenchOptions {
    fn wants(&self, section: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|s| s == section)
    }
}

impl BenchOptions {
    /// Options from the environment: servers from `$LOCKS_TEST_ETCD` /
    /// `$LOCKS_TEST_ZK` / `$LOCKS_TEST_REDIS` (+ `_PASSWORD`) (or the
    /// config's Global URL; a Redis one without Sentinel), Python from
    /// `$LOCKS_TEST_PYTHON`, the C ABI next to `peer_exe`.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidConfig`] or [`ErrorKind::Io`] for a configuration
    /// file that cannot be read.
    pub fn from_env(quick: bool, config: Option<PathBuf>, peer_exe: PathBuf) -> Result<Self> {
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let mut etcd = env("LOCKS_TEST_ETCD");
        let mut zookeeper = env("LOCKS_TEST_ZK");
        let mut redis =
            env("LOCKS_TEST_REDIS").map(|address| match env("LOCKS_TEST_REDIS_PASSWORD") {
                Some(password) => format!("redis://:{password}@{address}"),
                None => format!("redis://{address}"),
            });
        if let Some(path) = &config {
            let url = Config::from_file(path)?.backend_url(Scope::Global)?;
            if let Some(rest) = url.strip_prefix("etcd://") {
                etcd = Some(host_port(rest));
            } else if let Some(rest) = url.strip_prefix("zookeeper://") {
                zookeeper = Some(host_port(rest));
            } else if !url.contains("sentinel") {
                // The raw floor needs the server itself, not its sentinels.
                redis = self::redis::server_url(&url).or(redis);
            }
        }
        let python = env("LOCKS_TEST_PYTHON").map(PathBuf::from);
        let ffi = find_ffi(&peer_exe);
        Ok(BenchOptions {
            quick,
            config,
            peer_exe,
            etcd,
            zookeeper,
            redis,
            python,
            ffi,
            only: Vec::new(),
        })
    }
}

/// `host:port` from the part of a URL after `scheme://` (no credentials, path or options).
pub(crate) fn host_port(rest: &str) -> String {
    let end = rest.find(['/', '?', ',', '#']).unwrap_or(rest.len());
    let authority = &rest[..end];
    authority
        .rsplit_once('@')
        .map_or(authority, |(_, h)| h)
        .to_owned()
}

/// `include/locks.h` (from the source tree or the current directory) and
/// the directory of `liblocks_ffi.a` (next to the `locks-bench` binary).
pub(crate) fn find_ffi(exe: &Path) -> Option<(PathBuf, PathBuf)> {
    let header = [
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../include/locks.h"),
        PathBuf::from("include/locks.h"),
    ]
    .into_iter()
    .find(|p| p.is_file())?;
    let dir = exe.parent()?.to_owned();
    dir.join("liblocks_ffi.a")
        .is_file()
        .then_some((header, dir))
}

/// Sizes of one run.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Plan {
    rounds: usize,
    mem_batch: usize,
    mem_names: usize,
    file_batch: usize,
    server_batch: usize,
    handoffs: usize,
    server_handoffs: usize,
    held_names: usize,
    contend: Duration,
    python_iters: usize,
    /// How long ZooKeeper's request paths are exercised before its rows.
    jvm_warmup: Duration,
    /// Leader kills per cluster section.
    failovers: usize,
}

impl Plan {
    fn new(quick: bool) -> Self {
        if quick {
            Plan {
                rounds: 6,
                mem_batch: 20_000,
                mem_names: 100_000,
                file_batch: 500,
                server_batch: 15,
                handoffs: 40,
                server_handoffs: 15,
                held_names: 1_000,
                contend: Duration::from_secs(1),
                python_iters: 40,
                jvm_warmup: Duration::from_secs(3),
                failovers: 1,
            }
        } else {
            Plan {
                rounds: 20,
                mem_batch: 100_000,
                mem_names: 1_000_000,
                file_batch: 2_000,
                server_batch: 40,
                handoffs: 300,
                server_handoffs: 60,
                held_names: 10_000,
                contend: Duration::from_secs(5),
                python_iters: 300,
                jvm_warmup: Duration::from_secs(10),
                failovers: 3,
            }
        }
    }
}

/// `CLOCK_MONOTONIC` in nanoseconds: one clock for all processes of the host.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec to write; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// A whole-file OFD write lock (`F_OFD_SETLKW`) or unlock on `fd`.
pub(crate) fn ofd(fd: libc::c_int, lock: bool) -> std::io::Result<()> {
    // SAFETY: an all-zero flock is a valid value; the fields are set below.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = if lock { libc::F_WRLCK } else { libc::F_UNLCK } as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    let cmd = if lock {
        libc::F_OFD_SETLKW
    } else {
        libc::F_OFD_SETLK
    };
    // SAFETY: `fd` is an open descriptor and `fl` a valid flock.
    if unsafe { libc::fcntl(fd, cmd, &fl) } == -1 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

pub(crate) fn io_err(context: &str) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |e| Error::io(context, e)
}

pub(crate) fn unavailable(what: impl std::fmt::Display) -> Error {
    Error::new(ErrorKind::Unavailable, what.to_string())
}

/// Writes one result row. `floor` and `target` give the `ratio=… target=…` suffix.
pub(crate) fn row(
    out: &mut (dyn Write + Send),
    label: &str,
    ours: f64,
    extra: &str,
    floor: Option<f64>,
    target: Option<f64>,
) -> Result<()> {
    let mut line = format!("  {label:<46} ours={ours:.2}");
    if !extra.is_empty() {
        line.push(' ');
        line.push_str(extra);
    }
    if let Some(floor) = floor {
        line.push_str(&format!(" floor={floor:.2}"));
        let ratio = ours / floor;
        match target {
            Some(t) => line.push_str(&format!(" ratio={ratio:.2} target={t:.2}")),
            None => line.push_str(&format!(" ratio={ratio:.2}")),
        }
    }
    writeln!(out, "{line}").map_err(io_err("writing the results"))
}

pub(crate) fn say(out: &mut (dyn Write + Send), text: impl std::fmt::Display) -> Result<()> {
    writeln!(out, "{text}").map_err(io_err("writing the results"))?;
    out.flush().map_err(io_err("writing the results"))
}

/// Runs `floor` and `ours` in alternating batches of `batch` calls, `rounds`
/// times each (after one warm-up batch), and returns the per-call means of
/// every batch in µs: (floor, ours).
pub(crate) async fn paired(
    rounds: usize,
    batch: usize,
    mut floor: impl AsyncFnMut(usize) -> Result<()>,
    mut ours: impl AsyncFnMut(usize) -> Result<()>,
) -> Result<(Dist, Dist)> {
    let mut f = Dist::default();
    let mut o = Dist::default();
    let mut seq = 0usize;
    for i in 0..batch {
        floor(i).await?;
        ours(i).await?;
    }
    for r in 0..rounds {
        for half in 0..2 {
            let floor_now = (half == 0) == (r % 2 == 0);
            let start = Instant::now();
            for _ in 0..batch {
                seq += 1;
                if floor_now {
                    floor(seq).await?;
                } else {
                    ours(seq).await?;
                }
            }
            let us = start.elapsed().as_secs_f64() * 1e6 / batch as f64;
            if floor_now { &mut f } else { &mut o }.push(us);
        }
    }
    Ok((f, o))
}

/// One acquire+release cycle of ours: the work every "ours" column times.
pub(crate) async fn cycle(locks: &Locks, scope: Scope, name: &str) -> Result<()> {
    locks
        .lock_name(scope, name, Wait::Forever)
        .await?
        .release()
        .await
}

/// A client whose backends are memory, lock files in `dir`, and `global`.
pub(crate) async fn open_client(dir: &Path, global: Option<&str>) -> Result<Locks> {
    let node = format!("file://{}", dir.display());
    let config = Config {
        backends: BackendUrls {
            process: Some("memory://".to_owned()),
            node: Some(node.clone()),
            global: Some(global.map_or(node, str::to_owned)),
        },
        ..Config::default()
    };
    Locks::open(config).await
}

/// A private temporary directory, removed on drop.
pub(crate) struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Result<Self> {
        let dir = std::env::temp_dir().join(format!(
            "locks-bench-{tag}-{}-{}",
            std::process::id(),
            monotonic_ns()
        ));
        std::fs::create_dir_all(&dir).map_err(io_err("creating a temporary directory"))?;
        Ok(TempDir(dir))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs every section and writes one table per backend to `out`.
///
/// # Errors
/// A backend that fails while measured, a peer process that misbehaves, or
/// `out` that cannot be written. Sections whose server or tool is missing
/// are skipped with one line saying why.
pub async fn run(opts: &BenchOptions, out: &mut (dyn Write + Send)) -> Result<()> {
    let plan = Plan::new(opts.quick);
    let started = Instant::now();
    let dir = TempDir::new("run")?;
    say(
        out,
        format_args!(
            "locks-bench run{}: µs per cycle (median of {} alternating batches), ratio = ours / floor, target met when ratio <= target",
            if opts.quick { " --quick" } else { "" },
            plan.rounds
        ),
    )?;
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    say(
        out,
        format_args!("host: {cores} cores, {}", kernel_release()),
    )?;

    let mut ours_cycle = Vec::new();
    if opts.wants("memory") {
        memory(&plan, &dir.0, out).await?;
    }
    if opts.wants("file") || opts.wants("python") {
        let file_cycle = file(&plan, opts, &dir.0, out).await?;
        ours_cycle.push(("file", file_cycle));
    }
    match &opts.etcd {
        _ if !(opts.wants("etcd") || opts.wants("python")) => {}
        Some(ep) => {
            let c = etcd(&plan, opts, &dir.0, ep, out).await?;
            ours_cycle.push(("etcd", c));
        }
        None => say(
            out,
            "\n[etcd]\n  skipped: no etcd server (set LOCKS_TEST_ETCD or give --config with an etcd:// global)",
        )?,
    }
    match &opts.zookeeper {
        _ if !(opts.wants("zookeeper") || opts.wants("python")) => {}
        Some(ep) => {
            let c = zookeeper(&plan, opts, &dir.0, ep, out).await?;
            ours_cycle.push(("zookeeper", c));
        }
        None => say(
            out,
            "\n[zookeeper]\n  skipped: no ZooKeeper server (set LOCKS_TEST_ZK or give --config with a zookeeper:// global)",
        )?,
    }
    match &opts.redis {
        _ if !(opts.wants("redis") || opts.wants("python")) => {}
        Some(url) => {
            let c = redis(&plan, opts, &dir.0, url, out).await?;
            ours_cycle.push(("redis", c));
        }
        None => say(
            out,
            "\n[redis]\n  skipped: no Redis server (set LOCKS_TEST_REDIS and LOCKS_TEST_REDIS_PASSWORD or give --config with a redis:// global)",
        )?,
    }
    for (section, service) in [
        ("etcd-cluster", failover::Service::Etcd),
        ("zookeeper-cluster", failover::Service::Zookeeper),
    ] {
        if opts.wants(section)
            && let Err(e) = failover::section(service, plan.failovers, &dir.0, out).await
        {
            say(out, format_args!("  failed: {e}"))?;
        }
    }
    if opts.wants("c")
        && let Err(e) = c_abi(&plan, opts, &dir.0, out).await
    {
        say(out, format_args!("  failed: {e}"))?;
    }
    if opts.wants("python")
        && let Err(e) = python(&plan, opts, &dir.0, &ours_cycle, out).await
    {
        say(out, format_args!("  failed: {e}"))?;
    }
    say(
        out,
        format_args!("\ntotal {:.1} s", started.elapsed().as_secs_f64()),
    )
}

pub(crate) fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| format!("Linux {}", s.trim()))
        .unwrap_or_else(|_| "unknown kernel".to_owned())
}

/// Our p50s of one backend, for the rows against the Python tools.
#[derive(Debug, Clone, Copy)]
struct Ours {
    cycle: f64,
    handoff: f64,
}
