//! The places one built image goes: an OCI image layout ([`write_layout`]), a registry
//! ([`push`]) and plain layer files with an index ([`write_layer_files`]). Each takes the same
//! [`Image`], our built layers and the base it was built on. How a base layer gets to a sink
//! (linked, downloaded, skipped, mounted, streamed or uploaded) is decided by
//! [`BaseSource`] alone, and every base blob is checked against its digest on the way.

use std::path::{Path, PathBuf};

use futures::StreamExt;
use serde::Serialize;

use super::digest::Digest;
use super::error::OciError;
use super::image::Image;
use super::layer::BuiltLayer;
use super::layout::{self, BlobSource};
use super::model::Descriptor;
use super::reference::ImageRef;
use super::registry::{Payload, Registry};
use super::source::{LayoutSource, RegistrySource, VerifyingStream, blob_path, verify_file};
use super::{MEDIA_LAYER_GZIP, MEDIA_LAYER_ZSTD, MEDIA_MANIFEST};
use crate::fs_atomic::{Mode, link_or_copy, write_atomic};

/// Where the base image's blobs are read from.
pub enum BaseSource {
    /// An OCI layout on disk.
    Layout(LayoutSource),
    /// A registry.
    Registry(Box<RegistrySource>),
}

/// How a blob reached a registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transfer {
    /// The registry had it.
    Skipped,
    /// Mounted from the base repository on the same registry (no bytes moved).
    Mounted,
    /// Streamed from the base's registry.
    Copied,
    /// Uploaded from this machine.
    Uploaded,
}

/// What a push did, blob by blob.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PushReport {
    /// `registry/repo:tag@digest`.
    pub pushed: String,
    /// Blobs uploaded from this machine.
    pub uploaded: usize,
    /// Blobs the registry already had.
    pub skipped: usize,
    /// Base blobs mounted from the base repository.
    pub mounted: usize,
    /// Base blobs streamed from another registry.
    pub copied: usize,
}

impl PushReport {
    fn count(&mut self, t: Transfer) {
        match t {
            Transfer::Skipped => self.skipped += 1,
            Transfer::Mounted => self.mounted += 1,
            Transfer::Copied => self.copied += 1,
            Transfer::Uploaded => self.uploaded += 1,
        }
    }
}

impl BaseSource {
    /// Puts base layer `desc` into the layout at `dir`, checked against its digest: a layout
    /// blob is hashed and then hard-linked (the link must be the very file that was hashed),
    /// a registry blob is downloaded and hashed as it arrives.
    pub async fn put_in_layout(&self, desc: &Descriptor, dir: &Path) -> Result<(), OciError> {
        let dest = blob_path(dir, &desc.digest);
        if let BaseSource::Layout(src) = self
            && same_file(&src.dir, dir)
        {
            // Baking into the base's own layout: the blob is already in place; still checked.
            src.verified_blob(desc)?;
            return Ok(());
        }
        let existing = LayoutSource {
            dir: dir.to_owned(),
            tag: None,
        };
        if std::fs::symlink_metadata(&dest).is_ok_and(|m| m.is_file() && m.len() == desc.size)
            && existing.verified_blob(desc).is_ok()
        {
            return Ok(());
        }
        let parent = dir.join("blobs/sha256");
        std::fs::create_dir_all(&parent).map_err(OciError::io(&parent))?;
        let tmp = crate::fs_atomic::temp_sibling(&dest);
        let placed = match self {
            BaseSource::Layout(src) => link_verified(src, desc, &tmp),
            BaseSource::Registry(src) => download(src, desc, &tmp).await,
        };
        match placed {
            Ok(()) => std::fs::rename(&tmp, &dest).map_err(OciError::io(&dest)),
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                Err(e)
            }
        }
    }

    /// Makes base layer `desc` present in `repo` on `target`: skipped when there, mounted when
    /// the base lives on the same registry, otherwise streamed (registry base) or uploaded
    /// (layout base) with its digest checked on the way.
    pub async fn put_in_registry(
        &self,
        desc: &Descriptor,
        target: &Registry,
        repo: &str,
    ) -> Result<Transfer, OciError> {
        if target.has_blob(repo, &desc.digest).await? {
            return Ok(Transfer::Skipped);
        }
        match self {
            BaseSource::Registry(src) => copy_from_registry(src, desc, target, repo).await,
            BaseSource::Layout(src) => {
                let blob = src.verified_blob(desc)?;
                target
                    .upload(repo, &desc.digest, Payload::File(&blob.path))
                    .await?;
                Ok(Transfer::Uploaded)
            }
        }
    }
}

/// Puts blob `desc` of registry image `src` into `repo` on `target`: mounted when both are on
/// the same registry, otherwise streamed registry to registry with its digest checked on the
/// way. Used for base layers and for layers recorded in a cache repository.
pub async fn copy_from_registry(
    src: &RegistrySource,
    desc: &Descriptor,
    target: &Registry,
    repo: &str,
) -> Result<Transfer, OciError> {
    if src.registry.host() == target.host()
        && target
            .mount(repo, &desc.digest, &src.image.repository)
            .await?
    {
        return Ok(Transfer::Mounted);
    }
    let resp = src
        .registry
        .blob_stream(&src.image.repository, &desc.digest)
        .await?;
    let what = format!("layer {} from {}", desc.digest, src.image);
    let checked = VerifyingStream::new(resp.bytes_stream(), desc.clone(), what);
    target
        .upload_stream(repo, &desc.digest, desc.size, checked)
        .await?;
    Ok(Transfer::Copied)
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

/// Downloads a registry blob into `tmp`, hashing it as it arrives.
pub async fn download(src: &RegistrySource, desc: &Descriptor, tmp: &Path) -> Result<(), OciError> {
    let resp = src
        .registry
        .blob_stream(&src.image.repository, &desc.digest)
        .await?;
    let what = format!("base layer {} from {}", desc.digest, src.image);
    let mut body = VerifyingStream::new(resp.bytes_stream(), desc.clone(), what.clone());
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

/// `--oci DIR`: the image, its base's layers (checked) and ours, under `tag`.
pub async fn write_layout(
    dir: &Path,
    tag: &str,
    image: &Image,
    layers: &[BuiltLayer],
    base: Option<(&BaseSource, &[Descriptor])>,
) -> Result<(), OciError> {
    if let Some((source, base_layers)) = base {
        for l in base_layers {
            source.put_in_layout(l, dir).await?;
        }
    }
    let files: Vec<(Digest, PathBuf)> = layers
        .iter()
        .map(|l| (l.digest.clone(), l.path.clone()))
        .collect();
    let (out, tag, image) = (dir.to_owned(), tag.to_owned(), image.clone());
    tokio::task::spawn_blocking(move || {
        let blobs: Vec<(Digest, BlobSource<'_>)> = files
            .iter()
            .map(|(d, p)| (d.clone(), BlobSource::File(p.as_path())))
            .collect();
        layout::write(&out, &tag, &image, &blobs)
    })
    .await
    .map_err(|e| OciError::Invalid {
        what: "the layout writer".into(),
        detail: e.to_string(),
    })?
}

/// `--push REF`: base blobs (skipped, mounted, streamed or uploaded), our layers and the config
/// (skipped when present), then the manifest under the tag.
pub async fn push(
    target: &ImageRef,
    registry: &Registry,
    default_tag: &str,
    image: &Image,
    layers: &[BuiltLayer],
    base: Option<(&BaseSource, &[Descriptor])>,
) -> Result<PushReport, OciError> {
    let repo = target.repository.as_str();
    let mut report = PushReport::default();
    if let Some((source, base_layers)) = base {
        for l in base_layers {
            report.count(source.put_in_registry(l, registry, repo).await?);
        }
    }
    for l in layers {
        report.count(upload_if_missing(registry, repo, &l.digest, Payload::File(&l.path)).await?);
    }
    report.count(
        upload_if_missing(
            registry,
            repo,
            &image.config_desc.digest,
            Payload::Bytes(&image.config),
        )
        .await?,
    );
    let tag = target.tag.clone().unwrap_or_else(|| default_tag.to_owned());
    registry
        .put_manifest(repo, &tag, &image.manifest, MEDIA_MANIFEST)
        .await?;
    report.pushed = format!(
        "{}/{}:{tag}@{}",
        target.registry, repo, image.manifest_desc.digest
    );
    Ok(report)
}

async fn upload_if_missing(
    registry: &Registry,
    repo: &str,
    digest: &Digest,
    payload: Payload<'_>,
) -> Result<Transfer, OciError> {
    if registry.has_blob(repo, digest).await? {
        return Ok(Transfer::Skipped);
    }
    registry.upload(repo, digest, payload).await?;
    Ok(Transfer::Uploaded)
}

/// The file name extension of a layer of this media type.
pub fn layer_extension(media_type: &str) -> &'static str {
    match media_type {
        MEDIA_LAYER_GZIP => "tar.gz",
        MEDIA_LAYER_ZSTD => "tar.zst",
        _ => "tar",
    }
}

/// One entry of `layers.json`.
#[derive(Debug, Serialize)]
struct LayerFileEntry<'a> {
    file: String,
    digest: &'a Digest,
    diff_id: &'a Digest,
    size: u64,
    media_type: &'a str,
    repo: &'a str,
    commit: &'a str,
    part: &'a str,
}

/// `--layers DIR`: the layer files (hard-linked from the layer cache) plus `layers.json`.
pub fn write_layer_files(dir: &Path, layers: &[BuiltLayer]) -> Result<(), OciError> {
    std::fs::create_dir_all(dir).map_err(OciError::io(dir))?;
    let mut index = Vec::new();
    for (i, l) in layers.iter().enumerate() {
        let (part, parts) = l.part.split_once('/').unwrap_or(("1", "1"));
        let suffix = if parts == "1" {
            String::new()
        } else {
            format!("-part{part}of{parts}")
        };
        let name = format!(
            "{:02}-{}{suffix}.{}",
            i + 1,
            l.repo.replace('/', "--"),
            layer_extension(&l.media_type)
        );
        let dest = dir.join(&name);
        link_or_copy(&l.path, &dest, true).map_err(OciError::io(&dest))?;
        index.push(LayerFileEntry {
            file: name,
            digest: &l.digest,
            diff_id: &l.diff_id,
            size: l.size,
            media_type: &l.media_type,
            repo: &l.repo,
            commit: &l.commit,
            part: &l.part,
        });
    }
    let path = dir.join("layers.json");
    let json = serde_json::to_value(serde_json::json!({ "layers": index }))
        .and_then(|v| serde_json::to_vec_pretty(&v))
        .map_err(|e| OciError::Invalid {
            what: path.display().to_string(),
            detail: e.to_string(),
        })?;
    write_atomic(&path, &json, Mode::Fixed(0o644)).map_err(OciError::io(&path))
}
