//! Deterministic sample data for the tests, the fuzz targets and the
//! benchmarks: one seeded byte stream, and image-like bytes made of random,
//! all-zero and repeated regions (what real disk images look like to the
//! chunker: unique data, holes and duplicates).
//!
//! The same seed always gives the same bytes, on every machine, and a shorter
//! image is a prefix of a longer one with the same seed and region size, so a
//! small image's chunks are reused by a bigger one. Different seeds give random
//! regions that share nothing. Pure: no I/O beyond the writer handed in.

use std::io::{self, Write};

/// The seed of the images the tests use when they do not pick one.
pub const DEFAULT_SEED: u64 = 0x2545_f491_4f6c_dd1d;

/// Of every eight regions of an image, the ones that are all zero.
const ZERO: usize = 2;
/// ... the one that is zero but for a single byte (at [`MARK`] modulo the
/// region size), so it is stored although it is nearly empty.
const NEARLY_ZERO: usize = 3;
/// ... the one that repeats the image's first region.
const REPEAT: usize = 5;
/// Where the single non-zero byte of a nearly-zero region sits.
const MARK: usize = 4097;

/// A xorshift64 stream seeded through splitmix64, so that small or similar
/// seeds give unrelated streams from their first byte on.
#[derive(Clone, Debug)]
pub struct Xorshift(u64);

impl Xorshift {
    pub fn new(seed: u64) -> Xorshift {
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        // Zero is xorshift's only fixed point.
        Xorshift(if z == 0 { DEFAULT_SEED } else { z })
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// A value in `0..n` (`n > 0`; the slight modulo bias does not matter here).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// Fill `buf` with the next bytes of the stream, eight per step. Filling a
    /// prefix of a buffer gives a prefix of what filling all of it gives.
    pub fn fill(&mut self, buf: &mut [u8]) {
        for part in buf.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            part.copy_from_slice(&v[..part.len()]);
        }
    }
}

/// `len` random bytes drawn from `seed`.
pub fn random(len: usize, seed: u64) -> Vec<u8> {
    let mut v = vec![0u8; len];
    Xorshift::new(seed).fill(&mut v);
    v
}

/// Image-like bytes: `len` bytes cut into regions of `region` bytes (the last
/// one may be short). Of every eight regions the third is all zero, the fourth
/// zero but for one byte, the sixth repeats the first region, and the rest are
/// random, drawn from `seed`.
pub fn image(len: usize, region: usize, seed: u64) -> Vec<u8> {
    let mut v = Vec::with_capacity(len);
    write_image(&mut v, len as u64, region, seed).expect("writing to memory");
    v
}

/// [`image`] written to `out` region by region, for images too big to hold in
/// memory.
pub fn write_image(out: &mut impl Write, len: u64, region: usize, seed: u64) -> io::Result<()> {
    assert!(region > 0, "region size must be positive");
    let mut rng = Xorshift::new(seed);
    let mut first = vec![0u8; region];
    let mut block = vec![0u8; region];
    let mut left = len;
    let mut i = 0usize;
    while left > 0 {
        let n = left.min(region as u64) as usize;
        let part = &mut block[..n];
        match i % 8 {
            ZERO => part.fill(0),
            NEARLY_ZERO => {
                part.fill(0);
                if let Some(b) = part.get_mut(MARK % region) {
                    *b = 1;
                }
            }
            // Region 0 is whole whenever a region 5 follows it.
            REPEAT => part.copy_from_slice(&first[..n]),
            _ => {
                rng.fill(part);
                if i == 0 {
                    first[..n].copy_from_slice(part);
                }
            }
        }
        out.write_all(part)?;
        left -= n as u64;
        i += 1;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_bytes_other_seed_other_bytes() {
        assert_eq!(random(1000, 7), random(1000, 7));
        assert_ne!(random(1000, 7), random(1000, 8));
        assert_ne!(random(8, 0), [0u8; 8]);
        // Small seeds are not weak: no run of zero bytes at the start.
        for seed in 0..16 {
            assert!(random(4, seed).iter().any(|&b| b != 0), "seed {seed}");
        }
    }

    #[test]
    fn a_shorter_stream_or_image_is_a_prefix() {
        let long = random(1001, 3);
        for len in [0, 1, 7, 8, 9, 1000] {
            assert_eq!(random(len, 3), long[..len], "random {len}");
        }
        let long = image(20 * 64 + 5, 64, 3);
        for len in [0, 1, 63, 64, 65, 6 * 64 - 1, 6 * 64, 20 * 64] {
            assert_eq!(image(len, 64, 3), long[..len], "image {len}");
        }
    }

    #[test]
    fn regions_follow_the_pattern() {
        let r = 8192;
        let v = image(17 * r + 10, r, 11);
        let region = |i: usize| &v[i * r..((i + 1) * r).min(v.len())];
        let zero = |s: &[u8]| s.iter().all(|&b| b == 0);
        for i in [0, 1, 4, 6, 7, 8, 9, 12, 14, 15, 16] {
            assert!(!zero(region(i)), "region {i} is random");
        }
        for i in [2, 10] {
            assert!(zero(region(i)), "region {i} is zero");
        }
        for i in [3, 11] {
            let nonzero: Vec<usize> = (0..r).filter(|&j| region(i)[j] != 0).collect();
            assert_eq!(nonzero, [MARK], "region {i} is nearly zero");
        }
        for i in [5, 13] {
            assert_eq!(region(i), region(0), "region {i} repeats the first");
        }
        // Random regions differ from each other.
        assert_ne!(region(1), region(0));
        assert_ne!(region(9), region(1));
        assert_eq!(region(17).len(), 10);
    }

    #[test]
    fn small_regions_and_short_images() {
        // The mark wraps around small regions.
        let v = image(4 * 16, 16, 1);
        assert_eq!(v[3 * 16..4 * 16].iter().filter(|&&b| b != 0).count(), 1);
        assert_eq!(v[3 * 16 + MARK % 16], 1);
        assert!(image(0, 4096, 1).is_empty());
        assert_eq!(image(1, 4096, 1).len(), 1);
    }

    #[test]
    fn below_stays_in_range() {
        let mut r = Xorshift::new(5);
        for n in [1, 2, 3, 1000] {
            for _ in 0..100 {
                assert!(r.below(n) < n);
            }
        }
    }
}
