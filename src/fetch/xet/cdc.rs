//! Xet's content-defined chunking (docs/hub-protocol.md §8.5): a Gear rolling hash over the
//! file, a boundary where its top 16 bits are zero, chunks of 8 KiB to 128 KiB (64 KiB on
//! average). The same bytes always give the same chunks, so a blob that came over plain HTTP
//! can be cut exactly as the uploader cut it and matched against the file's reconstruction.
//! The hash table is the `gearhash` crate's default table, the one Xet uses.

use std::io::{self, Read};

/// Smallest chunk (except a file's last).
pub const MIN_CHUNK: usize = 8 << 10;
/// Largest chunk.
pub const MAX_CHUNK: usize = 128 << 10;
/// A boundary is where the hash has these bits all zero.
const MASK: u64 = 0xffff_0000_0000_0000;
/// The hash depends on the last 64 bytes only: bytes further back than this from the first
/// testable position need no hashing.
const SKIP: usize = MIN_CHUNK - 64 - 1;

/// The lengths of the chunks `reader`'s bytes are cut into, in order.
pub fn chunk_lengths(mut reader: impl Read) -> io::Result<Vec<u32>> {
    let mut cutter = Cutter::default();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        cutter.feed(&buf[..n]);
    }
    Ok(cutter.finish())
}

/// The chunker's state between pieces of input.
#[derive(Default)]
struct Cutter {
    hasher: gearhash::Hasher<'static>,
    /// Bytes in the current chunk so far.
    len: usize,
    lens: Vec<u32>,
}

impl Cutter {
    fn feed(&mut self, mut buf: &[u8]) {
        while !buf.is_empty() {
            if self.len < SKIP {
                let n = (SKIP - self.len).min(buf.len());
                self.len += n;
                buf = &buf[n..];
                continue;
            }
            if self.len < MIN_CHUNK - 1 {
                let n = (MIN_CHUNK - 1 - self.len).min(buf.len());
                self.hasher.update(&buf[..n]);
                self.len += n;
                buf = &buf[n..];
                continue;
            }
            // Every next byte may end the chunk; the MAX_CHUNK-th one must.
            let room = (MAX_CHUNK - self.len).min(buf.len());
            match self.hasher.next_match(&buf[..room], MASK) {
                Some(n) => {
                    self.len += n;
                    buf = &buf[n..];
                    self.cut();
                }
                None => {
                    self.len += room;
                    buf = &buf[room..];
                    if self.len == MAX_CHUNK {
                        self.cut();
                    }
                }
            }
        }
    }

    fn cut(&mut self) {
        self.lens.push(self.len as u32);
        self.len = 0;
        self.hasher.set_hash(0);
    }

    fn finish(mut self) -> Vec<u32> {
        if self.len > 0 {
            self.cut();
        }
        self.lens
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(n: usize, seed: u64) -> Vec<u8> {
        let mut rng = fastrand::Rng::with_seed(seed);
        (0..n).map(|_| rng.u8(..)).collect()
    }

    /// The rule written out byte by byte, as the format defines it.
    fn reference(data: &[u8]) -> Vec<u32> {
        let mut lens = Vec::new();
        let (mut h, mut start) = (0u64, 0usize);
        for (i, &b) in data.iter().enumerate() {
            h = (h << 1).wrapping_add(gearhash::DEFAULT_TABLE[b as usize]);
            let size = i + 1 - start;
            if size < MIN_CHUNK {
                continue;
            }
            if size >= MAX_CHUNK || h & MASK == 0 {
                lens.push(size as u32);
                start = i + 1;
                h = 0;
            }
        }
        if start < data.len() {
            lens.push((data.len() - start) as u32);
        }
        lens
    }

    #[test]
    fn cuts_like_the_byte_by_byte_rule_whatever_the_pieces() {
        let d = data(3 << 20, 7);
        let want = reference(&d);
        assert!(want.len() > 20, "{}", want.len());
        assert_eq!(chunk_lengths(&d[..]).unwrap(), want);
        for piece in [1usize, 63, 4096, 100_000] {
            let mut c = Cutter::default();
            for p in d.chunks(piece) {
                c.feed(p);
            }
            assert_eq!(c.finish(), want, "pieces of {piece}");
        }
    }

    #[test]
    fn sizes_stay_within_bounds_and_a_run_without_matches_is_cut_at_the_maximum() {
        let lens = chunk_lengths(&data(2 << 20, 9)[..]).unwrap();
        let (last, rest) = lens.split_last().unwrap();
        assert!(
            rest.iter()
                .all(|&l| (MIN_CHUNK as u32..=MAX_CHUNK as u32).contains(&l))
        );
        assert!(*last as usize <= MAX_CHUNK);
        assert_eq!(lens.iter().map(|&l| l as usize).sum::<usize>(), 2 << 20);
        let zeros = vec![0u8; 300 << 10];
        assert_eq!(chunk_lengths(&zeros[..]).unwrap(), reference(&zeros));
        assert_eq!(chunk_lengths(&[1u8, 2, 3][..]).unwrap(), vec![3]);
        assert!(chunk_lengths(&[][..]).unwrap().is_empty());
    }
}
