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
use crate::oci::cache_repo::{CacheRepo, Lookup};
use crate::oci::image::{self, Base, Image, IndexImage};
use crate::oci::layer::{self, BuiltLayer, LayerFormat, LayerPlan};
use crate::oci::reference::ImageRef;
use crate::oci::registry::{Registry, RegistryOptions};
use crate::oci::sink::{self, BaseSource, BlobReport, PushAs, PushObserver, PushOptions};
use crate::oci::source::{self, LayoutSource, RegistrySource};
use crate::oci::tar::Stamp;
use crate::oci::{OciError, Platform};
use crate::store::Store;

/// What to bake and where to put it.
#[derive(Debug, Clone)]
pub struct BakeOptions {
    /// Layout, owner, compression, base, platform(s), split size.
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
    /// `--cache REGISTRY/REPO` (or `[cache] registry`): the shared layer cache; `None` makes no
    /// request of any kind.
    pub cache: Option<String>,
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
    /// The image config digest (single platform only).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub config_digest: String,
    /// The digest the tag points at: the image manifest, or the index for several platforms.
    pub manifest_digest: String,
    /// The image index digest, when several platforms were baked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index_digest: Option<String>,
    /// What was written for each platform.
    pub platforms: Vec<PlatformReport>,
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
    /// What the cache repository did (absent without one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache: Option<CacheOutcome>,
}

/// What the cache repository did for a bake.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CacheOutcome {
    /// `registry/repo`.
    pub repository: String,
    /// Layers taken from records (no store files needed for them).
    pub hits: Vec<String>,
    /// Layers downloaded from the cache repository for --oci/--layers.
    pub downloaded: usize,
    /// Layers recorded by this bake.
    pub recorded: Vec<String>,
    /// Records ignored, records that could not be written (no push rights…), lookups that
    /// failed: each one a warning, none fails the bake.
    pub warnings: Vec<String>,
}

/// What a bake wrote for one platform.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PlatformReport {
    /// `linux/amd64`…
    pub platform: String,
    /// The platform's image manifest digest.
    pub manifest_digest: String,
    /// The platform's image config digest.
    pub config_digest: String,
    /// Layers inherited from the platform's base.
    pub base_layers: usize,
}

/// Runs a bake. `on_layer` is told about each layer as it is ready, `on_push` about the push.
pub async fn bake(
    lock: &Lockfile,
    store: &Store,
    opts: &BakeOptions,
    on_layer: &(dyn Fn(&BuiltLayer) + Sync),
    on_push: &dyn PushObserver,
) -> anyhow::Result<BakeReport> {
    layer::check_layout(lock, &opts.settings).map_err(anyhow::Error::msg)?;
    let platforms = Platform::parse_list(&opts.settings.platform).map_err(anyhow::Error::msg)?;
    let format = layer_format(&opts.settings, opts.mtime);
    let plans: Vec<_> = lock
        .repos
        .iter()
        .flat_map(|r| layer::plan_repo(r, &opts.settings))
        .collect();
    let cache = match &opts.cache {
        Some(reference) => Some(CacheRepo::open(reference, opts.insecure)?),
        None => None,
    };
    let mut outcome = cache.as_ref().map(|c| CacheOutcome {
        repository: c.name(),
        ..Default::default()
    });
    // Per plan: a layer taken from its record (blob in the cache repository), if any.
    let mut recorded: Vec<Option<BuiltLayer>> = vec![None; plans.len()];
    let mut cache_down = false;
    if let (Some(cache), Some(out)) = (&cache, outcome.as_mut()) {
        let wants_files = opts.layers_dir.is_some() || opts.oci_dir.is_some();
        for (i, plan) in plans.iter().enumerate() {
            match cache.lookup(plan, format).await {
                Lookup::Hit(found) => {
                    let found = if wants_files && layer::cached(store, plan, format).is_none() {
                        let got = cache.download(store, plan, format, found).await?;
                        out.downloaded += 1;
                        got
                    } else {
                        found
                    };
                    recorded[i] = Some(found);
                }
                Lookup::Miss(None) => {}
                Lookup::Rejected(w) => out.warnings.push(w),
                Lookup::Miss(Some(w)) => {
                    // The registry could not be asked: no use asking for every other layer.
                    out.warnings
                        .push(format!("{w}; the cache repository is not asked further"));
                    cache_down = true;
                    break;
                }
            }
        }
    }
    // Only the layers neither recorded nor in the local layer cache need store files.
    let missing: Vec<String> = plans
        .iter()
        .zip(&recorded)
        .filter(|(plan, r)| r.is_none() && layer::cached(store, plan, format).is_none())
        .flat_map(|(plan, _)| {
            layer::store_blobs(plan)
                .filter(|(sha, size)| !store.has(sha, *size))
                .map(|(sha, _)| describe_missing(lock, plan, sha))
                .collect::<Vec<_>>()
        })
        .collect();
    if !missing.is_empty() {
        anyhow::bail!(
            "{} file(s) are not in the store {}: run `modelbake fetch` first{}\n  - {}",
            missing.len(),
            store.root().display(),
            if cache.is_some() {
                " (the cache repository has no usable record of their layers)"
            } else {
                ""
            },
            missing
                .iter()
                .take(20)
                .cloned()
                .collect::<Vec<_>>()
                .join("\n  - ")
        );
    }
    let hit: Vec<bool> = recorded.iter().map(Option::is_some).collect();
    let layers: Vec<BuiltLayer> =
        stream::iter(plans.iter().cloned().zip(recorded).map(|(plan, recorded)| {
            let store = store.clone();
            async move {
                if let Some(found) = recorded {
                    on_layer(&found);
                    return Ok::<_, anyhow::Error>(found);
                }
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

    let multi = platforms.len() > 1;
    let mut bases = Vec::new();
    for platform in &platforms {
        bases.push(match &opts.settings.base {
            None => None,
            Some(reference) => Some(load_base(reference, platform, opts.insecure, multi).await?),
        });
    }
    let env = image::env_for(&opts.settings);
    let meta = image::Metadata {
        labels: opts.settings.labels.clone(),
        annotations: opts.settings.annotations.clone(),
    };
    let mut images = Vec::new();
    for (platform, base) in platforms.iter().zip(&bases) {
        let img = image::build(
            base.as_ref().map(|(b, _)| b),
            platform,
            &layers,
            &env,
            &meta,
        )?;
        images.push((platform.clone(), img));
    }
    let mut report = BakeReport {
        reused: layers.iter().filter(|l| l.reused).count(),
        built: layers.iter().filter(|l| !l.reused).count(),
        base_layers: bases[0].as_ref().map_or(0, |(b, _)| b.layers.len()),
        layers: layers.clone(),
        env_corrected: images[0].1.corrected.clone(),
        platforms: images
            .iter()
            .zip(&bases)
            .map(|((p, img), base)| PlatformReport {
                platform: p.to_string(),
                manifest_digest: img.manifest_desc.digest.to_string(),
                config_digest: img.config_desc.digest.to_string(),
                base_layers: base.as_ref().map_or(0, |(b, _)| b.layers.len()),
            })
            .collect(),
        ..Default::default()
    };
    let base_blobs: Vec<sink::BaseBlobs<'_>> = bases
        .iter()
        .map(|b| b.as_ref().map(|(b, source)| (source, b.layers.as_slice())))
        .collect();
    let built = if multi {
        let index = image::build_index(images)?;
        report.manifest_digest = index.index_desc.digest.to_string();
        report.index_digest = Some(index.index_desc.digest.to_string());
        Built::Index(Box::new(index))
    } else {
        let (_, img) = images.remove(0);
        report.config_digest = img.config_desc.digest.to_string();
        report.manifest_digest = img.manifest_desc.digest.to_string();
        Built::Single(Box::new(img))
    };

    if let Some(dir) = &opts.layers_dir {
        sink::write_layer_files(dir, &layers)?;
        report.layers_dir = Some(dir.clone());
    }
    if let Some(dir) = &opts.oci_dir {
        match &built {
            Built::Single(img) => {
                sink::write_layout(dir, &opts.tag, img, &layers, base_blobs[0]).await?
            }
            Built::Index(index) => {
                sink::write_index_layout(dir, &opts.tag, index, &layers, &base_blobs).await?
            }
        }
        report.oci = Some(dir.clone());
    }
    if let Some(target) = &opts.push {
        let registry =
            Registry::new(target, opts.insecure)?.with_options(RegistryOptions::for_host(
                &target.registry,
                opts.settings.registry.get(&target.registry),
            ));
        let push_opts = PushOptions {
            jobs: opts.push_jobs,
            // Layers taken from records have no local file: mounted or streamed from the cache.
            remote_layers: cache.as_ref().map(CacheRepo::source),
        };
        let pushed = match &built {
            Built::Single(img) => {
                sink::push(
                    target,
                    &registry,
                    PushAs::Tag(&opts.tag),
                    img,
                    &layers,
                    base_blobs[0],
                    push_opts,
                    on_push,
                )
                .await?
            }
            Built::Index(index) => {
                sink::push_index(
                    target,
                    &registry,
                    &opts.tag,
                    index,
                    &layers,
                    &base_blobs,
                    push_opts,
                    on_push,
                )
                .await?
            }
        };
        report.pushed = Some(pushed.pushed);
        report.uploaded = pushed.uploaded;
        report.skipped = pushed.skipped;
        report.mounted = pushed.mounted;
        report.copied = pushed.copied;
        report.blobs = pushed.blobs;
        report.bytes_sent = pushed.bytes_sent;
        report.push_warnings = pushed.warnings;
    }
    if let (Some(cache), Some(out), false) = (&cache, outcome.as_mut(), cache_down) {
        for ((plan, l), hit) in plans.iter().zip(&layers).zip(hit) {
            if hit {
                out.hits.push(l.digest.to_string());
                continue;
            }
            match cache.record(l, plan, format, opts.push.as_ref()).await {
                Ok(()) => out.recorded.push(l.digest.to_string()),
                Err(e) => out.warnings.push(format!(
                    "cache repository {}: could not record {} layer {} ({e}); recording needs push rights to it, the bake itself is fine",
                    cache.name(),
                    l.repo,
                    l.part
                )),
            }
        }
    }
    report.cache = outcome;
    Ok(report)
}

/// One image or, for several platforms, an index over one image per platform.
enum Built {
    Single(Box<Image>),
    Index(Box<IndexImage>),
}

/// The byte-level options of every layer of a bake with `settings` and `mtime` (`fetch --cache`
/// computes the same keys).
pub fn layer_format(settings: &BakeSettings, mtime: u64) -> LayerFormat {
    LayerFormat {
        stamp: Stamp {
            uid: settings.owner.0,
            gid: settings.owner.1,
            mtime,
        },
        compression: settings.compression,
        layout: settings.layout,
    }
}

/// `model `acme/tiny` file `x`` for a store blob a layer needs.
fn describe_missing(lock: &Lockfile, plan: &LayerPlan, sha256: &str) -> String {
    lock.repos
        .iter()
        .filter(|r| r.key().qualified() == plan.repo)
        .flat_map(|r| r.files.iter().map(move |f| (r, f)))
        .find(|(_, f)| f.sha256 == sha256)
        .map(|(r, f)| format!("{} file `{}`", r.label(), f.path))
        .unwrap_or_else(|| format!("{} blob sha256:{sha256}", plan.repo))
}

/// Reads the base image's manifest and config (never its layers), from a layout or a registry.
/// With `strict` (a multi-platform bake), a base whose config names another os/architecture
/// than `platform` (a single-platform base) is refused instead of being used for every platform.
async fn load_base(
    reference: &str,
    platform: &Platform,
    insecure: bool,
    strict: bool,
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
    let (os, arch) = (
        image.config["os"].as_str().unwrap_or_default(),
        image.config["architecture"].as_str().unwrap_or_default(),
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
    Ok((
        Base {
            config: image.config,
            layers: image.layers,
        },
        source,
    ))
}
