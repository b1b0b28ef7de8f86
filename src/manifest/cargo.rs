//! Reads the modelbake tables from Cargo metadata, for Rust projects (candle, hf-hub) that
//! declare their models in `Cargo.toml`. `cargo metadata` finds the workspace root; the TOML
//! itself is parsed here so that errors still carry line and column.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{Manifest, ManifestDoc, ManifestOrigin, SourceError, read};

#[derive(Deserialize)]
struct CargoToml {
    package: Option<Section>,
    workspace: Option<Section>,
}

#[derive(Deserialize)]
struct Section {
    metadata: Option<MetadataTable>,
}

#[derive(Deserialize)]
struct MetadataTable {
    modelbake: Option<ManifestDoc>,
}

/// Parses one Cargo.toml and returns its package and workspace modelbake tables.
fn tables(path: &Path) -> Result<(String, Option<ManifestDoc>, Option<ManifestDoc>), SourceError> {
    let text = read(path)?;
    let doc: CargoToml =
        toml::from_str(&text).map_err(|e| SourceError::from_toml(path, &text, &e))?;
    let pick = |s: Option<Section>| s.and_then(|s| s.metadata).and_then(|m| m.modelbake);
    let package = pick(doc.package);
    let workspace = pick(doc.workspace);
    Ok((text, package, workspace))
}

/// Loads `[package.metadata.modelbake]` from `cargo_toml`, else `[workspace.metadata.modelbake]`
/// from it or from its workspace root.
pub(super) fn load_cargo_manifest(cargo_toml: &Path) -> Result<Manifest, SourceError> {
    let (text, package, workspace) = tables(cargo_toml)?;
    if let Some(doc) = package {
        return Manifest::from_doc(cargo_toml, &text, ManifestOrigin::CargoPackage, doc);
    }
    if let Some(doc) = workspace {
        return Manifest::from_doc(cargo_toml, &text, ManifestOrigin::CargoWorkspace, doc);
    }
    let root = workspace_root_manifest(cargo_toml)?;
    if root != cargo_toml {
        let (text, _, workspace) = tables(&root)?;
        if let Some(doc) = workspace {
            return Manifest::from_doc(&root, &text, ManifestOrigin::CargoWorkspace, doc);
        }
    }
    Err(SourceError {
        path: cargo_toml.to_owned(),
        location: None,
        message: "no [package.metadata.modelbake] here and no [workspace.metadata.modelbake] in \
                  the workspace root; add one of them (same tables as models.toml) or create a \
                  models.toml"
            .into(),
        snippet: None,
    })
}

/// Asks `cargo metadata` (no dependencies, no network) for the workspace root manifest.
fn workspace_root_manifest(cargo_toml: &Path) -> Result<PathBuf, SourceError> {
    let metadata = cargo_metadata::MetadataCommand::new()
        .manifest_path(cargo_toml)
        .no_deps()
        .other_options(vec!["--offline".to_owned()])
        .exec()
        .map_err(|e| SourceError {
            path: cargo_toml.to_owned(),
            location: None,
            message: format!("`cargo metadata` failed, so the workspace root is unknown: {e}"),
            snippet: None,
        })?;
    Ok(metadata.workspace_root.as_std_path().join("Cargo.toml"))
}
