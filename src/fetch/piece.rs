//! One data shard alone: a read whose bytes lie inside one data shard of a
//! chunk fetches that shard from the one store that holds it and serves it
//! once its proof ([`crate::core::shard_proof`]) rebuilds the chunk id — one
//! request to one store instead of `k` requests to `k` stores, the farthest
//! of which sets the pace of a decode.
//!
//! Only format-v2 images have pieces: their pack indexes carry the proofs.
//! The table derives a shard's proof from what the other data columns'
//! indexes give ([`crate::core::pack_table`]), so while one of those
//! indexes is unreadable the shards that need it are not offered as pieces,
//! and reads inside them fetch the whole chunk.
//! A piece that fails (store down, bad header, proof refused) is charged to
//! its store like any bad shard; the caller then reads the whole chunk
//! ([`crate::fetch::scheduler`] races the two when the store is slow).

use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use crate::core::chunk::VerifiedPiece;
use crate::core::erasure::shard_payload;
use crate::error::Error;
use crate::fetch::{Fetcher, Plan, read_shard};

impl Plan {
    /// The data shard of chunk `index` that holds all of `[start, start +
    /// len)` and proves itself alone, if there is one (none before the pack
    /// table is loaded, [`Fetcher::table`]).
    pub fn piece_of(&self, index: u64, start: usize, len: usize) -> Option<usize> {
        let packed = self.packed()?;
        let id = self
            .manifest
            .chunks
            .get(index as usize)
            .copied()
            .flatten()?;
        let k = self.codec.data_shards();
        let s = self.manifest.chunk_len(index) / k;
        if len == 0 || s == 0 || start / s != (start + len - 1) / s {
            return None;
        }
        let shard = start / s;
        packed.cell(&id, shard)?;
        packed.has_proof(&id, shard).then_some(shard)
    }
}

impl Fetcher {
    /// How long the piece `shard` of chunk `index` may take before the
    /// whole-chunk read starts beside it.
    pub fn piece_hedge(&self, plan: &Plan, index: u64, shard: usize) -> Duration {
        let store = plan.manifest.chunks[index as usize]
            .and_then(|id| plan.shard_at(&id, shard))
            .map(|at| at.store);
        self.hedge().over(store)
    }

    /// Fetch data shard `shard` of chunk `index` and prove it against the
    /// chunk id. Runs in the calling task, so at its priority class.
    pub async fn fetch_piece(
        &self,
        plan: &Plan,
        index: u64,
        shard: usize,
    ) -> Result<VerifiedPiece, Error> {
        let m = &plan.manifest;
        let none = || Error::Invalid(format!("chunk {index} shard {shard} is not a piece"));
        let id = m
            .chunks
            .get(index as usize)
            .copied()
            .flatten()
            .ok_or_else(none)?;
        let packed = self.table(plan).await.ok_or_else(none)?;
        let proof = packed.proof(&id, shard).ok_or_else(none)?;
        let at = plan.shard_at(&id, shard).ok_or_else(none)?;
        let (len, k) = (m.chunk_len(index), plan.codec.data_shards());
        let stats = &self.stats.stores[at.store];
        let name = self.stores[at.store].name();
        let t = Instant::now();
        let obj = match read_shard(&self.stores[at.store], &at, len, k).await {
            Ok(obj) => obj,
            Err(e) => {
                stats.record_error();
                if e.is_not_found() {
                    self.reload(plan).await;
                }
                return Err(Error::Unavailable(format!(
                    "store {name}: chunk {} shard {shard}: {e}",
                    id.short()
                )));
            }
        };
        stats.record_ok(t.elapsed(), obj.len());
        let refused = |what: String| {
            stats.record_corrupt();
            tracing::warn!(store = name, chunk = %id.short(), shard, "bad piece: {what}");
            Error::Corrupt(format!(
                "store {name}: chunk {} shard {shard}: {what}",
                id.short()
            ))
        };
        let payload =
            shard_payload(&obj, id, shard, &plan.codec, len).map_err(|e| refused(e.to_string()))?;
        let piece = VerifiedPiece::prove(id, len as u64, k, shard, payload, &proof)
            .ok_or_else(|| refused("its proof does not rebuild the chunk id".into()))?;
        self.stats.pieces_fetched.fetch_add(1, Relaxed);
        Ok(piece)
    }
}
