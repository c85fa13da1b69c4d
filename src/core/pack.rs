//! Packs (format v2, in progress): many shard objects of one store written
//! as one object, and the index that finds each shard in it.
//!
//! With one object per shard, a GiB at k=4 m=2 is 24,576 PUTs to publish and
//! 16,384 GETs to read, and the stores spend their CPU allocating inodes. A
//! pack is the concatenation of shard objects exactly as they are stored one
//! per object (header and payload, [`crate::core::erasure`]), so every shard
//! in it still checks itself, and a reader fetches one by a range read; the
//! shards of adjacent chunks lie next to each other, so one range request
//! reads many ([`coalesce`]).
//!
//! The index of a pack lists, sorted by chunk id and shard index, where each
//! shard lies. Binary, little-endian:
//!
//! | bytes | field |
//! |---|---|
//! | 4 | magic `VMX1` |
//! | 8 | length of the pack |
//! | 4 | number of entries `n` |
//! | 44 × n | entries: chunk id (32), shard index (1), reserved zeros (3), offset (4), length (4) |
//! | 32 | blake3 of everything before |
//!
//! [`Index::decode`] refuses a wrong checksum, entries out of order or
//! repeated, shards outside the pack or overlapping, and more entries than
//! the bytes can hold; the pack's own bytes are still verified shard by shard
//! when read, so a lying index can at worst make a store's shard unreadable.

use std::ops::Range;

use bytes::{BufMut, Bytes, BytesMut};

use crate::core::id::{ChunkId, Digest};

const MAGIC: &[u8; 4] = b"VMX1";
const HEAD_LEN: usize = 4 + 8 + 4;
const ENTRY_LEN: usize = 32 + 1 + 3 + 4 + 4;
/// Largest pack: offsets and lengths are 32 bits.
pub const MAX_PACK_LEN: u64 = u32::MAX as u64;

/// Where one shard lies in its pack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Entry {
    pub chunk: ChunkId,
    pub shard: u8,
    pub offset: u32,
    pub len: u32,
}

impl Entry {
    pub fn range(&self) -> Range<u64> {
        self.offset as u64..self.offset as u64 + self.len as u64
    }
}

/// The index of one pack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Index {
    pub pack_len: u64,
    /// Sorted by (chunk, shard), each pair once.
    entries: Vec<Entry>,
}

/// Why an index was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IndexError {
    #[error("pack index truncated or of the wrong length ({0} bytes)")]
    Length(usize),
    #[error("not a pack index (bad magic)")]
    BadMagic,
    #[error("pack index fails its checksum")]
    Checksum,
    #[error("pack index entries out of order or repeated at entry {0}")]
    Order(usize),
    #[error("pack index entry {0} lies outside its pack or overlaps another")]
    Bounds(usize),
}

impl Index {
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// Where shard `shard` of `chunk` lies, if this pack holds it.
    pub fn find(&self, chunk: &ChunkId, shard: u8) -> Option<Entry> {
        self.entries
            .binary_search_by(|e| (e.chunk, e.shard).cmp(&(*chunk, shard)))
            .ok()
            .map(|i| self.entries[i])
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(HEAD_LEN + ENTRY_LEN * self.entries.len() + 32);
        b.put_slice(MAGIC);
        b.put_u64_le(self.pack_len);
        b.put_u32_le(self.entries.len() as u32);
        for e in &self.entries {
            b.put_slice(&e.chunk.0.0);
            b.put_u8(e.shard);
            b.put_slice(&[0; 3]);
            b.put_u32_le(e.offset);
            b.put_u32_le(e.len);
        }
        let sum = Digest::of(&b);
        b.put_slice(&sum.0);
        b
    }

    pub fn decode(bytes: &[u8]) -> Result<Index, IndexError> {
        if bytes.len() < HEAD_LEN + 32 {
            return Err(IndexError::Length(bytes.len()));
        }
        if &bytes[..4] != MAGIC {
            return Err(IndexError::BadMagic);
        }
        let n = u32::from_le_bytes(bytes[12..16].try_into().expect("4 bytes")) as usize;
        let want = n
            .checked_mul(ENTRY_LEN)
            .and_then(|e| e.checked_add(HEAD_LEN + 32));
        if want != Some(bytes.len()) {
            return Err(IndexError::Length(bytes.len()));
        }
        let (body, sum) = bytes.split_at(bytes.len() - 32);
        if Digest::of(body).0 != sum {
            return Err(IndexError::Checksum);
        }
        let pack_len = u64::from_le_bytes(bytes[4..12].try_into().expect("8 bytes"));
        let mut entries = Vec::with_capacity(n);
        for (i, e) in body[HEAD_LEN..].chunks_exact(ENTRY_LEN).enumerate() {
            let entry = Entry {
                chunk: ChunkId(Digest(e[..32].try_into().expect("32 bytes"))),
                shard: e[32],
                offset: u32::from_le_bytes(e[36..40].try_into().expect("4 bytes")),
                len: u32::from_le_bytes(e[40..44].try_into().expect("4 bytes")),
            };
            if e[33..36] != [0; 3] {
                return Err(IndexError::Order(i));
            }
            if entries
                .last()
                .is_some_and(|p: &Entry| (p.chunk, p.shard) >= (entry.chunk, entry.shard))
            {
                return Err(IndexError::Order(i));
            }
            if entry.len == 0 || entry.range().end > pack_len {
                return Err(IndexError::Bounds(i));
            }
            entries.push(entry);
        }
        // No two shards share a byte.
        let mut by_offset: Vec<&Entry> = entries.iter().collect();
        by_offset.sort_by_key(|e| e.offset);
        for (i, w) in by_offset.windows(2).enumerate() {
            if w[0].range().end > w[1].offset as u64 {
                return Err(IndexError::Bounds(i + 1));
            }
        }
        Ok(Index { pack_len, entries })
    }
}

/// A pack being filled: shard objects appended in the order they come.
#[derive(Debug, Default)]
pub struct PackBuilder {
    bytes: BytesMut,
    entries: Vec<Entry>,
}

impl PackBuilder {
    pub fn new() -> PackBuilder {
        PackBuilder::default()
    }

    /// Bytes so far.
    pub fn len(&self) -> u64 {
        self.bytes.len() as u64
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Whether shard `shard` of `chunk` is in already.
    pub fn holds(&self, chunk: &ChunkId, shard: u8) -> bool {
        self.entries
            .iter()
            .any(|e| e.chunk == *chunk && e.shard == shard)
    }

    /// Append one shard object (as [`crate::core::erasure::Codec::encode_objects`]
    /// makes it); `false` when it would pass [`MAX_PACK_LEN`] or is in already.
    pub fn push(&mut self, chunk: ChunkId, shard: u8, object: &[u8]) -> bool {
        let end = self.len() + object.len() as u64;
        if object.is_empty() || end > MAX_PACK_LEN || self.holds(&chunk, shard) {
            return false;
        }
        self.entries.push(Entry {
            chunk,
            shard,
            offset: self.len() as u32,
            len: object.len() as u32,
        });
        self.bytes.put_slice(object);
        true
    }

    /// The pack's bytes and its index.
    pub fn finish(self) -> (Bytes, Index) {
        let mut entries = self.entries;
        entries.sort_by_key(|e| (e.chunk, e.shard));
        let pack_len = self.bytes.len() as u64;
        (self.bytes.freeze(), Index { pack_len, entries })
    }
}

/// Merge byte ranges wanted from one object into as few range requests as
/// possible: ranges closer than `gap` bytes become one request (the bytes in
/// between are read and dropped), and no request grows past `max` bytes
/// unless one range alone is larger. Returns the requests in order, each with
/// the indexes of the ranges it serves.
pub fn coalesce(ranges: &[Range<u64>], gap: u64, max: u64) -> Vec<(Range<u64>, Vec<usize>)> {
    let mut order: Vec<usize> = (0..ranges.len())
        .filter(|&i| !ranges[i].is_empty())
        .collect();
    order.sort_by_key(|&i| (ranges[i].start, ranges[i].end));
    let mut out: Vec<(Range<u64>, Vec<usize>)> = Vec::new();
    for i in order {
        let r = &ranges[i];
        if let Some((cur, members)) = out.last_mut() {
            let joined = cur.start..cur.end.max(r.end);
            if r.start <= cur.end.saturating_add(gap) && joined.end - joined.start <= max {
                *cur = joined;
                members.push(i);
                continue;
            }
        }
        out.push((r.clone(), vec![i]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::erasure::Codec;

    fn packed(chunks: usize) -> (Bytes, Index, Vec<(ChunkId, Vec<Bytes>)>) {
        let codec = Codec::new(2, 1).unwrap();
        let mut b = PackBuilder::new();
        let mut all = Vec::new();
        for c in 0..chunks {
            let data = crate::core::sample::random(4096 + c, c as u64);
            let id = ChunkId::of(&data);
            let objects = codec.encode_objects(id, &data);
            for (s, o) in objects.iter().enumerate() {
                assert!(b.push(id, s as u8, o));
            }
            all.push((id, objects));
        }
        let (pack, index) = b.finish();
        (pack, index, all)
    }

    #[test]
    fn every_shard_is_found_where_it_was_put_and_round_trips() {
        let (pack, index, all) = packed(20);
        assert_eq!(index.pack_len, pack.len() as u64);
        for (id, objects) in &all {
            for (s, o) in objects.iter().enumerate() {
                let e = index.find(id, s as u8).unwrap();
                let r = e.range();
                assert_eq!(&pack[r.start as usize..r.end as usize], &o[..]);
            }
            assert!(index.find(id, 9).is_none());
        }
        let bytes = index.encode();
        assert_eq!(bytes.len(), HEAD_LEN + ENTRY_LEN * 60 + 32);
        assert_eq!(Index::decode(&bytes).unwrap(), index);
    }

    #[test]
    fn a_damaged_or_lying_index_is_refused() {
        let (_, index, _) = packed(3);
        let good = index.encode();
        assert_eq!(Index::decode(&good[..10]), Err(IndexError::Length(10)));
        assert_eq!(
            Index::decode(&good[..good.len() - 1]),
            Err(IndexError::Length(good.len() - 1))
        );
        let mut flipped = good.clone();
        flipped[HEAD_LEN + 5] ^= 1;
        assert_eq!(Index::decode(&flipped), Err(IndexError::Checksum));
        let mut magic = good.clone();
        magic[0] = b'X';
        assert_eq!(Index::decode(&magic), Err(IndexError::BadMagic));
        // Re-signed lies: a shard past the end, two overlapping, out of order.
        let lie = |f: &dyn Fn(&mut Index)| {
            let mut i = index.clone();
            f(&mut i);
            Index::decode(&i.encode())
        };
        assert!(matches!(
            lie(&|i| i.pack_len -= 1),
            Err(IndexError::Bounds(_))
        ));
        assert!(matches!(
            lie(&|i| i.entries[1].offset = i.entries[0].offset),
            Err(IndexError::Bounds(_))
        ));
        assert!(matches!(
            lie(&|i| i.entries.swap(0, 1)),
            Err(IndexError::Order(1))
        ));
        assert!(matches!(
            lie(&|i| i.entries[1] = i.entries[0]),
            Err(IndexError::Order(1))
        ));
        assert!(matches!(
            lie(&|i| i.entries[2].len = 0),
            Err(IndexError::Bounds(2))
        ));
    }

    #[test]
    fn a_builder_refuses_repeats_and_empty_objects() {
        let mut b = PackBuilder::new();
        let id = ChunkId::of(b"x");
        assert!(b.push(id, 0, b"abc"));
        assert!(!b.push(id, 0, b"abc"));
        assert!(!b.push(id, 1, b""));
        assert!(b.push(id, 1, b"de"));
        assert_eq!(b.len(), 5);
        let (pack, index) = b.finish();
        assert_eq!(&pack[..], b"abcde");
        assert_eq!(index.find(&id, 1).unwrap().range(), 3..5);
    }

    /// Golden bytes of an index: stored indexes must stay readable.
    #[test]
    fn index_bytes_are_stable() {
        let mut b = PackBuilder::new();
        b.push(ChunkId::of(b"b"), 1, b"second");
        b.push(ChunkId::of(b"a"), 0, b"first");
        let (_, index) = b.finish();
        let hex: String = index.encode().iter().map(|x| format!("{x:02x}")).collect();
        // magic, pack length 11, 2 entries; blake3("b") shard 1 at 0 (6 bytes),
        // blake3("a") shard 0 at 6 (5 bytes); checksum.
        assert_eq!(
            hex,
            concat!(
                "564d5831",
                "0b00000000000000",
                "02000000",
                "10e5cf3d3c8a4f9f3468c8cc58eea84892a22fdadbc1acb22410190044c1d553",
                "01",
                "000000",
                "00000000",
                "06000000",
                "17762fddd969a453925d65717ac3eea21320b66b54342fde15128d6caf21215f",
                "00",
                "000000",
                "06000000",
                "05000000",
                "31379e259c99756bcf472cbb2fa2a62ad74c8ef218c5a5f668d5ee1d4ca789f4"
            )
        );
    }

    #[test]
    fn nearby_ranges_become_one_request() {
        let r = [10..20, 0..5, 22..30, 100..110, 40..40, 28..35];
        assert_eq!(
            coalesce(&r, 4, 1000),
            vec![
                (0..5, vec![1]),
                (10..35, vec![0, 2, 5]),
                (100..110, vec![3])
            ]
        );
        // With a larger gap all merge; with a small size cap none do.
        assert_eq!(coalesce(&r, 100, 1000).len(), 1);
        assert_eq!(coalesce(&r, 100, 8).len(), 5);
        assert!(coalesce(&[], 1, 1).is_empty());
    }
}
