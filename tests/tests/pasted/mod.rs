//! What the pasted-URL suites share (`tls_interop.rs`,
//! `zookeeper_tls_interop.rs`): our `compat = "openstack"` client on a URL
//! as a deployment tool wrote it, and the both-ways check against the real
//! tooz driver on that same URL.

use std::path::Path;
use std::time::Duration;

use locks::{Config, ErrorKind, Locks, Scope, Wait};
use locks_tests::{Peer, python_from_env};

/// How long either side may take to answer.
pub(crate) const ANSWER: Duration = Duration::from_secs(20);

/// The `compat = "openstack"` client (prefix `cinder`) with `backend_url`
/// as its Global backend, pasted as it is.
pub(crate) async fn client(dir: &Path, backend_url: &str) -> Locks {
    let text = format!(
        "compat = \"openstack\"\nprefix = \"cinder\"\nlock_path = \"{}\"\n[backends]\nglobal = \"{backend_url}\"\n",
        dir.display()
    );
    let config = Config::from_toml_str(&text, dir, "pasted URL")
        .unwrap_or_else(|e| panic!("config:\n{text}\n{}", e.report()));
    Locks::open(config)
        .await
        .unwrap_or_else(|e| panic!("opening {backend_url}: {}", e.report()))
}

/// Both ways on `url`, pasted on our side and given to tooz on Python's
/// (with `python_env` added to its environment): each side's holder makes
/// the other's try-once fail, and after the release the other gets the lock.
pub(crate) async fn both_ways(url: &str, python_env: &[(&str, &str)]) {
    let python = python_from_env().expect("checked by the caller");
    let dir = tempfile::tempdir().expect("temp dir");
    let locks = client(dir.path(), url).await;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let name = format!("pasted-{}-{nanos:x}", std::process::id());
    let ours = |wait| {
        let (locks, name) = (locks.clone(), name.clone());
        async move { locks.lock_name(Scope::Global, &name, wait).await }
    };

    // tooz holds: our try-once fails; after its release ours succeeds.
    let mut peer = Peer::start(&python, ["tooz", url, &name], python_env);
    peer.ask("try", "GOT", ANSWER);
    let err = ours(Wait::TryOnce).await.expect_err("tooz holds the lock");
    assert_eq!(err.kind(), ErrorKind::WouldBlock, "{url}: {}", err.report());
    peer.ask("release", "RELEASED", ANSWER);
    let guard = ours(Wait::Timeout(ANSWER))
        .await
        .unwrap_or_else(|e| panic!("{url}: ours after tooz released: {}", e.report()));

    // We hold: tooz's non-blocking acquire fails; after our release it succeeds.
    peer.ask("try", "BUSY", ANSWER);
    guard.release().await.expect("release");
    peer.ask("acquire", "HELD", ANSWER);
    peer.ask("release", "RELEASED", ANSWER);
    peer.quit();
}
