//! TLS connections (the `tls` feature): rustls through the redis crate.

use redis::{Client, ConnectionAddr, IntoConnectionInfo, RedisConnectionInfo, TlsCertificates};

use crate::config::{Address, TlsConfig};

/// A client for `address` over TLS, trusting `tls.ca` (else the system's
/// roots) and presenting `tls.cert` and `tls.key` when given.
pub(crate) fn client(
    address: &Address,
    settings: RedisConnectionInfo,
    tls: Option<&TlsConfig>,
) -> redis::RedisResult<Client> {
    install_crypto_provider();
    let read = |path: &std::path::Path, what: &str| {
        std::fs::read(path).map_err(|e| {
            redis::RedisError::from((
                redis::ErrorKind::InvalidClientConfig,
                "cannot read a TLS file",
                format!("{what} {}: {e}", path.display()),
            ))
        })
    };
    let mut certificates = TlsCertificates {
        client_tls: None,
        root_cert: None,
    };
    if let Some(tls) = tls {
        if let Some(ca) = &tls.ca {
            certificates.root_cert = Some(read(ca, "CA certificate")?);
        }
        if let (Some(cert), Some(key)) = (&tls.cert, &tls.key) {
            certificates.client_tls = Some(redis::ClientTlsConfig {
                client_cert: read(cert, "client certificate")?,
                client_key: read(key, "client key")?,
            });
        }
    }
    let info = ConnectionAddr::TcpTls {
        host: address.host.clone(),
        port: address.port,
        insecure: false,
        tls_params: None,
    }
    .into_connection_info()?
    .set_redis_settings(settings);
    Client::build_with_tls(info, certificates)
}

/// Makes ring rustls's process-wide crypto provider, unless the program
/// chose one already.
///
/// A workaround, not a patched dependency: the redis crate builds its
/// client configuration with `rustls::ClientConfig::builder()`, which takes
/// the process-wide provider and panics when the build enables two
/// providers and none was installed. Alone, this crate enables ring only
/// and rustls picks it; in a program that also links zookeeper-client's TLS
/// (aws-lc-rs, as the `locks` command and the workspace tests do) both are
/// compiled in, and `rediss://` panicked (tests/tests/redis_interop.rs,
/// `tooz_redis_tls_both_ways`). Installing one is what rustls documents for
/// that case, and a provider the application installed first is kept.
fn install_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Losing a race to another installer is fine: one is in place.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}
