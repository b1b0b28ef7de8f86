//! Shared set-up of the property tests that fuzz the parsers (the `fuzz_tests` modules beside
//! each parser). By default every property runs a short, fixed-seed batch, so the test suite
//! stays fast and deterministic; `scripts/fuzz` sets `MODELBAKE_FUZZ_CASES` and
//! `MODELBAKE_FUZZ_SEED` to run the same properties much longer with a fresh seed.

use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config, RngSeed, TestCaseError, TestRunner};

/// Cases per property in the default (test-suite) run.
pub const DEFAULT_CASES: u32 = 256;
/// Seed of the default run ("modelbak" in ASCII): the same inputs on every machine.
pub const DEFAULT_SEED: u64 = 0x6d6f_6465_6c62_616b;

/// The runner configuration of a property: `MODELBAKE_FUZZ_CASES` cases (default
/// [`DEFAULT_CASES`]) divided by `cost` (for properties whose cases are expensive), from seed
/// `MODELBAKE_FUZZ_SEED` (default [`DEFAULT_SEED`]), with no failure files written into the
/// source tree (a failure prints its minimal input and the seed replays it).
pub fn config(cost: u32) -> Config {
    let cases = env_number("MODELBAKE_FUZZ_CASES").unwrap_or(u64::from(DEFAULT_CASES));
    let seed = env_number("MODELBAKE_FUZZ_SEED").unwrap_or(DEFAULT_SEED);
    let cases = u32::try_from(cases / u64::from(cost.max(1)))
        .unwrap_or(u32::MAX)
        .max(1);
    Config {
        cases,
        rng_seed: RngSeed::Fixed(seed),
        failure_persistence: None,
        // Properties that skip inapplicable inputs (`prop_assume!`) may skip a share of them
        // however long the run.
        max_global_rejects: cases,
        // Shrinking is what makes a finding readable; bound it so a failure reports promptly.
        max_shrink_iters: 4096,
        ..Config::default()
    }
}

/// Runs `test` on values of `strategy` with [`config`]`(cost)`, panicking with the minimal
/// failing input: for properties that share an expensive set-up (a store, a runtime) across
/// cases, which the `proptest!` macro would rebuild for every case.
pub fn check<S: Strategy>(
    cost: u32,
    strategy: S,
    test: impl Fn(S::Value) -> Result<(), TestCaseError>,
) {
    if let Err(e) = TestRunner::new(config(cost)).run(&strategy, test) {
        panic!("{e}");
    }
}

/// A positive number from the environment; a malformed value fails loudly rather than
/// silently running the default.
fn env_number(name: &str) -> Option<u64> {
    let raw = std::env::var(name).ok().filter(|v| !v.trim().is_empty())?;
    match raw.trim().parse() {
        Ok(n) => Some(n),
        Err(e) => panic!("{name}=`{raw}` is not a number ({e}); unset it or give a number"),
    }
}

/// One byte-level edit of an input.
#[derive(Debug, Clone)]
enum Edit {
    /// Replace the byte at a position.
    Set(Index, u8),
    /// Remove up to `n` bytes from a position.
    Delete(Index, usize),
    /// Insert bytes at a position.
    Insert(Index, Vec<u8>),
    /// Copy a slice of the input to another position (repeats a structure).
    Duplicate(Index, Index, usize),
    /// Cut the input at a position.
    Truncate(Index),
}

impl Edit {
    fn apply(&self, b: &mut Vec<u8>) {
        let at = |i: &Index, b: &Vec<u8>| {
            if b.is_empty() {
                0
            } else {
                i.index(b.len() + 1)
            }
        };
        match self {
            Edit::Set(i, v) => {
                if !b.is_empty() {
                    let p = i.index(b.len());
                    b[p] = *v;
                }
            }
            Edit::Delete(i, n) => {
                let p = at(i, b);
                let end = (p + n).min(b.len());
                b.drain(p..end);
            }
            Edit::Insert(i, bytes) => {
                let p = at(i, b);
                b.splice(p..p, bytes.iter().copied());
            }
            Edit::Duplicate(from, to, n) => {
                let p = at(from, b);
                let piece: Vec<u8> = b[p..(p + n).min(b.len())].to_vec();
                let q = at(to, b);
                b.splice(q..q, piece);
            }
            Edit::Truncate(i) => {
                let p = at(i, b);
                b.truncate(p);
            }
        }
    }
}

/// Inserted material: tokens of the format under test (`dict`), plus bytes that commonly break
/// parsers (quotes, brackets, separators, NUL, invalid UTF-8, huge numbers, traversal).
fn insertion(dict: &'static [&'static str]) -> impl Strategy<Value = Vec<u8>> {
    const NASTY: &[&str] = &[
        "\"",
        "'",
        "\\",
        "\n",
        "\r\n",
        "\0",
        "[",
        "]",
        "{",
        "}",
        ",",
        ";",
        "=",
        ":",
        "#",
        "..",
        "/",
        "%2e%2e",
        "%2F",
        "%00",
        "\u{1b}]0;x\u{7}",
        "\u{202e}",
        "é",
        "\u{fffd}",
        "18446744073709551616",
        "-1",
        "1e400",
        "9223372036854775808",
        "null",
        "true",
    ];
    prop_oneof![
        prop::sample::select(NASTY).prop_map(|s| s.as_bytes().to_vec()),
        prop::sample::select(dict).prop_map(|s| s.as_bytes().to_vec()),
        prop::collection::vec(any::<u8>(), 1..8),
        Just(vec![0xff, 0xfe]),
    ]
}

fn edit(dict: &'static [&'static str]) -> impl Strategy<Value = Edit> {
    prop_oneof![
        1 => (any::<Index>(), any::<u8>()).prop_map(|(i, v)| Edit::Set(i, v)),
        1 => (any::<Index>(), 1usize..16).prop_map(|(i, n)| Edit::Delete(i, n)),
        3 => (any::<Index>(), insertion(dict)).prop_map(|(i, b)| Edit::Insert(i, b)),
        1 => (any::<Index>(), any::<Index>(), 1usize..64)
            .prop_map(|(a, b, n)| Edit::Duplicate(a, b, n)),
        1 => any::<Index>().prop_map(Edit::Truncate),
    ]
}

/// `base` with one to eight random edits: near-valid inputs that reach deep into a parser,
/// where random bytes stop at the first character.
pub fn mutated(base: Vec<u8>, dict: &'static [&'static str]) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(edit(dict), 1..8).prop_map(move |edits| {
        let mut b = base.clone();
        for e in &edits {
            e.apply(&mut b);
        }
        b
    })
}

/// [`mutated`], as text (invalid UTF-8 becomes U+FFFD, as a lossy reader would see it).
pub fn mutated_text(
    base: &str,
    dict: &'static [&'static str],
) -> impl Strategy<Value = String> + use<> {
    mutated(base.as_bytes().to_vec(), dict).prop_map(|b| String::from_utf8_lossy(&b).into_owned())
}

/// The lock entry of a file with these bytes, as the Hub would list it: an LFS file is named
/// by its sha256 and has a pointer, a regular file by its git blob sha1.
pub fn locked_file(path: &str, bytes: &[u8], lfs: bool) -> crate::lock::LockedFile {
    use crate::hash::{git_blob_sha1, sha256_hex};
    crate::lock::LockedFile {
        path: path.to_owned(),
        size: bytes.len() as u64,
        sha256: sha256_hex(bytes),
        blob: if lfs {
            sha256_hex(bytes)
        } else {
            git_blob_sha1(bytes)
        },
        pointer: lfs.then(|| "2".repeat(40)),
        xet_hash: None,
    }
}

/// A normalised lock entry for `kind` `id` at `commit` with these `(path, bytes, lfs)` files,
/// as tests across modules need one.
pub fn locked_repo(
    kind: crate::repo::RepoKind,
    id: &str,
    commit: &str,
    files: &[(&str, &[u8], bool)],
) -> crate::lock::LockedRepo {
    let mut repo = crate::lock::LockedRepo {
        kind,
        id: crate::repo::RepoId::parse(id).unwrap_or_else(|e| unreachable!("{e}")),
        revision: crate::repo::Revision::main(),
        commit: commit.to_owned(),
        include: Vec::new(),
        exclude: Vec::new(),
        policy: Vec::new(),
        complete: true,
        digest: String::new(),
        files: files
            .iter()
            .map(|(path, bytes, lfs)| locked_file(path, bytes, *lfs))
            .collect(),
    };
    repo.normalize();
    repo
}

/// Lowercase hex of exactly `len` digits.
pub fn hex(len: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(b"0123456789abcdef".to_vec()), len)
        .prop_map(|v| v.into_iter().map(char::from).collect())
}

/// Any JSON value, nested a few levels, with keys drawn partly from `keys` so that objects
/// often look like the documents under test.
pub fn json_value(keys: &'static [&'static str]) -> impl Strategy<Value = serde_json::Value> {
    use serde_json::Value;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        ".{0,12}".prop_map(Value::String),
        prop::sample::select(keys).prop_map(|s| Value::String(s.to_owned())),
    ];
    let key = prop_oneof![
        3 => prop::sample::select(keys).prop_map(str::to_owned),
        1 => "[a-zA-Z_]{0,8}",
    ];
    leaf.prop_recursive(4, 48, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(key.clone(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}
