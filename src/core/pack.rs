//! Packs (format v2): many shard objects of one store written as one object,
//! with the index that finds each shard in it at its end.
//!
//! With one object per shard, a GiB at k=4 m=2 is 24,576 PUTs to publish and
//! 16,384 GETs to read, and the stores spend their CPU allocating inodes. A
//! pack is the concatenation of shard objects exactly as they are stored one
//! per object (header and payload, [`crate::core::erasure`]), so every shard
//! in it still checks itself, and a reader fetches one by a range read; the
//! shards of adjacent chunks lie next to each other, so one range request
//! reads many ([`coalesce`]).
//!
//! A pack object is `shards ‖ index ‖ footer`. Its id ([`PackId`]) is the
//! blake3 of its index bytes, so a manifest that names a pack (id, and where
//! its index lies) authenticates the index too; the footer (index length,
//! u32 LE, then magic `VMP1`) lets a reader that only listed the pack find
//! the index.
//!
//! The index lists, sorted by chunk id and shard index, where each shard lies,
//! and for data shards that prove themselves ([`crate::core::shard_proof`])
//! their proof. Binary, little-endian:
//!
//! | bytes | field |
//! |---|---|
//! | 4 | magic `VMX1` |
//! | 1, 1 | the code of every shard in the pack: k, m |
//! | 1 | `p`: proof slots per entry (chaining values of 32 bytes) |
//! | 1 | reserved, zero |
//! | 8 | length of the shard bytes (the index starts there) |
//! | 4 | number of entries `n` |
//! | (44 + 32p) × n | entries: chunk id (32), shard index (1), proof present (1: 0 or 1), reserved zeros (2), offset (4), length (4), proof (32p; zeros when absent) |
//! | 32 | blake3 of everything before |
//!
//! [`Index::decode`] refuses a wrong checksum, entries out of order or
//! repeated, shards outside the pack or overlapping, and more entries than
//! the bytes can hold; the pack's own bytes are still verified shard by shard
//! when read, so a lying index can at worst make a store's shard unreadable.

use std::ops::Range;

use bytes::{BufMut, Bytes, BytesMut};

use crate::core::id::{ChunkId, Digest, PackId};
use crate::core::manifest::PackRef;
use crate::core::shard_proof::Proof;

const MAGIC: &[u8; 4] = b"VMX1";
const FOOTER_MAGIC: &[u8; 4] = b"VMP1";
const HEAD_LEN: usize = 4 + 4 + 8 + 4;
const ENTRY_FIXED: usize = 32 + 1 + 1 + 2 + 4 + 4;
/// Bytes after the index: its length and a magic.
pub const FOOTER_LEN: usize = 8;
/// Largest pack: offsets and lengths are 32 bits.
pub const MAX_PACK_LEN: u64 = u32::MAX as u64;
/// Most proof slots an entry can have (`log2` of the largest power-of-two `k`).
pub const MAX_PROOF: u8 = 6;

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
    pub k: u8,
    pub m: u8,
    /// Proof slots per entry.
    pub proof_slots: u8,
    /// Length of the shard bytes; the index follows them.
    pub data_len: u64,
    /// Sorted by (chunk, shard), each pair once.
    entries: Vec<Entry>,
    /// Per entry: its proof, if it has one.
    proofs: Vec<Option<Proof>>,
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
    #[error("pack index has a bad code or proof field")]
    Field,
}

impl Index {
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// The proof of entry `i` (a data shard that proves itself), if any.
    pub fn proof(&self, i: usize) -> Option<&Proof> {
        self.proofs.get(i).and_then(Option::as_ref)
    }

    /// The position of shard `shard` of `chunk` among the entries, if this pack holds it.
    pub fn position(&self, chunk: &ChunkId, shard: u8) -> Option<usize> {
        self.entries
            .binary_search_by(|e| (e.chunk, e.shard).cmp(&(*chunk, shard)))
            .ok()
    }

    /// Where shard `shard` of `chunk` lies, if this pack holds it.
    pub fn find(&self, chunk: &ChunkId, shard: u8) -> Option<Entry> {
        self.position(chunk, shard).map(|i| self.entries[i])
    }

    fn entry_len(&self) -> usize {
        ENTRY_FIXED + 32 * self.proof_slots as usize
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(HEAD_LEN + self.entry_len() * self.entries.len() + 32);
        b.put_slice(MAGIC);
        b.put_slice(&[self.k, self.m, self.proof_slots, 0]);
        b.put_u64_le(self.data_len);
        b.put_u32_le(self.entries.len() as u32);
        for (e, proof) in self.entries.iter().zip(&self.proofs) {
            b.put_slice(&e.chunk.0.0);
            b.put_u8(e.shard);
            b.put_u8(proof.is_some() as u8);
            b.put_slice(&[0; 2]);
            b.put_u32_le(e.offset);
            b.put_u32_le(e.len);
            let cvs = proof.as_ref().map(|p| p.0.as_slice()).unwrap_or(&[]);
            for i in 0..self.proof_slots as usize {
                b.put_slice(cvs.get(i).map(|cv| &cv[..]).unwrap_or(&[0; 32]));
            }
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
        let (k, m, proof_slots) = (bytes[4], bytes[5], bytes[6]);
        let n = u32::from_le_bytes(bytes[16..20].try_into().expect("4 bytes")) as usize;
        let entry_len = ENTRY_FIXED + 32 * proof_slots as usize;
        let want = n
            .checked_mul(entry_len)
            .and_then(|e| e.checked_add(HEAD_LEN + 32));
        if want != Some(bytes.len()) {
            return Err(IndexError::Length(bytes.len()));
        }
        let (body, sum) = bytes.split_at(bytes.len() - 32);
        if Digest::of(body).0 != sum {
            return Err(IndexError::Checksum);
        }
        let total = k as usize + m as usize;
        if k == 0
            || total > crate::core::erasure::MAX_SHARDS
            || proof_slots > MAX_PROOF
            || bytes[7] != 0
        {
            return Err(IndexError::Field);
        }
        let data_len = u64::from_le_bytes(bytes[8..16].try_into().expect("8 bytes"));
        let mut entries = Vec::with_capacity(n);
        let mut proofs = Vec::with_capacity(n);
        for (i, e) in body[HEAD_LEN..].chunks_exact(entry_len).enumerate() {
            let entry = Entry {
                chunk: ChunkId(Digest(e[..32].try_into().expect("32 bytes"))),
                shard: e[32],
                offset: u32::from_le_bytes(e[36..40].try_into().expect("4 bytes")),
                len: u32::from_le_bytes(e[40..44].try_into().expect("4 bytes")),
            };
            if e[34..36] != [0; 2] || e[33] > 1 || entry.shard as usize >= total {
                return Err(IndexError::Field);
            }
            let cvs = &e[ENTRY_FIXED..];
            let proof = if e[33] == 1 {
                Some(Proof(
                    cvs.chunks_exact(32)
                        .map(|cv| cv.try_into().expect("32 bytes"))
                        .collect(),
                ))
            } else {
                if cvs.iter().any(|&b| b != 0) {
                    return Err(IndexError::Field);
                }
                None
            };
            if entries
                .last()
                .is_some_and(|p: &Entry| (p.chunk, p.shard) >= (entry.chunk, entry.shard))
            {
                return Err(IndexError::Order(i));
            }
            if entry.len == 0 || entry.range().end > data_len {
                return Err(IndexError::Bounds(i));
            }
            entries.push(entry);
            proofs.push(proof);
        }
        // No two shards share a byte.
        let mut by_offset: Vec<&Entry> = entries.iter().collect();
        by_offset.sort_by_key(|e| e.offset);
        for (i, w) in by_offset.windows(2).enumerate() {
            if w[0].range().end > w[1].offset as u64 {
                return Err(IndexError::Bounds(i + 1));
            }
        }
        Ok(Index {
            k,
            m,
            proof_slots,
            data_len,
            entries,
            proofs,
        })
    }
}

/// The index length a pack's footer (its last [`FOOTER_LEN`] bytes) gives,
/// or `None` if they are not a footer.
pub fn parse_footer(footer: &[u8]) -> Option<u32> {
    if footer.len() != FOOTER_LEN || &footer[4..] != FOOTER_MAGIC {
        return None;
    }
    Some(u32::from_le_bytes(footer[..4].try_into().expect("4 bytes")))
}

/// A finished pack: its object bytes, its index and where that lies.
#[derive(Debug, Clone)]
pub struct Pack {
    pub id: PackId,
    pub bytes: Bytes,
    pub index: Index,
    /// Where the index lies in `bytes`.
    pub index_range: Range<u64>,
}

impl Pack {
    /// How a manifest or a moved record names this pack once it is stored
    /// on `store`.
    pub fn reference(&self, store: &str) -> PackRef {
        PackRef {
            store: store.to_string(),
            id: self.id,
            index_offset: self.index_range.start,
            index_len: self.index_range.end - self.index_range.start,
        }
    }
}

/// A pack being filled: shard objects appended in the order they come.
#[derive(Debug)]
pub struct PackBuilder {
    k: u8,
    m: u8,
    proof_slots: u8,
    bytes: BytesMut,
    entries: Vec<(Entry, Option<Proof>)>,
    held: std::collections::HashSet<(ChunkId, u8)>,
}

impl PackBuilder {
    /// A pack of shards of code `k`+`m` whose proofs have `proof_slots`
    /// chaining values, with room for about `capacity` bytes.
    pub fn new(k: u8, m: u8, proof_slots: u8, capacity: usize) -> PackBuilder {
        PackBuilder {
            k,
            m,
            proof_slots: proof_slots.min(MAX_PROOF),
            bytes: BytesMut::with_capacity(capacity),
            entries: Vec::new(),
            held: Default::default(),
        }
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
        self.held.contains(&(*chunk, shard))
    }

    /// Append one shard object (as [`crate::core::erasure::Codec::encode_objects`]
    /// makes it), with its proof if it is a data shard that has one; `false`
    /// when it would pass [`MAX_PACK_LEN`], is in already, or the proof does
    /// not fit the pack's slots.
    pub fn push(&mut self, chunk: ChunkId, shard: u8, object: &[u8], proof: Option<Proof>) -> bool {
        let end = self.len() + object.len() as u64;
        let fits = proof
            .as_ref()
            .is_none_or(|p| p.0.len() == self.proof_slots as usize);
        if object.is_empty() || end > MAX_PACK_LEN || !fits || self.holds(&chunk, shard) {
            return false;
        }
        self.held.insert((chunk, shard));
        let entry = Entry {
            chunk,
            shard,
            offset: self.len() as u32,
            len: object.len() as u32,
        };
        self.entries.push((entry, proof));
        self.bytes.put_slice(object);
        true
    }

    /// The pack: shards, index and footer.
    pub fn finish(self) -> Pack {
        let mut entries = self.entries;
        entries.sort_by_key(|(e, _)| (e.chunk, e.shard));
        let data_len = self.bytes.len() as u64;
        let (entries, proofs) = entries.into_iter().unzip();
        let index = Index {
            k: self.k,
            m: self.m,
            proof_slots: self.proof_slots,
            data_len,
            entries,
            proofs,
        };
        let encoded = index.encode();
        let id = PackId::of(&encoded);
        let mut bytes = self.bytes;
        bytes.put_slice(&encoded);
        bytes.put_u32_le(encoded.len() as u32);
        bytes.put_slice(FOOTER_MAGIC);
        Pack {
            id,
            bytes: bytes.freeze(),
            index,
            index_range: data_len..data_len + encoded.len() as u64,
        }
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
        let mut b = PackBuilder::new(2, 1, 0, 0);
        let mut all = Vec::new();
        for c in 0..chunks {
            let data = crate::core::sample::random(4096 + c, c as u64);
            let id = ChunkId::of(&data);
            let objects = codec.encode_objects(id, &data);
            for (s, o) in objects.iter().enumerate() {
                assert!(b.push(id, s as u8, o, None));
            }
            all.push((id, objects));
        }
        let p = b.finish();
        assert_eq!(p.id, PackId::of(&p.index.encode()));
        (p.bytes, p.index, all)
    }

    #[test]
    fn every_shard_is_found_where_it_was_put_and_round_trips() {
        let (pack, index, all) = packed(20);
        let footer = &pack[pack.len() - FOOTER_LEN..];
        let index_len = parse_footer(footer).unwrap() as usize;
        let start = pack.len() - FOOTER_LEN - index_len;
        assert_eq!(index.data_len, start as u64);
        assert_eq!(
            Index::decode(&pack[start..pack.len() - FOOTER_LEN]).unwrap(),
            index
        );
        for (id, objects) in &all {
            for (s, o) in objects.iter().enumerate() {
                let e = index.find(id, s as u8).unwrap();
                let r = e.range();
                assert_eq!(&pack[r.start as usize..r.end as usize], &o[..]);
            }
            assert!(index.find(id, 9).is_none());
        }
        let bytes = index.encode();
        assert_eq!(bytes.len(), HEAD_LEN + ENTRY_FIXED * 60 + 32);
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
            lie(&|i| i.data_len -= 1),
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
    fn a_builder_refuses_repeats_empty_objects_and_misfit_proofs() {
        let mut b = PackBuilder::new(2, 1, 1, 0);
        let id = ChunkId::of(b"x");
        assert!(b.push(id, 0, b"abc", Some(Proof(vec![[7; 32]]))));
        assert!(!b.push(id, 0, b"abc", None));
        assert!(!b.push(id, 1, b"", None));
        assert!(!b.push(id, 1, b"de", Some(Proof(vec![[7; 32]; 2]))));
        assert!(b.push(id, 1, b"de", None));
        assert_eq!(b.len(), 5);
        let p = b.finish();
        assert_eq!(&p.bytes[..5], b"abcde");
        assert_eq!(p.index.find(&id, 1).unwrap().range(), 3..5);
        let back = Index::decode(&p.index.encode()).unwrap();
        assert_eq!(back.proof(0), Some(&Proof(vec![[7; 32]])));
        assert_eq!(back.proof(1), None);
    }

    #[test]
    fn bad_fields_are_refused() {
        let mut b = PackBuilder::new(2, 1, 1, 0);
        b.push(ChunkId::of(b"x"), 0, b"abc", None);
        let index = b.finish().index;
        let resum = |f: &dyn Fn(&mut Vec<u8>)| {
            let mut bytes = index.encode();
            bytes.truncate(bytes.len() - 32);
            f(&mut bytes);
            let sum = Digest::of(&bytes);
            bytes.extend_from_slice(&sum.0);
            Index::decode(&bytes)
        };
        assert!(resum(&|_| ()).is_ok());
        assert_eq!(resum(&|b| b[4] = 0), Err(IndexError::Field), "k = 0");
        assert_eq!(resum(&|b| b[5] = 64), Err(IndexError::Field), "n > 64");
        assert_eq!(resum(&|b| b[7] = 1), Err(IndexError::Field), "reserved");
        assert_eq!(
            resum(&|b| b[HEAD_LEN + 32] = 3),
            Err(IndexError::Field),
            "shard 3 of 2+1"
        );
        assert_eq!(
            resum(&|b| b[HEAD_LEN + 33] = 2),
            Err(IndexError::Field),
            "proof flag"
        );
        assert_eq!(
            resum(&|b| b[HEAD_LEN + ENTRY_FIXED] = 1),
            Err(IndexError::Field),
            "absent proof not zero"
        );
        assert_eq!(parse_footer(b"\x05\0\0\0VMP1"), Some(5));
        assert_eq!(parse_footer(b"\x05\0\0\0VMP2"), None);
        assert_eq!(parse_footer(b"VMP1"), None);
    }

    /// Golden bytes of an index: stored indexes must stay readable.
    #[test]
    fn index_bytes_are_stable() {
        let mut b = PackBuilder::new(2, 1, 1, 0);
        b.push(ChunkId::of(b"b"), 1, b"second", None);
        b.push(
            ChunkId::of(b"a"),
            0,
            b"first",
            Some(Proof(vec![[0xab; 32]])),
        );
        let p = b.finish();
        let hex: String = p
            .index
            .encode()
            .iter()
            .map(|x| format!("{x:02x}"))
            .collect();
        // magic, code 2+1, one proof slot, reserved; 11 shard bytes; 2 entries.
        // blake3("b") shard 1, no proof, at 0 (6 bytes), zero slot;
        // blake3("a") shard 0, proof, at 6 (5 bytes), its one chaining value;
        // checksum.
        assert_eq!(
            hex,
            concat!(
                "564d5831",
                "02010100",
                "0b00000000000000",
                "02000000",
                "10e5cf3d3c8a4f9f3468c8cc58eea84892a22fdadbc1acb22410190044c1d553",
                "01",
                "00",
                "0000",
                "00000000",
                "06000000",
                "0000000000000000000000000000000000000000000000000000000000000000",
                "17762fddd969a453925d65717ac3eea21320b66b54342fde15128d6caf21215f",
                "00",
                "01",
                "0000",
                "06000000",
                "05000000",
                "abababababababababababababababababababababababababababababababab",
                "8259df5662c40628cd1bcd90c0fbc49c2b67ed6c47dc1386788d85ebae425eb8"
            )
        );
        assert_eq!(
            p.id.to_hex(),
            "1799dcc4e163bb7e673db9d50a6dc5a044243673893faa203fff4a5b718e20b5"
        );
        // The pack: shards, index, index length and the footer magic.
        let n = p.bytes.len();
        assert_eq!(&p.bytes[..11], b"secondfirst");
        assert_eq!(&p.bytes[n - 8..], &[0xcc, 0, 0, 0, b'V', b'M', b'P', b'1']);
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
