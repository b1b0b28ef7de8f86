//! Per-registry TLS material the way podman, skopeo, buildah and docker keep it: a folder named
//! `host[:port]` under a `certs.d` tree, holding `*.crt` files (CAs trusted for that registry on
//! top of the global roots) and `*.cert` + `*.key` pairs (a client certificate and its key).
//! The trees are searched in order and the first one that has a folder for the host is used,
//! as containers/image does; files are taken in name order, and of several client pairs the
//! first is presented.

use std::path::{Path, PathBuf};

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use super::ClientError;

/// The `certs.d` trees searched for a registry's folder: the colon-separated
/// `MODELBAKE_CERTS_DIRS` when set (a private copy for tests and unusual installs), else
/// `~/.config/containers/certs.d`, `/etc/containers/certs.d` and `/etc/docker/certs.d`.
pub fn cert_dirs(env: &dyn Fn(&str) -> Option<String>) -> Vec<PathBuf> {
    if let Some(dirs) = env("MODELBAKE_CERTS_DIRS").filter(|v| !v.trim().is_empty()) {
        return std::env::split_paths(&dirs)
            .filter(|p| !p.as_os_str().is_empty())
            .collect();
    }
    let mut dirs = Vec::new();
    if let Some(home) = env("HOME").filter(|h| !h.is_empty()) {
        dirs.push(Path::new(&home).join(".config/containers/certs.d"));
    }
    dirs.push(PathBuf::from("/etc/containers/certs.d"));
    dirs.push(PathBuf::from("/etc/docker/certs.d"));
    dirs
}

/// What one registry's folder holds.
pub(super) struct HostCerts {
    /// The folder they came from, for logs.
    pub folder: PathBuf,
    /// The CAs of its `*.crt` files.
    pub cas: Vec<reqwest::Certificate>,
    /// The first `*.cert` with its `*.key`.
    pub identity: Option<reqwest::Identity>,
}

/// The certificates for `host` from the first of `dirs` that has a folder for it; `None` when
/// none has. A folder with a certificate and no key (or a key and no certificate), or a file
/// that cannot be read or holds no certificate, is an error naming the file: half a
/// configuration would only fail later, less clearly.
pub(super) fn for_host(dirs: &[PathBuf], host: &str) -> Result<Option<HostCerts>, ClientError> {
    // A host is a name or address with an optional port: never a path.
    if host.is_empty() || host.contains(['/', '\\']) || host.starts_with('.') {
        return Ok(None);
    }
    let Some(folder) = dirs.iter().map(|d| d.join(host)).find(|f| f.is_dir()) else {
        return Ok(None);
    };
    let fail = |path: &Path, what: String| ClientError(format!("{}: {what}", path.display()));
    let mut files: Vec<PathBuf> = std::fs::read_dir(&folder)
        .map_err(|e| fail(&folder, format!("cannot list it ({e})")))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    files.sort();
    let read =
        |path: &Path| std::fs::read(path).map_err(|e| fail(path, format!("cannot read it ({e})")));
    let with_ext = |path: &Path, ext: &str| path.with_extension(ext);
    let mut cas = Vec::new();
    let mut identity = None;
    for path in &files {
        match path.extension().and_then(|e| e.to_str()) {
            Some("crt") => {
                let pem = read(path)?;
                let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
                    .collect::<Result<_, _>>()
                    .map_err(|e| fail(path, format!("is not a PEM certificate file ({e})")))?;
                if certs.is_empty() {
                    return Err(fail(path, "holds no PEM certificate".to_owned()));
                }
                let usable = super::trust::usable(certs);
                if usable.is_empty() {
                    return Err(fail(path, "holds no certificate usable as a CA".to_owned()));
                }
                cas.extend(usable);
            }
            Some("cert") => {
                let key = with_ext(path, "key");
                if !key.is_file() {
                    return Err(fail(
                        path,
                        format!(
                            "a client certificate needs its key beside it as {} (CA certificates end in .crt)",
                            key.file_name().unwrap_or_default().to_string_lossy()
                        ),
                    ));
                }
                if identity.is_none() {
                    let mut pem = read(path)?;
                    pem.push(b'\n');
                    pem.extend(read(&key)?);
                    identity = Some(reqwest::Identity::from_pem(&pem).map_err(|e| {
                        fail(
                            path,
                            format!(
                                "with {}: not a PEM certificate and private key ({})",
                                key.display(),
                                crate::redact::error_chain(&e)
                            ),
                        )
                    })?);
                }
            }
            Some("key") => {
                let cert = with_ext(path, "cert");
                if !cert.is_file() {
                    return Err(fail(
                        path,
                        format!(
                            "a client key needs its certificate beside it as {}",
                            cert.file_name().unwrap_or_default().to_string_lossy()
                        ),
                    ));
                }
            }
            _ => {}
        }
    }
    Ok(Some(HostCerts {
        folder,
        cas,
        identity,
    }))
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A self-signed CA made for these unit tests only (its key below is public on purpose).
    pub const TEST_CA_PEM: &str = "-----BEGIN CERTIFICATE-----
MIIBmTCCAT+gAwIBAgIURv9e5VxuC98C985SPuIuBvQR+3kwCgYIKoZIzj0EAwIw
ITEfMB0GA1UEAwwWbW9kZWxiYWtlIHVuaXQtdGVzdCBDQTAgFw0yNjExMjkyMTQ3
MjNaGA8yMTI2MTEwNTIxNDcyM1owITEfMB0GA1UEAwwWbW9kZWxiYWtlIHVuaXQt
dGVzdCBDQTBZMBMGByqGSM49AgEGCCqGSM49AwEHA0IABH6OJKUdTRERxuRdHMKr
Z2bOY2vkB18wNabItyoOcKCcUO6Kb2f60T81PGBR4zfCIQyNRwB/ZC1OescTVmF5
atWjUzBRMB0GA1UdDgQWBBTm3akna8NLsh+OmOcMw68aY06AmDAfBgNVHSMEGDAW
gBTm3akna8NLsh+OmOcMw68aY06AmDAPBgNVHRMBAf8EBTADAQH/MAoGCCqGSM49
BAMCA0gAMEUCIHLj7KgW7gnQUO/bCNDM/qH8LuKyhvNVMwIrwVTF9SY4AiEA36l7
Sk65kRK+pn6vlVQ5vEZdDUMzTjOuTDXfVMxgk8c=
-----END CERTIFICATE-----
";
    /// The key of [`TEST_CA_PEM`], used here as a client identity.
    const TEST_CA_KEY: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQglWosde3CbEjYO+is
MRqufS5H/CZ26uzFhof4iaEt5QOhRANCAAR+jiSlHU0REcbkXRzCq2dmzmNr5Adf
MDWmyLcqDnCgnFDuim9n+tE/NTxgUeM3wiEMjUcAf2QtTnrHE1ZheWrV
-----END PRIVATE KEY-----
";

    fn tree(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (path, text) in files {
            let path = dir.path().join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        dir
    }

    #[test]
    fn the_first_tree_with_a_folder_for_the_host_wins() {
        let first = tree(&[("other:1/ca.crt", TEST_CA_PEM)]);
        let second = tree(&[
            ("reg:5000/ca.crt", TEST_CA_PEM),
            ("reg:5000/b.crt", TEST_CA_PEM),
            ("reg:5000/client.cert", TEST_CA_PEM),
            ("reg:5000/client.key", TEST_CA_KEY),
        ]);
        let third = tree(&[("reg:5000/junk.crt", "not a certificate")]);
        let dirs = [first.path(), second.path(), third.path()].map(Path::to_owned);
        let found = for_host(&dirs, "reg:5000").unwrap().unwrap();
        assert_eq!(found.folder, second.path().join("reg:5000"));
        assert_eq!(found.cas.len(), 2);
        assert!(found.identity.is_some());
        assert!(
            for_host(&dirs, "reg").unwrap().is_none(),
            "the port is part of the name"
        );
        assert!(for_host(&dirs, "../x").unwrap().is_none());
    }

    #[test]
    fn half_a_client_pair_or_a_bad_ca_file_is_an_error_naming_the_file() {
        let t = tree(&[("h/client.cert", TEST_CA_PEM)]);
        let e = for_host(&[t.path().to_owned()], "h")
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("client.cert") && e.contains("client.key"), "{e}");
        let t = tree(&[("h/client.key", TEST_CA_KEY)]);
        let e = for_host(&[t.path().to_owned()], "h")
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("client.key") && e.contains("client.cert"), "{e}");
        let t = tree(&[("h/ca.crt", "hello")]);
        let e = for_host(&[t.path().to_owned()], "h")
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("ca.crt") && e.contains("no PEM certificate"),
            "{e}"
        );
    }

    #[test]
    fn the_setting_replaces_the_default_trees() {
        let env = |k: &str| match k {
            "MODELBAKE_CERTS_DIRS" => Some("/a:/b".to_owned()),
            "HOME" => Some("/home/u".to_owned()),
            _ => None,
        };
        assert_eq!(cert_dirs(&env), [PathBuf::from("/a"), PathBuf::from("/b")]);
        let env = |k: &str| (k == "HOME").then(|| "/home/u".to_owned());
        assert_eq!(
            cert_dirs(&env),
            [
                PathBuf::from("/home/u/.config/containers/certs.d"),
                PathBuf::from("/etc/containers/certs.d"),
                PathBuf::from("/etc/docker/certs.d"),
            ]
        );
    }
}
