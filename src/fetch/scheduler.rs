//! Where a mount's chunks come from: the hot set in memory, then the disk
//! cache, then the stores, one download per chunk at a time (single-flight,
//! keyed by chunk id, so identical chunks of different images share the
//! download). The fetched chunk is cached before its waiters are released.
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
//! On-demand reads never wait for a permit here; read-ahead, boot-profile
//! prefetch and whole-image prefetch run in background tasks, each bounded by
//! its own semaphore ([`Limits`]), in chunks.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use tokio::sync::Semaphore;

use crate::cache::Cache;
use crate::core::id::ChunkId;
use crate::error::Error;
use crate::fetch::hot::Hot;
use crate::fetch::{Fetcher, Plan};
use crate::store::priority::{self, Class, Priority};

type SharedFetch = Shared<BoxFuture<'static, Result<Bytes, Arc<Error>>>>;

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
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            readahead: 8,
            profile: 16,
            prefetch: 2,
        }
    }
}

/// Where chunks come from: memory, disk cache, then stores, single-flight.
/// Shared by all images.
#[derive(Debug)]
pub struct Chunks {
    hot: Mutex<Hot>,
    fetcher: Fetcher,
    cache: Arc<Cache>,
    inflight: Mutex<HashMap<ChunkId, Download>>,
    pub readahead: Semaphore,
    pub profile: Arc<Semaphore>,
    pub prefetch: Arc<Semaphore>,
}

impl Chunks {
    pub fn new(fetcher: Fetcher, cache: Arc<Cache>, limits: Limits) -> Arc<Self> {
        Arc::new(Chunks {
            hot: Mutex::new(Hot::new()),
            fetcher,
            cache,
            inflight: Mutex::new(HashMap::new()),
            readahead: Semaphore::new(limits.readahead.max(1)),
            profile: Arc::new(Semaphore::new(limits.profile.max(1))),
            prefetch: Arc::new(Semaphore::new(limits.prefetch.max(1))),
        })
    }

    pub fn fetcher(&self) -> &Fetcher {
        &self.fetcher
    }

    pub fn cache(&self) -> &Arc<Cache> {
        &self.cache
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
        if let Some(b) = self.hot.lock().unwrap().get(&id) {
            counters.bytes_from_cache.fetch_add(b.len() as u64, Relaxed);
            return Ok(b);
        }
        let cache = self.cache.clone();
        if cache.probe(&id) {
            let hit = tokio::task::spawn_blocking(move || cache.get(&id))
                .await
                .map_err(|e| Error::Invalid(format!("cache task: {e}")))?;
            if let Some(c) = hit {
                counters.bytes_from_cache.fetch_add(c.len() as u64, Relaxed);
                let b = c.into_bytes();
                self.hot.lock().unwrap().put(id, b.clone());
                return Ok(b);
            }
        }
        let fut = {
            let mut map = self.inflight.lock().unwrap();
            match map.get(&id) {
                Some(d) => {
                    if d.class.raise(priority) {
                        tracing::debug!(chunk = %id.short(), "download raised to {priority}");
                    }
                    d.result.clone()
                }
                None => {
                    let me = self.clone();
                    let plan = plan.clone();
                    let counters = counters.clone();
                    let class = Class::new(priority);
                    let task = tokio::spawn(priority::scope(class.clone(), async move {
                        let r = me.fetcher.fetch(&plan, index).await;
                        let r = match r {
                            Ok(chunk) => {
                                counters
                                    .bytes_fetched
                                    .fetch_add(chunk.len() as u64, Relaxed);
                                let cache = me.cache.clone();
                                let c2 = chunk.clone();
                                let _ = tokio::task::spawn_blocking(move || cache.put(&c2)).await;
                                let b = chunk.into_bytes();
                                me.hot.lock().unwrap().put(id, b.clone());
                                Ok(b)
                            }
                            Err(e) => Err(Arc::new(e)),
                        };
                        me.inflight.lock().unwrap().remove(&id);
                        r
                    }));
                    let f: BoxFuture<'static, Result<Bytes, Arc<Error>>> = async move {
                        task.await.unwrap_or_else(|e| {
                            Err(Arc::new(Error::Invalid(format!("fetch task: {e}"))))
                        })
                    }
                    .boxed();
                    let f = f.shared();
                    map.insert(
                        id,
                        Download {
                            result: f.clone(),
                            class,
                        },
                    );
                    f
                }
            }
        };
        fut.await.map_err(|e| match &*e {
            Error::Corrupt(m) => Error::Corrupt(m.clone()),
            other => Error::Unavailable(other.to_string()),
        })
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
    /// Chunks the boot profile asked for (0: none loaded).
    pub profile_chunks: AtomicU64,
}
