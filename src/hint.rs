//! Hints: what the user can do about an error, kept apart from the error's message.
//!
//! A message says what went wrong; a hint says what to do next (a variable to set, a command
//! to run, a file to restore). Keeping hints as data on the error types, rather than sentences
//! glued into messages, lets the CLI print them on their own `hint:` line and put them in
//! `--json` output, and lets errors that wrap others hand on the inner error's hint.
//!
//! Each error family implements [`Hint`] next to its type; [`find`] walks an error's chain of
//! causes and asks every family it knows. To add a family: implement [`Hint`] for its type
//! (wrappers with `#[error(transparent)]` variants must delegate to the inner error, whose
//! `source()` the chain skips), then add the type to the list in [`of_cause`].

use std::error::Error;

/// An error that may know what the user can do about it.
pub trait Hint {
    /// Advice beyond the message (a command, a setting, a file to restore), or `None` when the
    /// message already says all there is to do.
    fn hint(&self) -> Option<String>;
}

/// The hint of the first error in `error`'s chain (itself, then each `source()`) that has one.
pub fn find(error: &(dyn Error + 'static)) -> Option<String> {
    std::iter::successors(Some(error), |&e| e.source()).find_map(of_cause)
}

/// The hint of `cause` itself, when it is of a family that gives hints.
fn of_cause(cause: &(dyn Error + 'static)) -> Option<String> {
    /// Tries each type in turn; the first that `cause` is decides.
    macro_rules! families {
        ($($family:ty),* $(,)?) => {
            $(
                if let Some(e) = cause.downcast_ref::<$family>() {
                    return Hint::hint(e);
                }
            )*
        };
    }
    families!(crate::oci::OciError, crate::oci::registry::RegistryError);
    None
}

/// The OCI errors keep their hints in an inherent method (their module is maintained apart).
impl Hint for crate::oci::OciError {
    fn hint(&self) -> Option<String> {
        crate::oci::OciError::hint(self).map(str::to_owned)
    }
}

/// The registry errors keep their hints in an inherent method (their module is maintained
/// apart).
impl Hint for crate::oci::registry::RegistryError {
    fn hint(&self) -> Option<String> {
        crate::oci::registry::RegistryError::hint(self).map(str::to_owned)
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn oci_no_tag() -> crate::oci::OciError {
        crate::oci::OciError::NoTag {
            dir: PathBuf::from("out/image"),
            tag: "v2".into(),
            tags: "v1".into(),
        }
    }

    #[test]
    fn the_cli_finds_a_hint_under_a_context() {
        let oci = anyhow::Error::new(oci_no_tag()).context("reading the base image");
        let outer = oci.chain().next().unwrap();
        assert_eq!(of_cause(outer), None);
        assert_eq!(
            oci.chain().find_map(find).as_deref(),
            Some("name one of the listed tags: oci:DIR:TAG")
        );
        let plain = anyhow::anyhow!("something broke").context("while testing");
        assert_eq!(plain.chain().find_map(find), None);
    }
}
