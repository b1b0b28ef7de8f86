//! Which arrangement an image's models are in (`hf-cache` or `files`), told from the paths its
//! layers hold, for commands that examine an image without `--layout` (`doctor --oci`,
//! `doctor --image`; `verify --oci` can call [`detect_in_layout`] before it checks, and
//! [`choose`] to apply `--layout` first).
//!
//! The signal is the layers' entries, read against the lock: a folder named like a locked
//! repo's huggingface_hub cache folder (`models--org--name`, `datasets--…`, `spaces--…`) means
//! `hf-cache`; a locked file at `<folder>/<org>/<name>/<path>` (`datasets/…`, `spaces/…`), or
//! for a one-repo lock at `<models_dir>/<path>`, means `files`. Evidence in a layer `bake` made
//! (annotated `dev.modelbake.repo`) decides at once; otherwise `hf-cache` evidence anywhere wins
//! over `files` evidence. Neither the config nor the annotations would do on their own: a
//! `files` image baked on a base that sets `HF_HOME` has the same `Env` as an `hf-cache` one,
//! our layer annotations do not name the arrangement (and adding one would change manifest
//! digests), and an image built with a Dockerfile (`COPY --from=` a models image) keeps neither.
//! The paths are what the loaders will find, whoever wrote them.

use std::collections::BTreeSet;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use serde::Serialize;

use crate::bake::ANNOTATION_REPO;
use crate::hfcache::repo_folder;
use crate::lock::Lockfile;
use crate::manifest::bake_table::ModelArrangement;
use crate::oci::OciError;
use crate::oci::blob_reader::{Extent, read_blob};
use crate::oci::model::Descriptor;
use crate::oci::source::{ImageSource, RegistrySource, blob_path, open_sized};
use crate::oci::tar_reader::{MAX_ENTRIES, decompress};

/// How many locked files per repo are looked for as `files` evidence: enough that one missing
/// file does not hide the arrangement, few enough that memory does not follow a huge dataset.
const FILES_PER_REPO: usize = 16;

/// What the layers showed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Detected {
    /// The arrangement.
    pub layout: ModelArrangement,
    /// `hf-cache`: the huggingface_hub cache folder holding the repo folder found
    /// (`/root/.cache/huggingface/hub`); `files`: the models folder (`/models`).
    pub dir: String,
    /// `files` only: the one repo's files lie directly in [`Detected::dir`] (`--flat`).
    pub flat: bool,
    /// The entry that decided, as an absolute path.
    pub evidence: String,
}

/// Watches the entry paths of an image's layers (in any order) and tells the arrangement.
#[derive(Debug, Clone)]
pub struct Detector {
    /// Cache folder names of the locked repos (`models--acme--tiny`).
    folders: BTreeSet<String>,
    /// `<org>/<name>/<path>` (with `datasets/`, `spaces/` in front for those kinds) of a few
    /// locked files per repo.
    files: BTreeSet<String>,
    /// `<models_dir>/<path>` (no leading `/`) of a few files of a one-repo lock: `--flat`.
    flat: BTreeSet<String>,
    /// The models folder of the flat candidates, without its leading `/`.
    models_dir: String,
    /// First evidence in one of our layers.
    ours: Option<Detected>,
    /// First `hf-cache` evidence anywhere.
    hf: Option<Detected>,
    /// First `files` evidence anywhere.
    plain: Option<Detected>,
}

impl Detector {
    /// A detector for the repos of `lock`; `models_dir` (absolute) is where a flat `files`
    /// image would hold a one-repo lock's files (`[bake] models_dir`, `--models-dir`).
    pub fn new(lock: &Lockfile, models_dir: &str) -> Self {
        let models_dir = models_dir.trim_matches('/').to_owned();
        let mut d = Detector {
            folders: BTreeSet::new(),
            files: BTreeSet::new(),
            flat: BTreeSet::new(),
            models_dir,
            ours: None,
            hf: None,
            plain: None,
        };
        for repo in &lock.repos {
            d.folders.insert(repo_folder(repo.kind, &repo.id));
            for f in repo.files.iter().take(FILES_PER_REPO) {
                d.files
                    .insert(format!("{}{}/{}", repo.kind.url_prefix(), repo.id, f.path));
                if lock.repos.len() == 1 && !d.models_dir.is_empty() {
                    d.flat.insert(format!("{}/{}", d.models_dir, f.path));
                }
            }
        }
        d
    }

    /// Looks at one entry path (leading `./` or `/` and trailing `/` allowed) of a layer;
    /// `ours` when the layer is one `bake` made.
    pub fn observe(&mut self, path: &str, ours: bool) {
        if self.ours.is_some() {
            return;
        }
        let path = path
            .trim_start_matches("./")
            .trim_start_matches('/')
            .trim_end_matches('/');
        let found = self.hf_evidence(path).or_else(|| self.files_evidence(path));
        let Some(found) = found else { return };
        if ours {
            self.ours = Some(found);
        } else if found.layout == ModelArrangement::HfCache {
            self.hf.get_or_insert(found);
        } else {
            self.plain.get_or_insert(found);
        }
    }

    /// True once nothing later can change [`Detector::result`].
    pub fn decided(&self) -> bool {
        self.ours.is_some()
    }

    /// The arrangement, if any entry showed one.
    pub fn result(&self) -> Option<&Detected> {
        self.ours
            .as_ref()
            .or(self.hf.as_ref())
            .or(self.plain.as_ref())
    }

    /// `hf-cache` evidence: a path component that is a locked repo's cache folder.
    fn hf_evidence(&self, path: &str) -> Option<Detected> {
        let mut start = 0;
        for part in path.split('/') {
            if self.folders.contains(part) && start > 0 {
                return Some(Detected {
                    layout: ModelArrangement::HfCache,
                    dir: format!("/{}", &path[..start - 1]),
                    flat: false,
                    evidence: format!("/{path}"),
                });
            }
            start += part.len() + 1;
        }
        None
    }

    /// `files` evidence: a path ending in a locked repo's folder and file, below some folder;
    /// or a flat file of a one-repo lock.
    fn files_evidence(&self, path: &str) -> Option<Detected> {
        if self.flat.contains(path) {
            return Some(Detected {
                layout: ModelArrangement::Files,
                dir: format!("/{}", self.models_dir),
                flat: true,
                evidence: format!("/{path}"),
            });
        }
        path.match_indices('/').find_map(|(i, _)| {
            self.files.contains(&path[i + 1..]).then(|| Detected {
                layout: ModelArrangement::Files,
                dir: format!("/{}", &path[..i]),
                flat: false,
                evidence: format!("/{path}"),
            })
        })
    }
}

/// Whether `desc` is a layer `bake` made (it carries our repo annotation).
pub fn is_ours(desc: &Descriptor) -> bool {
    desc.annotation(ANNOTATION_REPO).is_some()
}

/// Tells the arrangement of the image whose `layers` are blobs of the OCI layout `dir`, reading
/// only entry headers: our layers first (their first entries decide), then the others, whose
/// contents are skipped by seeking when they are uncompressed. `models_dir` as for
/// [`Detector::new`]. `None` when no layer shows a locked repo either way.
pub fn detect_in_layout(
    dir: &Path,
    layers: &[Descriptor],
    lock: &Lockfile,
    models_dir: &str,
) -> Result<Option<Detected>, OciError> {
    let mut detector = Detector::new(lock, models_dir);
    for (desc, mine) in ours_first(layers) {
        let path = blob_path(dir, &desc.digest);
        let what = format!("layer {} of {}", desc.digest, dir.display());
        let file = open_sized(&path, desc, &what)?;
        scan_file(file, &mut |p| {
            detector.observe(p, mine);
            !detector.decided()
        })
        .map_err(OciError::io(&path))?;
        if detector.decided() {
            break;
        }
    }
    Ok(detector.result().cloned())
}

/// Tells the arrangement of the registry image whose `layers` are blobs of `src`, streaming
/// each layer only until its entries decide (our layers first: their first entries do); the
/// others are read to their end unless a locked repo's cache folder shows up. Nothing is
/// written anywhere. `models_dir` as for [`Detector::new`].
pub async fn detect_in_registry(
    src: &RegistrySource,
    layers: &[Descriptor],
    lock: &Lockfile,
    models_dir: &str,
) -> Result<Option<Detected>, OciError> {
    let mut detector = Detector::new(lock, models_dir);
    for (desc, mine) in ours_first(layers) {
        let what = format!("layer {} of {}", desc.digest, src.label());
        let mut d = detector;
        detector = read_blob(src, desc, what, Extent::Prefix, move |reader| {
            scan(decompress(reader)?, &mut |p| {
                d.observe(p, mine);
                !d.decided()
            })?;
            Ok(d)
        })
        .await?;
        if detector.decided() {
            break;
        }
    }
    Ok(detector.result().cloned())
}

/// The layers with whether each is ours, ours first (each group in image order).
fn ours_first(layers: &[Descriptor]) -> impl Iterator<Item = (&Descriptor, bool)> {
    let ours = layers.iter().filter(|d| is_ours(d)).map(|d| (d, true));
    ours.chain(layers.iter().filter(|d| !is_ours(d)).map(|d| (d, false)))
}

/// Hands every entry path of a layer blob file (plain, gzip or zstd) to `on_path` until it
/// returns false; an uncompressed layer's file contents are skipped by seeking, not read.
fn scan_file(file: std::fs::File, on_path: &mut dyn FnMut(&str) -> bool) -> std::io::Result<()> {
    let mut reader = BufReader::with_capacity(64 * 1024, file);
    let mut magic = [0u8; 4];
    let n = reader.read(&mut magic)?;
    reader.seek(SeekFrom::Start(0))?;
    if matches!(magic[..n], [0x1f, 0x8b, ..] | [0x28, 0xb5, 0x2f, 0xfd]) {
        return scan(decompress(reader)?, on_path);
    }
    walk(tar::Archive::new(reader).entries_with_seek()?, on_path)
}

/// The entry paths of a tar stream (already decompressed), until `on_path` says stop.
fn scan(tar: impl Read, on_path: &mut dyn FnMut(&str) -> bool) -> std::io::Result<()> {
    walk(tar::Archive::new(tar).entries()?, on_path)
}

/// The paths of `entries` until `on_path` says stop; at most [`MAX_ENTRIES`].
fn walk<R: Read>(
    entries: tar::Entries<'_, R>,
    on_path: &mut dyn FnMut(&str) -> bool,
) -> std::io::Result<()> {
    for (n, entry) in entries.enumerate() {
        if n >= MAX_ENTRIES {
            break;
        }
        let entry = entry?;
        if !on_path(&String::from_utf8_lossy(&entry.path_bytes())) {
            break;
        }
    }
    Ok(())
}

/// The arrangement to use and where it came from, for reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LayoutFrom {
    /// `--layout` on the command line.
    Flag,
    /// Told from the image's layers ([`Detector`]).
    Detected,
    /// `[bake] layout` (or its default), since the layers showed neither arrangement.
    Manifest,
}

/// The arrangement to examine an image in: the flag when given, else what the layers showed,
/// else the manifest's.
pub fn choose(
    flag: Option<ModelArrangement>,
    detected: Option<&Detected>,
    manifest: ModelArrangement,
) -> (ModelArrangement, LayoutFrom) {
    match (flag, detected) {
        (Some(l), _) => (l, LayoutFrom::Flag),
        (None, Some(d)) => (d.layout, LayoutFrom::Detected),
        (None, None) => (manifest, LayoutFrom::Manifest),
    }
}

/// `settings` with the arrangement `detected` shows, for commands that check an image against
/// the lock (`verify --oci`, `verify --image`) when `--layout` was not given: the arrangement,
/// and where it sits (`HF_HOME` for `hf-cache`, the models folder and `--flat` for `files`),
/// unless a flag named them.
pub fn apply(
    settings: &crate::manifest::bake_table::BakeSettings,
    detected: &Detected,
    flags: &crate::manifest::bake_table::BakeOverrides,
) -> crate::manifest::bake_table::BakeSettings {
    let mut out = settings.clone();
    out.layout = detected.layout;
    match detected.layout {
        ModelArrangement::HfCache => {
            if flags.hf_home.is_none()
                && let Some(home) = detected.dir.strip_suffix("/hub").filter(|h| !h.is_empty())
            {
                out.hf_home = home.to_owned();
            }
        }
        ModelArrangement::Files => {
            if flags.models_dir.is_none() {
                out.models_dir = detected.dir.clone();
            }
            out.flat = flags.flat || detected.flat;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::RepoKind;
    use crate::test_support::fuzz::locked_repo;

    fn lock(repos: &[(RepoKind, &str)]) -> Lockfile {
        let mut lock = Lockfile::new();
        for (kind, id) in repos {
            lock.repos.push(locked_repo(
                *kind,
                id,
                &"1".repeat(40),
                &[("config.json", b"{}\n", false), ("sub/w.bin", b"w", true)],
            ));
        }
        lock
    }

    fn detect(lock: &Lockfile, layers: &[(&[&str], bool)]) -> Option<Detected> {
        let mut d = Detector::new(lock, "/models");
        for (paths, ours) in layers {
            for p in *paths {
                d.observe(p, *ours);
            }
        }
        d.result().cloned()
    }

    #[test]
    fn a_cache_folder_of_a_locked_repo_means_hf_cache_wherever_it_is() {
        let l = lock(&[
            (RepoKind::Model, "acme/tiny"),
            (RepoKind::Dataset, "acme/data"),
        ]);
        let got = detect(
            &l,
            &[(
                &[
                    "opt/",
                    "./opt/hf/hub/",
                    "./opt/hf/hub/datasets--acme--data/",
                    "opt/hf/hub/datasets--acme--data/blobs/x",
                ],
                false,
            )],
        )
        .unwrap();
        assert_eq!(got.layout, ModelArrangement::HfCache);
        assert_eq!(got.dir, "/opt/hf/hub");
        assert_eq!(got.evidence, "/opt/hf/hub/datasets--acme--data");
        // Another repo's folder, or the name at the image root, says nothing.
        assert_eq!(
            detect(
                &l,
                &[(&["hub/models--acme--other/x", "models--acme--tiny/"], false)]
            ),
            None
        );
    }

    #[test]
    fn a_locked_file_under_its_repo_folder_means_files_and_names_the_models_dir() {
        let l = lock(&[
            (RepoKind::Model, "acme/tiny"),
            (RepoKind::Dataset, "acme/data"),
        ]);
        let got = detect(&l, &[(&["srv/m/datasets/acme/data/sub/w.bin"], false)]).unwrap();
        assert_eq!(
            (got.layout, got.dir.as_str(), got.flat),
            (ModelArrangement::Files, "/srv/m", false)
        );
        // A model id is not read as a dataset's, nor a near name as the repo.
        assert_eq!(
            detect(
                &l,
                &[(
                    &["m/acme/data/config.json", "m/acme/tiny2/config.json"],
                    false
                )]
            ),
            None
        );
        // One repo: its files directly in the models folder are the flat layout.
        let one = lock(&[(RepoKind::Model, "acme/tiny")]);
        let got = detect(&one, &[(&["models/config.json"], true)]).unwrap();
        assert_eq!(
            (got.layout, got.dir.as_str(), got.flat),
            (ModelArrangement::Files, "/models", true)
        );
        assert_eq!(detect(&l, &[(&["models/config.json"], true)]), None);
    }

    #[test]
    fn our_layers_decide_at_once_and_otherwise_hf_cache_wins() {
        let l = lock(&[(RepoKind::Model, "acme/tiny")]);
        let files: &[&str] = &["models/acme/tiny/config.json"];
        let cache: &[&str] = &["root/.cache/huggingface/hub/models--acme--tiny/"];
        let got = detect(&l, &[(files, false), (cache, false)]).unwrap();
        assert_eq!(got.layout, ModelArrangement::HfCache);
        let got = detect(&l, &[(files, true), (cache, false)]).unwrap();
        assert_eq!(got.layout, ModelArrangement::Files);
        let mut d = Detector::new(&l, "/models");
        d.observe(files[0], false);
        assert!(!d.decided(), "a base layer's entry could be anything");
        d.observe(cache[0], true);
        assert!(d.decided());
    }

    #[test]
    fn the_flag_beats_the_layers_which_beat_the_manifest() {
        let found = Detected {
            layout: ModelArrangement::Files,
            dir: "/models".into(),
            flat: false,
            evidence: "/models/acme/tiny/config.json".into(),
        };
        let hf = ModelArrangement::HfCache;
        assert_eq!(choose(Some(hf), Some(&found), hf), (hf, LayoutFrom::Flag));
        assert_eq!(
            choose(None, Some(&found), hf),
            (ModelArrangement::Files, LayoutFrom::Detected)
        );
        assert_eq!(choose(None, None, hf), (hf, LayoutFrom::Manifest));
    }

    /// A one-layer layout of `entries` (path, body) in `dir`, compressed with `gzip` or not.
    fn layer(dir: &Path, entries: &[(&str, &[u8])], gzip: bool, ours: bool) -> Descriptor {
        use crate::oci::digest::Digest;
        let mut b = ::tar::Builder::new(Vec::new());
        for (path, body) in entries {
            let mut h = ::tar::Header::new_gnu();
            h.set_size(body.len() as u64);
            h.set_mode(0o644);
            b.append_data(&mut h, path, *body).unwrap();
        }
        let mut bytes = b.into_inner().unwrap();
        if gzip {
            use std::io::Write;
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(&bytes).unwrap();
            bytes = e.finish().unwrap();
        }
        let digest = Digest::of(&bytes);
        std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
        std::fs::write(blob_path(dir, &digest), &bytes).unwrap();
        let mut desc = Descriptor::new(crate::oci::MEDIA_LAYER_TAR, digest, bytes.len() as u64);
        if ours {
            desc.annotations =
                Some([(ANNOTATION_REPO.to_owned(), "model/acme/tiny".to_owned())].into());
        }
        desc
    }

    #[test]
    fn a_layout_is_read_ours_first_through_plain_and_gzip_layers() {
        let l = lock(&[(RepoKind::Model, "acme/tiny")]);
        let dir = tempfile::tempdir().unwrap();
        let big = vec![7u8; 3 << 20];
        let base = layer(
            dir.path(),
            &[("usr/big", &big), ("models/acme/tiny/config.json", b"{}\n")],
            true,
            false,
        );
        let ours = layer(
            dir.path(),
            &[
                ("root/", b""),
                (
                    "root/.cache/huggingface/hub/models--acme--tiny/blobs/b",
                    &big,
                ),
            ],
            false,
            true,
        );
        let got = detect_in_layout(dir.path(), &[base.clone(), ours], &l, "/models")
            .unwrap()
            .unwrap();
        assert_eq!(got.layout, ModelArrangement::HfCache, "our layer decides");
        let got = detect_in_layout(dir.path(), &[base], &l, "/models")
            .unwrap()
            .unwrap();
        assert_eq!(got.layout, ModelArrangement::Files, "read through gzip");
        assert_eq!(
            detect_in_layout(dir.path(), &[], &l, "/models").unwrap(),
            None
        );
    }
}
