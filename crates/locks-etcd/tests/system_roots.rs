//! TLS without a CA file: the server is verified against the system's trust
//! roots, as Python's `requests` does for tooz's etcd3gw (TripleO's
//! `etcd3+https://VIP:2379?cert_key=…&cert_cert=…` names no CA).
//!
//! rustls-native-certs (under tonic's `tls-native-roots`) takes the roots
//! from the files `SSL_CERT_FILE` / `SSL_CERT_DIR` name when either is set,
//! else from the platform's store; so this test makes "the system's roots"
//! the test CA, an unrelated CA, or nothing, without touching the machine.
//! It changes the process's environment, so it is the only test of this
//! binary, and it runs each step on a runtime of its own that is gone before
//! the next change (no other thread reads the environment meanwhile).
#![cfg(feature = "tls")]

use std::path::{Path, PathBuf};
use std::time::Duration;

use locks_core::ErrorKind;
use locks_etcd::{EtcdBackend, EtcdConfig, TlsConfig};

fn tls_server(var: &str) -> Option<(String, PathBuf)> {
    let addr = locks_core::testing::server_from_env(var)?;
    let dir = std::env::var(format!("{var}_DIR"))
        .unwrap_or_else(|_| panic!("{var} is set but {var}_DIR is not"));
    Some((addr, PathBuf::from(dir)))
}

/// No CA; a client certificate from `client` when given.
fn no_ca(addr: &str, client: Option<&Path>) -> EtcdConfig {
    let mut config = EtcdConfig::new([addr]);
    config.connect_timeout = Duration::from_secs(3);
    config.tls = Some(TlsConfig {
        ca: None,
        cert: client.map(|dir| dir.join("client.pem")),
        key: client.map(|dir| dir.join("client-key.pem")),
    });
    config
}

/// Sets the system's roots to `file` only (`SSL_CERT_DIR` unset).
fn system_roots(file: &Path) {
    // SAFETY: the only test of this binary, between runtimes: no other
    // thread runs (see the crate doc).
    unsafe {
        std::env::set_var("SSL_CERT_FILE", file);
        std::env::remove_var("SSL_CERT_DIR");
    }
}

/// Connects with `config` on a runtime of its own (the backend closed within it).
fn connect(config: EtcdConfig) -> locks_core::Result<()> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async move { EtcdBackend::connect(config).await.map(drop) })
}

#[test]
fn without_a_ca_the_system_roots_decide() {
    let (Some((addr, dir)), Some((mtls, mtls_dir))) = (
        tls_server("LOCKS_TEST_ETCD_TLS"),
        tls_server("LOCKS_TEST_ETCD_MTLS"),
    ) else {
        return;
    };
    let scratch = tempfile::tempdir().unwrap();

    // System roots without the server's CA: refused, saying so.
    system_roots(&dir.join("other-ca.pem"));
    let err = connect(no_ca(&addr, None)).expect_err("other CA as roots");
    assert_eq!(err.kind(), ErrorKind::InvalidConfig, "{}", err.report());
    assert!(err.report().contains("unknown issuer"), "{}", err.report());

    // No roots at all: said at once, naming where they were looked for.
    let empty = scratch.path().join("empty.pem");
    std::fs::write(&empty, "").unwrap();
    system_roots(&empty);
    let err = connect(no_ca(&addr, None)).expect_err("no roots");
    assert_eq!(err.kind(), ErrorKind::InvalidConfig, "{}", err.report());
    assert!(
        err.report().contains("none were found")
            && err.report().contains(&empty.display().to_string()),
        "{}",
        err.report()
    );

    // The server's CA among the system's roots: connected.
    system_roots(&dir.join("ca.pem"));
    connect(no_ca(&addr, None)).unwrap_or_else(|e| panic!("{}", e.report()));

    // A client certificate without a CA (TripleO) on a server that wants one.
    system_roots(&mtls_dir.join("ca.pem"));
    connect(no_ca(&mtls, Some(&mtls_dir))).unwrap_or_else(|e| panic!("{}", e.report()));
}
