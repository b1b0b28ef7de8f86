//! The `bake` engine: layers for every locked repo (built or reused from the layer cache), an
//! image on an optional base, and the outputs: layer tarballs with an index, an OCI image
//! layout, and a registry push that never downloads or unpacks base layers.

use std::path::{Path, PathBuf};

use futures::{StreamExt, TryStreamExt, stream};
use serde::Serialize;

use crate::lock::Lockfile;
use crate::manifest::BakeSettings;
use crate::oci::image::{self, Base};
use crate::oci::layer::{self, BuiltLayer, LayerFormat};
use crate::oci::layout::{self, BlobSource};
use crate::oci::reference::ImageRef;
use crate::oci::registry::{Payload, Registry};
use crate::oci::tar::Stamp;
use crate::oci::{Descriptor, Platform, oci_media_type};
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
}

/// Where the base image's blobs are.
enum BaseSource {
    Layout(PathBuf),
    Registry {
        registry: Box<Registry>,
        image: ImageRef,
    },
}

/// Runs a bake. `on_layer` is told about each layer as it is ready.
pub async fn bake(
    lock: &Lockfile,
    store: &Store,
    opts: &BakeOptions,
    on_layer: &(dyn Fn(&BuiltLayer) + Sync),
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

    let (base, source) = match &opts.settings.base {
        None => (None, None),
        Some(b) => {
            let (base, source) = load_base(b, &platform, opts.insecure).await?;
            (Some(base), Some(source))
        }
    };
    let env = image::image_env(&opts.settings.hf_home, opts.settings.offline_env);
    let img = image::build(base.as_ref(), &platform, &layers, &env);
    let mut report = BakeReport {
        reused: layers.iter().filter(|l| l.reused).count(),
        built: layers.iter().filter(|l| !l.reused).count(),
        base_layers: base.as_ref().map_or(0, |b| b.layers.len()),
        config_digest: img.config_desc.digest.clone(),
        manifest_digest: img.manifest_desc.digest.clone(),
        layers: layers.clone(),
        ..Default::default()
    };

    if let Some(dir) = &opts.layers_dir {
        write_layers_dir(dir, &layers)?;
        report.layers_dir = Some(dir.clone());
    }
    if let Some(dir) = &opts.oci_dir {
        let base_files = match (&source, &base) {
            (Some(src), Some(b)) => fetch_base_blobs(src, &b.layers, dir).await?,
            _ => Vec::new(),
        };
        let mut files = base_files;
        files.extend(layers.iter().map(|l| (l.digest.clone(), l.path.clone())));
        let (out, tag, image) = (dir.clone(), opts.tag.clone(), img.clone());
        tokio::task::spawn_blocking(move || {
            let blobs: Vec<(String, BlobSource<'_>)> = files
                .iter()
                .map(|(d, p)| (d.clone(), BlobSource::File(p.as_path())))
                .collect();
            layout::write(&out, &tag, &image, &blobs)
        })
        .await??;
        report.oci = Some(dir.clone());
    }
    if let Some(target) = &opts.push {
        push(
            target,
            opts,
            &img,
            &layers,
            base.as_ref(),
            source.as_ref(),
            &mut report,
        )
        .await?;
    }
    Ok(report)
}

/// Reads the base image's manifest and config (never its layers).
async fn load_base(
    reference: &str,
    platform: &Platform,
    insecure: bool,
) -> anyhow::Result<(Base, BaseSource)> {
    if let Some(rest) = reference.strip_prefix("oci:") {
        let (dir, tag) = split_layout_ref(rest);
        let img = layout::read(Path::new(dir), tag, platform)
            .map_err(|e| anyhow::anyhow!("base {reference}: {e}"))?;
        return Ok((
            Base {
                config: img.config,
                layers: img.layers,
            },
            BaseSource::Layout(PathBuf::from(dir)),
        ));
    }
    let image = ImageRef::parse(reference).map_err(anyhow::Error::msg)?;
    let registry = Registry::new(&image, insecure)?;
    let (bytes, _, _) = registry
        .manifest(&image.repository, image.reference(), platform)
        .await
        .map_err(|e| anyhow::anyhow!("base {image}: {e}"))?;
    let manifest: serde_json::Value = serde_json::from_slice(&bytes)?;
    let config_digest = manifest["config"]["digest"]
        .as_str()
        .ok_or_else(|| anyhow::anyhow!("base {image}: manifest without config"))?;
    let config: serde_json::Value = serde_json::from_slice(
        &registry
            .blob_bytes(&image.repository, config_digest)
            .await?,
    )?;
    let layers: Vec<Descriptor> = manifest["layers"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|l| serde_json::from_value::<Descriptor>(l.clone()).ok())
                .collect::<Vec<_>>()
        })
        .unwrap_or_default()
        .into_iter()
        .map(|mut d: Descriptor| {
            d.media_type = oci_media_type(&d.media_type).to_owned();
            d
        })
        .collect();
    Ok((
        Base { config, layers },
        BaseSource::Registry {
            registry: Box::new(registry),
            image,
        },
    ))
}

/// `DIR[:TAG]` of an `oci:` reference.
fn split_layout_ref(s: &str) -> (&str, Option<&str>) {
    match s.rsplit_once(':') {
        Some((dir, tag)) if !tag.contains('/') && !tag.is_empty() => (dir, Some(tag)),
        _ => (s, None),
    }
}

/// Makes the base layers available as files for an OCI layout: from a base layout directly,
/// or downloaded (not unpacked) from the registry into the target layout.
async fn fetch_base_blobs(
    source: &BaseSource,
    layers: &[Descriptor],
    dir: &Path,
) -> anyhow::Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    for l in layers {
        match source {
            BaseSource::Layout(base) => {
                out.push((l.digest.clone(), layout::blob_path(base, &l.digest)))
            }
            BaseSource::Registry { registry, image } => {
                let dest = layout::blob_path(dir, &l.digest);
                if !std::fs::metadata(&dest).is_ok_and(|m| m.len() == l.size) {
                    if let Some(p) = dest.parent() {
                        std::fs::create_dir_all(p)?;
                    }
                    let resp = registry.blob_stream(&image.repository, &l.digest).await?;
                    let tmp = dest.with_extension("part");
                    let mut file = tokio::fs::File::create(&tmp).await?;
                    let mut hasher = crate::hash::ContentHasher::sha256_only();
                    let mut body = resp.bytes_stream();
                    while let Some(chunk) = body.next().await {
                        let chunk = chunk?;
                        hasher.update(&chunk);
                        tokio::io::AsyncWriteExt::write_all(&mut file, &chunk).await?;
                    }
                    let got = format!("sha256:{}", hasher.finish().sha256);
                    if got != l.digest {
                        let _ = std::fs::remove_file(&tmp);
                        anyhow::bail!("base layer {} from {image} hashed to {got}", l.digest);
                    }
                    tokio::fs::rename(&tmp, &dest).await?;
                }
                out.push((l.digest.clone(), dest));
            }
        }
    }
    Ok(out)
}

/// `--layers DIR`: the layer files plus `layers.json`.
fn write_layers_dir(dir: &Path, layers: &[BuiltLayer]) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut index = Vec::new();
    for (i, l) in layers.iter().enumerate() {
        let ext = match l.media_type.as_str() {
            crate::oci::MEDIA_LAYER_GZIP => "tar.gz",
            crate::oci::MEDIA_LAYER_ZSTD => "tar.zst",
            _ => "tar",
        };
        let (part, parts) = l.part.split_once('/').unwrap_or(("1", "1"));
        let suffix = if parts == "1" {
            String::new()
        } else {
            format!("-part{part}of{parts}")
        };
        let name = format!("{:02}-{}{suffix}.{ext}", i + 1, l.repo.replace('/', "--"));
        let dest = dir.join(&name);
        let _ = std::fs::remove_file(&dest);
        if std::fs::hard_link(&l.path, &dest).is_err() {
            std::fs::copy(&l.path, &dest)?;
        }
        index.push(serde_json::json!({
            "file": name, "digest": l.digest, "diff_id": l.diff_id, "size": l.size,
            "media_type": l.media_type, "repo": l.repo, "commit": l.commit, "part": l.part,
        }));
    }
    std::fs::write(
        dir.join("layers.json"),
        serde_json::to_vec_pretty(&serde_json::json!({ "layers": index }))?,
    )?;
    Ok(())
}

/// `--push REF`: blobs the registry lacks (HEAD first), base blobs mounted or streamed, then
/// the manifest.
async fn push(
    target: &ImageRef,
    opts: &BakeOptions,
    img: &image::Image,
    layers: &[BuiltLayer],
    base: Option<&Base>,
    source: Option<&BaseSource>,
    report: &mut BakeReport,
) -> anyhow::Result<()> {
    let registry = Registry::new(target, opts.insecure)?;
    let repo = target.repository.as_str();
    if let (Some(base), Some(source)) = (base, source) {
        for l in &base.layers {
            if registry.has_blob(repo, &l.digest).await? {
                report.skipped += 1;
                continue;
            }
            match source {
                BaseSource::Registry {
                    registry: from,
                    image,
                } if from.host() == registry.host() => {
                    if registry.mount(repo, &l.digest, &image.repository).await? {
                        report.mounted += 1;
                    } else {
                        registry
                            .upload_from(
                                repo,
                                &l.digest,
                                l.size,
                                from.blob_stream(&image.repository, &l.digest).await?,
                            )
                            .await?;
                        report.copied += 1;
                    }
                }
                BaseSource::Registry {
                    registry: from,
                    image,
                } => {
                    registry
                        .upload_from(
                            repo,
                            &l.digest,
                            l.size,
                            from.blob_stream(&image.repository, &l.digest).await?,
                        )
                        .await?;
                    report.copied += 1;
                }
                BaseSource::Layout(dir) => {
                    registry
                        .upload(
                            repo,
                            &l.digest,
                            Payload::File(&layout::blob_path(dir, &l.digest)),
                        )
                        .await?;
                    report.uploaded += 1;
                }
            }
        }
    }
    for l in layers {
        if registry.has_blob(repo, &l.digest).await? {
            report.skipped += 1;
        } else {
            registry
                .upload(repo, &l.digest, Payload::File(&l.path))
                .await?;
            report.uploaded += 1;
        }
    }
    if registry.has_blob(repo, &img.config_desc.digest).await? {
        report.skipped += 1;
    } else {
        registry
            .upload(repo, &img.config_desc.digest, Payload::Bytes(&img.config))
            .await?;
        report.uploaded += 1;
    }
    let tag = target.tag.clone().unwrap_or_else(|| opts.tag.clone());
    registry
        .put_manifest(repo, &tag, &img.manifest, crate::oci::MEDIA_MANIFEST)
        .await?;
    report.pushed = Some(format!(
        "{}/{}:{tag}@{}",
        target.registry, repo, img.manifest_desc.digest
    ));
    Ok(())
}
