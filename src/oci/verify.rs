//! Checks image layers against the lock: every entry's type, mode, owner, symlink target and
//! content hash, the layer digests and DiffIDs, and (for a whole image) that nothing locked is
//! missing.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::Path;

use serde::Serialize;

use super::digest::Digest;
use super::error::OciError;
use super::layer::{EntryKind, plan_repo};
use super::source::{self, LayoutSource, blob_path};
use super::{ANNOTATION_REPO, Platform};
use crate::hash::HashingReader;
use crate::hfcache::repo_folder;
use crate::loaders;
use crate::lock::Lockfile;
use crate::manifest::BakeSettings;

/// One thing wrong in a layer or an image. Paths from the layer are shown escaped, so a
/// hostile entry name cannot drive the terminal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "problem", rename_all = "snake_case")]
pub enum Problem {
    /// An entry owned by someone other than the bake's owner.
    Owner {
        /// Entry path.
        path: String,
        /// Its uid:gid.
        found: String,
        /// The configured uid:gid.
        expected: String,
    },
    /// An entry that belongs to no locked repo.
    Unlocked {
        /// Entry path.
        path: String,
    },
    /// Wrong permission bits.
    Mode {
        /// Entry path.
        path: String,
        /// Its mode (octal).
        found: String,
        /// The mode it must have (octal).
        expected: String,
    },
    /// Not a directory where one must be.
    NotDir {
        /// Entry path.
        path: String,
    },
    /// Not the symlink the cache layout needs.
    WrongSymlink {
        /// Entry path.
        path: String,
        /// Its target, if it is a link.
        found: Option<String>,
        /// The target it must have.
        expected: String,
    },
    /// A file whose content differs from the lock.
    Corrupt {
        /// Entry path.
        path: String,
        /// What it hashes to, and its size.
        actual: String,
        /// The lock's sha256 and size.
        expected: String,
    },
    /// A small generated file (ref, trees listing) with other content.
    ContentDiffers {
        /// Entry path.
        path: String,
        /// The start of what it holds.
        found: String,
    },
    /// A layer blob whose bytes do not hash to its digest.
    BlobDigest {
        /// The digest in the manifest.
        expected: String,
        /// What the bytes hash to.
        actual: String,
    },
    /// A DiffID in the config that is not the layer's uncompressed tar.
    DiffId {
        /// The layer.
        layer: String,
        /// What its tar hashes to.
        actual: String,
    },
    /// The config lists another number of DiffIDs than the manifest has layers.
    DiffIdCount {
        /// DiffIDs in the config.
        diff_ids: usize,
        /// Layers in the manifest.
        layers: usize,
    },
    /// A base layer that is missing or does not match its digest.
    BaseLayer {
        /// Its digest.
        digest: String,
        /// What is wrong.
        detail: String,
    },
    /// A locked entry that no layer holds.
    Missing {
        /// The repo.
        repo: String,
        /// Entry path.
        path: String,
    },
    /// The image environment lacks a variable the bake sets.
    Env {
        /// `NAME=value`.
        expected: String,
    },
    /// A loader whose cache, as the image's `Env` resolves it, lacks locked snapshots.
    LoaderCache {
        /// The library (`huggingface_hub`, `transformers 4.x`, `sentence-transformers`).
        loader: String,
        /// The variable that decides where it looks.
        variable: String,
        /// Where it looks.
        points_to: String,
        /// The locked snapshots (`kind/id@commit`) that are not there.
        missing: Vec<String>,
    },
    /// The image's `Env` does not switch huggingface_hub offline though the bake should have.
    Offline {
        /// `HF_HUB_OFFLINE` and `TRANSFORMERS_OFFLINE` as the image sets them.
        found: String,
    },
    /// A layer file with no file of any locked repo.
    NoLockedFiles,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Problem::Owner {
                path,
                found,
                expected,
            } => write!(f, "{path}: owner {found}, expected {expected}"),
            Problem::Unlocked { path } => write!(f, "{path}: not part of any locked repo"),
            Problem::Mode {
                path,
                found,
                expected,
            } => write!(f, "{path}: mode {found}, expected {expected}"),
            Problem::NotDir { path } => write!(f, "{path}: expected a directory"),
            Problem::WrongSymlink {
                path,
                found,
                expected,
            } => write!(
                f,
                "{path}: expected a symlink to {expected}, found {}",
                found.as_deref().unwrap_or("no symlink")
            ),
            Problem::Corrupt {
                path,
                actual,
                expected,
            } => write!(f, "{path}: sha256 {actual}, expected {expected}"),
            Problem::ContentDiffers { path, found } => {
                write!(f, "{path}: content differs from the lock (\"{found}\")")
            }
            Problem::BlobDigest { expected, actual } => {
                write!(f, "blob hashes to {actual}, not its digest {expected}")
            }
            Problem::DiffId { layer, actual } => {
                write!(
                    f,
                    "layer {layer}: DiffID {actual} does not match the config"
                )
            }
            Problem::DiffIdCount { diff_ids, layers } => {
                write!(f, "config lists {diff_ids} DiffIDs for {layers} layers")
            }
            Problem::BaseLayer { digest, detail } => write!(f, "base layer {digest}: {detail}"),
            Problem::Missing { repo, path } => {
                write!(f, "{repo}: {path} is missing from the image")
            }
            Problem::Env { expected } => write!(f, "the image environment lacks {expected}"),
            Problem::LoaderCache {
                loader,
                variable,
                points_to,
                missing,
            } => write!(
                f,
                "{loader} looks in {} (from {variable}), which lacks {}",
                escaped(points_to),
                missing.join(", ")
            ),
            Problem::Offline { found } => write!(
                f,
                "the image environment does not switch huggingface_hub offline ({found}); expected HF_HUB_OFFLINE=1"
            ),
            Problem::NoLockedFiles => f.write_str("the layer holds no file of any locked repo"),
        }
    }
}

/// Text from a layer, made safe to print: control characters escaped, length capped.
fn escaped(s: &str) -> String {
    let mut out: String = s.chars().take(300).flat_map(char::escape_debug).collect();
    if s.chars().count() > 300 {
        out.push('…');
    }
    out
}

/// The verdict on one layer.
#[derive(Debug, Clone, Serialize)]
pub struct LayerReport {
    /// Which blob (digest, or the file path for `--layer`).
    pub layer: String,
    /// Repos it holds files of.
    pub repos: Vec<String>,
    /// Entries checked.
    pub entries: usize,
    /// What is wrong.
    pub problems: Vec<Problem>,
}

/// The verdict on a layer file or an image.
#[derive(Debug, Clone, Serialize)]
pub struct OciReport {
    /// True when nothing is wrong.
    pub ok: bool,
    /// Per layer of ours.
    pub layers: Vec<LayerReport>,
    /// Image-level problems: missing entries, config, digests.
    pub problems: Vec<Problem>,
}

/// What an entry must be.
struct Expect {
    kind: EntryKind,
}

fn expected(lock: &Lockfile, settings: &BakeSettings) -> BTreeMap<String, (String, Expect)> {
    let mut out = BTreeMap::new();
    for repo in &lock.repos {
        for part in plan_repo(repo, settings) {
            for e in part.entries {
                out.insert(e.path, (part.repo.clone(), Expect { kind: e.kind }));
            }
        }
    }
    out
}

type Raw = io::Chain<io::Cursor<Vec<u8>>, HashingReader<BufReader<File>>>;

/// A layer's tar stream, decompressed as its magic bytes say, with the raw reader recoverable.
enum Decoded {
    Plain(Raw),
    Gzip(flate2::read::MultiGzDecoder<Raw>),
    Zstd(zstd::stream::read::Decoder<'static, BufReader<Raw>>),
}

impl Decoded {
    fn into_raw(self) -> Raw {
        match self {
            Decoded::Plain(r) => r,
            Decoded::Gzip(d) => d.into_inner(),
            Decoded::Zstd(d) => d.finish().into_inner(),
        }
    }
}

impl Read for Decoded {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Decoded::Plain(r) => r.read(buf),
            Decoded::Gzip(d) => d.read(buf),
            Decoded::Zstd(d) => d.read(buf),
        }
    }
}

/// A layer blob's tar stream, decompressed as its magic bytes say, its raw bytes hashed.
fn decode(path: &Path) -> io::Result<Decoded> {
    let mut file = HashingReader::new(BufReader::with_capacity(1 << 20, File::open(path)?));
    let mut magic = [0u8; 4];
    let n = file.read(&mut magic)?;
    let blob = io::Cursor::new(magic[..n].to_vec()).chain(file);
    Ok(match magic {
        [0x1f, 0x8b, ..] => Decoded::Gzip(flate2::read::MultiGzDecoder::new(blob)),
        [0x28, 0xb5, 0x2f, 0xfd] => Decoded::Zstd(zstd::stream::read::Decoder::new(blob)?),
        _ => Decoded::Plain(blob),
    })
}

/// One entry of a layer, as `doctor` reads an image's tree.
#[derive(Debug, Clone)]
pub struct TarEntry {
    /// Path without a leading `/` or trailing `/`.
    pub path: String,
    /// Directory, symlink (its target) or anything else.
    pub kind: TarKind,
    /// Permission bits.
    pub mode: u32,
    /// Owner.
    pub uid: u64,
    /// Group.
    pub gid: u64,
    /// The content, for the entries `keep` asked for.
    pub content: Option<Vec<u8>>,
}

/// What a [`TarEntry`] is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TarKind {
    /// A directory.
    Dir,
    /// A symbolic link and its target.
    Symlink(String),
    /// A file (or any other entry).
    File,
}

/// Every entry of a layer blob (plain, gzip or zstd), with the content of those whose path
/// `keep` accepts (at most 64 KiB each).
pub fn read_entries(path: &Path, keep: &dyn Fn(&str) -> bool) -> io::Result<Vec<TarEntry>> {
    let mut archive = tar::Archive::new(decode(path)?);
    let mut out = Vec::new();
    for entry in archive.entries()? {
        let mut entry = entry?;
        let raw = entry.path()?.to_string_lossy().into_owned();
        let path = raw
            .trim_start_matches("./")
            .trim_start_matches('/')
            .trim_end_matches('/')
            .to_owned();
        let header = entry.header();
        let (mode, uid, gid) = (header.mode()? & 0o7777, header.uid()?, header.gid()?);
        let kind = match header.entry_type() {
            t if t.is_dir() => TarKind::Dir,
            t if t.is_symlink() => TarKind::Symlink(
                entry
                    .link_name()?
                    .map(|l| l.to_string_lossy().into_owned())
                    .unwrap_or_default(),
            ),
            _ => TarKind::File,
        };
        let content = if kind == TarKind::File && keep(&path) {
            let mut got = Vec::new();
            (&mut entry).take(64 * 1024).read_to_end(&mut got)?;
            Some(got)
        } else {
            None
        };
        out.push(TarEntry {
            path,
            kind,
            mode,
            uid,
            gid,
            content,
        });
    }
    Ok(out)
}

/// Checks one layer blob; returns its report, (blob sha256, diff_id) and the paths seen.
fn check_layer(
    path: &Path,
    name: String,
    want: &BTreeMap<String, (String, Expect)>,
    settings: &BakeSettings,
) -> io::Result<(LayerReport, String, String, BTreeSet<String>)> {
    // The blob digest is hashed as the file is read, the DiffID as the tar is decoded: one pass.
    let tar_hash = HashingReader::new(decode(path)?);
    let mut archive = tar::Archive::new(tar_hash);
    let (owner_uid, owner_gid) = settings.owner;
    let mut problems = Vec::new();
    let mut repos = BTreeSet::new();
    let mut seen = BTreeSet::new();
    for entry in archive.entries()? {
        let mut entry = entry?;
        let raw = entry.path()?.to_string_lossy().into_owned();
        let path = raw.trim_end_matches('/').to_owned();
        let shown = escaped(&path);
        let header = entry.header();
        let (mode, uid, gid) = (header.mode()?, header.uid()?, header.gid()?);
        let kind = header.entry_type();
        let link = entry.link_name()?.map(|l| l.to_string_lossy().into_owned());
        if uid != u64::from(owner_uid) || gid != u64::from(owner_gid) {
            problems.push(Problem::Owner {
                path: shown.clone(),
                found: format!("{uid}:{gid}"),
                expected: format!("{owner_uid}:{owner_gid}"),
            });
        }
        let Some((repo, exp)) = want.get(&path) else {
            problems.push(Problem::Unlocked { path: shown });
            continue;
        };
        repos.insert(repo.clone());
        seen.insert(path.clone());
        let expected_mode = match exp.kind {
            EntryKind::Dir => 0o755,
            EntryKind::Symlink(_) => 0o777,
            _ => 0o644,
        };
        if mode & 0o7777 != expected_mode {
            problems.push(Problem::Mode {
                path: shown.clone(),
                found: format!("{:o}", mode & 0o7777),
                expected: format!("{expected_mode:o}"),
            });
        }
        match &exp.kind {
            EntryKind::Dir if !kind.is_dir() => problems.push(Problem::NotDir { path: shown }),
            EntryKind::Symlink(target) => {
                if !kind.is_symlink() || link.as_deref() != Some(target.as_str()) {
                    problems.push(Problem::WrongSymlink {
                        path: shown,
                        found: link.as_deref().map(escaped),
                        expected: target.clone(),
                    });
                }
            }
            EntryKind::Blob { sha256, size } => {
                let mut hashed = HashingReader::new(&mut entry);
                io::copy(&mut hashed, &mut io::sink())?;
                let (actual, n, _) = hashed.finish();
                if !kind.is_file() || n != *size || &actual != sha256 {
                    problems.push(Problem::Corrupt {
                        path: shown,
                        actual: format!("{actual} ({n} bytes)"),
                        expected: format!("{sha256} ({size} bytes)"),
                    });
                }
            }
            EntryKind::Inline(bytes) => {
                let mut got = Vec::new();
                entry.read_to_end(&mut got)?;
                if &got != bytes {
                    let start: String = String::from_utf8_lossy(&got).chars().take(60).collect();
                    problems.push(Problem::ContentDiffers {
                        path: shown,
                        found: escaped(&start),
                    });
                }
            }
            EntryKind::Dir => {}
        }
    }
    // Drain what the tar reader left (end-of-archive padding), then any trailing raw bytes.
    let mut tar_hash = archive.into_inner();
    io::copy(&mut tar_hash, &mut io::sink())?;
    let (diff_id, _, decoded) = tar_hash.finish();
    let mut raw = decoded.into_raw();
    io::copy(&mut raw, &mut io::sink())?;
    let (blob_hex, _, _) = raw.into_inner().1.finish();
    let report = LayerReport {
        layer: name,
        repos: repos.into_iter().collect(),
        entries: seen.len(),
        problems,
    };
    Ok((report, blob_hex, diff_id, seen))
}

/// Checks one layer file (`verify --layer`): every entry it holds must match the lock.
pub fn verify_layer(
    path: &Path,
    lock: &Lockfile,
    settings: &BakeSettings,
) -> io::Result<OciReport> {
    let want = expected(lock, settings);
    let (report, _, _, _) = check_layer(path, path.display().to_string(), &want, settings)?;
    let ok = report.problems.is_empty() && !report.repos.is_empty();
    let problems = if report.repos.is_empty() {
        vec![Problem::NoLockedFiles]
    } else {
        vec![]
    };
    Ok(OciReport {
        ok,
        layers: vec![report],
        problems,
    })
}

/// What the image's loaders would not find: for each loader, the locked snapshots missing from
/// the cache its `Env` sends it to (only our layers count), and the offline switch when the
/// bake sets it.
fn loader_problems(
    config: &serde_json::Value,
    lock: &Lockfile,
    settings: &BakeSettings,
    seen: &BTreeSet<String>,
) -> Vec<Problem> {
    let vars: Vec<String> = super::model::string_list(&config["config"]["Env"]);
    let user = config["config"]["User"].as_str().unwrap_or_default();
    let env = loaders::image_env(&vars, loaders::default_home(user));
    let mut problems = Vec::new();
    for r in loaders::resolve_all(&env) {
        let root = r.cache.trim_end_matches('/');
        let missing: Vec<String> = lock
            .repos
            .iter()
            .filter(|repo| {
                let snapshot = format!(
                    "{}/{}/snapshots/{}",
                    root.trim_start_matches('/'),
                    repo_folder(repo.kind, &repo.id),
                    repo.commit
                );
                !root.starts_with('/') || !seen.contains(&snapshot)
            })
            .map(|repo| format!("{}/{}@{}", repo.kind, repo.id, repo.commit))
            .collect();
        if !missing.is_empty() {
            problems.push(Problem::LoaderCache {
                loader: r.loader.to_string(),
                variable: r.variable.to_owned(),
                points_to: r.cache,
                missing,
            });
        }
    }
    if settings.offline_env && !loaders::offline(&env) {
        let shown = |k: &str| {
            format!(
                "{k}={}",
                env(k).as_deref().map_or("(unset)".into(), escaped)
            )
        };
        problems.push(Problem::Offline {
            found: format!(
                "{}, {}",
                shown("HF_HUB_OFFLINE"),
                shown("TRANSFORMERS_OFFLINE")
            ),
        });
    }
    problems
}

/// Checks an image in an OCI layout (`verify --oci`): the manifest and config against their
/// digests, every base layer against its digest, our layers' digests, DiffIDs and every entry,
/// nothing locked missing, and the config environment: `HF_HOME`, every loader's cache as the
/// `Env` resolves it (crate::loaders) and the offline switch.
pub fn verify_layout(
    dir: &Path,
    tag: &str,
    lock: &Lockfile,
    settings: &BakeSettings,
) -> Result<OciReport, OciError> {
    let platform = Platform::parse(&settings.platform).map_err(|detail| OciError::Invalid {
        what: "--platform".into(),
        detail,
    })?;
    let src = LayoutSource {
        dir: dir.to_owned(),
        tag: Some(tag.to_owned()),
    };
    // A layout source does no network I/O: its futures complete on first poll.
    let image = futures::executor::block_on(source::read_image(&src, &platform))?;
    let want = expected(lock, settings);
    let diff_ids = super::model::string_list(&image.config["rootfs"]["diff_ids"]);
    let mut problems = Vec::new();
    if diff_ids.len() != image.layers.len() {
        problems.push(Problem::DiffIdCount {
            diff_ids: diff_ids.len(),
            layers: image.layers.len(),
        });
    }
    let mut layers = Vec::new();
    let mut seen_all = BTreeSet::new();
    for (i, desc) in image.layers.iter().enumerate() {
        if desc.annotation(ANNOTATION_REPO).is_none() {
            if let Err(e) = src.verified_blob(desc) {
                problems.push(Problem::BaseLayer {
                    digest: desc.digest.to_string(),
                    detail: e.to_string(),
                });
            }
            continue;
        }
        let path = blob_path(dir, &desc.digest);
        let (mut report, blob_hex, diff_id, seen) =
            check_layer(&path, desc.digest.to_string(), &want, settings)
                .map_err(OciError::io(&path))?;
        let blob = Digest::from_sha256_hex(&blob_hex).map_err(|source| OciError::Digest {
            what: path.display().to_string(),
            source,
        })?;
        if blob != desc.digest {
            report.problems.push(Problem::BlobDigest {
                expected: desc.digest.to_string(),
                actual: blob.to_string(),
            });
        }
        let diff_id = format!("sha256:{diff_id}");
        if diff_ids.get(i) != Some(&diff_id) {
            report.problems.push(Problem::DiffId {
                layer: desc.digest.to_string(),
                actual: diff_id,
            });
        }
        seen_all.extend(seen);
        layers.push(report);
    }
    for (path, (repo, _)) in &want {
        if !seen_all.contains(path) {
            problems.push(Problem::Missing {
                repo: repo.clone(),
                path: path.clone(),
            });
        }
    }
    let env = super::model::string_list(&image.config["config"]["Env"]);
    let want_env = format!("HF_HOME={}", settings.hf_home);
    if !env.contains(&want_env) {
        problems.push(Problem::Env { expected: want_env });
    }
    problems.extend(loader_problems(&image.config, lock, settings, &seen_all));
    let ok = problems.is_empty() && layers.iter().all(|l| l.problems.is_empty());
    Ok(OciReport {
        ok,
        layers,
        problems,
    })
}
