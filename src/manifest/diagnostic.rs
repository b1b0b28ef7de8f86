//! Errors that point into a TOML file: `path:line:column: message` plus the offending line
//! with a caret, like a compiler, so people fix manifests without guessing.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// An error located in a manifest file. Line and column are 1-based; both are absent only when
/// the parser could not tell where the problem was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceError {
    /// The file that holds the mistake.
    pub path: PathBuf,
    /// 1-based line and column of the mistake, when known.
    pub location: Option<(usize, usize)>,
    /// What is wrong and what was expected.
    pub message: String,
    /// The offending source line and a caret line under it, when known.
    pub snippet: Option<String>,
}

impl SourceError {
    /// An error at byte range `span` of `text` (the contents of `path`).
    pub fn at(
        path: &Path,
        text: &str,
        span: Option<Range<usize>>,
        message: impl Into<String>,
    ) -> Self {
        let message = message.into();
        let Some(span) = span else {
            return SourceError {
                path: path.to_owned(),
                location: None,
                message,
                snippet: None,
            };
        };
        let start = span.start.min(text.len());
        let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
        let line_end = text[start..].find('\n').map_or(text.len(), |i| start + i);
        let line_no = text[..start].matches('\n').count() + 1;
        let col = text[line_start..start].chars().count() + 1;
        let line = text[line_start..line_end].trim_end_matches('\r');
        let width = text[start..span.end.clamp(start, line_end)]
            .chars()
            .count()
            .max(1);
        let gutter = line_no.to_string().len();
        let snippet = format!(
            "{:gutter$} |\n{line_no} | {line}\n{:gutter$} | {}{}",
            "",
            "",
            " ".repeat(col - 1),
            "^".repeat(width)
        );
        SourceError {
            path: path.to_owned(),
            location: Some((line_no, col)),
            message,
            snippet: Some(snippet),
        }
    }

    /// Converts a `toml` parse/deserialize error into a located error.
    pub fn from_toml(path: &Path, text: &str, err: &toml::de::Error) -> Self {
        SourceError::at(path, text, err.span(), err.message().trim_end().to_owned())
    }
}

impl fmt::Display for SourceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = crate::ui::display_path(&self.path);
        match self.location {
            Some((line, col)) => write!(f, "{path}:{line}:{col}: {}", self.message)?,
            None => write!(f, "{path}: {}", self.message)?,
        }
        if let Some(snippet) = &self.snippet {
            write!(f, "\n{snippet}")?;
        }
        Ok(())
    }
}

impl std::error::Error for SourceError {}

/// What to do about a mistake in a manifest or a lock. The two are told apart by the file's
/// extension (locks are `*.lock`); files that could not be read get no hint, the OS error says
/// it all.
impl crate::hint::Hint for SourceError {
    fn hint(&self) -> Option<String> {
        if self.message.starts_with("cannot read") {
            return None;
        }
        if self.path.extension().is_some_and(|e| e == "lock") {
            return Some(format!(
                "{} is written by `modelbake lock`, not by hand: undo edits to it (`git checkout -- {0}`), \
                 or run `modelbake lock` to write it afresh; after a merge conflict in it, keep \
                 either side and run `modelbake lock`",
                crate::ui::display_path(&self.path)
            ));
        }
        Some(
            "`modelbake lock --help` describes the manifest's tables; editors check it as you type \
             with the JSON schema manifests/models.toml.schema.json of the modelbake repository"
                .to_owned(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locates_line_and_column() {
        let text = "a = 1\nid = \"bad id\"\n";
        let start = text.find("\"bad").unwrap();
        let e = SourceError::at(Path::new("m.toml"), text, Some(start..start + 8), "nope");
        assert_eq!(e.location, Some((2, 6)));
        let shown = e.to_string();
        assert!(shown.starts_with("m.toml:2:6: nope"), "{shown}");
        assert!(
            shown.contains("2 | id = \"bad id\"\n  |      ^^^^^^^^"),
            "{shown}"
        );
    }
}
