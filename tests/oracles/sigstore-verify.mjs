// Offline oracle: verifies a Sigstore bundle (v0.3, DSSE envelope, public-key verification
// material, no transparency log entries) with an ECDSA P-256 public key, using npm
// @sigstore/verify 4.1.3, the verifier sigstore-js ships.
//
//   scripts/setup-node        # once: npm ci into target/node-oracles
//   node tests/oracles/sigstore-verify.mjs BUNDLE.json PUBKEY.pem
//
// On success: exit 0 and one JSON line on stdout,
//   {"ok":true,"payloadType":"…","predicateType":"…","subject":[…]}
// (predicateType and subject from the verified in-toto statement). On failure (wrong key,
// altered payload or signature, malformed bundle, payload not JSON): exit 1 and a message on
// stderr. Bad usage or unreadable files: exit 2.
//
// The packages are loaded from target/node-oracles/node_modules beside this repository
// (ESM ignores NODE_PATH, so createRequire resolves them from there); set
// MODELBAKE_NODE_ORACLES to another folder holding node_modules to override.
//
// What @sigstore/verify checks here: the bundle's shape (bundleFromJSON: media type, exactly
// one signature, non-empty payload and sig) and the ECDSA signature (DER, SHA-256) over the
// DSSE PAE of payloadType and payload. It does not look at the publicKey hint (the key comes
// from the command line), the keyid, the statement or its subject. Its base64 decoding is
// lenient, so this script additionally requires payload and sig to be canonical standard
// base64 with padding, as model_signing and cosign write them.
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";
import path from "node:path";

const here = path.dirname(fileURLToPath(import.meta.url));
const modulesRoot =
  process.env.MODELBAKE_NODE_ORACLES || path.join(here, "..", "..", "target", "node-oracles");
const require = createRequire(path.join(path.resolve(modulesRoot), "package.json"));

function fail(code, message) {
  process.stderr.write(`sigstore-verify: ${message}\n`);
  process.exit(code);
}

const args = process.argv.slice(2);
if (args.length !== 2) {
  fail(2, "usage: node tests/oracles/sigstore-verify.mjs BUNDLE.json PUBKEY.pem");
}
const [bundlePath, keyPath] = args;

let verify, bundleLib, crypto;
try {
  verify = require("@sigstore/verify");
  bundleLib = require("@sigstore/bundle");
  crypto = require("node:crypto");
} catch (err) {
  fail(2, `cannot load @sigstore/verify from ${modulesRoot} (run scripts/setup-node): ${err.message}`);
}

let bundleText, keyText;
try {
  bundleText = readFileSync(bundlePath, "utf8");
  keyText = readFileSync(keyPath, "utf8");
} catch (err) {
  fail(2, err.message);
}

if (!/^-----BEGIN PUBLIC KEY-----$/m.test(keyText)) {
  fail(2, `${keyPath}: expected a PEM SubjectPublicKeyInfo (BEGIN PUBLIC KEY)`);
}
let publicKey;
try {
  publicKey = crypto.createPublicKey(keyText);
} catch (err) {
  fail(2, `${keyPath}: not a PEM public key: ${err.message}`);
}
const details = publicKey.asymmetricKeyDetails || {};
if (publicKey.asymmetricKeyType !== "ec" || details.namedCurve !== "prime256v1") {
  fail(2, `${keyPath}: expected an ECDSA P-256 public key, got ${publicKey.asymmetricKeyType} ${details.namedCurve || ""}`.trim());
}

try {
  let json;
  try {
    json = JSON.parse(bundleText);
  } catch (err) {
    throw new Error(`bundle is not JSON: ${err.message}`);
  }
  const env = json && json.dsseEnvelope;
  if (!env || typeof env !== "object") {
    throw new Error("bundle has no dsseEnvelope");
  }
  const canonical = (s) =>
    typeof s === "string" && Buffer.from(s, "base64").toString("base64") === s;
  if (!canonical(env.payload)) {
    throw new Error("dsseEnvelope.payload is not canonical standard base64");
  }
  for (const [i, sig] of (env.signatures || []).entries()) {
    if (!canonical(sig && sig.sig)) {
      throw new Error(`dsseEnvelope.signatures[${i}].sig is not canonical standard base64`);
    }
  }

  const bundle = bundleLib.bundleFromJSON(json);
  const emptyRoot = {
    mediaType: "application/vnd.dev.sigstore.trustedroot+json;version=0.1",
    tlogs: [],
    certificateAuthorities: [],
    ctlogs: [],
    timestampAuthorities: [],
  };
  const trust = verify.toTrustMaterial(emptyRoot, () => ({ publicKey, validFor: () => true }));
  const verifier = new verify.Verifier(trust, {
    tlogThreshold: 0,
    ctlogThreshold: 0,
    timestampThreshold: 0,
  });
  verifier.verify(verify.toSignedEntity(bundle));

  const payloadType = bundle.content.dsseEnvelope.payloadType;
  let statement;
  try {
    statement = JSON.parse(bundle.content.dsseEnvelope.payload.toString("utf8"));
  } catch (err) {
    throw new Error(`verified payload is not JSON: ${err.message}`);
  }
  process.stdout.write(
    JSON.stringify({
      ok: true,
      payloadType,
      predicateType: statement.predicateType ?? null,
      subject: statement.subject ?? null,
    }) + "\n",
  );
} catch (err) {
  const extra = err && err.fields ? ` (${err.fields.join(", ")})` : "";
  const code = err && err.code ? `${err.code}: ` : "";
  fail(1, `verification failed: ${code}${err && err.message ? err.message : err}${extra}`);
}
