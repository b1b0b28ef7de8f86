//! Putting files in place so that a reader never sees half of one: every file modelbake writes
//! for others to read (the lock, exported cache files, OCI layouts, layer records, plugin
//! downloads and compile caches) goes to a hidden temp name in the same folder, is synced, and
//! is renamed over its final name. One permission policy (0644 unless the old file had its
//! own) and one place that decides linking versus copying.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// A unique hidden name beside `path` (same folder, so the rename is atomic); scanners and
/// `store gc` recognise the `.tmp-` infix as modelbake's own leftovers.
pub fn temp_sibling(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(
        ".{name}.tmp-{}-{:08x}",
        std::process::id(),
        fastrand::u32(..)
    ))
}

/// How a new file's permissions are chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Always this mode (0644 for everything a loader reads).
    Fixed(u32),
    /// The replaced file's mode when there is one, else 0644 (the lock: a user's chmod stays).
    KeepExisting,
}

/// What [`ON_TEMP_CREATED`] holds.
#[cfg(test)]
pub(crate) type TempHook = Option<Box<dyn FnMut(&Path)>>;

#[cfg(test)]
thread_local! {
    /// Called with each temp file [`write_atomic`] creates, right after creating it, on this
    /// thread (tests look at what another user could see at that moment).
    pub(crate) static ON_TEMP_CREATED: std::cell::RefCell<TempHook> =
        const { std::cell::RefCell::new(None) };
}

/// Creates the temp file `tmp` that will replace `path`, with the final mode `mode` gives
/// (less what the umask takes) and no wider, so a secret written next is never readable by
/// others, not even for a moment; then the bits the umask took are set back.
fn create_temp(tmp: &Path, path: &Path, mode: Mode) -> io::Result<fs::File> {
    let perm = match mode {
        Mode::Fixed(m) => m,
        Mode::KeepExisting => fs::metadata(path).map_or(0o644, |m| m.permissions().mode()),
    };
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(perm & 0o7777)
        .open(tmp)?;
    #[cfg(test)]
    ON_TEMP_CREATED.with_borrow_mut(|hook| hook.as_mut().map(|h| h(tmp)));
    f.set_permissions(fs::Permissions::from_mode(perm))?;
    Ok(f)
}

/// Replaces `path` with `bytes`: temp file (created new, already with the chosen mode), fsync,
/// rename. The temp file is removed on failure.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: Mode) -> io::Result<()> {
    let tmp = temp_sibling(path);
    let written = (|| {
        let mut f = create_temp(&tmp, path, mode)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written
}

/// Like [`write_atomic`] with the content written by `fill` into the temp file (so it is never
/// held in memory whole), unless `path` already holds exactly those bytes: then the temp file
/// is removed and `path` left untouched. True when it wrote.
pub fn write_atomic_with(
    path: &Path,
    mode: Mode,
    fill: &mut dyn FnMut(&mut fs::File) -> io::Result<()>,
) -> io::Result<bool> {
    let tmp = temp_sibling(path);
    let written = (|| {
        let mut f = create_temp(&tmp, path, mode)?;
        fill(&mut f)?;
        if same_files(&tmp, path) {
            fs::remove_file(&tmp)?;
            return Ok(false);
        }
        f.sync_all()?;
        fs::rename(&tmp, path).map(|()| true)
    })();
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written
}

/// True when the regular files at `a` and `b` have the same bytes, compared 64 KiB at a time.
fn same_files(a: &Path, b: &Path) -> bool {
    use std::io::Read as _;
    let (Ok(mut fa), Ok(mut fb)) = (fs::File::open(a), fs::File::open(b)) else {
        return false;
    };
    let len = |f: &fs::File| f.metadata().ok().filter(|m| m.is_file()).map(|m| m.len());
    if len(&fa).is_none() || len(&fa) != len(&fb) {
        return false;
    }
    let (mut ba, mut bb) = (vec![0u8; 64 << 10], vec![0u8; 64 << 10]);
    loop {
        let n = match fa.read(&mut ba) {
            Ok(0) => return fb.read(&mut bb).is_ok_and(|n| n == 0),
            Ok(n) => n,
            Err(_) => return false,
        };
        if fb.read_exact(&mut bb[..n]).is_err() || ba[..n] != bb[..n] {
            return false;
        }
    }
}

/// [`write_atomic`] unless `path` already holds exactly `bytes` (read-only caches and
/// unchanged files are left alone). True when it wrote.
pub fn write_if_different(path: &Path, bytes: &[u8], mode: Mode) -> io::Result<bool> {
    if holds(path, bytes) {
        return Ok(false);
    }
    write_atomic(path, bytes, mode).map(|()| true)
}

/// True when the file at `path` holds exactly `bytes`: compared by length, then 64 KiB at a
/// time, so checking a large file (a 100,000-file lock or `trees/` listing) does not read a
/// second copy of it into memory.
pub fn holds(path: &Path, bytes: &[u8]) -> bool {
    use std::io::Read as _;
    let Ok(mut file) = fs::File::open(path) else {
        return false;
    };
    if !file
        .metadata()
        .is_ok_and(|m| m.is_file() && m.len() == bytes.len() as u64)
    {
        return false;
    }
    let mut buf = vec![0u8; 64 << 10];
    let mut rest = bytes;
    loop {
        match file.read(&mut buf) {
            Ok(0) => return rest.is_empty(),
            Ok(n) if n <= rest.len() && buf[..n] == rest[..n] => rest = &rest[n..],
            Ok(_) => return false,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
}

/// How [`link_or_copy`] placed a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placed {
    /// A hard link to the source (same filesystem; no bytes copied).
    Linked,
    /// A copy (0644, synced).
    Copied,
}

/// Places `src` at `dest` through a temp name and a rename: a hard link when `prefer_link` and
/// the filesystem allows it, otherwise a copy. An existing `dest` is replaced.
pub fn link_or_copy(src: &Path, dest: &Path, prefer_link: bool) -> io::Result<Placed> {
    let tmp = temp_sibling(dest);
    let placed = if prefer_link && fs::hard_link(src, &tmp).is_ok() {
        Placed::Linked
    } else {
        let copied = (|| {
            let mut from = fs::File::open(src)?;
            let mut to = fs::File::create(&tmp)?;
            io::copy(&mut from, &mut to)?;
            to.set_permissions(fs::Permissions::from_mode(0o644))?;
            to.sync_all()
        })();
        if let Err(e) = copied {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        Placed::Copied
    };
    fs::rename(&tmp, dest).inspect_err(|_| {
        let _ = fs::remove_file(&tmp);
    })?;
    Ok(placed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn holds_compares_whole_contents() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        fs::write(&path, &big).unwrap();
        assert!(holds(&path, &big));
        let mut other = big.clone();
        other[150_000] ^= 1;
        assert!(!holds(&path, &other));
        assert!(!holds(&path, &big[..big.len() - 1]));
        assert!(!holds(&dir.path().join("missing"), b""));
        assert!(!holds(dir.path(), b""));
    }

    #[test]
    fn writes_replace_whole_files_and_keep_a_chosen_mode() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("models.lock");
        write_atomic(&p, b"one", Mode::KeepExisting).unwrap();
        assert_eq!(fs::metadata(&p).unwrap().mode() & 0o777, 0o644);
        fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).unwrap();
        write_atomic(&p, b"two", Mode::KeepExisting).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(fs::metadata(&p).unwrap().mode() & 0o777, 0o600);
        assert!(!write_if_different(&p, b"two", Mode::Fixed(0o644)).unwrap());
        assert!(write_if_different(&p, b"three", Mode::Fixed(0o644)).unwrap());
        assert_eq!(fs::metadata(&p).unwrap().mode() & 0o777, 0o644);
        // No temp file is left behind.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_failed_write_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("missing-folder/file");
        assert!(write_atomic(&p, b"x", Mode::Fixed(0o644)).is_err());
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn link_or_copy_links_when_it_can_and_copies_when_asked() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        fs::write(&src, b"blob").unwrap();
        let a = dir.path().join("a");
        assert_eq!(link_or_copy(&src, &a, true).unwrap(), Placed::Linked);
        assert_eq!(
            fs::metadata(&a).unwrap().ino(),
            fs::metadata(&src).unwrap().ino()
        );
        let b = dir.path().join("b");
        assert_eq!(link_or_copy(&src, &b, false).unwrap(), Placed::Copied);
        assert_ne!(
            fs::metadata(&b).unwrap().ino(),
            fs::metadata(&src).unwrap().ino()
        );
        assert_eq!(fs::read(&b).unwrap(), b"blob");
    }
}
