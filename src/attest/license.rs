//! The licence a repo declares: the `license:` key of its model card's YAML front matter
//! (`README.md`, between the leading `---` lines), as the Hub reads it. Only the top-level key
//! is read, as a scalar or a list of scalars; no YAML library is needed for that, and nothing
//! else of the card is interpreted. Hub licence ids that are SPDX identifiers are mapped to the
//! SPDX spelling ([`spdx_id`]), so SBOM readers can match them.

/// The most of a model card read for its front matter.
pub const CARD_LIMIT: usize = 256 << 10;

/// The licence ids the card's front matter declares (empty when it declares none).
pub fn from_card(card: &str) -> Vec<String> {
    let mut lines = card.lines();
    if lines.next().map(str::trim_end) != Some("---") {
        return Vec::new();
    }
    let mut found = Vec::new();
    let mut in_list = false;
    for line in lines {
        if line.trim_end() == "---" {
            break;
        }
        if in_list {
            match line.trim_start().strip_prefix("- ") {
                Some(item) if line.starts_with([' ', '-']) => {
                    push(&mut found, item);
                    continue;
                }
                _ => in_list = false,
            }
        }
        if let Some(value) = line.strip_prefix("license:") {
            let value = value.trim();
            if value.is_empty() {
                in_list = true;
            } else if let Some(inner) = value.strip_prefix('[').and_then(|v| v.strip_suffix(']')) {
                inner.split(',').for_each(|v| push(&mut found, v));
            } else {
                push(&mut found, value);
            }
        }
    }
    found
}

/// Adds one scalar, unquoted and without a trailing comment, unless empty.
fn push(found: &mut Vec<String>, raw: &str) {
    let v = raw.split(" #").next().unwrap_or_default().trim();
    let v = v.trim_matches(|c| c == '"' || c == '\'').trim();
    if !v.is_empty() {
        found.push(v.to_owned());
    }
}

/// The SPDX identifier of a Hub licence id, when it is one (the Hub writes them lowercase).
pub fn spdx_id(hub_id: &str) -> Option<&'static str> {
    const IDS: &[&str] = &[
        "AFL-3.0",
        "AGPL-3.0",
        "Apache-2.0",
        "Artistic-2.0",
        "BSD-2-Clause",
        "BSD-3-Clause",
        "BSD-3-Clause-Clear",
        "BSL-1.0",
        "CC-BY-2.0",
        "CC-BY-2.5",
        "CC-BY-3.0",
        "CC-BY-4.0",
        "CC-BY-NC-2.0",
        "CC-BY-NC-3.0",
        "CC-BY-NC-4.0",
        "CC-BY-NC-ND-3.0",
        "CC-BY-NC-ND-4.0",
        "CC-BY-NC-SA-2.0",
        "CC-BY-NC-SA-3.0",
        "CC-BY-NC-SA-4.0",
        "CC-BY-ND-4.0",
        "CC-BY-SA-3.0",
        "CC-BY-SA-4.0",
        "CC0-1.0",
        "CDLA-Permissive-1.0",
        "CDLA-Permissive-2.0",
        "CDLA-Sharing-1.0",
        "ECL-2.0",
        "EPL-1.0",
        "EPL-2.0",
        "EUPL-1.1",
        "EUPL-1.2",
        "GPL-2.0",
        "GPL-3.0",
        "ISC",
        "LGPL-2.1",
        "LGPL-3.0",
        "LPPL-1.3c",
        "MIT",
        "MPL-2.0",
        "MS-PL",
        "NCSA",
        "OFL-1.1",
        "OSL-3.0",
        "PostgreSQL",
        "Unlicense",
        "WTFPL",
        "Zlib",
    ];
    IDS.iter()
        .copied()
        .find(|id| id.eq_ignore_ascii_case(hub_id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_license_key_of_the_front_matter_is_read_in_each_yaml_form() {
        let card =
            "---\nlanguage: en\nlicense: apache-2.0\ntags:\n- x\n---\n# Model\nlicense: mit\n";
        assert_eq!(from_card(card), vec!["apache-2.0"]);
        let list = "---\nlicense:\n  - mit\n  - 'cc-by-4.0'\ndatasets: []\n---\n";
        assert_eq!(from_card(list), vec!["mit", "cc-by-4.0"]);
        let flow = "---\nlicense: [mit, \"gpl-3.0\"]  \n---\n";
        assert_eq!(from_card(flow), vec!["mit", "gpl-3.0"]);
        let commented = "---\nlicense: other # see LICENSE\n---\n";
        assert_eq!(from_card(commented), vec!["other"]);
        // No front matter, or the key only in the body.
        assert!(from_card("# Model\nlicense: mit\n").is_empty());
        assert!(from_card("---\nlanguage: en\n---\nlicense: mit\n").is_empty());
    }

    #[test]
    fn hub_ids_map_to_spdx_spelling_when_they_are_spdx_ids() {
        assert_eq!(spdx_id("apache-2.0"), Some("Apache-2.0"));
        assert_eq!(spdx_id("cc-by-nc-sa-4.0"), Some("CC-BY-NC-SA-4.0"));
        assert_eq!(spdx_id("llama3"), None);
        assert_eq!(spdx_id("other"), None);
    }
}
