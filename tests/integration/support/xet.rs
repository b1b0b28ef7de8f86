//! The Xet test bed: the reference CAS (`local_cas_server` of the Hub's `xet-client` crate,
//! built by `scripts/setup-xet` into `target/xet`) on a free 127.0.0.1 port, filled through the
//! reference uploader (the `hf_xet` package huggingface_hub installs, `tests/xet/upload.py`),
//! and fronted by the Hub emulator in Xet mode (token route, `X-Xet-Hash`, `xetHash`, and a
//! CAS front that checks tokens, logs, counts xorb bytes and injects faults).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use hub_emulator::HubEmulator;

/// A running reference CAS; killed on drop.
pub struct XetBed {
    child: Child,
    _data: tempfile::TempDir,
    /// The uploader's own cache (`HF_XET_CACHE`), as new as this CAS. hf_xet keeps a shard
    /// cache per endpoint URL: shared through `~/.cache`, a CAS on a port an earlier test's
    /// CAS had would inherit that test's shards, and the uploader would skip xorbs this CAS
    /// never got (its reconstructions then answer 404).
    uploader_cache: tempfile::TempDir,
    /// `http://127.0.0.1:PORT` of the CAS itself (the emulator fronts it).
    pub upstream: String,
    python: PathBuf,
}

/// One uploaded file as the reference uploader reports it.
#[derive(Debug, Clone)]
pub struct Uploaded {
    /// The Xet file hash (API string form).
    pub hash: String,
    /// sha256 of the content.
    pub sha256: String,
}

impl XetBed {
    /// Starts the CAS, building it first if needed; `None` (skipped loudly) when it cannot be
    /// built or hf_xet is missing, and a panic instead under `CI=true`.
    pub fn start() -> Option<XetBed> {
        let python = super::python()?;
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let bin = root.join("target/xet/bin/local_cas_server");
        if !bin.is_file() {
            let _ = Command::new(root.join("scripts/setup-xet")).status();
        }
        if !bin.is_file() {
            let msg = "the reference Xet CAS is not available: scripts/setup-xet failed to build target/xet/bin/local_cas_server (needs crates.io access)";
            if std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0") {
                panic!("{msg}");
            }
            eprintln!("\n!!! SKIPPED: {msg}\n");
            return None;
        }
        let data = tempfile::tempdir().unwrap();
        let log = data.path().join("cas.log");
        let (child, port) = super::listener::spawn_on_free_port(
            "local_cas_server",
            |port| {
                Command::new(&bin)
                    .args(["--host", "127.0.0.1", "-p", &port.to_string(), "-d"])
                    .arg(data.path().join("cas"))
                    .stdout(Stdio::null())
                    .stderr(std::fs::File::create(&log).unwrap())
                    .spawn()
                    .unwrap()
            },
            || std::fs::read_to_string(&log).unwrap_or_default(),
        );
        let bed = XetBed {
            child,
            _data: data,
            uploader_cache: tempfile::tempdir().unwrap(),
            upstream: format!("http://127.0.0.1:{port}"),
            python,
        };
        Some(bed)
    }

    /// The Python with huggingface_hub 2.x and hf_xet.
    pub fn python(&self) -> &Path {
        &self.python
    }

    /// Uploads `files` (name, bytes) with the reference uploader and returns what it reports,
    /// in the same order.
    pub fn upload(&self, files: &[(&str, &[u8])]) -> Vec<Uploaded> {
        let dir = tempfile::tempdir().unwrap();
        let paths: Vec<PathBuf> = files
            .iter()
            .enumerate()
            .map(|(i, (_, bytes))| {
                let p = dir.path().join(format!("f{i}"));
                std::fs::write(&p, bytes).unwrap();
                p
            })
            .collect();
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/xet/upload.py");
        let out = super::sh(
            Command::new(&self.python)
                .env("HF_XET_CACHE", self.uploader_cache.path())
                .env("HF_HOME", self.uploader_cache.path())
                .arg(script)
                .arg(&self.upstream)
                .args(&paths),
        );
        out.lines()
            .map(|line| {
                let v: serde_json::Value = serde_json::from_str(line).unwrap();
                Uploaded {
                    hash: v["hash"].as_str().unwrap().to_owned(),
                    sha256: v["sha256"].as_str().unwrap().to_owned(),
                }
            })
            .collect()
    }

    /// Uploads the LFS files of `hub`'s repos given as (name, bytes), registers their hashes
    /// and turns Xet mode on with tokens living `lifetime`.
    pub fn serve(&self, hub: &HubEmulator, files: &[(&str, &[u8])], lifetime: Duration) {
        for u in self.upload(files) {
            hub.register_xet_hash(&u.sha256, &u.hash);
        }
        hub.enable_xet(&self.upstream, lifetime);
    }
}

impl Drop for XetBed {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
