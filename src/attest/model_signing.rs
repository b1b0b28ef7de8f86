//! OpenSSF model signing (`model_signing`, predicate `https://model_signing/signature/v1.0`):
//! one statement per locked repo over exactly its locked files, each by sha256, so that
//! `model_signing verify` accepts the repo's exported snapshot folder. The facts of the format
//! (checked against `model_signing` 1.1.1, see docs/attestations.md): resources are sorted by
//! path *components*; the subject's digest is the sha256 of the raw 32-byte file digests
//! concatenated in that order; the files `model_signing` never hashes (`.git/`,
//! `.gitattributes`, `.github/`, `.gitignore`) must not be listed, or verification reports them
//! missing.

use serde_json::json;
use sha2::{Digest as _, Sha256};

use super::lazy_json::Json;
use super::statement::{self, Subject};
use crate::lock::{LockedFile, LockedRepo};

/// The predicate type of a model signing statement.
pub const PREDICATE: &str = "https://model_signing/signature/v1.0";

/// Top-level names `model_signing` ignores by default when it hashes a folder.
const IGNORED: [&str; 4] = [".git", ".gitattributes", ".github", ".gitignore"];

/// True for a locked path `model_signing` never hashes.
pub fn ignored(path: &str) -> bool {
    IGNORED.contains(&path.split('/').next().unwrap_or_default())
}

/// The files a statement lists, in `model_signing`'s order (by path components).
pub fn resources(repo: &LockedRepo) -> Vec<&LockedFile> {
    order(repo)
        .into_iter()
        .map(|i| &repo.files[i as usize])
        .collect()
}

/// The indices of [`resources`] in `repo.files` (4 bytes a file: a statement of 100,000 files
/// holds this, not references).
fn order(repo: &LockedRepo) -> Vec<u32> {
    let mut order: Vec<u32> = (0..repo.files.len() as u32)
        .filter(|&i| !ignored(&repo.files[i as usize].path))
        .collect();
    order.sort_by(|&a, &b| {
        let (a, b) = (&repo.files[a as usize].path, &repo.files[b as usize].path);
        a.split('/').cmp(b.split('/'))
    });
    order
}

/// The subject digest over `files` (in order): sha256 of their raw digests concatenated.
pub fn root_digest<'a>(files: impl IntoIterator<Item = &'a str>) -> Option<String> {
    let mut h = Sha256::new();
    for hex_digest in files {
        h.update(hex::decode(hex_digest).ok()?);
    }
    Some(hex::encode(h.finalize()))
}

/// The statement for `repo`: its locked files (lock sha256 values, nothing read from disk),
/// listed while it is written.
pub fn statement(repo: &LockedRepo) -> Json<'_> {
    let order = std::sync::Arc::new(order(repo));
    let root = root_digest(
        order
            .iter()
            .map(|&i| repo.files[i as usize].sha256.as_str()),
    )
    .unwrap_or_default();
    let resources = Json::lazy_array(move || {
        let order = order.clone();
        (0..order.len()).map(move |k| {
            let f = &repo.files[order[k] as usize];
            json!({ "name": f.path, "algorithm": "sha256", "digest": f.sha256 })
        })
    });
    let predicate = Json::object([
        (
            "serialization",
            json!({
                "method": "files",
                "hash_type": "sha256",
                "allow_symlinks": true,
                "ignore_paths": IGNORED,
            })
            .into(),
        ),
        ("resources", resources),
    ]);
    let subject = Subject {
        name: repo.id.as_str().to_owned(),
        sha256: root,
    };
    statement::statement(&[subject], PREDICATE, predicate)
}

/// What a model signing statement says about a repo, compared with the lock: the problems,
/// none when its resources are exactly the locked files (those `model_signing` hashes) with
/// their sha256 and its subject digest is their root.
pub fn check(parsed: &statement::Parsed, repo: &LockedRepo) -> Vec<String> {
    let mut problems = Vec::new();
    let listed: Vec<(String, String)> = parsed.predicate["resources"]
        .as_array()
        .map(|r| {
            r.iter()
                .map(|x| {
                    (
                        x["name"].as_str().unwrap_or_default().to_owned(),
                        x["digest"].as_str().unwrap_or_default().to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let want: Vec<(String, String)> = resources(repo)
        .iter()
        .map(|f| (f.path.clone(), f.sha256.clone()))
        .collect();
    if listed != want {
        let extra = listed.iter().filter(|l| !want.contains(l)).count();
        let missing = want.iter().filter(|w| !listed.contains(w)).count();
        problems.push(format!(
            "its files differ from the lock ({missing} locked file(s) missing or changed, {extra} not locked)"
        ));
    }
    let root = root_digest(listed.iter().map(|(_, d)| d.as_str()));
    if parsed.subjects.len() != 1 || root.as_deref() != Some(parsed.subjects[0].sha256.as_str()) {
        problems.push("its subject digest is not the digest of its files".into());
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, byte: u8) -> LockedFile {
        LockedFile {
            path: path.into(),
            size: 1,
            sha256: hex::encode([byte; 32]),
            blob: "0".repeat(40),
            pointer: None,
            xet_hash: None,
        }
    }

    fn repo(files: Vec<LockedFile>) -> LockedRepo {
        let mut r: LockedRepo = toml::from_str(&format!(
            "kind = \"model\"\nid = \"acme/tiny\"\nrevision = \"main\"\ncommit = \"{}\"\ncomplete = true\ndigest = \"\"\n",
            "c".repeat(40)
        ))
        .unwrap();
        r.files = files;
        r.normalize();
        r
    }

    #[test]
    fn resources_follow_path_components_and_skip_what_model_signing_ignores() {
        let r = repo(vec![
            file("a.b", 1),
            file("a/z", 2),
            file(".gitattributes", 3),
            file("a.txt", 4),
            file(".github/workflow.yml", 5),
        ]);
        let names: Vec<&str> = resources(&r).iter().map(|f| f.path.as_str()).collect();
        assert_eq!(names, vec!["a/z", "a.b", "a.txt"]);
    }

    #[test]
    fn the_subject_is_the_root_of_the_listed_digests_and_check_catches_changes() {
        let r = repo(vec![file("config.json", 1), file("model.safetensors", 2)]);
        let bytes = statement(&r).to_vec();
        let parsed = statement::parse(&bytes).unwrap();
        assert_eq!(parsed.predicate_type, PREDICATE);
        let mut h = Sha256::new();
        h.update([1u8; 32]);
        h.update([2u8; 32]);
        assert_eq!(parsed.subjects[0].sha256, hex::encode(h.finalize()));
        assert!(check(&parsed, &r).is_empty());

        let changed = repo(vec![file("config.json", 1), file("model.safetensors", 9)]);
        let problems = check(&parsed, &changed);
        assert!(problems[0].contains("differ from the lock"), "{problems:?}");
    }
}
