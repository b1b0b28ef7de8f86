//! Layer planning: what each layer of a bake holds. One deterministic layer per locked repo
//! (several when a repo is larger than `max_layer_size`): the repo's huggingface_hub cache
//! subtree under `HF_HOME` (the `hf-cache` arrangement) or its files as plain files under
//! `models_dir` (the `files` arrangement), with every parent directory, as sorted
//! [`Entry`]s. Planning reads only the lock and the settings, never the store.

use std::collections::BTreeMap;

use crate::hfcache::{repo_folder, symlink_target, trees_json};
use crate::lock::{LockedFile, LockedRepo, Lockfile};
use crate::manifest::bake_table::{BakeSettings, ModelArrangement};
use crate::oci::Compression;
use crate::oci::tar::Stamp;

/// What an entry of a layer is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    /// A directory (0755).
    Dir,
    /// A file from the store (0644).
    Blob {
        /// Its sha256 (the store key).
        sha256: String,
        /// Its size.
        size: u64,
    },
    /// A small file whose bytes are known (refs, trees listing), 0644.
    Inline(Vec<u8>),
    /// A relative symlink.
    Symlink(String),
    /// A hard link (0644) to an earlier entry of the same layer (path without a leading `/`):
    /// the `files` layout's second and later paths with the same content.
    HardLink(String),
}

/// One tar entry: path inside the image (no leading `/`) and what it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Path without a leading `/`.
    pub path: String,
    /// What it is.
    pub kind: EntryKind,
}

/// The entries of one layer of one repo.
#[derive(Debug, Clone)]
pub struct LayerPlan {
    /// `model/acme/tiny`.
    pub repo: String,
    /// The locked commit.
    pub commit: String,
    /// 1-based part number and how many parts the repo has.
    pub part: (usize, usize),
    /// Entries sorted by path, parents first.
    pub entries: Vec<Entry>,
}

/// The cache subtree root of a repo inside the image, without a leading `/`.
pub fn repo_root(repo: &LockedRepo, settings: &BakeSettings) -> String {
    format!(
        "{}/hub/{}",
        settings.hf_home.trim_start_matches('/'),
        repo_folder(repo.kind, &repo.id)
    )
}

/// Splits a repo into layers in the settings' layout (see [`plan_hf_cache`], [`plan_files`]).
pub fn plan_repo(repo: &LockedRepo, settings: &BakeSettings) -> Vec<LayerPlan> {
    match settings.layout {
        ModelArrangement::HfCache => plan_hf_cache(repo, settings),
        ModelArrangement::Files => plan_files(repo, settings),
    }
}

/// The `files` layout's folder of a repo inside the image, without a leading `/`:
/// `<models_dir>/<id>` for models (`<models_dir>/<name>` for ids without an org),
/// `<models_dir>/datasets/<id>` and `<models_dir>/spaces/<id>` as on the Hub's web paths (no
/// user or org can be called `datasets` or `spaces` there, so these never meet a model), and
/// `<models_dir>` itself with `flat`.
pub fn files_root(repo: &LockedRepo, settings: &BakeSettings) -> String {
    let dir = settings.models_dir.trim_start_matches('/');
    if settings.flat {
        return dir.to_owned();
    }
    format!("{dir}/{}{}", repo.kind.url_prefix(), repo.id)
}

/// Settings the lock cannot be laid out with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// `--flat` with the `hf-cache` arrangement.
    #[error("--flat only applies to --layout files")]
    FlatNeedsFiles,
    /// `--flat` with other than one repo.
    #[error(
        "--flat puts one repo's files directly in {models_dir} but the lock has {repos} repos: bake them \
         without --flat (each under {models_dir}/<org>/<name>/) or lock one repo per manifest"
    )]
    FlatNeedsOneRepo {
        /// The folder.
        models_dir: String,
        /// How many repos the lock has.
        repos: usize,
    },
    /// Two repos in one folder of the `files` arrangement.
    #[error(
        "{a} and {b} would share the folder /{folder} in the files layout: bake them into separate images"
    )]
    SharedFolder {
        /// One repo.
        a: String,
        /// The other.
        b: String,
        /// The folder, without its leading `/`.
        folder: String,
    },
    /// `--platform` or `[bake] platform` is not a platform list.
    #[error(transparent)]
    Platform(#[from] crate::oci::PlatformError),
}

impl crate::hint::Hint for PlanError {
    fn hint(&self) -> Option<String> {
        let hint = match self {
            PlanError::FlatNeedsFiles | PlanError::FlatNeedsOneRepo { .. } => {
                "drop --flat (or `flat = true` in [bake]), or bake one repo with --layout files"
            }
            PlanError::SharedFolder { .. } => {
                "give each repo its own image, or use the hf-cache layout (the default)"
            }
            PlanError::Platform(_) => "write platforms as os/arch[/variant], comma-separated",
        };
        Some(hint.to_owned())
    }
}

/// Refuses settings the lock cannot be laid out with: `flat` without the `files` arrangement or
/// with other than one repo, and two repos whose `files` folders would overlap.
pub fn check_layout(lock: &Lockfile, settings: &BakeSettings) -> Result<(), PlanError> {
    if settings.flat && settings.layout != ModelArrangement::Files {
        return Err(PlanError::FlatNeedsFiles);
    }
    if settings.flat && lock.repos.len() != 1 {
        return Err(PlanError::FlatNeedsOneRepo {
            models_dir: settings.models_dir.clone(),
            repos: lock.repos.len(),
        });
    }
    if settings.layout == ModelArrangement::Files {
        let roots: Vec<(String, String)> = lock
            .repos
            .iter()
            .map(|r| (files_root(r, settings), r.key().to_string()))
            .collect();
        for (a, name_a) in &roots {
            for (b, name_b) in &roots {
                if name_a != name_b && (a == b || b.starts_with(&format!("{a}/"))) {
                    return Err(PlanError::SharedFolder {
                        a: name_a.clone(),
                        b: name_b.clone(),
                        folder: a.clone(),
                    });
                }
            }
        }
    }
    Ok(())
}

/// Every layer of `lock`, in image order, after [`check_layout`].
pub fn plan_lock(lock: &Lockfile, settings: &BakeSettings) -> Result<Vec<LayerPlan>, PlanError> {
    check_layout(lock, settings)?;
    Ok(lock
        .repos
        .iter()
        .flat_map(|r| plan_repo(r, settings))
        .collect())
}

/// `model `acme/tiny` file `x`` for a store blob `plan` needs, for messages.
pub fn describe_blob(lock: &Lockfile, plan: &LayerPlan, sha256: &str) -> String {
    lock.repos
        .iter()
        .filter(|r| r.key().qualified() == plan.repo)
        .flat_map(|r| r.files.iter().map(move |f| (r, f)))
        .find(|(_, f)| f.sha256 == sha256)
        .map(|(r, f)| format!("{} file `{}`", r.label(), f.path))
        .unwrap_or_else(|| format!("{} blob sha256:{sha256}", plan.repo))
}

/// Packs sized items greedily, in the given order, into parts of at most `max` bytes (an item
/// larger than `max` gets a part of its own); there is always at least one part.
fn pack<T>(items: impl IntoIterator<Item = (u64, T)>, max: u64) -> Vec<Vec<T>> {
    let mut parts: Vec<Vec<T>> = vec![Vec::new()];
    let mut used = 0u64;
    for (size, item) in items {
        let last = parts.last().is_some_and(|p| !p.is_empty());
        if last && used + size > max {
            parts.push(Vec::new());
            used = 0;
        }
        if let Some(p) = parts.last_mut() {
            p.push(item);
        }
        used += size;
    }
    parts
}

/// Part `i` of `count` of `repo`: `entries` with every parent directory up to the image root
/// added, sorted by path (so parents come first).
fn finish_plan(
    repo: &LockedRepo,
    (i, count): (usize, usize),
    mut entries: BTreeMap<String, EntryKind>,
) -> LayerPlan {
    // Parents are collected apart (each once; a dataset has few folders and many files)
    // rather than from a copy of every path.
    let mut parents: std::collections::BTreeSet<String> = std::collections::BTreeSet::new();
    for p in entries.keys() {
        let mut cur = p.as_str();
        while let Some((parent, _)) = cur.rsplit_once('/') {
            if parents.contains(parent) {
                break;
            }
            parents.insert(parent.to_owned());
            cur = parent;
        }
    }
    for parent in parents {
        entries.entry(parent).or_insert(EntryKind::Dir);
    }
    LayerPlan {
        repo: repo.key().qualified(),
        commit: repo.commit.clone(),
        part: (i + 1, count),
        entries: entries
            .into_iter()
            .map(|(path, kind)| Entry { path, kind })
            .collect(),
    }
}

/// The huggingface_hub cache layout: unique blobs packed greedily (in blob-name order) into
/// parts of at most `max_layer_size` bytes; the last part also holds refs, snapshot symlinks
/// and trees.
pub fn plan_hf_cache(repo: &LockedRepo, settings: &BakeSettings) -> Vec<LayerPlan> {
    let root = repo_root(repo, settings);
    let mut blobs: BTreeMap<&str, &LockedFile> = BTreeMap::new();
    for f in &repo.files {
        blobs.entry(f.blob.as_str()).or_insert(f);
    }
    let parts = pack(
        blobs.values().map(|f| (f.size, *f)),
        settings.max_layer_size,
    );
    let count = parts.len();
    parts
        .into_iter()
        .enumerate()
        .map(|(i, files)| {
            let mut entries: BTreeMap<String, EntryKind> = BTreeMap::new();
            for f in files {
                entries.insert(
                    format!("{root}/blobs/{}", f.blob),
                    EntryKind::Blob {
                        sha256: f.sha256.clone(),
                        size: f.size,
                    },
                );
            }
            if i + 1 == count {
                let snapshot = format!("{root}/snapshots/{}", repo.commit);
                entries.insert(snapshot.clone(), EntryKind::Dir);
                for f in &repo.files {
                    entries.insert(
                        format!("{snapshot}/{}", f.path),
                        EntryKind::Symlink(symlink_target(&f.path, &f.blob)),
                    );
                }
                if repo.revision.as_str() != repo.commit {
                    entries.insert(
                        format!("{root}/refs/{}", repo.revision),
                        EntryKind::Inline(repo.commit.as_bytes().to_vec()),
                    );
                }
                if repo.complete {
                    entries.insert(
                        format!("{root}/trees/{}.json", repo.commit),
                        EntryKind::Inline(trees_json(repo).into_bytes()),
                    );
                }
                for sub in ["blobs", "refs", "snapshots"] {
                    entries.insert(format!("{root}/{sub}"), EntryKind::Dir);
                }
            }
            finish_plan(repo, (i, count), entries)
        })
        .collect()
}

/// The `files` layout: the snapshot as regular files under [`files_root`]. Files with the same
/// content form one group (the first path holds the bytes, the others are hard links to it, in
/// the same layer); groups are packed greedily, in the order of their first path, into parts
/// of at most `max_layer_size` bytes. The last part also holds the repo folder itself.
pub fn plan_files(repo: &LockedRepo, settings: &BakeSettings) -> Vec<LayerPlan> {
    let root = files_root(repo, settings);
    let mut groups: BTreeMap<&str, Vec<&LockedFile>> = BTreeMap::new();
    for f in &repo.files {
        groups.entry(f.sha256.as_str()).or_default().push(f);
    }
    let mut groups: Vec<Vec<&LockedFile>> = groups.into_values().collect();
    for g in &mut groups {
        g.sort_by(|a, b| a.path.cmp(&b.path));
    }
    groups.sort_by(|a, b| a[0].path.cmp(&b[0].path));
    let parts = pack(
        groups.into_iter().map(|g| (g[0].size, g)),
        settings.max_layer_size,
    );
    let count = parts.len();
    parts
        .into_iter()
        .enumerate()
        .map(|(i, groups)| {
            let mut entries: BTreeMap<String, EntryKind> = BTreeMap::new();
            for group in groups {
                let first = format!("{root}/{}", group[0].path);
                for f in &group[1..] {
                    entries.insert(
                        format!("{root}/{}", f.path),
                        EntryKind::HardLink(first.clone()),
                    );
                }
                entries.insert(
                    first,
                    EntryKind::Blob {
                        sha256: group[0].sha256.clone(),
                        size: group[0].size,
                    },
                );
            }
            if i + 1 == count {
                entries.insert(root.clone(), EntryKind::Dir);
            }
            finish_plan(repo, (i, count), entries)
        })
        .collect()
}

/// Bytes-level options of a layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayerFormat {
    /// Owner and mtime of every entry.
    pub stamp: Stamp,
    /// Compression.
    pub compression: Compression,
    /// The layout the entries follow (only enters the cache key; the plan holds the entries).
    pub layout: ModelArrangement,
}

impl LayerFormat {
    /// The byte-level options of every layer of a bake with `settings` and `mtime`
    /// (`fetch --cache` computes the same keys).
    pub fn new(settings: &BakeSettings, mtime: u64) -> Self {
        LayerFormat {
            stamp: Stamp {
                uid: settings.owner.0,
                gid: settings.owner.1,
                mtime,
            },
            compression: settings.compression,
            layout: settings.layout,
        }
    }

    /// The OCI media type of such a layer.
    pub fn media_type(&self) -> &'static str {
        self.compression.media_type()
    }
}

/// The store files `plan` reads: (sha256, size) of each blob entry.
pub fn store_blobs(plan: &LayerPlan) -> impl Iterator<Item = (&str, u64)> {
    plan.entries.iter().filter_map(|e| match &e.kind {
        EntryKind::Blob { sha256, size } => Some((sha256.as_str(), *size)),
        _ => None,
    })
}
