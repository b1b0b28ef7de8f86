//! Decoding the chunks of a xorb byte range (docs/hub-protocol.md §8): each chunk is an 8-byte
//! header — format version (0), compressed length (u24 LE), compression scheme, uncompressed
//! length (u24 LE) — followed by its payload, stored as is (scheme 0), as an LZ4 frame
//! (scheme 1), or as an LZ4 frame of its bytes regrouped by position modulo 4 (scheme 2,
//! "byte grouping 4", which compresses float tensors better). Every length is checked: a
//! range that does not decode exactly is refused, never passed on.

use std::io::Read;

/// Bytes of a chunk header.
pub const HEADER_LEN: usize = 8;
/// The largest chunk the format allows, decoded (128 KiB).
pub const MAX_CHUNK: usize = 128 << 10;
/// The largest stored payload accepted (twice a chunk: incompressible data grows a little).
const MAX_STORED: usize = 2 * MAX_CHUNK;

/// Why bytes from the CAS could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ChunkError {
    /// An unknown header version.
    #[error("chunk header version {0} is not supported (only 0 is defined)")]
    Version(u8),
    /// An unknown compression scheme.
    #[error("chunk compression scheme {0} is not defined")]
    Scheme(u8),
    /// A length outside the format's limits.
    #[error("chunk lengths out of bounds (stored {stored}, decoded {decoded})")]
    Bounds {
        /// Stored payload length.
        stored: usize,
        /// Decoded length.
        decoded: usize,
    },
    /// The payload did not decode to the announced length.
    #[error("chunk payload does not decode to its {expected} announced bytes: {detail}")]
    Payload {
        /// The header's decoded length.
        expected: usize,
        /// What went wrong.
        detail: String,
    },
    /// The range ended inside a chunk.
    #[error("the xorb range ends inside a chunk ({0} stray bytes)")]
    Truncated(usize),
}

/// A parsed chunk header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Payload bytes that follow the header.
    pub stored: usize,
    /// Compression scheme (0, 1 or 2).
    pub scheme: u8,
    /// Bytes of the decoded chunk.
    pub decoded: usize,
}

fn u24(b: &[u8]) -> usize {
    b[0] as usize | (b[1] as usize) << 8 | (b[2] as usize) << 16
}

/// Parses and bounds-checks a header.
pub fn header(b: &[u8; HEADER_LEN]) -> Result<Header, ChunkError> {
    if b[0] != 0 {
        return Err(ChunkError::Version(b[0]));
    }
    let h = Header {
        stored: u24(&b[1..4]),
        scheme: b[4],
        decoded: u24(&b[5..8]),
    };
    if h.scheme > 2 {
        return Err(ChunkError::Scheme(h.scheme));
    }
    if h.decoded > MAX_CHUNK || h.stored > MAX_STORED || (h.scheme == 0 && h.stored != h.decoded) {
        return Err(ChunkError::Bounds {
            stored: h.stored,
            decoded: h.decoded,
        });
    }
    Ok(h)
}

/// Decodes one payload into `out` (appending exactly `h.decoded` bytes).
pub fn decode(h: &Header, payload: &[u8], out: &mut Vec<u8>) -> Result<(), ChunkError> {
    let bad = |detail: String| ChunkError::Payload {
        expected: h.decoded,
        detail,
    };
    match h.scheme {
        0 => out.extend_from_slice(payload),
        _ => {
            let mut plain = Vec::with_capacity(h.decoded);
            lz4_flex::frame::FrameDecoder::new(payload)
                .take(h.decoded as u64 + 1)
                .read_to_end(&mut plain)
                .map_err(|e| bad(format!("LZ4: {e}")))?;
            if plain.len() != h.decoded {
                return Err(bad(format!("got {} bytes", plain.len())));
            }
            if h.scheme == 1 {
                out.extend_from_slice(&plain);
            } else {
                ungroup4(&plain, out);
            }
        }
    }
    Ok(())
}

/// Undoes byte grouping: `grouped` holds four groups, group k being bytes k, k+4, k+8… of the
/// original; group k has `n/4` bytes plus one when `k < n % 4`.
pub fn ungroup4(grouped: &[u8], out: &mut Vec<u8>) {
    let n = grouped.len();
    let mut starts = [0usize; 4];
    for k in 1..4 {
        starts[k] = starts[k - 1] + n / 4 + usize::from(k - 1 < n % 4);
    }
    let base = out.len();
    out.resize(base + n, 0);
    for (i, byte) in out[base..].iter_mut().enumerate() {
        *byte = grouped[starts[i % 4] + i / 4];
    }
}

/// Splits a stream of chunks into decoded chunks, whatever the boundaries of the pieces it is
/// fed (a xorb range arrives in several requests). Holds the compressed bytes pushed and not
/// yet taken out as chunks, and one decoded chunk.
#[derive(Debug, Default)]
pub struct Decoder {
    pending: Vec<u8>,
    /// Where the next chunk starts in `pending`.
    start: usize,
    decoded: Vec<u8>,
}

impl Decoder {
    /// Adds compressed bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        // Compact only when the consumed prefix outweighs what is left, so small frames do
        // not move the pending bytes again and again.
        if self.start > 0 && self.start >= self.pending.len() - self.start {
            self.pending.drain(..self.start);
            self.start = 0;
        }
        self.pending.extend_from_slice(bytes);
    }

    /// The next chunk's header and end in `pending`, when all of its bytes are there.
    fn next_complete(&self) -> Result<Option<(Header, usize)>, ChunkError> {
        let at = self.start;
        if self.pending.len() - at < HEADER_LEN {
            return Ok(None);
        }
        let mut head = [0u8; HEADER_LEN];
        head.copy_from_slice(&self.pending[at..at + HEADER_LEN]);
        let h = header(&head)?;
        let end = at + HEADER_LEN + h.stored;
        Ok((self.pending.len() >= end).then_some((h, end)))
    }

    /// Whether a whole chunk is ready to be taken.
    pub fn has_chunk(&self) -> Result<bool, ChunkError> {
        Ok(self.next_complete()?.is_some())
    }

    /// Decodes and takes the next chunk, if all of its bytes were pushed. A stored
    /// (uncompressed) chunk is handed out in place, without a copy.
    pub fn next_chunk(&mut self) -> Result<Option<&[u8]>, ChunkError> {
        let Some((h, end)) = self.next_complete()? else {
            return Ok(None);
        };
        let payload = self.start + HEADER_LEN..end;
        self.start = end;
        if h.scheme == 0 {
            return Ok(Some(&self.pending[payload]));
        }
        self.decoded.clear();
        decode(&h, &self.pending[payload], &mut self.decoded)?;
        Ok(Some(&self.decoded))
    }

    /// Feeds bytes; calls `each` with every chunk that became complete, decoded.
    #[cfg(test)]
    pub fn feed(
        &mut self,
        bytes: &[u8],
        each: &mut dyn FnMut(&[u8]) -> Result<(), ChunkError>,
    ) -> Result<(), ChunkError> {
        self.push(bytes);
        while let Some(chunk) = self.next_chunk()? {
            each(chunk)?;
        }
        Ok(())
    }

    /// Checks that the stream ended on a chunk boundary.
    pub fn finish(&self) -> Result<(), ChunkError> {
        match self.pending.len() - self.start {
            0 => Ok(()),
            n => Err(ChunkError::Truncated(n)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn lz4(data: &[u8]) -> Vec<u8> {
        let mut enc = lz4_flex::frame::FrameEncoder::new(Vec::new());
        enc.write_all(data).unwrap();
        enc.finish().unwrap()
    }

    fn group4(data: &[u8]) -> Vec<u8> {
        (0..4)
            .flat_map(|k| data.iter().skip(k).step_by(4).copied())
            .collect()
    }

    fn chunk(scheme: u8, data: &[u8]) -> Vec<u8> {
        let payload = match scheme {
            0 => data.to_vec(),
            1 => lz4(data),
            _ => lz4(&group4(data)),
        };
        let mut out = vec![0u8];
        out.extend_from_slice(&(payload.len() as u32).to_le_bytes()[..3]);
        out.push(scheme);
        out.extend_from_slice(&(data.len() as u32).to_le_bytes()[..3]);
        out.extend_from_slice(&payload);
        out
    }

    fn sample(n: usize, seed: u8) -> Vec<u8> {
        (0..n)
            .map(|i| ((i * 31) as u8).wrapping_add(seed) ^ (i / 7) as u8)
            .collect()
    }

    fn decode_all(stream: &[u8], piece: usize) -> Result<Vec<Vec<u8>>, ChunkError> {
        let mut d = Decoder::default();
        let mut out = Vec::new();
        for p in stream.chunks(piece.max(1)) {
            d.feed(p, &mut |c| {
                out.push(c.to_vec());
                Ok(())
            })?;
        }
        d.finish()?;
        Ok(out)
    }

    #[test]
    fn byte_grouping_round_trips_for_every_remainder() {
        for n in [0, 1, 2, 3, 4, 5, 6, 7, 8, 1001] {
            let data = sample(n, 3);
            let mut out = Vec::new();
            ungroup4(&group4(&data), &mut out);
            assert_eq!(out, data, "n = {n}");
        }
    }

    #[test]
    fn every_scheme_decodes_whatever_the_piece_boundaries() {
        let chunks = [
            sample(70_000, 1),
            sample(5, 2),
            sample(131_072, 3),
            sample(999, 4),
        ];
        let mut stream = Vec::new();
        for (i, c) in chunks.iter().enumerate() {
            stream.extend(chunk((i % 3) as u8, c));
        }
        for piece in [1, 7, 8, 9, 4096, 65_537, stream.len()] {
            assert_eq!(
                decode_all(&stream, piece).unwrap(),
                chunks,
                "pieces of {piece}"
            );
        }
    }

    #[test]
    fn wrong_versions_schemes_lengths_and_truncation_are_refused() {
        let good = chunk(1, &sample(1000, 9));
        let mut v = good.clone();
        v[0] = 1;
        assert_eq!(decode_all(&v, 100), Err(ChunkError::Version(1)));
        let mut s = good.clone();
        s[4] = 3;
        assert_eq!(decode_all(&s, 100), Err(ChunkError::Scheme(3)));
        let mut l = good.clone();
        l[5] = l[5].wrapping_add(1); // announces one more decoded byte than the frame holds
        assert!(matches!(
            decode_all(&l, 100),
            Err(ChunkError::Payload { .. })
        ));
        let cut = &good[..good.len() - 1];
        assert!(matches!(
            decode_all(cut, 100),
            Err(ChunkError::Truncated(_))
        ));
        let mut raw = chunk(0, &sample(10, 1));
        raw[7] = 11; // stored 10 but decoded 11: impossible without compression
        assert!(matches!(
            decode_all(&raw, 100),
            Err(ChunkError::Bounds { .. })
        ));
    }
}
