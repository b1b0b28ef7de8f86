//! Where the Hub is and who we are to it: the endpoint (`--endpoint`, `HF_ENDPOINT`, default)
//! and the token (`HF_TOKEN`, `HF_TOKEN_PATH`, `$HF_HOME/token`), with huggingface_hub's
//! precedence so a machine set up for Python works unchanged.

use crate::env::{expand_home, hf_home};
use std::fmt;

use url::Url;

/// The public Hub.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// A validated Hub base URL (no trailing `/`; may carry a path prefix, as mirrors do).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    base: String,
    url: Url,
}

/// Why an endpoint was refused. Messages show the endpoint with any `user:password@` removed
/// (and control characters escaped); the error never holds the credentials.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndpointError {
    /// Not a URL at all.
    #[error(
        "endpoint `{endpoint}` is not a URL ({source}); expected e.g. `https://huggingface.co`"
    )]
    NotAUrl {
        /// The endpoint as messages show it.
        endpoint: String,
        /// Why the URL parser refused it.
        source: url::ParseError,
    },
    /// A scheme other than http or https.
    #[error("endpoint `{endpoint}` must use http:// or https://")]
    Scheme {
        /// The endpoint as messages show it.
        endpoint: String,
    },
    /// A query, a fragment or no host.
    #[error("endpoint `{endpoint}` must be a plain base URL (host and optional path, no query)")]
    NotABase {
        /// The endpoint as messages show it.
        endpoint: String,
    },
    /// The endpoint came from `HF_ENDPOINT` and is wrong.
    #[error("HF_ENDPOINT: {0}")]
    FromEnv(#[source] Box<EndpointError>),
}

impl Endpoint {
    /// Validates an endpoint: an absolute `http`/`https` URL without query or fragment.
    /// Messages show it with any `user:password@` removed.
    pub fn parse(raw: &str) -> Result<Self, EndpointError> {
        let base = raw.trim().trim_end_matches('/').to_owned();
        let shown = || crate::ui::clean(&crate::redact::url_str(raw));
        let url = Url::parse(&base).map_err(|source| EndpointError::NotAUrl {
            endpoint: shown(),
            source,
        })?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(EndpointError::Scheme { endpoint: shown() });
        }
        if url.query().is_some() || url.fragment().is_some() || url.host().is_none() {
            return Err(EndpointError::NotABase { endpoint: shown() });
        }
        Ok(Endpoint { base, url })
    }

    /// The endpoint chosen as huggingface_hub does: the flag, else `HF_ENDPOINT`, else the
    /// public Hub.
    pub fn choose(
        flag: Option<&str>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, EndpointError> {
        match flag {
            Some(f) => Endpoint::parse(f),
            None => match env("HF_ENDPOINT").filter(|v| !v.trim().is_empty()) {
                Some(v) => Endpoint::parse(&v).map_err(|e| EndpointError::FromEnv(Box::new(e))),
                None => Endpoint::parse(DEFAULT_ENDPOINT),
            },
        }
    }

    /// The base URL as a string, without trailing `/`, credentials included: for requests,
    /// never for messages (those use `Display`, which removes them).
    pub fn as_str(&self) -> &str {
        &self.base
    }

    /// `base + path` (path starting with `/`) as a URL; fails only for malformed paths.
    pub fn join(&self, path_and_query: &str) -> Result<Url, url::ParseError> {
        Url::parse(&format!("{}{}", self.base, path_and_query))
    }

    /// True when `url` has the endpoint's scheme, host and port: the only place the token may go.
    pub fn same_origin(&self, url: &Url) -> bool {
        url.origin() == self.url.origin()
    }
}

/// The endpoint as messages show it: any `user:password@` written into it is removed.
impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&crate::redact::url_str(&self.base))
    }
}

/// A Hub access token. Its `Debug` and `Display` never show the value.
#[derive(Clone, PartialEq, Eq)]
pub struct Token {
    value: String,
    /// Where the token came from (`HF_TOKEN`, a file path), for messages.
    pub source: String,
}

impl Token {
    /// A token with a description of where it came from.
    pub fn new(value: impl Into<String>, source: impl Into<String>) -> Self {
        Token {
            value: value.into(),
            source: source.into(),
        }
    }

    /// The secret itself; only the HTTP layer should call this.
    pub fn expose(&self) -> &str {
        &self.value
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Token(<redacted>, from {})", self.source)
    }
}

/// Finds the token: `HF_TOKEN`, then the legacy `HUGGING_FACE_HUB_TOKEN`, then the file named
/// by `HF_TOKEN_PATH`, then `$HF_HOME/token`. Whitespace around the value is removed; an
/// empty value counts as none.
pub fn discover_token(env: &dyn Fn(&str) -> Option<String>) -> Option<Token> {
    for var in ["HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"] {
        if let Some(v) = env(var) {
            let v = v.trim();
            if !v.is_empty() {
                return Some(Token::new(v, var));
            }
        }
    }
    let path = match env("HF_TOKEN_PATH").filter(|p| !p.is_empty()) {
        Some(p) => expand_home(&p, env),
        None => hf_home(env)?.join("token"),
    };
    let text = std::fs::read_to_string(&path).ok()?;
    let v = text.trim();
    (!v.is_empty()).then(|| Token::new(v, path.display().to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::env_of;

    #[test]
    fn endpoint_precedence() {
        let env = env_of(&[("HF_ENDPOINT", "http://mirror.local/hf/")]);
        assert_eq!(
            Endpoint::choose(Some("http://flag:1"), &env)
                .unwrap()
                .as_str(),
            "http://flag:1"
        );
        assert_eq!(
            Endpoint::choose(None, &env).unwrap().as_str(),
            "http://mirror.local/hf"
        );
        assert_eq!(
            Endpoint::choose(None, &env_of(&[])).unwrap().as_str(),
            DEFAULT_ENDPOINT
        );
        assert!(Endpoint::parse("ftp://x").is_err());
        assert!(Endpoint::parse("huggingface.co").is_err());
        let e = Endpoint::parse("http://127.0.0.1:8080/prefix").unwrap();
        assert_eq!(
            e.join("/api/models/a").unwrap().as_str(),
            "http://127.0.0.1:8080/prefix/api/models/a"
        );
        assert!(e.same_origin(&Url::parse("http://127.0.0.1:8080/other").unwrap()));
        assert!(!e.same_origin(&Url::parse("http://127.0.0.1:8081/prefix").unwrap()));
        assert!(!e.same_origin(&Url::parse("https://127.0.0.1:8080/prefix").unwrap()));
    }

    #[test]
    fn endpoint_credentials_stay_out_of_messages() {
        let e = Endpoint::parse("http://user:s3cret@127.0.0.1:8080/hf").unwrap();
        assert_eq!(e.to_string(), "http://***@127.0.0.1:8080/hf");
        assert!(
            e.join("/api").unwrap().as_str().contains("s3cret"),
            "requests keep them"
        );
        let err = Endpoint::parse("ftp://user:s3cret@host")
            .unwrap_err()
            .to_string();
        assert!(
            !err.contains("s3cret") && err.contains("ftp://***@host"),
            "{err}"
        );
    }

    #[test]
    fn token_precedence() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("hf");
        std::fs::create_dir_all(&home).unwrap();
        std::fs::write(home.join("token"), "  from-home\n").unwrap();
        let custom = dir.path().join("custom");
        std::fs::write(&custom, "from-path\n").unwrap();
        let home_s = home.to_str().unwrap();
        let custom_s = custom.to_str().unwrap();

        let t = discover_token(&env_of(&[
            ("HF_TOKEN", " env\n"),
            ("HF_TOKEN_PATH", custom_s),
            ("HF_HOME", home_s),
        ]))
        .unwrap();
        assert_eq!((t.expose(), t.source.as_str()), ("env", "HF_TOKEN"));
        let t =
            discover_token(&env_of(&[("HF_TOKEN_PATH", custom_s), ("HF_HOME", home_s)])).unwrap();
        assert_eq!(t.expose(), "from-path");
        let t = discover_token(&env_of(&[("HF_HOME", home_s)])).unwrap();
        assert_eq!(t.expose(), "from-home");
        let t = discover_token(&env_of(&[("HF_TOKEN", ""), ("HF_HOME", home_s)])).unwrap();
        assert_eq!(t.expose(), "from-home", "an empty HF_TOKEN counts as unset");
        assert!(discover_token(&env_of(&[("HF_HOME", dir.path().to_str().unwrap())])).is_none());
        assert!(
            !format!("{t:?}").contains("from-home"),
            "Debug must not leak the token"
        );
    }
}
