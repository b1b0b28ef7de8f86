//! The store's paths, spelled in one place: every folder under the store root and the
//! names the store gives the entries it makes there. Everything that creates, reads, walks or
//! collects store folders (`Store::open`, `Partial`, `store::gc`, the layer cache, plugin
//! downloads and compile caches) asks this type for its paths.
//!
//! The names are the ones every release has used, so existing stores keep working unchanged
//! (the per-blob claim files in particular stay `locks/<sha256>.lock`):
//!
//! | path under the root | holds |
//! |---|---|
//! | `blobs/sha256/<aa>/<sha256>` | published blobs (0444) |
//! | `tmp/<sha256>.<pid>-<16 hex>.part` | partial downloads |
//! | `locks/<sha256>.lock` | per-blob claim files (`flock`) |
//! | `locks/store.lock` | shared by every process using the store, exclusive for `store gc` |
//! | `layers/` | the layer cache: `<key>.json` records, `blobs/sha256/<hex>` layers |
//! | `plugins/` | downloaded plugin files and compiled plugins |
//! | `xet/chunks/<aa>/<sha256>.json` | which Xet chunks a blob is made of (optional index) |
//! | `xet/xorbs/<aa>/<xorb hash>` | the blobs holding chunks of a xorb, a sha256 per line |
//! | `xet/paths/<aa>/<sha256 of kind/id/path>` | the blobs a repo file was, `<sha256> <commit>` per line |

use std::path::{Path, PathBuf};

use crate::hash::is_lower_hex;

/// Published blobs, in two-hex shard folders.
const BLOBS: &str = "blobs/sha256";
/// Partial downloads.
const TMP: &str = "tmp";
/// Per-blob claim files. Named `locks` on disk since the first release; kept for compatibility.
const CLAIMS: &str = "locks";
/// In `locks/`: the store-wide lock (no sha256 is called `store`, so it never meets a claim).
const IN_USE: &str = "store.lock";
/// The layer cache.
const LAYERS: &str = "layers";
/// Plugin downloads and compiled plugins.
const PLUGINS: &str = "plugins";
/// The optional Xet chunk index (`store::chunk_index`).
const XET: &str = "xet";
/// Blobs inside the layer cache, laid out like an OCI layout's.
const LAYER_BLOBS: &str = "blobs/sha256";

/// The paths of one store, derived from its root. Cheap to build from a bare root, so code
/// that only needs a folder name (the plugin folder, say) does not open the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorePaths {
    root: PathBuf,
}

impl StorePaths {
    /// The layout of the store at `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        StorePaths { root: root.into() }
    }

    /// The store root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The folders `Store::open` creates and requires to be real folders, parents first:
    /// `blobs`, `blobs/sha256`, `tmp`, `locks`.
    pub fn required_dirs(&self) -> Vec<PathBuf> {
        let blobs = self.blobs();
        let mut dirs: Vec<PathBuf> = blobs.parent().map(Path::to_path_buf).into_iter().collect();
        dirs.extend([blobs, self.tmp(), self.claims()]);
        dirs
    }

    /// `blobs/sha256/`: the shard folders of published blobs.
    pub fn blobs(&self) -> PathBuf {
        self.root.join(BLOBS)
    }

    /// `blobs/sha256/<aa>/<sha256>`: where the blob with this sha256 lives once published.
    pub fn blob(&self, sha256: &str) -> PathBuf {
        let shard = sha256.get(..2).unwrap_or("xx");
        self.blobs().join(shard).join(sha256)
    }

    /// `tmp/`: partial downloads, and layers being built or downloaded for the layer cache.
    pub fn tmp(&self) -> PathBuf {
        self.root.join(TMP)
    }

    /// A new, unique partial-download path for the blob `sha256`
    /// (`tmp/<sha256>.<pid>-<16 hex>.part`), recognised by [`StorePaths::partial_of`].
    pub fn new_partial(&self, sha256: &str) -> PathBuf {
        self.tmp().join(format!(
            "{sha256}.{}-{:016x}.part",
            std::process::id(),
            fastrand::u64(..)
        ))
    }

    /// The sha256 whose partial download a `tmp/` entry named `name` is
    /// (`<sha256>.<writer>.part`), or `None` for a name the store did not make.
    pub fn partial_of(name: &str) -> Option<&str> {
        let (sha256, rest) = name.split_once('.')?;
        (is_lower_hex(sha256, 64) && rest.ends_with(".part")).then_some(sha256)
    }

    /// `locks/store.lock`: every process with the store open holds a shared `flock` on it;
    /// `store gc` needs it alone.
    pub fn in_use(&self) -> PathBuf {
        self.claims().join(IN_USE)
    }

    /// `locks/`: the per-blob claim files.
    pub fn claims(&self) -> PathBuf {
        self.root.join(CLAIMS)
    }

    /// `locks/<sha256>.lock`: the file whose `flock` is the claim on the blob `sha256`.
    pub fn claim(&self, sha256: &str) -> PathBuf {
        self.claims().join(format!("{sha256}.lock"))
    }

    /// `layers/`: the layer cache's records.
    pub fn layers(&self) -> PathBuf {
        self.root.join(LAYERS)
    }

    /// `layers/blobs/sha256/`: the layer cache's layer blobs.
    pub fn layer_blobs(&self) -> PathBuf {
        self.layers().join(LAYER_BLOBS)
    }

    /// `plugins/`: downloaded plugin files and compiled plugins, both keyed by sha256.
    pub fn plugins(&self) -> PathBuf {
        self.root.join(PLUGINS)
    }

    /// `xet/`: the optional chunk index that lets a Xet download copy chunks from blobs the
    /// store already has (a store without it works as before).
    pub fn xet(&self) -> PathBuf {
        self.root.join(XET)
    }

    /// `xet/chunks/<aa>/<sha256>.json`: the chunk map of the blob `sha256`.
    pub fn chunk_map(&self, sha256: &str) -> PathBuf {
        let shard = sha256.get(..2).unwrap_or("xx");
        self.xet()
            .join("chunks")
            .join(shard)
            .join(format!("{sha256}.json"))
    }

    /// `xet/paths/<aa>/<key>`: the blobs the file `key` (a sha256 of `kind/id/path`) has been
    /// at the commits fetched so far.
    pub fn file_origins(&self, key: &str) -> PathBuf {
        let shard = key.get(..2).unwrap_or("xx");
        self.xet().join("paths").join(shard).join(key)
    }

    /// `xet/xorbs/<aa>/<xorb>`: the sha256s of the blobs holding chunks of the xorb `xorb`.
    pub fn xorb_holders(&self, xorb: &str) -> PathBuf {
        let shard = xorb.get(..2).unwrap_or("xx");
        self.xet().join("xorbs").join(shard).join(xorb)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_stay_compatible_with_existing_stores() {
        let l = StorePaths::new("/s");
        let sha = "ab".repeat(32);
        assert_eq!(
            l.blob(&sha),
            PathBuf::from(format!("/s/blobs/sha256/ab/{sha}"))
        );
        assert_eq!(l.claim(&sha), PathBuf::from(format!("/s/locks/{sha}.lock")));
        assert_eq!(l.tmp(), PathBuf::from("/s/tmp"));
        assert_eq!(l.layers(), PathBuf::from("/s/layers"));
        assert_eq!(l.layer_blobs(), PathBuf::from("/s/layers/blobs/sha256"));
        assert_eq!(l.plugins(), PathBuf::from("/s/plugins"));
        assert_eq!(
            l.required_dirs(),
            ["/s/blobs", "/s/blobs/sha256", "/s/tmp", "/s/locks"].map(PathBuf::from)
        );
    }

    #[test]
    fn new_partials_are_recognised() {
        let l = StorePaths::new("/s");
        let sha = "c".repeat(64);
        let p = l.new_partial(&sha);
        assert_eq!(p.parent(), Some(Path::new("/s/tmp")));
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        assert_eq!(StorePaths::partial_of(&name), Some(sha.as_str()));
    }
}
