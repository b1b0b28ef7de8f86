//! The registry side of OCI 1.1 referrers: storing a manifest that names a `subject` and
//! learning whether the registry indexed it (the `OCI-Subject` answer header), the referrers
//! API (`GET /v2/<name>/referrers/<digest>`), and reading the index that the referrers tag
//! schema keeps under `sha256-<hex>` for registries without the API. What to do with them is
//! [`crate::oci::referrers`]' job.

use reqwest::{Method, StatusCode};

use super::{Payload, Registry, Result, ok};
use crate::http_body::read_capped;
use crate::oci::digest::Digest;
use crate::oci::{MEDIA_INDEX, MEDIA_MANIFEST};

impl Registry {
    /// Stores manifest `bytes` (whose digest is `digest`) by digest; true when the registry
    /// answered `OCI-Subject: <subject>`, i.e. it indexed the subject itself and no referrers
    /// tag is needed.
    pub async fn put_referrer(
        &self,
        repo: &str,
        digest: &Digest,
        subject: &Digest,
        bytes: &[u8],
    ) -> Result<bool> {
        let path = format!("/v2/{repo}/manifests/{digest}");
        let resp = self
            .send(
                Method::PUT,
                &path,
                &format!("repository:{repo}:pull,push"),
                &[("content-type", MEDIA_MANIFEST)],
                &Payload::Bytes(bytes),
            )
            .await?;
        let indexed = resp
            .headers()
            .get("oci-subject")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim() == subject.as_str());
        ok(resp, &self.url(&path)).await?;
        Ok(indexed)
    }

    /// The referrers index of `digest` from the referrers API, at most `limit` bytes; `None`
    /// when the registry has no such API (it answers 404, as the spec says such a registry
    /// does, or 405).
    pub async fn referrers_api(
        &self,
        repo: &str,
        digest: &Digest,
        limit: u64,
    ) -> Result<Option<Vec<u8>>> {
        let path = format!("/v2/{repo}/referrers/{digest}");
        self.get_if_exists(&path, repo, MEDIA_INDEX, limit, "a referrers index")
            .await
    }

    /// The image index tagged `tag`, at most `limit` bytes; `None` when there is no such tag.
    pub async fn index_if_exists(
        &self,
        repo: &str,
        tag: &str,
        limit: u64,
    ) -> Result<Option<Vec<u8>>> {
        let path = format!("/v2/{repo}/manifests/{tag}");
        self.get_if_exists(&path, repo, MEDIA_INDEX, limit, "a referrers index")
            .await
    }

    /// A GET of `path` in `repo` that answers `None` on 404 (and 405: no such endpoint).
    async fn get_if_exists(
        &self,
        path: &str,
        repo: &str,
        accept: &str,
        limit: u64,
        what: &'static str,
    ) -> Result<Option<Vec<u8>>> {
        let resp = self
            .send(
                Method::GET,
                path,
                &format!("repository:{repo}:pull"),
                &[("accept", accept)],
                &Payload::Empty,
            )
            .await?;
        if matches!(
            resp.status(),
            StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED
        ) {
            return Ok(None);
        }
        let resp = ok(resp, &self.url(path)).await?;
        Ok(Some(read_capped(resp, limit, what).await?))
    }
}
