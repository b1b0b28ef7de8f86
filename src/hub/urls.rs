//! Hub URLs, encoded exactly as huggingface_hub does (docs/hub-protocol.md §2.1): revisions with
//! Python's `quote(safe="")` (`refs/pr/1` → `refs%2Fpr%2F1`), file paths with `quote(safe="/")`,
//! repo ids verbatim (they were validated).

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

use crate::repo::{RepoId, RepoKind};

/// Characters Python's `urllib.parse.quote` never encodes, with `safe=""`.
const QUOTE_NOTHING_SAFE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'_')
    .remove(b'.')
    .remove(b'-')
    .remove(b'~');
/// The same with `safe="/"` (Python's default).
const QUOTE_SLASH_SAFE: &AsciiSet = &QUOTE_NOTHING_SAFE.remove(b'/');

/// `quote(s, safe="")`: for revisions and tree paths, where `/` must become `%2F`.
pub fn quote_segment(s: &str) -> String {
    utf8_percent_encode(s, QUOTE_NOTHING_SAFE).to_string()
}

/// `quote(s)`: for file paths in `/resolve/`, where `/` stays literal.
pub fn quote_path(s: &str) -> String {
    utf8_percent_encode(s, QUOTE_SLASH_SAFE).to_string()
}

/// `/api/{kind}s/{id}/revision/{rev}`.
pub fn revision_info(kind: RepoKind, id: &RepoId, revision: &str) -> String {
    format!(
        "/api/{}/{}/revision/{}",
        kind.api_segment(),
        id,
        quote_segment(revision)
    )
}

/// `/api/{kind}s/{id}/xet-read-token/{rev}`: a short-lived token for the Xet CAS.
pub fn xet_read_token(kind: RepoKind, id: &RepoId, revision: &str) -> String {
    format!(
        "/api/{}/{}/xet-read-token/{}",
        kind.api_segment(),
        id,
        quote_segment(revision)
    )
}

/// `/api/{kind}s/{id}/tree/{rev}?recursive=true&expand=false`.
pub fn tree(kind: RepoKind, id: &RepoId, revision: &str) -> String {
    format!(
        "/api/{}/{}/tree/{}?recursive=true&expand=false",
        kind.api_segment(),
        id,
        quote_segment(revision)
    )
}

/// `/{prefix}{id}/resolve/{rev}/{path}`.
pub fn resolve(kind: RepoKind, id: &RepoId, revision: &str, path: &str) -> String {
    format!(
        "/{}{}/resolve/{}/{}",
        kind.url_prefix(),
        id,
        quote_segment(revision),
        quote_path(path)
    )
}

/// `/{prefix}{id}`: the repo's web page, where gated access is requested.
pub fn page(kind: RepoKind, id: &RepoId) -> String {
    format!("/{}{}", kind.url_prefix(), id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_like_python_quote() {
        // Expected strings are Python's `quote(x, safe="")` / `quote(x)` outputs.
        assert_eq!(quote_segment("refs/pr/1"), "refs%2Fpr%2F1");
        assert_eq!(quote_segment("v1.0+rc 2~x_y-z"), "v1.0%2Brc%202~x_y-z");
        assert_eq!(
            quote_path("a+b c#d?é&=.json"),
            "a%2Bb%20c%23d%3F%C3%A9%26%3D.json"
        );
        assert_eq!(quote_path("sub/dir/n.txt"), "sub/dir/n.txt");
    }

    #[test]
    fn builds_paths() {
        let id = RepoId::parse("acme/tiny").unwrap();
        assert_eq!(
            revision_info(RepoKind::Model, &id, "refs/pr/1"),
            "/api/models/acme/tiny/revision/refs%2Fpr%2F1"
        );
        assert_eq!(
            tree(RepoKind::Dataset, &id, "main"),
            "/api/datasets/acme/tiny/tree/main?recursive=true&expand=false"
        );
        assert_eq!(
            resolve(RepoKind::Dataset, &id, "abc", "d/x y.parquet"),
            "/datasets/acme/tiny/resolve/abc/d/x%20y.parquet"
        );
        assert_eq!(
            resolve(RepoKind::Model, &id, "abc", "config.json"),
            "/acme/tiny/resolve/abc/config.json"
        );
        assert_eq!(page(RepoKind::Space, &id), "/spaces/acme/tiny");
    }
}
