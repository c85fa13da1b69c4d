//! Offset arithmetic of a read: which part of which chunk each byte of
//! `[offset, offset + len)` comes from. Pure, table-tested.

/// The part of one chunk a read covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub chunk: u64,
    /// Offset inside the chunk.
    pub start: usize,
    pub len: usize,
}

/// The chunks covering `[offset, offset + len)` of an image of `size` bytes cut
/// into `chunk_size` chunks, clipped at the end of the image.
pub fn spans(offset: u64, len: u64, size: u64, chunk_size: u64) -> Vec<Span> {
    let end = offset.saturating_add(len).min(size);
    let mut out = Vec::new();
    let mut pos = offset;
    while pos < end {
        let chunk = pos / chunk_size;
        let chunk_end = ((chunk + 1) * chunk_size).min(end);
        out.push(Span {
            chunk,
            start: (pos - chunk * chunk_size) as usize,
            len: (chunk_end - pos) as usize,
        });
        pos = chunk_end;
    }
    out
}

/// Bytes a read returns: `min(len, size - offset)`, 0 past the end.
pub fn clipped_len(offset: u64, len: u64, size: u64) -> u64 {
    size.saturating_sub(offset).min(len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn span_table() {
        let s = |chunk, start, len| Span { chunk, start, len };
        // (offset, len, size, chunk) → spans
        let cases: Vec<(u64, u64, u64, u64, Vec<Span>)> = vec![
            (0, 0, 100, 10, vec![]),
            (0, 10, 100, 10, vec![s(0, 0, 10)]),
            (5, 10, 100, 10, vec![s(0, 5, 5), s(1, 0, 5)]),
            (9, 2, 100, 10, vec![s(0, 9, 1), s(1, 0, 1)]),
            (10, 10, 100, 10, vec![s(1, 0, 10)]),
            (
                5,
                30,
                100,
                10,
                vec![s(0, 5, 5), s(1, 0, 10), s(2, 0, 10), s(3, 0, 5)],
            ),
            // Last chunk short (size 95): clipped at the end.
            (88, 100, 95, 10, vec![s(8, 8, 2), s(9, 0, 5)]),
            (90, 5, 95, 10, vec![s(9, 0, 5)]),
            // At and past the end.
            (95, 10, 95, 10, vec![]),
            (200, 10, 95, 10, vec![]),
            (u64::MAX - 1, 10, 95, 10, vec![]),
            // Empty image.
            (0, 10, 0, 10, vec![]),
        ];
        for (offset, len, size, chunk, want) in cases {
            let got = spans(offset, len, size, chunk);
            assert_eq!(
                got, want,
                "offset {offset} len {len} size {size} chunk {chunk}"
            );
            let total: u64 = got.iter().map(|s| s.len as u64).sum();
            assert_eq!(total, clipped_len(offset, len, size));
        }
    }
}
