//! Reads that may find nothing: a manifest by tag that answers `None` on 404 (the cache
//! repository asks for records that often do not exist yet), kept apart from the client's
//! core so that the transport work on [`Registry`] and this merge cleanly.

use reqwest::{Method, StatusCode};

use super::{Payload, Registry, Result, ok};
use crate::http_body::read_capped;
use crate::oci::MEDIA_MANIFEST;

impl Registry {
    /// The image manifest of `repo` at `reference`, at most `limit` bytes; `None` when the
    /// registry answers 404 (no such tag, or no such repository yet).
    pub async fn manifest_if_exists(
        &self,
        repo: &str,
        reference: &str,
        limit: u64,
    ) -> Result<Option<Vec<u8>>> {
        let path = format!("/v2/{repo}/manifests/{reference}");
        let resp = self
            .send(
                Method::GET,
                &path,
                &format!("repository:{repo}:pull"),
                &[("accept", MEDIA_MANIFEST)],
                &Payload::Empty,
            )
            .await?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let resp = ok(resp, &self.url(&path)).await?;
        Ok(Some(read_capped(resp, limit, "a cache record").await?))
    }
}
