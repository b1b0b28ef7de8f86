//! Where each Python loader looks for the huggingface_hub cache, given an environment: one
//! resolver that `bake` (to correct a base image's variables), `verify --oci` (to check them)
//! and the docs share. The rules, and the library source they were checked against, are in
//! docs/loaders.md.

use serde::Serialize;

/// An environment lookup: the process's, or an image config's `Env` (see [`image_env`]).
pub type EnvFn<'a> = &'a dyn Fn(&str) -> Option<String>;

/// Variables that send some loader to a cache of their own, above `HF_HOME`: `bake` points
/// every one a base image sets at the baked cache.
pub const REDIRECTS: &[&str] = &[
    "HF_HUB_CACHE",
    "HUGGINGFACE_HUB_CACHE",
    "TRANSFORMERS_CACHE",
    "PYTORCH_TRANSFORMERS_CACHE",
    "PYTORCH_PRETRAINED_BERT_CACHE",
    "SENTENCE_TRANSFORMERS_HOME",
];

/// A library that loads models from the huggingface_hub cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Loader {
    /// huggingface_hub itself (`snapshot_download`, `hf_hub_download`), and through it
    /// diffusers, transformers 5 and every other library that passes no `cache_dir`.
    #[serde(rename = "huggingface_hub")]
    HuggingfaceHub,
    /// transformers 4.x, which reads its own legacy variables first.
    #[serde(rename = "transformers 4.x")]
    Transformers4,
    /// sentence-transformers 3 and later.
    #[serde(rename = "sentence-transformers")]
    SentenceTransformers,
}

impl Loader {
    /// Every loader, in the order reports list them.
    pub const ALL: [Loader; 3] = [
        Loader::HuggingfaceHub,
        Loader::Transformers4,
        Loader::SentenceTransformers,
    ];

    /// The library's name, as pip knows it.
    pub fn name(self) -> &'static str {
        match self {
            Loader::HuggingfaceHub => "huggingface_hub",
            Loader::Transformers4 => "transformers 4.x",
            Loader::SentenceTransformers => "sentence-transformers",
        }
    }
}

impl std::fmt::Display for Loader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Where one loader looks, and which variable decided it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Resolved {
    /// The loader.
    pub loader: Loader,
    /// The variable whose value decided (`HOME` when only the built-in default applied).
    pub variable: &'static str,
    /// The cache directory; it still starts with `~` when `HOME` is unknown.
    pub cache: String,
}

/// `~` and `~/…` expanded with `HOME`, as Python's `os.path.expanduser` does when `HOME` is set.
fn expand_user(path: &str, env: EnvFn) -> String {
    let rest = match path.strip_prefix('~') {
        Some(rest) if rest.is_empty() || rest.starts_with('/') => rest,
        _ => return path.to_owned(),
    };
    match env("HOME") {
        Some(home) => format!("{}{rest}", home.trim_end_matches('/')),
        None => path.to_owned(),
    }
}

/// `dir/child`, with no doubled `/`.
fn join(dir: &str, child: &str) -> String {
    format!("{}/{child}", dir.trim_end_matches('/'))
}

/// huggingface_hub's cache: `HF_HUB_CACHE` > `HUGGINGFACE_HUB_CACHE` > `HF_HOME/hub` >
/// `XDG_CACHE_HOME/huggingface/hub` > `~/.cache/huggingface/hub`. A variable set to the empty
/// string counts as set, as with Python's `os.getenv`.
fn hub(env: EnvFn) -> (&'static str, String) {
    for var in ["HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"] {
        if let Some(v) = env(var) {
            return (var, expand_user(&v, env));
        }
    }
    if let Some(home) = env("HF_HOME") {
        return ("HF_HOME", join(&expand_user(&home, env), "hub"));
    }
    if let Some(xdg) = env("XDG_CACHE_HOME") {
        return (
            "XDG_CACHE_HOME",
            join(&expand_user(&join(&xdg, "huggingface"), env), "hub"),
        );
    }
    ("HOME", expand_user("~/.cache/huggingface/hub", env))
}

/// The first of `vars` that is set (taken as is: these libraries do not expand `~`), else
/// huggingface_hub's cache.
fn first_or_hub(vars: &[&'static str], env: EnvFn) -> (&'static str, String) {
    vars.iter()
        .find_map(|&var| env(var).map(|v| (var, v)))
        .unwrap_or_else(|| hub(env))
}

/// Where `loader` looks in `env`.
pub fn resolve(loader: Loader, env: EnvFn) -> Resolved {
    let (variable, cache) = match loader {
        Loader::HuggingfaceHub => hub(env),
        Loader::Transformers4 => first_or_hub(
            &[
                "TRANSFORMERS_CACHE",
                "PYTORCH_TRANSFORMERS_CACHE",
                "PYTORCH_PRETRAINED_BERT_CACHE",
            ],
            env,
        ),
        Loader::SentenceTransformers => first_or_hub(&["SENTENCE_TRANSFORMERS_HOME"], env),
    };
    Resolved {
        loader,
        variable,
        cache,
    }
}

/// Where every loader looks in `env`, in [`Loader::ALL`] order.
pub fn resolve_all(env: EnvFn) -> Vec<Resolved> {
    Loader::ALL.iter().map(|&l| resolve(l, env)).collect()
}

/// Whether huggingface_hub (and transformers, which asks it) runs offline: the first non-empty
/// of `HF_HUB_OFFLINE` and `TRANSFORMERS_OFFLINE` is `1`, `ON`, `YES` or `TRUE` (any case).
pub fn offline(env: EnvFn) -> bool {
    ["HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"]
        .iter()
        .find_map(|&var| env(var).filter(|v| !v.is_empty()))
        .is_some_and(|v| {
            ["1", "ON", "YES", "TRUE"]
                .iter()
                .any(|t| v.eq_ignore_ascii_case(t))
        })
}

/// An image config's `Env` list (`NAME=value`) as a lookup; the last entry of a name wins, as
/// container runtimes do. `home` is used when the list has no `HOME`.
pub fn image_env<'a>(
    vars: &'a [String],
    home: Option<&'a str>,
) -> impl Fn(&str) -> Option<String> + 'a {
    move |key: &str| {
        vars.iter()
            .rev()
            .find_map(|v| {
                v.split_once('=')
                    .filter(|(k, _)| *k == key)
                    .map(|(_, val)| val.to_owned())
            })
            .or_else(|| (key == "HOME").then(|| home.map(str::to_owned)).flatten())
    }
}

/// `HOME` of an image's `User` when its `Env` does not set one: `/root` for root (empty,
/// `root`, `0`, with any group), else unknown (it would come from the image's `/etc/passwd`).
pub fn default_home(user: &str) -> Option<&'static str> {
    let name = user.split(':').next().unwrap_or_default();
    matches!(name, "" | "root" | "0").then_some("/root")
}

/// One base-image variable `bake` pointed at the baked cache.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Correction {
    /// The variable.
    pub variable: String,
    /// Its value in the base image.
    pub old: String,
    /// The baked cache it now names.
    pub new: String,
}

impl std::fmt::Display for Correction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the base image sets {}={}, which sends loaders away from the baked cache; it is now {}",
            self.variable, self.old, self.new
        )
    }
}

/// Points every [`REDIRECTS`] entry of `vars` (`NAME=value`) that names another directory than
/// `hub_cache` at it, in place (same position, never duplicated). Returns one correction per
/// variable, with the value that was in effect (the last one).
pub fn correct(vars: &mut [String], hub_cache: &str) -> Vec<Correction> {
    let mut out: Vec<Correction> = Vec::new();
    for entry in vars.iter_mut() {
        let Some((name, value)) = entry.split_once('=') else {
            continue;
        };
        let Some(&var) = REDIRECTS.iter().find(|&&v| v == name) else {
            continue;
        };
        if same_dir(value, hub_cache) {
            continue;
        }
        let old = value.to_owned();
        *entry = format!("{var}={hub_cache}");
        match out.iter_mut().find(|c| c.variable == var) {
            Some(c) => c.old = old,
            None => out.push(Correction {
                variable: var.to_owned(),
                old,
                new: hub_cache.to_owned(),
            }),
        }
    }
    out
}

/// Two absolute paths naming the same directory, trailing `/` aside.
pub fn same_dir(a: &str, b: &str) -> bool {
    !a.is_empty() && a.trim_end_matches('/') == b.trim_end_matches('/')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::env_of;

    fn at(loader: Loader, pairs: &[(&str, &str)]) -> (&'static str, String) {
        let r = resolve(loader, &env_of(pairs));
        (r.variable, r.cache)
    }

    const ALL_HUB: &[(&str, &str)] = &[
        ("HF_HUB_CACHE", "/a"),
        ("HUGGINGFACE_HUB_CACHE", "/b"),
        ("HF_HOME", "/c"),
        ("XDG_CACHE_HOME", "/d"),
        ("HOME", "/e"),
    ];

    #[test]
    fn hub_precedence_each_step() {
        let h = Loader::HuggingfaceHub;
        assert_eq!(at(h, ALL_HUB), ("HF_HUB_CACHE", "/a".into()));
        assert_eq!(at(h, &ALL_HUB[1..]), ("HUGGINGFACE_HUB_CACHE", "/b".into()));
        assert_eq!(at(h, &ALL_HUB[2..]), ("HF_HOME", "/c/hub".into()));
        assert_eq!(
            at(h, &ALL_HUB[3..]),
            ("XDG_CACHE_HOME", "/d/huggingface/hub".into())
        );
        assert_eq!(
            at(h, &ALL_HUB[4..]),
            ("HOME", "/e/.cache/huggingface/hub".into())
        );
        assert_eq!(at(h, &[]), ("HOME", "~/.cache/huggingface/hub".into()));
    }

    #[test]
    fn hub_expands_tilde_and_keeps_empty_values() {
        let h = Loader::HuggingfaceHub;
        let home = ("HOME", "/home/u/");
        assert_eq!(
            at(h, &[("HF_HUB_CACHE", "~/c"), home]),
            ("HF_HUB_CACHE", "/home/u/c".into())
        );
        assert_eq!(at(h, &[("HUGGINGFACE_HUB_CACHE", "~"), home]).1, "/home/u");
        assert_eq!(at(h, &[("HF_HOME", "~/h"), home]).1, "/home/u/h/hub");
        assert_eq!(at(h, &[("HF_HOME", "~user/h"), home]).1, "~user/h/hub");
        // Python's os.getenv returns "" for a variable set empty: it wins, naming the cwd.
        assert_eq!(
            at(h, &[("HF_HUB_CACHE", ""), ("HF_HOME", "/c")]),
            ("HF_HUB_CACHE", String::new())
        );
    }

    #[test]
    fn transformers_precedence_each_step() {
        let t = Loader::Transformers4;
        let all = [
            ("TRANSFORMERS_CACHE", "/t"),
            ("PYTORCH_TRANSFORMERS_CACHE", "/p"),
            ("PYTORCH_PRETRAINED_BERT_CACHE", "/b"),
            ("HF_HUB_CACHE", "/h"),
        ];
        assert_eq!(at(t, &all), ("TRANSFORMERS_CACHE", "/t".into()));
        assert_eq!(
            at(t, &all[1..]),
            ("PYTORCH_TRANSFORMERS_CACHE", "/p".into())
        );
        assert_eq!(
            at(t, &all[2..]),
            ("PYTORCH_PRETRAINED_BERT_CACHE", "/b".into())
        );
        assert_eq!(at(t, &all[3..]), ("HF_HUB_CACHE", "/h".into()));
        assert_eq!(at(t, &[("HF_HOME", "/x")]), ("HF_HOME", "/x/hub".into()));
    }

    #[test]
    fn sentence_transformers_home_then_hub() {
        let s = Loader::SentenceTransformers;
        assert_eq!(
            at(
                s,
                &[("SENTENCE_TRANSFORMERS_HOME", "/s"), ("HF_HUB_CACHE", "/h")]
            ),
            ("SENTENCE_TRANSFORMERS_HOME", "/s".into())
        );
        assert_eq!(
            at(s, &[("HUGGINGFACE_HUB_CACHE", "/data"), ("HF_HOME", "/x")]),
            ("HUGGINGFACE_HUB_CACHE", "/data".into())
        );
    }

    #[test]
    fn offline_switches() {
        let off = |pairs: &[(&str, &str)]| offline(&env_of(pairs));
        assert!(!off(&[]));
        for v in ["1", "on", "Yes", "TRUE"] {
            assert!(off(&[("HF_HUB_OFFLINE", v)]), "{v}");
            assert!(off(&[("TRANSFORMERS_OFFLINE", v)]), "{v}");
        }
        assert!(!off(&[("HF_HUB_OFFLINE", "0")]));
        assert!(!off(&[("HF_HUB_OFFLINE", "2")]));
        // HF_HUB_OFFLINE, when non-empty, decides alone; an empty one defers.
        assert!(!off(&[
            ("HF_HUB_OFFLINE", "0"),
            ("TRANSFORMERS_OFFLINE", "1")
        ]));
        assert!(off(&[
            ("HF_HUB_OFFLINE", "1"),
            ("TRANSFORMERS_OFFLINE", "0")
        ]));
        assert!(off(&[
            ("HF_HUB_OFFLINE", ""),
            ("TRANSFORMERS_OFFLINE", "1")
        ]));
    }

    #[test]
    fn image_env_last_entry_wins_and_home_defaults() {
        let vars: Vec<String> = ["A=1", "B=x=y", "A=2", "NOEQUALS"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        let env = image_env(&vars, Some("/root"));
        assert_eq!(env("A").as_deref(), Some("2"));
        assert_eq!(env("B").as_deref(), Some("x=y"));
        assert_eq!(env("NOEQUALS"), None);
        assert_eq!(env("HOME").as_deref(), Some("/root"));
        let with_home = vec!["HOME=/home/app".to_owned()];
        assert_eq!(
            image_env(&with_home, Some("/root"))("HOME").as_deref(),
            Some("/home/app")
        );
        assert_eq!(default_home(""), Some("/root"));
        assert_eq!(default_home("0:0"), Some("/root"));
        assert_eq!(default_home("root"), Some("/root"));
        assert_eq!(default_home("1000"), None);
    }

    #[test]
    fn correct_replaces_in_place_once_per_variable() {
        let mut vars: Vec<String> = [
            "PATH=/bin",
            "HUGGINGFACE_HUB_CACHE=/data",
            "HF_HUB_CACHE=/srv/hub/",
            "TRANSFORMERS_CACHE=/x",
            "TRANSFORMERS_CACHE=/y",
            "SENTENCE_TRANSFORMERS_HOME=/st",
            "HF_HOME=/old",
            "XDG_CACHE_HOME=/xdg",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        let fixes = correct(&mut vars, "/srv/hub");
        assert_eq!(
            vars,
            [
                "PATH=/bin",
                "HUGGINGFACE_HUB_CACHE=/srv/hub",
                "HF_HUB_CACHE=/srv/hub/",
                "TRANSFORMERS_CACHE=/srv/hub",
                "TRANSFORMERS_CACHE=/srv/hub",
                "SENTENCE_TRANSFORMERS_HOME=/srv/hub",
                "HF_HOME=/old",
                "XDG_CACHE_HOME=/xdg",
            ]
        );
        let names: Vec<(&str, &str)> = fixes
            .iter()
            .map(|c| (c.variable.as_str(), c.old.as_str()))
            .collect();
        assert_eq!(
            names,
            [
                ("HUGGINGFACE_HUB_CACHE", "/data"),
                ("TRANSFORMERS_CACHE", "/y"),
                ("SENTENCE_TRANSFORMERS_HOME", "/st"),
            ]
        );
        let mut plain = vec!["PATH=/bin".to_owned(), "HF_HOME=/old".to_owned()];
        assert!(correct(&mut plain, "/srv/hub").is_empty());
        assert_eq!(plain, ["PATH=/bin", "HF_HOME=/old"]);
    }

    #[test]
    fn after_correction_every_loader_finds_the_baked_cache() {
        let mut vars: Vec<String> = [
            "HUGGINGFACE_HUB_CACHE=/data",
            "PYTORCH_PRETRAINED_BERT_CACHE=/bert",
            "SENTENCE_TRANSFORMERS_HOME=~/st",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        correct(&mut vars, "/opt/hf/hub");
        vars.push("HF_HOME=/opt/hf".to_owned());
        let env = image_env(&vars, Some("/root"));
        for r in resolve_all(&env) {
            assert_eq!(r.cache, "/opt/hf/hub", "{r:?}");
        }
    }
}
