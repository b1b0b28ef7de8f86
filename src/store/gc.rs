//! Garbage collection of the store: blobs and partial downloads that none of the given locks
//! needs (the layer cache collects its own records, in `bake::layer_cache::collect_cache`). A blob is
//! removed only while holding its claim, so a blob that a concurrent `fetch` is downloading or
//! publishing is never collected.

use std::collections::BTreeSet;
use std::fs;
use std::path::PathBuf;

use serde::Serialize;

use super::{Store, StoreError, StorePaths, io_err};
use crate::lock::Lockfile;

/// What a collection found (and, when applied, removed). Only entries the store made are
/// candidates: `blobs/sha256/<aa>/<sha256>` regular files in their own shard, and
/// `tmp/<sha256>.<writer>.part` regular files; anything else is left alone, and a symlinked
/// shard folder is never entered (it is listed in `skipped`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct GcReport {
    /// Unreferenced blobs: (sha256, size).
    pub blobs: Vec<(String, u64)>,
    /// Partial downloads of unreferenced blobs.
    pub partials: Vec<PathBuf>,
    /// Cached layers of repos at commits no lock references (filled in by the layer cache's
    /// own collection, `bake::layer_cache::collect_cache`).
    pub layers: Vec<PathBuf>,
    /// Bytes that go (or went).
    pub freed: u64,
    /// Candidates left alone because another process holds them right now.
    pub busy: usize,
    /// Folders of the store left alone because they are symlinks (never walked).
    pub skipped: Vec<PathBuf>,
    /// Whether anything was removed (false for a dry run).
    pub applied: bool,
}

/// Finds (and with `apply`, removes) what none of `keep` references. With `apply` the caller
/// holds the store alone first ([`Store::use_alone`], as `store gc` does).
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
    collect_blobs(store, &wanted, apply, &mut report)?;
    collect_partials(store, &wanted, apply, &mut report)?;
    Ok(report)
}

/// Unreferenced published blobs, shard by shard; symlinked shards are skipped.
fn collect_blobs(
    store: &Store,
    wanted: &BTreeSet<&str>,
    apply: bool,
    report: &mut GcReport,
) -> Result<(), StoreError> {
    let blobs_dir = store.paths().blobs();
    for shard in fs::read_dir(&blobs_dir)
        .map_err(io_err("listing", &blobs_dir))?
        .filter_map(Result::ok)
    {
        let name = shard.file_name().to_string_lossy().into_owned();
        match shard.file_type() {
            Ok(t) if t.is_symlink() => {
                report.skipped.push(shard.path());
                continue;
            }
            Ok(t) if t.is_dir() && crate::hash::is_lower_hex(&name, 2) => {}
            _ => continue,
        }
        for entry in fs::read_dir(shard.path())
            .map_err(io_err("listing", &shard.path()))?
            .filter_map(Result::ok)
        {
            let sha = entry.file_name().to_string_lossy().into_owned();
            let recognised = crate::hash::is_lower_hex(&sha, 64)
                && sha.starts_with(&name)
                && entry.file_type().is_ok_and(|t| t.is_file());
            if !recognised || wanted.contains(sha.as_str()) {
                continue;
            }
            // DirEntry::metadata does not follow symlinks.
            let size = entry.metadata().map_or(0, |m| m.len());
            if apply {
                // Held while removing: a fetch of this blob waits, then downloads it again.
                let Some(_claim) = store.try_claim(&sha)? else {
                    report.busy += 1;
                    continue;
                };
                fs::remove_file(entry.path()).map_err(io_err("removing", &entry.path()))?;
                store.forget_chunks(&sha);
            }
            report.freed += size;
            report.blobs.push((sha, size));
        }
    }
    Ok(())
}

/// Partial downloads of unreferenced blobs (regular files under the names the store gives
/// them; nothing else in `tmp/` is touched).
fn collect_partials(
    store: &Store,
    wanted: &BTreeSet<&str>,
    apply: bool,
    report: &mut GcReport,
) -> Result<(), StoreError> {
    let tmp = store.paths().tmp();
    for entry in fs::read_dir(&tmp)
        .map_err(io_err("listing", &tmp))?
        .filter_map(Result::ok)
    {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(sha) = StorePaths::partial_of(&name) else {
            continue;
        };
        if wanted.contains(sha) || !entry.file_type().is_ok_and(|t| t.is_file()) {
            continue; // a resumable download of a blob still needed, or not ours
        }
        if apply {
            let Some(_claim) = store.try_claim(sha)? else {
                report.busy += 1;
                continue;
            };
            let _ = fs::remove_file(entry.path());
        }
        report.freed += entry.metadata().map_or(0, |m| m.len());
        report.partials.push(entry.path());
    }
    Ok(())
}
