//! TLS settings for etcd-client (feature `tls`).

use etcd_client::{Certificate, Identity, TlsOptions};
use locks_core::{Error, Result};

use crate::config::TlsConfig;

/// Reads the PEM files of `tls` into etcd-client's options.
pub(crate) fn options(tls: &TlsConfig, endpoints: &str) -> Result<TlsOptions> {
    let read = |what: &str, path: &std::path::Path| {
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
    let mut options = match &tls.ca {
        Some(ca) => {
            TlsOptions::new().ca_certificate(Certificate::from_pem(read("CA certificate", ca)?))
        }
        // tonic's native roots: rustls-native-certs reads the platform's
        // store, or the files SSL_CERT_FILE / SSL_CERT_DIR name.
        None => TlsOptions::new().with_native_roots(),
    };
    if let (Some(cert), Some(key)) = (&tls.cert, &tls.key) {
        options = options.identity(Identity::from_pem(
            read("client certificate", cert)?,
            read("client key", key)?,
        ));
    }
    Ok(options)
}
