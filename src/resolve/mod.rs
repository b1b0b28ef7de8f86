//! The `lock` engine: turns the manifest's intent into pinned lock entries in four steps.
//!
//! 1. `plugins::pin`: pin every declared plugin (sha256 of its bytes, digest of its config).
//! 2. `plan::plan`, without the network: keep each repo whose lock entry still matches the
//!    manifest (like Cargo), resolve the new and changed ones, those whose policy plugin
//!    changed and those named with `--update`; refuse `--offline` if anything needs resolving.
//! 3. `resolver::resolve`: resolve those against the Hub concurrently, running their policy
//!    plugins.
//! 4. `commit::commit`: the only place that decides what becomes of the lock, as the
//!    [`LockMode`] says: written, unchanged, up to date, or out of date.

mod commit;
mod plan;
mod plugins;
mod resolver;
pub use resolver::ListingError;

use std::path::PathBuf;

use serde::Serialize;

use crate::hub::{HubClient, HubError};
use crate::lock::diff::{PluginDrift, RepoDrift};
use crate::lock::{LockedRepo, Lockfile};
use crate::manifest::{Manifest, RepoSpec, SourceError};
use crate::plugin::{PluginError, PluginSet};
use crate::repo::{RepoId, RepoKind};

/// How `lock` should behave.
#[derive(Debug, Clone, Default)]
pub struct LockOptions {
    /// Repo ids to re-resolve even though their lock entry still matches the manifest.
    pub update: Vec<String>,
    /// Write the lock, or only check it (`--locked`).
    pub mode: LockMode,
    /// Never touch the network; fail if something needs resolving.
    pub offline: bool,
    /// How many repos to resolve at once (0 means the default).
    pub jobs: usize,
    /// The store's `plugins/` folder: compiled plugins and downloaded plugin files are kept
    /// there (`None`: nothing is cached).
    pub plugin_dir: Option<PathBuf>,
}

/// What `lock` may do with the lock file (uv's `LockMode`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LockMode {
    /// Write the lock when its bytes change.
    #[default]
    Write,
    /// `--locked`: never write; fail when the lock is missing or would change. Work that
    /// cannot change that answer is skipped: nothing is pinned or resolved without a lock,
    /// nothing is resolved once the manifest or a plugin differs from the lock, and a URL
    /// plugin the lock never pinned is not downloaded.
    Locked,
}

/// What became of the lock file in a successful run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The lock was (re)written.
    Written,
    /// The lock already had exactly these bytes and was left untouched.
    Unchanged,
    /// `--locked`: the lock is current (nothing was written).
    UpToDate,
}

impl Verdict {
    /// True when the file was (re)written; this is the `written` field of the JSON summary.
    pub fn written(&self) -> bool {
        *self == Verdict::Written
    }

    fn serialize_written<S: serde::Serializer>(v: &Verdict, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bool(v.written())
    }
}

/// Why a repo was (or was not) resolved in this run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RepoAction {
    /// The lock entry still matched the manifest and was kept without network access.
    Kept,
    /// The repo was new, its manifest entry changed or one of its policy plugins changed,
    /// and it was resolved.
    Resolved,
    /// The repo was re-resolved because `--update` named it.
    Updated,
}

/// What happened to one repo, for the summary.
#[derive(Debug, Clone, Serialize)]
pub struct RepoOutcome {
    /// Model, dataset or space.
    pub kind: RepoKind,
    /// The repo id.
    pub id: RepoId,
    /// The revision as written.
    pub revision: String,
    /// The pinned commit.
    pub commit: String,
    /// Number of locked files.
    pub files: usize,
    /// Total bytes of the locked files.
    pub bytes: u64,
    /// Why it was resolved or kept.
    pub action: RepoAction,
    /// How the entry changed compared with the previous lock, if it did.
    pub change: Option<String>,
    /// Files the repo's policy plugins dropped (only when it was resolved in this run).
    pub dropped: Vec<DroppedFile>,
}

/// A file a policy plugin chose not to lock, and why.
#[derive(Debug, Clone, Serialize)]
pub struct DroppedFile {
    /// Path in the repo.
    pub path: String,
    /// The policy plugin that dropped it.
    pub plugin: String,
    /// The plugin's reason.
    pub reason: String,
}

/// The result of a successful `lock`.
#[derive(Debug, Clone, Serialize)]
pub struct LockReport {
    /// Where the lock is.
    pub lockfile: PathBuf,
    /// What became of the file (`written` in JSON: whether it was (re)written).
    #[serde(rename = "written", serialize_with = "Verdict::serialize_written")]
    pub verdict: Verdict,
    /// Every locked repo, in lock order.
    pub repos: Vec<RepoOutcome>,
    /// Repos dropped from the lock because the manifest no longer lists them.
    pub removed: Vec<String>,
    /// How the plugin pins changed (added, removed, new bytes or configuration).
    pub plugins: Vec<PluginDrift>,
}

/// Why `lock` failed.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// The manifest or the existing lock could not be read.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// `--locked` and no lock exists.
    #[error(
        "{} does not exist and --locked forbids creating it: run `modelbake lock` and commit the result",
        crate::ui::display_path(.0)
    )]
    Missing(PathBuf),
    /// `--locked` and the lock would change.
    #[error("{} is out of date (--locked forbids changing it):\n{}\nrun `modelbake lock` and commit the result", crate::ui::display_path(.lockfile), .plugins.iter().map(|p| format!("  - {p}")).chain(.drift.iter().map(|d| format!("  - {d}"))).collect::<Vec<_>>().join("\n"))]
    OutOfDate {
        /// The lock that would change.
        lockfile: PathBuf,
        /// Which repos differ and why.
        drift: Vec<RepoDrift>,
        /// Which plugins changed and how.
        plugins: Vec<PluginDrift>,
    },
    /// `--offline` but some repo needs resolving.
    #[error("--offline: these repos need the network to be resolved: {}; run without --offline", .0.join(", "))]
    NeedsNetwork(Vec<String>),
    /// `--update` named a repo the manifest does not have.
    #[error("--update {0}: no repo with that id in the manifest")]
    UnknownUpdate(String),
    /// A Hub request failed.
    #[error(transparent)]
    Hub(#[from] HubError),
    /// The Hub's data broke an invariant (unsafe path, malformed hash, content mismatch).
    #[error("{repo}: {detail}")]
    BadData {
        /// `model `acme/tiny``.
        repo: String,
        /// What was wrong.
        detail: String,
    },
    /// The Hub's listing of a repo cannot be locked (unsafe names, an impossible tree).
    #[error("{repo}: {source}")]
    Listing {
        /// `model `acme/tiny``.
        repo: String,
        /// What is wrong with the listing.
        source: ListingError,
    },
    /// A plugin could not be loaded or failed.
    #[error(transparent)]
    Plugin(#[from] PluginError),
    /// The lock could not be written.
    #[error("cannot write {}: {source}", .path.display())]
    Write {
        /// The lock path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// What to do when `lock` fails.
impl crate::hint::Hint for LockError {
    fn hint(&self) -> Option<String> {
        let hint = match self {
            LockError::Source(e) => return e.hint(),
            LockError::Hub(e) => return e.hint(),
            LockError::Plugin(e) => return e.hint(),
            LockError::Missing(_) | LockError::NeedsNetwork(_) => {
                "run `modelbake lock` once with network access to the Hub and commit models.lock; \
                 `--locked` and `--offline` then only check it"
            }
            LockError::OutOfDate { .. } => {
                "run `modelbake lock` (it keeps every entry that still matches; `--update ID` also \
                 moves a repo to its branch's tip), review `git diff models.lock`, and commit it"
            }
            LockError::UnknownUpdate(_) => {
                "--update takes an `id` of a [[model]], [[dataset]] or [[space]] in the manifest, or \
                 the NAME of a [plugins.NAME] table"
            }
            LockError::BadData { .. } => {
                "check --endpoint / HF_ENDPOINT: a mirror or proxy may be serving other content; if \
                 it is the real Hub, try again later"
            }
            LockError::Write { .. } => {
                "models.lock is written beside the manifest (a temporary file, then a rename), so \
                 that folder must be writable"
            }
            LockError::Listing { .. } => return None,
        };
        Some(hint.to_owned())
    }
}

impl LockError {
    /// True when the lock is missing or out of date under `--locked` (exit code 3), rather
    /// than the run failing.
    pub fn is_stale(&self) -> bool {
        matches!(self, LockError::Missing(_) | LockError::OutOfDate { .. })
    }
}

impl RepoOutcome {
    /// How this repo's entry changed, as drift (`None` when it did not).
    fn drift(&self) -> Option<RepoDrift> {
        self.change.as_ref().map(|reason| RepoDrift {
            kind: self.kind,
            id: self.id.clone(),
            reason: reason.clone(),
        })
    }
}

/// Progress events for the front end to show.
#[derive(Debug, Clone)]
pub enum LockEvent<'a> {
    /// A repo is about to be resolved.
    Resolving(&'a RepoSpec),
    /// A repo was resolved.
    Resolved(&'a LockedRepo),
    /// A policy plugin dropped a file of a repo being resolved.
    Dropped(&'a RepoSpec, &'a DroppedFile),
}

/// Locks `manifest`: reads the lock beside it, pins the plugins, plans, resolves what needs
/// resolving through `client`, and commits the result as `opts.mode` says.
pub async fn lock(
    manifest: &Manifest,
    client: &HubClient,
    opts: &LockOptions,
    on_event: &(dyn Fn(LockEvent<'_>) + Sync),
) -> Result<LockReport, LockError> {
    let path = manifest.lock_path();
    let previous = Lockfile::read_if_exists(&path)?;
    plan::check_update_names(manifest, &opts.update)?;
    let draft = match (&previous, opts.mode) {
        // A lock that must exist and does not: nothing to pin or resolve.
        (None, LockMode::Locked) => commit::Draft::default(),
        _ => draft(manifest, previous.as_ref(), client, opts, on_event).await?,
    };
    commit::commit(draft, previous.as_ref(), &path, opts.mode)
}

/// Steps 1 to 3: what this run would lock, for the commit to judge.
async fn draft(
    manifest: &Manifest,
    previous: Option<&Lockfile>,
    client: &HubClient,
    opts: &LockOptions,
    on_event: &(dyn Fn(LockEvent<'_>) + Sync),
) -> Result<commit::Draft, LockError> {
    let mut set = PluginSet::new(opts.plugin_dir.clone())?;
    let pins = plugins::pin(manifest, previous, opts, &mut set).await?;
    let plan = plan::plan(manifest, previous, &pins.drift, opts)?;
    let (repos, unresolved) = if plan.settled {
        (Vec::new(), plan.drift)
    } else {
        plugins::load(manifest, &plan, &pins.pins, opts, &mut set).await?;
        let repos = resolver::resolve(client, &plan, previous, &set, opts.jobs, on_event).await?;
        (repos, Vec::new())
    };
    Ok(commit::Draft {
        repos,
        pins: pins.pins,
        plugins: pins.drift,
        unresolved,
    })
}
