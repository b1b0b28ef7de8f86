//! The cache record format: one small OCI image manifest per layer, tagged by the layer's
//! cache key, whose single layer descriptor is the model layer. Building a record and reading
//! one back are kept together so the two cannot drift; reading checks every field that ties
//! the record to the layer this lock and these bake options need.

use std::collections::BTreeMap;

use sha2::{Digest as _, Sha256};

use super::signing::{KeyError, RecordSigner, RecordTrust};
use crate::bake::assemble::layer_descriptor;
use crate::bake::layer_cache::BuiltLayer;
use crate::bake::plan::{EntryKind, LayerPlan};
use crate::bake::{ANNOTATION_COMMIT, ANNOTATION_PART, ANNOTATION_REPO};
use crate::oci::MEDIA_MANIFEST;
use crate::oci::digest::Digest;
use crate::oci::error::OciError;
use crate::oci::model::{Document, canonical_json};

/// The `artifactType` of a record manifest; the `v1` is the record format version.
pub const ARTIFACT_TYPE: &str = "application/vnd.modelbake.layer-cache.v1+json";
pub use crate::oci::referrers::{EMPTY_CONFIG, empty_config};
/// Annotation (on the record and its layer): the layer cache key.
pub const ANNOTATION_KEY: &str = "dev.modelbake.layer-key";
/// Annotation on the layer: its DiffID (sha256 of the uncompressed tar), which the image config
/// needs and which cannot be read from the registry without downloading the layer.
pub const ANNOTATION_DIFF_ID: &str = "dev.modelbake.diff-id";
/// Annotation on the layer: the digest of its file list (see [`files_digest`]).
pub const ANNOTATION_FILES: &str = "dev.modelbake.files";
/// Tags of records start with this; the key follows (83 characters in all, under the 128 a
/// tag may have).
pub const TAG_PREFIX: &str = "modelbake-layer-v1-";
/// The most bytes a record may weigh when read back.
pub const RECORD_LIMIT: u64 = 256 << 10;

/// Annotation on the record (with `--cache-sign-key`): the base64 ECDSA P-256 signature of the
/// record's canonical bytes without this annotation.
pub const ANNOTATION_SIGNATURE: &str = "dev.modelbake.signature";

/// The tag naming the record of the layer with cache key `key`.
pub fn tag(key: &str) -> String {
    format!("{TAG_PREFIX}{key}")
}

/// `sha256:` of the layer's file list, one `sha256 size path` line per store file in path
/// order: a reader can tell which files a record claims without unpacking it.
pub fn files_digest(plan: &LayerPlan) -> String {
    let mut h = Sha256::new();
    for e in plan.entries() {
        if let EntryKind::Blob { sha256, size } = &e.kind {
            h.update(format!("{sha256} {size} {}\n", e.path).as_bytes());
        }
    }
    format!("sha256:{}", hex::encode(h.finalize()))
}

/// The record manifest for `layer`, built from `plan` under cache key `key`; with `signer`,
/// signed (see [`signed_bytes`]). Without one the bytes are what every release wrote.
pub fn build(
    layer: &BuiltLayer,
    plan: &LayerPlan,
    key: &str,
    signer: Option<&RecordSigner>,
) -> Result<Vec<u8>, RecordBuildError> {
    let mut desc = layer_descriptor(layer);
    let annotations = desc.annotations.get_or_insert_with(BTreeMap::new);
    annotations.insert(ANNOTATION_KEY.into(), key.into());
    annotations.insert(ANNOTATION_DIFF_ID.into(), layer.diff_id.to_string());
    annotations.insert(ANNOTATION_FILES.into(), files_digest(plan));
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": MEDIA_MANIFEST,
        "artifactType": ARTIFACT_TYPE,
        "config": empty_config(),
        "layers": [desc],
        "annotations": { ANNOTATION_KEY: key },
    });
    let unsigned = canonical_json(&manifest)?;
    let Some(signer) = signer else {
        return Ok(unsigned);
    };
    let mut manifest = manifest;
    manifest["annotations"][ANNOTATION_SIGNATURE] = serde_json::json!(signer.sign(&unsigned));
    Ok(canonical_json(&manifest)?)
}

/// Why a record could not be written.
#[derive(Debug, thiserror::Error)]
pub enum RecordBuildError {
    /// Serialising it.
    #[error(transparent)]
    Oci(#[from] OciError),
    /// Signing it.
    #[error(transparent)]
    Key(#[from] KeyError),
}

/// What a record's signature covers: its canonical bytes without the signature annotation
/// (exactly the bytes of the unsigned record), and the signature, if any.
pub fn signed_bytes(bytes: &[u8]) -> Option<(Vec<u8>, String)> {
    let mut value: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    let sig = value
        .get_mut("annotations")?
        .as_object_mut()?
        .remove(ANNOTATION_SIGNATURE)?;
    let sig = sig.as_str()?.to_owned();
    Some((canonical_json(&value).ok()?, sig))
}

/// Why a record is not used for the layer a bake needs (each one a warning, never a failure).
#[derive(Debug, thiserror::Error)]
pub enum RecordMismatch {
    /// Not a readable OCI document.
    #[error(transparent)]
    Unreadable(#[from] OciError),
    /// An index where a record manifest belongs.
    #[error("it is an index, not a record manifest")]
    NotAManifest,
    /// Another record format version, or no record at all.
    #[error(
        "its artifactType is {0:?}, not {ARTIFACT_TYPE} (another format version or not a record)"
    )]
    ArtifactType(Option<String>),
    /// Not exactly one layer.
    #[error("it lists {0} layers instead of one")]
    LayerCount(usize),
    /// A layer annotation that ties it to another repo, commit, part, key or file list.
    #[error("its layer says {name} = {got}, the lock needs {want}")]
    Annotation {
        /// The annotation.
        name: &'static str,
        /// Its value in the record.
        got: String,
        /// The value this bake needs.
        want: String,
    },
    /// Another compression than this bake's.
    #[error("its layer is {found}, this bake makes {wanted}")]
    MediaType {
        /// The record's layer media type.
        found: String,
        /// This bake's.
        wanted: String,
    },
    /// No DiffID annotation.
    #[error("its layer has no DiffID annotation")]
    NoDiffId,
    /// A DiffID that is no digest.
    #[error("its layer's DiffID is not a sha256 digest")]
    BadDiffId,
    /// `--cache-trust-key` is set and the record carries no signature.
    #[error("it is not signed, and --cache-trust-key accepts only signed records")]
    Unsigned,
    /// `--cache-trust-key` is set and the signature is not that key's.
    #[error("its signature does not verify with the --cache-trust-key key")]
    BadSignature,
}

/// Reads a record back and checks it names the layer `plan` needs under `key` in
/// `media_type`: the record's own type and key, and the layer's repo, commit, part, file list,
/// media type and DiffID. On success the layer (its `path` empty: the blob is in the
/// registry); otherwise why the record is not used.
pub fn check(
    bytes: &[u8],
    plan: &LayerPlan,
    key: &str,
    media_type: &str,
    trust: Option<&RecordTrust>,
) -> Result<BuiltLayer, RecordMismatch> {
    if let Some(trust) = trust {
        match signed_bytes(bytes) {
            Some((message, sig)) if trust.verifies(&message, &sig) => {}
            Some(_) => return Err(RecordMismatch::BadSignature),
            None => return Err(RecordMismatch::Unsigned),
        }
    }
    let Document::Manifest(m) = Document::parse(bytes, Some(MEDIA_MANIFEST), "the cache record")?
    else {
        return Err(RecordMismatch::NotAManifest);
    };
    let artifact = m.extra.get("artifactType").and_then(|v| v.as_str());
    if artifact != Some(ARTIFACT_TYPE) {
        return Err(RecordMismatch::ArtifactType(artifact.map(str::to_owned)));
    }
    let [layer] = m.layers.as_slice() else {
        return Err(RecordMismatch::LayerCount(m.layers.len()));
    };
    let part = format!("{}/{}", plan.part.0, plan.part.1);
    let files = files_digest(plan);
    let expect = [
        (ANNOTATION_REPO, plan.repo.as_str()),
        (ANNOTATION_COMMIT, plan.commit.as_str()),
        (ANNOTATION_PART, part.as_str()),
        (ANNOTATION_KEY, key),
        (ANNOTATION_FILES, files.as_str()),
    ];
    for (name, want) in expect {
        let got = layer.annotation(name);
        if got != Some(want) {
            return Err(RecordMismatch::Annotation {
                name,
                got: got.unwrap_or("(nothing)").to_owned(),
                want: want.to_owned(),
            });
        }
    }
    if layer.media_type != media_type {
        return Err(RecordMismatch::MediaType {
            found: layer.media_type.clone(),
            wanted: media_type.to_owned(),
        });
    }
    let diff_id = layer
        .annotation(ANNOTATION_DIFF_ID)
        .ok_or(RecordMismatch::NoDiffId)
        .and_then(|d| Digest::parse(d).map_err(|_| RecordMismatch::BadDiffId))?;
    Ok(BuiltLayer {
        digest: layer.digest.clone(),
        diff_id,
        size: layer.size,
        media_type: layer.media_type.clone(),
        repo: plan.repo.clone(),
        commit: plan.commit.clone(),
        part,
        path: Default::default(),
        reused: true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bake::plan::plan_one;
    use crate::repo::RepoKind;
    use crate::test_support::fuzz::locked_repo;

    fn plan_of(commit: &str, content: &[u8]) -> LayerPlan {
        let repo = locked_repo(
            RepoKind::Model,
            "acme/tiny",
            commit,
            &[("model.bin", content, true)],
        );
        plan_one(repo, &Default::default()).remove(0)
    }

    fn plan(commit: &str) -> LayerPlan {
        plan_of(commit, b"abc")
    }

    fn layer(commit: &str) -> BuiltLayer {
        BuiltLayer {
            digest: Digest::of(b"layer"),
            diff_id: Digest::of(b"tar"),
            size: 5,
            media_type: crate::oci::MEDIA_LAYER_TAR.into(),
            repo: "model/acme/tiny".into(),
            commit: commit.into(),
            part: "1/1".into(),
            path: Default::default(),
            reused: false,
        }
    }

    #[test]
    fn a_record_reads_back_as_its_layer() {
        let c = "c".repeat(40);
        let bytes = build(&layer(&c), &plan(&c), "k1", None).unwrap();
        let back = check(&bytes, &plan(&c), "k1", crate::oci::MEDIA_LAYER_TAR, None).unwrap();
        assert_eq!(
            (back.digest, back.diff_id, back.size),
            (Digest::of(b"layer"), Digest::of(b"tar"), 5)
        );
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["artifactType"], ARTIFACT_TYPE);
        assert_eq!(v["config"]["mediaType"], crate::oci::referrers::MEDIA_EMPTY);
        assert!(tag(&"f".repeat(64)).len() <= 128);
    }

    #[test]
    fn a_record_for_another_commit_key_files_or_format_is_refused() {
        let (c, d) = ("c".repeat(40), "d".repeat(40));
        let other_commit = build(&layer(&d), &plan(&d), "k1", None).unwrap();
        let err = check(
            &other_commit,
            &plan(&c),
            "k1",
            crate::oci::MEDIA_LAYER_TAR,
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("commit"), "{err}");
        let bytes = build(&layer(&c), &plan(&c), "k1", None).unwrap();
        assert!(check(&bytes, &plan(&c), "k2", crate::oci::MEDIA_LAYER_TAR, None).is_err());
        assert!(check(&bytes, &plan(&c), "k1", crate::oci::MEDIA_LAYER_GZIP, None).is_err());
        let more = plan_of(&c, b"abd");
        let err = check(&bytes, &more, "k1", crate::oci::MEDIA_LAYER_TAR, None)
            .unwrap_err()
            .to_string();
        assert!(err.contains(ANNOTATION_FILES), "{err}");
        let other_type = String::from_utf8(bytes)
            .unwrap()
            .replace("layer-cache.v1", "layer-cache.v9");
        assert!(
            check(
                other_type.as_bytes(),
                &plan(&c),
                "k1",
                crate::oci::MEDIA_LAYER_TAR,
                None
            )
            .is_err()
        );
    }

    #[test]
    fn with_a_trust_key_only_records_that_key_signed_are_used() {
        use crate::bake::cache_repo::signing::tests::key_pair;
        let c = "c".repeat(40);
        let (signer, trust) = key_pair();
        let (other_signer, _) = key_pair();
        let tar = crate::oci::MEDIA_LAYER_TAR;
        let unsigned = build(&layer(&c), &plan(&c), "k1", None).unwrap();
        let signed = build(&layer(&c), &plan(&c), "k1", Some(&signer)).unwrap();
        // Signing adds one annotation and covers exactly the unsigned bytes.
        let (message, _) = signed_bytes(&signed).unwrap();
        assert_eq!(message, unsigned);
        assert!(check(&signed, &plan(&c), "k1", tar, Some(&trust)).is_ok());
        // Without a trust key, signed records read as before.
        assert!(check(&signed, &plan(&c), "k1", tar, None).is_ok());
        let unsigned_err = check(&unsigned, &plan(&c), "k1", tar, Some(&trust)).unwrap_err();
        assert!(
            matches!(unsigned_err, RecordMismatch::Unsigned),
            "{unsigned_err}"
        );
        let foreign = build(&layer(&c), &plan(&c), "k1", Some(&other_signer)).unwrap();
        assert!(matches!(
            check(&foreign, &plan(&c), "k1", tar, Some(&trust)),
            Err(RecordMismatch::BadSignature)
        ));
        // A signed record edited afterwards (another layer digest) no longer verifies.
        let tampered = String::from_utf8(signed.clone())
            .unwrap()
            .replace(&Digest::of(b"layer").hex().to_string(), &"e".repeat(64));
        assert!(matches!(
            check(tampered.as_bytes(), &plan(&c), "k1", tar, Some(&trust)),
            Err(RecordMismatch::BadSignature)
        ));
    }
}
