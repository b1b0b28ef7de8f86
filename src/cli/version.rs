//! `modelbake --version`: which version, built from which git commit, for which target — what
//! a bug report or a CI log needs to name the exact binary. `--version --json` gives tools the
//! same as one JSON object.

use std::ffi::OsString;

/// The text after `modelbake ` in `--version`.
pub const LINE: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("BUILD_INFO_COMMIT_SHORT"),
    ", ",
    env!("BUILD_INFO_TARGET"),
    ")"
);

/// The version as JSON: `name`, `version`, `commit` (40 hex, or `unknown` for a build outside
/// a git checkout), `target` (the Rust target triple) and `profile` (the cargo profile).
pub fn json() -> serde_json::Value {
    serde_json::json!({
        "name": env!("CARGO_PKG_NAME"),
        "version": env!("CARGO_PKG_VERSION"),
        "commit": env!("BUILD_INFO_COMMIT"),
        "target": env!("BUILD_INFO_TARGET"),
        "profile": env!("BUILD_INFO_PROFILE"),
    })
}

/// True when the arguments (after the program name) ask for the version as JSON: only
/// `--version`/`-V` and `--json`, in any order. clap prints its version line as soon as it sees
/// `--version`, so this is checked before clap parses.
pub fn json_requested(args: &[OsString]) -> bool {
    let is = |a: &OsString, names: &[&str]| names.iter().any(|n| a == n);
    args.iter().all(|a| is(a, &["--version", "-V", "--json"]))
        && args.iter().any(|a| is(a, &["--version", "-V"]))
        && args.iter().any(|a| is(a, &["--json"]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<OsString> {
        a.iter().map(OsString::from).collect()
    }

    #[test]
    fn only_version_and_json_together_ask_for_json() {
        assert!(json_requested(&args(&["--version", "--json"])));
        assert!(json_requested(&args(&["--json", "-V"])));
        assert!(!json_requested(&args(&["--version"])));
        assert!(!json_requested(&args(&["--json"])));
        assert!(!json_requested(&args(&["lock", "--json", "--version"])));
        assert!(!json_requested(&args(&[])));
    }

    #[test]
    fn the_json_names_version_commit_and_target() {
        let v = json();
        assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
        let commit = v["commit"].as_str().unwrap();
        assert!(
            commit == "unknown" || (commit.len() == 40 && LINE.contains(&commit[..12])),
            "{commit} / {LINE}"
        );
        assert!(LINE.contains(v["target"].as_str().unwrap()));
    }
}
