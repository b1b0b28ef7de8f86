//! A certificate problem in a TLS handshake, said in words a user can act on: which host, what
//! is wrong with its certificate (or with ours, when it asks for a client certificate) and where
//! to put the CA or the client certificate. Without this, the cause sits at the end of a long
//! error chain as a rustls enum name (`invalid peer certificate: UnknownIssuer`).
//! `redact::error_chain` uses it, so every HTTP client's errors (Hub, mirrors, registries,
//! plugin downloads) get the same sentence.

use std::error::Error;

use rustls::{AlertDescription, CertificateError};

/// Where a registry's CA and client certificate go, shared by every message that mentions it.
const CERTS_D: &str = "/etc/containers/certs.d or /etc/docker/certs.d (MODELBAKE_CERTS_DIRS)";

/// The explanation of the certificate problem behind `e`, or `None` when `e` is not one (a
/// refused connection, a timeout, a server that does not speak TLS…).
pub fn explain(e: &(dyn Error + 'static)) -> Option<String> {
    let mut host = None;
    let mut tls = None;
    for cause in std::iter::successors(Some(e), |&c| c.source()) {
        if host.is_none() {
            host = cause
                .downcast_ref::<reqwest::Error>()
                .and_then(reqwest::Error::url)
                .and_then(authority);
        }
        if tls.is_none() {
            tls = rustls_error(cause);
        }
    }
    let tls = tls?;
    let host = host.unwrap_or_else(|| "the server".to_owned());
    let what = match tls {
        rustls::Error::InvalidCertificate(c) => match c {
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                format!(
                    "the TLS certificate of {host} is not valid for the name {host}: use a name the certificate lists, or give the server a certificate for this name"
                )
            }
            CertificateError::Expired
            | CertificateError::ExpiredContext { .. }
            | CertificateError::NotValidYet
            | CertificateError::NotValidYetContext { .. } => format!(
                "the TLS certificate of {host} has expired or is not valid yet: check this machine's clock, or renew the server's certificate"
            ),
            CertificateError::Revoked => {
                format!(
                    "the TLS certificate of {host} has been revoked: the server needs a new one"
                )
            }
            _ => format!(
                "the TLS certificate of {host} is not trusted: no certificate authority modelbake trusts signed it. \
                 If {host} uses a private CA (or a TLS-inspecting proxy sits in between), trust that CA: \
                 set SSL_CERT_FILE (or REQUESTS_CA_BUNDLE) to a PEM file holding it, or SSL_CERT_DIR to a folder of them; \
                 for a registry, put it in certs.d/{host}/ca.crt under {CERTS_D}"
            ),
        },
        rustls::Error::AlertReceived(AlertDescription::CertificateRequired) => format!(
            "{host} asks for a TLS client certificate and modelbake has none for it: put the certificate in certs.d/{host}/client.cert and its key in certs.d/{host}/client.key under {CERTS_D}"
        ),
        rustls::Error::AlertReceived(
            AlertDescription::BadCertificate
            | AlertDescription::UnknownCA
            | AlertDescription::CertificateUnknown
            | AlertDescription::UnsupportedCertificate
            | AlertDescription::CertificateExpired
            | AlertDescription::CertificateRevoked,
        ) => format!(
            "{host} refused the TLS client certificate (or expected one): check the *.cert and *.key files in certs.d/{host}/ under {CERTS_D}, and that the server trusts their CA"
        ),
        _ => return None,
    };
    Some(format!("{what} ({tls})"))
}

/// True when `e` is a certificate problem: trying again cannot fix it.
pub fn is_certificate_problem(e: &(dyn Error + 'static)) -> bool {
    explain(e).is_some()
}

/// `host[:port]` of a URL, the port only when written (as registries and certs.d name hosts).
fn authority(url: &url::Url) -> Option<String> {
    let host = url.host_str()?;
    Some(match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_owned(),
    })
}

/// The rustls error `e` is, or wraps through `io::Error`s (whose `source()` skips the error
/// they hold, so it is reached through `get_ref`).
fn rustls_error<'a>(e: &'a (dyn Error + 'static)) -> Option<&'a rustls::Error> {
    if let Some(r) = e.downcast_ref::<rustls::Error>() {
        return Some(r);
    }
    let inner = e.downcast_ref::<std::io::Error>()?.get_ref()?;
    rustls_error(inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An error shaped like the one reqwest's connector returns: an `io::Error` holding the
    /// rustls error, below a plain message.
    #[derive(Debug)]
    struct Outer(std::io::Error);
    impl std::fmt::Display for Outer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("client error (Connect)")
        }
    }
    impl Error for Outer {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            Some(&self.0)
        }
    }

    fn wrapped(e: rustls::Error) -> Outer {
        Outer(std::io::Error::new(std::io::ErrorKind::InvalidData, e))
    }

    #[test]
    fn an_unknown_issuer_says_the_certificate_is_not_trusted_and_where_a_ca_goes() {
        let e = wrapped(rustls::Error::InvalidCertificate(
            CertificateError::UnknownIssuer,
        ));
        let m = explain(&e).unwrap();
        for part in [
            "is not trusted",
            "SSL_CERT_FILE",
            "REQUESTS_CA_BUNDLE",
            "certs.d/the server/ca.crt",
            "UnknownIssuer",
        ] {
            assert!(m.contains(part), "{part}: {m}");
        }
    }

    #[test]
    fn names_expiry_and_client_certificates_apart() {
        let m = explain(&wrapped(rustls::Error::InvalidCertificate(
            CertificateError::Expired,
        )))
        .unwrap();
        assert!(m.contains("expired") && m.contains("clock"), "{m}");
        let m = explain(&wrapped(rustls::Error::AlertReceived(
            AlertDescription::CertificateRequired,
        )))
        .unwrap();
        assert!(m.contains("client.cert") && m.contains("client.key"), "{m}");
    }

    #[test]
    fn other_failures_are_not_certificate_problems() {
        let e = wrapped(rustls::Error::InvalidMessage(
            rustls::InvalidMessage::InvalidContentType,
        ));
        assert!(explain(&e).is_none());
        let e = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        assert!(!is_certificate_problem(&e));
    }
}
