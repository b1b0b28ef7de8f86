//! One request to a registry, done right: the `Authorization` earned for its scope, a new token
//! when the registry answers 401 (a token that expired mid-push is renewed and the request
//! repeated, nothing else restarted), and retries with backoff for dropped connections, 408,
//! 429 (`Retry-After`) and 5xx under the shared [`RetryPolicy`](crate::retry::RetryPolicy).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use reqwest::header::{AUTHORIZATION, CONTENT_LENGTH, WWW_AUTHENTICATE};
use reqwest::{Method, StatusCode};
use tracing::debug;

use super::{Registry, RegistryError, Result};
use crate::retry::{is_permanent_send_error, is_retryable_status, server_wait};

/// A body that can be sent again (after an authentication round trip or a retry).
pub enum Payload<'a> {
    /// No body.
    Empty,
    /// Bytes in memory.
    Bytes(&'a [u8]),
    /// A file, streamed.
    File(&'a Path),
}

/// What one exchange gave: an answer, or a connection that dropped before one came.
pub(super) enum Sent {
    /// The registry answered (any status).
    Answer(reqwest::Response),
    /// No answer; why (already free of secrets).
    Dropped(String),
}

/// Sorts the result of `RequestBuilder::send`: an answer, a failure worth retrying, or one
/// that would fail the same way again (an error).
pub(super) fn sent(
    url: &str,
    r: std::result::Result<reqwest::Response, reqwest::Error>,
) -> Result<Sent> {
    match r {
        Ok(resp) => Ok(Sent::Answer(resp)),
        Err(e) if is_permanent_send_error(&e) => Err(RegistryError::Http {
            url: crate::redact::url_str(url),
            detail: crate::redact::error_chain(&e),
        }),
        Err(e) => Ok(Sent::Dropped(crate::redact::error_chain(&e))),
    }
}

/// A part of a payload as a request body that counts the bytes it hands out into `sent`
/// (bounded memory: files are streamed from `start`, 1 MiB at a time).
pub(super) fn body_of(
    payload: &Payload<'_>,
    start: u64,
    len: u64,
    sent: &Arc<AtomicU64>,
) -> Result<Option<reqwest::Body>> {
    let body = match payload {
        Payload::Empty => return Ok(None),
        Payload::Bytes(b) => {
            let from = usize::try_from(start).unwrap_or(usize::MAX).min(b.len());
            let to = usize::try_from(start.saturating_add(len))
                .unwrap_or(usize::MAX)
                .min(b.len());
            let part = bytes::Bytes::copy_from_slice(&b[from..to]);
            counted(futures::stream::iter([Ok(part)]), sent.clone())
        }
        Payload::File(p) => {
            use std::io::Seek;
            let open = || -> std::io::Result<std::fs::File> {
                let mut f = std::fs::File::open(p)?;
                f.seek(std::io::SeekFrom::Start(start))?;
                Ok(f)
            };
            let file = open().map_err(|source| RegistryError::File {
                path: p.to_path_buf(),
                source,
            })?;
            let reader = tokio::io::AsyncReadExt::take(tokio::fs::File::from_std(file), len);
            counted(read_stream(reader), sent.clone())
        }
    };
    Ok(Some(body))
}

/// A stream as a body, adding the length of each piece to `sent` as it goes out.
pub(super) fn counted<S>(stream: S, sent: Arc<AtomicU64>) -> reqwest::Body
where
    S: futures::Stream<Item = std::io::Result<bytes::Bytes>> + Send + Sync + 'static,
{
    use futures::StreamExt;
    reqwest::Body::wrap_stream(stream.inspect(move |r| {
        if let Ok(b) = r {
            sent.fetch_add(b.len() as u64, Ordering::Relaxed);
        }
    }))
}

/// Reads `r` as a stream of pieces of at most 1 MiB.
fn read_stream<R>(r: R) -> impl futures::Stream<Item = std::io::Result<bytes::Bytes>>
where
    R: tokio::io::AsyncRead + Unpin + Send,
{
    futures::stream::unfold(r, |mut r| async move {
        use tokio::io::AsyncReadExt;
        let mut buf = vec![0u8; 1 << 20];
        match r.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(bytes::Bytes::from(buf)), r))
            }
            Err(e) => Some((Err(e), r)),
        }
    })
}

/// The length of a whole payload.
pub(super) fn payload_len(payload: &Payload<'_>) -> Result<u64> {
    match payload {
        Payload::Empty => Ok(0),
        Payload::Bytes(b) => Ok(b.len() as u64),
        Payload::File(p) => {
            std::fs::metadata(p)
                .map(|m| m.len())
                .map_err(|source| RegistryError::File {
                    path: p.to_path_buf(),
                    source,
                })
        }
    }
}

impl Registry {
    /// One exchange for `url` with the token for `scope`; a 401 is answered once (a new token
    /// from the challenge, replacing an expired one) and the request made again with a fresh
    /// body from `body`. No retry: callers that can resume decide what a dropped connection
    /// means.
    pub(super) async fn exchange(
        &self,
        method: &Method,
        url: &str,
        scope: &str,
        headers: &[(&str, &str)],
        mut body: impl AsyncFnMut() -> Result<Option<(reqwest::Body, u64)>>,
    ) -> Result<Sent> {
        for round in 0..2 {
            let mut req = self.http.request(method.clone(), url);
            for (k, v) in headers {
                req = req.header(*k, *v);
            }
            if let Some(a) = self.auth_for(url, scope) {
                req = req.header(AUTHORIZATION, a);
            }
            if let Some((b, len)) = body().await? {
                req = req.header(CONTENT_LENGTH, len).body(b);
            }
            let resp = match sent(url, req.send().await)? {
                Sent::Answer(resp) => resp,
                dropped => return Ok(dropped),
            };
            if resp.status() != StatusCode::UNAUTHORIZED || round == 1 {
                return Ok(Sent::Answer(resp));
            }
            // Only the registry's own challenge is answered: a 401 from another origin (an
            // upload Location, the target of a redirect) would have the registry's credentials
            // sent to a realm of its choosing, and the token it mints sent to the registry.
            if !self.is_own_origin(resp.url().as_str()) {
                let other = resp.url();
                let host = match (other.host_str(), other.port()) {
                    (Some(h), Some(p)) => format!("{h}:{p}"),
                    (Some(h), None) => h.to_owned(),
                    (None, _) => crate::redact::url_str(other.as_str()),
                };
                debug!(%host, registry = %self.host, "401 from another origin: not answered");
                return Err(RegistryError::ForeignChallenge {
                    host,
                    registry: self.host.clone(),
                });
            }
            let challenge = resp
                .headers()
                .get(WWW_AUTHENTICATE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned();
            debug!(url = %crate::redact::url_str(url), "401: asking for a new token");
            let value = self.answer(&challenge, scope).await?;
            if let Ok(mut t) = self.tokens.lock() {
                t.insert(scope.to_owned(), value);
            }
        }
        Err(RegistryError::NeedsLogin {
            registry: self.host.clone(),
        })
    }

    /// Runs `attempt` until it gets an answer that is not worth retrying, or the retry budget
    /// is spent: a dropped connection, 408, 429 and 5xx wait (the server's `Retry-After`, else
    /// backoff) and go again. When the budget is spent on an error status, that answer is
    /// returned, so the caller reports the registry's own message.
    pub(super) async fn retrying(
        &self,
        url: &str,
        mut attempt: impl AsyncFnMut() -> Result<Sent>,
    ) -> Result<reqwest::Response> {
        let mut retries = 0;
        loop {
            let (reason, wait) = match attempt().await? {
                Sent::Answer(resp) if !is_retryable_status(resp.status().as_u16()) => {
                    return Ok(resp);
                }
                Sent::Answer(resp) => {
                    let wait = server_wait(resp.headers());
                    if retries >= self.retry.max_retries
                        || wait.is_some_and(|w| w > self.retry.max_server_wait)
                    {
                        return Ok(resp);
                    }
                    (format!("HTTP {}", resp.status()), wait)
                }
                Sent::Dropped(reason) => {
                    if retries >= self.retry.max_retries {
                        return Err(RegistryError::GaveUp {
                            url: crate::redact::url_str(url),
                            attempts: retries + 1,
                            last: reason,
                        });
                    }
                    (reason, None)
                }
            };
            let delay = wait.unwrap_or_else(|| self.retry.backoff(retries));
            debug!(%reason, ?delay, retry = retries + 1, url = %crate::redact::url_str(url), "registry request: retrying");
            tokio::time::sleep(delay).await;
            retries += 1;
        }
    }

    /// Sends a request with a body that can be sent again, answering an authentication
    /// challenge and retrying transient failures.
    pub(super) async fn send(
        &self,
        method: Method,
        path: &str,
        scope: &str,
        headers: &[(&str, &str)],
        payload: &Payload<'_>,
    ) -> Result<reqwest::Response> {
        let url = self.url(path);
        let len = payload_len(payload)?;
        let counter = Arc::new(AtomicU64::new(0));
        self.retrying(&url, async || {
            self.exchange(&method, &url, scope, headers, async || {
                Ok(body_of(payload, 0, len, &counter)?.map(|b| (b, len)))
            })
            .await
        })
        .await
    }
}
