//! modelbake: reproducible, verified, build-time Hugging Face model downloads.
//!
//! The data flows one way: `models.toml` (intent, [`manifest`]) is resolved against the Hub
//! ([`hub`]) by [`resolve`] into `models.lock` ([`lock`]), which every later step reads alone.
//! The command-line front end lives in [`cli`] and holds no logic of its own.
//!
//! Only what the binary, the integration tests and the benchmarks use is public; every other
//! module is crate-private, so its items can change without a semver promise.

#![warn(missing_docs)]

pub(crate) mod attest;
pub(crate) mod bake;
pub mod cli;
pub(crate) mod doctor;
pub(crate) mod env;
pub(crate) mod fetch;
pub(crate) mod fs_atomic;
pub mod hash;
pub(crate) mod hfcache;
pub(crate) mod hint;
pub(crate) mod http_body;
pub(crate) mod http_client;
pub(crate) mod http_header;
pub mod hub;
pub(crate) mod keys;
pub(crate) mod loaders;
pub(crate) mod lock;
pub(crate) mod manifest;
pub(crate) mod oci;
pub mod plugin;
pub(crate) mod redact;
pub mod repo;
pub(crate) mod resolve;
pub(crate) mod retry;
pub mod schema;
pub(crate) mod serve;
pub(crate) mod store;
pub(crate) mod tls_error;
pub(crate) mod ui;

#[cfg(test)]
#[path = "../tests/unit_support/mod.rs"]
mod test_support;
