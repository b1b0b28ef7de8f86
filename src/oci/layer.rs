//! One deterministic layer per locked repo (several when a repo is larger than
//! `max_layer_size`): the repo's huggingface_hub cache subtree under `HF_HOME`, with every
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
use crate::manifest::{BakeSettings, Compression};
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

/// Splits a repo into layers: unique blobs packed greedily (in blob-name order) into parts of
/// at most `max_layer_size` bytes; the last part also holds refs, snapshot symlinks and trees.
pub fn plan_repo(repo: &LockedRepo, settings: &BakeSettings) -> Vec<LayerPlan> {
    let root = repo_root(repo, settings);
    let mut blobs: BTreeMap<&str, &LockedFile> = BTreeMap::new();
    for f in &repo.files {
        blobs.entry(f.blob.as_str()).or_insert(f);
    }
    let mut parts: Vec<Vec<&LockedFile>> = vec![Vec::new()];
    let mut used = 0u64;
    for f in blobs.values() {
        let last = parts.last().is_some_and(|p| !p.is_empty());
        if last && used + f.size > settings.max_layer_size {
            parts.push(Vec::new());
            used = 0;
        }
        if let Some(p) = parts.last_mut() {
            p.push(f);
        }
        used += f.size;
    }
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
            // Every parent directory, up to the image root.
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

/// The cache key: sha256 of everything that decides the layer's bytes.
pub fn cache_key(plan: &LayerPlan, format: LayerFormat) -> String {
    let mut h = Sha256::new();
    h.update(
        format!(
            "modelbake-layer-v1\n{:?}\n{:?}\n",
            format.compression, format.stamp
        )
        .as_bytes(),
    );
    for e in &plan.entries {
        let kind = match &e.kind {
            EntryKind::Dir => "dir".to_owned(),
            EntryKind::Blob { sha256, size } => format!("blob {sha256} {size}"),
            EntryKind::Inline(bytes) => format!("inline {}", sha256_hex(bytes)),
            EntryKind::Symlink(t) => format!("link {t}"),
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
    let mut tar = TarWriter::new(out);
    for e in &plan.entries {
        match &e.kind {
            EntryKind::Dir => tar.dir(&e.path, stamp)?,
            EntryKind::Symlink(target) => tar.symlink(&e.path, target, stamp)?,
            EntryKind::Inline(bytes) => tar.file_bytes(&e.path, bytes, stamp)?,
            EntryKind::Blob { sha256, size } => {
                let path = store.blob_path(sha256);
                let mut f = File::open(&path).map_err(|err| {
                    io::Error::new(
                        err.kind(),
                        format!("{}: {err} (run `modelbake fetch` first)", path.display()),
                    )
                })?;
                tar.file(&e.path, *size, &mut f, stamp)?;
            }
        }
    }
    tar.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

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
