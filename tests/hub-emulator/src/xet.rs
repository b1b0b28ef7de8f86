//! Xet mode: the Hub's side of Xet storage (docs/hub-protocol.md §8) and a CAS front.
//!
//! When enabled, LFS files whose sha256 has a registered Xet file hash are announced the way
//! the Hub does (`X-Xet-Hash` and the `Link` relations on `resolve`, `xetHash` in listings),
//! the read-token route issues short-lived tokens, and a third listener fronts a real CAS (the
//! reference `local_cas_server`): it checks the CAS token on the reconstruction routes (the
//! reference server checks none), logs every request like the other listeners, applies the
//! fault rules, and counts the body bytes of xorb ranges it served, so tests can prove what a
//! client downloaded and which credentials reached the CAS.

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{BodyExt, Empty, StreamBody};
use hyper::body::Frame;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

/// A CAS read token the emulator issued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedToken {
    /// The bearer token.
    pub token: String,
    /// Unix seconds after which the CAS front refuses it.
    pub expires: u64,
    /// `models/acme/x`-style repo path the token was asked for.
    pub repo: String,
    /// The revision segment of the token request.
    pub rev: String,
}

/// Xet settings and bookkeeping, shared by the Hub and CAS listeners.
#[derive(Debug, Default)]
pub(crate) struct XetState {
    /// `http://host:port` of the real CAS the front forwards to; `None`: Xet mode off.
    pub upstream: Option<String>,
    /// Xet file hash by sha256, for LFS files.
    pub hashes: HashMap<String, String>,
    /// Lifetime of issued tokens.
    pub lifetime: Duration,
    /// Every token issued, in order.
    pub tokens: Vec<IssuedToken>,
}

impl XetState {
    /// The Xet hash of an LFS file while Xet mode is on.
    pub fn hash_of(&self, sha256: &str) -> Option<&str> {
        self.upstream.as_ref()?;
        self.hashes.get(sha256).map(String::as_str)
    }

    /// Issues a new token for `repo`/`rev`.
    pub fn issue(&mut self, repo: &str, rev: &str) -> IssuedToken {
        let now = unix_now();
        let token = IssuedToken {
            token: {
                use sha2::Digest;
                let nanos = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_nanos())
                    .unwrap_or(0);
                let n = self.tokens.len() + 1;
                let digest = sha2::Sha256::digest(format!("{repo}@{rev}#{n}/{nanos}"));
                format!("xet-read-{n}-{}", hex::encode(&digest[..12]))
            },
            expires: now + self.lifetime.as_secs(),
            repo: repo.to_owned(),
            rev: rev.to_owned(),
        };
        self.tokens.push(token.clone());
        token
    }

    /// Whether `authorization` carries a token issued here that has not expired.
    pub fn accepts(&self, authorization: Option<&str>) -> bool {
        let Some(token) = authorization.and_then(|a| a.strip_prefix("Bearer ")) else {
            return false;
        };
        let now = unix_now();
        self.tokens
            .iter()
            .any(|t| t.token == token.trim() && t.expires > now)
    }
}

/// Seconds since the epoch.
pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Whether a CAS path needs the CAS token (the reconstruction and file-info routes; xorb
/// ranges are fetched from presigned URLs that carry none).
pub(crate) fn needs_token(path: &str) -> bool {
    ["/v1/reconstructions", "/v2/reconstructions", "/v1/files/"]
        .iter()
        .any(|p| path.starts_with(p))
}

/// Whether a CAS path serves xorb bytes (counted in [`CasCounter`]).
pub(crate) fn is_xorb_range(path: &str) -> bool {
    path.starts_with("/v1/fetch_term") || path.starts_with("/v1/xorbs/")
}

/// Body bytes of xorb ranges the CAS front served.
#[derive(Debug, Default)]
pub(crate) struct CasCounter(pub AtomicU64);

pub(crate) type Body = http_body_util::combinators::BoxBody<Bytes, io::Error>;

/// Forwards a GET/HEAD to the real CAS, keeping the client's `Host` (the reference server
/// writes it into the fetch URLs it returns, so they point back at this front) and `Range`,
/// and dropping `Authorization`. Counts xorb-range body bytes into `counter`.
pub(crate) async fn forward(
    upstream: &str,
    method: &hyper::Method,
    path_and_query: &str,
    host_header: &str,
    range: Option<&str>,
    count: Option<std::sync::Arc<crate::State>>,
) -> io::Result<Response<Body>> {
    let authority = upstream
        .strip_prefix("http://")
        .unwrap_or(upstream)
        .trim_end_matches('/');
    let stream = tokio::net::TcpStream::connect(authority).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(io::Error::other)?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut req = Request::builder()
        .method(method.clone())
        .uri(path_and_query)
        .header("host", host_header);
    if let Some(r) = range {
        req = req.header("range", r);
    }
    let req = req.body(Empty::<Bytes>::new()).map_err(io::Error::other)?;
    let resp = sender.send_request(req).await.map_err(io::Error::other)?;
    let (parts, body) = resp.into_parts();
    let stream = body.into_data_stream().map(move |chunk| {
        let b = chunk.map_err(io::Error::other)?;
        if let Some(state) = &count {
            state
                .cas_bytes
                .0
                .fetch_add(b.len() as u64, Ordering::Relaxed);
        }
        Ok(Frame::data(b))
    });
    let mut out = Response::builder().status(parts.status);
    for (k, v) in &parts.headers {
        out = out.header(k, v);
    }
    out.body(BodyExt::boxed(StreamBody::new(stream)))
        .map_err(io::Error::other)
}

/// A plain-text error answer of the CAS front.
pub(crate) fn cas_error(status: StatusCode, message: &str) -> Response<Body> {
    let body = http_body_util::Full::new(Bytes::from(message.to_owned()))
        .map_err(|never: std::convert::Infallible| match never {})
        .boxed();
    Response::builder()
        .status(status)
        .header("content-type", "text/plain")
        .body(body)
        .unwrap_or_else(|_| Response::new(BodyExt::boxed(Empty::new().map_err(|n| match n {}))))
}
