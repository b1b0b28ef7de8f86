//! Keeping secrets written into URLs out of what modelbake prints, and error chains (whose
//! causes carry URLs) on one safe line. A user may put credentials in
//! an endpoint (`http://user:pass@host`); reqwest and url both echo the URL in their errors, so
//! every URL that reaches a message, a log line or `--json` passes through here first.

/// `url` with any `user:password@` removed (`***@` stands in for it, so the reader sees that
/// credentials were there). Strings that are not URLs come back unchanged.
pub fn url_str(url: &str) -> String {
    text(url)
}

/// `text` with the userinfo of every `scheme://userinfo@host` inside it replaced by `***`.
/// Works on free text (error chains, log lines), not only on a lone URL.
pub fn text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find("://") {
        let (before, after) = rest.split_at(pos + 3);
        out.push_str(before);
        // The authority ends at the first '/', '?', '#' or whitespace (or a quote in prose).
        let end = after
            .find(|c: char| {
                matches!(c, '/' | '?' | '#' | '"' | '\'' | '`' | '>') || c.is_whitespace()
            })
            .unwrap_or(after.len());
        let authority = &after[..end];
        match authority.rfind('@') {
            Some(at) => {
                out.push_str("***");
                out.push_str(&authority[at..]);
            }
            None => out.push_str(authority),
        }
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

/// An error and its causes on one line (reqwest hides the useful part in `source()`), with
/// credentials removed from any URL in it. A certificate problem in a TLS handshake is said in
/// words instead (`tls_error::explain`: which host, what is wrong, where a CA goes).
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    if let Some(explained) = crate::tls_error::explain(e) {
        return text(&format!("{e}: {explained}"));
    }
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cur = s.source();
    }
    text(&out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn userinfo_is_removed_from_urls_and_prose() {
        assert_eq!(
            url_str("http://user:pa55@127.0.0.1:8/x"),
            "http://***@127.0.0.1:8/x"
        );
        assert_eq!(url_str("https://tok@h"), "https://***@h");
        assert_eq!(url_str("https://h/a@b"), "https://h/a@b");
        assert_eq!(
            text("error sending request for url (http://u:p@h:1/api): refused; see https://x@y/z"),
            "error sending request for url (http://***@h:1/api): refused; see https://***@y/z"
        );
        assert_eq!(text("no url here: a@b"), "no url here: a@b");
        assert_eq!(text("http://a:b@c"), "http://***@c");
    }
}
