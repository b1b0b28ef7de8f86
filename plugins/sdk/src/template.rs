//! URL templates with `{placeholder}`s, and the percent-encoding they need.

/// One piece of a parsed [`Template`].
#[derive(Clone, Debug, PartialEq, Eq)]
enum Piece {
    Literal(String),
    Placeholder(String),
}

/// A string with `{name}` placeholders, parsed once and checked against the names a plugin
/// knows.
///
/// `{{` and `}}` are not escapes: braces only ever delimit placeholders, and a `{` without a
/// matching `}` (or a stray `}`) is an error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template {
    pieces: Vec<Piece>,
}

impl Template {
    /// Parses `text`, failing with a message naming the first unknown placeholder (one not in
    /// `allowed`) or unbalanced brace.
    pub fn parse(text: &str, allowed: &[&str]) -> Result<Template, String> {
        let mut pieces = Vec::new();
        let mut rest = text;
        while !rest.is_empty() {
            let open = rest.find('{');
            let close = rest.find('}');
            match (open, close) {
                (None, None) => {
                    pieces.push(Piece::Literal(rest.to_string()));
                    break;
                }
                (_, Some(c)) if open.is_none_or(|o| c < o) => {
                    return Err(format!("stray `}}` in template `{text}`"));
                }
                (Some(o), _) => {
                    if o > 0 {
                        pieces.push(Piece::Literal(rest[..o].to_string()));
                    }
                    let after = &rest[o + 1..];
                    let Some(end) = after.find('}') else {
                        return Err(format!("unclosed `{{` in template `{text}`"));
                    };
                    let name = &after[..end];
                    if !allowed.contains(&name) {
                        return Err(format!(
                            "unknown placeholder `{{{name}}}` in template `{text}` (known: {})",
                            allowed
                                .iter()
                                .map(|a| format!("{{{a}}}"))
                                .collect::<Vec<_>>()
                                .join(" ")
                        ));
                    }
                    pieces.push(Piece::Placeholder(name.to_string()));
                    rest = &after[end + 1..];
                }
                (None, Some(_)) => unreachable!("handled by the stray-brace arm"),
            }
        }
        Ok(Template { pieces })
    }

    /// Whether the template contains `{name}`.
    pub fn uses(&self, name: &str) -> bool {
        self.pieces
            .iter()
            .any(|p| matches!(p, Piece::Placeholder(n) if n == name))
    }

    /// The literal text before the first placeholder.
    pub fn literal_prefix(&self) -> &str {
        match self.pieces.first() {
            Some(Piece::Literal(s)) => s,
            _ => "",
        }
    }

    /// Whether the template starts with the placeholder `{name}`.
    pub fn starts_with_placeholder(&self, name: &str) -> bool {
        matches!(self.pieces.first(), Some(Piece::Placeholder(n)) if n == name)
    }

    /// Fills in every placeholder with `value(name)`; `None` if any value is missing.
    pub fn render(&self, mut value: impl FnMut(&str) -> Option<String>) -> Option<String> {
        let mut out = String::new();
        for piece in &self.pieces {
            match piece {
                Piece::Literal(s) => out.push_str(s),
                Piece::Placeholder(name) => out.push_str(&value(name)?),
            }
        }
        Some(out)
    }
}

/// Percent-encodes every byte of `text` except the URL-unreserved characters
/// `A-Z a-z 0-9 - . _ ~` (so `/` becomes `%2F`).
pub fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Percent-encodes each `/`-separated segment of `path` with [`percent_encode`], keeping the
/// `/`s between them.
pub fn percent_encode_path(path: &str) -> String {
    path.split('/')
        .map(percent_encode)
        .collect::<Vec<_>>()
        .join("/")
}

/// Whether `url` starts with `http://` or `https://` (scheme compared case-insensitively) and
/// has something after it.
pub fn is_http_url(url: &str) -> bool {
    let lower = url.get(..8).unwrap_or(url).to_ascii_lowercase();
    (lower.starts_with("http://") && url.len() > 7)
        || (lower.starts_with("https://") && url.len() > 8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_renders() {
        let t = Template::parse("{base}/x/{path}?a", &["base", "path"]).unwrap();
        assert!(t.uses("path"));
        assert!(!t.uses("sha256"));
        assert!(t.starts_with_placeholder("base"));
        let s = t.render(|n| Some(n.to_uppercase())).unwrap();
        assert_eq!(s, "BASE/x/PATH?a");
        assert_eq!(t.render(|n| (n == "base").then(String::new)), None);
        let t = Template::parse("https://a/{base}", &["base"]).unwrap();
        assert_eq!(t.literal_prefix(), "https://a/");
    }

    #[test]
    fn rejects_bad_templates() {
        assert!(
            Template::parse("{nope}", &["base"])
                .unwrap_err()
                .contains("`{nope}`")
        );
        assert!(
            Template::parse("{base", &["base"])
                .unwrap_err()
                .contains("unclosed")
        );
        assert!(
            Template::parse("a}b", &["base"])
                .unwrap_err()
                .contains("stray")
        );
        assert!(Template::parse("", &[]).is_ok());
    }

    #[test]
    fn encodes() {
        assert_eq!(percent_encode("refs/pr/1"), "refs%2Fpr%2F1");
        assert_eq!(percent_encode("a b~ü"), "a%20b~%C3%BC");
        assert_eq!(
            percent_encode_path("dir one/f#1.bin"),
            "dir%20one/f%231.bin"
        );
    }

    #[test]
    fn http_urls() {
        assert!(is_http_url("https://x"));
        assert!(is_http_url("HTTP://x"));
        assert!(!is_http_url("https://"));
        assert!(!is_http_url("ftp://x"));
        assert!(!is_http_url("file:///etc/passwd"));
    }
}
