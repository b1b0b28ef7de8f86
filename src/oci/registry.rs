//! A client for the OCI distribution API: manifests, blob existence, cross-repository mounts,
//! monolithic uploads and streamed copies between registries. Authentication as Docker and
//! skopeo do it: credentials from the Docker config file (`auths`, basic), then the registry's
//! challenge decides (bearer token from its realm, or basic).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use base64::Engine;
use reqwest::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, LOCATION, WWW_AUTHENTICATE};
use reqwest::{Method, StatusCode};
use url::Url;

use super::digest::Digest;
use super::reference::ImageRef;
use super::{MEDIA_DOCKER_LIST, MEDIA_DOCKER_MANIFEST, MEDIA_INDEX, MEDIA_MANIFEST};
use crate::http_body::{BodyError, read_capped};

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

/// A body that can be sent again after an authentication round trip.
pub enum Payload<'a> {
    /// No body.
    Empty,
    /// Bytes in memory.
    Bytes(&'a [u8]),
    /// A file, streamed.
    File(&'a Path),
}

/// One registry (host) with the credentials and tokens for it.
pub struct Registry {
    http: reqwest::Client,
    base: String,
    host: String,
    basic: Option<String>,
    tokens: Mutex<HashMap<String, String>>,
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
        Ok(Registry {
            http,
            base: format!("{scheme}://{}", image.api_host()),
            host: image.registry.clone(),
            basic: docker_credentials(&image.registry, &crate::env::process_env),
            tokens: Mutex::new(HashMap::new()),
        })
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

    /// Sends a request, answering one authentication challenge if the registry makes one.
    async fn send(
        &self,
        method: Method,
        path: &str,
        scope: &str,
        headers: &[(&str, &str)],
        payload: &Payload<'_>,
    ) -> Result<reqwest::Response> {
        let url = self.url(path);
        for attempt in 0..2 {
            let mut req = self.http.request(method.clone(), &url);
            for (k, v) in headers {
                req = req.header(*k, *v);
            }
            if let Some(a) = self.auth_for(&url, scope) {
                req = req.header(AUTHORIZATION, a);
            }
            req = match payload {
                Payload::Empty => req,
                Payload::Bytes(b) => req.header(CONTENT_LENGTH, b.len()).body(b.to_vec()),
                Payload::File(p) => {
                    let file =
                        tokio::fs::File::open(p)
                            .await
                            .map_err(|source| RegistryError::File {
                                path: p.to_path_buf(),
                                source,
                            })?;
                    let len = file
                        .metadata()
                        .await
                        .map_err(|source| RegistryError::File {
                            path: p.to_path_buf(),
                            source,
                        })?
                        .len();
                    let stream = tokio_util_stream(file);
                    req.header(CONTENT_LENGTH, len)
                        .body(reqwest::Body::wrap_stream(stream))
                }
            };
            let resp = req.send().await.map_err(|e| RegistryError::Http {
                url: url.clone(),
                detail: crate::redact::error_chain(&e),
            })?;
            if resp.status() != StatusCode::UNAUTHORIZED || attempt == 1 {
                return Ok(resp);
            }
            let challenge = resp
                .headers()
                .get(WWW_AUTHENTICATE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned();
            let value = self.answer(&challenge, scope).await?;
            if let Ok(mut t) = self.tokens.lock() {
                t.insert(scope.to_owned(), value);
            }
        }
        Err(RegistryError::NeedsLogin {
            registry: self.host.clone(),
        })
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
                let mut req = self.http.get(url.clone());
                if let Some(b) = &self.basic {
                    req = req.header(AUTHORIZATION, b);
                }
                let resp = req.send().await.map_err(|e| RegistryError::Http {
                    url: url.to_string(),
                    detail: crate::redact::error_chain(&e),
                })?;
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

    /// Asks the registry to mount `digest` from `from` into `repo` (same registry, no bytes
    /// moved). True when it did.
    pub async fn mount(&self, repo: &str, digest: &Digest, from: &str) -> Result<bool> {
        let path = format!("/v2/{repo}/blobs/uploads/?mount={digest}&from={from}");
        let scope = format!("repository:{repo}:pull,push repository:{from}:pull");
        let resp = self
            .send(Method::POST, &path, &scope, &[], &Payload::Bytes(&[]))
            .await?;
        Ok(resp.status() == StatusCode::CREATED)
    }

    /// Starts an upload session; returns the URL to PUT the blob to (digest appended).
    async fn start_upload(&self, repo: &str, scope: &str, digest: &Digest) -> Result<Url> {
        let start = self.url(&format!("/v2/{repo}/blobs/uploads/"));
        let resp = ok(
            self.send(Method::POST, &start, scope, &[], &Payload::Bytes(&[]))
                .await?,
            &start,
        )
        .await?;
        let location = resp
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| RegistryError::Http {
                url: start.clone(),
                detail: "upload started without a Location".into(),
            })?;
        let mut put = Url::parse(&start)
            .and_then(|base| base.join(location))
            .map_err(|e| RegistryError::Http {
                url: location.to_owned(),
                detail: e.to_string(),
            })?;
        put.query_pairs_mut().append_pair("digest", digest.as_str());
        Ok(put)
    }

    /// Uploads a blob in one PUT (monolithic upload).
    pub async fn upload(&self, repo: &str, digest: &Digest, payload: Payload<'_>) -> Result<()> {
        let scope = format!("repository:{repo}:pull,push");
        let put = self.start_upload(repo, &scope, digest).await?;
        let resp = self
            .send(
                Method::PUT,
                put.as_str(),
                &scope,
                &[("content-type", "application/octet-stream")],
                &payload,
            )
            .await?;
        ok(resp, put.as_str()).await.map(|_| ())
    }

    /// Uploads a blob from a stream without storing it (a copy from another registry, checked
    /// on the way by [`super::source::VerifyingStream`]).
    pub async fn upload_stream<S>(
        &self,
        repo: &str,
        digest: &Digest,
        size: u64,
        source: S,
    ) -> Result<()>
    where
        S: futures::Stream<Item = std::io::Result<bytes::Bytes>> + Send + Sync + 'static,
    {
        let scope = format!("repository:{repo}:pull,push");
        let put = self.start_upload(repo, &scope, digest).await?;
        // A stream cannot be sent twice, so no challenge round: the POST above got the token.
        let mut req = self
            .http
            .put(put.clone())
            .header(CONTENT_LENGTH, size)
            .header(CONTENT_TYPE, "application/octet-stream");
        if let Some(a) = self.auth_for(put.as_str(), &scope) {
            req = req.header(AUTHORIZATION, a);
        }
        let resp = req
            .body(reqwest::Body::wrap_stream(source))
            .send()
            .await
            .map_err(|e| RegistryError::Http {
                url: put.to_string(),
                detail: crate::redact::error_chain(&e),
            })?;
        ok(resp, put.as_str()).await.map(|_| ())
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

/// Reads a file as a stream of 1 MiB chunks.
fn tokio_util_stream(
    file: tokio::fs::File,
) -> impl futures::Stream<Item = std::io::Result<bytes::Bytes>> {
    futures::stream::unfold(file, |mut f| async move {
        use tokio::io::AsyncReadExt;
        let mut buf = vec![0u8; 1 << 20];
        match f.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(bytes::Bytes::from(buf)), f))
            }
            Err(e) => Some((Err(e), f)),
        }
    })
}

mod lookup;

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
