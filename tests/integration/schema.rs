//! The JSON Schemas shipped in `manifests/` are exactly what the code's types generate, so
//! editors validate what modelbake really accepts. `MODELBAKE_BLESS=1` rewrites them.

use std::path::Path;

#[test]
fn shipped_schemas_match_the_code() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests");
    for (name, generated) in modelbake::schema::all() {
        let path = root.join(name);
        if std::env::var_os("MODELBAKE_BLESS").is_some() {
            std::fs::write(&path, &generated).unwrap();
        }
        let shipped = std::fs::read_to_string(&path).unwrap_or_default();
        assert_eq!(
            shipped,
            generated,
            "{} is stale: run `MODELBAKE_BLESS=1 cargo test schema` and commit it",
            path.display()
        );
    }
}

#[test]
fn schemas_describe_the_formats() {
    let manifest: serde_json::Value = serde_json::from_str(&modelbake::schema::manifest()).unwrap();
    for table in ["model", "dataset", "space", "defaults"] {
        assert!(manifest["properties"][table].is_object(), "{table} missing");
    }
    assert_eq!(
        manifest["additionalProperties"], false,
        "unknown tables are rejected"
    );
    let lock: serde_json::Value = serde_json::from_str(&modelbake::schema::lock()).unwrap();
    assert!(
        lock["required"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v == "version")
    );
}
