//! The JSON the Hub answers with (only the fields modelbake needs) and the `Link` header used
//! for tree pagination.

use serde::Deserialize;

/// `GET /api/{kind}s/{id}/revision/{rev}`: only `sha` matters for locking.
#[derive(Debug, Deserialize)]
pub struct RevisionInfo {
    /// The commit the revision points at.
    pub sha: Option<String>,
}

/// One entry of a tree listing. Folders are skipped by the caller.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct TreeEntry {
    /// `file` or `directory` (anything else reads as a folder, as huggingface_hub treats it);
    /// an enum, so a 100,000-entry listing holds no string per entry for it.
    #[serde(rename = "type")]
    pub kind: EntryType,
    /// Git object id: the blob sha1 for files (for LFS files, the pointer's sha1).
    pub oid: String,
    /// Real size in bytes (LFS resolved).
    #[serde(default)]
    pub size: u64,
    /// Full path from the repo root.
    pub path: String,
    /// Present for LFS (and Xet) files.
    pub lfs: Option<LfsInfo>,
    /// The Xet file hash, for files stored in Xet.
    #[serde(default, rename = "xetHash")]
    pub xet_hash: Option<String>,
}

/// The `type` of a tree entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryType {
    /// `file`.
    File,
    /// `directory`.
    Directory,
    /// Any other value.
    #[serde(other)]
    Other,
}

/// The LFS part of a tree entry.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct LfsInfo {
    /// sha256 of the content.
    pub oid: String,
    /// Size of the content.
    pub size: u64,
}

impl TreeEntry {
    /// True for files (anything else is a folder, as huggingface_hub treats it).
    pub fn is_file(&self) -> bool {
        self.kind == EntryType::File
    }
}

/// The `rel="next"` target of a `Link` header (RFC 8288), if any. Targets may hold `,` and
/// `;`, quoted parameters may hold `,`, and `rel` may list several types in any case: a naive
/// split on `,` would silently end the listing early.
pub fn next_link(header: &str) -> Option<String> {
    let mut rest = header;
    while let Some(open) = rest.find('<') {
        let (target, after) = rest[open + 1..].split_once('>')?;
        let (is_next, next) = link_params(after);
        if is_next {
            return Some(target.to_owned());
        }
        rest = next;
    }
    None
}

/// Reads the `; name=value` parameters after a link target up to the `,` that ends the
/// link-value (not one inside quotes); returns whether `rel` names `next`, and what follows.
fn link_params(mut s: &str) -> (bool, &str) {
    let mut is_next = false;
    loop {
        s = s.trim_start();
        let Some(param) = s.strip_prefix(';') else {
            let end = s.find(',').map_or(s.len(), |i| i + 1);
            return (is_next, &s[end..]);
        };
        let name_end = param.find(['=', ';', ',']).unwrap_or(param.len());
        let name = param[..name_end].trim();
        s = &param[name_end..];
        let Some(value) = s.strip_prefix('=') else {
            continue;
        };
        let value = value.trim_start();
        let (value, after) = match value.strip_prefix('"') {
            Some(quoted) => crate::http_header::unquote(quoted),
            None => {
                let end = value.find([';', ',']).unwrap_or(value.len());
                (value[..end].trim().to_owned(), &value[end..])
            }
        };
        s = after;
        if name.eq_ignore_ascii_case("rel")
            && value
                .split_ascii_whitespace()
                .any(|r| r.eq_ignore_ascii_case("next"))
        {
            is_next = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_link_headers() {
        assert_eq!(
            next_link("<https://h/api/models/a/tree/main?cursor=abc&recursive=true>; rel=\"next\"")
                .as_deref(),
            Some("https://h/api/models/a/tree/main?cursor=abc&recursive=true")
        );
        assert_eq!(
            next_link("<https://h/p1>; rel=\"prev\", <https://h/p3>; rel=\"next\"").as_deref(),
            Some("https://h/p3")
        );
        assert_eq!(next_link("<https://h/p1>; rel=\"prev\""), None);
        assert_eq!(next_link(""), None);
    }

    /// Found by fuzzing: each of these used to give no `next` link, so `lock` took the first
    /// page for the whole listing.
    #[test]
    fn link_targets_and_parameters_with_commas_case_and_several_rels() {
        for (header, want) in [
            ("<http://./,>; rel=next", "http://./,"),
            ("<http://h/p?c=a;b>; rel=\"next\"", "http://h/p?c=a;b"),
            ("<http://0/>; title=\",\"; rel=next", "http://0/"),
            ("<http://h/1>; rel=NEXT", "http://h/1"),
            ("<http://h/2>; rel=\"last next\"", "http://h/2"),
            (
                "<http://h/0>; rel=prev; title=\"a\\\"<b>, c\", <http://h/3>; rel=next",
                "http://h/3",
            ),
        ] {
            assert_eq!(next_link(header).as_deref(), Some(want), "{header}");
        }
        assert_eq!(next_link("<http://h/1>; rel=\"nextpage\""), None);
        assert_eq!(next_link("<http://h/1>; title=\"rel=next\""), None);
    }

    #[test]
    fn parses_tree_entries() {
        let v: Vec<TreeEntry> = serde_json::from_str(
            r#"[{"type":"directory","oid":"aa","size":0,"path":"sub"},
                {"type":"file","oid":"bb","size":5,"path":"sub/x.bin","lfs":{"oid":"cc","size":5,"pointerSize":130},"xetHash":"dd"}]"#,
        )
        .unwrap();
        assert!(!v[0].is_file());
        assert!(v[1].is_file());
        assert_eq!(v[1].lfs.as_ref().unwrap().oid, "cc");
    }
}
