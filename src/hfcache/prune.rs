//! Chooses and removes revisions from a huggingface_hub cache: those no given lock references,
//! those of repos matching a pattern, those not used for a while, or the least recently used
//! ones above a size budget. Revisions the kept locks reference are never touched. Removal is
//! ordered for readers: refs first, then the snapshot (renamed away, then deleted), then only
//! the blobs that no remaining snapshot links to — so no ref or symlink is ever left dangling and
//! kept repos keep loading while it runs.
//!
//! Nothing is deleted through a symlinked folder: the scan leaves out repos that hold one, and
//! [`apply`] checks each repo folder again right before it deletes in it.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::scan::{CacheScan, CachedRepo};
use crate::manifest::Pattern;
use crate::plugin;
use crate::repo::{RepoKind, qualified_name};

/// What to remove.
#[derive(Debug, Clone, Default)]
pub struct Criteria {
    /// Remove revisions of repos whose `kind/id` (e.g. `model/acme/tiny`) matches.
    pub patterns: Vec<Pattern>,
    /// Remove every revision the scan's locks do not reference (the scan was made with them).
    pub keep_locked: bool,
    /// Remove revisions not accessed for this many seconds.
    pub older_than: Option<u64>,
    /// Then remove least recently used revisions until the cache is at most this many bytes.
    pub max_size: Option<u64>,
    /// Never remove revisions the scan's locks reference, without removing everything else
    /// (`--policy` with `--lock`).
    pub protect_locked: bool,
    /// Removals decided elsewhere (a pruner plugin): `(kind/id, commit)` → reason.
    pub decided: BTreeMap<(String, String), String>,
    /// Now, in seconds since the epoch.
    pub now: u64,
}

/// One revision to remove, and why.
#[derive(Debug, Clone, Serialize)]
pub struct Removal {
    /// `model/acme/tiny`.
    pub repo: String,
    /// The commit.
    pub commit: String,
    /// Refs that point at it (removed with it).
    pub refs: Vec<String>,
    /// Why it goes.
    pub reason: String,
}

/// The plan: revisions to remove and what that frees.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    /// Revisions to remove.
    pub removals: Vec<Removal>,
    /// Repos that lose every revision (their folder goes).
    pub whole_repos: Vec<String>,
    /// Bytes freed (blobs no remaining revision uses).
    pub freed: u64,
    /// Cache size after.
    pub size_after: u64,
}

/// `model/acme/tiny`: how plans, patterns and pruner plugins name a cached repo.
fn label(r: &CachedRepo) -> String {
    qualified_name(&r.kind, &r.id)
}

/// Decides what goes.
pub fn plan(scan: &CacheScan, c: &Criteria) -> Plan {
    let mut remove: BTreeMap<(String, String), String> = BTreeMap::new();
    let locked = |v: &super::scan::CachedRevision| {
        (c.keep_locked || c.protect_locked) && !v.locked_by.is_empty()
    };
    for repo in &scan.repos {
        for v in &repo.revisions {
            if locked(v) {
                continue;
            }
            let key = (label(repo), v.commit.clone());
            if let Some(reason) = c.decided.get(&key) {
                remove.entry(key.clone()).or_insert_with(|| reason.clone());
            }
            if c.keep_locked {
                remove
                    .entry(key.clone())
                    .or_insert_with(|| "no kept lock references it".into());
            }
            if c.patterns.iter().any(|p| p.matches(&label(repo))) {
                remove
                    .entry(key.clone())
                    .or_insert_with(|| "the repo matches --pattern".into());
            }
            if let Some(age) = c.older_than
                && v.last_accessed + age < c.now
            {
                remove.entry(key).or_insert_with(|| {
                    format!(
                        "not accessed for {} days",
                        (c.now - v.last_accessed) / 86_400
                    )
                });
            }
        }
    }
    // Blobs each remaining revision needs, to compute sizes.
    let size_of = |remove: &BTreeMap<(String, String), String>| -> u64 {
        let mut blobs: BTreeMap<&PathBuf, u64> = BTreeMap::new();
        for repo in &scan.repos {
            for v in &repo.revisions {
                if !remove.contains_key(&(label(repo), v.commit.clone())) {
                    for f in &v.files {
                        blobs.insert(&f.blob, f.size);
                    }
                }
            }
        }
        blobs.values().sum()
    };
    if let Some(max) = c.max_size {
        let mut candidates: Vec<(u64, String, String)> = scan
            .repos
            .iter()
            .flat_map(|r| {
                r.revisions
                    .iter()
                    .filter(|v| !locked(v))
                    .map(move |v| (v.last_accessed, label(r), v.commit.clone()))
            })
            .filter(|(_, r, v)| !remove.contains_key(&(r.clone(), v.clone())))
            .collect();
        candidates.sort();
        for (_, repo, commit) in candidates {
            if size_of(&remove) <= max {
                break;
            }
            remove.insert(
                (repo, commit),
                format!(
                    "least recently used, over --max-size {}",
                    crate::ui::human_size(max)
                ),
            );
        }
    }
    let removals: Vec<Removal> = scan
        .repos
        .iter()
        .flat_map(|r| r.revisions.iter().map(move |v| (r, v)))
        .filter_map(|(r, v)| {
            remove
                .get(&(label(r), v.commit.clone()))
                .map(|reason| Removal {
                    repo: label(r),
                    commit: v.commit.clone(),
                    refs: v.refs.clone(),
                    reason: reason.clone(),
                })
        })
        .collect();
    let whole_repos = scan
        .repos
        .iter()
        .filter(|r| {
            !r.revisions.is_empty()
                && r.revisions
                    .iter()
                    .all(|v| remove.contains_key(&(label(r), v.commit.clone())))
        })
        .map(label)
        .collect();
    let size_after = size_of(&remove);
    Plan {
        removals,
        whole_repos,
        freed: scan.size_on_disk.saturating_sub(size_after),
        size_after,
    }
}

/// The cache as a pruner plugin sees it: the model, dataset and space repos (the interface
/// knows no other kinds), sorted, each revision with the bytes only it uses.
pub fn pruner_input(scan: &CacheScan) -> Vec<plugin::CachedRepo> {
    let mut repos: Vec<plugin::CachedRepo> = scan
        .repos
        .iter()
        .filter_map(|r| Some((super::scan::lock_kind(&r.kind)?, r)))
        .map(|(kind, r)| {
            // How many revisions of the repo link each blob.
            let mut users: BTreeMap<&Path, usize> = BTreeMap::new();
            for v in &r.revisions {
                let blobs: BTreeSet<&Path> = v.files.iter().map(|f| f.blob.as_path()).collect();
                for b in blobs {
                    *users.entry(b).or_default() += 1;
                }
            }
            let mut revisions: Vec<plugin::CachedRevision> = r
                .revisions
                .iter()
                .map(|v| {
                    let sizes: BTreeMap<&Path, u64> =
                        v.files.iter().map(|f| (f.blob.as_path(), f.size)).collect();
                    plugin::CachedRevision {
                        commit: v.commit.clone(),
                        refs: v.refs.clone(),
                        files: v
                            .files
                            .iter()
                            .map(|f| plugin::CachedFile {
                                path: f.path.clone(),
                                size: f.size,
                                blob: f
                                    .blob
                                    .file_name()
                                    .map(|n| n.to_string_lossy().into_owned())
                                    .unwrap_or_default(),
                            })
                            .collect(),
                        exclusive_size: sizes
                            .iter()
                            .filter(|(b, _)| users.get(*b) == Some(&1))
                            .map(|(_, size)| size)
                            .sum(),
                        last_access: v.last_accessed,
                        locked: !v.locked_by.is_empty(),
                    }
                })
                .collect();
            revisions.sort_by(|a, b| a.commit.cmp(&b.commit));
            plugin::CachedRepo {
                kind: kind.into(),
                id: r.id.clone(),
                size_on_disk: r.size_on_disk,
                revisions,
            }
        })
        .collect();
    repos.sort_by(|a, b| (a.kind as u8, &a.id).cmp(&(b.kind as u8, &b.id)));
    repos
}

/// A pruner plugin's plan as [`Criteria::decided`]: `(kind/id, commit)` → reason naming it.
pub fn decided_by(
    plugin: &str,
    deletions: Vec<plugin::Deletion>,
) -> BTreeMap<(String, String), String> {
    deletions
        .into_iter()
        .map(|d| {
            (
                (
                    qualified_name(RepoKind::from(d.kind).as_str(), &d.id),
                    d.commit,
                ),
                format!("plugin `{plugin}`: {}", d.reason),
            )
        })
        .collect()
}

/// Carries out `plan` on the cache it was made from. Returns bytes actually freed.
pub fn apply(scan: &CacheScan, plan: &Plan) -> std::io::Result<u64> {
    let mut freed = 0u64;
    let by_repo: BTreeMap<&str, Vec<&Removal>> =
        plan.removals.iter().fold(BTreeMap::new(), |mut m, r| {
            m.entry(r.repo.as_str()).or_default().push(r);
            m
        });
    for repo in &scan.repos {
        let name = label(repo);
        let Some(removals) = by_repo.get(name.as_str()) else {
            continue;
        };
        if let Some(link) = super::symlinked_folder(&repo.path) {
            return Err(std::io::Error::other(format!(
                "{} became a symlink to a folder since the scan; nothing was deleted through it: replace it with a real folder and prune again",
                link.display()
            )));
        }
        if plan.whole_repos.contains(&name) {
            freed += repo.size_on_disk;
            let trash = trash_name(&scan.hub_cache, &repo.path);
            fs::rename(&repo.path, &trash)?;
            fs::remove_dir_all(&trash)?;
            continue;
        }
        let commits: BTreeSet<&str> = removals.iter().map(|r| r.commit.as_str()).collect();
        // 1. Refs, so no new reader resolves to a revision on its way out.
        for r in removals.iter() {
            for name in &r.refs {
                let p = repo.path.join("refs").join(name);
                if fs::read(&p).is_ok_and(|c| c == r.commit.as_bytes()) {
                    fs::remove_file(&p)?;
                    remove_empty_parents(&p, &repo.path.join("refs"));
                }
            }
        }
        // 2. Snapshots (renamed away first: a half-deleted snapshot is never visible), their
        //    trees listings and negative-cache entries.
        for commit in &commits {
            let snap = repo.path.join("snapshots").join(commit);
            if snap.exists() {
                let trash = trash_name(&repo.path, &snap);
                fs::rename(&snap, &trash)?;
                fs::remove_dir_all(&trash)?;
            }
            let _ = fs::remove_file(repo.path.join("trees").join(format!("{commit}.json")));
            let _ = fs::remove_dir_all(repo.path.join(".no_exist").join(commit));
        }
        // 3. Blobs no remaining snapshot links to, judged now (not from the older scan), so a
        //    snapshot added meanwhile keeps its blobs.
        let still_used = linked_blobs(&repo.path.join("snapshots"));
        for entry in fs::read_dir(repo.path.join("blobs"))?.filter_map(Result::ok) {
            let p = entry.path();
            let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
            if !is_dir && !still_used.contains(&p) && !p.to_string_lossy().ends_with(".incomplete")
            {
                freed += entry.metadata().map_or(0, |m| m.len());
                fs::remove_file(&p)?;
            }
        }
    }
    Ok(freed)
}

/// Every blob path the snapshots under `snapshots` resolve to.
fn linked_blobs(snapshots: &Path) -> BTreeSet<PathBuf> {
    super::files_under(snapshots)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|p| {
            let target = fs::read_link(&p).ok()?;
            Some(super::scan::normalize(
                &p.parent().unwrap_or(Path::new("/")).join(target),
            ))
        })
        .collect()
}

fn remove_empty_parents(file: &Path, stop: &Path) {
    let mut cur = file.parent();
    while let Some(d) = cur {
        if d == stop || fs::remove_dir(d).is_err() {
            break;
        }
        cur = d.parent();
    }
}

/// A hidden sibling name in `dir` for something being deleted.
fn trash_name(dir: &Path, what: &Path) -> PathBuf {
    let name = what
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    dir.join(format!(".modelbake-trash-{name}-{:08x}", fastrand::u32(..)))
}

/// Why a duration (`--older-than`) was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// No leading number.
    #[error("`{input}` is not a duration like 30d, 12h, 90m or 2w")]
    NotADuration {
        /// The text, trimmed.
        input: String,
    },
    /// A suffix other than s, m, h, d or w.
    #[error("`{input}`: unknown unit `{unit}`; use s, m, h, d or w")]
    UnknownUnit {
        /// The text, trimmed.
        input: String,
        /// The suffix.
        unit: String,
    },
}

/// Parses `30d`, `12h`, `90m`, `45s`, `2w` into seconds.
pub fn parse_duration(s: &str) -> Result<u64, DurationError> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num.parse().map_err(|_| DurationError::NotADuration {
        input: s.to_owned(),
    })?;
    let mult = match unit {
        "s" | "" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => {
            return Err(DurationError::UnknownUnit {
                input: s.to_owned(),
                unit: unit.to_owned(),
            });
        }
    };
    Ok(n * mult)
}

/// Why a size (`--max-size`) was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SizeError {
    /// No leading number.
    #[error("`{input}` is not a size like 50GB, 500MB or 2GiB")]
    NotASize {
        /// The text as given.
        input: String,
    },
    /// A unit other than B, kB, MB, GB, TB, KiB, MiB, GiB or TiB (any case).
    #[error("`{input}`: unknown unit `{unit}`")]
    UnknownUnit {
        /// The text as given.
        input: String,
        /// The unit, trimmed and lowercased.
        unit: String,
    },
}

/// Parses `50GB`, `1.5G`, `500MB`, `2GiB` or a byte count.
pub fn parse_size(s: &str) -> Result<u64, SizeError> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().map_err(|_| SizeError::NotASize {
        input: s.to_owned(),
    })?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "m" | "mb" => 1e6,
        "g" | "gb" => 1e9,
        "t" | "tb" => 1e12,
        "kib" => 1024.0,
        "mib" => 1024.0 * 1024.0,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        "tib" => 1024f64.powi(4),
        other => {
            return Err(SizeError::UnknownUnit {
                input: s.to_owned(),
                unit: other.to_owned(),
            });
        }
    };
    Ok((n * mult) as u64)
}

/// What `cache prune` is asked to do, with its inputs already read.
pub struct PruneRequest<'a> {
    /// The huggingface_hub cache.
    pub cache: &'a Path,
    /// `--keep-locked` locks: everything they do not reference goes.
    pub keep_locked: Vec<(PathBuf, crate::lock::Lockfile)>,
    /// Locks whose revisions a pruner plugin may never remove (with `--policy`).
    pub protect: Vec<(PathBuf, crate::lock::Lockfile)>,
    /// Criteria from the flags (`decided`, `keep_locked`, `protect_locked` are filled in here).
    pub criteria: Criteria,
    /// `--policy NAME` with the manifest declaring it.
    pub policy: Option<(&'a crate::manifest::Manifest, &'a str)>,
    /// The store's `plugins/` folder, for compiled plugins.
    pub plugin_dir: Option<PathBuf>,
    /// Really delete.
    pub apply: bool,
}

/// What `cache prune` found and did.
pub struct PruneOutcome {
    /// The cache as scanned.
    pub scan: CacheScan,
    /// What goes (or would go).
    pub plan: Plan,
    /// Bytes actually freed (0 for a dry run).
    pub freed: u64,
}

/// Why `cache prune` failed; nothing was deleted unless the failure is [`PruneError::Apply`].
#[derive(Debug, thiserror::Error)]
pub enum PruneError {
    /// The cache could not be scanned.
    #[error("{}: {source}", .cache.display())]
    Scan {
        /// The huggingface_hub cache.
        cache: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The lock beside the manifest (for the pruner plugin's pin) could not be read.
    #[error(transparent)]
    Lock(#[from] crate::manifest::SourceError),
    /// The pruner plugin could not be loaded, or failed.
    #[error(transparent)]
    Plugin(#[from] plugin::PluginError),
    /// The pruner plugin was loaded but cannot be found in its set (a bug).
    #[error("plugin `{0}` did not load")]
    NotLoaded(String),
    /// The deleting task stopped before it finished (it panicked or was cancelled).
    #[error(transparent)]
    Interrupted(#[from] tokio::task::JoinError),
    /// Deleting failed part-way.
    #[error("pruning {}: {source}", .cache.display())]
    Apply {
        /// The huggingface_hub cache.
        cache: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

/// What to do about a failed prune: the hints of the lock or plugin it stopped on.
impl crate::hint::Hint for PruneError {
    fn hint(&self) -> Option<String> {
        match self {
            PruneError::Lock(e) => e.hint(),
            PruneError::Plugin(e) => e.hint(),
            PruneError::Scan { .. } => Some(
                "--hub-cache (default $HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub) must name a huggingface_hub \
                 cache: the folder that holds the models--ORG--NAME folders"
                    .to_owned(),
            ),
            PruneError::NotLoaded(_) | PruneError::Interrupted(_) | PruneError::Apply { .. } => {
                None
            }
        }
    }
}

/// `cache prune` as one call: scan with every lock, ask the pruner plugin if any, plan, and
/// apply when asked.
pub async fn prune(req: PruneRequest<'_>) -> Result<PruneOutcome, PruneError> {
    let mut criteria = req.criteria;
    criteria.keep_locked = !req.keep_locked.is_empty();
    criteria.protect_locked = req.policy.is_some();
    let mut locks = req.keep_locked;
    locks.extend(req.protect);
    let scan = super::scan::scan(req.cache, &locks).map_err(|source| PruneError::Scan {
        cache: req.cache.to_owned(),
        source,
    })?;
    if let Some((manifest, name)) = req.policy {
        criteria.decided = pruner_plan(manifest, name, &scan, criteria.now, req.plugin_dir).await?;
    }
    let plan = plan(&scan, &criteria);
    let freed = if req.apply && !plan.removals.is_empty() {
        let (s, p) = (scan.clone(), plan.clone());
        tokio::task::spawn_blocking(move || apply(&s, &p))
            .await?
            .map_err(|source| PruneError::Apply {
                cache: req.cache.to_owned(),
                source,
            })?
    } else {
        0
    };
    Ok(PruneOutcome { scan, plan, freed })
}

/// Asks the pruner plugin `name` for its plan over `scan`; returns `(kind/id, commit)` →
/// reason for every revision it wants gone (already checked to be cached and unlocked).
pub async fn pruner_plan(
    manifest: &crate::manifest::Manifest,
    name: &str,
    scan: &CacheScan,
    now: u64,
    dir: Option<PathBuf>,
) -> Result<std::collections::BTreeMap<(String, String), String>, PruneError> {
    use crate::plugin::{PluginKind, PruneContext};
    let pins = crate::lock::Lockfile::read_if_exists(&manifest.lock_path())?
        .map(|lock| lock.plugins)
        .unwrap_or_default();
    if !pins.iter().any(|p| p.name == name) {
        tracing::warn!(
            "plugin `{name}` is not pinned in {}: running it unpinned (run `modelbake lock` to pin it)",
            crate::ui::display_path(&manifest.lock_path())
        );
    }
    let mut plugins = crate::plugin::PluginSet::new(dir.clone())?;
    plugins
        .load(
            manifest,
            &[name.to_owned()],
            PluginKind::Pruner,
            &pins,
            dir.as_deref(),
            false,
        )
        .await?;
    let p = plugins
        .get(name)
        .ok_or_else(|| PruneError::NotLoaded(name.to_owned()))?;
    let deletions = p.plugin.plan(
        &p.config,
        PruneContext {
            now,
            total_size: scan.size_on_disk,
        },
        &pruner_input(scan),
    )?;
    Ok(decided_by(name, deletions))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_sizes() {
        assert_eq!(parse_duration("30d"), Ok(30 * 86_400));
        assert_eq!(parse_duration("2w"), Ok(14 * 86_400));
        assert!(parse_duration("3y").is_err());
        assert_eq!(parse_size("50GB"), Ok(50_000_000_000));
        assert_eq!(parse_size("1.5G"), Ok(1_500_000_000));
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        assert_eq!(parse_size("123"), Ok(123));
        assert!(parse_size("lots").is_err());
        // The messages clap shows for a bad --older-than / --max-size.
        assert_eq!(
            parse_duration(" 3y ").unwrap_err().to_string(),
            "`3y`: unknown unit `y`; use s, m, h, d or w"
        );
        assert_eq!(
            parse_duration("d").unwrap_err().to_string(),
            "`d` is not a duration like 30d, 12h, 90m or 2w"
        );
        assert_eq!(
            parse_size(" lots").unwrap_err().to_string(),
            "` lots` is not a size like 50GB, 500MB or 2GiB"
        );
        assert_eq!(
            parse_size("5 Zb").unwrap_err().to_string(),
            "`5 Zb`: unknown unit `zb`"
        );
    }
}
