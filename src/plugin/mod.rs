//! WebAssembly plugins: mirrors, file-selection policies and pruning policies, run as
//! sandboxed wasmtime components. A plugin gets its inputs and its configuration and nothing
//! else — no filesystem, network, environment, clock or randomness — and its CPU and memory
//! are capped, so it is a pure function of its inputs and a misbehaving one fails the command
//! with its name instead of hanging it. Plugin answers are advice: the host checks every URL,
//! every kept path and every deletion before acting on it.

pub mod author;
mod bindings;
mod compiled;
pub mod config;
pub mod origin;
mod outputs;
mod sandbox;
mod sdk_bundle;
pub mod set;

use std::path::PathBuf;

use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Engine, Store};

use crate::ui::clean;
pub use bindings::{ConfigValue, ErrorCode, FileEntry, Level, RepoRef, WitRepoKind};
use bindings::{GuestError, mirror as mw, policy as pw, pruner as rw};
pub use config::PluginConfig;
pub use outputs::{Candidate, Selection};
pub use rw::exports::modelbake::plugin::pruner::{
    CachedFile, CachedRepo, CachedRevision, Deletion, PruneContext,
};
use sandbox::HostState;
pub use set::{LoadedPlugin, PluginSet};

/// The WIT package version this host implements (plugins built for any `0.1.x` load).
pub const WIT_PACKAGE: &str = "modelbake:plugin@0.1.0";
/// The WIT text, embedded so `plugin new` can write it into a fresh plugin.
pub const WIT_TEXT: &str = include_str!("../../plugins/wit/plugin.wit");

/// Interface prefixes whose functions are linked as traps: toolchains for other languages
/// (and Rust's `wasm32-wasip2`) import them even when the plugin never calls them. Any call
/// fails with the import's name.
const TRAPPED_IMPORTS: &[&str] = &["wasi:cli/", "wasi:io/", "wasi:clocks/", "wasi:random/"];

/// What a plugin can be used as; a component may export several.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PluginKind {
    /// Supplies download URLs (`[mirror] use = [...]`).
    Mirror,
    /// Chooses the files to lock (`policy = [...]`).
    Policy,
    /// Plans cache deletions (`cache prune --policy`).
    Pruner,
}

impl PluginKind {
    /// The exported interface that marks this kind.
    fn interface(self) -> &'static str {
        match self {
            PluginKind::Mirror => "modelbake:plugin/mirror@",
            PluginKind::Policy => "modelbake:plugin/policy@",
            PluginKind::Pruner => "modelbake:plugin/pruner@",
        }
    }
}

impl std::fmt::Display for PluginKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PluginKind::Mirror => "mirror",
            PluginKind::Policy => "policy",
            PluginKind::Pruner => "pruner",
        })
    }
}

/// What went wrong with a plugin, in categories a caller can act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FailureKind {
    /// The bytes are not a loadable component, or it imports what modelbake does not grant.
    Load,
    /// Its bytes could not be had: not declared, unreadable, not downloadable, or not
    /// downloaded yet under `--offline`.
    Unavailable,
    /// Its bytes or configuration differ from what the manifest's `sha256` or models.lock pins.
    Stale,
    /// It ran out of fuel or memory.
    Limit,
    /// It trapped (panic, forbidden call, bug).
    Crash,
    /// It returned a structured error.
    Refused,
    /// Its answer broke the interface's rules.
    BadOutput,
}

/// A plugin failure: always names the plugin and says what happened.
#[derive(Debug, Clone, thiserror::Error)]
#[error("plugin `{plugin}`: {message}")]
pub struct PluginError {
    /// The plugin's name in the manifest (or its file name).
    pub plugin: String,
    /// The category.
    pub kind: FailureKind,
    /// The guest's error code, for `Refused`.
    pub code: Option<ErrorCode>,
    /// What happened and, where possible, what to do.
    pub message: String,
}

impl PluginError {
    fn new(plugin: &str, kind: FailureKind, message: impl Into<String>) -> Self {
        PluginError {
            plugin: plugin.to_owned(),
            kind,
            code: None,
            message: message.into(),
        }
    }
}

/// What to do about a plugin failure, by its category.
impl crate::hint::Hint for PluginError {
    fn hint(&self) -> Option<String> {
        let name = &self.plugin;
        let hint = match (self.kind, self.code) {
            (FailureKind::Load, _) => {
                "`modelbake plugin check FILE.wasm` shows what the component imports and exports \
                 and whether this modelbake can host it; `modelbake plugin build` builds plugins \
                 that import nothing modelbake refuses"
                    .to_owned()
            }
            (FailureKind::Unavailable, _) => format!(
                "[plugins.{name}] takes a `path` (relative to the manifest; `modelbake plugin build` \
                 writes the .wasm) or an https `url`, downloaded once and then kept in the store"
            ),
            (FailureKind::Stale, _) => format!(
                "if the change is intended, run `modelbake lock --update {name}` (or update its \
                 `sha256` in [plugins.{name}]) and commit models.lock; if not, restore the plugin \
                 and its config as they were pinned (`git diff` shows what changed)"
            ),
            (FailureKind::Limit, _) => format!(
                "every call gets a fixed CPU budget (fuel, more for larger inputs) and {} MiB of \
                 memory, so a plugin cannot hang or exhaust the machine: look for an endless loop or \
                 a large allocation in the plugin (`-vv` shows what it logged), or give it less input \
                 (fewer repos, narrower include patterns)",
                sandbox::MEMORY_LIMIT >> 20
            ),
            (FailureKind::Crash, _) => {
                "run with `-vv` to see everything the plugin logged before it stopped, and report \
                 the failure to its author with that log"
                    .to_owned()
            }
            (FailureKind::Refused, Some(ErrorCode::InvalidConfig)) => format!(
                "fix the `config` of [plugins.{name}] in the manifest; `modelbake plugin check FILE.wasm` \
                 lists the keys it accepts"
            ),
            (FailureKind::Refused, _) | (FailureKind::BadOutput, _) => format!(
                "this is the plugin's own doing, not modelbake's: report it to its author, or stop \
                 using `{name}` in the manifest until it is fixed"
            ),
        };
        Some(hint)
    }
}

/// What `meta.describe` returns.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PluginInfo {
    /// The plugin's own name for itself.
    pub name: String,
    /// Its version.
    pub version: String,
    /// What it does.
    pub description: String,
    /// Its configuration keys, one per line.
    pub config_help: String,
}

/// Compiles and instantiates plugins. One per command; cheap to share by reference.
pub struct PluginHost {
    engine: Engine,
    cache: Option<compiled::CompiledPlugins>,
}

impl PluginHost {
    /// A host whose compiled plugins are cached in `cache_dir` (e.g. `<store>/plugins`), or
    /// never cached when `None`.
    pub fn new(cache_dir: Option<PathBuf>) -> Result<Self, PluginError> {
        let engine = sandbox::engine().map_err(|e| {
            PluginError::new(
                "(host)",
                FailureKind::Load,
                format!("cannot start wasmtime: {e}"),
            )
        })?;
        let cache = cache_dir.map(|dir| compiled::CompiledPlugins::new(&engine, dir));
        Ok(PluginHost { engine, cache })
    }

    /// Loads a plugin from its bytes, whose sha256 the caller has already checked: compiles it
    /// (or loads the cached compilation), checks its imports and finds what it exports.
    pub fn load(&self, name: &str, bytes: &[u8], sha256: &str) -> Result<Plugin, PluginError> {
        let load_err = |m: String| PluginError::new(name, FailureKind::Load, m);
        if author::is_core_module(bytes) {
            return Err(load_err(
                "this is a core WebAssembly module, not a component; build it with \
                 `modelbake plugin build`, which turns the module into a component"
                    .into(),
            ));
        }
        let component = match &self.cache {
            Some(cache) => cache.get_or_compile(&self.engine, sha256, bytes),
            None => Component::new(&self.engine, bytes),
        }
        .map_err(|e| {
            load_err(format!(
                "is not a valid WebAssembly component ({}); build plugins with `modelbake plugin build`",
                e.root_cause()
            ))
        })?;
        let ty = component.component_type();
        let imports: Vec<String> = ty
            .imports(&self.engine)
            .map(|(n, _)| n.to_owned())
            .collect();
        let exports: Vec<String> = ty
            .exports(&self.engine)
            .map(|(n, _)| n.to_owned())
            .collect();
        check_imports(name, &imports)?;

        let mut linker = Linker::<HostState>::new(&self.engine);
        mw::MirrorPlugin::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s)
            .map_err(|e| load_err(format!("cannot link the host interface: {e}")))?;
        linker
            .define_unknown_imports_as_traps(&component)
            .map_err(|e| load_err(format!("cannot link its imports: {e}")))?;
        let pre = linker.instantiate_pre(&component).map_err(|e| {
            load_err(format!(
                "does not fit this modelbake's plugin interface {WIT_PACKAGE}: {}",
                e.root_cause()
            ))
        })?;

        let exports_kind = |k: PluginKind| exports.iter().any(|e| e.starts_with(k.interface()));
        let typed = |k: PluginKind, e: wasmtime::Error| {
            load_err(format!(
                "exports the {k} interface with the wrong shape for {WIT_PACKAGE}: {}",
                e.root_cause()
            ))
        };
        let mirror = exports_kind(PluginKind::Mirror)
            .then(|| mw::MirrorPluginPre::new(pre.clone()))
            .transpose()
            .map_err(|e| typed(PluginKind::Mirror, e))?;
        let policy = exports_kind(PluginKind::Policy)
            .then(|| pw::PolicyPluginPre::new(pre.clone()))
            .transpose()
            .map_err(|e| typed(PluginKind::Policy, e))?;
        let pruner = exports_kind(PluginKind::Pruner)
            .then(|| rw::PrunerPluginPre::new(pre.clone()))
            .transpose()
            .map_err(|e| typed(PluginKind::Pruner, e))?;
        if mirror.is_none() && policy.is_none() && pruner.is_none() {
            return Err(load_err(format!(
                "exports none of the plugin interfaces of {WIT_PACKAGE} (mirror, policy, pruner); it exports: {}",
                if exports.is_empty() {
                    "nothing".to_owned()
                } else {
                    exports.join(", ")
                }
            )));
        }
        Ok(Plugin {
            name: name.to_owned(),
            engine: self.engine.clone(),
            imports,
            exports,
            mirror,
            policy,
            pruner,
        })
    }
}

/// Refuses imports that would give a plugin a capability; imports that toolchains add by
/// habit are allowed but trap when called.
fn check_imports(name: &str, imports: &[String]) -> Result<(), PluginError> {
    for import in imports {
        if let Some(rest) = import.strip_prefix("modelbake:plugin/") {
            let version = rest.split_once('@').map(|(_, v)| v).unwrap_or("");
            if !version.starts_with("0.1.") {
                return Err(PluginError::new(
                    name,
                    FailureKind::Load,
                    format!(
                        "was built for `{import}`, but this modelbake implements {WIT_PACKAGE} \
                         (any 0.1.x plugin loads); rebuild it against plugins/wit from this release"
                    ),
                ));
            }
            continue;
        }
        if TRAPPED_IMPORTS.iter().any(|p| import.starts_with(p)) {
            continue;
        }
        return Err(PluginError::new(
            name,
            FailureKind::Load,
            format!(
                "imports `{import}`, which modelbake does not grant: plugins get no filesystem, \
                 network, environment, clock or randomness, only their inputs. Build Rust plugins \
                 for wasm32-unknown-unknown (`modelbake plugin build`) so they import nothing else"
            ),
        ));
    }
    Ok(())
}

/// A loaded plugin, ready to be called. Every call runs in a fresh instance.
pub struct Plugin {
    name: String,
    engine: Engine,
    imports: Vec<String>,
    exports: Vec<String>,
    mirror: Option<mw::MirrorPluginPre<HostState>>,
    policy: Option<pw::PolicyPluginPre<HostState>>,
    pruner: Option<rw::PrunerPluginPre<HostState>>,
}

impl Plugin {
    /// Its name in the manifest.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// What it imports (interface names), sorted.
    pub fn imports(&self) -> Vec<String> {
        let mut v = self.imports.clone();
        v.sort();
        v
    }

    /// What it exports (interface names), sorted.
    pub fn exports(&self) -> Vec<String> {
        let mut v = self.exports.clone();
        v.sort();
        v
    }

    /// The kinds it can be used as.
    pub fn kinds(&self) -> Vec<PluginKind> {
        let mut k = Vec::new();
        if self.mirror.is_some() {
            k.push(PluginKind::Mirror);
        }
        if self.policy.is_some() {
            k.push(PluginKind::Policy);
        }
        if self.pruner.is_some() {
            k.push(PluginKind::Pruner);
        }
        k
    }

    /// Fails unless the plugin can be used as `kind` (e.g. listed in `[mirror] use`).
    pub fn require(&self, kind: PluginKind) -> Result<(), PluginError> {
        if self.kinds().contains(&kind) {
            return Ok(());
        }
        Err(self.wrong_kind(kind))
    }

    fn wrong_kind(&self, kind: PluginKind) -> PluginError {
        PluginError::new(
            &self.name,
            FailureKind::Load,
            format!(
                "is used as a {kind} plugin but does not export the {kind} interface (it is a {} plugin)",
                self.kinds()
                    .iter()
                    .map(|k| k.to_string())
                    .collect::<Vec<_>>()
                    .join("/")
            ),
        )
    }

    /// Runs `f` on a fresh store sized for `items` inputs and turns traps, limits and guest
    /// errors into a [`PluginError`].
    fn call<T>(
        &self,
        items: usize,
        f: impl FnOnce(&mut Store<HostState>) -> wasmtime::Result<Result<T, GuestError>>,
    ) -> Result<T, PluginError> {
        let mut store = sandbox::store(&self.engine, &self.name, items).map_err(|e| {
            PluginError::new(&self.name, FailureKind::Crash, format!("cannot start: {e}"))
        })?;
        let started = std::time::Instant::now();
        let result = f(&mut store);
        let elapsed = started.elapsed();
        match result {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(guest)) => Err(self.refused(guest)),
            Err(trap) => Err(self.explain(trap, store.data(), sandbox::fuel_for(items), elapsed)),
        }
    }

    fn refused(&self, e: GuestError) -> PluginError {
        let code = match e.code {
            ErrorCode::InvalidConfig => "invalid configuration",
            ErrorCode::InvalidInput => "cannot handle this input",
            ErrorCode::Unsupported => "unsupported",
            ErrorCode::Internal => "internal error",
        };
        let key = e
            .key
            .as_deref()
            .map(|k| format!(" (config key `{k}`)"))
            .unwrap_or_default();
        PluginError {
            plugin: self.name.clone(),
            kind: FailureKind::Refused,
            code: Some(e.code),
            message: format!("{code}{}: {}", clean(&key), clean(&e.message)),
        }
    }

    /// Why a call trapped, in words.
    fn explain(
        &self,
        e: wasmtime::Error,
        state: &HostState,
        fuel: u64,
        elapsed: std::time::Duration,
    ) -> PluginError {
        let trap = e.downcast_ref::<wasmtime::Trap>().copied();
        let text = format!("{e:#}");
        let (kind, mut message) = if trap == Some(wasmtime::Trap::OutOfFuel) {
            (
                FailureKind::Limit,
                format!(
                    "was stopped after {:.2}s, having used its whole CPU budget ({fuel} fuel \
                     units); it may loop forever, or its input is far larger than it can handle",
                    elapsed.as_secs_f64()
                ),
            )
        } else if let Some((had, asked)) = state.refused_grow {
            (
                FailureKind::Limit,
                format!(
                    "was stopped after {:.2}s: it had {had} bytes of memory and asked for \
                     {asked}, over the {} byte limit",
                    elapsed.as_secs_f64(),
                    sandbox::MEMORY_LIMIT
                ),
            )
        } else if let Some(import) = text
            .split("unknown import: `")
            .nth(1)
            .and_then(|r| r.split('`').next())
        {
            (
                FailureKind::Crash,
                format!(
                    "called `{import}`, which modelbake does not grant (plugins get no \
                     filesystem, network, environment, clock or randomness); the call was refused"
                ),
            )
        } else {
            let what = match trap {
                Some(wasmtime::Trap::UnreachableCodeReached) => {
                    "crashed (it panicked or reached unreachable code)".to_owned()
                }
                Some(t) => format!("crashed: {t}"),
                None => format!("failed: {}", e.root_cause()),
            };
            (FailureKind::Crash, what)
        };
        if let Some(last) = state
            .logs
            .iter()
            .rev()
            .find(|l| matches!(l.level, Level::Error))
        {
            message.push_str(&format!("; its last error message: {}", last.message));
        }
        PluginError::new(&self.name, kind, message)
    }

    /// `meta.describe`.
    pub fn describe(&self) -> Result<PluginInfo, PluginError> {
        macro_rules! describe_with {
            ($pre:expr) => {
                self.call(0, |st| {
                    let i = $pre.instantiate(&mut *st)?;
                    let d = i.modelbake_plugin_meta().call_describe(&mut *st)?;
                    Ok(Ok(PluginInfo {
                        name: clean(&d.name),
                        version: clean(&d.version),
                        description: clean(&d.description),
                        // Lines are the format here; each one is cleaned.
                        config_help: d
                            .config_help
                            .lines()
                            .map(clean)
                            .collect::<Vec<_>>()
                            .join("\n"),
                    }))
                })
            };
        }
        if let Some(p) = &self.mirror {
            describe_with!(p)
        } else if let Some(p) = &self.policy {
            describe_with!(p)
        } else if let Some(p) = &self.pruner {
            describe_with!(p)
        } else {
            unreachable!("load() refuses plugins without a known export")
        }
    }

    /// `meta.validate-config`: called when the manifest is loaded so bad keys fail early.
    pub fn validate_config(&self, config: &PluginConfig) -> Result<(), PluginError> {
        let cfg = config.wit();
        macro_rules! validate_with {
            ($pre:expr) => {
                self.call(cfg.len(), |st| {
                    let i = $pre.instantiate(&mut *st)?;
                    i.modelbake_plugin_meta()
                        .call_validate_config(&mut *st, cfg)
                })
            };
        }
        if let Some(p) = &self.mirror {
            validate_with!(p)
        } else if let Some(p) = &self.policy {
            validate_with!(p)
        } else if let Some(p) = &self.pruner {
            validate_with!(p)
        } else {
            unreachable!("load() refuses plugins without a known export")
        }
    }

    /// `mirror.resolve`: candidate URLs per file, checked by the host. Invalid URLs are left
    /// out and described in the returned list of rejections.
    pub fn resolve(
        &self,
        config: &PluginConfig,
        repo: &RepoRef,
        files: &[FileEntry],
    ) -> Result<(Vec<Vec<Candidate>>, Vec<String>), PluginError> {
        let pre = self
            .mirror
            .as_ref()
            .ok_or_else(|| self.wrong_kind(PluginKind::Mirror))?;
        let raw = self.call(files.len(), |st| {
            let i = pre.instantiate(&mut *st)?;
            i.modelbake_plugin_mirror()
                .call_resolve(&mut *st, config.wit(), repo, files)
        })?;
        outputs::check_candidates(&self.name, files, raw)
    }

    /// `policy.select`: which of `files` to keep, checked to be a partition of the input.
    pub fn select(
        &self,
        config: &PluginConfig,
        repo: &RepoRef,
        files: &[FileEntry],
    ) -> Result<Selection, PluginError> {
        let pre = self
            .policy
            .as_ref()
            .ok_or_else(|| self.wrong_kind(PluginKind::Policy))?;
        let raw = self.call(files.len(), |st| {
            let i = pre.instantiate(&mut *st)?;
            i.modelbake_plugin_policy()
                .call_select(&mut *st, config.wit(), repo, files)
        })?;
        outputs::check_selection(
            &self.name,
            files,
            raw.keep,
            raw.dropped
                .into_iter()
                .map(|d| (d.path, d.reason))
                .collect(),
        )
    }

    /// `pruner.plan`: deletions, checked to name cached, unlocked revisions.
    pub fn plan(
        &self,
        config: &PluginConfig,
        ctx: PruneContext,
        repos: &[CachedRepo],
    ) -> Result<Vec<Deletion>, PluginError> {
        let pre = self
            .pruner
            .as_ref()
            .ok_or_else(|| self.wrong_kind(PluginKind::Pruner))?;
        let items = repos.iter().map(|r| r.revisions.len()).sum::<usize>();
        let raw = self.call(items, |st| {
            let i = pre.instantiate(&mut *st)?;
            i.modelbake_plugin_pruner()
                .call_plan(&mut *st, config.wit(), ctx, repos)
        })?;
        outputs::check_deletions(&self.name, repos, raw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn imports_are_granted_trapped_or_refused() {
        let ok =
            |i: &[&str]| check_imports("p", &i.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert!(
            ok(&[
                "modelbake:plugin/host@0.1.0",
                "modelbake:plugin/types@0.1.3"
            ])
            .is_ok()
        );
        // What toolchains add by habit loads (and traps if called).
        assert!(
            ok(&[
                "wasi:cli/environment@0.2.6",
                "wasi:io/streams@0.2.6",
                "wasi:random/random@0.2.0"
            ])
            .is_ok()
        );
        for (import, said) in [
            ("wasi:filesystem/types@0.2.6", "wasi:filesystem/types@0.2.6"),
            ("wasi:sockets/tcp@0.2.6", "wasi:sockets/tcp@0.2.6"),
            ("wasi:http/outgoing-handler@0.2.6", "wasi:http"),
            ("acme:evil/backdoor", "acme:evil/backdoor"),
        ] {
            let e = ok(&[import]).unwrap_err();
            assert_eq!(e.kind, FailureKind::Load);
            assert!(
                e.message.contains(said) && e.message.contains("does not grant"),
                "{e}"
            );
        }
        let e = ok(&["modelbake:plugin/host@0.2.0"]).unwrap_err();
        assert!(
            e.message.contains("0.2.0") && e.message.contains("0.1"),
            "{e}"
        );
    }
}
