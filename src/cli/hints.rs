//! Finding the hint of an error: [`find`] walks an error's chain of causes and asks each
//! error family that implements [`Hint`]. The list of families is here, in `cli`, because
//! `cli` imports every module; the trait itself is the leaf module `crate::hint`.

use std::error::Error;

use crate::hint::Hint;

/// The hint of the first error in `error`'s chain (itself, then each `source()`) that has one.
pub(crate) fn find(error: &(dyn Error + 'static)) -> Option<String> {
    std::iter::successors(Some(error), |&e| e.source()).find_map(of_cause)
}

/// The hint of `cause` itself, when it is of a family that gives hints.
fn of_cause(cause: &(dyn Error + 'static)) -> Option<String> {
    /// Tries each type in turn; the first that `cause` is decides.
    macro_rules! families {
        ($($family:ty),* $(,)?) => {
            $(
                if let Some(e) = cause.downcast_ref::<$family>() {
                    return Hint::hint(e);
                }
            )*
        };
    }
    families!(
        crate::hub::HubError,
        crate::hub::config::EndpointError,
        crate::retry::RetryEnvError,
        crate::store::StoreError,
        crate::fetch::FetchError,
        crate::fetch::mirrors::MirrorPlanError,
        crate::resolve::LockError,
        crate::manifest::SourceError,
        crate::plugin::PluginError,
        crate::plugin::author::AuthorError,
        crate::hfcache::prune::PruneError,
        crate::bake::BakeError,
        crate::bake::plan::PlanError,
        crate::keys::KeyError,
        crate::oci::OciError,
        crate::oci::registry::RegistryError,
    );
    None
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use anyhow::Context;

    use super::*;
    use crate::hub::{HubError, RepoCtx};
    use crate::plugin::{ErrorCode, FailureKind, PluginError};
    use crate::repo::{RepoId, RepoKey, RepoKind};
    use crate::store::StoreError;

    /// What the CLI prints after `hint:` for `error` (`cli::hint_of` does exactly this).
    fn cli_hint(error: &anyhow::Error) -> Option<String> {
        error.chain().find_map(find)
    }

    /// The hint of a typed error on its own.
    fn hint(error: impl Error + 'static) -> String {
        find(&error).unwrap_or_else(|| panic!("no hint for `{error}`"))
    }

    fn repo() -> RepoCtx {
        RepoCtx {
            key: RepoKey::new(RepoKind::Model, RepoId::parse("acme/tiny").unwrap()),
            page: "https://huggingface.co/acme/tiny".into(),
        }
    }

    fn plugin_error(kind: FailureKind, code: Option<ErrorCode>) -> PluginError {
        PluginError {
            plugin: "corp-mirror".into(),
            kind,
            code,
            message: "failed".into(),
        }
    }

    fn oci_no_tag() -> crate::oci::OciError {
        crate::oci::OciError::NoTag {
            dir: PathBuf::from("out/image"),
            tag: "v2".into(),
            tags: "v1".into(),
        }
    }

    #[test]
    fn the_cli_finds_a_hint_under_any_number_of_contexts() {
        let hub = anyhow::Error::new(HubError::AuthRequired { repo: repo() })
            .context("resolving model `acme/tiny`")
            .context("locking models.toml");
        let store = Err::<(), _>(StoreError::HashMismatch {
            expected: "a".repeat(64),
            actual: "b".repeat(64),
        })
        .context("publishing a blob")
        .unwrap_err();
        let oci = anyhow::Error::new(oci_no_tag()).context("reading the base image");

        // The outermost error is the context, which has no hint of its own.
        let outer = hub.chain().next().unwrap();
        assert_eq!(outer.to_string(), "locking models.toml");
        assert_eq!(of_cause(outer), None);
        let hub_hint = cli_hint(&hub).unwrap();
        assert!(hub_hint.contains("export HF_TOKEN="), "{hub_hint}");
        assert!(hub_hint.contains("hf auth login"), "{hub_hint}");
        let store_hint = cli_hint(&store).unwrap();
        assert!(store_hint.contains("git diff models.lock"), "{store_hint}");
        assert_eq!(
            cli_hint(&oci).as_deref(),
            Some("name one of the listed tags: oci:DIR:TAG")
        );
    }

    #[test]
    fn errors_without_advice_have_no_hint() {
        let plain = anyhow::anyhow!("something broke").context("while testing");
        assert_eq!(cli_hint(&plain), None);
        let io = anyhow::Error::new(std::io::Error::other("disk on fire")).context("reading");
        assert_eq!(cli_hint(&io), None);
        // A family that has nothing to add lets a later cause speak.
        let unreadable = crate::manifest::SourceError {
            path: "models.toml".into(),
            location: None,
            message: "cannot read the manifest: Permission denied".into(),
            snippet: None,
        };
        assert_eq!(find(&unreadable), None);
    }

    #[test]
    fn wrappers_hand_on_the_hint_of_what_they_wrap() {
        // Transparent variants hide the inner error from `source()`: each wrapper delegates.
        let lock = crate::resolve::LockError::Hub(HubError::AuthRequired { repo: repo() });
        assert!(hint(lock).contains("HF_TOKEN"));
        let fetch = crate::fetch::FetchError::Store(StoreError::SizeMismatch {
            expected: 2,
            actual: 1,
        });
        assert!(hint(fetch).contains("run the command again"));
        let mirrors =
            crate::fetch::mirrors::MirrorPlanError::Plugin(plugin_error(FailureKind::Stale, None));
        assert!(hint(mirrors).contains("modelbake lock --update corp-mirror"));
        let prune =
            crate::hfcache::prune::PruneError::Plugin(plugin_error(FailureKind::Limit, None));
        assert!(hint(prune).contains("CPU budget"));
        let registry =
            crate::oci::OciError::Registry(crate::oci::registry::RegistryError::Refused {
                registry: "ghcr.io".into(),
                credential: "user `alice`".into(),
                from: "the auth file".into(),
            });
        assert!(hint(registry).contains("modelbake login REGISTRY"));
    }

    #[test]
    fn hub_errors_say_how_to_get_access() {
        let anonymous = HubError::RepoNotFound {
            repo: repo(),
            endpoint: "https://huggingface.co".into(),
            authenticated: false,
        };
        assert!(hint(anonymous).contains("HF_TOKEN"));
        let with_token = HubError::RepoNotFound {
            repo: repo(),
            endpoint: "https://huggingface.co".into(),
            authenticated: true,
        };
        assert!(hint(with_token).contains("open https://huggingface.co/acme/tiny"));
        let gated = HubError::AccessNotGranted {
            repo: repo(),
            token_source: "HF_TOKEN".into(),
        };
        assert!(hint(gated).contains("accept the conditions"));
        let limited = HubError::RateLimited {
            url: "https://huggingface.co/api/models/acme/tiny".into(),
            wait: std::time::Duration::from_secs(300),
        };
        assert!(hint(limited).contains("-j 2"));
        let retries = HubError::GaveUp {
            what: "listing".into(),
            attempts: 6,
            last: "HTTP 503".into(),
        };
        assert!(hint(retries).contains("MODELBAKE_HTTP_RETRIES"));
        let endpoint = crate::hub::config::Endpoint::parse("ftp://x").unwrap_err();
        assert!(hint(HubError::from(endpoint)).contains("http://127.0.0.1:8080"));
        let retry_env = crate::retry::RetryPolicy::try_from_env(&|_| Some("x".into())).unwrap_err();
        assert!(
            hint(HubError::from(retry_env)).contains(
                "set MODELBAKE_HTTP_RETRIES to a whole number, or unset it for the default (MODELBAKE_HTTP_RETRIES=5, MODELBAKE_HTTP_BACKOFF_MS=500)"
            )
        );
        // The message already says to re-list the repo; nothing to add.
        let gone = HubError::EntryNotFound {
            repo: repo(),
            revision: "main".into(),
            path: "a.bin".into(),
        };
        assert_eq!(find(&gone), None);
    }

    #[test]
    fn fetch_errors_point_at_the_sources_of_blobs() {
        let missing = crate::fetch::FetchError::Missing(vec!["model `acme/tiny` file `a`".into()]);
        assert!(hint(missing).contains("--reuse DIR"));
        let failed = crate::fetch::FetchError::Failed {
            failures: vec!["a".into(), "b".into()],
            total: 2,
            hints: vec!["first".into(), "second".into()],
        };
        assert_eq!(find(&failed).as_deref(), Some("first; second"));
        let quiet = crate::fetch::FetchError::Failed {
            failures: vec!["a".into()],
            total: 1,
            hints: Vec::new(),
        };
        assert_eq!(find(&quiet), None);
    }

    #[test]
    fn lock_and_manifest_errors_say_how_to_regenerate_or_fix_them() {
        let stale = crate::resolve::LockError::OutOfDate {
            lockfile: "models.lock".into(),
            drift: Vec::new(),
            plugins: Vec::new(),
        };
        assert!(hint(stale).contains("git diff models.lock"));
        let edited = crate::manifest::SourceError {
            path: "models.lock".into(),
            location: None,
            message: "model `acme/tiny`: digest does not match the files (was the lock edited by hand?); run `modelbake lock` to regenerate it".into(),
            snippet: None,
        };
        assert!(hint(edited).contains("git checkout -- models.lock"));
        let manifest = crate::manifest::SourceError {
            path: "models.toml".into(),
            location: Some((3, 1)),
            message: "unknown field `modle`".into(),
            snippet: None,
        };
        assert!(hint(manifest).contains("modelbake lock --help"));
    }

    #[test]
    fn plugin_errors_fit_their_category() {
        let limit = hint(plugin_error(FailureKind::Limit, None));
        assert!(limit.contains("64 MiB") && limit.contains("-vv"), "{limit}");
        let stale = hint(plugin_error(FailureKind::Stale, None));
        assert!(stale.contains("[plugins.corp-mirror]"), "{stale}");
        let config = hint(plugin_error(
            FailureKind::Refused,
            Some(ErrorCode::InvalidConfig),
        ));
        assert!(
            config.contains("`config` of [plugins.corp-mirror]"),
            "{config}"
        );
        let refused = hint(plugin_error(
            FailureKind::Refused,
            Some(ErrorCode::Internal),
        ));
        assert!(refused.contains("its author"), "{refused}");
        let load = hint(plugin_error(FailureKind::Load, None));
        assert!(load.contains("modelbake plugin check"), "{load}");
        let author = crate::plugin::author::AuthorError::RunCargo(std::io::Error::from(
            std::io::ErrorKind::NotFound,
        ));
        assert!(hint(author).contains("rustup"));
    }

    #[test]
    fn cache_and_image_errors_have_hints() {
        let scan = crate::hfcache::prune::PruneError::Scan {
            cache: "/nowhere".into(),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        };
        assert!(hint(scan).contains("--hub-cache"));
        let platform = crate::oci::OciError::NoPlatform {
            what: "ghcr.io/acme/base:1".into(),
            platform: "linux/s390x".into(),
            available: "linux/amd64".into(),
        };
        assert!(hint(platform).contains("--platform"));
    }
}
