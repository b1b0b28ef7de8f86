//! Hostile OCI inputs: hand-made base layouts whose digests are paths, whose blobs lie about
//! their bytes or are symlinks to files elsewhere, and a registry on 127.0.0.1 that answers
//! with endless or oversized bodies or with a config that does not match its digest. Each ends
//! with a clear error (exit 1-3) in time, with bounded memory, and nothing changed outside the
//! folders the command owns.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::support::hostile::*;
use crate::support::*;

const LIMIT: Duration = Duration::from_secs(30);

fn digest_of(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// A fetched project (acme/tiny) ready to bake.
fn fetched() -> (hub_emulator::HubEmulator, Fetched) {
    let hub = emulator();
    let f = Fetched::new(&hub, "[[model]]\nid = \"acme/tiny\"\n");
    f.fetch(&hub, &[]).ok();
    (hub, f)
}

/// Writes a one-layer base layout into `dir`; `tweak` may rewrite the manifest JSON (as text)
/// before it is stored. Returns the layer's digest.
fn base_layout(dir: &Path, tweak: impl Fn(String) -> String) -> String {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let put = |bytes: &[u8]| {
        let d = digest_of(bytes);
        std::fs::write(blobs.join(&d[7..]), bytes).unwrap();
        d
    };
    let layer = b"not really a tar, but base layers are never unpacked".to_vec();
    let layer_digest = put(&layer);
    let config = br#"{"architecture":"amd64","os":"linux","config":{},"rootfs":{"type":"layers","diff_ids":["sha256:1111111111111111111111111111111111111111111111111111111111111111"]}}"#;
    let config_digest = put(config);
    let manifest = tweak(format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","size":{},"digest":"{config_digest}"}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","size":{},"digest":"{layer_digest}"}}]}}"#,
        config.len(),
        layer.len()
    ));
    let manifest_digest = put(manifest.as_bytes());
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    std::fs::write(
        dir.join("index.json"),
        format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","size":{},"digest":"{manifest_digest}","annotations":{{"org.opencontainers.image.ref.name":"base"}}}}]}}"#,
            manifest.len()
        ),
    )
    .unwrap();
    layer_digest
}

/// `text` with the first digest after `after` replaced by `with` (a hostile value).
fn replace_digest(text: &str, after: &str, with: &str) -> String {
    let start = text.find(after).unwrap();
    let d = text[start..].find("sha256:").unwrap() + start;
    format!("{}{with}{}", &text[..d], &text[d + 71..])
}

/// A scratch area: `victim/` outside every folder modelbake owns, `base/`, `out/`.
struct Scene {
    root: tempfile::TempDir,
}

impl Scene {
    fn new() -> Self {
        let s = Scene {
            root: tempfile::tempdir().unwrap(),
        };
        let victim = s.victim();
        std::fs::create_dir_all(victim.join("x")).unwrap();
        std::fs::write(
            victim.join("x/layer.tar"),
            b"secret bytes outside the layout",
        )
        .unwrap();
        s
    }
    fn victim(&self) -> PathBuf {
        self.root.path().join("victim")
    }
    fn base(&self) -> PathBuf {
        self.root.path().join("a/b/c/base")
    }
    fn out(&self) -> PathBuf {
        self.root.path().join("a/b/c/out")
    }
}

/// `bake --base oci:<scene base>:base --oci <scene out>`, measured.
fn bake_on_base(f: &Fetched, scene: &Scene) -> Measured {
    bake_measured(
        f,
        &[
            "--base",
            &format!("oci:{}:base", scene.base().display()),
            "--oci",
            scene.out().to_str().unwrap(),
        ],
    )
}

fn bake_measured(f: &Fetched, args: &[&str]) -> Measured {
    run_measured(
        f.cmd().args(["bake", "--compression", "none"]).args(args),
        LIMIT,
    )
}

#[test]
fn a_digest_that_is_a_path_never_becomes_one() {
    let (_hub, f) = fetched();
    let scene = Scene::new();
    // The layer "digest" climbs out of the base layout to the victim's file.
    base_layout(&scene.base(), |m| {
        replace_digest(
            &m,
            r#""layers":[{"#,
            "sha256:../../../../../victim/x/layer.tar",
        )
    });
    let before = snapshot(scene.root.path());
    let r = bake_on_base(&f, &scene);
    r.assert_clean_failure(LIMIT);
    assert!(r.stderr.contains("is not a digest"), "{}", r.stderr);
    // Nothing anywhere: not in the victim's folder, not beside the base, no output layout.
    assert_unchanged("the scratch folder", &before, &snapshot(scene.root.path()));
}

#[test]
fn a_digest_that_is_a_path_in_index_json_is_refused() {
    let (_hub, f) = fetched();
    let scene = Scene::new();
    base_layout(&scene.base(), |m| m);
    let index = std::fs::read_to_string(scene.base().join("index.json")).unwrap();
    let hostile = replace_digest(&index, "", "sha256:../../../../victim/x/layer.tar");
    std::fs::write(scene.base().join("index.json"), hostile).unwrap();
    let before = snapshot(scene.root.path());
    let r = bake_on_base(&f, &scene);
    r.assert_clean_failure(LIMIT);
    assert!(r.stderr.contains("is not a digest"), "{}", r.stderr);
    assert_unchanged("the scratch folder", &before, &snapshot(scene.root.path()));
}

#[test]
fn other_digest_algorithms_are_refused_by_name() {
    let (_hub, f) = fetched();
    let scene = Scene::new();
    base_layout(&scene.base(), |m| {
        replace_digest(&m, r#""layers":[{"#, &format!("sha512:{}", "ab".repeat(64)))
    });
    let r = bake_on_base(&f, &scene);
    r.assert_clean_failure(LIMIT);
    assert!(r.stderr.contains("sha256 digests only"), "{}", r.stderr);
}

#[test]
fn a_base_blob_with_other_bytes_is_refused_and_verify_catches_it() {
    let (_hub, f) = fetched();
    let scene = Scene::new();
    let layer = base_layout(&scene.base(), |m| m);
    let blob = scene.base().join("blobs/sha256").join(&layer[7..]);
    let mut bytes = std::fs::read(&blob).unwrap();
    bytes[0] ^= 1; // same size, other bytes
    std::fs::write(&blob, &bytes).unwrap();
    let r = bake_on_base(&f, &scene);
    r.assert_clean_failure(LIMIT);
    assert!(r.stderr.contains("not to its digest"), "{}", r.stderr);
    assert!(
        !scene.out().join("blobs/sha256").join(&layer[7..]).exists(),
        "the tampered blob reached the output image"
    );

    // Bake a good image, then tamper with the base layer inside it: verify must fail.
    let good = tempfile::tempdir().unwrap();
    base_layout(good.path(), |m| m);
    let out = scene.root.path().join("good-out");
    run(f
        .cmd()
        .args(["bake", "--compression", "none", "--base"])
        .arg(format!("oci:{}:base", good.path().display()))
        .arg("--oci")
        .arg(&out))
    .ok();
    run(f.cmd().args(["verify", "--oci"]).arg(&out)).ok();
    let inside = out.join("blobs/sha256").join(&layer[7..]);
    let mut bytes = std::fs::read(&inside).unwrap();
    bytes[0] ^= 1;
    std::fs::remove_file(&inside).unwrap(); // hard-linked from the base: replace, not edit
    std::fs::write(&inside, &bytes).unwrap();
    let v = run(f.cmd().args(["verify", "--json", "--oci"]).arg(&out));
    assert_eq!(v.code, 1, "{}\n{}", v.stdout, v.stderr);
    let report: serde_json::Value = serde_json::from_str(&v.stdout).unwrap();
    assert_eq!(report["problems"][0]["problem"], "base_layer", "{report}");
    assert_eq!(report["problems"][0]["digest"], layer.as_str(), "{report}");
}

#[test]
fn a_base_blob_that_is_a_symlink_is_refused() {
    let (_hub, f) = fetched();
    let scene = Scene::new();
    let layer = base_layout(&scene.base(), |m| m);
    // The blob becomes a symlink to a file elsewhere with the very same bytes.
    let blob = scene.base().join("blobs/sha256").join(&layer[7..]);
    let elsewhere = scene.victim().join("x/same-bytes");
    std::fs::copy(&blob, &elsewhere).unwrap();
    std::fs::remove_file(&blob).unwrap();
    std::os::unix::fs::symlink(&elsewhere, &blob).unwrap();
    let victim_before = snapshot(&scene.victim());
    let r = bake_on_base(&f, &scene);
    r.assert_clean_failure(LIMIT);
    assert!(r.stderr.contains("not a symlink"), "{}", r.stderr);
    assert!(
        r.stderr.contains("hint:") || r.stderr.contains("skopeo copy"),
        "{}",
        r.stderr
    );
    assert_unchanged(
        "the folder the symlink points into",
        &victim_before,
        &snapshot(&scene.victim()),
    );
}

/// What the fake registry answers for a manifest or config request.
#[derive(Clone, Copy)]
enum Answer {
    /// An endless body (chunked, no length).
    Endless,
    /// `Content-Length: 10^15`, then a trickle.
    HugeLength,
    /// A valid manifest whose config blob's bytes do not match its digest.
    WrongConfig,
}

/// A registry on 127.0.0.1 that answers every request with `answer`'s misbehaviour. Serves
/// connections until the test process ends; each connection on its own thread.
fn hostile_registry(answer: Answer) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || serve_one(stream, answer));
        }
    });
    addr
}

fn serve_one(stream: TcpStream, answer: Answer) {
    let _ = stream.set_write_timeout(Some(Duration::from_secs(40)));
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut out = stream;
    loop {
        let mut request = String::new();
        if reader.read_line(&mut request).unwrap_or(0) == 0 {
            return;
        }
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                break;
            }
        }
        let path = request.split_whitespace().nth(1).unwrap_or("/").to_owned();
        let config = br#"{"architecture":"amd64","os":"linux"}"#;
        let lying_config_digest = digest_of(b"some other config");
        let manifest = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","size":{},"digest":"{lying_config_digest}"}},"layers":[]}}"#,
            config.len()
        );
        let write = |out: &mut TcpStream, head: &str, body: &[u8]| {
            out.write_all(head.as_bytes())
                .and_then(|_| out.write_all(body))
        };
        let result = match (answer, path.as_str()) {
            (_, "/v2/") => write(
                &mut out,
                "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n",
                b"{}",
            ),
            (Answer::Endless, _) => {
                let head = "HTTP/1.1 200 OK\r\ncontent-type: application/vnd.oci.image.manifest.v1+json\r\ntransfer-encoding: chunked\r\n\r\n";
                let chunk = format!("{:x}\r\n{}\r\n", 1 << 16, " ".repeat(1 << 16));
                let mut r = out
                    .write_all(head.as_bytes())
                    .and_then(|_| out.write_all(b"4\r\n[1,2\r\n"));
                // Bounded: 16 GiB at most, far past any limit; the client hangs up long before.
                for _ in 0..(1 << 18) {
                    if r.is_err() {
                        break;
                    }
                    r = out.write_all(chunk.as_bytes());
                }
                r
            }
            (Answer::HugeLength, _) => {
                let head = "HTTP/1.1 200 OK\r\ncontent-type: application/vnd.oci.image.manifest.v1+json\r\ncontent-length: 1000000000000000\r\n\r\n";
                let mut r = out.write_all(head.as_bytes());
                for _ in 0..(1 << 18) {
                    if r.is_err() {
                        break;
                    }
                    r = out.write_all(&[b' '; 1 << 16]);
                }
                r
            }
            (Answer::WrongConfig, p) if p.contains("/manifests/") => write(
                &mut out,
                &format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/vnd.oci.image.manifest.v1+json\r\ncontent-length: {}\r\n\r\n",
                    manifest.len()
                ),
                manifest.as_bytes(),
            ),
            (Answer::WrongConfig, _) => write(
                &mut out,
                &format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n",
                    config.len()
                ),
                config,
            ),
        };
        if result.is_err() {
            return;
        }
    }
}

#[test]
fn an_endless_manifest_is_cut_off_with_bounded_memory() {
    let (_hub, f) = fetched();
    for (name, answer) in [
        ("endless", Answer::Endless),
        ("huge Content-Length", Answer::HugeLength),
    ] {
        let registry = hostile_registry(answer);
        let out = tempfile::tempdir().unwrap();
        let r = bake_measured(
            &f,
            &[
                "--insecure",
                "--base",
                &format!("{registry}/hostile/base:latest"),
                "--oci",
                out.path().to_str().unwrap(),
            ],
        );
        r.assert_clean_failure(LIMIT).assert_peak_under_mib(256);
        assert!(
            r.stderr.contains("4 MiB allowed for a manifest"),
            "{name}: {}",
            r.stderr
        );
        assert!(
            r.stderr.contains(&registry),
            "{name}: the error names the URL: {}",
            r.stderr
        );
        eprintln!(
            "{name}: failed in {:?} with a peak of {} MiB",
            r.wall,
            r.peak_rss >> 20
        );
        assert!(
            std::fs::read_dir(out.path()).unwrap().next().is_none(),
            "{name}: output written"
        );
    }
}

#[test]
fn a_registry_config_that_does_not_match_its_digest_is_refused() {
    let (_hub, f) = fetched();
    let registry = hostile_registry(Answer::WrongConfig);
    let out = tempfile::tempdir().unwrap();
    let r = bake_measured(
        &f,
        &[
            "--insecure",
            "--base",
            &format!("{registry}/hostile/base:latest"),
            "--oci",
            out.path().to_str().unwrap(),
        ],
    );
    r.assert_clean_failure(LIMIT);
    assert!(r.stderr.contains("the config of"), "{}", r.stderr);
    assert!(r.stderr.contains("not to its digest"), "{}", r.stderr);
}

#[test]
fn a_well_formed_layout_base_still_bakes_and_verifies() {
    let (_hub, f) = fetched();
    let scene = Scene::new();
    let layer = base_layout(&scene.base(), |m| m);
    let r = bake_on_base(&f, &scene);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(scene.out().join("blobs/sha256").join(&layer[7..]).is_file());
    run(f.cmd().args(["verify", "--oci"]).arg(scene.out())).ok();
}

/// A one-layer base layout in `dir` (as [`base_layout`]) whose config lists `diff_ids` DiffIDs.
fn base_layout_with_diff_ids(dir: &Path, diff_ids: usize) {
    base_layout(dir, |m| m);
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
    let blobs = dir.join("blobs/sha256");
    let manifest_digest = index["manifests"][0]["digest"].as_str().unwrap().to_owned();
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(blobs.join(&manifest_digest[7..])).unwrap()).unwrap();
    let config = format!(
        r#"{{"architecture":"amd64","os":"linux","config":{{}},"rootfs":{{"type":"layers","diff_ids":[{}]}}}}"#,
        vec![format!("\"sha256:{}\"", "1".repeat(64)); diff_ids].join(",")
    );
    let config_digest = digest_of(config.as_bytes());
    std::fs::write(blobs.join(&config_digest[7..]), &config).unwrap();
    manifest["config"]["digest"] = config_digest.into();
    manifest["config"]["size"] = config.len().into();
    rewrite_manifest(dir, &manifest);
}

/// Stores `manifest` as the layout's (only) image manifest and points index.json at it.
fn rewrite_manifest(dir: &Path, manifest: &serde_json::Value) {
    let bytes = serde_json::to_vec(manifest).unwrap();
    let digest = digest_of(&bytes);
    std::fs::write(dir.join("blobs/sha256").join(&digest[7..]), &bytes).unwrap();
    let path = dir.join("index.json");
    let mut index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    index["manifests"][0]["digest"] = digest.into();
    index["manifests"][0]["size"] = bytes.len().into();
    std::fs::write(&path, serde_json::to_vec(&index).unwrap()).unwrap();
}

#[test]
fn a_base_whose_config_lists_more_diff_ids_than_layers_is_refused() {
    let (_hub, f) = fetched();
    let scene = Scene::new();
    base_layout_with_diff_ids(&scene.base(), 2);
    let r = bake_on_base(&f, &scene);
    r.assert_clean_failure(LIMIT);
    assert!(
        r.stderr.contains("2 DiffIDs") && r.stderr.contains("1 layer"),
        "{}",
        r.stderr
    );
    assert!(
        !scene.out().join("index.json").exists(),
        "an image was written"
    );
    // One DiffID per layer is fine.
    let good = Scene::new();
    base_layout_with_diff_ids(&good.base(), 1);
    let r = bake_on_base(&f, &good);
    assert_eq!(r.code, 0, "{}", r.stderr);
}

/// The layout's (only) image manifest.
fn read_manifest(dir: &Path) -> serde_json::Value {
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
    let digest = index["manifests"][0]["digest"].as_str().unwrap();
    serde_json::from_slice(&std::fs::read(dir.join("blobs/sha256").join(&digest[7..])).unwrap())
        .unwrap()
}

/// Bakes acme/tiny (uncompressed, no base) into `out`; the digest of its model layer.
fn bake_plain(f: &Fetched, out: &Path) -> String {
    run(f
        .cmd()
        .args(["bake", "--compression", "none", "--oci"])
        .arg(out))
    .ok();
    run(f.cmd().args(["verify", "--oci"]).arg(out)).ok();
    read_manifest(out)["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[test]
fn verify_refuses_a_layer_descriptor_of_the_wrong_size() {
    let (_hub, f) = fetched();
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("out");
    bake_plain(&f, &out);
    let mut manifest = read_manifest(&out);
    manifest["layers"][0]["size"] = u64::MAX.into();
    rewrite_manifest(&out, &manifest);
    let v = run(f.cmd().args(["verify", "--json", "--oci"]).arg(&out));
    assert_eq!(v.code, 1, "verify accepted a size of 2^64-1: {}", v.stdout);
    assert!(v.stdout.contains("\"layer_blob\""), "{}", v.stdout);
    assert!(
        format!("{}{}", v.stdout, v.stderr).contains(&u64::MAX.to_string()),
        "the size is named: {}\n{}",
        v.stdout,
        v.stderr
    );
}

#[test]
fn verify_refuses_a_layer_blob_that_is_a_symlink() {
    let (_hub, f) = fetched();
    let scene = Scene::new();
    let out = scene.out();
    let layer = bake_plain(&f, &out);
    // The blob becomes a symlink to a file outside the layout with the very same bytes.
    let blob = out.join("blobs/sha256").join(&layer[7..]);
    let elsewhere = scene.victim().join("x/same-layer");
    std::fs::copy(&blob, &elsewhere).unwrap();
    std::fs::remove_file(&blob).unwrap();
    std::os::unix::fs::symlink(&elsewhere, &blob).unwrap();
    let v = run(f.cmd().args(["verify", "--json", "--oci"]).arg(&out));
    assert_eq!(v.code, 1, "verify followed the symlink: {}", v.stdout);
    assert!(v.stdout.contains("\"layer_blob\""), "{}", v.stdout);
    assert!(
        format!("{}{}", v.stdout, v.stderr).contains("symlink"),
        "{}\n{}",
        v.stdout,
        v.stderr
    );
}

#[test]
fn doctor_streams_a_layer_of_many_long_paths_with_bounded_memory() {
    let (_hub, f) = fetched();
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("layout");
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    // 20,000 empty files, each named by a PAX path of about 3,800 bytes: about 110 MB of tar
    // (plain, so the test spends no time compressing), 76 MB of path names. Keeping every entry
    // took about 180 MiB; streaming needs a few.
    let tar_path = work.path().join("layer.tar");
    {
        let file = std::io::BufWriter::new(std::fs::File::create(&tar_path).unwrap());
        let mut b = tar::Builder::new(file);
        let stem = format!("opt/{}", "d".repeat(250)).repeat(15);
        for i in 0..20_000 {
            let path = format!("{stem}/{i:08}");
            b.append_pax_extensions([("path", path.as_bytes())])
                .unwrap();
            let mut h = tar::Header::new_ustar();
            h.set_path(format!("f{i}")).unwrap();
            h.set_size(0);
            h.set_mode(0o644);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(0);
            h.set_entry_type(tar::EntryType::Regular);
            h.set_cksum();
            b.append(&h, std::io::empty()).unwrap();
        }
        b.into_inner().unwrap().flush().unwrap();
    }
    let layer_digest = {
        let mut file = std::fs::File::open(&tar_path).unwrap();
        let mut h = Sha256::new();
        std::io::copy(&mut file, &mut h).unwrap();
        format!("sha256:{}", hex::encode(h.finalize()))
    };
    let size = std::fs::metadata(&tar_path).unwrap().len();
    std::fs::rename(&tar_path, blobs.join(&layer_digest[7..])).unwrap();
    let put = |bytes: &[u8]| {
        let d = digest_of(bytes);
        std::fs::write(blobs.join(&d[7..]), bytes).unwrap();
        d
    };
    let config = format!(
        r#"{{"architecture":"amd64","os":"linux","config":{{"Env":["HF_HOME=/models"]}},"rootfs":{{"type":"layers","diff_ids":["{layer_digest}"]}}}}"#
    );
    let config_digest = put(config.as_bytes());
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","size":{},"digest":"{config_digest}"}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","size":{size},"digest":"{layer_digest}"}}]}}"#,
        config.len()
    );
    let manifest_digest = put(manifest.as_bytes());
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    std::fs::write(
        dir.join("index.json"),
        format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","size":{},"digest":"{manifest_digest}","annotations":{{"org.opencontainers.image.ref.name":"t"}}}}]}}"#,
            manifest.len()
        ),
    )
    .unwrap();
    let r = run_measured(
        f.cmd()
            .args(["doctor", "--json", "--oci"])
            .arg(format!("{}:t", dir.display())),
        LIMIT,
    );
    eprintln!(
        "doctor: exit {} in {:?}, peak {} MiB",
        r.code,
        r.wall,
        r.peak_rss >> 20
    );
    assert!(!r.killed && !r.stderr.contains("panicked"), "{}", r.stderr);
    // The model is not in this image: a report saying so (exit 1), not a failure.
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    let report: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(report["ok"], false, "{report}");
    assert!(
        report["loaders"].is_array(),
        "a diagnosis, not an error: {report}"
    );
    r.assert_peak_under_mib(100);
}
