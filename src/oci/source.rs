//! Where images are read from: an OCI image layout on disk or a registry. Both implement
//! [`ImageSource`], and everything above it is written once: the walk from a tag through
//! (Docker or OCI) indexes to one platform's manifest, the config read, and the digest and size
//! check of every document and blob taken from them. A base image's layers are never trusted:
//! each one is hashed on its way into a layout or a registry and refused on mismatch.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::Stream;
use serde_json::Value;
use sha2::{Digest as _, Sha256};

use super::digest::Digest;
use super::error::OciError;
use super::image::{Base, BlobSource, Layer, LayerRole};
use super::model::{Descriptor, Document, Index, Manifest};
use super::reference::ImageRef;
use super::registry::Registry;
use super::{ANNOTATION_REF_NAME, Platform, oci_media_type};
use crate::hash::sha256_of_reader;
use crate::http_body::METADATA_LIMIT;

/// Indexes nest one level in practice (a tag's index, then a manifest); a few more are allowed,
/// a loop is not.
pub const MAX_INDEX_DEPTH: usize = 4;

/// The most an image config may weigh: configs carry history and labels, never data.
pub const CONFIG_LIMIT: u64 = 16 << 20;

/// A place images are read from.
#[allow(async_fn_in_trait)] // used generically inside the crate, never as a trait object
pub trait ImageSource {
    /// How the image is named in messages (`oci:DIR:TAG`, `registry/repo:tag`).
    fn label(&self) -> String;

    /// The document the reference points at: its bytes (checked against its descriptor when
    /// the source knows one) and the media type declared for it.
    async fn root(&self) -> Result<(Vec<u8>, Option<String>), OciError>;

    /// A document or small blob by descriptor, at most `limit` bytes, checked against the
    /// descriptor's digest and size.
    async fn small_blob(
        &self,
        desc: &Descriptor,
        limit: u64,
        what: &str,
    ) -> Result<Vec<u8>, OciError>;
}

/// Checks `bytes` against `desc`: size first, then the sha256.
pub fn check_bytes(desc: &Descriptor, bytes: &[u8], what: &str) -> Result<(), OciError> {
    if bytes.len() as u64 != desc.size {
        return Err(OciError::Size {
            what: what.to_owned(),
            expected: desc.size,
            actual: bytes.len() as u64,
        });
    }
    let actual = Digest::of(bytes);
    if actual != desc.digest {
        return Err(OciError::Mismatch {
            what: what.to_owned(),
            expected: desc.digest.clone(),
            actual,
        });
    }
    Ok(())
}

/// Follows indexes from the source's root to the manifest for `platform`; returns it with the
/// digest of its bytes.
pub async fn resolve<S: ImageSource>(
    src: &S,
    platform: &Platform,
) -> Result<(Manifest, Digest), OciError> {
    let label = src.label();
    let (mut bytes, mut declared) = src.root().await?;
    for _ in 0..=MAX_INDEX_DEPTH {
        let what = format!("the manifest of {label}");
        match Document::parse(&bytes, declared.as_deref(), &what)? {
            Document::Manifest(manifest) => return Ok((*manifest, Digest::of(&bytes))),
            Document::Index(index) => {
                let chosen = choose_platform(&index, platform, &label)?.clone();
                bytes = src
                    .small_blob(
                        &chosen,
                        METADATA_LIMIT,
                        &format!("the {platform} manifest of {label}"),
                    )
                    .await?;
                declared = Some(chosen.media_type);
            }
        }
    }
    Err(OciError::TooDeep {
        what: label,
        depth: MAX_INDEX_DEPTH,
    })
}

/// The index entry for `platform`.
fn choose_platform<'a>(
    index: &'a Index,
    platform: &Platform,
    label: &str,
) -> Result<&'a Descriptor, OciError> {
    index
        .manifests
        .iter()
        .find(|m| m.platform.as_ref().is_some_and(|p| platform.matches(p)))
        .ok_or_else(|| OciError::NoPlatform {
            what: label.to_owned(),
            platform: platform.to_string(),
            available: index
                .manifests
                .iter()
                .filter_map(|m| m.platform.as_ref())
                .map(|p| match &p.variant {
                    Some(v) => format!("{}/{}/{v}", p.os, p.architecture),
                    None => format!("{}/{}", p.os, p.architecture),
                })
                .collect::<Vec<_>>()
                .join(", "),
        })
}

/// An image read from a source: its config and layers (media types in OCI terms).
#[derive(Debug, Clone)]
pub struct SourceImage {
    /// The digest of the platform's manifest.
    pub manifest_digest: Digest,
    /// The config JSON (unknown fields kept).
    pub config: Value,
    /// The layers, media types mapped to OCI names.
    pub layers: Vec<Descriptor>,
}

/// Reads the image for `platform` from `src`: manifest, config (checked), layer list.
pub async fn read_image<S: ImageSource>(
    src: &S,
    platform: &Platform,
) -> Result<SourceImage, OciError> {
    let (manifest, manifest_digest) = resolve(src, platform).await?;
    let label = src.label();
    let config_what = format!("the config of {label}");
    let bytes = src
        .small_blob(&manifest.config, CONFIG_LIMIT, &config_what)
        .await?;
    let config = serde_json::from_slice(&bytes).map_err(|e| OciError::Invalid {
        what: config_what,
        detail: format!("not JSON: {e}"),
    })?;
    let layers = manifest
        .layers
        .iter()
        .map(|l| {
            let mut d = l.clone();
            d.media_type = oci_media_type(&d.media_type).to_owned();
            d
        })
        .collect();
    Ok(SourceImage {
        manifest_digest,
        config,
        layers,
    })
}

/// Refuses a base whose config does not list one DiffID per layer: layers appended to it would
/// be paired with the wrong DiffIDs, and runtimes (and `verify --oci`) reject the image.
pub fn check_diff_ids(image: &SourceImage, label: &str) -> Result<(), OciError> {
    let diff_ids = image.config["rootfs"]["diff_ids"]
        .as_array()
        .map_or(0, Vec::len);
    if diff_ids == image.layers.len() {
        return Ok(());
    }
    Err(OciError::Invalid {
        what: format!("the base {label}"),
        detail: format!(
            "its config lists {diff_ids} DiffIDs for {} layer(s); an image built on it could not \
             be unpacked: rebuild the base (or pick another one) so that rootfs.diff_ids has one \
             entry per layer",
            image.layers.len()
        ),
    })
}

/// Reads the image for `platform` that `reference` names (`oci:DIR[:TAG]`, or a registry
/// reference; plain http only with `insecure`) as a [`Base`] to build on: its config, and its
/// layers with where their bytes are (never downloaded here). A base whose config does not list
/// one DiffID per layer is refused ([`check_diff_ids`]).
pub async fn read_base(
    reference: &str,
    platform: &Platform,
    insecure: bool,
) -> Result<Base, OciError> {
    let (image, source) = if let Some(rest) = reference.strip_prefix("oci:") {
        let src = LayoutSource::parse(rest);
        let image = read_image(&src, platform).await?;
        check_diff_ids(&image, &src.label())?;
        (image, BlobSource::Layout(Arc::new(src)))
    } else {
        let image_ref = ImageRef::parse(reference).map_err(|e| OciError::Invalid {
            what: format!("the base reference `{reference}`"),
            detail: e.to_string(),
        })?;
        let registry = Registry::new(&image_ref, insecure)?;
        let src = RegistrySource {
            registry,
            image: image_ref,
        };
        let image = read_image(&src, platform).await?;
        check_diff_ids(&image, &src.label())?;
        (image, BlobSource::Registry(Arc::new(src)))
    };
    Ok(Base {
        digest: Some(image.manifest_digest),
        config: image.config,
        layers: image
            .layers
            .into_iter()
            .map(|desc| Layer {
                desc,
                source: source.clone(),
                role: LayerRole::Base,
            })
            .collect(),
    })
}

/// An OCI image layout on disk, at a tag (or its only image).
#[derive(Debug, Clone)]
pub struct LayoutSource {
    /// The layout folder.
    pub dir: PathBuf,
    /// The tag (`None`: the layout's only image).
    pub tag: Option<String>,
}

/// The path of a blob in a layout; only a validated digest can name one.
pub fn blob_path(dir: &Path, digest: &Digest) -> PathBuf {
    dir.join("blobs/sha256").join(digest.hex())
}

/// Opens a layout blob without following symlinks and checks it is a regular file (its size is
/// the caller's to compare: [`open_sized`]).
pub fn open_blob(path: &Path) -> Result<File, OciError> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => OciError::NotRegular {
                path: path.to_owned(),
                kind: "a symlink",
            },
            _ => OciError::Io {
                path: path.to_owned(),
                source: e,
            },
        })?;
    let meta = file.metadata().map_err(OciError::io(path))?;
    if !meta.is_file() {
        return Err(OciError::NotRegular {
            path: path.to_owned(),
            kind: "a directory or special file",
        });
    }
    Ok(file)
}

/// A layout blob proven to match its descriptor: the open file's identity (device, inode) at
/// the time it was hashed, so a later hard link can check it links the same file.
#[derive(Debug, Clone)]
pub struct VerifiedBlob {
    /// Where it is.
    pub path: PathBuf,
    /// (device, inode) of the hashed file.
    pub identity: (u64, u64),
}

impl LayoutSource {
    /// Reads `oci:DIR[:TAG]`'s `DIR[:TAG]` part.
    pub fn parse(s: &str) -> Self {
        let (dir, tag) = match s.rsplit_once(':') {
            Some((dir, tag)) if !tag.contains('/') && !tag.is_empty() => (dir, Some(tag)),
            _ => (s, None),
        };
        LayoutSource {
            dir: PathBuf::from(dir),
            tag: tag.map(str::to_owned),
        }
    }

    /// The layout's `index.json`.
    pub fn index(&self) -> Result<Index, OciError> {
        let path = self.dir.join("index.json");
        let bytes = read_capped_file(&path, METADATA_LIMIT)?;
        match Document::parse(
            &bytes,
            Some(super::MEDIA_INDEX),
            &path.display().to_string(),
        )? {
            Document::Index(i) => Ok(i),
            Document::Manifest(_) => Err(OciError::Invalid {
                what: path.display().to_string(),
                detail: "it is a manifest, not an index".into(),
            }),
        }
    }

    /// Hashes the blob of `desc` (opened without following symlinks) and checks its size and
    /// digest.
    pub fn verified_blob(&self, desc: &Descriptor) -> Result<VerifiedBlob, OciError> {
        let what = format!("blob {} of {}", desc.digest, self.label());
        verify_file(&blob_path(&self.dir, &desc.digest), desc, &what)
    }
}

/// Opens `path` without following symlinks and checks it is a regular file of `desc`'s size;
/// its bytes are left to the caller to read (and hash against `desc`'s digest).
pub fn open_sized(path: &Path, desc: &Descriptor, what: &str) -> Result<File, OciError> {
    let file = open_blob(path)?;
    let meta = file.metadata().map_err(OciError::io(path))?;
    if meta.len() != desc.size {
        return Err(OciError::Size {
            what: what.to_owned(),
            expected: desc.size,
            actual: meta.len(),
        });
    }
    Ok(file)
}

/// Opens `path` without following symlinks, checks it is a regular file of `desc`'s size and
/// hashes it (read once, in 1 MiB pieces) against `desc`'s digest.
pub fn verify_file(path: &Path, desc: &Descriptor, what: &str) -> Result<VerifiedBlob, OciError> {
    let mut file = open_sized(path, desc, what)?;
    let meta = file.metadata().map_err(OciError::io(path))?;
    let (hex, _) = sha256_of_reader(&mut file).map_err(OciError::io(path))?;
    let actual = Digest::from_sha256_hex(&hex).map_err(|source| OciError::Digest {
        what: what.to_owned(),
        source,
    })?;
    if actual != desc.digest {
        return Err(OciError::Mismatch {
            what: what.to_owned(),
            expected: desc.digest.clone(),
            actual,
        });
    }
    Ok(VerifiedBlob {
        path: path.to_owned(),
        identity: (meta.dev(), meta.ino()),
    })
}

/// Reads a small file, refusing more than `limit` bytes and symlinks.
fn read_capped_file(path: &Path, limit: u64) -> Result<Vec<u8>, OciError> {
    let file = open_blob(path)?;
    let mut out = Vec::new();
    file.take(limit + 1)
        .read_to_end(&mut out)
        .map_err(OciError::io(path))?;
    if out.len() as u64 > limit {
        return Err(OciError::Body(crate::http_body::BodyError::TooLarge {
            url: path.display().to_string(),
            what: "a layout document",
            limit,
            declared: None,
        }));
    }
    Ok(out)
}

impl ImageSource for LayoutSource {
    fn label(&self) -> String {
        match &self.tag {
            Some(t) => format!("oci:{}:{t}", self.dir.display()),
            None => format!("oci:{}", self.dir.display()),
        }
    }

    async fn root(&self) -> Result<(Vec<u8>, Option<String>), OciError> {
        let index = self.index()?;
        let tags = || {
            index
                .manifests
                .iter()
                .filter_map(|m| m.annotation(ANNOTATION_REF_NAME))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let entry = match &self.tag {
            Some(t) => index
                .manifests
                .iter()
                .find(|m| m.annotation(ANNOTATION_REF_NAME) == Some(t.as_str())),
            // The only image: referrers listed beside it (artifacts with a type) do not count.
            None => {
                let mut images = index
                    .manifests
                    .iter()
                    .filter(|m| !m.extra.contains_key("artifactType"));
                match (images.next(), images.next()) {
                    (Some(only), None) => Some(only),
                    _ => None,
                }
            }
        }
        .ok_or_else(|| OciError::NoTag {
            dir: self.dir.clone(),
            tag: self.tag.clone().unwrap_or_else(|| "<the only one>".into()),
            tags: tags(),
        })?
        .clone();
        let bytes = self
            .small_blob(
                &entry,
                METADATA_LIMIT,
                &format!("the manifest of {}", self.label()),
            )
            .await?;
        Ok((bytes, Some(entry.media_type)))
    }

    async fn small_blob(
        &self,
        desc: &Descriptor,
        limit: u64,
        what: &str,
    ) -> Result<Vec<u8>, OciError> {
        let bytes = read_capped_file(&blob_path(&self.dir, &desc.digest), limit)?;
        check_bytes(desc, &bytes, what)?;
        Ok(bytes)
    }
}

/// An image in a registry.
pub struct RegistrySource {
    /// The client for its registry.
    pub registry: Registry,
    /// The image reference.
    pub image: ImageRef,
}

impl ImageSource for RegistrySource {
    fn label(&self) -> String {
        self.image.to_string()
    }

    async fn root(&self) -> Result<(Vec<u8>, Option<String>), OciError> {
        let reference = self.image.reference();
        let (bytes, media) = self
            .registry
            .document(&self.image.repository, reference, METADATA_LIMIT)
            .await?;
        // Pinned by digest: the answer must be exactly that document.
        if reference.contains(':') {
            let digest = Digest::parse(reference).map_err(|source| OciError::Digest {
                what: format!("the reference {}", self.image),
                source,
            })?;
            let desc = Descriptor::new(
                media.as_deref().unwrap_or(super::MEDIA_MANIFEST),
                digest,
                bytes.len() as u64,
            );
            check_bytes(&desc, &bytes, &format!("the manifest of {}", self.image))?;
        }
        Ok((bytes, media))
    }

    async fn small_blob(
        &self,
        desc: &Descriptor,
        limit: u64,
        what: &str,
    ) -> Result<Vec<u8>, OciError> {
        let is_document = desc.media_type.contains("manifest") || desc.media_type.contains("index");
        let bytes = if is_document {
            self.registry
                .document(&self.image.repository, desc.digest.as_str(), limit)
                .await?
                .0
        } else {
            self.registry
                .blob_bytes(&self.image.repository, &desc.digest, limit)
                .await?
        };
        check_bytes(desc, &bytes, what)?;
        Ok(bytes)
    }
}

/// A byte stream that hashes what passes and, at its end, fails instead of ending when the
/// bytes did not match the expected digest and size: an upload fed by it is never completed
/// with wrong bytes.
pub struct VerifyingStream<S> {
    inner: S,
    hasher: Sha256,
    seen: u64,
    expected: Descriptor,
    what: String,
    done: bool,
}

impl<S> VerifyingStream<S> {
    /// Wraps `inner`, which must yield exactly the blob of `expected`.
    pub fn new(inner: S, expected: Descriptor, what: String) -> Self {
        VerifyingStream {
            inner,
            hasher: Sha256::new(),
            seen: 0,
            expected,
            what,
            done: false,
        }
    }
}

impl<S, E> Stream for VerifyingStream<S>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    type Item = std::io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        match Pin::new(&mut self.inner).poll_next(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                self.seen += chunk.len() as u64;
                if self.seen > self.expected.size {
                    self.done = true;
                    let msg = format!(
                        "{}: more than the {} bytes its descriptor says",
                        self.what, self.expected.size
                    );
                    return Poll::Ready(Some(Err(std::io::Error::other(msg))));
                }
                self.hasher.update(&chunk);
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(Some(Err(e))) => {
                self.done = true;
                Poll::Ready(Some(Err(std::io::Error::other(format!(
                    "{}: {e}",
                    self.what
                )))))
            }
            Poll::Ready(None) => {
                self.done = true;
                let actual = hex::encode(std::mem::take(&mut self.hasher).finalize());
                if self.seen != self.expected.size || actual != self.expected.digest.hex() {
                    let msg = format!(
                        "{}: {} bytes hashing to sha256:{actual}, not its digest {} ({} bytes)",
                        self.what, self.seen, self.expected.digest, self.expected.size
                    );
                    return Poll::Ready(Some(Err(std::io::Error::other(msg))));
                }
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    fn desc_of(bytes: &[u8]) -> Descriptor {
        Descriptor::new(
            super::super::MEDIA_LAYER_TAR,
            Digest::of(bytes),
            bytes.len() as u64,
        )
    }

    #[tokio::test]
    async fn verifying_stream_passes_good_bytes_and_fails_bad_ones_at_the_end() {
        let good = desc_of(b"hello world");
        let chunks = || {
            futures::stream::iter(vec![
                Ok::<_, std::io::Error>(Bytes::from_static(b"hello ")),
                Ok(Bytes::from_static(b"world")),
            ])
        };
        let out: Vec<_> = VerifyingStream::new(chunks(), good, "t".into())
            .collect()
            .await;
        assert!(out.iter().all(Result::is_ok) && out.len() == 2);

        let other = desc_of(b"hello there");
        let out: Vec<_> = VerifyingStream::new(chunks(), other, "t".into())
            .collect()
            .await;
        let last = out.last().unwrap().as_ref().unwrap_err().to_string();
        assert!(last.contains("not its digest"), "{last}");

        let short = desc_of(b"hello");
        let out: Vec<_> = VerifyingStream::new(chunks(), short, "t".into())
            .collect()
            .await;
        assert!(out.iter().any(Result::is_err));
    }

    #[test]
    fn layout_refs_split_dir_and_tag() {
        let s = LayoutSource::parse("/tmp/x:v1");
        assert_eq!(
            (s.dir.to_str(), s.tag.as_deref()),
            (Some("/tmp/x"), Some("v1"))
        );
        let s = LayoutSource::parse("/tmp/x");
        assert_eq!((s.dir.to_str(), s.tag), (Some("/tmp/x"), None));
        let s = LayoutSource::parse("./a:b/c");
        assert_eq!(s.tag, None);
    }
}
