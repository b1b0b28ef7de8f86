//! Flags shared by several commands: where the store is, where the huggingface_hub cache is,
//! and how the cache is laid out in an image.

use std::path::PathBuf;

use clap::Args;

use crate::env::process_env;
use crate::hfcache::default_hub_cache;
use crate::manifest::bake_table::{
    BakeOverrides, ModelArrangement, parse_hf_home, parse_models_dir, parse_owner,
};
use crate::store::Store;

/// Where the store is, shared by the commands that use it.
#[derive(Debug, Args)]
pub struct StoreArgs {
    /// The blob store; default $MODELBAKE_STORE, else $XDG_CACHE_HOME/modelbake/store, else
    /// ~/.cache/modelbake/store. Shared by all projects of a user: each blob is stored once.
    #[arg(long, value_name = "DIR")]
    pub store: Option<PathBuf>,
}

impl StoreArgs {
    /// The store's `plugins/` folder (compiled and downloaded plugins), if a store location is
    /// known; commands that only need plugins do not create the store.
    pub(crate) fn plugin_dir(&self) -> Option<PathBuf> {
        self.store
            .clone()
            .or_else(|| Store::default_root(&process_env))
            .map(|root| Store::plugin_dir_of(&root))
    }

    pub(crate) fn open(&self) -> anyhow::Result<Store> {
        let root = match &self.store {
            Some(p) => p.clone(),
            None => Store::default_root(&process_env).ok_or_else(|| {
                anyhow::anyhow!(
                    "cannot place the store: set MODELBAKE_STORE or HOME, or pass --store DIR"
                )
            })?,
        };
        let durable = crate::env::flag(&process_env, "MODELBAKE_FSYNC");
        Ok(Store::open(&root)?.with_durability(durable))
    }
}

/// The huggingface_hub cache folder option of `export` and `verify`.
#[derive(Debug, Args)]
pub struct HubCacheArgs {
    /// The huggingface_hub cache (the folder holding models--*); default as huggingface_hub:
    /// $HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub.
    #[arg(long, value_name = "DIR")]
    pub hub_cache: Option<PathBuf>,
}

impl HubCacheArgs {
    pub(crate) fn resolve(&self) -> anyhow::Result<PathBuf> {
        match &self.hub_cache {
            Some(p) => Ok(p.clone()),
            None => default_hub_cache(&process_env)
                .ok_or_else(|| anyhow::anyhow!("cannot find the huggingface_hub cache: set HF_HUB_CACHE or HF_HOME, or pass --hub-cache DIR")),
        }
    }
}

/// How the cache is laid out in the image; shared by `bake` and `verify --oci/--layer`.
#[derive(Debug, Args)]
pub struct LayoutArgs {
    /// HF_HOME inside the image [default: bake.hf_home, else /root/.cache/huggingface].
    #[arg(long, value_name = "PATH", value_parser = parse_hf_home)]
    pub hf_home: Option<String>,
    /// uid:gid owning the baked files [default: bake.owner, else 0:0].
    #[arg(long, value_name = "UID:GID", value_parser = parse_owner)]
    pub owner: Option<(u32, u32)>,
    /// Platform, os/arch[/variant], picked from a multi-arch base; a comma-separated list
    /// (linux/amd64,linux/arm64) makes an image index whose manifests share the model layers
    /// [default: bake.platform, else linux/amd64].
    #[arg(long, value_name = "PLATFORM[,...]")]
    pub platform: Option<String>,
    /// hf-cache: the huggingface_hub cache under HF_HOME. files: each repo as plain files under
    /// --models-dir/<org>/<name>/ (datasets under datasets/, spaces under spaces/), for
    /// Kubernetes image volumes and KServe modelcars [default: bake.layout, else hf-cache].
    #[arg(long, value_name = "hf-cache|files")]
    pub layout: Option<ModelArrangement>,
    /// Folder of the files layout inside the image [default: bake.models_dir, else /models].
    #[arg(long, value_name = "PATH", value_parser = parse_models_dir)]
    pub models_dir: Option<String>,
    /// Files layout with exactly one locked repo: its files directly in --models-dir (KServe's
    /// modelcar convention).
    #[arg(long)]
    pub flat: bool,
}

impl LayoutArgs {
    /// These flags as overrides of `[bake]`.
    pub fn overrides(&self) -> BakeOverrides {
        BakeOverrides {
            hf_home: self.hf_home.clone(),
            owner: self.owner,
            platform: self.platform.clone(),
            layout: self.layout,
            models_dir: self.models_dir.clone(),
            flat: self.flat,
            ..Default::default()
        }
    }
}

/// The cache repository options of `bake` and `fetch`.
#[derive(Debug, Args)]
pub struct CacheArgs {
    /// A registry repository shared as a layer cache between machines (CI runners):
    /// REGISTRY/REPO [default: [cache] registry in models.toml, else none]. `bake` pushes
    /// without the files of layers recorded there and records the layers it builds (needs push
    /// rights; without them a warning); `fetch` unpacks recorded layers into the store, every
    /// file checked against the lock, and takes the rest from the Hub. See
    /// docs/cache-repository.md.
    #[arg(long, value_name = "REGISTRY/REPO")]
    pub cache: Option<String>,
    /// Use no cache repository even if models.toml names one.
    #[arg(long, conflicts_with = "cache")]
    pub no_cache: bool,
    /// Sign every record `bake` writes to the cache repository with this ECDSA P-256 private
    /// key (PKCS#8 PEM), so other runners can trust only records it signed.
    #[arg(long, value_name = "FILE")]
    pub cache_sign_key: Option<PathBuf>,
    /// Use only cache records signed with this ECDSA P-256 public key (PEM); unsigned or
    /// otherwise signed records are ignored with a warning. With --push a recorded layer is
    /// mounted, never downloaded: this is what makes the cache repository trustworthy there.
    #[arg(long, value_name = "FILE")]
    pub cache_trust_key: Option<PathBuf>,
}

impl CacheArgs {
    /// The cache repository to use: the flag, else the manifest's, unless `--no-cache`.
    pub(crate) fn resolve(&self, manifest: &crate::manifest::Manifest) -> Option<String> {
        if self.no_cache {
            return None;
        }
        self.cache.clone().or_else(|| manifest.cache.clone())
    }
}
