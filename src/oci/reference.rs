//! Image references as Docker and OCI tools write them: `[registry/]repository[:tag][@digest]`,
//! with Docker Hub's defaults (`docker.io`, `library/`, `latest`).

use std::fmt;

/// An image reference that cannot be parsed, with what is wrong in it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "image reference `{reference}`: {why}; expected [registry/]repository[:tag][@sha256:digest]"
)]
pub struct ReferenceError {
    /// The reference as given.
    pub reference: String,
    /// What is wrong.
    pub why: &'static str,
}

/// A parsed image reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    /// `host[:port]` as written (`docker.io` for Docker Hub).
    pub registry: String,
    /// `org/name`.
    pub repository: String,
    /// The tag, if any.
    pub tag: Option<String>,
    /// `sha256:<hex>`, if pinned.
    pub digest: Option<String>,
}

impl ImageRef {
    /// Parses a reference; a name without a registry is on Docker Hub.
    pub fn parse(s: &str) -> Result<Self, ReferenceError> {
        let s = s.trim();
        let bad = |why: &'static str| ReferenceError {
            reference: s.to_owned(),
            why,
        };
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) => {
                let hex = d
                    .strip_prefix("sha256:")
                    .ok_or_else(|| bad("only sha256 digests are supported"))?;
                if !crate::hash::is_lower_hex(hex, 64) {
                    return Err(bad("the digest is not 64 lowercase hex characters"));
                }
                (r, Some(d.to_owned()))
            }
            None => (s, None),
        };
        let (registry, path) = match rest.split_once('/') {
            Some((first, path))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first.to_owned(), path)
            }
            _ => ("docker.io".to_owned(), rest),
        };
        let (repository, tag) = match path.rsplit_once(':') {
            Some((repo, tag)) if !tag.contains('/') => (repo.to_owned(), Some(tag.to_owned())),
            _ => (path.to_owned(), None),
        };
        if repository.is_empty()
            || !repository
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-/".contains(&b))
        {
            return Err(bad(
                "the repository must be lowercase letters, digits, `.`, `_`, `-` and `/`",
            ));
        }
        if let Some(t) = &tag
            && (t.is_empty()
                || t.len() > 128
                || !t
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)))
        {
            return Err(bad(
                "the tag must be 1-128 letters, digits, `.`, `_` or `-`",
            ));
        }
        let repository = if registry == "docker.io" && !repository.contains('/') {
            format!("library/{repository}")
        } else {
            repository
        };
        let tag = if tag.is_none() && digest.is_none() {
            Some("latest".to_owned())
        } else {
            tag
        };
        Ok(ImageRef {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// The digest if pinned, else the tag: what to ask the manifest endpoint for.
    pub fn reference(&self) -> &str {
        self.digest
            .as_deref()
            .or(self.tag.as_deref())
            .unwrap_or("latest")
    }
}

/// The host a registry's API is served on: `registry-1.docker.io` for `docker.io`, else the
/// registry itself.
pub fn api_host_of(registry: &str) -> &str {
    if registry == "docker.io" {
        "registry-1.docker.io"
    } else {
        registry
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_like_docker() {
        let r = ImageRef::parse("pytorch/pytorch:2.7.0-cuda12.6-cudnn9-runtime").unwrap();
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str(), r.tag.as_deref()),
            (
                "docker.io",
                "pytorch/pytorch",
                Some("2.7.0-cuda12.6-cudnn9-runtime")
            )
        );
        assert_eq!(api_host_of(&r.registry), "registry-1.docker.io");
        let r = ImageRef::parse("busybox").unwrap();
        assert_eq!(
            (r.repository.as_str(), r.tag.as_deref()),
            ("library/busybox", Some("latest"))
        );
        let r = ImageRef::parse("127.0.0.1:5000/models/app").unwrap();
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str(), r.tag.as_deref()),
            ("127.0.0.1:5000", "models/app", Some("latest"))
        );
        let d = format!("sha256:{}", "a".repeat(64));
        let r = ImageRef::parse(&format!("ghcr.io/o/i@{d}")).unwrap();
        assert_eq!((r.tag, r.digest.as_deref()), (None, Some(d.as_str())));
        assert!(ImageRef::parse("Upper/Case").is_err());
        assert!(ImageRef::parse("x@sha256:zz").is_err());
    }
}
