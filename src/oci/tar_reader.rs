//! Reading a layer blob of any image: its tar stream decompressed as its magic bytes say
//! (plain, gzip or zstd) while its raw bytes are hashed ([`decode`]), and its entries streamed
//! as [`TarEntry`]s, only those the reader wants ([`read_entries`], for `doctor`). The writing
//! side is [`super::tar`].

use std::io::{self, BufReader, Read};

use crate::hash::HashingReader;

/// Where a layer blob's bytes come from: a file, or a registry's answer read as it arrives.
pub type BlobReader = Box<dyn Read + Send>;

/// The raw bytes of a layer blob: the magic bytes already read, then the rest, hashed.
pub type Raw = io::Chain<io::Cursor<Vec<u8>>, HashingReader<BufReader<BlobReader>>>;

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
/// [`super::source::open_sized`]; a registry's as a stream).
pub fn decode(blob: impl Read + Send + 'static) -> io::Result<Decoded> {
    let blob: BlobReader = Box::new(blob);
    let mut file = HashingReader::new(BufReader::with_capacity(1 << 20, blob));
    let mut magic = [0u8; 4];
    let n = file.read(&mut magic)?;
    let blob = io::Cursor::new(magic[..n].to_vec()).chain(file);
    Ok(match magic {
        [0x1f, 0x8b, ..] => Decoded::Gzip(flate2::read::MultiGzDecoder::new(blob)),
        [0x28, 0xb5, 0x2f, 0xfd] => Decoded::Zstd(zstd::stream::read::Decoder::new(blob)?),
        _ => Decoded::Plain(blob),
    })
}

/// A layer blob's tar stream from any reader (from its first byte), decompressed as its magic
/// bytes say; nothing is hashed (see [`decode`] for that).
pub fn decompress<'a>(mut blob: impl Read + 'a) -> io::Result<Box<dyn Read + 'a>> {
    let mut magic = [0u8; 4];
    let mut n = 0;
    while n < magic.len() {
        match blob.read(&mut magic[n..])? {
            0 => break,
            got => n += got,
        }
    }
    let whole = io::Cursor::new(magic[..n].to_vec()).chain(blob);
    Ok(match magic {
        [0x1f, 0x8b, ..] => Box::new(flate2::read::MultiGzDecoder::new(whole)),
        [0x28, 0xb5, 0x2f, 0xfd] => Box::new(zstd::stream::read::Decoder::new(whole)?),
        _ => Box::new(whole),
    })
}

/// The most entries [`read_entries`] reads from one layer: the Hub's own cap on a repo's file
/// listing, far above any real image layer.
pub const MAX_ENTRIES: usize = 1_000_000;

/// The longest entry path [`read_entries`] accepts, in bytes: what Linux accepts
/// ([`crate::repo::MAX_PATH_BYTES`]), as for every path that comes from outside.
pub const MAX_PATH_BYTES: usize = crate::repo::MAX_PATH_BYTES;

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
    /// The content, for the entries whose [`Want`] is [`Want::Content`].
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

/// What a reader of [`read_entries`] wants of one entry, by its path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    /// Nothing: the entry is read past and forgotten.
    Skip,
    /// Its type, mode and owner.
    Entry,
    /// Those and, for a file, its content (at most 64 KiB).
    Content,
}

/// Streams the entries of a layer blob (plain, gzip or zstd; `blob` from its start, a file or a
/// registry stream): each one
/// whose path `want` asks for is handed to `on_entry`, every other one is read past, so memory
/// stays at one entry whatever the layer holds. A layer of more than [`MAX_ENTRIES`] entries,
/// or with a path longer than [`MAX_PATH_BYTES`], is refused.
pub fn read_entries(
    blob: impl Read,
    want: &mut dyn FnMut(&str) -> Want,
    on_entry: &mut dyn FnMut(TarEntry),
) -> io::Result<()> {
    let mut archive = tar::Archive::new(decompress(blob)?);
    for (n, entry) in archive.entries()?.enumerate() {
        if n >= MAX_ENTRIES {
            return Err(io::Error::other(format!(
                "the layer holds more than {MAX_ENTRIES} entries; no image layer needs that many"
            )));
        }
        let mut entry = entry?;
        let raw = entry.path_bytes();
        if raw.len() > MAX_PATH_BYTES {
            return Err(io::Error::other(format!(
                "entry {} has a path of {} bytes, longer than the {MAX_PATH_BYTES} a file system accepts",
                n + 1,
                raw.len()
            )));
        }
        let raw = String::from_utf8_lossy(&raw).into_owned();
        let path = raw
            .trim_start_matches("./")
            .trim_start_matches('/')
            .trim_end_matches('/');
        let wanted = want(path);
        if wanted == Want::Skip {
            continue;
        }
        let path = path.to_owned();
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
        let content = if kind == TarKind::File && wanted == Want::Content {
            let mut got = Vec::new();
            (&mut entry).take(64 * 1024).read_to_end(&mut got)?;
            Some(got)
        } else {
            None
        };
        on_entry(TarEntry {
            path,
            kind,
            mode,
            uid,
            gid,
            content,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::File;

    fn layer_file(paths: &[String]) -> tempfile::NamedTempFile {
        let mut b = tar::Builder::new(Vec::new());
        for path in paths {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Regular);
            h.set_mode(0o644);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(0);
            h.set_size(2);
            b.append_data(&mut h, path, &b"hi"[..]).unwrap();
        }
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), b.into_inner().unwrap()).unwrap();
        file
    }

    #[test]
    fn only_wanted_entries_are_handed_over_and_long_paths_are_refused() {
        let file = layer_file(&["a/keep".into(), "a/skip".into(), "a/meta".into()]);
        let mut want = |p: &str| match p {
            "a/keep" => Want::Content,
            "a/meta" => Want::Entry,
            _ => Want::Skip,
        };
        let mut got = Vec::new();
        read_entries(File::open(file.path()).unwrap(), &mut want, &mut |e| {
            got.push((e.path, e.content))
        })
        .unwrap();
        assert_eq!(
            got,
            [
                ("a/keep".to_owned(), Some(b"hi".to_vec())),
                ("a/meta".to_owned(), None)
            ]
        );

        let long = format!("a/{}", "b".repeat(MAX_PATH_BYTES));
        let file = layer_file(&["a/ok".into(), long]);
        let e = read_entries(
            File::open(file.path()).unwrap(),
            &mut |_| Want::Entry,
            &mut |_| {},
        )
        .unwrap_err();
        assert!(e.to_string().contains("longer than the 4096"), "{e}");
    }
}
