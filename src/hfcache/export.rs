//! Lays out the huggingface_hub cache for locked repos from the store: blobs as hard links to
//! the store (copies across filesystems or on request), relative snapshot symlinks, refs
//! without a newline, `trees/<commit>.json` for complete repos. Idempotent, merges into an
//! existing cache, and orders its writes so that readers never see a half-written snapshot:
//! blobs, then the snapshot (built aside and renamed into place when new), then `trees/`, then
//! `refs/` last.
//!
//! Nothing is written through a symlinked folder: a folder of the repo folder (the repo folder
//! itself, `blobs`, `refs`, `snapshots`, the snapshot, a folder in it) that is a symlink is
//! replaced by a real folder — the link is removed, what it pointed to is left as it was —
//! which is also how `export` repairs what `verify` reports. The hub cache folder itself may
//! be a symlink: that is where the user chose to put the cache.

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::{repo_folder, symlink_target, trees_json};
use crate::fs_atomic::{Mode, Placed, link_or_copy, temp_sibling, write_if_different};
use crate::lock::{LockedRepo, Lockfile};
use crate::store::Store;

/// How blobs get into the cache.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LinkMode {
    /// Hard link to the store (no second copy); falls back to copying across filesystems.
    #[default]
    Hardlink,
    /// Always copy.
    Copy,
}

/// What an export did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ExportReport {
    /// Where the cache is.
    pub hub_cache: PathBuf,
    /// Repos exported.
    pub repos: usize,
    /// Blobs hard-linked to the store.
    pub linked: usize,
    /// Blobs copied.
    pub copied: usize,
    /// Blobs that were already in place.
    pub kept: usize,
    /// Snapshot symlinks created or fixed.
    pub symlinks_written: usize,
    /// Refs created or changed.
    pub refs_written: usize,
    /// Symlinks found where folders belong, replaced by real folders (their targets untouched).
    pub replaced_links: Vec<PathBuf>,
}

/// Why an export failed.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// Blobs are not in the store yet.
    #[error("{} blob(s) are not in the store {}:\n{}\nrun `modelbake fetch` first", .missing.len(), .store.display(), .missing.iter().take(20).map(|m| format!("  - {m}")).collect::<Vec<_>>().join("\n"))]
    NotFetched {
        /// The store searched.
        store: PathBuf,
        /// `model `x` file `y`` entries.
        missing: Vec<String>,
    },
    /// A filesystem operation failed.
    #[error("{what} {}: {source}", .path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> ExportError + 'a {
    move |source| ExportError::Io {
        what,
        path: path.to_owned(),
        source,
    }
}

/// Exports every repo of `lock` into the hub cache folder `hub_cache`.
pub fn export(
    lock: &Lockfile,
    store: &Store,
    hub_cache: &Path,
    mode: LinkMode,
) -> Result<ExportReport, ExportError> {
    let missing = store.missing(lock);
    if !missing.is_empty() {
        return Err(ExportError::NotFetched {
            store: store.root().to_owned(),
            missing,
        });
    }
    create_dir(hub_cache)?;
    let mut report = ExportReport {
        hub_cache: hub_cache.to_owned(),
        ..Default::default()
    };
    for repo in &lock.repos {
        export_repo(repo, store, hub_cache, mode, &mut report)?;
        report.repos += 1;
    }
    Ok(report)
}

fn export_repo(
    repo: &LockedRepo,
    store: &Store,
    hub_cache: &Path,
    mode: LinkMode,
    report: &mut ExportReport,
) -> Result<(), ExportError> {
    let root = hub_cache.join(repo_folder(repo.kind, &repo.id));
    real_dir(&root, true, report)?;
    for sub in ["blobs", "snapshots", "refs"] {
        real_dir(&root.join(sub), true, report)?;
    }

    // 1. Blobs.
    for f in &repo.files {
        let dest = root.join("blobs").join(&f.blob);
        let src = store.blob_path(&f.sha256);
        // Kept: already a link to the store, or a file of the right size under the name that
        // is its own content hash (written by huggingface_hub, or an earlier copy); `verify`
        // re-hashes when proof is needed.
        if same_file(&src, &dest)
            || fs::symlink_metadata(&dest).is_ok_and(|m| m.is_file() && m.len() == f.size)
        {
            report.kept += 1;
            continue;
        }
        match link_or_copy(&src, &dest, mode == LinkMode::Hardlink)
            .map_err(io_err("placing the blob", &dest))?
        {
            Placed::Linked => report.linked += 1,
            Placed::Copied => report.copied += 1,
        }
    }

    // 2. The snapshot.
    let snapshot = root.join("snapshots").join(&repo.commit);
    real_dir(&snapshot, false, report)?;
    if !snapshot.exists() {
        let staging = root.join(format!(
            ".modelbake-staging-{}-{:08x}",
            repo.commit,
            fastrand::u32(..)
        ));
        create_dir(&staging)?;
        for f in &repo.files {
            write_symlink(&staging, &f.path, &symlink_target(&f.path, &f.blob), report)?;
            report.symlinks_written += 1;
        }
        chmod_dirs(&staging)?;
        match fs::rename(&staging, &snapshot) {
            Ok(()) => {}
            Err(_) if snapshot.exists() => {
                // Someone else created it meanwhile: merge into theirs instead.
                let _ = fs::remove_dir_all(&staging);
                report.symlinks_written -= repo.files.len();
                merge_snapshot(repo, &snapshot, report)?;
            }
            Err(e) => return Err(io_err("moving the snapshot into place", &snapshot)(e)),
        }
    } else {
        merge_snapshot(repo, &snapshot, report)?;
    }

    // 3. trees/<commit>.json, only when the lock lists every file of the commit.
    let trees = root.join("trees");
    real_dir(&trees, repo.complete, report)?;
    if repo.complete {
        replace_if_different(
            &trees.join(format!("{}.json", repo.commit)),
            trees_json(repo).as_bytes(),
        )?;
    }

    // 4. The ref last: once it points at the commit, everything it leads to is in place.
    if repo.revision.as_str() != repo.commit {
        let refs = root.join("refs");
        let ref_path = real_parents(&refs, repo.revision.as_str(), report)?;
        if replace_if_different(&ref_path, repo.commit.as_bytes())? {
            report.refs_written += 1;
        }
    }
    Ok(())
}

/// Adds missing symlinks and fixes wrong ones in an existing snapshot, each atomically.
fn merge_snapshot(
    repo: &LockedRepo,
    snapshot: &Path,
    report: &mut ExportReport,
) -> Result<(), ExportError> {
    for f in &repo.files {
        let link = snapshot.join(&f.path);
        let target = symlink_target(&f.path, &f.blob);
        if fs::read_link(&link).is_ok_and(|t| t == Path::new(&target))
            && !has_symlinked_parent(snapshot, &f.path)
        {
            continue;
        }
        write_symlink(snapshot, &f.path, &target, report)?;
        report.symlinks_written += 1;
    }
    Ok(())
}

/// True when both paths are the same inode (the blob is already a link to the store).
fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (fs::metadata(a), fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => false,
    }
}

/// Creates (or replaces) the symlink `base/rel` atomically: a temp link, then a rename over
/// the path; the folders between `base` and it are made real first.
fn write_symlink(
    base: &Path,
    rel: &str,
    target: &str,
    report: &mut ExportReport,
) -> Result<(), ExportError> {
    let link = real_parents(base, rel, report)?;
    let link = link.as_path();
    let tmp = temp_sibling(link);
    std::os::unix::fs::symlink(target, &tmp).map_err(io_err("creating the symlink", &tmp))?;
    fs::rename(&tmp, link).map_err(|e| {
        let _ = fs::remove_file(&tmp);
        io_err("placing the symlink", link)(e)
    })
}

/// Writes `bytes` to `path` (temp file, fsync, rename, mode 0644) unless it already holds
/// exactly them, so read-only caches and unchanged refs are left alone. True when written.
fn replace_if_different(path: &Path, bytes: &[u8]) -> Result<bool, ExportError> {
    write_if_different(path, bytes, Mode::Fixed(0o644)).map_err(io_err("replacing", path))
}

/// `create_dir_all` with the folders it creates set to 0755 whatever the umask, so any uid can
/// read the cache.
fn create_dir(dir: &Path) -> Result<(), ExportError> {
    let mut missing = Vec::new();
    let mut cur = Some(dir);
    while let Some(d) = cur {
        if d.as_os_str().is_empty() || d.exists() {
            break;
        }
        missing.push(d.to_owned());
        cur = d.parent();
    }
    fs::create_dir_all(dir).map_err(io_err("creating", dir))?;
    for d in missing {
        fs::set_permissions(&d, fs::Permissions::from_mode(0o755))
            .map_err(io_err("setting permissions of", &d))?;
    }
    Ok(())
}

/// `base/rel`, after making every folder between them real ([`real_dir`]), so that nothing
/// written there lands elsewhere through a symlinked folder.
fn real_parents(base: &Path, rel: &str, report: &mut ExportReport) -> Result<PathBuf, ExportError> {
    let rel = Path::new(rel);
    if let Some(parent) = rel.parent() {
        let mut dir = base.to_owned();
        for part in parent.components() {
            dir.push(part);
            real_dir(&dir, true, report)?;
        }
    }
    Ok(base.join(rel))
}

/// True when a folder between `base` and `base/rel` is a symlink.
fn has_symlinked_parent(base: &Path, rel: &str) -> bool {
    let mut dir = base.to_owned();
    Path::new(rel)
        .parent()
        .into_iter()
        .flat_map(Path::components)
        .any(|part| {
            dir.push(part);
            fs::symlink_metadata(&dir).is_ok_and(|m| m.file_type().is_symlink())
        })
}

/// Makes `dir` a real folder: a symlink there is removed (what it points to is left as it
/// was), with a warning and a note in the report; a missing folder is created (0755) when
/// `create`. A file where the folder belongs is an error that says to move it.
fn real_dir(dir: &Path, create: bool, report: &mut ExportReport) -> Result<(), ExportError> {
    match fs::symlink_metadata(dir) {
        Ok(m) if m.is_dir() => return Ok(()),
        Ok(m) if m.file_type().is_symlink() => {
            let target = fs::read_link(dir).unwrap_or_default();
            fs::remove_file(dir).map_err(io_err("removing the symlink", dir))?;
            tracing::warn!(
                "{} was a symlink to {}: replaced by a real folder (modelbake never writes through a symlinked folder; {} is left as it was)",
                dir.display(),
                target.display(),
                target.display()
            );
            report.replaced_links.push(dir.to_owned());
        }
        Ok(_) => {
            return Err(io_err("using the folder", dir)(io::Error::new(
                io::ErrorKind::NotADirectory,
                "a file is where the cache needs a folder; move it away and export again",
            )));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err("reading", dir)(e)),
    }
    if create {
        match fs::create_dir(dir) {
            Ok(()) => fs::set_permissions(dir, fs::Permissions::from_mode(0o755))
                .map_err(io_err("setting permissions of", dir))?,
            Err(e)
                if e.kind() == io::ErrorKind::AlreadyExists && crate::store::is_real_dir(dir) => {}
            Err(e) => return Err(io_err("creating", dir)(e)),
        }
    }
    Ok(())
}

/// Sets every folder under `dir` (inclusive) to 0755.
fn chmod_dirs(dir: &Path) -> Result<(), ExportError> {
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755))
        .map_err(io_err("setting permissions of", dir))?;
    for entry in fs::read_dir(dir).map_err(io_err("listing", dir))? {
        let entry = entry.map_err(io_err("listing", dir))?;
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            chmod_dirs(&entry.path())?;
        }
    }
    Ok(())
}
