//! `pruner-keep-locked`: delete every cached revision that no lock names.
//!
//! Config:
//! - `keep-refs` (optional list): also keep revisions a branch or tag of these names points at.

use modelbake_plugin_sdk::pruner::{CachedRepo, Deletion, PruneContext};
use modelbake_plugin_sdk::{Config, Info, PluginError, Pruner};

const KEYS: &[&str] = &["keep-refs"];

/// The reason given for every deletion.
pub const REASON: &str = "not referenced by any lock";

/// Reads and checks `keep-refs`.
pub fn parse(config: &Config) -> Result<Vec<String>, PluginError> {
    config.check_known(KEYS)?;
    Ok(config.strings("keep-refs")?.unwrap_or(&[]).to_vec())
}

/// The deletions for `repos`: every unlocked revision not pointed at by one of `keep_refs`,
/// sorted by kind, id and commit.
pub fn plan(repos: &[CachedRepo], keep_refs: &[String]) -> Vec<Deletion> {
    let mut out = Vec::new();
    for repo in repos {
        for rev in &repo.revisions {
            if rev.locked || rev.refs.iter().any(|r| keep_refs.contains(r)) {
                continue;
            }
            out.push(Deletion {
                kind: repo.kind,
                id: repo.id.clone(),
                commit: rev.commit.clone(),
                reason: REASON.to_string(),
            });
        }
    }
    out.sort_by(|a, b| (a.kind as u8, &a.id, &a.commit).cmp(&(b.kind as u8, &b.id, &b.commit)));
    out
}

/// The plugin.
pub struct Plugin;

impl Pruner for Plugin {
    fn describe() -> Info {
        Info::new(
            env!("CARGO_PKG_NAME"),
            env!("CARGO_PKG_VERSION"),
            "Deletes every cached revision that none of the locks given to `cache prune` names, \
             except those a branch or tag listed in keep-refs points at.",
            "keep-refs: optional list of branch or tag names whose revisions are kept, e.g. \
             [\"main\"]",
        )
    }

    fn validate_config(config: &Config) -> Result<(), PluginError> {
        parse(config).map(|_| ())
    }

    fn plan(
        config: &Config,
        _ctx: &PruneContext,
        repos: &[CachedRepo],
    ) -> Result<Vec<Deletion>, PluginError> {
        let keep_refs = parse(config)?;
        Ok(plan(repos, &keep_refs))
    }
}

modelbake_plugin_sdk::export_pruner!(Plugin);

#[cfg(test)]
mod tests {
    use super::*;
    use modelbake_plugin_sdk::pruner::CachedRevision;
    use modelbake_plugin_sdk::{ConfigValue, RepoKind};

    fn rev(commit: &str, refs: &[&str], locked: bool) -> CachedRevision {
        CachedRevision {
            commit: commit.into(),
            refs: refs.iter().map(|s| s.to_string()).collect(),
            files: vec![],
            exclusive_size: 1,
            last_access: 0,
            locked,
        }
    }

    #[test]
    fn plans_unlocked() {
        let repos = vec![
            CachedRepo {
                kind: RepoKind::Dataset,
                id: "o/d".into(),
                size_on_disk: 0,
                revisions: vec![rev("d1", &[], false)],
            },
            CachedRepo {
                kind: RepoKind::Model,
                id: "o/m".into(),
                size_on_disk: 0,
                revisions: vec![
                    rev("m2", &[], false),
                    rev("m1", &["main"], false),
                    rev("m3", &["v1"], true),
                ],
            },
        ];
        let got: Vec<(RepoKind, String)> = plan(&repos, &[])
            .into_iter()
            .map(|d| (d.kind, d.commit))
            .collect();
        assert_eq!(
            got,
            vec![
                (RepoKind::Model, "m1".to_string()),
                (RepoKind::Model, "m2".to_string()),
                (RepoKind::Dataset, "d1".to_string()),
            ]
        );
        let kept = plan(&repos, &["main".to_string()]);
        assert_eq!(kept.len(), 2);
        assert!(kept.iter().all(|d| d.commit != "m1" && d.reason == REASON));
    }

    #[test]
    fn config() {
        let c = Config::new(vec![("keep".into(), ConfigValue::Strings(vec![]))]);
        assert_eq!(parse(&c).unwrap_err().key.as_deref(), Some("keep"));
        let c = Config::new(vec![(
            "keep-refs".into(),
            ConfigValue::String("main".into()),
        )]);
        assert_eq!(parse(&c).unwrap_err().key.as_deref(), Some("keep-refs"));
    }
}
