//! The Dockerfile path (examples/dockerfile/), built by a real builder: buildah builds the
//! committed Containerfile from a models-only image `bake --no-base` wrote and a busybox base,
//! both local OCI layouts (no network anywhere), and the real huggingface_hub and transformers
//! then load the models offline inside the built image, with the image's own `Env`, as root
//! from the default cache and as uid 1000 from a cache outside /root. The same image passes
//! `doctor`, which tells its layout from the builder's layer. What the path gives up is checked
//! too: the builder writes one layer of its own holding every repo (none of bake's layer
//! digests survive), while `bake --base` keeps them byte for byte. A bind mount at build time
//! gives a `RUN` step the models without putting them in the image.
//!
//! The test bed has no image with Python, so the loaders come from the host's Python venv,
//! bind-mounted read-only at the same paths (its interpreter, `/usr`, `/lib`): the process runs
//! in the built image's file system and environment, `--network none`, read-only.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use hub_emulator::{HubEmulator, Kind, Repo};
use serde_json::Value;

use crate::support::oci::{Podman, busybox_base, layout_config};
use crate::support::*;

const MANIFEST: &str = "[[model]]\nid = \"acme/tiny-bert\"\n\n[[dataset]]\nid = \"acme/data\"\n";

/// The quick start's real tokenizer repo (`acme/tiny-bert`) and the small dataset.
fn hub() -> HubEmulator {
    let fixture =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/quickstart/hub/models/acme/tiny-bert");
    HubEmulator::builder()
        .repo(Repo::from_dir(Kind::Model, "acme/tiny-bert", &fixture).unwrap())
        .repo(dataset_repo())
        .start()
        .unwrap()
}

/// buildah as root with its own storage under a test folder (vfs, the runtime options runc
/// needs here), sharing that storage with [`Podman`] so podman runs what buildah built.
struct Buildah {
    bin: PathBuf,
    storage: PathBuf,
}

impl Buildah {
    fn cmd(&self) -> Command {
        let mut c = Command::new(&self.bin);
        c.arg("--root")
            .arg(self.storage.join("root"))
            .arg("--runroot")
            .arg(self.storage.join("run"))
            .args(["--storage-driver", "vfs"])
            .stdin(std::process::Stdio::null());
        c
    }

    /// `buildah build` of `containerfile` (context: its folder) as `localhost/NAME`, offline:
    /// no network for `RUN`, nothing pulled; `args` add build arguments and contexts.
    fn build(&self, containerfile: &Path, name: &str, args: &[String]) {
        sh(self
            .cmd()
            .args(["build", "--quiet", "--network", "none", "--pull=never"])
            .args(["--runtime", "/usr/bin/runc", "--cgroup-manager", "cgroupfs"])
            .args([
                "--ulimit",
                "nofile=1024:1024",
                "--ulimit",
                "nproc=1024:1024",
            ])
            .args(args)
            .arg("-f")
            .arg(containerfile)
            .args(["-t", &format!("localhost/{name}")])
            .arg(containerfile.parent().unwrap()));
    }

    /// Copies the image `oci:DIR:TAG` into the storage as `localhost/NAME` with skopeo (buildah
    /// would name it after the folder, which may hold capitals).
    fn load(&self, skopeo: &Path, layout: &Path, tag: &str, name: &str) -> String {
        let image = format!("localhost/{name}");
        sh(Command::new(skopeo).args([
            "copy",
            "--quiet",
            &format!("oci:{}:{tag}", layout.display()),
            &format!(
                "containers-storage:[vfs@{}+{}]{image}",
                self.storage.join("root").display(),
                self.storage.join("run").display()
            ),
        ]));
        image
    }

    /// The layer digests of the built image `localhost/NAME`.
    fn layers(&self, name: &str) -> Vec<String> {
        let out = sh(self
            .cmd()
            .args(["inspect", "--type", "image", &format!("localhost/{name}")]));
        let v: Value = serde_json::from_str(&out).unwrap();
        let manifest: Value = serde_json::from_str(v["Manifest"].as_str().unwrap()).unwrap();
        digests(&manifest)
    }
}

/// The layer digests a manifest lists.
fn digests(manifest: &Value) -> Vec<String> {
    manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_owned())
        .collect()
}

/// The manifest of the only image in an OCI layout.
fn layout_manifest(dir: &Path) -> Value {
    let index: Value = serde_json::from_slice(&fs::read(dir.join("index.json")).unwrap()).unwrap();
    let digest = index["manifests"][0]["digest"].as_str().unwrap();
    serde_json::from_slice(&fs::read(dir.join("blobs/sha256").join(&digest[7..])).unwrap()).unwrap()
}

/// The venv's interpreter as seen inside a container, and the `-v` options that make it run
/// there: the venv and its base installation, `/usr`, `/lib`, `/lib64`, read-only at the same
/// paths.
fn python_mounts(py: &Path) -> (String, Vec<String>) {
    let out = sh(Command::new(py).args([
        "-c",
        "import os, sys; print(os.path.realpath(sys.prefix)); print(os.path.realpath(sys.base_prefix))",
    ]));
    let mut lines = out.lines();
    let (prefix, base) = (lines.next().unwrap(), lines.next().unwrap());
    let mut mounts = Vec::new();
    for dir in ["/usr", "/lib", "/lib64", base, prefix] {
        let covered = mounts
            .iter()
            .any(|m: &String| dir.starts_with(&format!("{}/", m.split(':').next().unwrap())));
        if Path::new(dir).exists()
            && !covered
            && !mounts.iter().any(|m| m.starts_with(&format!("{dir}:")))
        {
            mounts.push(format!("{dir}:{dir}:ro"));
        }
    }
    let args = mounts
        .iter()
        .flat_map(|m| ["-v".to_owned(), m.clone()])
        .collect();
    (format!("{prefix}/bin/python"), args)
}

/// Loads both repos offline with huggingface_hub and transformers, printing what it found.
const LOAD: &str = r#"
import hashlib, json, os
from huggingface_hub import constants, snapshot_download
from transformers import AutoConfig, AutoTokenizer
def tree(root):
    out = {}
    for d, _, names in os.walk(root):
        for n in names:
            p = os.path.join(d, n)
            with open(p, "rb") as f:
                out[os.path.relpath(p, root)] = hashlib.sha256(f.read()).hexdigest()
    return out
print(json.dumps({
    "uid": os.getuid(),
    "cache": constants.HF_HUB_CACHE,
    "offline": constants.HF_HUB_OFFLINE,
    "model": tree(snapshot_download("acme/tiny-bert")),
    "dataset": tree(snapshot_download("acme/data", repo_type="dataset")),
    "model_type": AutoConfig.from_pretrained("acme/tiny-bert").model_type,
    "ids": AutoTokenizer.from_pretrained("acme/tiny-bert")("Hello bake world")["input_ids"],
}))
"#;

/// Every locked file of `id` as path → sha256.
fn locked(f: &Fetched, id: &str) -> BTreeMap<String, String> {
    locked_files(locked_repo(&f.project.lock(), id))
        .into_iter()
        .map(|(p, t)| (p, t["sha256"].as_str().unwrap().to_owned()))
        .collect()
}

/// Checks what [`LOAD`] printed: both repos byte for byte, the model loaded, offline, from
/// `cache`.
fn check_loaded(f: &Fetched, out: &str, cache: &str, uid: u64) {
    let got: Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(got["uid"], uid);
    assert_eq!(got["cache"], cache);
    assert_eq!(got["offline"], true, "the Containerfile's ENV turns it on");
    let tree =
        |k: &str| -> BTreeMap<String, String> { serde_json::from_value(got[k].clone()).unwrap() };
    assert_eq!(tree("model"), locked(f, "acme/tiny-bert"));
    assert_eq!(tree("dataset"), locked(f, "acme/data"));
    assert_eq!(got["model_type"], "bert");
    assert_eq!(
        got["ids"],
        serde_json::json!([5, 8, 6]),
        "the fixture tokenizer maps hello, bake, world"
    );
}

#[test]
fn buildah_builds_the_containerfile_and_the_models_load_offline_inside() {
    let (Some(buildah_bin), Some(podman_bin), Some(skopeo), Some(umoci)) = (
        tool("buildah"),
        tool("podman"),
        tool("skopeo"),
        tool("umoci"),
    ) else {
        return;
    };
    let Some(py) = python() else { return };
    let hub = hub();
    let f = Fetched::new(&hub, MANIFEST);
    f.fetch(&hub, &[]).ok();
    let work = tempfile::tempdir().unwrap();
    let base = busybox_base(&umoci, work.path());
    let storage = work.path().join("storage");
    let buildah = Buildah {
        bin: buildah_bin,
        storage: storage.clone(),
    };
    let podman = Podman::new(&podman_bin, &storage);
    let base_image = buildah.load(&skopeo, &base, "latest", "base:1");
    let containerfile =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/dockerfile/Containerfile");
    let (python_in, mounts) = python_mounts(&py);
    let load = |image: &str, user: &str| {
        sh(podman
            .run()
            .args(["--read-only", "--user", user])
            .args(&mounts)
            .arg(format!("localhost/{image}"))
            .args([python_in.as_str(), "-c", LOAD]))
    };

    // The recipe as the README gives it: the models-only image, the default HF_HOME, root.
    let models = work.path().join("models");
    run(f.cmd().args([
        "bake",
        "--no-base",
        "--oci",
        models.to_str().unwrap(),
        "--tag",
        "v1",
    ]))
    .ok();
    let models_image = buildah.load(&skopeo, &models, "v1", "models:v1");
    buildah.build(
        &containerfile,
        "app:1",
        &[
            "--build-arg".into(),
            format!("BASE={base_image}"),
            "--build-arg".into(),
            format!("MODELS={models_image}"),
        ],
    );
    check_loaded(&f, &load("app:1", "0:0"), "/root/.cache/huggingface/hub", 0);

    // What is lost: the builder's own layer, every repo in it, none of bake's digests; `bake
    // --base` on the same base keeps the base's layers and adds bake's, byte for byte.
    let baked = digests(&layout_manifest(&models));
    let base_layers = digests(&layout_manifest(&base));
    let built = buildah.layers("app:1");
    assert_eq!(
        built.len(),
        base_layers.len() + 1,
        "one layer for every repo: {built:?}"
    );
    assert!(
        baked.iter().all(|d| !built.contains(d)),
        "a bake layer survived COPY --from: {built:?} {baked:?}"
    );
    let on_base = work.path().join("on-base");
    run(f.cmd().args([
        "bake",
        "--base",
        &format!("oci:{}:latest", base.display()),
        "--oci",
        on_base.to_str().unwrap(),
    ]))
    .ok();
    assert_eq!(
        digests(&layout_manifest(&on_base)),
        [base_layers.clone(), baked.clone()].concat()
    );

    // doctor checks the built image, telling its layout from the builder's layer.
    let pushed = work.path().join("pushed");
    sh(buildah.cmd().args([
        "push",
        "--quiet",
        "localhost/app:1",
        &format!("oci:{}:app", pushed.display()),
    ]));
    let doctor = run(f.cmd().args([
        "doctor",
        "--json",
        "--oci",
        &format!("{}:app", pushed.display()),
    ]));
    doctor.ok();
    let report: Value = serde_json::from_str(&doctor.stdout).unwrap();
    assert_eq!(report["layout"], "hf-cache");
    assert_eq!(report["layout_from"], "detected");

    // A cache outside /root, for a non-root user: only the build argument changes, and the
    // ENV it sets is what sends the loaders there (uid 1000 has no home here).
    let opt = work.path().join("models-opt");
    run(f.cmd().args([
        "bake",
        "--no-base",
        "--hf-home",
        "/opt/hf",
        "--oci",
        opt.to_str().unwrap(),
        "--tag",
        "v1",
    ]))
    .ok();
    let opt_image = buildah.load(&skopeo, &opt, "v1", "models-opt:v1");
    buildah.build(
        &containerfile,
        "app:2",
        &[
            "--build-arg".into(),
            format!("BASE={base_image}"),
            "--build-arg".into(),
            format!("MODELS={opt_image}"),
            "--build-arg".into(),
            "HF_HOME=/opt/hf".into(),
        ],
    );
    check_loaded(&f, &load("app:2", "1000:1000"), "/opt/hf/hub", 1000);
}

/// The README's build-time bind mount: the models image as a build context (what BuildKit's
/// `--build-context models=…` does), mounted for one `RUN` step that loads it; the image
/// keeps that step's output and none of the models.
const BIND: &str = r#"ARG BASE
FROM ${BASE}
ARG PYTHON
ARG LOAD
RUN --mount=type=bind,from=models,source=/root/.cache/huggingface,target=/root/.cache/huggingface \
    HF_HOME=/root/.cache/huggingface HF_HUB_OFFLINE=1 ${PYTHON} ${LOAD} > /loaded.json
"#;

#[test]
fn a_build_time_bind_mount_gives_a_run_step_the_models_and_keeps_them_out_of_the_image() {
    let (Some(buildah_bin), Some(skopeo), Some(umoci)) =
        (tool("buildah"), tool("skopeo"), tool("umoci"))
    else {
        return;
    };
    let Some(py) = python() else { return };
    let hub = hub();
    let f = Fetched::new(&hub, MANIFEST);
    f.fetch(&hub, &[]).ok();
    let work = tempfile::tempdir().unwrap();
    let base = busybox_base(&umoci, work.path());
    let buildah = Buildah {
        bin: buildah_bin,
        storage: work.path().join("storage"),
    };
    let models = work.path().join("models");
    run(f.cmd().args([
        "bake",
        "--no-base",
        "--oci",
        models.to_str().unwrap(),
        "--tag",
        "v1",
    ]))
    .ok();
    let context = work.path().join("context");
    // The script goes in at its own host path: a fixed path such as /check could lie above a
    // host folder mounted for Python (a checkout under /check) and make that mount fail.
    let scripts = context.join("check");
    fs::create_dir_all(&scripts).unwrap();
    fs::write(context.join("Containerfile"), BIND).unwrap();
    fs::write(scripts.join("load.py"), LOAD).unwrap();
    let (python_in, mounts) = python_mounts(&py);
    let base_image = buildah.load(&skopeo, &base, "latest", "base:1");
    let models_image = buildah.load(&skopeo, &models, "v1", "models:v1");
    let mut args = vec![
        "--build-arg".to_owned(),
        format!("BASE={base_image}"),
        "--build-arg".to_owned(),
        format!("PYTHON={python_in}"),
        "--build-arg".to_owned(),
        format!("LOAD={}", scripts.join("load.py").display()),
        "--build-context".to_owned(),
        format!("models=container-image://{models_image}"),
        "-v".to_owned(),
        format!("{0}:{0}:ro", scripts.display()),
    ];
    args.extend(mounts);
    buildah.build(&context.join("Containerfile"), "bound:1", &args);

    // The step's output is in the image; the models are not.
    let container = sh(buildah.cmd().args(["from", "--quiet", "localhost/bound:1"]));
    let container = container.trim();
    let root = PathBuf::from(sh(buildah.cmd().args(["mount", container])).trim());
    let loaded = fs::read_to_string(root.join("loaded.json")).unwrap();
    let cache_left = root.join("root/.cache/huggingface/hub").exists();
    sh(buildah.cmd().args(["rm", container]));
    check_loaded(&f, &loaded, "/root/.cache/huggingface/hub", 0);
    assert!(!cache_left, "the bind-mounted models ended up in the image");
    let config = layout_config_of(&buildah, "bound:1", work.path());
    let env: Vec<&str> = config["config"]["Env"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    assert!(
        !env.iter().any(|e| e.starts_with("HF_HOME=")),
        "HF_HOME was set for the step only: {env:?}"
    );
}

/// The config of `localhost/NAME`, pushed to an OCI layout under `dir`.
fn layout_config_of(buildah: &Buildah, name: &str, dir: &Path) -> Value {
    let out = dir.join(format!("pushed-{}", name.replace(':', "-")));
    sh(buildah.cmd().args([
        "push",
        "--quiet",
        &format!("localhost/{name}"),
        &format!("oci:{}:x", out.display()),
    ]));
    layout_config(&out)
}
