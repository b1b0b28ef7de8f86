"""Shared helpers of the scripts/bench-* benchmarks: the synthetic repo, page-cache warming,
timing with each program's own peak RSS (GNU time), venvs."""
import json, os, shutil, socket, subprocess, sys, tempfile, time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET = ROOT / "target"
# Where cargo puts the binaries: $CARGO_TARGET_DIR when set (venvs and bench data stay in TARGET).
BUILD = Path(os.environ.get("CARGO_TARGET_DIR", TARGET))
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


def gnu_time():
    """GNU time (`/usr/bin/time`, Debian package `time`), installed with apt when missing."""
    path = shutil.which("time", path="/usr/bin:/bin")
    if path:
        return path
    print("==> installing time (apt), for true peak RSS figures", flush=True)
    r = subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", "time"], capture_output=True)
    path = shutil.which("time", path="/usr/bin:/bin")
    if r.returncode != 0 or not path:
        sys.exit("GNU time is needed for peak RSS figures: apt-get install -y time")
    return path


def measure(argv_list, env, shell=False):
    """Runs commands one after the other; returns (wall seconds, peak RSS KiB of any of them).

    The peak is each program's own high-water mark, taken by GNU time (`time -f %M`), which
    forks the program from its own small process and reports that child's `wait4` ru_maxrss.
    `wait4` on a child forked (or vforked, as subprocess and posix_spawn do) from this harness
    would not do: Linux keeps the high-water mark of the memory a process had before `exec` in
    its ru_maxrss, so every program smaller than the harness showed the harness's own ~41 MiB.
    Checked against programs that print their own VmHWM (/proc/self/status) before exiting:
    GNU time matched it within 0.2 MiB; subprocess/posix_spawn + wait4 reported the harness's
    49 MiB for a 14 MiB program; busybox `time` reports four times the figure (it takes KiB for
    pages). A shell command's figure is its largest process (`time` reports the maximum over the
    shell and the children it waited for), not their sum."""
    timer = gnu_time()
    start = time.perf_counter()
    peak = 0
    for argv in argv_list:
        with tempfile.NamedTemporaryFile(mode="r", prefix="bench-rss-") as out:
            cmd = ["/bin/sh", "-c", argv] if shell else list(argv)
            p = subprocess.run([timer, "-f", "%M", "-o", out.name, *cmd], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            if p.returncode != 0:
                err = p.stderr.decode(errors="replace")
                raise RuntimeError(f"{argv if shell else argv[0]} failed:\n{err[-3000:]}")
            # The last line is the figure (GNU time writes a status line first on failure).
            peak = max(peak, int(out.read().split()[-1]))
    return time.perf_counter() - start, peak
