//! modelbake: reproducible, verified, build-time Hugging Face model downloads.
//!
//! The data flows one way: `models.toml` (intent, [`manifest`]) is resolved against the Hub
//! ([`hub`]) by [`resolve`] into `models.lock` ([`lock`]), which every later step reads alone.
//! The command-line front end lives in [`cli`] and holds no logic of its own.

pub mod bake;
pub mod cli;
pub mod env;
pub mod fetch;
pub mod fs_atomic;
pub mod hash;
pub mod hfcache;
pub mod http_body;
pub mod http_header;
pub mod hub;
pub mod lock;
pub mod manifest;
pub mod oci;
pub mod plugin;
pub mod redact;
pub mod repo;
pub mod resolve;
pub mod schema;
pub mod serve;
pub mod store;
pub mod ui;

#[cfg(test)]
mod fuzz_support;
