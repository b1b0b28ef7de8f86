//! A deterministic tar writer (POSIX ustar, PAX records only where ustar cannot hold a value):
//! the same entries always give the same bytes, on any machine, with any tar library version.
//!
//! Written here rather than with the `tar` crate's builder because bit-identical output is the
//! feature: no PID or timestamps in PAX header names, no GNU extensions, fixed field encodings.
//! (The `tar` crate is used to read layers back in `verify`.)

use std::io::{self, Read, Write};

const BLOCK: usize = 512;
/// Largest value an 11-digit octal size/mtime field holds.
const MAX_OCTAL_11: u64 = 0o77_777_777_777;
/// Largest value a 7-digit octal id field holds.
const MAX_OCTAL_7: u64 = 0o7_777_777;

/// Ownership and time shared by every entry of a layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// Owner uid.
    pub uid: u32,
    /// Owner gid.
    pub gid: u32,
    /// Modification time (seconds since the epoch).
    pub mtime: u64,
}

/// Streams tar entries into `out`.
pub struct TarWriter<W: Write> {
    out: W,
}

impl<W: Write> TarWriter<W> {
    /// A writer over `out`.
    pub fn new(out: W) -> Self {
        TarWriter { out }
    }

    /// A directory entry (`path` without trailing `/`), mode 0755.
    pub fn dir(&mut self, path: &str, stamp: Stamp) -> io::Result<()> {
        self.header(&format!("{path}/"), "", 0, 0o755, b'5', stamp)
    }

    /// A symbolic link, mode 0777.
    pub fn symlink(&mut self, path: &str, target: &str, stamp: Stamp) -> io::Result<()> {
        self.header(path, target, 0, 0o777, b'2', stamp)
    }

    /// A hard link, mode 0644, to `target`: an earlier entry of the same archive.
    pub fn hardlink(&mut self, path: &str, target: &str, stamp: Stamp) -> io::Result<()> {
        self.header(path, target, 0, 0o644, b'1', stamp)
    }

    /// A regular file with these bytes, mode 0644.
    pub fn file_bytes(&mut self, path: &str, data: &[u8], stamp: Stamp) -> io::Result<()> {
        self.file(path, data.len() as u64, &mut &data[..], stamp)
    }

    /// A regular file of exactly `size` bytes read from `content`, mode 0644. Fails if
    /// `content` ends early (the entry would be corrupt).
    pub fn file(
        &mut self,
        path: &str,
        size: u64,
        content: &mut dyn Read,
        stamp: Stamp,
    ) -> io::Result<()> {
        self.header(path, "", size, 0o644, b'0', stamp)?;
        let copied = io::copy(&mut content.take(size), &mut self.out)?;
        if copied != size {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("{path}: content ended after {copied} of {size} bytes"),
            ));
        }
        self.pad(size)
    }

    /// A regular file of exactly `size` bytes that `write` produces into the archive, mode
    /// 0644: for content made while it is written (a 19 MB listing is never held). Fails if
    /// `write` produces another number of bytes (the entry would be corrupt).
    pub fn file_written(
        &mut self,
        path: &str,
        size: u64,
        stamp: Stamp,
        write: &mut dyn FnMut(&mut dyn Write) -> io::Result<()>,
    ) -> io::Result<()> {
        self.header(path, "", size, 0o644, b'0', stamp)?;
        let mut counted = Counted {
            out: &mut self.out,
            n: 0,
        };
        {
            let mut buffered = io::BufWriter::with_capacity(64 << 10, &mut counted);
            write(&mut buffered)?;
            // `into_inner` writes the buffer out without flushing the archive's stream: a flush
            // would cut a compressed layer's stream there and change its bytes.
            buffered
                .into_inner()
                .map_err(io::IntoInnerError::into_error)?;
        }
        if counted.n != size {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{path}: {} bytes were produced, {size} announced",
                    counted.n
                ),
            ));
        }
        self.pad(size)
    }

    /// Writes the end-of-archive marker and returns the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.out.write_all(&[0u8; BLOCK * 2])?;
        self.out.flush()?;
        Ok(self.out)
    }

    fn pad(&mut self, size: u64) -> io::Result<()> {
        let rem = (size % BLOCK as u64) as usize;
        if rem != 0 {
            self.out.write_all(&[0u8; BLOCK][..BLOCK - rem])?;
        }
        Ok(())
    }

    fn header(
        &mut self,
        path: &str,
        link: &str,
        size: u64,
        mode: u32,
        kind: u8,
        stamp: Stamp,
    ) -> io::Result<()> {
        let mut pax = Vec::new();
        let (prefix, name) = match split_ustar(path) {
            Some(split) => split,
            None => {
                pax.push(("path", path.to_owned()));
                ("", truncate_utf8(path, 100))
            }
        };
        let link_field = if link.len() > 100 {
            pax.push(("linkpath", link.to_owned()));
            truncate_utf8(link, 100)
        } else {
            link
        };
        if size > MAX_OCTAL_11 {
            pax.push(("size", size.to_string()));
        }
        if u64::from(stamp.uid) > MAX_OCTAL_7 {
            pax.push(("uid", stamp.uid.to_string()));
        }
        if u64::from(stamp.gid) > MAX_OCTAL_7 {
            pax.push(("gid", stamp.gid.to_string()));
        }
        if stamp.mtime > MAX_OCTAL_11 {
            pax.push(("mtime", stamp.mtime.to_string()));
        }
        if !pax.is_empty() {
            // Sorted keys, so the record order never depends on which field overflowed first.
            pax.sort();
            let records: Vec<u8> = pax.iter().flat_map(|(k, v)| pax_record(k, v)).collect();
            let base = path.rsplit('/').find(|s| !s.is_empty()).unwrap_or("entry");
            let pax_name = format!("PaxHeaders/{}", truncate_utf8(base, 88));
            let block = ustar_block("", &pax_name, "", records.len() as u64, 0o644, b'x', stamp);
            self.out.write_all(&block)?;
            self.out.write_all(&records)?;
            self.pad(records.len() as u64)?;
        }
        let block = ustar_block(
            prefix,
            name,
            link_field,
            size.min(MAX_OCTAL_11),
            mode,
            kind,
            Stamp {
                uid: stamp.uid.min(MAX_OCTAL_7 as u32),
                gid: stamp.gid.min(MAX_OCTAL_7 as u32),
                mtime: stamp.mtime.min(MAX_OCTAL_11),
            },
        );
        self.out.write_all(&block)
    }
}

/// Counts what passes through.
struct Counted<'a, W: Write> {
    out: &'a mut W,
    n: u64,
}

impl<W: Write> Write for Counted<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.out.write(buf)?;
        self.n += n as u64;
        Ok(n)
    }

    /// Not passed on: an entry's content never flushes the archive (see
    /// [`TarWriter::file_written`]).
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Splits `path` into ustar `prefix` (≤ 155 bytes) and `name` (≤ 100 bytes) at a `/`.
fn split_ustar(path: &str) -> Option<(&str, &str)> {
    if path.len() <= 100 {
        return Some(("", path));
    }
    // The leftmost split whose name part fits, so the prefix stays as short as possible.
    path.char_indices()
        .filter(|&(i, c)| c == '/' && i > 0 && i <= 155)
        .map(|(i, _)| (&path[..i], &path[i + 1..]))
        .find(|(_, name)| !name.is_empty() && name.len() <= 100)
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary.
fn truncate_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// One PAX record: `"<len> <key>=<value>\n"`, where `<len>` counts the whole record.
fn pax_record(key: &str, value: &str) -> Vec<u8> {
    let body = format!(" {key}={value}\n");
    let mut len = body.len() + 1;
    while len.to_string().len() + body.len() != len {
        len = len.to_string().len() + body.len();
    }
    format!("{len}{body}").into_bytes()
}

/// One 512-byte ustar header block.
fn ustar_block(
    prefix: &str,
    name: &str,
    link: &str,
    size: u64,
    mode: u32,
    kind: u8,
    stamp: Stamp,
) -> [u8; BLOCK] {
    let mut b = [0u8; BLOCK];
    put(&mut b[0..100], name.as_bytes());
    put_octal(&mut b[100..108], u64::from(mode));
    put_octal(&mut b[108..116], u64::from(stamp.uid));
    put_octal(&mut b[116..124], u64::from(stamp.gid));
    put_octal(&mut b[124..136], size);
    put_octal(&mut b[136..148], stamp.mtime);
    b[148..156].fill(b' ');
    b[156] = kind;
    put(&mut b[157..257], link.as_bytes());
    put(&mut b[257..263], b"ustar\0");
    put(&mut b[263..265], b"00");
    // uname and gname stay empty; device numbers are zero.
    put_octal(&mut b[329..337], 0);
    put_octal(&mut b[337..345], 0);
    put(&mut b[345..500], prefix.as_bytes());
    let sum: u32 = b.iter().map(|&x| u32::from(x)).sum();
    let chk = format!("{sum:06o}\0 ");
    b[148..156].copy_from_slice(chk.as_bytes());
    b
}

fn put(field: &mut [u8], value: &[u8]) {
    let n = value.len().min(field.len());
    field[..n].copy_from_slice(&value[..n]);
}

/// Zero-padded octal filling the field but its last byte, which stays NUL.
fn put_octal(field: &mut [u8], value: u64) {
    let digits = field.len() - 1;
    let s = format!("{value:0digits$o}");
    put(field, s.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAMP: Stamp = Stamp {
        uid: 1000,
        gid: 1000,
        mtime: 0,
    };

    fn archive(f: impl FnOnce(&mut TarWriter<Vec<u8>>)) -> Vec<u8> {
        let mut w = TarWriter::new(Vec::new());
        f(&mut w);
        w.finish().unwrap()
    }

    #[test]
    fn the_tar_crate_reads_back_what_we_write() {
        let long_dir = format!("root/{}", "d".repeat(120));
        let long_name = format!("{long_dir}/{}", "f".repeat(130));
        let long_target = format!("{}blobs/{}", "../".repeat(20), "a".repeat(64));
        let bytes = archive(|w| {
            w.dir("root", STAMP).unwrap();
            w.file_bytes("root/hello.txt", b"hello\n", STAMP).unwrap();
            w.symlink("root/link", "hello.txt", STAMP).unwrap();
            w.file_bytes(&long_name, b"long", STAMP).unwrap();
            w.symlink(
                "root/deep",
                &long_target,
                Stamp {
                    uid: 3_000_000,
                    ..STAMP
                },
            )
            .unwrap();
        });
        assert_eq!(bytes.len() % 512, 0);
        let mut a = tar::Archive::new(&bytes[..]);
        let mut seen = Vec::new();
        for e in a.entries().unwrap() {
            let mut e = e.unwrap();
            let path = e.path().unwrap().to_string_lossy().into_owned();
            let link = e
                .link_name()
                .unwrap()
                .map(|l| l.to_string_lossy().into_owned());
            let mut content = Vec::new();
            e.read_to_end(&mut content).unwrap();
            let h = e.header();
            seen.push((
                path,
                h.mode().unwrap(),
                e.header().uid().unwrap(),
                link,
                content,
            ));
            let _ = h;
        }
        assert_eq!(seen[0].0, "root/");
        assert_eq!(seen[0].1, 0o755);
        assert_eq!(
            (seen[1].0.as_str(), seen[1].1, seen[1].4.as_slice()),
            ("root/hello.txt", 0o644, &b"hello\n"[..])
        );
        assert_eq!(seen[2].3.as_deref(), Some("hello.txt"));
        assert_eq!(
            seen[3].0, long_name,
            "a long name survives through a PAX record"
        );
        assert_eq!(seen[3].4, b"long");
        assert_eq!(seen[4].3.as_deref(), Some(long_target.as_str()));
        assert_eq!(seen[4].2, 3_000_000, "a large uid goes through PAX");
    }

    #[test]
    fn output_is_deterministic_and_has_no_host_data() {
        let a = archive(|w| w.file_bytes(&"x".repeat(120), b"1", STAMP).unwrap());
        let b = archive(|w| w.file_bytes(&"x".repeat(120), b"1", STAMP).unwrap());
        assert_eq!(a, b);
        let text = String::from_utf8_lossy(&a);
        assert!(
            text.contains("PaxHeaders/x"),
            "fixed PAX header name, no PID"
        );
    }

    #[test]
    fn a_file_produced_while_written_is_the_file_of_its_bytes() {
        let data: Vec<u8> = (0..70_000u32).map(|i| (i % 251) as u8).collect();
        let whole = archive(|w| w.file_bytes("a/listing.json", &data, STAMP).unwrap());
        let produced = archive(|w| {
            w.file_written("a/listing.json", data.len() as u64, STAMP, &mut |out| {
                data.chunks(7).try_for_each(|c| out.write_all(c))
            })
            .unwrap()
        });
        assert_eq!(whole, produced);
        for announced in [data.len() as u64 - 1, data.len() as u64 + 1] {
            let mut w = TarWriter::new(Vec::new());
            let err = w
                .file_written("x", announced, STAMP, &mut |out| out.write_all(&data))
                .unwrap_err();
            assert!(err.to_string().contains("announced"), "{err}");
        }
    }

    /// A compressor ends a block where it is flushed: a produced file larger than its buffer
    /// (64 KiB), even one whose producer flushes, must give the compressed bytes of the file
    /// written whole, or every compressed layer holding one would change.
    #[test]
    fn a_produced_file_leaves_compressed_bytes_unchanged() {
        let data: Vec<u8> = (0..150_000u32).map(|i| (i % 251) as u8).collect();
        let gzip = |produced: bool| {
            let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(1));
            let mut w = TarWriter::new(gz);
            put_listing(&mut w, &data, produced);
            w.finish().unwrap().finish().unwrap()
        };
        let zstd = |produced: bool| {
            let z = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
            let mut w = TarWriter::new(z);
            put_listing(&mut w, &data, produced);
            w.finish().unwrap().finish().unwrap()
        };
        assert_eq!(gzip(false), gzip(true), "gzip");
        assert_eq!(zstd(false), zstd(true), "zstd");
    }

    /// Writes `data` as one file, whole or produced in pieces with a flush between.
    fn put_listing<W: Write>(w: &mut TarWriter<W>, data: &[u8], produced: bool) {
        if !produced {
            return w.file_bytes("a/listing.json", data, STAMP).unwrap();
        }
        w.file_written("a/listing.json", data.len() as u64, STAMP, &mut |out| {
            let (a, b) = data.split_at(100_000);
            out.write_all(a)?;
            out.flush()?;
            out.write_all(b)
        })
        .unwrap();
    }

    #[test]
    fn ustar_split_and_pax_lengths() {
        let p = format!("{}/{}", "a".repeat(150), "b".repeat(99));
        assert_eq!(split_ustar(&p), Some((&p[..150], &p[151..])));
        assert_eq!(split_ustar(&"c".repeat(101)), None);
        let r = pax_record("path", "x");
        assert_eq!(r, b"9 path=x\n");
        let long = "y".repeat(95);
        let r = pax_record("path", &long);
        let text = String::from_utf8(r.clone()).unwrap();
        let len: usize = text.split(' ').next().unwrap().parse().unwrap();
        assert_eq!(len, r.len());
    }

    #[test]
    fn short_content_is_an_error() {
        let mut w = TarWriter::new(Vec::new());
        assert!(w.file("f", 10, &mut &b"abc"[..], STAMP).is_err());
    }
}
