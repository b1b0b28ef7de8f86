//! The content-addressed blob store shared by every project on a machine: one copy of each
//! file, keyed by sha256, never visible before its hash was checked.
//!
//! Layout under the store root (every path is named by [`StorePaths`]):
//! - `blobs/sha256/<aa>/<sha256>`: published blobs, read-only (0444);
//! - `tmp/<sha256>.<unique>.part`: downloads in progress, always a contiguous prefix of the
//!   content, so an interrupted download resumes from its length;
//! - `locks/<sha256>.lock`: per-blob claim files (a `flock` on each), so concurrent processes
//!   download a blob once;
//! - `layers/` and `plugins/`: the layer cache and the plugin folder, kept by their owners.
//!
//! Where `flock` is a no-op (some NFS/Lustre setups), nothing breaks: every writer has its own
//! uniquely named temp file, a leftover partial is taken over by an atomic rename (only one
//! process wins it), and every blob is verified before the rename that publishes it.
//!
//! Nothing inside the store is ever reached through a symlink: its folders must be real
//! folders (a symlinked one is refused, naming it), blobs and partials must be regular files,
//! and files are opened with `O_NOFOLLOW`. The store root itself may be a symlink: that is
//! where the user chose to put it.

pub mod chunk_index;
pub mod gc;
mod partial;
mod paths;

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

pub use partial::Partial;
pub use paths::StorePaths;

use crate::hash::is_lower_hex;

/// A failure in the store, with the path involved and what to do.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// `store gc` while another command has the store open.
    #[error(
        "another modelbake command (fetch, export, bake, serve, …) still had the store {} open after {waited} s; store gc removed nothing",
        .root.display()
    )]
    InUse {
        /// The store.
        root: PathBuf,
        /// Seconds waited.
        waited: u64,
    },
    /// An I/O operation failed.
    #[error("{what} {}: {source}{}", .path.display(), hint(.source))]
    Io {
        /// What was being done ("writing", "creating", ...).
        what: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The content did not hash to what the lock says; nothing was published.
    #[error(
        "sha256 mismatch: expected {expected}, got {actual}; the partial download was discarded and nothing was published"
    )]
    HashMismatch {
        /// The lock's sha256.
        expected: String,
        /// What the bytes hashed to.
        actual: String,
    },
    /// A folder inside the store is a symlink; the store never reads, writes or deletes
    /// through one, so a link planted there cannot make it touch files elsewhere.
    #[error(
        "{} is a symlink{}: modelbake never follows symlinked folders inside its store; replace it with a real folder (moving what it holds into it), or point MODELBAKE_STORE / --store at the other disk instead",
        .path.display(),
        .target.as_ref().map(|t| format!(" (to {})", t.display())).unwrap_or_default()
    )]
    SymlinkedFolder {
        /// The symlink.
        path: PathBuf,
        /// Where it points, when readable.
        target: Option<PathBuf>,
    },
    /// The content had another length than the lock says.
    #[error(
        "size mismatch: expected {expected} bytes, got {actual}; the partial download was discarded and nothing was published"
    )]
    SizeMismatch {
        /// The lock's size.
        expected: u64,
        /// The bytes received.
        actual: u64,
    },
}

fn hint(e: &io::Error) -> &'static str {
    match e.raw_os_error() {
        Some(libc::ENOSPC) | Some(libc::EDQUOT) => {
            " (the disk is full: free space, or point MODELBAKE_STORE at a larger disk; the partial download is kept and resumes on the next run)"
        }
        Some(libc::EROFS) | Some(libc::EACCES) | Some(libc::EPERM) => {
            " (not writable: set MODELBAKE_STORE to a folder you can write)"
        }
        _ => "",
    }
}

/// What to do about a store failure. Full and read-only disks are named in the `Io` message
/// itself (a failed blob's message is all `fetch` keeps of it), so they need no hint here.
impl crate::hint::Hint for StoreError {
    fn hint(&self) -> Option<String> {
        match self {
            StoreError::HashMismatch { .. } | StoreError::SizeMismatch { .. } => Some(
                "run the command again: nothing was kept, so the file is downloaded afresh. If it \
                 happens again, something alters the downloads (a proxy, or the source a [mirror] \
                 plugin proposed) or models.lock was edited by hand (`git diff models.lock`)"
                    .to_owned(),
            ),
            StoreError::InUse { .. } => Some(
                "run `modelbake store gc` again once the other commands have finished, or give \
                 it longer with --wait SECONDS (a running `modelbake serve` keeps the store in \
                 use until it is stopped)"
                    .to_owned(),
            ),
            StoreError::Io { .. } | StoreError::SymlinkedFolder { .. } => None,
        }
    }
}

/// Attaches a path and an action to an I/O error.
pub(crate) fn io_err<'a>(
    what: &'static str,
    path: &'a Path,
) -> impl FnOnce(io::Error) -> StoreError + 'a {
    move |source| StoreError::Io {
        what,
        path: path.to_owned(),
        source,
    }
}

/// An open store.
#[derive(Debug, Clone)]
pub struct Store {
    layout: StorePaths,
    durable: bool,
    /// A shared `flock` on `locks/store.lock`, held as long as any clone of this store lives:
    /// `store gc` removes blobs only when it can turn its own into an exclusive one, so nothing
    /// another command uses disappears under it (see docs/concurrency.md). `None` where the
    /// filesystem has no locks.
    in_use: Option<std::sync::Arc<File>>,
}

/// Opens `path` and takes a shared `flock` on it, waiting while a `store gc` holds it
/// exclusively; `None` where the filesystem does not support locks.
fn hold_shared(path: &Path) -> Result<Option<std::sync::Arc<File>>, StoreError> {
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(io_err("opening the lock file", path))?;
    match file.lock_shared() {
        Ok(()) => Ok(Some(std::sync::Arc::new(file))),
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOLCK | libc::EOPNOTSUPP)) => Ok(None),
        Err(e) => Err(io_err("locking", path)(e)),
    }
}

/// An exclusive claim on one blob (a `flock` on its claim file, `locks/<sha256>.lock`),
/// released when the last clone is dropped. Clones let the claim travel into blocking tasks.
#[derive(Debug, Clone)]
pub struct BlobClaim {
    _file: std::sync::Arc<File>,
}

impl Store {
    /// The `plugins/` folder of the store at `root` (see [`StorePaths::plugins`]), for callers
    /// that have a root but no open store.
    pub fn plugin_dir_of(root: &Path) -> PathBuf {
        StorePaths::new(root).plugins()
    }

    /// This store's `plugins/` folder.
    pub fn plugin_dir(&self) -> PathBuf {
        self.layout.plugins()
    }

    /// The store location: `MODELBAKE_STORE`, else `$XDG_CACHE_HOME/modelbake/store`, else
    /// `~/.cache/modelbake/store`.
    pub fn default_root(env: &dyn Fn(&str) -> Option<String>) -> Option<PathBuf> {
        let nonempty = |k: &str| env(k).filter(|v| !v.is_empty());
        if let Some(s) = nonempty("MODELBAKE_STORE") {
            return Some(PathBuf::from(s));
        }
        if let Some(x) = nonempty("XDG_CACHE_HOME") {
            return Some(PathBuf::from(x).join("modelbake/store"));
        }
        nonempty("HOME").map(|h| PathBuf::from(h).join(".cache/modelbake/store"))
    }

    /// Opens (creating if needed) the store at `root`. Its folders (`blobs`, `blobs/sha256`,
    /// `tmp`, `locks`) must be real folders: a symlinked one is refused, naming it.
    pub fn open(root: &Path) -> Result<Self, StoreError> {
        fs::create_dir_all(root).map_err(io_err("creating the store folder", root))?;
        let layout = StorePaths::new(root);
        for dir in layout.required_dirs() {
            real_dir(&dir)?;
        }
        let in_use = hold_shared(&layout.in_use())?;
        Ok(Store {
            layout,
            durable: true,
            in_use,
        })
    }

    /// Makes this process the store's only user for as long as it runs: `store gc` calls it
    /// before it removes anything. Waits up to `wait` for the other commands (`fetch`,
    /// `export`, `bake`, `serve`, …) that have the store open to finish, then fails, having
    /// changed nothing. Commands that open the store meanwhile wait for this one.
    pub fn use_alone(&self, wait: std::time::Duration) -> Result<(), StoreError> {
        let Some(file) = &self.in_use else {
            return Ok(()); // no locks on this filesystem: nothing to wait for
        };
        // Give up our own shared hold first: two collections waiting to upgrade would
        // otherwise wait for each other.
        file.unlock()
            .map_err(io_err("unlocking", &self.layout.in_use()))?;
        let deadline = std::time::Instant::now() + wait;
        loop {
            match file.try_lock() {
                Ok(()) => return Ok(()),
                Err(fs::TryLockError::WouldBlock) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                Err(fs::TryLockError::WouldBlock) => {
                    return Err(StoreError::InUse {
                        root: self.root().to_owned(),
                        waited: wait.as_secs(),
                    });
                }
                Err(fs::TryLockError::Error(e)) => {
                    return Err(io_err("locking", &self.layout.in_use())(e));
                }
            }
        }
    }

    /// Whether blobs are fsynced before they are published (the default). Turning it off
    /// keeps every other guarantee — nothing unverified is ever visible, a killed process
    /// loses nothing — and only gives up durability across a power loss or kernel crash: the
    /// right trade on ephemeral CI runners and container builds, where such a crash discards
    /// the machine anyway, and much faster where the disk is slower than the network.
    pub fn with_durability(mut self, durable: bool) -> Self {
        self.durable = durable;
        self
    }

    /// See [`Store::with_durability`].
    pub fn durable(&self) -> bool {
        self.durable
    }

    /// The store root.
    pub fn root(&self) -> &Path {
        self.layout.root()
    }

    /// The paths of this store's folders and entries.
    pub fn paths(&self) -> &StorePaths {
        &self.layout
    }

    /// Where the blob with this sha256 lives once published.
    pub fn blob_path(&self, sha256: &str) -> PathBuf {
        self.layout.blob(sha256)
    }

    /// True when the blob is published with the expected size: a regular file in a real shard
    /// folder (a symlink there is never taken for a blob). Published blobs were verified
    /// before publication; `verify` re-hashes exports when proof is needed.
    pub fn has(&self, sha256: &str, size: u64) -> bool {
        let path = self.blob_path(sha256);
        path.parent().is_some_and(is_real_dir)
            && fs::symlink_metadata(&path).is_ok_and(|m| m.is_file() && m.len() == size)
    }

    /// The files of `lock` whose blobs are not published yet, as `model `x` file `y``: what
    /// `export` and `bake` refuse to start without.
    pub fn missing(&self, lock: &crate::lock::Lockfile) -> Vec<String> {
        lock.repos
            .iter()
            .flat_map(|r| r.files.iter().map(move |f| (r, f)))
            .filter(|(_, f)| !self.has(&f.sha256, f.size))
            .map(|(r, f)| format!("{} file `{}`", r.label(), f.path))
            .collect()
    }

    fn open_claim_file(&self, sha256: &str) -> Result<File, StoreError> {
        debug_assert!(is_lower_hex(sha256, 64));
        let path = self.layout.claim(sha256);
        File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .map_err(io_err("opening the lock file", &path))
    }

    /// Claims the blob, waiting while another process holds it.
    pub fn claim(&self, sha256: &str) -> Result<BlobClaim, StoreError> {
        let file = self.open_claim_file(sha256)?;
        file.lock()
            .map_err(io_err("locking", &self.layout.claim(sha256)))?;
        Ok(BlobClaim {
            _file: std::sync::Arc::new(file),
        })
    }

    /// Claims the blob if nobody else holds it.
    pub fn try_claim(&self, sha256: &str) -> Result<Option<BlobClaim>, StoreError> {
        let file = self.open_claim_file(sha256)?;
        match file.try_lock() {
            Ok(()) => Ok(Some(BlobClaim {
                _file: std::sync::Arc::new(file),
            })),
            Err(fs::TryLockError::WouldBlock) => Ok(None),
            Err(fs::TryLockError::Error(e)) => {
                Err(io_err("locking", &self.layout.claim(sha256))(e))
            }
        }
    }

    /// Starts or resumes writing the blob `sha256` of `size` bytes: takes over the largest
    /// partial left by an earlier run (hashing what it already holds), else starts empty.
    pub fn begin(
        &self,
        sha256: &str,
        size: u64,
        _claim: &BlobClaim,
    ) -> Result<Partial, StoreError> {
        Partial::begin(self, sha256, size)
    }
}

/// True when `path` is a folder itself, not a symlink to one (`symlink_metadata` does not
/// follow the last component).
pub(crate) fn is_real_dir(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok_and(|m| m.is_dir())
}

/// Creates `dir` when missing and checks that it is a real folder; a symlink there is refused
/// with [`StoreError::SymlinkedFolder`].
pub(crate) fn real_dir(dir: &Path) -> Result<(), StoreError> {
    let meta = match fs::symlink_metadata(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            match fs::create_dir(dir) {
                Err(e) if e.kind() != io::ErrorKind::AlreadyExists => {
                    return Err(io_err("creating the store folder", dir)(e));
                }
                _ => {}
            }
            fs::symlink_metadata(dir)
        }
        other => other,
    }
    .map_err(io_err("reading", dir))?;
    if meta.file_type().is_symlink() {
        return Err(StoreError::SymlinkedFolder {
            path: dir.to_owned(),
            target: fs::read_link(dir).ok(),
        });
    }
    if !meta.is_dir() {
        return Err(io_err("using the store folder", dir)(io::Error::new(
            io::ErrorKind::NotADirectory,
            "a file is where a folder should be; move it away",
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::sha256_hex;
    use crate::test_support::env_of;

    #[test]
    fn default_root_precedence() {
        assert_eq!(
            Store::default_root(&env_of(&[("MODELBAKE_STORE", "/s"), ("HOME", "/h")])),
            Some("/s".into())
        );
        assert_eq!(
            Store::default_root(&env_of(&[("XDG_CACHE_HOME", "/x"), ("HOME", "/h")])),
            Some("/x/modelbake/store".into())
        );
        assert_eq!(
            Store::default_root(&env_of(&[("HOME", "/h")])),
            Some("/h/.cache/modelbake/store".into())
        );
    }

    #[test]
    fn publishes_only_verified_content() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let data = b"hello store";
        let sha = sha256_hex(data);
        let claim = store.claim(&sha).unwrap();

        let mut p = store.begin(&sha, data.len() as u64, &claim).unwrap();
        p.append(b"hello STORE").unwrap();
        let err = p.publish().unwrap_err();
        assert!(matches!(err, StoreError::HashMismatch { .. }), "{err}");
        assert!(!store.has(&sha, data.len() as u64));
        assert_eq!(
            fs::read_dir(dir.path().join("tmp")).unwrap().count(),
            0,
            "the bad partial is gone"
        );

        let mut p = store.begin(&sha, data.len() as u64, &claim).unwrap();
        p.append(data).unwrap();
        let path = p.publish().unwrap();
        assert_eq!(fs::read(&path).unwrap(), data);
        assert!(store.has(&sha, data.len() as u64));
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o444
        );
    }

    #[test]
    fn resumes_a_partial_left_by_a_dead_process() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let data = b"0123456789abcdef";
        let sha = sha256_hex(data);
        let claim = store.claim(&sha).unwrap();
        let mut p = store.begin(&sha, 16, &claim).unwrap();
        p.append(&data[..6]).unwrap();
        p.suspend().unwrap(); // as if the process died here
        let mut p = store.begin(&sha, 16, &claim).unwrap();
        assert_eq!(p.len(), 6, "the earlier prefix is taken over");
        p.append(&data[6..]).unwrap();
        p.publish().unwrap();
        assert!(store.has(&sha, 16));
    }

    #[test]
    fn size_overflow_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let sha = sha256_hex(b"ab");
        let claim = store.claim(&sha).unwrap();
        let mut p = store.begin(&sha, 2, &claim).unwrap();
        let err = p.append(b"abc").unwrap_err();
        assert!(
            matches!(
                err,
                StoreError::SizeMismatch {
                    expected: 2,
                    actual: 3
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn symlinked_store_folders_are_refused_and_symlinks_are_never_blobs() {
        let dir = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(elsewhere.path(), dir.path().join("tmp")).unwrap();
        let err = Store::open(dir.path()).unwrap_err();
        assert!(matches!(err, StoreError::SymlinkedFolder { .. }), "{err}");
        assert!(
            err.to_string().contains("replace it with a real folder"),
            "{err}"
        );

        fs::remove_file(dir.path().join("tmp")).unwrap();
        let store = Store::open(dir.path()).unwrap();
        let data = b"a file elsewhere";
        let sha = sha256_hex(data);
        fs::write(elsewhere.path().join("f"), data).unwrap();
        let blob = store.blob_path(&sha);
        fs::create_dir_all(blob.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(elsewhere.path().join("f"), &blob).unwrap();
        assert!(!store.has(&sha, data.len() as u64));
    }

    #[test]
    fn partial_names() {
        let sha = "a".repeat(64);
        assert_eq!(
            StorePaths::partial_of(&format!("{sha}.12-00000000000000ff.part")),
            Some(sha.as_str())
        );
        assert_eq!(StorePaths::partial_of(&format!("{sha}.part")), None);
        assert_eq!(StorePaths::partial_of("notes.txt"), None);
        assert_eq!(
            StorePaths::partial_of(&format!("{}.1.part", "A".repeat(64))),
            None
        );
    }

    #[test]
    fn claim_is_exclusive_across_handles() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let sha = sha256_hex(b"x");
        let held = store.try_claim(&sha).unwrap();
        assert!(held.is_some());
        assert!(
            store.try_claim(&sha).unwrap().is_none(),
            "a second claim must wait"
        );
        drop(held);
        assert!(store.try_claim(&sha).unwrap().is_some());
    }
}
