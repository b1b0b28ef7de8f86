//! Fuzzing `serve`'s request handling (issue #14): any method, path, query, `Range` and body
//! gets an answer without panicking; a refusal keeps its status; nothing outside the locked
//! files is ever served (traversal in any spelling: `..`, `%2e%2e`, `%2F`, backslashes, NUL);
//! a well-formed request for a locked file, in any percent-encoding and with any valid
//! `Range`, gets exactly those bytes. Run length and seed: see `crate::test_support::fuzz`.

use std::path::Path;

use http_body_util::BodyExt;
use percent_encoding::percent_decode_str;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

use super::*;
use crate::hash::sha256_hex;
use crate::test_support::fuzz::{check, config, hex, locked_repo};

/// The locked files (path, content, stored with LFS).
const FILES: &[(&str, &[u8], bool)] = &[
    ("config.json", b"{\"model_type\": \"bert\"}\n", false),
    (
        "model.safetensors",
        b"0123456789abcdefghijklmnopqrstuvwxyz",
        true,
    ),
    ("sub/deep/vocab.txt", b"alpha\nbeta\n", false),
    ("a b+c%25 \u{e9}.txt", b"odd name", false),
];
/// A file beside the store that no request may ever read.
const SECRET: &[u8] = b"SECRET: outside the store";
const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

/// A store holding the locked files and a secret beside it, and the catalog that serves them.
struct Mirror {
    _dir: tempfile::TempDir,
    catalog: Catalog,
}

fn mirror() -> Mirror {
    let dir = tempfile::tempdir().unwrap_or_else(|e| unreachable!("tempdir: {e}"));
    let store = Store::open(&dir.path().join("store")).unwrap_or_else(|e| unreachable!("{e}"));
    std::fs::write(dir.path().join("secret.txt"), SECRET).unwrap_or_else(|e| unreachable!("{e}"));
    let mut lock = Lockfile::new();
    for (kind, id) in [
        (RepoKind::Model, "acme/tiny"),
        (RepoKind::Dataset, "acme/data"),
    ] {
        lock.repos.push(locked_repo(kind, id, COMMIT, FILES));
    }
    for (_, bytes, _) in FILES {
        let path = store.blob_path(&sha256_hex(bytes));
        let write = path
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| std::fs::write(&path, bytes));
        write.unwrap_or_else(|e| unreachable!("{}: {e}", path.display()));
    }
    Mirror {
        _dir: dir,
        catalog: Catalog::new(&[lock], store),
    }
}

/// One request as `handle` would pass it on.
#[derive(Debug, Clone)]
struct Req {
    method: Method,
    path: String,
    query: String,
    range: Option<String>,
    body: Vec<u8>,
}

/// What came back: status, headers' content type, and the whole body.
struct Answer {
    status: StatusCode,
    octets: bool,
    body: Vec<u8>,
}

/// Routes `req` like `handle` does; a refusal must keep its status once made a response.
fn answer(rt: &tokio::runtime::Runtime, m: &Mirror, req: &Req) -> Result<Answer, TestCaseError> {
    rt.block_on(async {
        let ctx = Ctx {
            catalog: &m.catalog,
            method: &req.method,
            query: &req.query,
            range: req.range.as_deref(),
            host: "127.0.0.1:1",
            body: Bytes::from(req.body.clone()),
        };
        let resp = match route(&ctx, &req.path).await {
            Ok(r) => r,
            Err(refusal) => {
                let status = refusal.status;
                let resp = refusal.into_response();
                prop_assert_eq!(resp.status(), status, "a refusal changed status: {:?}", req);
                resp
            }
        };
        let status = resp.status();
        let octets = resp
            .headers()
            .get("content-type")
            .is_some_and(|v| v == "application/octet-stream");
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| TestCaseError::fail(format!("body of {req:?}: {e}")))?
            .to_bytes()
            .to_vec();
        Ok(Answer {
            status,
            octets,
            body,
        })
    })
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| unreachable!("runtime: {e}"))
}

/// Path segments: routes, ids, revisions, file names, and traversal in many spellings.
fn segment() -> impl Strategy<Value = String> {
    const WORDS: &[&str] = &[
        "api",
        "models",
        "datasets",
        "spaces",
        "acme",
        "tiny",
        "data",
        "resolve",
        "tree",
        "revision",
        "paths-info",
        "main",
        COMMIT,
        "0123456",
        "config.json",
        "sub",
        "deep",
        "vocab.txt",
        "model.safetensors",
        "..",
        ".",
        "",
        "%2e%2e",
        "%2E%2e",
        ".%2e",
        "%2e.",
        "..%2f..%2fsecret.txt",
        "%2F",
        "%2f..",
        "..\\..",
        "%5c",
        "%00",
        "\0",
        "%0a",
        "%0d%0a",
        "%",
        "%zz",
        "%c3%28",
        "%ff",
        "~",
        "secret.txt",
        "store",
        "blobs",
        "sha256",
        "etc",
        "passwd",
        "a b+c%2525 %C3%A9.txt",
        "refs%2Fpr%2F1",
        "%252e%252e",
    ];
    prop_oneof![
        6 => prop::sample::select(WORDS).prop_map(str::to_owned),
        1 => "[^/?#]{0,8}",
        1 => hex(64),
    ]
}

fn query() -> impl Strategy<Value = String> {
    let cursor = prop_oneof![
        Just(u64::MAX),
        Just(usize::MAX as u64 - 999),
        Just(i64::MAX as u64),
        0..2000u64,
        any::<u64>(),
    ];
    let part = prop_oneof![
        Just("recursive=true".to_owned()),
        Just("recursive=TRUE".to_owned()),
        Just("blobs=true".to_owned()),
        Just("expand=1".to_owned()),
        cursor.prop_map(|c| format!("cursor={c}")),
        "[^#]{0,10}",
    ];
    prop::collection::vec(part, 0..4).prop_map(|p| p.join("&"))
}

fn range() -> impl Strategy<Value = String> {
    prop_oneof![
        (any::<u64>(), any::<u64>()).prop_map(|(a, b)| format!("bytes={a}-{b}")),
        (0..64u64, 0..64u64).prop_map(|(a, b)| format!("bytes={a}-{b}")),
        (0..64u64).prop_map(|a| format!("bytes={a}-")),
        (0..64u64).prop_map(|n| format!("bytes=-{n}")),
        Just("bytes=0-1,3-4".to_owned()),
        Just("bytes=-".to_owned()),
        Just("items=0-1".to_owned()),
        ".{0,16}",
    ]
}

/// A slot of a route template: usually the valid value, sometimes any segment.
fn slot(valid: &'static [&'static str]) -> impl Strategy<Value = String> {
    prop_oneof![
        2 => prop::sample::select(valid).prop_map(str::to_owned),
        1 => segment(),
    ]
}

/// The segments of a path: a route of the Hub API with its slots filled (often validly, so the
/// fuzz reaches the handlers), or any segments at all.
fn segments() -> impl Strategy<Value = Vec<String>> {
    let kind = || slot(&["models", "datasets"]);
    let id = || (slot(&["acme"]), slot(&["tiny", "data"])).prop_map(|(a, b)| vec![a, b]);
    let rev = || slot(&["main", COMMIT, "0123456"]);
    let tail = || prop::collection::vec(slot(&["sub", "deep", "vocab.txt", "config.json"]), 0..4);
    let api = (
        kind(),
        id(),
        slot(&["tree", "revision", "paths-info"]),
        rev(),
        tail(),
    )
        .prop_map(|(kind, id, op, rev, tail)| {
            let mut v = vec!["api".to_owned(), kind];
            v.extend(id);
            v.extend([op, rev]);
            v.extend(tail);
            v
        });
    let resolve = (slot(&["datasets", "spaces", "acme"]), id(), rev(), tail()).prop_map(
        |(prefix, id, rev, tail)| {
            let mut v = vec![prefix];
            v.extend(id);
            v.extend(["resolve".to_owned(), rev]);
            v.extend(tail);
            v
        },
    );
    prop_oneof![api, resolve, prop::collection::vec(segment(), 0..9)]
}

fn request() -> impl Strategy<Value = Req> {
    (
        prop::sample::select(vec![Method::GET, Method::HEAD, Method::POST, Method::PUT]),
        any::<bool>(),
        segments(),
        query(),
        prop::option::of(range()),
        prop_oneof![
            Just(Vec::new()),
            Just(br#"{"paths":["config.json","../secret.txt","sub"]}"#.to_vec()),
            Just(b"paths=config.json&paths=..%2Fsecret.txt&expand=true".to_vec()),
            prop::collection::vec(any::<u8>(), 0..64),
        ],
    )
        .prop_map(|(method, slash, segs, query, range, body)| Req {
            method,
            path: format!("{}{}", if slash { "/" } else { "" }, segs.join("/")),
            query,
            range,
            body,
        })
}

/// Decodes `%XX` until nothing changes: every spelling a lenient server might end up with.
fn fully_decoded(s: &str) -> String {
    let mut cur = s.to_owned();
    for _ in 0..4 {
        let next = percent_decode_str(&cur).decode_utf8_lossy().into_owned();
        if next == cur {
            break;
        }
        cur = next;
    }
    cur
}

/// A path that tries to leave the repo: a `..` segment, a backslash or a NUL, in any spelling.
fn is_traversal(path: &str) -> bool {
    let d = fully_decoded(path);
    d.contains('\\') || d.contains('\0') || d.split('/').any(|s| s == "..")
}

/// `s` with each character either as is or percent-encoded (UTF-8 bytes), `/` kept.
fn encoded(s: &str, mask: &[bool]) -> String {
    s.chars()
        .enumerate()
        .map(|(i, c)| {
            let raw = c != '%' && c != '?' && c != '#' && !mask.get(i).copied().unwrap_or(false);
            if c == '/' || raw {
                c.to_string()
            } else {
                let mut buf = [0u8; 4];
                c.encode_utf8(&mut buf)
                    .bytes()
                    .map(|b| format!("%{b:02X}"))
                    .collect()
            }
        })
        .collect()
}

/// Any request: an answer, no panic, refusals keep their status, and the only file bytes
/// ever served are (parts of) locked files: never the secret beside the store, never for a
/// path that tries to leave the repo.
#[test]
fn arbitrary_requests_never_escape_the_store() {
    let (rt, m) = (runtime(), mirror());
    check(1, request(), |req| {
        let a = answer(&rt, &m, &req)?;
        let body = String::from_utf8_lossy(&a.body);
        prop_assert!(!body.contains("SECRET"), "{:?} served the secret", req);
        if a.status.is_success() && a.octets && !a.body.is_empty() {
            prop_assert!(
                FILES
                    .iter()
                    .any(|(_, c, _)| c.windows(a.body.len()).any(|w| w == a.body)),
                "{:?} served bytes of no locked file",
                req
            );
        }
        if is_traversal(&req.path) {
            prop_assert!(!a.status.is_success(), "{:?} answered {}", req, a.status);
        }
        Ok(())
    });
}

/// A well-formed `resolve` of a locked file, with any percent-encoding of its name and
/// revision, gets exactly the file (or the requested range of it).
#[test]
fn well_formed_resolves_get_exactly_the_file() {
    let (rt, m) = (runtime(), mirror());
    let cases = (
        0..FILES.len(),
        any::<bool>(),
        prop::sample::select(vec!["main", COMMIT, &COMMIT[..7], &COMMIT[..12]]),
        prop::collection::vec(any::<bool>(), 64),
        prop::option::of((0..40u64, 0..40u64)),
        any::<bool>(),
    );
    check(1, cases, |(file, dataset, rev, mask, range, head)| {
        let (name, content, _) = FILES[file];
        let prefix = if dataset {
            "datasets/acme/data"
        } else {
            "acme/tiny"
        };
        let req = Req {
            method: if head { Method::HEAD } else { Method::GET },
            path: format!(
                "/{prefix}/resolve/{}/{}",
                encoded(rev, &mask[40..]),
                encoded(name, &mask)
            ),
            query: String::new(),
            range: range.map(|(a, b)| format!("bytes={a}-{b}")),
            body: Vec::new(),
        };
        let a = answer(&rt, &m, &req)?;
        let total = content.len() as u64;
        let (code, bytes): (StatusCode, &[u8]) = match range {
            None => (StatusCode::OK, content),
            // An inverted range is ignored: the whole file.
            Some((s, e)) if s > e => (StatusCode::OK, content),
            Some((s, _)) if s >= total => (StatusCode::RANGE_NOT_SATISFIABLE, b"".as_slice()),
            Some((s, e)) => (
                StatusCode::PARTIAL_CONTENT,
                &content[s as usize..=e.min(total - 1) as usize],
            ),
        };
        prop_assert_eq!(a.status, code, "{:?}", req);
        if code.is_success() {
            let expected: &[u8] = if head { &[] } else { bytes };
            prop_assert_eq!(a.body.as_slice(), expected, "{:?}", req);
        }
        Ok(())
    });
}

/// Found by fuzzing: a tree request with `cursor=18446744073709551615` overflowed the page
/// arithmetic (a panic in debug builds, a wrapped cursor in release builds).
#[test]
fn a_huge_tree_cursor_gets_an_empty_page() {
    let (rt, m) = (runtime(), mirror());
    let req = Req {
        method: Method::GET,
        path: "/api/datasets/acme/data/tree/main".to_owned(),
        query: format!("recursive=true&cursor={}", u64::MAX),
        range: None,
        body: Vec::new(),
    };
    let a = answer(&rt, &m, &req).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        (a.status, a.body.as_slice()),
        (StatusCode::OK, b"[]".as_slice())
    );
}

/// Found by fuzzing: a refusal whose message held a control character (here the folder name
/// of a tree request, `%0a` or `%00`) could not become a header, and the fallback answered
/// `200 OK` with an empty body instead of the refusal.
#[test]
fn a_refusal_naming_a_control_character_keeps_its_status() {
    let (rt, m) = (runtime(), mirror());
    for path in [
        "/api/models/acme/tiny/tree/main/%0a",
        "api/models/acme/tiny/tree/main/\0",
    ] {
        let req = Req {
            method: Method::GET,
            path: path.to_owned(),
            query: String::new(),
            range: None,
            body: Vec::new(),
        };
        let a = answer(&rt, &m, &req).unwrap_or_else(|e| panic!("{path}: {e}"));
        assert_eq!(a.status, StatusCode::NOT_FOUND, "{path}");
        assert!(
            String::from_utf8_lossy(&a.body).contains("does not exist"),
            "{path}"
        );
    }
}

proptest! {
    #![proptest_config(config(1))]

    /// Any `Range` text: no panic, and a satisfiable answer lies inside the file.
    #[test]
    fn arbitrary_ranges_stay_inside_the_file(h in range(), total in prop_oneof![0..100u64, any::<u64>()]) {
        if let Some(Ok((s, e))) = parse_range(&h, total) {
            prop_assert!(s <= e && e < total, "{} of {} gave {}-{}", h, total, s, e);
        }
    }

    /// Well-formed single ranges give back what they ask for, clamped to the file.
    #[test]
    fn well_formed_ranges_give_back_their_bounds(
        a in 0..200u64, b in 0..200u64, total in 0..150u64,
        form in 0..3u8, ws in prop::sample::select(vec!["", " "]),
    ) {
        let (h, want) = match form {
            0 => (
                format!("{ws}bytes={a}{ws}-{ws}{b}{ws}"),
                (a <= b).then(|| if a < total { Ok((a, b.min(total - 1))) } else { Err(()) }),
            ),
            1 => (
                format!("bytes={a}-"),
                Some(if a < total { Ok((a, total - 1)) } else { Err(()) }),
            ),
            _ => (
                format!("bytes=-{b}"),
                (b > 0).then(|| if total > 0 { Ok((total.saturating_sub(b), total - 1)) } else { Err(()) }),
            ),
        };
        prop_assert_eq!(parse_range(&h, total), want, "{}", h);
    }
}

/// The store folder of a fresh mirror holds only what the fixture put there (the properties
/// above rely on the secret being outside it).
#[test]
fn the_secret_is_outside_the_store() {
    let m = mirror();
    let store = m.catalog.store.root();
    assert!(!Path::new(store).join("secret.txt").exists());
    assert!(
        store
            .parent()
            .is_some_and(|p| p.join("secret.txt").is_file())
    );
}
