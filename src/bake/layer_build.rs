//! Writing one layer: the plan's entries streamed from the store straight into the
//! (optionally compressed) tar, hashing the tar (the DiffID) and the blob (the digest) on the
//! way. Deterministic: the same plan and format give the same bytes on any machine.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;

use super::plan::{EntryKind, LayerFormat, LayerPlan};
use crate::hash::HashingWriter;
use crate::oci::Compression;
use crate::oci::tar::{Stamp, TarWriter};
use crate::store::Store;

/// Streams the tar into `tmp`; returns (diff_id hex, digest hex, blob size).
pub(super) fn write_layer(
    store: &Store,
    plan: &LayerPlan,
    format: LayerFormat,
    tmp: &Path,
) -> io::Result<(String, String, u64)> {
    let file = BufWriter::with_capacity(1 << 20, File::create(tmp)?);
    let (diff_id, digest, size, mut file) =
        write_layer_into(plan, format, file, &|sha256| open_blob(store, sha256))?;
    file.flush()?;
    Ok((diff_id, digest, size))
}

/// Writes the layer of `plan` in `format` into `out`, each blob's bytes read from
/// `open(sha256)`; returns (diff_id hex, digest hex, blob size) and `out`.
pub(super) fn write_layer_into<W: Write, R: io::Read>(
    plan: &LayerPlan,
    format: LayerFormat,
    out: W,
    open: &dyn Fn(&str) -> io::Result<R>,
) -> io::Result<(String, String, u64, W)> {
    let blob_writer = HashingWriter::new(out);
    match format.compression {
        Compression::None => {
            let out = write_entries_from(plan, format.stamp, blob_writer, open)?;
            let (digest, size, out) = out.finish();
            Ok((digest.clone(), digest, size, out))
        }
        Compression::Gzip => {
            let gz = flate2::GzBuilder::new()
                .mtime(0)
                .operating_system(255)
                .write(blob_writer, flate2::Compression::new(1));
            let tar_hash = write_entries_from(plan, format.stamp, HashingWriter::new(gz), open)?;
            let (diff_id, _, gz) = tar_hash.finish();
            let (digest, size, out) = gz.finish()?.finish();
            Ok((diff_id, digest, size, out))
        }
        Compression::Zstd => {
            let mut z = zstd::stream::write::Encoder::new(blob_writer, 3)?;
            z.include_checksum(true)?;
            z.multithread(zstd_workers())?;
            let tar_hash = write_entries_from(plan, format.stamp, HashingWriter::new(z), open)?;
            let (diff_id, _, z) = tar_hash.finish();
            let (digest, size, out) = z.finish()?.finish();
            Ok((diff_id, digest, size, out))
        }
    }
}

/// zstd worker threads: the machine's cores (zstd's multi-threaded output does not depend on
/// the number of workers, which a unit test checks).
fn zstd_workers() -> u32 {
    std::thread::available_parallelism()
        .map(|n| n.get() as u32)
        .unwrap_or(2)
        .clamp(1, 16)
}

/// The store file of `sha256`, for reading into a layer.
fn open_blob(store: &Store, sha256: &str) -> io::Result<File> {
    let path = store.blob_path(sha256);
    File::open(&path).map_err(|err| {
        io::Error::new(
            err.kind(),
            format!("{}: {err} (run `modelbake fetch` first)", path.display()),
        )
    })
}

/// Writes `plan`'s entries as a tar into `out`, reading each blob's bytes from `open(sha256)`.
fn write_entries_from<W: Write, R: io::Read>(
    plan: &LayerPlan,
    stamp: Stamp,
    out: W,
    open: &dyn Fn(&str) -> io::Result<R>,
) -> io::Result<W> {
    let mut tar = TarWriter::new(out);
    for e in plan.entries() {
        match &e.kind {
            EntryKind::Dir => tar.dir(&e.path, stamp)?,
            EntryKind::Symlink(target) => tar.symlink(&e.path, target, stamp)?,
            EntryKind::HardLink(target) => tar.hardlink(&e.path, target, stamp)?,
            EntryKind::Inline(bytes) => tar.file_bytes(&e.path, bytes, stamp)?,
            EntryKind::Trees => {
                let (size, _) = plan.trees_summary();
                tar.file_written(&e.path, size, stamp, &mut |w| plan.write_trees(w))?;
            }
            EntryKind::Blob { sha256, size } => {
                let mut f = open(sha256)?;
                tar.file(&e.path, *size, &mut f, stamp)?;
            }
        }
    }
    tar.finish()
}

#[cfg(test)]
mod tests {
    use super::super::plan::{check_layout, files_root, plan_one};
    use super::*;
    use crate::hash::sha256_hex;
    use crate::lock::LockedRepo;
    use crate::lock::Lockfile;
    use crate::manifest::bake_table::{BakeSettings, ModelArrangement};
    use crate::repo::RepoKind;
    use crate::test_support::fuzz::locked_repo;

    /// A locked repo with these (path, bytes) files.
    fn repo(kind: RepoKind, id: &str, files: &[(&str, &[u8])]) -> LockedRepo {
        let files: Vec<(&str, &[u8], bool)> = files.iter().map(|(p, b)| (*p, *b, false)).collect();
        locked_repo(kind, id, &"1".repeat(40), &files)
    }

    fn files_settings() -> BakeSettings {
        BakeSettings {
            layout: ModelArrangement::Files,
            ..BakeSettings::default()
        }
    }

    const SAME: &[u8] = b"same bytes\n";

    /// A model with two files of identical content and a nested file.
    fn model() -> LockedRepo {
        repo(
            RepoKind::Model,
            "acme/tiny",
            &[
                ("config.json", b"{}\n"),
                ("copy/b.txt", SAME),
                ("a.txt", SAME),
                ("sub/dir/nested.txt", b"nested\n"),
            ],
        )
    }

    /// (path, type, mode, link target, content) of an entry of a tar.
    type Row = (String, u8, u32, Option<String>, Vec<u8>);

    /// Every entry of a tar.
    fn read_tar(bytes: &[u8]) -> Vec<Row> {
        let mut a = ::tar::Archive::new(bytes);
        a.entries()
            .unwrap()
            .map(|e| {
                let mut e = e.unwrap();
                let h = e.header().clone();
                let mut content = Vec::new();
                io::Read::read_to_end(&mut e, &mut content).unwrap();
                (
                    e.path().unwrap().to_string_lossy().into_owned(),
                    h.entry_type().as_byte(),
                    h.mode().unwrap(),
                    e.link_name()
                        .unwrap()
                        .map(|l| l.to_string_lossy().into_owned()),
                    content,
                )
            })
            .collect()
    }

    /// The tar of `plan` with blob bytes from `files`.
    fn tar_of(plan: &LayerPlan, files: &[(&str, &[u8])]) -> Vec<u8> {
        let stamp = Stamp {
            uid: 1010,
            gid: 1010,
            mtime: 0,
        };
        write_entries_from(plan, stamp, Vec::new(), &|sha256| {
            files
                .iter()
                .find(|(_, b)| sha256_hex(b) == sha256)
                .map(|(_, b)| io::Cursor::new(b.to_vec()))
                .ok_or_else(|| io::Error::other("no such blob"))
        })
        .unwrap()
    }

    #[test]
    fn the_files_layout_is_regular_files_with_parents_modes_and_hard_links_for_equal_content() {
        let plans = plan_one(model(), &files_settings());
        assert_eq!(plans.len(), 1);
        let bytes = tar_of(
            &plans[0],
            &[
                ("config.json", b"{}\n"),
                ("a.txt", SAME),
                ("nested", b"nested\n"),
            ],
        );
        let entries = read_tar(&bytes);
        let paths: Vec<&str> = entries.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(
            paths,
            [
                "models/",
                "models/acme/",
                "models/acme/tiny/",
                "models/acme/tiny/a.txt",
                "models/acme/tiny/config.json",
                "models/acme/tiny/copy/",
                "models/acme/tiny/copy/b.txt",
                "models/acme/tiny/sub/",
                "models/acme/tiny/sub/dir/",
                "models/acme/tiny/sub/dir/nested.txt",
            ],
            "sorted, every parent directory first"
        );
        for (path, kind, mode, link, content) in &entries {
            assert_ne!(*kind, b'2', "{path}: no symlinks in the files layout");
            match *kind {
                b'5' => assert_eq!(*mode, 0o755, "{path}"),
                b'0' => assert_eq!(*mode, 0o644, "{path}"),
                b'1' => {
                    assert_eq!(*mode, 0o644, "{path}");
                    assert_eq!(path, "models/acme/tiny/copy/b.txt");
                    assert_eq!(
                        link.as_deref(),
                        Some("models/acme/tiny/a.txt"),
                        "a hard link to the first path with the same content"
                    );
                    assert!(content.is_empty());
                }
                other => panic!("{path}: unexpected entry type {other}"),
            }
        }
        let file = |p: &str| entries.iter().find(|e| e.0 == p).unwrap();
        assert_eq!(file("models/acme/tiny/a.txt").4, SAME);
        assert_eq!(file("models/acme/tiny/sub/dir/nested.txt").4, b"nested\n");
        let mut a = ::tar::Archive::new(&bytes[..]);
        for e in a.entries().unwrap() {
            let h = e.unwrap().header().clone();
            assert_eq!((h.uid().unwrap(), h.gid().unwrap()), (1010, 1010));
            assert_eq!(h.mtime().unwrap(), 0);
        }
    }

    #[test]
    fn files_layout_paths_for_datasets_spaces_ids_without_org_and_flat() {
        let s = files_settings();
        let data = repo(RepoKind::Dataset, "acme/data", &[("x", b"x")]);
        let space = repo(RepoKind::Space, "acme/demo", &[("x", b"x")]);
        let legacy = repo(RepoKind::Model, "gpt2", &[("x", b"x")]);
        assert_eq!(files_root(&data, &s), "models/datasets/acme/data");
        assert_eq!(files_root(&space, &s), "models/spaces/acme/demo");
        assert_eq!(files_root(&legacy, &s), "models/gpt2");
        let flat = BakeSettings {
            flat: true,
            models_dir: "/mnt/m".into(),
            ..s.clone()
        };
        let plan = &plan_one(model(), &flat)[0];
        assert!(plan.entries().any(|e| e.path == "mnt/m/config.json"));
        assert!(plan.entries().all(|e| !e.path.contains("acme")));

        let mut lock = Lockfile::new();
        lock.repos = vec![model(), data.clone()];
        assert!(check_layout(&lock, &s).is_ok());
        let e = check_layout(&lock, &flat).unwrap_err().to_string();
        assert!(e.contains("2 repos"), "{e}");
        let e = check_layout(
            &lock,
            &BakeSettings {
                flat: true,
                ..BakeSettings::default()
            },
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("--layout files"), "{e}");
        // An org folder that would hold a repo without an org of the same name.
        lock.repos = vec![legacy, repo(RepoKind::Model, "gpt2/small", &[("x", b"x")])];
        let e = check_layout(&lock, &s).unwrap_err().to_string();
        assert!(e.contains("share the folder"), "{e}");
    }

    #[test]
    fn the_files_layout_splits_by_size_keeping_equal_content_in_one_layer() {
        let big = vec![1u8; 100];
        let r = repo(
            RepoKind::Model,
            "acme/big",
            &[
                ("a.bin", &big),
                ("b.bin", &big),
                ("c.bin", &[2u8; 100]),
                ("d.txt", b"d"),
            ],
        );
        let s = BakeSettings {
            max_layer_size: 150,
            ..files_settings()
        };
        let plans = plan_one(r, &s);
        assert_eq!(plans.len(), 2, "{plans:#?}");
        let kinds = |p: &LayerPlan, name: &str| {
            p.entries().find(|e| e.path.ends_with(name)).map(|e| e.kind)
        };
        assert!(matches!(
            kinds(&plans[0], "a.bin"),
            Some(EntryKind::Blob { .. })
        ));
        assert_eq!(
            kinds(&plans[0], "b.bin"),
            Some(EntryKind::HardLink("models/acme/big/a.bin".into())),
            "the link lives in the same layer as its target"
        );
        assert!(kinds(&plans[1], "c.bin").is_some() && kinds(&plans[1], "d.txt").is_some());
        assert_eq!((plans[0].part, plans[1].part), ((1, 2), (2, 2)));
    }

    #[test]
    fn zstd_output_does_not_depend_on_the_number_of_workers() {
        let data: Vec<u8> = (0..3_000_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        let compress = |workers: u32| {
            let mut z = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
            z.include_checksum(true).unwrap();
            z.multithread(workers).unwrap();
            z.write_all(&data).unwrap();
            z.finish().unwrap()
        };
        let one = compress(1);
        assert_eq!(one, compress(2));
        assert_eq!(one, compress(7));
    }
}
