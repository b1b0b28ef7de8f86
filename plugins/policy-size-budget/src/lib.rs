//! `policy-size-budget`: per-file and total byte budgets for what gets locked.
//!
//! Config (at least one key):
//! - `max-file-bytes` (optional): drop every file larger than this.
//! - `max-total-bytes` (optional): fail (`invalid-input`) when the files kept add up to more.

use modelbake_plugin_sdk::policy::{Dropped, Selection};
use modelbake_plugin_sdk::{
    Config, ErrorCode, FileEntry, Info, PluginError, Policy, RepoRef, human_bytes,
};

const KEYS: &[&str] = &["max-file-bytes", "max-total-bytes"];

/// The parsed, checked configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budget {
    /// `max-file-bytes`.
    pub max_file: Option<u64>,
    /// `max-total-bytes`.
    pub max_total: Option<u64>,
}

impl Budget {
    /// Parses and checks the configuration.
    pub fn parse(config: &Config) -> Result<Budget, PluginError> {
        config.check_known(KEYS)?;
        let budget = Budget {
            max_file: config.u64("max-file-bytes")?,
            max_total: config.u64("max-total-bytes")?,
        };
        if budget.max_file.is_none() && budget.max_total.is_none() {
            return Err(PluginError::new(
                ErrorCode::InvalidConfig,
                "set max-file-bytes, max-total-bytes or both",
            ));
        }
        Ok(budget)
    }

    /// Applies the budget to `(path, size)` pairs.
    pub fn select(&self, files: &[(&str, u64)]) -> Result<Selection, PluginError> {
        let mut kept: Vec<(&str, u64)> = Vec::new();
        let mut dropped = Vec::new();
        for &(path, size) in files {
            match self.max_file {
                Some(max) if size > max => dropped.push(Dropped {
                    path: path.to_string(),
                    reason: format!(
                        "{} is over max-file-bytes ({})",
                        human_bytes(size),
                        human_bytes(max)
                    ),
                }),
                _ => kept.push((path, size)),
            }
        }
        if let Some(max) = self.max_total {
            let total = kept.iter().fold(0u64, |t, (_, s)| t.saturating_add(*s));
            if total > max {
                let mut largest = kept.clone();
                largest.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
                let top = largest
                    .iter()
                    .take(3)
                    .map(|(p, s)| format!("{p} ({})", human_bytes(*s)))
                    .collect::<Vec<_>>()
                    .join(", ");
                return Err(PluginError::invalid_input(format!(
                    "the files kept total {} ({total} bytes), over max-total-bytes {} ({max} \
                     bytes); largest: {top}",
                    human_bytes(total),
                    human_bytes(max)
                )));
            }
        }
        let mut keep: Vec<String> = kept.into_iter().map(|(p, _)| p.to_string()).collect();
        keep.sort();
        dropped.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(Selection { keep, dropped })
    }
}

/// The plugin.
pub struct Plugin;

impl Policy for Plugin {
    fn describe() -> Info {
        Info::new(
            env!("CARGO_PKG_NAME"),
            env!("CARGO_PKG_VERSION"),
            "Keeps a repository within a byte budget: drops every file over max-file-bytes, then \
             refuses the repository (naming its largest files) when what is left is over \
             max-total-bytes.",
            "max-file-bytes: optional; drop files larger than this many bytes\n\
             max-total-bytes: optional; fail when the kept files add up to more bytes than this\n\
             (at least one of the two is required)",
        )
    }

    fn validate_config(config: &Config) -> Result<(), PluginError> {
        Budget::parse(config).map(|_| ())
    }

    fn select(
        config: &Config,
        _repo: &RepoRef,
        files: &[FileEntry],
    ) -> Result<Selection, PluginError> {
        let budget = Budget::parse(config)?;
        let files: Vec<(&str, u64)> = files.iter().map(|f| (f.path.as_str(), f.size)).collect();
        budget.select(&files)
    }
}

modelbake_plugin_sdk::export_policy!(Plugin);

#[cfg(test)]
mod tests {
    use super::*;
    use modelbake_plugin_sdk::ConfigValue;

    const GB: u64 = 1_000_000_000;

    #[test]
    fn drops_large_files() {
        let b = Budget {
            max_file: Some(GB),
            max_total: None,
        };
        let sel = b
            .select(&[("b.bin", 4_200_000_000), ("a.json", 10), ("c.bin", GB)])
            .unwrap();
        assert_eq!(sel.keep, vec!["a.json", "c.bin"]);
        assert_eq!(sel.dropped.len(), 1);
        assert_eq!(sel.dropped[0].path, "b.bin");
        assert_eq!(
            sel.dropped[0].reason,
            "4.2 GB is over max-file-bytes (1.0 GB)"
        );
    }

    #[test]
    fn total_budget() {
        let b = Budget {
            max_file: Some(3 * GB),
            max_total: Some(4 * GB),
        };
        let files = [
            ("a", 2 * GB),
            ("b", GB),
            ("c", 1_500_000_000),
            ("d", 10),
            ("huge", 10 * GB),
        ];
        let e = b.select(&files).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidInput);
        assert!(
            e.message.contains("4.5 GB (4500000010 bytes)"),
            "{}",
            e.message
        );
        assert!(
            e.message.contains("4.0 GB (4000000000 bytes)"),
            "{}",
            e.message
        );
        assert!(
            e.message
                .ends_with("largest: a (2.0 GB), c (1.5 GB), b (1.0 GB)"),
            "{}",
            e.message
        );
        let ok = Budget {
            max_file: None,
            max_total: Some(5 * GB),
        };
        assert_eq!(ok.select(&files[..4]).unwrap().keep.len(), 4);
    }

    #[test]
    fn config() {
        let e = Budget::parse(&Config::default()).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidConfig);
        let c = Config::new(vec![("max-file-bytes".into(), ConfigValue::Integer(-5))]);
        assert_eq!(
            Budget::parse(&c).unwrap_err().key.as_deref(),
            Some("max-file-bytes")
        );
        let c = Config::new(vec![("max-total".into(), ConfigValue::Integer(5))]);
        assert_eq!(
            Budget::parse(&c).unwrap_err().key.as_deref(),
            Some("max-total")
        );
        let c = Config::new(vec![("max-total-bytes".into(), ConfigValue::Integer(5))]);
        assert_eq!(
            Budget::parse(&c).unwrap(),
            Budget {
                max_file: None,
                max_total: Some(5)
            }
        );
    }
}
