//! in-toto Statement v1, the envelope every attestation of modelbake is: what it is about (its
//! `subject`, each named and pinned by digest), what kind of claim it makes (`predicateType`) and
//! the claim itself (`predicate`). Serialised compact with sorted keys, so the same facts give
//! the same bytes.

use serde_json::{Value, json};

use super::lazy_json::Json;

/// The `_type` of an in-toto Statement v1.
pub const STATEMENT_TYPE: &str = "https://in-toto.io/Statement/v1";
/// The DSSE payload type of an in-toto statement.
pub const PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";

/// One statement subject: a name and its sha256 (lowercase hex).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject {
    /// What it is called (an image repository, a model folder); informative.
    pub name: String,
    /// Its sha256, lowercase hex.
    pub sha256: String,
}

/// The statement about `subjects` with `predicate` of type `predicate_type` (written with
/// [`Json::write_to`]).
pub fn statement<'a>(subjects: &[Subject], predicate_type: &str, predicate: Json<'a>) -> Json<'a> {
    let subject: Vec<Value> = subjects
        .iter()
        .map(|s| json!({ "name": s.name, "digest": { "sha256": s.sha256 } }))
        .collect();
    Json::object([
        ("_type", json!(STATEMENT_TYPE).into()),
        ("subject", Value::Array(subject).into()),
        ("predicateType", json!(predicate_type).into()),
        ("predicate", predicate),
    ])
}

/// A statement read back: its subjects and predicate.
#[derive(Debug, Clone)]
pub struct Parsed {
    /// The subjects.
    pub subjects: Vec<Subject>,
    /// The predicate type.
    pub predicate_type: String,
    /// The predicate.
    pub predicate: Value,
}

/// Reads a statement; `None` when `bytes` is not an in-toto Statement v1.
pub fn parse(bytes: &[u8]) -> Option<Parsed> {
    let v: Value = serde_json::from_slice(bytes).ok()?;
    if v["_type"] != STATEMENT_TYPE {
        return None;
    }
    let subjects = v["subject"]
        .as_array()?
        .iter()
        .map(|s| {
            Some(Subject {
                name: s["name"].as_str().unwrap_or_default().to_owned(),
                sha256: s["digest"]["sha256"].as_str()?.to_owned(),
            })
        })
        .collect::<Option<Vec<_>>>()?;
    Some(Parsed {
        subjects,
        predicate_type: v["predicateType"].as_str()?.to_owned(),
        predicate: v["predicate"].clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_statement_round_trips_with_sorted_compact_bytes() {
        let s = Subject {
            name: "reg/repo".into(),
            sha256: "ab".repeat(32),
        };
        let bytes = statement(
            std::slice::from_ref(&s),
            "https://x/v1",
            json!({"b": 1, "a": 2}).into(),
        )
        .to_vec();
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(
            text.starts_with(
                r#"{"_type":"https://in-toto.io/Statement/v1","predicate":{"a":2,"b":1}"#
            ),
            "{text}"
        );
        let parsed = parse(&bytes).unwrap();
        assert_eq!(parsed.subjects, vec![s]);
        assert_eq!(parsed.predicate_type, "https://x/v1");
        assert!(parse(b"{\"_type\":\"other\"}").is_none());
        assert!(parse(b"not json").is_none());
    }
}
