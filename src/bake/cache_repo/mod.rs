//! A registry repository as the shared layer cache (`--cache REGISTRY/REPO`, `[cache]`): each
//! model layer is recorded under a tag derived from the key the local layer cache uses
//! ([`super::layer_cache::cache_key`]), as a small manifest ([`record`]) that keeps the layer blob
//! alive and mountable. `bake` reads records to push images without the layers' files and
//! writes records for the layers it built; `fetch` unpacks recorded layers into the store
//! ([`fill`]), checking every file against the lock. Records are checked before use and a
//! record that does not match is ignored with a warning; a layer downloaded for `--oci` or
//! `--layers` is checked file by file against the lock before the layer cache keeps it
//! ([`CacheRepo::download`]). A layer `--push` only mounts is never read: the cache repository
//! is then a trust boundary. Format and trust rules: docs/cache-repository.md.

pub mod fill;
pub mod record;
pub mod signing;

use std::sync::Arc;

use serde::Serialize;

use super::assemble::layer_descriptor;
use super::layer_cache::{self as layer, BuiltLayer};
use super::plan::{LayerFormat, LayerPlan};
use super::verify_image::check_planned_layer;
use crate::oci::MEDIA_MANIFEST;
use crate::oci::digest::Digest;
use crate::oci::error::OciError;
use crate::oci::reference::ImageRef;
use crate::oci::registry::{Payload, Registry, RegistryError};
use crate::oci::source::RegistrySource;
use crate::oci::transfer::download;
use crate::store::Store;
use signing::{RecordSigner, RecordTrust};

/// What the cache repository did for a bake.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CacheOutcome {
    /// `registry/repo`.
    pub repository: String,
    /// Layers taken from records (no store files needed for them).
    pub hits: Vec<String>,
    /// Layers downloaded from the cache repository for --oci/--layers.
    pub downloaded: usize,
    /// Layers recorded by this bake.
    pub recorded: Vec<String>,
    /// Records ignored, records that could not be written (no push rights…), lookups that
    /// failed: each one a warning, none fails the bake.
    pub warnings: Vec<String>,
}

/// The cache repository: where it is and a client for its registry.
pub struct CacheRepo {
    source: Arc<RegistrySource>,
    /// `--cache-sign-key`: records written are signed.
    signer: Option<RecordSigner>,
    /// `--cache-trust-key`: only records this key signed are used.
    trust: Option<RecordTrust>,
}

/// What a lookup found for one layer.
pub enum Lookup {
    /// A record that matches: the layer, its blob in the cache repository.
    Hit(BuiltLayer),
    /// No record (or the registry could not be asked: the reason, for a warning).
    Miss(Option<String>),
    /// A record that does not match the lock: why, for a warning.
    Rejected(String),
}

impl CacheRepo {
    /// The cache repository `reference` (`REGISTRY/REPO`; a tag, if any, is ignored); plain
    /// http only with `insecure`.
    pub fn open(reference: &str, insecure: bool) -> Result<Self, OciError> {
        let image = ImageRef::parse(reference).map_err(|e| OciError::Invalid {
            what: format!("the cache repository `{reference}`"),
            detail: e.to_string(),
        })?;
        let registry = Registry::new(&image, insecure)?;
        Ok(CacheRepo {
            source: Arc::new(RegistrySource { registry, image }),
            signer: None,
            trust: None,
        })
    }

    /// This cache repository with records signed by `signer` when written and, with `trust`,
    /// only records that key signed used (see [`signing`]).
    pub fn with_keys(mut self, signer: Option<RecordSigner>, trust: Option<RecordTrust>) -> Self {
        self.signer = signer;
        self.trust = trust;
        self
    }

    /// `registry/repo`, for messages.
    pub fn name(&self) -> String {
        format!(
            "{}/{}",
            self.source.image.registry, self.source.image.repository
        )
    }

    pub(crate) fn repo(&self) -> &str {
        &self.source.image.repository
    }

    pub(crate) fn registry(&self) -> &Registry {
        &self.source.registry
    }

    /// Looks up the record of `plan`'s layer and checks it (record fields, then that the
    /// registry still has the blob).
    pub async fn lookup(&self, plan: &LayerPlan, format: LayerFormat) -> Lookup {
        let key = layer::cache_key(plan, format);
        let tag = record::tag(&key);
        let what = format!("{} layer {}/{}", plan.repo, plan.part.0, plan.part.1);
        let bytes = match self
            .registry()
            .manifest_if_exists(self.repo(), &tag, record::RECORD_LIMIT)
            .await
        {
            Ok(Some(b)) => b,
            Ok(None) => return Lookup::Miss(None),
            Err(e) => {
                return Lookup::Miss(Some(format!(
                    "cache repository {}: cannot read the record of {what}: {e}",
                    self.name()
                )));
            }
        };
        let found =
            match record::check(&bytes, plan, &key, format.media_type(), self.trust.as_ref()) {
                Ok(l) => l,
                Err(why) => {
                    return Lookup::Rejected(format!(
                        "cache repository {}: the record {tag} of {what} is ignored: {why}",
                        self.name()
                    ));
                }
            };
        match self.registry().has_blob(self.repo(), &found.digest).await {
            Ok(true) => Lookup::Hit(found),
            Ok(false) => Lookup::Rejected(format!(
                "cache repository {}: the record {tag} of {what} names blob {}, which the registry does not have; ignored",
                self.name(),
                found.digest
            )),
            Err(e) => Lookup::Miss(Some(format!(
                "cache repository {}: cannot check the blob of {what}: {e}",
                self.name()
            ))),
        }
    }

    /// The cache repository as an image source: `bake --push` mounts (same registry) or
    /// streams, digest-checked, the recorded layers from it.
    pub fn source(&self) -> Arc<RegistrySource> {
        self.source.clone()
    }

    /// Downloads the recorded layer into the store's layer cache, so that `--oci` and
    /// `--layers` can use it like a layer built here. Its digest is checked on the way, then
    /// every entry against the lock ([`check_planned_layer`]: the plan's entries and nothing
    /// else, each file's sha256, the DiffID the record gives) before the layer cache keeps it.
    /// `Ok(Err(warning))` for a layer that does not match: it is deleted, never kept, and the
    /// caller builds the layer instead.
    pub async fn download(
        &self,
        store: &Store,
        plan: &LayerPlan,
        format: LayerFormat,
        found: BuiltLayer,
    ) -> Result<Result<BuiltLayer, String>, OciError> {
        let key = layer::cache_key(plan, format);
        let tmp = layer::temp_path(store, &key).map_err(OciError::io(store.root()))?;
        let desc = layer_descriptor(&found);
        if let Err(e) = download(&self.source, &desc, &tmp).await {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        let checked = {
            let (tmp, plan) = (tmp.clone(), plan.clone());
            let owner = (format.stamp.uid, format.stamp.gid);
            let diff_id = found.diff_id.clone();
            tokio::task::spawn_blocking(move || {
                std::fs::File::open(&tmp)
                    .and_then(|file| check_planned_layer(file, &plan, owner, &diff_id))
            })
            .await
        };
        let refused = match checked {
            Ok(Ok(Ok(()))) => None,
            Ok(Ok(Err(why))) => Some(why),
            Ok(Err(e)) => Some(format!("it cannot be read as a tar: {e}")),
            Err(e) => Some(format!("the check stopped: {e}")),
        };
        if let Some(why) = refused {
            let _ = std::fs::remove_file(&tmp);
            return Ok(Err(format!(
                "cache repository {}: layer {} of {} {}/{} does not match the lock and is not used \
                 ({why}); its record may have been tampered with",
                self.name(),
                found.digest,
                plan.repo,
                plan.part.0,
                plan.part.1
            )));
        }
        let mut got = layer::adopt(store, &key, found, &tmp).map_err(OciError::io(&tmp))?;
        got.reused = true;
        Ok(Ok(got))
    }

    /// Step 5 of a bake: lists the layers taken from records as hits and records every
    /// other layer (built here, or taken from the local layer cache) in `outcome`; a record
    /// that cannot be written is a warning, never a failure.
    pub async fn record_built(
        &self,
        plans: &[LayerPlan],
        layers: &[BuiltLayer],
        from_record: &[bool],
        format: LayerFormat,
        pushed_to: Option<&ImageRef>,
        outcome: &mut CacheOutcome,
    ) {
        for ((plan, l), hit) in plans.iter().zip(layers).zip(from_record) {
            if *hit {
                outcome.hits.push(l.digest.to_string());
                continue;
            }
            match self.record(l, plan, format, pushed_to).await {
                Ok(()) => outcome.recorded.push(l.digest.to_string()),
                Err(e) => outcome.warnings.push(format!(
                    "cache repository {}: could not record {} layer {} ({e}); recording needs push rights to it, the bake itself is fine",
                    self.name(),
                    l.repo,
                    l.part
                )),
            }
        }
    }

    /// Records `layer` (built here, blob at `layer.path`): the blob goes to the cache
    /// repository first (mounted from `pushed_to` when the image was just pushed to a
    /// repository of the same registry, else uploaded), then the empty config, then the
    /// record manifest, so a record never names a blob the repository does not have.
    pub async fn record(
        &self,
        layer: &BuiltLayer,
        plan: &LayerPlan,
        format: LayerFormat,
        pushed_to: Option<&ImageRef>,
    ) -> Result<(), RegistryError> {
        let key = layer::cache_key(plan, format);
        let bytes = record::build(layer, plan, &key, self.signer.as_ref()).map_err(|e| {
            RegistryError::Http {
                url: self.name(),
                detail: e.to_string(),
            }
        })?;
        let (reg, repo) = (self.registry(), self.repo());
        if !reg.has_blob(repo, &layer.digest).await? {
            let mounted = match pushed_to {
                Some(t) if t.registry == self.source.image.registry => {
                    reg.mount(repo, &layer.digest, &t.repository).await?
                }
                _ => false,
            };
            if !mounted {
                reg.upload(
                    repo,
                    &layer.digest,
                    layer.size,
                    Payload::File(&layer.path),
                    &|_| {},
                )
                .await?;
            }
        }
        let empty = Digest::of(record::EMPTY_CONFIG);
        if !reg.has_blob(repo, &empty).await? {
            reg.upload(
                repo,
                &empty,
                record::EMPTY_CONFIG.len() as u64,
                Payload::Bytes(record::EMPTY_CONFIG),
                &|_| {},
            )
            .await?;
        }
        reg.put_manifest(repo, &record::tag(&key), &bytes, MEDIA_MANIFEST)
            .await
    }
}
