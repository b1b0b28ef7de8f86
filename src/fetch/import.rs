//! Reuse of blobs that an existing huggingface_hub cache already holds: a matching
//! `<cache>/<repo folder>/blobs/<blob>` is copied into the store through the same hashing path
//! as a download, so a corrupted cache file is never trusted.

use std::io::Read;
use std::path::PathBuf;

use super::{BlobError, BlobJob, Run};
use crate::hfcache::repo_folder;
use crate::store::BlobClaim;

/// Tries every reuse cache and every file that uses the blob; true when one was imported.
pub(super) async fn from_caches(
    run: &Run<'_>,
    job: &BlobJob,
    claim: &BlobClaim,
) -> Result<bool, BlobError> {
    let candidates: Vec<PathBuf> = run
        .opts
        .reuse
        .iter()
        .flat_map(|cache| {
            job.uses.iter().map(move |u| {
                cache
                    .join(repo_folder(u.repo.kind, &u.repo.id))
                    .join("blobs")
                    .join(&u.blob)
            })
        })
        .filter(|p| std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.len() == job.size))
        .collect();
    for source in candidates {
        let store = run.store.clone();
        let (sha, size) = (job.sha256.clone(), job.size);
        let src = source.clone();
        let claim = claim.clone();
        let imported = tokio::task::spawn_blocking(move || -> Result<bool, String> {
            let mut partial = store.begin(&sha, size, &claim).map_err(|e| e.to_string())?;
            partial.reset().map_err(|e| e.to_string())?;
            let mut file =
                std::fs::File::open(&src).map_err(|e| format!("{}: {e}", src.display()))?;
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let n = file
                    .read(&mut buf)
                    .map_err(|e| format!("{}: {e}", src.display()))?;
                if n == 0 {
                    break;
                }
                if partial.append(&buf[..n]).is_err() {
                    partial.discard();
                    return Ok(false);
                }
            }
            Ok(partial.publish().is_ok())
        })
        .await
        .map_err(|e| BlobError::Other {
            label: job.uses[0].label(),
            detail: e.to_string(),
        })?;
        match imported {
            Ok(true) => {
                run.progress.advance(job.size);
                tracing::info!("imported {} from {}", job.uses[0].label(), source.display());
                return Ok(true);
            }
            Ok(false) => tracing::warn!(
                "{} does not match the lock's sha256; not reused",
                source.display()
            ),
            Err(e) => tracing::warn!("cannot reuse {}: {e}", source.display()),
        }
    }
    Ok(false)
}

/// The default huggingface_hub cache plus any `--reuse` folders, existing ones only.
pub fn reuse_caches(extra: &[PathBuf], env: &dyn Fn(&str) -> Option<String>) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = extra.to_vec();
    if let Some(default) = crate::hfcache::default_hub_cache(env) {
        dirs.push(default);
    }
    dirs.retain(|d| d.is_dir());
    dirs.dedup();
    dirs
}
