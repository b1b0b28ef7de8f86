//! `modelbake lock` when the network or the server misbehaves: retries with bounds, server
//! waits, dropped and truncated connections, pagination, typed 404s, and a failed run that
//! leaves the existing lock untouched.

use std::time::Duration;

use hub_emulator::{Fault, FaultAction, FileSpec, HubEmulator, Repo};

use crate::support::*;

const TINY: &str = "[[model]]\nid = \"acme/tiny\"\n";

#[test]
fn rate_limit_with_retry_after_is_waited_out() {
    let hub = emulator();
    hub.inject(
        Fault::on("/revision/")
            .status(429)
            .retry_after("1")
            .times(1),
    );
    let p = Project::new(TINY);
    p.lock_with(&hub, &[]).ok();
    let calls: Vec<_> = hub
        .requests()
        .into_iter()
        .filter(|r| r.path.contains("/revision/"))
        .collect();
    assert_eq!(calls.len(), 2, "one 429, one success");
    let gap = calls[1].at.duration_since(calls[0].at);
    assert!(
        gap >= Duration::from_millis(950),
        "Retry-After: 1 not honoured, retried after {gap:?}"
    );
}

#[test]
fn ratelimit_header_is_honoured_too() {
    let hub = emulator();
    hub.inject(
        Fault::on("/tree/")
            .status(429)
            .ratelimit("\"api\";r=0;t=1")
            .times(1),
    );
    let p = Project::new(TINY);
    p.lock_with(&hub, &[]).ok();
    let calls: Vec<_> = hub
        .requests()
        .into_iter()
        .filter(|r| r.path.contains("/tree/"))
        .collect();
    assert!(calls[1].at.duration_since(calls[0].at) >= Duration::from_millis(950));
}

#[test]
fn a_server_asking_for_a_long_wait_fails_clearly() {
    let hub = emulator();
    hub.inject(Fault::on("/revision/").status(429).retry_after("3600"));
    let p = Project::new(TINY);
    let run = p.lock_with(&hub, &[]);
    run.expect_code(1);
    assert!(
        run.stderr.contains("rate limited") && run.stderr.contains("3600s"),
        "{}",
        run.stderr
    );
}

#[test]
fn server_errors_are_retried_a_bounded_number_of_times() {
    let hub = emulator();
    hub.inject(Fault::on("/revision/").status(500));
    let p = Project::new(TINY);
    // Default policy: 5 retries, so 6 attempts.
    let run = p.lock_with(&hub, &[]);
    run.expect_code(1);
    assert!(
        run.stderr.contains("gave up after 6 attempts"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("HTTP 500"), "{}", run.stderr);
    assert!(run.stderr.contains("model `acme/tiny`"), "{}", run.stderr);
    assert_eq!(
        hub.requests()
            .iter()
            .filter(|r| r.path.contains("/revision/"))
            .count(),
        6
    );

    hub.clear_requests();
    let run = crate::support::run(
        p.cmd()
            .args(["lock", "--endpoint", &hub.endpoint()])
            .env("MODELBAKE_HTTP_RETRIES", "2"),
    );
    run.expect_code(1);
    assert!(
        run.stderr.contains("gave up after 3 attempts"),
        "{}",
        run.stderr
    );
    assert_eq!(hub.requests().len(), 3);
    assert!(!p.lock_path().exists());
}

#[test]
fn a_client_error_is_not_retried() {
    let hub = emulator();
    hub.inject(Fault::on("/tree/").status(400));
    let p = Project::new(TINY);
    p.lock_with(&hub, &[]).expect_code(1);
    assert_eq!(
        hub.requests()
            .iter()
            .filter(|r| r.path.contains("/tree/"))
            .count(),
        1
    );
}

#[test]
fn dropped_connections_and_truncated_bodies_are_retried() {
    let clean_hub = emulator();
    let clean = Project::new(TINY);
    clean.lock_with(&clean_hub, &[]).ok();

    let hub = emulator();
    hub.inject(Fault::on("/revision/").action(FaultAction::Drop).times(2));
    hub.inject(
        Fault::on("/tree/")
            .action(FaultAction::Truncate(10))
            .times(1),
    );
    hub.inject(
        Fault::on("/api/resolve-cache/")
            .action(FaultAction::Truncate(3))
            .times(2),
    );
    let p = Project::new(TINY);
    p.lock_with(&hub, &[]).ok();
    assert_eq!(
        p.lock_text(),
        clean.lock_text(),
        "retried downloads must give the same hashes"
    );
    assert_eq!(
        hub.requests()
            .iter()
            .filter(|r| r.path.contains("/revision/"))
            .count(),
        3
    );
}

#[test]
fn wrong_bytes_from_the_server_are_caught() {
    let hub = emulator();
    hub.inject(
        Fault::on("config.json")
            .host(hub_emulator::Host::Hub)
            .action(FaultAction::WrongBytes),
    );
    let p = Project::new(TINY);
    let run = p.lock_with(&hub, &[]);
    run.expect_code(1);
    assert!(
        run.stderr.contains("`config.json`") && run.stderr.contains("does not match the listing"),
        "{}",
        run.stderr
    );
    assert!(!p.lock_path().exists());
}

#[test]
fn tree_listing_spread_over_many_pages() {
    let files: Vec<FileSpec> = (0..7)
        .map(|i| FileSpec::regular(&format!("d{}/f{i}.json", i % 2), format!("{{\"i\": {i}}}")))
        .collect();
    let hub = HubEmulator::builder()
        .repo(Repo::model("acme/paged").commit("main", files))
        .page_size(2)
        .start()
        .unwrap();
    let p = Project::new("[[model]]\nid = \"acme/paged\"\n");
    p.lock_with(&hub, &[]).ok();
    let pages = hub
        .requests()
        .into_iter()
        .filter(|r| r.path.contains("/tree/"))
        .collect::<Vec<_>>();
    // 7 files + 2 folders at 2 entries a page.
    assert_eq!(pages.len(), 5, "{pages:?}");
    assert!(pages[1].query.as_deref().unwrap_or("").contains("cursor="));
    assert_eq!(locked_files(locked_repo(&p.lock(), "acme/paged")).len(), 7);
}

#[test]
fn repo_revision_and_file_not_found_have_their_own_messages() {
    let hub = emulator();
    let p = Project::new("[[model]]\nid = \"acme/nope\"\n");
    let run = p.lock_with(&hub, &[]);
    run.expect_code(1);
    assert!(
        run.stderr.contains("model `acme/nope` was not found on"),
        "{}",
        run.stderr
    );

    let p = Project::new("[[model]]\nid = \"acme/tiny\"\nrevision = \"v9\"\n");
    let run = p.lock_with(&hub, &[]);
    run.expect_code(1);
    assert!(
        run.stderr
            .contains("revision `v9` was not found in model `acme/tiny`"),
        "{}",
        run.stderr
    );

    // The listing names a file that the resolve endpoint then denies.
    hub.inject(
        Fault::on("/resolve/")
            .status(404)
            .error_code("EntryNotFound"),
    );
    let p = Project::new(TINY);
    let run = p.lock_with(&hub, &[]);
    run.expect_code(1);
    assert!(
        run.stderr.contains("was not found in model `acme/tiny` at"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("file `"), "{}", run.stderr);
}

#[test]
fn a_failed_lock_leaves_the_previous_lock_untouched() {
    let hub = emulator();
    let p = Project::new(TINY);
    p.lock_with(&hub, &[]).ok();
    let before = p.lock_text();
    p.write_manifest("[[model]]\nid = \"acme/tiny\"\n[[dataset]]\nid = \"acme/data\"\n");
    hub.inject(Fault::on("/api/datasets/").status(503));
    p.lock_with(&hub, &[]).expect_code(1);
    assert_eq!(p.lock_text(), before);
    let names: Vec<String> = std::fs::read_dir(p.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let mut names = names;
    names.sort();
    assert_eq!(
        names,
        ["models.lock", "models.toml"],
        "no temp files left behind"
    );
}
