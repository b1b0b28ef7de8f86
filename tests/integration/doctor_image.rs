//! `doctor --image` against a Distribution registry on 127.0.0.1, and the arrangement `doctor`
//! tells by itself from an image's layers: an hf-cache and a files image pushed by `bake` are
//! diagnosed straight from the registry with nothing stored and only reads sent, every blob
//! checked against its digest; layouts in either arrangement (a custom models folder, `--flat`,
//! zstd layers) are told apart without `--layout`, the flags still win, and an image holding
//! its cache where its `Env` does not point gets a note naming the variable to set.

use std::fs;
use std::path::Path;

use serde_json::Value;

use crate::support::oci::{Registry, layout_config, replace_layout_config};
use crate::support::*;

const BOTH: &str = "[[model]]\nid = \"acme/tiny\"\n\n[[dataset]]\nid = \"acme/data\"\n";
const TINY: &str = "[[model]]\nid = \"acme/tiny\"\n";

/// `doctor --json ARGS` with `f`'s lock and `store` as the store; the run and its report.
fn doctor(f: &Fetched, store: &Path, args: &[&str]) -> (Run, Value) {
    let mut cmd = f.project.cmd();
    cmd.env("MODELBAKE_STORE", store)
        .args(["doctor", "--json"])
        .args(args);
    let r = run(&mut cmd);
    let v = serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{e}: {r:?}"));
    (r, v)
}

/// The state of every locked repo in a report, per loader (hf-cache) or folder (files).
fn states(report: &Value) -> Vec<String> {
    let rows = match report["layout"].as_str() {
        Some("files") => report["folders"].as_array().unwrap().clone(),
        _ => report["loaders"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|l| l["repos"].as_array().unwrap().clone())
            .collect(),
    };
    rows.iter()
        .map(|r| r["state"].as_str().unwrap().to_owned())
        .collect()
}

/// The blob file the registry serves for `digest`.
fn stored_blob(registry: &Registry, digest: &str) -> std::path::PathBuf {
    let hex = digest.trim_start_matches("sha256:");
    registry
        .data_dir()
        .join("docker/registry/v2/blobs/sha256")
        .join(&hex[..2])
        .join(hex)
        .join("data")
}

#[test]
fn doctor_image_reads_a_registry_image_in_either_layout_and_stores_nothing() {
    let Some(registry_bin) = tool("docker-registry") else {
        return;
    };
    let registry = Registry::start(&registry_bin);
    let hub = emulator();
    let f = Fetched::new(&hub, BOTH);
    f.fetch(&hub, &[]).ok();
    let hf = format!("{}/models/hf:v1", registry.addr);
    let files = format!("{}/models/files:v1", registry.addr);
    let pushed: Value = serde_json::from_str(
        &run(f
            .cmd()
            .args(["bake", "--json", "--insecure", "--push", &hf]))
        .ok()
        .stdout,
    )
    .unwrap();
    run(f
        .cmd()
        .args(["bake", "--insecure", "--layout", "files", "--push", &files]))
    .ok();

    let store = tempfile::tempdir().unwrap();
    let before = registry.requests().len();
    let (r, report) = doctor(&f, store.path(), &["--insecure", "--image", &hf]);
    r.ok();
    assert_eq!(report["target"], hf.as_str());
    assert_eq!(report["layout"], "hf-cache");
    assert_eq!(report["layout_from"], "detected");
    assert!(
        report["evidence"]
            .as_str()
            .unwrap()
            .starts_with("/root/.cache/huggingface/hub/"),
        "{report}"
    );
    assert_eq!(states(&report), ["present"; 6], "3 loaders x 2 repos");
    assert_eq!(report["offline"], true);

    let (r, report) = doctor(&f, store.path(), &["--insecure", "--image", &files]);
    r.ok();
    assert_eq!(report["layout"], "files");
    assert_eq!(report["layout_from"], "detected");
    assert_eq!(report["models_dir"], "/models");
    assert_eq!(report["loaders"], serde_json::json!([]));
    let folders: Vec<&str> = report["folders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["folder"].as_str().unwrap())
        .collect();
    assert_eq!(folders, ["/models/datasets/acme/data", "/models/acme/tiny"]);
    assert_eq!(states(&report), ["present"; 2]);
    // The table says how the layout was told.
    let mut table = f.project.cmd();
    table.env("MODELBAKE_STORE", store.path());
    let table = run(table.args(["doctor", "--insecure", "--image", &files]));
    table.ok();
    assert!(
        table
            .stdout
            .contains("layout: files (detected from /models/"),
        "{}",
        table.stdout
    );
    assert!(
        table
            .stdout
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>()
                == ["model/acme/tiny", "/models/acme/tiny", "present"]),
        "{}",
        table.stdout
    );

    // --layout wins over the layers: the hf-cache image has no files folders.
    let (r, report) = doctor(
        &f,
        store.path(),
        &["--insecure", "--image", &hf, "--layout", "files"],
    );
    r.expect_code(1);
    assert_eq!(report["layout_from"], "flag");
    assert_eq!(states(&report), ["missing"; 2]);

    // Nothing was written: no store, and only reads reached the registry.
    assert_eq!(
        fs::read_dir(store.path()).unwrap().count(),
        0,
        "doctor --image wrote into the store"
    );
    let asked = &registry.requests()[before..];
    assert!(
        asked
            .iter()
            .all(|r| r.starts_with("GET ") || r.starts_with("HEAD ")),
        "{asked:?}"
    );
    assert!(
        asked.iter().any(|r| r.contains("/blobs/")),
        "the layers were read from the registry: {asked:?}"
    );

    // Every blob is checked: a model layer whose stored bytes changed fails the diagnosis.
    let manifest = sh(std::process::Command::new("curl").args([
        "-sf",
        "-H",
        "Accept: application/vnd.oci.image.manifest.v1+json",
        &format!(
            "http://{}/v2/models/hf/manifests/{}",
            registry.addr,
            pushed["manifest_digest"].as_str().unwrap()
        ),
    ]));
    let manifest: Value = serde_json::from_str(&manifest).unwrap();
    let layer = manifest["layers"][0]["digest"].as_str().unwrap();
    let path = stored_blob(&registry, layer);
    let mut bytes = fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff; // inside the tar's end-of-archive blocks: every entry still reads
    fs::write(&path, bytes).unwrap();
    let (r, _) = doctor(&f, store.path(), &["--insecure", "--image", &hf]);
    r.expect_code(1);
    assert!(
        r.stderr.contains(layer) && r.stderr.contains("not its digest"),
        "{}",
        r.stderr
    );
    assert_eq!(
        r.stderr.matches(layer).count(),
        2,
        "named once, and its digest: {}",
        r.stderr
    );
    assert!(
        r.stderr.contains("hint: run the command again"),
        "{}",
        r.stderr
    );
}

#[test]
fn doctor_oci_tells_the_layout_from_the_layers_and_the_flags_still_win() {
    let hub = emulator();
    let f = Fetched::new(&hub, BOTH);
    f.fetch(&hub, &[]).ok();
    let work = tempfile::tempdir().unwrap();
    let store = f.store.path();
    let bake = |f: &Fetched, out: &Path, args: &[&str]| {
        run(f
            .cmd()
            .args(["bake", "--oci", out.to_str().unwrap(), "--tag", "t"])
            .args(args))
        .ok();
        format!("{}:t", out.display())
    };

    // A models folder of its own, zstd layers: found without --models-dir.
    let spec = bake(
        &f,
        &work.path().join("files"),
        &[
            "--layout",
            "files",
            "--models-dir",
            "/srv/models",
            "--compression",
            "zstd",
        ],
    );
    let (r, report) = doctor(&f, store, &["--oci", &spec]);
    r.ok();
    assert_eq!(report["layout"], "files");
    assert_eq!(report["layout_from"], "detected");
    assert_eq!(report["models_dir"], "/srv/models");
    assert_eq!(states(&report), ["present"; 2]);
    // --models-dir wins over the layers.
    let (r, report) = doctor(&f, store, &["--oci", &spec, "--models-dir", "/models"]);
    r.expect_code(1);
    assert_eq!(
        report["folders"][1]["path"], "/models/acme/tiny",
        "{report}"
    );

    // One repo, flat: found as such.
    let one = Fetched::new(&hub, TINY);
    one.fetch(&hub, &[]).ok();
    let spec = bake(
        &one,
        &work.path().join("flat"),
        &["--layout", "files", "--flat"],
    );
    let (r, report) = doctor(&one, store, &["--oci", &spec]);
    r.ok();
    assert_eq!(report["flat"], true, "{report}");
    assert_eq!(report["folders"][0]["folder"], "/models");

    // The hf-cache image, gzip: found as such; --layout files still wins.
    let spec = bake(&f, &work.path().join("hf"), &["--compression", "gzip"]);
    let (r, report) = doctor(&f, store, &["--oci", &spec]);
    r.ok();
    assert_eq!(report["layout"], "hf-cache");
    let (r, report) = doctor(&f, store, &["--oci", &spec, "--layout", "files"]);
    r.expect_code(1);
    assert_eq!(report["layout"], "files");
}

#[test]
fn a_cache_the_env_does_not_name_is_found_and_the_variable_to_set_is_named() {
    let hub = emulator();
    let f = Fetched::new(&hub, TINY);
    f.fetch(&hub, &[]).ok();
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("image");
    run(f.cmd().args([
        "bake",
        "--hf-home",
        "/opt/hf",
        "--oci",
        out.to_str().unwrap(),
    ]))
    .ok();
    let spec = out.to_str().unwrap();
    let (r, report) = doctor(&f, f.store.path(), &["--oci", spec]);
    r.ok();
    // As a Dockerfile that copies the cache but forgets `ENV HF_HOME` leaves it.
    let mut config = layout_config(&out);
    let env: Vec<Value> = config["config"]["Env"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| !e.as_str().unwrap().starts_with("HF_HOME="))
        .cloned()
        .collect();
    config["config"]["Env"] = Value::Array(env);
    replace_layout_config(&out, &config);
    let (r, report2) = doctor(&f, f.store.path(), &["--oci", spec]);
    r.expect_code(1);
    assert_eq!(report2["layout"], "hf-cache");
    assert_eq!(states(&report2)[0], "missing");
    let notes = report2["notes"].as_array().unwrap();
    assert_eq!(notes.len(), 1, "{report2}");
    let note = notes[0].as_str().unwrap();
    assert!(
        note.contains("in /opt/hf/hub")
            && note.contains("looks in /root/.cache/huggingface/hub")
            && note.contains("set HF_HOME=/opt/hf"),
        "{note}"
    );
    assert!(
        report["notes"].is_null(),
        "no note when all is well: {report}"
    );
    let table = run(f.project.cmd().args(["doctor", "--oci", spec]));
    assert!(
        table.stdout.contains("note: the image holds"),
        "{}",
        table.stdout
    );
}
