//! `mirror-cas`: a content-addressed bucket (S3, GCS, a plain web server) that stores every
//! file under its sha256.
//!
//! Config:
//! - `template` (required): `http://` or `https://` URL containing `{sha256}`; `{sha256_prefix}`
//!   (the first two hex digits) may also be used.
//! - `credential` (optional): name of the credential the host attaches to every candidate.

use modelbake_plugin_sdk::mirror::Candidate;
use modelbake_plugin_sdk::template::{Template, is_http_url};
use modelbake_plugin_sdk::{Config, FileEntry, Info, Mirror, PluginError, RepoRef};

/// The placeholders a template may use.
pub const PLACEHOLDERS: &[&str] = &["sha256", "sha256_prefix"];

const KEYS: &[&str] = &["template", "credential"];

/// The parsed, checked configuration.
#[derive(Debug)]
pub struct Settings {
    template: Template,
    credential: Option<String>,
}

impl Settings {
    /// Parses and checks the configuration.
    pub fn parse(config: &Config) -> Result<Settings, PluginError> {
        config.check_known(KEYS)?;
        let text = config.require_string("template")?;
        let template = Template::parse(text, PLACEHOLDERS)
            .map_err(|m| PluginError::invalid_config("template", m))?;
        if !template.uses("sha256") {
            return Err(PluginError::invalid_config(
                "template",
                format!("`template` must contain {{sha256}}, got `{text}`"),
            ));
        }
        if !is_http_url(template.literal_prefix()) {
            return Err(PluginError::invalid_config(
                "template",
                format!("`template` must start with http:// or https:// and a host, got `{text}`"),
            ));
        }
        let credential = config.string("credential")?.map(str::to_string);
        Ok(Settings {
            template,
            credential,
        })
    }

    /// The candidates for one file: none without a well-formed sha256.
    pub fn candidates(&self, file: &FileEntry) -> Vec<Candidate> {
        let Some(sha) = file.sha256.as_deref() else {
            return Vec::new();
        };
        if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Vec::new();
        }
        let sha = sha.to_ascii_lowercase();
        let url = self.template.render(|name| match name {
            "sha256" => Some(sha.clone()),
            "sha256_prefix" => Some(sha[..2].to_string()),
            _ => None,
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
            "Offers a content-addressed bucket as a download location: every file whose sha256 \
             is known is fetched from a URL built from that sha256. Files without a sha256 are \
             left to the next mirror.",
            "template: URL with {sha256} (and optionally {sha256_prefix}, its first two hex \
             digits), e.g. https://bucket.example.com/sha256/{sha256_prefix}/{sha256}\n\
             credential: optional name of a credential to attach (MODELBAKE_CREDENTIAL_<NAME>)",
        )
    }

    fn validate_config(config: &Config) -> Result<(), PluginError> {
        Settings::parse(config).map(|_| ())
    }

    fn resolve(
        config: &Config,
        _repo: &RepoRef,
        files: &[FileEntry],
    ) -> Result<Vec<Vec<Candidate>>, PluginError> {
        let settings = Settings::parse(config)?;
        Ok(files.iter().map(|f| settings.candidates(f)).collect())
    }
}

modelbake_plugin_sdk::export_mirror!(Plugin);

#[cfg(test)]
mod tests {
    use super::*;
    use modelbake_plugin_sdk::{ConfigValue, RepoKind};

    fn config(pairs: &[(&str, &str)]) -> Config {
        Config::new(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), ConfigValue::String(v.to_string())))
                .collect(),
        )
    }

    fn file(sha: Option<&str>) -> FileEntry {
        FileEntry {
            path: "model.safetensors".into(),
            size: 1,
            sha256: sha.map(str::to_string),
            blob: "b".repeat(40),
        }
    }

    #[test]
    fn resolves_by_sha() {
        let cfg = config(&[
            (
                "template",
                "https://bucket.example/{sha256_prefix}/{sha256}",
            ),
            ("credential", "s3"),
        ]);
        let repo = RepoRef {
            kind: RepoKind::Model,
            id: "o/n".into(),
            revision: "main".into(),
            commit: "c".repeat(40),
        };
        let sha = format!("AB{}", "0".repeat(62));
        let out = Plugin::resolve(
            &cfg,
            &repo,
            &[file(Some(&sha)), file(None), file(Some("zz"))],
        )
        .unwrap();
        assert_eq!(out.len(), 3);
        assert_eq!(
            out[0][0].url,
            format!("https://bucket.example/ab/ab{}", "0".repeat(62))
        );
        assert_eq!(out[0][0].credential.as_deref(), Some("s3"));
        assert!(out[1].is_empty());
        assert!(out[2].is_empty());
    }

    #[test]
    fn rejects_bad_config() {
        for (pairs, key) in [
            (vec![], "template"),
            (vec![("template", "https://b/{path}")], "template"),
            (vec![("template", "https://b/x")], "template"),
            (vec![("template", "s3://b/{sha256}")], "template"),
            (vec![("template", "{sha256}")], "template"),
            (vec![("template", "https://b/{sha256}"), ("x", "y")], "x"),
        ] {
            let e = Plugin::validate_config(&config(&pairs)).unwrap_err();
            assert_eq!(e.key.as_deref(), Some(key), "{pairs:?}: {}", e.message);
        }
        assert!(Plugin::validate_config(&config(&[("template", "http://b/{sha256}")])).is_ok());
    }
}
