//! One deterministic layer per locked repo (several when a repo is larger than
//! `max_layer_size`): the repo's huggingface_hub cache subtree under `HF_HOME` (the `hf-cache`
//! layout) or its files as plain files under `models_dir` (the `files` layout), with every
//! parent directory, streamed from the store straight into the (optionally compressed) tar.
//! Built layers are kept in the store under a key derived from everything that determines their
//! bytes, so a rebake of an unchanged lock reuses them.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::digest::Digest;
use super::tar::{Stamp, TarWriter};
use super::{MEDIA_LAYER_GZIP, MEDIA_LAYER_TAR, MEDIA_LAYER_ZSTD};
use crate::hash::{HashingWriter, sha256_hex};
use crate::hfcache::{repo_folder, symlink_target, trees_json};
use crate::lock::Lockfile;
use crate::lock::{LockedFile, LockedRepo};
use crate::manifest::{BakeSettings, Compression, ImageLayout};
use crate::store::Store;

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
        ImageLayout::HfCache => plan_hf_cache(repo, settings),
        ImageLayout::Files => plan_files(repo, settings),
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

/// Refuses settings the lock cannot be laid out with: `flat` without the `files` layout or
/// with other than one repo, and two repos whose `files` folders would overlap.
pub fn check_layout(lock: &Lockfile, settings: &BakeSettings) -> Result<(), String> {
    if settings.flat && settings.layout != ImageLayout::Files {
        return Err("--flat only applies to --layout files".into());
    }
    if settings.flat && lock.repos.len() != 1 {
        return Err(format!(
            "--flat puts one repo's files directly in {} but the lock has {} repos: bake them \
             without --flat (each under {}/<org>/<name>/) or lock one repo per manifest",
            settings.models_dir,
            lock.repos.len(),
            settings.models_dir
        ));
    }
    if settings.layout == ImageLayout::Files {
        let roots: Vec<(String, String)> = lock
            .repos
            .iter()
            .map(|r| (files_root(r, settings), r.key().to_string()))
            .collect();
        for (a, name_a) in &roots {
            for (b, name_b) in &roots {
                if name_a != name_b && (a == b || b.starts_with(&format!("{a}/"))) {
                    return Err(format!(
                        "{name_a} and {name_b} would share the folder /{a} in the files layout: \
                         bake them into separate images"
                    ));
                }
            }
        }
    }
    Ok(())
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
    let paths: Vec<String> = entries.keys().cloned().collect();
    for p in paths {
        let mut cur = p.as_str();
        while let Some((parent, _)) = cur.rsplit_once('/') {
            entries.entry(parent.to_owned()).or_insert(EntryKind::Dir);
            cur = parent;
        }
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
    pub layout: ImageLayout,
}

impl LayerFormat {
    /// The OCI media type of such a layer.
    pub fn media_type(&self) -> &'static str {
        match self.compression {
            Compression::None => MEDIA_LAYER_TAR,
            Compression::Gzip => MEDIA_LAYER_GZIP,
            Compression::Zstd => MEDIA_LAYER_ZSTD,
        }
    }
}

/// A layer on disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuiltLayer {
    /// `sha256:<hex>` of the (compressed) blob.
    pub digest: Digest,
    /// `sha256:<hex>` of the uncompressed tar.
    pub diff_id: Digest,
    /// Blob size in bytes.
    pub size: u64,
    /// OCI media type.
    pub media_type: String,
    /// `model/acme/tiny`.
    pub repo: String,
    /// The locked commit.
    pub commit: String,
    /// `1/1`, `2/3`...
    pub part: String,
    /// Where the blob is (in the store's layer cache).
    #[serde(skip)]
    pub path: PathBuf,
    /// Whether it came from the cache.
    #[serde(skip)]
    pub reused: bool,
}

/// The cache key: sha256 of everything that decides the layer's bytes. The `files` layout adds
/// its name to the key, so the two layouts never share a cache entry (and the keys of
/// `hf-cache` layers stay what they were).
pub fn cache_key(plan: &LayerPlan, format: LayerFormat) -> String {
    let mut h = Sha256::new();
    h.update(
        format!(
            "modelbake-layer-v1\n{:?}\n{:?}\n",
            format.compression, format.stamp
        )
        .as_bytes(),
    );
    if format.layout == ImageLayout::Files {
        h.update(b"layout files\n");
    }
    for e in &plan.entries {
        let kind = match &e.kind {
            EntryKind::Dir => "dir".to_owned(),
            EntryKind::Blob { sha256, size } => format!("blob {sha256} {size}"),
            EntryKind::Inline(bytes) => format!("inline {}", sha256_hex(bytes)),
            EntryKind::Symlink(t) => format!("link {t}"),
            EntryKind::HardLink(t) => format!("hardlink {t}"),
        };
        h.update(format!("{}\0{kind}\n", e.path).as_bytes());
    }
    hex::encode(h.finalize())
}

/// The layer for `plan` when the store's layer cache already holds it (record and blob).
pub fn cached(store: &Store, plan: &LayerPlan, format: LayerFormat) -> Option<BuiltLayer> {
    let key = cache_key(plan, format);
    let meta_path = store.layout().layers().join(format!("{key}.json"));
    let mut layer = read_record(&meta_path, &store.layout().layer_blobs())?;
    if fs::symlink_metadata(&layer.path).is_ok_and(|m| m.is_file() && m.len() == layer.size) {
        layer.reused = true;
        return Some(layer);
    }
    None
}

/// The store files `plan` reads: (sha256, size) of each blob entry.
pub fn store_blobs(plan: &LayerPlan) -> impl Iterator<Item = (&str, u64)> {
    plan.entries.iter().filter_map(|e| match &e.kind {
        EntryKind::Blob { sha256, size } => Some((sha256.as_str(), *size)),
        _ => None,
    })
}

/// A temp file in the layer cache folder for the layer of `key`, to be [`adopt`]ed.
pub fn temp_path(store: &Store, key: &str) -> io::Result<PathBuf> {
    let dir = store.layout().layers();
    fs::create_dir_all(store.layout().layer_blobs())?;
    Ok(dir.join(format!(
        ".{key}.{}-{:08x}.tmp",
        std::process::id(),
        fastrand::u32(..)
    )))
}

/// Builds (or takes from the cache) the layer for `plan`.
pub fn build(store: &Store, plan: &LayerPlan, format: LayerFormat) -> io::Result<BuiltLayer> {
    if let Some(layer) = cached(store, plan, format) {
        return Ok(layer);
    }
    let key = cache_key(plan, format);
    let tmp = temp_path(store, &key)?;
    let result = write_layer(store, plan, format, &tmp);
    let (diff_id, digest, size) = match result {
        Ok(v) => v,
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
    };
    let (digest, diff_id) = match (
        Digest::from_sha256_hex(&digest),
        Digest::from_sha256_hex(&diff_id),
    ) {
        (Ok(d), Ok(i)) => (d, i),
        _ => {
            let _ = fs::remove_file(&tmp);
            return Err(io::Error::other(
                "the layer writer produced a malformed digest",
            ));
        }
    };
    let layer = BuiltLayer {
        digest,
        diff_id,
        size,
        media_type: format.media_type().to_owned(),
        repo: plan.repo.clone(),
        commit: plan.commit.clone(),
        part: format!("{}/{}", plan.part.0, plan.part.1),
        path: PathBuf::new(),
        reused: false,
    };
    adopt(store, &key, layer, &tmp)
}

/// Puts the finished, checked blob at `tmp` (from [`temp_path`]) into the layer cache as the
/// layer of `key`, with its record; the blob lands first, so a record never names a missing
/// blob.
pub fn adopt(
    store: &Store,
    key: &str,
    mut layer: BuiltLayer,
    tmp: &Path,
) -> io::Result<BuiltLayer> {
    let path = store.layout().layer_blobs().join(layer.digest.hex());
    // Read-only: the layer is hard-linked into --layers and --oci outputs, and an edit there
    // must not silently change the cached layer.
    let placed = fs::set_permissions(tmp, std::os::unix::fs::PermissionsExt::from_mode(0o444))
        .and_then(|()| fs::rename(tmp, &path));
    if let Err(e) = placed {
        let _ = fs::remove_file(tmp);
        return Err(e);
    }
    layer.path = path;
    let meta_path = store.layout().layers().join(format!("{key}.json"));
    crate::fs_atomic::write_atomic(
        &meta_path,
        &serde_json::to_vec_pretty(&layer).map_err(io::Error::other)?,
        crate::fs_atomic::Mode::Fixed(0o644),
    )?;
    Ok(layer)
}

/// A layer-cache record (`<store>/layers/<key>.json`), its digests validated, with the path
/// of its blob; `None` for a record that is unreadable or not ours (it is then rebuilt).
fn read_record(path: &Path, blobs: &Path) -> Option<BuiltLayer> {
    let text = fs::read(path).ok()?;
    let mut layer: BuiltLayer = serde_json::from_slice(&text).ok()?;
    layer.path = blobs.join(layer.digest.hex());
    Some(layer)
}

/// What the layer cache's collection found (and, when applied, removed).
#[derive(Debug, Clone, Default)]
pub struct LayerGc {
    /// Layer blobs of repos at commits no lock references.
    pub blobs: Vec<PathBuf>,
    /// Bytes they hold.
    pub freed: u64,
}

/// The layer cache's part of `store gc`: records of repos at commits that none of `keep`
/// references go, and their blobs with them unless a kept record shares the blob. Records are
/// read as typed [`BuiltLayer`]s, so a record this code cannot parse is never acted on and a
/// hostile digest never names a path; symlinks in the cache are never followed.
pub fn collect_cache(store: &Store, keep: &[Lockfile], apply: bool) -> io::Result<LayerGc> {
    let dir = store.layout().layers();
    let blobs = store.layout().layer_blobs();
    let mut report = LayerGc::default();
    let real_dir = |p: &Path| fs::symlink_metadata(p).is_ok_and(|m| m.is_dir());
    if !real_dir(&dir) || !real_dir(&blobs) {
        return Ok(report);
    }
    let wanted: std::collections::BTreeSet<(String, &str)> = keep
        .iter()
        .flat_map(|l| &l.repos)
        .map(|r| (r.key().qualified(), r.commit.as_str()))
        .collect();
    let mut kept = std::collections::BTreeSet::new();
    let mut drop = Vec::new();
    for entry in fs::read_dir(&dir)?.filter_map(Result::ok) {
        let path = entry.path();
        let is_record = entry.file_type().is_ok_and(|t| t.is_file())
            && path.extension().is_some_and(|e| e == "json");
        let Some(layer) = is_record.then(|| read_record(&path, &blobs)).flatten() else {
            continue;
        };
        if wanted.contains(&(layer.repo.clone(), layer.commit.as_str())) {
            kept.insert(layer.digest);
        } else {
            drop.push((path, layer));
        }
    }
    for (record, layer) in drop {
        if !kept.contains(&layer.digest) {
            if let Ok(m) = fs::symlink_metadata(&layer.path)
                && m.is_file()
            {
                report.freed += m.len();
                if apply {
                    fs::remove_file(&layer.path)?;
                }
            }
            report.blobs.push(layer.path);
        }
        if apply {
            fs::remove_file(&record)?;
        }
    }
    Ok(report)
}

/// `store gc` as a whole: the store's blobs and partial downloads
/// ([`crate::store::gc::gc`]), then this layer cache's records and blobs.
pub fn collect_store(
    store: &Store,
    keep: &[Lockfile],
    apply: bool,
) -> anyhow::Result<crate::store::gc::GcReport> {
    let mut report = crate::store::gc::gc(store, keep, apply)?;
    let layers = collect_cache(store, keep, apply).map_err(|e| {
        anyhow::anyhow!(
            "collecting the layer cache of {}: {e}",
            store.root().display()
        )
    })?;
    report.freed += layers.freed;
    report.layers = layers.blobs;
    Ok(report)
}

/// Streams the tar into `tmp`; returns (diff_id hex, digest hex, blob size).
fn write_layer(
    store: &Store,
    plan: &LayerPlan,
    format: LayerFormat,
    tmp: &Path,
) -> io::Result<(String, String, u64)> {
    let file = BufWriter::with_capacity(1 << 20, File::create(tmp)?);
    let blob_writer = HashingWriter::new(file);
    match format.compression {
        Compression::None => {
            let out = write_entries(store, plan, format.stamp, blob_writer)?;
            let (digest, size, mut file) = out.finish();
            file.flush()?;
            Ok((digest.clone(), digest, size))
        }
        Compression::Gzip => {
            let gz = flate2::GzBuilder::new()
                .mtime(0)
                .operating_system(255)
                .write(blob_writer, flate2::Compression::new(1));
            let tar_hash = write_entries(store, plan, format.stamp, HashingWriter::new(gz))?;
            let (diff_id, _, gz) = tar_hash.finish();
            let (digest, size, mut file) = gz.finish()?.finish();
            file.flush()?;
            Ok((diff_id, digest, size))
        }
        Compression::Zstd => {
            let mut z = zstd::stream::write::Encoder::new(blob_writer, 3)?;
            z.include_checksum(true)?;
            z.multithread(zstd_workers())?;
            let tar_hash = write_entries(store, plan, format.stamp, HashingWriter::new(z))?;
            let (diff_id, _, z) = tar_hash.finish();
            let (digest, size, mut file) = z.finish()?.finish();
            file.flush()?;
            Ok((diff_id, digest, size))
        }
    }
}

/// zstd worker threads: the machine's cores (zstd's multi-threaded output does not depend on
/// the number of workers, which a unit test checks).
fn zstd_workers() -> u32 {
    std::thread::available_parallelism()
        .map(|n| n.get() as u32)
        .unwrap_or(2)
        .clamp(1, 16)
}

fn write_entries<W: Write>(store: &Store, plan: &LayerPlan, stamp: Stamp, out: W) -> io::Result<W> {
    write_entries_from(plan, stamp, out, &|sha256| {
        let path = store.blob_path(sha256);
        File::open(&path).map_err(|err| {
            io::Error::new(
                err.kind(),
                format!("{}: {err} (run `modelbake fetch` first)", path.display()),
            )
        })
    })
}

/// Writes `plan`'s entries as a tar into `out`, reading each blob's bytes from `open(sha256)`.
fn write_entries_from<W: Write, R: io::Read>(
    plan: &LayerPlan,
    stamp: Stamp,
    out: W,
    open: &dyn Fn(&str) -> io::Result<R>,
) -> io::Result<W> {
    let mut tar = TarWriter::new(out);
    for e in &plan.entries {
        match &e.kind {
            EntryKind::Dir => tar.dir(&e.path, stamp)?,
            EntryKind::Symlink(target) => tar.symlink(&e.path, target, stamp)?,
            EntryKind::HardLink(target) => tar.hardlink(&e.path, target, stamp)?,
            EntryKind::Inline(bytes) => tar.file_bytes(&e.path, bytes, stamp)?,
            EntryKind::Blob { sha256, size } => {
                let mut f = open(sha256)?;
                tar.file(&e.path, *size, &mut f, stamp)?;
            }
        }
    }
    tar.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::RepoKind;
    use crate::test_support::fuzz::locked_repo;

    /// A locked repo with these (path, bytes) files.
    fn repo(kind: RepoKind, id: &str, files: &[(&str, &[u8])]) -> LockedRepo {
        let files: Vec<(&str, &[u8], bool)> = files.iter().map(|(p, b)| (*p, *b, false)).collect();
        locked_repo(kind, id, &"1".repeat(40), &files)
    }

    fn files_settings() -> BakeSettings {
        BakeSettings {
            layout: ImageLayout::Files,
            ..BakeSettings::default()
        }
    }

    const SAME: &[u8] = b"same bytes\n";

    /// A model with two files of identical content and a nested file.
    fn model() -> LockedRepo {
        repo(
            RepoKind::Model,
            "acme/tiny",
            &[
                ("config.json", b"{}\n"),
                ("copy/b.txt", SAME),
                ("a.txt", SAME),
                ("sub/dir/nested.txt", b"nested\n"),
            ],
        )
    }

    /// (path, type, mode, link target, content) of an entry of a tar.
    type Row = (String, u8, u32, Option<String>, Vec<u8>);

    /// Every entry of a tar.
    fn read_tar(bytes: &[u8]) -> Vec<Row> {
        let mut a = ::tar::Archive::new(bytes);
        a.entries()
            .unwrap()
            .map(|e| {
                let mut e = e.unwrap();
                let h = e.header().clone();
                let mut content = Vec::new();
                io::Read::read_to_end(&mut e, &mut content).unwrap();
                (
                    e.path().unwrap().to_string_lossy().into_owned(),
                    h.entry_type().as_byte(),
                    h.mode().unwrap(),
                    e.link_name()
                        .unwrap()
                        .map(|l| l.to_string_lossy().into_owned()),
                    content,
                )
            })
            .collect()
    }

    /// The tar of `plan` with blob bytes from `files`.
    fn tar_of(plan: &LayerPlan, files: &[(&str, &[u8])]) -> Vec<u8> {
        let stamp = Stamp {
            uid: 1010,
            gid: 1010,
            mtime: 0,
        };
        write_entries_from(plan, stamp, Vec::new(), &|sha256| {
            files
                .iter()
                .find(|(_, b)| sha256_hex(b) == sha256)
                .map(|(_, b)| io::Cursor::new(b.to_vec()))
                .ok_or_else(|| io::Error::other("no such blob"))
        })
        .unwrap()
    }

    #[test]
    fn the_files_layout_is_regular_files_with_parents_modes_and_hard_links_for_equal_content() {
        let plans = plan_files(&model(), &files_settings());
        assert_eq!(plans.len(), 1);
        let bytes = tar_of(
            &plans[0],
            &[
                ("config.json", b"{}\n"),
                ("a.txt", SAME),
                ("nested", b"nested\n"),
            ],
        );
        let entries = read_tar(&bytes);
        let paths: Vec<&str> = entries.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(
            paths,
            [
                "models/",
                "models/acme/",
                "models/acme/tiny/",
                "models/acme/tiny/a.txt",
                "models/acme/tiny/config.json",
                "models/acme/tiny/copy/",
                "models/acme/tiny/copy/b.txt",
                "models/acme/tiny/sub/",
                "models/acme/tiny/sub/dir/",
                "models/acme/tiny/sub/dir/nested.txt",
            ],
            "sorted, every parent directory first"
        );
        for (path, kind, mode, link, content) in &entries {
            assert_ne!(*kind, b'2', "{path}: no symlinks in the files layout");
            match *kind {
                b'5' => assert_eq!(*mode, 0o755, "{path}"),
                b'0' => assert_eq!(*mode, 0o644, "{path}"),
                b'1' => {
                    assert_eq!(*mode, 0o644, "{path}");
                    assert_eq!(path, "models/acme/tiny/copy/b.txt");
                    assert_eq!(
                        link.as_deref(),
                        Some("models/acme/tiny/a.txt"),
                        "a hard link to the first path with the same content"
                    );
                    assert!(content.is_empty());
                }
                other => panic!("{path}: unexpected entry type {other}"),
            }
        }
        let file = |p: &str| entries.iter().find(|e| e.0 == p).unwrap();
        assert_eq!(file("models/acme/tiny/a.txt").4, SAME);
        assert_eq!(file("models/acme/tiny/sub/dir/nested.txt").4, b"nested\n");
        let mut a = ::tar::Archive::new(&bytes[..]);
        for e in a.entries().unwrap() {
            let h = e.unwrap().header().clone();
            assert_eq!((h.uid().unwrap(), h.gid().unwrap()), (1010, 1010));
            assert_eq!(h.mtime().unwrap(), 0);
        }
    }

    #[test]
    fn files_layout_paths_for_datasets_spaces_ids_without_org_and_flat() {
        let s = files_settings();
        let data = repo(RepoKind::Dataset, "acme/data", &[("x", b"x")]);
        let space = repo(RepoKind::Space, "acme/demo", &[("x", b"x")]);
        let legacy = repo(RepoKind::Model, "gpt2", &[("x", b"x")]);
        assert_eq!(files_root(&data, &s), "models/datasets/acme/data");
        assert_eq!(files_root(&space, &s), "models/spaces/acme/demo");
        assert_eq!(files_root(&legacy, &s), "models/gpt2");
        let flat = BakeSettings {
            flat: true,
            models_dir: "/mnt/m".into(),
            ..s.clone()
        };
        let plan = &plan_files(&model(), &flat)[0];
        assert!(plan.entries.iter().any(|e| e.path == "mnt/m/config.json"));
        assert!(plan.entries.iter().all(|e| !e.path.contains("acme")));

        let mut lock = Lockfile::new();
        lock.repos = vec![model(), data.clone()];
        assert!(check_layout(&lock, &s).is_ok());
        let e = check_layout(&lock, &flat).unwrap_err();
        assert!(e.contains("2 repos"), "{e}");
        let e = check_layout(
            &lock,
            &BakeSettings {
                flat: true,
                ..BakeSettings::default()
            },
        )
        .unwrap_err();
        assert!(e.contains("--layout files"), "{e}");
        // An org folder that would hold a repo without an org of the same name.
        lock.repos = vec![legacy, repo(RepoKind::Model, "gpt2/small", &[("x", b"x")])];
        let e = check_layout(&lock, &s).unwrap_err();
        assert!(e.contains("share the folder"), "{e}");
    }

    #[test]
    fn the_files_layout_splits_by_size_keeping_equal_content_in_one_layer() {
        let big = vec![1u8; 100];
        let r = repo(
            RepoKind::Model,
            "acme/big",
            &[
                ("a.bin", &big),
                ("b.bin", &big),
                ("c.bin", &[2u8; 100]),
                ("d.txt", b"d"),
            ],
        );
        let s = BakeSettings {
            max_layer_size: 150,
            ..files_settings()
        };
        let plans = plan_files(&r, &s);
        assert_eq!(plans.len(), 2, "{plans:#?}");
        let kinds = |p: &LayerPlan, name: &str| {
            p.entries
                .iter()
                .find(|e| e.path.ends_with(name))
                .map(|e| e.kind.clone())
        };
        assert!(matches!(
            kinds(&plans[0], "a.bin"),
            Some(EntryKind::Blob { .. })
        ));
        assert_eq!(
            kinds(&plans[0], "b.bin"),
            Some(EntryKind::HardLink("models/acme/big/a.bin".into())),
            "the link lives in the same layer as its target"
        );
        assert!(kinds(&plans[1], "c.bin").is_some() && kinds(&plans[1], "d.txt").is_some());
        assert_eq!((plans[0].part, plans[1].part), ((1, 2), (2, 2)));
    }

    #[test]
    fn the_layout_is_part_of_the_layer_cache_key() {
        let format = |layout| LayerFormat {
            stamp: Stamp {
                uid: 0,
                gid: 0,
                mtime: 0,
            },
            compression: Compression::None,
            layout,
        };
        let plan = &plan_files(&model(), &files_settings())[0];
        assert_ne!(
            cache_key(plan, format(ImageLayout::Files)),
            cache_key(plan, format(ImageLayout::HfCache))
        );
    }

    #[test]
    fn zstd_output_does_not_depend_on_the_number_of_workers() {
        let data: Vec<u8> = (0..3_000_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        let compress = |workers: u32| {
            let mut z = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
            z.include_checksum(true).unwrap();
            z.multithread(workers).unwrap();
            z.write_all(&data).unwrap();
            z.finish().unwrap()
        };
        let one = compress(1);
        assert_eq!(one, compress(2));
        assert_eq!(one, compress(7));
    }
}
