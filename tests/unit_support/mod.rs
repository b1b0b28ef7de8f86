//! Helpers for the library's unit tests (`#[cfg(test)]` modules under `src/`), kept out of
//! `src/` because they are test code only; `src/lib.rs` includes this folder as
//! `crate::test_support` in test builds. Not a test target of its own: cargo builds only
//! `tests/*.rs` and `tests/*/main.rs` as integration tests.

pub mod fuzz;
