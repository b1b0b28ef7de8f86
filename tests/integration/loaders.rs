//! Baked models are where every loader looks (docs/loaders.md): bases that set their own cache
//! variables get them pointed at the baked cache, in place and with one warning each; the real
//! huggingface_hub, computing its cache from the image's `Env`, loads the snapshot offline from
//! the unpacked image as the image's user; `verify --oci` rejects an image whose `Env` sends
//! loaders elsewhere.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use hub_emulator::Kind;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::support::oci::{layout_config, replace_layout_config};
use crate::support::*;

const TINY: &str = "[[model]]\nid = \"acme/tiny\"\n";
const HUB_CACHE: &str = "/root/.cache/huggingface/hub";
/// Every variable that can send a loader to a cache of its own (docs/loaders.md).
const REDIRECTS: &[&str] = &[
    "HF_HUB_CACHE",
    "HUGGINGFACE_HUB_CACHE",
    "TRANSFORMERS_CACHE",
    "PYTORCH_TRANSFORMERS_CACHE",
    "PYTORCH_PRETRAINED_BERT_CACHE",
    "SENTENCE_TRANSFORMERS_HOME",
];

fn digest_of(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// A one-layer base layout written byte by byte, tagged `base`: an empty tar layer and a config
/// with `env` and `user`.
fn base_layout(dir: &Path, env: &[&str], user: &str) {
    let blobs = dir.join("blobs/sha256");
    fs::create_dir_all(&blobs).unwrap();
    let put = |bytes: &[u8]| {
        let d = digest_of(bytes);
        fs::write(blobs.join(&d[7..]), bytes).unwrap();
        d
    };
    let layer = vec![0u8; 1024]; // an empty tar archive
    let layer_digest = put(&layer);
    let config = serde_json::to_vec(&json!({
        "architecture": "amd64",
        "os": "linux",
        "config": { "Env": env, "User": user, "Cmd": ["/bin/sh"] },
        "rootfs": { "type": "layers", "diff_ids": [layer_digest] },
    }))
    .unwrap();
    let config_digest = put(&config);
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": { "mediaType": "application/vnd.oci.image.config.v1+json", "size": config.len(), "digest": config_digest },
        "layers": [{ "mediaType": "application/vnd.oci.image.layer.v1.tar", "size": layer.len(), "digest": layer_digest }],
    }))
    .unwrap();
    let manifest_digest = put(&manifest);
    fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    fs::write(
        dir.join("index.json"),
        serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "manifests": [{
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "size": manifest.len(),
                "digest": manifest_digest,
                "annotations": { "org.opencontainers.image.ref.name": "base" },
            }],
        }))
        .unwrap(),
    )
    .unwrap();
}

fn env_of(config: &Value) -> Vec<String> {
    config["config"]["Env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect()
}

/// Bakes `TINY` onto a base with `env` and `user`; returns (the bake's stderr, its JSON report,
/// the image's Env, the layout).
fn bake_on(
    f: &Fetched,
    work: &Path,
    env: &[&str],
    user: &str,
) -> (String, Value, Vec<String>, PathBuf) {
    let base = work.join("base");
    base_layout(&base, env, user);
    let out = work.join("image");
    let r = run(f
        .cmd()
        .args(["bake", "--json", "--tag", "t", "--base"])
        .arg(format!("oci:{}:base", base.display()))
        .arg("--oci")
        .arg(&out));
    r.ok();
    let report: Value = serde_json::from_str(&r.stdout).unwrap();
    let image_env = env_of(&layout_config(&out));
    (r.stderr.clone(), report, image_env, out)
}

/// Each base: its Env, its User, and the variables bake must correct.
const BASES: &[(&[&str], &str, &[&str])] = &[
    (
        &["PATH=/usr/bin:/bin", "HUGGINGFACE_HUB_CACHE=/data"],
        "",
        &["HUGGINGFACE_HUB_CACHE"],
    ),
    (
        &[
            "HF_HUB_CACHE=/srv/cache",
            "PATH=/usr/bin:/bin",
            "TRANSFORMERS_CACHE=/models",
        ],
        "0:0",
        &["HF_HUB_CACHE", "TRANSFORMERS_CACHE"],
    ),
    (
        &[
            "HF_HOME=/old",
            "SENTENCE_TRANSFORMERS_HOME=/st",
            "HOME=/home/app",
        ],
        "65534:65534",
        &["SENTENCE_TRANSFORMERS_HOME"],
    ),
];

#[test]
fn bake_points_base_cache_variables_at_the_baked_cache_in_place_with_one_warning_each() {
    let hub = emulator();
    let f = Fetched::new(&hub, TINY);
    f.fetch(&hub, &[]).ok();
    for (env, user, fixed) in BASES {
        let work = tempfile::tempdir().unwrap();
        let (stderr, report, image_env, out) = bake_on(&f, work.path(), env, user);
        // Same position, no duplicate, the baked cache named.
        for (i, entry) in env.iter().enumerate() {
            let (name, _) = entry.split_once('=').unwrap();
            if name == "HF_HOME" {
                continue; // replaced at the end, as before
            }
            let want = if fixed.contains(&name) {
                format!("{name}={HUB_CACHE}")
            } else {
                (*entry).to_owned()
            };
            let shift = env[..i]
                .iter()
                .filter(|e| e.starts_with("HF_HOME="))
                .count();
            assert_eq!(image_env[i - shift], want, "{image_env:?}");
            let count = image_env
                .iter()
                .filter(|e| e.starts_with(&format!("{name}=")))
                .count();
            assert_eq!(count, 1, "{name} duplicated: {image_env:?}");
        }
        assert!(image_env.contains(&"HF_HOME=/root/.cache/huggingface".to_owned()));
        assert!(image_env.contains(&"HF_HUB_OFFLINE=1".to_owned()));
        let corrected = report["env_corrected"].as_array().unwrap();
        assert_eq!(corrected.len(), fixed.len(), "{report}");
        for name in *fixed {
            let old = env
                .iter()
                .find_map(|e| e.strip_prefix(&format!("{name}=")))
                .unwrap();
            let warning = format!("warning: the base image sets {name}={old},");
            assert_eq!(stderr.matches(&warning).count(), 1, "{stderr}");
            assert!(
                corrected
                    .iter()
                    .any(|c| c["variable"] == *name && c["old"] == old && c["new"] == HUB_CACHE),
                "{report}"
            );
        }
        assert_eq!(
            stderr.matches("warning: the base image sets").count(),
            fixed.len()
        );
        run(f
            .cmd()
            .args(["verify", "--oci"])
            .arg(&out)
            .args(["--tag", "t"]))
        .ok();
    }
}

#[test]
fn a_plain_base_keeps_its_env_and_gets_no_warning() {
    let hub = emulator();
    let f = Fetched::new(&hub, TINY);
    f.fetch(&hub, &[]).ok();
    let work = tempfile::tempdir().unwrap();
    let (stderr, report, image_env, _) = bake_on(
        &f,
        work.path(),
        &[
            "PATH=/usr/bin:/bin",
            "HF_HUB_CACHE=/root/.cache/huggingface/hub/",
        ],
        "",
    );
    assert!(!stderr.contains("warning"), "{stderr}");
    assert_eq!(report["env_corrected"], json!([]));
    assert_eq!(
        image_env,
        [
            "PATH=/usr/bin:/bin",
            "HF_HUB_CACHE=/root/.cache/huggingface/hub/",
            "HF_HOME=/root/.cache/huggingface",
            "HF_HUB_OFFLINE=1"
        ]
    );
}

/// One base baked and unpacked with umoci.
struct Unpacked {
    work: tempfile::TempDir,
    rootfs: PathBuf,
    image_env: Vec<String>,
    user: &'static str,
}

fn unpack(f: &Fetched, umoci: &Path, env: &[&str], user: &'static str) -> Unpacked {
    let work = tempfile::tempdir().unwrap();
    fs::set_permissions(work.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let (_, _, image_env, out) = bake_on(f, work.path(), env, user);
    let bundle = work.path().join("bundle");
    sh(Command::new(umoci)
        .args(["unpack", "--image", &format!("{}:t", out.display())])
        .arg(&bundle));
    fs::set_permissions(&bundle, fs::Permissions::from_mode(0o755)).unwrap();
    Unpacked {
        rootfs: bundle.join("rootfs"),
        work,
        image_env,
        user,
    }
}

impl Unpacked {
    /// `py -c script args…` as the image's user with exactly the image's Env, absolute paths
    /// moved under the rootfs, `HOME` a fresh folder.
    fn python(&self, py: &Path, script: &str, args: &[&str]) -> Value {
        let home = self.work.path().join("home");
        fs::create_dir_all(&home).unwrap();
        fs::set_permissions(&home, fs::Permissions::from_mode(0o777)).unwrap();
        let (uid, gid) = match self.user.split_once(':') {
            Some((u, g)) if !u.is_empty() => (u, g),
            _ => ("0", "0"),
        };
        let mut cmd = Command::new("setpriv");
        cmd.arg(format!("--reuid={uid}"))
            .arg(format!("--regid={gid}"))
            .arg("--clear-groups")
            .arg(py)
            .args(["-c", script])
            .args(args)
            .env_clear()
            .env("HOME", &home)
            .env("HF_ENDPOINT", "http://127.0.0.1:9");
        for entry in &self.image_env {
            let (k, v) = entry.split_once('=').unwrap();
            if k == "PATH" || k == "HOME" {
                continue;
            }
            let v = match v.strip_prefix('/') {
                Some(rest) => self.rootfs.join(rest).display().to_string(),
                None => v.to_owned(),
            };
            cmd.env(k, v);
        }
        serde_json::from_str(&sh(&mut cmd)).unwrap()
    }

    fn hub_cache(&self) -> PathBuf {
        self.rootfs.join(&HUB_CACHE[1..])
    }
}

/// Python with exactly the image's Env, as the image's user: huggingface_hub's own cache path,
/// `snapshot_download` offline, and every cache variable left in the Env holding the snapshot.
#[test]
fn python_finds_the_snapshot_where_the_image_env_points_it() {
    let Some(umoci) = tool("umoci") else { return };
    let Some(py) = python() else { return };
    let hub = emulator();
    let f = Fetched::new(&hub, TINY);
    f.fetch(&hub, &[]).ok();
    let commit = hub.commit_of(Kind::Model, "acme/tiny", "main").unwrap();
    let script = r#"
import json, os, sys
from huggingface_hub import constants, snapshot_download
commit = sys.argv[1]
root = snapshot_download("acme/tiny", local_files_only=True)
others = {}
for var in sys.argv[2:]:
    if var in os.environ:
        others[var] = os.path.isdir(os.path.join(os.environ[var], "models--acme--tiny", "snapshots", commit))
print(json.dumps({"cache": constants.HF_HUB_CACHE, "offline": constants.HF_HUB_OFFLINE, "root": root, "others": others}))
"#;
    for (env, user, _) in BASES {
        let u = unpack(&f, &umoci, env, user);
        let args: Vec<&str> = std::iter::once(commit.as_str())
            .chain(REDIRECTS.iter().copied())
            .collect();
        let got = u.python(&py, script, &args);
        let cache = u.hub_cache();
        assert_eq!(got["cache"], json!(cache.display().to_string()), "{env:?}");
        assert_eq!(got["offline"], json!(true));
        assert_eq!(
            got["root"],
            json!(
                cache
                    .join(format!("models--acme--tiny/snapshots/{commit}"))
                    .display()
                    .to_string()
            )
        );
        for (var, found) in got["others"].as_object().unwrap() {
            assert_eq!(found, &json!(true), "{var} in {env:?}");
        }
    }
}

/// The venv with transformers 4.x (`scripts/requirements-tf4.txt`, which brings
/// huggingface_hub 0.x).
fn python_transformers4() -> Option<PathBuf> {
    venv_python(
        "pyenv-tf4",
        "import transformers, sys; sys.exit(0 if transformers.__version__.startswith('4.') else 1)",
        "transformers 4.x",
    )
}

/// transformers 4.x, reading `TRANSFORMERS_CACHE` and its older names first, resolves to the
/// baked cache and loads a file from it offline, as the image's user.
#[test]
fn transformers_4_resolves_its_cache_to_the_baked_one() {
    let Some(umoci) = tool("umoci") else { return };
    let Some(py) = python_transformers4() else {
        return;
    };
    let hub = emulator();
    let f = Fetched::new(&hub, TINY);
    f.fetch(&hub, &[]).ok();
    let script = r#"
import json
from transformers.utils import hub
path = hub.cached_file("acme/tiny", "config.json", local_files_only=True)
print(json.dumps({"cache": hub.TRANSFORMERS_CACHE, "path": path}))
"#;
    let extra: &[&str] = &[
        "PATH=/usr/bin:/bin",
        "PYTORCH_TRANSFORMERS_CACHE=/p",
        "PYTORCH_PRETRAINED_BERT_CACHE=/b",
    ];
    for (env, user) in [(BASES[1].0, BASES[1].1), (extra, "65534:65534")] {
        let u = unpack(&f, &umoci, env, user);
        let got = u.python(&py, script, &[]);
        let cache = u.hub_cache().display().to_string();
        assert_eq!(got["cache"], json!(cache), "{env:?}");
        assert!(
            got["path"].as_str().unwrap().starts_with(&cache),
            "{got} {env:?}"
        );
    }
}

#[test]
fn verify_oci_fails_when_the_env_points_loaders_elsewhere() {
    let hub = emulator();
    let f = Fetched::new(&hub, TINY);
    f.fetch(&hub, &[]).ok();
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("image");
    run(f.cmd().arg("bake").arg("--oci").arg(&out)).ok();
    let verify = || run(f.cmd().args(["verify", "--json", "--oci"]).arg(&out));
    verify().ok();
    let mut config = layout_config(&out);
    let mut env = env_of(&config);
    env.retain(|e| !e.starts_with("HF_HUB_OFFLINE="));
    env.insert(0, "HUGGINGFACE_HUB_CACHE=/data".to_owned());
    env.push("SENTENCE_TRANSFORMERS_HOME=/st".to_owned());
    config["config"]["Env"] = json!(env);
    replace_layout_config(&out, &config);
    let r = verify();
    assert_ne!(r.code, 0, "{}", r.stderr);
    let report: Value = serde_json::from_str(&r.stdout).unwrap();
    let problems = report["problems"].as_array().unwrap();
    let loader = |name: &str| {
        problems
            .iter()
            .find(|p| p["problem"] == "loader_cache" && p["loader"] == name)
            .unwrap_or_else(|| panic!("{name}: {report}"))
    };
    for name in ["huggingface_hub", "transformers 4.x"] {
        assert_eq!(loader(name)["variable"], "HUGGINGFACE_HUB_CACHE");
        assert_eq!(loader(name)["points_to"], "/data");
    }
    let st = loader("sentence-transformers");
    assert_eq!(st["variable"], "SENTENCE_TRANSFORMERS_HOME");
    assert_eq!(st["points_to"], "/st");
    let tiny = hub.commit_of(Kind::Model, "acme/tiny", "main").unwrap();
    assert_eq!(st["missing"], json!([format!("model/acme/tiny@{tiny}")]));
    assert!(
        problems.iter().any(|p| p["problem"] == "offline"),
        "{report}"
    );
    assert!(
        r.stderr
            .contains("huggingface_hub looks in /data (from HUGGINGFACE_HUB_CACHE)"),
        "{}",
        r.stderr
    );
    // An image baked without the offline switch passes with --no-offline-env only.
    env.retain(|e| !e.starts_with("HUGGINGFACE_HUB_CACHE=") && !e.starts_with("SENTENCE_"));
    config["config"]["Env"] = json!(env);
    replace_layout_config(&out, &config);
    assert_ne!(verify().code, 0);
    run(f
        .cmd()
        .args(["verify", "--no-offline-env", "--oci"])
        .arg(&out))
    .ok();
}

/// `modelbake doctor --json`, with none of the loader variables of the test's own machine.
fn doctor(f: &Fetched, args: &[&str], env: &[(&str, &Path)]) -> (Run, Value) {
    let mut cmd = f.cmd();
    cmd.args(["doctor", "--json"]).args(args);
    for var in REDIRECTS
        .iter()
        .chain(&["HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"])
    {
        cmd.env_remove(var);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let r = run(&mut cmd);
    let v = serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{e}: {r:?}"));
    (r, v)
}

fn states(report: &Value, loader: &str) -> Vec<String> {
    let row = report["loaders"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["loader"] == loader)
        .unwrap_or_else(|| panic!("{loader}: {report}"));
    row["repos"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["state"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn doctor_reports_an_image_as_verify_does() {
    let hub = emulator();
    let f = Fetched::new(&hub, TINY);
    f.fetch(&hub, &[]).ok();
    let work = tempfile::tempdir().unwrap();
    let (env, user, _) = BASES[2];
    let (_, _, _, out) = bake_on(&f, work.path(), env, user);
    let spec = format!("{}:t", out.display());
    let (r, report) = doctor(&f, &["--oci", &spec], &[]);
    r.ok();
    assert_eq!(report["ok"], true);
    assert_eq!(report["offline"], true);
    assert!(
        report["user"].as_str().unwrap().contains("uid 65534"),
        "{report}"
    );
    for loader in [
        "huggingface_hub",
        "transformers 4.x",
        "sentence-transformers",
    ] {
        assert_eq!(states(&report, loader), ["present"], "{loader}");
    }
    // The table names each loader and where it looks.
    let table = run(f.cmd().args(["doctor", "--oci", &spec]));
    table.ok();
    assert!(table.stdout.contains("LOADER"), "{}", table.stdout);
    assert!(
        table
            .stdout
            .contains("/root/.cache/huggingface/hub (from SENTENCE_TRANSFORMERS_HOME)"),
        "{}",
        table.stdout
    );

    let mut config = layout_config(&out);
    let mut env = env_of(&config);
    env.insert(0, "HUGGINGFACE_HUB_CACHE=/data".to_owned());
    config["config"]["Env"] = json!(env);
    replace_layout_config(&out, &config);
    let (r, report) = doctor(&f, &["--oci", &spec], &[]);
    r.expect_code(1);
    assert_eq!(report["ok"], false);
    assert_eq!(states(&report, "huggingface_hub"), ["missing"]);
    assert_eq!(states(&report, "sentence-transformers"), ["present"]);
}

#[test]
fn doctor_on_this_machine_finds_present_and_stale_repos() {
    let hub = emulator();
    let f = Fetched::new(&hub, TINY);
    f.fetch(&hub, &[]).ok();
    f.export(&[]).ok();
    let cache = f.hub_cache();
    let (r, report) = doctor(&f, &[], &[("HF_HUB_CACHE", &cache)]);
    r.ok();
    assert_eq!(states(&report, "transformers 4.x"), ["present"]);
    assert_eq!(report["offline"], false);
    fs::write(
        cache.join("models--acme--tiny/refs/main"),
        "0000000000000000000000000000000000000000",
    )
    .unwrap();
    let (r, report) = doctor(&f, &[], &[("HF_HUB_CACHE", &cache)]);
    r.expect_code(1);
    assert_eq!(states(&report, "huggingface_hub"), ["stale"]);
    let other = tempfile::tempdir().unwrap();
    let (r, report) = doctor(
        &f,
        &[],
        &[
            ("HF_HUB_CACHE", &cache),
            ("TRANSFORMERS_CACHE", other.path()),
        ],
    );
    r.expect_code(1);
    assert_eq!(states(&report, "transformers 4.x"), ["missing"]);
}
