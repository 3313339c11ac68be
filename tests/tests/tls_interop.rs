//! The coordination URLs OpenStack deployment tools write, pasted into our
//! configuration (`compat = "openstack"`) verbatim but for host, port and
//! paths, against the real tooz driver on the same key, both ways (see the
//! table in docs/openstack.md):
//!
//! | row | URL |
//! |---|---|
//! | kolla-ansible, etcd | `etcd3+http://H:P?api_version=v3` (also with `&ca_cert=CA`, which kolla adds whenever the deployment has a CA) |
//! | kolla-ansible, etcd with TLS | `etcd3+https://H:P?api_version=v3&ca_cert=CA` |
//! | TripleO, etcd with TLS | `etcd3+https://H:P?cert_key=KEY&cert_cert=CERT` (no CA: the system's roots) |
//! | openstack-helm, charms | `file:///var/lib/cinder/coordination` |
//!
//! Each way: the holder's side makes the other's try-once fail, and after the
//! release the other side gets the lock. The system's roots are the test CAs:
//! `SSL_CERT_FILE` for us (rustls-native-certs), `REQUESTS_CA_BUNDLE` for
//! Python's `requests` under tooz's etcd3gw.
//!
//! Needs `LOCKS_TEST_PYTHON`, `LOCKS_TEST_ETCD`, `LOCKS_TEST_ETCD_TLS` and
//! `LOCKS_TEST_ETCD_MTLS` (with their `_DIR`s); skipped without them unless
//! `CI=true`.

use std::path::{Path, PathBuf};
use std::sync::Once;

use locks::{Config, ErrorKind, Locks};
use locks_core::testing::server_from_env;
use locks_tests::python_from_env;

mod pasted;

use pasted::both_ways;

/// A TLS test server from `var` and the directory of its TLS material.
fn tls_server(var: &str) -> Option<(String, PathBuf)> {
    let addr = server_from_env(var)?;
    let dir = std::env::var(format!("{var}_DIR"))
        .unwrap_or_else(|_| panic!("{var} is set but {var}_DIR is not"));
    Some((addr, PathBuf::from(dir)))
}

/// One bundle of both test CAs, named by `SSL_CERT_FILE` for this process
/// (once, before any test of this binary starts a process or a client).
fn trust_test_cas() -> Option<PathBuf> {
    static ONCE: Once = Once::new();
    static mut BUNDLE: Option<PathBuf> = None;
    let (_, tls) = tls_server("LOCKS_TEST_ETCD_TLS")?;
    let (_, mtls) = tls_server("LOCKS_TEST_ETCD_MTLS")?;
    ONCE.call_once(|| {
        let bundle =
            std::env::temp_dir().join(format!("locks-test-cas-{}.pem", std::process::id()));
        let mut pem = std::fs::read(tls.join("ca.pem")).expect("ca.pem");
        pem.extend(std::fs::read(mtls.join("ca.pem")).expect("ca.pem"));
        std::fs::write(&bundle, pem).expect("writing the CA bundle");
        // SAFETY: runs once, before any test of this binary goes on (the
        // others wait on `ONCE`), so nothing reads the environment meanwhile.
        unsafe {
            std::env::set_var("SSL_CERT_FILE", &bundle);
            BUNDLE = Some(bundle);
        }
    });
    // SAFETY: written once above, before `call_once` returned.
    #[allow(static_mut_refs)]
    unsafe {
        BUNDLE.clone()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kolla_etcd_url() {
    let (Some(_), Some(etcd)) = (python_from_env(), server_from_env("LOCKS_TEST_ETCD")) else {
        return;
    };
    trust_test_cas();
    both_ways(&format!("etcd3+http://{etcd}?api_version=v3"), &[]).await;
}

/// kolla writes `ca_cert` whenever the deployment has a CA, also when etcd
/// itself speaks plain http: tooz's `requests` then uses no CA, nor do we.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kolla_etcd_url_with_a_ca_on_plain_http() {
    let (Some(_), Some(etcd), Some((_, dir))) = (
        python_from_env(),
        server_from_env("LOCKS_TEST_ETCD"),
        tls_server("LOCKS_TEST_ETCD_TLS"),
    ) else {
        return;
    };
    trust_test_cas();
    both_ways(
        &format!(
            "etcd3+http://{etcd}?api_version=v3&ca_cert={}",
            dir.join("ca.pem").display()
        ),
        &[],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kolla_etcd_tls_url() {
    let (Some(_), Some((etcd, dir))) = (python_from_env(), tls_server("LOCKS_TEST_ETCD_TLS"))
    else {
        return;
    };
    trust_test_cas();
    let ca = dir.join("ca.pem");
    // requests lets REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE (set machine-wide on
    // some hosts, this one included) override a session's CA, so etcd3gw's
    // `ca_cert` counts only without them: empty, as in a service's
    // environment.
    both_ways(
        &format!(
            "etcd3+https://{etcd}?api_version=v3&ca_cert={}",
            ca.display()
        ),
        &[("REQUESTS_CA_BUNDLE", ""), ("CURL_CA_BUNDLE", "")],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tripleo_etcd_tls_url_without_a_ca() {
    let (Some(_), Some((etcd, dir))) = (python_from_env(), tls_server("LOCKS_TEST_ETCD_MTLS"))
    else {
        return;
    };
    let bundle = trust_test_cas().expect("both TLS servers are configured");
    let bundle = bundle.display().to_string();
    both_ways(
        &format!(
            "etcd3+https://{etcd}?cert_key={}&cert_cert={}",
            dir.join("client-key.pem").display(),
            dir.join("client.pem").display()
        ),
        &[("REQUESTS_CA_BUNDLE", &bundle)],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openstack_helm_file_url() {
    let Some(_) = python_from_env() else {
        return;
    };
    trust_test_cas();
    let dir = tempfile::tempdir().expect("temp dir");
    let coordination = dir.path().join("coordination");
    both_ways(&format!("file://{}", coordination.display()), &[]).await;
}

/// A pasted URL whose TLS material is wrong fails at open with a typed
/// error naming the problem and the file, never a key or a certificate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pasted_urls_with_wrong_tls_material_say_what_is_wrong() {
    let (Some((etcd, dir)), Some((mtls, mtls_dir))) = (
        tls_server("LOCKS_TEST_ETCD_TLS"),
        tls_server("LOCKS_TEST_ETCD_MTLS"),
    ) else {
        return;
    };
    trust_test_cas();
    let scratch = tempfile::tempdir().expect("temp dir");
    let garbage = scratch.path().join("garbage.pem");
    std::fs::write(&garbage, "not PEM\n").expect("write");
    let p = |path: &Path| path.display().to_string();
    for (url, kind, needles) in [
        (
            format!(
                "etcd3+https://{etcd}?api_version=v3&ca_cert={}",
                p(&dir.join("other-ca.pem"))
            ),
            ErrorKind::InvalidConfig,
            vec!["unknown issuer".to_owned()],
        ),
        (
            format!("etcd3+https://{etcd}?ca_cert={}", p(&garbage)),
            ErrorKind::InvalidConfig,
            vec!["holds no PEM certificate".to_owned(), p(&garbage)],
        ),
        (
            format!(
                "etcd3+https://{mtls}?cert_key={}&cert_cert={}",
                p(&mtls_dir.join("client-key-encrypted.pem")),
                p(&mtls_dir.join("client.pem"))
            ),
            ErrorKind::InvalidConfig,
            vec![
                "is encrypted".to_owned(),
                p(&mtls_dir.join("client-key-encrypted.pem")),
            ],
        ),
        (
            format!(
                "etcd3+https://{mtls}?cert_cert={}",
                p(&mtls_dir.join("client.pem"))
            ),
            ErrorKind::InvalidConfig,
            vec!["needs both `cert` and `key`".to_owned()],
        ),
        (
            format!("etcd3+https://{etcd}?api_version=v2"),
            ErrorKind::InvalidConfig,
            vec!["`api_version` = `v2`".to_owned()],
        ),
    ] {
        let text = format!(
            "compat = \"openstack\"\nprefix = \"cinder\"\nlock_path = \"{}\"\n[backends]\nglobal = \"{url}\"\n",
            scratch.path().display()
        );
        let config = Config::from_toml_str(&text, scratch.path(), "tls interop")
            .unwrap_or_else(|e| panic!("config:\n{text}\n{}", e.report()));
        let err = Locks::open(config)
            .await
            .expect_err(&format!("{url} opened"));
        let report = err.report();
        assert_eq!(err.kind(), kind, "{url}: {report}");
        for needle in &needles {
            assert!(
                report.contains(needle.as_str()),
                "{url}: no `{needle}` in {report}"
            );
        }
        assert!(!report.contains("-----BEGIN"), "{report}");
    }
}
