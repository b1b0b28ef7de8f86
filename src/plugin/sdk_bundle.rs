//! The guest SDK (`plugins/sdk`) and the WIT, compiled into the binary, so `plugin new` works
//! from an installed modelbake (a wheel, a tarball, an image) with no checkout: the new crate
//! gets a vendored copy at this binary's version and depends on it by a relative path.

use std::path::{Path, PathBuf};

/// Where the vendored copy goes, relative to the new crate.
pub const VENDOR_DIR: &str = "vendor/modelbake-plugin-sdk";

/// `(path relative to plugins/, contents)` for every file the SDK needs to build. A unit test
/// keeps this list equal to the files under `plugins/sdk`.
macro_rules! bundle {
    ($($path:literal),* $(,)?) => {
        &[$(($path, include_str!(concat!("../../plugins/", $path)))),*]
    };
}
const FILES: &[(&str, &str)] = bundle!(
    "sdk/Cargo.toml",
    "sdk/src/config.rs",
    "sdk/src/lib.rs",
    "sdk/src/log.rs",
    "sdk/src/panic.rs",
    "sdk/src/template.rs",
    "sdk/bindings/mirror/Cargo.toml",
    "sdk/bindings/mirror/src/lib.rs",
    "sdk/bindings/policy/Cargo.toml",
    "sdk/bindings/policy/src/lib.rs",
    "sdk/bindings/pruner/Cargo.toml",
    "sdk/bindings/pruner/src/lib.rs",
    "wit/plugin.wit",
);

/// The plugins workspace manifest: the SDK crates inherit its `[workspace.package]` and
/// `[workspace.dependencies]`, so a new crate's workspace must carry the same tables.
const PLUGINS_MANIFEST: &str = include_str!("../../plugins/Cargo.toml");

/// The plugins workspace lock: the dependency versions the SDK is tested with, written as the
/// new crate's `Cargo.lock` (cargo drops the entries it does not need).
pub const PLUGINS_LOCK: &str = include_str!("../../plugins/Cargo.lock");

/// The path of the vendored SDK crate, relative to the new crate (for its `Cargo.toml`).
pub fn sdk_crate_path() -> String {
    format!("{VENDOR_DIR}/sdk")
}

/// Why the bundled SDK could not be written or its workspace tables read.
#[derive(Debug, thiserror::Error)]
pub enum SdkBundleError {
    /// A folder or file of the vendored copy could not be written.
    #[error("{what} {}", .path.display())]
    Io {
        /// What was being done (`creating`, `writing`).
        what: &'static str,
        /// The folder or file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The bundled `plugins/Cargo.toml` does not parse (a broken build of modelbake).
    #[error("the bundled plugins/Cargo.toml is not TOML")]
    NotToml(#[source] toml::de::Error),
    /// The bundled `plugins/Cargo.toml` lacks a table the SDK crates inherit from.
    #[error("the bundled plugins/Cargo.toml has no [{0}]")]
    MissingTable(String),
    /// The tables could not be written back as TOML.
    #[error("writing the workspace tables")]
    Serialize(#[source] toml::ser::Error),
}

/// Writes the SDK and WIT under `crate_root/VENDOR_DIR`, with a README saying where they came
/// from.
pub fn write(crate_root: &Path) -> Result<(), SdkBundleError> {
    let root = crate_root.join(VENDOR_DIR);
    let readme = format!(
        "The modelbake plugin SDK and WIT of modelbake {} (commit {}), written by \
         `modelbake plugin new`.\nDo not edit: to move to another modelbake version, run \
         `plugin new` with that version and copy this folder over.\n",
        env!("CARGO_PKG_VERSION"),
        env!("BUILD_INFO_COMMIT"),
    );
    let files = FILES
        .iter()
        .copied()
        .chain(std::iter::once(("README.md", readme.as_str())));
    for (rel, contents) in files {
        let dest = root.join(rel);
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent).map_err(|source| SdkBundleError::Io {
                what: "creating",
                path: parent.to_owned(),
                source,
            })?;
        }
        std::fs::write(&dest, contents).map_err(|source| SdkBundleError::Io {
            what: "writing",
            path: dest.clone(),
            source,
        })?;
    }
    Ok(())
}

/// The `[workspace.package]` and `[workspace.dependencies]` tables the vendored SDK crates
/// inherit from, as TOML: the plugins workspace's own, with the version set to this binary's
/// and the SDK path pointing at the vendored copy.
pub fn workspace_tables() -> Result<String, SdkBundleError> {
    let manifest: toml::Table =
        toml::from_str(PLUGINS_MANIFEST).map_err(SdkBundleError::NotToml)?;
    let workspace = manifest
        .get("workspace")
        .and_then(toml::Value::as_table)
        .ok_or_else(|| SdkBundleError::MissingTable("workspace".into()))?;
    let table = |name: &str| {
        workspace
            .get(name)
            .and_then(toml::Value::as_table)
            .cloned()
            .ok_or_else(|| SdkBundleError::MissingTable(format!("workspace.{name}")))
    };
    let mut package = table("package")?;
    package.insert("version".into(), env!("CARGO_PKG_VERSION").into());
    let mut deps = table("dependencies")?;
    let mut sdk = toml::Table::new();
    sdk.insert("path".into(), sdk_crate_path().into());
    deps.insert("modelbake-plugin-sdk".into(), sdk.into());
    let mut out = toml::Table::new();
    let mut ws = toml::Table::new();
    ws.insert("package".into(), package.into());
    ws.insert("dependencies".into(), deps.into());
    out.insert("workspace".into(), ws.into());
    toml::to_string(&out).map_err(SdkBundleError::Serialize)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files_under(dir: &Path, base: &Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.file_name().is_some_and(|n| n == "target") {
                continue;
            }
            if path.is_dir() {
                files_under(&path, base, out);
            } else {
                let rel = path.strip_prefix(base).unwrap();
                out.push(rel.to_str().unwrap().replace('\\', "/"));
            }
        }
    }

    #[test]
    fn the_bundle_holds_every_sdk_file() {
        let plugins = Path::new(env!("CARGO_MANIFEST_DIR")).join("plugins");
        let mut on_disk = Vec::new();
        files_under(&plugins.join("sdk"), &plugins, &mut on_disk);
        on_disk.push("wit/plugin.wit".into());
        on_disk.sort();
        let mut bundled: Vec<String> = FILES.iter().map(|(p, _)| (*p).to_owned()).collect();
        bundled.sort();
        assert_eq!(
            bundled, on_disk,
            "add new SDK files to FILES in sdk_bundle.rs"
        );
    }

    #[test]
    fn workspace_tables_point_at_the_vendored_sdk_at_this_version() {
        let t: toml::Table = toml::from_str(&workspace_tables().unwrap()).unwrap();
        let ws = &t["workspace"];
        assert_eq!(
            ws["package"]["version"].as_str(),
            Some(env!("CARGO_PKG_VERSION"))
        );
        assert_eq!(
            ws["dependencies"]["modelbake-plugin-sdk"]["path"].as_str(),
            Some("vendor/modelbake-plugin-sdk/sdk")
        );
        assert!(ws["dependencies"].get("wit-bindgen").is_some());
    }
}
