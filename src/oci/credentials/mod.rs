//! Registry credentials where users already keep them, found the way docker and podman find
//! them, as a [`Credential`] that never prints its secret.
//!
//! Files, first match wins ([`files::auth_files`]): `$REGISTRY_AUTH_FILE` alone when set;
//! otherwise the containers auth files podman, skopeo and buildah write
//! (`$XDG_RUNTIME_DIR/containers/auth.json`, then `$XDG_CONFIG_HOME` or `~/.config` +
//! `/containers/auth.json`), then Docker's `$DOCKER_CONFIG/config.json` or
//! `~/.docker/config.json`. Inside each file Docker's order: `credHelpers[registry]`, then
//! `credsStore`, then `auths[registry]`. Helpers are `docker-credential-<name>` programs
//! ([`helper`]). The whole order is explained in `docs/registry-credentials.md`.

pub mod files;
pub mod helper;

use std::fmt;
use std::path::{Path, PathBuf};

use base64::Engine;

/// A secret (password, identity token): kept out of `Debug`, `Display` and every message.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }

    /// The secret itself, for the one header or form field it goes into.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Credentials for one registry.
#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    /// A user name and password (or access token used as one): `Basic` at the registry or at
    /// its token realm.
    Basic {
        /// The user name (not secret; printed).
        username: String,
        /// The password.
        password: Secret,
    },
    /// An OAuth2 refresh token (`identitytoken`, or `Username: <token>` from a helper):
    /// exchanged at the token realm for an access token.
    IdentityToken(Secret),
}

impl Credential {
    /// The `Authorization: Basic …` value, for basic credentials.
    pub fn basic_header(&self) -> Option<String> {
        match self {
            Credential::Basic { username, password } => Some(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD
                    .encode(format!("{username}:{}", password.expose()))
            )),
            Credential::IdentityToken(_) => None,
        }
    }
}

impl fmt::Display for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credential::Basic { username, .. } => write!(f, "user `{username}`"),
            Credential::IdentityToken(_) => f.write_str("an identity token"),
        }
    }
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Credential({self})")
    }
}

/// Credentials and where they were found (for log lines; never the secret).
#[derive(Debug, Clone)]
pub struct Found {
    /// The credentials.
    pub credential: Credential,
    /// `docker-credential-pass (credsStore in ~/.docker/config.json)`, or the file.
    pub from: String,
}

/// Why credentials could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    /// A credential helper failed (not "no credentials": that falls through).
    #[error("credential helper `{helper}` failed for {registry}: {detail}")]
    Helper {
        /// `docker-credential-<name>`.
        helper: String,
        /// The registry asked for.
        registry: String,
        /// What went wrong (never the helper's answer on success, which holds the secret).
        detail: String,
    },
    /// An auth file that cannot be read or is not what docker/podman write.
    #[error("{}: {detail}", .path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
}

impl CredentialError {
    /// What the user can do about it.
    pub fn hint(&self) -> &'static str {
        match self {
            CredentialError::Helper { .. } => {
                "run `echo REGISTRY | docker-credential-NAME get` to see its own message (and its answer, which holds the secret: in your terminal only); log in again with it, or remove the registry from `credHelpers` (or `credsStore`) in the file named"
            }
            CredentialError::File { .. } => {
                "fix or remove the file (it must be JSON with `auths`, as `docker login`, `podman login` or `modelbake login` write it), or point REGISTRY_AUTH_FILE / DOCKER_CONFIG elsewhere"
            }
        }
    }
}

/// The registry name used for Docker Hub in references and keys.
pub const DOCKER_HUB: &str = "docker.io";
/// The key `docker login` uses for Docker Hub.
pub const DOCKER_HUB_KEY: &str = "https://index.docker.io/v1/";
const HUB_ALIASES: [&str; 4] = [
    "docker.io",
    "index.docker.io",
    "registry-1.docker.io",
    "registry.hub.docker.com",
];

/// The registry a key or argument names: scheme and path removed, lower case, Docker Hub's
/// aliases (`https://index.docker.io/v1/`, `index.docker.io`, `registry-1.docker.io`) folded
/// into `docker.io`.
pub fn normalize_registry(key: &str) -> String {
    let k = key.trim().to_ascii_lowercase();
    let k = k
        .strip_prefix("https://")
        .or_else(|| k.strip_prefix("http://"))
        .unwrap_or(&k);
    let host = k.split('/').next().unwrap_or_default().to_owned();
    if HUB_ALIASES.contains(&host.as_str()) {
        DOCKER_HUB.to_owned()
    } else {
        host
    }
}

/// The server URLs a helper is asked for, in order: for Docker Hub the key `docker login`
/// stores (`https://index.docker.io/v1/`) and its aliases; else the host, then `https://host`.
pub fn helper_keys(registry: &str) -> Vec<String> {
    if normalize_registry(registry) == DOCKER_HUB {
        std::iter::once(DOCKER_HUB_KEY)
            .chain(HUB_ALIASES.iter().take(3).copied())
            .map(str::to_owned)
            .collect()
    } else {
        vec![registry.to_owned(), format!("https://{registry}")]
    }
}

/// Credentials for `registry` (`host[:port]`, `docker.io` for Docker Hub) from the first file
/// and source that has some; `None` when none does.
pub fn lookup(
    registry: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<Found>, CredentialError> {
    for path in files::auth_files(env) {
        let Some(config) = files::AuthConfig::read(&path)? else {
            continue;
        };
        if let Some(found) = lookup_in(&config, &path, registry)? {
            tracing::debug!(
                "credentials for {registry}: {} from {}",
                found.credential,
                found.from
            );
            return Ok(Some(found));
        }
    }
    Ok(None)
}

/// Docker's order inside one file: `credHelpers[registry]`, `credsStore`, `auths[registry]`.
fn lookup_in(
    config: &files::AuthConfig,
    path: &Path,
    registry: &str,
) -> Result<Option<Found>, CredentialError> {
    let shown = path.display().to_string();
    let helpers = [
        ("credHelpers", config.helper_for(registry)),
        ("credsStore", config.creds_store()),
    ];
    for (key, name) in helpers {
        if let Some(name) = name
            && let Some(credential) = helper::get(name, registry)?
        {
            return Ok(Some(Found {
                credential,
                from: format!("docker-credential-{name} ({key} in {shown})"),
            }));
        }
    }
    Ok(config.auth_for(registry, path)?.map(|credential| Found {
        credential,
        from: shown,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print() {
        let c = Credential::Basic {
            username: "alice".into(),
            password: Secret::new("hunter2"),
        };
        let t = Credential::IdentityToken(Secret::new("refresh-me"));
        for shown in [
            format!("{c}"),
            format!("{c:?}"),
            format!("{t}"),
            format!("{t:?}"),
        ] {
            assert!(
                !shown.contains("hunter2") && !shown.contains("refresh-me"),
                "{shown}"
            );
        }
        assert!(format!("{c}").contains("alice"));
        assert_eq!(
            c.basic_header().unwrap(),
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode("alice:hunter2")
            )
        );
        assert_eq!(t.basic_header(), None);
    }

    #[test]
    fn registries_normalize_like_docker() {
        for hub in [
            "docker.io",
            "https://index.docker.io/v1/",
            "index.docker.io",
            "registry-1.docker.io",
            "HTTPS://Registry-1.Docker.io/",
        ] {
            assert_eq!(normalize_registry(hub), "docker.io", "{hub}");
        }
        assert_eq!(normalize_registry("https://ghcr.io/v2/"), "ghcr.io");
        assert_eq!(normalize_registry("127.0.0.1:5000"), "127.0.0.1:5000");
        assert_eq!(helper_keys("docker.io")[0], DOCKER_HUB_KEY);
        assert_eq!(helper_keys("ghcr.io"), ["ghcr.io", "https://ghcr.io"]);
    }
}
