//! `modelbake lock`: arguments and output.

use std::process::ExitCode;
use std::time::Instant;

use clap::Args;

use super::{Cli, EXIT_OUT_OF_DATE, Failure, load_manifest};
use crate::hub::{HubClient, HubConfig};
use crate::lock::diff::short;
use crate::resolve::{self, LockEvent, LockMode, LockOptions, RepoAction, Verdict};
use crate::ui::{Ui, display_path, human_size};

/// Arguments of `modelbake lock`.
#[derive(Debug, Args)]
pub struct LockArgs {
    /// Fail (exit 3) instead of writing when models.lock is missing or would change; names
    /// each repo that differs and why. Needs no network unless --update is given.
    #[arg(long)]
    pub locked: bool,
    /// Re-resolve this repo (by id) even if its lock entry still matches, or download this URL
    /// plugin (by name) again and pin its current bytes; repeatable.
    #[arg(long, value_name = "ID")]
    pub update: Vec<String>,
    /// Hub endpoint; default $HF_ENDPOINT, else https://huggingface.co.
    #[arg(long, value_name = "URL")]
    pub endpoint: Option<String>,
    /// Never use the network: fail if any repo needs resolving.
    #[arg(long)]
    pub offline: bool,
    #[command(flatten)]
    pub store: super::args::StoreArgs,
    /// Repos resolved concurrently.
    #[arg(long, short = 'j', value_name = "N", default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..))]
    pub jobs: u16,
}

/// Runs `modelbake lock`.
pub async fn run(cli: &Cli, args: &LockArgs, ui: &Ui) -> Result<ExitCode, Failure> {
    let started = Instant::now();
    let manifest = load_manifest(cli)?;
    let client = HubClient::new(HubConfig::from_env(args.endpoint.as_deref())?)?;
    let opts = LockOptions {
        update: args.update.clone(),
        mode: if args.locked {
            LockMode::Locked
        } else {
            LockMode::Write
        },
        offline: args.offline,
        jobs: usize::from(args.jobs),
        plugin_dir: args.store.plugin_dir(),
    };
    let spinner = ui.spinner(format!("Resolving against {}", client.endpoint()));
    let on_event = |event: LockEvent<'_>| {
        let line = match event {
            LockEvent::Resolving(spec) => ui.status_line(
                "Resolving",
                format!("{} {}@{}", spec.kind, spec.id, spec.revision),
            ),
            LockEvent::Resolved(repo) => ui.status_line(
                "Locked",
                format!(
                    "{} {}@{} → {} ({} files, {})",
                    repo.kind,
                    repo.id,
                    repo.revision,
                    short(&repo.commit),
                    repo.files.len(),
                    human_size(repo.total_size())
                ),
            ),
            LockEvent::Dropped(spec, d) => ui.status_line(
                "Dropped",
                format!(
                    "{} {}: {} ({}: {})",
                    spec.kind, spec.id, d.path, d.plugin, d.reason
                ),
            ),
        };
        if !ui.quiet {
            spinner.suspend(|| eprintln!("{line}"));
        }
    };
    let result = resolve::lock(&manifest, &client, &opts, &on_event).await;
    spinner.finish_and_clear();
    let report = match result {
        Ok(r) => r,
        Err(e) if e.is_stale() => return Err(Failure::with_code(e, EXIT_OUT_OF_DATE)),
        Err(e) => return Err(e.into()),
    };

    if ui.json {
        let mut value = serde_json::to_value(&report)?;
        value["ok"] = serde_json::Value::Bool(true);
        println!("{}", serde_json::to_string_pretty(&value)?);
    }
    for change in &report.plugins {
        ui.status("Pinned", change);
    }
    for removed in &report.removed {
        ui.status("Removed", removed);
    }
    let files: usize = report.repos.iter().map(|r| r.files).sum();
    let bytes: u64 = report.repos.iter().map(|r| r.bytes).sum();
    let resolved = report
        .repos
        .iter()
        .filter(|r| r.action != RepoAction::Kept)
        .count();
    let lock_name = display_path(&report.lockfile);
    let verdict = match report.verdict {
        Verdict::UpToDate => format!("{lock_name} is up to date"),
        Verdict::Written => format!("{lock_name} written"),
        Verdict::Unchanged => format!("{lock_name} unchanged"),
    };
    ui.status(
        "Finished",
        format!(
            "{verdict}: {} ({resolved} resolved), {files} files, {} in {:.1}s",
            plural(report.repos.len(), "repo"),
            human_size(bytes),
            started.elapsed().as_secs_f64()
        ),
    );
    Ok(ExitCode::SUCCESS)
}

/// `1 repo`, `2 repos`.
fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("{n} {word}")
    } else {
        format!("{n} {word}s")
    }
}
