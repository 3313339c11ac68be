//! etcd over TLS (feature `tls`), against the servers `ci/etcd.sh start-tls`
//! starts with the material of `ci/tls.sh`: `LOCKS_TEST_ETCD_TLS` (server
//! certificate only) and `LOCKS_TEST_ETCD_MTLS` (client certificates
//! required), each with its `_DIR`. The conformance suite runs over TLS with
//! a CA and a client certificate; the system's roots without a CA, and a
//! client certificate without one, are in tests/system_roots.rs. A wrong CA,
//! an etcd presenting an expired certificate or one for another host (started
//! here with `server-cert=`), a missing client certificate and unusable files
//! each fail at once with an error saying which, never with a certificate,
//! a key or a password in it.
#![cfg(feature = "tls")]

mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use locks_core::{Backend, ErrorKind, LockName, LockRequest, Scope, Wait, acquire};
use locks_etcd::{EtcdBackend, EtcdConfig, TlsConfig};

/// A TLS test server named by `var` (`LOCKS_TEST_ETCD_TLS`, `LOCKS_TEST_ETCD_MTLS`)
/// and the directory of its TLS material.
fn tls_server(var: &str) -> Option<(String, PathBuf)> {
    let addr = locks_core::testing::server_from_env(var)?;
    let dir = std::env::var(format!("{var}_DIR")).unwrap_or_else(|_| {
        panic!("{var} is set but {var}_DIR is not (ci/etcd.sh start-tls writes both)")
    });
    Some((addr, PathBuf::from(dir)))
}

fn tls_config(addr: &str, ca: Option<PathBuf>, client: Option<&std::path::Path>) -> EtcdConfig {
    let mut config = EtcdConfig::new([addr]);
    config.connect_timeout = Duration::from_secs(3);
    config.tls = Some(TlsConfig {
        ca,
        cert: client.map(|dir| dir.join("client.pem")),
        key: client.map(|dir| dir.join("client-key.pem")),
    });
    config
}

/// Two clients over TLS with client certificates, for the conformance suite.
async fn mutual_tls_pair() -> Option<(Arc<dyn Backend>, Arc<dyn Backend>)> {
    let (addr, dir) = tls_server("LOCKS_TEST_ETCD_MTLS")?;
    let config = tls_config(&addr, Some(dir.join("ca.pem")), Some(&dir));
    Some((
        Arc::new(common::connect_with(config.clone()).await),
        Arc::new(common::connect_with(config).await),
    ))
}

mod over_tls {
    locks_core::conformance_tests!(crate::mutual_tls_pair);
}

/// Connects with `config` and expects an error of `kind` whose message has
/// every one of `needles` and no PEM content.
async fn refused(config: EtcdConfig, kind: ErrorKind, needles: &[&str]) {
    let shown = format!("{config:?}");
    let err = EtcdBackend::connect(config)
        .await
        .err()
        .unwrap_or_else(|| panic!("connected with {shown}"));
    let text = err.report();
    assert_eq!(err.kind(), kind, "{text}");
    for needle in needles {
        assert!(text.contains(needle), "no `{needle}` in: {text}");
    }
    assert!(!text.contains("-----BEGIN"), "PEM content in: {text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_problems_are_configuration_errors_saying_which() {
    let Some((addr, dir)) = tls_server("LOCKS_TEST_ETCD_TLS") else {
        return;
    };
    // The right CA works.
    let backend = common::connect_with(tls_config(&addr, Some(dir.join("ca.pem")), None)).await;
    let name = LockName::new(format!("tls-{}", std::process::id())).unwrap();
    let request = LockRequest::new(name, Scope::Global).wait(Wait::TryOnce);
    acquire(&backend, &request)
        .await
        .unwrap()
        .release()
        .await
        .unwrap();

    refused(
        tls_config(&addr, Some(dir.join("other-ca.pem")), None),
        ErrorKind::InvalidConfig,
        &["unknown issuer", &addr],
    )
    .await;
    // etcd itself presenting a certificate of the test CA that expired, or
    // that names another host.
    for (cert, needle) in [
        ("expired", "has expired"),
        ("wrong-host", "host name mismatch"),
    ] {
        let server = common::DedicatedEtcd::start_tls_presenting(cert);
        refused(
            tls_config(&server.addr, Some(server.tls_file("ca.pem")), None),
            ErrorKind::InvalidConfig,
            &[needle, &server.addr],
        )
        .await;
        server.stop();
    }
    refused(
        tls_config(&addr, Some(dir.join("no-such-ca.pem")), None),
        ErrorKind::Io,
        &["no-such-ca.pem"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_wanting_client_certificates_says_so() {
    let Some((addr, dir)) = tls_server("LOCKS_TEST_ETCD_MTLS") else {
        return;
    };
    // TLS 1.3 finishes the handshake before the server checks for a client
    // certificate: the client sees only a connection that breaks, and says
    // what to try.
    refused(
        tls_config(&addr, Some(dir.join("ca.pem")), None),
        ErrorKind::Unavailable,
        &["give `cert` and `key`", &addr],
    )
    .await;
}

/// A file that cannot be read, holds no PEM certificate or key, an
/// encrypted key and a key of another certificate each fail before any
/// connection, as errors naming the file (and never its content).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unusable_files_are_errors_naming_them() {
    let Some((addr, dir)) = tls_server("LOCKS_TEST_ETCD_TLS") else {
        return;
    };
    let scratch = tempfile::tempdir().unwrap();
    let garbage = scratch.path().join("garbage.pem");
    std::fs::write(&garbage, "not a certificate\n").unwrap();
    let damaged = scratch.path().join("damaged.pem");
    std::fs::write(
        &damaged,
        "-----BEGIN CERTIFICATE-----\nnot base64 !!\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let not_x509 = scratch.path().join("not-x509.pem");
    std::fs::write(
        &not_x509,
        "-----BEGIN CERTIFICATE-----\naGVsbG8gd29ybGQ=\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let with = |ca: Option<PathBuf>, cert: PathBuf, key: PathBuf| {
        let mut config = tls_config(&addr, ca, None);
        let tls = config.tls.as_mut().unwrap();
        tls.cert = Some(cert);
        tls.key = Some(key);
        config
    };
    let path = |p: &std::path::Path| p.display().to_string();
    let ca = || Some(dir.join("ca.pem"));
    let (cert, key) = (dir.join("client.pem"), dir.join("client-key.pem"));

    for (config, kind, needles) in [
        (
            tls_config(&addr, Some(garbage.clone()), None),
            ErrorKind::InvalidConfig,
            vec![
                "CA certificate".into(),
                "holds no PEM certificate".into(),
                path(&garbage),
            ],
        ),
        (
            tls_config(&addr, Some(damaged.clone()), None),
            ErrorKind::InvalidConfig,
            vec![
                "CA certificate".into(),
                "is not valid PEM".into(),
                path(&damaged),
            ],
        ),
        (
            tls_config(&addr, Some(not_x509.clone()), None),
            ErrorKind::InvalidConfig,
            vec![
                "CA certificate".into(),
                "does not parse as X.509".into(),
                path(&not_x509),
            ],
        ),
        (
            // A directory: cannot be read as a file.
            tls_config(&addr, Some(scratch.path().to_owned()), None),
            ErrorKind::Io,
            vec!["CA certificate".into(), path(scratch.path())],
        ),
        (
            with(ca(), garbage.clone(), key.clone()),
            ErrorKind::InvalidConfig,
            vec![
                "client certificate".into(),
                "holds no PEM certificate".into(),
                path(&garbage),
            ],
        ),
        (
            with(ca(), cert.clone(), dir.join("no-such-key.pem")),
            ErrorKind::Io,
            vec!["client key".into(), path(&dir.join("no-such-key.pem"))],
        ),
        (
            with(ca(), cert.clone(), dir.join("ca.pem")),
            ErrorKind::InvalidConfig,
            vec![
                "client key".into(),
                "holds no PEM private key".into(),
                path(&dir.join("ca.pem")),
            ],
        ),
        (
            with(ca(), cert.clone(), damaged.clone()),
            ErrorKind::InvalidConfig,
            vec![
                "client key".into(),
                "is not valid PEM".into(),
                path(&damaged),
            ],
        ),
        (
            with(ca(), cert.clone(), dir.join("client-key-encrypted.pem")),
            ErrorKind::InvalidConfig,
            vec![
                "client key".into(),
                "is encrypted".into(),
                path(&dir.join("client-key-encrypted.pem")),
            ],
        ),
        (
            with(ca(), cert.clone(), dir.join("server-key.pem")),
            ErrorKind::InvalidConfig,
            vec![
                "does not go with".into(),
                path(&dir.join("server-key.pem")),
                path(&cert),
            ],
        ),
    ] {
        let needles: Vec<&str> = needles.iter().map(String::as_str).collect();
        // InvalidConfig and Io: found before connecting, not by retrying
        // until the deadline (which says Unavailable).
        refused(config, kind, &needles).await;
    }
    // No key material and no password in any message.
    let password = std::fs::read_to_string(dir.join("client-key.password")).unwrap();
    let err = EtcdBackend::connect(with(ca(), cert, dir.join("client-key-encrypted.pem")))
        .await
        .expect_err("an encrypted key is refused");
    assert!(!err.report().contains(password.trim()), "{}", err.report());
    assert!(
        !err.report().contains("PRIVATE KEY-----\n"),
        "{}",
        err.report()
    );
}
