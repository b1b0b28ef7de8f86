//! `modelbake login` and `logout`: store registry credentials where podman, skopeo and buildah
//! (and modelbake) read them, for CI jobs without a docker CLI.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use super::{Cli, Failure};
use crate::env::process_env;
use crate::oci::credentials::{Credential, Secret, files, normalize_registry};
use crate::oci::registry::Registry;
use crate::ui::{Ui, display_path};

/// The most a password read from stdin may weigh (registry tokens are a few KiB).
const PASSWORD_LIMIT: u64 = 64 << 10;

/// Arguments of `modelbake login`.
#[derive(Debug, Args)]
pub struct LoginArgs {
    /// The registry: HOST[:PORT] (`docker.io` for Docker Hub).
    #[arg(value_name = "REGISTRY")]
    pub registry: String,
    /// The user name.
    #[arg(short, long)]
    pub username: String,
    /// Read the password (or access token) from stdin; one trailing newline is dropped.
    #[arg(long)]
    pub password_stdin: bool,
    /// Refused: a password on the command line is visible in `ps` and shell history.
    #[arg(short, long, value_name = "PASSWORD", hide = true)]
    pub password: Option<String>,
    /// The auth file to write [default: $REGISTRY_AUTH_FILE, else
    /// $XDG_RUNTIME_DIR/containers/auth.json, else ~/.config/containers/auth.json].
    #[arg(long, value_name = "FILE")]
    pub authfile: Option<PathBuf>,
    /// Allow a plain-http registry (local test registries only).
    #[arg(long)]
    pub insecure: bool,
}

/// Arguments of `modelbake logout`.
#[derive(Debug, Args)]
pub struct LogoutArgs {
    /// The registry: HOST[:PORT] (`docker.io` for Docker Hub).
    #[arg(value_name = "REGISTRY")]
    pub registry: String,
    /// The auth file to edit [default: as `login`].
    #[arg(long, value_name = "FILE")]
    pub authfile: Option<PathBuf>,
}

/// The file to write: `--authfile`, else podman's choice.
fn auth_file(given: &Option<PathBuf>) -> anyhow::Result<PathBuf> {
    given
        .clone()
        .or_else(|| files::login_file(&process_env))
        .ok_or_else(|| {
            anyhow::anyhow!(
                "cannot place the auth file: set REGISTRY_AUTH_FILE or HOME, or pass --authfile FILE"
            )
        })
}

/// Reads the password from stdin (at most [`PASSWORD_LIMIT`] bytes, one trailing newline off).
fn password_from_stdin() -> anyhow::Result<Secret> {
    let mut bytes = Vec::new();
    std::io::stdin()
        .take(PASSWORD_LIMIT + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| anyhow::anyhow!("cannot read the password from stdin: {e}"))?;
    if bytes.len() as u64 > PASSWORD_LIMIT {
        anyhow::bail!("the password on stdin is longer than {PASSWORD_LIMIT} bytes");
    }
    let mut text = String::from_utf8(bytes)
        .map_err(|_| anyhow::anyhow!("the password on stdin is not UTF-8"))?;
    for end in ["\n", "\r"] {
        if text.ends_with(end) {
            text.pop();
        }
    }
    if text.is_empty() {
        anyhow::bail!(
            "no password on stdin: pipe it in, e.g. `printf %s \"$TOKEN\" | modelbake login REGISTRY -u USER --password-stdin`"
        );
    }
    Ok(Secret::new(text))
}

/// Runs `modelbake login`.
pub async fn run_login(_cli: &Cli, args: &LoginArgs, ui: &Ui) -> Result<ExitCode, Failure> {
    if args.password.is_some() {
        // The value itself is never echoed back.
        return Err(Failure::with_code(
            anyhow::anyhow!(
                "a password on the command line is visible to every user in `ps` and stays in shell history: pipe it with --password-stdin instead"
            ),
            2,
        ));
    }
    if !args.password_stdin {
        return Err(Failure::with_code(
            anyhow::anyhow!(
                "pass the password on stdin with --password-stdin (e.g. `printf %s \"$TOKEN\" | modelbake login {} -u {} --password-stdin`)",
                args.registry,
                args.username
            ),
            2,
        ));
    }
    let registry = normalize_registry(&args.registry);
    if registry.is_empty() {
        return Err(anyhow::anyhow!("`{}` names no registry host", args.registry).into());
    }
    let password = password_from_stdin()?;
    let file = auth_file(&args.authfile)?;
    let credential = Credential::Basic {
        username: args.username.clone(),
        password: password.clone(),
    };
    // An auth file that cannot take the login (not a regular file, not JSON) is refused
    // before the registry is asked.
    files::AuthConfig::read(&file)?;
    Registry::for_registry(&registry, args.insecure)?
        .with_credential(credential, "modelbake login")
        .check_login()
        .await?;
    files::store_login(&file, &registry, &args.username, &password)?;
    if ui.json {
        println!(
            "{}",
            serde_json::json!({
                "ok": true,
                "registry": registry,
                "username": args.username,
                "authfile": file,
            })
        );
    }
    ui.status(
        "Logged in",
        format!(
            "to {registry} as {}; credentials in {}",
            args.username,
            display_path(&file)
        ),
    );
    Ok(ExitCode::SUCCESS)
}

/// Runs `modelbake logout`.
pub async fn run_logout(_cli: &Cli, args: &LogoutArgs, ui: &Ui) -> Result<ExitCode, Failure> {
    let registry = normalize_registry(&args.registry);
    let file = auth_file(&args.authfile)?;
    let removed = files::remove_login(&file, &registry)?;
    if ui.json {
        println!(
            "{}",
            serde_json::json!({
                "ok": true,
                "registry": registry,
                "removed": removed,
                "authfile": file,
            })
        );
    }
    if removed {
        ui.status(
            "Logged out",
            format!("of {registry}: removed from {}", display_path(&file)),
        );
    } else {
        ui.status(
            "Not logged in",
            format!(
                "to {registry} in {} (nothing to remove)",
                display_path(&file)
            ),
        );
    }
    Ok(ExitCode::SUCCESS)
}
