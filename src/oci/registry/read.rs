//! Reads that survive a cut: small answers (manifests, configs) are read again whole when
//! their body is cut, and a blob streamed from the registry ([`blob_body`]) continues after a
//! cut or reset body with `Range: bytes=N-` when the registry answers `206`, or reads the blob
//! again from its first byte and skips the `N` bytes already handed on otherwise. Either way
//! the consumer (a [`VerifyingStream`](crate::oci::source::VerifyingStream)) sees every byte
//! of the blob exactly once, in order. Failures that make no progress count against the
//! shared [`RetryPolicy`](crate::retry::RetryPolicy).

use std::ops::Deref;

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use reqwest::header::{CONTENT_RANGE, CONTENT_TYPE};
use reqwest::{Method, StatusCode};
use tracing::debug;

use super::request::Payload;
use super::{Registry, RegistryError, Result, ok};
use crate::http_body::read_capped;
use crate::oci::digest::Digest;

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

    /// GETs blob `digest` of `repo` from byte `from` on: the answer, and how many of its
    /// first bytes the caller already has (0 after a `206` for the range asked; `from` when
    /// the registry sent the whole blob again).
    async fn blob_from(
        &self,
        repo: &str,
        digest: &Digest,
        from: u64,
    ) -> Result<(reqwest::Response, u64)> {
        let path = format!("/v2/{repo}/blobs/{digest}");
        let range = format!("bytes={from}-");
        let headers: &[(&str, &str)] = if from > 0 {
            &[("range", range.as_str())]
        } else {
            &[]
        };
        let resp = self
            .send(
                Method::GET,
                &path,
                &format!("repository:{repo}:pull"),
                headers,
                &Payload::Empty,
            )
            .await?;
        let url = self.url(&path);
        if from > 0 && resp.status() == StatusCode::PARTIAL_CONTENT {
            let answered = resp
                .headers()
                .get(CONTENT_RANGE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            if !answered.starts_with(&format!("bytes {from}-")) {
                return Err(RegistryError::Http {
                    url: crate::redact::url_str(&url),
                    detail: format!(
                        "asked for bytes {from}- of the blob, the registry answered the range `{answered}`; the registry (or a proxy in front of it) mishandles ranges"
                    ),
                });
            }
            return Ok((resp, 0));
        }
        Ok((ok(resp, &url).await?, from))
    }
}

/// Where a [`blob_body`] stands.
struct Reading<R> {
    registry: R,
    repo: String,
    digest: Digest,
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

/// Blob `digest` (`size` bytes) of `repo` on `registry` as a stream of its bytes, resumed
/// after a cut or reset body (`Range` when the registry allows it, otherwise read again with
/// the bytes already handed on skipped): every byte comes out once, in order. Fails when the
/// retry budget is spent without progress, or on an answer that is not worth retrying.
pub fn blob_body<R>(
    registry: R,
    repo: &str,
    digest: &Digest,
    size: u64,
) -> impl Stream<Item = std::io::Result<Bytes>> + use<R>
where
    R: Deref<Target = Registry>,
{
    let start = Reading {
        registry,
        repo: repo.to_owned(),
        digest: digest.clone(),
        size,
        offset: 0,
        body: None,
        skip: 0,
        failures: 0,
        done: false,
    };
    futures::stream::unfold(start, |mut st| async move {
        loop {
            if st.done {
                return None;
            }
            if st.body.is_none() {
                match st.registry.blob_from(&st.repo, &st.digest, st.offset).await {
                    Ok((resp, skip)) => {
                        st.skip = skip;
                        st.body = Some(resp.bytes_stream().boxed());
                    }
                    Err(e) => {
                        st.done = true;
                        return Some((Err(std::io::Error::other(e.to_string())), st));
                    }
                }
            }
            let Some(body) = st.body.as_mut() else {
                continue;
            };
            let why = match body.next().await {
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
                None => "the answer ended early".to_owned(),
                Some(Err(e)) => crate::redact::error_chain(&e),
            };
            st.body = None;
            let url = crate::redact::url_str(
                &st.registry
                    .url(&format!("/v2/{}/blobs/{}", st.repo, st.digest)),
            );
            if st.failures >= st.registry.retry.max_retries {
                st.done = true;
                let msg = format!(
                    "{url}: gave up after {} attempts, {} of {} bytes read: {why}; check the network and the registry's status, or raise MODELBAKE_HTTP_RETRIES",
                    st.failures + 1,
                    st.offset,
                    st.size
                );
                return Some((Err(std::io::Error::other(msg)), st));
            }
            let delay = st.registry.retry.backoff(st.failures);
            debug!(%url, offset = st.offset, %why, ?delay, "blob body cut: resuming");
            tokio::time::sleep(delay).await;
            st.failures += 1;
        }
    })
}
