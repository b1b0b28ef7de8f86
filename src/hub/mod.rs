//! The Hub HTTP API client: revision info, recursive tree listing with `Link` pagination, and
//! hashing of regular files; with retries, typed errors, and a token that only ever reaches
//! the endpoint's own origin (redirects are followed here, not by the HTTP library, so the
//! rule is enforced in one place and tested).

pub mod api;
pub mod config;
pub mod error;
pub mod urls;

use std::collections::HashSet;
use std::future::Future;
use std::time::Duration;

use reqwest::header::{HeaderMap, LOCATION};
use tracing::debug;
use url::Url;

pub use crate::retry::RetryPolicy;
pub use api::TreeEntry;
pub use config::{Endpoint, Token};
pub use error::{HubError, RepoCtx};

use crate::hash::{ContentHasher, Digests};
use crate::http_body::{HUB_MAX_FILES, METADATA_LIMIT, REVISION_INFO_LIMIT, read_capped};
use crate::repo::{RepoId, RepoKey, RepoKind, is_commit_hash};
use crate::retry::{self, is_tls_error};
use crate::ui::clean;

/// How many redirects one request may follow (huggingface_hub allows 20; real chains are 1–2).
const MAX_REDIRECTS: usize = 10;
/// Guard against a server that paginates forever: 2 000 pages are 2 million files at the
/// Hub's 1 000 per page, twice the entry cap below (the Hub recommends under 100 000 files per
/// repo), so only a misbehaving server ever reaches it.
const MAX_TREE_PAGES: usize = 2_000;
/// Guard against pages stuffed with tiny entries: a listing longer than this is refused
/// before it fills the memory (each entry costs a few hundred bytes).
const MAX_TREE_ENTRIES: usize = 10 * HUB_MAX_FILES as usize;
/// How much of an error answer is read for its message; the rest is never downloaded.
const ERROR_BODY_LIMIT: usize = 64 << 10;

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
        let env = crate::env::process_env;
        Ok(HubConfig {
            endpoint: Endpoint::choose(endpoint_flag, &env)?,
            token: config::discover_token(&env),
            retry: RetryPolicy::try_from_env(&env)?,
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
        let http = crate::http_client::client(|b| {
            b.redirect(reqwest::redirect::Policy::none())
                .connect_timeout(Duration::from_secs(10))
                .read_timeout(Duration::from_secs(60))
        })?;
        Ok(HubClient { http, config })
    }

    /// A client for a mirror: same connection pool, the mirror's origin as its endpoint (so
    /// `token`, a mirror credential, goes only there, never the Hub token) and at most one
    /// retry, since the next source is a better bet than waiting.
    pub fn for_mirror(&self, url: &Url, token: Option<Token>) -> Result<HubClient, HubError> {
        let endpoint = Endpoint::parse(&url.origin().ascii_serialization())?;
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
            .with_retries(&what, || {
                self.get_json(&url, &ctx, "revision info", REVISION_INFO_LIMIT)
            })
            .await?;
        match info.sha {
            Some(sha) if is_commit_hash(&sha) => Ok(sha),
            other => Err(HubError::InvalidResponse {
                url: shown(&url),
                detail: clean(&format!("`sha` is {other:?}, expected a 40-hex commit")),
            }),
        }
    }

    /// Lists every file of the repo at `commit` (folders are left out), recursively, following `Link` pagination
    /// within a budget: at most [`MAX_TREE_PAGES`] pages and [`MAX_TREE_ENTRIES`] entries, no
    /// page read twice, and no page on another origin than the endpoint (where the token may
    /// not go, and which the Hub never points to).
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
            crate::ui::short(commit)
        );
        let mut entries = Vec::new();
        let mut listed = 0;
        let mut visited = HashSet::from([url.clone()]);
        for _ in 0..MAX_TREE_PAGES {
            let (page, headers): (Vec<TreeEntry>, HeaderMap) = self
                .with_retries(&what, || {
                    self.get_json(&url, &ctx, "a tree page", METADATA_LIMIT)
                })
                .await?;
            listed += page.len();
            // Folders are never locked: only files are kept.
            entries.extend(page.into_iter().filter(TreeEntry::is_file));
            if listed > MAX_TREE_ENTRIES {
                return Err(self.endless_listing(
                    &url,
                    format!("it lists more than {MAX_TREE_ENTRIES} entries"),
                ));
            }
            let next = headers
                .get("link")
                .and_then(|v| v.to_str().ok())
                .and_then(api::next_link);
            let Some(next) = next else {
                entries.shrink_to_fit();
                return Ok(entries);
            };
            url = self.next_page(&url, &next, &mut visited)?;
        }
        Err(self.endless_listing(
            &url,
            format!(
                "it has more than {MAX_TREE_PAGES} pages (10 million files at the Hub's 1 000 per page)"
            ),
        ))
    }

    /// The page a `Link: rel="next"` points to, refused when it leaves the endpoint's origin
    /// or comes back to a page already read.
    fn next_page(
        &self,
        current: &Url,
        next: &str,
        visited: &mut HashSet<Url>,
    ) -> Result<Url, HubError> {
        let invalid = |detail: String| HubError::InvalidResponse {
            url: shown(current),
            detail,
        };
        let url = current.join(next).map_err(|e| {
            invalid(format!(
                "bad `Link` next URL `{}`: {e}",
                clean(&crate::redact::text(next))
            ))
        })?;
        if !self.config.endpoint.same_origin(&url) {
            return Err(invalid(format!(
                "the `Link` header points the next page to {}, another origin than the endpoint {}; \
                 refusing to follow it (the Hub paginates on its own host, and the token must not \
                 leave it)",
                shown(&url),
                self.config.endpoint
            )));
        }
        if !visited.insert(url.clone()) {
            return Err(self.endless_listing(
                current,
                format!(
                    "its `Link` header points back to {}, a page already read",
                    shown(&url)
                ),
            ));
        }
        Ok(url)
    }

    /// The error for a tree listing that would never end.
    fn endless_listing(&self, url: &Url, why: String) -> HubError {
        HubError::InvalidResponse {
            url: shown(url),
            detail: format!(
                "the tree listing never ends: {why}; the server is misbehaving (check the endpoint {})",
                self.config.endpoint
            ),
        }
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
            let mut received = 0u64;
            loop {
                match resp.chunk().await {
                    Ok(Some(chunk)) => {
                        received += chunk.len() as u64;
                        if received > size {
                            // Longer than listed: wrong whatever follows, so stop reading.
                            return Attempt::Fail(HubError::InvalidResponse {
                                url: shown(&url),
                                detail: format!(
                                    "`{path}` is longer than the {size} bytes the listing gives; the server may be serving another commit"
                                ),
                            });
                        }
                        hasher.update(&chunk);
                    }
                    Ok(None) => return Attempt::Done(hasher.finish()),
                    Err(e) => {
                        return Attempt::Retry {
                            reason: format!(
                                "connection lost while reading {}: {}",
                                shown(&url),
                                crate::redact::error_chain(&e)
                            ),
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
                key: RepoKey::new(kind, id.clone()),
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

    /// A URL on this client's endpoint.
    pub fn endpoint_url(&self, path_and_query: &str) -> Result<Url, HubError> {
        self.url(path_and_query)
    }

    /// The request context of a repo-level request (no file), for error messages.
    pub fn repo_ctx(&self, kind: RepoKind, id: &RepoId, revision: &str) -> RequestCtx {
        self.ctx(kind, id, revision, None)
    }

    /// GETs a JSON document (with `range` as its `Range` header when given), reading at most
    /// `limit` bytes of it, retrying transient failures within the retry policy; `what` names
    /// it in errors. The token goes only to the endpoint's origin, as for every request.
    pub async fn fetch_json<T: serde::de::DeserializeOwned>(
        &self,
        url: &Url,
        range: Option<&str>,
        ctx: &RequestCtx,
        what: &'static str,
        limit: u64,
    ) -> Result<T, HubError> {
        let label = format!("fetching {what}");
        self.with_retries(&label, || async {
            let resp = match self.get_with_range(url, range, ctx).await {
                Attempt::Done(r) => r,
                Attempt::Retry { reason, wait } => return Attempt::Retry { reason, wait },
                Attempt::Fail(e) => return Attempt::Fail(e),
            };
            json_body(resp, limit, what).await
        })
        .await
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
            debug!(url = %shown(&url), "HEAD");
            let resp = match req.send().await {
                Ok(r) => r,
                Err(e) => return send_failure(&url, &e),
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
            url: shown(start),
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
                "cannot build a URL from {}{}: {e}",
                self.config.endpoint,
                clean(path_and_query)
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

    /// One GET with JSON decoding of the answer, which is read into memory only up to `limit`
    /// ([`METADATA_LIMIT`] for a tree page, [`REVISION_INFO_LIMIT`] for revision info, which
    /// names every file; `what` names it in the error): an endless or oversized answer ends
    /// with an error naming the URL and the limit, and is not retried.
    async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        url: &Url,
        ctx: &RequestCtx,
        what: &'static str,
        limit: u64,
    ) -> Attempt<(T, HeaderMap)> {
        let resp = match self.get(url, ctx).await {
            Attempt::Done(r) => r,
            Attempt::Retry { reason, wait } => return Attempt::Retry { reason, wait },
            Attempt::Fail(e) => return Attempt::Fail(e),
        };
        let headers = resp.headers().clone();
        match json_body(resp, limit, what).await {
            Attempt::Done(v) => Attempt::Done((v, headers)),
            Attempt::Retry { reason, wait } => Attempt::Retry { reason, wait },
            Attempt::Fail(e) => Attempt::Fail(e),
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
            debug!(url = %shown(&url), "GET");
            let resp = match req.send().await {
                Ok(r) => r,
                Err(e) => return send_failure(&url, &e),
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
            url: shown(start),
            detail: format!("more than {MAX_REDIRECTS} redirects"),
        })
    }

    /// Turns an error response into a retry or a typed, actionable error.
    async fn classify_error<T>(&self, resp: reqwest::Response, ctx: &RequestCtx) -> Attempt<T> {
        let status = resp.status().as_u16();
        let url = shown(resp.url());
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
        let body = error_body(resp, ERROR_BODY_LIMIT).await;
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
                let mut message = clean(&error_message(&body).unwrap_or(x_message));
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

/// Where a redirect points, resolved against the current URL. Only http and https targets
/// are followed; any other scheme is an error that no retry can fix.
fn redirect_target(url: &Url, resp: &reqwest::Response) -> Result<Url, HubError> {
    let Some(location) = resp.headers().get(LOCATION).and_then(|v| v.to_str().ok()) else {
        return Err(HubError::InvalidResponse {
            url: shown(url),
            detail: format!("HTTP {} without a Location header", resp.status()),
        });
    };
    let next = url.join(location).map_err(|e| HubError::InvalidResponse {
        url: shown(url),
        detail: format!(
            "bad redirect target `{}`: {e}",
            clean(&crate::redact::text(location))
        ),
    })?;
    if !matches!(next.scheme(), "http" | "https") {
        return Err(HubError::Permanent {
            url: shown(url),
            detail: format!(
                "the server redirects to {}, an unsupported `{}:` URL; modelbake follows only http and https redirects (check the endpoint)",
                shown(&next),
                next.scheme()
            ),
        });
    }
    Ok(next)
}

/// The first `limit` bytes of an error answer, as text: plenty for any message, and an endless
/// or huge error body costs no more than that (the rest is never read).
async fn error_body(mut resp: reqwest::Response, limit: usize) -> String {
    let mut out = Vec::new();
    while out.len() < limit {
        match resp.chunk().await {
            Ok(Some(chunk)) => out.extend_from_slice(&chunk[..chunk.len().min(limit - out.len())]),
            Ok(None) | Err(_) => break,
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// What a request that got no answer means. Most transport failures (refused, reset, timed
/// out) are worth a retry; a TLS handshake that fails, an answer that is not HTTP, or a URL
/// the client cannot send fail the same way every time, so they end at once, saying what is
/// wrong.
fn send_failure<T>(url: &Url, e: &reqwest::Error) -> Attempt<T> {
    let detail = crate::redact::error_chain(e);
    let permanent = |detail: String| {
        Attempt::Fail(HubError::Permanent {
            url: shown(url),
            detail,
        })
    };
    if e.is_builder() {
        return permanent(format!("cannot send this request: {detail}"));
    }
    let mut causes = std::iter::successors(Some(e as &(dyn std::error::Error + 'static)), |c| {
        c.source()
    });
    let tls = causes.clone().any(is_tls_error);
    if url.scheme() == "https" && e.is_connect() && tls {
        if detail.contains("InvalidContentType") {
            let host = url.host_str().unwrap_or_default();
            let port = url.port_or_known_default().unwrap_or(443);
            return permanent(format!(
                "the server answered the TLS handshake in plain HTTP: it speaks plain HTTP, not https; use http://{host}:{port} if that is intended ({detail})"
            ));
        }
        if crate::tls_error::is_certificate_problem(e) {
            // `detail` already says which host, what is wrong and what to do.
            return permanent(detail);
        }
        return permanent(format!(
            "the TLS handshake failed: {detail}; check the endpoint and that the server's certificate is valid for this host"
        ));
    }
    if causes.any(|c| {
        c.downcast_ref::<hyper::Error>()
            .is_some_and(hyper::Error::is_parse)
    }) {
        let hint = if url.scheme() == "http" {
            " (if it speaks TLS, use https://)"
        } else {
            ""
        };
        return permanent(format!("the server's answer is not HTTP{hint}: {detail}"));
    }
    Attempt::Retry {
        reason: format!("{}: {detail}", shown(url)),
        wait: None,
    }
}

/// The JSON document `resp` carries, read up to `limit` bytes (`what` names it in errors): a
/// body cut short is retried, an oversized one or one that is not JSON fails.
async fn json_body<T: serde::de::DeserializeOwned>(
    resp: reqwest::Response,
    limit: u64,
    what: &'static str,
) -> Attempt<T> {
    let final_url = shown(resp.url());
    let body = match read_capped(resp, limit, what).await {
        Ok(b) => b,
        Err(e) if e.is_transient() => {
            return Attempt::Retry {
                reason: e.to_string(),
                wait: None,
            };
        }
        Err(e) => return Attempt::Fail(HubError::Body(e)),
    };
    match serde_json::from_slice(&body) {
        Ok(v) => Attempt::Done(v),
        Err(e) => Attempt::Fail(HubError::InvalidResponse {
            url: final_url,
            detail: clean(&format!("invalid JSON: {e}")),
        }),
    }
}

/// A URL as messages and logs show it: without any `user:password@`, query values as `***`
/// (a signed CDN URL's query is a bearer credential; see [`crate::redact`]).
pub(crate) fn shown(url: &Url) -> String {
    crate::redact::url_str(url.as_str())
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
