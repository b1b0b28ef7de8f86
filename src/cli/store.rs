//! `modelbake store gc`: arguments and output.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};

use super::args::StoreArgs;
use super::{Cli, Failure, left_alone, read_locks};
use crate::lock::Lockfile;
use crate::ui::{Ui, display_path, human_size};

/// `modelbake store …`.
#[derive(Debug, Subcommand)]
pub enum StoreCommand {
    /// Delete store blobs, partial downloads and cached layers that none of the --keep locks
    /// needs (dry run unless --yes). With --yes it first waits (--wait) until no other
    /// modelbake command has the store open, and commands started meanwhile wait for it, so
    /// nothing a running fetch, export, bake or serve uses disappears under it.
    Gc(GcArgs),
}

/// Arguments of `store gc`.
#[derive(Debug, Args)]
pub struct GcArgs {
    /// Keep every blob this lock references; repeatable (at least one).
    #[arg(long, value_name = "FILE", required = true)]
    pub keep: Vec<PathBuf>,
    /// Really delete (default: only show what would go).
    #[arg(long)]
    pub yes: bool,
    /// With --yes: seconds to wait for other commands using the store to finish before giving
    /// up (nothing is removed then).
    #[arg(long, value_name = "SECONDS", default_value_t = 60)]
    pub wait: u64,
    #[command(flatten)]
    pub store: StoreArgs,
}

/// Runs `store gc`.
pub async fn run(_cli: &Cli, args: &GcArgs, ui: &Ui) -> Result<ExitCode, Failure> {
    let store = args.store.open()?;
    let locks: Vec<Lockfile> = read_locks(&args.keep)?
        .into_iter()
        .map(|(_, l)| l)
        .collect();
    let (apply, wait) = (args.yes, std::time::Duration::from_secs(args.wait));
    let s = store.clone();
    let report = tokio::task::spawn_blocking(move || {
        crate::bake::layer_cache::collect_store(&s, &locks, apply, wait)
    })
    .await??;
    if ui.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    ui.status(
        if apply { "Collected" } else { "Would collect" },
        format!(
            "{} blob(s), {} partial download(s), {} cached layer(s): {} in {}{}{}",
            report.blobs.len(),
            report.partials.len(),
            report.layers.len(),
            human_size(report.freed),
            display_path(store.root()),
            if report.busy > 0 {
                format!("; {} in use by another process, left alone", report.busy)
            } else {
                String::new()
            },
            if apply {
                ""
            } else {
                " — run again with --yes to apply"
            }
        ),
    );
    left_alone(
        ui,
        &report.skipped,
        "",
        "replace each with a real folder (moving the blobs it should hold into it), then run `modelbake store gc` again",
    )
}
