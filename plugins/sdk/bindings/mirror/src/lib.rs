//! Raw `wit-bindgen` output for the `mirror-plugin` world of `modelbake:plugin@0.1.0`.
//!
//! This crate is also the home of the shared `types` and `host` interfaces, which the policy and
//! pruner bindings reuse, so every plugin kind sees the same Rust types. Plugins use
//! `modelbake-plugin-sdk` rather than this crate. (Each world lives in its own crate because
//! `wit-bindgen` names its exported macros after the interface, and all three worlds export
//! `meta`.)

#![allow(missing_docs)]

wit_bindgen::generate!({
    world: "mirror-plugin",
    path: "../../../wit",
    pub_export_macro: true,
    export_macro_name: "export_mirror_world",
    default_bindings_module: "modelbake_plugin_sdk::bindings::mirror",
});

impl modelbake::plugin::types::RepoKind {
    /// The kind as a lowercase word: `model`, `dataset` or `space`.
    pub fn as_str(self) -> &'static str {
        match self {
            modelbake::plugin::types::RepoKind::Model => "model",
            modelbake::plugin::types::RepoKind::Dataset => "dataset",
            modelbake::plugin::types::RepoKind::Space => "space",
        }
    }

    /// The URL path prefix the Hub uses for this kind: `""`, `"datasets/"` or `"spaces/"`.
    pub fn url_prefix(self) -> &'static str {
        match self {
            modelbake::plugin::types::RepoKind::Model => "",
            modelbake::plugin::types::RepoKind::Dataset => "datasets/",
            modelbake::plugin::types::RepoKind::Space => "spaces/",
        }
    }
}

impl modelbake::plugin::types::PluginError {
    /// A new error with the given code and message and no key.
    pub fn new(code: modelbake::plugin::types::ErrorCode, message: impl Into<String>) -> Self {
        modelbake::plugin::types::PluginError {
            code,
            message: message.into(),
            key: None,
        }
    }

    /// An `invalid-config` error naming the offending `key`.
    pub fn invalid_config(key: impl Into<String>, message: impl Into<String>) -> Self {
        modelbake::plugin::types::PluginError {
            code: modelbake::plugin::types::ErrorCode::InvalidConfig,
            message: message.into(),
            key: Some(key.into()),
        }
    }

    /// An `invalid-input` error: the input is something the plugin cannot handle.
    pub fn invalid_input(message: impl Into<String>) -> Self {
        Self::new(modelbake::plugin::types::ErrorCode::InvalidInput, message)
    }

    /// An `unsupported` error: the plugin has no opinion and the host goes on without it.
    pub fn unsupported(message: impl Into<String>) -> Self {
        Self::new(modelbake::plugin::types::ErrorCode::Unsupported, message)
    }

    /// An `internal` error: a bug in the plugin.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(modelbake::plugin::types::ErrorCode::Internal, message)
    }
}
