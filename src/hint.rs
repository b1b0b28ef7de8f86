//! Hints: what the user can do about an error, kept apart from the error's message.
//!
//! A message says what went wrong; a hint says what to do next (a variable to set, a command
//! to run, a file to restore). Keeping hints as data on the error types, rather than sentences
//! glued into messages, lets the CLI print them on their own `hint:` line and put them in
//! `--json` output, and lets errors that wrap others hand on the inner error's hint.
//!
//! Each error family implements [`Hint`] next to its type; `cli::hints::find` walks an
//! error's chain of causes and asks every family it knows (it lives in `cli`, which imports
//! every module, so this trait stays a leaf every module can import). To add a family:
//! implement [`Hint`] for its type (wrappers with `#[error(transparent)]` variants must
//! delegate to the inner error, whose `source()` the chain skips), then add the type to the
//! list in `cli::hints`.

/// An error that may know what the user can do about it.
pub trait Hint {
    /// Advice beyond the message (a command, a setting, a file to restore), or `None` when the
    /// message already says all there is to do.
    fn hint(&self) -> Option<String>;
}
