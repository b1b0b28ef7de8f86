//! The plan of a `lock` run, decided without the network: for each manifest repo, keep its
//! lock entry (it still matches, like Cargo) or resolve it (new, changed, one of its policy
//! plugins changed, or named by `--update`), and why. The `--update` and `--offline` refusals
//! are decided here, before any request.

use super::{LockError, LockMode, LockOptions, RepoAction};
use crate::lock::diff::{PluginDrift, RepoDrift, removed_repos, repo_drift, sort_drift};
use crate::lock::{LockedRepo, Lockfile};
use crate::manifest::{Manifest, RepoSpec};

/// What one `lock` run does with each repo of the manifest.
#[derive(Debug)]
pub(crate) struct LockPlan<'m> {
    /// One step per manifest repo, in manifest order.
    pub steps: Vec<Step<'m>>,
    /// How the manifest already differs from the previous lock (new, changed and removed
    /// repos), in lock order: what `--locked` reports without resolving anything.
    pub drift: Vec<RepoDrift>,
    /// True when resolving is pointless: a run that may not write whose manifest or plugins
    /// already differ from the lock cannot end with the lock as it is, whatever the Hub says.
    pub settled: bool,
}

/// What to do with one manifest repo.
#[derive(Debug)]
pub(crate) enum Step<'m> {
    /// Its lock entry still matches the manifest: keep it, without network access.
    Keep(&'m LockedRepo),
    /// Resolve it against the Hub.
    Resolve {
        /// The manifest entry.
        spec: &'m RepoSpec,
        /// Why it is resolved.
        why: Why,
    },
}

/// Why a repo is resolved rather than kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Why {
    /// The manifest entry is new or differs from its lock entry (the reason in words).
    Drift(String),
    /// One of its policy plugins has new bytes or configuration.
    PluginChanged,
    /// `--update` named it.
    Requested,
}

impl Why {
    /// How the run summary reports a repo resolved for this reason.
    pub fn action(&self) -> RepoAction {
        match self {
            Why::Requested => RepoAction::Updated,
            Why::Drift(_) | Why::PluginChanged => RepoAction::Resolved,
        }
    }
}

/// Refuses `--update` names that are neither a manifest repo id nor a declared plugin.
pub(crate) fn check_update_names(manifest: &Manifest, update: &[String]) -> Result<(), LockError> {
    match update.iter().find(|wanted| {
        !manifest.repos.iter().any(|s| s.id.as_str() == *wanted)
            && !manifest.plugins.contains_key(*wanted)
    }) {
        Some(unknown) => Err(LockError::UnknownUpdate(unknown.clone())),
        None => Ok(()),
    }
}

/// Plans a run: `previous` is the lock beside the manifest (if any) and `plugins` how the
/// plugin pins changed since it was written. Refuses `--offline` when something needs
/// resolving (unless the run is [`LockPlan::settled`]).
pub(crate) fn plan<'m>(
    manifest: &'m Manifest,
    previous: Option<&'m Lockfile>,
    plugins: &[PluginDrift],
    opts: &LockOptions,
) -> Result<LockPlan<'m>, LockError> {
    let plugin_changed = |spec: &RepoSpec| {
        plugins
            .iter()
            .any(|p| p.may_select_differently() && spec.policy.contains(&p.name))
    };
    let mut drift = Vec::new();
    let steps: Vec<Step<'m>> = manifest
        .repos
        .iter()
        .map(|spec| {
            let prev = previous.and_then(|l| l.find(spec.kind, &spec.id));
            let requested = opts.update.iter().any(|u| u == spec.id.as_str());
            let why = match (repo_drift(spec, prev), prev) {
                (Some(reason), _) => {
                    drift.push(RepoDrift {
                        kind: spec.kind,
                        id: spec.id.clone(),
                        reason: reason.clone(),
                    });
                    Why::Drift(reason)
                }
                (None, _) if plugin_changed(spec) => Why::PluginChanged,
                (None, Some(prev)) if !requested => return Step::Keep(prev),
                // No drift means a lock entry exists, so only `--update` gets here.
                (None, _) => Why::Requested,
            };
            Step::Resolve { spec, why }
        })
        .collect();
    drift.extend(
        previous
            .into_iter()
            .flat_map(|l| removed_repos(manifest, l)),
    );
    sort_drift(&mut drift);

    let settled = opts.mode == LockMode::Locked && (!drift.is_empty() || !plugins.is_empty());
    if opts.offline && !settled {
        let need: Vec<String> = steps
            .iter()
            .filter_map(|s| match s {
                Step::Resolve { spec, .. } => Some(format!("{} `{}`", spec.kind, spec.id)),
                Step::Keep(_) => None,
            })
            .collect();
        if !need.is_empty() {
            return Err(LockError::NeedsNetwork(need));
        }
    }
    Ok(LockPlan {
        steps,
        drift,
        settled,
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::lock::LockedPlugin;
    use crate::lock::diff::plugin_drift;
    use crate::repo::RepoKind;

    const MANIFEST: &str = "[[model]]\nid = \"acme/tiny\"\n\n\
        [[model]]\nid = \"acme/picked\"\npolicy = [\"pick\"]\n\n\
        [[dataset]]\nid = \"acme/data\"\ninclude = [\"*.json\"]\n\n\
        [plugins.pick]\npath = \"plugins/pick.wasm\"\n";

    fn manifest(text: &str) -> Manifest {
        Manifest::from_models_toml(Path::new("/project/models.toml"), text).unwrap()
    }

    /// A lock whose entries match every repo of `manifest` exactly.
    fn lock_of(manifest: &Manifest) -> Lockfile {
        let mut lock = Lockfile::new();
        for spec in &manifest.repos {
            lock.repos.push(LockedRepo {
                kind: spec.kind,
                id: spec.id.clone(),
                revision: spec.revision.clone(),
                commit: "1".repeat(40),
                include: spec.include.iter().map(|p| p.as_str().to_owned()).collect(),
                exclude: spec.exclude.iter().map(|p| p.as_str().to_owned()).collect(),
                policy: spec.policy.clone(),
                complete: true,
                digest: String::new(),
                files: Vec::new(),
            });
        }
        lock.normalize();
        lock
    }

    /// `(id, None)` for a kept repo, `(id, Some(why))` for a resolved one.
    fn steps(plan: &LockPlan<'_>) -> Vec<(String, Option<Why>)> {
        plan.steps
            .iter()
            .map(|s| match s {
                Step::Keep(prev) => (prev.id.to_string(), None),
                Step::Resolve { spec, why } => (spec.id.to_string(), Some(why.clone())),
            })
            .collect()
    }

    fn opts(mode: LockMode, offline: bool, update: &[&str]) -> LockOptions {
        LockOptions {
            update: update.iter().map(|s| (*s).to_owned()).collect(),
            mode,
            offline,
            ..LockOptions::default()
        }
    }

    fn pin(config: &str) -> LockedPlugin {
        LockedPlugin {
            name: "pick".into(),
            source: "plugins/pick.wasm".into(),
            sha256: "a".repeat(64),
            config: config.repeat(64),
        }
    }

    #[test]
    fn unchanged_repos_are_kept_and_new_ones_resolved() {
        let m = manifest(MANIFEST);
        let lock = lock_of(&m);
        let p = plan(&m, Some(&lock), &[], &LockOptions::default()).unwrap();
        assert!(steps(&p).iter().all(|(_, why)| why.is_none()));
        assert!(p.drift.is_empty() && !p.settled);

        let p = plan(&m, None, &[], &LockOptions::default()).unwrap();
        let new = Why::Drift("in the manifest but not in the lock".into());
        assert!(steps(&p).iter().all(|(_, why)| why.as_ref() == Some(&new)));
        assert_eq!(p.drift.len(), 3);
        assert_eq!(new.action(), RepoAction::Resolved);
    }

    #[test]
    fn a_changed_include_is_resolved_again_and_is_drift() {
        let old = manifest(MANIFEST);
        let lock = lock_of(&old);
        let m = manifest(&MANIFEST.replace("\"*.json\"", "\"*.txt\""));
        let p = plan(&m, Some(&lock), &[], &LockOptions::default()).unwrap();
        let reason = "include changed from [\"*.json\"] to [\"*.txt\"]";
        assert_eq!(
            steps(&p),
            [
                ("acme/tiny".to_owned(), None),
                ("acme/picked".to_owned(), None),
                ("acme/data".to_owned(), Some(Why::Drift(reason.into()))),
            ]
        );
        assert_eq!(p.drift.len(), 1);
        assert_eq!(p.drift[0].kind, RepoKind::Dataset);
        assert_eq!(p.drift[0].reason, reason);
    }

    #[test]
    fn update_forces_exactly_the_named_repo() {
        let m = manifest(MANIFEST);
        let lock = lock_of(&m);
        let p = plan(
            &m,
            Some(&lock),
            &[],
            &opts(LockMode::Write, false, &["acme/tiny"]),
        )
        .unwrap();
        assert_eq!(
            steps(&p),
            [
                ("acme/tiny".to_owned(), Some(Why::Requested)),
                ("acme/picked".to_owned(), None),
                ("acme/data".to_owned(), None),
            ]
        );
        assert_eq!(Why::Requested.action(), RepoAction::Updated);
        // An update is not drift: `--locked --update` resolves, then commit compares.
        assert!(p.drift.is_empty() && !p.settled);
    }

    #[test]
    fn unknown_update_names_are_refused() {
        let m = manifest(MANIFEST);
        check_update_names(&m, &["acme/tiny".into(), "pick".into()]).unwrap();
        let e = check_update_names(&m, &["acme/zzz".into()]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "--update acme/zzz: no repo with that id in the manifest"
        );
    }

    #[test]
    fn offline_refuses_only_when_something_needs_resolving() {
        let m = manifest(MANIFEST);
        let lock = lock_of(&m);
        plan(&m, Some(&lock), &[], &opts(LockMode::Write, true, &[])).unwrap();
        let e = plan(
            &m,
            Some(&lock),
            &[],
            &opts(LockMode::Write, true, &["acme/picked"]),
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "--offline: these repos need the network to be resolved: model `acme/picked`; run without --offline"
        );
        let e = plan(&m, None, &[], &opts(LockMode::Write, true, &[])).unwrap_err();
        assert!(
            e.to_string()
                .contains("model `acme/tiny`, model `acme/picked`, dataset `acme/data`"),
            "{e}"
        );
    }

    #[test]
    fn a_removed_repo_is_dropped_and_is_drift() {
        let old = manifest(MANIFEST);
        let lock = lock_of(&old);
        let m = manifest(&MANIFEST.replace("[[model]]\nid = \"acme/tiny\"\n\n", ""));
        let p = plan(&m, Some(&lock), &[], &LockOptions::default()).unwrap();
        assert_eq!(p.steps.len(), 2);
        assert!(
            steps(&p)
                .iter()
                .all(|(id, why)| id != "acme/tiny" && why.is_none())
        );
        assert_eq!(
            p.drift.iter().map(|d| d.to_string()).collect::<Vec<_>>(),
            ["model `acme/tiny`: in the lock but no longer in the manifest"]
        );
    }

    #[test]
    fn a_plugin_change_re_resolves_the_repos_whose_policy_uses_it() {
        let m = manifest(MANIFEST);
        let mut lock = lock_of(&m);
        lock.plugins.push(pin("b"));
        // New configuration digest: `acme/picked` uses `pick`, the others do not.
        let drift: Vec<PluginDrift> = plugin_drift(Some(&pin("b")), &pin("c"))
            .into_iter()
            .collect();
        assert_eq!(drift[0].to_string(), "plugin `pick`: its config changed");
        let p = plan(&m, Some(&lock), &drift, &LockOptions::default()).unwrap();
        assert_eq!(
            steps(&p),
            [
                ("acme/tiny".to_owned(), None),
                ("acme/picked".to_owned(), Some(Why::PluginChanged)),
                ("acme/data".to_owned(), None),
            ]
        );
        // A new source with the same bytes and config selects the same files.
        let mut moved = pin("b");
        moved.source = "elsewhere/pick.wasm".into();
        let drift: Vec<PluginDrift> = plugin_drift(Some(&pin("b")), &moved).into_iter().collect();
        assert_eq!(
            drift[0].to_string(),
            "plugin `pick`: source changed from `plugins/pick.wasm` to `elsewhere/pick.wasm`"
        );
        let p = plan(&m, Some(&lock), &drift, &LockOptions::default()).unwrap();
        assert!(steps(&p).iter().all(|(_, why)| why.is_none()));
    }

    #[test]
    fn locked_with_known_drift_resolves_nothing_even_offline() {
        let old = manifest(MANIFEST);
        let lock = lock_of(&old);
        let locked = opts(LockMode::Locked, true, &["acme/tiny"]);
        // Unchanged: an up-to-date check resolves only what --update names (and offline
        // refuses that).
        let e = plan(&old, Some(&lock), &[], &locked).unwrap_err();
        assert!(matches!(e, LockError::NeedsNetwork(_)), "{e}");
        // A changed manifest or a changed plugin: stale whatever the Hub says.
        let m = manifest(&MANIFEST.replace("\"*.json\"", "\"*.txt\""));
        assert!(plan(&m, Some(&lock), &[], &locked).unwrap().settled);
        let added = [PluginDrift::added("pick")];
        assert!(plan(&old, Some(&lock), &added, &locked).unwrap().settled);
        // Writing is never settled in advance.
        let write = opts(LockMode::Write, false, &[]);
        assert!(!plan(&m, Some(&lock), &added, &write).unwrap().settled);
    }
}
