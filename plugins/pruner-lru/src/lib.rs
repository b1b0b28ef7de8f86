//! `pruner-lru`: delete the least recently used unlocked revisions until the cache fits.
//!
//! Config:
//! - `max-bytes` (required): the cache size to prune down to.

use modelbake_plugin_sdk::pruner::{CachedRepo, Deletion, PruneContext};
use modelbake_plugin_sdk::{Config, Info, PluginError, Pruner, human_bytes, log};

const KEYS: &[&str] = &["max-bytes"];

/// Reads and checks `max-bytes`.
pub fn parse(config: &Config) -> Result<u64, PluginError> {
    config.check_known(KEYS)?;
    config.require_u64("max-bytes")
}

/// The deletions that bring `ctx.total_size` down to `max_bytes`, least recently used first
/// (ties broken by kind, id and commit). Locked revisions are never planned. If deleting every
/// unlocked revision is not enough, all of them are planned.
pub fn plan(ctx: &PruneContext, repos: &[CachedRepo], max_bytes: u64) -> Vec<Deletion> {
    if ctx.total_size <= max_bytes {
        return Vec::new();
    }
    let excess = human_bytes(ctx.total_size - max_bytes);
    let mut candidates: Vec<_> = repos
        .iter()
        .flat_map(|repo| {
            repo.revisions
                .iter()
                .filter(|rev| !rev.locked)
                .map(move |rev| (repo, rev))
        })
        .collect();
    candidates.sort_by(|(ra, a), (rb, b)| {
        (a.last_access, ra.kind as u8, &ra.id, &a.commit).cmp(&(
            b.last_access,
            rb.kind as u8,
            &rb.id,
            &b.commit,
        ))
    });
    let mut remaining = ctx.total_size;
    let mut out = Vec::new();
    for (repo, rev) in candidates {
        if remaining <= max_bytes {
            break;
        }
        let days = ctx.now.saturating_sub(rev.last_access) / 86_400;
        out.push(Deletion {
            kind: repo.kind,
            id: repo.id.clone(),
            commit: rev.commit.clone(),
            reason: format!(
                "least recently used (last access {days} days ago); cache is {excess} over \
                 max-bytes"
            ),
        });
        remaining = remaining.saturating_sub(rev.exclusive_size);
    }
    out
}

/// The plugin.
pub struct Plugin;

impl Pruner for Plugin {
    fn describe() -> Info {
        Info::new(
            env!("CARGO_PKG_NAME"),
            env!("CARGO_PKG_VERSION"),
            "When the cache is larger than max-bytes, deletes unlocked revisions, least recently \
             used first, until it fits. Revisions named by a lock are never deleted.",
            "max-bytes: the cache size, in bytes, to prune down to",
        )
    }

    fn validate_config(config: &Config) -> Result<(), PluginError> {
        parse(config).map(|_| ())
    }

    fn plan(
        config: &Config,
        ctx: &PruneContext,
        repos: &[CachedRepo],
    ) -> Result<Vec<Deletion>, PluginError> {
        let max_bytes = parse(config)?;
        let out = plan(ctx, repos, max_bytes);
        let freed: u64 = out
            .iter()
            .filter_map(|d| {
                repos
                    .iter()
                    .find(|r| r.kind == d.kind && r.id == d.id)
                    .and_then(|r| r.revisions.iter().find(|v| v.commit == d.commit))
            })
            .fold(0, |t, v| t.saturating_add(v.exclusive_size));
        if ctx.total_size > max_bytes && ctx.total_size.saturating_sub(freed) > max_bytes {
            log::warn(&format!(
                "deleting every unlocked revision frees {}, which is not enough to reach \
                 max-bytes ({})",
                human_bytes(freed),
                human_bytes(max_bytes)
            ));
        }
        Ok(out)
    }
}

modelbake_plugin_sdk::export_pruner!(Plugin);

#[cfg(test)]
mod tests {
    use super::*;
    use modelbake_plugin_sdk::pruner::CachedRevision;
    use modelbake_plugin_sdk::{ConfigValue, ErrorCode, RepoKind};

    const DAY: u64 = 86_400;

    fn rev(commit: &str, size: u64, last_access: u64, locked: bool) -> CachedRevision {
        CachedRevision {
            commit: commit.into(),
            refs: vec![],
            files: vec![],
            exclusive_size: size,
            last_access,
            locked,
        }
    }

    fn repos() -> Vec<CachedRepo> {
        vec![
            CachedRepo {
                kind: RepoKind::Model,
                id: "o/b".into(),
                size_on_disk: 0,
                revisions: vec![rev("b1", 400, 10 * DAY, false), rev("b2", 500, DAY, true)],
            },
            CachedRepo {
                kind: RepoKind::Model,
                id: "o/a".into(),
                size_on_disk: 0,
                revisions: vec![
                    rev("a1", 300, 10 * DAY, false),
                    rev("a2", 100, 20 * DAY, false),
                ],
            },
        ]
    }

    fn commits(d: &[Deletion]) -> Vec<&str> {
        d.iter().map(|d| d.commit.as_str()).collect()
    }

    #[test]
    fn fits_already() {
        let ctx = PruneContext {
            now: 30 * DAY,
            total_size: 1300,
        };
        assert!(plan(&ctx, &repos(), 1300).is_empty());
    }

    #[test]
    fn lru_order_and_stop() {
        let ctx = PruneContext {
            now: 30 * DAY,
            total_size: 1300,
        };
        // a1 and b1 tie on last access; o/a sorts first.
        let d = plan(&ctx, &repos(), 1000);
        assert_eq!(commits(&d), vec!["a1"]);
        assert_eq!(
            d[0].reason,
            "least recently used (last access 20 days ago); cache is 300 B over max-bytes"
        );
        let d = plan(&ctx, &repos(), 950);
        assert_eq!(commits(&d), vec!["a1", "b1"]);
        let d = plan(&ctx, &repos(), 0);
        assert_eq!(commits(&d), vec!["a1", "b1", "a2"], "never the locked b2");
    }

    #[test]
    fn config() {
        let e = parse(&Config::default()).unwrap_err();
        assert_eq!(
            (e.code, e.key.as_deref()),
            (ErrorCode::InvalidConfig, Some("max-bytes"))
        );
        let c = Config::new(vec![("max-bytes".into(), ConfigValue::Float(1.5))]);
        assert_eq!(parse(&c).unwrap_err().key.as_deref(), Some("max-bytes"));
        let c = Config::new(vec![("max-bytes".into(), ConfigValue::Integer(7))]);
        assert_eq!(parse(&c).unwrap(), 7);
    }
}
