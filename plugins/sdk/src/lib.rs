//! Guest SDK for modelbake WebAssembly plugins.
//!
//! A plugin is a `cdylib` crate that implements one of three traits — [`Mirror`], [`Policy`] or
//! [`Pruner`] — on a unit struct and exports it with [`export_mirror!`], [`export_policy!`] or
//! [`export_pruner!`]:
//!
//! ```no_run
//! use modelbake_plugin_sdk::{Config, FileEntry, Info, Mirror, PluginError, RepoRef};
//! use modelbake_plugin_sdk::mirror::Candidate;
//!
//! struct Plugin;
//!
//! impl Mirror for Plugin {
//!     fn describe() -> Info {
//!         Info::new(env!("CARGO_PKG_NAME"), env!("CARGO_PKG_VERSION"), "…", "base: …")
//!     }
//!     fn validate_config(config: &Config) -> Result<(), PluginError> {
//!         config.check_known(&["base"])?;
//!         config.require_string("base").map(|_| ())
//!     }
//!     fn resolve(
//!         config: &Config,
//!         repo: &RepoRef,
//!         files: &[FileEntry],
//!     ) -> Result<Vec<Vec<Candidate>>, PluginError> {
//!         Ok(files.iter().map(|_| Vec::new()).collect())
//!     }
//! }
//!
//! modelbake_plugin_sdk::export_mirror!(Plugin);
//! ```
//!
//! Build it with `cargo build --release --target wasm32-unknown-unknown`; the host turns the core
//! module into a component (`modelbake plugin build`). The bindings embed the WIT world in a
//! `component-type` custom section, and the module imports nothing but `modelbake:plugin/*`.
//!
//! Every exported call first installs (once) a panic hook that sends the panic message, with its
//! `file:line`, to the host's log at level error before the instance traps.

#![warn(missing_docs)]

use std::marker::PhantomData;

pub mod config;
pub mod log;
mod panic;
pub mod template;

pub use config::Config;
pub use panic::install_panic_hook;

/// The raw `wit-bindgen` output for the three worlds of `modelbake:plugin@0.1.0`.
///
/// Plugins normally do not need this module: the traits and macros at the crate root wrap it.
/// The `types` and `host` interfaces are generated once (in `bindings::mirror`) and shared by
/// the other two worlds, so [`RepoRef`], [`FileEntry`], [`PluginError`]… are the same Rust types
/// whichever kind of plugin uses them.
pub mod bindings {
    /// Bindings for the `mirror-plugin` world (also the home of the shared `types` and `host`).
    pub use modelbake_plugin_bindings_mirror as mirror;
    /// Bindings for the `policy-plugin` world.
    pub use modelbake_plugin_bindings_policy as policy;
    /// Bindings for the `pruner-plugin` world.
    pub use modelbake_plugin_bindings_pruner as pruner;
}

use bindings::mirror::exports::modelbake::plugin::meta as mirror_meta;
use bindings::policy::exports::modelbake::plugin::meta as policy_meta;
use bindings::pruner::exports::modelbake::plugin::meta as pruner_meta;

/// One value of a plugin's configuration table (`types.config-value`).
pub use bindings::mirror::modelbake::plugin::types::ConfigValue;
/// Why a plugin refused to answer (`types.error-code`).
pub use bindings::mirror::modelbake::plugin::types::ErrorCode;
/// One file of a repository (`types.file-entry`).
pub use bindings::mirror::modelbake::plugin::types::FileEntry;
/// A structured error the host shows to the user (`types.plugin-error`).
pub use bindings::mirror::modelbake::plugin::types::PluginError;
/// Which kind of Hub repository (`types.repo-kind`).
pub use bindings::mirror::modelbake::plugin::types::RepoKind;
/// A repository at a resolved commit (`types.repo-ref`).
pub use bindings::mirror::modelbake::plugin::types::RepoRef;

/// Types of the `mirror` interface.
pub mod mirror {
    /// One place a file's bytes can be downloaded from (`mirror.candidate`).
    pub use crate::bindings::mirror::exports::modelbake::plugin::mirror::Candidate;
}

/// Types of the `policy` interface.
pub mod policy {
    /// A path the policy does not keep, with why (`policy.dropped`).
    pub use crate::bindings::policy::exports::modelbake::plugin::policy::Dropped;
    /// The answer of a policy: what to keep and what to drop (`policy.selection`).
    pub use crate::bindings::policy::exports::modelbake::plugin::policy::Selection;
}

/// Types of the `pruner` interface.
pub mod pruner {
    /// One file of a cached revision (`pruner.cached-file`).
    pub use crate::bindings::pruner::exports::modelbake::plugin::pruner::CachedFile;
    /// One cached repository with its revisions (`pruner.cached-repo`).
    pub use crate::bindings::pruner::exports::modelbake::plugin::pruner::CachedRepo;
    /// One cached revision (`pruner.cached-revision`).
    pub use crate::bindings::pruner::exports::modelbake::plugin::pruner::CachedRevision;
    /// One revision the pruner wants deleted, with why (`pruner.deletion`).
    pub use crate::bindings::pruner::exports::modelbake::plugin::pruner::Deletion;
    /// The time and total cache size the host supplies (`pruner.prune-context`).
    pub use crate::bindings::pruner::exports::modelbake::plugin::pruner::PruneContext;
}

/// What a plugin says about itself (`meta.plugin-info`), shared by all three plugin kinds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Info {
    /// The plugin's name, usually `env!("CARGO_PKG_NAME")`.
    pub name: String,
    /// The plugin's version, usually `env!("CARGO_PKG_VERSION")`.
    pub version: String,
    /// One paragraph on what the plugin does.
    pub description: String,
    /// The configuration keys it reads, one per line: `key: meaning`.
    pub config_help: String,
}

impl Info {
    /// Builds an [`Info`] from its four fields.
    pub fn new(
        name: impl Into<String>,
        version: impl Into<String>,
        description: impl Into<String>,
        config_help: impl Into<String>,
    ) -> Self {
        Info {
            name: name.into(),
            version: version.into(),
            description: description.into(),
            config_help: config_help.into(),
        }
    }
}

/// A mirror plugin: says where else the bytes of a file can be downloaded from.
///
/// Export an implementation with [`export_mirror!`].
pub trait Mirror {
    /// The plugin's name, version, description and config help.
    fn describe() -> Info;

    /// Checks the configuration once, when the manifest is loaded.
    fn validate_config(config: &Config) -> Result<(), PluginError>;

    /// One list of candidates per input file, in the same order, best first; an empty list means
    /// "not mine".
    fn resolve(
        config: &Config,
        repo: &RepoRef,
        files: &[FileEntry],
    ) -> Result<Vec<Vec<mirror::Candidate>>, PluginError>;
}

/// A policy plugin: chooses which files of a repository to lock.
///
/// Export an implementation with [`export_policy!`].
pub trait Policy {
    /// The plugin's name, version, description and config help.
    fn describe() -> Info;

    /// Checks the configuration once, when the manifest is loaded.
    fn validate_config(config: &Config) -> Result<(), PluginError>;

    /// Splits `files` into the paths to keep and the paths dropped (with a reason each).
    fn select(
        config: &Config,
        repo: &RepoRef,
        files: &[FileEntry],
    ) -> Result<policy::Selection, PluginError>;
}

/// A pruner plugin: plans which cached revisions to delete.
///
/// Export an implementation with [`export_pruner!`].
pub trait Pruner {
    /// The plugin's name, version, description and config help.
    fn describe() -> Info;

    /// Checks the configuration once, when the manifest is loaded.
    fn validate_config(config: &Config) -> Result<(), PluginError>;

    /// The revisions to delete; the host refuses any locked or uncached one.
    fn plan(
        config: &Config,
        ctx: &pruner::PruneContext,
        repos: &[pruner::CachedRepo],
    ) -> Result<Vec<pruner::Deletion>, PluginError>;
}

/// Glue between a [`Mirror`] implementation and the generated `mirror-plugin` exports.
/// Used by [`export_mirror!`]; not meant to be named by plugins.
#[doc(hidden)]
pub struct MirrorExport<T>(PhantomData<T>);

/// Glue between a [`Policy`] implementation and the generated `policy-plugin` exports.
/// Used by [`export_policy!`]; not meant to be named by plugins.
#[doc(hidden)]
pub struct PolicyExport<T>(PhantomData<T>);

/// Glue between a [`Pruner`] implementation and the generated `pruner-plugin` exports.
/// Used by [`export_pruner!`]; not meant to be named by plugins.
#[doc(hidden)]
pub struct PrunerExport<T>(PhantomData<T>);

impl<T: Mirror> mirror_meta::Guest for MirrorExport<T> {
    fn describe() -> mirror_meta::PluginInfo {
        install_panic_hook();
        let i = T::describe();
        mirror_meta::PluginInfo {
            name: i.name,
            version: i.version,
            description: i.description,
            config_help: i.config_help,
        }
    }

    fn validate_config(config: Vec<(String, ConfigValue)>) -> Result<(), PluginError> {
        install_panic_hook();
        T::validate_config(&Config::new(config))
    }
}

impl<T: Mirror> bindings::mirror::exports::modelbake::plugin::mirror::Guest for MirrorExport<T> {
    fn resolve(
        config: Vec<(String, ConfigValue)>,
        repo: RepoRef,
        files: Vec<FileEntry>,
    ) -> Result<Vec<Vec<mirror::Candidate>>, PluginError> {
        install_panic_hook();
        T::resolve(&Config::new(config), &repo, &files)
    }
}

impl<T: Policy> policy_meta::Guest for PolicyExport<T> {
    fn describe() -> policy_meta::PluginInfo {
        install_panic_hook();
        let i = T::describe();
        policy_meta::PluginInfo {
            name: i.name,
            version: i.version,
            description: i.description,
            config_help: i.config_help,
        }
    }

    fn validate_config(config: Vec<(String, ConfigValue)>) -> Result<(), PluginError> {
        install_panic_hook();
        T::validate_config(&Config::new(config))
    }
}

impl<T: Policy> bindings::policy::exports::modelbake::plugin::policy::Guest for PolicyExport<T> {
    fn select(
        config: Vec<(String, ConfigValue)>,
        repo: RepoRef,
        files: Vec<FileEntry>,
    ) -> Result<policy::Selection, PluginError> {
        install_panic_hook();
        T::select(&Config::new(config), &repo, &files)
    }
}

impl<T: Pruner> pruner_meta::Guest for PrunerExport<T> {
    fn describe() -> pruner_meta::PluginInfo {
        install_panic_hook();
        let i = T::describe();
        pruner_meta::PluginInfo {
            name: i.name,
            version: i.version,
            description: i.description,
            config_help: i.config_help,
        }
    }

    fn validate_config(config: Vec<(String, ConfigValue)>) -> Result<(), PluginError> {
        install_panic_hook();
        T::validate_config(&Config::new(config))
    }
}

impl<T: Pruner> bindings::pruner::exports::modelbake::plugin::pruner::Guest for PrunerExport<T> {
    fn plan(
        config: Vec<(String, ConfigValue)>,
        ctx: pruner::PruneContext,
        repos: Vec<pruner::CachedRepo>,
    ) -> Result<Vec<pruner::Deletion>, PluginError> {
        install_panic_hook();
        T::plan(&Config::new(config), &ctx, &repos)
    }
}

/// Exports a type implementing [`Mirror`] as the plugin's `mirror-plugin` world.
///
/// Use it once, at the root of the plugin crate: `export_mirror!(Plugin);`.
#[macro_export]
macro_rules! export_mirror {
    ($ty:ty) => {
        const _: () = {
            type __ModelbakeExport = $crate::MirrorExport<$ty>;
            $crate::bindings::mirror::export_mirror_world!(
                __ModelbakeExport with_types_in $crate::bindings::mirror
            );
        };
    };
}

/// Exports a type implementing [`Policy`] as the plugin's `policy-plugin` world.
///
/// Use it once, at the root of the plugin crate: `export_policy!(Plugin);`.
#[macro_export]
macro_rules! export_policy {
    ($ty:ty) => {
        const _: () = {
            type __ModelbakeExport = $crate::PolicyExport<$ty>;
            $crate::bindings::policy::export_policy_world!(
                __ModelbakeExport with_types_in $crate::bindings::policy
            );
        };
    };
}

/// Exports a type implementing [`Pruner`] as the plugin's `pruner-plugin` world.
///
/// Use it once, at the root of the plugin crate: `export_pruner!(Plugin);`.
#[macro_export]
macro_rules! export_pruner {
    ($ty:ty) => {
        const _: () = {
            type __ModelbakeExport = $crate::PrunerExport<$ty>;
            $crate::bindings::pruner::export_pruner_world!(
                __ModelbakeExport with_types_in $crate::bindings::pruner
            );
        };
    };
}

/// Formats a byte count for people: `512 B`, `1.5 kB`, `4.2 GB` (decimal units, one decimal).
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["kB", "MB", "GB", "TB", "PB", "EB"];
    if bytes < 1000 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1000.0;
    let mut unit = 0;
    while value >= 999.95 && unit + 1 < UNITS.len() {
        value /= 1000.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_bytes_formats() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(999), "999 B");
        assert_eq!(human_bytes(1000), "1.0 kB");
        assert_eq!(human_bytes(1_000_000_000), "1.0 GB");
        assert_eq!(human_bytes(4_200_000_000), "4.2 GB");
        assert_eq!(human_bytes(999_999_999), "1.0 GB");
    }

    #[test]
    fn repo_kind_words() {
        assert_eq!(RepoKind::Dataset.as_str(), "dataset");
        assert_eq!(RepoKind::Space.url_prefix(), "spaces/");
        assert_eq!(RepoKind::Model.url_prefix(), "");
    }
}
