//! TLS settings for zookeeper-client (feature `tls`): the PEM files of a
//! [`TlsConfig`] read into its options, the system's roots without a CA, and
//! an encrypted PKCS#8 key opened with its password (kazoo's
//! `keyfile_password`).

use std::path::Path;

use base64::Engine as _;
use locks_core::{Error, ErrorKind, Result};
use zookeeper_client as zk;

use crate::config::TlsConfig;

/// zookeeper-client's options for `tls`; `endpoint` names the ensemble in errors.
///
/// # Errors
/// [`ErrorKind::Io`] for a file that cannot be read, [`ErrorKind::InvalidConfig`]
/// for one that holds no usable certificate or key, or a wrong key password;
/// each names the file, never its content.
pub(crate) fn options(tls: &TlsConfig, endpoint: &str) -> Result<zk::TlsOptions> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};

    install_crypto_provider();
    let invalid = |what: String| {
        Error::new(
            ErrorKind::InvalidConfig,
            format!("ZooKeeper at {endpoint}: {what}"),
        )
    };
    let ca_pem = match &tls.ca {
        Some(ca) => read(ca, "CA certificate", endpoint)?,
        None => system_roots(endpoint)?,
    };
    let shown_ca = tls.ca.as_ref().map_or_else(
        || "the system's roots".to_owned(),
        |ca| format!("the TLS CA certificate {}", ca.display()),
    );
    let mut options = zk::TlsOptions::new()
        .with_pem_ca(&ca_pem)
        .map_err(|_| invalid(format!("{shown_ca} holds no PEM certificate")))?;
    if let (Some(cert), Some(key)) = (&tls.cert, &tls.key) {
        let cert_pem = read(cert, "client certificate", endpoint)?;
        // zookeeper-client takes a file without certificates for an empty
        // chain: check each file here, to name the one that is wrong.
        let certs = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
            .collect::<std::result::Result<Vec<_>, _>>()
            .unwrap_or_default();
        if certs.is_empty() {
            return Err(invalid(format!(
                "the TLS client certificate {} holds no PEM certificate",
                cert.display()
            )));
        }
        let mut key_pem = read(key, "client key", endpoint)?;
        if key_pem.contains("Proc-Type: 4,ENCRYPTED") {
            return Err(invalid(format!(
                "the TLS client key {} is encrypted in OpenSSL's legacy PEM format, which this \
                 client cannot open: convert it to PKCS#8 (`openssl pkcs8 -topk8 -v2 aes-256-cbc`)",
                key.display()
            )));
        }
        let encrypted = key_pem.contains("-----BEGIN ENCRYPTED PRIVATE KEY-----");
        if let Some(password) = &tls.key_password
            && encrypted
        {
            // As Python's `load_cert_chain` (kazoo): a password given for a
            // key that is not encrypted is not used.
            key_pem = decrypt(&key_pem, password)
                .map_err(|why| invalid(format!("the TLS client key {}: {why}", key.display())))?;
        } else if encrypted {
            return Err(invalid(format!(
                "the TLS client key {} is encrypted: give its password (`keyfile_password`)",
                key.display()
            )));
        }
        if PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).is_err() {
            return Err(invalid(format!(
                "the TLS client key {} holds no PEM private key",
                key.display()
            )));
        }
        options = options
            .with_pem_identity(&cert_pem, &key_pem)
            .map_err(|_| {
                invalid(format!(
                    "the TLS client certificate {} or its key {} cannot be used",
                    cert.display(),
                    key.display()
                ))
            })?;
    }
    if !tls.check_hostname {
        // SAFETY: not memory safety; zookeeper-client marks this `unsafe` as a
        // warning that a certificate for another host is accepted. Asked for
        // explicitly (`check_hostname=False`, as kazoo under tooz); the chain
        // is still verified against the CA.
        options = unsafe { options.with_no_hostname_verification() };
    }
    Ok(options)
}

/// Makes ring rustls's process-wide crypto provider, unless the program
/// chose one already.
///
/// A workaround, not a patched dependency: zookeeper-client builds its
/// client configuration with `rustls::ClientConfig::builder()`, which takes
/// the process-wide provider, and panics when the build enables two
/// providers and none was installed. zookeeper-client brings aws-lc-rs
/// (rustls's default features) while this workspace uses ring, so both are
/// always compiled in. Installing one is what rustls documents for that
/// case, and a provider the application installed first is kept.
fn install_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Losing a race to another installer is fine: one is in place.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

fn read(path: &Path, what: &str, endpoint: &str) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| {
        Error::io(
            format_args!(
                "ZooKeeper at {endpoint}: reading the TLS {what} {}",
                path.display()
            ),
            e,
        )
    })
}

/// The platform's trusted roots as PEM (rustls-native-certs: the system store,
/// or the files `SSL_CERT_FILE` / `SSL_CERT_DIR` name).
fn system_roots(endpoint: &str) -> Result<String> {
    let found = rustls_native_certs::load_native_certs();
    if found.certs.is_empty() {
        return Err(Error::new(
            ErrorKind::InvalidConfig,
            format!(
                "ZooKeeper at {endpoint}: no CA given and no system roots found ({} errors): give `ca`",
                found.errors.len()
            ),
        ));
    }
    let engine = base64::engine::general_purpose::STANDARD;
    let mut pem = String::new();
    for cert in found.certs {
        pem.push_str("-----BEGIN CERTIFICATE-----\n");
        let encoded = engine.encode(cert.as_ref());
        for line in encoded.as_bytes().chunks(64) {
            pem.push_str(std::str::from_utf8(line).unwrap_or_default());
            pem.push('\n');
        }
        pem.push_str("-----END CERTIFICATE-----\n");
    }
    Ok(pem)
}

/// An `ENCRYPTED PRIVATE KEY` (PKCS#8, PBES2) opened with `password`, as an
/// unencrypted PKCS#8 PEM.
fn decrypt(pem: &str, password: &str) -> std::result::Result<String, &'static str> {
    use pkcs8::der::pem::LineEnding;
    let (label, der) = pkcs8::der::pem::decode_vec(pem.as_bytes()).map_err(|_| "not a PEM key")?;
    if label != "ENCRYPTED PRIVATE KEY" {
        return Err("its first PEM block is not the ENCRYPTED PRIVATE KEY (PKCS#8)");
    }
    let encrypted = pkcs8::EncryptedPrivateKeyInfo::try_from(der.as_slice())
        .map_err(|_| "not a PKCS#8 encrypted key")?;
    let document = encrypted
        .decrypt(password)
        .map_err(|_| "the password does not open it (or its cipher is not supported)")?;
    document
        .to_pem("PRIVATE KEY", LineEnding::LF)
        .map(|pem| pem.to_string())
        .map_err(|_| "cannot re-encode the opened key")
}

/// Why a TLS handshake with `host` (`name[:port]`) fails, when it is the
/// certificate's fault (wrong CA, expired, a host name it does not name):
/// zookeeper-client retries such failures quietly until the connect timeout,
/// so after one this runs one handshake of its own, with the same files, to
/// say what is wrong. Blocking, bounded by `limit`; `None` when the handshake
/// works or fails otherwise.
pub(crate) fn certificate_problem(
    host: &str,
    tls: &TlsConfig,
    limit: std::time::Duration,
) -> Option<String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    use std::net::ToSocketAddrs;
    use std::sync::Arc;

    let ca_pem = match &tls.ca {
        Some(ca) => std::fs::read_to_string(ca).ok()?,
        None => system_roots(host).ok()?,
    };
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()).flatten() {
        let _ = roots.add(cert);
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .ok()?
        .with_root_certificates(roots);
    let config = match (&tls.cert, &tls.key) {
        (Some(cert), Some(key)) => {
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
                .ok()?
                .flatten()
                .collect();
            let mut key_pem = std::fs::read_to_string(key).ok()?;
            if let Some(password) = &tls.key_password {
                key_pem = decrypt(&key_pem, password).ok()?;
            }
            let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).ok()?;
            builder.with_client_auth_cert(certs, key).ok()?
        }
        _ => builder.with_no_client_auth(),
    };
    let (name, port) = match host.rsplit_once(':') {
        Some((name, port)) if port.parse::<u16>().is_ok() && !name.ends_with(':') => {
            (name.trim_start_matches('[').trim_end_matches(']'), port)
        }
        _ => (host.trim_start_matches('[').trim_end_matches(']'), "2181"),
    };
    let server_name = ServerName::try_from(name.to_owned()).ok()?;
    let addr = format!("{name}:{port}").to_socket_addrs().ok()?.next()?;
    let mut socket = std::net::TcpStream::connect_timeout(&addr, limit).ok()?;
    socket.set_read_timeout(Some(limit)).ok()?;
    socket.set_write_timeout(Some(limit)).ok()?;
    let mut connection = rustls::ClientConnection::new(Arc::new(config), server_name).ok()?;
    while connection.is_handshaking() {
        if let Err(e) = connection.complete_io(&mut socket) {
            return explain(&e, tls);
        }
    }
    None
}

/// A failed handshake in words, with what to do; `None` when it is not about
/// certificates.
fn explain(error: &std::io::Error, tls: &TlsConfig) -> Option<String> {
    use rustls::AlertDescription as Alert;
    if let Some(rustls::Error::AlertReceived(alert)) = error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        && matches!(
            alert,
            Alert::BadCertificate
                | Alert::CertificateRequired
                | Alert::CertificateUnknown
                | Alert::HandshakeFailure
                | Alert::UnknownCA
        )
    {
        // Java's server answers a missing certificate as a bad one.
        return Some(match &tls.cert {
            None => format!(
                "the server wants a client certificate ({alert:?}) and none is given: add \
                 `certfile` and `keyfile`"
            ),
            Some(cert) => format!(
                "the server refused our client certificate {} ({alert:?}): check that it \
                 trusts the CA that signed it and that it has not expired",
                cert.display()
            ),
        });
    }
    let problem = locks_core::tls::certificate_problem(error)?;
    Some(if problem.contains("host name mismatch") {
        format!(
            "{problem}; give the host as the certificate names it (or `check_hostname=False`, \
             as kazoo under tooz)"
        )
    } else {
        problem
    })
}
