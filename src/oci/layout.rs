//! Writing OCI image layouts (`oci-layout`, `index.json`, `blobs/sha256/…`): our image (or our
//! multi-platform index) under a tag, layer blobs hard-linked from the layer cache, other tags in the folder kept. Reading a
//! layout is [`super::source::LayoutSource`]'s job.

use std::fs;
use std::path::Path;

use super::ANNOTATION_REF_NAME;
use super::digest::Digest;
use super::error::OciError;
use super::image::{Image, IndexImage};
use super::model::{Annotations, Descriptor, Index, canonical_json};
use super::source::{LayoutSource, blob_path};
use crate::fs_atomic::{Mode, link_or_copy, write_atomic, write_if_different};
use crate::http_body::METADATA_LIMIT;

/// Where a blob to put in the layout comes from.
pub enum BlobSource<'a> {
    /// A file we produced or verified (hard-linked when possible, copied otherwise).
    File(&'a Path),
    /// Bytes in memory.
    Bytes(&'a [u8]),
}

/// Writes `image` (with `blobs`: every layer and base blob the layout needs) into `dir` under
/// `tag`; other tags already in the layout are kept. A malformed `index.json` already there is
/// refused rather than overwritten, so no other tag is ever lost.
pub fn write(
    dir: &Path,
    tag: &str,
    image: &Image,
    blobs: &[(Digest, BlobSource<'_>)],
) -> Result<(), OciError> {
    let docs = [
        (&image.config_desc.digest, image.config.as_slice()),
        (&image.manifest_desc.digest, image.manifest.as_slice()),
    ];
    write_tagged(dir, tag, &image.manifest_desc, &docs, blobs)
}

/// Writes a multi-platform image into `dir` under `tag`: every platform's config and manifest,
/// the index, and `blobs` (our layers once, every platform's base layers); the tag names the
/// index. Other tags are kept as [`write`] keeps them.
pub fn write_index(
    dir: &Path,
    tag: &str,
    image: &IndexImage,
    blobs: &[(Digest, BlobSource<'_>)],
) -> Result<(), OciError> {
    let mut docs: Vec<(&Digest, &[u8])> = Vec::new();
    for (_, img) in &image.images {
        docs.push((&img.config_desc.digest, &img.config));
        docs.push((&img.manifest_desc.digest, &img.manifest));
    }
    docs.push((&image.index_desc.digest, &image.index));
    write_tagged(dir, tag, &image.index_desc, &docs, blobs)
}

/// Puts `blobs` and the small documents `docs` in the layout, then points `tag` at `root`.
fn write_tagged(
    dir: &Path,
    tag: &str,
    root: &Descriptor,
    docs: &[(&Digest, &[u8])],
    blobs: &[(Digest, BlobSource<'_>)],
) -> Result<(), OciError> {
    let blob_dir = dir.join("blobs/sha256");
    fs::create_dir_all(&blob_dir).map_err(OciError::io(&blob_dir))?;
    replace(
        &dir.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )?;
    for (digest, source) in blobs {
        put_blob(dir, digest, source)?;
    }
    for (digest, bytes) in docs {
        put_blob(dir, digest, &BlobSource::Bytes(bytes))?;
    }

    let index_path = dir.join("index.json");
    let mut manifests = if index_path.exists() {
        let existing = LayoutSource {
            dir: dir.to_owned(),
            tag: None,
        };
        existing.index().map_err(|e| OciError::Invalid {
            what: index_path.display().to_string(),
            detail: format!(
                "{e}; refusing to overwrite it (other tags would be lost): choose an empty folder for --oci"
            ),
        })?
        .manifests
    } else {
        Vec::new()
    };
    manifests.retain(|m| m.annotation(ANNOTATION_REF_NAME) != Some(tag));
    let mut ours = root.clone();
    ours.annotations = Some(Annotations::from([(
        ANNOTATION_REF_NAME.to_owned(),
        tag.to_owned(),
    )]));
    manifests.push(ours);
    manifests.sort_by(|a, b| {
        a.annotation(ANNOTATION_REF_NAME)
            .cmp(&b.annotation(ANNOTATION_REF_NAME))
    });
    let index = Index {
        schema_version: 2,
        media_type: Some(super::MEDIA_INDEX.to_owned()),
        manifests,
        annotations: None,
        extra: Default::default(),
    };
    let bytes = canonical_json(&index)?;
    if bytes.len() as u64 > METADATA_LIMIT {
        return Err(OciError::Invalid {
            what: index_path.display().to_string(),
            detail: "it would exceed 4 MiB: remove old tags from this layout".into(),
        });
    }
    replace(&index_path, &bytes)
}

/// Puts one blob in place under a temporary name, then renames it: a reader never sees half a
/// blob. An existing regular file of the right size is kept (blobs are named by content).
fn put_blob(dir: &Path, digest: &Digest, source: &BlobSource<'_>) -> Result<(), OciError> {
    let dest = blob_path(dir, digest);
    let size = match source {
        BlobSource::File(p) => fs::metadata(p).map_err(OciError::io(*p))?.len(),
        BlobSource::Bytes(b) => b.len() as u64,
    };
    if fs::symlink_metadata(&dest).is_ok_and(|m| m.is_file() && m.len() == size) {
        return Ok(());
    }
    match source {
        BlobSource::File(p) => link_or_copy(p, &dest, true).map(|_| ()),
        BlobSource::Bytes(b) => write_atomic(&dest, b, Mode::Fixed(0o644)),
    }
    .map_err(OciError::io(&dest))
}

fn replace(path: &Path, bytes: &[u8]) -> Result<(), OciError> {
    write_if_different(path, bytes, Mode::Fixed(0o644))
        .map(|_| ())
        .map_err(OciError::io(path))
}
