//! How a layer's tar is encoded: the choice that decides a layer's media type and, with the
//! tar itself, its digest. It lives in the OCI core because it is a property of any layer,
//! and `models.toml`'s `[bake] compression` names it.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{MEDIA_LAYER_GZIP, MEDIA_LAYER_TAR, MEDIA_LAYER_ZSTD};

/// Compression of image layers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// Plain tar: the fastest, and weights barely compress.
    #[default]
    None,
    /// gzip, understood by every registry and runtime.
    Gzip,
    /// zstd (multi-threaded), smaller and faster than gzip; needs a recent runtime.
    Zstd,
}

impl Compression {
    /// The OCI media type of a layer compressed this way.
    pub fn media_type(self) -> &'static str {
        match self {
            Compression::None => MEDIA_LAYER_TAR,
            Compression::Gzip => MEDIA_LAYER_GZIP,
            Compression::Zstd => MEDIA_LAYER_ZSTD,
        }
    }
}

/// A `--compression` or `[bake] compression` value that names no compression.
#[derive(Debug, thiserror::Error)]
#[error("unknown compression `{0}`: expected none, gzip or zstd")]
pub struct UnknownCompression(pub String);

impl std::str::FromStr for Compression {
    type Err = UnknownCompression;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "none" => Ok(Compression::None),
            "gzip" => Ok(Compression::Gzip),
            "zstd" => Ok(Compression::Zstd),
            other => Err(UnknownCompression(other.to_owned())),
        }
    }
}
