//! Helpers shared by the integration tests: a temp project, running the binary with a clean
//! environment, and standard emulator fixtures. The helpers of one family of tests, and the
//! stand-in servers some of them run, are the submodules.

pub mod fault_proxy;
pub mod hostile;
pub mod listener;
pub mod oci;
pub mod referrers_registry;
pub mod token_service;
pub mod xet;

use std::path::{Path, PathBuf};
use std::process::Command;

use hub_emulator::{FileSpec, HubEmulator, Repo, generate};

/// The exact bytes of `config.json` in the fixture repo; `printf '%s' ... | git hash-object
/// --stdin` and `sha256sum` give the constants below, independently of modelbake's code.
pub const CONFIG_JSON: &str = "{\"model_type\": \"bert\"}\n";
pub const CONFIG_JSON_GIT_SHA1: &str = "dc1fb7b6703fe03317c1a080b523bf475f3d4818";
pub const CONFIG_JSON_SHA256: &str =
    "665939e0da5aa211ec9832ffe5dcba176d1bbac8a95c899c270ec29082853c51";

/// The fixture model `acme/tiny`: regular files, an LFS file, a nested path.
pub fn tiny_files() -> Vec<FileSpec> {
    vec![
        FileSpec::regular(
            ".gitattributes",
            "*.safetensors filter=lfs diff=lfs merge=lfs -text\n",
        ),
        FileSpec::regular("config.json", CONFIG_JSON),
        FileSpec::regular(
            "tokenizer.json",
            "{\"version\": \"1.0\", \"model\": {\"type\": \"WordLevel\"}}\n",
        ),
        FileSpec::lfs("model.safetensors", generate(300_000, 1)),
        FileSpec::regular("sub/dir/nested.txt", "nested\n"),
        FileSpec::lfs("onnx/model.onnx", generate(5_000, 2)),
    ]
}

/// `acme/tiny` with `main`, tag `v1.0` (= first main), a second commit on main and `refs/pr/1`.
pub fn tiny_repo() -> Repo {
    let mut second = tiny_files();
    second.push(FileSpec::regular("README.md", "# tiny\n"));
    let mut pr = tiny_files();
    pr[1] = FileSpec::regular("config.json", "{\"model_type\": \"bert\", \"pr\": 1}\n");
    Repo::model("acme/tiny")
        .commit("main", tiny_files())
        .tag("v1.0", "main")
        .commit("main", second)
        .commit("refs/pr/1", pr)
}

/// A small dataset.
pub fn dataset_repo() -> Repo {
    Repo::dataset("acme/data").commit(
        "main",
        vec![
            FileSpec::regular("README.md", "# data\n"),
            FileSpec::lfs("data/train-00000.parquet", generate(20_000, 3)),
            FileSpec::lfs("data/test-00000.parquet", generate(2_000, 4)),
        ],
    )
}

/// The emulator with `acme/tiny` and `acme/data`.
pub fn emulator() -> HubEmulator {
    HubEmulator::builder()
        .repo(tiny_repo())
        .repo(dataset_repo())
        .start()
        .expect("start the Hub emulator")
}

/// The outcome of one run of the binary.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Panics with the whole output unless the exit code is `code`.
    #[track_caller]
    pub fn expect_code(&self, code: i32) -> &Self {
        assert_eq!(
            self.code, code,
            "unexpected exit code\n--- stdout\n{}\n--- stderr\n{}",
            self.stdout, self.stderr
        );
        self
    }

    /// Panics unless the run succeeded.
    #[track_caller]
    pub fn ok(&self) -> &Self {
        self.expect_code(0)
    }
}

/// A temporary project folder with a manifest.
pub struct Project {
    pub dir: tempfile::TempDir,
    pub hf_home: tempfile::TempDir,
}

impl Project {
    /// A project whose `models.toml` is `manifest`.
    pub fn new(manifest: &str) -> Self {
        let p = Project {
            dir: tempfile::tempdir().expect("tempdir"),
            hf_home: tempfile::tempdir().expect("tempdir"),
        };
        p.write_manifest(manifest);
        p
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn write_manifest(&self, text: &str) {
        std::fs::write(self.path().join("models.toml"), text).expect("write models.toml");
    }

    pub fn lock_path(&self) -> PathBuf {
        self.path().join("models.lock")
    }

    pub fn lock_text(&self) -> String {
        std::fs::read_to_string(self.lock_path()).expect("read models.lock")
    }

    pub fn lock(&self) -> toml::Value {
        toml::from_str(&self.lock_text()).expect("models.lock is TOML")
    }

    /// The binary, run in the project folder with an environment free of the developer's own
    /// Hub settings (no token, `HF_HOME` in a temp folder) and fast retries.
    pub fn cmd(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_modelbake"));
        c.current_dir(self.path());
        for var in [
            "HF_TOKEN",
            "HUGGING_FACE_HUB_TOKEN",
            "HF_TOKEN_PATH",
            "HF_ENDPOINT",
            "MODELBAKE_HTTP_RETRIES",
            "MODELBAKE_LOG",
            "XDG_CACHE_HOME",
        ] {
            c.env_remove(var);
        }
        c.env("HF_HOME", self.hf_home.path())
            .env("MODELBAKE_HTTP_BACKOFF_MS", "5")
            .env("NO_COLOR", "1");
        c
    }

    pub fn run(&self, args: &[&str]) -> Run {
        run(self.cmd().args(args))
    }

    /// `modelbake lock --endpoint <emulator> <args>`.
    pub fn lock_with(&self, hub: &HubEmulator, args: &[&str]) -> Run {
        let endpoint = hub.endpoint();
        let mut all = vec!["lock", "--endpoint", endpoint.as_str()];
        all.extend_from_slice(args);
        self.run(&all)
    }
}

pub fn run(cmd: &mut Command) -> Run {
    let out = cmd.output().expect("run modelbake");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The `[[repo]]` table of a lock with this id.
pub fn locked_repo<'a>(lock: &'a toml::Value, id: &str) -> &'a toml::Value {
    lock["repo"]
        .as_array()
        .and_then(|a| a.iter().find(|r| r["id"].as_str() == Some(id)))
        .unwrap_or_else(|| panic!("{id} not in lock:\n{lock}"))
}

/// The `[[repo.file]]` entries of a locked repo, as (path, table).
pub fn locked_files(repo: &toml::Value) -> Vec<(String, toml::Value)> {
    repo["file"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|f| (f["path"].as_str().unwrap_or_default().to_owned(), f.clone()))
                .collect()
        })
        .unwrap_or_default()
}

/// A tool from Debian's packages, or `None` after a loud message (a failure under CI).
pub fn tool(name: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(name))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        let msg = format!("`{name}` is not installed (scripts/test installs it with apt)");
        if std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0") {
            panic!("{msg}");
        }
        eprintln!("\n!!! SKIPPED: {msg}\n");
    }
    found
}

/// Runs `cmd`, panicking with its output unless it succeeds; returns its stdout.
pub fn sh(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The Python of the venv `target/<venv>` (made by `scripts/setup-python`, which runs when the
/// venv is missing or `check` — a Python snippet exiting 0 when the right packages are there —
/// fails). Without it the test fails under CI naming `what`, and says loudly why it skipped
/// otherwise.
pub fn venv_python(venv: &str, check: &str, what: &str) -> Option<PathBuf> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let py = root.join("target").join(venv).join("bin/python");
    let ok = |py: &PathBuf| {
        Command::new(py)
            .args(["-c", check])
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if !ok(&py) {
        let setup = Command::new(root.join("scripts/setup-python")).status();
        if !setup.is_ok_and(|s| s.success()) || !ok(&py) {
            let msg = format!(
                "{what} is not available: scripts/setup-python failed to create target/{venv} (needs python3 and PyPI access)"
            );
            if std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0") {
                panic!("{msg}");
            }
            eprintln!("\n!!! SKIPPED: {msg}\n");
            return None;
        }
    }
    Some(py)
}

/// The venv's Python with huggingface_hub 2.x (and transformers 5).
pub fn python() -> Option<PathBuf> {
    venv_python(
        "pyenv",
        "import huggingface_hub as h, transformers, sys; sys.exit(0 if h.__version__.startswith('2.') else 1)",
        "Python huggingface_hub 2.x / transformers",
    )
}

/// A project locked against `hub`, with its own store and hub cache folders.
pub struct Fetched {
    pub project: Project,
    pub store: tempfile::TempDir,
    pub cache: tempfile::TempDir,
}

impl Fetched {
    /// Locks `manifest` against `hub` and fetches it into a fresh store.
    pub fn new(hub: &HubEmulator, manifest: &str) -> Self {
        let f = Fetched {
            project: Project::new(manifest),
            store: tempfile::tempdir().unwrap(),
            cache: tempfile::tempdir().unwrap(),
        };
        f.project.lock_with(hub, &[]).ok();
        hub.clear_requests();
        f
    }

    /// The hub cache folder (`.../hub`).
    pub fn hub_cache(&self) -> PathBuf {
        self.cache.path().join("hub")
    }

    /// The binary with this project's store.
    pub fn cmd(&self) -> Command {
        let mut c = self.project.cmd();
        c.env("MODELBAKE_STORE", self.store.path());
        c
    }

    pub fn fetch(&self, hub: &HubEmulator, args: &[&str]) -> Run {
        run(self
            .cmd()
            .args(["fetch", "--endpoint", &hub.endpoint()])
            .args(args))
    }

    pub fn export(&self, args: &[&str]) -> Run {
        run(self
            .cmd()
            .arg("export")
            .arg("--hub-cache")
            .arg(self.hub_cache())
            .args(args))
    }

    pub fn verify(&self, args: &[&str]) -> Run {
        run(self
            .cmd()
            .arg("verify")
            .arg("--hub-cache")
            .arg(self.hub_cache())
            .args(args))
    }

    /// The published blob of this sha256 in the store, if any.
    pub fn store_blob(&self, sha256: &str) -> PathBuf {
        self.store
            .path()
            .join("blobs/sha256")
            .join(&sha256[..2])
            .join(sha256)
    }
}

/// `fetch --json` against `hub`, which must succeed with every locked file of `acme/tiny`
/// coming from a mirror.
pub fn fetch_all_from_mirrors(f: &Fetched, hub: &HubEmulator) {
    let out = run(f
        .cmd()
        .args(["fetch", "--json", "--endpoint", &hub.endpoint()]));
    out.ok();
    let report: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let files = locked_files(locked_repo(&f.project.lock(), "acme/tiny")).len();
    assert_eq!(report["from_mirrors"], files, "{}", out.stdout);
}

/// The component built from the `plugins/` workspace with this artifact stem (e.g.
/// `mirror_url_template`, or `wasi_fs` for the wasm32-wasip2 fixtures). The workspace is built
/// once per test process with `modelbake plugin build` (cargo makes concurrent builds wait
/// for each other; outputs are replaced atomically). A build failure fails the test loudly.
pub fn plugin(stem: &str) -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    let dir = BUILT.get_or_init(|| {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let out = root.join("target/test-plugins");
        let build = |target: &str, packages: &[&str], sub: &str| {
            let mut c = Command::new(env!("CARGO_BIN_EXE_modelbake"));
            c.args(["-q", "plugin", "build", "--no-check", "--target", target, "--out"])
                .arg(out.join(sub))
                .arg(root.join("plugins"));
            for p in packages {
                c.args(["-p", p]);
            }
            let r = run(&mut c);
            assert_eq!(
                r.code, 0,
                "building the plugins for {target} failed (is the target installed? `rustup target add {target}`)\n{}",
                r.stderr
            );
        };
        build(
            "wasm32-unknown-unknown",
            &[
                "mirror-url-template",
                "mirror-cas",
                "policy-prefer-safetensors",
                "policy-size-budget",
                "pruner-keep-locked",
                "pruner-lru",
                "hostile",
                "hostile-policy",
            ],
            "unknown",
        );
        build(
            "wasm32-wasip2",
            &["wasi-fs", "wasi-sockets", "wasi-env"],
            "wasip2",
        );
        out
    });
    let sub = if stem.starts_with("wasi_") {
        "wasip2"
    } else {
        "unknown"
    };
    let path = dir.join(sub).join(format!("{stem}.wasm"));
    assert!(path.is_file(), "no plugin {}", path.display());
    path
}

/// Every published blob (its sha256) of the store at `store`, sorted.
pub fn store_blobs(store: &Path) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(store.join("blobs/sha256"))
        .into_iter()
        .flatten()
        .flatten()
        .flat_map(|d| {
            std::fs::read_dir(d.path())
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
        })
        .collect();
    out.sort();
    out
}
