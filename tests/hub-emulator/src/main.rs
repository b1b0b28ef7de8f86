//! `hub-emulator`: serves fixture folders as Hub repos on 127.0.0.1 until interrupted; used
//! by the offline quick start. Prints one JSON line with the endpoint once it listens.
//!
//! Usage: hub-emulator [--port N] [--page-size N] [--model ID=DIR]... [--dataset ID=DIR]...
//!        [--tag NAME]...   (tags point at `main` of every repo)
//!        [--cdn-base URL]  (LFS files redirect to URL/<path>, e.g. an nginx serving the folder)
//!        (an ID given again: its next commit, all tagged r1, r2, …)
//!        [--xet-cas URL --xet-hashes FILE]  (Xet mode: front the CAS at URL, a
//!        `local_cas_server`; FILE maps sha256 to Xet hash as a JSON object)

use std::path::PathBuf;

use hub_emulator::{FileSpec, HubEmulator, Kind, Repo};

fn main() {
    if let Err(e) = run() {
        eprintln!("hub-emulator: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let mut builder = HubEmulator::builder();
    let mut repos = Vec::new();
    let mut tags = Vec::new();
    let mut xet_cas = None;
    let mut xet_hashes = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--port" => {
                builder = builder.port(value()?.parse().map_err(|e| format!("--port: {e}"))?)
            }
            "--page-size" => {
                builder =
                    builder.page_size(value()?.parse().map_err(|e| format!("--page-size: {e}"))?)
            }
            "--model" | "--dataset" => {
                let kind = if arg == "--model" {
                    Kind::Model
                } else {
                    Kind::Dataset
                };
                let v = value()?;
                let (id, dir) = v
                    .split_once('=')
                    .ok_or_else(|| format!("{arg} expects ID=DIR, got {v}"))?;
                repos.push((kind, id.to_owned(), PathBuf::from(dir)));
            }
            "--tag" => tags.push(value()?),
            "--cdn-base" => builder = builder.external_cdn(&value()?),
            "--xet-cas" => xet_cas = Some(value()?),
            "--xet-hashes" => xet_hashes = Some(PathBuf::from(value()?)),
            "-h" | "--help" => {
                println!(
                    "usage: hub-emulator [--port N] [--page-size N] [--model ID=DIR]... [--dataset ID=DIR]... [--tag NAME]... [--cdn-base URL] [--xet-cas URL --xet-hashes FILE]"
                );
                return Ok(());
            }
            other => return Err(format!("unknown argument {other}; see --help")),
        }
    }
    // The same ID given again: its next commit on main; a repo with several commits has them
    // tagged r1, r2, … in order.
    let mut built: Vec<(Repo, Vec<String>)> = Vec::new();
    for (kind, id, dir) in repos {
        let err = |e: std::io::Error| format!("{}: {e}", dir.display());
        let files = FileSpec::from_dir(&dir).map_err(err)?;
        let at = match built.iter().position(|(r, _)| r.kind == kind && r.id == id) {
            Some(at) => at,
            None => {
                built.push((Repo::new(kind, &id), Vec::new()));
                built.len() - 1
            }
        };
        let (repo, shas) = &mut built[at];
        shas.push(repo.push_commit("main", files).map_err(err)?);
    }
    let built = built.into_iter().map(|(mut repo, shas)| {
        if shas.len() > 1 {
            for (i, sha) in shas.iter().enumerate() {
                repo.refs.insert(format!("r{}", i + 1), sha.clone());
            }
        }
        repo
    });
    for mut repo in built {
        for tag in &tags {
            repo = repo.tag(tag, "main");
        }
        builder = builder.repo(repo);
    }
    let emulator = builder.start().map_err(|e| format!("cannot listen: {e}"))?;
    if let Some(cas) = &xet_cas {
        emulator.enable_xet(cas, std::time::Duration::from_secs(3600));
        let file = xet_hashes.ok_or("--xet-cas needs --xet-hashes FILE")?;
        let text =
            std::fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()))?;
        let map: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(&text).map_err(|e| format!("{}: {e}", file.display()))?;
        for (sha, hash) in map {
            emulator.register_xet_hash(&sha, hash.as_str().unwrap_or_default());
        }
    }
    println!(
        "{{\"endpoint\": \"{}\", \"cas\": \"{}\"}}",
        emulator.endpoint(),
        emulator.cas_url()
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .map_err(|e| e.to_string())?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        Ok::<_, String>(())
    })?;
    drop(emulator);
    Ok(())
}
