//! Attestation documents: contents, determinism, and golden digests that guard their bytes.

use super::*;

fn lock() -> Lockfile {
    let text = format!(
        r#"version = 1

[[repo]]
kind = "dataset"
id = "acme/corpus"
revision = "main"
commit = "{d}"
complete = true
digest = ""

[[repo.file]]
path = "data/train.jsonl"
size = 5
sha256 = "{h1}"
blob = "{b}"

[[repo]]
kind = "model"
id = "acme/tiny"
revision = "v1.0"
commit = "{m}"
complete = true
digest = ""

[[repo.file]]
path = ".gitattributes"
size = 3
sha256 = "{h2}"
blob = "{b}"

[[repo.file]]
path = "README.md"
size = 4
sha256 = "{h3}"
blob = "{b}"

[[repo.file]]
path = "model.safetensors"
size = 7
sha256 = "{h4}"
blob = "{h4}"
pointer = "{b}"
"#,
        d = "d".repeat(40),
        m = "a".repeat(40),
        b = "0".repeat(40),
        h1 = "1".repeat(64),
        h2 = "2".repeat(64),
        h3 = "3".repeat(64),
        h4 = "4".repeat(64),
    );
    let mut lock: Lockfile = toml::from_str(&text).unwrap();
    for r in &mut lock.repos {
        r.normalize();
    }
    lock
}

fn facts(lock: &Lockfile) -> Facts<'_> {
    Facts {
        lock,
        lock_name: "models.lock".into(),
        lock_sha256: "5".repeat(64),
        licenses: BTreeMap::from([(
            "model `acme/tiny`".to_owned(),
            vec!["apache-2.0".to_owned()],
        )]),
        parameters: json!({ "layout": "hf-cache", "compression": "none" }),
        builder: Builder::from_env(&|_| None),
        epoch: None,
        tool_version: "0.0.0-golden".into(),
    }
}

fn subject() -> ImageSubject {
    ImageSubject {
        name: "registry.example/models".into(),
        digest: Digest::from_sha256_hex(&"6".repeat(64)).unwrap(),
        bases: vec![BaseImage {
            reference: "registry.example/pytorch:2.9".into(),
            digest: Digest::from_sha256_hex(&"7".repeat(64)).unwrap(),
        }],
    }
}

#[test]
fn the_sbom_lists_repos_files_licences_and_the_base() {
    let lock = lock();
    let atts = for_subject(&facts(&lock), &subject());
    let sbom: Value = serde_json::from_slice(&atts[0].document.as_ref().unwrap().to_vec()).unwrap();
    assert_eq!(sbom["bomFormat"], "CycloneDX");
    assert_eq!(sbom["specVersion"], "1.6");
    assert_eq!(
        sbom["metadata"]["component"]["hashes"][0]["content"],
        "6".repeat(64)
    );
    let comps = sbom["components"].as_array().unwrap();
    let model = comps
        .iter()
        .find(|c| c["type"] == "machine-learning-model")
        .unwrap();
    assert_eq!(
        model["purl"],
        format!("pkg:huggingface/acme/tiny@{}", "a".repeat(40))
    );
    assert_eq!(model["group"], "acme");
    assert_eq!(model["licenses"][0]["license"]["id"], "Apache-2.0");
    assert_eq!(model["components"].as_array().unwrap().len(), 3);
    let weights = &model["components"][2];
    assert_eq!(weights["name"], "model.safetensors");
    assert_eq!(weights["hashes"][0]["content"], "4".repeat(64));
    let data = comps.iter().find(|c| c["type"] == "data").unwrap();
    assert_eq!(data["licenses"][0]["license"]["name"], "NOASSERTION");
    assert!(
        data["purl"]
            .as_str()
            .unwrap()
            .ends_with("?repository_url=https:%2F%2Fhuggingface.co%2Fdatasets")
    );
    let base = comps.iter().find(|c| c["type"] == "container").unwrap();
    assert_eq!(base["hashes"][0]["content"], "7".repeat(64));
    assert!(
        sbom["serialNumber"]
            .as_str()
            .unwrap()
            .starts_with("urn:uuid:")
    );
    assert!(sbom["metadata"].get("timestamp").is_none());
    // The signed form wraps the same document as the predicate of a statement on the image.
    let st = statement::parse(&atts[0].statement_bytes()).unwrap();
    assert_eq!(st.predicate, sbom);
    assert_eq!(st.subjects[0].sha256, "6".repeat(64));
}

#[test]
fn provenance_pins_the_lock_repos_files_base_and_builder() {
    let lock = lock();
    let atts = for_subject(&facts(&lock), &subject());
    let st = statement::parse(&atts[1].statement_bytes()).unwrap();
    assert_eq!(st.predicate_type, provenance::PREDICATE);
    assert_eq!(
        provenance::lock_sha256(&st.predicate),
        Some("5".repeat(64).as_str())
    );
    let deps = st.predicate["buildDefinition"]["resolvedDependencies"]
        .as_array()
        .unwrap();
    assert!(deps.iter().any(|d| d["uri"]
        == format!("pkg:huggingface/acme/tiny@{}", "a".repeat(40))
        && d["digest"]["gitCommit"] == "a".repeat(40)));
    assert!(
        deps.iter()
            .any(|d| d["name"] == "acme/tiny/model.safetensors"
                && d["digest"]["sha256"] == "4".repeat(64))
    );
    assert!(deps.iter().any(|d| d["digest"]["sha256"] == "7".repeat(64)));
    assert_eq!(st.predicate["runDetails"]["builder"]["id"], LOCAL_BUILDER);
    assert!(st.predicate["runDetails"].get("metadata").is_none());
    assert_eq!(
        st.predicate["buildDefinition"]["externalParameters"]["bake"]["layout"],
        "hf-cache"
    );
}

#[test]
fn model_signing_statements_cover_each_repo_without_git_files() {
    let lock = lock();
    let atts = for_subject(&facts(&lock), &subject());
    assert_eq!(atts.len(), 4);
    let tiny = atts
        .iter()
        .find(|a| a.kind == Kind::ModelSigning("model `acme/tiny`".into()))
        .unwrap();
    assert_eq!(
        tiny.file_name(),
        PathBuf::from("model-signing/acme/tiny.json")
    );
    let st = statement::parse(&tiny.statement_bytes()).unwrap();
    let names: Vec<&str> = st.predicate["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["README.md", "model.safetensors"]);
    let corpus = atts
        .iter()
        .find(|a| matches!(&a.kind, Kind::ModelSigning(l) if l.contains("corpus")))
        .unwrap();
    assert_eq!(
        corpus.file_name(),
        PathBuf::from("model-signing/datasets/acme/corpus.json")
    );
}

#[test]
fn the_same_facts_give_the_same_bytes_and_the_epoch_is_the_only_time() {
    let lock = lock();
    let a = for_subject(&facts(&lock), &subject());
    let b = for_subject(&facts(&lock), &subject());
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x.statement_bytes(), y.statement_bytes());
    }
    let mut timed = facts(&lock);
    timed.epoch = Some(1_700_000_000);
    let t = for_subject(&timed, &subject());
    let sbom: Value = serde_json::from_slice(&t[0].document.as_ref().unwrap().to_vec()).unwrap();
    assert_eq!(sbom["metadata"]["timestamp"], "2023-11-14T22:13:20Z");
    let prov = statement::parse(&t[1].statement_bytes()).unwrap();
    assert_eq!(
        prov.predicate["runDetails"]["metadata"]["startedOn"],
        "2023-11-14T22:13:20Z"
    );
}

#[test]
fn referrers_are_bundles_with_a_key_and_plain_documents_without() {
    let lock = lock();
    let atts = for_subject(&facts(&lock), &subject());
    let key = PrivateKey::generate();
    let dir = tempfile::tempdir().unwrap();
    let referrer = |i: usize, key: Option<&PrivateKey>| {
        let body = atts[i].write_document(key, dir.path()).unwrap();
        let bytes = std::fs::read(&*body.path).unwrap();
        assert_eq!(body.digest, Digest::of(&bytes));
        assert_eq!(body.size, bytes.len() as u64);
        assert_eq!(bytes, atts[i].signed_or_plain(key), "streamed = in memory");
        (atts[i].referrer(key, body), bytes)
    };
    let (signed, bytes) = referrer(1, Some(&key));
    assert_eq!(signed.artifact_type, bundle::MEDIA_BUNDLE);
    assert_eq!(
        signed.annotations[ANNOTATION_BUNDLE_PREDICATE],
        provenance::PREDICATE
    );
    assert_eq!(
        bundle::verify(&bytes, &key.public()).unwrap(),
        atts[1].statement_bytes()
    );
    let (plain_sbom, bytes) = referrer(0, None);
    assert_eq!(plain_sbom.artifact_type, sbom::MEDIA_TYPE);
    assert_eq!(bytes, atts[0].document.as_ref().unwrap().to_vec());
    let (plain, bytes) = referrer(2, None);
    assert_eq!(plain.artifact_type, statement::PAYLOAD_TYPE);
    assert_eq!(plain.annotations[ANNOTATION_KIND], "model-signing");
    assert_eq!(bytes, atts[2].statement_bytes());
    // The file goes with the last clone of its referrer.
    let path = plain.document.path.to_path_buf();
    assert!(path.exists());
    drop(plain);
    assert!(!path.exists());
}

#[test]
fn builders_come_from_github_and_gitlab_variables() {
    let gh = |k: &str| match k {
        "GITHUB_ACTIONS" => Some("true".to_owned()),
        "GITHUB_REPOSITORY" => Some("acme/app".into()),
        "GITHUB_SHA" => Some("f".repeat(40)),
        "GITHUB_REF" => Some("refs/heads/main".into()),
        "GITHUB_WORKFLOW_REF" => Some("acme/app/.github/workflows/bake.yml@refs/heads/main".into()),
        _ => None,
    };
    let b = Builder::from_env(&gh);
    assert_eq!(b.id, "https://github.com/actions/runner/github-hosted");
    assert_eq!(
        b.source.as_ref().unwrap()["uri"],
        "git+https://github.com/acme/app@refs/heads/main"
    );
    let gl = |k: &str| match k {
        "GITLAB_CI" => Some("true".to_owned()),
        "CI_SERVER_URL" => Some("https://gitlab.example".into()),
        "CI_PROJECT_PATH" => Some("acme/app".into()),
        "CI_RUNNER_ID" => Some("42".into()),
        _ => None,
    };
    assert_eq!(
        Builder::from_env(&gl).id,
        "https://gitlab.example/acme/app/-/runners/42"
    );
    assert_eq!(Builder::from_env(&|_| None).id, LOCAL_BUILDER);
}

#[test]
fn rfc3339_formats_utc_times() {
    assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
    assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    assert_eq!(rfc3339(4_102_444_799), "2099-12-31T23:59:59Z");
}

/// The bytes of every attestation document, pinned: a change here changes what every user's
/// images carry (new referrer digests at the next bake). Change them only on purpose.
#[test]
fn golden_attestation_documents() {
    let lock = lock();
    let atts = for_subject(&facts(&lock), &subject());
    let got: Vec<String> = atts
        .iter()
        .map(|a| {
            format!(
                "{}:{}",
                a.kind.name(),
                crate::hash::sha256_hex(&a.statement_bytes())
            )
        })
        .collect();
    let want = vec![
        "sbom:c66ad7c590db4fe5c306dfa869c95ee97f0df2e9b8995be28232ff2ff748a200",
        "provenance:cc2c8e180a3a3d45e26bf521b631aee58378ddf44e249afbdd0636aa7ffbb941",
        "model-signing:e06acd770857200634d468aab0b85349a8eae409a338244528c571c6ef4bfa44",
        "model-signing:e472b5eecf8b81b22293f6383b1d11f7bca717cf2956b78a4962ececb8953439",
    ];
    assert_eq!(got, want);
}

/// A fixed P-256 key for the golden bundles (a test key, used nowhere else).
const GOLDEN_KEY: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgxFiWeULp2X5H5GFT
lV+VNJeepvUGJAv2NdB2Dy9Hq3ChRANCAAT9RjJpEuCuloS2HL5DRtv1eEeB+Fgz
iw/W85JA+EMPjmN5BzfCKuO0X1QvJeyxhpc/mqegjP/7ogJMai6nHkWH
-----END PRIVATE KEY-----
";

/// What is attached, unsigned and signed, keeps its bytes: the SBOM document and the
/// statements as they are attached, and the Sigstore bundles of a fixed key (ECDSA with RFC 6979
/// nonces, so signatures are deterministic).
#[test]
fn golden_attached_bytes_plain_and_signed() {
    let lock = lock();
    let key = PrivateKey::from_pem(GOLDEN_KEY).unwrap();
    let atts = for_subject(&facts(&lock), &subject());
    let got: Vec<String> = atts
        .iter()
        .map(|a| {
            format!(
                "{}:{}:{}",
                a.kind.name(),
                crate::hash::sha256_hex(&a.signed_or_plain(None)),
                crate::hash::sha256_hex(&a.signed_or_plain(Some(&key)))
            )
        })
        .collect();
    let want = vec![
        "sbom:3714c9bbdb5ea93de2544f6ce91c26d7678e8e3012a0dee3cb566e4cf2df0395:6dbb947b2a80091bd3ed682396e442a6ce86ca10e9b4ecb2afee70958adfd323",
        "provenance:cc2c8e180a3a3d45e26bf521b631aee58378ddf44e249afbdd0636aa7ffbb941:92ffbb7dbd8546b34fa861fbe084d04489f0d81781422a089f7d468de5f55afe",
        "model-signing:e06acd770857200634d468aab0b85349a8eae409a338244528c571c6ef4bfa44:e6298a9543f38bd73344a1cc144e79e160c3f7f21d8a3520013e5ac3dedfd377",
        "model-signing:e472b5eecf8b81b22293f6383b1d11f7bca717cf2956b78a4962ececb8953439:e4a04dae57d9a17dbd4264e5fd10210d6b925e55794979c9d7a3d336ddd454ed",
    ];
    assert_eq!(got, want);

    // In CI, with SOURCE_DATE_EPOCH: the builder's parameters, its source and the times.
    let ci = |k: &str| {
        let v = match k {
            "GITHUB_ACTIONS" => "true",
            "GITHUB_REPOSITORY" => "acme/models",
            "GITHUB_SHA" => "f00d",
            "GITHUB_REF" => "refs/heads/main",
            "GITHUB_WORKFLOW_REF" => "acme/models/.github/workflows/bake.yml@refs/heads/main",
            _ => return None,
        };
        Some(v.to_owned())
    };
    let facts = Facts {
        builder: Builder::from_env(&ci),
        epoch: Some(1_700_000_000),
        ..facts(&lock)
    };
    let got: Vec<String> = for_subject(&facts, &subject())
        .iter()
        .take(2)
        .map(|a| crate::hash::sha256_hex(&a.signed_or_plain(None)))
        .collect();
    assert_eq!(
        got,
        vec![
            "978e642537c9af5f2927d5ae7bd69eeb605ebf56f0f395cd6e15bb5160963dc3",
            "76ad44f376d18090eaaa55ee56e6ca35de7198d68be06700c26d3d426329c412",
        ]
    );
}
