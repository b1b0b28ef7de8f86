//! The one place that builds HTTP clients, so the Hub, mirrors, registries and plugin downloads
//! trust the same certificates and go through the same proxies:
//!
//! - trust: the bundled Mozilla roots, the operating system's store (or `SSL_CERT_FILE` /
//!   `SSL_CERT_DIR` in its place, as OpenSSL reads them) and `REQUESTS_CA_BUNDLE`
//!   ([`trust`]); a registry client also trusts its host's `certs.d` CAs and presents the
//!   client certificate found there ([`certs_d`]);
//! - proxies: `HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY` and `NO_PROXY` (either case), which
//!   reqwest reads as curl does as long as a builder is never told `no_proxy()`;
//! - the user agent `modelbake/<version>`.
//!
//! Callers add what is theirs (timeouts, redirect policy) in `configure`. The rules and their
//! sources are in docs/tls-and-proxies.md.

mod certs_d;
mod trust;

pub use certs_d::cert_dirs;

/// The `User-Agent` of every request.
pub const USER_AGENT: &str = concat!("modelbake/", env!("CARGO_PKG_VERSION"));

/// A client could not be set up: unreadable or inconsistent certificate files, or a
/// certificate reqwest refuses. The message names the file and what to do.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ClientError(String);

/// A client for the Hub, mirrors and plugin downloads: the shared trust and proxies, plus what
/// `configure` adds.
pub fn client(
    configure: impl FnOnce(reqwest::ClientBuilder) -> reqwest::ClientBuilder,
) -> Result<reqwest::Client, ClientError> {
    build(configure(base()))
}

/// A client for the registry `host` (`host[:port]` as written in image references): the shared
/// trust and proxies, plus the CAs and the client certificate of `host` in the first `certs.d`
/// tree of [`cert_dirs`] that has a folder for it, plus what `configure` adds.
pub fn registry_client(
    host: &str,
    configure: impl FnOnce(reqwest::ClientBuilder) -> reqwest::ClientBuilder,
) -> Result<reqwest::Client, ClientError> {
    let dirs = cert_dirs(&crate::env::process_env);
    let mut builder = base();
    if let Some(own) = certs_d::for_host(&dirs, host)? {
        tracing::debug!("{host}: certificates from {}", own.folder.display());
        for ca in own.cas {
            builder = builder.add_root_certificate(ca);
        }
        if let Some(identity) = own.identity {
            builder = builder.identity(identity);
        }
    }
    build(configure(builder))
}

/// The builder every client starts from.
fn base() -> reqwest::ClientBuilder {
    let mut builder = reqwest::Client::builder().user_agent(USER_AGENT);
    for root in trust::global_roots() {
        builder = builder.add_root_certificate(root.clone());
    }
    builder
}

fn build(builder: reqwest::ClientBuilder) -> Result<reqwest::Client, ClientError> {
    builder.build().map_err(|e| {
        ClientError(format!(
            "cannot set up the HTTP client: {}",
            crate::redact::error_chain(&e)
        ))
    })
}
