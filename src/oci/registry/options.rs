//! How blobs are uploaded to one registry: the size above which they go in resumable chunks and
//! the size of each chunk, with defaults for registries known to need them (see
//! docs/registry-uploads.md for where each value comes from).

use schemars::JsonSchema;
use serde::Deserialize;

/// Blobs above this many bytes are uploaded in chunks by default.
pub const DEFAULT_CHUNKED_THRESHOLD: u64 = 64 << 20;
/// Bytes per PATCH by default: large enough that requests are few, small enough that a
/// resumed chunk costs little.
pub const DEFAULT_CHUNK_SIZE: u64 = 16 << 20;
/// GHCR refuses a PATCH body over 4 MiB (`416`, "exceeds the maximum permissible limit of
/// 4.00MiB"); stay under it.
pub const GHCR_CHUNK_SIZE: u64 = 4_000_000;
/// ECR wants every chunk but the last to be at least 5 MB; 16 MiB is well above.
pub const ECR_CHUNK_SIZE: u64 = 16 << 20;

/// `[bake.registry."HOST"]`: how blobs are uploaded to one registry. Unset values take the
/// defaults for that registry (see docs/registry-uploads.md).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RegistryUpload {
    /// Blobs larger than this many bytes go in chunks (POST, PATCH…, PUT) that resume where a
    /// dropped connection left them; smaller ones in one PUT. Default 64 MiB.
    pub chunked_threshold: Option<u64>,
    /// Bytes per PATCH of a chunked upload (at least 1; raised to the registry's
    /// `OCI-Chunk-Min-Length`). Default 16 MiB; ECR (`*.amazonaws.com`) 16 MiB, GHCR 4,000,000 bytes (its per-PATCH cap).
    pub chunk_size: Option<u64>,
}

/// Upload settings for one registry, defaults applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegistryOptions {
    /// Blobs larger than this go as POST, PATCH…, PUT; smaller ones in one PUT.
    pub chunked_threshold: u64,
    /// Bytes per PATCH (raised to the registry's `OCI-Chunk-Min-Length` when it asks).
    pub chunk_size: u64,
}

impl RegistryOptions {
    /// The settings for `host` (as written in image references): the manifest's values where
    /// it gives them, else the defaults for that registry.
    pub fn for_host(host: &str, settings: Option<&RegistryUpload>) -> Self {
        let name = host.split(':').next().unwrap_or(host);
        let default_chunk = if name == "ghcr.io" {
            GHCR_CHUNK_SIZE
        } else if name.ends_with(".amazonaws.com") {
            ECR_CHUNK_SIZE
        } else {
            DEFAULT_CHUNK_SIZE
        };
        let s = settings.copied().unwrap_or_default();
        RegistryOptions {
            chunked_threshold: s
                .chunked_threshold
                .unwrap_or(DEFAULT_CHUNKED_THRESHOLD)
                .max(1),
            chunk_size: s.chunk_size.unwrap_or(default_chunk).max(1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_per_registry_and_overrides() {
        let d = RegistryOptions::for_host("registry.example.com:5000", None);
        assert_eq!(
            (d.chunked_threshold, d.chunk_size),
            (DEFAULT_CHUNKED_THRESHOLD, DEFAULT_CHUNK_SIZE)
        );
        assert_eq!(
            RegistryOptions::for_host("ghcr.io", None).chunk_size,
            GHCR_CHUNK_SIZE
        );
        let ecr = RegistryOptions::for_host("1234.dkr.ecr.eu-west-1.amazonaws.com", None);
        assert!(ecr.chunk_size >= 5_000_000);
        let set = RegistryUpload {
            chunked_threshold: Some(10),
            chunk_size: Some(3),
        };
        let o = RegistryOptions::for_host("ghcr.io", Some(&set));
        assert_eq!((o.chunked_threshold, o.chunk_size), (10, 3));
    }
}
