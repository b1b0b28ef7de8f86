//! Pieces of HTTP header grammar (RFC 9110) shared by the header parsers: `Link` pagination
//! from the Hub and `WWW-Authenticate` challenges from registries.

/// Reads a quoted-string whose opening `"` is already consumed: its content (`\x` stands for
/// `x`) and the text after its closing `"` (empty when the quote is never closed).
pub fn unquote(s: &str) -> (String, &str) {
    let mut out = String::new();
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return (out, &s[i + 1..]),
            '\\' => out.extend(chars.next().map(|(_, c)| c)),
            c => out.push(c),
        }
    }
    (out, "")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_strings() {
        assert_eq!(unquote(r#"a b", rest"#), ("a b".to_owned(), ", rest"));
        assert_eq!(unquote(r#"a\"b\\c"x"#), ("a\"b\\c".to_owned(), "x"));
        assert_eq!(unquote(r#"never closed\"#), ("never closed".to_owned(), ""));
    }
}
