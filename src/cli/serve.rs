//! `modelbake serve`: arguments and the listening loop's output.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Args;

use super::args::StoreArgs;
use super::{Cli, Failure, read_locks};
use crate::lock::Lockfile;
use crate::ui::Ui;

/// Arguments of `serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on; port 0 picks a free one (printed on stdout as JSON).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub addr: std::net::SocketAddr,
    /// Serve the repos of this lock; repeatable [default: the project's models.lock].
    #[arg(long, value_name = "FILE")]
    pub lock: Vec<PathBuf>,
    /// Allow listening on a non-loopback address (the mirror has no authentication).
    #[arg(long)]
    pub allow_remote: bool,
    #[command(flatten)]
    pub store: StoreArgs,
}

/// Runs `serve` until interrupted.
pub async fn run(cli: &Cli, args: &ServeArgs, ui: &Ui) -> Result<ExitCode, Failure> {
    if !crate::serve::is_loopback(&args.addr) && !args.allow_remote {
        return Err(anyhow::anyhow!("{} is not a loopback address: the mirror has no authentication; pass --allow-remote to serve a network", args.addr).into());
    }
    let locks: Vec<Lockfile> = if args.lock.is_empty() {
        vec![super::load_locked(cli, ui)?.1]
    } else {
        read_locks(&args.lock)?
            .into_iter()
            .map(|(_, l)| l)
            .collect()
    };
    let store = args.store.open()?;
    let catalog = Arc::new(crate::serve::Catalog::new(&locks, store));
    let listener = tokio::net::TcpListener::bind(args.addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", args.addr))?;
    let addr = listener.local_addr()?;
    println!(
        "{}",
        serde_json::json!({ "endpoint": format!("http://{addr}") })
    );
    ui.status("Serving", format!("{} repo(s) on http://{addr} (point HF_ENDPOINT or `modelbake fetch --endpoint` at it; Ctrl-C stops)", catalog.len()));
    tokio::select! {
        r = crate::serve::serve(listener, catalog) => r?,
        _ = tokio::signal::ctrl_c() => {}
    }
    Ok(ExitCode::SUCCESS)
}
