//! Step 5 of a bake: the attestations ([`crate::attest`]) of every image written, attached
//! where the image went. Each manifest (each platform's, and the index of several) gets an
//! SBOM, a provenance statement and a model signing statement per repo, signed into Sigstore
//! bundles with `--sign-key`, attached as OCI referrers: listed by digest in the OCI layout, and
//! pushed to the registry through the referrers API or the referrers tag schema
//! ([`crate::oci::referrers`]). `--attestations DIR` also writes the root image's documents as
//! files, for tools that sign them elsewhere. The image itself never changes.

use std::collections::BTreeMap;
use std::io::{Read, Write as _};
use std::path::PathBuf;

use serde::Serialize;
use serde_json::json;

use super::{BakeError, BakeOptions};
use crate::attest::{self, Attestation, BaseImage, Builder, Facts, ImageSubject};
use crate::fs_atomic::{Mode, write_atomic_with};
use crate::keys::PrivateKey;
use crate::lock::Lockfile;
use crate::oci::OciError;
use crate::oci::digest::Digest;
use crate::oci::image::Artifact;
use crate::oci::model::Descriptor;
use crate::oci::reference::ImageRef;
use crate::oci::referrers::{self, Listed};
use crate::oci::registry::Registry;
use crate::store::Store;

/// What `bake` attests and how (part of [`BakeOptions`]).
#[derive(Debug, Clone, Default)]
pub struct AttestOptions {
    /// False with `--no-attestations`: nothing is attached or written.
    pub enabled: bool,
    /// `--sign-key`: sign every statement.
    pub sign_key: Option<PathBuf>,
    /// `--attestations DIR`: also write the root image's documents here.
    pub out_dir: Option<PathBuf>,
    /// The lock's file name, as provenance names it.
    pub lock_name: String,
    /// sha256 of the lock file's bytes.
    pub lock_sha256: String,
}

/// One attestation attached to one image.
#[derive(Debug, Clone, Serialize)]
pub struct AttachedReport {
    /// The image manifest or index it is about.
    pub subject: String,
    /// `sbom`, `provenance` or `model-signing`.
    pub kind: &'static str,
    /// The repo of a model signing statement.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repo: Option<String>,
    /// The referrer manifest's digest.
    pub digest: String,
    /// How the registry lists it (absent when nothing was pushed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub registry: Option<Listed>,
}

/// What step 5 did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct AttestReport {
    /// Whether the statements were signed.
    pub signed: bool,
    /// The signing key's hint (hex sha256 of its public PEM).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_hint: Option<String>,
    /// Every attestation attached.
    pub attached: Vec<AttachedReport>,
    /// Where `--attestations` wrote the files.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub files: Option<PathBuf>,
    /// Things that make the documents less complete than they could be.
    pub warnings: Vec<String>,
}

/// Loads the signing key before anything is built, so a bad key fails the bake early.
pub fn load_key(opts: &AttestOptions) -> Result<Option<PrivateKey>, BakeError> {
    match (&opts.sign_key, opts.enabled) {
        (Some(path), true) => Ok(Some(PrivateKey::from_file(path)?)),
        _ => Ok(None),
    }
}

/// Attaches the attestations of `artifact` (whose platforms were built on `bases`) to the
/// outputs of `opts`: the OCI layout, and the registry `pushed` holds when it was pushed.
pub async fn attach(
    lock: &Lockfile,
    store: &Store,
    opts: &BakeOptions,
    artifact: &Artifact,
    bases: &[Option<Digest>],
    key: Option<&PrivateKey>,
    pushed: Option<(&Registry, &ImageRef)>,
) -> Result<AttestReport, BakeError> {
    let mut report = AttestReport {
        signed: key.is_some(),
        key_hint: key.map(|k| k.public().hint()),
        ..Default::default()
    };
    if !opts.attest.enabled {
        return Ok(report);
    }
    let (licenses, warnings) = licenses(lock, store);
    report.warnings = warnings;
    let facts = Facts {
        lock,
        lock_name: opts.attest.lock_name.clone(),
        lock_sha256: opts.attest.lock_sha256.clone(),
        licenses,
        parameters: parameters(opts),
        builder: Builder::from_env(&crate::env::process_env),
        epoch: (opts.mtime > 0).then_some(opts.mtime),
        tool_version: env!("CARGO_PKG_VERSION").to_owned(),
    };
    let name = match &opts.push {
        Some(p) => format!("{}/{}", p.registry, p.repository),
        None => opts.tag.clone(),
    };
    let base_of = |i: usize| -> Vec<BaseImage> {
        match (&opts.settings.base, bases.get(i).cloned().flatten()) {
            (Some(reference), Some(digest)) => vec![BaseImage {
                reference: reference.clone(),
                digest,
            }],
            _ => Vec::new(),
        }
    };
    let mut subjects: Vec<(Descriptor, ImageSubject)> = artifact
        .images()
        .iter()
        .enumerate()
        .map(|(i, img)| {
            let subject = ImageSubject {
                name: name.clone(),
                digest: img.manifest_desc.digest.clone(),
                bases: base_of(i),
            };
            (img.manifest_desc.clone(), subject)
        })
        .collect();
    if let Artifact::Index(index) = artifact {
        let all = (0..index.images.len()).flat_map(base_of).collect();
        let subject = ImageSubject {
            name: name.clone(),
            digest: index.index_desc.digest.clone(),
            bases: all,
        };
        subjects.push((index.index_desc.clone(), subject));
    }

    let mut root_docs = Vec::new();
    let tmp = store.paths().tmp();
    for (desc, subject) in &subjects {
        let atts = attest::for_subject(&facts, subject);
        for att in &atts {
            // Written to a file (and removed after): a 100,000-file SBOM is tens of MB.
            let document = att.write_document(key, &tmp).map_err(OciError::io(&tmp))?;
            let referrer = att.referrer(key, document);
            let image = referrers::artifact(desc, &referrer)?;
            if let Some(dir) = &opts.oci_dir {
                referrers::attach_layout(dir, std::slice::from_ref(&image)).await?;
            }
            let listed = match pushed {
                Some((registry, target)) => Some(
                    referrers::attach(registry, &target.repository, &desc.digest, &image).await?,
                ),
                None => None,
            };
            report.attached.push(AttachedReport {
                subject: desc.digest.to_string(),
                kind: att.kind.name(),
                repo: match &att.kind {
                    attest::Kind::ModelSigning(r) => Some(r.clone()),
                    _ => None,
                },
                digest: image.manifest_desc.digest.to_string(),
                registry: listed,
            });
        }
        if desc.digest == artifact.root().digest {
            root_docs = atts;
        }
    }
    if let Some(dir) = &opts.attest.out_dir {
        write_files(dir, &root_docs, key)?;
        report.files = Some(dir.clone());
    }
    Ok(report)
}

/// Writes each attestation under `dir` (see [`Attestation::file_name`]).
fn write_files(
    dir: &std::path::Path,
    atts: &[Attestation],
    key: Option<&PrivateKey>,
) -> Result<(), OciError> {
    for att in atts {
        let path = dir.join(att.file_name());
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(OciError::io(parent))?;
        }
        write_atomic_with(&path, Mode::Fixed(0o644), &mut |f| {
            let mut w = std::io::BufWriter::new(f);
            att.write_attached(key, &mut w)?;
            w.flush()
        })
        .map_err(OciError::io(&path))?;
    }
    Ok(())
}

/// The bake options that change bytes: provenance's external parameters.
fn parameters(opts: &BakeOptions) -> serde_json::Value {
    let s = &opts.settings;
    json!({
        "layout": s.layout,
        "hf_home": s.hf_home,
        "models_dir": s.models_dir,
        "flat": s.flat,
        "owner": format!("{}:{}", s.owner.0, s.owner.1),
        "compression": s.compression,
        "base": s.base,
        "platform": s.platform,
        "max_layer_size": s.max_layer_size,
        "offline_env": s.offline_env,
        "labels": s.labels,
        "annotations": s.annotations,
        "mtime": opts.mtime,
    })
}

/// Each repo's licence ids from its model card (`README.md`) in the store, and a warning for
/// each card the store does not have (that repo's licence is then `NOASSERTION`).
fn licenses(lock: &Lockfile, store: &Store) -> (BTreeMap<String, Vec<String>>, Vec<String>) {
    let mut found = BTreeMap::new();
    let mut warnings = Vec::new();
    for repo in &lock.repos {
        let Some(card) = repo.files.iter().find(|f| f.path == "README.md") else {
            continue;
        };
        let mut bytes = Vec::new();
        let read = std::fs::File::open(store.blob_path(&card.sha256)).and_then(|f| {
            f.take(attest::license::CARD_LIMIT as u64)
                .read_to_end(&mut bytes)
        });
        match read {
            Ok(_) => {
                let text = String::from_utf8_lossy(&bytes);
                found.insert(repo.label(), attest::license::from_card(&text));
            }
            Err(_) => warnings.push(format!(
                "the SBOM says NOASSERTION for the licence of {}: its README.md is not in the store (run `modelbake fetch` for a complete SBOM)",
                repo.label()
            )),
        }
    }
    (found, warnings)
}
