//! Compiled plugins (the compile cache): compiling a component takes tens of milliseconds (seconds in a
//! debug build), loading its compiled form a fraction of one. Entries are keyed by the plugin's
//! sha256 and the engine's compatibility hash (wasmtime version, target, settings), written
//! atomically into a folder only the user can write (0700). A compiled plugin is native code,
//! so an entry is used only when it and its folder belong to the current user and nobody else
//! can write them; otherwise the plugin is compiled afresh (and the cache left alone).

use std::hash::{Hash, Hasher};
use std::path::PathBuf;

use wasmtime::Engine;
use wasmtime::component::Component;

/// Where compiled plugins are kept.
pub(super) struct CompiledPlugins {
    dir: PathBuf,
    engine_key: String,
}

impl CompiledPlugins {
    pub(super) fn new(engine: &Engine, dir: PathBuf) -> Self {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        CompiledPlugins {
            dir,
            engine_key: format!("{:016x}", h.finish()),
        }
    }

    fn path(&self, sha256: &str) -> PathBuf {
        self.dir.join(format!("{sha256}-{}.cwasm", self.engine_key))
    }

    /// The cached compilation of the component with this sha256, or a fresh compilation that
    /// is then cached. A cache entry that cannot be loaded is replaced.
    pub(super) fn get_or_compile(
        &self,
        engine: &Engine,
        sha256: &str,
        bytes: &[u8],
    ) -> wasmtime::Result<Component> {
        let path = self.path(sha256);
        let trusted = trusted(&self.dir) && trusted(&path);
        if path.is_file() && !trusted {
            tracing::warn!(
                "not using the compiled plugin {}: it or its folder is not owned by you or is \
                 writable by others; compiling the plugin instead (fix the permissions, or delete \
                 the folder, to use the cache again)",
                path.display()
            );
            return Component::new(engine, bytes);
        }
        if path.is_file() {
            // SAFETY: the file was written by `Component::serialize` of this engine
            // configuration (the name carries the compatibility hash) into the user's own store,
            // which other users cannot write; a damaged file fails to deserialize and is
            // replaced below.
            match unsafe { Component::deserialize_file(engine, &path) } {
                Ok(c) => return Ok(c),
                Err(e) => tracing::debug!("recompiling {}: {e}", path.display()),
            }
        }
        let component = Component::new(engine, bytes)?;
        if let Err(e) = self.write(&path, &component) {
            tracing::debug!(
                "cannot cache the compiled plugin at {}: {e}",
                path.display()
            );
        }
        Ok(component)
    }

    fn write(&self, path: &std::path::Path, component: &Component) -> Result<(), CacheWriteError> {
        let bytes = component
            .serialize()
            .map_err(|e| CacheWriteError::Serialize(e.into()))?;
        if !self.dir.is_dir() {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&self.dir)?;
        }
        if !trusted(&self.dir) {
            return Err(CacheWriteError::Untrusted);
        }
        crate::fs_atomic::write_atomic(path, &bytes, crate::fs_atomic::Mode::KeepExisting)?;
        Ok(())
    }
}

/// Why a compiled plugin was not cached (logged; the plugin still runs, compiled afresh).
#[derive(Debug, thiserror::Error)]
enum CacheWriteError {
    /// wasmtime could not serialize the compiled component.
    #[error("{0}")]
    Serialize(Box<dyn std::error::Error + Send + Sync>),
    /// The cache folder could not be created or the entry written.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The folder exists but others could write into it: native code from it is not trusted.
    #[error("the folder is not private to this user")]
    Untrusted,
}

/// True when `path` exists, belongs to the current user and is not writable by group or
/// others.
fn trusted(path: &std::path::Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    std::fs::symlink_metadata(path)
        .is_ok_and(|m| m.uid() == me && m.mode() & 0o022 == 0 && !m.file_type().is_symlink())
}
