//! Where the shards of one image lie in its packs, held compactly for as
//! long as the image is mounted: the in-memory form of the pack indexes a
//! manifest names ([`crate::core::pack::Index`]).
//!
//! A mount holds this table for every image it reads, so its size is what
//! makes the daemon's memory grow with the image. Per distinct chunk it
//! holds the chunk id once (a sorted array, found by binary search), one
//! fixed 16-byte cell per shard (pack number, offset, length, proof slot) and
//! the proofs of the data shards that prove themselves as flat chaining
//! values (`log2 k` of 32 bytes each): at k=4 m=2, 384 bytes per 256 KiB
//! chunk. An index is folded in ([`ShardTable::add`]) as soon as it has been
//! read and checked, and then dropped, so loading holds only the indexes in
//! flight, never all of them.
//!
//! The table trusts what it is given: the loader
//! ([`crate::fetch::packed`]) adds only indexes whose bytes hash to the pack
//! id the signed manifest names. A proof kept here is only a hint: a data
//! shard read alone must still rebuild its chunk id
//! ([`crate::core::shard_proof::verify`]).
//!
//! When two packs hold the same shard (a pack reused by dedup beside one
//! repacked by gc, say), the one of lowest rank wins, whatever order the
//! indexes were added in, so two loads of one manifest give the same table.

use std::ops::Range;

use blake3::hazmat::ChainingValue;

use crate::core::id::ChunkId;
use crate::core::pack::Index;
use crate::core::shard_proof::Proof;

/// No value in a cell's `u32` field.
const NONE: u32 = u32::MAX;

/// One shard's place: in which pack, where.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cell {
    /// The pack's number, in the order packs were added.
    pub pack: u32,
    pub offset: u32,
    pub len: u32,
    /// Position of its proof in the table's chaining values, or [`NONE`].
    proof: u32,
}

impl Cell {
    const EMPTY: Cell = Cell {
        pack: NONE,
        offset: 0,
        len: 0,
        proof: NONE,
    };

    pub fn range(&self) -> Range<u64> {
        self.offset as u64..self.offset as u64 + self.len as u64
    }
}

/// The shards of one image's chunks, by chunk id and shard index.
#[derive(Debug, Default, Clone)]
pub struct ShardTable {
    /// Shards per chunk.
    n: usize,
    /// Chaining values per proof: `log2 k` when data shards can prove
    /// themselves, else 0 (no proofs are kept).
    slots: usize,
    /// The image's distinct chunk ids, sorted; a chunk's row is its position.
    ids: Vec<ChunkId>,
    /// `n` cells per row.
    cells: Vec<Cell>,
    /// Per pack added: its rank (lower wins a shard two packs hold).
    ranks: Vec<u128>,
    /// `slots` chaining values per proof kept.
    proofs: Vec<ChainingValue>,
}

impl ShardTable {
    /// An empty table for the chunks `chunks` (all-zero ones as `None`,
    /// repeats allowed) of a code of `k` data and `n` shards in all.
    pub fn new<'a>(
        chunks: impl IntoIterator<Item = &'a Option<ChunkId>>,
        k: usize,
        n: usize,
    ) -> Self {
        let mut ids: Vec<ChunkId> = chunks.into_iter().flatten().copied().collect();
        ids.sort_unstable();
        ids.dedup();
        ids.shrink_to_fit();
        let slots = if k >= 2 && k.is_power_of_two() {
            k.trailing_zeros() as usize
        } else {
            0
        };
        // Room for a proof per data shard, at most what the table can keep
        // (a shard a lower-ranked pack takes over reuses its slot): grown by
        // doubling instead, loading held up to twice the proofs at once.
        let proofs = Vec::with_capacity(ids.len() * k.min(n) * slots);
        ShardTable {
            n,
            slots,
            cells: vec![Cell::EMPTY; ids.len() * n],
            ids,
            ranks: Vec::new(),
            proofs,
        }
    }

    /// Distinct chunks the table has rows for.
    pub fn chunks(&self) -> usize {
        self.ids.len()
    }

    /// Packs added so far.
    pub fn packs(&self) -> usize {
        self.ranks.len()
    }

    /// Bytes the table holds on the heap (its arrays' capacities).
    pub fn heap_bytes(&self) -> usize {
        self.ids.capacity() * size_of::<ChunkId>()
            + self.cells.capacity() * size_of::<Cell>()
            + self.ranks.capacity() * size_of::<u128>()
            + self.proofs.capacity() * size_of::<ChainingValue>()
    }

    fn row(&self, chunk: &ChunkId) -> Option<usize> {
        self.ids.binary_search(chunk).ok()
    }

    /// Fold in the index of one more pack, of rank `rank`; returns its
    /// number (what its cells' `pack` says). Entries of chunks the image does
    /// not use are skipped, and a shard another pack of lower rank holds
    /// keeps that pack.
    pub fn add(&mut self, rank: u128, index: &Index) -> u32 {
        let pack = self.ranks.len() as u32;
        self.ranks.push(rank);
        for (i, e) in index.entries().iter().enumerate() {
            let shard = e.shard as usize;
            if shard >= self.n {
                continue;
            }
            let Some(row) = self.row(&e.chunk) else {
                continue;
            };
            let at = row * self.n + shard;
            let old = self.cells[at];
            if old.pack != NONE && self.ranks[old.pack as usize] <= rank {
                continue;
            }
            let proof = match index.proof(i) {
                Some(p) if self.slots > 0 && p.0.len() == self.slots => {
                    let slot = if old.proof != NONE {
                        old.proof
                    } else {
                        self.proofs.extend_from_slice(&p.0);
                        (self.proofs.len() / self.slots - 1) as u32
                    };
                    let start = slot as usize * self.slots;
                    self.proofs[start..start + self.slots].copy_from_slice(&p.0);
                    slot
                }
                _ => NONE,
            };
            self.cells[at] = Cell {
                pack,
                offset: e.offset,
                len: e.len,
                proof,
            };
        }
        pack
    }

    /// Where shard `shard` of `chunk` lies, if any pack added holds it.
    pub fn cell(&self, chunk: &ChunkId, shard: usize) -> Option<Cell> {
        if shard >= self.n {
            return None;
        }
        let c = self.cells[self.row(chunk)? * self.n + shard];
        (c.pack != NONE).then_some(c)
    }

    /// Whether the shard of `cell` came with a proof.
    pub fn has_proof(&self, cell: &Cell) -> bool {
        cell.proof != NONE
    }

    /// The proof of the shard of `cell`, if its pack stored one.
    pub fn proof(&self, cell: &Cell) -> Option<Proof> {
        if cell.proof == NONE {
            return None;
        }
        let start = cell.proof as usize * self.slots;
        Some(Proof(self.proofs.get(start..start + self.slots)?.to_vec()))
    }

    /// Give back the spare capacity of the proofs once every pack is in
    /// (all of it when the packs stored none).
    pub fn shrink(&mut self) {
        self.proofs.shrink_to_fit();
        self.ranks.shrink_to_fit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::erasure::Codec;
    use crate::core::pack::{Pack, PackBuilder};
    use crate::core::shard_proof;

    /// Chunks `seeds` of 4 KiB, code 2+1, packed with their proofs.
    fn pack_of(seeds: &[u64], shards: &[usize]) -> (Pack, Vec<(ChunkId, Vec<u8>)>) {
        let codec = Codec::new(2, 1).unwrap();
        let mut b = PackBuilder::new(2, 1, 1, 0);
        let mut chunks = Vec::new();
        for &seed in seeds {
            let data = crate::core::sample::random(4096, seed);
            let id = ChunkId::of(&data);
            let proofs = shard_proof::prove(&data, 2).unwrap();
            for (s, o) in codec.encode_objects(id, &data).iter().enumerate() {
                if shards.contains(&s) {
                    assert!(b.push(id, s as u8, o, proofs.get(s).cloned()));
                }
            }
            chunks.push((id, data));
        }
        (b.finish(), chunks)
    }

    #[test]
    fn cells_and_proofs_are_the_index_entries_of_the_images_chunks() {
        let (pack, chunks) = pack_of(&[1, 2, 3], &[0, 1, 2]);
        let ids: Vec<ChunkId> = chunks.iter().map(|c| c.0).collect();
        // The image uses chunks 2 (twice) and 0, not 1.
        let image = [Some(ids[2]), None, Some(ids[0]), Some(ids[2])];
        let mut t = ShardTable::new(&image, 2, 3);
        assert_eq!(t.chunks(), 2);
        let room = t.proofs.capacity();
        assert_eq!(t.add(0, &pack.index), 0);
        assert_eq!(
            t.proofs.capacity(),
            room,
            "the proofs fit the room made for them"
        );
        for &(id, ref data) in [&chunks[0], &chunks[2]] {
            let shards = Codec::new(2, 1).unwrap().encode(data);
            for (s, shard) in shards.iter().enumerate() {
                let cell = t.cell(&id, s).unwrap();
                assert_eq!(cell.pack, 0);
                assert_eq!(cell.range(), pack.index.find(&id, s as u8).unwrap().range());
                match t.proof(&cell) {
                    Some(p) => {
                        assert!(s < 2, "only data shards carry proofs");
                        assert!(shard_proof::verify(&id, 4096, 2, s, shard, &p));
                    }
                    None => assert_eq!(s, 2),
                }
            }
        }
        assert!(t.cell(&ids[1], 0).is_none(), "not the image's chunk");
        assert!(t.cell(&ids[0], 3).is_none(), "no shard 3 in 2+1");
        // Ids once, 3 cells and 2 one-value proofs per chunk.
        t.shrink();
        assert_eq!(t.heap_bytes(), 2 * 32 + 6 * 16 + 16 + 4 * 32);
    }

    #[test]
    fn the_lowest_rank_wins_a_shard_whatever_the_order_added() {
        let (a, chunks) = pack_of(&[1, 2], &[0, 1]);
        let (b, _) = pack_of(&[2], &[0, 2]);
        let ids: Vec<Option<ChunkId>> = chunks.iter().map(|c| Some(c.0)).collect();
        let mut ab = ShardTable::new(&ids, 2, 3);
        ab.add(5, &a.index);
        ab.add(3, &b.index);
        let mut ba = ShardTable::new(&ids, 2, 3);
        ba.add(3, &b.index);
        ba.add(5, &a.index);
        let rank = |t: &ShardTable, c: Cell| t.ranks[c.pack as usize];
        for (id, _) in &chunks {
            for s in 0..3 {
                let (x, y) = (ab.cell(id, s), ba.cell(id, s));
                assert_eq!(
                    x.map(|c| (rank(&ab, c), c.range())),
                    y.map(|c| (rank(&ba, c), c.range()))
                );
                assert_eq!(x.and_then(|c| ab.proof(&c)), y.and_then(|c| ba.proof(&c)));
            }
        }
        // Chunk 2 shard 0 is in both: the rank-3 pack holds it.
        let shared = ab.cell(&chunks[1].0, 0).unwrap();
        assert_eq!(rank(&ab, shared), 3);
        assert_eq!(
            shared.range(),
            b.index.find(&chunks[1].0, 0).unwrap().range()
        );
        assert!(ab.proof(&shared).is_some());
        assert_eq!(rank(&ab, ab.cell(&chunks[1].0, 1).unwrap()), 5);
        assert_eq!(rank(&ab, ab.cell(&chunks[1].0, 2).unwrap()), 3);
        assert!(ab.cell(&chunks[0].0, 2).is_none());
    }

    #[test]
    fn proofs_that_cannot_verify_at_this_code_are_not_kept() {
        // k = 3 has no proofs; a proof of the wrong length is dropped.
        let (pack, chunks) = pack_of(&[1], &[0, 1, 2]);
        let ids = [Some(chunks[0].0)];
        let mut t = ShardTable::new(&ids, 3, 3);
        t.add(0, &pack.index);
        let cell = t.cell(&chunks[0].0, 0).unwrap();
        assert!(!t.has_proof(&cell) && t.proof(&cell).is_none());
        let mut t4 = ShardTable::new(&ids, 4, 3);
        t4.add(0, &pack.index);
        assert!(t4.proof(&t4.cell(&chunks[0].0, 0).unwrap()).is_none());
    }
}
