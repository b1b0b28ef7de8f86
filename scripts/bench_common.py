"""Shared helpers of scripts/bench-fetch and scripts/bench-bake: the synthetic repo, page-cache
warming, timing with peak RSS, venvs."""
import json, os, socket, subprocess, sys, time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET = ROOT / "target"
BENCH = TARGET / "bench"


def sh(cmd, **kw):
    return subprocess.run(cmd, check=True, **kw)


def free_port(host):
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def venv(path, packages):
    py = path / "bin" / "python"
    stamp = path / ".packages"
    if py.exists() and stamp.exists() and stamp.read_text() == " ".join(packages):
        return py
    print(f"==> creating {path.relative_to(ROOT)}: {' '.join(packages)}", flush=True)
    sh([sys.executable, "-m", "venv", str(path)])
    sh([str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", *packages])
    stamp.write_text(" ".join(packages))
    return py


def make_repo(repo, gib, files):
    """A synthetic model repo: `files` random safetensors shards of `gib` GiB in all, plus small
    JSON/tokenizer files. Kept between runs."""
    repo.mkdir(parents=True, exist_ok=True)
    each = int(gib * (1 << 30)) // files
    for i in range(files):
        p = repo / f"model-{i + 1:05d}-of-{files:05d}.safetensors"
        if not p.exists() or p.stat().st_size != each:
            print(f"==> generating {p.name} ({each >> 20} MiB)", flush=True)
            with open(p, "wb") as f, open("/dev/urandom", "rb") as r:
                left = each
                while left:
                    n = min(left, 8 << 20)
                    f.write(r.read(n))
                    left -= n
    (repo / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": 1024}, indent=2) + "\n")
    (repo / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "PreTrainedTokenizerFast"}) + "\n")
    (repo / "tokenizer.json").write_text(json.dumps({"version": "1.0", "model": {"type": "WordLevel", "vocab": {f"w{i}": i for i in range(5000)}, "unk_token": "w0"}}) + "\n")
    return sum(p.stat().st_size for p in repo.iterdir())


def warm(path):
    """Re-reads files so that readers get them from the page cache, not the disk."""
    paths = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file() and not p.is_symlink()]
    for p in paths:
        with open(p, "rb") as f:
            while f.read(16 << 20):
                pass


def measure(argv_list, env, shell=False):
    """Runs commands one after the other; returns (wall seconds, peak RSS KiB of any of them)."""
    start = time.perf_counter()
    peak = 0
    for argv in argv_list:
        p = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, shell=shell)
        _, status, usage = os.wait4(p.pid, 0)
        err = p.stderr.read().decode(errors="replace")
        p.stderr.close()
        if os.waitstatus_to_exitcode(status) != 0:
            raise RuntimeError(f"{argv if shell else argv[0]} failed:\n{err[-3000:]}")
        peak = max(peak, usage.ru_maxrss)
    return time.perf_counter() - start, peak
