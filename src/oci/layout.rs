//! The layout sink: writes one [`Artifact`] (an image, an index of images, or an artifact with
//! a `subject`) into an OCI image layout (`oci-layout`, `index.json`, `blobs/sha256/…`). Each
//! layer gets there the way its [`super::image::BlobSource`] says ([`super::transfer`]), every
//! blob once; the artifact is listed in `index.json` under its tag (an untagged artifact, such
//! as a referrer, is listed by digest), and other tags in the folder are kept. Reading a layout
//! is [`super::source::LayoutSource`]'s job.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

use super::ANNOTATION_REF_NAME;
use super::digest::Digest;
use super::error::OciError;
use super::image::Artifact;
use super::model::{Annotations, Descriptor, Index, canonical_json};
use super::source::{LayoutSource, blob_path};
use super::transfer;
use crate::fs_atomic::{Mode, write_atomic, write_if_different};
use crate::http_body::METADATA_LIMIT;

/// Writes `artifact` into the layout at `dir`: its layers (a layer shared by several images
/// once), its documents, and its entry in `index.json` under `tag` (`None`: listed by digest
/// only). A malformed `index.json` already there is refused rather than overwritten, so no
/// other tag is ever lost.
pub async fn write(dir: &Path, tag: Option<&str>, artifact: &Artifact) -> Result<(), OciError> {
    let mut done = BTreeSet::new();
    for image in artifact.images() {
        for layer in &image.layers {
            if done.insert(layer.desc.digest.clone()) {
                transfer::to_layout(&layer.source, &layer.desc, dir).await?;
            }
        }
    }
    let (out, tag, root) = (
        dir.to_owned(),
        tag.map(str::to_owned),
        artifact.root().clone(),
    );
    let docs: Vec<(Digest, Vec<u8>)> = artifact
        .documents()
        .into_iter()
        .map(|(d, b)| (d.clone(), b.to_vec()))
        .collect();
    tokio::task::spawn_blocking(move || write_listed(&out, tag.as_deref(), &root, &docs))
        .await
        .map_err(|e| OciError::Invalid {
            what: "the layout writer".into(),
            detail: e.to_string(),
        })?
}

/// Puts the small documents `docs` in the layout, then lists `root` in `index.json` under
/// `tag` (or by digest).
fn write_listed(
    dir: &Path,
    tag: Option<&str>,
    root: &Descriptor,
    docs: &[(Digest, Vec<u8>)],
) -> Result<(), OciError> {
    let blob_dir = dir.join("blobs/sha256");
    fs::create_dir_all(&blob_dir).map_err(OciError::io(&blob_dir))?;
    replace(
        &dir.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )?;
    for (digest, bytes) in docs {
        put_document(dir, digest, bytes)?;
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
    let mut ours = root.clone();
    match tag {
        Some(tag) => {
            manifests.retain(|m| m.annotation(ANNOTATION_REF_NAME) != Some(tag));
            ours.annotations = Some(Annotations::from([(
                ANNOTATION_REF_NAME.to_owned(),
                tag.to_owned(),
            )]));
        }
        None => manifests
            .retain(|m| m.digest != root.digest || m.annotation(ANNOTATION_REF_NAME).is_some()),
    }
    manifests.push(ours);
    // Tags first, by name; then untagged entries (referrers) in the order they came.
    manifests.sort_by_key(|m| {
        let tag = m.annotation(ANNOTATION_REF_NAME).map(str::to_owned);
        (tag.is_none(), tag)
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

/// Puts one document in place under a temporary name, then renames it: a reader never sees
/// half a blob. An existing regular file of the right size is kept (blobs are named by
/// content).
fn put_document(dir: &Path, digest: &Digest, bytes: &[u8]) -> Result<(), OciError> {
    let dest = blob_path(dir, digest);
    if fs::symlink_metadata(&dest).is_ok_and(|m| m.is_file() && m.len() == bytes.len() as u64) {
        return Ok(());
    }
    write_atomic(&dest, bytes, Mode::Fixed(0o644)).map_err(OciError::io(&dest))
}

/// Writes `bytes` to `path` unless it already holds them.
fn replace(path: &Path, bytes: &[u8]) -> Result<(), OciError> {
    write_if_different(path, bytes, Mode::Fixed(0o644))
        .map(|_| ())
        .map_err(OciError::io(path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::image::{Image, Metadata};
    use crate::oci::model::Manifest;
    use crate::oci::{MEDIA_MANIFEST, Platform};

    /// An artifact with a `subject` (a referrer, as attestations are) goes through the same
    /// sink as the image: listed by digest beside the tagged image, once however often it is
    /// written, and the tag still names the image.
    #[tokio::test]
    async fn a_referrer_is_listed_by_digest_beside_the_tagged_image() {
        let dir = tempfile::tempdir().unwrap();
        let platform = Platform::parse("linux/amd64").unwrap();
        let image = Image::build(None, &platform, &[], &[], &Metadata::default()).unwrap();
        let subject = image.manifest_desc.clone();
        write(dir.path(), Some("v1"), &Artifact::Image(Box::new(image)))
            .await
            .unwrap();

        let config = b"{}".to_vec();
        let manifest = Manifest {
            schema_version: 2,
            media_type: Some(MEDIA_MANIFEST.to_owned()),
            config: Descriptor::new(
                "application/vnd.oci.empty.v1+json",
                Digest::of(&config),
                config.len() as u64,
            ),
            layers: Vec::new(),
            annotations: None,
            extra: [
                (
                    "artifactType".to_owned(),
                    serde_json::json!("application/x.test"),
                ),
                (
                    "subject".to_owned(),
                    serde_json::to_value(&subject).unwrap(),
                ),
            ]
            .into_iter()
            .collect(),
        };
        let referrer = Image::assemble(None, &manifest, config, Vec::new()).unwrap();
        let referrer_digest = referrer.manifest_desc.digest.clone();
        let artifact = Artifact::Image(Box::new(referrer));
        write(dir.path(), None, &artifact).await.unwrap();
        write(dir.path(), None, &artifact).await.unwrap();

        let index = LayoutSource {
            dir: dir.path().to_owned(),
            tag: None,
        }
        .index()
        .unwrap();
        assert_eq!(index.manifests.len(), 2, "{:?}", index.manifests);
        let tagged: Vec<_> = index
            .manifests
            .iter()
            .filter(|m| m.annotation(ANNOTATION_REF_NAME) == Some("v1"))
            .collect();
        assert_eq!(tagged.len(), 1);
        assert_eq!(tagged[0].digest, subject.digest);
        let untagged: Vec<_> = index
            .manifests
            .iter()
            .filter(|m| m.annotation(ANNOTATION_REF_NAME).is_none())
            .collect();
        assert_eq!(untagged.len(), 1);
        assert_eq!(untagged[0].digest, referrer_digest);
        let stored = std::fs::read(blob_path(dir.path(), &referrer_digest)).unwrap();
        let parsed: serde_json::Value = serde_json::from_slice(&stored).unwrap();
        assert_eq!(parsed["subject"]["digest"], subject.digest.as_str());
    }
}
