//! The last step of `lock`, and the only place that decides what becomes of the lock file:
//! with [`LockMode::Write`] it is written when its bytes change; with [`LockMode::Locked`]
//! it must exist and nothing may have changed, else the run fails as out of date (exit 3).

use std::path::Path;

use super::resolver::ResolvedRepo;
use super::{LockError, LockMode, LockReport, RepoOutcome, Verdict};
use crate::lock::diff::{PluginDrift, RepoDrift, locked_change};
use crate::lock::{LockedPlugin, Lockfile};

/// What a run produced for commit to judge.
#[derive(Default)]
pub(crate) struct Draft {
    /// Every repo of the new lock, in any order.
    pub repos: Vec<ResolvedRepo>,
    /// The plugin pins of the new lock.
    pub pins: Vec<LockedPlugin>,
    /// How the plugin pins changed.
    pub plugins: Vec<PluginDrift>,
    /// The drift of the repos a settled run did not resolve (see `LockPlan::settled`).
    pub unresolved: Vec<RepoDrift>,
}

/// Commits `draft` to the lock at `path` as `mode` says, comparing it with `previous` (the
/// lock that was there): writes it, or checks it is current, and reports every repo.
pub(crate) fn commit(
    draft: Draft,
    previous: Option<&Lockfile>,
    path: &Path,
    mode: LockMode,
) -> Result<LockReport, LockError> {
    let (lock, repos) = assemble(draft.repos, draft.pins, previous);
    let removed: Vec<String> = previous
        .iter()
        .flat_map(|l| &l.repos)
        .filter(|r| lock.find(r.kind, &r.id).is_none())
        .map(|r| r.label())
        .collect();
    let verdict = match mode {
        LockMode::Locked => {
            if previous.is_none() {
                return Err(LockError::Missing(path.to_owned()));
            }
            let drift: Vec<RepoDrift> = draft
                .unresolved
                .into_iter()
                .chain(repos.iter().filter_map(RepoOutcome::drift))
                .collect();
            if !drift.is_empty() || !draft.plugins.is_empty() {
                return Err(LockError::OutOfDate {
                    lockfile: path.to_owned(),
                    drift,
                    plugins: draft.plugins,
                });
            }
            Verdict::UpToDate
        }
        LockMode::Write => match lock.write(path) {
            Ok(true) => Verdict::Written,
            Ok(false) => Verdict::Unchanged,
            Err(source) => {
                return Err(LockError::Write {
                    path: path.to_owned(),
                    source,
                });
            }
        },
    };
    Ok(LockReport {
        lockfile: path.to_owned(),
        verdict,
        repos,
        removed,
        plugins: draft.plugins,
    })
}

/// The new lock in canonical order, and one outcome per repo in lock order, saying how it
/// changed against `previous`.
fn assemble(
    mut resolved: Vec<ResolvedRepo>,
    pins: Vec<LockedPlugin>,
    previous: Option<&Lockfile>,
) -> (Lockfile, Vec<RepoOutcome>) {
    resolved.sort_by(|a, b| (a.repo.kind, &a.repo.id).cmp(&(b.repo.kind, &b.repo.id)));
    let mut lock = Lockfile::new();
    lock.plugins = pins;
    let mut outcomes = Vec::with_capacity(resolved.len());
    for ResolvedRepo {
        mut repo,
        action,
        dropped,
    } in resolved
    {
        repo.normalize();
        let change = match previous.and_then(|l| l.find(repo.kind, &repo.id)) {
            Some(prev) => locked_change(prev, &repo),
            None => Some("added".into()),
        };
        outcomes.push(RepoOutcome {
            kind: repo.kind,
            id: repo.id.clone(),
            revision: repo.revision.to_string(),
            commit: repo.commit.clone(),
            files: repo.files.len(),
            bytes: repo.total_size(),
            action,
            change,
            dropped,
        });
        lock.repos.push(repo);
    }
    lock.normalize();
    (lock, outcomes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::{git_blob_sha1, sha256_hex};
    use crate::lock::{LockedFile, LockedRepo};
    use crate::repo::{RepoId, RepoKind, Revision};
    use crate::resolve::RepoAction;

    fn repo(id: &str, commit: char, content: &[u8]) -> LockedRepo {
        let mut repo = LockedRepo {
            kind: RepoKind::Model,
            id: RepoId::parse(id).unwrap(),
            revision: Revision::parse("main").unwrap(),
            commit: commit.to_string().repeat(40),
            include: Vec::new(),
            exclude: Vec::new(),
            policy: Vec::new(),
            complete: true,
            digest: String::new(),
            files: vec![LockedFile {
                path: "config.json".into(),
                size: content.len() as u64,
                sha256: sha256_hex(content),
                blob: git_blob_sha1(content),
                pointer: None,
                xet_hash: None,
            }],
        };
        repo.normalize();
        repo
    }

    fn draft(repos: &[(&LockedRepo, RepoAction)]) -> Draft {
        Draft {
            repos: repos
                .iter()
                .map(|(repo, action)| ResolvedRepo {
                    repo: (*repo).clone(),
                    action: *action,
                    dropped: Vec::new(),
                })
                .collect(),
            ..Draft::default()
        }
    }

    #[test]
    fn write_writes_once_then_reports_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("models.lock");
        let (b, a) = (repo("acme/b", '1', b"{}"), repo("acme/a", '2', b"[]"));
        let first = draft(&[(&b, RepoAction::Resolved), (&a, RepoAction::Resolved)]);
        let report = commit(first, None, &path, LockMode::Write).unwrap();
        assert_eq!(report.verdict, Verdict::Written);
        let ids: Vec<String> = report.repos.iter().map(|r| r.id.to_string()).collect();
        assert_eq!(ids, ["acme/a", "acme/b"], "lock order");
        assert!(
            report
                .repos
                .iter()
                .all(|r| r.change.as_deref() == Some("added"))
        );

        let previous = Lockfile::read_if_exists(&path).unwrap().unwrap();
        let again = draft(&[(&a, RepoAction::Kept)]);
        let report = commit(again, Some(&previous), &path, LockMode::Write).unwrap();
        assert_eq!(report.verdict, Verdict::Written);
        assert_eq!(report.removed, ["model `acme/b`"]);
        assert_eq!(report.repos[0].change, None);

        let previous = Lockfile::read_if_exists(&path).unwrap().unwrap();
        let same = draft(&[(&a, RepoAction::Kept)]);
        let report = commit(same, Some(&previous), &path, LockMode::Write).unwrap();
        assert_eq!(report.verdict, Verdict::Unchanged);
        assert!(!report.verdict.written());
    }

    #[test]
    fn locked_never_writes_and_names_what_is_stale() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("models.lock");
        let a = repo("acme/a", '1', b"{}");

        let e = commit(draft(&[]), None, &path, LockMode::Locked).unwrap_err();
        assert!(matches!(e, LockError::Missing(_)) && e.is_stale(), "{e}");
        assert!(!path.exists());

        let mut previous = Lockfile::new();
        previous.repos.push(a.clone());
        let kept = draft(&[(&a, RepoAction::Kept)]);
        let report = commit(kept, Some(&previous), &path, LockMode::Locked).unwrap();
        assert_eq!(report.verdict, Verdict::UpToDate);
        assert!(!path.exists(), "--locked never writes");

        // An update that moved the branch and changed a file.
        let moved = repo("acme/a", '3', b"[]");
        let updated = draft(&[(&moved, RepoAction::Updated)]);
        let e = commit(updated, Some(&previous), &path, LockMode::Locked).unwrap_err();
        assert!(e.is_stale());
        let text = e.to_string();
        assert!(
            text.contains(
                "  - model `acme/a`: `main` moved from 111111111111 to 333333333333; 0 file(s) added, 0 removed, 1 changed"
            ),
            "{text}"
        );
        assert!(!path.exists());

        // Drift known before resolving, and a plugin change, are listed plugins first.
        let stale = Draft {
            plugins: vec![PluginDrift::added("pick")],
            unresolved: vec![RepoDrift {
                kind: RepoKind::Model,
                id: RepoId::parse("acme/a").unwrap(),
                reason: "include changed".into(),
            }],
            ..Draft::default()
        };
        let e = commit(stale, Some(&previous), &path, LockMode::Locked).unwrap_err();
        assert!(
            e.to_string()
                .contains("  - plugin `pick` added\n  - model `acme/a`: include changed\n"),
            "{e}"
        );
    }
}
