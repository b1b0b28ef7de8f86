//! Fuzzing what the Hub answers (issue #14): tree and revision JSON, error bodies and the
//! `Link` header of tree pagination. Arbitrary and mutated answers never panic, what passes
//! the checks `lock` applies is a safe relative path with well-formed ids, and a well-formed
//! `Link` header gives back exactly the `next` target it was generated with. Run length and
//! seed: see `crate::test_support::fuzz`.

use proptest::prelude::*;

use super::api::{RevisionInfo, TreeEntry, next_link};
use super::error_message;
use crate::hash::is_lower_hex;
use crate::repo::{check_repo_path, check_tree_paths, is_commit_hash};
use crate::test_support::fuzz::{config, json_value, mutated};

/// Keys and values of Hub answers, so generated JSON often has the right shape.
const KEYS: &[&str] = &[
    "type",
    "oid",
    "size",
    "path",
    "lfs",
    "pointerSize",
    "xetHash",
    "sha",
    "file",
    "directory",
    "error",
    "errors",
    "message",
    "../x",
    "a/b",
    "",
];

/// A real tree page: a folder, a regular file and an LFS file.
const TREE: &str = r#"[{"type":"directory","oid":"4b825dc642cb6eb9a060e54bf8d69288fbee4904","size":0,"path":"sub"},{"type":"file","oid":"9bc3f7f9a2a4e0d5f2f2e6d8a6b2c9d1e0f1a2b3","size":5,"path":"sub/config.json"},{"type":"file","oid":"1111111111111111111111111111111111111111","size":1234,"path":"model.safetensors","lfs":{"oid":"665939e0da5aa211ec9832ffe5dcba176d1bbac8a95c899c270ec29082853c51","size":1234,"pointerSize":134},"xetHash":"dd"}]"#;
/// A real revision answer.
const REVISION: &str = r#"{"_id":"x","id":"acme/tiny","sha":"0123456789abcdef0123456789abcdef01234567","siblings":[{"rfilename":"config.json"}],"private":false}"#;
/// Tokens of JSON answers, inserted by the mutator.
const DICT: &[&str] = &[
    "{",
    "}",
    "[",
    "]",
    ":",
    ",",
    "\"",
    "\"path\":\"../../etc/passwd\"",
    "\"size\":-1",
    "\"size\":1e99",
    "\"lfs\":null",
    "\"type\":\"file\"",
    "\\u0000",
    "\\ud800",
    "\\\"",
];

/// Runs the checks `lock` applies to a listed file (path, git oid, LFS oid); what passes is a
/// plain relative path with well-formed ids.
fn check_listed(entry: &TreeEntry) -> Result<(), TestCaseError> {
    let _ = entry.is_file();
    if check_repo_path(&entry.path).is_err() {
        return Ok(());
    }
    let p = entry.path.as_str();
    prop_assert!(
        !p.starts_with('/') && !p.contains('\\') && !p.contains('\0'),
        "{:?}",
        p
    );
    prop_assert!(
        p.split('/').all(|s| !s.is_empty() && s != "." && s != ".."),
        "{:?}",
        p
    );
    let ids_ok = match &entry.lfs {
        Some(lfs) => is_lower_hex(&lfs.oid, 64) && is_lower_hex(&entry.oid, 40),
        None => is_lower_hex(&entry.oid, 40),
    };
    if ids_ok {
        prop_assert!(entry.oid.bytes().all(|b| b.is_ascii_hexdigit()));
    }
    Ok(())
}

/// Decodes `bytes` as every kind of Hub answer; none may panic.
fn decode_all(bytes: &[u8]) -> Result<(), TestCaseError> {
    if let Ok(page) = serde_json::from_slice::<Vec<TreeEntry>>(bytes) {
        for entry in &page {
            check_listed(entry)?;
        }
        let files = page.iter().filter(|e| e.is_file()).map(|e| e.path.as_str());
        let _ = check_tree_paths(files);
    }
    if let Ok(info) = serde_json::from_slice::<RevisionInfo>(bytes)
        && let Some(sha) = info.sha.filter(|s| is_commit_hash(s))
    {
        prop_assert!(is_lower_hex(&sha, 40));
    }
    if let Some(msg) = error_message(&String::from_utf8_lossy(bytes)) {
        prop_assert!(msg.chars().count() <= 300);
    }
    Ok(())
}

/// One link-value of a well-formed `Link` header: target, relation types, other parameters.
#[derive(Debug, Clone)]
struct LinkValue {
    target: String,
    rels: Vec<String>,
    params: Vec<(String, String)>,
    quoted_rel: bool,
    rel_at: prop::sample::Index,
}

impl LinkValue {
    fn is_next(&self) -> bool {
        self.rels.iter().any(|r| r.eq_ignore_ascii_case("next"))
    }

    fn render(&self) -> String {
        let rel = self.rels.join(" ");
        let rel = if self.quoted_rel || self.rels.len() != 1 {
            format!("\"{rel}\"")
        } else {
            rel
        };
        let mut params: Vec<String> = self
            .params
            .iter()
            .map(|(k, v)| format!("{k}=\"{v}\""))
            .collect();
        params.insert(self.rel_at.index(params.len() + 1), format!("rel={rel}"));
        format!("<{}>; {}", self.target, params.join("; "))
    }
}

fn link_value() -> impl Strategy<Value = LinkValue> {
    // A URI reference (RFC 3986 characters, so `,` `;` `=` `'` included), relation types
    // (case varies), and quoted parameters that may hold `,` `;` and `<`.
    let target = r"https?://[a-z0-9.]{1,10}(:[0-9]{1,5})?/[A-Za-z0-9._~:/?#@!$&'()*+,;=%-]{0,30}";
    let rel = prop::sample::select(vec!["next", "NEXT", "Next", "prev", "last", "first"]);
    (
        target,
        prop::collection::vec(rel, 1..3),
        prop::collection::vec(("(title|type|anchor)", r"[a-zA-Z0-9 ,;<>=/.]{0,12}"), 0..3),
        any::<bool>(),
        any::<prop::sample::Index>(),
    )
        .prop_map(|(target, rels, params, quoted_rel, rel_at)| LinkValue {
            target,
            rels: rels.into_iter().map(str::to_owned).collect(),
            params,
            quoted_rel,
            rel_at,
        })
}

proptest! {
    #![proptest_config(config(1))]

    /// Any JSON value (shaped like the Hub's answers): no panic, checks hold.
    #[test]
    fn arbitrary_json_answers_never_panic(v in json_value(KEYS)) {
        decode_all(&serde_json::to_vec(&v).unwrap_or_default())?;
    }

    /// Near-valid tree pages and revision answers: no panic, checks hold.
    #[test]
    fn mutated_answers_never_panic(
        bytes in prop_oneof![
            mutated(TREE.as_bytes().to_vec(), DICT),
            mutated(REVISION.as_bytes().to_vec(), DICT),
        ]
    ) {
        decode_all(&bytes)?;
    }

    /// Any bytes at all.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        decode_all(&bytes)?;
    }

    /// Any `Link` header text: no panic; a target found was between `<` and `>`.
    #[test]
    fn arbitrary_link_headers_never_panic(h in ".{0,120}") {
        if let Some(t) = next_link(&h) {
            let bracketed = format!("<{t}>");
            prop_assert!(h.contains(&bracketed), "{:?} from {:?}", t, h);
        }
    }

    /// A well-formed `Link` header (RFC 8288) gives back the target of its first `next`
    /// link-value, and nothing when it has none.
    #[test]
    fn well_formed_link_headers_give_back_the_next_target(
        values in prop::collection::vec(link_value(), 0..4),
        sep in prop::sample::select(vec![", ", ",", " , ", ",\t"]),
    ) {
        let header = values.iter().map(LinkValue::render).collect::<Vec<_>>().join(sep);
        let want = values.iter().find(|v| v.is_next()).map(|v| v.target.clone());
        prop_assert_eq!(next_link(&header), want, "header: {}", header);
    }
}
