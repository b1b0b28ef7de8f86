//! Pushes through a fault-injecting proxy in front of a real Distribution registry: dropped
//! connections mid-chunk, error statuses once on every kind of request, ECR's 201 for PATCH,
//! chunk size limits, and all of them together. Each push completes, resends little after a
//! cut (measured at the proxy), pulls back (skopeo) to an image `modelbake verify --oci`
//! accepts, and leaves no upload session behind; a push that gives up leaves no tag.

use std::fs;
use std::path::Path;
use std::process::Command;

use hub_emulator::{FileSpec, HubEmulator, Repo, generate};

use crate::support::fault_proxy::{Cut, FaultProxy, Faults, Logged, StatusFault};
use crate::support::oci::{Registry, pull_and_verify, push_busybox_base};
use crate::support::token_service::TokenService;
use crate::support::*;

const MIB: u64 = 1 << 20;
/// The model file: big enough for a layer of several chunks.
const WEIGHTS: usize = 6 << 20;

/// A hub with one model whose layer is a little over [`WEIGHTS`] bytes.
fn big_hub() -> HubEmulator {
    HubEmulator::builder()
        .repo(Repo::model("acme/big").commit(
            "main",
            vec![
                FileSpec::regular(
                    ".gitattributes",
                    "*.bin filter=lfs diff=lfs merge=lfs -text\n",
                ),
                FileSpec::regular("config.json", "{\"model_type\": \"bert\"}\n"),
                FileSpec::lfs("weights.bin", generate(WEIGHTS, 11)),
            ],
        ))
        .start()
        .unwrap()
}

/// `models.toml` for `acme/big`, uploading to `host` in chunks of `chunk` bytes from
/// `threshold` bytes on.
fn manifest(host: &str, threshold: u64, chunk: u64) -> String {
    format!(
        "[[model]]\nid = \"acme/big\"\n\n[bake.registry.\"{host}\"]\nchunked_threshold = {threshold}\nchunk_size = {chunk}\n"
    )
}

/// The upload requests (blob PATCH and PUT) in the proxy's log.
fn uploads(log: &[Logged]) -> Vec<&Logged> {
    log.iter()
        .filter(|l| {
            l.path.contains("/blobs/uploads/") && (l.method == "PATCH" || l.method == "PUT")
        })
        .collect()
}

/// Upload sessions Distribution still keeps for `repo` (under its storage root).
fn open_sessions(registry: &Registry, repo: &str) -> Vec<String> {
    let dir = registry
        .data_dir()
        .join("docker/registry/v2/repositories")
        .join(repo)
        .join("_uploads");
    fs::read_dir(&dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// What one push through the proxy did.
struct Pushed {
    log: Vec<Logged>,
    /// Bytes of the blobs of the image (layers and config).
    blob_bytes: u64,
}

/// Pushes `acme/big` through a proxy with `faults` (chunked from 1 MiB, chunks of `chunk`
/// bytes), then checks what every push must give: the pulled-back image verifies, the
/// manifest came after every blob, and the registry keeps one of `sessions_left` upload
/// sessions (none, unless the registry itself failed to remove one).
fn push_through(faults: Faults, chunk: u64, sessions_left: &[usize]) -> Option<Pushed> {
    let (Some(registry_bin), Some(skopeo)) = (tool("docker-registry"), tool("skopeo")) else {
        return None;
    };
    let registry = Registry::start(&registry_bin);
    let proxy = FaultProxy::start(&registry.addr, faults);
    let hub = big_hub();
    let f = Fetched::new(&hub, &manifest(&proxy.addr, MIB, chunk));
    f.fetch(&hub, &[]).ok();
    let r = run(f.cmd().args([
        "bake",
        // Upload sessions are counted: only the image's blobs.
        "--no-attestations",
        "--json",
        "--insecure",
        "--push",
        &format!("{}/models/app:v1", proxy.addr),
    ]));
    r.ok();
    let report: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let blob_bytes = report["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["size"].as_u64().unwrap())
        .sum::<u64>();

    let log = proxy.log();
    let manifest_at = log
        .iter()
        .rposition(|l| l.method == "PUT" && l.path.contains("/manifests/") && l.status == 201)
        .expect("the manifest was stored");
    let last_blob = log
        .iter()
        .rposition(|l| l.method == "PUT" && l.path.contains("digest=") && l.status == 201)
        .expect("blobs were stored");
    assert!(last_blob < manifest_at, "manifest before a blob: {log:#?}");
    let open = open_sessions(&registry, "models/app");
    assert!(
        sessions_left.contains(&open.len()),
        "upload sessions left open: {open:?}, expected {sessions_left:?} of them"
    );

    let pulled = f.cache.path().join("pulled");
    pull_and_verify(
        &f,
        &skopeo,
        &["--src-tls-verify=false"],
        &format!("{}/models/app:v1", registry.addr),
        &pulled,
    );
    Some(Pushed {
        log,
        blob_bytes: blob_bytes + config_size(&pulled),
    })
}

/// The config blob's size in a pulled layout.
fn config_size(layout: &Path) -> u64 {
    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(layout.join("index.json")).unwrap()).unwrap();
    let digest = index["manifests"][0]["digest"].as_str().unwrap();
    let manifest: serde_json::Value =
        serde_json::from_slice(&fs::read(layout.join("blobs/sha256").join(&digest[7..])).unwrap())
            .unwrap();
    manifest["config"]["size"].as_u64().unwrap()
}

/// A cut four and a half chunks into the layer, nothing of it reaching the registry.
fn cut_mid_layer() -> Cut {
    Cut {
        method: "PATCH",
        after: 4 * MIB + MIB / 2,
        forward_partial: false,
    }
}

#[test]
fn a_cut_chunk_resumes_at_the_registrys_offset() {
    let Some(p) = push_through(
        Faults {
            cut: Some(cut_mid_layer()),
            ..Faults::default()
        },
        MIB,
        &[0],
    ) else {
        return;
    };
    let ups = uploads(&p.log);
    assert!(
        ups.iter().any(|l| l.status == 0),
        "the cut happened: {ups:#?}"
    );
    let sent: u64 = ups.iter().map(|l| l.body).sum();
    eprintln!(
        "cut layer: {sent} bytes sent for {} bytes of blobs ({:.2}x)",
        p.blob_bytes,
        sent as f64 / p.blob_bytes as f64
    );
    assert!(
        (sent as f64) < 1.3 * p.blob_bytes as f64,
        "{sent} bytes sent for {} bytes of blobs: restarted, not resumed",
        p.blob_bytes
    );
    // Resumed: one session (one POST besides the config's) and a status GET after the cut.
    assert!(
        p.log
            .iter()
            .any(|l| l.method == "GET" && l.path.contains("/blobs/uploads/") && l.status == 204),
        "{:#?}",
        p.log
    );
    let posts = p.log.iter().filter(|l| l.method == "POST").count();
    assert_eq!(posts, 2, "one session for the layer, one for the config");
}

#[test]
fn chunks_are_patched_with_ranges_and_small_blobs_go_in_one_put() {
    let Some(p) = push_through(Faults::default(), MIB, &[0]) else {
        return;
    };
    let patches: Vec<&Logged> = p.log.iter().filter(|l| l.method == "PATCH").collect();
    assert_eq!(
        patches.len() as u64,
        (p.blob_bytes - 4096).div_ceil(MIB),
        "{patches:#?}"
    );
    assert!(patches.iter().all(|l| l.body <= MIB && l.status == 202));
    // The config (a few hundred bytes) went in its PUT.
    assert!(
        p.log.iter().any(|l| l.method == "PUT"
            && l.path.contains("digest=")
            && l.body > 0
            && l.body < 4096),
        "{:#?}",
        p.log
    );
}

#[test]
fn error_statuses_once_on_every_kind_of_request_are_retried() {
    let faults = Faults {
        statuses: vec![
            StatusFault::once("HEAD", "/blobs/", 429),
            StatusFault::once("POST", "/blobs/uploads/", 502),
            StatusFault {
                skip: 2,
                ..StatusFault::once("PATCH", "/blobs/uploads/", 500)
            },
            StatusFault::once("PUT", "digest=", 503),
            StatusFault::once("PUT", "/manifests/", 500),
        ],
        ..Faults::default()
    };
    let Some(p) = push_through(faults, MIB, &[0]) else {
        return;
    };
    for (method, status) in [
        ("HEAD", 429),
        ("POST", 502),
        ("PATCH", 500),
        ("PUT", 503),
        ("PUT", 500),
    ] {
        assert!(
            p.log
                .iter()
                .any(|l| l.method == method && l.status == status),
            "{method} {status} not injected: {:#?}",
            p.log
        );
    }
    let sent: u64 = uploads(&p.log).iter().map(|l| l.body).sum();
    assert!((sent as f64) < 1.3 * p.blob_bytes as f64, "{sent}");
}

#[test]
fn patch_answered_201_as_ecr_does() {
    let Some(p) = push_through(
        Faults {
            patch_201: true,
            ..Faults::default()
        },
        MIB,
        &[0],
    ) else {
        return;
    };
    assert!(
        p.log
            .iter()
            .filter(|l| l.method == "PATCH")
            .all(|l| l.status == 201)
    );
}

#[test]
fn the_registrys_minimum_chunk_length_is_honoured() {
    // Asked for 1 MiB chunks, the registry announces 2 MiB and refuses a short chunk that is
    // not the last.
    let Some(p) = push_through(
        Faults {
            min_chunk: Some(2 * MIB),
            ..Faults::default()
        },
        MIB,
        &[0],
    ) else {
        return;
    };
    let patches: Vec<&Logged> = p.log.iter().filter(|l| l.method == "PATCH").collect();
    assert!(patches.iter().all(|l| l.status == 202), "{patches:#?}");
    assert!(
        patches[..patches.len() - 1]
            .iter()
            .all(|l| l.body == 2 * MIB)
    );
}

#[test]
fn a_maximum_chunk_size_is_kept() {
    let Some(p) = push_through(
        Faults {
            max_chunk: Some(MIB),
            ..Faults::default()
        },
        MIB,
        &[0],
    ) else {
        return;
    };
    assert!(
        p.log
            .iter()
            .filter(|l| l.method == "PATCH")
            .all(|l| l.status == 202 && l.body <= MIB)
    );
}

#[test]
fn all_faults_together() {
    let faults = Faults {
        cut: Some(cut_mid_layer()),
        statuses: vec![
            StatusFault::once("HEAD", "/blobs/", 503),
            StatusFault::once("POST", "/blobs/uploads/", 500),
            StatusFault {
                skip: 1,
                ..StatusFault::once("PATCH", "/blobs/uploads/", 429)
            },
            StatusFault::once("PUT", "digest=", 502),
            StatusFault::once("PUT", "/manifests/", 503),
        ],
        patch_201: true,
        min_chunk: Some(MIB),
        max_chunk: Some(MIB),
        delay: Some(("PATCH", std::time::Duration::from_millis(20))),
        ..Faults::default()
    };
    let Some(p) = push_through(faults, MIB, &[0]) else {
        return;
    };
    let sent: u64 = uploads(&p.log).iter().map(|l| l.body).sum();
    assert!(
        (sent as f64) < 1.3 * p.blob_bytes as f64,
        "{sent} bytes sent for {}",
        p.blob_bytes
    );
}

#[test]
fn a_session_the_registry_cancelled_starts_over() {
    // Distribution keeps the partial chunk, then cancels the session when asked for its
    // offset (the state it signed no longer matches): the only way on is a new session.
    let Some(p) = push_through(
        Faults {
            cut: Some(Cut {
                forward_partial: true,
                ..cut_mid_layer()
            }),
            ..Faults::default()
        },
        MIB,
        // Distribution answers 404; whether it leaves the cancelled session's folder behind
        // (its upload purger removes it later) is the registry's doing, not the push's. The
        // proxy waits for the registry's answer to the cut chunk before the client goes on,
        // so the status query always finds the session changed.
        &[0, 1],
    ) else {
        return;
    };
    let posts = p.log.iter().filter(|l| l.method == "POST").count();
    assert_eq!(posts, 3, "a second session for the layer: {:#?}", p.log);
}

#[test]
fn a_push_that_gives_up_leaves_no_tag() {
    let (Some(registry_bin), Some(skopeo)) = (tool("docker-registry"), tool("skopeo")) else {
        return;
    };
    let registry = Registry::start(&registry_bin);
    let proxy = FaultProxy::start(
        &registry.addr,
        Faults {
            statuses: vec![StatusFault {
                skip: 2,
                times: 100,
                ..StatusFault::once("PATCH", "/blobs/uploads/", 503)
            }],
            ..Faults::default()
        },
    );
    let hub = big_hub();
    let f = Fetched::new(&hub, &manifest(&proxy.addr, MIB, MIB));
    f.fetch(&hub, &[]).ok();
    let r = run(f
        .cmd()
        .args([
            "bake",
            // Upload sessions are counted: only the image's blobs.
            "--no-attestations",
            "--insecure",
            "--push",
            &format!("{}/models/app:v1", proxy.addr),
        ])
        .env("MODELBAKE_HTTP_RETRIES", "2"));
    r.expect_code(1);
    assert!(
        r.stderr.contains("gave up") && r.stderr.contains("MODELBAKE_HTTP_RETRIES"),
        "{}",
        r.stderr
    );
    assert!(
        !proxy.log().iter().any(|l| l.path.contains("/manifests/")),
        "a manifest was sent"
    );
    let inspect = Command::new(&skopeo)
        .args([
            "inspect",
            "--raw",
            "--tls-verify=false",
            &format!("docker://{}/models/app:v1", registry.addr),
        ])
        .output()
        .unwrap();
    assert!(!inspect.status.success(), "the tag exists");
}

#[test]
fn a_streamed_base_layer_copy_starts_its_source_again_after_a_cut() {
    let (Some(registry_bin), Some(skopeo), Some(umoci)) =
        (tool("docker-registry"), tool("skopeo"), tool("umoci"))
    else {
        return;
    };
    let registry = Registry::start(&registry_bin);
    // The base lives on the registry itself, the push goes through the proxy: another host,
    // so its layer is streamed from one to the other.
    let work = tempfile::tempdir().unwrap();
    let base_ref = push_busybox_base(&skopeo, &umoci, work.path(), &registry.addr);
    let proxy = FaultProxy::start(
        &registry.addr,
        Faults {
            cut: Some(Cut {
                method: "PATCH",
                after: 300_000,
                forward_partial: false,
            }),
            ..Faults::default()
        },
    );
    let hub = big_hub();
    let f = Fetched::new(&hub, &manifest(&proxy.addr, 128 << 10, 128 << 10));
    f.fetch(&hub, &[]).ok();
    let r = run(f.cmd().args([
        "bake",
        // Upload sessions are counted: only the image's blobs.
        "--no-attestations",
        "--json",
        "--insecure",
        "--base",
        &base_ref,
        "--push",
        &format!("{}/models/app:v1", proxy.addr),
    ]));
    r.ok();
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["copied"], 1, "{v}");
    let log = proxy.log();
    assert!(log.iter().any(|l| l.status == 0), "no cut: {log:#?}");
    let pulled = f.cache.path().join("pulled");
    pull_and_verify(
        &f,
        &skopeo,
        &["--src-tls-verify=false"],
        &format!("{}/models/app:v1", registry.addr),
        &pulled,
    );
}

#[test]
fn tokens_that_expire_during_a_push_are_renewed_without_uploading_again() {
    let (Some(registry_bin), Some(skopeo), Some(_)) =
        (tool("docker-registry"), tool("skopeo"), tool("openssl"))
    else {
        return;
    };
    let tokens = TokenService::builder()
        .user("alice", "s3cret", &["pull", "push"])
        .lifetime(std::time::Duration::from_secs(2))
        .start();
    let registry = Registry::start_configured(&registry_bin, |_| tokens.registry_yaml());
    // Each chunk takes 700 ms: the push outlives its first token by far.
    let proxy = FaultProxy::start(
        &registry.addr,
        Faults {
            delay: Some(("PATCH", std::time::Duration::from_millis(700))),
            ..Faults::default()
        },
    );
    let hub = big_hub();
    let f = Fetched::new(&hub, &manifest(&proxy.addr, MIB, MIB));
    f.fetch(&hub, &[]).ok();
    let docker = f.cache.path().join("docker");
    fs::create_dir_all(&docker).unwrap();
    use base64::Engine;
    let auth = base64::engine::general_purpose::STANDARD.encode("alice:s3cret");
    fs::write(
        docker.join("config.json"),
        format!(r#"{{"auths":{{"{}":{{"auth":"{auth}"}}}}}}"#, proxy.addr),
    )
    .unwrap();
    let r = run(f
        .cmd()
        .args([
            "bake",
            // Upload sessions are counted: only the image's blobs.
            "--no-attestations",
            "--json",
            "--insecure",
            "--push",
            &format!("{}/models/app:v1", proxy.addr),
        ])
        .env("DOCKER_CONFIG", &docker));
    r.ok();
    assert!(!r.stderr.contains("s3cret") && !r.stdout.contains("s3cret"));

    let log = proxy.log();
    let first_patch = log.iter().position(|l| l.method == "PATCH").unwrap();
    assert!(
        log[first_patch..].iter().any(|l| l.status == 401),
        "no token expired mid-push: {log:#?}"
    );
    assert!(tokens.issued() >= 2, "the token was not renewed");
    // Nothing started over: one session per blob, each blob stored once, and every byte of
    // the layer accepted exactly once; the only bytes sent again are those of the chunks the
    // registry refused with a 401 (it answers before reading them).
    assert_eq!(log.iter().filter(|l| l.method == "POST").count(), 2);
    let stored: Vec<&Logged> = log
        .iter()
        .filter(|l| l.method == "PUT" && l.path.contains("digest=") && l.status == 201)
        .collect();
    assert_eq!(stored.len(), 2, "{stored:#?}");
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let layer: u64 = v["layers"][0]["size"].as_u64().unwrap();
    let patches = |status: u16| {
        log.iter()
            .filter(|l| l.method == "PATCH" && l.status == status)
            .map(|l| l.body)
            .collect::<Vec<u64>>()
    };
    assert_eq!(patches(202).iter().sum::<u64>(), layer, "{log:#?}");
    let refused = patches(401);
    assert!(
        refused.len() < tokens.issued() && refused.iter().all(|b| *b <= MIB),
        "{refused:?}"
    );

    let pulled = f.cache.path().join("pulled");
    pull_and_verify(
        &f,
        &skopeo,
        &["--src-tls-verify=false", "--src-creds", "alice:s3cret"],
        &format!("{}/models/app:v1", registry.addr),
        &pulled,
    );
}
