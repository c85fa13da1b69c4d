//! Fetching one chunk: any `k` of its `n` shards, from the stores ranked fastest,
//! in parallel, hedged against late stores, verified.
//!
//! Where shards live depends on the manifest's format: a v1 image has one
//! object per shard, on the store [`placement`] names; a v2 image has its
//! shards in packs, located by the pack table ([`packed`]) loaded from the
//! packs' indexes by the plan's first fetch ([`Fetcher::table`]), and read by
//! range requests. [`Plan::shard_at`] hides the difference. Besides the
//! per-chunk race below, a v2 image can be read a run of chunks at a time,
//! `k` whole columns by coalesced range requests ([`columns`], what `get`
//! uses), or a data shard alone for a small read ([`piece`]).
//!
//! For a chunk the fetcher:
//! 1. computes where its shards live and orders them by the
//!    current cost of their store ([`Stats`]), data shards first among equals (so a
//!    healthy read needs no decoding); a background fetch (hydration) orders
//!    them by the background bytes already queued on their store instead
//!    ([`spread`]), so that it keeps every store busy, and hedges only
//!    after [`race::MAX_HEDGE`];
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
//! The decisions of steps 1–3 (and when to give up) are a pure state machine,
//! [`race`]; [`Fetcher::fetch`] only drives it: it sends the requests the race
//! asks for, checks each shard's header, keeps the race's one timer, feeds the
//! outcomes back, and records what it saw in [`Stats`].
//!
//! Nothing leaves this module unverified: the result is a [`VerifiedChunk`].

pub mod columns;
pub mod hot;
pub mod latency;
pub mod packed;
pub mod piece;
pub mod race;
pub mod scheduler;
pub mod spread;
pub mod stats;

use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tokio::time::Instant;

use crate::core::chunk::VerifiedChunk;
use crate::core::erasure::{Codec, open_shard, shard_payload};
use crate::core::id::{ChunkId, ImageId};
use crate::core::layout;
use crate::core::manifest::Manifest;
use crate::core::placement;
use crate::error::Error;
use crate::fetch::packed::Packed;
use crate::fetch::race::{Action, Candidate, HedgeDelay, Outcome, Race};
use crate::fetch::stats::Stats;
use crate::store::priority::{self, Priority};
use crate::store::{DynStore, StoreError};

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
    /// The image's id, when the caller knows it (a mount does): peers are
    /// asked for chunks by image and index.
    pub image: Option<ImageId>,
    codec: Codec,
    /// Manifest store position → configured store index (None: not configured here).
    store_map: Vec<Option<usize>>,
    /// Format v2: where each shard lies in its pack, read from the stores
    /// on the plan's first fetch ([`Fetcher::table`]) and reloaded when a
    /// pack has moved (see [`Fetcher::fetch`]).
    packed: Option<Arc<Reloadable>>,
}

/// A pack table loaded on first use, that can be replaced while readers use
/// it.
#[derive(Debug)]
struct Reloadable {
    /// `None` until a fetch needed it.
    table: std::sync::RwLock<Option<Arc<Packed>>>,
    /// Held while the table loads or reloads; when it was last reloaded
    /// (reloads are at most one per [`RELOAD_EVERY`]).
    reloaded: tokio::sync::Mutex<Option<Instant>>,
    /// When the packs the table could not read were last asked for.
    retried: std::sync::Mutex<Option<Instant>>,
}

/// The shortest time between two reloads of one plan's pack table.
pub const RELOAD_EVERY: Duration = Duration::from_secs(2);

/// How often the packs a plan's table could not read (their store down or
/// lying when it was read) are read again.
pub const RETRY_FAILED: Duration = Duration::from_secs(30);

/// Where one shard is read from: a store (the fetcher's index), a key, and
/// for a shard in a pack its byte range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardAt {
    pub store: usize,
    pub key: String,
    pub range: Option<Range<u64>>,
}

impl Plan {
    pub fn codec(&self) -> &Codec {
        &self.codec
    }

    /// The pack table of a format-v2 image, as it is now: `None` for a
    /// format-1 image, and until a fetch loaded it ([`Fetcher::table`]).
    pub fn packed(&self) -> Option<Arc<Packed>> {
        self.packed.as_ref()?.table.read().unwrap().clone()
    }

    /// A format-v2 image (its shards lie in packs).
    pub fn is_packed(&self) -> bool {
        self.packed.is_some()
    }

    /// Which store holds each shard of `id` (`None`: none we can read).
    fn placed(&self, id: &ChunkId) -> Vec<Option<usize>> {
        let n = self.codec.total_shards();
        match &self.packed() {
            Some(p) => (0..n)
                .map(|s| p.cell(id, s).map(|c| p.packs[c.pack as usize].store))
                .collect(),
            None => placement::place(id, &self.manifest.stores, n)
                .iter()
                .map(|&pos| self.store_map[pos])
                .collect(),
        }
    }

    /// Where shard `shard` of `id` is read from, if any store we have holds it.
    pub fn shard_at(&self, id: &ChunkId, shard: usize) -> Option<ShardAt> {
        let (k, m) = (self.codec.data_shards(), self.codec.parity_shards());
        match &self.packed() {
            Some(p) => {
                let c = p.cell(id, shard)?;
                let pack = &p.packs[c.pack as usize];
                Some(ShardAt {
                    store: pack.store,
                    key: pack.key.clone(),
                    range: Some(c.range()),
                })
            }
            None => Some(ShardAt {
                store: self.placed(id)[shard]?,
                key: layout::shard_key(id, k, m, shard),
                range: None,
            }),
        }
    }
}

/// Bytes counted in a store's background queue while a request lives.
struct Queued<'a> {
    counter: &'a std::sync::atomic::AtomicU64,
    bytes: u64,
}

impl<'a> Queued<'a> {
    fn new(counter: &'a std::sync::atomic::AtomicU64, bytes: u64) -> Self {
        counter.fetch_add(bytes, Relaxed);
        Queued { counter, bytes }
    }
}

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.counter.fetch_sub(self.bytes, Relaxed);
    }
}

/// Read one stored shard object (header and payload) of a chunk of `len`
/// bytes, holding at most its size however the store answers.
async fn read_shard(
    store: &DynStore,
    at: &ShardAt,
    len: usize,
    k: usize,
) -> Result<Bytes, StoreError> {
    match &at.range {
        Some(r) => store.get_range(&at.key, Some(r.clone())).await,
        None => {
            let max = crate::core::limits::shard_max(len as u64, k);
            store.get_bounded(&at.key, max).await
        }
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

    /// Prepare `manifest` for fetching. Nothing is read from the stores: a
    /// format-v2 image's pack indexes are read by its first fetch
    /// ([`Fetcher::table`]), so a daemon that shows many images holds the
    /// tables of those it reads, not of all it shows.
    pub fn plan(&self, manifest: Manifest) -> Result<Plan, Error> {
        let codec = Codec::new(manifest.erasure.data, manifest.erasure.parity)?;
        let store_map = manifest
            .stores
            .iter()
            .map(|n| self.stores.iter().position(|s| s.name() == n))
            .collect();
        let packed = manifest.packed().then(|| {
            Arc::new(Reloadable {
                table: std::sync::RwLock::new(None),
                reloaded: tokio::sync::Mutex::new(None),
                retried: std::sync::Mutex::new(None),
            })
        });
        Ok(Plan {
            manifest: Arc::new(manifest),
            image: None,
            codec,
            store_map,
            packed,
        })
    }

    /// The pack table of `plan` (`None` for a format-1 image), read from
    /// the stores ([`packed`]) by the first caller, at on-demand priority;
    /// callers meanwhile wait for that one load. Packs it could not read
    /// are read again in the background every [`RETRY_FAILED`].
    pub async fn table(&self, plan: &Plan) -> Option<Arc<Packed>> {
        let r = plan.packed.as_ref()?;
        if let Some(t) = plan.packed() {
            if !t.failed.is_empty() {
                self.retry_failed(plan, r);
            }
            return Some(t);
        }
        let _loading = r.reloaded.lock().await;
        if let Some(t) = plan.packed() {
            return Some(t);
        }
        // Every read of the image waits for it, on-demand ones too: it is
        // read on demand whatever the class of the fetch that asked first.
        let load = Packed::load(&self.stores, &plan.manifest, plan.codec.total_shards());
        let table = priority::scope(priority::Class::new(Priority::OnDemand), load).await;
        tracing::debug!(
            image = %plan.manifest.name,
            packs = table.packs.len(),
            bytes = table.heap_bytes(),
            "pack table loaded"
        );
        let table = Arc::new(table);
        *r.table.write().unwrap() = Some(table.clone());
        *r.retried.lock().unwrap() = Some(Instant::now());
        Some(table)
    }

    /// Read the packs `plan`'s table could not read again, in a task of
    /// its own, unless that was done less than [`RETRY_FAILED`] ago; the
    /// table is replaced if any came.
    fn retry_failed(&self, plan: &Plan, r: &Reloadable) {
        {
            let mut last = r.retried.lock().unwrap();
            if last.is_some_and(|t| t.elapsed() < RETRY_FAILED) {
                return;
            }
            *last = Some(Instant::now());
        }
        let (fetcher, plan) = (self.clone(), plan.clone());
        let retry = async move {
            let Some(r) = &plan.packed else { return };
            let _held = r.reloaded.lock().await;
            let Some(old) = plan.packed() else { return };
            if let Some(new) = old.retry(&fetcher.stores, &plan.manifest).await {
                tracing::info!(
                    image = %plan.manifest.name,
                    packs = new.packs.len() - old.packs.len(),
                    still_unreadable = new.failed.len(),
                    "pack indexes read again"
                );
                *r.table.write().unwrap() = Some(Arc::new(new));
            }
        };
        tokio::spawn(priority::scope(
            priority::Class::new(Priority::Background),
            retry,
        ));
    }

    /// A pack of `plan` was not found: `gc` may have repacked it. Reload the
    /// pack table (which follows the moved records), at most once per
    /// [`RELOAD_EVERY`]; true if this call reloaded it.
    pub async fn reload(&self, plan: &Plan) -> bool {
        let Some(r) = &plan.packed else { return false };
        let mut last = r.reloaded.lock().await;
        if last.is_some_and(|t| t.elapsed() < RELOAD_EVERY) {
            return false;
        }
        let n = plan.codec.total_shards();
        let table = Packed::load(&self.stores, &plan.manifest, n).await;
        tracing::info!(image = %plan.manifest.name, packs = table.packs.len(), "pack table reloaded");
        *r.table.write().unwrap() = Some(Arc::new(table));
        *last = Some(Instant::now());
        true
    }

    /// How long a shard may be late before a hedge, for a race starting now.
    fn hedge(&self) -> HedgeDelay {
        match self.hedge_after {
            Some(d) => HedgeDelay::Fixed(d),
            None => HedgeDelay::Adaptive(self.stats.stores.iter().map(|s| s.latency()).collect()),
        }
    }

    /// Fetch and verify chunk `index` of the plan's image. All-zero chunks have no
    /// id; callers answer them with zeros and never ask.
    ///
    /// The store requests run in the calling task, so they carry its priority
    /// class ([`crate::store::priority`]).
    ///
    /// When a pack of a v2 image is not found (repacked by `gc` since the
    /// plan was made), the pack table is reloaded and a failed fetch is tried
    /// once more.
    pub async fn fetch(&self, plan: &Plan, index: u64) -> Result<VerifiedChunk, Error> {
        use futures::FutureExt;
        let mut gone = false;
        // (Boxed: the race's future is large, and this keeps it `Send` for
        // every caller's lifetimes.)
        let r = self.fetch_once(plan, index, &mut gone).boxed().await;
        if gone && self.reload(plan).await && r.is_err() {
            return self.fetch_once(plan, index, &mut gone).boxed().await;
        }
        r
    }

    async fn fetch_once(
        &self,
        plan: &Plan,
        index: u64,
        gone: &mut bool,
    ) -> Result<VerifiedChunk, Error> {
        let m = &plan.manifest;
        let id = m.chunks[index as usize]
            .ok_or_else(|| Error::Invalid(format!("chunk {index} is all zero")))?;
        let len = m.chunk_len(index);
        let codec = &plan.codec;
        let (k, n) = (codec.data_shards(), codec.total_shards());
        self.table(plan).await;
        let placed = plan.placed(&id);
        // A background fetch (hydration) goes to the stores with the least
        // background work queued ([`spread`]), hedged only after the
        // longest delay: it waits in its stores' pacer queues by design, and
        // a hedge would only queue more. Others go to the cheapest stores.
        let background = priority::current().get() == Priority::Background;
        let shard_bytes = len.div_ceil(k) as u64;
        let (cands, hedge) = if background {
            let s = &self.stats.stores;
            let queued: Vec<u64> = s.iter().map(|s| s.background.load(Relaxed)).collect();
            let demoted: Vec<bool> = s.iter().map(|s| s.is_demoted()).collect();
            let cands = spread::spread(&placed, &queued, &demoted, k, shard_bytes);
            (cands, HedgeDelay::Fixed(race::MAX_HEDGE))
        } else {
            let cost: Vec<u64> = self.stats.stores.iter().map(|s| s.cost()).collect();
            (race::order(&placed, &cost, k), self.hedge())
        };
        let mut race = Race::new(k, n, cands.clone(), hedge);

        let mut got: Vec<Option<Bytes>> = vec![None; n];
        // The stored objects behind `got`, re-checked in full if the chunk fails.
        let mut raw: Vec<Option<Bytes>> = vec![None; n];
        let mut troubled = false;
        let mut inflight = FuturesUnordered::new();
        let mut timer: Option<Instant> = None;
        let launch = |shard: usize, s: usize| {
            let store = self.stores[s].clone();
            let at = plan.shard_at(&id, shard);
            // Counted as queued on its store until answered or dropped.
            let queued =
                background.then(|| Queued::new(&self.stats.stores[s].background, shard_bytes));
            async move {
                let _queued = queued;
                let t = Instant::now();
                let at = at.expect("a candidate's shard is located");
                let r = read_shard(&store, &at, len, k).await;
                (shard, s, t.elapsed(), r)
            }
        };

        let began = Instant::now();
        let mut actions = race.start(Duration::ZERO);
        loop {
            for a in std::mem::take(&mut actions) {
                match a {
                    Action::Request {
                        shard,
                        store,
                        hedge,
                    } => {
                        if let Some(late) = hedge {
                            self.stats.stores[late].hedges.fetch_add(1, Relaxed);
                        }
                        inflight.push(launch(shard, store));
                    }
                    Action::Arm(d) => timer = Some(Instant::now() + d),
                    Action::Disarm => timer = None,
                    Action::Decode(_) => break,
                    Action::GiveUp(e) => {
                        return Err(Error::Unavailable(format!(
                            "chunk {index} ({}) unavailable: {e}",
                            id.short()
                        )));
                    }
                }
            }
            if race.is_over() {
                break;
            }
            tokio::select! {
                Some((shard, s, took, r)) = inflight.next() => {
                    let name = self.stores[s].name();
                    let outcome = match r {
                        Ok(obj) => {
                            self.stats.stores[s].record_ok(took, obj.len());
                            match shard_payload(&obj, id, shard, codec, len) {
                                Ok(payload) => {
                                    got[shard] = Some(payload);
                                    raw[shard] = Some(obj);
                                    Outcome::Good
                                }
                                Err(e) => {
                                    self.stats.stores[s].record_corrupt();
                                    tracing::warn!(store = name, chunk = %id.short(), shard, "bad shard: {e}");
                                    Outcome::Bad(format!("store {name}: shard {shard}: {e}"))
                                }
                            }
                        }
                        Err(e) => {
                            *gone |= e.is_not_found();
                            self.stats.stores[s].record_error();
                            tracing::debug!(store = name, chunk = %id.short(), shard, "shard fetch failed: {e}");
                            Outcome::Failed(e.to_string())
                        }
                    };
                    troubled |= outcome != Outcome::Good;
                    actions = race.arrived(shard, outcome, began.elapsed());
                }
                _ = tokio::time::sleep_until(timer.unwrap_or(began)), if timer.is_some() => {
                    // A fired timer is disarmed.
                    timer = None;
                    actions = race.timer(began.elapsed());
                }
                else => {
                    return Err(Error::Invalid(format!("chunk {index}: shard race stalled")));
                }
            }
        }
        drop(inflight);

        let used_parity = got[..k].iter().any(Option::is_none);
        match decode_verify(codec, &got, len, id) {
            Ok(chunk) => {
                if used_parity || troubled {
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
        cands: &[Candidate],
        raw: Vec<Option<Bytes>>,
    ) -> Result<VerifiedChunk, Error> {
        let codec = &plan.codec;
        let (k, n) = (codec.data_shards(), codec.total_shards());
        let mut owner = vec![None; n];
        let mut got: Vec<Option<Bytes>> = vec![None; n];
        for &Candidate { shard, store: s } in cands {
            owner[shard] = Some(s);
            let obj = match &raw[shard] {
                Some(obj) => Some(obj.clone()),
                None => match plan.shard_at(&id, shard) {
                    Some(at) => read_shard(&self.stores[s], &at, len, k).await.ok(),
                    None => None,
                },
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
