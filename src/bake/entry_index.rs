//! An index over the entries of layer plans, by path, that holds no path: `verify --oci`
//! finds each entry it reads in it, and `fetch --cache` each entry of a downloaded layer.

use super::plan::{EntryId, EntryKind, LayerPlan};
use crate::hash::key128;

/// Every entry of some layer plans, found by binary search on a 128-bit key of its path, each
/// as (key, plan, entry of that plan): no path is held (a 100,000-file dataset's would weigh
/// tens of MB); the plans give them back from the lock. An entry is named by its index here,
/// so a reader can keep what it saw as one bit per entry.
pub struct EntryIndex {
    entries: Vec<(u128, u32, EntryId)>,
    plans: Vec<LayerPlan>,
}

impl EntryIndex {
    /// The entries of `plans`; a path several repos share (a parent folder) belongs to the
    /// last.
    pub fn from_plans(plans: impl IntoIterator<Item = LayerPlan>) -> Self {
        let plans: Vec<LayerPlan> = plans.into_iter().collect();
        let mut entries = Vec::new();
        for (p, plan) in plans.iter().enumerate() {
            entries.extend(
                plan.ids()
                    .map(|(path, id)| (key128(path.as_bytes()), p as u32, id)),
            );
        }
        // Stable, so that the entries of one path stay in plan order; the last is kept.
        entries.sort_by_key(|e| e.0);
        entries.dedup_by(|later, earlier| {
            let same = later.0 == earlier.0;
            if same {
                *earlier = *later;
            }
            same
        });
        entries.shrink_to_fit();
        EntryIndex { entries, plans }
    }

    /// The index of `path`'s entry.
    pub fn find(&self, path: &str) -> Option<usize> {
        let key = key128(path.as_bytes());
        let i = self.entries.binary_search_by_key(&key, |e| e.0).ok()?;
        // The key only finds the entry; the path decides.
        (self.path(i) == path).then_some(i)
    }

    /// The plan of entry `i`.
    pub fn plan(&self, i: usize) -> &LayerPlan {
        &self.plans[self.entries[i].1 as usize]
    }

    /// The repo of entry `i`.
    pub fn repo(&self, i: usize) -> &str {
        &self.plan(i).repo
    }

    /// The path of entry `i`.
    pub fn path(&self, i: usize) -> String {
        self.plan(i).path(self.entries[i].2)
    }

    /// What entry `i` must be.
    pub fn kind(&self, i: usize) -> EntryKind {
        self.plan(i).kind(self.entries[i].2)
    }

    /// The paths of the entries that are not `present`, sorted, with their repos.
    pub fn missing(&self, present: impl Fn(usize) -> bool) -> Vec<(String, &str)> {
        let mut out: Vec<(String, &str)> = (0..self.entries.len())
            .filter(|i| !present(*i))
            .map(|i| (self.path(i), self.repo(i)))
            .collect();
        out.sort();
        out
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::super::plan::plan_repo;
    use super::*;
    use crate::lock::Lockfile;
    use crate::manifest::bake_table::BakeSettings;
    use crate::repo::RepoKind;
    use crate::test_support::fuzz::locked_repo;

    /// The plans of a lock of these repos (id, files), one layer each.
    fn plans(repos: &[(&str, &[&str])]) -> Vec<LayerPlan> {
        let mut lock = Lockfile::new();
        for (id, paths) in repos {
            let files: Vec<(&str, &[u8], bool)> =
                paths.iter().map(|p| (*p, p.as_bytes(), false)).collect();
            lock.repos
                .push(locked_repo(RepoKind::Model, id, &"c".repeat(40), &files));
        }
        let lock = Arc::new(lock);
        (0..lock.repos.len())
            .flat_map(|i| plan_repo(&lock, i, &BakeSettings::default()))
            .collect()
    }

    #[test]
    fn entries_are_found_by_path_and_a_shared_path_belongs_to_the_last_repo() {
        let plans = plans(&[("acme/a", &["x", "sub/y"]), ("acme/b", &["z"])]);
        let all: usize = plans.iter().map(|p| p.entries().count()).sum();
        let want = EntryIndex::from_plans(plans);
        let shared = [
            "root",
            "root/.cache",
            "root/.cache/huggingface",
            "root/.cache/huggingface/hub",
        ];
        let snapshot = format!(
            "root/.cache/huggingface/hub/models--acme--a/snapshots/{}",
            "c".repeat(40)
        );
        assert_eq!(
            want.entries.len(),
            all - shared.len(),
            "each shared folder once"
        );
        for path in shared {
            assert_eq!(
                want.find(path).map(|i| want.repo(i)),
                Some("model/acme/b"),
                "{path}"
            );
        }
        let i = want.find(&format!("{snapshot}/sub/y")).unwrap();
        assert_eq!(want.repo(i), "model/acme/a");
        assert_eq!(
            want.kind(i),
            EntryKind::Symlink(format!(
                "../../../blobs/{}",
                crate::hash::git_blob_sha1(b"sub/y")
            ))
        );
        assert_eq!(want.find(&format!("{snapshot}/sub/z")), None);
        assert_eq!(
            want.find("root/.cache/huggingface/hub/models--acme--c"),
            None
        );
        let missing = want.missing(|j| j == i);
        assert_eq!(missing.len(), want.entries.len() - 1);
        assert!(
            missing.windows(2).all(|w| w[0].0 < w[1].0),
            "sorted by path"
        );
        assert!(
            missing
                .iter()
                .all(|(p, _)| *p != format!("{snapshot}/sub/y"))
        );
    }
}
