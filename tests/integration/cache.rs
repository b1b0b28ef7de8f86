//! `cache scan`, `cache prune`, `store gc` and `serve`: numbers that match huggingface_hub's own
//! scan, pruning that keeps what locks reference (also while readers load), garbage collection
//! that never races a fetch into losing a blob, and a mirror that real clients use and path
//! tricks cannot escape.

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use hub_emulator::{Fault, FaultAction, Host, HubEmulator, Kind};

use crate::support::*;

/// Exports `manifest`, locked in its own project, into `f`'s cache with `f`'s store.
fn export_other(hub: &HubEmulator, f: &Fetched, manifest: &str) -> Project {
    let p = Project::new(manifest);
    p.lock_with(hub, &[]).ok();
    run(p.cmd().env("MODELBAKE_STORE", f.store.path()).args([
        "fetch",
        "--endpoint",
        &hub.endpoint(),
    ]))
    .ok();
    run(p
        .cmd()
        .env("MODELBAKE_STORE", f.store.path())
        .arg("export")
        .arg("--hub-cache")
        .arg(f.hub_cache()))
    .ok();
    p
}

const SCAN_SCRIPT: &str = r#"
import json, sys
from huggingface_hub import scan_cache_dir
info = scan_cache_dir(sys.argv[1])
print(json.dumps({
    "size": info.size_on_disk,
    "warnings": len(info.warnings),
    "repos": {f"{r.repo_type}/{r.repo_id}": {
        "size": r.size_on_disk, "files": r.nb_files,
        "revisions": {v.commit_hash: {"size": v.size_on_disk, "files": v.nb_files, "refs": sorted(v.refs)} for v in r.revisions},
    } for r in info.repos},
}))
"#;

#[test]
fn scan_matches_huggingface_hub_scan_cache_dir() {
    let Some(py) = python() else { return };
    let hub = emulator();
    let f = Fetched::new(
        &hub,
        "[[model]]\nid = \"acme/tiny\"\n\n[[dataset]]\nid = \"acme/data\"\n",
    );
    f.fetch(&hub, &[]).ok();
    f.export(&[]).ok();
    // Another revision of the same repo, sharing most blobs, and a corrupt repo folder.
    export_other(
        &hub,
        &f,
        "[[model]]\nid = \"acme/tiny\"\nrevision = \"v1.0\"\n",
    );
    fs::create_dir_all(f.hub_cache().join("models--broken--repo/blobs")).unwrap();

    let out = Command::new(&py)
        .args(["-c", SCAN_SCRIPT])
        .arg(f.hub_cache())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let theirs: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let r = run(f
        .cmd()
        .args(["cache", "scan", "--json", "--hub-cache"])
        .arg(f.hub_cache())
        .arg("--lock")
        .arg(f.project.lock_path()));
    r.ok();
    let ours: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();

    assert_eq!(ours["size_on_disk"], theirs["size"]);
    assert_eq!(
        ours["warnings"].as_array().unwrap().len() as u64,
        theirs["warnings"].as_u64().unwrap()
    );
    assert_eq!(ours["warnings"].as_array().unwrap().len(), 1);
    let repos = ours["repos"].as_array().unwrap();
    assert_eq!(repos.len(), theirs["repos"].as_object().unwrap().len());
    for repo in repos {
        let key = format!(
            "{}/{}",
            repo["kind"].as_str().unwrap(),
            repo["id"].as_str().unwrap()
        );
        let t = &theirs["repos"][&key];
        assert_eq!(repo["size_on_disk"], t["size"], "{key}");
        assert_eq!(repo["nb_files"], t["files"], "{key}");
        let revs = repo["revisions"].as_array().unwrap();
        assert_eq!(
            revs.len(),
            t["revisions"].as_object().unwrap().len(),
            "{key}"
        );
        for v in revs {
            let tv = &t["revisions"][v["commit"].as_str().unwrap()];
            assert_eq!(
                (&v["size_on_disk"], &v["nb_files"], &v["refs"]),
                (&tv["size"], &tv["files"], &tv["refs"]),
                "{key}"
            );
        }
    }
    let tiny = repos.iter().find(|r| r["id"] == "acme/tiny").unwrap();
    let locked: Vec<bool> = tiny["revisions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| !v["locked_by"].as_array().unwrap().is_empty())
        .collect();
    assert_eq!(
        locked.iter().filter(|l| **l).count(),
        1,
        "only main is in the given lock"
    );
}

/// A cache with acme/tiny at v1.0 (kept by `keep`) and at main plus acme/data (in `other`).
pub(crate) fn two_lock_cache(hub: &HubEmulator) -> (Fetched, Project) {
    let keep = Fetched::new(hub, "[[model]]\nid = \"acme/tiny\"\nrevision = \"v1.0\"\n");
    keep.fetch(hub, &[]).ok();
    keep.export(&[]).ok();
    let other = export_other(
        hub,
        &keep,
        "[[model]]\nid = \"acme/tiny\"\n\n[[dataset]]\nid = \"acme/data\"\n",
    );
    (keep, other)
}

#[test]
fn prune_keep_locked_removes_exactly_the_unreferenced_revisions() {
    let hub = emulator();
    let (keep, _other) = two_lock_cache(&hub);
    let cache = keep.hub_cache();
    let tiny = cache.join("models--acme--tiny");
    let v1 = hub.commit_of(Kind::Model, "acme/tiny", "v1.0").unwrap();
    let main = hub.commit_of(Kind::Model, "acme/tiny", "main").unwrap();
    let before = fs::read_dir(tiny.join("blobs")).unwrap().count();

    let dry = run(keep
        .cmd()
        .args(["cache", "prune", "--json", "--keep-locked"])
        .arg(keep.project.lock_path())
        .arg("--hub-cache")
        .arg(&cache));
    dry.ok();
    let p: serde_json::Value = serde_json::from_str(&dry.stdout).unwrap();
    let removed: Vec<(String, String)> = p["removals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["repo"].as_str().unwrap().to_owned(),
                r["commit"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let data_commit = hub.commit_of(Kind::Dataset, "acme/data", "main").unwrap();
    assert_eq!(
        removed,
        [
            ("dataset/acme/data".to_owned(), data_commit),
            ("model/acme/tiny".to_owned(), main.clone())
        ]
    );
    assert_eq!(p["whole_repos"], serde_json::json!(["dataset/acme/data"]));
    assert!(
        tiny.join("snapshots").join(&main).exists(),
        "a dry run deletes nothing"
    );

    run(keep
        .cmd()
        .args(["cache", "prune", "--yes", "--keep-locked"])
        .arg(keep.project.lock_path())
        .arg("--hub-cache")
        .arg(&cache))
    .ok();
    assert!(!tiny.join("snapshots").join(&main).exists());
    assert!(tiny.join("snapshots").join(&v1).exists());
    assert!(
        !tiny.join("refs/main").exists(),
        "the ref of the removed revision goes with it"
    );
    assert!(tiny.join("refs/v1.0").exists());
    assert!(!cache.join("datasets--acme--data").exists());
    // Only README.md (in main, not in v1.0) had a blob of its own.
    assert_eq!(
        fs::read_dir(tiny.join("blobs")).unwrap().count(),
        before - 1
    );
    keep.verify(&[]).ok();
    let scan = run(keep
        .cmd()
        .args(["cache", "scan", "--json", "--hub-cache"])
        .arg(&cache));
    let v: serde_json::Value = serde_json::from_str(&scan.stdout).unwrap();
    assert_eq!(
        v["warnings"],
        serde_json::json!([]),
        "no dangling ref or symlink"
    );
    if let Some(py) = python() {
        let out = Command::new(&py)
            .args(["-c", "from huggingface_hub import snapshot_download; print(snapshot_download('acme/tiny', revision='v1.0'))"])
            .env("HF_HUB_OFFLINE", "1")
            .env("HF_HUB_CACHE", &cache)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn prune_by_size_and_pattern() {
    let hub = emulator();
    let (keep, _other) = two_lock_cache(&hub);
    let cache = keep.hub_cache();
    let r = run(keep
        .cmd()
        .args([
            "cache",
            "prune",
            "--json",
            "--pattern",
            "dataset/*",
            "--hub-cache",
        ])
        .arg(&cache));
    let p: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(p["removals"].as_array().unwrap().len(), 1);
    assert_eq!(p["removals"][0]["repo"], "dataset/acme/data");
    // A budget of 1 byte with a kept lock removes everything but the locked revision.
    let r = run(keep
        .cmd()
        .args([
            "cache",
            "prune",
            "--json",
            "--max-size",
            "1",
            "--keep-locked",
        ])
        .arg(keep.project.lock_path())
        .arg("--hub-cache")
        .arg(&cache));
    let p: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(p["removals"].as_array().unwrap().len(), 2);
    let r = run(keep
        .cmd()
        .args(["cache", "prune", "--hub-cache"])
        .arg(&cache));
    r.expect_code(1);
    assert!(r.stderr.contains("say what to remove"), "{}", r.stderr);
}

#[test]
fn prune_racing_a_reader_loses_nothing() {
    let Some(py) = python() else { return };
    let hub = emulator();
    let (keep, _other) = two_lock_cache(&hub);
    let cache = keep.hub_cache();
    let expected: BTreeMap<String, String> = hub
        .files_at(Kind::Model, "acme/tiny", "v1.0")
        .iter()
        .map(|f| (f.path.clone(), f.sha256.clone()))
        .collect();
    let script = r#"
import hashlib, json, os, sys
from huggingface_hub import snapshot_download
for i in range(int(sys.argv[1])):
    root = snapshot_download("acme/tiny", revision="v1.0")
    got = {}
    for d, _, names in os.walk(root):
        for n in names:
            p = os.path.join(d, n)
            got[os.path.relpath(p, root)] = hashlib.sha256(open(p, "rb").read()).hexdigest()
    print(json.dumps(got), flush=True)
"#;
    let reader = Command::new(&py)
        .args(["-c", script, "40"])
        .env("HF_HUB_OFFLINE", "1")
        .env("HF_HUB_CACHE", &cache)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    run(keep
        .cmd()
        .args(["cache", "prune", "--yes", "--keep-locked"])
        .arg(keep.project.lock_path())
        .arg("--hub-cache")
        .arg(&cache))
    .ok();
    let out = reader.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "a reader of the kept revision failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<BTreeMap<String, String>> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 40);
    assert!(lines.iter().all(|l| *l == expected));
}

#[test]
fn gc_keeps_exactly_what_the_locks_reference() {
    let hub = emulator();
    let (keep, other) = two_lock_cache(&hub);
    let all = store_blobs(keep.store.path());
    let dry = run(keep
        .cmd()
        .args(["store", "gc", "--json", "--keep"])
        .arg(keep.project.lock_path()));
    dry.ok();
    assert_eq!(
        store_blobs(keep.store.path()),
        all,
        "a dry run deletes nothing"
    );
    let r = run(keep
        .cmd()
        .args(["store", "gc", "--json", "--yes", "--keep"])
        .arg(keep.project.lock_path()));
    r.ok();
    let report: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let kept_lock: toml::Value = keep.project.lock();
    let needed: std::collections::BTreeSet<String> =
        locked_files(locked_repo(&kept_lock, "acme/tiny"))
            .into_iter()
            .map(|(_, f)| f["sha256"].as_str().unwrap().to_owned())
            .collect();
    let left: std::collections::BTreeSet<String> =
        store_blobs(keep.store.path()).into_iter().collect();
    assert_eq!(left, needed, "exactly the kept lock's blobs remain");
    assert_eq!(
        report["blobs"].as_array().unwrap().len(),
        all.len() - needed.len()
    );
    // The kept project still exports and verifies; the other one needs a fetch again.
    let fresh = tempfile::tempdir().unwrap();
    run(keep
        .cmd()
        .arg("export")
        .arg("--hub-cache")
        .arg(fresh.path()))
    .ok();
    run(keep
        .cmd()
        .arg("verify")
        .arg("--hub-cache")
        .arg(fresh.path()))
    .ok();
    let r = run(other
        .cmd()
        .env("MODELBAKE_STORE", keep.store.path())
        .args(["fetch", "--offline"]));
    r.expect_code(1);
}

#[test]
fn gc_racing_a_fetch_loses_nothing() {
    let hub = HubEmulator::builder().repo(tiny_repo()).start().unwrap();
    hub.inject(
        Fault::on("/lfs/")
            .host(Host::Cdn)
            .action(FaultAction::Delay(Duration::from_millis(150))),
    );
    let f = Fetched::new(&hub, "[[model]]\nid = \"acme/tiny\"\n");
    let mut fetch = f
        .cmd()
        .args(["fetch", "-j", "1", "--endpoint", &hub.endpoint()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Collect repeatedly while the fetch runs, keeping the lock it fetches, and once with an
    // empty keep set (a lock of another project), which must leave in-flight blobs alone.
    let empty = f.cache.path().join("empty.lock");
    fs::write(&empty, "version = 1\n").unwrap();
    for i in 0..15 {
        let keep = if i % 5 == 4 {
            empty.clone()
        } else {
            f.project.lock_path()
        };
        run(f.cmd().args(["store", "gc", "--yes", "--keep"]).arg(keep)).ok();
        std::thread::sleep(Duration::from_millis(40));
    }
    let status = fetch.wait().unwrap();
    let mut err = String::new();
    fetch
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(status.success(), "{err}");
    run(f
        .cmd()
        .args(["store", "gc", "--yes", "--keep"])
        .arg(f.project.lock_path()))
    .ok();
    // Whatever gc did with the empty keep set happened between blobs; a rerun fills any gap and
    // the result verifies.
    f.fetch(&hub, &[]).ok();
    f.export(&[]).ok();
    f.verify(&[]).ok();
}

/// `modelbake serve` on a free port; stops when dropped.
pub(crate) struct Serving {
    child: Child,
    pub(crate) endpoint: String,
}

impl Serving {
    pub(crate) fn start(f: &Fetched) -> Self {
        let mut child = f
            .cmd()
            .args(["serve", "--addr", "127.0.0.1:0", "--lock"])
            .arg(f.project.lock_path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let v: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
        Serving {
            child,
            endpoint: v["endpoint"].as_str().unwrap().to_owned(),
        }
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn serve_feeds_python_huggingface_hub_and_modelbake() {
    let hub = emulator();
    let manifest = "[[model]]\nid = \"acme/tiny\"\n\n[[dataset]]\nid = \"acme/data\"\n";
    let f = Fetched::new(&hub, manifest);
    f.fetch(&hub, &[]).ok();
    let mirror = Serving::start(&f);

    // Locking against the mirror gives the very same lock; fetching from it works.
    let p = Project::new(manifest);
    run(p.cmd().args(["lock", "--endpoint", &mirror.endpoint])).ok();
    assert_eq!(p.lock_text(), f.project.lock_text());
    let store = tempfile::tempdir().unwrap();
    run(p.cmd().env("MODELBAKE_STORE", store.path()).args([
        "fetch",
        "--endpoint",
        &mirror.endpoint,
    ]))
    .ok();
    let cache = tempfile::tempdir().unwrap();
    run(p
        .cmd()
        .env("MODELBAKE_STORE", store.path())
        .arg("export")
        .arg("--hub-cache")
        .arg(cache.path()))
    .ok();
    run(p.cmd().arg("verify").arg("--hub-cache").arg(cache.path())).ok();

    let Some(py) = python() else { return };
    let home = tempfile::tempdir().unwrap();
    let script = r#"
import hashlib, json, os
from huggingface_hub import snapshot_download
out = {}
for repo, kind in (("acme/tiny", "model"), ("acme/data", "dataset")):
    root = snapshot_download(repo, repo_type=kind)
    for d, _, names in os.walk(root):
        for n in names:
            p = os.path.join(d, n)
            out[f"{repo}/{os.path.relpath(p, root)}"] = hashlib.sha256(open(p, "rb").read()).hexdigest()
print(json.dumps(out))
"#;
    let out = Command::new(&py)
        .args(["-c", script])
        .env("HF_ENDPOINT", &mirror.endpoint)
        .env("HF_HOME", home.path())
        .env("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: BTreeMap<String, String> = serde_json::from_slice(&out.stdout).unwrap();
    let mut expected = BTreeMap::new();
    for (kind, id) in [(Kind::Model, "acme/tiny"), (Kind::Dataset, "acme/data")] {
        for s in hub.files_at(kind, id, "main") {
            expected.insert(format!("{id}/{}", s.path), s.sha256.clone());
        }
    }
    assert_eq!(got, expected);
}

/// Sends one raw request line (no client-side path normalisation) and returns status and body.
pub(crate) fn raw(endpoint: &str, request: &str) -> (u16, String) {
    let addr = endpoint.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(format!("{request}\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes())
        .unwrap();
    let mut resp = String::new();
    let _ = s.read_to_string(&mut resp);
    let status = resp
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, resp)
}

#[test]
fn serve_refuses_path_tricks_and_serves_nothing_else() {
    let hub = emulator();
    let f = Fetched::new(&hub, "[[model]]\nid = \"acme/tiny\"\n");
    f.fetch(&hub, &[]).ok();
    let mirror = Serving::start(&f);
    let commit = hub.commit_of(Kind::Model, "acme/tiny", "main").unwrap();
    let (ok, _) = raw(
        &mirror.endpoint,
        "GET /acme/tiny/resolve/main/config.json HTTP/1.1",
    );
    assert_eq!(ok, 200);
    let corpus = [
        "GET /acme/tiny/resolve/main/../../../../etc/passwd HTTP/1.1".to_owned(),
        "GET /acme/tiny/resolve/main/%2e%2e/%2e%2e/%2e%2e/etc/passwd HTTP/1.1".into(),
        "GET /acme/tiny/resolve/main/..%2F..%2F..%2Fetc%2Fpasswd HTTP/1.1".into(),
        "GET /acme/tiny/resolve/main//etc/passwd HTTP/1.1".into(),
        "GET /acme/tiny/resolve/main/%2Fetc%2Fpasswd HTTP/1.1".into(),
        "GET /acme/tiny/resolve/main/config.json%00 HTTP/1.1".into(),
        "GET /acme/tiny/resolve/main/sub%5Cdir%5Cnested.txt HTTP/1.1".into(),
        "GET /acme%2Ftiny/resolve/main/config.json HTTP/1.1".into(),
        "GET /../../etc/passwd HTTP/1.1".into(),
        "GET /api/models/../../etc/passwd HTTP/1.1".into(),
        "GET /api/models/acme/tiny/tree/main/..%2F..%2F.. HTTP/1.1".into(),
        "GET /api/models/acme/tiny/revision/..%2F..%2Fetc HTTP/1.1".into(),
        format!("GET /acme/tiny/resolve/{commit}/../blobs HTTP/1.1"),
        "GET /acme/other/resolve/main/config.json HTTP/1.1".into(),
        "GET /acme/tiny/resolve/v9/config.json HTTP/1.1".into(),
        "GET /acme/tiny/resolve/main/not-locked.json HTTP/1.1".into(),
        "GET /datasets/acme/tiny/resolve/main/config.json HTTP/1.1".into(),
        "DELETE /acme/tiny/resolve/main/config.json HTTP/1.1".into(),
        "PUT /api/models/acme/tiny/paths-info/main HTTP/1.1".into(),
        "GET http://evil.example/etc/passwd HTTP/1.1".into(),
    ];
    for req in &corpus {
        let (status, body) = raw(&mirror.endpoint, req);
        assert!((400..500).contains(&status), "{req} -> {status}\n{body}");
        assert!(!body.contains("root:x:0:0"), "{req} leaked a host file");
    }
    // Request size is bounded.
    let big = "x".repeat(2 << 20);
    let (status, _) = raw(
        &mirror.endpoint,
        &format!(
            "POST /api/models/acme/tiny/paths-info/main HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{big}",
            big.len()
        ),
    );
    assert_eq!(status, 413);
    // And the mirror only listens on loopback unless told otherwise.
    let r = run(f.cmd().args(["serve", "--addr", "0.0.0.0:0"]));
    r.expect_code(1);
    assert!(r.stderr.contains("--allow-remote"), "{}", r.stderr);
}
