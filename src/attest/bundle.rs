//! Signed statements: a DSSE envelope (the statement as its payload, signed over DSSE's
//! pre-authentication encoding) inside a Sigstore bundle v0.3 whose verification material is
//! a public key, named by its hint (the hex sha256 of its PEM text, as `model_signing` writes
//! it). This is the shape `model_signing verify key`, cosign (`--key`, no transparency log)
//! and `@sigstore/verify` accept. [`verify`] is the check `verify --image --key` runs.

use std::io::Write;

use base64::Engine as _;
use serde_json::{Value, json};

use super::statement::PAYLOAD_TYPE;
use crate::hash::HashingWriter;
use crate::keys::{PrivateKey, PublicKey};

/// The media type of a Sigstore bundle v0.3 (also the referrer's artifact type).
pub const MEDIA_BUNDLE: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";

/// DSSE's pre-authentication encoding of `payload` of type `payload_type`: the bytes signed.
pub fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "DSSEv1 {} {payload_type} {} ",
        payload_type.len(),
        payload.len()
    )
    .into_bytes();
    out.extend_from_slice(payload);
    out
}

/// The Sigstore bundle (v0.3, DSSE envelope) of `statement` signed with `key`, as bytes
/// (tests; bakes write bundles with [`sign_to`]).
#[cfg(test)]
pub fn sign(statement: &[u8], key: &PrivateKey) -> Vec<u8> {
    let mut out = Vec::new();
    // Writing into memory cannot fail.
    let _ = sign_to(&|w| w.write_all(statement), key, &mut out);
    out
}

/// Writes the Sigstore bundle of the statement `write` produces, signed with `key`, to `w`.
/// The statement is produced three times (for its length, its signature and its base64
/// payload) instead of held: a bundle of a 100,000-file statement needs no more memory than a
/// small one. The bytes are those of [`sign`].
pub fn sign_to(
    write: &dyn Fn(&mut dyn Write) -> std::io::Result<()>,
    key: &PrivateKey,
    w: &mut dyn Write,
) -> std::io::Result<()> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut counted = HashingWriter::new(std::io::sink());
    write(&mut counted)?;
    let (_, len, _) = counted.finish();
    let mut pae = HashingWriter::new(std::io::sink());
    write!(pae, "DSSEv1 {} {PAYLOAD_TYPE} {len} ", PAYLOAD_TYPE.len())?;
    write(&mut pae)?;
    let (pae_sha256, _, _) = pae.finish();
    let prehash: [u8; 32] = hex::decode(&pae_sha256)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| std::io::Error::other("the statement's SHA-256 was not computed"))?;
    let sig = key.sign_sha256(&prehash);
    let v = json!({
        "mediaType": MEDIA_BUNDLE,
        "verificationMaterial": {
            "publicKey": { "hint": key.public().hint() },
            "tlogEntries": [],
        },
        "dsseEnvelope": {
            "payload": PAYLOAD_MARK,
            "payloadType": PAYLOAD_TYPE,
            "signatures": [{ "sig": b64.encode(sig), "keyid": "" }],
        },
    });
    let text = serde_json::to_string(&v).map_err(std::io::Error::other)?;
    let (head, tail) = text
        .split_once(PAYLOAD_MARK)
        .ok_or_else(|| std::io::Error::other("the bundle template lost its payload mark"))?;
    w.write_all(head.as_bytes())?;
    {
        let mut enc = base64::write::EncoderWriter::new(&mut *w, &b64);
        write(&mut enc)?;
        enc.finish()?;
    }
    w.write_all(tail.as_bytes())
}

/// Stands for the payload in the bundle template; base64 and the other fields never contain it.
const PAYLOAD_MARK: &str = "@@modelbake-payload@@";

/// Why a bundle was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BundleError {
    /// Not a Sigstore bundle with one DSSE envelope.
    #[error("not a Sigstore bundle v0.3 with a DSSE envelope: {0}")]
    Malformed(&'static str),
    /// The signature does not verify with the key.
    #[error("its signature does not verify with the given key")]
    BadSignature,
}

/// The statement inside `bundle` when its one signature verifies with `key`.
pub fn verify(bundle: &[u8], key: &PublicKey) -> Result<Vec<u8>, BundleError> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let v: Value =
        serde_json::from_slice(bundle).map_err(|_| BundleError::Malformed("not JSON"))?;
    let media = v["mediaType"].as_str().unwrap_or_default();
    if !media.starts_with("application/vnd.dev.sigstore.bundle") {
        return Err(BundleError::Malformed("no Sigstore bundle media type"));
    }
    let env = &v["dsseEnvelope"];
    if env["payloadType"] != PAYLOAD_TYPE {
        return Err(BundleError::Malformed(
            "the payload is not an in-toto statement",
        ));
    }
    let payload = env["payload"]
        .as_str()
        .and_then(|p| b64.decode(p).ok())
        .ok_or(BundleError::Malformed("no base64 payload"))?;
    let sigs = env["signatures"]
        .as_array()
        .ok_or(BundleError::Malformed("no signatures"))?;
    let [sig] = sigs.as_slice() else {
        return Err(BundleError::Malformed("not exactly one signature"));
    };
    let sig = sig["sig"]
        .as_str()
        .and_then(|s| b64.decode(s).ok())
        .ok_or(BundleError::Malformed("no base64 signature"))?;
    if !key.verifies(&pae(PAYLOAD_TYPE, &payload), &sig) {
        return Err(BundleError::BadSignature);
    }
    Ok(payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pae_is_the_dsse_encoding() {
        assert_eq!(
            pae("http://example.com/HelloWorld", b"hello world"),
            b"DSSEv1 29 http://example.com/HelloWorld 11 hello world".to_vec()
        );
    }

    #[test]
    fn a_bundle_verifies_with_its_key_only_and_is_deterministic() {
        let key = PrivateKey::generate();
        let other = PrivateKey::generate();
        let bundle = sign(b"{\"a\":1}", &key);
        assert_eq!(bundle, sign(b"{\"a\":1}", &key));
        assert_eq!(verify(&bundle, &key.public()).unwrap(), b"{\"a\":1}");
        assert_eq!(
            verify(&bundle, &other.public()),
            Err(BundleError::BadSignature)
        );
        let v: Value = serde_json::from_slice(&bundle).unwrap();
        assert_eq!(
            v["verificationMaterial"]["publicKey"]["hint"],
            key.public().hint()
        );
        // Another payload under the same signature is refused.
        let mut forged = v.clone();
        forged["dsseEnvelope"]["payload"] =
            json!(base64::engine::general_purpose::STANDARD.encode(b"{\"a\":2}"));
        let forged = serde_json::to_vec(&forged).unwrap();
        assert_eq!(
            verify(&forged, &key.public()),
            Err(BundleError::BadSignature)
        );
        assert!(matches!(
            verify(b"{}", &key.public()),
            Err(BundleError::Malformed(_))
        ));
    }
}
