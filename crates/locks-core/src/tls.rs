//! What went wrong in a TLS handshake, in words (feature `tls`): the
//! backends' TLS clients (rustls, under etcd-client, zookeeper-client and the
//! redis crate) bury a refused certificate deep in their error chains, and
//! report it like any unreachable server. [`certificate_problem`] digs it
//! out, so that a wrong CA, an expired certificate or a host name the
//! certificate does not name becomes a configuration error saying which.

use std::error::Error as StdError;

use rustls::{AlertDescription, CertificateError};

/// The certificate problem somewhere in `error`'s chain, as a sentence
/// (`None` when the failure is not about a certificate). Looks inside
/// `std::io::Error`s, whose `source` skips the error they wrap.
pub fn certificate_problem(error: &(dyn StdError + 'static)) -> Option<String> {
    let mut next: Option<&(dyn StdError + 'static)> = Some(error);
    while let Some(current) = next {
        if let Some(problem) = explain(current) {
            return Some(problem);
        }
        if let Some(io) = current.downcast_ref::<std::io::Error>()
            && let Some(inner) = io.get_ref()
            && let Some(problem) = certificate_problem(inner)
        {
            return Some(problem);
        }
        next = current.source();
    }
    None
}

fn explain(error: &(dyn StdError + 'static)) -> Option<String> {
    let rustls = error.downcast_ref::<rustls::Error>()?;
    Some(match rustls {
        rustls::Error::InvalidCertificate(problem) => match problem {
            CertificateError::UnknownIssuer => "the server's certificate is not signed by a trusted CA \
                 (unknown issuer): the CA file (or the system's roots without one) does not hold the CA \
                 that signed it"
                .to_owned(),
            CertificateError::BadSignature => {
                "the server's certificate has a bad signature: it was not signed by the CA it names".to_owned()
            }
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                "the server's certificate has expired: renew it on the server".to_owned()
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                "the server's certificate is not valid yet (check the clocks)".to_owned()
            }
            CertificateError::NotValidForName => {
                "the server's certificate does not name the host in the URL (host name mismatch)".to_owned()
            }
            CertificateError::NotValidForNameContext { expected, presented } => format!(
                "the server's certificate does not name the host in the URL (host name mismatch: \
                 the URL names {}, the certificate {})",
                expected.to_str(),
                if presented.is_empty() {
                    "names nothing".to_owned()
                } else {
                    presented.join(", ")
                }
            ),
            CertificateError::Revoked => "the server's certificate is revoked".to_owned(),
            other => format!("the server's certificate was refused ({other:?})"),
        },
        rustls::Error::AlertReceived(alert) => match alert {
            AlertDescription::CertificateRequired | AlertDescription::HandshakeFailure => format!(
                "the server refused the handshake ({alert:?}): it may want a client certificate \
                 (give the certificate and its key)"
            ),
            AlertDescription::BadCertificate
            | AlertDescription::UnknownCA
            | AlertDescription::CertificateExpired
            | AlertDescription::CertificateRevoked
            | AlertDescription::CertificateUnknown
            | AlertDescription::UnsupportedCertificate => format!(
                "the server refused our client certificate ({alert:?})"
            ),
            _ => return None,
        },
        rustls::Error::NoCertificatesPresented => "the server presented no certificate".to_owned(),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_are_found_through_io_errors_and_sources() {
        let expired = rustls::Error::InvalidCertificate(CertificateError::Expired);
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, expired);
        let wrapped = crate::Error::new(crate::ErrorKind::Unavailable, "connect").with_source(io);
        let problem = certificate_problem(&wrapped).expect("found");
        assert!(problem.contains("expired"), "{problem}");
        let plain = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        assert_eq!(certificate_problem(&plain), None);
        let issuer = rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer);
        assert!(
            certificate_problem(&issuer)
                .unwrap()
                .contains("unknown issuer")
        );
    }
}
