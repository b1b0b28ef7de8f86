//! `models.toml` (or Cargo metadata) parsed into one model of intent: which repos, at which
//! revision, with which files. Every mistake is reported with file, line and column.

mod cargo;
pub mod diagnostic;
pub mod pattern;

mod plugins;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use schemars::JsonSchema;
use serde::Deserialize;
use toml::Spanned;

use crate::repo::{RepoId, RepoKey, RepoKind, Revision};
pub use diagnostic::SourceError;
pub use pattern::Pattern;
pub use plugins::{PluginDoc, PluginSource, PluginSpec, is_https_or_loopback_http};

/// The file name modelbake looks for before falling back to Cargo metadata.
pub const MANIFEST_FILE: &str = "models.toml";
/// The lock file written beside the manifest.
pub const LOCK_FILE: &str = "models.lock";

/// The contents of `models.toml`; the same tables may sit under
/// `[package.metadata.modelbake]` or `[workspace.metadata.modelbake]` in a `Cargo.toml`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "models.toml", extend("$id" = "https://modelbake.dev/schemas/models.toml.json"))]
pub struct ManifestDoc {
    /// Settings every repo inherits unless it sets its own.
    #[serde(default)]
    pub defaults: Defaults,
    /// Model repositories (`[[model]]`).
    #[serde(default)]
    pub model: Vec<RepoEntry>,
    /// Dataset repositories (`[[dataset]]`).
    #[serde(default)]
    pub dataset: Vec<RepoEntry>,
    /// Space repositories (`[[space]]`).
    #[serde(default)]
    pub space: Vec<RepoEntry>,
    /// Image settings for `modelbake bake` (command-line flags override them).
    #[serde(default)]
    pub bake: BakeDoc,
    /// WebAssembly plugins by name (`[plugins.NAME]`): mirrors, policies, pruners.
    #[serde(default)]
    pub plugins: BTreeMap<String, PluginDoc>,
    /// Where downloads come from before the Hub endpoint.
    #[serde(default)]
    pub mirror: MirrorDoc,
    /// A registry repository that shares built layers between machines (`bake`, `fetch`).
    #[serde(default)]
    pub cache: CacheDoc,
}

/// `[cache]`: a registry repository used as a shared layer cache by `bake` and `fetch`
/// (see docs/cache-repository.md). Off unless set; `--no-cache` turns it off for one run.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CacheDoc {
    /// `REGISTRY/REPO` holding the cache records, e.g. `ghcr.io/acme/modelbake-cache`.
    #[schemars(with = "Option<String>")]
    pub registry: Option<Spanned<String>>,
}

/// `[mirror]`: mirror plugins tried, in order, before the Hub endpoint.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MirrorDoc {
    /// Names of `[plugins.NAME]` entries that export the mirror interface. Every file a mirror
    /// serves is checked against the lock's sha256; a failing mirror falls back to the next.
    #[serde(rename = "use", default)]
    #[schemars(with = "Vec<String>")]
    pub use_: Vec<Spanned<String>>,
    /// Credential name → the only origin (`https://host[:port]`) it may be sent to. A mirror
    /// candidate naming a credential gets it (from `MODELBAKE_CREDENTIAL_<NAME>`) only when its
    /// URL has exactly this origin; plugins never choose where a secret goes.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, String>")]
    pub credentials: BTreeMap<String, Spanned<String>>,
}

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
    pub layout: Option<ImageLayout>,
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

/// How the locked repos are laid out inside an image.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ImageLayout {
    /// The huggingface_hub cache (`blobs/`, `refs/`, `snapshots/` symlinks) under `HF_HOME`.
    #[default]
    HfCache,
    /// Each repo's snapshot as regular files under `models_dir/<org>/<name>/` (no symlinks).
    Files,
}

impl std::str::FromStr for ImageLayout {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "hf-cache" => Ok(ImageLayout::HfCache),
            "files" => Ok(ImageLayout::Files),
            other => Err(format!(
                "unknown layout `{other}`: expected hf-cache or files"
            )),
        }
    }
}

/// `[bake.registry."HOST"]`: how blobs are uploaded to one registry. Unset values take the
/// defaults for that registry (see docs/registry-uploads.md).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RegistryUpload {
    /// Blobs larger than this many bytes go in chunks (POST, PATCH…, PUT) that resume where a
    /// dropped connection left them; smaller ones in one PUT. Default 64 MiB.
    pub chunked_threshold: Option<u64>,
    /// Bytes per PATCH of a chunked upload (at least 1; raised to the registry's
    /// `OCI-Chunk-Min-Length`). Default 16 MiB; ECR (`*.amazonaws.com`) 16 MiB, GHCR 4,000,000 bytes (its per-PATCH cap).
    pub chunk_size: Option<u64>,
}

/// Compression of image layers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// Plain tar: the fastest, and weights barely compress.
    #[default]
    None,
    /// gzip, understood by every registry and runtime.
    Gzip,
    /// zstd (multi-threaded), smaller and faster than gzip; needs a recent runtime.
    Zstd,
}

impl std::str::FromStr for Compression {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "none" => Ok(Compression::None),
            "gzip" => Ok(Compression::Gzip),
            "zstd" => Ok(Compression::Zstd),
            other => Err(format!(
                "unknown compression `{other}`: expected none, gzip or zstd"
            )),
        }
    }
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
    pub layout: ImageLayout,
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
            layout: ImageLayout::HfCache,
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
    pub layout: Option<ImageLayout>,
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
pub fn parse_hf_home(s: &str) -> Result<String, String> {
    image_dir("hf_home", s, "/root/.cache/huggingface")
}

/// Checks an in-image `models_dir` the way [`parse_hf_home`] checks `HF_HOME`.
pub fn parse_models_dir(s: &str) -> Result<String, String> {
    image_dir("models_dir", s, "/models")
}

/// An absolute folder inside the image: no `.`/`..`/empty segments, no trailing `/`.
fn image_dir(name: &str, s: &str, example: &str) -> Result<String, String> {
    let trimmed = s.trim_end_matches('/');
    if !trimmed.starts_with('/') || trimmed.len() < 2 {
        return Err(format!(
            "{name} `{s}` must be an absolute path inside the image, e.g. `{example}`"
        ));
    }
    if trimmed[1..]
        .split('/')
        .any(|seg| seg.is_empty() || seg == "." || seg == "..")
    {
        return Err(format!(
            "{name} `{s}` must not contain empty, `.` or `..` segments"
        ));
    }
    Ok(trimmed.to_owned())
}

/// Parses `KEY=VALUE` (`--label`, `--annotation`): the key is everything before the first `=`
/// and must not be empty; the value may be empty or contain `=`.
pub fn parse_key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_owned(), v.to_owned())),
        _ => Err(format!(
            "`{s}` is not KEY=VALUE, e.g. org.opencontainers.image.source=https://github.com/acme/app"
        )),
    }
}

/// Parses `uid:gid`.
pub fn parse_owner(s: &str) -> Result<(u32, u32), String> {
    let err = || format!("owner `{s}` must be `uid:gid` with numbers, e.g. `0:0` or `1000:1000`");
    let (u, g) = s.split_once(':').ok_or_else(err)?;
    Ok((
        u.trim().parse().map_err(|_| err())?,
        g.trim().parse().map_err(|_| err())?,
    ))
}

/// `[defaults]`: values a repo entry inherits when it does not set them.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Defaults {
    /// Revision to follow when a repo sets none (default `main`).
    pub revision: Option<Revision>,
    /// Globs of files to lock (huggingface_hub `allow_patterns` semantics); empty means all.
    #[schemars(with = "Option<Vec<String>>")]
    pub include: Option<Vec<Spanned<String>>>,
    /// Globs of files to leave out (huggingface_hub `ignore_patterns` semantics).
    #[schemars(with = "Option<Vec<String>>")]
    pub exclude: Option<Vec<Spanned<String>>>,
    /// Policy plugins (names of `[plugins.NAME]`) that choose which of the selected files to
    /// lock, applied in order at `modelbake lock`.
    #[schemars(with = "Option<Vec<String>>")]
    pub policy: Option<Vec<Spanned<String>>>,
}

/// One `[[model]]`, `[[dataset]]` or `[[space]]` entry.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RepoEntry {
    /// The repo id on the Hub: `name` or `namespace/name`.
    #[schemars(with = "RepoId")]
    pub id: Spanned<RepoId>,
    /// A branch, a tag, `refs/pr/N` or a full 40-hex commit; a commit needs no network to
    /// resolve.
    pub revision: Option<Revision>,
    /// Globs of files to lock; replaces `defaults.include`. A pattern ending in `/` selects a
    /// folder; `*` also matches `/`.
    #[schemars(with = "Option<Vec<String>>")]
    pub include: Option<Vec<Spanned<String>>>,
    /// Globs of files to leave out; replaces `defaults.exclude`.
    #[schemars(with = "Option<Vec<String>>")]
    pub exclude: Option<Vec<Spanned<String>>>,
    /// Policy plugins for this repo; replaces `defaults.policy` (`[]` turns them off).
    #[schemars(with = "Option<Vec<String>>")]
    pub policy: Option<Vec<Spanned<String>>>,
}

/// Where the manifest was read from, which decides where the lock goes and how errors read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ManifestOrigin {
    /// A `models.toml` file.
    ModelsToml,
    /// `[package.metadata.modelbake]` in a package's `Cargo.toml`.
    CargoPackage,
    /// `[workspace.metadata.modelbake]` in a workspace root `Cargo.toml`.
    CargoWorkspace,
}

/// One repo the project needs, with defaults applied: everything `lock` needs to resolve it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoSpec {
    /// Model, dataset or space.
    pub kind: RepoKind,
    /// The repo id.
    pub id: RepoId,
    /// The revision as written (or the default).
    pub revision: Revision,
    /// Files to keep (empty: all).
    pub include: Vec<Pattern>,
    /// Files to drop.
    pub exclude: Vec<Pattern>,
    /// Policy plugins applied in order to the selected files.
    pub policy: Vec<String>,
}

impl RepoSpec {
    /// True when `path` is selected by this repo's include/exclude patterns.
    pub fn selects(&self, path: &str) -> bool {
        pattern::is_selected(path, &self.include, &self.exclude)
    }
}

/// The project's intent, ready to be locked.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// The file the intent was read from.
    pub path: PathBuf,
    /// What kind of file that is.
    pub origin: ManifestOrigin,
    /// Repos in manifest order.
    pub repos: Vec<RepoSpec>,
    /// `[bake]` settings.
    pub bake: BakeSettings,
    /// Declared plugins by name.
    pub plugins: BTreeMap<String, PluginSpec>,
    /// Mirror plugins to try, in order, before the Hub endpoint.
    pub mirrors: Vec<String>,
    /// Credential name → the origin it may be sent to (`[mirror.credentials]`).
    pub credentials: BTreeMap<String, url::Origin>,
    /// `[cache] registry`: the cache repository as written (`REGISTRY/REPO`), checked to parse.
    pub cache: Option<String>,
}

impl Manifest {
    /// `models.lock` beside the manifest file.
    pub fn lock_path(&self) -> PathBuf {
        self.path.with_file_name(LOCK_FILE)
    }

    /// Parses `models.toml` text; `path` is only used in messages and for the lock location.
    pub fn from_models_toml(path: &Path, text: &str) -> Result<Self, SourceError> {
        let doc: ManifestDoc =
            toml::from_str(text).map_err(|e| SourceError::from_toml(path, text, &e))?;
        Manifest::from_doc(path, text, ManifestOrigin::ModelsToml, doc)
    }

    /// Reads the manifest at `path`: a `Cargo.toml` is read for its modelbake metadata, any
    /// other file as `models.toml`.
    pub fn load(path: &Path) -> Result<Self, SourceError> {
        if path.file_name().is_some_and(|n| n == "Cargo.toml") {
            return cargo::load_cargo_manifest(path);
        }
        let text = read(path)?;
        Manifest::from_models_toml(path, &text)
    }

    /// Finds the manifest for a command run in `dir`: the nearest `models.toml` in `dir` or a
    /// parent, else modelbake metadata in the enclosing Cargo package or workspace.
    pub fn discover(dir: &Path) -> Result<Self, SourceError> {
        for ancestor in dir.ancestors() {
            let candidate = ancestor.join(MANIFEST_FILE);
            if candidate.is_file() {
                return Manifest::load(&candidate);
            }
        }
        if let Some(cargo_toml) = dir
            .ancestors()
            .map(|a| a.join("Cargo.toml"))
            .find(|p| p.is_file())
        {
            return cargo::load_cargo_manifest(&cargo_toml);
        }
        Err(SourceError {
            path: dir.join(MANIFEST_FILE),
            location: None,
            message: format!(
                "no {MANIFEST_FILE} in {} or any parent folder, and no Cargo.toml with \
                 [package.metadata.modelbake]; create a {MANIFEST_FILE} (see `modelbake lock --help`) \
                 or pass --manifest PATH",
                dir.display()
            ),
            snippet: None,
        })
    }

    /// Applies defaults and checks what serde cannot: patterns (located precisely, element by
    /// element) and duplicate repos.
    fn from_doc(
        path: &Path,
        text: &str,
        origin: ManifestOrigin,
        doc: ManifestDoc,
    ) -> Result<Self, SourceError> {
        let compile =
            |list: Option<Vec<Spanned<String>>>| -> Result<Option<Vec<Pattern>>, SourceError> {
                list.map(|items| {
                    items
                        .into_iter()
                        .map(|item| {
                            let span = item.span();
                            Pattern::parse(item.get_ref())
                                .map_err(|e| SourceError::at(path, text, Some(span), e.to_string()))
                        })
                        .collect()
                })
                .transpose()
            };
        let default_include = compile(doc.defaults.include)?;
        let default_exclude = compile(doc.defaults.exclude)?;
        let plugins = plugins::specs(path, text, doc.plugins)?;
        let names =
            |list: Option<Vec<Spanned<String>>>| -> Result<Option<Vec<String>>, SourceError> {
                list.map(|items| {
                    items
                        .into_iter()
                        .map(|item| plugins::known(path, text, &plugins, item))
                        .collect()
                })
                .transpose()
            };
        let default_policy = names(doc.defaults.policy)?;
        let mirrors = names(Some(doc.mirror.use_))?.unwrap_or_default();
        let credentials = plugins::credentials(path, text, doc.mirror.credentials)?;
        let mut repos = Vec::new();
        let mut seen: Vec<RepoKey> = Vec::new();
        let kinds = [
            (RepoKind::Model, doc.model),
            (RepoKind::Dataset, doc.dataset),
            (RepoKind::Space, doc.space),
        ];
        for (kind, entries) in kinds {
            for entry in entries {
                let span = entry.id.span();
                let id = entry.id.into_inner();
                let key = RepoKey::new(kind, id.clone());
                if seen.contains(&key) {
                    return Err(SourceError::at(
                        path,
                        text,
                        Some(span),
                        format!(
                            "{key} is listed twice; keep one entry per repo (use a full commit or \
                             another revision in that single entry)"
                        ),
                    ));
                }
                seen.push(key);
                repos.push(RepoSpec {
                    kind,
                    id,
                    revision: entry
                        .revision
                        .or_else(|| doc.defaults.revision.clone())
                        .unwrap_or_else(Revision::main),
                    include: compile(entry.include)?
                        .or_else(|| default_include.clone())
                        .unwrap_or_default(),
                    exclude: compile(entry.exclude)?
                        .or_else(|| default_exclude.clone())
                        .unwrap_or_default(),
                    policy: names(entry.policy)?
                        .or_else(|| default_policy.clone())
                        .unwrap_or_default(),
                });
            }
        }
        let bake = bake_settings(path, text, doc.bake)?;
        // Parsed as an image reference where it is used (`oci::reference`); here only the
        // shape, so that a typo is reported with its location.
        let cache = doc
            .cache
            .registry
            .map(|r| {
                let span = r.span();
                let value = r.into_inner();
                match value.split_once('/') {
                    Some((host, repo)) if !host.is_empty() && !repo.is_empty() => Ok(value),
                    _ => Err(SourceError::at(
                        path,
                        text,
                        Some(span),
                        format!("[cache] registry `{value}` must be REGISTRY/REPO, e.g. ghcr.io/acme/modelbake-cache"),
                    )),
                }
            })
            .transpose()?;
        Ok(Manifest {
            path: path.to_owned(),
            origin,
            repos,
            bake,
            plugins,
            mirrors,
            credentials,
            cache,
        })
    }
}

/// Validates `[bake]` with located errors and applies defaults.
fn bake_settings(path: &Path, text: &str, doc: BakeDoc) -> Result<BakeSettings, SourceError> {
    let mut b = BakeSettings::default();
    if let Some(h) = doc.hf_home {
        b.hf_home = parse_hf_home(h.get_ref())
            .map_err(|e| SourceError::at(path, text, Some(h.span()), e))?;
    }
    if let Some(o) = doc.owner {
        b.owner =
            parse_owner(o.get_ref()).map_err(|e| SourceError::at(path, text, Some(o.span()), e))?;
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
            .map_err(|e| SourceError::at(path, text, Some(d.span()), e))?;
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

/// Reads a manifest file, turning I/O errors into located errors.
fn read(path: &Path) -> Result<String, SourceError> {
    std::fs::read_to_string(path).map_err(|e| SourceError {
        path: path.to_owned(),
        location: None,
        message: format!("cannot read the manifest: {e}"),
        snippet: None,
    })
}

#[cfg(test)]
mod fuzz_tests;

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Manifest, SourceError> {
        Manifest::from_models_toml(Path::new("models.toml"), text)
    }

    #[test]
    fn applies_defaults_and_overrides() {
        let m = parse(
            r#"
[defaults]
include = ["*.json"]
revision = "v1"

[[model]]
id = "acme/a"

[[model]]
id = "acme/b"
revision = "main"
include = ["*.safetensors"]
exclude = ["onnx/"]

[[dataset]]
id = "acme/data"
"#,
        )
        .unwrap();
        assert_eq!(m.repos.len(), 3);
        assert_eq!(m.repos[0].revision.as_str(), "v1");
        assert!(m.repos[0].selects("config.json"));
        assert!(!m.repos[0].selects("model.safetensors"));
        assert_eq!(m.repos[1].revision.as_str(), "main");
        assert!(m.repos[1].selects("model.safetensors"));
        assert!(!m.repos[1].selects("config.json"));
        assert_eq!(m.repos[2].kind, RepoKind::Dataset);
        assert_eq!(m.lock_path(), Path::new("models.lock"));
    }

    #[test]
    fn unknown_key_names_line_and_column() {
        let e = parse("[[model]]\nid = \"acme/a\"\nrevison = \"main\"\n").unwrap_err();
        assert_eq!(e.location, Some((3, 1)), "{e}");
        assert!(e.message.contains("unknown field `revison`"), "{e}");
        assert!(
            e.message.contains("revision"),
            "expected fields are listed: {e}"
        );
    }

    #[test]
    fn bad_repo_id_names_line_and_column() {
        let e = parse("[[model]]\nid = \"acme/bad id\"\n").unwrap_err();
        assert_eq!(e.location, Some((2, 6)), "{e}");
        assert!(e.message.contains("invalid repo id `acme/bad id`"), "{e}");
    }

    #[test]
    fn bad_glob_names_line_and_column() {
        let e = parse("[[model]]\nid = \"acme/a\"\ninclude = [\"*.json\", \"/x[\"]\n").unwrap_err();
        assert_eq!(e.location, Some((3, 22)), "{e}");
        assert!(e.message.contains("starts with `/`"), "{e}");
    }

    #[test]
    fn unknown_table_is_an_error() {
        let e = parse("[[models]]\nid = \"acme/a\"\n").unwrap_err();
        assert!(e.message.contains("unknown field `models`"), "{e}");
        assert_eq!(e.location.map(|l| l.0), Some(1));
    }

    #[test]
    fn bake_settings_are_validated_with_locations() {
        let m = parse(
            "[bake]\nhf_home = \"/models/\"\nowner = \"1000:1000\"\ncompression = \"zstd\"\n",
        )
        .unwrap();
        assert_eq!(m.bake.hf_home, "/models");
        assert_eq!(m.bake.owner, (1000, 1000));
        assert_eq!(m.bake.compression, Compression::Zstd);
        let e = parse("[bake]\nhf_home = \"relative/x\"\n").unwrap_err();
        assert_eq!(e.location, Some((2, 11)), "{e}");
        let e = parse("[bake]\nowner = \"root\"\n").unwrap_err();
        assert!(e.message.contains("uid:gid"), "{e}");
        let e = parse("[bake]\ncompression = \"lz4\"\n").unwrap_err();
        assert!(e.message.contains("unknown variant `lz4`"), "{e}");
        assert_eq!(parse("").unwrap().bake, BakeSettings::default());
    }

    #[test]
    fn duplicate_repo_is_an_error() {
        let e = parse("[[model]]\nid = \"acme/a\"\n[[model]]\nid = \"acme/a\"\n").unwrap_err();
        assert_eq!(e.location, Some((4, 6)), "{e}");
        assert!(e.message.contains("listed twice"));
        // The same id as a dataset is a different repo.
        assert!(parse("[[model]]\nid = \"acme/a\"\n[[dataset]]\nid = \"acme/a\"\n").is_ok());
    }

    #[test]
    fn labels_and_annotations_come_from_bake_and_flags_win() {
        let m = parse(
            "[bake]\nlabels = { \"org.opencontainers.image.source\" = \"https://github.com/acme/app\", team = \"ml\" }\nannotations = { \"a.b\" = \"1\" }\n",
        )
        .unwrap();
        assert_eq!(m.bake.labels["team"], "ml");
        assert_eq!(m.bake.annotations["a.b"], "1");
        let merged = m.bake.with(&BakeOverrides {
            labels: vec![("team".into(), "infra".into()), ("x".into(), "".into())],
            annotations: vec![parse_key_value("c=d=e").unwrap()],
            ..Default::default()
        });
        assert_eq!(merged.labels.len(), 3);
        assert_eq!(merged.labels["team"], "infra");
        assert_eq!(merged.labels["x"], "");
        assert_eq!(merged.annotations["c"], "d=e");
        assert_eq!(merged.annotations["a.b"], "1");
        let e = parse("[bake]\nlabels = { \"\" = \"x\" }\n").unwrap_err();
        assert!(e.message.contains("empty"), "{e}");
        for bad in ["novalue", "=v", " =v"] {
            assert!(parse_key_value(bad).is_err(), "{bad}");
        }
    }
}
