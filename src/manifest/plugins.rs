//! `[plugins.NAME]` tables: where each WebAssembly plugin comes from (a path beside the
//! manifest or an https URL), an optional expected sha256, and its configuration table.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use schemars::JsonSchema;
use serde::Deserialize;
use toml::Spanned;
use url::Url;

use super::SourceError;
use crate::hash::is_lower_hex;

/// One `[plugins.NAME]` table as written.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PluginDoc {
    /// The component file (`.wasm`), relative to the manifest's folder.
    #[schemars(with = "Option<String>")]
    pub path: Option<Spanned<String>>,
    /// Or an `https://` URL to download it from (plain `http://` only for loopback hosts).
    #[schemars(with = "Option<String>")]
    pub url: Option<Spanned<String>>,
    /// The component's expected sha256; optional, since models.lock pins it anyway.
    #[schemars(with = "Option<String>")]
    pub sha256: Option<Spanned<String>>,
    /// The plugin's configuration, passed to it on every call (never put secrets here).
    #[schemars(with = "Option<serde_json::Map<String, serde_json::Value>>")]
    pub config: Option<toml::Table>,
}

/// Where a plugin's bytes come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PluginSource {
    /// A local file.
    Path {
        /// Resolved against the manifest's folder.
        path: PathBuf,
        /// As written in the manifest (recorded in the lock, so it does not depend on where
        /// the project is checked out).
        written: String,
    },
    /// A download URL.
    Url(Url),
}

impl PluginSource {
    /// The source as recorded in models.lock.
    pub fn as_lock_string(&self) -> String {
        match self {
            PluginSource::Path { written, .. } => written.clone(),
            PluginSource::Url(u) => u.to_string(),
        }
    }
}

/// A declared plugin, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct PluginSpec {
    /// Its name (the `NAME` of `[plugins.NAME]`).
    pub name: String,
    /// Where its bytes come from.
    pub source: PluginSource,
    /// The sha256 the manifest requires, if any.
    pub sha256: Option<String>,
    /// Its configuration table.
    pub config: toml::Table,
}

/// The one rule for URLs that code is downloaded from or a credential is bound to (plugin
/// URLs, redirects of plugin downloads, `[mirror.credentials]` origins): `https://`, or plain
/// `http://` to a loopback host (tests, local mirrors).
pub fn is_https_or_loopback_http(url: &Url) -> bool {
    url.scheme() == "https" || (url.scheme() == "http" && is_loopback(url))
}

/// True when `url`'s host is a loopback host, where plain http is acceptable.
fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d == "localhost",
        None => false,
    }
}

/// Validates every `[plugins.NAME]` table.
pub(super) fn specs(
    path: &Path,
    text: &str,
    docs: BTreeMap<String, PluginDoc>,
) -> Result<BTreeMap<String, PluginSpec>, SourceError> {
    let base = path.parent().unwrap_or(Path::new("."));
    let mut out = BTreeMap::new();
    for (name, doc) in docs {
        let plain = |m: String| SourceError::at(path, text, None, format!("[plugins.{name}]: {m}"));
        if name.is_empty()
            || name.len() > 64
            || !name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
        {
            return Err(plain(
                "plugin names use lowercase letters, digits, `-` and `_` (at most 64)".into(),
            ));
        }
        let source = match (doc.path, doc.url) {
            (Some(p), None) => {
                let written = p.get_ref().clone();
                if written.trim().is_empty() {
                    return Err(SourceError::at(
                        path,
                        text,
                        Some(p.span()),
                        "empty plugin path",
                    ));
                }
                PluginSource::Path {
                    path: base.join(&written),
                    written,
                }
            }
            (None, Some(u)) => {
                let url = Url::parse(u.get_ref()).map_err(|e| {
                    SourceError::at(path, text, Some(u.span()), format!("not a URL: {e}"))
                })?;
                if !is_https_or_loopback_http(&url) {
                    return Err(SourceError::at(
                        path,
                        text,
                        Some(u.span()),
                        "plugin URLs must use https:// (plain http:// only for localhost)",
                    ));
                }
                PluginSource::Url(url)
            }
            (Some(_), Some(_)) => return Err(plain("set either `path` or `url`, not both".into())),
            (None, None) => {
                return Err(plain(
                    "set `path = \"plugins/NAME.wasm\"` (relative to this file) or `url = \"https://…\"`"
                        .into(),
                ));
            }
        };
        let sha256 = match doc.sha256 {
            Some(s) if !is_lower_hex(s.get_ref(), 64) => {
                return Err(SourceError::at(
                    path,
                    text,
                    Some(s.span()),
                    "sha256 must be 64 lowercase hex characters",
                ));
            }
            other => other.map(Spanned::into_inner),
        };
        out.insert(
            name.clone(),
            PluginSpec {
                name,
                source,
                sha256,
                config: doc.config.unwrap_or_default(),
            },
        );
    }
    Ok(out)
}

/// Checks that a name used in `policy = [...]` or `[mirror] use` is declared.
pub(super) fn known(
    path: &Path,
    text: &str,
    plugins: &BTreeMap<String, PluginSpec>,
    item: Spanned<String>,
) -> Result<String, SourceError> {
    if plugins.contains_key(item.get_ref()) {
        return Ok(item.into_inner());
    }
    let declared = if plugins.is_empty() {
        "none are declared".to_owned()
    } else {
        format!(
            "declared: {}",
            plugins.keys().cloned().collect::<Vec<_>>().join(", ")
        )
    };
    Err(SourceError::at(
        path,
        text,
        Some(item.span()),
        format!(
            "no plugin named `{}` ({declared}); add a [plugins.{}] table with its `path` or `url`",
            item.get_ref(),
            item.get_ref()
        ),
    ))
}

/// Validates `[mirror.credentials]`: each name bound to one https origin (http only for
/// loopback), written without a path.
pub(super) fn credentials(
    path: &Path,
    text: &str,
    raw: BTreeMap<String, Spanned<String>>,
) -> Result<BTreeMap<String, url::Origin>, SourceError> {
    let mut out = BTreeMap::new();
    for (name, value) in raw {
        let at = |m: String| SourceError::at(path, text, Some(value.span()), m);
        let url = Url::parse(value.get_ref())
            .map_err(|e| at(format!("credential `{name}`: not a URL ({e})")))?;
        if !is_https_or_loopback_http(&url) || url.host().is_none() {
            return Err(at(format!(
                "credential `{name}` may only be bound to an https:// origin (http:// only for localhost)"
            )));
        }
        if !matches!(url.path(), "" | "/") || url.query().is_some() {
            return Err(at(format!(
                "credential `{name}`: give only the origin, e.g. `https://{}`",
                url.host_str().unwrap_or("host")
            )));
        }
        out.insert(name, url.origin());
    }
    Ok(out)
}
