//! The image as the sinks see it: typed [`Image`]s whose [`Layer`]s each know where their bytes
//! come from ([`BlobSource`]), an [`Index`] as a set of images, and [`Artifact`], the one thing a
//! sink takes. [`Image::build`] appends new layers, environment, labels and annotations to an
//! optional [`Base`]; [`Image::assemble`] makes an image of any manifest (an artifact with a
//! `subject`, a referrer, goes through the same sinks). JSON is serialised with sorted keys and
//! no timestamps of ours, so the same inputs always give the same digests. Nothing here knows
//! what the layers hold.

use std::path::PathBuf;
use std::sync::Arc;

use serde_json::{Value, json};

use super::digest::Digest;
use super::error::OciError;
use super::model::{Annotations, Descriptor, Manifest, canonical_json, string_list};
use super::source::{LayoutSource, RegistrySource};
use super::{MEDIA_CONFIG, MEDIA_INDEX, MEDIA_MANIFEST, Platform};

/// Where a layer's bytes are. The sinks decide from this alone how a layer reaches them:
/// linked or uploaded from a file, hashed and linked or uploaded from a layout, downloaded,
/// mounted or streamed from a registry (see `super::transfer`).
#[derive(Clone)]
pub enum BlobSource {
    /// A file this process made or already verified (a built layer): trusted by size.
    File(PathBuf),
    /// A blob of an OCI layout on disk (a base image): hashed before it is used.
    Layout(Arc<LayoutSource>),
    /// A blob of a repository in a registry (a base image, a cache repository): mounted when
    /// the target is the same registry, otherwise streamed and checked on the way.
    Registry(Arc<RegistrySource>),
    /// A file this process wrote and hashed for this image alone (an attestation document):
    /// trusted by size like [`BlobSource::File`], and removed when the last image holding it
    /// is dropped.
    Temp(Arc<tempfile::TempPath>),
}

impl std::fmt::Debug for BlobSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BlobSource::File(p) => write!(f, "File({})", p.display()),
            BlobSource::Layout(l) => write!(f, "Layout({})", l.dir.display()),
            BlobSource::Registry(r) => write!(f, "Registry({})", r.image),
            BlobSource::Temp(p) => write!(f, "Temp({})", p.display()),
        }
    }
}

/// What a layer is to the image, for reports and messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LayerRole {
    /// A layer inherited from the base image.
    Base,
    /// A layer added on top of the base: what it holds (`model/acme/tiny`) and which part of it
    /// (`1/2`).
    Added {
        /// What the layer holds.
        name: String,
        /// `part/parts`.
        part: String,
    },
}

/// One layer of an image: its descriptor as the manifest lists it, where its bytes are, and
/// what it is.
#[derive(Debug, Clone)]
pub struct Layer {
    /// The descriptor (media type, digest, size, annotations).
    pub desc: Descriptor,
    /// Where the bytes are.
    pub source: BlobSource,
    /// Base or added.
    pub role: LayerRole,
}

/// A layer to append to a base: the layer, the DiffID the config lists for it and its
/// `history` entry.
#[derive(Debug, Clone)]
pub struct NewLayer {
    /// The layer (its role is [`LayerRole::Added`]).
    pub layer: Layer,
    /// sha256 of the uncompressed tar.
    pub diff_id: Digest,
    /// The config's `history` entry for it.
    pub history: Value,
}

/// What an image is built on: the base's config and its layers (with their sources).
#[derive(Debug, Clone)]
pub struct Base {
    /// The digest of the base's manifest for the platform (what provenance and SBOMs name).
    pub digest: Option<Digest>,
    /// The base config JSON.
    pub config: Value,
    /// The base layers, media types already in OCI terms.
    pub layers: Vec<Layer>,
}

/// What the user asked to be written about the image: `config.Labels` entries and manifest
/// annotations. Empty (the default) writes neither, so images built without them keep their
/// digests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Metadata {
    /// Image config labels, merged over the base's (ours win on the same key).
    pub labels: Annotations,
    /// Manifest annotations.
    pub annotations: Annotations,
}

/// One image: config and manifest bytes with their descriptors, and every layer the manifest
/// lists (base layers first), each with its source.
#[derive(Debug, Clone)]
pub struct Image {
    /// The platform (`None` for an artifact that is no runnable image).
    pub platform: Option<Platform>,
    /// Config bytes.
    pub config: Vec<u8>,
    /// Config descriptor.
    pub config_desc: Descriptor,
    /// Manifest bytes.
    pub manifest: Vec<u8>,
    /// Manifest descriptor.
    pub manifest_desc: Descriptor,
    /// The layers, in manifest order.
    pub layers: Vec<Layer>,
}

/// A multi-platform image: one [`Image`] per platform and the image index listing them.
#[derive(Debug, Clone)]
pub struct Index {
    /// The per-platform images, in the index's order.
    pub images: Vec<Image>,
    /// Index bytes.
    pub index: Vec<u8>,
    /// Index descriptor.
    pub index_desc: Descriptor,
}

/// The one thing every sink takes: an image, or an index of images.
#[derive(Debug, Clone)]
pub enum Artifact {
    /// One manifest (an image, or an artifact such as a referrer).
    Image(Box<Image>),
    /// An index over one image per platform.
    Index(Box<Index>),
}

impl Artifact {
    /// The descriptor a tag points at: the manifest, or the index.
    pub fn root(&self) -> &Descriptor {
        match self {
            Artifact::Image(i) => &i.manifest_desc,
            Artifact::Index(i) => &i.index_desc,
        }
    }

    /// The images of the artifact (one, or one per platform).
    pub fn images(&self) -> &[Image] {
        match self {
            Artifact::Image(i) => std::slice::from_ref(i),
            Artifact::Index(i) => &i.images,
        }
    }

    /// Every small document (configs, manifests, the index) with its digest, index last.
    pub fn documents(&self) -> Vec<(&Digest, &[u8])> {
        let mut docs: Vec<(&Digest, &[u8])> = Vec::new();
        for img in self.images() {
            docs.push((&img.config_desc.digest, &img.config));
            docs.push((&img.manifest_desc.digest, &img.manifest));
        }
        if let Artifact::Index(i) = self {
            docs.push((&i.index_desc.digest, &i.index));
        }
        docs
    }
}

impl Image {
    /// An image of `manifest` (whose config descriptor must describe `config`) and `layers`
    /// (its layer descriptors with their sources, in order): the manifest serialised like
    /// every document we write. Any manifest fits, an artifact with a `subject` included.
    pub fn assemble(
        platform: Option<Platform>,
        manifest: &Manifest,
        config: Vec<u8>,
        layers: Vec<Layer>,
    ) -> Result<Image, OciError> {
        super::source::check_bytes(&manifest.config, &config, "the config")?;
        let manifest_bytes = canonical_json(manifest)?;
        let mut manifest_desc = Descriptor::new(
            manifest.media_type.as_deref().unwrap_or(MEDIA_MANIFEST),
            Digest::of(&manifest_bytes),
            manifest_bytes.len() as u64,
        );
        // A referrer is listed (in a referrers index, an OCI layout) with its artifact type and
        // annotations, so that readers can pick it without fetching it.
        if manifest.extra.contains_key("subject") {
            if let Some(t) = manifest.extra.get("artifactType") {
                manifest_desc.extra.insert("artifactType".into(), t.clone());
            }
            manifest_desc.annotations = manifest.annotations.clone();
        }
        Ok(Image {
            platform,
            config,
            config_desc: manifest.config.clone(),
            manifest: manifest_bytes,
            manifest_desc,
            layers,
        })
    }

    /// Builds config and manifest for `added` on `base` (or on nothing): the base's config with
    /// our environment (`env` entries replace same-named ones of the base, appended in the
    /// given order), labels, DiffIDs and history appended; the base's layers then ours.
    pub fn build(
        base: Option<&Base>,
        platform: &Platform,
        added: &[NewLayer],
        env: &[(String, String)],
        meta: &Metadata,
    ) -> Result<Image, OciError> {
        let config = build_config(base.map(|b| &b.config), platform, added, env, meta)?;
        let config_bytes = canonical_json(&config)?;
        let config_desc = Descriptor::new(
            MEDIA_CONFIG,
            Digest::of(&config_bytes),
            config_bytes.len() as u64,
        );
        let mut layers: Vec<Layer> = base.map(|b| b.layers.clone()).unwrap_or_default();
        layers.extend(added.iter().map(|l| l.layer.clone()));
        let manifest = Manifest {
            schema_version: 2,
            media_type: Some(MEDIA_MANIFEST.to_owned()),
            config: config_desc,
            layers: layers.iter().map(manifest_entry).collect(),
            annotations: (!meta.annotations.is_empty()).then(|| meta.annotations.clone()),
            extra: Default::default(),
        };
        Image::assemble(Some(platform.clone()), &manifest, config_bytes, layers)
    }
}

/// A layer's descriptor as our manifest lists it: media type, digest, size and the
/// annotations and platform it had. Other fields (`urls`…) are left out, as modelbake 0.1.0
/// did: keeping them would change the manifest bytes of existing bakes.
fn manifest_entry(layer: &Layer) -> Descriptor {
    Descriptor {
        extra: Default::default(),
        ..layer.desc.clone()
    }
}

/// The config of an image of `added` on a base with config `base` (or a fresh one for
/// `platform`).
fn build_config(
    base: Option<&Value>,
    platform: &Platform,
    added: &[NewLayer],
    env: &[(String, String)],
    meta: &Metadata,
) -> Result<Value, OciError> {
    let mut config = match base {
        Some(c) => c.clone(),
        None => {
            let mut c =
                json!({ "architecture": platform.architecture, "os": platform.os, "config": {} });
            if let Some(v) = &platform.variant {
                c["variant"] = json!(v);
            }
            c
        }
    };
    if !config.is_object() {
        return Err(OciError::Invalid {
            what: "the base image config".into(),
            detail: "it is not a JSON object".into(),
        });
    }
    if !config["config"].is_object() {
        config["config"] = json!({});
    }
    let mut vars: Vec<String> = string_list(&config["config"]["Env"]);
    vars.retain(|v| {
        !env.iter()
            .any(|(k, _)| v.split_once('=').map(|(name, _)| name) == Some(k.as_str()))
    });
    vars.extend(env.iter().map(|(k, v)| format!("{k}={v}")));
    config["config"]["Env"] = json!(vars);
    if !meta.labels.is_empty() {
        let labels = &mut config["config"]["Labels"];
        if !labels.is_object() {
            *labels = json!({});
        }
        for (k, v) in &meta.labels {
            labels[k] = json!(v);
        }
    }
    let mut diff_ids: Vec<Value> = config["rootfs"]["diff_ids"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    diff_ids.extend(added.iter().map(|l| json!(l.diff_id)));
    config["rootfs"] = json!({ "type": "layers", "diff_ids": diff_ids });
    let mut history: Vec<Value> = config["history"].as_array().cloned().unwrap_or_default();
    history.extend(added.iter().map(|l| l.history.clone()));
    config["history"] = json!(history);
    Ok(config)
}

impl Index {
    /// The image index over `images` (one manifest per platform, in the given order, each
    /// entry with its `platform`), serialised like every document we write.
    pub fn build(images: Vec<Image>) -> Result<Index, OciError> {
        let index = super::model::Index {
            schema_version: 2,
            media_type: Some(MEDIA_INDEX.to_owned()),
            manifests: images
                .iter()
                .map(|img| Descriptor {
                    platform: img.platform.as_ref().map(Platform::spec),
                    ..img.manifest_desc.clone()
                })
                .collect(),
            annotations: None,
            extra: Default::default(),
        };
        let bytes = canonical_json(&index)?;
        let index_desc = Descriptor::new(MEDIA_INDEX, Digest::of(&bytes), bytes.len() as u64);
        Ok(Index {
            images,
            index: bytes,
            index_desc,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Base {
        Base {
            digest: None,
            config: json!({
                "architecture": "amd64",
                "os": "linux",
                "config": { "Labels": { "maintainer": "base", "org.opencontainers.image.source": "https://base" } }
            }),
            layers: Vec::new(),
        }
    }

    fn platform() -> Platform {
        Platform::parse("linux/amd64").unwrap()
    }

    #[test]
    fn no_metadata_writes_no_labels_and_no_annotations() {
        let img = Image::build(None, &platform(), &[], &[], &Metadata::default()).unwrap();
        let config: Value = serde_json::from_slice(&img.config).unwrap();
        assert!(config["config"].get("Labels").is_none(), "{config}");
        let manifest: Value = serde_json::from_slice(&img.manifest).unwrap();
        assert!(manifest.get("annotations").is_none(), "{manifest}");
        // The base's labels pass through untouched.
        let on_base =
            Image::build(Some(&base()), &platform(), &[], &[], &Metadata::default()).unwrap();
        let config: Value = serde_json::from_slice(&on_base.config).unwrap();
        assert_eq!(
            config["config"]["Labels"],
            base().config["config"]["Labels"]
        );
    }

    #[test]
    fn labels_merge_over_the_base_and_annotations_go_on_the_manifest() {
        let meta = Metadata {
            labels: Annotations::from([
                (
                    "org.opencontainers.image.source".into(),
                    "https://github.com/acme/app".into(),
                ),
                ("team".into(), "ml".into()),
            ]),
            annotations: Annotations::from([(
                "org.opencontainers.image.version".into(),
                "1.2".into(),
            )]),
        };
        let img = Image::build(Some(&base()), &platform(), &[], &[], &meta).unwrap();
        let config: Value = serde_json::from_slice(&img.config).unwrap();
        assert_eq!(
            config["config"]["Labels"],
            json!({ "maintainer": "base", "org.opencontainers.image.source": "https://github.com/acme/app", "team": "ml" })
        );
        let manifest: Value = serde_json::from_slice(&img.manifest).unwrap();
        assert_eq!(
            manifest["annotations"],
            json!({ "org.opencontainers.image.version": "1.2" })
        );
        let plain =
            Image::build(Some(&base()), &platform(), &[], &[], &Metadata::default()).unwrap();
        assert_ne!(plain.manifest_desc.digest, img.manifest_desc.digest);
    }

    #[test]
    fn assemble_refuses_a_config_its_manifest_does_not_describe() {
        let config = b"{}".to_vec();
        let manifest = Manifest {
            schema_version: 2,
            media_type: Some(MEDIA_MANIFEST.to_owned()),
            config: Descriptor::new(MEDIA_CONFIG, Digest::of(b"{ }"), 3),
            layers: Vec::new(),
            annotations: None,
            extra: Default::default(),
        };
        assert!(Image::assemble(None, &manifest, config, Vec::new()).is_err());
    }
}
