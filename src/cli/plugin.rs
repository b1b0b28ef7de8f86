//! `modelbake plugin new|build|check`: writing, building and inspecting plugins.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};

use super::{Cli, Failure};
use crate::plugin::PluginHost;
use crate::plugin::author::{self, DEFAULT_TARGET};
use crate::ui::{Ui, display_path, human_size};

/// The `plugin` subcommands.
#[derive(Debug, Subcommand)]
pub enum PluginCommand {
    /// Create a plugin crate that builds with `modelbake plugin build`.
    ///
    /// Writes NAME/Cargo.toml, NAME/src/lib.rs (a working plugin of the chosen kind that you
    /// edit), NAME/wit/plugin.wit (the interface, for reference) and, under
    /// NAME/vendor/modelbake-plugin-sdk, the plugin SDK of this modelbake version with the
    /// Cargo.lock it is tested with: the crate builds anywhere with cargo and crates.io.
    ///
    /// Examples:
    ///   modelbake plugin new corp-mirror --kind mirror
    ///   modelbake plugin new keep-small --kind policy --dir plugins
    #[command(verbatim_doc_comment)]
    New(NewArgs),
    /// Build plugin crates for wasm and turn them into components (no extra tools needed).
    ///
    /// Runs `cargo build --target wasm32-unknown-unknown --release` for the crate at PATH (or
    /// every plugin crate of the workspace at PATH), then converts each core module into a
    /// component in-process and prints its path and sha256. Needs the wasm target once:
    /// `rustup target add wasm32-unknown-unknown`.
    ///
    /// Examples:
    ///   modelbake plugin build plugins/corp-mirror
    ///   modelbake plugin build plugins --out plugins/dist     # every plugin crate
    #[command(verbatim_doc_comment)]
    Build(BuildArgs),
    /// Show what a plugin component is: its kinds, imports, exports and self-description.
    ///
    /// Loads FILE exactly as `lock` and `fetch` would (same sandbox and import rules), so a
    /// plugin that passes here loads there. Exit 1 when it cannot be hosted, with why.
    #[command(verbatim_doc_comment)]
    Check(CheckArgs),
}

/// Arguments of `plugin new`.
#[derive(Debug, Args)]
pub struct NewArgs {
    /// Crate name (lowercase letters, digits and `-`).
    pub name: String,
    /// What the plugin does: mirror, policy or pruner.
    #[arg(long, value_parser = author::parse_kind)]
    pub kind: crate::plugin::PluginKind,
    /// Folder to create the crate in.
    #[arg(long, default_value = ".")]
    pub dir: PathBuf,
    /// Depend on this guest SDK crate (`plugins/sdk` of a modelbake checkout, for SDK
    /// development) instead of writing the SDK bundled in this binary under
    /// NAME/vendor/modelbake-plugin-sdk.
    #[arg(long, value_name = "DIR")]
    pub sdk: Option<PathBuf>,
}

/// Arguments of `plugin build`.
#[derive(Debug, Args)]
pub struct BuildArgs {
    /// A plugin crate, or a workspace of them.
    #[arg(default_value = ".")]
    pub path: PathBuf,
    /// Build only these packages of the workspace; repeatable.
    #[arg(long, short = 'p', value_name = "NAME")]
    pub package: Vec<String>,
    /// Where to write the components [default: <target dir>/modelbake-plugins].
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// The wasm target; wasm32-wasip2 works too, but its components import WASI interfaces,
    /// which modelbake only links as traps.
    #[arg(long, default_value = DEFAULT_TARGET)]
    pub target: String,
    /// Build in debug mode (bigger, slower plugins; faster builds).
    #[arg(long)]
    pub debug: bool,
    /// Do not load the built components to check them (for test fixtures that are meant to
    /// be refused).
    #[arg(long)]
    pub no_check: bool,
}

/// Arguments of `plugin check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The component (`.wasm`).
    pub file: PathBuf,
}

/// Runs a `plugin` subcommand.
pub async fn run(_cli: &Cli, cmd: &PluginCommand, ui: &Ui) -> Result<ExitCode, Failure> {
    match cmd {
        PluginCommand::New(args) => {
            let dir = author::scaffold(&args.dir, &args.name, args.kind, args.sdk.as_deref())?;
            if ui.json {
                println!(
                    "{}",
                    serde_json::json!({"ok": true, "crate": display_path(&dir), "kind": args.kind})
                );
            }
            ui.status(
                "Created",
                format!(
                    "{} plugin crate {}; build it with `modelbake plugin build {}`",
                    args.kind,
                    display_path(&dir),
                    display_path(&dir)
                ),
            );
            Ok(ExitCode::SUCCESS)
        }
        PluginCommand::Build(args) => {
            let (path, target, release, packages, out) = (
                args.path.clone(),
                args.target.clone(),
                !args.debug,
                args.package.clone(),
                args.out.clone(),
            );
            let built = tokio::task::spawn_blocking(move || {
                author::build(&path, &target, release, &packages, out.as_deref())
            })
            .await??;
            // Load each one as lock/fetch would, so a broken plugin fails here.
            let host = PluginHost::new(None)?;
            let mut rows = Vec::new();
            for b in &built {
                let kinds: Vec<String> = if args.no_check {
                    Vec::new()
                } else {
                    let bytes = std::fs::read(&b.path)?;
                    let plugin = host.load(&b.package, &bytes, &b.sha256)?;
                    plugin.kinds().iter().map(|k| k.to_string()).collect()
                };
                ui.status(
                    "Built",
                    format!(
                        "{} ({}, {}) sha256 {}",
                        display_path(&b.path),
                        if kinds.is_empty() {
                            "not checked".to_owned()
                        } else {
                            kinds.join("/")
                        },
                        human_size(b.size),
                        b.sha256
                    ),
                );
                rows.push(serde_json::json!({
                    "package": b.package, "path": display_path(&b.path),
                    "sha256": b.sha256, "size": b.size, "kinds": kinds,
                }));
            }
            if ui.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(
                        &serde_json::json!({"ok": true, "plugins": rows})
                    )?
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        PluginCommand::Check(args) => {
            let bytes = std::fs::read(&args.file)
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", display_path(&args.file)))?;
            let sha256 = crate::hash::sha256_hex(&bytes);
            let name = args
                .file
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "plugin".into());
            let host = PluginHost::new(None)?;
            let plugin = host.load(&name, &bytes, &sha256)?;
            let info = plugin.describe()?;
            let kinds: Vec<String> = plugin.kinds().iter().map(|k| k.to_string()).collect();
            let version = crate::plugin::WIT_PACKAGE
                .rsplit_once('@')
                .map_or("", |(_, v)| v);
            let worlds: Vec<String> = kinds
                .iter()
                .map(|k| format!("modelbake:plugin/{k}-plugin@{version}"))
                .collect();
            if ui.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&serde_json::json!({
                        "ok": true, "file": display_path(&args.file), "sha256": sha256,
                        "size": bytes.len(), "kinds": kinds, "worlds": worlds,
                        "imports": plugin.imports(),
                        "exports": plugin.exports(), "info": info,
                        "interface": crate::plugin::WIT_PACKAGE,
                    }))?
                );
            } else if !ui.quiet {
                println!("{}", display_path(&args.file));
                println!("  plugin    {} {}", info.name, info.version);
                println!("  kinds     {}", kinds.join(", "));
                println!("  world     {}", worlds.join(", "));
                println!("  sha256    {sha256}");
                println!("  size      {}", human_size(bytes.len() as u64));
                println!("  imports   {}", list(&plugin.imports()));
                println!("  exports   {}", list(&plugin.exports()));
                println!("  about     {}", info.description);
                if !info.config_help.trim().is_empty() {
                    println!("  config");
                    for line in info.config_help.lines() {
                        println!("    {line}");
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn list(items: &[String]) -> String {
    if items.is_empty() {
        "(none)".into()
    } else {
        items.join(", ")
    }
}
