//! The auth files: where they are, what is in them (`auths`, `credHelpers`, `credsStore`, the
//! same JSON for Docker's `config.json` and the containers `auth.json`), and the one change
//! modelbake makes to them (`login` adds an `auths` entry, `logout` removes it).

use std::path::{Path, PathBuf};

use base64::Engine;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use super::{Credential, CredentialError, Secret, normalize_registry};
use crate::fs_atomic::{Mode, write_atomic};

/// The most an auth file may weigh.
const FILE_LIMIT: u64 = 4 << 20;

/// The files searched for credentials, in order: `$REGISTRY_AUTH_FILE` alone when set (as
/// podman and skopeo do); else `$XDG_RUNTIME_DIR/containers/auth.json`,
/// `${XDG_CONFIG_HOME:-~/.config}/containers/auth.json`, then Docker's
/// `${DOCKER_CONFIG:-~/.docker}/config.json`.
pub fn auth_files(env: &dyn Fn(&str) -> Option<String>) -> Vec<PathBuf> {
    let set = |k: &str| env(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(f) = set("REGISTRY_AUTH_FILE") {
        return vec![f];
    }
    let home = set("HOME");
    let mut files = Vec::new();
    if let Some(run) = set("XDG_RUNTIME_DIR") {
        files.push(run.join("containers/auth.json"));
    }
    if let Some(cfg) = set("XDG_CONFIG_HOME").or_else(|| home.as_ref().map(|h| h.join(".config"))) {
        files.push(cfg.join("containers/auth.json"));
    }
    if let Some(d) = set("DOCKER_CONFIG").or_else(|| home.as_ref().map(|h| h.join(".docker"))) {
        files.push(d.join("config.json"));
    }
    files
}

/// The file `login` writes and `logout` edits, as podman does: `$REGISTRY_AUTH_FILE`, else
/// `$XDG_RUNTIME_DIR/containers/auth.json` when that folder exists, else
/// `${XDG_CONFIG_HOME:-~/.config}/containers/auth.json`.
pub fn login_file(env: &dyn Fn(&str) -> Option<String>) -> Option<PathBuf> {
    let set = |k: &str| env(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(f) = set("REGISTRY_AUTH_FILE") {
        return Some(f);
    }
    if let Some(run) = set("XDG_RUNTIME_DIR").filter(|r| r.is_dir()) {
        return Some(run.join("containers/auth.json"));
    }
    set("XDG_CONFIG_HOME")
        .or_else(|| set("HOME").map(|h| h.join(".config")))
        .map(|c| c.join("containers/auth.json"))
}

/// One parsed auth file.
#[derive(Debug, Default)]
pub struct AuthConfig {
    json: Map<String, Value>,
}

impl AuthConfig {
    /// The file at `path`; `None` when it does not exist. Anything but a regular file (after
    /// symlinks) is refused unread: a FIFO would block forever, a device never end.
    pub fn read(path: &Path) -> Result<Option<Self>, CredentialError> {
        let Some(bytes) = read_capped(path)? else {
            return Ok(None);
        };
        Self::parse(path, &bytes).map(Some)
    }

    /// The auth file `path` holding `bytes` (blank: an empty object).
    fn parse(path: &Path, bytes: &[u8]) -> Result<Self, CredentialError> {
        let bad = |detail: String| CredentialError::File {
            path: path.to_owned(),
            detail,
        };
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(AuthConfig::default());
        }
        // serde_json's messages give a position, never the text around it.
        match serde_json::from_slice(bytes) {
            Ok(Value::Object(json)) => Ok(AuthConfig { json }),
            Ok(_) => Err(bad("not a JSON object".into())),
            Err(e) => Err(bad(format!("not valid JSON: {e}"))),
        }
    }

    /// The helper `credHelpers` names for `registry`.
    pub fn helper_for(&self, registry: &str) -> Option<&str> {
        let want = normalize_registry(registry);
        self.json
            .get("credHelpers")?
            .as_object()?
            .iter()
            .find(|(k, _)| normalize_registry(k) == want)
            .and_then(|(_, v)| v.as_str())
            .filter(|n| !n.is_empty())
    }

    /// The default helper (`credsStore`).
    pub fn creds_store(&self) -> Option<&str> {
        self.json
            .get("credsStore")?
            .as_str()
            .filter(|n| !n.is_empty())
    }

    /// The `auths` entry for `registry` (keys compared as registries, so `https://host/v1/`
    /// matches `host`): `identitytoken`, else `auth` (base64 `user:password`), else
    /// `username` + `password`. An entry without any (what `credsStore` leaves) is none.
    pub fn auth_for(
        &self,
        registry: &str,
        path: &Path,
    ) -> Result<Option<Credential>, CredentialError> {
        let want = normalize_registry(registry);
        let Some(auths) = self.json.get("auths").and_then(Value::as_object) else {
            return Ok(None);
        };
        // An exact key first (a file may hold `host` and `https://host/`), then any alias.
        let entry = auths.get(registry).or_else(|| {
            auths
                .iter()
                .find(|(k, _)| normalize_registry(k) == want)
                .map(|(_, v)| v)
        });
        let Some(entry) = entry else {
            return Ok(None);
        };
        let field = |k: &str| {
            entry
                .get(k)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
        };
        if let Some(token) = field("identitytoken") {
            return Ok(Some(Credential::IdentityToken(Secret::new(token))));
        }
        if let Some(auth) = field("auth") {
            return decode_auth(auth)
                .map(Some)
                .ok_or_else(|| CredentialError::File {
                    path: path.to_owned(),
                    detail: format!("the `auth` of `{want}` is not base64 of user:password"),
                });
        }
        Ok(match (field("username"), field("password")) {
            (Some(u), Some(p)) => Some(Credential::Basic {
                username: u.to_owned(),
                password: Secret::new(p),
            }),
            _ => None,
        })
    }
}

/// What a file that is not a regular file is, for messages.
fn kind_of(t: std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if t.is_dir() {
        "a folder"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_char_device() || t.is_block_device() {
        "a device"
    } else if t.is_socket() {
        "a socket"
    } else {
        "not a file"
    }
}

/// Refuses anything at `path` (after symlinks) that is not a regular file.
fn regular(path: &Path, t: std::fs::FileType) -> Result<(), CredentialError> {
    if t.is_file() {
        return Ok(());
    }
    Err(CredentialError::File {
        path: path.to_owned(),
        detail: format!(
            "it is {}, not a regular file: point REGISTRY_AUTH_FILE (or --authfile) at a regular file, or replace it with one",
            kind_of(t)
        ),
    })
}

/// The bytes of the auth file at `path` (at most [`FILE_LIMIT`]), `None` when it does not
/// exist. The type is checked before opening, and again on the opened file (opened
/// non-blocking, so a FIFO swapped in between cannot block either).
fn read_capped(path: &Path) -> Result<Option<Vec<u8>>, CredentialError> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let bad = |detail: String| CredentialError::File {
        path: path.to_owned(),
        detail,
    };
    let too_big = || bad(format!("larger than {FILE_LIMIT} bytes"));
    match std::fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(bad(e.to_string())),
        Ok(m) => regular(path, m.file_type())?,
    }
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
    {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(bad(e.to_string())),
        Ok(f) => f,
    };
    let meta = file.metadata().map_err(|e| bad(e.to_string()))?;
    regular(path, meta.file_type())?;
    if meta.len() > FILE_LIMIT {
        return Err(too_big());
    }
    let mut bytes = Vec::new();
    file.take(FILE_LIMIT + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| bad(e.to_string()))?;
    if bytes.len() as u64 > FILE_LIMIT {
        return Err(too_big());
    }
    Ok(Some(bytes))
}

/// `base64(user:password)` as basic credentials.
fn decode_auth(auth: &str) -> Option<Credential> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(auth.trim())
        .ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let (u, p) = text.split_once(':')?;
    Some(Credential::Basic {
        username: u.to_owned(),
        password: Secret::new(p),
    })
}

/// A JSON object's members in file order, each value kept as the exact text it was written
/// as: what `login` and `logout` do not own (other keys, other registries' entries) is copied
/// byte for byte, so no number is rewritten (`1e5`, `-0`, integers beyond `f64`).
#[derive(Debug, Default)]
struct RawMembers(Vec<(String, Box<RawValue>)>);

impl RawMembers {
    /// Parses the object `text` (`None` when it is not a JSON object).
    fn parse(text: &[u8]) -> Option<Self> {
        if text.iter().all(u8::is_ascii_whitespace) {
            return Some(RawMembers::default());
        }
        serde_json::from_slice(text).ok()
    }

    /// The value of `key`.
    fn get(&self, key: &str) -> Option<&RawValue> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| &**v)
    }

    /// Sets `key`, in its place when present (a key written twice keeps its first place and,
    /// as every reader does, its last value), else first (`put_first`) or last.
    fn set(&mut self, key: String, value: Box<RawValue>, put_first: bool) {
        if let Some(slot) = self.0.iter_mut().find(|(k, _)| *k == key) {
            slot.1 = value;
        } else if put_first {
            self.0.insert(0, (key, value));
        } else {
            self.0.push((key, value));
        }
    }

    /// The object as JSON, one member a line, indented for nesting at `depth` spaces (values
    /// as they were written).
    fn to_text(&self, depth: usize) -> String {
        if self.0.is_empty() {
            return "{}".into();
        }
        let inner = " ".repeat(depth + 2);
        let members: Vec<String> = self
            .0
            .iter()
            .map(|(k, v)| format!("{inner}{}: {}", json_string(k), v.get()))
            .collect();
        format!("{{\n{}\n{}}}", members.join(",\n"), " ".repeat(depth))
    }
}

impl<'de> serde::Deserialize<'de> for RawMembers {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Members;
        impl<'de> serde::de::Visitor<'de> for Members {
            type Value = RawMembers;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<RawMembers, A::Error> {
                let mut members = RawMembers::default();
                while let Some((k, v)) = map.next_entry::<String, Box<RawValue>>()? {
                    members.set(k, v, false);
                }
                Ok(members)
            }
        }
        d.deserialize_map(Members)
    }
}

/// `s` as a JSON string.
fn json_string(s: &str) -> String {
    Value::String(s.to_owned()).to_string()
}

/// Raw JSON that modelbake built itself (always valid).
fn raw(text: String) -> Result<Box<RawValue>, serde_json::Error> {
    RawValue::from_string(text)
}

/// Why `login`/`logout` could not change the file.
fn edit_error(path: &Path, what: &str, e: impl std::fmt::Display) -> CredentialError {
    CredentialError::File {
        path: path.to_owned(),
        detail: format!("cannot {what}: {e}"),
    }
}

/// The lock beside `path` (`auth.json.lock`, mode 0600, left in place): held with `flock`
/// around every read-modify-write, so concurrent `login`s and `logout`s into one file keep
/// each other's entries. Released when dropped.
fn lock_beside(path: &Path) -> Result<std::fs::File, CredentialError> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut name = path.file_name().unwrap_or_default().to_owned();
    name.push(".lock");
    let lock_path = path.with_file_name(name);
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(&lock_path)
        .map_err(|e| edit_error(path, &format!("open its lock {}", lock_path.display()), e))?;
    match file.lock() {
        Ok(()) => Ok(file),
        // Where the filesystem has no locks, edit unlocked (as before).
        Err(e) if e.kind() == std::io::ErrorKind::Unsupported => Ok(file),
        Err(e) => Err(edit_error(
            path,
            &format!("lock {}", lock_path.display()),
            e,
        )),
    }
}

/// The file an edit writes: `path`, or, when `path` is a symlink, the file it points to
/// (followed to the end, and created there when missing), so that the link stays and no
/// secret lingers in its target.
fn edit_target(path: &Path) -> Result<PathBuf, CredentialError> {
    let mut p = path.to_owned();
    for _ in 0..40 {
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_symlink() => {
                let to = std::fs::read_link(&p)
                    .map_err(|e| edit_error(path, "follow its symlink", e))?;
                // A relative target is relative to the link's folder; an absolute one replaces.
                p = match p.parent() {
                    Some(dir) => dir.join(to),
                    None => to,
                };
            }
            _ => return Ok(p),
        }
    }
    Err(edit_error(
        path,
        "follow its symlink",
        "more than 40 links in a row: point it at the auth file itself",
    ))
}

/// Under the lock beside `path` (through a symlink, its target): reads it (or an empty object), lets `change` edit its
/// `auths`, and, when `change` says it changed something, writes it back atomically with
/// mode 0600, keeping every other entry and key. Returns what `change` said.
fn edit_auths(
    path: &Path,
    change: impl FnOnce(&mut RawMembers) -> bool,
) -> Result<bool, CredentialError> {
    let target = edit_target(path)?;
    let path = target.as_path();
    // Nothing is created beside a file that could not be edited anyway.
    match std::fs::metadata(path) {
        Ok(m) => regular(path, m.file_type())?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(edit_error(path, "read it", e)),
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        create_private_dir(dir).map_err(|e| edit_error(path, "create its folder", e))?;
    }
    let _lock = lock_beside(path)?;
    let bytes = read_capped(path)?.unwrap_or_default();
    // Checked as any reader sees it (a JSON object), then edited as text.
    AuthConfig::parse(path, &bytes)?;
    let not_json = |e: &str| edit_error(path, "edit it", e);
    let mut top = RawMembers::parse(&bytes).ok_or_else(|| not_json("not a JSON object"))?;
    let mut auths = match top.get("auths") {
        None => RawMembers::default(),
        Some(v) => RawMembers::parse(v.get().as_bytes())
            .ok_or_else(|| not_json("`auths` is not an object"))?,
    };
    if !change(&mut auths) {
        return Ok(false);
    }
    let auths = raw(auths.to_text(2)).map_err(|e| edit_error(path, "write it", e))?;
    top.set("auths".into(), auths, true);
    let mut bytes = top.to_text(0).into_bytes();
    bytes.push(b'\n');
    write_atomic(path, &bytes, Mode::Fixed(0o600)).map_err(|e| edit_error(path, "write it", e))?;
    Ok(true)
}

/// Creates `dir` and its missing parents with mode 0700 (credentials live there).
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// Stores basic credentials for `registry` in `path` (`auths[registry].auth`, as podman and
/// docker write it), replacing any entry for the same registry under another alias.
pub fn store_login(
    path: &Path,
    registry: &str,
    username: &str,
    password: &Secret,
) -> Result<(), CredentialError> {
    let key = normalize_registry(registry);
    let auth = base64::engine::general_purpose::STANDARD
        .encode(format!("{username}:{}", password.expose()));
    let entry = raw(format!(
        "{{\n      \"auth\": {}\n    }}",
        json_string(&auth)
    ))
    .map_err(|e| edit_error(path, "write it", e))?;
    edit_auths(path, |auths| {
        auths.0.retain(|(k, _)| normalize_registry(k) != key);
        auths.0.push((key, entry));
        true
    })?;
    Ok(())
}

/// Removes every `auths` entry for `registry` from `path`; true when there was one. A missing
/// file is left missing.
pub fn remove_login(path: &Path, registry: &str) -> Result<bool, CredentialError> {
    let key = normalize_registry(registry);
    let present = AuthConfig::read(path)?.is_some_and(|c| {
        c.json
            .get("auths")
            .and_then(Value::as_object)
            .is_some_and(|a| a.keys().any(|k| normalize_registry(k) == key))
    });
    if !present {
        return Ok(false);
    }
    // Checked again under the lock: another logout may have removed it meanwhile.
    edit_auths(path, |auths| {
        let before = auths.0.len();
        auths.0.retain(|(k, _)| normalize_registry(k) != key);
        auths.0.len() != before
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::env_of;
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};

    #[test]
    fn files_in_podman_order_and_the_override_alone() {
        let env = env_of(&[("HOME", "/h"), ("XDG_RUNTIME_DIR", "/run/user/7")]);
        assert_eq!(
            auth_files(&env),
            [
                PathBuf::from("/run/user/7/containers/auth.json"),
                PathBuf::from("/h/.config/containers/auth.json"),
                PathBuf::from("/h/.docker/config.json"),
            ]
        );
        let env = env_of(&[
            ("HOME", "/h"),
            ("DOCKER_CONFIG", "/d"),
            ("XDG_CONFIG_HOME", "/c"),
        ]);
        assert_eq!(
            auth_files(&env),
            [
                PathBuf::from("/c/containers/auth.json"),
                PathBuf::from("/d/config.json")
            ]
        );
        let env = env_of(&[("HOME", "/h"), ("REGISTRY_AUTH_FILE", "/a.json")]);
        assert_eq!(auth_files(&env), [PathBuf::from("/a.json")]);
        assert_eq!(login_file(&env), Some(PathBuf::from("/a.json")));
        // A runtime dir that does not exist is not written to.
        let env = env_of(&[("HOME", "/h"), ("XDG_RUNTIME_DIR", "/nonexistent-run")]);
        assert_eq!(
            login_file(&env),
            Some(PathBuf::from("/h/.config/containers/auth.json"))
        );
    }

    #[test]
    fn entries_of_every_shape() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        let auth = base64::engine::general_purpose::STANDARD.encode("u:p:with:colons");
        std::fs::write(
            &path,
            format!(
                r#"{{"auths":{{"127.0.0.1:5000":{{"auth":"{auth}"}},
                "https://index.docker.io/v1/":{{"username":"a","password":"b"}},
                "ghcr.io":{{"auth":"{auth}","identitytoken":"rt"}},
                "store.example":{{}}, "bad.example":{{"auth":"!!"}}}},
                "credHelpers":{{"https://gcr.io":"gcloud"}},"credsStore":"pass"}}"#
            ),
        )
        .unwrap();
        let c = AuthConfig::read(&path).unwrap().unwrap();
        let basic = |u: &str, p: &str| {
            Some(Credential::Basic {
                username: u.into(),
                password: Secret::new(p),
            })
        };
        assert_eq!(
            c.auth_for("127.0.0.1:5000", &path).unwrap(),
            basic("u", "p:with:colons")
        );
        assert_eq!(c.auth_for("docker.io", &path).unwrap(), basic("a", "b"));
        assert_eq!(
            c.auth_for("ghcr.io", &path).unwrap(),
            Some(Credential::IdentityToken(Secret::new("rt")))
        );
        assert_eq!(c.auth_for("store.example", &path).unwrap(), None);
        assert_eq!(c.auth_for("other:1", &path).unwrap(), None);
        let e = c.auth_for("bad.example", &path).unwrap_err().to_string();
        assert!(
            e.contains("bad.example") && e.contains("config.json"),
            "{e}"
        );
        assert_eq!(c.helper_for("gcr.io"), Some("gcloud"));
        assert_eq!(c.helper_for("ghcr.io"), None);
        assert_eq!(c.creds_store(), Some("pass"));

        assert!(
            AuthConfig::read(&dir.path().join("missing"))
                .unwrap()
                .is_none()
        );
        std::fs::write(&path, "{ not json").unwrap();
        assert!(AuthConfig::read(&path).is_err());
    }

    #[test]
    fn login_keeps_other_entries_and_writes_0600() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/containers/auth.json");
        store_login(&path, "other.example", "x", &Secret::new("y")).unwrap();
        let raw = std::fs::read_to_string(&path).unwrap();
        std::fs::write(
            &path,
            raw.replacen('{', r#"{"credHelpers":{"gcr.io":"gcloud"},"#, 1),
        )
        .unwrap();
        store_login(
            &path,
            "https://index.docker.io/v1/",
            "alice",
            &Secret::new("s3"),
        )
        .unwrap();
        store_login(&path, "docker.io", "alice", &Secret::new("s4")).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let dir_mode = std::fs::metadata(path.parent().unwrap())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(dir_mode & 0o777, 0o700);
        let c = AuthConfig::read(&path).unwrap().unwrap();
        assert_eq!(c.helper_for("gcr.io"), Some("gcloud"), "other keys kept");
        assert!(c.auth_for("other.example", &path).unwrap().is_some());
        assert_eq!(
            c.auth_for("docker.io", &path).unwrap(),
            Some(Credential::Basic {
                username: "alice".into(),
                password: Secret::new("s4")
            })
        );
        assert_eq!(
            c.json["auths"].as_object().unwrap().len(),
            2,
            "one key per registry"
        );

        assert!(remove_login(&path, "index.docker.io").unwrap());
        assert!(!remove_login(&path, "docker.io").unwrap());
        let c = AuthConfig::read(&path).unwrap().unwrap();
        assert!(c.auth_for("docker.io", &path).unwrap().is_none());
        assert!(c.auth_for("other.example", &path).unwrap().is_some());
        assert!(!remove_login(&dir.path().join("none.json"), "x").unwrap());
        assert!(!dir.path().join("none.json").exists());
    }

    /// The mode of every temp file `write_atomic` creates on this thread while `f` runs, with
    /// the umask cleared so that only the mode modelbake asks for counts.
    fn temp_modes_during(f: impl FnOnce()) -> Vec<u32> {
        let seen = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
        let record = seen.clone();
        crate::fs_atomic::ON_TEMP_CREATED.set(Some(Box::new(move |p: &Path| {
            let mode = std::fs::metadata(p).map_or(0o777, |m| m.permissions().mode() & 0o777);
            record.borrow_mut().push(mode);
        })));
        // SAFETY: umask has no memory effects; nextest runs each test in its own process.
        let old = unsafe { libc::umask(0) };
        f();
        unsafe { libc::umask(old) };
        crate::fs_atomic::ON_TEMP_CREATED.set(None);
        seen.take()
    }

    #[test]
    fn the_auth_file_is_private_from_the_moment_it_is_created() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("auth.json");
        let modes = temp_modes_during(|| {
            store_login(&path, "a.example", "u", &Secret::new("p")).unwrap();
            store_login(&path, "b.example", "u", &Secret::new("p")).unwrap();
            assert!(remove_login(&path, "a.example").unwrap());
        });
        assert_eq!(modes.len(), 3, "{modes:?}");
        for m in modes {
            assert_eq!(
                m & 0o077,
                0,
                "a temp file was created {m:o}: others could open it"
            );
        }
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    /// `AuthConfig::read(path)` on another thread, or `None` when it has not returned in 10 s.
    fn read_within(path: &Path) -> Option<Result<Option<AuthConfig>, CredentialError>> {
        let (tx, rx) = std::sync::mpsc::channel();
        let path = path.to_owned();
        std::thread::spawn(move || tx.send(AuthConfig::read(&path)));
        rx.recv_timeout(std::time::Duration::from_secs(10)).ok()
    }

    #[test]
    fn fifos_and_devices_are_refused_without_being_read() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("auth.json");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid C string.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let e = read_within(&fifo)
            .expect("reading a FIFO hung")
            .unwrap_err()
            .to_string();
        assert!(e.contains("FIFO") && e.contains("regular file"), "{e}");
        let e = store_login(&fifo, "a.example", "u", &Secret::new("p"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("FIFO"), "{e}");
        assert!(
            std::fs::symlink_metadata(&fifo)
                .unwrap()
                .file_type()
                .is_fifo()
        );

        let zero = Path::new("/dev/zero");
        let e = read_within(zero)
            .expect("reading /dev/zero hung")
            .unwrap_err()
            .to_string();
        assert!(e.contains("device") && e.contains("regular file"), "{e}");
        let link = dir.path().join("zero.json");
        std::os::unix::fs::symlink(zero, &link).unwrap();
        let e = read_within(&link)
            .expect("reading /dev/zero hung")
            .unwrap_err()
            .to_string();
        assert!(e.contains("device"), "{e}");
        let e = read_within(dir.path())
            .expect("reading a folder hung")
            .unwrap_err()
            .to_string();
        assert!(e.contains("folder"), "{e}");
    }

    #[test]
    fn concurrent_logins_keep_every_entry() {
        for round in 0..5 {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("auth.json");
            let barrier = std::sync::Barrier::new(8);
            std::thread::scope(|s| {
                for i in 0..8 {
                    let (path, barrier) = (&path, &barrier);
                    s.spawn(move || {
                        barrier.wait();
                        store_login(path, &format!("r{i}.example"), "u", &Secret::new("p"))
                            .unwrap();
                    });
                }
            });
            let c = AuthConfig::read(&path).unwrap().unwrap();
            let n = c.json["auths"].as_object().unwrap().len();
            assert_eq!(n, 8, "round {round}: {n} of 8 logins left an entry");
        }
    }

    #[test]
    fn edits_go_through_a_symlink_to_its_target() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("real/auth.json");
        let link = dir.path().join("auth.json");
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink("real/auth.json", &link).unwrap();
        store_login(&link, "a.example", "u", &Secret::new("p-secret")).unwrap();
        store_login(&link, "b.example", "u", &Secret::new("p")).unwrap();
        assert!(link.symlink_metadata().unwrap().file_type().is_symlink());
        let auth = base64::engine::general_purpose::STANDARD.encode("u:p-secret");
        assert!(std::fs::read_to_string(&target).unwrap().contains(&auth));

        assert!(remove_login(&link, "a.example").unwrap());
        assert!(
            link.symlink_metadata().unwrap().file_type().is_symlink(),
            "logout replaced the link"
        );
        let left = std::fs::read_to_string(&target).unwrap();
        assert!(
            !left.contains(&auth),
            "the secret stayed in the target: {left}"
        );
        assert!(left.contains("b.example"), "{left}");
        let mode = std::fs::metadata(&target).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn entries_modelbake_does_not_own_keep_their_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("auth.json");
        let other = r#"{"big":123456789012345678901234567890,"e":1e5,"z":-0,"f":1.50}"#;
        let entry = r#"{"auth":"eDp5","expires":1e10,  "n":-0}"#;
        std::fs::write(
            &path,
            format!(
                r#"{{"auths":{{"keep.example":{entry}}},"other":{other},"credsStore":"pass"}}"#
            ),
        )
        .unwrap();
        store_login(&path, "new.example", "u", &Secret::new("p")).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains(other), "{text}");
        assert!(text.contains(entry), "{text}");
        assert!(remove_login(&path, "new.example").unwrap());
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains(other), "{text}");
        assert!(text.contains(entry), "{text}");
        let c = AuthConfig::read(&path).unwrap().unwrap();
        assert_eq!(c.creds_store(), Some("pass"));
        assert!(c.auth_for("keep.example", &path).unwrap().is_some());
        assert!(c.auth_for("new.example", &path).unwrap().is_none());
    }
}
