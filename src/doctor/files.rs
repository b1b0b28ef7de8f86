//! The `files` arrangement (`bake --layout files`): each locked repo's files as plain files in
//! its folder under the models folder (`/models/<org>/<name>/`, `datasets/…`, `spaces/…`, or
//! the folder itself with `--flat`), which applications load by path. Per repo: present,
//! missing (the first absent file) or unreadable by the image's `User`.

use std::collections::BTreeMap;

use serde::Serialize;

use super::{DoctorReport, RepoState, Tree, report_of};
use crate::bake::plan::files_root;
use crate::loaders;
use crate::lock::{LockedRepo, Lockfile};
use crate::manifest::bake_table::BakeSettings;
use crate::oci::tar_reader::Want;

/// Where the `files` arrangement puts the repos.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilesAt {
    /// The models folder (absolute).
    pub models_dir: String,
    /// One repo, its files directly in the models folder.
    pub flat: bool,
}

/// One locked repo in its folder.
#[derive(Debug, Clone, Serialize)]
pub struct FolderRow {
    /// `kind/id`.
    pub repo: String,
    /// The locked commit.
    pub commit: String,
    /// The folder an application loads it from.
    pub folder: String,
    /// How it fares.
    #[serde(flatten)]
    pub state: RepoState,
}

/// The folder of `repo` and each locked file in it, absolute.
fn paths(repo: &LockedRepo, at: &FilesAt) -> (String, Vec<String>) {
    let settings = BakeSettings {
        models_dir: at.models_dir.clone(),
        flat: at.flat,
        ..BakeSettings::default()
    };
    let folder = format!("/{}", files_root(repo, &settings));
    let files = repo
        .files
        .iter()
        .map(|f| format!("{folder}/{}", f.path))
        .collect();
    (folder, files)
}

/// What loading `repo` from its folder would find.
fn check(tree: &dyn Tree, folder: &str, files: &[String]) -> RepoState {
    if let Some(path) = std::iter::once(folder)
        .chain(files.iter().map(String::as_str))
        .find(|p| !tree.exists(p))
    {
        return RepoState::Missing {
            path: path.to_owned(),
        };
    }
    match std::iter::once(folder)
        .chain(files.iter().map(String::as_str))
        .find(|p| !tree.readable(p))
    {
        Some(path) => RepoState::Unreadable {
            path: path.to_owned(),
        },
        None => RepoState::Present,
    }
}

/// Adds the entries a diagnosis of `lock` at `at` asks about to `wanted`: every locked file,
/// its repo's folder and every folder above them.
pub(super) fn wanted(lock: &Lockfile, at: &FilesAt, wanted: &mut BTreeMap<String, Want>) {
    for repo in &lock.repos {
        let (folder, files) = paths(repo, at);
        for p in std::iter::once(&folder).chain(&files) {
            let mut cur = p.trim_start_matches('/');
            wanted.insert(cur.to_owned(), Want::Entry);
            while let Some((parent, _)) = cur.rsplit_once('/') {
                wanted.entry(parent.to_owned()).or_insert(Want::Entry);
                cur = parent;
            }
        }
    }
}

/// Diagnoses `tree` in the `files` arrangement at `at`; the offline switches as `env` has them.
pub(super) fn diagnose(
    tree: &dyn Tree,
    env: loaders::EnvFn,
    lock: &Lockfile,
    at: &FilesAt,
    target: String,
    user: String,
) -> DoctorReport {
    let folders: Vec<FolderRow> = lock
        .repos
        .iter()
        .map(|repo| {
            let (folder, files) = paths(repo, at);
            FolderRow {
                repo: format!("{}/{}", repo.kind, repo.id),
                commit: repo.commit.clone(),
                state: check(tree, &folder, &files),
                folder,
            }
        })
        .collect();
    DoctorReport {
        ok: folders.iter().all(|f| f.state == RepoState::Present),
        folders,
        ..report_of(env, target, user)
    }
}
