//! `modelbake lock` against the emulator: determinism, `--locked`, revisions, hashes,
//! selection, datasets, gated repos, `--update`, `--offline`, JSON output.

use hub_emulator::{FileSpec, Host, Kind};

use crate::support::*;

const TINY: &str = "[[model]]\nid = \"acme/tiny\"\n";

#[test]
fn locking_twice_gives_identical_bytes_and_locked_detects_edits() {
    let hub = emulator();
    let manifest = "[[model]]\nid = \"acme/tiny\"\n\n[[dataset]]\nid = \"acme/data\"\n";
    let a = Project::new(manifest);
    let b = Project::new(manifest);
    a.lock_with(&hub, &[]).ok();
    b.lock_with(&hub, &[]).ok();
    let first = a.lock_text();
    assert_eq!(
        first,
        b.lock_text(),
        "two fresh locks of the same manifest differ"
    );

    // Rerunning in place keeps the exact bytes and says it changed nothing.
    let rerun = a.lock_with(&hub, &["--json"]);
    rerun.ok();
    let summary: serde_json::Value = serde_json::from_str(&rerun.stdout).expect("JSON summary");
    assert_eq!(summary["written"], false);
    assert_eq!(a.lock_text(), first);

    // Repos come sorted by kind then id, whatever the manifest order.
    let lock = a.lock();
    let kinds: Vec<&str> = lock["repo"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["dataset", "model"]);

    a.lock_with(&hub, &["--locked"]).ok();

    // An edit of models.toml makes --locked fail, name the repo and the reason, and change nothing.
    a.write_manifest(&manifest.replace(
        "id = \"acme/tiny\"",
        "id = \"acme/tiny\"\ninclude = [\"*.json\"]",
    ));
    let run = a.lock_with(&hub, &["--locked"]);
    run.expect_code(3);
    assert!(run.stderr.contains("model `acme/tiny`"), "{}", run.stderr);
    assert!(run.stderr.contains("include changed"), "{}", run.stderr);
    assert!(
        !run.stderr.contains("acme/data"),
        "the unchanged dataset is not blamed: {}",
        run.stderr
    );
    assert_eq!(a.lock_text(), first, "--locked must not write");

    a.lock_with(&hub, &[]).ok();
    assert_ne!(a.lock_text(), first);
    a.lock_with(&hub, &["--locked"]).ok();

    // A repo removed from the manifest is drift too.
    a.write_manifest("[[model]]\nid = \"acme/tiny\"\ninclude = [\"*.json\"]\n");
    let run = a.lock_with(&hub, &["--locked"]);
    run.expect_code(3);
    assert!(
        run.stderr
            .contains("dataset `acme/data`: in the lock but no longer in the manifest"),
        "{}",
        run.stderr
    );
}

#[test]
fn locked_without_a_lock_fails() {
    let hub = emulator();
    let p = Project::new(TINY);
    let run = p.lock_with(&hub, &["--locked"]);
    run.expect_code(3);
    assert!(run.stderr.contains("does not exist"), "{}", run.stderr);
    assert!(!p.lock_path().exists());
}

#[test]
fn branch_tag_pull_request_and_commit_resolve_to_the_right_commit() {
    let hub = emulator();
    let main = hub.commit_of(Kind::Model, "acme/tiny", "main").unwrap();
    let v1 = hub.commit_of(Kind::Model, "acme/tiny", "v1.0").unwrap();
    let pr = hub
        .commit_of(Kind::Model, "acme/tiny", "refs/pr/1")
        .unwrap();
    assert!(
        main != v1 && main != pr && v1 != pr,
        "fixture commits must differ"
    );

    for (revision, expected) in [
        ("main", &main),
        ("v1.0", &v1),
        ("refs/pr/1", &pr),
        (v1.as_str(), &v1),
    ] {
        hub.clear_requests();
        let p = Project::new(&format!(
            "[[model]]\nid = \"acme/tiny\"\nrevision = \"{revision}\"\n"
        ));
        p.lock_with(&hub, &[]).ok();
        let lock = p.lock();
        let repo = locked_repo(&lock, "acme/tiny");
        assert_eq!(
            repo["commit"].as_str(),
            Some(expected.as_str()),
            "revision {revision}"
        );
        assert_eq!(repo["revision"].as_str(), Some(revision));
        let revision_calls: Vec<_> = hub
            .requests()
            .into_iter()
            .filter(|r| r.path.contains("/revision/"))
            .collect();
        if revision == v1 {
            assert!(
                revision_calls.is_empty(),
                "a pinned commit needs no revision call: {revision_calls:?}"
            );
        } else {
            assert_eq!(revision_calls.len(), 1);
        }
        if revision == "refs/pr/1" {
            assert_eq!(
                revision_calls[0].path,
                "/api/models/acme/tiny/revision/refs%2Fpr%2F1"
            );
        }
        // Files are always listed and downloaded at the commit, never at a branch name.
        for r in hub.requests() {
            if r.path.contains("/tree/") || r.path.contains("/resolve/") {
                assert!(
                    r.path.contains(expected.as_str()),
                    "request not pinned to the commit: {}",
                    r.path
                );
            }
        }
    }
}

#[test]
fn records_sha256_and_blob_ids_for_regular_and_lfs_files() {
    let hub = emulator();
    let p = Project::new("[[model]]\nid = \"acme/tiny\"\nrevision = \"v1.0\"\n");
    p.lock_with(&hub, &[]).ok();
    let lock = p.lock();
    let files = locked_files(locked_repo(&lock, "acme/tiny"));
    let paths: Vec<&str> = files.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(
        paths,
        [
            ".gitattributes",
            "config.json",
            "model.safetensors",
            "onnx/model.onnx",
            "sub/dir/nested.txt",
            "tokenizer.json"
        ]
    );

    let get = |path: &str| {
        files
            .iter()
            .find(|(p, _)| p == path)
            .map(|(_, f)| f.clone())
            .unwrap()
    };
    // A regular file: hashes known independently (git hash-object, sha256sum).
    let config = get("config.json");
    assert_eq!(config["sha256"].as_str(), Some(CONFIG_JSON_SHA256));
    assert_eq!(config["blob"].as_str(), Some(CONFIG_JSON_GIT_SHA1));
    assert_eq!(config["size"].as_integer(), Some(CONFIG_JSON.len() as i64));
    assert!(config.get("pointer").is_none());

    // Every file against the emulator's own bookkeeping.
    for stored in hub.files_at(Kind::Model, "acme/tiny", "v1.0") {
        let f = get(&stored.path);
        assert_eq!(
            f["sha256"].as_str(),
            Some(stored.sha256.as_str()),
            "{}",
            stored.path
        );
        assert_eq!(
            f["size"].as_integer(),
            Some(stored.size as i64),
            "{}",
            stored.path
        );
        if stored.lfs {
            assert_eq!(
                f["blob"].as_str(),
                Some(stored.sha256.as_str()),
                "LFS blob is the sha256"
            );
            assert_eq!(
                f["pointer"].as_str(),
                Some(stored.git_oid.as_str()),
                "LFS pointer oid"
            );
        } else {
            assert_eq!(
                f["blob"].as_str(),
                Some(stored.git_oid.as_str()),
                "regular blob is the git sha1"
            );
        }
    }

    // LFS hashes come from the listing: the CDN is never asked; regular files were downloaded.
    let requests = hub.requests();
    assert!(
        requests.iter().all(|r| r.host == Host::Hub),
        "lock must not download LFS files"
    );
    assert!(
        requests
            .iter()
            .any(|r| r.path.ends_with("/sub/dir/nested.txt") && r.path.contains("/resolve/"))
    );
    assert!(
        !requests
            .iter()
            .any(|r| r.path.ends_with("model.safetensors"))
    );
}

#[test]
fn relocking_reuses_known_hashes_without_downloading() {
    let hub = emulator();
    let p = Project::new(TINY);
    p.lock_with(&hub, &[]).ok();
    let first = p.lock_text();
    hub.clear_requests();
    p.lock_with(&hub, &["--update", "acme/tiny"]).ok();
    assert_eq!(p.lock_text(), first);
    let downloads: Vec<_> = hub
        .requests()
        .into_iter()
        .filter(|r| r.path.contains("resolve"))
        .collect();
    assert!(
        downloads.is_empty(),
        "files already hashed in the lock were downloaded again: {downloads:?}"
    );
}

#[test]
fn include_and_exclude_follow_huggingface_hub_patterns() {
    let hub = emulator();
    let p = Project::new(
        "[defaults]\ninclude = [\"*.safetensors\"]\n\n[[model]]\nid = \"acme/tiny\"\nrevision = \"v1.0\"\ninclude = [\"*.json\", \"sub/\", \"onnx/*\"]\nexclude = [\"*.onnx\", \"tokenizer*\"]\n\n[[dataset]]\nid = \"acme/data\"\ninclude = []\n",
    );
    p.lock_with(&hub, &[]).ok();
    let lock = p.lock();
    let tiny = locked_repo(&lock, "acme/tiny");
    let paths: Vec<String> = locked_files(tiny).into_iter().map(|(p, _)| p).collect();
    // `*.json` matches at any depth (fnmatch `*` crosses `/`), `sub/` selects the folder,
    // exclude wins over include.
    assert_eq!(paths, ["config.json", "sub/dir/nested.txt"]);
    assert_eq!(tiny["complete"].as_bool(), Some(false));
    assert_eq!(tiny["include"].as_array().map(|a| a.len()), Some(3));
    // An explicit empty include list means "everything" and overrides the default.
    let data = locked_repo(&lock, "acme/data");
    assert_eq!(locked_files(data).len(), 3);
    assert_eq!(data["complete"].as_bool(), Some(true));
}

#[test]
fn datasets_use_dataset_urls() {
    let hub = emulator();
    let p = Project::new("[[dataset]]\nid = \"acme/data\"\n");
    p.lock_with(&hub, &[]).ok();
    let lock = p.lock();
    let data = locked_repo(&lock, "acme/data");
    assert_eq!(data["kind"].as_str(), Some("dataset"));
    let requests = hub.requests();
    assert!(
        requests
            .iter()
            .any(|r| r.path == "/api/datasets/acme/data/revision/main")
    );
    assert!(
        requests
            .iter()
            .any(|r| r.path.starts_with("/datasets/acme/data/resolve/"))
    );
    assert!(!requests.iter().any(|r| r.path.starts_with("/api/models/")));
    // The same id as a model does not exist: the error says so and suggests the kind.
    let p = Project::new("[[model]]\nid = \"acme/data\"\n");
    let run = p.lock_with(&hub, &[]);
    run.expect_code(1);
    assert!(
        run.stderr.contains("model `acme/data` was not found"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("[[dataset]]"), "{}", run.stderr);
}

#[test]
fn gated_repo_needs_a_token_that_never_leaks() {
    let secret = "hf_secretTOKEN123";
    let gated = hub_emulator::Repo::model("acme/gated")
        .gated(&[secret])
        .commit("main", tiny_files());
    // Regular files also go through the CDN here, so every download crosses hosts.
    let hub = hub_emulator::HubEmulator::builder()
        .repo(gated)
        .regular_files_via_cdn(true)
        .start()
        .unwrap();
    let p = Project::new("[[model]]\nid = \"acme/gated\"\n");

    let run = p.lock_with(&hub, &[]);
    run.expect_code(1);
    assert!(
        run.stderr
            .contains("model `acme/gated` is gated and needs a token: set HF_TOKEN"),
        "{}",
        run.stderr
    );
    assert!(!p.lock_path().exists());

    let run = run_with_token(&p, &hub, "hf_wrong");
    run.expect_code(1);
    let page = format!("{}/acme/gated", hub.endpoint());
    assert!(
        run.stderr.contains(&format!("request access at {page}")),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("token from HF_TOKEN"), "{}", run.stderr);

    hub.clear_requests();
    let run = run_with_token(&p, &hub, secret);
    run.ok();
    let lock = p.lock_text();
    assert!(lock.contains("acme/gated"));
    assert!(!lock.contains(secret), "token in the lock");
    assert!(
        !run.stdout.contains(secret) && !run.stderr.contains(secret),
        "token in the output"
    );

    let requests = hub.requests();
    let cdn: Vec<_> = requests.iter().filter(|r| r.host == Host::Cdn).collect();
    assert!(
        !cdn.is_empty(),
        "the fixture must make the client reach the CDN"
    );
    assert!(
        cdn.iter().all(|r| r.authorization.is_none()),
        "token sent to the CDN: {cdn:?}"
    );
    let expected = format!("Bearer {secret}");
    assert!(
        requests
            .iter()
            .filter(|r| r.host == Host::Hub)
            .all(|r| r.authorization.as_deref() == Some(expected.as_str())),
        "every Hub request carries the token"
    );

    // The token file under HF_HOME works the same way.
    std::fs::write(p.hf_home.path().join("token"), format!("{secret}\n")).unwrap();
    std::fs::remove_file(p.lock_path()).unwrap();
    p.lock_with(&hub, &[]).ok();
}

fn run_with_token(p: &Project, hub: &hub_emulator::HubEmulator, token: &str) -> Run {
    run(p
        .cmd()
        .args(["lock", "-vv", "--endpoint", &hub.endpoint()])
        .env("HF_TOKEN", token))
}

#[test]
fn update_reresolves_only_the_named_repo() {
    let hub = hub_emulator::HubEmulator::builder()
        .repo(hub_emulator::Repo::model("acme/a").commit("main", tiny_files()))
        .repo(hub_emulator::Repo::model("acme/b").commit("main", tiny_files()))
        .start()
        .unwrap();
    let p = Project::new("[[model]]\nid = \"acme/a\"\n[[model]]\nid = \"acme/b\"\n");
    p.lock_with(&hub, &[]).ok();
    let a0 = hub.commit_of(Kind::Model, "acme/a", "main").unwrap();
    let b0 = hub.commit_of(Kind::Model, "acme/b", "main").unwrap();
    let mut moved = tiny_files();
    moved.push(FileSpec::regular("NEW.md", "new\n"));
    let a1 = hub
        .push_commit(Kind::Model, "acme/a", "main", moved.clone())
        .unwrap();
    hub.push_commit(Kind::Model, "acme/b", "main", moved)
        .unwrap();

    // A plain relock keeps both pins and needs no network at all.
    hub.clear_requests();
    p.lock_with(&hub, &[]).ok();
    assert!(
        hub.requests().is_empty(),
        "unchanged repos must not be re-resolved"
    );
    assert_eq!(
        locked_repo(&p.lock(), "acme/a")["commit"].as_str(),
        Some(a0.as_str())
    );

    // --locked --update reports that the branch moved, without writing.
    let run = p.lock_with(&hub, &["--locked", "--update", "acme/b"]);
    run.expect_code(3);
    assert!(
        run.stderr.contains("model `acme/b`: `main` moved from"),
        "{}",
        run.stderr
    );

    hub.clear_requests();
    let run = p.lock_with(&hub, &["--update", "acme/a", "--json"]);
    run.ok();
    let lock = p.lock();
    assert_eq!(
        locked_repo(&lock, "acme/a")["commit"].as_str(),
        Some(a1.as_str())
    );
    assert_eq!(
        locked_repo(&lock, "acme/b")["commit"].as_str(),
        Some(b0.as_str())
    );
    assert!(
        hub.requests().iter().all(|r| r.path.contains("acme/a")),
        "only acme/a may be asked about"
    );
    let summary: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    let actions: Vec<(&str, &str)> = summary["repos"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["id"].as_str().unwrap(), r["action"].as_str().unwrap()))
        .collect();
    assert_eq!(actions, [("acme/a", "updated"), ("acme/b", "kept")]);
    assert!(
        summary["repos"][0]["change"]
            .as_str()
            .unwrap()
            .contains("1 file(s) added")
    );

    let run = p.lock_with(&hub, &["--update", "acme/zzz"]);
    run.expect_code(1);
    assert!(
        run.stderr
            .contains("--update acme/zzz: no repo with that id"),
        "{}",
        run.stderr
    );
}

#[test]
fn offline_lock_works_only_when_nothing_needs_resolving() {
    let hub = emulator();
    let p = Project::new(TINY);
    let run = p.run(&["lock", "--offline", "--endpoint", "http://127.0.0.1:9"]);
    run.expect_code(1);
    assert!(
        run.stderr.contains("--offline") && run.stderr.contains("model `acme/tiny`"),
        "{}",
        run.stderr
    );
    p.lock_with(&hub, &[]).ok();
    p.run(&["lock", "--offline", "--endpoint", "http://127.0.0.1:9"])
        .ok();
}

#[test]
fn manifest_errors_point_at_file_line_and_column() {
    let p = Project::new("[[model]]\nid = \"acme/ti ny\"\n");
    let run = p.run(&["lock", "--endpoint", "http://127.0.0.1:9"]);
    run.expect_code(1);
    assert!(
        run.stderr
            .contains("models.toml:2:6: invalid repo id `acme/ti ny`"),
        "{}",
        run.stderr
    );

    p.write_manifest("[[model]]\nid = \"acme/tiny\"\nincludes = [\"*.json\"]\n");
    let run = p.run(&["lock", "--json"]);
    run.expect_code(1);
    assert!(
        run.stderr
            .contains("models.toml:3:1: unknown field `includes`"),
        "{}",
        run.stderr
    );
    let err: serde_json::Value =
        serde_json::from_str(&run.stdout).expect("errors are JSON too with --json");
    assert_eq!(err["ok"], false);

    p.write_manifest("[[model]]\nid = \"acme/tiny\"\nexclude = [\"ok\", \"a[b\"]\n");
    let run = p.run(&["lock"]);
    run.expect_code(1);
    assert!(
        run.stderr.contains("models.toml:3:18:") && run.stderr.contains("unclosed `[`"),
        "{}",
        run.stderr
    );

    let empty = tempfile::tempdir().unwrap();
    let run = crate::support::run(p.cmd().current_dir(empty.path()).arg("lock"));
    run.expect_code(1);
    assert!(run.stderr.contains("no models.toml in"), "{}", run.stderr);
}

#[test]
fn manifest_is_found_in_a_parent_folder_and_lock_goes_beside_it() {
    let hub = emulator();
    let p = Project::new(TINY);
    let nested = p.path().join("src/deep");
    std::fs::create_dir_all(&nested).unwrap();
    run(p
        .cmd()
        .current_dir(&nested)
        .args(["lock", "--endpoint", &hub.endpoint()]))
    .ok();
    assert!(p.lock_path().is_file());
    assert!(!nested.join("models.lock").exists());
}
