//! Argument parsing and output only; every decision lives in the library modules.

mod lock;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::manifest::Manifest;
use crate::ui::Ui;

/// Exit code for "the lock is out of date" under `--locked`, distinct from other failures so
/// CI can tell drift from breakage.
pub const EXIT_OUT_OF_DATE: u8 = 3;

const AFTER_HELP: &str = "\
Files:
  models.toml   what the project needs: [[model]], [[dataset]], [[space]] entries with
                `id`, optional `revision` (branch, tag, refs/pr/N or 40-hex commit) and
                `include`/`exclude` globs; [defaults] sets values for every entry.
                Without models.toml, [package.metadata.modelbake] or
                [workspace.metadata.modelbake] in Cargo.toml is read instead.
  models.lock   written beside the manifest by `modelbake lock`; commit it.

Environment:
  HF_ENDPOINT                 Hub URL (default https://huggingface.co)
  HF_TOKEN, HF_TOKEN_PATH     access token, else $HF_HOME/token; only ever sent to the
                              endpoint's own host
  MODELBAKE_HTTP_RETRIES      retries of transient HTTP failures (default 5)
  MODELBAKE_HTTP_BACKOFF_MS   first retry delay, doubled each time (default 500)
  MODELBAKE_LOG               log filter, e.g. `modelbake=debug`
  NO_COLOR                    no colours

Exit codes: 0 success, 1 error, 2 bad arguments, 3 lock out of date (--locked).";

/// Reproducible, verified, build-time Hugging Face model downloads.
///
/// `models.toml` says what a project needs; `modelbake lock` pins every file of every repo
/// (commit, path, size, sha256) in `models.lock`, which you commit and review like code.
#[derive(Debug, Parser)]
#[command(name = "modelbake", version, after_help = AFTER_HELP, propagate_version = true)]
pub struct Cli {
    /// Path to models.toml (or a Cargo.toml with [package.metadata.modelbake]); default: the
    /// nearest models.toml in this folder or a parent, then Cargo metadata.
    #[arg(long, global = true, value_name = "PATH")]
    pub manifest: Option<PathBuf>,
    /// Print a machine-readable JSON summary on stdout (errors too).
    #[arg(long, global = true)]
    pub json: bool,
    /// Print only errors.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    /// More detail on stderr (-v: progress details, -vv: every HTTP request).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Resolve models.toml against the Hub and write models.lock.
    ///
    /// Repos whose lock entry still matches models.toml are kept as locked (no network); new
    /// or edited entries are resolved: the revision to a commit (a 40-hex commit needs no
    /// call), the file list filtered by include/exclude, and the sha256 of every file (LFS:
    /// from the Hub's listing; regular files: downloaded and hashed). The lock is written
    /// atomically and only when its bytes change.
    ///
    /// Examples:
    ///   modelbake lock                               # create or refresh models.lock
    ///   modelbake lock --update acme/tiny            # move acme/tiny to its branch's tip
    ///   modelbake lock --locked                      # CI: fail if models.lock is stale
    ///   modelbake lock --endpoint http://127.0.0.1:8080   # a mirror or emulator
    #[command(verbatim_doc_comment)]
    Lock(lock::LockArgs),
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose, cli.quiet);
    let ui = Ui::new(cli.json, cli.quiet);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            return report_error(
                &ui,
                &anyhow::anyhow!("cannot start the async runtime: {e}"),
                1,
            );
        }
    };
    let result = runtime.block_on(async {
        match &cli.command {
            Command::Lock(args) => lock::run(&cli, args, &ui).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(failure) => report_error(&ui, &failure.error, failure.code),
    }
}

/// An error with the exit code it should produce.
pub struct Failure {
    error: anyhow::Error,
    code: u8,
}

impl<E: Into<anyhow::Error>> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure {
            error: e.into(),
            code: 1,
        }
    }
}

/// Loads the manifest named by `--manifest`, or discovers it from the current folder.
fn load_manifest(cli: &Cli) -> anyhow::Result<Manifest> {
    Ok(match &cli.manifest {
        Some(path) => Manifest::load(path)?,
        None => Manifest::discover(&std::env::current_dir()?)?,
    })
}

fn report_error(ui: &Ui, error: &anyhow::Error, code: u8) -> ExitCode {
    let mut text = error.to_string();
    for cause in error.chain().skip(1) {
        let cause = cause.to_string();
        if !text.contains(&cause) {
            text.push_str(&format!("\n  caused by: {cause}"));
        }
    }
    if ui.json {
        println!(
            "{}",
            serde_json::json!({ "ok": false, "error": text, "exit_code": code })
        );
    }
    if ui.color {
        eprintln!("\x1b[1;31merror\x1b[0m: {text}");
    } else {
        eprintln!("error: {text}");
    }
    ExitCode::from(code)
}

fn init_logging(verbose: u8, quiet: bool) {
    use tracing_subscriber::EnvFilter;
    let default = match (quiet, verbose) {
        (true, _) => "error",
        (_, 0) => "warn",
        (_, 1) => "modelbake=info",
        _ => "modelbake=debug",
    };
    let filter = std::env::var("MODELBAKE_LOG")
        .ok()
        .and_then(|f| EnvFilter::try_new(f).ok())
        .unwrap_or_else(|| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .without_time()
        .with_target(false)
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}
