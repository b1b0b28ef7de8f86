//! Reading a lock table by table. A dataset at the Hub's 100,000-file limit has a lock of
//! about 19 MB; handing all of it to the TOML parser at once costs ten times that in tokens and
//! spans before the first file is built. The lock `modelbake lock` writes is a short preamble
//! (`version`) followed by `[[plugin]]`, `[[repo]]` and `[[repo.file]]` tables holding plain
//! key/value lines, so each table is parsed on its own, as it is read, and memory stays at the
//! size of the files it holds.
//!
//! Only text where that split is sure to mean what the whole document means takes this path:
//! no multi-line strings, no table header other than those three written exactly, no
//! `file` key inside a `[[repo]]` table, nothing but `version` before the first table. Anything
//! else (and any table that does not parse) returns `None`, and the caller parses the whole
//! text with the TOML parser, which gives the same result or the located error message.

use serde::Deserialize;

use super::{LockedFile, LockedPlugin, LockedRepo, Lockfile};

/// What a table header line starts.
#[derive(Clone, Copy)]
enum Table {
    /// The lines before the first header.
    Preamble,
    /// `[[plugin]]`.
    Plugin,
    /// `[[repo]]`.
    Repo,
    /// `[[repo.file]]`: a file of the last repo.
    File,
}

/// The only key the preamble may hold.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Preamble {
    version: u32,
}

/// The lock read from `lines`, table by table; `None` when the text is not in the shape this
/// path handles or a table does not parse (the caller then parses the whole text).
pub(super) fn parse<I, S>(lines: I) -> Option<Lockfile>
where
    I: IntoIterator<Item = std::io::Result<S>>,
    S: AsRef<str>,
{
    let mut lock = Lockfile {
        version: 0,
        plugins: Vec::new(),
        repos: Vec::new(),
    };
    let mut table = Table::Preamble;
    let mut chunk = String::new();
    for line in lines {
        let line = line.ok()?;
        let line = line.as_ref();
        let trimmed = line.trim();
        if trimmed.contains("\"\"\"") || trimmed.contains("'''") {
            return None;
        }
        if trimmed.starts_with('[') {
            let next = match trimmed {
                "[[plugin]]" => Table::Plugin,
                "[[repo]]" => Table::Repo,
                "[[repo.file]]" => Table::File,
                _ => return None,
            };
            add(&mut lock, table, &chunk)?;
            chunk.clear();
            table = next;
            continue;
        }
        if matches!(table, Table::Repo) && defines_file_key(trimmed) {
            return None;
        }
        chunk.push_str(line);
        chunk.push('\n');
    }
    add(&mut lock, table, &chunk)?;
    Some(lock)
}

/// True when a line of a `[[repo]]` table could define its `file` key (bare, quoted or
/// dotted), which the table-by-table reading cannot merge with `[[repo.file]]` tables.
fn defines_file_key(trimmed: &str) -> bool {
    trimmed.trim_start_matches(['"', '\'']).starts_with("file")
}

/// Parses one table's lines and adds what they hold to `lock`.
fn add(lock: &mut Lockfile, table: Table, chunk: &str) -> Option<()> {
    match table {
        Table::Preamble => lock.version = toml::from_str::<Preamble>(chunk).ok()?.version,
        Table::Plugin => lock
            .plugins
            .push(toml::from_str::<LockedPlugin>(chunk).ok()?),
        Table::Repo => lock.repos.push(toml::from_str::<LockedRepo>(chunk).ok()?),
        Table::File => lock
            .repos
            .last_mut()?
            .files
            .push(toml::from_str::<LockedFile>(chunk).ok()?),
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(text: &str) -> impl Iterator<Item = std::io::Result<&str>> {
        text.lines().map(Ok)
    }

    #[test]
    fn the_written_lock_reads_the_same_table_by_table() {
        let lock = super::super::tests::sample();
        let text = lock.to_toml();
        assert_eq!(parse(lines(&text)), Some(lock));
    }

    #[test]
    fn other_shapes_are_left_to_the_toml_parser() {
        let text = super::super::tests::sample().to_toml();
        for odd in [
            text.replacen("[[repo.file]]", "[[repo.file]] # comment", 1),
            text.replacen("[[repo]]", "[repo]", 1),
            text.replacen("version = 1", "version = 1\nextra = \"\"\"x\"\"\"", 1),
            text.replacen("complete = ", "file = []\ncomplete = ", 1),
            text.replacen("version = 1", "version = 1\nrepo = []", 1),
            text.replacen("[[repo]]", "[[repo.file]]\npath = \"x\"\n[[repo]]", 1),
            text.replacen("size = 2", "size = \"2\"", 1),
        ] {
            assert_eq!(parse(lines(&odd)), None, "{odd}");
        }
    }
}
