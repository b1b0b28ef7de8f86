"""`scripts/bench-fetch --xet`: modelbake against huggingface_hub 2.x with hf_xet on the same
Xet test bed — the reference CAS (`local_cas_server`, built by scripts/setup-xet) filled by
the reference uploader (hf_xet), behind the Hub emulator in Xet mode.

Three measurements, contenders interleaved, each run into a fresh folder, medians:
  big     1 GiB in 4 files          wall, MB/s, peak RSS (the process's own)
  small   2,000 files of ~100 KiB   the same
  update  a 1 GiB checkpoint whose next revision changed 10% of its tensors: the bytes each
          client fetches from the CAS for the update, with revision one already local
          (modelbake: in its store; huggingface_hub: in its cache, default settings)
plus, labelled as the fallback path, both clients over plain HTTP (--no-xet /
HF_HUB_DISABLE_XET=1) on the big set.

modelbake runs `fetch` + `export` (a huggingface_hub cache, as snapshot_download makes) with
its defaults: every byte checked against the lock's sha256 and fsynced before it is visible.
hf_xet runs with HF_XET_HIGH_PERFORMANCE=1 for throughput and defaults for the update.
"""
import json, os, shutil, signal, statistics, subprocess, time
import urllib.request
from pathlib import Path

from bench_common import BENCH, ROOT, TARGET, free_port, make_repo, measure, sh, warm

TENSOR = 16 << 20


def make_small(repo, files):
    """`files` LFS-tracked (parquet) random files of 64–136 KiB in 20 folders. Kept."""
    repo.mkdir(parents=True, exist_ok=True)
    stamp = repo / ".count"
    if stamp.exists() and stamp.read_text() == str(files):
        return sum(p.stat().st_size for p in repo.rglob("*.parquet"))
    print(f"==> generating {files} small files", flush=True)
    with open("/dev/urandom", "rb") as r:
        for i in range(files):
            d = repo / f"part-{i % 20:02d}"
            d.mkdir(exist_ok=True)
            (d / f"shard-{i:05d}.parquet").write_bytes(r.read((64 << 10) + (i % 10) * (8 << 10)))
    stamp.write_text(str(files))
    return sum(p.stat().st_size for p in repo.rglob("*.parquet"))


def make_revisions(v1, v2, size):
    """A checkpoint of `size` bytes in 16 MiB "tensors" (revision one) and its next revision
    with every tenth tensor rewritten. Kept."""
    name = "model.safetensors"
    for d in (v1, v2):
        d.mkdir(parents=True, exist_ok=True)
    a, b = v1 / name, v2 / name
    if a.exists() and b.exists() and a.stat().st_size == size == b.stat().st_size:
        return size, changed_tensors(size)
    print(f"==> generating a {size >> 20} MiB checkpoint and its next revision", flush=True)
    with open("/dev/urandom", "rb") as r, open(a, "wb") as fa, open(b, "wb") as fb:
        for t in range(size // TENSOR):
            old = r.read(TENSOR)
            fa.write(old)
            fb.write(r.read(TENSOR) if t % 10 == 5 else old)
    return size, changed_tensors(size)


def changed_tensors(size):
    return len([t for t in range(size // TENSOR) if t % 10 == 5])


def upload(py, cas, paths, cache):
    """Uploads through hf_xet; returns {sha256: xet hash}. `cache` is the uploader's own cache,
    as new as the CAS: hf_xet keeps shards per endpoint URL, and a CAS on a port an earlier one
    had would otherwise inherit them, and never get the xorbs the uploader thinks it has."""
    env = dict(os.environ, HF_XET_CACHE=str(cache), HF_HOME=str(cache))
    out = subprocess.run([str(py), str(ROOT / "tests" / "xet" / "upload.py"), cas, *map(str, paths)],
                         check=True, capture_output=True, text=True, env=env).stdout
    return {v["sha256"]: v["hash"] for v in map(json.loads, out.splitlines())}


def cas_bytes(endpoint, reset=False):
    req = urllib.request.Request(f"{endpoint}/_emulator/cas-bytes", method="DELETE" if reset else "GET")
    with urllib.request.urlopen(req) as r:
        return json.load(r)["bytes"]


def run(args, mb, emulator_bin, py2):
    sh([str(ROOT / "scripts" / "setup-xet")])
    cas_bin = TARGET / "xet" / "bin" / "local_cas_server"
    big = BENCH / "xet-big"
    big_total = make_repo(big, args.xet_gib, 4)
    small = BENCH / "xet-small"
    small_total = make_small(small, args.small_files)
    v1, v2 = BENCH / "xet-update" / "r1", BENCH / "xet-update" / "r2"
    file_size, changed = make_revisions(v1, v2, int(args.xet_gib * (1 << 30)))

    work = BENCH / "xet-work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    procs = []
    try:
        port = free_port("127.0.0.1")
        cas_dir = work / "cas"
        procs.append(subprocess.Popen([str(cas_bin), "--host", "127.0.0.1", "-p", str(port), "-d", str(cas_dir)],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        cas = f"http://127.0.0.1:{port}"
        deadline = time.time() + 30
        while True:
            try:
                urllib.request.urlopen(f"{cas}/health").close()
                break
            except OSError:
                if time.time() > deadline:
                    raise SystemExit("local_cas_server did not start")
                time.sleep(0.1)
        print("==> uploading through hf_xet (the reference uploader)", flush=True)
        hashes, cache = {}, work / "uploader-cache"
        hashes.update(upload(py2, cas, sorted(p for p in big.iterdir() if p.is_file()), cache))
        hashes.update(upload(py2, cas, sorted(small.rglob("*.parquet")), cache))
        hashes.update(upload(py2, cas, [v1 / "model.safetensors"], cache))
        # Revision two by a separate upload, deduplicated against revision one's xorbs.
        hashes.update(upload(py2, cas, [v2 / "model.safetensors"], cache))
        (work / "hashes.json").write_text(json.dumps(hashes))
        em = subprocess.Popen([str(emulator_bin), "--model", f"acme/big={big}", "--dataset", f"acme/small={small}",
                               "--model", f"acme/update={v1}", "--model", f"acme/update={v2}",
                               "--xet-cas", cas, "--xet-hashes", str(work / "hashes.json")],
                              stdout=subprocess.PIPE, text=True)
        procs.append(em)
        endpoint = json.loads(em.stdout.readline())["endpoint"]
        return measure_all(args, mb, py2, endpoint, work, cas_dir,
                           {"big": big_total, "small": small_total}, file_size, changed)
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
            p.wait()


def measure_all(args, mb, py2, endpoint, work, cas_dir, totals, file_size, changed):
    base = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "MODELBAKE_"))}
    base.update(HF_ENDPOINT=endpoint, HF_HUB_DISABLE_PROGRESS_BARS="1", HF_HUB_DISABLE_TELEMETRY="1")
    projects = {}
    for name, toml in {"big": '[[model]]\nid = "acme/big"\n', "small": '[[dataset]]\nid = "acme/small"\n',
                       "r1": '[[model]]\nid = "acme/update"\nrevision = "r1"\n',
                       "r2": '[[model]]\nid = "acme/update"\nrevision = "r2"\n'}.items():
        proj = work / f"project-{name}"
        proj.mkdir()
        (proj / "models.toml").write_text(toml)
        sh([str(mb), "lock", "-q", "--manifest", str(proj / "models.toml"), "--endpoint", endpoint], env=base)
        projects[name] = proj / "models.toml"

    def snap(repo, kind="model", revision=None):
        rev = f", revision={revision!r}" if revision else ""
        return f"import sys; from huggingface_hub import snapshot_download as s; s({repo!r}, repo_type={kind!r}, cache_dir=sys.argv[1]{rev})"

    def contenders(set_name, out, plain=False):
        env = dict(base, HF_HOME=str(out / "home"))
        store, cache = out / "store", out / "hub"
        mf = ["--manifest", str(projects[set_name])]
        mine = [[str(mb), "fetch", "-q", *mf, "--store", str(store)] + (["--no-xet"] if plain else []),
                [str(mb), "export", "-q", *mf, "--store", str(store), "--hub-cache", str(cache)]]
        repo, kind = ("acme/big", "model") if set_name == "big" else ("acme/small", "dataset")
        theirs = [[str(py2), "-c", snap(repo, kind), str(cache)]]
        if plain:
            return {"modelbake --no-xet": (mine, env), "hf-2.x plain HTTP": (theirs, dict(env, HF_HUB_DISABLE_XET="1"))}
        return {"modelbake": (mine, env), "hf_xet": (theirs, dict(env, HF_XET_HIGH_PERFORMANCE="1"))}

    results = {}
    sets = [("big", False), ("small", False), ("big", True)]
    for r in range(args.rounds):
        for set_name, plain in sets:
            names = list(contenders(set_name, work, plain).keys())
            order = names[r % len(names):] + names[: r % len(names)]
            for name in order:
                out = work / "out"
                shutil.rmtree(out, ignore_errors=True)
                out.mkdir()
                subprocess.run(["sync"])
                warm(cas_dir)
                argv, env = contenders(set_name, out, plain)[name]
                wall, rss = measure(argv, env)
                key = (set_name, plain, name)
                results.setdefault(key, []).append((wall, rss))
                total = totals[set_name]
                print(f"    round {r + 1} {set_name:5s} {name:20s} {wall:7.2f} s  {total / wall / 1e6:7.0f} MB/s  peak RSS {rss / 1024:6.1f} MiB", flush=True)
        update_round(r, mb, py2, base, projects, work, cas_dir, endpoint, snap, results)
    return report(results, totals, file_size, changed, args)


def update_round(r, mb, py2, base, projects, work, cas_dir, endpoint, snap, results):
    """Revision one local, then the update to revision two: CAS bytes of the update."""
    for name in (["modelbake", "hf_xet"] if r % 2 == 0 else ["hf_xet", "modelbake"]):
        out = work / "out"
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir()
        env = dict(base, HF_HOME=str(out / "home"))
        store, cache = out / "store", out / "hub"
        if name == "modelbake":
            first = [[str(mb), "fetch", "-q", "--manifest", str(projects["r1"]), "--store", str(store)]]
            second = [[str(mb), "fetch", "-q", "--manifest", str(projects["r2"]), "--store", str(store)],
                      [str(mb), "export", "-q", "--manifest", str(projects["r2"]), "--store", str(store), "--hub-cache", str(cache)]]
        else:
            first = [[str(py2), "-c", snap("acme/update", revision="r1"), str(cache)]]
            second = [[str(py2), "-c", snap("acme/update", revision="r2"), str(cache)]]
        measure(first, env)
        cas_bytes(endpoint, reset=True)
        warm(cas_dir)
        wall, rss = measure(second, env)
        fetched = cas_bytes(endpoint)
        results.setdefault(("update", False, name), []).append((wall, rss, fetched))
        print(f"    round {r + 1} update {name:20s} {fetched / 1e6:9.1f} MB from the CAS  {wall:6.2f} s  peak RSS {rss / 1024:6.1f} MiB", flush=True)


def report(results, totals, file_size, changed, args):
    def med(key, i=0):
        return statistics.median(v[i] for v in results[key])

    def peak(key):
        return max(v[1] for v in results[key]) / 1024

    summary = {}
    print()
    print(f"Xet test bed: reference local_cas_server + hf_xet uploads, behind the Hub emulator; {args.rounds} rounds, medians")
    print(f"{'set':8s} {'contender':22s} {'wall s':>8s} {'MB/s':>8s} {'peak RSS MiB':>13s}")
    for label, set_name, plain in (("xet", "big", False), ("xet_small", "small", False), ("fallback", "big", True)):
        part = {}
        for (s, p, name) in results:
            if (s, p) != (set_name, plain):
                continue
            wall = med((s, p, name))
            part["modelbake" if name.startswith("modelbake") else ("hf_xet" if name == "hf_xet" else "huggingface_hub")] = {
                "wall_s": round(wall, 3), "mb_s": round(totals[set_name] / wall / 1e6, 1), "rss_mib": round(peak((s, p, name)), 1)}
            shown = "big (plain HTTP, the fallback path)" if plain else set_name
            print(f"{shown[:8]:8s} {name:22s} {wall:8.2f} {totals[set_name] / wall / 1e6:8.0f} {peak((s, p, name)):13.1f}")
        summary[label] = part
    for label, other in (("xet", "hf_xet"), ("xet_small", "hf_xet"), ("fallback", "huggingface_hub")):
        part = summary[label]
        if "modelbake" in part and other in part:
            part["ratio"] = round(part["modelbake"]["mb_s"] / part[other]["mb_s"], 2)
    upd = {"file_bytes": file_size, "changed_tensors": changed, "tensors": file_size // TENSOR,
           "modelbake_bytes": int(med(("update", False, "modelbake"), 2)),
           "hf_xet_bytes": int(med(("update", False, "hf_xet"), 2))}
    summary["update"] = upd
    print()
    for label, what in (("xet", f"{totals['big'] / 2**30:.1f} GiB in 4 files"), ("xet_small", f"{args.small_files} small files"),
                        ("fallback", "plain HTTP fallback")):
        if "ratio" in summary[label]:
            print(f"{what}: modelbake {summary[label]['ratio']:.2f}x the throughput of {'hf_xet' if label != 'fallback' else 'huggingface_hub 2.x plain HTTP'}")
    print(f"update ({changed} of {file_size // TENSOR} tensors changed): modelbake fetched {upd['modelbake_bytes'] / 1e6:.1f} MB "
          f"({100 * upd['modelbake_bytes'] / file_size:.1f}% of the file), hf_xet {upd['hf_xet_bytes'] / 1e6:.1f} MB "
          f"({100 * upd['hf_xet_bytes'] / file_size:.1f}%)")
    return summary
