//! When and how long to retry: bounded exponential backoff with jitter for transient failures
//! (408, 429, 5xx, dropped connections), and the server's own `Retry-After` / `RateLimit`
//! when it gives one. Shared by the Hub client and the registry client.

use std::time::{Duration, SystemTime};

use reqwest::header::HeaderMap;

/// Retry settings. The defaults match huggingface_hub's patience (5 retries, about 15 s in
/// all); `MODELBAKE_HTTP_RETRIES` and `MODELBAKE_HTTP_BACKOFF_MS` override them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    pub max_retries: u32,
    /// Delay before the first retry; doubles each time.
    pub base: Duration,
    /// Upper bound of one computed delay.
    pub max_delay: Duration,
    /// The longest server-requested wait we honour before giving up with a clear error.
    pub max_server_wait: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_retries: 5,
            base: Duration::from_millis(500),
            max_delay: Duration::from_secs(8),
            max_server_wait: Duration::from_secs(60),
        }
    }
}

/// A retry override in the environment is not a number: the run stops rather than guess.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{var}=`{value}` is not a number")]
pub struct RetryEnvError {
    /// The variable (`MODELBAKE_HTTP_RETRIES`, `MODELBAKE_HTTP_BACKOFF_MS`).
    pub var: &'static str,
    /// What it was set to.
    pub value: String,
}

impl RetryPolicy {
    /// The default policy with environment overrides applied.
    pub fn try_from_env(env: &dyn Fn(&str) -> Option<String>) -> Result<Self, RetryEnvError> {
        let mut p = RetryPolicy::default();
        if let Some(v) = env("MODELBAKE_HTTP_RETRIES") {
            p.max_retries = env_number("MODELBAKE_HTTP_RETRIES", v)?;
        }
        if let Some(v) = env("MODELBAKE_HTTP_BACKOFF_MS") {
            p.base = Duration::from_millis(env_number("MODELBAKE_HTTP_BACKOFF_MS", v)?);
        }
        Ok(p)
    }

    /// Backoff before retry number `retry` (0-based): `base * 2^retry`, capped, times a random
    /// factor in [0.5, 1) so that many clients do not retry in lockstep.
    pub fn backoff(&self, retry: u32) -> Duration {
        let exp = self.base.saturating_mul(1u32 << retry.min(16));
        exp.min(self.max_delay).mul_f64(0.5 + fastrand::f64() * 0.5)
    }
}

/// The number `value` of the variable `var` holds (surrounding whitespace allowed).
fn env_number<T: std::str::FromStr>(var: &'static str, value: String) -> Result<T, RetryEnvError> {
    value
        .trim()
        .parse()
        .map_err(|_| RetryEnvError { var, value })
}

/// True for statuses worth retrying.
pub fn is_retryable_status(status: u16) -> bool {
    matches!(status, 408 | 429 | 500 | 502 | 503 | 504)
}

/// True when `e` is (or wraps, through nested `io::Error`s, whose `source()` skips a level)
/// the `InvalidData` error the TLS layer reports for a failed handshake.
pub fn is_tls_error(e: &(dyn std::error::Error + 'static)) -> bool {
    let Some(io) = e.downcast_ref::<std::io::Error>() else {
        return false;
    };
    io.kind() == std::io::ErrorKind::InvalidData
        || io.get_ref().is_some_and(|inner| is_tls_error(inner))
}

/// True when a request that got no answer would fail the same way again: it could not be
/// built, or the TLS handshake failed. Everything else (refused, reset, timed out) is worth a
/// retry.
pub fn is_permanent_send_error(e: &reqwest::Error) -> bool {
    if e.is_builder() {
        return true;
    }
    e.is_connect()
        && std::iter::successors(Some(e as &(dyn std::error::Error + 'static)), |c| {
            c.source()
        })
        .any(is_tls_error)
}

/// The wait the server asked for: `RateLimit: ...;r=0;t=<s>` when the quota is exhausted,
/// else `Retry-After` in seconds or as an HTTP date.
pub fn server_wait(headers: &HeaderMap) -> Option<Duration> {
    if let Some(rl) = headers.get("ratelimit").and_then(|v| v.to_str().ok())
        && let Some(wait) = parse_ratelimit(rl)
    {
        return Some(wait);
    }
    let ra = headers.get("retry-after")?.to_str().ok()?.trim();
    if let Ok(secs) = ra.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate::parse_http_date(ra).ok()?;
    Some(
        when.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

/// Parses the IETF `RateLimit` header as the Hub sends it (`"resolvers";r=0;t=42`): a wait
/// only when no requests remain.
fn parse_ratelimit(v: &str) -> Option<Duration> {
    let mut remaining = None;
    let mut reset = None;
    for part in v.split(';') {
        let part = part.trim();
        if let Some(r) = part.strip_prefix("r=") {
            remaining = r.trim().parse::<u64>().ok();
        } else if let Some(t) = part.strip_prefix("t=") {
            reset = t.trim().parse::<u64>().ok();
        }
    }
    match (remaining, reset) {
        (Some(0), Some(t)) => Some(Duration::from_secs(t)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn backoff_grows_is_capped_and_jittered() {
        let p = RetryPolicy {
            base: Duration::from_millis(100),
            max_delay: Duration::from_millis(1000),
            ..Default::default()
        };
        for _ in 0..50 {
            let d0 = p.backoff(0);
            assert!(
                d0 >= Duration::from_millis(50) && d0 < Duration::from_millis(100),
                "{d0:?}"
            );
            let d3 = p.backoff(3);
            assert!(
                d3 >= Duration::from_millis(400) && d3 < Duration::from_millis(800),
                "{d3:?}"
            );
            assert!(p.backoff(30) < Duration::from_millis(1000));
        }
    }

    #[test]
    fn server_waits() {
        let mut h = HeaderMap::new();
        assert_eq!(server_wait(&h), None);
        h.insert("retry-after", HeaderValue::from_static("3"));
        assert_eq!(server_wait(&h), Some(Duration::from_secs(3)));
        h.insert(
            "ratelimit",
            HeaderValue::from_static("\"resolvers\";r=0;t=7"),
        );
        assert_eq!(server_wait(&h), Some(Duration::from_secs(7)));
        h.insert(
            "ratelimit",
            HeaderValue::from_static("\"resolvers\";r=12;t=7"),
        );
        assert_eq!(
            server_wait(&h),
            Some(Duration::from_secs(3)),
            "quota left: Retry-After rules"
        );
        let future = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(30));
        let mut h = HeaderMap::new();
        h.insert("retry-after", HeaderValue::from_str(&future).unwrap());
        let w = server_wait(&h).unwrap();
        assert!(
            w > Duration::from_secs(25) && w <= Duration::from_secs(30),
            "{w:?}"
        );
    }

    #[test]
    fn env_overrides() {
        let env = |k: &str| match k {
            "MODELBAKE_HTTP_RETRIES" => Some("2".to_string()),
            "MODELBAKE_HTTP_BACKOFF_MS" => Some("10".to_string()),
            _ => None,
        };
        let p = RetryPolicy::try_from_env(&env).unwrap();
        assert_eq!((p.max_retries, p.base), (2, Duration::from_millis(10)));
        assert!(RetryPolicy::try_from_env(&|_| Some("x".into())).is_err());
        let e = RetryPolicy::try_from_env(&|k: &str| {
            (k == "MODELBAKE_HTTP_BACKOFF_MS").then(|| "5s".to_string())
        })
        .unwrap_err();
        assert_eq!(e.var, "MODELBAKE_HTTP_BACKOFF_MS");
        assert_eq!(
            e.to_string(),
            "MODELBAKE_HTTP_BACKOFF_MS=`5s` is not a number"
        );
        assert_eq!(
            RetryPolicy::try_from_env(&|_| Some("x".into()))
                .unwrap_err()
                .to_string(),
            "MODELBAKE_HTTP_RETRIES=`x` is not a number"
        );
    }
}
