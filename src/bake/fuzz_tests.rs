//! Fuzzing the layer verifier of `verify --layer` (issue #14): a layer file of any bytes, or
//! a valid layer with byte edits before or after compression, gets a verdict, without
//! panicking, in bounded time. Run length and seed: see `crate::test_support::fuzz`.

use std::io::Write;
use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

use super::plan::{EntryKind, plan_one};
use super::verify_image::verify_layer;
use crate::hash::sha256_hex;
use crate::lock::Lockfile;
use crate::manifest::bake_table::BakeSettings;
use crate::test_support::fuzz::{config, locked_repo, mutated};
// The mutator's tokens: the ones the OCI documents' fuzzing inserts.
use crate::oci::fuzz_tests::DICT;
use crate::oci::tar::{Stamp, TarWriter};
use crate::repo::RepoKind;

/// How long one layer may take to verify before it counts as a hang (the bound).
const HANG: Duration = Duration::from_secs(30);

/// A lock of one repo (a regular file, an LFS file, a nested file) and the files' contents.
fn layer_lock() -> (Lockfile, Vec<(String, Vec<u8>)>) {
    let contents: Vec<(&str, &[u8], bool)> = vec![
        ("config.json", b"{\"model_type\": \"bert\"}\n", false),
        ("model.safetensors", &[7u8; 1500], true),
        ("sub/vocab.txt", b"a\nb\n", false),
    ];
    let mut lock = Lockfile::new();
    lock.repos.push(locked_repo(
        RepoKind::Model,
        "acme/tiny",
        &"1".repeat(40),
        &contents,
    ));
    let blobs = contents
        .iter()
        .map(|(_, bytes, _)| (sha256_hex(bytes), bytes.to_vec()))
        .collect();
    (lock, blobs)
}

/// The uncompressed layer `bake` would write for [`layer_lock`].
fn valid_tar() -> Vec<u8> {
    let (lock, blobs) = layer_lock();
    let settings = BakeSettings::default();
    let stamp = Stamp {
        uid: settings.owner.0,
        gid: settings.owner.1,
        mtime: 0,
    };
    let mut tar = TarWriter::new(Vec::new());
    for plan in plan_one(lock.repos[0].clone(), &settings) {
        for e in plan.entries() {
            let written = match &e.kind {
                EntryKind::Dir => tar.dir(&e.path, stamp),
                EntryKind::Symlink(t) => tar.symlink(&e.path, t, stamp),
                EntryKind::HardLink(t) => tar.hardlink(&e.path, t, stamp),
                EntryKind::Inline(b) => tar.file_bytes(&e.path, b, stamp),
                EntryKind::Trees => {
                    let size = plan.trees_summary().0;
                    tar.file_written(&e.path, size, stamp, &mut |w| plan.write_trees(w))
                }
                EntryKind::Blob { sha256, .. } => {
                    let bytes = blobs.iter().find(|(s, _)| s == sha256).map(|(_, b)| b);
                    tar.file_bytes(&e.path, bytes.map_or(&[][..], |b| b), stamp)
                }
            };
            written.unwrap_or_else(|e| unreachable!("writing into memory: {e}"));
        }
    }
    tar.finish()
        .unwrap_or_else(|e| unreachable!("writing into memory: {e}"))
}

/// How a layer file is encoded, as `bake` can write it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Plain,
    Gzip,
    Zstd,
}

fn encode(tar: &[u8], encoding: Encoding) -> Vec<u8> {
    let written = match encoding {
        Encoding::Plain => Ok(tar.to_vec()),
        Encoding::Gzip => {
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            gz.write_all(tar).and_then(|()| gz.finish())
        }
        Encoding::Zstd => zstd::encode_all(tar, 1),
    };
    written.unwrap_or_else(|e| unreachable!("compressing in memory: {e}"))
}

/// Runs `verify --layer` on `bytes` in a thread: a panic or a verdict slower than [`HANG`]
/// fails the case.
fn verify_bytes(dir: &Path, bytes: Vec<u8>) -> Result<bool, TestCaseError> {
    let path = dir.join("layer");
    std::fs::write(&path, &bytes).map_err(|e| TestCaseError::fail(e.to_string()))?;
    let (lock, _) = layer_lock();
    let (tx, rx) = mpsc::channel();
    let file = path.clone();
    std::thread::spawn(move || {
        let report = verify_layer(&file, &std::sync::Arc::new(lock), &BakeSettings::default());
        let _ = tx.send(report.map(|r| r.ok).unwrap_or(false));
    });
    let verdict = rx.recv_timeout(HANG);
    let _ = std::fs::remove_file(&path);
    match verdict {
        Ok(ok) => Ok(ok),
        Err(mpsc::RecvTimeoutError::Timeout) => Err(TestCaseError::fail(format!(
            "verify --layer took over {HANG:?}"
        ))),
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            Err(TestCaseError::fail("verify --layer panicked"))
        }
    }
}

/// A valid layer in one of the encodings, edited before or after compression.
fn mutated_layer() -> impl Strategy<Value = Vec<u8>> {
    let tar = valid_tar();
    let encodings = || prop::sample::select(vec![Encoding::Plain, Encoding::Gzip, Encoding::Zstd]);
    prop_oneof![
        (encodings(), mutated(tar.clone(), DICT)).prop_map(|(e, t)| encode(&t, e)),
        encodings().prop_flat_map(move |e| mutated(encode(&tar, e), DICT)),
    ]
}

#[test]
fn the_unmutated_layer_verifies_in_every_encoding() {
    let dir = tempfile::tempdir().unwrap();
    let tar = valid_tar();
    for encoding in [Encoding::Plain, Encoding::Gzip, Encoding::Zstd] {
        assert_eq!(
            verify_bytes(dir.path(), encode(&tar, encoding)).ok(),
            Some(true),
            "{encoding:?}"
        );
    }
    // And a one-byte change to a file's content is caught (the fuzz reaches real checks).
    let mut bad = tar.clone();
    let at = bad
        .windows(4)
        .position(|w| w == b"bert")
        .unwrap_or_else(|| unreachable!("config.json is in the layer"));
    bad[at] = b'B';
    assert_eq!(verify_bytes(dir.path(), bad).ok(), Some(false));
}

proptest! {
    // Each case writes a file and decodes a layer: a quarter of the cases of the others.
    #![proptest_config(config(4))]

    /// `verify --layer` on a layer with byte edits (to the tar before compression, or to the
    /// file as stored): a verdict, no panic, no hang.
    #[test]
    fn mutated_layers_get_a_verdict(bytes in mutated_layer()) {
        let dir = tempfile::tempdir().map_err(|e| TestCaseError::fail(e.to_string()))?;
        verify_bytes(dir.path(), bytes)?;
    }

    /// `verify --layer` on arbitrary bytes, with and without a compression magic in front.
    #[test]
    fn arbitrary_layers_get_a_verdict(
        magic in prop::sample::select(vec![&b""[..], &[0x1f, 0x8b][..], &[0x28, 0xb5, 0x2f, 0xfd][..]]),
        bytes in prop::collection::vec(any::<u8>(), 0..2048),
    ) {
        let dir = tempfile::tempdir().map_err(|e| TestCaseError::fail(e.to_string()))?;
        verify_bytes(dir.path(), [magic, &bytes].concat())?;
    }
}
