//! Why an OCI operation failed, as a type: each case says what went wrong and carries a hint
//! saying what to do, so the CLI can print it as a `hint:` line (and `--json` can carry it).

use std::path::PathBuf;

use super::digest::{Digest, DigestError};
use super::registry::RegistryError;
use crate::http_body::BodyError;

/// An OCI layout, registry or image problem.
#[derive(Debug, thiserror::Error)]
pub enum OciError {
    /// A digest that is not `sha256:<64 hex>`.
    #[error("{what}: {source}")]
    Digest {
        /// Where the digest was found.
        what: String,
        /// Why it was refused.
        source: DigestError,
    },
    /// A document that is not valid JSON of the expected shape.
    #[error("{what} is not a valid OCI document: {detail}")]
    Invalid {
        /// Which document.
        what: String,
        /// What is wrong.
        detail: String,
    },
    /// A blob whose bytes do not hash to its digest.
    #[error("{what}: its bytes hash to {actual}, not to its digest {expected}")]
    Mismatch {
        /// Which blob (and where it came from).
        what: String,
        /// The digest it was referenced by.
        expected: Digest,
        /// What its bytes hash to.
        actual: Digest,
    },
    /// A blob whose size differs from its descriptor.
    #[error("{what}: {actual} bytes, but its descriptor says {expected}")]
    Size {
        /// Which blob.
        what: String,
        /// The descriptor's size.
        expected: u64,
        /// The blob's size.
        actual: u64,
    },
    /// A blob file that is a symlink or not a regular file.
    #[error("{}: a blob must be a regular file inside the layout, not {kind}", .path.display())]
    NotRegular {
        /// The blob path.
        path: PathBuf,
        /// What it is instead.
        kind: &'static str,
    },
    /// A file that could not be read or written.
    #[error("{}: {source}", .path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A blob streamed from a registry that could not be read to its end (the connection
    /// failed past the retry budget, or its bytes did not match its descriptor).
    #[error("{what}: {source}")]
    Read {
        /// Which blob, of which image.
        what: String,
        /// Why.
        source: std::io::Error,
    },
    /// No image with this tag in a layout.
    #[error("{}: no image tagged `{tag}` (tags: {tags})", .dir.display())]
    NoTag {
        /// The layout.
        dir: PathBuf,
        /// The tag asked for.
        tag: String,
        /// The tags it has.
        tags: String,
    },
    /// An index without the requested platform.
    #[error("{what} has no {platform} image (it has: {available})")]
    NoPlatform {
        /// Which image.
        what: String,
        /// The platform asked for.
        platform: String,
        /// The platforms it has.
        available: String,
    },
    /// Indexes nested deeper than any real image.
    #[error("{what}: indexes nested more than {depth} levels deep")]
    TooDeep {
        /// Which image.
        what: String,
        /// The limit.
        depth: usize,
    },
    /// A body larger than its limit.
    #[error(transparent)]
    Body(#[from] BodyError),
    /// A registry failure.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// An image with more layers than overlayfs can stack (checked before a push).
    #[error(
        "the image would have {total} layers ({base} from the base, {} of models), more than the {limit} a container runtime can stack",
        .total - .base
    )]
    TooManyLayers {
        /// Base and model layers together.
        total: usize,
        /// Layers of the base.
        base: usize,
        /// The most allowed.
        limit: usize,
    },
    /// A layer above the target registry's known per-layer limit (checked before a push).
    #[error(
        "{what} is {size} bytes, above the {limit}-byte layer limit of {registry} ({source_note})"
    )]
    LayerTooLarge {
        /// Which layer.
        what: String,
        /// Its size.
        size: u64,
        /// The registry.
        registry: String,
        /// Its limit in bytes.
        limit: u64,
        /// Where the limit comes from.
        source_note: String,
    },
    /// A registry answered HTTP 413 (Payload Too Large) to a blob upload.
    #[error("{registry} refused {what} ({size} bytes) as too large (HTTP 413): {detail}")]
    RefusedAsTooLarge {
        /// Which blob.
        what: String,
        /// Its size.
        size: u64,
        /// The registry.
        registry: String,
        /// The registry's answer.
        detail: String,
    },
}

impl OciError {
    /// What the user can do about it, when there is something to say.
    pub fn hint(&self) -> Option<&'static str> {
        match self {
            OciError::Digest { .. } | OciError::Mismatch { .. } | OciError::Size { .. } => Some(
                "the image is damaged or was tampered with: pull or copy it again from a source you trust",
            ),
            OciError::NotRegular { .. } => Some(
                "copy the layout with `skopeo copy` or `cp -rL` so that every blob is a real file",
            ),
            OciError::NoTag { .. } => Some("name one of the listed tags: oci:DIR:TAG"),
            OciError::NoPlatform { .. } => Some("choose one of its platforms with --platform"),
            OciError::Invalid { .. } | OciError::TooDeep { .. } => {
                Some("check that the reference points at a container image")
            }
            OciError::Body(_) => Some("check that the reference points at a container image"),
            OciError::TooManyLayers { .. } => Some(
                "put more files in each layer: raise `max_layer_size` in [bake] (or --max-layer-size) so large repos are split less, bake fewer repos into this image, or build on a slimmer base with fewer layers",
            ),
            OciError::LayerTooLarge { .. } | OciError::RefusedAsTooLarge { .. } => Some(
                "split the repo over smaller layers: set `max_layer_size` in [bake] (or --max-layer-size) below the registry's limit, e.g. 5000000000",
            ),
            OciError::Registry(r) => r.hint(),
            OciError::Read { .. } => Some(
                "run the command again; if it fails the same way, the image in the registry is damaged: push it again from a source you trust",
            ),
            OciError::Io { .. } => None,
        }
    }

    /// `Io` with its path.
    pub fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> OciError {
        let path = path.into();
        move |source| OciError::Io { path, source }
    }
}

impl crate::hint::Hint for OciError {
    fn hint(&self) -> Option<String> {
        OciError::hint(self).map(str::to_owned)
    }
}
