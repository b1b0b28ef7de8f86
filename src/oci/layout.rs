//! OCI image layouts on disk (`oci-layout`, `index.json`, `blobs/sha256/…`): writing ours
//! (layer blobs hard-linked from the layer cache, other tags in the folder kept) and reading one
//! as a base image or for `verify --oci`.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use super::image::Image;
use super::{
    ANNOTATION_REF_NAME, Descriptor, MEDIA_DOCKER_LIST, MEDIA_INDEX, Platform, oci_media_type,
};

/// Where a blob to put in the layout comes from.
pub enum BlobSource<'a> {
    /// A file (hard-linked when possible, copied otherwise).
    File(&'a Path),
    /// Bytes in memory.
    Bytes(&'a [u8]),
}

/// The path of a blob in a layout.
pub fn blob_path(dir: &Path, digest: &str) -> PathBuf {
    let (alg, hex) = digest.split_once(':').unwrap_or(("sha256", digest));
    dir.join("blobs").join(alg).join(hex)
}

/// Writes `image` (with `blobs`: every layer and base blob the layout needs) into `dir` under
/// `tag`; other tags already in the layout are kept.
pub fn write(
    dir: &Path,
    tag: &str,
    image: &Image,
    blobs: &[(String, BlobSource<'_>)],
) -> io::Result<()> {
    fs::create_dir_all(dir.join("blobs/sha256"))?;
    replace(
        &dir.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )?;
    for (digest, source) in blobs {
        put_blob(dir, digest, source)?;
    }
    put_blob(
        dir,
        &image.config_desc.digest,
        &BlobSource::Bytes(&image.config),
    )?;
    put_blob(
        dir,
        &image.manifest_desc.digest,
        &BlobSource::Bytes(&image.manifest),
    )?;

    let mut manifests: Vec<Value> = fs::read(dir.join("index.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .and_then(|v| v["manifests"].as_array().cloned())
        .unwrap_or_default();
    manifests.retain(|m| m["annotations"][ANNOTATION_REF_NAME].as_str() != Some(tag));
    let mut ours = serde_json::to_value(&image.manifest_desc).map_err(io::Error::other)?;
    ours["annotations"] = json!({ ANNOTATION_REF_NAME: tag });
    manifests.push(ours);
    manifests.sort_by(|a, b| {
        a["annotations"][ANNOTATION_REF_NAME]
            .as_str()
            .cmp(&b["annotations"][ANNOTATION_REF_NAME].as_str())
    });
    let index = json!({ "schemaVersion": 2, "mediaType": MEDIA_INDEX, "manifests": manifests });
    replace(
        &dir.join("index.json"),
        &serde_json::to_vec(&index).map_err(io::Error::other)?,
    )
}

fn put_blob(dir: &Path, digest: &str, source: &BlobSource<'_>) -> io::Result<()> {
    let dest = blob_path(dir, digest);
    let size = match source {
        BlobSource::File(p) => fs::metadata(p)?.len(),
        BlobSource::Bytes(b) => b.len() as u64,
    };
    if fs::metadata(&dest).is_ok_and(|m| m.len() == size) {
        return Ok(());
    }
    if let Some(parent) = dest.parent() {
        fs::create_dir_all(parent)?;
    }
    let tmp = dest.with_extension(format!("tmp-{:08x}", fastrand::u32(..)));
    match source {
        BlobSource::File(p) => {
            if fs::hard_link(p, &tmp).is_err() {
                fs::copy(p, &tmp)?;
            }
        }
        BlobSource::Bytes(b) => fs::write(&tmp, b)?,
    }
    fs::rename(&tmp, &dest)
}

fn replace(path: &Path, bytes: &[u8]) -> io::Result<()> {
    if fs::read(path).is_ok_and(|old| old == bytes) {
        return Ok(());
    }
    let tmp = path.with_extension(format!("tmp-{:08x}", fastrand::u32(..)));
    fs::write(&tmp, bytes)?;
    fs::rename(&tmp, path)
}

/// An image read from a layout.
#[derive(Debug, Clone)]
pub struct LayoutImage {
    /// The manifest descriptor.
    pub manifest_desc: Descriptor,
    /// The manifest JSON.
    pub manifest: Value,
    /// The config JSON.
    pub config: Value,
    /// The config descriptor.
    pub config_desc: Descriptor,
    /// Layer descriptors (media types mapped to OCI names).
    pub layers: Vec<Descriptor>,
}

fn read_json(dir: &Path, digest: &str) -> Result<(Vec<u8>, Value), String> {
    let path = blob_path(dir, digest);
    let bytes = fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let v =
        serde_json::from_slice(&bytes).map_err(|e| format!("{}: not JSON: {e}", path.display()))?;
    Ok((bytes, v))
}

/// Reads the image tagged `tag` (or the only image, when `tag` is `None`) from the layout at
/// `dir`, choosing `platform` from a multi-platform index.
pub fn read(dir: &Path, tag: Option<&str>, platform: &Platform) -> Result<LayoutImage, String> {
    let index_path = dir.join("index.json");
    let index: Value = serde_json::from_slice(
        &fs::read(&index_path)
            .map_err(|e| format!("{}: {e} (is it an OCI image layout?)", index_path.display()))?,
    )
    .map_err(|e| format!("{}: {e}", index_path.display()))?;
    let manifests = index["manifests"].as_array().cloned().unwrap_or_default();
    let entry = match tag {
        Some(t) => manifests
            .iter()
            .find(|m| m["annotations"][ANNOTATION_REF_NAME].as_str() == Some(t)),
        None if manifests.len() == 1 => manifests.first(),
        None => None,
    }
    .ok_or_else(|| {
        let tags: Vec<&str> = manifests
            .iter()
            .filter_map(|m| m["annotations"][ANNOTATION_REF_NAME].as_str())
            .collect();
        format!(
            "{}: no image tagged `{}` (tags: {})",
            dir.display(),
            tag.unwrap_or("<only one>"),
            tags.join(", ")
        )
    })?;
    let mut desc: Descriptor = serde_json::from_value(entry.clone())
        .map_err(|e| format!("{}: {e}", index_path.display()))?;
    let (mut bytes, mut manifest) = read_json(dir, &desc.digest)?;
    for _ in 0..4 {
        let media = manifest["mediaType"]
            .as_str()
            .unwrap_or(desc.media_type.as_str())
            .to_owned();
        if media != MEDIA_INDEX && media != MEDIA_DOCKER_LIST && !manifest["manifests"].is_array() {
            break;
        }
        let chosen = manifest["manifests"]
            .as_array()
            .and_then(|ms| ms.iter().find(|m| platform.matches(&m["platform"])))
            .ok_or_else(|| format!("{}: the image has no {platform} variant", dir.display()))?;
        desc = serde_json::from_value(chosen.clone()).map_err(|e| e.to_string())?;
        (bytes, manifest) = read_json(dir, &desc.digest)?;
    }
    let _ = bytes;
    let config_desc: Descriptor = serde_json::from_value(manifest["config"].clone())
        .map_err(|e| format!("manifest config: {e}"))?;
    let (_, config) = read_json(dir, &config_desc.digest)?;
    let layers: Vec<Descriptor> = manifest["layers"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|l| serde_json::from_value::<Descriptor>(l.clone()).ok())
                .map(|mut d| {
                    d.media_type = oci_media_type(&d.media_type).to_owned();
                    d
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(LayoutImage {
        manifest_desc: desc,
        manifest,
        config,
        config_desc,
        layers,
    })
}
