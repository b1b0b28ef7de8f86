//! Tools for plugin authors: `plugin build` (cargo build for wasm, then the core module is
//! turned into a component in-process, so no extra tool is needed), `plugin check` (what a
//! component imports and exports, and whether this modelbake can host it) and `plugin new`
//! (a crate that builds into a plugin of the chosen kind).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::PluginKind;
use super::sdk_bundle::SdkBundleError;

/// An error from a library that reports its failures as opaque boxed errors (wit-component),
/// kept with its chain of causes.
type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why `plugin build` or `plugin new` failed: each variant names what was being done and, where
/// there is one, the file or folder.
#[derive(Debug, thiserror::Error)]
pub enum AuthorError {
    /// The core module carries no usable WIT world.
    #[error(
        "reading the module's embedded WIT world (was it built with the modelbake plugin SDK / wit-bindgen?)"
    )]
    ReadWorld(#[source] BoxError),
    /// The module could not be turned into a component.
    #[error("turning the module into a component")]
    Encode(#[source] BoxError),
    /// `cargo metadata` failed.
    #[error("reading the cargo metadata of {}", .manifest.display())]
    Metadata {
        /// The `Cargo.toml` asked about.
        manifest: PathBuf,
        /// What cargo said.
        source: cargo_metadata::Error,
    },
    /// The crate's `Cargo.toml` is not there.
    #[error("cannot find {}", .path.display())]
    NotFound {
        /// The path looked for.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// No crate at the path (or of the names asked for) builds a `cdylib`.
    #[error(
        "no plugin crate (a `crate-type = [\"cdylib\"]` library) at {}{}; create one with `modelbake plugin new NAME`",
        .manifest.display(),
        if .packages.is_empty() { String::new() } else { format!(" named {}", .packages.join(", ")) }
    )]
    NoPluginCrate {
        /// The `Cargo.toml` looked at.
        manifest: PathBuf,
        /// The `-p` names asked for, if any.
        packages: Vec<String>,
    },
    /// cargo could not be started.
    #[error("running cargo (is the Rust toolchain installed?)")]
    RunCargo(#[source] std::io::Error),
    /// `cargo build` failed; its diagnostics are already on stderr.
    #[error(
        "cargo build failed (see above); if the target is missing, run `rustup target add {target}`"
    )]
    CargoFailed {
        /// The target built for.
        target: String,
    },
    /// cargo reported no `.wasm` artifact.
    #[error("cargo built nothing with a .wasm output for target {target}")]
    NothingBuilt {
        /// The target built for.
        target: String,
    },
    /// A built module could not be turned into a component.
    #[error("componentizing {}", .file.display())]
    Componentize {
        /// The module cargo wrote.
        file: PathBuf,
        /// Why.
        source: Box<AuthorError>,
    },
    /// A file or folder could not be read, created or written.
    #[error("{what} {}", .path.display())]
    Io {
        /// What was being done (`reading`, `creating`, `writing`, `writing the crate at`).
        what: &'static str,
        /// The file or folder.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// `plugin new` was given a name cargo would refuse.
    #[error("plugin crate names use lowercase letters, digits and `-`, e.g. `corp-mirror`")]
    BadName,
    /// `plugin new` would overwrite a folder.
    #[error("{} already exists; pick another name or --dir", .0.display())]
    Exists(PathBuf),
    /// `plugin new --sdk` names no folder.
    #[error("cannot find the plugin SDK at {}", .path.display())]
    NoSdk {
        /// The path given.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The bundled SDK could not be written.
    #[error(transparent)]
    Sdk(#[from] SdkBundleError),
}

/// What plugin authors can do about a failed build or scaffold.
impl crate::hint::Hint for AuthorError {
    fn hint(&self) -> Option<String> {
        let hint = match self {
            AuthorError::ReadWorld(_) => {
                "build the crate with `modelbake plugin build`, depending on modelbake-plugin-sdk \
                 (`modelbake plugin new NAME` sets that up), so the module embeds its WIT world"
            }
            AuthorError::NoPluginCrate { .. } => {
                "a plugin crate is a library with `crate-type = [\"cdylib\"]` under [lib] in its \
                 Cargo.toml; pass its folder, or `-p NAME` for one crate of a workspace"
            }
            AuthorError::RunCargo(_) => {
                "install Rust with rustup (https://rustup.rs), or set CARGO to the cargo binary to use"
            }
            AuthorError::NothingBuilt { .. } => {
                "check that the crate's [lib] has `crate-type = [\"cdylib\"]`: only a cdylib \
                 builds a .wasm"
            }
            AuthorError::Componentize { source, .. } => return source.hint(),
            AuthorError::Encode(_)
            | AuthorError::Metadata { .. }
            | AuthorError::NotFound { .. }
            | AuthorError::CargoFailed { .. }
            | AuthorError::Io { .. }
            | AuthorError::BadName
            | AuthorError::Exists(_)
            | AuthorError::NoSdk { .. }
            | AuthorError::Sdk(_) => return None,
        };
        Some(hint.to_owned())
    }
}

/// `Io` with what was being done and the path, for `map_err`.
fn io(what: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> AuthorError {
    let path = path.into();
    move |source| AuthorError::Io { what, path, source }
}

/// The default guest target: no WASI, so the component imports only our interfaces.
pub const DEFAULT_TARGET: &str = "wasm32-unknown-unknown";

/// One component `plugin build` wrote.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BuiltPlugin {
    /// The crate's package name.
    pub package: String,
    /// Where the component is.
    pub path: PathBuf,
    /// Its sha256 (what models.lock will pin).
    pub sha256: String,
    /// Its size in bytes.
    pub size: u64,
}

/// True for a core wasm module (as opposed to a component).
pub fn is_core_module(bytes: &[u8]) -> bool {
    bytes.len() >= 8 && bytes[..4] == *b"\0asm" && bytes[4..8] == [1, 0, 0, 0]
}

/// Turns a core module built with wit-bindgen (which embeds its WIT world in a custom
/// section) into a component; components are returned unchanged.
pub fn componentize(bytes: &[u8]) -> Result<Vec<u8>, AuthorError> {
    if !is_core_module(bytes) {
        return Ok(bytes.to_vec());
    }
    wit_component::ComponentEncoder::default()
        .validate(true)
        .module(bytes)
        .map_err(|e| AuthorError::ReadWorld(e.into()))?
        .encode()
        .map_err(|e| AuthorError::Encode(e.into()))
}

/// Builds the plugin crate(s) at `dir` (a crate, or a workspace: every cdylib member) for
/// `target`, and writes one component per crate into `out` (default
/// `<target dir>/modelbake-plugins`).
pub fn build(
    dir: &Path,
    target: &str,
    release: bool,
    packages: &[String],
    out: Option<&Path>,
) -> Result<Vec<BuiltPlugin>, AuthorError> {
    let manifest = if dir.is_file() {
        dir.to_owned()
    } else {
        dir.join("Cargo.toml")
    };
    let meta = cargo_metadata::MetadataCommand::new()
        .manifest_path(&manifest)
        .no_deps()
        .exec()
        .map_err(|source| AuthorError::Metadata {
            manifest: manifest.clone(),
            source,
        })?;
    let manifest_abs =
        std::fs::canonicalize(&manifest).map_err(|source| AuthorError::NotFound {
            path: manifest.clone(),
            source,
        })?;
    let is_plugin = |p: &cargo_metadata::Package| {
        p.targets
            .iter()
            .any(|t| t.crate_types.iter().any(|c| c.to_string() == "cdylib"))
    };
    let chosen: Vec<&cargo_metadata::Package> = meta
        .workspace_packages()
        .into_iter()
        .filter(|p| is_plugin(p))
        .filter(|p| {
            if packages.is_empty() {
                // The crate at `dir`, or every plugin crate when `dir` is the workspace root.
                std::fs::canonicalize(&p.manifest_path).ok().as_deref() == Some(&manifest_abs)
                    || manifest_abs
                        == std::fs::canonicalize(meta.workspace_root.join("Cargo.toml"))
                            .unwrap_or_default()
            } else {
                packages.iter().any(|n| *n == p.name.as_str())
            }
        })
        .collect();
    if chosen.is_empty() {
        return Err(AuthorError::NoPluginCrate {
            manifest,
            packages: packages.to_vec(),
        });
    }
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.arg("build")
        .arg("--manifest-path")
        .arg(&manifest)
        .arg("--target")
        .arg(target)
        .arg("--lib")
        .arg("--message-format=json-render-diagnostics")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if release {
        cmd.arg("--release");
    }
    for p in &chosen {
        cmd.arg("-p").arg(p.name.as_str());
    }
    let output = cmd.output().map_err(AuthorError::RunCargo)?;
    if !output.status.success() {
        return Err(AuthorError::CargoFailed {
            target: target.to_owned(),
        });
    }
    let out_dir = out.map(Path::to_owned).unwrap_or_else(|| {
        meta.target_directory
            .join("modelbake-plugins")
            .into_std_path_buf()
    });
    std::fs::create_dir_all(&out_dir).map_err(io("creating", &out_dir))?;
    let mut built = Vec::new();
    for msg in cargo_metadata::Message::parse_stream(&output.stdout[..]) {
        let Ok(cargo_metadata::Message::CompilerArtifact(art)) = msg else {
            continue;
        };
        let Some(pkg) = chosen.iter().find(|p| p.id == art.package_id) else {
            continue;
        };
        for file in art
            .filenames
            .iter()
            .filter(|f| f.extension() == Some("wasm"))
        {
            let bytes = std::fs::read(file).map_err(io("reading", file))?;
            let component = componentize(&bytes).map_err(|e| AuthorError::Componentize {
                file: file.clone().into_std_path_buf(),
                source: Box::new(e),
            })?;
            let name = format!("{}.wasm", art.target.name.replace('-', "_"));
            let dest = out_dir.join(name);
            crate::fs_atomic::write_atomic(&dest, &component, crate::fs_atomic::Mode::KeepExisting)
                .map_err(io("writing", &dest))?;
            built.push(BuiltPlugin {
                package: pkg.name.to_string(),
                path: dest,
                sha256: crate::hash::sha256_hex(&component),
                size: component.len() as u64,
            });
        }
    }
    if built.is_empty() {
        return Err(AuthorError::NothingBuilt {
            target: target.to_owned(),
        });
    }
    built.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(built)
}

/// `--kind` named no plugin kind (what clap shows for a bad value).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown plugin kind `{0}`: expected mirror, policy or pruner")]
pub struct UnknownKind(pub String);

/// Parses `--kind`.
pub fn parse_kind(s: &str) -> Result<PluginKind, UnknownKind> {
    match s {
        "mirror" => Ok(PluginKind::Mirror),
        "policy" => Ok(PluginKind::Policy),
        "pruner" => Ok(PluginKind::Pruner),
        other => Err(UnknownKind(other.to_owned())),
    }
}

/// Creates a plugin crate `dir/name` of `kind`; fails if the folder exists. The crate is its
/// own workspace, with the release profile plugins want (small, `panic = "abort"`). It depends
/// on the SDK at `sdk` (an SDK checkout, for SDK development) or, by default, on a copy of the
/// SDK bundled in this binary, written under `vendor/` with the tested `Cargo.lock`, so it
/// builds anywhere with only cargo and crates.io.
pub fn scaffold(
    dir: &Path,
    name: &str,
    kind: PluginKind,
    sdk: Option<&Path>,
) -> Result<PathBuf, AuthorError> {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        || name.starts_with('-')
    {
        return Err(AuthorError::BadName);
    }
    let root = dir.join(name);
    if root.exists() {
        return Err(AuthorError::Exists(root));
    }
    let (sdk_path, workspace_tables) = match sdk {
        Some(sdk) => {
            let sdk = std::fs::canonicalize(sdk).map_err(|source| AuthorError::NoSdk {
                path: sdk.to_owned(),
                source,
            })?;
            (sdk.display().to_string().replace('\\', "/"), String::new())
        }
        None => (
            super::sdk_bundle::sdk_crate_path(),
            format!(
                "\n# The vendored SDK crates inherit these (from modelbake {}).\n{}",
                env!("CARGO_PKG_VERSION"),
                super::sdk_bundle::workspace_tables()?
            ),
        ),
    };
    let cargo_toml = format!(
        r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2024"
publish = false

[lib]
crate-type = ["cdylib"]

[dependencies]
modelbake-plugin-sdk = {{ path = "{sdk_path}" }}

# Small plugins; a panic becomes a trap whose message the SDK sends to modelbake first.
[profile.release]
opt-level = "s"
lto = true
codegen-units = 1
panic = "abort"
strip = "debuginfo"

# Built on its own: `modelbake plugin build {name}`.
[workspace]
{workspace_tables}"#,
    );
    let lib = match kind {
        PluginKind::Mirror => SCAFFOLD_MIRROR,
        PluginKind::Policy => SCAFFOLD_POLICY,
        PluginKind::Pruner => SCAFFOLD_PRUNER,
    }
    .replace("{{name}}", name);
    std::fs::create_dir_all(root.join("src"))
        .and_then(|()| std::fs::create_dir_all(root.join("wit")))
        .and_then(|()| std::fs::write(root.join("Cargo.toml"), cargo_toml))
        .and_then(|()| std::fs::write(root.join("src/lib.rs"), lib))
        .and_then(|()| std::fs::write(root.join("wit/plugin.wit"), super::WIT_TEXT))
        .and_then(|()| std::fs::write(root.join(".gitignore"), "/target\n"))
        .map_err(io("writing the crate at", &root))?;
    if sdk.is_none() {
        super::sdk_bundle::write(&root)?;
        let lock = root.join("Cargo.lock");
        std::fs::write(&lock, super::sdk_bundle::PLUGINS_LOCK).map_err(io("writing", &lock))?;
    }
    Ok(root)
}

const SCAFFOLD_MIRROR: &str = r#"//! `{{name}}`: a modelbake mirror plugin. `resolve` gets a repo at a commit and its files and
//! returns, per file, the URLs to try before the Hub (none: "not mine"). modelbake checks every
//! byte against the lock's sha256, so a wrong mirror can never poison a build.
//! The interface is in wit/plugin.wit.

use modelbake_plugin_sdk::mirror::Candidate;
use modelbake_plugin_sdk::{Config, FileEntry, Info, Mirror, PluginError, RepoRef};

struct Plugin;

impl Mirror for Plugin {
    fn describe() -> Info {
        Info::new(
            env!("CARGO_PKG_NAME"),
            env!("CARGO_PKG_VERSION"),
            "Serves files from a mirror laid out like the Hub.",
            "base: the mirror's root URL, e.g. https://hf-mirror.example",
        )
    }

    fn validate_config(config: &Config) -> Result<(), PluginError> {
        config.check_known(&["base"])?;
        let base = config.require_string("base")?;
        if !base.starts_with("https://") && !base.starts_with("http://") {
            return Err(PluginError::invalid_config("base", "must be an http(s) URL"));
        }
        Ok(())
    }

    fn resolve(
        config: &Config,
        repo: &RepoRef,
        files: &[FileEntry],
    ) -> Result<Vec<Vec<Candidate>>, PluginError> {
        let base = config.require_string("base")?.trim_end_matches('/');
        Ok(files
            .iter()
            .map(|f| {
                vec![Candidate {
                    url: format!("{base}/{}/resolve/{}/{}", repo.id, repo.commit, f.path),
                    credential: None,
                }]
            })
            .collect())
    }
}

modelbake_plugin_sdk::export_mirror!(Plugin);
"#;

const SCAFFOLD_POLICY: &str = r#"//! `{{name}}`: a modelbake policy plugin. `select` gets a repo's files (after include/exclude)
//! and says which to lock; every other file must be listed as dropped, with a reason that
//! `modelbake lock` shows. The interface is in wit/plugin.wit.

use modelbake_plugin_sdk::policy::{Dropped, Selection};
use modelbake_plugin_sdk::{Config, FileEntry, Info, Policy, PluginError, RepoRef};

struct Plugin;

impl Policy for Plugin {
    fn describe() -> Info {
        Info::new(
            env!("CARGO_PKG_NAME"),
            env!("CARGO_PKG_VERSION"),
            "Drops files whose name ends with one of `drop-suffixes`.",
            "drop-suffixes: file name endings to leave out, e.g. [\".onnx\", \".h5\"]",
        )
    }

    fn validate_config(config: &Config) -> Result<(), PluginError> {
        config.check_known(&["drop-suffixes"])?;
        config.strings("drop-suffixes").map(|_| ())
    }

    fn select(
        config: &Config,
        _repo: &RepoRef,
        files: &[FileEntry],
    ) -> Result<Selection, PluginError> {
        let suffixes = config.strings("drop-suffixes")?.unwrap_or_default();
        let mut selection = Selection {
            keep: Vec::new(),
            dropped: Vec::new(),
        };
        for f in files {
            match suffixes.iter().find(|s| f.path.ends_with(s.as_str())) {
                Some(s) => selection.dropped.push(Dropped {
                    path: f.path.clone(),
                    reason: format!("ends with `{s}`"),
                }),
                None => selection.keep.push(f.path.clone()),
            }
        }
        Ok(selection)
    }
}

modelbake_plugin_sdk::export_policy!(Plugin);
"#;

const SCAFFOLD_PRUNER: &str = r#"//! `{{name}}`: a modelbake pruner plugin. `plan` gets the cached repos and revisions (with
//! sizes, last access and whether a lock needs them) and returns what to delete and why.
//! modelbake never deletes a locked revision, whatever the plan says.
//! The interface is in wit/plugin.wit.

use modelbake_plugin_sdk::pruner::{CachedRepo, Deletion, PruneContext};
use modelbake_plugin_sdk::{Config, Info, PluginError, Pruner};

struct Plugin;

impl Pruner for Plugin {
    fn describe() -> Info {
        Info::new(
            env!("CARGO_PKG_NAME"),
            env!("CARGO_PKG_VERSION"),
            "Deletes unlocked revisions not used for `max-age-days` days.",
            "max-age-days: days since last access after which an unlocked revision goes",
        )
    }

    fn validate_config(config: &Config) -> Result<(), PluginError> {
        config.check_known(&["max-age-days"])?;
        config.require_u64("max-age-days").map(|_| ())
    }

    fn plan(
        config: &Config,
        ctx: &PruneContext,
        repos: &[CachedRepo],
    ) -> Result<Vec<Deletion>, PluginError> {
        let max_age = config.require_u64("max-age-days")?.saturating_mul(86_400);
        let mut out = Vec::new();
        for repo in repos {
            for rev in &repo.revisions {
                let age = ctx.now.saturating_sub(rev.last_access);
                if !rev.locked && age > max_age {
                    out.push(Deletion {
                        kind: repo.kind,
                        id: repo.id.clone(),
                        commit: rev.commit.clone(),
                        reason: format!("not used for {} days", age / 86_400),
                    });
                }
            }
        }
        Ok(out)
    }
}

modelbake_plugin_sdk::export_pruner!(Plugin);
"#;
