//! Helpers shared by the integration tests: the server from the environment,
//! backends on private namespaces, a raw client to inspect nodes, and
//! dedicated servers started with `ci/zookeeper.sh`.

#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use locks_core::LockName;
use locks_zookeeper::{ZkBackend, ZkConfig};

/// The shared test server (`LOCKS_TEST_ZK`), or `None` to skip.
pub fn server() -> Option<String> {
    locks_core::testing::server_from_env("LOCKS_TEST_ZK")
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A string no other test, process or run uses.
pub fn unique(what: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{what}-{}-{nanos:x}-{n}", std::process::id())
}

pub fn name(what: &str) -> LockName {
    LockName::new(unique(what)).expect("test names are valid")
}

/// A configuration for `addr` (one server, or an ensemble's `h:p,h:p,…`)
/// on a namespace of its own.
pub fn config(addr: &str, what: &str) -> ZkConfig {
    ZkConfig::new(addr.split(',')).namespace(format!("locks-test/{}", unique(what)))
}

pub async fn connect(config: ZkConfig) -> ZkBackend {
    ZkBackend::connect(config.clone())
        .await
        .unwrap_or_else(|e| panic!("connect {config:?}: {}", e.report()))
}

/// A plain client, to look at nodes behind the backend's back.
pub async fn raw(addr: &str) -> zookeeper_client::Client {
    zookeeper_client::Client::connect(addr)
        .await
        .unwrap_or_else(|e| panic!("raw connect to {addr}: {e}"))
}

/// The children of `dir`, sorted (empty if it does not exist).
pub async fn children(client: &zookeeper_client::Client, dir: &str) -> Vec<String> {
    match client.list_children(dir).await {
        Ok(mut c) => {
            c.sort();
            c
        }
        Err(zookeeper_client::Error::NoNode) => Vec::new(),
        Err(e) => panic!("list {dir}: {e}"),
    }
}

/// Polls `check` every 10 ms until it holds, failing after `limit`.
pub async fn eventually<F, Fut>(limit: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    while !check().await {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A server of its own, started with `ci/zookeeper.sh` in a temporary
/// directory, for tests that pause or stop it. Dropping it resumes and stops it.
pub struct DedicatedServer {
    pub addr: String,
    pub pid: u32,
    dir: tempfile::TempDir,
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../ci/zookeeper.sh")
}

impl DedicatedServer {
    pub fn start() -> DedicatedServer {
        let dir = tempfile::tempdir().expect("temporary directory");
        let out = Command::new("bash")
            .arg(script())
            .arg("start")
            .arg(dir.path())
            .output()
            .expect("run ci/zookeeper.sh");
        assert!(
            out.status.success(),
            "ci/zookeeper.sh start failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let env = std::fs::read_to_string(dir.path().join("zookeeper.env")).expect("zookeeper.env");
        let var = |key: &str| {
            env.lines()
                .find_map(|l| l.strip_prefix(key))
                .unwrap_or_else(|| panic!("{key} missing in zookeeper.env: {env}"))
                .to_owned()
        };
        DedicatedServer {
            addr: var("LOCKS_TEST_ZK="),
            pid: var("LOCKS_TEST_ZK_PID=").parse().expect("pid"),
            dir,
        }
    }

    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid.to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} {}", self.pid);
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("zookeeper.log")).unwrap_or_default()
    }
}

impl Drop for DedicatedServer {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-CONT")
            .arg(self.pid.to_string())
            .status();
        let _ = Command::new("bash")
            .arg(script())
            .arg("stop")
            .arg(self.dir.path())
            .output();
    }
}

/// A TLS server of its own (`ci/zookeeper.sh start-tls DIR OPTIONS…`, e.g.
/// `server-cert=expired`), with its TLS material in `tls_dir`. Dropping it
/// stops it.
pub struct DedicatedTlsServer {
    pub addr: String,
    pub tls_dir: PathBuf,
    dir: tempfile::TempDir,
}

impl DedicatedTlsServer {
    pub fn start(options: &[&str]) -> DedicatedTlsServer {
        let dir = tempfile::tempdir().expect("temporary directory");
        let out = Command::new("bash")
            .arg(script())
            .arg("start-tls")
            .arg(dir.path())
            .args(options)
            .output()
            .expect("run ci/zookeeper.sh");
        assert!(
            out.status.success(),
            "ci/zookeeper.sh start-tls {options:?} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let env = std::fs::read_to_string(dir.path().join("zookeeper-tls.env"))
            .expect("zookeeper-tls.env");
        let var = |key: &str| {
            env.lines()
                .find_map(|l| l.strip_prefix(key))
                .unwrap_or_else(|| panic!("{key} missing in zookeeper-tls.env: {env}"))
                .to_owned()
        };
        DedicatedTlsServer {
            addr: var("LOCKS_TEST_ZOOKEEPER_TLS="),
            tls_dir: PathBuf::from(var("LOCKS_TEST_ZOOKEEPER_TLS_DIR=")),
            dir,
        }
    }
}

impl Drop for DedicatedTlsServer {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(script())
            .arg("stop")
            .arg(self.dir.path())
            .output();
    }
}

/// An ensemble of its own, started with `ci/zookeeper.sh start-cluster` in a
/// temporary directory, for tests that kill members. Dropping it stops every
/// member.
pub struct Ensemble {
    /// `127.0.0.1:P` of each member, in order (member 1 first).
    pub members: Vec<String>,
    dir: tempfile::TempDir,
}

impl Ensemble {
    pub fn start(n: usize) -> Ensemble {
        let dir = tempfile::tempdir().expect("temporary directory");
        let mut ensemble = Ensemble {
            members: Vec::new(),
            dir,
        };
        let out = ensemble.script(&["start-cluster", &n.to_string()]);
        let env = std::fs::read_to_string(ensemble.dir.path().join("zookeeper-cluster.env"))
            .unwrap_or_else(|e| panic!("zookeeper-cluster.env: {e}; {out}"));
        ensemble.members = (1..=n)
            .map(|i| {
                let key = format!("LOCKS_TEST_ZK_M{i}=");
                env.lines()
                    .find_map(|l| l.strip_prefix(key.as_str()))
                    .unwrap_or_else(|| panic!("{key} missing in {env}"))
                    .to_owned()
            })
            .collect();
        ensemble
    }

    /// Runs `ci/zookeeper.sh ACTION STATE_DIR ARGS…`, failing the test if it fails.
    fn script(&self, args: &[&str]) -> String {
        let out = Command::new("bash")
            .arg(script())
            .arg(args[0])
            .arg(self.dir.path())
            .args(&args[1..])
            .output()
            .expect("run ci/zookeeper.sh");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success(),
            "ci/zookeeper.sh {args:?} failed:\n{text}"
        );
        text
    }

    /// The 1-based index of the member that leads now.
    pub fn leader(&self) -> usize {
        let out = self.script(&["leader"]);
        out.split_whitespace()
            .next()
            .and_then(|i| i.parse().ok())
            .unwrap_or_else(|| panic!("unexpected `leader` output: {out}"))
    }

    /// Stops member `i` (1-based) with `signal` (`TERM`, `KILL`).
    pub fn stop_member(&self, i: usize, signal: &str) {
        self.script(&["stop-member", &i.to_string(), signal]);
    }

    /// Starts member `i` again on its ports and data dir.
    pub fn start_member(&self, i: usize) {
        self.script(&["start-member", &i.to_string()]);
    }

    /// A configuration naming every member, on a namespace of its own.
    pub fn config(&self, what: &str) -> ZkConfig {
        ZkConfig::new(self.members.clone()).namespace(format!("locks-test/{}", unique(what)))
    }
}

impl Drop for Ensemble {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(script())
            .arg("stop")
            .arg(self.dir.path())
            .output();
    }
}
