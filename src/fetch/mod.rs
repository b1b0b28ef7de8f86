//! The download engine behind `modelbake fetch`: turns the lock into blobs, skips what the
//! store has, imports what an existing huggingface_hub cache has (after checking its hash),
//! and downloads the rest from the locked commit: in parallel across blobs, and across `Range`
//! chunks for large files, hashed while streaming, resumable, published only when verified.

mod buffers;
mod download;
mod import;
pub use import::reuse_caches;
pub mod mirrors;
pub use mirrors::MirrorPlan;
mod blob_writer;
mod xet;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use futures::{StreamExt, stream};
use serde::Serialize;
use tokio::sync::Semaphore;

use crate::hint::Hint;
use crate::hub::{HubClient, HubError};
use crate::lock::Lockfile;
use crate::repo::RepoKey;
use crate::store::{Store, StoreError};

/// Tuning and mode of a fetch.
#[derive(Debug, Clone)]
pub struct FetchOptions {
    /// Connections open at once, over all blobs.
    pub jobs: usize,
    /// No network: only the store and local caches may provide blobs.
    pub offline: bool,
    /// huggingface_hub cache folders (`.../hub`) to import matching blobs from.
    pub reuse: Vec<PathBuf>,
    /// Size of one `Range` chunk of a large file, and of each pooled download buffer.
    pub chunk_size: u64,
    /// Files larger than this are fetched in parallel chunks; smaller ones in one stream.
    pub chunk_threshold: u64,
    /// Upper bound of downloaded bytes held in memory at once (keeps peak RSS flat).
    pub memory_budget: u64,
    /// Mirror sources to try before the Hub, from the `[mirror]` plugins.
    pub mirrors: MirrorPlan,
    /// Download files the lock records as Xet-stored from the Xet CAS (off with `--no-xet`
    /// or `HF_HUB_DISABLE_XET`); any Xet failure falls back to plain HTTP.
    pub xet: bool,
}

impl Default for FetchOptions {
    fn default() -> Self {
        FetchOptions {
            jobs: 8,
            offline: false,
            reuse: Vec::new(),
            chunk_size: 8 << 20,
            chunk_threshold: 64 << 20,
            memory_budget: 32 << 20,
            mirrors: MirrorPlan::default(),
            xet: true,
        }
    }
}

impl FetchOptions {
    /// The defaults with the tuning knobs for unusual networks applied:
    /// `MODELBAKE_CHUNK_MIB` (at least 1), `MODELBAKE_CHUNK_THRESHOLD_MIB`, `MODELBAKE_MEMORY_MIB`.
    pub fn tuned(env: &dyn Fn(&str) -> Option<String>) -> Self {
        let mut o = FetchOptions::default();
        if let Some(v) = crate::env::mib(env, "MODELBAKE_CHUNK_MIB") {
            o.chunk_size = v.max(1 << 20);
        }
        if let Some(v) = crate::env::mib(env, "MODELBAKE_CHUNK_THRESHOLD_MIB") {
            o.chunk_threshold = v;
        }
        if let Some(v) = crate::env::mib(env, "MODELBAKE_MEMORY_MIB") {
            o.memory_budget = v;
        }
        // huggingface_hub's switch, honoured the same way: any true-ish value.
        if env("HF_HUB_DISABLE_XET").is_some_and(|v| {
            matches!(
                v.trim().to_ascii_lowercase().as_str(),
                "1" | "true" | "yes" | "on"
            )
        }) {
            o.xet = false;
        }
        o
    }
}

/// One place a blob is used: a file of a locked repo.
#[derive(Debug, Clone, Serialize)]
pub struct FileUse {
    /// The repo (serialised as its `kind` and `id`).
    #[serde(flatten)]
    pub repo: RepoKey,
    /// The locked commit.
    pub commit: String,
    /// The file's path in the repo.
    pub path: String,
    /// huggingface_hub's blob name for it (used to find it in existing caches).
    pub blob: String,
    /// The Xet file hash, when the lock records the file as stored in Xet.
    #[serde(skip)]
    pub xet_hash: Option<String>,
}

impl FileUse {
    /// `model `acme/tiny` file `config.json``, for messages.
    pub fn label(&self) -> String {
        format!("{} file `{}`", self.repo, self.path)
    }
}

/// One blob to make present: content identity plus every file that uses it.
#[derive(Debug, Clone)]
pub struct BlobJob {
    /// sha256 of the content.
    pub sha256: String,
    /// Size in bytes.
    pub size: u64,
    /// Files with this content (at least one).
    pub uses: Vec<FileUse>,
}

/// The blobs of a lock without copies of its strings: one `(sha256, repo, file)` row per
/// locked file (24 bytes), sorted so that each blob's files sit together in lock order. A
/// [`BlobJob`] is built from a group only while it is worked on, so a 100,000-file lock does
/// not hold 100,000 jobs with cloned paths, commits and ids.
struct BlobIndex<'a> {
    lock: &'a Lockfile,
    rows: Vec<(&'a str, u32, u32)>,
}

impl<'a> BlobIndex<'a> {
    fn new(lock: &'a Lockfile) -> Self {
        let mut rows = Vec::with_capacity(lock.repos.iter().map(|r| r.files.len()).sum());
        for (r, repo) in (0u32..).zip(&lock.repos) {
            for (f, file) in (0u32..).zip(&repo.files) {
                rows.push((file.sha256.as_str(), r, f));
            }
        }
        rows.sort_unstable();
        BlobIndex { lock, rows }
    }

    /// Each blob's rows, as a range of `rows`, in sha256 order.
    fn groups(&self) -> impl Iterator<Item = std::ops::Range<usize>> + '_ {
        let mut start = 0;
        self.rows.chunk_by(|a, b| a.0 == b.0).map(move |g| {
            start += g.len();
            start - g.len()..start
        })
    }

    /// The locked file of a row.
    fn file(&self, row: usize) -> (&'a crate::lock::LockedRepo, &'a crate::lock::LockedFile) {
        let (_, r, f) = self.rows[row];
        let repo = &self.lock.repos[r as usize];
        (repo, &repo.files[f as usize])
    }

    /// The size the lock gives a group's blob (its first file's).
    fn size(&self, group: &std::ops::Range<usize>) -> u64 {
        self.file(group.start).1.size
    }

    /// The job of a group.
    fn job(&self, group: std::ops::Range<usize>) -> BlobJob {
        let (_, first) = self.file(group.start);
        BlobJob {
            sha256: first.sha256.clone(),
            size: first.size,
            uses: group
                .map(|row| {
                    let (repo, f) = self.file(row);
                    FileUse {
                        repo: repo.key(),
                        commit: repo.commit.clone(),
                        path: f.path.clone(),
                        blob: f.blob.clone(),
                        xet_hash: f.xet_hash.clone(),
                    }
                })
                .collect(),
        }
    }
}

/// How a blob came to be in the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BlobOutcome {
    /// It already was there (no network).
    Present,
    /// Another process fetched it while we waited for its claim.
    FetchedByAnother,
    /// Copied from an existing huggingface_hub cache after its hash matched.
    Imported,
    /// Downloaded.
    Downloaded,
}

/// What `fetch` did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FetchReport {
    /// Distinct blobs the lock needs.
    pub blobs: usize,
    /// Their total size.
    pub bytes: u64,
    /// Blobs already in the store.
    pub present: usize,
    /// Blobs another process fetched meanwhile.
    pub fetched_by_another: usize,
    /// Blobs imported from huggingface_hub caches.
    pub imported: usize,
    /// Blobs downloaded.
    pub downloaded: usize,
    /// Bytes received over the network (resumed bytes are not counted twice).
    pub downloaded_bytes: u64,
    /// Blobs a mirror plugin's source delivered.
    pub from_mirrors: usize,
    /// Mirror sources that failed (HTTP error, wrong bytes…) before another source was tried.
    pub mirror_failures: Vec<String>,
    /// Mirror candidates refused before downloading (bad URL, missing credential).
    pub mirror_rejected: Vec<String>,
    /// Blobs downloaded through the Xet CAS.
    pub from_xet: usize,
    /// Xet downloads that failed and fell back to plain HTTP, with why.
    pub xet_fallbacks: Vec<String>,
    /// Bytes of Xet files copied from chunks of blobs already in the store instead of
    /// downloaded (a previous revision, another repo).
    pub xet_reused_bytes: u64,
}

/// Why `fetch` failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// `--offline` and some blobs are neither in the store nor in a local cache.
    #[error("--offline: {} blob(s) are missing from the store and from the local huggingface_hub caches:\n{}\nrun `modelbake fetch` with network access first", .0.len(), .0.iter().map(|m| format!("  - {m}")).collect::<Vec<_>>().join("\n"))]
    Missing(Vec<String>),
    /// Some blobs could not be fetched; the others were.
    #[error("{} of {total} blob(s) could not be fetched:\n{}", .failures.len(), .failures.iter().map(|m| format!("  - {m}")).collect::<Vec<_>>().join("\n"))]
    Failed {
        /// One message per failed blob.
        failures: Vec<String>,
        /// How many blobs were attempted.
        total: usize,
        /// The distinct hints of the failures, each once.
        hints: Vec<String>,
    },
    /// The store could not be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What to do about a failed fetch: the hints its blobs' failures had, or how to fill the
/// store without network.
impl Hint for FetchError {
    fn hint(&self) -> Option<String> {
        match self {
            FetchError::Missing(_) => Some(
                "offline, blobs come from the store (MODELBAKE_STORE or --store) and from \
                 huggingface_hub caches ($HF_HUB_CACHE, more with --reuse DIR): point them at a \
                 copy that has the files, e.g. a CI cache of the store keyed on models.lock"
                    .to_owned(),
            ),
            FetchError::Failed { hints, .. } => (!hints.is_empty()).then(|| hints.join("; ")),
            FetchError::Store(e) => e.hint(),
        }
    }
}

/// The failure of one blob, with the file it belongs to.
#[derive(Debug, thiserror::Error)]
enum BlobError {
    #[error("{label}: {source}")]
    Store { label: String, source: StoreError },
    #[error("{label}: {source}")]
    Hub { label: String, source: HubError },
    #[error("{label}: {detail}")]
    Other { label: String, detail: String },
    #[error("{label}: not available offline")]
    Offline { label: String },
    /// The sha256 did not match after resuming a partial download (whose first bytes may
    /// have come from another source); the partial was discarded.
    #[error("{label}: {source}")]
    ResumedMismatch { label: String, source: StoreError },
}

impl Hint for BlobError {
    fn hint(&self) -> Option<String> {
        match self {
            BlobError::Store { source, .. } => source.hint(),
            BlobError::Hub { source, .. } => source.hint(),
            BlobError::ResumedMismatch { .. } => Some(
                "the download resumed a partial file (left by an earlier run or another source) \
                 whose bytes were wrong; it was discarded, so running `modelbake fetch` again \
                 downloads the file from its first byte"
                    .to_owned(),
            ),
            BlobError::Other { .. } | BlobError::Offline { .. } => None,
        }
    }
}

impl BlobError {
    /// The message without the file label (for notes that already name the file).
    fn detail(&self) -> String {
        match self {
            BlobError::Store { source, .. } | BlobError::ResumedMismatch { source, .. } => {
                source.to_string()
            }
            BlobError::Hub { source, .. } => source.to_string(),
            BlobError::Other { detail, .. } => detail.clone(),
            BlobError::Offline { .. } => "not available offline".into(),
        }
    }

    /// The message for a mirror: plain HTTP facts, without the Hub's hints about tokens and
    /// repo kinds, which would mislead (the Hub token is never sent to a mirror).
    fn mirror_detail(&self) -> String {
        use crate::hub::HubError as H;
        match self {
            BlobError::Hub { source, .. } => match source {
                H::RepoNotFound { .. } | H::EntryNotFound { .. } | H::RevisionNotFound { .. } => {
                    "not found there (HTTP 404)".into()
                }
                H::AuthRequired { .. } | H::InvalidToken { .. } => {
                    "refused without valid credentials (HTTP 401)".into()
                }
                H::AccessNotGranted { .. } => "refused access (HTTP 403)".into(),
                other => other.to_string(),
            },
            other => other.detail(),
        }
    }
}

/// Progress callbacks for the front end; called from many tasks at once.
pub trait FetchProgress: Send + Sync {
    /// The work is known: `bytes` to obtain over `blobs` blobs.
    fn start(&self, _blobs: usize, _bytes: u64) {}
    /// `n` more bytes arrived (or were imported).
    fn advance(&self, _n: u64) {}
    /// A blob is done.
    fn blob_done(&self, _job: &BlobJob, _outcome: BlobOutcome) {}
}

/// Shared state of one fetch run.
struct Run<'a> {
    store: &'a Store,
    client: &'a HubClient,
    opts: &'a FetchOptions,
    connections: Arc<Semaphore>,
    buffers: Arc<buffers::Buffers>,
    received: Arc<AtomicU64>,
    progress: &'a dyn FetchProgress,
    from_mirrors: AtomicUsize,
    mirror_failures: Mutex<Vec<String>>,
    xet_tokens: xet::protocol::Tokens,
    xet_local: xet::reuse::LocalChunks,
    xet_backfill: xet::backfill::Backfill,
    xet_reused: AtomicU64,
    from_xet: AtomicUsize,
    xet_fallbacks: Mutex<Vec<String>>,
}

/// Makes every blob of `lock` present in `store`.
pub async fn fetch(
    lock: &Lockfile,
    store: &Store,
    client: &HubClient,
    opts: &FetchOptions,
    progress: &dyn FetchProgress,
) -> Result<FetchReport, FetchError> {
    let index = BlobIndex::new(lock);
    let mut report = FetchReport::default();
    let mut todo = Vec::new();
    for group in index.groups() {
        let size = index.size(&group);
        report.blobs += 1;
        report.bytes += size;
        let (_, first) = index.file(group.start);
        if store.has(&first.sha256, size) {
            report.present += 1;
            progress.blob_done(&index.job(group), BlobOutcome::Present);
        } else {
            todo.push(group);
        }
    }
    progress.start(todo.len(), todo.iter().map(|g| index.size(g)).sum());

    let run = Run {
        store,
        client,
        opts,
        connections: Arc::new(Semaphore::new(opts.jobs.max(1))),
        buffers: buffers::Buffers::new(opts.chunk_size.max(1 << 16) as usize, opts.memory_budget),
        received: Arc::new(AtomicU64::new(0)),
        progress,
        from_mirrors: AtomicUsize::new(0),
        mirror_failures: Mutex::new(Vec::new()),
        xet_tokens: Default::default(),
        xet_local: xet::reuse::LocalChunks::new(store.clone()),
        xet_backfill: Default::default(),
        xet_reused: AtomicU64::new(0),
        from_xet: AtomicUsize::new(0),
        xet_fallbacks: Mutex::new(Vec::new()),
    };
    // Biggest first, so large downloads start early and small ones fill the gaps.
    todo.sort_by(|a, b| {
        index
            .size(b)
            .cmp(&index.size(a))
            .then_with(|| index.rows[a.start].0.cmp(index.rows[b.start].0))
    });
    let total = todo.len();
    // Each result is taken as it comes: a job lives only while it is downloaded and reported.
    let mut results = stream::iter(todo)
        .map(|group| {
            let run = &run;
            let job = index.job(group);
            async move {
                let result = run.blob(&job).await;
                (job, result)
            }
        })
        .buffer_unordered(opts.jobs.max(1));

    let mut missing = Vec::new();
    let mut failures = Vec::new();
    let mut hints: Vec<String> = Vec::new();
    while let Some((job, result)) = results.next().await {
        match result {
            Ok(outcome) => {
                match outcome {
                    BlobOutcome::Present => report.present += 1,
                    BlobOutcome::FetchedByAnother => report.fetched_by_another += 1,
                    BlobOutcome::Imported => report.imported += 1,
                    BlobOutcome::Downloaded => report.downloaded += 1,
                }
                progress.blob_done(&job, outcome);
            }
            Err(BlobError::Offline { label }) => missing.push(label),
            Err(e) => {
                failures.push(e.to_string());
                if let Some(hint) = e.hint()
                    && !hints.contains(&hint)
                {
                    hints.push(hint);
                }
            }
        }
    }
    drop(results);
    remember_origins(&index, store);
    report.downloaded_bytes = run.received.load(Ordering::Relaxed);
    report.from_mirrors = run.from_mirrors.load(Ordering::Relaxed);
    report.mirror_failures = run
        .mirror_failures
        .lock()
        .map(|mut v| std::mem::take(&mut *v))
        .unwrap_or_default();
    report.mirror_failures.sort();
    report.mirror_rejected = opts.mirrors.rejected.clone();
    report.from_xet = run.from_xet.load(Ordering::Relaxed);
    report.xet_reused_bytes = run.xet_reused.load(Ordering::Relaxed);
    report.xet_fallbacks = run
        .xet_fallbacks
        .lock()
        .map(|mut v| std::mem::take(&mut *v))
        .unwrap_or_default();
    report.xet_fallbacks.sort();
    missing.sort();
    failures.sort();
    if !failures.is_empty() {
        return Err(FetchError::Failed {
            failures,
            total,
            hints,
        });
    }
    if !missing.is_empty() {
        return Err(FetchError::Missing(missing));
    }
    Ok(report)
}

/// Remembers, for every big file now in the store, "this repo file was this blob at this
/// commit", so that a later revision's Xet download can index and reuse its chunks.
fn remember_origins(index: &BlobIndex<'_>, store: &Store) {
    for group in index.groups() {
        if index.size(&group) < xet::backfill::MIN_INDEXED_SIZE {
            continue;
        }
        let job = index.job(group);
        if !store.has(&job.sha256, job.size) {
            continue;
        }
        for u in &job.uses {
            if let Err(e) =
                store.record_origin(&u.repo.qualified(), &u.path, &job.sha256, &u.commit)
            {
                tracing::debug!("{}: not remembered for chunk reuse: {e}", u.label());
            }
        }
    }
}

impl Run<'_> {
    /// Makes one blob present: claim it, then import or download it unless someone else did.
    async fn blob(&self, job: &BlobJob) -> Result<BlobOutcome, BlobError> {
        let label = job.uses[0].label();
        let store_err = |source| BlobError::Store {
            label: label.clone(),
            source,
        };
        let claim = match self.store.try_claim(&job.sha256).map_err(store_err)? {
            Some(claim) => claim,
            None => {
                let store = self.store.clone();
                let sha = job.sha256.clone();
                let claim = tokio::task::spawn_blocking(move || store.claim(&sha))
                    .await
                    .map_err(|e| BlobError::Other {
                        label: label.clone(),
                        detail: format!("waiting for the blob lock: {e}"),
                    })?
                    .map_err(store_err)?;
                if self.store.has(&job.sha256, job.size) {
                    return Ok(BlobOutcome::FetchedByAnother);
                }
                claim
            }
        };
        if self.store.has(&job.sha256, job.size) {
            return Ok(BlobOutcome::FetchedByAnother);
        }
        if import::from_caches(self, job, &claim).await? {
            return Ok(BlobOutcome::Imported);
        }
        if self.opts.offline {
            return Err(BlobError::Offline { label });
        }
        download::blob(self, job, &claim).await?;
        Ok(BlobOutcome::Downloaded)
    }
}
