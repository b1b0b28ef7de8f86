//! Fuzzing `models.lock` (issue #14): arbitrary and mutated text never panics the parser,
//! whatever it accepts writes back to the same lock, every lock modelbake writes reads back
//! byte-identically, and the corruptions a hand edit or a hostile commit could bring are
//! refused. Run length and seed: see `crate::test_support::fuzz`.

use std::collections::BTreeMap;
use std::path::Path;

use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

use super::*;
use crate::repo::{RepoId, RepoKind, Revision};
use crate::test_support::fuzz::{config, hex, mutated_text};

/// Tokens of the lock format, inserted by the mutator.
const DICT: &[&str] = &[
    "version = 1",
    "\n[[repo]]\n",
    "\n[[repo.file]]\n",
    "\n[[plugin]]\n",
    "kind = \"dataset\"",
    "id = \"acme/x\"",
    "revision = \"main\"",
    "commit = \"",
    "complete = true",
    "digest = \"",
    "path = \"a/../b\"",
    "size = ",
    "sha256 = \"",
    "blob = \"",
    "pointer = \"",
    "include = [\"*\"]",
    "'''",
    "\"\"\"",
    "\\u0000",
    "\\uD800",
    "0123456789abcdef",
];

fn parse(text: &str) -> Result<Lockfile, SourceError> {
    Lockfile::parse(Path::new("models.lock"), text)
}

/// A lock that parse accepted must write back to text that parses to the same lock, and that
/// text must be a fixed point of parse → write.
fn assert_stable(lock: &Lockfile) -> Result<(), TestCaseError> {
    let text = lock.to_toml();
    let back = parse(&text)
        .map_err(|e| TestCaseError::fail(format!("a written lock does not parse: {e}\n{text}")))?;
    prop_assert_eq!(&back, lock);
    prop_assert_eq!(back.to_toml(), text);
    Ok(())
}

/// Any string at all (control characters, quotes, non-BMP), short.
fn any_text(max: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(any::<char>(), 0..max).prop_map(|c| c.into_iter().collect())
}

/// A repo path `check_repo_path` accepts: printable non-ASCII and punctuation included
/// (quotes, `#`, `=`, `[`, spaces), folders ending in `_d` and files in `.f`, so that no file
/// is also a folder of another.
fn repo_path() -> impl Strategy<Value = String> {
    let seg = r"[^/\\\p{Cc}]{1,8}";
    (prop::collection::vec(seg, 0..3), seg).prop_map(|(dirs, name)| {
        let mut p: String = dirs.iter().map(|d| format!("{d}_d/")).collect();
        p.push_str(&name);
        p.push_str(".f");
        p
    })
}

fn locked_file(path: String) -> impl Strategy<Value = LockedFile> {
    (any::<u64>(), hex(64), hex(40), prop::option::of(hex(40))).prop_map(
        move |(size, sha256, git, pointer)| LockedFile {
            path: path.clone(),
            size,
            blob: if pointer.is_some() {
                sha256.clone()
            } else {
                git
            },
            sha256,
            pointer,
            xet_hash: None,
        },
    )
}

fn locked_repo() -> impl Strategy<Value = LockedRepo> {
    let kind = prop::sample::select(vec![RepoKind::Model, RepoKind::Dataset, RepoKind::Space]);
    let id = "[a-z0-9]{1,8}(/[a-z0-9_]{1,8})?".prop_map(|s| RepoId::parse(&s));
    let revision = prop_oneof![
        Just("main".to_owned()),
        "v[0-9]\\.[0-9]",
        "refs/pr/[0-9]{1,3}",
        hex(40),
    ]
    .prop_map(|s| Revision::parse(&s));
    let paths = prop::collection::btree_set(repo_path(), 0..6);
    let files = paths.prop_flat_map(|paths| paths.into_iter().map(locked_file).collect::<Vec<_>>());
    let patterns = || prop::collection::vec(any_text(10), 0..3);
    (
        kind,
        id,
        revision,
        hex(40),
        (patterns(), patterns(), patterns()),
        any::<bool>(),
        files,
    )
        .prop_filter_map(
            "generated id and revision are valid",
            |(kind, id, revision, commit, (include, exclude, policy), complete, files)| {
                let mut repo = LockedRepo {
                    kind,
                    id: id.ok()?,
                    revision: revision.ok()?,
                    commit,
                    include,
                    exclude,
                    policy,
                    complete,
                    digest: String::new(),
                    files,
                };
                repo.normalize();
                Some(repo)
            },
        )
}

fn lockfile() -> impl Strategy<Value = Lockfile> {
    let plugins = prop::collection::btree_map(any_text(12), (any_text(20), hex(64), hex(64)), 0..3);
    (plugins, prop::collection::vec(locked_repo(), 0..4)).prop_map(|(plugins, repos)| {
        // One entry per (kind, id), as lock writes them.
        let repos: BTreeMap<_, _> = repos
            .into_iter()
            .map(|r| ((r.kind, r.id.clone()), r))
            .collect();
        let mut lock = Lockfile::new();
        lock.plugins = plugins
            .into_iter()
            .map(|(name, (source, sha256, config))| LockedPlugin {
                name,
                source,
                sha256,
                config,
            })
            .collect();
        lock.repos = repos.into_values().collect();
        lock.normalize();
        lock
    })
}

/// Ways a hand edit or a hostile writer breaks a valid lock; each must be refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Corruption {
    TraversalPath,
    AbsolutePath,
    BackslashPath,
    UppercaseSha256,
    ShortBlob,
    ShortCommit,
    SwappedFiles,
    DuplicateFile,
    DigestMismatch,
    FutureVersion,
}

const CORRUPTIONS: &[Corruption] = &[
    Corruption::TraversalPath,
    Corruption::AbsolutePath,
    Corruption::BackslashPath,
    Corruption::UppercaseSha256,
    Corruption::ShortBlob,
    Corruption::ShortCommit,
    Corruption::SwappedFiles,
    Corruption::DuplicateFile,
    Corruption::DigestMismatch,
    Corruption::FutureVersion,
];

/// Applies `c` to the first repo with files (false when the lock has none to corrupt). The
/// digest is recomputed unless it is the corruption, so each refusal must come from the check
/// aimed at that corruption, not from the digest.
fn corrupt(lock: &mut Lockfile, c: Corruption, i: prop::sample::Index) -> bool {
    if c == Corruption::FutureVersion {
        lock.version = LOCK_VERSION_XET + 1;
        return true;
    }
    let Some(repo) = lock.repos.iter_mut().find(|r| !r.files.is_empty()) else {
        return false;
    };
    let n = i.index(repo.files.len());
    match c {
        Corruption::TraversalPath => repo.files[n].path.insert_str(0, "../"),
        Corruption::AbsolutePath => repo.files[n].path.insert(0, '/'),
        Corruption::BackslashPath => repo.files[n].path.insert(0, '\\'),
        Corruption::UppercaseSha256 => repo.files[n].sha256.replace_range(..1, "A"),
        Corruption::ShortBlob => {
            repo.files[n].blob.pop();
        }
        Corruption::ShortCommit => {
            repo.commit.pop();
        }
        Corruption::SwappedFiles if repo.files.len() >= 2 => repo.files.swap(0, 1),
        Corruption::DuplicateFile => {
            let f = repo.files[n].clone();
            repo.files.insert(n, f);
        }
        Corruption::DigestMismatch => {
            repo.digest = crate::hash::sha256_hex(repo.digest.as_bytes());
            return true;
        }
        _ => return false,
    }
    repo.digest = repo.compute_digest();
    true
}

proptest! {
    // Generated locks are large and serialised twice a case: half the cases.
    #![proptest_config(config(2))]

    /// Any text: no panic; an error renders; whatever is accepted is stable.
    #[test]
    fn arbitrary_text_never_panics(text in any_text(400)) {
        match parse(&text) {
            Ok(lock) => assert_stable(&lock)?,
            Err(e) => { let _ = e.to_string(); }
        }
    }

    /// Every lock modelbake writes parses back to itself, and writing it again gives the same
    /// bytes: the round trip `lock --locked` and reviewers rely on.
    #[test]
    fn written_locks_round_trip_byte_identically(lock in lockfile()) {
        let text = lock.to_toml();
        let back = parse(&text).map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
        prop_assert_eq!(&back, &lock);
        prop_assert_eq!(back.to_toml(), text.clone());
        let mut streamed = Vec::new();
        prop_assert!(lock.write_toml(&mut streamed).is_ok());
        prop_assert_eq!(String::from_utf8(streamed).ok(), Some(text));
    }

    /// Near-valid locks (valid ones with byte edits): no panic; accepted ones are stable.
    #[test]
    fn mutated_locks_never_panic(
        text in lockfile().prop_flat_map(|l| mutated_text(&l.to_toml(), DICT))
    ) {
        match parse(&text) {
            Ok(lock) => assert_stable(&lock)?,
            Err(e) => { let _ = e.to_string(); }
        }
    }

    /// Reading table by table never disagrees with the TOML parser: on near-valid text it
    /// either gives way (`None`) or yields exactly what parsing the whole document yields.
    #[test]
    fn table_by_table_reading_agrees_with_the_toml_parser(
        text in lockfile().prop_flat_map(|l| mutated_text(&l.to_toml(), DICT))
    ) {
        if let Some(lock) = super::sections::parse(text.lines().map(Ok)) {
            let whole: Result<Lockfile, _> = toml::from_str(&text);
            prop_assert_eq!(whole.ok(), Some(lock), "{}", text);
        }
    }

    /// Every corruption of a valid lock is refused with a message.
    #[test]
    fn corrupted_locks_are_refused(
        lock in lockfile(),
        c in prop::sample::select(CORRUPTIONS),
        i in any::<prop::sample::Index>(),
    ) {
        let mut bad = lock.clone();
        prop_assume!(corrupt(&mut bad, c, i));
        let text = bad.to_toml();
        let e = parse(&text);
        prop_assert!(e.is_err(), "{:?} was accepted:\n{}", c, text);
    }
}
