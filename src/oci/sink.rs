//! The places one built image goes: an OCI image layout ([`write_layout`]), a registry
//! ([`push`]) and plain layer files with an index ([`write_layer_files`]); a multi-platform
//! image goes to a layout ([`write_index_layout`]) or a registry ([`push_index`]) with our
//! layers written or uploaded once. Each takes the same
//! [`Image`], our built layers and the base it was built on. How a base layer gets to a sink
//! (linked, downloaded, skipped, mounted, streamed or uploaded) is decided by
//! [`BaseSource`] alone, and every base blob is checked against its digest on the way.

use std::path::{Path, PathBuf};

use futures::{StreamExt, TryStreamExt};
use serde::Serialize;

use super::digest::Digest;
use super::error::OciError;
use super::image::{Image, IndexImage};
use super::layer::BuiltLayer;
use super::layout::{self, BlobSource};
use super::limits::{self, LayerSize};
use super::model::Descriptor;
use super::reference::ImageRef;
use super::registry::{Payload, Registry, RegistryError, UploadStats};
use super::source::{LayoutSource, RegistrySource, VerifyingStream, blob_path, verify_file};
use super::{MEDIA_INDEX, MEDIA_LAYER_GZIP, MEDIA_LAYER_ZSTD, MEDIA_MANIFEST};
use crate::fs_atomic::{Mode, link_or_copy, write_atomic};

/// Where the base image's blobs are read from.
pub enum BaseSource {
    /// An OCI layout on disk.
    Layout(LayoutSource),
    /// A registry.
    Registry(Box<RegistrySource>),
}

/// What a push did with one blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// The registry had it: nothing sent.
    Present,
    /// Mounted from the base repository on the same registry (no bytes moved).
    Mounted,
    /// Streamed from the base's registry, checked on the way.
    Streamed,
    /// Uploaded from this machine.
    Uploaded,
    /// Uploaded from this machine, continued from the registry's offset after a failure.
    Resumed,
}

impl Action {
    /// The action an upload's statistics describe.
    fn of_upload(stats: &UploadStats) -> Action {
        if stats.resumed > 0 {
            Action::Resumed
        } else {
            Action::Uploaded
        }
    }
}

/// What a blob of a pushed image is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BlobKind {
    /// A layer of the base image.
    BaseLayer,
    /// One of our model layers.
    ModelLayer,
    /// The image config.
    Config,
}

/// One blob of a push, for `--json` and progress lines.
#[derive(Debug, Clone, Serialize)]
pub struct BlobReport {
    /// The blob.
    pub digest: Digest,
    /// Its size in bytes.
    pub size: u64,
    /// What it is.
    pub kind: BlobKind,
    /// The repo a model layer holds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repo: Option<String>,
    /// `part/parts` of a model layer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub part: Option<String>,
    /// What the push did with it.
    pub action: Action,
    /// Bytes sent for it (0 when present or mounted; more than its size after a restart).
    pub bytes_sent: u64,
}

impl BlobReport {
    /// The blob as people read it: "model layer acme/bert 1/2", "base layer sha256:…", "config".
    pub fn what(&self) -> String {
        describe(
            self.kind,
            self.repo.as_deref(),
            self.part.as_deref(),
            &self.digest,
        )
    }
}

/// Words for a blob, shared by reports and errors.
fn describe(kind: BlobKind, repo: Option<&str>, part: Option<&str>, digest: &Digest) -> String {
    match kind {
        BlobKind::BaseLayer => format!("base layer {digest}"),
        BlobKind::ModelLayer => format!(
            "model layer {} {}",
            repo.unwrap_or_default(),
            part.unwrap_or_default()
        ),
        BlobKind::Config => "the image config".to_owned(),
    }
}

/// What a push did, blob by blob.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PushReport {
    /// `registry/repo:tag@digest`.
    pub pushed: String,
    /// Blobs uploaded from this machine.
    pub uploaded: usize,
    /// Blobs the registry already had.
    pub skipped: usize,
    /// Base blobs mounted from the base repository.
    pub mounted: usize,
    /// Base blobs streamed from another registry.
    pub copied: usize,
    /// Every blob (base layers, model layers, config) in manifest order.
    pub blobs: Vec<BlobReport>,
    /// Bytes sent for all blobs together.
    pub bytes_sent: u64,
    /// Things that may go wrong at this registry (large layers where they are known to fail).
    pub warnings: Vec<String>,
}

impl PushReport {
    fn count(&mut self, b: BlobReport) {
        match b.action {
            Action::Present => self.skipped += 1,
            Action::Mounted => self.mounted += 1,
            Action::Streamed => self.copied += 1,
            Action::Uploaded | Action::Resumed => self.uploaded += 1,
        }
        self.bytes_sent += b.bytes_sent;
        self.blobs.push(b);
    }
}

/// Told what a push is doing, for progress bars and status lines. Called from concurrent
/// uploads, hence `Sync`.
pub trait PushObserver: Sync {
    /// Something may go wrong at this registry (told before any upload).
    fn warning(&self, _message: &str) {}
    /// The push starts: `blobs` blobs of `bytes` bytes in all.
    fn started(&self, _blobs: usize, _bytes: u64) {}
    /// `bytes` more were sent.
    fn sent(&self, _bytes: u64) {}
    /// One blob is in the registry.
    fn finished(&self, _blob: &BlobReport) {}
}

/// Observes nothing.
impl PushObserver for () {}

impl BaseSource {
    /// Puts base layer `desc` into the layout at `dir`, checked against its digest: a layout
    /// blob is hashed and then hard-linked (the link must be the very file that was hashed),
    /// a registry blob is downloaded and hashed as it arrives.
    pub async fn put_in_layout(&self, desc: &Descriptor, dir: &Path) -> Result<(), OciError> {
        let dest = blob_path(dir, &desc.digest);
        if let BaseSource::Layout(src) = self
            && same_file(&src.dir, dir)
        {
            // Baking into the base's own layout: the blob is already in place; still checked.
            src.verified_blob(desc)?;
            return Ok(());
        }
        let existing = LayoutSource {
            dir: dir.to_owned(),
            tag: None,
        };
        if std::fs::symlink_metadata(&dest).is_ok_and(|m| m.is_file() && m.len() == desc.size)
            && existing.verified_blob(desc).is_ok()
        {
            return Ok(());
        }
        let parent = dir.join("blobs/sha256");
        std::fs::create_dir_all(&parent).map_err(OciError::io(&parent))?;
        let tmp = crate::fs_atomic::temp_sibling(&dest);
        let placed = match self {
            BaseSource::Layout(src) => link_verified(src, desc, &tmp),
            BaseSource::Registry(src) => download(src, desc, &tmp).await,
        };
        match placed {
            Ok(()) => std::fs::rename(&tmp, &dest).map_err(OciError::io(&dest)),
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                Err(e)
            }
        }
    }

    /// Makes base layer `desc` present in `repo` on `target`: present already, mounted when the
    /// base lives on the same registry, otherwise streamed (registry base) or uploaded (layout
    /// base) with its digest checked on the way. Returns what it did and the bytes it sent.
    pub async fn put_in_registry(
        &self,
        desc: &Descriptor,
        target: &Registry,
        repo: &str,
        progress: &(dyn Fn(u64) + Sync),
    ) -> Result<(Action, u64), OciError> {
        if target.has_blob(repo, &desc.digest).await? {
            return Ok((Action::Present, 0));
        }
        match self {
            BaseSource::Registry(src) => {
                copy_from_registry(src, desc, target, repo, progress).await
            }
            BaseSource::Layout(src) => {
                let blob = src.verified_blob(desc)?;
                let stats = target
                    .upload(
                        repo,
                        &desc.digest,
                        desc.size,
                        Payload::File(&blob.path),
                        progress,
                    )
                    .await?;
                Ok((Action::of_upload(&stats), stats.bytes_sent))
            }
        }
    }
}

/// Puts blob `desc` of registry image `src` into `repo` on `target`: mounted when both are on
/// the same registry, otherwise streamed registry to registry with its digest checked on the
/// way (opened again from its first byte if the upload has to go back, so every byte still
/// passes the check). Used for base layers and for layers recorded in a cache repository.
pub async fn copy_from_registry(
    src: &RegistrySource,
    desc: &Descriptor,
    target: &Registry,
    repo: &str,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<(Action, u64), OciError> {
    if src.registry.host() == target.host()
        && target
            .mount(repo, &desc.digest, &src.image.repository)
            .await?
    {
        return Ok((Action::Mounted, 0));
    }
    let open = async || {
        let resp = src
            .registry
            .blob_stream(&src.image.repository, &desc.digest)
            .await?;
        let what = format!("layer {} from {}", desc.digest, src.image);
        Ok(VerifyingStream::new(
            resp.bytes_stream(),
            desc.clone(),
            what,
        ))
    };
    let stats = target
        .upload_stream(repo, &desc.digest, desc.size, open, progress)
        .await?;
    Ok((Action::Streamed, stats.bytes_sent))
}

/// True when two paths name the same folder.
fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => (x.dev(), x.ino()) == (y.dev(), y.ino()),
        _ => false,
    }
}

/// Hashes a layout blob, hard-links it to `tmp` and checks the link is the file that was
/// hashed; across filesystems, copies it while hashing the copy.
fn link_verified(src: &LayoutSource, desc: &Descriptor, tmp: &Path) -> Result<(), OciError> {
    use std::os::unix::fs::MetadataExt;
    let blob = src.verified_blob(desc)?;
    if std::fs::hard_link(&blob.path, tmp).is_ok() {
        let linked = std::fs::symlink_metadata(tmp).map_err(OciError::io(tmp))?;
        if linked.is_file() && (linked.dev(), linked.ino()) == blob.identity {
            return Ok(());
        }
        return Err(OciError::NotRegular {
            path: blob.path,
            kind: "a file that changed while it was read",
        });
    }
    std::fs::copy(&blob.path, tmp).map_err(OciError::io(tmp))?;
    // Check the copy itself: it is what the layout will hold.
    verify_file(tmp, desc, &format!("the copy of {}", blob.path.display()))?;
    Ok(())
}

/// Downloads a registry blob into `tmp`, hashing it as it arrives.
pub async fn download(src: &RegistrySource, desc: &Descriptor, tmp: &Path) -> Result<(), OciError> {
    let resp = src
        .registry
        .blob_stream(&src.image.repository, &desc.digest)
        .await?;
    let what = format!("base layer {} from {}", desc.digest, src.image);
    let mut body = VerifyingStream::new(resp.bytes_stream(), desc.clone(), what.clone());
    let mut file = tokio::fs::File::create(tmp)
        .await
        .map_err(OciError::io(tmp))?;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(OciError::io(tmp))?;
        tokio::io::AsyncWriteExt::write_all(&mut file, &chunk)
            .await
            .map_err(OciError::io(tmp))?;
    }
    tokio::io::AsyncWriteExt::flush(&mut file)
        .await
        .map_err(OciError::io(tmp))
}

/// The base an image was built on: where its blobs come from and its layers.
pub type BaseBlobs<'a> = Option<(&'a BaseSource, &'a [Descriptor])>;

/// `--oci DIR`: the image, its base's layers (checked) and ours, under `tag`.
pub async fn write_layout(
    dir: &Path,
    tag: &str,
    image: &Image,
    layers: &[BuiltLayer],
    base: BaseBlobs<'_>,
) -> Result<(), OciError> {
    put_bases(dir, &[base]).await?;
    let (out, tag, image) = (dir.to_owned(), tag.to_owned(), image.clone());
    with_layer_blobs(layers, move |blobs| {
        layout::write(&out, &tag, &image, blobs)
    })
    .await
}

/// `--oci DIR` for several platforms: every platform's base layers (checked), our layers once,
/// each platform's config and manifest, and the index under `tag`. `bases` has one entry per
/// platform of `image`, in the same order.
pub async fn write_index_layout(
    dir: &Path,
    tag: &str,
    image: &IndexImage,
    layers: &[BuiltLayer],
    bases: &[BaseBlobs<'_>],
) -> Result<(), OciError> {
    put_bases(dir, bases).await?;
    let (out, tag, image) = (dir.to_owned(), tag.to_owned(), image.clone());
    with_layer_blobs(layers, move |blobs| {
        layout::write_index(&out, &tag, &image, blobs)
    })
    .await
}

/// Puts every base layer of `bases` into the layout at `dir` (a layer shared by several
/// platforms is checked once).
async fn put_bases(dir: &Path, bases: &[BaseBlobs<'_>]) -> Result<(), OciError> {
    let mut done = std::collections::BTreeSet::new();
    for (source, base_layers) in bases.iter().flatten() {
        for l in base_layers.iter() {
            if done.insert(l.digest.clone()) {
                source.put_in_layout(l, dir).await?;
            }
        }
    }
    Ok(())
}

/// Runs the blocking layout writer `write` with our layers as blob sources.
async fn with_layer_blobs(
    layers: &[BuiltLayer],
    write: impl FnOnce(&[(Digest, BlobSource<'_>)]) -> Result<(), OciError> + Send + 'static,
) -> Result<(), OciError> {
    let files: Vec<(Digest, PathBuf)> = layers
        .iter()
        .map(|l| (l.digest.clone(), l.path.clone()))
        .collect();
    tokio::task::spawn_blocking(move || {
        let blobs: Vec<(Digest, BlobSource<'_>)> = files
            .iter()
            .map(|(d, p)| (d.clone(), BlobSource::File(p.as_path())))
            .collect();
        write(&blobs)
    })
    .await
    .map_err(|e| OciError::Invalid {
        what: "the layout writer".into(),
        detail: e.to_string(),
    })?
}

/// Under which name [`push`] puts the manifest.
#[derive(Debug, Clone, Copy)]
pub enum PushAs<'a> {
    /// The target's tag, else this default tag.
    Tag(&'a str),
    /// Its digest only (a platform manifest of an index).
    Digest,
}

/// How a push runs.
#[derive(Clone, Copy)]
pub struct PushOptions<'a> {
    /// Blobs transferred at once (at least 1).
    pub jobs: usize,
    /// Where model layers without a local file live (a cache repository's records): they are
    /// mounted or streamed from there, digest-checked.
    pub remote_layers: Option<&'a RegistrySource>,
}

impl Default for PushOptions<'_> {
    fn default() -> Self {
        PushOptions {
            jobs: 3,
            remote_layers: None,
        }
    }
}

/// Where one blob of the push comes from.
enum PushSource<'a> {
    /// A base layer, from the base's layout or registry.
    Base(&'a BaseSource, &'a Descriptor),
    /// A file of ours (a model layer in the layer cache).
    File(&'a Path),
    /// A model layer only in another registry repository (a cache repository's record).
    Remote(&'a RegistrySource, Descriptor),
    /// Bytes in memory (the config).
    Bytes(&'a [u8]),
}

/// One blob to make present in the target repository.
struct PushBlob<'a> {
    digest: &'a Digest,
    size: u64,
    kind: BlobKind,
    repo: Option<&'a str>,
    part: Option<&'a str>,
    source: PushSource<'a>,
}

impl PushBlob<'_> {
    fn what(&self) -> String {
        describe(self.kind, self.repo, self.part, self.digest)
    }
}

/// `--push REF`: the guards first (layer count, the registry's per-layer limit), before any
/// request; then every blob (base layers present, mounted, streamed or uploaded; our layers
/// and the config present or uploaded), `opts.jobs` at a time; then, only once every blob is
/// confirmed, the manifest under the tag (or by digest, for a platform of an index). A failure
/// leaves the tag as it was.
#[allow(clippy::too_many_arguments)]
pub async fn push(
    target: &ImageRef,
    registry: &Registry,
    name: PushAs<'_>,
    image: &Image,
    layers: &[BuiltLayer],
    base: BaseBlobs<'_>,
    opts: PushOptions<'_>,
    observer: &dyn PushObserver,
) -> Result<PushReport, OciError> {
    let repo = target.repository.as_str();
    let mut blobs: Vec<PushBlob<'_>> = Vec::new();
    if let Some((source, base_layers)) = base {
        blobs.extend(base_layers.iter().map(|d| PushBlob {
            digest: &d.digest,
            size: d.size,
            kind: BlobKind::BaseLayer,
            repo: None,
            part: None,
            source: PushSource::Base(source, d),
        }));
    }
    blobs.extend(layers.iter().map(|l| PushBlob {
        digest: &l.digest,
        size: l.size,
        kind: BlobKind::ModelLayer,
        repo: Some(l.repo.as_str()),
        part: Some(l.part.as_str()),
        source: match opts.remote_layers {
            Some(src) if l.path.as_os_str().is_empty() => {
                PushSource::Remote(src, super::image::layer_descriptor(l))
            }
            _ => PushSource::File(&l.path),
        },
    }));
    let sizes: Vec<LayerSize> = blobs
        .iter()
        .map(|b| LayerSize {
            what: b.what(),
            size: b.size,
        })
        .collect();
    let warnings = limits::check(&target.registry, base.map_or(0, |(_, b)| b.len()), &sizes)?;
    blobs.push(PushBlob {
        digest: &image.config_desc.digest,
        size: image.config_desc.size,
        kind: BlobKind::Config,
        repo: None,
        part: None,
        source: PushSource::Bytes(&image.config),
    });

    for w in &warnings {
        observer.warning(w);
    }
    observer.started(blobs.len(), blobs.iter().map(|b| b.size).sum());
    let progress = |n: u64| observer.sent(n);
    let mut done: Vec<(usize, BlobReport)> = futures::stream::iter(blobs.iter().enumerate())
        .map(|(i, blob)| async move {
            let (action, bytes_sent) = put_blob(registry, repo, blob, &progress)
                .await
                .map_err(|e| explain_too_large(e, blob, registry.host()))?;
            let report = BlobReport {
                digest: blob.digest.clone(),
                size: blob.size,
                kind: blob.kind,
                repo: blob.repo.map(str::to_owned),
                part: blob.part.map(str::to_owned),
                action,
                bytes_sent,
            };
            observer.finished(&report);
            Ok::<_, OciError>((i, report))
        })
        .buffer_unordered(opts.jobs.max(1))
        .try_collect()
        .await?;
    done.sort_by_key(|(i, _)| *i);

    let mut report = PushReport {
        warnings,
        ..PushReport::default()
    };
    for (_, b) in done {
        report.count(b);
    }
    let digest = image.manifest_desc.digest.as_str();
    let tag = match name {
        PushAs::Tag(default_tag) => {
            Some(target.tag.clone().unwrap_or_else(|| default_tag.to_owned()))
        }
        PushAs::Digest => None,
    };
    registry
        .put_manifest(
            repo,
            tag.as_deref().unwrap_or(digest),
            &image.manifest,
            MEDIA_MANIFEST,
        )
        .await?;
    report.pushed = match tag {
        Some(tag) => format!("{}/{}:{tag}@{digest}", target.registry, repo),
        None => format!("{}/{}@{digest}", target.registry, repo),
    };
    Ok(report)
}

/// `--push REF` for several platforms: each platform's image with [`push`] by digest (our
/// layers are uploaded by the first and found present by the others), then the index under
/// the tag. `bases` has one entry per platform of `image`, in the same order.
#[allow(clippy::too_many_arguments)]
pub async fn push_index(
    target: &ImageRef,
    registry: &Registry,
    default_tag: &str,
    image: &IndexImage,
    layers: &[BuiltLayer],
    bases: &[BaseBlobs<'_>],
    opts: PushOptions<'_>,
    observer: &dyn PushObserver,
) -> Result<PushReport, OciError> {
    let mut report = PushReport::default();
    for ((_, img), base) in image.images.iter().zip(bases) {
        let one = push(
            target,
            registry,
            PushAs::Digest,
            img,
            layers,
            *base,
            opts,
            observer,
        )
        .await?;
        report.uploaded += one.uploaded;
        report.skipped += one.skipped;
        report.mounted += one.mounted;
        report.copied += one.copied;
        report.bytes_sent += one.bytes_sent;
        report.blobs.extend(one.blobs);
        report.warnings.extend(one.warnings);
    }
    let repo = target.repository.as_str();
    let tag = target.tag.clone().unwrap_or_else(|| default_tag.to_owned());
    registry
        .put_manifest(repo, &tag, &image.index, MEDIA_INDEX)
        .await?;
    report.pushed = format!(
        "{}/{}:{tag}@{}",
        target.registry, repo, image.index_desc.digest
    );
    Ok(report)
}

/// Makes one blob present in `repo`.
async fn put_blob(
    registry: &Registry,
    repo: &str,
    blob: &PushBlob<'_>,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<(Action, u64), OciError> {
    let payload = match &blob.source {
        PushSource::Base(source, desc) => {
            return source.put_in_registry(desc, registry, repo, progress).await;
        }
        PushSource::Remote(src, desc) => {
            if registry.has_blob(repo, blob.digest).await? {
                return Ok((Action::Present, 0));
            }
            return copy_from_registry(src, desc, registry, repo, progress).await;
        }
        PushSource::File(path) => Payload::File(path),
        PushSource::Bytes(bytes) => Payload::Bytes(bytes),
    };
    if registry.has_blob(repo, blob.digest).await? {
        return Ok((Action::Present, 0));
    }
    let stats = registry
        .upload(repo, blob.digest, blob.size, payload, progress)
        .await?;
    Ok((Action::of_upload(&stats), stats.bytes_sent))
}

/// A registry's HTTP 413 on a blob, said in terms of the blob and the setting that splits it.
fn explain_too_large(e: OciError, blob: &PushBlob<'_>, host: &str) -> OciError {
    match e {
        OciError::Registry(RegistryError::Http { detail, .. }) if detail.contains("HTTP 413") => {
            OciError::RefusedAsTooLarge {
                what: blob.what(),
                size: blob.size,
                registry: host.to_owned(),
                detail,
            }
        }
        other => other,
    }
}

/// The file name extension of a layer of this media type.
pub fn layer_extension(media_type: &str) -> &'static str {
    match media_type {
        MEDIA_LAYER_GZIP => "tar.gz",
        MEDIA_LAYER_ZSTD => "tar.zst",
        _ => "tar",
    }
}

/// One entry of `layers.json`.
#[derive(Debug, Serialize)]
struct LayerFileEntry<'a> {
    file: String,
    digest: &'a Digest,
    diff_id: &'a Digest,
    size: u64,
    media_type: &'a str,
    repo: &'a str,
    commit: &'a str,
    part: &'a str,
}

/// `--layers DIR`: the layer files (hard-linked from the layer cache) plus `layers.json`.
pub fn write_layer_files(dir: &Path, layers: &[BuiltLayer]) -> Result<(), OciError> {
    std::fs::create_dir_all(dir).map_err(OciError::io(dir))?;
    let mut index = Vec::new();
    for (i, l) in layers.iter().enumerate() {
        let (part, parts) = l.part.split_once('/').unwrap_or(("1", "1"));
        let suffix = if parts == "1" {
            String::new()
        } else {
            format!("-part{part}of{parts}")
        };
        let name = format!(
            "{:02}-{}{suffix}.{}",
            i + 1,
            l.repo.replace('/', "--"),
            layer_extension(&l.media_type)
        );
        let dest = dir.join(&name);
        link_or_copy(&l.path, &dest, true).map_err(OciError::io(&dest))?;
        index.push(LayerFileEntry {
            file: name,
            digest: &l.digest,
            diff_id: &l.diff_id,
            size: l.size,
            media_type: &l.media_type,
            repo: &l.repo,
            commit: &l.commit,
            part: &l.part,
        });
    }
    let path = dir.join("layers.json");
    let json = serde_json::to_value(serde_json::json!({ "layers": index }))
        .and_then(|v| serde_json::to_vec_pretty(&v))
        .map_err(|e| OciError::Invalid {
            what: path.display().to_string(),
            detail: e.to_string(),
        })?;
    write_atomic(&path, &json, Mode::Fixed(0o644)).map_err(OciError::io(&path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    use http_body_util::{BodyExt, Full};
    use hyper::{Method, Request, Response, StatusCode};

    /// What the fake registry saw: blob PUTs in flight now and at most, and the order of
    /// completed blob PUTs and manifest PUTs.
    #[derive(Default)]
    struct Seen {
        in_flight: AtomicUsize,
        most: AtomicUsize,
        events: Mutex<Vec<String>>,
    }

    /// A registry that has no blob, holds every blob PUT open for a moment (so that uploads
    /// that run together overlap) and records the order of events.
    async fn fake_registry(seen: Arc<Seen>) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let seen = seen.clone();
                tokio::spawn(async move {
                    let service =
                        hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                            let seen = seen.clone();
                            async move {
                                let path = req.uri().path().to_owned();
                                let status = match (req.method().clone(), path.as_str()) {
                                    (Method::HEAD, _) => StatusCode::NOT_FOUND,
                                    (Method::POST, _) => {
                                        let n = seen.events.lock().unwrap().len();
                                        return Ok::<_, std::convert::Infallible>(
                                            Response::builder()
                                                .status(StatusCode::ACCEPTED)
                                                .header(
                                                    "location",
                                                    format!("/upload/{n}-{}", fastrand::u64(..)),
                                                )
                                                .body(Full::new(bytes::Bytes::new()))
                                                .unwrap(),
                                        );
                                    }
                                    (Method::PUT, p) if p.starts_with("/upload/") => {
                                        let now = seen.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                                        seen.most.fetch_max(now, Ordering::SeqCst);
                                        let body = req
                                            .into_body()
                                            .collect()
                                            .await
                                            .map(|b| b.to_bytes().len())
                                            .unwrap_or(0);
                                        tokio::time::sleep(std::time::Duration::from_millis(150))
                                            .await;
                                        seen.in_flight.fetch_sub(1, Ordering::SeqCst);
                                        seen.events.lock().unwrap().push(format!("blob {body}"));
                                        StatusCode::CREATED
                                    }
                                    (Method::PUT, p) if p.contains("/manifests/") => {
                                        let busy = seen.in_flight.load(Ordering::SeqCst);
                                        seen.events
                                            .lock()
                                            .unwrap()
                                            .push(format!("manifest with {busy} in flight"));
                                        StatusCode::CREATED
                                    }
                                    _ => StatusCode::BAD_REQUEST,
                                };
                                Ok(Response::builder()
                                    .status(status)
                                    .body(Full::new(bytes::Bytes::new()))
                                    .unwrap())
                            }
                        });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        addr
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn blobs_go_at_most_jobs_at_a_time_and_the_manifest_last() {
        let dir = tempfile::tempdir().unwrap();
        let layers: Vec<BuiltLayer> = (0..5u8)
            .map(|i| {
                let bytes = vec![i; 1000 + usize::from(i)];
                let path = dir.path().join(format!("layer{i}"));
                std::fs::write(&path, &bytes).unwrap();
                BuiltLayer {
                    digest: Digest::of(&bytes),
                    diff_id: Digest::of(&bytes),
                    size: bytes.len() as u64,
                    media_type: super::super::MEDIA_LAYER_TAR.into(),
                    repo: format!("model/acme/r{i}"),
                    commit: "0".repeat(40),
                    part: "1/1".into(),
                    path,
                    reused: false,
                }
            })
            .collect();
        let platform = super::super::Platform::parse("linux/amd64").unwrap();
        let image =
            super::super::image::build(None, &platform, &layers, &[], &Default::default()).unwrap();
        for (jobs, least) in [(3, 2), (1, 1)] {
            let seen = Arc::new(Seen::default());
            let addr = fake_registry(seen.clone()).await;
            let target = ImageRef::parse(&format!("{addr}/r:t")).unwrap();
            let registry = Registry::new(&target, true).unwrap();
            let report = push(
                &target,
                &registry,
                PushAs::Tag("t"),
                &image,
                &layers,
                None,
                PushOptions {
                    jobs,
                    remote_layers: None,
                },
                &(),
            )
            .await
            .unwrap();
            assert_eq!(report.uploaded, 6, "five layers and the config");
            assert!(
                report
                    .blobs
                    .iter()
                    .all(|b| b.action == Action::Uploaded && b.bytes_sent == b.size)
            );
            let events = seen.events.lock().unwrap().clone();
            assert_eq!(events.len(), 7, "{events:?}");
            assert_eq!(events[6], "manifest with 0 in flight", "{events:?}");
            let at_once = seen.most.load(Ordering::SeqCst);
            assert!(
                at_once <= jobs,
                "{at_once} uploads at once with {jobs} jobs"
            );
            // Six blobs each held open for a while: with room for three, they overlapped.
            assert!(
                at_once >= least,
                "{at_once} uploads at once with {jobs} jobs"
            );
        }
    }

    #[test]
    fn a_413_names_the_layer_its_size_and_the_setting() {
        let digest = Digest::of(b"layer");
        let path = Path::new("/nowhere");
        let blob = PushBlob {
            digest: &digest,
            size: 12_000_000_000,
            kind: BlobKind::ModelLayer,
            repo: Some("model/acme/big"),
            part: Some("1/1"),
            source: PushSource::File(path),
        };
        let e = OciError::Registry(RegistryError::Http {
            url: "https://ghcr.io/v2/acme/app/blobs/uploads/x".into(),
            detail: "HTTP 413 Payload Too Large: blob too large".into(),
        });
        let e = explain_too_large(e, &blob, "ghcr.io");
        let msg = e.to_string();
        assert!(
            msg.contains("model layer model/acme/big 1/1")
                && msg.contains("12000000000 bytes")
                && msg.contains("ghcr.io"),
            "{msg}"
        );
        assert!(e.hint().unwrap().contains("max_layer_size"));
        // Other failures pass through unchanged.
        let other = OciError::Registry(RegistryError::Http {
            url: "u".into(),
            detail: "HTTP 500 Internal Server Error: x".into(),
        });
        assert!(matches!(
            explain_too_large(other, &blob, "ghcr.io"),
            OciError::Registry(_)
        ));
    }
}
