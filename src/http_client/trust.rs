//! The certificate authorities every client trusts on top of the bundled Mozilla roots: the
//! operating system's store as rustls-native-certs finds it (which reads `SSL_CERT_FILE` and
//! `SSL_CERT_DIR` in place of the system locations, as OpenSSL does) and the PEM file or
//! folder named by `REQUESTS_CA_BUNDLE` (what huggingface_hub users already set). Loaded once
//! per process; a variable that names something unreadable or empty gives one warning and
//! the rest still loads, since the bundled roots may be all a host needs.

use std::path::Path;
use std::sync::OnceLock;

use rustls::pki_types::CertificateDer;

/// The extra roots, loaded on first use.
pub(super) fn global_roots() -> &'static [reqwest::Certificate] {
    static ROOTS: OnceLock<Vec<reqwest::Certificate>> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let loaded = load(&crate::env::process_env);
        for warning in &loaded.warnings {
            tracing::warn!("{warning}");
        }
        loaded.certs
    })
}

/// What [`load`] found.
struct Loaded {
    certs: Vec<reqwest::Certificate>,
    warnings: Vec<String>,
}

fn load(env: &dyn Fn(&str) -> Option<String>) -> Loaded {
    let mut warnings = Vec::new();
    let set = |name: &str| env(name).filter(|v| !v.trim().is_empty());
    let native = rustls_native_certs::load_native_certs();
    let from_env = set("SSL_CERT_FILE").is_some() || set("SSL_CERT_DIR").is_some();
    for e in &native.errors {
        if from_env {
            warnings.push(format!(
                "SSL_CERT_FILE/SSL_CERT_DIR: {e}; certificates there are not trusted"
            ));
        } else {
            tracing::debug!("the system certificate store: {e}");
        }
    }
    if from_env && native.certs.is_empty() && native.errors.is_empty() {
        warnings.push(
            "SSL_CERT_FILE/SSL_CERT_DIR hold no PEM certificate: only the bundled roots are trusted"
                .to_owned(),
        );
    }
    let mut ders = native.certs;
    // Often the same system bundle as SSL_CERT_FILE: read once.
    let same_file = |a: &str, b: &str| {
        let real = |p: &str| std::fs::canonicalize(p).ok();
        real(a).is_some() && real(a) == real(b)
    };
    let bundle = set("REQUESTS_CA_BUNDLE")
        .filter(|b| set("SSL_CERT_FILE").is_none_or(|f| !same_file(b, &f)));
    if let Some(bundle) = bundle {
        match pem_file_or_folder(Path::new(&bundle)) {
            Ok(certs) if certs.is_empty() => warnings.push(format!(
                "REQUESTS_CA_BUNDLE={bundle} holds no PEM certificate; nothing from it is trusted"
            )),
            Ok(certs) => ders.extend(certs),
            Err(e) => warnings.push(format!(
                "REQUESTS_CA_BUNDLE={bundle}: {e}; nothing from it is trusted"
            )),
        }
    }
    ders.sort_unstable_by(|a, b| a.as_ref().cmp(b.as_ref()));
    ders.dedup();
    Loaded {
        certs: usable(ders),
        warnings,
    }
}

/// Why a CA bundle gave no certificate.
#[derive(Debug, thiserror::Error)]
enum PemError {
    #[error("cannot read it ({0})")]
    Unreadable(std::io::Error),
    #[error("{0}")]
    Unparsable(String),
}

/// The certificates of a PEM file, or of every PEM file in a folder.
fn pem_file_or_folder(path: &Path) -> Result<Vec<CertificateDer<'static>>, PemError> {
    let meta = std::fs::metadata(path).map_err(PemError::Unreadable)?;
    let (file, dir) = if meta.is_dir() {
        (None, Some(path))
    } else {
        (Some(path), None)
    };
    let loaded = rustls_native_certs::load_certs_from_paths(file, dir);
    match loaded.errors.first() {
        Some(e) if loaded.certs.is_empty() => Err(PemError::Unparsable(e.to_string())),
        _ => Ok(loaded.certs),
    }
}

/// The certificates rustls accepts as trust anchors, as reqwest wants them. System stores
/// often hold a few ancient certificates rustls cannot parse; one of them must not make every
/// client fail to build, so they are left out (and logged at debug level).
pub(super) fn usable(ders: Vec<CertificateDer<'static>>) -> Vec<reqwest::Certificate> {
    let mut scratch = rustls::RootCertStore::empty();
    ders.into_iter()
        .filter_map(|der| match scratch.add(der.clone()) {
            Ok(()) => reqwest::Certificate::from_der(&der).ok(),
            Err(e) => {
                tracing::debug!("a CA certificate rustls cannot use is left out: {e}");
                None
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::pem::PemObject;

    #[test]
    fn requests_ca_bundle_adds_its_certificates_and_a_bad_one_warns() {
        let dir = tempfile::tempdir().unwrap();
        let bundle = dir.path().join("bundle.pem");
        std::fs::write(&bundle, super::super::certs_d::tests::TEST_CA_PEM).unwrap();
        let base = load(&|_| None).certs.len();
        let path = bundle.display().to_string();
        let with = load(&|k| (k == "REQUESTS_CA_BUNDLE").then(|| path.clone()));
        assert_eq!(with.certs.len(), base + 1);
        assert!(with.warnings.is_empty(), "{:?}", with.warnings);

        let missing = dir.path().join("missing.pem").display().to_string();
        let bad = load(&|k| (k == "REQUESTS_CA_BUNDLE").then(|| missing.clone()));
        assert_eq!(bad.certs.len(), base);
        assert!(
            bad.warnings[0].contains("REQUESTS_CA_BUNDLE") && bad.warnings[0].contains(&missing),
            "{:?}",
            bad.warnings
        );
    }

    #[test]
    fn certificates_rustls_cannot_parse_are_left_out() {
        let good =
            CertificateDer::from_pem_slice(super::super::certs_d::tests::TEST_CA_PEM.as_bytes());
        let good = good.unwrap();
        let junk = CertificateDer::from(vec![0x30, 0x03, 0x02, 0x01, 0x00]);
        assert_eq!(usable(vec![junk, good]).len(), 1);
    }
}
