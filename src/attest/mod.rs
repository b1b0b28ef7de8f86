//! Attestations: what a baked image carries so that the lock's guarantee can be checked far
//! from the machine that baked it. For each image (each manifest of an index, and the index)
//! three kinds of in-toto statements, all built from the lock and the bake options alone:
//!
//! - an SBOM ([`sbom`], CycloneDX 1.6): every locked repo and file, the base image;
//! - SLSA provenance ([`provenance`]): the lock by sha256, each repo at its commit, each file,
//!   the base, the options that change bytes, the builder;
//! - one OpenSSF model signing statement per repo ([`model_signing`]): its locked files, so
//!   `model_signing verify` accepts the exported snapshot folder.
//!
//! With a key ([`crate::keys`]) each becomes a Sigstore bundle ([`bundle`]); without one they
//! are attached as plain documents. [`referrer`] turns one into the document a referrer
//! manifest holds; `bake` attaches them (`bake::attach`) and `verify --image` reads
//! them back. Everything here is deterministic: no time unless `SOURCE_DATE_EPOCH` is set, and
//! signatures are deterministic too, so rebaking the same lock attaches nothing new.

pub mod bundle;
pub mod lazy_json;
pub mod license;
pub mod model_signing;
pub mod provenance;
pub mod sbom;
pub mod statement;

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::hash::HashingWriter;
use lazy_json::Json;

use crate::keys::PrivateKey;
use crate::lock::{LockedRepo, Lockfile};
use crate::oci::digest::Digest;
use crate::oci::model::Annotations;
use crate::oci::referrers::{Referrer, ReferrerBody};
use crate::repo::RepoKind;

/// Annotation on a referrer of ours: which attestation it is (`sbom`, `provenance`,
/// `model-signing`).
pub const ANNOTATION_KIND: &str = "dev.modelbake.attestation";
/// Annotation on a bundle referrer (cosign's and actions/attest's convention).
pub const ANNOTATION_BUNDLE_CONTENT: &str = "dev.sigstore.bundle.content";
/// Annotation on a bundle referrer: the statement's predicate type.
pub const ANNOTATION_BUNDLE_PREDICATE: &str = "dev.sigstore.bundle.predicateType";
/// Annotation on an unsigned statement referrer: the statement's predicate type.
pub const ANNOTATION_PREDICATE: &str = "in-toto.io/predicate-type";
/// Annotation on a model signature referrer: its repo (the key `bake` puts on model layers).
pub const ANNOTATION_REPO: &str = "dev.modelbake.repo";

/// What every attestation of one bake is built from.
#[derive(Debug, Clone)]
pub struct Facts<'a> {
    /// The lock.
    pub lock: &'a Lockfile,
    /// The lock's file name (`models.lock`).
    pub lock_name: String,
    /// sha256 of the lock file's bytes.
    pub lock_sha256: String,
    /// Licence ids per repo label, from the model cards; a repo not listed is `NOASSERTION`.
    pub licenses: BTreeMap<String, Vec<String>>,
    /// The bake options that change bytes (provenance's external parameters).
    pub parameters: Value,
    /// Who built it.
    pub builder: Builder,
    /// `SOURCE_DATE_EPOCH`: the only time written, when set.
    pub epoch: Option<u64>,
    /// modelbake's version, as the documents name the tool (`CARGO_PKG_VERSION`).
    pub tool_version: String,
}

/// The builder a provenance statement names.
#[derive(Debug, Clone, PartialEq)]
pub struct Builder {
    /// `runDetails.builder.id`.
    pub id: String,
    /// CI facts that do not change from run to run (workflow, project), or `null`.
    pub internal: Value,
    /// The source checkout as a resolved dependency, in CI.
    pub source: Option<Value>,
}

/// The builder id when no CI system is recognised.
pub const LOCAL_BUILDER: &str = "https://modelbake.dev/builders/local";

impl Builder {
    /// The builder as the CI environment says (`GITHUB_ACTIONS`, `GITLAB_CI`), else local.
    pub fn from_env(env: &dyn Fn(&str) -> Option<String>) -> Builder {
        let var = |k: &str| env(k).filter(|v| !v.is_empty());
        if var("GITHUB_ACTIONS").as_deref() == Some("true") {
            let server = var("GITHUB_SERVER_URL").unwrap_or_else(|| "https://github.com".into());
            let hosted = var("RUNNER_ENVIRONMENT").as_deref() != Some("self-hosted");
            let source = match (var("GITHUB_REPOSITORY"), var("GITHUB_SHA")) {
                (Some(repo), Some(sha)) => Some(json!({
                    "uri": format!("git+{server}/{repo}@{}", var("GITHUB_REF").unwrap_or_default()),
                    "digest": { "gitCommit": sha },
                })),
                _ => None,
            };
            return Builder {
                id: format!(
                    "https://github.com/actions/runner/{}",
                    if hosted {
                        "github-hosted"
                    } else {
                        "self-hosted"
                    }
                ),
                internal: json!({ "github": {
                    "repository": var("GITHUB_REPOSITORY"),
                    "workflow_ref": var("GITHUB_WORKFLOW_REF"),
                }}),
                source,
            };
        }
        if var("GITLAB_CI").as_deref() == Some("true") {
            let server = var("CI_SERVER_URL").unwrap_or_else(|| "https://gitlab.com".into());
            let project = var("CI_PROJECT_PATH").unwrap_or_default();
            let source = match (var("CI_PROJECT_URL"), var("CI_COMMIT_SHA")) {
                (Some(url), Some(sha)) => Some(json!({
                    "uri": format!("git+{url}@{}", var("CI_COMMIT_REF_NAME").unwrap_or_default()),
                    "digest": { "gitCommit": sha },
                })),
                _ => None,
            };
            return Builder {
                id: format!(
                    "{server}/{project}/-/runners/{}",
                    var("CI_RUNNER_ID").unwrap_or_default()
                ),
                internal: json!({ "gitlab": {
                    "project": var("CI_PROJECT_PATH"),
                    "config_path": var("CI_CONFIG_PATH"),
                }}),
                source,
            };
        }
        Builder {
            id: LOCAL_BUILDER.into(),
            internal: Value::Null,
            source: None,
        }
    }
}

/// The image an attestation is about.
#[derive(Debug, Clone)]
pub struct ImageSubject {
    /// Its name (`registry/repository`, or the layout's tag).
    pub name: String,
    /// The manifest or index digest.
    pub digest: Digest,
    /// The base image of each platform it covers.
    pub bases: Vec<BaseImage>,
}

/// A base image by digest.
#[derive(Debug, Clone)]
pub struct BaseImage {
    /// As the bake named it.
    pub reference: String,
    /// Its manifest digest for the platform.
    pub digest: Digest,
}

/// Which attestation.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// The CycloneDX SBOM.
    Sbom,
    /// SLSA provenance.
    Provenance,
    /// The model signing statement of one repo (its label).
    ModelSigning(String),
}

impl Kind {
    /// The value of [`ANNOTATION_KIND`].
    pub fn name(&self) -> &'static str {
        match self {
            Kind::Sbom => "sbom",
            Kind::Provenance => "provenance",
            Kind::ModelSigning(_) => "model-signing",
        }
    }
}

/// One attestation of one subject. Its documents are [`Json`] values that list the lock's
/// files while they are written, so an attestation of a 100,000-file lock is small until
/// written ([`Attestation::write_attached`]).
#[derive(Clone)]
pub struct Attestation<'a> {
    /// Which one.
    pub kind: Kind,
    /// For a model signing statement: `<namespace>/<name>` of the repo (its file name).
    pub repo_path: Option<String>,
    /// Its predicate type.
    pub predicate_type: &'static str,
    /// The in-toto statement.
    pub statement: Json<'a>,
    /// The SBOM document alone (what is attached unsigned, and written as `sbom.cdx.json`).
    pub document: Option<Json<'a>>,
}

/// Every attestation of `subject`: the SBOM, the provenance, a model signing statement per
/// locked repo.
pub fn for_subject<'a>(facts: &Facts<'a>, subject: &ImageSubject) -> Vec<Attestation<'a>> {
    let sbom = sbom::document(facts, subject);
    let sbom_statement = statement::statement(
        &[statement::Subject {
            name: subject.name.clone(),
            sha256: subject.digest.hex().to_owned(),
        }],
        sbom::PREDICATE,
        sbom.clone(),
    );
    let mut out = vec![
        Attestation {
            kind: Kind::Sbom,
            repo_path: None,
            predicate_type: sbom::PREDICATE,
            statement: sbom_statement,
            document: Some(sbom),
        },
        Attestation {
            kind: Kind::Provenance,
            repo_path: None,
            predicate_type: provenance::PREDICATE,
            statement: provenance::statement(facts, subject),
            document: None,
        },
    ];
    out.extend(facts.lock.repos.iter().map(|r| Attestation {
        kind: Kind::ModelSigning(r.label()),
        repo_path: Some(repo_path(r)),
        predicate_type: model_signing::PREDICATE,
        statement: model_signing::statement(r),
        document: None,
    }));
    out
}

/// The file path a repo's model signing statement is written under: `<namespace>/<name>`
/// (datasets and spaces under `datasets/` and `spaces/`).
fn repo_path(r: &LockedRepo) -> String {
    match r.kind {
        RepoKind::Model => r.id.as_str().to_owned(),
        RepoKind::Dataset => format!("datasets/{}", r.id),
        RepoKind::Space => format!("spaces/{}", r.id),
    }
}

impl Attestation<'_> {
    /// Writes what is attached (and written as a file) to `w`: a bundle with a key; without
    /// one, the SBOM document or the statement.
    pub fn write_attached(&self, key: Option<&PrivateKey>, w: &mut dyn Write) -> io::Result<()> {
        match (key, &self.document) {
            (Some(key), _) => bundle::sign_to(&|w| self.statement.write_to(w), key, w),
            (None, Some(doc)) => doc.write_to(w),
            (None, None) => self.statement.write_to(w),
        }
    }

    /// [`Attestation::write_attached`] into memory (tests).
    #[cfg(test)]
    pub fn signed_or_plain(&self, key: Option<&PrivateKey>) -> Vec<u8> {
        let mut out = Vec::new();
        // Writing into memory cannot fail.
        let _ = self.write_attached(key, &mut out);
        out
    }

    /// The statement's bytes (tests).
    #[cfg(test)]
    pub fn statement_bytes(&self) -> Vec<u8> {
        self.statement.to_vec()
    }

    /// Writes what is attached to a new file in `dir`, hashing it on the way (see
    /// [`Attestation::write_attached`]); the file is removed when the document is dropped.
    pub fn write_document(&self, key: Option<&PrivateKey>, dir: &Path) -> io::Result<ReferrerBody> {
        std::fs::create_dir_all(dir)?;
        let file = tempfile::Builder::new()
            .prefix("attestation-")
            .tempfile_in(dir)?;
        let mut out = HashingWriter::new(io::BufWriter::new(file.as_file()));
        self.write_attached(key, &mut out)?;
        let (sha256, size, buffered) = out.finish();
        buffered.into_inner().map_err(|e| e.into_error())?;
        let path = file.into_temp_path();
        // Layout blobs are world-readable; the temp file was made 0600.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644))?;
        let digest = Digest::from_sha256_hex(&sha256)
            .map_err(|e| io::Error::other(format!("the document's digest: {e}")))?;
        Ok(ReferrerBody {
            path: std::sync::Arc::new(path),
            digest,
            size,
        })
    }

    /// The referrer for this attestation holding `document` (see
    /// [`Attestation::write_attached`]), with the artifact type and annotations readers
    /// filter on.
    pub fn referrer(&self, key: Option<&PrivateKey>, document: ReferrerBody) -> Referrer {
        let mut annotations =
            Annotations::from([(ANNOTATION_KIND.to_owned(), self.kind.name().to_owned())]);
        if let Kind::ModelSigning(repo) = &self.kind {
            annotations.insert(ANNOTATION_REPO.to_owned(), repo.clone());
        }
        let media_type = match (key, &self.document) {
            (Some(_), _) => {
                annotations.insert(ANNOTATION_BUNDLE_CONTENT.into(), "dsse-envelope".into());
                annotations.insert(
                    ANNOTATION_BUNDLE_PREDICATE.into(),
                    self.predicate_type.into(),
                );
                bundle::MEDIA_BUNDLE
            }
            (None, Some(_)) => sbom::MEDIA_TYPE,
            (None, None) => {
                annotations.insert(ANNOTATION_PREDICATE.into(), self.predicate_type.into());
                statement::PAYLOAD_TYPE
            }
        };
        Referrer {
            artifact_type: media_type.to_owned(),
            media_type: media_type.to_owned(),
            document,
            annotations,
        }
    }

    /// Its file under `--attestations DIR`: `sbom.cdx.json`, `provenance.json`,
    /// `model-signing/<namespace>/<name>.json`.
    pub fn file_name(&self) -> PathBuf {
        match (&self.kind, &self.repo_path) {
            (Kind::Sbom, _) => PathBuf::from("sbom.cdx.json"),
            (Kind::Provenance, _) => PathBuf::from("provenance.json"),
            (Kind::ModelSigning(_), Some(p)) => PathBuf::from(format!("model-signing/{p}.json")),
            (Kind::ModelSigning(r), None) => PathBuf::from(format!("model-signing/{r}.json")),
        }
    }
}

/// The purl of a locked repo: `pkg:huggingface/<namespace>/<name>@<commit>`; datasets and
/// spaces (which the purl type leaves undefined) carry their Hub URL as `repository_url`.
pub fn purl(repo: &LockedRepo) -> String {
    let base = format!("pkg:huggingface/{}@{}", repo.id, repo.commit.to_lowercase());
    match repo.kind {
        RepoKind::Model => base,
        RepoKind::Dataset => format!("{base}?repository_url=https:%2F%2Fhuggingface.co%2Fdatasets"),
        RepoKind::Space => format!("{base}?repository_url=https:%2F%2Fhuggingface.co%2Fspaces"),
    }
}

/// The repo's page on the Hub.
pub fn hub_url(repo: &LockedRepo) -> String {
    match repo.kind {
        RepoKind::Model => format!("https://huggingface.co/{}", repo.id),
        RepoKind::Dataset => format!("https://huggingface.co/datasets/{}", repo.id),
        RepoKind::Space => format!("https://huggingface.co/spaces/{}", repo.id),
    }
}

/// `epoch` seconds as an RFC 3339 UTC time (`1970-01-01T00:00:00Z`).
pub fn rfc3339(epoch: u64) -> String {
    let days = (epoch / 86_400) as i64;
    let secs = epoch % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests;
