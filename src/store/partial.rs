//! A blob being written into the store: hashed as it is appended, published only by a rename
//! after the hash matched, resumable after a crash because it is always a prefix of the content.

use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::PathBuf;

use super::{Store, StoreError, StorePaths, io_err, real_dir};
use crate::hash::ContentHasher;

/// Start disk writeback every this many bytes, so the final fsync has little left to do.
const WRITEBACK_STEP: u64 = 16 << 20;

/// A download (or import) in progress. Dropping it keeps the temp file for a later resume;
/// [`Partial::publish`] or [`Partial::discard`] end it for good.
pub struct Partial {
    path: PathBuf,
    file: File,
    hasher: ContentHasher,
    len: u64,
    size: u64,
    sha256: String,
    blob_path: PathBuf,
    writeback_from: u64,
    durable: bool,
}

impl Partial {
    pub(super) fn begin(store: &Store, sha256: &str, size: u64) -> Result<Self, StoreError> {
        let tmp = store.paths().tmp();
        let ours = store.paths().new_partial(sha256);
        // Only regular files are taken over: a symlink planted under a partial's name would
        // otherwise be opened, and truncated, wherever it points.
        let mut leftovers: Vec<(u64, PathBuf)> = fs::read_dir(&tmp)
            .map_err(io_err("listing", &tmp))?
            .filter_map(Result::ok)
            .filter(|e| {
                e.file_type().is_ok_and(|t| t.is_file())
                    && StorePaths::partial_of(&e.file_name().to_string_lossy()) == Some(sha256)
            })
            .map(|e| (e.metadata().map(|m| m.len()).unwrap_or(0), e.path()))
            .collect();
        leftovers.sort_by_key(|b| std::cmp::Reverse(b.0));
        let mut adopted = false;
        for (_, path) in leftovers {
            // Whoever renames a leftover first owns it; losers see NotFound and move on.
            match fs::rename(&path, &ours) {
                Ok(()) => {
                    adopted = true;
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_err("taking over the partial download", &path)(e)),
            }
        }
        let file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&ours)
            .map_err(io_err("creating", &ours))?;
        let mut partial = Partial {
            path: ours,
            file,
            hasher: ContentHasher::sha256_only(),
            len: 0,
            size,
            sha256: sha256.to_owned(),
            blob_path: store.blob_path(sha256),
            writeback_from: 0,
            durable: store.durable(),
        };
        if adopted && partial.rehash_existing().is_err() {
            partial.reset()?;
        }
        Ok(partial)
    }

    /// Feeds the bytes a previous run left to the hasher (the only read-back, and only when
    /// resuming). A leftover longer than the blob is garbage and is dropped.
    fn rehash_existing(&mut self) -> io::Result<()> {
        let len = self.file.metadata()?.len();
        if len > self.size {
            return Err(io::Error::other("leftover longer than the blob"));
        }
        self.file.seek(SeekFrom::Start(0))?;
        let mut buf = vec![0u8; 1 << 20];
        let mut read = 0u64;
        while read < len {
            let n = self.file.read(&mut buf)?;
            if n == 0 {
                break;
            }
            self.hasher.update(&buf[..n]);
            read += n as u64;
        }
        self.file.seek(SeekFrom::Start(read))?;
        self.file.set_len(read)?;
        self.len = read;
        self.writeback_from = read;
        Ok(())
    }

    /// Bytes held so far: where a download resumes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Appends the next bytes of the content.
    pub fn append(&mut self, data: &[u8]) -> Result<(), StoreError> {
        let new_len = self.len + data.len() as u64;
        if new_len > self.size {
            return Err(StoreError::SizeMismatch {
                expected: self.size,
                actual: new_len,
            });
        }
        self.file
            .write_all(data)
            .map_err(io_err("writing", &self.path))?;
        self.hasher.update(data);
        self.len = new_len;
        if self.durable && self.len - self.writeback_from >= WRITEBACK_STEP {
            start_writeback(
                &self.file,
                self.writeback_from,
                self.len - self.writeback_from,
            );
            self.writeback_from = self.len;
        }
        Ok(())
    }

    /// Throws away what was written (the server ignored a `Range` and sent everything again).
    pub fn reset(&mut self) -> Result<(), StoreError> {
        self.file
            .set_len(0)
            .map_err(io_err("truncating", &self.path))?;
        self.file
            .seek(SeekFrom::Start(0))
            .map_err(io_err("rewinding", &self.path))?;
        self.hasher = ContentHasher::sha256_only();
        self.len = 0;
        self.writeback_from = 0;
        Ok(())
    }

    /// Keeps the temp file for a later run to resume (what a crash does too).
    pub fn suspend(self) -> Result<(), StoreError> {
        self.file.sync_data().map_err(io_err("syncing", &self.path))
    }

    /// Deletes the temp file.
    pub fn discard(self) {
        let _ = fs::remove_file(&self.path);
    }

    /// Checks size and sha256, then makes the blob visible with one atomic rename (after
    /// fsync, read-only). On a mismatch the temp file is deleted and nothing is published.
    pub fn publish(self) -> Result<PathBuf, StoreError> {
        if self.len != self.size {
            let err = StoreError::SizeMismatch {
                expected: self.size,
                actual: self.len,
            };
            self.discard();
            return Err(err);
        }
        let Partial {
            path,
            file,
            hasher,
            sha256,
            blob_path,
            durable,
            ..
        } = self;
        let actual = hasher.finish().sha256;
        if actual != sha256 {
            let _ = fs::remove_file(&path);
            return Err(StoreError::HashMismatch {
                expected: sha256,
                actual,
            });
        }
        if durable {
            file.sync_all().map_err(io_err("syncing", &path))?;
        }
        file.set_permissions(fs::Permissions::from_mode(0o444))
            .map_err(io_err("setting permissions of", &path))?;
        drop(file);
        let shard = blob_path.parent().map(PathBuf::from).unwrap_or_default();
        real_dir(&shard)?;
        fs::rename(&path, &blob_path).map_err(io_err("publishing", &blob_path))?;
        if durable && let Ok(dir) = File::open(&shard) {
            let _ = dir.sync_all();
        }
        Ok(blob_path)
    }
}

/// Asks the kernel to start writing a range back now (Linux `sync_file_range`), so dirty pages
/// do not pile up until the final fsync. Purely a performance hint: errors are ignored.
fn start_writeback(file: &File, offset: u64, len: u64) {
    #[cfg(target_os = "linux")]
    // SAFETY: sync_file_range only reads its integer arguments; the fd is valid for the
    // lifetime of `file`.
    unsafe {
        libc::sync_file_range(
            file.as_raw_fd(),
            offset as i64,
            len as i64,
            libc::SYNC_FILE_RANGE_WRITE,
        );
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (file.as_raw_fd(), offset, len);
}
