//! Mirror routing: before downloading, every mirror plugin in `[mirror] use` is asked, once
//! per repo, where each file can be fetched from. The answers become an ordered list of
//! sources per file; the Hub endpoint always comes last. Credentials are attached by the host
//! from `MODELBAKE_CREDENTIAL_<NAME>`, so plugins never see a secret.

use std::collections::HashMap;

use url::Url;

use crate::hub::Token;
use crate::lock::Lockfile;
use crate::plugin::{ErrorCode, FileEntry, PluginError, PluginSet, RepoRef};
use crate::repo::RepoKey;

/// One mirror location for a file.
#[derive(Debug, Clone)]
pub struct MirrorSource {
    /// The plugin that proposed it.
    pub plugin: String,
    /// Where to download from.
    pub url: Url,
    /// The credential to send to that URL's origin only.
    pub token: Option<Token>,
}

/// Mirror sources per locked file, in the order they are tried.
#[derive(Debug, Clone, Default)]
pub struct MirrorPlan {
    by_file: HashMap<(RepoKey, String), Vec<MirrorSource>>,
    /// Candidates refused before any download (bad URL, missing credential), in words.
    pub rejected: Vec<String>,
}

/// The environment variable holding a credential: `MODELBAKE_CREDENTIAL_` + the name in upper
/// case with every other character turned into `_`.
pub fn credential_var(name: &str) -> String {
    let tail: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    format!("MODELBAKE_CREDENTIAL_{tail}")
}

/// Why the mirror plan of a fetch could not be made.
#[derive(Debug, thiserror::Error)]
pub enum MirrorPlanError {
    /// A `[mirror] use` plugin has no pin in the lock, so its bytes cannot be checked.
    #[error(
        "mirror plugin `{name}` is not pinned in {}: run `modelbake lock` first",
        crate::ui::display_path(.lock)
    )]
    NotPinned {
        /// The plugin.
        name: String,
        /// The lock that lacks it.
        lock: std::path::PathBuf,
    },
    /// A mirror plugin could not be loaded, or failed.
    #[error(transparent)]
    Plugin(#[from] PluginError),
}

/// What to do about a mirror plan that could not be made.
impl crate::hint::Hint for MirrorPlanError {
    fn hint(&self) -> Option<String> {
        match self {
            MirrorPlanError::NotPinned { .. } => Some(
                "models.lock pins the sha256 of every plugin the manifest uses, so the bytes that \
                 run are the ones reviewed: run `modelbake lock` where the plugin is available and \
                 commit models.lock"
                    .to_owned(),
            ),
            MirrorPlanError::Plugin(e) => crate::hint::Hint::hint(e),
        }
    }
}

impl MirrorPlan {
    /// The plan of a fetch: none when offline, when no mirror is configured or when nothing
    /// is missing from the store; otherwise the `[mirror] use` plugins (pinned by the lock)
    /// are loaded and asked about every file.
    pub async fn for_fetch(
        manifest: &crate::manifest::Manifest,
        lock: &Lockfile,
        store: &crate::store::Store,
        offline: bool,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, MirrorPlanError> {
        if offline || manifest.mirrors.is_empty() || store.missing(lock).is_empty() {
            return Ok(MirrorPlan::default());
        }
        if let Some(name) = manifest.mirrors.iter().find(|n| lock.plugin(n).is_none()) {
            return Err(MirrorPlanError::NotPinned {
                name: name.clone(),
                lock: manifest.lock_path(),
            });
        }
        let dir = store.plugin_dir();
        let mut plugins = crate::plugin::PluginSet::new(Some(dir.clone()))?;
        plugins
            .load(
                manifest,
                &manifest.mirrors,
                crate::plugin::PluginKind::Mirror,
                &lock.plugins,
                Some(&dir),
                false,
            )
            .await?;
        Ok(MirrorPlan::build(
            lock,
            &plugins,
            &manifest.mirrors,
            &manifest.credentials,
            env,
        )?)
    }

    /// Asks the mirror plugins `order` (all loaded in `plugins`) about every file of `lock`.
    /// A candidate that names a credential keeps it only when its URL has the origin
    /// `bindings` gives that credential (`[mirror.credentials]`).
    pub fn build(
        lock: &Lockfile,
        plugins: &PluginSet,
        order: &[String],
        bindings: &std::collections::BTreeMap<String, url::Origin>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, PluginError> {
        let mut plan = MirrorPlan::default();
        for repo in &lock.repos {
            let repo_ref = RepoRef {
                kind: repo.kind.into(),
                id: repo.id.to_string(),
                revision: repo.revision.to_string(),
                commit: repo.commit.clone(),
            };
            let files: Vec<FileEntry> = repo
                .files
                .iter()
                .map(|f| FileEntry {
                    path: f.path.clone(),
                    size: f.size,
                    sha256: Some(f.sha256.clone()),
                    blob: f.pointer.clone().unwrap_or_else(|| f.blob.clone()),
                })
                .collect();
            for name in order {
                let Some(p) = plugins.get(name) else {
                    continue;
                };
                let (lists, rejected) = match p.plugin.resolve(&p.config, &repo_ref, &files) {
                    Ok(answer) => answer,
                    // "No opinion on this repo": the next mirror (or the Hub) serves it.
                    Err(e) if e.code == Some(ErrorCode::Unsupported) => {
                        tracing::info!("{e}");
                        continue;
                    }
                    Err(e) => return Err(e),
                };
                plan.rejected.extend(rejected);
                for (file, list) in files.iter().zip(lists) {
                    for c in list {
                        let token = match &c.credential {
                            None => None,
                            Some(cred) => {
                                match bindings.get(cred) {
                                    Some(origin) if *origin == c.url.origin() => {}
                                    bound => {
                                        plan.rejected.push(format!(
                                            "plugin `{name}` proposed {} for `{}` with credential `{cred}`, {}: skipped",
                                            crate::hub::shown(&c.url),
                                            file.path,
                                            match bound {
                                                Some(o) => format!("which may only be sent to {}", o.ascii_serialization()),
                                                None => format!("which is not bound to an origin (add `{cred} = \"{}\"` under [mirror.credentials] if you trust it)", c.url.origin().ascii_serialization()),
                                            }
                                        ));
                                        continue;
                                    }
                                }
                                let var = credential_var(cred);
                                match env(&var).filter(|v| !v.is_empty()) {
                                    Some(v) => Some(Token::new(v, var)),
                                    None => {
                                        plan.rejected.push(format!(
                                            "plugin `{name}` proposed {} for `{}` with credential `{cred}`, but {var} is not set: skipped",
                                            crate::hub::shown(&c.url),
                                            file.path
                                        ));
                                        continue;
                                    }
                                }
                            }
                        };
                        plan.by_file
                            .entry((repo.key(), file.path.clone()))
                            .or_default()
                            .push(MirrorSource {
                                plugin: name.clone(),
                                url: c.url,
                                token,
                            });
                    }
                }
            }
        }
        Ok(plan)
    }

    /// The mirror sources of one file, best first (empty: only the Hub).
    pub fn for_file(&self, repo: &RepoKey, path: &str) -> &[MirrorSource] {
        self.by_file
            .get(&(repo.clone(), path.to_owned()))
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credential_names_map_to_env_vars() {
        assert_eq!(
            credential_var("artifactory"),
            "MODELBAKE_CREDENTIAL_ARTIFACTORY"
        );
        assert_eq!(
            credential_var("s3-cas.prod"),
            "MODELBAKE_CREDENTIAL_S3_CAS_PROD"
        );
    }
}
