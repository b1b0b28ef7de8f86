//! The Hub HTTP API client: revision info, recursive tree listing with `Link` pagination, and
//! hashing of regular files; with retries, typed errors, and a token that only ever reaches
//! the endpoint's own origin (redirects are followed here, not by the HTTP library, so the
//! rule is enforced in one place and tested).

pub mod api;
pub mod config;
pub mod error;
pub mod retry;
pub mod urls;

use std::future::Future;
use std::time::Duration;

use reqwest::header::{HeaderMap, LOCATION};
use tracing::debug;
use url::Url;

pub use api::TreeEntry;
pub use config::{Endpoint, Token};
pub use error::{HubError, RepoCtx};
pub use retry::RetryPolicy;

use crate::hash::{ContentHasher, Digests};
use crate::repo::{RepoId, RepoKind, is_commit_hash};

/// How many redirects one request may follow (huggingface_hub allows 20; real chains are 1–2).
const MAX_REDIRECTS: usize = 10;
/// Guard against a server that paginates forever.
const MAX_TREE_PAGES: usize = 100_000;

/// Everything needed to talk to one Hub endpoint.
#[derive(Debug, Clone)]
pub struct HubConfig {
    /// Where the Hub is.
    pub endpoint: Endpoint,
    /// The token, if any; sent only to the endpoint's origin.
    pub token: Option<Token>,
    /// Retry behaviour for transient failures.
    pub retry: RetryPolicy,
}

impl HubConfig {
    /// Reads the configuration the way huggingface_hub does: `--endpoint` flag, `HF_ENDPOINT`,
    /// token variables and files, plus modelbake's retry overrides.
    pub fn from_env(endpoint_flag: Option<&str>) -> Result<Self, HubError> {
        let env = config::process_env;
        Ok(HubConfig {
            endpoint: Endpoint::choose(endpoint_flag, &env).map_err(HubError::Config)?,
            token: config::discover_token(&env),
            retry: RetryPolicy::from_env(&env).map_err(HubError::Config)?,
        })
    }
}

/// What one attempt of an HTTP operation led to; callers with their own resume logic (the
/// download engine) decide about retrying, everyone else goes through `with_retries`.
pub enum Attempt<T> {
    /// It worked.
    Done(T),
    /// A transient failure; `wait` is what the server asked for, if anything.
    Retry {
        /// What went wrong, for the final error if retries run out.
        reason: String,
        /// The server's requested wait.
        wait: Option<Duration>,
    },
    /// A permanent failure.
    Fail(HubError),
}

/// What a request is about, so errors can name the repo, revision and file.
#[derive(Debug, Clone)]
pub struct RequestCtx {
    /// The repo.
    pub repo: RepoCtx,
    /// The revision or commit asked for.
    pub revision: String,
    /// The file, for file requests.
    pub path: Option<String>,
}

/// A Hub API client for one endpoint. Cheap to clone.
#[derive(Debug, Clone)]
pub struct HubClient {
    http: reqwest::Client,
    config: HubConfig,
}

impl HubClient {
    /// Builds the client (rustls, no automatic redirects, connect and read timeouts).
    pub fn new(config: HubConfig) -> Result<Self, HubError> {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("modelbake/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| HubError::Config(format!("cannot set up the HTTP client: {e}")))?;
        Ok(HubClient { http, config })
    }

    /// A client for a mirror: same connection pool, the mirror's origin as its endpoint (so
    /// `token`, a mirror credential, goes only there, never the Hub token) and at most one
    /// retry, since the next source is a better bet than waiting.
    pub fn for_mirror(&self, url: &Url, token: Option<Token>) -> Result<HubClient, HubError> {
        let endpoint =
            Endpoint::parse(&url.origin().ascii_serialization()).map_err(HubError::Config)?;
        let mut retry = self.config.retry;
        retry.max_retries = retry.max_retries.min(1);
        Ok(HubClient {
            http: self.http.clone(),
            config: HubConfig {
                endpoint,
                token,
                retry,
            },
        })
    }

    /// The endpoint this client talks to.
    pub fn endpoint(&self) -> &Endpoint {
        &self.config.endpoint
    }

    /// Resolves a branch, tag, `refs/pr/N` or short commit to a full commit.
    pub async fn resolve_revision(
        &self,
        kind: RepoKind,
        id: &RepoId,
        revision: &str,
    ) -> Result<String, HubError> {
        let ctx = self.ctx(kind, id, revision, None);
        let url = self.url(&urls::revision_info(kind, id, revision))?;
        let what = format!("resolving `{revision}` of {}", ctx.repo);
        let (info, _): (api::RevisionInfo, _) = self
            .with_retries(&what, || self.get_json(&url, &ctx))
            .await?;
        match info.sha {
            Some(sha) if is_commit_hash(&sha) => Ok(sha),
            other => Err(HubError::InvalidResponse {
                url: url.to_string(),
                detail: format!("`sha` is {other:?}, expected a 40-hex commit"),
            }),
        }
    }

    /// Lists every entry of the repo at `commit`, recursively, following `Link` pagination.
    pub async fn list_tree(
        &self,
        kind: RepoKind,
        id: &RepoId,
        commit: &str,
    ) -> Result<Vec<TreeEntry>, HubError> {
        let ctx = self.ctx(kind, id, commit, None);
        let mut url = self.url(&urls::tree(kind, id, commit))?;
        let what = format!(
            "listing the files of {} at {}",
            ctx.repo,
            crate::lock::diff::short(commit)
        );
        let mut entries = Vec::new();
        for _ in 0..MAX_TREE_PAGES {
            let (page, headers): (Vec<TreeEntry>, HeaderMap) = self
                .with_retries(&what, || self.get_json(&url, &ctx))
                .await?;
            entries.extend(page);
            let next = headers
                .get("link")
                .and_then(|v| v.to_str().ok())
                .and_then(api::next_link);
            match next {
                Some(next) => {
                    url = url.join(&next).map_err(|e| HubError::InvalidResponse {
                        url: url.to_string(),
                        detail: format!("bad `Link` next URL `{next}`: {e}"),
                    })?;
                }
                None => return Ok(entries),
            }
        }
        Err(HubError::InvalidResponse {
            url: url.to_string(),
            detail: "the tree listing never ends".into(),
        })
    }

    /// Downloads `path` at `commit` and hashes it while streaming (sha256 and git blob sha1,
    /// for content announced as `size` bytes). Meant for regular files, which are small.
    pub async fn hash_file(
        &self,
        kind: RepoKind,
        id: &RepoId,
        commit: &str,
        path: &str,
        size: u64,
    ) -> Result<Digests, HubError> {
        let ctx = self.ctx(kind, id, commit, Some(path));
        let url = self.url(&urls::resolve(kind, id, commit, path))?;
        let what = format!("downloading `{path}` of {}", ctx.repo);
        self.with_retries(&what, || async {
            let mut resp = match self.get(&url, &ctx).await {
                Attempt::Done(r) => r,
                Attempt::Retry { reason, wait } => return Attempt::Retry { reason, wait },
                Attempt::Fail(e) => return Attempt::Fail(e),
            };
            let mut hasher = ContentHasher::with_git_blob(size);
            loop {
                match resp.chunk().await {
                    Ok(Some(chunk)) => hasher.update(&chunk),
                    Ok(None) => return Attempt::Done(hasher.finish()),
                    Err(e) => {
                        return Attempt::Retry {
                            reason: format!("connection lost while reading {url}: {e}"),
                            wait: None,
                        };
                    }
                }
            }
        })
        .await
    }

    fn ctx(&self, kind: RepoKind, id: &RepoId, revision: &str, path: Option<&str>) -> RequestCtx {
        RequestCtx {
            repo: RepoCtx {
                kind,
                id: id.clone(),
                page: format!("{}{}", self.config.endpoint, urls::page(kind, id)),
            },
            revision: revision.to_owned(),
            path: path.map(str::to_owned),
        }
    }

    /// The context for requests about one file of a repo at a commit.
    pub fn file_ctx(&self, kind: RepoKind, id: &RepoId, commit: &str, path: &str) -> RequestCtx {
        self.ctx(kind, id, commit, Some(path))
    }

    /// `/{prefix}{id}/resolve/{commit}/{path}` on this endpoint.
    pub fn resolve_url(
        &self,
        kind: RepoKind,
        id: &RepoId,
        commit: &str,
        path: &str,
    ) -> Result<Url, HubError> {
        self.url(&urls::resolve(kind, id, commit, path))
    }

    /// The retry policy, for callers that run their own retry loop.
    pub fn retry_policy(&self) -> RetryPolicy {
        self.config.retry
    }

    /// Finds where a file's bytes are served: follows same-origin redirects with HEAD requests
    /// (the Hub's 307 to `resolve-cache`) and stops at the first redirect to another origin
    /// (the LFS CDN), whose URL is returned without contacting it.
    pub async fn locate(&self, start: &Url, ctx: &RequestCtx) -> Attempt<Url> {
        let mut url = start.clone();
        for _ in 0..=MAX_REDIRECTS {
            let req = self.with_token(self.http.head(url.clone()), &url);
            debug!(url = %url, "HEAD");
            let resp = match req.send().await {
                Ok(r) => r,
                Err(e) => {
                    return Attempt::Retry {
                        reason: format!("{url}: {}", error_chain(&e)),
                        wait: None,
                    };
                }
            };
            if resp.status().is_success() {
                return Attempt::Done(url);
            }
            if !resp.status().is_redirection() {
                return self.classify_error(resp, ctx).await;
            }
            let next = match redirect_target(&url, &resp) {
                Ok(next) => next,
                Err(e) => return Attempt::Fail(e),
            };
            if !self.config.endpoint.same_origin(&next) {
                return Attempt::Done(next);
            }
            url = next;
        }
        Attempt::Fail(HubError::InvalidResponse {
            url: start.to_string(),
            detail: format!("more than {MAX_REDIRECTS} redirects"),
        })
    }

    /// Adds the token to a request for `url` when, and only when, `url` is on the endpoint's
    /// own origin (scheme, host and port): the one place that decides where the token goes.
    fn with_token(&self, req: reqwest::RequestBuilder, url: &Url) -> reqwest::RequestBuilder {
        match &self.config.token {
            Some(token) if self.config.endpoint.same_origin(url) => req.bearer_auth(token.expose()),
            _ => req,
        }
    }

    /// One GET of `url`, from byte `from` to the end when `from > 0` (a `Range` request),
    /// following redirects with the token only on the endpoint's origin.
    pub async fn get_from(
        &self,
        url: &Url,
        from: u64,
        ctx: &RequestCtx,
    ) -> Attempt<reqwest::Response> {
        let range = (from > 0).then(|| format!("bytes={from}-"));
        self.get_with_range(url, range.as_deref(), ctx).await
    }

    /// One GET of bytes `start..=end` of `url` (a `Range` request).
    pub async fn get_range(
        &self,
        url: &Url,
        start: u64,
        end: u64,
        ctx: &RequestCtx,
    ) -> Attempt<reqwest::Response> {
        self.get_with_range(url, Some(&format!("bytes={start}-{end}")), ctx)
            .await
    }

    fn url(&self, path_and_query: &str) -> Result<Url, HubError> {
        self.config.endpoint.join(path_and_query).map_err(|e| {
            HubError::Config(format!(
                "cannot build a URL from {}{path_and_query}: {e}",
                self.config.endpoint
            ))
        })
    }

    /// Runs `attempt` until it succeeds, fails for good, or the retry budget is spent.
    async fn with_retries<T, F, Fut>(&self, what: &str, mut attempt: F) -> Result<T, HubError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Attempt<T>>,
    {
        let policy = self.config.retry;
        let mut retries = 0;
        loop {
            match attempt().await {
                Attempt::Done(v) => return Ok(v),
                Attempt::Fail(e) => return Err(e),
                Attempt::Retry { reason, wait } => {
                    if retries >= policy.max_retries {
                        return Err(HubError::GaveUp {
                            what: what.to_owned(),
                            attempts: retries + 1,
                            last: reason,
                        });
                    }
                    let delay = wait.unwrap_or_else(|| policy.backoff(retries));
                    debug!(%reason, ?delay, retry = retries + 1, "{what}: retrying");
                    tokio::time::sleep(delay).await;
                    retries += 1;
                }
            }
        }
    }

    /// One GET with JSON decoding of the answer.
    async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        url: &Url,
        ctx: &RequestCtx,
    ) -> Attempt<(T, HeaderMap)> {
        let resp = match self.get(url, ctx).await {
            Attempt::Done(r) => r,
            Attempt::Retry { reason, wait } => return Attempt::Retry { reason, wait },
            Attempt::Fail(e) => return Attempt::Fail(e),
        };
        let final_url = resp.url().to_string();
        let headers = resp.headers().clone();
        let body = match resp.bytes().await {
            Ok(b) => b,
            Err(e) => {
                return Attempt::Retry {
                    reason: format!("connection lost while reading {final_url}: {e}"),
                    wait: None,
                };
            }
        };
        match serde_json::from_slice(&body) {
            Ok(v) => Attempt::Done((v, headers)),
            Err(e) => Attempt::Fail(HubError::InvalidResponse {
                url: final_url,
                detail: format!("invalid JSON: {e}"),
            }),
        }
    }

    /// One GET, following redirects by hand: the token goes only to the endpoint's origin, so
    /// a redirect to a CDN or any other host never carries it.
    async fn get(&self, start: &Url, ctx: &RequestCtx) -> Attempt<reqwest::Response> {
        self.get_with_range(start, None, ctx).await
    }

    async fn get_with_range(
        &self,
        start: &Url,
        range: Option<&str>,
        ctx: &RequestCtx,
    ) -> Attempt<reqwest::Response> {
        let mut url = start.clone();
        for _ in 0..=MAX_REDIRECTS {
            let mut req = self.with_token(self.http.get(url.clone()), &url);
            if let Some(range) = range {
                req = req.header(reqwest::header::RANGE, range);
            }
            debug!(url = %url, "GET");
            let resp = match req.send().await {
                Ok(r) => r,
                Err(e) => {
                    return Attempt::Retry {
                        reason: format!("{url}: {}", error_chain(&e)),
                        wait: None,
                    };
                }
            };
            let status = resp.status();
            if status.is_redirection() {
                url = match redirect_target(&url, &resp) {
                    Ok(next) => next,
                    Err(e) => return Attempt::Fail(e),
                };
                continue;
            }
            if status.is_success() {
                return Attempt::Done(resp);
            }
            return self.classify_error(resp, ctx).await;
        }
        Attempt::Fail(HubError::InvalidResponse {
            url: start.to_string(),
            detail: format!("more than {MAX_REDIRECTS} redirects"),
        })
    }

    /// Turns an error response into a retry or a typed, actionable error.
    async fn classify_error<T>(&self, resp: reqwest::Response, ctx: &RequestCtx) -> Attempt<T> {
        let status = resp.status().as_u16();
        let url = resp.url().to_string();
        let headers = resp.headers().clone();
        if retry::is_retryable_status(status) {
            let wait = retry::server_wait(&headers);
            if let Some(w) = wait
                && w > self.config.retry.max_server_wait
            {
                return Attempt::Fail(HubError::RateLimited { url, wait: w });
            }
            return Attempt::Retry {
                reason: format!("HTTP {status} from {url}"),
                wait,
            };
        }
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned()
        };
        let code = header("x-error-code");
        let x_message = header("x-error-message");
        let body = resp.text().await.unwrap_or_default();
        let token = self.config.token.as_ref();
        let repo = ctx.repo.clone();
        let endpoint = self.config.endpoint.to_string();
        let err = match code.as_str() {
            "RevisionNotFound" => HubError::RevisionNotFound {
                repo,
                revision: ctx.revision.clone(),
            },
            "EntryNotFound" => HubError::EntryNotFound {
                repo,
                revision: ctx.revision.clone(),
                path: ctx.path.clone().unwrap_or_default(),
            },
            "GatedRepo" => match token {
                Some(t) if status == 403 => HubError::AccessNotGranted {
                    repo,
                    token_source: t.source.clone(),
                },
                _ => HubError::AuthRequired { repo },
            },
            _ if x_message.contains("Invalid credentials") && token.is_some() => {
                HubError::InvalidToken {
                    endpoint,
                    token_source: token.map(|t| t.source.clone()).unwrap_or_default(),
                }
            }
            "RepoNotFound" => HubError::RepoNotFound {
                repo,
                endpoint,
                authenticated: token.is_some(),
            },
            _ if status == 401 && token.is_none() => HubError::RepoNotFound {
                repo,
                endpoint,
                authenticated: false,
            },
            _ => {
                let mut message = error_message(&body).unwrap_or(x_message);
                if status == 404 && code.is_empty() {
                    let hint = format!(
                        "no X-Error-Code header: is {endpoint} a Hugging Face Hub endpoint?"
                    );
                    message = if message.is_empty() {
                        hint
                    } else {
                        format!("{message} ({hint})")
                    };
                }
                HubError::Http {
                    url,
                    status,
                    message,
                }
            }
        };
        Attempt::Fail(err)
    }
}

/// Where a redirect points, resolved against the current URL.
fn redirect_target(url: &Url, resp: &reqwest::Response) -> Result<Url, HubError> {
    let Some(location) = resp.headers().get(LOCATION).and_then(|v| v.to_str().ok()) else {
        return Err(HubError::InvalidResponse {
            url: url.to_string(),
            detail: format!("HTTP {} without a Location header", resp.status()),
        });
    };
    url.join(location).map_err(|e| HubError::InvalidResponse {
        url: url.to_string(),
        detail: format!("bad redirect target `{location}`: {e}"),
    })
}

/// The Hub's error text from a JSON body: `{"error": "..."}`, `{"error": [...]}` or
/// `{"errors": [{"message": ...}]}`; shortened to keep messages readable.
fn error_message(body: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(body).ok()?;
    let text = match (&v["error"], &v["errors"]) {
        (serde_json::Value::String(s), _) => s.clone(),
        (serde_json::Value::Array(a), _) => a
            .iter()
            .filter_map(|x| x.as_str())
            .collect::<Vec<_>>()
            .join("; "),
        (_, serde_json::Value::Array(a)) => a
            .iter()
            .filter_map(|x| x["message"].as_str())
            .collect::<Vec<_>>()
            .join("; "),
        _ => return None,
    };
    Some(text.chars().take(300).collect())
}

/// An error and its causes on one line (reqwest hides the useful part in `source()`).
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cur = s.source();
    }
    out
}

#[cfg(test)]
mod fuzz_tests;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_bodies() {
        assert_eq!(
            error_message(r#"{"error":"Repository not found"}"#).as_deref(),
            Some("Repository not found")
        );
        assert_eq!(
            error_message(r#"{"error":["a","b"]}"#).as_deref(),
            Some("a; b")
        );
        assert_eq!(
            error_message(r#"{"errors":[{"message":"m"}]}"#).as_deref(),
            Some("m")
        );
        assert_eq!(error_message("<html>"), None);
    }
}
