//! Images that Kubernetes image volumes and KServe modelcars mount, checked the way the
//! runtimes use them: `podman run --mount type=image` reads the `files` layout (and `--flat`) as
//! a non-root uid; transformers loads the tree umoci unpacks; huggingface_hub loads a mounted
//! `hf-cache` models-only image; a two-platform index keeps every digest through a registry with
//! its layers uploaded once; multi-platform bakes take each platform's base; `verify --oci`
//! catches a symlink, a wrong byte, a missing and an extra file in the files layout.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use hub_emulator::{HubEmulator, Kind, Repo};
use serde_json::Value;

use crate::support::oci::*;
use crate::support::*;

/// The tokenizer fixture and a dataset.
const BOTH: &str = "[[model]]\nid = \"acme/tiny-bert\"\n\n[[dataset]]\nid = \"acme/data\"\n";
/// The tokenizer fixture alone.
const BERT: &str = "[[model]]\nid = \"acme/tiny-bert\"\n";
const TWO_PLATFORMS: &str = "linux/amd64,linux/arm64";

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

fn fetched(hub: &HubEmulator, manifest: &str) -> Fetched {
    let f = Fetched::new(hub, manifest);
    f.fetch(hub, &[]).ok();
    f
}

/// `bake --json ARGS`, which must succeed; its report.
fn bake(f: &Fetched, args: &[&str]) -> Value {
    let r = run(f.cmd().args(["bake", "--json"]).args(args));
    r.ok();
    serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{e}: {}", r.stdout))
}

fn verify(f: &Fetched, args: &[&str]) -> Run {
    run(f.cmd().args(["verify", "--json"]).args(args))
}

/// [`bake`] of the files layout for `platforms`, with no base, into the OCI layout `out`
/// tagged `v1`.
fn bake_index(f: &Fetched, platforms: &str, out: &Path) -> Value {
    bake(
        f,
        &[
            "--layout",
            "files",
            "--no-base",
            "--platform",
            platforms,
            "--oci",
            out.to_str().unwrap(),
            "--tag",
            "v1",
        ],
    )
}

/// [`verify`] of the files layout for [`TWO_PLATFORMS`] at tag `v1` of `layout`, which must
/// pass.
fn verify_index(f: &Fetched, layout: &Path) {
    verify(
        f,
        &[
            "--oci",
            layout.to_str().unwrap(),
            "--tag",
            "v1",
            "--layout",
            "files",
            "--platform",
            TWO_PLATFORMS,
        ],
    )
    .ok();
}

/// Every locked file as (path inside the image, sha256), for the files layout under /mnt:
/// models under `models/<id>/`, datasets under `models/datasets/<id>/`, or `models/` with flat.
fn expected_files(f: &Fetched, root: &str, flat: bool) -> BTreeMap<String, String> {
    let lock = f.project.lock();
    let mut out = BTreeMap::new();
    for repo in lock["repo"].as_array().unwrap() {
        let id = repo["id"].as_str().unwrap();
        let dir = match (flat, repo["kind"].as_str().unwrap()) {
            (true, _) => root.to_owned(),
            (false, "dataset") => format!("{root}/datasets/{id}"),
            (false, _) => format!("{root}/{id}"),
        };
        for (path, file) in locked_files(repo) {
            out.insert(
                format!("{dir}/{path}"),
                file["sha256"].as_str().unwrap().to_owned(),
            );
        }
    }
    out
}

/// `sha256sum` output as path → sha256.
fn parse_sums(out: &str) -> BTreeMap<String, String> {
    out.lines()
        .filter_map(|l| l.split_once("  "))
        .map(|(sha, path)| (path.to_owned(), sha.to_owned()))
        .collect()
}

/// Copies `source` (`oci:DIR:TAG`) into podman's storage under `storage` as `localhost/NAME`.
fn into_podman(skopeo: &Path, storage: &Path, source: &str, name: &str) {
    sh(Command::new(skopeo).args([
        "copy",
        source,
        &format!(
            "containers-storage:[vfs@{}+{}]localhost/{name}",
            storage.join("root").display(),
            storage.join("run").display()
        ),
    ]));
}

/// Runs `script` with busybox's sh as `user` in the busybox image, with `image` mounted at /mnt
/// the way an image volume is.
fn in_volume(podman: &Podman, user: &str, image: &str, script: &str) -> String {
    sh(podman.run().args([
        "--user",
        user,
        "--mount",
        &format!("type=image,source=localhost/{image},destination=/mnt"),
        "localhost/busybox:1",
        "/bin/busybox",
        "sh",
        "-c",
        script,
    ]))
}

/// Hashes every regular file under /mnt/models and lists any symlink.
const HASH_ALL: &str = "/bin/busybox find /mnt/models -type l -exec /bin/busybox echo LINK {} ';'; \
     /bin/busybox find /mnt/models -type f -exec /bin/busybox sha256sum {} ';'";

#[test]
fn podman_mounts_the_files_layout_as_an_image_volume_readable_by_a_non_root_uid() {
    let (Some(skopeo), Some(umoci), Some(podman_bin)) =
        (tool("skopeo"), tool("umoci"), tool("podman"))
    else {
        return;
    };
    let hub = hub();
    let f = fetched(&hub, BOTH);
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("models");
    let v = bake_index(&f, TWO_PLATFORMS, &out);
    assert_eq!(v["platforms"].as_array().unwrap().len(), 2, "{v}");
    verify_index(&f, &out);

    let storage = work.path().join("podman");
    let podman = Podman::new(&podman_bin, &storage);
    let base = busybox_base(&umoci, work.path());
    into_podman(
        &skopeo,
        &storage,
        &format!("oci:{}:latest", base.display()),
        "busybox:1",
    );
    // The index goes in as the host's platform, as a node pulls it.
    into_podman(
        &skopeo,
        &storage,
        &format!("oci:{}:v1", out.display()),
        "models:v1",
    );
    let listing = in_volume(&podman, "1010:1010", "models:v1", HASH_ALL);
    assert!(
        !listing.contains("LINK"),
        "symlinks in the volume: {listing}"
    );
    assert_eq!(
        parse_sums(&listing),
        expected_files(&f, "/mnt/models", false),
        "every locked file, with its locked sha256, and nothing else"
    );

    // --flat: one repo's files directly in /models (KServe's modelcar convention), owned by
    // root and still readable by the modelcar uid.
    let r = run(f.cmd().args([
        "bake",
        "--layout",
        "files",
        "--flat",
        "--oci",
        work.path().join("refused").to_str().unwrap(),
    ]));
    r.expect_code(1);
    assert!(
        r.stderr.contains("--flat") && r.stderr.contains("2 repos"),
        "{}",
        r.stderr
    );
    let one = fetched(&hub, BERT);
    let flat = work.path().join("flat");
    bake(
        &one,
        &[
            "--layout",
            "files",
            "--flat",
            "--oci",
            flat.to_str().unwrap(),
            "--tag",
            "flat",
        ],
    );
    into_podman(
        &skopeo,
        &storage,
        &format!("oci:{}:flat", flat.display()),
        "modelcar:flat",
    );
    let listing = in_volume(&podman, "1010:1010", "modelcar:flat", HASH_ALL);
    assert!(!listing.contains("LINK"), "{listing}");
    assert_eq!(
        parse_sums(&listing),
        expected_files(&one, "/mnt/models", true)
    );
}

#[test]
fn transformers_loads_the_files_layout_unpacked_by_umoci() {
    let Some(umoci) = tool("umoci") else { return };
    let Some(py) = python() else { return };
    let hub = hub();
    let f = fetched(&hub, BOTH);
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("models");
    bake(
        &f,
        &[
            "--layout",
            "files",
            "--no-base",
            "--oci",
            out.to_str().unwrap(),
            "--tag",
            "v1",
        ],
    );
    let bundle = work.path().join("bundle");
    sh(Command::new(&umoci)
        .args(["unpack", "--image", &format!("{}:v1", out.display())])
        .arg(&bundle));
    let model = bundle.join("rootfs/models/acme/tiny-bert");
    for (path, sha) in expected_files(&f, "", false) {
        let p = bundle
            .join("rootfs/models")
            .join(path.trim_start_matches('/'));
        let m = fs::symlink_metadata(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        assert!(
            m.file_type().is_file(),
            "{}: not a regular file",
            p.display()
        );
        use sha2::Digest;
        assert_eq!(
            hex::encode(sha2::Sha256::digest(fs::read(&p).unwrap())),
            sha
        );
    }
    let script = r#"
import json, sys
from transformers import AutoConfig, AutoTokenizer
config = AutoConfig.from_pretrained(sys.argv[1])
tok = AutoTokenizer.from_pretrained(sys.argv[1])
print(json.dumps({"model_type": config.model_type, "ids": tok("Hello bake world")["input_ids"]}))
"#;
    let out = sh(Command::new(&py)
        .args(["-c", script])
        .arg(&model)
        .env("HF_HUB_OFFLINE", "1")
        .env("HF_HOME", work.path().join("home"))
        .env("HF_ENDPOINT", "http://127.0.0.1:9")
        .env_remove("HF_HUB_CACHE")
        .env_remove("HF_TOKEN"));
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(v["model_type"], "bert");
    assert_eq!(
        v["ids"],
        serde_json::json!([5, 8, 6]),
        "the fixture tokenizer maps hello, bake, world"
    );
}

#[test]
fn huggingface_hub_loads_a_mounted_models_only_hf_cache_image() {
    let (Some(skopeo), Some(podman_bin)) = (tool("skopeo"), tool("podman")) else {
        return;
    };
    let Some(py) = python() else { return };
    let hub = hub();
    let f = fetched(&hub, BERT);
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("models");
    let v = bake(
        &f,
        &["--no-base", "--oci", out.to_str().unwrap(), "--tag", "v1"],
    );
    let config: Value = serde_json::from_slice(
        &fs::read(
            out.join("blobs/sha256")
                .join(&v["config_digest"].as_str().unwrap()[7..]),
        )
        .unwrap(),
    )
    .unwrap();
    // What containerd needs to mount it: a runnable image's config.
    assert_eq!(config["os"], "linux");
    assert_eq!(config["architecture"], "amd64");
    assert_eq!(config["rootfs"]["diff_ids"].as_array().unwrap().len(), 1);

    let storage = work.path().join("podman");
    let podman = Podman::new(&podman_bin, &storage);
    into_podman(
        &skopeo,
        &storage,
        &format!("oci:{}:v1", out.display()),
        "models-hf:v1",
    );
    let mnt = PathBuf::from(
        sh(podman
            .cmd()
            .args(["image", "mount", "localhost/models-hf:v1"]))
        .trim()
        .to_owned(),
    );
    let script = r#"
import hashlib, json, os
from huggingface_hub import snapshot_download
root = snapshot_download("acme/tiny-bert", local_files_only=True)
out = {}
for d, _, names in os.walk(root):
    for n in names:
        p = os.path.join(d, n)
        out[os.path.relpath(p, root)] = hashlib.sha256(open(p, "rb").read()).hexdigest()
print(json.dumps(out))
"#;
    let result = run(Command::new(&py)
        .args(["-c", script])
        .env("HF_HUB_CACHE", mnt.join("root/.cache/huggingface/hub"))
        .env("HF_HUB_OFFLINE", "1")
        .env("HF_HOME", work.path().join("home"))
        .env("HF_ENDPOINT", "http://127.0.0.1:9")
        .env_remove("HF_TOKEN"));
    sh(podman
        .cmd()
        .args(["image", "unmount", "localhost/models-hf:v1"]));
    result.ok();
    let got: BTreeMap<String, String> = serde_json::from_str(&result.stdout).unwrap();
    let want: BTreeMap<String, String> = expected_files(&f, "", false)
        .into_iter()
        .map(|(p, s)| (p.trim_start_matches("/acme/tiny-bert/").to_owned(), s))
        .collect();
    assert_eq!(got, want);
}

/// A blob of a layout, parsed.
fn blob_json(layout: &Path, digest: &str) -> Value {
    let path = layout.join("blobs/sha256").join(&digest[7..]);
    serde_json::from_slice(&fs::read(&path).unwrap()).unwrap()
}

/// The layer digests of a manifest.
fn layer_digests(manifest: &Value) -> Vec<String> {
    manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_owned())
        .collect()
}

/// How many times the registry received the bytes of `digest` (upload PUTs naming it).
fn uploads_of(log: &[String], digest: &str) -> usize {
    log.iter()
        .filter(|l| {
            l.starts_with("PUT") && l.contains("/blobs/uploads/") && l.contains(&digest[7..])
        })
        .count()
}

#[test]
fn a_two_platform_index_keeps_every_digest_through_a_registry_with_layers_uploaded_once() {
    let (Some(registry_bin), Some(skopeo)) = (tool("docker-registry"), tool("skopeo")) else {
        return;
    };
    let hub = hub();
    let f = fetched(&hub, BOTH);
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("models");
    // The order on the command line does not matter: the index lists platforms sorted.
    let v = bake_index(&f, "linux/arm64,linux/amd64", &out);
    let index_digest = v["index_digest"].as_str().unwrap().to_owned();
    assert_eq!(v["manifest_digest"], index_digest.as_str());
    let platforms = v["platforms"].as_array().unwrap();
    assert_eq!(platforms[0]["platform"], "linux/amd64");
    assert_eq!(platforms[1]["platform"], "linux/arm64");

    let raw: Value = serde_json::from_str(&sh(Command::new(&skopeo).args([
        "inspect",
        "--raw",
        &format!("oci:{}:v1", out.display()),
    ])))
    .unwrap();
    assert_eq!(raw["mediaType"], "application/vnd.oci.image.index.v1+json");
    let archs: Vec<&str> = raw["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["platform"]["architecture"].as_str().unwrap())
        .collect();
    assert_eq!(archs, ["amd64", "arm64"]);
    let manifests: Vec<Value> = raw["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| blob_json(&out, m["digest"].as_str().unwrap()))
        .collect();
    let layers = layer_digests(&manifests[0]);
    assert_eq!(layers.len(), 2);
    assert_eq!(layers, layer_digests(&manifests[1]), "one set of layers");
    assert_ne!(manifests[0]["config"], manifests[1]["config"]);
    for (m, arch) in manifests.iter().zip(["amd64", "arm64"]) {
        let config = blob_json(&out, m["config"]["digest"].as_str().unwrap());
        assert_eq!(config["architecture"], arch);
        assert_eq!(config["os"], "linux");
    }

    // skopeo copy --all to the registry and back keeps every digest; layers go up once.
    let registry = Registry::start(&registry_bin);
    let reg = registry.addr.clone();
    sh(Command::new(&skopeo).args([
        "copy",
        "--all",
        "--preserve-digests",
        "--dest-tls-verify=false",
        &format!("oci:{}:v1", out.display()),
        &format!("docker://{reg}/models/vol:v1"),
    ]));
    let log = registry.requests();
    for l in &layers {
        assert_eq!(uploads_of(&log, l), 1, "layer {l}: {log:#?}");
    }
    let back = work.path().join("back");
    sh(Command::new(&skopeo).args([
        "copy",
        "--all",
        "--preserve-digests",
        "--src-tls-verify=false",
        &format!("docker://{reg}/models/vol:v1"),
        &format!("oci:{}:v1", back.display()),
    ]));
    let back_index: Value =
        serde_json::from_slice(&fs::read(back.join("index.json")).unwrap()).unwrap();
    assert_eq!(back_index["manifests"][0]["digest"], index_digest.as_str());
    assert_eq!(
        fs::read(back.join("blobs/sha256").join(&index_digest[7..])).unwrap(),
        fs::read(out.join("blobs/sha256").join(&index_digest[7..])).unwrap()
    );
    verify_index(&f, &back);

    // modelbake's own push: each platform's manifest by digest, then the index under the tag;
    // each layer uploaded once.
    let before = registry.requests().len();
    let pushed = bake(
        &f,
        &[
            "--layout",
            "files",
            "--no-base",
            "--platform",
            TWO_PLATFORMS,
            "--insecure",
            "--push",
            &format!("{reg}/models/own:v1"),
        ],
    );
    assert!(
        pushed["pushed"].as_str().unwrap().ends_with(&index_digest),
        "{pushed}"
    );
    let log = registry.requests()[before..].to_vec();
    for l in &layers {
        assert_eq!(uploads_of(&log, l), 1, "layer {l}: {log:#?}");
    }
    for m in raw["manifests"].as_array().unwrap() {
        let hex = &m["digest"].as_str().unwrap()[7..];
        assert!(
            log.iter()
                .any(|l| l.starts_with("PUT /v2/models/own/manifests/sha256") && l.contains(hex)),
            "{log:#?}"
        );
    }
    assert!(
        log.iter()
            .any(|l| l.starts_with("PUT /v2/models/own/manifests/v1 ")),
        "{log:#?}"
    );
    let served = sh(Command::new(&skopeo).args([
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{reg}/models/own:v1"),
    ]));
    assert_eq!(
        served.trim_end().as_bytes(),
        fs::read(out.join("blobs/sha256").join(&index_digest[7..])).unwrap()
    );
}

/// A base image layout written by hand: one tiny layer and config per architecture, behind an
/// index (or, with `single`, just the amd64 manifest). Returns each arch's layer digest.
fn base_layout(dir: &Path, single: bool) -> BTreeMap<&'static str, String> {
    use sha2::Digest;
    let blobs = dir.join("blobs/sha256");
    fs::create_dir_all(&blobs).unwrap();
    let put = |bytes: &[u8]| {
        let d = format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)));
        fs::write(blobs.join(&d[7..]), bytes).unwrap();
        (d, bytes.len())
    };
    let mut layers = BTreeMap::new();
    let mut entries = Vec::new();
    for arch in ["amd64", "arm64"] {
        let layer = format!("layer of {arch}").repeat(100).into_bytes();
        let (layer_digest, layer_size) = put(&layer);
        let config = format!(
            r#"{{"architecture":"{arch}","os":"linux","config":{{"Env":["PATH=/bin"]}},"rootfs":{{"type":"layers","diff_ids":["{layer_digest}"]}}}}"#
        );
        let (config_digest, config_size) = put(config.as_bytes());
        let manifest = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config_digest}","size":{config_size}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{layer_digest}","size":{layer_size}}}]}}"#
        );
        let (manifest_digest, manifest_size) = put(manifest.as_bytes());
        entries.push(format!(
            r#"{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{manifest_digest}","size":{manifest_size},"platform":{{"architecture":"{arch}","os":"linux"}}}}"#
        ));
        layers.insert(arch, layer_digest);
    }
    let root = if single {
        entries[0].replace(r#","platform":{"architecture":"amd64","os":"linux"}"#, "")
    } else {
        let index = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{}]}}"#,
            entries.join(",")
        );
        let (d, size) = put(index.as_bytes());
        format!(
            r#"{{"mediaType":"application/vnd.oci.image.index.v1+json","digest":"{d}","size":{size}}}"#
        )
    };
    let root = root.replacen(
        '{',
        r#"{"annotations":{"org.opencontainers.image.ref.name":"base"},"#,
        1,
    );
    fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    fs::write(
        dir.join("index.json"),
        format!(r#"{{"schemaVersion":2,"manifests":[{root}]}}"#),
    )
    .unwrap();
    layers
}

#[test]
fn a_multi_platform_bake_takes_each_platforms_base_manifest() {
    let hub = hub();
    let f = fetched(&hub, BERT);
    let work = tempfile::tempdir().unwrap();
    let base = work.path().join("base");
    let base_layers = base_layout(&base, false);
    let out = work.path().join("image");
    let v = bake(
        &f,
        &[
            "--layout",
            "files",
            "--flat",
            "--base",
            &format!("oci:{}:base", base.display()),
            "--platform",
            TWO_PLATFORMS,
            "--oci",
            out.to_str().unwrap(),
        ],
    );
    let ours: Vec<String> = v["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_owned())
        .collect();
    for p in v["platforms"].as_array().unwrap() {
        let arch = p["platform"].as_str().unwrap().trim_start_matches("linux/");
        assert_eq!(p["base_layers"], 1);
        let manifest = blob_json(&out, p["manifest_digest"].as_str().unwrap());
        let mut want = vec![base_layers[arch].clone()];
        want.extend(ours.iter().cloned());
        assert_eq!(layer_digests(&manifest), want, "{arch}");
        let config = blob_json(&out, p["config_digest"].as_str().unwrap());
        assert_eq!(config["architecture"], arch);
        assert_eq!(
            config["config"]["Env"][0], "PATH=/bin",
            "the base's env is kept"
        );
    }
    verify(
        &f,
        &[
            "--oci",
            out.to_str().unwrap(),
            "--layout",
            "files",
            "--flat",
            "--platform",
            TWO_PLATFORMS,
        ],
    )
    .ok();
    // Asking verify for a platform the index lacks fails.
    let r = verify(
        &f,
        &[
            "--oci",
            out.to_str().unwrap(),
            "--layout",
            "files",
            "--flat",
            "--platform",
            "linux/amd64,linux/s390x",
        ],
    );
    r.expect_code(1);
    assert!(r.stdout.contains("platform_missing"), "{}", r.stdout);

    // A single-platform base cannot serve two platforms.
    let single = work.path().join("single");
    base_layout(&single, true);
    let r = run(f.cmd().args([
        "bake",
        "--layout",
        "files",
        "--base",
        &format!("oci:{}:base", single.display()),
        "--platform",
        TWO_PLATFORMS,
        "--oci",
        work.path().join("refused").to_str().unwrap(),
    ]));
    r.expect_code(1);
    assert!(
        r.stderr.contains("built for linux/amd64") && r.stderr.contains("index"),
        "{}",
        r.stderr
    );
}

/// The entries of an uncompressed layer: (header, content).
fn read_layer(path: &Path) -> Vec<(tar::Header, Vec<u8>)> {
    let bytes = fs::read(path).unwrap();
    let mut a = tar::Archive::new(&bytes[..]);
    a.entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let h = e.header().clone();
            let mut content = Vec::new();
            std::io::Read::read_to_end(&mut e, &mut content).unwrap();
            (h, content)
        })
        .collect()
}

/// Replaces the layer blob at `path` (a hard link into the layer cache: removed first) with
/// these entries.
fn write_layer(path: &Path, entries: &[(tar::Header, Vec<u8>)]) {
    let mut b = tar::Builder::new(Vec::new());
    for (h, content) in entries {
        let mut h = h.clone();
        h.set_cksum();
        b.append(&h, &content[..]).unwrap();
    }
    fs::remove_file(path).unwrap();
    fs::write(path, b.into_inner().unwrap()).unwrap();
}

fn path_of(h: &tar::Header) -> String {
    h.path().unwrap().to_string_lossy().into_owned()
}

/// Every problem tag of a `verify --json` report.
fn problem_tags(report: &Value) -> Vec<String> {
    let mut tags: Vec<String> = report["problems"]
        .as_array()
        .unwrap()
        .iter()
        .chain(
            report["layers"]
                .as_array()
                .unwrap()
                .iter()
                .flat_map(|l| l["problems"].as_array().unwrap()),
        )
        .map(|p| p["problem"].as_str().unwrap().to_owned())
        .collect();
    tags.sort();
    tags.dedup();
    tags
}

#[test]
fn verify_catches_a_symlink_a_wrong_byte_a_missing_and_an_extra_file_in_the_files_layout() {
    let hub = hub();
    let f = fetched(&hub, BERT);
    let work = tempfile::tempdir().unwrap();
    const CONFIG: &str = "models/acme/tiny-bert/config.json";
    const TOKENIZER: &str = "models/acme/tiny-bert/tokenizer.json";
    type Entries = Vec<(tar::Header, Vec<u8>)>;
    type Edit = Box<dyn Fn(&mut Entries)>;
    let cases: Vec<(&str, Edit, &str, &str)> = vec![
        (
            "symlink",
            Box::new(|entries: &mut Entries| {
                let (h, content) = entries
                    .iter_mut()
                    .find(|(h, _)| path_of(h) == CONFIG)
                    .unwrap();
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_link_name("tokenizer.json").unwrap();
                h.set_size(0);
                content.clear();
            }),
            "not_a_file",
            "expected a regular file, found a symlink to tokenizer.json",
        ),
        (
            "wrong byte",
            Box::new(|entries: &mut Entries| {
                let (_, content) = entries
                    .iter_mut()
                    .find(|(h, _)| path_of(h) == CONFIG)
                    .unwrap();
                content[3] ^= 1;
            }),
            "corrupt",
            "config.json: sha256",
        ),
        (
            "missing",
            Box::new(|entries: &mut Entries| entries.retain(|(h, _)| path_of(h) != TOKENIZER)),
            "missing",
            "tokenizer.json is missing",
        ),
        (
            "extra",
            Box::new(|entries: &mut Entries| {
                let mut h = entries
                    .iter()
                    .find(|(h, _)| path_of(h) == CONFIG)
                    .unwrap()
                    .0
                    .clone();
                h.set_path("models/acme/tiny-bert/extra.txt").unwrap();
                h.set_size(6);
                entries.push((h, b"extra\n".to_vec()));
            }),
            "unlocked",
            "extra.txt: not part of any locked repo",
        ),
    ];
    for (name, edit, tag, message) in cases {
        let out = work.path().join(name.replace(' ', "-"));
        let v = bake(
            &f,
            &[
                "--layout",
                "files",
                "--no-base",
                "--oci",
                out.to_str().unwrap(),
            ],
        );
        let args = ["--oci", out.to_str().unwrap(), "--layout", "files"];
        verify(&f, &args).ok();
        let layer = out
            .join("blobs/sha256")
            .join(&v["layers"][0]["digest"].as_str().unwrap()[7..]);
        let mut entries = read_layer(&layer);
        edit(&mut entries);
        write_layer(&layer, &entries);
        let r = verify(&f, &args);
        r.expect_code(1);
        let report: Value = serde_json::from_str(&r.stdout).unwrap();
        let tags = problem_tags(&report);
        assert!(
            tags.contains(&tag.to_owned()),
            "{name}: {tags:?}\n{}",
            r.stdout
        );
        assert!(r.stderr.contains(message), "{name}: {}", r.stderr);
    }

    // --layers writes the same files-layout layer, and `verify --layer` checks it as such.
    let dir = work.path().join("layers");
    let v = bake(
        &f,
        &["--layout", "files", "--layers", dir.to_str().unwrap()],
    );
    let listed: Value =
        serde_json::from_slice(&fs::read(dir.join("layers.json")).unwrap()).unwrap();
    let file = dir.join(listed["layers"][0]["file"].as_str().unwrap());
    assert_eq!(listed["layers"][0]["digest"], v["layers"][0]["digest"]);
    let paths: Vec<String> = read_layer(&file).iter().map(|(h, _)| path_of(h)).collect();
    assert!(paths.contains(&CONFIG.to_owned()), "{paths:?}");
    verify(
        &f,
        &["--layer", file.to_str().unwrap(), "--layout", "files"],
    )
    .ok();
    let r = verify(&f, &["--layer", file.to_str().unwrap()]);
    r.expect_code(1);
    assert!(
        r.stdout.contains("unlocked"),
        "checked as the cache layout it is not"
    );
}

/// `verify --oci` and `verify --image` tell the arrangement from the image's layers when
/// `--layout` is not given (a files image under a custom models folder, and the cache layout),
/// and report per layer only the repos whose files it holds (a dataset's layer shares the
/// `hub/` or `models/` folder with the model's, but holds no file of it).
#[test]
fn verify_detects_the_arrangement_and_names_each_layers_own_repos() {
    let hub = hub();
    let f = fetched(&hub, BOTH);
    let work = tempfile::tempdir().unwrap();
    let files = work.path().join("files");
    bake(
        &f,
        &[
            "--layout",
            "files",
            "--models-dir",
            "/srv/m",
            "--no-base",
            "--oci",
            files.to_str().unwrap(),
        ],
    );
    let r = verify(&f, &["--oci", files.to_str().unwrap()]);
    r.ok();
    assert!(r.stderr.contains("Detected"), "{}", r.stderr);
    let image = format!("oci:{}:latest", files.display());
    verify(&f, &["--image", &image]).ok();
    // Naming the other arrangement still checks in it, and fails.
    assert_eq!(
        verify(
            &f,
            &["--oci", files.to_str().unwrap(), "--layout", "hf-cache"]
        )
        .code,
        1
    );

    let cache = work.path().join("cache");
    bake(&f, &["--no-base", "--oci", cache.to_str().unwrap()]);
    let report: Value =
        serde_json::from_str(&verify(&f, &["--oci", cache.to_str().unwrap()]).ok().stdout).unwrap();
    for layer in report["layers"].as_array().unwrap() {
        assert_eq!(layer["repos"].as_array().unwrap().len(), 1, "{layer}");
    }
    let dataset_only = report["layers"]
        .as_array()
        .unwrap()
        .iter()
        .any(|l| l["repos"] == serde_json::json!(["dataset/acme/data"]));
    assert!(dataset_only, "{report}");
}
