//! Fixed-size chunking of an image stream. Each chunk is either all zero (never
//! stored; reads answer zeros) or data named by its blake3 hash. The last chunk
//! may be short. The chunker streams: it holds one chunk in memory at a time.

use std::io::{self, Read};

use bytes::Bytes;

use crate::core::chunk::{VerifiedChunk, is_zero};

/// One chunk-sized piece of the input.
#[derive(Debug, Clone)]
pub enum Piece {
    Zero { index: u64, len: usize },
    Data { index: u64, chunk: VerifiedChunk },
}

impl Piece {
    pub fn len(&self) -> usize {
        match self {
            Piece::Zero { len, .. } => *len,
            Piece::Data { chunk, .. } => chunk.len(),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn index(&self) -> u64 {
        match self {
            Piece::Zero { index, .. } | Piece::Data { index, .. } => *index,
        }
    }
}

/// Iterates over the pieces of a reader.
#[derive(Debug)]
pub struct Chunker<R> {
    reader: R,
    chunk_size: usize,
    index: u64,
    done: bool,
}

impl<R: Read> Chunker<R> {
    pub fn new(reader: R, chunk_size: usize) -> Self {
        assert!(chunk_size > 0, "chunk size must be positive");
        Chunker {
            reader,
            chunk_size,
            index: 0,
            done: false,
        }
    }
}

/// Fill `buf` as far as the reader allows; returns the bytes read.
fn fill(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

impl<R: Read> Iterator for Chunker<R> {
    type Item = io::Result<Piece>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let mut buf = vec![0u8; self.chunk_size];
        let n = match fill(&mut self.reader, &mut buf) {
            Ok(n) => n,
            Err(e) => {
                self.done = true;
                return Some(Err(e));
            }
        };
        if n < self.chunk_size {
            self.done = true;
        }
        if n == 0 {
            return None;
        }
        buf.truncate(n);
        let index = self.index;
        self.index += 1;
        Some(Ok(if is_zero(&buf) {
            Piece::Zero { index, len: n }
        } else {
            Piece::Data {
                index,
                chunk: VerifiedChunk::hashed(Bytes::from(buf)),
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pieces(data: &[u8], cs: usize) -> Vec<Piece> {
        Chunker::new(data, cs).map(|p| p.unwrap()).collect()
    }

    /// (input length, non-zero ranges, chunk size, expected (is data, length) per piece)
    type Case = (
        usize,
        &'static [(usize, usize)],
        usize,
        &'static [(bool, usize)],
    );

    #[test]
    fn table() {
        let cases: &[Case] = &[
            (0, &[], 4, &[]),
            (4, &[], 4, &[(false, 4)]),
            (8, &[(0, 8)], 4, &[(true, 4), (true, 4)]),
            (10, &[(9, 10)], 4, &[(false, 4), (false, 4), (true, 2)]),
            (9, &[(4, 5)], 4, &[(false, 4), (true, 4), (false, 1)]),
            (3, &[(0, 3)], 4, &[(true, 3)]),
            (12, &[], 4, &[(false, 4), (false, 4), (false, 4)]),
        ];
        for (len, ranges, cs, want) in cases {
            let mut data = vec![0u8; *len];
            for &(a, b) in *ranges {
                data[a..b].fill(0xAB);
            }
            let got = pieces(&data, *cs);
            let shape: Vec<(bool, usize)> = got
                .iter()
                .map(|p| (matches!(p, Piece::Data { .. }), p.len()))
                .collect();
            assert_eq!(&shape, want, "len {len} ranges {ranges:?}");
            for (i, p) in got.iter().enumerate() {
                assert_eq!(p.index(), i as u64);
                if let Piece::Data { chunk, .. } = p {
                    let start = i * cs;
                    assert_eq!(&chunk.bytes()[..], &data[start..start + chunk.len()]);
                }
            }
        }
    }

    /// A reader that returns one byte per call still yields full chunks.
    #[test]
    fn short_reads() {
        struct Trickle<'a>(&'a [u8]);
        impl Read for Trickle<'_> {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                if self.0.is_empty() || buf.is_empty() {
                    return Ok(0);
                }
                buf[0] = self.0[0];
                self.0 = &self.0[1..];
                Ok(1)
            }
        }
        let data: Vec<u8> = (0..=255).cycle().take(1000).collect();
        let got: Vec<_> = Chunker::new(Trickle(&data), 300)
            .map(|p| p.unwrap().len())
            .collect();
        assert_eq!(got, vec![300, 300, 300, 100]);
    }
}
