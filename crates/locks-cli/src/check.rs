//! `locks check`: a mutual-exclusion checker.
//!
//! N holders take one lock M times each. Every holding is recorded, when it
//! ends, as one line `TOKEN PID ENTER_NS EXIT_NS [lost]` (PID is the task
//! number for the process scope) appended with a
//! single write(2) to a log opened with `O_APPEND`; the times are
//! `CLOCK_MONOTONIC`, which all processes of one host share. The enter time is
//! read after the acquire returned and the exit time before the release starts
//! (or when the guard reported the lock lost), so every recorded interval lies
//! inside the real holding. The checker then sorts the holdings by enter time
//! and counts
//!
//! - overlaps: holdings that entered before an earlier holding had exited;
//! - token regressions: holdings whose fencing token is not above the token of
//!   the holding before.
//!
//! For the process scope the holders are tasks of the checker itself; for the
//! node and global scopes they are copies of this binary (`locks check-worker`).
//!
//! With `--fenced`, every holding also writes its fencing token to a shared
//! resource, the file `LOG.resource`, once right after it acquired and once
//! after its hold, whether or not it still holds the lock: a holder paused
//! past its TTL (a zombie) writes as it would in real life. The resource, as
//! a fenced store does, refuses a token lower than the highest it has seen,
//! and every write is logged as `write TOKEN PID AT_NS accepted|refused`.
//! The checker then counts **stale writes**: accepted writes made after a
//! holding with a higher token had entered. That must be 0: the tokens are
//! what protects a resource from a holder that lost its lock without
//! knowing. In this mode an overlap with a holding that reported its lock
//! lost is the zombie case fencing exists for; it is counted apart
//! (`zombie_overlaps`), not as an overlap.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use locks::{Error, ErrorKind, Locks, Scope, Wait};

use crate::{ScopeArg, open_locks};

mod fenced;

use fenced::{FencedWrite, Resource};

/// Arguments of `locks check`.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Examples:\n  locks check --config etcd.toml --scope global --name check --processes 4 --iterations 500\n  \
                  locks check --scope process --name check --processes 8 --iterations 250\n\n\
                  The last line reads `handoffs=H overlaps=O token_regressions=T`; the exit status is 1 when \
                  O or T is not 0 or a holder failed. --processes 0 only verifies an existing --log."
)]
pub(crate) struct CheckArgs {
    /// The raw lock name every holder takes (the configured prefix is applied).
    #[arg(long)]
    name: String,

    /// The scope of the lock; `process` runs the holders as tasks of this process.
    #[arg(long)]
    scope: ScopeArg,

    /// How many holders (processes; tasks for the process scope).
    #[arg(long, value_name = "N")]
    processes: usize,

    /// How many times each holder takes the lock.
    #[arg(long, value_name = "M")]
    iterations: usize,

    /// How long each holding lasts, in microseconds.
    #[arg(long, value_name = "US", default_value_t = 0)]
    hold_us: u64,

    /// How long each holder waits after a release before asking again, in
    /// microseconds. Lets the others in: a process that releases a lock file
    /// often takes it again before a waiting process, woken by the kernel,
    /// runs (lock files are not first come, first served).
    #[arg(long, value_name = "US", default_value_t = 0)]
    pause_us: u64,

    /// Append the holdings to FILE and keep it (default: a temporary file, removed
    /// afterwards). Every holding already in FILE is verified too.
    #[arg(long, value_name = "FILE")]
    log: Option<PathBuf>,

    /// How long one acquire may wait before the holder gives up (`60s`, `2m`).
    #[arg(long, value_name = "DURATION", value_parser = crate::duration::parse, default_value = "120s")]
    timeout: Duration,

    /// Every holding writes its token to a resource that refuses tokens lower
    /// than the highest it has seen; count accepted stale writes.
    #[arg(long)]
    fenced: bool,
}

/// Arguments of the hidden `locks check-worker`: one holder of `locks check`.
#[derive(clap::Args, Debug)]
pub(crate) struct WorkerArgs {
    /// The raw lock name.
    #[arg(long)]
    name: String,

    /// The scope of the lock.
    #[arg(long)]
    scope: ScopeArg,

    /// How many times to take the lock.
    #[arg(long, value_name = "M")]
    iterations: usize,

    /// How long each holding lasts, in microseconds.
    #[arg(long, value_name = "US", default_value_t = 0)]
    hold_us: u64,

    /// How long to wait after a release before asking again, in microseconds.
    #[arg(long, value_name = "US", default_value_t = 0)]
    pause_us: u64,

    /// The log to append holdings to.
    #[arg(long, value_name = "FILE")]
    log: PathBuf,

    /// How long one acquire may wait.
    #[arg(long, value_name = "DURATION", value_parser = crate::duration::parse, default_value = "120s")]
    timeout: Duration,

    /// Print `acquired TOKEN PID ENTER_NS` when the lock is had and `lost TOKEN` when it is lost.
    #[arg(long)]
    announce: bool,

    /// Write each holding's token to the fenced resource `LOG.resource`.
    #[arg(long)]
    fenced: bool,
}

/// `CLOCK_MONOTONIC` in nanoseconds: one clock for every process of this host.
pub(crate) fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec to the pointer it is given.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &raw mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_MONOTONIC) cannot fail");
    u64::try_from(ts.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(ts.tv_nsec).unwrap_or(0)
}

/// The log, opened for appending (`O_APPEND`, created if missing).
fn open_log(path: &Path) -> locks::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| Error::io(format_args!("opening check log {}", path.display()), e))
}

/// Appends one line with a single write(2), so that lines of concurrent holders never interleave.
fn append(log: &mut std::fs::File, line: &str) -> locks::Result<()> {
    match log.write(line.as_bytes()) {
        Ok(n) if n == line.len() => Ok(()),
        Ok(n) => Err(Error::new(
            ErrorKind::Io,
            format!("short write to the check log ({n} of {} bytes)", line.len()),
        )),
        Err(e) => Err(Error::io("appending to the check log", e)),
    }
}

/// What one holder does.
#[derive(Debug, Clone)]
struct Plan {
    scope: Scope,
    name: String,
    iterations: usize,
    hold: Duration,
    /// The wait after each release.
    pause: Duration,
    timeout: Duration,
    announce: bool,
    /// Written as the holder's PID: the process id, or the task number.
    pid: u32,
    /// The fenced resource every holding writes its token to, with `--fenced`.
    fence: Option<Resource>,
}

/// One holder: takes the lock `iterations` times and logs every holding.
/// Returns how many holdings were lost.
async fn hold_loop(locks: &Locks, plan: &Plan, log: &mut std::fs::File) -> locks::Result<usize> {
    let Plan {
        scope,
        ref name,
        iterations,
        hold,
        pause,
        timeout,
        announce,
        pid,
        ref fence,
    } = *plan;
    let mut lost = 0;
    for _ in 0..iterations {
        let guard = locks.lock_name(scope, name, Wait::Timeout(timeout)).await?;
        let enter = monotonic_ns();
        let token = guard.token();
        if let Some(fence) = fence {
            append(log, &fence.write(token, pid)?.line())?;
        }
        if announce {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "acquired {token} {pid} {enter}");
            let _ = out.flush();
        }
        let was_lost = if hold.is_zero() {
            tokio::task::yield_now().await;
            guard.is_lost()
        } else {
            tokio::select! {
                () = tokio::time::sleep(hold) => guard.is_lost(),
                () = guard.lost() => true,
            }
        };
        let exit = monotonic_ns();
        // Written whether or not the lock is still held, as a holder that
        // lost it without knowing would: the resource must refuse it.
        if let Some(fence) = fence {
            append(log, &fence.write(token, pid)?.line())?;
        }
        let mark = if was_lost { " lost" } else { "" };
        append(log, &format!("{token} {pid} {enter} {exit}{mark}\n"))?;
        if was_lost {
            lost += 1;
            if announce {
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "lost {token}");
                let _ = out.flush();
            }
            // The release reports the loss, which the log already records.
            let _ = guard.release().await;
        } else {
            match guard.release().await {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::Lost => lost += 1,
                Err(e) => return Err(e),
            }
        }
        if !pause.is_zero() {
            tokio::time::sleep(pause).await;
        }
    }
    Ok(lost)
}

/// Runs the hidden `locks check-worker`.
pub(crate) async fn worker(config: Option<&Path>, args: WorkerArgs) -> locks::Result<ExitCode> {
    let locks = open_locks(config).await?;
    let mut log = open_log(&args.log)?;
    let plan = Plan {
        scope: args.scope.into(),
        name: args.name,
        iterations: args.iterations,
        hold: Duration::from_micros(args.hold_us),
        pause: Duration::from_micros(args.pause_us),
        timeout: args.timeout,
        announce: args.announce,
        pid: std::process::id(),
        fence: args.fenced.then(|| Resource::beside(&args.log)),
    };
    let lost = hold_loop(&locks, &plan, &mut log).await?;
    if lost > 0 {
        eprintln!(
            "locks check-worker {}: {lost} holdings were lost",
            std::process::id()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// One recorded holding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Holding {
    pub(crate) token: u64,
    pub(crate) pid: u32,
    pub(crate) enter: u64,
    pub(crate) exit: u64,
    pub(crate) lost: bool,
}

/// What the verification found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Verdict {
    pub(crate) holdings: usize,
    pub(crate) lost: usize,
    pub(crate) overlaps: usize,
    pub(crate) token_regressions: usize,
    pub(crate) malformed: usize,
    /// Consecutive holdings (in enter order) by different processes.
    pub(crate) switches: usize,
    /// With `--fenced`: overlaps with a holding that reported its lock lost.
    pub(crate) zombie_overlaps: usize,
    /// With `--fenced`: writes the resource accepted and refused.
    pub(crate) writes_accepted: usize,
    pub(crate) writes_refused: usize,
    /// With `--fenced`: accepted writes made after a higher token entered.
    pub(crate) stale_writes: usize,
    /// The first few violations, for the report.
    pub(crate) examples: Vec<String>,
}

impl Verdict {
    pub(crate) fn handoffs(&self) -> usize {
        self.holdings.saturating_sub(1)
    }
}

fn parse_line(line: &str) -> Option<Holding> {
    let mut fields = line.split_ascii_whitespace();
    let token = fields.next()?.parse().ok()?;
    let pid = fields.next()?.parse().ok()?;
    let enter = fields.next()?.parse().ok()?;
    let exit = fields.next()?.parse().ok()?;
    let lost = match fields.next() {
        None => false,
        Some("lost") => true,
        Some(_) => return None,
    };
    (fields.next().is_none() && exit >= enter).then_some(Holding {
        token,
        pid,
        enter,
        exit,
        lost,
    })
}

/// Verifies a log: sorted by enter time, no holding may enter before every
/// earlier one exited, and tokens must strictly increase. With `fenced`, an
/// overlap with a holding that reported its loss is a zombie overlap, and
/// accepted writes after a higher token entered are stale writes.
pub(crate) fn verify(text: &str, fenced: bool) -> Verdict {
    let mut verdict = Verdict::default();
    let mut holdings = Vec::new();
    let mut writes = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        if line.starts_with("write ")
            && let Some(write) = FencedWrite::parse(line)
        {
            writes.push(write);
            continue;
        }
        match parse_line(line) {
            Some(h) => holdings.push(h),
            None => {
                verdict.malformed += 1;
                if verdict.examples.len() < 5 {
                    verdict.examples.push(format!("malformed line: {line:?}"));
                }
            }
        }
    }
    holdings.sort_by_key(|h| (h.enter, h.exit));
    verdict.holdings = holdings.len();
    verdict.lost = holdings.iter().filter(|h| h.lost).count();
    verdict.writes_accepted = writes.iter().filter(|w| w.accepted).count();
    verdict.writes_refused = writes.len() - verdict.writes_accepted;
    let stale = fenced::stale_writes(&holdings, &writes);
    verdict.stale_writes = stale.len();
    for write in stale.iter().take(5) {
        verdict.examples.push(format!(
            "stale write accepted: token {} (pid {}) at {} after a higher token entered",
            write.token, write.pid, write.at
        ));
    }
    // The holding that exits last among those seen so far.
    let mut latest: Option<Holding> = None;
    let mut previous: Option<Holding> = None;
    for h in holdings {
        if let Some(l) = latest
            && h.enter < l.exit
            && fenced
            && l.lost
        {
            verdict.zombie_overlaps += 1;
        } else if let Some(l) = latest
            && h.enter < l.exit
        {
            verdict.overlaps += 1;
            if verdict.examples.len() < 5 {
                verdict.examples.push(format!(
                        "overlap: token {} (pid {}) entered at {} before token {} (pid {}) exited at {} ({} ns early)",
                        h.token,
                        h.pid,
                        h.enter,
                        l.token,
                        l.pid,
                        l.exit,
                        l.exit - h.enter
                    ));
            }
        }
        if let Some(p) = previous {
            if h.pid != p.pid {
                verdict.switches += 1;
            }
            if h.token <= p.token {
                verdict.token_regressions += 1;
                if verdict.examples.len() < 5 {
                    verdict.examples.push(format!(
                        "token regression: token {} (pid {}) entered after token {} (pid {})",
                        h.token, h.pid, p.token, p.pid
                    ));
                }
            }
        }
        if latest.is_none_or(|l| h.exit > l.exit) {
            latest = Some(h);
        }
        previous = Some(h);
    }
    verdict
}

/// Runs `locks check`.
pub(crate) async fn check(config: Option<&Path>, args: CheckArgs) -> locks::Result<ExitCode> {
    let scope = Scope::from(args.scope);
    let (log_path, temporary) = match &args.log {
        Some(path) => (path.clone(), false),
        None => (
            std::env::temp_dir().join(format!("locks-check-{}.log", std::process::id())),
            true,
        ),
    };
    let resource = Resource::beside(&log_path);
    if temporary {
        let _ = std::fs::remove_file(&log_path);
        let _ = std::fs::remove_file(resource.path());
    }
    // Created before any holder starts, so that a bad path fails at once.
    drop(open_log(&log_path)?);
    let started = Instant::now();
    let failures = if args.processes == 0 {
        0
    } else if scope == Scope::Process {
        run_tasks(config, &args, scope, &log_path).await?
    } else {
        // The workers say nothing about the configuration: warn here, once.
        crate::warn_taking(&open_locks(config).await?, scope);
        run_processes(config, &args, &log_path).await?
    };
    let elapsed = started.elapsed();
    let text = std::fs::read_to_string(&log_path)
        .map_err(|e| Error::io(format_args!("reading check log {}", log_path.display()), e))?;
    if temporary {
        let _ = std::fs::remove_file(&log_path);
        let _ = std::fs::remove_file(resource.path());
    }
    let verdict = verify(&text, args.fenced);
    for example in &verdict.examples {
        eprintln!("locks check: {example}");
    }
    println!(
        "scope={} holders={} iterations={} holdings={} lost={} process_switches={} malformed={} failed_holders={failures} elapsed={:.3}s",
        scope,
        args.processes,
        args.iterations,
        verdict.holdings,
        verdict.lost,
        verdict.switches,
        verdict.malformed,
        elapsed.as_secs_f64()
    );
    let fenced = if args.fenced {
        println!(
            "fenced writes_accepted={} writes_refused={} zombie_overlaps={}",
            verdict.writes_accepted, verdict.writes_refused, verdict.zombie_overlaps
        );
        format!(" stale_writes={}", verdict.stale_writes)
    } else {
        String::new()
    };
    println!(
        "handoffs={} overlaps={} token_regressions={}{fenced}",
        verdict.handoffs(),
        verdict.overlaps,
        verdict.token_regressions
    );
    let ok = verdict.overlaps == 0
        && verdict.token_regressions == 0
        && verdict.stale_writes == 0
        && verdict.malformed == 0
        && failures == 0;
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The process scope: holders are tasks sharing one client.
async fn run_tasks(
    config: Option<&Path>,
    args: &CheckArgs,
    scope: Scope,
    log_path: &Path,
) -> locks::Result<usize> {
    let locks = open_locks(config).await?;
    crate::warn_taking(&locks, scope);
    let mut tasks = Vec::with_capacity(args.processes);
    for task in 1..=args.processes {
        let plan = Plan {
            scope,
            name: args.name.clone(),
            iterations: args.iterations,
            hold: Duration::from_micros(args.hold_us),
            pause: Duration::from_micros(args.pause_us),
            timeout: args.timeout,
            announce: false,
            pid: u32::try_from(task).unwrap_or(u32::MAX),
            fence: args.fenced.then(|| Resource::beside(log_path)),
        };
        let locks = locks.clone();
        let mut log = open_log(log_path)?;
        tasks.push(tokio::spawn(async move {
            hold_loop(&locks, &plan, &mut log).await
        }));
    }
    let mut failures = 0;
    for task in tasks {
        match task.await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                failures += 1;
                eprintln!("locks check: a holder failed: {}", e.report());
            }
            Err(e) => {
                failures += 1;
                eprintln!("locks check: a holder panicked: {e}");
            }
        }
    }
    Ok(failures)
}

/// The node and global scopes: holders are copies of this binary.
async fn run_processes(
    config: Option<&Path>,
    args: &CheckArgs,
    log_path: &Path,
) -> locks::Result<usize> {
    let exe = std::env::current_exe().map_err(|e| Error::io("finding the locks binary", e))?;
    let scope = match args.scope {
        ScopeArg::Process => "process",
        ScopeArg::Node => "node",
        ScopeArg::Global => "global",
    };
    let mut children = Vec::with_capacity(args.processes);
    for _ in 0..args.processes {
        let mut cmd = tokio::process::Command::new(&exe);
        if let Some(config) = config {
            cmd.arg("--config").arg(config);
        }
        cmd.arg("check-worker")
            .args(["--scope", scope, "--name", &args.name])
            .arg("--iterations")
            .arg(args.iterations.to_string())
            .arg("--hold-us")
            .arg(args.hold_us.to_string())
            .arg("--pause-us")
            .arg(args.pause_us.to_string())
            .arg("--timeout")
            .arg(format!("{}ms", args.timeout.as_millis()))
            .arg("--log")
            .arg(log_path)
            .args(args.fenced.then_some("--fenced"))
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true);
        let child = cmd
            .spawn()
            .map_err(|e| Error::io(format_args!("starting {}", exe.display()), e))?;
        children.push(child);
    }
    let mut failures = 0;
    for mut child in children {
        let status = child
            .wait()
            .await
            .map_err(|e| Error::io("waiting for a check worker", e))?;
        if !status.success() {
            failures += 1;
            eprintln!("locks check: a holder process ended with {status}");
        }
    }
    Ok(failures)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verify_plain(text: &str) -> Verdict {
        verify(text, false)
    }

    #[test]
    fn a_zombie_overlap_is_counted_apart_only_when_fenced() {
        // Token 1 was lost while paused; token 2 entered before it noticed.
        let log = "1 10 100 500 lost\n2 11 300 400\n";
        let plain = verify(log, false);
        assert_eq!((plain.overlaps, plain.zombie_overlaps), (1, 0));
        let fenced = verify(log, true);
        assert_eq!((fenced.overlaps, fenced.zombie_overlaps), (0, 1));
    }

    #[test]
    fn stale_writes_are_accepted_writes_after_a_higher_token_entered() {
        let log = "1 10 100 500 lost\n2 11 300 400\n\
                   write 1 10 110 accepted\nwrite 2 11 310 accepted\n\
                   write 2 11 390 accepted\nwrite 1 10 450 refused\n";
        let v = verify(log, true);
        assert_eq!(
            (v.writes_accepted, v.writes_refused, v.stale_writes),
            (3, 1, 0)
        );
        // The zombie wrote before the new holder did: the resource could not know.
        let log = "1 10 100 500 lost\n2 11 300 400\n\
                   write 1 10 110 accepted\nwrite 1 10 305 accepted\n\
                   write 2 11 310 accepted\n";
        let v = verify(log, true);
        assert_eq!(v.stale_writes, 1, "{:?}", v.examples);
        assert!(v.examples[0].contains("stale write accepted: token 1"));
    }

    #[test]
    fn the_resource_refuses_lower_tokens_and_keeps_the_highest() {
        let dir = std::env::temp_dir().join(format!("locks-fence-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let resource = Resource::beside(&dir.join("check.log"));
        let outcomes: Vec<bool> = [5, 5, 7, 6, 8]
            .into_iter()
            .map(|token| resource.write(token, 1).expect("write").accepted)
            .collect();
        assert_eq!(outcomes, [true, true, true, false, true]);
        let kept = std::fs::read_to_string(dir.join("check.log.resource")).expect("read");
        assert_eq!(kept, "8");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn disjoint_increasing_holdings_pass() {
        let v = verify_plain("1 10 100 200\n2 11 200 300\n3 10 301 400 lost\n");
        assert_eq!(
            (
                v.holdings,
                v.handoffs(),
                v.overlaps,
                v.token_regressions,
                v.lost
            ),
            (3, 2, 0, 0, 1)
        );
    }

    #[test]
    fn overlaps_count_against_the_latest_exit_so_far() {
        // The third holding overlaps the first although not the second.
        let v = verify_plain("1 1 0 1000\n2 2 10 20\n3 3 30 40\n4 4 1000 1100\n");
        assert_eq!(v.overlaps, 2, "{:?}", v.examples);
    }

    #[test]
    fn token_regressions_follow_enter_order() {
        let v = verify_plain("5 1 300 400\n4 2 100 200\n5 3 500 600\n");
        assert_eq!(v.token_regressions, 1, "{:?}", v.examples);
        assert_eq!(v.overlaps, 0);
    }

    #[test]
    fn malformed_lines_are_counted() {
        let v = verify_plain("1 1 10 5\nx\n1 2 3 4 5\n");
        assert_eq!((v.malformed, v.holdings), (3, 0));
    }
}
