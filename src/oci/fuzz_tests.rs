//! Fuzzing the OCI core (issue #14): digests, manifests and indexes. Every accepted digest is
//! exactly `sha256:` and 64 lowercase hex digits; documents never panic the parser and their
//! canonical form is a fixed point (`parse(canonical(x)) == x`). The layer verifier's fuzzing
//! is `crate::bake::fuzz_tests`. Run length and seed: see `crate::test_support::fuzz`.

use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use serde_json::{Value, json};

use super::digest::Digest;
use super::model::Document;
use super::model::canonical_json;
use super::{MEDIA_DOCKER_LIST, MEDIA_INDEX, MEDIA_MANIFEST};
use crate::test_support::fuzz::{config, hex, json_value, mutated};

const HEX: &str = "665939e0da5aa211ec9832ffe5dcba176d1bbac8a95c899c270ec29082853c51";

/// Keys of OCI documents, so generated JSON often has their shape.
const KEYS: &[&str] = &[
    "schemaVersion",
    "mediaType",
    "config",
    "layers",
    "manifests",
    "digest",
    "size",
    "annotations",
    "platform",
    "architecture",
    "os",
    "variant",
    "urls",
    "subject",
    "artifactType",
    MEDIA_INDEX,
    MEDIA_MANIFEST,
    MEDIA_DOCKER_LIST,
];

/// Tokens of JSON documents and digests, inserted by the mutator.
pub(crate) const DICT: &[&str] = &[
    "sha256:",
    "sha512:",
    "sha256:../../x",
    HEX,
    "\"mediaType\":\"application/vnd.oci.image.index.v1+json\",",
    "\"manifests\":[],",
    "\"config\":{},",
    "\"layers\":null,",
    "\"size\":-1,",
    "\"size\":1.5,",
    "\"schemaVersion\":2,",
    "\"platform\":{\"os\":1},",
    "\\u0000",
    "\\ud800",
];

/// Writes `value` as JSON (generated values always serialise).
fn to_json(value: &Value) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_default()
}

/// A descriptor: usually well-formed, sometimes with a bad digest, size or extra field.
fn descriptor() -> impl Strategy<Value = Value> {
    let digest = prop_oneof![
        6 => hex(64).prop_map(|h| json!(format!("sha256:{h}"))),
        1 => "[a-z0-9:./]{0,20}".prop_map(Value::String),
        1 => json_value(KEYS),
    ];
    let size = prop_oneof![
        4 => any::<u64>().prop_map(Value::from),
        1 => json_value(KEYS),
    ];
    let platform = prop::option::of(
        ("[a-z0-9]{0,6}", "[a-z]{0,6}", prop::option::of("v[0-9]")).prop_map(
            |(arch, os, variant)| json!({"architecture": arch, "os": os, "variant": variant}),
        ),
    );
    let extra = prop::collection::btree_map("[a-zA-Z]{1,8}", json_value(KEYS), 0..3);
    let annotations = prop::option::of(prop::collection::btree_map(".{0,8}", ".{0,8}", 0..3));
    (
        prop::sample::select(KEYS),
        digest,
        size,
        platform,
        annotations,
        extra,
    )
        .prop_map(|(media, digest, size, platform, annotations, extra)| {
            let mut d = json!({"mediaType": media, "digest": digest, "size": size});
            if let Some(p) = platform {
                d["platform"] = p;
            }
            if let Some(a) = annotations {
                d["annotations"] = json!(a);
            }
            for (k, v) in extra {
                d[k] = v;
            }
            d
        })
}

/// A manifest- or index-shaped document, with optional media type and unknown fields.
fn document() -> impl Strategy<Value = Value> {
    (
        prop::option::of(prop::sample::select(KEYS)),
        prop::option::of(descriptor()),
        prop::option::of(prop::collection::vec(descriptor(), 0..4)),
        prop::option::of(prop::collection::vec(descriptor(), 0..4)),
        prop::collection::btree_map("[a-zA-Z]{1,8}", json_value(KEYS), 0..3),
        prop_oneof![Just(json!(2)), json_value(KEYS)],
    )
        .prop_map(|(media, config, layers, manifests, extra, version)| {
            let mut d = json!({ "schemaVersion": version });
            if let Some(m) = media {
                d["mediaType"] = json!(m);
            }
            if let Some(c) = config {
                d["config"] = c;
            }
            if let Some(l) = layers {
                d["layers"] = json!(l);
            }
            if let Some(m) = manifests {
                d["manifests"] = json!(m);
            }
            for (k, v) in extra {
                d[k] = v;
            }
            d
        })
}

/// The canonical bytes of a parsed document.
fn canonical(doc: &Document) -> Result<Vec<u8>, TestCaseError> {
    match doc {
        Document::Manifest(m) => canonical_json(m),
        Document::Index(i) => canonical_json(i),
    }
    .map_err(|e| TestCaseError::fail(format!("canonical form of a parsed document: {e}")))
}

/// Parses `bytes`; when accepted, its canonical form must parse to the same document and be a
/// fixed point.
fn check_document(bytes: &[u8], declared: Option<&str>) -> Result<(), TestCaseError> {
    let Ok(doc) = Document::parse(bytes, declared, "fuzz") else {
        return Ok(());
    };
    let c = canonical(&doc)?;
    let again = Document::parse(&c, declared, "fuzz").map_err(|e| {
        TestCaseError::fail(format!(
            "canonical form refused: {e}\n{}",
            String::from_utf8_lossy(&c)
        ))
    })?;
    prop_assert_eq!(&again, &doc, "canonical: {}", String::from_utf8_lossy(&c));
    prop_assert_eq!(canonical(&again)?, c);
    Ok(())
}

/// Every accepted digest is `sha256:` and 64 lowercase hex digits, and shows as written.
fn check_digest(s: &str) -> Result<(), TestCaseError> {
    let parsed = Digest::parse(s);
    if let Ok(d) = &parsed {
        prop_assert!(s.len() == 71 && s.starts_with("sha256:"), "{:?}", s);
        prop_assert!(
            s[7..]
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')),
            "{:?}",
            s
        );
        prop_assert_eq!(d.as_str(), s);
        prop_assert_eq!(d.hex(), &s[7..]);
    } else if let Err(e) = &parsed {
        prop_assert!(!e.to_string().chars().any(char::is_control), "{}", e);
    }
    let via_serde = serde_json::from_value::<Digest>(json!(s)).ok();
    prop_assert_eq!(via_serde, parsed.ok());
    Ok(())
}

/// Found by fuzzing: serde_json's default float parsing is off by one unit in the last place
/// for some numbers, so a float in a field modelbake keeps (or in a base image config) changed
/// on its way through; `float_roundtrip` makes parsing exact.
#[test]
fn a_float_in_an_unknown_field_survives_the_round_trip() {
    let text = format!(
        r#"{{"config":{{"a":[[3.9278639600478333e+58]],"digest":"sha256:{HEX}","mediaType":"x","size":0}},"layers":[],"schemaVersion":2}}"#
    );
    let doc = Document::parse(text.as_bytes(), None, "t").unwrap();
    assert_eq!(canonical(&doc).unwrap(), text.as_bytes());
}

proptest! {
    #![proptest_config(config(1))]

    /// Any string: accepted only as `sha256:` + 64 lowercase hex; errors escape controls.
    #[test]
    fn arbitrary_digests(s in ".{0,80}") {
        check_digest(&s)?;
    }

    /// Near-miss digests (a valid one with byte edits).
    #[test]
    fn mutated_digests(
        s in mutated(format!("sha256:{HEX}").into_bytes(), DICT)
            .prop_map(|b| String::from_utf8_lossy(&b).into_owned())
    ) {
        check_digest(&s)?;
    }

    /// Every well-formed digest is accepted as written.
    #[test]
    fn well_formed_digests_are_accepted(h in hex(64)) {
        let s = format!("sha256:{h}");
        let d = Digest::parse(&s).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(d.hex(), h.as_str());
    }

    /// Real documents with byte edits: no panic; accepted ones round-trip.
    #[test]
    fn mutated_documents_round_trip(
        bytes in prop_oneof![
            mutated(MANIFEST.as_bytes().to_vec(), DICT),
            mutated(INDEX.as_bytes().to_vec(), DICT),
        ],
        declared in prop::option::of(prop::sample::select(KEYS)),
    ) {
        check_document(&bytes, declared)?;
    }
}

proptest! {
    // Generated documents are large and parsed three times a case: half the cases.
    #![proptest_config(config(2))]

    /// Generated manifests and indexes (well-formed or nearly): no panic; the canonical form
    /// of an accepted one parses back to it.
    #[test]
    fn generated_documents_round_trip(
        doc in document(),
        declared in prop::option::of(prop::sample::select(KEYS)),
    ) {
        check_document(&to_json(&doc), declared)?;
    }
}

/// An OCI manifest with unknown fields, as other tools write them.
const MANIFEST: &str = r#"{"annotations":{"a":"b"},"artifactType":"application/x.test","config":{"digest":"sha256:1111111111111111111111111111111111111111111111111111111111111111","mediaType":"application/vnd.oci.image.config.v1+json","size":7},"layers":[{"digest":"sha256:2222222222222222222222222222222222222222222222222222222222222222","mediaType":"application/vnd.oci.image.layer.v1.tar","size":3,"urls":["https://example.invalid/l"]}],"mediaType":"application/vnd.oci.image.manifest.v1+json","schemaVersion":2,"subject":{"digest":"sha256:1111111111111111111111111111111111111111111111111111111111111111","mediaType":"application/vnd.oci.image.manifest.v1+json","size":1}}"#;

/// A Docker manifest list.
const INDEX: &str = r#"{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.list.v2+json","manifests":[{"mediaType":"application/vnd.docker.distribution.manifest.v2+json","size":527,"digest":"sha256:1111111111111111111111111111111111111111111111111111111111111111","platform":{"architecture":"amd64","os":"linux"}},{"mediaType":"application/vnd.docker.distribution.manifest.v2+json","size":527,"digest":"sha256:2222222222222222222222222222222222222222222222222222222222222222","platform":{"architecture":"arm64","os":"linux","variant":"v8","features":["sse4"]}}]}"#;
