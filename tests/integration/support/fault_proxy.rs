//! A fault-injecting HTTP/1.1 proxy to put in front of a real registry on 127.0.0.1: it cuts a
//! request body after N bytes, cuts or resets the registry's answer (after N body bytes, or
//! before any), answers a status instead of the registry, turns PATCH's 202
//! into ECR's 201, enforces chunk sizes as registries do, and logs every request with the body
//! bytes it received. One request per connection (`Connection: close` both ways), so each
//! fault hits exactly one request.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

/// Cut the request of `method` during which the running total of that method's body bytes
/// passes `after`, once. By default nothing of the cut request reaches the registry (as
/// behind a proxy that buffers request bodies, nginx's default); with `forward_partial` the
/// bytes received go on to the registry before both connections close.
#[derive(Clone, Debug)]
pub struct Cut {
    pub method: &'static str,
    pub after: u64,
    pub forward_partial: bool,
}

/// Answer `status` instead of the registry to the requests of `method` whose path contains
/// `path`, after letting `skip` of them through, `times` times.
#[derive(Clone, Debug)]
pub struct StatusFault {
    pub method: &'static str,
    pub path: String,
    pub status: u16,
    pub skip: usize,
    pub times: usize,
}

impl StatusFault {
    /// `status` once, on the first match.
    pub fn once(method: &'static str, path: &str, status: u16) -> Self {
        StatusFault {
            method,
            path: path.to_owned(),
            status,
            skip: 0,
            times: 1,
        }
    }
}

/// Cut the registry's answer to the requests of `method` whose path contains `path`, `times`
/// times: the client gets the head and the first `after` body bytes (`None`: nothing at all),
/// then the connection closes, with a reset (RST) when `reset` is set.
#[derive(Clone, Debug)]
pub struct ResponseCut {
    pub method: &'static str,
    pub path: String,
    pub after: Option<u64>,
    pub reset: bool,
    pub times: usize,
}

impl ResponseCut {
    /// Cut the first answer of `method` for `path` after `after` body bytes, once.
    pub fn once(method: &'static str, path: &str, after: u64) -> Self {
        ResponseCut {
            method,
            path: path.to_owned(),
            after: Some(after),
            reset: false,
            times: 1,
        }
    }
}

/// The faults one proxy injects.
#[derive(Clone, Debug, Default)]
pub struct Faults {
    pub cut: Option<Cut>,
    pub statuses: Vec<StatusFault>,
    /// Answer PATCH with 201 where the registry said 202 (as ECR does).
    pub patch_201: bool,
    /// Announce `OCI-Chunk-Min-Length` on upload starts and refuse (416) a PATCH after a
    /// shorter one in the same session (only the last chunk may be short).
    pub min_chunk: Option<u64>,
    /// Refuse (416) a PATCH body larger than this (as GHCR does over 4 MiB).
    pub max_chunk: Option<u64>,
    /// Hold each request of this method this long before forwarding it (a slow link).
    pub delay: Option<(&'static str, std::time::Duration)>,
    /// Answers cut short or reset.
    pub response_cuts: Vec<ResponseCut>,
    /// Drop the requests' `Range` header (a registry, or a proxy, without range support: it
    /// answers `200` with the whole blob).
    pub no_ranges: bool,
}

/// One request as the proxy saw it.
#[derive(Clone, Debug)]
pub struct Logged {
    pub method: String,
    /// Path and query.
    pub path: String,
    /// Body bytes received from the client.
    pub body: u64,
    /// The status sent back; 0 when the connection was cut.
    pub status: u16,
    /// The request's `Range` header.
    pub range: Option<String>,
    /// Answer body bytes sent back (after a [`ResponseCut`], fewer than the registry's).
    pub sent: u64,
    /// True when the answer was cut short or reset ([`ResponseCut`]).
    pub answer_cut: bool,
}

#[derive(Default)]
struct State {
    faults: Faults,
    log: Vec<Logged>,
    bytes_by_method: HashMap<String, u64>,
    seen_by_fault: HashMap<usize, usize>,
    fired_by_fault: HashMap<usize, usize>,
    cut_done: bool,
    fired_by_response_cut: HashMap<usize, usize>,
    short_sessions: HashSet<String>,
    /// Connections accepted whose request is not logged yet.
    in_flight: usize,
}

/// Counts a connection as in flight until dropped, whichever way `serve` ends.
struct InFlight(Arc<Mutex<State>>);

impl InFlight {
    fn new(state: &Arc<Mutex<State>>) -> Self {
        state.lock().unwrap().in_flight += 1;
        InFlight(state.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Ok(mut s) = self.0.lock() {
            s.in_flight -= 1;
        }
    }
}

/// The proxy; it stops serving when dropped.
pub struct FaultProxy {
    /// `127.0.0.1:PORT`.
    pub addr: String,
    state: Arc<Mutex<State>>,
}

impl FaultProxy {
    /// A proxy on a free port of 127.0.0.1 that forwards to `upstream` with `faults`.
    pub fn start(upstream: &str, faults: Faults) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let state = Arc::new(Mutex::new(State {
            faults,
            ..State::default()
        }));
        let (st, up) = (state.clone(), upstream.to_owned());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { break };
                let (st, up) = (st.clone(), up.clone());
                let in_flight = InFlight::new(&st);
                std::thread::spawn(move || {
                    let _ = serve(conn, &up, &st);
                    drop(in_flight);
                });
            }
        });
        FaultProxy { addr, state }
    }

    /// Every request so far. A client may have given up on a cut answer while the proxy
    /// still lingers on that connection, so this waits (up to 5 s) until every accepted
    /// connection has been logged.
    pub fn log(&self) -> Vec<Logged> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let s = self.state.lock().unwrap();
            if s.in_flight == 0 || std::time::Instant::now() >= deadline {
                return s.log.clone();
            }
            drop(s);
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
}

/// The session part of an upload path (no query): PATCHes of one session share it.
fn session_of(path: &str) -> String {
    path.split('?').next().unwrap_or(path).to_owned()
}

/// What to do with one request.
enum Plan {
    Answer(u16, &'static str),
    Cut(u64, bool),
    Forward,
    /// Forward, then send the head and this many body bytes (`None`: nothing), then close
    /// (resetting when true).
    CutAnswer(Option<u64>, bool),
}

fn serve(client: TcpStream, upstream: &str, state: &Mutex<State>) -> std::io::Result<()> {
    let mut reader = BufReader::new(client.try_clone()?);
    let mut head = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let end = line == "\r\n";
        head.push(line);
        if end {
            break;
        }
    }
    let mut parts = head[0].split_whitespace();
    let method = parts.next().unwrap_or_default().to_owned();
    let path = parts.next().unwrap_or_default().to_owned();
    let len: u64 = head
        .iter()
        .find_map(|h| {
            let (k, v) = h.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    let range = head.iter().find_map(|h| {
        let (k, v) = h.split_once(':')?;
        k.eq_ignore_ascii_case("range").then(|| v.trim().to_owned())
    });

    let plan = {
        let mut s = state.lock().unwrap();
        let mut plan = Plan::Forward;
        for (i, f) in s.faults.statuses.clone().iter().enumerate() {
            if f.method == method && path.contains(&f.path) {
                let seen = *s
                    .seen_by_fault
                    .entry(i)
                    .and_modify(|n| *n += 1)
                    .or_insert(1);
                let fired = s.fired_by_fault.get(&i).copied().unwrap_or(0);
                if seen > f.skip && fired < f.times {
                    s.fired_by_fault.insert(i, fired + 1);
                    plan = Plan::Answer(f.status, "");
                    break;
                }
            }
        }
        if matches!(plan, Plan::Forward) && method == "PATCH" {
            let session = session_of(&path);
            if s.faults.max_chunk.is_some_and(|max| len > max) {
                plan = Plan::Answer(416, "chunk larger than the maximum");
            } else if s.short_sessions.contains(&session) {
                plan = Plan::Answer(416, "chunk after a chunk below the minimum");
            } else if s.faults.min_chunk.is_some_and(|min| len < min) {
                s.short_sessions.insert(session);
            }
        }
        let before = s.bytes_by_method.get(&method).copied().unwrap_or(0);
        if matches!(plan, Plan::Forward)
            && !s.cut_done
            && let Some(cut) = s.faults.cut.clone()
            && cut.method == method
            && before + len > cut.after
        {
            s.cut_done = true;
            plan = Plan::Cut(cut.after.saturating_sub(before), cut.forward_partial);
        }
        if matches!(plan, Plan::Forward) {
            for (i, c) in s.faults.response_cuts.clone().iter().enumerate() {
                let fired = s.fired_by_response_cut.get(&i).copied().unwrap_or(0);
                if c.method == method && path.contains(&c.path) && fired < c.times {
                    s.fired_by_response_cut.insert(i, fired + 1);
                    plan = Plan::CutAnswer(c.after, c.reset);
                    break;
                }
            }
        }
        plan
    };

    let mut client_w = client.try_clone()?;
    let (received, status, sent, answer_cut) = match plan {
        Plan::Answer(status, why) => {
            let got = std::io::copy(&mut (&mut reader).take(len), &mut std::io::sink())?;
            let body = if why.is_empty() {
                String::new()
            } else {
                format!(r#"{{"errors":[{{"code":"SIZE_INVALID","message":"{why}"}}]}}"#)
            };
            let extra = if status == 429 {
                "Retry-After: 1\r\n"
            } else {
                ""
            };
            write!(
                client_w,
                "HTTP/1.1 {status} Injected\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n{body}",
                body.len()
            )?;
            (got, status, body.len() as u64, false)
        }
        Plan::Cut(at, forward) => {
            let mut partial = Vec::new();
            (&mut reader).take(at).read_to_end(&mut partial)?;
            if forward {
                let mut up = TcpStream::connect(upstream)?;
                up.write_all(head.concat().as_bytes())?;
                up.write_all(&partial)?;
                up.flush()?;
                // The body ends short: the registry reads its end where it expected more,
                // keeps what it got and answers. Wait for that answer, so that what the
                // registry made of the cut chunk is settled before the client comes back (a
                // fixed pause was not always enough under load: the client's status query
                // then found the session as it was before the chunk).
                let _ = up.shutdown(Shutdown::Write);
                up.set_read_timeout(Some(std::time::Duration::from_secs(30)))?;
                let _ = std::io::copy(&mut up, &mut std::io::sink());
            }
            let _ = client.shutdown(Shutdown::Both);
            (partial.len() as u64, 0, 0, false)
        }
        Plan::CutAnswer(None, reset) => {
            let got = std::io::copy(&mut (&mut reader).take(len), &mut std::io::sink())?;
            if reset {
                reset_on_close(&client);
            } else {
                let _ = client.shutdown(Shutdown::Both);
            }
            (got, 0, 0, true)
        }
        Plan::Forward | Plan::CutAnswer(Some(_), _) => {
            let delay = state.lock().unwrap().faults.delay;
            if let Some((m, d)) = delay
                && m == method
            {
                std::thread::sleep(d);
            }
            let no_ranges = state.lock().unwrap().faults.no_ranges;
            let mut up = TcpStream::connect(upstream)?;
            for h in &head {
                let name = h.split(':').next().unwrap_or_default();
                let dropped = name.eq_ignore_ascii_case("connection")
                    || (no_ranges && name.eq_ignore_ascii_case("range"));
                if !dropped && h != "\r\n" {
                    up.write_all(h.as_bytes())?;
                }
            }
            up.write_all(b"Connection: close\r\n\r\n")?;
            // A registry may answer (401, 413) before it read the body and close: keep what
            // it answered.
            let got = std::io::copy(&mut (&mut reader).take(len), &mut up).unwrap_or(0);
            let mut answer = Vec::new();
            let _ = up.read_to_end(&mut answer);
            let (status, rewritten) = rewrite(&answer, &method, state);
            let body_at = rewritten
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
                .map_or(rewritten.len(), |p| p + 4);
            let body_len = (rewritten.len() - body_at) as u64;
            if let Plan::CutAnswer(Some(after), reset) = plan {
                let keep = body_at + usize::try_from(after.min(body_len)).unwrap();
                client_w.write_all(&rewritten[..keep])?;
                let _ = client_w.flush();
                // Let the client take what was sent before the connection goes.
                std::thread::sleep(std::time::Duration::from_millis(50));
                if reset {
                    reset_on_close(&client);
                } else {
                    let _ = client.shutdown(Shutdown::Both);
                }
                (got, status, after.min(body_len), true)
            } else {
                client_w.write_all(&rewritten)?;
                (got, status, body_len, false)
            }
        }
    };
    let _ = client_w.flush();
    if !answer_cut {
        let _ = client.shutdown(Shutdown::Both);
    }
    drop((client, client_w, reader));
    let mut s = state.lock().unwrap();
    *s.bytes_by_method.entry(method.clone()).or_insert(0) += received;
    s.log.push(Logged {
        method,
        path,
        body: received,
        status,
        range,
        sent,
        answer_cut,
    });
    Ok(())
}

/// Makes the next close of `conn` a reset (RST, `SO_LINGER` 0) instead of an orderly FIN.
fn reset_on_close(conn: &TcpStream) {
    use std::os::fd::AsRawFd;
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a valid socket and a `linger` of the size given.
    unsafe {
        libc::setsockopt(
            conn.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&raw const linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

/// The registry's answer as the client gets it: `Connection: close`, PATCH's 202 as 201 when
/// asked, `OCI-Chunk-Min-Length` on upload starts when a minimum is set.
fn rewrite(answer: &[u8], method: &str, state: &Mutex<State>) -> (u16, Vec<u8>) {
    let split = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(answer.len(), |p| p + 4);
    let head = String::from_utf8_lossy(&answer[..split]).into_owned();
    let mut lines: Vec<String> = head
        .split("\r\n")
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect();
    let mut status: u16 = lines
        .first()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let s = state.lock().unwrap();
    if method == "PATCH" && status == 202 && s.faults.patch_201 {
        status = 201;
        lines[0] = "HTTP/1.1 201 Created".into();
    }
    lines.retain(|l| !l.to_ascii_lowercase().starts_with("connection:"));
    lines.push("Connection: close".into());
    if method == "POST"
        && status == 202
        && let Some(min) = s.faults.min_chunk
    {
        lines.push(format!("OCI-Chunk-Min-Length: {min}"));
    }
    let mut out = lines.join("\r\n").into_bytes();
    out.extend_from_slice(b"\r\n\r\n");
    out.extend_from_slice(&answer[split..]);
    (status, out)
}
