//! The OCI image model as types: descriptors, image manifests and image indexes (Docker schema
//! 2 manifests and manifest lists read into the same types). Fields modelbake does not know are
//! kept in `extra` so that documents written by other tools pass through untouched; the image
//! config stays a JSON value for the same reason. Documents are serialised with sorted keys
//! ([`canonical_json`]), which is what makes our digests stable.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::digest::Digest;
use super::error::OciError;
use super::{MEDIA_DOCKER_LIST, MEDIA_INDEX};

/// Annotations, sorted.
pub type Annotations = BTreeMap<String, String>;

/// An OCI content descriptor: what a blob is, its digest and its size.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// What the blob is.
    pub media_type: String,
    /// Its validated digest.
    pub digest: Digest,
    /// Blob size in bytes.
    pub size: u64,
    /// Annotations, sorted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<Annotations>,
    /// Platform (in indexes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<PlatformSpec>,
    /// Fields modelbake does not interpret (`urls`, `artifactType`, …), kept as they were.
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

impl Descriptor {
    /// A descriptor with just media type, digest and size.
    pub fn new(media_type: &str, digest: Digest, size: u64) -> Self {
        Descriptor {
            media_type: media_type.to_owned(),
            digest,
            size,
            annotations: None,
            platform: None,
            extra: BTreeMap::new(),
        }
    }

    /// The value of annotation `key`.
    pub fn annotation(&self, key: &str) -> Option<&str> {
        self.annotations.as_ref()?.get(key).map(String::as_str)
    }
}

/// The `platform` object of an index entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlatformSpec {
    /// `amd64`, `arm64`…
    #[serde(default)]
    pub architecture: String,
    /// `linux`…
    #[serde(default)]
    pub os: String,
    /// `v8`…
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    /// Other fields (`os.version`, `features`…), kept as they were.
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

/// An image manifest (OCI, or Docker schema 2: same shape).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    /// Always 2.
    pub schema_version: u32,
    /// The manifest's own media type (optional in OCI, present in ours).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// The image config.
    pub config: Descriptor,
    /// The layers, base first.
    #[serde(default)]
    pub layers: Vec<Descriptor>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<Annotations>,
    /// Fields modelbake does not interpret (`subject`, `artifactType`…).
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

/// An image index (OCI) or manifest list (Docker): one manifest per platform, or the tags of an
/// OCI layout's `index.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Index {
    /// Always 2.
    pub schema_version: u32,
    /// The index's own media type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// The manifests it lists.
    #[serde(default)]
    pub manifests: Vec<Descriptor>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<Annotations>,
    /// Fields modelbake does not interpret.
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

/// A manifest or an index: what a tag or a digest points at.
#[derive(Debug, Clone, PartialEq)]
pub enum Document {
    /// A single-platform image.
    Manifest(Box<Manifest>),
    /// A list of per-platform manifests.
    Index(Index),
}

impl Document {
    /// Parses a document, deciding its kind by its own `mediaType`, else by the media type the
    /// server or the parent descriptor declared, else by its shape (`manifests` vs `layers`).
    pub fn parse(bytes: &[u8], declared: Option<&str>, what: &str) -> Result<Self, OciError> {
        let value: Value = serde_json::from_slice(bytes).map_err(|e| OciError::Invalid {
            what: what.to_owned(),
            detail: format!("not JSON: {e}"),
        })?;
        let media = value["mediaType"].as_str().or(declared).unwrap_or_default();
        let is_index = media == MEDIA_INDEX
            || media == MEDIA_DOCKER_LIST
            || (value.get("manifests").is_some() && value.get("config").is_none());
        let invalid = |e: serde_json::Error| OciError::Invalid {
            what: what.to_owned(),
            detail: e.to_string(),
        };
        Ok(if is_index {
            Document::Index(serde_json::from_value(value).map_err(invalid)?)
        } else {
            Document::Manifest(Box::new(serde_json::from_value(value).map_err(invalid)?))
        })
    }
}

/// The strings of a JSON array (an image config's `Env`, `Cmd`…); anything else gives none.
/// Configs are kept as JSON values so that a base's unknown fields pass through untouched.
pub fn string_list(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// The JSON bytes of `value` with every object's keys sorted and no whitespace: the form all
/// documents modelbake writes take, so equal content always has equal digests.
pub fn canonical_json<T: Serialize>(value: &T) -> Result<Vec<u8>, OciError> {
    let v = serde_json::to_value(value).map_err(|e| OciError::Invalid {
        what: "a document modelbake built".into(),
        detail: e.to_string(),
    })?;
    serde_json::to_vec(&v).map_err(|e| OciError::Invalid {
        what: "a document modelbake built".into(),
        detail: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

    /// A Docker Hub manifest list as registries serve it (field order as Docker writes it).
    fn docker_list() -> String {
        format!(
            r#"{{
   "schemaVersion": 2,
   "mediaType": "application/vnd.docker.distribution.manifest.list.v2+json",
   "manifests": [
      {{
         "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
         "size": 527,
         "digest": "{D1}",
         "platform": {{ "architecture": "amd64", "os": "linux" }}
      }},
      {{
         "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
         "size": 527,
         "digest": "{D2}",
         "platform": {{ "architecture": "arm64", "os": "linux", "variant": "v8", "features": ["sse4"] }}
      }}
   ]
}}"#
        )
    }

    #[test]
    fn docker_manifest_list_reads_as_an_index_and_round_trips() {
        let doc = Document::parse(docker_list().as_bytes(), None, "test").unwrap();
        let Document::Index(index) = doc else {
            panic!("not an index")
        };
        assert_eq!(index.manifests.len(), 2);
        assert_eq!(index.manifests[1].digest, D2);
        let p = index.manifests[1].platform.as_ref().unwrap();
        assert_eq!((p.os.as_str(), p.architecture.as_str()), ("linux", "arm64"));
        assert_eq!(p.variant.as_deref(), Some("v8"));
        // Unknown fields survive, and the canonical form is the sorted-key form of the input.
        let original: Value = serde_json::from_str(&docker_list()).unwrap();
        assert_eq!(
            canonical_json(&index).unwrap(),
            serde_json::to_vec(&original).unwrap()
        );
    }

    #[test]
    fn oci_manifest_with_unknown_fields_round_trips_byte_for_byte() {
        let text = format!(
            r#"{{"annotations":{{"a":"b"}},"artifactType":"application/x.test","config":{{"digest":"{D1}","mediaType":"application/vnd.oci.image.config.v1+json","size":7}},"layers":[{{"digest":"{D2}","mediaType":"application/vnd.oci.image.layer.v1.tar","size":3,"urls":["https://example.invalid/l"]}}],"mediaType":"application/vnd.oci.image.manifest.v1+json","schemaVersion":2,"subject":{{"digest":"{D1}","mediaType":"application/vnd.oci.image.manifest.v1+json","size":1}}}}"#
        );
        let Document::Manifest(m) = Document::parse(text.as_bytes(), None, "test").unwrap() else {
            panic!("not a manifest")
        };
        assert_eq!(m.layers[0].extra["urls"][0], "https://example.invalid/l");
        assert!(m.extra.contains_key("subject"));
        assert_eq!(canonical_json(&m).unwrap(), text.as_bytes());
    }

    #[test]
    fn a_document_without_media_type_is_judged_by_its_shape() {
        let index = format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"x","digest":"{D1}","size":1}}]}}"#
        );
        assert!(matches!(
            Document::parse(index.as_bytes(), None, "t").unwrap(),
            Document::Index(_)
        ));
        let manifest = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"x","digest":"{D1}","size":1}}}}"#
        );
        assert!(matches!(
            Document::parse(manifest.as_bytes(), None, "t").unwrap(),
            Document::Manifest(_)
        ));
    }

    #[test]
    fn a_hostile_digest_fails_the_whole_document() {
        let text = r#"{"schemaVersion":2,"config":{"mediaType":"x","digest":"sha256:../../x","size":1},"layers":[]}"#;
        let e = Document::parse(text.as_bytes(), None, "the base manifest").unwrap_err();
        assert!(e.to_string().contains("the base manifest"), "{e}");
        assert!(e.to_string().contains("not a digest"), "{e}");
    }
}
