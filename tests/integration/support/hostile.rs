//! Helpers for the hostile-input tests: run the binary with its own peak memory and wall time
//! measured (that one child's VmHWM, so neither this test process nor other tests' processes
//! ever count), a bounded wait that kills a command that hangs, and a before/after snapshot of
//! a folder tree to prove a command changed nothing outside the folders it owns.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// What one measured run did.
#[derive(Debug)]
pub struct Measured {
    /// Exit code (-1 when killed by a signal).
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    /// Peak resident memory of the child, in bytes.
    pub peak_rss: u64,
    /// Wall time until it exited (or was killed).
    pub wall: Duration,
    /// True when it ran past the limit and was killed.
    pub killed: bool,
}

impl Measured {
    /// Asserts the promise every hostile case keeps: a clear error (exit 1 to 3), in time.
    #[track_caller]
    pub fn assert_clean_failure(&self, within: Duration) -> &Self {
        assert!(
            !self.killed && self.wall < within,
            "ran {:?} (limit {within:?}); killed: {}\n--- stderr\n{}",
            self.wall,
            self.killed,
            self.stderr
        );
        assert!(
            (1..=3).contains(&self.code),
            "exit code {} (wanted 1-3)\n--- stdout\n{}\n--- stderr\n{}",
            self.code,
            self.stdout,
            self.stderr
        );
        assert!(
            !self.stderr.contains("panicked"),
            "the binary panicked:\n{}",
            self.stderr
        );
        self
    }

    /// Asserts the child's peak resident memory stayed under `mib` MiB.
    #[track_caller]
    pub fn assert_peak_under_mib(&self, mib: u64) -> &Self {
        assert!(
            self.peak_rss < mib << 20,
            "peak memory {} MiB, limit {mib} MiB\n--- stderr\n{}",
            self.peak_rss >> 20,
            self.stderr
        );
        self
    }
}

/// Runs `cmd` to completion or until `limit`, measuring the child's own peak memory.
// The child is reaped by wait4 below (which std's Child cannot do while reporting rusage).
#[allow(clippy::zombie_processes)]
pub fn run_measured(cmd: &mut Command, limit: Duration) -> Measured {
    let dir = tempfile::tempdir().expect("tempdir");
    let (out_path, err_path) = (dir.path().join("out"), dir.path().join("err"));
    // Reaped below with wait4 (which also gives the exit status without std's bookkeeping).
    #[allow(clippy::zombie_processes)]
    let child = cmd
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).expect("stdout file"))
        .stderr(std::fs::File::create(&err_path).expect("stderr file"))
        .spawn()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let pid = child.id() as libc::pid_t;
    let start = Instant::now();
    let mut killed = false;
    // Not wait4's ru_maxrss: Linux folds the parent's memory at exec time into it (the child
    // starts as a vfork of this test process), so a large test process would be blamed on the
    // child. VmHWM is the high-water mark of the child's own address space since exec; it is
    // sampled until the child exits (missing at most the last few milliseconds).
    let mut peak_rss = 0;
    let status = loop {
        peak_rss = peak_rss.max(vm_hwm(pid).unwrap_or(0));
        let mut status = 0;
        // SAFETY: a zeroed rusage is a valid value for wait4 to fill in.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: pid is our own child, status and usage point to live locals.
        let r = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
        if r == pid {
            break status;
        }
        assert!(r == 0, "wait4: {}", std::io::Error::last_os_error());
        if !killed && start.elapsed() > limit {
            // SAFETY: sending a signal to our own, not yet reaped child.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            killed = true;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let wall = start.elapsed();
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        -1
    };
    let read =
        |p: &Path| String::from_utf8_lossy(&std::fs::read(p).unwrap_or_default()).into_owned();
    Measured {
        code,
        stdout: read(&out_path),
        stderr: read(&err_path),
        peak_rss,
        wall,
        killed,
    }
}

/// The peak resident memory of process `pid` since its last exec (`VmHWM`), in bytes.
fn vm_hwm(pid: libc::pid_t) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line["VmHWM:".len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// One entry of a tree snapshot: its kind, size, mode, mtime, inode and (for symlinks) target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryState {
    pub kind: &'static str,
    pub len: u64,
    pub mode: u32,
    pub mtime_ns: i128,
    pub ino: u64,
    pub link: Option<PathBuf>,
}

/// Every entry under `root` (not following symlinks), by path relative to `root`.
pub fn snapshot(root: &Path) -> BTreeMap<PathBuf, EntryState> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, EntryState>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let path = e.path();
            let Ok(m) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            let ft = m.file_type();
            let kind = if ft.is_symlink() {
                "symlink"
            } else if ft.is_dir() {
                "dir"
            } else {
                "file"
            };
            let rel = path.strip_prefix(root).unwrap_or(&path).to_path_buf();
            out.insert(
                rel,
                EntryState {
                    kind,
                    len: if ft.is_dir() { 0 } else { m.len() },
                    mode: m.mode(),
                    mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
                    ino: m.ino(),
                    link: std::fs::read_link(&path).ok(),
                },
            );
            if ft.is_dir() {
                walk(root, &path, out);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// Panics, listing the differences, unless `before` and `after` hold the same entries.
#[track_caller]
pub fn assert_unchanged(
    what: &str,
    before: &BTreeMap<PathBuf, EntryState>,
    after: &BTreeMap<PathBuf, EntryState>,
) {
    let mut diffs = Vec::new();
    for (p, b) in before {
        match after.get(p) {
            None => diffs.push(format!("deleted: {}", p.display())),
            Some(a) if a != b => diffs.push(format!("changed: {} ({b:?} -> {a:?})", p.display())),
            _ => {}
        }
    }
    for p in after.keys().filter(|p| !before.contains_key(*p)) {
        diffs.push(format!("created: {}", p.display()));
    }
    assert!(
        diffs.is_empty(),
        "{what} changed outside the folders the command owns:\n  {}",
        diffs.join("\n  ")
    );
}
