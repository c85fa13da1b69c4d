//! Where a mount's chunks come from: the hot set in memory, then the disk
//! cache, then the stores, one download per chunk at a time (single-flight,
//! keyed by chunk id, so identical chunks of different images share the
//! download). The fetched chunk is cached before its waiters are released.
//!
//! An on-demand read that lies inside one data shard of a format-v2 chunk
//! can be answered by that shard alone ([`Chunks::read`],
//! [`crate::fetch::piece`]), raced against the whole chunk when its store is
//! slow. Pieces are kept in memory; once all `k` data pieces of a chunk are
//! there they are joined, checked against the chunk id, and the chunk goes
//! to the disk cache (which holds whole chunks) and counts as fetched.
//!
//! Priorities: every request for a chunk names its [`Priority`] class —
//! on-demand > boot profile > read-ahead > background prefetch — and the
//! download runs in that class ([`priority::scope`]), so the class reaches the
//! per-store request slots ([`crate::store::limit`]), which serve higher
//! classes first and keep slots for on-demand reads. When a request of a
//! higher class joins a download already under way, the download's class is
//! raised: its shard requests still waiting for a store slot move up at once,
//! and the requests it sends from then on (hedges, replacements) go at the new
//! class. (The alternative, a second download beside the first, would fetch
//! the chunk twice.)
//!
//! A run of adjacent chunks of a format-v2 image (a sequential reader's
//! read-ahead) is one download for all of them ([`Chunks::get_run`]): `k`
//! columns read as one range request each ([`Fetcher::fetch_run`]), every
//! chunk of the run registered single-flight as usual, so an on-demand read
//! of one of them waits for the run instead of fetching the chunk again.
//!
//! With peers ([`Neighbours`], the hosts of a site sharing chunks), a chunk
//! this host is not the designated fetcher of is asked of the peers before
//! the stores, inside the same single-flight download: nothing else changes
//! for the callers. Such chunks are fetched whole (no pieces, no column
//! runs): a peer sends whole verified chunks.
//!
//! On-demand reads never wait for a permit here; read-ahead, boot-profile
//! prefetch and whole-image prefetch run in background tasks, each bounded by
//! its own semaphore ([`Limits`]), in chunks.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use futures::FutureExt;
use futures::future::{BoxFuture, Shared, join_all};
use tokio::sync::Semaphore;

use crate::cache::Cache;
use crate::core::chunk::VerifiedChunk;
use crate::core::id::{ChunkId, ImageId};
use crate::error::Error;
use crate::fetch::hot::Hot;
use crate::fetch::{Fetcher, Plan};
use crate::store::priority::{self, Class, Priority};

/// What a run download brought, per chunk.
type RunResults = Arc<HashMap<ChunkId, Result<Bytes, Arc<Error>>>>;

type SharedFetch = Shared<BoxFuture<'static, Result<Bytes, Arc<Error>>>>;

/// Other hosts that may have a chunk: the site's peers
/// ([`crate::peers::node`]).
pub trait Neighbours: Send + Sync + std::fmt::Debug {
    /// Whether this host fetches `id` from the stores itself rather than
    /// asking the peers first.
    fn fetches_itself(&self, id: &ChunkId) -> bool;
    /// Chunk `index` (`id`, at most `max` bytes) of `image` from a peer,
    /// verified; `None`: ask the stores.
    fn get(
        &self,
        image: ImageId,
        index: u64,
        id: ChunkId,
        max: u64,
    ) -> BoxFuture<'_, Option<VerifiedChunk>>;
}

/// What a download brings: a whole chunk, or one data shard of it alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Want {
    Chunk(ChunkId),
    Piece(ChunkId, usize),
}

/// A download under way: its result, shared, and its class.
#[derive(Debug)]
struct Download {
    result: SharedFetch,
    class: Class,
}

/// Concurrency of background work, per kind, for a whole mount.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub readahead: usize,
    /// Boot-profile prefetch: the chunks a boot is known to need next.
    pub profile: usize,
    /// Whole-image prefetch.
    pub prefetch: usize,
    /// Bytes of verified chunks and pieces kept in memory (`[cache] memory`).
    pub memory: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            readahead: 8,
            profile: 16,
            prefetch: 2,
            memory: Hot::CAP,
        }
    }
}

/// Where chunks come from: memory, disk cache, then stores, single-flight.
/// Shared by all images.
#[derive(Debug)]
pub struct Chunks {
    hot: Mutex<Hot>,
    pieces: Mutex<Hot<(ChunkId, usize)>>,
    fetcher: Fetcher,
    cache: Arc<Cache>,
    inflight: Mutex<HashMap<Want, Download>>,
    pub readahead: Semaphore,
    /// Permits of `readahead` (the most a run may take at once).
    readahead_permits: usize,
    pub profile: Arc<Semaphore>,
    pub prefetch: Arc<Semaphore>,
    neighbours: OnceLock<Arc<dyn Neighbours>>,
}

impl Chunks {
    pub fn new(fetcher: Fetcher, cache: Arc<Cache>, limits: Limits) -> Arc<Self> {
        Arc::new(Chunks {
            // Pieces (verified data shards served alone) get a quarter.
            hot: Mutex::new(Hot::new(limits.memory - limits.memory / 4)),
            pieces: Mutex::new(Hot::new(limits.memory / 4)),
            fetcher,
            cache,
            inflight: Mutex::new(HashMap::new()),
            readahead: Semaphore::new(limits.readahead.max(1)),
            readahead_permits: limits.readahead.max(1),
            profile: Arc::new(Semaphore::new(limits.profile.max(1))),
            prefetch: Arc::new(Semaphore::new(limits.prefetch.max(1))),
            neighbours: OnceLock::new(),
        })
    }

    /// Ask `n` for chunks before the stores from now on (set once).
    pub fn set_neighbours(&self, n: Arc<dyn Neighbours>) {
        let _ = self.neighbours.set(n);
    }

    /// The peers to ask for `id` of `plan`'s image first, if any are.
    fn asks_peers(&self, plan: &Plan, id: &ChunkId) -> Option<&Arc<dyn Neighbours>> {
        let n = self.neighbours.get()?;
        (plan.image.is_some() && !n.fetches_itself(id)).then_some(n)
    }

    /// This host's hold on `id`, as a peer asking for it sees it.
    pub fn holding(&self, id: &ChunkId) -> crate::peers::Holding {
        use crate::peers::Holding;
        if self.hot.lock().unwrap().contains(id) || self.cache.contains(id) {
            Holding::Have
        } else if self
            .inflight
            .lock()
            .unwrap()
            .contains_key(&Want::Chunk(*id))
        {
            Holding::Fetching
        } else {
            Holding::Absent
        }
    }

    /// Chunk `index` (`id`) of `plan` for a peer: from memory or the cache,
    /// from its download under way, or (with `fetch`: this host was asked as
    /// its designated fetcher) downloaded from the stores, never from other
    /// peers. `None` if it is none of these, or the download failed.
    pub async fn for_peer(
        self: &Arc<Self>,
        plan: &Plan,
        index: u64,
        id: ChunkId,
        fetch: bool,
        counters: &Arc<Counters>,
    ) -> Option<Bytes> {
        if let Ok(Some(b)) = self.lookup(id, counters).await {
            return Some(b);
        }
        let under_way = self.inflight.lock().unwrap().contains_key(&Want::Chunk(id));
        if !(fetch || under_way) {
            return None;
        }
        self.download_via(
            plan,
            index,
            Want::Chunk(id),
            counters,
            Priority::OnDemand,
            false,
        )
        .await
        .ok()
    }

    pub fn fetcher(&self) -> &Fetcher {
        &self.fetcher
    }

    pub fn cache(&self) -> &Arc<Cache> {
        &self.cache
    }

    /// The chunk from memory or the disk cache.
    async fn lookup(&self, id: ChunkId, counters: &Counters) -> Result<Option<Bytes>, Error> {
        if let Some(b) = self.hot.lock().unwrap().get(&id) {
            counters.bytes_from_cache.fetch_add(b.len() as u64, Relaxed);
            return Ok(Some(b));
        }
        let cache = self.cache.clone();
        if !cache.probe(&id) {
            return Ok(None);
        }
        let hit = tokio::task::spawn_blocking(move || cache.get(&id))
            .await
            .map_err(|e| Error::Invalid(format!("cache task: {e}")))?;
        Ok(hit.map(|c| {
            counters.bytes_from_cache.fetch_add(c.len() as u64, Relaxed);
            let b = c.into_bytes();
            self.hot.lock().unwrap().put(id, b.clone());
            b
        }))
    }

    /// The chunk's bytes, from the cache or fetched (once, whoever else asks),
    /// for a request of class `priority`.
    pub async fn get(
        self: &Arc<Self>,
        plan: &Plan,
        index: u64,
        id: ChunkId,
        counters: &Arc<Counters>,
        priority: Priority,
    ) -> Result<Bytes, Error> {
        match self.lookup(id, counters).await? {
            Some(b) => Ok(b),
            None => {
                self.download(plan, index, Want::Chunk(id), counters, priority)
                    .await
            }
        }
    }

    /// The bytes `[start, start + len)` of chunk `index` (`id`), for a read
    /// of class `priority`. An on-demand read that lies inside one data shard
    /// of a chunk neither cached nor on its way fetches that shard alone
    /// ([`crate::fetch::piece`]); if the piece fails, or is later than its
    /// store's hedge delay, the whole chunk is fetched beside it and the
    /// first to arrive answers.
    #[allow(clippy::too_many_arguments)]
    pub async fn read(
        self: &Arc<Self>,
        plan: &Plan,
        index: u64,
        id: ChunkId,
        start: usize,
        len: usize,
        counters: &Arc<Counters>,
        priority: Priority,
    ) -> Result<Bytes, Error> {
        let whole = |b: Bytes| b.slice(start..start + len);
        if let Some(b) = self.lookup(id, counters).await? {
            return Ok(whole(b));
        }
        let chunk = || self.download(plan, index, Want::Chunk(id), counters, priority);
        // Pieces need the pack table, read here by an image's first miss.
        self.fetcher.table(plan).await;
        let shard = match plan.piece_of(index, start, len) {
            Some(s) if priority == Priority::OnDemand && self.asks_peers(plan, &id).is_none() => s,
            _ => return chunk().await.map(whole),
        };
        let at = start - shard * (plan.manifest.chunk_len(index) / plan.codec().data_shards());
        let part = |b: Bytes| b.slice(at..at + len);
        if let Some(b) = self.pieces.lock().unwrap().get(&(id, shard)) {
            counters.bytes_from_cache.fetch_add(len as u64, Relaxed);
            return Ok(part(b));
        }
        if self.inflight.lock().unwrap().contains_key(&Want::Chunk(id)) {
            return chunk().await.map(whole);
        }
        let piece = self.download(plan, index, Want::Piece(id, shard), counters, priority);
        tokio::pin!(piece);
        let hedge = self.fetcher.piece_hedge(plan, index, shard);
        tokio::select! {
            r = &mut piece => match r {
                Ok(b) => return Ok(part(b)),
                Err(e) => {
                    tracing::debug!(chunk = %id.short(), shard, "piece failed, reading the chunk: {e}");
                    return chunk().await.map(whole);
                }
            },
            _ = tokio::time::sleep(hedge) => {}
        }
        let chunk = chunk();
        tokio::pin!(chunk);
        tokio::select! {
            r = &mut piece => match r {
                Ok(b) => Ok(part(b)),
                Err(_) => chunk.await.map(whole),
            },
            r = &mut chunk => r.map(whole),
        }
    }

    /// Fetch what `want` names, once whoever else asks, at class `priority`
    /// (raising a download under way to it), keeping the verified result in
    /// memory (and a chunk in the disk cache) before waiters are released.
    async fn download(
        self: &Arc<Self>,
        plan: &Plan,
        index: u64,
        want: Want,
        counters: &Arc<Counters>,
        priority: Priority,
    ) -> Result<Bytes, Error> {
        self.download_via(plan, index, want, counters, priority, true)
            .await
    }

    /// [`Chunks::download`], asking peers first only if `via_peers` (a
    /// download this host does for a peer goes to the stores).
    async fn download_via(
        self: &Arc<Self>,
        plan: &Plan,
        index: u64,
        want: Want,
        counters: &Arc<Counters>,
        priority: Priority,
        via_peers: bool,
    ) -> Result<Bytes, Error> {
        let fut = {
            let mut map = self.inflight.lock().unwrap();
            self.join_or_start(&mut map, plan, index, want, counters, priority, via_peers)
        };
        fut.await.map_err(|e| match &*e {
            Error::Corrupt(m) => Error::Corrupt(m.clone()),
            other => Error::Unavailable(other.to_string()),
        })
    }

    /// The download of `want` under way in `map` (the locked `inflight`),
    /// raised to `priority`, or a new one registered there and spawned, so
    /// it goes on whether or not anyone waits for it.
    #[allow(clippy::too_many_arguments)]
    fn join_or_start(
        self: &Arc<Self>,
        map: &mut HashMap<Want, Download>,
        plan: &Plan,
        index: u64,
        want: Want,
        counters: &Arc<Counters>,
        priority: Priority,
        via_peers: bool,
    ) -> SharedFetch {
        if let Some(d) = map.get(&want) {
            if d.class.raise(priority) {
                tracing::debug!(?want, "download raised to {priority}");
            }
            return d.result.clone();
        }
        let me = self.clone();
        let plan = plan.clone();
        let counters = counters.clone();
        let class = Class::new(priority);
        let task = tokio::spawn(priority::scope(class.clone(), async move {
            let r = me.fetch(&plan, index, want, &counters, via_peers).await;
            me.inflight.lock().unwrap().remove(&want);
            r.map_err(Arc::new)
        }));
        let f: SharedFetch = async move {
            task.await
                .unwrap_or_else(|e| Err(Arc::new(Error::Invalid(format!("fetch task: {e}")))))
        }
        .boxed()
        .shared();
        map.insert(
            want,
            Download {
                result: f.clone(),
                class,
            },
        );
        f
    }

    /// Start fetching the chunks `run` (index and id, in image order) of a
    /// format-v2 image as one download at class `priority`: the chunks
    /// neither cached nor on their way are registered single-flight at once
    /// (so a read of any of them from now on waits for the run instead of
    /// fetching it again), then read column by column
    /// ([`Fetcher::fetch_run`]) once one read-ahead permit per chunk is had.
    /// The returned future resolves when every chunk of the run is cached or
    /// has failed; the download goes on if it is dropped.
    pub fn get_run(
        self: &Arc<Self>,
        plan: &Plan,
        run: &[(u64, ChunkId)],
        counters: &Arc<Counters>,
        priority: Priority,
    ) -> impl Future<Output = Result<(), Error>> + Send + 'static {
        let mut waits = Vec::new();
        let mut map = self.inflight.lock().unwrap();
        let mut mine: Vec<(u64, ChunkId)> = Vec::new();
        let mut seen = HashSet::new();
        for &(index, id) in run {
            if !seen.insert(id) {
                continue;
            }
            if let Some(d) = map.get(&Want::Chunk(id)) {
                let _ = d.class.raise(priority);
                waits.push(d.result.clone());
            } else if !self.hot.lock().unwrap().contains(&id) && !self.cache.probe(&id) {
                // Not in memory, and a disk cache miss (counted): fetch it,
                // alone if the peers are asked for it first (they send whole
                // chunks), else with the run's columns.
                if self.asks_peers(plan, &id).is_some() {
                    let want = Want::Chunk(id);
                    waits.push(
                        self.join_or_start(&mut map, plan, index, want, counters, priority, true),
                    );
                } else {
                    mine.push((index, id));
                }
            }
        }
        if !mine.is_empty() {
            let class = Class::new(priority);
            let me = self.clone();
            let (plan, counters) = (plan.clone(), counters.clone());
            let ids = mine.clone();
            let permits = ids.len().clamp(1, self.readahead_permits) as u32;
            let task = tokio::spawn(priority::scope(class.clone(), async move {
                let permit = me.readahead.acquire_many(permits).await;
                let results = match permit {
                    Ok(_permit) => me.fetch_run(&plan, &ids, &counters).await,
                    Err(_) => HashMap::new(),
                };
                let mut map = me.inflight.lock().unwrap();
                for (_, id) in &ids {
                    map.remove(&Want::Chunk(*id));
                }
                Arc::new(results)
            }));
            let all: Shared<BoxFuture<'static, Option<RunResults>>> =
                async move { task.await.ok() }.boxed().shared();
            for &(_, id) in &mine {
                let one: SharedFetch = all
                    .clone()
                    .map(move |r| match r.as_ref().and_then(|m| m.get(&id)) {
                        Some(r) => r.clone(),
                        None => Err(Arc::new(Error::Unavailable("run download failed".into()))),
                    })
                    .boxed()
                    .shared();
                let d = Download {
                    result: one.clone(),
                    class: class.clone(),
                };
                map.insert(Want::Chunk(id), d);
                waits.push(one);
            }
        }
        drop(map);
        async move {
            for r in join_all(waits).await {
                r.map_err(|e| Error::Unavailable(e.to_string()))?;
            }
            Ok(())
        }
    }

    /// The run download of [`Chunks::get_run`]: fetched, then cached (disk
    /// and memory) before its chunks leave `inflight`.
    async fn fetch_run(
        &self,
        plan: &Plan,
        run: &[(u64, ChunkId)],
        counters: &Counters,
    ) -> HashMap<ChunkId, Result<Bytes, Arc<Error>>> {
        let indexes: Vec<u64> = run.iter().map(|&(i, _)| i).collect();
        let got = self.fetcher.fetch_run(plan, &indexes).await;
        let mut out = HashMap::with_capacity(got.len());
        let mut verified = Vec::with_capacity(got.len());
        for (index, r) in got {
            let Some(id) = plan.manifest.chunks[index as usize] else {
                continue;
            };
            match r {
                Ok(chunk) => {
                    counters
                        .bytes_fetched
                        .fetch_add(chunk.len() as u64, Relaxed);
                    out.insert(id, Ok(chunk.bytes().clone()));
                    verified.push(chunk);
                }
                Err(e) => {
                    out.insert(id, Err(Arc::new(e)));
                }
            }
        }
        self.keep(verified).await;
        out
    }

    /// Keep verified chunks in memory and in the disk cache (one blocking
    /// task for all), before their downloads leave `inflight`.
    async fn keep(&self, chunks: Vec<VerifiedChunk>) {
        {
            let mut hot = self.hot.lock().unwrap();
            for c in &chunks {
                hot.put(c.id(), c.bytes().clone());
            }
        }
        let cache = self.cache.clone();
        let _ = tokio::task::spawn_blocking(move || {
            for c in &chunks {
                cache.put(c);
            }
        })
        .await;
    }

    /// One download, from the stores.
    async fn fetch(
        &self,
        plan: &Plan,
        index: u64,
        want: Want,
        counters: &Counters,
        via_peers: bool,
    ) -> Result<Bytes, Error> {
        match want {
            Want::Chunk(id) => {
                // A download that finished between the caller's lookup and
                // this one's start has put the chunk in memory and the disk
                // cache before leaving `inflight`: look again, so the chunk
                // is never fetched twice.
                if self.hot.lock().unwrap().contains(&id) || self.cache.contains(&id) {
                    if let Some(b) = self.lookup(id, counters).await? {
                        return Ok(b);
                    }
                }
                let from_peer = match (via_peers, plan.image) {
                    (true, Some(image)) => match self.asks_peers(plan, &id) {
                        Some(n) => {
                            let max = plan.manifest.chunk_len(index) as u64;
                            n.get(image, index, id, max).await
                        }
                        None => None,
                    },
                    _ => None,
                };
                let chunk = match from_peer {
                    Some(c) => {
                        counters.bytes_from_peers.fetch_add(c.len() as u64, Relaxed);
                        c
                    }
                    None => {
                        let c = self.fetcher.fetch(plan, index).await?;
                        counters.bytes_fetched.fetch_add(c.len() as u64, Relaxed);
                        c
                    }
                };
                let b = chunk.bytes().clone();
                self.keep(vec![chunk]).await;
                Ok(b)
            }
            Want::Piece(id, shard) => {
                // As for a chunk: a download of this piece that finished
                // after the caller looked has left it in memory.
                if let Some(b) = self.pieces.lock().unwrap().get(&(id, shard)) {
                    return Ok(b);
                }
                let piece = self.fetcher.fetch_piece(plan, index, shard).await?;
                let b = piece.into_bytes();
                counters.bytes_fetched.fetch_add(b.len() as u64, Relaxed);
                let k = plan.codec().data_shards();
                let all: Option<Vec<Bytes>> = {
                    let mut pieces = self.pieces.lock().unwrap();
                    pieces.put((id, shard), b.clone());
                    (0..k).map(|i| pieces.get(&(id, i))).collect()
                };
                if let Some(all) = all {
                    self.assemble(id, all).await;
                }
                Ok(b)
            }
        }
    }

    /// All `k` data pieces of chunk `id` are in memory: join them into the
    /// chunk, so the disk cache (which holds whole chunks) gets it and it
    /// counts as fetched.
    async fn assemble(&self, id: ChunkId, pieces: Vec<Bytes>) {
        let data: Vec<u8> = pieces.concat();
        let chunk = match VerifiedChunk::verify(id, Bytes::from(data)) {
            Ok(c) => c,
            Err(e) => {
                // Each piece was proved; their join must be the chunk.
                tracing::error!(chunk = %id.short(), "proved pieces do not join into their chunk: {e}");
                return;
            }
        };
        self.fetcher.stats().chunks_fetched.fetch_add(1, Relaxed);
        self.keep(vec![chunk]).await;
    }
}

/// Per-image counters.
#[derive(Debug, Default)]
pub struct Counters {
    pub reads: AtomicU64,
    pub bytes_read: AtomicU64,
    /// Chunk bytes fetched from the stores on behalf of this image.
    pub bytes_fetched: AtomicU64,
    /// Chunk bytes served from the local cache.
    pub bytes_from_cache: AtomicU64,
    /// Chunk bytes fetched from the site's peers on behalf of this image.
    pub bytes_from_peers: AtomicU64,
    /// Chunks the boot profile asked for (0: none loaded).
    pub profile_chunks: AtomicU64,
    /// Chunks background prefetch (boot profile or whole image) has brought
    /// into the cache.
    pub prefetched_chunks: AtomicU64,
}
