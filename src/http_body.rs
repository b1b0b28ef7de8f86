//! Reading HTTP answers into memory with a ceiling. Every JSON or metadata body modelbake keeps
//! in memory (Hub pages, registry manifests, configs and token answers, plugin downloads) is
//! read through [`read_capped`], so a hostile or broken server that sends an endless answer, or
//! announces `Content-Length: 10^15`, costs at most the limit and ends with an error that names
//! the URL and the limit instead of exhausting the machine's memory.

use futures::StreamExt;

/// 4 MiB: the OCI distribution spec's manifest limit, and plenty for any Hub API page of
/// bounded length (a tree page holds at most 1,000 entries).
pub const METADATA_LIMIT: u64 = 4 << 20;

/// The most files the Hub lets a repo hold (its documented repository limit): what the caps
/// on Hub answers that name every file of a repo are sized from.
pub const HUB_MAX_FILES: u64 = 100_000;

/// 32 MiB: the Hub's revision info lists every file of the repo in `siblings`
/// (`{"rfilename":"<path>"}`), so its size follows the file count: 4.4 MB for 100,000 files
/// named `data/part-NNN/row-NNNN.json`. The cap allows [`HUB_MAX_FILES`] entries of about 335
/// bytes each (paths of 300 characters on average), so every repo the Hub can hold fits, while
/// an endless or absurd answer still ends at the cap. Only `sha` is kept from it: the rest of
/// the body is skipped while parsing, never turned into values.
pub const REVISION_INFO_LIMIT: u64 = 32 << 20;

/// Why a capped read failed.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// The answer is (or announces itself as) larger than the limit.
    #[error(
        "{url}: the answer is larger than the {limit_display} allowed for {what}{declared}; the server is misbehaving or this is not the {what} modelbake asked for"
    , limit_display = human_bytes(*.limit), declared = .declared.map(|d| format!(" (it announced {d} bytes)")).unwrap_or_default())]
    TooLarge {
        /// Where the answer came from (credentials removed).
        url: String,
        /// What was being read (`a manifest`, `a tree page`…).
        what: &'static str,
        /// The ceiling in bytes.
        limit: u64,
        /// The `Content-Length` the server announced, when it did.
        declared: Option<u64>,
    },
    /// The connection failed while the body was read.
    #[error("{url}: connection lost while reading {what}: {detail}")]
    Transport {
        /// Where the answer came from (credentials removed).
        url: String,
        /// What was being read.
        what: &'static str,
        /// The transport error chain.
        detail: String,
    },
}

impl BodyError {
    /// True for a dropped connection (worth a retry); false for an oversized answer (never).
    pub fn is_transient(&self) -> bool {
        matches!(self, BodyError::Transport { .. })
    }
}

/// Reads the whole body of `resp`, refusing more than `limit` bytes. `what` names the body in
/// the error ("a manifest"). A `Content-Length` above the limit is refused before any byte is
/// read; a body that grows past it is cut off as soon as it does.
pub async fn read_capped(
    resp: reqwest::Response,
    limit: u64,
    what: &'static str,
) -> Result<Vec<u8>, BodyError> {
    let url = crate::redact::url_str(resp.url().as_str());
    let declared = resp.content_length();
    if let Some(len) = declared.filter(|&len| len > limit) {
        return Err(BodyError::TooLarge {
            url,
            what,
            limit,
            declared: Some(len),
        });
    }
    let capacity = declared.unwrap_or(0).min(limit) as usize;
    let mut out = Vec::with_capacity(capacity);
    let mut body = resp.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| BodyError::Transport {
            url: url.clone(),
            what,
            detail: crate::redact::error_chain(&e),
        })?;
        if out.len() as u64 + chunk.len() as u64 > limit {
            return Err(BodyError::TooLarge {
                url,
                what,
                limit,
                declared,
            });
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// `4 MiB`, `512 KiB`, `100 bytes`: limits as people read them.
pub fn human_bytes(n: u64) -> String {
    const KIB: u64 = 1024;
    if n >= KIB * KIB && n.is_multiple_of(KIB * KIB) {
        format!("{} MiB", n / (KIB * KIB))
    } else if n >= KIB && n.is_multiple_of(KIB) {
        format!("{} KiB", n / KIB)
    } else {
        format!("{n} bytes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_read_as_people_write_them() {
        assert_eq!(human_bytes(METADATA_LIMIT), "4 MiB");
        assert_eq!(human_bytes(REVISION_INFO_LIMIT), "32 MiB");
        const {
            assert!(
                REVISION_INFO_LIMIT / HUB_MAX_FILES > 300,
                "a 300-byte path per file fits"
            )
        };
        assert_eq!(human_bytes(512 * 1024), "512 KiB");
        assert_eq!(human_bytes(1000), "1000 bytes");
    }

    #[test]
    fn too_large_names_url_limit_and_announcement() {
        let e = BodyError::TooLarge {
            url: "http://127.0.0.1:1/v2/x/manifests/latest".into(),
            what: "a manifest",
            limit: METADATA_LIMIT,
            declared: Some(1_000_000_000_000_000),
        };
        let text = e.to_string();
        assert!(
            text.contains("http://127.0.0.1:1/v2/x/manifests/latest"),
            "{text}"
        );
        assert!(text.contains("4 MiB allowed for a manifest"), "{text}");
        assert!(text.contains("1000000000000000 bytes"), "{text}");
        assert!(!e.is_transient());
    }
}
