//! Reads from a registry through a fault-injecting proxy in front of a real Distribution
//! registry: base layers pulled into `bake --oci`, manifests and configs, and layers of the
//! cache repository (`bake --oci --cache`, `fetch --cache`). A cut or reset body is resumed
//! with `Range` (or read again from its first byte), 503 and 429 (`Retry-After`) are retried,
//! the result is byte-exact and passes `verify --oci`; a fault that never stops fails the
//! command within the retry budget with a message that says what to do.

use std::fs;
use std::path::Path;
use std::process::Command;

use crate::support::fault_proxy::{FaultProxy, Faults, Logged, ResponseCut, StatusFault};
use crate::support::oci::{Registry, push_busybox_base};
use crate::support::*;

const TINY: &str = "[[model]]\nid = \"acme/tiny\"\n";

/// The layer digests of `reg/repo:tag`, read straight from the registry.
fn layer_digests(reg: &str, repo: &str, tag: &str) -> Vec<String> {
    let body = sh(Command::new("curl").args([
        "-sf",
        "-H",
        "Accept: application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json",
        &format!("http://{reg}/v2/{repo}/manifests/{tag}"),
    ]));
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_owned())
        .collect()
}

/// The bytes the registry stores for blob `digest`.
fn stored_blob(registry: &Registry, digest: &str) -> Vec<u8> {
    let hex = digest.trim_start_matches("sha256:");
    fs::read(
        registry
            .data_dir()
            .join("docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data"),
    )
    .unwrap()
}

/// The bytes of blob `digest` in the layout at `dir`.
fn layout_blob(dir: &Path, digest: &str) -> Vec<u8> {
    fs::read(
        dir.join("blobs/sha256")
            .join(digest.trim_start_matches("sha256:")),
    )
    .unwrap()
}

/// The GETs of paths containing `part`.
fn gets<'a>(log: &'a [Logged], part: &str) -> Vec<&'a Logged> {
    log.iter()
        .filter(|l| l.method == "GET" && l.path.contains(part))
        .collect()
}

/// A cut of the first GET of blob `layer`'s answer after `after` body bytes.
fn cut_blob(layer: &str, after: u64) -> ResponseCut {
    ResponseCut::once("GET", &format!("/blobs/{layer}"), after)
}

/// A registry with the busybox base at `base/busybox:1`, pushed to it directly; the proxy in
/// front of it with `faults`; a project with `acme/tiny` fetched. `None` without the tools.
struct Setup {
    registry: Registry,
    proxy: FaultProxy,
    f: Fetched,
    _hub: hub_emulator::HubEmulator,
    _work: tempfile::TempDir,
    layer: String,
}

fn setup(faults: impl FnOnce(&str) -> Faults) -> Option<Setup> {
    let (Some(registry_bin), Some(skopeo), Some(umoci), Some(_)) = (
        tool("docker-registry"),
        tool("skopeo"),
        tool("umoci"),
        tool("curl"),
    ) else {
        return None;
    };
    let registry = Registry::start(&registry_bin);
    let work = tempfile::tempdir().unwrap();
    push_busybox_base(&skopeo, &umoci, work.path(), &registry.addr);
    let layers = layer_digests(&registry.addr, "base/busybox", "1");
    let layer = layers.last().unwrap().clone();
    let proxy = FaultProxy::start(&registry.addr, faults(&layer));
    let hub = emulator();
    let f = Fetched::new(&hub, TINY);
    f.fetch(&hub, &[]).ok();
    Some(Setup {
        registry,
        proxy,
        f,
        _hub: hub,
        _work: work,
        layer,
    })
}

impl Setup {
    /// `bake --oci` on the base through the proxy, with `env` set; the run and the layout.
    fn bake(&self, env: &[(&str, &str)]) -> (Run, std::path::PathBuf) {
        let out = self.f.cache.path().join("oci");
        let mut cmd = self.f.cmd();
        cmd.envs(env.iter().copied()).args([
            "bake",
            "--json",
            "--insecure",
            "--base",
            &format!("{}/base/busybox:1", self.proxy.addr),
            "--oci",
            out.to_str().unwrap(),
        ]);
        (run(&mut cmd), out)
    }

    /// `bake --oci` through the proxy succeeds and [`Setup::check`] holds; what the proxy saw.
    fn bake_and_check(&self) -> Vec<Logged> {
        let (r, out) = self.bake(&[]);
        r.ok();
        self.check(&out);
        self.proxy.log()
    }

    /// The layout passes `verify --oci` and holds the base layer byte for byte.
    fn check(&self, out: &Path) {
        run(self
            .f
            .cmd()
            .args(["verify", "--oci", out.to_str().unwrap()]))
        .ok();
        assert!(
            layout_blob(out, &self.layer) == stored_blob(&self.registry, &self.layer),
            "the base layer differs from the registry's"
        );
    }
}

#[test]
fn a_base_layer_cut_mid_body_resumes_with_a_range() {
    let Some(s) = setup(|layer| Faults {
        response_cuts: vec![cut_blob(layer, 100_000)],
        ..Faults::default()
    }) else {
        return;
    };
    let log = s.bake_and_check();
    let reads = gets(&log, &format!("/blobs/{}", s.layer));
    assert_eq!(reads.len(), 2, "{log:#?}");
    assert!(reads[0].answer_cut && reads[0].sent == 100_000, "{log:#?}");
    assert_eq!(reads[1].range.as_deref(), Some("bytes=100000-"), "{log:#?}");
    assert_eq!(reads[1].status, 206, "{log:#?}");
}

#[test]
fn a_base_layer_cut_where_ranges_are_not_served_is_read_again_from_its_first_byte() {
    let Some(s) = setup(|layer| Faults {
        response_cuts: vec![cut_blob(layer, 100_000)],
        no_ranges: true,
        ..Faults::default()
    }) else {
        return;
    };
    let log = s.bake_and_check();
    let reads = gets(&log, &format!("/blobs/{}", s.layer));
    assert_eq!(reads.len(), 2, "{log:#?}");
    assert!(reads[0].answer_cut && reads[0].sent == 100_000, "{log:#?}");
    // Asked for the rest, sent the whole blob: the first 100000 bytes were skipped.
    assert_eq!(reads[1].range.as_deref(), Some("bytes=100000-"), "{log:#?}");
    assert_eq!(reads[1].status, 200, "{log:#?}");
    assert_eq!(
        reads[1].sent,
        stored_blob(&s.registry, &s.layer).len() as u64,
        "{log:#?}"
    );
}

#[test]
fn a_base_layer_streamed_to_another_registry_survives_a_cut_source() {
    let Some(s) = setup(|layer| Faults {
        response_cuts: vec![cut_blob(layer, 100_000)],
        ..Faults::default()
    }) else {
        return;
    };
    // The base is read through the proxy, the push goes to the registry itself: another
    // host, so the layer is streamed from one to the other.
    let r = run(s.f.cmd().args([
        "bake",
        "--json",
        "--insecure",
        "--base",
        &format!("{}/base/busybox:1", s.proxy.addr),
        "--push",
        &format!("{}/models/app:v1", s.registry.addr),
    ]));
    r.ok();
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["copied"], 1, "{v}");
    let log = s.proxy.log();
    let reads = gets(&log, &format!("/blobs/{}", s.layer));
    assert_eq!(reads.len(), 2, "{log:#?}");
    assert!(reads[0].answer_cut, "{log:#?}");
    let (Some(skopeo), pulled) = (tool("skopeo"), s.f.cache.path().join("pulled")) else {
        return;
    };
    crate::support::oci::pull_and_verify(
        &s.f,
        &skopeo,
        &["--src-tls-verify=false"],
        &format!("{}/models/app:v1", s.registry.addr),
        &pulled,
    );
}

#[test]
fn a_resumed_base_layer_request_answered_429_waits_and_goes_on() {
    let Some(s) = setup(|layer| Faults {
        response_cuts: vec![cut_blob(layer, 100_000)],
        // The second GET of the layer (the resumption) gets 429 with `Retry-After: 1`.
        statuses: vec![StatusFault {
            skip: 1,
            ..StatusFault::once("GET", &format!("/blobs/{layer}"), 429)
        }],
        ..Faults::default()
    }) else {
        return;
    };
    let log = s.bake_and_check();
    let reads = gets(&log, &format!("/blobs/{}", s.layer));
    let seen: Vec<(u16, Option<&str>)> = reads
        .iter()
        .map(|l| (l.status, l.range.as_deref()))
        .collect();
    assert_eq!(
        seen,
        [
            (200, None),
            (429, Some("bytes=100000-")),
            (206, Some("bytes=100000-"))
        ],
        "{log:#?}"
    );
}

#[test]
fn a_base_layer_reset_mid_body_resumes() {
    let Some(s) = setup(|layer| Faults {
        response_cuts: vec![ResponseCut {
            reset: true,
            ..cut_blob(layer, 70_000)
        }],
        ..Faults::default()
    }) else {
        return;
    };
    let log = s.bake_and_check();
    let reads = gets(&log, &format!("/blobs/{}", s.layer));
    assert_eq!(reads.len(), 2, "{log:#?}");
    assert!(reads[0].answer_cut, "{log:#?}");
    // A reset may lose bytes in flight: the second request resumes where the client stood.
    let resumed = reads[1].range.as_deref().unwrap_or("bytes=0-");
    assert!(resumed.starts_with("bytes="), "{log:#?}");
    assert!(reads[1].status == 206 || reads[1].status == 200, "{log:#?}");
}

#[test]
fn manifests_survive_503_and_429_with_retry_after() {
    let Some(s) = setup(|_| Faults {
        statuses: vec![
            StatusFault::once("GET", "/manifests/", 503),
            // Counted from the first request the 503 let through.
            StatusFault::once("GET", "/manifests/", 429),
        ],
        ..Faults::default()
    }) else {
        return;
    };
    let log = s.bake_and_check();
    let statuses: Vec<u16> = gets(&log, "/manifests/").iter().map(|l| l.status).collect();
    assert_eq!(&statuses[..3], &[503, 429, 200], "{log:#?}");
}

#[test]
fn a_cut_manifest_and_a_cut_config_are_read_again() {
    let Some(s) = setup(|_| Faults {
        response_cuts: vec![
            ResponseCut::once("GET", "/manifests/", 10),
            // The first blob read is the config (layers come after it).
            ResponseCut::once("GET", "/blobs/sha256:", 20),
        ],
        ..Faults::default()
    }) else {
        return;
    };
    let log = s.bake_and_check();
    for part in ["/manifests/", "/blobs/sha256:"] {
        let reads = gets(&log, part);
        assert!(reads[0].answer_cut, "{part}: {log:#?}");
        assert_eq!(reads[1].path, reads[0].path, "{part}: {log:#?}");
        assert!(
            !reads[1].answer_cut && reads[1].status == 200 && reads[1].range.is_none(),
            "{part}: {log:#?}"
        );
    }
}

#[test]
fn a_read_fault_that_never_stops_fails_within_the_retry_budget() {
    let Some(s) = setup(|layer| Faults {
        // The head, then no byte of the body, every time.
        response_cuts: vec![ResponseCut {
            times: 1000,
            ..cut_blob(layer, 0)
        }],
        ..Faults::default()
    }) else {
        return;
    };
    let (r, out) = s.bake(&[
        ("MODELBAKE_HTTP_RETRIES", "2"),
        ("MODELBAKE_HTTP_BACKOFF_MS", "10"),
    ]);
    assert_ne!(r.code, 0, "{}", r.stdout);
    assert!(
        r.stderr.contains("3 attempts") && r.stderr.contains("MODELBAKE_HTTP_RETRIES"),
        "{}",
        r.stderr
    );
    let log = s.proxy.log();
    assert_eq!(
        gets(&log, &format!("/blobs/{}", s.layer)).len(),
        3,
        "{log:#?}"
    );
    assert!(!out.join("index.json").exists(), "a layout was written");
}

#[test]
fn a_cache_repository_layer_cut_mid_body_resumes_for_oci_and_fetch() {
    let (Some(registry_bin), Some(_)) = (tool("docker-registry"), tool("curl")) else {
        return;
    };
    let registry = Registry::start(&registry_bin);
    let reg = registry.addr.clone();
    let hub = emulator();
    // Runner A records its layer in the cache repository (directly).
    let a = Fetched::new(&hub, TINY);
    a.fetch(&hub, &[]).ok();
    let work = tempfile::tempdir().unwrap();
    let r = run(a.cmd().args([
        "bake",
        "--json",
        "--insecure",
        "--cache",
        &format!("{reg}/cache/models"),
        "--oci",
        work.path().join("oci-a").to_str().unwrap(),
    ]));
    r.ok();
    let va: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let layer = va["layers"][0]["digest"].as_str().unwrap().to_owned();
    let size = va["layers"][0]["size"].as_u64().unwrap();
    let layers = va["layers"].as_array().unwrap().len();
    assert!(size > 100, "{va}");

    for (i, reset) in [false, true].into_iter().enumerate() {
        let proxy = FaultProxy::start(
            &reg,
            Faults {
                response_cuts: vec![ResponseCut {
                    reset,
                    ..cut_blob(&layer, size / 2)
                }],
                ..Faults::default()
            },
        );
        let cache = format!("{}/cache/models", proxy.addr);
        // Runner B: empty store, the layer comes from the cache repository.
        let store = tempfile::tempdir().unwrap();
        let oci = work.path().join(format!("oci-b{i}"));
        let r = run(a
            .project
            .cmd()
            .env("MODELBAKE_STORE", store.path())
            .env("HF_ENDPOINT", hub.endpoint())
            .args([
                "bake",
                "--json",
                "--insecure",
                "--cache",
                &cache,
                "--oci",
                oci.to_str().unwrap(),
            ]));
        r.ok();
        let vb: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
        assert_eq!(vb["cache"]["downloaded"], layers, "{vb}");
        assert_eq!(vb["manifest_digest"], va["manifest_digest"], "{vb}");
        run(a.cmd().args(["verify", "--oci", oci.to_str().unwrap()])).ok();
        assert!(layout_blob(&oci, &layer) == stored_blob(&registry, &layer));
        let log = proxy.log();
        let reads = gets(&log, &format!("/blobs/{layer}"));
        assert_eq!(reads.len(), 2, "{log:#?}");
        assert!(reads[0].answer_cut, "{log:#?}");
        if !reset {
            assert_eq!(
                reads[1].range.as_deref(),
                Some(format!("bytes={}-", size / 2).as_str()),
                "{log:#?}"
            );
            assert_eq!(reads[1].status, 206, "{log:#?}");
        }
    }

    // Runner C: `fetch --cache` unpacks the layer through a proxy that cuts it once.
    let proxy = FaultProxy::start(
        &reg,
        Faults {
            response_cuts: vec![cut_blob(&layer, size / 2)],
            ..Faults::default()
        },
    );
    let store = tempfile::tempdir().unwrap();
    let r = run(a
        .project
        .cmd()
        .env("MODELBAKE_STORE", store.path())
        .env("HF_ENDPOINT", hub.endpoint())
        .args([
            "fetch",
            "--json",
            "--insecure",
            "--cache",
            &format!("{}/cache/models", proxy.addr),
        ]));
    r.ok();
    let vc: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(vc["downloaded"], 0, "every file from the cache: {vc}");
    assert!(
        !r.stderr.contains("is not used further"),
        "the layer was dropped: {}",
        r.stderr
    );
    let log = proxy.log();
    let reads = gets(&log, &format!("/blobs/{layer}"));
    assert_eq!(reads.len(), 2, "{log:#?}");
    assert_eq!(
        reads[1].range.as_deref(),
        Some(format!("bytes={}-", size / 2).as_str()),
        "{log:#?}"
    );
}
