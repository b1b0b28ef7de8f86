//! `mirror-url-template`: download URLs from a template, for any mirror shaped like the Hub
//! (hf-mirror.com, an Artifactory remote, a company proxy).
//!
//! Config:
//! - `base` (required): the mirror's root URL, `http://` or `https://`; trailing `/` trimmed.
//! - `template` (optional): default `{base}/{prefix}{id}/resolve/{commit}/{path}`.
//! - `credential` (optional): name of the credential the host attaches to every candidate.

use modelbake_plugin_sdk::mirror::Candidate;
use modelbake_plugin_sdk::template::{Template, is_http_url, percent_encode, percent_encode_path};
use modelbake_plugin_sdk::{Config, FileEntry, Info, Mirror, PluginError, RepoRef};

/// The template used when `template` is not set.
pub const DEFAULT_TEMPLATE: &str = "{base}/{prefix}{id}/resolve/{commit}/{path}";

/// The placeholders a template may use.
pub const PLACEHOLDERS: &[&str] = &[
    "base", "prefix", "kind", "id", "revision", "commit", "path", "sha256", "blob",
];

const KEYS: &[&str] = &["base", "template", "credential"];

/// The parsed, checked configuration.
#[derive(Debug)]
pub struct Settings {
    base: String,
    template: Template,
    credential: Option<String>,
}

impl Settings {
    /// Parses and checks the configuration.
    pub fn parse(config: &Config) -> Result<Settings, PluginError> {
        config.check_known(KEYS)?;
        let base = config.require_string("base")?;
        if !is_http_url(base) {
            return Err(PluginError::invalid_config(
                "base",
                format!("`base` must start with http:// or https://, got `{base}`"),
            ));
        }
        let base = base.trim_end_matches('/').to_string();
        if !is_http_url(&base) {
            return Err(PluginError::invalid_config(
                "base",
                "`base` has no host after the scheme",
            ));
        }
        let text = config.string("template")?.unwrap_or(DEFAULT_TEMPLATE);
        let template = Template::parse(text, PLACEHOLDERS)
            .map_err(|m| PluginError::invalid_config("template", m))?;
        if !template.starts_with_placeholder("base") && !is_http_url(template.literal_prefix()) {
            return Err(PluginError::invalid_config(
                "template",
                format!("`template` must start with {{base}}, http:// or https://, got `{text}`"),
            ));
        }
        let credential = config.string("credential")?.map(str::to_string);
        Ok(Settings {
            base,
            template,
            credential,
        })
    }

    /// The candidates for one file: none when the template needs a sha256 the file lacks.
    pub fn candidates(&self, repo: &RepoRef, file: &FileEntry) -> Vec<Candidate> {
        let url = self.template.render(|name| {
            Some(match name {
                "base" => self.base.clone(),
                "prefix" => repo.kind.url_prefix().to_string(),
                "kind" => repo.kind.as_str().to_string(),
                "id" => repo.id.clone(),
                "revision" => percent_encode(&repo.revision),
                "commit" => repo.commit.clone(),
                "path" => percent_encode_path(&file.path),
                "sha256" => file.sha256.clone()?,
                "blob" => file.blob.clone(),
                _ => return None,
            })
        });
        url.map(|url| Candidate {
            url,
            credential: self.credential.clone(),
        })
        .into_iter()
        .collect()
    }
}

/// The plugin.
pub struct Plugin;

impl Mirror for Plugin {
    fn describe() -> Info {
        Info::new(
            env!("CARGO_PKG_NAME"),
            env!("CARGO_PKG_VERSION"),
            "Offers one download URL per file, built from a template, for mirrors laid out like \
             the Hub (hf-mirror.com, an Artifactory Hugging Face remote, a company proxy). The \
             bytes are still checked against the lock's sha256.",
            "base: the mirror's root URL (http:// or https://), e.g. https://hf-mirror.com\n\
             template: optional URL template, default {base}/{prefix}{id}/resolve/{commit}/{path}; \
             placeholders {base} {prefix} {kind} {id} {revision} {commit} {path} {sha256} {blob}\n\
             credential: optional name of a credential to attach (MODELBAKE_CREDENTIAL_<NAME>)",
        )
    }

    fn validate_config(config: &Config) -> Result<(), PluginError> {
        Settings::parse(config).map(|_| ())
    }

    fn resolve(
        config: &Config,
        repo: &RepoRef,
        files: &[FileEntry],
    ) -> Result<Vec<Vec<Candidate>>, PluginError> {
        let settings = Settings::parse(config)?;
        Ok(files.iter().map(|f| settings.candidates(repo, f)).collect())
    }
}

modelbake_plugin_sdk::export_mirror!(Plugin);

#[cfg(test)]
mod tests {
    use super::*;
    use modelbake_plugin_sdk::{ConfigValue, ErrorCode, RepoKind};

    fn config(pairs: &[(&str, &str)]) -> Config {
        Config::new(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), ConfigValue::String(v.to_string())))
                .collect(),
        )
    }

    fn repo(kind: RepoKind) -> RepoRef {
        RepoRef {
            kind,
            id: "org/name".into(),
            revision: "refs/pr/1".into(),
            commit: "c".repeat(40),
        }
    }

    fn file(path: &str, sha: Option<&str>) -> FileEntry {
        FileEntry {
            path: path.into(),
            size: 1,
            sha256: sha.map(str::to_string),
            blob: "b".repeat(40),
        }
    }

    fn urls(cfg: &Config, kind: RepoKind, files: &[FileEntry]) -> Vec<Vec<String>> {
        Plugin::resolve(cfg, &repo(kind), files)
            .unwrap()
            .into_iter()
            .map(|l| l.into_iter().map(|c| c.url).collect())
            .collect()
    }

    #[test]
    fn default_template() {
        let cfg = config(&[("base", "https://hf-mirror.com/")]);
        let c = "c".repeat(40);
        assert_eq!(
            urls(
                &cfg,
                RepoKind::Model,
                &[file("sub dir/model.safetensors", None)]
            ),
            vec![vec![format!(
                "https://hf-mirror.com/org/name/resolve/{c}/sub%20dir/model.safetensors"
            )]]
        );
        assert_eq!(
            urls(&cfg, RepoKind::Dataset, &[file("a.txt", None)]),
            vec![vec![format!(
                "https://hf-mirror.com/datasets/org/name/resolve/{c}/a.txt"
            )]]
        );
        assert_eq!(
            urls(&cfg, RepoKind::Space, &[file("a.txt", None)]),
            vec![vec![format!(
                "https://hf-mirror.com/spaces/org/name/resolve/{c}/a.txt"
            )]]
        );
    }

    #[test]
    fn all_placeholders_and_credential() {
        let cfg = config(&[
            ("base", "http://m.local//"),
            (
                "template",
                "{base}/{kind}/{id}/{revision}/{path}?sha={sha256}&blob={blob}",
            ),
            ("credential", "corp"),
        ]);
        let sha = "a".repeat(64);
        let out = Plugin::resolve(
            &cfg,
            &repo(RepoKind::Dataset),
            &[file("x/y#z.bin", Some(&sha)), file("n.txt", None)],
        )
        .unwrap();
        assert_eq!(out.len(), 2);
        assert_eq!(
            out[0][0].url,
            format!(
                "http://m.local/dataset/org/name/refs%2Fpr%2F1/x/y%23z.bin?sha={sha}&blob={}",
                "b".repeat(40)
            )
        );
        assert_eq!(out[0][0].credential.as_deref(), Some("corp"));
        assert!(out[1].is_empty(), "no sha256, no candidate");
    }

    #[test]
    fn rejects_bad_config() {
        let e = Plugin::validate_config(&config(&[])).unwrap_err();
        assert_eq!(
            (e.code, e.key.as_deref()),
            (ErrorCode::InvalidConfig, Some("base"))
        );
        let e = Plugin::validate_config(&config(&[("base", "ftp://x")])).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("base"));
        let e = Plugin::validate_config(&config(&[("base", "https://")])).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("base"));
        let e =
            Plugin::validate_config(&config(&[("base", "https://x"), ("bogus", "1")])).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("bogus"));
        let e = Plugin::validate_config(&config(&[
            ("base", "https://x"),
            ("template", "{base}/{nope}"),
        ]))
        .unwrap_err();
        assert_eq!(e.key.as_deref(), Some("template"));
        assert!(e.message.contains("{nope}"));
        let e = Plugin::validate_config(&config(&[
            ("base", "https://x"),
            ("template", "file:///{path}"),
        ]))
        .unwrap_err();
        assert_eq!(e.key.as_deref(), Some("template"));
        let bad_type = Config::new(vec![("base".into(), ConfigValue::Integer(1))]);
        assert_eq!(
            Plugin::validate_config(&bad_type)
                .unwrap_err()
                .key
                .as_deref(),
            Some("base")
        );
        assert!(Plugin::validate_config(&config(&[("base", "https://x")])).is_ok());
    }
}
