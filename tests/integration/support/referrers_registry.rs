//! A registry with the OCI 1.1 referrers API, for the tests: the real Distribution registry
//! behind a proxy of ours that does what the distribution spec asks of a registry with the API
//! (Debian's Distribution 2.8 has none). A manifest pushed with a `subject` is forwarded, and
//! when Distribution stored it the proxy indexes it and answers `OCI-Subject: <digest>`;
//! `GET /v2/<name>/referrers/<digest>` answers an image index of the manifests indexed for that
//! subject (filtered by `?artifactType=` with `OCI-Filters-Applied`). Everything else is
//! forwarded as it is, the `Host` header included, so Distribution's upload locations point
//! back at the proxy.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use sha2::{Digest as _, Sha256};

/// Per `repository`, per subject digest: the descriptors of its referrers.
type Index = BTreeMap<(String, String), Vec<serde_json::Value>>;

/// The proxy; it stops when dropped (its runtime with it).
pub struct ReferrersRegistry {
    /// `127.0.0.1:PORT`.
    pub addr: String,
    index: Arc<Mutex<Index>>,
    _rt: tokio::runtime::Runtime,
}

impl ReferrersRegistry {
    /// A proxy on a free port in front of the registry at `upstream` (`127.0.0.1:PORT`).
    pub fn start(upstream: &str) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let index: Arc<Mutex<Index>> = Arc::default();
        let (idx, up) = (index.clone(), format!("http://{upstream}"));
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        rt.spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (idx, up, client) = (idx.clone(), up.clone(), client.clone());
                tokio::spawn(async move {
                    let service =
                        service_fn(move |req| handle(req, idx.clone(), up.clone(), client.clone()));
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        ReferrersRegistry {
            addr,
            index,
            _rt: rt,
        }
    }

    /// How many referrers the proxy indexed in all.
    pub fn indexed(&self) -> usize {
        self.index.lock().unwrap().values().map(Vec::len).sum()
    }
}

async fn handle(
    req: Request<Incoming>,
    index: Arc<Mutex<Index>>,
    upstream: String,
    client: reqwest::Client,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_owned();
    let query = req.uri().query().map(str::to_owned);
    if req.method() == hyper::Method::GET
        && let Some((repo, digest)) = path
            .strip_prefix("/v2/")
            .and_then(|p| p.split_once("/referrers/"))
    {
        return Ok(referrers(&index, repo, digest, query.as_deref()));
    }
    let method = reqwest::Method::from_bytes(req.method().as_str().as_bytes()).unwrap();
    let headers = req.headers().clone();
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let url = match &query {
        Some(q) => format!("{upstream}{path}?{q}"),
        None => format!("{upstream}{path}"),
    };
    let mut out = client.request(method.clone(), url).body(body.clone());
    for (k, v) in &headers {
        out = out.header(k.as_str(), v.as_bytes());
    }
    let Ok(resp) = out.send().await else {
        return Ok(Response::builder()
            .status(502)
            .body(Full::default())
            .unwrap());
    };
    let mut answer = Response::builder().status(resp.status().as_u16());
    for (k, v) in resp.headers() {
        answer = answer.header(k.as_str(), v.as_bytes());
    }
    let stored = resp.status().is_success();
    let reply = resp.bytes().await.unwrap_or_default();
    if method == reqwest::Method::PUT
        && stored
        && let Some(repo) = path
            .strip_prefix("/v2/")
            .and_then(|p| p.split_once("/manifests/"))
        && let Ok(manifest) = serde_json::from_slice::<serde_json::Value>(&body)
        && let Some(subject) = manifest["subject"]["digest"].as_str()
    {
        let digest = format!("sha256:{}", hex::encode(Sha256::digest(&body)));
        let mut desc = serde_json::json!({
            "mediaType": manifest["mediaType"],
            "digest": digest,
            "size": body.len(),
        });
        if let Some(t) = manifest.get("artifactType") {
            desc["artifactType"] = t.clone();
        }
        if let Some(a) = manifest.get("annotations") {
            desc["annotations"] = a.clone();
        }
        let mut idx = index.lock().unwrap();
        let list = idx
            .entry((repo.0.to_owned(), subject.to_owned()))
            .or_default();
        if !list.iter().any(|d| d["digest"] == digest) {
            list.push(desc);
        }
        answer = answer.header("OCI-Subject", subject);
    }
    Ok(answer.body(Full::new(reply)).unwrap())
}

/// The referrers index of `digest` in `repo`.
fn referrers(
    index: &Mutex<Index>,
    repo: &str,
    digest: &str,
    query: Option<&str>,
) -> Response<Full<Bytes>> {
    let wanted = query
        .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("artifactType=")))
        .map(|t| t.replace("%2B", "+").replace("%2F", "/"));
    let list: Vec<serde_json::Value> = index
        .lock()
        .unwrap()
        .get(&(repo.to_owned(), digest.to_owned()))
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|d| wanted.as_deref().is_none_or(|w| d["artifactType"] == w))
        .collect();
    let body = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": list,
    });
    let mut r = Response::builder()
        .status(200)
        .header("content-type", "application/vnd.oci.image.index.v1+json");
    if wanted.is_some() {
        r = r.header("OCI-Filters-Applied", "artifactType");
    }
    r.body(Full::new(Bytes::from(body.to_string()))).unwrap()
}
