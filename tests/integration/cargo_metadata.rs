//! Manifests declared in Cargo metadata, for Rust projects: a package's table, a workspace's
//! table found from a member, and located errors inside Cargo.toml.

use crate::support::*;

fn write(path: &std::path::Path, text: &str) {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::write(path, text).unwrap();
}

#[test]
fn package_metadata_is_read_and_the_lock_goes_beside_cargo_toml() {
    let hub = emulator();
    let p = Project::new("");
    std::fs::remove_file(p.path().join("models.toml")).unwrap();
    write(
        &p.path().join("Cargo.toml"),
        "[package]\nname = \"uses-models\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[package.metadata.modelbake]\nmodel = [{ id = \"acme/tiny\", include = [\"*.json\"] }]\n\n[package.metadata.other-tool]\nx = 1\n",
    );
    write(&p.path().join("src/lib.rs"), "");
    p.lock_with(&hub, &[]).ok();
    let lock = p.lock();
    let paths: Vec<String> = locked_files(locked_repo(&lock, "acme/tiny"))
        .into_iter()
        .map(|(p, _)| p)
        .collect();
    assert_eq!(paths, ["config.json", "tokenizer.json"]);
    p.lock_with(&hub, &["--locked"]).ok();
}

#[test]
fn workspace_metadata_is_found_from_a_member() {
    let hub = emulator();
    let p = Project::new("");
    std::fs::remove_file(p.path().join("models.toml")).unwrap();
    write(
        &p.path().join("Cargo.toml"),
        "[workspace]\nmembers = [\"member\"]\nresolver = \"2\"\n\n[workspace.metadata.modelbake]\n[[workspace.metadata.modelbake.dataset]]\nid = \"acme/data\"\n",
    );
    write(
        &p.path().join("member/Cargo.toml"),
        "[package]\nname = \"member\"\nversion = \"0.1.0\"\nedition = \"2021\"\n",
    );
    write(&p.path().join("member/src/lib.rs"), "");
    run(p
        .cmd()
        .current_dir(p.path().join("member"))
        .args(["lock", "--endpoint", &hub.endpoint()]))
    .ok();
    assert!(
        p.lock_path().is_file(),
        "the lock goes beside the workspace root Cargo.toml"
    );
    assert!(!p.path().join("member/models.lock").exists());
    locked_repo(&p.lock(), "acme/data");
}

#[test]
fn errors_in_cargo_metadata_are_located() {
    let p = Project::new("");
    std::fs::remove_file(p.path().join("models.toml")).unwrap();
    write(
        &p.path().join("Cargo.toml"),
        "[package]\nname = \"x\"\nversion = \"0.1.0\"\n\n[package.metadata.modelbake]\nmodel = [{ id = \"acme//x\" }]\n",
    );
    write(&p.path().join("src/lib.rs"), "");
    let run = p.run(&["lock", "--endpoint", "http://127.0.0.1:9"]);
    run.expect_code(1);
    assert!(
        run.stderr
            .contains("Cargo.toml:6:17: invalid repo id `acme//x`"),
        "{}",
        run.stderr
    );
}
