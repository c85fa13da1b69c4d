//! Where the shards of one image lie in its packs, held compactly for as
//! long as the image is mounted: the in-memory form of the pack indexes a
//! manifest names ([`crate::core::pack::Index`]).
//!
//! A mount holds this table for every image it reads, so its size is what
//! makes the daemon's memory grow with the image. Per distinct chunk it
//! holds the chunk id once (a sorted array, found by binary search), one
//! fixed 12-byte cell per shard (pack number, offset, length) and, when data
//! shards can prove themselves, the chaining value of each data shard (`k`
//! of 32 bytes, with a bit saying whether it is known): at k=4 m=2, 232
//! bytes per 256 KiB chunk. A shard's proof ([`Proof`]: its siblings up to
//! the root) is derived from the other data shards' values when asked for,
//! instead of being kept per shard (which took 256 bytes a chunk at k=4 and
//! 768 at k=8). The values come from the proofs the indexes carry: the
//! lowest level of data shard `j`'s proof is the value of shard `j xor 1`,
//! so a proof for shard `i` can be derived once the indexes of the data
//! columns other than `i xor 1` are in. An index is folded in
//! ([`ShardTable::add`]) as soon as it has been read and checked, and then
//! dropped, so loading holds only the indexes in flight, never all of them.
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

use blake3::hazmat::{ChainingValue, Mode, merge_subtrees_non_root};

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
}

impl Cell {
    const EMPTY: Cell = Cell {
        pack: NONE,
        offset: 0,
        len: 0,
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
    /// Data shards per chunk when they can prove themselves (`k` a power of
    /// two, at least 2), else 0 (no values are kept).
    k: usize,
    /// The image's distinct chunk ids, sorted; a chunk's row is its position.
    ids: Vec<ChunkId>,
    /// `n` cells per row.
    cells: Vec<Cell>,
    /// Per pack added: its rank (lower wins a shard two packs hold).
    ranks: Vec<u128>,
    /// `k` per row: the chaining value of each data shard, where known.
    leaves: Vec<ChainingValue>,
    /// A bit per value of `leaves`: known.
    known: Vec<u64>,
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
        let k = if k >= 2 && k.is_power_of_two() && k <= n {
            k
        } else {
            0
        };
        let values = ids.len() * k;
        ShardTable {
            n,
            k,
            cells: vec![Cell::EMPTY; ids.len() * n],
            ids,
            ranks: Vec::new(),
            leaves: vec![[0; 32]; values],
            known: vec![0; values.div_ceil(64)],
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
            + self.leaves.capacity() * size_of::<ChainingValue>()
            + self.known.capacity() * size_of::<u64>()
    }

    fn is_known(&self, at: usize) -> bool {
        self.known[at / 64] & (1 << (at % 64)) != 0
    }

    /// Keep `cv` as the value of data shard `shard` of `row`.
    fn learn(&mut self, row: usize, shard: usize, cv: ChainingValue) {
        let at = row * self.k + shard;
        self.leaves[at] = cv;
        self.known[at / 64] |= 1 << (at % 64);
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
            if shard < self.k
                && let Some(p) = index.proof(i)
                && p.0.len() == self.k.trailing_zeros() as usize
            {
                // The lowest level of a proof is the value of its neighbour.
                self.learn(row, shard ^ 1, p.0[0]);
            }
            let at = row * self.n + shard;
            let old = self.cells[at];
            if old.pack != NONE && self.ranks[old.pack as usize] <= rank {
                continue;
            }
            self.cells[at] = Cell {
                pack,
                offset: e.offset,
                len: e.len,
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

    /// The row of `chunk` if a proof of its data shard `shard` can be
    /// derived: the values of every other data shard are known.
    fn provable_row(&self, chunk: &ChunkId, shard: usize) -> Option<usize> {
        if shard >= self.k {
            return None;
        }
        let row = self.row(chunk)?;
        (0..self.k)
            .all(|j| j == shard || self.is_known(row * self.k + j))
            .then_some(row)
    }

    /// Whether data shard `shard` of `chunk` has a proof.
    pub fn has_proof(&self, chunk: &ChunkId, shard: usize) -> bool {
        self.provable_row(chunk, shard).is_some()
    }

    /// The proof of data shard `shard` of `chunk`, derived from the other
    /// data shards' values (see the module doc), if they are known.
    pub fn proof(&self, chunk: &ChunkId, shard: usize) -> Option<Proof> {
        let row = self.provable_row(chunk, shard)?;
        // Each level merges pairs of the one below, up to the root's two
        // children. The shard's own value (maybe unknown) only reaches its
        // ancestors, which a proof never holds.
        let mut level = self.leaves[row * self.k..(row + 1) * self.k].to_vec();
        let mut proof = Vec::with_capacity(self.k.trailing_zeros() as usize);
        let mut at = shard;
        loop {
            proof.push(level[at ^ 1]);
            if level.len() == 2 {
                return Some(Proof(proof));
            }
            level = level
                .chunks(2)
                .map(|p| merge_subtrees_non_root(&p[0], &p[1], Mode::Hash))
                .collect();
            at /= 2;
        }
    }

    /// Give back the spare capacity once every pack is in.
    pub fn shrink(&mut self) {
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
        let room = (t.cells.capacity(), t.leaves.capacity(), t.known.capacity());
        assert_eq!(t.add(0, &pack.index), 0);
        assert_eq!(
            (t.cells.capacity(), t.leaves.capacity(), t.known.capacity()),
            room,
            "what a pack adds fits the room made for it"
        );
        for &(id, ref data) in [&chunks[0], &chunks[2]] {
            let shards = Codec::new(2, 1).unwrap().encode(data);
            for (s, shard) in shards.iter().enumerate() {
                let cell = t.cell(&id, s).unwrap();
                assert_eq!(cell.pack, 0);
                assert_eq!(cell.range(), pack.index.find(&id, s as u8).unwrap().range());
                match t.proof(&id, s) {
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
        // Ids once, 3 cells and 2 data shard values per chunk, and a word of
        // bits saying which values are known.
        t.shrink();
        assert_eq!(t.heap_bytes(), 2 * 32 + 6 * 12 + 16 + 4 * 32 + 8);
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
                assert_eq!(ab.proof(id, s), ba.proof(id, s));
            }
        }
        // Chunk 2 shard 0 is in both: the rank-3 pack holds it.
        let shared = ab.cell(&chunks[1].0, 0).unwrap();
        assert_eq!(rank(&ab, shared), 3);
        assert_eq!(
            shared.range(),
            b.index.find(&chunks[1].0, 0).unwrap().range()
        );
        assert!(ab.proof(&chunks[1].0, 0).is_some());
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
        assert!(!t.has_proof(&chunks[0].0, 0) && t.proof(&chunks[0].0, 0).is_none());
        let mut t4 = ShardTable::new(&ids, 4, 6);
        t4.add(0, &pack.index);
        assert!(t4.proof(&chunks[0].0, 0).is_none());
    }

    /// At 4+2, data shard `j`'s index gives the value of shard `j xor 1`;
    /// with every data column in, each data shard's proof is derived and
    /// equals the one the chunk makes; without column 1, only shard 0 (the
    /// one whose proof does not need shard 0's value) has one.
    #[test]
    fn proofs_are_derived_from_the_other_data_columns() {
        let codec = Codec::new(4, 2).unwrap();
        let data = crate::core::sample::random(4096, 5);
        let id = ChunkId::of(&data);
        let proofs = shard_proof::prove(&data, 4).unwrap();
        let objects = codec.encode_objects(id, &data);
        let column = |s: usize| {
            let mut b = PackBuilder::new(4, 2, 2, 0);
            assert!(b.push(id, s as u8, &objects[s], proofs.get(s).cloned()));
            b.finish()
        };
        let columns: Vec<Pack> = (0..6).map(column).collect();
        let ids = [Some(id)];
        let mut all = ShardTable::new(&ids, 4, 6);
        let mut without_1 = ShardTable::new(&ids, 4, 6);
        for (s, c) in columns.iter().enumerate() {
            all.add(s as u128, &c.index);
            if s != 1 {
                without_1.add(s as u128, &c.index);
            }
        }
        let shards = codec.encode(&data);
        for s in 0..4 {
            assert_eq!(all.proof(&id, s).as_ref(), Some(&proofs[s]), "shard {s}");
            assert!(shard_proof::verify(&id, 4096, 4, s, &shards[s], &proofs[s]));
            assert_eq!(without_1.has_proof(&id, s), s == 0, "shard {s}");
        }
        assert_eq!(without_1.proof(&id, 0).as_ref(), Some(&proofs[0]));
        assert!(all.proof(&id, 4).is_none(), "parity shards have no proof");
    }
}
