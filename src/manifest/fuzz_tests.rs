//! Fuzzing `models.toml` (issue #14): arbitrary and mutated text never panics the parser and
//! every error it gives points inside the file; a generated manifest parses to exactly the
//! repos written; include/exclude patterns compile or are refused, never panic, and a literal
//! pattern matches exactly its own path. Run length and seed: see `crate::test_support::fuzz`.

use std::path::Path;

use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

use super::*;
use crate::test_support::fuzz::{config, hex, mutated_text};

/// A manifest using every table and key, so mutations reach every validation.
const RICH: &str = r#"# models for the app
[defaults]
revision = "main"
include = ["*.json", "onnx/"]
exclude = ["*.bin", "[!a]?.txt"]
policy = ["keep"]

[[model]]
id = "acme/tiny"
revision = "v1.0"
include = ["*.safetensors", "tokenizer*"]

[[dataset]]
id = "acme/data"
revision = "0123456789abcdef0123456789abcdef01234567"
policy = []

[[space]]
id = "demo"

[bake]
hf_home = "/models"
owner = "1000:1000"
compression = "zstd"
base = "oci:base:latest"
platform = "linux/arm64"
max_layer_size = 1000
offline_env = false

[plugins.keep]
path = "plugins/keep.wasm"
sha256 = "665939e0da5aa211ec9832ffe5dcba176d1bbac8a95c899c270ec29082853c51"
config = { n = 1, name = "x" }

[plugins.mirror]
url = "https://mirror.example.invalid/m.wasm"

[mirror]
use = ["mirror"]
credentials = { corp = "https://mirror.example.invalid" }
"#;

/// Tokens of the manifest format, inserted by the mutator.
const DICT: &[&str] = &[
    "\n[[model]]\n",
    "\n[[dataset]]\n",
    "\n[defaults]\n",
    "\n[bake]\n",
    "\n[plugins.x]\n",
    "\n[mirror]\n",
    "id = \"a/b\"",
    "revision = \"refs/pr/1\"",
    "include = [",
    "exclude = []",
    "policy = [\"nope\"]",
    "hf_home = \"/\"",
    "owner = \"4294967296:0\"",
    "compression = \"lz4\"",
    "max_layer_size = -1",
    "url = \"http://127.0.0.1/x\"",
    "path = \"\"",
    "sha256 = \"",
    "use = [\"mirror\"]",
    "\"[\"",
    "'''",
    "\"\"\"",
    "\\u0000",
    "\t",
];

fn parse(text: &str) -> Result<Manifest, SourceError> {
    Manifest::from_models_toml(Path::new("models.toml"), text)
}

/// An error renders, and its line and column (if any) are inside the text.
fn check_error(text: &str, e: &SourceError) -> Result<(), TestCaseError> {
    let _ = e.to_string();
    if let Some((line, col)) = e.location {
        let lines = text.split('\n').count();
        prop_assert!(
            (1..=lines).contains(&line) && col >= 1,
            "location {}:{} outside a {}-line text",
            line,
            col,
            lines
        );
        let on_line = text.split('\n').nth(line - 1).unwrap_or("");
        prop_assert!(
            col <= on_line.chars().count() + 1,
            "column {} past the line end",
            col
        );
    }
    Ok(())
}

fn parse_any(text: &str) -> Result<(), TestCaseError> {
    match parse(text) {
        Ok(_) => Ok(()),
        Err(e) => check_error(text, &e),
    }
}

/// One generated repo entry: kind, id, revision (none: the default) and include patterns.
#[derive(Debug, Clone)]
struct Entry {
    kind: RepoKind,
    id: String,
    revision: Option<String>,
    include: Option<Vec<String>>,
}

fn entry() -> impl Strategy<Value = Entry> {
    (
        prop::sample::select(vec![RepoKind::Model, RepoKind::Dataset, RepoKind::Space]),
        "[a-z0-9]{1,8}(/[a-z0-9_]{1,8})?",
        prop::option::of(prop_oneof![
            "[a-z][a-z0-9._-]{0,8}[a-z0-9]",
            "refs/pr/[0-9]{1,3}",
            hex(40)
        ]),
        prop::option::of(prop::collection::vec(
            "[a-z0-9_.*?-][a-z0-9_.*?/-]{0,8}",
            0..3,
        )),
    )
        .prop_map(|(kind, id, revision, include)| Entry {
            kind,
            id,
            revision,
            include,
        })
}

/// The `models.toml` text of `entries`, and the 1-based line of each entry's `id`.
fn render(entries: &[Entry]) -> (String, Vec<usize>) {
    let mut out = String::new();
    let mut id_lines = Vec::new();
    for e in entries {
        out.push_str(&format!("[[{}]]\n", e.kind));
        id_lines.push(out.matches('\n').count() + 1);
        out.push_str(&format!("id = \"{}\"\n", e.id));
        if let Some(r) = &e.revision {
            out.push_str(&format!("revision = '{r}'\n"));
        }
        if let Some(inc) = &e.include {
            let quoted: Vec<String> = inc.iter().map(|p| format!("\"{p}\"")).collect();
            out.push_str(&format!("include = [{}]\n", quoted.join(", ")));
        }
        out.push('\n');
    }
    (out, id_lines)
}

proptest! {
    #![proptest_config(config(1))]

    /// Any text: no panic, and errors point inside the file.
    #[test]
    fn arbitrary_text_never_panics(text in ".{0,300}") {
        parse_any(&text)?;
    }

    /// Near-valid manifests: no panic, and errors point inside the file.
    #[test]
    fn mutated_manifests_never_panic(text in mutated_text(RICH, DICT)) {
        parse_any(&text)?;
    }

    /// Any pattern compiles or is refused with a message; a compiled one matches any path
    /// without panicking.
    #[test]
    fn patterns_never_panic(source in ".{0,40}", path in ".{0,40}") {
        if let Ok(p) = Pattern::parse(&source) {
            let _ = p.matches(&path);
            prop_assert_eq!(p.as_str(), source.as_str());
        }
    }
}

proptest! {
    // Each case compiles several patterns to regexes: half the cases.
    #![proptest_config(config(2))]

    /// A generated manifest parses to exactly the repos written (defaults applied), models
    /// first, then datasets, then spaces, each in file order; a repeated repo is refused at
    /// its second entry.
    #[test]
    fn generated_manifests_parse_to_what_was_written(
        entries in prop::collection::vec(entry(), 0..6)
    ) {
        let (text, id_lines) = render(&entries);
        let rank = |k: RepoKind| [RepoKind::Model, RepoKind::Dataset, RepoKind::Space]
            .iter()
            .position(|x| *x == k);
        let mut order: Vec<usize> = (0..entries.len()).collect();
        order.sort_by_key(|&i| rank(entries[i].kind));
        let mut seen = std::collections::HashSet::new();
        let duplicate = order
            .iter()
            .copied()
            .find(|&i| !seen.insert((entries[i].kind, entries[i].id.clone())));
        let parsed = parse(&text);
        if let Some(i) = duplicate {
            let e = parsed.err().ok_or_else(|| TestCaseError::fail("duplicate accepted"))?;
            prop_assert!(e.message.contains("listed twice"), "{}", e);
            prop_assert_eq!(e.location, Some((id_lines[i], 6)));
            return Ok(());
        }
        let m = parsed.map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
        prop_assert_eq!(m.repos.len(), entries.len());
        for (r, &i) in m.repos.iter().zip(&order) {
            let e = &entries[i];
            prop_assert_eq!(r.kind, e.kind);
            prop_assert_eq!(r.id.as_str(), e.id.as_str());
            prop_assert_eq!(r.revision.as_str(), e.revision.as_deref().unwrap_or("main"));
            let include: Vec<&str> = r.include.iter().map(Pattern::as_str).collect();
            let want: Vec<&str> = e.include.iter().flatten().map(String::as_str).collect();
            prop_assert_eq!(include, want);
        }
    }

    /// A pattern without glob characters selects exactly its own path (or, ending in `/`,
    /// everything under that folder).
    #[test]
    fn literal_patterns_match_themselves(path in r"[^*?\[/\\\n][^*?\[\\\n]{0,20}", other in r"[^\n]{1,5}") {
        let p = Pattern::parse(&path).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let folder = path.ends_with('/');
        let probe = if folder { format!("{path}{other}") } else { path.clone() };
        prop_assert!(p.matches(&probe), "{} does not match {}", path, probe);
        prop_assert_eq!(p.matches(&format!("{path}{other}")), folder);
    }
}
