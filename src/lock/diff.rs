//! Why a lock is out of date: differences between what the manifest asks for and what the lock
//! pinned, and between two locks, phrased for people ("include changed from … to …").

use std::collections::BTreeSet;

use super::{LockedRepo, Lockfile};
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

/// Every repo on which `manifest` and `lock` disagree: added, removed or changed settings.
pub fn manifest_drift(manifest: &Manifest, lock: &Lockfile) -> Vec<RepoDrift> {
    let mut out = Vec::new();
    for spec in &manifest.repos {
        let reason = match lock.find(spec.kind, &spec.id) {
            None => Some("in the manifest but not in the lock".to_owned()),
            Some(locked) => spec_drift(spec, locked),
        };
        if let Some(reason) = reason {
            out.push(RepoDrift {
                kind: spec.kind,
                id: spec.id.clone(),
                reason,
            });
        }
    }
    for locked in &lock.repos {
        if !manifest
            .repos
            .iter()
            .any(|s| s.kind == locked.kind && s.id == locked.id)
        {
            out.push(RepoDrift {
                kind: locked.kind,
                id: locked.id.clone(),
                reason: "in the lock but no longer in the manifest".into(),
            });
        }
    }
    out.sort_by(|a, b| (a.kind, &a.id).cmp(&(b.kind, &b.id)));
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

/// The first 12 characters of a commit, as people quote them.
pub fn short(commit: &str) -> &str {
    &commit[..commit.len().min(12)]
}
