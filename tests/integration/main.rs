//! Integration tests: the `modelbake` binary and library against the Hub emulator (and, for
//! fidelity, the real Python huggingface_hub client against the emulator). One test binary
//! keeps link time down on small CI machines.

/// What the tests share: fixtures, helpers and stand-in servers (`support/`).
mod support;

mod attestations;
mod bake;
mod cache;
mod cargo_metadata;
mod ci_entry;
mod concurrency;
mod consumers;
mod dist;
mod dockerfile;
mod doctor_image;
mod emulator;
mod fetch;
mod fidelity;
mod golden;
mod hostile_fs;
mod hostile_hub;
mod hostile_oci;
mod hub_client;
mod image_volumes;
mod kill_anywhere;
mod loaders;
mod lock;
mod lock_faults;
mod plugins;
mod registry_auth;
mod registry_cache;
mod registry_faults;
mod registry_push;
mod registry_reads;
mod schema;
mod tls;
mod xet;
