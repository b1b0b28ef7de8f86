//! Content digests modelbake records and checks: sha256 of every file, the git blob sha1 that
//! names regular (non-LFS) files on the Hub and in the cache, and the per-repo set digest; and
//! the reader and writer adapters that hash a stream as it passes.

use std::io::{self, Read, Write};

use sha1::Sha1;
use sha2::{Digest, Sha256};

/// Hashes a stream of bytes once, producing sha256 and (when the final length is known up
/// front) the git blob sha1, so no file is read twice.
pub struct ContentHasher {
    sha256: Sha256,
    git: Option<Sha1>,
    len: u64,
}

/// What [`ContentHasher`] computed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digests {
    /// Lowercase hex sha256 of the content.
    pub sha256: String,
    /// Lowercase hex git blob sha1, when it was requested.
    pub git_sha1: Option<String>,
    /// Number of bytes hashed.
    pub len: u64,
}

impl ContentHasher {
    /// A hasher for sha256 only.
    pub fn sha256_only() -> Self {
        ContentHasher {
            sha256: Sha256::new(),
            git: None,
            len: 0,
        }
    }

    /// A hasher that also computes the git blob sha1 of content announced as `expected_len`
    /// bytes long (git hashes a `blob <len>\0` header first). If the content turns out to have
    /// another length the git id is simply wrong, which the caller detects by comparing ids.
    pub fn with_git_blob(expected_len: u64) -> Self {
        let mut git = Sha1::new();
        git.update(format!("blob {expected_len}\0").as_bytes());
        ContentHasher {
            sha256: Sha256::new(),
            git: Some(git),
            len: 0,
        }
    }

    /// Feeds the next chunk.
    pub fn update(&mut self, data: &[u8]) {
        self.sha256.update(data);
        if let Some(git) = &mut self.git {
            git.update(data);
        }
        self.len += data.len() as u64;
    }

    /// Finishes all digests.
    pub fn finish(self) -> Digests {
        Digests {
            sha256: hex::encode(self.sha256.finalize()),
            git_sha1: self.git.map(|g| hex::encode(g.finalize())),
            len: self.len,
        }
    }
}

/// 128 bits of the sha256 of `bytes`: a key that stands for a path in large sorted tables
/// (a collision between two paths of one lock is out of reach).
pub fn key128(bytes: &[u8]) -> u128 {
    let digest = Sha256::digest(bytes);
    let mut key = [0u8; 16];
    key.copy_from_slice(&digest[..16]);
    u128::from_le_bytes(key)
}

/// sha256 of `data` as lowercase hex.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// sha256 (lowercase hex) and length of everything `reader` yields, read in 1 MiB pieces:
/// how a file on disk is re-hashed to check it.
pub fn sha256_of_reader(mut reader: impl Read) -> io::Result<(String, u64)> {
    let mut hasher = ContentHasher::sha256_only();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    let d = hasher.finish();
    Ok((d.sha256, d.len))
}

/// sha256 (lowercase hex) and length of the file at `path`, read through a buffer no larger
/// than the file (at most 1 MiB): hashing 100,000 small files on blocking threads then costs a
/// few pages each, not a 1 MiB zeroed buffer per thread that the allocator keeps resident.
pub fn sha256_of_file(path: &std::path::Path) -> io::Result<(String, u64)> {
    let mut file = std::fs::File::open(path)?;
    let len = file.metadata()?.len();
    let size = usize::try_from(len.saturating_add(1))
        .unwrap_or(usize::MAX)
        .clamp(4 << 10, 1 << 20);
    let mut hasher = ContentHasher::sha256_only();
    let mut buf = vec![0u8; size];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    let d = hasher.finish();
    Ok((d.sha256, d.len))
}

/// The git blob id of `data`: what the Hub calls `oid`/`blobId` for regular files.
pub fn git_blob_sha1(data: &[u8]) -> String {
    let mut h = ContentHasher::with_git_blob(data.len() as u64);
    h.update(data);
    h.finish().git_sha1.unwrap_or_default()
}

/// The set digest of a repo snapshot: sha256 over the `sha256sum`-style lines
/// `"<sha256>  <path>\n"` in the order given (the lock's path order), so a snapshot can be
/// checked with standard tools.
pub fn set_digest<'a>(files: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut h = Sha256::new();
    for (sha256, path) in files {
        h.update(sha256.as_bytes());
        h.update(b"  ");
        h.update(path.as_bytes());
        h.update(b"\n");
    }
    hex::encode(h.finalize())
}

/// True for lowercase hex of exactly `len` characters.
pub fn is_lower_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// A reader that hashes (sha256) and counts what is read through it, for checks that hash a
/// stream while something else consumes it (a layer blob while its tar is decoded).
pub struct HashingReader<R: Read> {
    inner: R,
    hasher: Sha256,
    count: u64,
}

impl<R: Read> HashingReader<R> {
    /// Wraps `inner`.
    pub fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }

    /// (sha256 hex of what was read, bytes read, inner reader).
    pub fn finish(self) -> (String, u64, R) {
        (hex::encode(self.hasher.finalize()), self.count, self.inner)
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

/// A writer that hashes (sha256) and counts what goes through it, hashing on a helper thread
/// so that hashing overlaps with reading, compressing and writing (the layer writer hashes
/// gigabytes through it twice: the tar and the compressed blob).
pub struct HashingWriter<W: Write> {
    inner: W,
    batch: Vec<u8>,
    count: u64,
    tx: Option<std::sync::mpsc::SyncSender<Vec<u8>>>,
    spare: std::sync::mpsc::Receiver<Vec<u8>>,
    thread: Option<std::thread::JoinHandle<String>>,
}

/// Bytes handed to the hashing thread at a time.
const HASH_BATCH: usize = 1 << 20;

impl<W: Write> HashingWriter<W> {
    /// Wraps `inner`.
    pub fn new(inner: W) -> Self {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(4);
        let (back_tx, spare) = std::sync::mpsc::channel::<Vec<u8>>();
        let thread = std::thread::spawn(move || {
            let mut hasher = Sha256::new();
            for mut batch in rx {
                hasher.update(&batch);
                batch.clear();
                let _ = back_tx.send(batch);
            }
            hex::encode(hasher.finalize())
        });
        HashingWriter {
            inner,
            batch: Vec::with_capacity(HASH_BATCH),
            count: 0,
            tx: Some(tx),
            spare,
            thread: Some(thread),
        }
    }

    fn ship(&mut self) {
        let next = self
            .spare
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(HASH_BATCH));
        let full = std::mem::replace(&mut self.batch, next);
        if let Some(tx) = &self.tx {
            let _ = tx.send(full);
        }
    }

    /// (sha256 hex, bytes, inner writer).
    pub fn finish(mut self) -> (String, u64, W) {
        if !self.batch.is_empty() {
            self.ship();
        }
        drop(self.tx.take());
        let hex = self
            .thread
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default();
        (hex, self.count, self.inner)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner.write_all(buf)?;
        self.batch.extend_from_slice(buf);
        self.count += buf.len() as u64;
        if self.batch.len() >= HASH_BATCH {
            self.ship();
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn git_blob_id_matches_git() {
        // `printf 'hello\n' | git hash-object --stdin`
        assert_eq!(
            git_blob_sha1(b"hello\n"),
            "ce013625030ba8dba906f756967f9e9ca394464a"
        );
        // The empty blob every git user has seen.
        assert_eq!(
            git_blob_sha1(b""),
            "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391"
        );
    }

    #[test]
    fn streaming_equals_one_shot() {
        let mut h = ContentHasher::with_git_blob(11);
        h.update(b"hello ");
        h.update(b"world");
        let d = h.finish();
        assert_eq!(d.sha256, sha256_hex(b"hello world"));
        assert_eq!(
            d.git_sha1.as_deref(),
            Some(git_blob_sha1(b"hello world").as_str())
        );
        assert_eq!(d.len, 11);
    }

    #[test]
    fn hashing_writer_matches_a_plain_sha256() {
        let data: Vec<u8> = (0..5_000_000u32).map(|i| (i * 7 % 256) as u8).collect();
        let mut w = HashingWriter::new(Vec::new());
        for chunk in data.chunks(777_777) {
            w.write_all(chunk).unwrap();
        }
        let (hex, n, inner) = w.finish();
        assert_eq!((hex, n), (sha256_hex(&data), data.len() as u64));
        assert_eq!(inner, data);
    }

    #[test]
    fn hashing_reader_matches_a_plain_sha256() {
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 13 % 256) as u8).collect();
        let mut r = HashingReader::new(&data[..]);
        let mut out = Vec::new();
        r.read_to_end(&mut out).unwrap();
        let (hex, n, rest) = r.finish();
        assert_eq!((hex, n), (sha256_hex(&data), data.len() as u64));
        assert_eq!(out, data);
        assert!(rest.is_empty());
    }

    #[test]
    fn reader_digest_counts_and_hashes_everything() {
        let data = vec![7u8; (1 << 20) + 3];
        assert_eq!(
            sha256_of_reader(&data[..]).unwrap(),
            (sha256_hex(&data), data.len() as u64)
        );
        let dir = tempfile::tempdir().unwrap();
        for len in [0, 1, 4095, 4096, 4097, 100_000, (1 << 20) + 3] {
            let path = dir.path().join(format!("f{len}"));
            std::fs::write(&path, &data[..len]).unwrap();
            assert_eq!(
                sha256_of_file(&path).unwrap(),
                (sha256_hex(&data[..len]), len as u64)
            );
        }
    }

    #[test]
    fn set_digest_is_sha256sum_output() {
        let a = sha256_hex(b"a");
        let expected = sha256_hex(format!("{a}  x/a.txt\n").as_bytes());
        assert_eq!(set_digest([(a.as_str(), "x/a.txt")]), expected);
    }
}
