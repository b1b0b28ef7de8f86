//! SIGKILL at any point (issue 23): every command that writes something — `fetch`, `export`,
//! `bake --oci`, `bake --push`, `login`, `lock`, `bake --cache` (layer records) and
//! `store gc` — is killed at [`POINTS`] points spread over its run. After each kill nothing
//! outside the documented temp names is half-written (store blobs hash to their names, layer
//! records name whole blobs, the lock, the auth file and the layout's `index.json` parse and
//! name whole blobs), and a rerun completes and verifies.
//!
//! The points are deterministic: the command is timed once, and kill `i` of `n` lands at a
//! seeded random moment in the `i`-th of `n` equal slices of that time. Whether a kill lands
//! while the process still runs is counted (at least one must, or the test tested nothing);
//! nothing else depends on timing.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use hub_emulator::{FileSpec, HubEmulator, Repo};
use sha2::{Digest as _, Sha256};

use crate::support::oci::*;
use crate::support::*;

/// Kill points per command (the acceptance asks for at least 20).
const POINTS: usize = 20;

/// `acme/big`: a few MB in several LFS files and some small ones, so that a fetch, an export,
/// a layer build and an upload each take long enough for kills to land mid-way.
fn big_hub() -> HubEmulator {
    let mut files: Vec<FileSpec> = (0..4)
        .map(|i| FileSpec::generated_lfs(&format!("model-0000{i}.safetensors"), 600_000, 70 + i))
        .collect();
    files.push(FileSpec::regular("config.json", CONFIG_JSON));
    files.push(FileSpec::regular(
        "tokenizer.json",
        "{\"version\": \"1.0\"}\n",
    ));
    files.push(FileSpec::regular(
        ".gitattributes",
        "*.safetensors filter=lfs diff=lfs merge=lfs -text\n",
    ));
    HubEmulator::builder()
        .repo(Repo::model("acme/big").commit("main", files))
        .repo(tiny_repo())
        .start()
        .expect("start the Hub emulator")
}

const BIG: &str = "[[model]]\nid = \"acme/big\"\n";
const TINY: &str = "[[model]]\nid = \"acme/tiny\"\n";

/// Times the command twice (`reset(i)` and `start(i)` for `i` = [`POINTS`] and one more; the
/// shorter run counts), then for each point `i`: `reset(i)`,
/// starts `start(i)`, feeds it `input`, kills it with SIGKILL at the point's moment, and calls
/// `after(i)` (the checks and the rerun). Returns how many kills landed while the process ran.
fn kill_at_points(
    what: &str,
    seed: u64,
    input: Option<&str>,
    mut reset: impl FnMut(usize),
    mut start: impl FnMut(usize) -> Command,
    mut after: impl FnMut(usize),
) -> usize {
    let spawn = |cmd: &mut Command| {
        let mut child = cmd
            .stdin(if input.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start modelbake");
        if let Some(text) = input {
            let _ = child.stdin.take().unwrap().write_all(text.as_bytes());
        }
        child
    };
    // The shorter of two timing runs (the first may pay for cold caches).
    let took = (POINTS..POINTS + 2)
        .map(|i| {
            reset(i);
            let t0 = Instant::now();
            let out = spawn(&mut start(i)).wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "{what}: the timing run failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            t0.elapsed()
        })
        .min()
        .unwrap();
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut landed = 0;
    for i in 0..POINTS {
        reset(i);
        let at = took.mul_f64((i as f64 + rng.f64()) / POINTS as f64);
        let mut child = spawn(&mut start(i));
        std::thread::sleep(at);
        if child.try_wait().unwrap().is_none() {
            landed += 1;
        }
        // SIGKILL (a no-op for a process that already exited and is not yet reaped).
        child.kill().unwrap();
        child.wait().unwrap();
        after(i);
    }
    eprintln!(
        "{what}: {landed} of {POINTS} kills landed mid-run (run time {:?})",
        took
    );
    assert!(landed > 0, "{what}: no kill landed while the command ran");
    landed
}

/// The sha256 hex of a file.
fn sha256_file(path: &Path) -> String {
    let mut h = Sha256::new();
    std::io::copy(&mut fs::File::open(path).unwrap(), &mut h).unwrap();
    hex::encode(h.finalize())
}

/// A temp name the code documents: `fs_atomic`'s hidden `.<name>.tmp-<pid>-<hex>` siblings
/// (whole files go there first, then are renamed over `<name>`).
fn is_temp(name: &str) -> bool {
    name.starts_with('.') && name.contains(".tmp-")
}

/// The entries of `dir` (none when it does not exist), as (name, path).
fn entries(dir: &Path) -> Vec<(String, PathBuf)> {
    fs::read_dir(dir)
        .into_iter()
        .flatten()
        .map(|e| {
            let e = e.unwrap();
            (e.file_name().to_string_lossy().into_owned(), e.path())
        })
        .collect()
}

/// Every file of a `blobs/sha256` folder (sharded by the store, flat in a layer cache or an
/// OCI layout) that is not a temp name hashes to its name. Returns the names.
fn check_blob_dir(dir: &Path, sharded: bool, what: &str) -> Vec<String> {
    let mut files = Vec::new();
    if sharded {
        for (shard, path) in entries(dir) {
            assert!(path.is_dir(), "{what}: {shard} in the store's blobs");
            files.extend(entries(&path));
        }
    } else {
        files = entries(dir);
    }
    let mut names = Vec::new();
    for (name, path) in files {
        if is_temp(&name) {
            continue;
        }
        assert_eq!(
            sha256_file(&path),
            name,
            "{what}: {} is half-written or wrong",
            path.display()
        );
        names.push(name);
    }
    names
}

/// The store after a kill: published blobs are whole (partials live only in `tmp/`), layers
/// being built are in `tmp/` too, and every layer-cache record parses and names a whole layer
/// blob of its size.
fn check_store(store: &Path, what: &str) {
    check_blob_dir(&store.join("blobs/sha256"), true, what);
    let layers = store.join("layers");
    let layer_blobs = check_blob_dir(&layers.join("blobs/sha256"), false, what);
    for (name, path) in entries(&layers) {
        // Besides records and blobs, only the temp siblings of records being written.
        if name == "blobs" || (is_temp(&name) && name.contains(".json.tmp-")) {
            continue;
        }
        assert!(name.ends_with(".json"), "{what}: layers/{name}");
        let record: serde_json::Value = serde_json::from_slice(&fs::read(&path).unwrap())
            .unwrap_or_else(|e| {
                panic!("{what}: layer record {name} does not parse: {e}");
            });
        let hex = record["digest"]
            .as_str()
            .unwrap()
            .trim_start_matches("sha256:");
        assert!(
            layer_blobs.iter().any(|b| b == hex),
            "{what}: layer record {name} names a missing blob {hex}"
        );
        assert_eq!(
            fs::metadata(layers.join("blobs/sha256").join(hex))
                .unwrap()
                .len(),
            record["size"].as_u64().unwrap(),
            "{what}: {name}"
        );
    }
}

/// An OCI layout after a kill: its blobs hash to their names; `oci-layout` and `index.json`,
/// when there, parse, and everything `index.json` reaches (manifests, configs, layers) is there.
fn check_layout(dir: &Path, what: &str) {
    let blobs = dir.join("blobs/sha256");
    let present = check_blob_dir(&blobs, false, what);
    if let Ok(bytes) = fs::read(dir.join("oci-layout")) {
        serde_json::from_slice::<serde_json::Value>(&bytes)
            .unwrap_or_else(|e| panic!("{what}: oci-layout does not parse: {e}"));
    }
    let Ok(bytes) = fs::read(dir.join("index.json")) else {
        return;
    };
    let index: serde_json::Value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("{what}: index.json does not parse: {e}"));
    let has = |digest: &serde_json::Value| {
        let hex = digest.as_str().unwrap().trim_start_matches("sha256:");
        assert!(
            present.iter().any(|p| p == hex),
            "{what}: index.json reaches the missing blob {hex}"
        );
        blobs.join(hex)
    };
    for m in index["manifests"].as_array().unwrap() {
        let manifest: serde_json::Value =
            serde_json::from_slice(&fs::read(has(&m["digest"])).unwrap()).unwrap();
        has(&manifest["config"]["digest"]);
        for l in manifest["layers"].as_array().unwrap() {
            has(&l["digest"]);
        }
    }
}

/// A hub cache after a kill: no dangling snapshot links, refs hold a commit, LFS blobs (named
/// by sha256) hash to their names.
fn check_hub_cache(hub_cache: &Path, what: &str) {
    for (repo, path) in entries(hub_cache) {
        if !repo.starts_with("models--") {
            continue;
        }
        for (name, blob) in entries(&path.join("blobs")) {
            if !is_temp(&name) && name.len() == 64 {
                assert_eq!(sha256_file(&blob), name, "{what}: {}", blob.display());
            }
        }
        for (name, r) in entries(&path.join("refs")) {
            if !is_temp(&name) {
                let commit = fs::read_to_string(&r).unwrap();
                assert_eq!(commit.trim().len(), 40, "{what}: refs/{name}: {commit:?}");
            }
        }
        let mut stack = vec![path.join("snapshots")];
        while let Some(dir) = stack.pop() {
            for (name, p) in entries(&dir) {
                let meta = fs::symlink_metadata(&p).unwrap();
                if meta.is_dir() {
                    stack.push(p);
                } else if !is_temp(&name) && meta.file_type().is_symlink() {
                    assert!(p.exists(), "{what}: dangling link {}", p.display());
                }
            }
        }
    }
}

/// Empties a folder (keeping it).
fn empty(dir: &Path) {
    for (_, p) in entries(dir) {
        if fs::symlink_metadata(&p).unwrap().is_dir() {
            fs::remove_dir_all(&p).unwrap();
        } else {
            fs::remove_file(&p).unwrap();
        }
    }
}

#[test]
fn fetch_killed_anywhere_resumes_and_verifies() {
    let hub = big_hub();
    let f = Fetched::new(&hub, BIG);
    let what = "fetch";
    kill_at_points(
        what,
        23_01,
        None,
        |_| empty(f.store.path()),
        |_| {
            let mut c = f.cmd();
            c.args(["fetch", "--endpoint", &hub.endpoint()]);
            c
        },
        |_| {
            check_store(f.store.path(), what);
            f.fetch(&hub, &[]).ok();
            check_store(f.store.path(), what);
            fs::remove_dir_all(f.cache.path()).ok();
            f.export(&[]).ok();
            f.verify(&[]).ok();
        },
    );
}

#[test]
fn export_killed_anywhere_reruns_and_verifies() {
    let hub = big_hub();
    let f = Fetched::new(&hub, BIG);
    f.fetch(&hub, &[]).ok();
    let what = "export";
    kill_at_points(
        what,
        23_02,
        None,
        |_| {
            fs::remove_dir_all(f.hub_cache()).ok();
        },
        |_| {
            let mut c = f.cmd();
            c.arg("export").arg("--hub-cache").arg(f.hub_cache());
            c
        },
        |_| {
            check_hub_cache(&f.hub_cache(), what);
            f.export(&[]).ok();
            f.verify(&[]).ok();
        },
    );
}

#[test]
fn bake_to_a_layout_killed_anywhere_reruns_and_verifies() {
    let hub = big_hub();
    let f = Fetched::new(&hub, BIG);
    f.fetch(&hub, &[]).ok();
    let out = f.cache.path().join("oci");
    let layers = f.store.path().join("layers");
    let what = "bake --oci";
    kill_at_points(
        what,
        23_03,
        None,
        |_| {
            // A fresh layout and no cached layers: every run builds its layers.
            fs::remove_dir_all(&out).ok();
            fs::remove_dir_all(&layers).ok();
        },
        |_| {
            let mut c = f.cmd();
            c.args(["bake", "--oci"]).arg(&out);
            c
        },
        |_| {
            check_store(f.store.path(), what);
            check_layout(&out, what);
            run(f.cmd().args(["bake", "--oci"]).arg(&out)).ok();
            check_store(f.store.path(), what);
            check_layout(&out, what);
            run(f.cmd().arg("verify").arg("--oci").arg(&out)).ok();
        },
    );
}

/// `skopeo inspect --raw` of a pushed image: its manifest as the registry holds it.
fn pushed_manifest(skopeo: &Path, image: &str) -> serde_json::Value {
    let raw = sh(Command::new(skopeo).args([
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{image}"),
    ]));
    serde_json::from_str(&raw).unwrap()
}

#[test]
fn push_killed_anywhere_reruns_and_the_image_verifies() {
    let (Some(registry_bin), Some(skopeo)) = (tool("docker-registry"), tool("skopeo")) else {
        return;
    };
    let registry = Registry::start(&registry_bin);
    let hub = big_hub();
    let f = Fetched::new(&hub, BIG);
    f.fetch(&hub, &[]).ok();
    let work = tempfile::tempdir().unwrap();
    // Each point (and each timing run) pushes to a repository of its own, so every killed run
    // has everything to upload.
    let target = |i: usize| format!("{}/models/app{i}:v1", registry.addr);
    let push = |i: usize| {
        let mut c = f.cmd();
        c.args(["bake", "--json", "--insecure", "--push", &target(i)]);
        c
    };
    let what = "bake --push";
    kill_at_points(
        what,
        23_04,
        None,
        // No cached layers: every run builds its layers, then uploads them.
        |_| {
            fs::remove_dir_all(f.store.path().join("layers")).ok();
        },
        &push,
        |i| {
            check_store(f.store.path(), what);
            let r = run(&mut push(i));
            r.ok();
            let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
            // The registry holds the manifest the rerun reported, with every layer.
            let manifest = pushed_manifest(&skopeo, &target(i));
            let layers: Vec<&str> = manifest["layers"]
                .as_array()
                .unwrap()
                .iter()
                .map(|l| l["digest"].as_str().unwrap())
                .collect();
            let reported: Vec<&str> = v["layers"]
                .as_array()
                .unwrap()
                .iter()
                .map(|l| l["digest"].as_str().unwrap())
                .collect();
            assert_eq!(layers, reported, "{what}");
            // Every few points, the image is pulled back and verified against the lock.
            if i % 5 == 4 {
                let into = work.path().join(format!("pulled{i}"));
                pull_and_verify(&f, &skopeo, &["--src-tls-verify=false"], &target(i), &into);
            }
        },
    );
}

const USER: &str = "runner";
const PASSWORD: &str = "kill-anywhere-pw";

#[test]
fn login_killed_anywhere_leaves_a_whole_auth_file() {
    let (Some(bin), Some(htpasswd)) = (tool("docker-registry"), tool("htpasswd")) else {
        return;
    };
    let users = sh(Command::new(htpasswd).args(["-Bbn", USER, PASSWORD]));
    let registry = Registry::start_with(&bin, Some(&users));
    let home = tempfile::tempdir().unwrap();
    let authfile = home.path().join("auth.json");
    let other = r#"{"auths":{"other.example":{"auth":"eDp5"}}}"#;
    let login = || {
        let mut c = Command::new(env!("CARGO_BIN_EXE_modelbake"));
        for var in ["DOCKER_CONFIG", "XDG_RUNTIME_DIR", "XDG_CONFIG_HOME"] {
            c.env_remove(var);
        }
        c.env("HOME", home.path())
            .env("REGISTRY_AUTH_FILE", &authfile)
            .args(["login", &registry.addr, "-u", USER, "--password-stdin"])
            .arg("--insecure");
        c
    };
    let check = |what: &str| {
        for (name, _) in entries(home.path()) {
            // `auth.json.lock` is the lock login holds around its edit: empty, never read.
            assert!(
                name == "auth.json" || name == "auth.json.lock" || is_temp(&name),
                "{what}: {name}"
            );
        }
        let v: serde_json::Value = serde_json::from_slice(&fs::read(&authfile).unwrap())
            .unwrap_or_else(|e| panic!("{what}: the auth file does not parse: {e}"));
        assert_eq!(v["auths"]["other.example"]["auth"], "eDp5", "{what}: {v}");
        v
    };
    let what = "login";
    let input = format!("{PASSWORD}\n");
    kill_at_points(
        what,
        23_05,
        Some(&input),
        // Each run replaces a file that holds another registry's entry only.
        |_| fs::write(&authfile, other).unwrap(),
        |_| login(),
        |_| {
            check(what);
            let mut c = login();
            c.stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            let mut child = c.spawn().unwrap();
            child
                .stdin
                .take()
                .unwrap()
                .write_all(input.as_bytes())
                .unwrap();
            let out = child.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "{what}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let v = check(what);
            assert!(
                v["auths"][&registry.addr]["auth"].is_string(),
                "{what}: {v}"
            );
        },
    );
}

#[test]
fn lock_killed_anywhere_leaves_a_whole_lock() {
    let hub = big_hub();
    let p = Project::new(BIG);
    let what = "lock";
    // Each run replaces the lock of the other manifest, so each run writes.
    let manifest = |i: usize| if i.is_multiple_of(2) { BIG } else { TINY };
    let id = |i: usize| {
        if i.is_multiple_of(2) {
            "acme/big"
        } else {
            "acme/tiny"
        }
    };
    kill_at_points(
        what,
        23_06,
        None,
        |i| {
            p.write_manifest(manifest(i + 1));
            p.lock_with(&hub, &[]).ok();
            p.write_manifest(manifest(i));
        },
        |_| {
            let mut c = p.cmd();
            c.args(["lock", "--endpoint", &hub.endpoint()]);
            c
        },
        |i| {
            for (name, _) in entries(p.path()) {
                assert!(
                    ["models.toml", "models.lock"].contains(&name.as_str()) || is_temp(&name),
                    "{what}: {name}"
                );
            }
            // The old lock or the new one, whole.
            let lock = p.lock();
            let repo = lock["repo"].as_array().unwrap()[0]["id"].as_str().unwrap();
            assert!(repo == id(i) || repo == id(i + 1), "{what}: {lock}");
            p.lock_with(&hub, &[]).ok();
            locked_repo(&p.lock(), id(i));
            p.run(&["lock", "--locked"]).ok();
        },
    );
}

#[test]
fn cache_records_killed_anywhere_rerun_and_verify() {
    let (Some(registry_bin), Some(skopeo)) = (tool("docker-registry"), tool("skopeo")) else {
        return;
    };
    let registry = Registry::start(&registry_bin);
    let hub = big_hub();
    let f = Fetched::new(&hub, BIG);
    f.fetch(&hub, &[]).ok();
    let out = f.cache.path().join("oci");
    // Each point records into a cache repository of its own, from an empty layer cache.
    let cache = |i: usize| format!("{}/cache/m{i}", registry.addr);
    let bake = |i: usize| {
        let mut c = f.cmd();
        c.args(["bake", "--insecure", "--cache", &cache(i), "--oci"])
            .arg(&out);
        c
    };
    let what = "bake --cache";
    kill_at_points(
        what,
        23_07,
        None,
        |_| {
            fs::remove_dir_all(&out).ok();
            fs::remove_dir_all(f.store.path().join("layers")).ok();
        },
        &bake,
        |i| {
            check_store(f.store.path(), what);
            check_layout(&out, what);
            run(&mut bake(i)).ok();
            check_store(f.store.path(), what);
            run(f.cmd().arg("verify").arg("--oci").arg(&out)).ok();
            let tags = sh(Command::new(&skopeo).args([
                "list-tags",
                "--tls-verify=false",
                &format!("docker://{}", cache(i)),
            ]));
            assert!(tags.contains("modelbake-layer-v1-"), "{what}: {tags}");
        },
    );
}

#[test]
fn store_gc_killed_anywhere_reruns_and_keeps_what_is_locked() {
    let hub = big_hub();
    // One store holding `acme/tiny` (kept) and `acme/big` (garbage), with layers of both.
    let keep = Fetched::new(&hub, TINY);
    let other = Project::new(BIG);
    other.lock_with(&hub, &[]).ok();
    let template = keep.store.path().to_owned();
    let with_store = |p: &Project, store: &Path| {
        let mut c = p.cmd();
        c.env("MODELBAKE_STORE", store);
        c
    };
    keep.fetch(&hub, &[]).ok();
    run(with_store(&other, &template).args(["fetch", "--endpoint", &hub.endpoint()])).ok();
    let work = tempfile::tempdir().unwrap();
    for (p, name) in [(&keep.project, "a"), (&other, "b")] {
        run(with_store(p, &template)
            .args(["bake", "--oci"])
            .arg(work.path().join(name)))
        .ok();
    }
    let store = work.path().join("store");
    let gc = || {
        let mut c = with_store(&keep.project, &store);
        c.args(["store", "gc", "--yes", "--keep"])
            .arg(keep.project.lock_path());
        c
    };
    let what = "store gc";
    kill_at_points(
        what,
        23_08,
        None,
        |_| {
            if store.exists() {
                sh(Command::new("chmod").arg("-R").arg("u+w").arg(&store));
                fs::remove_dir_all(&store).unwrap();
            }
            sh(Command::new("cp").arg("-a").arg(&template).arg(&store));
        },
        |_| gc(),
        |_| {
            check_store(&store, what);
            run(&mut gc()).ok();
            check_store(&store, what);
            // What the kept lock needs is all there: an offline export verifies.
            let hub_cache = work.path().join("hub");
            fs::remove_dir_all(&hub_cache).ok();
            run(with_store(&keep.project, &store)
                .args(["export", "--hub-cache"])
                .arg(&hub_cache))
            .ok();
            run(with_store(&keep.project, &store)
                .args(["verify", "--hub-cache"])
                .arg(&hub_cache))
            .ok();
        },
    );
}

/// The checks themselves fail on what a non-atomic write would leave: a truncated store blob,
/// a record naming a missing layer blob, a half-written `index.json`, a layout reaching a
/// missing blob, a dangling snapshot link. (Temp names are ignored.)
#[test]
fn the_checks_catch_half_written_files() {
    let fails = |f: &dyn Fn()| std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).is_err();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let bytes = b"a whole blob";
    let sha = hex::encode(Sha256::digest(bytes));

    // The store: a whole blob and a temp sibling pass; a truncated blob does not.
    let shard = root.join("store/blobs/sha256").join(&sha[..2]);
    fs::create_dir_all(&shard).unwrap();
    fs::write(shard.join(&sha), bytes).unwrap();
    fs::write(shard.join(format!(".{sha}.tmp-1-0000abcd")), b"half").unwrap();
    let store = root.join("store");
    check_store(&store, "whole");
    fs::write(shard.join(&sha), &bytes[..4]).unwrap();
    assert!(fails(&|| check_store(&store, "truncated blob")));
    fs::write(shard.join(&sha), bytes).unwrap();

    // The layer cache: a record naming a missing blob fails.
    let layers = store.join("layers");
    fs::create_dir_all(layers.join("blobs/sha256")).unwrap();
    fs::write(
        layers.join("k.json"),
        format!("{{\"digest\":\"sha256:{sha}\",\"size\":{}}}", bytes.len()),
    )
    .unwrap();
    assert!(fails(&|| check_store(&store, "record without blob")));
    fs::write(layers.join("blobs/sha256").join(&sha), bytes).unwrap();
    check_store(&store, "record with blob");
    fs::write(layers.join("k.json"), "{\"digest\":").unwrap();
    assert!(fails(&|| check_store(&store, "half a record")));

    // A layout: half an index fails; so does an index reaching a missing manifest.
    let oci = root.join("oci");
    fs::create_dir_all(oci.join("blobs/sha256")).unwrap();
    fs::write(oci.join("index.json"), "{\"manifests\":[").unwrap();
    assert!(fails(&|| check_layout(&oci, "half an index")));
    fs::write(
        oci.join("index.json"),
        format!("{{\"manifests\":[{{\"digest\":\"sha256:{sha}\"}}]}}"),
    )
    .unwrap();
    assert!(fails(&|| check_layout(&oci, "missing manifest")));

    // A hub cache: a dangling snapshot link fails.
    let snap = root.join("hub/models--acme--x/snapshots/c");
    fs::create_dir_all(&snap).unwrap();
    std::os::unix::fs::symlink("../../blobs/nowhere", snap.join("f")).unwrap();
    assert!(fails(&|| check_hub_cache(
        &root.join("hub"),
        "dangling link"
    )));
}
