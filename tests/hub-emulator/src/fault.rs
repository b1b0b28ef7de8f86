//! Fault injection: rules that make chosen requests fail in chosen ways, so retry, resume and
//! verification code can be tested against the misbehaviour real networks and servers show.

use std::time::Duration;

use crate::Host;

/// What goes wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FaultAction {
    /// Answer with this status (plus optional `X-Error-Code`, `Retry-After`, `RateLimit`).
    Status {
        /// HTTP status.
        status: u16,
        /// `X-Error-Code` value.
        error_code: Option<String>,
        /// `Retry-After` value.
        retry_after: Option<String>,
        /// `RateLimit` value.
        ratelimit: Option<String>,
    },
    /// Wait, then answer normally.
    Delay(Duration),
    /// Close the connection without answering.
    Drop,
    /// Answer normally but cut the body after this many bytes and close the connection.
    Truncate(u64),
    /// Answer normally but with every body byte changed (same length).
    WrongBytes,
    /// Answer normally but with the body byte at this offset changed.
    FlipByteAt(u64),
    /// Answer with this status and a body that never ends, announcing `content_length` (a
    /// hostile server announcing 10^15 bytes) or nothing (chunked).
    EndlessBody {
        /// HTTP status.
        status: u16,
        /// The `Content-Length` to announce.
        content_length: Option<u64>,
    },
    /// Answer as if no `Range` had been asked for (200, from byte 0), as a CDN that ignores
    /// ranges does; with `Some(n)`, the answer also ends cleanly after `n` bytes.
    IgnoreRange(Option<u64>),
    /// Answer normally, with this header set (replacing the normal one): a forged `Link`.
    Header(String, String),
    /// Answer with an empty page and a `Link` to the next cursor, so a listing never ends.
    EndlessPages,
    /// Answer with a 302 to this location.
    Redirect(String),
    /// Answer with this status and `{"error": message}` as the body only (the message may
    /// hold characters no header can carry).
    ErrorBody(u16, String),
}

/// A rule: which requests, how many times, what happens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    /// Only requests to this listener (`None`: both).
    pub host: Option<Host>,
    /// Only this method (`None`: any).
    pub method: Option<String>,
    /// Only requests whose raw path contains this text.
    pub path_contains: String,
    /// How many matching requests it applies to (`None`: all of them).
    pub times: Option<u32>,
    /// The misbehaviour.
    pub action: FaultAction,
}

impl Fault {
    /// A rule for requests whose raw (still percent-encoded) path contains `path_contains`.
    /// Defaults to a forever-repeating HTTP 500.
    pub fn on(path_contains: &str) -> Self {
        Fault {
            host: None,
            method: None,
            path_contains: path_contains.to_owned(),
            times: None,
            action: FaultAction::Status {
                status: 500,
                error_code: None,
                retry_after: None,
                ratelimit: None,
            },
        }
    }

    /// Answer with `status`.
    pub fn status(mut self, status: u16) -> Self {
        self.action = FaultAction::Status {
            status,
            error_code: None,
            retry_after: None,
            ratelimit: None,
        };
        self
    }

    /// Add `Retry-After` to a status fault.
    pub fn retry_after(mut self, value: &str) -> Self {
        if let FaultAction::Status { retry_after, .. } = &mut self.action {
            *retry_after = Some(value.to_owned());
        }
        self
    }

    /// Add `RateLimit` to a status fault.
    pub fn ratelimit(mut self, value: &str) -> Self {
        if let FaultAction::Status { ratelimit, .. } = &mut self.action {
            *ratelimit = Some(value.to_owned());
        }
        self
    }

    /// Add `X-Error-Code` to a status fault.
    pub fn error_code(mut self, value: &str) -> Self {
        if let FaultAction::Status { error_code, .. } = &mut self.action {
            *error_code = Some(value.to_owned());
        }
        self
    }

    /// Any other misbehaviour.
    pub fn action(mut self, action: FaultAction) -> Self {
        self.action = action;
        self
    }

    /// Apply to the first `n` matching requests only.
    pub fn times(mut self, n: u32) -> Self {
        self.times = Some(n);
        self
    }

    /// Only on this listener.
    pub fn host(mut self, host: Host) -> Self {
        self.host = Some(host);
        self
    }

    /// Only for this method.
    pub fn method(mut self, method: &str) -> Self {
        self.method = Some(method.to_owned());
        self
    }

    pub(crate) fn matches(&self, host: Host, method: &str, path: &str) -> bool {
        self.times != Some(0)
            && self.host.is_none_or(|h| h == host)
            && self
                .method
                .as_deref()
                .is_none_or(|m| m.eq_ignore_ascii_case(method))
            && path.contains(&self.path_contains)
    }
}
