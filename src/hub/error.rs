//! Typed Hub failures, each phrased as what happened and what to do next.

use std::time::Duration;

use crate::repo::RepoKey;

/// The repo a request was about, carried into errors so messages name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoCtx {
    /// Which repo (messages name it as `model `acme/tiny``).
    pub key: RepoKey,
    /// The repo's web page on the endpoint (where access to gated repos is requested).
    pub page: String,
}

impl std::fmt::Display for RepoCtx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.key.fmt(f)
    }
}

/// Everything that can go wrong talking to the Hub.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    /// The repo does not exist, or is private and we sent no (or an insufficient) token.
    #[error("{repo} was not found on {endpoint}: {}", if *.authenticated {
        "check the id, whether it is a [[model]], [[dataset]] or [[space]] in the manifest, and that your token can read it"
    } else {
        "check the id and whether it is a [[model]], [[dataset]] or [[space]] in the manifest; if it is private, set HF_TOKEN to a token that can read it"
    })]
    RepoNotFound {
        /// Which repo.
        repo: RepoCtx,
        /// The Hub endpoint asked.
        endpoint: String,
        /// Whether a token was sent.
        authenticated: bool,
    },
    /// A gated repo asked for a token and none was sent (HTTP 401).
    #[error("{repo} is gated and needs a token: set HF_TOKEN (or HF_TOKEN_PATH, or log in so that $HF_HOME/token exists) to a token of an account that was granted access at {}", .repo.page)]
    AuthRequired {
        /// Which repo.
        repo: RepoCtx,
    },
    /// A gated repo refused our token (HTTP 403).
    #[error("{repo} is gated and the token from {token_source} has not been granted access: request access at {}, then run again", .repo.page)]
    AccessNotGranted {
        /// Which repo.
        repo: RepoCtx,
        /// Where the token came from.
        token_source: String,
    },
    /// The Hub rejected the token itself.
    #[error(
        "{endpoint} rejected the token from {token_source} (invalid credentials): replace it, or unset it to read public repos anonymously"
    )]
    InvalidToken {
        /// The Hub endpoint asked.
        endpoint: String,
        /// Where the token came from.
        token_source: String,
    },
    /// The branch, tag or commit does not exist in the repo.
    #[error(
        "revision `{revision}` was not found in {repo}: check the branch, tag or commit in the manifest (pull requests are `refs/pr/N`)"
    )]
    RevisionNotFound {
        /// Which repo.
        repo: RepoCtx,
        /// The revision asked for.
        revision: String,
    },
    /// The file does not exist at that revision.
    #[error("file `{path}` was not found in {repo} at `{revision}`: it may have been renamed or deleted; run `modelbake lock --update {}` to re-list the repo", .repo.key.id)]
    EntryNotFound {
        /// Which repo.
        repo: RepoCtx,
        /// The revision asked for.
        revision: String,
        /// The path asked for.
        path: String,
    },
    /// Rate limited for longer than we are willing to wait.
    #[error("{url}: rate limited by the Hub, which asks to wait {}s; try again later (a token raises the limits)", .wait.as_secs())]
    RateLimited {
        /// The URL that was refused.
        url: String,
        /// How long the server asked us to wait.
        wait: Duration,
    },
    /// Retries were used up on a transient failure (5xx, 429, dropped connections).
    #[error(
        "{what}: gave up after {attempts} attempts; last error: {last}. The Hub may be down or overloaded: try again later"
    )]
    GaveUp {
        /// What we were doing.
        what: String,
        /// How many attempts were made.
        attempts: u32,
        /// The last failure.
        last: String,
    },
    /// Any other HTTP error status.
    #[error("{url} answered HTTP {status}{}", if .message.is_empty() { String::new() } else { format!(": {}", .message) })]
    Http {
        /// The URL asked.
        url: String,
        /// The status code.
        status: u16,
        /// The server's error message, if any.
        message: String,
    },
    /// A failure that trying again cannot fix: a TLS handshake with a server that speaks plain
    /// HTTP or has a bad certificate, an answer that is not HTTP, a redirect to a scheme other
    /// than http(s).
    #[error("{url}: {detail}")]
    Permanent {
        /// The URL asked (credentials removed).
        url: String,
        /// What is wrong and what to do.
        detail: String,
    },
    /// An answer too large to keep in memory (or a dropped connection while reading it).
    #[error(transparent)]
    Body(#[from] crate::http_body::BodyError),
    /// The server answered something we cannot use.
    #[error("{url}: unexpected answer from the Hub: {detail}")]
    InvalidResponse {
        /// The URL asked.
        url: String,
        /// What was wrong with it.
        detail: String,
    },
    /// The endpoint (`--endpoint`, `HF_ENDPOINT`) is not a usable base URL.
    #[error(transparent)]
    Endpoint(#[from] crate::hub::config::EndpointError),
    /// A retry override (`MODELBAKE_HTTP_RETRIES`, `MODELBAKE_HTTP_BACKOFF_MS`) is not a number.
    #[error(transparent)]
    RetryEnv(#[from] crate::retry::RetryEnvError),
    /// The HTTP client could not be set up (certificate files, proxies).
    #[error(transparent)]
    Client(#[from] crate::http_client::ClientError),
    /// Local configuration problem (a URL that cannot be built).
    #[error("{0}")]
    Config(String),
}

/// How to give modelbake a Hub token, in the places it reads one from (huggingface_hub's).
const SET_A_TOKEN: &str = "create a read token (on huggingface.co: https://huggingface.co/settings/tokens) with an account that can read the repo, then `export HF_TOKEN=hf_...`, or run `hf auth login` (`huggingface-cli login` in older versions), which writes $HF_HOME/token where modelbake finds it";

/// What to do about each Hub failure, beyond what its message says.
impl crate::hint::Hint for HubError {
    fn hint(&self) -> Option<String> {
        let hint = match self {
            HubError::RepoNotFound {
                authenticated: false,
                ..
            } => SET_A_TOKEN.to_owned(),
            HubError::RepoNotFound { repo, .. } => format!(
                "open {} while logged in as the token's account: if the page shows the repo, the token cannot read it (a fine-grained token must list the repo, or grant read access to public gated repos)",
                repo.page
            ),
            HubError::AuthRequired { .. } => SET_A_TOKEN.to_owned(),
            HubError::AccessNotGranted { repo, .. } => format!(
                "access is granted per account: open {} logged in as the account the token belongs to and accept the conditions there; some repos wait for the authors to approve each request",
                repo.page
            ),
            HubError::InvalidToken { .. } => format!(
                "the token may have been revoked, expired or mistyped; {SET_A_TOKEN}"
            ),
            HubError::RevisionNotFound { repo, .. } => format!(
                "{} lists the repo's branches and tags (its branch menu); pin a 40-hex commit to lock a revision that can neither move nor vanish",
                repo.page
            ),
            HubError::RateLimited { .. } => {
                "requests with a token get higher limits: set HF_TOKEN; fewer parallel requests (`-j 2` on `lock` and `fetch`) also spread them out".to_owned()
            }
            HubError::GaveUp { .. } => {
                "on a flaky network, retry longer: MODELBAKE_HTTP_RETRIES (default 5) and MODELBAKE_HTTP_BACKOFF_MS (default 500); behind a proxy, check HTTPS_PROXY; the Hub's status is at https://status.huggingface.co".to_owned()
            }
            HubError::Http { status: 407, .. } => {
                "the proxy wants credentials: put them in the proxy URL (HTTPS_PROXY=http://user:password@proxy:port)".to_owned()
            }
            HubError::Permanent { .. } => {
                "check the endpoint (--endpoint, HF_ENDPOINT) and its scheme; for certificate problems, the trusted CAs come from the system store, SSL_CERT_FILE and SSL_CERT_DIR (see docs/tls-and-proxies.md)".to_owned()
            }
            HubError::InvalidResponse { .. } => {
                "check that --endpoint / HF_ENDPOINT names the Hub or a Hub-compatible mirror such as `modelbake serve`, and that no proxy answers in its place (a captive portal, a login page)".to_owned()
            }
            HubError::Body(crate::http_body::BodyError::TooLarge { .. }) => {
                "check that --endpoint / HF_ENDPOINT names the Hub or a Hub-compatible mirror".to_owned()
            }
            HubError::Endpoint(e) => return e.hint(),
            HubError::RetryEnv(e) => return e.hint(),
            HubError::Client(_) => {
                "the trusted CAs come from the system store, SSL_CERT_FILE and SSL_CERT_DIR, proxies from HTTPS_PROXY and NO_PROXY (see docs/tls-and-proxies.md)".to_owned()
            }
            HubError::EntryNotFound { .. }
            | HubError::Http { .. }
            | HubError::Body(_)
            | HubError::Config(_) => return None,
        };
        Some(hint)
    }
}

/// What a well-formed endpoint looks like.
impl crate::hint::Hint for crate::hub::config::EndpointError {
    fn hint(&self) -> Option<String> {
        Some(
            "--endpoint and HF_ENDPOINT take the base URL of the Hub or of a mirror, e.g. https://huggingface.co, https://hf-mirror.example/hub or http://127.0.0.1:8080 for `modelbake serve`; unset HF_ENDPOINT for the public Hub"
                .to_owned(),
        )
    }
}

/// What a retry override may be set to.
impl crate::hint::Hint for crate::retry::RetryEnvError {
    fn hint(&self) -> Option<String> {
        let default = crate::retry::RetryPolicy::default();
        Some(format!(
            "set {} to a whole number, or unset it for the default (MODELBAKE_HTTP_RETRIES={}, MODELBAKE_HTTP_BACKOFF_MS={})",
            self.var,
            default.max_retries,
            default.base.as_millis()
        ))
    }
}
