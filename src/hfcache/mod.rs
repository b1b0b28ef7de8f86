//! The huggingface_hub cache layout (hub-protocol.md §3): folder names, symlink targets, refs,
//! `trees/<commit>.json`, and where the cache is. [`export`] writes it, [`verify`] checks it.

pub mod export;
pub mod prune;
pub mod scan;
pub mod verify;

use std::path::{Path, PathBuf};

use crate::env::{expand_home, hf_home};
use crate::lock::LockedRepo;
use crate::repo::{RepoId, RepoKind};

/// `models--org--name`, `datasets--org--name`, `spaces--org--name`.
pub fn repo_folder(kind: RepoKind, id: &RepoId) -> String {
    format!("{}--{}", kind.api_segment(), id.as_str().replace('/', "--"))
}

/// The hub cache as huggingface_hub finds it: `HF_HUB_CACHE`, else the legacy
/// `HUGGINGFACE_HUB_CACHE`, else `$HF_HOME/hub` (`HF_HOME` itself defaulting as the library does).
pub fn default_hub_cache(env: &dyn Fn(&str) -> Option<String>) -> Option<PathBuf> {
    for var in ["HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"] {
        if let Some(v) = env(var).filter(|v| !v.is_empty()) {
            return Some(expand_home(&v, env));
        }
    }
    hf_home(env).map(|h| h.join("hub"))
}

/// Every non-directory entry under `dir`, recursively (symlinks are entries, not followed),
/// sorted: the one walk that scan, prune and verify share.
pub(crate) fn files_under(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for_each_file_under(dir, &mut |p| out.push(p.to_owned()))?;
    out.sort();
    Ok(out)
}

/// Calls `found` with every non-directory entry under `dir`, recursively (symlinks are
/// entries, not followed), in no particular order, without collecting them: a snapshot of
/// 100,000 files costs one path at a time.
pub(crate) fn for_each_file_under(dir: &Path, found: &mut dyn FnMut(&Path)) -> std::io::Result<()> {
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d)? {
            let entry = entry?;
            if entry.file_type()?.is_dir() {
                stack.push(entry.path());
            } else {
                found(&entry.path());
            }
        }
    }
    Ok(())
}

/// True when `path` is a symlink that resolves to a folder: what no walk of the cache enters
/// and no write goes through (huggingface_hub itself never makes one).
pub(crate) fn is_symlinked_dir(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink())
        && std::fs::metadata(path).is_ok_and(|m| m.is_dir())
}

/// The first symlinked folder of the repo folder `repo`: the repo folder itself, one of its
/// top folders, a snapshot, or a folder inside a snapshot or `refs`. Scan leaves such a repo
/// out (so prune never deletes through the link), and prune checks again before it deletes.
pub(crate) fn symlinked_folder(repo: &Path) -> Option<PathBuf> {
    if is_symlinked_dir(repo) {
        return Some(repo.to_owned());
    }
    let top = ["blobs", "refs", "snapshots", "trees", ".no_exist"].map(|sub| repo.join(sub));
    if let Some(link) = top.iter().find(|p| is_symlinked_dir(p)) {
        return Some(link.clone());
    }
    ["refs", "snapshots"]
        .iter()
        .flat_map(|sub| files_under(&repo.join(sub)).unwrap_or_default())
        .find(|p| is_symlinked_dir(p))
}

/// The folders inside a repo folder that `export` writes for `repo`, relative to it, parents
/// before children: `blobs`, `refs` and the folders of a nested ref, `snapshots`, the snapshot
/// and each folder in it that holds a locked file, and `trees`. `verify` reports any of them
/// that is a symlink; `export` replaces it with a real folder.
pub(crate) fn repo_folders(repo: &LockedRepo) -> std::collections::BTreeSet<PathBuf> {
    let snapshot = Path::new("snapshots").join(&repo.commit);
    let refs = Path::new("refs").join(repo.revision.as_str());
    let mut out: std::collections::BTreeSet<PathBuf> =
        ["blobs", "trees"].into_iter().map(PathBuf::from).collect();
    // Each path's folders, deepest first, up to the first one already known (whose own
    // folders were added with it): 100,000 files in 100 folders add 100 folders, not a list
    // of 400,000 paths to sort.
    let mut add = |path: &Path| {
        for folder in path.ancestors().skip(1) {
            if folder.as_os_str().is_empty() || out.contains(folder) {
                break;
            }
            out.insert(folder.to_path_buf());
        }
    };
    for f in &repo.files {
        add(&snapshot.join(&f.path));
    }
    add(&refs);
    out
}

/// The relative target of `snapshots/<commit>/<path>`: one `../` per folder level plus two,
/// then `blobs/<blob>` — exactly what huggingface_hub's `os.path.relpath` produces.
pub fn symlink_target(path: &str, blob: &str) -> String {
    let depth = path.matches('/').count();
    format!("{}blobs/{blob}", "../".repeat(2 + depth))
}

/// `trees/<commit>.json` as huggingface_hub ≥ 1.22 writes it (`json.dump(indent=1)`, files
/// sorted, keys in its order, ASCII-escaped, no trailing newline), for a repo whose lock lists
/// every file.
pub fn trees_json(repo: &LockedRepo) -> String {
    let mut out = Vec::new();
    // Serialising plain structs into memory cannot fail.
    let _ = write_trees_json(repo, &mut out);
    // Only ASCII was written (see `AsciiFormatter`).
    String::from_utf8(out).unwrap_or_default()
}

/// [`trees_json`] written into `out` while it is produced (19 MB at 100,000 files, never
/// held): the only errors are `out`'s.
pub fn write_trees_json(repo: &LockedRepo, out: &mut dyn std::io::Write) -> std::io::Result<()> {
    /// `files`, written straight from the lock: its files are sorted by path, the order a
    /// map keyed by path would give, so no map of 100,000 entries is built first.
    struct Files<'a>(&'a [crate::lock::LockedFile]);
    impl serde::Serialize for Files<'_> {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.collect_map(self.0.iter().map(|f| {
                let entry = match &f.pointer {
                    Some(pointer) => Entry {
                        size: f.size,
                        blob_id: pointer,
                        lfs_sha256: Some(&f.sha256),
                        lfs_size: Some(f.size),
                    },
                    None => Entry {
                        size: f.size,
                        blob_id: &f.blob,
                        lfs_sha256: None,
                        lfs_size: None,
                    },
                };
                (f.path.as_str(), entry)
            }))
        }
    }
    #[derive(serde::Serialize)]
    struct Trees<'a> {
        format_version: u32,
        files: Files<'a>,
    }
    #[derive(serde::Serialize)]
    struct Entry<'a> {
        size: u64,
        blob_id: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        lfs_sha256: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        lfs_size: Option<u64>,
    }
    debug_assert!(repo.files.windows(2).all(|w| w[0].path < w[1].path));
    let mut ser = serde_json::Serializer::with_formatter(
        out,
        AsciiFormatter(serde_json::ser::PrettyFormatter::with_indent(b" ")),
    );
    serde::Serialize::serialize(
        &Trees {
            format_version: 1,
            files: Files(&repo.files),
        },
        &mut ser,
    )
    .map_err(std::io::Error::from)
}

/// Python's `json.dump(..., indent=1)` with its default `ensure_ascii`: the pretty layout of
/// `PrettyFormatter`, with every non-ASCII character in strings written as `\uXXXX` (UTF-16
/// code units).
struct AsciiFormatter<'a>(serde_json::ser::PrettyFormatter<'a>);

impl serde_json::ser::Formatter for AsciiFormatter<'_> {
    fn write_string_fragment<W: ?Sized + std::io::Write>(
        &mut self,
        w: &mut W,
        fragment: &str,
    ) -> std::io::Result<()> {
        let mut units = [0u16; 2];
        let mut start = 0;
        for (i, c) in fragment.char_indices() {
            if !c.is_ascii() {
                w.write_all(&fragment.as_bytes()[start..i])?;
                for u in c.encode_utf16(&mut units) {
                    write!(w, "\\u{u:04x}")?;
                }
                start = i + c.len_utf8();
            }
        }
        w.write_all(&fragment.as_bytes()[start..])
    }
    fn begin_array<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.0.begin_array(w)
    }
    fn end_array<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.0.end_array(w)
    }
    fn begin_array_value<W: ?Sized + std::io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        self.0.begin_array_value(w, first)
    }
    fn end_array_value<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.0.end_array_value(w)
    }
    fn begin_object<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.0.begin_object(w)
    }
    fn end_object<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.0.end_object(w)
    }
    fn begin_object_key<W: ?Sized + std::io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        self.0.begin_object_key(w, first)
    }
    fn begin_object_value<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.0.begin_object_value(w)
    }
    fn end_object_value<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.0.end_object_value(w)
    }
}

/// True when the JSON read from `reader` is the document [`trees_json`] writes for `repo`, as
/// JSON values (key order and spacing aside), checked while it is read: each entry of
/// `files` is compared with the locked file of that path (found by binary search, the files
/// being sorted) and dropped, so a 100,000-file listing is never held as values. A file that is
/// not JSON, or names a path twice, does not match.
pub(crate) fn trees_json_matches(reader: impl std::io::Read, repo: &LockedRepo) -> bool {
    use serde::de::{DeserializeSeed, Deserializer as _, IgnoredAny, MapAccess, Visitor};
    use serde_json::{Value, json};

    struct Top<'r>(&'r LockedRepo);
    struct Files<'r>(&'r LockedRepo);

    impl<'de> Visitor<'de> for Top<'_> {
        type Value = bool;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a trees listing")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
            let (mut version, mut files, mut other) = (None, None, false);
            while let Some(key) = map.next_key::<String>()? {
                match key.as_str() {
                    "format_version" if version.is_none() => {
                        version = Some(map.next_value::<Value>()? == json!(1));
                    }
                    "files" if files.is_none() => {
                        files = Some(map.next_value_seed(Files(self.0))?);
                    }
                    _ => {
                        map.next_value::<IgnoredAny>()?;
                        other = true;
                    }
                }
            }
            Ok(version == Some(true) && files == Some(true) && !other)
        }
    }

    impl<'de> DeserializeSeed<'de> for Files<'_> {
        type Value = bool;
        fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
            d.deserialize_map(self)
        }
    }

    impl<'de> Visitor<'de> for Files<'_> {
        type Value = bool;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("the files of a trees listing")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
            let files = &self.0.files;
            let mut seen = vec![false; files.len()];
            let mut ok = true;
            while let Some(path) = map.next_key::<String>()? {
                let Ok(i) = files.binary_search_by(|f| f.path.as_str().cmp(&path)) else {
                    map.next_value::<IgnoredAny>()?;
                    ok = false;
                    continue;
                };
                let f = &files[i];
                let want = match &f.pointer {
                    Some(pointer) => json!({
                        "size": f.size, "blob_id": pointer,
                        "lfs_sha256": f.sha256, "lfs_size": f.size,
                    }),
                    None => json!({ "size": f.size, "blob_id": f.blob }),
                };
                let value = map.next_value::<Value>()?;
                let twice = std::mem::replace(&mut seen[i], true);
                ok &= !twice && value == want;
            }
            Ok(ok && seen.iter().all(|&s| s))
        }
    }

    let mut de = serde_json::Deserializer::from_reader(reader);
    de.deserialize_map(Top(repo))
        .is_ok_and(|same| same && de.end().is_ok())
}

/// Python's `ensure_ascii`: every non-ASCII character as `\uXXXX` (UTF-16 code units); the
/// reference [`AsciiFormatter`] is tested against.
#[cfg(test)]
fn ascii_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            let mut units = [0u16; 2];
            for u in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{u:04x}"));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::env_of;

    #[test]
    fn trees_listings_are_compared_as_json_values_while_read() {
        let lock = crate::lock::tests::sample();
        let repo = &lock.repos[0];
        let text = trees_json(repo);
        assert!(trees_json_matches(text.as_bytes(), repo));
        let compact: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert!(trees_json_matches(compact.to_string().as_bytes(), repo));
        let first = &repo.files[0].path;
        for bad in [
            text.replacen("\"format_version\": 1", "\"format_version\": 2", 1),
            text.replacen("{", "{\"extra\": 0, ", 1),
            text.replacen(&format!("\"{first}\""), "\"other\"", 1),
            text.replacen("\"size\": ", "\"size\": 1", 1),
            text.replacen(
                "\"files\": {",
                &format!("\"files\": {{\"{first}\": {{}}, "),
                1,
            ),
            text[..text.len() - 2].to_owned(),
            format!("{text} x"),
        ] {
            assert!(!trees_json_matches(bad.as_bytes(), repo), "{bad}");
        }
    }

    #[test]
    fn folder_names_and_targets() {
        let id = RepoId::parse("google/gemma-2b").unwrap();
        assert_eq!(
            repo_folder(RepoKind::Model, &id),
            "models--google--gemma-2b"
        );
        assert_eq!(
            repo_folder(RepoKind::Dataset, &RepoId::parse("gpt2").unwrap()),
            "datasets--gpt2"
        );
        assert_eq!(symlink_target("config.json", "abc"), "../../blobs/abc");
        assert_eq!(
            symlink_target("sub/dir/nested.txt", "abc"),
            "../../../../blobs/abc"
        );
    }

    #[test]
    fn hub_cache_location() {
        assert_eq!(
            default_hub_cache(&env_of(&[("HF_HUB_CACHE", "/c"), ("HF_HOME", "/h")])),
            Some("/c".into())
        );
        assert_eq!(
            default_hub_cache(&env_of(&[("HF_HOME", "/h")])),
            Some("/h/hub".into())
        );
        assert_eq!(
            default_hub_cache(&env_of(&[("HOME", "/u")])),
            Some("/u/.cache/huggingface/hub".into())
        );
    }

    #[test]
    fn escapes_like_python() {
        assert_eq!(ascii_escape("é😀"), "\\u00e9\\ud83d\\ude00");
        let mut lock = crate::lock::tests::sample();
        lock.repos[0].files[0].path = "données/é😀x\"y.json".into();
        lock.repos[0].normalize();
        let repo = &lock.repos[0];
        let text = trees_json(repo);
        assert!(
            text.contains("donn\\u00e9es/\\u00e9\\ud83d\\ude00x\\\"y.json"),
            "{text}"
        );
        assert!(text.is_ascii());
        assert!(trees_json_matches(text.as_bytes(), repo));
    }
}
