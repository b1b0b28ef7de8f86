//! `models.toml` (or Cargo metadata) parsed into one model of intent: which repos, at which
//! revision, with which files. Every mistake is reported with file, line and column.

pub mod bake_table;
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
use bake_table::{BakeDoc, BakeSettings, bake_settings};
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
    use crate::manifest::bake_table::{BakeOverrides, parse_key_value};
    use crate::oci::Compression;

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
