//! File-selection patterns with exactly huggingface_hub's `allow_patterns`/`ignore_patterns`
//! semantics: Python `fnmatch` (`*` and `?` also match `/`, `[seq]`, `[!seq]`, no backslash
//! escapes, case-sensitive, whole-path match), and a pattern ending in `/` means "everything
//! under that folder".
//!
//! Why not `globset`: it treats `{a,b}`, `**` and `\` specially, so a pattern copied from a
//! Python `snapshot_download(allow_patterns=...)` call could select different files.

use std::fmt;

use regex::Regex;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// One compiled include/exclude pattern; keeps its source text for the lock and messages.
#[derive(Clone, Serialize, Deserialize, JsonSchema)]
#[serde(try_from = "String", into = "String")]
pub struct Pattern {
    source: String,
    #[schemars(skip)]
    #[serde(skip)]
    regex: Option<Regex>,
}

/// Why a pattern was refused: it could never match a repo path as written. Each message says
/// what to write instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    /// Nothing was written.
    #[error("empty pattern; expected a glob such as `*.safetensors` or `onnx/`")]
    Empty,
    /// A leading `/`; repo paths are relative.
    #[error(
        "pattern `{pattern}` starts with `/`, but repo paths are relative: write `{}`",
        .pattern.trim_start_matches('/')
    )]
    Absolute {
        /// The pattern as written.
        pattern: String,
    },
    /// A backslash: repo paths use `/`, and fnmatch has no escapes.
    #[error(
        "pattern `{}` contains a backslash; repo paths use `/` and patterns have no escapes (use `[*]` for a literal `*`)",
        .pattern.escape_debug()
    )]
    Backslash {
        /// The pattern as written.
        pattern: String,
    },
    /// A malformed `[...]` set.
    #[error("pattern `{pattern}`: {problem}")]
    Set {
        /// The pattern as written.
        pattern: String,
        /// What is wrong with the set.
        problem: SetError,
    },
    /// The translated regex was refused (too large for the regex engine).
    #[error("pattern `{pattern}`: {detail}")]
    Regex {
        /// The pattern as written.
        pattern: String,
        /// The regex engine's message.
        detail: String,
    },
}

/// What is wrong with a `[...]` character set (see [`PatternError::Set`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SetError {
    /// No closing `]`.
    #[error("unclosed `[`; close the character set with `]` or write `[[]` for a literal `[`")]
    Unclosed,
    /// A range such as `z-a`.
    #[error("range `{lo}-{hi}` in `[...]` is reversed")]
    ReversedRange {
        /// The range's first character.
        lo: char,
        /// The range's last character.
        hi: char,
    },
}

impl Pattern {
    /// Compiles `source`; rejects patterns that can never match a repo path (empty, absolute,
    /// backslashes, an unclosed `[`) with a message that says what to write instead.
    pub fn parse(source: &str) -> Result<Self, PatternError> {
        if source.is_empty() {
            return Err(PatternError::Empty);
        }
        if source.starts_with('/') {
            return Err(PatternError::Absolute {
                pattern: source.to_owned(),
            });
        }
        if source.contains('\\') {
            return Err(PatternError::Backslash {
                pattern: source.to_owned(),
            });
        }
        let effective = if source.ends_with('/') {
            format!("{source}*")
        } else {
            source.to_owned()
        };
        let regex = translate(&effective).map_err(|problem| PatternError::Set {
            pattern: source.to_owned(),
            problem,
        })?;
        let regex = Regex::new(&regex).map_err(|e| PatternError::Regex {
            pattern: source.to_owned(),
            detail: e.to_string(),
        })?;
        Ok(Pattern {
            source: source.to_owned(),
            regex: Some(regex),
        })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// True when `path` (a repo-relative path with `/` separators) matches the whole pattern.
    pub fn matches(&self, path: &str) -> bool {
        self.regex.as_ref().is_some_and(|r| r.is_match(path))
    }
}

/// Applies huggingface_hub's `filter_repo_objects` rule: a path is kept when it matches one of
/// `include` (or `include` is empty) and none of `exclude`.
pub fn is_selected(path: &str, include: &[Pattern], exclude: &[Pattern]) -> bool {
    (include.is_empty() || include.iter().any(|p| p.matches(path)))
        && !exclude.iter().any(|p| p.matches(path))
}

/// Translates a Python `fnmatch` pattern to an anchored regex (what `fnmatch.translate` does).
fn translate(pat: &str) -> Result<String, SetError> {
    let chars: Vec<char> = pat.chars().collect();
    let mut out = String::from("^(?s:");
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        i += 1;
        match c {
            '*' => {
                while i < chars.len() && chars[i] == '*' {
                    i += 1;
                }
                out.push_str(".*");
            }
            '?' => out.push('.'),
            '[' => {
                // Find the closing bracket as fnmatch does: a `!` and then a `]` right after
                // the opening bracket are part of the set.
                let mut j = i;
                if j < chars.len() && chars[j] == '!' {
                    j += 1;
                }
                if j < chars.len() && chars[j] == ']' {
                    j += 1;
                }
                while j < chars.len() && chars[j] != ']' {
                    j += 1;
                }
                if j >= chars.len() {
                    return Err(SetError::Unclosed);
                }
                out.push_str(&translate_set(&chars[i..j])?);
                i = j + 1;
            }
            c => out.push_str(&regex::escape(c.encode_utf8(&mut [0; 4]))),
        }
    }
    out.push_str(")$");
    Ok(out)
}

/// Translates the inside of a `[...]` set; `!` negates and `a-z` is a range.
fn translate_set(set: &[char]) -> Result<String, SetError> {
    let (negated, body) = match set.first() {
        Some('!') => (true, &set[1..]),
        _ => (false, set),
    };
    if body.is_empty() {
        // `[]` cannot occur (the `]` would be part of the set); `[!]` matches any character.
        return Ok(if negated {
            ".".into()
        } else {
            "[^\\s\\S]".into()
        });
    }
    let mut out = String::from(if negated { "[^" } else { "[" });
    let mut k = 0;
    while k < body.len() {
        let lo = body[k];
        if k + 2 < body.len() && body[k + 1] == '-' {
            let hi = body[k + 2];
            if lo > hi {
                return Err(SetError::ReversedRange { lo, hi });
            }
            push_set_char(&mut out, lo);
            out.push('-');
            push_set_char(&mut out, hi);
            k += 3;
        } else {
            push_set_char(&mut out, lo);
            k += 1;
        }
    }
    out.push(']');
    Ok(out)
}

/// Adds one literal character to a regex character class, escaping what the `regex` crate
/// treats specially inside classes.
fn push_set_char(out: &mut String, c: char) {
    if matches!(c, '\\' | '[' | ']' | '^' | '-' | '&' | '~') {
        out.push('\\');
    }
    out.push(c);
}

impl TryFrom<String> for Pattern {
    type Error = PatternError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Pattern::parse(&value)
    }
}

impl From<Pattern> for String {
    fn from(value: Pattern) -> Self {
        value.source
    }
}

impl fmt::Debug for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pattern({:?})", self.source)
    }
}

impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl Eq for Pattern {}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pat: &str, path: &str) -> bool {
        Pattern::parse(pat).unwrap().matches(path)
    }

    // Expected values are what Python 3.11 `fnmatch.fnmatch` (after huggingface_hub's
    // trailing-slash rule) returns for the same inputs.
    #[test]
    fn star_crosses_folders_like_fnmatch() {
        assert!(m("*.json", "config.json"));
        assert!(m("*.json", "sub/dir/config.json"));
        assert!(!m("*.json", "config.json.bak"));
        assert!(m("sub/*", "sub/a/b.txt"));
        assert!(m("**/*.bin", "a/b.bin"));
        assert!(!m("**/*.bin", "b.bin"));
    }

    #[test]
    fn trailing_slash_means_folder() {
        assert!(m("onnx/", "onnx/model.onnx"));
        assert!(m("onnx/", "onnx/sub/x"));
        assert!(!m("onnx/", "onnx"));
        assert!(!m("onnx/", "x/onnx/model.onnx"));
    }

    #[test]
    fn sets_and_question_mark() {
        assert!(m("model-0000[1-3].bin", "model-00002.bin"));
        assert!(!m("model-0000[1-3].bin", "model-00004.bin"));
        assert!(m("model-0000[!1-3].bin", "model-00004.bin"));
        assert!(m("?.txt", "a.txt"));
        assert!(m("?.txt", "/.txt"));
        assert!(!m("?.txt", "ab.txt"));
        assert!(m("[]]", "]"));
        assert!(m("[!]]", "a"));
    }

    #[test]
    fn braces_dots_and_specials_are_literal() {
        assert!(m("{a,b}.txt", "{a,b}.txt"));
        assert!(!m("{a,b}.txt", "a.txt"));
        assert!(m("a+b(c).json", "a+b(c).json"));
        assert!(!m("a.json", "aXjson"));
        assert!(m("[&~^-]", "&") && m("[&~^-]", "~") && m("[&~^-]", "^") && m("[&~^-]", "-"));
    }

    #[test]
    fn case_sensitive() {
        assert!(!m("*.JSON", "config.json"));
    }

    #[test]
    fn rejects_patterns_that_cannot_be_meant() {
        let e = |p: &str| Pattern::parse(p).unwrap_err().to_string();
        assert!(e("").contains("empty"));
        assert!(e("/config.json").contains("write `config.json`"));
        assert!(e("sub\\x").contains("backslash"));
        assert!(e("model[12.bin").contains("unclosed"));
        assert!(e("[z-a]").contains("reversed"));
    }

    #[test]
    fn selection_rule() {
        let inc = vec![
            Pattern::parse("*.json").unwrap(),
            Pattern::parse("*.safetensors").unwrap(),
        ];
        let exc = vec![Pattern::parse("onnx/").unwrap()];
        assert!(is_selected("config.json", &inc, &exc));
        assert!(!is_selected("onnx/config.json", &inc, &exc));
        assert!(!is_selected("pytorch_model.bin", &inc, &exc));
        assert!(is_selected("anything", &[], &[]));
        assert!(!is_selected("onnx/x", &[], &exc));
    }
}
