//! Plugin host latencies, run by `scripts/bench-plugins` (plain `main`, no harness): what a
//! mirror call costs (fresh store + instance + `resolve`, the way fetch calls plugins), and
//! how long a command waits before its first plugin call with and without the compile cache.
//!
//! Usage: `cargo bench --bench plugins -- <mirror_url_template.wasm> [rounds]`.

use std::time::{Duration, Instant};

use modelbake::plugin::{FileEntry, PluginConfig, PluginHost, RepoRef, WitRepoKind};
use sha2::{Digest, Sha256};

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn files(n: usize) -> Vec<FileEntry> {
    (0..n)
        .map(|i| FileEntry {
            path: format!("shards/model-{i:05}.safetensors"),
            size: 1 << 30,
            sha256: Some(format!("{i:064x}")),
            blob: format!("{i:040x}"),
        })
        .collect()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let path = args
        .first()
        .ok_or("usage: plugins <mirror_url_template.wasm> [rounds]")?;
    let rounds: usize = args.get(1).map_or(Ok(2000), |s| s.parse())?;
    let bytes = std::fs::read(path)?;
    let sha = hex::encode(Sha256::digest(&bytes));
    let cache = tempfile::tempdir()?;
    let table: toml::Table = toml::from_str("base = \"https://hf-mirror.example\"")?;
    let config = PluginConfig::from_table(&table);
    let repo = RepoRef {
        kind: WitRepoKind::Model,
        id: "acme/tiny".into(),
        revision: "main".into(),
        commit: "0".repeat(40),
    };

    // Cold start without a cache: engine + compile + first call.
    let mut uncached = Vec::new();
    for _ in 0..10 {
        let t = Instant::now();
        let host = PluginHost::new(None)?;
        let p = host.load("bench", &bytes, &sha)?;
        p.resolve(&config, &repo, &files(1))?;
        uncached.push(t.elapsed());
    }
    // Fill the cache once, then cold start from it: new engine, load the compiled file, call.
    PluginHost::new(Some(cache.path().to_owned()))?.load("bench", &bytes, &sha)?;
    let mut cached = Vec::new();
    for _ in 0..200 {
        let t = Instant::now();
        let host = PluginHost::new(Some(cache.path().to_owned()))?;
        let p = host.load("bench", &bytes, &sha)?;
        p.resolve(&config, &repo, &files(1))?;
        cached.push(t.elapsed());
    }

    let host = PluginHost::new(Some(cache.path().to_owned()))?;
    let p = host.load("bench", &bytes, &sha)?;
    let per_call = |n: usize| -> Result<Duration, Box<dyn std::error::Error>> {
        let input = files(n);
        let mut v = Vec::with_capacity(rounds);
        for _ in 0..rounds {
            let t = Instant::now();
            let (lists, _) = p.resolve(&config, &repo, &input)?;
            v.push(t.elapsed());
            assert_eq!(lists.len(), n);
        }
        Ok(median(v))
    };
    // The floor of a call: a fresh store and instance and a call that does nothing.
    let mut floor = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let t = Instant::now();
        p.describe()?;
        floor.push(t.elapsed());
    }
    let floor = median(floor);
    if std::env::var_os("BENCH_PLUGINS_FLOOR_ONLY").is_some() {
        println!("floor {:.1} µs", floor.as_secs_f64() * 1e6);
        return Ok(());
    }
    let one = per_call(1)?;
    let twenty = per_call(20)?;
    let thousand = per_call(1000)?;

    let (un, ca) = (median(uncached), median(cached));
    println!("plugin: {path} ({} bytes)", bytes.len());
    println!("| measurement | median |");
    println!("|---|---|");
    println!(
        "| cold start, no compile cache (engine + compile + 1 call) | {:.1} ms |",
        un.as_secs_f64() * 1e3
    );
    println!(
        "| cold start, compile cache hit (engine + load + 1 call) | {:.2} ms |",
        ca.as_secs_f64() * 1e3
    );
    println!(
        "| fresh store + instance + `describe` (the floor of any call) | {:.1} µs |",
        floor.as_secs_f64() * 1e6
    );
    println!(
        "| mirror call, 1 file (new store + instance + resolve + host checks) | {:.1} µs |",
        one.as_secs_f64() * 1e6
    );
    println!(
        "| mirror call, 20 files | {:.1} µs |",
        twenty.as_secs_f64() * 1e6
    );
    println!(
        "| mirror call, 1000 files | {:.2} ms ({:.2} µs/file) |",
        thousand.as_secs_f64() * 1e3,
        thousand.as_secs_f64() * 1e3
    );
    println!();
    println!(
        "ratio cold/cached start: {:.0}x",
        un.as_secs_f64() / ca.as_secs_f64()
    );
    println!(
        "targets: per-call overhead (fresh instance + no-op call) < 50 µs: {} ({:.1} µs; a whole 1-file resolve {:.1} µs); cached load < 20 ms: {} ({:.2} ms)",
        if floor < Duration::from_micros(50) {
            "met"
        } else {
            "NOT met"
        },
        floor.as_secs_f64() * 1e6,
        one.as_secs_f64() * 1e6,
        if ca < Duration::from_millis(20) {
            "met"
        } else {
            "NOT met"
        },
        ca.as_secs_f64() * 1e3
    );
    Ok(())
}
