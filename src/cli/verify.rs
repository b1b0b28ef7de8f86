//! `modelbake verify`: arguments and output, for a huggingface_hub cache, an OCI image or a
//! layer.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use super::args::{HubCacheArgs, LayoutArgs};
use super::{Cli, Failure, load_locked};
use crate::hfcache::verify::verify;
use crate::manifest::bake_table::BakeOverrides;
use crate::ui::{Ui, display_path};

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
    /// The image was baked with --no-offline-env: do not require HF_HUB_OFFLINE=1 in --oci.
    #[arg(long, requires = "oci")]
    pub no_offline_env: bool,
    /// Check one layer tarball (plain, gzip or zstd) instead of a cache.
    #[arg(long, value_name = "FILE", conflicts_with = "hub_cache")]
    pub layer: Option<PathBuf>,
    #[command(flatten)]
    pub layout: LayoutArgs,
}

/// Runs `modelbake verify`.
pub async fn run(cli: &Cli, args: &VerifyArgs, ui: &Ui) -> Result<ExitCode, Failure> {
    let (manifest, lock) = load_locked(cli, ui)?;
    if args.oci.is_some() || args.layer.is_some() {
        let settings = manifest.bake.clone().with(&BakeOverrides {
            no_offline_env: args.no_offline_env,
            ..args.layout.overrides()
        });
        let (what, report) = match (&args.oci, &args.layer) {
            (Some(dir), _) => {
                let (dir2, tag) = (dir.clone(), args.tag.clone());
                let r = tokio::task::spawn_blocking(move || {
                    crate::bake::verify_image::verify_layout(&dir2, &tag, &lock, &settings)
                })
                .await??;
                (format!("{}:{}", display_path(dir), args.tag), r)
            }
            (None, Some(file)) => {
                let f = file.clone();
                let r = tokio::task::spawn_blocking(move || {
                    crate::bake::verify_image::verify_layer(&f, &lock, &settings)
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
