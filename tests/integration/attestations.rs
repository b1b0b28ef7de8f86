//! Attestations, checked by the real tools: `bake --sign-key` attaches an SBOM, provenance and
//! a model signature per repo to every image; `model_signing verify` accepts each exported
//! snapshot folder with the public key (and refuses a changed file), `@sigstore/verify` accepts
//! every bundle offline (and refuses another key), the unsigned SBOM passes CycloneDX's strict
//! validator. `verify --image` then checks images in place: against the real Distribution
//! registry (the referrers tag schema, which it needs) every tampering is caught with its exit
//! code, and against a registry with the referrers API nothing is tagged.

use std::path::{Path, PathBuf};
use std::process::Command;

use hub_emulator::{FileSpec, HubEmulator, Repo, generate};

use crate::support::oci::Registry;
use crate::support::referrers_registry::ReferrersRegistry;
use crate::support::*;

const TWO_REPOS: &str = "[[model]]\nid = \"acme/signed\"\n\n[[dataset]]\nid = \"acme/data\"\n";

/// `acme/signed` (a model card with a licence, git files model_signing ignores, LFS weights, a
/// nested path) and `acme/data`.
fn hub() -> HubEmulator {
    HubEmulator::builder()
        .repo(Repo::model("acme/signed").commit(
            "main",
            vec![
                FileSpec::regular(".gitattributes", "*.safetensors filter=lfs\n"),
                FileSpec::regular("README.md", "---\nlicense: apache-2.0\n---\n# signed\n"),
                FileSpec::regular("config.json", CONFIG_JSON),
                FileSpec::lfs("model.safetensors", generate(200_000, 7)),
                FileSpec::regular("sub/dir/nested.txt", "nested\n"),
            ],
        ))
        .repo(dataset_repo())
        .start()
        .unwrap()
}

/// An ECDSA P-256 key pair made by openssl: (private PKCS#8 PEM, public SPKI PEM).
fn key_pair(openssl: &Path, dir: &Path, name: &str) -> (PathBuf, PathBuf) {
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
        .arg("pkey")
        .arg("-in")
        .arg(&key)
        .arg("-pubout")
        .arg("-out")
        .arg(&public));
    (key, public)
}

/// `node tests/oracles/sigstore-verify.mjs` with its packages (scripts/setup-node installs them).
fn sigstore_verify() -> Option<Command> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let node = tool("node")?;
    let installed = root.join("target/node-oracles/node_modules/@sigstore/verify");
    if !installed.is_dir() {
        let ok = Command::new(root.join("scripts/setup-node"))
            .status()
            .is_ok_and(|s| s.success());
        if !ok || !installed.is_dir() {
            let msg = "@sigstore/verify is not available: scripts/setup-node failed (needs npm)";
            assert!(std::env::var("CI").is_err(), "{msg}");
            eprintln!("\n!!! SKIPPED: {msg}\n");
            return None;
        }
    }
    let mut c = Command::new(node);
    c.arg(root.join("tests/oracles/sigstore-verify.mjs"));
    Some(c)
}

/// The Python with `model_signing` and `cyclonedx-python-lib` (target/pyenv-attest).
fn attest_python() -> Option<PathBuf> {
    venv_python(
        "pyenv-attest",
        "import model_signing, cyclonedx",
        "Python model_signing / cyclonedx-python-lib",
    )
}

fn json(r: &Run) -> serde_json::Value {
    serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{e}: {}\n{}", r.stdout, r.stderr))
}

/// The snapshot folder of a repo in the exported cache.
fn snapshot(f: &Fetched, folder: &str) -> PathBuf {
    let snaps = f.hub_cache().join(folder).join("snapshots");
    std::fs::read_dir(&snaps)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path()
}

#[test]
fn signed_attestations_pass_model_signing_sigstore_and_cyclonedx_and_verify_image() {
    let (Some(openssl), Some(py)) = (tool("openssl"), attest_python()) else {
        return;
    };
    let Some(mut sigstore) = sigstore_verify() else {
        return;
    };
    let hub = hub();
    let f = Fetched::new(&hub, TWO_REPOS);
    f.fetch(&hub, &[]).ok();
    f.export(&[]).ok();
    let work = tempfile::tempdir().unwrap();
    let (key, public) = key_pair(&openssl, work.path(), "signer");
    let (_, other) = key_pair(&openssl, work.path(), "other");
    let oci = work.path().join("oci");
    let files = work.path().join("attestations");
    let bake = |extra: &[&str]| {
        run(f
            .cmd()
            .args(["bake", "--json", "--no-base", "--oci"])
            .arg(&oci)
            .args(extra))
    };
    let out = bake(&[
        "--sign-key",
        key.to_str().unwrap(),
        "--attestations",
        files.to_str().unwrap(),
    ]);
    let report = json(out.ok());
    let attached = report["attestations"]["attached"].as_array().unwrap();
    assert_eq!(
        attached.len(),
        4,
        "SBOM, provenance, two model signatures: {attached:?}"
    );
    assert!(report["attestations"]["signed"].as_bool().unwrap());
    let index_before = std::fs::read(oci.join("index.json")).unwrap();

    // model_signing accepts each exported snapshot folder with the public key.
    let model_signing = py.with_file_name("model_signing");
    let ms_verify = |dir: &Path, sig: &Path, public: &Path| {
        Command::new(&model_signing)
            .args(["verify", "key"])
            .arg(dir)
            .arg("--signature")
            .arg(sig)
            .arg("--public_key")
            .arg(public)
            .arg("--allow_symlinks")
            .output()
            .unwrap()
    };
    let model_sig = files.join("model-signing/acme/signed.json");
    let data_sig = files.join("model-signing/datasets/acme/data.json");
    let model_dir = snapshot(&f, "models--acme--signed");
    for (dir, sig) in [
        (&model_dir, &model_sig),
        (&snapshot(&f, "datasets--acme--data"), &data_sig),
    ] {
        let o = ms_verify(dir, sig, &public);
        assert!(
            o.status.success(),
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
    }
    assert!(!ms_verify(&model_dir, &model_sig, &other).status.success());

    // @sigstore/verify accepts every bundle with the key, none with another key.
    for sig in [
        files.join("sbom.cdx.json"),
        files.join("provenance.json"),
        model_sig.clone(),
        data_sig,
    ] {
        let o = sigstore.arg(&sig).arg(&public).output().unwrap();
        assert!(
            o.status.success(),
            "{}: {}",
            sig.display(),
            String::from_utf8_lossy(&o.stderr)
        );
        let mut again = sigstore_verify().unwrap();
        assert!(
            !again
                .arg(&sig)
                .arg(&other)
                .output()
                .unwrap()
                .status
                .success()
        );
        sigstore = sigstore_verify().unwrap();
    }

    // verify --image reads the layout in place; the wrong key is an attestation failure.
    let image = format!("oci:{}:latest", oci.display());
    let ok = run(f
        .cmd()
        .args(["verify", "--image", &image, "--key"])
        .arg(&public));
    ok.ok();
    assert!(
        ok.stderr.contains("attestations are signed by the key"),
        "{}",
        ok.stderr
    );
    let wrong = run(f
        .cmd()
        .args(["verify", "--image", &image, "--key"])
        .arg(&other));
    assert_eq!(wrong.code, 5, "{}", wrong.stderr);

    // Rebaking the same lock attaches nothing new.
    bake(&["--sign-key", key.to_str().unwrap()]).ok();
    assert_eq!(std::fs::read(oci.join("index.json")).unwrap(), index_before);

    // Unsigned, the SBOM is a plain CycloneDX 1.6 document that the strict validator accepts.
    let plain = work.path().join("plain");
    bake(&["--attestations", plain.to_str().unwrap()]).ok();
    let o = Command::new(&py)
        .arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/oracles/cyclonedx-validate.py"))
        .arg(plain.join("sbom.cdx.json"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let sbom: serde_json::Value =
        serde_json::from_slice(&std::fs::read(plain.join("sbom.cdx.json")).unwrap()).unwrap();
    let model = sbom["components"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "signed")
        .unwrap();
    assert_eq!(model["licenses"][0]["license"]["id"], "Apache-2.0");

    // A changed file in the snapshot fails model_signing (the blob behind the symlink).
    let config = std::fs::canonicalize(model_dir.join("config.json")).unwrap();
    std::fs::write(&config, "{\"model_type\": \"tampered\"}\n").unwrap();
    let o = ms_verify(&model_dir, &model_sig, &public);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("Hash mismatch")
            || String::from_utf8_lossy(&o.stderr).contains("Hash mismatch")
    );
}

/// The index tagged `sha256-<hex>` (the referrers tag schema) in `repo`, via curl.
fn fallback_index(curl: &Path, reg: &str, repo: &str, digest: &str) -> serde_json::Value {
    let out = sh(Command::new(curl).args([
        "-sf",
        "-H",
        "Accept: application/vnd.oci.image.index.v1+json",
        &format!(
            "http://{reg}/v2/{repo}/manifests/{}",
            digest.replace(':', "-")
        ),
    ]));
    serde_json::from_str(&out).unwrap()
}

fn tags(curl: &Path, reg: &str, repo: &str) -> Vec<String> {
    let out = sh(Command::new(curl).args(["-sf", &format!("http://{reg}/v2/{repo}/tags/list")]));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_owned())
        .collect()
}

fn put_manifest(curl: &Path, reg: &str, repo: &str, reference: &str, media: &str, body: &[u8]) {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), body).unwrap();
    sh(Command::new(curl)
        .args([
            "-sf",
            "-X",
            "PUT",
            "-H",
            &format!("Content-Type: {media}"),
            "--data-binary",
        ])
        .arg(format!("@{}", file.path().display()))
        .arg(format!("http://{reg}/v2/{repo}/manifests/{reference}")));
}

#[test]
fn verify_image_against_distribution_catches_each_tampering_with_its_exit_code() {
    let (Some(registry_bin), Some(openssl), Some(curl)) =
        (tool("docker-registry"), tool("openssl"), tool("curl"))
    else {
        return;
    };
    let registry = Registry::start(&registry_bin);
    let reg = registry.addr.clone();
    let hub = hub();
    let f = Fetched::new(&hub, TWO_REPOS);
    f.fetch(&hub, &[]).ok();
    let work = tempfile::tempdir().unwrap();
    let (key, public) = key_pair(&openssl, work.path(), "signer");
    let (other_key, _) = key_pair(&openssl, work.path(), "other");
    let target = format!("{reg}/models/app:v1");
    let push = |f: &Fetched, target: &str, key: &Path| {
        json(
            run(f
                .cmd()
                .args([
                    "bake",
                    "--json",
                    "--insecure",
                    "--no-base",
                    "--push",
                    target,
                    "--sign-key",
                ])
                .arg(key))
            .ok(),
        )
    };
    let verify = |extra: &[&str]| {
        run(f
            .cmd()
            .args([
                "verify",
                "--json",
                "--insecure",
                "--image",
                &target,
                "--key",
            ])
            .arg(&public)
            .args(extra))
    };
    let baked = push(&f, &target, &key);
    let digest = baked["manifest_digest"].as_str().unwrap().to_owned();
    let attached = baked["attestations"]["attached"].as_array().unwrap();
    assert!(
        attached.iter().all(|a| a["registry"] == "tag_added"),
        "{attached:?}"
    );

    // Everything holds: the model layers were streamed, nothing stored.
    let report = json(verify(&[]).ok());
    assert!(report["bytes_read"].as_u64().unwrap() > 200_000, "{report}");
    assert_eq!(report["attestations"]["found"].as_array().unwrap().len(), 4);
    let trusted = json(verify(&["--attestations-only"]).ok());
    assert_eq!(trusted["bytes_read"], 0);

    // The referrers tag lists the four referrers; a rebake attaches nothing twice.
    let listed = fallback_index(&curl, &reg, "models/app", &digest);
    assert_eq!(listed["manifests"].as_array().unwrap().len(), 4);
    let again = push(&f, &target, &key);
    assert!(
        again["attestations"]["attached"]
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a["registry"] == "tag_present")
    );
    assert_eq!(fallback_index(&curl, &reg, "models/app", &digest), listed);

    // An attestation dropped from the referrers index: exit 5, also without reading layers.
    let mut dropped = listed.clone();
    dropped["manifests"]
        .as_array_mut()
        .unwrap()
        .retain(|m| m["annotations"]["dev.modelbake.attestation"] != "provenance");
    let index_media = "application/vnd.oci.image.index.v1+json";
    let fallback = digest.replace(':', "-");
    put_manifest(
        &curl,
        &reg,
        "models/app",
        &fallback,
        index_media,
        dropped.to_string().as_bytes(),
    );
    let r = verify(&[]);
    assert_eq!(r.code, 5, "{}", r.stderr);
    assert!(
        r.stderr.contains("no provenance signed by the key"),
        "{}",
        r.stderr
    );
    assert_eq!(verify(&["--attestations-only"]).code, 5);
    put_manifest(
        &curl,
        &reg,
        "models/app",
        &fallback,
        index_media,
        listed.to_string().as_bytes(),
    );
    verify(&[]).ok();

    // Signed with another key: exit 5.
    let elsewhere = format!("{reg}/models/other:v1");
    push(&f, &elsewhere, &other_key);
    let r = run(f
        .cmd()
        .args(["verify", "--insecure", "--image", &elsewhere, "--key"])
        .arg(&public));
    assert_eq!(r.code, 5, "{}", r.stderr);

    // One model layer altered (same size, one byte of a file changed), pushed under the tag:
    // the content differs from the lock, exit 4.
    let manifest = sh(Command::new(&curl).args([
        "-sf",
        "-H",
        "Accept: application/vnd.oci.image.manifest.v1+json",
        &format!("http://{reg}/v2/models/app/manifests/v1"),
    ]));
    let mut manifest: serde_json::Value = serde_json::from_str(&manifest).unwrap();
    let at_layer = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .position(|l| l["annotations"]["dev.modelbake.repo"] == "model/acme/signed")
        .unwrap();
    let layer = manifest["layers"][at_layer].clone();
    let blob = work.path().join("layer");
    sh(Command::new(&curl)
        .args(["-sf", "-o"])
        .arg(&blob)
        .arg(format!(
            "http://{reg}/v2/models/app/blobs/{}",
            layer["digest"].as_str().unwrap()
        )));
    let mut bytes = std::fs::read(&blob).unwrap();
    let at = bytes
        .windows(6)
        .position(|w| w == b"nested")
        .expect("a file of the layer");
    bytes[at] = b'N';
    std::fs::write(&blob, &bytes).unwrap();
    let tampered = format!("sha256:{}", sha256_hex(&bytes));
    let location = sh(Command::new(&curl).args([
        "-sf",
        "-X",
        "POST",
        "-o",
        "/dev/null",
        "-w",
        "%header{location}",
        &format!("http://{reg}/v2/models/app/blobs/uploads/"),
    ]));
    let location = if location.starts_with("http") {
        location
    } else {
        format!("http://{reg}{location}")
    };
    let sep = if location.contains('?') { '&' } else { '?' };
    sh(Command::new(&curl)
        .args([
            "-sf",
            "-X",
            "PUT",
            "-H",
            "Content-Type: application/octet-stream",
            "--data-binary",
        ])
        .arg(format!("@{}", blob.display()))
        .arg(format!("{location}{sep}digest={tampered}")));
    manifest["layers"][at_layer]["digest"] = serde_json::json!(tampered);
    put_manifest(
        &curl,
        &reg,
        "models/app",
        "v1",
        "application/vnd.oci.image.manifest.v1+json",
        manifest.to_string().as_bytes(),
    );
    let r = verify(&[]);
    assert_eq!(r.code, 4, "{}", r.stderr);
    assert!(
        json(&r)["content"]["layers"]
            .to_string()
            .contains("corrupt"),
        "{}",
        r.stdout
    );

    // Another image under the same tag (baked from another lock): exit 4.
    let g = Fetched::new(&hub, "[[dataset]]\nid = \"acme/data\"\n");
    g.fetch(&hub, &[]).ok();
    push(&g, &target, &key);
    assert_eq!(verify(&[]).code, 4);
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(bytes))
}

#[test]
fn a_registry_with_the_referrers_api_indexes_attestations_of_an_index_without_a_tag() {
    let (Some(registry_bin), Some(openssl), Some(curl)) =
        (tool("docker-registry"), tool("openssl"), tool("curl"))
    else {
        return;
    };
    let registry = Registry::start(&registry_bin);
    let api = ReferrersRegistry::start(&registry.addr);
    let hub = hub();
    let f = Fetched::new(&hub, TWO_REPOS);
    f.fetch(&hub, &[]).ok();
    let work = tempfile::tempdir().unwrap();
    let (key, public) = key_pair(&openssl, work.path(), "signer");
    let target = format!("{}/models/files:v1", api.addr);
    let baked = json(
        run(f
            .cmd()
            .args([
                "bake",
                "--json",
                "--insecure",
                "--no-base",
                "--layout",
                "files",
            ])
            .args([
                "--platform",
                "linux/amd64,linux/arm64",
                "--push",
                &target,
                "--sign-key",
            ])
            .arg(&key))
        .ok(),
    );
    let attached = baked["attestations"]["attached"].as_array().unwrap();
    // Two platform manifests and the index, four attestations each, all indexed by the API.
    assert_eq!(attached.len(), 12, "{attached:?}");
    assert!(
        attached.iter().all(|a| a["registry"] == "api"),
        "{attached:?}"
    );
    assert_eq!(api.indexed(), 12);
    let tags = tags(&curl, &registry.addr, "models/files");
    assert_eq!(
        tags,
        vec!["v1".to_owned()],
        "no referrers tag on a registry with the API"
    );

    let r = run(f
        .cmd()
        .args(["verify", "--json", "--insecure", "--layout", "files"])
        .args([
            "--platform",
            "linux/amd64,linux/arm64",
            "--image",
            &target,
            "--key",
        ])
        .arg(&public));
    let report = json(r.ok());
    assert_eq!(
        report["attestations"]["found"].as_array().unwrap().len(),
        12
    );
}
