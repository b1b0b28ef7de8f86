//! A token service for Distribution's `auth: token` mode, the way Docker Hub, GHCR, GitLab and
//! Harbor authenticate: the registry answers 401 with a Bearer challenge naming this realm; the
//! client asks here (GET with Basic credentials, or an OAuth2 POST with a password or a refresh
//! token) and gets a short-lived JWT listing the granted actions, signed RS256 with a
//! self-signed certificate that the registry trusts through `rootcertbundle` (the `x5c` header
//! carries it). Users have per-repository rights, tokens a configurable lifetime, and every
//! request is logged so tests can count renewals. Signing is done by the `openssl` CLI so the
//! test suite needs no crypto crate.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};

use crate::support::*;

/// Distribution accepts a token up to this long after its `exp` (clock-skew leeway), so the
/// service backdates `exp` by it to make a lifetime mean what it says.
const REGISTRY_LEEWAY_SECS: u64 = 60;

/// One account of the token service.
#[derive(Clone)]
struct User {
    password: String,
    /// Actions granted on every repository (`pull`, `push`).
    actions: Vec<String>,
}

/// What a token request asked for and got, for assertions.
#[derive(Debug, Clone)]
pub struct TokenRequest {
    /// `GET` or `POST`.
    pub method: String,
    /// `password`, `refresh_token`, `basic` (GET with Basic) or `anonymous`.
    pub grant: String,
    /// The account the request authenticated as, if any.
    pub user: Option<String>,
    /// The scopes requested.
    pub scopes: Vec<String>,
    /// The HTTP status answered.
    pub status: u16,
}

/// Builder for [`TokenService`].
#[derive(Default)]
pub struct TokenServiceBuilder {
    users: HashMap<String, User>,
    refresh_tokens: HashMap<String, String>,
    lifetime: Option<Duration>,
}

impl TokenServiceBuilder {
    /// An account `name`/`password` granted `actions` (`["pull"]`, `["pull", "push"]`) on every
    /// repository.
    pub fn user(mut self, name: &str, password: &str, actions: &[&str]) -> Self {
        self.users.insert(
            name.to_owned(),
            User {
                password: password.to_owned(),
                actions: actions.iter().map(|a| (*a).to_owned()).collect(),
            },
        );
        self
    }

    /// A refresh (identity) token that stands for account `user`, as a credential helper or
    /// `identitytoken` would hold it.
    pub fn refresh_token(mut self, token: &str, user: &str) -> Self {
        self.refresh_tokens
            .insert(token.to_owned(), user.to_owned());
        self
    }

    /// How long issued tokens are accepted by the registry (default one hour).
    pub fn lifetime(mut self, lifetime: Duration) -> Self {
        self.lifetime = Some(lifetime);
        self
    }

    /// Generates the signing key and certificate and starts listening on 127.0.0.1.
    pub fn start(self) -> TokenService {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("key.pem");
        let cert = dir.path().join("cert.pem");
        sh(Command::new(openssl())
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            ])
            .args(["-subj", "/CN=modelbake-test-token-issuer", "-keyout"])
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .stderr(Stdio::null()));
        let der = Command::new(openssl())
            .args(["x509", "-outform", "DER", "-in"])
            .arg(&cert)
            .output()
            .unwrap();
        assert!(der.status.success(), "openssl x509 failed");
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State {
            users: self.users,
            refresh_tokens: self.refresh_tokens,
            lifetime: self.lifetime.unwrap_or(Duration::from_secs(3600)),
            key: key.clone(),
            x5c: STANDARD.encode(&der.stdout),
            log: Mutex::new(Vec::new()),
        });
        let serving = state.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let s = serving.clone();
                std::thread::spawn(move || {
                    let _ = s.answer(stream);
                });
            }
        });
        TokenService {
            realm: format!("http://{addr}/token"),
            service: SERVICE.to_owned(),
            cert,
            state,
            _dir: dir,
        }
    }
}

const SERVICE: &str = "modelbake-test-registry";
const ISSUER: &str = "modelbake-test-issuer";

/// A running token service (stops with the test process; the thread holds only loopback).
pub struct TokenService {
    /// The token endpoint the registry's challenge names.
    pub realm: String,
    /// The `service` of the challenge and the tokens' audience.
    pub service: String,
    cert: PathBuf,
    state: Arc<State>,
    _dir: tempfile::TempDir,
}

impl TokenService {
    /// A builder: add users, refresh tokens and a lifetime, then `start()`.
    pub fn builder() -> TokenServiceBuilder {
        TokenServiceBuilder::default()
    }

    /// The `auth:` section of a Distribution configuration that delegates to this service
    /// (for `crate::support::oci::Registry::start_configured`).
    pub fn registry_yaml(&self) -> String {
        format!(
            "auth:\n  token:\n    realm: {}\n    service: {}\n    issuer: {ISSUER}\n    rootcertbundle: {}\n",
            self.realm,
            self.service,
            self.cert.display()
        )
    }

    /// Every request answered so far, in order.
    pub fn requests(&self) -> Vec<TokenRequest> {
        self.state.log.lock().unwrap().clone()
    }

    /// How many tokens were issued (requests answered 200).
    pub fn issued(&self) -> usize {
        self.requests().iter().filter(|r| r.status == 200).count()
    }
}

struct State {
    users: HashMap<String, User>,
    refresh_tokens: HashMap<String, String>,
    lifetime: Duration,
    key: PathBuf,
    x5c: String,
    log: Mutex<Vec<TokenRequest>>,
}

/// One parsed HTTP request (enough of HTTP/1.1 for token clients).
struct Request {
    method: String,
    query: Vec<(String, String)>,
    authorization: Option<String>,
    form: Vec<(String, String)>,
}

impl State {
    fn answer(&self, mut stream: TcpStream) -> std::io::Result<()> {
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        let req = read_request(&stream)?;
        let (status, body) = self.decide(&req);
        let reason = if status == 200 { "OK" } else { "Unauthorized" };
        write!(
            stream,
            "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )?;
        stream.flush()
    }

    /// Authenticates the request and issues a token for the granted part of its scopes.
    fn decide(&self, req: &Request) -> (u16, String) {
        let param = |k: &str| {
            req.form
                .iter()
                .chain(&req.query)
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.clone())
        };
        let scopes: Vec<String> = req
            .query
            .iter()
            .chain(&req.form)
            .filter(|(n, _)| n == "scope")
            .flat_map(|(_, v)| v.split(' ').map(str::to_owned).collect::<Vec<_>>())
            .filter(|s| !s.is_empty())
            .collect();
        let (grant, user) = if req.method == "POST" {
            match param("grant_type").as_deref() {
                Some("password") => {
                    let name = param("username").unwrap_or_default();
                    let ok = self
                        .users
                        .get(&name)
                        .is_some_and(|u| Some(&u.password) == param("password").as_ref());
                    ("password", ok.then_some(name))
                }
                Some("refresh_token") => (
                    "refresh_token",
                    param("refresh_token").and_then(|t| self.refresh_tokens.get(&t).cloned()),
                ),
                _ => ("unsupported", None),
            }
        } else {
            match req.authorization.as_deref().and_then(basic_user) {
                Some((name, password)) => {
                    let ok = self
                        .users
                        .get(&name)
                        .is_some_and(|u| u.password == password);
                    ("basic", ok.then_some(name))
                }
                None => ("anonymous", Some(String::new())),
            }
        };
        let status = if user.is_some() { 200 } else { 401 };
        self.log.lock().unwrap().push(TokenRequest {
            method: req.method.clone(),
            grant: grant.to_owned(),
            user: user.clone().filter(|u| !u.is_empty()),
            scopes: scopes.clone(),
            status,
        });
        let Some(user) = user else {
            return (
                401,
                r#"{"errors":[{"code":"UNAUTHORIZED","message":"wrong credentials"}]}"#.into(),
            );
        };
        let granted: Vec<&str> = self
            .users
            .get(&user)
            .map(|u| u.actions.iter().map(String::as_str).collect())
            .unwrap_or_default();
        let access: Vec<serde_json::Value> = scopes
            .iter()
            .filter_map(|s| {
                let (rest, actions) = s.rsplit_once(':')?;
                let (kind, name) = rest.split_once(':')?;
                let allowed: Vec<&str> =
                    actions.split(',').filter(|a| granted.contains(a)).collect();
                Some(serde_json::json!({"type": kind, "name": name, "actions": allowed}))
            })
            .collect();
        let token = self.sign(&user, &access);
        let mut answer = serde_json::json!({
            "token": token,
            "access_token": token,
            "expires_in": self.lifetime.as_secs(),
        });
        if grant == "password" && param("access_type").as_deref() == Some("offline") {
            let refresh = format!("refresh-{user}");
            answer["refresh_token"] = refresh.into();
        }
        (200, answer.to_string())
    }

    /// A JWT for `user` with `access`, expiring after the configured lifetime.
    fn sign(&self, user: &str, access: &[serde_json::Value]) -> String {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let exp = (now + self.lifetime.as_secs()).saturating_sub(REGISTRY_LEEWAY_SECS);
        let header = serde_json::json!({"typ": "JWT", "alg": "RS256", "x5c": [self.x5c]});
        let claims = serde_json::json!({
            "iss": ISSUER, "sub": user, "aud": SERVICE,
            "exp": exp, "nbf": now - 1, "iat": now,
            "jti": format!("{now}-{}", fastrand::u64(..)),
            "access": access,
        });
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let mut child = Command::new(openssl())
            .args(["dgst", "-sha256", "-sign"])
            .arg(&self.key)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(signing_input.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "openssl dgst -sign failed");
        format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(out.stdout))
    }
}

/// `Basic base64(user:password)` → (user, password).
fn basic_user(header: &str) -> Option<(String, String)> {
    let encoded = header.strip_prefix("Basic ")?;
    let decoded = String::from_utf8(STANDARD.decode(encoded.trim()).ok()?).ok()?;
    let (u, p) = decoded.split_once(':')?;
    Some((u.to_owned(), p.to_owned()))
}

fn read_request(stream: &TcpStream) -> std::io::Result<Request> {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_owned();
    let target = parts.next().unwrap_or_default().to_owned();
    let mut authorization = None;
    let mut length = 0usize;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            match k.trim().to_ascii_lowercase().as_str() {
                "authorization" => authorization = Some(v.trim().to_owned()),
                "content-length" => length = v.trim().parse().unwrap_or(0),
                _ => {}
            }
        }
    }
    let mut body = vec![0u8; length.min(1 << 20)];
    reader.read_exact(&mut body)?;
    let query = target
        .split_once('?')
        .map(|(_, q)| pairs(q))
        .unwrap_or_default();
    Ok(Request {
        method,
        query,
        authorization,
        form: pairs(&String::from_utf8_lossy(&body)),
    })
}

fn pairs(encoded: &str) -> Vec<(String, String)> {
    url::form_urlencoded::parse(encoded.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

fn openssl() -> PathBuf {
    tool("openssl").unwrap_or_else(|| Path::new("/usr/bin/openssl").to_owned())
}

/// A bare HTTP/1.1 GET (status and body), so these tests check the service and the registry
/// without going through modelbake's client.
fn http_get(url: &str, authorization: Option<&str>) -> (u16, String) {
    http(url, authorization, None)
}

/// A bare HTTP/1.1 request: GET, or a form POST when `form` is given.
fn http(url: &str, authorization: Option<&str>, form: Option<&str>) -> (u16, String) {
    let url = url::Url::parse(url).unwrap();
    let addr = format!(
        "{}:{}",
        url.host_str().unwrap(),
        url.port_or_known_default().unwrap()
    );
    let mut stream = TcpStream::connect(addr).unwrap();
    let target = match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_owned(),
    };
    let auth = authorization
        .map(|a| format!("Authorization: {a}\r\n"))
        .unwrap_or_default();
    let (method, body) = match form {
        Some(f) => (
            "POST",
            format!(
                "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{f}",
                f.len()
            ),
        ),
        None => ("GET", "\r\n".to_owned()),
    };
    write!(
        stream,
        "{method} {target} HTTP/1.1\r\nHost: {}\r\n{auth}Connection: close\r\n{body}",
        url.host_str().unwrap()
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let status = answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

fn token_for(service: &TokenService, user: &str, password: &str, scope: &str) -> String {
    let basic = format!("Basic {}", STANDARD.encode(format!("{user}:{password}")));
    let (status, body) = http_get(
        &format!(
            "{}?service={}&scope={scope}",
            service.realm, service.service
        ),
        Some(&basic),
    );
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["token"].as_str().unwrap().to_owned()
}

/// The registry trusts what the service signs, grants only the user's rights, and stops
/// accepting a token once its lifetime is over: the ground the registry tests stand on.
#[test]
fn the_registry_accepts_its_tokens_for_their_lifetime_and_rights() {
    let Some(bin) = tool("docker-registry") else {
        return;
    };
    let tokens = TokenService::builder()
        .user("alice", "s3cret", &["pull", "push"])
        .user("reader", "r", &["pull"])
        .refresh_token("identity-of-alice", "alice")
        .lifetime(Duration::from_secs(2))
        .start();
    let registry =
        crate::support::oci::Registry::start_configured(&bin, |_| tokens.registry_yaml());
    let base = format!("http://{}", registry.addr);

    let (status, _) = http_get(&format!("{base}/v2/"), None);
    assert_eq!(status, 401, "the registry demands a token");
    let (status, _) = http_get(&format!("{base}/v2/"), Some("Basic YWxpY2U6czNjcmV0"));
    assert_eq!(status, 401, "Basic credentials are not a token");

    let scope = "repository:models/app:pull,push";
    let alice = token_for(&tokens, "alice", "s3cret", scope);
    let (status, body) = http_get(&format!("{base}/v2/"), Some(&format!("Bearer {alice}")));
    assert_eq!(status, 200, "{body}");

    // The reader's token names only pull: a push (upload start) is denied.
    let reader = token_for(&tokens, "reader", "r", scope);
    let claims = reader.split('.').nth(1).unwrap();
    let claims: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(claims).unwrap()).unwrap();
    assert_eq!(claims["access"][0]["actions"], serde_json::json!(["pull"]));

    // Wrong password: no token.
    let basic = format!("Basic {}", STANDARD.encode("alice:wrong"));
    let (status, _) = http_get(
        &format!("{}?service={}&scope={scope}", tokens.realm, tokens.service),
        Some(&basic),
    );
    assert_eq!(status, 401);

    // An identity (refresh) token is exchanged by an OAuth2 POST, as a credential helper's
    // `<token>` user or `identitytoken` would be.
    let form = format!(
        "grant_type=refresh_token&refresh_token=identity-of-alice&service={}&scope={scope}&client_id=test",
        tokens.service
    );
    let (status, body) = http(&tokens.realm, None, Some(&form));
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let exchanged = v["access_token"].as_str().unwrap();
    let (status, _) = http_get(&format!("{base}/v2/"), Some(&format!("Bearer {exchanged}")));
    assert_eq!(status, 200, "an exchanged token opens the registry");
    let last = tokens.requests().pop().unwrap();
    assert_eq!(
        (
            last.method.as_str(),
            last.grant.as_str(),
            last.user.as_deref()
        ),
        ("POST", "refresh_token", Some("alice"))
    );
    assert_eq!(last.scopes, vec![scope.to_owned()]);

    // After its lifetime the token no longer opens the registry.
    std::thread::sleep(Duration::from_secs(3));
    let (status, _) = http_get(&format!("{base}/v2/"), Some(&format!("Bearer {alice}")));
    assert_eq!(status, 401, "an expired token is refused");
    assert!(tokens.issued() >= 2);
}
