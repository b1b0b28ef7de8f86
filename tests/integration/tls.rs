//! TLS trust and proxies as companies run them: a real Distribution registry serving HTTPS with
//! a certificate from a test CA (reached through a private `certs.d` tree, `SSL_CERT_FILE` or
//! `SSL_CERT_DIR`, refused with a clear message otherwise, and asking for a client certificate
//! that `certs.d` supplies); the Hub emulator behind a TLS front for `lock` and `fetch`
//! (`SSL_CERT_FILE`, `REQUESTS_CA_BUNDLE`); a CONNECT proxy on loopback used through
//! `HTTPS_PROXY` (credentials sent to it, never printed) and bypassed for `NO_PROXY` hosts.

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

use hub_emulator::HubEmulator;

use crate::support::oci::*;
use crate::support::*;

const TINY: &str = "[[model]]\nid = \"acme/tiny\"\n";

/// A test CA with a server certificate for 127.0.0.1, 127.0.0.2 and localhost and a client
/// certificate, made with the openssl CLI.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new(openssl: &Path) -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let ssl = |args: &[&str]| {
            sh(Command::new(openssl).args(args).current_dir(dir.path()));
        };
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        let mut ca = vec!["req", "-x509"];
        ca.extend(ec);
        ca.extend([
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-days",
            "2",
            "-subj",
            "/CN=modelbake test CA",
        ]);
        ssl(&ca);
        for (name, usage, san) in [
            (
                "server",
                "serverAuth",
                "subjectAltName=IP:127.0.0.1,IP:127.0.0.2,DNS:localhost\n",
            ),
            ("client", "clientAuth", ""),
        ] {
            let ext = format!("{name}.ext");
            fs::write(
                dir.path().join(&ext),
                format!("{san}extendedKeyUsage={usage}\nbasicConstraints=CA:FALSE\n"),
            )
            .unwrap();
            let (key, csr, crt) = (
                format!("{name}.key"),
                format!("{name}.csr"),
                format!("{name}.crt"),
            );
            let mut req = vec!["req"];
            req.extend(ec);
            req.extend(["-keyout", &key, "-out", &csr, "-subj", "/CN=127.0.0.1"]);
            ssl(&req);
            ssl(&[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &crt,
                "-days",
                "2",
                "-extfile",
                &ext,
            ]);
        }
        Pki { dir }
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn ca(&self) -> PathBuf {
        self.file("ca.crt")
    }
}

/// A Distribution registry serving HTTPS with the test server certificate; with
/// `client_cas`, it demands a client certificate signed by the test CA.
fn tls_registry(bin: &Path, pki: &Pki, client_cas: bool) -> Registry {
    Registry::start_configured(bin, |_| {
        let mut yaml = format!(
            "  tls:\n    certificate: {}\n    key: {}\n",
            pki.file("server.crt").display(),
            pki.file("server.key").display()
        );
        if client_cas {
            yaml.push_str(&format!("    clientcas:\n      - {}\n", pki.ca().display()));
        }
        yaml
    })
}

/// A private `certs.d` tree with these files under `<host>/`.
fn certs_d(host: &str, files: &[(&str, &Path)]) -> tempfile::TempDir {
    let tree = tempfile::tempdir().unwrap();
    let folder = tree.path().join(host);
    fs::create_dir_all(&folder).unwrap();
    for (name, from) in files {
        fs::copy(from, folder.join(name)).unwrap();
    }
    tree
}

/// The binary for `f` with no trust or proxy setting inherited from this machine: an empty
/// `certs.d` tree and none of the CA or proxy variables.
fn clean(f: &Fetched, empty_tree: &Path) -> Command {
    let mut c = f.cmd();
    for var in [
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
        "REQUESTS_CA_BUNDLE",
        "HTTPS_PROXY",
        "https_proxy",
        "HTTP_PROXY",
        "http_proxy",
        "ALL_PROXY",
        "all_proxy",
        "NO_PROXY",
        "no_proxy",
    ] {
        c.env_remove(var);
    }
    c.env("MODELBAKE_CERTS_DIRS", empty_tree);
    c
}

/// True when the registry stored a manifest for this repository and tag.
fn manifest_put(registry: &Registry, repo_tag: &str) -> bool {
    let (repo, tag) = repo_tag.split_once(':').unwrap();
    registry
        .requests()
        .iter()
        .any(|l| l.starts_with(&format!("PUT /v2/{repo}/manifests/{tag}")))
}

#[track_caller]
fn assert_mentions(text: &str, parts: &[&str]) {
    for part in parts {
        assert!(text.contains(part), "missing {part:?} in:\n{text}");
    }
}

#[test]
fn a_registry_with_a_private_ca_is_trusted_through_certs_d_or_the_ssl_variables_and_refused_otherwise()
 {
    let (Some(registry_bin), Some(openssl), Some(skopeo)) =
        (tool("docker-registry"), tool("openssl"), tool("skopeo"))
    else {
        return;
    };
    let pki = Pki::new(&openssl);
    let registry = tls_registry(&registry_bin, &pki, false);
    let reg = registry.addr.clone();
    let hub = emulator();
    let f = Fetched::new(&hub, TINY);
    f.fetch(&hub, &[]).ok();
    let empty = tempfile::tempdir().unwrap();
    let push = |cmd: &mut Command, tag: &str| {
        run(cmd.args([
            "bake",
            "--json",
            "--push",
            &format!("{reg}/models/app:{tag}"),
        ]))
    };

    // Nothing trusts the test CA: refused before any HTTP request, saying which host, that its
    // certificate is not trusted and where a CA goes. A folder for another port does not count.
    let other_port = certs_d("127.0.0.1:1", &[("ca.crt", &pki.ca())]);
    let r = push(
        clean(&f, empty.path()).env("MODELBAKE_CERTS_DIRS", other_port.path()),
        "v0",
    );
    r.expect_code(1);
    let v: serde_json::Value =
        serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{e}: {}", r.stdout));
    let error = v["error"].as_str().unwrap_or_default();
    assert_mentions(
        error,
        &[
            &format!("TLS certificate of {reg} is not trusted"),
            "SSL_CERT_FILE",
            "REQUESTS_CA_BUNDLE",
            &format!("certs.d/{reg}/ca.crt"),
        ],
    );
    assert!(!r.stderr.contains("UnknownIssuer\n"), "{}", r.stderr);
    assert!(registry.requests().is_empty(), "{:?}", registry.requests());

    // The CA in the registry's own certs.d folder (a private copy of /etc/containers/certs.d).
    let tree = certs_d(&reg, &[("ca.crt", &pki.ca())]);
    push(&mut clean(&f, tree.path()), "v1").ok();
    assert!(manifest_put(&registry, "models/app:v1"));

    // SSL_CERT_FILE, and SSL_CERT_DIR with the CA among other files.
    push(clean(&f, empty.path()).env("SSL_CERT_FILE", pki.ca()), "v2").ok();
    assert!(manifest_put(&registry, "models/app:v2"));
    let dir = tempfile::tempdir().unwrap();
    fs::copy(pki.ca(), dir.path().join("corp-root.pem")).unwrap();
    push(
        clean(&f, empty.path()).env("SSL_CERT_DIR", dir.path()),
        "v3",
    )
    .ok();
    assert!(manifest_put(&registry, "models/app:v3"));

    // What was pushed over TLS is the image: skopeo pulls it back with the same CA and
    // `verify --oci` re-hashes every layer and file.
    let pulled = f.cache.path().join("pulled");
    pull_and_verify(
        &f,
        &skopeo,
        &["--src-cert-dir", tree.path().join(&reg).to_str().unwrap()],
        &format!("{reg}/models/app:v1"),
        &pulled,
    );
}

#[test]
fn a_registry_asking_for_a_client_certificate_gets_the_one_in_certs_d() {
    let (Some(registry_bin), Some(openssl)) = (tool("docker-registry"), tool("openssl")) else {
        return;
    };
    let pki = Pki::new(&openssl);
    let registry = tls_registry(&registry_bin, &pki, true);
    let reg = registry.addr.clone();
    let hub = emulator();
    let f = Fetched::new(&hub, TINY);
    f.fetch(&hub, &[]).ok();
    let target = format!("{reg}/models/app:v1");

    // The CA alone: the registry ends the connection and nothing is pushed. (Over TLS 1.3 its
    // "certificate required" alert arrives after the handshake, and the HTTP stack reports only
    // a closed connection, so the message cannot name the cause.)
    let ca_only = certs_d(&reg, &[("ca.crt", &pki.ca())]);
    let r = run(clean(&f, ca_only.path()).args(["bake", "--push", &target]));
    r.expect_code(1);
    assert_mentions(&r.stderr, &[&format!("https://{reg}/v2/")]);
    assert!(!manifest_put(&registry, "models/app:v1"));

    // Half a pair is refused before connecting, naming the file.
    let half = certs_d(
        &reg,
        &[
            ("ca.crt", &pki.ca()),
            ("client.cert", &pki.file("client.crt")),
        ],
    );
    let r = run(clean(&f, half.path()).args(["bake", "--push", &target]));
    r.expect_code(1);
    assert_mentions(&r.stderr, &["client.cert", "client.key"]);

    // With client.cert and client.key beside the CA, the push goes through.
    let full = certs_d(
        &reg,
        &[
            ("ca.crt", &pki.ca()),
            ("client.cert", &pki.file("client.crt")),
            ("client.key", &pki.file("client.key")),
        ],
    );
    run(clean(&f, full.path()).args(["bake", "--push", &target])).ok();
    assert!(manifest_put(&registry, "models/app:v1"));
}

/// A TLS terminator on `listener` forwarding every connection to `target`, on its own runtime.
struct TlsFront {
    _runtime: tokio::runtime::Runtime,
}

impl TlsFront {
    fn start(listener: TcpListener, target: SocketAddr, pki: &Pki) -> TlsFront {
        use tokio_rustls::rustls;
        use tokio_rustls::rustls::pki_types::pem::PemObject;
        use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let certs: Vec<CertificateDer<'static>> =
            CertificateDer::pem_file_iter(pki.file("server.crt"))
                .unwrap()
                .map(Result::unwrap)
                .collect();
        let key = PrivateKeyDer::from_pem_file(pki.file("server.key")).unwrap();
        let mut config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        listener.set_nonblocking(true).unwrap();
        runtime.spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    // A client that does not trust the certificate ends the handshake here.
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let Ok(mut upstream) = tokio::net::TcpStream::connect(target).await else {
                        return;
                    };
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut upstream).await;
                });
            }
        });
        TlsFront { _runtime: runtime }
    }
}

/// The Hub emulator reached only over https: a TLS front for the Hub (127.0.0.1) and one for
/// the CDN (127.0.0.2), LFS redirects pointing at the latter.
struct TlsHub {
    hub: HubEmulator,
    endpoint: String,
    cdn: String,
    _fronts: [TlsFront; 2],
}

impl TlsHub {
    fn start(pki: &Pki) -> TlsHub {
        let hub_front = TcpListener::bind("127.0.0.1:0").unwrap();
        let cdn_front = TcpListener::bind("127.0.0.2:0").unwrap();
        let endpoint = format!("https://{}", hub_front.local_addr().unwrap());
        let cdn = cdn_front.local_addr().unwrap().to_string();
        let hub = HubEmulator::builder()
            .repo(tiny_repo())
            .behind_front(&format!("https://{cdn}"))
            .start()
            .unwrap();
        let plain_hub: SocketAddr = hub
            .endpoint()
            .trim_start_matches("http://")
            .parse()
            .unwrap();
        let fronts = [
            TlsFront::start(hub_front, plain_hub, pki),
            TlsFront::start(cdn_front, hub.cdn_addr(), pki),
        ];
        TlsHub {
            hub,
            endpoint,
            cdn,
            _fronts: fronts,
        }
    }

    fn host(&self) -> &str {
        self.endpoint.trim_start_matches("https://")
    }
}

/// A fresh project with its own store, not yet locked.
fn project() -> Fetched {
    Fetched {
        project: Project::new(TINY),
        store: tempfile::tempdir().unwrap(),
        cache: tempfile::tempdir().unwrap(),
    }
}

#[test]
fn the_hub_behind_tls_works_for_lock_and_fetch_with_ssl_cert_file_or_requests_ca_bundle() {
    let Some(openssl) = tool("openssl") else {
        return;
    };
    let pki = Pki::new(&openssl);
    let hub = TlsHub::start(&pki);
    let empty = tempfile::tempdir().unwrap();
    let f = project();

    let r = run(clean(&f, empty.path()).args(["lock", "--endpoint", &hub.endpoint]));
    r.expect_code(1);
    assert_mentions(
        &r.stderr,
        &[
            &format!("TLS certificate of {} is not trusted", hub.host()),
            "SSL_CERT_FILE",
        ],
    );
    assert!(!f.project.lock_path().exists());

    run(clean(&f, empty.path())
        .env("SSL_CERT_FILE", pki.ca())
        .args(["lock", "--endpoint", &hub.endpoint]))
    .ok();
    hub.hub.clear_requests();
    run(clean(&f, empty.path())
        .env("REQUESTS_CA_BUNDLE", pki.ca())
        .args(["fetch", "--endpoint", &hub.endpoint]))
    .ok();
    // The LFS files came through the CDN's TLS front, and every byte was verified.
    assert!(
        hub.hub
            .requests()
            .iter()
            .any(|r| r.host == hub_emulator::Host::Cdn),
        "no download went through the CDN"
    );
    run(clean(&f, empty.path()).args(["export", "--hub-cache", f.hub_cache().to_str().unwrap()]))
        .ok();
    run(clean(&f, empty.path()).args(["verify", "--hub-cache", f.hub_cache().to_str().unwrap()]))
        .ok();
}

/// An HTTP CONNECT proxy on 127.0.0.1 that records each request head and tunnels the bytes;
/// with `credentials`, it answers 407 unless `Proxy-Authorization` carries them.
struct ConnectProxy {
    addr: SocketAddr,
    heads: Arc<Mutex<Vec<String>>>,
}

impl ConnectProxy {
    fn start(credentials: &str) -> ConnectProxy {
        use base64::Engine;
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let heads = Arc::new(Mutex::new(Vec::new()));
        let expected = format!(
            "proxy-authorization: basic {}",
            base64::engine::general_purpose::STANDARD.encode(credentials)
        )
        .to_ascii_lowercase();
        let seen = heads.clone();
        // The thread ends with the test process; each tunnel ends when either side closes.
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let seen = seen.clone();
                let expected = expected.clone();
                std::thread::spawn(move || tunnel(conn, &seen, &expected));
            }
        });
        ConnectProxy { addr, heads }
    }

    fn url(&self, credentials: &str) -> String {
        format!("http://{credentials}@{}", self.addr)
    }

    /// The `CONNECT host:port` lines seen so far.
    fn connects(&self) -> Vec<String> {
        self.heads
            .lock()
            .unwrap()
            .iter()
            .filter_map(|h| h.lines().next())
            .map(|l| l.trim_end_matches(" HTTP/1.1").to_owned())
            .collect()
    }

    fn heads(&self) -> Vec<String> {
        self.heads.lock().unwrap().clone()
    }
}

fn tunnel(mut conn: TcpStream, seen: &Mutex<Vec<String>>, expected_auth: &str) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 16 * 1024 {
        match conn.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return,
        }
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    seen.lock().unwrap().push(head.clone());
    let target = head
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("CONNECT "))
        .and_then(|l| l.split(' ').next())
        .map(str::to_owned);
    let authorized = head
        .to_ascii_lowercase()
        .lines()
        .any(|l| l.trim() == expected_auth);
    let Some(target) = target else {
        let _ = conn.write_all(b"HTTP/1.1 405 Method Not Allowed\r\ncontent-length: 0\r\n\r\n");
        return;
    };
    if !authorized {
        let _ = conn.write_all(
            b"HTTP/1.1 407 Proxy Authentication Required\r\nproxy-authenticate: Basic realm=\"test\"\r\ncontent-length: 0\r\n\r\n",
        );
        return;
    }
    let Ok(upstream) = TcpStream::connect(&target) else {
        let _ = conn.write_all(b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\n\r\n");
        return;
    };
    if conn
        .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
        .is_err()
    {
        return;
    }
    let (mut down_r, mut up_w) = (conn.try_clone().unwrap(), upstream.try_clone().unwrap());
    let (mut up_r, mut down_w) = (upstream, conn);
    let to_server = std::thread::spawn(move || {
        let _ = std::io::copy(&mut down_r, &mut up_w);
        let _ = up_w.shutdown(std::net::Shutdown::Write);
    });
    let _ = std::io::copy(&mut up_r, &mut down_w);
    let _ = down_w.shutdown(std::net::Shutdown::Write);
    let _ = to_server.join();
}

#[test]
fn https_proxy_carries_hub_and_registry_traffic_and_no_proxy_bypasses_it() {
    let (Some(registry_bin), Some(openssl)) = (tool("docker-registry"), tool("openssl")) else {
        return;
    };
    const SECRET: &str = "pr0xy-s3cret";
    let credentials = format!("alice:{SECRET}");
    let pki = Pki::new(&openssl);
    let hub = TlsHub::start(&pki);
    let registry = tls_registry(&registry_bin, &pki, false);
    let proxy = ConnectProxy::start(&credentials);
    let empty = tempfile::tempdir().unwrap();
    let f = project();
    let via_proxy = |cmd: &mut Command| -> Run {
        run(cmd
            .env("SSL_CERT_FILE", pki.ca())
            .env("HTTPS_PROXY", proxy.url(&credentials)))
    };

    // lock and fetch tunnel through the proxy to the Hub and its CDN, with the proxy's
    // credentials sent to the proxy.
    via_proxy(clean(&f, empty.path()).args(["lock", "--endpoint", &hub.endpoint])).ok();
    via_proxy(clean(&f, empty.path()).args(["fetch", "--endpoint", &hub.endpoint])).ok();
    let connects = proxy.connects();
    assert!(
        connects.contains(&format!("CONNECT {}", hub.host())),
        "{connects:?}"
    );
    assert!(
        connects.contains(&format!("CONNECT {}", hub.cdn)),
        "{connects:?}"
    );

    // The push too; lower-case https_proxy is read as well.
    let target = format!("{}/models/app:v1", registry.addr);
    run(clean(&f, empty.path())
        .env("SSL_CERT_FILE", pki.ca())
        .env("https_proxy", proxy.url(&credentials))
        .args(["bake", "--push", &target]))
    .ok();
    assert!(
        proxy
            .connects()
            .contains(&format!("CONNECT {}", registry.addr)),
        "{:?}",
        proxy.connects()
    );
    assert!(manifest_put(&registry, "models/app:v1"));

    // NO_PROXY hosts are reached directly: the proxy sees nothing more.
    let before = proxy.heads().len();
    let g = project();
    let no_proxy = "example.invalid, 127.0.0.1,127.0.0.2";
    via_proxy(clean(&g, empty.path()).env("NO_PROXY", no_proxy).args([
        "lock",
        "--endpoint",
        &hub.endpoint,
    ]))
    .ok();
    via_proxy(clean(&g, empty.path()).env("NO_PROXY", no_proxy).args([
        "fetch",
        "--endpoint",
        &hub.endpoint,
    ]))
    .ok();
    assert_eq!(proxy.heads().len(), before, "{:?}", proxy.connects());

    // A proxy that refuses the credentials: the command fails without ever printing them,
    // in plain output, --json or debug logs.
    let wrong = format!("alice:{SECRET}-wrong");
    for args in [
        vec!["lock", "--endpoint", hub.endpoint.as_str()],
        vec!["--json", "lock", "--endpoint", hub.endpoint.as_str()],
        vec!["-vv", "lock", "--endpoint", hub.endpoint.as_str()],
    ] {
        let h = project();
        let r = run(clean(&h, empty.path())
            .env("SSL_CERT_FILE", pki.ca())
            .env("HTTPS_PROXY", proxy.url(&wrong))
            .env("MODELBAKE_HTTP_RETRIES", "0")
            .args(&args));
        assert_ne!(r.code, 0, "{r:?}");
        assert!(
            !r.stdout.contains(SECRET) && !r.stderr.contains(SECRET),
            "the proxy password leaked: {r:?}"
        );
    }
    assert!(
        proxy.heads().iter().any(|h| h
            .to_ascii_lowercase()
            .contains("proxy-authorization: basic")),
        "the credentials were never offered"
    );
}
