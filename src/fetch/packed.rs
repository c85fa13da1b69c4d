//! Where the shards of a format-v2 image lie: the indexes of the packs its
//! manifest names, loaded from their stores and turned into one table.
//!
//! Each index is read by one range request from the store that holds its
//! pack, and accepted only if its bytes hash to the pack id the manifest
//! gives (so a store cannot swap in another index), it decodes
//! ([`crate::core::pack::Index::decode`]) and its code is the image's. A pack
//! whose index cannot be read counts as lost with its store: its shards are
//! missing from the table and the chunk race reads the others (one warning
//! names it).
//!
//! The table ([`ShardTable`]) is filled as each index arrives, and the
//! index is dropped once folded in: loading holds at most
//! 16 indexes (`PARALLEL_INDEX_READS`), and what stays is the compact table.
//! Entries of chunks the image does not use (a pack reused from another
//! version by dedup) are skipped. Packs rank by (store, id), so the table
//! is the same whatever order the reads finished in.
//!
//! A table keeps the packs it could not read ([`Packed::failed`]);
//! [`Packed::retry`] reads just those again and folds in the ones that now
//! come, so a store that was down when the table was read gets its shards
//! back without the other indexes being read again.

use std::collections::HashSet;

use futures::StreamExt;

use crate::core::id::{ChunkId, PackId};
use crate::core::layout;
use crate::core::manifest::{Manifest, PackRef};
use crate::core::moved::{self, Moved};
use crate::core::pack::Index;
pub use crate::core::pack_table::Cell;
use crate::core::pack_table::ShardTable;
use crate::core::shard_proof::Proof;
use crate::error::Error;
use crate::store::DynStore;

/// Index reads at once while a plan loads.
const PARALLEL_INDEX_READS: usize = 16;

/// A pack the table points into.
#[derive(Debug, Clone)]
pub struct PackAt {
    /// The fetcher's store index.
    pub store: usize,
    pub key: String,
    pub id: PackId,
}

/// The shards of one image, by chunk and shard index.
#[derive(Debug, Default, Clone)]
pub struct Packed {
    /// By the pack number of the table's cells.
    pub packs: Vec<PackAt>,
    table: ShardTable,
    /// Packs whose index could not be loaded (named by the manifest, or by
    /// a moved record), to be read again ([`Packed::retry`]).
    pub failed: Vec<PackRef>,
}

impl Packed {
    /// An empty table for `manifest`'s chunks, `n` shards each.
    pub fn new(manifest: &Manifest, n: usize) -> Packed {
        Packed {
            packs: Vec::new(),
            table: ShardTable::new(&manifest.chunks, manifest.erasure.data, n),
            failed: Vec::new(),
        }
    }

    /// Where shard `shard` of `chunk` lies, if any readable pack holds it.
    pub fn cell(&self, chunk: &ChunkId, shard: usize) -> Option<Cell> {
        self.table.cell(chunk, shard)
    }

    /// Whether data shard `shard` of `chunk` has a proof.
    pub fn has_proof(&self, chunk: &ChunkId, shard: usize) -> bool {
        self.table.has_proof(chunk, shard)
    }

    /// The proof of data shard `shard` of `chunk`, if the packs' indexes
    /// gave what it is derived from.
    pub fn proof(&self, chunk: &ChunkId, shard: usize) -> Option<Proof> {
        self.table.proof(chunk, shard)
    }

    /// Bytes the table holds on the heap.
    pub fn heap_bytes(&self) -> usize {
        self.table.heap_bytes()
            + self.packs.capacity() * size_of::<PackAt>()
            + self.packs.iter().map(|p| p.key.capacity()).sum::<usize>()
    }

    /// Fold in one checked index (pure: the tests feed it directly).
    pub fn add(&mut self, at: PackAt, index: &Index) {
        // By store, then by the first 96 bits of the pack id.
        let mut id = [0; 16];
        id[4..].copy_from_slice(&at.id.0.0[..12]);
        let rank = ((at.store as u128) << 96) | u128::from_be_bytes(id);
        self.table.add(rank, index);
        self.packs.push(at);
    }

    /// Build the table from loaded indexes (pure: the tests feed it directly).
    pub fn build(manifest: &Manifest, n: usize, loaded: Vec<(PackAt, Index)>) -> Packed {
        let mut t = Packed::new(manifest, n);
        for (at, index) in loaded {
            t.add(at, &index);
        }
        t.table.shrink();
        t
    }

    /// Load the indexes of every pack `manifest` names from `stores` (the
    /// fetcher's, by name) and build the table. A pack that is not found is
    /// looked up in the moved records ([`crate::core::moved`]): the packs
    /// that took over its shards are loaded instead (following up to
    /// [`MAX_MOVES`] records).
    pub async fn load(stores: &[DynStore], manifest: &Manifest, n: usize) -> Packed {
        let mut t = Packed::new(manifest, n);
        t.fold(stores, manifest, manifest.packs.clone()).await;
        t
    }

    /// The packs that could not be read, read again: a copy of the table
    /// with those that now come folded in, or `None` when none did.
    pub async fn retry(&self, stores: &[DynStore], manifest: &Manifest) -> Option<Packed> {
        if self.failed.is_empty() {
            return None;
        }
        let mut t = self.clone();
        let failed = std::mem::take(&mut t.failed);
        let before = t.packs.len();
        t.fold(stores, manifest, failed).await;
        (t.packs.len() > before).then_some(t)
    }

    /// Read the indexes of `refs` and fold them in; those that cannot be
    /// read go to `failed` (and one warning names them).
    fn fold<'a>(
        &'a mut self,
        stores: &'a [DynStore],
        manifest: &'a Manifest,
        refs: Vec<PackRef>,
    ) -> futures::future::BoxFuture<'a, ()> {
        // (Boxed, and its reads boxed: it runs inside spawned fetches.)
        Box::pin(async move {
            let mut seen: HashSet<PackId> = refs.iter().map(|p| p.id).collect();
            seen.extend(self.packs.iter().map(|p| p.id));
            let mut todo: Vec<(PackRef, usize)> = refs.into_iter().map(|p| (p, 0)).collect();
            let mut unreadable = Vec::new();
            while !todo.is_empty() {
                let jobs: Vec<futures::future::BoxFuture<'a, Loaded>> = std::mem::take(&mut todo)
                    .into_iter()
                    .filter_map(|(p, depth)| {
                        let s = stores.iter().position(|s| s.name() == p.store)?;
                        let job = async move {
                            let r = load_index(&stores[s], s, manifest, &p).await;
                            (p, depth, r)
                        };
                        Some(Box::pin(job) as futures::future::BoxFuture<'a, Loaded>)
                    })
                    .collect();
                let mut results =
                    futures::stream::iter(jobs).buffer_unordered(PARALLEL_INDEX_READS);
                while let Some((p, depth, r)) = results.next().await {
                    let why = match r {
                        Ok((at, index)) => {
                            self.add(at, &index);
                            continue;
                        }
                        Err(Error::Store(e)) if e.is_not_found() && depth < MAX_MOVES => {
                            match read_moved(stores, &p.id).await {
                                Some(m) => {
                                    todo.extend(
                                        m.to.into_iter()
                                            .filter(|t| seen.insert(t.id))
                                            .map(|t| (t, depth + 1)),
                                    );
                                    continue;
                                }
                                None => "gone, and no record of where it moved".to_string(),
                            }
                        }
                        Err(e) => e.to_string(),
                    };
                    unreadable.push(format!("{} on {}: {why}", p.id.short(), p.store));
                    self.failed.push(p);
                }
            }
            self.table.shrink();
            if !unreadable.is_empty() {
                crate::repo::warnings::warn(
                    "pack-index",
                    crate::repo::warnings::summary(
                        &format!("{}: pack indexes unreadable", manifest.name),
                        &unreadable,
                        3,
                    ),
                );
            }
        })
    }
}

/// One index read: the pack asked for, after how many moves, and what came.
type Loaded = (PackRef, usize, Result<(PackAt, Index), Error>);

/// How many moved records a reader follows from a pack a manifest names.
pub const MAX_MOVES: usize = 4;

/// The moved record of pack `from`, from the first store that has a valid one.
async fn read_moved(stores: &[DynStore], from: &PackId) -> Option<Moved> {
    let key = layout::moved_key(from);
    for s in stores {
        match s.get_bounded(&key, moved::MAX_LEN).await {
            Ok(b) => match Moved::from_bytes(&b, from) {
                Ok(m) => return Some(m),
                Err(e) => tracing::warn!(store = s.name(), "{e}"),
            },
            Err(e) if e.is_not_found() => {}
            Err(e) => tracing::debug!(store = s.name(), "reading {key}: {e}"),
        }
    }
    None
}

/// Read and check one pack's index.
async fn load_index(
    store: &DynStore,
    s: usize,
    manifest: &Manifest,
    p: &PackRef,
) -> Result<(PackAt, Index), Error> {
    let key = layout::pack_key(&p.id);
    let range = p.index_offset..p.index_offset + p.index_len;
    let bytes = store.get_range(&key, Some(range)).await?;
    let index = check_index(&bytes, p, manifest)?;
    Ok((
        PackAt {
            store: s,
            key,
            id: p.id,
        },
        index,
    ))
}

/// The index in `bytes` if they are the index `p` names, for `manifest`'s code.
pub fn check_index(bytes: &[u8], p: &PackRef, manifest: &Manifest) -> Result<Index, Error> {
    if bytes.len() as u64 != p.index_len || PackId::of(bytes) != p.id {
        return Err(Error::Corrupt(format!(
            "the index read is not the one the manifest names ({} bytes)",
            bytes.len()
        )));
    }
    let index = Index::decode(bytes).map_err(|e| Error::Corrupt(e.to_string()))?;
    let code = (index.k as usize, index.m as usize);
    if code != (manifest.erasure.data, manifest.erasure.parity) || index.data_len != p.index_offset
    {
        return Err(Error::Corrupt(format!(
            "index of code {}+{} over {} bytes does not fit the manifest",
            index.k, index.m, index.data_len
        )));
    }
    Ok(index)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::erasure::Codec;
    use crate::core::manifest::PackRef;
    use crate::core::pack::PackBuilder;
    use std::sync::Arc;

    fn manifest(chunks: Vec<Option<ChunkId>>, packs: Vec<PackRef>) -> Manifest {
        Manifest {
            packs,
            ..Manifest::of_chunks(4096, chunks)
        }
    }

    /// A random 4 KiB chunk coded 2+1 (`seed` picks it), and one pack per
    /// shard, shard `s` in pack `s`.
    fn chunk_in_packs(seed: u64) -> (ChunkId, Vec<crate::core::pack::Pack>) {
        let codec = Codec::new(2, 1).unwrap();
        let data = crate::core::sample::random(4096, seed);
        let id = ChunkId::of(&data);
        let packs = (codec.encode_objects(id, &data).iter().enumerate())
            .map(|(shard, object)| {
                let mut b = PackBuilder::new(2, 1, 0, 0);
                assert!(b.push(id, shard as u8, object, None));
                b.finish()
            })
            .collect();
        (id, packs)
    }

    #[test]
    fn cells_point_at_each_shard_and_skip_other_images_chunks() {
        let codec = Codec::new(2, 1).unwrap();
        let mut b = PackBuilder::new(2, 1, 1, 0);
        let mut ids = Vec::new();
        for c in 0..3 {
            let data = crate::core::sample::random(4096, c);
            let id = ChunkId::of(&data);
            let proofs = crate::core::shard_proof::prove(&data, 2).unwrap();
            for (s, o) in codec.encode_objects(id, &data).iter().enumerate() {
                let proof = proofs.get(s).cloned();
                assert!(b.push(id, s as u8, o, proof));
            }
            ids.push(id);
        }
        let pack = b.finish();
        let pref = pack.reference("a");
        // The image uses chunks 0 and 2 (twice), not 1.
        let m = manifest(
            vec![Some(ids[0]), None, Some(ids[2]), Some(ids[2])],
            vec![pref.clone()],
        );
        let encoded = &pack.bytes[pack.index_range.start as usize..pack.index_range.end as usize];
        let index = check_index(encoded, &pref, &m).unwrap();
        let at = PackAt {
            store: 0,
            key: layout::pack_key(&pack.id),
            id: pack.id,
        };
        let t = Packed::build(&m, 3, vec![(at, index)]);
        for &c in [ids[0], ids[2]].iter() {
            for s in 0..3 {
                let cell = t.cell(&c, s).unwrap();
                let want = pack.index.find(&c, s as u8).unwrap();
                assert_eq!(cell.range(), want.range());
                assert_eq!(t.proof(&c, s).is_some(), s < 2, "data shards carry proofs");
            }
        }
        assert!(t.cell(&ids[1], 0).is_none());
        assert!(t.cell(&ids[0], 3).is_none());
        // Another index under this pack's name, or a different code, is refused.
        let mut wrong = encoded.to_vec();
        wrong[30] ^= 1;
        assert!(check_index(&wrong, &pref, &m).is_err());
        let mut m3 = m.clone();
        m3.erasure.parity = 2;
        assert!(check_index(encoded, &pref, &m3).is_err());
    }

    /// A pack that is gone is found through its moved record (and a record
    /// of a record); a gone pack without one, or with a record that lies
    /// about where it came from, leaves its shards out, with the pack named.
    #[tokio::test]
    async fn gone_packs_are_followed_through_their_moved_records() {
        use crate::store::Store;
        use crate::store::memory::MemoryStore;
        let (id, packs) = chunk_in_packs(9);
        let pref = |p: &crate::core::pack::Pack| p.reference("a");
        let store = Arc::new(MemoryStore::new("a"));
        let stores: Vec<DynStore> = vec![store.clone()];
        // Shard 0: its pack moved twice (old -> mid -> new); only new exists.
        let new = &packs[0];
        store
            .put(&layout::pack_key(&new.id), new.bytes.clone())
            .await
            .unwrap();
        let (old, mid) = (PackId::of(b"old"), PackId::of(b"mid"));
        let mid_ref = PackRef {
            id: mid,
            ..pref(new)
        };
        for (from, to) in [(old, mid_ref), (mid, pref(new))] {
            let rec = Moved::new(from, vec![to]).to_bytes();
            store
                .put(&layout::moved_key(&from), rec.into())
                .await
                .unwrap();
        }
        // Shard 1: gone with no record. Shard 2: a record that names another pack.
        let (lost, liar) = (PackId::of(b"lost"), PackId::of(b"liar"));
        let rec = Moved::new(PackId::of(b"else"), vec![pref(new)]).to_bytes();
        store
            .put(&layout::moved_key(&liar), rec.into())
            .await
            .unwrap();
        let named = |id| PackRef { id, ..pref(new) };
        let m = manifest(vec![Some(id)], vec![named(old), named(lost), named(liar)]);
        let t = Packed::load(&stores, &m, 3).await;
        let cell = t.cell(&id, 0).expect("found through two records");
        assert_eq!(t.packs[cell.pack as usize].id, new.id);
        assert!(t.cell(&id, 1).is_none() && t.cell(&id, 2).is_none());
        assert_eq!(t.failed.len(), 2, "{:?}", t.failed);
        assert!(t.failed.iter().any(|p| p.id == lost));
    }

    /// A pack whose store was down when the table was read is left out and
    /// kept to be read again; read again while the store is still down it
    /// gives nothing, once the store is back its shards are in the table.
    #[tokio::test]
    async fn packs_unreadable_at_load_are_read_again() {
        use crate::store::Store;
        use crate::store::fault::{FaultMode, Faulty};
        use crate::store::memory::MemoryStore;
        let (id, packs) = chunk_in_packs(3);
        let (mut stores, mut refs, mut controls): (Vec<DynStore>, _, Vec<_>) =
            (Vec::new(), Vec::new(), Vec::new());
        for (shard, pack) in packs.iter().enumerate() {
            let name = format!("s{shard}");
            let mem = Arc::new(MemoryStore::new(&name));
            mem.put(&layout::pack_key(&pack.id), pack.bytes.clone())
                .await
                .unwrap();
            let faulty = Faulty::new(mem);
            controls.push(faulty.control());
            stores.push(Arc::new(faulty));
            refs.push(pack.reference(&name));
        }
        let m = manifest(vec![Some(id)], refs);
        controls[1].set(FaultMode::Down);
        let t = Packed::load(&stores, &m, 3).await;
        assert!(t.cell(&id, 0).is_some() && t.cell(&id, 1).is_none());
        assert_eq!(t.failed.len(), 1);
        assert!(t.retry(&stores, &m).await.is_none(), "still down");
        controls[1].set(FaultMode::Healthy);
        let again = t.retry(&stores, &m).await.expect("the store is back");
        for shard in 0..3 {
            let cell = again.cell(&id, shard).unwrap();
            assert_eq!(again.packs[cell.pack as usize].store, shard);
        }
        assert!(again.failed.is_empty());
        assert!(
            again.retry(&stores, &m).await.is_none(),
            "nothing left to read"
        );
    }
}
