//! The Xet read protocol's requests and answers (docs/hub-protocol.md §8): the Hub's read
//! token for a repo revision, and the CAS's reconstruction of a file — the ordered terms
//! (chunk ranges of xorbs) that make it, and where each xorb's bytes can be fetched.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Deserialize;
use tokio::sync::Mutex;

use crate::hub::{HubClient, HubError, Token};
use crate::repo::RepoKey;

/// Largest reconstruction answer read (a term is ~300 bytes of JSON; 16 MiB covers files of
/// several hundred GB).
const RECONSTRUCTION_LIMIT: u64 = 16 << 20;
/// Largest token answer read.
const TOKEN_LIMIT: u64 = 256 << 10;
/// A token is renewed this long before it expires, so no request carries a dying one.
pub const RENEW_BEFORE: Duration = Duration::from_secs(30);

/// The Hub's answer to the read-token request.
#[derive(Debug, Clone, Deserialize)]
struct TokenAnswer {
    #[serde(rename = "accessToken")]
    access_token: String,
    exp: u64,
    #[serde(rename = "casUrl")]
    cas_url: String,
}

/// A CAS read token and where it is valid.
#[derive(Debug, Clone)]
pub struct CasToken {
    /// The CAS base URL.
    pub cas_url: url::Url,
    /// The bearer token (shown nowhere).
    pub token: Token,
    /// Unix seconds of expiry.
    pub exp: u64,
}

impl CasToken {
    /// Whether it must be renewed before the next request.
    pub fn needs_renewal(&self, now: u64) -> bool {
        now + RENEW_BEFORE.as_secs() >= self.exp
    }
}

/// Seconds since the epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// CAS tokens by repo and commit, shared by every download of a fetch; renewed before expiry
/// and after the CAS refuses one.
#[derive(Debug, Default)]
pub struct Tokens {
    cache: Mutex<HashMap<(RepoKey, String), CasToken>>,
}

impl Tokens {
    /// A valid token for `repo` at `commit`: the cached one, or a new one from the Hub (with
    /// the Hub token, sent only to the Hub). `stale` is a token the CAS refused: it is not
    /// handed out again.
    pub async fn get(
        &self,
        hub: &HubClient,
        repo: &RepoKey,
        commit: &str,
        stale: Option<&str>,
    ) -> Result<CasToken, HubError> {
        let mut cache = self.cache.lock().await;
        let key = (repo.clone(), commit.to_owned());
        if let Some(t) = cache.get(&key)
            && !t.needs_renewal(unix_now())
            && stale != Some(t.token.expose())
        {
            return Ok(t.clone());
        }
        let url = hub.endpoint_url(&crate::hub::urls::xet_read_token(
            repo.kind, &repo.id, commit,
        ))?;
        let ctx = hub.repo_ctx(repo.kind, &repo.id, commit);
        let answer: TokenAnswer = hub
            .fetch_json(&url, None, &ctx, "the Xet read token", TOKEN_LIMIT)
            .await?;
        let cas_url = url::Url::parse(&answer.cas_url)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https"))
            .ok_or_else(|| HubError::InvalidResponse {
                url: crate::hub::shown(&url),
                detail: "the Xet token's `casUrl` is not an http(s) URL".into(),
            })?;
        let token = CasToken {
            cas_url,
            token: Token::new(answer.access_token, "the Hub's Xet read token"),
            exp: answer.exp,
        };
        cache.insert(key, token.clone());
        Ok(token)
    }
}

/// A chunk range `[start, end)` of a xorb.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
pub struct ChunkRange {
    /// First chunk.
    pub start: u32,
    /// One past the last chunk.
    pub end: u32,
}

/// An inclusive byte range.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
pub struct ByteRange {
    /// First byte.
    pub start: u64,
    /// Last byte (inclusive).
    pub end: u64,
}

/// One term: chunks of a xorb that continue the file.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Term {
    /// The xorb's hash.
    pub hash: String,
    /// Decoded length of the chunks.
    pub unpacked_length: u64,
    /// Which chunks.
    pub range: ChunkRange,
}

/// A fetchable byte range of a xorb and the chunks it holds.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct RangeDescriptor {
    /// The chunks.
    pub chunks: ChunkRange,
    /// Their bytes in the xorb.
    pub bytes: ByteRange,
}

/// A presigned URL of a xorb with the ranges to fetch from it.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct XorbUrl {
    /// The URL (a credential in itself: never shown).
    pub url: String,
    /// The ranges.
    pub ranges: Vec<RangeDescriptor>,
}

/// The v2 reconstruction answer.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Reconstruction {
    /// Bytes of the first term's decoded chunks that come before the asked range.
    pub offset_into_first_range: u64,
    /// The terms, in file order.
    pub terms: Vec<Term>,
    /// Where each xorb's ranges are.
    pub xorbs: HashMap<String, Vec<XorbUrl>>,
}

/// Where the bytes of one term are fetched from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    /// The presigned URL.
    pub url: String,
    /// The descriptor holding the term's chunks.
    pub range: RangeDescriptor,
}

impl Reconstruction {
    /// The descriptor that holds every chunk of `term`, or `None` when the answer names none
    /// (a malformed answer).
    pub fn locate(&self, term: &Term) -> Option<Located> {
        self.xorbs.get(&term.hash)?.iter().find_map(|x| {
            x.ranges
                .iter()
                .find(|r| r.chunks.start <= term.range.start && term.range.end <= r.chunks.end)
                .map(|r| Located {
                    url: x.url.clone(),
                    range: r.clone(),
                })
        })
    }
}

/// Asks the CAS how to rebuild bytes `from..size` of the file `hash`.
pub async fn reconstruction(
    hub: &HubClient,
    token: &CasToken,
    repo: &RepoKey,
    commit: &str,
    hash: &str,
    from: u64,
    size: u64,
) -> Result<Reconstruction, HubError> {
    let cas = hub.for_mirror(&token.cas_url, Some(token.token.clone()))?;
    let url = token
        .cas_url
        .join(&format!("v2/reconstructions/{hash}"))
        .map_err(|e| HubError::Config(format!("cannot build the reconstruction URL: {e}")))?;
    let ctx = hub.repo_ctx(repo.kind, &repo.id, commit);
    let range = format!("bytes={from}-{}", size.saturating_sub(1));
    cas.fetch_json(
        &url,
        Some(&range),
        &ctx,
        "the Xet reconstruction",
        RECONSTRUCTION_LIMIT,
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_v2_answer_parses_and_each_term_finds_its_descriptor() {
        let json = r#"{"offset_into_first_range":5,"terms":[
            {"hash":"aa","unpacked_length":100,"range":{"start":0,"end":3}},
            {"hash":"bb","unpacked_length":10,"range":{"start":2,"end":3}}],
          "xorbs":{"aa":[{"url":"http://cas/x?sig=1","ranges":[{"chunks":{"start":0,"end":3},"bytes":{"start":0,"end":99}}]}],
                   "bb":[{"url":"http://cas/y","ranges":[{"chunks":{"start":0,"end":1},"bytes":{"start":0,"end":9}},
                                                       {"chunks":{"start":1,"end":4},"bytes":{"start":10,"end":40}}]}]}}"#;
        let r: Reconstruction = serde_json::from_str(json).unwrap();
        assert_eq!(r.offset_into_first_range, 5);
        let b = r.locate(&r.terms[1]).unwrap();
        assert_eq!(b.range.bytes, ByteRange { start: 10, end: 40 });
        let missing = Term {
            hash: "cc".into(),
            unpacked_length: 1,
            range: ChunkRange { start: 0, end: 1 },
        };
        assert_eq!(r.locate(&missing), None);
    }

    #[test]
    fn tokens_are_renewed_thirty_seconds_before_they_expire() {
        let t = CasToken {
            cas_url: url::Url::parse("http://cas").unwrap(),
            token: Token::new("t", "test"),
            exp: 1000,
        };
        assert!(!t.needs_renewal(969));
        assert!(t.needs_renewal(970));
    }
}
