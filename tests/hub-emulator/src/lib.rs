//! A Hugging Face Hub emulator for tests and the offline quick start.
//!
//! It serves repos built in memory or from fixture folders on 127.0.0.1 (port 0), following
//! the contract in docs/hub-protocol.md §6: revision info, paginated recursive trees with `Link`,
//! paths-info, `resolve` with the Hub's relative 307 for regular files and a 302 to a second
//! "CDN" listener on another loopback address for LFS files, `Range` → 206, `X-Error-Code` on
//! every error, gated repos (401 without a token, 403 with the wrong one). Every request is
//! logged (method, raw path, query, `Range`, `Authorization`) and chosen requests can be made
//! to fail ([`Fault`]).

mod fault;
pub mod model;
mod server;
mod xet;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

pub use fault::{Fault, FaultAction};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
pub use model::{Content, FileSpec, Kind, Repo, StoredFile, generate};
pub use xet::IssuedToken;

/// Which listener a request reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Host {
    /// The Hub API and resolve endpoints.
    Hub,
    /// The LFS "CDN" the Hub redirects to.
    Cdn,
    /// The front of the Xet CAS (Xet mode).
    Cas,
}

/// One request as the emulator saw it.
#[derive(Debug, Clone)]
pub struct LoggedRequest {
    /// Which listener.
    pub host: Host,
    /// `GET`, `HEAD`, `POST`...
    pub method: String,
    /// Raw, still percent-encoded path.
    pub path: String,
    /// Raw query string.
    pub query: Option<String>,
    /// The `Range` header.
    pub range: Option<String>,
    /// The `Authorization` header.
    pub authorization: Option<String>,
    /// When it arrived.
    pub at: Instant,
}

/// Shared server state.
pub(crate) struct State {
    repos: RwLock<HashMap<(Kind, String), Repo>>,
    log: Mutex<Vec<LoggedRequest>>,
    faults: Mutex<Vec<Fault>>,
    page_size: usize,
    regular_via_cdn: bool,
    external_cdn: Option<String>,
    /// The scheme of the links it writes (`https` behind a TLS front).
    scheme: String,
    /// Where LFS redirects point: the CDN listener, or the front before it.
    cdn_base: String,
    hub_addr: SocketAddr,
    cdn_addr: SocketAddr,
    cas_addr: SocketAddr,
    /// Xet mode: settings, hashes, issued tokens.
    xet: RwLock<xet::XetState>,
    /// Xorb-range body bytes the CAS front served.
    cas_bytes: xet::CasCounter,
}

impl State {
    fn log(&self, r: LoggedRequest) {
        if let Ok(mut log) = self.log.lock() {
            log.push(r);
        }
    }

    fn addr(&self, host: Host) -> SocketAddr {
        match host {
            Host::Hub => self.hub_addr,
            Host::Cdn => self.cdn_addr,
            Host::Cas => self.cas_addr,
        }
    }

    /// The first rule matching this request, consuming one of its `times`.
    fn take_fault(&self, host: Host, method: &str, path: &str) -> Option<FaultAction> {
        let mut faults = self.faults.lock().ok()?;
        let rule = faults.iter_mut().find(|f| f.matches(host, method, path))?;
        if let Some(n) = &mut rule.times {
            *n -= 1;
        }
        Some(rule.action.clone())
    }

    fn find_by_sha256(&self, sha: &str) -> Option<Arc<StoredFile>> {
        let repos = self.repos.read().ok()?;
        repos
            .values()
            .flat_map(|r| &r.commits)
            .flat_map(|c| c.files.values())
            .find(|f| f.sha256 == sha)
            .cloned()
    }
}

/// Configures an emulator before it starts.
pub struct Builder {
    repos: Vec<Repo>,
    page_size: usize,
    regular_via_cdn: bool,
    external_cdn: Option<String>,
    cdn_front: Option<String>,
    port: u16,
}

impl Builder {
    /// Serve this repo.
    pub fn repo(mut self, repo: Repo) -> Self {
        self.repos.push(repo);
        self
    }

    /// Tree listing page size (the Hub uses 1000; tests use small pages to force pagination).
    pub fn page_size(mut self, n: usize) -> Self {
        self.page_size = n;
        self
    }

    /// Redirect regular files to the CDN too (as some mirrors do), so every file download
    /// crosses hosts; the real Hub serves them from its own host.
    pub fn regular_files_via_cdn(mut self, yes: bool) -> Self {
        self.regular_via_cdn = yes;
        self
    }

    /// Redirect LFS downloads to `{base}/{path in the repo}` on another server (e.g. nginx
    /// serving the fixture folder with sendfile), so that benchmarks measure the client and
    /// not this server. Meant for a single repo served from a folder.
    pub fn external_cdn(mut self, base: &str) -> Self {
        self.external_cdn = Some(base.trim_end_matches('/').to_owned());
        self
    }

    /// Clients reach the emulator through a front (a TLS terminator, in tests of https):
    /// LFS downloads redirect to `{cdn_base}/lfs/<sha256>` (the front forwarding to
    /// [`HubEmulator::cdn_addr`]) and the links it writes (pagination, messages) use
    /// `cdn_base`'s scheme.
    pub fn behind_front(mut self, cdn_base: &str) -> Self {
        self.cdn_front = Some(cdn_base.trim_end_matches('/').to_owned());
        self
    }

    /// Listen on this Hub port instead of a free one.
    pub fn port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    /// Binds both listeners and starts serving on a background thread.
    pub fn start(self) -> std::io::Result<HubEmulator> {
        let hub = std::net::TcpListener::bind(("127.0.0.1", self.port))?;
        // Another loopback address, so clients see a different host, as with the real CDN.
        let cdn = std::net::TcpListener::bind("127.0.0.2:0")
            .or_else(|_| std::net::TcpListener::bind("127.0.0.1:0"))?;
        let cas = std::net::TcpListener::bind("127.0.0.1:0")?;
        hub.set_nonblocking(true)?;
        cdn.set_nonblocking(true)?;
        cas.set_nonblocking(true)?;
        let cdn_addr = cdn.local_addr()?;
        let cdn_base = self
            .cdn_front
            .unwrap_or_else(|| format!("http://{cdn_addr}"));
        let scheme = cdn_base.split("://").next().unwrap_or("http").to_owned();
        let state = Arc::new(State {
            repos: RwLock::new(
                self.repos
                    .into_iter()
                    .map(|r| ((r.kind, r.id.clone()), r))
                    .collect(),
            ),
            log: Mutex::new(Vec::new()),
            faults: Mutex::new(Vec::new()),
            page_size: self.page_size,
            regular_via_cdn: self.regular_via_cdn,
            external_cdn: self.external_cdn,
            scheme,
            cdn_base,
            hub_addr: hub.local_addr()?,
            cdn_addr,
            cas_addr: cas.local_addr()?,
            xet: RwLock::new(xet::XetState {
                lifetime: std::time::Duration::from_secs(3600),
                ..Default::default()
            }),
            cas_bytes: xet::CasCounter::default(),
        });
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("hub-emulator")
            .enable_all()
            .build()?;
        let thread_state = state.clone();
        let thread = std::thread::Builder::new()
            .name("hub-emulator".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let hub = tokio::net::TcpListener::from_std(hub)?;
                    let cdn = tokio::net::TcpListener::from_std(cdn)?;
                    let cas = tokio::net::TcpListener::from_std(cas)?;
                    tokio::spawn(serve(cas, Host::Cas, thread_state.clone(), stop_rx.clone()));
                    tokio::spawn(serve(hub, Host::Hub, thread_state.clone(), stop_rx.clone()));
                    tokio::spawn(serve(cdn, Host::Cdn, thread_state, stop_rx.clone()));
                    let mut stop = stop_rx;
                    while !*stop.borrow() {
                        if stop.changed().await.is_err() {
                            break;
                        }
                    }
                    Ok::<_, std::io::Error>(())
                })
            })?;
        Ok(HubEmulator {
            state,
            stop: stop_tx,
            thread: Some(thread),
        })
    }
}

async fn serve(
    listener: tokio::net::TcpListener,
    host: Host,
    state: Arc<State>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.changed() => return,
        };
        let Ok((stream, _)) = accepted else { continue };
        let state = state.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| server::handle(state.clone(), host, req));
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// A running emulator; stops when dropped.
pub struct HubEmulator {
    state: Arc<State>,
    stop: tokio::sync::watch::Sender<bool>,
    thread: Option<std::thread::JoinHandle<std::io::Result<()>>>,
}

impl HubEmulator {
    /// A builder with the Hub's page size of 1000.
    pub fn builder() -> Builder {
        Builder {
            repos: Vec::new(),
            page_size: 1000,
            regular_via_cdn: false,
            external_cdn: None,
            cdn_front: None,
            port: 0,
        }
    }

    /// The base URL to use as `HF_ENDPOINT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.state.hub_addr)
    }

    /// The CDN listener's address.
    pub fn cdn_addr(&self) -> SocketAddr {
        self.state.cdn_addr
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<LoggedRequest> {
        self.state.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Forgets the request log.
    pub fn clear_requests(&self) {
        if let Ok(mut l) = self.state.log.lock() {
            l.clear();
        }
    }

    /// Adds a fault rule (rules are tried in the order added).
    pub fn inject(&self, fault: Fault) {
        if let Ok(mut f) = self.state.faults.lock() {
            f.push(fault);
        }
    }

    /// Removes every fault rule.
    pub fn clear_faults(&self) {
        if let Ok(mut f) = self.state.faults.lock() {
            f.clear();
        }
    }

    /// Commits `files` on `branch` of an existing repo (e.g. to move `main`); returns the sha.
    pub fn push_commit(
        &self,
        kind: Kind,
        id: &str,
        branch: &str,
        files: Vec<FileSpec>,
    ) -> std::io::Result<String> {
        let mut repos = self
            .state
            .repos
            .write()
            .map_err(|_| std::io::Error::other("poisoned"))?;
        let repo = repos
            .get_mut(&(kind, id.to_owned()))
            .ok_or_else(|| std::io::Error::other(format!("no repo {id}")))?;
        repo.push_commit(branch, files)
    }

    /// Turns Xet mode on: LFS files with a registered Xet hash are announced as Xet-backed,
    /// the read-token route answers, and [`HubEmulator::cas_url`] fronts the real CAS at
    /// `upstream` (`http://127.0.0.1:PORT` of a `local_cas_server`). Issued tokens live
    /// `token_lifetime`.
    pub fn enable_xet(&self, upstream: &str, token_lifetime: std::time::Duration) {
        if let Ok(mut x) = self.state.xet.write() {
            x.upstream = Some(upstream.trim_end_matches('/').to_owned());
            x.lifetime = token_lifetime;
        }
    }

    /// Turns Xet mode off (files are announced as plain LFS again; hashes are kept).
    pub fn disable_xet(&self) {
        if let Ok(mut x) = self.state.xet.write() {
            x.upstream = None;
        }
    }

    /// Sets the lifetime of tokens issued from now on.
    pub fn set_xet_token_lifetime(&self, lifetime: std::time::Duration) {
        if let Ok(mut x) = self.state.xet.write() {
            x.lifetime = lifetime;
        }
    }

    /// Records the Xet file hash (API string form) of the LFS file with this sha256.
    pub fn register_xet_hash(&self, sha256: &str, xet_hash: &str) {
        if let Ok(mut x) = self.state.xet.write() {
            x.hashes.insert(sha256.to_owned(), xet_hash.to_owned());
        }
    }

    /// The CAS base URL clients are given (`casUrl`): the front of the real CAS.
    pub fn cas_url(&self) -> String {
        format!("http://{}", self.state.cas_addr)
    }

    /// Every CAS token issued so far, in order.
    pub fn xet_tokens(&self) -> Vec<IssuedToken> {
        self.state
            .xet
            .read()
            .map(|x| x.tokens.clone())
            .unwrap_or_default()
    }

    /// Body bytes of xorb ranges the CAS front has served so far.
    pub fn cas_bytes_served(&self) -> u64 {
        self.state
            .cas_bytes
            .0
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Resets the count of [`HubEmulator::cas_bytes_served`].
    pub fn reset_cas_bytes(&self) {
        self.state
            .cas_bytes
            .0
            .store(0, std::sync::atomic::Ordering::Relaxed);
    }

    /// The commit `rev` of a repo points at now.
    pub fn commit_of(&self, kind: Kind, id: &str, rev: &str) -> Option<String> {
        let repos = self.state.repos.read().ok()?;
        repos
            .get(&(kind, id.to_owned()))?
            .resolve(rev)
            .map(|c| c.sha.clone())
    }

    /// The stored files of a repo at `rev`, by path.
    pub fn files_at(&self, kind: Kind, id: &str, rev: &str) -> Vec<Arc<StoredFile>> {
        let Ok(repos) = self.state.repos.read() else {
            return Vec::new();
        };
        repos
            .get(&(kind, id.to_owned()))
            .and_then(|r| r.resolve(rev))
            .map(|c| c.files.values().cloned().collect())
            .unwrap_or_default()
    }
}

impl Drop for HubEmulator {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
