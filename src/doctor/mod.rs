//! `modelbake doctor`: would every locked model load offline, with every loader, in an image
//! or on this machine? For each loader ([`crate::loaders`]) the cache it resolves to, and per
//! locked repo: present, missing, stale (its ref names another commit) or unreadable by the
//! image's `User` (or the current user); plus the offline switches. An image in the `files`
//! arrangement is checked folder by folder instead ([`files`]); which arrangement an image is
//! in comes from `--layout` or from its layers ([`crate::bake::detect_layout`]). Images are
//! read from an OCI layout or streamed from a registry ([`image`]).

pub mod files;
pub mod image;

use std::collections::BTreeMap;
use std::io::Read;

use serde::Serialize;

use crate::bake::detect_layout::LayoutFrom;
use crate::hfcache::repo_folder;
use crate::loaders::{self, Loader};
use crate::lock::{LockedRepo, Lockfile};
use crate::manifest::bake_table::ModelArrangement;
pub use files::FolderRow;
pub use image::{Arrangement, ImageAt, diagnose_image};

/// How one locked repo fares with one loader.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum RepoState {
    /// Every locked file is there and readable.
    Present,
    /// Something the offline load needs is absent.
    Missing {
        /// The first absent path.
        path: String,
    },
    /// The ref names another commit than the lock.
    Stale {
        /// The ref file.
        path: String,
        /// The commit it names.
        points_to: String,
    },
    /// A file or folder the user cannot read (or traverse).
    Unreadable {
        /// The first such path.
        path: String,
    },
}

/// One locked repo in one loader's cache.
#[derive(Debug, Clone, Serialize)]
pub struct RepoRow {
    /// `kind/id`.
    pub repo: String,
    /// The locked commit.
    pub commit: String,
    /// How it fares.
    #[serde(flatten)]
    pub state: RepoState,
}

/// One loader: where it looks and what it finds.
#[derive(Debug, Clone, Serialize)]
pub struct LoaderRow {
    /// The loader.
    pub loader: Loader,
    /// The variable that decided where it looks.
    pub variable: &'static str,
    /// Where it looks.
    pub cache: String,
    /// Every locked repo.
    pub repos: Vec<RepoRow>,
}

/// The whole diagnosis.
#[derive(Debug, Clone, Serialize)]
pub struct DoctorReport {
    /// True when every locked repo is present and readable for every loader.
    pub ok: bool,
    /// What was examined (`DIR:TAG`, or `this machine`).
    pub target: String,
    /// Whose read access was checked.
    pub user: String,
    /// Per loader.
    pub loaders: Vec<LoaderRow>,
    /// Whether huggingface_hub runs offline (docs/loaders.md).
    pub offline: bool,
    /// `HF_HUB_OFFLINE` and `TRANSFORMERS_OFFLINE` as set.
    pub offline_env: BTreeMap<&'static str, Option<String>>,
    /// Images only: the arrangement examined and why.
    #[serde(flatten)]
    pub arrangement: Option<ArrangementUsed>,
    /// The `files` arrangement: each locked repo in its folder (`loaders` is then empty).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub folders: Vec<FolderRow>,
    /// What to do about what was found, when the report can tell.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// The arrangement an image was examined in.
#[derive(Debug, Clone, Serialize)]
pub struct ArrangementUsed {
    /// `hf-cache` or `files`.
    pub layout: ModelArrangement,
    /// `flag`, `detected` or `manifest`.
    pub layout_from: LayoutFrom,
    /// The entry of the image that showed it, when detected.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub evidence: Option<String>,
    /// `files`: the models folder.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub models_dir: Option<String>,
    /// `files`: the one repo's files lie directly in `models_dir`.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub flat: bool,
}

/// A file tree to examine: an image's merged layers, or this machine's file system.
trait Tree {
    /// Whether `path` (absolute) exists, without following a final symlink.
    fn exists(&self, path: &str) -> bool;
    /// The content of a small file.
    fn small(&self, path: &str) -> Option<Vec<u8>>;
    /// Whether the user can read `path` (list it, for a folder) and reach it.
    fn readable(&self, path: &str) -> bool;
}

/// The paths an offline load of a repo from a cache looks at (absolute, as [`check_repo`]
/// asks the tree about them).
struct RepoPaths {
    /// The ref file, when the locked revision is not the commit itself (its content is read).
    refs: Option<String>,
    /// The snapshot folder.
    snapshot: String,
    /// Each locked path in the snapshot, then each blob.
    files: Vec<String>,
    /// Each blob (the snapshot links resolve to them).
    blobs: Vec<String>,
}

impl RepoPaths {
    /// The paths of `repo` in `cache`; `None` for a cache that is not an absolute path.
    fn of(cache: &str, repo: &LockedRepo) -> Option<Self> {
        if !cache.starts_with('/') {
            return None;
        }
        let root = format!(
            "{}/{}",
            cache.trim_end_matches('/'),
            repo_folder(repo.kind, &repo.id)
        );
        let snapshot = format!("{root}/snapshots/{}", repo.commit);
        Some(RepoPaths {
            refs: (repo.revision.as_str() != repo.commit)
                .then(|| format!("{root}/refs/{}", repo.revision)),
            files: repo
                .files
                .iter()
                .map(|f| format!("{snapshot}/{}", f.path))
                .collect(),
            blobs: repo
                .files
                .iter()
                .map(|f| format!("{root}/blobs/{}", f.blob))
                .collect(),
            snapshot,
        })
    }
}

/// What an offline load of `repo` from `cache` would find.
fn check_repo(tree: &dyn Tree, cache: &str, repo: &LockedRepo) -> RepoState {
    let Some(paths) = RepoPaths::of(cache, repo) else {
        return RepoState::Missing {
            path: cache.to_owned(),
        };
    };
    if let Some(path) = paths.refs {
        match tree.small(&path) {
            None => return RepoState::Missing { path },
            Some(bytes) if bytes != repo.commit.as_bytes() => {
                return RepoState::Stale {
                    path,
                    points_to: String::from_utf8_lossy(&bytes).chars().take(80).collect(),
                };
            }
            Some(_) => {}
        }
    }
    // Presence: the snapshot folder, each locked path in it and each blob.
    let present = std::iter::once(&paths.snapshot)
        .chain(
            paths
                .files
                .iter()
                .zip(&paths.blobs)
                .flat_map(|(f, b)| [f, b]),
        )
        .find(|p| !tree.exists(p));
    if let Some(path) = present {
        return RepoState::Missing { path: path.clone() };
    }
    // Read access: the snapshot folder and every blob (the snapshot links resolve to them).
    match std::iter::once(&paths.snapshot)
        .chain(&paths.blobs)
        .find(|p| !tree.readable(p))
    {
        Some(path) => RepoState::Unreadable { path: path.clone() },
        None => RepoState::Present,
    }
}

/// Diagnoses `tree` as `env` resolves the loaders.
fn diagnose(
    tree: &dyn Tree,
    env: loaders::EnvFn,
    lock: &Lockfile,
    target: String,
    user: String,
) -> DoctorReport {
    let rows: Vec<LoaderRow> = loaders::resolve_all(env)
        .into_iter()
        .map(|r| LoaderRow {
            loader: r.loader,
            variable: r.variable,
            repos: lock
                .repos
                .iter()
                .map(|repo| RepoRow {
                    repo: format!("{}/{}", repo.kind, repo.id),
                    commit: repo.commit.clone(),
                    state: check_repo(tree, &r.cache, repo),
                })
                .collect(),
            cache: r.cache,
        })
        .collect();
    let ok = rows
        .iter()
        .all(|l| l.repos.iter().all(|r| r.state == RepoState::Present));
    DoctorReport {
        ok,
        loaders: rows,
        ..report_of(env, target, user)
    }
}

/// A report of nothing checked yet (not ok): the target, the user and the offline switches of
/// `env`.
fn report_of(env: loaders::EnvFn, target: String, user: String) -> DoctorReport {
    DoctorReport {
        ok: false,
        target,
        user,
        loaders: Vec::new(),
        offline: loaders::offline(env),
        offline_env: ["HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"]
            .into_iter()
            .map(|k| (k, env(k)))
            .collect(),
        arrangement: None,
        folders: Vec::new(),
        notes: Vec::new(),
    }
}

/// This machine's file system, read as the current user.
struct Host;

impl Tree for Host {
    fn exists(&self, path: &str) -> bool {
        std::fs::symlink_metadata(path).is_ok()
    }
    fn small(&self, path: &str) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        std::fs::File::open(path)
            .ok()?
            .take(64 * 1024)
            .read_to_end(&mut out)
            .ok()?;
        Some(out)
    }
    fn readable(&self, path: &str) -> bool {
        match std::fs::metadata(path) {
            Ok(m) if m.is_dir() => std::fs::read_dir(path).is_ok(),
            Ok(_) => std::fs::File::open(path).is_ok(),
            Err(_) => false,
        }
    }
}

/// Diagnoses this machine as the process environment resolves the loaders.
pub fn diagnose_host(lock: &Lockfile, env: loaders::EnvFn) -> DoctorReport {
    diagnose(
        &Host,
        env,
        lock,
        "this machine".into(),
        "the current user".into(),
    )
}
