//! The benchmark runner behind `locks-bench run`.
//!
//! Every backend is measured against its physical floor in the same run: the
//! memory backend against a raw [`tokio::sync::Mutex`], lock files against the
//! raw OFD `fcntl` calls on an open descriptor, etcd against a put and a
//! delete from one raw client, ZooKeeper against a raw create and delete.
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

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use locks::{BackendUrls, Config, Error, ErrorKind, LockGuard, Locks, Result, Scope, Wait};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

mod failover;
mod queue;
mod stats;
use stats::Dist;

/// The Python timing script, written to a temporary file when used.
const PYTHON_ANCHORS: &str = include_str!("../python/anchors.py");
/// The C loop of the C ABI row.
const C_LOOP: &str = include_str!("c_loop.c");

/// What to run and where.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Fewer rounds and smaller sets: the whole run in under a minute.
    pub quick: bool,
    /// The configuration file of `--config`: its Global URL picks the etcd or
    /// ZooKeeper server when it is one.
    pub config: Option<PathBuf>,
    /// The `locks-bench` binary to re-execute as `locks-bench peer` for the
    /// cross-process rows.
    pub peer_exe: PathBuf,
    /// The etcd server (`host:port`), default `$LOCKS_TEST_ETCD`.
    pub etcd: Option<String>,
    /// The ZooKeeper server (`host:port`), default `$LOCKS_TEST_ZK`.
    pub zookeeper: Option<String>,
    /// A Python with oslo.concurrency, tooz, etcd3gw and kazoo, default `$LOCKS_TEST_PYTHON`.
    pub python: Option<PathBuf>,
    /// `include/locks.h` and the directory holding `liblocks_ffi.a`, for the C ABI row.
    pub ffi: Option<(PathBuf, PathBuf)>,
    /// Run only these sections (`memory`, `file`, `etcd`, `zookeeper`, `c`,
    /// `python`); empty runs all.
    pub only: Vec<String>,
}

impl BenchOptions {
    fn wants(&self, section: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|s| s == section)
    }
}

impl BenchOptions {
    /// Options from the environment: servers from `$LOCKS_TEST_ETCD` /
    /// `$LOCKS_TEST_ZK` (or the config's Global URL), Python from
    /// `$LOCKS_TEST_PYTHON`, the C ABI next to `peer_exe`.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidConfig`] or [`ErrorKind::Io`] for a configuration
    /// file that cannot be read.
    pub fn from_env(quick: bool, config: Option<PathBuf>, peer_exe: PathBuf) -> Result<Self> {
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let mut etcd = env("LOCKS_TEST_ETCD");
        let mut zookeeper = env("LOCKS_TEST_ZK");
        if let Some(path) = &config {
            let url = Config::from_file(path)?.backend_url(Scope::Global)?;
            if let Some(rest) = url.strip_prefix("etcd://") {
                etcd = Some(host_port(rest));
            } else if let Some(rest) = url.strip_prefix("zookeeper://") {
                zookeeper = Some(host_port(rest));
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
            python,
            ffi,
            only: Vec::new(),
        })
    }
}

/// `host:port` from the part of a URL after `scheme://` (no credentials, path or options).
fn host_port(rest: &str) -> String {
    let end = rest.find(['/', '?', ',', '#']).unwrap_or(rest.len());
    let authority = &rest[..end];
    authority
        .rsplit_once('@')
        .map_or(authority, |(_, h)| h)
        .to_owned()
}

/// `include/locks.h` (from the source tree or the current directory) and
/// the directory of `liblocks_ffi.a` (next to the `locks-bench` binary).
fn find_ffi(exe: &Path) -> Option<(PathBuf, PathBuf)> {
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
struct Plan {
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

fn io_err(context: &str) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |e| Error::io(context, e)
}

fn unavailable(what: impl std::fmt::Display) -> Error {
    Error::new(ErrorKind::Unavailable, what.to_string())
}

/// Writes one result row. `floor` and `target` give the `ratio=… target=…` suffix.
fn row(
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

fn say(out: &mut (dyn Write + Send), text: impl std::fmt::Display) -> Result<()> {
    writeln!(out, "{text}").map_err(io_err("writing the results"))?;
    out.flush().map_err(io_err("writing the results"))
}

/// Runs `floor` and `ours` in alternating batches of `batch` calls, `rounds`
/// times each (after one warm-up batch), and returns the per-call means of
/// every batch in µs: (floor, ours).
async fn paired(
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
async fn cycle(locks: &Locks, scope: Scope, name: &str) -> Result<()> {
    locks
        .lock_name(scope, name, Wait::Forever)
        .await?
        .release()
        .await
}

/// A client whose backends are memory, lock files in `dir`, and `global`.
async fn open_client(dir: &Path, global: Option<&str>) -> Result<Locks> {
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
struct TempDir(PathBuf);

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

fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| format!("Linux {}", s.trim()))
        .unwrap_or_else(|_| "unknown kernel".to_owned())
}

// ---------------------------------------------------------------- memory

async fn memory(plan: &Plan, dir: &Path, out: &mut (dyn Write + Send)) -> Result<()> {
    say(out, "\n[memory]")?;
    let locks = open_client(dir, None).await?;
    let raw = tokio::sync::Mutex::new(0u64);
    let (floor, ours) = paired(
        plan.rounds,
        plan.mem_batch,
        async |_| {
            let mut g = raw.lock().await;
            *g = std::hint::black_box(*g + 1);
            drop(g);
            Ok(())
        },
        async |_| {
            let g = locks
                .lock_name(Scope::Process, "bench-memory", Wait::Forever)
                .await?;
            g.release().await
        },
    )
    .await?;
    row(
        out,
        "cycle vs raw tokio::sync::Mutex cycle",
        ours.p50(),
        &format!("p99={:.2}", ours.p99()),
        Some(floor.p50()),
        Some(2.0),
    )?;

    let backend = locks.backend(Scope::Process).clone();
    let request = locks.raw_request(Scope::Process, "bench-memory-direct")?;
    let (floor2, direct) = paired(
        plan.rounds,
        plan.mem_batch,
        async |_| {
            let mut g = raw.lock().await;
            *g = std::hint::black_box(*g + 1);
            drop(g);
            Ok(())
        },
        async |_| backend.acquire(&request).await?.release().await,
    )
    .await?;
    row(
        out,
        "backend alone (no facade), same request",
        direct.p50(),
        "",
        Some(floor2.p50()),
        None,
    )?;

    // Distinct names: each name once, so every cycle creates and drops a table entry.
    let names: Vec<String> = (0..plan.mem_names)
        .map(|i| format!("bench-memory-{i}"))
        .collect();
    let per_batch = plan.mem_names / (2 * plan.rounds);
    let mut floor_table: std::collections::HashMap<String, std::sync::Arc<tokio::sync::Mutex<()>>> =
        std::collections::HashMap::new();
    let (floor3, distinct) = paired(
        plan.rounds,
        per_batch,
        async |i| {
            // The raw equivalent: a mutex per name in a map, removed after use.
            let name = &names[i % names.len()];
            let m = floor_table
                .entry(name.clone())
                .or_insert_with(|| std::sync::Arc::new(tokio::sync::Mutex::new(())))
                .clone();
            drop(m.lock().await);
            floor_table.remove(name);
            Ok(())
        },
        async |i| {
            let name = &names[i % names.len()];
            locks
                .lock_name(Scope::Process, name, Wait::Forever)
                .await?
                .release()
                .await
        },
    )
    .await?;
    row(
        out,
        &format!("{} distinct names vs raw mutex cycle", plan.mem_names),
        distinct.p50(),
        &format!("map+mutex={:.2}", floor3.p50()),
        Some(floor.p50()),
        Some(2.0),
    )?;
    Ok(())
}

// ---------------------------------------------------------------- file

/// A whole-file OFD write lock (`F_OFD_SETLKW`) or unlock on `fd`.
fn ofd(fd: libc::c_int, lock: bool) -> std::io::Result<()> {
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

async fn file(
    plan: &Plan,
    opts: &BenchOptions,
    dir: &Path,
    out: &mut (dyn Write + Send),
) -> Result<Ours> {
    use std::os::fd::AsRawFd;
    say(out, "\n[file]")?;
    let locks = open_client(dir, None).await?;
    let floor_file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(dir.join("raw-ofd-floor"))
        .map_err(io_err("opening the floor's lock file"))?;
    let fd = floor_file.as_raw_fd();
    let (floor, ours) = paired(
        plan.rounds,
        plan.file_batch,
        async |_| {
            ofd(fd, true).map_err(io_err("raw OFD lock"))?;
            ofd(fd, false).map_err(io_err("raw OFD unlock"))
        },
        async |_| cycle(&locks, Scope::Node, "bench-file").await,
    )
    .await?;
    row(
        out,
        "cycle vs raw OFD lock+unlock on an open fd",
        ours.p50(),
        &format!("p99={:.2}", ours.p99()),
        Some(floor.p50()),
        Some(1.5),
    )?;

    // The raw sequence one cycle of ours implies: open, lock, fstat+stat, unlock, close.
    let path = dir.join("raw-open-floor");
    let (floor2, ours2) = paired(
        plan.rounds,
        plan.file_batch,
        async |_| {
            let f = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .map_err(io_err("opening"))?;
            ofd(f.as_raw_fd(), true).map_err(io_err("raw OFD lock"))?;
            ofd(f.as_raw_fd(), false).map_err(io_err("raw OFD unlock"))
        },
        async |_| cycle(&locks, Scope::Node, "bench-file").await,
    )
    .await?;
    row(
        out,
        "cycle vs raw open+lock+unlock+close",
        ours2.p50(),
        "",
        Some(floor2.p50()),
        None,
    )?;

    let node = format!("file://{}", dir.display());
    let hand = handoff(
        opts,
        &locks,
        &node,
        &node,
        Scope::Node,
        "bench-file-handoff",
        plan.handoffs,
        Duration::from_millis(3),
    )
    .await?;
    row(
        out,
        "handoff between processes p50 (floor = 1 ms)",
        hand.p50(),
        &format!("p99={:.2}", hand.p99()),
        Some(1000.0),
        Some(1.0),
    )?;
    let raw = raw_handoff(
        opts,
        &node,
        &dir.join("raw-handoff-floor"),
        plan.handoffs,
        Duration::from_millis(3),
    )
    .await?;
    row(
        out,
        "handoff vs raw OFD handoff (no target)",
        hand.p50(),
        &format!("raw_p99={:.2}", raw.p99()),
        Some(raw.p50()),
        None,
    )?;
    contention(opts, &node, &node, Scope::Node, plan.contend, out).await?;
    let queue = queue::Queue {
        locks: &locks,
        node: &node,
        global: &node,
        scope: Scope::Node,
        name: "bench-file-queue",
        settle: Duration::from_millis(3),
    };
    queue::rows(opts, &queue, out).await?;
    Ok(Ours {
        cycle: ours.p50(),
        handoff: hand.p50(),
    })
}

/// The floor of a file handoff: `handoff` done with raw OFD calls on both
/// sides (the peer blocks in `F_OFD_SETLKW` on a descriptor of its own).
async fn raw_handoff(
    opts: &BenchOptions,
    node: &str,
    path: &Path,
    rounds: usize,
    settle: Duration,
) -> Result<Dist> {
    use std::os::fd::AsRawFd;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(io_err("opening the raw handoff's lock file"))?;
    let fd = file.as_raw_fd();
    let peer = Peer::spawn(opts, node, node, Scope::Node, "bench-raw-handoff").await?;
    time_handoffs(
        peer,
        &format!("raw-acquire {}", path.display()),
        rounds,
        settle,
        async || ofd(fd, true).map_err(io_err("raw OFD lock")),
        async |()| ofd(fd, false).map_err(io_err("raw OFD unlock")),
    )
    .await
}

/// Our p50s of one backend, for the rows against the Python tools.
#[derive(Debug, Clone, Copy)]
struct Ours {
    cycle: f64,
    handoff: f64,
}

// ---------------------------------------------------------------- peers

/// One peer process and its pipes.
struct Peer {
    child: Child,
    stdin: ChildStdin,
    stdout: tokio::io::Lines<BufReader<ChildStdout>>,
}

impl Peer {
    async fn spawn(
        opts: &BenchOptions,
        node: &str,
        global: &str,
        scope: Scope,
        name: &str,
    ) -> Result<Peer> {
        let mut child = Command::new(&opts.peer_exe)
            .arg("peer")
            .args(["--node", node, "--global", global, "--scope"])
            .arg(scope.as_str())
            .args(["--name", name])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(io_err("starting a `locks-bench peer` process"))?;
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
        let mut peer = Peer {
            child,
            stdin,
            stdout,
        };
        let ready = peer.line().await?;
        if ready != "ready" {
            return Err(unavailable(format_args!("bench peer said {ready:?}")));
        }
        Ok(peer)
    }

    async fn send(&mut self, line: &str) -> Result<()> {
        self.stdin
            .write_all(format!("{line}\n").as_bytes())
            .await
            .map_err(io_err("writing to a bench peer"))?;
        self.stdin
            .flush()
            .await
            .map_err(io_err("writing to a bench peer"))
    }

    async fn line(&mut self) -> Result<String> {
        match self
            .stdout
            .next_line()
            .await
            .map_err(io_err("reading from a bench peer"))?
        {
            Some(l) => Ok(l),
            None => Err(unavailable("a bench peer exited early")),
        }
    }

    async fn finish(mut self) -> Result<()> {
        drop(self.stdin);
        let _ = tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await;
        Ok(())
    }
}

/// Handoff latency in µs: we hold `name`, a peer waits for it, we release;
/// from our release call to the peer holding it.
#[allow(clippy::too_many_arguments)]
async fn handoff(
    opts: &BenchOptions,
    locks: &Locks,
    node: &str,
    global: &str,
    scope: Scope,
    name: &str,
    rounds: usize,
    settle: Duration,
) -> Result<Dist> {
    let peer = Peer::spawn(opts, node, global, scope, name).await?;
    time_handoffs(
        peer,
        "acquire",
        rounds,
        settle,
        async || locks.lock_name(scope, name, Wait::Forever).await,
        async |guard: LockGuard| guard.release().await,
    )
    .await
}

/// Times `rounds` handoffs (after two unreported ones) to `peer`, in µs:
/// `hold` takes the lock here, the peer is told `command` and says it
/// waits, and after `settle` (for its wait to reach the kernel or the
/// server) `release` lets go; each time runs from the release call to the
/// peer's `CLOCK_MONOTONIC` stamp of holding the lock.
async fn time_handoffs<H>(
    mut peer: Peer,
    command: &str,
    rounds: usize,
    settle: Duration,
    mut hold: impl AsyncFnMut() -> Result<H>,
    mut release: impl AsyncFnMut(H) -> Result<()>,
) -> Result<Dist> {
    let mut dist = Dist::default();
    for i in 0..rounds + 2 {
        let held = hold().await?;
        peer.send(command).await?;
        let waiting = peer.line().await?;
        if waiting != "waiting" {
            return Err(unavailable(format_args!("bench peer said {waiting:?}")));
        }
        tokio::time::sleep(settle).await;
        let t0 = monotonic_ns();
        release(held).await?;
        let t1: u64 = peer
            .line()
            .await?
            .parse()
            .map_err(|_| unavailable("bench peer sent no timestamp"))?;
        if i >= 2 {
            dist.push(t1.saturating_sub(t0) as f64 / 1e3);
        }
    }
    peer.finish().await?;
    Ok(dist)
}

/// Four peer processes cycling on one name for `length`.
async fn contention(
    opts: &BenchOptions,
    node: &str,
    global: &str,
    scope: Scope,
    length: Duration,
    out: &mut (dyn Write + Send),
) -> Result<()> {
    let name = format!("bench-contend-{}", monotonic_ns());
    let mut peers = Vec::new();
    for _ in 0..4 {
        peers.push(Peer::spawn(opts, node, global, scope, &name).await?);
    }
    let start = monotonic_ns() + 200_000_000;
    let deadline = start + length.as_nanos() as u64;
    for p in &mut peers {
        p.send(&format!("contend {start} {deadline}")).await?;
    }
    let mut counts = Vec::new();
    for p in &mut peers {
        counts.push(
            p.line()
                .await?
                .parse::<u64>()
                .map_err(|_| unavailable("bench peer sent no count"))?,
        );
    }
    for p in peers {
        p.finish().await?;
    }
    let total: u64 = counts.iter().sum();
    let min = counts.iter().copied().min().unwrap_or(0);
    let max = counts.iter().copied().max().unwrap_or(0);
    let secs = length.as_secs_f64();
    say(
        out,
        format_args!(
            "  {:<46} cycles/s={:.0} per-process min/max={}/{} fairness={:.2}",
            "contention: 4 processes on one name",
            total as f64 / secs,
            min,
            max,
            if max == 0 {
                0.0
            } else {
                min as f64 / max as f64
            }
        ),
    )
}

/// What `locks-bench peer` is told on its command line.
#[derive(Debug, Clone)]
pub struct PeerOptions {
    /// The Node backend URL.
    pub node: String,
    /// The Global backend URL.
    pub global: String,
    /// The scope whose backend is used.
    pub scope: Scope,
    /// The lock name.
    pub name: String,
}

/// The other process of the handoff and contention rows: says `ready`, then
/// reads commands from stdin until EOF. `acquire`: says `waiting`, acquires,
/// prints the `CLOCK_MONOTONIC` nanoseconds at which it held the lock,
/// releases. `queue`: says `waiting`, acquires, releases, and prints the
/// nanoseconds at which it held the lock and at which it began to release. `raw-acquire PATH`: the same with raw OFD calls on the file
/// `PATH`. `contend START_NS END_NS`: acquires and releases from
/// `CLOCK_MONOTONIC` `START_NS` to `END_NS`, then prints how many cycles it did.
///
/// # Errors
/// Backend errors and broken pipes.
pub async fn peer(opts: PeerOptions) -> Result<()> {
    let config = Config {
        backends: BackendUrls {
            process: Some("memory://".to_owned()),
            node: Some(opts.node.clone()),
            global: Some(opts.global.clone()),
        },
        ..Config::default()
    };
    let locks = Locks::open(config).await?;
    let mut stdout = tokio::io::stdout();
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut write = async |text: String| -> Result<()> {
        stdout
            .write_all(text.as_bytes())
            .await
            .map_err(io_err("writing to the bench"))?;
        stdout.flush().await.map_err(io_err("writing to the bench"))
    };
    write("ready\n".to_owned()).await?;
    while let Some(line) = lines
        .next_line()
        .await
        .map_err(io_err("reading from the bench"))?
    {
        if line == "acquire" {
            write("waiting\n".to_owned()).await?;
            let guard = locks
                .lock_name(opts.scope, &opts.name, Wait::Forever)
                .await?;
            let t1 = monotonic_ns();
            guard.release().await?;
            write(format!("{t1}\n")).await?;
        } else if line == "queue" {
            write("waiting\n".to_owned()).await?;
            let guard = locks
                .lock_name(opts.scope, &opts.name, Wait::Forever)
                .await?;
            let held = monotonic_ns();
            let release = monotonic_ns();
            guard.release().await?;
            write(format!("{held} {release}\n")).await?;
        } else if let Some(path) = line.strip_prefix("raw-acquire ") {
            use std::os::fd::AsRawFd;
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(path)
                .map_err(io_err("opening the raw handoff's lock file"))?;
            write("waiting\n".to_owned()).await?;
            let t1 = tokio::task::spawn_blocking(move || {
                ofd(file.as_raw_fd(), true)?;
                let t1 = monotonic_ns();
                ofd(file.as_raw_fd(), false)?;
                Ok::<_, std::io::Error>(t1)
            })
            .await
            .map_err(|e| Error::new(ErrorKind::Internal, e.to_string()))?
            .map_err(io_err("raw OFD lock in the peer"))?;
            write(format!("{t1}\n")).await?;
        } else if let Some(times) = line.strip_prefix("contend ") {
            let mut times = times.split(' ').map(str::parse::<u64>);
            let (Some(Ok(start)), Some(Ok(deadline))) = (times.next(), times.next()) else {
                return Err(Error::new(ErrorKind::Internal, "bad times from the bench"));
            };
            // Everyone starts together.
            tokio::time::sleep(Duration::from_nanos(start.saturating_sub(monotonic_ns()))).await;
            let mut count = 0u64;
            while monotonic_ns() < deadline {
                let guard = locks
                    .lock_name(opts.scope, &opts.name, Wait::Forever)
                    .await?;
                guard.release().await?;
                count += 1;
            }
            write(format!("{count}\n")).await?;
        }
    }
    Ok(())
}

// ---------------------------------------------------------------- etcd

async fn etcd(
    plan: &Plan,
    opts: &BenchOptions,
    dir: &Path,
    endpoint: &str,
    out: &mut (dyn Write + Send),
) -> Result<Ours> {
    say(out, format_args!("\n[etcd {endpoint}]"))?;
    let url = format!("etcd://{endpoint}");
    let locks = open_client(dir, Some(&url)).await?;
    let mut raw = etcd_client::Client::connect([format!("http://{endpoint}")], None)
        .await
        .map_err(|e| unavailable(format_args!("raw etcd client: {e}")))?;
    let mut raw2 = raw.clone();
    let key = format!("locks-bench-raw-{}", std::process::id());
    let (floor, ours) = paired(
        plan.rounds,
        plan.server_batch,
        async |_| {
            raw.put(key.as_str(), "x", None)
                .await
                .map_err(|e| unavailable(format_args!("etcd put: {e}")))?;
            raw.delete(key.as_str(), None)
                .await
                .map_err(|e| unavailable(format_args!("etcd delete: {e}")))?;
            Ok(())
        },
        async |_| cycle(&locks, Scope::Global, "bench-etcd").await,
    )
    .await?;
    let mut rtt = RoundTrips::default();
    for i in 0..plan.server_handoffs * 2 {
        let t = rtt.start(i).await;
        raw2.put(key.as_str(), "x", None)
            .await
            .map_err(|e| unavailable(format_args!("etcd put: {e}")))?;
        rtt.record(i, t);
    }
    let _ = raw2.delete(key.as_str(), None).await;
    let server = Server {
        locks: &locks,
        url: &url,
        name: "bench-etcd-handoff",
        cycle_label: "cycle vs raw put+delete",
        held_in: "lease",
    };
    server_rows(plan, opts, dir, &server, &floor, &ours, &rtt, out).await
}

/// How long the handoff rows let the waiter settle before the release: long
/// enough for its request and watch to reach the server.
const SERVER_SETTLE: Duration = Duration::from_millis(30);

/// One write round trip, measured two ways: back to back (`hot`), and after
/// the same [`SERVER_SETTLE`] pause a handoff's release follows (`idle`). On
/// a virtual machine an idle client and server wake up slowly (here a write
/// after 30 ms idle takes 2–3× a hot one), so the handoff is held to the
/// idle round trip, which is what its release costs.
#[derive(Default)]
struct RoundTrips {
    hot: Dist,
    idle: Dist,
}

impl RoundTrips {
    /// Starts measurement `i`: every other one after the settle pause.
    async fn start(&self, i: usize) -> Instant {
        if i % 2 == 1 {
            tokio::time::sleep(SERVER_SETTLE).await;
        }
        Instant::now()
    }

    fn record(&mut self, i: usize, started: Instant) {
        let micros = started.elapsed().as_secs_f64() * 1e6;
        if i % 2 == 1 {
            self.idle.push(micros);
        } else {
            self.hot.push(micros);
        }
    }
}

/// A coordination server under measurement, for [`server_rows`].
struct Server<'a> {
    locks: &'a Locks,
    url: &'a str,
    name: &'a str,
    cycle_label: &'a str,
    held_in: &'a str,
}

/// The rows every server section shares: the cycle against the floor
/// measured by the caller, the handoff between processes against one write
/// round trip after the same idle pause (`rtt`), many names held at once, and
/// contention.
#[allow(clippy::too_many_arguments)]
async fn server_rows(
    plan: &Plan,
    opts: &BenchOptions,
    dir: &Path,
    server: &Server<'_>,
    floor: &Dist,
    ours: &Dist,
    rtt: &RoundTrips,
    out: &mut (dyn Write + Send),
) -> Result<Ours> {
    row(
        out,
        server.cycle_label,
        ours.p50(),
        &format!("p99={:.2}", ours.p99()),
        Some(floor.p50()),
        Some(1.3),
    )?;
    let node = format!("file://{}", dir.display());
    let hand = handoff(
        opts,
        server.locks,
        &node,
        server.url,
        Scope::Global,
        server.name,
        plan.server_handoffs,
        SERVER_SETTLE,
    )
    .await?;
    let one = rtt.idle.p50();
    row(
        out,
        "handoff p50 vs one write round trip, idle",
        hand.p50(),
        &format!("p99={:.2} hot_rtt={:.2}", hand.p99(), rtt.hot.p50()),
        Some(one),
        Some((one + 1000.0) / one),
    )?;
    held_many(server.locks, plan.held_names, server.held_in, out).await?;
    contention(opts, &node, server.url, Scope::Global, plan.contend, out).await?;
    let queue_name = format!("{}-queue", server.name);
    let queue = queue::Queue {
        locks: server.locks,
        node: &node,
        global: server.url,
        scope: Scope::Global,
        name: &queue_name,
        settle: SERVER_SETTLE,
    };
    queue::rows(opts, &queue, out).await?;
    Ok(Ours {
        cycle: ours.p50(),
        handoff: hand.p50(),
    })
}

/// Acquires `n` distinct Global names at once on one client, holds them all, releases them.
async fn held_many(
    locks: &Locks,
    n: usize,
    what: &str,
    out: &mut (dyn Write + Send),
) -> Result<()> {
    let limit = std::sync::Arc::new(tokio::sync::Semaphore::new(64));
    let stamp = monotonic_ns();
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..n {
        let locks = locks.clone();
        let limit = limit.clone();
        tasks.spawn(async move {
            let _permit = limit.acquire_owned().await;
            locks
                .lock_name(
                    Scope::Global,
                    &format!("bench-held-{stamp}-{i}"),
                    Wait::Forever,
                )
                .await
        });
    }
    let mut guards = Vec::with_capacity(n);
    while let Some(r) = tasks.join_next().await {
        guards.push(r.map_err(|e| Error::new(ErrorKind::Internal, e.to_string()))??);
    }
    let acquired = start.elapsed();
    let held = guards.iter().filter(|g| !g.is_lost()).count();
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for g in guards {
        let limit = limit.clone();
        tasks.spawn(async move {
            let _permit = limit.acquire_owned().await;
            g.release().await
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.map_err(|e| Error::new(ErrorKind::Internal, e.to_string()))??;
    }
    let released = start.elapsed();
    say(
        out,
        format_args!(
            "  {:<46} ours={:.2} held={held} acquire-all={:.2}s release-all={:.2}s",
            format!("{n} names held on one {what} (µs/name, 64 in flight)"),
            acquired.as_secs_f64() * 1e6 / n as f64,
            acquired.as_secs_f64(),
            released.as_secs_f64()
        ),
    )
}

// ---------------------------------------------------------------- ZooKeeper

async fn zookeeper(
    plan: &Plan,
    opts: &BenchOptions,
    dir: &Path,
    endpoint: &str,
    out: &mut (dyn Write + Send),
) -> Result<Ours> {
    use zookeeper_client as zk;
    say(out, format_args!("\n[zookeeper {endpoint}]"))?;
    let url = format!("zookeeper://{endpoint}/locks-bench");
    let locks = open_client(dir, Some(&url)).await?;
    let raw = zk::Client::connect(endpoint)
        .await
        .map_err(|e| unavailable(format_args!("raw ZooKeeper client: {e}")))?;
    let path = format!("/locks-bench-raw-{}", std::process::id());
    let create = zk::CreateMode::Ephemeral.with_acls(zk::Acls::anyone_all());
    // ZooKeeper runs on a JVM: a server started moments ago (as by
    // ci/bench.sh) serves each kind of request interpreted until the JIT has
    // seen it often enough, and the kinds a lock uses (sequential create,
    // listing) warm up later than the floor's. Exercise both first.
    let warm_until = Instant::now() + plan.jvm_warmup;
    while Instant::now() < warm_until {
        raw.create(&path, b"x", &create)
            .await
            .map_err(|e| unavailable(format_args!("ZooKeeper create: {e}")))?;
        raw.delete(&path, None)
            .await
            .map_err(|e| unavailable(format_args!("ZooKeeper delete: {e}")))?;
        cycle(&locks, Scope::Global, "bench-zk").await?;
    }
    let (floor, ours) = paired(
        plan.rounds,
        plan.server_batch,
        async |_| {
            raw.create(&path, b"x", &create)
                .await
                .map_err(|e| unavailable(format_args!("ZooKeeper create: {e}")))?;
            raw.delete(&path, None)
                .await
                .map_err(|e| unavailable(format_args!("ZooKeeper delete: {e}")))?;
            Ok(())
        },
        async |_| cycle(&locks, Scope::Global, "bench-zk").await,
    )
    .await?;
    // The lock recipe of kazoo (which ours follows, node for node) done with
    // raw calls: a sequential create with a holder identity and the listing
    // of the directory in one round trip, then the delete. The gap between
    // this and the floor is the recipe's; the gap between ours and this is
    // ours.
    let recipe_dir = format!("/locks-bench-recipe-{}", std::process::id());
    let recipe_node = format!("{recipe_dir}/{}__lock__", "0".repeat(32));
    let sequential = zk::CreateMode::EphemeralSequential.with_acls(zk::Acls::anyone_all());
    let persistent = zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all());
    raw.mkdir(&recipe_dir, &persistent)
        .await
        .map_err(|e| unavailable(format_args!("ZooKeeper mkdir: {e}")))?;
    let identity = vec![b'h'; 48];
    let (recipe, ours_again) = paired(
        plan.rounds,
        plan.server_batch,
        async |_| {
            let create = raw.create(&recipe_node, &identity, &sequential);
            let list = raw.list_children(&recipe_dir);
            let (created, listed) = tokio::join!(create, list);
            let (_, sequence) =
                created.map_err(|e| unavailable(format_args!("ZooKeeper create: {e}")))?;
            listed.map_err(|e| unavailable(format_args!("ZooKeeper list: {e}")))?;
            raw.delete(&format!("{recipe_node}{sequence}"), None)
                .await
                .map_err(|e| unavailable(format_args!("ZooKeeper delete: {e}")))
        },
        async |_| cycle(&locks, Scope::Global, "bench-zk").await,
    )
    .await?;
    let _ = raw.delete(&recipe_dir, None).await;
    let mut rtt = RoundTrips::default();
    for i in 0..plan.server_handoffs * 2 {
        let t = rtt.start(i).await;
        raw.create(&path, b"x", &create)
            .await
            .map_err(|e| unavailable(format_args!("ZooKeeper create: {e}")))?;
        rtt.record(i, t);
        raw.delete(&path, None)
            .await
            .map_err(|e| unavailable(format_args!("ZooKeeper delete: {e}")))?;
    }
    let server = Server {
        locks: &locks,
        url: &url,
        name: "bench-zk-handoff",
        cycle_label: "cycle vs raw create+delete",
        held_in: "session",
    };
    let rows = server_rows(plan, opts, dir, &server, &floor, &ours, &rtt, out).await?;
    row(
        out,
        "cycle vs kazoo's recipe done raw (no target)",
        ours_again.p50(),
        &format!("recipe/floor={:.2}", recipe.p50() / floor.p50()),
        Some(recipe.p50()),
        None,
    )?;
    Ok(rows)
}

// ---------------------------------------------------------------- C ABI

async fn c_abi(
    plan: &Plan,
    opts: &BenchOptions,
    dir: &Path,
    out: &mut (dyn Write + Send),
) -> Result<()> {
    say(out, "\n[C ABI]")?;
    let Some((header, libdir)) = &opts.ffi else {
        return say(
            out,
            "  skipped: C ABI not built (needs include/locks.h and liblocks_ffi.a next to the locks binary: cargo build --release -p locks-ffi)",
        );
    };
    let src = dir.join("c_loop.c");
    let exe = dir.join("c_loop");
    std::fs::write(&src, C_LOOP).map_err(io_err("writing the C loop"))?;
    let include = header.parent().unwrap_or(Path::new("."));
    let status = Command::new("cc")
        .args(["-O2", "-o"])
        .arg(&exe)
        .arg(&src)
        .arg("-I")
        .arg(include)
        .arg(libdir.join("liblocks_ffi.a"))
        .args(["-lpthread", "-ldl", "-lm"])
        .status()
        .await;
    match status {
        Ok(s) if s.success() => {}
        _ => return say(out, "  skipped: compiling the C loop with `cc` failed"),
    }
    let toml = format!(
        "[backends]\nprocess = \"memory://\"\nnode = \"file://{d}\"\nglobal = \"file://{d}\"\n",
        d = dir.display()
    );
    let batch = plan.mem_batch / 4;
    let mut c = Dist::default();
    let mut rust = Dist::default();
    for _ in 0..plan.rounds.div_ceil(2) {
        let output = Command::new(&exe)
            .arg(&toml)
            .arg(batch.to_string())
            .arg("2")
            .output()
            .await
            .map_err(io_err("running the C loop"))?;
        if !output.status.success() {
            return say(
                out,
                format_args!(
                    "  skipped: the C loop failed: {}",
                    String::from_utf8_lossy(&output.stderr).trim()
                ),
            );
        }
        for l in String::from_utf8_lossy(&output.stdout).lines() {
            if let Ok(ns) = l.trim().parse::<f64>() {
                c.push(ns / 1e3);
            }
        }
        let config = Config::from_toml_str(&toml, dir, "bench")?;
        // A thread of its own: BlockingLocks refuses to run inside a runtime.
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            let _ = tx.send((|| -> Result<Vec<f64>> {
                let blocking = locks::BlockingLocks::open(config)?;
                let mut means = Vec::new();
                for b in 0..3 {
                    let start = Instant::now();
                    for _ in 0..batch {
                        let g = blocking.lock_name(Scope::Process, "bench-ffi", Wait::Forever)?;
                        blocking.release(g)?;
                    }
                    if b > 0 {
                        means.push(start.elapsed().as_secs_f64() * 1e6 / batch as f64);
                    }
                }
                Ok(means)
            })());
        });
        let r = rx
            .await
            .map_err(|e| Error::new(ErrorKind::Internal, e.to_string()))??;
        for m in r {
            rust.push(m);
        }
    }
    row(
        out,
        "memory cycle from C vs Rust (BlockingLocks)",
        c.p50(),
        "",
        Some(rust.p50()),
        Some(1.1),
    )
}

// ---------------------------------------------------------------- Python

async fn python(
    plan: &Plan,
    opts: &BenchOptions,
    dir: &Path,
    ours: &[(&str, Ours)],
    out: &mut (dyn Write + Send),
) -> Result<()> {
    say(out, "\n[python anchors: ours / theirs on the same server]")?;
    let Some(py) = &opts.python else {
        return say(
            out,
            "  skipped: set LOCKS_TEST_PYTHON to a Python with oslo.concurrency, tooz, etcd3gw and kazoo",
        );
    };
    let script = dir.join("anchors.py");
    std::fs::write(&script, PYTHON_ANCHORS).map_err(io_err("writing the Python script"))?;
    let get = |k: &str| ours.iter().find(|(n, _)| *n == k).map(|(_, v)| *v);
    let pydir = dir.join("python-locks");
    std::fs::create_dir_all(&pydir).map_err(io_err("creating the Python lock dir"))?;
    // Python's own floor under oslo's lock, for context: lockf on a file opened once.
    if let Some(file) = get("file") {
        let output = Command::new(py)
            .arg(&script)
            .args(["lockf", &pydir.display().to_string()])
            .arg((plan.python_iters * 10).to_string())
            .output()
            .await
            .map_err(io_err("running the Python anchors"))?;
        let label = "file cycle vs Python's raw fcntl.lockf (no target)";
        match String::from_utf8_lossy(&output.stdout)
            .trim()
            .parse::<f64>()
        {
            Ok(theirs) if output.status.success() => {
                row(out, label, file.cycle, "", Some(theirs), None)?
            }
            _ => say(
                out,
                format_args!("  {label:<46} skipped: the lockf loop failed"),
            )?,
        }
    }
    let mut cases: Vec<(&str, String, &str)> = vec![
        ("oslo-external", pydir.display().to_string(), "file"),
        ("tooz", format!("file://{}", pydir.display()), "file"),
    ];
    if let Some(ep) = &opts.etcd {
        cases.push(("tooz", format!("etcd3+http://{ep}"), "etcd"));
    }
    if let Some(ep) = &opts.zookeeper {
        cases.push(("tooz", format!("zookeeper://{ep}"), "zookeeper"));
    }
    for (kind, target, backend) in cases {
        let Some(our) = get(backend) else { continue };
        for handoff in [false, true] {
            let iters = if backend == "file" {
                plan.python_iters * 10
            } else {
                plan.python_iters
            };
            let mut cmd = Command::new(py);
            cmd.arg(&script);
            if handoff {
                // tooz on etcd polls once a second: few rounds are plenty.
                let rounds = match (backend, opts.quick) {
                    ("etcd", true) => 2,
                    ("etcd", false) => 5,
                    (_, true) => 5,
                    (_, false) => 15,
                };
                cmd.args(["handoff", kind, &target]).arg(rounds.to_string());
            } else {
                cmd.args([kind, &target]).arg(iters.to_string());
            }
            let output = cmd
                .output()
                .await
                .map_err(io_err("running the Python anchors"))?;
            let (what, our) = if handoff {
                ("handoff", our.handoff)
            } else {
                ("cycle", our.cycle)
            };
            let label = format!("{backend} {what} vs {kind} {}", scheme_of(&target));
            let text = String::from_utf8_lossy(&output.stdout);
            match text.trim().parse::<f64>() {
                Ok(theirs) if output.status.success() => {
                    let speedup = format!("speedup={:.1}x", theirs / our);
                    row(out, &label, our, &speedup, Some(theirs), Some(0.1))?;
                }
                _ => say(
                    out,
                    format_args!(
                        "  {label:<46} skipped: {}",
                        String::from_utf8_lossy(&output.stderr)
                            .lines()
                            .last()
                            .unwrap_or("no output")
                    ),
                )?,
            }
        }
    }
    Ok(())
}

fn scheme_of(target: &str) -> &str {
    target.split_once("://").map_or("(lock_path)", |(s, _)| s)
}
