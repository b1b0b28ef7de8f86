//! Proves a huggingface_hub cache holds exactly what the lock says, for every locked repo:
//! refs (exact 40 hex, no newline), snapshot symlinks, the full sha256 of every file, files
//! the lock does not list, and a `trees/` listing that would break offline loads.

use std::fs;
use std::path::{Path, PathBuf};

use futures::{StreamExt, stream};
use serde::Serialize;

use super::{repo_folder, symlink_target};
use crate::hash::sha256_of_file;
use crate::lock::{LockedRepo, Lockfile};
use crate::repo::{RepoId, RepoKind};

/// One thing wrong in the cache.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "problem", rename_all = "snake_case")]
pub enum Problem {
    /// The repo folder or its snapshot is missing.
    MissingSnapshot {
        /// The path that should exist.
        path: String,
    },
    /// `refs/<revision>` is missing.
    MissingRef {
        /// The revision.
        revision: String,
    },
    /// `refs/<revision>` holds something other than exactly the commit.
    BadRef {
        /// The revision.
        revision: String,
        /// What the file holds (escaped).
        found: String,
    },
    /// A locked file is missing from the snapshot.
    Missing {
        /// Repo path.
        path: String,
    },
    /// A snapshot symlink points nowhere.
    BrokenSymlink {
        /// Repo path.
        path: String,
        /// Its target.
        target: String,
    },
    /// A snapshot symlink points somewhere other than this repo's blob.
    WrongSymlink {
        /// Repo path.
        path: String,
        /// Its target.
        target: String,
        /// What it should be.
        expected: String,
    },
    /// The content's sha256 (or size) differs from the lock.
    Corrupt {
        /// Repo path.
        path: String,
        /// The lock's sha256.
        expected: String,
        /// What the file hashes to.
        actual: String,
    },
    /// A file in the snapshot that the lock does not list.
    Extra {
        /// Repo path.
        path: String,
    },
    /// A folder of the repo (the repo folder, `blobs`, `refs`, `snapshots`, the snapshot or a
    /// folder in it) is a symlink: huggingface_hub never makes one, and modelbake never
    /// writes through one (`export` replaces it with a real folder).
    SymlinkedFolder {
        /// The symlink.
        path: String,
        /// Where it points.
        target: String,
    },
    /// `trees/<commit>.json` differs from the lock's full listing, or exists although the lock
    /// holds a filtered list (offline `snapshot_download` would raise `IncompleteSnapshotError`).
    BadTrees {
        /// What is wrong.
        detail: String,
    },
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Problem::MissingSnapshot { path } => write!(f, "missing: {path}"),
            Problem::MissingRef { revision } => write!(f, "missing ref refs/{revision}"),
            Problem::BadRef { revision, found } => write!(
                f,
                "refs/{revision} holds \"{found}\", expected exactly the 40-hex commit (no newline)"
            ),
            Problem::Missing { path } => write!(f, "missing file {path}"),
            Problem::BrokenSymlink { path, target } => {
                write!(f, "broken symlink {path} -> {target}")
            }
            Problem::WrongSymlink {
                path,
                target,
                expected,
            } => write!(f, "symlink {path} -> {target}, expected -> {expected}"),
            Problem::Corrupt {
                path,
                expected,
                actual,
            } => write!(f, "corrupt {path}: sha256 {actual}, expected {expected}"),
            Problem::Extra { path } => write!(f, "extra file {path} (not in the lock)"),
            Problem::SymlinkedFolder { path, target } => write!(
                f,
                "{path} is a symlink to {target}, not a folder: modelbake never writes through it; `modelbake export` replaces it with a real folder (leaving {target} as it is)"
            ),
            Problem::BadTrees { detail } => write!(f, "{detail}"),
        }
    }
}

/// The verdict for one repo.
#[derive(Debug, Clone, Serialize)]
pub struct RepoReport {
    /// Model, dataset or space.
    pub kind: RepoKind,
    /// The repo id.
    pub id: RepoId,
    /// The locked commit.
    pub commit: String,
    /// Files checked (hashed).
    pub files: usize,
    /// Everything wrong, sorted.
    pub problems: Vec<Problem>,
}

/// The verdict for a whole cache.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    /// The cache checked.
    pub hub_cache: PathBuf,
    /// True when nothing is wrong.
    pub ok: bool,
    /// Per repo, in lock order.
    pub repos: Vec<RepoReport>,
}

/// Checks every locked repo in `hub_cache`, hashing files on `parallelism` threads.
pub async fn verify(lock: &Lockfile, hub_cache: &Path, parallelism: usize) -> VerifyReport {
    let mut repos = Vec::new();
    for repo in &lock.repos {
        repos.push(verify_repo(repo, hub_cache, parallelism).await);
    }
    let ok = repos.iter().all(|r| r.problems.is_empty());
    VerifyReport {
        hub_cache: hub_cache.to_owned(),
        ok,
        repos,
    }
}

async fn verify_repo(repo: &LockedRepo, hub_cache: &Path, parallelism: usize) -> RepoReport {
    let root = hub_cache.join(repo_folder(repo.kind, &repo.id));
    let snapshot = root.join("snapshots").join(&repo.commit);
    let mut problems = Vec::new();
    let report = |problems: Vec<Problem>, files| {
        let mut problems = problems;
        problems.sort_by_key(|p| p.to_string());
        RepoReport {
            kind: repo.kind,
            id: repo.id.clone(),
            commit: repo.commit.clone(),
            files,
            problems,
        }
    };

    problems.extend(symlinked_folders(repo, &root));
    if repo.revision.as_str() != repo.commit {
        let ref_path = root.join("refs").join(repo.revision.as_str());
        match fs::read(&ref_path) {
            Ok(bytes) if bytes == repo.commit.as_bytes() => {}
            Ok(bytes) => problems.push(Problem::BadRef {
                revision: repo.revision.to_string(),
                found: String::from_utf8_lossy(&bytes).escape_debug().to_string(),
            }),
            Err(_) => problems.push(Problem::MissingRef {
                revision: repo.revision.to_string(),
            }),
        }
    }
    if !snapshot.is_dir() {
        problems.push(Problem::MissingSnapshot {
            path: snapshot.display().to_string(),
        });
        return report(problems, 0);
    }

    // Symlinks and which file to hash for each path: (the key of the file it resolves to,
    // the index of the locked file), 24 bytes a file however long its path.
    let mut to_hash: Vec<(u128, u32)> = Vec::with_capacity(repo.files.len());
    for (index, f) in repo.files.iter().enumerate() {
        let path = snapshot.join(&f.path);
        let expected = symlink_target(&f.path, &f.blob);
        let Ok(index) = u32::try_from(index) else {
            break;
        };
        match fs::symlink_metadata(&path) {
            Err(_) => problems.push(Problem::Missing {
                path: f.path.clone(),
            }),
            Ok(meta) if meta.file_type().is_symlink() => {
                let target = fs::read_link(&path)
                    .map(|t| t.display().to_string())
                    .unwrap_or_default();
                let Ok(resolved) = fs::canonicalize(&path) else {
                    problems.push(Problem::BrokenSymlink {
                        path: f.path.clone(),
                        target,
                    });
                    continue;
                };
                let blob = root.join("blobs").join(&f.blob);
                let resolves_to_blob = fs::canonicalize(&blob).is_ok_and(|b| b == resolved);
                if !resolves_to_blob {
                    problems.push(Problem::WrongSymlink {
                        path: f.path.clone(),
                        target,
                        expected,
                    });
                }
                to_hash.push((path_key(&resolved), index));
            }
            // A real file: huggingface_hub's no-symlink layout; its content still counts.
            Ok(_) => to_hash.push((path_key(&fs::canonicalize(&path).unwrap_or(path)), index)),
        }
    }

    // Extra files in the snapshot, checked as the walk finds them (the lock's files are
    // sorted by path, so each lookup is a binary search).
    let _ = super::for_each_file_under(&snapshot, &mut |found| {
        let Ok(rel) = found.strip_prefix(&snapshot) else {
            return;
        };
        let rel = rel.to_string_lossy();
        if repo
            .files
            .binary_search_by(|f| f.path.as_str().cmp(&rel))
            .is_err()
        {
            problems.push(Problem::Extra {
                path: rel.into_owned(),
            });
        }
    });

    // trees/<commit>.json.
    let trees = root.join("trees").join(format!("{}.json", repo.commit));
    if let Ok(file) = fs::File::open(&trees) {
        if !repo.complete {
            problems.push(Problem::BadTrees {
                detail: format!(
                    "{} exists but the lock holds a filtered file list: offline snapshot_download would raise IncompleteSnapshotError; delete it",
                    trees.display()
                ),
            });
        } else if !super::trees_json_matches(std::io::BufReader::new(file), repo) {
            problems.push(Problem::BadTrees {
                detail: format!("{} does not match the lock's file list", trees.display()),
            });
        }
    }

    // Full sha256 of every file, each distinct resolved file once: the locked files that
    // resolve to the same file sit next to each other once sorted by key.
    let files = to_hash.len();
    to_hash.sort_unstable();
    let found: Vec<Vec<Problem>> = stream::iter(to_hash.chunk_by(|a, b| a.0 == b.0))
        .map(|uses| {
            let first = &repo.files[uses[0].1 as usize];
            let file = snapshot.join(&first.path);
            async move {
                let result = tokio::task::spawn_blocking(move || hash_file(&file))
                    .await
                    .unwrap_or_else(|e| Err(std::io::Error::other(e)));
                let mut out = Vec::new();
                for &(_, index) in uses {
                    let f = &repo.files[index as usize];
                    match &result {
                        Ok((actual, len)) if *actual == f.sha256 && *len == f.size => {}
                        Ok((actual, _)) => out.push(Problem::Corrupt {
                            path: f.path.clone(),
                            expected: f.sha256.clone(),
                            actual: actual.clone(),
                        }),
                        Err(e) => out.push(Problem::Corrupt {
                            path: f.path.clone(),
                            expected: f.sha256.clone(),
                            actual: format!("unreadable: {e}"),
                        }),
                    }
                }
                out
            }
        })
        .buffer_unordered(parallelism.max(1))
        .filter(|p| std::future::ready(!p.is_empty()))
        .collect()
        .await;
    problems.extend(found.into_iter().flatten());
    report(problems, files)
}

/// The folders of `repo`'s export under `root` that are symlinks, outermost only (what lies
/// below a symlink is reached through it and not reported again).
fn symlinked_folders(repo: &LockedRepo, root: &Path) -> Vec<Problem> {
    let problem = |path: &Path| {
        fs::symlink_metadata(path)
            .is_ok_and(|m| m.file_type().is_symlink())
            .then(|| Problem::SymlinkedFolder {
                path: path.display().to_string(),
                target: fs::read_link(path)
                    .map(|t| t.display().to_string())
                    .unwrap_or_default(),
            })
    };
    if let Some(p) = problem(root) {
        return vec![p];
    }
    let mut links: Vec<PathBuf> = Vec::new();
    let mut out = Vec::new();
    for rel in super::repo_folders(repo) {
        if links.iter().any(|l| rel.starts_with(l)) {
            continue;
        }
        if let Some(p) = problem(&root.join(&rel)) {
            links.push(rel);
            out.push(p);
        }
    }
    out
}

/// The key files are grouped by to hash each once: 128 bits of the sha256 of the resolved
/// path (a collision between two paths of one snapshot is out of reach).
fn path_key(path: &Path) -> u128 {
    crate::hash::key128(path.as_os_str().as_encoded_bytes())
}
/// What a file hashed to: (sha256, size), or why it could not be read.
type Hashed = std::io::Result<(String, u64)>;

/// Hashes one cache file.
fn hash_file(path: &Path) -> Hashed {
    sha256_of_file(path)
}
