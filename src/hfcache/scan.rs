//! Reads a huggingface_hub cache the way `scan_cache_dir()` does, with the same numbers (sizes
//! count each blob once per repo, revisions count theirs once), the same warnings for corrupt
//! repos (which are then left out), plus which revisions given locks still reference.
//!
//! Symlinked folders are never entered: a repo folder that is, or holds, a symlink to a folder
//! (huggingface_hub never makes one) is left out with a warning and listed in
//! [`CacheScan::symlinked`], so that prune, which works from a scan, never deletes through it.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::Serialize;

use crate::lock::Lockfile;
use crate::repo::RepoKind;

/// Entries of the cache root that are not repos.
const IGNORED: &[&str] = &[
    ".DS_Store",
    "Thumbs.db",
    "desktop.ini",
    ".locks",
    "CACHEDIR.TAG",
];

/// One file of a revision.
#[derive(Debug, Clone, Serialize)]
pub struct CachedFile {
    /// Path inside the snapshot.
    pub path: String,
    /// The blob it resolves to.
    pub blob: PathBuf,
    /// Blob size.
    pub size: u64,
}

/// One snapshot of a repo.
#[derive(Debug, Clone, Serialize)]
pub struct CachedRevision {
    /// The commit (snapshot folder name).
    pub commit: String,
    /// Refs pointing at it.
    pub refs: Vec<String>,
    /// Sum of its distinct blobs.
    pub size_on_disk: u64,
    /// Number of files.
    pub nb_files: usize,
    /// Newest blob mtime (seconds since the epoch).
    pub last_modified: u64,
    /// Newest blob atime.
    pub last_accessed: u64,
    /// Locks (paths) that reference this repo at this commit.
    pub locked_by: Vec<String>,
    /// Its files.
    #[serde(skip)]
    pub files: Vec<CachedFile>,
}

/// One repo folder.
#[derive(Debug, Clone, Serialize)]
pub struct CachedRepo {
    /// `model`, `dataset`, `space` (or `kernel`).
    pub kind: String,
    /// The repo id.
    pub id: String,
    /// The folder.
    pub path: PathBuf,
    /// Sum of its distinct blobs.
    pub size_on_disk: u64,
    /// Number of distinct blobs.
    pub nb_files: usize,
    /// Newest blob atime.
    pub last_accessed: u64,
    /// Newest blob mtime.
    pub last_modified: u64,
    /// Snapshots, by commit.
    pub revisions: Vec<CachedRevision>,
}

/// A whole cache.
#[derive(Debug, Clone, Serialize)]
pub struct CacheScan {
    /// The cache folder.
    pub hub_cache: PathBuf,
    /// Valid repos, sorted by kind and id.
    pub repos: Vec<CachedRepo>,
    /// Distinct blob files of all valid repos, summed.
    pub size_on_disk: u64,
    /// Corrupt entries, one message each (their repos are left out, as huggingface_hub does).
    pub warnings: Vec<String>,
    /// Leftover partial downloads (`*/blobs/*.incomplete`).
    pub incomplete: Vec<PathBuf>,
    /// Symlinked folders found in repo folders; those repos are left out (see `warnings`).
    pub symlinked: Vec<PathBuf>,
}

fn secs(t: std::io::Result<SystemTime>) -> u64 {
    t.ok()
        .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs())
}

/// (last accessed, last modified) of the newest of `metas`, else of `fallback` itself (what
/// huggingface_hub reports for an empty revision or repo).
fn times<'a>(metas: impl Iterator<Item = &'a fs::Metadata> + Clone, fallback: &Path) -> (u64, u64) {
    if metas.clone().next().is_none() {
        return fs::metadata(fallback).map_or((0, 0), |m| (secs(m.accessed()), secs(m.modified())));
    }
    (
        metas.clone().map(|m| secs(m.accessed())).max().unwrap_or(0),
        metas.map(|m| secs(m.modified())).max().unwrap_or(0),
    )
}

/// Scans `hub_cache`; `locks` (with their paths) mark referenced revisions.
pub fn scan(hub_cache: &Path, locks: &[(PathBuf, Lockfile)]) -> std::io::Result<CacheScan> {
    let mut repos = Vec::new();
    let mut warnings = Vec::new();
    let mut incomplete = Vec::new();
    let mut symlinked = Vec::new();
    let mut entries: Vec<PathBuf> = fs::read_dir(hub_cache)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .collect();
    entries.sort();
    for path in entries {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if IGNORED.contains(&name.as_str())
            || (name == "blobs" && path.join(".huggingface-shared-blobs").exists())
        {
            continue;
        }
        if let Some(link) = super::symlinked_folder(&path) {
            warnings.push(format!(
                "Repo left out: {} is a symlink to a folder; modelbake does not follow symlinked folders in the cache (replace it with a real folder, or run `modelbake export` for a locked repo)",
                link.display()
            ));
            symlinked.push(link);
            continue;
        }
        if let Ok(blobs) = fs::read_dir(path.join("blobs")) {
            incomplete.extend(
                blobs
                    .filter_map(Result::ok)
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|x| x == "incomplete")),
            );
        }
        match scan_repo(&path, &name, locks) {
            Ok(repo) => repos.push(repo),
            Err(corrupt) => warnings.push(corrupt.to_string()),
        }
    }
    repos.sort_by(|a, b| (&a.kind, &a.id).cmp(&(&b.kind, &b.id)));
    let distinct: BTreeSet<&PathBuf> = repos
        .iter()
        .flat_map(|r| &r.revisions)
        .flat_map(|v| &v.files)
        .map(|f| &f.blob)
        .collect();
    let size_on_disk = distinct
        .iter()
        .map(|p| fs::metadata(p).map_or(0, |m| m.len()))
        .sum();
    Ok(CacheScan {
        hub_cache: hub_cache.to_owned(),
        repos,
        size_on_disk,
        warnings,
        incomplete,
        symlinked,
    })
}

/// The scan kind (`model`, ..., `kernel`) of a cache folder prefix (`models`, ...,
/// `kernels`): a Hub kind, or the kernels huggingface_hub also caches.
fn kind_of(prefix: &str) -> Option<&'static str> {
    match RepoKind::from_segment(prefix) {
        Some(kind) => Some(kind.as_str()),
        None => (prefix == "kernels").then_some("kernel"),
    }
}

/// The lock's kind for a scan kind, to match lock entries (`None` for kinds locks and
/// plugins do not know, such as kernels).
pub(crate) fn lock_kind(kind: &str) -> Option<RepoKind> {
    RepoKind::from_name(kind)
}

/// Why a folder of the cache is not a valid repo, in huggingface_hub's words (its
/// `CorruptedCacheException` messages); the scan leaves the repo out with this as a warning.
#[derive(Debug, thiserror::Error)]
pub enum CorruptRepo {
    /// A file where a repo folder belongs.
    #[error("Repo path is not a directory: {}", .0.display())]
    NotADirectory(PathBuf),
    /// A folder name without the `<kind>--` prefix.
    #[error("Repo path is not a valid HuggingFace cache directory: {}", .0.display())]
    BadName(PathBuf),
    /// A prefix that names no repo kind.
    #[error(
        "Repo type must be one of datasets, kernels, models, spaces, found `{prefix}` ({})",
        .path.display()
    )]
    UnknownKind {
        /// The prefix found.
        prefix: String,
        /// The repo folder.
        path: PathBuf,
    },
    /// No `snapshots/` folder.
    #[error("Snapshots dir doesn't exist in cached repo: {}", .0.display())]
    NoSnapshots(PathBuf),
    /// `refs` is a file.
    #[error("Refs directory cannot be a file: {}", .0.display())]
    RefsIsFile(PathBuf),
    /// A folder or ref that could not be read.
    #[error("{}: {source}", .path.display())]
    Unreadable {
        /// What could not be read.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A file directly under `snapshots/`.
    #[error("Snapshots folder corrupted. Found a file: {}", .0.display())]
    SnapshotIsFile(PathBuf),
    /// A snapshot entry whose blob is gone.
    #[error("Blob missing (broken symlink): {}", .0.display())]
    BrokenSymlink(PathBuf),
    /// Refs naming commits that have no snapshot.
    #[error(
        "Reference(s) refer to missing commit hashes: {{{}}} ({})",
        .dangling.join(", "),
        .path.display()
    )]
    DanglingRefs {
        /// `"<commit>": {"<ref>", ...}` for each missing commit.
        dangling: Vec<String>,
        /// The repo folder.
        path: PathBuf,
    },
}

/// `Unreadable` with its path, for `map_err`.
fn unreadable(path: &Path) -> impl FnOnce(std::io::Error) -> CorruptRepo + '_ {
    move |source| CorruptRepo::Unreadable {
        path: path.to_owned(),
        source,
    }
}

/// The file name of `p`, lossily, or empty.
fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Reads one repo folder the way huggingface_hub's `_scan_cached_repo` does: its snapshots,
/// refs and blobs, and which of `locks` pin each revision.
fn scan_repo(
    path: &Path,
    name: &str,
    locks: &[(PathBuf, Lockfile)],
) -> Result<CachedRepo, CorruptRepo> {
    let (kind, id) = repo_identity(path, name)?;
    let snapshots = path.join("snapshots");
    if !snapshots.is_dir() {
        return Err(CorruptRepo::NoSnapshots(snapshots));
    }
    let mut refs_by_commit = read_refs(&path.join("refs"))?;

    let mut blob_stats: BTreeMap<PathBuf, fs::Metadata> = BTreeMap::new();
    let mut revisions = Vec::new();
    let mut snaps: Vec<PathBuf> = fs::read_dir(&snapshots)
        .map_err(unreadable(&snapshots))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .collect();
    snaps.sort();
    for rev_path in snaps {
        let commit = file_name(&rev_path);
        if IGNORED[..3].contains(&commit.as_str()) {
            continue;
        }
        if rev_path.is_file() {
            return Err(CorruptRepo::SnapshotIsFile(rev_path));
        }
        let files = snapshot_files(&rev_path, &mut blob_stats)?;
        let distinct: BTreeSet<&PathBuf> = files.iter().map(|f| &f.blob).collect();
        let size_on_disk = distinct.iter().map(|b| blob_stats[*b].len()).sum();
        let (last_accessed, last_modified) =
            times(distinct.iter().map(|b| &blob_stats[*b]), &rev_path);
        revisions.push(CachedRevision {
            refs: refs_by_commit
                .remove(&commit)
                .map(|s| s.into_iter().collect())
                .unwrap_or_default(),
            locked_by: locked_by(locks, kind, &id, &commit),
            commit,
            size_on_disk,
            nb_files: files.len(),
            last_modified,
            last_accessed,
            files,
        });
    }
    if !refs_by_commit.is_empty() {
        return Err(CorruptRepo::DanglingRefs {
            dangling: refs_by_commit
                .iter()
                .map(|(c, r)| format!("{c:?}: {:?}", r))
                .collect(),
            path: path.to_owned(),
        });
    }
    let size_on_disk = blob_stats.values().map(|m| m.len()).sum();
    let (last_accessed, last_modified) = times(blob_stats.values(), path);
    Ok(CachedRepo {
        kind: kind.into(),
        id,
        path: path.to_owned(),
        size_on_disk,
        nb_files: blob_stats.len(),
        last_accessed,
        last_modified,
        revisions,
    })
}

/// The scan kind and the repo id a repo folder's name (`models--org--name`) stands for.
fn repo_identity(path: &Path, name: &str) -> Result<(&'static str, String), CorruptRepo> {
    if !path.is_dir() {
        return Err(CorruptRepo::NotADirectory(path.to_owned()));
    }
    let Some((prefix, rest)) = name.split_once("--") else {
        return Err(CorruptRepo::BadName(path.to_owned()));
    };
    let kind = kind_of(prefix).ok_or_else(|| CorruptRepo::UnknownKind {
        prefix: prefix.to_owned(),
        path: path.to_owned(),
    })?;
    Ok((kind, rest.replace("--", "/")))
}

/// The refs under `refs_dir` (none when it does not exist), by the commit each one names.
fn read_refs(refs_dir: &Path) -> Result<BTreeMap<String, BTreeSet<String>>, CorruptRepo> {
    let mut refs_by_commit: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    if refs_dir.is_file() {
        return Err(CorruptRepo::RefsIsFile(refs_dir.to_owned()));
    }
    if !refs_dir.is_dir() {
        return Ok(refs_by_commit);
    }
    for p in super::files_under(refs_dir).map_err(unreadable(refs_dir))? {
        if IGNORED[..3].contains(&file_name(&p).as_str()) {
            continue;
        }
        let commit = String::from_utf8_lossy(&fs::read(&p).map_err(unreadable(&p))?).into_owned();
        let name = p
            .strip_prefix(refs_dir)
            .map(|r| r.to_string_lossy().into_owned())
            .unwrap_or_default();
        refs_by_commit.entry(commit).or_default().insert(name);
    }
    Ok(refs_by_commit)
}

/// The files of the snapshot `rev_path`, sorted by path, each with the blob it resolves to;
/// every blob's metadata is recorded once in `blob_stats`.
fn snapshot_files(
    rev_path: &Path,
    blob_stats: &mut BTreeMap<PathBuf, fs::Metadata>,
) -> Result<Vec<CachedFile>, CorruptRepo> {
    let mut files = Vec::new();
    for p in super::files_under(rev_path).map_err(unreadable(rev_path))? {
        // huggingface_hub: os.path.abspath(parent / readlink), without resolving further.
        let blob = match fs::read_link(&p) {
            Ok(target) => normalize(&p.parent().unwrap_or(Path::new("/")).join(target)),
            Err(_) => p.clone(),
        };
        let meta = fs::metadata(&blob).map_err(|_| CorruptRepo::BrokenSymlink(blob.clone()))?;
        let size = meta.len();
        blob_stats.entry(blob.clone()).or_insert(meta);
        let rel = p
            .strip_prefix(rev_path)
            .map(|r| r.to_string_lossy().into_owned())
            .unwrap_or_default();
        files.push(CachedFile {
            path: rel,
            blob,
            size,
        });
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(files)
}

/// The locks (their paths) that pin the `kind` repo `id` at `commit`.
fn locked_by(locks: &[(PathBuf, Lockfile)], kind: &str, id: &str, commit: &str) -> Vec<String> {
    locks
        .iter()
        .filter(|(_, l)| {
            lock_kind(kind).is_some_and(|k| {
                l.repos
                    .iter()
                    .any(|r| r.kind == k && r.id.as_str() == id && r.commit == commit)
            })
        })
        .map(|(p, _)| p.display().to_string())
        .collect()
}

/// `os.path.abspath`: removes `.` and `..` lexically.
pub(super) fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    /// A valid repo folder `models--acme--<name>` with one file at commit `c` under `main`.
    fn repo(cache: &Path, name: &str, commit: &str) -> PathBuf {
        let root = cache.join(format!("models--acme--{name}"));
        fs::create_dir_all(root.join("blobs")).unwrap();
        fs::create_dir_all(root.join("refs")).unwrap();
        fs::create_dir_all(root.join("snapshots").join(commit)).unwrap();
        fs::write(root.join("blobs/b1"), b"hello").unwrap();
        fs::write(root.join("refs/main"), commit).unwrap();
        symlink(
            "../../blobs/b1",
            root.join("snapshots").join(commit).join("a.txt"),
        )
        .unwrap();
        root
    }

    #[test]
    fn valid_repos_are_read_and_corrupt_ones_are_left_out_with_huggingface_hubs_words() {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path();
        let good = repo(cache, "good", "c1");
        fs::write(cache.join("models--acme--file"), b"").unwrap();
        fs::create_dir(cache.join("plain")).unwrap();
        fs::create_dir(cache.join("widgets--acme--x")).unwrap();
        fs::create_dir(cache.join("models--acme--nosnap")).unwrap();
        let refs_file = repo(cache, "refsfile", "c1");
        fs::remove_dir_all(refs_file.join("refs")).unwrap();
        fs::write(refs_file.join("refs"), b"").unwrap();
        let snap_file = repo(cache, "snapfile", "c1");
        fs::write(snap_file.join("snapshots/stray"), b"").unwrap();
        let broken = repo(cache, "broken", "c1");
        fs::remove_file(broken.join("blobs/b1")).unwrap();
        let dangling = repo(cache, "dangling", "c1");
        fs::write(dangling.join("refs/v1"), "c2").unwrap();

        let scan = scan(cache, &[]).unwrap();
        assert_eq!(scan.repos.len(), 1, "{:?}", scan.warnings);
        let r = &scan.repos[0];
        assert_eq!((r.kind.as_str(), r.id.as_str()), ("model", "acme/good"));
        assert_eq!((r.nb_files, r.size_on_disk), (1, 5));
        assert_eq!(r.revisions[0].refs, ["main"]);
        assert_eq!(r.revisions[0].files[0].blob, good.join("blobs/b1"));

        let d = |p: PathBuf| p.display().to_string();
        let mut expected = vec![
            format!(
                "Repo path is not a directory: {}",
                d(cache.join("models--acme--file"))
            ),
            format!(
                "Repo path is not a valid HuggingFace cache directory: {}",
                d(cache.join("plain"))
            ),
            format!(
                "Repo type must be one of datasets, kernels, models, spaces, found `widgets` ({})",
                d(cache.join("widgets--acme--x"))
            ),
            format!(
                "Snapshots dir doesn't exist in cached repo: {}",
                d(cache.join("models--acme--nosnap/snapshots"))
            ),
            format!(
                "Refs directory cannot be a file: {}",
                d(refs_file.join("refs"))
            ),
            format!(
                "Snapshots folder corrupted. Found a file: {}",
                d(snap_file.join("snapshots/stray"))
            ),
            format!(
                "Blob missing (broken symlink): {}",
                d(broken.join("blobs/b1"))
            ),
            format!(
                "Reference(s) refer to missing commit hashes: {{\"c2\": {{\"v1\"}}}} ({})",
                d(dangling)
            ),
        ];
        expected.sort();
        let mut warnings = scan.warnings.clone();
        warnings.sort();
        assert_eq!(warnings, expected);
    }
}
