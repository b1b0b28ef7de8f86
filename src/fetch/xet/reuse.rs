//! Chunk reuse across revisions: finds, in the store's chunk index, blobs that already hold
//! every chunk of a reconstruction term, so the term's bytes are copied from disk instead of
//! downloaded. Lookups are cached for the whole fetch; nothing here is trusted beyond a
//! hint — the file being built is still checked against its sha256 before it is published.

use std::collections::HashMap;
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Mutex};

use super::protocol::Term;
use crate::store::Store;
use crate::store::chunk_index::ChunkMap;

/// Where one chunk's bytes are in the store.
#[derive(Debug, Clone)]
struct ChunkAt {
    blob: Arc<str>,
    offset: u64,
    len: u32,
}

/// Chunks of a term laid end to end in one local blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Span {
    /// The blob's sha256.
    pub blob: Arc<str>,
    /// Offset of the first chunk.
    pub offset: u64,
    /// Length of each chunk.
    pub lens: Vec<u32>,
}

impl Span {
    /// Total bytes.
    pub fn len(&self) -> u64 {
        self.lens.iter().map(|&l| u64::from(l)).sum()
    }
}

/// The store's known chunks, looked up per xorb and cached for one fetch.
#[derive(Debug)]
pub struct LocalChunks {
    store: Store,
    maps: Mutex<HashMap<String, Option<Arc<ChunkMap>>>>,
    xorbs: Mutex<HashMap<String, Arc<HashMap<u32, ChunkAt>>>>,
}

impl LocalChunks {
    /// Lookups in `store`'s index.
    pub fn new(store: Store) -> Self {
        LocalChunks {
            store,
            maps: Mutex::default(),
            xorbs: Mutex::default(),
        }
    }

    /// The spans that hold every chunk of `term`, in order, when the store has all of them
    /// and their lengths add up to the term's; `None` when any is missing.
    pub fn plan(&self, term: &Term) -> Option<Vec<Span>> {
        let chunks = self.xorb(&term.hash);
        let mut spans: Vec<Span> = Vec::new();
        for index in term.range.start..term.range.end {
            let at = chunks.get(&index)?;
            match spans.last_mut() {
                Some(s) if s.blob == at.blob && s.offset + s.len() == at.offset => {
                    s.lens.push(at.len)
                }
                _ => spans.push(Span {
                    blob: at.blob.clone(),
                    offset: at.offset,
                    lens: vec![at.len],
                }),
            }
        }
        let total: u64 = spans.iter().map(Span::len).sum();
        (!spans.is_empty() && total == term.unpacked_length).then_some(spans)
    }

    /// Every known chunk of `xorb`, from the maps of the blobs listed as its holders (the
    /// first holder of a chunk wins).
    fn xorb(&self, xorb: &str) -> Arc<HashMap<u32, ChunkAt>> {
        if let Some(known) = self.xorbs.lock().ok().and_then(|m| m.get(xorb).cloned()) {
            return known;
        }
        let mut chunks: HashMap<u32, ChunkAt> = HashMap::new();
        for holder in self.store.xorb_holders(xorb) {
            let Some(map) = self.map(&holder) else {
                continue;
            };
            let blob: Arc<str> = Arc::from(holder.as_str());
            for seg in map.segments.iter().filter(|s| s.xorb == xorb) {
                let mut offset = seg.offset;
                for (i, &len) in seg.lens.iter().enumerate() {
                    chunks.entry(seg.first + i as u32).or_insert(ChunkAt {
                        blob: blob.clone(),
                        offset,
                        len,
                    });
                    offset += u64::from(len);
                }
            }
        }
        let chunks = Arc::new(chunks);
        if let Ok(mut m) = self.xorbs.lock() {
            m.insert(xorb.to_owned(), chunks.clone());
        }
        chunks
    }

    /// The chunk map of one blob, read once.
    fn map(&self, sha256: &str) -> Option<Arc<ChunkMap>> {
        if let Some(known) = self.maps.lock().ok().and_then(|m| m.get(sha256).cloned()) {
            return known;
        }
        let map = self.store.chunk_map(sha256).map(Arc::new);
        if let Ok(mut m) = self.maps.lock() {
            m.insert(sha256.to_owned(), map.clone());
        }
        map
    }

    /// Drops the cached lookups of the xorbs `map` uses: the store just learned new chunks
    /// of them (a blob was published or indexed).
    pub fn forget(&self, map: &ChunkMap) {
        if let Ok(mut xorbs) = self.xorbs.lock() {
            for seg in &map.segments {
                xorbs.remove(&seg.xorb);
            }
        }
    }

    /// Reads `len` bytes at `offset` of the blob `sha256` into `buf`.
    /// `buf` is handed back filled (its allocation is reused from read to read).
    pub async fn read(
        &self,
        sha256: &str,
        offset: u64,
        len: usize,
        mut buf: Vec<u8>,
    ) -> std::io::Result<Vec<u8>> {
        let path = self.store.blob_path(sha256);
        tokio::task::spawn_blocking(move || {
            let file = std::fs::File::open(&path)?;
            buf.resize(len, 0);
            file.read_exact_at(&mut buf, offset)?;
            Ok(buf)
        })
        .await
        .map_err(std::io::Error::other)?
    }
}

#[cfg(test)]
mod tests {
    use super::super::protocol::ChunkRange;
    use super::*;

    fn publish(store: &Store, content: &[u8]) -> String {
        let sha = crate::hash::sha256_hex(content);
        let claim = store.claim(&sha).unwrap();
        let mut p = store.begin(&sha, content.len() as u64, &claim).unwrap();
        p.append(content).unwrap();
        p.publish().unwrap();
        sha
    }

    #[test]
    fn a_term_is_planned_only_when_every_chunk_is_known() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let x = "a".repeat(64);
        let sha = publish(&store, &[7u8; 100]);
        let mut m = ChunkMap::new(100);
        m.push(&x, 0, 0, 30);
        m.push(&x, 1, 30, 30);
        m.push(&x, 5, 60, 40);
        store.record_chunks(&sha, &m).unwrap();
        let local = LocalChunks::new(store);
        let term = |start, end, len| Term {
            hash: x.clone(),
            unpacked_length: len,
            range: ChunkRange { start, end },
        };
        let spans = local.plan(&term(0, 2, 60)).unwrap();
        assert_eq!(spans.len(), 1);
        assert_eq!((spans[0].offset, spans[0].lens.clone()), (0, vec![30, 30]));
        assert_eq!(local.plan(&term(1, 3, 70)), None, "chunk 2 is unknown");
        assert_eq!(local.plan(&term(0, 2, 61)), None, "lengths disagree");
        let spans = local.plan(&term(5, 6, 40)).unwrap();
        assert_eq!(spans[0].offset, 60);
    }
}
