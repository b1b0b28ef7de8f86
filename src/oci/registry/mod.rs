//! A client for the OCI distribution API: manifests, blob existence, cross-repository mounts,
//! uploads (monolithic or chunked and resumable, [`upload`]) and streamed copies between
//! registries. Every request is retried on transient failures ([`request`]); reads survive cut
//! bodies ([`read`]: small answers are read again, blobs resume with `Range`). Authentication
//! as Docker and skopeo do it: credentials from [`super::credentials`] (looked up at the first
//! challenge), then the registry's challenge decides (bearer token from its realm, fetched with
//! basic credentials or exchanged for an identity token; or basic); a token that expires
//! mid-push is renewed on the 401 and the request repeated.

pub mod options;
mod read;
mod request;
mod upload;

pub use options::RegistryOptions;
pub use read::SyncStream;
pub use request::Payload;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;

use reqwest::header::{AUTHORIZATION, CONTENT_TYPE};
use reqwest::{Method, StatusCode};
use url::Url;

use super::credentials::{Credential, CredentialError};
use super::digest::Digest;
use super::reference::ImageRef;
use super::{MEDIA_DOCKER_LIST, MEDIA_DOCKER_MANIFEST, MEDIA_INDEX, MEDIA_MANIFEST};
use crate::http_body::{BodyError, read_capped};
use crate::retry::RetryPolicy;

/// The most a token answer may weigh (tokens are JWTs of a few KiB).
const TOKEN_LIMIT: u64 = 1 << 20;
/// How much of an error answer is read for its message.
const ERROR_BODY_LIMIT: usize = 64 << 10;

/// Why a registry operation failed.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// Network-level failure.
    #[error("{url}: {detail}")]
    Http {
        /// The URL.
        url: String,
        /// What happened.
        detail: String,
    },
    /// The registry wants credentials we do not have.
    #[error(
        "{registry} asks for credentials: log in with `modelbake login {registry}`, `docker login {registry}` or `podman login {registry}` (modelbake reads their files; see docs/registry-credentials.md)"
    )]
    NeedsLogin {
        /// The registry.
        registry: String,
    },
    /// The registry (or its token service) refused the credentials we sent.
    #[error(
        "{registry} refused {credential}: wrong username or password, an expired token, or no access to this repository; log in again with `modelbake login {registry}` (credentials from {from})"
    )]
    Refused {
        /// The registry.
        registry: String,
        /// What was sent (`user `alice``, `an identity token`; never the secret).
        credential: String,
        /// Where the credentials came from.
        from: String,
    },
    /// Credentials could not be read (a failing helper, a broken auth file).
    #[error(transparent)]
    Credentials(#[from] CredentialError),
    /// An answer larger than its limit.
    #[error(transparent)]
    Body(#[from] BodyError),
    /// The request kept failing until the retry budget was spent.
    #[error(
        "{url}: gave up after {attempts} attempts: {last}; check the network and the registry's status, or raise MODELBAKE_HTTP_RETRIES"
    )]
    GaveUp {
        /// The URL.
        url: String,
        /// Attempts made.
        attempts: u32,
        /// The last failure.
        last: String,
    },
    /// A server that is not the registry (an upload `Location` or a redirect on another
    /// origin) answered `401`: the registry's credentials are not sent to it, nor to the token
    /// realm it names.
    #[error(
        "{host} asks for credentials, but it is not {registry} (an upload location or a redirect of {registry} led there): credentials are only sent to the registry and to the token service the registry names; check the registry's storage or proxy settings"
    )]
    ForeignChallenge {
        /// The other server (`host[:port]`).
        host: String,
        /// The registry.
        registry: String,
    },
    /// A setting (an environment variable) is wrong.
    #[error("{0}")]
    Config(String),
    /// A local file could not be read.
    #[error("{}: {source}", .path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

impl RegistryError {
    /// What the user can do about it, when there is something to say.
    pub fn hint(&self) -> Option<&'static str> {
        match self {
            RegistryError::Credentials(e) => Some(e.hint()),
            RegistryError::Refused { .. } => Some(
                "check the user and password (or token) and its rights on the repository; `modelbake login REGISTRY -u USER --password-stdin` checks and stores new ones",
            ),
            _ => None,
        }
    }
}

type Result<T> = std::result::Result<T, RegistryError>;

/// One registry (host) with the credentials and tokens for it.
pub struct Registry {
    http: reqwest::Client,
    base: String,
    host: String,
    /// Credentials and where they came from, looked up at the first challenge (so a registry
    /// that never asks never runs a helper).
    credential: tokio::sync::OnceCell<Option<super::credentials::Found>>,
    tokens: Mutex<HashMap<String, String>>,
    retry: RetryPolicy,
    options: RegistryOptions,
}

/// Parses `Bearer realm="…",service="…",scope="…"` into its scheme and parameters.
fn parse_challenge(h: &str) -> (String, HashMap<String, String>) {
    let (scheme, rest) = h.trim().split_once(' ').unwrap_or((h.trim(), ""));
    let mut params = HashMap::new();
    let mut rest = rest.trim();
    while !rest.is_empty() {
        let Some((k, after)) = rest.split_once('=') else {
            break;
        };
        let after = after.trim_start();
        let (v, remaining) = if let Some(q) = after.strip_prefix('"') {
            crate::http_header::unquote(q)
        } else {
            let (v, r) = after.split_once(',').unwrap_or((after, ""));
            (v.trim().to_owned(), r)
        };
        params.insert(k.trim().to_ascii_lowercase(), v);
        rest = remaining.trim_start_matches([',', ' ']);
    }
    (scheme.to_ascii_lowercase(), params)
}

impl Registry {
    /// A client for the registry of `image`; plain `http` only with `insecure`.
    pub fn new(image: &ImageRef, insecure: bool) -> Result<Self> {
        Registry::for_registry(&image.registry, insecure)
    }

    /// A client for `registry` (`host[:port]`, `docker.io` for Docker Hub), with the user's
    /// stored credentials; plain `http` only with `insecure`.
    pub fn for_registry(registry: &str, insecure: bool) -> Result<Self> {
        let api_host = super::reference::api_host_of(registry);
        let http = crate::http_client::registry_client(registry, |b| {
            b.connect_timeout(std::time::Duration::from_secs(15))
        })
        .map_err(|e| RegistryError::Http {
            url: api_host.into(),
            detail: e.to_string(),
        })?;
        let scheme = if insecure { "http" } else { "https" };
        let retry = RetryPolicy::try_from_env(&crate::env::process_env)
            .map_err(|e| RegistryError::Config(e.to_string()))?;
        Ok(Registry {
            http,
            base: format!("{scheme}://{api_host}"),
            host: registry.to_owned(),
            credential: tokio::sync::OnceCell::new(),
            tokens: Mutex::new(HashMap::new()),
            options: RegistryOptions::for_host(registry, None),
            retry,
        })
    }

    /// This client with `credential` instead of the stored ones (`login` checks new ones).
    pub fn with_credential(self, credential: Credential, from: &str) -> Self {
        Registry {
            credential: tokio::sync::OnceCell::new_with(Some(Some(super::credentials::Found {
                credential,
                from: from.to_owned(),
            }))),
            ..self
        }
    }

    /// This client with the upload settings of `options` (from `[bake.registry."HOST"]`).
    pub fn with_options(mut self, options: RegistryOptions) -> Self {
        self.options = options;
        self
    }

    /// The credentials for this registry, looked up once (helpers run off the async threads).
    async fn credential(&self) -> Result<Option<&super::credentials::Found>> {
        let host = self.host.clone();
        let found = self
            .credential
            .get_or_try_init(|| async move {
                tokio::task::spawn_blocking(move || {
                    super::credentials::lookup(&host, &crate::env::process_env)
                })
                .await
                .map_err(|e| RegistryError::Http {
                    url: String::new(),
                    detail: format!("the credential lookup stopped: {e}"),
                })?
                .map_err(RegistryError::from)
            })
            .await?;
        Ok(found.as_ref())
    }

    /// Checks the credentials the way `docker login` does: `GET /v2/`, answering its Basic or
    /// Bearer challenge. `Refused` when the registry does not accept them.
    pub async fn check_login(&self) -> Result<()> {
        let resp = self
            .send(Method::GET, "/v2/", "", &[], &Payload::Empty)
            .await?;
        if resp.status() == StatusCode::UNAUTHORIZED || resp.status() == StatusCode::FORBIDDEN {
            return Err(self.refused().await);
        }
        ok(resp, &self.url("/v2/")).await.map(|_| ())
    }

    /// `Refused` naming the credentials that were sent, or `NeedsLogin` when there were none.
    async fn refused(&self) -> RegistryError {
        match self.credential().await {
            Ok(Some(found)) => RegistryError::Refused {
                registry: self.host.clone(),
                credential: found.credential.to_string(),
                from: found.from.clone(),
            },
            Ok(None) => RegistryError::NeedsLogin {
                registry: self.host.clone(),
            },
            Err(e) => e,
        }
    }

    /// The registry as written in references.
    pub fn host(&self) -> &str {
        &self.host
    }

    fn url(&self, path: &str) -> String {
        if path.starts_with("http://") || path.starts_with("https://") {
            path.to_owned()
        } else {
            format!("{}{path}", self.base)
        }
    }

    /// The `Authorization` earned for `scope`, only for a URL on this registry's own origin: an
    /// upload `Location` on another host (object storage, a CDN) never receives it.
    fn auth_for(&self, url: &str, scope: &str) -> Option<String> {
        if !self.is_own_origin(url) {
            return None;
        }
        self.tokens.lock().ok().and_then(|t| t.get(scope).cloned())
    }

    /// True when `url` is on this registry's own origin (scheme, host and port).
    fn is_own_origin(&self, url: &str) -> bool {
        match (Url::parse(url), Url::parse(&self.base)) {
            (Ok(a), Ok(b)) => a.origin() == b.origin(),
            _ => false,
        }
    }

    /// The `Authorization` value that answers `challenge` for `scope`.
    async fn answer(&self, challenge: &str, scope: &str) -> Result<String> {
        let (scheme, params) = parse_challenge(challenge);
        let credential = self.credential().await?.map(|f| &f.credential);
        match scheme.as_str() {
            "basic" => match credential.and_then(Credential::basic_header) {
                Some(h) => Ok(h),
                None => Err(self.refused_or_needs(credential).await),
            },
            "bearer" => {
                let realm = params.get("realm").ok_or_else(|| RegistryError::Http {
                    url: self.base.clone(),
                    detail: format!("bearer challenge without realm: {challenge}"),
                })?;
                let mut url = Url::parse(realm).map_err(|e| RegistryError::Http {
                    url: crate::redact::url_str(realm),
                    detail: e.to_string(),
                })?;
                let scopes = scope.split(' ').filter(|s| !s.is_empty());
                let service = params.get("service");
                let req = match credential {
                    // OAuth2: the identity (refresh) token is exchanged at the realm.
                    Some(Credential::IdentityToken(token)) => {
                        let mut form = url::form_urlencoded::Serializer::new(String::new());
                        form.append_pair("grant_type", "refresh_token")
                            .append_pair("refresh_token", token.expose())
                            .append_pair("client_id", "modelbake");
                        if let Some(s) = service {
                            form.append_pair("service", s);
                        }
                        let scopes: Vec<&str> = scopes.collect();
                        if !scopes.is_empty() {
                            form.append_pair("scope", &scopes.join(" "));
                        }
                        self.http
                            .post(url.clone())
                            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
                            .body(form.finish())
                    }
                    basic => {
                        {
                            let mut q = url.query_pairs_mut();
                            if let Some(s) = service {
                                q.append_pair("service", s);
                            }
                            for s in scopes {
                                q.append_pair("scope", s);
                            }
                        }
                        let req = self.http.get(url.clone());
                        match basic.and_then(Credential::basic_header) {
                            Some(h) => req.header(AUTHORIZATION, h),
                            None => req,
                        }
                    }
                };
                let resp = self
                    .retrying(url.as_str(), async || {
                        let Some(attempt) = req.try_clone() else {
                            return Err(RegistryError::Http {
                                url: crate::redact::url_str(url.as_str()),
                                detail: "the token request cannot be repeated".into(),
                            });
                        };
                        request::sent(url.as_str(), attempt.send().await)
                    })
                    .await?;
                if resp.status() == StatusCode::UNAUTHORIZED
                    || resp.status() == StatusCode::FORBIDDEN
                {
                    return Err(self.refused_or_needs(credential).await);
                }
                let resp = ok(resp, url.as_str()).await?;
                let body = read_capped(resp, TOKEN_LIMIT, "a token answer").await?;
                let v: serde_json::Value =
                    serde_json::from_slice(&body).map_err(|e| RegistryError::Http {
                        url: crate::redact::url_str(url.as_str()),
                        detail: format!("the token answer is not JSON: {e}"),
                    })?;
                let token = v["token"]
                    .as_str()
                    .or(v["access_token"].as_str())
                    .ok_or_else(|| RegistryError::Http {
                        url: crate::redact::url_str(url.as_str()),
                        detail: "no token in the answer".into(),
                    })?;
                Ok(format!("Bearer {token}"))
            }
            _ => Err(self.refused_or_needs(credential).await),
        }
    }

    /// `Refused` when credentials were sent, else `NeedsLogin`.
    async fn refused_or_needs(&self, sent: Option<&Credential>) -> RegistryError {
        match sent {
            Some(_) => self.refused().await,
            None => RegistryError::NeedsLogin {
                registry: self.host.clone(),
            },
        }
    }

    /// The manifest or index of `repo` at `reference` (tag or digest), at most `limit` bytes,
    /// with the media type the registry declared. Walking an index to one platform is
    /// [`super::source::resolve`]'s job, shared with OCI layouts.
    pub async fn document(
        &self,
        repo: &str,
        reference: &str,
        limit: u64,
    ) -> Result<(Vec<u8>, Option<String>)> {
        let scope = format!("repository:{repo}:pull");
        let accept = [
            MEDIA_MANIFEST,
            MEDIA_DOCKER_MANIFEST,
            MEDIA_INDEX,
            MEDIA_DOCKER_LIST,
        ]
        .join(", ");
        let path = format!("/v2/{repo}/manifests/{reference}");
        self.get_small(
            &path,
            &scope,
            &[("accept", accept.as_str())],
            limit,
            "a manifest",
        )
        .await
    }

    /// A blob's bytes (for configs and small JSON), at most `limit` of them.
    pub async fn blob_bytes(&self, repo: &str, digest: &Digest, limit: u64) -> Result<Vec<u8>> {
        let path = format!("/v2/{repo}/blobs/{digest}");
        let scope = format!("repository:{repo}:pull");
        let (bytes, _) = self
            .get_small(&path, &scope, &[], limit, "an image config")
            .await?;
        Ok(bytes)
    }

    /// True when `repo` already has the blob (a HEAD, nothing transferred).
    pub async fn has_blob(&self, repo: &str, digest: &Digest) -> Result<bool> {
        let path = format!("/v2/{repo}/blobs/{digest}");
        let resp = self
            .send(
                Method::HEAD,
                &path,
                &format!("repository:{repo}:pull,push"),
                &[],
                &Payload::Empty,
            )
            .await?;
        Ok(resp.status().is_success())
    }

    /// Stores a manifest under `tag`.
    pub async fn put_manifest(
        &self,
        repo: &str,
        tag: &str,
        bytes: &[u8],
        media_type: &str,
    ) -> Result<()> {
        let path = format!("/v2/{repo}/manifests/{tag}");
        let resp = self
            .send(
                Method::PUT,
                &path,
                &format!("repository:{repo}:pull,push"),
                &[("content-type", media_type)],
                &Payload::Bytes(bytes),
            )
            .await?;
        ok(resp, &self.url(&path)).await.map(|_| ())
    }
}

/// Success, or the registry's error text.
async fn ok(resp: reqwest::Response, url: &str) -> Result<reqwest::Response> {
    if resp.status().is_success() {
        return Ok(resp);
    }
    let status = resp.status();
    let body = read_capped(resp, ERROR_BODY_LIMIT as u64, "an error answer")
        .await
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let msg: String = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| {
            v["errors"].as_array().map(|e| {
                e.iter()
                    .filter_map(|x| x["message"].as_str())
                    .collect::<Vec<_>>()
                    .join("; ")
            })
        })
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| body.chars().take(200).collect());
    Err(RegistryError::Http {
        url: crate::redact::url_str(url),
        detail: format!("HTTP {status}: {msg}"),
    })
}

mod lookup;
mod referrers;

impl crate::hint::Hint for RegistryError {
    fn hint(&self) -> Option<String> {
        RegistryError::hint(self).map(str::to_owned)
    }
}

#[cfg(test)]
mod fuzz_tests;

#[cfg(test)]
mod origin_tests;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_go_only_to_the_registry_origin() {
        let image = ImageRef::parse("127.0.0.1:5000/models/app").unwrap();
        let r = Registry::new(&image, true).unwrap();
        r.tokens
            .lock()
            .unwrap()
            .insert("s".into(), "Bearer secret".into());
        assert_eq!(
            r.auth_for("http://127.0.0.1:5000/v2/models/app/blobs/uploads/1", "s")
                .as_deref(),
            Some("Bearer secret")
        );
        for elsewhere in [
            "http://127.0.0.2:5000/v2/models/app/blobs/uploads/1",
            "http://127.0.0.1:5001/upload",
            "https://127.0.0.1:5000/v2/",
            "not a url",
        ] {
            assert_eq!(r.auth_for(elsewhere, "s"), None, "{elsewhere}");
        }
    }

    #[test]
    fn challenges() {
        let (s, p) = parse_challenge(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull""#,
        );
        assert_eq!(s, "bearer");
        assert_eq!(p["realm"], "https://auth.docker.io/token");
        assert_eq!(p["scope"], "repository:library/busybox:pull");
        let (s, p) = parse_challenge(r#"Basic realm="Registry Realm""#);
        assert_eq!(
            (s.as_str(), p["realm"].as_str()),
            ("basic", "Registry Realm")
        );
    }

    /// Found by fuzzing: an escaped quote cut the value (and turned its tail into a bogus
    /// parameter), and a token value kept the space before the next comma.
    #[test]
    fn challenge_values_are_unescaped_and_trimmed() {
        let (_, p) = parse_challenge(r#"Bearer realm="\\",scope="a\"b,c", service=svc , error=x"#);
        assert_eq!(p["realm"], "\\");
        assert_eq!(p["scope"], "a\"b,c");
        assert_eq!(p["service"], "svc");
        assert_eq!(p["error"], "x");
        assert_eq!(p.len(), 4, "{p:?}");
    }
}
