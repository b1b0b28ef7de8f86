//! Content digests as OCI writes them: `sha256:` and 64 lowercase hex digits, nothing else.
//! Every digest that comes from outside (an OCI layout's `index.json` and manifests, a
//! registry's answers, the layer cache's records) is parsed into a [`Digest`] before it is used,
//! so a hostile `sha256:../../x` is refused with a message and can never become a path.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A validated `sha256:<64 lowercase hex>` digest.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(String);

/// Why a string is not a digest modelbake accepts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DigestError {
    /// A well-formed digest of an algorithm modelbake does not handle.
    #[error(
        "digest `{digest}` uses {algorithm}; modelbake handles sha256 digests only (re-push the image with sha256, the default of every current tool)"
    )]
    Unsupported {
        /// The digest as given (escaped).
        digest: String,
        /// Its algorithm.
        algorithm: String,
    },
    /// Not a digest at all.
    #[error("`{0}` is not a digest: expected sha256: followed by 64 lowercase hex digits")]
    Malformed(String),
}

/// Quoting for untrusted text inside an error: control characters escaped, length capped.
fn shown(s: &str) -> String {
    let mut out: String = s.chars().take(100).flat_map(char::escape_debug).collect();
    if s.chars().count() > 100 {
        out.push('…');
    }
    out
}

impl Digest {
    /// Parses `sha256:<hex>`, refusing every other form (other algorithms with their own
    /// message, since they are valid OCI but not something modelbake can check).
    pub fn parse(s: &str) -> Result<Self, DigestError> {
        let Some((algorithm, hex)) = s.split_once(':') else {
            return Err(DigestError::Malformed(shown(s)));
        };
        let algorithm_ok = !algorithm.is_empty()
            && algorithm
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+._-".contains(&b));
        if algorithm != "sha256" {
            return Err(
                if algorithm_ok && hex.bytes().all(|b| b.is_ascii_alphanumeric()) {
                    DigestError::Unsupported {
                        digest: shown(s),
                        algorithm: algorithm.to_owned(),
                    }
                } else {
                    DigestError::Malformed(shown(s))
                },
            );
        }
        if !crate::hash::is_lower_hex(hex, 64) {
            return Err(DigestError::Malformed(shown(s)));
        }
        Ok(Digest(s.to_owned()))
    }

    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Digest(format!("sha256:{}", crate::hash::sha256_hex(bytes)))
    }

    /// The digest whose hex part is `hex` (a sha256 computed here, or a validated lock value).
    pub fn from_sha256_hex(hex: &str) -> Result<Self, DigestError> {
        Self::parse(&format!("sha256:{hex}"))
    }

    /// The 64 hex digits: the blob's file name in layouts and the layer cache.
    pub fn hex(&self) -> &str {
        &self.0[7..]
    }

    /// `sha256:<hex>`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({})", self.0)
    }
}

impl FromStr for Digest {
    type Err = DigestError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl AsRef<str> for Digest {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl PartialEq<str> for Digest {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for Digest {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Digest::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "665939e0da5aa211ec9832ffe5dcba176d1bbac8a95c899c270ec29082853c51";

    #[test]
    fn only_sha256_with_64_lowercase_hex_parses() {
        let d = Digest::parse(&format!("sha256:{HEX}")).unwrap();
        assert_eq!(d.hex(), HEX);
        assert_eq!(d.to_string(), format!("sha256:{HEX}"));
        for bad in [
            "sha256:../../../../x/layer.tar".to_owned(),
            format!("sha256:{}", HEX.to_uppercase()),
            format!("sha256:{}", &HEX[..63]),
            format!("sha256:{HEX}0"),
            format!("sha256:{HEX}/"),
            HEX.to_owned(),
            String::new(),
            "sha256:".to_owned(),
            format!("sha256:{}\n", &HEX[..63]),
        ] {
            assert!(
                matches!(Digest::parse(&bad), Err(DigestError::Malformed(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn other_algorithms_are_refused_by_name() {
        let e = Digest::parse(&format!("sha512:{HEX}{HEX}")).unwrap_err();
        assert!(matches!(&e, DigestError::Unsupported { algorithm, .. } if algorithm == "sha512"));
        assert!(e.to_string().contains("sha256 digests only"), "{e}");
    }

    #[test]
    fn errors_escape_control_characters() {
        let e = Digest::parse("sha256:\u{1b}]0;pwned\u{7}").unwrap_err();
        assert!(!e.to_string().contains('\u{1b}'), "{e}");
    }

    #[test]
    fn serde_parses_and_refuses() {
        let d: Digest = serde_json::from_str(&format!("\"sha256:{HEX}\"")).unwrap();
        assert_eq!(
            serde_json::to_string(&d).unwrap(),
            format!("\"sha256:{HEX}\"")
        );
        assert!(serde_json::from_str::<Digest>("\"sha256:../x\"").is_err());
    }

    #[test]
    fn of_matches_known_value() {
        // sha256 of `{"model_type": "bert"}\n`, computed with openssl outside modelbake.
        assert_eq!(Digest::of(b"{\"model_type\": \"bert\"}\n").hex(), HEX);
    }
}
