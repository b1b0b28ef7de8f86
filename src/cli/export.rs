//! `modelbake export`: arguments and output.

use std::process::ExitCode;

use clap::Args;

use super::args::{HubCacheArgs, StoreArgs};
use super::{Cli, Failure, load_locked};
use crate::hfcache::export::{LinkMode, export};
use crate::ui::{Ui, display_path};

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

/// Runs `modelbake export`.
pub async fn run(cli: &Cli, args: &ExportArgs, ui: &Ui) -> Result<ExitCode, Failure> {
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
