//! Moving one blob to where a sink needs it, decided by its [`BlobSource`] alone: into an OCI
//! layout ([`to_layout`]: a file linked, a layout blob hashed then linked, a registry blob
//! downloaded and hashed as it arrives) or into a registry repository ([`to_registry`]: present
//! already, uploaded from a file, hashed then uploaded from a layout, mounted from the same
//! registry, or streamed from another one with its digest checked on the way). Nothing that
//! came from outside this process lands anywhere before its digest matched.

use std::path::Path;

use futures::StreamExt;
use serde::Serialize;

use super::error::OciError;
use super::image::BlobSource;
use super::model::Descriptor;
use super::registry::{Payload, Registry, SyncStream};
use super::source::{LayoutSource, RegistrySource, VerifyingStream, blob_path, verify_file};
use crate::fs_atomic::link_or_copy;

/// What a push did with one blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// The registry had it: nothing sent.
    Present,
    /// Mounted from another repository on the same registry (no bytes moved).
    Mounted,
    /// Streamed from another registry, checked on the way.
    Streamed,
    /// Uploaded from this machine.
    Uploaded,
    /// Uploaded from this machine, continued from the registry's offset after a failure.
    Resumed,
}

/// Puts blob `desc` from `source` into the layout at `dir`. A file of ours already there with
/// the right size is kept (blobs are named by content; ours were verified when written); a blob
/// from outside is checked against its digest, also when a copy is already there.
pub async fn to_layout(source: &BlobSource, desc: &Descriptor, dir: &Path) -> Result<(), OciError> {
    let parent = dir.join("blobs/sha256");
    std::fs::create_dir_all(&parent).map_err(OciError::io(&parent))?;
    let dest = blob_path(dir, &desc.digest);
    match source {
        BlobSource::File(path) => link_file(path, desc, &dest).await,
        BlobSource::Temp(path) => link_file(path, desc, &dest).await,
        BlobSource::Layout(src) if same_file(&src.dir, dir) => {
            // Writing into the source's own layout: the blob is already in place; still checked.
            src.verified_blob(desc).map(|_| ())
        }
        BlobSource::Layout(src) => {
            if verified_in_place(dir, desc) {
                return Ok(());
            }
            let tmp = crate::fs_atomic::temp_sibling(&dest);
            rename_into_place(link_verified(src, desc, &tmp), &tmp, &dest)
        }
        BlobSource::Registry(src) => {
            if verified_in_place(dir, desc) {
                return Ok(());
            }
            let tmp = crate::fs_atomic::temp_sibling(&dest);
            rename_into_place(download(src, desc, &tmp).await, &tmp, &dest)
        }
    }
}

/// Hard-links (or copies) a file of ours to `dest`, unless a file of its size is there.
async fn link_file(path: &Path, desc: &Descriptor, dest: &Path) -> Result<(), OciError> {
    if std::fs::symlink_metadata(dest).is_ok_and(|m| m.is_file() && m.len() == desc.size) {
        return Ok(());
    }
    let (from, to) = (path.to_owned(), dest.to_owned());
    tokio::task::spawn_blocking(move || link_or_copy(&from, &to, true))
        .await
        .map_err(|e| OciError::Invalid {
            what: "the layout writer".into(),
            detail: e.to_string(),
        })?
        .map(|_| ())
        .map_err(OciError::io(dest))
}

/// True when the layout at `dir` already holds a regular file that matches `desc`.
fn verified_in_place(dir: &Path, desc: &Descriptor) -> bool {
    let existing = LayoutSource {
        dir: dir.to_owned(),
        tag: None,
    };
    std::fs::symlink_metadata(blob_path(dir, &desc.digest))
        .is_ok_and(|m| m.is_file() && m.len() == desc.size)
        && existing.verified_blob(desc).is_ok()
}

/// Renames the checked temp file `tmp` to `dest` when `placed` succeeded; removes it otherwise.
fn rename_into_place(
    placed: Result<(), OciError>,
    tmp: &Path,
    dest: &Path,
) -> Result<(), OciError> {
    match placed {
        Ok(()) => std::fs::rename(tmp, dest).map_err(OciError::io(dest)),
        Err(e) => {
            let _ = std::fs::remove_file(tmp);
            Err(e)
        }
    }
}

/// Makes blob `desc` from `source` present in `repo` on `target`: present already, uploaded
/// from a file, hashed and uploaded from a layout, mounted when the source repository is on the
/// same registry, otherwise streamed with its digest checked on the way. Returns what it did
/// and the bytes it sent.
pub async fn to_registry(
    source: &BlobSource,
    desc: &Descriptor,
    target: &Registry,
    repo: &str,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<(Action, u64), OciError> {
    if target.has_blob(repo, &desc.digest).await? {
        return Ok((Action::Present, 0));
    }
    let path = match source {
        BlobSource::Registry(src) => {
            return copy_from_registry(src, desc, target, repo, progress).await;
        }
        BlobSource::Layout(src) => src.verified_blob(desc)?.path,
        BlobSource::File(path) => path.clone(),
        BlobSource::Temp(path) => path.to_path_buf(),
    };
    upload(target, repo, desc, Payload::File(&path), progress).await
}

/// Uploads bytes held in memory (a config, a small document) unless `repo` has them.
pub async fn bytes_to_registry(
    bytes: &[u8],
    desc: &Descriptor,
    target: &Registry,
    repo: &str,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<(Action, u64), OciError> {
    if target.has_blob(repo, &desc.digest).await? {
        return Ok((Action::Present, 0));
    }
    upload(target, repo, desc, Payload::Bytes(bytes), progress).await
}

/// Uploads `payload` as blob `desc`: what was done and the bytes sent.
async fn upload(
    target: &Registry,
    repo: &str,
    desc: &Descriptor,
    payload: Payload<'_>,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<(Action, u64), OciError> {
    let stats = target
        .upload(repo, &desc.digest, desc.size, payload, progress)
        .await?;
    let action = if stats.resumed > 0 {
        Action::Resumed
    } else {
        Action::Uploaded
    };
    Ok((action, stats.bytes_sent))
}

/// Puts blob `desc` of registry image `src` into `repo` on `target`: mounted when both are on
/// the same registry, otherwise streamed registry to registry with its digest checked on the
/// way (opened again from its first byte if the upload has to go back, so every byte still
/// passes the check).
async fn copy_from_registry(
    src: &RegistrySource,
    desc: &Descriptor,
    target: &Registry,
    repo: &str,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<(Action, u64), OciError> {
    if src.registry.host() == target.host()
        && target
            .mount(repo, &desc.digest, &src.image.repository)
            .await?
    {
        return Ok((Action::Mounted, 0));
    }
    let open = async || {
        // A cut source body is resumed in the stream; the upload's own restarts open it again.
        let body = src
            .registry
            .blob_body(&src.image.repository, &desc.digest, desc.size)
            .await?;
        let what = format!("layer {} from {}", desc.digest, src.image);
        Ok(VerifyingStream::new(
            SyncStream::new(Box::pin(body)),
            desc.clone(),
            what,
        ))
    };
    let stats = target
        .upload_stream(repo, &desc.digest, desc.size, open, progress)
        .await?;
    Ok((Action::Streamed, stats.bytes_sent))
}

/// True when two paths name the same folder.
fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => (x.dev(), x.ino()) == (y.dev(), y.ino()),
        _ => false,
    }
}

/// Hashes a layout blob, hard-links it to `tmp` and checks the link is the file that was
/// hashed; across filesystems, copies it while hashing the copy.
fn link_verified(src: &LayoutSource, desc: &Descriptor, tmp: &Path) -> Result<(), OciError> {
    use std::os::unix::fs::MetadataExt;
    let blob = src.verified_blob(desc)?;
    if std::fs::hard_link(&blob.path, tmp).is_ok() {
        let linked = std::fs::symlink_metadata(tmp).map_err(OciError::io(tmp))?;
        if linked.is_file() && (linked.dev(), linked.ino()) == blob.identity {
            return Ok(());
        }
        return Err(OciError::NotRegular {
            path: blob.path,
            kind: "a file that changed while it was read",
        });
    }
    std::fs::copy(&blob.path, tmp).map_err(OciError::io(tmp))?;
    // Check the copy itself: it is what the layout will hold.
    verify_file(tmp, desc, &format!("the copy of {}", blob.path.display()))?;
    Ok(())
}

/// Downloads a registry blob (a base layer, a cache repository's layer) into `tmp`, hashing it
/// as it arrives (a cut body is resumed, [`Registry::blob_body`]); the caller renames it into
/// place only when this succeeded.
pub async fn download(src: &RegistrySource, desc: &Descriptor, tmp: &Path) -> Result<(), OciError> {
    let body = src
        .registry
        .blob_body(&src.image.repository, &desc.digest, desc.size)
        .await?;
    let what = format!("layer {} from {}", desc.digest, src.image);
    let mut body = VerifyingStream::new(Box::pin(body), desc.clone(), what.clone());
    let mut file = tokio::fs::File::create(tmp)
        .await
        .map_err(OciError::io(tmp))?;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(OciError::io(tmp))?;
        tokio::io::AsyncWriteExt::write_all(&mut file, &chunk)
            .await
            .map_err(OciError::io(tmp))?;
    }
    tokio::io::AsyncWriteExt::flush(&mut file)
        .await
        .map_err(OciError::io(tmp))
}
