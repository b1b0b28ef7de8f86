//! Xet: the emulator serves Xet the way the Hub does, backed by the reference CAS and filled
//! by the reference uploader (huggingface_hub with hf_xet downloads through it, proving the
//! bed faithful); modelbake downloads Xet files natively, byte-exact, with each token at its
//! own origin, renewal, resumption, and a plain-HTTP fallback when the CAS misbehaves.

use std::time::Duration;

use hub_emulator::{Fault, FaultAction, FileSpec, Host, HubEmulator, Kind, Repo, generate};
use sha2::{Digest, Sha256};

use crate::support::xet::XetBed;
use crate::support::*;

const MANIFEST: &str = "[[model]]\nid = \"acme/xet\"\n";
const HUB_TOKEN: &str = "hf_hub_secret_token";

/// A gated model with two LFS files (one spanning several xorb ranges) and a config, served
/// through Xet.
fn xet_hub(bed: &XetBed, lifetime: Duration) -> (HubEmulator, Vec<(String, Vec<u8>)>) {
    let files = vec![
        (
            "model.safetensors".to_owned(),
            generate(9 << 20, 41).to_vec(),
        ),
        ("extra.bin".to_owned(), generate(300_000, 42).to_vec()),
    ];
    let mut specs: Vec<FileSpec> = files
        .iter()
        .map(|(p, b)| FileSpec::lfs(p, b.clone()))
        .collect();
    specs.push(FileSpec::regular(
        "config.json",
        "{\"model_type\": \"bert\"}\n",
    ));
    let hub = HubEmulator::builder()
        .repo(
            Repo::model("acme/xet")
                .gated(&[HUB_TOKEN])
                .commit("main", specs),
        )
        .start()
        .unwrap();
    let named: Vec<(&str, &[u8])> = files
        .iter()
        .map(|(p, b)| (p.as_str(), b.as_slice()))
        .collect();
    bed.serve(&hub, &named, lifetime);
    (hub, files)
}

fn locked(hub: &HubEmulator) -> Fetched {
    let f = Fetched {
        project: Project::new(MANIFEST),
        store: tempfile::tempdir().unwrap(),
        cache: tempfile::tempdir().unwrap(),
    };
    run(f
        .project
        .cmd()
        .env("HF_TOKEN", HUB_TOKEN)
        .args(["lock", "--endpoint", &hub.endpoint()]))
    .ok();
    hub.clear_requests();
    hub.reset_cas_bytes();
    f
}

fn fetch_json(
    f: &Fetched,
    hub: &HubEmulator,
    args: &[&str],
    env: &[(&str, &str)],
) -> (Run, serde_json::Value) {
    let mut cmd = f.cmd();
    cmd.env("HF_TOKEN", HUB_TOKEN)
        .args(["fetch", "--json", "--endpoint", &hub.endpoint()])
        .args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = run(&mut cmd);
    // Shown when the test fails: why a download left the Xet path.
    eprintln!("fetch {args:?}: {}", out.stderr);
    let json = serde_json::from_str(&out.stdout).unwrap_or(serde_json::Value::Null);
    (out, json)
}

fn sha256(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

fn cas_requests(hub: &HubEmulator) -> Vec<hub_emulator::LoggedRequest> {
    hub.requests()
        .into_iter()
        .filter(|r| r.host == Host::Cas)
        .collect()
}

fn assert_store_holds(f: &Fetched, files: &[(String, Vec<u8>)]) {
    for (path, bytes) in files {
        let stored = std::fs::read(f.store_blob(&sha256(bytes))).unwrap();
        assert!(
            stored == *bytes,
            "{path}: the stored blob differs from the file"
        );
    }
}

#[test]
fn huggingface_hub_with_hf_xet_downloads_through_the_emulator_byte_exact() {
    let Some(bed) = XetBed::start() else { return };
    let (hub, files) = xet_hub(&bed, Duration::from_secs(3600));
    let home = tempfile::tempdir().unwrap();
    let script = "import sys\nfrom huggingface_hub import hf_hub_download\nprint(hf_hub_download('acme/xet', sys.argv[1]))";
    for (path, bytes) in &files {
        let out = sh(std::process::Command::new(bed.python())
            .args(["-c", script, path])
            .env("HF_ENDPOINT", hub.endpoint())
            .env("HF_TOKEN", HUB_TOKEN)
            .env("HF_HOME", home.path())
            .env_remove("HF_HUB_DISABLE_XET")
            .env("HF_HUB_DISABLE_TELEMETRY", "1"));
        let got = std::fs::read(out.trim()).unwrap();
        assert!(got == *bytes, "{path} differs");
    }
    let cas = cas_requests(&hub);
    assert!(
        cas.iter().any(|r| r.path.contains("reconstructions")),
        "huggingface_hub never asked the CAS: {cas:?}"
    );
    assert!(hub.cas_bytes_served() > 0);
    assert!(!hub.xet_tokens().is_empty());
    assert!(
        hub.requests().iter().all(|r| r.host != Host::Cdn),
        "huggingface_hub took the plain path"
    );
}

#[test]
fn the_token_route_answers_in_json_and_headers_and_xet_off_announces_nothing() {
    let Some(bed) = XetBed::start() else { return };
    let (hub, files) = xet_hub(&bed, Duration::from_secs(600));
    // Headers and body of a request, with curl (no redirects followed).
    let curl = |method: &str, url: &str| -> (String, String) {
        let out = sh(std::process::Command::new("curl")
            .args(["-s", "-D", "-", "-X", method, "-H"])
            .arg(format!("Authorization: Bearer {HUB_TOKEN}"))
            .args(if method == "HEAD" { vec!["-I"] } else { vec![] })
            .arg(url));
        let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
        (head.to_ascii_lowercase(), body.to_owned())
    };
    let header = |head: &str, name: &str| {
        head.lines().find_map(|l| {
            l.strip_prefix(&format!("{name}: "))
                .map(|v| v.trim().to_owned())
        })
    };
    let (head, body) = curl(
        "GET",
        &format!("{}/api/models/acme/xet/xet-read-token/main", hub.endpoint()),
    );
    assert!(head.starts_with("http/1.1 200"), "{head}");
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    let access = body["accessToken"].as_str().unwrap();
    assert_eq!(
        header(&head, "x-xet-access-token").as_deref(),
        Some(access.to_ascii_lowercase().as_str())
    );
    assert_eq!(header(&head, "x-xet-cas-url"), Some(hub.cas_url()));
    assert_eq!(body["casUrl"], hub.cas_url().as_str());
    assert!(body["exp"].as_u64().is_some());
    let resolve = format!("{}/acme/xet/resolve/main/{}", hub.endpoint(), files[0].0);
    let (head, _) = curl("HEAD", &resolve);
    assert!(header(&head, "x-xet-hash").is_some(), "{head}");
    assert!(header(&head, "link").unwrap().contains("rel=\"xet-auth\""));
    hub.disable_xet();
    let (head, _) = curl("HEAD", &resolve);
    assert!(head.starts_with("http/1.1 302"), "{head}");
    assert!(header(&head, "x-xet-hash").is_none());
}

#[test]
fn modelbake_fetches_xet_files_natively_byte_exact_with_each_token_at_its_own_origin() {
    let Some(bed) = XetBed::start() else { return };
    let (hub, files) = xet_hub(&bed, Duration::from_secs(3600));
    let f = locked(&hub);
    let lock = std::fs::read_to_string(f.project.path().join("models.lock")).unwrap();
    assert_eq!(
        lock.matches("xet_hash").count(),
        2,
        "the lock records both Xet hashes:\n{lock}"
    );
    let (out, report) = fetch_json(&f, &hub, &[], &[]);
    out.ok();
    assert_eq!(report["from_xet"], 2, "{report}");
    assert_store_holds(&f, &files);
    let requests = hub.requests();
    assert!(
        requests.iter().all(|r| r.host != Host::Cdn),
        "an LFS file came over plain HTTP"
    );
    let tokens: Vec<String> = hub.xet_tokens().into_iter().map(|t| t.token).collect();
    for r in &requests {
        let auth = r.authorization.as_deref().unwrap_or("");
        match r.host {
            Host::Cas => {
                assert!(
                    !auth.contains(HUB_TOKEN),
                    "the Hub token reached the CAS: {r:?}"
                );
                if r.path.starts_with("/v1/fetch_term") {
                    assert!(
                        auth.is_empty(),
                        "a presigned xorb URL got a credential: {r:?}"
                    );
                }
            }
            _ => assert!(
                tokens.iter().all(|t| !auth.contains(t.as_str())),
                "a CAS token reached the Hub: {r:?}"
            ),
        }
    }
    // No secret in the output either.
    for t in &tokens {
        assert!(!out.stdout.contains(t.as_str()) && !out.stderr.contains(t.as_str()));
    }
    assert!(
        !out.stdout.contains("fetch_term?term="),
        "a presigned URL was printed"
    );
}

#[test]
fn no_xet_and_hf_hub_disable_xet_take_the_plain_path() {
    let Some(bed) = XetBed::start() else { return };
    let (hub, files) = xet_hub(&bed, Duration::from_secs(3600));
    for (args, env) in [
        (vec!["--no-xet"], vec![]),
        (vec![], vec![("HF_HUB_DISABLE_XET", "1")]),
    ] {
        let f = locked(&hub);
        let (out, report) = fetch_json(&f, &hub, &args, &env);
        out.ok();
        assert_eq!(report["from_xet"], 0);
        assert!(
            cas_requests(&hub).is_empty(),
            "{args:?} {env:?}: the CAS was asked"
        );
        assert_store_holds(&f, &files);
    }
}

#[test]
fn a_corrupt_xorb_range_is_refused_and_nothing_unverified_becomes_visible() {
    let Some(bed) = XetBed::start() else { return };
    let (hub, files) = xet_hub(&bed, Duration::from_secs(3600));
    // Corrupt bytes in every xorb range: the file comes over plain HTTP instead, verified.
    let f = locked(&hub);
    hub.inject(
        Fault::on("/v1/fetch_term")
            .host(Host::Cas)
            .action(FaultAction::FlipByteAt(100_000)),
    );
    let (out, report) = fetch_json(&f, &hub, &["-j", "1"], &[]);
    out.ok();
    assert_eq!(report["from_xet"], 0, "{report}");
    assert_eq!(
        report["xet_fallbacks"].as_array().map(Vec::len),
        Some(2),
        "{report}"
    );
    assert!(out.stderr.contains("Xet download failed"), "{}", out.stderr);
    assert_store_holds(&f, &files);
    // Both paths lie: the fetch fails and the store holds no blob of that file.
    let f = locked(&hub);
    hub.inject(
        Fault::on("/lfs/")
            .host(Host::Cdn)
            .action(FaultAction::WrongBytes),
    );
    let (out, _) = fetch_json(&f, &hub, &["-j", "1"], &[]);
    assert_ne!(out.code, 0);
    assert!(
        !f.store_blob(&sha256(&files[0].1)).exists(),
        "an unverified blob became visible"
    );
}

#[test]
fn refused_and_expiring_tokens_are_renewed_and_the_download_stays_on_xet() {
    let Some(bed) = XetBed::start() else { return };
    // Tokens that live 20 s are always within the 30 s renewal margin: each file asks anew.
    let (hub, files) = xet_hub(&bed, Duration::from_secs(20));
    let f = locked(&hub);
    let (out, report) = fetch_json(&f, &hub, &["-j", "1"], &[]);
    out.ok();
    assert_eq!(report["from_xet"], 2, "{report}");
    assert!(
        hub.xet_tokens().len() >= 2,
        "no renewal: {:?}",
        hub.xet_tokens()
    );
    assert_store_holds(&f, &files);

    // The CAS refuses a token once: a new one is asked for and the download stays on Xet.
    hub.set_xet_token_lifetime(Duration::from_secs(3600));
    let f = locked(&hub);
    let before = hub.xet_tokens().len();
    hub.inject(
        Fault::on("/v2/reconstructions")
            .host(Host::Cas)
            .status(401)
            .times(1),
    );
    let (out, report) = fetch_json(&f, &hub, &["-j", "1"], &[]);
    out.ok();
    assert_eq!(report["from_xet"], 2, "{report}");
    assert!(
        hub.xet_tokens().len() >= before + 2,
        "the refused token was not replaced"
    );
}

#[test]
fn a_killed_xet_download_resumes_without_fetching_its_written_terms_again() {
    let Some(bed) = XetBed::start() else { return };
    let (hub, files) = xet_hub(&bed, Duration::from_secs(3600));
    let f = locked(&hub);
    // Slow xorb ranges, small buffers (written to the partial file every MiB), one connection.
    hub.inject(
        Fault::on("/v1/fetch_term")
            .host(Host::Cas)
            .action(FaultAction::Delay(Duration::from_millis(700))),
    );
    let mut child = f
        .cmd()
        .env("HF_TOKEN", HUB_TOKEN)
        .env("MODELBAKE_CHUNK_MIB", "1")
        .args(["fetch", "-q", "-j", "1", "--endpoint", &hub.endpoint()])
        .spawn()
        .unwrap();
    let big = &files[0].1;
    // Killed once at least 3 MiB are written to the partial file (what a resume keeps).
    let tmp = f.store.path().join("tmp");
    let written = || {
        std::fs::read_dir(&tmp)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.metadata().ok())
            .map(|m| m.len())
            .max()
            .unwrap_or(0)
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while written() < 3 << 20 {
        assert!(
            std::time::Instant::now() < deadline,
            "the download never got going"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    hub.clear_faults();
    hub.reset_cas_bytes();
    let (out, report) = fetch_json(&f, &hub, &[], &[]);
    out.ok();
    assert_eq!(
        report["from_xet"].as_u64().unwrap() + report["present"].as_u64().unwrap(),
        2
    );
    assert_store_holds(&f, &files);
    let again = hub.cas_bytes_served();
    assert!(
        again < big.len() as u64 - (2 << 20),
        "the resumed run fetched {again} bytes of a {} byte file",
        big.len()
    );
    let _ = Kind::Model;
}

/// A 16 MiB "checkpoint" and its next revision with two of its sixteen 1 MiB tensors changed.
fn two_revisions() -> (Vec<u8>, Vec<u8>) {
    let old = generate(16 << 20, 51).to_vec();
    let mut new = old.clone();
    for (i, at) in [3usize << 20, 11 << 20].into_iter().enumerate() {
        new[at..at + (1 << 20)].copy_from_slice(&generate(1 << 20, 60 + i as u64));
    }
    (old, new)
}

/// Locks and fetches revision one, then moves `main` to revision two (uploaded by the
/// reference uploader, which deduplicates against revision one's xorbs) and locks again.
fn fetched_then_updated(bed: &XetBed) -> (HubEmulator, Fetched, Vec<u8>) {
    fetched_then_updated_with(bed, &[])
}

/// [`fetched_then_updated`], the first fetch run with `first_args`.
fn fetched_then_updated_with(bed: &XetBed, first_args: &[&str]) -> (HubEmulator, Fetched, Vec<u8>) {
    let (old, new) = two_revisions();
    let hub = HubEmulator::builder()
        .repo(Repo::model("acme/xet").gated(&[HUB_TOKEN]).commit(
            "main",
            vec![FileSpec::lfs("model.safetensors", old.clone())],
        ))
        .start()
        .unwrap();
    bed.serve(
        &hub,
        &[("model.safetensors", &old)],
        Duration::from_secs(3600),
    );
    let f = locked(&hub);
    let (out, first) = fetch_json(&f, &hub, first_args, &[]);
    out.ok();
    assert_eq!(first["from_xet"], u64::from(first_args.is_empty()));
    assert_eq!(first["xet_reused_bytes"], 0);
    hub.push_commit(
        Kind::Model,
        "acme/xet",
        "main",
        vec![FileSpec::lfs("model.safetensors", new.clone())],
    )
    .unwrap();
    bed.serve(
        &hub,
        &[("model.safetensors", &new)],
        Duration::from_secs(3600),
    );
    run(f.project.cmd().env("HF_TOKEN", HUB_TOKEN).args([
        "lock",
        "--update",
        "acme/xet",
        "--endpoint",
        &hub.endpoint(),
    ]))
    .ok();
    hub.reset_cas_bytes();
    (hub, f, new)
}

#[test]
fn a_new_revision_downloads_only_its_changed_chunks_and_copies_the_rest_from_the_store() {
    let Some(bed) = XetBed::start() else { return };
    let (hub, f, new) = fetched_then_updated(&bed);
    let (out, report) = fetch_json(&f, &hub, &[], &[]);
    out.ok();
    assert_eq!(report["from_xet"], 1, "{report}");
    assert_store_holds(&f, &[("model.safetensors".into(), new.clone())]);
    let size = new.len() as u64;
    let at_cas = hub.cas_bytes_served();
    let reused = report["xet_reused_bytes"].as_u64().unwrap();
    // Two of sixteen tensors changed (12.5%); chunk boundaries around each change add a
    // little. The new xorb's range serves several terms and is read once.
    assert!(
        at_cas * 100 <= size * 15,
        "the update fetched {at_cas} bytes of a {size} byte file at the CAS"
    );
    assert_eq!(report["downloaded_bytes"].as_u64().unwrap(), at_cas);
    assert!(
        reused + at_cas >= size && reused * 100 >= size * 70,
        "{reused} bytes copied from the store, {at_cas} downloaded, of {size}"
    );
    // Both revisions' blobs now serve later updates.
    let index = f.store.path().join("xet/chunks");
    let maps = walk(&index);
    assert_eq!(maps.len(), 2, "{maps:?}");

    // A store with nothing to reuse reads each range once, merged or not: about the file.
    // One connection permit: the merged range is parked between its terms while the others
    // are read, and nothing waits for a permit a parked range holds.
    let fresh = tempfile::tempdir().unwrap();
    hub.reset_cas_bytes();
    let mut cmd = f.cmd();
    cmd.env("MODELBAKE_STORE", fresh.path());
    run(cmd.env("HF_TOKEN", HUB_TOKEN).args([
        "fetch",
        "-q",
        "-j",
        "1",
        "--endpoint",
        &hub.endpoint(),
    ]))
    .ok();
    let at_cas = hub.cas_bytes_served();
    assert!(
        at_cas >= size && at_cas * 100 <= size * 101,
        "a fresh fetch of a {size} byte file read {at_cas} bytes at the CAS"
    );
}

#[test]
fn a_blob_that_came_over_plain_http_is_indexed_on_demand_and_its_chunks_reused() {
    let Some(bed) = XetBed::start() else { return };
    let (hub, f, new) = fetched_then_updated_with(&bed, &["--no-xet"]);
    assert!(
        !f.store.path().join("xet/chunks").exists(),
        "a plain download has no chunk map"
    );
    let (out, report) = fetch_json(&f, &hub, &[], &[]);
    out.ok();
    assert_eq!(report["from_xet"], 1, "{report}");
    assert_store_holds(&f, &[("model.safetensors".into(), new.clone())]);
    let size = new.len() as u64;
    let at_cas = hub.cas_bytes_served();
    assert!(
        at_cas * 100 <= size * 15,
        "the update fetched {at_cas} bytes of a {size} byte file at the CAS"
    );
    assert!(report["xet_reused_bytes"].as_u64().unwrap() * 100 >= size * 70);
    // The old blob was indexed (its reconstruction asked for at its own commit), then the new.
    assert_eq!(walk(&f.store.path().join("xet/chunks")).len(), 2);
}

#[test]
fn a_local_blob_that_changed_under_the_store_is_not_trusted_for_chunks() {
    let Some(bed) = XetBed::start() else { return };
    let (hub, f, new) = fetched_then_updated(&bed);
    // Damage the old revision's blob in place (same size): its chunk map now lies.
    let (old, _) = two_revisions();
    let blob = f.store_blob(&sha256(&old));
    let mut perms = std::fs::metadata(&blob).unwrap().permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    perms.set_readonly(false);
    std::fs::set_permissions(&blob, perms).unwrap();
    let mut damaged = old.clone();
    damaged[5 << 20] ^= 0xff;
    std::fs::write(&blob, &damaged).unwrap();
    let (out, report) = fetch_json(&f, &hub, &[], &[]);
    out.ok();
    assert!(
        out.stderr.contains("did not match its sha256"),
        "{}",
        out.stderr
    );
    assert_eq!(report["from_xet"], 1, "{report}");
    assert_store_holds(&f, &[("model.safetensors".into(), new.clone())]);
    assert!(hub.cas_bytes_served() >= new.len() as u64 * 9 / 10);
}

/// Every file under `dir`.
fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = entry.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}
