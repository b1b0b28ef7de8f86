//! Helpers for the library's unit tests (`#[cfg(test)]` modules under `src/`), kept out of
//! `src/` because they are test code only; `src/lib.rs` includes this folder as
//! `crate::test_support` in test builds. Not a test target of its own: cargo builds only
//! `tests/*.rs` and `tests/*/main.rs` as integration tests.

pub mod fuzz;

/// A fake environment for the readers that take `&dyn Fn(&str) -> Option<String>` instead of
/// reading the process environment: exactly these `(name, value)` pairs, the last one winning
/// if a name repeats, so that a test sees neither the machine's variables nor another test's.
pub fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
    let pairs: Vec<(String, String)> = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    move |k: &str| pairs.iter().rfind(|(n, _)| n == k).map(|(_, v)| v.clone())
}
