//! The HTTP side: routing on the raw path as the Hub does, the Hub's headers and error codes
//! (docs/hub-protocol.md §6), `Range`, tree pagination, and the fault rules.

use std::convert::Infallible;
use std::io;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use futures::{Stream, StreamExt, stream};
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use crate::model::{Commit, Content, Kind, Repo, StoredFile};
use crate::{FaultAction, Host, LoggedRequest, State, xet};

type Body = BoxBody<Bytes, io::Error>;

const QUOTE_SAFE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'_')
    .remove(b'.')
    .remove(b'-')
    .remove(b'~')
    .remove(b'/');
/// `quote(s, safe="")`, for revisions in URLs.
const QUOTE_SEGMENT: &AsciiSet = &QUOTE_SAFE.add(b'/');
const FIXED_DATE: &str = "2024-01-01T00:00:00.000Z";

fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into())
        .map_err(|never: Infallible| match never {})
        .boxed()
}

fn decode(s: &str) -> String {
    percent_decode_str(s).decode_utf8_lossy().into_owned()
}

/// A response before faults are applied to its body.
struct Reply {
    status: StatusCode,
    headers: Vec<(String, String)>,
    body: ReplyBody,
}

enum ReplyBody {
    Empty,
    Bytes(Bytes),
    Content {
        content: Content,
        start: u64,
        len: u64,
    },
}

impl Reply {
    fn new(status: StatusCode) -> Self {
        Reply {
            status,
            headers: Vec::new(),
            body: ReplyBody::Empty,
        }
    }
    fn header(mut self, k: &str, v: impl Into<String>) -> Self {
        self.headers.push((k.to_owned(), v.into()));
        self
    }
    fn json(value: Value) -> Self {
        let body = serde_json::to_vec(&value).unwrap_or_default();
        Reply::new(StatusCode::OK)
            .header("content-type", "application/json")
            .bytes(body)
    }
    fn bytes(mut self, b: impl Into<Bytes>) -> Self {
        self.body = ReplyBody::Bytes(b.into());
        self
    }
    fn error(status: u16, code: &str, message: &str) -> Self {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        Reply::new(status)
            .header("x-error-code", code)
            .header("x-error-message", message)
            .header("content-type", "application/json")
            .bytes(serde_json::to_vec(&json!({ "error": message })).unwrap_or_default())
    }
}

/// Serves one request on `host`.
pub(crate) async fn handle(
    state: Arc<State>,
    host: Host,
    req: Request<Incoming>,
) -> Result<Response<Body>, io::Error> {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let query = req.uri().query().map(str::to_owned);
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let range = header("range");
    let authorization = header("authorization");
    let host_header = header("host").unwrap_or_else(|| state.addr(host).to_string());
    state.log(LoggedRequest {
        host,
        method: method.to_string(),
        path: path.clone(),
        query: query.clone(),
        range: range.clone(),
        authorization: authorization.clone(),
        at: Instant::now(),
    });

    let mut body_fault = None;
    match state.take_fault(host, method.as_str(), &path) {
        Some(FaultAction::Drop) => {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "injected drop",
            ));
        }
        Some(FaultAction::Delay(d)) => tokio::time::sleep(d).await,
        Some(FaultAction::Status {
            status,
            error_code,
            retry_after,
            ratelimit,
        }) => {
            let mut r = Reply::error(
                status,
                error_code.as_deref().unwrap_or("InjectedFault"),
                "injected fault",
            );
            if let Some(v) = retry_after {
                r = r.header("retry-after", v);
            }
            if let Some(v) = ratelimit {
                r = r.header("ratelimit", v);
            }
            return Ok(finish(r, method == Method::HEAD, None));
        }
        Some(FaultAction::EndlessBody {
            status,
            content_length,
        }) => return Ok(endless(status, content_length)),
        Some(FaultAction::EndlessPages) => {
            let cursor: u64 = query
                .as_deref()
                .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("cursor=")))
                .and_then(|c| c.parse().ok())
                .unwrap_or(0);
            let next = format!(
                "{}://{host_header}{path}?recursive=true&expand=false&cursor={}",
                state.scheme,
                cursor + 1
            );
            let r = Reply::json(json!([])).header("link", format!("<{next}>; rel=\"next\""));
            return Ok(finish(r, method == Method::HEAD, None));
        }
        Some(FaultAction::Redirect(location)) => {
            let r = Reply::new(StatusCode::FOUND).header("location", location);
            return Ok(finish(r, method == Method::HEAD, None));
        }
        Some(FaultAction::ErrorBody(status, message)) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
            let r = Reply::new(status)
                .header("content-type", "application/json")
                .bytes(serde_json::to_vec(&json!({ "error": message })).unwrap_or_default());
            return Ok(finish(r, method == Method::HEAD, None));
        }
        Some(other) => body_fault = Some(other),
        None => {}
    }
    let range = match body_fault {
        Some(FaultAction::IgnoreRange(_)) => None,
        _ => range,
    };

    if host == Host::Cas {
        return Ok(cas(
            &state,
            &method,
            &path,
            query.as_deref(),
            &host_header,
            range.as_deref(),
            authorization.as_deref(),
            body_fault,
        )
        .await);
    }

    let body = if method == Method::POST {
        req.into_body()
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default()
    } else {
        Bytes::new()
    };
    let ctx = Ctx {
        state: &state,
        method: &method,
        query: query.as_deref(),
        range: range.as_deref(),
        authorization: authorization.as_deref(),
        host_header: &host_header,
        body,
    };
    let reply = match host {
        Host::Hub => route_hub(&ctx, &path),
        Host::Cdn | Host::Cas => route_cdn(&ctx, &path),
    };
    let reply = match &body_fault {
        Some(fault) => alter(reply, fault),
        None => reply,
    };
    Ok(finish(reply, method == Method::HEAD, body_fault))
}

/// The CAS front: checks the CAS token where the Hub's CAS would, then forwards to the real
/// CAS and applies body faults to its answer.
#[allow(clippy::too_many_arguments)]
async fn cas(
    state: &Arc<State>,
    method: &Method,
    path: &str,
    query: Option<&str>,
    host_header: &str,
    range: Option<&str>,
    authorization: Option<&str>,
    fault: Option<FaultAction>,
) -> Response<Body> {
    let (upstream, allowed) = match state.xet.read() {
        Ok(x) => (
            x.upstream.clone(),
            !xet::needs_token(path) || x.accepts(authorization),
        ),
        Err(_) => (None, false),
    };
    let Some(upstream) = upstream else {
        return xet::cas_error(StatusCode::NOT_FOUND, "Xet mode is off");
    };
    if !allowed {
        return xet::cas_error(
            StatusCode::UNAUTHORIZED,
            "missing, unknown or expired CAS token",
        );
    }
    let path_and_query = match query {
        Some(q) => format!("{path}?{q}"),
        None => path.to_owned(),
    };
    let count = xet::is_xorb_range(path).then(|| state.clone());
    match xet::forward(
        &upstream,
        method,
        &path_and_query,
        host_header,
        range,
        count,
    )
    .await
    {
        Ok(resp) => {
            let (parts, body) = resp.into_parts();
            Response::from_parts(parts, apply_body_fault(body, fault))
        }
        Err(e) => xet::cas_error(StatusCode::BAD_GATEWAY, &format!("CAS unreachable: {e}")),
    }
}

/// Applies the faults that change a normal answer's headers or length.
fn alter(mut reply: Reply, fault: &FaultAction) -> Reply {
    match fault {
        FaultAction::IgnoreRange(Some(n)) => {
            if let ReplyBody::Content { len, .. } = &mut reply.body {
                *len = (*len).min(*n);
            }
            reply
        }
        FaultAction::Header(name, value) => {
            reply.headers.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
            reply.header(name, value.clone())
        }
        _ => reply,
    }
}

/// A 200 (or `status`) whose body never ends: 64 KiB blocks of JSON-looking filler.
fn endless(status: u16, content_length: Option<u64>) -> Response<Body> {
    let block = Bytes::from(b"[{\"type\":\"file\"},".repeat(4096));
    let body = BodyExt::boxed(StreamBody::new(stream::repeat_with(move || {
        Ok(Frame::data(block.clone()))
    })));
    let mut builder = Response::builder()
        .status(StatusCode::from_u16(status).unwrap_or(StatusCode::OK))
        .header("content-type", "application/json");
    if let Some(len) = content_length {
        builder = builder.header("content-length", len.to_string());
    }
    builder
        .body(body)
        .unwrap_or_else(|_| Response::new(full(Bytes::new())))
}

struct Ctx<'a> {
    state: &'a State,
    method: &'a Method,
    query: Option<&'a str>,
    range: Option<&'a str>,
    authorization: Option<&'a str>,
    host_header: &'a str,
    body: Bytes,
}

impl Ctx<'_> {
    fn query_param(&self, key: &str) -> Option<String> {
        self.query?.split('&').find_map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (k == key).then(|| decode(v))
        })
    }
    fn query_flag(&self, key: &str) -> bool {
        self.query_param(key)
            .is_some_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
    }
}

fn finish(reply: Reply, head: bool, fault: Option<FaultAction>) -> Response<Body> {
    let mut builder = Response::builder().status(reply.status);
    let mut has_len = false;
    for (k, v) in &reply.headers {
        has_len |= k.eq_ignore_ascii_case("content-length");
        builder = builder.header(k.as_str(), v.as_str());
    }
    let (len, body): (u64, Body) = match reply.body {
        ReplyBody::Empty => (0, full(Bytes::new())),
        ReplyBody::Bytes(b) => (b.len() as u64, full(b)),
        ReplyBody::Content {
            content,
            start,
            len,
        } => (len, content_body(content, start, len)),
    };
    if !has_len {
        builder = builder.header("content-length", len.to_string());
    }
    let body = if head {
        full(Bytes::new())
    } else {
        apply_body_fault(body, fault)
    };
    builder
        .body(body)
        .unwrap_or_else(|_| Response::new(full(Bytes::new())))
}

fn apply_body_fault(body: Body, fault: Option<FaultAction>) -> Body {
    match fault {
        Some(FaultAction::Truncate(after)) => {
            let truncation =
                || io::Error::new(io::ErrorKind::ConnectionReset, "injected truncation");
            let s = stream::unfold(
                (body.into_data_stream(), after, false),
                move |(mut inner, left, done)| async move {
                    if done {
                        return None;
                    }
                    if left == 0 {
                        // Give the server time to flush what was sent, so the client really
                        // receives the first bytes before the connection drops.
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        return Some((Err(truncation()), (inner, 0, true)));
                    }
                    match inner.next().await {
                        None => None,
                        Some(Err(e)) => Some((Err(e), (inner, 0, true))),
                        Some(Ok(b)) if (b.len() as u64) <= left => {
                            let left = left - b.len() as u64;
                            Some((Ok(Frame::data(b)), (inner, left, false)))
                        }
                        Some(Ok(b)) => Some((
                            Ok(Frame::data(b.slice(0..left as usize))),
                            (inner, 0, false),
                        )),
                    }
                },
            );
            BodyExt::boxed(StreamBody::new(s))
        }
        Some(FaultAction::FlipByteAt(at)) => {
            let s = stream::unfold(
                (body.into_data_stream(), 0u64),
                move |(mut inner, seen)| async move {
                    let chunk = inner.next().await?;
                    Some(match chunk {
                        Err(e) => (Err(e), (inner, seen)),
                        Ok(b) => {
                            let end = seen + b.len() as u64;
                            let b = if (seen..end).contains(&at) {
                                let mut v = b.to_vec();
                                v[(at - seen) as usize] ^= 0x01;
                                Bytes::from(v)
                            } else {
                                b
                            };
                            (Ok(Frame::data(b)), (inner, end))
                        }
                    })
                },
            );
            BodyExt::boxed(StreamBody::new(s))
        }
        Some(FaultAction::WrongBytes) => {
            let s = body.into_data_stream().map(|chunk| {
                chunk.map(|b| {
                    Frame::data(Bytes::from(b.iter().map(|x| x ^ 0x5a).collect::<Vec<u8>>()))
                })
            });
            BodyExt::boxed(StreamBody::new(s))
        }
        _ => body,
    }
}

fn content_body(content: Content, start: u64, len: u64) -> Body {
    match content {
        Content::Bytes(b) => full(b.slice(start as usize..(start + len) as usize)),
        Content::File(path) => BodyExt::boxed(StreamBody::new(file_stream(path, start, len))),
    }
}

fn file_stream(
    path: std::path::PathBuf,
    start: u64,
    len: u64,
) -> impl Stream<Item = Result<Frame<Bytes>, io::Error>> {
    stream::unfold(
        (None::<tokio::fs::File>, path, len, false),
        move |(file, path, left, opened)| async move {
            if left == 0 {
                return None;
            }
            let mut f = match file {
                Some(f) => f,
                None if !opened => {
                    let mut f = match tokio::fs::File::open(&path).await {
                        Ok(f) => f,
                        Err(e) => return Some((Err(e), (None, path, 0, true))),
                    };
                    if let Err(e) = f.seek(io::SeekFrom::Start(start)).await {
                        return Some((Err(e), (None, path, 0, true)));
                    }
                    f
                }
                None => return None,
            };
            let mut buf = vec![0u8; (256 * 1024).min(left as usize)];
            match f.read(&mut buf).await {
                Ok(0) => Some((
                    Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "fixture file shrank",
                    )),
                    (None, path, 0, true),
                )),
                Ok(n) => {
                    buf.truncate(n);
                    Some((
                        Ok(Frame::data(Bytes::from(buf))),
                        (Some(f), path, left - n as u64, true),
                    ))
                }
                Err(e) => Some((Err(e), (None, path, 0, true))),
            }
        },
    )
}

/// Splits a raw path into segments (still encoded).
fn segments(path: &str) -> Vec<&str> {
    path.trim_start_matches('/').split('/').collect()
}

/// Finds the repo named by the segments starting at `segs` (an id is one or two segments),
/// returning it and how many segments the id used.
fn find_repo(state: &State, kind: Kind, segs: &[&str]) -> Option<(Repo, usize)> {
    let repos = state.repos.read().ok()?;
    if segs.len() >= 2 {
        let two = format!("{}/{}", decode(segs[0]), decode(segs[1]));
        if let Some(r) = repos.get(&(kind, two)) {
            return Some((r.clone(), 2));
        }
    }
    let one = decode(segs.first()?);
    repos.get(&(kind, one)).map(|r| (r.clone(), 1))
}

/// The 401/403 answer for a gated repo, or `None` when the request may read it.
fn gate(ctx: &Ctx<'_>, repo: &Repo) -> Option<Reply> {
    let allowed = repo.gated.as_ref()?;
    let token = ctx
        .authorization
        .and_then(|a| a.strip_prefix("Bearer "))
        .map(str::trim);
    match token {
        None => Some(Reply::error(
            401,
            "GatedRepo",
            &format!(
                "Access to {} {} is restricted. You must have access to it and be authenticated to access it. Please log in.",
                repo.kind.singular(),
                repo.id
            ),
        )),
        Some(t) if allowed.iter().any(|a| a == t) => None,
        Some(_) => Some(Reply::error(
            403,
            "GatedRepo",
            &format!(
                "Access to {} {} is restricted and you are not in the authorized list. Visit {}://{}/{}{} to ask for access.",
                repo.kind.singular(),
                ctx.state.scheme,
                repo.id,
                ctx.host_header,
                repo.kind.url_prefix(),
                repo.id
            ),
        )),
    }
}

fn repo_not_found(kind: Kind) -> Reply {
    Reply::error(
        404,
        "RepoNotFound",
        &format!("{} not found", kind.singular()),
    )
}

fn route_hub(ctx: &Ctx<'_>, path: &str) -> Reply {
    let segs = segments(path);
    match segs.as_slice() {
        // For benchmarks in another process: the xorb bytes the CAS front served (GET), reset
        // with DELETE. Not a Hub route.
        ["_emulator", "cas-bytes"] => {
            let counter = &ctx.state.cas_bytes.0;
            if *ctx.method == Method::DELETE {
                counter.store(0, std::sync::atomic::Ordering::Relaxed);
            }
            Reply::json(json!({ "bytes": counter.load(std::sync::atomic::Ordering::Relaxed) }))
        }
        ["api", "resolve-cache", kind, rest @ ..] => match Kind::from_api_segment(kind) {
            Some(kind) => resolve_cache(ctx, kind, rest),
            None => Reply::error(404, "EntryNotFound", "not found"),
        },
        ["api", kind, rest @ ..] if Kind::from_api_segment(kind).is_some() => {
            let kind = Kind::from_api_segment(kind).unwrap_or(Kind::Model);
            api(ctx, kind, rest)
        }
        ["api", ..] => Reply::error(404, "EntryNotFound", "no such API route"),
        [first, rest @ ..] if *first == "datasets" || *first == "spaces" => {
            let kind = if *first == "datasets" {
                Kind::Dataset
            } else {
                Kind::Space
            };
            resolve(ctx, kind, rest)
        }
        _ => resolve(ctx, Kind::Model, &segs),
    }
}

fn api(ctx: &Ctx<'_>, kind: Kind, segs: &[&str]) -> Reply {
    let Some((repo, used)) = find_repo(ctx.state, kind, segs) else {
        return repo_not_found(kind);
    };
    if let Some(denied) = gate(ctx, &repo) {
        return denied;
    }
    let rest = &segs[used..];
    match rest {
        [] => info(ctx, &repo, "main"),
        ["revision", rev] => info(ctx, &repo, &decode(rev)),
        ["tree", rev, sub @ ..] => {
            let sub: Vec<String> = sub.iter().map(|s| decode(s)).collect();
            tree(ctx, &repo, &decode(rev), &sub.join("/"))
        }
        ["paths-info", rev] if *ctx.method == Method::POST => paths_info(ctx, &repo, &decode(rev)),
        ["xet-read-token", rev] => xet_read_token(ctx, &repo, &decode(rev)),
        _ => Reply::error(404, "EntryNotFound", "no such API route"),
    }
}

/// `GET /api/{kind}s/{id}/xet-read-token/{rev}`: a CAS token, as JSON and as the headers
/// huggingface_hub reads.
fn xet_read_token(ctx: &Ctx<'_>, repo: &Repo, rev: &str) -> Reply {
    if repo.resolve(rev).is_none() {
        return revision_not_found(repo, rev);
    }
    let Ok(mut x) = ctx.state.xet.write() else {
        return Reply::error(500, "Internal", "state poisoned");
    };
    if x.upstream.is_none() {
        return Reply::error(404, "EntryNotFound", "Xet is not enabled");
    }
    let issued = x.issue(&format!("{}/{}", repo.kind.api_segment(), repo.id), rev);
    let cas = format!("http://{}", ctx.state.cas_addr);
    Reply::json(json!({ "accessToken": issued.token, "exp": issued.expires, "casUrl": cas }))
        .header("x-xet-cas-url", cas.clone())
        .header("x-xet-access-token", issued.token.clone())
        .header("x-xet-token-expiration", issued.expires.to_string())
}

fn revision_not_found(repo: &Repo, rev: &str) -> Reply {
    Reply::error(
        404,
        "RevisionNotFound",
        &format!("Invalid rev id: {rev} in {}", repo.id),
    )
}

fn entry_json(state: &State, f: &StoredFile) -> Value {
    let mut v = json!({ "type": "file", "oid": f.git_oid, "size": f.size, "path": f.path });
    if f.lfs {
        v["lfs"] = json!({ "oid": f.sha256, "size": f.size, "pointerSize": f.pointer_size });
        if let Some(h) = state
            .xet
            .read()
            .ok()
            .and_then(|x| x.hash_of(&f.sha256).map(str::to_owned))
        {
            v["xetHash"] = json!(h);
        }
    }
    v
}

fn dir_json(commit: &Commit, dir: &str) -> Value {
    let oid = crate::model::git_blob_sha1(format!("tree {} {dir}", commit.sha).as_bytes());
    json!({ "type": "directory", "oid": oid, "size": 0, "path": dir })
}

fn info(ctx: &Ctx<'_>, repo: &Repo, rev: &str) -> Reply {
    let Some(commit) = repo.resolve(rev) else {
        return revision_not_found(repo, rev);
    };
    let blobs = ctx.query_flag("blobs");
    let siblings: Vec<Value> = commit
        .files
        .values()
        .map(|f| {
            let mut s = json!({ "rfilename": f.path });
            if blobs {
                s["size"] = json!(f.size);
                s["blobId"] = json!(f.git_oid);
                if f.lfs {
                    s["lfs"] = json!({ "sha256": f.sha256, "size": f.size, "pointerSize": f.pointer_size });
                }
            }
            s
        })
        .collect();
    let mut v = json!({
        "_id": &crate::model::git_blob_sha1(repo.id.as_bytes())[..24],
        "id": repo.id,
        "author": repo.id.split_once('/').map(|(a, _)| a).unwrap_or(""),
        "sha": commit.sha,
        "lastModified": FIXED_DATE,
        "createdAt": FIXED_DATE,
        "private": false,
        "gated": if repo.gated.is_some() { json!("manual") } else { json!(false) },
        "disabled": false,
        "downloads": 0,
        "likes": 0,
        "tags": [],
        "siblings": siblings,
    });
    if repo.kind == Kind::Model {
        v["modelId"] = json!(repo.id);
    }
    Reply::json(v)
}

/// Every folder of a commit (each prefix of a file path).
fn folders(commit: &Commit) -> std::collections::BTreeSet<String> {
    let mut out = std::collections::BTreeSet::new();
    for path in commit.files.keys() {
        let mut acc = String::new();
        let parts: Vec<&str> = path.split('/').collect();
        for part in &parts[..parts.len() - 1] {
            if !acc.is_empty() {
                acc.push('/');
            }
            acc.push_str(part);
            out.insert(acc.clone());
        }
    }
    out
}

fn tree(ctx: &Ctx<'_>, repo: &Repo, rev: &str, sub: &str) -> Reply {
    let Some(commit) = repo.resolve(rev) else {
        return revision_not_found(repo, rev);
    };
    let dirs = folders(commit);
    if !sub.is_empty() && !dirs.contains(sub) {
        return Reply::error(
            404,
            "EntryNotFound",
            &format!("{sub} does not exist on \"{rev}\""),
        )
        .header("x-repo-commit", commit.sha.clone());
    }
    let recursive = ctx.query_flag("recursive");
    let prefix = if sub.is_empty() {
        String::new()
    } else {
        format!("{sub}/")
    };
    let wanted =
        |p: &str| p.starts_with(&prefix) && (recursive || !p[prefix.len()..].contains('/'));
    // Sorted names only; JSON is built for the page served, so listing every page of a
    // 100,000-file repo costs time linear in its size, not quadratic.
    let mut entries: Vec<(&str, Option<&StoredFile>)> = dirs
        .iter()
        .filter(|d| wanted(d))
        .map(|d| (d.as_str(), None))
        .collect();
    entries.extend(
        commit
            .files
            .values()
            .filter(|f| wanted(&f.path))
            .map(|f| (f.path.as_str(), Some(&**f))),
    );
    entries.sort_by(|a, b| a.0.cmp(b.0));

    let page_size = ctx.state.page_size.max(1);
    let start: usize = ctx
        .query_param("cursor")
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let page: Vec<Value> = entries
        .iter()
        .skip(start)
        .take(page_size)
        .map(|(path, file)| match file {
            Some(f) => entry_json(ctx.state, f),
            None => dir_json(commit, path),
        })
        .collect();
    let mut reply = Reply::json(Value::Array(page));
    if start + page_size < entries.len() {
        let base_query: Vec<&str> = ctx
            .query
            .unwrap_or("")
            .split('&')
            .filter(|kv| !kv.is_empty() && !kv.starts_with("cursor="))
            .collect();
        let mut query = base_query.join("&");
        if !query.is_empty() {
            query.push('&');
        }
        let sub_part = if sub.is_empty() {
            String::new()
        } else {
            format!("/{}", utf8_percent_encode(sub, QUOTE_SAFE))
        };
        let next = format!(
            "{}://{}/api/{}/{}/tree/{}{sub_part}?{query}cursor={}",
            ctx.state.scheme,
            ctx.host_header,
            repo.kind.api_segment(),
            repo.id,
            utf8_percent_encode(rev, QUOTE_SEGMENT),
            start + page_size
        );
        reply = reply.header("link", format!("<{next}>; rel=\"next\""));
    }
    reply
}

fn paths_info(ctx: &Ctx<'_>, repo: &Repo, rev: &str) -> Reply {
    let Some(commit) = repo.resolve(rev) else {
        return revision_not_found(repo, rev);
    };
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
            .map(|(_, v)| decode(&v.replace('+', " ")))
            .collect(),
    };
    let dirs = folders(commit);
    let out: Vec<Value> = paths
        .iter()
        .filter_map(|p| {
            let p = p.trim_end_matches('/');
            commit
                .files
                .get(p)
                .map(|f| entry_json(ctx.state, f))
                .or_else(|| dirs.contains(p).then(|| dir_json(commit, p)))
        })
        .collect();
    Reply::json(Value::Array(out))
}

/// `/{prefix}{id}/resolve/{rev}/{path}`.
fn resolve(ctx: &Ctx<'_>, kind: Kind, segs: &[&str]) -> Reply {
    let Some(at) = segs.iter().position(|s| *s == "resolve") else {
        return Reply::error(404, "EntryNotFound", "no such route");
    };
    let Some((repo, used)) = find_repo(ctx.state, kind, &segs[..at]) else {
        return repo_not_found(kind);
    };
    if used != at || segs.len() < at + 3 {
        return Reply::error(404, "EntryNotFound", "no such route");
    }
    if let Some(denied) = gate(ctx, &repo) {
        return denied;
    }
    let rev = decode(segs[at + 1]);
    let file_path: Vec<String> = segs[at + 2..].iter().map(|s| decode(s)).collect();
    let file_path = file_path.join("/");
    let Some(commit) = repo.resolve(&rev) else {
        return revision_not_found(&repo, &rev);
    };
    let Some(file) = commit.files.get(&file_path) else {
        return Reply::error(
            404,
            "EntryNotFound",
            &format!("Entry not found: {file_path}"),
        )
        .header("x-repo-commit", commit.sha.clone());
    };
    if file.lfs || ctx.state.regular_via_cdn {
        let location = match &ctx.state.external_cdn {
            Some(base) => format!("{base}/{}", utf8_percent_encode(&file.path, QUOTE_SAFE)),
            None => format!("{}/lfs/{}", ctx.state.cdn_base, file.sha256),
        };
        let body = format!("Found. Redirecting to {location}");
        let xet_hash = ctx
            .state
            .xet
            .read()
            .ok()
            .and_then(|x| x.hash_of(&file.sha256).map(str::to_owned));
        let mut reply = Reply::new(StatusCode::FOUND);
        if let Some(hash) = xet_hash {
            let auth = format!(
                "{}://{}/api/{}/{}/xet-read-token/{}",
                ctx.state.scheme,
                ctx.host_header,
                kind.api_segment(),
                repo.id,
                commit.sha
            );
            let info = format!("http://{}/v1/reconstructions/{hash}", ctx.state.cas_addr);
            reply = reply.header("x-xet-hash", hash).header(
                "link",
                format!("<{auth}>; rel=\"xet-auth\", <{info}>; rel=\"xet-reconstruction-info\""),
            );
        }
        return reply
            .header("location", location)
            .header("x-repo-commit", commit.sha.clone())
            .header("x-linked-etag", format!("\"{}\"", file.sha256))
            .header("x-linked-size", file.size.to_string())
            .header("etag", format!("\"{}\"", file.git_oid))
            .header("content-type", "text/plain; charset=utf-8")
            .bytes(body);
    }
    let location = format!(
        "/api/resolve-cache/{}/{}/{}/{}?etag=%22{}%22",
        kind.api_segment(),
        repo.id,
        commit.sha,
        utf8_percent_encode(&file_path, QUOTE_SAFE),
        file.git_oid
    );
    Reply::new(StatusCode::TEMPORARY_REDIRECT)
        .header("location", location)
        .header("x-repo-commit", commit.sha.clone())
        .header("x-powered-by", "huggingface-moon")
}

/// `/api/resolve-cache/{kind}s/{id}/{commit}/{path}`: regular files, same host.
fn resolve_cache(ctx: &Ctx<'_>, kind: Kind, segs: &[&str]) -> Reply {
    let Some((repo, used)) = find_repo(ctx.state, kind, segs) else {
        return repo_not_found(kind);
    };
    if let Some(denied) = gate(ctx, &repo) {
        return denied;
    }
    if segs.len() < used + 2 {
        return Reply::error(404, "EntryNotFound", "no such route");
    }
    let rev = decode(segs[used]);
    let Some(commit) = repo.resolve(&rev) else {
        return revision_not_found(&repo, &rev);
    };
    let file_path: Vec<String> = segs[used + 1..].iter().map(|s| decode(s)).collect();
    let Some(file) = commit.files.get(&file_path.join("/")) else {
        return Reply::error(404, "EntryNotFound", "Entry not found")
            .header("x-repo-commit", commit.sha.clone());
    };
    serve_content(ctx, file)
        .header("x-repo-commit", commit.sha.clone())
        .header("etag", format!("\"{}\"", file.git_oid))
}

fn route_cdn(ctx: &Ctx<'_>, path: &str) -> Reply {
    let segs = segments(path);
    let Some(sha) = (match segs.as_slice() {
        ["lfs", sha] => Some(*sha),
        _ => None,
    }) else {
        return Reply::error(404, "EntryNotFound", "no such object");
    };
    match ctx.state.find_by_sha256(sha) {
        Some(file) => serve_content(ctx, &file).header("etag", format!("\"{}\"", file.sha256)),
        None => Reply::error(404, "EntryNotFound", "no such object"),
    }
}

/// 200 or 206 (with `Content-Range`) or 416 for a file's bytes.
fn serve_content(ctx: &Ctx<'_>, file: &StoredFile) -> Reply {
    let total = file.size;
    let base = |status| {
        Reply::new(status)
            .header("accept-ranges", "bytes")
            .header("content-type", "application/octet-stream")
    };
    match ctx.range.map(|r| parse_range(r, total)) {
        None | Some(RangeSpec::Full) => {
            let mut r = base(StatusCode::OK);
            r.body = ReplyBody::Content {
                content: file.content.clone(),
                start: 0,
                len: total,
            };
            r
        }
        Some(RangeSpec::Part(start, end)) => {
            let mut r = base(StatusCode::PARTIAL_CONTENT)
                .header("content-range", format!("bytes {start}-{end}/{total}"));
            r.body = ReplyBody::Content {
                content: file.content.clone(),
                start,
                len: end - start + 1,
            };
            r
        }
        Some(RangeSpec::Unsatisfiable) => Reply::error(
            416,
            "RangeNotSatisfiable",
            "Requested Range Not Satisfiable",
        )
        .header("content-range", format!("bytes */{total}")),
    }
}

#[derive(Debug, PartialEq, Eq)]
enum RangeSpec {
    Full,
    Part(u64, u64),
    Unsatisfiable,
}

/// `bytes=a-b`, `bytes=a-`, `bytes=-n`; anything else (several ranges, other units) is
/// served in full, as many servers do.
fn parse_range(header: &str, total: u64) -> RangeSpec {
    let Some(spec) = header.trim().strip_prefix("bytes=") else {
        return RangeSpec::Full;
    };
    if spec.contains(',') {
        return RangeSpec::Full;
    }
    let Some((a, b)) = spec.split_once('-') else {
        return RangeSpec::Full;
    };
    let (a, b) = (a.trim(), b.trim());
    let (start, end) = match (a.parse::<u64>(), b.parse::<u64>()) {
        (Ok(s), Ok(e)) if s <= e => (s, e.min(total.saturating_sub(1))),
        (Ok(s), Err(_)) if b.is_empty() => (s, total.saturating_sub(1)),
        (Err(_), Ok(n)) if a.is_empty() && n > 0 => {
            (total.saturating_sub(n), total.saturating_sub(1))
        }
        _ => return RangeSpec::Full,
    };
    if total == 0 || start >= total {
        return RangeSpec::Unsatisfiable;
    }
    RangeSpec::Part(start, end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-0", 10), RangeSpec::Part(0, 0));
        assert_eq!(parse_range("bytes=5-", 10), RangeSpec::Part(5, 9));
        assert_eq!(parse_range("bytes=-3", 10), RangeSpec::Part(7, 9));
        assert_eq!(parse_range("bytes=2-100", 10), RangeSpec::Part(2, 9));
        assert_eq!(parse_range("bytes=10-", 10), RangeSpec::Unsatisfiable);
        assert_eq!(parse_range("bytes=0-1,3-4", 10), RangeSpec::Full);
    }
}
