//! A latency histogram cheap enough for the request path: fixed bucket
//! bounds, one relaxed atomic add per bucket, sum and count, no lock and no
//! allocation. [`Latency::snapshot`] reads it as cumulative buckets in
//! seconds, the shape a Prometheus histogram has.
//!
//! The counters are read one by one, so a snapshot taken while requests are
//! recorded may be off by the requests in flight; the next one catches up.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Upper bounds of the buckets, in microseconds: 0.5 ms to 10 s, about
/// 2.5× apart (loopback stores answer in under a millisecond, WAN stores in
/// tens to hundreds, a stalled one in seconds). Above the last: `+Inf`.
pub const BOUNDS_US: [u64; 14] = [
    500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000,
    2_500_000, 5_000_000, 10_000_000,
];

/// Observations per bucket (not cumulative), the sum and the count.
#[derive(Debug, Default)]
pub struct Latency {
    /// `buckets[i]` counts durations `<= BOUNDS_US[i]` and above the bound
    /// before; the last slot counts those above every bound.
    buckets: [AtomicU64; BOUNDS_US.len() + 1],
    sum_us: AtomicU64,
    count: AtomicU64,
}

/// A histogram as read at one moment: cumulative counts per upper bound.
#[derive(Debug, Clone, PartialEq)]
pub struct LatencySnapshot {
    /// `(upper bound in seconds, observations <= it)`, bounds ascending;
    /// `+Inf` is implied by `count`.
    pub buckets: Vec<(f64, u64)>,
    pub sum_seconds: f64,
    pub count: u64,
}

impl Latency {
    /// Record one duration.
    pub fn observe(&self, took: Duration) {
        let us = took.as_micros().min(u64::MAX as u128) as u64;
        let i = BOUNDS_US.partition_point(|&b| b < us);
        self.buckets[i].fetch_add(1, Relaxed);
        self.sum_us.fetch_add(us, Relaxed);
        self.count.fetch_add(1, Relaxed);
    }

    pub fn snapshot(&self) -> LatencySnapshot {
        let mut seen = 0;
        let buckets: Vec<(f64, u64)> = BOUNDS_US
            .iter()
            .zip(&self.buckets)
            .map(|(&b, n)| {
                seen += n.load(Relaxed);
                (b as f64 / 1e6, seen)
            })
            .collect();
        let above = self.buckets[BOUNDS_US.len()].load(Relaxed);
        LatencySnapshot {
            buckets,
            sum_seconds: self.sum_us.load(Relaxed) as f64 / 1e6,
            // Never below the last bucket, even when read mid-update.
            count: self.count.load(Relaxed).max(seen + above),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_and_bounds_inclusive() {
        let h = Latency::default();
        for us in [1, 500, 501, 1_000, 7_000, 20_000_000] {
            h.observe(Duration::from_micros(us));
        }
        let s = h.snapshot();
        assert_eq!(s.count, 6);
        assert_eq!(s.buckets.len(), BOUNDS_US.len());
        assert_eq!(s.buckets[0], (0.0005, 2)); // 1 µs and 500 µs
        assert_eq!(s.buckets[1], (0.001, 4)); // + 501 µs and 1 ms
        assert_eq!(s.buckets[3], (0.005, 4));
        assert_eq!(s.buckets[4], (0.01, 5)); // + 7 ms
        assert_eq!(s.buckets.last().unwrap(), &(10.0, 5)); // 20 s only in +Inf
        assert!(
            (s.sum_seconds - 20.009_002).abs() < 1e-9,
            "{}",
            s.sum_seconds
        );
    }

    #[test]
    fn empty() {
        let s = Latency::default().snapshot();
        assert_eq!(s.count, 0);
        assert!(s.buckets.iter().all(|&(_, n)| n == 0));
    }
}
