//! Signed cache records: with `--cache-sign-key`, every record a bake writes carries an ECDSA
//! P-256 signature over its own canonical bytes (the record without the signature annotation);
//! with `--cache-trust-key`, a record is used only when that signature verifies with the given
//! public key. This closes the trust boundary of `--push`, where a recorded layer is mounted
//! and never downloaded: a runner without the private key can no longer feed other runners'
//! images. Keys are PEM files: PKCS#8 private keys (`openssl genpkey -algorithm EC -pkeyopt
//! ec_paramgen_curve:P-256`) and SubjectPublicKeyInfo public keys (`openssl pkey -pubout`).

use std::path::{Path, PathBuf};

use base64::Engine as _;
use ring::rand::SystemRandom;
use ring::signature::{
    ECDSA_P256_SHA256_ASN1, ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, UnparsedPublicKey,
};

/// The DER prefix of a P-256 SubjectPublicKeyInfo; the 65-byte uncompressed point follows.
const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

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
        "{} is not {what}: cache records are signed with ECDSA P-256 keys (a PKCS#8 `PRIVATE KEY` to sign, its `PUBLIC KEY` to trust)",
        .path.display()
    )]
    Unusable {
        /// The file.
        path: PathBuf,
        /// What was expected.
        what: &'static str,
    },
    /// The signing itself failed (the system's random source).
    #[error("signing a cache record failed")]
    Sign,
}

impl crate::hint::Hint for KeyError {
    fn hint(&self) -> Option<String> {
        Some(
            "make a key pair with `openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 \
             -out cache.key && openssl pkey -in cache.key -pubout -out cache.pub`; sign with \
             --cache-sign-key cache.key, trust with --cache-trust-key cache.pub"
                .into(),
        )
    }
}

/// The private key records are signed with (`--cache-sign-key`).
pub struct RecordSigner {
    key: EcdsaKeyPair,
    rng: SystemRandom,
}

/// The public key records must be signed with (`--cache-trust-key`).
pub struct RecordTrust {
    point: Vec<u8>,
}

/// The DER bytes of the first PEM block labelled `label` in `text`.
fn pem_block(text: &str, label: &str) -> Option<Vec<u8>> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = text.find(&begin)? + begin.len();
    let stop = start + text[start..].find(&end)?;
    let body: String = text[start..stop].split_whitespace().collect();
    base64::engine::general_purpose::STANDARD.decode(body).ok()
}

/// Reads a key file (capped: a key is a few hundred bytes).
fn read_key(path: &Path) -> Result<String, KeyError> {
    let read = |source| KeyError::Read {
        path: path.to_owned(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(read)?;
    if !meta.is_file() || meta.len() > 64 << 10 {
        return Err(KeyError::Unusable {
            path: path.to_owned(),
            what: "a PEM key file",
        });
    }
    std::fs::read_to_string(path).map_err(read)
}

impl RecordSigner {
    /// Loads a PKCS#8 PEM ECDSA P-256 private key.
    pub fn from_file(path: &Path) -> Result<Self, KeyError> {
        let unusable = || KeyError::Unusable {
            path: path.to_owned(),
            what: "a PKCS#8 ECDSA P-256 private key",
        };
        let der = pem_block(&read_key(path)?, "PRIVATE KEY").ok_or_else(unusable)?;
        Self::from_pkcs8(&der).ok_or_else(unusable)
    }

    /// A signer from PKCS#8 DER bytes.
    fn from_pkcs8(der: &[u8]) -> Option<Self> {
        let rng = SystemRandom::new();
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, der, &rng).ok()?;
        Some(RecordSigner { key, rng })
    }

    /// The base64 ASN.1 signature of `message`.
    pub fn sign(&self, message: &[u8]) -> Result<String, KeyError> {
        let sig = self
            .key
            .sign(&self.rng, message)
            .map_err(|_| KeyError::Sign)?;
        Ok(base64::engine::general_purpose::STANDARD.encode(sig.as_ref()))
    }
}

impl RecordTrust {
    /// Loads a PEM SubjectPublicKeyInfo ECDSA P-256 public key.
    pub fn from_file(path: &Path) -> Result<Self, KeyError> {
        let der = pem_block(&read_key(path)?, "PUBLIC KEY");
        match der {
            Some(der) if der.len() == 91 && der.starts_with(&P256_SPKI_PREFIX) => Ok(RecordTrust {
                point: der[P256_SPKI_PREFIX.len()..].to_vec(),
            }),
            _ => Err(KeyError::Unusable {
                path: path.to_owned(),
                what: "an ECDSA P-256 public key (PEM `PUBLIC KEY`)",
            }),
        }
    }

    /// True when `signature` (base64, ASN.1) is this key's signature of `message`.
    pub fn verifies(&self, message: &[u8], signature: &str) -> bool {
        let Ok(sig) = base64::engine::general_purpose::STANDARD.decode(signature) else {
            return false;
        };
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, &self.point)
            .verify(message, &sig)
            .is_ok()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use ring::signature::KeyPair as _;

    /// A fresh signer and the matching trust.
    pub(crate) fn key_pair() -> (RecordSigner, RecordTrust) {
        let rng = SystemRandom::new();
        let der = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng).unwrap();
        let signer = RecordSigner::from_pkcs8(der.as_ref()).unwrap();
        let point = signer.key.public_key().as_ref().to_vec();
        (signer, RecordTrust { point })
    }

    #[test]
    fn a_signature_verifies_only_with_its_key_and_its_message() {
        let (signer, trust) = key_pair();
        let (_, other) = key_pair();
        let sig = signer.sign(b"record").unwrap();
        assert!(trust.verifies(b"record", &sig));
        assert!(!trust.verifies(b"record!", &sig));
        assert!(!other.verifies(b"record", &sig));
        assert!(!trust.verifies(b"record", "not base64"));
    }

    #[test]
    fn pem_files_load_and_wrong_ones_are_refused_with_a_hint() {
        let dir = tempfile::tempdir().unwrap();
        let rng = SystemRandom::new();
        let der = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng).unwrap();
        let pem = |label: &str, der: &[u8]| {
            format!(
                "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
                base64::engine::general_purpose::STANDARD.encode(der)
            )
        };
        let key = dir.path().join("cache.key");
        std::fs::write(&key, pem("PRIVATE KEY", der.as_ref())).unwrap();
        let signer = RecordSigner::from_file(&key).unwrap();
        let spki = [&P256_SPKI_PREFIX[..], signer.key.public_key().as_ref()].concat();
        let public = dir.path().join("cache.pub");
        std::fs::write(&public, pem("PUBLIC KEY", &spki)).unwrap();
        let trust = RecordTrust::from_file(&public).unwrap();
        assert!(trust.verifies(b"m", &signer.sign(b"m").unwrap()));
        // A public key where a private one belongs, and the other way round.
        let e = RecordSigner::from_file(&public).err().unwrap();
        assert!(e.to_string().contains("PKCS#8"), "{e}");
        assert!(
            crate::hint::Hint::hint(&e)
                .unwrap()
                .contains("openssl genpkey")
        );
        assert!(RecordTrust::from_file(&key).is_err());
    }
}
