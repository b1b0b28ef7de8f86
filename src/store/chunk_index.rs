//! The optional Xet chunk index (docs/hub-protocol.md §8.5). A Xet file is a sequence of
//! chunks, each named by its xorb and its index there, and `(xorb hash, chunk index)` names
//! immutable bytes (a xorb's hash covers all its chunks). For every blob that came through Xet
//! the store remembers which chunks it is made of and at which offsets, so that a later file
//! sharing chunks with it (a new revision of a fine-tune, the same tensors in another repo)
//! copies those bytes from the local blob instead of downloading them.
//!
//! The index is a cache, never a source of truth: the blob being built is still checked
//! against its sha256 before it is published, a map is written only after its blob was
//! published, and a missing, unreadable or stale entry only means the bytes are downloaded.
//! Stores without `xet/` work unchanged.

use std::collections::BTreeSet;
use std::fs;
use std::io::{Read, Write};

use serde::{Deserialize, Serialize};

use super::{Store, StoreError, io_err};
use crate::hash::is_lower_hex;

/// The chunk-map format written by this release.
pub const CHUNK_MAP_VERSION: u32 = 1;
/// Largest chunk map read (a chunk is ~6 bytes of JSON and ~64 KiB of file: this covers
/// files of several hundred GB).
const CHUNK_MAP_LIMIT: u64 = 64 << 20;
/// Largest list of a xorb's holders read.
const HOLDERS_LIMIT: u64 = 1 << 20;

/// Consecutive chunks of one xorb, laid end to end in a blob.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Segment {
    /// The xorb's hash (64 lowercase hex).
    pub xorb: String,
    /// Index of the first chunk in the xorb.
    pub first: u32,
    /// Byte offset of the first chunk in the blob.
    pub offset: u64,
    /// Decoded length of each chunk, in order.
    pub lens: Vec<u32>,
}

/// Which xorb chunks a blob is made of, and where.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkMap {
    /// Format version ([`CHUNK_MAP_VERSION`]).
    pub version: u32,
    /// Size of the blob the map describes.
    pub size: u64,
    /// The chunks, in file order; parts of the file may be missing (a resumed download
    /// records only what it decoded).
    pub segments: Vec<Segment>,
}

impl ChunkMap {
    /// An empty map of a blob of `size` bytes.
    pub fn new(size: u64) -> Self {
        ChunkMap {
            version: CHUNK_MAP_VERSION,
            size,
            segments: Vec::new(),
        }
    }

    /// Records that chunk `index` of `xorb` sits at `offset` with `len` bytes. Chunks must
    /// come in file order; one that does not start at or after the end of the last one
    /// recorded is ignored (a reconstruction asked again repeats a few).
    pub fn push(&mut self, xorb: &str, index: u32, offset: u64, len: u32) {
        if offset < self.end() || offset + u64::from(len) > self.size || !is_lower_hex(xorb, 64) {
            return;
        }
        if let Some(last) = self.segments.last_mut()
            && last.xorb == xorb
            && last.first + last.lens.len() as u32 == index
            && last.offset + last.lens.iter().map(|&l| u64::from(l)).sum::<u64>() == offset
        {
            last.lens.push(len);
            return;
        }
        self.segments.push(Segment {
            xorb: xorb.to_owned(),
            first: index,
            offset,
            lens: vec![len],
        });
    }

    /// Offset just past the last chunk recorded.
    fn end(&self) -> u64 {
        self.segments.last().map_or(0, |s| {
            s.offset + s.lens.iter().map(|&l| u64::from(l)).sum::<u64>()
        })
    }

    /// Whether no chunk is recorded.
    pub fn is_empty(&self) -> bool {
        self.segments.is_empty()
    }

    /// Bytes of the blob the map accounts for.
    #[cfg(test)]
    fn covered(&self) -> u64 {
        self.segments
            .iter()
            .flat_map(|s| &s.lens)
            .map(|&l| u64::from(l))
            .sum()
    }

    /// Whether the map is one this release can use for a blob of `size` bytes: the right
    /// version and size, valid xorb names, segments in order and inside the blob.
    fn is_sound(&self, size: u64) -> bool {
        let mut end = 0u64;
        self.version == CHUNK_MAP_VERSION
            && self.size == size
            && self.segments.iter().all(|s| {
                let len: u64 = s.lens.iter().map(|&l| u64::from(l)).sum();
                let ok = is_lower_hex(&s.xorb, 64)
                    && s.offset >= end
                    && s.offset.checked_add(len).is_some_and(|e| e <= size)
                    && u32::try_from(s.lens.len())
                        .ok()
                        .and_then(|n| s.first.checked_add(n))
                        .is_some();
                end = s.offset.saturating_add(len);
                ok
            })
    }
}

impl Store {
    /// Remembers the chunks of the published blob `sha256`: writes its map (atomically) and
    /// adds the blob to the holders of each xorb it uses. Nothing is written for an empty map.
    pub fn record_chunks(&self, sha256: &str, map: &ChunkMap) -> Result<(), StoreError> {
        if map.is_empty() || !is_lower_hex(sha256, 64) {
            return Ok(());
        }
        let path = self.paths().chunk_map(sha256);
        let dir = path
            .parent()
            .map(std::path::Path::to_path_buf)
            .unwrap_or_default();
        fs::create_dir_all(&dir).map_err(io_err("creating", &dir))?;
        let json = serde_json::to_vec(map).map_err(|e| StoreError::Io {
            what: "encoding the chunk map for",
            path: path.clone(),
            source: std::io::Error::other(e),
        })?;
        let tmp = dir.join(format!(
            ".{sha256}.{}-{:016x}.tmp",
            std::process::id(),
            fastrand::u64(..)
        ));
        fs::write(&tmp, &json).map_err(io_err("writing", &tmp))?;
        fs::rename(&tmp, &path).map_err(io_err("writing", &path))?;
        let xorbs: BTreeSet<&str> = map.segments.iter().map(|s| s.xorb.as_str()).collect();
        for xorb in xorbs {
            let holders = self.paths().xorb_holders(xorb);
            if self.xorb_holders(xorb).iter().any(|h| h == sha256) {
                continue;
            }
            if let Some(dir) = holders.parent() {
                fs::create_dir_all(dir).map_err(io_err("creating", dir))?;
            }
            // One short O_APPEND write per line: concurrent writers never interleave within it.
            fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&holders)
                .and_then(|mut f| f.write_all(format!("{sha256}\n").as_bytes()))
                .map_err(io_err("writing", &holders))?;
        }
        Ok(())
    }

    /// The chunk map of the blob `sha256`, if the store has the blob (with the map's size)
    /// and a sound map of it; `None` otherwise (nothing to reuse, never an error).
    pub fn chunk_map(&self, sha256: &str) -> Option<ChunkMap> {
        if !is_lower_hex(sha256, 64) {
            return None;
        }
        let bytes = read_capped(&self.paths().chunk_map(sha256), CHUNK_MAP_LIMIT)?;
        let map: ChunkMap = serde_json::from_slice(&bytes).ok()?;
        (self.has(sha256, map.size) && map.is_sound(map.size)).then_some(map)
    }

    /// The blobs recorded as holding chunks of `xorb` (some may be gone since).
    pub fn xorb_holders(&self, xorb: &str) -> Vec<String> {
        if !is_lower_hex(xorb, 64) {
            return Vec::new();
        }
        let Some(bytes) = read_capped(&self.paths().xorb_holders(xorb), HOLDERS_LIMIT) else {
            return Vec::new();
        };
        let mut seen = BTreeSet::new();
        String::from_utf8_lossy(&bytes)
            .lines()
            .filter(|l| is_lower_hex(l, 64) && seen.insert(l.to_string()))
            .map(str::to_owned)
            .collect()
    }

    /// Forgets the chunk map of `sha256` (its blob was removed); the holders lists are left
    /// as they are, a gone blob in them is skipped.
    pub fn forget_chunks(&self, sha256: &str) {
        if is_lower_hex(sha256, 64) {
            let _ = fs::remove_file(self.paths().chunk_map(sha256));
        }
    }
}

/// A blob a repo file was at one commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// The blob's sha256.
    pub sha256: String,
    /// The commit.
    pub commit: String,
}

/// The key of a repo file in `xet/paths/`: the sha256 of `kind/id/path`.
fn origin_key(repo: &str, path: &str) -> String {
    crate::hash::sha256_hex(format!("{repo}/{path}").as_bytes())
}

impl Store {
    /// Remembers that the file `path` of `repo` (`kind/id`) was the blob `sha256` at
    /// `commit`, so that a later revision's Xet download can find it and index its chunks
    /// (blobs that came over plain HTTP have no chunk map). Written once per blob.
    pub fn record_origin(
        &self,
        repo: &str,
        path: &str,
        sha256: &str,
        commit: &str,
    ) -> Result<(), StoreError> {
        if !is_lower_hex(sha256, 64) || !commit.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Ok(());
        }
        if self.origins(repo, path).iter().any(|o| o.sha256 == sha256) {
            return Ok(());
        }
        let file = self.paths().file_origins(&origin_key(repo, path));
        if let Some(dir) = file.parent() {
            fs::create_dir_all(dir).map_err(io_err("creating", dir))?;
        }
        fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&file)
            .and_then(|mut f| f.write_all(format!("{sha256} {commit}\n").as_bytes()))
            .map_err(io_err("writing", &file))
    }

    /// The blobs the file `path` of `repo` has been, newest first.
    pub fn origins(&self, repo: &str, path: &str) -> Vec<Origin> {
        let file = self.paths().file_origins(&origin_key(repo, path));
        let Some(bytes) = read_capped(&file, HOLDERS_LIMIT) else {
            return Vec::new();
        };
        let mut out: Vec<Origin> = String::from_utf8_lossy(&bytes)
            .lines()
            .filter_map(|l| {
                let (sha256, commit) = l.split_once(' ')?;
                (is_lower_hex(sha256, 64) && !commit.is_empty()).then(|| Origin {
                    sha256: sha256.to_owned(),
                    commit: commit.to_owned(),
                })
            })
            .collect();
        out.reverse();
        out
    }
}

/// The file's bytes if it is a regular file of at most `limit` bytes.
fn read_capped(path: &std::path::Path, limit: u64) -> Option<Vec<u8>> {
    let meta = fs::symlink_metadata(path).ok()?;
    if !meta.is_file() || meta.len() > limit {
        return None;
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    fs::File::open(path)
        .ok()?
        .take(limit)
        .read_to_end(&mut bytes)
        .ok()?;
    Some(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn xorb(c: char) -> String {
        c.to_string().repeat(64)
    }

    #[test]
    fn push_merges_consecutive_chunks_and_ignores_repeats() {
        let mut m = ChunkMap::new(1000);
        m.push(&xorb('a'), 3, 0, 100);
        m.push(&xorb('a'), 4, 100, 50);
        m.push(&xorb('a'), 4, 100, 50); // asked again after a refused token
        m.push(&xorb('b'), 0, 150, 10);
        m.push(&xorb('a'), 9, 160, 40); // same xorb, not the next chunk
        m.push("../etc", 0, 200, 1); // not a xorb name
        m.push(&xorb('c'), 0, 990, 20); // past the end
        assert_eq!(m.segments.len(), 3);
        assert_eq!(m.segments[0].lens, vec![100, 50]);
        assert_eq!((m.segments[1].first, m.segments[1].offset), (0, 150));
        assert_eq!((m.segments[2].first, m.segments[2].offset), (9, 160));
        assert_eq!(m.covered(), 200);
        assert!(m.is_sound(1000));
        assert!(!m.is_sound(999));
    }

    #[test]
    fn maps_round_trip_and_need_their_blob() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let content = b"0123456789";
        let sha = crate::hash::sha256_hex(content);
        let mut m = ChunkMap::new(10);
        m.push(&xorb('a'), 0, 0, 4);
        m.push(&xorb('b'), 2, 4, 6);
        store.record_chunks(&sha, &m).unwrap();
        store.record_chunks(&sha, &m).unwrap();
        assert_eq!(store.xorb_holders(&xorb('a')), vec![sha.clone()]);
        assert_eq!(store.xorb_holders(&xorb('b')), vec![sha.clone()]);
        // The blob is not in the store: the map is not offered.
        assert_eq!(store.chunk_map(&sha), None);
        let claim = store.claim(&sha).unwrap();
        let mut p = store.begin(&sha, 10, &claim).unwrap();
        p.append(content).unwrap();
        p.publish().unwrap();
        assert_eq!(store.chunk_map(&sha), Some(m));
        store.forget_chunks(&sha);
        assert_eq!(store.chunk_map(&sha), None);
    }

    #[test]
    fn origins_are_recorded_once_and_listed_newest_first() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (a, b) = ("a".repeat(64), "b".repeat(64));
        store
            .record_origin("model/acme/x", "w.bin", &a, "c1")
            .unwrap();
        store
            .record_origin("model/acme/x", "w.bin", &b, "c2")
            .unwrap();
        store
            .record_origin("model/acme/x", "w.bin", &a, "c1")
            .unwrap();
        store
            .record_origin("model/acme/x", "w.bin", "not-a-sha", "c3")
            .unwrap();
        let got: Vec<(String, String)> = store
            .origins("model/acme/x", "w.bin")
            .into_iter()
            .map(|o| (o.sha256, o.commit))
            .collect();
        assert_eq!(got, vec![(b, "c2".into()), (a, "c1".into())]);
        assert!(store.origins("model/acme/x", "other.bin").is_empty());
    }

    #[test]
    fn unsound_maps_are_not_offered() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let content = b"abcdef";
        let sha = crate::hash::sha256_hex(content);
        let claim = store.claim(&sha).unwrap();
        let mut p = store.begin(&sha, 6, &claim).unwrap();
        p.append(content).unwrap();
        p.publish().unwrap();
        let path = store.paths().chunk_map(&sha);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        let bad = format!(
            r#"{{"version":1,"size":6,"segments":[{{"xorb":"{}","first":0,"offset":4,"lens":[4]}}]}}"#,
            xorb('a')
        );
        fs::write(&path, bad).unwrap();
        assert_eq!(store.chunk_map(&sha), None, "a segment past the blob's end");
        fs::write(&path, "not json").unwrap();
        assert_eq!(store.chunk_map(&sha), None);
    }
}
