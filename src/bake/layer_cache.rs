//! The layer cache: built layers kept in the store (`layers/blobs/sha256/…` and a record
//! `layers/<key>.json` per layer) under a key derived from everything that decides their bytes,
//! so a rebake of an unchanged lock reuses them; and its own collection for `store gc`.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::layer_build::write_layer;
use super::plan::{EntryKind, LayerFormat, LayerPlan};
use crate::hash::sha256_hex;
use crate::lock::Lockfile;
use crate::manifest::bake_table::ModelArrangement;
use crate::oci::digest::Digest;
use crate::store::{Store, StoreError};

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
    if format.layout == ModelArrangement::Files {
        h.update(b"layout files\n");
    }
    for e in plan.entries() {
        let kind = match &e.kind {
            EntryKind::Dir => "dir".to_owned(),
            EntryKind::Blob { sha256, size } => format!("blob {sha256} {size}"),
            EntryKind::Inline(bytes) => format!("inline {}", sha256_hex(bytes)),
            // Keyed as the inline file it was before it was produced while written.
            EntryKind::Trees => format!("inline {}", plan.trees_summary().1),
            EntryKind::Symlink(t) => format!("link {t}"),
            EntryKind::HardLink(t) => format!("hardlink {t}"),
        };
        h.update(format!("{}\0{kind}\n", e.path).as_bytes());
    }
    hex::encode(h.finalize())
}

/// True for a layer known only by its cache repository record (no file here).
pub fn is_remote(layer: &BuiltLayer) -> bool {
    layer.path.as_os_str().is_empty()
}

/// The layer for `plan` when the store's layer cache already holds it (record and blob).
pub fn cached(store: &Store, plan: &LayerPlan, format: LayerFormat) -> Option<BuiltLayer> {
    let key = cache_key(plan, format);
    let meta_path = store.paths().layers().join(format!("{key}.json"));
    let mut layer = read_record(&meta_path, &store.paths().layer_blobs())?;
    if fs::symlink_metadata(&layer.path).is_ok_and(|m| m.is_file() && m.len() == layer.size) {
        layer.reused = true;
        return Some(layer);
    }
    None
}

/// A temp file for the layer of `key` being built or downloaded, to be [`adopt`]ed: in the
/// store's `tmp/` (the same file system as the layer cache, so adopting it is a rename), so
/// that a killed bake leaves its half-built layer there and nothing half-done in `layers/`.
pub fn temp_path(store: &Store, key: &str) -> io::Result<PathBuf> {
    fs::create_dir_all(store.paths().layer_blobs())?;
    fs::create_dir_all(store.paths().tmp())?;
    Ok(store.paths().tmp().join(format!(
        "layer-{key}.{}-{:08x}.tmp",
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
    let path = store.paths().layer_blobs().join(layer.digest.hex());
    // Read-only: the layer is hard-linked into --layers and --oci outputs, and an edit there
    // must not silently change the cached layer.
    let placed = fs::set_permissions(tmp, std::os::unix::fs::PermissionsExt::from_mode(0o444))
        .and_then(|()| fs::rename(tmp, &path));
    if let Err(e) = placed {
        let _ = fs::remove_file(tmp);
        return Err(e);
    }
    layer.path = path;
    let meta_path = store.paths().layers().join(format!("{key}.json"));
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
    let dir = store.paths().layers();
    let blobs = store.paths().layer_blobs();
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
    // The record goes before its blob: a kill between the two leaves a blob no record names
    // (rebuilt over by the next bake of that layer), never a record naming a missing blob.
    for (record, layer) in drop {
        if apply {
            fs::remove_file(&record)?;
        }
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
    }
    Ok(report)
}

/// `store gc` as a whole: with `apply`, the store held alone first (waiting up to `wait` for
/// the commands that have it open), then the store's blobs and partial downloads
/// ([`crate::store::gc::gc`]), then this layer cache's records and blobs.
pub fn collect_store(
    store: &Store,
    keep: &[Lockfile],
    apply: bool,
    wait: std::time::Duration,
) -> Result<crate::store::gc::GcReport, StoreError> {
    if apply {
        store.use_alone(wait)?;
    }
    let mut report = crate::store::gc::gc(store, keep, apply)?;
    let layers = collect_cache(store, keep, apply).map_err(|source| StoreError::Io {
        what: "collecting the layer cache of",
        path: store.root().to_owned(),
        source,
    })?;
    report.freed += layers.freed;
    report.layers = layers.blobs;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::bake_table::BakeSettings;
    use crate::oci::Compression;
    use crate::oci::tar::Stamp;
    use crate::repo::RepoKind;
    use crate::test_support::fuzz::locked_repo;

    fn model() -> crate::lock::LockedRepo {
        locked_repo(
            RepoKind::Model,
            "acme/tiny",
            &"1".repeat(40),
            &[
                ("config.json", b"{}\n", false),
                ("a.txt", b"same bytes\n", false),
            ],
        )
    }

    fn files_settings() -> BakeSettings {
        BakeSettings {
            layout: ModelArrangement::Files,
            ..BakeSettings::default()
        }
    }

    /// A lock whose plans have every kind of entry: two parts, LFS and regular files, equal
    /// content under two paths, nested folders, a tag revision (a `refs/` file), a trees
    /// listing; and a dataset.
    fn golden_lock() -> (Lockfile, std::collections::HashMap<String, Vec<u8>>) {
        let big = [7u8; 300];
        let model_files: &[(&str, &[u8], bool)] = &[
            ("config.json", b"{}\n", false),
            ("a.txt", b"same bytes\n", false),
            ("copy/b.txt", b"same bytes\n", false),
            ("model-00001.safetensors", &big, true),
            ("model-00002.safetensors", &[8u8; 300], true),
            ("sub/dir/vocab.txt", b"a\nb\n", false),
            ("sub-x.txt", b"dash sorts before slash\n", false),
        ];
        let data_files: &[(&str, &[u8], bool)] = &[
            ("data/part-000/row-0.json", b"{\"a\":0}", false),
            ("data/part-000/row-1.json", b"{\"a\":1}", false),
            ("data/part-001/row-0.json", b"{\"a\":0}", false),
            ("README.md", b"# rows\n", false),
        ];
        let mut model = locked_repo(RepoKind::Model, "acme/tiny", &"1".repeat(40), model_files);
        model.revision = crate::repo::Revision::parse("v1.0").unwrap();
        let data = locked_repo(RepoKind::Dataset, "acme/rows", &"2".repeat(40), data_files);
        let mut lock = Lockfile::new();
        lock.repos = vec![model, data];
        let contents = model_files
            .iter()
            .chain(data_files)
            .map(|(_, bytes, _)| (sha256_hex(bytes), bytes.to_vec()))
            .collect();
        (lock, contents)
    }

    /// The cache keys, file-list digests and layer digests (plain, gzip, zstd) of today's
    /// plans, pinned: a change of a layer's bytes makes every user download their models again; a change of a key or a file list makes every
    /// layer cache and cache repository record miss (a rebuild and re-upload of every layer).
    #[test]
    fn golden_cache_keys_and_file_lists() {
        use super::super::layer_build::write_layer_into;
        let format = |compression, layout| LayerFormat {
            stamp: Stamp {
                uid: 1000,
                gid: 1000,
                mtime: 0,
            },
            compression,
            layout,
        };
        let (lock, contents) = golden_lock();
        let mut lines = Vec::new();
        for layout in [ModelArrangement::HfCache, ModelArrangement::Files] {
            let settings = BakeSettings {
                layout,
                max_layer_size: 400,
                ..BakeSettings::default()
            };
            for repo in &lock.repos {
                for plan in super::super::plan::plan_one(repo.clone(), &settings) {
                    let open = |sha256: &str| Ok(std::io::Cursor::new(contents[sha256].clone()));
                    let (tar, ..) = write_layer_into(
                        &plan,
                        format(Compression::None, layout),
                        Vec::new(),
                        &open,
                    )
                    .unwrap();
                    let compressed: Vec<String> = [Compression::Gzip, Compression::Zstd]
                        .into_iter()
                        .map(|c| {
                            write_layer_into(&plan, format(c, layout), std::io::sink(), &open)
                                .unwrap()
                                .1
                        })
                        .collect();
                    lines.push(format!(
                        "{layout:?} {} {}/{} {} {} {tar} {}",
                        plan.repo,
                        plan.part.0,
                        plan.part.1,
                        cache_key(&plan, format(Compression::Gzip, layout)),
                        crate::bake::cache_repo::record::files_digest(&plan),
                        compressed.join(" ")
                    ));
                }
            }
        }
        let text = lines.join("\n");
        assert_eq!(lines.len(), 6, "{text}");
        assert_eq!(
            sha256_hex(text.as_bytes()),
            "9254fc362c79894b29e9045c02f87037c0eef80ecab905d56fe860b605bd0c48",
            "{text}"
        );
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
        let plan = &super::super::plan::plan_one(model(), &files_settings())[0];
        assert_ne!(
            cache_key(plan, format(ModelArrangement::Files)),
            cache_key(plan, format(ModelArrangement::HfCache))
        );
    }
}
