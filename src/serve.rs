//! `modelbake serve`: a read-only, Hub-compatible HTTP mirror of the store for the repos some
//! locks name, so a team can point `HF_ENDPOINT` (or `modelbake fetch --endpoint`) at one LAN
//! copy. It serves revision info, trees, paths-info and `resolve` with the Hub's headers and
//! `Range`. Nothing in a request ever becomes a filesystem path: repo, revision and file are
//! looked up in the locks, and bytes come from the store by the locked sha256.
//!
//! Connections are limited; idle ones cannot starve real requests: when every slot is taken,
//! a new connection closes the one that has been idle longest (no request in progress for a
//! moment), so a flood of idle connections costs clients a reconnect, not a 10 s wait.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::stream;
use http_body_util::{BodyExt, Full, Limited, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

use crate::lock::{LockedFile, LockedRepo, Lockfile};
use crate::repo::{RepoId, RepoKey, RepoKind, Revision, check_repo_path};
use crate::store::Store;

type Body = BoxBody<Bytes, io::Error>;

/// Connections served at once; at the limit a new one takes the place of an idle one.
const MAX_CONNECTIONS: usize = 256;
/// How long a connection must have had no request in progress before a newcomer at the limit
/// may close it (a client that just connected gets this long to send its request).
const IDLE_GRACE: Duration = Duration::from_millis(250);
/// Largest request body (paths-info).
const MAX_BODY: usize = 1 << 20;
/// Tree page size, as on the Hub.
const PAGE: usize = 1000;
const QUOTE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'_')
    .remove(b'.')
    .remove(b'-')
    .remove(b'~')
    .remove(b'/');

/// What the server serves: the locked repos, by kind and id.
pub struct Catalog {
    repos: BTreeMap<RepoKey, LockedRepo>,
    store: Store,
}

impl Catalog {
    /// Every repo of `locks` (a later lock wins for the same repo), served from `store`.
    pub fn new(locks: &[Lockfile], store: Store) -> Self {
        let repos = locks
            .iter()
            .flat_map(|l| &l.repos)
            .map(|r| (r.key(), r.clone()))
            .collect();
        Catalog { repos, store }
    }

    /// Number of repos served.
    pub fn len(&self) -> usize {
        self.repos.len()
    }
}

/// Serves `catalog` on `listener` until the future is dropped.
pub async fn serve(listener: tokio::net::TcpListener, catalog: Arc<Catalog>) -> io::Result<()> {
    let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let open = Arc::new(Connections::default());
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            // Out of file descriptors, or a client gone before the accept: keep serving.
            Err(e) => {
                tracing::warn!("accepting a connection: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let permit = open.make_room(&limit).await?;
        let (id, slot) = open.add();
        let (catalog, open) = (catalog.clone(), open.clone());
        tokio::spawn(async move {
            serve_connection(stream, catalog, &slot).await;
            open.remove(id);
            drop(permit);
        });
    }
}

/// One connection until it ends or is closed to make room for another.
async fn serve_connection(stream: tokio::net::TcpStream, catalog: Arc<Catalog>, slot: &Arc<Slot>) {
    let tracked = slot.clone();
    let service = hyper::service::service_fn(move |req| {
        let busy = tracked.begin();
        let catalog = catalog.clone();
        async move {
            let resp = handle(catalog, req).await?;
            // The request counts as in progress until its body is sent (or dropped).
            Ok::<_, Infallible>(resp.map(|body| {
                body.map_err(move |e| {
                    let _in_progress = &busy;
                    e
                })
                .boxed()
            }))
        }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(10))
        .max_buf_size(64 * 1024)
        .serve_connection(TokioIo::new(stream), service);
    tokio::select! {
        _ = conn => {}
        _ = slot.close.notified() => {}
    }
}

/// The open connections, so that a newcomer at the limit can close the one idle longest.
#[derive(Default)]
struct Connections {
    slots: Mutex<BTreeMap<u64, Arc<Slot>>>,
    next: AtomicU64,
}

impl Connections {
    fn slots(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Arc<Slot>>> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn add(&self) -> (u64, Arc<Slot>) {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let slot = Arc::new(Slot {
            state: Mutex::new((0, Instant::now())),
            close: Notify::new(),
        });
        self.slots().insert(id, slot.clone());
        (id, slot)
    }

    fn remove(&self, id: u64) {
        self.slots().remove(&id);
    }

    /// A connection permit: at once when one is free, else by closing the connection idle
    /// longest (past [`IDLE_GRACE`]), else as soon as one ends (all are busy).
    async fn make_room(&self, limit: &Arc<Semaphore>) -> io::Result<OwnedSemaphorePermit> {
        loop {
            if let Ok(permit) = limit.clone().try_acquire_owned() {
                return Ok(permit);
            }
            self.close_longest_idle();
            tokio::select! {
                permit = limit.clone().acquire_owned() => return permit.map_err(io::Error::other),
                _ = tokio::time::sleep(IDLE_GRACE) => {}
            }
        }
    }

    fn close_longest_idle(&self) {
        let now = Instant::now();
        let mut slots = self.slots();
        let longest = slots
            .iter()
            .filter_map(|(id, s)| Some((s.idle_for(now)?, *id)))
            .filter(|(idle, _)| *idle >= IDLE_GRACE)
            .max();
        if let Some((_, id)) = longest
            && let Some(slot) = slots.remove(&id)
        {
            slot.close.notify_one();
        }
    }
}

/// One connection's state: requests in progress and since when there has been none.
struct Slot {
    state: Mutex<(usize, Instant)>,
    close: Notify,
}

impl Slot {
    fn state(&self) -> std::sync::MutexGuard<'_, (usize, Instant)> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Marks a request in progress until the returned guard is dropped.
    fn begin(self: &Arc<Self>) -> InProgress {
        self.state().0 += 1;
        InProgress(self.clone())
    }

    /// How long no request has been in progress; `None` while one is.
    fn idle_for(&self, now: Instant) -> Option<Duration> {
        let (busy, since) = *self.state();
        (busy == 0).then(|| now.saturating_duration_since(since))
    }
}

/// A request in progress on a connection (see [`Slot::begin`]).
struct InProgress(Arc<Slot>);

impl Drop for InProgress {
    fn drop(&mut self) {
        let mut state = self.0.state();
        state.0 = state.0.saturating_sub(1);
        state.1 = Instant::now();
    }
}

fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into())
        .map_err(|never: Infallible| match never {})
        .boxed()
}

/// A refused request: status, the Hub's `X-Error-Code`, a message and optional extra headers.
/// Kept small and turned into a response only at the edge.
struct Refusal {
    status: StatusCode,
    code: &'static str,
    message: String,
    headers: Vec<(&'static str, String)>,
}

impl Refusal {
    fn with(mut self, name: &'static str, value: String) -> Self {
        self.headers.push((name, value));
        self
    }

    fn into_response(self) -> Response<Body> {
        let body = serde_json::to_vec(&json!({ "error": self.message })).unwrap_or_default();
        let mut b = Response::builder()
            .status(self.status)
            .header("x-error-code", self.code)
            .header("x-error-message", crate::ui::clean(&self.message))
            .header("content-type", "application/json")
            .header("content-length", body.len());
        for (k, v) in &self.headers {
            b = b.header(*k, v.as_str());
        }
        b.body(full(body))
            .unwrap_or_else(|_| Response::new(full(Bytes::new())))
    }
}

fn error(status: StatusCode, code: &'static str, message: &str) -> Refusal {
    Refusal {
        status,
        code,
        message: message.to_owned(),
        headers: Vec::new(),
    }
}

fn json_response(v: Value) -> Response<Body> {
    let body = serde_json::to_vec(&v).unwrap_or_default();
    Response::builder()
        .header("content-type", "application/json")
        .header("content-length", body.len())
        .body(full(body))
        .unwrap_or_else(|_| Response::new(full(Bytes::new())))
}

async fn handle(
    catalog: Arc<Catalog>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or("").to_owned();
    let range = req
        .headers()
        .get("range")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let host = req
        .headers()
        .get("host")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("localhost")
        .to_owned();
    let body = if method == Method::POST {
        match Limited::new(req.into_body(), MAX_BODY).collect().await {
            Ok(b) => b.to_bytes(),
            Err(_) => {
                return Ok(error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "BadRequest",
                    "request body too large",
                )
                .into_response());
            }
        }
    } else {
        Bytes::new()
    };
    let ctx = Ctx {
        catalog: &catalog,
        method: &method,
        query: &query,
        range: range.as_deref(),
        host: &host,
        body,
    };
    Ok(route(&ctx, &path)
        .await
        .unwrap_or_else(Refusal::into_response))
}

struct Ctx<'a> {
    catalog: &'a Catalog,
    method: &'a Method,
    query: &'a str,
    range: Option<&'a str>,
    host: &'a str,
    body: Bytes,
}

type Reply = Result<Response<Body>, Refusal>;

fn bad(msg: &str) -> Refusal {
    error(StatusCode::BAD_REQUEST, "BadRequest", msg)
}

/// A repo id from raw path segments: plain ASCII name characters only (no percent-encoding,
/// so `acme%2Fx` or `..` never name anything).
fn repo_id(segs: &[&str]) -> Result<RepoId, Refusal> {
    if segs.iter().any(|s| {
        s.is_empty()
            || !s
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    }) {
        return Err(bad("invalid repo id"));
    }
    RepoId::parse(&segs.join("/")).map_err(|e| bad(&e.to_string()))
}

fn decode(s: &str) -> Result<String, Refusal> {
    percent_decode_str(s)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| bad("invalid percent-encoding"))
}

impl Ctx<'_> {
    fn find(&self, kind: RepoKind, segs: &[&str]) -> Result<(&LockedRepo, usize), Refusal> {
        // An id is one or two segments; try two first, like the Hub.
        for used in [2usize, 1] {
            if segs.len() >= used
                && let Ok(id) = repo_id(&segs[..used])
                && let Some(r) = self.catalog.repos.get(&RepoKey::new(kind, id))
            {
                return Ok((r, used));
            }
        }
        if segs.is_empty() {
            return Err(bad("missing repo id"));
        }
        repo_id(&segs[..segs.len().min(2)])?;
        Err(error(
            StatusCode::NOT_FOUND,
            "RepoNotFound",
            "Repository not found (not in the served locks)",
        ))
    }

    /// The locked commit a revision names: the locked revision, the commit, or a prefix of it.
    fn commit<'r>(&self, repo: &'r LockedRepo, raw: &str) -> Result<&'r str, Refusal> {
        let rev = decode(raw)?;
        Revision::parse(&rev).map_err(|e| bad(&e.to_string()))?;
        if rev == repo.revision.as_str()
            || rev == repo.commit
            || (rev.len() >= 7 && repo.commit.starts_with(&rev))
        {
            Ok(&repo.commit)
        } else {
            Err(error(
                StatusCode::NOT_FOUND,
                "RevisionNotFound",
                &format!("Invalid rev id: {rev} (only the locked revision is served)"),
            ))
        }
    }

    fn flag(&self, key: &str) -> bool {
        self.query.split('&').any(|kv| {
            kv.split_once('=')
                .is_some_and(|(k, v)| k == key && v.eq_ignore_ascii_case("true"))
        })
    }
}

async fn route(ctx: &Ctx<'_>, path: &str) -> Reply {
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    if !matches!(*ctx.method, Method::GET | Method::HEAD | Method::POST) {
        return Err(error(
            StatusCode::METHOD_NOT_ALLOWED,
            "BadRequest",
            "read-only mirror",
        ));
    }
    match segs.as_slice() {
        ["api", kind, rest @ ..] if let Some(kind) = RepoKind::from_segment(kind) => {
            api(ctx, kind, rest)
        }
        ["api", ..] => Err(error(
            StatusCode::NOT_FOUND,
            "EntryNotFound",
            "no such API route",
        )),
        // Models have no URL prefix: `/models/...` is a model repo named `models/...`.
        [prefix, rest @ ..]
            if let Some(kind) = RepoKind::from_segment(prefix)
                && kind != RepoKind::Model =>
        {
            resolve(ctx, kind, rest).await
        }
        _ => resolve(ctx, RepoKind::Model, &segs).await,
    }
}

/// The git object id the Hub reports for a file: the blob sha1, or the LFS pointer's.
fn git_oid(f: &LockedFile) -> &str {
    f.pointer.as_deref().unwrap_or(&f.blob)
}

fn pointer_size(f: &LockedFile) -> usize {
    format!(
        "version https://git-lfs.github.com/spec/v1\noid sha256:{}\nsize {}\n",
        f.sha256, f.size
    )
    .len()
}

fn entry(f: &LockedFile) -> Value {
    let mut v = json!({ "type": "file", "oid": git_oid(f), "size": f.size, "path": f.path });
    if f.is_lfs() {
        v["lfs"] = json!({ "oid": f.sha256, "size": f.size, "pointerSize": pointer_size(f) });
    }
    v
}

fn api(ctx: &Ctx<'_>, kind: RepoKind, segs: &[&str]) -> Reply {
    let (repo, used) = ctx.find(kind, segs)?;
    match &segs[used..] {
        [] => Ok(info(ctx, repo, &repo.commit)),
        ["revision", rev] => Ok(info(ctx, repo, ctx.commit(repo, rev)?)),
        ["tree", rev, sub @ ..] => {
            let commit = ctx.commit(repo, rev)?;
            let sub: Vec<String> = sub.iter().map(|s| decode(s)).collect::<Result<_, _>>()?;
            tree(ctx, repo, commit, rev, &sub.join("/"))
        }
        ["paths-info", rev] if *ctx.method == Method::POST => {
            ctx.commit(repo, rev)?;
            let text = String::from_utf8_lossy(&ctx.body);
            let paths: Vec<String> = match serde_json::from_str::<Value>(&text) {
                Ok(v) => v["paths"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|p| p.as_str().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default(),
                Err(_) => text
                    .split('&')
                    .filter_map(|kv| kv.split_once('='))
                    .filter(|(k, _)| *k == "paths")
                    .map(|(_, v)| {
                        percent_decode_str(&v.replace('+', " "))
                            .decode_utf8_lossy()
                            .into_owned()
                    })
                    .collect(),
            };
            let out: Vec<Value> = paths
                .iter()
                .filter_map(|p| repo.files.iter().find(|f| &f.path == p))
                .map(entry)
                .collect();
            Ok(json_response(Value::Array(out)))
        }
        _ => Err(error(
            StatusCode::NOT_FOUND,
            "EntryNotFound",
            "no such API route",
        )),
    }
}

fn info(ctx: &Ctx<'_>, repo: &LockedRepo, commit: &str) -> Response<Body> {
    let blobs = ctx.flag("blobs");
    let siblings: Vec<Value> = repo
        .files
        .iter()
        .map(|f| {
            let mut s = json!({ "rfilename": f.path });
            if blobs {
                s["size"] = json!(f.size);
                s["blobId"] = json!(git_oid(f));
                if f.is_lfs() {
                    s["lfs"] = json!({ "sha256": f.sha256, "size": f.size, "pointerSize": pointer_size(f) });
                }
            }
            s
        })
        .collect();
    let mut v = json!({ "id": repo.id.as_str(), "sha": commit, "private": false, "gated": false, "disabled": false, "siblings": siblings });
    if repo.kind == RepoKind::Model {
        v["modelId"] = json!(repo.id.as_str());
    }
    json_response(v)
}

fn tree(ctx: &Ctx<'_>, repo: &LockedRepo, commit: &str, rev: &str, sub: &str) -> Reply {
    let mut dirs = std::collections::BTreeSet::new();
    for f in &repo.files {
        let mut acc = String::new();
        let parts: Vec<&str> = f.path.split('/').collect();
        for p in &parts[..parts.len() - 1] {
            if !acc.is_empty() {
                acc.push('/');
            }
            acc.push_str(p);
            dirs.insert(acc.clone());
        }
    }
    if !sub.is_empty() && !dirs.contains(sub) {
        return Err(error(
            StatusCode::NOT_FOUND,
            "EntryNotFound",
            &format!("{sub} does not exist"),
        ));
    }
    let recursive = ctx.flag("recursive");
    let prefix = if sub.is_empty() {
        String::new()
    } else {
        format!("{sub}/")
    };
    let wanted =
        |p: &str| p.starts_with(&prefix) && (recursive || !p[prefix.len()..].contains('/'));
    let mut entries: Vec<(String, Value)> = dirs
        .iter()
        .filter(|d| wanted(d))
        .map(|d| (d.clone(), json!({ "type": "directory", "oid": crate::hash::git_blob_sha1(format!("tree {commit} {d}").as_bytes()), "size": 0, "path": d })))
        .collect();
    entries.extend(
        repo.files
            .iter()
            .filter(|f| wanted(&f.path))
            .map(|f| (f.path.clone(), entry(f))),
    );
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    let start: usize = ctx
        .query
        .split('&')
        .find_map(|kv| kv.strip_prefix("cursor="))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let page: Vec<Value> = entries
        .iter()
        .skip(start)
        .take(PAGE)
        .map(|e| e.1.clone())
        .collect();
    let mut resp = json_response(Value::Array(page));
    // A client's cursor may be any number: saturate rather than overflow.
    let end = start.saturating_add(PAGE);
    if end < entries.len() {
        let q: Vec<&str> = ctx
            .query
            .split('&')
            .filter(|kv| !kv.is_empty() && !kv.starts_with("cursor="))
            .collect();
        let sub_part = if sub.is_empty() {
            String::new()
        } else {
            format!("/{}", utf8_percent_encode(sub, QUOTE))
        };
        let next = format!(
            "http://{}/api/{}/{}/tree/{rev}{sub_part}?{}cursor={}",
            ctx.host,
            repo.kind.api_segment(),
            repo.id,
            q.iter().map(|kv| format!("{kv}&")).collect::<String>(),
            end
        );
        if let Ok(v) = format!("<{next}>; rel=\"next\"").parse() {
            resp.headers_mut().insert("link", v);
        }
    }
    Ok(resp)
}

async fn resolve(ctx: &Ctx<'_>, kind: RepoKind, segs: &[&str]) -> Reply {
    let at = segs
        .iter()
        .position(|s| *s == "resolve")
        .ok_or_else(|| error(StatusCode::NOT_FOUND, "EntryNotFound", "no such route"))?;
    let (repo, used) = ctx.find(kind, &segs[..at])?;
    if used != at || segs.len() < at + 3 {
        return Err(error(
            StatusCode::NOT_FOUND,
            "EntryNotFound",
            "no such route",
        ));
    }
    let commit = ctx.commit(repo, segs[at + 1])?;
    let parts: Vec<String> = segs[at + 2..]
        .iter()
        .map(|s| decode(s))
        .collect::<Result<_, _>>()?;
    let path = parts.join("/");
    check_repo_path(&path).map_err(|e| bad(&e.to_string()))?;
    let Some(file) = repo.files.iter().find(|f| f.path == path) else {
        return Err(
            error(StatusCode::NOT_FOUND, "EntryNotFound", "Entry not found")
                .with("x-repo-commit", commit.to_owned()),
        );
    };
    serve_blob(ctx, file, commit).await
}

async fn serve_blob(ctx: &Ctx<'_>, f: &LockedFile, commit: &str) -> Reply {
    let path = ctx.catalog.store.blob_path(&f.sha256);
    let store = ctx.catalog.store.clone();
    let (sha256, size) = (f.sha256.clone(), f.size);
    let present = tokio::task::spawn_blocking(move || store.has(&sha256, size))
        .await
        .unwrap_or(false);
    if !present {
        return Err(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "BlobMissing",
            "the locked file is not in the mirror's store (run `modelbake fetch` on the server)",
        ));
    }
    let total = f.size;
    let (status, start, len) = match ctx.range.and_then(|r| parse_range(r, total)) {
        Some(Ok((s, e))) => (StatusCode::PARTIAL_CONTENT, s, e - s + 1),
        Some(Err(())) => {
            return Err(error(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "RangeNotSatisfiable",
                "Requested Range Not Satisfiable",
            )
            .with("content-range", format!("bytes */{total}")));
        }
        None => (StatusCode::OK, 0, total),
    };
    let mut b = Response::builder()
        .status(status)
        .header("x-repo-commit", commit)
        .header("etag", format!("\"{}\"", f.blob))
        .header("accept-ranges", "bytes")
        .header("content-type", "application/octet-stream")
        .header("content-length", len);
    if f.is_lfs() {
        b = b
            .header("x-linked-etag", format!("\"{}\"", f.sha256))
            .header("x-linked-size", total);
    }
    if status == StatusCode::PARTIAL_CONTENT {
        b = b.header(
            "content-range",
            format!("bytes {start}-{}/{total}", start + len - 1),
        );
    }
    let body = if *ctx.method == Method::HEAD {
        full(Bytes::new())
    } else {
        file_body(path, start, len)
    };
    Ok(b.body(body)
        .unwrap_or_else(|_| Response::new(full(Bytes::new()))))
}

fn file_body(path: std::path::PathBuf, start: u64, len: u64) -> Body {
    let s = stream::unfold((None::<tokio::fs::File>, len), move |(file, left)| {
        let path = path.clone();
        async move {
            if left == 0 {
                return None;
            }
            let mut f = match file {
                Some(f) => f,
                None => {
                    let mut f = match tokio::fs::OpenOptions::new()
                        .read(true)
                        .custom_flags(libc::O_NOFOLLOW)
                        .open(&path)
                        .await
                    {
                        Ok(f) => f,
                        Err(e) => return Some((Err(e), (None, 0))),
                    };
                    if let Err(e) = f.seek(io::SeekFrom::Start(start)).await {
                        return Some((Err(e), (None, 0)));
                    }
                    f
                }
            };
            let mut buf = vec![0u8; (1 << 20).min(left as usize)];
            match f.read(&mut buf).await {
                Ok(0) => Some((
                    Err(io::Error::new(io::ErrorKind::UnexpectedEof, "blob shrank")),
                    (None, 0),
                )),
                Ok(n) => {
                    buf.truncate(n);
                    Some((
                        Ok(Frame::data(Bytes::from(buf))),
                        (Some(f), left - n as u64),
                    ))
                }
                Err(e) => Some((Err(e), (None, 0))),
            }
        }
    });
    BodyExt::boxed(StreamBody::new(s))
}

/// `bytes=a-b`, `bytes=a-`, `bytes=-n`; `None` (serve all) for anything else; `Err` when
/// unsatisfiable.
fn parse_range(h: &str, total: u64) -> Option<Result<(u64, u64), ()>> {
    let spec = h.trim().strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None;
    }
    let (a, b) = spec.split_once('-')?;
    let (start, end) = match (a.trim().parse::<u64>(), b.trim().parse::<u64>()) {
        (Ok(s), Ok(e)) if s <= e => (s, e.min(total.saturating_sub(1))),
        (Ok(s), Err(_)) if b.trim().is_empty() => (s, total.saturating_sub(1)),
        (Err(_), Ok(n)) if a.trim().is_empty() && n > 0 => {
            (total.saturating_sub(n), total.saturating_sub(1))
        }
        _ => return None,
    };
    if total == 0 || start >= total {
        return Some(Err(()));
    }
    Some(Ok((start, end)))
}

/// True for loopback addresses, the only ones `serve` binds without `--allow-remote`.
pub fn is_loopback(addr: &SocketAddr) -> bool {
    addr.ip().is_loopback()
}

#[cfg(test)]
mod fuzz_tests;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_newcomer_closes_the_longest_idle_connection_never_a_busy_one() {
        let open = Connections::default();
        let (old, old_slot) = open.add();
        let (busy, busy_slot) = open.add();
        let (_fresh, _) = open.add();
        let long_ago = Instant::now() - 10 * IDLE_GRACE;
        *old_slot.state() = (0, long_ago);
        *busy_slot.state() = (0, long_ago - IDLE_GRACE);
        let request = busy_slot.begin();

        open.close_longest_idle();
        assert!(
            !open.slots().contains_key(&old),
            "the longest idle one goes"
        );
        assert!(
            open.slots().contains_key(&busy),
            "a request in progress stays"
        );
        open.close_longest_idle();
        assert_eq!(open.slots().len(), 2, "one inside its grace period stays");

        drop(request);
        assert!(busy_slot.idle_for(Instant::now()).is_some());
    }
}
