//! `modelbake verify --image REF`: an image in a registry (or `oci:DIR[:TAG]`) checked in place
//! against the lock, storing nothing: its documents read, each model layer streamed through the
//! checker, base layers never downloaded; with `--key`, its attestations too. Exit codes: 0 when
//! everything holds, 4 when the content differs from the lock, 5 when an attestation is missing
//! or invalid (4 wins when both), 1 when the image cannot be read.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use serde::Serialize;

use super::Failure;
use crate::bake::verify_attestations::{self, AttestVerdict, Place};
use crate::bake::verify_image::{OciReport, Verified, verify_source};
use crate::bake::verify_source::{RegistryImage, VerifySource};
use crate::keys::PublicKey;
use crate::lock::Lockfile;
use crate::manifest::bake_table::BakeSettings;
use crate::oci::reference::ImageRef;
use crate::oci::registry::Registry;
use crate::oci::source::{LayoutSource, RegistrySource};
use crate::ui::{Ui, byte_bar, display_path, human_size};

/// Exit code: the image's content differs from the lock.
pub const EXIT_CONTENT: u8 = 4;
/// Exit code: an attestation is missing or invalid.
pub const EXIT_ATTESTATION: u8 = 5;

/// What `verify --image` checks, from the command line.
pub struct ImageCheck<'a> {
    /// The reference as given.
    pub reference: &'a str,
    /// Plain-http registries allowed.
    pub insecure: bool,
    /// `--key`: the attestations are required, signed by it.
    pub key: Option<&'a PathBuf>,
    /// `--attestations-only`: no layer is read.
    pub attestations_only: bool,
    /// The lock file (its sha256 is what the provenance must name).
    pub lock_path: PathBuf,
}

/// The `--json` report.
#[derive(Serialize)]
struct Report<'a> {
    ok: bool,
    image: &'a str,
    digest: String,
    /// Layer bytes downloaded.
    bytes_read: u64,
    content: &'a OciReport,
    #[serde(skip_serializing_if = "Option::is_none")]
    attestations: Option<&'a AttestVerdict>,
}

/// Runs `verify --image`.
pub async fn run(
    check: &ImageCheck<'_>,
    lock: Arc<Lockfile>,
    settings: BakeSettings,
    ui: &Ui,
) -> Result<ExitCode, Failure> {
    let key = check.key.map(|p| PublicKey::from_file(p)).transpose()?;
    let lock_sha256 = std::fs::File::open(&check.lock_path)
        .and_then(crate::hash::sha256_of_reader)
        .map(|(sha, _)| sha)
        .with_context(|| format!("reading {}", display_path(&check.lock_path)))?;
    let read = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let bar = byte_bar(ui, 0);
    let on_bytes: Arc<dyn Fn(u64) + Send + Sync> = {
        let (read, bar) = (read.clone(), bar.clone());
        Arc::new(move |n| {
            read.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
            if let Some(b) = &bar {
                b.inc_length(n);
                b.inc(n);
            }
        })
    };
    let content = !check.attestations_only;
    let (verified, verdict) = if let Some(rest) = check.reference.strip_prefix("oci:") {
        let src = LayoutSource::parse(rest);
        let (lock2, settings2, src2) = (lock.clone(), settings.clone(), src.clone());
        let verified =
            tokio::task::spawn_blocking(move || verify_source(&src2, &lock2, &settings2, content))
                .await??;
        let verdict = match &key {
            Some(key) => {
                Some(attestations(&Place::Layout(&src), &verified, &lock, &lock_sha256, key).await?)
            }
            None => None,
        };
        (verified, verdict)
    } else {
        let image = ImageRef::parse(check.reference)?;
        let open = || -> Result<RegistrySource, Failure> {
            Ok(RegistrySource {
                registry: Registry::new(&image, check.insecure)?,
                image: image.clone(),
            })
        };
        let reader = RegistryImage {
            src: open()?,
            handle: tokio::runtime::Handle::current(),
            on_bytes,
        };
        let (lock2, settings2) = (lock.clone(), settings.clone());
        let verified = tokio::task::spawn_blocking(move || {
            verify_source(&reader as &dyn VerifySource, &lock2, &settings2, content)
        })
        .await??;
        let verdict = match &key {
            Some(key) => {
                let src = open()?;
                Some(
                    attestations(&Place::Registry(&src), &verified, &lock, &lock_sha256, key)
                        .await?,
                )
            }
            None => None,
        };
        (verified, verdict)
    };
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let bytes_read = read.load(std::sync::atomic::Ordering::Relaxed);
    print(ui, check, &verified, verdict.as_ref(), bytes_read)
}

/// The attestations of the root and, for an index, of each platform's manifest.
async fn attestations(
    place: &Place<'_>,
    verified: &Verified,
    lock: &Lockfile,
    lock_sha256: &str,
    key: &PublicKey,
) -> Result<AttestVerdict, Failure> {
    let mut subjects = vec![verified.root.clone()];
    subjects.extend(verified.manifests.iter().cloned());
    Ok(verify_attestations::check(place, &subjects, lock, lock_sha256, key).await?)
}

/// The report, and the exit code it means.
fn print(
    ui: &Ui,
    check: &ImageCheck<'_>,
    verified: &Verified,
    verdict: Option<&AttestVerdict>,
    bytes_read: u64,
) -> Result<ExitCode, Failure> {
    let content = &verified.report;
    let attested = verdict.is_none_or(|v| v.ok);
    if ui.json {
        let report = Report {
            ok: content.ok && attested,
            image: check.reference,
            digest: verified.root.digest.to_string(),
            bytes_read,
            content,
            attestations: verdict,
        };
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    if !ui.quiet {
        for l in &content.layers {
            if l.problems.is_empty() {
                ui.status(
                    "Verified",
                    format!(
                        "layer {} ({}; {} entries)",
                        l.layer,
                        l.repos.join(", "),
                        l.entries
                    ),
                );
            } else {
                eprintln!("layer {}: {} problem(s)", l.layer, l.problems.len());
                for p in &l.problems {
                    eprintln!("  - {p}");
                }
            }
        }
        for p in &content.problems {
            eprintln!("  - {p}");
        }
        if let Some(v) = verdict {
            for f in &v.found {
                ui.status(
                    "Signed",
                    format!(
                        "{} {}of {}",
                        f.kind,
                        f.repo
                            .as_deref()
                            .map(|r| format!("({r}) "))
                            .unwrap_or_default(),
                        f.subject
                    ),
                );
            }
            for p in &v.problems {
                eprintln!("  - attestation of {}: {}", p.subject, p.problem);
            }
        }
        if !check.reference.starts_with("oci:") {
            ui.status(
                "Read",
                format!(
                    "{} of model layers from {} (base layers not downloaded)",
                    human_size(bytes_read),
                    check.reference
                ),
            );
        }
    }
    let digest = &verified.root.digest;
    if !content.ok {
        return Err(Failure::reported_with_code(
            anyhow::anyhow!("{} ({digest}) does not match the lock", check.reference),
            EXIT_CONTENT,
        ));
    }
    if !attested {
        return Err(Failure::reported_with_code(
            anyhow::anyhow!(
                "{} ({digest}) matches the lock, but its attestations are missing or invalid",
                check.reference
            ),
            EXIT_ATTESTATION,
        ));
    }
    ui.status(
        "Verified",
        format!(
            "{} ({digest}) matches the lock{}",
            check.reference,
            match (verdict, check.attestations_only) {
                (Some(_), true) => ", by its signed attestations (layers not read)",
                (Some(_), false) => ", and its attestations are signed by the key",
                (None, _) => "",
            }
        ),
    );
    Ok(ExitCode::SUCCESS)
}
