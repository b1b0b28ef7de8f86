//! Host-side bindings generated from `plugins/wit/plugin.wit`, one module per world. The
//! policy and pruner worlds reuse the mirror world's `types` and `host` modules, so every
//! plugin kind shares one set of types and one `host` implementation.

#![allow(missing_docs, clippy::all)]

/// Bindings of the `mirror-plugin` world (and the shared `types`/`host` interfaces).
pub mod mirror {
    wasmtime::component::bindgen!({
        world: "mirror-plugin",
        path: "plugins/wit",
    });
}

/// Bindings of the `policy-plugin` world.
pub mod policy {
    wasmtime::component::bindgen!({
        world: "policy-plugin",
        path: "plugins/wit",
        with: {
            "modelbake:plugin/types": crate::plugin::bindings::mirror::modelbake::plugin::types,
            "modelbake:plugin/host": crate::plugin::bindings::mirror::modelbake::plugin::host,
        },
    });
}

/// Bindings of the `pruner-plugin` world.
pub mod pruner {
    wasmtime::component::bindgen!({
        world: "pruner-plugin",
        path: "plugins/wit",
        with: {
            "modelbake:plugin/types": crate::plugin::bindings::mirror::modelbake::plugin::types,
            "modelbake:plugin/host": crate::plugin::bindings::mirror::modelbake::plugin::host,
        },
    });
}

pub use mirror::modelbake::plugin::host::Level;
pub use mirror::modelbake::plugin::types::{
    ConfigValue, ErrorCode, FileEntry, PluginError as GuestError, RepoKind as WitRepoKind, RepoRef,
};

impl From<crate::repo::RepoKind> for WitRepoKind {
    fn from(k: crate::repo::RepoKind) -> Self {
        match k {
            crate::repo::RepoKind::Model => WitRepoKind::Model,
            crate::repo::RepoKind::Dataset => WitRepoKind::Dataset,
            crate::repo::RepoKind::Space => WitRepoKind::Space,
        }
    }
}

impl From<WitRepoKind> for crate::repo::RepoKind {
    fn from(k: WitRepoKind) -> Self {
        match k {
            WitRepoKind::Model => crate::repo::RepoKind::Model,
            WitRepoKind::Dataset => crate::repo::RepoKind::Dataset,
            WitRepoKind::Space => crate::repo::RepoKind::Space,
        }
    }
}
