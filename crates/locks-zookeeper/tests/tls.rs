//! ZooKeeper over TLS (feature `tls`), against the server `ci/zookeeper.sh
//! start-tls STATE_DIR [client-auth]` starts on the material of `ci/tls.sh`
//! (`LOCKS_TEST_ZOOKEEPER_TLS`, with `_DIR` and `_CLIENT_AUTH`). The
//! conformance suite runs over TLS with a client certificate; digest
//! credentials and an encrypted client key work over TLS; a wrong CA, an
//! expired certificate, a host name the certificate does not name, unusable
//! files and a wrong key password each fail as a typed error saying which,
//! with the file's path and never a certificate, a key or a password in it.
//! The expired and wrong-host certificates are presented by ZooKeeper servers
//! of their own (`start-tls … server-cert=expired|wrong-host`).
#![cfg(feature = "tls")]

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use locks_core::{Backend, ErrorKind, LockRequest, Scope, Wait};
use locks_zookeeper::{TlsConfig, ZkBackend, ZkConfig};

/// The TLS test server, the directory of its material and whether it wants
/// client certificates.
fn tls_server() -> Option<(String, PathBuf, bool)> {
    let addr = locks_core::testing::server_from_env("LOCKS_TEST_ZOOKEEPER_TLS")?;
    let dir = std::env::var("LOCKS_TEST_ZOOKEEPER_TLS_DIR").expect(
        "LOCKS_TEST_ZOOKEEPER_TLS is set but LOCKS_TEST_ZOOKEEPER_TLS_DIR is not (ci/zookeeper.sh start-tls writes both)",
    );
    let need = std::env::var("LOCKS_TEST_ZOOKEEPER_TLS_CLIENT_AUTH").is_ok_and(|v| v == "need");
    Some((addr, PathBuf::from(dir), need))
}

/// A configuration for `addr` over TLS, trusting `ca`, with the test client
/// certificate from `dir` when given.
fn tls_config(addr: &str, ca: Option<PathBuf>, client: Option<&Path>) -> ZkConfig {
    let mut config = common::config(addr, "tls").connect_timeout(Duration::from_secs(3));
    config.tls = Some(TlsConfig {
        ca,
        cert: client.map(|dir| dir.join("client.pem")),
        key: client.map(|dir| dir.join("client-key.pem")),
        key_password: None,
        check_hostname: true,
    });
    config
}

async fn mutual_tls_pair() -> Option<(Arc<dyn Backend>, Arc<dyn Backend>)> {
    let (addr, dir, _) = tls_server()?;
    let config = tls_config(&addr, Some(dir.join("ca.pem")), Some(&dir));
    Some((
        Arc::new(common::connect(config.clone()).await),
        Arc::new(common::connect(config).await),
    ))
}

mod over_tls {
    locks_core::conformance_tests!(crate::mutual_tls_pair);
}

fn global(what: &str) -> LockRequest {
    LockRequest::new(common::name(what), Scope::Global).wait(Wait::TryOnce)
}

/// Connects with `config` and expects an error of `kind` whose report has
/// every one of `needles` and none of `secrets` (nor any PEM content).
async fn refused(config: ZkConfig, kind: ErrorKind, needles: &[&str], secrets: &[&str]) {
    let shown = format!("{config:?}");
    let err = ZkBackend::connect(config)
        .await
        .err()
        .unwrap_or_else(|| panic!("connected with {shown}"));
    let text = err.report();
    assert_eq!(err.kind(), kind, "{text}");
    for needle in needles {
        assert!(text.contains(needle), "no `{needle}` in: {text}");
    }
    assert!(!text.contains("-----BEGIN"), "PEM content in: {text}");
    for secret in secrets {
        assert!(!text.contains(secret), "`{secret}` in: {text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn digest_credentials_work_over_tls() {
    let Some((addr, dir, _)) = tls_server() else {
        return;
    };
    let config = tls_config(&addr, Some(dir.join("ca.pem")), Some(&dir));
    let owner = common::connect(config.clone().credentials("cinder", "s3cret")).await;
    let lock = common::name("digest");
    let request = LockRequest::new(lock.clone(), Scope::Global).wait(Wait::TryOnce);
    let guard = owner.acquire(&request).await.unwrap();
    // The same user is excluded while the lock is held...
    let peer = common::connect(config.clone().credentials("cinder", "s3cret")).await;
    let busy = peer.acquire(&request).await.unwrap_err();
    assert_eq!(busy.kind(), ErrorKind::WouldBlock, "{}", busy.report());
    // The nodes carry the user's digest ACL only, as tooz's: not the `auth`
    // scheme, which over mutual TLS would also grant the certificate's
    // `x509` identity to every session presenting it.
    let read = |path: &str| std::fs::read_to_string(dir.join(path)).unwrap();
    let options = zookeeper_client::TlsOptions::new()
        .with_pem_ca(&read("ca.pem"))
        .unwrap()
        .with_pem_identity(&read("client.pem"), &read("client-key.pem"))
        .unwrap();
    let client = zookeeper_client::Client::connector()
        .with_tls(options)
        .with_auth("digest", b"cinder:s3cret")
        .connect(&format!("tcp+tls://{addr}"))
        .await
        .unwrap();
    let lock_dir = owner.lock_dir(&lock).unwrap();
    let (acls, _) = client.get_acl(&lock_dir).await.unwrap();
    assert_eq!(acls.len(), 1, "{acls:?}");
    assert_eq!(acls[0].scheme(), "digest", "{acls:?}");
    assert!(acls[0].id().starts_with("cinder:"), "{acls:?}");
    // The same certificate with a wrong password cannot touch the nodes.
    let intruder = common::connect(config.credentials("cinder", "wrong")).await;
    let err = intruder.acquire(&request).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{}", err.report());
    assert!(!err.report().contains("s3cret"), "{}", err.report());
    guard.release().await.unwrap();
    peer.acquire(&request)
        .await
        .unwrap()
        .release()
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_encrypted_client_key_opens_with_its_password() {
    let Some((addr, dir, _)) = tls_server() else {
        return;
    };
    let password = std::fs::read_to_string(dir.join("client-key.password")).unwrap();
    let password = password.trim();
    let mut config = tls_config(&addr, Some(dir.join("ca.pem")), Some(&dir));
    let tls = config.tls.as_mut().unwrap();
    tls.key = Some(dir.join("client-key-encrypted.pem"));
    tls.key_password = Some(password.to_owned());
    let backend = common::connect(config.clone()).await;
    backend
        .acquire(&global("encrypted-key"))
        .await
        .unwrap()
        .release()
        .await
        .unwrap();

    let wrong = "not-the-password";
    config.tls.as_mut().unwrap().key_password = Some(wrong.to_owned());
    let key = dir.join("client-key-encrypted.pem").display().to_string();
    refused(
        config.clone(),
        ErrorKind::InvalidConfig,
        &["password does not open it", &key],
        &[wrong, password],
    )
    .await;

    config.tls.as_mut().unwrap().key_password = None;
    refused(
        config,
        ErrorKind::InvalidConfig,
        &["is encrypted", "keyfile_password", &key],
        &[password],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_problems_are_configuration_errors_saying_which() {
    let Some((addr, dir, _)) = tls_server() else {
        return;
    };
    // A CA that did not sign the real ZooKeeper's certificate.
    refused(
        tls_config(&addr, Some(dir.join("other-ca.pem")), Some(&dir)),
        ErrorKind::InvalidConfig,
        &["unknown issuer", &addr],
        &[],
    )
    .await;
    // A real ZooKeeper presenting a certificate of its test CA that expired,
    // or that names another host.
    for (cert, needle) in [
        ("expired", "has expired"),
        ("wrong-host", "host name mismatch"),
    ] {
        let server = common::DedicatedTlsServer::start(&[&format!("server-cert={cert}")]);
        let config = tls_config(&server.addr, Some(server.tls_dir.join("ca.pem")), None);
        refused(
            config.clone(),
            ErrorKind::InvalidConfig,
            &[needle, &server.addr],
            &[],
        )
        .await;
        if cert == "wrong-host" {
            // Asked for (kazoo's check_hostname=False), the name is not
            // checked; the chain still is.
            let mut lenient = config;
            lenient.tls.as_mut().unwrap().check_hostname = false;
            let backend = common::connect(lenient.clone()).await;
            backend
                .acquire(&global("no-hostname-check"))
                .await
                .unwrap()
                .release()
                .await
                .unwrap();
            lenient.tls.as_mut().unwrap().ca = Some(dir.join("other-ca.pem"));
            refused(lenient, ErrorKind::InvalidConfig, &["unknown issuer"], &[]).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_wanting_client_certificates_refuses_a_client_without_one() {
    let Some((addr, dir, need)) = tls_server() else {
        return;
    };
    if !need {
        eprintln!(
            "skipping: the server in LOCKS_TEST_ZOOKEEPER_TLS takes clients without certificates"
        );
        return;
    }
    let config = tls_config(&addr, Some(dir.join("ca.pem")), None);
    let Err(err) = ZkBackend::connect(config).await else {
        panic!("connected without a client certificate to a server that wants one")
    };
    // TLS 1.2 (ZooKeeper 3.8 on Java 17 here) refuses in the handshake; TLS
    // 1.3 would only break the connection afterwards (then: Unavailable).
    assert_eq!(err.kind(), ErrorKind::InvalidConfig, "{}", err.report());
    assert!(
        err.message().contains("wants a client certificate"),
        "{}",
        err.report()
    );
    assert!(err.message().contains(&addr), "{}", err.report());
}

/// A server without `ssl.clientAuth` takes a client without a certificate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_not_asking_for_certificates_takes_a_client_without_one() {
    let Some(_) = tls_server() else {
        return;
    };
    let server = common::DedicatedTlsServer::start(&[]);
    let config = tls_config(&server.addr, Some(server.tls_dir.join("ca.pem")), None);
    let backend = common::connect(config).await;
    backend
        .acquire(&global("no-client-cert"))
        .await
        .unwrap()
        .release()
        .await
        .unwrap();
}

/// Files that cannot be read or hold nothing usable fail before any
/// connection, naming the file and never its content.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unusable_files_are_errors_naming_them() {
    let Some((addr, dir, _)) = tls_server() else {
        return;
    };
    let scratch = tempfile::tempdir().unwrap();
    let secret = "SECRET-CONTENT-1234";
    let garbage = scratch.path().join("garbage.pem");
    std::fs::write(&garbage, format!("{secret}\n")).unwrap();
    let path = |p: &Path| p.display().to_string();
    let with = |ca: Option<PathBuf>, cert: PathBuf, key: PathBuf| {
        let mut config = tls_config(&addr, ca, None);
        let tls = config.tls.as_mut().unwrap();
        tls.cert = Some(cert);
        tls.key = Some(key);
        config
    };
    let ca = || Some(dir.join("ca.pem"));
    let (cert, key) = (dir.join("client.pem"), dir.join("client-key.pem"));
    let missing = dir.join("no-such-file.pem");
    for (config, kind, needles) in [
        (
            tls_config(&addr, Some(garbage.clone()), None),
            ErrorKind::InvalidConfig,
            vec!["CA certificate".to_owned(), path(&garbage)],
        ),
        (
            tls_config(&addr, Some(missing.clone()), None),
            ErrorKind::Io,
            vec!["CA certificate".to_owned(), path(&missing)],
        ),
        (
            with(ca(), garbage.clone(), key.clone()),
            ErrorKind::InvalidConfig,
            vec!["client certificate".to_owned(), path(&garbage)],
        ),
        (
            with(ca(), cert.clone(), garbage.clone()),
            ErrorKind::InvalidConfig,
            vec!["client key".to_owned(), path(&garbage)],
        ),
        (
            with(ca(), cert.clone(), missing.clone()),
            ErrorKind::Io,
            vec!["client key".to_owned(), path(&missing)],
        ),
        (
            // A private key is no certificate.
            with(ca(), key.clone(), key.clone()),
            ErrorKind::InvalidConfig,
            vec!["client certificate".to_owned(), path(&key)],
        ),
    ] {
        let needles: Vec<&str> = needles.iter().map(String::as_str).collect();
        refused(config, kind, &needles, &[secret]).await;
    }
}
