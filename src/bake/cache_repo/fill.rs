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
fn decompressed(media_type: &str, raw: ChannelReader) -> io::Result<Box<dyn Read>> {
    Ok(match media_type {
        MEDIA_LAYER_GZIP => Box::new(flate2::read::MultiGzDecoder::new(raw)),
        MEDIA_LAYER_ZSTD => Box::new(zstd::stream::read::Decoder::new(raw)?),
        _ => Box::new(raw),
    })
}

/// Reads the layer's entries, publishing the wanted files; the first disagreement with the
/// plan ends the unpacking with an error (files already published were each verified).
fn unpack_tar(
    raw: ChannelReader,
    media_type: &str,
    store: &Store,
    plan: &LayerPlan,
    wanted: &BTreeSet<String>,
    published: &mut Vec<(String, u64)>,
) -> io::Result<()> {
    let expected: BTreeMap<String, EntryKind> = plan.entries().map(|e| (e.path, e.kind)).collect();
    let mut archive = tar::Archive::new(decompressed(media_type, raw)?);
    let mut buf = vec![0u8; 1 << 20];
    for entry in archive.entries()? {
        let mut entry = entry?;
        let raw_path = entry.path()?.to_string_lossy().into_owned();
        let path = raw_path
            .trim_start_matches("./")
            .trim_end_matches('/')
            .to_owned();
        let Some(kind) = expected.get(path.as_str()) else {
            return Err(io::Error::other(format!(
                "it holds `{path}`, which the lock does not"
            )));
        };
        let EntryKind::Blob { sha256, size } = kind else {
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
