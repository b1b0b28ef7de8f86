//! `verify --image --key`: the attestations an image must carry, checked against the lock and a
//! public key. For the image the reference names (and, for an index, each platform's manifest)
//! the referrers are listed (the referrers API, the referrers tag schema, or an OCI layout's
//! `index.json`), each Sigstore bundle among them is verified with the key, and its statement
//! read: an SBOM and a provenance statement whose subject is that digest (the provenance naming
//! the local `models.lock` by sha256), and a model signing statement per locked repo whose
//! files are exactly the locked ones. Bundles that do not verify are ignored, as cosign does:
//! anyone who can push may add referrers, so only what the key signed counts.

use serde::Serialize;

use crate::attest::{bundle, model_signing, provenance, sbom, statement};
use crate::keys::PublicKey;
use crate::lock::Lockfile;
use crate::oci::OciError;
use crate::oci::digest::Digest;
use crate::oci::model::{Descriptor, Document};
use crate::oci::referrers;
use crate::oci::source::{ImageSource, LayoutSource, RegistrySource};

/// The most a referrer's document may weigh (an SBOM of 100,000 files is about 40 MB).
pub const DOCUMENT_LIMIT: u64 = 256 << 20;

/// Where the referrers are.
pub enum Place<'a> {
    /// A registry repository.
    Registry(&'a RegistrySource),
    /// An OCI layout.
    Layout(&'a LayoutSource),
}

impl Place<'_> {
    async fn referrers(&self, subject: &Digest) -> Result<Vec<Descriptor>, OciError> {
        match self {
            Place::Registry(src) => {
                referrers::list_registry(&src.registry, &src.image.repository, subject).await
            }
            Place::Layout(src) => referrers::list_layout(&src.dir, subject).await,
        }
    }

    async fn blob(&self, desc: &Descriptor, limit: u64, what: &str) -> Result<Vec<u8>, OciError> {
        match self {
            Place::Registry(src) => src.small_blob(desc, limit, what).await,
            Place::Layout(src) => src.small_blob(desc, limit, what).await,
        }
    }
}

/// One verified attestation.
#[derive(Debug, Clone, Serialize)]
pub struct Found {
    /// The image digest it is about.
    pub subject: String,
    /// `sbom`, `provenance` or `model-signing`.
    pub kind: &'static str,
    /// The repo of a model signing statement.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repo: Option<String>,
    /// The referrer manifest.
    pub referrer: String,
}

/// One thing wrong with an image's attestations.
#[derive(Debug, Clone, Serialize)]
pub struct AttestProblem {
    /// The image digest concerned.
    pub subject: String,
    /// What is wrong.
    pub problem: String,
}

/// The verdict on an image's attestations.
#[derive(Debug, Clone, Default, Serialize)]
pub struct AttestVerdict {
    /// True when every required attestation is there, signed by the key and consistent with
    /// the lock.
    pub ok: bool,
    /// What verified.
    pub found: Vec<Found>,
    /// What is missing or wrong.
    pub problems: Vec<AttestProblem>,
    /// Referrers that were skipped, and why (unsigned, another key, unreadable).
    pub ignored: Vec<String>,
}

/// Checks the attestations of every digest in `subjects` (see the module note).
pub async fn check(
    place: &Place<'_>,
    subjects: &[Descriptor],
    lock: &Lockfile,
    lock_sha256: &str,
    key: &PublicKey,
) -> Result<AttestVerdict, OciError> {
    let mut verdict = AttestVerdict::default();
    for subject in subjects {
        check_subject(place, &subject.digest, lock, lock_sha256, key, &mut verdict).await?;
    }
    verdict.ok = verdict.problems.is_empty();
    Ok(verdict)
}

/// What one subject's referrers hold.
async fn check_subject(
    place: &Place<'_>,
    subject: &Digest,
    lock: &Lockfile,
    lock_sha256: &str,
    key: &PublicKey,
    verdict: &mut AttestVerdict,
) -> Result<(), OciError> {
    let problem = |p: String| AttestProblem {
        subject: subject.to_string(),
        problem: p,
    };
    let mut have_sbom = false;
    // A signed provenance about this subject was seen, right or wrong: only its absence is
    // reported as missing.
    let mut saw_provenance = false;
    let mut signed_repos: Vec<String> = Vec::new();
    for entry in place.referrers(subject).await? {
        if entry.extra.get("artifactType").and_then(|t| t.as_str()) != Some(bundle::MEDIA_BUNDLE) {
            continue;
        }
        let statement = match read_bundle(place, &entry, subject, key).await? {
            Ok(s) => s,
            Err(why) => {
                verdict
                    .ignored
                    .push(format!("{} ({subject}): {why}", entry.digest));
                continue;
            }
        };
        let about_subject =
            statement.subjects.len() == 1 && statement.subjects[0].sha256 == subject.hex();
        let found = |kind, repo| Found {
            subject: subject.to_string(),
            kind,
            repo,
            referrer: entry.digest.to_string(),
        };
        match statement.predicate_type.as_str() {
            sbom::PREDICATE if about_subject => {
                have_sbom = true;
                verdict.found.push(found("sbom", None));
            }
            provenance::PREDICATE if about_subject => {
                saw_provenance = true;
                match provenance::lock_sha256(&statement.predicate) {
                    Some(s) if s == lock_sha256 => {
                        verdict.found.push(found("provenance", None));
                    }
                    other => verdict.problems.push(problem(format!(
                        "the signed provenance names models.lock {}, but the local lock is sha256 {lock_sha256}: the image was baked from another lock",
                        other.unwrap_or("(none)")
                    ))),
                }
            }
            model_signing::PREDICATE => {
                let name = statement.subjects.first().map(|s| s.name.clone());
                let Some(repo) = lock
                    .repos
                    .iter()
                    .find(|r| Some(r.id.as_str()) == name.as_deref())
                else {
                    verdict.ignored.push(format!(
                        "{}: a model signature for {}, which the lock does not name",
                        entry.digest,
                        name.unwrap_or_default()
                    ));
                    continue;
                };
                let wrong = model_signing::check(&statement, repo);
                if wrong.is_empty() {
                    signed_repos.push(repo.label());
                    verdict
                        .found
                        .push(found("model-signing", Some(repo.label())));
                } else {
                    verdict.problems.push(problem(format!(
                        "the model signature of {}: {}",
                        repo.label(),
                        wrong.join("; ")
                    )));
                }
            }
            other => verdict.ignored.push(format!(
                "{}: a signed {other} statement about another subject",
                entry.digest
            )),
        }
    }
    if !have_sbom {
        verdict
            .problems
            .push(problem("no SBOM signed by the key".into()));
    }
    if !saw_provenance {
        verdict
            .problems
            .push(problem("no provenance signed by the key".into()));
    }
    for repo in &lock.repos {
        if !signed_repos.contains(&repo.label()) {
            verdict.problems.push(problem(format!(
                "no model signature of {} signed by the key",
                repo.label()
            )));
        }
    }
    Ok(())
}

/// The statement of the bundle referrer `entry` of `subject` when its manifest names that
/// subject and its bundle verifies with `key`; `Ok(Err(why))` when it does not.
async fn read_bundle(
    place: &Place<'_>,
    entry: &Descriptor,
    subject: &Digest,
    key: &PublicKey,
) -> Result<Result<statement::Parsed, String>, OciError> {
    let what = format!("the referrer {}", entry.digest);
    let bytes = match place
        .blob(entry, crate::http_body::METADATA_LIMIT, &what)
        .await
    {
        Ok(b) => b,
        Err(e) => return Ok(Err(e.to_string())),
    };
    let Ok(Document::Manifest(manifest)) = Document::parse(&bytes, Some(&entry.media_type), &what)
    else {
        return Ok(Err("not an image manifest".into()));
    };
    if manifest
        .extra
        .get("subject")
        .and_then(|s| s["digest"].as_str())
        != Some(subject.as_str())
    {
        return Ok(Err("its manifest names another subject".into()));
    }
    let [layer] = manifest.layers.as_slice() else {
        return Ok(Err("not exactly one layer".into()));
    };
    let doc = match place.blob(layer, DOCUMENT_LIMIT, &what).await {
        Ok(b) => b,
        Err(e) => return Ok(Err(e.to_string())),
    };
    let payload = match bundle::verify(&doc, key) {
        Ok(p) => p,
        Err(e) => return Ok(Err(e.to_string())),
    };
    Ok(statement::parse(&payload).ok_or_else(|| "its payload is not an in-toto statement".into()))
}
