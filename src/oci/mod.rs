//! The generic OCI core: images, registries and layouts, knowing nothing of locks, manifests,
//! stores or the huggingface_hub cache. The model: validated digests ([`digest`]), typed
//! descriptors, manifests and indexes ([`model`]), and the image as sinks see it ([`image`]:
//! [`image::Artifact`], an image or an index, whose layers each know where their bytes come
//! from). Where images are read from: OCI layouts and registries behind one
//! [`source::ImageSource`] ([`source`], [`registry`], with [`credentials`] found where docker
//! and podman keep them, [`reference`]). Bytes: deterministic tar ([`tar`]), layer reading
//! ([`tar_reader`]), [`compression`]. Where artifacts go: [`layout`] writes one to an OCI
//! layout, [`push`] to a registry (after the [`limits`] guards), each blob moved by
//! [`transfer`].

pub mod blob_reader;
pub mod compression;
pub mod credentials;
pub mod digest;
pub mod error;
pub mod image;
pub mod layout;
pub mod limits;
pub mod model;
pub mod push;
pub mod reference;
pub mod referrers;
pub mod registry;
pub mod source;
pub mod tar;
pub mod tar_reader;
pub mod transfer;

#[cfg(test)]
pub(crate) mod fuzz_tests;

pub use compression::Compression;
pub use error::OciError;
use model::PlatformSpec;

/// Uncompressed OCI layer.
pub const MEDIA_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
/// gzip OCI layer.
pub const MEDIA_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// zstd OCI layer.
pub const MEDIA_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
/// OCI image config.
pub const MEDIA_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// OCI image manifest.
pub const MEDIA_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index.
pub const MEDIA_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Docker schema 2 manifest (bases from Docker Hub often are).
pub const MEDIA_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list.
pub const MEDIA_DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Annotation naming a tag in an OCI layout's index.
pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";
/// Maps Docker schema 2 media types to their OCI equivalents (same bytes, other name), so a
/// base from Docker Hub can be extended in an OCI manifest.
pub fn oci_media_type(media_type: &str) -> &str {
    match media_type {
        "application/vnd.docker.image.rootfs.diff.tar.gzip" => MEDIA_LAYER_GZIP,
        "application/vnd.docker.image.rootfs.diff.tar" => MEDIA_LAYER_TAR,
        "application/vnd.docker.container.image.v1+json" => MEDIA_CONFIG,
        MEDIA_DOCKER_MANIFEST => MEDIA_MANIFEST,
        other => other,
    }
}

/// A platform or platform list that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlatformError {
    /// Not `os/arch[/variant]`.
    #[error("platform `{0}` must be os/arch[/variant], e.g. linux/amd64")]
    Malformed(String),
    /// The same platform twice in a list.
    #[error("platform `{platform}` is listed twice in `{list}`")]
    Twice {
        /// The platform.
        platform: String,
        /// The list as given.
        list: String,
    },
}

/// A platform like `linux/amd64` or `linux/arm64/v8`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    /// `linux`.
    pub os: String,
    /// `amd64`, `arm64`...
    pub architecture: String,
    /// `v8`...
    pub variant: Option<String>,
}

impl Platform {
    /// Parses `os/arch[/variant]`.
    pub fn parse(s: &str) -> Result<Self, PlatformError> {
        let parts: Vec<&str> = s.split('/').collect();
        match parts.as_slice() {
            [os, arch] if !os.is_empty() && !arch.is_empty() => Ok(Platform {
                os: (*os).into(),
                architecture: (*arch).into(),
                variant: None,
            }),
            [os, arch, variant] if !os.is_empty() && !arch.is_empty() => Ok(Platform {
                os: (*os).into(),
                architecture: (*arch).into(),
                variant: Some((*variant).into()),
            }),
            _ => Err(PlatformError::Malformed(s.to_owned())),
        }
    }

    /// Parses a comma-separated list (`linux/amd64,linux/arm64`): each platform once, sorted, so
    /// the order on the command line never changes an index's digest.
    pub fn parse_list(s: &str) -> Result<Vec<Self>, PlatformError> {
        let mut out: Vec<Platform> = s
            .split(',')
            .map(str::trim)
            .map(Platform::parse)
            .collect::<Result<_, _>>()?;
        out.sort_by_key(Platform::to_string);
        if let Some(w) = out.windows(2).find(|w| w[0] == w[1]) {
            return Err(PlatformError::Twice {
                platform: w[0].to_string(),
                list: s.to_owned(),
            });
        }
        Ok(out)
    }

    /// The `platform` object of this platform's entry in an image index.
    pub fn spec(&self) -> PlatformSpec {
        PlatformSpec {
            architecture: self.architecture.clone(),
            os: self.os.clone(),
            variant: self.variant.clone(),
            extra: Default::default(),
        }
    }

    /// True when an index entry's `platform` names this platform (any variant when we name
    /// none).
    pub fn matches(&self, p: &PlatformSpec) -> bool {
        p.os == self.os
            && p.architecture == self.architecture
            && match &self.variant {
                Some(v) => p.variant.as_deref() == Some(v.as_str()),
                None => true,
            }
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}
