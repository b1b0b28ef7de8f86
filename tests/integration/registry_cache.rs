//! The registry as the shared model cache (`--cache REGISTRY/REPO`), against a real
//! Distribution registry and the Hub emulator: runner A bakes and records its layers; runner B
//! (empty store) pushes an image on a base without a model file or a Hub request, its layers
//! mounted from the cache repository; runner C (empty store) fills its store from the records
//! and loads it with huggingface_hub offline; tampered records are ignored and the Hub takes
//! over; pull-only credentials still read the cache and a record push without rights warns.

use std::fs;
use std::path::Path;
use std::process::Command;

use base64::Engine;
use hub_emulator::HubEmulator;

use crate::support::oci::*;
use crate::support::token_service::TokenService;
use crate::support::*;

const TWO_REPOS: &str = "[[model]]\nid = \"acme/tiny\"\n\n[[dataset]]\nid = \"acme/data\"\n";

/// The project's binary with its own store (a runner) and the Hub emulator as the endpoint, so
/// any Hub request it made would show in the emulator's log.
fn runner(project: &Project, store: &Path, hub: &HubEmulator) -> Command {
    let mut c = project.cmd();
    c.env("MODELBAKE_STORE", store)
        .env("HF_ENDPOINT", hub.endpoint());
    c
}

fn json(r: &Run) -> serde_json::Value {
    serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{e}: {}\n{}", r.stdout, r.stderr))
}

fn strings(v: &serde_json::Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Files published in a store.
fn store_blobs(store: &Path) -> usize {
    fs::read_dir(store.join("blobs/sha256"))
        .map(|shards| {
            shards
                .filter_map(Result::ok)
                .map(|s| fs::read_dir(s.path()).map_or(0, |d| d.count()))
                .sum()
        })
        .unwrap_or(0)
}

/// Pushes the busybox base to `reg/base/busybox:1`.
fn push_base(reg: &str, dir: &Path) -> Option<String> {
    let (skopeo, umoci) = (tool("skopeo")?, tool("umoci")?);
    Some(push_busybox_base(&skopeo, &umoci, dir, reg))
}

#[test]
fn runners_share_layers_through_the_cache_repository() {
    let (Some(registry_bin), Some(skopeo)) = (tool("docker-registry"), tool("skopeo")) else {
        return;
    };
    let registry = Registry::start(&registry_bin);
    let reg = registry.addr.clone();
    let cache = format!("{reg}/cache/models");
    let work = tempfile::tempdir().unwrap();
    let Some(base) = push_base(&reg, work.path()) else {
        return;
    };
    let hub = emulator();
    let a = Fetched::new(&hub, TWO_REPOS);
    a.fetch(&hub, &[]).ok();

    // Runner A: fetched store; bakes, pushes and records.
    let r = run(a.cmd().args([
        "bake",
        "--json",
        "--insecure",
        "--cache",
        &cache,
        "--base",
        &base,
        "--push",
        &format!("{reg}/models/a:v1"),
    ]));
    r.ok();
    let va = json(&r);
    let model_layers: Vec<String> = va["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(model_layers.len(), 2);
    assert_eq!(strings(&va["cache"]["recorded"]), model_layers, "{va}");
    let tags = sh(Command::new(&skopeo).args([
        "list-tags",
        "--tls-verify=false",
        &format!("docker://{cache}"),
    ]));
    assert_eq!(tags.matches("modelbake-layer-v1-").count(), 2, "{tags}");

    // Runner B: empty store, no Hub: pushes the same image to another repository.
    let store_b = tempfile::tempdir().unwrap();
    hub.clear_requests();
    let before = registry.requests().len();
    let r = run(runner(&a.project, store_b.path(), &hub).args([
        "bake",
        "--json",
        "--insecure",
        "--cache",
        &cache,
        "--base",
        &base,
        "--push",
        &format!("{reg}/models/b:v1"),
    ]));
    r.ok();
    let vb = json(&r);
    assert!(
        hub.requests().is_empty(),
        "runner B asked the Hub: {:?}",
        hub.requests()
    );
    assert_eq!(
        store_blobs(store_b.path()),
        0,
        "runner B needed no model file"
    );
    assert_eq!(
        vb["manifest_digest"], va["manifest_digest"],
        "the same image"
    );
    assert_eq!(strings(&vb["cache"]["hits"]), model_layers);
    assert_eq!(vb["uploaded"], 1, "the config only: {vb}");
    let log = registry.requests()[before..].to_vec();
    for layer in &model_layers {
        assert!(
            !log.iter()
                .any(|l| l.starts_with("PUT") && l.contains(layer.as_str())),
            "model layer {layer} uploaded: {log:#?}"
        );
        assert!(
            !log.iter()
                .any(|l| l.starts_with("GET") && l.contains(layer.as_str())),
            "model layer {layer} downloaded: {log:#?}"
        );
        assert!(
            log.iter()
                .any(|l| l.starts_with("POST /v2/models/b/")
                    && l.contains(&format!("mount={layer}"))),
            "model layer {layer} not mounted: {log:#?}"
        );
    }
    // Pulled back, the image passes verify --oci.
    let pulled = work.path().join("pulled");
    skopeo_pull(
        &skopeo,
        &["--src-tls-verify=false"],
        &format!("{reg}/models/b:v1"),
        &pulled,
    );
    run(runner(&a.project, store_b.path(), &hub).args([
        "verify",
        "--oci",
        pulled.to_str().unwrap(),
        "--tag",
        "v1",
    ]))
    .ok();

    // Runner B again, writing an OCI layout: the layers come from the cache repository,
    // digest-checked, into its layer cache.
    let oci = work.path().join("oci-b");
    let r = run(runner(&a.project, store_b.path(), &hub).args([
        "bake",
        "--json",
        "--insecure",
        "--cache",
        &cache,
        "--base",
        &base,
        "--oci",
        oci.to_str().unwrap(),
    ]));
    r.ok();
    assert_eq!(json(&r)["cache"]["downloaded"], 2);
    assert_eq!(json(&r)["manifest_digest"], va["manifest_digest"]);
    run(runner(&a.project, store_b.path(), &hub).args(["verify", "--oci", oci.to_str().unwrap()]))
        .ok();
    assert!(hub.requests().is_empty());

    // Runner C: empty store, no Hub: fetch fills the store from the records.
    let c = tempfile::tempdir().unwrap();
    let hub_cache = c.path().join("hub");
    let r = run(runner(&a.project, &c.path().join("store"), &hub).args([
        "fetch",
        "--json",
        "--insecure",
        "--cache",
        &cache,
    ]));
    r.ok();
    let vc = json(&r);
    assert!(
        hub.requests().is_empty(),
        "runner C asked the Hub: {:?}",
        hub.requests()
    );
    assert_eq!(vc["downloaded"], 0, "{vc}");
    assert_eq!(
        vc["cache"]["served"].as_array().unwrap().len() as u64,
        vc["blobs"].as_u64().unwrap(),
        "every file from the cache: {vc}"
    );
    assert!(r.stderr.contains("Cached"), "{}", r.stderr);
    let mut export = runner(&a.project, &c.path().join("store"), &hub);
    run(export.args(["export", "--hub-cache", hub_cache.to_str().unwrap()])).ok();
    let mut verify = runner(&a.project, &c.path().join("store"), &hub);
    run(verify.args(["verify", "--hub-cache", hub_cache.to_str().unwrap()])).ok();
    let Some(py) = python() else { return };
    let out = sh(Command::new(py)
        .args([
            "-c",
            "from huggingface_hub import snapshot_download as s; import os; \
             r = s('acme/tiny', local_files_only=True); \
             print(open(os.path.join(r, 'config.json')).read(), end='')",
        ])
        .env("HF_HUB_OFFLINE", "1")
        .env("HF_HUB_CACHE", &hub_cache)
        .env("HF_HOME", c.path().join("home")));
    assert_eq!(out, CONFIG_JSON);
}

/// `curl` against the test registry (no auth): status and body.
fn curl(args: &[&str]) -> Vec<u8> {
    let out = Command::new("curl")
        .args(["-sS", "--fail-with-body"])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "curl {args:?}: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    out.stdout
}

const MEDIA_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// The record tags of the cache repository (none before it exists).
fn record_tags(skopeo: &Path, cache: &str) -> Vec<String> {
    let out = Command::new(skopeo)
        .args([
            "list-tags",
            "--tls-verify=false",
            &format!("docker://{cache}"),
        ])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    strings(&v["Tags"])
        .into_iter()
        .filter(|t| t.starts_with("modelbake-layer-v1-"))
        .collect()
}

fn put_record(reg: &str, tag: &str, record: &[u8], dir: &Path) {
    let file = dir.join("record.json");
    fs::write(&file, record).unwrap();
    curl(&[
        "-X",
        "PUT",
        "-H",
        &format!("Content-Type: {MEDIA_MANIFEST}"),
        "--data-binary",
        &format!("@{}", file.display()),
        &format!("http://{reg}/v2/cache/models/manifests/{tag}"),
    ]);
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// Uploads `bytes` as a blob of the cache repository `cache/models`; its digest.
fn push_blob(reg: &str, bytes: &[u8], dir: &Path) -> String {
    let digest = format!("sha256:{}", sha256_hex(bytes));
    let file = dir.join("blob");
    fs::write(&file, bytes).unwrap();
    let out = String::from_utf8(curl(&[
        "-i",
        "-X",
        "POST",
        &format!("http://{reg}/v2/cache/models/blobs/uploads/"),
    ]))
    .unwrap();
    let location = out
        .lines()
        .find_map(|l| {
            l.strip_prefix("Location: ")
                .or(l.strip_prefix("location: "))
        })
        .unwrap()
        .trim()
        .to_owned();
    let sep = if location.contains('?') { '&' } else { '?' };
    curl(&[
        "-X",
        "PUT",
        "-H",
        "Content-Type: application/octet-stream",
        "--data-binary",
        &format!("@{}", file.display()),
        &format!("{location}{sep}digest={digest}"),
    ]);
    digest
}

#[test]
fn tampered_records_are_ignored_and_the_fetch_falls_back_to_the_hub() {
    let (Some(registry_bin), Some(skopeo)) = (tool("docker-registry"), tool("skopeo")) else {
        return;
    };
    let registry = Registry::start(&registry_bin);
    let reg = registry.addr.clone();
    let cache = format!("{reg}/cache/models");
    let work = tempfile::tempdir().unwrap();
    let hub = emulator();
    // The same repo at two commits, each recorded.
    let old = Fetched::new(&hub, "[[model]]\nid = \"acme/tiny\"\nrevision = \"v1.0\"\n");
    let new = Fetched::new(&hub, "[[model]]\nid = \"acme/tiny\"\n");
    let mut tags_of = Vec::new();
    for f in [&old, &new] {
        f.fetch(&hub, &[]).ok();
        let known = record_tags(&skopeo, &cache);
        let out = work.path().join(format!("o{}", tags_of.len()));
        run(f.cmd().args([
            "bake",
            "--insecure",
            "--cache",
            &cache,
            "--oci",
            out.to_str().unwrap(),
        ]))
        .ok();
        let tags: Vec<String> = record_tags(&skopeo, &cache)
            .into_iter()
            .filter(|t| !known.contains(t))
            .collect();
        assert_eq!(tags.len(), 1, "{tags:?}");
        tags_of.push(tags[0].clone());
    }
    let (old_tag, new_tag) = (&tags_of[0], &tags_of[1]);
    let get_record = |tag: &str| {
        curl(&[
            "-H",
            &format!("Accept: {MEDIA_MANIFEST}"),
            &format!("http://{reg}/v2/cache/models/manifests/{tag}"),
        ])
    };
    let genuine = get_record(old_tag);

    let fetch_old = |what: &str| {
        let store = tempfile::tempdir().unwrap();
        hub.clear_requests();
        let r = run(runner(&old.project, store.path(), &hub).args([
            "fetch",
            "--json",
            "--insecure",
            "--cache",
            &cache,
            "--endpoint",
            &hub.endpoint(),
        ]));
        r.ok();
        assert!(
            r.stderr.contains("warning: cache repository"),
            "{what}: no warning: {}",
            r.stderr
        );
        let hub_cache = store.path().join("hub");
        let mut export = runner(&old.project, store.path(), &hub);
        run(export.args(["export", "--hub-cache", hub_cache.to_str().unwrap()])).ok();
        let mut verify = runner(&old.project, store.path(), &hub);
        run(verify.args(["verify", "--hub-cache", hub_cache.to_str().unwrap()])).ok();
        (json(&r), hub.requests().len())
    };

    // 1. The old commit's tag names the new commit's layer.
    put_record(&reg, old_tag, &get_record(new_tag), work.path());
    let (v, hub_requests) = fetch_old("another commit");
    assert_eq!(v["cache"]["served"].as_array().unwrap().len(), 0, "{v}");
    assert!(
        strings(&v["cache"]["warnings"])[0].contains("commit"),
        "{v}"
    );
    assert!(hub_requests > 0 && v["downloaded"].as_u64() == v["blobs"].as_u64());

    // 2. A layer with one flipped byte inside config.json, under a record whose annotations
    // still claim the right commit and files.
    let record: serde_json::Value = serde_json::from_slice(&genuine).unwrap();
    let layer = record["layers"][0]["digest"].as_str().unwrap();
    let mut blob = curl(&[&format!("http://{reg}/v2/cache/models/blobs/{layer}"), "-L"]);
    let at = blob
        .windows(CONFIG_JSON.len())
        .position(|w| w == CONFIG_JSON.as_bytes())
        .expect("config.json in the uncompressed layer");
    blob[at + 3] ^= 0x01;
    let flipped = push_blob(&reg, &blob, work.path());
    let tampered = String::from_utf8(genuine.clone())
        .unwrap()
        .replace(layer, &flipped);
    put_record(&reg, old_tag, tampered.as_bytes(), work.path());
    let (v, _) = fetch_old("flipped byte");
    let warnings = strings(&v["cache"]["warnings"]);
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("not used further") && w.contains("sha256")),
        "{v}"
    );
    let served: Vec<String> = v["cache"]["served"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["path"].as_str().unwrap().to_owned())
        .collect();
    assert!(!served.contains(&"config.json".to_owned()), "{served:?}");
    assert!(
        v["downloaded"].as_u64().unwrap() >= 1,
        "the Hub delivered the rest: {v}"
    );
}

#[test]
fn pull_only_credentials_read_the_cache_and_a_record_push_without_rights_warns() {
    let Some(registry_bin) = tool("docker-registry") else {
        return;
    };
    let tokens = TokenService::builder()
        .user("ci", "writer-secret", &["pull", "push"])
        .user("reader", "reader-secret", &["pull"])
        .start();
    let registry = Registry::start_configured(&registry_bin, |_| tokens.registry_yaml());
    let cache = format!("{}/cache/models", registry.addr);
    let docker_config = |dir: &Path, user: &str, password: &str| {
        fs::create_dir_all(dir).unwrap();
        let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        fs::write(
            dir.join("config.json"),
            format!(r#"{{"auths":{{"{}":{{"auth":"{auth}"}}}}}}"#, registry.addr),
        )
        .unwrap();
    };
    let hub = emulator();
    let writer = Fetched::new(&hub, "[[model]]\nid = \"acme/tiny\"\n");
    writer.fetch(&hub, &[]).ok();
    let work = tempfile::tempdir().unwrap();
    docker_config(&work.path().join("ci"), "ci", "writer-secret");
    docker_config(&work.path().join("reader"), "reader", "reader-secret");
    let r = run(writer
        .cmd()
        .args([
            "bake",
            "--json",
            "--insecure",
            "--cache",
            &cache,
            "--layers",
        ])
        .arg(work.path().join("l"))
        .env("DOCKER_CONFIG", work.path().join("ci")));
    r.ok();
    assert_eq!(
        strings(&json(&r)["cache"]["recorded"]).len(),
        1,
        "{}",
        r.stdout
    );

    // The reader's project has one more repo: acme/tiny comes from the cache, acme/data from
    // the Hub, and recording acme/data's layer is refused: a warning, not a failure.
    let reader = Fetched::new(&hub, TWO_REPOS);
    let r = run(reader
        .cmd()
        .args([
            "fetch",
            "--json",
            "--insecure",
            "--cache",
            &cache,
            "--endpoint",
            &hub.endpoint(),
        ])
        .env("DOCKER_CONFIG", work.path().join("reader")));
    r.ok();
    let v = json(&r);
    let served: Vec<&str> = v["cache"]["served"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["repo"].as_str().unwrap())
        .collect();
    assert!(
        !served.is_empty() && served.iter().all(|r| *r == "model/acme/tiny"),
        "{v}"
    );
    assert!(
        v["downloaded"].as_u64().unwrap() >= 1,
        "acme/data from the Hub: {v}"
    );

    let r = run(reader
        .cmd()
        .args(["bake", "--json", "--insecure", "--cache", &cache, "--oci"])
        .arg(work.path().join("o"))
        .env("DOCKER_CONFIG", work.path().join("reader")));
    r.ok();
    let v = json(&r);
    assert_eq!(strings(&v["cache"]["hits"]).len(), 1, "{v}");
    assert!(strings(&v["cache"]["recorded"]).is_empty(), "{v}");
    assert!(
        r.stderr.contains("warning: cache repository") && r.stderr.contains("push rights"),
        "{}",
        r.stderr
    );
    for secret in ["writer-secret", "reader-secret"] {
        assert!(!r.stderr.contains(secret) && !r.stdout.contains(secret));
    }
    run(reader
        .cmd()
        .args(["verify", "--oci"])
        .arg(work.path().join("o")))
    .ok();
}

#[test]
fn without_a_cache_no_registry_is_asked() {
    let Some(registry_bin) = tool("docker-registry") else {
        return;
    };
    let registry = Registry::start(&registry_bin);
    let hub = emulator();
    let f = Fetched::new(&hub, "[[model]]\nid = \"acme/tiny\"\n");
    f.fetch(&hub, &[]).ok();
    let out = f.cache.path().join("o");
    let r = run(f
        .cmd()
        .args(["bake", "--json", "--oci", out.to_str().unwrap()]));
    r.ok();
    assert!(json(&r).get("cache").is_none());
    // `[cache]` in models.toml turned off with --no-cache: still nothing asked.
    f.project.write_manifest(&format!(
        "[[model]]\nid = \"acme/tiny\"\n\n[cache]\nregistry = \"{}/cache/models\"\n",
        registry.addr
    ));
    let r = run(f.cmd().args([
        "bake",
        "--json",
        "--no-cache",
        "--oci",
        out.to_str().unwrap(),
    ]));
    r.ok();
    assert!(json(&r).get("cache").is_none());
    assert!(registry.requests().is_empty(), "{:?}", registry.requests());
    // An unreachable cache repository: one warning, then the bake goes on without it.
    let r = run(f.cmd().args([
        "bake",
        "--json",
        "--insecure",
        "--cache",
        "127.0.0.1:1/cache/models",
        "--oci",
        out.to_str().unwrap(),
    ]));
    r.ok();
    assert_eq!(
        r.stderr.matches("not asked further").count(),
        1,
        "{}",
        r.stderr
    );
    // And with it on, the manifest's cache repository is used.
    let r = run(f.cmd().args([
        "bake",
        "--json",
        "--insecure",
        "--oci",
        out.to_str().unwrap(),
    ]));
    r.ok();
    assert_eq!(
        strings(&json(&r)["cache"]["recorded"]).len(),
        1,
        "{}",
        r.stdout
    );
}

#[test]
fn a_poisoned_record_is_checked_file_by_file_and_never_kept() {
    let Some(registry_bin) = tool("docker-registry") else {
        return;
    };
    let registry = Registry::start(&registry_bin);
    let reg = registry.addr.clone();
    let cache = format!("{reg}/cache/models");
    let work = tempfile::tempdir().unwrap();
    let hub = emulator();
    let a = Fetched::new(&hub, "[[model]]\nid = \"acme/tiny\"\n");
    a.fetch(&hub, &[]).ok();
    // Runner A bakes and records the genuine layer.
    let r = run(a
        .cmd()
        .args(["bake", "--json", "--insecure", "--cache", &cache, "--oci"])
        .arg(work.path().join("a")));
    r.ok();
    let genuine_image = json(&r)["manifest_digest"].clone();
    let tags = serde_json::from_slice::<serde_json::Value>(&curl(&[&format!(
        "http://{reg}/v2/cache/models/tags/list"
    )]))
    .unwrap();
    let [tag] = strings(&tags["tags"]).try_into().unwrap();
    let url = format!("http://{reg}/v2/cache/models/manifests/{tag}");
    let genuine = curl(&["-H", &format!("Accept: {MEDIA_MANIFEST}"), &url]);
    let record: serde_json::Value = serde_json::from_slice(&genuine).unwrap();
    let layer = record["layers"][0]["digest"].as_str().unwrap();

    // The layer with one flipped byte inside config.json (same size), under a record whose
    // digest names it and whose every annotation is the genuine one.
    let mut blob = curl(&[&format!("http://{reg}/v2/cache/models/blobs/{layer}"), "-L"]);
    let at = blob
        .windows(CONFIG_JSON.len())
        .position(|w| w == CONFIG_JSON.as_bytes())
        .expect("config.json in the uncompressed layer");
    blob[at + 3] ^= 0x01;
    let poisoned = push_blob(&reg, &blob, work.path());
    let tampered = String::from_utf8(genuine.clone())
        .unwrap()
        .replace(layer, &poisoned);
    put_record(&reg, &tag, tampered.as_bytes(), work.path());

    // Runner A's own layer cache wins over the record.
    let r = run(a
        .cmd()
        .args(["bake", "--json", "--insecure", "--cache", &cache, "--oci"])
        .arg(work.path().join("a2")));
    r.ok();
    assert_eq!(json(&r)["manifest_digest"], genuine_image, "{}", r.stderr);
    assert!(
        r.stderr.contains("the layer cache's is used"),
        "{}",
        r.stderr
    );

    // Runner B has the store files but no layer cache: the download is checked against the
    // lock, refused with a warning, and the layer is built here instead.
    let store_b = tempfile::tempdir().unwrap();
    run(runner(&a.project, store_b.path(), &hub).args(["fetch", "--endpoint", &hub.endpoint()]))
        .ok();
    let oci_b = work.path().join("b");
    let r = run(runner(&a.project, store_b.path(), &hub)
        .args(["bake", "--json", "--insecure", "--cache", &cache, "--oci"])
        .arg(&oci_b));
    r.ok();
    let v = json(&r);
    assert!(
        r.stderr.contains("warning: cache repository") && r.stderr.contains(&poisoned),
        "no warning about the poisoned layer: {}",
        r.stderr
    );
    assert_eq!(v["manifest_digest"], genuine_image, "{v}");
    assert_eq!(v["cache"]["downloaded"], 0, "{v}");
    // The layer built here is recorded again, in place of the poisoned record.
    assert_eq!(strings(&v["cache"]["recorded"]), [layer], "{v}");
    run(runner(&a.project, store_b.path(), &hub)
        .args(["verify", "--oci"])
        .arg(&oci_b))
    .ok();
    let kept = store_b
        .path()
        .join("layers/blobs/sha256")
        .join(&poisoned[7..]);
    assert!(!kept.exists(), "the poisoned layer is in the layer cache");
    // Nothing poisoned is reused either.
    let r = run(runner(&a.project, store_b.path(), &hub)
        .args(["bake", "--json", "--no-cache", "--oci"])
        .arg(work.path().join("b2")));
    r.ok();
    assert_eq!(json(&r)["manifest_digest"], genuine_image);

    // Runner C has nothing: the bake stops, saying why the record did not help.
    put_record(&reg, &tag, tampered.as_bytes(), work.path());
    let store_c = tempfile::tempdir().unwrap();
    let r = run(runner(&a.project, store_c.path(), &hub)
        .args(["bake", "--insecure", "--cache", &cache, "--oci"])
        .arg(work.path().join("c")));
    assert_ne!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stderr.contains("not in the store") && r.stderr.contains(&poisoned),
        "{}",
        r.stderr
    );
    assert!(
        !store_c
            .path()
            .join("layers/blobs/sha256")
            .join(&poisoned[7..])
            .exists(),
        "the poisoned layer is in runner C's layer cache"
    );
}

/// An ECDSA P-256 key pair made with openssl: (private PKCS#8 PEM, public PEM).
fn p256_keys(openssl: &Path, dir: &Path, name: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let (key, public) = (
        dir.join(format!("{name}.key")),
        dir.join(format!("{name}.pub")),
    );
    sh(Command::new(openssl)
        .args([
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
        ])
        .arg(&key));
    sh(Command::new(openssl)
        .args(["pkey", "-pubout", "-in"])
        .arg(&key)
        .arg("-out")
        .arg(&public));
    (key, public)
}

#[test]
fn with_a_trust_key_only_records_signed_by_its_key_are_used() {
    let (Some(registry_bin), Some(openssl)) = (tool("docker-registry"), tool("openssl")) else {
        return;
    };
    let registry = Registry::start(&registry_bin);
    let reg = registry.addr.clone();
    let keys = tempfile::tempdir().unwrap();
    let (signing, trusted) = p256_keys(&openssl, keys.path(), "ci");
    let (_, other) = p256_keys(&openssl, keys.path(), "other");
    let hub = emulator();
    let a = Fetched::new(&hub, TWO_REPOS);
    a.fetch(&hub, &[]).ok();
    // `bake --oci` of `a`'s lock with `store`, the cache repository `cache` and a key flag.
    let bake = |store: &Path, cache: &str, key: Option<(&str, &Path)>| {
        let out = tempfile::tempdir().unwrap();
        let mut c = runner(&a.project, store, &hub);
        c.args([
            "bake",
            "--json",
            "--insecure",
            "--no-base",
            "--cache",
            cache,
            "--oci",
        ])
        .arg(out.path());
        if let Some((flag, path)) = key {
            c.arg(flag).arg(path);
        }
        let r = run(&mut c);
        r.ok();
        json(&r)
    };
    // Runner A signs what it records; an unsigned runner records into another repository.
    let signed = format!("{reg}/cache/signed");
    let unsigned = format!("{reg}/cache/unsigned");
    let va = bake(
        a.store.path(),
        &signed,
        Some(("--cache-sign-key", &signing)),
    );
    assert_eq!(strings(&va["cache"]["recorded"]).len(), 2, "{va}");
    bake(a.store.path(), &unsigned, None);

    // Runner B (empty store) trusts A's key: A's records are used, no Hub request.
    let store_b = tempfile::tempdir().unwrap();
    hub.clear_requests();
    let vb = bake(
        store_b.path(),
        &signed,
        Some(("--cache-trust-key", &trusted)),
    );
    assert_eq!(strings(&vb["cache"]["hits"]).len(), 2, "{vb}");
    assert!(hub.requests().is_empty(), "{:?}", hub.requests());
    assert_eq!(vb["manifest_digest"], va["manifest_digest"]);

    // With another key, or on unsigned records, nothing is taken from the cache: the layers
    // are built from the (fetched) store, each record ignored with a warning.
    for (cache, key, why) in [
        (&signed, &other, "does not verify"),
        (&unsigned, &trusted, "is not signed"),
    ] {
        let v = bake(a.store.path(), cache, Some(("--cache-trust-key", key)));
        assert!(strings(&v["cache"]["hits"]).is_empty(), "{v}");
        let warnings = strings(&v["cache"]["warnings"]);
        assert!(
            warnings.len() >= 2 && warnings.iter().all(|w| w.contains(why)),
            "{warnings:?}"
        );
        assert_eq!(v["manifest_digest"], va["manifest_digest"]);
    }
}
