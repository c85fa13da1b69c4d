//! Fetching one chunk: any `k` of its `n` shards, from the stores ranked fastest,
//! in parallel, hedged against late stores, verified.
//!
//! For a chunk the fetcher:
//! 1. computes where its shards live ([`placement`]) and orders them by the
//!    current cost of their store ([`Stats`]), data shards first among equals (so a
//!    healthy read needs no decoding);
//! 2. requests the first `k` at once; whenever a request fails, or a shard fails
//!    its header check (truncated, misplaced, not a shard), it requests the next
//!    one and charges the store;
//! 3. when no shard arrived for the hedge delay (configured, or three times the
//!    slowest in-flight store's smoothed latency, 20 ms..2 s), requests one more
//!    shard without cancelling the late one (a hedge);
//! 4. with `k` good shards, decodes (only if a parity shard is among them) and
//!    verifies the chunk against its id. The shards' own payload checksums are
//!    not computed on this path: the chunk hash covers every byte, and hashing
//!    twice cost a fifth of a download's CPU time. If verification fails (a
//!    rotted payload, or a store that forged a consistent shard), it re-checks
//!    every shard in full, fetches the others, and tries each `k`-subset of the
//!    good ones until one verifies; it then re-encodes the chunk to find and
//!    charge the stores whose shards disagree.
//!
//! Nothing leaves this module unverified: the result is a [`VerifiedChunk`].

pub mod hot;
pub mod scheduler;
pub mod stats;

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::FuturesUnordered;

use crate::core::chunk::VerifiedChunk;
use crate::core::erasure::{Codec, open_shard, shard_payload};
use crate::core::id::ChunkId;
use crate::core::layout;
use crate::core::manifest::Manifest;
use crate::core::placement;
use crate::error::Error;
use crate::fetch::stats::Stats;
use crate::store::DynStore;

/// Fetches chunks for any image of one repository.
#[derive(Debug, Clone)]
pub struct Fetcher {
    stores: Vec<DynStore>,
    stats: Arc<Stats>,
    hedge_after: Option<Duration>,
}

/// An image prepared for fetching: its manifest, code and store mapping.
#[derive(Debug, Clone)]
pub struct Plan {
    pub manifest: Arc<Manifest>,
    codec: Codec,
    /// Manifest store position → configured store index (None: not configured here).
    store_map: Vec<Option<usize>>,
}

impl Plan {
    pub fn codec(&self) -> &Codec {
        &self.codec
    }
}

impl Fetcher {
    pub fn new(stores: Vec<DynStore>, hedge_after: Option<Duration>) -> Self {
        let stats = Arc::new(Stats::new(
            stores.iter().map(|s| s.name().to_string()).collect(),
        ));
        Fetcher {
            stores,
            stats,
            hedge_after,
        }
    }

    pub fn stats(&self) -> &Arc<Stats> {
        &self.stats
    }

    pub fn plan(&self, manifest: Manifest) -> Result<Plan, Error> {
        let codec = Codec::new(manifest.erasure.data, manifest.erasure.parity)?;
        let store_map = manifest
            .stores
            .iter()
            .map(|n| self.stores.iter().position(|s| s.name() == n))
            .collect();
        Ok(Plan {
            manifest: Arc::new(manifest),
            codec,
            store_map,
        })
    }

    fn hedge_delay(&self, inflight: &[(usize, usize, Instant)]) -> Duration {
        if let Some(d) = self.hedge_after {
            return d;
        }
        let slowest = inflight
            .iter()
            .map(|&(_, s, _)| self.stats.stores[s].latency())
            .max()
            .unwrap_or_default();
        if slowest.is_zero() {
            return Duration::from_millis(200);
        }
        (slowest * 3).clamp(Duration::from_millis(20), Duration::from_secs(2))
    }

    /// Fetch and verify chunk `index` of the plan's image. All-zero chunks have no
    /// id; callers answer them with zeros and never ask.
    pub async fn fetch(&self, plan: &Plan, index: u64) -> Result<VerifiedChunk, Error> {
        let m = &plan.manifest;
        let id = m.chunks[index as usize]
            .ok_or_else(|| Error::Invalid(format!("chunk {index} is all zero")))?;
        let len = m.chunk_len(index);
        let codec = &plan.codec;
        let (k, n) = (codec.data_shards(), codec.total_shards());
        let placed = placement::place(&id, &m.stores, n);

        // (shard index, store index), best first.
        let mut cands: Vec<(usize, usize)> = placed
            .iter()
            .enumerate()
            .filter_map(|(shard, &pos)| plan.store_map[pos].map(|s| (shard, s)))
            .collect();
        let cost: Vec<u64> = self.stats.stores.iter().map(|s| s.cost()).collect();
        cands.sort_by_key(|&(shard, s)| (cost[s], shard >= k, shard));

        let mut problems: Vec<String> = Vec::new();
        let mut got: Vec<Option<Bytes>> = vec![None; n];
        // The stored objects behind `got`, re-checked in full if the chunk fails.
        let mut raw: Vec<Option<Bytes>> = vec![None; n];
        let mut have = 0;
        let mut next = 0;
        let mut inflight_meta: Vec<(usize, usize, Instant)> = Vec::new();
        let mut inflight = FuturesUnordered::new();
        let launch = |shard: usize, s: usize| {
            let store = self.stores[s].clone();
            let key = layout::shard_key(&id, k, codec.parity_shards(), shard);
            async move {
                let t = Instant::now();
                let r = store.get_range(&key, None).await;
                (shard, s, t.elapsed(), r)
            }
        };

        loop {
            while have + inflight_meta.len() < k && next < cands.len() {
                let (shard, s) = cands[next];
                next += 1;
                inflight.push(launch(shard, s));
                inflight_meta.push((shard, s, Instant::now()));
            }
            if have >= k {
                break;
            }
            if inflight_meta.is_empty() {
                return Err(unavailable(index, &id, have, k, n, &problems));
            }
            let delay = self.hedge_delay(&inflight_meta);
            let can_hedge = next < cands.len();
            tokio::select! {
                Some((shard, s, took, r)) = inflight.next() => {
                    inflight_meta.retain(|&(sh, _, _)| sh != shard);
                    let name = self.stores[s].name();
                    match r {
                        Ok(obj) => match shard_payload(&obj, id, shard, codec, len) {
                            Ok(payload) => {
                                self.stats.stores[s].record_ok(took, obj.len());
                                got[shard] = Some(payload);
                                raw[shard] = Some(obj);
                                have += 1;
                            }
                            Err(e) => {
                                self.stats.stores[s].record_ok(took, obj.len());
                                self.stats.stores[s].record_corrupt();
                                tracing::warn!(store = name, chunk = %id.short(), shard, "bad shard: {e}");
                                problems.push(format!("store {name}: shard {shard}: {e}"));
                            }
                        },
                        Err(e) => {
                            self.stats.stores[s].record_error();
                            tracing::debug!(store = name, chunk = %id.short(), shard, "shard fetch failed: {e}");
                            problems.push(e.to_string());
                        }
                    }
                }
                _ = tokio::time::sleep(delay), if can_hedge => {
                    if let Some(&(_, late, _)) = inflight_meta.iter().min_by_key(|m| m.2) {
                        self.stats.stores[late].hedges.fetch_add(1, Relaxed);
                    }
                    let (shard, s) = cands[next];
                    next += 1;
                    inflight.push(launch(shard, s));
                    inflight_meta.push((shard, s, Instant::now()));
                }
            }
        }
        drop(inflight);

        let used_parity = got[..k].iter().any(Option::is_none);
        match decode_verify(codec, &got, len, id) {
            Ok(chunk) => {
                if used_parity || !problems.is_empty() {
                    self.stats.degraded_reads.fetch_add(1, Relaxed);
                }
                self.stats.chunks_fetched.fetch_add(1, Relaxed);
                Ok(chunk)
            }
            Err(_) => self.recover(plan, index, id, len, &cands, raw).await,
        }
    }

    /// Slow path: the shards passed their header checks but the chunk did not
    /// verify. Re-check every shard in full (payload checksums), fetch the rest,
    /// and try each `k`-subset of the good ones.
    async fn recover(
        &self,
        plan: &Plan,
        index: u64,
        id: ChunkId,
        len: usize,
        cands: &[(usize, usize)],
        raw: Vec<Option<Bytes>>,
    ) -> Result<VerifiedChunk, Error> {
        let codec = &plan.codec;
        let (k, n) = (codec.data_shards(), codec.total_shards());
        let mut owner = vec![None; n];
        let mut got: Vec<Option<Bytes>> = vec![None; n];
        for &(shard, s) in cands {
            owner[shard] = Some(s);
            let obj = match &raw[shard] {
                Some(obj) => Some(obj.clone()),
                None => {
                    let key = layout::shard_key(&id, k, codec.parity_shards(), shard);
                    self.stores[s].get_range(&key, None).await.ok()
                }
            };
            if let Some(obj) = obj {
                match open_shard(&obj, id, shard, codec, len) {
                    Ok(p) => got[shard] = Some(p),
                    Err(e) => {
                        self.stats.stores[s].record_corrupt();
                        tracing::warn!(store = self.stores[s].name(), chunk = %id.short(), shard, "bad shard: {e}");
                    }
                }
            }
        }
        let present: Vec<usize> = (0..n).filter(|&i| got[i].is_some()).collect();
        for subset in subsets(&present, k) {
            let trial: Vec<Option<Bytes>> = (0..n)
                .map(|i| {
                    if subset.contains(&i) {
                        got[i].clone()
                    } else {
                        None
                    }
                })
                .collect();
            if let Ok(chunk) = decode_verify(codec, &trial, len, id) {
                // Re-encode to find which stored shards were lies.
                let truth = codec.encode(chunk.bytes());
                for i in 0..n {
                    if let (Some(g), Some(s)) = (&got[i], owner[i]) {
                        if g[..] != truth[i][..] {
                            self.stats.stores[s].record_corrupt();
                            tracing::warn!(store = self.stores[s].name(), chunk = %id.short(), shard = i, "store served a forged shard");
                        }
                    }
                }
                self.stats.degraded_reads.fetch_add(1, Relaxed);
                self.stats.chunks_fetched.fetch_add(1, Relaxed);
                return Ok(chunk);
            }
        }
        Err(Error::Corrupt(format!(
            "chunk {index} ({}) cannot be rebuilt: no {k} of the {} shards found decode to it",
            id.short(),
            present.len()
        )))
    }
}

fn decode_verify(
    codec: &Codec,
    got: &[Option<Bytes>],
    len: usize,
    id: ChunkId,
) -> Result<VerifiedChunk, Error> {
    let k = codec.data_shards();
    let data = if got[..k].iter().all(Option::is_some) {
        let mut v = Vec::with_capacity(len);
        for s in &got[..k] {
            v.extend_from_slice(s.as_ref().unwrap());
        }
        v.truncate(len);
        v
    } else {
        // Every shard here passed `shard_payload`, which checked its length.
        let slots: Vec<Option<Vec<u8>>> =
            got.iter().map(|s| s.as_ref().map(|b| b.to_vec())).collect();
        codec.decode(slots, len)?
    };
    VerifiedChunk::verify(id, Bytes::from(data)).map_err(|e| Error::Corrupt(e.to_string()))
}

fn unavailable(
    index: u64,
    id: &ChunkId,
    have: usize,
    k: usize,
    n: usize,
    problems: &[String],
) -> Error {
    Error::Unavailable(format!(
        "chunk {index} ({}) unavailable: {have} of {n} shards readable, {k} needed ({})",
        id.short(),
        if problems.is_empty() {
            "no store holds them".to_string()
        } else {
            problems.join("; ")
        }
    ))
}

/// All `k`-element subsets of `items`, in lexicographic order.
fn subsets(items: &[usize], k: usize) -> Vec<Vec<usize>> {
    fn go(
        items: &[usize],
        k: usize,
        start: usize,
        cur: &mut Vec<usize>,
        out: &mut Vec<Vec<usize>>,
    ) {
        if cur.len() == k {
            out.push(cur.clone());
            return;
        }
        for i in start..items.len() {
            cur.push(items[i]);
            go(items, k, i + 1, cur, out);
            cur.pop();
        }
    }
    let mut out = Vec::new();
    go(items, k, 0, &mut Vec::new(), &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subsets_count() {
        assert_eq!(subsets(&[0, 1, 2, 3, 4, 5], 4).len(), 15);
        assert_eq!(subsets(&[1, 2], 2), vec![vec![1, 2]]);
        assert!(subsets(&[1], 2).is_empty());
    }
}
