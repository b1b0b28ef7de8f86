//! The resolution step of `lock`: carries out a [`LockPlan`] against the Hub. Kept repos are
//! copied from the previous lock; the others get their commit, full listing, include/exclude
//! selection, policy plugins and the sha256 of every selected file, concurrently.

use std::collections::{HashMap, HashSet};

use futures::{StreamExt, TryStreamExt, stream};

use super::plan::{LockPlan, Step};
use super::{DroppedFile, LockError, LockEvent, RepoAction};
use crate::hash::is_lower_hex;
use crate::hub::{HubClient, TreeEntry};
use crate::lock::{LockedFile, LockedRepo, Lockfile};
use crate::manifest::RepoSpec;
use crate::plugin::{FileEntry, PluginSet, RepoRef};
use crate::repo::{check_repo_path, check_tree_paths};

/// Repos resolved at once when the options leave it to us.
const DEFAULT_JOBS: usize = 8;

/// Files of one repo hashed at once.
const FILE_JOBS: usize = 8;

/// One repo of the new lock, with how it got there.
pub(crate) struct ResolvedRepo {
    /// Its lock entry.
    pub repo: LockedRepo,
    /// Kept, resolved or updated.
    pub action: RepoAction,
    /// Files its policy plugins dropped (resolved repos only).
    pub dropped: Vec<DroppedFile>,
}

/// Carries out `plan`: every kept repo as it was, every other one resolved through `client`
/// with `plugins` (its policy plugins already loaded), `jobs` repos at a time (0: the
/// default). Files whose git blob the `previous` lock already hashed are not downloaded again.
pub(crate) async fn resolve(
    client: &HubClient,
    plan: &LockPlan<'_>,
    previous: Option<&Lockfile>,
    plugins: &PluginSet,
    jobs: usize,
    on_event: &(dyn Fn(LockEvent<'_>) + Sync),
) -> Result<Vec<ResolvedRepo>, LockError> {
    let known = known_sha256(previous);
    let jobs = if jobs == 0 { DEFAULT_JOBS } else { jobs };
    stream::iter(plan.steps.iter().map(|step| {
        let known = &known;
        async move {
            match step {
                Step::Keep(prev) => Ok(ResolvedRepo {
                    repo: (*prev).clone(),
                    action: RepoAction::Kept,
                    dropped: Vec::new(),
                }),
                Step::Resolve { spec, why } => {
                    on_event(LockEvent::Resolving(spec));
                    let (repo, dropped) = resolve_repo(client, spec, known, plugins).await?;
                    for d in &dropped {
                        on_event(LockEvent::Dropped(spec, d));
                    }
                    on_event(LockEvent::Resolved(&repo));
                    Ok::<_, LockError>(ResolvedRepo {
                        repo,
                        action: why.action(),
                        dropped,
                    })
                }
            }
        }
    }))
    .buffer_unordered(jobs)
    .try_collect()
    .await
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

/// What the Hub's listing of a repo is not: a tree that can be locked and laid out on disk.
const NOT_A_REPO: &str = "the Hub's listing is not a valid repository; check the endpoint, and report it to the repo's owners if it is the real Hub";

/// Why a repo's listing was refused (see [`check_listing`]): no lock is written from it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ListingError {
    /// A file name that is unsafe or too long for a filesystem.
    #[error("the Hub listed an unusable file name: {0}; {not_a_repo}", not_a_repo = NOT_A_REPO)]
    UnusableName(#[source] crate::repo::RepoPathError),
    /// Paths that cannot all exist: one listed twice, or a file that is also a folder.
    #[error("the Hub listed an impossible tree: {0}; {not_a_repo}", not_a_repo = NOT_A_REPO)]
    ImpossibleTree(#[source] crate::repo::TreePathError),
}

/// Refuses a listing that cannot be locked and laid out on disk: unsafe or control-character
/// names, names or paths too long for a filesystem, a path listed twice, a file that is also
/// a folder. Checked over every listed file, selected or not: such a listing is not a git tree.
fn check_listing(files: &[&TreeEntry]) -> Result<(), ListingError> {
    for entry in files {
        check_repo_path(&entry.path).map_err(ListingError::UnusableName)?;
    }
    check_tree_paths(files.iter().map(|e| e.path.as_str())).map_err(ListingError::ImpossibleTree)
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
    check_listing(&listed).map_err(|source| LockError::Listing {
        repo: label.clone(),
        source,
    })?;
    let all_files = listed.len();
    let selected: Vec<&TreeEntry> = listed
        .into_iter()
        .filter(|e| spec.selects(&e.path))
        .collect();

    let (selected, dropped) = apply_policies(spec, &commit, selected, plugins)?;
    let count = selected.len();
    // Which listed entries are locked, so that they can be consumed: their path and ids move
    // into the lock instead of being copied (100,000 of each for a Hub-scale dataset).
    let chosen: HashSet<*const TreeEntry> = selected.into_iter().map(std::ptr::from_ref).collect();
    let keep: Vec<bool> = entries
        .iter()
        .map(|e| chosen.contains(&std::ptr::from_ref(e)))
        .collect();
    drop(chosen);
    let kept = entries
        .into_iter()
        .zip(keep)
        .filter_map(|(entry, keep)| keep.then_some(entry));
    let files: Vec<LockedFile> = stream::iter(kept.map(|entry| {
        let commit = &commit;
        let bad = &bad;
        async move {
            if let Some(lfs) = &entry.lfs {
                if !is_lower_hex(&lfs.oid, 64) || !is_lower_hex(&entry.oid, 40) {
                    return Err(bad(format!("`{}` has a malformed LFS oid or git oid in the listing", entry.path)));
                }
                return Ok(LockedFile {
                    size: lfs.size,
                    sha256: lfs.oid.clone(),
                    blob: lfs.oid.clone(),
                    path: entry.path,
                    pointer: Some(entry.oid),
                    // Kept only when well formed: a malformed hash just means no Xet path.
                    xet_hash: entry.xet_hash.filter(|h| is_lower_hex(h, 64)),
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
            Ok(LockedFile { path: entry.path, size: entry.size, sha256, blob: entry.oid, pointer: None, xet_hash: None })
        }
    }))
    .buffer_unordered(FILE_JOBS)
    // Into a vector of the exact size: no doubling slack over 100,000 files.
    .try_fold(Vec::with_capacity(count), |mut files, file| {
        files.push(file);
        std::future::ready(Ok(files))
    })
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
