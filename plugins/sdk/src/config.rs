//! Typed access to a plugin's configuration table.
//!
//! The host flattens the plugin's table from `models.toml` to sorted dotted keys
//! (`list<tuple<string, config-value>>`). [`Config`] wraps that list with getters that either
//! return the value or a [`PluginError`] with code `invalid-config`, the key, and a message the
//! user can act on.

use crate::{ConfigValue, PluginError};

/// A plugin's configuration: the host's flattened `(key, value)` list with typed getters.
///
/// Optional getters (`string`, `u64`, `bool`, `strings`) return `Ok(None)` when the key is
/// absent and an error when it is present with the wrong type; `require_*` getters also fail
/// when the key is absent.
#[derive(Clone, Debug, Default)]
pub struct Config {
    entries: Vec<(String, ConfigValue)>,
}

/// The name of a value's type as the user wrote it in TOML, for error messages.
fn type_name(value: &ConfigValue) -> &'static str {
    match value {
        ConfigValue::String(_) => "a string",
        ConfigValue::Integer(_) => "an integer",
        ConfigValue::Float(_) => "a float",
        ConfigValue::Boolean(_) => "a boolean",
        ConfigValue::Datetime(_) => "a datetime",
        ConfigValue::Strings(_) => "a list of strings",
        ConfigValue::Json(_) => "a table or mixed array",
    }
}

impl Config {
    /// Wraps the host's flattened `(key, value)` list.
    pub fn new(entries: Vec<(String, ConfigValue)>) -> Self {
        Config { entries }
    }

    /// The raw entries, in the host's order (sorted by key).
    pub fn entries(&self) -> &[(String, ConfigValue)] {
        &self.entries
    }

    /// The keys present, in the host's order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|(k, _)| k.as_str())
    }

    /// Whether there are no entries at all.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether `key` is present.
    pub fn contains(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// The raw value of `key`, if present.
    pub fn get(&self, key: &str) -> Option<&ConfigValue> {
        self.entries.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// Fails with `invalid-config` naming the first key that is not in `known`.
    pub fn check_known(&self, known: &[&str]) -> Result<(), PluginError> {
        for key in self.keys() {
            if !known.contains(&key) {
                let list = if known.is_empty() {
                    "this plugin takes no configuration".to_string()
                } else {
                    format!("known keys: {}", known.join(", "))
                };
                return Err(PluginError::invalid_config(
                    key,
                    format!("unknown config key `{key}` ({list})"),
                ));
            }
        }
        Ok(())
    }

    fn wrong_type(key: &str, want: &str, got: &ConfigValue) -> PluginError {
        PluginError::invalid_config(
            key,
            format!("config key `{key}` must be {want}, not {}", type_name(got)),
        )
    }

    fn missing(key: &str, want: &str) -> PluginError {
        PluginError::invalid_config(key, format!("config key `{key}` ({want}) is required"))
    }

    /// The string value of `key`, `None` if absent, an error if not a string.
    pub fn string(&self, key: &str) -> Result<Option<&str>, PluginError> {
        match self.get(key) {
            None => Ok(None),
            Some(ConfigValue::String(s)) => Ok(Some(s)),
            Some(other) => Err(Self::wrong_type(key, "a string", other)),
        }
    }

    /// The string value of `key`; an error if absent or not a string.
    pub fn require_string(&self, key: &str) -> Result<&str, PluginError> {
        self.string(key)?
            .ok_or_else(|| Self::missing(key, "a string"))
    }

    /// The value of `key` as a non-negative integer, `None` if absent, an error if it is not an
    /// integer or is negative.
    pub fn u64(&self, key: &str) -> Result<Option<u64>, PluginError> {
        match self.get(key) {
            None => Ok(None),
            Some(ConfigValue::Integer(n)) => u64::try_from(*n).map(Some).map_err(|_| {
                PluginError::invalid_config(
                    key,
                    format!("config key `{key}` must be a non-negative integer, not {n}"),
                )
            }),
            Some(other) => Err(Self::wrong_type(key, "a non-negative integer", other)),
        }
    }

    /// The value of `key` as a non-negative integer; an error if absent, not an integer or
    /// negative.
    pub fn require_u64(&self, key: &str) -> Result<u64, PluginError> {
        self.u64(key)?
            .ok_or_else(|| Self::missing(key, "a non-negative integer"))
    }

    /// The boolean value of `key`, `None` if absent, an error if not a boolean.
    pub fn bool(&self, key: &str) -> Result<Option<bool>, PluginError> {
        match self.get(key) {
            None => Ok(None),
            Some(ConfigValue::Boolean(b)) => Ok(Some(*b)),
            Some(other) => Err(Self::wrong_type(key, "a boolean", other)),
        }
    }

    /// The boolean value of `key`; an error if absent or not a boolean.
    pub fn require_bool(&self, key: &str) -> Result<bool, PluginError> {
        self.bool(key)?
            .ok_or_else(|| Self::missing(key, "a boolean"))
    }

    /// The list-of-strings value of `key`, `None` if absent, an error if not a list of strings.
    ///
    /// An empty TOML array is accepted whether the host sends it as `strings([])` or as the JSON
    /// text `[]`.
    pub fn strings(&self, key: &str) -> Result<Option<&[String]>, PluginError> {
        match self.get(key) {
            None => Ok(None),
            Some(ConfigValue::Strings(list)) => Ok(Some(list)),
            Some(ConfigValue::Json(text)) if text.trim() == "[]" => Ok(Some(&[])),
            Some(other) => Err(Self::wrong_type(key, "a list of strings", other)),
        }
    }

    /// The list-of-strings value of `key`; an error if absent or not a list of strings.
    pub fn require_strings(&self, key: &str) -> Result<&[String], PluginError> {
        self.strings(key)?
            .ok_or_else(|| Self::missing(key, "a list of strings"))
    }
}

impl From<Vec<(String, ConfigValue)>> for Config {
    fn from(entries: Vec<(String, ConfigValue)>) -> Self {
        Config::new(entries)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorCode;

    fn cfg() -> Config {
        Config::new(vec![
            ("a".into(), ConfigValue::String("x".into())),
            ("b".into(), ConfigValue::Integer(5)),
            ("c".into(), ConfigValue::Integer(-1)),
            ("d".into(), ConfigValue::Boolean(true)),
            (
                "e".into(),
                ConfigValue::Strings(vec!["p".into(), "q".into()]),
            ),
            ("f".into(), ConfigValue::Json("[]".into())),
        ])
    }

    #[test]
    fn getters() {
        let c = cfg();
        assert_eq!(c.string("a").unwrap(), Some("x"));
        assert_eq!(c.string("zz").unwrap(), None);
        assert_eq!(c.u64("b").unwrap(), Some(5));
        assert_eq!(c.bool("d").unwrap(), Some(true));
        assert_eq!(c.strings("e").unwrap().unwrap().len(), 2);
        assert_eq!(c.strings("f").unwrap().unwrap().len(), 0);
        assert_eq!(c.require_string("a").unwrap(), "x");
    }

    #[test]
    fn errors_name_the_key() {
        let c = cfg();
        let e = c.u64("c").unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidConfig);
        assert_eq!(e.key.as_deref(), Some("c"));
        let e = c.string("b").unwrap_err();
        assert!(
            e.message.contains("must be a string, not an integer"),
            "{}",
            e.message
        );
        let e = c.require_u64("missing").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("missing"));
        assert!(e.message.contains("is required"));
    }

    #[test]
    fn unknown_keys() {
        let c = cfg();
        assert!(c.check_known(&["a", "b", "c", "d", "e", "f"]).is_ok());
        let e = c.check_known(&["a", "b"]).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("c"));
        assert!(e.message.contains("unknown config key `c`"));
        assert!(Config::default().check_known(&[]).is_ok());
    }
}
