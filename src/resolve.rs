//! The `lock` engine: turns the manifest's intent into pinned lock entries. Repos whose lock
//! entry still matches the manifest are kept as they are (no network, like Cargo); new or
//! changed repos, and those named with `--update`, are resolved against the Hub concurrently.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::PathBuf;

use futures::{StreamExt, TryStreamExt, stream};
use serde::Serialize;

use crate::hash::is_lower_hex;
use crate::hub::{HubClient, HubError, TreeEntry};
use crate::lock::diff::{RepoDrift, locked_change, manifest_drift, spec_drift};
use crate::lock::{LockedFile, LockedPlugin, LockedRepo, Lockfile};
use crate::manifest::{Manifest, PluginSource, RepoSpec, SourceError};
use crate::plugin::{FileEntry, PluginConfig, PluginError, PluginKind, PluginSet, RepoRef};
use crate::repo::{RepoId, RepoKind, check_repo_path, check_tree_paths};

/// How `lock` should behave.
#[derive(Debug, Clone, Default)]
pub struct LockOptions {
    /// Repo ids to re-resolve even though their lock entry still matches the manifest.
    pub update: Vec<String>,
    /// Fail instead of writing when the lock is missing or would change.
    pub locked: bool,
    /// Never touch the network; fail if something needs resolving.
    pub offline: bool,
    /// How many repos to resolve at once (0 means the default).
    pub jobs: usize,
    /// The store's `plugins/` folder: compiled plugins and downloaded plugin files are kept
    /// there (`None`: nothing is cached).
    pub plugin_dir: Option<PathBuf>,
}

/// Why a repo was (or was not) resolved in this run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RepoAction {
    /// The lock entry still matched the manifest and was kept without network access.
    Kept,
    /// The repo was new or its manifest entry changed, and it was resolved.
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
    /// Whether the file was (re)written; false when it already had exactly these bytes.
    pub written: bool,
    /// Every locked repo, in lock order.
    pub repos: Vec<RepoOutcome>,
    /// Repos dropped from the lock because the manifest no longer lists them.
    pub removed: Vec<String>,
    /// How the plugin pins changed (added, removed, new bytes or configuration).
    pub plugins: Vec<String>,
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
        plugins: Vec<String>,
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

/// What to do with one manifest repo.
enum Plan<'a> {
    Keep(&'a LockedRepo),
    Resolve(&'a RepoSpec, RepoAction),
}

/// Locks `manifest`: reads the existing lock beside it, resolves what needs resolving through
/// `client`, and writes the lock (unless `--locked`, which only checks).
pub async fn lock(
    manifest: &Manifest,
    client: &HubClient,
    opts: &LockOptions,
    on_event: &(dyn Fn(LockEvent<'_>) + Sync),
) -> Result<LockReport, LockError> {
    let lock_path = manifest.lock_path();
    let old = Lockfile::read_if_exists(&lock_path)?;
    for wanted in &opts.update {
        if !manifest.repos.iter().any(|s| s.id.as_str() == wanted)
            && !manifest.plugins.contains_key(wanted)
        {
            return Err(LockError::UnknownUpdate(wanted.clone()));
        }
    }
    if opts.locked && old.is_none() {
        return Err(LockError::Missing(lock_path));
    }
    let mut plugins = PluginSet::new(opts.plugin_dir.clone())?;
    let (pins, plugin_drift, changed_plugins) =
        pin_plugins(manifest, old.as_ref(), opts, &mut plugins).await?;
    if opts.locked
        && let Some(old) = &old
    {
        let drift = manifest_drift(manifest, old);
        if !drift.is_empty() || !plugin_drift.is_empty() {
            return Err(LockError::OutOfDate {
                lockfile: lock_path,
                drift,
                plugins: plugin_drift,
            });
        }
    }
    let policy_changed = |spec: &RepoSpec| spec.policy.iter().any(|p| changed_plugins.contains(p));

    let plans: Vec<Plan<'_>> = manifest
        .repos
        .iter()
        .map(
            |spec| match old.as_ref().and_then(|l| l.find(spec.kind, &spec.id)) {
                Some(prev) if spec_drift(spec, prev).is_none() && !policy_changed(spec) => {
                    if opts.update.iter().any(|u| u == spec.id.as_str()) {
                        Plan::Resolve(spec, RepoAction::Updated)
                    } else {
                        Plan::Keep(prev)
                    }
                }
                _ => Plan::Resolve(spec, RepoAction::Resolved),
            },
        )
        .collect();

    if opts.offline {
        let need: Vec<String> = plans
            .iter()
            .filter_map(|p| match p {
                Plan::Resolve(spec, _) => Some(format!("{} `{}`", spec.kind, spec.id)),
                Plan::Keep(_) => None,
            })
            .collect();
        if !need.is_empty() {
            return Err(LockError::NeedsNetwork(need));
        }
    }

    let policies: BTreeSet<String> = plans
        .iter()
        .filter_map(|p| match p {
            Plan::Resolve(spec, _) => Some(spec.policy.iter().cloned()),
            Plan::Keep(_) => None,
        })
        .flatten()
        .collect();
    let policies: Vec<String> = policies.into_iter().collect();
    // The bytes run must be the bytes pinned (a URL plugin keeps its pin without a download).
    let pinned: BTreeMap<String, LockedPlugin> =
        pins.iter().map(|p| (p.name.clone(), p.clone())).collect();
    plugins
        .load(
            manifest,
            &policies,
            PluginKind::Policy,
            &pinned,
            opts.plugin_dir.as_deref(),
            opts.offline,
        )
        .await?;
    // Mirrors are only used by `fetch`, but a wrong kind or a bad config should fail here,
    // where the plugin is pinned, not in the middle of a CI fetch.
    plugins
        .load(
            manifest,
            &manifest.mirrors,
            PluginKind::Mirror,
            &pinned,
            opts.plugin_dir.as_deref(),
            opts.offline,
        )
        .await?;

    let known = known_sha256(old.as_ref());
    let jobs = if opts.jobs == 0 { 8 } else { opts.jobs };
    let results: Vec<(LockedRepo, RepoAction, Vec<DroppedFile>)> =
        stream::iter(plans.into_iter().map(|plan| {
            let known = &known;
            let plugins = &plugins;
            async move {
                match plan {
                    Plan::Keep(prev) => Ok((prev.clone(), RepoAction::Kept, Vec::new())),
                    Plan::Resolve(spec, action) => {
                        on_event(LockEvent::Resolving(spec));
                        let (repo, dropped) = resolve_repo(client, spec, known, plugins).await?;
                        for d in &dropped {
                            on_event(LockEvent::Dropped(spec, d));
                        }
                        on_event(LockEvent::Resolved(&repo));
                        Ok::<_, LockError>((repo, action, dropped))
                    }
                }
            }
        }))
        .buffer_unordered(jobs)
        .try_collect()
        .await?;

    let mut new = Lockfile::new();
    new.plugins = pins;
    let mut actions: HashMap<(RepoKind, RepoId), (RepoAction, Vec<DroppedFile>)> = HashMap::new();
    for (repo, action, dropped) in results {
        actions.insert((repo.kind, repo.id.clone()), (action, dropped));
        new.repos.push(repo);
    }
    new.normalize();

    let removed: Vec<String> = old
        .iter()
        .flat_map(|l| &l.repos)
        .filter(|r| new.find(r.kind, &r.id).is_none())
        .map(|r| r.label())
        .collect();

    let repos: Vec<RepoOutcome> = new
        .repos
        .iter()
        .map(|r| {
            let prev = old.as_ref().and_then(|l| l.find(r.kind, &r.id));
            RepoOutcome {
                kind: r.kind,
                id: r.id.clone(),
                revision: r.revision.to_string(),
                commit: r.commit.clone(),
                files: r.files.len(),
                bytes: r.total_size(),
                action: actions
                    .get(&(r.kind, r.id.clone()))
                    .map(|a| a.0)
                    .unwrap_or(RepoAction::Kept),
                dropped: actions
                    .get(&(r.kind, r.id.clone()))
                    .map(|a| a.1.clone())
                    .unwrap_or_default(),
                change: match prev {
                    Some(p) => locked_change(p, r),
                    None => Some("added".into()),
                },
            }
        })
        .collect();

    if opts.locked {
        let drift: Vec<RepoDrift> = repos
            .iter()
            .filter_map(|o| {
                o.change.as_ref().map(|c| RepoDrift {
                    kind: o.kind,
                    id: o.id.clone(),
                    reason: c.clone(),
                })
            })
            .collect();
        if !drift.is_empty() {
            return Err(LockError::OutOfDate {
                lockfile: lock_path,
                drift,
                plugins: plugin_drift,
            });
        }
        return Ok(LockReport {
            lockfile: lock_path,
            written: false,
            repos,
            removed,
            plugins: plugin_drift,
        });
    }

    let written = new.write(&lock_path).map_err(|source| LockError::Write {
        path: lock_path.clone(),
        source,
    })?;
    Ok(LockReport {
        lockfile: lock_path,
        written,
        repos,
        removed,
        plugins: plugin_drift,
    })
}

/// Pins every plugin the manifest declares: the sha256 of its bytes (a URL whose lock entry
/// has the same source keeps its pin without a download; its bytes are checked against the
/// pin whenever they are used) and the digest of its configuration. Returns the pins, how
/// they differ from the old lock, and the names whose bytes or configuration changed.
async fn pin_plugins(
    manifest: &Manifest,
    old: Option<&Lockfile>,
    opts: &LockOptions,
    plugins: &mut PluginSet,
) -> Result<(Vec<LockedPlugin>, Vec<String>, BTreeSet<String>), LockError> {
    let mut pins = Vec::new();
    let mut drift = Vec::new();
    let mut changed = BTreeSet::new();
    for spec in manifest.plugins.values() {
        let source = spec.source.as_lock_string();
        let prev = old.and_then(|l| l.plugin(&spec.name));
        let sha256 = match (&spec.source, prev) {
            // Same URL: keep the pin without a download (the bytes are checked against it on
            // every use), unless `--update NAME` asks for the current bytes or the manifest
            // now requires other ones.
            (PluginSource::Url(_), Some(p))
                if p.source == source
                    && !opts.update.contains(&spec.name)
                    && spec.sha256.as_ref().is_none_or(|s| *s == p.sha256) =>
            {
                p.sha256.clone()
            }
            (PluginSource::Url(_), None) if opts.locked => {
                // Stale whatever its bytes are: no need to download it to say so.
                drift.push(format!("plugin `{}` added", spec.name));
                continue;
            }
            _ => plugins
                .bytes(spec, None, opts.plugin_dir.as_deref(), opts.offline)
                .await?
                .sha256
                .clone(),
        };
        let config = PluginConfig::from_table(&spec.config).digest().to_owned();
        match prev {
            None => {
                drift.push(format!("plugin `{}` added", spec.name));
                changed.insert(spec.name.clone());
            }
            Some(p) => {
                let mut what = Vec::new();
                if p.source != source {
                    what.push(format!("source changed from `{}` to `{source}`", p.source));
                }
                if p.sha256 != sha256 {
                    what.push(format!(
                        "its bytes changed (sha256 {} → {})",
                        short(&p.sha256),
                        short(&sha256)
                    ));
                }
                if p.config != config {
                    what.push("its config changed".to_owned());
                }
                if !what.is_empty() {
                    drift.push(format!("plugin `{}`: {}", spec.name, what.join("; ")));
                }
                if p.sha256 != sha256 || p.config != config {
                    changed.insert(spec.name.clone());
                }
            }
        }
        pins.push(LockedPlugin {
            name: spec.name.clone(),
            source,
            sha256,
            config,
        });
    }
    for p in old.iter().flat_map(|l| &l.plugins) {
        if !manifest.plugins.contains_key(&p.name) {
            drift.push(format!("plugin `{}` removed", p.name));
        }
    }
    Ok((pins, drift, changed))
}

/// The first 12 hex characters of a digest, for messages.
fn short(hex: &str) -> &str {
    &hex[..hex.len().min(12)]
}

/// Runs the repo's policy plugins in order over the selected files; each sees what the
/// previous one kept.
fn apply_policies<'e>(
    spec: &RepoSpec,
    commit: &str,
    mut selected: Vec<&'e TreeEntry>,
    plugins: &PluginSet,
) -> Result<(Vec<&'e TreeEntry>, Vec<DroppedFile>), LockError> {
    let mut dropped = Vec::new();
    if spec.policy.is_empty() {
        return Ok((selected, dropped));
    }
    // Plugins see their input sorted, whatever order the Hub listed it in.
    selected.sort_by(|a, b| a.path.cmp(&b.path));
    let repo = RepoRef {
        kind: spec.kind.into(),
        id: spec.id.to_string(),
        revision: spec.revision.to_string(),
        commit: commit.to_owned(),
    };
    for name in &spec.policy {
        let Some(p) = plugins.get(name) else {
            continue;
        };
        let files: Vec<FileEntry> = selected
            .iter()
            .map(|e| FileEntry {
                path: e.path.clone(),
                size: e.lfs.as_ref().map_or(e.size, |l| l.size),
                sha256: e.lfs.as_ref().map(|l| l.oid.clone()),
                blob: e.oid.clone(),
            })
            .collect();
        let selection = match p.plugin.select(&p.config, &repo, &files) {
            Ok(s) => s,
            // "No opinion on this repo": keep everything, go on with the next policy.
            Err(e) if e.code == Some(crate::plugin::ErrorCode::Unsupported) => {
                tracing::info!("{e}");
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let keep: HashSet<&str> = selection.keep.iter().map(String::as_str).collect();
        selected.retain(|e| keep.contains(e.path.as_str()));
        dropped.extend(
            selection
                .dropped
                .into_iter()
                .map(|(path, reason)| DroppedFile {
                    path,
                    plugin: name.clone(),
                    reason,
                }),
        );
    }
    Ok((selected, dropped))
}

/// sha256 values already known from the previous lock, keyed by git blob id and size: a
/// regular file with the same git blob id has the same content, so it need not be downloaded
/// again to be hashed.
fn known_sha256(old: Option<&Lockfile>) -> HashMap<(String, u64), String> {
    old.iter()
        .flat_map(|l| &l.repos)
        .flat_map(|r| &r.files)
        .filter(|f| !f.is_lfs())
        .map(|f| ((f.blob.clone(), f.size), f.sha256.clone()))
        .collect()
}

/// Refuses a listing that cannot be locked and laid out on disk: unsafe or control-character
/// names, names or paths too long for a filesystem, a path listed twice, a file that is also
/// a folder. Checked over every listed file, selected or not: such a listing is not a git tree.
fn check_listing(files: &[&TreeEntry]) -> Result<(), String> {
    let hint = "the Hub's listing is not a valid repository; check the endpoint, and report it to the repo's owners if it is the real Hub";
    for entry in files {
        check_repo_path(&entry.path)
            .map_err(|e| format!("the Hub listed an unusable file name: {e}; {hint}"))?;
    }
    check_tree_paths(files.iter().map(|e| e.path.as_str()))
        .map_err(|e| format!("the Hub listed an impossible tree: {e}; {hint}"))
}

/// Resolves one repo: commit (no call for a pinned commit), full file listing, selection, and
/// sha256 for every selected file.
async fn resolve_repo(
    client: &HubClient,
    spec: &RepoSpec,
    known: &HashMap<(String, u64), String>,
    plugins: &PluginSet,
) -> Result<(LockedRepo, Vec<DroppedFile>), LockError> {
    let label = format!("{} `{}`", spec.kind, spec.id);
    let bad = |detail: String| LockError::BadData {
        repo: label.clone(),
        detail,
    };
    let commit = if spec.revision.is_commit() {
        spec.revision.as_str().to_owned()
    } else {
        client
            .resolve_revision(spec.kind, &spec.id, spec.revision.as_str())
            .await?
    };
    let entries = client.list_tree(spec.kind, &spec.id, &commit).await?;

    let listed: Vec<&TreeEntry> = entries.iter().filter(|e| e.is_file()).collect();
    check_listing(&listed).map_err(&bad)?;
    let all_files = listed.len();
    let selected: Vec<&TreeEntry> = listed
        .into_iter()
        .filter(|e| spec.selects(&e.path))
        .collect();

    let (selected, dropped) = apply_policies(spec, &commit, selected, plugins)?;
    let files: Vec<LockedFile> = stream::iter(selected.into_iter().map(|entry| {
        let commit = &commit;
        let bad = &bad;
        async move {
            if let Some(lfs) = &entry.lfs {
                if !is_lower_hex(&lfs.oid, 64) || !is_lower_hex(&entry.oid, 40) {
                    return Err(bad(format!("`{}` has a malformed LFS oid or git oid in the listing", entry.path)));
                }
                return Ok(LockedFile {
                    path: entry.path.clone(),
                    size: lfs.size,
                    sha256: lfs.oid.clone(),
                    blob: lfs.oid.clone(),
                    pointer: Some(entry.oid.clone()),
                });
            }
            if !is_lower_hex(&entry.oid, 40) {
                return Err(bad(format!("`{}` has a malformed git oid `{}` in the listing", entry.path, crate::ui::clean(&entry.oid))));
            }
            let sha256 = match known.get(&(entry.oid.clone(), entry.size)) {
                Some(sha) => sha.clone(),
                None => {
                    let d = client.hash_file(spec.kind, &spec.id, commit, &entry.path, entry.size).await?;
                    if d.len != entry.size || d.git_sha1.as_deref() != Some(entry.oid.as_str()) {
                        return Err(bad(format!(
                            "`{}`: the downloaded content ({} bytes, git blob {}) does not match the listing ({} bytes, git blob {}); the server may be serving another commit — retry, and report it if it persists",
                            entry.path,
                            d.len,
                            d.git_sha1.unwrap_or_default(),
                            entry.size,
                            entry.oid
                        )));
                    }
                    d.sha256
                }
            };
            Ok(LockedFile { path: entry.path.clone(), size: entry.size, sha256, blob: entry.oid.clone(), pointer: None })
        }
    }))
    .buffer_unordered(8)
    .try_collect()
    .await?;

    let complete = files.len() == all_files;
    let mut repo = LockedRepo {
        kind: spec.kind,
        id: spec.id.clone(),
        revision: spec.revision.clone(),
        commit,
        include: spec.include.iter().map(|p| p.as_str().to_owned()).collect(),
        exclude: spec.exclude.iter().map(|p| p.as_str().to_owned()).collect(),
        policy: spec.policy.clone(),
        complete,
        digest: String::new(),
        files,
    };
    repo.normalize();
    Ok((repo, dropped))
}
