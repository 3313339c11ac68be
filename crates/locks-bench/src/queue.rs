//! Handoffs along a queue of waiting processes: does a handoff cost more
//! when more processes wait on the name? A lock whose release wakes every
//! waiter (a thundering herd), or whose waiter re-checks everyone that was
//! ahead of it, pays per waiter; a queue that wakes only the next one does
//! not.
//!
//! One round: this process holds the name, `N` peer processes are told to
//! take it once each, and once they all wait it releases. The peers then
//! take turns, each stamping `CLOCK_MONOTONIC` when it holds the lock and
//! just before it releases; sorted by holding time, the stamps give `N`
//! handoffs (ours to the first peer, each peer to the next), made while
//! `N - 1` down to 0 other processes still waited. The row for `N` is the
//! median of those handoffs over its rounds, so the `N = 64` row is a
//! handoff with about 32 processes waiting behind it.

use std::io::Write;
use std::time::Duration;

use locks::{Locks, Scope, Wait};

use super::peer::Peer;
use super::stats::Dist;
use super::{BenchOptions, Result, monotonic_ns, row, unavailable};

/// The queue lengths measured; the last is held to the first.
const LENGTHS: [usize; 3] = [1, 16, 64];

/// How long each queued peer adds to the settle time before the release.
const PER_WAITER: Duration = Duration::from_millis(3);

/// How many handoffs each length is measured over, at least.
fn samples(quick: bool) -> usize {
    if quick { 16 } else { 64 }
}

/// Where the queue is measured: the client holding first, the peers'
/// backends, the scope and the name.
pub(super) struct Queue<'a> {
    pub(super) locks: &'a Locks,
    pub(super) node: &'a str,
    pub(super) global: &'a str,
    pub(super) scope: Scope,
    pub(super) name: &'a str,
    /// How long one waiter needs for its wait to reach the kernel or server.
    pub(super) settle: Duration,
}

/// Prints one row per queue length; the longest is held to within 1.5× of
/// a single waiter's handoff.
///
/// # Errors
/// A backend or peer process failing.
pub(super) async fn rows(
    opts: &BenchOptions,
    queue: &Queue<'_>,
    out: &mut (dyn Write + Send),
) -> Result<()> {
    let mut single = f64::NAN;
    for waiters in LENGTHS {
        let dist = handoffs(opts, queue, waiters).await?;
        let label = match waiters {
            1 => "handoff, 1 process queued p50".to_owned(),
            n => format!("handoff, {n} processes queued p50 vs 1 queued"),
        };
        let extra = format!("p99={:.2}", dist.p99());
        if waiters == 1 {
            single = dist.p50();
            row(out, &label, dist.p50(), &extra, None, None)?;
        } else if waiters == LENGTHS[LENGTHS.len() - 1] {
            row(out, &label, dist.p50(), &extra, Some(single), Some(1.5))?;
        } else {
            row(out, &label, dist.p50(), &extra, Some(single), None)?;
        }
    }
    Ok(())
}

/// The handoffs, in µs, of rounds with `waiters` peers queued (after one
/// unreported round that warms every peer's client up).
async fn handoffs(opts: &BenchOptions, queue: &Queue<'_>, waiters: usize) -> Result<Dist> {
    let mut peers = Vec::with_capacity(waiters);
    for _ in 0..waiters {
        peers.push(Peer::spawn(opts, queue.node, queue.global, queue.scope, queue.name).await?);
    }
    let rounds = samples(opts.quick).div_ceil(waiters) + 1;
    let mut dist = Dist::default();
    for round in 0..rounds {
        let guard = queue
            .locks
            .lock_name(queue.scope, queue.name, Wait::Forever)
            .await?;
        for peer in &mut peers {
            peer.send("queue").await?;
        }
        for peer in &mut peers {
            let said = peer.line().await?;
            if said != "waiting" {
                return Err(unavailable(format_args!("bench peer said {said:?}")));
            }
        }
        // Waits reach the kernel or server one after another.
        let each = PER_WAITER * u32::try_from(waiters).unwrap_or(u32::MAX);
        tokio::time::sleep(queue.settle + each).await;
        let released = monotonic_ns();
        guard.release().await?;
        let mut turns = Vec::with_capacity(waiters);
        for peer in &mut peers {
            turns.push(turn(&peer.line().await?)?);
        }
        turns.sort_unstable();
        let mut previous_release = released;
        for (held, release) in turns {
            if round > 0 {
                dist.push(held.saturating_sub(previous_release) as f64 / 1e3);
            }
            previous_release = release;
        }
    }
    for peer in peers {
        peer.finish().await?;
    }
    Ok(dist)
}

/// A peer's `HELD_NS RELEASE_NS` line.
fn turn(line: &str) -> Result<(u64, u64)> {
    let mut stamps = line.split(' ').map(str::parse::<u64>);
    match (stamps.next(), stamps.next()) {
        (Some(Ok(held)), Some(Ok(release))) => Ok((held, release)),
        _ => Err(unavailable(format_args!(
            "bench peer sent {line:?}, not two timestamps"
        ))),
    }
}
