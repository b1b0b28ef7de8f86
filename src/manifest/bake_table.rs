//! The `[bake]` table of `models.toml` and its merge with `bake`'s flags: what an image looks
//! like (where the models go, owner, compression, base, platforms, labels). `BakeDoc` is the
//! table as written, `BakeSettings` the validated result with defaults, `BakeOverrides` the
//! flags that replace table values for one run. The `bake` engine takes `BakeSettings`.

use std::collections::BTreeMap;
use std::path::Path;

use schemars::JsonSchema;
use serde::Deserialize;
use toml::Spanned;

use super::SourceError;
use crate::oci::Compression;
use crate::oci::registry::options::RegistryUpload;

/// `[bake]`: how `modelbake bake` lays the cache into image layers.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BakeDoc {
    /// Where the huggingface_hub cache lands inside the image, as `HF_HOME` (absolute path);
    /// default `/root/.cache/huggingface`.
    #[schemars(with = "Option<String>")]
    pub hf_home: Option<Spanned<String>>,
    /// `uid:gid` owning the baked files; default `0:0` (use e.g. `1000:1000` for non-root images).
    #[schemars(with = "Option<String>")]
    pub owner: Option<Spanned<String>>,
    /// Layer compression: `none` (default; weights barely compress), `gzip` or `zstd`.
    pub compression: Option<Compression>,
    /// Base image: a registry reference (`docker.io/pytorch/pytorch:2.7.0-cuda12.6-cudnn9-runtime`)
    /// or `oci:DIR[:TAG]`; none means an image of just the models.
    pub base: Option<String>,
    /// Platform of the image, e.g. `linux/amd64` (the default), picked from a multi-arch base;
    /// a comma-separated list (`linux/amd64,linux/arm64`) bakes an image index with one manifest
    /// per platform sharing the same model layers.
    pub platform: Option<String>,
    /// Repos larger than this many bytes are split over several layers (default 10 GB).
    pub max_layer_size: Option<u64>,
    /// Set `HF_HUB_OFFLINE=1` in the image environment (default true).
    pub offline_env: Option<bool>,
    /// How the models are laid out in the image: `hf-cache` (default; the huggingface_hub cache
    /// under `HF_HOME`) or `files` (each repo's files as plain files under `models_dir`, for
    /// Kubernetes image volumes and KServe modelcars).
    pub layout: Option<ModelArrangement>,
    /// Where the `files` layout puts the repos inside the image (absolute path); default `/models`.
    #[schemars(with = "Option<String>")]
    pub models_dir: Option<Spanned<String>>,
    /// `files` layout with exactly one repo: its files directly in `models_dir` (KServe's
    /// modelcar convention) instead of `models_dir/<org>/<name>/`.
    pub flat: Option<bool>,
    /// Upload settings per registry, keyed by the registry as written in image references
    /// (`ghcr.io`, `127.0.0.1:5000`): `[bake.registry."ghcr.io"] chunk_size = 33554432`.
    #[serde(default)]
    pub registry: BTreeMap<String, RegistryUpload>,
    /// Image config labels (`config.Labels`), e.g.
    /// `{ "org.opencontainers.image.source" = "https://github.com/acme/app" }`, which GHCR uses
    /// to link the package to its repository. Merged over the base's labels.
    pub labels: Option<BTreeMap<String, String>>,
    /// Image manifest annotations, e.g. `{ "org.opencontainers.image.version" = "1.2" }`.
    pub annotations: Option<BTreeMap<String, String>>,
}

// Called an arrangement in code: "layout" there means an OCI image layout. The flag, the
// `[bake] layout` key and the schema keep their name.
/// How the locked repos are laid out inside an image.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
#[schemars(rename = "ImageLayout")]
pub enum ModelArrangement {
    /// The huggingface_hub cache (`blobs/`, `refs/`, `snapshots/` symlinks) under `HF_HOME`.
    #[default]
    HfCache,
    /// Each repo's snapshot as regular files under `models_dir/<org>/<name>/` (no symlinks).
    Files,
}

impl std::str::FromStr for ModelArrangement {
    type Err = SettingError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "hf-cache" => Ok(ModelArrangement::HfCache),
            "files" => Ok(ModelArrangement::Files),
            other => Err(SettingError::UnknownLayout(other.to_owned())),
        }
    }
}

/// A `[bake]` value or `bake` flag that cannot be used, said with an example of one that can.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettingError {
    /// `--layout` names no arrangement.
    #[error("unknown layout `{0}`: expected hf-cache or files")]
    UnknownLayout(String),
    /// An in-image folder that is relative or the root.
    #[error("{name} `{value}` must be an absolute path inside the image, e.g. `{example}`")]
    NotAbsolute {
        /// `hf_home` or `models_dir`.
        name: &'static str,
        /// As given.
        value: String,
        /// A folder that works.
        example: &'static str,
    },
    /// An in-image folder with `.`, `..` or empty segments.
    #[error("{name} `{value}` must not contain empty, `.` or `..` segments")]
    BadSegment {
        /// `hf_home` or `models_dir`.
        name: &'static str,
        /// As given.
        value: String,
    },
    /// A `--label`/`--annotation` that is not `KEY=VALUE`.
    #[error(
        "`{0}` is not KEY=VALUE, e.g. org.opencontainers.image.source=https://github.com/acme/app"
    )]
    NotKeyValue(String),
    /// An owner that is not `uid:gid`.
    #[error("owner `{0}` must be `uid:gid` with numbers, e.g. `0:0` or `1000:1000`")]
    NotOwner(String),
}

/// The `[bake]` settings, validated and with defaults applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BakeSettings {
    /// Absolute `HF_HOME` inside the image, normalised, without trailing `/`.
    pub hf_home: String,
    /// Owner uid and gid.
    pub owner: (u32, u32),
    /// Layer compression.
    pub compression: Compression,
    /// Base image reference, if any.
    pub base: Option<String>,
    /// Platform(s) of the image, `os/arch[/variant]`, comma-separated for an index.
    pub platform: String,
    /// Split threshold in bytes.
    pub max_layer_size: u64,
    /// Whether to set `HF_HUB_OFFLINE=1`.
    pub offline_env: bool,
    /// How the repos are laid out in the image.
    pub layout: ModelArrangement,
    /// Absolute folder of the `files` layout, normalised, without trailing `/`.
    pub models_dir: String,
    /// `files` layout: the one repo's files directly in `models_dir`.
    pub flat: bool,
    /// `[bake.registry."HOST"]` upload settings, by registry.
    pub registry: BTreeMap<String, RegistryUpload>,
    /// Image config labels.
    pub labels: BTreeMap<String, String>,
    /// Image manifest annotations.
    pub annotations: BTreeMap<String, String>,
}

impl Default for BakeSettings {
    fn default() -> Self {
        BakeSettings {
            hf_home: "/root/.cache/huggingface".into(),
            owner: (0, 0),
            compression: Compression::None,
            base: None,
            platform: "linux/amd64".into(),
            max_layer_size: 10_000_000_000,
            offline_env: true,
            layout: ModelArrangement::HfCache,
            models_dir: "/models".into(),
            flat: false,
            registry: BTreeMap::new(),
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
        }
    }
}

/// Command-line choices that override `[bake]` (each `None`/`false` keeps the manifest's).
#[derive(Debug, Clone, Default)]
pub struct BakeOverrides {
    /// `--hf-home`.
    pub hf_home: Option<String>,
    /// `--owner`.
    pub owner: Option<(u32, u32)>,
    /// `--platform`.
    pub platform: Option<String>,
    /// `--base`.
    pub base: Option<String>,
    /// `--no-base`: build on nothing even if `[bake] base` names an image.
    pub no_base: bool,
    /// `--compression`.
    pub compression: Option<Compression>,
    /// `--max-layer-size` (at least 1).
    pub max_layer_size: Option<u64>,
    /// `--no-offline-env`.
    pub no_offline_env: bool,
    /// `--layout`.
    pub layout: Option<ModelArrangement>,
    /// `--models-dir`.
    pub models_dir: Option<String>,
    /// `--flat`.
    pub flat: bool,
    /// `--label KEY=VALUE`, added to (or replacing keys of) `[bake] labels`.
    pub labels: Vec<(String, String)>,
    /// `--annotation KEY=VALUE`, added to (or replacing keys of) `[bake] annotations`.
    pub annotations: Vec<(String, String)>,
}

impl BakeSettings {
    /// These settings with `o` applied: the one place flags and `[bake]` are merged.
    pub fn with(mut self, o: &BakeOverrides) -> Self {
        if let Some(h) = &o.hf_home {
            self.hf_home = h.clone();
        }
        if let Some(owner) = o.owner {
            self.owner = owner;
        }
        if let Some(p) = &o.platform {
            self.platform = p.clone();
        }
        if let Some(b) = &o.base {
            self.base = Some(b.clone());
        }
        if o.no_base {
            self.base = None;
        }
        if let Some(c) = o.compression {
            self.compression = c;
        }
        if let Some(m) = o.max_layer_size {
            self.max_layer_size = m.max(1);
        }
        if o.no_offline_env {
            self.offline_env = false;
        }
        if let Some(l) = o.layout {
            self.layout = l;
        }
        if let Some(d) = &o.models_dir {
            self.models_dir = d.clone();
        }
        if o.flat {
            self.flat = true;
        }
        self.labels.extend(o.labels.iter().cloned());
        self.annotations.extend(o.annotations.iter().cloned());
        self
    }
}

/// Checks an in-image `HF_HOME`: absolute, no `.`/`..`/empty segments, no trailing `/`.
pub fn parse_hf_home(s: &str) -> Result<String, SettingError> {
    image_dir("hf_home", s, "/root/.cache/huggingface")
}

/// Checks an in-image `models_dir` the way [`parse_hf_home`] checks `HF_HOME`.
pub fn parse_models_dir(s: &str) -> Result<String, SettingError> {
    image_dir("models_dir", s, "/models")
}

/// An absolute folder inside the image: no `.`/`..`/empty segments, no trailing `/`.
fn image_dir(name: &'static str, s: &str, example: &'static str) -> Result<String, SettingError> {
    let trimmed = s.trim_end_matches('/');
    if !trimmed.starts_with('/') || trimmed.len() < 2 {
        return Err(SettingError::NotAbsolute {
            name,
            value: s.to_owned(),
            example,
        });
    }
    if trimmed[1..]
        .split('/')
        .any(|seg| seg.is_empty() || seg == "." || seg == "..")
    {
        return Err(SettingError::BadSegment {
            name,
            value: s.to_owned(),
        });
    }
    Ok(trimmed.to_owned())
}

/// Parses `KEY=VALUE` (`--label`, `--annotation`): the key is everything before the first `=`
/// and must not be empty; the value may be empty or contain `=`.
pub fn parse_key_value(s: &str) -> Result<(String, String), SettingError> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_owned(), v.to_owned())),
        _ => Err(SettingError::NotKeyValue(s.to_owned())),
    }
}

/// Parses `uid:gid`.
pub fn parse_owner(s: &str) -> Result<(u32, u32), SettingError> {
    let err = || SettingError::NotOwner(s.to_owned());
    let (u, g) = s.split_once(':').ok_or_else(err)?;
    Ok((
        u.trim().parse().map_err(|_| err())?,
        g.trim().parse().map_err(|_| err())?,
    ))
}

/// Validates `[bake]` with located errors and applies defaults.
pub(super) fn bake_settings(
    path: &Path,
    text: &str,
    doc: BakeDoc,
) -> Result<BakeSettings, SourceError> {
    let mut b = BakeSettings::default();
    if let Some(h) = doc.hf_home {
        b.hf_home = parse_hf_home(h.get_ref())
            .map_err(|e| SourceError::at(path, text, Some(h.span()), e.to_string()))?;
    }
    if let Some(o) = doc.owner {
        b.owner = parse_owner(o.get_ref())
            .map_err(|e| SourceError::at(path, text, Some(o.span()), e.to_string()))?;
    }
    if let Some(c) = doc.compression {
        b.compression = c;
    }
    b.base = doc.base.filter(|s| !s.trim().is_empty());
    if let Some(p) = doc.platform {
        b.platform = p;
    }
    if let Some(m) = doc.max_layer_size {
        b.max_layer_size = m.max(1);
    }
    if let Some(o) = doc.offline_env {
        b.offline_env = o;
    }
    if let Some(l) = doc.layout {
        b.layout = l;
    }
    if let Some(d) = doc.models_dir {
        b.models_dir = parse_models_dir(d.get_ref())
            .map_err(|e| SourceError::at(path, text, Some(d.span()), e.to_string()))?;
    }
    if let Some(f) = doc.flat {
        b.flat = f;
    }
    for (host, r) in doc.registry {
        if r.chunk_size == Some(0) || r.chunked_threshold == Some(0) {
            return Err(SourceError::at(
                path,
                text,
                None,
                format!(
                    "[bake.registry.\"{host}\"]: chunk_size and chunked_threshold must be at least 1 byte"
                ),
            ));
        }
        b.registry.insert(host, r);
    }
    for (field, map) in [("labels", &doc.labels), ("annotations", &doc.annotations)] {
        if let Some(key) = map
            .iter()
            .flatten()
            .map(|(k, _)| k)
            .find(|k| k.trim().is_empty())
        {
            return Err(SourceError::at(
                path,
                text,
                None,
                format!(
                    "[bake] {field}: the key `{key}` is empty; name each entry, e.g. `org.opencontainers.image.source`"
                ),
            ));
        }
    }
    b.labels = doc.labels.unwrap_or_default();
    b.annotations = doc.annotations.unwrap_or_default();
    Ok(b)
}
