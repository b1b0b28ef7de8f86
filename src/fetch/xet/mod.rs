//! Xet-native downloads (docs/hub-protocol.md §8): for a file the lock records as stored in
//! Xet, ask the Hub for a CAS read token, ask the CAS for the file's reconstruction from the
//! first byte the store does not have yet, fetch the xorb byte ranges in parallel and decode
//! their chunks, in file order, into the same resumable, hash-while-writing partial file as
//! every other download. Nothing changes about verification: the blob is published only when
//! its sha256 matches the lock. Any failure here is reported to the caller, which falls back
//! to the plain HTTP path with a warning.

pub mod backfill;
pub mod cdc;
pub mod chunk;
pub mod protocol;
pub mod reuse;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;

use reqwest::StatusCode;
use tokio::sync::mpsc;
use url::Url;

use super::blob_writer::{BlobWriter, Msg};
use super::buffers::Buffer;
use super::{BlobError, BlobJob, Run};
use crate::hub::{Attempt, HubClient, HubError, RequestCtx};
use crate::store::chunk_index::ChunkMap;
use crate::store::{BlobClaim, StoreError};
use chunk::{ChunkError, Decoder};
use protocol::{Located, Reconstruction};
use reuse::{LocalChunks, Span};

/// Bytes of one xorb range request: a whole xorb range (they are at most 64 MiB) in one
/// request. Ranges are streamed (a range in flight holds a few frames, not its bytes), so
/// this only sets how many requests a descriptor takes: few, because a request has a fixed
/// cost at the CAS (the reference server reads the whole xorb for each); parallelism comes
/// from fetching the next terms' ranges ahead.
const PIECE: u64 = 64 << 20;
/// Ranges of one file in flight at once. The range a file is waiting for always runs; the
/// others (read-ahead, the next term's first range) each need one of the `--jobs` connection
/// permits, taken without waiting, so no range ever waits for a permit held by a range that
/// waits for its reader, and a fetch uses at most `--jobs` connections beyond one per file.
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

/// Downloads `job` through Xet into the store and publishes it once its sha256 matched,
/// copying chunks the store already holds; returns the bytes copied instead of downloaded.
/// If a file built with copied chunks does not match its sha256 (a local blob changed under
/// the store), it is built once more from the CAS alone. `counted` is the progress already
/// shown for this blob (see the plain path).
pub(super) async fn blob(
    run: &Run<'_>,
    job: &BlobJob,
    claim: &BlobClaim,
    hash: &str,
    counted: &mut u64,
) -> Result<u64, BlobError> {
    for use_ in &job.uses {
        let learned = run
            .xet_backfill
            .earlier_blobs(
                run.store,
                run.client,
                &run.xet_tokens,
                &use_.repo,
                &use_.path,
                &job.sha256,
            )
            .await;
        for map in &learned {
            run.xet_local.forget(map);
        }
    }
    match once(run, job, claim, hash, counted, true).await {
        Err((BlobError::Store { label, source }, reused))
            if reused > 0 && matches!(source, StoreError::HashMismatch { .. }) =>
        {
            tracing::warn!(
                "{label}: the file built with chunks copied from the store did not match its sha256; downloading every chunk from the CAS"
            );
            once(run, job, claim, hash, counted, false)
                .await
                .map_err(|(e, _)| e)
        }
        other => other.map_err(|(e, _)| e),
    }
}

/// One build of the blob; the error comes with the bytes that were copied from the store.
async fn once(
    run: &Run<'_>,
    job: &BlobJob,
    claim: &BlobClaim,
    hash: &str,
    counted: &mut u64,
    reuse: bool,
) -> Result<u64, (BlobError, u64)> {
    let use_ = &job.uses[0];
    let label = use_.label();
    let store_err = |source: StoreError| BlobError::Store {
        label: label.clone(),
        source,
    };
    let other = |detail: String| BlobError::Other {
        label: label.clone(),
        detail,
    };
    let partial = super::download::begin(run, job, claim, counted)
        .await
        .map_err(|e| (e, 0))?;
    let from = partial.len();
    let writer = BlobWriter::spawn(partial);
    let mut built = Built {
        map: ChunkMap::new(job.size),
        reused: 0,
        reuse: reuse.then_some(&run.xet_local),
    };
    let outcome = if from == job.size {
        Ok(())
    } else {
        download(run, job, hash, from, &writer.tx, &mut built).await
    };
    let written = writer.finish().await;
    let reused = built.reused;
    match (outcome, written) {
        (Err(stop), Ok(partial)) => {
            *counted = (*counted).max(partial.len());
            let _ = tokio::task::spawn_blocking(move || partial.suspend()).await;
            let detail = match stop {
                XetStop::Refused(d) | XetStop::Failed(d) => d,
                XetStop::WriterClosed => "the writer stopped before the download ended".into(),
            };
            Err((other(detail), reused))
        }
        (_, Err(e)) => Err((store_err(e), reused)),
        (Ok(()), Ok(partial)) => {
            tokio::task::spawn_blocking(move || partial.publish())
                .await
                .map_err(|e| (other(e.to_string()), reused))?
                .map_err(|e| (store_err(e), reused))?;
            // The blob is published: from now on its chunks may serve other files.
            match run.store.record_chunks(&job.sha256, &built.map) {
                Ok(()) => run.xet_local.forget(&built.map),
                Err(e) => tracing::debug!("{label}: the chunk index was not updated: {e}"),
            }
            Ok(reused)
        }
    }
}

/// What one build gathers besides the bytes: the chunk map of the new blob, and the bytes
/// copied from the store.
struct Built<'a> {
    map: ChunkMap,
    reused: u64,
    /// Where local chunks are looked up; `None` builds from the CAS alone.
    reuse: Option<&'a LocalChunks>,
}

/// Bytes `from..size` of the file, in order, into the writer; asks for a new reconstruction
/// (from where it got to) when the CAS refuses the token or a URL.
async fn download(
    run: &Run<'_>,
    job: &BlobJob,
    hash: &str,
    from: u64,
    tx: &mpsc::Sender<Msg>,
    built: &mut Built<'_>,
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
        match write_terms(run, &recon, &mut at, job.size, tx, &ctx, built).await {
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

/// Where a term's chunks come from.
enum Source {
    /// Copied from blobs in the store.
    Local(Vec<Span>),
    /// Fetched from the CAS.
    Remote(Located),
}

/// A descriptor (a byte range of a xorb) is named by its URL and first byte.
type DescriptorKey = (String, u64);

/// Fetches the terms of `recon` or copies them from the store, and writes their chunks, in
/// order, from `*at`. Each descriptor is read once even when several terms use it (the CAS
/// merges a xorb's ranges), as long as they ask for its chunks in order, and the next
/// remote term's first pieces are fetched while the current one is written.
async fn write_terms(
    run: &Run<'_>,
    recon: &Reconstruction,
    at: &mut u64,
    size: u64,
    tx: &mpsc::Sender<Msg>,
    ctx: &RequestCtx,
    built: &mut Built<'_>,
) -> Result<(), XetStop> {
    let mut sources: Vec<Source> = Vec::with_capacity(recon.terms.len());
    for term in &recon.terms {
        if let Some(spans) = built.reuse.and_then(|local| local.plan(term)) {
            sources.push(Source::Local(spans));
            continue;
        }
        sources.push(Source::Remote(recon.locate(term).ok_or_else(|| {
            XetStop::Failed(format!(
                "the reconstruction names no fetchable range for xorb {}",
                term.hash
            ))
        })?));
    }
    let key = |l: &Located| -> DescriptorKey { (l.url.clone(), l.range.bytes.start) };
    let mut last_use: HashMap<DescriptorKey, usize> = HashMap::new();
    for (i, source) in sources.iter().enumerate() {
        if let Source::Remote(l) = source {
            last_use.insert(key(l), i);
        }
    }
    let fetcher = Fetcher {
        client: run.client.clone(),
        ctx: ctx.clone(),
        connections: run.connections.clone(),
        received: run.received.clone(),
        policy: run.client.retry_policy(),
    };
    let mut cursors: HashMap<DescriptorKey, Cursor> = HashMap::new();
    let mut sink = Sink {
        out: Output {
            run,
            tx,
            at: *at,
            pending: None,
        },
        skip: recon.offset_into_first_range,
        pos: at.saturating_sub(recon.offset_into_first_range),
        size,
        map: &mut built.map,
        reused: 0,
    };
    for (i, (term, source)) in recon.terms.iter().zip(&sources).enumerate() {
        if sink.out.written() >= size {
            break;
        }
        match source {
            Source::Local(spans) => {
                prefetch_next(&sources[i + 1..], &mut cursors, &fetcher, key, None)?;
                let Some(local) = built.reuse else { continue };
                copy_local(local, spans, term, &mut sink).await?;
            }
            Source::Remote(l) => {
                let k = key(l);
                let mut cursor = match cursors.remove(&k) {
                    // Chunks before those already decoded: read the descriptor again.
                    Some(c) if c.chunk <= term.range.start => c,
                    _ => Cursor::new(l, &fetcher)?,
                };
                cursor.top_up(&fetcher, PIECES_IN_FLIGHT, false);
                prefetch_next(&sources[i + 1..], &mut cursors, &fetcher, key, Some(&k))?;
                let mut term_bytes = 0u64;
                while cursor.chunk < term.range.end {
                    let index = cursor.chunk;
                    let Some(chunk) = cursor.next_chunk(&fetcher).await? else {
                        return Err(XetStop::Failed(format!(
                            "xorb {} ended at chunk {index}, the reconstruction needs chunks up to {}",
                            term.hash, term.range.end
                        )));
                    };
                    if index >= term.range.start {
                        term_bytes += chunk.len() as u64;
                        sink.chunk(&term.hash, index, chunk, false).await?;
                    }
                }
                if term_bytes != term.unpacked_length {
                    return Err(XetStop::Failed(format!(
                        "xorb {} chunks {}..{} decoded to {term_bytes} bytes, the reconstruction says {}",
                        term.hash, term.range.start, term.range.end, term.unpacked_length
                    )));
                }
                if cursor.chunk == l.range.chunks.end {
                    cursor.finish()?;
                }
                if last_use.get(&k).is_some_and(|&last| last > i) {
                    cursors.insert(k, cursor);
                }
            }
        }
    }
    sink.out.flush().await?;
    *at = sink.out.written();
    built.reused += sink.reused;
    if *at < size && recon.terms.is_empty() {
        return Err(XetStop::Failed(format!(
            "the reconstruction has no terms for bytes from {at}"
        )));
    }
    Ok(())
}

/// Starts fetching the descriptors of the next remote terms in `rest` that no cursor reads
/// yet (up to [`PREFETCH_TERMS`]), so their first pieces are on their way while the current
/// term is written. `current` is the descriptor the current term reads (its cursor is out of
/// the map meanwhile).
fn prefetch_next(
    rest: &[Source],
    cursors: &mut HashMap<DescriptorKey, Cursor>,
    fetcher: &Fetcher,
    key: impl Fn(&Located) -> DescriptorKey,
    current: Option<&DescriptorKey>,
) -> Result<(), XetStop> {
    let next = rest
        .iter()
        .filter_map(|s| match s {
            Source::Remote(l) => Some(l),
            Source::Local(_) => None,
        })
        .take(PREFETCH_TERMS);
    for l in next {
        let k = key(l);
        if Some(&k) != current && !cursors.contains_key(&k) {
            let mut cursor = Cursor::new(l, fetcher)?;
            cursor.top_up(fetcher, 1, false);
            cursors.insert(k, cursor);
        }
    }
    Ok(())
}

/// Copies a term's chunks from blobs in the store.
async fn copy_local(
    local: &LocalChunks,
    spans: &[Span],
    term: &protocol::Term,
    sink: &mut Sink<'_, '_, '_>,
) -> Result<(), XetStop> {
    let mut index = term.range.start;
    let mut bytes = Vec::new();
    for span in spans {
        let mut offset = span.offset;
        for batch in span.lens.chunks(BATCH_CHUNKS) {
            let len: u64 = batch.iter().map(|&l| u64::from(l)).sum();
            bytes = local
                .read(&span.blob, offset, len as usize, std::mem::take(&mut bytes))
                .await
                .map_err(|e| XetStop::Failed(format!("reading a local chunk: {e}")))?;
            let mut cut = 0usize;
            for &l in batch {
                sink.chunk(&term.hash, index, &bytes[cut..cut + l as usize], true)
                    .await?;
                cut += l as usize;
                index += 1;
            }
            offset += len;
        }
    }
    Ok(())
}

/// Remote terms ahead of the current one whose first piece is fetched early (a waiting
/// range holds one body frame, so this costs little memory and hides each request's latency).
const PREFETCH_TERMS: usize = 3;

/// A piece being fetched in its own task, its body frames arriving through a small channel;
/// dropping it stops the task.
struct InFlight {
    task: tokio::task::JoinHandle<()>,
    rx: mpsc::Receiver<Result<bytes::Bytes, XetStop>>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One descriptor being read: pieces fetched ahead, decoded a chunk at a time, so a term
/// takes exactly its chunks and leaves the rest for the next term of the same descriptor.
struct Cursor {
    url: Url,
    client: HubClient,
    /// Next byte to ask for.
    next_fetch: u64,
    /// Last byte of the descriptor (inclusive).
    last: u64,
    /// Index of the next chunk the decoder gives.
    chunk: u32,
    decoder: Decoder,
    in_flight: VecDeque<InFlight>,
}

impl Cursor {
    /// A cursor at the start of the descriptor `l`; the presigned URL gets no credential.
    fn new(l: &Located, fetcher: &Fetcher) -> Result<Self, XetStop> {
        let url = Url::parse(&l.url)
            .map_err(|_| XetStop::Failed("the reconstruction holds a malformed URL".into()))?;
        let client = fetcher.client.for_mirror(&url, None)?;
        Ok(Cursor {
            url,
            client,
            next_fetch: l.range.bytes.start,
            last: l.range.bytes.end,
            chunk: l.range.chunks.start,
            decoder: Decoder::default(),
            in_flight: VecDeque::new(),
        })
    }

    /// Keeps up to `limit` pieces in flight, as far as connection permits allow; with
    /// `waiting` (the reader needs this cursor's next bytes now) the first piece runs even
    /// without one.
    fn top_up(&mut self, fetcher: &Fetcher, limit: usize, waiting: bool) {
        while self.in_flight.len() < limit && self.next_fetch <= self.last {
            let permit = match fetcher.connections.clone().try_acquire_owned() {
                Ok(p) => Some(p),
                Err(_) if waiting && self.in_flight.is_empty() => None,
                Err(_) => break,
            };
            let end = (self.next_fetch + PIECE - 1).min(self.last);
            let piece = fetcher.range(
                self.client.clone(),
                self.url.clone(),
                self.next_fetch,
                end,
                permit,
            );
            self.in_flight.push_back(piece);
            self.next_fetch = end + 1;
        }
    }

    /// The next decoded chunk, or `None` at the end of the descriptor.
    async fn next_chunk(&mut self, fetcher: &Fetcher) -> Result<Option<&[u8]>, XetStop> {
        while !self.decoder.has_chunk()? {
            self.top_up(fetcher, PIECES_IN_FLIGHT, true);
            let Some(piece) = self.in_flight.front_mut() else {
                self.decoder.finish()?;
                return Ok(None);
            };
            match piece.rx.recv().await {
                Some(frame) => self.decoder.push(&frame?),
                // The whole range arrived (a failure would have been the last message).
                None => {
                    self.in_flight.pop_front();
                    self.top_up(fetcher, PIECES_IN_FLIGHT, true);
                }
            }
        }
        self.chunk += 1;
        Ok(self.decoder.next_chunk()?)
    }

    /// Checks that the descriptor ended on a chunk boundary.
    fn finish(&self) -> Result<(), XetStop> {
        if self.in_flight.is_empty() && self.next_fetch > self.last {
            self.decoder.finish()?;
        }
        Ok(())
    }
}

/// What a range task needs, owned, so pieces run in their own tasks.
#[derive(Clone)]
struct Fetcher {
    client: HubClient,
    ctx: RequestCtx,
    connections: std::sync::Arc<tokio::sync::Semaphore>,
    received: std::sync::Arc<std::sync::atomic::AtomicU64>,
    policy: crate::retry::RetryPolicy,
}

/// Chunks read from the store at once.
const BATCH_CHUNKS: usize = 16;

/// Where the chunks of a term go: the bytes to the writer (less the part of the first term
/// before the asked range), their places to the new blob's chunk map.
struct Sink<'a, 'b, 'r> {
    out: Output<'a, 'r>,
    /// Bytes still to drop before the asked range starts.
    skip: u64,
    /// File offset of the next chunk's first byte.
    pos: u64,
    size: u64,
    map: &'b mut ChunkMap,
    /// Bytes copied from the store.
    reused: u64,
}

impl Sink<'_, '_, '_> {
    /// One whole chunk of the file.
    async fn chunk(
        &mut self,
        xorb: &str,
        index: u32,
        data: &[u8],
        local: bool,
    ) -> Result<(), XetStop> {
        if let Ok(len) = u32::try_from(data.len()) {
            self.map.push(xorb, index, self.pos, len);
        }
        self.pos += data.len() as u64;
        let mut data = data;
        if self.skip > 0 {
            let n = self.skip.min(data.len() as u64);
            self.skip -= n;
            data = &data[n as usize..];
        }
        let before = self.out.written();
        self.out.queue(data, self.size).await?;
        if local {
            self.reused += self.out.written() - before;
        }
        Ok(())
    }
}

/// Decoded bytes on their way to the blob writer, copied straight into pooled buffers (the
/// fetch's memory budget), each handed over when full.
struct Output<'a, 'r> {
    run: &'a Run<'r>,
    tx: &'a mpsc::Sender<Msg>,
    /// File offset of the next byte queued.
    at: u64,
    /// The buffer being filled, with the file offset of its first byte.
    pending: Option<(u64, Buffer)>,
}

impl Output<'_, '_> {
    /// Queues bytes (dropping anything past the file's size), handing over full buffers.
    async fn queue(&mut self, data: &[u8], size: u64) -> Result<(), XetStop> {
        let room = size.saturating_sub(self.at) as usize;
        let mut data = &data[..data.len().min(room)];
        while !data.is_empty() {
            if self.pending.is_none() {
                let buf = self.run.buffers.take().await.ok_or(XetStop::WriterClosed)?;
                self.pending = Some((self.at, buf));
            }
            let Some((_, buf)) = self.pending.as_mut() else {
                return Err(XetStop::WriterClosed);
            };
            let n = buf.room().min(data.len());
            buf.extend(&data[..n]);
            let full = buf.room() == 0;
            self.at += n as u64;
            self.run.progress.advance(n as u64);
            data = &data[n..];
            if full {
                self.flush().await?;
            }
        }
        Ok(())
    }

    /// Offset after the last byte queued.
    fn written(&self) -> u64 {
        self.at
    }

    /// Hands over what is queued.
    async fn flush(&mut self) -> Result<(), XetStop> {
        let Some((offset, data)) = self.pending.take() else {
            return Ok(());
        };
        self.tx
            .send(Msg::Data { offset, data })
            .await
            .map_err(|_| XetStop::WriterClosed)
    }
}

impl Fetcher {
    /// Streams bytes `start..=end` of a xorb into a small channel, with bounded retries
    /// (resuming from the last byte sent); a failure is the last message.
    /// `permit` is the connection permit it holds while it runs (none for the range a file
    /// is waiting for).
    fn range(
        &self,
        client: HubClient,
        url: Url,
        start: u64,
        end: u64,
        permit: Option<tokio::sync::OwnedSemaphorePermit>,
    ) -> InFlight {
        let (tx, rx) = mpsc::channel(FRAMES_BUFFERED);
        let (ctx, received, policy) = (self.ctx.clone(), self.received.clone(), self.policy);
        let task = tokio::spawn(async move {
            let _permit = permit;
            let piece = Piece { start, end };
            let streamed = stream_range(&client, &url, &piece, &ctx, &received, policy, &tx).await;
            if let Err(stop) = streamed {
                let _ = tx.send(Err(stop)).await;
            }
        });
        InFlight { task, rx }
    }
}

/// Body frames of one range buffered ahead of the decoder (a frame is at most a few tens of
/// KiB): what a piece in flight holds in memory, whatever its size.
const FRAMES_BUFFERED: usize = 1;

/// An inclusive byte range of a xorb.
struct Piece {
    start: u64,
    end: u64,
}

/// One xorb byte range, with bounded retries; the presigned URL gets no credential.
async fn stream_range(
    client: &HubClient,
    url: &Url,
    piece: &Piece,
    ctx: &RequestCtx,
    received: &std::sync::atomic::AtomicU64,
    policy: crate::retry::RetryPolicy,
    tx: &mpsc::Sender<Result<bytes::Bytes, XetStop>>,
) -> Result<(), XetStop> {
    let len = piece.end - piece.start + 1;
    let mut sent = 0u64;
    let mut attempts = 0;
    while sent < len {
        let from = piece.start + sent;
        let failure = match client.get_range(url, from, piece.end, ctx).await {
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
                                if sent + data.len() as u64 > len {
                                    return Err(XetStop::Failed(format!(
                                        "the CAS sent more than the {len} bytes of range {}-{}",
                                        piece.start, piece.end
                                    )));
                                }
                                sent += data.len() as u64;
                                received.fetch_add(data.len() as u64, Ordering::Relaxed);
                                attempts = 0;
                                if tx.send(Ok(data)).await.is_err() {
                                    return Err(XetStop::WriterClosed);
                                }
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
                    if sent >= len {
                        break;
                    }
                    if failure.is_empty() {
                        format!("a xorb range ended at {sent} of {len} bytes")
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
    Ok(())
}
