//! Getting a plugin's bytes: from a file beside the manifest, or downloaded from an https URL
//! (kept in the store by sha256, so later runs work offline), always checked against the
//! sha256 the manifest or the lock requires before anything compiles them.

use std::path::{Path, PathBuf};

use super::{FailureKind, PluginError};
use crate::manifest::{PluginSource, PluginSpec};

/// Largest plugin accepted (real ones are tens of KiB).
const MAX_PLUGIN_BYTES: u64 = 64 << 20;

/// A plugin's bytes and their sha256.
pub struct PluginBytes {
    /// The component.
    pub bytes: Vec<u8>,
    /// Hex sha256 of `bytes`.
    pub sha256: String,
}

/// Reads or downloads `spec`'s bytes. `pinned` is the sha256 the lock records (checked by
/// every command except `lock` itself, which is where a plugin is allowed to change).
/// Downloads are kept under `store_plugins/sources/<sha256>.wasm`.
pub async fn obtain(
    spec: &PluginSpec,
    pinned: Option<&str>,
    store_plugins: Option<&Path>,
    offline: bool,
) -> Result<PluginBytes, PluginError> {
    let fail = |m: String| PluginError::new(&spec.name, FailureKind::Unavailable, m);
    let expected = spec.sha256.as_deref().or(pinned);
    let bytes = match &spec.source {
        PluginSource::Path { path, .. } => std::fs::read(path).map_err(|e| {
            fail(format!(
                "cannot read {}: {e}; build it with `modelbake plugin build` or fix `path` in [plugins.{}]",
                path.display(),
                spec.name
            ))
        })?,
        PluginSource::Url(url) => {
            let kept = |sha: &str| store_plugins.map(|d| sources_dir(d).join(format!("{sha}.wasm")));
            match expected.and_then(kept).filter(|p| p.is_file()) {
                Some(path) => std::fs::read(&path)
                    .map_err(|e| fail(format!("cannot read {}: {e}", path.display())))?,
                None if offline => {
                    return Err(fail(format!(
                        "--offline: {url} has not been downloaded yet; run once with network access"
                    )));
                }
                None => download(url).await.map_err(|e| fail(e.to_string()))?,
            }
        }
    };
    let sha256 = crate::hash::sha256_hex(&bytes);
    if let Some(want) = &spec.sha256
        && *want != sha256
    {
        return Err(PluginError::new(
            &spec.name,
            FailureKind::Stale,
            format!(
                "its bytes have sha256 {sha256}, but [plugins.{}] requires {want}; the file changed or \
             the download was tampered with",
                spec.name
            ),
        ));
    }
    check_pin(spec, &sha256, pinned)?;
    if let (PluginSource::Url(_), Some(dir)) = (&spec.source, store_plugins) {
        let dest = sources_dir(dir).join(format!("{sha256}.wasm"));
        if !dest.is_file() {
            let _ = std::fs::create_dir_all(sources_dir(dir)).and_then(|()| {
                crate::fs_atomic::write_atomic(&dest, &bytes, crate::fs_atomic::Mode::KeepExisting)
            });
        }
    }
    Ok(PluginBytes { bytes, sha256 })
}

/// Fails unless `sha256` is the one the lock pins (`pinned`), if it pins one.
pub fn check_pin(spec: &PluginSpec, sha256: &str, pinned: Option<&str>) -> Result<(), PluginError> {
    match pinned {
        Some(want) if want != sha256 => Err(PluginError::new(
            &spec.name,
            FailureKind::Stale,
            format!(
                "changed since models.lock was written (sha256 {sha256}, the lock pins {want}); \
                 run `modelbake lock --update {}` to accept the new plugin, and commit the lock",
                spec.name
            ),
        )),
        _ => Ok(()),
    }
}

fn sources_dir(store_plugins: &Path) -> PathBuf {
    store_plugins.join("sources")
}

/// Why a plugin could not be downloaded (its message becomes the plugin error's).
#[derive(Debug, thiserror::Error)]
enum DownloadError {
    /// The HTTP client could not be set up.
    #[error(transparent)]
    Client(#[from] crate::http_client::ClientError),
    /// No answer (or a refused redirect).
    #[error("cannot download {url}: {detail}")]
    Send {
        /// The URL, credentials removed.
        url: String,
        /// The transport error chain, credentials removed.
        detail: String,
    },
    /// An error status.
    #[error("cannot download {url}: HTTP {status}")]
    Status {
        /// The URL, credentials removed.
        url: String,
        /// The status.
        status: reqwest::StatusCode,
    },
    /// The body was too large or the connection dropped.
    #[error(transparent)]
    Body(#[from] crate::http_body::BodyError),
}

async fn download(url: &url::Url) -> Result<Vec<u8>, DownloadError> {
    // Redirects may not leave https (plain http only between loopback hosts).
    let policy = reqwest::redirect::Policy::custom(|attempt| {
        if attempt.previous().len() > 10 {
            attempt.error("too many redirects")
        } else if crate::manifest::is_https_or_loopback_http(attempt.url()) {
            attempt.follow()
        } else {
            let to = crate::redact::url_str(attempt.url().as_str());
            attempt.error(format!(
                "refusing a redirect to {to}: plugins are only downloaded over https"
            ))
        }
    });
    let client = crate::http_client::client(|b| {
        b.redirect(policy)
            .timeout(std::time::Duration::from_secs(120))
    })?;
    let shown = crate::redact::url_str(url.as_str());
    let resp = client
        .get(url.clone())
        .send()
        .await
        .map_err(|e| DownloadError::Send {
            url: shown.clone(),
            detail: crate::redact::error_chain(&e),
        })?;
    if !resp.status().is_success() {
        return Err(DownloadError::Status {
            url: shown,
            status: resp.status(),
        });
    }
    Ok(crate::http_body::read_capped(resp, MAX_PLUGIN_BYTES, "a plugin").await?)
}
