//! ECDSA P-256 keys from PEM files, the one key type every signature of modelbake uses: cache
//! records (`--cache-sign-key`/`--cache-trust-key`) and attestations (`bake --sign-key`,
//! `verify --key`). It is also what `model_signing` and cosign sign with, so one key pair serves
//! all of them. Private keys are PKCS#8 (`openssl genpkey -algorithm EC -pkeyopt
//! ec_paramgen_curve:P-256`) or SEC1 (`openssl ecparam -genkey -name prime256v1`) PEM; public
//! keys are SubjectPublicKeyInfo PEM (`openssl pkey -pubout`). Signatures are deterministic
//! (RFC 6979): the same key and message give the same bytes, so a signed document has a
//! reproducible digest and signing the same statement twice attaches nothing new.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use p256::ecdsa::signature::{Signer as _, Verifier as _};
use p256::ecdsa::{DerSignature, Signature, SigningKey, VerifyingKey};
use p256::pkcs8::{EncodePublicKey, LineEnding};

/// The most a key file may weigh: a PEM key is a few hundred bytes.
const KEY_FILE_LIMIT: u64 = 64 << 10;

/// A key file that cannot be used, with what to do.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The file cannot be read.
    #[error("cannot read the key file {}: {source}", .path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Not the PEM block or not the key type expected.
    #[error(
        "{} is not {what}: modelbake signs with ECDSA P-256 keys (a PKCS#8 or SEC1 `PRIVATE KEY` to sign, its `PUBLIC KEY` to verify)",
        .path.display()
    )]
    Unusable {
        /// The file.
        path: PathBuf,
        /// What was expected.
        what: &'static str,
    },
}

impl crate::hint::Hint for KeyError {
    fn hint(&self) -> Option<String> {
        Some(
            "make a key pair with `openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 \
             -out signing.key && openssl pkey -in signing.key -pubout -out signing.pub`; an \
             encrypted key must be decrypted first (`openssl pkey -in enc.key -out signing.key`)"
                .into(),
        )
    }
}

/// A private key that signs (cache records, attestations).
pub struct PrivateKey {
    key: SigningKey,
}

/// A public key that signatures are checked with.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey {
    key: VerifyingKey,
}

impl std::fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PrivateKey(public {})", self.public().hint())
    }
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PublicKey({})", self.hint())
    }
}

/// Reads a key file (capped, a regular file).
fn read_key(path: &Path) -> Result<String, KeyError> {
    let read = |source| KeyError::Read {
        path: path.to_owned(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(read)?;
    if !meta.is_file() || meta.len() > KEY_FILE_LIMIT {
        return Err(KeyError::Unusable {
            path: path.to_owned(),
            what: "a PEM key file",
        });
    }
    std::fs::read_to_string(path).map_err(read)
}

impl PrivateKey {
    /// Loads a PKCS#8 or SEC1 PEM ECDSA P-256 private key.
    pub fn from_file(path: &Path) -> Result<Self, KeyError> {
        Self::from_pem(&read_key(path)?).ok_or_else(|| KeyError::Unusable {
            path: path.to_owned(),
            what: "an unencrypted ECDSA P-256 private key (PEM `PRIVATE KEY` or `EC PRIVATE KEY`)",
        })
    }

    /// A key from PEM text (PKCS#8 `PRIVATE KEY` or SEC1 `EC PRIVATE KEY`).
    pub fn from_pem(text: &str) -> Option<Self> {
        let key = if text.contains("-----BEGIN EC PRIVATE KEY-----") {
            p256::SecretKey::from_sec1_pem(text).ok()?.into()
        } else {
            SigningKey::from_str(text).ok()?
        };
        Some(PrivateKey { key })
    }

    /// The DER-encoded ECDSA signature (SHA-256) of `message`; the same for the same message.
    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        let sig: DerSignature = self.key.sign(message);
        sig.as_bytes().to_vec()
    }

    /// [`PrivateKey::sign`] of a message known only by its SHA-256 (hashed while it was
    /// written): the same signature, without holding the message.
    pub fn sign_sha256(&self, sha256: &[u8; 32]) -> Vec<u8> {
        use p256::ecdsa::signature::hazmat::PrehashSigner as _;
        // A 32-byte prehash is always accepted for P-256.
        let sig: Option<DerSignature> = self.key.sign_prehash(sha256).ok();
        sig.map(|s| s.as_bytes().to_vec()).unwrap_or_default()
    }

    /// The matching public key.
    pub fn public(&self) -> PublicKey {
        PublicKey {
            key: *self.key.verifying_key(),
        }
    }

    /// A fresh key pair, for tests.
    #[cfg(test)]
    pub fn generate() -> Self {
        let mut bytes = [0u8; 32];
        loop {
            for b in bytes.iter_mut() {
                *b = fastrand::u8(..);
            }
            if let Ok(key) = SigningKey::from_slice(&bytes) {
                return PrivateKey { key };
            }
        }
    }
}

impl PublicKey {
    /// Loads a PEM SubjectPublicKeyInfo ECDSA P-256 public key.
    pub fn from_file(path: &Path) -> Result<Self, KeyError> {
        Self::from_pem(&read_key(path)?).ok_or_else(|| KeyError::Unusable {
            path: path.to_owned(),
            what: "an ECDSA P-256 public key (PEM `PUBLIC KEY`)",
        })
    }

    /// A key from SubjectPublicKeyInfo PEM text.
    pub fn from_pem(text: &str) -> Option<Self> {
        VerifyingKey::from_str(text.trim())
            .ok()
            .map(|key| PublicKey { key })
    }

    /// True when `signature` (DER, or the 64-byte fixed form) is this key's signature of
    /// `message`.
    pub fn verifies(&self, message: &[u8], signature: &[u8]) -> bool {
        let sig = Signature::from_der(signature).or_else(|_| Signature::from_slice(signature));
        sig.is_ok_and(|sig| self.key.verify(message, &sig).is_ok())
    }

    /// The key as SubjectPublicKeyInfo PEM, 64-column lines, `\n` endings: the text
    /// `openssl pkey -pubout` writes.
    pub fn pem(&self) -> String {
        self.key
            .to_public_key_pem(LineEnding::LF)
            .unwrap_or_default()
    }

    /// The key's identifier as `model_signing` writes it in a bundle: the hex sha256 of
    /// [`PublicKey::pem`].
    pub fn hint(&self) -> String {
        crate::hash::sha256_hex(self.pem().as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::Digest as _;

    #[test]
    fn signatures_are_deterministic_and_verify_only_with_their_key_and_message() {
        let key = PrivateKey::generate();
        let other = PrivateKey::generate().public();
        let sig = key.sign(b"statement");
        assert_eq!(sig, key.sign(b"statement"), "RFC 6979: same bytes");
        let prehash: [u8; 32] = sha2::Sha256::digest(b"statement").into();
        assert_eq!(
            key.sign_sha256(&prehash),
            sig,
            "signed by its SHA-256: same bytes"
        );
        assert!(key.public().verifies(b"statement", &sig));
        assert!(!key.public().verifies(b"statement!", &sig));
        assert!(!other.verifies(b"statement", &sig));
        assert!(!key.public().verifies(b"statement", b"not a signature"));
    }

    #[test]
    fn pem_round_trips_and_wrong_files_are_refused_with_a_hint() {
        let dir = tempfile::tempdir().unwrap();
        let key = PrivateKey::generate();
        let pem = key.public().pem();
        assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----\n"), "{pem}");
        assert!(pem.lines().all(|l| l.len() <= 64));
        let public = dir.path().join("signing.pub");
        std::fs::write(&public, &pem).unwrap();
        assert_eq!(PublicKey::from_file(&public).unwrap(), key.public());
        assert_eq!(key.public().hint().len(), 64);

        let e = PrivateKey::from_file(&public).err().unwrap();
        assert!(e.to_string().contains("private key"), "{e}");
        assert!(
            crate::hint::Hint::hint(&e)
                .unwrap()
                .contains("openssl genpkey")
        );
        let missing = PublicKey::from_file(&dir.path().join("nope"))
            .err()
            .unwrap();
        assert!(matches!(missing, KeyError::Read { .. }));
    }
}
