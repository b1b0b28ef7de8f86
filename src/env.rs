//! Every environment variable modelbake reads, in one table: its name, what it does and its
//! default. `--help` prints this table, and a unit test fails when the source reads a variable
//! that is not listed here, so the list and the code cannot drift apart. The locations
//! huggingface_hub derives from them (`HF_HOME`, `~/` expansion) are computed here too.

use std::path::PathBuf;

/// One environment variable.
#[derive(Debug, Clone, Copy)]
pub struct Var {
    /// The name (`MODELBAKE_CREDENTIAL_<NAME>` for a family).
    pub name: &'static str,
    /// What it does, for `--help`.
    pub about: &'static str,
}

/// Every variable, in the order `--help` lists them.
pub const VARS: &[Var] = &[
    Var {
        name: "HF_ENDPOINT",
        about: "Hub URL (default https://huggingface.co)",
    },
    Var {
        name: "HF_TOKEN",
        about: "access token; only ever sent to the endpoint's own host",
    },
    Var {
        name: "HUGGING_FACE_HUB_TOKEN",
        about: "older name of HF_TOKEN",
    },
    Var {
        name: "HF_TOKEN_PATH",
        about: "file holding the token (default $HF_HOME/token)",
    },
    Var {
        name: "HF_HOME",
        about: "huggingface_hub home (default $XDG_CACHE_HOME/huggingface, ~/.cache/huggingface)",
    },
    Var {
        name: "HF_HUB_CACHE",
        about: "the huggingface_hub cache for export/verify/scan (default $HF_HOME/hub)",
    },
    Var {
        name: "HUGGINGFACE_HUB_CACHE",
        about: "older name of HF_HUB_CACHE",
    },
    Var {
        name: "TRANSFORMERS_CACHE",
        about: "transformers 4.x cache, above its older PYTORCH_TRANSFORMERS_CACHE and PYTORCH_PRETRAINED_BERT_CACHE (doctor)",
    },
    Var {
        name: "PYTORCH_TRANSFORMERS_CACHE",
        about: "older name of TRANSFORMERS_CACHE (doctor)",
    },
    Var {
        name: "PYTORCH_PRETRAINED_BERT_CACHE",
        about: "oldest name of TRANSFORMERS_CACHE (doctor)",
    },
    Var {
        name: "SENTENCE_TRANSFORMERS_HOME",
        about: "sentence-transformers cache (doctor; default the huggingface_hub cache)",
    },
    Var {
        name: "HF_HUB_OFFLINE",
        about: "huggingface_hub offline switch; bake sets it in images (doctor reports it)",
    },
    Var {
        name: "TRANSFORMERS_OFFLINE",
        about: "offline switch read when HF_HUB_OFFLINE is unset or empty (doctor)",
    },
    Var {
        name: "MODELBAKE_STORE",
        about: "the blob store (default $XDG_CACHE_HOME/modelbake/store, ~/.cache/modelbake/store)",
    },
    Var {
        name: "MODELBAKE_FSYNC",
        about: "0 skips the fsync before a blob is published (as --no-fsync)",
    },
    Var {
        name: "MODELBAKE_HTTP_RETRIES",
        about: "retries of transient HTTP failures, per request and per file (default 5)",
    },
    Var {
        name: "MODELBAKE_HTTP_BACKOFF_MS",
        about: "first retry delay, doubled each time (default 500)",
    },
    Var {
        name: "HF_HUB_DISABLE_XET",
        about: "huggingface_hub's Xet switch: when true, fetch downloads Xet files over plain HTTP (as --no-xet)",
    },
    Var {
        name: "MODELBAKE_CHUNK_MIB",
        about: "Range chunk size of large downloads, MiB (default 8)",
    },
    Var {
        name: "MODELBAKE_CHUNK_THRESHOLD_MIB",
        about: "files at least this large are fetched in chunks, MiB (default 64)",
    },
    Var {
        name: "MODELBAKE_MEMORY_MIB",
        about: "memory for download buffers, MiB (default 32)",
    },
    Var {
        name: "MODELBAKE_CREDENTIAL_<NAME>",
        about: "a mirror credential, sent only to the origin [mirror.credentials] binds NAME to; never to a plugin",
    },
    Var {
        name: "MODELBAKE_PLUGIN_POOLING",
        about: "0: plain plugin instances instead of the pooling allocator (hosts that limit address space)",
    },
    Var {
        name: "SOURCE_DATE_EPOCH",
        about: "mtime of every baked entry, unix seconds (default 0)",
    },
    Var {
        name: "DOCKER_CONFIG",
        about: "folder of the Docker config.json holding registry credentials (default ~/.docker)",
    },
    Var {
        name: "REGISTRY_AUTH_FILE",
        about: "the containers auth.json (podman, skopeo) to read registry credentials from, and `login` writes; when set, the only file read",
    },
    Var {
        name: "XDG_RUNTIME_DIR",
        about: "holds containers/auth.json, the first registry credentials file (podman's)",
    },
    Var {
        name: "XDG_CONFIG_HOME",
        about: "holds containers/auth.json, the next registry credentials file (default ~/.config)",
    },
    Var {
        name: "MODELBAKE_CERTS_DIRS",
        about: "colon-separated certs.d trees: <host[:port]>/*.crt are a registry's CAs, *.cert + *.key its client certificate (default ~/.config/containers/certs.d, /etc/containers/certs.d, /etc/docker/certs.d)",
    },
    Var {
        name: "SSL_CERT_FILE",
        about: "PEM file of CA certificates, trusted in place of the system store (the bundled Mozilla roots stay trusted)",
    },
    Var {
        name: "SSL_CERT_DIR",
        about: "colon-separated folders of PEM CA certificates, read like SSL_CERT_FILE",
    },
    Var {
        name: "REQUESTS_CA_BUNDLE",
        about: "PEM file or folder of CA certificates trusted in addition (as huggingface_hub users set it)",
    },
    Var {
        name: "HTTPS_PROXY",
        about: "proxy for https URLs, also https_proxy; a user:password in it is never printed",
    },
    Var {
        name: "HTTP_PROXY",
        about: "proxy for plain http URLs, also http_proxy",
    },
    Var {
        name: "ALL_PROXY",
        about: "proxy for both when the one above is unset, also all_proxy",
    },
    Var {
        name: "NO_PROXY",
        about: "comma-separated hosts (with their subdomains), IP addresses or CIDR ranges reached without a proxy, `*` for all; also no_proxy. Loopback is not exempt unless listed",
    },
    Var {
        name: "XDG_CACHE_HOME",
        about: "base of the default store and huggingface_hub folders (default ~/.cache)",
    },
    Var {
        name: "HOME",
        about: "home folder, for the defaults above",
    },
    Var {
        name: "MODELBAKE_LOG",
        about: "log filter, e.g. `modelbake=debug`",
    },
    Var {
        name: "NO_COLOR",
        about: "no colours",
    },
    Var {
        name: "CARGO",
        about: "the cargo that `plugin build` runs (default: cargo on PATH)",
    },
];

/// Reads the process environment. Every reader takes a `&dyn Fn(&str) -> Option<String>`, so
/// tests pass a fake environment and production passes this.
pub fn process_env(key: &str) -> Option<String> {
    std::env::var(key).ok()
}

/// `HF_HOME` as huggingface_hub computes it: `$HF_HOME`, else `$XDG_CACHE_HOME/huggingface`,
/// else `~/.cache/huggingface`.
pub fn hf_home(env: &dyn Fn(&str) -> Option<String>) -> Option<PathBuf> {
    let nonempty = |k: &str| env(k).filter(|v| !v.is_empty());
    if let Some(h) = nonempty("HF_HOME") {
        return Some(expand_home(&h, env));
    }
    if let Some(x) = nonempty("XDG_CACHE_HOME") {
        return Some(expand_home(&x, env).join("huggingface"));
    }
    nonempty("HOME").map(|h| PathBuf::from(h).join(".cache").join("huggingface"))
}

/// `p` with a leading `~/` replaced by `$HOME/`, as huggingface_hub expands the paths in its
/// variables (`HF_HOME`, `HF_HUB_CACHE`, `HF_TOKEN_PATH`, ...); anything else as written.
pub fn expand_home(p: &str, env: &dyn Fn(&str) -> Option<String>) -> PathBuf {
    match (p.strip_prefix("~/"), env("HOME")) {
        (Some(rest), Some(home)) => PathBuf::from(home).join(rest),
        _ => PathBuf::from(p),
    }
}

/// The `Environment:` section of `--help`.
pub fn help_section() -> String {
    const LINE: usize = 90;
    let width = VARS.iter().map(|v| v.name.len()).max().unwrap_or(0) + 2;
    let mut out = String::from("Environment:\n");
    for v in VARS {
        // Wrapped by hand under the description column, so every line fits in 90 columns.
        let mut line = format!("  {:width$}", v.name);
        for word in v.about.split(' ') {
            if line.len() + word.len() > LINE && line.len() > width + 2 {
                out.push_str(line.trim_end());
                out.push('\n');
                line = " ".repeat(width + 2);
            }
            line.push_str(word);
            line.push(' ');
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// A yes/no variable: false for `0`, `false`, `off` or `no` (any case), true otherwise or when
/// unset.
pub fn flag(env: &dyn Fn(&str) -> Option<String>, name: &str) -> bool {
    !env(name).is_some_and(|v| {
        matches!(
            v.trim().to_ascii_lowercase().as_str(),
            "0" | "false" | "off" | "no"
        )
    })
}

/// A whole number of MiB as bytes, when set and valid.
pub fn mib(env: &dyn Fn(&str) -> Option<String>, name: &str) -> Option<u64> {
    env(name)
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|v| v << 20)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every `"NAME"` literal of a known variable family in src/ is listed in [`VARS`].
    #[test]
    fn every_variable_the_source_reads_is_listed() {
        let listed: Vec<&str> = VARS.iter().map(|v| v.name).collect();
        let re = regex::Regex::new(
            r#""((?:MODELBAKE|HF|HUGGING_FACE|HUGGINGFACE|XDG)_[A-Z0-9_]*|SOURCE_DATE_EPOCH|NO_COLOR|DOCKER_CONFIG|REGISTRY_AUTH_FILE|SSL_CERT_[A-Z]+|REQUESTS_CA_BUNDLE|[A-Z]+_PROXY)""#,
        )
        .unwrap();
        let mut missing = Vec::new();
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut stack = vec![root];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).unwrap().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    stack.push(path);
                    continue;
                }
                // Test-only modules (the fuzzing support and properties) read their own knobs.
                let name = path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .unwrap_or_default();
                if name.starts_with("fuzz_") {
                    continue;
                }
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                // Only the code before the file's own tests counts.
                let code = text.split("#[cfg(test)]").next().unwrap_or_default();
                for c in re.captures_iter(code) {
                    let name = &c[1];
                    let known = listed.contains(&name)
                        || (name.starts_with("MODELBAKE_CREDENTIAL_")
                            && listed.contains(&"MODELBAKE_CREDENTIAL_<NAME>"));
                    if !known {
                        missing.push(format!("{name} ({})", path.display()));
                    }
                }
            }
        }
        assert!(missing.is_empty(), "not listed in env::VARS: {missing:?}");
    }

    #[test]
    fn flags_and_sizes() {
        let env = |k: &str| match k {
            "A" => Some("OFF".to_owned()),
            "B" => Some("1".to_owned()),
            "M" => Some(" 3 ".to_owned()),
            _ => None,
        };
        assert!(!flag(&env, "A"));
        assert!(flag(&env, "B"));
        assert!(flag(&env, "UNSET"));
        assert_eq!(mib(&env, "M"), Some(3 << 20));
        assert_eq!(mib(&env, "A"), None);
    }

    #[test]
    fn help_lists_every_variable() {
        let help = help_section();
        for v in VARS {
            assert!(help.contains(v.name), "{}", v.name);
        }
    }
}
