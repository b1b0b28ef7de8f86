//! The image config and manifest: the base's (if any) with our layers, DiffIDs, history and
//! environment appended; for several platforms, one such image per platform and the image
//! index over them ([`build_index`]). JSON is serialised with sorted keys and no timestamps of ours, so the
//! same inputs always give the same digests.

use serde_json::{Value, json};

use super::digest::Digest;
use super::error::OciError;
use super::layer::BuiltLayer;
use super::model::{Annotations, Descriptor, Index, Manifest, canonical_json};
use super::{
    ANNOTATION_COMMIT, ANNOTATION_PART, ANNOTATION_REPO, MEDIA_CONFIG, MEDIA_INDEX, MEDIA_MANIFEST,
    Platform,
};
use crate::loaders::{self, Correction};
use crate::manifest::{BakeSettings, ImageLayout};

/// What the image is built on.
#[derive(Debug, Clone)]
pub struct Base {
    /// The base config JSON.
    pub config: Value,
    /// The base layers, media types already in OCI terms.
    pub layers: Vec<Descriptor>,
}

/// The finished config and manifest, with their descriptors.
#[derive(Debug, Clone)]
pub struct Image {
    /// Config bytes.
    pub config: Vec<u8>,
    /// Config descriptor.
    pub config_desc: Descriptor,
    /// Manifest bytes.
    pub manifest: Vec<u8>,
    /// Manifest descriptor.
    pub manifest_desc: Descriptor,
    /// Base-image cache variables pointed at the baked cache, one per variable.
    pub corrected: Vec<Correction>,
}

/// What the user asked to be written about the image: `config.Labels` entries and manifest
/// annotations (`[bake] labels`/`annotations`, `--label`, `--annotation`). Empty (the default)
/// writes neither, so images baked without them keep their digests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Metadata {
    /// Image config labels, merged over the base's (ours win on the same key).
    pub labels: Annotations,
    /// Manifest annotations.
    pub annotations: Annotations,
}

/// Environment variables the image gets.
pub fn image_env(hf_home: &str, offline: bool) -> Vec<(String, String)> {
    let mut env = vec![("HF_HOME".to_owned(), hf_home.to_owned())];
    if offline {
        env.push(("HF_HUB_OFFLINE".to_owned(), "1".to_owned()));
    }
    env
}

/// Environment variables an image baked with `settings` gets: [`image_env`] for the
/// `hf-cache` layout; for the `files` layout only the offline switch (there is no cache for
/// `HF_HOME` to point at, and a base's cache variables are left alone).
pub fn env_for(settings: &BakeSettings) -> Vec<(String, String)> {
    match settings.layout {
        ImageLayout::HfCache => image_env(&settings.hf_home, settings.offline_env),
        ImageLayout::Files => {
            let mut env = image_env(&settings.hf_home, settings.offline_env);
            env.retain(|(k, _)| k != "HF_HOME");
            env
        }
    }
}

/// A multi-platform image: one [`Image`] per platform (all with the same model layers) and
/// the image index listing their manifests.
#[derive(Debug, Clone)]
pub struct IndexImage {
    /// The per-platform images, in the index's order.
    pub images: Vec<(Platform, Image)>,
    /// Index bytes.
    pub index: Vec<u8>,
    /// Index descriptor.
    pub index_desc: Descriptor,
}

/// The image index over `images` (one manifest per platform, in the given order, each entry
/// with its `platform`), serialised like every document we write.
pub fn build_index(images: Vec<(Platform, Image)>) -> Result<IndexImage, OciError> {
    let index = Index {
        schema_version: 2,
        media_type: Some(MEDIA_INDEX.to_owned()),
        manifests: images
            .iter()
            .map(|(p, img)| Descriptor {
                platform: Some(p.spec()),
                ..img.manifest_desc.clone()
            })
            .collect(),
        annotations: None,
        extra: Default::default(),
    };
    let bytes = canonical_json(&index)?;
    let index_desc = Descriptor::new(MEDIA_INDEX, Digest::of(&bytes), bytes.len() as u64);
    Ok(IndexImage {
        images,
        index: bytes,
        index_desc,
    })
}

/// The descriptor of one of our layers, annotated with its repo, commit and part.
pub fn layer_descriptor(layer: &BuiltLayer) -> Descriptor {
    let annotations = Annotations::from([
        (ANNOTATION_REPO.to_owned(), layer.repo.clone()),
        (ANNOTATION_COMMIT.to_owned(), layer.commit.clone()),
        (ANNOTATION_PART.to_owned(), layer.part.clone()),
    ]);
    Descriptor {
        annotations: Some(annotations),
        ..Descriptor::new(&layer.media_type, layer.digest.clone(), layer.size)
    }
}

/// A base layer's descriptor as our manifest lists it: media type, digest, size and the
/// annotations and platform it had. Other fields (`urls`…) are left out, as modelbake 0.1.0 did:
/// keeping them would change the manifest bytes of existing bakes.
fn base_layer_descriptor(d: &Descriptor) -> Descriptor {
    Descriptor {
        extra: Default::default(),
        ..d.clone()
    }
}

/// Builds config and manifest for `layers` on `base` (or on nothing).
pub fn build(
    base: Option<&Base>,
    platform: &Platform,
    layers: &[BuiltLayer],
    env: &[(String, String)],
    meta: &Metadata,
) -> Result<Image, OciError> {
    let mut config = match base {
        Some(b) => b.config.clone(),
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
    // Environment: the base's cache variables that would send a loader away from the baked
    // cache are pointed at it in place; ours replace same-named entries of the base, appended
    // in a fixed order.
    let mut vars: Vec<String> = super::model::string_list(&config["config"]["Env"]);
    let corrected = match env.iter().find(|(k, _)| k == "HF_HOME") {
        Some((_, home)) => {
            loaders::correct(&mut vars, &format!("{}/hub", home.trim_end_matches('/')))
        }
        None => Vec::new(),
    };
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
    diff_ids.extend(layers.iter().map(|l| json!(l.diff_id)));
    config["rootfs"] = json!({ "type": "layers", "diff_ids": diff_ids });
    let mut history: Vec<Value> = config["history"].as_array().cloned().unwrap_or_default();
    history.extend(layers.iter().map(|l| {
        json!({ "created_by": format!("modelbake bake: {}@{} (layer {})", l.repo, l.commit, l.part), "comment": "modelbake" })
    }));
    config["history"] = json!(history);

    let config_bytes = canonical_json(&config)?;
    let config_desc = Descriptor::new(
        MEDIA_CONFIG,
        Digest::of(&config_bytes),
        config_bytes.len() as u64,
    );
    let mut all_layers: Vec<Descriptor> = base
        .map(|b| b.layers.iter().map(base_layer_descriptor).collect())
        .unwrap_or_default();
    all_layers.extend(layers.iter().map(layer_descriptor));
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(MEDIA_MANIFEST.to_owned()),
        config: config_desc.clone(),
        layers: all_layers,
        annotations: (!meta.annotations.is_empty()).then(|| meta.annotations.clone()),
        extra: Default::default(),
    };
    let manifest_bytes = canonical_json(&manifest)?;
    let manifest_desc = Descriptor::new(
        MEDIA_MANIFEST,
        Digest::of(&manifest_bytes),
        manifest_bytes.len() as u64,
    );
    Ok(Image {
        config: config_bytes,
        config_desc,
        manifest: manifest_bytes,
        manifest_desc,
        corrected,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Base {
        Base {
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
        let img = build(None, &platform(), &[], &[], &Metadata::default()).unwrap();
        let config: Value = serde_json::from_slice(&img.config).unwrap();
        assert!(config["config"].get("Labels").is_none(), "{config}");
        let manifest: Value = serde_json::from_slice(&img.manifest).unwrap();
        assert!(manifest.get("annotations").is_none(), "{manifest}");
        // The base's labels pass through untouched.
        let on_base = build(Some(&base()), &platform(), &[], &[], &Metadata::default()).unwrap();
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
        let img = build(Some(&base()), &platform(), &[], &[], &meta).unwrap();
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
        let plain = build(Some(&base()), &platform(), &[], &[], &Metadata::default()).unwrap();
        assert_ne!(plain.manifest_desc.digest, img.manifest_desc.digest);
    }
}
