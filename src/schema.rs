//! JSON Schemas for `models.toml` and `models.lock`, generated from the very types that parse
//! them; shipped in `manifests/` for editors (Taplo / Even Better TOML) and CI validators.

use crate::lock::Lockfile;
use crate::manifest::ManifestDoc;

/// The schema of `models.toml` (also of `[package.metadata.modelbake]`), pretty JSON.
pub fn manifest() -> String {
    pretty(&schemars::schema_for!(ManifestDoc))
}

/// The schema of `models.lock`, pretty JSON.
pub fn lock() -> String {
    pretty(&schemars::schema_for!(Lockfile))
}

/// Every shipped schema with its file name under `manifests/`.
pub fn all() -> [(&'static str, String); 2] {
    [
        ("models.toml.schema.json", manifest()),
        ("models.lock.schema.json", lock()),
    ]
}

fn pretty(schema: &schemars::Schema) -> String {
    // Serialising a JSON value to a string cannot fail.
    let mut s = serde_json::to_string_pretty(schema).unwrap_or_default();
    s.push('\n');
    s
}
