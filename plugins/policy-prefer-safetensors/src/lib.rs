//! `policy-prefer-safetensors`: drop pickled PyTorch weights when the same folder has
//! safetensors, and optionally other weight formats.
//!
//! Config:
//! - `also-drop` (optional list): any of `onnx`, `tf`, `flax`, `gguf`, `openvino`; files of those
//!   formats are dropped whether or not safetensors exist.

use modelbake_plugin_sdk::policy::{Dropped, Selection};
use modelbake_plugin_sdk::{Config, FileEntry, Info, PluginError, Policy, RepoRef};

/// The formats `also-drop` may name.
pub const VARIANTS: &[&str] = &["onnx", "tf", "flax", "gguf", "openvino"];

const KEYS: &[&str] = &["also-drop"];

/// Splits a path into its folder (without the trailing `/`, `""` at the root) and file name.
fn split(path: &str) -> (&str, &str) {
    match path.rfind('/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => ("", path),
    }
}

/// Whether any folder of `path` (not the file name itself) is called `folder`.
fn under_folder(path: &str, folder: &str) -> bool {
    let (dir, _) = split(path);
    !dir.is_empty() && dir.split('/').any(|seg| seg == folder)
}

/// Whether `path` is a file of the `also-drop` format `variant`.
pub fn is_variant(variant: &str, path: &str) -> bool {
    let name = split(path).1.to_ascii_lowercase();
    match variant {
        "onnx" => {
            name.ends_with(".onnx") || name.ends_with(".onnx_data") || under_folder(path, "onnx")
        }
        "tf" => name.ends_with(".h5"),
        "flax" => name.ends_with(".msgpack"),
        "gguf" => name.ends_with(".gguf"),
        "openvino" => name.starts_with("openvino_model.") || under_folder(path, "openvino"),
        _ => false,
    }
}

/// Whether `name` is a pickled PyTorch weights file (`pytorch_model*.bin|.pt|.pth`).
fn is_pytorch_weights(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    name.starts_with("pytorch_model")
        && (name.ends_with(".bin") || name.ends_with(".pt") || name.ends_with(".pth"))
}

/// Whether `name` is a PyTorch shard index (`pytorch_model.bin.index.json`).
fn is_pytorch_index(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    name.starts_with("pytorch_model") && name.ends_with(".index.json")
}

/// Reads and checks `also-drop`.
pub fn parse(config: &Config) -> Result<Vec<String>, PluginError> {
    config.check_known(KEYS)?;
    let list = config.strings("also-drop")?.unwrap_or(&[]);
    for v in list {
        if !VARIANTS.contains(&v.as_str()) {
            return Err(PluginError::invalid_config(
                "also-drop",
                format!(
                    "unknown format `{v}` in also-drop (known: {})",
                    VARIANTS.join(", ")
                ),
            ));
        }
    }
    Ok(list.to_vec())
}

/// The selection for `paths` given the `also-drop` formats.
pub fn select(paths: &[&str], also_drop: &[String]) -> Selection {
    // The first safetensors file (sorted) of each folder, and the folders with a safetensors
    // shard index.
    let mut first_safetensors: std::collections::BTreeMap<&str, &str> = Default::default();
    let mut safetensors_index: std::collections::BTreeSet<&str> = Default::default();
    for path in paths {
        let (dir, name) = split(path);
        if name.to_ascii_lowercase().ends_with(".safetensors") {
            let entry = first_safetensors.entry(dir).or_insert(name);
            if name < *entry {
                *entry = name;
            }
        }
        if name == "model.safetensors.index.json" {
            safetensors_index.insert(dir);
        }
    }

    let mut keep = Vec::new();
    let mut dropped = Vec::new();
    for path in paths {
        let (dir, name) = split(path);
        let reason = if is_pytorch_weights(name) {
            first_safetensors
                .get(dir)
                .map(|st| format!("{st} has the same weights"))
        } else if is_pytorch_index(name) && safetensors_index.contains(dir) {
            Some("model.safetensors.index.json indexes the same weights".to_string())
        } else {
            None
        };
        let reason = reason.or_else(|| {
            VARIANTS
                .iter()
                .find(|v| also_drop.iter().any(|a| a == *v) && is_variant(v, path))
                .map(|v| format!("{v} variant dropped by also-drop"))
        });
        match reason {
            Some(reason) => dropped.push(Dropped {
                path: path.to_string(),
                reason,
            }),
            None => keep.push(path.to_string()),
        }
    }
    keep.sort();
    dropped.sort_by(|a, b| a.path.cmp(&b.path));
    Selection { keep, dropped }
}

/// The plugin.
pub struct Plugin;

impl Policy for Plugin {
    fn describe() -> Info {
        Info::new(
            env!("CARGO_PKG_NAME"),
            env!("CARGO_PKG_VERSION"),
            "Drops pickled PyTorch weights (pytorch_model*.bin/.pt/.pth) from every folder that \
             also has .safetensors files, and pytorch_model.bin.index.json where \
             model.safetensors.index.json exists. Optionally drops other weight formats \
             outright.",
            "also-drop: optional list of formats to drop as well: onnx (*.onnx, *.onnx_data, \
             onnx/), tf (*.h5), flax (*.msgpack), gguf (*.gguf), openvino (openvino/, \
             openvino_model.*)",
        )
    }

    fn validate_config(config: &Config) -> Result<(), PluginError> {
        parse(config).map(|_| ())
    }

    fn select(
        config: &Config,
        _repo: &RepoRef,
        files: &[FileEntry],
    ) -> Result<Selection, PluginError> {
        let also_drop = parse(config)?;
        let paths: Vec<&str> = files.iter().map(|f| f.path.as_str()).collect();
        Ok(select(&paths, &also_drop))
    }
}

modelbake_plugin_sdk::export_policy!(Plugin);

#[cfg(test)]
mod tests {
    use super::*;
    use modelbake_plugin_sdk::{ConfigValue, ErrorCode};

    fn dropped(sel: &Selection) -> Vec<(&str, &str)> {
        sel.dropped
            .iter()
            .map(|d| (d.path.as_str(), d.reason.as_str()))
            .collect()
    }

    #[test]
    fn drops_pytorch_next_to_safetensors() {
        let paths = [
            "config.json",
            "model-00001-of-00002.safetensors",
            "model-00002-of-00002.safetensors",
            "model.safetensors.index.json",
            "pytorch_model-00001-of-00002.bin",
            "pytorch_model-00002-of-00002.bin",
            "pytorch_model.bin.index.json",
            "sub/pytorch_model.bin",
            "other/pytorch_model.pt",
            "other/z.safetensors",
            "other/a.safetensors",
            "other/pytorch_model.bin.index.json",
            "training_args.bin",
        ];
        let sel = select(&paths, &[]);
        assert_eq!(
            sel.keep,
            vec![
                "config.json",
                "model-00001-of-00002.safetensors",
                "model-00002-of-00002.safetensors",
                "model.safetensors.index.json",
                "other/a.safetensors",
                "other/pytorch_model.bin.index.json",
                "other/z.safetensors",
                "sub/pytorch_model.bin",
                "training_args.bin",
            ]
        );
        assert_eq!(
            dropped(&sel),
            vec![
                (
                    "other/pytorch_model.pt",
                    "a.safetensors has the same weights"
                ),
                (
                    "pytorch_model-00001-of-00002.bin",
                    "model-00001-of-00002.safetensors has the same weights"
                ),
                (
                    "pytorch_model-00002-of-00002.bin",
                    "model-00001-of-00002.safetensors has the same weights"
                ),
                (
                    "pytorch_model.bin.index.json",
                    "model.safetensors.index.json indexes the same weights"
                ),
            ]
        );
        assert_eq!(sel.keep.len() + sel.dropped.len(), paths.len());
    }

    #[test]
    fn keeps_pytorch_without_safetensors() {
        let sel = select(&["pytorch_model.bin", "config.json"], &[]);
        assert_eq!(sel.keep, vec!["config.json", "pytorch_model.bin"]);
        assert!(sel.dropped.is_empty());
    }

    #[test]
    fn also_drop_variants() {
        let paths = [
            "model.onnx",
            "onnx/model.onnx_data",
            "onnx/config.json",
            "tf_model.h5",
            "flax_model.msgpack",
            "q4.gguf",
            "openvino/openvino_model.xml",
            "openvino_model.bin",
            "model.safetensors",
            "not_onnx/x.json",
        ];
        let all: Vec<String> = VARIANTS.iter().map(|s| s.to_string()).collect();
        let sel = select(&paths, &all);
        assert_eq!(sel.keep, vec!["model.safetensors", "not_onnx/x.json"]);
        let d = dropped(&sel);
        assert!(d.contains(&("onnx/config.json", "onnx variant dropped by also-drop")));
        assert!(d.contains(&("tf_model.h5", "tf variant dropped by also-drop")));
        assert!(d.contains(&("flax_model.msgpack", "flax variant dropped by also-drop")));
        assert!(d.contains(&("q4.gguf", "gguf variant dropped by also-drop")));
        assert!(d.contains(&(
            "openvino_model.bin",
            "openvino variant dropped by also-drop"
        )));
        let mut sorted = d.clone();
        sorted.sort();
        assert_eq!(d, sorted);
        // Only the named formats.
        let sel = select(&paths, &["gguf".to_string()]);
        assert_eq!(
            dropped(&sel),
            vec![("q4.gguf", "gguf variant dropped by also-drop")]
        );
    }

    #[test]
    fn config_errors() {
        let bad = Config::new(vec![(
            "also-drop".into(),
            ConfigValue::Strings(vec!["onnx".into(), "pickle".into()]),
        )]);
        let e = parse(&bad).unwrap_err();
        assert_eq!(
            (e.code, e.key.as_deref()),
            (ErrorCode::InvalidConfig, Some("also-drop"))
        );
        assert!(e.message.contains("`pickle`"));
        let bad = Config::new(vec![("also_drop".into(), ConfigValue::Strings(vec![]))]);
        assert_eq!(parse(&bad).unwrap_err().key.as_deref(), Some("also_drop"));
        let bad = Config::new(vec![(
            "also-drop".into(),
            ConfigValue::String("onnx".into()),
        )]);
        assert_eq!(parse(&bad).unwrap_err().key.as_deref(), Some("also-drop"));
        assert!(parse(&Config::default()).unwrap().is_empty());
    }
}
