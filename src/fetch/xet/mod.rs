//! Xet-native downloads (docs/hub-protocol.md §8): for a file the lock records as stored in
//! Xet, ask the Hub for a CAS read token, ask the CAS for the file's reconstruction from the
//! first byte the store does not have yet, fetch the xorb byte ranges in parallel and decode
//! their chunks, in file order, into the same resumable, hash-while-writing partial file as
//! every other download. Nothing changes about verification: the blob is published only when
//! its sha256 matches the lock. Any failure here is reported to the caller, which falls back
//! to the plain HTTP path with a warning.

pub mod chunk;
pub mod protocol;

use std::sync::atomic::Ordering;

use futures::{StreamExt, TryStreamExt, stream};
use reqwest::StatusCode;
use tokio::sync::mpsc;
use url::Url;

use super::blob_writer::{BlobWriter, Msg};
use super::buffers::Buffer;
use super::{BlobError, BlobJob, Run};
use crate::hub::{Attempt, HubClient, HubError, RequestCtx};
use crate::store::{BlobClaim, StoreError};
use chunk::{ChunkError, Decoder};
use protocol::{Located, Reconstruction};

/// Bytes of one xorb range request: small enough that the ranges in flight stay within the
/// memory budget, large enough for full-speed streams.
const PIECE: u64 = 2 << 20;
/// Ranges of one file in flight at once (also bounded by `--jobs` connections overall).
const PIECES_IN_FLIGHT: usize = 4;
/// How many times a reconstruction is asked again after its URLs or token were refused.
const MAX_ROUNDS: u32 = 3;
/// Attempts of one range request.
const MAX_RANGE_ATTEMPTS: u32 = 4;

/// Why the Xet path stopped.
#[derive(Debug)]
enum XetStop {
    /// The CAS refused the token or a URL expired: ask again with a fresh token.
    Refused(String),
    /// The blob writer is gone.
    WriterClosed,
    /// Anything else.
    Failed(String),
}

impl From<HubError> for XetStop {
    fn from(e: HubError) -> Self {
        XetStop::Failed(e.to_string())
    }
}

impl From<ChunkError> for XetStop {
    fn from(e: ChunkError) -> Self {
        XetStop::Failed(format!("the CAS sent bytes that do not decode: {e}"))
    }
}

/// Downloads `job` through Xet into the store and publishes it once its sha256 matched.
/// `counted` is the progress already shown for this blob (see the plain path).
pub(super) async fn blob(
    run: &Run<'_>,
    job: &BlobJob,
    claim: &BlobClaim,
    hash: &str,
    counted: &mut u64,
) -> Result<(), BlobError> {
    let use_ = &job.uses[0];
    let label = use_.label();
    let store_err = |source: StoreError| BlobError::Store {
        label: label.clone(),
        source,
    };
    let partial = {
        let (store, sha, size, claim) = (
            run.store.clone(),
            job.sha256.clone(),
            job.size,
            claim.clone(),
        );
        tokio::task::spawn_blocking(move || store.begin(&sha, size, &claim))
            .await
            .map_err(|e| BlobError::Other {
                label: label.clone(),
                detail: e.to_string(),
            })?
            .map_err(store_err)?
    };
    let from = partial.len();
    if from > 0 {
        tracing::info!("{label}: resuming at byte {from} of {} (Xet)", job.size);
    }
    run.progress.advance(from.saturating_sub(*counted));
    *counted = (*counted).max(from);
    let writer = BlobWriter::spawn(partial);
    let outcome = if from == job.size {
        Ok(())
    } else {
        download(run, job, hash, from, &writer.tx).await
    };
    let written = writer.finish().await;
    match (outcome, written) {
        (Err(stop), Ok(partial)) => {
            *counted = (*counted).max(partial.len());
            let _ = tokio::task::spawn_blocking(move || partial.suspend()).await;
            let detail = match stop {
                XetStop::Refused(d) | XetStop::Failed(d) => d,
                XetStop::WriterClosed => "the writer stopped before the download ended".into(),
            };
            Err(BlobError::Other { label, detail })
        }
        (_, Err(e)) => Err(store_err(e)),
        (Ok(()), Ok(partial)) => tokio::task::spawn_blocking(move || partial.publish())
            .await
            .map_err(|e| BlobError::Other {
                label: label.clone(),
                detail: e.to_string(),
            })?
            .map(|_| ())
            .map_err(store_err),
    }
}

/// Bytes `from..size` of the file, in order, into the writer; asks for a new reconstruction
/// (from where it got to) when the CAS refuses the token or a URL.
async fn download(
    run: &Run<'_>,
    job: &BlobJob,
    hash: &str,
    from: u64,
    tx: &mpsc::Sender<Msg>,
) -> Result<(), XetStop> {
    let use_ = &job.uses[0];
    let mut at = from;
    let mut stale: Option<String> = None;
    let mut rounds = 0;
    while at < job.size {
        let token = run
            .xet_tokens
            .get(run.client, &use_.repo, &use_.commit, stale.as_deref())
            .await?;
        let recon = match protocol::reconstruction(
            run.client,
            &token,
            &use_.repo,
            &use_.commit,
            hash,
            at,
            job.size,
        )
        .await
        {
            Ok(r) => r,
            Err(HubError::Http { status: 401, .. }) | Err(HubError::AuthRequired { .. })
                if rounds < MAX_ROUNDS =>
            {
                rounds += 1;
                stale = Some(token.token.expose().to_owned());
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let ctx = run
            .client
            .file_ctx(use_.repo.kind, &use_.repo.id, &use_.commit, &use_.path);
        match write_terms(run, &recon, &mut at, job.size, tx, &ctx).await {
            Ok(()) => {}
            Err(XetStop::Refused(reason)) if rounds < MAX_ROUNDS => {
                tracing::debug!("Xet: {reason}; asking for the reconstruction again");
                rounds += 1;
                stale = Some(token.token.expose().to_owned());
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// One piece of a term's descriptor to fetch.
struct Piece {
    term: usize,
    url: String,
    start: u64,
    end: u64,
    last: bool,
}

/// Fetches the terms of `recon` in parallel and writes their chunks, in order, from `*at`.
async fn write_terms(
    run: &Run<'_>,
    recon: &Reconstruction,
    at: &mut u64,
    size: u64,
    tx: &mpsc::Sender<Msg>,
    ctx: &RequestCtx,
) -> Result<(), XetStop> {
    let mut located: Vec<Located> = Vec::with_capacity(recon.terms.len());
    for term in &recon.terms {
        located.push(recon.locate(term).ok_or_else(|| {
            XetStop::Failed(format!(
                "the reconstruction names no fetchable range for xorb {}",
                term.hash
            ))
        })?);
    }
    let mut pieces = Vec::new();
    for (i, l) in located.iter().enumerate() {
        let mut start = l.range.bytes.start;
        loop {
            let end = (start + PIECE - 1).min(l.range.bytes.end);
            pieces.push(Piece {
                term: i,
                url: l.url.clone(),
                start,
                end,
                last: end == l.range.bytes.end,
            });
            if end == l.range.bytes.end {
                break;
            }
            start = end + 1;
        }
    }
    let mut fetched = stream::iter(pieces.into_iter().map(|p| async move {
        let bytes = fetch_range(run, &p, ctx).await?;
        Ok::<_, XetStop>((p, bytes))
    }))
    .buffered(PIECES_IN_FLIGHT.min(run.opts.jobs.max(1)));

    let mut out = Output {
        run,
        tx,
        at: *at,
        pending: None,
    };
    let mut skip = recon.offset_into_first_range;
    let mut decoder = Decoder::default();
    let mut chunk_index = 0u32;
    let mut term_bytes = 0u64;
    let mut current = usize::MAX;
    while let Some((piece, bytes)) = fetched.try_next().await? {
        let term = &recon.terms[piece.term];
        let l = &located[piece.term];
        if piece.term != current {
            current = piece.term;
            decoder = Decoder::default();
            chunk_index = l.range.chunks.start;
            term_bytes = 0;
        }
        let mut each = |data: &[u8]| -> Result<(), ChunkError> {
            let inside = (term.range.start..term.range.end).contains(&chunk_index);
            chunk_index += 1;
            if !inside {
                return Ok(());
            }
            term_bytes += data.len() as u64;
            let mut data = data;
            if skip > 0 {
                let n = skip.min(data.len() as u64);
                skip -= n;
                data = &data[n as usize..];
            }
            out.queue(data, size);
            Ok(())
        };
        decoder.feed(&bytes, &mut each)?;
        out.flush_full().await?;
        if piece.last {
            decoder.finish()?;
            if chunk_index != l.range.chunks.end || term_bytes != term.unpacked_length {
                return Err(XetStop::Failed(format!(
                    "xorb {} decoded to {term_bytes} bytes in {} chunks, the reconstruction says {} bytes in {}",
                    term.hash,
                    chunk_index - l.range.chunks.start,
                    term.unpacked_length,
                    l.range.chunks.end - l.range.chunks.start
                )));
            }
        }
        if out.written() >= size {
            break;
        }
    }
    out.flush().await?;
    *at = out.written();
    if *at < size && recon.terms.is_empty() {
        return Err(XetStop::Failed(format!(
            "the reconstruction has no terms for bytes from {at}"
        )));
    }
    Ok(())
}

/// Decoded bytes on their way to the blob writer, gathered into pooled buffers.
struct Output<'a, 'r> {
    run: &'a Run<'r>,
    tx: &'a mpsc::Sender<Msg>,
    /// File offset of the next byte queued.
    at: u64,
    /// Bytes not yet handed over: their file offset and contents.
    pending: Option<(u64, Vec<u8>)>,
}

impl Output<'_, '_> {
    /// Queues bytes (dropping anything past the file's size).
    fn queue(&mut self, data: &[u8], size: u64) {
        let room = size.saturating_sub(self.at) as usize;
        let data = &data[..data.len().min(room)];
        if data.is_empty() {
            return;
        }
        let at = self.at;
        self.pending
            .get_or_insert_with(|| (at, Vec::new()))
            .1
            .extend_from_slice(data);
        self.at += data.len() as u64;
        self.run.progress.advance(data.len() as u64);
    }

    /// Offset after the last byte queued.
    fn written(&self) -> u64 {
        self.at
    }

    /// Hands over whole buffers' worth of queued bytes.
    async fn flush_full(&mut self) -> Result<(), XetStop> {
        let size = self.run.buffers.size();
        while self.pending.as_ref().is_some_and(|p| p.1.len() >= size) {
            let (start, mut bytes) = self.pending.take().ok_or(XetStop::WriterClosed)?;
            let rest = bytes.split_off(size);
            self.send(start, &bytes).await?;
            if !rest.is_empty() {
                self.pending = Some((start + size as u64, rest));
            }
        }
        Ok(())
    }

    /// Hands over everything queued.
    async fn flush(&mut self) -> Result<(), XetStop> {
        self.flush_full().await?;
        if let Some((start, bytes)) = self.pending.take() {
            self.send(start, &bytes).await?;
        }
        Ok(())
    }

    async fn send(&self, start: u64, bytes: &[u8]) -> Result<(), XetStop> {
        let mut buf: Buffer = self.run.buffers.take().await.ok_or(XetStop::WriterClosed)?;
        buf.extend(bytes);
        self.tx
            .send(Msg::Data {
                offset: start,
                data: buf,
            })
            .await
            .map_err(|_| XetStop::WriterClosed)
    }
}

/// One xorb byte range, with bounded retries; the presigned URL gets no credential.
async fn fetch_range(run: &Run<'_>, piece: &Piece, ctx: &RequestCtx) -> Result<Vec<u8>, XetStop> {
    let url = Url::parse(&piece.url)
        .map_err(|_| XetStop::Failed("the reconstruction holds a malformed URL".into()))?;
    let client: HubClient = run.client.for_mirror(&url, None)?;
    let len = (piece.end - piece.start + 1) as usize;
    let policy = run.client.retry_policy();
    let mut out = Vec::with_capacity(len);
    let mut attempts = 0;
    let _conn = run
        .connections
        .acquire()
        .await
        .map_err(|_| XetStop::WriterClosed)?;
    while out.len() < len {
        let from = piece.start + out.len() as u64;
        let failure = match client.get_range(&url, from, piece.end, ctx).await {
            Attempt::Done(mut resp) => {
                if resp.status() != StatusCode::PARTIAL_CONTENT
                    && !(from == 0 && resp.status() == StatusCode::OK)
                {
                    format!(
                        "asked for xorb bytes {from}-{}, got HTTP {}",
                        piece.end,
                        resp.status()
                    )
                } else {
                    let mut failure = String::new();
                    loop {
                        match resp.chunk().await {
                            Ok(Some(data)) => {
                                if out.len() + data.len() > len {
                                    return Err(XetStop::Failed(format!(
                                        "the CAS sent more than the {len} bytes of range {}-{}",
                                        piece.start, piece.end
                                    )));
                                }
                                out.extend_from_slice(&data);
                                run.received.fetch_add(data.len() as u64, Ordering::Relaxed);
                                attempts = 0;
                            }
                            Ok(None) => break,
                            Err(e) => {
                                failure = format!(
                                    "connection lost in a xorb range: {}",
                                    crate::redact::error_chain(&e)
                                );
                                break;
                            }
                        }
                    }
                    if out.len() >= len {
                        break;
                    }
                    if failure.is_empty() {
                        format!("a xorb range ended at {} of {len} bytes", out.len())
                    } else {
                        failure
                    }
                }
            }
            Attempt::Retry { reason, .. } => reason,
            Attempt::Fail(HubError::Http {
                status: 401 | 403, ..
            })
            | Attempt::Fail(HubError::AuthRequired { .. })
            | Attempt::Fail(HubError::AccessNotGranted { .. }) => {
                return Err(XetStop::Refused("the CAS refused a xorb URL".into()));
            }
            Attempt::Fail(e) => return Err(e.into()),
        };
        attempts += 1;
        if attempts >= MAX_RANGE_ATTEMPTS {
            return Err(XetStop::Failed(format!(
                "gave up on a xorb range after {attempts} attempts: {failure}"
            )));
        }
        tokio::time::sleep(policy.backoff(attempts - 1)).await;
    }
    Ok(out)
}
