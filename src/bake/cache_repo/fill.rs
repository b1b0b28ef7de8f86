//! `fetch --cache`: fills the store from layers recorded in the cache repository. A recorded
//! layer is streamed from the registry and unpacked as it arrives (memory stays at a few
//! buffers whatever the layer's size); each file the store lacks goes through the store's
//! verified publish path, so a file is only visible once its sha256 matched the lock. A layer
//! that disagrees with the lock (an entry the plan does not have, a wrong size or sha256, a
//! blob whose digest does not match) stops being used and is reported as a warning; the files
//! it did not deliver are left to the Hub.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Read};
use std::sync::Arc;

use futures::StreamExt;
use serde::Serialize;

use super::{CacheRepo, Lookup};
use crate::bake::assemble::layer_descriptor;
use crate::bake::entry_index::EntryIndex;
use crate::bake::layer_cache::BuiltLayer;
use crate::bake::plan::{self as layer, EntryKind, LayerFormat, LayerPlan};
use crate::lock::Lockfile;
use crate::manifest::bake_table::BakeSettings;
use crate::oci::blob_reader::ChannelReader;
use crate::oci::source::VerifyingStream;
use crate::oci::{MEDIA_LAYER_GZIP, MEDIA_LAYER_ZSTD};
use crate::store::Store;

/// One store file the cache repository provided.
#[derive(Debug, Clone, Serialize)]
pub struct Served {
    /// `model/acme/tiny`.
    pub repo: String,
    /// A file of the repo with this content.
    pub path: String,
    /// Its sha256.
    pub sha256: String,
    /// Its size.
    pub size: u64,
    /// The layer it was unpacked from.
    pub layer: String,
}

/// What the cache repository did for a fetch.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FillReport {
    /// `registry/repo`.
    pub repository: String,
    /// Files published from recorded layers.
    pub served: Vec<Served>,
    /// Their bytes.
    pub bytes: u64,
    /// Layers whose records were used.
    pub layers: usize,
    /// Records ignored or unreadable, layers that disagreed with the lock.
    pub warnings: Vec<String>,
}

/// Fills `store` with the files of `lock` that recorded layers (for bake `settings` and
/// `format`) hold. Never fails: what could not come from the cache is left to the Hub, with
/// warnings saying why. `on_file` is told about each file published.
pub async fn fill(
    cache: &CacheRepo,
    lock: &Arc<Lockfile>,
    store: &Store,
    settings: &BakeSettings,
    format: LayerFormat,
    on_file: &(dyn Fn(&Served) + Sync),
) -> FillReport {
    let mut report = FillReport {
        repository: cache.name(),
        ..Default::default()
    };
    for (index, repo) in lock.repos.iter().enumerate() {
        let paths: BTreeMap<&str, &str> = repo
            .files
            .iter()
            .map(|f| (f.sha256.as_str(), f.path.as_str()))
            .collect();
        for plan in layer::plan_repo(lock, index, settings) {
            let wanted: BTreeSet<String> = plan
                .store_blobs()
                .filter(|(sha, size)| !store.has(sha, *size))
                .map(|(sha, _)| sha.to_owned())
                .collect();
            if wanted.is_empty() {
                continue;
            }
            let found = match cache.lookup(&plan, format).await {
                Lookup::Hit(found) => found,
                Lookup::Miss(None) => continue,
                Lookup::Rejected(w) => {
                    report.warnings.push(w);
                    continue;
                }
                Lookup::Miss(Some(w)) => {
                    // The registry could not be asked: the Hub takes everything left.
                    report
                        .warnings
                        .push(format!("{w}; the cache repository is not asked further"));
                    return report;
                }
            };
            report.layers += 1;
            let (published, problem) = unpack(cache, store, &plan, &found, wanted).await;
            for (sha256, size) in published {
                let served = Served {
                    repo: plan.repo.clone(),
                    path: paths
                        .get(sha256.as_str())
                        .copied()
                        .unwrap_or_default()
                        .to_owned(),
                    sha256,
                    size,
                    layer: found.digest.to_string(),
                };
                report.bytes += size;
                on_file(&served);
                report.served.push(served);
            }
            if let Some(p) = problem {
                report.warnings.push(format!(
                    "cache repository {}: layer {} of {} {}/{} is not used further: {p}; the files it did not deliver come from the Hub",
                    cache.name(),
                    found.digest,
                    plan.repo,
                    plan.part.0,
                    plan.part.1
                ));
            }
        }
    }
    report
}

/// Streams the recorded layer into a blocking unpacker; returns what was published and, when
/// the layer let us down, why.
async fn unpack(
    cache: &CacheRepo,
    store: &Store,
    plan: &LayerPlan,
    found: &BuiltLayer,
    wanted: BTreeSet<String>,
) -> (Vec<(String, u64)>, Option<String>) {
    let what = format!("layer {}", found.digest);
    let desc = layer_descriptor(found);
    // A cut body is resumed: the unpacker sees the layer's bytes once, in order.
    let raw = match cache
        .registry()
        .blob_body(cache.repo(), &found.digest, desc.size)
        .await
    {
        Ok(r) => r,
        Err(e) => return (Vec::new(), Some(e.to_string())),
    };
    let mut body = VerifyingStream::new(Box::pin(raw), desc, what);
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    let reader = ChannelReader::new(rx);
    let (store, plan, media) = (store.clone(), plan.clone(), found.media_type.clone());
    let worker = tokio::task::spawn_blocking(move || {
        let mut published = Vec::new();
        let problem = unpack_tar(reader, &media, &store, &plan, &wanted, &mut published).err();
        (published, problem.map(|e| e.to_string()))
    });
    while let Some(chunk) = body.next().await {
        let failed = chunk.is_err();
        if tx.send(chunk).await.is_err() || failed {
            break;
        }
    }
    drop(tx);
    worker
        .await
        .unwrap_or_else(|e| (Vec::new(), Some(format!("the unpacker stopped: {e}"))))
}

/// The layer's tar, decompressed as its media type says.
fn decompressed<R: Read + 'static>(media_type: &str, raw: R) -> io::Result<Box<dyn Read>> {
    Ok(match media_type {
        MEDIA_LAYER_GZIP => Box::new(flate2::read::MultiGzDecoder::new(raw)),
        MEDIA_LAYER_ZSTD => Box::new(zstd::stream::read::Decoder::new(raw)?),
        _ => Box::new(raw),
    })
}

/// Reads the layer's entries, publishing the wanted files; the first disagreement with the
/// plan ends the unpacking with an error (files already published were each verified).
fn unpack_tar(
    raw: impl Read + 'static,
    media_type: &str,
    store: &Store,
    plan: &LayerPlan,
    wanted: &BTreeSet<String>,
    published: &mut Vec<(String, u64)>,
) -> io::Result<()> {
    // Found by a key of the path, not a map of paths: a 100,000-file layer's would be large.
    let expected = EntryIndex::from_plans([plan.clone()]);
    let mut archive = tar::Archive::new(decompressed(media_type, raw)?);
    let mut buf = vec![0u8; 1 << 20];
    for entry in archive.entries()? {
        let mut entry = entry?;
        let raw_path = entry.path()?.to_string_lossy().into_owned();
        let path = raw_path
            .trim_start_matches("./")
            .trim_end_matches('/')
            .to_owned();
        let Some(kind) = expected.find(&path).map(|i| expected.kind(i)) else {
            return Err(io::Error::other(format!(
                "it holds `{path}`, which the lock does not"
            )));
        };
        let EntryKind::Blob { sha256, size } = &kind else {
            continue;
        };
        if !entry.header().entry_type().is_file() || entry.size() != *size {
            return Err(io::Error::other(format!(
                "`{path}` is not a regular file of {size} bytes"
            )));
        }
        if !wanted.contains(sha256) || store.has(sha256, *size) {
            continue;
        }
        let claim = store.try_claim(sha256).map_err(io::Error::other)?;
        // Another process is fetching it: it will be there or the Hub path takes it.
        let Some(claim) = claim else { continue };
        if store.has(sha256, *size) {
            continue;
        }
        let mut partial = store
            .begin(sha256, *size, &claim)
            .map_err(io::Error::other)?;
        partial.reset().map_err(io::Error::other)?;
        loop {
            let n = entry.read(&mut buf)?;
            if n == 0 {
                break;
            }
            if let Err(e) = partial.append(&buf[..n]) {
                partial.discard();
                return Err(io::Error::other(format!("`{path}`: {e}")));
            }
        }
        partial
            .publish()
            .map_err(|e| io::Error::other(format!("`{path}`: {e}")))?;
        published.push((sha256.clone(), *size));
    }
    // The rest of the stream: its end is where the layer digest is checked.
    let mut rest = archive.into_inner();
    io::copy(&mut rest, &mut io::sink())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bake::layer_build::write_layer_into;
    use crate::bake::plan::plan_one;
    use crate::hash::sha256_hex;
    use crate::manifest::bake_table::BakeSettings;
    use crate::oci::Compression;
    use crate::oci::tar::Stamp;
    use crate::repo::RepoKind;
    use crate::test_support::fuzz::locked_repo;

    const FILES: &[(&str, &[u8], bool)] = &[
        ("config.json", b"{}\n", false),
        ("data/a.txt", b"row a\n", false),
        ("data/b.txt", b"row b, a little longer\n", false),
        ("data/c.txt", b"row a\n", false),
    ];

    /// The one layer of a lock of [`FILES`], and its uncompressed or compressed bytes.
    fn layer(compression: Compression) -> (LayerPlan, Vec<u8>) {
        let repo = locked_repo(RepoKind::Dataset, "acme/rows", &"3".repeat(40), FILES);
        let [plan] = <[LayerPlan; 1]>::try_from(plan_one(repo, &BakeSettings::default()))
            .unwrap_or_else(|p| panic!("{} plans", p.len()));
        let format = LayerFormat {
            stamp: Stamp {
                uid: 0,
                gid: 0,
                mtime: 0,
            },
            compression,
            layout: crate::manifest::bake_table::ModelArrangement::HfCache,
        };
        let open = |sha256: &str| {
            let (_, bytes, _) = FILES
                .iter()
                .find(|f| sha256_hex(f.1) == sha256)
                .ok_or_else(|| io::Error::other("not a file of the lock"))?;
            Ok(io::Cursor::new(bytes.to_vec()))
        };
        let (.., bytes) = write_layer_into(&plan, format, Vec::new(), &open).unwrap();
        (plan, bytes)
    }

    fn every_blob() -> BTreeSet<String> {
        FILES.iter().map(|f| sha256_hex(f.1)).collect()
    }

    /// Unpacks `tar` into a fresh store: (what was published, the error, the store).
    fn unpack(
        tar: Vec<u8>,
        media: &str,
        plan: &LayerPlan,
    ) -> (Vec<(String, u64)>, Option<String>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut published = Vec::new();
        let e = unpack_tar(
            io::Cursor::new(tar),
            media,
            &store,
            plan,
            &every_blob(),
            &mut published,
        )
        .err();
        (published, e.map(|e| e.to_string()), dir)
    }

    #[test]
    fn a_genuine_layer_publishes_every_wanted_file_plain_or_compressed() {
        for (compression, media) in [
            (Compression::None, crate::oci::MEDIA_LAYER_TAR),
            (Compression::Gzip, MEDIA_LAYER_GZIP),
            (Compression::Zstd, MEDIA_LAYER_ZSTD),
        ] {
            let (plan, bytes) = layer(compression);
            let (published, problem, dir) = unpack(bytes, media, &plan);
            assert_eq!(problem, None, "{media}");
            let store = Store::open(dir.path()).unwrap();
            for (_, content, _) in FILES {
                let sha = sha256_hex(content);
                assert!(store.has(&sha, content.len() as u64), "{media}: {sha}");
                assert!(published.contains(&(sha, content.len() as u64)), "{media}");
            }
            // Two paths of the lock with the same content: one blob, published once.
            assert_eq!(published.len(), FILES.len() - 1, "{media}");
        }
    }

    /// The layer's tar with its end-of-archive blocks cut off.
    fn without_end(tar: Vec<u8>) -> Vec<u8> {
        let end = tar.len() - 1024;
        assert!(tar[end..].iter().all(|b| *b == 0), "a tar ends in zeros");
        tar[..end].to_vec()
    }

    /// A tar of one regular file, with its end blocks.
    fn one_file(path: &str, bytes: &[u8]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_ustar();
        h.set_size(bytes.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, path, bytes).unwrap();
        b.into_inner().unwrap()
    }

    #[test]
    fn an_entry_the_lock_does_not_hold_stops_the_unpacking() {
        let (plan, bytes) = layer(Compression::None);
        let mut tar = without_end(bytes);
        tar.extend(one_file("root/.cache/huggingface/hub/extra.txt", b"x"));
        let (_, problem, _) = unpack(tar, crate::oci::MEDIA_LAYER_TAR, &plan);
        let problem = problem.expect("refused");
        assert!(
            problem.contains("root/.cache/huggingface/hub/extra.txt")
                && problem.contains("which the lock does not"),
            "{problem}"
        );
    }

    #[test]
    fn a_locked_path_of_another_size_is_refused_and_nothing_is_published() {
        let (plan, _) = layer(Compression::None);
        let blob = plan
            .entries()
            .find(|e| matches!(e.kind, EntryKind::Blob { .. }))
            .expect("a blob entry");
        let EntryKind::Blob { size, .. } = blob.kind else {
            unreachable!()
        };
        let tar = one_file(&blob.path, &vec![b'x'; size as usize + 1]);
        let (published, problem, dir) = unpack(tar, crate::oci::MEDIA_LAYER_TAR, &plan);
        let problem = problem.expect("refused");
        assert!(
            problem.contains(&blob.path) && problem.contains(&format!("{size} bytes")),
            "{problem}"
        );
        assert!(published.is_empty());
        let store = Store::open(dir.path()).unwrap();
        for (_, content, _) in FILES {
            assert!(!store.has(&sha256_hex(content), content.len() as u64));
        }
    }
}
