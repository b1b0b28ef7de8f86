//! JSON documents whose long arrays are produced while they are written. An attestation of a
//! 100,000-file dataset lists every file (tens of MB of JSON); built as a `serde_json::Value`
//! tree it took about 11 KB of memory per file. A [`Json`] keeps the small parts as values and
//! each per-file array as a function that yields its items one at a time, so writing it needs
//! memory for one item, and it can be written more than once (to count, hash, then store it).
//!
//! The bytes are exactly those of the equivalent `Value` written by `serde_json`: objects are
//! written with their keys sorted (a `Value` object is a sorted map), compact, with the same
//! escaping, which the attestation golden digests check.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;

use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};
use serde_json::Value;

/// A function yielding the items of a long array, each time it is called.
pub type Items<'a> = Arc<dyn Fn() -> Box<dyn Iterator<Item = Value> + 'a> + Send + Sync + 'a>;

/// A JSON value, some of whose arrays are produced while it is written.
#[derive(Clone)]
pub enum Json<'a> {
    /// A value held in memory (the small parts).
    Value(Value),
    /// An object; its keys are written sorted, as a `Value` object's are.
    Object(BTreeMap<String, Json<'a>>),
    /// An array made of runs: single values, and runs produced while writing.
    Array(Vec<Run<'a>>),
}

/// A run of an array's items.
#[derive(Clone)]
pub enum Run<'a> {
    /// One item.
    One(Json<'a>),
    /// Items produced while writing.
    Many(Items<'a>),
}

impl<'a> Run<'a> {
    /// The items `items` produces, each time the array is written.
    pub fn many<I>(items: impl Fn() -> I + Send + Sync + 'a) -> Self
    where
        I: Iterator<Item = Value> + 'a,
    {
        Run::Many(Arc::new(move || Box::new(items())))
    }
}

impl<'a> Json<'a> {
    /// An object from `(key, value)` pairs.
    pub fn object<const N: usize>(entries: [(&str, Json<'a>); N]) -> Self {
        Json::Object(
            entries
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect(),
        )
    }

    /// An array of items produced while writing by `items`.
    pub fn lazy_array<I>(items: impl Fn() -> I + Send + Sync + 'a) -> Self
    where
        I: Iterator<Item = Value> + 'a,
    {
        Json::Array(vec![Run::many(items)])
    }

    /// Sets `key` of an object (nothing for other values).
    pub fn insert(&mut self, key: &str, value: Json<'a>) {
        if let Json::Object(m) = self {
            m.insert(key.to_owned(), value);
        }
    }

    /// Writes the compact JSON bytes to `w`.
    pub fn write_to(&self, w: &mut dyn Write) -> std::io::Result<()> {
        serde_json::to_writer(w, self).map_err(std::io::Error::other)
    }

    /// The compact JSON bytes (tests).
    #[cfg(test)]
    pub fn to_vec(&self) -> Vec<u8> {
        let mut out = Vec::new();
        // Writing into memory cannot fail.
        let _ = self.write_to(&mut out);
        out
    }
}

impl From<Value> for Json<'_> {
    fn from(v: Value) -> Self {
        Json::Value(v)
    }
}

impl Serialize for Json<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Json::Value(v) => v.serialize(s),
            Json::Object(m) => {
                let mut map = s.serialize_map(Some(m.len()))?;
                for (k, v) in m {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
            Json::Array(runs) => {
                let mut seq = s.serialize_seq(None)?;
                for run in runs {
                    match run {
                        Run::One(item) => seq.serialize_element(item)?,
                        Run::Many(items) => {
                            for item in items() {
                                seq.serialize_element(&item)?;
                            }
                        }
                    }
                }
                seq.end()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn bytes_match_the_equivalent_value_with_sorted_keys_and_lazy_runs() {
        let files: &'static [&str] = &["b/é\"x", "a/\u{1}"];
        let lazy = Json::lazy_array(move || {
            files
                .iter()
                .map(|f| json!({ "z": 1, "name": f, "hashes": [{ "content": "ab", "alg": "x" }] }))
        });
        let mut doc = Json::object([
            ("zeta", json!({"b": 1, "a": [2, 3]}).into()),
            ("files", lazy),
            (
                "mixed",
                Json::Array(vec![
                    Run::One(json!("first").into()),
                    Run::many(|| (0..3).map(|i| json!(i))),
                    Run::One(Json::object([("k", json!(null).into())])),
                ]),
            ),
            ("empty", Json::lazy_array(std::iter::empty)),
        ]);
        doc.insert("alpha", json!("first key").into());
        let want = json!({
            "zeta": {"b": 1, "a": [2, 3]},
            "files": files
                .iter()
                .map(|f| json!({ "z": 1, "name": f, "hashes": [{ "content": "ab", "alg": "x" }] }))
                .collect::<Vec<_>>(),
            "mixed": ["first", 0, 1, 2, {"k": null}],
            "empty": [],
            "alpha": "first key",
        });
        let bytes = doc.to_vec();
        assert_eq!(bytes, serde_json::to_vec(&want).unwrap());
        // Written twice, the same bytes (the runs are produced again).
        assert_eq!(doc.to_vec(), bytes);
    }
}
