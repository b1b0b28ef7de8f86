//! `modelbake bake` against real third-party consumers: determinism across stores, umasks and
//! machines; skopeo and umoci reading the layout; Python loading the unpacked tree offline as a
//! non-root user without writing; a real Distribution registry (push, pull back with skopeo,
//! no re-upload, base layers mounted and never downloaded); podman running the image.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Stdio};

use hub_emulator::{FileSpec, HubEmulator, Kind};

use crate::support::oci::*;
use crate::support::*;

const TWO_REPOS: &str = "[[model]]\nid = \"acme/tiny\"\n\n[[dataset]]\nid = \"acme/data\"\n";

/// Layer digests and the manifest digest of a bake's JSON report.
fn digests(report: &str) -> (Vec<(String, String)>, String) {
    let v: serde_json::Value =
        serde_json::from_str(report).unwrap_or_else(|e| panic!("{e}: {report}"));
    let layers = v["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["repo"].as_str().unwrap().to_owned(),
                l["digest"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    (layers, v["manifest_digest"].as_str().unwrap().to_owned())
}

fn bake(f: &Fetched, args: &[&str]) -> Run {
    run(f.cmd().arg("bake").arg("--json").args(args))
}

#[test]
fn bakes_are_bit_identical_across_stores_umasks_and_folders() {
    let hub = emulator();
    let a = Fetched::new(&hub, TWO_REPOS);
    let b = Fetched::new(&hub, TWO_REPOS);
    a.fetch(&hub, &[]).ok();
    // The second store is filled under a restrictive umask (and lives at another path).
    run(Command::new("sh")
        .args(["-c", "umask 077 && exec \"$0\" fetch --endpoint \"$1\""])
        .arg(env!("CARGO_BIN_EXE_modelbake"))
        .arg(hub.endpoint())
        .current_dir(b.project.path())
        .env("MODELBAKE_STORE", b.store.path()))
    .ok();
    for compression in ["none", "gzip", "zstd"] {
        let oa = a.cache.path().join(format!("oci-{compression}"));
        let ob = b.cache.path().join(format!("oci-{compression}"));
        let ra = bake(
            &a,
            &["--compression", compression, "--oci", oa.to_str().unwrap()],
        );
        ra.ok();
        let rb = run(Command::new("sh")
            .args([
                "-c",
                &format!(
                    "umask 077 && exec \"$0\" bake --json --compression {compression} --oci \"$1\""
                ),
            ])
            .arg(env!("CARGO_BIN_EXE_modelbake"))
            .arg(&ob)
            .current_dir(b.project.path())
            .env("MODELBAKE_STORE", b.store.path())
            .env_remove("SOURCE_DATE_EPOCH"));
        rb.ok();
        assert_eq!(
            digests(&ra.stdout),
            digests(&rb.stdout),
            "{compression}: digests differ between stores/umasks"
        );
        assert_eq!(
            fs::read(oa.join("index.json")).unwrap(),
            fs::read(ob.join("index.json")).unwrap()
        );
        let (layers, _) = digests(&ra.stdout);
        assert_eq!(layers.len(), 2, "one layer per repo");
        run(a.cmd().args(["verify", "--oci", oa.to_str().unwrap()])).ok();
    }

    // SOURCE_DATE_EPOCH, when set, is the entries' mtime (and so changes the digests).
    let epoch = bake(
        &a,
        &["--layers", a.cache.path().join("l-epoch").to_str().unwrap()],
    );
    let with = run(a
        .cmd()
        .args([
            "bake",
            "--json",
            "--layers",
            a.cache.path().join("l-epoch2").to_str().unwrap(),
        ])
        .env("SOURCE_DATE_EPOCH", "1700000000"));
    assert_ne!(digests(&epoch.stdout).0, digests(&with.stdout).0);

    // Changing one repo changes only that repo's layer.
    let before =
        digests(&bake(&a, &["--oci", a.cache.path().join("o1").to_str().unwrap()]).stdout).0;
    a.project.write_manifest(
        "[[model]]\nid = \"acme/tiny\"\nrevision = \"v1.0\"\n\n[[dataset]]\nid = \"acme/data\"\n",
    );
    a.project.lock_with(&hub, &[]).ok();
    a.fetch(&hub, &[]).ok();
    let after =
        digests(&bake(&a, &["--oci", a.cache.path().join("o2").to_str().unwrap()]).stdout).0;
    assert_eq!(before[0], after[0], "the dataset layer is untouched");
    assert_eq!(before[1].0, after[1].0);
    assert_ne!(before[1].1, after[1].1, "the model layer changed");
}

#[test]
fn a_rebake_reuses_cached_layers_and_large_repos_split() {
    let hub = emulator();
    let f = Fetched::new(&hub, TWO_REPOS);
    f.fetch(&hub, &[]).ok();
    let out = f.cache.path().join("oci");
    let first = bake(&f, &["--oci", out.to_str().unwrap()]);
    first.ok();
    let second = bake(&f, &["--oci", out.to_str().unwrap()]);
    second.ok();
    let v: serde_json::Value = serde_json::from_str(&second.stdout).unwrap();
    assert_eq!(
        (v["reused"].as_u64(), v["built"].as_u64()),
        (Some(2), Some(0))
    );
    assert_eq!(digests(&first.stdout), digests(&second.stdout));

    // A 100 kB limit splits acme/tiny (a 300 kB weight) into several layers, still complete.
    let split = f.cache.path().join("split");
    let r = bake(
        &f,
        &[
            "--max-layer-size",
            "100000",
            "--oci",
            split.to_str().unwrap(),
            "--layers",
            f.cache.path().join("split-layers").to_str().unwrap(),
        ],
    );
    r.ok();
    let (layers, _) = digests(&r.stdout);
    assert!(
        layers
            .iter()
            .filter(|(repo, _)| repo == "model/acme/tiny")
            .count()
            >= 2,
        "{layers:?}"
    );
    run(f.cmd().args(["verify", "--oci", split.to_str().unwrap()])).ok();
    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(f.cache.path().join("split-layers/layers.json")).unwrap())
            .unwrap();
    let files: Vec<&str> = index["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["file"].as_str().unwrap())
        .collect();
    assert!(files.iter().any(|n| n.contains("part1of")), "{files:?}");
    for name in files {
        run(f
            .cmd()
            .arg("verify")
            .arg("--layer")
            .arg(f.cache.path().join("split-layers").join(name)))
        .ok();
    }
}

#[test]
fn verify_catches_a_tampered_image() {
    let hub = emulator();
    let f = Fetched::new(&hub, "[[model]]\nid = \"acme/tiny\"\n");
    f.fetch(&hub, &[]).ok();
    let out = f.cache.path().join("oci");
    let r = bake(&f, &["--oci", out.to_str().unwrap()]);
    r.ok();
    let (layers, _) = digests(&r.stdout);
    let blob = out
        .join("blobs/sha256")
        .join(layers[0].1.trim_start_matches("sha256:"));
    // The layout hard-links the layer cache: tamper with a copy, not the cache.
    let mut bytes = fs::read(&blob).unwrap();
    fs::remove_file(&blob).unwrap();
    let at = bytes
        .windows(CONFIG_JSON.len())
        .position(|w| w == CONFIG_JSON.as_bytes())
        .expect("config.json content in the tar");
    bytes[at + 2] ^= 0x01;
    fs::write(&blob, bytes).unwrap();
    let run = run(f
        .cmd()
        .args(["verify", "--json", "--oci", out.to_str().unwrap()]));
    run.expect_code(1);
    assert!(run.stderr.contains("blobs/"), "{}", run.stderr);
    assert!(
        run.stderr
            .contains(&format!("expected {CONFIG_JSON_SHA256}")),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("blob hashes to"), "{}", run.stderr);
}

#[test]
fn skopeo_and_umoci_accept_the_layout_and_python_loads_it_offline_as_nobody() {
    let (Some(skopeo), Some(umoci)) = (tool("skopeo"), tool("umoci")) else {
        return;
    };
    let Some(py) = python() else { return };
    let hub = emulator();
    let f = Fetched::new(&hub, TWO_REPOS);
    f.fetch(&hub, &[]).ok();
    let out = f.cache.path().join("oci");
    bake(&f, &["--oci", out.to_str().unwrap(), "--tag", "v1"]).ok();
    let inspect = sh(Command::new(&skopeo).args(["inspect", &format!("oci:{}:v1", out.display())]));
    let v: serde_json::Value = serde_json::from_str(&inspect).unwrap();
    assert_eq!(v["Layers"].as_array().unwrap().len(), 2);
    assert!(
        v["Env"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e == "HF_HUB_OFFLINE=1")
    );

    let work = tempfile::tempdir().unwrap();
    fs::set_permissions(work.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let bundle = work.path().join("bundle");
    sh(Command::new(&umoci)
        .args(["unpack", "--image", &format!("{}:v1", out.display())])
        .arg(&bundle));
    fs::set_permissions(&bundle, fs::Permissions::from_mode(0o755)).unwrap();
    let hf_home = bundle.join("rootfs/root/.cache/huggingface");
    let commit = hub.commit_of(Kind::Model, "acme/tiny", "main").unwrap();
    let before = tree_state(&hf_home);
    // Readable by a non-root uid, files read-only to it, and nothing written while loading.
    let script = r#"
import hashlib, json, os, sys
from huggingface_hub import snapshot_download
out = {}
for repo, kind in (("acme/tiny", "model"), ("acme/data", "dataset")):
    root = snapshot_download(repo, repo_type=kind, local_files_only=True)
    for d, _, names in os.walk(root):
        for n in names:
            p = os.path.join(d, n)
            out[f"{repo}/{os.path.relpath(p, root)}"] = hashlib.sha256(open(p, "rb").read()).hexdigest()
    try:
        open(os.path.join(root, os.listdir(root)[0]), "ab")
        out["writable"] = True
    except PermissionError:
        pass
print(json.dumps(out))
"#;
    let mut cmd = Command::new("setpriv");
    cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(&py)
        .args(["-c", script])
        .env("HF_HOME", &hf_home)
        .env("HF_HUB_OFFLINE", "1")
        .env("HF_ENDPOINT", "http://127.0.0.1:9")
        .env("HOME", work.path())
        .env_remove("HF_HUB_CACHE")
        .env_remove("HF_TOKEN");
    let out = sh(&mut cmd);
    let got: BTreeMap<String, String> = serde_json::from_str(&out).unwrap();
    assert!(
        !got.contains_key("writable"),
        "the baked files must be read-only for another uid"
    );
    for f in hub.files_at(Kind::Model, "acme/tiny", &commit) {
        assert_eq!(
            got.get(&format!("acme/tiny/{}", f.path)),
            Some(&f.sha256),
            "{}",
            f.path
        );
    }
    assert_eq!(
        got.keys().filter(|k| k.starts_with("acme/data/")).count(),
        3
    );
    assert_eq!(
        before,
        tree_state(&hf_home),
        "loading offline wrote into the cache"
    );
}

/// Every path under `root` with its size, mode and mtime.
fn tree_state(root: &Path) -> BTreeMap<String, (u64, u32, i64)> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, (u64, u32, i64)>) {
        for e in fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            let m = fs::symlink_metadata(&p).unwrap();
            out.insert(
                p.strip_prefix(root).unwrap().display().to_string(),
                (m.len(), m.mode(), m.mtime()),
            );
            if m.is_dir() {
                walk(root, &p, out);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

#[test]
fn pushes_to_a_real_registry_mounts_the_base_and_runs_under_podman() {
    let (Some(registry_bin), Some(skopeo), Some(umoci)) =
        (tool("docker-registry"), tool("skopeo"), tool("umoci"))
    else {
        return;
    };
    let registry = Registry::start(&registry_bin);
    let reg = registry.addr.clone();
    let hub = HubEmulator::builder()
        .repo(tiny_repo())
        .repo(hub_emulator::Repo::model("acme/other").commit(
            "main",
            vec![FileSpec::regular("config.json", "{\"other\": true}\n")],
        ))
        .start()
        .unwrap();
    let f = Fetched::new(&hub, "[[model]]\nid = \"acme/tiny\"\n");
    f.fetch(&hub, &[]).ok();

    // Push, pull back with skopeo, compare.
    let r = bake(
        &f,
        &["--insecure", "--push", &format!("{reg}/models/app:v1")],
    );
    r.ok();
    let (_, manifest) = digests(&r.stdout);
    let pulled = f.cache.path().join("pulled");
    skopeo_pull(
        &skopeo,
        &["--src-tls-verify=false"],
        &format!("{reg}/models/app:v1"),
        &pulled,
    );
    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(pulled.join("index.json")).unwrap()).unwrap();
    assert_eq!(
        index["manifests"][0]["digest"].as_str(),
        Some(manifest.as_str()),
        "pulled image differs"
    );
    run(f
        .cmd()
        .args(["verify", "--oci", pulled.to_str().unwrap(), "--tag", "v1"]))
    .ok();

    // A second push of the unchanged image uploads nothing.
    let before = registry.requests().len();
    let r = bake(
        &f,
        &["--insecure", "--push", &format!("{reg}/models/app:v1")],
    );
    r.ok();
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["uploaded"], 0);
    let uploads: Vec<String> = registry.requests()[before..]
        .iter()
        .filter(|l| l.starts_with("POST") || (l.starts_with("PUT") && l.contains("/blobs/")))
        .cloned()
        .collect();
    assert!(uploads.is_empty(), "blobs uploaded again: {uploads:?}");

    // A base pushed to the registry first: its layers are mounted, never downloaded.
    let work = tempfile::tempdir().unwrap();
    let base_ref = push_busybox_base(&skopeo, &umoci, work.path(), &reg);
    let base_manifest: serde_json::Value = serde_json::from_str(&sh(Command::new(&skopeo).args([
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{base_ref}"),
    ])))
    .unwrap();
    let base_layers: Vec<String> = base_manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_owned())
        .collect();
    let before = registry.requests().len();
    let r = bake(
        &f,
        &[
            "--insecure",
            "--base",
            &base_ref,
            "--push",
            &format!("{reg}/models/app:v2"),
        ],
    );
    r.ok();
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["mounted"].as_u64(), Some(base_layers.len() as u64), "{v}");
    let log = registry.requests()[before..].to_vec();
    for layer in &base_layers {
        assert!(
            !log.iter()
                .any(|l| l.starts_with("GET") && l.contains(layer.as_str())),
            "base layer {layer} was downloaded: {log:#?}"
        );
        assert!(
            log.iter()
                .any(|l| l.starts_with("POST") && l.contains(&format!("mount={layer}"))),
            "{log:#?}"
        );
    }

    // The image runs: podman pulls it from the registry and hashes a model file inside.
    let Some(podman) = tool("podman") else { return };
    let storage = tempfile::tempdir().unwrap();
    let snapshot_file = format!(
        "/root/.cache/huggingface/hub/models--acme--tiny/snapshots/{}/config.json",
        hub.commit_of(Kind::Model, "acme/tiny", "main").unwrap()
    );
    let out = sh(Podman::new(&podman, storage.path())
        .run()
        .arg("--tls-verify=false")
        .arg(format!("{reg}/models/app:v2"))
        .args(["/bin/sha256sum", &snapshot_file])
        .stdin(Stdio::null()));
    assert!(out.starts_with(CONFIG_JSON_SHA256), "{out}");
}

#[test]
fn bake_before_fetch_says_what_to_do() {
    let hub = emulator();
    let f = Fetched::new(&hub, "[[model]]\nid = \"acme/tiny\"\n");
    let r = run(f
        .cmd()
        .args(["bake", "--oci", f.cache.path().join("o").to_str().unwrap()]));
    r.expect_code(1);
    assert!(
        r.stderr.contains("run `modelbake fetch` first"),
        "{}",
        r.stderr
    );
    let r = run(f.cmd().args(["bake"]));
    r.expect_code(1);
    assert!(r.stderr.contains("nothing to write"), "{}", r.stderr);
}

#[test]
fn pushes_with_basic_auth_from_the_docker_config() {
    let (Some(registry_bin), Some(htpasswd)) = (tool("docker-registry"), tool("htpasswd")) else {
        return;
    };
    let users = sh(Command::new(htpasswd).args(["-Bbn", "alice", "s3cret"]));
    let registry = Registry::start_with(&registry_bin, Some(&users));
    let hub = emulator();
    let f = Fetched::new(&hub, "[[model]]\nid = \"acme/tiny\"\n");
    f.fetch(&hub, &[]).ok();
    let target = format!("{}/private/app:v1", registry.addr);
    let docker = f.cache.path().join("docker");
    fs::create_dir_all(&docker).unwrap();

    let r = run(f
        .cmd()
        .args(["bake", "--insecure", "--push", &target])
        .env("DOCKER_CONFIG", &docker));
    r.expect_code(1);
    assert!(
        r.stderr.contains("asks for credentials") && r.stderr.contains("docker login"),
        "{}",
        r.stderr
    );

    use base64::Engine;
    let auth = base64::engine::general_purpose::STANDARD.encode("alice:s3cret");
    fs::write(
        docker.join("config.json"),
        format!(r#"{{"auths":{{"{}":{{"auth":"{auth}"}}}}}}"#, registry.addr),
    )
    .unwrap();
    let r = run(f
        .cmd()
        .args(["bake", "--json", "--insecure", "--push", &target])
        .env("DOCKER_CONFIG", &docker));
    r.ok();
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["uploaded"], 2, "layer and config");
    assert!(
        registry
            .requests()
            .iter()
            .any(|l| l.starts_with("PUT /v2/private/app/manifests/v1"))
    );
}

#[test]
fn bakes_onto_a_base_from_an_oci_layout() {
    let Some(umoci) = tool("umoci") else { return };
    let hub = emulator();
    let f = Fetched::new(&hub, "[[model]]\nid = \"acme/tiny\"\n");
    f.fetch(&hub, &[]).ok();
    let work = tempfile::tempdir().unwrap();
    let base = busybox_base(&umoci, work.path());
    let out = work.path().join("image");
    let r = bake(
        &f,
        &[
            "--base",
            &format!("oci:{}:latest", base.display()),
            "--oci",
            out.to_str().unwrap(),
        ],
    );
    r.ok();
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["base_layers"], 1);
    run(f.cmd().args(["verify", "--oci", out.to_str().unwrap()])).ok();
    let bundle = work.path().join("bundle");
    sh(Command::new(&umoci)
        .args(["unpack", "--image", &format!("{}:latest", out.display())])
        .arg(&bundle));
    assert!(
        bundle.join("rootfs/bin/busybox").is_file(),
        "the base layer is in the image"
    );
    let config: serde_json::Value =
        serde_json::from_slice(&fs::read(bundle.join("config.json")).unwrap()).unwrap();
    let env = config["process"]["env"].as_array().unwrap();
    assert!(
        env.iter().any(|e| e == "HF_HOME=/root/.cache/huggingface"),
        "{env:?}"
    );
    assert_eq!(
        config["process"]["args"][0], "/bin/sh",
        "the base's command is kept"
    );
}
