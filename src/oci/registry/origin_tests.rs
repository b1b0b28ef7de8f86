//! Hostile review (issue 23): registry credentials go to the registry's own origin and to the
//! token realm the registry itself names, nowhere else. An upload `Location` or a blob redirect
//! on another origin that answers `401` with a realm of its own gets nothing, and a token such
//! a realm would mint never reaches the registry.

use std::sync::{Arc, Mutex};

use http_body_util::Full;
use hyper::{Request, Response, StatusCode};

use super::*;
use crate::oci::credentials::Secret;

/// One request a fake server saw: method, path and query, `Authorization`.
type Seen = Arc<Mutex<Vec<(String, String, Option<String>)>>>;

/// How a fake server answers: from the method, path and query, and `Authorization`.
type Answer = dyn Fn(&str, &str, Option<&str>) -> Response<Full<bytes::Bytes>> + Send + Sync;

/// A server on its own port that records every request and answers with `answer`.
async fn server(answer: Arc<Answer>) -> (String, Seen) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let seen: Seen = Arc::default();
    let log = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let (answer, log) = (answer.clone(), log.clone());
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                        let (answer, log) = (answer.clone(), log.clone());
                        async move {
                            let method = req.method().to_string();
                            let uri = req.uri().to_string();
                            let auth = req
                                .headers()
                                .get("authorization")
                                .and_then(|v| v.to_str().ok())
                                .map(str::to_owned);
                            log.lock()
                                .unwrap()
                                .push((method.clone(), uri.clone(), auth.clone()));
                            Ok::<_, std::convert::Infallible>(answer(
                                &method,
                                &uri,
                                auth.as_deref(),
                            ))
                        }
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, seen)
}

fn respond(
    status: StatusCode,
    headers: &[(&str, String)],
    body: &str,
) -> Response<Full<bytes::Bytes>> {
    let mut r = Response::builder().status(status);
    for (k, v) in headers {
        r = r.header(*k, v);
    }
    r.body(Full::new(bytes::Bytes::from(body.to_owned())))
        .unwrap()
}

/// The realm the other origin names: it mints `evil-token` for anyone.
async fn evil_realm() -> (String, Seen) {
    server(Arc::new(|_: &str, _: &str, _: Option<&str>| {
        respond(StatusCode::OK, &[], r#"{"token":"evil-token"}"#)
    }))
    .await
}

/// The other origin: every request gets `401` naming `realm` as its token realm.
async fn other_origin(realm: &str) -> (String, Seen) {
    let challenge = format!(r#"Bearer realm="http://{realm}/token",service="elsewhere""#);
    server(Arc::new(move |_: &str, _: &str, _: Option<&str>| {
        respond(
            StatusCode::UNAUTHORIZED,
            &[("www-authenticate", challenge.clone())],
            "",
        )
    }))
    .await
}

const BASIC: &str = "Basic YWxpY2U6cHctc2VjcmV0"; // alice:pw-secret

/// A registry that wants `alice`'s Basic credentials and sends uploads and blob reads to
/// `other`.
async fn registry(other: &str) -> (String, Seen) {
    let other = other.to_owned();
    server(Arc::new(
        move |method: &str, uri: &str, auth: Option<&str>| {
            if auth != Some(BASIC) {
                return respond(
                    StatusCode::UNAUTHORIZED,
                    &[("www-authenticate", r#"Basic realm="registry""#.into())],
                    "",
                );
            }
            match method {
                "POST" if uri.contains("/blobs/uploads/") => respond(
                    StatusCode::ACCEPTED,
                    &[("location", format!("http://{other}/upload/1"))],
                    "",
                ),
                "GET" if uri.contains("/manifests/") => respond(StatusCode::OK, &[], "{}"),
                "GET" if uri.contains("/blobs/") => respond(
                    StatusCode::TEMPORARY_REDIRECT,
                    &[("location", format!("http://{other}/blob"))],
                    "",
                ),
                _ => respond(StatusCode::NOT_FOUND, &[], ""),
            }
        },
    ))
    .await
}

fn client(addr: &str) -> Registry {
    let image = ImageRef::parse(&format!("{addr}/models/app")).unwrap();
    Registry::new(&image, true).unwrap().with_credential(
        Credential::Basic {
            username: "alice".into(),
            password: Secret::new("pw-secret"),
        },
        "a test",
    )
}

/// Nothing reached the realm, and no token but the registry's own credentials reached the
/// registry; the error names the other host and says why nothing was sent.
fn assert_nothing_leaked(e: &RegistryError, other: &str, realm: &Seen, registry: &Seen) {
    assert!(
        realm.lock().unwrap().is_empty(),
        "the other origin's realm was asked: {:?}",
        realm.lock().unwrap()
    );
    for (m, u, a) in registry.lock().unwrap().iter() {
        assert!(
            a.is_none() || a.as_deref() == Some(BASIC),
            "{m} {u} carried {a:?}"
        );
    }
    let msg = e.to_string();
    assert!(
        msg.contains(other) && msg.contains("only"),
        "the error should name {other} and say credentials go only to the registry: {msg}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_location_on_another_origin_gets_no_credentials() {
    let (realm_addr, realm_seen) = evil_realm().await;
    let (other_addr, other_seen) = other_origin(&realm_addr).await;
    let (reg_addr, reg_seen) = registry(&other_addr).await;
    let r = client(&reg_addr);
    let bytes = b"layer bytes";
    let digest = Digest::of(bytes);
    let e = r
        .upload(
            "models/app",
            &digest,
            bytes.len() as u64,
            Payload::Bytes(bytes),
            &|_| {},
        )
        .await
        .expect_err("an upload whose Location asks for other credentials must fail");
    assert_nothing_leaked(&e, &other_addr, &realm_seen, &reg_seen);
    for (m, u, a) in other_seen.lock().unwrap().iter() {
        assert!(a.is_none(), "{m} {u} carried {a:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blob_redirect_to_another_origin_gets_no_credentials() {
    let (realm_addr, realm_seen) = evil_realm().await;
    let (other_addr, other_seen) = other_origin(&realm_addr).await;
    let (reg_addr, reg_seen) = registry(&other_addr).await;
    let r = client(&reg_addr);
    // As a base pull goes: the manifest first (which earns the scope's credentials), then
    // the blob, which the registry redirects.
    r.document("models/app", "v1", 1 << 20).await.unwrap();
    let digest = Digest::of(b"base layer");
    let Err(e) = r.blob_body("models/app", &digest, 10).await else {
        panic!("a redirect whose target asks for other credentials must fail");
    };
    assert_nothing_leaked(&e, &other_addr, &realm_seen, &reg_seen);
    for (m, u, a) in other_seen.lock().unwrap().iter() {
        assert!(a.is_none(), "{m} {u} carried {a:?}");
    }
}
