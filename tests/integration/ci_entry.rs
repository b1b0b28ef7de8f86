//! The CI entry points: the GitHub Action (`action.yml`) and the GitLab component
//! (`templates/modelbake.yml`), through the scripts they run (`ci/install.sh`, `ci/run.sh`).
//! `tests/ci-emulator/ci_emulator.py` checks their YAML and runs their steps as the runners
//! would, with the environment a runner sets (`GITHUB_OUTPUT`, `RUNNER_ARCH`, `CI_REGISTRY`,
//! `CI_JOB_TOKEN`, ...), against a release folder made by `scripts/dist --check` and served on
//! 127.0.0.1, the Hub emulator and a Distribution registry that demands a password. A broken
//! input name, script path or output fails here, not in a user's pipeline.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

use crate::support::oci::Registry;
use crate::support::*;

const VERSION: &str = env!("CARGO_PKG_VERSION");
const X86_64: &str = "x86_64-unknown-linux-musl";
const AARCH64: &str = "aarch64-unknown-linux-musl";
const USER: &str = "ci-bot";
const PASSWORD: &str = "s3cret-Reg1stry-pa55";
const JOB_TOKEN: &str = "glcbt-64_JobTokenN0tForLogs";
const TINY: &str = "[[model]]\nid = \"acme/tiny\"\n";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// target/pyenv's Python, which has PyYAML (a dependency of transformers).
fn yaml_python() -> Option<PathBuf> {
    venv_python(
        "pyenv",
        "import yaml",
        "PyYAML (target/pyenv) for the CI entry checks",
    )
}

/// `ci_emulator.py ARGS` with `py`.
fn ci_emulator(py: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(py);
    c.arg(root().join("tests/ci-emulator/ci_emulator.py"))
        .args(args);
    c
}

/// A YAML file as JSON (every document), read by PyYAML.
fn yaml_json(py: &Path, file: &Path) -> serde_json::Value {
    let out = sh(Command::new(py).arg("-c").arg(
        "import json, sys, yaml; print(json.dumps(list(yaml.safe_load_all(open(sys.argv[1])))))",
    ).arg(file));
    serde_json::from_str(&out).unwrap()
}

/// Serves a folder over HTTP on 127.0.0.1 the way GitHub serves release assets
/// (`/releases/download/<tag>/<name>`), logging each request line.
struct FileServer {
    addr: String,
    log: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
}

impl FileServer {
    fn start(dir: &Path) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let log = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (dir, thread_log, thread_stop) = (dir.to_owned(), log.clone(), stop.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if thread_stop.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(stream) = stream {
                    Self::answer(stream, &dir, &thread_log);
                }
            }
        });
        FileServer { addr, log, stop }
    }

    fn answer(mut stream: TcpStream, dir: &Path, log: &Mutex<Vec<String>>) {
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") && head.len() < 16 << 10 {
            match stream.read(&mut byte) {
                Ok(1) => head.push(byte[0]),
                _ => return,
            }
        }
        let head = String::from_utf8_lossy(&head);
        let mut words = head.split_whitespace();
        let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
        log.lock().unwrap().push(format!("{method} {path}"));
        let file = path
            .strip_prefix("/releases/download/")
            .filter(|rest| !rest.split('/').any(|p| p == ".." || p.is_empty()))
            .map(|rest| dir.join(rest))
            .filter(|f| f.is_file());
        let response = match file {
            Some(f) if method == "GET" => {
                let body = std::fs::read(f).unwrap();
                let mut r = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                )
                .into_bytes();
                r.extend(body);
                r
            }
            _ => {
                b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_vec()
            }
        };
        let _ = stream.write_all(&response);
    }

    /// The base URL the installer takes (`MODELBAKE_RELEASE_URL`).
    fn base(&self) -> String {
        format!("http://{}/releases/download", self.addr)
    }

    fn requests(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for FileServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(&self.addr);
    }
}

/// A release as scripts/dist makes it, for both targets, in `<dir>/v<VERSION>/`, served. The
/// "binary" in each tarball is a tiny script running this build's modelbake (a debug binary
/// is hundreds of MB to gzip); what is tested is the download, the check and the install.
struct Release {
    dir: tempfile::TempDir,
    server: FileServer,
}

impl Release {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let wrapper = dir.path().join("modelbake-wrapper");
        std::fs::write(
            &wrapper,
            format!(
                "#!/bin/sh\nexec '{}' \"$@\"\n",
                env!("CARGO_BIN_EXE_modelbake")
            ),
        )
        .unwrap();
        sh(Command::new("chmod").arg("755").arg(&wrapper));
        let out = dir.path().join(format!("v{VERSION}"));
        for target in [X86_64, AARCH64] {
            sh(Command::new(root().join("scripts/dist"))
                .arg("--check")
                .arg("--binary")
                .arg(&wrapper)
                .args(["--target", target, "--out"])
                .arg(&out));
        }
        let server = FileServer::start(dir.path());
        Release { dir, server }
    }

    /// The folder holding the release's files.
    fn files(&self) -> PathBuf {
        self.dir.path().join(format!("v{VERSION}"))
    }

    fn tarball(&self, target: &str) -> PathBuf {
        self.files()
            .join(format!("modelbake-{VERSION}-{target}.tar.gz"))
    }
}

/// The environment a Linux runner gives a job, and nothing of this machine's own: `PATH`, a
/// fresh `HOME`, `RUNNER_TEMP`, `CI=true`; modelbake's test settings (its own `HF_HOME`, fast
/// retries) and a private auth file.
struct RunnerEnv {
    home: tempfile::TempDir,
    temp: tempfile::TempDir,
    hf_home: tempfile::TempDir,
}

impl RunnerEnv {
    fn new() -> Self {
        RunnerEnv {
            home: tempfile::tempdir().unwrap(),
            temp: tempfile::tempdir().unwrap(),
            hf_home: tempfile::tempdir().unwrap(),
        }
    }

    fn auth_file(&self) -> PathBuf {
        self.home.path().join("auth.json")
    }

    fn apply(&self, c: &mut Command) {
        c.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.home.path())
            .env("LANG", "C.UTF-8")
            .env("CI", "true")
            .env("TMPDIR", self.temp.path())
            .env("HF_HOME", self.hf_home.path())
            .env("REGISTRY_AUTH_FILE", self.auth_file())
            .env("MODELBAKE_HTTP_BACKOFF_MS", "5")
            .env("NO_COLOR", "1");
    }

    /// The variables a GitHub-hosted Linux x64 runner sets for a step.
    fn github(&self, c: &mut Command, workspace: &Path) {
        self.apply(c);
        c.env("GITHUB_ACTIONS", "true")
            .env("RUNNER_TEMP", self.temp.path())
            .env("GITHUB_WORKSPACE", workspace)
            .env("RUNNER_OS", "Linux")
            .env("RUNNER_ARCH", "X64")
            .current_dir(workspace);
    }
}

/// `ci/install.sh` as the action's install step runs it (GitHub's variables, the step's
/// inputs in `env`); its outcome and the `GITHUB_OUTPUT` it wrote.
fn install(runner: &RunnerEnv, release: &Release, extra: &[(&str, &str)]) -> (Run, String) {
    let output = runner.temp.path().join("install.output");
    let _ = std::fs::remove_file(&output);
    let mut c = Command::new("bash");
    c.arg(root().join("ci/install.sh"));
    runner.github(&mut c, runner.home.path());
    c.env("GITHUB_OUTPUT", &output)
        .env("GITHUB_PATH", runner.temp.path().join("install.path"))
        .env("MODELBAKE_VERSION", VERSION)
        .env("MODELBAKE_RELEASE_URL", release.server.base());
    for (k, v) in extra {
        c.env(k, v);
    }
    let r = run(&mut c);
    (r, std::fs::read_to_string(&output).unwrap_or_default())
}

/// `name=value` lines of a GITHUB_OUTPUT (or dotenv) file.
fn output_value(text: &str, name: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}=")))
        .map(str::to_owned)
}

#[test]
fn install_fetches_the_runner_arch_release_checks_it_and_puts_modelbake_on_path() {
    let release = Release::new();
    let runner = RunnerEnv::new();
    let (r, output) = install(&runner, &release, &[]);
    r.ok();
    let bin = PathBuf::from(output_value(&output, "bin").expect(&output));
    assert_eq!(
        bin,
        runner
            .temp
            .path()
            .join(format!("modelbake-{VERSION}/bin/modelbake"))
    );
    assert_eq!(output_value(&output, "version").as_deref(), Some(VERSION));
    let path = std::fs::read_to_string(runner.temp.path().join("install.path")).unwrap();
    assert_eq!(path.trim(), bin.parent().unwrap().to_str().unwrap());
    // The installed binary runs and is the pinned version.
    let v = run(Command::new(&bin).arg("--version"));
    v.ok();
    assert!(
        v.stdout.starts_with(&format!("modelbake {VERSION} (")),
        "{}",
        v.stdout
    );
    let base = format!("GET /releases/download/v{VERSION}");
    assert_eq!(
        release.server.requests(),
        [
            format!("{base}/SHA256SUMS"),
            format!("{base}/modelbake-{VERSION}-{X86_64}.tar.gz")
        ]
    );

    // An ARM64 runner gets the aarch64 tarball.
    let arm = RunnerEnv::new();
    let before = release.server.requests().len();
    let mut c = Command::new("bash");
    c.arg(root().join("ci/install.sh"));
    arm.github(&mut c, arm.home.path());
    c.env("RUNNER_ARCH", "ARM64")
        .env("MODELBAKE_VERSION", VERSION)
        .env("MODELBAKE_RELEASE_URL", release.server.base());
    run(&mut c).ok();
    assert_eq!(
        release.server.requests()[before..].last().unwrap(),
        &format!("{base}/modelbake-{VERSION}-{AARCH64}.tar.gz")
    );

    // A pinned sha256 that matches is accepted; one that does not is refused even though
    // SHA256SUMS agrees with the download.
    let right = sha256_hex(&std::fs::read(release.tarball(X86_64)).unwrap());
    let pinned = RunnerEnv::new();
    install(&pinned, &release, &[("MODELBAKE_SHA256", &right)])
        .0
        .ok();
    let wrong = RunnerEnv::new();
    let (r, output) = install(&wrong, &release, &[("MODELBAKE_SHA256", &"0".repeat(64))]);
    r.expect_code(1);
    assert!(
        r.stderr.contains("the sha256 input pins") && r.stderr.contains(&right),
        "{}",
        r.stderr
    );
    assert!(output.is_empty(), "{output}");
    assert!(
        !wrong
            .temp
            .path()
            .join(format!("modelbake-{VERSION}/bin/modelbake"))
            .exists()
    );
}

#[test]
fn install_refuses_a_tampered_or_unlisted_tarball_and_installs_nothing() {
    let release = Release::new();
    let tarball = release.tarball(X86_64);
    let listed = sha256_hex(&std::fs::read(&tarball).unwrap());
    // Another valid tarball of the same name, as a compromised mirror would serve.
    let mut bytes = std::fs::read(&tarball).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    std::fs::write(&tarball, &bytes).unwrap();
    let served = sha256_hex(&bytes);

    let runner = RunnerEnv::new();
    let (r, output) = install(&runner, &release, &[]);
    r.expect_code(1);
    assert!(
        r.stderr.contains("checksum mismatch")
            && r.stderr.contains(&listed)
            && r.stderr.contains(&served)
            && r.stderr.contains("Nothing was installed"),
        "{}",
        r.stderr
    );
    assert!(
        r.stdout
            .contains("::error title=modelbake install::checksum mismatch"),
        "a GitHub annotation: {}",
        r.stdout
    );
    assert!(output.is_empty(), "no outputs: {output}");
    assert!(
        !runner
            .temp
            .path()
            .join(format!("modelbake-{VERSION}"))
            .exists()
    );

    // A SHA256SUMS without a line for the tarball.
    let sums = release.files().join("SHA256SUMS");
    let text = std::fs::read_to_string(&sums).unwrap();
    let kept: String = text
        .lines()
        .filter(|l| !l.contains(X86_64))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_ne!(kept, text);
    std::fs::write(&sums, kept).unwrap();
    let (r, _) = install(&RunnerEnv::new(), &release, &[]);
    r.expect_code(1);
    assert!(
        r.stderr.contains(&format!(
            "has no line for modelbake-{VERSION}-{X86_64}.tar.gz"
        )),
        "{}",
        r.stderr
    );
}

#[test]
fn install_says_what_to_change_for_unsupported_runners_versions_and_urls() {
    let release = Release::new();
    let cases: [(&[(&str, &str)], &str); 6] = [
        (
            &[("RUNNER_OS", "macOS")],
            "this runner is macOS: run the job on a Linux runner",
        ),
        (
            &[("RUNNER_ARCH", "X86")],
            "no modelbake release for the X86 architecture",
        ),
        (
            &[("MODELBAKE_VERSION", "v0.1.0")],
            "'v0.1.0' is not a release version",
        ),
        (&[("MODELBAKE_VERSION", "")], "set the version input"),
        (
            &[("MODELBAKE_RELEASE_URL", "http://releases.example/download")],
            "is not https",
        ),
        (
            &[("MODELBAKE_VERSION", "9.9.9")],
            "is modelbake 9.9.9 released there?",
        ),
    ];
    for (env, message) in cases {
        let runner = RunnerEnv::new();
        let (r, output) = install(&runner, &release, env);
        r.expect_code(1);
        assert!(r.stderr.contains(message), "{env:?}: {}", r.stderr);
        assert!(output.is_empty(), "{env:?}: {output}");
    }
    // Only the 9.9.9 case got as far as asking the server.
    assert_eq!(
        release.server.requests(),
        ["GET /releases/download/v9.9.9/SHA256SUMS"]
    );
}

/// A Distribution registry demanding `user`/`password`.
fn password_registry(user: &str, password: &str) -> Option<Registry> {
    let (Some(bin), Some(htpasswd)) = (tool("docker-registry"), tool("htpasswd")) else {
        return None;
    };
    let users = sh(Command::new(htpasswd).args(["-Bbn", user, password]));
    Some(Registry::start_with(&bin, Some(&users)))
}

/// The raw manifest (or index) `image` points at, read with skopeo, and its digest.
fn registry_manifest(skopeo: &Path, creds: &str, image: &str) -> (serde_json::Value, String) {
    let out = Command::new(skopeo)
        .args(["inspect", "--raw", "--tls-verify=false", "--creds", creds])
        .arg(format!("docker://{image}"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        serde_json::from_slice(&out.stdout).unwrap(),
        format!("sha256:{}", sha256_hex(&out.stdout)),
    )
}

/// Runs the action with `inputs` in `workspace`; the emulator's outcome and its report.
fn run_action(
    py: &Path,
    runner: &RunnerEnv,
    workspace: &Path,
    cache: &Path,
    env: &[(&str, &str)],
    inputs: serde_json::Value,
) -> (Run, serde_json::Value) {
    let mut c = ci_emulator(
        py,
        &[
            "run-action",
            root().join("action.yml").to_str().unwrap(),
            &inputs.to_string(),
        ],
    );
    runner.github(&mut c, workspace);
    c.env("CI_EMULATOR_CACHE", cache);
    for (k, v) in env {
        c.env(k, v);
    }
    let r = run(&mut c);
    let report = serde_json::from_str(&r.stdout)
        .unwrap_or_else(|e| panic!("{e}\n--- stdout\n{}\n--- stderr\n{}", r.stdout, r.stderr));
    (r, report)
}

fn step<'a>(report: &'a serde_json::Value, id: &str) -> &'a serde_json::Value {
    report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == id)
        .unwrap_or_else(|| panic!("no step {id}: {report}"))
}

#[test]
fn the_action_logs_in_bakes_pushes_and_outputs_the_digest_and_the_lock_sha256() {
    let (Some(py), Some(skopeo)) = (yaml_python(), tool("skopeo")) else {
        return;
    };
    let Some(registry) = password_registry(USER, PASSWORD) else {
        return;
    };
    let hub = emulator();
    let release = Release::new();
    let project = Project::new(TINY);
    project.lock_with(&hub, &[]).ok();
    let lock_before = std::fs::read(project.lock_path()).unwrap();
    let runner = RunnerEnv::new();
    let cache = tempfile::tempdir().unwrap();
    let image = format!("{}/acme/app:v1", registry.addr);
    let pwned = project.path().join("PWNED");
    let commands = format!(
        "lock --locked\n\n# the files, then the image\nfetch\nmodelbake bake --insecure --no-base --label 'org.opencontainers.image.title=tiny model' --label \"x=$(touch {})\" --push {image}\n",
        pwned.display()
    );
    let inputs = serde_json::json!({
        "version": VERSION,
        "release-url": release.server.base(),
        "run": commands,
        "store": "~/store",
        "cache": "true",
        "registry": registry.addr,
        "registry-username": USER,
        "registry-password": PASSWORD,
        "insecure-registry": "true",
    });
    let endpoint = hub.endpoint();
    let env = [("HF_ENDPOINT", endpoint.as_str())];
    let (r, report) = run_action(&py, &runner, project.path(), cache.path(), &env, inputs);
    assert_eq!(report["exit"], 0, "{}", r.stderr);

    // The outputs: the digest of what the registry holds under the tag, the lock's sha256.
    let (manifest, digest) = registry_manifest(&skopeo, &format!("{USER}:{PASSWORD}"), &image);
    assert_eq!(
        manifest["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    let lock_sha256 = sha256_hex(&lock_before);
    assert_eq!(report["outputs"]["image-digest"], digest.as_str());
    assert_eq!(report["outputs"]["lock-sha256"], lock_sha256.as_str());
    let written = step(&report, "run")["github_output"].as_str().unwrap();
    assert_eq!(
        written,
        format!("image-digest={digest}\nlock-sha256={lock_sha256}\n"),
        "the run step's GITHUB_OUTPUT"
    );
    assert_eq!(std::fs::read(project.lock_path()).unwrap(), lock_before);
    let bin = report["outputs"]["modelbake"].as_str().unwrap();
    assert!(
        bin.starts_with(runner.temp.path().to_str().unwrap()),
        "{bin}"
    );
    assert!(
        report["path"]
            .as_str()
            .unwrap()
            .starts_with(Path::new(bin).parent().unwrap().to_str().unwrap()),
        "modelbake is on PATH for later steps"
    );

    // Each quoted word reached bake as one argument, and nothing was evaluated.
    let config = sh(Command::new(&skopeo)
        .args(["inspect", "--config", "--tls-verify=false", "--creds"])
        .arg(format!("{USER}:{PASSWORD}"))
        .arg(format!("docker://{image}")));
    let config: serde_json::Value = serde_json::from_str(&config).unwrap();
    let labels = &config["config"]["Labels"];
    assert_eq!(labels["org.opencontainers.image.title"], "tiny model");
    assert_eq!(labels["x"], format!("$(touch {})", pwned.display()));
    assert!(!pwned.exists());

    // The password was masked before anything could print it, and never printed.
    assert_eq!(report["masks"], serde_json::json!([PASSWORD]));
    assert!(!r.stderr.contains(PASSWORD), "{}", r.stderr);
    // Logged out afterwards: the auth file keeps no entry for the registry.
    let auth = std::fs::read_to_string(runner.auth_file()).unwrap_or_default();
    assert!(!auth.contains(&registry.addr), "{auth}");

    // The store went where the cache steps save it from, and was saved under the lock's key.
    let store = runner.home.path().join("store");
    assert!(
        !store_blobs(&store).is_empty(),
        "MODELBAKE_STORE is ~/store"
    );
    assert_eq!(step(&report, "restore")["outputs"]["cache-hit"], "false");
    let save = step(&report, "save");
    assert_eq!(save["conclusion"], "success");
    assert_eq!(save["with"]["path"], "~/store");
    let key = save["with"]["key"].as_str().unwrap();
    assert!(
        key.starts_with("modelbake-store-v1-") && key.len() == "modelbake-store-v1-".len() + 64,
        "keyed by the lock's hash: {key}"
    );

    // A fresh runner restores the store from the cache: the files are there without the Hub.
    let second = RunnerEnv::new();
    hub.clear_requests();
    let inputs = serde_json::json!({
        "release-url": release.server.base(),
        "run": "fetch --offline",
        "store": "~/store",
        "cache": "true",
    });
    let (r, report) = run_action(&py, &second, project.path(), cache.path(), &env, inputs);
    assert_eq!(report["exit"], 0, "{}", r.stderr);
    assert_eq!(step(&report, "restore")["outputs"]["cache-hit"], "true");
    assert_eq!(step(&report, "save")["conclusion"], "skipped");
    assert!(hub.requests().is_empty(), "{:?}", hub.requests());
    assert_eq!(report["outputs"]["image-digest"], "");
    assert_eq!(report["outputs"]["lock-sha256"], lock_sha256.as_str());
    assert!(report["masks"].as_array().unwrap().is_empty());
}

#[test]
fn a_failing_command_fails_the_action_with_its_exit_code_and_no_outputs() {
    let Some(py) = yaml_python() else {
        return;
    };
    let hub = emulator();
    let release = Release::new();
    let project = Project::new(TINY);
    project.lock_with(&hub, &[]).ok();
    // The manifest changes after locking: `lock --locked` exits 3 and nothing after it runs.
    project.write_manifest("[[model]]\nid = \"acme/tiny\"\ninclude = [\"*.json\"]\n");
    let runner = RunnerEnv::new();
    let cache = tempfile::tempdir().unwrap();
    let inputs = serde_json::json!({
        "release-url": release.server.base(),
        "run": "lock --locked\nbake --no-base --oci out",
    });
    let (r, report) = run_action(&py, &runner, project.path(), cache.path(), &[], inputs);
    assert_eq!(report["exit"], 3, "{}", r.stderr);
    let run_step = step(&report, "run");
    assert_eq!(run_step["conclusion"], "failure");
    assert_eq!(run_step["github_output"], "");
    assert!(!project.path().join("out").exists(), "bake did not run");
    assert!(
        report["annotations"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["level"] == "error"
                && a["message"]
                    .as_str()
                    .unwrap()
                    .contains("modelbake lock --locked failed with exit code 3")),
        "{report}"
    );
    // cache is off by default: neither cache step ran.
    assert_eq!(step(&report, "restore")["conclusion"], "skipped");
    assert_eq!(step(&report, "save")["conclusion"], "skipped");

    // An unmatched quote is refused before anything runs (the stale lock's exit code 3
    // would say that the first line ran), naming the line.
    let inputs = serde_json::json!({
        "release-url": release.server.base(),
        "run": "lock --locked\nbake --label 'unterminated",
    });
    let (r, report) = run_action(&py, &runner, project.path(), cache.path(), &[], inputs);
    assert_eq!(report["exit"], 1, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("line 2 of run: cannot split 'bake --label 'unterminated' into words"),
        "{}",
        r.stderr
    );
}

/// Runs the GitLab component's job with `inputs`, in `project` as `$CI_PROJECT_DIR`, with the
/// predefined variables of a pipeline on `registry`.
fn run_component(
    py: &Path,
    runner: &RunnerEnv,
    project: &Path,
    registry: &str,
    env: &[(&str, &str)],
    inputs: serde_json::Value,
) -> (Run, serde_json::Value) {
    let mut c = ci_emulator(
        py,
        &[
            "run-component",
            root().join("templates/modelbake.yml").to_str().unwrap(),
            &inputs.to_string(),
        ],
    );
    runner.apply(&mut c);
    c.current_dir(project)
        .env("GITLAB_CI", "true")
        .env("CI_PROJECT_DIR", project)
        .env("CI_REGISTRY", registry)
        .env("CI_REGISTRY_IMAGE", format!("{registry}/group/project"))
        .env("CI_REGISTRY_USER", "gitlab-ci-token")
        .env("CI_JOB_TOKEN", JOB_TOKEN)
        .env("CI_REGISTRY_PASSWORD", JOB_TOKEN)
        .env("CI_COMMIT_SHORT_SHA", "1a2b3c4d");
    for (k, v) in env {
        c.env(k, v);
    }
    let r = run(&mut c);
    let report = serde_json::from_str(&r.stdout)
        .unwrap_or_else(|e| panic!("{e}\n--- stdout\n{}\n--- stderr\n{}", r.stdout, r.stderr));
    (r, report)
}

#[test]
fn the_gitlab_job_logs_in_with_the_job_token_bakes_and_writes_the_dotenv_report() {
    let (Some(py), Some(skopeo)) = (yaml_python(), tool("skopeo")) else {
        return;
    };
    let Some(registry) = password_registry("gitlab-ci-token", JOB_TOKEN) else {
        return;
    };
    let hub = emulator();
    let release = Release::new();
    let project = Project::new(TINY);
    project.lock_with(&hub, &[]).ok();
    let lock_sha256 = sha256_hex(&std::fs::read(project.lock_path()).unwrap());
    let runner = RunnerEnv::new();
    let endpoint = hub.endpoint();
    let env = [("HF_ENDPOINT", endpoint.as_str())];
    let inputs = serde_json::json!({
        "release-url": release.server.base(),
        "insecure-registry": true,
        "run": "lock --locked\nfetch --no-fsync\nbake --insecure --layout files --no-base --platform linux/amd64,linux/arm64 --push $CI_REGISTRY_IMAGE/models:$CI_COMMIT_SHORT_SHA",
    });
    let (r, report) = run_component(&py, &runner, project.path(), &registry.addr, &env, inputs);
    assert_eq!(report["exit"], 0, "{}", r.stderr);

    // GitLab expanded the variables in `run`; the index the tag points at is the digest.
    let image = format!("{}/group/project/models:1a2b3c4d", registry.addr);
    let (index, digest) =
        registry_manifest(&skopeo, &format!("gitlab-ci-token:{JOB_TOKEN}"), &image);
    assert_eq!(index["manifests"].as_array().unwrap().len(), 2, "{index}");
    let dotenv = &report["dotenv"];
    assert_eq!(
        dotenv["MODELBAKE_IMAGE_DIGEST"],
        digest.as_str(),
        "{report}"
    );
    assert_eq!(dotenv["MODELBAKE_LOCK_SHA256"], lock_sha256.as_str());
    assert!(!r.stderr.contains(JOB_TOKEN), "{}", r.stderr);
    let auth = std::fs::read_to_string(runner.auth_file()).unwrap_or_default();
    assert!(!auth.contains(&registry.addr), "logged out: {auth}");

    // The defaults: this release, the store where the cache keeps it, keyed by the lock.
    let vars = &report["variables"];
    assert_eq!(vars["MODELBAKE_VERSION"], VERSION);
    assert_eq!(report["stage"], "build");
    assert_eq!(
        report["cache"]["key"]["files"],
        serde_json::json!(["models.lock"])
    );
    assert_eq!(report["cache"]["policy"], "pull-push");
    let cached = project
        .path()
        .join(report["cache"]["paths"][0].as_str().unwrap());
    assert_eq!(Path::new(vars["MODELBAKE_STORE"].as_str().unwrap()), cached);
    assert!(
        !store_blobs(&cached).is_empty(),
        "the store is in the cached folder"
    );

    // registry-login: false logs in nowhere (login asks GET /v2/ first).
    let before = registry.requests().len();
    let inputs = serde_json::json!({
        "release-url": release.server.base(),
        "registry-login": false,
        "run": "lock --locked",
    });
    let (r, report) = run_component(&py, &runner, project.path(), &registry.addr, &env, inputs);
    assert_eq!(report["exit"], 0, "{}", r.stderr);
    assert_eq!(
        registry.requests().len(),
        before,
        "{:?}",
        registry.requests()
    );
    // No bake, no digest: the dotenv report leaves out what has no value.
    assert_eq!(
        report["dotenv"],
        serde_json::json!({"MODELBAKE_LOCK_SHA256": lock_sha256})
    );
}

#[test]
fn the_action_and_the_component_pass_their_checks_and_pin_this_release() {
    let Some(py) = yaml_python() else {
        return;
    };
    let action = root().join("action.yml");
    let template = root().join("templates/modelbake.yml");
    run(&mut ci_emulator(
        &py,
        &["check-action", action.to_str().unwrap()],
    ))
    .ok();
    run(&mut ci_emulator(
        &py,
        &["check-component", template.to_str().unwrap()],
    ))
    .ok();
    let synced = run(Command::new(root().join("scripts/gitlab-component")).arg("--check"));
    synced.ok();

    // Both default to this version and to the installer's own release URL.
    let install = std::fs::read_to_string(root().join("ci/install.sh")).unwrap();
    let url = install
        .lines()
        .find_map(|l| l.strip_prefix("default_release_url="))
        .unwrap();
    let a = yaml_json(&py, &action);
    assert_eq!(a[0]["inputs"]["version"]["default"], VERSION);
    assert_eq!(a[0]["inputs"]["release-url"]["default"], url);
    let c = yaml_json(&py, &template);
    assert_eq!(c[0]["spec"]["inputs"]["version"]["default"], VERSION);
    assert_eq!(c[0]["spec"]["inputs"]["release-url"]["default"], url);

    // The README's workflows use only declared inputs, and pin this release.
    let readme = run(&mut ci_emulator(
        &py,
        &[
            "check-readme",
            root().join("README.md").to_str().unwrap(),
            action.to_str().unwrap(),
            template.to_str().unwrap(),
        ],
    ));
    readme.ok();
    let pins: Vec<String> = serde_json::from_str(&readme.stdout).unwrap();
    assert_eq!(pins.len(), 2, "{pins:?}");
    assert!(
        pins[0].ends_with(&format!("/modelbake@v{VERSION}")),
        "{pins:?}"
    );
    assert!(
        pins[1].ends_with(&format!("/modelbake@{VERSION}")),
        "{pins:?}"
    );
}

/// A copy of the action or component files in a temp folder, with `from` replaced by `to` in
/// `file` (which must change), checked; the problems the check reports.
fn broken_copy(py: &Path, file: &str, from: &str, to: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    for f in [
        "action.yml",
        "templates/modelbake.yml",
        "ci/install.sh",
        "ci/run.sh",
    ] {
        let dest = dir.path().join(f);
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        std::fs::copy(root().join(f), dest).unwrap();
    }
    let path = dir.path().join(file);
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains(from), "{file} has no {from:?}");
    std::fs::write(&path, text.replacen(from, to, 1)).unwrap();
    let (verb, checked) = if file == "action.yml" {
        ("check-action", "action.yml")
    } else {
        ("check-component", "templates/modelbake.yml")
    };
    let r = run(&mut ci_emulator(
        py,
        &[verb, dir.path().join(checked).to_str().unwrap()],
    ));
    assert_eq!(
        r.code, 1,
        "{file}: {from} -> {to} passed the check: {}",
        r.stdout
    );
    r.stderr
}

#[test]
fn the_checks_refuse_a_missing_input_script_variable_or_stale_copy() {
    let Some(py) = yaml_python() else {
        return;
    };
    let cases = [
        (
            "action.yml",
            "${{ inputs.release-url }}",
            "${{ inputs.release-ur }}",
            "`inputs.release-ur` references an input that does not exist",
        ),
        (
            "action.yml",
            "if: inputs.cache == 'true'",
            "if: inputs.use-cache == 'true'",
            "`inputs.use-cache` references an input that does not exist",
        ),
        (
            "action.yml",
            "$GITHUB_ACTION_PATH/ci/run.sh",
            "$GITHUB_ACTION_PATH/ci/runner.sh",
            "runs ci/runner.sh, a script that does not exist",
        ),
        (
            "action.yml",
            "MODELBAKE_SHA256:",
            "MODELBAKE_SHA_256:",
            "sets MODELBAKE_SHA_256, which ci/install.sh never reads",
        ),
        (
            "action.yml",
            "steps.run.outputs.image-digest",
            "steps.run.outputs.digest",
            "the scripts of step `run` never write `digest=`",
        ),
        (
            "action.yml",
            "run: bash \"$GITHUB_ACTION_PATH/ci/install.sh\"",
            "run: bash \"$GITHUB_ACTION_PATH/ci/install.sh\" ${{ inputs.version }}",
            "holds a ${{ }} expression",
        ),
        (
            "templates/modelbake.yml",
            "$[[ inputs.stage ]]",
            "$[[ inputs.job-stage ]]",
            "`$[[ inputs.job-stage ]]` references an input that does not exist",
        ),
        (
            "templates/modelbake.yml",
            "bash \"$MODELBAKE_HOME/ci/run.sh\"",
            "bash \"$MODELBAKE_HOME/ci/runner.sh\"",
            "runs ci/runner.sh, a script that does not exist in the job",
        ),
        (
            "templates/modelbake.yml",
            "MODELBAKE_LOCK: $[[ inputs.lock ]]",
            "MODELBAKE_LOCKFILE: $[[ inputs.lock ]]",
            "sets MODELBAKE_LOCKFILE, which no ci/ script reads",
        ),
        (
            "templates/modelbake.yml",
            "- .modelbake/store/",
            "- .modelbake/cache/",
            "cache paths ['.modelbake/cache/'] are not MODELBAKE_STORE",
        ),
        (
            "ci/run.sh",
            "set -euo pipefail",
            "set -eu",
            "job modelbake carries an old copy of ci/run.sh",
        ),
    ];
    for (file, from, to, message) in cases {
        let problems = broken_copy(&py, file, from, to);
        assert!(
            problems.contains(message),
            "{file}: {from} -> {to}: expected {message:?} in\n{problems}"
        );
    }
}

#[test]
fn the_ci_scripts_and_the_job_script_are_shellcheck_clean() {
    let (Some(py), Some(shellcheck)) = (yaml_python(), tool("shellcheck")) else {
        return;
    };
    run(Command::new(&shellcheck)
        .arg(root().join("ci/install.sh"))
        .arg(root().join("ci/run.sh")))
    .ok();
    // The job's script as the runner hands it to bash, inputs filled in.
    let c = yaml_json(&py, &root().join("templates/modelbake.yml"));
    let job = &c[1]["modelbake"];
    let script: Vec<&str> = job["script"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    let interpolation = regex::Regex::new(r"\$\[\[[^\]]*\]\]").unwrap();
    let text = format!(
        "#!/usr/bin/env bash\nset -eo pipefail\n{}\n",
        interpolation.replace_all(&script.join("\n"), regex::NoExpand("$INPUT"))
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("job.sh");
    std::fs::write(&file, text).unwrap();
    // The job's variables come from GitLab, not the script.
    run(Command::new(&shellcheck).args(["-e", "SC2154"]).arg(&file)).ok();
}
