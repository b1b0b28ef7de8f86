//! `bake --push` against the real Distribution registry: blobs pushed several at a time with a
//! per-blob `--json` report, the manifest stored only after every blob; a rerun finds every blob
//! present; the layer-count guard refuses before any request; labels and annotations land in
//! the config and the manifest as skopeo reads them.

use std::process::Command;

use hub_emulator::{FileSpec, HubEmulator, Repo};

use crate::support::oci::*;
use crate::support::*;

const THREE_REPOS: &str = "[[model]]\nid = \"acme/tiny\"\n\n[[dataset]]\nid = \"acme/data\"\n\n[[model]]\nid = \"acme/shards\"\n";

/// `acme/tiny`, `acme/data` and `acme/shards` (four 30 kB LFS shards, split by a small
/// `--max-layer-size`).
fn three_repo_hub() -> HubEmulator {
    let shards = (0..4)
        .map(|i| FileSpec::generated_lfs(&format!("model-0000{i}.safetensors"), 30_000, 40 + i))
        .chain([FileSpec::regular("config.json", CONFIG_JSON)])
        .collect();
    HubEmulator::builder()
        .repo(tiny_repo())
        .repo(dataset_repo())
        .repo(Repo::model("acme/shards").commit("main", shards))
        .start()
        .unwrap()
}

fn json(r: &Run) -> serde_json::Value {
    serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{e}: {}", r.stdout))
}

/// The sha256 hex of a `sha256:…` digest (the registry log shows digests URL-encoded).
fn hex(digest: &str) -> &str {
    digest.trim_start_matches("sha256:")
}

#[test]
fn pushes_blobs_in_parallel_reports_each_and_puts_the_manifest_last() {
    let (Some(registry_bin), Some(umoci), Some(skopeo)) =
        (tool("docker-registry"), tool("umoci"), tool("skopeo"))
    else {
        return;
    };
    let registry = Registry::start(&registry_bin);
    let hub = three_repo_hub();
    let f = Fetched::new(&hub, THREE_REPOS);
    f.fetch(&hub, &[]).ok();
    let work = tempfile::tempdir().unwrap();
    let base = busybox_base(&umoci, work.path());
    let target = format!("{}/models/app:v1", registry.addr);
    let push = |jobs: &str| {
        run(f
            .cmd()
            .args(["bake", "--json", "--insecure", "--push", &target])
            .args(["--base", &format!("oci:{}:latest", base.display())])
            .args(["--max-layer-size", "40000", "--push-jobs", jobs]))
    };

    let r = push("3");
    r.ok();
    let v = json(&r);
    let layers = v["layers"].as_array().unwrap();
    let blobs = v["blobs"].as_array().unwrap();
    let base_layers = v["base_layers"].as_u64().unwrap() as usize;
    assert!(base_layers >= 1, "{v}");
    assert!(layers.len() >= 5, "three repos, the shards split: {v}");
    assert_eq!(blobs.len(), base_layers + layers.len() + 1, "{v}");
    // Manifest order: base layers, our layers (with repo and part), the config.
    for b in &blobs[..base_layers] {
        assert_eq!(b["kind"], "base_layer", "{b}");
        assert!(b.get("repo").is_none(), "{b}");
    }
    for (b, l) in blobs[base_layers..].iter().zip(layers) {
        assert_eq!(b["kind"], "model_layer", "{b}");
        assert_eq!(b["digest"], l["digest"]);
        assert_eq!(b["size"], l["size"]);
        assert_eq!(b["repo"], l["repo"]);
        assert_eq!(b["part"], l["part"]);
    }
    let config = blobs.last().unwrap();
    assert_eq!(config["kind"], "config");
    assert_eq!(config["digest"], v["config_digest"]);
    // Everything was uploaded from here, each blob's bytes sent once.
    for b in blobs {
        assert_eq!(b["action"], "uploaded", "{b}");
        assert_eq!(b["bytes_sent"], b["size"], "{b}");
    }
    let total: u64 = blobs.iter().map(|b| b["size"].as_u64().unwrap()).sum();
    assert_eq!(v["bytes_sent"].as_u64(), Some(total));
    assert_eq!(v["uploaded"].as_u64(), Some(blobs.len() as u64));
    assert_eq!(v["skipped"], 0);
    // Without a terminal: one status line per blob.
    for l in layers {
        let repo = l["repo"].as_str().unwrap();
        let part = l["part"].as_str().unwrap();
        assert!(
            r.stderr
                .contains(&format!("Uploaded model layer {repo} {part}")),
            "{}",
            r.stderr
        );
    }

    // The registry log: every blob PUT completed before the manifest PUT.
    let log = registry.requests();
    let manifest_put = log
        .iter()
        .position(|l| l.starts_with("PUT /v2/models/app/manifests/v1"))
        .unwrap_or_else(|| panic!("no manifest PUT: {log:#?}"));
    for b in blobs {
        let digest = b["digest"].as_str().unwrap();
        let put = log
            .iter()
            .position(|l| {
                l.starts_with("PUT") && l.contains("/blobs/uploads/") && l.contains(hex(digest))
            })
            .unwrap_or_else(|| panic!("no PUT of {digest}: {log:#?}"));
        assert!(
            put < manifest_put,
            "{digest} was stored after the manifest: {log:#?}"
        );
    }

    // The pushed image is complete and correct: pulled back, it verifies against the lock.
    let pulled = work.path().join("pulled");
    pull_and_verify(&f, &skopeo, &["--src-tls-verify=false"], &target, &pulled);

    // A rerun finds every blob present and sends nothing; one request at a time gives the
    // same report as three.
    let before = log.len();
    let r = push("1");
    r.ok();
    let again = json(&r);
    assert_eq!(again["manifest_digest"], v["manifest_digest"]);
    let again_blobs = again["blobs"].as_array().unwrap();
    assert_eq!(again_blobs.len(), blobs.len());
    for (b, first) in again_blobs.iter().zip(blobs) {
        assert_eq!(b["action"], "present", "{b}");
        assert_eq!(b["bytes_sent"], 0, "{b}");
        assert_eq!(b["digest"], first["digest"]);
    }
    assert_eq!(again["skipped"].as_u64(), Some(blobs.len() as u64));
    assert_eq!(again["uploaded"], 0);
    let uploads: Vec<String> = registry.requests()[before..]
        .iter()
        .filter(|l| l.starts_with("POST") || (l.starts_with("PUT") && l.contains("/blobs/")))
        .cloned()
        .collect();
    assert!(uploads.is_empty(), "blobs sent again: {uploads:?}");
}

#[test]
fn more_than_127_layers_are_refused_before_any_request() {
    let Some(registry_bin) = tool("docker-registry") else {
        return;
    };
    let registry = Registry::start(&registry_bin);
    // 128 distinct files, one layer each with a 1-byte split size.
    let files = (0..128)
        .map(|i| FileSpec::generated_lfs(&format!("shard-{i:03}.bin"), 64, 1000 + i))
        .collect();
    let hub = HubEmulator::builder()
        .repo(Repo::model("acme/many").commit("main", files))
        .start()
        .unwrap();
    let f = Fetched::new(&hub, "[[model]]\nid = \"acme/many\"\n");
    f.fetch(&hub, &[]).ok();
    let r = run(f.cmd().args([
        "bake",
        "--insecure",
        "--max-layer-size",
        "1",
        "--push",
        &format!("{}/models/many:v1", registry.addr),
    ]));
    r.expect_code(1);
    assert!(
        r.stderr.contains("128 layers") && r.stderr.contains("more than the 127"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("hint:") && r.stderr.contains("max_layer_size"),
        "{}",
        r.stderr
    );
    let log = registry.requests();
    assert!(log.is_empty(), "the registry was contacted: {log:#?}");

    // Two shards per layer: 64 layers, pushed.
    let r = run(f.cmd().args([
        "bake",
        "--json",
        "--insecure",
        "--max-layer-size",
        "128",
        "--push",
        &format!("{}/models/many:v1", registry.addr),
    ]));
    r.ok();
    let v = json(&r);
    assert_eq!(v["layers"].as_array().unwrap().len(), 64, "{v}");
}

#[test]
fn labels_and_annotations_land_in_the_config_and_the_manifest() {
    let (Some(registry_bin), Some(skopeo)) = (tool("docker-registry"), tool("skopeo")) else {
        return;
    };
    let registry = Registry::start(&registry_bin);
    let hub = emulator();
    let f = Fetched::new(
        &hub,
        "[bake]\nlabels = { \"org.opencontainers.image.source\" = \"https://github.com/acme/app\", team = \"ml\" }\nannotations = { \"org.opencontainers.image.version\" = \"1.0\" }\n\n[[model]]\nid = \"acme/tiny\"\n",
    );
    f.fetch(&hub, &[]).ok();
    let target = format!("{}/models/labelled:v1", registry.addr);
    let r = run(f.cmd().args([
        "bake",
        "--json",
        "--insecure",
        "--push",
        &target,
        "--label",
        "team=infra",
        "--annotation",
        "org.opencontainers.image.source=https://github.com/acme/app",
    ]));
    r.ok();
    let config: serde_json::Value = serde_json::from_str(&sh(Command::new(&skopeo).args([
        "inspect",
        "--config",
        "--tls-verify=false",
        &format!("docker://{target}"),
    ])))
    .unwrap();
    assert_eq!(
        config["config"]["Labels"],
        serde_json::json!({
            "org.opencontainers.image.source": "https://github.com/acme/app",
            "team": "infra"
        })
    );
    let manifest: serde_json::Value = serde_json::from_str(&sh(Command::new(&skopeo).args([
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{target}"),
    ])))
    .unwrap();
    assert_eq!(
        manifest["annotations"],
        serde_json::json!({
            "org.opencontainers.image.source": "https://github.com/acme/app",
            "org.opencontainers.image.version": "1.0"
        })
    );

    // Without them the image has neither (tests/integration/golden.rs pins the digests).
    let plain = Fetched::new(&hub, "[[model]]\nid = \"acme/tiny\"\n");
    plain.fetch(&hub, &[]).ok();
    let out = plain.cache.path().join("oci");
    let r = run(plain
        .cmd()
        .args(["bake", "--json", "--oci", out.to_str().unwrap()]));
    r.ok();
    let v = json(&r);
    let blob = |digest: &serde_json::Value| -> serde_json::Value {
        let path = out.join("blobs/sha256").join(hex(digest.as_str().unwrap()));
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
    };
    assert!(blob(&v["manifest_digest"]).get("annotations").is_none());
    assert!(blob(&v["config_digest"])["config"].get("Labels").is_none());
    let bad = run(f.cmd().args(["bake", "--oci", "x", "--label", "novalue"]));
    bad.expect_code(2);
    assert!(bad.stderr.contains("KEY=VALUE"), "{}", bad.stderr);
}
