//! `modelbake bake`: arguments and output.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Mutex;
use std::time::Instant;

use anyhow::Context as _;
use clap::Args;
use indicatif::ProgressBar;

use super::args::{CacheArgs, LayoutArgs, StoreArgs};
use super::{Cli, Failure, load_locked};
use crate::bake::{BakeOptions, bake};
use crate::env::process_env;
use crate::manifest::bake_table::{BakeOverrides, parse_key_value};
use crate::oci::Compression;
use crate::oci::push::{BlobReport, PushObserver};
use crate::oci::reference::ImageRef;
use crate::oci::transfer::Action;
use crate::ui::{Ui, byte_bar, display_path, human_size, line_above};

/// Arguments of `modelbake bake`.
#[derive(Debug, Args)]
pub struct BakeArgs {
    /// Write the layer tarballs and layers.json (digest, diff_id, size, media type, repo) here,
    /// for `ADD` in a Dockerfile or other tools.
    #[arg(long, value_name = "DIR")]
    pub layers: Option<PathBuf>,
    /// Write an OCI image layout (base + model layers) here; tagged with --tag.
    #[arg(long, value_name = "DIR")]
    pub oci: Option<PathBuf>,
    /// Push the image to a registry (no Docker daemon): REGISTRY/REPO[:TAG]. Blobs the registry
    /// has are skipped, base layers are mounted or streamed registry to registry, the others
    /// uploaded (--push-jobs at a time); the manifest is stored under the tag only after every
    /// blob is in. Refused before any upload: more than 127 layers, or a layer above the
    /// registry's known limit (ghcr.io 10 GB, ECR 52,000 MiB).
    #[arg(long, value_name = "REF")]
    pub push: Option<String>,
    /// Blobs uploaded at once by --push.
    #[arg(long, default_value_t = 3, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=32))]
    pub push_jobs: u16,
    /// Add a label to the image config (config.Labels), over [bake] labels; repeatable. GHCR
    /// links the package to its repository through
    /// `org.opencontainers.image.source=https://github.com/OWNER/REPO` (a GITHUB_TOKEN push
    /// can be denied without it).
    #[arg(long, value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub label: Vec<(String, String)>,
    /// Add an annotation to the image manifest, over [bake] annotations; repeatable
    /// (e.g. org.opencontainers.image.source, which GHCR also reads here).
    #[arg(long, value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub annotation: Vec<(String, String)>,
    /// Tag for --oci (and --push without a tag).
    #[arg(long, default_value = "latest")]
    pub tag: String,
    /// Base image: REGISTRY/REPO[:TAG|@DIGEST] or oci:DIR[:TAG] [default: bake.base, else none].
    #[arg(long, value_name = "REF")]
    pub base: Option<String>,
    /// Build on no base even if models.toml names one.
    #[arg(long, conflicts_with = "base")]
    pub no_base: bool,
    /// Layer compression [default: bake.compression, else none].
    #[arg(long, value_name = "none|gzip|zstd")]
    pub compression: Option<Compression>,
    /// Split repos larger than this many bytes over several layers [default: 10000000000].
    #[arg(long, value_name = "BYTES")]
    pub max_layer_size: Option<u64>,
    /// Do not set HF_HUB_OFFLINE=1 in the image environment.
    #[arg(long)]
    pub no_offline_env: bool,
    /// Allow plain-http registries (local test registries only).
    #[arg(long)]
    pub insecure: bool,
    /// Layers built at once.
    #[arg(long, short = 'j', default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub jobs: u16,
    /// Sign the attestations (SBOM, provenance, model signatures) with this ECDSA P-256
    /// private key (PKCS#8 or SEC1 PEM): each becomes a Sigstore bundle that `verify --image
    /// --key`, cosign (`verify-attestation --key`) and `model_signing verify key` check. Without
    /// it the statements are attached unsigned.
    #[arg(long, value_name = "FILE", conflicts_with = "no_attestations")]
    pub sign_key: Option<PathBuf>,
    /// Also write the image's attestations here as files: sbom.cdx.json, provenance.json and
    /// model-signing/<namespace>/<name>.json (bundles with --sign-key), e.g. for `cosign
    /// attest` or `actions/attest` to sign them keyless in CI.
    #[arg(long, value_name = "DIR", conflicts_with = "no_attestations")]
    pub attestations: Option<PathBuf>,
    /// Attach no attestations (every image gets an SBOM, provenance and model signing
    /// statements as OCI referrers otherwise).
    #[arg(long)]
    pub no_attestations: bool,
    #[command(flatten)]
    pub cache: CacheArgs,
    #[command(flatten)]
    pub layout: LayoutArgs,
    #[command(flatten)]
    pub store: StoreArgs,
}

/// Push progress: a byte bar on a terminal with a line per blob above it; elsewhere one status
/// line per blob.
struct PushProgress<'a> {
    ui: &'a Ui,
    jobs: u16,
    bar: Mutex<Option<ProgressBar>>,
}

impl PushProgress<'_> {
    fn bar(&self) -> Option<ProgressBar> {
        self.bar.lock().ok().and_then(|b| b.clone())
    }
}

impl PushObserver for PushProgress<'_> {
    fn warning(&self, message: &str) {
        if !self.ui.quiet {
            eprintln!("warning: {message}");
        }
    }

    fn started(&self, blobs: usize, bytes: u64) {
        self.ui.status(
            "Pushing",
            format!(
                "{blobs} blobs ({}) at most {} at once",
                human_size(bytes),
                self.jobs
            ),
        );
        if let Ok(mut b) = self.bar.lock() {
            *b = byte_bar(self.ui, bytes);
        }
    }

    fn sent(&self, bytes: u64) {
        if let Some(bar) = self.bar() {
            bar.inc(bytes);
        }
    }

    fn finished(&self, blob: &BlobReport) {
        let bar = self.bar();
        let verb = match blob.action {
            Action::Present => "Present",
            Action::Mounted => "Mounted",
            Action::Streamed => "Streamed",
            Action::Uploaded => "Uploaded",
            Action::Resumed => "Resumed",
        };
        if let (Some(bar), Action::Present | Action::Mounted) = (&bar, blob.action) {
            bar.inc(blob.size);
        }
        let line = self
            .ui
            .status_line(verb, format!("{} ({})", blob.what(), human_size(blob.size)));
        line_above(self.ui, bar.as_ref(), &line);
    }
}

/// Runs `modelbake bake`.
pub async fn run(cli: &Cli, args: &BakeArgs, ui: &Ui) -> Result<ExitCode, Failure> {
    let started = Instant::now();
    if args.layers.is_none() && args.oci.is_none() && args.push.is_none() {
        return Err(anyhow::anyhow!(
            "nothing to write: pass --layers DIR, --oci DIR and/or --push REF"
        )
        .into());
    }
    let (manifest, lock) = load_locked(cli, ui)?;
    // Shared with the layer plans, which keep indices into it rather than copies of its paths.
    let lock = std::sync::Arc::new(lock);
    let lock_path = manifest.lock_path();
    let lock_sha256 = std::fs::File::open(&lock_path)
        .and_then(crate::hash::sha256_of_reader)
        .map(|(sha, _)| sha)
        .with_context(|| format!("reading {}", display_path(&lock_path)))?;
    let store = args.store.open()?;
    let settings = manifest.bake.clone().with(&BakeOverrides {
        base: args.base.clone(),
        no_base: args.no_base,
        compression: args.compression,
        max_layer_size: args.max_layer_size,
        no_offline_env: args.no_offline_env,
        labels: args.label.clone(),
        annotations: args.annotation.clone(),
        ..args.layout.overrides()
    });
    let mtime = crate::bake::mtime_from_env(&process_env)?;
    let push = args.push.as_deref().map(ImageRef::parse).transpose()?;
    let opts = BakeOptions {
        settings,
        mtime,
        layers_dir: args.layers.clone(),
        oci_dir: args.oci.clone(),
        push,
        tag: args.tag.clone(),
        insecure: args.insecure,
        jobs: usize::from(args.jobs),
        push_jobs: usize::from(args.push_jobs),
        cache: args.cache.resolve(&manifest),
        cache_sign_key: args.cache.cache_sign_key.clone(),
        cache_trust_key: args.cache.cache_trust_key.clone(),
        attest: crate::bake::attach::AttestOptions {
            enabled: !args.no_attestations,
            sign_key: args.sign_key.clone(),
            out_dir: args.attestations.clone(),
            lock_name: lock_path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "models.lock".into()),
            lock_sha256,
        },
    };
    let on_layer = |l: &crate::bake::layer_cache::BuiltLayer| {
        let verb = match (l.reused, l.path.as_os_str().is_empty()) {
            (_, true) => "Cached",
            (true, false) => "Reused",
            (false, false) => "Built",
        };
        ui.status(
            verb,
            format!(
                "{} layer {} {} ({})",
                l.repo,
                l.part,
                &l.digest.as_str()[..19],
                human_size(l.size)
            ),
        );
    };
    let progress = PushProgress {
        ui,
        jobs: args.push_jobs,
        bar: Mutex::new(None),
    };
    let result = bake(&lock, &store, &opts, &on_layer, &progress).await;
    if let Some(bar) = progress.bar.lock().ok().and_then(|mut b| b.take()) {
        bar.finish_and_clear();
    }
    let report = result?;
    print_report(ui, &report, &args.tag, started)?;
    Ok(ExitCode::SUCCESS)
}

/// Warnings, `--json` and the status lines of a finished bake.
fn print_report(
    ui: &Ui,
    report: &crate::bake::BakeReport,
    tag: &str,
    started: Instant,
) -> Result<(), Failure> {
    for c in &report.env_corrected {
        eprintln!("warning: {c}");
    }
    if let Some(c) = &report.cache {
        for w in &c.warnings {
            eprintln!("warning: {w}");
        }
        ui.status(
            "Cache",
            format!(
                "{}: {} layer(s) from records, {} recorded",
                c.repository,
                c.hits.len(),
                c.recorded.len()
            ),
        );
    }
    if let Some(a) = &report.attestations {
        for w in &a.warnings {
            eprintln!("warning: {w}");
        }
        let subjects: std::collections::BTreeSet<&str> =
            a.attached.iter().map(|x| x.subject.as_str()).collect();
        let per = a.attached.len() / subjects.len().max(1);
        ui.status(
            "Attested",
            format!(
                "{} image(s): SBOM, provenance and {} model signing statement(s) each, {}",
                subjects.len(),
                per.saturating_sub(2),
                match &a.key_hint {
                    Some(h) => format!("signed (key {})", &h[..12.min(h.len())]),
                    None => "unsigned (sign with --sign-key)".into(),
                }
            ),
        );
        if let Some(dir) = &a.files {
            ui.status("Wrote", format!("attestations to {}", display_path(dir)));
        }
    }
    if ui.json {
        let mut v = serde_json::to_value(report)?;
        v["ok"] = true.into();
        println!("{}", serde_json::to_string_pretty(&v)?);
    }
    if let Some(dir) = &report.layers_dir {
        ui.status(
            "Wrote",
            format!(
                "{} layer files and layers.json to {}",
                report.layers.len(),
                display_path(dir)
            ),
        );
    }
    if let Some(dir) = &report.oci {
        let what = if report.index_digest.is_some() {
            "index"
        } else {
            "manifest"
        };
        ui.status(
            "Wrote",
            format!(
                "OCI layout {}:{} ({what} {})",
                display_path(dir),
                tag,
                report.manifest_digest
            ),
        );
    }
    for p in &report.platforms {
        ui.status(
            "Platform",
            format!(
                "{}: manifest {}, config {}",
                p.platform, p.manifest_digest, p.config_digest
            ),
        );
    }
    if let Some(p) = &report.push.pushed {
        ui.status(
            "Pushed",
            format!(
                "{p}: {} blobs uploaded, {} already there, {} mounted, {} copied from the base registry ({} sent)",
                report.push.uploaded,
                report.push.skipped,
                report.push.mounted,
                report.push.copied,
                human_size(report.push.bytes_sent)
            ),
        );
    }
    ui.status(
        "Finished",
        format!(
            "{} model layers ({} built, {} reused) on {} base layers in {:.2}s",
            report.layers.len(),
            report.built,
            report.reused,
            report.base_layers,
            started.elapsed().as_secs_f64()
        ),
    );
    Ok(())
}
