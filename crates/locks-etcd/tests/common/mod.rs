//! Helpers shared by the integration tests: the server under test, raw etcd
//! access for checks, dedicated servers, and `etcdctl`.
#![allow(dead_code, unreachable_pub)]

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Client, GetOptions};
use locks_core::{Backend, LockName, LockRequest, Scope, Wait};
use locks_etcd::{EtcdBackend, EtcdConfig, Layout};

/// The address of the shared test server, or `None` to skip.
pub fn server() -> Option<String> {
    locks_core::testing::server_from_env("LOCKS_TEST_ETCD")
}

/// A configuration for `addr`: one `host:port`, or several separated by
/// commas (a cluster, as `LOCKS_TEST_ETCD_CLUSTER` lists it).
pub fn config(addr: &str, layout: Layout) -> EtcdConfig {
    let mut config = EtcdConfig::new(addr.split(','));
    config.layout = layout;
    config
}

pub async fn connect(addr: &str, layout: Layout) -> EtcdBackend {
    connect_with(config(addr, layout)).await
}

pub async fn connect_with(config: EtcdConfig) -> EtcdBackend {
    EtcdBackend::connect(config.clone())
        .await
        .unwrap_or_else(|e| panic!("connecting with {config:?}: {}", e.report()))
}

/// Two clients (two leases) on the shared server, or `None` when it is not configured.
pub async fn backend_pair(layout: Layout) -> Option<(Arc<dyn Backend>, Arc<dyn Backend>)> {
    let addr = server()?;
    Some((
        Arc::new(connect(&addr, layout).await),
        Arc::new(connect(&addr, layout).await),
    ))
}

/// A backend on the shared server, or `None` when it is not configured.
pub async fn backend(layout: Layout) -> Option<Arc<dyn Backend>> {
    let addr = server()?;
    Some(Arc::new(connect(&addr, layout).await))
}

/// A plain etcd client for looking at keys behind the backend's back.
pub async fn raw(addr: &str) -> Client {
    let urls: Vec<String> = addr.split(',').map(|a| format!("http://{a}")).collect();
    Client::connect(urls, None)
        .await
        .unwrap_or_else(|e| panic!("raw client for {addr}: {e}"))
}

/// The keys (with their leases and create revisions) under `prefix`.
pub async fn keys_under(client: &mut Client, prefix: &[u8]) -> Vec<(String, i64, i64)> {
    client
        .get(prefix.to_vec(), Some(GetOptions::new().with_prefix()))
        .await
        .unwrap_or_else(|e| panic!("get: {e}"))
        .kvs()
        .iter()
        // The clients' identity keys (one per lease, for `status`) are not locks.
        .filter(|kv| !String::from_utf8_lossy(kv.key()).contains("__locks_holders/"))
        .map(|kv| {
            (
                String::from_utf8_lossy(kv.key()).into_owned(),
                kv.lease(),
                kv.create_revision(),
            )
        })
        .collect()
}

pub fn name(prefix: &str) -> LockName {
    locks_core::testing::unique_name(prefix)
}

pub fn request(name: &LockName, wait: Wait) -> LockRequest {
    LockRequest::new(name.clone(), Scope::Global).wait(wait)
}

/// Polls `check` every 50 ms until it holds or `limit` passes.
pub async fn eventually<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn etcd_script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../ci/etcd.sh")
}

/// An etcd server of its own, for tests that pause it or change its
/// settings. Stopped (after a SIGCONT) when dropped.
pub struct DedicatedEtcd {
    dir: tempfile::TempDir,
    pub addr: String,
    pub pid: u32,
    env: String,
}

impl DedicatedEtcd {
    pub fn start() -> DedicatedEtcd {
        Self::launch(&["start"])
    }

    /// A server that speaks only TLS (certificates of `ci/tls.sh`) and, with
    /// `client_auth`, wants client certificates; see [`tls_file`](Self::tls_file).
    pub fn start_tls(client_auth: bool) -> DedicatedEtcd {
        let mut args = vec!["start-tls"];
        if client_auth {
            args.push("client-auth");
        }
        Self::launch(&args)
    }

    /// A TLS server presenting `cert` (`expired`, `wrong-host`: certificates
    /// of `ci/tls.sh` that clients must refuse) instead of `server.pem`.
    pub fn start_tls_presenting(cert: &str) -> DedicatedEtcd {
        Self::launch(&["start-tls", &format!("server-cert={cert}")])
    }

    fn launch(args: &[&str]) -> DedicatedEtcd {
        let action = args[0];
        let dir = tempfile::tempdir().expect("temporary directory");
        let out = Command::new("bash")
            .arg(etcd_script())
            .arg(action)
            .arg(dir.path())
            .args(&args[1..])
            .output()
            .expect("running ci/etcd.sh");
        assert!(
            out.status.success(),
            "ci/etcd.sh {action} failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let tls = action == "start-tls";
        let file = if tls { "etcd-tls.env" } else { "etcd.env" };
        let env = std::fs::read_to_string(dir.path().join(file)).expect("the env file");
        let value = |suffix: &str| {
            env.lines()
                .find_map(|l| {
                    let (key, value) = l.split_once('=')?;
                    let var = key.strip_prefix("LOCKS_TEST_ETCD")?;
                    let var = var
                        .strip_prefix("_MTLS")
                        .or_else(|| var.strip_prefix("_TLS"))
                        .filter(|_| tls)
                        .unwrap_or(var);
                    (var == suffix).then(|| value.to_owned())
                })
                .unwrap_or_else(|| panic!("LOCKS_TEST_ETCD*{suffix} missing from {file}: {env}"))
        };
        DedicatedEtcd {
            addr: value(""),
            pid: value("_PID").parse().expect("numeric pid"),
            env: env.clone(),
            dir,
        }
    }

    /// A file of the TLS material of a [`start_tls`](Self::start_tls)
    /// server (`ca.pem`, `client.pem`, ... as `ci/tls.sh` names them).
    pub fn tls_file(&self, name: &str) -> PathBuf {
        self.dir.path().join("tls").join(name)
    }

    /// Stops the server for good (it cannot be restarted).
    pub fn stop(&self) {
        let out = Command::new("bash")
            .arg(etcd_script())
            .arg("stop")
            .arg(self.dir.path())
            .output()
            .expect("running ci/etcd.sh");
        assert!(out.status.success(), "ci/etcd.sh stop failed");
    }

    /// Sends `signal` (`STOP`, `CONT`) to the server.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid.to_string())
            .status()
            .expect("running kill");
        assert!(status.success(), "kill -{signal} {}", self.pid);
    }
}

impl Drop for DedicatedEtcd {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-CONT")
            .arg(self.pid.to_string())
            .stderr(std::process::Stdio::null())
            .status();
        let _ = Command::new("bash")
            .arg(etcd_script())
            .arg("stop")
            .arg(self.dir.path())
            .output();
    }
}

/// `etcdctl` (API v3) against `addr`.
pub fn etcdctl(addr: &str) -> Command {
    let mut cmd = Command::new("etcdctl");
    cmd.env("ETCDCTL_API", "3")
        .arg("--endpoints")
        .arg(format!("http://{addr}"));
    cmd
}

/// A cluster of etcd members of its own (ci/etcd.sh start-cluster), for tests
/// that kill, stop and restart members. Stopped when dropped.
pub struct DedicatedCluster {
    dir: tempfile::TempDir,
    /// The members' client addresses, member 1 first.
    pub members: Vec<String>,
}

impl DedicatedCluster {
    pub fn start(n: usize) -> DedicatedCluster {
        let dir = tempfile::tempdir().expect("temporary directory");
        let out = Command::new("bash")
            .arg(etcd_script())
            .arg("start-cluster")
            .arg(dir.path())
            .arg(n.to_string())
            .output()
            .expect("running ci/etcd.sh");
        assert!(
            out.status.success(),
            "ci/etcd.sh start-cluster failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let env =
            std::fs::read_to_string(dir.path().join("etcd-cluster.env")).expect("etcd-cluster.env");
        let members = env
            .lines()
            .find_map(|l| l.strip_prefix("LOCKS_TEST_ETCD_CLUSTER="))
            .expect("LOCKS_TEST_ETCD_CLUSTER in etcd-cluster.env")
            .split(',')
            .map(str::to_owned)
            .collect();
        DedicatedCluster { dir, members }
    }

    fn script(&self, args: &[&str]) -> String {
        let out = Command::new("bash")
            .arg(etcd_script())
            .arg(args[0])
            .arg(self.dir.path())
            .args(&args[1..])
            .output()
            .expect("running ci/etcd.sh");
        assert!(
            out.status.success(),
            "ci/etcd.sh {args:?} failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The 1-based index of the leader now.
    pub fn leader(&self) -> usize {
        let out = self.script(&["leader"]);
        out.split_whitespace()
            .next()
            .and_then(|i| i.parse().ok())
            .unwrap_or_else(|| panic!("ci/etcd.sh leader printed {out:?}"))
    }

    /// Stops member `i` (1-based) with `signal` (`KILL`, `TERM`).
    pub fn stop_member(&self, i: usize, signal: &str) {
        self.script(&["stop-member", &i.to_string(), signal]);
    }

    /// Starts member `i` again on its ports and data dir.
    pub fn start_member(&self, i: usize) {
        self.script(&["start-member", &i.to_string()]);
    }

    /// A configuration listing every member.
    pub fn config(&self, layout: Layout) -> EtcdConfig {
        let mut config = EtcdConfig::new(self.members.clone());
        config.layout = layout;
        config
    }
}

impl Drop for DedicatedCluster {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(etcd_script())
            .arg("stop")
            .arg(self.dir.path())
            .output();
    }
}

/// Tests that kill members or put load on a cluster run one at a time, so
/// that their clusters do not starve each other of the machine's cores.
pub fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());
    TURN.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// CLOCK_MONOTONIC now, in ns (comparable across the processes of one host).
pub fn monotonic_ns() -> u64 {
    locks_fault_proxy::monotonic_ns()
}
