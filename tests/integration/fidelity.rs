//! The emulator is only useful if it behaves like the Hub. This runs the real Python
//! `huggingface_hub` (latest 2.x, venv under `target/pyenv`) against it: `snapshot_download`
//! of a branch, a pull request, a dataset and a gated repo must give byte-identical files, and
//! its typed errors must come out of our `X-Error-Code` headers.

use std::process::Command;

use hub_emulator::{Host, HubEmulator, Kind, Repo};

use crate::support::{dataset_repo, python, tiny_files, tiny_repo};

const SCRIPT: &str = r#"
import hashlib, json, os, sys
import huggingface_hub as hh
from huggingface_hub import snapshot_download, hf_hub_download
from huggingface_hub.errors import EntryNotFoundError, RevisionNotFoundError, RepositoryNotFoundError

def digest_tree(root):
    out = {}
    for dirpath, _, names in os.walk(root):
        for n in names:
            p = os.path.join(dirpath, n)
            with open(p, "rb") as f:
                out[os.path.relpath(p, root).replace(os.sep, "/")] = hashlib.sha256(f.read()).hexdigest()
    return out

result = {"version": hh.__version__, "snapshots": {}, "errors": {}}
for key, repo_id, repo_type, revision, token in json.loads(sys.argv[1]):
    path = snapshot_download(repo_id, repo_type=repo_type, revision=revision, token=token)
    result["snapshots"][key] = {"commit": os.path.basename(path), "files": digest_tree(path)}

def error_of(fn):
    try:
        fn()
        return "no error"
    except Exception as e:
        return type(e).__name__ + (" (EntryNotFoundError)" if isinstance(e, EntryNotFoundError) else "") \
            + (" (RevisionNotFoundError)" if isinstance(e, RevisionNotFoundError) else "") \
            + (" (RepositoryNotFoundError)" if isinstance(e, RepositoryNotFoundError) else "")

result["errors"]["missing_file"] = error_of(lambda: hf_hub_download("acme/tiny", "missing.json"))
result["errors"]["missing_revision"] = error_of(lambda: hf_hub_download("acme/tiny", "config.json", revision="v9"))
result["errors"]["missing_repo"] = error_of(lambda: hf_hub_download("acme/nope", "config.json"))
result["errors"]["gated_without_token"] = error_of(lambda: hf_hub_download("acme/gated", "config.json", token=False, cache_dir=os.path.join(os.environ["HF_HOME"], "empty-cache")))
print(json.dumps(result))
"#;

#[test]
fn python_huggingface_hub_downloads_byte_identical_files_from_the_emulator() {
    let Some(py) = python() else { return };
    let token = "hf_fidelity";
    let hub = HubEmulator::builder()
        .repo(tiny_repo())
        .repo(dataset_repo())
        .repo(
            Repo::model("acme/gated")
                .gated(&[token])
                .commit("main", tiny_files()),
        )
        .page_size(3)
        .start()
        .unwrap();
    let cases = serde_json::json!([
        ["main", "acme/tiny", "model", "main", null],
        ["pr", "acme/tiny", "model", "refs/pr/1", null],
        ["tag", "acme/tiny", "model", "v1.0", null],
        ["data", "acme/data", "dataset", "main", null],
        ["gated", "acme/gated", "model", "main", token],
    ]);
    let home = tempfile::tempdir().unwrap();
    let out = Command::new(&py)
        .args(["-c", SCRIPT, &cases.to_string()])
        .env("HF_ENDPOINT", hub.endpoint())
        .env("HF_HOME", home.path())
        .env_remove("HF_TOKEN")
        .env("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        .output()
        .expect("run python");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "python failed:\n{stderr}");
    let result: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {stderr}"));
    assert!(
        result["version"].as_str().unwrap().starts_with("2."),
        "{result}"
    );

    for (key, kind, id, rev) in [
        ("main", Kind::Model, "acme/tiny", "main"),
        ("pr", Kind::Model, "acme/tiny", "refs/pr/1"),
        ("tag", Kind::Model, "acme/tiny", "v1.0"),
        ("data", Kind::Dataset, "acme/data", "main"),
        ("gated", Kind::Model, "acme/gated", "main"),
    ] {
        let snap = &result["snapshots"][key];
        assert_eq!(
            snap["commit"].as_str(),
            hub.commit_of(kind, id, rev).as_deref(),
            "{key}"
        );
        let got = snap["files"].as_object().unwrap();
        let stored = hub.files_at(kind, id, rev);
        assert_eq!(got.len(), stored.len(), "{key}: {got:?}");
        for f in stored {
            assert_eq!(
                got[&f.path].as_str(),
                Some(f.sha256.as_str()),
                "{key}: {} differs",
                f.path
            );
        }
    }

    let errors = &result["errors"];
    assert!(
        errors["missing_file"]
            .as_str()
            .unwrap()
            .contains("(EntryNotFoundError)"),
        "{errors}"
    );
    assert!(
        errors["missing_revision"]
            .as_str()
            .unwrap()
            .contains("(RevisionNotFoundError)"),
        "{errors}"
    );
    assert!(
        errors["missing_repo"]
            .as_str()
            .unwrap()
            .contains("(RepositoryNotFoundError)"),
        "{errors}"
    );
    assert!(
        errors["gated_without_token"]
            .as_str()
            .unwrap()
            .contains("GatedRepoError"),
        "{errors}"
    );

    let requests = hub.requests();
    let cdn: Vec<_> = requests.iter().filter(|r| r.host == Host::Cdn).collect();
    assert!(
        !cdn.is_empty(),
        "LFS files must come through the CDN redirect"
    );
    assert!(
        cdn.iter().all(|r| r.authorization.is_none()),
        "the real client sends no token to the CDN either"
    );
    assert!(
        requests
            .iter()
            .any(|r| r.path.contains("/tree/")
                && r.query.as_deref().unwrap_or("").contains("cursor=")),
        "pagination was exercised"
    );
    assert!(
        requests
            .iter()
            .any(|r| r.path.starts_with("/api/resolve-cache/")),
        "the relative 307 was followed"
    );

    // The cache the real client built names the same commit in refs/ as the emulator.
    let refs_main = home.path().join("hub/models--acme--tiny/refs/main");
    assert_eq!(
        std::fs::read_to_string(refs_main).unwrap(),
        hub.commit_of(Kind::Model, "acme/tiny", "main").unwrap()
    );
}
