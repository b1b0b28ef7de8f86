//! `modelbake doctor`: would every locked model load offline, with every loader, in an image
//! or on this machine? For each loader ([`crate::loaders`]) the cache it resolves to, and per
//! locked repo: present, missing, stale (its ref names another commit) or unreadable by the
//! image's `User` (or the current user); plus the offline switches.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::hfcache::repo_folder;
use crate::loaders::{self, Loader};
use crate::lock::{LockedRepo, Lockfile};
use crate::oci::source::{self, ImageSource, LayoutSource, blob_path};
use crate::oci::tar_reader::{TarEntry, TarKind, Want, read_entries};
use crate::oci::{OciError, Platform};

/// How one locked repo fares with one loader.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum RepoState {
    /// Every locked file is there and readable.
    Present,
    /// Something the offline load needs is absent.
    Missing {
        /// The first absent path.
        path: String,
    },
    /// The ref names another commit than the lock.
    Stale {
        /// The ref file.
        path: String,
        /// The commit it names.
        points_to: String,
    },
    /// A file or folder the user cannot read (or traverse).
    Unreadable {
        /// The first such path.
        path: String,
    },
}

/// One locked repo in one loader's cache.
#[derive(Debug, Clone, Serialize)]
pub struct RepoRow {
    /// `kind/id`.
    pub repo: String,
    /// The locked commit.
    pub commit: String,
    /// How it fares.
    #[serde(flatten)]
    pub state: RepoState,
}

/// One loader: where it looks and what it finds.
#[derive(Debug, Clone, Serialize)]
pub struct LoaderRow {
    /// The loader.
    pub loader: Loader,
    /// The variable that decided where it looks.
    pub variable: &'static str,
    /// Where it looks.
    pub cache: String,
    /// Every locked repo.
    pub repos: Vec<RepoRow>,
}

/// The whole diagnosis.
#[derive(Debug, Clone, Serialize)]
pub struct DoctorReport {
    /// True when every locked repo is present and readable for every loader.
    pub ok: bool,
    /// What was examined (`DIR:TAG`, or `this machine`).
    pub target: String,
    /// Whose read access was checked.
    pub user: String,
    /// Per loader.
    pub loaders: Vec<LoaderRow>,
    /// Whether huggingface_hub runs offline (docs/loaders.md).
    pub offline: bool,
    /// `HF_HUB_OFFLINE` and `TRANSFORMERS_OFFLINE` as set.
    pub offline_env: BTreeMap<&'static str, Option<String>>,
}

/// A file tree to examine: an image's merged layers, or this machine's file system.
trait Tree {
    /// Whether `path` (absolute) exists, without following a final symlink.
    fn exists(&self, path: &str) -> bool;
    /// The content of a small file.
    fn small(&self, path: &str) -> Option<Vec<u8>>;
    /// Whether the user can read `path` (list it, for a folder) and reach it.
    fn readable(&self, path: &str) -> bool;
}

/// The paths an offline load of a repo from a cache looks at (absolute, as [`check_repo`]
/// asks the tree about them).
struct RepoPaths {
    /// The ref file, when the locked revision is not the commit itself (its content is read).
    refs: Option<String>,
    /// The snapshot folder.
    snapshot: String,
    /// Each locked path in the snapshot, then each blob.
    files: Vec<String>,
    /// Each blob (the snapshot links resolve to them).
    blobs: Vec<String>,
}

impl RepoPaths {
    /// The paths of `repo` in `cache`; `None` for a cache that is not an absolute path.
    fn of(cache: &str, repo: &LockedRepo) -> Option<Self> {
        if !cache.starts_with('/') {
            return None;
        }
        let root = format!(
            "{}/{}",
            cache.trim_end_matches('/'),
            repo_folder(repo.kind, &repo.id)
        );
        let snapshot = format!("{root}/snapshots/{}", repo.commit);
        Some(RepoPaths {
            refs: (repo.revision.as_str() != repo.commit)
                .then(|| format!("{root}/refs/{}", repo.revision)),
            files: repo
                .files
                .iter()
                .map(|f| format!("{snapshot}/{}", f.path))
                .collect(),
            blobs: repo
                .files
                .iter()
                .map(|f| format!("{root}/blobs/{}", f.blob))
                .collect(),
            snapshot,
        })
    }
}

/// What an offline load of `repo` from `cache` would find.
fn check_repo(tree: &dyn Tree, cache: &str, repo: &LockedRepo) -> RepoState {
    let Some(paths) = RepoPaths::of(cache, repo) else {
        return RepoState::Missing {
            path: cache.to_owned(),
        };
    };
    if let Some(path) = paths.refs {
        match tree.small(&path) {
            None => return RepoState::Missing { path },
            Some(bytes) if bytes != repo.commit.as_bytes() => {
                return RepoState::Stale {
                    path,
                    points_to: String::from_utf8_lossy(&bytes).chars().take(80).collect(),
                };
            }
            Some(_) => {}
        }
    }
    // Presence: the snapshot folder, each locked path in it and each blob.
    let present = std::iter::once(&paths.snapshot)
        .chain(
            paths
                .files
                .iter()
                .zip(&paths.blobs)
                .flat_map(|(f, b)| [f, b]),
        )
        .find(|p| !tree.exists(p));
    if let Some(path) = present {
        return RepoState::Missing { path: path.clone() };
    }
    // Read access: the snapshot folder and every blob (the snapshot links resolve to them).
    match std::iter::once(&paths.snapshot)
        .chain(&paths.blobs)
        .find(|p| !tree.readable(p))
    {
        Some(path) => RepoState::Unreadable { path: path.clone() },
        None => RepoState::Present,
    }
}

/// The image entries a diagnosis of `lock` in `caches` asks about (paths without the leading
/// `/`, as an image's entries are keyed), each with whether its content is read: every path
/// [`check_repo`] looks at and every folder above it ([`Image::readable`] walks them), and
/// `/etc/passwd`.
fn wanted_entries(lock: &Lockfile, caches: &[String]) -> BTreeMap<String, Want> {
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

/// Diagnoses `tree` as `env` resolves the loaders.
fn diagnose(
    tree: &dyn Tree,
    env: loaders::EnvFn,
    lock: &Lockfile,
    target: String,
    user: String,
) -> DoctorReport {
    let rows: Vec<LoaderRow> = loaders::resolve_all(env)
        .into_iter()
        .map(|r| LoaderRow {
            loader: r.loader,
            variable: r.variable,
            repos: lock
                .repos
                .iter()
                .map(|repo| RepoRow {
                    repo: format!("{}/{}", repo.kind, repo.id),
                    commit: repo.commit.clone(),
                    state: check_repo(tree, &r.cache, repo),
                })
                .collect(),
            cache: r.cache,
        })
        .collect();
    let ok = rows
        .iter()
        .all(|l| l.repos.iter().all(|r| r.state == RepoState::Present));
    DoctorReport {
        ok,
        target,
        user,
        loaders: rows,
        offline: loaders::offline(env),
        offline_env: ["HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"]
            .into_iter()
            .map(|k| (k, env(k)))
            .collect(),
    }
}

/// This machine's file system, read as the current user.
struct Host;

impl Tree for Host {
    fn exists(&self, path: &str) -> bool {
        std::fs::symlink_metadata(path).is_ok()
    }
    fn small(&self, path: &str) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        std::fs::File::open(path)
            .ok()?
            .take(64 * 1024)
            .read_to_end(&mut out)
            .ok()?;
        Some(out)
    }
    fn readable(&self, path: &str) -> bool {
        match std::fs::metadata(path) {
            Ok(m) if m.is_dir() => std::fs::read_dir(path).is_ok(),
            Ok(_) => std::fs::File::open(path).is_ok(),
            Err(_) => false,
        }
    }
}

/// Diagnoses this machine as the process environment resolves the loaders.
pub fn diagnose_host(lock: &Lockfile, env: loaders::EnvFn) -> DoctorReport {
    diagnose(
        &Host,
        env,
        lock,
        "this machine".into(),
        "the current user".into(),
    )
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

/// The entries of `layers` (blobs of the layout `src`, opened as the base reader opens them)
/// that `wanted` names, later layers winning; every other entry is read past.
fn image_entries(
    src: &LayoutSource,
    layers: &[crate::oci::model::Descriptor],
    wanted: &BTreeMap<String, Want>,
) -> Result<BTreeMap<String, TarEntry>, OciError> {
    let want = |p: &str| wanted.get(p).copied().unwrap_or(Want::Skip);
    let mut entries = BTreeMap::new();
    for desc in layers {
        let path = blob_path(&src.dir, &desc.digest);
        let what = format!("blob {} of {}", desc.digest, src.label());
        let file = source::open_sized(&path, desc, &what)?;
        read_entries(file, &want, &mut |e| {
            entries.insert(e.path.clone(), e);
        })
        .map_err(OciError::io(&path))?;
    }
    Ok(entries)
}

/// Diagnoses the image `dir`:`tag` as its config's `Env` and `User` resolve the loaders.
pub fn diagnose_layout(
    dir: &Path,
    tag: Option<&str>,
    platform: &str,
    lock: &Lockfile,
) -> Result<DoctorReport, OciError> {
    let platform = Platform::parse(platform).map_err(|e| OciError::Invalid {
        what: "the platform".into(),
        detail: e.to_string(),
    })?;
    let src = LayoutSource {
        dir: PathBuf::from(dir),
        tag: tag.map(str::to_owned),
    };
    // A layout source does no network I/O: its futures complete on first poll.
    let image = futures::executor::block_on(source::read_image(&src, &platform))?;
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
    // Only the entries the diagnosis asks about are kept, so memory follows the lock, not the
    // image. Which those are depends on the user's home, which may come from the image's
    // /etc/passwd: the layers are read once with the home the User alone gives, and again only
    // when /etc/passwd gives another home that moves a loader's cache.
    let guessed = caches(loaders::default_home(&user_field));
    let mut entries = image_entries(&src, &image.layers, &wanted_entries(lock, &guessed))?;
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
    if actual != guessed {
        entries = image_entries(&src, &image.layers, &wanted_entries(lock, &actual))?;
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
    let target = format!("{}:{}", dir.display(), tag.unwrap_or("(only image)"));
    Ok(diagnose(&tree, &env, lock, target, user))
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
    fn write_layout(dir: &Path, config: &serde_json::Value, layer: &[u8]) {
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

    #[test]
    fn a_home_that_only_etc_passwd_gives_is_looked_in() {
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
        let report = diagnose_layout(dir.path(), Some("t"), "linux/amd64", &lock).unwrap();
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
