//! The registry sink: pushes one [`Artifact`] to a repository. The guards first (layer count,
//! the registry's per-layer limit), before any request; then every blob of an image (each
//! layer the way its [`super::image::BlobSource`] says, see [`super::transfer`], and the
//! config), `jobs` at a time; then, only once every blob is confirmed, the manifest. An index
//! pushes each platform's image by digest (layers shared by platforms are found present), then
//! the index under the tag. A failure leaves the tag as it was.

use futures::{StreamExt, TryStreamExt};
use serde::Serialize;

use super::digest::Digest;
use super::error::OciError;
use super::image::{Artifact, Image, Layer, LayerRole};
use super::limits::{self, LayerSize};
use super::reference::ImageRef;
use super::registry::{Registry, RegistryError};
use super::transfer::{self, Action};
use super::{MEDIA_INDEX, MEDIA_MANIFEST};

/// What a blob of a pushed image is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BlobKind {
    /// A layer of the base image.
    BaseLayer,
    /// A layer added on top of the base (in modelbake, a model layer).
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
    /// What an added layer holds (the repo of a model layer).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repo: Option<String>,
    /// `part/parts` of an added layer.
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
    /// `registry/repo:tag@digest` (`None` before anything was pushed).
    pub pushed: Option<String>,
    /// Blobs uploaded from this machine.
    pub uploaded: usize,
    /// Blobs the registry already had.
    pub skipped: usize,
    /// Blobs mounted from another repository of the registry.
    pub mounted: usize,
    /// Blobs streamed from another registry.
    pub copied: usize,
    /// Every blob (base layers, added layers, config) in manifest order.
    pub blobs: Vec<BlobReport>,
    /// Bytes sent for all blobs together.
    pub bytes_sent: u64,
    /// Things that may go wrong at this registry (large layers where they are known to fail).
    #[serde(rename = "push_warnings")]
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

    /// Adds what another push (one platform of an index) did.
    fn absorb(&mut self, other: PushReport) {
        self.warnings.extend(other.warnings);
        for b in other.blobs {
            self.count(b);
        }
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

/// Pushes `artifact` to `target`'s repository on `registry`, named by `target`'s tag (`None`:
/// by digest only, as a referrer or a platform of an index is), `jobs` blobs at a time.
pub async fn push(
    registry: &Registry,
    target: &ImageRef,
    artifact: &Artifact,
    jobs: usize,
    observer: &dyn PushObserver,
) -> Result<PushReport, OciError> {
    let repo = target.repository.as_str();
    let (mut report, bytes, media_type) = match artifact {
        Artifact::Image(image) => {
            let report = push_blobs(registry, target, image, jobs, observer).await?;
            (report, &image.manifest, MEDIA_MANIFEST)
        }
        Artifact::Index(index) => {
            let mut report = PushReport::default();
            for image in &index.images {
                report.absorb(push_blobs(registry, target, image, jobs, observer).await?);
                let digest = image.manifest_desc.digest.as_str();
                registry
                    .put_manifest(repo, digest, &image.manifest, MEDIA_MANIFEST)
                    .await?;
            }
            (report, &index.index, MEDIA_INDEX)
        }
    };
    let digest = artifact.root().digest.as_str();
    registry
        .put_manifest(
            repo,
            target.tag.as_deref().unwrap_or(digest),
            bytes,
            media_type,
        )
        .await?;
    report.pushed = Some(match &target.tag {
        Some(tag) => format!("{}/{repo}:{tag}@{digest}", target.registry),
        None => format!("{}/{repo}@{digest}", target.registry),
    });
    Ok(report)
}

/// One blob to make present in the target repository.
struct PushBlob<'a> {
    desc: &'a super::model::Descriptor,
    kind: BlobKind,
    repo: Option<&'a str>,
    part: Option<&'a str>,
    /// The layer (its source), or `None` for the config (bytes in memory).
    layer: Option<&'a Layer>,
}

impl PushBlob<'_> {
    fn what(&self) -> String {
        describe(self.kind, self.repo, self.part, &self.desc.digest)
    }
}

/// Makes every blob of `image` (layers and config) present in the target repository, after
/// the guards; the manifest is the caller's.
async fn push_blobs(
    registry: &Registry,
    target: &ImageRef,
    image: &Image,
    jobs: usize,
    observer: &dyn PushObserver,
) -> Result<PushReport, OciError> {
    let repo = target.repository.as_str();
    let mut blobs: Vec<PushBlob<'_>> = image
        .layers
        .iter()
        .map(|l| {
            let (kind, repo, part) = match &l.role {
                LayerRole::Base => (BlobKind::BaseLayer, None, None),
                LayerRole::Added { name, part } => (
                    BlobKind::ModelLayer,
                    Some(name.as_str()),
                    Some(part.as_str()),
                ),
            };
            PushBlob {
                desc: &l.desc,
                kind,
                repo,
                part,
                layer: Some(l),
            }
        })
        .collect();
    let sizes: Vec<LayerSize> = blobs
        .iter()
        .map(|b| LayerSize {
            what: b.what(),
            size: b.desc.size,
        })
        .collect();
    let base_layers = blobs
        .iter()
        .filter(|b| b.kind == BlobKind::BaseLayer)
        .count();
    let warnings = limits::check(&target.registry, base_layers, &sizes)?;
    blobs.push(PushBlob {
        desc: &image.config_desc,
        kind: BlobKind::Config,
        repo: None,
        part: None,
        layer: None,
    });

    for w in &warnings {
        observer.warning(w);
    }
    observer.started(blobs.len(), blobs.iter().map(|b| b.desc.size).sum());
    let progress = |n: u64| observer.sent(n);
    let mut done: Vec<(usize, BlobReport)> = futures::stream::iter(blobs.iter().enumerate())
        .map(|(i, blob)| async move {
            let placed = match blob.layer {
                Some(layer) => {
                    transfer::to_registry(&layer.source, blob.desc, registry, repo, &progress).await
                }
                None => {
                    transfer::bytes_to_registry(&image.config, blob.desc, registry, repo, &progress)
                        .await
                }
            };
            let (action, bytes_sent) =
                placed.map_err(|e| explain_too_large(e, blob, registry.host()))?;
            let report = BlobReport {
                digest: blob.desc.digest.clone(),
                size: blob.desc.size,
                kind: blob.kind,
                repo: blob.repo.map(str::to_owned),
                part: blob.part.map(str::to_owned),
                action,
                bytes_sent,
            };
            observer.finished(&report);
            Ok::<_, OciError>((i, report))
        })
        .buffer_unordered(jobs.max(1))
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
    Ok(report)
}

/// A registry's HTTP 413 on a blob, said in terms of the blob and the setting that splits it.
fn explain_too_large(e: OciError, blob: &PushBlob<'_>, host: &str) -> OciError {
    match e {
        OciError::Registry(RegistryError::Http { detail, .. }) if detail.contains("HTTP 413") => {
            OciError::RefusedAsTooLarge {
                what: blob.what(),
                size: blob.desc.size,
                registry: host.to_owned(),
                detail,
            }
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::image::{BlobSource, NewLayer};
    use crate::oci::model::Descriptor;
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
        let layers: Vec<NewLayer> = (0..5u8)
            .map(|i| {
                let bytes = vec![i; 1000 + usize::from(i)];
                let path = dir.path().join(format!("layer{i}"));
                std::fs::write(&path, &bytes).unwrap();
                NewLayer {
                    layer: Layer {
                        desc: Descriptor::new(
                            super::super::MEDIA_LAYER_TAR,
                            Digest::of(&bytes),
                            bytes.len() as u64,
                        ),
                        source: BlobSource::File(path),
                        role: LayerRole::Added {
                            name: format!("model/acme/r{i}"),
                            part: "1/1".into(),
                        },
                    },
                    diff_id: Digest::of(&bytes),
                    history: serde_json::json!({}),
                }
            })
            .collect();
        let platform = super::super::Platform::parse("linux/amd64").unwrap();
        let image = Artifact::Image(Box::new(
            Image::build(None, &platform, &layers, &[], &Default::default()).unwrap(),
        ));
        for (jobs, least) in [(3, 2), (1, 1)] {
            let seen = Arc::new(Seen::default());
            let addr = fake_registry(seen.clone()).await;
            let target = ImageRef::parse(&format!("{addr}/r:t")).unwrap();
            let registry = Registry::new(&target, true).unwrap();
            let report = push(&registry, &target, &image, jobs, &()).await.unwrap();
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
        let desc = Descriptor::new(
            super::super::MEDIA_LAYER_TAR,
            Digest::of(b"layer"),
            12_000_000_000,
        );
        let blob = PushBlob {
            desc: &desc,
            kind: BlobKind::ModelLayer,
            repo: Some("model/acme/big"),
            part: Some("1/1"),
            layer: None,
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
