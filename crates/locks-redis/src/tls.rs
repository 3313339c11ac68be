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
