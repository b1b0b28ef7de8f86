//! The determinism promise, pinned: baking `examples/quickstart` (its committed lock, its Hub
//! fixture) gives the same layer, config and manifest digests in every release. The expected
//! digests were recorded from modelbake 0.1.0 before any refactoring; a change here means every
//! user's registry and nodes would download all their models again, so it must never happen
//! silently — new byte-changing behaviour needs a new opt-in setting instead.

use std::path::{Path, PathBuf};

use hub_emulator::{HubEmulator, Kind, Repo};
use sha2::{Digest, Sha256};

use crate::support::*;

/// The quick start's Hub, exactly as `scripts/quickstart` serves it.
fn quickstart_hub() -> HubEmulator {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/quickstart/hub");
    let model = Repo::from_dir(
        Kind::Model,
        "acme/tiny-bert",
        &root.join("models/acme/tiny-bert"),
    )
    .expect("quickstart model")
    .tag("v1.0", "main");
    let dataset = Repo::from_dir(
        Kind::Dataset,
        "acme/tiny-corpus",
        &root.join("datasets/acme/tiny-corpus"),
    )
    .expect("quickstart dataset")
    .tag("v1.0", "main");
    HubEmulator::builder()
        .repo(model)
        .repo(dataset)
        .start()
        .expect("start the Hub emulator")
}

fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// A base image layout written byte by byte (no modelbake code involved): a Docker schema 2
/// manifest with a Docker gzip layer media type, behind a Docker manifest list, and a config
/// with fields modelbake does not know (they must pass through untouched).
fn docker_style_base(dir: &Path) {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let put = |bytes: &[u8]| {
        let d = sha256_digest(bytes);
        std::fs::write(blobs.join(&d[7..]), bytes).unwrap();
        d
    };
    let layer: Vec<u8> = (0..4096u32).map(|i| (i * 7 % 251) as u8).collect();
    let layer_digest = put(&layer);
    let config = br#"{"architecture":"amd64","os":"linux","config":{"Env":["PATH=/usr/bin:/bin","HF_HOME=/old"],"Cmd":["/bin/sh"],"Labels":{"vendor":"acme"}},"rootfs":{"type":"layers","diff_ids":["sha256:1111111111111111111111111111111111111111111111111111111111111111"]},"history":[{"created_by":"base"}],"x-unknown":{"keep":[1,2,3]},"created":"2020-01-01T00:00:00Z"}"#;
    let config_digest = put(config);
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json","config":{{"mediaType":"application/vnd.docker.container.image.v1+json","size":{},"digest":"{config_digest}"}},"layers":[{{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","size":{},"digest":"{layer_digest}"}}]}}"#,
        config.len(),
        layer.len()
    );
    let manifest_digest = put(manifest.as_bytes());
    let list = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.list.v2+json","manifests":[{{"mediaType":"application/vnd.docker.distribution.manifest.v2+json","size":{},"digest":"{manifest_digest}","platform":{{"architecture":"amd64","os":"linux"}}}}]}}"#,
        manifest.len()
    );
    let list_digest = put(list.as_bytes());
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    std::fs::write(
        dir.join("index.json"),
        format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.docker.distribution.manifest.list.v2+json","size":{},"digest":"{list_digest}","annotations":{{"org.opencontainers.image.ref.name":"base"}}}}]}}"#,
            list.len()
        ),
    )
    .unwrap();
}

/// (layer digests, config digest, manifest digest) of one bake's `--json` report.
fn bake_digests(f: &Fetched, args: &[&str]) -> (Vec<String>, String, String) {
    let out = tempfile::tempdir().unwrap();
    let r = run(f
        .cmd()
        .env_remove("SOURCE_DATE_EPOCH")
        .args(["bake", "--json", "--oci"])
        .arg(out.path())
        .args(args));
    r.ok();
    let v: serde_json::Value =
        serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{e}: {}", r.stdout));
    let layers = v["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .map(|l| l["digest"].as_str().expect("digest").to_owned())
        .collect();
    (
        layers,
        v["config_digest"].as_str().expect("config").to_owned(),
        v["manifest_digest"].as_str().expect("manifest").to_owned(),
    )
}

/// The quick start, locked from its committed lock and fetched into a fresh store.
fn quickstart(hub: &HubEmulator) -> Fetched {
    let example = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/quickstart");
    let manifest = std::fs::read_to_string(example.join("models.toml")).unwrap();
    let f = Fetched {
        project: Project::new(&manifest),
        store: tempfile::tempdir().unwrap(),
        cache: tempfile::tempdir().unwrap(),
    };
    std::fs::copy(example.join("models.lock"), f.project.lock_path()).unwrap();
    f.project.lock_with(hub, &["--locked"]).ok();
    f.fetch(hub, &[]).ok();
    f
}

#[test]
fn quickstart_bakes_to_the_recorded_digests() {
    let hub = quickstart_hub();
    let f = quickstart(&hub);
    let base = tempfile::tempdir().unwrap();
    docker_style_base(base.path());
    let base_ref = format!("oci:{}:base", base.path().display());

    let cases: [(&str, Vec<&str>, [&str; 4]); 4] = [
        (
            "none",
            vec!["--compression", "none"],
            [
                GOLDEN_NONE_MODEL,
                GOLDEN_NONE_DATASET,
                GOLDEN_NONE_CONFIG,
                GOLDEN_NONE_MANIFEST,
            ],
        ),
        (
            "gzip",
            vec!["--compression", "gzip"],
            [
                GOLDEN_GZIP_MODEL,
                GOLDEN_GZIP_DATASET,
                GOLDEN_GZIP_CONFIG,
                GOLDEN_GZIP_MANIFEST,
            ],
        ),
        (
            "zstd",
            vec!["--compression", "zstd"],
            [
                GOLDEN_ZSTD_MODEL,
                GOLDEN_ZSTD_DATASET,
                GOLDEN_ZSTD_CONFIG,
                GOLDEN_ZSTD_MANIFEST,
            ],
        ),
        (
            "none on a Docker-style base",
            vec!["--compression", "none", "--base", base_ref.as_str()],
            [
                GOLDEN_NONE_MODEL,
                GOLDEN_NONE_DATASET,
                GOLDEN_BASE_CONFIG,
                GOLDEN_BASE_MANIFEST,
            ],
        ),
    ];
    let mut report = Vec::new();
    let mut failed = false;
    for (name, args, want) in &cases {
        let (layers, config, manifest) = bake_digests(&f, args);
        let got = [
            layers.first().cloned().unwrap_or_default(),
            layers.get(1).cloned().unwrap_or_default(),
            config,
            manifest,
        ];
        report.push(format!("{name}: {got:#?}"));
        failed |= layers.len() != 2 || got.iter().zip(want.iter()).any(|(g, w)| g != w);
    }
    assert!(
        !failed,
        "the quick start no longer bakes to the digests recorded from 0.1.0: every user's \
         registry would download all models again. Got:\n{}",
        report.join("\n")
    );
}

// Recorded from modelbake 0.1.0 (commit 09ab429), `bake --oci` with SOURCE_DATE_EPOCH unset.
const GOLDEN_NONE_MODEL: &str =
    "sha256:c664a7cbb71c1d278c34371f5733a8a97725859fef01b160a6ed0e9e6621edaa";
const GOLDEN_NONE_DATASET: &str =
    "sha256:11822aac393f336aef85b1f523a17de3f286238927c5e4b33bff047a5869f15b";
const GOLDEN_NONE_CONFIG: &str =
    "sha256:163683f37c9bd9e297aa507d5e3a5eec58f3518ec516a2de17287f488d93734c";
const GOLDEN_NONE_MANIFEST: &str =
    "sha256:eddb86e4430a8a58e43c17126aa4ab343585a432410a7ee2c89302a1169fdf6c";
const GOLDEN_GZIP_MODEL: &str =
    "sha256:2755ed3ba695c44387431e6179e87a06deb587fbd8284bef5eb6922a735703a1";
const GOLDEN_GZIP_DATASET: &str =
    "sha256:3c630c02f6b6a2c5eae8886b22fde5519dd7baef44f7e71c92b6251df31fdcd6";
const GOLDEN_GZIP_CONFIG: &str =
    "sha256:163683f37c9bd9e297aa507d5e3a5eec58f3518ec516a2de17287f488d93734c";
const GOLDEN_GZIP_MANIFEST: &str =
    "sha256:af6d843ad4f62f54d7a47cf4954b54e131d9bfdd36f4cf5b6dead162a662c028";
const GOLDEN_ZSTD_MODEL: &str =
    "sha256:ee447534f2eee63398d45a69550c40e3fc61609e6aaa854db8ee00d194cc1041";
const GOLDEN_ZSTD_DATASET: &str =
    "sha256:7bc15e04ed5be55ca61b8784d85762a0b0f85d564110bf171645ec3680b0a08e";
const GOLDEN_ZSTD_CONFIG: &str =
    "sha256:163683f37c9bd9e297aa507d5e3a5eec58f3518ec516a2de17287f488d93734c";
const GOLDEN_ZSTD_MANIFEST: &str =
    "sha256:f0ebb686a4d1874799c0096ad716457a2c815350f4dd6c1991845b84aa46d20e";
const GOLDEN_BASE_CONFIG: &str =
    "sha256:5dba90f941f42ffa6aa2d6057ef44775dd269c9efe3cf4a95258946aa1fd0da6";
const GOLDEN_BASE_MANIFEST: &str =
    "sha256:26d6dbfb523899e50fe1e85dbad82f48e43ad86b3d512728f9f06967c5c83072";
