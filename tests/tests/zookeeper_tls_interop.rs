//! OpenStack-Ansible's ZooKeeper URL with TLS, pasted into our configuration
//! (`compat = "openstack"`) verbatim but for host, port and paths, against
//! the real tooz zookeeper driver (kazoo with `use_ssl`) on the same node,
//! both ways (the row of docs/openstack.md):
//!
//! `zookeeper://H:P?namespace=cinder&use_ssl=True&verify_certs=True&ca=CA&certfile=CERT&keyfile=KEY`
//! (and with `keyfile_password=PW` for an encrypted key, and with digest
//! credentials `USER:PASSWORD@`)
//!
//! Each way: the holder's side makes the other's try-once fail, and after the
//! release the other side gets the lock. The server (`ci/zookeeper.sh
//! start-tls`) speaks TLS only on that port, so neither side can fall back
//! to plain text.
//!
//! Needs `LOCKS_TEST_PYTHON` and `LOCKS_TEST_ZOOKEEPER_TLS` (with its
//! `_DIR`); skipped without them unless `CI=true`.

use std::path::{Path, PathBuf};

use locks::{Config, ErrorKind, Locks};
use locks_core::testing::server_from_env;
use locks_tests::python_from_env;

mod pasted;

use pasted::both_ways;

/// The TLS ZooKeeper and the directory of its TLS material.
fn tls_server() -> Option<(String, PathBuf)> {
    let addr = server_from_env("LOCKS_TEST_ZOOKEEPER_TLS")?;
    let dir = std::env::var("LOCKS_TEST_ZOOKEEPER_TLS_DIR")
        .expect("LOCKS_TEST_ZOOKEEPER_TLS is set but LOCKS_TEST_ZOOKEEPER_TLS_DIR is not");
    Some((addr, PathBuf::from(dir)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openstack_ansible_zookeeper_tls_url() {
    let (Some(_), Some((zk, dir))) = (python_from_env(), tls_server()) else {
        return;
    };
    both_ways(&format!(
        "zookeeper://{zk}?namespace=cinder&use_ssl=True&verify_certs=True&ca={}&certfile={}&keyfile={}",
        dir.join("ca.pem").display(),
        dir.join("client.pem").display(),
        dir.join("client-key.pem").display(),
    ),
    &[])
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openstack_ansible_zookeeper_tls_url_with_an_encrypted_key() {
    let (Some(_), Some((zk, dir))) = (python_from_env(), tls_server()) else {
        return;
    };
    let password = std::fs::read_to_string(dir.join("client-key.password")).expect("password");
    both_ways(&format!(
        "zookeeper://{zk}?namespace=cinder&use_ssl=True&verify_certs=True&ca={}&certfile={}&keyfile={}&keyfile_password={}",
        dir.join("ca.pem").display(),
        dir.join("client.pem").display(),
        dir.join("client-key-encrypted.pem").display(),
        password.trim(),
    ),
    &[])
    .await;
}

/// Digest credentials over TLS: both sides create the lock's nodes with the
/// same digest ACL (tooz's `make_digest_acl`), so each works in the other's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openstack_ansible_zookeeper_tls_url_with_credentials() {
    let (Some(_), Some((zk, dir))) = (python_from_env(), tls_server()) else {
        return;
    };
    both_ways(&format!(
        "zookeeper://cinder:s3cret@{zk}?namespace=cinder-auth&use_ssl=True&verify_certs=True&ca={}&certfile={}&keyfile={}",
        dir.join("ca.pem").display(),
        dir.join("client.pem").display(),
        dir.join("client-key.pem").display(),
    ),
    &[])
    .await;
}

/// The error of opening `url`, pasted as the Global backend.
async fn open(dir: &Path, url: String) -> locks::Error {
    let text = format!(
        "compat = \"openstack\"\nprefix = \"cinder\"\nlock_path = \"{}\"\n[backends]\nglobal = \"{url}\"\n",
        dir.display()
    );
    match Config::from_toml_str(&text, dir, "zookeeper tls interop") {
        Err(e) => e,
        Ok(config) => match Locks::open(config).await {
            Err(e) => e,
            Ok(_) => panic!("opened {url}"),
        },
    }
}

/// `verify_certs=False` (kazoo then verifies nothing) is refused by name,
/// saying what to give instead; so is a wrong key password, without it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pasted_urls_that_cannot_work_say_why() {
    let Some((zk, dir)) = tls_server() else {
        return;
    };
    let scratch = tempfile::tempdir().expect("temp dir");
    let err = open(
        scratch.path(),
        format!("zookeeper://{zk}?namespace=cinder&use_ssl=True&verify_certs=False"),
    )
    .await;
    assert_eq!(err.kind(), ErrorKind::InvalidConfig, "{}", err.report());
    assert!(err.report().contains("verify_certs"), "{}", err.report());

    let err = open(scratch.path(), format!(
        "zookeeper://{zk}?namespace=cinder&use_ssl=True&ca={}&certfile={}&keyfile={}&keyfile_password=WrongPassw0rd",
        dir.join("ca.pem").display(),
        dir.join("client.pem").display(),
        dir.join("client-key-encrypted.pem").display(),
    ))
    .await;
    assert_eq!(err.kind(), ErrorKind::InvalidConfig, "{}", err.report());
    assert!(
        err.report().contains("client-key-encrypted.pem"),
        "{}",
        err.report()
    );
    assert!(!err.report().contains("WrongPassw0rd"), "{}", err.report());
}
