//! The file section: lock files against raw OFD `fcntl` calls on an open
//! descriptor, and handoffs between processes against a raw OFD handoff.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use locks::{Result, Scope};

use crate::peer::{Peer, contention, handoff, time_handoffs};
use crate::stats::Dist;
use crate::{BenchOptions, Ours, Plan, cycle, io_err, ofd, open_client, paired, queue, row, say};

pub(crate) async fn file(
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
pub(crate) async fn raw_handoff(
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
