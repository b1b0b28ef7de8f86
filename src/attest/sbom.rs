//! The SBOM: a CycloneDX 1.6 JSON document. The image is the document's subject
//! (`metadata.component`, a `container`); every locked repo is a component (a
//! `machine-learning-model`, a dataset `data`, a space `application`) named by its purl
//! `pkg:huggingface/<namespace>/<name>@<commit>` with its licence from the model card, and
//! holding one `file` component per locked file with its size and sha256; the base image is a
//! `container` component pinned by digest. CycloneDX rather than SPDX 2.3: SPDX requires a SHA-1
//! per file, which the lock does not have, and Trivy reads CycloneDX attestations and referrers
//! (see docs/attestations.md).

use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use super::lazy_json::{Json, Run};
use super::{Facts, ImageSubject, purl, rfc3339};
use crate::lock::LockedRepo;
use crate::repo::RepoKind;

/// The predicate type of a CycloneDX SBOM in an in-toto statement.
pub const PREDICATE: &str = "https://cyclonedx.org/bom";
/// The media type of a CycloneDX JSON document (the referrer's artifact type unsigned).
pub const MEDIA_TYPE: &str = "application/vnd.cyclonedx+json";

/// The SBOM of `subject`, built from the lock alone (and the licences read from model cards);
/// each repo's file list is produced while the document is written.
pub fn document<'a>(facts: &Facts<'a>, subject: &ImageSubject) -> Json<'a> {
    let mut refs: Vec<Value> = facts
        .lock
        .repos
        .iter()
        .map(|r| Value::String(purl(r)))
        .collect();
    let mut components: Vec<Run<'a>> = facts
        .lock
        .repos
        .iter()
        .map(|r| Run::One(repo_component(facts, r)))
        .collect();
    for base in &subject.bases {
        refs.push(Value::String(format!("base:{}", base.digest)));
        components.push(Run::One(Json::Value(json!({
            "type": "container",
            "bom-ref": format!("base:{}", base.digest),
            "name": base.reference,
            "version": base.digest.as_str(),
            "hashes": [{ "alg": "SHA-256", "content": base.digest.hex() }],
            "description": "the base image",
        }))));
    }
    let mut metadata = json!({
        "tools": { "components": [{
            "type": "application",
            "name": "modelbake",
            "version": facts.tool_version,
        }]},
        "component": {
            "type": "container",
            "bom-ref": "image",
            "name": subject.name,
            "version": subject.digest.as_str(),
            "hashes": [{ "alg": "SHA-256", "content": subject.digest.hex() }],
        },
    });
    if let Some(t) = facts.epoch {
        metadata["timestamp"] = json!(rfc3339(t));
    }
    let mut doc = Json::Value(json!({
        "bomFormat": "CycloneDX",
        "specVersion": "1.6",
        "version": 1,
        "serialNumber": serial_number(facts, subject),
        "metadata": metadata,
        "dependencies": [{ "ref": "image", "dependsOn": refs }],
    }));
    doc = into_object(doc);
    doc.insert("components", Json::Array(components));
    doc
}

/// A `Value` object as a [`Json`] object whose entries can be added to.
fn into_object(v: Json<'_>) -> Json<'_> {
    match v {
        Json::Value(Value::Object(m)) => {
            Json::Object(m.into_iter().map(|(k, v)| (k, Json::Value(v))).collect())
        }
        other => other,
    }
}

/// One locked repo and its files (produced while writing).
fn repo_component<'a>(facts: &Facts<'a>, repo: &'a LockedRepo) -> Json<'a> {
    let purl = purl(repo);
    let (group, name) = match repo.id.as_str().split_once('/') {
        Some((ns, name)) => (Some(ns), name),
        None => (None, repo.id.as_str()),
    };
    let kind = match repo.kind {
        RepoKind::Model => "machine-learning-model",
        RepoKind::Dataset => "data",
        RepoKind::Space => "application",
    };
    let files = {
        let purl = purl.clone();
        Json::lazy_array(move || {
            let purl = purl.clone();
            repo.files.iter().map(move |f| {
                json!({
                    "type": "file",
                    "bom-ref": format!("{purl}#{}", f.path),
                    "name": f.path,
                    "hashes": [{ "alg": "SHA-256", "content": f.sha256 }],
                    "properties": [{ "name": "modelbake:size", "value": f.size.to_string() }],
                })
            })
        })
    };
    let licenses: Vec<Value> = match facts.licenses.get(&repo.label()) {
        Some(ids) if !ids.is_empty() => ids
            .iter()
            .map(|id| match super::license::spdx_id(id) {
                Some(spdx) => json!({ "license": { "id": spdx } }),
                None => json!({ "license": { "name": id } }),
            })
            .collect(),
        _ => vec![json!({ "license": { "name": "NOASSERTION" } })],
    };
    let mut c = json!({
        "type": kind,
        "bom-ref": purl,
        "name": name,
        "version": repo.commit,
        "purl": purl,
        "licenses": licenses,
        "externalReferences": [{ "type": "distribution", "url": super::hub_url(repo) }],
        "properties": [{ "name": "modelbake:revision", "value": repo.revision.as_str() }],
    });
    if let Some(g) = group {
        c["group"] = json!(g);
    }
    let mut c = into_object(Json::Value(c));
    c.insert("components", files);
    c
}

/// A stable `urn:uuid:` (version 5 layout) from the subject and the lock, so the same bake
/// gives the same document.
fn serial_number(facts: &Facts<'_>, subject: &ImageSubject) -> String {
    let mut h = Sha256::new();
    h.update(subject.digest.as_str());
    h.update(&facts.lock_sha256);
    let mut b: [u8; 16] = h.finalize()[..16].try_into().unwrap_or_default();
    b[6] = (b[6] & 0x0f) | 0x50;
    b[8] = (b[8] & 0x3f) | 0x80;
    let x = hex::encode(b);
    format!(
        "urn:uuid:{}-{}-{}-{}-{}",
        &x[..8],
        &x[8..12],
        &x[12..16],
        &x[16..20],
        &x[20..]
    )
}
