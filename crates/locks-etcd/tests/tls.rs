//! etcd over TLS (feature `tls`), against the servers `ci/etcd.sh start-tls`
//! starts with the material of `ci/tls.sh`: `LOCKS_TEST_ETCD_TLS` (server
//! certificate only) and `LOCKS_TEST_ETCD_MTLS` (client certificates
//! required), each with its `_DIR`. The conformance suite runs over TLS with
//! a client certificate; a CA in the URL, the system's roots without one
//! (`SSL_CERT_FILE`, as the platform's store), and a client certificate
//! without a CA all work; a wrong CA, an expired certificate, a host name the
//! certificate does not name and a missing client certificate each fail at
//! once with an error saying which, never with a certificate or key in it.
#![cfg(feature = "tls")]

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
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

/// `openssl s_server` presenting `cert` on a free port of 127.0.0.1.
fn openssl_server(dir: &std::path::Path, cert: &str) -> (Child, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let child = Command::new("openssl")
        .args(["s_server", "-quiet", "-accept", &port.to_string(), "-cert"])
        .arg(dir.join(format!("{cert}.pem")))
        .arg("-key")
        .arg(dir.join(format!("{cert}-key.pem")))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("openssl s_server");
    let addr = format!("127.0.0.1:{port}");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(&addr).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "openssl s_server never listened"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    (child, addr)
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
    for (cert, needle) in [
        ("expired", "has expired"),
        ("wrong-host", "host name mismatch"),
    ] {
        let (mut server, server_addr) = openssl_server(&dir, cert);
        refused(
            tls_config(&server_addr, Some(dir.join("ca.pem")), None),
            ErrorKind::InvalidConfig,
            &[needle, &server_addr],
        )
        .await;
        let _ = server.kill();
        let _ = server.wait();
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

/// No CA: the system's roots, as Python's `requests` verifies for tooz. The
/// test CA is not among the machine's roots, so the server is refused, until
/// `SSL_CERT_FILE` names it as the store; then a client certificate without
/// a CA (TripleO's URL) works too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_ca_the_system_roots_decide() {
    let (Some((addr, dir)), Some((mtls, mtls_dir))) = (
        tls_server("LOCKS_TEST_ETCD_TLS"),
        tls_server("LOCKS_TEST_ETCD_MTLS"),
    ) else {
        return;
    };
    if std::env::var_os("SSL_CERT_FILE").is_none() {
        refused(
            tls_config(&addr, None, None),
            ErrorKind::InvalidConfig,
            &["unknown issuer"],
        )
        .await;
    }
    // SAFETY: no other test of this binary reads the environment's roots
    // (each names its CA), and nothing else here sets variables.
    unsafe { std::env::set_var("SSL_CERT_FILE", dir.join("ca.pem")) };
    common::connect_with(tls_config(&addr, None, None)).await;
    // The two servers' material comes from one `ci/tls.sh` run only when
    // they share a directory; trust the client-auth server's CA as well.
    unsafe { std::env::set_var("SSL_CERT_FILE", mtls_dir.join("ca.pem")) };
    common::connect_with(tls_config(&mtls, None, Some(&mtls_dir))).await;
}
