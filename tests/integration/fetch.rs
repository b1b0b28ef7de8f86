//! `modelbake fetch`, `export` and `verify` against the emulator: the layout, no-network
//! re-runs, resume after drops and kills, bad bytes, concurrent processes, a full disk, offline
//! mode and imports from existing caches.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

use hub_emulator::{Fault, FaultAction, FileSpec, Host, HubEmulator, Kind, Repo, generate};
use sha2::{Digest, Sha256};

use crate::support::*;

const TINY_AND_DATA: &str = "[[model]]\nid = \"acme/tiny\"\n\n[[dataset]]\nid = \"acme/data\"\ninclude = [\"data/train-*\"]\n";

fn cdn_gets(hub: &HubEmulator) -> Vec<hub_emulator::LoggedRequest> {
    hub.requests()
        .into_iter()
        .filter(|r| r.host == Host::Cdn && r.method == "GET")
        .collect()
}

#[test]
fn fetch_export_verify_lay_out_the_huggingface_hub_cache() {
    let hub = emulator();
    let f = Fetched::new(&hub, TINY_AND_DATA);
    f.fetch(&hub, &[]).ok();
    let run = f.export(&["--json"]);
    run.ok();
    let report: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(report["repos"], 2);

    let commit = hub.commit_of(Kind::Model, "acme/tiny", "main").unwrap();
    let repo = f.hub_cache().join("models--acme--tiny");
    // refs/main: exactly the 40-hex commit, no newline.
    assert_eq!(fs::read(repo.join("refs/main")).unwrap(), commit.as_bytes());
    // Relative symlinks, one more ../ per folder level, to blobs named like huggingface_hub.
    let snap = repo.join("snapshots").join(&commit);
    let lock = f.project.lock();
    for (path, file) in locked_files(locked_repo(&lock, "acme/tiny")) {
        let link = fs::read_link(snap.join(&path)).unwrap();
        let depth = path.matches('/').count();
        let expected = format!(
            "{}blobs/{}",
            "../".repeat(2 + depth),
            file["blob"].as_str().unwrap()
        );
        assert_eq!(link.to_str(), Some(expected.as_str()), "{path}");
        // Blobs are hard links to the store: the same inode, no second copy.
        let blob = repo.join("blobs").join(file["blob"].as_str().unwrap());
        let in_store = f.store_blob(file["sha256"].as_str().unwrap());
        assert_eq!(
            fs::metadata(&blob).unwrap().ino(),
            fs::metadata(&in_store).unwrap().ino(),
            "{path}"
        );
        let stored = hub
            .files_at(Kind::Model, "acme/tiny", "main")
            .into_iter()
            .find(|s| s.path == path)
            .unwrap();
        let bytes = fs::read(snap.join(&path)).unwrap();
        assert_eq!(hex::encode(Sha256::digest(&bytes)), stored.sha256, "{path}");
    }
    // trees/ only for the complete repo, not for the filtered dataset.
    assert!(repo.join("trees").join(format!("{commit}.json")).is_file());
    let data = f.hub_cache().join("datasets--acme--data");
    assert!(
        !data.join("trees").exists(),
        "a filtered snapshot must not get trees/"
    );
    assert_eq!(fs::read_dir(data.join("snapshots")).unwrap().count(), 1);

    f.verify(&[]).ok();

    // Idempotent: a second export changes nothing.
    let run = f.export(&["--json"]);
    run.ok();
    let again: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(
        (
            again["symlinks_written"].as_u64(),
            again["refs_written"].as_u64(),
            again["linked"].as_u64()
        ),
        (Some(0), Some(0), Some(0))
    );
}

#[test]
fn a_second_fetch_needs_no_network() {
    let hub = emulator();
    let f = Fetched::new(&hub, TINY_AND_DATA);
    f.fetch(&hub, &[]).ok();
    hub.clear_requests();
    let run = f.fetch(&hub, &["--json"]);
    run.ok();
    assert!(hub.requests().is_empty(), "{:?}", hub.requests());
    let report: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(report["downloaded"], 0);
    assert_eq!(report["present"], report["blobs"]);
    // And --offline works once everything is there.
    f.fetch(&hub, &["--offline"]).ok();
}

#[test]
fn files_come_from_the_locked_commit_even_after_the_branch_moved() {
    let hub = emulator();
    let f = Fetched::new(&hub, "[[model]]\nid = \"acme/tiny\"\n");
    let locked = hub.commit_of(Kind::Model, "acme/tiny", "main").unwrap();
    hub.push_commit(
        Kind::Model,
        "acme/tiny",
        "main",
        vec![FileSpec::regular("config.json", "{}")],
    )
    .unwrap();
    f.fetch(&hub, &[]).ok();
    for r in hub.requests().iter().filter(|r| r.host == Host::Hub) {
        assert!(
            r.path.contains(&locked),
            "not pinned to the locked commit: {}",
            r.path
        );
    }
}

#[test]
fn a_dropped_connection_resumes_from_where_it_stopped() {
    let big = generate(3_000_000, 7);
    let hub = HubEmulator::builder()
        .repo(Repo::model("acme/big").commit("main", vec![FileSpec::lfs("w.bin", big.clone())]))
        .start()
        .unwrap();
    let sha = hex::encode(Sha256::digest(&big));

    // One stream: the second request asks for the rest only.
    hub.inject(
        Fault::on("/lfs/")
            .host(Host::Cdn)
            .action(FaultAction::Truncate(1_000_000))
            .times(1),
    );
    let f = Fetched::new(&hub, "[[model]]\nid = \"acme/big\"\n");
    f.fetch(&hub, &[]).ok();
    let gets = cdn_gets(&hub);
    assert_eq!(gets.len(), 2, "{gets:?}");
    assert_eq!(gets[0].range, None);
    let resumed_at: u64 = gets[1]
        .range
        .as_deref()
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert!(
        resumed_at > 0 && resumed_at <= 1_000_000,
        "resumed at {resumed_at}: {gets:?}"
    );
    assert_eq!(fs::read(f.store_blob(&sha)).unwrap(), big);

    // Chunks: the retry of a cut chunk starts inside that chunk.
    hub.clear_requests();
    hub.inject(
        Fault::on("/lfs/")
            .host(Host::Cdn)
            .action(FaultAction::Truncate(300_000))
            .times(1),
    );
    let g = Fetched::new(&hub, "[[model]]\nid = \"acme/big\"\n");
    run(g
        .cmd()
        .args(["fetch", "-j", "1", "--endpoint", &hub.endpoint()])
        .env("MODELBAKE_CHUNK_MIB", "1")
        .env("MODELBAKE_CHUNK_THRESHOLD_MIB", "1"))
    .ok();
    let ranges: Vec<String> = cdn_gets(&hub).into_iter().filter_map(|r| r.range).collect();
    assert_eq!(ranges[0], "bytes=0-1048575");
    assert!(
        ranges[1].starts_with("bytes=") && !ranges[1].starts_with("bytes=0-"),
        "{ranges:?}"
    );
    let start: u64 = ranges[1]["bytes=".len()..]
        .split('-')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(start > 0 && start <= 300_000, "{ranges:?}");
    assert_eq!(
        ranges.len(),
        4,
        "three 1 MiB chunks plus one resumed request: {ranges:?}"
    );
    assert_eq!(fs::read(g.store_blob(&sha)).unwrap(), big);
}

#[test]
fn wrong_bytes_are_reported_and_never_published() {
    let content = generate(200_000, 9);
    let hub = HubEmulator::builder()
        .repo(Repo::model("acme/bad").commit("main", vec![FileSpec::lfs("w.bin", content.clone())]))
        .start()
        .unwrap();
    hub.inject(
        Fault::on("/lfs/")
            .host(Host::Cdn)
            .action(FaultAction::WrongBytes),
    );
    let f = Fetched::new(&hub, "[[model]]\nid = \"acme/bad\"\n");
    let run = f.fetch(&hub, &[]);
    run.expect_code(1);
    let expected = hex::encode(Sha256::digest(&content));
    let corrupted: Vec<u8> = content.iter().map(|b| b ^ 0x5a).collect();
    let actual = hex::encode(Sha256::digest(&corrupted));
    for needle in [
        "model `acme/bad`",
        "file `w.bin`",
        &format!("expected {expected}"),
        &format!("got {actual}"),
    ] {
        assert!(
            run.stderr.contains(needle),
            "missing {needle:?} in:\n{}",
            run.stderr
        );
    }
    assert!(
        !f.store_blob(&expected).exists(),
        "a corrupt blob was published"
    );
    assert_eq!(
        fs::read_dir(f.store.path().join("tmp")).unwrap().count(),
        0,
        "the corrupt partial is discarded"
    );
    // Skipping fsync never skips verification.
    f.fetch(&hub, &["--no-fsync"]).expect_code(1);
    assert!(
        !f.store_blob(&expected).exists(),
        "a corrupt blob was published without fsync"
    );
}

/// A repo big enough to interrupt: four 6 MB LFS files and two small regular files.
fn big_repo() -> Repo {
    let mut files: Vec<FileSpec> = (0..4)
        .map(|i| FileSpec::generated_lfs(&format!("shard-{i}.safetensors"), 6_000_000, 100 + i))
        .collect();
    files.push(FileSpec::regular("config.json", CONFIG_JSON));
    files.push(FileSpec::regular(
        "tokenizer.json",
        "{\"version\": \"1.0\"}",
    ));
    Repo::model("acme/big").commit("main", files)
}

fn published(store: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for shard in fs::read_dir(store.join("blobs/sha256"))
        .into_iter()
        .flatten()
        .flatten()
    {
        for blob in fs::read_dir(shard.path()).into_iter().flatten().flatten() {
            out.insert(blob.file_name().to_string_lossy().into_owned());
        }
    }
    out
}

#[test]
fn killed_fetches_resume_and_never_redownload_a_finished_blob() {
    let hub = HubEmulator::builder().repo(big_repo()).start().unwrap();
    // Slow every CDN request down so that kills land in the middle of downloads.
    hub.inject(
        Fault::on("/lfs/")
            .host(Host::Cdn)
            .action(FaultAction::Delay(Duration::from_millis(25))),
    );
    let f = Fetched::new(&hub, "[[model]]\nid = \"acme/big\"\n");
    let chunked = |c: &mut std::process::Command| {
        c.env("MODELBAKE_CHUNK_MIB", "1")
            .env("MODELBAKE_CHUNK_THRESHOLD_MIB", "2")
            .args(["fetch", "-j", "2", "--endpoint", &hub.endpoint()]);
    };
    let mut rng = fastrand::Rng::with_seed(42);
    for round in 0..5 {
        let before = published(f.store.path());
        hub.clear_requests();
        let mut cmd = f.cmd();
        chunked(&mut cmd);
        let mut child = cmd
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(rng.u64(30..400)));
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        for r in cdn_gets(&hub) {
            let sha = r.path.rsplit('/').next().unwrap_or_default().to_owned();
            assert!(
                !before.contains(&sha),
                "round {round}: finished blob {sha} was downloaded again"
            );
        }
    }
    let before = published(f.store.path());
    hub.clear_requests();
    let mut cmd = f.cmd();
    chunked(&mut cmd);
    run(&mut cmd).ok();
    for r in cdn_gets(&hub) {
        assert!(
            !before.iter().any(|sha| r.path.ends_with(sha.as_str())),
            "finished blob downloaded again: {}",
            r.path
        );
    }
    assert_eq!(published(f.store.path()).len(), 6);
    f.export(&[]).ok();
    f.verify(&[]).ok();
}

#[test]
fn concurrent_fetches_download_each_blob_once() {
    let hub = HubEmulator::builder().repo(big_repo()).start().unwrap();
    hub.inject(
        Fault::on("/lfs/")
            .host(Host::Cdn)
            .action(FaultAction::Delay(Duration::from_millis(50))),
    );
    let f = Fetched::new(&hub, "[[model]]\nid = \"acme/big\"\n");
    let children: Vec<_> = (0..8)
        .map(|_| {
            f.cmd()
                .args(["fetch", "--json", "--endpoint", &hub.endpoint()])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut downloaded = 0;
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        downloaded += report["downloaded"].as_u64().unwrap();
    }
    assert_eq!(
        downloaded, 6,
        "each blob is downloaded by exactly one process"
    );
    let mut per_path: BTreeMap<String, usize> = BTreeMap::new();
    for r in hub.requests().into_iter().filter(|r| {
        r.method == "GET" && (r.host == Host::Cdn || r.path.starts_with("/api/resolve-cache/"))
    }) {
        *per_path.entry(r.path).or_default() += 1;
    }
    assert_eq!(per_path.len(), 6, "{per_path:?}");
    assert!(
        per_path.values().all(|&n| n == 1),
        "a blob was downloaded more than once: {per_path:?}"
    );
    f.export(&[]).ok();
    f.verify(&[]).ok();
}

#[test]
fn a_full_disk_fails_clearly_and_publishes_nothing() {
    let big = generate(3_000_000, 11);
    let sha = hex::encode(Sha256::digest(&big));
    let hub = HubEmulator::builder()
        .repo(Repo::model("acme/big").commit(
            "main",
            vec![
                FileSpec::lfs("w.bin", big),
                FileSpec::regular("config.json", CONFIG_JSON),
            ],
        ))
        .start()
        .unwrap();
    let f = Fetched::new(&hub, "[[model]]\nid = \"acme/big\"\n");
    let listing = f.cache.path().join("listing.txt");
    // A 1 MiB tmpfs as the store, mounted in a private user+mount namespace (no root needed).
    let script = format!(
        "mount -t tmpfs -o size=1m tmpfs \"$MODELBAKE_STORE\" || exit 90; \"{bin}\" fetch --endpoint {ep}; rc=$?; find \"$MODELBAKE_STORE/blobs\" -type f > \"{listing}\"; exit $rc",
        bin = env!("CARGO_BIN_EXE_modelbake"),
        ep = hub.endpoint(),
        listing = listing.display()
    );
    let cmd = f.cmd();
    let mut unshare = std::process::Command::new("unshare");
    unshare
        .args(["--user", "--map-root-user", "--mount", "sh", "-c", &script])
        .current_dir(f.project.path());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => unshare.env(k, v),
            None => unshare.env_remove(k),
        };
    }
    let result = run(&mut unshare);
    if result.code == 90 || result.stderr.contains("unshare:") {
        let msg = format!(
            "cannot mount a small tmpfs for the full-disk test: {}",
            result.stderr
        );
        if std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false") {
            panic!("{msg}");
        }
        eprintln!("!!! SKIPPED: {msg}");
        return;
    }
    result.expect_code(1);
    assert!(
        result.stderr.contains("No space left on device"),
        "{}",
        result.stderr
    );
    assert!(
        result.stderr.contains("disk is full"),
        "the error says what to do: {}",
        result.stderr
    );
    assert!(result.stderr.contains("file `w.bin`"), "{}", result.stderr);
    let published = fs::read_to_string(&listing).unwrap();
    assert!(
        !published.contains(&sha),
        "a partial blob was published: {published}"
    );
}

#[test]
fn offline_fetch_lists_what_is_missing_and_makes_no_request() {
    let hub = emulator();
    let f = Fetched::new(&hub, TINY_AND_DATA);
    hub.clear_requests();
    let run = f.fetch(&hub, &["--offline"]);
    run.expect_code(1);
    assert!(hub.requests().is_empty());
    assert!(run.stderr.contains("--offline"), "{}", run.stderr);
    assert!(
        run.stderr
            .contains("model `acme/tiny` file `model.safetensors`"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains("dataset `acme/data` file `data/train-00000.parquet`"),
        "{}",
        run.stderr
    );
}

#[test]
fn blobs_are_imported_from_existing_caches_only_when_their_hash_matches() {
    let hub = emulator();
    let first = Fetched::new(&hub, TINY_AND_DATA);
    first.fetch(&hub, &[]).ok();
    first.export(&["--copy"]).ok();

    // A fresh store imports everything from that cache without any network.
    let second = Fetched {
        project: Project::new(TINY_AND_DATA),
        store: tempfile::tempdir().unwrap(),
        cache: tempfile::tempdir().unwrap(),
    };
    fs::copy(first.project.lock_path(), second.project.lock_path()).unwrap();
    hub.clear_requests();
    let reuse = first.hub_cache();
    let run = crate::support::run(
        second
            .cmd()
            .args(["fetch", "--offline", "--json", "--reuse"])
            .arg(&reuse),
    );
    run.ok();
    let report: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(report["imported"], report["blobs"]);
    assert!(hub.requests().is_empty());

    // A corrupted cache file is not trusted.
    let lock = first.project.lock();
    let safetensors = locked_files(locked_repo(&lock, "acme/tiny"))
        .into_iter()
        .find(|(p, _)| p == "model.safetensors")
        .unwrap()
        .1;
    let blob = reuse
        .join("models--acme--tiny/blobs")
        .join(safetensors["blob"].as_str().unwrap());
    let mut bytes = fs::read(&blob).unwrap();
    bytes[100] ^= 1;
    fs::write(&blob, bytes).unwrap();
    let third = Fetched {
        project: Project::new(TINY_AND_DATA),
        store: tempfile::tempdir().unwrap(),
        cache: tempfile::tempdir().unwrap(),
    };
    fs::copy(first.project.lock_path(), third.project.lock_path()).unwrap();
    let run = crate::support::run(
        third
            .cmd()
            .args(["fetch", "--offline", "--reuse"])
            .arg(&reuse),
    );
    run.expect_code(1);
    assert!(
        run.stderr
            .contains("model `acme/tiny` file `model.safetensors`"),
        "{}",
        run.stderr
    );
    assert!(
        !third
            .store_blob(safetensors["sha256"].as_str().unwrap())
            .exists()
    );
}

#[test]
fn verify_catches_flipped_bytes_missing_files_broken_links_and_bad_refs() {
    let hub = emulator();
    let f = Fetched::new(&hub, "[[model]]\nid = \"acme/tiny\"\n");
    f.fetch(&hub, &[]).ok();
    f.export(&["--copy"]).ok();
    f.verify(&[]).ok();
    let repo = f.hub_cache().join("models--acme--tiny");
    let commit = hub.commit_of(Kind::Model, "acme/tiny", "main").unwrap();
    let snap = repo.join("snapshots").join(&commit);
    let lock = f.project.lock();
    let files: BTreeMap<String, toml::Value> = locked_files(locked_repo(&lock, "acme/tiny"))
        .into_iter()
        .collect();
    let blob_of = |p: &str| repo.join("blobs").join(files[p]["blob"].as_str().unwrap());

    // A flipped byte in one blob.
    let mut bytes = fs::read(blob_of("model.safetensors")).unwrap();
    bytes[10] ^= 0xff;
    fs::write(blob_of("model.safetensors"), bytes).unwrap();
    // A missing file.
    fs::remove_file(snap.join("tokenizer.json")).unwrap();
    // A broken symlink.
    fs::remove_file(blob_of("sub/dir/nested.txt")).unwrap();
    // A ref with a newline.
    fs::write(repo.join("refs/main"), format!("{commit}\n")).unwrap();
    // An extra file.
    fs::write(snap.join("extra.txt"), "x").unwrap();

    let run = f.verify(&["--json"]);
    run.expect_code(1);
    let report: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(report["ok"], false);
    let problems: BTreeSet<String> = report["repos"][0]["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            format!(
                "{}:{}",
                p["problem"].as_str().unwrap(),
                p["path"].as_str().or(p["revision"].as_str()).unwrap_or("")
            )
        })
        .collect();
    let expected: BTreeSet<String> = [
        "corrupt:model.safetensors",
        "missing:tokenizer.json",
        "broken_symlink:sub/dir/nested.txt",
        "bad_ref:main",
        "extra:extra.txt",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    assert_eq!(problems, expected);
    assert!(run.stderr.contains("refs/main holds"), "{}", run.stderr);

    // export repairs what it owns, verify agrees again (the extra file stays: it is not ours).
    fs::remove_file(snap.join("extra.txt")).unwrap();
    fs::remove_file(blob_of("model.safetensors")).unwrap();
    f.export(&[]).ok();
    f.verify(&[]).ok();
}

#[test]
fn export_merges_without_touching_other_repos_or_revisions() {
    let hub = emulator();
    let f = Fetched::new(&hub, "[[model]]\nid = \"acme/tiny\"\n");
    f.fetch(&hub, &[]).ok();
    let repo = f.hub_cache().join("models--acme--tiny");
    // Someone else's repo and another revision of ours, already in the cache.
    let other = f.hub_cache().join("models--someone--else/snapshots/abc");
    fs::create_dir_all(&other).unwrap();
    fs::write(other.join("f.txt"), "theirs").unwrap();
    let old = repo.join("snapshots/1111111111111111111111111111111111111111");
    fs::create_dir_all(&old).unwrap();
    fs::write(old.join("config.json"), "old").unwrap();
    fs::create_dir_all(repo.join("refs/refs/pr")).unwrap();
    fs::write(
        repo.join("refs/refs/pr/7"),
        "1111111111111111111111111111111111111111",
    )
    .unwrap();

    f.export(&[]).ok();
    assert_eq!(fs::read_to_string(other.join("f.txt")).unwrap(), "theirs");
    assert_eq!(fs::read_to_string(old.join("config.json")).unwrap(), "old");
    assert_eq!(
        fs::read_to_string(repo.join("refs/refs/pr/7")).unwrap(),
        "1111111111111111111111111111111111111111"
    );
    f.verify(&[]).ok();
}

#[test]
fn export_before_fetch_fails_and_writes_nothing() {
    let hub = emulator();
    let f = Fetched::new(&hub, "[[model]]\nid = \"acme/tiny\"\n");
    let run = f.export(&[]);
    run.expect_code(1);
    assert!(
        run.stderr.contains("run `modelbake fetch` first"),
        "{}",
        run.stderr
    );
    assert!(!f.hub_cache().join("models--acme--tiny").exists());
}
