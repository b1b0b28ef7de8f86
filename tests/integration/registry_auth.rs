//! Registry credentials the way users keep them: credential helpers (`credHelpers`,
//! `credsStore`), identity tokens exchanged at a token realm, the containers auth files, and
//! `modelbake login`/`logout` interoperating with skopeo and podman. Every run's stdout and
//! stderr (with `--json` and trace logging) is searched for the secrets.

use std::fs;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine;

use crate::support::oci::{Podman, Registry, busybox_base};
use crate::support::token_service::TokenService;
use crate::support::*;

const USER: &str = "alice";
const PASSWORD: &str = "pw-Qx7-never-printed";
const REFRESH: &str = "rt-Zk9-never-printed";

/// Every form in which a secret could leak.
fn secrets() -> Vec<String> {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    vec![
        PASSWORD.into(),
        REFRESH.into(),
        b64(&format!("{USER}:{PASSWORD}")),
        b64(PASSWORD),
        b64(REFRESH),
    ]
}

/// The run's output, after asserting no secret is in it.
#[track_caller]
fn clean(r: Run) -> Run {
    for s in secrets() {
        assert!(
            !r.stdout.contains(&s) && !r.stderr.contains(&s),
            "a secret was printed\n--- stdout\n{}\n--- stderr\n{}",
            r.stdout,
            r.stderr
        );
    }
    r
}

/// A home of its own for one test: no credentials of the developer's, helpers in `bin/` on PATH.
struct Home {
    dir: tempfile::TempDir,
}

impl Home {
    fn new() -> Self {
        let h = Home {
            dir: tempfile::tempdir().unwrap(),
        };
        fs::create_dir_all(h.bin()).unwrap();
        h
    }

    fn bin(&self) -> PathBuf {
        self.dir.path().join("bin")
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    /// `docker-credential-<name>`: logs each key it is asked for to `<name>.log`, then runs
    /// `body` with the key in `$k`.
    fn helper(&self, name: &str, body: &str) {
        let p = self.bin().join(format!("docker-credential-{name}"));
        let log = self.path(&format!("{name}.log"));
        fs::write(
            &p,
            format!(
                "#!/bin/sh\n[ \"$1\" = get ] || exit 2\nread k\necho \"$k\" >> '{}'\n{body}\n",
                log.display()
            ),
        )
        .unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
    }

    /// The keys helper `name` was asked for.
    fn asked(&self, name: &str) -> Vec<String> {
        fs::read_to_string(self.path(&format!("{name}.log")))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// Writes Docker's config.json (under `docker/`).
    fn docker_config(&self, json: &str) {
        fs::create_dir_all(self.path(".docker")).unwrap();
        fs::write(self.path(".docker/config.json"), json).unwrap();
    }

    /// `cmd` with this home: HOME here, no other credential locations, helpers on PATH, trace
    /// logging (so log lines are searched for secrets too).
    fn env<'a>(&self, cmd: &'a mut Command) -> &'a mut Command {
        for var in [
            "DOCKER_CONFIG",
            "REGISTRY_AUTH_FILE",
            "XDG_RUNTIME_DIR",
            "XDG_CONFIG_HOME",
        ] {
            cmd.env_remove(var);
        }
        let path = std::env::var("PATH").unwrap_or_default();
        cmd.env("HOME", self.dir.path())
            .env("PATH", format!("{}:{path}", self.bin().display()))
            .env("MODELBAKE_LOG", "trace")
    }
}

/// A fetched tiny project.
fn project(hub: &hub_emulator::HubEmulator) -> Fetched {
    let f = Fetched::new(hub, "[[model]]\nid = \"acme/tiny\"\n");
    f.fetch(hub, &[]).ok();
    f
}

/// `modelbake bake --json --insecure --push target [extra]` in `home`.
fn push(f: &Fetched, home: &Home, target: &str, extra: &[&str]) -> Run {
    clean(run(home
        .env(&mut f.cmd())
        .args(["bake", "--json", "--insecure"])
        .args(extra)
        .args(["--push", target])))
}

/// [`push`] of `models/app:v1` to `registry` on the base `base_ref`, which must succeed and
/// take the base's one layer.
fn push_on_base(f: &Fetched, home: &Home, registry: &Registry, base_ref: &str) {
    let r = push(
        f,
        home,
        &format!("{}/models/app:v1", registry.addr),
        &["--base", base_ref],
    );
    r.ok();
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["base_layers"], 1, "{}", r.stdout);
}

fn htpasswd_registry() -> Option<Registry> {
    let (Some(bin), Some(htpasswd)) = (tool("docker-registry"), tool("htpasswd")) else {
        return None;
    };
    let users = sh(Command::new(htpasswd).args(["-Bbn", USER, PASSWORD]));
    Some(Registry::start_with(&bin, Some(&users)))
}

/// The helper body answering `username`/`secret` for `addr`, "not found" for any other key.
fn answer_for(addr: &str, username: &str, secret: &str) -> String {
    format!(
        "if [ \"$k\" = '{addr}' ]; then printf '{{\"ServerURL\":\"%s\",\"Username\":\"{username}\",\"Secret\":\"{secret}\"}}' \"$k\"; else echo 'credentials not found in native keychain'; exit 1; fi"
    )
}

#[test]
fn cred_helpers_and_the_creds_store_supply_basic_credentials() {
    let Some(registry) = htpasswd_registry() else {
        return;
    };
    let hub = emulator();
    let f = project(&hub);
    let home = Home::new();
    home.helper("mbtest", &answer_for(&registry.addr, USER, PASSWORD));

    // credHelpers names the helper for this registry (the key written as a URL, as some do).
    home.docker_config(&format!(
        r#"{{"auths":{{"{0}":{{}}}},"credHelpers":{{"https://{0}":"mbtest"}}}}"#,
        registry.addr
    ));
    let target = format!("{}/private/app:v1", registry.addr);
    let r = push(&f, &home, &target, &[]);
    r.ok();
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["uploaded"], 2, "{}", r.stdout);
    assert_eq!(home.asked("mbtest"), [registry.addr.as_str()]);

    // credsStore: the default helper for every registry.
    fs::remove_file(home.path("mbtest.log")).unwrap();
    home.docker_config(r#"{"credsStore":"mbtest"}"#);
    push(&f, &home, &format!("{}/private/app:v2", registry.addr), &[]).ok();
    assert_eq!(home.asked("mbtest"), [registry.addr.as_str()]);
    assert!(
        registry
            .requests()
            .iter()
            .any(|l| l.starts_with("PUT /v2/private/app/manifests/v2")),
    );

    // A helper with nothing for the registry falls through to `auths`.
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"));
    home.helper(
        "empty",
        "echo 'credentials not found in native keychain'; exit 1",
    );
    home.docker_config(&format!(
        r#"{{"credsStore":"empty","auths":{{"{}":{{"auth":"{auth}"}}}}}}"#,
        registry.addr
    ));
    push(&f, &home, &format!("{}/private/app:v3", registry.addr), &[]).ok();
    assert_eq!(home.asked("empty").len(), 2, "the host, then https://host");

    // Without credentials: the error says how to log in.
    home.docker_config("{}");
    let r = push(&f, &home, &format!("{}/private/app:v4", registry.addr), &[]);
    r.expect_code(1);
    assert!(r.stderr.contains("modelbake login"), "{}", r.stderr);
}

#[test]
fn a_failing_helper_is_named_with_the_registry() {
    let Some(registry) = htpasswd_registry() else {
        return;
    };
    let hub = emulator();
    let f = project(&hub);
    let home = Home::new();
    home.helper("sealed", "echo 'the vault is sealed' >&2; exit 1");
    home.docker_config(&format!(
        r#"{{"credHelpers":{{"{}":"sealed"}}}}"#,
        registry.addr
    ));
    let r = push(&f, &home, &format!("{}/private/app:v1", registry.addr), &[]);
    r.expect_code(1);
    assert!(
        r.stderr.contains("docker-credential-sealed")
            && r.stderr.contains(&registry.addr)
            && r.stderr.contains("the vault is sealed")
            && r.stderr.contains("hint:"),
        "{}",
        r.stderr
    );
    let v: serde_json::Value = serde_json::from_str(r.stdout.trim()).unwrap();
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("docker-credential-sealed")
    );
    assert!(v["hint"].as_str().unwrap().contains("credHelpers"));

    // A helper that is not installed is an error too, not a silent anonymous push.
    home.docker_config(r#"{"credsStore":"not-installed"}"#);
    let r = push(&f, &home, &format!("{}/private/app:v1", registry.addr), &[]);
    r.expect_code(1);
    assert!(
        r.stderr.contains("docker-credential-not-installed") && r.stderr.contains("not on PATH"),
        "{}",
        r.stderr
    );
}

/// Hostile review (issue 23): a helper that prints its answer (secret included) and then
/// exits non-zero. The error names the helper, its exit status and how to test it, and quotes
/// nothing of its stdout: not on stderr, not in `--json`.
#[test]
fn a_failing_helpers_answer_is_not_quoted() {
    let Some(registry) = htpasswd_registry() else {
        return;
    };
    let hub = emulator();
    let f = project(&hub);
    let home = Home::new();
    home.helper(
        "leaky",
        r#"echo '{"ServerURL":"x","Username":"u","Secret":"SECRET-MARKER"}'; exit 1"#,
    );
    home.docker_config(&format!(
        r#"{{"credHelpers":{{"{}":"leaky"}}}}"#,
        registry.addr
    ));
    let r = push(&f, &home, &format!("{}/private/app:v1", registry.addr), &[]);
    r.expect_code(1);
    assert!(
        !r.stdout.contains("SECRET-MARKER") && !r.stderr.contains("SECRET-MARKER"),
        "--- stdout\n{}\n--- stderr\n{}",
        r.stdout,
        r.stderr
    );
    assert!(
        r.stderr.contains("docker-credential-leaky")
            && r.stderr.contains("exit status 1")
            && r.stderr.contains("docker-credential-leaky get"),
        "{}",
        r.stderr
    );
    let v: serde_json::Value = serde_json::from_str(r.stdout.trim()).unwrap();
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("docker-credential-leaky"),
        "{}",
        r.stdout
    );
}

/// A registry delegating to a token service where `alice` may push and `REFRESH` stands for
/// her.
fn token_registry() -> Option<(TokenService, Registry)> {
    let (Some(bin), Some(_)) = (tool("docker-registry"), tool("openssl")) else {
        return None;
    };
    let tokens = TokenService::builder()
        .user(USER, PASSWORD, &["pull", "push"])
        .refresh_token(REFRESH, USER)
        .start();
    let registry = Registry::start_configured(&bin, |_| tokens.registry_yaml());
    Some((tokens, registry))
}

#[test]
fn identity_tokens_are_exchanged_at_the_realm_for_pushes_and_base_pulls() {
    let (Some((tokens, registry)), Some(umoci), Some(skopeo)) =
        (token_registry(), tool("umoci"), tool("skopeo"))
    else {
        return;
    };
    let hub = emulator();
    let f = project(&hub);
    let home = Home::new();
    // A base in the registry, which demands a token for pulls too.
    let base = busybox_base(&umoci, home.dir.path());
    sh(Command::new(&skopeo)
        .args(["copy", "--dest-tls-verify=false", "--dest-creds"])
        .arg(format!("{USER}:{PASSWORD}"))
        .arg(format!("oci:{}:latest", base.display()))
        .arg(format!("docker://{}/base/busybox:1", registry.addr)));

    // A helper answering `Username: <token>`: the Secret is an identity token.
    home.helper("idtok", &answer_for(&registry.addr, "<token>", REFRESH));
    home.docker_config(&format!(
        r#"{{"credHelpers":{{"{}":"idtok"}}}}"#,
        registry.addr
    ));
    let before = tokens.requests().len();
    let base_ref = format!("{}/base/busybox:1", registry.addr);
    push_on_base(&f, &home, &registry, &base_ref);
    let asked = &tokens.requests()[before..];
    assert!(!asked.is_empty());
    assert!(
        asked.iter().all(|t| t.method == "POST"
            && t.grant == "refresh_token"
            && t.user.as_deref() == Some(USER)
            && t.status == 200),
        "{asked:?}"
    );
    assert!(
        asked
            .iter()
            .any(|t| t.scopes.iter().any(|s| s.contains("base/busybox:pull"))),
        "the base was pulled with a token: {asked:?}"
    );

    // `identitytoken` in a containers auth file named by REGISTRY_AUTH_FILE, alone.
    let authfile = home.path("auth.json");
    fs::write(
        &authfile,
        format!(
            r#"{{"auths":{{"{}":{{"identitytoken":"{REFRESH}"}}}}}}"#,
            registry.addr
        ),
    )
    .unwrap();
    let before = tokens.requests().len();
    let r = clean(run(home
        .env(&mut f.cmd())
        .env("REGISTRY_AUTH_FILE", &authfile)
        .args(["bake", "--json", "--insecure", "--base", &base_ref])
        .args(["--push", &format!("{}/models/app:v2", registry.addr)])));
    r.ok();
    assert!(
        tokens.requests()[before..]
            .iter()
            .all(|t| t.grant == "refresh_token" && t.status == 200),
        "{:?}",
        tokens.requests()
    );

    // A refresh token the service does not know: refused, said so, never printed.
    fs::write(
        &authfile,
        r#"{"auths":{"X":{"identitytoken":"rt-unknown"}}}"#.replace('X', &registry.addr),
    )
    .unwrap();
    let r = clean(run(home
        .env(&mut f.cmd())
        .env("REGISTRY_AUTH_FILE", &authfile)
        .args(["bake", "--insecure"])
        .args(["--push", &format!("{}/models/app:v3", registry.addr)])));
    r.expect_code(1);
    assert!(
        r.stderr.contains("refused an identity token") && !r.stderr.contains("rt-unknown"),
        "{}",
        r.stderr
    );
}

/// `printf PASSWORD | modelbake login REGISTRY -u USER --password-stdin [extra]`.
fn login(home: &Home, registry: &str, password: &str, extra: &[&str]) -> Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_modelbake"));
    home.env(&mut cmd)
        .args([
            "login",
            registry,
            "-u",
            USER,
            "--password-stdin",
            "--insecure",
        ])
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{password}\n").as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    clean(Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

fn mode(p: &Path) -> u32 {
    fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn login_writes_what_skopeo_and_podman_use_and_reads_what_skopeo_wrote() {
    let (Some(registry), Some(skopeo), Some(umoci), Some(podman_bin)) = (
        htpasswd_registry(),
        tool("skopeo"),
        tool("umoci"),
        tool("podman"),
    ) else {
        return;
    };
    let hub = emulator();
    let f = project(&hub);
    let home = Home::new();
    let authfile = home.path(".config/containers/auth.json");

    // A wrong password: refused before anything is written.
    let r = login(&home, &registry.addr, "wrong", &[]);
    r.expect_code(1);
    assert!(
        r.stderr.contains("wrong username or password"),
        "{}",
        r.stderr
    );
    assert!(!authfile.exists());
    // A password on the command line is refused without being echoed.
    let r = clean(run(home
        .env(&mut Command::new(env!("CARGO_BIN_EXE_modelbake")))
        .args(["login", &registry.addr, "-u", USER, "-p", PASSWORD])));
    r.expect_code(2);
    assert!(r.stderr.contains("--password-stdin"), "{}", r.stderr);

    // The default file (no XDG_RUNTIME_DIR): ~/.config/containers/auth.json, 0600, other
    // entries kept.
    fs::create_dir_all(authfile.parent().unwrap()).unwrap();
    fs::write(&authfile, r#"{"auths":{"other.example":{"auth":"eDp5"}}}"#).unwrap();
    let r = login(&home, &registry.addr, PASSWORD, &["--json"]);
    r.ok();
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["authfile"], authfile.to_str().unwrap());
    assert_eq!(mode(&authfile), 0o600);
    let written: serde_json::Value = serde_json::from_slice(&fs::read(&authfile).unwrap()).unwrap();
    assert_eq!(written["auths"]["other.example"]["auth"], "eDp5");

    // skopeo pushes a base with what modelbake wrote; modelbake pulls it as a base and pushes.
    let base = busybox_base(&umoci, home.dir.path());
    let base_ref = format!("{}/base/busybox:1", registry.addr);
    sh(Command::new(&skopeo)
        .args(["copy", "--dest-tls-verify=false", "--authfile"])
        .arg(&authfile)
        .arg(format!("oci:{}:latest", base.display()))
        .arg(format!("docker://{base_ref}")));
    push_on_base(&f, &home, &registry, &base_ref);

    let storage = tempfile::tempdir().unwrap();
    let podman = Podman::new(&podman_bin, storage.path());
    // podman pulls and pushes with it too.
    let pulled = sh(podman
        .cmd()
        .args(["pull", "-q", "--tls-verify=false", "--authfile"])
        .arg(&authfile)
        .arg(format!("docker://{base_ref}")));
    let id = pulled.lines().last().unwrap_or_default().trim().to_owned();
    sh(podman
        .cmd()
        .args(["push", "--tls-verify=false", "--authfile"])
        .arg(&authfile)
        .arg(&id)
        .arg(format!("docker://{}/podman/pushed:1", registry.addr)));
    assert!(
        registry
            .requests()
            .iter()
            .any(|l| l.starts_with("PUT /v2/podman/pushed/manifests/1"))
    );

    // logout removes the entry and keeps the others; pushes then need a login again.
    let r = clean(run(home
        .env(&mut Command::new(env!("CARGO_BIN_EXE_modelbake")))
        .args(["logout", &registry.addr])));
    r.ok();
    let left: serde_json::Value = serde_json::from_slice(&fs::read(&authfile).unwrap()).unwrap();
    assert_eq!(left["auths"].as_object().unwrap().len(), 1, "{left}");
    assert_eq!(mode(&authfile), 0o600);
    let r = push(&f, &home, &format!("{}/models/app:v2", registry.addr), &[]);
    r.expect_code(1);

    // modelbake pushes with what `skopeo login` wrote (REGISTRY_AUTH_FILE).
    let skopeo_file = home.path("skopeo-auth.json");
    let mut child = Command::new(&skopeo)
        .args(["login", "--tls-verify=false", "--authfile"])
        .arg(&skopeo_file)
        .args(["-u", USER, "--password-stdin", &registry.addr])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(PASSWORD.as_bytes())
            .unwrap();
    }
    assert!(child.wait().unwrap().success(), "skopeo login");
    let r = clean(run(home
        .env(&mut f.cmd())
        .env("REGISTRY_AUTH_FILE", &skopeo_file)
        .args(["bake", "--json", "--insecure"])
        .args(["--push", &format!("{}/models/app:v3", registry.addr)])));
    r.ok();
}

#[test]
fn login_answers_a_bearer_challenge() {
    let Some((tokens, registry)) = token_registry() else {
        return;
    };
    let home = Home::new();
    let authfile = home.path("auth.json");
    let extra = ["--authfile", authfile.to_str().unwrap()];
    let r = login(&home, &registry.addr, "wrong", &extra);
    r.expect_code(1);
    assert!(
        r.stderr.contains("wrong username or password"),
        "{}",
        r.stderr
    );
    assert!(!authfile.exists());
    login(&home, &registry.addr, PASSWORD, &extra).ok();
    assert_eq!(mode(&authfile), 0o600);
    let last = tokens.requests().pop().unwrap();
    assert_eq!(
        (last.grant.as_str(), last.status),
        ("basic", 200),
        "{last:?}"
    );
}

/// Runs `cmd` with `stdin` written to it, under a 4 GiB address-space limit, and kills it and
/// fails when it has not exited in 30 s: a read that blocks (a FIFO) or never ends
/// (`/dev/zero`) fails the test instead of hanging it or eating the machine.
fn run_within(cmd: &Command, stdin: &str) -> Run {
    let mut limited = Command::new("sh");
    limited
        .args(["-c", "ulimit -v 4194304 && exec \"$0\" \"$@\""])
        .arg(cmd.get_program())
        .args(cmd.get_args())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(dir) = cmd.get_current_dir() {
        limited.current_dir(dir);
    }
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => limited.env(k, v),
            None => limited.env_remove(k),
        };
    }
    let mut child = limited.spawn().unwrap();
    {
        use std::io::Write;
        let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} hung");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    clean(Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// `modelbake ARGS` in `home`.
fn modelbake(home: &Home, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_modelbake"));
    home.env(&mut cmd).args(args);
    cmd
}

#[test]
fn fifo_and_device_auth_files_are_refused_not_read() {
    let home = Home::new();
    let fifo = home.path("auth.json");
    sh(Command::new("mkfifo").arg(&fifo));
    let zero = Path::new("/dev/zero");
    let fifo_arg = ["--authfile", fifo.to_str().unwrap()];
    let refused = |r: &Run, kind: &str| {
        r.expect_code(1);
        assert!(
            r.stderr.contains(kind) && r.stderr.contains("regular file"),
            "{}",
            r.stderr
        );
    };
    let logout = ["logout", "reg.example"];
    refused(
        &run_within(&modelbake(&home, &[&logout[..], &fifo_arg].concat()), ""),
        "FIFO",
    );
    let r = run_within(
        modelbake(&home, &logout).env("REGISTRY_AUTH_FILE", zero),
        "",
    );
    refused(&r, "device");
    assert!(r.stderr.contains("REGISTRY_AUTH_FILE"), "{}", r.stderr);
    assert!(fs::symlink_metadata(&fifo).unwrap().file_type().is_fifo());

    // login, and a push that needs credentials, refuse them too.
    let Some(registry) = htpasswd_registry() else {
        return;
    };
    let login = [
        "login",
        &registry.addr,
        "-u",
        USER,
        "--password-stdin",
        "--insecure",
    ];
    refused(
        &run_within(
            &modelbake(&home, &[&login[..], &fifo_arg].concat()),
            PASSWORD,
        ),
        "FIFO",
    );
    let r = run_within(
        modelbake(&home, &login).env("REGISTRY_AUTH_FILE", zero),
        PASSWORD,
    );
    refused(&r, "device");
    let hub = emulator();
    let f = project(&hub);
    let target = format!("{}/private/app:v1", registry.addr);
    for (file, kind) in [(fifo.as_path(), "FIFO"), (zero, "device")] {
        let mut cmd = f.cmd();
        home.env(&mut cmd).env("REGISTRY_AUTH_FILE", file).args([
            "bake",
            "--insecure",
            "--push",
            &target,
        ]);
        refused(&run_within(&cmd, ""), kind);
    }
}

#[test]
fn concurrent_logins_into_one_file_keep_every_entry() {
    let (Some(bin), Some(htpasswd)) = (tool("docker-registry"), tool("htpasswd")) else {
        return;
    };
    let users = sh(Command::new(htpasswd).args(["-Bbn", USER, PASSWORD]));
    let registries: Vec<Registry> = std::thread::scope(|s| {
        let started: Vec<_> = (0..8)
            .map(|_| s.spawn(|| Registry::start_with(&bin, Some(&users))))
            .collect();
        started.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let home = Home::new();
    for round in 0..3 {
        let authfile = home.path(&format!("auth-{round}.json"));
        // All eight wait on stdin, then get their password at once: their edits overlap.
        let mut children: Vec<_> = registries
            .iter()
            .map(|r| {
                home.env(&mut Command::new(env!("CARGO_BIN_EXE_modelbake")))
                    .args([
                        "login",
                        &r.addr,
                        "-u",
                        USER,
                        "--password-stdin",
                        "--insecure",
                    ])
                    .arg("--authfile")
                    .arg(&authfile)
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for child in &mut children {
            use std::io::Write;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(PASSWORD.as_bytes())
                .unwrap();
        }
        for child in children {
            let out = child.wait_with_output().unwrap();
            clean(Run {
                code: out.status.code().unwrap_or(-1),
                stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            })
            .ok();
        }
        let v: serde_json::Value = serde_json::from_slice(&fs::read(&authfile).unwrap()).unwrap();
        let auth = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"));
        for r in &registries {
            assert_eq!(
                v["auths"][&r.addr]["auth"], auth,
                "round {round}: the login to {} was lost: {v}",
                r.addr
            );
        }
        assert_eq!(mode(&authfile), 0o600);
    }
}

#[test]
fn logout_through_a_symlinked_auth_file_removes_the_secret_from_its_target() {
    let home = Home::new();
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"));
    let target = home.path("secrets/auth.json");
    fs::create_dir_all(target.parent().unwrap()).unwrap();
    fs::write(
        &target,
        format!(r#"{{"auths":{{"reg.example:5000":{{"auth":"{auth}"}},"other.example":{{"auth":"eDp5"}}}}}}"#),
    )
    .unwrap();
    fs::set_permissions(&target, fs::Permissions::from_mode(0o600)).unwrap();
    let link = home.path(".config/containers/auth.json");
    fs::create_dir_all(link.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink(&target, &link).unwrap();

    let r = run_within(&modelbake(&home, &["logout", "reg.example:5000"]), "");
    r.ok();
    assert!(r.stderr.contains("Logged out"), "{}", r.stderr);
    assert!(
        fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink(),
        "the link was replaced by a file"
    );
    let left = fs::read_to_string(&target).unwrap();
    assert!(
        !left.contains(&auth),
        "the secret is still in the target: {left}"
    );
    assert!(left.contains("other.example"), "{left}");
    assert_eq!(mode(&target), 0o600);
    // Nothing left to remove: not logged in, and the link stays.
    let r = run_within(&modelbake(&home, &["logout", "reg.example:5000"]), "");
    r.ok();
    assert!(r.stderr.contains("Not logged in"), "{}", r.stderr);
    assert!(
        fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
}

#[test]
fn entries_modelbake_does_not_own_pass_through_login_and_logout_byte_for_byte() {
    let Some(registry) = htpasswd_registry() else {
        return;
    };
    let home = Home::new();
    let authfile = home.path("auth.json");
    let other = r#"{"big":123456789012345678901234567890,"e":1e5,"z":-0}"#;
    let entry = r#"{"auth":"eDp5","expires":1E+10,"n":-0.0e0}"#;
    fs::write(
        &authfile,
        format!(r#"{{"auths":{{"keep.example":{entry}}},"other":{other}}}"#),
    )
    .unwrap();
    let file = ["--authfile", authfile.to_str().unwrap()];
    let login = [
        "login",
        &registry.addr,
        "-u",
        USER,
        "--password-stdin",
        "--insecure",
    ];
    let r = run_within(&modelbake(&home, &[&login[..], &file].concat()), PASSWORD);
    r.ok();
    let text = fs::read_to_string(&authfile).unwrap();
    assert!(text.contains(other) && text.contains(entry), "{text}");
    assert!(text.contains(&registry.addr), "{text}");
    let r = run_within(
        &modelbake(&home, &[&["logout", &registry.addr][..], &file].concat()),
        "",
    );
    r.ok();
    let text = fs::read_to_string(&authfile).unwrap();
    assert!(text.contains(other) && text.contains(entry), "{text}");
    assert!(!text.contains(&registry.addr), "{text}");
}
