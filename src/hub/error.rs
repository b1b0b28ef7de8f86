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
