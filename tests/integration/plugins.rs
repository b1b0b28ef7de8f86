//! WebAssembly plugins end to end: mirrors routing downloads (and falling back when they
//! fail), policies choosing files at lock time, pruners planning cache deletions, plugin pins
//! in the lock, and hostile plugins that must fail cleanly without reaching anything.

use std::fs;
use std::path::Path;

use hub_emulator::{Fault, FaultAction, FileSpec, Host, HubEmulator, Repo, generate};
use sha2::{Digest, Sha256};

use crate::support::{
    Fetched, Project, fetch_all_from_mirrors, locked_files, locked_repo, plugin, run, tiny_repo,
};

/// Copies the built plugin `stem` into the project's `plugins/` folder as `name.wasm` and
/// returns the path to write in models.toml.
fn install(project: &Project, stem: &str, name: &str) -> String {
    let dir = project.path().join("plugins");
    fs::create_dir_all(&dir).unwrap();
    fs::copy(plugin(stem), dir.join(format!("{name}.wasm"))).unwrap();
    plugin_path(name)
}

/// Where [`install`] puts plugin `name`, relative to the project (as written in models.toml).
fn plugin_path(name: &str) -> String {
    format!("plugins/{name}.wasm")
}

/// Removes every blob from the project's store, so the next fetch downloads again.
fn empty_store(f: &Fetched) {
    for shard in fs::read_dir(f.store.path().join("blobs/sha256")).unwrap() {
        fs::remove_dir_all(shard.unwrap().path()).unwrap();
    }
}

fn sha256_of(path: &Path) -> String {
    hex::encode(Sha256::digest(fs::read(path).unwrap()))
}

/// GET requests for files (`/resolve/` or the CDN) a server saw.
fn file_gets(hub: &HubEmulator) -> Vec<String> {
    hub.requests()
        .into_iter()
        .filter(|r| r.method == "GET" && (r.path.contains("/resolve") || r.host == Host::Cdn))
        .map(|r| r.path)
        .collect()
}

/// A second emulator holding the same `acme/tiny` (same commits: they are content-derived).
fn mirror_emulator() -> HubEmulator {
    HubEmulator::builder().repo(tiny_repo()).start().unwrap()
}

fn mirror_manifest(mirrors: &[(&str, &str, String)]) -> String {
    let mut m = String::from("[[model]]\nid = \"acme/tiny\"\n\n[mirror]\nuse = [");
    m.push_str(
        &mirrors
            .iter()
            .map(|(n, _, _)| format!("\"{n}\""))
            .collect::<Vec<_>>()
            .join(", "),
    );
    m.push_str("]\n");
    for (name, path, config) in mirrors {
        m.push_str(&format!(
            "\n[plugins.{name}]\npath = \"{path}\"\nconfig = {config}\n"
        ));
    }
    m
}

/// A locked project (empty store) whose only mirror is the plugin `stem` as `name`.
fn with_mirror(stem: &str, name: &str, config: String) -> (HubEmulator, Fetched) {
    let hub = crate::support::emulator();
    let f = Fetched::new(&hub, "");
    let path = install(&f.project, stem, name);
    f.project
        .write_manifest(&mirror_manifest(&[(name, &path, config)]));
    f.project.lock_with(&hub, &[]).ok();
    hub.clear_requests();
    (hub, f)
}

/// A locked project (empty store) whose only mirror is `mirror-url-template` as `name`,
/// pointing at `mirror`; the plugin file is [`plugin_path`]`(name)`.
fn url_template_mirror(name: &str, mirror: &HubEmulator) -> (HubEmulator, Fetched) {
    with_mirror(
        "mirror_url_template",
        name,
        format!("{{ base = \"{}\" }}", mirror.endpoint()),
    )
}

/// A project whose only mirror is the hostile fixture in `mode`, with something to fetch.
fn hostile(mode: &str) -> (HubEmulator, Fetched) {
    with_mirror("hostile", "hostile", format!("{{ mode = \"{mode}\" }}"))
}

#[test]
fn a_mirror_plugin_routes_downloads_to_the_mirror() {
    let mirror = mirror_emulator();
    let (hub, f) = url_template_mirror("hf-mirror", &mirror);
    let path = plugin_path("hf-mirror");
    // The lock pins the plugin by the sha256 of its bytes and its configuration.
    let lock = f.project.lock();
    let pin = &lock["plugin"][0];
    assert_eq!(pin["name"].as_str(), Some("hf-mirror"));
    assert_eq!(pin["source"].as_str(), Some(path.as_str()));
    assert_eq!(
        pin["sha256"].as_str(),
        Some(sha256_of(&f.project.path().join(&path)).as_str())
    );

    fetch_all_from_mirrors(&f, &hub);
    assert!(
        file_gets(&hub).is_empty(),
        "the Hub served files: {:?}",
        file_gets(&hub)
    );
    let served = file_gets(&mirror);
    assert!(
        served.iter().any(|p| p.contains("/acme/tiny/resolve/")),
        "{served:?}"
    );
    f.export(&[]).ok();
    f.verify(&[]).ok();
}

#[test]
fn failing_mirrors_are_reported_and_the_next_source_is_used() {
    let hub = crate::support::emulator();
    // One mirror without the repo (404), one failing (500), one serving wrong bytes.
    let empty = HubEmulator::builder().start().unwrap();
    let broken = mirror_emulator();
    broken.inject(Fault::on("/").status(500));
    let liar = mirror_emulator();
    liar.inject(Fault::on("/").action(FaultAction::WrongBytes));
    liar.inject(
        Fault::on("/")
            .host(Host::Cdn)
            .action(FaultAction::WrongBytes),
    );
    let f = Fetched::new(&hub, "");
    let path = install(&f.project, "mirror_url_template", "m");
    let cfg = |h: &HubEmulator| format!("{{ base = \"{}\" }}", h.endpoint());
    f.project.write_manifest(&mirror_manifest(&[
        ("liar", &path, cfg(&liar)),
        ("empty", &path, cfg(&empty)),
        ("broken", &path, cfg(&broken)),
    ]));
    f.project.lock_with(&hub, &[]).ok();
    hub.clear_requests();

    let out = run(f
        .cmd()
        .args(["fetch", "--json", "--endpoint", &hub.endpoint()]));
    out.ok();
    let report: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(report["from_mirrors"], 0);
    let failures: Vec<String> = report["mirror_failures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    let files = locked_files(locked_repo(&f.project.lock(), "acme/tiny")).len();
    assert_eq!(failures.len(), 3 * files, "{failures:#?}");
    for name in ["liar", "empty", "broken"] {
        assert!(
            failures
                .iter()
                .filter(|m| m.contains(&format!("mirror `{name}`")))
                .count()
                == files,
            "{name}: {failures:#?}"
        );
    }
    assert!(
        failures
            .iter()
            .any(|m| m.contains("mirror `liar`") && m.contains("sha256")),
        "wrong bytes are named as a hash mismatch: {failures:#?}"
    );
    assert!(
        out.stderr.contains("trying the next source"),
        "{}",
        out.stderr
    );
    // Everything came from the Hub in the end, and the store holds only verified bytes.
    assert!(file_gets(&hub).len() >= files, "{:?}", file_gets(&hub));
    f.export(&[]).ok();
    f.verify(&[]).ok();
}

fn weights_hub() -> HubEmulator {
    let common = || {
        vec![
            FileSpec::regular("config.json", "{\"model_type\": \"bert\"}\n"),
            FileSpec::lfs("pytorch_model.bin", generate(40_000, 11)),
        ]
    };
    let mut with_st = common();
    with_st.push(FileSpec::lfs("model.safetensors", generate(40_000, 12)));
    HubEmulator::builder()
        .repo(Repo::model("acme/both").commit("main", with_st))
        .repo(Repo::model("acme/bin-only").commit("main", common()))
        .start()
        .unwrap()
}

#[test]
fn prefer_safetensors_drops_bin_only_when_safetensors_exist() {
    let hub = weights_hub();
    let p = Project::new("");
    let path = install(&p, "policy_prefer_safetensors", "prefer-safetensors");
    p.write_manifest(&format!(
        "[defaults]\npolicy = [\"prefer-safetensors\"]\n\n[[model]]\nid = \"acme/both\"\n\n\
         [[model]]\nid = \"acme/bin-only\"\n\n[plugins.prefer-safetensors]\npath = \"{path}\"\n"
    ));
    let out = p.lock_with(&hub, &["--json"]);
    out.ok();
    let lock = p.lock();
    let paths = |id: &str| -> Vec<String> {
        locked_files(locked_repo(&lock, id))
            .into_iter()
            .map(|(p, _)| p)
            .collect()
    };
    assert_eq!(paths("acme/both"), ["config.json", "model.safetensors"]);
    assert_eq!(paths("acme/bin-only"), ["config.json", "pytorch_model.bin"]);
    assert_eq!(
        locked_repo(&lock, "acme/both")["complete"].as_bool(),
        Some(false)
    );
    assert_eq!(
        locked_repo(&lock, "acme/both")["policy"]
            .as_array()
            .unwrap()[0]
            .as_str(),
        Some("prefer-safetensors")
    );
    // The reason is shown, on the terminal and in the JSON report.
    assert!(
        out.stderr.contains("pytorch_model.bin")
            && out
                .stderr
                .contains("model.safetensors has the same weights"),
        "{}",
        out.stderr
    );
    let report: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let both = report["repos"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == "acme/both")
        .unwrap();
    assert_eq!(both["dropped"][0]["path"], "pytorch_model.bin");
    assert_eq!(both["dropped"][0]["plugin"], "prefer-safetensors");
    // Unchanged manifest and plugin: nothing to resolve, nothing written.
    p.lock_with(&hub, &["--locked"]).ok();
}

#[test]
fn locked_fails_when_a_plugin_or_its_config_changes() {
    let hub = weights_hub();
    let p = Project::new("");
    let path = install(&p, "policy_prefer_safetensors", "pick");
    let manifest = |config: &str| {
        format!(
            "[[model]]\nid = \"acme/both\"\npolicy = [\"pick\"]\n\n[plugins.pick]\npath = \"{path}\"\nconfig = {config}\n"
        )
    };
    p.write_manifest(&manifest("{}"));
    p.lock_with(&hub, &[]).ok();
    p.lock_with(&hub, &["--locked"]).ok();

    // New bytes under the same name.
    fs::copy(plugin("policy_size_budget"), p.path().join(&path)).unwrap();
    let out = p.lock_with(&hub, &["--locked"]);
    out.expect_code(3);
    assert!(
        out.stderr.contains("plugin `pick`") && out.stderr.contains("bytes changed"),
        "{}",
        out.stderr
    );
    install(&p, "policy_prefer_safetensors", "pick");
    p.lock_with(&hub, &["--locked"]).ok();

    // Same bytes, new configuration: the lock is stale, and relocking re-runs the policy.
    p.write_manifest(&manifest("{ also-drop = [\"onnx\"] }"));
    let out = p.lock_with(&hub, &["--locked"]);
    out.expect_code(3);
    assert!(out.stderr.contains("config changed"), "{}", out.stderr);
    let before = p.lock()["plugin"][0]["config"].clone();
    p.lock_with(&hub, &[]).ok();
    assert_ne!(p.lock()["plugin"][0]["config"], before);
    p.lock_with(&hub, &["--locked"]).ok();
}

/// No Rust panic of the host itself in `stderr`.
fn no_host_panic(stderr: &str) {
    assert!(!stderr.contains("panicked at src/"), "{stderr}");
    assert!(!stderr.contains("RUST_BACKTRACE"), "{stderr}");
}

#[test]
fn an_infinite_loop_is_stopped_within_two_seconds() {
    let (hub, f) = hostile("loop");
    let out = f.fetch(&hub, &[]);
    out.expect_code(1);
    no_host_panic(&out.stderr);
    assert!(
        out.stderr.contains("plugin `hostile`") && out.stderr.contains("CPU budget"),
        "{}",
        out.stderr
    );
    // The message says how long the call ran before fuel stopped it.
    let secs: f64 = out
        .stderr
        .split("was stopped after ")
        .nth(1)
        .and_then(|r| r.split('s').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no duration in: {}", out.stderr));
    assert!(secs < 2.0, "stopped after {secs}s");
    assert!(
        file_gets(&hub).is_empty(),
        "nothing downloaded before the plugin answered"
    );
}

#[test]
fn a_memory_bomb_fails_cleanly() {
    let (hub, f) = hostile("memory");
    let out = f.fetch(&hub, &[]);
    out.expect_code(1);
    no_host_panic(&out.stderr);
    assert!(
        out.stderr.contains("plugin `hostile`")
            && out.stderr.contains("memory")
            && out.stderr.contains("limit"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_panic_message_reaches_the_user() {
    let (hub, f) = hostile("panic");
    let out = f.fetch(&hub, &[]);
    out.expect_code(1);
    no_host_panic(&out.stderr);
    assert!(
        out.stderr.contains("plugin `hostile`")
            && out.stderr.contains("hostile plugin panicked on purpose"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_wrong_number_of_answers_is_a_bad_answer() {
    let (hub, f) = hostile("wrong-count");
    let out = f.fetch(&hub, &[]);
    out.expect_code(1);
    assert!(
        out.stderr.contains("plugin `hostile`") && out.stderr.contains("candidate lists for"),
        "{}",
        out.stderr
    );
}

#[test]
fn mirror_urls_that_are_not_plain_http_are_rejected() {
    let (hub, f) = hostile("bad-urls");
    let out = f.fetch(&hub, &[]);
    out.ok();
    for (url, why) in [
        ("file:///etc/passwd", "only http and https"),
        ("ftp://example.com/x", "only http and https"),
        ("../../etc/passwd", "relative"),
        ("https://example.com/a/../../b", "`..`"),
    ] {
        assert!(
            out.stderr.lines().any(|l| l.contains(&format!("`{url}`"))
                && l.contains("rejected")
                && l.contains(why)),
            "{url}: {}",
            out.stderr
        );
    }
    // Every file still came from the Hub, verified.
    f.export(&[]).ok();
    f.verify(&[]).ok();
}

#[test]
fn plugins_never_see_the_token_or_the_environment() {
    let (hub, f) = hostile("spy");
    let secret = "hf_pluginMustNeverSeeThis";
    let out = run(f
        .cmd()
        .env("HF_TOKEN", secret)
        .env("MODELBAKE_CREDENTIAL_X", secret)
        .args(["fetch", "--endpoint", &hub.endpoint()]));
    out.ok();
    // The spy logged everything it was given (config, repo, files)...
    assert!(
        out.stderr.contains("plugin `hostile`") && out.stderr.contains("acme/tiny"),
        "{}",
        out.stderr
    );
    // ...and none of it was a secret.
    assert!(!out.stderr.contains(secret), "{}", out.stderr);

    // A plugin that asks the environment for HF_TOKEN loads (wasi:cli is linked as traps),
    // but the call is refused and names the import.
    let (hub, f) = with_mirror("wasi_env", "env", "{}".into());
    let out = run(f
        .cmd()
        .env("HF_TOKEN", secret)
        .args(["fetch", "--endpoint", &hub.endpoint()]));
    out.expect_code(1);
    assert!(
        out.stderr.contains("plugin `env`") && out.stderr.contains("wasi:cli/environment"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains(secret), "{}", out.stderr);
}

#[test]
fn filesystem_and_socket_imports_are_refused_at_load() {
    let hub = crate::support::emulator();
    for (stem, import) in [
        ("wasi_fs", "wasi:filesystem/"),
        ("wasi_sockets", "wasi:sockets/"),
    ] {
        let p = Project::new("");
        let path = install(&p, stem, "sneaky");
        // As a policy at lock time: refused before any repo is resolved.
        p.write_manifest(&format!(
            "[[model]]\nid = \"acme/tiny\"\npolicy = [\"sneaky\"]\n\n[plugins.sneaky]\npath = \"{path}\"\n"
        ));
        hub.clear_requests();
        let out = p.lock_with(&hub, &[]);
        out.expect_code(1);
        assert!(
            out.stderr.contains("plugin `sneaky`")
                && out.stderr.contains(import)
                && out.stderr.contains("does not grant"),
            "{stem}: {}",
            out.stderr
        );
        assert!(!p.lock_path().exists(), "no lock written");
        // And `plugin check` says the same.
        let out = p.run(&["plugin", "check", &path]);
        out.expect_code(1);
        assert!(out.stderr.contains(import), "{}", out.stderr);
    }
}

#[test]
fn compiled_plugins_are_cached_and_a_damaged_cache_entry_is_rebuilt() {
    let mirror = mirror_emulator();
    let (hub, f) = url_template_mirror("m", &mirror);
    f.fetch(&hub, &[]).ok();
    let sha = sha256_of(&f.project.path().join(plugin_path("m")));
    let compiled: Vec<_> = fs::read_dir(f.store.path().join("plugins/compiled"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(compiled.len(), 1, "{compiled:?}");
    let name = compiled[0]
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    assert!(name.starts_with(&sha) && name.ends_with(".cwasm"), "{name}");

    // Garbage in the cache: recompiled, and the download still goes through the mirror.
    fs::write(&compiled[0], b"not a compiled component").unwrap();
    empty_store(&f);
    mirror.clear_requests();
    f.fetch(&hub, &[]).ok();
    assert!(!file_gets(&mirror).is_empty());
    assert!(fs::metadata(&compiled[0]).unwrap().len() > 1000);
}

#[test]
fn a_plugin_from_a_url_is_pinned_and_checked() {
    let bytes = fs::read(plugin("mirror_url_template")).unwrap();
    let sha = hex::encode(Sha256::digest(&bytes));
    let hub = HubEmulator::builder()
        .repo(tiny_repo())
        .repo(Repo::model("acme/plugins").commit(
            "main",
            vec![FileSpec::regular("mirror.wasm", bytes.clone())],
        ))
        .start()
        .unwrap();
    let url = format!("{}/acme/plugins/resolve/main/mirror.wasm", hub.endpoint());
    let f = Fetched::new(&hub, "");
    let manifest = |sha_line: &str| {
        format!(
            "[[model]]\nid = \"acme/tiny\"\n\n[mirror]\nuse = [\"m\"]\n\n[plugins.m]\nurl = \"{url}\"\n{sha_line}config = {{ base = \"{}\" }}\n",
            hub.endpoint()
        )
    };
    f.project.write_manifest(&manifest(""));
    run(f.cmd().args(["lock", "--endpoint", &hub.endpoint()])).ok();
    let lock = f.project.lock();
    assert_eq!(lock["plugin"][0]["sha256"].as_str(), Some(sha.as_str()));
    assert_eq!(lock["plugin"][0]["source"].as_str(), Some(url.as_str()));
    f.fetch(&hub, &[]).ok();
    // Kept in the store by sha256: later runs need no download of the plugin.
    assert!(
        f.store
            .path()
            .join(format!("plugins/sources/{sha}.wasm"))
            .is_file()
    );

    // New bytes behind the same URL: the pin holds, so fetch refuses them and says how to
    // accept them.
    let new_bytes = fs::read(plugin("mirror_cas")).unwrap();
    let new_sha = hex::encode(Sha256::digest(&new_bytes));
    hub.push_commit(
        hub_emulator::Kind::Model,
        "acme/plugins",
        "main",
        vec![FileSpec::regular("mirror.wasm", new_bytes)],
    )
    .unwrap();
    let fresh = tempfile::tempdir().unwrap();
    let fetch_fresh = || {
        run(f.cmd().env("MODELBAKE_STORE", fresh.path()).args([
            "fetch",
            "--endpoint",
            &hub.endpoint(),
        ]))
    };
    let out = fetch_fresh();
    out.expect_code(1);
    assert!(
        out.stderr.contains("plugin `m`") && out.stderr.contains("lock --update m"),
        "{}",
        out.stderr
    );
    // `lock --update m` pins the new bytes (a CAS mirror now, whose config no longer fits).
    let out = run(f
        .cmd()
        .args(["lock", "--update", "m", "--endpoint", &hub.endpoint()]));
    out.expect_code(1);
    assert!(
        out.stderr.contains("known keys: template"),
        "{}",
        out.stderr
    );
    assert_eq!(
        f.project.lock()["plugin"][0]["sha256"].as_str(),
        Some(sha.as_str()),
        "a failed lock changes nothing"
    );

    // A manifest that requires other bytes than the URL serves stops `lock` itself.
    f.project
        .write_manifest(&manifest(&format!("sha256 = \"{}\"\n", "0".repeat(64))));
    let out = run(f.cmd().args(["lock", "--endpoint", &hub.endpoint()]));
    out.expect_code(1);
    assert!(
        out.stderr.contains("plugin `m`") && out.stderr.contains("requires"),
        "{}",
        out.stderr
    );
    f.project
        .write_manifest(&manifest(&format!("sha256 = \"{new_sha}\"\n")));
    let out = run(f.cmd().args(["lock", "--endpoint", &hub.endpoint()]));
    out.expect_code(1);
    assert!(
        out.stderr.contains("known keys: template"),
        "the new bytes are the CAS mirror: {}",
        out.stderr
    );
}

#[test]
fn credentials_go_only_to_the_origin_the_manifest_binds_them_to() {
    let hub = crate::support::emulator();
    let mirror = mirror_emulator();
    let f = Fetched::new(&hub, "");
    let path = install(&f.project, "mirror_url_template", "m");
    let with_binding = |binding: &str| {
        format!(
            "{}\n[mirror.credentials]\n{binding}\n",
            mirror_manifest(&[(
                "m",
                &path,
                format!(
                    "{{ base = \"{}\", credential = \"bucket\" }}",
                    mirror.endpoint()
                ),
            )])
        )
    };
    let fetch = || {
        run(f
            .cmd()
            .env("HF_TOKEN", "hf_hubOnlyToken")
            .env("MODELBAKE_CREDENTIAL_BUCKET", "bucketSecret")
            .args(["fetch", "--json", "--endpoint", &hub.endpoint()]))
    };

    // Bound to another origin: no candidate gets the secret, the Hub serves everything.
    f.project
        .write_manifest(&with_binding("bucket = \"https://bucket.example\""));
    f.project.lock_with(&hub, &[]).ok();
    let out = fetch();
    out.ok();
    assert!(
        out.stderr
            .contains("may only be sent to https://bucket.example"),
        "{}",
        out.stderr
    );
    assert!(mirror.requests().is_empty(), "{:?}", mirror.requests());

    // Bound to the mirror: it receives the credential, and never the Hub token.
    empty_store(&f);
    f.project.write_manifest(&with_binding(&format!(
        "bucket = \"{}\"",
        mirror.endpoint()
    )));
    f.project.lock_with(&hub, &[]).ok();
    let out = fetch();
    out.ok();
    let report: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert!(
        report["from_mirrors"].as_u64().unwrap() > 0,
        "{}",
        out.stdout
    );
    let seen = mirror.requests();
    assert!(
        seen.iter()
            .filter(|r| r.host != Host::Cdn)
            .all(|r| r.authorization.as_deref() == Some("Bearer bucketSecret")),
        "{seen:?}"
    );
    assert!(
        seen.iter().all(|r| !r
            .authorization
            .as_deref()
            .unwrap_or("")
            .contains("hf_hubOnlyToken")),
        "{seen:?}"
    );
    // The mirror's CDN is another origin: the credential does not follow the redirect.
    assert!(
        seen.iter()
            .filter(|r| r.host == Host::Cdn)
            .all(|r| r.authorization.is_none()),
        "{seen:?}"
    );
}

#[test]
fn mirror_config_changes_need_a_relock_and_large_files_use_chunks() {
    let mirror = mirror_emulator();
    let (hub, f) = url_template_mirror("m", &mirror);

    // Every file through the chunked path (HEAD to locate, then Range requests) on the mirror.
    let out = run(f.cmd().env("MODELBAKE_CHUNK_THRESHOLD_MIB", "0").args([
        "fetch",
        "--json",
        "--endpoint",
        &hub.endpoint(),
    ]));
    out.ok();
    let report: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let files = locked_files(locked_repo(&f.project.lock(), "acme/tiny")).len();
    assert_eq!(report["from_mirrors"], files, "{}", out.stdout);
    assert!(
        mirror
            .requests()
            .iter()
            .any(|r| r.method == "GET" && r.range.is_some()),
        "{:?}",
        mirror.requests()
    );
    assert!(file_gets(&hub).is_empty());
    f.export(&[]).ok();
    f.verify(&[]).ok();

    // Pointing the mirror elsewhere without relocking is refused, not silently followed.
    empty_store(&f);
    f.project.write_manifest(&mirror_manifest(&[(
        "m",
        &plugin_path("m"),
        "{ base = \"https://elsewhere.example\" }".into(),
    )]));
    let out = f.fetch(&hub, &[]);
    out.expect_code(1);
    assert!(
        out.stderr.contains("plugin `m`")
            && out.stderr.contains("config")
            && out.stderr.contains("modelbake lock"),
        "{}",
        out.stderr
    );
}

/// A cache with two revisions of acme/tiny (tag v1.0 and main), the lock naming only main.
fn two_revision_cache() -> (HubEmulator, Fetched) {
    let hub = crate::support::emulator();
    let f = Fetched::new(&hub, "[[model]]\nid = \"acme/tiny\"\nrevision = \"v1.0\"\n");
    f.fetch(&hub, &[]).ok();
    f.export(&[]).ok();
    f.project.write_manifest("[[model]]\nid = \"acme/tiny\"\n");
    f.project.lock_with(&hub, &[]).ok();
    f.fetch(&hub, &[]).ok();
    f.export(&[]).ok();
    (hub, f)
}

fn snapshots(f: &Fetched) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(f.hub_cache().join("models--acme--tiny/snapshots"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn pruner_plugins_plan_cache_prune_and_never_touch_locked_revisions() {
    let (hub, f) = two_revision_cache();
    let main = hub
        .commit_of(hub_emulator::Kind::Model, "acme/tiny", "main")
        .unwrap();
    let v1 = hub
        .commit_of(hub_emulator::Kind::Model, "acme/tiny", "v1.0")
        .unwrap();
    assert_eq!(snapshots(&f).len(), 2);
    let keep = install(&f.project, "pruner_keep_locked", "keep-locked");
    let lru = install(&f.project, "pruner_lru", "lru");
    let manifest = format!(
        "[[model]]\nid = \"acme/tiny\"\n\n[plugins.keep-locked]\npath = \"{keep}\"\n\n\
         [plugins.lru]\npath = \"{lru}\"\nconfig = {{ max-bytes = 1 }}\n"
    );
    f.project.write_manifest(&manifest);
    f.project.lock_with(&hub, &[]).ok();
    let cache = f.hub_cache();
    let prune = |args: &[&str]| {
        run(f
            .cmd()
            .args(["cache", "prune", "--hub-cache"])
            .arg(&cache)
            .args(args))
    };

    // LRU with a 1-byte budget wants everything gone, but the locked main revision stays.
    let out = prune(&["--policy", "lru", "--json", "--now", "2000000000"]);
    out.ok();
    let plan: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let removals = plan["removals"].as_array().unwrap();
    assert_eq!(removals.len(), 1, "{}", out.stdout);
    assert_eq!(removals[0]["commit"], v1.as_str());
    assert!(
        removals[0]["reason"]
            .as_str()
            .unwrap()
            .contains("plugin `lru`"),
        "{}",
        out.stdout
    );
    assert_eq!(snapshots(&f).len(), 2, "a dry run deletes nothing");

    // keep-locked applied: only main remains, and it still verifies.
    prune(&["--policy", "keep-locked", "--yes"]).ok();
    assert_eq!(snapshots(&f), [main]);
    f.verify(&[]).ok();
}

#[test]
fn plugin_new_scaffolds_a_crate_that_builds_and_works_as_a_policy() {
    let hub = crate::support::emulator();
    let p = Project::new("");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    p.run(&[
        "plugin",
        "new",
        "no-onnx",
        "--kind",
        "policy",
        "--sdk",
        root.join("plugins/sdk").to_str().unwrap(),
    ])
    .ok();
    assert!(p.path().join("no-onnx/wit/plugin.wit").is_file());
    // Share the plugins workspace's target dir so the SDK's dependencies build only once.
    let out = run(p
        .cmd()
        .env("CARGO_TARGET_DIR", root.join("plugins/target"))
        .args(["plugin", "build", "no-onnx", "--json", "--out", "dist"]));
    out.ok();
    let built: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(built["plugins"][0]["kinds"][0], "policy", "{}", out.stdout);
    let out = p.run(&["plugin", "check", "dist/no_onnx.wasm"]);
    out.ok();
    assert!(out.stdout.contains("kinds     policy"), "{}", out.stdout);
    assert!(out.stdout.contains("drop-suffixes"), "{}", out.stdout);

    p.write_manifest(
        "[[model]]\nid = \"acme/tiny\"\npolicy = [\"no-onnx\"]\n\n[plugins.no-onnx]\npath = \"dist/no_onnx.wasm\"\nconfig = { drop-suffixes = [\".onnx\"] }\n",
    );
    let out = p.lock_with(&hub, &[]);
    out.ok();
    let files: Vec<String> = locked_files(locked_repo(&p.lock(), "acme/tiny"))
        .into_iter()
        .map(|(p, _)| p)
        .collect();
    assert!(!files.iter().any(|f| f.ends_with(".onnx")), "{files:?}");
    assert!(files.contains(&"model.safetensors".to_owned()), "{files:?}");
    assert!(out.stderr.contains("ends with `.onnx`"), "{}", out.stderr);
}

#[test]
fn misconfigured_plugins_fail_before_any_work() {
    let hub = crate::support::emulator();
    let p = Project::new("");
    let path = install(&p, "policy_size_budget", "budget");
    p.write_manifest(&format!(
        "[[model]]\nid = \"acme/tiny\"\npolicy = [\"budget\"]\n\n[plugins.budget]\npath = \"{path}\"\nconfig = {{ max-file-bytez = 10 }}\n"
    ));
    hub.clear_requests();
    let out = p.lock_with(&hub, &[]);
    out.expect_code(1);
    assert!(
        out.stderr.contains("plugin `budget`") && out.stderr.contains("max-file-bytez"),
        "{}",
        out.stderr
    );
    assert!(hub.requests().is_empty(), "{:?}", hub.requests());

    // An unknown plugin name is a located manifest error.
    p.write_manifest("[[model]]\nid = \"acme/tiny\"\npolicy = [\"nope\"]\n");
    let out = p.lock_with(&hub, &[]);
    out.expect_code(1);
    assert!(
        out.stderr.contains("models.toml:3:") && out.stderr.contains("no plugin named `nope`"),
        "{}",
        out.stderr
    );

    // A mirror plugin used as a policy is refused with what it is.
    let m = install(&p, "mirror_cas", "cas");
    p.write_manifest(&format!(
        "[[model]]\nid = \"acme/tiny\"\npolicy = [\"cas\"]\n\n[plugins.cas]\npath = \"{m}\"\nconfig = {{ template = \"https://b.example/{{sha256}}\" }}\n"
    ));
    let out = p.lock_with(&hub, &[]);
    out.expect_code(1);
    assert!(
        out.stderr.contains("does not export the policy interface"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_policy_that_breaks_the_rules_fails_the_lock_and_writes_nothing() {
    let hub = crate::support::emulator();
    for (mode, expected) in [
        (
            "invent",
            "`../../etc/passwd`, which is not one of the repo's files",
        ),
        ("silent", "said nothing about"),
        ("twice", "more than once"),
        ("loop", "CPU budget"),
    ] {
        let p = Project::new("");
        let path = install(&p, "hostile_policy", "rogue");
        p.write_manifest(&format!(
            "[[model]]\nid = \"acme/tiny\"\npolicy = [\"rogue\"]\n\n[plugins.rogue]\npath = \"{path}\"\nconfig = {{ mode = \"{mode}\" }}\n"
        ));
        let out = p.lock_with(&hub, &[]);
        out.expect_code(1);
        no_host_panic(&out.stderr);
        assert!(
            out.stderr.contains("plugin `rogue`") && out.stderr.contains(expected),
            "{mode}: {}",
            out.stderr
        );
        assert!(!p.lock_path().exists(), "{mode}: no lock is written");
    }
}

#[test]
fn a_failing_mirror_keeps_the_partial_and_a_bad_resume_restarts_from_zero() {
    let empty = HubEmulator::builder().start().unwrap();
    let (hub, f) = url_template_mirror("m", &empty);
    let lock = f.project.lock();
    let (_, weights) = locked_files(locked_repo(&lock, "acme/tiny"))
        .into_iter()
        .find(|(p, _)| p == "model.safetensors")
        .unwrap();
    let sha = weights["sha256"].as_str().unwrap().to_owned();
    // A partial left by an earlier run whose bytes are wrong (as a lying source would leave).
    let tmp = f.store.path().join("tmp");
    fs::create_dir_all(&tmp).unwrap();
    fs::write(
        tmp.join(format!("{sha}.1-0000000000000000.part")),
        vec![0x5a; 1000],
    )
    .unwrap();
    hub.clear_requests();

    let out = f.fetch(&hub, &[]);
    out.ok();
    assert!(out.stderr.contains("mirror `m` failed"), "{}", out.stderr);
    assert!(
        out.stderr.contains("downloading it again from the start"),
        "{}",
        out.stderr
    );
    // The 404 mirror left the partial alone: the Hub was asked for the rest first, then,
    // after the mismatch, for the whole file.
    let gets: Vec<Option<String>> = hub
        .requests()
        .into_iter()
        .filter(|r| r.host == Host::Cdn && r.method == "GET" && r.path.contains(&sha))
        .map(|r| r.range)
        .collect();
    assert_eq!(gets, [Some("bytes=1000-".to_owned()), None], "{gets:?}");
    f.export(&[]).ok();
    f.verify(&[]).ok();
}

#[test]
fn an_unsupported_answer_means_no_opinion() {
    // A mirror with no opinion: the Hub serves every file and nothing is reported as failed.
    let (hub, f) = hostile("unsupported");
    let out = run(f
        .cmd()
        .args(["fetch", "--json", "--endpoint", &hub.endpoint()]));
    out.ok();
    let report: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(report["from_mirrors"], 0);
    assert_eq!(report["mirror_failures"].as_array().map(Vec::len), Some(0));
    assert!(report["downloaded"].as_u64().unwrap() > 0, "{}", out.stdout);

    // A policy with no opinion keeps every file; the next policy still runs.
    let p = Project::new("");
    let rogue = install(&p, "hostile_policy", "rogue");
    let pst = install(&p, "policy_prefer_safetensors", "pst");
    p.write_manifest(&format!(
        "[[model]]\nid = \"acme/tiny\"\npolicy = [\"rogue\", \"pst\"]\n\n[plugins.rogue]\npath = \"{rogue}\"\nconfig = {{ mode = \"unsupported\" }}\n\n[plugins.pst]\npath = \"{pst}\"\nconfig = {{ also-drop = [\"onnx\"] }}\n"
    ));
    let out = p.lock_with(&hub, &[]);
    out.ok();
    let files: Vec<String> = locked_files(locked_repo(&p.lock(), "acme/tiny"))
        .into_iter()
        .map(|(p, _)| p)
        .collect();
    assert!(files.contains(&"config.json".to_owned()), "{files:?}");
    assert!(
        !files.iter().any(|f| f.ends_with(".onnx")),
        "the second policy ran: {files:?}"
    );
}
