//! Argument parsing and output only; every decision lives in the library modules.

mod args;
mod bake;
mod cache;
mod doctor;
mod export;
mod fetch;
mod hints;
mod lock;
mod login;
mod plugin;
mod serve;
mod store;
mod verify;
mod verify_image;
mod version;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::manifest::Manifest;
use crate::ui::Ui;

/// Exit code for "the lock is out of date" under `--locked`, distinct from other failures so
/// CI can tell drift from breakage.
pub const EXIT_OUT_OF_DATE: u8 = 3;

const FILES_HELP: &str = "\
Files:
  models.toml   what the project needs: [[model]], [[dataset]], [[space]] entries with
                `id`, optional `revision` (branch, tag, refs/pr/N or 40-hex commit) and
                `include`/`exclude` globs; [defaults] sets values for every entry.
                Without models.toml, [package.metadata.modelbake] or
                [workspace.metadata.modelbake] in Cargo.toml is read instead.
                [plugins.NAME] declares a wasm plugin (`path` or `url`, `config`);
                [mirror] use = [...] and `policy = [...]` put plugins to work.
  models.lock   written beside the manifest by `modelbake lock`; commit it.

";

const EXIT_HELP: &str = "Exit codes: 0 success, 1 error, 2 bad arguments, 3 lock out of date (--locked), 4 image \
     content differs from the lock (verify --image), 5 attestations missing or invalid (verify \
     --image --key).";

/// The text after `--help`'s options: the files, every environment variable
/// ([`crate::env::VARS`]) and the exit codes.
fn after_help() -> String {
    format!("{FILES_HELP}\n{}\n{EXIT_HELP}", crate::env::help_section())
}

/// Reproducible, verified, build-time Hugging Face model downloads.
///
/// `models.toml` says what a project needs; `modelbake lock` pins every file of every repo
/// (commit, path, size, sha256) in `models.lock`, which you commit and review like code.
#[derive(Debug, Parser)]
#[command(name = "modelbake", version = version::LINE, after_help = after_help(), propagate_version = true)]
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
    /// What to do.
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
    /// Download every file models.lock names into the shared store, verified.
    ///
    /// Files come from the locked commit (never a branch), in parallel and in Range chunks for
    /// large files; every byte is sha256-checked before it becomes visible in the store.
    /// Interrupted downloads resume; blobs already in the store cost no network; blobs found
    /// in an existing huggingface_hub cache are imported after their hash matched.
    ///
    /// Examples:
    ///   modelbake fetch                      # then `modelbake export`
    ///   modelbake fetch --offline            # CI check: everything is already local
    ///   MODELBAKE_STORE=/mnt/models modelbake fetch -j 16
    #[command(verbatim_doc_comment)]
    Fetch(fetch::FetchArgs),
    /// Lay out the huggingface_hub cache for every locked repo from the store.
    ///
    /// Writes blobs/ (hard links to the store; copies across filesystems or with --copy),
    /// snapshots/<commit>/ with relative symlinks, refs/<revision> (exactly the commit, no
    /// newline) and, when the lock lists every file, trees/<commit>.json. Merges into an
    /// existing cache and leaves other repos and revisions alone. Load it with
    /// HF_HUB_OFFLINE=1.
    ///
    /// Examples:
    ///   modelbake export                     # into $HF_HUB_CACHE or $HF_HOME/hub
    ///   modelbake export --hub-cache ./hf/hub --copy
    #[command(verbatim_doc_comment)]
    Export(export::ExportArgs),
    /// Check a huggingface_hub cache, an OCI image or a layer against models.lock.
    ///
    /// A cache (default, or --hub-cache DIR): refs (exactly the commit, no newline), snapshot
    /// symlinks, the full sha256 of every file; missing, extra, corrupt and broken entries.
    /// An image (--oci DIR [--tag T]) or a layer (--layer FILE), in the layout it was baked
    /// with (--layout, --models-dir, --flat): every entry's content hash, symlink or hard-link
    /// target, ref, owner and mode; layer digests and DiffIDs; nothing missing or extra. An
    /// index is checked platform by platform, each shared layer hashed once.
    /// Exit 0 only when everything matches.
    #[command(verbatim_doc_comment)]
    Verify(verify::VerifyArgs),
    /// Where will my model be loaded from? Each loader's cache, and whether every locked model
    /// would load offline from it.
    ///
    /// For huggingface_hub, transformers 4.x and sentence-transformers: the cache their
    /// variables resolve to, and per locked repo present / missing / stale (its ref names
    /// another commit) / unreadable by the image's User (or the current user); plus the
    /// offline switches. An image in the files layout (told from its layers, or --layout)
    /// is checked folder by folder. Exit 0 only when every locked model is present and
    /// readable for every loader.
    ///
    /// Examples:
    ///   modelbake doctor                         # this machine, its environment
    ///   modelbake doctor --oci out/image:latest  # an image's Env and User
    ///   modelbake doctor --image ghcr.io/acme/app:v1   # streamed from the registry, not stored
    #[command(verbatim_doc_comment)]
    Doctor(doctor::DoctorArgs),
    /// Bake the locked models into deterministic OCI layers and an image; push without Docker.
    ///
    /// One layer per repo (split above --max-layer-size) holding its huggingface_hub cache
    /// under HF_HOME (--layout hf-cache, the default) or its files as plain files under
    /// /models/<org>/<name>/ (--layout files: for Kubernetes image volumes and KServe
    /// modelcars), streamed from the store: sorted entries, fixed mtime (0, or
    /// SOURCE_DATE_EPOCH), uid/gid from --owner, 0644/0755, relative symlinks (hf-cache) or
    /// hard links for identical files (files). The same lock and options give bit-identical
    /// layers and image digests on any machine. Layers are cached by content in the store, so
    /// an unchanged rebake takes well under a second. Several --platform values give an image
    /// index whose per-platform manifests share the same model layers.
    ///
    /// Examples:
    ///   modelbake bake --oci out/image                       # OCI layout, models only
    ///   modelbake bake --base docker.io/pytorch/pytorch:2.7.0-cuda12.6-cudnn9-runtime \
    ///                  --push ghcr.io/acme/serving:models    # pushed, base layers mounted/streamed
    ///   modelbake bake --layers out/layers                   # tarballs for a Dockerfile ADD
    ///   modelbake bake --layout files --no-base --platform linux/amd64,linux/arm64 \
    ///                  --push ghcr.io/acme/models:v1         # an image volume for any node
    ///   modelbake bake --layout files --flat --owner 1010:1010 \
    ///                  --base ghcr.io/acme/busybox:1 --push ghcr.io/acme/modelcar:v1  # KServe
    #[command(verbatim_doc_comment)]
    Bake(bake::BakeArgs),
    /// Inspect and prune huggingface_hub caches.
    #[command(subcommand)]
    Cache(cache::CacheCommand),
    /// Maintain the blob store.
    #[command(subcommand)]
    Store(store::StoreCommand),
    /// Serve the locked repos from the store as a read-only Hub-compatible mirror.
    ///
    /// Revision info, trees, paths-info and resolve (with Range) for exactly the repos and
    /// commits the locks name; nothing else is reachable. Listens on loopback unless
    /// --allow-remote.
    ///
    /// Examples:
    ///   modelbake serve --addr 127.0.0.1:8080
    ///   HF_ENDPOINT=http://127.0.0.1:8080 python -c "from huggingface_hub import snapshot_download; snapshot_download('org/model')"
    #[command(verbatim_doc_comment)]
    Serve(serve::ServeArgs),
    /// Write, build and inspect WebAssembly plugins (mirrors, policies, pruners).
    ///
    /// Plugins are wasm components declared in models.toml as [plugins.NAME] with a `path`
    /// (or https `url`) and a `config` table; models.lock pins each one's sha256. They run
    /// sandboxed: no filesystem, network, environment, clock or randomness, capped CPU and
    /// memory. Use them as `[mirror] use = [...]`, `policy = [...]` (in [defaults] or a repo)
    /// and `modelbake cache prune --policy NAME`.
    #[command(subcommand, verbatim_doc_comment)]
    Plugin(plugin::PluginCommand),
    /// Check registry credentials and store them for modelbake, podman, skopeo and buildah.
    ///
    /// Checks them the way `docker login` does (GET /v2/, answering its Basic or Bearer
    /// challenge), then writes them to the containers auth file (mode 0600, other entries
    /// kept): $REGISTRY_AUTH_FILE, else $XDG_RUNTIME_DIR/containers/auth.json, else
    /// ~/.config/containers/auth.json. The password comes only from stdin. Pushes and base
    /// pulls also read credential helpers and ~/.docker/config.json
    /// (see docs/registry-credentials.md).
    ///
    /// Examples:
    ///   printf %s "$CI_REGISTRY_PASSWORD" | modelbake login "$CI_REGISTRY" -u "$CI_REGISTRY_USER" --password-stdin
    ///   echo "$GITHUB_TOKEN" | modelbake login ghcr.io -u "$GITHUB_ACTOR" --password-stdin
    #[command(verbatim_doc_comment)]
    Login(login::LoginArgs),
    /// Remove a registry's credentials from the containers auth file `login` writes.
    Logout(login::LogoutArgs),
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    if version::json_requested(&args) {
        println!("{}", version::json());
        return ExitCode::SUCCESS;
    }
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
            Command::Fetch(args) => fetch::run(&cli, args, &ui).await,
            Command::Export(args) => export::run(&cli, args, &ui).await,
            Command::Verify(args) => verify::run(&cli, args, &ui).await,
            Command::Bake(args) => bake::run(&cli, args, &ui).await,
            Command::Doctor(args) => doctor::run(&cli, args, &ui).await,
            Command::Cache(cache::CacheCommand::Scan(args)) => {
                cache::run_scan(&cli, args, &ui).await
            }
            Command::Cache(cache::CacheCommand::Prune(args)) => {
                cache::run_prune(&cli, args, &ui).await
            }
            Command::Store(store::StoreCommand::Gc(args)) => store::run(&cli, args, &ui).await,
            Command::Serve(args) => serve::run(&cli, args, &ui).await,
            Command::Plugin(cmd) => plugin::run(&cli, cmd, &ui).await,
            Command::Login(args) => login::run_login(&cli, args, &ui).await,
            Command::Logout(args) => login::run_logout(&cli, args, &ui).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(failure) => {
            let ui = Ui {
                json: ui.json && !failure.json_done,
                ..ui
            };
            report_error(&ui, &failure.error, failure.code)
        }
    }
}

/// An error with the exit code it should produce.
pub struct Failure {
    error: anyhow::Error,
    code: u8,
    /// The command already printed its JSON report; print only the human message.
    json_done: bool,
}

impl Failure {
    /// A failure with a specific exit code.
    pub fn with_code(error: impl Into<anyhow::Error>, code: u8) -> Self {
        Failure {
            error: error.into(),
            code,
            json_done: false,
        }
    }

    /// A failure with a specific exit code whose JSON report is already on stdout.
    pub fn reported_with_code(error: impl Into<anyhow::Error>, code: u8) -> Self {
        Failure {
            error: error.into(),
            code,
            json_done: true,
        }
    }

    /// A failure whose JSON report is already on stdout.
    pub fn reported(error: impl Into<anyhow::Error>) -> Self {
        Failure {
            error: error.into(),
            code: 1,
            json_done: true,
        }
    }
}

impl<E: Into<anyhow::Error>> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure::with_code(e, 1)
    }
}

/// Loads the manifest named by `--manifest`, or discovers it from the current folder.
fn load_manifest(cli: &Cli) -> anyhow::Result<Manifest> {
    Ok(match &cli.manifest {
        Some(path) => Manifest::load(path)?,
        None => Manifest::discover(&std::env::current_dir()?)?,
    })
}

/// Loads the manifest and the lock beside it; warns when the lock no longer matches the
/// manifest (the lock is what counts for fetch, export and verify).
fn load_locked(cli: &Cli, ui: &Ui) -> anyhow::Result<(Manifest, crate::lock::Lockfile)> {
    let manifest = load_manifest(cli)?;
    let path = manifest.lock_path();
    let lock = crate::lock::Lockfile::read_if_exists(&path)?.ok_or_else(|| {
        anyhow::anyhow!(
            "{} does not exist: run `modelbake lock` first",
            crate::ui::display_path(&path)
        )
    })?;
    let drift = crate::lock::diff::manifest_drift(&manifest, &lock);
    if !drift.is_empty() && !ui.quiet {
        eprintln!(
            "warning: {} is out of date with {} (using the lock as it is; run `modelbake lock`):",
            crate::ui::display_path(&path),
            crate::ui::display_path(&manifest.path)
        );
        for d in drift {
            eprintln!("  - {d}");
        }
    }
    Ok((manifest, lock))
}

/// Reads each lock file named on the command line (`--keep`, `--lock`…).
fn read_locks(paths: &[PathBuf]) -> anyhow::Result<Vec<(PathBuf, crate::lock::Lockfile)>> {
    paths
        .iter()
        .map(|p| {
            let lock = crate::lock::Lockfile::read_if_exists(p)?
                .ok_or_else(|| anyhow::anyhow!("{}: no such lock file", p.display()))?;
            Ok((p.clone(), lock))
        })
        .collect()
}

/// How `store gc` and `cache prune` end after doing their work everywhere else: success when
/// no symlinked folder was found, else an error (exit 1) listing each link and its target,
/// since the command could not do all it was asked without deleting through them.
fn left_alone(ui: &Ui, links: &[PathBuf], holding: &str, todo: &str) -> Result<ExitCode, Failure> {
    if links.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    let list: Vec<String> = links
        .iter()
        .map(|p| match std::fs::read_link(p) {
            Ok(t) => format!("  - {} (-> {})", crate::ui::display_path(p), t.display()),
            Err(_) => format!("  - {}", crate::ui::display_path(p)),
        })
        .collect();
    let error = anyhow::anyhow!(
        "left alone {holding}{} symlinked folder(s) (modelbake never reads, writes or deletes through a symlinked folder):\n{}\n{todo}",
        links.len(),
        list.join("\n")
    );
    Err(if ui.json {
        Failure::reported(error)
    } else {
        error.into()
    })
}

/// What the user can do about `error`: the hint of the first error in its chain that has one
/// (see `cli::hints`). Hints are data on the error types, not sentences glued into messages.
fn hint_of(error: &anyhow::Error) -> Option<String> {
    error.chain().find_map(hints::find)
}

fn report_error(ui: &Ui, error: &anyhow::Error, code: u8) -> ExitCode {
    let mut text = error.to_string();
    for cause in error.chain().skip(1) {
        let cause = cause.to_string();
        if !text.contains(&cause) {
            text.push_str(&format!("\n  caused by: {cause}"));
        }
    }
    // Credentials written into a URL (`http://user:pass@host`) never reach the terminal.
    let text = crate::redact::text(&text);
    let hint = hint_of(error);
    if ui.json {
        println!(
            "{}",
            serde_json::json!({ "ok": false, "error": text, "hint": hint, "exit_code": code })
        );
    }
    if ui.color {
        eprintln!("\x1b[1;31merror\x1b[0m: {text}");
    } else {
        eprintln!("error: {text}");
    }
    if let Some(hint) = hint {
        eprintln!("hint: {hint}");
    }
    ExitCode::from(code)
}

/// stderr for log lines, with every URL in them passed through [`crate::redact::text`]: our
/// own fields already are, this also covers other crates' trace lines (`MODELBAKE_LOG=trace`)
/// and any URL a field carries whole. The formatter writes one event per `write`.
struct RedactedStderr;

impl std::io::Write for RedactedStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let line = crate::redact::text(&String::from_utf8_lossy(buf));
        std::io::stderr().write_all(line.as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
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
        .with_writer(|| RedactedStderr)
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

    #[test]
    fn errors_report_the_hint_of_any_cause() {
        let mismatch = crate::store::StoreError::SizeMismatch {
            expected: 2,
            actual: 1,
        };
        let error = anyhow::Error::new(mismatch).context("fetching model `acme/tiny`");
        let hint = hint_of(&error).unwrap();
        assert!(hint.starts_with("run the command again"), "{hint}");
        let no_tag = crate::oci::OciError::NoTag {
            dir: "out/image".into(),
            tag: "v2".into(),
            tags: "v1".into(),
        };
        assert_eq!(
            hint_of(&anyhow::Error::new(no_tag)).as_deref(),
            Some("name one of the listed tags: oci:DIR:TAG")
        );
        assert_eq!(hint_of(&anyhow::anyhow!("no advice here")), None);
    }
}
