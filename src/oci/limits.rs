//! What registries and runtimes refuse, checked before a push sends a single request: the
//! layer count overlayfs can stack, and the per-layer size limits of the registries whose limit
//! is known. Checking first means a push that cannot succeed fails in a second, not after
//! uploading gigabytes, and tells the user which setting to change.
//!
//! The table ([`KNOWN_LIMITS`]) and its sources:
//! - GHCR: 10 GB per layer (GitHub Packages docs, "About permissions for GitHub Packages" /
//!   Container registry limits; also seen in aquaproj/aqua#4018).
//! - Amazon ECR: 52,000 MiB per layer (AWS ECR service quotas, "Layer size").
//! - Docker Hub: no documented cap, but pushes of 7–15 GB layers are reported to fail
//!   (moby/moby#23576): a warning above 10 GB.
//! - Harbor: layers over 10 GB have known problems (goharbor/harbor#15719; over 32 GiB fixed in
//!   2.9.2/2.10, #19573): a warning above 10 GB. Harbor runs on any host name, so only hosts
//!   whose first label says `harbor` are recognised.
//! - Any other registry: no limit is assumed.

use super::error::OciError;

/// The most layers an image may have: overlayfs stacks hit about 127 lower layers
/// (cri-o/cri-o#6261, moby/moby#26380), base layers and model layers together.
pub const MAX_LAYERS: usize = 127;

/// Whether a registry refuses a layer above its limit or is only known to have trouble.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// The registry refuses the layer: the push is stopped before it starts.
    Refuse,
    /// Large layers are known to fail there: the push goes on with a warning.
    Warn,
}

/// One registry's per-layer size limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostLimit {
    /// The registry's name, as messages show it.
    pub registry: &'static str,
    /// The largest layer in bytes.
    pub max_layer: u64,
    /// What happens above it.
    pub severity: Severity,
    /// Where the number comes from.
    pub source: &'static str,
}

/// 10 GB, GHCR's stated limit and the point where Docker Hub and Harbor pushes get unreliable.
const TEN_GB: u64 = 10_000_000_000;

/// The per-layer limits modelbake knows, with their sources (see the module documentation).
pub const KNOWN_LIMITS: &[(HostPattern, HostLimit)] = &[
    (
        HostPattern::Exact("ghcr.io"),
        HostLimit {
            registry: "GitHub Container Registry (ghcr.io)",
            max_layer: TEN_GB,
            severity: Severity::Refuse,
            source: "GitHub Packages documentation: 10 GB per layer",
        },
    ),
    (
        HostPattern::Ecr,
        HostLimit {
            registry: "Amazon ECR",
            max_layer: 52_000 * 1024 * 1024,
            severity: Severity::Refuse,
            source: "Amazon ECR service quotas: 52,000 MiB per layer",
        },
    ),
    (
        HostPattern::DockerHub,
        HostLimit {
            registry: "Docker Hub",
            max_layer: TEN_GB,
            severity: Severity::Warn,
            source: "moby/moby#23576: pushes of 7-15 GB layers reported failing",
        },
    ),
    (
        HostPattern::Harbor,
        HostLimit {
            registry: "Harbor",
            max_layer: TEN_GB,
            severity: Severity::Warn,
            source: "goharbor/harbor#15719, #19573: layers over 10 GB fail on older releases",
        },
    ),
];

/// How a registry is recognised by its host name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostPattern {
    /// Exactly this host.
    Exact(&'static str),
    /// `<account>.dkr.ecr.<region>.amazonaws.com` (and `.amazonaws.com.cn`).
    Ecr,
    /// `docker.io` and its aliases.
    DockerHub,
    /// A host whose first label contains `harbor`.
    Harbor,
}

impl HostPattern {
    fn matches(self, host: &str) -> bool {
        let host = host.to_ascii_lowercase();
        let name = host.split(':').next().unwrap_or(&host);
        match self {
            HostPattern::Exact(h) => name == h,
            HostPattern::Ecr => {
                name.contains(".dkr.ecr.")
                    && (name.ends_with(".amazonaws.com") || name.ends_with(".amazonaws.com.cn"))
            }
            HostPattern::DockerHub => matches!(
                name,
                "docker.io"
                    | "index.docker.io"
                    | "registry-1.docker.io"
                    | "registry.hub.docker.com"
            ),
            HostPattern::Harbor => name.split('.').next().is_some_and(|l| l.contains("harbor")),
        }
    }
}

/// The known per-layer limit of the registry at `host` (as written in references), if any.
pub fn limit_for(host: &str) -> Option<HostLimit> {
    KNOWN_LIMITS
        .iter()
        .find(|(p, _)| p.matches(host))
        .map(|(_, l)| *l)
}

/// One blob of the image, as the guards see it.
#[derive(Debug, Clone)]
pub struct LayerSize {
    /// What it is, for messages ("model layer acme/bert part 1/2", "base layer sha256:…").
    pub what: String,
    /// Its size in bytes.
    pub size: u64,
}

/// Checks an image before anything is sent to `host`: at most [`MAX_LAYERS`] layers, and no
/// layer above a known hard limit. Returns the warnings for registries where large layers are
/// only known to be unreliable.
pub fn check(
    host: &str,
    base_layers: usize,
    layers: &[LayerSize],
) -> Result<Vec<String>, OciError> {
    let total = layers.len();
    if total > MAX_LAYERS {
        return Err(OciError::TooManyLayers {
            total,
            base: base_layers,
            limit: MAX_LAYERS,
        });
    }
    let Some(limit) = limit_for(host) else {
        return Ok(Vec::new());
    };
    let mut warnings = Vec::new();
    for l in layers.iter().filter(|l| l.size > limit.max_layer) {
        match limit.severity {
            Severity::Refuse => {
                return Err(OciError::LayerTooLarge {
                    what: l.what.clone(),
                    size: l.size,
                    registry: limit.registry.to_owned(),
                    limit: limit.max_layer,
                    source_note: limit.source.to_owned(),
                });
            }
            Severity::Warn => warnings.push(format!(
                "{} is {} ({} bytes); {} is known to fail on layers above {} ({}): lower `max_layer_size` in [bake] (or --max-layer-size) to split it",
                l.what,
                gb(l.size),
                l.size,
                limit.registry,
                gb(limit.max_layer),
                limit.source
            )),
        }
    }
    Ok(warnings)
}

/// Bytes in decimal gigabytes, as registries state their limits.
fn gb(bytes: u64) -> String {
    format!("{:.1} GB", bytes as f64 / 1e9)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(size: u64) -> LayerSize {
        LayerSize {
            what: "model layer acme/big part 1/1".into(),
            size,
        }
    }

    #[test]
    fn hosts_are_recognised() {
        assert_eq!(limit_for("ghcr.io").unwrap().max_layer, TEN_GB);
        assert_eq!(limit_for("GHCR.io").unwrap().severity, Severity::Refuse);
        let ecr = limit_for("123456789012.dkr.ecr.eu-west-1.amazonaws.com").unwrap();
        assert_eq!(ecr.max_layer, 54_525_952_000);
        assert!(limit_for("123456789012.dkr.ecr.cn-north-1.amazonaws.com.cn").is_some());
        assert_eq!(limit_for("docker.io").unwrap().severity, Severity::Warn);
        assert_eq!(
            limit_for("registry-1.docker.io").unwrap().registry,
            "Docker Hub"
        );
        assert_eq!(
            limit_for("harbor.example.com:8443").unwrap().registry,
            "Harbor"
        );
        for unknown in [
            "127.0.0.1:5000",
            "quay.io",
            "ghcr.io.example.com",
            "amazonaws.com",
            "example.com/harbor",
            "registry.gitlab.com",
        ] {
            assert_eq!(limit_for(unknown), None, "{unknown}");
        }
    }

    #[test]
    fn ghcr_refuses_a_layer_above_ten_gb_and_accepts_one_at_it() {
        assert!(check("ghcr.io", 0, &[layer(TEN_GB)]).unwrap().is_empty());
        let err = check("ghcr.io", 0, &[layer(TEN_GB + 1)]).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("acme/big") && msg.contains("ghcr.io"), "{msg}");
        assert!(err.hint().unwrap().contains("max_layer_size"));
    }

    #[test]
    fn ecr_allows_more_than_ghcr() {
        let size = 20_000_000_000;
        assert!(check("1.dkr.ecr.us-east-1.amazonaws.com", 0, &[layer(size)]).is_ok());
        assert!(check("ghcr.io", 0, &[layer(size)]).is_err());
        assert!(
            check(
                "1.dkr.ecr.us-east-1.amazonaws.com",
                0,
                &[layer(60_000_000_000)]
            )
            .is_err()
        );
    }

    #[test]
    fn docker_hub_and_harbor_warn_and_unknown_hosts_have_no_limit() {
        let big = [layer(TEN_GB + 1), layer(5)];
        let w = check("docker.io", 0, &big).unwrap();
        assert_eq!(w.len(), 1);
        assert!(
            w[0].contains("Docker Hub") && w[0].contains("max_layer_size"),
            "{w:?}"
        );
        assert_eq!(check("harbor.corp.example", 0, &big).unwrap().len(), 1);
        assert!(
            check("127.0.0.1:5000", 0, &[layer(u64::MAX)])
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn more_than_127_layers_are_refused_everywhere() {
        let ok: Vec<_> = (0..MAX_LAYERS).map(|_| layer(1)).collect();
        assert!(check("127.0.0.1:5000", 10, &ok).is_ok());
        let too_many: Vec<_> = (0..=MAX_LAYERS).map(|_| layer(1)).collect();
        let err = check("127.0.0.1:5000", 10, &too_many).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("128 layers") && msg.contains("10 from the base"),
            "{msg}"
        );
        assert!(err.hint().unwrap().contains("max_layer_size"));
    }
}
