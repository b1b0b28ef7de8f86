//! Checks image layers against the lock: every entry's type, mode, owner, symlink target and
//! content hash, the layer digests and DiffIDs, and (for a whole image) that nothing locked is
//! missing.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::Path;

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::layer::{EntryKind, plan_repo};
use super::layout;
use super::{ANNOTATION_REPO, Platform};
use crate::lock::Lockfile;
use crate::manifest::BakeSettings;

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
    pub problems: Vec<String>,
}

/// The verdict on a layer file or an image.
#[derive(Debug, Clone, Serialize)]
pub struct OciReport {
    /// True when nothing is wrong.
    pub ok: bool,
    /// Per layer of ours.
    pub layers: Vec<LayerReport>,
    /// Image-level problems: missing entries, config, digests.
    pub problems: Vec<String>,
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

/// A reader that hashes what passes through it.
struct HashRead<R: Read> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> Read for HashRead<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

type Raw = io::Chain<io::Cursor<Vec<u8>>, HashRead<BufReader<File>>>;

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

/// Checks one layer blob; returns its report, (blob sha256, diff_id) and the paths seen.
fn check_layer(
    path: &Path,
    name: String,
    want: &BTreeMap<String, (String, Expect)>,
    settings: &BakeSettings,
) -> io::Result<(LayerReport, String, String, BTreeSet<String>)> {
    // The blob digest is hashed as the file is read, the DiffID as the tar is decoded: one pass.
    let mut file = HashRead {
        inner: BufReader::with_capacity(1 << 20, File::open(path)?),
        hasher: Sha256::new(),
    };
    let mut magic = [0u8; 4];
    let n = file.read(&mut magic)?;
    let blob = io::Cursor::new(magic[..n].to_vec()).chain(file);
    let decoded = match magic {
        [0x1f, 0x8b, ..] => Decoded::Gzip(flate2::read::MultiGzDecoder::new(blob)),
        [0x28, 0xb5, 0x2f, 0xfd] => Decoded::Zstd(zstd::stream::read::Decoder::new(blob)?),
        _ => Decoded::Plain(blob),
    };
    let tar_hash = HashRead {
        inner: decoded,
        hasher: Sha256::new(),
    };
    let mut archive = tar::Archive::new(tar_hash);
    let (owner_uid, owner_gid) = settings.owner;
    let mut problems = Vec::new();
    let mut repos = BTreeSet::new();
    let mut seen = BTreeSet::new();
    for entry in archive.entries()? {
        let mut entry = entry?;
        let raw = entry.path()?.to_string_lossy().into_owned();
        let path = raw.trim_end_matches('/').to_owned();
        let header = entry.header();
        let (mode, uid, gid) = (header.mode()?, header.uid()?, header.gid()?);
        let kind = header.entry_type();
        let link = entry.link_name()?.map(|l| l.to_string_lossy().into_owned());
        if uid != u64::from(owner_uid) || gid != u64::from(owner_gid) {
            problems.push(format!(
                "{path}: owner {uid}:{gid}, expected {owner_uid}:{owner_gid}"
            ));
        }
        let Some((repo, exp)) = want.get(&path) else {
            problems.push(format!("{path}: not part of any locked repo"));
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
            problems.push(format!(
                "{path}: mode {:o}, expected {expected_mode:o}",
                mode & 0o7777
            ));
        }
        match &exp.kind {
            EntryKind::Dir if !kind.is_dir() => {
                problems.push(format!("{path}: expected a directory"))
            }
            EntryKind::Symlink(target) => {
                if !kind.is_symlink() || link.as_deref() != Some(target.as_str()) {
                    problems.push(format!(
                        "{path}: expected a symlink to {target}, found {link:?}"
                    ));
                }
            }
            EntryKind::Blob { sha256, size } => {
                let mut h = Sha256::new();
                let n = io::copy(&mut entry, &mut HashSink(&mut h))?;
                let actual = hex::encode(h.finalize());
                if !kind.is_file() || n != *size || &actual != sha256 {
                    problems.push(format!(
                        "{path}: sha256 {actual} ({n} bytes), expected {sha256} ({size} bytes)"
                    ));
                }
            }
            EntryKind::Inline(bytes) => {
                let mut got = Vec::new();
                entry.read_to_end(&mut got)?;
                if &got != bytes {
                    problems.push(format!(
                        "{path}: content differs from the lock ({:?})",
                        String::from_utf8_lossy(&got)
                            .chars()
                            .take(60)
                            .collect::<String>()
                    ));
                }
            }
            EntryKind::Dir => {}
        }
    }
    // Drain what the tar reader left (end-of-archive padding), then any trailing raw bytes.
    let mut tar_hash = archive.into_inner();
    io::copy(&mut tar_hash, &mut io::sink())?;
    let diff_id = hex::encode(tar_hash.hasher.finalize());
    let mut raw = tar_hash.inner.into_raw();
    io::copy(&mut raw, &mut io::sink())?;
    let blob_hex = hex::encode(raw.into_inner().1.hasher.finalize());
    let report = LayerReport {
        layer: name,
        repos: repos.into_iter().collect(),
        entries: seen.len(),
        problems,
    };
    Ok((report, blob_hex, diff_id, seen))
}

struct HashSink<'a>(&'a mut Sha256);
impl io::Write for HashSink<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
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
        vec!["the layer holds no file of any locked repo".to_owned()]
    } else {
        vec![]
    };
    Ok(OciReport {
        ok,
        layers: vec![report],
        problems,
    })
}

/// Checks an image in an OCI layout (`verify --oci`): our layers' digests and DiffIDs, every
/// entry, nothing locked missing, and the config environment.
pub fn verify_layout(
    dir: &Path,
    tag: &str,
    lock: &Lockfile,
    settings: &BakeSettings,
) -> Result<OciReport, String> {
    let platform = Platform::parse(&settings.platform)?;
    let image = layout::read(dir, Some(tag), &platform)?;
    let want = expected(lock, settings);
    let diff_ids: Vec<String> = image.config["rootfs"]["diff_ids"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let mut problems = Vec::new();
    if diff_ids.len() != image.layers.len() {
        problems.push(format!(
            "config lists {} DiffIDs for {} layers",
            diff_ids.len(),
            image.layers.len()
        ));
    }
    let mut layers = Vec::new();
    let mut seen_all = BTreeSet::new();
    for (i, desc) in image.layers.iter().enumerate() {
        let path = layout::blob_path(dir, &desc.digest);
        let ours = desc
            .annotations
            .as_ref()
            .is_some_and(|a| a.contains_key(ANNOTATION_REPO));
        if !ours {
            if !std::fs::metadata(&path).is_ok_and(|m| m.len() == desc.size) {
                problems.push(format!(
                    "base layer {} is missing or has the wrong size",
                    desc.digest
                ));
            }
            continue;
        }
        let (mut report, blob_hex, diff_id, seen) =
            check_layer(&path, desc.digest.clone(), &want, settings)
                .map_err(|e| format!("{}: {e}", path.display()))?;
        if format!("sha256:{blob_hex}") != desc.digest {
            report
                .problems
                .push(format!("blob hashes to sha256:{blob_hex}, not its digest"));
        }
        if diff_ids.get(i).map(String::as_str) != Some(&format!("sha256:{diff_id}")) {
            report
                .problems
                .push(format!("DiffID sha256:{diff_id} does not match the config"));
        }
        seen_all.extend(seen);
        layers.push(report);
    }
    for (path, (repo, _)) in &want {
        if !seen_all.contains(path) {
            problems.push(format!("{repo}: {path} is missing from the image"));
        }
    }
    let env: Vec<&str> = image.config["config"]["Env"]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
        .unwrap_or_default();
    let want_env = format!("HF_HOME={}", settings.hf_home);
    if !env.contains(&want_env.as_str()) {
        problems.push(format!("the image environment lacks {want_env}"));
    }
    let ok = problems.is_empty() && layers.iter().all(|l| l.problems.is_empty());
    Ok(OciReport {
        ok,
        layers,
        problems,
    })
}
