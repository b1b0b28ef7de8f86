//! `modelbake fetch`, `export` and `verify`: arguments and output.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Mutex;
use std::time::Instant;

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use super::{Cli, Failure, load_locked};
use crate::fetch::{self, BlobJob, BlobOutcome, FetchOptions, FetchProgress};
use crate::hfcache::export::{LinkMode, export};
use crate::hfcache::{default_hub_cache, verify::verify};
use crate::hub::config::process_env;
use crate::hub::{HubClient, HubConfig};
use crate::store::Store;
use crate::ui::{Ui, display_path, human_size};

/// Where the store is, shared by the commands that use it.
#[derive(Debug, Args)]
pub struct StoreArgs {
    /// The blob store; default $MODELBAKE_STORE, else ~/.cache/modelbake/store. Shared by all
    /// projects of a user: each blob is stored once.
    #[arg(long, value_name = "DIR")]
    pub store: Option<PathBuf>,
}

impl StoreArgs {
    /// The store's `plugins/` folder (compiled and downloaded plugins), if a store location is
    /// known; commands that only need plugins do not create the store.
    pub(super) fn plugin_dir(&self) -> Option<PathBuf> {
        self.store
            .clone()
            .or_else(|| Store::default_root(&process_env))
            .map(|root| Store::plugin_dir_of(&root))
    }

    pub(super) fn open(&self) -> anyhow::Result<Store> {
        let root = match &self.store {
            Some(p) => p.clone(),
            None => Store::default_root(&process_env).ok_or_else(|| {
                anyhow::anyhow!(
                    "cannot place the store: set MODELBAKE_STORE or HOME, or pass --store DIR"
                )
            })?,
        };
        let durable = !process_env("MODELBAKE_FSYNC")
            .is_some_and(|v| matches!(v.trim(), "0" | "false" | "off" | "no"));
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
    pub(super) fn resolve(&self) -> anyhow::Result<PathBuf> {
        match &self.hub_cache {
            Some(p) => Ok(p.clone()),
            None => default_hub_cache(&process_env)
                .ok_or_else(|| anyhow::anyhow!("cannot find the huggingface_hub cache: set HF_HUB_CACHE or HF_HOME, or pass --hub-cache DIR")),
        }
    }
}

/// Arguments of `modelbake fetch`.
#[derive(Debug, Args)]
pub struct FetchArgs {
    /// Hub endpoint; default $HF_ENDPOINT, else https://huggingface.co.
    #[arg(long, value_name = "URL")]
    pub endpoint: Option<String>,
    /// Connections open at once (files in parallel, and Range chunks of large files).
    #[arg(long, short = 'j', value_name = "N", default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub jobs: u16,
    /// No network: take blobs only from the store and local huggingface_hub caches; fail
    /// listing what is missing.
    #[arg(long)]
    pub offline: bool,
    /// Another huggingface_hub cache to import matching blobs from (hash-checked); repeatable.
    /// The default cache ($HF_HUB_CACHE / $HF_HOME/hub) is always searched.
    #[arg(long, value_name = "DIR")]
    pub reuse: Vec<PathBuf>,
    /// Skip the fsync before each blob is published (also MODELBAKE_FSYNC=0). Blobs are still
    /// verified before they become visible and a killed run still loses nothing; only a power
    /// loss could leave a damaged blob. For ephemeral CI runners and container builds, where
    /// it is often 2x faster.
    #[arg(long)]
    pub no_fsync: bool,
    #[command(flatten)]
    pub store: StoreArgs,
}

/// Arguments of `modelbake export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    #[command(flatten)]
    pub hub_cache: HubCacheArgs,
    /// Copy blobs instead of hard-linking them to the store.
    #[arg(long)]
    pub copy: bool,
    #[command(flatten)]
    pub store: StoreArgs,
}

/// Arguments of `modelbake verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub hub_cache: HubCacheArgs,
    /// Check the image in this OCI layout instead of a cache.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["layer", "hub_cache"])]
    pub oci: Option<PathBuf>,
    /// Tag of the image in --oci.
    #[arg(long, default_value = "latest", requires = "oci")]
    pub tag: String,
    /// Check one layer tarball (plain, gzip or zstd) instead of a cache.
    #[arg(long, value_name = "FILE", conflicts_with = "hub_cache")]
    pub layer: Option<PathBuf>,
    #[command(flatten)]
    pub layout: super::bake::LayoutArgs,
}

/// Progress on a terminal: one byte bar; elsewhere one line per blob obtained.
struct Progress<'a> {
    ui: &'a Ui,
    bar: Mutex<Option<ProgressBar>>,
}

impl FetchProgress for Progress<'_> {
    fn start(&self, blobs: usize, bytes: u64) {
        if blobs == 0 || !self.ui.tty || self.ui.quiet {
            return;
        }
        let bar = ProgressBar::new(bytes);
        bar.set_style(
            ProgressStyle::with_template("{spinner:.green} [{elapsed_precise}] {wide_bar:.cyan/blue} {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        if let Ok(mut b) = self.bar.lock() {
            *b = Some(bar);
        }
    }

    fn advance(&self, n: u64) {
        if let Ok(b) = self.bar.lock()
            && let Some(bar) = b.as_ref()
        {
            bar.inc(n);
        }
    }

    fn blob_done(&self, job: &BlobJob, outcome: BlobOutcome) {
        let verb = match outcome {
            BlobOutcome::Present => return,
            BlobOutcome::FetchedByAnother => "Shared",
            BlobOutcome::Imported => "Imported",
            BlobOutcome::Downloaded => "Downloaded",
        };
        let line = self.ui.status_line(
            verb,
            format!("{} ({})", job.uses[0].label(), human_size(job.size)),
        );
        match self.bar.lock().ok().and_then(|b| b.clone()) {
            Some(bar) => bar.suspend(|| eprintln!("{line}")),
            None if !self.ui.quiet => eprintln!("{line}"),
            None => {}
        }
    }
}

/// Runs `modelbake fetch`.
pub async fn run_fetch(cli: &Cli, args: &FetchArgs, ui: &Ui) -> Result<ExitCode, Failure> {
    let started = Instant::now();
    let (manifest, lock) = load_locked(cli, ui)?;
    let store = args.store.open()?;
    let store = if args.no_fsync {
        store.with_durability(false)
    } else {
        store
    };
    let client = HubClient::new(HubConfig::from_env(args.endpoint.as_deref())?)?;
    let mirrors = if args.offline || manifest.mirrors.is_empty() || store.missing(&lock).is_empty()
    {
        fetch::MirrorPlan::default()
    } else {
        mirror_plan(&manifest, &lock, &store).await?
    };
    for r in &mirrors.rejected {
        if !ui.quiet {
            eprintln!("warning: {r}");
        }
    }
    let opts = FetchOptions {
        jobs: usize::from(args.jobs),
        offline: args.offline,
        reuse: fetch::reuse_caches(&args.reuse, &process_env),
        mirrors,
        ..tuned_defaults()
    };
    let progress = Progress {
        ui,
        bar: Mutex::new(None),
    };
    let result = fetch::fetch(&lock, &store, &client, &opts, &progress).await;
    if let Some(bar) = progress.bar.lock().ok().and_then(|mut b| b.take()) {
        bar.finish_and_clear();
    }
    let report = result?;
    let secs = started.elapsed().as_secs_f64();
    if ui.json {
        let mut v = serde_json::to_value(&report)?;
        v["ok"] = true.into();
        v["store"] = display_path(store.root()).into();
        v["seconds"] = serde_json::json!((secs * 1000.0).round() / 1000.0);
        println!("{}", serde_json::to_string_pretty(&v)?);
    }
    ui.status(
        "Finished",
        format!(
            "{} blobs ({}) present in {}: {} downloaded ({}, {}/s{}), {} imported, {} already there, in {secs:.2}s",
            report.blobs,
            human_size(report.bytes),
            display_path(store.root()),
            report.downloaded,
            human_size(report.downloaded_bytes),
            human_size((report.downloaded_bytes as f64 / secs.max(1e-3)) as u64),
            if report.from_mirrors > 0 || !report.mirror_failures.is_empty() {
                format!(
                    "; {} from mirrors, {} mirror failure(s)",
                    report.from_mirrors,
                    report.mirror_failures.len()
                )
            } else {
                String::new()
            },
            report.imported,
            report.present + report.fetched_by_another,
        ),
    );
    Ok(ExitCode::SUCCESS)
}

/// Loads the `[mirror] use` plugins (pinned by the lock) and asks them about every file.
async fn mirror_plan(
    manifest: &crate::manifest::Manifest,
    lock: &crate::lock::Lockfile,
    store: &crate::store::Store,
) -> anyhow::Result<fetch::MirrorPlan> {
    let mut pins = std::collections::BTreeMap::new();
    for name in &manifest.mirrors {
        let pin = lock.plugin(name).ok_or_else(|| {
            anyhow::anyhow!(
                "mirror plugin `{name}` is not pinned in {}: run `modelbake lock` first",
                display_path(&manifest.lock_path())
            )
        })?;
        pins.insert(name.clone(), pin.clone());
    }
    let dir = store.plugin_dir();
    let mut plugins = crate::plugin::PluginSet::new(Some(dir.clone()))?;
    plugins
        .load(
            manifest,
            &manifest.mirrors,
            crate::plugin::PluginKind::Mirror,
            &pins,
            Some(&dir),
            false,
        )
        .await?;
    Ok(fetch::MirrorPlan::build(
        lock,
        &plugins,
        &manifest.mirrors,
        &manifest.credentials,
        &process_env,
    )?)
}

/// The fetch defaults, with `MODELBAKE_CHUNK_MIB`, `MODELBAKE_CHUNK_THRESHOLD_MIB` and
/// `MODELBAKE_MEMORY_MIB` as tuning knobs for unusual networks.
fn tuned_defaults() -> FetchOptions {
    let mut o = FetchOptions::default();
    let mib = |k: &str| {
        process_env(k)
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(|v| v << 20)
    };
    if let Some(v) = mib("MODELBAKE_CHUNK_MIB") {
        o.chunk_size = v.max(1 << 20);
    }
    if let Some(v) = mib("MODELBAKE_CHUNK_THRESHOLD_MIB") {
        o.chunk_threshold = v;
    }
    if let Some(v) = mib("MODELBAKE_MEMORY_MIB") {
        o.memory_budget = v;
    }
    o
}

/// Runs `modelbake export`.
pub async fn run_export(cli: &Cli, args: &ExportArgs, ui: &Ui) -> Result<ExitCode, Failure> {
    let (_, lock) = load_locked(cli, ui)?;
    let store = args.store.open()?;
    let hub_cache = args.hub_cache.resolve()?;
    let mode = if args.copy {
        LinkMode::Copy
    } else {
        LinkMode::Hardlink
    };
    let report =
        tokio::task::spawn_blocking(move || export(&lock, &store, &hub_cache, mode)).await??;
    if ui.json {
        let mut v = serde_json::to_value(&report)?;
        v["ok"] = true.into();
        println!("{}", serde_json::to_string_pretty(&v)?);
    }
    ui.status(
        "Exported",
        format!(
            "{} repos to {}: {} blobs linked, {} copied, {} already there; {} symlinks and {} refs written",
            report.repos,
            display_path(&report.hub_cache),
            report.linked,
            report.copied,
            report.kept,
            report.symlinks_written,
            report.refs_written
        ),
    );
    Ok(ExitCode::SUCCESS)
}

/// Runs `modelbake verify`.
pub async fn run_verify(cli: &Cli, args: &VerifyArgs, ui: &Ui) -> Result<ExitCode, Failure> {
    let (manifest, lock) = load_locked(cli, ui)?;
    if args.oci.is_some() || args.layer.is_some() {
        let settings = args.layout.apply(manifest.bake.clone());
        let (what, report) = match (&args.oci, &args.layer) {
            (Some(dir), _) => {
                let (dir2, tag) = (dir.clone(), args.tag.clone());
                let r = tokio::task::spawn_blocking(move || {
                    crate::oci::verify::verify_layout(&dir2, &tag, &lock, &settings)
                })
                .await??;
                (format!("{}:{}", display_path(dir), args.tag), r)
            }
            (None, Some(file)) => {
                let f = file.clone();
                let r = tokio::task::spawn_blocking(move || {
                    crate::oci::verify::verify_layer(&f, &lock, &settings)
                })
                .await??;
                (display_path(file), r)
            }
            _ => unreachable!("checked above"),
        };
        if ui.json {
            println!("{}", serde_json::to_string_pretty(&report)?);
        }
        if !ui.quiet {
            for l in &report.layers {
                if l.problems.is_empty() {
                    ui.status(
                        "Verified",
                        format!(
                            "layer {} ({}; {} entries)",
                            l.layer,
                            l.repos.join(", "),
                            l.entries
                        ),
                    );
                } else {
                    eprintln!("layer {}: {} problem(s)", l.layer, l.problems.len());
                    for p in &l.problems {
                        eprintln!("  - {p}");
                    }
                }
            }
            for p in &report.problems {
                eprintln!("  - {p}");
            }
        }
        return if report.ok {
            Ok(ExitCode::SUCCESS)
        } else {
            Err(Failure::reported(anyhow::anyhow!(
                "{what} does not match the lock"
            )))
        };
    }
    let hub_cache = args.hub_cache.resolve()?;
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    let report = verify(&lock, &hub_cache, threads).await;
    if ui.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    if !ui.quiet {
        for repo in &report.repos {
            if repo.problems.is_empty() {
                ui.status(
                    "Verified",
                    format!("{} {} ({} files)", repo.kind, repo.id, repo.files),
                );
            } else {
                eprintln!(
                    "{} {}: {} problem(s)",
                    repo.kind,
                    repo.id,
                    repo.problems.len()
                );
                for p in &repo.problems {
                    eprintln!("  - {p}");
                }
            }
        }
    }
    if report.ok {
        Ok(ExitCode::SUCCESS)
    } else {
        let n: usize = report.repos.iter().map(|r| r.problems.len()).sum();
        Err(Failure::reported(anyhow::anyhow!(
            "{} does not match the lock: {n} problem(s); run `modelbake export` to repair it",
            display_path(&hub_cache)
        )))
    }
}
