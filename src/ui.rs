//! Terminal output shared by all commands: Cargo-style status lines on stderr, a spinner on a
//! TTY, nothing but JSON on stdout with `--json`, and human-readable sizes.

use std::io::IsTerminal;
use std::path::Path;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

/// How the user asked output to look.
#[derive(Debug, Clone, Copy, Default)]
pub struct Ui {
    /// Machine-readable JSON on stdout.
    pub json: bool,
    /// Only errors.
    pub quiet: bool,
    /// Whether stderr is a terminal (spinners, colour).
    pub tty: bool,
    /// Whether to colour the status verb (a TTY and no `NO_COLOR`).
    pub color: bool,
}

impl Ui {
    /// Detects the terminal and `NO_COLOR`.
    pub fn new(json: bool, quiet: bool) -> Self {
        let tty = std::io::stderr().is_terminal();
        let color = tty && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
        Ui {
            json,
            quiet,
            tty,
            color,
        }
    }

    /// Prints `   Verb message` to stderr (the verb right-aligned, green on a terminal).
    pub fn status(&self, verb: &str, message: impl std::fmt::Display) {
        if self.quiet {
            return;
        }
        let line = self.status_line(verb, message);
        eprintln!("{line}");
    }

    /// The text of a status line, for printing above a spinner.
    pub fn status_line(&self, verb: &str, message: impl std::fmt::Display) -> String {
        if self.color {
            format!("\x1b[1;32m{verb:>12}\x1b[0m {message}")
        } else {
            format!("{verb:>12} {message}")
        }
    }

    /// A spinner on a terminal; hidden otherwise (and with `--quiet`).
    pub fn spinner(&self, message: impl Into<String>) -> ProgressBar {
        if !self.tty || self.quiet {
            return ProgressBar::hidden();
        }
        let pb = ProgressBar::new_spinner();
        pb.set_style(
            ProgressStyle::with_template("{spinner:.green} {msg} [{elapsed}]")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        pb.set_message(message.into());
        pb.enable_steady_tick(Duration::from_millis(100));
        pb
    }
}

/// A byte progress bar (elapsed, bar, bytes done of `bytes`, rate, ETA) for a terminal, or
/// `None` where there is no terminal or with `--quiet`: callers then print status lines.
pub fn byte_bar(ui: &Ui, bytes: u64) -> Option<ProgressBar> {
    if !ui.tty || ui.quiet {
        return None;
    }
    let bar = ProgressBar::new(bytes);
    bar.set_style(
        ProgressStyle::with_template("{spinner:.green} [{elapsed_precise}] {wide_bar:.cyan/blue} {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    Some(bar)
}

/// Prints a status line above `bar` when there is one, else plainly (nothing with `--quiet`).
pub fn line_above(ui: &Ui, bar: Option<&ProgressBar>, line: &str) {
    match bar {
        Some(bar) => bar.suspend(|| eprintln!("{line}")),
        None if !ui.quiet => eprintln!("{line}"),
        None => {}
    }
}

/// A path as people want to read it: relative to the current folder when it is inside it.
pub fn display_path(path: &Path) -> String {
    std::env::current_dir()
        .ok()
        .and_then(|cwd| path.strip_prefix(cwd).ok().map(Path::to_path_buf))
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or_else(|| path.to_path_buf())
        .display()
        .to_string()
}

/// Makes a text that came from outside (a plugin, the Hub: file names, error messages) safe to
/// print: control characters (newlines, escape sequences) are shown escaped, and it is cut to
/// 1 KiB, so the text can neither forge log lines nor drive the terminal.
pub fn clean(text: &str) -> String {
    const MAX: usize = 1024;
    let mut out = String::new();
    for c in text.chars() {
        if out.len() >= MAX {
            out.push('…');
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// Sizes in decimal units, as huggingface_hub prints them (`1.2 GB`).
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["kB", "MB", "GB", "TB", "PB"];
    if bytes < 1000 {
        return format!("{bytes} B");
    }
    let mut v = bytes as f64 / 1000.0;
    let mut unit = 0;
    while v >= 1000.0 && unit < UNITS.len() - 1 {
        v /= 1000.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// The first 12 characters of a commit or digest, as people quote them.
pub fn short(commit: &str) -> &str {
    &commit[..commit.len().min(12)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(human_size(999), "999 B");
        assert_eq!(human_size(1_500), "1.5 kB");
        assert_eq!(human_size(2_300_000_000), "2.3 GB");
    }

    #[test]
    fn outside_text_is_escaped_and_cut() {
        assert_eq!(clean("ok\nFinished \u{1b}[2J"), "ok\\nFinished \\u{1b}[2J");
        assert_eq!(clean("a\u{7}\u{9b}b"), "a\\u{7}\\u{9b}b");
        assert!(clean(&"x".repeat(5000)).chars().count() <= 1025);
    }
}
