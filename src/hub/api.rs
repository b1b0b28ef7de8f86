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
    /// `file` or `directory`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Git object id: the blob sha1 for files (for LFS files, the pointer's sha1).
    pub oid: String,
    /// Real size in bytes (LFS resolved).
    #[serde(default)]
    pub size: u64,
    /// Full path from the repo root.
    pub path: String,
    /// Present for LFS (and Xet) files.
    pub lfs: Option<LfsInfo>,
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
        self.kind == "file"
    }
}

/// The `rel="next"` target of a GitHub-style `Link` header, if any.
pub fn next_link(header: &str) -> Option<String> {
    header.split(',').find_map(|part| {
        let (target, params) = part.trim().split_once(';')?;
        let target = target.trim().strip_prefix('<')?.strip_suffix('>')?;
        params
            .split(';')
            .any(|p| {
                let p = p.trim().replace(' ', "");
                p == "rel=\"next\"" || p == "rel=next"
            })
            .then(|| target.to_owned())
    })
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
