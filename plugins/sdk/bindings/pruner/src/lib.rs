//! Raw `wit-bindgen` output for the `pruner-plugin` world of `modelbake:plugin@0.1.0`.
//!
//! The shared `types` and `host` interfaces come from `modelbake-plugin-bindings-mirror`.
//! Plugins use `modelbake-plugin-sdk` rather than this crate.

#![allow(missing_docs)]

wit_bindgen::generate!({
    world: "pruner-plugin",
    path: "../../../wit",
    pub_export_macro: true,
    export_macro_name: "export_pruner_world",
    default_bindings_module: "modelbake_plugin_sdk::bindings::pruner",
    with: {
        "modelbake:plugin/types@0.1.0": modelbake_plugin_bindings_mirror::modelbake::plugin::types,
        "modelbake:plugin/host@0.1.0": modelbake_plugin_bindings_mirror::modelbake::plugin::host,
    },
});
