//! The rows every server section (etcd, ZooKeeper) shares: handoff against
//! one write round trip, many names held at once, contention.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use locks::{Error, ErrorKind, Locks, Result, Scope, Wait};

use crate::peer::{contention, handoff};
use crate::stats::Dist;
use crate::{BenchOptions, Ours, Plan, monotonic_ns, queue, row, say};

/// How long the handoff rows let the waiter settle before the release: long
/// enough for its request and watch to reach the server.
pub(crate) const SERVER_SETTLE: Duration = Duration::from_millis(30);

/// One write round trip, measured two ways: back to back (`hot`), and after
/// the same [`SERVER_SETTLE`] pause a handoff's release follows (`idle`). On
/// a virtual machine an idle client and server wake up slowly (here a write
/// after 30 ms idle takes 2–3× a hot one), so the handoff is held to the
/// idle round trip, which is what its release costs.
#[derive(Default)]
pub(crate) struct RoundTrips {
    hot: Dist,
    idle: Dist,
}

impl RoundTrips {
    /// Starts measurement `i`: every other one after the settle pause.
    pub(crate) async fn start(&self, i: usize) -> Instant {
        if i % 2 == 1 {
            tokio::time::sleep(SERVER_SETTLE).await;
        }
        Instant::now()
    }

    pub(crate) fn record(&mut self, i: usize, started: Instant) {
        let micros = started.elapsed().as_secs_f64() * 1e6;
        if i % 2 == 1 {
            self.idle.push(micros);
        } else {
            self.hot.push(micros);
        }
    }
}

/// A coordination server under measurement, for [`server_rows`].
pub(crate) struct Server<'a> {
    pub(crate) locks: &'a Locks,
    pub(crate) url: &'a str,
    pub(crate) name: &'a str,
    pub(crate) cycle_label: &'a str,
    pub(crate) held_in: &'a str,
}

/// The rows every server section shares: the cycle against the floor
/// measured by the caller, the handoff between processes against one write
/// round trip after the same idle pause (`rtt`), many names held at once, and
/// contention.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn server_rows(
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
pub(crate) async fn held_many(
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
