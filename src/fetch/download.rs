//! Downloading one blob from the locked commit: small files in one stream, large files in
//! parallel `Range` chunks; a dropped connection resumes from the byte where it stopped, and an
//! interrupted run resumes from the store's partial file.

use std::sync::atomic::Ordering;

use reqwest::StatusCode;
use tokio::sync::{Mutex, mpsc};
use url::Url;

use super::blob_writer::{BlobWriter, Msg};
use super::buffers::Buffer;
use super::{BlobError, BlobJob, Run};
use crate::hub::{Attempt, HubClient, HubError, RequestCtx};
use crate::store::{BlobClaim, StoreError};

/// Why a download stopped.
enum Stop {
    /// The blob writer is gone (it failed; its error is the one to report).
    WriterClosed,
    /// The server answered a chunk request with the whole file.
    NoRangeSupport,
    /// A real failure.
    Failed(BlobError),
}

/// Downloads `job` into the store and publishes it: from each mirror source in turn (a
/// failure or wrong bytes are reported and the next source is tried), then from the Hub.
pub(super) async fn blob(run: &Run<'_>, job: &BlobJob, claim: &BlobClaim) -> Result<(), BlobError> {
    let use_ = &job.uses[0];
    let label = use_.label();
    let hub_err = |source: HubError| BlobError::Hub {
        label: label.clone(),
        source,
    };
    // Bytes of this blob already shown as progress, so a source resuming another's partial
    // does not count them again.
    let mut counted = 0u64;
    for m in run.opts.mirrors.for_file(&use_.repo, &use_.path) {
        let attempt = match run.client.for_mirror(&m.url, m.token.clone()) {
            Ok(client) => from_source(run, job, claim, &client, &m.url, &mut counted).await,
            Err(e) => Err(hub_err(e)),
        };
        match attempt {
            Ok(()) => {
                run.from_mirrors.fetch_add(1, Ordering::Relaxed);
                return Ok(());
            }
            Err(e) => {
                let note = format!(
                    "mirror `{}` failed for {label} ({}): {}; trying the next source",
                    m.plugin,
                    crate::hub::shown(&m.url),
                    e.mirror_detail()
                );
                tracing::warn!("{note}");
                if let Ok(mut failures) = run.mirror_failures.lock() {
                    failures.push(note);
                }
            }
        }
    }
    if run.opts.xet
        && let Some(hash) = &use_.xet_hash
    {
        match super::xet::blob(run, job, claim, hash, &mut counted).await {
            Ok(reused) => {
                run.from_xet.fetch_add(1, Ordering::Relaxed);
                run.xet_reused.fetch_add(reused, Ordering::Relaxed);
                return Ok(());
            }
            Err(e) => {
                let note = format!(
                    "{label}: the Xet download failed ({}); downloading it over plain HTTP instead",
                    e.detail()
                );
                tracing::warn!("{note}");
                if let Ok(mut notes) = run.xet_fallbacks.lock() {
                    notes.push(note);
                }
            }
        }
    }
    let resolve = run
        .client
        .resolve_url(use_.repo.kind, &use_.repo.id, &use_.commit, &use_.path)
        .map_err(hub_err)?;
    match from_source(run, job, claim, run.client, &resolve, &mut counted).await {
        // A resumed partial may hold bytes from a source that lied (a mirror, an older run): the
        // mismatch discarded it, so one more attempt starts from zero with Hub bytes only.
        Err(BlobError::ResumedMismatch { .. }) => {
            tracing::warn!(
                "{label}: the resumed download did not match its sha256; downloading it again from the start"
            );
            from_source(run, job, claim, run.client, &resolve, &mut counted).await
        }
        other => other,
    }
}

/// Opens (or takes over) the partial file of `job`, moves the progress to what it already
/// holds, and says so when a download resumes. Shared by every download path.
pub(super) async fn begin(
    run: &Run<'_>,
    job: &BlobJob,
    claim: &BlobClaim,
    counted: &mut u64,
) -> Result<crate::store::Partial, BlobError> {
    let label = job.uses[0].label();
    let (store, sha, size, claim) = (
        run.store.clone(),
        job.sha256.clone(),
        job.size,
        claim.clone(),
    );
    let partial = tokio::task::spawn_blocking(move || store.begin(&sha, size, &claim))
        .await
        .map_err(|e| BlobError::Other {
            label: label.clone(),
            detail: e.to_string(),
        })?
        .map_err(|source| BlobError::Store {
            label: label.clone(),
            source,
        })?;
    let from = partial.len();
    if from > 0 {
        tracing::info!("{label}: resuming at byte {from} of {}", job.size);
    }
    run.progress.advance(from.saturating_sub(*counted));
    *counted = (*counted).max(from);
    Ok(partial)
}

/// Downloads `job` from `resolve` (through `client`) into the store and publishes it. When it
/// fails, the partial file is kept so the next source or run resumes from it; the final
/// sha256 check decides whether its bytes were right, and throws them away if not.
async fn from_source(
    run: &Run<'_>,
    job: &BlobJob,
    claim: &BlobClaim,
    client: &HubClient,
    resolve: &Url,
    counted: &mut u64,
) -> Result<(), BlobError> {
    let use_ = &job.uses[0];
    let label = use_.label();
    let store_err = |source: StoreError| BlobError::Store {
        label: label.clone(),
        source,
    };
    let ctx = client.file_ctx(use_.repo.kind, &use_.repo.id, &use_.commit, &use_.path);
    let src = Source {
        client,
        url: resolve,
        may_restart: true,
    };

    let partial = begin(run, job, claim, counted).await?;
    let from = partial.len();
    let writer = BlobWriter::spawn(partial);
    let mut outcome = if from == job.size {
        Ok(())
    } else if job.size - from > run.opts.chunk_threshold {
        chunked(run, &src, &ctx, &label, job.size, from, &writer.tx).await
    } else {
        single(run, &src, &ctx, &label, job.size, from, &writer.tx).await
    };
    if matches!(outcome, Err(Stop::NoRangeSupport)) {
        tracing::warn!("{label}: the server ignores Range requests; downloading it in one stream");
        // This is the one restart from zero: a short answer after it is not restarted again.
        let src = Source {
            may_restart: false,
            ..src
        };
        outcome = match writer.tx.send(Msg::Reset).await {
            Ok(()) => single(run, &src, &ctx, &label, job.size, 0, &writer.tx).await,
            Err(_) => Err(Stop::WriterClosed),
        };
    }
    let written = writer.finish().await;
    match (outcome, written) {
        (Err(Stop::Failed(e)), Ok(partial)) => {
            *counted = (*counted).max(partial.len());
            // Keep what arrived: the next source or run resumes from it.
            let _ = tokio::task::spawn_blocking(move || partial.suspend()).await;
            Err(e)
        }
        (Err(Stop::NoRangeSupport), _) => unreachable!("handled above"),
        (_, Err(e)) => Err(store_err(e)),
        (Err(Stop::WriterClosed), Ok(_)) => Err(BlobError::Other {
            label,
            detail: "the writer stopped before the download ended; run `modelbake fetch` again (it resumes)".into(),
        }),
        (Ok(()), Ok(partial)) => tokio::task::spawn_blocking(move || partial.publish())
            .await
            .map_err(|e| BlobError::Other {
                label: label.clone(),
                detail: e.to_string(),
            })?
            .map(|_| ())
            .map_err(|e| match e {
                StoreError::HashMismatch { .. } if from > 0 => BlobError::ResumedMismatch {
                    label: label.clone(),
                    source: e,
                },
                e => store_err(e),
            }),
    }
}

/// Where the bytes come from: the Hub, or a mirror with its own client (its own origin and
/// credential).
struct Source<'a> {
    client: &'a HubClient,
    url: &'a Url,
    /// Whether a server that ignores `Range` may make the download start again from byte 0
    /// (once per file: a server that also ends its answers early would otherwise be asked for
    /// the rest forever).
    may_restart: bool,
}

/// Counts retries and sleeps between them; progress resets the count, so a flaky connection
/// that keeps delivering bytes is never given up on.
struct Retrier {
    retries: u32,
    policy: crate::hub::RetryPolicy,
}

impl Retrier {
    /// A fresh count with the retry policy of the client that makes the requests.
    fn new(client: &HubClient) -> Self {
        Retrier {
            retries: 0,
            policy: client.retry_policy(),
        }
    }

    /// The value of an attempt, or `None` (after the backoff) when it should be tried again.
    async fn settle<T>(&mut self, label: &str, attempt: Attempt<T>) -> Result<Option<T>, Stop> {
        match attempt {
            Attempt::Done(v) => Ok(Some(v)),
            Attempt::Retry { reason, wait } => {
                self.wait(label, reason, wait).await?;
                Ok(None)
            }
            Attempt::Fail(e) => Err(Stop::Failed(BlobError::Hub {
                label: label.to_owned(),
                source: e,
            })),
        }
    }

    async fn wait(
        &mut self,
        label: &str,
        reason: String,
        wait: Option<std::time::Duration>,
    ) -> Result<(), Stop> {
        if self.retries >= self.policy.max_retries {
            return Err(Stop::Failed(BlobError::Hub {
                label: label.to_owned(),
                source: HubError::GaveUp {
                    what: "downloading".into(),
                    attempts: self.retries + 1,
                    last: reason,
                },
            }));
        }
        let delay = wait.unwrap_or_else(|| self.policy.backoff(self.retries));
        tracing::debug!(%reason, ?delay, "{label}: retrying");
        tokio::time::sleep(delay).await;
        self.retries += 1;
        Ok(())
    }
}

/// Checks that a `Range` answer starts where we asked.
fn range_start(resp: &reqwest::Response) -> Option<u64> {
    let v = resp
        .headers()
        .get(reqwest::header::CONTENT_RANGE)?
        .to_str()
        .ok()?;
    v.strip_prefix("bytes ")?
        .split('-')
        .next()?
        .trim()
        .parse()
        .ok()
}

/// One stream from `from` to the end, re-requested from the current byte after every drop.
/// Bytes are gathered into pooled buffers and handed to the blob writer as each one fills. Retries
/// are counted per file and only bytes beyond the furthest point reached reset the count, so
/// a server that keeps sending the same short answer is given up on; a server that ignores
/// `Range` makes the download restart from byte 0 at most once.
async fn single(
    run: &Run<'_>,
    src: &Source<'_>,
    ctx: &RequestCtx,
    label: &str,
    size: u64,
    from: u64,
    tx: &mpsc::Sender<Msg>,
) -> Result<(), Stop> {
    let mut url = src.url.clone();
    let mut offset = from;
    let mut furthest = from;
    let mut may_restart = src.may_restart;
    let mut retrier = Retrier::new(src.client);
    let mut pending: Option<(u64, Buffer)> = None;
    while offset < size {
        let _conn = run
            .connections
            .acquire()
            .await
            .map_err(|_| Stop::WriterClosed)?;
        let Some(mut resp) = retrier
            .settle(label, src.client.get_from(&url, offset, ctx).await)
            .await?
        else {
            continue;
        };
        // Later attempts go straight to where the redirects led (the CDN), not through the Hub.
        url = resp.url().clone();
        match resp.status() {
            StatusCode::OK if offset > 0 && !may_restart => {
                return Err(bad_answer(
                    label,
                    &url,
                    format!(
                        "asked for the bytes from {offset}, the server sent the file from byte 0 again: it ignores `Range` requests, and its full answer already ended early (at byte {furthest} of {size}); giving up instead of restarting without end — try again later, or use another source"
                    ),
                ));
            }
            StatusCode::OK if offset > 0 => {
                tracing::warn!(
                    "{label}: the server ignores Range requests; downloading it again from the start"
                );
                may_restart = false;
                pending = None;
                tx.send(Msg::Reset).await.map_err(|_| Stop::WriterClosed)?;
                offset = 0;
            }
            StatusCode::PARTIAL_CONTENT if range_start(&resp) != Some(offset) => {
                return Err(bad_answer(
                    label,
                    &url,
                    format!(
                        "asked for bytes from {offset}, got {:?}",
                        resp.headers().get(reqwest::header::CONTENT_RANGE)
                    ),
                ));
            }
            StatusCode::OK | StatusCode::PARTIAL_CONTENT => {}
            other => return Err(bad_answer(label, &url, format!("unexpected HTTP {other}"))),
        }
        loop {
            match resp.chunk().await {
                Ok(Some(data)) => {
                    let n = data.len() as u64;
                    if offset + n > size {
                        return Err(bad_answer(
                            label,
                            &url,
                            format!("more than the {size} bytes the lock records"),
                        ));
                    }
                    let mut rest = &data[..];
                    while !rest.is_empty() {
                        let (start, buf) = match &mut pending {
                            Some(p) => p,
                            None => pending.insert((
                                offset + (n - rest.len() as u64),
                                run.buffers.take().await.ok_or(Stop::WriterClosed)?,
                            )),
                        };
                        let take = rest.len().min(buf.room());
                        buf.extend(&rest[..take]);
                        rest = &rest[take..];
                        if buf.room() == 0 {
                            let (start, data) =
                                (*start, pending.take().ok_or(Stop::WriterClosed)?.1);
                            tx.send(Msg::Data {
                                offset: start,
                                data,
                            })
                            .await
                            .map_err(|_| Stop::WriterClosed)?;
                        }
                    }
                    offset += n;
                    run.received.fetch_add(n, Ordering::Relaxed);
                    run.progress.advance(n);
                    if offset > furthest {
                        // New bytes: the connection works, so the retry count starts over.
                        furthest = offset;
                        retrier.retries = 0;
                    }
                }
                Ok(None) => {
                    if offset < size {
                        retrier
                            .wait(
                                label,
                                format!("the server ended the response at byte {offset} of {size}"),
                                None,
                            )
                            .await?;
                    }
                    break;
                }
                Err(e) => {
                    retrier
                        .wait(
                            label,
                            format!(
                                "connection lost at byte {offset}: {}",
                                crate::redact::error_chain(&e)
                            ),
                            None,
                        )
                        .await?;
                    break;
                }
            }
        }
        // What arrived is valid whatever happens next: hand it over before resuming.
        if let Some((start, data)) = pending.take() {
            tx.send(Msg::Data {
                offset: start,
                data,
            })
            .await
            .map_err(|_| Stop::WriterClosed)?;
        }
    }
    Ok(())
}

fn bad_answer(label: &str, url: &Url, detail: String) -> Stop {
    Stop::Failed(BlobError::Hub {
        label: label.to_owned(),
        source: HubError::InvalidResponse {
            url: crate::hub::shown(url),
            detail,
        },
    })
}

/// Hands out chunk indices in order, each with its buffer, so the chunk the blob writer waits for
/// always holds a buffer and out-of-order chunks can never starve it.
struct Dispenser {
    next: Mutex<u64>,
    count: u64,
}

impl Dispenser {
    async fn next(&self, run: &Run<'_>) -> Option<(u64, Buffer)> {
        let mut next = self.next.lock().await;
        if *next >= self.count {
            return None;
        }
        let buffer = run.buffers.take().await?;
        let index = *next;
        *next += 1;
        Some((index, buffer))
    }
}

/// Parallel `Range` chunks (one buffer each) from `from` to the end.
async fn chunked(
    run: &Run<'_>,
    src: &Source<'_>,
    ctx: &RequestCtx,
    label: &str,
    size: u64,
    from: u64,
    tx: &mpsc::Sender<Msg>,
) -> Result<(), Stop> {
    let mut retrier = Retrier::new(src.client);
    let url = loop {
        if let Some(url) = retrier
            .settle(label, src.client.locate(src.url, ctx).await)
            .await?
        {
            break url;
        }
    };
    let chunk = run.buffers.size() as u64;
    let dispenser = Dispenser {
        next: Mutex::new(0),
        count: (size - from).div_ceil(chunk),
    };
    let workers = (run.opts.jobs.max(1) as u64).min(dispenser.count) as usize;
    let worker = || async {
        while let Some((index, buffer)) = dispenser.next(run).await {
            let start = from + index * chunk;
            let end = (start + chunk).min(size) - 1;
            let data = fetch_chunk(
                run,
                &Source {
                    client: src.client,
                    url: &url,
                    may_restart: false,
                },
                ctx,
                label,
                start,
                end,
                buffer,
            )
            .await?;
            tx.send(Msg::Data {
                offset: start,
                data,
            })
            .await
            .map_err(|_| Stop::WriterClosed)?;
        }
        Ok::<(), Stop>(())
    };
    futures::future::try_join_all((0..workers).map(|_| worker())).await?;
    Ok(())
}

/// Bytes `start..=end` into `buf`, resuming inside the chunk after a drop.
async fn fetch_chunk(
    run: &Run<'_>,
    src: &Source<'_>,
    ctx: &RequestCtx,
    label: &str,
    start: u64,
    end: u64,
    mut buf: Buffer,
) -> Result<Buffer, Stop> {
    let len = (end - start + 1) as usize;
    let mut retrier = Retrier::new(src.client);
    let _conn = run
        .connections
        .acquire()
        .await
        .map_err(|_| Stop::WriterClosed)?;
    while buf.len() < len {
        let at = start + buf.len() as u64;
        let Some(mut resp) = retrier
            .settle(label, src.client.get_range(src.url, at, end, ctx).await)
            .await?
        else {
            continue;
        };
        match resp.status() {
            StatusCode::PARTIAL_CONTENT if range_start(&resp) == Some(at) => {}
            StatusCode::OK => return Err(Stop::NoRangeSupport),
            other => {
                return Err(bad_answer(
                    label,
                    src.url,
                    format!("asked for bytes {at}-{end}, got HTTP {other}"),
                ));
            }
        }
        loop {
            match resp.chunk().await {
                Ok(Some(data)) => {
                    if buf.len() + data.len() > len {
                        return Err(bad_answer(
                            label,
                            src.url,
                            format!("more bytes than the range {at}-{end}"),
                        ));
                    }
                    buf.extend(&data);
                    let n = data.len() as u64;
                    run.received.fetch_add(n, Ordering::Relaxed);
                    run.progress.advance(n);
                    retrier.retries = 0;
                }
                Ok(None) => {
                    if buf.len() < len {
                        let at = start + buf.len() as u64;
                        retrier.wait(label, format!("the server ended the response at byte {at} of range {start}-{end}"), None).await?;
                    }
                    break;
                }
                Err(e) => {
                    retrier
                        .wait(
                            label,
                            format!(
                                "connection lost at byte {}: {}",
                                start + buf.len() as u64,
                                crate::redact::error_chain(&e)
                            ),
                            None,
                        )
                        .await?;
                    break;
                }
            }
        }
    }
    Ok(buf)
}
