//! Blob uploads that survive bad networks. Small blobs go in one PUT; blobs over the
//! registry's threshold go as POST, PATCH chunks (`Content-Range`), then `PUT ?digest=`. After
//! a dropped connection or an error status the upload asks the registry how much it has
//! (`GET` on the upload URL, `Range: 0-<last>`) and goes on from there; it starts again from
//! zero only when the registry lost the session. Bytes are streamed from the source at the
//! offset, never buffered whole, and the registry checks the digest before the blob exists.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use reqwest::header::LOCATION;
use reqwest::{Method, StatusCode};
use serde::Serialize;
use tracing::debug;
use url::Url;

use super::request::{Payload, Sent, body_of, counted};
use super::{Registry, RegistryError, Result, ok};
use crate::oci::digest::Digest;

/// What one upload did: bytes put on the wire, how often it resumed or started over, and
/// whether it went in chunks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct UploadStats {
    /// Body bytes sent, counting bytes sent again after a failure.
    pub bytes_sent: u64,
    /// Times the upload went on from the registry's offset after a failure.
    pub resumed: u32,
    /// Times the registry lost the session and the upload started again from zero.
    pub restarted: u32,
    /// True when the blob went as PATCH chunks.
    pub chunked: bool,
}

/// An upload session: where to send the next request and the smallest chunk the registry
/// accepts.
struct Session {
    url: Url,
    min_chunk: u64,
}

/// What one request of an upload achieved.
enum Step {
    /// The registry holds the blob up to this offset; the session goes on at this URL.
    Moved(Url, u64),
    /// The blob is stored.
    Done,
    /// The registry no longer knows the session.
    Lost,
    /// A failure worth resuming after (why, and the wait the registry asked for).
    Failed(String, Option<Duration>),
}

/// Where the bytes of a blob come from, part by part.
#[allow(async_fn_in_trait)] // used generically inside this module only
trait Source {
    /// The bytes `[start, start + len)` as a body that adds what it sends to `sent`.
    async fn body(&mut self, start: u64, len: u64, sent: &Arc<AtomicU64>) -> Result<reqwest::Body>;

    /// An error of the source itself (not of the network) that ended the last body: no
    /// retry can fix it.
    fn fatal(&mut self) -> Option<RegistryError> {
        None
    }
}

/// A file or bytes in memory: any part can be read again.
struct PayloadSource<'a>(&'a Payload<'a>);

impl Source for PayloadSource<'_> {
    async fn body(&mut self, start: u64, len: u64, sent: &Arc<AtomicU64>) -> Result<reqwest::Body> {
        Ok(body_of(self.0, start, len, sent)?.unwrap_or_else(|| reqwest::Body::from("")))
    }
}

/// A stream that cannot be replayed (a blob streamed from another registry): read on in
/// order; to go back, `open` it again and skip to the offset.
struct StreamSource<F, S> {
    open: F,
    shared: Option<Arc<tokio::sync::Mutex<Shared<S>>>>,
}

/// The open stream, shared with the body of the request in flight.
struct Shared<S> {
    stream: std::pin::Pin<Box<S>>,
    /// Bytes taken from the stream so far.
    pos: u64,
    /// Taken from the stream but not yet sent (a piece split at a chunk boundary).
    pending: Option<bytes::Bytes>,
    /// The stream's own error, which no retry fixes.
    failed: Option<String>,
}

impl<S> Shared<S>
where
    S: futures::Stream<Item = std::io::Result<bytes::Bytes>> + Send + Sync + 'static,
{
    /// The next piece of at most `max` bytes; `None` at the end.
    async fn next(&mut self, max: u64) -> Option<std::io::Result<bytes::Bytes>> {
        use futures::StreamExt;
        let mut piece = match self.pending.take() {
            Some(p) => p,
            None => match self.stream.next().await? {
                Ok(p) => p,
                Err(e) => {
                    self.failed = Some(e.to_string());
                    return Some(Err(e));
                }
            },
        };
        if piece.len() as u64 > max {
            let rest = piece.split_off(usize::try_from(max).unwrap_or(usize::MAX));
            self.pending = Some(rest);
        }
        self.pos += piece.len() as u64;
        Some(Ok(piece))
    }
}

impl<F, Fut, S> Source for StreamSource<F, S>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<S>>,
    S: futures::Stream<Item = std::io::Result<bytes::Bytes>> + Send + Sync + 'static,
{
    async fn body(&mut self, start: u64, len: u64, sent: &Arc<AtomicU64>) -> Result<reqwest::Body> {
        let at = match &self.shared {
            Some(s) => Some(s.lock().await.pos),
            None => None,
        };
        if at != Some(start) {
            let mut fresh = Shared {
                stream: Box::pin((self.open)().await?),
                pos: 0,
                pending: None,
                failed: None,
            };
            while fresh.pos < start {
                match fresh.next(start - fresh.pos).await {
                    Some(Ok(_)) => {}
                    Some(Err(e)) => {
                        return Err(RegistryError::Http {
                            url: "the source stream".into(),
                            detail: e.to_string(),
                        });
                    }
                    None => {
                        return Err(RegistryError::Http {
                            url: "the source stream".into(),
                            detail: format!("it ended at byte {} before {start}", fresh.pos),
                        });
                    }
                }
            }
            self.shared = Some(Arc::new(tokio::sync::Mutex::new(fresh)));
        }
        let shared = self.shared.clone().ok_or_else(|| RegistryError::Http {
            url: "the source stream".into(),
            detail: "not open".into(),
        })?;
        let pieces = futures::stream::unfold((shared, len), |(shared, left)| async move {
            if left == 0 {
                return None;
            }
            let piece = shared.lock().await.next(left).await?;
            let left = match &piece {
                Ok(p) => left - p.len() as u64,
                Err(_) => 0,
            };
            Some((piece, (shared, left)))
        });
        Ok(counted(pieces, sent.clone()))
    }

    fn fatal(&mut self) -> Option<RegistryError> {
        let shared = self.shared.as_ref()?;
        let failed = shared.try_lock().ok()?.failed.clone()?;
        Some(RegistryError::Http {
            url: "the source stream".into(),
            detail: failed,
        })
    }
}

/// Reports what `sent` counts to `progress` (as increments) while `work` runs.
async fn with_progress<T>(
    work: impl Future<Output = T>,
    sent: &AtomicU64,
    progress: &(dyn Fn(u64) + Sync),
) -> T {
    let mut reported = 0;
    let report = |reported: &mut u64| {
        let now = sent.load(Ordering::Relaxed);
        if now > *reported {
            progress(now - *reported);
            *reported = now;
        }
    };
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    tokio::pin!(work);
    loop {
        tokio::select! {
            out = &mut work => {
                report(&mut reported);
                return out;
            }
            _ = tick.tick() => report(&mut reported),
        }
    }
}

/// `Range: 0-<last>` as the offset to go on from. Distribution writes `0-0` for an empty
/// session as well as for one byte; taken as empty (sending one byte again is harmless,
/// skipping one is not).
fn range_end(headers: &reqwest::header::HeaderMap) -> Option<u64> {
    let v = headers.get("range")?.to_str().ok()?.trim();
    let v = v.strip_prefix("bytes=").unwrap_or(v);
    let (from, last) = v.split_once('-')?;
    let last: u64 = last.trim().parse().ok()?;
    if from.trim() != "0" {
        return None;
    }
    Some(if last == 0 { 0 } else { last + 1 })
}

/// The answer's `Location` resolved against the URL it answered, else that URL.
fn next_url(resp: &reqwest::Response, current: &Url) -> Result<Url> {
    match resp.headers().get(LOCATION).and_then(|v| v.to_str().ok()) {
        Some(loc) => current.join(loc).map_err(|e| RegistryError::Http {
            url: crate::redact::url_str(loc),
            detail: format!("the upload Location is not a URL: {e}"),
        }),
        None => Ok(current.clone()),
    }
}

/// True when an error answer says the upload session is gone (`404`, `BLOB_UPLOAD_UNKNOWN`,
/// or Distribution's `BLOB_UPLOAD_INVALID` after a cancelled session).
fn session_lost(status: StatusCode) -> bool {
    status == StatusCode::NOT_FOUND
}

impl Registry {
    /// Uploads a blob of `size` bytes from `payload`: in one PUT up to the registry's chunked
    /// threshold, else in chunks that resume after failures. `progress` is called with the
    /// number of bytes just sent (increments; bytes sent again after a failure count again).
    pub async fn upload(
        &self,
        repo: &str,
        digest: &Digest,
        size: u64,
        payload: Payload<'_>,
        progress: &(dyn Fn(u64) + Sync),
    ) -> Result<UploadStats> {
        let mut src = PayloadSource(&payload);
        self.put_blob(repo, digest, size, &mut src, progress).await
    }

    /// Uploads a blob from a stream that cannot be replayed (a copy from another registry):
    /// `open` gives the source from its first byte, and is called again when the upload has to
    /// go back (the bytes before the registry's offset are read and dropped, so a checking
    /// stream still sees them all). Same settings and `progress` as [`Registry::upload`].
    pub async fn upload_stream<F, Fut, S>(
        &self,
        repo: &str,
        digest: &Digest,
        size: u64,
        open: F,
        progress: &(dyn Fn(u64) + Sync),
    ) -> Result<UploadStats>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<S>>,
        S: futures::Stream<Item = std::io::Result<bytes::Bytes>> + Send + Sync + 'static,
    {
        let mut src = StreamSource { open, shared: None };
        self.put_blob(repo, digest, size, &mut src, progress).await
    }

    /// Asks the registry to mount `digest` from `from` into `repo` (same registry, no bytes
    /// moved). True when it did; when it answers 202 instead (it opened an upload session,
    /// as ECR does for blobs no manifest of `from` references), the session is cancelled and
    /// the caller uploads.
    pub async fn mount(&self, repo: &str, digest: &Digest, from: &str) -> Result<bool> {
        let path = format!("/v2/{repo}/blobs/uploads/?mount={digest}&from={from}");
        let scope = format!("repository:{repo}:pull,push repository:{from}:pull");
        let resp = self
            .send(Method::POST, &path, &scope, &[], &Payload::Bytes(&[]))
            .await?;
        if resp.status() == StatusCode::CREATED {
            return Ok(true);
        }
        if resp.status() == StatusCode::ACCEPTED
            && let Ok(base) = Url::parse(&self.url(&path))
            && let Ok(session) = next_url(&resp, &base)
        {
            // Best effort: an abandoned session expires on its own.
            let cancelled = self
                .send(
                    Method::DELETE,
                    session.as_str(),
                    &scope,
                    &[],
                    &Payload::Empty,
                )
                .await;
            debug!(
                ok = cancelled.is_ok(),
                "mount answered 202: upload session cancelled"
            );
        }
        Ok(false)
    }

    /// Opens an upload session.
    async fn start_session(&self, repo: &str, scope: &str) -> Result<Session> {
        let start = self.url(&format!("/v2/{repo}/blobs/uploads/"));
        let resp = ok(
            self.send(Method::POST, &start, scope, &[], &Payload::Bytes(&[]))
                .await?,
            &start,
        )
        .await?;
        if resp.headers().get(LOCATION).is_none() {
            return Err(RegistryError::Http {
                url: start,
                detail: "upload started without a Location".into(),
            });
        }
        let base = Url::parse(&start).map_err(|e| RegistryError::Http {
            url: start.clone(),
            detail: e.to_string(),
        })?;
        let min_chunk = resp
            .headers()
            .get("oci-chunk-min-length")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        Ok(Session {
            url: next_url(&resp, &base)?,
            min_chunk,
        })
    }

    /// How much of the session the registry holds: the URL to go on at and the offset, or
    /// `None` when it lost the session.
    async fn upload_offset(&self, session: &Session, scope: &str) -> Result<Option<(Url, u64)>> {
        let resp = self
            .send(
                Method::GET,
                session.url.as_str(),
                scope,
                &[],
                &Payload::Empty,
            )
            .await?;
        if session_lost(resp.status()) {
            return Ok(None);
        }
        let url = next_url(&resp, &session.url)?;
        let offset = range_end(resp.headers()).unwrap_or(0);
        ok(resp, &crate::redact::url_str(session.url.as_str())).await?;
        Ok(Some((url, offset)))
    }

    /// Sends `[start, start + len)` of the blob as `req` and sorts the answer into a [`Step`]
    /// (`finishes`: a success ends the upload).
    async fn transfer<S: Source>(
        &self,
        req: ChunkRequest<'_>,
        src: &mut S,
        (start, len): (u64, u64),
        sent: &Arc<AtomicU64>,
        finishes: bool,
    ) -> Result<Step> {
        let ChunkRequest {
            method,
            url,
            scope,
            headers,
        } = req;
        let answer = self
            .exchange(&method, url.as_str(), scope, headers, async || {
                Ok(Some((src.body(start, len, sent).await?, len)))
            })
            .await?;
        let resp = match answer {
            Sent::Dropped(reason) => return Ok(Step::Failed(reason, None)),
            Sent::Answer(resp) => resp,
        };
        let status = resp.status();
        if status.is_success() {
            if finishes {
                return Ok(Step::Done);
            }
            let next = next_url(&resp, url)?;
            let offset = range_end(resp.headers()).unwrap_or(start + len);
            return Ok(Step::Moved(next, offset));
        }
        if session_lost(status) {
            return Ok(Step::Lost);
        }
        if status == StatusCode::RANGE_NOT_SATISFIABLE
            || crate::retry::is_retryable_status(status.as_u16())
        {
            let wait = crate::retry::server_wait(resp.headers());
            return Ok(Step::Failed(format!("HTTP {status}"), wait));
        }
        Err(ok(resp, &crate::redact::url_str(url.as_str()))
            .await
            .err()
            .unwrap_or_else(|| RegistryError::Http {
                url: crate::redact::url_str(url.as_str()),
                detail: format!("HTTP {status}"),
            }))
    }

    /// The upload loop shared by files, bytes and streams.
    async fn put_blob<S: Source>(
        &self,
        repo: &str,
        digest: &Digest,
        size: u64,
        src: &mut S,
        progress: &(dyn Fn(u64) + Sync),
    ) -> Result<UploadStats> {
        let scope = format!("repository:{repo}:pull,push");
        let chunked = size > self.options.chunked_threshold;
        let sent = Arc::new(AtomicU64::new(0));
        let mut stats = UploadStats {
            chunked,
            ..UploadStats::default()
        };
        let work = async {
            let mut session = self.start_session(repo, &scope).await?;
            let mut offset = 0u64;
            let mut failures = 0u32;
            loop {
                let step = if chunked && offset < size {
                    let chunk = self.options.chunk_size.max(session.min_chunk).max(1);
                    let len = chunk.min(size - offset);
                    let range = format!("{offset}-{}", offset + len - 1);
                    let headers = [
                        ("content-type", "application/octet-stream"),
                        ("content-range", range.as_str()),
                    ];
                    self.transfer(
                        ChunkRequest {
                            method: Method::PATCH,
                            url: &session.url,
                            scope: &scope,
                            headers: &headers,
                        },
                        src,
                        (offset, len),
                        &sent,
                        false,
                    )
                    .await?
                } else {
                    let mut put = session.url.clone();
                    put.query_pairs_mut().append_pair("digest", digest.as_str());
                    let headers = [("content-type", "application/octet-stream")];
                    self.transfer(
                        ChunkRequest {
                            method: Method::PUT,
                            url: &put,
                            scope: &scope,
                            headers: &headers,
                        },
                        src,
                        (offset, size - offset),
                        &sent,
                        true,
                    )
                    .await?
                };
                let (reason, wait, lost) = match step {
                    Step::Done => return Ok(()),
                    Step::Moved(url, at) => {
                        session.url = url;
                        offset = at.min(size);
                        failures = 0;
                        continue;
                    }
                    Step::Lost => (
                        "the registry lost the upload session".to_owned(),
                        None,
                        true,
                    ),
                    Step::Failed(reason, wait) => (reason, wait, false),
                };
                if let Some(e) = src.fatal() {
                    return Err(e);
                }
                if failures >= self.retry.max_retries {
                    return Err(RegistryError::GaveUp {
                        url: crate::redact::url_str(session.url.as_str()),
                        attempts: failures + 1,
                        last: reason,
                    });
                }
                let delay = wait
                    .filter(|w| *w <= self.retry.max_server_wait)
                    .unwrap_or_else(|| self.retry.backoff(failures));
                debug!(%reason, ?delay, offset, %digest, "upload: going on after a failure");
                tokio::time::sleep(delay).await;
                failures += 1;
                let resume = if lost {
                    None
                } else {
                    self.upload_offset(&session, &scope).await?
                };
                match resume {
                    Some((url, at)) => {
                        session.url = url;
                        offset = at.min(size);
                        stats.resumed += 1;
                    }
                    _ => {
                        session = self.start_session(repo, &scope).await?;
                        offset = 0;
                        stats.restarted += 1;
                    }
                }
            }
        };
        with_progress(work, &sent, progress).await?;
        stats.bytes_sent = sent.load(Ordering::Relaxed);
        Ok(stats)
    }
}

/// Where one piece of an upload goes: PATCH to the session, or the final PUT.
struct ChunkRequest<'a> {
    method: Method,
    url: &'a Url,
    scope: &'a str,
    headers: &'a [(&'a str, &'a str)],
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{HeaderMap, HeaderValue};

    fn range(v: &str) -> Option<u64> {
        let mut h = HeaderMap::new();
        h.insert("range", HeaderValue::from_str(v).unwrap());
        range_end(&h)
    }

    #[test]
    fn the_registrys_range_is_the_offset_to_go_on_from() {
        assert_eq!(range("0-1048575"), Some(1 << 20));
        assert_eq!(range("bytes=0-99"), Some(100));
        // Distribution's `0-0` for an empty session: resend from zero.
        assert_eq!(range("0-0"), Some(0));
        assert_eq!(range("5-9"), None, "not a prefix");
        assert_eq!(range("0-x"), None);
        assert_eq!(range_end(&HeaderMap::new()), None);
    }
}
