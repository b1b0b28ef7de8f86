//! What an installed modelbake needs without a checkout: `--version` naming the exact build,
//! and `plugin new` writing a crate that builds from the SDK bundled in the binary.

use std::path::Path;

use crate::support::{Fetched, emulator, fetch_all_from_mirrors, run};

#[test]
fn version_names_the_version_commit_and_target() {
    let bin = env!("CARGO_BIN_EXE_modelbake");
    let out = run(std::process::Command::new(bin).args(["--version", "--json"]));
    out.ok();
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["name"], "modelbake");
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
    let target = v["target"].as_str().unwrap();
    assert!(target.split('-').count() >= 3, "a target triple: {v}");
    let commit = v["commit"].as_str().unwrap();
    let head = std::process::Command::new("git")
        .args(["rev-parse", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
    match head {
        Some(head) => assert_eq!(
            commit, head,
            "the binary names the commit it was built from"
        ),
        None => assert_eq!(commit, "unknown"),
    }

    let out = run(std::process::Command::new(bin).arg("--version"));
    out.ok();
    let short = &commit[..commit.len().min(12)];
    assert_eq!(
        out.stdout.trim(),
        format!(
            "modelbake {} (commit {short}, {target})",
            env!("CARGO_PKG_VERSION")
        )
    );
}

#[test]
fn plugin_new_outside_the_repository_builds_a_working_mirror_from_the_bundled_sdk() {
    let hub = emulator();
    let mirror = hub_emulator::HubEmulator::builder()
        .repo(crate::support::tiny_repo())
        .start()
        .unwrap();
    // An empty temp folder outside the repository: no plugins/sdk to find.
    let f = Fetched::new(&hub, "");
    let dir = f.project.path();
    assert!(!dir.starts_with(env!("CARGO_MANIFEST_DIR")));
    f.project
        .run(&["plugin", "new", "corp-mirror", "--kind", "mirror"])
        .ok();
    let krate = dir.join("corp-mirror");
    let manifest = std::fs::read_to_string(krate.join("Cargo.toml")).unwrap();
    assert!(
        manifest.contains("path = \"vendor/modelbake-plugin-sdk/sdk\""),
        "{manifest}"
    );
    assert!(!manifest.contains(env!("CARGO_MANIFEST_DIR")), "{manifest}");
    let vendored = krate.join("vendor/modelbake-plugin-sdk");
    for file in [
        "sdk/Cargo.toml",
        "sdk/src/lib.rs",
        "wit/plugin.wit",
        "README.md",
    ] {
        assert!(vendored.join(file).is_file(), "{file} is vendored");
    }
    let readme = std::fs::read_to_string(vendored.join("README.md")).unwrap();
    assert!(readme.contains(env!("CARGO_PKG_VERSION")), "{readme}");
    assert!(krate.join("Cargo.lock").is_file());

    // The plugins workspace's target dir is only a build cache shared with the other plugin
    // tests; the crate itself knows nothing of this checkout.
    let cache = Path::new(env!("CARGO_MANIFEST_DIR")).join("plugins/target");
    let out = run(f.project.cmd().env("CARGO_TARGET_DIR", &cache).args([
        "plugin",
        "build",
        "corp-mirror",
        "--json",
        "--out",
        "dist",
    ]));
    out.ok();
    let built: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(built["plugins"][0]["kinds"][0], "mirror", "{}", out.stdout);
    let out = f.project.run(&["plugin", "check", "dist/corp_mirror.wasm"]);
    out.ok();
    assert!(out.stdout.contains("kinds     mirror"), "{}", out.stdout);

    f.project.write_manifest(&format!(
        "[[model]]\nid = \"acme/tiny\"\n\n[mirror]\nuse = [\"corp\"]\n\n[plugins.corp]\npath = \"dist/corp_mirror.wasm\"\nconfig = {{ base = \"{}\" }}\n",
        mirror.endpoint()
    ));
    f.project.lock_with(&hub, &[]).ok();
    hub.clear_requests();
    fetch_all_from_mirrors(&f, &hub);
    assert!(
        mirror
            .requests()
            .iter()
            .any(|r| r.path.contains("/acme/tiny/resolve/")),
        "the mirror served the files"
    );
    f.export(&[]).ok();
    f.verify(&[]).ok();
}

#[test]
fn dist_check_packages_a_host_binary() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = run(std::process::Command::new(root.join("scripts/dist")).arg("--check"));
    out.ok();
    for line in [
        format!("modelbake-{}-", env!("CARGO_PKG_VERSION")),
        format!("modelbake-image:{} (linux/", env!("CARGO_PKG_VERSION")),
        "SHA256SUMS".into(),
        "dist --check OK".into(),
    ] {
        assert!(out.stdout.contains(&line), "{line}: {}", out.stdout);
    }
}

#[test]
fn the_modelbake_image_is_deterministic_and_tracks_its_binaries() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let tmp = tempfile::tempdir().unwrap();
    let bin = |name: &str, bytes: &[u8]| {
        let p = tmp.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    };
    let (a, b) = (bin("a", b"#!/bin/true\n"), bin("b", b"#!/bin/false\n"));
    let write = |layout: &str, amd64: &Path| {
        let out = run(std::process::Command::new("python3")
            .arg(root.join("scripts/dist_image.py"))
            .arg(tmp.path().join(layout))
            .args(["v1", "1.2.3", "/dev/null"])
            .arg(format!("amd64={}", amd64.display()))
            .arg(format!("arm64={}", a.display()))
            .env("SOURCE_DATE_EPOCH", "1700000000"));
        out.ok();
        out.stdout.trim().to_owned()
    };
    let first = write("one", &a);
    assert!(first.starts_with("sha256:"), "{first}");
    assert_eq!(write("two", &a), first, "same binaries, same index digest");
    assert_ne!(write("three", &b), first, "another binary, another digest");
    let index: serde_json::Value = serde_json::from_slice(
        &std::fs::read(tmp.path().join("one/blobs/sha256").join(&first[7..])).unwrap(),
    )
    .unwrap();
    let platforms: Vec<&str> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["platform"]["architecture"].as_str().unwrap())
        .collect();
    assert_eq!(platforms, ["amd64", "arm64"]);
}
