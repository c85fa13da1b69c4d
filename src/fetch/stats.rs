//! Live measurements of each store — latency (EWMA, and a histogram for
//! metrics), throughput, errors, corrupt shards, hedges — and the ranking the
//! fetcher derives from them.
//!
//! Ranking: a store's cost is its smoothed request latency; a store that failed
//! in the last [`PENALTY`] ranks after every healthy store, so it is used only when others
//! cannot serve. When the penalty expires the store is tried again at its old
//! rank (fail-back): a store is demoted, never forgotten.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::fetch::latency::Latency;

pub const PENALTY: Duration = Duration::from_secs(15);

/// Bulk rate assumed of a store not measured yet, bytes per second.
pub const UNMEASURED_RATE: u64 = 100_000_000;

/// Added to a demoted store's cost so it ranks after every healthy one.
const DEMOTED: u64 = 1 << 40;

#[derive(Debug, Default)]
pub struct StoreStats {
    pub requests: AtomicU64,
    pub errors: AtomicU64,
    pub corrupt: AtomicU64,
    pub hedges: AtomicU64,
    pub bytes: AtomicU64,
    /// Smoothed latency in microseconds (0 = not measured yet).
    latency_us: AtomicU64,
    /// Smoothed bulk-read rate in bytes per second (0 = not measured yet).
    throughput: AtomicU64,
    /// Bytes asked of the store by bulk reads and not yet answered.
    pub pending: AtomicU64,
    /// Bytes asked of the store by background (hydration) shard requests
    /// and not yet answered, those waiting for a slot included: how
    /// background work is spread over the stores ([`crate::fetch::spread`]).
    pub background: AtomicU64,
    /// Every answered request's duration (small and bulk reads alike), for
    /// the metrics endpoint; failed requests are not timed.
    pub durations: Latency,
    last_error: Mutex<Option<Instant>>,
}

/// A snapshot for `status`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreSnapshot {
    pub name: String,
    pub requests: u64,
    pub errors: u64,
    pub corrupt_shards: u64,
    pub hedges: u64,
    pub bytes: u64,
    pub latency_ms: f64,
    pub demoted: bool,
    /// The pacing of background requests to this store, when the mount
    /// paces them (see [`crate::store::pace`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pace: Option<crate::store::pace::PaceSnapshot>,
}

impl StoreStats {
    pub fn record_ok(&self, took: Duration, bytes: usize) {
        self.requests.fetch_add(1, Relaxed);
        self.bytes.fetch_add(bytes as u64, Relaxed);
        self.durations.observe(took);
        let us = took.as_micros().max(1) as u64;
        let old = self.latency_us.load(Relaxed);
        let new = if old == 0 { us } else { (old * 7 + us) / 8 };
        self.latency_us.store(new, Relaxed);
    }

    /// A bulk read (many shards in one range request) of `bytes` that took
    /// `took`: counted, and folded into the store's throughput, not its
    /// latency (which stays the latency of small reads).
    pub fn record_bulk(&self, took: Duration, bytes: usize) {
        self.requests.fetch_add(1, Relaxed);
        self.bytes.fetch_add(bytes as u64, Relaxed);
        self.durations.observe(took);
        let rate = (bytes as f64 / took.as_secs_f64().max(1e-6)) as u64;
        let old = self.throughput.load(Relaxed);
        let new = if old == 0 { rate } else { (old * 3 + rate) / 4 };
        self.throughput.store(new.max(1), Relaxed);
    }

    /// Bytes per second of bulk reads (smoothed), 0 until one was measured.
    pub fn throughput(&self) -> u64 {
        self.throughput.load(Relaxed)
    }

    pub fn record_error(&self) {
        self.requests.fetch_add(1, Relaxed);
        self.errors.fetch_add(1, Relaxed);
        *self.last_error.lock().unwrap() = Some(Instant::now());
    }

    pub fn record_corrupt(&self) {
        self.corrupt.fetch_add(1, Relaxed);
        *self.last_error.lock().unwrap() = Some(Instant::now());
    }

    pub fn latency(&self) -> Duration {
        Duration::from_micros(self.latency_us.load(Relaxed))
    }

    /// Whether the store failed within the last [`PENALTY`].
    pub fn is_demoted(&self) -> bool {
        self.demoted()
    }

    fn demoted(&self) -> bool {
        self.last_error
            .lock()
            .unwrap()
            .is_some_and(|t| t.elapsed() < PENALTY)
    }

    /// Microseconds this store would likely take to send `bytes` more after
    /// what it is still sending. A store whose bulk rate is not measured yet
    /// counts as sending [`UNMEASURED_RATE`]: it gets tried, and measured,
    /// and bytes queued on it still count, so the first requests of a
    /// download spread over the stores instead of piling on the nearest.
    pub fn eta_us(&self, bytes: u64) -> u64 {
        let rate = match self.throughput() {
            0 => UNMEASURED_RATE,
            r => r,
        };
        let queued = self.pending.load(Relaxed) + bytes;
        let transfer = queued.saturating_mul(1_000_000) / rate;
        let demoted = if self.demoted() { DEMOTED } else { 0 };
        demoted + self.latency_us.load(Relaxed) + transfer
    }

    /// Lower is better.
    pub fn cost(&self) -> u64 {
        let base = self.latency_us.load(Relaxed);
        if self.demoted() { DEMOTED + base } else { base }
    }

    pub fn snapshot(&self, name: &str) -> StoreSnapshot {
        StoreSnapshot {
            name: name.to_string(),
            requests: self.requests.load(Relaxed),
            errors: self.errors.load(Relaxed),
            corrupt_shards: self.corrupt.load(Relaxed),
            hedges: self.hedges.load(Relaxed),
            bytes: self.bytes.load(Relaxed),
            latency_ms: self.latency_us.load(Relaxed) as f64 / 1000.0,
            demoted: self.demoted(),
            pace: None,
        }
    }
}

/// Measurements for all stores of a repository, indexed like its stores.
#[derive(Debug)]
pub struct Stats {
    pub names: Vec<String>,
    pub stores: Vec<StoreStats>,
    /// Chunks rebuilt with at least one parity shard: a data shard was missing,
    /// late or bad, or simply sat on a store ranked slower than a parity one
    /// (stores are tried cheapest first), so this counts decodes, not faults.
    pub degraded_reads: AtomicU64,
    pub chunks_fetched: AtomicU64,
    /// Data shards fetched and served alone ([`crate::fetch::piece`]).
    pub pieces_fetched: AtomicU64,
}

impl Stats {
    pub fn new(names: Vec<String>) -> Self {
        Stats {
            stores: names.iter().map(|_| StoreStats::default()).collect(),
            names,
            degraded_reads: AtomicU64::new(0),
            chunks_fetched: AtomicU64::new(0),
            pieces_fetched: AtomicU64::new(0),
        }
    }

    pub fn snapshot(&self) -> Vec<StoreSnapshot> {
        self.names
            .iter()
            .zip(&self.stores)
            .map(|(n, s)| s.snapshot(n))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_demote_and_latency_ranks() {
        let fast = StoreStats::default();
        let slow = StoreStats::default();
        fast.record_ok(Duration::from_millis(2), 10);
        slow.record_ok(Duration::from_millis(40), 10);
        assert!(fast.cost() < slow.cost());
        fast.record_error();
        assert!(fast.cost() > slow.cost());
        assert_eq!(fast.snapshot("f").errors, 1);
    }

    #[test]
    fn ewma_moves_toward_new_samples() {
        let s = StoreStats::default();
        s.record_ok(Duration::from_millis(80), 1);
        for _ in 0..40 {
            s.record_ok(Duration::from_millis(10), 1);
        }
        assert!(s.latency() < Duration::from_millis(12), "{:?}", s.latency());
    }
}
