//! OCI 1.1 referrers: small artifacts (signatures, SBOMs, attestations) attached to an image
//! by a manifest whose `subject` names it. [`artifact`] makes one from a document; [`attach`]
//! pushes it to a registry and makes it findable, through the referrers API where the registry
//! indexes subjects itself (it answers `OCI-Subject`), else through the referrers tag schema
//! (an image index tagged `sha256-<hex>` that lists every referrer of that digest, which
//! registries without the API need: Distribution 2.x, GHCR, Docker Hub). In an OCI layout a
//! referrer is listed by digest in `index.json` ([`super::layout::write`] with no tag).
//! [`list_registry`] and [`list_layout`] find the referrers of a digest again.

use std::sync::Arc;

use super::digest::Digest;
use super::error::OciError;
use super::image::{Artifact, BlobSource, Image, Layer, LayerRole};
use super::model::{Annotations, Descriptor, Document, Index, Manifest, canonical_json};
use super::registry::Registry;
use super::source::{ImageSource, LayoutSource};
use super::{ANNOTATION_REF_NAME, MEDIA_INDEX, MEDIA_MANIFEST, transfer};
use crate::http_body::METADATA_LIMIT;

/// The OCI empty descriptor's media type: the config of an artifact that has none.
pub const MEDIA_EMPTY: &str = "application/vnd.oci.empty.v1+json";
/// The empty config blob (`{}`).
pub const EMPTY_CONFIG: &[u8] = b"{}";

/// The descriptor of [`EMPTY_CONFIG`].
pub fn empty_config() -> Descriptor {
    Descriptor::new(
        MEDIA_EMPTY,
        Digest::of(EMPTY_CONFIG),
        EMPTY_CONFIG.len() as u64,
    )
}

/// One document to attach to a subject.
#[derive(Debug, Clone)]
pub struct Referrer {
    /// The manifest's `artifactType` (what readers filter on).
    pub artifact_type: String,
    /// The media type of the one layer holding the document.
    pub media_type: String,
    /// The document.
    pub document: ReferrerBody,
    /// Manifest annotations (copied into the referrers index entry).
    pub annotations: Annotations,
}

/// A referrer's document: a file this process wrote and hashed (an SBOM of 100,000 files is
/// tens of MB, so documents are not held in memory).
#[derive(Debug, Clone)]
pub struct ReferrerBody {
    /// The file, removed when the last clone is dropped.
    pub path: Arc<tempfile::TempPath>,
    /// Its digest, taken while it was written.
    pub digest: Digest,
    /// Its length.
    pub size: u64,
}

/// The referrer manifest for `document` attached to `subject`: an empty config, one layer
/// holding the document, no timestamps, so the same document gives the same digest.
pub fn artifact(subject: &Descriptor, document: &Referrer) -> Result<Image, OciError> {
    let body = &document.document;
    let layer_desc = Descriptor::new(&document.media_type, body.digest.clone(), body.size);
    let subject = Descriptor::new(&subject.media_type, subject.digest.clone(), subject.size);
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(MEDIA_MANIFEST.to_owned()),
        config: empty_config(),
        layers: vec![layer_desc.clone()],
        annotations: (!document.annotations.is_empty()).then(|| document.annotations.clone()),
        extra: [
            (
                "artifactType".to_owned(),
                serde_json::json!(document.artifact_type),
            ),
            (
                "subject".to_owned(),
                serde_json::to_value(&subject).map_err(|e| OciError::Invalid {
                    what: "a referrer's subject".into(),
                    detail: e.to_string(),
                })?,
            ),
        ]
        .into_iter()
        .collect(),
    };
    let layer = Layer {
        desc: layer_desc,
        source: BlobSource::Temp(body.path.clone()),
        role: LayerRole::Added {
            name: document.artifact_type.clone(),
            part: "1/1".into(),
        },
    };
    Image::assemble(None, &manifest, EMPTY_CONFIG.to_vec(), vec![layer])
}

/// The tag the referrers tag schema lists the referrers of `subject` under: `sha256-<hex>`.
pub fn fallback_tag(subject: &Digest) -> String {
    subject.as_str().replacen(':', "-", 1)
}

/// How an attached referrer can be found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Listed {
    /// The registry indexed it (referrers API).
    Api,
    /// Added to the `sha256-<hex>` index now.
    TagAdded,
    /// Already listed in the `sha256-<hex>` index: nothing changed.
    TagPresent,
}

/// Pushes `referrer` (an [`artifact`] attached to `subject`) to `repo` by digest and makes it
/// findable: nothing more where the registry indexed the subject, else its descriptor added to
/// the referrers tag's index unless it is listed already (so attaching twice changes nothing).
pub async fn attach(
    registry: &Registry,
    repo: &str,
    subject: &Digest,
    referrer: &Image,
) -> Result<Listed, OciError> {
    let none = |_: u64| {};
    transfer::bytes_to_registry(
        &referrer.config,
        &referrer.config_desc,
        registry,
        repo,
        &none,
    )
    .await?;
    for layer in &referrer.layers {
        transfer::to_registry(&layer.source, &layer.desc, registry, repo, &none).await?;
    }
    let digest = &referrer.manifest_desc.digest;
    if registry
        .put_referrer(repo, digest, subject, &referrer.manifest)
        .await?
    {
        return Ok(Listed::Api);
    }
    let tag = fallback_tag(subject);
    let mut index = match registry.index_if_exists(repo, &tag, METADATA_LIMIT).await? {
        Some(bytes) => parse_index(&bytes, &format!("the referrers index {tag}"))?,
        None => empty_index(),
    };
    if index.manifests.iter().any(|m| &m.digest == digest) {
        return Ok(Listed::TagPresent);
    }
    index.manifests.push(referrer.manifest_desc.clone());
    let bytes = canonical_json(&index)?;
    registry
        .put_manifest(repo, &tag, &bytes, MEDIA_INDEX)
        .await?;
    Ok(Listed::TagAdded)
}

/// The referrers of `subject` in `repo`: from the referrers API, else from the referrers tag's
/// index (none when neither exists). Entries carry `artifactType` and annotations.
pub async fn list_registry(
    registry: &Registry,
    repo: &str,
    subject: &Digest,
) -> Result<Vec<Descriptor>, OciError> {
    let what = format!("the referrers of {subject}");
    let bytes = match registry
        .referrers_api(repo, subject, METADATA_LIMIT)
        .await?
    {
        Some(bytes) => bytes,
        None => match registry
            .index_if_exists(repo, &fallback_tag(subject), METADATA_LIMIT)
            .await?
        {
            Some(bytes) => bytes,
            None => return Ok(Vec::new()),
        },
    };
    Ok(parse_index(&bytes, &what)?.manifests)
}

/// The referrers of `subject` in the OCI layout at `dir`: the untagged manifests of
/// `index.json` whose `subject` is it (each read and checked against its digest).
pub async fn list_layout(
    dir: &std::path::Path,
    subject: &Digest,
) -> Result<Vec<Descriptor>, OciError> {
    let src = LayoutSource {
        dir: dir.to_owned(),
        tag: None,
    };
    let mut found = Vec::new();
    for entry in src.index()?.manifests {
        if entry.annotation(ANNOTATION_REF_NAME).is_some() || entry.media_type != MEDIA_MANIFEST {
            continue;
        }
        let what = format!("the manifest {} of {}", entry.digest, src.label());
        let bytes = src.small_blob(&entry, METADATA_LIMIT, &what).await?;
        if let Document::Manifest(m) = Document::parse(&bytes, Some(&entry.media_type), &what)?
            && m.extra.get("subject").and_then(|s| s["digest"].as_str()) == Some(subject.as_str())
        {
            found.push(entry);
        }
    }
    Ok(found)
}

/// An index with no entries.
fn empty_index() -> Index {
    Index {
        schema_version: 2,
        media_type: Some(MEDIA_INDEX.to_owned()),
        manifests: Vec::new(),
        annotations: None,
        extra: Default::default(),
    }
}

/// `bytes` as an image index.
fn parse_index(bytes: &[u8], what: &str) -> Result<Index, OciError> {
    match Document::parse(bytes, Some(MEDIA_INDEX), what)? {
        Document::Index(index) => Ok(index),
        Document::Manifest(_) => Err(OciError::Invalid {
            what: what.to_owned(),
            detail: "an image manifest where an index belongs".into(),
        }),
    }
}

/// Attaches `referrers` to the OCI layout at `dir` (each listed by digest).
pub async fn attach_layout(dir: &std::path::Path, referrers: &[Image]) -> Result<(), OciError> {
    for r in referrers {
        super::layout::write(dir, None, &Artifact::Image(Box::new(r.clone()))).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::Platform;
    use crate::oci::image::Metadata;

    fn body(text: &str) -> ReferrerBody {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut file, text.as_bytes()).unwrap();
        ReferrerBody {
            path: Arc::new(file.into_temp_path()),
            digest: Digest::of(text.as_bytes()),
            size: text.len() as u64,
        }
    }

    fn document(text: &str) -> Referrer {
        Referrer {
            artifact_type: "application/x.test".into(),
            media_type: "application/x.test".into(),
            document: body(text),
            annotations: Annotations::from([("k".to_owned(), "v".to_owned())]),
        }
    }

    #[test]
    fn a_referrer_names_its_subject_and_lists_with_its_type_and_annotations() {
        let platform = Platform::parse("linux/amd64").unwrap();
        let image = Image::build(None, &platform, &[], &[], &Metadata::default()).unwrap();
        let r = artifact(&image.manifest_desc, &document("sbom")).unwrap();
        let m: serde_json::Value = serde_json::from_slice(&r.manifest).unwrap();
        assert_eq!(m["subject"]["digest"], image.manifest_desc.digest.as_str());
        assert_eq!(m["artifactType"], "application/x.test");
        assert_eq!(m["config"]["mediaType"], MEDIA_EMPTY);
        assert_eq!(m["layers"][0]["digest"], Digest::of(b"sbom").as_str());
        assert_eq!(r.manifest_desc.extra["artifactType"], "application/x.test");
        assert_eq!(r.manifest_desc.annotation("k"), Some("v"));
        // Same document, same digest; another document, another one.
        let again = artifact(&image.manifest_desc, &document("sbom")).unwrap();
        assert_eq!(again.manifest_desc.digest, r.manifest_desc.digest);
        let other = artifact(&image.manifest_desc, &document("sbom2")).unwrap();
        assert_ne!(other.manifest_desc.digest, r.manifest_desc.digest);
        assert_eq!(
            fallback_tag(&r.manifest_desc.digest),
            format!("sha256-{}", r.manifest_desc.digest.hex())
        );
    }

    #[tokio::test]
    async fn a_layout_lists_the_referrers_of_each_subject_only() {
        let dir = tempfile::tempdir().unwrap();
        let platform = Platform::parse("linux/amd64").unwrap();
        let image = Image::build(None, &platform, &[], &[], &Metadata::default()).unwrap();
        let subject = image.manifest_desc.clone();
        crate::oci::layout::write(dir.path(), Some("v1"), &Artifact::Image(Box::new(image)))
            .await
            .unwrap();
        let a = artifact(&subject, &document("a")).unwrap();
        let b = artifact(&subject, &document("b")).unwrap();
        let elsewhere = artifact(&a.manifest_desc, &document("c")).unwrap();
        attach_layout(dir.path(), &[a.clone(), b.clone(), elsewhere, a.clone()])
            .await
            .unwrap();
        let mut found: Vec<Digest> = list_layout(dir.path(), &subject.digest)
            .await
            .unwrap()
            .into_iter()
            .map(|d| d.digest)
            .collect();
        found.sort();
        let mut want = vec![
            a.manifest_desc.digest.clone(),
            b.manifest_desc.digest.clone(),
        ];
        want.sort();
        assert_eq!(found, want);
        // The referrer's layer is in the layout.
        assert!(crate::oci::source::blob_path(dir.path(), &Digest::of(b"a")).is_file());
    }
}
