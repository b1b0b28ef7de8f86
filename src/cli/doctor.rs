//! `modelbake doctor`: arguments and output.

use std::process::ExitCode;

use clap::{ArgGroup, Args};

use super::{Cli, Failure, load_locked};
use crate::bake::detect_layout::LayoutFrom;
use crate::doctor::{Arrangement, DoctorReport, ImageAt, RepoState, diagnose_host, diagnose_image};
use crate::env::process_env;
use crate::manifest::bake_table::{ModelArrangement, parse_models_dir};
use crate::oci::OciError;
use crate::oci::reference::ImageRef;
use crate::oci::registry::Registry;
use crate::oci::source::{LayoutSource, RegistrySource};

/// Arguments of `modelbake doctor`.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("image_target").args(["oci", "image"])))]
pub struct DoctorArgs {
    /// Examine the image in this OCI layout (its Env and User) instead of this machine.
    #[arg(long, value_name = "DIR[:TAG]")]
    pub oci: Option<String>,
    /// Examine an image in a registry (REGISTRY/REPO[:TAG|@DIGEST]) instead of this machine:
    /// its manifest, config and layers are read as streams, nothing is pulled into the store
    /// or written to disk. Credentials as for `bake --push`.
    #[arg(long, value_name = "REF", conflicts_with = "oci")]
    pub image: Option<String>,
    /// Allow plain http for --image (test registries on 127.0.0.1).
    #[arg(long, requires = "image")]
    pub insecure: bool,
    /// Platform of a multi-arch image, os/arch[/variant] [default: bake.platform].
    #[arg(long, value_name = "PLATFORM", requires = "image_target")]
    pub platform: Option<String>,
    /// How the models are laid out in the image: hf-cache or files. Without it the image's
    /// layers tell (a locked repo's cache folder, models--org--name, or its files under a
    /// models folder), else bake.layout.
    #[arg(long, value_name = "hf-cache|files", requires = "image_target")]
    pub layout: Option<ModelArrangement>,
    /// Models folder of the files layout [default: the one the layers show, else
    /// bake.models_dir, else /models].
    #[arg(long, value_name = "PATH", value_parser = parse_models_dir, requires = "image_target")]
    pub models_dir: Option<String>,
    /// Files layout with one repo's files directly in the models folder [default: as the layers
    /// show, else bake.flat].
    #[arg(long, requires = "image_target")]
    pub flat: bool,
}

/// Runs `modelbake doctor`.
pub async fn run(cli: &Cli, args: &DoctorArgs, ui: &crate::ui::Ui) -> Result<ExitCode, Failure> {
    let (manifest, lock) = load_locked(cli, ui)?;
    let at = match (&args.oci, &args.image) {
        (Some(spec), _) => Some(ImageAt::Layout(LayoutSource::parse(spec))),
        (None, Some(reference)) => Some(ImageAt::Registry(Box::new(registry_source(
            reference,
            args.insecure,
        )?))),
        (None, None) => None,
    };
    let report = match at {
        Some(at) => {
            let platform = args
                .platform
                .clone()
                // `[bake] platform` may list several (an index): look at the first.
                .unwrap_or_else(|| {
                    let list = &manifest.bake.platform;
                    list.split(',').next().unwrap_or(list).trim().to_owned()
                });
            let ask = Arrangement {
                flag: args.layout,
                manifest: manifest.bake.layout,
                models_dir_flag: args.models_dir.clone(),
                models_dir: manifest.bake.models_dir.clone(),
                flat: args.flat || manifest.bake.flat,
            };
            diagnose_image(&at, &platform, &std::sync::Arc::new(lock), &ask).await?
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

/// The registry image `reference` names; plain http only with `insecure`.
fn registry_source(reference: &str, insecure: bool) -> Result<RegistrySource, OciError> {
    let image = ImageRef::parse(reference).map_err(|e| OciError::Invalid {
        what: format!("the image reference `{reference}`"),
        detail: e.to_string(),
    })?;
    let registry = Registry::new(&image, insecure)?;
    Ok(RegistrySource { registry, image })
}

/// The report as a table (loader, cache, counts, readable; or per folder for the files
/// layout) and the details of what is wrong.
fn table(r: &DoctorReport) -> String {
    let mut out = format!("{} (read access as {})\n", r.target, r.user);
    if let Some(a) = &r.arrangement {
        let how = match (&a.layout_from, &a.evidence) {
            (LayoutFrom::Detected, Some(e)) => format!("detected from {}", crate::ui::clean(e)),
            (LayoutFrom::Detected, None) => "detected".to_owned(),
            (LayoutFrom::Flag, _) => "--layout".to_owned(),
            (LayoutFrom::Manifest, _) => {
                "bake.layout: the layers show no locked repo either way".to_owned()
            }
        };
        let name = match a.layout {
            ModelArrangement::HfCache => "hf-cache",
            ModelArrangement::Files => "files",
        };
        out.push_str(&format!("layout: {name} ({how})\n"));
    }
    if r.arrangement.as_ref().map(|a| a.layout) == Some(ModelArrangement::Files) {
        out.push_str(&folders(r));
    } else {
        out.push_str(&loaders(r));
    }
    for note in &r.notes {
        out.push_str(&format!("note: {}\n", crate::ui::clean(note)));
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

/// `rows` under `head`, each column as wide as its widest cell.
fn columns<const N: usize>(head: [&str; N], rows: &[[String; N]]) -> String {
    let head = head.map(String::from);
    let widths: Vec<usize> = (0..N)
        .map(|i| {
            std::iter::once(&head)
                .chain(rows)
                .map(|row| row[i].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in std::iter::once(&head).chain(rows) {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// The files layout: one row per repo, its folder and how it fares.
fn folders(r: &DoctorReport) -> String {
    let rows: Vec<[String; 3]> = r
        .folders
        .iter()
        .map(|f| {
            let state = match &f.state {
                RepoState::Present => "present".to_owned(),
                RepoState::Missing { path } => format!("missing {}", crate::ui::clean(path)),
                RepoState::Stale { path, .. } => format!("stale {}", crate::ui::clean(path)),
                RepoState::Unreadable { path } => {
                    format!("unreadable {}", crate::ui::clean(path))
                }
            };
            [f.repo.clone(), crate::ui::clean(&f.folder), state]
        })
        .collect();
    columns(["REPO", "FOLDER", "STATE"], &rows)
}

/// The hf-cache layout: one row per loader, then the details of what is wrong.
fn loaders(r: &DoctorReport) -> String {
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
    let mut out = columns(
        ["LOADER", "CACHE", "PRESENT", "MISSING", "STALE", "READABLE"],
        &rows,
    );
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
    out
}
