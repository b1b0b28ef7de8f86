//! Why a lock is out of date: differences between what the manifest asks for and what the lock
//! pinned, between two locks, and between two pins of a plugin, phrased for people ("include
//! changed from … to …", "plugin `pick`: its bytes changed").

use std::collections::BTreeSet;

use super::{LockedPlugin, LockedRepo, Lockfile};
use crate::manifest::{Manifest, RepoSpec};
use crate::repo::{RepoId, RepoKind};

/// One repo whose lock entry no longer matches, with the reason in words.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RepoDrift {
    /// Model, dataset or space.
    pub kind: RepoKind,
    /// The repo id.
    pub id: RepoId,
    /// What differs, for people.
    pub reason: String,
}

impl std::fmt::Display for RepoDrift {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} `{}`: {}", self.kind, self.id, self.reason)
    }
}

fn patterns(p: &[crate::manifest::Pattern]) -> Vec<String> {
    p.iter().map(|p| p.as_str().to_owned()).collect()
}

/// Why `locked` no longer satisfies `spec`, or `None` when it still does.
pub fn spec_drift(spec: &RepoSpec, locked: &LockedRepo) -> Option<String> {
    let mut reasons = Vec::new();
    if spec.revision != locked.revision {
        reasons.push(format!(
            "revision changed from `{}` to `{}` in the manifest",
            locked.revision, spec.revision
        ));
    }
    let (inc, exc) = (patterns(&spec.include), patterns(&spec.exclude));
    if inc != locked.include {
        reasons.push(format!(
            "include changed from {:?} to {:?}",
            locked.include, inc
        ));
    }
    if exc != locked.exclude {
        reasons.push(format!(
            "exclude changed from {:?} to {:?}",
            locked.exclude, exc
        ));
    }
    if spec.policy != locked.policy {
        reasons.push(format!(
            "policy changed from {:?} to {:?}",
            locked.policy, spec.policy
        ));
    }
    (!reasons.is_empty()).then(|| reasons.join("; "))
}

/// Why `locked` (the repo's entry in the lock, if any) no longer satisfies `spec`, or `None`
/// when it still does: a repo missing from the lock is drift too.
pub fn repo_drift(spec: &RepoSpec, locked: Option<&LockedRepo>) -> Option<String> {
    match locked {
        None => Some("in the manifest but not in the lock".to_owned()),
        Some(locked) => spec_drift(spec, locked),
    }
}

/// The drift of every repo of `lock` that `manifest` no longer lists.
pub fn removed_repos<'a>(
    manifest: &'a Manifest,
    lock: &'a Lockfile,
) -> impl Iterator<Item = RepoDrift> + 'a {
    lock.repos
        .iter()
        .filter(|locked| {
            !manifest
                .repos
                .iter()
                .any(|s| s.kind == locked.kind && s.id == locked.id)
        })
        .map(|locked| RepoDrift {
            kind: locked.kind,
            id: locked.id.clone(),
            reason: "in the lock but no longer in the manifest".into(),
        })
}

/// Puts drift in lock order (kind, then id), the order people read it in.
pub fn sort_drift(drift: &mut [RepoDrift]) {
    drift.sort_by(|a, b| (a.kind, &a.id).cmp(&(b.kind, &b.id)));
}

/// Every repo on which `manifest` and `lock` disagree: added, removed or changed settings.
pub fn manifest_drift(manifest: &Manifest, lock: &Lockfile) -> Vec<RepoDrift> {
    let mut out: Vec<RepoDrift> = manifest
        .repos
        .iter()
        .filter_map(|spec| {
            repo_drift(spec, lock.find(spec.kind, &spec.id)).map(|reason| RepoDrift {
                kind: spec.kind,
                id: spec.id.clone(),
                reason,
            })
        })
        .chain(removed_repos(manifest, lock))
        .collect();
    sort_drift(&mut out);
    out
}

/// How a re-resolved repo differs from its old lock entry, or `None` when identical.
pub fn locked_change(old: &LockedRepo, new: &LockedRepo) -> Option<String> {
    if old == new {
        return None;
    }
    let mut parts = Vec::new();
    if old.commit != new.commit {
        parts.push(format!(
            "`{}` moved from {} to {}",
            new.revision,
            short(&old.commit),
            short(&new.commit)
        ));
    }
    let old_files: BTreeSet<_> = old.files.iter().map(|f| (&f.path, &f.sha256)).collect();
    let new_files: BTreeSet<_> = new.files.iter().map(|f| (&f.path, &f.sha256)).collect();
    let old_paths: BTreeSet<_> = old.files.iter().map(|f| &f.path).collect();
    let new_paths: BTreeSet<_> = new.files.iter().map(|f| &f.path).collect();
    let added = new_paths.difference(&old_paths).count();
    let removed = old_paths.difference(&new_paths).count();
    let changed = new_files
        .difference(&old_files)
        .filter(|(p, _)| old_paths.contains(p))
        .count();
    if added + removed + changed > 0 {
        parts.push(format!(
            "{added} file(s) added, {removed} removed, {changed} changed"
        ));
    }
    if parts.is_empty() {
        parts.push("lock entry differs".into());
    }
    Some(parts.join("; "))
}

/// How one plugin's pin changed between the previous lock and this run. It reads as
/// "plugin `pick`: its bytes changed (sha256 … → …)"; `lock` prints it after "Pinned" and
/// `lock --locked` lists it among the reasons the lock is out of date.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginDrift {
    /// The plugin's name.
    pub name: String,
    /// What changed.
    pub change: PluginChange,
}

/// What changed about one plugin's pin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PluginChange {
    /// The manifest declares it and the previous lock did not pin it.
    Added,
    /// The previous lock pinned it and the manifest no longer declares it.
    Removed,
    /// Pinned before and now, differently.
    Changed {
        /// Its source (path as written, or URL), old and new, when that changed.
        source: Option<(String, String)>,
        /// The sha256 of its bytes, old and new, when that changed.
        sha256: Option<(String, String)>,
        /// True when its configuration digest changed.
        config: bool,
    },
}

impl PluginDrift {
    /// A plugin the previous lock did not pin.
    pub fn added(name: &str) -> Self {
        PluginDrift {
            name: name.to_owned(),
            change: PluginChange::Added,
        }
    }

    /// True when the plugin may now choose other files: new, or new bytes or configuration
    /// (a new source with the same bytes runs the same code), so the repos whose policy uses
    /// it must be resolved again.
    pub fn may_select_differently(&self) -> bool {
        match &self.change {
            PluginChange::Added => true,
            PluginChange::Removed => false,
            PluginChange::Changed { sha256, config, .. } => sha256.is_some() || *config,
        }
    }
}

impl std::fmt::Display for PluginDrift {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = &self.name;
        match &self.change {
            PluginChange::Added => write!(f, "plugin `{name}` added"),
            PluginChange::Removed => write!(f, "plugin `{name}` removed"),
            PluginChange::Changed {
                source,
                sha256,
                config,
            } => {
                let mut what = Vec::new();
                if let Some((old, new)) = source {
                    what.push(format!("source changed from `{old}` to `{new}`"));
                }
                if let Some((old, new)) = sha256 {
                    what.push(format!(
                        "its bytes changed (sha256 {} → {})",
                        short(old),
                        short(new)
                    ));
                }
                if *config {
                    what.push("its config changed".to_owned());
                }
                write!(f, "plugin `{name}`: {}", what.join("; "))
            }
        }
    }
}

/// In JSON a plugin change is the sentence people read.
impl serde::Serialize for PluginDrift {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// How `new` differs from the previous pin of the same plugin (`None`: the previous lock did
/// not pin it), or `None` when the pin is the same.
pub fn plugin_drift(old: Option<&LockedPlugin>, new: &LockedPlugin) -> Option<PluginDrift> {
    let Some(old) = old else {
        return Some(PluginDrift::added(&new.name));
    };
    let changed = |a: &String, b: &String| (a != b).then(|| (a.clone(), b.clone()));
    let source = changed(&old.source, &new.source);
    let sha256 = changed(&old.sha256, &new.sha256);
    let config = old.config != new.config;
    (source.is_some() || sha256.is_some() || config).then(|| PluginDrift {
        name: new.name.clone(),
        change: PluginChange::Changed {
            source,
            sha256,
            config,
        },
    })
}

/// The plugins the previous lock pinned that `manifest` no longer declares.
pub fn removed_plugins<'a>(
    manifest: &'a Manifest,
    lock: &'a Lockfile,
) -> impl Iterator<Item = PluginDrift> + 'a {
    lock.plugins
        .iter()
        .filter(|p| !manifest.plugins.contains_key(&p.name))
        .map(|p| PluginDrift {
            name: p.name.clone(),
            change: PluginChange::Removed,
        })
}

/// The first 12 characters of a commit or digest, as people quote them.
pub fn short(commit: &str) -> &str {
    &commit[..commit.len().min(12)]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pin(source: &str, sha: char, config: char) -> LockedPlugin {
        LockedPlugin {
            name: "pick".into(),
            source: source.into(),
            sha256: sha.to_string().repeat(64),
            config: config.to_string().repeat(64),
        }
    }

    #[test]
    fn plugin_pin_changes_read_as_sentences() {
        let old = pin("a.wasm", '1', 'c');
        assert_eq!(plugin_drift(Some(&old), &old), None);
        let added = plugin_drift(None, &old).unwrap();
        assert_eq!(added.to_string(), "plugin `pick` added");
        assert!(added.may_select_differently());
        let all = plugin_drift(Some(&old), &pin("b.wasm", '2', 'd')).unwrap();
        assert_eq!(
            all.to_string(),
            "plugin `pick`: source changed from `a.wasm` to `b.wasm`; its bytes changed \
             (sha256 111111111111 → 222222222222); its config changed"
        );
        assert_eq!(
            serde_json::to_value(&all).unwrap(),
            serde_json::Value::String(all.to_string())
        );
        let moved = plugin_drift(Some(&old), &pin("b.wasm", '1', 'c')).unwrap();
        assert!(!moved.may_select_differently());
        let removed = PluginDrift {
            name: "pick".into(),
            change: PluginChange::Removed,
        };
        assert_eq!(removed.to_string(), "plugin `pick` removed");
    }
}
