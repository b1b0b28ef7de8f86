//! The manifest's plugins in a `lock` run: pinned first (the sha256 of their bytes and the
//! digest of their configuration), then, once the plan is known, loaded: the policy plugins
//! of the repos to resolve, and every mirror plugin so that a wrong kind or a bad
//! configuration fails at lock time rather than in the middle of a CI fetch.

use std::collections::BTreeSet;

use super::plan::{LockPlan, Step};
use super::{LockError, LockMode, LockOptions};
use crate::lock::diff::{PluginDrift, plugin_drift, removed_plugins};
use crate::lock::{LockedPlugin, Lockfile};
use crate::manifest::{Manifest, PluginSource};
use crate::plugin::{PluginConfig, PluginKind, PluginSet};

/// The plugin pins of this run and how they differ from the previous lock.
#[derive(Debug, Default)]
pub(crate) struct PluginPins {
    /// One pin per declared plugin, in name order.
    pub pins: Vec<LockedPlugin>,
    /// Added, removed and changed pins, in name order (removed ones last).
    pub drift: Vec<PluginDrift>,
}

/// Pins every plugin the manifest declares. A URL plugin whose previous pin has the same
/// source keeps it without a download (its bytes are checked against the pin whenever they
/// are used) unless `--update NAME` asks for its current bytes or the manifest now requires
/// other ones; a run that may not write does not download a URL plugin the lock never
/// pinned (it is an addition whatever its bytes are, and has no pin).
pub(crate) async fn pin(
    manifest: &Manifest,
    previous: Option<&Lockfile>,
    opts: &LockOptions,
    plugins: &mut PluginSet,
) -> Result<PluginPins, LockError> {
    let mut out = PluginPins::default();
    for spec in manifest.plugins.values() {
        let source = spec.source.as_lock_string();
        let prev = previous.and_then(|l| l.plugin(&spec.name));
        let sha256 = match (&spec.source, prev) {
            (PluginSource::Url(_), Some(p))
                if p.source == source
                    && !opts.update.contains(&spec.name)
                    && spec.sha256.as_ref().is_none_or(|s| *s == p.sha256) =>
            {
                p.sha256.clone()
            }
            (PluginSource::Url(_), None) if opts.mode == LockMode::Locked => {
                out.drift.push(PluginDrift::added(&spec.name));
                continue;
            }
            _ => plugins
                .bytes(spec, None, opts.plugin_dir.as_deref(), opts.offline)
                .await?
                .sha256
                .clone(),
        };
        let pin = LockedPlugin {
            name: spec.name.clone(),
            source,
            sha256,
            config: PluginConfig::from_table(&spec.config).digest().to_owned(),
        };
        out.drift.extend(plugin_drift(prev, &pin));
        out.pins.push(pin);
    }
    out.drift.extend(
        previous
            .into_iter()
            .flat_map(|l| removed_plugins(manifest, l)),
    );
    Ok(out)
}

/// Loads the policy plugins of the repos `plan` resolves and every mirror plugin, each
/// checked against its pin in `pins` (the bytes run must be the bytes pinned).
pub(crate) async fn load(
    manifest: &Manifest,
    plan: &LockPlan<'_>,
    pins: &[LockedPlugin],
    opts: &LockOptions,
    plugins: &mut PluginSet,
) -> Result<(), LockError> {
    let policies: BTreeSet<String> = plan
        .steps
        .iter()
        .filter_map(|s| match s {
            Step::Resolve { spec, .. } => Some(spec.policy.iter().cloned()),
            Step::Keep(_) => None,
        })
        .flatten()
        .collect();
    let policies: Vec<String> = policies.into_iter().collect();
    for (names, kind) in [
        (&policies, PluginKind::Policy),
        (&manifest.mirrors, PluginKind::Mirror),
    ] {
        plugins
            .load(
                manifest,
                names,
                kind,
                pins,
                opts.plugin_dir.as_deref(),
                opts.offline,
            )
            .await?;
    }
    Ok(())
}
