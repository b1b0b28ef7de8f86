//! Content digests modelbake records and checks: sha256 of every file, the git blob sha1 that
//! names regular (non-LFS) files on the Hub and in the cache, and the per-repo set digest.

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

/// sha256 of `data` as lowercase hex.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
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
    fn set_digest_is_sha256sum_output() {
        let a = sha256_hex(b"a");
        let expected = sha256_hex(format!("{a}  x/a.txt\n").as_bytes());
        assert_eq!(set_digest([(a.as_str(), "x/a.txt")]), expected);
    }
}
