//! `modelbake fetch`: arguments, progress and output.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Mutex;
use std::time::Instant;

use clap::Args;
use indicatif::ProgressBar;

use super::args::{CacheArgs, StoreArgs};
use super::{Cli, Failure, load_locked};
use crate::env::process_env;
use crate::fetch::{self, BlobJob, BlobOutcome, FetchOptions, FetchProgress, MirrorPlan};
use crate::hub::{HubClient, HubConfig};
use crate::ui::{Ui, byte_bar, display_path, human_size, line_above};

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
    /// Never use the Xet CAS: download Xet-stored files through the Hub's plain HTTP path
    /// (also HF_HUB_DISABLE_XET=1, as for huggingface_hub). By default files the lock records
    /// with a Xet hash are fetched from the CAS as xorb ranges, decoded and sha256-checked,
    /// and chunks the store already holds (an earlier revision, another repo) are copied
    /// instead of downloaded; any Xet failure falls back to plain HTTP with a warning.
    #[arg(long)]
    pub no_xet: bool,
    #[command(flatten)]
    pub cache: CacheArgs,
    /// Allow a plain-http cache registry (local test registries only).
    #[arg(long)]
    pub insecure: bool,
    #[command(flatten)]
    pub store: StoreArgs,
}

/// Progress on a terminal: one byte bar; elsewhere one line per blob obtained.
struct Progress<'a> {
    ui: &'a Ui,
    bar: Mutex<Option<ProgressBar>>,
}

impl FetchProgress for Progress<'_> {
    fn start(&self, blobs: usize, bytes: u64) {
        if blobs == 0 {
            return;
        }
        if let Ok(mut b) = self.bar.lock() {
            *b = byte_bar(self.ui, bytes);
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
        line_above(
            self.ui,
            self.bar.lock().ok().and_then(|b| b.clone()).as_ref(),
            &line,
        );
    }
}

/// Runs `modelbake fetch`.
pub async fn run(cli: &Cli, args: &FetchArgs, ui: &Ui) -> Result<ExitCode, Failure> {
    let started = Instant::now();
    let (manifest, lock) = load_locked(cli, ui)?;
    // Shared with the cache repository's layer plans (`--cache`), which keep indices into it.
    let lock = std::sync::Arc::new(lock);
    let store = args.store.open()?;
    let store = if args.no_fsync {
        store.with_durability(false)
    } else {
        store
    };
    let client = HubClient::new(HubConfig::from_env(args.endpoint.as_deref())?)?;
    let mirrors =
        MirrorPlan::for_fetch(&manifest, &lock, &store, args.offline, &process_env).await?;
    for r in &mirrors.rejected {
        if !ui.quiet {
            eprintln!("warning: {r}");
        }
    }
    let tuned = FetchOptions::tuned(&process_env);
    let opts = FetchOptions {
        jobs: usize::from(args.jobs),
        offline: args.offline,
        reuse: fetch::reuse_caches(&args.reuse, &process_env),
        mirrors,
        xet: tuned.xet && !args.no_xet,
        ..tuned
    };
    let from_cache = match args.cache.resolve(&manifest).filter(|_| !args.offline) {
        Some(reference) => {
            let trust = args
                .cache
                .cache_trust_key
                .as_deref()
                .map(crate::bake::cache_repo::signing::RecordTrust::from_file)
                .transpose()?;
            Some(
                fill_from_cache(
                    &reference,
                    args.insecure,
                    trust,
                    &manifest,
                    &lock,
                    &store,
                    ui,
                )
                .await?,
            )
        }
        None => None,
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
    if !ui.quiet {
        for note in &report.xet_fallbacks {
            eprintln!("warning: {note}");
        }
    }
    let secs = started.elapsed().as_secs_f64();
    if ui.json {
        let mut v = serde_json::to_value(&report)?;
        v["ok"] = true.into();
        v["store"] = display_path(store.root()).into();
        v["seconds"] = serde_json::json!((secs * 1000.0).round() / 1000.0);
        if let Some(c) = &from_cache {
            v["cache"] = serde_json::to_value(c)?;
        }
        println!("{}", serde_json::to_string_pretty(&v)?);
    }
    ui.status(
        "Finished",
        format!(
            "{} blobs ({}) present in {}: {}{} downloaded ({}, {}/s{}), {} imported, {} already there, in {secs:.2}s",
            report.blobs,
            human_size(report.bytes),
            display_path(store.root()),
            from_cache.as_ref().map_or(String::new(), |c| format!(
                "{} from the cache repository ({}), ",
                c.served.len(),
                human_size(c.bytes)
            )),
            report.downloaded,
            human_size(report.downloaded_bytes),
            human_size((report.downloaded_bytes as f64 / secs.max(1e-3)) as u64),
            if report.from_mirrors > 0 || !report.mirror_failures.is_empty() {
                format!(
                    "; {} from mirrors, {} mirror failure(s)",
                    report.from_mirrors,
                    report.mirror_failures.len()
                )
            } else if report.from_xet > 0 || !report.xet_fallbacks.is_empty() {
                format!(
                    "; {} through Xet ({} copied from chunks already in the store), {} Xet fallback(s)",
                    report.from_xet,
                    human_size(report.xet_reused_bytes),
                    report.xet_fallbacks.len()
                )
            } else {
                String::new()
            },
            report.imported,
            (report.present + report.fetched_by_another)
                .saturating_sub(from_cache.as_ref().map_or(0, |c| c.served.len())),
        ),
    );
    Ok(ExitCode::SUCCESS)
}

/// `--cache`: unpacks the layers recorded in the cache repository into the store before the
/// Hub is asked for anything; never fails the fetch (the Hub takes what the cache did not give).
async fn fill_from_cache(
    reference: &str,
    insecure: bool,
    trust: Option<crate::bake::cache_repo::signing::RecordTrust>,
    manifest: &crate::manifest::Manifest,
    lock: &std::sync::Arc<crate::lock::Lockfile>,
    store: &crate::store::Store,
    ui: &Ui,
) -> anyhow::Result<crate::bake::cache_repo::fill::FillReport> {
    use crate::bake::cache_repo::{CacheRepo, fill};
    let cache = CacheRepo::open(reference, insecure)?.with_keys(None, trust);
    let mtime = crate::bake::mtime_from_env(&process_env)?;
    let format = crate::bake::plan::LayerFormat::new(&manifest.bake, mtime);
    let on_file = |s: &fill::Served| {
        ui.status(
            "Cached",
            format!("{} file `{}` ({})", s.repo, s.path, human_size(s.size)),
        );
    };
    let report = fill::fill(&cache, lock, store, &manifest.bake, format, &on_file).await;
    for w in &report.warnings {
        if !ui.quiet {
            eprintln!("warning: {w}");
        }
    }
    Ok(report)
}
