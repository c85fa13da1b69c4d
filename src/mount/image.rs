//! Reading an image version at any offset: the logic behind a mounted file,
//! with no knowledge of FUSE.
//!
//! Contract of [`ImageReader::read_at`]: it returns exactly
//! `min(len, size - offset)` bytes (empty at or past the end), never fewer — QEMU
//! takes a short read on a regular file as the end of the file and fills zeros
//! silently — or an error. Every byte comes from a [`VerifiedChunk`](crate::core::chunk::VerifiedChunk) or from an
//! all-zero chunk, which is answered without any fetch.
//!
//! Chunks come from [`Chunks`] (memory, disk cache, stores; single-flight),
//! shared by every image of a mount. A sequential reader starts read-ahead
//! ([`Window`]); a boot profile or `[mount] prefetch` fetches in the background.
//! Each asks in its [`Priority`] class: a read on-demand, read-ahead as
//! read-ahead, the boot profile (and loading it) as profile, whole-image
//! prefetch as background.
//!
//! Each reader also keeps a [`Trace`] of the chunks its reads touched first, in
//! order, from which `vmifs profile record` makes a boot [`Profile`]; with
//! [`AutoProfile`], an image opened without a profile publishes its own once
//! the window after its first read closes.
//!
//! Hydration ([`ImageReader::hydrate`]) is whole-image prefetch for an image
//! whose data fits a share of the cache, at background class: the stores'
//! request slots pace it ([`crate::store::pace`]) so it never slows reads.
//!
//! The offset arithmetic ([`spans`]) is pure and table-tested.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures::future::join_all;
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

use crate::cache::{Backing, CachedImage, Completeness};
use crate::core::id::{ChunkId, ImageId};
use crate::core::key::SecretKey;
use crate::core::manifest::Manifest;
use crate::core::profile::{Profile, Trace};
use crate::error::Error;
use crate::fetch::Plan;
use crate::fetch::scheduler::{Chunks, Counters};
use crate::mount::readahead::Window;
use crate::mount::span::{clipped_len, spans};
use crate::repo::Repo;
use crate::store::priority::{self, Class, Priority};

/// The figures of one image version, for `status`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageStats {
    pub id: ImageId,
    pub size: u64,
    pub reads: u64,
    pub bytes_read: u64,
    pub bytes_fetched: u64,
    pub bytes_from_cache: u64,
    /// Chunk bytes fetched from the site's peers (`[peers]`) instead of the
    /// stores.
    #[serde(default)]
    pub bytes_from_peers: u64,
    /// Bytes of this image's chunks the disk cache holds now: each distinct
    /// chunk id of the image that is cached, counted once, by its length
    /// (the cache stores a chunk repeated within one image at each of its
    /// offsets, so `used_bytes` counts it that many times); all-zero chunks
    /// are never stored. Images that share chunks each count them, so the
    /// sum over images can exceed the cache's `used_bytes`.
    pub bytes_cached: u64,
    /// Chunks listed by the boot profile being prefetched (0: none).
    pub profile_chunks: u64,
    /// Distinct chunks reads have touched so far (the trace).
    pub traced_chunks: u64,
    /// Chunks background prefetch (boot profile or `[mount] prefetch`) has
    /// fetched so far; chunks it found cached already are not counted.
    pub prefetched_chunks: u64,
    /// Bytes of the image's distinct data chunks: what a full cache of it
    /// holds (`bytes_cached` reaches it when the image is hydrated).
    pub data_bytes: u64,
    pub hydration: Hydration,
    /// Milliseconds from the start of hydration until every data chunk was
    /// cached.
    #[serde(default)]
    pub hydrated_ms: Option<u64>,
    /// Whether this mount published the image's boot profile
    /// (`mount.auto_profiles`).
    #[serde(default)]
    pub profile_published: bool,
}

/// Where whole-image hydration of an image stands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Hydration {
    /// Not asked for (yet).
    #[default]
    Off,
    /// The image's data is larger than `mount.hydrate_share` of the cache.
    TooLarge,
    Running,
    /// Every data chunk is cached.
    Done,
    /// Finished with some chunks not fetched (stores failed); the next open
    /// tries again.
    Incomplete,
}

impl std::fmt::Display for Hydration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Hydration::Off => "off",
            Hydration::TooLarge => "too large",
            Hydration::Running => "running",
            Hydration::Done => "done",
            Hydration::Incomplete => "incomplete",
        })
    }
}

/// Publishing a boot profile of an image opened without one.
#[derive(Debug, Clone)]
pub struct AutoProfile {
    /// Record the reads of this long after the first one.
    pub window: Duration,
    /// Sign the profile with this key.
    pub key: Option<Arc<SecretKey>>,
}

#[derive(Debug, Default)]
struct HydrationState {
    state: Hydration,
    started: Option<Instant>,
    took_ms: Option<u64>,
}

/// One image version, readable at any offset.
#[derive(Debug)]
pub struct ImageReader {
    id: ImageId,
    plan: Plan,
    chunks: Arc<Chunks>,
    counters: Arc<Counters>,
    readahead_chunks: u64,
    /// One past the last chunk of the previous read (sequential detection).
    next_chunk: AtomicU64,
    /// The read-ahead window of the sequential reader.
    ahead: Mutex<Window>,
    prefetching: AtomicBool,
    profiling: AtomicBool,
    first_read: OnceLock<Instant>,
    trace: Mutex<Trace>,
    /// This version's file in the disk cache, registered on first use.
    cached: OnceLock<Option<Arc<CachedImage>>>,
    /// A background hash of the cached file is under way or done.
    verifying: AtomicBool,
    /// Bytes of the distinct data chunks.
    data_bytes: u64,
    hydration: Mutex<HydrationState>,
    published: AtomicBool,
}

impl ImageReader {
    pub fn new(
        id: ImageId,
        mut plan: Plan,
        chunks: Arc<Chunks>,
        readahead_chunks: usize,
    ) -> Arc<Self> {
        plan.image = Some(id);
        let m = &plan.manifest;
        let mut seen = HashSet::new();
        let data_bytes = (0..m.chunk_count())
            .filter(|&i| m.chunks[i as usize].is_some_and(|id| seen.insert(id)))
            .map(|i| m.chunk_len(i) as u64)
            .sum();
        Arc::new(ImageReader {
            data_bytes,
            hydration: Mutex::default(),
            published: AtomicBool::new(false),
            id,
            plan,
            chunks,
            counters: Arc::default(),
            readahead_chunks: readahead_chunks as u64,
            next_chunk: AtomicU64::new(u64::MAX),
            ahead: Mutex::default(),
            prefetching: Default::default(),
            profiling: Default::default(),
            first_read: OnceLock::new(),
            trace: Mutex::default(),
            cached: OnceLock::new(),
            verifying: AtomicBool::new(false),
        })
    }

    /// This version's file in the disk cache (registered now if it was not):
    /// from now on its chunks are cached in it. `None` if the cache cannot
    /// create it.
    pub fn cached(&self) -> Option<&Arc<CachedImage>> {
        self.cached
            .get_or_init(|| self.chunks.cache().register(&self.plan.manifest))
            .as_ref()
    }

    pub fn id(&self) -> ImageId {
        self.id
    }

    pub fn size(&self) -> u64 {
        self.plan.manifest.size
    }

    /// The plan the image's chunks are fetched by.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    pub fn manifest(&self) -> &Manifest {
        &self.plan.manifest
    }

    pub fn stats(&self) -> ImageStats {
        let m = &self.plan.manifest;
        let cache = self.chunks.cache();
        let mut seen = HashSet::new();
        let bytes_cached = (0..m.chunk_count())
            .filter(|&i| {
                m.chunks[i as usize].is_some_and(|id| seen.insert(id) && cache.contains(&id))
            })
            .map(|i| m.chunk_len(i) as u64)
            .sum();
        let (hydration, hydrated_ms) = {
            let h = self.hydration.lock().unwrap();
            (h.state, h.took_ms)
        };
        ImageStats {
            id: self.id,
            size: m.size,
            reads: self.counters.reads.load(Relaxed),
            bytes_read: self.counters.bytes_read.load(Relaxed),
            bytes_fetched: self.counters.bytes_fetched.load(Relaxed),
            bytes_from_cache: self.counters.bytes_from_cache.load(Relaxed),
            bytes_from_peers: self.counters.bytes_from_peers.load(Relaxed),
            bytes_cached,
            profile_chunks: self.counters.profile_chunks.load(Relaxed),
            traced_chunks: self.trace.lock().unwrap().len() as u64,
            prefetched_chunks: self.counters.prefetched_chunks.load(Relaxed),
            data_bytes: self.data_bytes,
            hydration,
            hydrated_ms,
            profile_published: self.published.load(Relaxed),
        }
    }

    /// Chunk `index` for a peer (see [`Chunks::for_peer`]): held, on its
    /// way, or (with `fetch`) fetched from the stores. `None` if `index` is
    /// not `id` here.
    pub async fn for_peer(&self, index: u64, id: ChunkId, fetch: bool) -> Option<Bytes> {
        if self.plan.manifest.chunks.get(index as usize) != Some(&Some(id)) {
            return None;
        }
        self.chunks
            .for_peer(&self.plan, index, id, fetch, &self.counters)
            .await
    }

    /// Bytes of the image's distinct data chunks.
    pub fn data_bytes(&self) -> u64 {
        self.data_bytes
    }

    /// The bytes `[start, start + len)` of chunk `index`. A sequential
    /// reader will read the rest of the chunk next, so it gets the whole
    /// chunk; another read may get just the data shard it lies in.
    async fn part(
        &self,
        index: u64,
        start: usize,
        len: usize,
        sequential: bool,
    ) -> Result<Bytes, Error> {
        let m = &self.plan.manifest;
        let on_demand = Priority::OnDemand;
        let (plan, counters) = (&self.plan, &self.counters);
        match m.chunks[index as usize] {
            None => Ok(Bytes::from(vec![0u8; len])),
            Some(id) if sequential => {
                let chunk = self
                    .chunks
                    .get(plan, index, id, counters, on_demand)
                    .await?;
                Ok(chunk.slice(start..start + len))
            }
            Some(id) => {
                let part = self
                    .chunks
                    .read(plan, index, id, start, len, counters, on_demand);
                part.await
            }
        }
    }

    /// The cache's file of this version for the kernel to read directly, if
    /// it holds every chunk, verified in this run. If it holds every chunk
    /// but some were cached before the daemon started, they are hashed in
    /// the background (once), so a later open gets it.
    pub fn backing(&self) -> Option<Backing> {
        let img = self.cached()?;
        let cache = self.chunks.cache();
        match cache.completeness(img) {
            Completeness::Complete => cache.backing(img),
            Completeness::Unverified => {
                if !self.verifying.swap(true, Relaxed) {
                    let (cache, img) = (cache.clone(), img.clone());
                    tokio::task::spawn_blocking(move || cache.verify_image(&img));
                }
                None
            }
            Completeness::Missing => None,
        }
    }

    /// Exactly `min(len, size - offset)` bytes at `offset`, if every chunk
    /// under them is in the disk cache: read from the cache's files with one
    /// large read (blocking file I/O, for the caller's thread), else `None`
    /// and nothing counted (the caller then calls [`ImageReader::read_at`]).
    pub fn read_cached(self: &Arc<Self>, offset: u64, len: u64) -> Option<Bytes> {
        let m = &self.plan.manifest;
        let cs = m.chunk_size;
        let want = clipped_len(offset, len, m.size);
        if want == 0 {
            return None;
        }
        let (first, last) = (offset / cs, (offset + want - 1) / cs);
        let data = self
            .chunks
            .cache()
            .read_range(self.cached()?, offset, want)?;
        self.counters.reads.fetch_add(1, Relaxed);
        let stored: u64 = (first..=last)
            .filter(|&i| m.chunks[i as usize].is_some())
            .map(|i| m.chunk_len(i) as u64)
            .sum();
        self.counters.bytes_from_cache.fetch_add(stored, Relaxed);
        self.counters.bytes_read.fetch_add(want, Relaxed);
        self.begin_read(first, last);
        Some(data)
    }

    /// Trace a read of chunks `first..=last` and, if it continues the
    /// previous one, move the read-ahead window; whether it did.
    fn begin_read(self: &Arc<Self>, first: u64, last: u64) -> bool {
        self.record(first..=last);
        let prev_next = self.next_chunk.swap(last + 1, Relaxed);
        let sequential = prev_next != u64::MAX && (first + 1 == prev_next || first == prev_next);
        if sequential {
            self.read_ahead(last + 1, last - first + 1);
        }
        sequential
    }

    /// Exactly `min(len, size - offset)` bytes at `offset`.
    pub async fn read_at(self: &Arc<Self>, offset: u64, len: u64) -> Result<Bytes, Error> {
        let m = &self.plan.manifest;
        self.counters.reads.fetch_add(1, Relaxed);
        self.cached();
        let want = clipped_len(offset, len, m.size);
        let parts = spans(offset, len, m.size, m.chunk_size);
        let (Some(first), Some(last)) = (parts.first(), parts.last()) else {
            return Ok(Bytes::new());
        };
        let sequential = self.begin_read(first.chunk, last.chunk);
        let datas = join_all(
            parts
                .iter()
                .map(|s| self.part(s.chunk, s.start, s.len, sequential)),
        )
        .await;
        let mut out = BytesMut::with_capacity(want as usize);
        for d in datas {
            let d = d?;
            if parts.len() == 1 {
                self.counters.bytes_read.fetch_add(d.len() as u64, Relaxed);
                return Ok(d);
            }
            out.extend_from_slice(&d);
        }
        debug_assert_eq!(out.len() as u64, want);
        self.counters.bytes_read.fetch_add(want, Relaxed);
        Ok(out.freeze())
    }

    /// Start background fetches of the chunks after `from` that the
    /// sequential reader's growing window now covers.
    fn read_ahead(self: &Arc<Self>, from: u64, read: u64) {
        let m = &self.plan.manifest;
        let (start, end) = {
            let mut w = self.ahead.lock().unwrap();
            let r = w.advance(from, read, self.readahead_chunks);
            (r.start, r.end.min(m.chunk_count()))
        };
        let wanted: Vec<(u64, ChunkId)> = (start..end)
            .filter_map(|i| Some((i, m.chunks[i as usize]?)))
            .filter(|(_, id)| !self.chunks.cache().contains(id))
            .collect();
        if wanted.len() > 1 && self.plan.is_packed() {
            // Adjacent chunks of a packed image: one download, coalesced,
            // registered before the reader's next read can ask for them.
            let got = self
                .chunks
                .get_run(&self.plan, &wanted, &self.counters, Priority::ReadAhead);
            let id = self.id;
            tokio::spawn(async move {
                if let Err(e) = got.await {
                    tracing::debug!(image = %id.short(), start, "read-ahead failed: {e}");
                }
            });
            return;
        }
        for (index, id) in wanted {
            let me = self.clone();
            tokio::spawn(async move {
                let Ok(_permit) = me.chunks.readahead.acquire().await else {
                    return;
                };
                let got = me
                    .chunks
                    .get(&me.plan, index, id, &me.counters, Priority::ReadAhead);
                if let Err(e) = got.await {
                    tracing::debug!(image = %me.id.short(), index, "read-ahead failed: {e}");
                }
            });
        }
    }

    /// Add the data chunks in `range` to the trace.
    fn record(&self, range: std::ops::RangeInclusive<u64>) {
        let ms = self
            .first_read
            .get_or_init(Instant::now)
            .elapsed()
            .as_millis() as u64;
        let chunks = &self.plan.manifest.chunks;
        let mut trace = self.trace.lock().unwrap();
        for i in range.filter(|&i| chunks[i as usize].is_some()) {
            trace.touch(i, ms);
        }
    }

    /// The boot profile of this version: chunks first read within `window`
    /// of the first read, in order.
    pub fn profile(&self, window: Duration) -> Profile {
        let window_ms = window.as_millis().min(u64::MAX as u128) as u64;
        self.trace.lock().unwrap().profile(self.id, window_ms)
    }

    /// Load this version's boot profile from `repo` and prefetch its chunks,
    /// in order, up to `Limits::profile` at once. Idempotent; without a usable
    /// profile it does nothing, or, with `auto`, publishes one itself once
    /// `auto.window` after the first read has passed.
    pub fn prefetch_profile(self: &Arc<Self>, repo: Repo, auto: Option<AutoProfile>) {
        if self.profiling.swap(true, Relaxed) {
            return;
        }
        let me = self.clone();
        let class = Class::new(Priority::Profile);
        tokio::spawn(priority::scope(class, async move {
            let loaded = tokio::time::timeout(Duration::from_secs(10), repo.profile(&me.id)).await;
            let p = match loaded {
                Ok(Some(p)) => p,
                Ok(None) => {
                    tracing::debug!(image = %me.id.short(), "no boot profile");
                    if let Some(auto) = auto {
                        let weak = Arc::downgrade(&me);
                        drop(me);
                        publish_after_window(weak, repo, auto).await;
                    }
                    return;
                }
                Err(_) => {
                    tracing::debug!(image = %me.id.short(), "no boot profile: the stores did not answer");
                    return;
                }
            };
            let order = p.prefetch_order(&me.id, &me.plan.manifest);
            tracing::info!(image = %me.id.short(), chunks = order.len(), "prefetching the boot profile");
            me.counters
                .profile_chunks
                .store(order.len() as u64, Relaxed);
            let permits = me.chunks.profile.clone();
            me.prefetch_in_order(order, permits, Priority::Profile);
        }));
    }

    /// Fetch every data chunk of the image into the cache in the background,
    /// at background class (paced by the stores' slots), if its data takes
    /// at most `max_bytes`. Idempotent, unless the last run left chunks out;
    /// nothing when [`ImageReader::prefetch_all`] runs already.
    pub fn hydrate(self: &Arc<Self>, max_bytes: u64) {
        if self.prefetching.load(Relaxed) {
            return; // `[mount] prefetch` fetches it all already
        }
        {
            let mut h = self.hydration.lock().unwrap();
            match h.state {
                Hydration::Off | Hydration::Incomplete => {}
                _ => return,
            }
            if self.data_bytes > max_bytes {
                h.state = Hydration::TooLarge;
                tracing::info!(
                    image = %self.id.short(),
                    data_bytes = self.data_bytes,
                    max_bytes,
                    "not hydrating: the image's data is larger than mount.hydrate_share of the cache"
                );
                return;
            }
            h.state = Hydration::Running;
            h.started = Some(Instant::now());
        }
        tracing::info!(image = %self.id.short(), data_bytes = self.data_bytes, "hydrating");
        let permits = self.chunks.prefetch.clone();
        let all = 0..self.plan.manifest.chunk_count();
        let done = self.prefetch_in_order(all, permits, Priority::Background);
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let _ = done.await;
            if let Some(me) = weak.upgrade() {
                me.hydrated();
            }
        });
    }

    /// Hydration has gone through every chunk: done if all are cached.
    fn hydrated(&self) {
        let cached = self.stats().bytes_cached;
        let mut h = self.hydration.lock().unwrap();
        if cached >= self.data_bytes {
            let ms = h.started.map_or(0, |t| t.elapsed().as_millis() as u64);
            h.state = Hydration::Done;
            h.took_ms = Some(ms);
            tracing::info!(image = %self.id.short(), bytes = self.data_bytes, seconds = ms as f64 / 1000.0, "hydrated");
        } else {
            h.state = Hydration::Incomplete;
            tracing::warn!(
                image = %self.id.short(),
                missing_bytes = self.data_bytes - cached,
                "hydration left chunks out (stores failed); the next open tries again"
            );
        }
    }

    /// Fetch every chunk of the image into the cache in the background, a few at
    /// a time. Idempotent.
    pub fn prefetch_all(self: &Arc<Self>) {
        if self.prefetching.swap(true, Relaxed) {
            return;
        }
        let permits = self.chunks.prefetch.clone();
        let all = 0..self.plan.manifest.chunk_count();
        self.prefetch_in_order(all, permits, Priority::Background);
    }

    /// Fetch the chunks `order` names, in that order, as `permits` allow, at
    /// class `priority`, in a background task that stops when the reader is
    /// dropped; the task ends when every fetch has.
    fn prefetch_in_order(
        self: &Arc<Self>,
        order: impl IntoIterator<Item = u64, IntoIter: Send> + Send + 'static,
        permits: Arc<Semaphore>,
        priority: Priority,
    ) -> tokio::task::JoinHandle<()> {
        let what = match priority {
            Priority::Profile => "boot profile",
            _ => "prefetch",
        };
        self.cached();
        let weak: Weak<Self> = Arc::downgrade(self);
        let chunks = self.chunks.clone();
        tokio::spawn(async move {
            let mut tasks = Vec::new();
            for index in order {
                let Ok(permit) = permits.clone().acquire_owned().await else {
                    return;
                };
                // Stop when nobody needs the image any more.
                let Some(me) = weak.upgrade() else { return };
                let Some(id) = me.plan.manifest.chunks[index as usize] else {
                    continue;
                };
                if chunks.cache().contains(&id) {
                    continue;
                }
                tasks.push(tokio::spawn(async move {
                    let _permit = permit;
                    let got = me.chunks.get(&me.plan, index, id, &me.counters, priority);
                    match got.await {
                        Ok(_) => {
                            me.counters.prefetched_chunks.fetch_add(1, Relaxed);
                        }
                        Err(e) => {
                            tracing::debug!(image = %me.id.short(), index, "{what} failed: {e}");
                        }
                    }
                }));
            }
            join_all(tasks).await;
            tracing::info!("{what} finished");
        })
    }
}

/// Wait until `auto.window` has passed since the reader's first read, then
/// publish what it read meanwhile as its boot profile (signed when a key is
/// given). A failure is one log line: a profile is only a hint.
async fn publish_after_window(weak: Weak<ImageReader>, repo: Repo, auto: AutoProfile) {
    let first = loop {
        let Some(me) = weak.upgrade() else { return };
        if let Some(&t) = me.first_read.get() {
            break t;
        }
        drop(me);
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    tokio::time::sleep_until((first + auto.window).into()).await;
    let Some(me) = weak.upgrade() else { return };
    let p = me.profile(auto.window);
    if p.chunks.is_empty() {
        return;
    }
    let p = match &auto.key {
        Some(k) => k.sign_profile(&p),
        None => p,
    };
    match repo.put_profile(&p).await {
        Ok((ok, failed)) => {
            me.published.store(true, Relaxed);
            tracing::info!(
                image = %me.id.short(),
                chunks = p.chunks.len(),
                signed = p.signature.is_some(),
                "published the boot profile to {ok} of {} stores",
                ok + failed.len()
            );
        }
        Err(e) => tracing::warn!(image = %me.id.short(), "cannot publish the boot profile: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::Cache;
    use crate::config::ErasureConfig;
    use crate::core::id::{Name, Tag};
    use crate::fetch::Fetcher;
    use crate::fetch::scheduler::Limits;
    use crate::repo::Repo;
    use crate::repo::publish::{PushRequest, push};
    use crate::store::DynStore;
    use crate::store::fault::{FaultControl, FaultMode, Faulty};
    use crate::store::memory::MemoryStore;

    struct Fixture {
        data: Vec<u8>,
        reader: Arc<ImageReader>,
        stores: Vec<Arc<MemoryStore>>,
        chunks: Arc<Chunks>,
        _dir: tempfile::TempDir,
    }

    async fn fixture(size: usize, chunk_size: u64) -> Fixture {
        fixture_ra(size, chunk_size, 0).await
    }

    async fn fixture_ra(size: usize, chunk_size: u64, readahead: usize) -> Fixture {
        let mut data = crate::core::sample::random(size, 1);
        // Chunk 1 is all zero.
        let cs = chunk_size as usize;
        data[cs.min(size)..(2 * cs).min(size)].fill(0);
        fixture_of(data, chunk_size, readahead).await
    }

    async fn fixture_of(data: Vec<u8>, chunk_size: u64, readahead: usize) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("img.raw");
        std::fs::write(&file, &data).unwrap();
        let stores: Vec<Arc<MemoryStore>> = (0..3)
            .map(|i| Arc::new(MemoryStore::new(format!("m{i}"))))
            .collect();
        let dyns: Vec<DynStore> = stores.iter().map(|s| s.clone() as DynStore).collect();
        let repo = Repo::from_stores(dyns.clone());
        let name: Name = "img".parse().unwrap();
        let tag: Tag = "latest".parse().unwrap();
        let req = PushRequest {
            layout: Default::default(),
            file,
            name,
            tag,
            labels: Default::default(),
            erasure: ErasureConfig {
                data: 2,
                parity: 1,
                chunk_size,
            },
            parallel: 4,
            sign_key: None,
        };
        let report = push(&repo, req, None).await.unwrap();
        let manifest = repo.manifest(&report.id).await.unwrap();
        let fetcher = Fetcher::new(dyns, None);
        let plan = fetcher.plan(manifest).unwrap();
        let cache = Arc::new(Cache::open(&dir.path().join("cache"), 1 << 30).unwrap());
        let chunks = Chunks::new(fetcher, cache, Limits::default());
        let reader = ImageReader::new(report.id, plan, chunks.clone(), readahead);
        Fixture {
            data,
            reader,
            stores,
            chunks,
            _dir: dir,
        }
    }

    fn shard_gets(chunks: &Chunks) -> u64 {
        chunks
            .fetcher()
            .stats()
            .snapshot()
            .iter()
            .map(|s| s.requests)
            .sum()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reads_match_source_at_any_offset() {
        let cs = 16 * 1024;
        let size = 10 * cs as usize + 1234;
        let f = fixture(size, cs).await;
        let mut cases = vec![
            (0u64, size as u64),
            (0, 0),
            (size as u64, 10),
            (size as u64 + 5, 10),
        ];
        for off in [
            0,
            1,
            cs - 1,
            cs,
            cs + 1,
            3 * cs - 7,
            10 * cs,
            10 * cs + 1000,
            size as u64 - 1,
        ] {
            for len in [1, 7, 4096, cs - 1, cs, cs + 1, 3 * cs + 5, 1 << 20] {
                cases.push((off, len));
            }
        }
        for (off, len) in cases {
            let got = f.reader.read_at(off, len).await.unwrap();
            let end = (off + len).min(size as u64) as usize;
            let want = if (off as usize) < size {
                &f.data[off as usize..end]
            } else {
                &[][..]
            };
            assert_eq!(got.len(), want.len(), "offset {off} len {len}");
            assert!(got[..] == want[..], "offset {off} len {len}");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn zero_chunks_cost_nothing_and_chunks_are_fetched_once() {
        let cs = 16 * 1024;
        let f = fixture(4 * cs as usize, cs).await;
        let z = f.reader.read_at(cs, cs).await.unwrap();
        assert!(z.iter().all(|&b| b == 0));
        assert_eq!(shard_gets(&f.chunks), 0);

        // Many concurrent small readers (of images sharing the chunk) inside
        // data shard 0 of chunk 2: one fetch, of that shard alone.
        let stats = f.chunks.fetcher().stats().clone();
        let reads = (0..16).map(|i| {
            let (plan, chunks) = (f.reader.plan.clone(), f.chunks.clone());
            let r = ImageReader::new(f.reader.id, plan, chunks, 0);
            async move { r.read_at(2 * cs + i * 100, 100).await.unwrap() }
        });
        join_all(reads).await;
        assert_eq!(stats.pieces_fetched.load(Relaxed), 1);
        assert_eq!(stats.chunks_fetched.load(Relaxed), 0);
        assert_eq!(shard_gets(&f.chunks), 1);
        // All of chunk 2: one chunk fetch; then again, from the cache.
        f.reader.read_at(2 * cs, cs).await.unwrap();
        assert_eq!(stats.chunks_fetched.load(Relaxed), 1);
        f.reader.read_at(2 * cs, cs).await.unwrap();
        assert_eq!(stats.chunks_fetched.load(Relaxed), 1);
        let st = f.reader.stats();
        // (The piece was fetched on behalf of another reader.)
        assert_eq!(st.bytes_fetched, cs);
        assert_eq!(st.bytes_cached, cs);
        assert!(st.bytes_from_cache >= cs);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_lost_store_is_survived() {
        let cs = 16 * 1024;
        let size = 6 * cs as usize;
        let f = fixture(size, cs).await;
        let keys = f.stores[0].keys();
        assert!(keys.iter().any(|k| k.starts_with("packs/")), "{keys:?}");
        for k in keys {
            if k.starts_with("packs/") {
                f.stores[0].overwrite(&k, Bytes::from_static(b"garbage"));
            }
        }
        let got = f.reader.read_at(0, size as u64).await.unwrap();
        assert!(got[..] == f.data[..]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn prefetch_fills_the_cache() {
        let cs = 16 * 1024;
        let f = fixture(8 * cs as usize, cs).await;
        f.reader.prefetch_all();
        for _ in 0..200 {
            if f.reader.stats().bytes_cached == 7 * cs {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert_eq!(f.reader.stats().bytes_cached, 7 * cs);
        // Counted once each fetch has returned (just after it was cached).
        for _ in 0..200 {
            if f.reader.stats().prefetched_chunks == 7 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert_eq!(f.reader.stats().prefetched_chunks, 7);
        let before = shard_gets(&f.chunks);
        let got = f.reader.read_at(0, 8 * cs).await.unwrap();
        assert!(got[..] == f.data[..]);
        assert_eq!(shard_gets(&f.chunks), before);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sequential_reads_start_read_ahead() {
        let cs = 16 * 1024;
        let f = fixture_ra(12 * cs as usize, cs, 4).await;
        // One read alone is not sequential: nothing beyond it is fetched.
        f.reader.read_at(0, cs).await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        assert_eq!(f.reader.stats().bytes_fetched, cs);
        // The next one is (it covers chunks 1, all zero, and 2): as many
        // chunks as it covered follow in the background, 3 and 4; the one
        // after that (chunk 3) doubles the window: 5, 6 and 7.
        let reader = f.reader.clone();
        let cached = |n: u64| {
            let reader = reader.clone();
            async move {
                for _ in 0..200 {
                    if reader.stats().bytes_cached == n * cs {
                        break;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
                assert_eq!(reader.stats().bytes_cached, n * cs);
            }
        };
        f.reader.read_at(cs + 10, cs).await.unwrap();
        cached(4).await;
        f.reader.read_at(3 * cs, cs).await.unwrap();
        cached(7).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn read_ahead_fetches_adjacent_chunks_with_one_request_per_column() {
        let cs = 16 * 1024;
        let f = fixture_ra(64 * cs as usize, cs, 8).await;
        let before = shard_gets(&f.chunks);
        // Reads of four chunks each, in order, like the kernel's 1 MiB
        // reads of 256 KiB chunks.
        let mut got = Vec::new();
        for at in (0..64 * cs).step_by(4 * cs as usize) {
            got.extend_from_slice(&f.reader.read_at(at, 4 * cs).await.unwrap());
        }
        assert!(got[..] == f.data[..]);
        let stats = f.chunks.fetcher().stats();
        // Every non-zero chunk fetched once, ...
        assert_eq!(stats.chunks_fetched.load(Relaxed), 63);
        assert_eq!(f.reader.stats().bytes_fetched, 63 * cs);
        // ... most of them in runs: one request per column (k = 2) per run
        // instead of one per shard (126 for 63 chunks). The first two reads
        // fetch their own chunks (7 of them, 2 requests each), the 13 runs of
        // 4 chunks after them take 2 requests each: 40, and a few hedges.
        let gets = shard_gets(&f.chunks) - before;
        assert!(gets <= 44, "{gets} requests for 63 chunks");
    }

    /// A reader of the same version over the same stores, with an empty cache.
    async fn fresh_reader(
        f: &Fixture,
        dir: &std::path::Path,
    ) -> (Arc<ImageReader>, Arc<Chunks>, Repo) {
        reader_over(f, Arc::new(Cache::open(dir, 1 << 30).unwrap())).await
    }

    /// A reader of the same version over the same stores and `cache`, with
    /// nothing in memory: what a restarted daemon has.
    async fn reader_over(f: &Fixture, cache: Arc<Cache>) -> (Arc<ImageReader>, Arc<Chunks>, Repo) {
        let dyns: Vec<DynStore> = f.stores.iter().map(|s| s.clone() as DynStore).collect();
        let fetcher = Fetcher::new(dyns.clone(), None);
        let plan = fetcher.plan((*f.reader.plan.manifest).clone()).unwrap();
        let chunks = Chunks::new(fetcher, cache, Limits::default());
        let reader = ImageReader::new(f.reader.id, plan, chunks.clone(), 0);
        (reader, chunks, Repo::from_stores(dyns))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_recorded_profile_is_prefetched_in_full_and_nothing_else() {
        let cs = 16 * 1024;
        let f = fixture(12 * cs as usize, cs).await;
        // A "boot": chunk 7, then 1 (all zero) and 2 in one read, then 7 again, then 4.
        f.reader.read_at(7 * cs + 5, 10).await.unwrap();
        f.reader.read_at(cs + 100, cs).await.unwrap();
        f.reader.read_at(7 * cs, 1).await.unwrap();
        f.reader.read_at(4 * cs, cs).await.unwrap();
        let p = f.reader.profile(Duration::from_secs(60));
        let order: Vec<u64> = p.chunks.iter().map(|c| c.0).collect();
        assert_eq!(order, vec![7, 2, 4]);
        assert_eq!(f.reader.stats().traced_chunks, 3);

        let dir = tempfile::tempdir().unwrap();
        let (reader, chunks, repo) = fresh_reader(&f, dir.path()).await;
        repo.put_profile(&p).await.unwrap();
        reader.prefetch_profile(repo, None);
        for _ in 0..500 {
            if reader.stats().bytes_cached == 3 * cs {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(reader.stats().bytes_cached, 3 * cs);
        assert_eq!(reader.stats().profile_chunks, 3);
        assert_eq!(chunks.fetcher().stats().chunks_fetched.load(Relaxed), 3);
        // The boot again: no fetch at all.
        for (off, len) in [(7 * cs + 5, 10), (cs + 100, cs), (4 * cs, cs)] {
            let got = reader.read_at(off, len).await.unwrap();
            assert!(got[..] == f.data[off as usize..(off + len) as usize]);
        }
        assert_eq!(chunks.fetcher().stats().chunks_fetched.load(Relaxed), 3);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn garbage_foreign_or_missing_profiles_never_break_reads() {
        let cs = 16 * 1024;
        let size = 6 * cs as usize;
        let f = fixture(size, cs).await;
        let key = crate::core::layout::profile_key(&f.reader.id);
        let foreign = Profile {
            version: crate::core::profile::VERSION,
            image: ImageId::of(b"another version"),
            chunks: vec![(0, 0), (2, 1)],
            signature: None,
        };
        let past_the_end = Profile {
            version: crate::core::profile::VERSION,
            image: f.reader.id,
            chunks: vec![(99, 0), (u64::MAX, 1)],
            signature: None,
        };
        let cases: Vec<Option<Bytes>> = vec![
            None,
            Some(Bytes::from_static(b"garbage")),
            Some(Bytes::from(foreign.to_bytes())),
            Some(Bytes::from(past_the_end.to_bytes())),
        ];
        for body in cases {
            for s in &f.stores {
                match &body {
                    Some(b) => s.overwrite(&key, b.clone()),
                    None => {
                        let _ = crate::store::Store::delete(&**s, &key).await;
                    }
                }
            }
            let dir = tempfile::tempdir().unwrap();
            let (reader, chunks, repo) = fresh_reader(&f, dir.path()).await;
            reader.prefetch_profile(repo, None);
            tokio::time::sleep(Duration::from_millis(100)).await;
            assert_eq!(chunks.fetcher().stats().chunks_fetched.load(Relaxed), 0);
            let got = reader.read_at(0, size as u64).await.unwrap();
            assert!(got[..] == f.data[..]);
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_repeated_chunk_counts_once_as_cached() {
        let cs = 16 * 1024;
        let (a, b) = (
            crate::core::sample::random(cs, 11),
            crate::core::sample::random(cs, 12),
        );
        let zero = vec![0u8; cs];
        // A, zero, A, B, A, A, zero (short): two distinct data chunks.
        let parts = [&a, &zero, &a, &b, &a, &a, &zero[..cs / 2].to_vec()];
        let data: Vec<u8> = parts.iter().flat_map(|p| p.iter().copied()).collect();
        let f = fixture_of(data.clone(), cs as u64, 0).await;
        let got = f.reader.read_at(0, data.len() as u64).await.unwrap();
        assert!(got[..] == data[..]);
        let st = f.reader.stats();
        // Fetched once each; the image's cache file holds A in each of its
        // four slots (so the kernel can read that file directly), but the
        // image counts each distinct chunk once.
        let used = f.chunks.cache().usage().used_bytes;
        assert_eq!(used, 5 * cs as u64);
        assert_eq!(st.bytes_cached, 2 * cs as u64);
        assert_eq!(st.bytes_fetched, 2 * cs as u64);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn disk_cache_lookups_count_as_hits_and_misses() {
        let cs = 16 * 1024;
        // Chunks 0, 2 and 3 hold data; chunk 1 is all zero and never looked up.
        let f = fixture(4 * cs as usize, cs).await;
        let usage = || f.chunks.cache().usage();
        f.reader.read_at(0, 4 * cs).await.unwrap();
        assert_eq!((usage().hits, usage().misses), (0, 3));
        // Again: answered from memory, the disk cache is not asked.
        f.reader.read_at(0, 4 * cs).await.unwrap();
        assert_eq!((usage().hits, usage().misses), (0, 3));
        // A restarted daemon over the same cache: three hits, no fetch.
        let (reader, chunks, _) = reader_over(&f, f.chunks.cache().clone()).await;
        let got = reader.read_at(0, 4 * cs).await.unwrap();
        assert!(got[..] == f.data[..]);
        assert_eq!((usage().hits, usage().misses), (3, 3));
        assert_eq!(chunks.fetcher().stats().chunks_fetched.load(Relaxed), 0);
    }

    /// A reader of the same version over the same stores behind fault
    /// wrappers, with an empty cache.
    async fn faulty_reader(
        f: &Fixture,
        dir: &std::path::Path,
    ) -> (Arc<ImageReader>, Arc<Chunks>, Vec<FaultControl>) {
        let wrapped: Vec<Faulty> = f
            .stores
            .iter()
            .map(|s| Faulty::new(s.clone() as DynStore))
            .collect();
        let controls = wrapped.iter().map(|w| w.control()).collect();
        let dyns: Vec<DynStore> = wrapped
            .into_iter()
            .map(|w| Arc::new(w) as DynStore)
            .collect();
        let fetcher = Fetcher::new(dyns, None);
        let plan = fetcher.plan((*f.reader.plan.manifest).clone()).unwrap();
        let cache = Arc::new(Cache::open(dir, 1 << 30).unwrap());
        let chunks = Chunks::new(fetcher, cache, Limits::default());
        (
            ImageReader::new(f.reader.id, plan, chunks.clone(), 0),
            chunks,
            controls,
        )
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_small_read_fetches_one_data_shard_and_two_pieces_make_the_chunk() {
        let cs = 16 * 1024u64;
        let f = fixture(4 * cs as usize, cs).await;
        let stats = f.chunks.fetcher().stats().clone();
        let id = f.reader.plan.manifest.chunks[2].unwrap();
        // 4 KiB inside data shard 1 of chunk 2: one request, to one store.
        let off = 2 * cs + cs / 2 + 100;
        let got = f.reader.read_at(off, 4096).await.unwrap();
        assert!(got[..] == f.data[off as usize..off as usize + 4096]);
        assert_eq!(shard_gets(&f.chunks), 1);
        assert_eq!(stats.pieces_fetched.load(Relaxed), 1);
        assert_eq!(f.reader.stats().bytes_fetched, cs / 2);
        assert!(!f.chunks.cache().contains(&id));
        // A read across both shards of chunk 3 is not a piece.
        f.reader.read_at(3 * cs + cs / 2 - 1, 2).await.unwrap();
        assert_eq!(stats.pieces_fetched.load(Relaxed), 1);
        assert_eq!(stats.chunks_fetched.load(Relaxed), 1);
        // The other data shard of chunk 2: the two pieces join into the
        // chunk, which the disk cache now holds.
        let got = f.reader.read_at(2 * cs, 10).await.unwrap();
        assert!(got[..] == f.data[2 * cs as usize..2 * cs as usize + 10]);
        assert_eq!(stats.pieces_fetched.load(Relaxed), 2);
        assert_eq!(stats.chunks_fetched.load(Relaxed), 2);
        assert!(f.chunks.cache().contains(&id));
        let before = shard_gets(&f.chunks);
        f.reader.read_at(2 * cs, cs).await.unwrap();
        assert_eq!(shard_gets(&f.chunks), before);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_piece_from_a_down_hung_or_lying_store_is_read_from_the_others() {
        let cs = 16 * 1024u64;
        let f = fixture(4 * cs as usize, cs).await;
        let id = f.reader.plan.manifest.chunks[2].unwrap();
        f.chunks.fetcher().table(&f.reader.plan).await;
        let holder = f.reader.plan.shard_at(&id, 0).unwrap().store;
        for mode in [FaultMode::Down, FaultMode::Corrupt, FaultMode::Hang] {
            let dir = tempfile::tempdir().unwrap();
            let (reader, chunks, controls) = faulty_reader(&f, dir.path()).await;
            // The pack table is read while the stores are healthy.
            chunks.fetcher().table(&reader.plan).await;
            controls[holder].set(mode);
            let off = 2 * cs + 1000;
            let read = reader.read_at(off, 4096);
            let got = tokio::time::timeout(Duration::from_secs(20), read)
                .await
                .unwrap_or_else(|_| panic!("{mode:?}: the read hung"))
                .unwrap();
            assert!(
                got[..] == f.data[off as usize..off as usize + 4096],
                "{mode:?}"
            );
            let stats = chunks.fetcher().stats();
            assert_eq!(stats.pieces_fetched.load(Relaxed), 0, "{mode:?}");
            assert_eq!(stats.chunks_fetched.load(Relaxed), 1, "{mode:?}");
            if mode == FaultMode::Corrupt {
                assert!(stats.snapshot()[holder].corrupt_shards > 0, "{mode:?}");
            }
            controls[holder].set(FaultMode::Healthy);
        }
    }

    /// A store down when an image's pack table is read: the image reads
    /// from the others, and once the store is back the table gets its
    /// packs within [`crate::fetch::RETRY_FAILED`].
    #[tokio::test(start_paused = true)]
    async fn a_store_down_when_the_pack_table_is_read_gets_its_packs_back() {
        let cs = 16 * 1024u64;
        let f = fixture(4 * cs as usize, cs).await;
        let dir = tempfile::tempdir().unwrap();
        let (reader, chunks, controls) = faulty_reader(&f, dir.path()).await;
        controls[1].set(FaultMode::Down);
        let got = reader.read_at(0, 4 * cs).await.unwrap();
        assert!(got[..] == f.data[..]);
        let failed = || reader.plan.packed().unwrap().failed.len();
        assert!(failed() > 0);
        controls[1].set(FaultMode::Healthy);
        chunks.fetcher().table(&reader.plan).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(failed() > 0, "not asked again so soon");
        tokio::time::sleep(crate::fetch::RETRY_FAILED).await;
        chunks.fetcher().table(&reader.plan).await;
        for _ in 0..100 {
            if failed() == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(failed(), 0);
        let id = f.reader.plan.manifest.chunks[0].unwrap();
        let packed = reader.plan.packed().unwrap();
        assert!((0..3).all(|s| packed.cell(&id, s).is_some()));
    }
}
