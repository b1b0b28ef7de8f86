//! The compiled-plugin cache: compiling a component takes tens of milliseconds (seconds in a
//! debug build), loading its compiled form a fraction of one. Entries are keyed by the plugin's
//! sha256 and the engine's compatibility hash (wasmtime version, target, settings), written
//! atomically, and live in the store, which only its owner can write.

use std::hash::{Hash, Hasher};
use std::path::PathBuf;

use wasmtime::Engine;
use wasmtime::component::Component;

/// Where compiled plugins are kept.
pub(super) struct CompileCache {
    dir: PathBuf,
    engine_key: String,
}

impl CompileCache {
    pub(super) fn new(engine: &Engine, dir: PathBuf) -> Self {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        CompileCache {
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

    fn write(&self, path: &std::path::Path, component: &Component) -> anyhow::Result<()> {
        let bytes = component.serialize().map_err(|e| anyhow::anyhow!("{e}"))?;
        std::fs::create_dir_all(&self.dir)?;
        crate::lock::write_atomically(path, &bytes)?;
        Ok(())
    }
}
