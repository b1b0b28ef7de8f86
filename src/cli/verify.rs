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
    /// The image was baked with --no-offline-env: do not require HF_HUB_OFFLINE=1 in the image.
    #[arg(long)]
    pub no_offline_env: bool,
    /// Check one layer tarball (plain, gzip or zstd) instead of a cache.
    #[arg(long, value_name = "FILE", conflicts_with = "hub_cache")]
    pub layer: Option<PathBuf>,
    /// Check an image in a registry (REGISTRY/REPO[:TAG|@DIGEST]) or a layout (oci:DIR[:TAG])
    /// in place, storing nothing: its manifest (or index and each manifest) and config, every
    /// model layer streamed and checked entry by entry; base layers are not downloaded. Exit 4
    /// when the content differs from the lock.
    #[arg(long, value_name = "REF", conflicts_with_all = ["oci", "layer", "hub_cache"])]
    pub image: Option<String>,
    /// With --image: also require the attestations bake attaches (SBOM, provenance naming this
    /// models.lock, a model signature per repo), signed by this ECDSA P-256 public key (PEM).
    /// Exit 5 when one is missing or invalid.
    #[arg(long, value_name = "PUB", requires = "image")]
    pub key: Option<PathBuf>,
    /// With --image --key: read no layer; trust the signed attestations for the content (the
    /// manifest and config are still checked).
    #[arg(long, requires = "key")]
    pub attestations_only: bool,
    /// With --image: allow a plain-http registry (local test registries only).
    #[arg(long, requires = "image")]
    pub insecure: bool,
    #[command(flatten)]
    pub layout: LayoutArgs,
}

/// Runs `modelbake verify`.
pub async fn run(cli: &Cli, args: &VerifyArgs, ui: &Ui) -> Result<ExitCode, Failure> {
    let (manifest, lock) = load_locked(cli, ui)?;
    // Shared with the checking threads and the layer plans (which keep indices into it), never
    // copied: a 100,000-file lock weighs about 30 MB.
    let lock = std::sync::Arc::new(lock);
    let flags = BakeOverrides {
        no_offline_env: args.no_offline_env,
        ..args.layout.overrides()
    };
    if let Some(reference) = &args.image {
        let settings = manifest.bake.clone().with(&flags);
        let settings = detected(ui, reference, args.insecure, settings, &lock, &flags).await?;
        let check = super::verify_image::ImageCheck {
            reference,
            insecure: args.insecure,
            key: args.key.as_ref(),
            attestations_only: args.attestations_only,
            lock_path: manifest.lock_path(),
        };
        return super::verify_image::run(&check, lock, settings, ui).await;
    }
    if args.oci.is_some() || args.layer.is_some() {
        let mut settings = manifest.bake.clone().with(&flags);
        if let Some(dir) = &args.oci {
            let reference = format!("oci:{}:{}", dir.display(), args.tag);
            settings = detected(ui, &reference, false, settings, &lock, &flags).await?;
        }
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

/// `settings` with the arrangement the image's layers show when `--layout` was not given
/// ([`crate::bake::detect_layout`]: the first platform's layers, our layers first, read only
/// until their first entries decide); unchanged with `--layout` or when nothing shows.
async fn detected(
    ui: &Ui,
    reference: &str,
    insecure: bool,
    settings: crate::manifest::bake_table::BakeSettings,
    lock: &std::sync::Arc<crate::lock::Lockfile>,
    flags: &BakeOverrides,
) -> Result<crate::manifest::bake_table::BakeSettings, Failure> {
    use crate::bake::detect_layout;
    use crate::oci::source::{self, LayoutSource, RegistrySource};
    if flags.layout.is_some() {
        return Ok(settings);
    }
    let platform = crate::oci::Platform::parse_list(&settings.platform)
        .ok()
        .and_then(|p| p.into_iter().next())
        .ok_or_else(|| anyhow::anyhow!("--platform `{}` names no platform", settings.platform))?;
    // Best effort: a layer that cannot be read is the check's to report, as a problem of
    // that layer, not a reason to stop before it.
    let found: Result<_, Failure> = async {
        Ok(if let Some(rest) = reference.strip_prefix("oci:") {
            let src = LayoutSource::parse(rest);
            let image = source::read_image(&src, &platform).await?;
            let (dir, lock2, models_dir) =
                (src.dir.clone(), lock.clone(), settings.models_dir.clone());
            tokio::task::spawn_blocking(move || {
                detect_layout::detect_in_layout(&dir, &image.layers, &lock2, &models_dir)
            })
            .await??
        } else {
            let image = crate::oci::reference::ImageRef::parse(reference)?;
            let src = RegistrySource {
                registry: crate::oci::registry::Registry::new(&image, insecure)?,
                image,
            };
            let read = source::read_image(&src, &platform).await?;
            detect_layout::detect_in_registry(&src, &read.layers, lock, &settings.models_dir)
                .await?
        })
    }
    .await;
    Ok(match found.ok().flatten() {
        Some(d) => {
            if d.layout != settings.layout {
                ui.status(
                    "Detected",
                    format!(
                        "the {} layout in the image (from {}); pass --layout to choose",
                        match d.layout {
                            crate::manifest::bake_table::ModelArrangement::HfCache => "hf-cache",
                            crate::manifest::bake_table::ModelArrangement::Files => "files",
                        },
                        crate::ui::clean(&d.evidence)
                    ),
                );
            }
            detect_layout::apply(&settings, &d, flags)
        }
        None => settings,
    })
}
