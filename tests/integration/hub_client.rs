//! The Hub client as a library, where the CLI cannot reach: a missing file's typed error, and
//! the token staying on the endpoint's origin across a redirect.

use hub_emulator::{FileSpec, Host, HubEmulator, Kind, Repo};
use modelbake::hub::{Endpoint, HubClient, HubConfig, HubError, RetryPolicy, Token};
use modelbake::repo::{RepoId, RepoKind};

fn client(hub: &HubEmulator, token: Option<&str>) -> HubClient {
    HubClient::new(HubConfig {
        endpoint: Endpoint::parse(&hub.endpoint()).unwrap(),
        token: token.map(|t| Token::new(t, "test")),
        retry: RetryPolicy {
            base: std::time::Duration::from_millis(1),
            ..RetryPolicy::default()
        },
    })
    .unwrap()
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn missing_file_is_entry_not_found() {
    let hub = crate::support::emulator();
    let c = client(&hub, None);
    let id = RepoId::parse("acme/tiny").unwrap();
    let commit = hub.commit_of(Kind::Model, "acme/tiny", "main").unwrap();
    let err = rt()
        .block_on(c.hash_file(RepoKind::Model, &id, &commit, "missing.json", 1))
        .unwrap_err();
    assert!(matches!(err, HubError::EntryNotFound { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("file `missing.json` was not found in model `acme/tiny`"),
        "{msg}"
    );
    assert!(msg.contains("modelbake lock --update acme/tiny"), "{msg}");
}

#[test]
fn token_reaches_the_hub_but_not_the_cdn_redirect() {
    let hub = HubEmulator::builder()
        .repo(Repo::model("acme/x").commit(
            "main",
            vec![FileSpec::lfs("w.bin", "weights".as_bytes().to_vec())],
        ))
        .start()
        .unwrap();
    let c = client(&hub, Some("hf_tok"));
    let id = RepoId::parse("acme/x").unwrap();
    let commit = hub.commit_of(Kind::Model, "acme/x", "main").unwrap();
    let digests = rt()
        .block_on(c.hash_file(RepoKind::Model, &id, &commit, "w.bin", 7))
        .unwrap();
    assert_eq!(digests.len, 7);
    let requests = hub.requests();
    let hub_req = requests.iter().find(|r| r.host == Host::Hub).unwrap();
    assert_eq!(hub_req.authorization.as_deref(), Some("Bearer hf_tok"));
    let cdn_req = requests
        .iter()
        .find(|r| r.host == Host::Cdn)
        .expect("followed the 302 to the CDN");
    assert_eq!(cdn_req.authorization, None);
}

#[test]
fn listing_and_revision_resolution() {
    let hub = crate::support::emulator();
    let c = client(&hub, None);
    let id = RepoId::parse("acme/tiny").unwrap();
    let rt = rt();
    let pr = rt
        .block_on(c.resolve_revision(RepoKind::Model, &id, "refs/pr/1"))
        .unwrap();
    assert_eq!(
        Some(pr.clone()),
        hub.commit_of(Kind::Model, "acme/tiny", "refs/pr/1")
    );
    let tree = rt.block_on(c.list_tree(RepoKind::Model, &id, &pr)).unwrap();
    let files: Vec<_> = tree
        .iter()
        .filter(|e| e.is_file())
        .map(|e| e.path.as_str())
        .collect();
    assert!(files.contains(&"sub/dir/nested.txt"));
    // The emulator lists folders too, as the Hub does; the client keeps files only (as
    // huggingface_hub does), so a listing costs memory per file alone.
    assert!(
        tree.iter().all(|e| e.is_file()),
        "list_tree keeps files only"
    );
    let url = c
        .endpoint_url(&format!("/api/models/acme/tiny/tree/{pr}?recursive=true"))
        .unwrap();
    let ctx = c.repo_ctx(RepoKind::Model, &id, &pr);
    let wire: serde_json::Value = rt
        .block_on(c.fetch_json(&url, None, &ctx, "a tree page", 1 << 20))
        .unwrap();
    assert!(
        wire.as_array()
            .unwrap()
            .iter()
            .any(|e| e["type"] == "directory" && e["path"] == "sub/dir"),
        "the emulator lists folders: {wire}"
    );
}
