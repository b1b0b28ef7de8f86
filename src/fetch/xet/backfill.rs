//! Index on demand: before a Xet file is downloaded, the blobs the same repo file was at
//! earlier commits (as `fetch` recorded them, `Store::origins`) that have no chunk map yet —
//! they came over plain HTTP, or before this release — are indexed: their reconstruction is
//! asked for once, the blob is cut locally with Xet's chunking, and the two must agree (as
//! many chunks as the terms name, each term's bytes adding up) before the map is written.
//! Everything here is best effort: a failure only means nothing is reused.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use tokio::sync::Mutex;

use super::cdc;
use super::protocol::{self, Reconstruction};
use crate::hub::HubClient;
use crate::repo::RepoKey;
use crate::store::Store;
use crate::store::chunk_index::ChunkMap;

/// Files smaller than this are not worth indexing (and are recorded nowhere).
pub const MIN_INDEXED_SIZE: u64 = 1 << 20;
/// Earlier blobs of one file tried per fetch.
const CANDIDATES: usize = 2;

/// Path → (sha256, Xet hash) of the Xet files of a repo at one commit.
type Listing = Arc<HashMap<String, (String, String)>>;

/// What a fetch remembers between files: the Xet hashes of earlier commits' files, and the
/// blobs already tried.
#[derive(Debug, Default)]
pub struct Backfill {
    /// `(repo, commit)` → path → (sha256, Xet hash).
    listings: Mutex<HashMap<(RepoKey, String), Listing>>,
    tried: Mutex<HashSet<String>>,
}

impl Backfill {
    /// Indexes the earlier blobs of `path` in `repo` (other than `current`); returns the
    /// maps written, so the caller can forget stale lookups.
    pub async fn earlier_blobs(
        &self,
        store: &Store,
        client: &HubClient,
        tokens: &protocol::Tokens,
        repo: &RepoKey,
        path: &str,
        current: &str,
    ) -> Vec<ChunkMap> {
        let mut written = Vec::new();
        let candidates = store.origins(&repo.qualified(), path);
        for origin in candidates
            .into_iter()
            .filter(|o| o.sha256 != current)
            .take(CANDIDATES)
        {
            if !self.tried.lock().await.insert(origin.sha256.clone()) {
                continue;
            }
            let Ok(size) = std::fs::metadata(store.blob_path(&origin.sha256)).map(|m| m.len())
            else {
                continue;
            };
            if store.chunk_map(&origin.sha256).is_some() {
                continue;
            }
            let blob = Earlier {
                repo,
                path,
                sha256: &origin.sha256,
                commit: &origin.commit,
                size,
            };
            match self.index(store, client, tokens, &blob).await {
                Ok(map) => {
                    tracing::info!(
                        "{repo} file `{path}`: indexed the chunks of its blob at {}",
                        crate::ui::short(&origin.commit)
                    );
                    written.push(map);
                }
                Err(why) => tracing::debug!(
                    "{repo} file `{path}` at {}: not indexed: {why}",
                    crate::ui::short(&origin.commit)
                ),
            }
        }
        written
    }

    /// Indexes one blob: its Xet hash at its commit, its reconstruction, its local chunking.
    async fn index(
        &self,
        store: &Store,
        client: &HubClient,
        tokens: &protocol::Tokens,
        blob: &Earlier<'_>,
    ) -> Result<ChunkMap, String> {
        let Earlier {
            repo,
            path,
            sha256,
            commit,
            size,
        } = *blob;
        let listing = self.listing(client, repo, commit).await?;
        let Some((sha, hash)) = listing.get(path) else {
            return Err("the file is not stored in Xet at that commit".into());
        };
        if sha != sha256 {
            return Err("the Hub lists another blob at that commit".into());
        }
        let token = tokens
            .get(client, repo, commit, None)
            .await
            .map_err(|e| e.to_string())?;
        let recon = protocol::reconstruction(client, &token, repo, commit, hash, 0, size)
            .await
            .map_err(|e| e.to_string())?;
        let blob = store.blob_path(sha256);
        let lens = tokio::task::spawn_blocking(move || {
            std::fs::File::open(&blob).and_then(cdc::chunk_lengths)
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("reading the blob: {e}"))?;
        let map = zip(&recon, &lens, size)?;
        store
            .record_chunks(sha256, &map)
            .map_err(|e| e.to_string())?;
        Ok(map)
    }

    /// Path → (sha256, Xet hash) of the Xet files of `repo` at `commit`, listed once.
    async fn listing(
        &self,
        client: &HubClient,
        repo: &RepoKey,
        commit: &str,
    ) -> Result<Listing, String> {
        let key = (repo.clone(), commit.to_owned());
        let mut listings = self.listings.lock().await;
        if let Some(known) = listings.get(&key) {
            return Ok(known.clone());
        }
        let entries = client
            .list_tree(repo.kind, &repo.id, commit)
            .await
            .map_err(|e| e.to_string())?;
        let map: HashMap<String, (String, String)> = entries
            .into_iter()
            .filter_map(|e| {
                let sha = e.lfs.as_ref()?.oid.clone();
                Some((e.path, (sha, e.xet_hash?)))
            })
            .collect();
        let map = Arc::new(map);
        listings.insert(key, map.clone());
        Ok(map)
    }
}

/// A blob a repo file was at an earlier commit.
#[derive(Clone, Copy)]
struct Earlier<'a> {
    repo: &'a RepoKey,
    path: &'a str,
    sha256: &'a str,
    commit: &'a str,
    size: u64,
}

/// Pairs a blob's local chunks with its reconstruction's terms: the counts and every term's
/// bytes must agree, or the blob was not cut the way the uploader cut it.
fn zip(recon: &Reconstruction, lens: &[u32], size: u64) -> Result<ChunkMap, String> {
    if recon.offset_into_first_range != 0 {
        return Err("the reconstruction does not start at the file's first byte".into());
    }
    let named: u64 = recon
        .terms
        .iter()
        .map(|t| u64::from(t.range.end.saturating_sub(t.range.start)))
        .sum();
    if named != lens.len() as u64 {
        return Err(format!(
            "the reconstruction names {named} chunks, the local chunking found {}",
            lens.len()
        ));
    }
    let mut map = ChunkMap::new(size);
    let mut offset = 0u64;
    let mut next = lens.iter();
    for term in &recon.terms {
        let mut bytes = 0u64;
        for index in term.range.start..term.range.end {
            let len = *next.next().ok_or("the local chunking ended early")?;
            map.push(&term.hash, index, offset, len);
            offset += u64::from(len);
            bytes += u64::from(len);
        }
        if bytes != term.unpacked_length {
            return Err(format!(
                "a term of xorb {} holds {} bytes, the local chunks {bytes}",
                term.hash, term.unpacked_length
            ));
        }
    }
    if offset != size {
        return Err(format!("the chunks cover {offset} of {size} bytes"));
    }
    Ok(map)
}

#[cfg(test)]
mod tests {
    use super::super::protocol::{ChunkRange, Term};
    use super::*;

    fn recon(terms: &[(char, u32, u32, u64)]) -> Reconstruction {
        Reconstruction {
            offset_into_first_range: 0,
            terms: terms
                .iter()
                .map(|&(c, start, end, len)| Term {
                    hash: c.to_string().repeat(64),
                    unpacked_length: len,
                    range: ChunkRange { start, end },
                })
                .collect(),
            xorbs: HashMap::new(),
        }
    }

    #[test]
    fn chunks_pair_with_terms_only_when_counts_and_lengths_agree() {
        let lens = [10, 20, 30, 40];
        let map = zip(&recon(&[('a', 5, 7, 30), ('b', 0, 2, 70)]), &lens, 100).unwrap();
        assert_eq!(map.segments.len(), 2);
        assert_eq!((map.segments[1].first, map.segments[1].offset), (0, 30));
        assert!(
            zip(&recon(&[('a', 0, 3, 60)]), &lens, 100).is_err(),
            "count"
        );
        assert!(
            zip(&recon(&[('a', 0, 2, 30), ('b', 0, 2, 71)]), &lens, 100).is_err(),
            "a term's length"
        );
    }
}
