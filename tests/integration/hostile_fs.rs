//! Hostile filesystem states (issue #14): symlinks planted in the store and in the hub cache
//! never make `store gc`, `fetch`, `export` or `cache prune` read, write or delete outside the
//! folders they own, and a flood of idle connections does not keep `serve` from answering.
//! Every planted link points at a "victim" folder outside; a snapshot of it before and after
//! proves it was not touched.

use std::fs;
use std::net::TcpStream;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hub_emulator::Kind;

use crate::cache::{Serving, raw, two_lock_cache};
use crate::support::hostile::{Measured, assert_unchanged, run_measured, snapshot};
use crate::support::*;
use modelbake::hash::sha256_hex;

/// The bound every hostile case must end within.
const LIMIT: Duration = Duration::from_secs(30);

/// A folder outside every folder modelbake owns, holding `files` (name, content).
fn victim(files: &[(&str, &[u8])]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, content) in files {
        let path = dir.path().join(name);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, content).unwrap();
    }
    dir
}

/// A store path name that gc would take for one of its own: 64 hex starting with `shard`.
fn blob_name(shard: &str, fill: char) -> String {
    format!("{shard}{}", fill.to_string().repeat(62))
}

/// Puts a well-formed blob that no lock references into the store; returns its path.
fn unreferenced_blob(store: &Path) -> PathBuf {
    let content = b"no lock references this blob";
    let sha = sha256_hex(content);
    let path = store.join("blobs/sha256").join(&sha[..2]).join(&sha);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(&path, content).unwrap();
    path
}

/// `store gc --yes --keep <the project's lock>`, measured.
fn gc_yes(f: &Fetched) -> Measured {
    run_measured(
        f.cmd()
            .args(["store", "gc", "--yes", "--keep"])
            .arg(f.project.lock_path()),
        LIMIT,
    )
}

#[test]
fn gc_never_follows_a_symlinked_shard_or_tmp_folder() {
    let hub = emulator();
    let f = Fetched::new(&hub, "[[model]]\nid = \"acme/tiny\"\n");
    f.fetch(&hub, &[]).ok();
    let store = f.store.path();
    let extra = unreferenced_blob(store);

    // A shard folder that is a link to a folder of blob-like files elsewhere.
    let shard = (0..=255u8)
        .map(|b| format!("{b:02x}"))
        .find(|s| !store.join("blobs/sha256").join(s).exists())
        .unwrap();
    let bait = blob_name(&shard, 'e');
    let outside = victim(&[(&bait, b"not the store's"), ("notes.txt", b"mine")]);
    symlink(outside.path(), store.join("blobs/sha256").join(&shard)).unwrap();
    let before = snapshot(outside.path());

    let r = gc_yes(&f);
    r.assert_clean_failure(LIMIT);
    assert!(
        r.stderr.contains(&format!("blobs/sha256/{shard}")) && r.stderr.contains("symlink"),
        "the error names the symlinked shard:\n{}",
        r.stderr
    );
    assert_unchanged(
        "the folder the shard linked to",
        &before,
        &snapshot(outside.path()),
    );
    assert!(
        !extra.exists(),
        "a well-formed unreferenced blob is still collected"
    );
    for (_, file) in locked_files(locked_repo(&f.project.lock(), "acme/tiny")) {
        assert!(f.store_blob(file["sha256"].as_str().unwrap()).exists());
    }
    eprintln!(
        "gc with a symlinked shard: {:?}, peak {} MiB",
        r.wall,
        r.peak_rss >> 20
    );

    // `tmp` itself a link to a folder holding files named like partial downloads.
    fs::remove_file(store.join("blobs/sha256").join(&shard)).unwrap();
    let partial = format!("{}.1-0000000000000000.part", blob_name("ab", 'c'));
    let outside = victim(&[(&partial, b"not a download"), ("other", b"mine")]);
    fs::remove_dir(store.join("tmp")).unwrap();
    symlink(outside.path(), store.join("tmp")).unwrap();
    let before = snapshot(outside.path());
    let r = gc_yes(&f);
    r.assert_clean_failure(LIMIT);
    assert!(
        r.stderr.contains("tmp is a symlink") && r.stderr.contains("real folder"),
        "{}",
        r.stderr
    );
    assert_unchanged(
        "the folder tmp linked to",
        &before,
        &snapshot(outside.path()),
    );
}

#[test]
fn fetch_never_takes_over_a_symlink_named_like_a_partial() {
    let hub = emulator();
    let f = Fetched::new(&hub, "[[model]]\nid = \"acme/tiny\"\n");
    // A link under the name of a leftover partial download of config.json, pointing at a file
    // longer than the blob: taking it over would open and truncate that file.
    let outside = victim(&[("precious.txt", &[b'x'; 4096])]);
    fs::create_dir_all(f.store.path().join("tmp")).unwrap();
    symlink(
        outside.path().join("precious.txt"),
        f.store
            .path()
            .join(format!("tmp/{CONFIG_JSON_SHA256}.1-0000000000000000.part")),
    )
    .unwrap();
    let before = snapshot(outside.path());
    f.fetch(&hub, &[]).ok();
    assert_unchanged(
        "the file the partial linked to",
        &before,
        &snapshot(outside.path()),
    );
    assert_eq!(
        fs::read_to_string(f.store_blob(CONFIG_JSON_SHA256)).unwrap(),
        CONFIG_JSON
    );
}

/// Replaces the folder `rel` of the exported repo folder `repo` (`""`: the repo folder itself)
/// with a symlink to a fresh victim folder; returns the victim and the link.
fn plant_folder_link(repo: &Path, rel: &str) -> (tempfile::TempDir, PathBuf) {
    let outside = victim(&[("keep.txt", b"not the cache's")]);
    let link = if rel.is_empty() {
        repo.to_owned()
    } else {
        repo.join(rel)
    };
    fs::remove_dir_all(&link).unwrap();
    symlink(outside.path(), &link).unwrap();
    (outside, link)
}

#[test]
fn export_replaces_symlinked_folders_that_verify_reports() {
    let hub = emulator();
    let f = Fetched::new(&hub, "[[model]]\nid = \"acme/tiny\"\n");
    f.fetch(&hub, &[]).ok();
    let commit = hub.commit_of(Kind::Model, "acme/tiny", "main").unwrap();
    let repo = f.hub_cache().join("models--acme--tiny");
    for rel in [
        String::new(),
        "blobs".into(),
        "refs".into(),
        "snapshots".into(),
        format!("snapshots/{commit}"),
        format!("snapshots/{commit}/sub"),
    ] {
        f.export(&[]).ok();
        let (outside, link) = plant_folder_link(&repo, &rel);
        let before = snapshot(outside.path());

        let r = run_measured(
            f.cmd().arg("verify").arg("--hub-cache").arg(f.hub_cache()),
            LIMIT,
        );
        r.assert_clean_failure(LIMIT);
        let named = format!("{} is a symlink", link.display());
        assert!(
            r.stderr.contains(&named),
            "verify names `{rel}`:\n{}",
            r.stderr
        );

        let e = f.export(&[]);
        e.ok();
        assert!(
            e.stderr.contains("replaced by a real folder"),
            "{}",
            e.stderr
        );
        assert!(
            fs::symlink_metadata(&link).unwrap().is_dir(),
            "`{rel}` is a real folder again"
        );
        f.verify(&[]).ok();
        assert_unchanged(
            &format!("the folder `{rel}` linked to"),
            &before,
            &snapshot(outside.path()),
        );
    }
}

#[test]
fn a_symlinked_hub_cache_root_is_the_users_choice_and_works() {
    let hub = emulator();
    let f = Fetched::new(&hub, "[[model]]\nid = \"acme/tiny\"\n");
    f.fetch(&hub, &[]).ok();
    let real = f.cache.path().join("real-hub");
    fs::create_dir(&real).unwrap();
    let link = f.cache.path().join("hub-link");
    symlink(&real, &link).unwrap();
    let with_env = |args: &[&str]| run(f.cmd().env("HF_HUB_CACHE", &link).args(args));

    let e = with_env(&["export"]);
    e.ok();
    assert!(!e.stderr.contains("replaced"), "{}", e.stderr);
    with_env(&["verify"]).ok();
    assert!(
        fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert!(real.join("models--acme--tiny/snapshots").is_dir());
    let scan = with_env(&["cache", "scan", "--json"]);
    scan.ok();
    let v: serde_json::Value = serde_json::from_str(&scan.stdout).unwrap();
    assert_eq!(v["repos"].as_array().unwrap().len(), 1, "{}", scan.stdout);
    with_env(&["cache", "prune", "--yes", "--pattern", "model/*"]).ok();
    assert!(!real.join("models--acme--tiny").exists());
}

#[test]
fn prune_never_deletes_through_a_symlinked_folder() {
    let hub = emulator();
    let (keep, _other) = two_lock_cache(&hub);
    let cache = keep.hub_cache();
    let tiny = cache.join("models--acme--tiny");
    // acme/tiny's blobs live in a folder elsewhere, next to a file that is not the cache's.
    let outside = tempfile::tempdir().unwrap();
    let moved = outside.path().join("blobs");
    fs::rename(tiny.join("blobs"), &moved).unwrap();
    fs::write(moved.join("precious.bin"), b"mine").unwrap();
    symlink(&moved, tiny.join("blobs")).unwrap();
    let before = snapshot(outside.path());

    let r = run_measured(
        keep.cmd()
            .args(["cache", "prune", "--yes", "--keep-locked"])
            .arg(keep.project.lock_path())
            .arg("--hub-cache")
            .arg(&cache),
        LIMIT,
    );
    r.assert_clean_failure(LIMIT);
    assert!(
        r.stderr.contains("models--acme--tiny/blobs") && r.stderr.contains("symlink"),
        "the error names the link:\n{}",
        r.stderr
    );
    assert_unchanged(
        "the folder blobs linked to",
        &before,
        &snapshot(outside.path()),
    );
    assert!(
        !cache.join("datasets--acme--data").exists(),
        "the rest of the cache is still pruned"
    );
    let main = hub.commit_of(Kind::Model, "acme/tiny", "main").unwrap();
    assert!(
        tiny.join("snapshots").join(main).exists(),
        "the linked repo is left alone"
    );
}

#[test]
fn serve_answers_promptly_under_an_idle_connection_flood() {
    let hub = emulator();
    let f = Fetched::new(&hub, "[[model]]\nid = \"acme/tiny\"\n");
    f.fetch(&hub, &[]).ok();
    let mirror = Serving::start(&f);
    let addr = mirror.endpoint.trim_start_matches("http://").to_owned();
    let idle: Vec<TcpStream> = (0..300)
        .map(|_| TcpStream::connect(&addr).unwrap())
        .collect();

    let request = "GET /acme/tiny/resolve/main/config.json HTTP/1.1";
    let start = Instant::now();
    let (status, body) = raw(&mirror.endpoint, request);
    let took = start.elapsed();
    eprintln!(
        "a request behind {} idle connections took {took:?}",
        idle.len()
    );
    assert_eq!(status, 200, "{body}");
    assert!(body.ends_with(CONFIG_JSON), "{body}");
    assert!(
        took < Duration::from_secs(3),
        "a normal request waited {took:?} behind idle connections"
    );
    drop(idle);
    assert_eq!(raw(&mirror.endpoint, request).0, 200);
}
