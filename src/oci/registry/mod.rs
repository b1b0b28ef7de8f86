//! A client for the OCI distribution API: manifests, blob existence, cross-repository mounts,
//! uploads (monolithic or chunked and resumable, [`upload`]) and streamed copies between
//! registries. Every request is retried on transient failures ([`request`]). Authentication
//! as Docker and skopeo do it: credentials from the Docker config file (`auths`, basic), then
//! the registry's challenge decides (bearer token from its realm, or basic); a token that
//! expires mid-push is renewed on the 401 and the request repeated.

mod options;
mod request;
mod upload;

pub use options::RegistryOptions;
pub use request::Payload;
pub use upload::UploadStats;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;

use base64::Engine;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE};
use reqwest::{Method, StatusCode};
use url::Url;

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
        "{registry} asks for credentials: log in with `docker login {registry}` (modelbake reads ~/.docker/config.json or $DOCKER_CONFIG) or `skopeo login` with REGISTRY_AUTH_FILE"
    )]
    NeedsLogin {
        /// The registry.
        registry: String,
    },
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

type Result<T> = std::result::Result<T, RegistryError>;

/// One registry (host) with the credentials and tokens for it.
pub struct Registry {
    http: reqwest::Client,
    base: String,
    host: String,
    basic: Option<String>,
    tokens: Mutex<HashMap<String, String>>,
    retry: RetryPolicy,
    options: RegistryOptions,
}

/// Credentials for `registry` from `$DOCKER_CONFIG/config.json`, `~/.docker/config.json` or
/// `$REGISTRY_AUTH_FILE`, as a ready `Basic` header value.
pub fn docker_credentials(registry: &str, env: &dyn Fn(&str) -> Option<String>) -> Option<String> {
    let mut files = Vec::new();
    if let Some(f) = env("REGISTRY_AUTH_FILE") {
        files.push(PathBuf::from(f));
    }
    match (env("DOCKER_CONFIG"), env("HOME")) {
        (Some(d), _) => files.push(PathBuf::from(d).join("config.json")),
        (None, Some(h)) => files.push(PathBuf::from(h).join(".docker/config.json")),
        _ => {}
    }
    let keys: Vec<String> = if registry == "docker.io" {
        vec![
            "https://index.docker.io/v1/".into(),
            "docker.io".into(),
            "index.docker.io".into(),
            "registry-1.docker.io".into(),
        ]
    } else {
        vec![
            registry.to_owned(),
            format!("https://{registry}"),
            format!("http://{registry}"),
        ]
    };
    for file in files {
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else {
            continue;
        };
        for k in &keys {
            let entry = &v["auths"][k];
            if let Some(auth) = entry["auth"].as_str().filter(|a| !a.is_empty()) {
                return Some(format!("Basic {auth}"));
            }
            if let (Some(u), Some(p)) = (entry["username"].as_str(), entry["password"].as_str()) {
                return Some(format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
                ));
            }
        }
    }
    None
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
        let http = reqwest::Client::builder()
            .user_agent(concat!("modelbake/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(std::time::Duration::from_secs(15))
            .build()
            .map_err(|e| RegistryError::Http {
                url: image.api_host().into(),
                detail: e.to_string(),
            })?;
        let scheme = if insecure { "http" } else { "https" };
        let retry =
            RetryPolicy::from_env(&crate::env::process_env).map_err(RegistryError::Config)?;
        Ok(Registry {
            http,
            base: format!("{scheme}://{}", image.api_host()),
            host: image.registry.clone(),
            basic: docker_credentials(&image.registry, &crate::env::process_env),
            tokens: Mutex::new(HashMap::new()),
            options: RegistryOptions::for_host(&image.registry, None),
            retry,
        })
    }

    /// This client with the upload settings of `options` (from `[bake.registry."HOST"]`).
    pub fn with_options(mut self, options: RegistryOptions) -> Self {
        self.options = options;
        self
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
        let same_origin = match (Url::parse(url), Url::parse(&self.base)) {
            (Ok(a), Ok(b)) => a.origin() == b.origin(),
            _ => false,
        };
        if !same_origin {
            return None;
        }
        self.tokens.lock().ok().and_then(|t| t.get(scope).cloned())
    }

    /// The `Authorization` value that answers `challenge` for `scope`.
    async fn answer(&self, challenge: &str, scope: &str) -> Result<String> {
        let (scheme, params) = parse_challenge(challenge);
        match scheme.as_str() {
            "basic" => self.basic.clone().ok_or_else(|| RegistryError::NeedsLogin {
                registry: self.host.clone(),
            }),
            "bearer" => {
                let realm = params.get("realm").ok_or_else(|| RegistryError::Http {
                    url: self.base.clone(),
                    detail: format!("bearer challenge without realm: {challenge}"),
                })?;
                let mut url = Url::parse(realm).map_err(|e| RegistryError::Http {
                    url: realm.clone(),
                    detail: e.to_string(),
                })?;
                {
                    let mut q = url.query_pairs_mut();
                    if let Some(s) = params.get("service") {
                        q.append_pair("service", s);
                    }
                    for s in scope.split(' ').filter(|s| !s.is_empty()) {
                        q.append_pair("scope", s);
                    }
                }
                let resp = self
                    .retrying(url.as_str(), async || {
                        let mut req = self.http.get(url.clone());
                        if let Some(b) = &self.basic {
                            req = req.header(AUTHORIZATION, b);
                        }
                        request::sent(url.as_str(), req.send().await)
                    })
                    .await?;
                if resp.status() == StatusCode::UNAUTHORIZED
                    || resp.status() == StatusCode::FORBIDDEN
                {
                    return Err(RegistryError::NeedsLogin {
                        registry: self.host.clone(),
                    });
                }
                let body = read_capped(resp, TOKEN_LIMIT, "a token answer").await?;
                let v: serde_json::Value =
                    serde_json::from_slice(&body).map_err(|e| RegistryError::Http {
                        url: url.to_string(),
                        detail: format!("the token answer is not JSON: {e}"),
                    })?;
                let token = v["token"]
                    .as_str()
                    .or(v["access_token"].as_str())
                    .ok_or_else(|| RegistryError::Http {
                        url: url.to_string(),
                        detail: "no token in the answer".into(),
                    })?;
                Ok(format!("Bearer {token}"))
            }
            _ => Err(RegistryError::NeedsLogin {
                registry: self.host.clone(),
            }),
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
        let resp = self
            .send(
                Method::GET,
                &path,
                &scope,
                &[("accept", accept.as_str())],
                &Payload::Empty,
            )
            .await?;
        let resp = ok(resp, &self.url(&path)).await?;
        let media = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty());
        let bytes = read_capped(resp, limit, "a manifest").await?;
        Ok((bytes, media))
    }

    /// A blob's bytes (for configs and small JSON), at most `limit` of them.
    pub async fn blob_bytes(&self, repo: &str, digest: &Digest, limit: u64) -> Result<Vec<u8>> {
        let path = format!("/v2/{repo}/blobs/{digest}");
        let resp = ok(
            self.send(
                Method::GET,
                &path,
                &format!("repository:{repo}:pull"),
                &[],
                &Payload::Empty,
            )
            .await?,
            &self.url(&path),
        )
        .await?;
        Ok(read_capped(resp, limit, "an image config").await?)
    }

    /// A blob as a response to stream from.
    pub async fn blob_stream(&self, repo: &str, digest: &Digest) -> Result<reqwest::Response> {
        let path = format!("/v2/{repo}/blobs/{digest}");
        ok(
            self.send(
                Method::GET,
                &path,
                &format!("repository:{repo}:pull"),
                &[],
                &Payload::Empty,
            )
            .await?,
            &self.url(&path),
        )
        .await
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
        url: url.to_owned(),
        detail: format!("HTTP {status}: {msg}"),
    })
}

#[cfg(test)]
mod fuzz_tests;

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

    #[test]
    fn credentials_from_docker_config() {
        let dir = tempfile::tempdir().unwrap();
        let auth = base64::engine::general_purpose::STANDARD.encode("u:p");
        std::fs::write(dir.path().join("config.json"), format!(r#"{{"auths":{{"127.0.0.1:5000":{{"auth":"{auth}"}},"https://index.docker.io/v1/":{{"username":"a","password":"b"}}}}}}"#)).unwrap();
        let d = dir.path().to_str().unwrap().to_owned();
        let env = move |k: &str| (k == "DOCKER_CONFIG").then(|| d.clone());
        assert_eq!(
            docker_credentials("127.0.0.1:5000", &env),
            Some(format!("Basic {auth}"))
        );
        assert_eq!(
            docker_credentials("docker.io", &env),
            Some(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode("a:b")
            ))
        );
        assert_eq!(docker_credentials("other:1", &env), None);
    }
}
