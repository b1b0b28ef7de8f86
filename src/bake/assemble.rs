//! Step 3 of a bake: the image itself. For each platform the base is read (manifest and
//! config only, [`crate::oci::source::read_base`]), its cache variables pointed at the baked
//! cache ([`super::image_env::correct_base`]), and one [`Image`] built with our layers; several
//! platforms make an [`Index`]. Our layers carry their source: the layer cache's file, or the
//! cache repository for a layer known only by its record.

use std::sync::Arc;

use serde_json::json;

use super::image_env::{correct_base, env_for};
use super::layer_cache::BuiltLayer;
use super::{ANNOTATION_COMMIT, ANNOTATION_PART, ANNOTATION_REPO, BakeError, BakeReport};
use super::{PlatformReport, layer_cache};
use crate::loaders::Correction;
use crate::manifest::bake_table::BakeSettings;
use crate::oci::image::{
    Artifact, Base, BlobSource, Image, Index, Layer, LayerRole, Metadata, NewLayer,
};
use crate::oci::model::{Annotations, Descriptor};
use crate::oci::source::{RegistrySource, read_base};
use crate::oci::{OciError, Platform};

/// The assembled artifact and what the report says about it.
pub struct Assembled {
    /// One image, or an index for several platforms.
    pub artifact: Artifact,
    /// Base cache variables pointed at the baked cache (of the first platform).
    pub corrected: Vec<Correction>,
    /// Layers each platform's base has, in platform order.
    pub base_layers: Vec<usize>,
    /// Each platform's base manifest digest (`None` without a base), in platform order.
    pub bases: Vec<Option<crate::oci::digest::Digest>>,
}

impl Assembled {
    /// The report of a bake that made this artifact from `layers` (outputs not yet filled in).
    pub fn report(&self, layers: &[BuiltLayer]) -> BakeReport {
        let images = self.artifact.images();
        let mut report = BakeReport {
            reused: layers.iter().filter(|l| l.reused).count(),
            built: layers.iter().filter(|l| !l.reused).count(),
            base_layers: self.base_layers.first().copied().unwrap_or(0),
            layers: layers.to_vec(),
            env_corrected: self.corrected.clone(),
            platforms: images
                .iter()
                .zip(&self.base_layers)
                .map(|(img, base_layers)| PlatformReport {
                    platform: img
                        .platform
                        .as_ref()
                        .map(Platform::to_string)
                        .unwrap_or_default(),
                    manifest_digest: img.manifest_desc.digest.to_string(),
                    config_digest: img.config_desc.digest.to_string(),
                    base_layers: *base_layers,
                })
                .collect(),
            manifest_digest: self.artifact.root().digest.to_string(),
            ..Default::default()
        };
        match &self.artifact {
            Artifact::Image(img) => report.config_digest = img.config_desc.digest.to_string(),
            Artifact::Index(index) => {
                report.index_digest = Some(index.index_desc.digest.to_string());
            }
        }
        report
    }
}

/// Builds the image for each of `platforms` from `layers` on the settings' base; `records` is
/// where layers without a local file live (the cache repository).
pub async fn assemble(
    settings: &BakeSettings,
    platforms: &[Platform],
    layers: &[BuiltLayer],
    records: Option<Arc<RegistrySource>>,
    insecure: bool,
) -> Result<Assembled, BakeError> {
    let added = layers
        .iter()
        .map(|l| new_layer(l, records.as_ref()))
        .collect::<Result<Vec<_>, _>>()?;
    let env = env_for(settings);
    let meta = Metadata {
        labels: settings.labels.clone(),
        annotations: settings.annotations.clone(),
    };
    let strict = platforms.len() > 1;
    let mut images = Vec::new();
    let mut corrected = Vec::new();
    let mut base_layers = Vec::new();
    let mut bases = Vec::new();
    for platform in platforms {
        let mut base = match &settings.base {
            Some(reference) => Some(load_base(reference, platform, insecure, strict).await?),
            None => None,
        };
        let fixed = base
            .as_mut()
            .map(|b| correct_base(&mut b.config, &env))
            .unwrap_or_default();
        if images.is_empty() {
            corrected = fixed;
        }
        base_layers.push(base.as_ref().map_or(0, |b| b.layers.len()));
        bases.push(base.as_ref().and_then(|b| b.digest.clone()));
        images.push(Image::build(base.as_ref(), platform, &added, &env, &meta)?);
    }
    let artifact = if strict {
        Artifact::Index(Box::new(Index::build(images)?))
    } else {
        let image = images.pop().ok_or_else(|| OciError::Invalid {
            what: "the platform list".into(),
            detail: "it names no platform".into(),
        })?;
        Artifact::Image(Box::new(image))
    };
    Ok(Assembled {
        artifact,
        corrected,
        base_layers,
        bases,
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

/// One of our layers as the OCI core sees it: its descriptor, its source (the layer cache's
/// file, or `records` for a layer only recorded there) and its history entry.
fn new_layer(
    layer: &BuiltLayer,
    records: Option<&Arc<RegistrySource>>,
) -> Result<NewLayer, OciError> {
    let source = match records {
        Some(src) if layer_cache::is_remote(layer) => BlobSource::Registry(src.clone()),
        _ if layer_cache::is_remote(layer) => {
            return Err(OciError::Invalid {
                what: format!("the {} layer {}", layer.repo, layer.part),
                detail: "it has neither a file in the layer cache nor a cache repository".into(),
            });
        }
        _ => BlobSource::File(layer.path.clone()),
    };
    Ok(NewLayer {
        layer: Layer {
            desc: layer_descriptor(layer),
            source,
            role: LayerRole::Added {
                name: layer.repo.clone(),
                part: layer.part.clone(),
            },
        },
        diff_id: layer.diff_id.clone(),
        history: json!({
            "created_by": format!("modelbake bake: {}@{} (layer {})", layer.repo, layer.commit, layer.part),
            "comment": "modelbake",
        }),
    })
}

/// Reads the base for `platform`. With `strict` (a multi-platform bake), a base whose config
/// names another os/architecture than `platform` (a single-platform base) is refused instead
/// of being used for every platform.
async fn load_base(
    reference: &str,
    platform: &Platform,
    insecure: bool,
    strict: bool,
) -> Result<Base, OciError> {
    let base = read_base(reference, platform, insecure).await?;
    let (os, arch) = (
        base.config["os"].as_str().unwrap_or_default(),
        base.config["architecture"].as_str().unwrap_or_default(),
    );
    if strict && (os != platform.os || arch != platform.architecture) {
        return Err(OciError::Invalid {
            what: format!("the base `{reference}`"),
            detail: format!(
                "its {platform} image is built for {os}/{arch}: a multi-platform bake needs a \
                 base that is an index with a manifest per platform (or bake one platform)"
            ),
        });
    }
    Ok(base)
}
