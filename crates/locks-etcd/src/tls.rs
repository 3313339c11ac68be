//! TLS settings for etcd-client (feature `tls`).
//!
//! etcd-client hands the PEM bytes to tonic, which parses them only when a
//! connection is built, and reports a bad file as an opaque `transport
//! error` that our failover loop would retry until the deadline (tonic's
//! `TlsError`s name no file). So this module checks the files first, with
//! rustls itself, the way tonic will use them (a workaround in our backend
//! rather than a patched etcd-client: the files are read once anyway, and
//! the check needs nothing tonic does not expose): a file that cannot be
//! read, holds no PEM certificate or key, an encrypted key, a key that does
//! not belong to its certificate, and no trust roots at all each fail at
//! once with a configuration error naming the file, never its content.

use std::path::Path;
use std::sync::Arc;

use etcd_client::{Certificate, Identity, TlsOptions};
use locks_core::{Error, ErrorKind, Result};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore};

use crate::config::TlsConfig;

/// Reads and checks the PEM files of `tls` into etcd-client's options.
pub(crate) fn options(tls: &TlsConfig, endpoints: &str) -> Result<TlsOptions> {
    let invalid = |path: &Path, what: &str, problem: &str| {
        Error::new(
            ErrorKind::InvalidConfig,
            format!(
                "etcd at {endpoints}: the TLS {what} {} {problem}",
                path.display()
            ),
        )
    };
    let read = |what: &str, path: &Path| {
        std::fs::read(path).map_err(|e| {
            Error::io(
                format_args!(
                    "etcd at {endpoints}: reading the TLS {what} {}",
                    path.display()
                ),
                e,
            )
        })
    };
    let certificates = |what: &str,
                        path: &Path,
                        pem: &[u8]|
     -> Result<Vec<CertificateDer<'static>>> {
        // Only the markers are looked at in errors: no byte of the file is shown.
        let certs = CertificateDer::pem_slice_iter(pem)
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|_| {
                invalid(
                    path,
                    what,
                    "is not valid PEM (a damaged `BEGIN CERTIFICATE` section)",
                )
            })?;
        if certs.is_empty() {
            return Err(invalid(
                path,
                what,
                "holds no PEM certificate (no `BEGIN CERTIFICATE` section): give the PEM file, not DER or a key",
            ));
        }
        Ok(certs)
    };

    let mut roots = RootCertStore::empty();
    let mut options = match &tls.ca {
        Some(ca) => {
            let pem = read("CA certificate", ca)?;
            let certs = certificates("CA certificate", ca, &pem)?;
            let (valid, _) = roots.add_parsable_certificates(certs);
            if valid == 0 {
                return Err(invalid(
                    ca,
                    "CA certificate",
                    "holds no certificate usable as a CA (it does not parse as X.509)",
                ));
            }
            TlsOptions::new().ca_certificate(Certificate::from_pem(pem))
        }
        // No CA: the system's roots, as Python's `requests` under tooz uses
        // its default bundle. etcd-client's `tls-roots` feature is tonic's
        // `tls-native-roots`: tonic calls `rustls_native_certs::
        // load_native_certs()` (tonic 0.14 `transport/channel/service/tls.rs`),
        // which reads the files `SSL_CERT_FILE` and `SSL_CERT_DIR` name when
        // either is set, and else what `openssl-probe` finds (on Debian
        // /etc/ssl/certs/ca-certificates.crt) (rustls-native-certs 0.8
        // `lib.rs` `load_native_certs`, `unix.rs`). That is how the tests
        // point "the system's roots" at the test CA without touching the
        // machine. The same call here tells an empty store apart at once
        // (tonic would only say `transport error`).
        None => {
            let native = rustls_native_certs::load_native_certs();
            let (valid, _) = roots.add_parsable_certificates(native.certs);
            if valid == 0 {
                let var = |name: &str| {
                    std::env::var_os(name).map_or_else(
                        || "unset".to_owned(),
                        |v| Path::new(&v).display().to_string(),
                    )
                };
                return Err(Error::new(
                    ErrorKind::InvalidConfig,
                    format!(
                        "etcd at {endpoints}: TLS without a CA file verifies the server against the \
                         system's trust roots, and none were found (SSL_CERT_FILE {}, SSL_CERT_DIR {}): \
                         give the CA file (`ca`, tooz's `ca_cert`) or install the system's CA bundle",
                        var("SSL_CERT_FILE"),
                        var("SSL_CERT_DIR")
                    ),
                ));
            }
            TlsOptions::new().with_native_roots()
        }
    };
    if let (Some(cert), Some(key)) = (&tls.cert, &tls.key) {
        let cert_pem = read("client certificate", cert)?;
        let chain = certificates("client certificate", cert, &cert_pem)?;
        let key_pem = read("client key", key)?;
        let private =
            private_key(&key_pem).map_err(|problem| invalid(key, "client key", problem))?;
        // What tonic will do with them: a key that is not the certificate's
        // is refused here, naming both files.
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| {
                Error::new(
                    ErrorKind::Internal,
                    format!("etcd at {endpoints}: TLS set-up: {e}"),
                )
            })?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, private)
            .map_err(|e| {
                Error::new(
                    ErrorKind::InvalidConfig,
                    format!(
                        "etcd at {endpoints}: the TLS client key {} does not go with the client \
                         certificate {} ({}): give the key the certificate was made for",
                        key.display(),
                        cert.display(),
                        key_problem(&e)
                    ),
                )
            })?;
        options = options.identity(Identity::from_pem(cert_pem, key_pem));
    }
    Ok(options)
}

/// The private key in `pem`, or what is wrong with it (never its content).
fn private_key(pem: &[u8]) -> std::result::Result<PrivateKeyDer<'static>, &'static str> {
    // Only the section markers are looked at.
    let marker = |m: &str| pem.windows(m.len()).any(|w| w == m.as_bytes());
    if marker("-----BEGIN ENCRYPTED PRIVATE KEY-----") || marker("Proc-Type: 4,ENCRYPTED") {
        return Err(
            "is encrypted: etcd's client, like tooz's, takes an unencrypted key \
                    (decrypt it with `openssl pkey -in KEY -out PLAIN`, readable only by the service)",
        );
    }
    match PrivateKeyDer::from_pem_slice(pem) {
        Ok(key) => Ok(key),
        Err(rustls::pki_types::pem::Error::NoItemsFound) => Err(
            "holds no PEM private key (no `BEGIN PRIVATE KEY`, `RSA PRIVATE KEY` or `EC PRIVATE KEY` section): \
             give the PEM key file, not DER or a certificate",
        ),
        Err(_) => Err("is not valid PEM (a damaged private key section)"),
    }
}

/// rustls's complaint about a certificate and key pair, in words.
fn key_problem(e: &rustls::Error) -> &'static str {
    match e {
        rustls::Error::InconsistentKeys(_) => "the key's public half is not the certificate's",
        rustls::Error::General(_) => "the key is of a kind that cannot sign",
        _ => "refused by rustls",
    }
}
