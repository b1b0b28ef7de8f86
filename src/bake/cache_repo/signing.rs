//! Signed cache records: with `--cache-sign-key`, every record a bake writes carries an ECDSA
//! P-256 signature over its own canonical bytes (the record without the signature annotation);
//! with `--cache-trust-key`, a record is used only when that signature verifies with the given
//! public key. This closes the trust boundary of `--push`, where a recorded layer is mounted
//! and never downloaded: a runner without the private key can no longer feed other runners'
//! images. The keys are [`crate::keys`]' PEM files.

use std::path::Path;

use base64::Engine as _;

pub use crate::keys::KeyError;
use crate::keys::{PrivateKey, PublicKey};

/// The private key records are signed with (`--cache-sign-key`).
pub struct RecordSigner {
    key: PrivateKey,
}

/// The public key records must be signed with (`--cache-trust-key`).
pub struct RecordTrust {
    key: PublicKey,
}

impl RecordSigner {
    /// Loads a PEM ECDSA P-256 private key.
    pub fn from_file(path: &Path) -> Result<Self, KeyError> {
        PrivateKey::from_file(path).map(|key| RecordSigner { key })
    }

    /// The base64 ASN.1 signature of `message`.
    pub fn sign(&self, message: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.key.sign(message))
    }
}

impl RecordTrust {
    /// Loads a PEM SubjectPublicKeyInfo ECDSA P-256 public key.
    pub fn from_file(path: &Path) -> Result<Self, KeyError> {
        PublicKey::from_file(path).map(|key| RecordTrust { key })
    }

    /// True when `signature` (base64, ASN.1) is this key's signature of `message`.
    pub fn verifies(&self, message: &[u8], signature: &str) -> bool {
        base64::engine::general_purpose::STANDARD
            .decode(signature)
            .is_ok_and(|sig| self.key.verifies(message, &sig))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A fresh signer and the matching trust.
    pub(crate) fn key_pair() -> (RecordSigner, RecordTrust) {
        let key = PrivateKey::generate();
        let trust = RecordTrust { key: key.public() };
        (RecordSigner { key }, trust)
    }

    #[test]
    fn a_signature_verifies_only_with_its_key_and_its_message() {
        let (signer, trust) = key_pair();
        let (_, other) = key_pair();
        let sig = signer.sign(b"record");
        assert!(trust.verifies(b"record", &sig));
        assert!(!trust.verifies(b"record!", &sig));
        assert!(!other.verifies(b"record", &sig));
        assert!(!trust.verifies(b"record", "not base64"));
    }

    #[test]
    fn pem_files_load_and_wrong_ones_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let key = PrivateKey::generate();
        let public = dir.path().join("cache.pub");
        std::fs::write(&public, key.public().pem()).unwrap();
        let trust = RecordTrust::from_file(&public).unwrap();
        let signer = RecordSigner { key };
        assert!(trust.verifies(b"m", &signer.sign(b"m")));
        // A public key where a private one belongs.
        assert!(RecordSigner::from_file(&public).is_err());
    }
}
