//! Real consumers read what `export` writes, offline: Python huggingface_hub (snapshot and
//! single-file downloads for a branch and a commit, `scan_cache_dir`), transformers
//! (`AutoConfig`, `AutoTokenizer` on a real tokenizer), the Rust `hf-hub` crate; and the export
//! is byte-identical to the cache huggingface_hub itself writes for the same repo.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use hub_emulator::{HubEmulator, Kind, Repo};

use crate::support::*;

const MANIFEST: &str = "[[model]]\nid = \"acme/tiny\"\n\n[[model]]\nid = \"acme/tiny-bert\"\n\n[[dataset]]\nid = \"acme/data\"\ninclude = [\"data/train-*\", \"README.md\"]\n";

fn hub_with_tokenizer() -> HubEmulator {
    let fixture =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/quickstart/hub/models/acme/tiny-bert");
    HubEmulator::builder()
        .repo(tiny_repo())
        .repo(dataset_repo())
        .repo(Repo::from_dir(Kind::Model, "acme/tiny-bert", &fixture).unwrap())
        .start()
        .unwrap()
}

const OFFLINE_SCRIPT: &str = r#"
import hashlib, json, os, sys
from huggingface_hub import snapshot_download, hf_hub_download, scan_cache_dir
from transformers import AutoConfig, AutoTokenizer

commit = sys.argv[1]
def digest_tree(root):
    out = {}
    for dirpath, _, names in os.walk(root):
        for n in names:
            p = os.path.join(dirpath, n)
            with open(p, "rb") as f:
                out[os.path.relpath(p, root)] = hashlib.sha256(f.read()).hexdigest()
    return out
def sha(p):
    with open(p, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()

r = {}
r["branch"] = digest_tree(snapshot_download("acme/tiny", local_files_only=True))
r["commit"] = digest_tree(snapshot_download("acme/tiny", revision=commit, local_files_only=True))
r["file_branch"] = sha(hf_hub_download("acme/tiny", "sub/dir/nested.txt"))
r["file_commit"] = sha(hf_hub_download("acme/tiny", "model.safetensors", revision=commit))
r["dataset"] = digest_tree(snapshot_download("acme/data", repo_type="dataset", local_files_only=True))
info = scan_cache_dir()
r["warnings"] = [str(w) for w in info.warnings]
r["repos"] = {f"{x.repo_type}/{x.repo_id}": {"size": x.size_on_disk, "files": x.nb_files, "refs": sorted(x.refs)} for x in info.repos}
config = AutoConfig.from_pretrained("acme/tiny-bert")
tok = AutoTokenizer.from_pretrained("acme/tiny-bert")
r["model_type"] = config.model_type
r["ids"] = tok("Hello bake world")["input_ids"]
print(json.dumps(r))
"#;

#[test]
fn python_and_transformers_load_the_export_offline() {
    let Some(py) = python() else { return };
    let hub = hub_with_tokenizer();
    let f = Fetched::new(&hub, MANIFEST);
    f.fetch(&hub, &[]).ok();
    f.export(&[]).ok();
    let commit = hub.commit_of(Kind::Model, "acme/tiny", "main").unwrap();
    hub.clear_requests();
    let out = Command::new(&py)
        .args(["-c", OFFLINE_SCRIPT, &commit])
        .env("HF_HUB_OFFLINE", "1")
        .env("HF_HUB_CACHE", f.hub_cache())
        .env("HF_HOME", f.cache.path().join("home"))
        .env("HF_ENDPOINT", "http://127.0.0.1:9")
        .env_remove("HF_TOKEN")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "python failed:\n{stderr}");
    assert!(
        hub.requests().is_empty(),
        "offline loads touched the network"
    );
    let r: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}\n{stderr}"));

    let expected: BTreeMap<String, String> = hub
        .files_at(Kind::Model, "acme/tiny", "main")
        .iter()
        .map(|f| (f.path.clone(), f.sha256.clone()))
        .collect();
    for key in ["branch", "commit"] {
        let got: BTreeMap<String, String> = serde_json::from_value(r[key].clone()).unwrap();
        assert_eq!(got, expected, "{key}");
    }
    assert_eq!(
        r["file_branch"].as_str(),
        Some(expected["sub/dir/nested.txt"].as_str())
    );
    assert_eq!(
        r["file_commit"].as_str(),
        Some(expected["model.safetensors"].as_str())
    );
    let data: BTreeMap<String, String> = serde_json::from_value(r["dataset"].clone()).unwrap();
    assert_eq!(
        data.keys().collect::<Vec<_>>(),
        ["README.md", "data/train-00000.parquet"]
    );

    assert_eq!(
        r["warnings"],
        serde_json::json!([]),
        "scan_cache_dir warnings"
    );
    let lock = f.project.lock();
    for (key, id) in [
        ("model/acme/tiny", "acme/tiny"),
        ("model/acme/tiny-bert", "acme/tiny-bert"),
        ("dataset/acme/data", "acme/data"),
    ] {
        let files = locked_files(locked_repo(&lock, id));
        let mut blobs = BTreeMap::new();
        for (_, f) in &files {
            blobs.insert(
                f["blob"].as_str().unwrap().to_owned(),
                f["size"].as_integer().unwrap() as u64,
            );
        }
        let size: u64 = blobs.values().sum();
        assert_eq!(
            r["repos"][key]["size"].as_u64(),
            Some(size),
            "{key} size_on_disk"
        );
        assert_eq!(
            r["repos"][key]["files"].as_u64(),
            Some(blobs.len() as u64),
            "{key} nb_files"
        );
        assert_eq!(
            r["repos"][key]["refs"],
            serde_json::json!(["main"]),
            "{key}"
        );
    }
    assert_eq!(r["model_type"], "bert");
    assert_eq!(
        r["ids"],
        serde_json::json!([5, 8, 6]),
        "the fixture tokenizer maps hello, bake, world"
    );
}

#[test]
fn the_rust_hf_hub_crate_reads_the_export() {
    let hub = hub_with_tokenizer();
    let f = Fetched::new(&hub, MANIFEST);
    f.fetch(&hub, &[]).ok();
    f.export(&[]).ok();
    let cache = hf_hub::Cache::new(f.hub_cache());
    let repo = cache.repo(hf_hub::Repo::with_revision(
        "acme/tiny-bert".into(),
        hf_hub::RepoType::Model,
        "main".into(),
    ));
    let path = repo
        .get("config.json")
        .expect("hf-hub finds config.json in the exported cache");
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples/quickstart/hub/models/acme/tiny-bert/config.json");
    assert_eq!(fs::read(path).unwrap(), fs::read(fixture).unwrap());
    let data = cache.repo(hf_hub::Repo::with_revision(
        "acme/data".into(),
        hf_hub::RepoType::Dataset,
        "main".into(),
    ));
    assert!(data.get("data/train-00000.parquet").is_some());
}

/// Every entry under `root`: relative path → what it is (link target, file content hash, dir).
fn describe(root: &Path) -> BTreeMap<String, String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
        for e in fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            let meta = fs::symlink_metadata(&p).unwrap();
            if meta.file_type().is_symlink() {
                out.insert(
                    rel,
                    format!("link -> {}", fs::read_link(&p).unwrap().display()),
                );
            } else if meta.is_dir() {
                out.insert(rel.clone(), "dir".into());
                walk(root, &p, out);
            } else {
                let bytes = fs::read(&p).unwrap();
                out.insert(
                    rel,
                    format!(
                        "file {} bytes, {:x}",
                        bytes.len(),
                        <sha2::Sha256 as sha2::Digest>::digest(&bytes)
                    ),
                );
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

#[test]
fn export_is_byte_identical_to_the_cache_huggingface_hub_writes() {
    let Some(py) = python() else { return };
    let hub = hub_with_tokenizer();
    let theirs = tempfile::tempdir().unwrap();
    let out = Command::new(&py)
        .args([
            "-c",
            "from huggingface_hub import snapshot_download; snapshot_download('acme/tiny')",
        ])
        .env("HF_ENDPOINT", hub.endpoint())
        .env("HF_HUB_CACHE", theirs.path())
        .env("HF_HOME", theirs.path().join("home"))
        .env("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        .env_remove("HF_TOKEN")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let f = Fetched::new(&hub, "[[model]]\nid = \"acme/tiny\"\n");
    f.fetch(&hub, &[]).ok();
    f.export(&[]).ok();
    let ours: PathBuf = f.hub_cache().join("models--acme--tiny");
    let theirs_repo = theirs.path().join("models--acme--tiny");
    let (a, b) = (describe(&ours), describe(&theirs_repo));
    assert!(
        b.keys().any(|k| k.starts_with("trees/")),
        "huggingface_hub wrote trees/: {b:#?}"
    );
    for (k, v) in &a {
        if k.starts_with("trees/") && b.get(k) != Some(v) {
            let ours = fs::read_to_string(ours.join(k)).unwrap();
            let theirs = fs::read_to_string(theirs_repo.join(k)).unwrap_or_default();
            assert_eq!(ours, theirs, "trees listing differs");
        }
    }
    assert_eq!(a, b, "our export differs from huggingface_hub's own cache");
}
