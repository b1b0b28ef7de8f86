//! The host's checks on plugin answers. Plugins give advice; these functions decide what of
//! it may be acted on: only absolute http(s) URLs without dot segments, kept paths that were
//! in the input, deletions of revisions that exist and no lock needs.

use std::collections::{BTreeMap, BTreeSet};

use url::Url;

use super::bindings::mirror::exports::modelbake::plugin::mirror::Candidate as WitCandidate;
use super::{CachedRepo, Deletion, FailureKind, FileEntry, PluginError};
use crate::ui::clean;

/// A download location a mirror plugin proposed and the host accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// Absolute `http`/`https` URL.
    pub url: Url,
    /// The credential name to attach (its value comes from `MODELBAKE_CREDENTIAL_<NAME>`).
    pub credential: Option<String>,
}

/// A policy's answer, checked: `keep` and `dropped` partition the input paths.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Selection {
    /// Paths to lock, sorted.
    pub keep: Vec<String>,
    /// `(path, reason)` for every other input path, sorted by path.
    pub dropped: Vec<(String, String)>,
}

/// Why a mirror's candidate URL was refused. Each message completes "the URL …", as
/// rejections are reported (`plugin `x` proposed `u` for `f`: rejected, the URL …`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CandidateUrlError {
    /// Whitespace, a control character or a backslash anywhere.
    #[error("contains whitespace, control characters or a backslash")]
    BadCharacters,
    /// No `scheme://`.
    #[error("is not an absolute URL (relative URLs are refused)")]
    Relative,
    /// A scheme other than http and https.
    #[error("uses `{scheme}:`; only http and https are allowed")]
    Scheme {
        /// The scheme as written.
        scheme: String,
    },
    /// A `.` or `..` segment, raw or percent-encoded.
    #[error("has `.` or `..` path segments")]
    DotSegments,
    /// A percent-encoded `/`, `\` or control character in a segment.
    #[error("has encoded `/`, `\\` or control characters in a path segment")]
    EncodedSeparator,
    /// The URL parser refused it.
    #[error("is not a valid URL ({0})")]
    Invalid(#[source] url::ParseError),
    /// No host, or an empty one.
    #[error("has no host")]
    NoHost,
    /// `user:password@`: secrets travel as credential names, never in URLs.
    #[error("carries user info; return a credential name instead")]
    UserInfo,
}

/// Accepts only what can safely be downloaded from: an absolute `http://` or `https://` URL
/// with a host, no user info, no backslash or control characters and no `.`/`..` path
/// segments (raw or percent-encoded), so a plugin cannot point at local files or play games
/// with path normalisation.
pub fn check_candidate_url(raw: &str) -> Result<Url, CandidateUrlError> {
    if raw
        .chars()
        .any(|c| c.is_control() || c == '\\' || c.is_whitespace())
    {
        return Err(CandidateUrlError::BadCharacters);
    }
    let Some((scheme, rest)) = raw.split_once("://") else {
        return Err(CandidateUrlError::Relative);
    };
    if !matches!(scheme.to_ascii_lowercase().as_str(), "http" | "https") {
        return Err(CandidateUrlError::Scheme {
            scheme: scheme.to_owned(),
        });
    }
    let path = rest.split(['?', '#']).next().unwrap_or("");
    let path = path.split_once('/').map(|(_, p)| p).unwrap_or("");
    for seg in path.split('/') {
        if seg != "." && seg != ".." && !seg.contains('%') {
            continue;
        }
        let decoded = percent_encoding::percent_decode_str(seg).decode_utf8_lossy();
        if decoded == "." || decoded == ".." {
            return Err(CandidateUrlError::DotSegments);
        }
        if decoded.contains(['/', '\\']) || decoded.chars().any(char::is_control) {
            return Err(CandidateUrlError::EncodedSeparator);
        }
    }
    let url = Url::parse(raw).map_err(CandidateUrlError::Invalid)?;
    if url.host_str().is_none_or(str::is_empty) {
        return Err(CandidateUrlError::NoHost);
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(CandidateUrlError::UserInfo);
    }
    Ok(url)
}

/// Checks a mirror's answer: one list per file; invalid URLs are dropped and reported.
pub(super) fn check_candidates(
    plugin: &str,
    files: &[FileEntry],
    raw: Vec<Vec<WitCandidate>>,
) -> Result<(Vec<Vec<Candidate>>, Vec<String>), PluginError> {
    if raw.len() != files.len() {
        return Err(PluginError::new(
            plugin,
            FailureKind::BadOutput,
            format!(
                "returned {} candidate lists for {} files; `resolve` must return one list per file, in order",
                raw.len(),
                files.len()
            ),
        ));
    }
    let mut rejected = Vec::new();
    let mut out = Vec::with_capacity(raw.len());
    for (file, list) in files.iter().zip(raw) {
        let mut ok = Vec::new();
        for c in list {
            match check_candidate_url(&c.url) {
                Ok(url) => ok.push(Candidate {
                    url,
                    credential: c.credential.filter(|s| !s.is_empty()),
                }),
                Err(why) => rejected.push(format!(
                    "plugin `{plugin}` proposed `{}` for `{}`: rejected, the URL {why}",
                    c.url.escape_debug(),
                    file.path
                )),
            }
        }
        out.push(ok);
    }
    Ok((out, rejected))
}

/// Checks a policy's answer is a partition of the input paths.
pub(super) fn check_selection(
    plugin: &str,
    files: &[FileEntry],
    keep: Vec<String>,
    dropped: Vec<(String, String)>,
) -> Result<Selection, PluginError> {
    let bad = |m: String| PluginError::new(plugin, FailureKind::BadOutput, m);
    let input: BTreeSet<&str> = files.iter().map(|f| f.path.as_str()).collect();
    let mut seen: BTreeSet<String> = BTreeSet::new();
    for p in keep.iter().chain(dropped.iter().map(|(p, _)| p)) {
        if !input.contains(p.as_str()) {
            return Err(bad(format!(
                "returned `{}`, which is not one of the repo's files",
                p.escape_debug()
            )));
        }
        if !seen.insert(p.clone()) {
            return Err(bad(format!(
                "returned `{p}` more than once (each file is either kept or dropped)"
            )));
        }
    }
    if let Some(missing) = input.iter().find(|p| !seen.contains(**p)) {
        return Err(bad(format!(
            "said nothing about `{missing}`; `select` must keep or drop every input file"
        )));
    }
    let dropped = dropped.into_iter().map(|(p, r)| (p, clean(&r))).collect();
    let mut sel = Selection { keep, dropped };
    sel.keep.sort();
    sel.dropped.sort();
    Ok(sel)
}

/// Checks a pruner's plan: each deletion names a cached revision, at most once, and no
/// locked revision (those are refused with an error, as the plan is then untrustworthy).
pub(super) fn check_deletions(
    plugin: &str,
    repos: &[CachedRepo],
    plan: Vec<Deletion>,
) -> Result<Vec<Deletion>, PluginError> {
    let bad = |m: String| PluginError::new(plugin, FailureKind::BadOutput, m);
    let mut known = BTreeMap::new();
    for r in repos {
        for rev in &r.revisions {
            known.insert((r.kind as u8, r.id.clone(), rev.commit.clone()), rev.locked);
        }
    }
    let mut seen = BTreeSet::new();
    for d in &plan {
        let key = (d.kind as u8, d.id.clone(), d.commit.clone());
        match known.get(&key) {
            None => {
                return Err(bad(format!(
                    "planned to delete `{}` revision {}, which is not in the cache",
                    d.id, d.commit
                )));
            }
            Some(true) => {
                return Err(bad(format!(
                    "planned to delete `{}` revision {}, which a lock references; locked revisions are never deleted",
                    d.id, d.commit
                )));
            }
            Some(false) => {}
        }
        if !seen.insert(key) {
            return Err(bad(format!(
                "planned to delete `{}` revision {} twice",
                d.id, d.commit
            )));
        }
    }
    Ok(plan
        .into_iter()
        .map(|d| Deletion {
            reason: clean(&d.reason),
            ..d
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidate_urls_must_be_plain_http() {
        for ok in [
            "https://mirror.example/acme/tiny/resolve/abc/model.safetensors",
            "http://127.0.0.1:8080/x/y?sig=1",
        ] {
            assert!(check_candidate_url(ok).is_ok(), "{ok}");
        }
        for (bad, why) in [
            ("file:///etc/passwd", "file:"),
            ("ftp://example.com/x", "ftp:"),
            ("../../etc/passwd", "relative"),
            ("/etc/passwd", "relative"),
            ("https://example.com/a/../../b", ".."),
            ("https://example.com/a/%2e%2E/b", ".."),
            ("https://example.com/./b", ".."),
            ("https://example.com/a/%2e%2e%2fetc", "encoded"),
            ("https://user:pw@example.com/b", "user info"),
            ("https://example.com/a\\b", "backslash"),
            ("https://:80/x", "host"),
        ] {
            let e = check_candidate_url(bad).unwrap_err().to_string();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    fn file(p: &str) -> FileEntry {
        FileEntry {
            path: p.into(),
            size: 1,
            sha256: None,
            blob: "0".repeat(40),
        }
    }

    #[test]
    fn selections_must_partition_the_input() {
        let files = [file("a"), file("b")];
        let ok = check_selection(
            "p",
            &files,
            vec!["b".into()],
            vec![("a".into(), "r".into())],
        )
        .unwrap();
        assert_eq!(ok.keep, ["b"]);
        let e = check_selection("p", &files, vec!["a".into(), "c".into()], vec![]).unwrap_err();
        assert!(e.message.contains("`c`"), "{e}");
        let e = check_selection("p", &files, vec!["a".into()], vec![]).unwrap_err();
        assert!(e.message.contains("said nothing about `b`"), "{e}");
        let e = check_selection(
            "p",
            &files,
            vec!["a".into(), "b".into()],
            vec![("a".into(), "x".into())],
        )
        .unwrap_err();
        assert!(e.message.contains("more than once"), "{e}");
    }
}
