//! Reads that survive a cut: small answers (manifests, configs) are read again whole when
//! their body is cut, and a blob streamed from the registry continues after a
//! cut or reset body with `Range: bytes=N-` when the registry answers `206`, or reads the blob
//! again from its first byte and skips the `N` bytes already handed on otherwise
//! ([`Registry::blob_body`]). Either way
//! the consumer (a [`VerifyingStream`](crate::oci::source::VerifyingStream)) sees every byte
//! of the blob exactly once, in order. Failures that make no progress count against the
//! shared [`RetryPolicy`](crate::retry::RetryPolicy).

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use reqwest::header::{AUTHORIZATION, CONTENT_RANGE, CONTENT_TYPE, RANGE};
use reqwest::{Method, StatusCode};
use tracing::debug;

use super::request::Payload;
use super::{Registry, RegistryError, Result, ok};
use crate::http_body::read_capped;
use crate::oci::digest::Digest;
use crate::retry::{is_retryable_status, server_wait};

impl Registry {
    /// GETs `path` and reads its whole body (at most `limit` bytes, named `what` in errors),
    /// with the media type declared for it. Statuses and dropped connections are retried by
    /// [`Registry::send`]; a body cut on the way is read again, within the same retry budget.
    pub(super) async fn get_small(
        &self,
        path: &str,
        scope: &str,
        headers: &[(&str, &str)],
        limit: u64,
        what: &'static str,
    ) -> Result<(Vec<u8>, Option<String>)> {
        let mut retries = 0;
        loop {
            let resp = self
                .send(Method::GET, path, scope, headers, &Payload::Empty)
                .await?;
            let resp = ok(resp, &self.url(path)).await?;
            let media = resp
                .headers()
                .get(CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.split(';').next())
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty());
            match read_capped(resp, limit, what).await {
                Ok(bytes) => return Ok((bytes, media)),
                Err(e) if e.is_transient() && retries < self.retry.max_retries => {
                    let delay = self.retry.backoff(retries);
                    debug!(error = %e, ?delay, retry = retries + 1, "registry read cut: reading again");
                    tokio::time::sleep(delay).await;
                    retries += 1;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// Where a [`Registry::blob_body`] stands. It owns what a resumed request needs (the HTTP
/// client, the URL, the `Authorization` of the first request), so the stream can feed an
/// upload's body on another task.
struct Reading {
    http: reqwest::Client,
    url: String,
    auth: Option<String>,
    retry: crate::retry::RetryPolicy,
    size: u64,
    /// Bytes handed on so far.
    offset: u64,
    /// The body being read, if a request is open.
    body: Option<BoxStream<'static, reqwest::Result<Bytes>>>,
    /// Bytes of the open body to drop (the registry sent them again).
    skip: u64,
    /// Failures since the last byte handed on.
    failures: u32,
    done: bool,
}

/// Why an attempt failed and the wait the registry asked for, when it did.
type Failed = (String, Option<std::time::Duration>);

/// GETs the blob at `url` again from byte `offset` on (with the `Authorization` of the first
/// request): the answer and the bytes of it to skip, or why this attempt failed
/// (`Ok(Err(..))`, worth another one).
async fn reopen(
    http: &reqwest::Client,
    url: &str,
    auth: Option<&str>,
    offset: u64,
) -> Result<std::result::Result<(reqwest::Response, u64), Failed>> {
    let mut req = http.get(url).header(RANGE, format!("bytes={offset}-"));
    if let Some(a) = auth {
        req = req.header(AUTHORIZATION, a);
    }
    let resp = match super::request::sent(url, req.send().await)? {
        super::request::Sent::Answer(resp) => resp,
        super::request::Sent::Dropped(why) => return Ok(Err((why, None))),
    };
    if is_retryable_status(resp.status().as_u16()) {
        let wait = server_wait(resp.headers());
        return Ok(Err((format!("HTTP {}", resp.status()), wait)));
    }
    checked_range(resp, url, offset).await.map(Ok)
}

/// The answer to a GET of a blob from byte `from` on, and how many of its first bytes the
/// caller already has: 0 after a `206` for the range asked, `from` when the registry sent the
/// whole blob again; an error for any other answer.
async fn checked_range(
    resp: reqwest::Response,
    url: &str,
    from: u64,
) -> Result<(reqwest::Response, u64)> {
    if from > 0 && resp.status() == StatusCode::PARTIAL_CONTENT {
        let answered = resp
            .headers()
            .get(CONTENT_RANGE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        if !answered.starts_with(&format!("bytes {from}-")) {
            return Err(RegistryError::Http {
                url: crate::redact::url_str(url),
                detail: format!(
                    "asked for bytes {from}- of the blob, the registry answered the range `{answered}`; the registry (or a proxy in front of it) mishandles ranges"
                ),
            });
        }
        return Ok((resp, 0));
    }
    Ok((ok(resp, url).await?, from))
}

impl Registry {
    /// Blob `digest` (`size` bytes) of `repo` as a stream of its bytes, resumed after a cut or
    /// reset body (`Range` when the registry allows it, otherwise read again with the bytes
    /// already handed on skipped): every byte comes out once, in order. The first request
    /// goes through the full retry and authentication loop; a resumed one reuses its
    /// `Authorization`. The stream fails when the retry budget is spent without progress, or
    /// on an answer that is not worth retrying.
    pub async fn blob_body(
        &self,
        repo: &str,
        digest: &Digest,
        size: u64,
    ) -> Result<impl Stream<Item = std::io::Result<Bytes>> + Send + 'static + use<>> {
        let path = format!("/v2/{repo}/blobs/{digest}");
        let url = self.url(&path);
        let resp = self
            .send(
                Method::GET,
                &path,
                &format!("repository:{repo}:pull"),
                &[],
                &Payload::Empty,
            )
            .await?;
        let (resp, _) = checked_range(resp, &url, 0).await?;
        let auth = self.auth_for(&url, &format!("repository:{repo}:pull"));
        let start = Reading {
            http: self.http.clone(),
            url,
            auth,
            retry: self.retry,
            size,
            offset: 0,
            body: Some(resp.bytes_stream().boxed()),
            skip: 0,
            failures: 0,
            done: false,
        };
        Ok(futures::stream::unfold(start, |mut st| async move {
            loop {
                if st.done {
                    return None;
                }
                let (why, wait) = match st.body.as_mut() {
                    None => match reopen(&st.http, &st.url, st.auth.as_deref(), st.offset).await {
                        Ok(Ok((resp, skip))) => {
                            st.skip = skip;
                            st.body = Some(resp.bytes_stream().boxed());
                            continue;
                        }
                        Ok(Err(failed)) => failed,
                        Err(e) => {
                            st.done = true;
                            return Some((Err(std::io::Error::other(e.to_string())), st));
                        }
                    },
                    Some(body) => match body.next().await {
                        Some(Ok(mut chunk)) => {
                            if st.skip > 0 {
                                let n = usize::try_from(st.skip)
                                    .unwrap_or(usize::MAX)
                                    .min(chunk.len());
                                chunk = chunk.slice(n..);
                                st.skip -= n as u64;
                            }
                            if chunk.is_empty() {
                                continue;
                            }
                            st.offset += chunk.len() as u64;
                            st.failures = 0;
                            return Some((Ok(chunk), st));
                        }
                        // The end: a short or long blob is the digest check's to refuse.
                        None if st.offset >= st.size || st.skip > 0 => return None,
                        None => ("the answer ended early".to_owned(), None),
                        Some(Err(e)) => (crate::redact::error_chain(&e), None),
                    },
                };
                st.body = None;
                let url = crate::redact::url_str(&st.url);
                if st.failures >= st.retry.max_retries {
                    st.done = true;
                    let msg = format!(
                        "{url}: gave up after {} attempts, {} of {} bytes read: {why}; check the network and the registry's status, or raise MODELBAKE_HTTP_RETRIES",
                        st.failures + 1,
                        st.offset,
                        st.size
                    );
                    return Some((Err(std::io::Error::other(msg)), st));
                }
                // The registry's own wait when it gave one it is worth waiting for.
                let delay = wait
                    .filter(|w| *w <= st.retry.max_server_wait)
                    .unwrap_or_else(|| st.retry.backoff(st.failures));
                debug!(%url, offset = st.offset, %why, ?delay, "blob body cut: resuming");
                tokio::time::sleep(delay).await;
                st.failures += 1;
            }
        }))
    }
}

/// A stream that is `Sync` because it is only ever polled through `&mut` (what an upload
/// body fed by a download needs).
pub struct SyncStream<S>(std::sync::Mutex<S>);

impl<S> SyncStream<S> {
    /// Wraps `inner`.
    pub fn new(inner: S) -> Self {
        SyncStream(std::sync::Mutex::new(inner))
    }
}

impl<S: Stream + Unpin> Stream for SyncStream<S> {
    type Item = S::Item;

    fn poll_next(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<S::Item>> {
        let inner = self
            .get_mut()
            .0
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        std::pin::Pin::new(inner).poll_next(cx)
    }
}
