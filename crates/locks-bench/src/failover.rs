//! The unavailability window after a leader kill: how long a client of a
//! 3-member cluster cannot take a lock once the leader dies, quorum kept.
//!
//! The section starts a cluster of its own with the repository's fixture
//! scripts (`ci/etcd.sh start-cluster`, `ci/zookeeper.sh start-cluster`: three
//! processes on 127.0.0.1, etcd with a 1 s election timeout), opens one client
//! on all three members, and per round: takes and releases a lock to be sure
//! the client is connected, kills the leader with SIGKILL, and from the kill
//! on asks for a fresh name until it gets it. The window is the time from the
//! kill to holding that lock; the member is then started again and has its
//! log caught up before the next round. The target is the election timeout
//! plus one second: the cluster's own election, and at most one second of
//! the client finding the new leader.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use locks::{Locks, Scope, Wait};
use tokio::process::Command;

use super::stats::Dist;
use super::{Result, TempDir, open_client, row, say, unavailable};

/// etcd's election timeout in the fixture, the floor of the window.
const ELECTION_TIMEOUT: Duration = Duration::from_secs(1);
/// How long one round may wait for the cluster to serve again.
const GIVE_UP: Duration = Duration::from_secs(20);
/// How long a restarted member gets to catch up before the next round.
const CATCH_UP: Duration = Duration::from_secs(2);

/// A coordination service whose cluster the section measures.
#[derive(Debug, Clone, Copy)]
pub(super) enum Service {
    /// `ci/etcd.sh`, `etcd://` URLs.
    Etcd,
    /// `ci/zookeeper.sh`, `zookeeper://` URLs.
    Zookeeper,
}

impl Service {
    fn script(self) -> PathBuf {
        let name = match self {
            Service::Etcd => "etcd.sh",
            Service::Zookeeper => "zookeeper.sh",
        };
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../ci")
            .join(name)
    }

    /// The variable of the cluster's members in the fixture's env file.
    fn members_var(self) -> &'static str {
        match self {
            Service::Etcd => "LOCKS_TEST_ETCD_CLUSTER",
            Service::Zookeeper => "LOCKS_TEST_ZK_CLUSTER",
        }
    }

    fn env_file(self) -> &'static str {
        match self {
            Service::Etcd => "etcd-cluster.env",
            Service::Zookeeper => "zookeeper-cluster.env",
        }
    }

    fn url(self, members: &str) -> String {
        match self {
            Service::Etcd => format!("etcd://{members}?ttl=5"),
            Service::Zookeeper => format!("zookeeper://{members}/locks-bench?session_timeout=5s"),
        }
    }

    fn label(self) -> &'static str {
        match self {
            Service::Etcd => "etcd",
            Service::Zookeeper => "zookeeper",
        }
    }
}

/// A cluster started by the section, stopped when dropped.
struct Cluster {
    service: Service,
    state: TempDir,
    members: String,
}

impl Cluster {
    async fn start(service: Service) -> Result<Cluster> {
        let state = TempDir::new(&format!("{}-cluster", service.label()))?;
        script(
            service,
            &["start-cluster", &state.0.display().to_string(), "3"],
        )
        .await?;
        let env = std::fs::read_to_string(state.0.join(service.env_file()))
            .map_err(|e| unavailable(format_args!("reading the cluster's env file: {e}")))?;
        let prefix = format!("{}=", service.members_var());
        let members = env
            .lines()
            .find_map(|line| line.strip_prefix(&prefix))
            .ok_or_else(|| unavailable(format_args!("no {} in the env file", prefix)))?
            .to_owned();
        Ok(Cluster {
            service,
            state,
            members,
        })
    }

    fn state(&self) -> String {
        self.state.0.display().to_string()
    }

    /// The index (1-based) of the member that leads now.
    async fn leader(&self) -> Result<String> {
        let out = script(self.service, &["leader", &self.state()]).await?;
        out.split_whitespace()
            .next()
            .map(str::to_owned)
            .ok_or_else(|| unavailable("the fixture named no leader"))
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = std::process::Command::new("bash")
            .arg(self.service.script())
            .args(["stop", &self.state()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Runs the fixture script; its stdout on success.
async fn script(service: Service, args: &[&str]) -> Result<String> {
    let out = Command::new("bash")
        .arg(service.script())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| unavailable(format_args!("running {}: {e}", service.script().display())))?;
    if !out.status.success() {
        return Err(unavailable(format_args!(
            "{} {} failed: {}",
            service.script().display(),
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Prints the section of `service`, or why it is skipped.
///
/// # Errors
/// A cluster that does not start or serve again within [`GIVE_UP`].
pub(super) async fn section(
    service: Service,
    rounds: usize,
    dir: &Path,
    out: &mut (dyn Write + Send),
) -> Result<()> {
    say(
        out,
        format_args!("\n[{} cluster of 3 members]", service.label()),
    )?;
    let cluster = Cluster::start(service).await?;
    let locks = open_client(dir, Some(&service.url(&cluster.members))).await?;
    let mut windows = Dist::default();
    for round in 0..rounds {
        windows.push(kill_leader(&cluster, &locks, round).await?.as_secs_f64() * 1e3);
    }
    row(
        out,
        "unavailability after a leader kill, ms (floor = election timeout)",
        windows.p50(),
        &format!("max={:.2}", windows.quantile(1.0)),
        Some(ELECTION_TIMEOUT.as_secs_f64() * 1e3),
        Some(2.0),
    )
}

/// One round: the time from killing the leader to holding a fresh lock.
async fn kill_leader(cluster: &Cluster, locks: &Locks, round: usize) -> Result<Duration> {
    let name = |what: &str| format!("bench-failover-{round}-{what}");
    locks
        .lock_name(Scope::Global, &name("before"), Wait::Timeout(GIVE_UP))
        .await?
        .release()
        .await?;
    let leader = cluster.leader().await?;
    let killed = Instant::now();
    script(
        cluster.service,
        &["stop-member", &cluster.state(), &leader, "KILL"],
    )
    .await?;
    let window = loop {
        let left = GIVE_UP.saturating_sub(killed.elapsed());
        if left.is_zero() {
            return Err(unavailable(format_args!(
                "no lock within {GIVE_UP:?} of killing the leader"
            )));
        }
        match locks
            .lock_name(Scope::Global, &name("after"), Wait::Timeout(left))
            .await
        {
            Ok(guard) => {
                let window = killed.elapsed();
                guard.release().await?;
                break window;
            }
            // Unavailable while no member serves: ask again.
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    };
    script(
        cluster.service,
        &["start-member", &cluster.state(), &leader],
    )
    .await?;
    tokio::time::sleep(CATCH_UP).await;
    Ok(window)
}
