//! Docker credential helpers: `docker-credential-<name> get` with the server URL on stdin,
//! answering `{"ServerURL", "Username", "Secret"}` or "credentials not found". Run with a
//! time limit and an output cap, so a hanging or chatty helper cannot stall or flood a build.

use std::ffi::OsStr;
use std::io::{Read, Write};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::{Credential, CredentialError, Secret, helper_keys};

/// How long a helper may take (some ask a cloud SDK for a fresh token).
const TIMEOUT: Duration = Duration::from_secs(30);
/// The most of a helper's stdout or stderr that is read.
const OUTPUT_LIMIT: u64 = 64 << 10;
/// What helpers say when they have nothing for the server (docker-credential-helpers).
const NOT_FOUND: &str = "credentials not found";
/// The `Username` that marks `Secret` as an identity (refresh) token.
const TOKEN_USER: &str = "<token>";

/// Credentials `docker-credential-<name>` has for `registry`, trying each of
/// [`helper_keys`] until one is found; `None` when it has none.
pub fn get(name: &str, registry: &str) -> Result<Option<Credential>, CredentialError> {
    let program = format!("docker-credential-{name}");
    if name.is_empty() || name.contains(['/', '\\']) || name.starts_with('.') {
        return Err(CredentialError::Helper {
            helper: program,
            registry: registry.to_owned(),
            detail:
                "a helper name must be a plain name (docker runs docker-credential-NAME from PATH)"
                    .into(),
        });
    }
    for key in helper_keys(registry) {
        if let Some(c) = get_key(OsStr::new(&program), &program, registry, &key)? {
            return Ok(Some(c));
        }
    }
    Ok(None)
}

/// One `get` of `key` from the helper `program` (named `helper` in messages).
fn get_key(
    program: &OsStr,
    helper: &str,
    registry: &str,
    key: &str,
) -> Result<Option<Credential>, CredentialError> {
    let fail = |detail: String| CredentialError::Helper {
        helper: helper.to_owned(),
        registry: registry.to_owned(),
        detail,
    };
    let (status, stdout, stderr) = run(program, key).map_err(|e| fail(e.to_string()))?;
    if !status.success() {
        // Docker's helpers say "credentials not found" on stdout: detected there, never echoed.
        if format!("{stdout}\n{stderr}")
            .to_ascii_lowercase()
            .contains(NOT_FOUND)
        {
            return Ok(None);
        }
        // stdout may hold the answer (with the secret) of a helper that then failed: it never
        // goes into a message. stderr's first line does, unless it could be that answer.
        let exited = match status.code() {
            Some(code) => format!("exit status {code}"),
            None => "exit status: killed by a signal".to_owned(),
        };
        let said = match stderr_line(&stderr, &stdout) {
            Some(line) => format!(": {line}"),
            None => String::new(),
        };
        return Err(fail(format!(
            "it exited with an error ({exited}){said}; its output is not shown, as it may hold the secret; test it with `echo {key} | {helper} get`"
        )));
    }
    #[derive(serde::Deserialize)]
    struct Answer {
        #[serde(rename = "Username", default)]
        username: String,
        #[serde(rename = "Secret", default)]
        secret: String,
    }
    // The answer holds the secret: its text never goes into a message.
    let answer: Answer = serde_json::from_str(&stdout).map_err(|_| {
        fail(
            "its answer is not the JSON {\"ServerURL\", \"Username\", \"Secret\"} docker expects"
                .into(),
        )
    })?;
    Ok(match (answer.username.as_str(), answer.secret) {
        (_, s) if s.is_empty() => None,
        (TOKEN_USER, s) => Some(Credential::IdentityToken(Secret::new(s))),
        (u, s) => Some(Credential::Basic {
            username: u.to_owned(),
            password: Secret::new(s),
        }),
    })
}

/// Why a helper could not be run to its end (its output is never part of this).
#[derive(Debug, thiserror::Error)]
enum RunFailure {
    #[error("it is not on PATH (install it, or remove it from the config file)")]
    NotOnPath,
    #[error("cannot start it: {0}")]
    Start(std::io::Error),
    #[error("it did not answer within {} s", TIMEOUT.as_secs())]
    Timeout,
    #[error("cannot wait for it: {0}")]
    Wait(std::io::Error),
    #[error("its output did not end when it exited")]
    OutputOpen,
}

/// Runs `program get` with `key` on stdin: (exit status, stdout, stderr), each output capped.
fn run(program: &OsStr, key: &str) -> Result<(ExitStatus, String, String), RunFailure> {
    let mut child = Command::new(program)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => RunFailure::NotOnPath,
            _ => RunFailure::Start(e),
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        // A helper that exits without reading its input is judged by its exit status.
        let _ = stdin.write_all(key.as_bytes());
    }
    let (tx, rx) = mpsc::channel();
    for (i, pipe) in [
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    ]
    .into_iter()
    .enumerate()
    {
        let tx = tx.clone();
        std::thread::spawn(move || {
            let mut text = Vec::new();
            if let Some(mut p) = pipe {
                let _ = (&mut p).take(OUTPUT_LIMIT).read_to_end(&mut text);
                // The rest is drained unread, so the helper is not blocked on a full pipe.
                let _ = std::io::copy(&mut p, &mut std::io::sink());
            }
            let _ = tx.send((i, String::from_utf8_lossy(&text).into_owned()));
        });
    }
    let deadline = Instant::now() + TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(RunFailure::Timeout);
            }
            Err(e) => return Err(RunFailure::Wait(e)),
        }
    };
    let mut out = [String::new(), String::new()];
    for _ in 0..2 {
        // A grandchild holding the pipes open must not hang us either.
        let (i, text) = rx
            .recv_timeout(
                deadline.saturating_duration_since(Instant::now()) + Duration::from_secs(1),
            )
            .map_err(|_| RunFailure::OutputOpen)?;
        out[i] = text;
    }
    let [stdout, stderr] = out;
    Ok((status, stdout, stderr))
}

/// The first non-empty line of a failing helper's stderr, printable, when it cannot be the
/// credential answer: not JSON-like, and holding no secret that `stdout` answered with.
fn stderr_line(stderr: &str, stdout: &str) -> Option<String> {
    let line = stderr.lines().map(str::trim).find(|l| !l.is_empty())?;
    let lower = line.to_ascii_lowercase();
    if line.starts_with('{') || lower.contains("\"secret\"") || lower.contains("\"username\"") {
        return None;
    }
    let answered = serde_json::from_str::<serde_json::Value>(stdout)
        .ok()
        .and_then(|v| v.get("Secret").and_then(|s| s.as_str()).map(str::to_owned))
        .filter(|s| !s.is_empty());
    if answered.is_some_and(|secret| stderr.contains(&secret)) {
        return None;
    }
    Some(printable(line))
}

/// A helper's message, cut to 200 characters without control characters.
fn printable(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).take(200).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn script(dir: &std::path::Path, body: &str) -> std::path::PathBuf {
        let p = dir.join("docker-credential-test");
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p
    }

    fn get_with(body: &str) -> Result<Option<Credential>, CredentialError> {
        let dir = tempfile::tempdir().unwrap();
        let p = script(dir.path(), body);
        get_key(
            p.as_os_str(),
            "docker-credential-test",
            "reg.example",
            "reg.example",
        )
    }

    #[test]
    fn answers_not_found_and_failures() {
        assert_eq!(
            get_with(r#"read k; [ "$1" = get ] && echo "{\"ServerURL\":\"$k\",\"Username\":\"bob\",\"Secret\":\"pw-$k\"}""#).unwrap(),
            Some(Credential::Basic {
                username: "bob".into(),
                password: Secret::new("pw-reg.example")
            })
        );
        assert_eq!(
            get_with(r#"echo '{"ServerURL":"x","Username":"<token>","Secret":"rt"}'"#).unwrap(),
            Some(Credential::IdentityToken(Secret::new("rt")))
        );
        assert_eq!(
            get_with("echo 'credentials not found in native keychain'; exit 1").unwrap(),
            None
        );
        let e = get_with("echo 'vault sealed' >&2; exit 3")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("docker-credential-test")
                && e.contains("reg.example")
                && e.contains("vault sealed"),
            "{e}"
        );
        let e = get_with(r#"echo '{"Username": "u", "Secret": "s3cr3t"'"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("not the JSON") && !e.contains("s3cr3t"), "{e}");
    }

    /// Hostile review (issue 23): a helper that prints its answer, secret included, and then
    /// exits non-zero must not get that answer quoted in the error (stderr, `--json`).
    #[test]
    fn a_failing_helpers_stdout_is_never_quoted() {
        for body in [
            r#"echo '{"ServerURL":"x","Username":"u","Secret":"SECRET-MARKER"}'; exit 1"#,
            r#"echo '{"ServerURL":"x","Username":"u","Secret":"SECRET-MARKER"}'; echo '{"Secret":"SECRET-MARKER"}' >&2; exit 1"#,
            r#"echo '{"ServerURL":"x","Username":"u","Secret":"SECRET-MARKER"}'; echo 'oops SECRET-MARKER' >&2; exit 1"#,
            r#"echo 'SECRET-MARKER'; exit 7"#,
        ] {
            let e = get_with(body).unwrap_err().to_string();
            assert!(!e.contains("SECRET-MARKER"), "{body}: {e}");
            assert!(
                e.contains("exit status")
                    && e.contains("echo reg.example | docker-credential-test get"),
                "{body}: {e}"
            );
        }
        let e = get_with("echo '{}'; exit 7").unwrap_err().to_string();
        assert!(e.contains("exit status 7"), "{e}");
    }

    #[test]
    fn missing_and_misnamed_helpers_are_errors() {
        let e = get("modelbake-test-no-such-helper", "r.example")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("docker-credential-modelbake-test-no-such-helper")
                && e.contains("not on PATH"),
            "{e}"
        );
        let e = get("../../bin/sh", "r.example").unwrap_err().to_string();
        assert!(e.contains("plain name"), "{e}");
    }

    #[test]
    fn output_is_capped() {
        // 10 MiB of output is cut at the cap: not JSON, so an error, and no unbounded buffer.
        let e = get_with("head -c 10485760 /dev/zero | tr '\\0' a; exit 1").unwrap_err();
        assert!(e.to_string().len() < 1000, "{e}");
    }
}
