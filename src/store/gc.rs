//! Garbage collection of the store: blobs and partial downloads that none of the given locks
//! needs (the layer cache collects its own records, in `oci::layer::collect_cache`). A blob is removed only while holding its claim, so a blob that a
//! concurrent `fetch` is downloading or publishing is never collected.

use std::collections::BTreeSet;
use std::fs;
use std::path::PathBuf;

use serde::Serialize;

use super::{Store, StoreError, io_err};
use crate::lock::Lockfile;

/// What a collection found (and, when applied, removed).
#[derive(Debug, Clone, Default, Serialize)]
pub struct GcReport {
    /// Unreferenced blobs: (sha256, size).
    pub blobs: Vec<(String, u64)>,
    /// Partial downloads of unreferenced blobs.
    pub partials: Vec<PathBuf>,
    /// Cached layers of repos at commits no lock references (filled in by the layer cache's
    /// own collection, `oci::layer::collect_cache`).
    pub layers: Vec<PathBuf>,
    /// Bytes that go (or went).
    pub freed: u64,
    /// Candidates left alone because another process holds them right now.
    pub busy: usize,
    /// Whether anything was removed (false for a dry run).
    pub applied: bool,
}

/// Finds (and with `apply`, removes) what none of `keep` references.
pub fn gc(store: &Store, keep: &[Lockfile], apply: bool) -> Result<GcReport, StoreError> {
    let wanted: BTreeSet<&str> = keep
        .iter()
        .flat_map(|l| &l.repos)
        .flat_map(|r| &r.files)
        .map(|f| f.sha256.as_str())
        .collect();
    let mut report = GcReport {
        applied: apply,
        ..Default::default()
    };
    let blobs_dir = store.root().join("blobs/sha256");
    for shard in fs::read_dir(&blobs_dir)
        .map_err(io_err("listing", &blobs_dir))?
        .filter_map(Result::ok)
    {
        for entry in fs::read_dir(shard.path())
            .map_err(io_err("listing", &shard.path()))?
            .filter_map(Result::ok)
        {
            let sha = entry.file_name().to_string_lossy().into_owned();
            if wanted.contains(sha.as_str()) || !crate::hash::is_lower_hex(&sha, 64) {
                continue;
            }
            let size = entry.metadata().map_or(0, |m| m.len());
            if apply {
                // Held while removing: a fetch of this blob waits, then downloads it again.
                let Some(_claim) = store.try_lock(&sha)? else {
                    report.busy += 1;
                    continue;
                };
                fs::remove_file(entry.path()).map_err(io_err("removing", &entry.path()))?;
            }
            report.freed += size;
            report.blobs.push((sha, size));
        }
    }
    let tmp = store.tmp_dir();
    for entry in fs::read_dir(&tmp)
        .map_err(io_err("listing", &tmp))?
        .filter_map(Result::ok)
    {
        let name = entry.file_name().to_string_lossy().into_owned();
        let sha = name.split('.').next().unwrap_or("").to_owned();
        if wanted.contains(sha.as_str()) && crate::hash::is_lower_hex(&sha, 64) {
            continue; // resumable download of a blob still needed
        }
        if apply {
            if crate::hash::is_lower_hex(&sha, 64) {
                let Some(_claim) = store.try_lock(&sha)? else {
                    report.busy += 1;
                    continue;
                };
                let _ = fs::remove_file(entry.path());
            } else {
                let _ = fs::remove_file(entry.path());
            }
        }
        report.freed += entry.metadata().map_or(0, |m| m.len());
        report.partials.push(entry.path());
    }
    Ok(report)
}
