//! `modelbake cache scan|prune`: arguments and output.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};

use super::args::{HubCacheArgs, StoreArgs};
use super::{Cli, Failure, left_alone, read_locks};
use crate::hfcache::prune::{Criteria, PruneRequest, parse_duration, parse_size, prune};
use crate::hfcache::scan::scan;
use crate::manifest::Pattern;
use crate::ui::{Ui, display_path, human_size};

/// `modelbake cache …`.
#[derive(Debug, Subcommand)]
pub enum CacheCommand {
    /// Show what a huggingface_hub cache holds (like `hf cache scan`), and which revisions
    /// given locks still reference.
    Scan(ScanArgs),
    /// Remove revisions from a huggingface_hub cache (dry run unless --yes).
    ///
    /// Choose with --keep-locked (everything the given locks do not reference goes),
    /// --pattern, --older-than and/or --max-size. Revisions a --keep-locked lock references are
    /// never removed; blobs still linked by a kept revision stay; refs of removed revisions go
    /// first, so no ref or symlink is left dangling and kept repos keep loading meanwhile.
    ///
    /// Examples:
    ///   modelbake cache prune --keep-locked models.lock --keep-locked ../other/models.lock
    ///   modelbake cache prune --max-size 200GB --yes
    ///   modelbake cache prune --pattern 'model/acme/*' --older-than 30d --yes
    #[command(verbatim_doc_comment)]
    Prune(PruneArgs),
}

/// Arguments of `cache scan`.
#[derive(Debug, Args)]
pub struct ScanArgs {
    #[command(flatten)]
    pub hub_cache: HubCacheArgs,
    /// Mark revisions this lock references; repeatable.
    #[arg(long, value_name = "FILE")]
    pub lock: Vec<PathBuf>,
}

/// Arguments of `cache prune`.
#[derive(Debug, Args)]
pub struct PruneArgs {
    #[command(flatten)]
    pub hub_cache: HubCacheArgs,
    /// Keep what this lock references and remove every other revision; repeatable.
    #[arg(long, value_name = "FILE")]
    pub keep_locked: Vec<PathBuf>,
    /// Remove revisions of repos whose `kind/id` matches (e.g. `model/acme/*`); repeatable.
    #[arg(long, value_name = "GLOB", value_parser = |s: &str| Pattern::parse(s))]
    pub pattern: Vec<Pattern>,
    /// Remove revisions not accessed for this long (30d, 12h, 2w).
    #[arg(long, value_name = "AGE", value_parser = |s: &str| parse_duration(s))]
    pub older_than: Option<u64>,
    /// Then remove least recently used revisions until the cache fits (50GB, 500MB, 2GiB).
    #[arg(long, value_name = "SIZE", value_parser = |s: &str| parse_size(s))]
    pub max_size: Option<u64>,
    /// Ask this pruner plugin (a `[plugins.NAME]` of models.toml, with its config) what to
    /// remove; it sees every revision with sizes, last access and whether a lock needs it.
    #[arg(long, value_name = "NAME")]
    pub policy: Option<String>,
    /// With --policy: revisions this lock references are never removed (default: the
    /// project's models.lock, when there is one); repeatable.
    #[arg(long, value_name = "FILE", requires = "policy")]
    pub lock: Vec<PathBuf>,
    /// With --policy: the time the plugin is told it is (unix seconds), to reproduce a plan.
    #[arg(long, value_name = "SECS", requires = "policy")]
    pub now: Option<u64>,
    #[command(flatten)]
    pub store: StoreArgs,
    /// Really delete (default: only show what would go).
    #[arg(long)]
    pub yes: bool,
}

fn ago(now: u64, t: u64) -> String {
    let d = now.saturating_sub(t);
    match d {
        0..60 => "just now".into(),
        60..3600 => format!("{} min ago", d / 60),
        3600..86_400 => format!("{} h ago", d / 3600),
        _ => format!("{} days ago", d / 86_400),
    }
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Runs `cache scan`.
pub async fn run_scan(_cli: &Cli, args: &ScanArgs, ui: &Ui) -> Result<ExitCode, Failure> {
    let cache = args.hub_cache.resolve()?;
    let locks = read_locks(&args.lock)?;
    let result = scan(&cache, &locks).map_err(|e| anyhow::anyhow!("{}: {e}", cache.display()))?;
    if ui.json {
        println!("{}", serde_json::to_string_pretty(&result)?);
        return Ok(ExitCode::SUCCESS);
    }
    let now = now();
    println!(
        "{:<45} {:<8} {:>9} {:>6} {:>6}  {:<14} {:<10} {}",
        "REPO ID",
        "TYPE",
        "SIZE",
        "FILES",
        "REVS",
        "LAST ACCESSED",
        "REFS",
        if locks.is_empty() { "" } else { "LOCKED" }
    );
    for r in &result.repos {
        let refs: Vec<&str> = r
            .revisions
            .iter()
            .flat_map(|v| v.refs.iter().map(String::as_str))
            .collect();
        let locked = r
            .revisions
            .iter()
            .filter(|v| !v.locked_by.is_empty())
            .count();
        println!(
            "{:<45} {:<8} {:>9} {:>6} {:>6}  {:<14} {:<10} {}",
            r.id,
            r.kind,
            human_size(r.size_on_disk),
            r.nb_files,
            r.revisions.len(),
            ago(now, r.last_accessed),
            refs.join(","),
            if locks.is_empty() {
                String::new()
            } else {
                format!("{locked}/{}", r.revisions.len())
            }
        );
    }
    let revisions: usize = result.repos.iter().map(|r| r.revisions.len()).sum();
    eprintln!(
        "Found {} repo(s), {revisions} revision(s), {} on disk in {}.",
        result.repos.len(),
        human_size(result.size_on_disk),
        display_path(&cache)
    );
    for w in &result.warnings {
        eprintln!("warning: {w}");
    }
    if !result.incomplete.is_empty() {
        eprintln!(
            "{} incomplete download(s) left in blobs/ folders.",
            result.incomplete.len()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs `cache prune`.
pub async fn run_prune(cli: &Cli, args: &PruneArgs, ui: &Ui) -> Result<ExitCode, Failure> {
    if args.keep_locked.is_empty()
        && args.pattern.is_empty()
        && args.older_than.is_none()
        && args.max_size.is_none()
        && args.policy.is_none()
    {
        return Err(anyhow::anyhow!("say what to remove: --keep-locked FILE, --pattern GLOB, --older-than AGE, --max-size SIZE and/or --policy PLUGIN").into());
    }
    let cache = args.hub_cache.resolve()?;
    let manifest = match &args.policy {
        Some(_) => Some(super::load_manifest(cli)?),
        None => None,
    };
    // With --policy, the project's own lock protects its revisions unless --lock names others.
    let protect = match &manifest {
        Some(m) if args.lock.is_empty() => read_locks(
            &Some(m.lock_path())
                .filter(|p| p.is_file())
                .into_iter()
                .collect::<Vec<_>>(),
        )?,
        Some(_) => read_locks(&args.lock)?,
        None => Vec::new(),
    };
    let outcome = prune(PruneRequest {
        cache: &cache,
        keep_locked: read_locks(&args.keep_locked)?,
        protect,
        criteria: Criteria {
            patterns: args.pattern.clone(),
            keep_locked: false,
            protect_locked: false,
            decided: Default::default(),
            older_than: args.older_than,
            max_size: args.max_size,
            now: args.now.unwrap_or_else(now),
        },
        policy: manifest.as_ref().zip(args.policy.as_deref()),
        plugin_dir: args.store.plugin_dir(),
        apply: args.yes,
    })
    .await?;
    let (result, p, freed) = (outcome.scan, outcome.plan, outcome.freed);
    if ui.json {
        let mut v = serde_json::to_value(&p)?;
        v["applied"] = args.yes.into();
        v["freed_actual"] = freed.into();
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else if !ui.quiet {
        println!("{:<45} {:<12} {:<12} WHY", "REPO", "REVISION", "REFS");
        for r in &p.removals {
            println!(
                "{:<45} {:<12} {:<12} {}",
                r.repo,
                &r.commit[..r.commit.len().min(12)],
                r.refs.join(","),
                r.reason
            );
        }
    }
    let verb = if args.yes { "Removed" } else { "Would remove" };
    ui.status(
        verb,
        format!(
            "{} revision(s) ({} whole repo(s)), freeing {}; {} left{}",
            p.removals.len(),
            p.whole_repos.len(),
            human_size(if args.yes { freed } else { p.freed }),
            human_size(p.size_after),
            if args.yes {
                ""
            } else {
                " — run again with --yes to apply"
            }
        ),
    );
    left_alone(
        ui,
        &result.symlinked,
        "the repo(s) holding ",
        "replace each with a real folder (or delete the link), then prune again",
    )
}
