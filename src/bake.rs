//! The `bake` engine, a thin orchestration over [`crate::oci`]: layers for every locked repo
//! (built or reused from the layer cache), the base read from its source, one image built, and
//! that image handed to each requested sink (layer files, an OCI layout, a registry push that
//! never unpacks base layers).

use std::path::PathBuf;

use futures::{StreamExt, TryStreamExt, stream};
use serde::Serialize;

use crate::loaders::Correction;
use crate::lock::Lockfile;
use crate::manifest::BakeSettings;
use crate::oci::image::{self, Base};
use crate::oci::layer::{self, BuiltLayer, LayerFormat};
use crate::oci::reference::ImageRef;
use crate::oci::registry::Registry;
use crate::oci::sink::{self, BaseSource, BlobReport, PushObserver, PushOptions};
use crate::oci::source::{self, LayoutSource, RegistrySource};
use crate::oci::tar::Stamp;
use crate::oci::{OciError, Platform};
use crate::store::Store;

/// What to bake and where to put it.
#[derive(Debug, Clone)]
pub struct BakeOptions {
    /// Layout, owner, compression, base, platform, split size.
    pub settings: BakeSettings,
    /// mtime of every entry (`SOURCE_DATE_EPOCH`, else 0).
    pub mtime: u64,
    /// `--layers DIR`.
    pub layers_dir: Option<PathBuf>,
    /// `--oci DIR`.
    pub oci_dir: Option<PathBuf>,
    /// `--push REF`.
    pub push: Option<ImageRef>,
    /// Tag in the OCI layout (and for a push without a tag).
    pub tag: String,
    /// Plain-http registries allowed.
    pub insecure: bool,
    /// Layers built at once.
    pub jobs: usize,
    /// Blobs pushed at once.
    pub push_jobs: usize,
}

/// The mtime of every baked entry: `SOURCE_DATE_EPOCH` (reproducible-builds.org), else 0.
pub fn mtime_from_env(env: &dyn Fn(&str) -> Option<String>) -> Result<u64, String> {
    match env("SOURCE_DATE_EPOCH") {
        Some(v) if !v.trim().is_empty() => v
            .trim()
            .parse()
            .map_err(|_| format!("SOURCE_DATE_EPOCH=`{v}` is not a number of seconds")),
        _ => Ok(0),
    }
}

/// What a bake did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct BakeReport {
    /// Our layers, in image order.
    pub layers: Vec<BuiltLayer>,
    /// Layers taken from the layer cache.
    pub reused: usize,
    /// Layers built now.
    pub built: usize,
    /// Layers inherited from the base.
    pub base_layers: usize,
    /// The image config digest.
    pub config_digest: String,
    /// The image manifest digest.
    pub manifest_digest: String,
    /// Where the OCI layout went.
    pub oci: Option<PathBuf>,
    /// Where the layer files went.
    pub layers_dir: Option<PathBuf>,
    /// The pushed reference.
    pub pushed: Option<String>,
    /// Blobs uploaded by the push.
    pub uploaded: usize,
    /// Blobs the registry already had.
    pub skipped: usize,
    /// Base blobs mounted from the base repository.
    pub mounted: usize,
    /// Base blobs streamed from another registry.
    pub copied: usize,
    /// Every blob of the push with what was done with it (empty without `--push`).
    pub blobs: Vec<BlobReport>,
    /// Bytes the push sent.
    pub bytes_sent: u64,
    /// Warnings about the push target (layers above sizes known to fail there).
    pub push_warnings: Vec<String>,
    /// Base-image cache variables pointed at the baked cache (each one a warning).
    pub env_corrected: Vec<Correction>,
}

/// Runs a bake. `on_layer` is told about each layer as it is ready, `on_push` about the push.
pub async fn bake(
    lock: &Lockfile,
    store: &Store,
    opts: &BakeOptions,
    on_layer: &(dyn Fn(&BuiltLayer) + Sync),
    on_push: &dyn PushObserver,
) -> anyhow::Result<BakeReport> {
    let missing = store.missing(lock);
    if !missing.is_empty() {
        anyhow::bail!(
            "{} file(s) are not in the store {}: run `modelbake fetch` first\n  - {}",
            missing.len(),
            store.root().display(),
            missing
                .iter()
                .take(20)
                .cloned()
                .collect::<Vec<_>>()
                .join("\n  - ")
        );
    }
    let platform = Platform::parse(&opts.settings.platform).map_err(anyhow::Error::msg)?;
    let format = LayerFormat {
        stamp: Stamp {
            uid: opts.settings.owner.0,
            gid: opts.settings.owner.1,
            mtime: opts.mtime,
        },
        compression: opts.settings.compression,
    };
    let plans: Vec<_> = lock
        .repos
        .iter()
        .flat_map(|r| layer::plan_repo(r, &opts.settings))
        .collect();
    let layers: Vec<BuiltLayer> = stream::iter(plans.into_iter().map(|plan| {
        let store = store.clone();
        async move {
            let built = tokio::task::spawn_blocking(move || {
                layer::build(&store, &plan, format)
                    .map_err(|e| anyhow::anyhow!("building the layer of {}: {e}", plan.repo))
            })
            .await??;
            on_layer(&built);
            Ok::<_, anyhow::Error>(built)
        }
    }))
    .buffered(opts.jobs.max(1))
    .try_collect()
    .await?;

    let base = match &opts.settings.base {
        None => None,
        Some(reference) => Some(load_base(reference, &platform, opts.insecure).await?),
    };
    let env = image::image_env(&opts.settings.hf_home, opts.settings.offline_env);
    let meta = image::Metadata {
        labels: opts.settings.labels.clone(),
        annotations: opts.settings.annotations.clone(),
    };
    let img = image::build(
        base.as_ref().map(|(b, _)| b),
        &platform,
        &layers,
        &env,
        &meta,
    )?;
    let mut report = BakeReport {
        reused: layers.iter().filter(|l| l.reused).count(),
        built: layers.iter().filter(|l| !l.reused).count(),
        base_layers: base.as_ref().map_or(0, |(b, _)| b.layers.len()),
        config_digest: img.config_desc.digest.to_string(),
        manifest_digest: img.manifest_desc.digest.to_string(),
        layers: layers.clone(),
        env_corrected: img.corrected.clone(),
        ..Default::default()
    };
    let base_blobs = base
        .as_ref()
        .map(|(b, source)| (source, b.layers.as_slice()));

    if let Some(dir) = &opts.layers_dir {
        sink::write_layer_files(dir, &layers)?;
        report.layers_dir = Some(dir.clone());
    }
    if let Some(dir) = &opts.oci_dir {
        sink::write_layout(dir, &opts.tag, &img, &layers, base_blobs).await?;
        report.oci = Some(dir.clone());
    }
    if let Some(target) = &opts.push {
        let registry = Registry::new(target, opts.insecure)?;
        let pushed = sink::push(
            target,
            &registry,
            &opts.tag,
            &img,
            &layers,
            base_blobs,
            PushOptions {
                jobs: opts.push_jobs,
            },
            on_push,
        )
        .await?;
        report.pushed = Some(pushed.pushed);
        report.uploaded = pushed.uploaded;
        report.skipped = pushed.skipped;
        report.mounted = pushed.mounted;
        report.copied = pushed.copied;
        report.blobs = pushed.blobs;
        report.bytes_sent = pushed.bytes_sent;
        report.push_warnings = pushed.warnings;
    }
    Ok(report)
}

/// Reads the base image's manifest and config (never its layers), from a layout or a registry.
async fn load_base(
    reference: &str,
    platform: &Platform,
    insecure: bool,
) -> Result<(Base, BaseSource), OciError> {
    let (image, source) = if let Some(rest) = reference.strip_prefix("oci:") {
        let src = LayoutSource::parse(rest);
        let image = source::read_image(&src, platform).await?;
        (image, BaseSource::Layout(src))
    } else {
        let image_ref = ImageRef::parse(reference).map_err(|detail| OciError::Invalid {
            what: format!("the base reference `{reference}`"),
            detail,
        })?;
        let registry = Registry::new(&image_ref, insecure)?;
        let src = RegistrySource {
            registry,
            image: image_ref,
        };
        let image = source::read_image(&src, platform).await?;
        (image, BaseSource::Registry(Box::new(src)))
    };
    Ok((
        Base {
            config: image.config,
            layers: image.layers,
        },
        source,
    ))
}
