//! Layer planning: what each layer of a bake holds. One deterministic layer per locked repo
//! (several when a repo is larger than `max_layer_size`): the repo's huggingface_hub cache
//! subtree under `HF_HOME` (the `hf-cache` arrangement) or its files as plain files under
//! `models_dir` (the `files` arrangement), with every parent directory, as [`Entry`]s sorted
//! by path. Planning reads only the lock and the settings, never the store.
//!
//! A plan holds no copy of the lock's strings: it shares the lock and keeps a few numbers per
//! file, and its entries are produced in path order while they are written or checked, by
//! merging four sorted runs (the folders, the stored files, the snapshot links, `refs/` and
//! `trees/`). A 100,000-file layer's entries would otherwise weigh about 65 MB.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Write};
use std::sync::{Arc, OnceLock};

use crate::hash::HashingWriter;
use crate::hfcache::{repo_folder, symlink_target, write_trees_json};
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
    /// A small file whose bytes are known (a `refs/` file), 0644.
    Inline(Vec<u8>),
    /// The repo's `trees/<commit>.json` (0644), produced while it is written or compared
    /// ([`LayerPlan::write_trees`]; 19 MB at 100,000 files).
    Trees,
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

/// One entry of a plan, without its strings: what a reader keeps per entry of a
/// 100,000-file layer ([`LayerPlan::path`] and [`LayerPlan::kind`] give the rest).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryId {
    /// The plan's `i`-th folder.
    Dir(u32),
    /// The plan's `i`-th stored file: a blob (`hf-cache`), or a file or hard link (`files`).
    Stored(u32),
    /// The snapshot symlink of the repo's `i`-th file in path order (`hf-cache`, last part).
    Snapshot(u32),
    /// `refs/<revision>` (`hf-cache`, last part, a revision other than the commit).
    Refs,
    /// `trees/<commit>.json` (`hf-cache`, last part, a complete repo).
    Trees,
}

/// The entries of one layer of one repo.
#[derive(Clone)]
pub struct LayerPlan {
    /// `model/acme/tiny`.
    pub repo: String,
    /// The locked commit.
    pub commit: String,
    /// 1-based part number and how many parts the repo has.
    pub part: (usize, usize),
    lock: Arc<Lockfile>,
    index: usize,
    shape: Arc<Shape>,
}

/// Names the layer, not its entries: a derived `Debug` would print the whole lock.
impl std::fmt::Debug for LayerPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LayerPlan")
            .field("repo", &self.repo)
            .field("commit", &self.commit)
            .field("part", &self.part)
            .field("layout", &self.shape.layout)
            .field("stored", &self.shape.stored.len())
            .finish_non_exhaustive()
    }
}

/// What a part holds, as indices into its repo's files.
#[derive(Debug)]
struct Shape {
    layout: ModelArrangement,
    /// The repo's folder in the image ([`repo_root`] or [`files_root`]).
    root: String,
    /// Every folder of the layer, sorted: the explicit ones and every parent of an entry.
    dirs: Vec<String>,
    /// (file, the first file of its content): one file per blob in blob-name order
    /// (`hf-cache`, the two equal), or every file of the part in path order (`files`; a file
    /// that is not the first of its content is a hard link to it).
    stored: Vec<(u32, u32)>,
    /// The repo's files in path order (`hf-cache`, last part).
    snapshot: Vec<u32>,
    refs: bool,
    trees: bool,
    /// Size and sha256 of `trees/<commit>.json`, computed once when first asked.
    trees_summary: OnceLock<(u64, String)>,
}

impl Shape {
    fn path(&self, repo: &LockedRepo, id: EntryId) -> String {
        let file = |i: u32| &repo.files[i as usize];
        let root = &self.root;
        match id {
            EntryId::Dir(i) => self.dirs[i as usize].clone(),
            EntryId::Stored(i) => {
                let f = file(self.stored[i as usize].0);
                match self.layout {
                    ModelArrangement::HfCache => format!("{root}/blobs/{}", f.blob),
                    ModelArrangement::Files => format!("{root}/{}", f.path),
                }
            }
            EntryId::Snapshot(i) => format!(
                "{root}/snapshots/{}/{}",
                repo.commit,
                file(self.snapshot[i as usize]).path
            ),
            EntryId::Refs => format!("{root}/refs/{}", repo.revision),
            EntryId::Trees => format!("{root}/trees/{}.json", repo.commit),
        }
    }

    /// Every entry but the folders, in no particular order.
    fn files(&self) -> impl Iterator<Item = EntryId> + '_ {
        let n = |len: usize| 0..len as u32;
        n(self.stored.len())
            .map(EntryId::Stored)
            .chain(n(self.snapshot.len()).map(EntryId::Snapshot))
            .chain(self.refs.then_some(EntryId::Refs))
            .chain(self.trees.then_some(EntryId::Trees))
    }

    /// Fills `dirs`: `explicit` and every parent of an entry (each once; a dataset has few
    /// folders and many files).
    fn with_dirs(mut self, repo: &LockedRepo, explicit: Vec<String>) -> Self {
        let mut dirs: BTreeSet<String> = BTreeSet::new();
        let add_parents = |path: &str, dirs: &mut BTreeSet<String>| {
            let mut cur = path;
            while let Some((parent, _)) = cur.rsplit_once('/') {
                if dirs.contains(parent) {
                    break;
                }
                dirs.insert(parent.to_owned());
                cur = parent;
            }
        };
        for id in self.files() {
            add_parents(&self.path(repo, id), &mut dirs);
        }
        for d in explicit {
            add_parents(&d, &mut dirs);
            dirs.insert(d);
        }
        self.dirs = dirs.into_iter().collect();
        self
    }
}

impl LayerPlan {
    /// The locked repo this plan lays out.
    pub fn locked(&self) -> &LockedRepo {
        &self.lock.repos[self.index]
    }

    fn file(&self, i: u32) -> &LockedFile {
        &self.locked().files[i as usize]
    }

    /// The path (without a leading `/`) of entry `id`.
    pub fn path(&self, id: EntryId) -> String {
        self.shape.path(self.locked(), id)
    }

    /// What entry `id` is.
    pub fn kind(&self, id: EntryId) -> EntryKind {
        let shape = &self.shape;
        match id {
            EntryId::Dir(_) => EntryKind::Dir,
            EntryId::Stored(i) => {
                let (f, first) = shape.stored[i as usize];
                let file = self.file(f);
                if f == first {
                    EntryKind::Blob {
                        sha256: file.sha256.clone(),
                        size: file.size,
                    }
                } else {
                    EntryKind::HardLink(format!("{}/{}", shape.root, self.file(first).path))
                }
            }
            EntryId::Snapshot(i) => {
                let f = self.file(shape.snapshot[i as usize]);
                EntryKind::Symlink(symlink_target(&f.path, &f.blob))
            }
            EntryId::Refs => EntryKind::Inline(self.locked().commit.as_bytes().to_vec()),
            EntryId::Trees => EntryKind::Trees,
        }
    }

    /// Every entry with its path, sorted by path (so parents come first).
    pub fn ids(&self) -> impl Iterator<Item = (String, EntryId)> + '_ {
        let mut merge = Merge {
            plan: self,
            heads: Default::default(),
            next: [0; RUNS],
        };
        for run in 0..RUNS {
            merge.pull(run);
        }
        merge
    }

    /// Every entry, sorted by path (so parents come first).
    pub fn entries(&self) -> impl Iterator<Item = Entry> + '_ {
        self.ids().map(|(path, id)| Entry {
            kind: self.kind(id),
            path,
        })
    }

    /// The store files the plan reads: (sha256, size) of each blob entry, in path order.
    pub fn store_blobs(&self) -> impl Iterator<Item = (&str, u64)> {
        self.shape
            .stored
            .iter()
            .filter(|(f, first)| f == first)
            .map(|(f, _)| {
                let file = self.file(*f);
                (file.sha256.as_str(), file.size)
            })
    }

    /// `model `acme/tiny` file `x`` for a store blob the plan needs, for messages.
    pub fn describe_blob(&self, sha256: &str) -> String {
        let repo = self.locked();
        match repo.files.iter().find(|f| f.sha256 == sha256) {
            Some(f) => format!("{} file `{}`", repo.label(), f.path),
            None => format!("{} blob sha256:{sha256}", self.repo),
        }
    }

    /// Writes the repo's `trees/<commit>.json` (the [`EntryKind::Trees`] entry) into `out`.
    pub fn write_trees(&self, out: &mut dyn Write) -> io::Result<()> {
        write_trees_json(self.locked(), out)
    }

    /// Size and sha256 (hex) of the repo's `trees/<commit>.json`, produced once without
    /// being held.
    pub fn trees_summary(&self) -> (u64, String) {
        let summary = self.shape.trees_summary.get_or_init(|| {
            let mut hashed = HashingWriter::new(io::sink());
            // Writing into a sink cannot fail.
            let _ = self.write_trees(&mut hashed);
            let (sha256, size, _) = hashed.finish();
            (size, sha256)
        });
        summary.clone()
    }
}

/// How many sorted runs a plan's entries are merged from: folders, stored files, snapshot
/// links, then `refs/` and `trees/` (in that order, which is theirs by path).
const RUNS: usize = 4;

/// The merge behind [`LayerPlan::ids`]: the head of each run with its path; the smallest
/// path comes next, a folder giving way to an entry of the same path (which appears once).
struct Merge<'a> {
    plan: &'a LayerPlan,
    heads: [Option<(String, EntryId)>; RUNS],
    next: [u32; RUNS],
}

impl Merge<'_> {
    /// Moves run `run` to its next entry.
    fn pull(&mut self, run: usize) {
        let shape = &self.plan.shape;
        let i = self.next[run];
        let len = |n: usize| i < n as u32;
        let id = match run {
            0 => len(shape.dirs.len()).then_some(EntryId::Dir(i)),
            1 => len(shape.stored.len()).then_some(EntryId::Stored(i)),
            2 => len(shape.snapshot.len()).then_some(EntryId::Snapshot(i)),
            _ => [
                shape.refs.then_some(EntryId::Refs),
                shape.trees.then_some(EntryId::Trees),
            ]
            .into_iter()
            .flatten()
            .nth(i as usize),
        };
        self.next[run] += 1;
        self.heads[run] = id.map(|id| (self.plan.path(id), id));
    }
}

impl Iterator for Merge<'_> {
    type Item = (String, EntryId);

    fn next(&mut self) -> Option<Self::Item> {
        let is_dir = |id: &EntryId| matches!(id, EntryId::Dir(_));
        let best = (0..RUNS)
            .filter_map(|run| self.heads[run].as_ref().map(|(p, id)| (run, p, id)))
            .min_by(|a, b| a.1.cmp(b.1).then(is_dir(a.2).cmp(&is_dir(b.2))))?
            .0;
        let (path, id) = self.heads[best].take()?;
        self.pull(best);
        for run in 0..RUNS {
            while self.heads[run].as_ref().is_some_and(|(p, _)| *p == path) {
                self.pull(run);
            }
        }
        Some((path, id))
    }
}

/// The cache subtree root of a repo inside the image, without a leading `/`.
pub fn repo_root(repo: &LockedRepo, settings: &BakeSettings) -> String {
    format!(
        "{}/hub/{}",
        settings.hf_home.trim_start_matches('/'),
        repo_folder(repo.kind, &repo.id)
    )
}

/// Splits the lock's `index`-th repo into layers in the settings' layout (`hf-cache` or
/// `files`, as `docs/formats.md` describes them).
pub fn plan_repo(lock: &Arc<Lockfile>, index: usize, settings: &BakeSettings) -> Vec<LayerPlan> {
    let Some(repo) = lock.repos.get(index) else {
        return Vec::new();
    };
    let shapes = match settings.layout {
        ModelArrangement::HfCache => shape_hf_cache(repo, settings),
        ModelArrangement::Files => shape_files(repo, settings),
    };
    let count = shapes.len();
    shapes
        .into_iter()
        .enumerate()
        .map(|(i, shape)| LayerPlan {
            repo: repo.key().qualified(),
            commit: repo.commit.clone(),
            part: (i + 1, count),
            lock: lock.clone(),
            index,
            shape: Arc::new(shape),
        })
        .collect()
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
pub fn plan_lock(
    lock: &Arc<Lockfile>,
    settings: &BakeSettings,
) -> Result<Vec<LayerPlan>, PlanError> {
    check_layout(lock, settings)?;
    Ok((0..lock.repos.len())
        .flat_map(|i| plan_repo(lock, i, settings))
        .collect())
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

/// The huggingface_hub cache layout: unique blobs packed greedily (in blob-name order) into
/// parts of at most `max_layer_size` bytes; the last part also holds refs, snapshot symlinks
/// and trees.
fn shape_hf_cache(repo: &LockedRepo, settings: &BakeSettings) -> Vec<Shape> {
    let root = repo_root(repo, settings);
    let mut blobs: BTreeMap<&str, u32> = BTreeMap::new();
    for (i, f) in repo.files.iter().enumerate() {
        blobs.entry(f.blob.as_str()).or_insert(i as u32);
    }
    let size = |i: u32| repo.files[i as usize].size;
    let parts = pack(
        blobs.into_values().map(|i| (size(i), i)),
        settings.max_layer_size,
    );
    let count = parts.len();
    parts
        .into_iter()
        .enumerate()
        .map(|(i, files)| {
            let mut shape = Shape {
                layout: ModelArrangement::HfCache,
                root: root.clone(),
                dirs: Vec::new(),
                stored: files.into_iter().map(|f| (f, f)).collect(),
                snapshot: Vec::new(),
                refs: false,
                trees: false,
                trees_summary: OnceLock::new(),
            };
            let mut explicit = Vec::new();
            if i + 1 == count {
                shape.snapshot = (0..repo.files.len() as u32).collect();
                shape.snapshot.sort_by(|a, b| {
                    repo.files[*a as usize]
                        .path
                        .cmp(&repo.files[*b as usize].path)
                });
                shape.refs = repo.revision.as_str() != repo.commit;
                shape.trees = repo.complete;
                explicit.push(format!("{root}/snapshots/{}", repo.commit));
                for sub in ["blobs", "refs", "snapshots"] {
                    explicit.push(format!("{root}/{sub}"));
                }
            }
            shape.with_dirs(repo, explicit)
        })
        .collect()
}

/// The `files` layout: the snapshot as regular files under [`files_root`]. Files with the same
/// content form one group (the first path holds the bytes, the others are hard links to it, in
/// the same layer); groups are packed greedily, in the order of their first path, into parts
/// of at most `max_layer_size` bytes. The last part also holds the repo folder itself.
fn shape_files(repo: &LockedRepo, settings: &BakeSettings) -> Vec<Shape> {
    let root = files_root(repo, settings);
    let path = |i: &u32| repo.files[*i as usize].path.as_str();
    let mut groups: BTreeMap<&str, Vec<u32>> = BTreeMap::new();
    for (i, f) in repo.files.iter().enumerate() {
        groups.entry(f.sha256.as_str()).or_default().push(i as u32);
    }
    let mut groups: Vec<Vec<u32>> = groups.into_values().collect();
    for g in &mut groups {
        g.sort_by(|a, b| path(a).cmp(path(b)));
    }
    groups.sort_by(|a, b| path(&a[0]).cmp(path(&b[0])));
    let parts = pack(
        groups
            .into_iter()
            .map(|g| (repo.files[g[0] as usize].size, g)),
        settings.max_layer_size,
    );
    let count = parts.len();
    parts
        .into_iter()
        .enumerate()
        .map(|(i, groups)| {
            let mut stored: Vec<(u32, u32)> = groups
                .iter()
                .flat_map(|g| g.iter().map(|f| (*f, g[0])))
                .collect();
            stored.sort_by(|a, b| path(&a.0).cmp(path(&b.0)));
            let shape = Shape {
                layout: ModelArrangement::Files,
                root: root.clone(),
                dirs: Vec::new(),
                stored,
                snapshot: Vec::new(),
                refs: false,
                trees: false,
                trees_summary: OnceLock::new(),
            };
            let explicit = if i + 1 == count {
                vec![root.clone()]
            } else {
                Vec::new()
            };
            shape.with_dirs(repo, explicit)
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
    /// The layout the entries follow (only enters the cache key; the plan decides the
    /// entries).
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

/// A repo's plans on their own: a lock of just `repo`.
#[cfg(test)]
pub fn plan_one(repo: LockedRepo, settings: &BakeSettings) -> Vec<LayerPlan> {
    let mut lock = Lockfile::new();
    lock.repos.push(repo);
    plan_repo(&Arc::new(lock), 0, settings)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;
    use crate::hfcache::trees_json;
    use crate::repo::{RepoKind, Revision};
    use crate::test_support::fuzz::locked_repo;

    /// The plans as the first releases built them, held whole: every entry in a map by path,
    /// parents added after. The merged, produced-while-read plans must give exactly these
    /// entries (the trees listing as its bytes).
    fn reference(repo: &LockedRepo, settings: &BakeSettings) -> Vec<Vec<Entry>> {
        fn finish(mut entries: BTreeMap<String, EntryKind>) -> Vec<Entry> {
            let mut parents = Vec::new();
            for p in entries.keys() {
                let mut cur = p.as_str();
                while let Some((parent, _)) = cur.rsplit_once('/') {
                    parents.push(parent.to_owned());
                    cur = parent;
                }
            }
            for parent in parents {
                entries.entry(parent).or_insert(EntryKind::Dir);
            }
            entries
                .into_iter()
                .map(|(path, kind)| Entry { path, kind })
                .collect()
        }
        match settings.layout {
            ModelArrangement::HfCache => {
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
                let mut out = Vec::new();
                for (i, files) in parts.into_iter().enumerate() {
                    let mut entries = BTreeMap::new();
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
                    out.push(finish(entries));
                }
                out
            }
            ModelArrangement::Files => {
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
                let mut out = Vec::new();
                for (i, groups) in parts.into_iter().enumerate() {
                    let mut entries = BTreeMap::new();
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
                    out.push(finish(entries));
                }
                out
            }
        }
    }

    /// `plan`'s entries with the trees listing as its bytes.
    fn expanded(plan: &LayerPlan) -> Vec<Entry> {
        plan.entries()
            .map(|e| match e.kind {
                EntryKind::Trees => {
                    let mut bytes = Vec::new();
                    plan.write_trees(&mut bytes).unwrap();
                    assert_eq!(
                        plan.trees_summary(),
                        (bytes.len() as u64, crate::hash::sha256_hex(&bytes))
                    );
                    Entry {
                        path: e.path,
                        kind: EntryKind::Inline(bytes),
                    }
                }
                _ => e,
            })
            .collect()
    }

    /// Paths whose order by bytes differs from a walk of the tree (`-` and `.` sort before
    /// `/`), nested folders, and shared content.
    fn repo_strategy() -> impl Strategy<Value = LockedRepo> {
        let segment = prop::sample::select(vec!["a", "a-b", "a.b", "b", "sub", "x.json"]);
        let path = prop::collection::vec(segment, 1..4).prop_map(|s| s.join("/"));
        let content = prop::sample::select(vec![&b"one"[..], b"two", b"three!", b"", b"x"]);
        let files = prop::collection::btree_map(path, (content, any::<bool>()), 0..12);
        let revision = prop::sample::select(vec!["main", "COMMIT", "refs/pr/1", "v1.0"]);
        (files, revision, any::<bool>(), any::<bool>()).prop_filter_map(
            "no file may be a folder of another",
            |(files, revision, complete, dataset)| {
                let paths: Vec<&String> = files.keys().collect();
                if paths
                    .iter()
                    .any(|a| paths.iter().any(|b| b.starts_with(&format!("{a}/"))))
                {
                    return None;
                }
                let list: Vec<(&str, &[u8], bool)> = files
                    .iter()
                    .map(|(p, (c, lfs))| (p.as_str(), *c, *lfs))
                    .collect();
                let commit = "c".repeat(40);
                let kind = if dataset {
                    RepoKind::Dataset
                } else {
                    RepoKind::Model
                };
                let mut repo = locked_repo(kind, "acme/tiny", &commit, &list);
                let revision = revision.replace("COMMIT", &commit);
                repo.revision = Revision::parse(&revision).ok()?;
                repo.complete = complete;
                Some(repo)
            },
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]
        #[test]
        fn merged_plans_are_the_entries_a_whole_map_gives(
            repo in repo_strategy(),
            files in any::<bool>(),
            flat in any::<bool>(),
            max in prop::sample::select(vec![1u64, 4, 8, 1 << 30]),
        ) {
            let settings = BakeSettings {
                layout: if files { ModelArrangement::Files } else { ModelArrangement::HfCache },
                flat: files && flat,
                max_layer_size: max,
                ..BakeSettings::default()
            };
            let want = reference(&repo, &settings);
            let plans = plan_one(repo, &settings);
            prop_assert_eq!(plans.len(), want.len());
            for (plan, want) in plans.iter().zip(&want) {
                prop_assert_eq!(&expanded(plan), want);
                let blobs: Vec<(&str, u64)> = want
                    .iter()
                    .filter_map(|e| match &e.kind {
                        EntryKind::Blob { sha256, size } => Some((sha256.as_str(), *size)),
                        _ => None,
                    })
                    .collect();
                prop_assert_eq!(plan.store_blobs().collect::<Vec<_>>(), blobs);
            }
        }
    }
}
