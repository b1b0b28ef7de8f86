//! SLSA provenance v1: how the image was built. The subject is the image (manifest or index
//! digest); the build type is modelbake's bake; the external parameters are the lock's name
//! and every bake option that changes bytes; the resolved dependencies are `models.lock` by
//! sha256, each locked repo at its commit (a purl and the commit as `gitCommit`), each locked
//! file by sha256, the base image by digest, and (in CI) the source checkout; the builder is
//! the CI system where it is known (GitHub Actions, GitLab CI) and "local" otherwise. No
//! invocation id and no time unless `SOURCE_DATE_EPOCH` is set, so the same bake gives the same
//! statement.

use serde_json::{Value, json};

use super::lazy_json::{Json, Run};
use super::statement::{self, Subject};
use super::{Facts, ImageSubject, purl, rfc3339};

/// The predicate type of SLSA provenance v1.
pub const PREDICATE: &str = "https://slsa.dev/provenance/v1";
/// modelbake's build type: what its external parameters mean (docs/attestations.md).
pub const BUILD_TYPE: &str = "https://modelbake.dev/bake/v1";

/// The provenance statement of `subject`; each repo's files are listed while it is written.
pub fn statement<'a>(facts: &Facts<'a>, subject: &ImageSubject) -> Json<'a> {
    let mut deps = vec![Run::One(
        json!({
            "name": facts.lock_name,
            "digest": { "sha256": facts.lock_sha256 },
        })
        .into(),
    )];
    for repo in &facts.lock.repos {
        let purl = purl(repo);
        deps.push(Run::One(
            json!({
                "name": repo.label(),
                "uri": purl,
                "digest": { "gitCommit": repo.commit },
            })
            .into(),
        ));
        deps.push(Run::many(move || {
            let purl = purl.clone();
            repo.files.iter().map(move |f| {
                json!({
                    "name": format!("{}/{}", repo.id, f.path),
                    "uri": format!("{purl}#{}", f.path),
                    "digest": { "sha256": f.sha256 },
                })
            })
        }));
    }
    for base in &subject.bases {
        deps.push(Run::One(
            json!({
                "name": base.reference,
                "digest": { "sha256": base.digest.hex() },
                "annotations": { "role": "base image" },
            })
            .into(),
        ));
    }
    if let Some(source) = &facts.builder.source {
        deps.push(Run::One(source.clone().into()));
    }
    let mut run = json!({
        "builder": {
            "id": facts.builder.id,
            "version": { "modelbake": facts.tool_version },
        },
    });
    if let Some(t) = facts.epoch {
        run["metadata"] = json!({ "startedOn": rfc3339(t), "finishedOn": rfc3339(t) });
    }
    let mut definition = Json::object([
        ("buildType", json!(BUILD_TYPE).into()),
        (
            "externalParameters",
            json!({
                "lockfile": facts.lock_name,
                "bake": facts.parameters,
            })
            .into(),
        ),
        ("resolvedDependencies", Json::Array(deps)),
    ]);
    if !facts.builder.internal.is_null() {
        definition.insert("internalParameters", facts.builder.internal.clone().into());
    }
    let predicate = Json::object([("buildDefinition", definition), ("runDetails", run.into())]);
    let subject = Subject {
        name: subject.name.clone(),
        sha256: subject.digest.hex().to_owned(),
    };
    statement::statement(&[subject], PREDICATE, predicate)
}

/// The sha256 of the lock a provenance statement names (its dependency named like the lock's
/// external parameter).
pub fn lock_sha256(predicate: &Value) -> Option<&str> {
    let name = predicate["buildDefinition"]["externalParameters"]["lockfile"].as_str()?;
    predicate["buildDefinition"]["resolvedDependencies"]
        .as_array()?
        .iter()
        .find(|d| d["name"] == name)?["digest"]["sha256"]
        .as_str()
}
