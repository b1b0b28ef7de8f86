//! `modelbake doctor`: arguments and output.

use std::process::ExitCode;

use clap::Args;

use super::{Cli, Failure, load_locked};
use crate::doctor::{DoctorReport, RepoState, diagnose_host, diagnose_layout};
use crate::env::process_env;
use crate::oci::source::LayoutSource;

/// Arguments of `modelbake doctor`.
#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Examine the image in this OCI layout (its Env and User) instead of this machine.
    #[arg(long, value_name = "DIR[:TAG]")]
    pub oci: Option<String>,
    /// Platform of a multi-arch image, os/arch[/variant] [default: bake.platform].
    #[arg(long, value_name = "PLATFORM", requires = "oci")]
    pub platform: Option<String>,
}

/// Runs `modelbake doctor`.
pub async fn run(cli: &Cli, args: &DoctorArgs, ui: &crate::ui::Ui) -> Result<ExitCode, Failure> {
    let (manifest, lock) = load_locked(cli, ui)?;
    let report = match &args.oci {
        Some(spec) => {
            let src = LayoutSource::parse(spec);
            let platform = args
                .platform
                .clone()
                // `[bake] platform` may list several (an index): look at the first.
                .unwrap_or_else(|| {
                    let list = &manifest.bake.platform;
                    list.split(',').next().unwrap_or(list).trim().to_owned()
                });
            tokio::task::spawn_blocking(move || {
                diagnose_layout(&src.dir, src.tag.as_deref(), &platform, &lock)
            })
            .await??
        }
        None => diagnose_host(&lock, &process_env),
    };
    if ui.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", table(&report));
    }
    if report.ok {
        Ok(ExitCode::SUCCESS)
    } else {
        Err(Failure::reported(anyhow::anyhow!(
            "not every locked model would load offline from {}",
            report.target
        )))
    }
}

/// The report as a table (loader, cache, counts, readable) and the details of what is wrong.
fn table(r: &DoctorReport) -> String {
    let mut out = format!("{} (read access as {})\n", r.target, r.user);
    let rows: Vec<[String; 6]> = r
        .loaders
        .iter()
        .map(|l| {
            let count = |f: &dyn Fn(&RepoState) -> bool| {
                l.repos.iter().filter(|x| f(&x.state)).count().to_string()
            };
            [
                l.loader.to_string(),
                format!("{} (from {})", crate::ui::clean(&l.cache), l.variable),
                count(&|s| *s == RepoState::Present),
                count(&|s| matches!(s, RepoState::Missing { .. })),
                count(&|s| matches!(s, RepoState::Stale { .. })),
                if l.repos
                    .iter()
                    .any(|x| matches!(x.state, RepoState::Unreadable { .. }))
                {
                    "no".into()
                } else {
                    "yes".into()
                },
            ]
        })
        .collect();
    let head = ["LOADER", "CACHE", "PRESENT", "MISSING", "STALE", "READABLE"].map(String::from);
    let widths: Vec<usize> = (0..6)
        .map(|i| {
            std::iter::once(&head)
                .chain(&rows)
                .map(|row| row[i].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for row in std::iter::once(&head).chain(&rows) {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    for l in &r.loaders {
        for x in &l.repos {
            let what = match &x.state {
                RepoState::Present => continue,
                RepoState::Missing { path } => format!("missing {}", crate::ui::clean(path)),
                RepoState::Stale { path, points_to } => format!(
                    "stale: {} names {}",
                    crate::ui::clean(path),
                    crate::ui::clean(points_to)
                ),
                RepoState::Unreadable { path } => {
                    format!("unreadable: {}", crate::ui::clean(path))
                }
            };
            out.push_str(&format!(
                "  - {}: {}@{}: {what}\n",
                l.loader, x.repo, x.commit
            ));
        }
    }
    let shown = |k: &str| match r.offline_env.get(k).and_then(|v| v.as_deref()) {
        Some(v) => format!("{k}={}", crate::ui::clean(v)),
        None => format!("{k} unset"),
    };
    out.push_str(&format!(
        "offline: {} ({}, {})\n",
        if r.offline { "on" } else { "off" },
        shown("HF_HUB_OFFLINE"),
        shown("TRANSFORMERS_OFFLINE")
    ));
    out
}
