//! A plugin's configuration: its `config` table from models.toml, flattened into sorted
//! dotted keys with typed values (components cannot express recursive types, so nested arrays
//! and arrays of tables travel as canonical JSON text), plus a digest recorded in the lock so
//! a configuration change is visible in review and re-locks what it affects.

use super::ConfigValue;

/// A flattened configuration and its digest.
#[derive(Debug, Clone, Default)]
pub struct PluginConfig {
    values: Vec<(String, ConfigValue)>,
    digest: String,
}

impl PluginConfig {
    /// Flattens a TOML table: `a = 1`, `[b] c = "x"` become `a`, `b.c`.
    pub fn from_table(table: &toml::Table) -> Self {
        let mut values = Vec::new();
        flatten("", table, &mut values);
        values.sort_by(|a, b| a.0.cmp(&b.0));
        let canonical = serde_json::to_string(&serde_json::to_value(table).unwrap_or_default())
            .unwrap_or_default();
        let digest = crate::hash::sha256_hex(canonical.as_bytes());
        PluginConfig { values, digest }
    }

    /// The pairs passed to every plugin call.
    pub fn values(&self) -> &[(String, ConfigValue)] {
        &self.values
    }

    /// The pairs as the generated bindings take them.
    pub(super) fn wit(&self) -> &Vec<(String, ConfigValue)> {
        &self.values
    }

    /// sha256 of the canonical JSON of the table (keys sorted): recorded in models.lock.
    pub fn digest(&self) -> &str {
        &self.digest
    }
}

fn flatten(prefix: &str, table: &toml::Table, out: &mut Vec<(String, ConfigValue)>) {
    for (k, v) in table {
        let key = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        let value = match v {
            toml::Value::Table(t) => {
                flatten(&key, t, out);
                continue;
            }
            toml::Value::String(s) => ConfigValue::String(s.clone()),
            toml::Value::Integer(i) => ConfigValue::Integer(*i),
            toml::Value::Float(f) => ConfigValue::Float(*f),
            toml::Value::Boolean(b) => ConfigValue::Boolean(*b),
            toml::Value::Datetime(d) => ConfigValue::Datetime(d.to_string()),
            toml::Value::Array(items) => {
                let strings: Option<Vec<String>> = items
                    .iter()
                    .map(|i| i.as_str().map(str::to_owned))
                    .collect();
                match strings {
                    Some(s) => ConfigValue::Strings(s),
                    None => ConfigValue::Json(
                        serde_json::to_string(&serde_json::to_value(items).unwrap_or_default())
                            .unwrap_or_default(),
                    ),
                }
            }
        };
        out.push((key, value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flattens_to_sorted_dotted_keys() {
        let t: toml::Table = toml::from_str(
            "z = 1\nbase = \"https://m\"\nlist = [\"a\", \"b\"]\nmixed = [1, 2]\n[sub]\nflag = true\n[[rows]]\nf = 1.5\n",
        )
        .unwrap();
        let c = PluginConfig::from_table(&t);
        let keys: Vec<&str> = c.values().iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["base", "list", "mixed", "rows", "sub.flag", "z"]);
        assert!(matches!(&c.values()[1].1, ConfigValue::Strings(s) if s == &["a", "b"]));
        assert!(matches!(&c.values()[2].1, ConfigValue::Json(j) if j == "[1,2]"));
        assert!(matches!(&c.values()[3].1, ConfigValue::Json(j) if j == "[{\"f\":1.5}]"));
        assert!(matches!(c.values()[4].1, ConfigValue::Boolean(true)));
        // Same table written differently, same digest; another value, another digest.
        let same: toml::Table = toml::from_str(
            "base = \"https://m\"\nz = 1\nmixed = [1,2]\nlist = [\"a\",\"b\"]\nsub = { flag = true }\nrows = [{ f = 1.5 }]\n",
        )
        .unwrap();
        assert_eq!(PluginConfig::from_table(&same).digest(), c.digest());
        let other: toml::Table = toml::from_str("z = 2").unwrap();
        assert_ne!(PluginConfig::from_table(&other).digest(), c.digest());
    }
}
