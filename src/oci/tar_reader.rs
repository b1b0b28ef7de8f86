//! Reading a layer blob of any image: its tar stream decompressed as its magic bytes say
//! (plain, gzip or zstd) while its raw bytes are hashed ([`decode`]), and its entries as
//! [`TarEntry`]s ([`read_entries`], for `doctor`). The writing side is [`super::tar`].

use std::fs::File;
use std::io::{self, BufReader, Read};

use crate::hash::HashingReader;

/// The raw bytes of a layer blob: the magic bytes already read, then the rest, hashed.
pub type Raw = io::Chain<io::Cursor<Vec<u8>>, HashingReader<BufReader<File>>>;

/// A layer's tar stream, decompressed as its magic bytes say, with the raw reader recoverable.
pub enum Decoded {
    /// An uncompressed tar.
    Plain(Raw),
    /// A gzip stream.
    Gzip(flate2::read::MultiGzDecoder<Raw>),
    /// A zstd stream.
    Zstd(zstd::stream::read::Decoder<'static, BufReader<Raw>>),
}

impl Decoded {
    /// The raw reader, to finish hashing the blob after the tar was read.
    pub fn into_raw(self) -> Raw {
        match self {
            Decoded::Plain(r) => r,
            Decoded::Gzip(d) => d.into_inner(),
            Decoded::Zstd(d) => d.finish().into_inner(),
        }
    }
}

impl Read for Decoded {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Decoded::Plain(r) => r.read(buf),
            Decoded::Gzip(d) => d.read(buf),
            Decoded::Zstd(d) => d.read(buf),
        }
    }
}

/// A layer blob's tar stream, decompressed as its magic bytes say, its raw bytes hashed. The
/// caller opens the blob (a layout's blobs without following symlinks, their size checked:
/// [`super::source::open_sized`]).
pub fn decode(file: File) -> io::Result<Decoded> {
    let mut file = HashingReader::new(BufReader::with_capacity(1 << 20, file));
    let mut magic = [0u8; 4];
    let n = file.read(&mut magic)?;
    let blob = io::Cursor::new(magic[..n].to_vec()).chain(file);
    Ok(match magic {
        [0x1f, 0x8b, ..] => Decoded::Gzip(flate2::read::MultiGzDecoder::new(blob)),
        [0x28, 0xb5, 0x2f, 0xfd] => Decoded::Zstd(zstd::stream::read::Decoder::new(blob)?),
        _ => Decoded::Plain(blob),
    })
}

/// One entry of a layer, as `doctor` reads an image's tree.
#[derive(Debug, Clone)]
pub struct TarEntry {
    /// Path without a leading `/` or trailing `/`.
    pub path: String,
    /// Directory, symlink (its target) or anything else.
    pub kind: TarKind,
    /// Permission bits.
    pub mode: u32,
    /// Owner.
    pub uid: u64,
    /// Group.
    pub gid: u64,
    /// The content, for the entries `keep` asked for.
    pub content: Option<Vec<u8>>,
}

/// What a [`TarEntry`] is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TarKind {
    /// A directory.
    Dir,
    /// A symbolic link and its target.
    Symlink(String),
    /// A file (or any other entry).
    File,
}

/// Every entry of a layer blob (plain, gzip or zstd), with the content of those whose path
/// `keep` accepts (at most 64 KiB each).
pub fn read_entries(file: File, keep: &dyn Fn(&str) -> bool) -> io::Result<Vec<TarEntry>> {
    let mut archive = tar::Archive::new(decode(file)?);
    let mut out = Vec::new();
    for entry in archive.entries()? {
        let mut entry = entry?;
        let raw = entry.path()?.to_string_lossy().into_owned();
        let path = raw
            .trim_start_matches("./")
            .trim_start_matches('/')
            .trim_end_matches('/')
            .to_owned();
        let header = entry.header();
        let (mode, uid, gid) = (header.mode()? & 0o7777, header.uid()?, header.gid()?);
        let kind = match header.entry_type() {
            t if t.is_dir() => TarKind::Dir,
            t if t.is_symlink() => TarKind::Symlink(
                entry
                    .link_name()?
                    .map(|l| l.to_string_lossy().into_owned())
                    .unwrap_or_default(),
            ),
            _ => TarKind::File,
        };
        let content = if kind == TarKind::File && keep(&path) {
            let mut got = Vec::new();
            (&mut entry).take(64 * 1024).read_to_end(&mut got)?;
            Some(got)
        } else {
            None
        };
        out.push(TarEntry {
            path,
            kind,
            mode,
            uid,
            gid,
            content,
        });
    }
    Ok(out)
}
