//! Keeping secrets written into URLs out of what modelbake prints, and error chains (whose
//! causes carry URLs) on one safe line. A user may put credentials in an endpoint
//! (`http://user:pass@host`), and the query of a signed CDN or object-storage URL
//! (`X-Amz-Signature`, `X-Amz-Credential`, `Signature`, `Expires`, `sig`, `token`, …) is a
//! bearer credential too; reqwest and url both echo the URL in their errors, so every URL that
//! reaches a message, a log line or `--json` passes through here first. Host and path stay
//! (they say which server and object); userinfo becomes `***`, and so does every query value
//! but those of the few parameters known to hold no secret ([`KEPT_PARAMS`]).

/// Query parameters whose values are shown: the OCI distribution API's own (`digest`, `mount`,
/// `from`), the token service's (`service`, `scope`) and the Hub API's listing parameters
/// (`recursive`, `expand`, and `cursor`, an opaque page position, not a credential). Every
/// other value is a possible signature or token and is replaced by `***`.
pub const KEPT_PARAMS: [&str; 8] = [
    "digest",
    "mount",
    "from",
    "service",
    "scope",
    "recursive",
    "expand",
    "cursor",
];

/// `url` with any `user:password@` removed (`***@` stands in for it, so the reader sees that
/// credentials were there) and its query values replaced by `***` (keys stay). A string
/// without `scheme://` (a relative `Location`) has its query treated the same way; one with
/// neither comes back unchanged.
pub fn url_str(url: &str) -> String {
    if url.contains("://") {
        return text(url);
    }
    match url.split_once('?') {
        Some((path, query)) => {
            let mut out = String::with_capacity(url.len());
            out.push_str(path);
            out.push('?');
            out.push_str(&query_redacted(query));
            out
        }
        None => url.to_owned(),
    }
}

/// `text` with the userinfo of every `scheme://userinfo@host` inside it replaced by `***`, and
/// the query values of every such URL too (see [`url_str`]). Works on free text (error chains,
/// log lines), not only on a lone URL.
pub fn text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find("://") {
        let (before, after) = rest.split_at(pos + 3);
        out.push_str(before);
        // The authority ends at the first '/', '?', '#' or whitespace (or a quote in prose).
        let end = after
            .find(|c: char| matches!(c, '/' | '?' | '#') || ends_url(c))
            .unwrap_or(after.len());
        let authority = &after[..end];
        match authority.rfind('@') {
            Some(at) => {
                out.push_str("***");
                out.push_str(&authority[at..]);
            }
            None => out.push_str(authority),
        }
        // The path, up to the query.
        let after = &after[end..];
        let path_end = after
            .find(|c: char| matches!(c, '?' | '#') || ends_url(c))
            .unwrap_or(after.len());
        out.push_str(&after[..path_end]);
        let after = &after[path_end..];
        rest = match after.strip_prefix('?') {
            Some(query) => {
                let q_end = query
                    .find(|c: char| c == '#' || ends_url(c))
                    .unwrap_or(query.len());
                // Prose punctuation right after a URL (`(URL)`, `URL.`) is not part of it.
                let q = query[..q_end].trim_end_matches([')', ']', '.', ',', ';', ':']);
                out.push('?');
                out.push_str(&query_redacted(q));
                &query[q.len()..]
            }
            None => after,
        };
    }
    out.push_str(rest);
    out
}

/// True for a character that ends a URL written in prose.
fn ends_url(c: char) -> bool {
    matches!(c, '"' | '\'' | '`' | '<' | '>') || c.is_whitespace()
}

/// A query string with every value replaced by `***`, except those of [`KEPT_PARAMS`]; a
/// parameter without `=` (which could be a token by itself) becomes `***`.
fn query_redacted(query: &str) -> String {
    query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((key, _)) if KEPT_PARAMS.iter().any(|k| k.eq_ignore_ascii_case(key)) => {
                pair.to_owned()
            }
            Some((key, _)) => format!("{key}=***"),
            None if pair.is_empty() => String::new(),
            None => "***".to_owned(),
        })
        .collect::<Vec<_>>()
        .join("&")
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

    /// Hostile review (issue 23): signed query strings are bearer credentials.
    #[test]
    fn query_values_are_removed_from_urls_and_prose() {
        assert_eq!(
            url_str(
                "https://cdn.example/repos/ab/cd/sha?X-Amz-Algorithm=AWS4&X-Amz-Credential=AKIA%2Fx&X-Amz-Signature=f00d&Expires=1"
            ),
            "https://cdn.example/repos/ab/cd/sha?X-Amz-Algorithm=***&X-Amz-Credential=***&X-Amz-Signature=***&Expires=***"
        );
        assert_eq!(
            url_str("https://u:p@cas.example/xorb?token=abc&sig=def#frag"),
            "https://***@cas.example/xorb?token=***&sig=***#frag"
        );
        // The distribution API's own parameters stay readable.
        assert_eq!(
            url_str("http://r:5000/v2/m/blobs/uploads/?mount=sha256:ab&from=base/x"),
            "http://r:5000/v2/m/blobs/uploads/?mount=sha256:ab&from=base/x"
        );
        assert_eq!(
            url_str("http://r/upload/1?_state=signed&digest=sha256:ab"),
            "http://r/upload/1?_state=***&digest=sha256:ab"
        );
        // Relative locations, bare parameters.
        assert_eq!(
            url_str("/v2/m/blobs/uploads/u?_state=s3"),
            "/v2/m/blobs/uploads/u?_state=***"
        );
        assert_eq!(url_str("https://h/x?opaquetoken"), "https://h/x?***");
        assert_eq!(url_str("the source stream"), "the source stream");
        // In prose: the URL ends where the prose goes on.
        assert_eq!(
            text("error sending request for url (https://h/f?Signature=SECRET): refused"),
            "error sending request for url (https://h/f?Signature=***): refused"
        );
        assert_eq!(
            text(
                "HTTP 403 from http://h:1/lfs/x?sig=SECRET&se=2030. giving up; see 'https://y/z?a=SECRET'"
            ),
            "HTTP 403 from http://h:1/lfs/x?sig=***&se=***. giving up; see 'https://y/z?a=***'"
        );
        assert_eq!(text("did you mean http://h/x?"), "did you mean http://h/x?");
        for s in [
            "https://h/x?X-Amz-Signature=SECRET",
            "GET url=http://h/x?token=SECRET&Expires=1 done",
        ] {
            assert!(!text(s).contains("SECRET"), "{s}");
        }
    }
}
