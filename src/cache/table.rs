//! The slot table of one cached image file: which chunk each slot of the
//! image's data file holds. Pure encoding and decoding, no I/O.
//!
//! Layout of `<layout>.slots` (all integers little-endian):
//!
//! | bytes | field |
//! |---|---|
//! | 0..8 | magic `VMIFSLT1` |
//! | 8..16 | image size in bytes |
//! | 16..24 | chunk size in bytes |
//! | 24..32 | slot count (`ceil(size / chunk size)`) |
//! | 32..64 | the layout key ([`LayoutKey`]) |
//! | 64 + 32·i .. 64 + 32·(i+1) | slot `i`: the [`ChunkId`] its bytes hash to, or 32 zero bytes when empty |
//!
//! A slot's entry is written only after the slot's bytes have been written to
//! the data file, and zeroed before they are punched out. Nothing is synced: a
//! crash can leave an entry whose bytes are torn, which is why every slot is
//! hashed again on its first read after a start (see [`super`]).

use crate::core::id::{ChunkId, Digest};
use crate::core::manifest::Manifest;

pub const MAGIC: &[u8; 8] = b"VMIFSLT1";
pub const HEADER_LEN: u64 = 64;
pub const ENTRY_LEN: u64 = 32;

/// Names an image's chunk layout: blake3 over its size, chunk size and chunk
/// list. Versions with the same layout (a re-push that only changed labels)
/// share one cached file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LayoutKey(pub [u8; 32]);

impl LayoutKey {
    pub fn of(m: &Manifest) -> Self {
        let mut h = blake3::Hasher::new();
        h.update(b"vmifs cache layout\0");
        h.update(&m.size.to_le_bytes());
        h.update(&m.chunk_size.to_le_bytes());
        for c in &m.chunks {
            match c {
                Some(id) => h.update(&[1]).update(&id.0.0),
                None => h.update(&[0]),
            };
        }
        LayoutKey(*h.finalize().as_bytes())
    }

    pub fn to_hex(&self) -> String {
        Digest(self.0).to_hex()
    }

    pub fn from_hex(s: &str) -> Option<Self> {
        Digest::from_hex(s).map(|d| LayoutKey(d.0))
    }
}

/// The fixed part of a slot table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub size: u64,
    pub chunk_size: u64,
    pub slots: u64,
    pub key: LayoutKey,
}

impl Header {
    pub fn of(m: &Manifest) -> Self {
        Header {
            size: m.size,
            chunk_size: m.chunk_size,
            slots: m.chunk_count(),
            key: LayoutKey::of(m),
        }
    }

    pub fn encode(&self) -> [u8; HEADER_LEN as usize] {
        let mut b = [0u8; HEADER_LEN as usize];
        b[..8].copy_from_slice(MAGIC);
        b[8..16].copy_from_slice(&self.size.to_le_bytes());
        b[16..24].copy_from_slice(&self.chunk_size.to_le_bytes());
        b[24..32].copy_from_slice(&self.slots.to_le_bytes());
        b[32..64].copy_from_slice(&self.key.0);
        b
    }

    /// The header, if `b` starts with a consistent one.
    pub fn decode(b: &[u8]) -> Option<Self> {
        if b.len() < HEADER_LEN as usize || &b[..8] != MAGIC {
            return None;
        }
        let int = |r: std::ops::Range<usize>| u64::from_le_bytes(b[r].try_into().unwrap());
        let h = Header {
            size: int(8..16),
            chunk_size: int(16..24),
            slots: int(24..32),
            key: LayoutKey(b[32..64].try_into().unwrap()),
        };
        let consistent = h.chunk_size > 0
            && h.slots == h.size.div_ceil(h.chunk_size)
            && h.slots <= u32::MAX as u64;
        consistent.then_some(h)
    }

    /// Length of slot `i` (the last may be short).
    pub fn slot_len(&self, i: u64) -> u64 {
        (self.size - i * self.chunk_size).min(self.chunk_size)
    }

    /// Where slot `i`'s bytes start in the data file.
    pub fn data_offset(&self, i: u64) -> u64 {
        i * self.chunk_size
    }

    /// Where slot `i`'s entry lies in the table file.
    pub fn entry_offset(i: u64) -> u64 {
        HEADER_LEN + i * ENTRY_LEN
    }

    /// Length of the whole table file.
    pub fn table_len(&self) -> u64 {
        Self::entry_offset(self.slots)
    }
}

/// The entry of a slot holding `id`.
pub fn encode_entry(id: &ChunkId) -> [u8; ENTRY_LEN as usize] {
    id.0.0
}

/// The chunk a slot entry names; `None` for an empty (all-zero) entry.
pub fn decode_entry(b: &[u8]) -> Option<ChunkId> {
    let b: [u8; 32] = b.try_into().ok()?;
    (b != [0u8; 32]).then_some(ChunkId(Digest(b)))
}

/// The filled slots of a table file's entries: (slot, chunk id).
pub fn decode_entries(h: &Header, entries: &[u8]) -> Vec<(u64, ChunkId)> {
    entries
        .chunks_exact(ENTRY_LEN as usize)
        .take(h.slots as usize)
        .enumerate()
        .filter_map(|(i, e)| Some((i as u64, decode_entry(e)?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(size: u64, chunk_size: u64) -> Header {
        Header {
            size,
            chunk_size,
            slots: size.div_ceil(chunk_size),
            key: LayoutKey([7; 32]),
        }
    }

    #[test]
    fn header_round_trips_and_rejects_nonsense() {
        let h = header(1_000_000, 262_144);
        assert_eq!(h.slots, 4);
        let b = h.encode();
        assert_eq!(Header::decode(&b), Some(h));
        // Wrong magic, short, zero chunk size, inconsistent slot count.
        let mut bad = b;
        bad[0] = b'X';
        assert_eq!(Header::decode(&bad), None);
        assert_eq!(Header::decode(&b[..63]), None);
        let mut bad = b;
        bad[16..24].copy_from_slice(&0u64.to_le_bytes());
        assert_eq!(Header::decode(&bad), None);
        let mut bad = b;
        bad[24..32].copy_from_slice(&5u64.to_le_bytes());
        assert_eq!(Header::decode(&bad), None);
    }

    #[test]
    fn slot_geometry() {
        // size, chunk size, slot, (len, data offset)
        let cases = [
            (1_000_000, 262_144, 0, (262_144, 0)),
            (1_000_000, 262_144, 3, (213_568, 786_432)),
            (262_144, 262_144, 0, (262_144, 0)),
            (1, 4096, 0, (1, 0)),
        ];
        for (size, cs, i, (len, off)) in cases {
            let h = header(size, cs);
            assert_eq!(
                (h.slot_len(i), h.data_offset(i)),
                (len, off),
                "{size} {cs} {i}"
            );
        }
        assert_eq!(Header::entry_offset(0), 64);
        assert_eq!(header(1_000_000, 262_144).table_len(), 64 + 4 * 32);
    }

    #[test]
    fn entries_round_trip_and_empty_is_zero() {
        let h = header(4 * 4096, 4096);
        let (a, b) = (ChunkId::of(b"a"), ChunkId::of(b"b"));
        let mut entries = vec![0u8; 4 * 32];
        entries[32..64].copy_from_slice(&encode_entry(&a));
        entries[96..128].copy_from_slice(&encode_entry(&b));
        assert_eq!(decode_entries(&h, &entries), vec![(1, a), (3, b)]);
        // A table cut short (torn) yields what is there.
        assert_eq!(decode_entries(&h, &entries[..80]), vec![(1, a)]);
        assert_eq!(decode_entry(&[0; 32]), None);
    }
}
