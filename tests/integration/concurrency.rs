//! The store's concurrency contract (docs/concurrency.md), with real concurrent processes:
//! two fetches of one lock, a bake beside a fetch of another lock, two bakes of one lock, and
//! `store gc` beside a fetch and a serve. Nothing a running command published or is about to
//! use disappears, nothing half-written becomes visible, and every command either completes or
//! fails with a clear error.

use std::fs;
use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hub_emulator::{Fault, FaultAction, Host, HubEmulator};

use crate::cache::Serving;
use crate::support::*;

/// Starts `cmd` with its stderr captured.
fn spawn(cmd: &mut Command) -> Child {
    cmd.stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits for `child`: whether it succeeded, and its stderr.
fn finish(mut child: Child) -> (bool, String) {
    let status = child.wait().unwrap();
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        e.read_to_string(&mut err).unwrap();
    }
    (status.success(), err)
}

/// A Hub whose LFS downloads each take a while, so a fetch is still running when the other
/// process starts.
fn slow_hub() -> HubEmulator {
    let hub = HubEmulator::builder()
        .repo(tiny_repo())
        .repo(dataset_repo())
        .start()
        .unwrap();
    hub.inject(
        Fault::on("/lfs/")
            .host(Host::Cdn)
            .action(FaultAction::Delay(Duration::from_millis(200))),
    );
    hub
}

/// Waits until some process holds the store at `root` open (its shared lock is taken).
fn wait_until_in_use(root: &Path) {
    let lock = root.join("locks/store.lock");
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(f) = fs::File::open(&lock) {
            match f.try_lock() {
                Err(fs::TryLockError::WouldBlock) => return,
                Ok(()) => {
                    let _ = f.unlock();
                }
                Err(fs::TryLockError::Error(e)) => panic!("locking {}: {e}", lock.display()),
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("no process opened the store {} in 20 s", root.display());
}

#[test]
fn two_fetches_of_one_lock_both_complete_and_the_export_verifies() {
    let hub = slow_hub();
    let f = Fetched::new(&hub, "[[model]]\nid = \"acme/tiny\"\n");
    let fetch = || {
        spawn(
            f.cmd()
                .args(["fetch", "-j", "1", "--endpoint", &hub.endpoint()]),
        )
    };
    let (a, b) = (fetch(), fetch());
    for (ok, err) in [finish(a), finish(b)] {
        assert!(ok, "{err}");
    }
    assert!(
        fs::read_dir(f.store.path().join("tmp"))
            .unwrap()
            .next()
            .is_none(),
        "no partial download is left behind"
    );
    f.export(&[]).ok();
    f.verify(&[]).ok();
}

#[test]
fn a_bake_beside_a_fetch_of_another_lock_completes_and_verifies() {
    let hub = slow_hub();
    let baked = Fetched::new(&hub, "[[model]]\nid = \"acme/tiny\"\n");
    baked.fetch(&hub, &[]).ok();
    let other = Fetched::new(&hub, "[[dataset]]\nid = \"acme/data\"\n");
    let fetch = spawn(
        other
            .cmd()
            .env("MODELBAKE_STORE", baked.store.path())
            .args(["fetch", "-j", "1", "--endpoint", &hub.endpoint()]),
    );
    let out = baked.cache.path().join("oci");
    let bake = run(baked.cmd().args(["bake", "--no-base", "--oci"]).arg(&out));
    let (ok, err) = finish(fetch);
    assert!(ok, "{err}");
    bake.ok();
    run(baked.cmd().args(["verify", "--oci"]).arg(&out)).ok();
}

#[test]
fn two_bakes_of_one_lock_write_the_same_verified_image() {
    let hub = emulator();
    let f = Fetched::new(&hub, "[[model]]\nid = \"acme/tiny\"\n");
    f.fetch(&hub, &[]).ok();
    let dirs = [f.cache.path().join("a"), f.cache.path().join("b")];
    let bakes: Vec<Child> = dirs
        .iter()
        .map(|d| spawn(f.cmd().args(["bake", "--no-base", "--oci"]).arg(d)))
        .collect();
    for (ok, err) in bakes.into_iter().map(finish) {
        assert!(ok, "{err}");
    }
    for d in &dirs {
        run(f.cmd().args(["verify", "--oci"]).arg(d)).ok();
    }
    let index = |d: &Path| fs::read(d.join("index.json")).unwrap();
    assert_eq!(
        index(&dirs[0]),
        index(&dirs[1]),
        "the same image, byte for byte"
    );
}

#[test]
fn gc_removes_nothing_while_serve_has_the_store_open() {
    let hub = emulator();
    let f = Fetched::new(&hub, "[[model]]\nid = \"acme/tiny\"\n");
    f.fetch(&hub, &[]).ok();
    let before = store_blobs(f.store.path());
    assert!(!before.is_empty());
    let nothing = f.cache.path().join("nothing.lock");
    fs::write(&nothing, "version = 1\n").unwrap();
    let gc = |wait: &str| {
        run(f
            .cmd()
            .args(["store", "gc", "--yes", "--wait", wait, "--keep"])
            .arg(&nothing))
    };

    let mirror = Serving::start(&f);
    let refused = gc("1");
    refused.expect_code(1);
    assert!(
        refused.stderr.contains("still had the store") && refused.stderr.contains("hint:"),
        "{}",
        refused.stderr
    );
    assert_eq!(
        store_blobs(f.store.path()),
        before,
        "gc removed nothing in use"
    );
    // The mirror still serves what it served: a lock against it is the same lock.
    let p = Project::new("[[model]]\nid = \"acme/tiny\"\n");
    run(p.cmd().args(["lock", "--endpoint", &mirror.endpoint])).ok();
    assert_eq!(p.lock_text(), f.project.lock_text());

    drop(mirror);
    gc("10").ok();
    assert!(
        store_blobs(f.store.path()).is_empty(),
        "once alone, gc collects"
    );
}

#[test]
fn gc_of_another_lock_waits_for_a_running_fetch_and_then_collects_it_whole() {
    let hub = slow_hub();
    let f = Fetched::new(&hub, "[[model]]\nid = \"acme/tiny\"\n");
    let wanted: std::collections::BTreeSet<String> =
        locked_files(locked_repo(&f.project.lock(), "acme/tiny"))
            .into_iter()
            .map(|(_, file)| file["sha256"].as_str().unwrap().to_owned())
            .collect();
    let fetch = spawn(
        f.cmd()
            .args(["fetch", "-j", "1", "--endpoint", &hub.endpoint()]),
    );
    wait_until_in_use(f.store.path());
    let nothing = f.cache.path().join("nothing.lock");
    fs::write(&nothing, "version = 1\n").unwrap();
    let gc = run(f
        .cmd()
        .args(["store", "gc", "--yes", "--json", "--wait", "60", "--keep"])
        .arg(&nothing));
    let (ok, err) = finish(fetch);
    assert!(ok, "the fetch is never disturbed: {err}");
    gc.ok();
    // gc waited for the fetch: it saw (and removed) every blob the fetch published, not a
    // half-fetched store.
    let report: serde_json::Value = serde_json::from_str(&gc.stdout).unwrap();
    let removed: std::collections::BTreeSet<String> = report["blobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b[0].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(removed, wanted, "{report}");
    assert!(store_blobs(f.store.path()).is_empty());
}
