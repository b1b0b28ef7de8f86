//! The plugins one command uses: obtained, pinned, compiled (or loaded from the compile cache)
//! and given their configuration, which is validated before any real work starts.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::origin::{PluginBytes, check_pin, obtain};
use super::{Plugin, PluginConfig, PluginError, PluginHost, PluginKind};
use crate::manifest::Manifest;

/// One plugin ready to call, with what the lock records about it.
pub struct LoadedPlugin {
    /// The compiled plugin.
    pub plugin: Plugin,
    /// Its configuration.
    pub config: PluginConfig,
}

/// The plugins of one command, by name.
pub struct PluginSet {
    host: PluginHost,
    loaded: BTreeMap<String, LoadedPlugin>,
    /// Bytes already read or downloaded, so pinning and loading read each plugin once.
    fetched: BTreeMap<String, PluginBytes>,
}

impl PluginSet {
    /// An empty set whose compiled plugins are cached under `store_plugins` (the store's
    /// `plugins/` folder), or nowhere.
    pub fn new(store_plugins: Option<PathBuf>) -> Result<Self, PluginError> {
        let cache = store_plugins.as_ref().map(|d| d.join("compiled"));
        Ok(PluginSet {
            host: PluginHost::new(cache)?,
            loaded: BTreeMap::new(),
            fetched: BTreeMap::new(),
        })
    }

    /// `spec`'s bytes, read or downloaded once per command, checked against the manifest's
    /// sha256 and against `pinned` (the lock's pin, if any).
    pub async fn bytes(
        &mut self,
        spec: &crate::manifest::PluginSpec,
        pinned: Option<&str>,
        store_plugins: Option<&std::path::Path>,
        offline: bool,
    ) -> Result<&PluginBytes, PluginError> {
        if !self.fetched.contains_key(&spec.name) {
            let bytes = obtain(spec, pinned, store_plugins, offline).await?;
            self.fetched.insert(spec.name.clone(), bytes);
        }
        let bytes = &self.fetched[&spec.name];
        check_pin(spec, &bytes.sha256, pinned)?;
        Ok(bytes)
    }

    /// Loads `names` (declared in `manifest`) as `kind` plugins. `pins` are the lock's
    /// `[[plugin]]` entries, looked up by name here (the one place pins are matched to
    /// plugins): a plugin's bytes must have the pinned sha256 and its configuration the pinned
    /// digest, else the command stops and asks for `modelbake lock`; `store_plugins` keeps
    /// downloads.
    pub async fn load(
        &mut self,
        manifest: &Manifest,
        names: &[String],
        kind: PluginKind,
        pins: &[crate::lock::LockedPlugin],
        store_plugins: Option<&std::path::Path>,
        offline: bool,
    ) -> Result<(), PluginError> {
        for name in names {
            if let Some(p) = self.loaded.get(name) {
                p.plugin.require(kind)?;
                continue;
            }
            let spec = manifest.plugins.get(name).ok_or_else(|| {
                PluginError::new(
                    name,
                    super::FailureKind::Unavailable,
                    "is not declared in the manifest's [plugins] tables",
                )
            })?;
            let pin = pins.iter().find(|p| &p.name == name);
            let config = PluginConfig::from_table(&spec.config);
            if let Some(pin) = pin
                && pin.config != config.digest()
            {
                return Err(PluginError::new(
                    name,
                    super::FailureKind::Stale,
                    format!(
                        "its config in {} changed since models.lock was written; run `modelbake lock` \
                         (and commit the lock) to use the new config",
                        crate::ui::display_path(&manifest.path)
                    ),
                ));
            }
            self.bytes(spec, pin.map(|p| p.sha256.as_str()), store_plugins, offline)
                .await?;
            let bytes = &self.fetched[name];
            let plugin = self.host.load(name, &bytes.bytes, &bytes.sha256)?;
            plugin.require(kind)?;
            plugin.validate_config(&config)?;
            self.loaded
                .insert(name.clone(), LoadedPlugin { plugin, config });
        }
        Ok(())
    }

    /// A loaded plugin by name.
    pub fn get(&self, name: &str) -> Option<&LoadedPlugin> {
        self.loaded.get(name)
    }
}
