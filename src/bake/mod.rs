//! The `bake` engine: what is modelbake-specific about turning a lock into images, over the
//! generic OCI core ([`crate::oci`]). [`bake`] runs five steps, each a small function with its
//! own tests:
//!
//! 1. **plan** ([`plan`]): which entries each layer holds, from the lock and the settings only;
//! 2. **resolve layers** ([`resolve`]): each layer taken from the cache repository's records
//!    ([`cache_repo`]), from the local layer cache ([`layer_cache`]) or built now
//!    ([`layer_build`]), refusing to start when store files are missing;
//! 3. **assemble** ([`assemble`]): the base read for each platform, the image environment
//!    ([`image_env`]), one [`crate::oci::image::Image`] per platform, an index for several;
//! 4. **deliver** ([`deliver`]): the artifact handed to each requested sink (layer files, an OCI
//!    layout, a registry push);
//! 5. **attest** ([`attach`]): the SBOM, provenance and model signing statements of every
//!    image, signed with `--sign-key`, attached as referrers where the image went;
//! 6. **record**: the layers built now recorded in the cache repository.
//!
//! [`verify_image`] checks layers and images against the lock (`verify --oci`/`--layer`).
//!
//! Which option type is which (fewer would be better; each has one job):
//! - `cli::bake::BakeArgs`: the command line as clap parses it; only the CLI sees it.
//! - [`BakeOverrides`](crate::manifest::bake_table::BakeOverrides): the flags that replace
//!   `[bake]` values for one run (shared by `bake`, `verify` and `fetch --cache`).
//! - [`BakeSettings`]: what the image looks like, `[bake]` merged with the overrides: every
//!   choice that changes bytes except the mtime.
//! - [`BakeOptions`]: one run of `bake`: the settings and mtime, where the image goes, and how
//!   the run goes (jobs, plain http, cache repository). Only [`bake`] reads it; each step takes
//!   the few values it needs.
//! - [`LayerFormat`]: the byte-level choices of a layer (owner and mtime, compression,
//!   arrangement), derived from the settings ([`LayerFormat::new`]); the input of the layer
//!   cache key.

pub mod assemble;
pub mod attach;
pub mod cache_repo;
pub mod deliver;
pub mod detect_layout;
pub mod entry_index;
pub mod image_env;
pub mod layer_build;
pub mod layer_cache;
pub mod plan;
pub mod resolve;
pub mod verify_attestations;
pub mod verify_image;
pub mod verify_source;

#[cfg(test)]
mod fuzz_tests;

use std::path::PathBuf;
use std::sync::Arc;

use serde::Serialize;

use crate::hint::Hint;
use crate::loaders::Correction;
use crate::lock::Lockfile;
use crate::manifest::bake_table::BakeSettings;
use crate::oci::push::{PushObserver, PushReport};
use crate::oci::reference::ImageRef;
use crate::oci::{OciError, Platform};
use crate::store::Store;
use cache_repo::{CacheOutcome, CacheRepo};
use layer_cache::BuiltLayer;
use plan::LayerFormat;

/// Annotation on our layers: which repo they hold.
pub const ANNOTATION_REPO: &str = "dev.modelbake.repo";
/// Annotation on our layers: the locked commit.
pub const ANNOTATION_COMMIT: &str = "dev.modelbake.commit";
/// Annotation on our layers: `part/parts`.
pub const ANNOTATION_PART: &str = "dev.modelbake.part";

/// One run of `bake`: what to bake, where to put it and how (see the module note).
#[derive(Debug, Clone)]
pub struct BakeOptions {
    /// Arrangement, owner, compression, base, platform(s), split size, labels.
    pub settings: BakeSettings,
    /// mtime of every entry (`SOURCE_DATE_EPOCH`, else 0).
    pub mtime: u64,
    /// `--layers DIR`.
    pub layers_dir: Option<PathBuf>,
    /// `--oci DIR`.
    pub oci_dir: Option<PathBuf>,
    /// `--push REF`.
    pub push: Option<ImageRef>,
    /// Tag in the OCI layout (and for a push without a tag).
    pub tag: String,
    /// Plain-http registries allowed.
    pub insecure: bool,
    /// Layers built at once.
    pub jobs: usize,
    /// Blobs pushed at once.
    pub push_jobs: usize,
    /// `--cache REGISTRY/REPO` (or `[cache] registry`): the shared layer cache; `None` makes no
    /// request of any kind.
    pub cache: Option<String>,
    /// `--cache-sign-key`: sign the records this bake writes.
    pub cache_sign_key: Option<PathBuf>,
    /// `--cache-trust-key`: use only records this key signed.
    pub cache_trust_key: Option<PathBuf>,
    /// The attestations attached to every image (step 5).
    pub attest: attach::AttestOptions,
}

/// What went wrong in a bake, each with what to do about it (its [`Hint`]).
#[derive(Debug, thiserror::Error)]
pub enum BakeError {
    /// Reading the base, writing a layout, pushing, the cache repository.
    #[error(transparent)]
    Oci(#[from] OciError),
    /// Settings the lock cannot be laid out with.
    #[error(transparent)]
    Plan(#[from] plan::PlanError),
    /// Store files some layer needs are missing.
    #[error(
        "{count} file(s) are not in the store {store}: run `modelbake fetch` first{why}\n  - {list}",
        store = store.display()
    )]
    MissingFiles {
        /// How many.
        count: usize,
        /// The store.
        store: PathBuf,
        /// Why the cache repository did not help, when there is one.
        why: String,
        /// The first 20, one per line.
        list: String,
    },
    /// Writing a layer failed.
    #[error("building the layer of {repo}: {source}")]
    Build {
        /// The repo of the layer.
        repo: String,
        /// What failed.
        source: std::io::Error,
    },
    /// `SOURCE_DATE_EPOCH` is not a number.
    #[error("SOURCE_DATE_EPOCH=`{0}` is not a number of seconds")]
    Epoch(String),
    /// A signing or trust key that cannot be used.
    #[error(transparent)]
    Key(#[from] crate::keys::KeyError),
    /// A worker thread of the bake stopped.
    #[error("a layer worker stopped: {0}")]
    Worker(#[from] tokio::task::JoinError),
}

impl Hint for BakeError {
    fn hint(&self) -> Option<String> {
        match self {
            BakeError::Oci(e) => Hint::hint(e),
            BakeError::Plan(e) => Hint::hint(e),
            BakeError::MissingFiles { .. } => Some(
                "`modelbake fetch` downloads every locked file into the store (same --store); \
                 then run bake again"
                    .into(),
            ),
            BakeError::Build { .. } => Some(
                "check free space and permissions of the store's layers/ folder; \
                 `modelbake verify` re-hashes the store files a layer reads"
                    .into(),
            ),
            BakeError::Epoch(_) => Some(
                "set SOURCE_DATE_EPOCH to whole seconds since 1970 (e.g. `git log -1 --format=%ct`) or unset it"
                    .into(),
            ),
            BakeError::Key(e) => Hint::hint(e),
            BakeError::Worker(_) => None,
        }
    }
}

/// The mtime of every baked entry: `SOURCE_DATE_EPOCH` (reproducible-builds.org), else 0.
pub fn mtime_from_env(env: &dyn Fn(&str) -> Option<String>) -> Result<u64, BakeError> {
    match env("SOURCE_DATE_EPOCH") {
        Some(v) if !v.trim().is_empty() => v.trim().parse().map_err(|_| BakeError::Epoch(v)),
        _ => Ok(0),
    }
}

/// What a bake did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct BakeReport {
    /// Our layers, in image order.
    pub layers: Vec<BuiltLayer>,
    /// Layers taken from the layer cache.
    pub reused: usize,
    /// Layers built now.
    pub built: usize,
    /// Layers inherited from the base.
    pub base_layers: usize,
    /// The image config digest (single platform only).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub config_digest: String,
    /// The digest the tag points at: the image manifest, or the index for several platforms.
    pub manifest_digest: String,
    /// The image index digest, when several platforms were baked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index_digest: Option<String>,
    /// What was written for each platform.
    pub platforms: Vec<PlatformReport>,
    /// Where the OCI layout went.
    pub oci: Option<PathBuf>,
    /// Where the layer files went.
    pub layers_dir: Option<PathBuf>,
    /// What the push did (all zero and `pushed: null` without `--push`).
    #[serde(flatten)]
    pub push: PushReport,
    /// Base-image cache variables pointed at the baked cache (each one a warning).
    pub env_corrected: Vec<Correction>,
    /// What the cache repository did (absent without one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache: Option<CacheOutcome>,
    /// The attestations attached (absent with `--no-attestations`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attestations: Option<attach::AttestReport>,
}

/// What a bake wrote for one platform.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PlatformReport {
    /// `linux/amd64`…
    pub platform: String,
    /// The platform's image manifest digest.
    pub manifest_digest: String,
    /// The platform's image config digest.
    pub config_digest: String,
    /// Layers inherited from the platform's base.
    pub base_layers: usize,
}

/// Runs a bake: plan → resolve layers → assemble → deliver → attest → record (see the module
/// note).
/// `on_layer` is told about each layer as it is ready, `on_push` about the push.
pub async fn bake(
    lock: &Arc<Lockfile>,
    store: &Store,
    opts: &BakeOptions,
    on_layer: &(dyn Fn(&BuiltLayer) + Sync),
    on_push: &dyn PushObserver,
) -> Result<BakeReport, BakeError> {
    let platforms = Platform::parse_list(&opts.settings.platform).map_err(plan::PlanError::from)?;
    let format = LayerFormat::new(&opts.settings, opts.mtime);
    let plans: Arc<[plan::LayerPlan]> = plan::plan_lock(lock, &opts.settings)?.into();
    let sign_key = attach::load_key(&opts.attest)?;

    let cache = match &opts.cache {
        Some(reference) => {
            let signer = opts
                .cache_sign_key
                .as_deref()
                .map(cache_repo::signing::RecordSigner::from_file)
                .transpose()?;
            let trust = opts
                .cache_trust_key
                .as_deref()
                .map(cache_repo::signing::RecordTrust::from_file)
                .transpose()?;
            Some(CacheRepo::open(reference, opts.insecure)?.with_keys(signer, trust))
        }
        None => None,
    };
    let wants_files = opts.layers_dir.is_some() || opts.oci_dir.is_some();
    let resolved = resolve::layers(
        store,
        &plans,
        format,
        cache.as_ref().map(|c| (c, wants_files)),
        opts.jobs,
        on_layer,
    )
    .await?;

    let assembled = assemble::assemble(
        &opts.settings,
        &platforms,
        &resolved.layers,
        cache.as_ref().map(CacheRepo::source),
        opts.insecure,
    )
    .await?;
    let mut report = assembled.report(&resolved.layers);

    let delivered = deliver::deliver(&assembled.artifact, &resolved.layers, opts, on_push).await?;
    report.layers_dir = delivered.layers_dir;
    report.oci = delivered.oci;
    report.push = delivered.push;

    if opts.attest.enabled {
        let pushed = delivered.registry.as_ref().zip(opts.push.as_ref());
        report.attestations = Some(
            attach::attach(
                lock,
                store,
                opts,
                &assembled.artifact,
                &assembled.bases,
                sign_key.as_ref(),
                pushed,
            )
            .await?,
        );
    }

    if let Some(cache) = &cache {
        let mut outcome = resolved.outcome.unwrap_or_default();
        if !resolved.cache_down {
            cache
                .record_built(
                    &plans,
                    &resolved.layers,
                    &resolved.from_record,
                    format,
                    opts.push.as_ref(),
                    &mut outcome,
                )
                .await;
        }
        report.cache = Some(outcome);
    }
    Ok(report)
}
