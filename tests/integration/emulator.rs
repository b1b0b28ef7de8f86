//! The emulator's own contract (docs/hub-protocol.md §6), checked on the wire with a plain HTTP
//! client, so that tests built on it test against Hub behaviour and not emulator quirks.

use std::time::{Duration, Instant};

use hub_emulator::{Fault, FaultAction, Host, Kind};
use reqwest::StatusCode;
use reqwest::header::{CONTENT_LENGTH, CONTENT_RANGE, LOCATION};

use crate::support::emulator;

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

fn block<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

fn json(bytes: &[u8]) -> serde_json::Value {
    serde_json::from_slice(bytes).expect("JSON body")
}

fn header(r: &reqwest::Response, name: impl reqwest::header::AsHeaderName) -> String {
    r.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

#[test]
fn resolve_follows_the_hub_redirect_contract() {
    let hub = emulator();
    let base = hub.endpoint();
    let commit = hub.commit_of(Kind::Model, "acme/tiny", "main").unwrap();
    let lfs = hub
        .files_at(Kind::Model, "acme/tiny", "main")
        .into_iter()
        .find(|f| f.path == "model.safetensors")
        .unwrap();
    block(async {
        let c = client();
        // Regular file: relative 307 to resolve-cache, which serves the bytes with ETag = git sha1.
        let r = c
            .head(format!("{base}/acme/tiny/resolve/main/config.json"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::TEMPORARY_REDIRECT);
        let location = header(&r, LOCATION);
        assert!(
            location.starts_with(&format!(
                "/api/resolve-cache/models/acme/tiny/{commit}/config.json"
            )),
            "{location}"
        );
        // Clients before 2.x drop the query of a relative redirect: it must still work.
        let path_only = location.split('?').next().unwrap();
        let r = c.head(format!("{base}{path_only}")).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(header(&r, "x-repo-commit"), commit);
        assert_eq!(
            header(&r, "etag"),
            format!("\"{}\"", crate::support::CONFIG_JSON_GIT_SHA1)
        );
        assert_eq!(
            header(&r, CONTENT_LENGTH),
            crate::support::CONFIG_JSON.len().to_string()
        );
        let r = c
            .get(format!("{base}{path_only}"))
            .header("range", "bytes=0-0")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
        assert_eq!(
            header(&r, CONTENT_RANGE),
            format!("bytes 0-0/{}", crate::support::CONFIG_JSON.len())
        );
        assert_eq!(r.bytes().await.unwrap().as_ref(), b"{");

        // LFS file: 302 to the CDN on another host, with the linked metadata on the 302.
        let r = c
            .head(format!(
                "{base}/acme/tiny/resolve/{commit}/model.safetensors"
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::FOUND);
        assert_eq!(header(&r, "x-linked-etag"), format!("\"{}\"", lfs.sha256));
        assert_eq!(header(&r, "x-linked-size"), lfs.size.to_string());
        assert_eq!(header(&r, "x-repo-commit"), commit);
        assert!(r.headers().get("x-xet-hash").is_none());
        let cdn = header(&r, LOCATION);
        let cdn_url = reqwest::Url::parse(&cdn).unwrap();
        assert_ne!(
            cdn_url.host_str(),
            reqwest::Url::parse(&base).unwrap().host_str(),
            "the CDN is another host"
        );
        let r = c
            .get(&cdn)
            .header("range", "bytes=299990-")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
        assert_eq!(header(&r, CONTENT_RANGE), "bytes 299990-299999/300000");
        assert_eq!(r.bytes().await.unwrap().len(), 10);
        let r = c
            .get(&cdn)
            .header("range", "bytes=300000-")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE);

        // Errors are typed.
        let r = c
            .head(format!("{base}/acme/tiny/resolve/main/missing.json"))
            .send()
            .await
            .unwrap();
        assert_eq!(
            (r.status(), header(&r, "x-error-code")),
            (StatusCode::NOT_FOUND, "EntryNotFound".into())
        );
        assert_eq!(header(&r, "x-repo-commit"), commit);
        let r = c
            .get(format!("{base}/api/models/acme/tiny/revision/nope"))
            .send()
            .await
            .unwrap();
        assert_eq!(header(&r, "x-error-code"), "RevisionNotFound");
        let r = c
            .get(format!("{base}/api/models/acme/none"))
            .send()
            .await
            .unwrap();
        assert_eq!(header(&r, "x-error-code"), "RepoNotFound");
    });
    assert!(
        hub.requests()
            .iter()
            .any(|r| r.host == Host::Cdn && r.range.as_deref() == Some("bytes=299990-"))
    );
}

#[test]
fn api_endpoints_answer_like_the_hub() {
    let hub = emulator();
    let base = hub.endpoint();
    block(async {
        let c = client();
        let info: serde_json::Value = c
            .get(format!("{base}/api/models/acme/tiny?blobs=true"))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .map(|b| json(&b))
            .unwrap();
        assert_eq!(info["id"], "acme/tiny");
        let lfs = info["siblings"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["rfilename"] == "model.safetensors")
            .unwrap();
        assert_eq!(lfs["lfs"]["size"], 300_000);
        assert!(lfs["blobId"].is_string());

        let top: serde_json::Value = c
            .get(format!(
                "{base}/api/models/acme/tiny/tree/main?recursive=false"
            ))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .map(|b| json(&b))
            .unwrap();
        let names: Vec<&str> = top
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["path"].as_str().unwrap())
            .collect();
        assert!(
            names.contains(&"sub") && !names.contains(&"sub/dir/nested.txt"),
            "{names:?}"
        );
        let nested: serde_json::Value = c
            .get(format!("{base}/api/models/acme/tiny/tree/main/sub%2Fdir"))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .map(|b| json(&b))
            .unwrap();
        assert_eq!(nested[0]["path"], "sub/dir/nested.txt");
        let r = c
            .get(format!("{base}/api/models/acme/tiny/tree/main/nope"))
            .send()
            .await
            .unwrap();
        assert_eq!(
            (r.status(), header(&r, "x-error-code")),
            (StatusCode::NOT_FOUND, "EntryNotFound".into())
        );

        let form: serde_json::Value = c
            .post(format!("{base}/api/models/acme/tiny/paths-info/main"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body("paths=config.json&paths=sub&paths=missing&expand=false")
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .map(|b| json(&b))
            .unwrap();
        assert_eq!(form.as_array().unwrap().len(), 2);
        let json: serde_json::Value = c
            .post(format!("{base}/api/models/acme/tiny/paths-info/main"))
            .header("content-type", "application/json")
            .body(serde_json::json!({"paths": ["model.safetensors"], "expand": false}).to_string())
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .map(|b| json(&b))
            .unwrap();
        assert!(json[0]["lfs"]["oid"].is_string());
    });
}

#[test]
fn faults_apply_to_chosen_requests_only() {
    let hub = emulator();
    let base = hub.endpoint();
    hub.inject(
        Fault::on("/revision/")
            .action(FaultAction::Delay(Duration::from_millis(300)))
            .times(1),
    );
    hub.inject(
        Fault::on("/api/models/acme/tiny/tree/")
            .status(503)
            .times(1),
    );
    block(async {
        let c = client();
        let t = Instant::now();
        let r = c
            .get(format!("{base}/api/models/acme/tiny/revision/main"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert!(t.elapsed() >= Duration::from_millis(300));
        let r = c
            .get(format!("{base}/api/models/acme/tiny/tree/main"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        let r = c
            .get(format!("{base}/api/models/acme/tiny/tree/main"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "times(1) is used up");
    });
}
