//! Reading a run of chunks of a format-v2 image at once, column by column:
//! the bulk path of `get` (and of any reader that wants many chunks).
//!
//! A push writes shard `i` of consecutive chunks next to each other in one
//! pack stream on one store ([`crate::repo::packer`]). So for a run of
//! chunks, column `i` is one range request per pack it touches (nearby
//! ranges merged, [`coalesce`]), and `k` columns from `k` stores rebuild the
//! run. For each run the reader:
//! 1. ranks the columns every chunk of the run has by when their store would
//!    likely finish sending them ([`StoreStats::eta_us`]: latency, measured
//!    bulk throughput and bytes already asked of it), one at a time, each
//!    pick adding its bytes to its store's queue before the next is ranked
//!    ([`rank`]): two columns on one store share its link, so the second
//!    often goes to a parity column on an idle store (a parity column costs
//!    its decode, `PARITY_US_PER_MIB`). A store that is slow or already busy
//!    gives its share to the others, and all links carry the run;
//! 2. asks for the best `k`; a failed request or a column with any shard
//!    failing its header check is replaced by the next;
//! 3. when all but the last needed columns are in and the last is taking
//!    longer than all the others did, asks one more (a hedge);
//! 4. with `k` good columns, decodes each chunk (only with parity among them)
//!    and verifies it against its id.
//!
//! A chunk that does not verify, or a run for which `k` columns cannot be
//! had, is fetched chunk by chunk by [`Fetcher::fetch`], which tries every
//! shard and finds forged ones. Nothing leaves unverified.
//!
//! [`StoreStats::eta_us`]: super::stats::StoreStats::eta_us

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tokio::time::Instant;

use crate::core::chunk::VerifiedChunk;
use crate::core::erasure::shard_payload;
use crate::core::id::ChunkId;
use crate::core::pack::coalesce;
use crate::error::Error;
use crate::fetch::packed::{Cell, Packed};
use crate::fetch::race::MIN_HEDGE;
use crate::fetch::{Fetcher, Plan, decode_verify};

/// Ranges of one pack closer than this are read as one request.
const GAP: u64 = 256 << 10;
/// Largest single range request.
const MAX_REQUEST: u64 = 64 << 20;
/// What a parity column costs on top of its transfer: rebuilding data from
/// parity, counted as microseconds per MiB of column (about 250 MB/s, well
/// under what the Reed-Solomon decoder does, so a data column wins on a
/// fast link and a parity column on an idle one).
const PARITY_US_PER_MIB: u64 = 4_000;

/// The order to ask for `cands` (column, store, bytes) in: greedily, the
/// column whose store would finish it soonest (`eta(store, bytes queued)`,
/// microseconds, plus the decode cost of a parity column, `column >= k`),
/// counting the columns already picked in their store's queue. Ties go to
/// the lower column. Pure.
pub fn rank(
    cands: &[(usize, usize, u64)],
    k: usize,
    eta: impl Fn(usize, u64) -> u64,
) -> Vec<usize> {
    let stores = cands.iter().map(|c| c.1 + 1).max().unwrap_or(0);
    let mut queued = vec![0u64; stores];
    let mut rest: Vec<usize> = (0..cands.len()).collect();
    let mut order = Vec::with_capacity(cands.len());
    let cost = |i: usize, queued: &[u64]| {
        let (c, s, bytes) = cands[i];
        let decode = if c >= k {
            (bytes * PARITY_US_PER_MIB) >> 20
        } else {
            0
        };
        (eta(s, queued[s] + bytes) + decode, c)
    };
    while !rest.is_empty() {
        let (at, _) = rest
            .iter()
            .enumerate()
            .min_by_key(|&(_, &i)| cost(i, &queued))
            .expect("not empty");
        let i = rest.remove(at);
        queued[cands[i].1] += cands[i].2;
        order.push(i);
    }
    order
}

/// One chunk of a run.
struct Member {
    index: u64,
    id: ChunkId,
    len: usize,
}

/// What reading one column of a run gave.
struct ColumnRead {
    column: usize,
    store: usize,
    took: Duration,
    result: Result<Vec<Bytes>, String>,
}

impl Fetcher {
    /// Fetch and verify the chunks `run` (indexes of non-zero chunks, in
    /// image order) of a v2 image; each result is its chunk or why it could
    /// not be had. A v1 image is fetched chunk by chunk.
    pub async fn fetch_run(
        &self,
        plan: &Plan,
        run: &[u64],
    ) -> Vec<(u64, Result<VerifiedChunk, Error>)> {
        let members: Vec<Member> = run
            .iter()
            .filter_map(|&i| {
                let id = plan.manifest.chunks.get(i as usize).copied().flatten()?;
                Some(Member {
                    index: i,
                    id,
                    len: plan.manifest.chunk_len(i),
                })
            })
            .collect();
        let columns = match self.table(plan).await {
            Some(_) if members.len() > 1 => self.read_columns(plan, &members).await,
            _ => None,
        };
        let mut out = Vec::with_capacity(members.len());
        for (j, mem) in members.iter().enumerate() {
            if let Some(cols) = &columns {
                let n = plan.codec().total_shards();
                let mut got: Vec<Option<Bytes>> = vec![None; n];
                for (c, payloads) in cols {
                    got[*c] = Some(payloads[j].clone());
                }
                if let Ok(chunk) = decode_verify(plan.codec(), &got, mem.len, mem.id) {
                    if cols.iter().any(|(c, _)| *c >= plan.codec().data_shards()) {
                        self.stats.degraded_reads.fetch_add(1, Relaxed);
                    }
                    self.stats.chunks_fetched.fetch_add(1, Relaxed);
                    out.push((mem.index, Ok(chunk)));
                    continue;
                }
            }
            out.push((mem.index, self.fetch(plan, mem.index).await));
        }
        out
    }

    /// `k` good columns of the run (column, payload per member), or `None`
    /// when they cannot be had this way.
    async fn read_columns(
        &self,
        plan: &Plan,
        members: &[Member],
    ) -> Option<Vec<(usize, Vec<Bytes>)>> {
        let packed = plan.packed()?;
        let codec = plan.codec();
        let (k, n) = (codec.data_shards(), codec.total_shards());
        // The columns every member has, with their cells and main store.
        let mut cands: Vec<(usize, usize, Vec<Cell>, u64)> = Vec::new();
        for c in 0..n {
            let cells: Option<Vec<Cell>> = members.iter().map(|m| packed.cell(&m.id, c)).collect();
            let Some(cells) = cells else { continue };
            let store = packed.packs[cells[0].pack as usize].store;
            let bytes = cells.iter().map(|x| x.len as u64).sum();
            cands.push((c, store, cells, bytes));
        }
        if cands.len() < k {
            return None;
        }
        let brief: Vec<_> = cands.iter().map(|c| (c.0, c.1, c.3)).collect();
        let order = rank(&brief, k, |s, bytes| self.stats.stores[s].eta_us(bytes));
        let mut slots: Vec<_> = cands.into_iter().map(Some).collect();
        let cands: Vec<_> = order.into_iter().filter_map(|i| slots[i].take()).collect();

        let began = Instant::now();
        let mut next = 0;
        let mut inflight = FuturesUnordered::new();
        let mut good: Vec<(usize, Vec<Bytes>)> = Vec::new();
        let mut done_at: Vec<Duration> = Vec::new();
        let mut hedge_at: Option<Instant> = None;
        let packed = &packed;
        let launch = |i: usize| {
            let (column, store, cells, bytes) = cands[i].clone();
            self.stats.stores[store].pending.fetch_add(bytes, Relaxed);
            async move {
                let t = Instant::now();
                let result = self
                    .read_column(plan, packed, members, column, &cells)
                    .await;
                self.stats.stores[store].pending.fetch_sub(bytes, Relaxed);
                ColumnRead {
                    column,
                    store,
                    took: t.elapsed(),
                    result,
                }
            }
        };
        while next < k {
            inflight.push(launch(next));
            next += 1;
        }
        loop {
            tokio::select! {
                Some(r) = inflight.next() => {
                    match r.result {
                        Ok(payloads) => {
                            done_at.push(r.took);
                            good.push((r.column, payloads));
                        }
                        Err(e) => {
                            tracing::debug!(store = self.stores[r.store].name(), column = r.column, "column read failed: {e}");
                            if next < cands.len() {
                                inflight.push(launch(next));
                                next += 1;
                            }
                        }
                    }
                    if good.len() >= k {
                        good.truncate(k);
                        good.sort_by_key(|(c, _)| *c);
                        return Some(good);
                    }
                    if inflight.is_empty() {
                        return None;
                    }
                    // All but the last needed are in: hedge if the rest take
                    // longer than the slowest so far did.
                    if good.len() + 1 == k && hedge_at.is_none() && next < cands.len() {
                        let slowest = done_at.iter().max().copied().unwrap_or_default();
                        hedge_at = Some(began + slowest.max(MIN_HEDGE) * 2);
                    }
                }
                _ = tokio::time::sleep_until(hedge_at.unwrap_or(began)), if hedge_at.is_some() => {
                    hedge_at = None;
                    if next < cands.len() {
                        let late = cands[next.saturating_sub(1)].1;
                        self.stats.stores[late].hedges.fetch_add(1, Relaxed);
                        inflight.push(launch(next));
                        next += 1;
                    }
                }
                else => return None,
            }
        }
    }

    /// Read column `column` of the run: every member's shard, by coalesced
    /// range requests, each checked against its header.
    async fn read_column(
        &self,
        plan: &Plan,
        packed: &Packed,
        members: &[Member],
        column: usize,
        cells: &[Cell],
    ) -> Result<Vec<Bytes>, String> {
        let mut out: Vec<Option<Bytes>> = vec![None; members.len()];
        // Per pack, in order of first use.
        let mut packs: Vec<u32> = cells.iter().map(|c| c.pack).collect();
        packs.dedup();
        for pack in packs {
            let at = &packed.packs[pack as usize];
            let store = &self.stores[at.store];
            let stats = &self.stats.stores[at.store];
            let mine: Vec<usize> = (0..cells.len())
                .filter(|&j| cells[j].pack == pack)
                .collect();
            let ranges: Vec<_> = mine.iter().map(|&j| cells[j].range()).collect();
            for (req, covered) in coalesce(&ranges, GAP, MAX_REQUEST) {
                let t = Instant::now();
                let body = match store.get_range(&at.key, Some(req.clone())).await {
                    Ok(b) if b.len() as u64 == req.end - req.start => b,
                    Ok(b) => {
                        stats.record_error();
                        return Err(format!("{}: short read ({} bytes)", store.name(), b.len()));
                    }
                    Err(e) => {
                        stats.record_error();
                        return Err(e.to_string());
                    }
                };
                stats.record_bulk(t.elapsed(), body.len());
                for r in covered {
                    let j = mine[r];
                    let x = cells[j].range();
                    let obj =
                        body.slice((x.start - req.start) as usize..(x.end - req.start) as usize);
                    let m = &members[j];
                    match shard_payload(&obj, m.id, column, plan.codec(), m.len) {
                        Ok(p) => out[j] = Some(p),
                        Err(e) => {
                            stats.record_corrupt();
                            tracing::warn!(store = store.name(), chunk = %m.id.short(), shard = column, "bad shard: {e}");
                            return Err(format!("{}: shard {column}: {e}", store.name()));
                        }
                    }
                }
            }
        }
        out.into_iter()
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| "a shard of the column was not read".to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Stores with a latency (µs) and a rate (bytes/s).
    fn eta(stores: &[(u64, u64)]) -> impl Fn(usize, u64) -> u64 + '_ {
        |s, bytes| stores[s].0 + bytes * 1_000_000 / stores[s].1
    }

    #[test]
    fn columns_are_spread_over_the_links_and_data_wins_on_fast_ones() {
        const MIB: u64 = 1 << 20;
        // k=4 m=2 over three stores, two columns each; parity on the third.
        let cands: Vec<_> = (0..6).map(|c| (c, c / 2, 8 * MIB)).collect();
        // Three equal WAN links (100 Mbit/s): the far store's parity column
        // is asked before a second column of a near one, so each link
        // carries its share: 2, 1 and 1 columns, not 2, 2 and 0.
        let wan = [
            (10_000, 12_500_000),
            (40_000, 12_500_000),
            (80_000, 12_500_000),
        ];
        let order = rank(&cands, 4, eta(&wan));
        let first: Vec<_> = order[..4].iter().map(|&i| cands[i].1).collect();
        assert_eq!(first, vec![0, 1, 2, 0]);
        // Loopback (1 GB/s): the decode costs more than the transfer, so the
        // four data columns come first, parity after.
        let lo = [
            (200, 1_000_000_000),
            (200, 1_000_000_000),
            (200, 1_000_000_000),
        ];
        assert_eq!(rank(&cands, 4, eta(&lo)), vec![0, 2, 1, 3, 4, 5]);
        // A slow data store gives both its columns to the parity store.
        let slow = [
            (200, 1_000_000_000),
            (200, 10_000_000),
            (200, 1_000_000_000),
        ];
        let order = rank(&cands, 4, eta(&slow));
        assert_eq!(order[..4].to_vec(), vec![0, 1, 4, 5]);
        assert!(rank(&[], 4, eta(&lo)).is_empty());
    }
}
