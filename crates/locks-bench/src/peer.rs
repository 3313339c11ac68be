//! The other processes of the handoff and contention rows: [`Peer`], the
//! bench side of one, and [`peer`], the body of `locks-bench peer`.

use std::io::Write;
use std::process::Stdio;
use std::time::Duration;

use locks::{BackendUrls, Config, Error, ErrorKind, LockGuard, Locks, Result, Scope, Wait};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

use crate::stats::Dist;
use crate::{BenchOptions, io_err, monotonic_ns, ofd, say, unavailable};

/// One peer process and its pipes.
pub(crate) struct Peer {
    child: Child,
    stdin: ChildStdin,
    stdout: tokio::io::Lines<BufReader<ChildStdout>>,
}

impl Peer {
    pub(crate) async fn spawn(
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

    pub(crate) async fn send(&mut self, line: &str) -> Result<()> {
        self.stdin
            .write_all(format!("{line}\n").as_bytes())
            .await
            .map_err(io_err("writing to a bench peer"))?;
        self.stdin
            .flush()
            .await
            .map_err(io_err("writing to a bench peer"))
    }

    pub(crate) async fn line(&mut self) -> Result<String> {
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

    pub(crate) async fn finish(mut self) -> Result<()> {
        drop(self.stdin);
        let _ = tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await;
        Ok(())
    }
}

/// Handoff latency in µs: we hold `name`, a peer waits for it, we release;
/// from our release call to the peer holding it.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn handoff(
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
pub(crate) async fn time_handoffs<H>(
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
pub(crate) async fn contention(
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
