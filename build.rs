//! Records where a binary came from (compile-time variables `BUILD_INFO_*`, outside the
//! runtime families `env::VARS` lists), for `modelbake --version`: the git commit it was built
//! from (`unknown` outside a git checkout, e.g. from a source tarball) and the target triple.

use std::path::Path;
use std::process::Command;

fn main() {
    let target = std::env::var("TARGET").unwrap_or_else(|_| "unknown".into());
    println!("cargo:rustc-env=BUILD_INFO_TARGET={target}");
    let profile = std::env::var("PROFILE").unwrap_or_else(|_| "unknown".into());
    println!("cargo:rustc-env=BUILD_INFO_PROFILE={profile}");
    let commit = git_commit();
    let short = if commit == "unknown" {
        &commit
    } else {
        &commit[..12]
    };
    println!("cargo:rustc-env=BUILD_INFO_COMMIT={commit}");
    println!("cargo:rustc-env=BUILD_INFO_COMMIT_SHORT={short}");
}

/// The full commit hash of HEAD, or `unknown` when there is no git or no repository. Asks
/// cargo to rerun this script when HEAD moves (a commit, a checkout).
fn git_commit() -> String {
    let git = |args: &[&str]| -> Option<String> {
        let out = Command::new("git").args(args).output().ok()?;
        if !out.status.success() {
            return None;
        }
        let s = String::from_utf8(out.stdout).ok()?.trim().to_owned();
        (!s.is_empty()).then_some(s)
    };
    // Rerun when HEAD changes; logs/HEAD gets a line on every commit and checkout, also in a
    // worktree (whose HEAD lives outside the checkout).
    for p in ["HEAD", "logs/HEAD"] {
        if let Some(path) = git(&["rev-parse", "--git-path", p])
            && Path::new(&path).exists()
        {
            println!("cargo:rerun-if-changed={path}");
        }
    }
    git(&["rev-parse", "HEAD"])
        .filter(|c| c.len() == 40 && c.bytes().all(|b| b.is_ascii_hexdigit()))
        .unwrap_or_else(|| "unknown".into())
}
