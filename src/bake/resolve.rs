//! Step 2 of a bake: every planned layer resolved to a [`BuiltLayer`], from the cache
//! repository's records ([`from_records`]), the local layer cache or built now ([`build_all`],
//! in parallel), after [`check_store`] made sure the store holds every file a layer that must
//! be built reads.

use std::sync::Arc;

use futures::{StreamExt, TryStreamExt, stream};

use super::BakeError;
use super::cache_repo::{CacheOutcome, CacheRepo, Lookup};
use super::layer_cache::{self, BuiltLayer};
use super::plan::{LayerFormat, LayerPlan};
use crate::store::Store;

/// The layers of a bake, in image order, and what the cache repository did for them.
#[derive(Debug, Default)]
pub struct Resolved {
    /// One layer per plan.
    pub layers: Vec<BuiltLayer>,
    /// Per layer: taken from a cache repository record.
    pub from_record: Vec<bool>,
    /// What the cache repository did (only with one).
    pub outcome: Option<CacheOutcome>,
    /// The cache repository could not be asked: nothing is recorded in it either.
    pub cache_down: bool,
}

/// Resolves every layer of `plans`: from `cache`'s records when one is given (downloaded into
/// the layer cache when `wants_files`), else from the layer cache, else built, `jobs` at a
/// time. `on_layer` is told about each layer as it is ready.
pub async fn layers(
    store: &Store,
    plans: &Arc<[LayerPlan]>,
    format: LayerFormat,
    cache: Option<(&CacheRepo, bool)>,
    jobs: usize,
    on_layer: &(dyn Fn(&BuiltLayer) + Sync),
) -> Result<Resolved, BakeError> {
    let mut resolved = Resolved::default();
    let mut recorded: Vec<Option<BuiltLayer>> = vec![None; plans.len()];
    if let Some((cache, wants_files)) = cache {
        let mut outcome = CacheOutcome {
            repository: cache.name(),
            ..Default::default()
        };
        resolved.cache_down = from_records(
            cache,
            store,
            plans,
            format,
            wants_files,
            &mut recorded,
            &mut outcome,
        )
        .await?;
        resolved.outcome = Some(outcome);
    }
    if let Err(mut e) = check_store(store, plans, format, &recorded, cache.is_some()) {
        // Why the cache repository did not help belongs with the error: the warnings of a
        // bake that stops are never printed.
        if let (BakeError::MissingFiles { why, .. }, Some(outcome)) = (&mut e, &resolved.outcome)
            && !outcome.warnings.is_empty()
        {
            why.push_str(&format!(
                "; it warned:\n  {}",
                outcome.warnings.join("\n  ")
            ));
        }
        return Err(e);
    }
    resolved.from_record = recorded.iter().map(Option::is_some).collect();
    resolved.layers = build_all(store, plans, recorded, format, jobs, on_layer).await?;
    Ok(resolved)
}

/// Looks up each plan's record in `cache`, filling `recorded`. When `wants_files`, a hit is
/// taken from the layer cache when it has the layer, else downloaded into it, checked entry by
/// entry against the lock ([`CacheRepo::download`]); a downloaded layer that does not match is
/// not recorded here (it is built instead). Records and layers that do not match are warnings
/// in `outcome`. Returns true when the registry could not be asked (then no further layer is
/// looked up).
pub async fn from_records(
    cache: &CacheRepo,
    store: &Store,
    plans: &[LayerPlan],
    format: LayerFormat,
    wants_files: bool,
    recorded: &mut [Option<BuiltLayer>],
    outcome: &mut CacheOutcome,
) -> Result<bool, BakeError> {
    for (i, plan) in plans.iter().enumerate() {
        match cache.lookup(plan, format).await {
            Lookup::Hit(found) if !wants_files => recorded[i] = Some(found),
            Lookup::Hit(found) => match layer_cache::cached(store, plan, format) {
                // The layer cache holds only layers built or checked here: it wins over the
                // record, whose layer would reach the output unchecked.
                Some(local) => {
                    if local.digest != found.digest {
                        outcome.warnings.push(format!(
                            "cache repository {}: the record of {} layer {}/{} names {}, this \
                             store's layer cache has {}; the layer cache's is used",
                            cache.name(),
                            plan.repo,
                            plan.part.0,
                            plan.part.1,
                            found.digest,
                            local.digest
                        ));
                    }
                    recorded[i] = Some(local);
                }
                None => match cache.download(store, plan, format, found).await? {
                    Ok(got) => {
                        outcome.downloaded += 1;
                        recorded[i] = Some(got);
                    }
                    Err(warning) => outcome.warnings.push(warning),
                },
            },
            Lookup::Miss(None) => {}
            Lookup::Rejected(w) => outcome.warnings.push(w),
            Lookup::Miss(Some(w)) => {
                // The registry could not be asked: no use asking for every other layer.
                outcome
                    .warnings
                    .push(format!("{w}; the cache repository is not asked further"));
                return Ok(true);
            }
        }
    }
    Ok(false)
}

/// Refuses to start when a layer that is neither recorded nor in the layer cache needs a store
/// file that is missing, naming the first 20 files.
pub fn check_store(
    store: &Store,
    plans: &[LayerPlan],
    format: LayerFormat,
    recorded: &[Option<BuiltLayer>],
    has_cache: bool,
) -> Result<(), BakeError> {
    let missing: Vec<String> = plans
        .iter()
        .zip(recorded)
        .filter(|(plan, r)| r.is_none() && layer_cache::cached(store, plan, format).is_none())
        .flat_map(|(plan, _)| {
            plan.store_blobs()
                .filter(|(sha, size)| !store.has(sha, *size))
                .map(|(sha, _)| plan.describe_blob(sha))
                .collect::<Vec<_>>()
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    Err(BakeError::MissingFiles {
        count: missing.len(),
        store: store.root().to_owned(),
        why: if has_cache {
            " (the cache repository has no usable record of their layers)".into()
        } else {
            String::new()
        },
        list: missing
            .iter()
            .take(20)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n  - "),
    })
}

/// Every layer in plan order: the recorded one where there is one, else from the layer cache
/// or built now (on blocking threads, `jobs` at a time).
pub async fn build_all(
    store: &Store,
    plans: &Arc<[LayerPlan]>,
    recorded: Vec<Option<BuiltLayer>>,
    format: LayerFormat,
    jobs: usize,
    on_layer: &(dyn Fn(&BuiltLayer) + Sync),
) -> Result<Vec<BuiltLayer>, BakeError> {
    // The plans are shared with the building threads, not copied (a 100,000-file layer's
    // plan is tens of MB).
    stream::iter(recorded.into_iter().enumerate().map(|(i, recorded)| {
        let (store, plans) = (store.clone(), plans.clone());
        async move {
            if let Some(found) = recorded {
                on_layer(&found);
                return Ok::<_, BakeError>(found);
            }
            let built = tokio::task::spawn_blocking(move || {
                let plan = &plans[i];
                layer_cache::build(&store, plan, format).map_err(|source| BakeError::Build {
                    repo: plan.repo.clone(),
                    source,
                })
            })
            .await??;
            on_layer(&built);
            Ok(built)
        }
    }))
    .buffered(jobs.max(1))
    .try_collect()
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bake::plan;
    use crate::lock::Lockfile;
    use crate::manifest::bake_table::BakeSettings;
    use crate::repo::RepoKind;
    use crate::test_support::fuzz::locked_repo;

    #[test]
    fn missing_store_files_are_named_with_their_repo_and_path() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut lock = Lockfile::new();
        lock.repos.push(locked_repo(
            RepoKind::Model,
            "acme/tiny",
            &"1".repeat(40),
            &[("config.json", b"{}\n", false)],
        ));
        let settings = BakeSettings::default();
        let plans = plan::plan_lock(&std::sync::Arc::new(lock), &settings).unwrap();
        let format = LayerFormat::new(&settings, 0);
        let e = check_store(&store, &plans, format, &[None], true).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("1 file(s) are not in the store")
                && msg.contains("model `acme/tiny` file `config.json`")
                && msg.contains("the cache repository has no usable record"),
            "{msg}"
        );
        assert!(
            crate::hint::Hint::hint(&e)
                .unwrap()
                .contains("modelbake fetch")
        );
        // A plan whose layer a cache record provides needs no store file.
        let recorded = build_placeholder(&plans[0]);
        assert!(check_store(&store, &plans, format, &[Some(recorded)], true).is_ok());
    }

    fn build_placeholder(plan: &LayerPlan) -> BuiltLayer {
        BuiltLayer {
            digest: crate::oci::digest::Digest::of(b"x"),
            diff_id: crate::oci::digest::Digest::of(b"x"),
            size: 1,
            media_type: crate::oci::MEDIA_LAYER_TAR.into(),
            repo: plan.repo.clone(),
            commit: plan.commit.clone(),
            part: "1/1".into(),
            path: Default::default(),
            reused: true,
        }
    }
}
