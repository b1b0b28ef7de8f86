//! A hostile Hub (the emulator with fault rules, on 127.0.0.1): endless and oversized answers,
//! pagination and downloads that would never end, failures no retry can fix, credentials in
//! the endpoint, control characters and impossible trees in listings. Every case ends with a
//! clear error (exit 1-3) in well under 30 s, without touching anything outside the folders
//! the command owns; the endless-body cases also stay under 256 MiB of memory.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use hub_emulator::{Fault, FaultAction, FileSpec, Host, HubEmulator, Repo, generate};

use crate::support::hostile::{EntryState, Measured, assert_unchanged, run_measured, snapshot};
use crate::support::*;

const TINY: &str = "[[model]]\nid = \"acme/tiny\"\n";
const IN_TIME: Duration = Duration::from_secs(30);

/// A project, its store, and the state of both before the hostile run.
struct Scene {
    fetched: Fetched,
    before: BTreeMap<PathBuf, EntryState>,
}

impl Scene {
    /// A project with `manifest` and an empty store; nothing is locked yet.
    fn new(manifest: &str) -> Self {
        let fetched = Fetched {
            project: Project::new(manifest),
            store: tempfile::tempdir().expect("tempdir"),
            cache: tempfile::tempdir().expect("tempdir"),
        };
        let mut scene = Scene {
            fetched,
            before: BTreeMap::new(),
        };
        scene.before = scene.state();
        scene
    }

    /// `manifest` locked against `hub` (which must be well-behaved at this point).
    fn locked(hub: &HubEmulator, manifest: &str) -> Self {
        let mut scene = Scene::new(manifest);
        scene.fetched.project.lock_with(hub, &[]).ok();
        hub.clear_requests();
        scene.before = scene.state();
        scene
    }

    /// Everything outside the store: the project folder and `HF_HOME`.
    fn state(&self) -> BTreeMap<PathBuf, EntryState> {
        let p = &self.fetched.project;
        let mut all = BTreeMap::new();
        for (name, dir) in [("project", p.path()), ("hf_home", p.hf_home.path())] {
            all.extend(
                snapshot(dir)
                    .into_iter()
                    .map(|(k, v)| (PathBuf::from(name).join(k), v)),
            );
        }
        all
    }

    /// The binary (project folder, own store, fast retries) with `args`, measured.
    fn run(&self, args: &[&str], env: &[(&str, &str)]) -> Measured {
        let mut cmd: Command = self.fetched.cmd();
        cmd.args(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let m = run_measured(&mut cmd, IN_TIME + Duration::from_secs(5));
        eprintln!(
            "{args:?}: exit {}, {:.2}s, peak {} MiB",
            m.code,
            m.wall.as_secs_f64(),
            m.peak_rss >> 20
        );
        m
    }

    /// Asserts that nothing outside the store changed since the scene was set up.
    #[track_caller]
    fn assert_untouched(&self) {
        assert_unchanged("the project or HF_HOME", &self.before, &self.state());
    }
}

fn requests_to(hub: &HubEmulator, part: &str) -> usize {
    hub.requests()
        .iter()
        .filter(|r| r.path.contains(part))
        .count()
}

#[track_caller]
fn assert_mentions(m: &Measured, needles: &[&str]) {
    for n in needles {
        assert!(m.stderr.contains(n), "stderr lacks {n:?}:\n{}", m.stderr);
    }
}

// ---- class 1: unbounded reads ----------------------------------------------------------

#[test]
fn an_endless_revision_answer_ends_at_the_limit_without_retries() {
    let hub = emulator();
    hub.inject(Fault::on("/revision/").action(FaultAction::EndlessBody {
        status: 200,
        content_length: None,
    }));
    let scene = Scene::new(TINY);
    let endpoint = hub.endpoint();
    let m = scene.run(&["lock", "--endpoint", &endpoint], &[]);
    m.assert_clean_failure(IN_TIME).assert_peak_under_mib(256);
    assert_mentions(
        &m,
        &[
            &format!("{endpoint}/api/models/acme/tiny/revision/main"),
            "larger than the 32 MiB allowed for revision info",
        ],
    );
    assert_eq!(
        requests_to(&hub, "/revision/"),
        1,
        "an oversized answer is not retried"
    );
    scene.assert_untouched();
}

#[test]
fn a_revision_answer_announcing_more_than_the_hub_scale_cap_is_refused_before_reading() {
    let hub = emulator();
    // One byte over the cap sized from the Hub's 100,000-file limit.
    hub.inject(Fault::on("/revision/").action(FaultAction::EndlessBody {
        status: 200,
        content_length: Some((32 << 20) + 1),
    }));
    let scene = Scene::new(TINY);
    let m = scene.run(&["lock", "--endpoint", &hub.endpoint()], &[]);
    m.assert_clean_failure(IN_TIME).assert_peak_under_mib(256);
    assert_mentions(
        &m,
        &[
            "/api/models/acme/tiny/revision/main",
            "32 MiB allowed for revision info",
            "announced 33554433 bytes",
        ],
    );
    assert_eq!(requests_to(&hub, "/revision/"), 1, "not retried");
    scene.assert_untouched();
}

#[test]
fn a_tree_page_announcing_a_petabyte_is_refused_before_reading() {
    let hub = emulator();
    hub.inject(Fault::on("/tree/").action(FaultAction::EndlessBody {
        status: 200,
        content_length: Some(1_000_000_000_000_000),
    }));
    let scene = Scene::new(TINY);
    let m = scene.run(&["lock", "--endpoint", &hub.endpoint()], &[]);
    m.assert_clean_failure(IN_TIME).assert_peak_under_mib(256);
    assert_mentions(
        &m,
        &[
            "/api/models/acme/tiny/tree/",
            "4 MiB allowed for a tree page",
            "announced 1000000000000000 bytes",
        ],
    );
    assert_eq!(requests_to(&hub, "/tree/"), 1);
    scene.assert_untouched();
}

#[test]
fn an_endless_error_answer_is_read_only_for_its_message() {
    let hub = emulator();
    hub.inject(Fault::on("/revision/").action(FaultAction::EndlessBody {
        status: 400,
        content_length: None,
    }));
    let scene = Scene::new(TINY);
    let m = scene.run(&["lock", "--endpoint", &hub.endpoint()], &[]);
    m.assert_clean_failure(IN_TIME).assert_peak_under_mib(256);
    assert_mentions(
        &m,
        &["/api/models/acme/tiny/revision/main answered HTTP 400"],
    );
    scene.assert_untouched();
}

#[test]
fn an_endless_regular_file_stops_at_its_listed_size() {
    let hub = emulator();
    hub.inject(
        Fault::on("/api/resolve-cache/").action(FaultAction::EndlessBody {
            status: 200,
            content_length: None,
        }),
    );
    let scene = Scene::new(TINY);
    let m = scene.run(&["lock", "--endpoint", &hub.endpoint()], &[]);
    m.assert_clean_failure(IN_TIME).assert_peak_under_mib(256);
    assert_mentions(&m, &["longer than the", "bytes the listing gives"]);
    scene.assert_untouched();
}

#[test]
fn an_endless_plugin_download_stops_at_the_plugin_limit() {
    let hub = emulator();
    hub.inject(Fault::on("/endless.wasm").action(FaultAction::EndlessBody {
        status: 200,
        content_length: None,
    }));
    let url = format!("{}/files/endless.wasm", hub.endpoint());
    let scene = Scene::new(&format!(
        "{TINY}\n[mirror]\nuse = [\"m\"]\n\n[plugins.m]\nurl = \"{url}\"\n"
    ));
    let m = scene.run(&["lock", "--endpoint", &hub.endpoint()], &[]);
    m.assert_clean_failure(IN_TIME).assert_peak_under_mib(256);
    assert_mentions(&m, &[&url, "larger than the 64 MiB allowed for a plugin"]);
    scene.assert_untouched();
}

// ---- class 2: loops with a budget -------------------------------------------------------

#[test]
fn a_cdn_ignoring_range_with_short_answers_is_restarted_once_then_given_up() {
    let hub = emulator();
    let scene = Scene::locked(&hub, TINY);
    hub.inject(
        Fault::on("/lfs/")
            .host(Host::Cdn)
            .action(FaultAction::IgnoreRange(Some(1000))),
    );
    let m = scene.run(
        &["fetch", "--endpoint", &hub.endpoint(), "-j", "1"],
        &[("MODELBAKE_HTTP_RETRIES", "3")],
    );
    m.assert_clean_failure(IN_TIME);
    assert_mentions(&m, &["ignores `Range` requests", "giving up"]);
    let cdn_gets: Vec<_> = hub
        .requests()
        .into_iter()
        .filter(|r| r.host == Host::Cdn && r.method == "GET")
        .collect();
    // Per short file: the first answer, one `Range` request answered from 0 (the restart),
    // and one more that proves the server keeps doing it.
    assert!(
        !cdn_gets.is_empty() && cdn_gets.len() <= 3 * 2,
        "{} CDN requests: {:?}",
        cdn_gets.len(),
        cdn_gets.iter().map(|r| &r.range).collect::<Vec<_>>()
    );
    scene.assert_untouched();
}

#[test]
fn a_cdn_ignoring_range_but_sending_everything_still_works() {
    let hub = emulator();
    let scene = Scene::locked(&hub, TINY);
    // The first answer drops after 1000 bytes; the resumed request is answered from byte 0.
    hub.inject(
        Fault::on("/lfs/")
            .host(Host::Cdn)
            .action(FaultAction::Truncate(1000))
            .times(1),
    );
    hub.inject(
        Fault::on("/lfs/")
            .host(Host::Cdn)
            .action(FaultAction::IgnoreRange(None)),
    );
    let m = scene.run(&["fetch", "--endpoint", &hub.endpoint(), "-j", "1"], &[]);
    assert_eq!(m.code, 0, "{}", m.stderr);
    scene.fetched.export(&[]).ok();
    scene.fetched.verify(&[]).ok();
}

#[test]
fn a_link_back_to_a_page_already_read_is_refused() {
    let hub = emulator();
    let commit = hub
        .commit_of(hub_emulator::Kind::Model, "acme/tiny", "main")
        .expect("commit");
    let page = format!(
        "{}/api/models/acme/tiny/tree/{commit}?recursive=true&expand=false",
        hub.endpoint()
    );
    hub.inject(Fault::on("/tree/").action(FaultAction::Header(
        "link".into(),
        format!("<{page}>; rel=\"next\""),
    )));
    let scene = Scene::new(TINY);
    let m = scene.run(&["lock", "--endpoint", &hub.endpoint()], &[]);
    m.assert_clean_failure(IN_TIME);
    assert_mentions(&m, &["the tree listing never ends", "a page already read"]);
    assert_eq!(requests_to(&hub, "/tree/"), 1);
    scene.assert_untouched();
}

#[test]
fn pages_that_never_end_stop_at_the_page_cap() {
    let hub = emulator();
    hub.inject(Fault::on("/tree/").action(FaultAction::EndlessPages));
    let scene = Scene::new(TINY);
    let m = scene.run(&["lock", "--endpoint", &hub.endpoint()], &[]);
    m.assert_clean_failure(IN_TIME).assert_peak_under_mib(256);
    assert_mentions(&m, &["the tree listing never ends", "more than 2000 pages"]);
    assert_eq!(requests_to(&hub, "/tree/"), 2_000);
    scene.assert_untouched();
}

#[test]
fn pagination_never_leaves_the_endpoint_and_the_token_stays_home() {
    let hub = emulator();
    let elsewhere = format!(
        "http://{}/api/models/acme/tiny/tree/main?cursor=1",
        hub.cdn_addr()
    );
    hub.inject(Fault::on("/tree/").action(FaultAction::Header(
        "link".into(),
        format!("<{elsewhere}>; rel=\"next\""),
    )));
    let scene = Scene::new(TINY);
    let m = scene.run(
        &["lock", "--endpoint", &hub.endpoint()],
        &[("HF_TOKEN", "hf_secret_token")],
    );
    m.assert_clean_failure(IN_TIME);
    assert_mentions(&m, &[&elsewhere, "another origin than the endpoint"]);
    let cdn: Vec<_> = hub
        .requests()
        .into_iter()
        .filter(|r| r.host == Host::Cdn)
        .collect();
    assert!(cdn.is_empty(), "the other host was contacted: {cdn:?}");
    scene.assert_untouched();
}

// ---- class 3: failures no retry can fix -------------------------------------------------

#[test]
fn https_to_a_plain_http_port_says_so_without_retrying() {
    let hub = emulator();
    let plain = hub.endpoint();
    let tls = plain.replacen("http://", "https://", 1);
    let scene = Scene::new(TINY);
    let m = scene.run(&["lock", "--endpoint", &tls], &[]);
    m.assert_clean_failure(IN_TIME);
    assert_mentions(&m, &["speaks plain HTTP", &format!("use {plain}")]);
    assert!(
        !m.stderr.contains("gave up") && !m.stderr.contains("may be down"),
        "{}",
        m.stderr
    );
    scene.assert_untouched();
}

#[test]
fn a_redirect_to_another_scheme_is_refused_at_once() {
    let hub = emulator();
    hub.inject(Fault::on("/revision/").action(FaultAction::Redirect("file:///etc/passwd".into())));
    let scene = Scene::new(TINY);
    let m = scene.run(&["lock", "--endpoint", &hub.endpoint()], &[]);
    m.assert_clean_failure(IN_TIME);
    assert_mentions(&m, &["file:///etc/passwd", "unsupported `file:` URL"]);
    assert!(!m.stderr.contains("may be down"), "{}", m.stderr);
    assert_eq!(requests_to(&hub, "/revision/"), 1, "not retried");
    scene.assert_untouched();
}

// ---- class 4: credentials in the endpoint -----------------------------------------------

#[track_caller]
fn assert_no_secret(m: &Measured) {
    for (name, text) in [("stdout", &m.stdout), ("stderr", &m.stderr)] {
        assert!(
            !text.contains("s3cret"),
            "{name} shows the password:\n{text}"
        );
    }
}

#[test]
fn credentials_in_the_endpoint_are_never_printed() {
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let hub = emulator();
    let with_creds = |base: &str| base.replacen("http://", "http://user:s3cret@", 1);
    let scene = Scene::new(TINY);
    let fast = [("MODELBAKE_HTTP_RETRIES", "1")];

    // Nothing listens there: the connection error, in --json and the -vv log too.
    let dead = with_creds(&format!("http://127.0.0.1:{closed}"));
    for extra in [&["--json"][..], &["-vv"][..]] {
        let mut args = vec!["lock", "--endpoint", &dead];
        args.extend_from_slice(extra);
        let m = scene.run(&args, &fast);
        m.assert_clean_failure(IN_TIME);
        assert_mentions(&m, &[&format!("http://***@127.0.0.1:{closed}")]);
        assert_no_secret(&m);
    }

    // A failing server, an unknown repo, and a fetch whose downloads fail.
    let live = with_creds(&hub.endpoint());
    hub.inject(Fault::on("/revision/").status(500).times(2));
    let m = scene.run(&["lock", "--endpoint", &live, "-vv"], &fast);
    m.assert_clean_failure(IN_TIME);
    assert_mentions(&m, &["HTTP 500"]);
    assert_no_secret(&m);

    let missing = Scene::new("[[model]]\nid = \"acme/missing\"\n");
    let m = missing.run(&["lock", "--json", "--endpoint", &live], &fast);
    m.assert_clean_failure(IN_TIME);
    assert_mentions(&m, &["was not found on http://***@127.0.0.1"]);
    assert_no_secret(&m);

    let locked = Scene::locked(&hub, TINY);
    let m = locked.run(&["fetch", "--json", "--endpoint", &dead, "-vv"], &fast);
    m.assert_clean_failure(IN_TIME);
    assert_no_secret(&m);
    locked.assert_untouched();
    scene.assert_untouched();
}

/// The marker in every value of the signed query the resolve redirects to.
const SIGNED: &str = "SIGNED-MARKER-7q2";

/// Redirects every LFS file of `acme/tiny` to its CDN object under a presigned-looking URL
/// (`X-Amz-Signature`, `X-Amz-Credential`, `Expires`, `token`, all carrying [`SIGNED`]).
fn sign_cdn_redirects(hub: &HubEmulator) -> usize {
    let cdn = hub.cdn_addr();
    let lfs: Vec<_> = hub
        .files_at(hub_emulator::Kind::Model, "acme/tiny", "main")
        .into_iter()
        .filter(|f| f.lfs)
        .collect();
    for f in &lfs {
        hub.inject(
            Fault::on(&format!("/{}", f.path))
                .host(Host::Hub)
                .action(FaultAction::Redirect(format!(
                    "http://{cdn}/lfs/{}?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential={SIGNED}-cred%2F20250101&X-Amz-Signature={SIGNED}-sig&Expires=1&token={SIGNED}-tok&sig={SIGNED}",
                    f.sha256
                ))),
        );
    }
    lfs.len()
}

#[track_caller]
fn assert_no_signature(m: &Measured) {
    for (name, text) in [("stdout", &m.stdout), ("stderr", &m.stderr)] {
        assert!(
            !text.contains(SIGNED),
            "{name} shows a signed URL's query:\n{text}"
        );
    }
}

/// Hostile review (issue 23): the query of a signed CDN URL is a bearer credential. A fetch
/// through such redirects prints none of it, in `--json`, `-vv` and trace logs, whether the
/// download works or the CDN answers with an error.
#[test]
fn signed_cdn_urls_never_print_their_query() {
    let hub = emulator();
    let scene = Scene::locked(&hub, TINY);
    assert!(sign_cdn_redirects(&hub) > 0, "acme/tiny has an LFS file");
    let endpoint = hub.endpoint();
    let m = scene.run(&["fetch", "--json", "-vv", "--endpoint", &endpoint], &[]);
    assert_eq!(m.code, 0, "{}", m.stderr);
    assert_no_signature(&m);
    assert!(
        hub.requests()
            .iter()
            .any(|r| r.host == Host::Cdn && r.query.as_deref().is_some_and(|q| q.contains(SIGNED))),
        "the signed URL was used"
    );

    // The CDN refuses (no retry can fix it), then fails (retried, then given up): the errors
    // name the CDN's host and path, not the signature.
    let fast = [("MODELBAKE_HTTP_RETRIES", "1")];
    for status in [403, 500] {
        let scene = Scene::locked(&hub, TINY);
        hub.clear_faults();
        sign_cdn_redirects(&hub);
        hub.inject(Fault::on("/lfs/").host(Host::Cdn).status(status));
        for (args, env) in [
            (&["fetch", "--json", "-vv"][..], &fast[..]),
            (&["fetch"][..], &[fast[0], ("MODELBAKE_LOG", "trace")][..]),
        ] {
            let mut args = args.to_vec();
            args.extend(["--endpoint", &endpoint]);
            let m = scene.run(&args, env);
            m.assert_clean_failure(IN_TIME);
            assert_no_signature(&m);
            assert_mentions(&m, &[&format!("{}/lfs/", hub.cdn_addr())]);
        }
    }
    scene.assert_untouched();
}

// ---- class 5: control characters from the Hub -------------------------------------------

#[test]
fn control_characters_in_listed_names_are_refused_and_shown_escaped() {
    let evil = "title\u{1b}]0;pwned\u{7}\nFinished\u{1b}[2J.json";
    let hub = HubEmulator::builder()
        .repo(Repo::model("acme/evil").commit(
            "main",
            vec![
                FileSpec::regular("config.json", CONFIG_JSON),
                FileSpec::regular(evil, "{}"),
            ],
        ))
        .start()
        .expect("emulator");
    let scene = Scene::new("[[model]]\nid = \"acme/evil\"\ninclude = [\"config.json\"]\n");
    let m = scene.run(&["lock", "--endpoint", &hub.endpoint()], &[]);
    m.assert_clean_failure(IN_TIME);
    assert_mentions(
        &m,
        &[
            "model `acme/evil`",
            "title\\u{1b}]0;pwned\\u{7}\\nFinished\\u{1b}[2J.json",
            "control characters",
        ],
    );
    assert!(
        !m.stderr.contains(['\u{1b}', '\u{7}']),
        "raw control characters reached the terminal:\n{:?}",
        m.stderr
    );
    scene.assert_untouched();
}

#[test]
fn control_characters_in_hub_error_messages_are_escaped() {
    let hub = emulator();
    hub.inject(Fault::on("/tree/").action(FaultAction::ErrorBody(
        400,
        "bad\u{1b}[2J\u{1b}]0;owned\u{7}\nerror: forged line".into(),
    )));
    let scene = Scene::new(TINY);
    let m = scene.run(&["lock", "--endpoint", &hub.endpoint()], &[]);
    m.assert_clean_failure(IN_TIME);
    assert_mentions(
        &m,
        &["bad\\u{1b}[2J\\u{1b}]0;owned\\u{7}\\nerror: forged line"],
    );
    assert!(!m.stderr.contains(['\u{1b}', '\u{7}']), "{:?}", m.stderr);
    assert_eq!(
        m.stderr.lines().filter(|l| l.starts_with("error:")).count(),
        1
    );
    scene.assert_untouched();
}

// ---- class 6: impossible trees ----------------------------------------------------------

#[test]
fn impossible_trees_are_refused_at_lock() {
    let name = "n".repeat(200);
    let deep = vec![name.as_str(); 21].join("/");
    let long_name = "y".repeat(256);
    let cases = [
        (
            vec!["a", "a/b"],
            "`a` is listed both as a file and as the folder of `a/b`",
        ),
        (vec!["x/long", &*long_name], "a name of 256 bytes"),
        (vec!["x/long", &*deep], "4220 bytes long"),
    ];
    for (paths, why) in cases {
        let files = paths.iter().map(|p| FileSpec::regular(p, "x\n")).collect();
        let hub = HubEmulator::builder()
            .repo(Repo::model("acme/odd").commit("main", files))
            .start()
            .expect("emulator");
        let scene = Scene::new("[[model]]\nid = \"acme/odd\"\n");
        let m = scene.run(&["lock", "--endpoint", &hub.endpoint()], &[]);
        m.assert_clean_failure(IN_TIME);
        assert_mentions(&m, &["model `acme/odd`", why]);
        scene.assert_untouched();
    }
}

// ---- well-formed input ------------------------------------------------------------------

/// A dataset whose revision info (every file in `siblings`) is larger than the 4 MiB that
/// capped it before: 1,600 LFS files with 3,000-byte paths (no download needed to lock them)
/// stand in for the Hub's 100,000 files of short names, which are as large (4.4 MB).
#[test]
fn a_dataset_whose_revision_info_exceeds_4_mib_locks() {
    let folder = |c: char| c.to_string().repeat(240);
    let deep: String = ('a'..='l').map(|c| format!("{}/", folder(c))).collect();
    let files: Vec<FileSpec> = (0..1_600)
        .map(|i| FileSpec::lfs(&format!("{deep}row-{i:05}.bin"), format!("{i}\n")))
        .collect();
    let hub = HubEmulator::builder()
        .repo(Repo::dataset("acme/rows").commit("main", files))
        .page_size(200)
        .start()
        .expect("emulator");
    let info = format!("{}/api/datasets/acme/rows/revision/main", hub.endpoint());
    let size = body_len(&info);
    assert!(
        size > 4 << 20,
        "the revision info is {size} bytes, not over the old cap"
    );
    let scene = Scene::new("[[dataset]]\nid = \"acme/rows\"\n");
    let m = scene.run(&["lock", "--endpoint", &hub.endpoint()], &[]);
    assert_eq!(m.code, 0, "{}", m.stderr);
    let lock = std::fs::read_to_string(scene.fetched.project.path().join("models.lock"))
        .expect("models.lock");
    assert_eq!(lock.matches("[[repo.file]]").count(), 1_600);
    assert!(lock.contains(&format!("{deep}row-01599.bin")));
}

/// The length of the body at `url` (a plain GET with the standard library).
fn body_len(url: &str) -> usize {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").expect("http URL");
    let (host, path) = rest.split_once('/').expect("path");
    let mut s = std::net::TcpStream::connect(host).expect("connect");
    write!(s, "GET /{path} HTTP/1.0\r\nHost: {host}\r\n\r\n").expect("send");
    let mut all = Vec::new();
    s.read_to_end(&mut all).expect("read");
    let head = all
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("headers");
    all.len() - head - 4
}

#[test]
fn a_well_behaved_hub_with_many_pages_still_locks_fetches_and_exports() {
    let mut files = tiny_files();
    files.extend(
        (0..30).map(|i| FileSpec::regular(&format!("extra/f{i:02}.txt"), format!("{i}\n"))),
    );
    files.push(FileSpec::lfs("big/weights.bin", generate(200_000, 7)));
    let hub = HubEmulator::builder()
        .repo(Repo::model("acme/tiny").commit("main", files))
        .page_size(3)
        .start()
        .expect("emulator");
    let scene = Scene::new(TINY);
    let m = scene.run(&["lock", "--endpoint", &hub.endpoint()], &[]);
    assert_eq!(m.code, 0, "{}", m.stderr);
    assert!(requests_to(&hub, "/tree/") > 10, "pagination was exercised");
    let m = scene.run(&["fetch", "--endpoint", &hub.endpoint()], &[]);
    assert_eq!(m.code, 0, "{}", m.stderr);
    scene.fetched.export(&[]).ok();
    scene.fetched.verify(&[]).ok();
}
