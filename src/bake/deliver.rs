//! Step 4 of a bake: the artifact handed to each requested sink. `--layers DIR` gets our
//! layer files and `layers.json` ([`write_layer_files`], modelbake's own format), `--oci DIR`
//! the OCI layout sink and `--push REF` the registry sink of the OCI core, each with the same
//! artifact.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::layer_cache::BuiltLayer;
use super::{BakeError, BakeOptions};
use crate::fs_atomic::{Mode, link_or_copy, write_atomic};
use crate::oci::digest::Digest;
use crate::oci::error::OciError;
use crate::oci::image::Artifact;
use crate::oci::push::{PushObserver, PushReport, push};
use crate::oci::registry::{Registry, RegistryOptions};
use crate::oci::{MEDIA_LAYER_GZIP, MEDIA_LAYER_ZSTD, layout};

/// Where the artifact went.
#[derive(Default)]
pub struct Delivered {
    /// `--layers DIR`, written.
    pub layers_dir: Option<PathBuf>,
    /// `--oci DIR`, written.
    pub oci: Option<PathBuf>,
    /// What the push did (empty without `--push`).
    pub push: PushReport,
    /// The registry pushed to (its authentication reused by the next steps).
    pub registry: Option<Registry>,
}

/// Writes `artifact` (built from `layers`) to every output `opts` names: layer files, then the
/// OCI layout, then the push.
pub async fn deliver(
    artifact: &Artifact,
    layers: &[BuiltLayer],
    opts: &BakeOptions,
    on_push: &dyn PushObserver,
) -> Result<Delivered, BakeError> {
    let mut delivered = Delivered::default();
    if let Some(dir) = &opts.layers_dir {
        write_layer_files(dir, layers)?;
        delivered.layers_dir = Some(dir.clone());
    }
    if let Some(dir) = &opts.oci_dir {
        layout::write(dir, Some(&opts.tag), artifact).await?;
        delivered.oci = Some(dir.clone());
    }
    if let Some(target) = &opts.push {
        let registry = Registry::new(target, opts.insecure)
            .map_err(OciError::from)?
            .with_options(RegistryOptions::for_host(
                &target.registry,
                opts.settings.registry.get(&target.registry),
            ));
        let mut target = target.clone();
        target.tag.get_or_insert_with(|| opts.tag.clone());
        delivered.push = push(&registry, &target, artifact, opts.push_jobs, on_push).await?;
        delivered.registry = Some(registry);
    }
    Ok(delivered)
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
