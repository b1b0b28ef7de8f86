//! Shared helpers for tests that use real OCI consumers: a Distribution registry on 127.0.0.1
//! (plain, basic auth, or any extra configuration such as token auth or TLS), a tiny busybox
//! base image made with umoci, and podman with the options this sandbox needs.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};

use serde_json::{Value, json};

use crate::support::*;

/// A Distribution registry on 127.0.0.1, logging every request to a file.
pub struct Registry {
    child: Child,
    /// `127.0.0.1:PORT`.
    pub addr: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Registry {
    pub fn start(bin: &Path) -> Self {
        Registry::start_with(bin, None)
    }

    /// A registry; with `htpasswd` (file contents) it demands basic authentication.
    pub fn start_with(bin: &Path, htpasswd: Option<&str>) -> Self {
        Registry::start_configured(bin, |dir| {
            htpasswd.map_or_else(String::new, |users| {
                let file = dir.join("htpasswd");
                fs::write(&file, users).unwrap();
                format!(
                    "auth:\n  htpasswd:\n    realm: test\n    path: {}\n",
                    file.display()
                )
            })
        })
    }

    /// A registry whose configuration ends with the YAML `extra` returns (given the registry's
    /// private folder, for certificates, htpasswd or token files): `auth:`, `http.tls`, ….
    /// Sections under `http:` are written indented by the caller (`  tls:` …) since `http:` is
    /// the last top-level key before `extra`.
    pub fn start_configured(bin: &Path, extra: impl FnOnce(&Path) -> String) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config.yml");
        let log = dir.path().join("registry.log");
        let extra = extra(dir.path());
        let (child, port) = super::listener::spawn_on_free_port(
            "the registry",
            |port| {
                let yaml = format!(
                    "version: 0.1\nlog:\n  level: info\n  formatter: text\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n{extra}",
                    dir.path().join("data").display()
                );
                fs::write(&config, yaml).unwrap();
                Command::new(bin)
                    .args(["serve", config.to_str().unwrap()])
                    .stdout(fs::File::create(&log).unwrap())
                    .stderr(fs::File::options().append(true).open(&log).unwrap())
                    .spawn()
                    .unwrap()
            },
            || fs::read_to_string(&log).unwrap_or_default(),
        );
        let addr = format!("127.0.0.1:{port}");
        Registry {
            child,
            addr,
            log,
            _dir: dir,
        }
    }

    /// The registry's storage root (`docker/registry/v2/...` lies under it).
    pub fn data_dir(&self) -> PathBuf {
        self._dir.path().join("data")
    }

    /// The request lines ("METHOD URI") logged so far.
    pub fn requests(&self) -> Vec<String> {
        fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split('"').nth(1))
            .filter(|r| r.starts_with(['G', 'H', 'P', 'D']))
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A tiny runnable base image: busybox as /bin/sh, made with umoci.
pub fn busybox_base(umoci: &Path, dir: &Path) -> PathBuf {
    let layout = dir.join("base");
    let bundle = dir.join("base-bundle");
    sh(Command::new(umoci).args(["init", "--layout"]).arg(&layout));
    sh(Command::new(umoci).args(["new", "--image", &format!("{}:latest", layout.display())]));
    sh(Command::new(umoci)
        .args(["unpack", "--image", &format!("{}:latest", layout.display())])
        .arg(&bundle));
    let bin = bundle.join("rootfs/bin");
    fs::create_dir_all(&bin).unwrap();
    fs::copy("/bin/busybox", bin.join("busybox")).unwrap();
    for applet in ["sh", "sha256sum", "cat"] {
        std::os::unix::fs::symlink("busybox", bin.join(applet)).unwrap();
    }
    sh(Command::new(umoci)
        .args(["repack", "--image", &format!("{}:latest", layout.display())])
        .arg(&bundle));
    sh(Command::new(umoci).args([
        "config",
        "--image",
        &format!("{}:latest", layout.display()),
        "--config.cmd",
        "/bin/sh",
    ]));
    layout
}

/// podman with its own storage under a test folder and the options runc needs here
/// (cgroupfs, file events, vfs storage); `run()` adds `--rm --network none` and the rlimits.
pub struct Podman {
    bin: PathBuf,
    storage: PathBuf,
}

impl Podman {
    /// podman `bin` keeping its images and containers under `storage`.
    pub fn new(bin: &Path, storage: &Path) -> Self {
        Podman {
            bin: bin.to_owned(),
            storage: storage.to_owned(),
        }
    }

    /// `podman` with the storage and runtime options, ready for a subcommand.
    pub fn cmd(&self) -> Command {
        let mut c = Command::new(&self.bin);
        c.arg("--root")
            .arg(self.storage.join("root"))
            .arg("--runroot")
            .arg(self.storage.join("run"))
            .args([
                "--runtime",
                "/usr/bin/runc",
                "--cgroup-manager",
                "cgroupfs",
                "--events-backend",
                "file",
                "--storage-driver",
                "vfs",
            ])
            .stdin(std::process::Stdio::null());
        c
    }

    /// `podman run --rm --network none` with the rlimits runc needs; add options, the image
    /// and the command.
    pub fn run(&self) -> Command {
        let mut c = self.cmd();
        c.args([
            "run",
            "--rm",
            "--network",
            "none",
            "--ulimit",
            "nofile=1024:1024",
            "--ulimit",
            "nproc=1024:1024",
        ]);
        c
    }
}

/// Makes the busybox base ([`busybox_base`], under `dir`) and pushes it with skopeo to
/// `reg/base/busybox:1` over plain HTTP; that reference.
pub fn push_busybox_base(skopeo: &Path, umoci: &Path, dir: &Path, reg: &str) -> String {
    let base = busybox_base(umoci, dir);
    let target = format!("{reg}/base/busybox:1");
    sh(Command::new(skopeo).args([
        "copy",
        "--dest-tls-verify=false",
        &format!("oci:{}:latest", base.display()),
        &format!("docker://{target}"),
    ]));
    target
}

/// Pulls `image` (`host/repo:tag`) with skopeo into the OCI layout `into`, tagged `v1`, the
/// blobs as they were pushed (`--preserve-digests`); `opts` (TLS, credentials) go first.
pub fn skopeo_pull(skopeo: &Path, opts: &[&str], image: &str, into: &Path) {
    let src = format!("docker://{image}");
    let dest = format!("oci:{}:v1", into.display());
    let mut args = vec!["copy"];
    args.extend_from_slice(opts);
    args.extend(["--preserve-digests", src.as_str(), dest.as_str()]);
    sh(Command::new(skopeo).args(args));
}

/// Pulls `image` back into `into` ([`skopeo_pull`]) and checks that `modelbake verify --oci`
/// accepts it.
pub fn pull_and_verify(f: &Fetched, skopeo: &Path, opts: &[&str], image: &str, into: &Path) {
    skopeo_pull(skopeo, opts, image, into);
    run(f
        .cmd()
        .args(["verify", "--oci", into.to_str().unwrap(), "--tag", "v1"]))
    .ok();
}

/// `sha256:<hex>` of `bytes`.
pub fn sha256_digest(bytes: &[u8]) -> String {
    use sha2::Digest;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}

/// The config of the only image in a layout.
pub fn layout_config(dir: &Path) -> Value {
    let blob = |d: &str| fs::read(dir.join("blobs/sha256").join(&d[7..])).unwrap();
    let index: Value = serde_json::from_slice(&fs::read(dir.join("index.json")).unwrap()).unwrap();
    let manifest: Value =
        serde_json::from_slice(&blob(index["manifests"][0]["digest"].as_str().unwrap())).unwrap();
    serde_json::from_slice(&blob(manifest["config"]["digest"].as_str().unwrap())).unwrap()
}

/// Replaces the config of the only image in a layout (config, manifest and index rewritten,
/// as a hand-made image would be).
pub fn replace_layout_config(dir: &Path, config: &Value) {
    let blobs = dir.join("blobs/sha256");
    let put = |bytes: &[u8]| {
        let d = sha256_digest(bytes);
        fs::write(blobs.join(&d[7..]), bytes).unwrap();
        d
    };
    let mut index: Value =
        serde_json::from_slice(&fs::read(dir.join("index.json")).unwrap()).unwrap();
    let old = index["manifests"][0]["digest"].as_str().unwrap().to_owned();
    let mut manifest: Value =
        serde_json::from_slice(&fs::read(blobs.join(&old[7..])).unwrap()).unwrap();
    let config = serde_json::to_vec(config).unwrap();
    manifest["config"]["digest"] = json!(put(&config));
    manifest["config"]["size"] = json!(config.len());
    let manifest = serde_json::to_vec(&manifest).unwrap();
    index["manifests"][0]["digest"] = json!(put(&manifest));
    index["manifests"][0]["size"] = json!(manifest.len());
    fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
}
