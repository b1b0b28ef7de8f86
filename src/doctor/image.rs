//! `doctor --oci` and `doctor --image`: an image's file system as its layers build it, read
//! from an OCI layout or streamed from a registry (never stored: each layer is read once as a
//! stream, only the entries the diagnosis asks about are kept, every blob checked against its
//! digest), examined as the image's `Env` and `User` resolve the loaders, in the arrangement
//! `--layout` names or the layers show ([`crate::bake::detect_layout`]).

use std::collections::BTreeMap;
use std::sync::Arc;

use super::files::{self, FilesAt};
use super::{ArrangementUsed, DoctorReport, RepoPaths, Tree, diagnose};
use crate::bake::detect_layout::{self, Detected, LayoutFrom};
use crate::loaders;
use crate::lock::Lockfile;
use crate::manifest::bake_table::ModelArrangement;
use crate::oci::blob_reader::{Extent, read_blob};
use crate::oci::model::Descriptor;
use crate::oci::source::{self, ImageSource, LayoutSource, RegistrySource, SourceImage, blob_path};
use crate::oci::tar_reader::{TarEntry, TarKind, Want, read_entries};
use crate::oci::{OciError, Platform};

/// Where the image `doctor` examines is.
pub enum ImageAt {
    /// An OCI layout on disk (`--oci DIR[:TAG]`).
    Layout(LayoutSource),
    /// A registry (`--image REF`): manifest, config and layers streamed, nothing stored.
    Registry(Box<RegistrySource>),
}

/// What the command line and `[bake]` say about the arrangement to examine.
#[derive(Debug, Clone)]
pub struct Arrangement {
    /// `--layout`; without it the layers decide.
    pub flag: Option<ModelArrangement>,
    /// `[bake] layout` (or its default): used when the layers show neither arrangement.
    pub manifest: ModelArrangement,
    /// `--models-dir`, which beats a detected models folder.
    pub models_dir_flag: Option<String>,
    /// `[bake] models_dir` (or its default).
    pub models_dir: String,
    /// `--flat` (or `[bake] flat`), which beats what the layers show.
    pub flat: bool,
}

impl ImageAt {
    /// The image as reports name it.
    fn target(&self) -> String {
        match self {
            ImageAt::Layout(src) => format!(
                "{}:{}",
                src.dir.display(),
                src.tag.as_deref().unwrap_or("(only image)")
            ),
            ImageAt::Registry(src) => src.label(),
        }
    }

    /// The config and layer list for `platform`.
    async fn image(&self, platform: &Platform) -> Result<SourceImage, OciError> {
        match self {
            ImageAt::Layout(src) => source::read_image(src, platform).await,
            ImageAt::Registry(src) => source::read_image(src.as_ref(), platform).await,
        }
    }

    /// The arrangement `layers` show ([`detect_layout`]).
    async fn detect(
        &self,
        layers: &[Descriptor],
        lock: &Arc<Lockfile>,
        models_dir: &str,
    ) -> Result<Option<Detected>, OciError> {
        match self {
            ImageAt::Layout(src) => {
                let (dir, layers) = (src.dir.clone(), layers.to_vec());
                // Shared, not copied: a 100,000-file lock weighs tens of MB.
                let (lock, models_dir) = (Arc::clone(lock), models_dir.to_owned());
                blocking(move || detect_layout::detect_in_layout(&dir, &layers, &lock, &models_dir))
                    .await
            }
            ImageAt::Registry(src) => {
                detect_layout::detect_in_registry(src, layers, lock, models_dir).await
            }
        }
    }

    /// The entries of `layers` that `wanted` names, later layers winning; every other entry is
    /// read past.
    async fn entries(
        &self,
        layers: &[Descriptor],
        wanted: BTreeMap<String, Want>,
    ) -> Result<BTreeMap<String, TarEntry>, OciError> {
        let wanted = Arc::new(wanted);
        match self {
            ImageAt::Layout(src) => {
                let (src, layers) = (src.clone(), layers.to_vec());
                blocking(move || layout_entries(&src, &layers, &wanted)).await
            }
            ImageAt::Registry(src) => {
                let mut entries = BTreeMap::new();
                for desc in layers {
                    let what = format!("layer {} of {}", desc.digest, src.label());
                    let wanted = wanted.clone();
                    let found = read_blob(src, desc, what, Extent::Whole, move |reader| {
                        let mut found = BTreeMap::new();
                        read_entries(reader, &mut |p| want(&wanted, p), &mut |e| {
                            found.insert(e.path.clone(), e);
                        })?;
                        Ok(found)
                    })
                    .await?;
                    entries.extend(found);
                }
                Ok(entries)
            }
        }
    }
}

/// Runs `work` on a blocking thread.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, OciError> + Send + 'static,
) -> Result<T, OciError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| OciError::Read {
            what: "the image's layers".into(),
            source: std::io::Error::other(format!("the reader stopped: {e}")),
        })?
}

/// What the diagnosis wants of the entry at `path`.
fn want(wanted: &BTreeMap<String, Want>, path: &str) -> Want {
    wanted.get(path).copied().unwrap_or(Want::Skip)
}

/// The image entries a diagnosis of `lock` in `caches` asks about (paths without the leading
/// `/`, as an image's entries are keyed), each with whether its content is read: every path
/// [`super::check_repo`] looks at and every folder above it ([`Image::readable`] walks them), and
/// `/etc/passwd`.
fn wanted_hf(lock: &Lockfile, caches: &[String]) -> BTreeMap<String, Want> {
    let mut out = BTreeMap::from([("etc/passwd".to_owned(), Want::Content)]);
    let mut add = |path: &str, want: Want| {
        let mut cur = path.trim_start_matches('/');
        out.insert(cur.to_owned(), want);
        while let Some((parent, _)) = cur.rsplit_once('/') {
            out.entry(parent.to_owned()).or_insert(Want::Entry);
            cur = parent;
        }
    };
    for cache in caches {
        for paths in lock.repos.iter().filter_map(|r| RepoPaths::of(cache, r)) {
            if let Some(refs) = &paths.refs {
                add(refs, Want::Content);
            }
            for p in std::iter::once(&paths.snapshot)
                .chain(&paths.files)
                .chain(&paths.blobs)
            {
                add(p, Want::Entry);
            }
        }
    }
    out
}

/// An image's file system: every layer's entries, later layers winning, read as `uid:gid`.
struct Image {
    entries: BTreeMap<String, TarEntry>,
    /// `None`: a user name the image's `/etc/passwd` does not know.
    user: Option<(u64, u64)>,
}

impl Image {
    fn get(&self, path: &str) -> Option<&TarEntry> {
        self.entries.get(path.trim_start_matches('/'))
    }

    /// Whether the user has `bit` (4 read, 1 search) on `e`.
    fn may(&self, e: &TarEntry, bit: u32) -> bool {
        let Some((uid, gid)) = self.user else {
            return false;
        };
        if uid == 0 {
            return true;
        }
        let shift = if e.uid == uid {
            6
        } else if e.gid == gid {
            3
        } else {
            0
        };
        (e.mode >> shift) & bit == bit
    }
}

impl Tree for Image {
    fn exists(&self, path: &str) -> bool {
        self.get(path).is_some()
    }
    fn small(&self, path: &str) -> Option<Vec<u8>> {
        self.get(path)?.content.clone()
    }
    fn readable(&self, path: &str) -> bool {
        let Some(e) = self.get(path) else {
            return false;
        };
        let want = if e.kind == TarKind::Dir { 5 } else { 4 };
        let mut cur = path.trim_start_matches('/');
        while let Some((parent, _)) = cur.rsplit_once('/') {
            // Folders no layer holds are made by the runtime, 0755 root.
            if self.entries.get(parent).is_some_and(|p| !self.may(p, 1)) {
                return false;
            }
            cur = parent;
        }
        self.may(e, want)
    }
}

/// `/etc/passwd`: name → (uid, gid, home).
fn passwd(text: &str) -> BTreeMap<String, (u64, u64, String)> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            Some((
                (*f.first()?).to_owned(),
                (
                    f.get(2)?.parse().ok()?,
                    f.get(3)?.parse().ok()?,
                    (*f.get(5)?).to_owned(),
                ),
            ))
        })
        .collect()
}

/// An image `User` (`name|uid[:group|gid]`) as uid, gid and the passwd home.
fn image_user(
    user: &str,
    users: &BTreeMap<String, (u64, u64, String)>,
) -> Option<(u64, u64, Option<String>)> {
    let (name, group) = match user.split_once(':') {
        Some((n, g)) => (n, Some(g)),
        None => (user, None),
    };
    let (uid, gid, home) = match name {
        "" | "root" => (0, 0, Some("/root".to_owned())),
        n => match n.parse::<u64>() {
            Ok(uid) => match users.values().find(|(u, _, _)| *u == uid) {
                Some((_, g, h)) => (uid, *g, Some(h.clone())),
                None => (uid, uid, None),
            },
            Err(_) => {
                let (u, g, h) = users.get(n)?;
                (*u, *g, Some(h.clone()))
            }
        },
    };
    let gid = match group {
        Some(g) => g.parse().ok()?,
        None => gid,
    };
    Some((uid, gid, home))
}

/// The entries of `layers` (blobs of the layout `src`) that `wanted` names, later layers
/// winning; every other entry is read past.
fn layout_entries(
    src: &LayoutSource,
    layers: &[Descriptor],
    wanted: &BTreeMap<String, Want>,
) -> Result<BTreeMap<String, TarEntry>, OciError> {
    let mut entries = BTreeMap::new();
    for desc in layers {
        let path = blob_path(&src.dir, &desc.digest);
        let what = format!("blob {} of {}", desc.digest, src.label());
        let file = source::open_sized(&path, desc, &what)?;
        read_entries(file, &mut |p| want(wanted, p), &mut |e| {
            entries.insert(e.path.clone(), e);
        })
        .map_err(OciError::io(&path))?;
    }
    Ok(entries)
}

/// Diagnoses the image at `at` for `platform` as its config's `Env` and `User` resolve the
/// loaders, in the arrangement `ask` names or its layers show.
pub async fn diagnose_image(
    at: &ImageAt,
    platform: &str,
    lock: &Arc<Lockfile>,
    ask: &Arrangement,
) -> Result<DoctorReport, OciError> {
    let platform = Platform::parse(platform).map_err(|e| OciError::Invalid {
        what: "the platform".into(),
        detail: e.to_string(),
    })?;
    let image = at.image(&platform).await?;
    let models_dir = ask.models_dir_flag.as_deref().unwrap_or(&ask.models_dir);
    let detected = match ask.flag {
        Some(_) => None,
        None => at.detect(&image.layers, lock, models_dir).await?,
    };
    let (layout, layout_from) = detect_layout::choose(ask.flag, detected.as_ref(), ask.manifest);
    let files_at = files_at(
        ask,
        detected
            .as_ref()
            .filter(|_| layout_from == LayoutFrom::Detected),
    );
    let user_field = image.config["config"]["User"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let vars: Vec<String> = crate::oci::model::string_list(&image.config["config"]["Env"]);
    let caches = |home: Option<&str>| -> Vec<String> {
        let env = loaders::image_env(&vars, home);
        loaders::resolve_all(&env)
            .into_iter()
            .map(|r| r.cache)
            .collect()
    };
    let wanted = |caches: &[String]| match layout {
        ModelArrangement::HfCache => wanted_hf(lock, caches),
        ModelArrangement::Files => {
            let mut out = BTreeMap::from([("etc/passwd".to_owned(), Want::Content)]);
            files::wanted(lock, &files_at, &mut out);
            out
        }
    };
    // Only the entries the diagnosis asks about are kept, so memory follows the lock, not the
    // image. Which those are depends on the user's home, which may come from the image's
    // /etc/passwd: the layers are read once with the home the User alone gives, and again only
    // when /etc/passwd gives another home that moves a loader's cache.
    let guessed = caches(loaders::default_home(&user_field));
    let mut entries = at.entries(&image.layers, wanted(&guessed)).await?;
    let users = entries
        .get("etc/passwd")
        .and_then(|e| e.content.as_deref())
        .map(|c| passwd(&String::from_utf8_lossy(c)))
        .unwrap_or_default();
    let resolved = image_user(&user_field, &users);
    let home = resolved
        .as_ref()
        .and_then(|(_, _, h)| h.clone())
        .or_else(|| loaders::default_home(&user_field).map(str::to_owned));
    let actual = caches(home.as_deref());
    if layout == ModelArrangement::HfCache && actual != guessed {
        entries = at.entries(&image.layers, wanted(&actual)).await?;
    }
    let env = loaders::image_env(&vars, home.as_deref());
    let user = match &resolved {
        Some((uid, gid, _)) if user_field.is_empty() => format!("uid {uid}, gid {gid} (no User)"),
        Some((uid, gid, _)) => format!("uid {uid}, gid {gid} (User {user_field})"),
        None => format!("User `{user_field}`, unknown to the image's /etc/passwd"),
    };
    let tree = Image {
        entries,
        user: resolved.map(|(u, g, _)| (u, g)),
    };
    let target = at.target();
    let mut report = match layout {
        ModelArrangement::HfCache => diagnose(&tree, &env, lock, target, user),
        ModelArrangement::Files => files::diagnose(&tree, &env, lock, &files_at, target, user),
    };
    if let Some(note) = cache_elsewhere(&report, detected.as_ref()) {
        report.notes.push(note);
    }
    let is_files = layout == ModelArrangement::Files;
    report.arrangement = Some(ArrangementUsed {
        layout,
        evidence: detected
            .filter(|_| layout_from == LayoutFrom::Detected)
            .map(|d| d.evidence),
        layout_from,
        models_dir: is_files.then(|| files_at.models_dir.clone()),
        flat: is_files && files_at.flat,
    });
    Ok(report)
}

/// Where the `files` arrangement is looked for: `--models-dir` and `--flat`, else what the
/// layers showed, else `[bake]`.
fn files_at(ask: &Arrangement, detected: Option<&Detected>) -> FilesAt {
    let shown = detected.filter(|d| d.layout == ModelArrangement::Files);
    FilesAt {
        models_dir: ask
            .models_dir_flag
            .clone()
            .or_else(|| shown.map(|d| d.dir.clone()))
            .unwrap_or_else(|| ask.models_dir.clone()),
        flat: ask.flat || shown.is_some_and(|d| d.flat),
    }
}

/// When huggingface_hub misses the models and the layers hold a cache elsewhere: where it is
/// and the variable that would point the loaders at it.
fn cache_elsewhere(report: &DoctorReport, detected: Option<&Detected>) -> Option<String> {
    let found = detected.filter(|d| d.layout == ModelArrangement::HfCache)?;
    let hub = report.loaders.first()?;
    if report.ok || loaders::same_dir(&hub.cache, &found.dir) {
        return None;
    }
    let fix = match found.dir.strip_suffix("/hub") {
        Some(home) if !home.is_empty() => format!("HF_HOME={home}"),
        _ => format!("HF_HUB_CACHE={}", found.dir),
    };
    Some(format!(
        "the image holds a huggingface_hub cache in {} ({} is there), but {} looks in {}: set {fix} in the image (an ENV line in a Dockerfile)",
        found.dir, found.evidence, hub.loader, hub.cache
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &str, kind: TarKind, mode: u32, owner: u64) -> (String, TarEntry) {
        (
            path.to_owned(),
            TarEntry {
                path: path.to_owned(),
                kind,
                mode,
                uid: owner,
                gid: owner,
                content: None,
            },
        )
    }

    #[test]
    fn image_permissions_follow_owner_group_other_and_parents() {
        let mut image = Image {
            entries: [
                entry("root", TarKind::Dir, 0o700, 0),
                entry("root/f", TarKind::File, 0o644, 0),
                entry("opt", TarKind::Dir, 0o755, 0),
                entry("opt/mine", TarKind::File, 0o600, 1000),
                entry("opt/d", TarKind::Dir, 0o744, 0),
            ]
            .into_iter()
            .collect(),
            user: Some((1000, 1000)),
        };
        assert!(!image.readable("/root/f"), "0700 parent");
        assert!(image.readable("/opt/mine"));
        assert!(!image.readable("/opt/d"), "a folder needs search too");
        assert!(!image.readable("/opt/none"));
        image.user = Some((0, 0));
        assert!(image.readable("/root/f"));
        image.user = Some((65534, 65534));
        assert!(!image.readable("/opt/mine"));
        image.user = None;
        assert!(!image.readable("/opt"));
    }

    /// A one-layer image layout in `dir`, tag `t`, with `config` and the tar `layer`.
    fn write_layout(dir: &std::path::Path, config: &serde_json::Value, layer: &[u8]) {
        use crate::oci::digest::Digest;
        let blobs = dir.join("blobs/sha256");
        std::fs::create_dir_all(&blobs).unwrap();
        let put = |bytes: &[u8]| {
            let d = Digest::of(bytes);
            std::fs::write(blobs.join(d.hex()), bytes).unwrap();
            (d.to_string(), bytes.len())
        };
        let (layer_digest, layer_size) = put(layer);
        let (config_digest, config_size) = put(&serde_json::to_vec(config).unwrap());
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": crate::oci::MEDIA_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": config_digest, "size": config_size},
            "layers": [{"mediaType": crate::oci::MEDIA_LAYER_TAR,
                        "digest": layer_digest, "size": layer_size}],
        });
        let (manifest_digest, manifest_size) = put(&serde_json::to_vec(&manifest).unwrap());
        let index = serde_json::json!({
            "schemaVersion": 2,
            "manifests": [{"mediaType": crate::oci::MEDIA_MANIFEST, "digest": manifest_digest,
                           "size": manifest_size,
                           "annotations": {"org.opencontainers.image.ref.name": "t"}}],
        });
        std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    }

    #[tokio::test]
    async fn a_home_that_only_etc_passwd_gives_is_looked_in() {
        use crate::repo::RepoKind;
        use crate::test_support::fuzz::locked_repo;
        let commit = "1".repeat(40);
        let repo = locked_repo(
            RepoKind::Model,
            "acme/tiny",
            &commit,
            &[("config.json", b"{}\n", false)],
        );
        let blob = repo.files[0].blob.clone();
        let mut lock = Lockfile::new();
        lock.repos.push(repo);
        // The cache is under the home /etc/passwd gives `app`; the User alone gives none, so
        // the first reading of the layers cannot know which entries the diagnosis needs.
        let root = "home/app/.cache/huggingface/hub/models--acme--tiny";
        let mut b = tar::Builder::new(Vec::new());
        let mut add = |path: &str, kind: tar::EntryType, body: &[u8], link: Option<&str>| {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(kind);
            h.set_mode(if kind.is_dir() { 0o755 } else { 0o644 });
            h.set_size(body.len() as u64);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(0);
            match link {
                Some(target) => b.append_link(&mut h, path, target).unwrap(),
                None => b.append_data(&mut h, path, body).unwrap(),
            }
        };
        add(
            "etc/passwd",
            tar::EntryType::Regular,
            b"root:x:0:0::/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n",
            None,
        );
        for dir in ["home", "home/app", root] {
            add(dir, tar::EntryType::Directory, b"", None);
        }
        let snapshot = format!("{root}/snapshots/{commit}");
        add(&snapshot, tar::EntryType::Directory, b"", None);
        add(
            &format!("{root}/refs/main"),
            tar::EntryType::Regular,
            commit.as_bytes(),
            None,
        );
        add(
            &format!("{root}/blobs/{blob}"),
            tar::EntryType::Regular,
            b"{}\n",
            None,
        );
        add(
            &format!("{snapshot}/config.json"),
            tar::EntryType::Symlink,
            b"",
            Some(&format!("../../blobs/{blob}")),
        );
        let layer = b.into_inner().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let config = serde_json::json!({
            "architecture": "amd64", "os": "linux", "config": {"User": "app"},
            "rootfs": {"type": "layers", "diff_ids": []},
        });
        write_layout(dir.path(), &config, &layer);
        let at = ImageAt::Layout(LayoutSource {
            dir: dir.path().to_owned(),
            tag: Some("t".into()),
        });
        let ask = Arrangement {
            flag: None,
            manifest: ModelArrangement::HfCache,
            models_dir_flag: None,
            models_dir: "/models".into(),
            flat: false,
        };
        let report = diagnose_image(&at, "linux/amd64", &Arc::new(lock), &ask)
            .await
            .unwrap();
        assert_eq!(
            report.arrangement.as_ref().map(|a| a.layout_from.clone()),
            Some(LayoutFrom::Detected),
            "the repo folder in the layer shows the arrangement"
        );
        let hub = &report.loaders[0];
        assert_eq!(hub.cache, "/home/app/.cache/huggingface/hub", "{report:?}");
        assert!(report.ok, "{report:?}");
    }

    #[test]
    fn users_from_passwd() {
        let users =
            passwd("root:x:0:0:root:/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\nbad\n");
        assert_eq!(image_user("", &users), Some((0, 0, Some("/root".into()))));
        assert_eq!(
            image_user("app", &users),
            Some((1000, 1001, Some("/home/app".into())))
        );
        assert_eq!(
            image_user("1000:5", &users),
            Some((1000, 5, Some("/home/app".into())))
        );
        assert_eq!(image_user("42", &users), Some((42, 42, None)));
        assert_eq!(image_user("nobody", &users), None);
    }
}
