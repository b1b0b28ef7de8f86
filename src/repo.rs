//! Repository identity on the Hub: its kind (model, dataset, space), its validated id and a
//! validated revision. Shared by the manifest, the lock and the Hub client so that an id that
//! got past parsing is always safe to put in a URL or a cache folder name.

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// What kind of Hub repository a [`RepoId`] names; each kind has its own URL prefix and cache
/// folder prefix.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum RepoKind {
    /// A dataset repository (`/datasets/<id>` on the Hub).
    Dataset,
    /// A model repository (the default kind on the Hub, no URL prefix).
    Model,
    /// A Space repository (`/spaces/<id>` on the Hub).
    Space,
}

impl RepoKind {
    /// The singular name used in manifests, locks and messages (`model`).
    pub fn as_str(self) -> &'static str {
        match self {
            RepoKind::Dataset => "dataset",
            RepoKind::Model => "model",
            RepoKind::Space => "space",
        }
    }

    /// The plural path segment of the Hub API (`/api/models/...`).
    pub fn api_segment(self) -> &'static str {
        match self {
            RepoKind::Dataset => "datasets",
            RepoKind::Model => "models",
            RepoKind::Space => "spaces",
        }
    }

    /// The prefix of file URLs (`/datasets/<id>/resolve/...`); models have none.
    pub fn url_prefix(self) -> &'static str {
        match self {
            RepoKind::Dataset => "datasets/",
            RepoKind::Model => "",
            RepoKind::Space => "spaces/",
        }
    }

    /// The kind a plural segment names (`models`, `datasets`, `spaces`): the Hub API's path
    /// segment and the prefix of cache folder names, the inverse of [`RepoKind::api_segment`].
    /// `None` for anything else (including `kernels`, which caches hold but locks do not know).
    pub fn from_segment(segment: &str) -> Option<Self> {
        [RepoKind::Dataset, RepoKind::Model, RepoKind::Space]
            .into_iter()
            .find(|k| k.api_segment() == segment)
    }

    /// The kind a singular name names (`model`, `dataset`, `space`), the inverse of
    /// [`RepoKind::as_str`].
    pub fn from_name(name: &str) -> Option<Self> {
        [RepoKind::Dataset, RepoKind::Model, RepoKind::Space]
            .into_iter()
            .find(|k| k.as_str() == name)
    }
}

impl fmt::Display for RepoKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A repository id (`name` or `namespace/name`) checked with huggingface_hub's rules, so it
/// can go verbatim into URLs and into `models--<ns>--<name>` cache folder names.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(try_from = "String", into = "String")]
pub struct RepoId(String);

/// The longest name part huggingface_hub accepts.
const MAX_NAME_LEN: usize = 96;

/// What a valid repo id looks like, ending every message about a malformed one.
const EXPECTED_ID: &str = "expected `name` or `namespace/name` made of letters, digits, `-`, `_` \
                           and `.`, starting and ending with a letter or digit";

/// Why [`RepoId::parse`] refused an id: typed so callers can match on the problem, with a
/// message that says what was wrong and what is expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RepoIdError {
    /// Nothing was written.
    #[error("the repo id is empty; {}", EXPECTED_ID)]
    Empty,
    /// `a/b/c`: ids have at most a namespace and a name.
    #[error("invalid repo id `{id}`: more than one `/`; {}", EXPECTED_ID)]
    TooManyParts {
        /// The id as written.
        id: String,
    },
    /// `org/` or `/name`.
    #[error("invalid repo id `{id}`: empty part; {}", EXPECTED_ID)]
    EmptyPart {
        /// The id as written.
        id: String,
    },
    /// A character outside letters, digits, `-`, `_` and `.`.
    #[error(
        "invalid repo id `{id}`: character {bad:?} is not allowed; {}",
        EXPECTED_ID
    )]
    BadCharacter {
        /// The id as written.
        id: String,
        /// The first character that is not allowed.
        bad: char,
    },
    /// A part that starts or ends with `-` or `.`.
    #[error("invalid repo id `{id}`: `{part}` must start and end with a letter, digit or `_`")]
    BadEdge {
        /// The id as written.
        id: String,
        /// The offending part.
        part: String,
    },
    /// A name longer than huggingface_hub accepts.
    #[error(
        "invalid repo id `{id}`: the name is {len} characters long, at most {} are allowed",
        MAX_NAME_LEN
    )]
    TooLong {
        /// The id as written.
        id: String,
        /// The name's length.
        len: usize,
    },
    /// `--` or `..`, which would be ambiguous in cache folder names.
    #[error("invalid repo id `{id}`: `--` and `..` are not allowed in repo ids")]
    DoubledSeparator {
        /// The id as written.
        id: String,
    },
    /// A git remote's `.git` suffix.
    #[error("invalid repo id `{id}`: drop the `.git` suffix")]
    GitSuffix {
        /// The id as written.
        id: String,
    },
}

impl RepoId {
    /// Validates `id` (see the type's docs); the error says what was wrong and what is expected.
    pub fn parse(id: &str) -> Result<Self, RepoIdError> {
        if id.is_empty() {
            return Err(RepoIdError::Empty);
        }
        let owned = || id.to_owned();
        let parts: Vec<&str> = id.split('/').collect();
        if parts.len() > 2 {
            return Err(RepoIdError::TooManyParts { id: owned() });
        }
        for part in &parts {
            if part.is_empty() {
                return Err(RepoIdError::EmptyPart { id: owned() });
            }
            if let Some(bad) = part
                .chars()
                .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
            {
                return Err(RepoIdError::BadCharacter { id: owned(), bad });
            }
            let is_word = |c: char| c.is_ascii_alphanumeric() || c == '_';
            let first = part.chars().next().unwrap_or('-');
            let last = part.chars().last().unwrap_or('-');
            if !is_word(first) || !is_word(last) {
                return Err(RepoIdError::BadEdge {
                    id: owned(),
                    part: (*part).to_owned(),
                });
            }
        }
        let name = parts[parts.len() - 1];
        if name.len() > MAX_NAME_LEN {
            return Err(RepoIdError::TooLong {
                id: owned(),
                len: name.len(),
            });
        }
        if id.contains("--") || id.contains("..") {
            return Err(RepoIdError::DoubledSeparator { id: owned() });
        }
        if id.ends_with(".git") {
            return Err(RepoIdError::GitSuffix { id: owned() });
        }
        Ok(RepoId(id.to_owned()))
    }

    /// The id as written (`org/name`).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for RepoId {
    type Error = RepoIdError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        RepoId::parse(&value)
    }
}

impl From<RepoId> for String {
    fn from(value: RepoId) -> Self {
        value.0
    }
}

impl fmt::Display for RepoId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A repository's identity: its kind and its id. What locks, the mirror and the layer cache
/// index repos by, and the one place that builds the two ways modelbake names a repo: the
/// message label (`model `acme/tiny``, its `Display`) and the kind-qualified id
/// (`model/acme/tiny`, [`RepoKey::qualified`]).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct RepoKey {
    /// Model, dataset or space.
    pub kind: RepoKind,
    /// The repo id.
    pub id: RepoId,
}

impl RepoKey {
    /// The key of the `kind` repo `id`.
    pub fn new(kind: RepoKind, id: RepoId) -> Self {
        RepoKey { kind, id }
    }

    /// `model `acme/tiny``: how messages name a repo (the same as `Display`).
    pub fn label(&self) -> String {
        self.to_string()
    }

    /// `model/acme/tiny`: the kind-qualified id that layer-cache records, prune plans and
    /// pattern matching use (see [`qualified_name`]).
    pub fn qualified(&self) -> String {
        qualified_name(self.kind.as_str(), self.id.as_str())
    }
}

/// `model `acme/tiny``.
impl fmt::Display for RepoKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} `{}`", self.kind, self.id)
    }
}

/// `<kind>/<id>`, the form of [`RepoKey::qualified`], for repos known only as text: a cache
/// folder may hold kinds no lock knows (`kernel`) and ids that were never validated.
pub fn qualified_name(kind: &str, id: &str) -> String {
    format!("{kind}/{id}")
}

/// A revision as a person wrote it: a branch, a tag, `refs/pr/N` or a full 40-hex commit.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(try_from = "String", into = "String")]
pub struct Revision(String);

/// Why [`Revision::parse`] refused a revision, with a message that says what to write.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RevisionError {
    /// Nothing was written.
    #[error("the revision is empty; expected a branch, tag, `refs/pr/N` or a 40-hex commit")]
    Empty,
    /// Whitespace or a control character.
    #[error("invalid revision `{}`: character {bad:?} is not allowed", .rev.escape_debug())]
    BadCharacter {
        /// The revision as written.
        rev: String,
        /// The first character that is not allowed.
        bad: char,
    },
    /// A 40-hex commit with upper-case letters (the Hub and the cache spell them lowercase).
    #[error("invalid revision `{rev}`: write commit ids in lowercase (`{}`)", .rev.to_ascii_lowercase())]
    UppercaseCommit {
        /// The revision as written.
        rev: String,
    },
    /// A leading or trailing `/`, or an empty, `.` or `..` part.
    #[error(
        "invalid revision `{rev}`: it must not start or end with `/` or contain empty, `.` or `..` parts"
    )]
    BadParts {
        /// The revision as written.
        rev: String,
    },
}

impl Revision {
    /// Validates a revision: non-empty, no whitespace or control characters, and a 40-hex
    /// commit must be lowercase (that is how the Hub and the cache spell commits).
    pub fn parse(rev: &str) -> Result<Self, RevisionError> {
        if rev.is_empty() {
            return Err(RevisionError::Empty);
        }
        if let Some(bad) = rev.chars().find(|c| c.is_whitespace() || c.is_control()) {
            return Err(RevisionError::BadCharacter {
                rev: rev.to_owned(),
                bad,
            });
        }
        if rev.len() == 40
            && rev.chars().all(|c| c.is_ascii_hexdigit())
            && rev != rev.to_ascii_lowercase()
        {
            return Err(RevisionError::UppercaseCommit {
                rev: rev.to_owned(),
            });
        }
        if rev.starts_with('/')
            || rev.ends_with('/')
            || rev.contains("//")
            || rev.split('/').any(|s| s == ".." || s == ".")
        {
            return Err(RevisionError::BadParts {
                rev: rev.to_owned(),
            });
        }
        Ok(Revision(rev.to_owned()))
    }

    /// The branch that a manifest entry without `revision` follows.
    pub fn main() -> Self {
        Revision("main".to_owned())
    }

    /// The revision as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// True when the revision is a full commit, which needs no call to resolve.
    pub fn is_commit(&self) -> bool {
        is_commit_hash(&self.0)
    }
}

/// True for a full, lowercase 40-hex git commit id.
pub fn is_commit_hash(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

impl TryFrom<String> for Revision {
    type Error = RevisionError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Revision::parse(&value)
    }
}

impl From<Revision> for String {
    fn from(value: Revision) -> Self {
        value.0
    }
}

impl fmt::Display for Revision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The longest file or folder name most filesystems accept (ext4, XFS, APFS: 255 bytes).
pub const MAX_NAME_BYTES: usize = 255;
/// The longest path Linux accepts (`PATH_MAX`); a snapshot path must fit below the cache.
pub const MAX_PATH_BYTES: usize = 4096;

/// Why [`check_repo_path`] refused a path. Messages show the path with control characters
/// escaped, so a hostile name cannot drive the terminal.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RepoPathError {
    /// The path is empty.
    #[error("empty path")]
    Empty,
    /// A backslash or a control character.
    #[error("path `{}` contains a backslash or control characters", crate::ui::clean(.path))]
    BadCharacters {
        /// The path as received.
        path: String,
    },
    /// A leading `/`, or an empty, `.` or `..` segment.
    #[error(
        "path `{}` is absolute or has empty, `.` or `..` segments",
        crate::ui::clean(.path)
    )]
    BadSegments {
        /// The path as received.
        path: String,
    },
    /// Longer than `PATH_MAX`.
    #[error(
        "path `{}` is {} bytes long; filesystems hold at most {}",
        crate::ui::clean(.path),
        .path.len(),
        MAX_PATH_BYTES
    )]
    TooLong {
        /// The path as received.
        path: String,
    },
    /// One name longer than a filesystem holds.
    #[error(
        "path `{}` has a name of {name_len} bytes; filesystems hold at most {}",
        crate::ui::clean(.path),
        MAX_NAME_BYTES
    )]
    NameTooLong {
        /// The path as received.
        path: String,
        /// The length of the longest name, in bytes.
        name_len: usize,
    },
}

/// Checks that a path that came from the network is a plain relative path inside its repo:
/// no empty, `.` or `..` segments, no leading `/`, no backslash, no control characters (they
/// would reach the terminal), and names and length a filesystem can hold (DESIGN invariant 4).
/// Messages show the path escaped.
pub fn check_repo_path(path: &str) -> Result<(), RepoPathError> {
    let owned = || path.to_owned();
    if path.is_empty() {
        return Err(RepoPathError::Empty);
    }
    if path.contains('\\') || path.chars().any(char::is_control) {
        return Err(RepoPathError::BadCharacters { path: owned() });
    }
    if path
        .split('/')
        .any(|seg| seg.is_empty() || seg == "." || seg == "..")
    {
        return Err(RepoPathError::BadSegments { path: owned() });
    }
    if path.len() > MAX_PATH_BYTES {
        return Err(RepoPathError::TooLong { path: owned() });
    }
    if let Some(long) = path.split('/').find(|seg| seg.len() > MAX_NAME_BYTES) {
        return Err(RepoPathError::NameTooLong {
            path: owned(),
            name_len: long.len(),
        });
    }
    Ok(())
}

/// Why [`check_tree_paths`] refused a set of paths: they cannot all exist on one filesystem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TreePathError {
    /// The same path twice.
    #[error("`{path}` is listed twice")]
    Duplicate {
        /// The repeated path.
        path: String,
    },
    /// A file that is also the folder of another file.
    #[error(
        "`{folder}` is listed both as a file and as the folder of `{path}`; no filesystem can hold both"
    )]
    FileIsFolder {
        /// The path listed as a file.
        folder: String,
        /// The file inside it.
        path: String,
    },
}

/// Checks that a set of file paths (each already passed [`check_repo_path`]) can be laid out
/// on disk: no path listed twice, and no file that is also the folder of another file (`a`
/// and `a/b`), which no filesystem (and no git tree) can hold.
pub fn check_tree_paths<'a>(paths: impl IntoIterator<Item = &'a str>) -> Result<(), TreePathError> {
    let paths: Vec<&str> = paths.into_iter().collect();
    let mut files = std::collections::HashSet::with_capacity(paths.len());
    for path in &paths {
        if !files.insert(*path) {
            return Err(TreePathError::Duplicate {
                path: (*path).to_owned(),
            });
        }
    }
    for path in &paths {
        let mut folders = path.match_indices('/').map(|(at, _)| &path[..at]);
        if let Some(folder) = folders.find(|f| files.contains(f)) {
            return Err(TreePathError::FileIsFolder {
                folder: folder.to_owned(),
                path: (*path).to_owned(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_hub_style_ids() {
        for id in [
            "gpt2",
            "bert-base-uncased",
            "google/gemma-2b",
            "sentence-transformers/all-MiniLM-L6-v2",
            "a_b/c.d",
        ] {
            assert!(RepoId::parse(id).is_ok(), "{id}");
        }
    }

    #[test]
    fn rejects_bad_ids_with_a_reason() {
        let cases = [
            ("", "empty"),
            ("a/b/c", "more than one"),
            ("org/na me", "' '"),
            ("-org/name", "must start and end"),
            ("org/name-", "must start and end"),
            ("org--x/name", "`--`"),
            ("org/a..b", "`..`"),
            ("org/name.git", ".git"),
            ("org/", "empty part"),
        ];
        for (id, needle) in cases {
            let err = RepoId::parse(id).unwrap_err().to_string();
            assert!(err.contains(needle), "{id}: {err}");
        }
        let long = format!("org/{}", "a".repeat(97));
        assert!(
            RepoId::parse(&long)
                .unwrap_err()
                .to_string()
                .contains("at most 96")
        );
    }

    #[test]
    fn kinds_parse_from_their_names_and_segments() {
        for kind in [RepoKind::Dataset, RepoKind::Model, RepoKind::Space] {
            assert_eq!(RepoKind::from_segment(kind.api_segment()), Some(kind));
            assert_eq!(RepoKind::from_name(kind.as_str()), Some(kind));
        }
        assert_eq!(RepoKind::from_segment("kernels"), None);
        assert_eq!(RepoKind::from_segment("model"), None);
        assert_eq!(RepoKind::from_name("models"), None);
    }

    #[test]
    fn key_display_forms() {
        let key = RepoKey::new(RepoKind::Model, RepoId::parse("acme/tiny").unwrap());
        assert_eq!(key.label(), "model `acme/tiny`");
        assert_eq!(key.to_string(), "model `acme/tiny`");
        assert_eq!(key.qualified(), "model/acme/tiny");
        assert_eq!(qualified_name("kernel", "a/b"), "kernel/a/b");
    }

    #[test]
    fn revisions() {
        assert!(Revision::parse("refs/pr/1").is_ok());
        assert!(Revision::parse("v1.0").is_ok());
        let commit = "0123456789abcdef0123456789abcdef01234567";
        assert!(Revision::parse(commit).unwrap().is_commit());
        assert!(!Revision::parse("main").unwrap().is_commit());
        assert!(
            Revision::parse(&commit.to_uppercase())
                .unwrap_err()
                .to_string()
                .contains("lowercase")
        );
        assert!(Revision::parse("a b").is_err());
        assert!(Revision::parse("").is_err());
        assert!(Revision::parse("refs/../x").is_err());
    }

    #[test]
    fn repo_paths() {
        assert!(check_repo_path("a/b/c.json").is_ok());
        for bad in [
            "",
            "/etc/passwd",
            "a/../b",
            "a//b",
            "./a",
            "a\\b",
            "a\0b",
            "a/",
            "a\nb",
            "x\u{1b}]0;title\u{7}",
            "a\u{9b}2J",
        ] {
            assert!(check_repo_path(bad).is_err(), "{bad:?}");
        }
        let e = check_repo_path("evil\u{1b}[2J.json")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("evil\\u{1b}[2J.json") && !e.contains('\u{1b}'),
            "{e}"
        );

        let name = "n".repeat(MAX_NAME_BYTES);
        assert!(check_repo_path(&format!("d/{name}")).is_ok());
        let e = check_repo_path(&format!("d/{name}x"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("256 bytes") && e.contains("at most 255"), "{e}");
        let deep = vec![name.as_str(); 16].join("/");
        assert!(deep.len() <= MAX_PATH_BYTES && check_repo_path(&deep).is_ok());
        let too_long = format!("{deep}/xy");
        let e = check_repo_path(&too_long).unwrap_err().to_string();
        assert!(
            e.contains("4098 bytes") && e.contains("at most 4096"),
            "{e}"
        );
    }

    #[test]
    fn trees_must_fit_on_a_filesystem() {
        assert!(check_tree_paths(["a", "a-b/c", "ab/c", "b/a", "b/c/d"]).is_ok());
        let e = check_tree_paths(["a/b", "a-x", "a"])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("`a` is listed both as a file and as the folder of `a/b`"),
            "{e}"
        );
        let e = check_tree_paths(["x/y", "x/y/z/w"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("`x/y`") && e.contains("`x/y/z/w`"), "{e}");
        let e = check_tree_paths(["c", "c"]).unwrap_err().to_string();
        assert!(e.contains("`c` is listed twice"), "{e}");
    }
}
