//! `verify --oci` and `verify --layer`: checks image layers against the lock, in either
//! arrangement: every entry's type, mode, owner,
//! symlink or hard-link target and content hash, the layer digests and DiffIDs, and (for a
//! whole image, or every platform of an index) that nothing locked is missing.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::Arc;

use serde::Serialize;

use super::ANNOTATION_REPO;
use super::entry_index::EntryIndex;
use super::plan::{EntryKind, LayerPlan, check_layout, plan_repo, repo_root};
use super::verify_source::VerifySource;
use crate::hash::HashingReader;
use crate::hfcache::repo_folder;
use crate::loaders;
use crate::lock::Lockfile;
use crate::manifest::bake_table::{BakeSettings, ModelArrangement};
use crate::oci::Platform;
use crate::oci::digest::Digest;
use crate::oci::error::OciError;
use crate::oci::model::{self, Document};
use crate::oci::source::{self, LayoutSource};
use crate::oci::tar_reader::decode;

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
    /// One of our layers whose blob is not what its descriptor says: missing, a symlink or not
    /// a regular file, or of another size.
    LayerBlob {
        /// Its digest.
        digest: String,
        /// What is wrong.
        detail: String,
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
    /// Something other than a regular file where the `files` layout (or a cache blob) needs
    /// the locked bytes: a symlink, a hard link, a directory.
    NotAFile {
        /// Entry path.
        path: String,
        /// What is there.
        found: String,
    },
    /// Not the hard link to the group's first path that the `files` layout writes.
    WrongHardLink {
        /// Entry path.
        path: String,
        /// What is there.
        found: String,
        /// The path it must link to.
        expected: String,
    },
    /// A platform the bake was asked for that the image's index does not list.
    PlatformMissing {
        /// The platform.
        platform: String,
        /// The platforms the index lists.
        available: String,
    },
    /// The tag names a single image where an index of several platforms was expected.
    NotAnIndex {
        /// The platforms expected.
        platforms: String,
    },
    /// A locked repo that no layer of the image is annotated with (`verify --attestations-only`,
    /// which reads no layer).
    LayerMissing {
        /// The repo (`model/acme/tiny`).
        repo: String,
        /// Its locked commit.
        commit: String,
    },
    /// A problem of one platform's image in an index.
    InPlatform {
        /// `linux/arm64`…
        platform: String,
        /// What is wrong there.
        detail: Box<Problem>,
    },
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
            Problem::LayerBlob { digest, detail } => write!(f, "layer {digest}: {detail}"),
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
            Problem::NotAFile { path, found } => {
                write!(f, "{path}: expected a regular file, found {found}")
            }
            Problem::WrongHardLink {
                path,
                found,
                expected,
            } => write!(
                f,
                "{path}: expected a hard link to {expected}, found {found}"
            ),
            Problem::PlatformMissing {
                platform,
                available,
            } => write!(
                f,
                "the index has no {platform} image (it lists: {available}); bake with --platform listing it"
            ),
            Problem::NotAnIndex { platforms } => write!(
                f,
                "the tag names a single image, not an index of {platforms}: bake with --platform {platforms}"
            ),
            Problem::InPlatform { platform, detail } => write!(f, "{platform}: {detail}"),
            Problem::LayerMissing { repo, commit } => {
                write!(f, "no layer of the image holds {repo} at commit {commit}")
            }
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

fn expected(lock: &Arc<Lockfile>, settings: &BakeSettings) -> EntryIndex {
    EntryIndex::from_plans((0..lock.repos.len()).flat_map(|i| plan_repo(lock, i, settings)))
}

/// Compares the bytes written into it with those read from `read`, keeping the first bytes
/// read for the message: a produced file (`trees/<commit>.json`) is checked without being
/// held.
struct SameBytes<R: Read> {
    read: R,
    head: Vec<u8>,
    differs: bool,
}

/// How many bytes of a differing file are kept to show its start.
const SHOWN_HEAD: usize = 240;

impl<R: Read> SameBytes<R> {
    fn take(&mut self, n: usize) -> io::Result<Vec<u8>> {
        let mut got = Vec::with_capacity(n);
        (&mut self.read).take(n as u64).read_to_end(&mut got)?;
        let room = SHOWN_HEAD.saturating_sub(self.head.len()).min(got.len());
        self.head.extend_from_slice(&got[..room]);
        Ok(got)
    }

    /// True when what was written is all there was to read; else the start of what was read.
    fn finish(mut self) -> io::Result<Result<(), String>> {
        if !self.differs && !self.take(1)?.is_empty() {
            self.differs = true;
        }
        if !self.differs {
            return Ok(Ok(()));
        }
        let more = SHOWN_HEAD.saturating_sub(self.head.len());
        self.take(more)?;
        Ok(Err(String::from_utf8_lossy(&self.head)
            .chars()
            .take(60)
            .collect()))
    }
}

impl<R: Read> Write for SameBytes<R> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if !self.differs && self.take(buf.len())? != buf {
            self.differs = true;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Which [`EntryIndex`] entries were found: one bit each.
#[derive(Debug, Clone, Default)]
struct Seen {
    bits: Vec<u64>,
}

impl Seen {
    /// Marks entry `i`.
    fn insert(&mut self, i: usize) {
        if self.bits.len() <= i / 64 {
            self.bits.resize(i / 64 + 1, 0);
        }
        self.bits[i / 64] |= 1 << (i % 64);
    }

    /// True when entry `i` was found.
    fn contains(&self, i: usize) -> bool {
        self.bits
            .get(i / 64)
            .is_some_and(|w| w & (1 << (i % 64)) != 0)
    }

    /// How many entries were found.
    fn count(&self) -> usize {
        self.bits.iter().map(|w| w.count_ones() as usize).sum()
    }

    /// Adds what `other` found.
    fn union(&mut self, other: &Seen) {
        if self.bits.len() < other.bits.len() {
            self.bits.resize(other.bits.len(), 0);
        }
        for (a, b) in self.bits.iter_mut().zip(&other.bits) {
            *a |= b;
        }
    }
}

/// How an entry that should be something else is shown: its type and, for links, the target.
fn describe(kind: tar::EntryType, link: Option<&str>) -> String {
    let link = link.map(escaped).unwrap_or_default();
    match kind {
        t if t.is_symlink() => format!("a symlink to {link}"),
        t if t.is_hard_link() => format!("a hard link to {link}"),
        t if t.is_dir() => "a directory".into(),
        t if t.is_file() => "a regular file".into(),
        _ => "a special file".into(),
    }
}

/// What reading one layer found: its report, the blob's sha256 and size, its DiffID (hex) and
/// the locked paths it holds.
struct LayerRead {
    report: LayerReport,
    blob_hex: String,
    blob_size: u64,
    diff_id: String,
    seen: Seen,
}

/// Checks one layer blob (`blob`, read from its start).
fn check_layer(
    blob: impl Read + Send + 'static,
    name: String,
    want: &EntryIndex,
    owner: (u32, u32),
) -> io::Result<LayerRead> {
    // The blob digest is hashed as the file is read, the DiffID as the tar is decoded: one pass.
    let tar_hash = HashingReader::new(decode(blob)?);
    let mut archive = tar::Archive::new(tar_hash);
    let (owner_uid, owner_gid) = owner;
    let mut problems = Vec::new();
    let mut repos = BTreeSet::new();
    let mut seen = Seen::default();
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
        let Some(i) = want.find(&path) else {
            problems.push(Problem::Unlocked { path: shown });
            continue;
        };
        let exp = want.kind(i);
        // A folder several repos share (`hub/`, `models/acme/`) says nothing of what the layer
        // holds; its files do.
        if !matches!(exp, EntryKind::Dir) && !repos.contains(want.repo(i)) {
            repos.insert(want.repo(i).to_owned());
        }
        seen.insert(i);
        let expected_mode = match exp {
            EntryKind::Dir => 0o755,
            EntryKind::HardLink(_) => 0o644,
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
        match &exp {
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
            EntryKind::Blob { .. } if !kind.is_file() => problems.push(Problem::NotAFile {
                path: shown,
                found: describe(kind, link.as_deref()),
            }),
            EntryKind::HardLink(target) => {
                if !kind.is_hard_link() || link.as_deref() != Some(target.as_str()) {
                    problems.push(Problem::WrongHardLink {
                        path: shown,
                        found: describe(kind, link.as_deref()),
                        expected: target.clone(),
                    });
                }
            }
            EntryKind::Blob { sha256, size } => {
                let mut hashed = HashingReader::new(&mut entry);
                io::copy(&mut hashed, &mut io::sink())?;
                let (actual, n, _) = hashed.finish();
                if n != *size || &actual != sha256 {
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
            EntryKind::Trees => {
                // Buffered: the listing is serialised in small writes.
                let mut same = io::BufWriter::with_capacity(
                    1 << 16,
                    SameBytes {
                        read: &mut entry,
                        head: Vec::new(),
                        differs: false,
                    },
                );
                want.plan(i).write_trees(&mut same)?;
                let same = same.into_inner().map_err(io::IntoInnerError::into_error)?;
                if let Err(start) = same.finish()? {
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
    let (blob_hex, blob_size, _) = raw.into_inner().1.finish();
    let report = LayerReport {
        layer: name,
        repos: repos.into_iter().collect(),
        entries: seen.count(),
        problems,
    };
    Ok(LayerRead {
        report,
        blob_hex,
        blob_size,
        diff_id,
        seen,
    })
}

/// Checks one layer file (`verify --layer`): every entry it holds must match the lock.
pub fn verify_layer(
    path: &Path,
    lock: &Arc<Lockfile>,
    settings: &BakeSettings,
) -> io::Result<OciReport> {
    let want = expected(lock, settings);
    // A file named on the command line: followed if it is a symlink, like any other argument.
    let file = File::open(path)?;
    let report = check_layer(file, path.display().to_string(), &want, settings.owner)?.report;
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

/// Checks a layer file against one plan, as `bake` does before it uses or keeps a layer it did
/// not build (one downloaded from the cache repository): every entry of the plan and nothing
/// else, each with its type, mode, owner (`owner`), link target and content (each file's size
/// and sha256), and the tar's DiffID against `diff_id`. `Ok(Err(why))` names the first problems.
pub fn check_planned_layer(
    file: File,
    plan: &LayerPlan,
    owner: (u32, u32),
    diff_id: &Digest,
) -> io::Result<Result<(), String>> {
    let want = EntryIndex::from_plans([plan.clone()]);
    let LayerRead {
        report,
        diff_id: actual,
        seen,
        ..
    } = check_layer(file, String::new(), &want, owner)?;
    let mut problems: Vec<String> = report.problems.iter().map(ToString::to_string).collect();
    problems.extend(
        want.missing(|i| seen.contains(i))
            .into_iter()
            .map(|(p, _)| format!("{} is missing", escaped(&p))),
    );
    if diff_id.as_str() != format!("sha256:{actual}") {
        problems.push(format!(
            "its DiffID is sha256:{actual}, its record says {diff_id}"
        ));
    }
    if problems.is_empty() {
        return Ok(Ok(()));
    }
    let shown = problems
        .iter()
        .take(5)
        .cloned()
        .collect::<Vec<_>>()
        .join("; ");
    Ok(Err(match problems.len() {
        n if n > 5 => format!("{shown}; and {} more", n - 5),
        _ => shown,
    }))
}

/// What the image's loaders would not find: for each loader, the locked snapshots missing from
/// the cache its `Env` sends it to (only our layers count; `hf-cache` layout only), and the
/// offline switch when the bake sets it.
fn loader_problems(
    config: &serde_json::Value,
    lock: &Lockfile,
    settings: &BakeSettings,
    present: &dyn Fn(&str) -> bool,
) -> Vec<Problem> {
    let vars: Vec<String> = model::string_list(&config["config"]["Env"]);
    let user = config["config"]["User"].as_str().unwrap_or_default();
    let env = loaders::image_env(&vars, loaders::default_home(user));
    let mut problems = Vec::new();
    let caches = match settings.layout {
        ModelArrangement::HfCache => loaders::resolve_all(&env),
        ModelArrangement::Files => Vec::new(),
    };
    for r in caches {
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
                !root.starts_with('/') || !present(&snapshot)
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

/// Checks an image in an OCI layout (`verify --oci`); see [`verify_source`].
pub fn verify_layout(
    dir: &Path,
    tag: &str,
    lock: &Arc<Lockfile>,
    settings: &BakeSettings,
) -> Result<OciReport, OciError> {
    let src = LayoutSource {
        dir: dir.to_owned(),
        tag: Some(tag.to_owned()),
    };
    verify_source(&src, lock, settings, true).map(|v| v.report)
}

/// An image found and checked: the verdict, and the documents it is made of (what its
/// attestations must name).
#[derive(Debug, Clone)]
pub struct Verified {
    /// The verdict.
    pub report: OciReport,
    /// The document the reference names (a manifest, or an index).
    pub root: model::Descriptor,
    /// For an index, each platform's manifest.
    pub manifests: Vec<model::Descriptor>,
}

/// Checks the image `src` names against the lock: the manifest and config against their
/// digests, every base layer (hashed in a layout; never downloaded from a registry), our
/// layers' digests, sizes, DiffIDs and every entry, nothing locked missing, and the config
/// environment: for the `hf-cache` layout `HF_HOME` and every loader's cache as the `Env`
/// resolves it (crate::loaders), and the offline switch. An index is checked platform by
/// platform (every platform it lists, and every platform asked for must be listed); a layer
/// shared by several platforms is read once. Without `content` (`--attestations-only`) no layer
/// is read: each locked repo must only have a layer annotated with its commit.
pub fn verify_source(
    src: &dyn VerifySource,
    lock: &Arc<Lockfile>,
    settings: &BakeSettings,
    content: bool,
) -> Result<Verified, OciError> {
    check_layout(lock, settings).map_err(|e| OciError::Invalid {
        what: "the layout options".into(),
        detail: e.to_string(),
    })?;
    let platforms = Platform::parse_list(&settings.platform).map_err(|e| OciError::Invalid {
        what: "--platform".into(),
        detail: e.to_string(),
    })?;
    let label = src.label();
    let (bytes, declared) = src.root()?;
    let mut checker = Checker {
        src,
        want: expected(lock, settings),
        lock,
        settings,
        content,
        layers: Vec::new(),
        checked: BTreeMap::new(),
    };
    let mut problems = Vec::new();
    let mut manifests = Vec::new();
    let doc = Document::parse(
        &bytes,
        declared.as_deref(),
        &format!("the manifest of {label}"),
    )?;
    let root_type = match &doc {
        Document::Manifest(m) => m.media_type.clone(),
        Document::Index(i) => i.media_type.clone(),
    };
    let root = model::Descriptor::new(
        declared
            .as_deref()
            .or(root_type.as_deref())
            .unwrap_or(crate::oci::MEDIA_MANIFEST),
        Digest::of(&bytes),
        bytes.len() as u64,
    );
    match doc {
        Document::Manifest(manifest) => {
            if platforms.len() > 1 {
                problems.push(Problem::NotAnIndex {
                    platforms: settings.platform.clone(),
                });
            }
            problems.extend(checker.image(&manifest)?);
        }
        Document::Index(index) => {
            // One label per entry, in the index's order.
            let listed: Vec<String> = index
                .manifests
                .iter()
                .map(|m| match &m.platform {
                    Some(p) => Platform {
                        os: p.os.clone(),
                        architecture: p.architecture.clone(),
                        variant: p.variant.clone(),
                    }
                    .to_string(),
                    None => format!("(no platform) {}", m.digest),
                })
                .collect();
            for p in &platforms {
                let found = index
                    .manifests
                    .iter()
                    .any(|m| m.platform.as_ref().is_some_and(|s| p.matches(s)));
                if !found {
                    problems.push(Problem::PlatformMissing {
                        platform: p.to_string(),
                        available: listed.join(", "),
                    });
                }
            }
            for (entry, platform) in index.manifests.iter().zip(&listed) {
                let what = format!("the {platform} manifest of {label}");
                let bytes = src.small_blob(entry, crate::http_body::METADATA_LIMIT, &what)?;
                let Document::Manifest(manifest) =
                    Document::parse(&bytes, Some(&entry.media_type), &what)?
                else {
                    return Err(OciError::Invalid {
                        what,
                        detail: "an index inside the index; modelbake writes one level".into(),
                    });
                };
                manifests.push(entry.clone());
                problems.extend(checker.image(&manifest)?.into_iter().map(|p| {
                    Problem::InPlatform {
                        platform: platform.clone(),
                        detail: Box::new(p),
                    }
                }));
            }
        }
    }
    let layers = checker.layers;
    let ok = problems.is_empty() && layers.iter().all(|l| l.problems.is_empty());
    Ok(Verified {
        report: OciReport {
            ok,
            layers,
            problems,
        },
        root,
        manifests,
    })
}

/// Checks the images of one source, remembering each layer's verdict so that a layer shared
/// by several platforms is read and hashed once.
struct Checker<'a> {
    src: &'a dyn VerifySource,
    want: EntryIndex,
    lock: &'a Lockfile,
    settings: &'a BakeSettings,
    /// Read our layers (false: `--attestations-only`).
    content: bool,
    /// Reports of our layers, each once, in the order first met.
    layers: Vec<LayerReport>,
    /// Per layer digest: the verdict on it.
    checked: BTreeMap<Digest, Verdict>,
}

/// A layer's verdict: (its DiffID as hashed, the paths it holds) for ours, an empty one for a
/// base layer that matched its digest, or what is wrong with a base layer.
type Verdict = Result<(String, Seen), String>;

impl Checker<'_> {
    /// The problems of one image manifest (its layers' own problems go to `self.layers`).
    fn image(&mut self, manifest: &model::Manifest) -> Result<Vec<Problem>, OciError> {
        let label = self.src.label();
        let config_what = format!("the config of {label}");
        let bytes = self
            .src
            .small_blob(&manifest.config, source::CONFIG_LIMIT, &config_what)?;
        let config: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|e| OciError::Invalid {
                what: config_what,
                detail: format!("not JSON: {e}"),
            })?;
        let diff_ids = model::string_list(&config["rootfs"]["diff_ids"]);
        let mut problems = Vec::new();
        if diff_ids.len() != manifest.layers.len() {
            problems.push(Problem::DiffIdCount {
                diff_ids: diff_ids.len(),
                layers: manifest.layers.len(),
            });
        }
        if !self.content {
            problems.extend(self.annotated_layers(manifest));
            problems.extend(self.env_problems(&config, None));
            return Ok(problems);
        }
        let mut seen_all = Seen::default();
        for (i, desc) in manifest.layers.iter().enumerate() {
            let ours = desc.annotation(ANNOTATION_REPO).is_some();
            if !self.checked.contains_key(&desc.digest) {
                let verdict = if ours {
                    self.our_layer(desc)?
                } else {
                    self.src
                        .base_layer(desc)
                        .map(|_| (String::new(), Seen::default()))
                };
                self.checked.insert(desc.digest.clone(), verdict);
            }
            match &self.checked[&desc.digest] {
                Err(detail) if ours => problems.push(Problem::LayerBlob {
                    digest: desc.digest.to_string(),
                    detail: detail.clone(),
                }),
                Err(detail) => problems.push(Problem::BaseLayer {
                    digest: desc.digest.to_string(),
                    detail: detail.clone(),
                }),
                Ok(_) if !ours => {}
                Ok((diff_id, seen)) => {
                    if diff_ids.get(i) != Some(diff_id) {
                        problems.push(Problem::DiffId {
                            layer: desc.digest.to_string(),
                            actual: diff_id.clone(),
                        });
                    }
                    seen_all.union(seen);
                }
            }
        }
        for (path, repo) in self.want.missing(|i| seen_all.contains(i)) {
            problems.push(Problem::Missing {
                repo: repo.to_owned(),
                path,
            });
        }
        problems.extend(self.env_problems(&config, Some(&seen_all)));
        Ok(problems)
    }

    /// The config environment's problems: `HF_HOME` for the `hf-cache` layout, the loaders'
    /// caches (only when the image's entries were read: `seen`), the offline switch.
    fn env_problems(&self, config: &serde_json::Value, seen: Option<&Seen>) -> Vec<Problem> {
        let mut problems = Vec::new();
        if self.settings.layout == ModelArrangement::HfCache {
            let env = model::string_list(&config["config"]["Env"]);
            let want_env = format!("HF_HOME={}", self.settings.hf_home);
            if !env.contains(&want_env) {
                problems.push(Problem::Env { expected: want_env });
            }
        }
        // Unread layers (`seen` is `None`): take every locked snapshot as present, and check
        // only where the loaders look and the offline switch.
        let present = |path: &str| match seen {
            Some(seen) => self.want.find(path).is_some_and(|i| seen.contains(i)),
            None => self
                .lock
                .repos
                .iter()
                .any(|r| snapshot_path(self.settings, r) == path),
        };
        problems.extend(loader_problems(config, self.lock, self.settings, &present));
        problems
    }

    /// `--attestations-only`: each locked repo must have a layer annotated with its commit.
    fn annotated_layers(&self, manifest: &model::Manifest) -> Vec<Problem> {
        self.lock
            .repos
            .iter()
            .filter(|r| {
                let name = format!("{}/{}", r.kind, r.id);
                !manifest.layers.iter().any(|l| {
                    l.annotation(ANNOTATION_REPO) == Some(name.as_str())
                        && l.annotation(super::ANNOTATION_COMMIT) == Some(r.commit.as_str())
                })
            })
            .map(|r| Problem::LayerMissing {
                repo: format!("{}/{}", r.kind, r.id),
                commit: r.commit.clone(),
            })
            .collect()
    }

    /// Reads and hashes one of our layers, recording its report. A blob that cannot be opened
    /// is its verdict's error; one of another size than its descriptor says is a problem of
    /// its report, and its entries are still checked.
    fn our_layer(&mut self, desc: &model::Descriptor) -> Result<Verdict, OciError> {
        let blob = match self.src.open_layer(desc) {
            Ok(b) => b,
            Err(e) => return Ok(Err(e)),
        };
        let read = match check_layer(
            blob,
            desc.digest.to_string(),
            &self.want,
            self.settings.owner,
        ) {
            Ok(r) => r,
            Err(e) => return Ok(Err(format!("reading it failed: {e}"))),
        };
        let mut report = read.report;
        if read.blob_size != desc.size {
            report.problems.push(Problem::LayerBlob {
                digest: desc.digest.to_string(),
                detail: format!(
                    "{} bytes, but its descriptor says {}",
                    read.blob_size, desc.size
                ),
            });
        }
        let blob = Digest::from_sha256_hex(&read.blob_hex).map_err(|source| OciError::Digest {
            what: desc.digest.to_string(),
            source,
        })?;
        if blob != desc.digest {
            report.problems.push(Problem::BlobDigest {
                expected: desc.digest.to_string(),
                actual: blob.to_string(),
            });
        }
        self.layers.push(report);
        Ok(Ok((format!("sha256:{}", read.diff_id), read.seen)))
    }
}

/// Where a repo's snapshot folder is in an `hf-cache` image, as layer paths are written.
fn snapshot_path(settings: &BakeSettings, repo: &crate::lock::LockedRepo) -> String {
    format!("{}/snapshots/{}", repo_root(repo, settings), repo.commit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_produced_file_is_compared_while_read() {
        let same = |expected: &[u8], read: &[u8]| {
            let mut s = SameBytes {
                read,
                head: Vec::new(),
                differs: false,
            };
            for piece in expected.chunks(3) {
                s.write_all(piece).unwrap();
            }
            s.finish().unwrap()
        };
        assert_eq!(same(b"{\"files\": 1}", b"{\"files\": 1}"), Ok(()));
        assert_eq!(same(b"abcdef", b"abcxef"), Err("abcxef".into()));
        assert_eq!(same(b"abcdef", b"abc"), Err("abc".into()));
        assert_eq!(same(b"abc", b"abcdef"), Err("abcdef".into()));
        assert_eq!(same(b"", b""), Ok(()));
    }

    #[test]
    fn seen_sets_count_and_merge_their_bits() {
        let mut a = Seen::default();
        a.insert(3);
        a.insert(3);
        a.insert(130);
        let mut b = Seen::default();
        b.insert(64);
        assert!(a.contains(3) && a.contains(130) && !a.contains(64) && !a.contains(999));
        assert_eq!(a.count(), 2);
        b.union(&a);
        assert_eq!(b.count(), 3);
        assert!(b.contains(64) && b.contains(130));
    }
}
