//! How many background requests one store may have in flight: a delay-based
//! controller in the manner of LEDBAT and TCP Vegas, so that whole-image
//! hydration uses what a link has spare and gives it back as soon as the
//! link starts to queue.
//!
//! Input: the duration of every small request the store answered (any class:
//! on-demand reads see the same queue as background ones). Two filters:
//! - the **base** latency, the lowest sample of the last [`BASE_BUCKETS`]
//!   buckets of [`BUCKET_US`] each: the store's latency with empty queues;
//! - the **current** latency, the lowest of the last [`CURRENT_SAMPLES`]
//!   samples, so one slow outlier (a new TCP connection, a hiccup of the
//!   server) is not taken for a queue.
//!
//! Once per round (the current latency, at least [`MIN_ROUND_US`]), the
//! window moves: while the current latency stays within the target —
//! `base + max(base × margin, FLOOR_US)` — and background work used the whole
//! window, the window grows; as soon as it rises above, the window halves
//! (never below [`Pacer::min`]). An idle window does not grow.
//!
//! Growth starts as a slow start (as in TCP and LEDBAT++): the window
//! doubles each round until the latency first rises above the target. Without
//! it a far store (80 ms, whose link needs about 16 requests of 64 KiB in
//! flight) took 15 rounds, over a second, to fill its link while the near ones
//! waited for its shards. After that the window grows by one request per
//! [`GROW_US`] of round (at least one a round), as TCP Hybla scales growth by
//! the round trip: grown by one a round, a far store took eight rounds (0.7 s
//! at 85 ms) to win back a halving that a 10 ms store wins back in two (30 ms),
//! and carried 28 % of an image spread over three stores instead of a third.
//!
//! Pure: no clock, no I/O; the caller passes the time in microseconds since
//! any fixed start. [`crate::store::limit::Slots`] feeds it and applies the
//! window to background requests.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

/// Length of one bucket of the base-latency history.
pub const BUCKET_US: u64 = 10_000_000;
/// Buckets of base-latency history kept (one minute).
pub const BASE_BUCKETS: usize = 6;
/// Samples the current latency is the minimum of.
pub const CURRENT_SAMPLES: usize = 4;
/// Shortest round between two window changes.
pub const MIN_ROUND_US: u64 = 1_000;
/// Queueing delay always tolerated, for stores whose base latency is tiny
/// (loopback, a LAN) and whose jitter is larger than any share of it.
pub const FLOOR_US: u64 = 2_000;
/// Share of the base latency tolerated as queueing delay.
pub const MARGIN: f64 = 0.5;
/// Once slow start is over, the window grows by one request per this much
/// of a round (at least one a round): the same growth per second on near and
/// far stores.
pub const GROW_US: u64 = 20_000;

/// What a sample changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Hold,
    Grow,
    Halve,
}

/// The controller of one store.
#[derive(Debug, Clone)]
pub struct Pacer {
    min: usize,
    max: usize,
    margin: f64,
    window: usize,
    /// `(bucket number, lowest sample in it)`, oldest first.
    base: VecDeque<(u64, u64)>,
    recent: VecDeque<u64>,
    last_step_us: Option<u64>,
    /// Doubling each round, until the first halving.
    slow_start: bool,
    grows: u64,
    halvings: u64,
}

/// The controller's state, for `status` and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PaceSnapshot {
    /// Background requests allowed in flight now.
    pub window: usize,
    /// Lowest latency of the last minute, ms (0: no sample yet).
    pub base_ms: f64,
    /// Lowest latency of the last few samples, ms (0: no sample yet).
    pub current_ms: f64,
    /// Times the window halved because the latency rose.
    pub halvings: u64,
}

impl Pacer {
    /// A window between `min` (at least 1) and `max` (at least `min`), starting
    /// at `min`.
    pub fn new(min: usize, max: usize) -> Self {
        let min = min.max(1);
        Pacer {
            min,
            max: max.max(min),
            margin: MARGIN,
            window: min,
            base: VecDeque::new(),
            recent: VecDeque::new(),
            last_step_us: None,
            slow_start: true,
            grows: 0,
            halvings: 0,
        }
    }

    pub fn min(&self) -> usize {
        self.min
    }

    /// Background requests allowed in flight now.
    pub fn window(&self) -> usize {
        self.window
    }

    /// The store's latency with empty queues, if measured.
    pub fn base_us(&self) -> Option<u64> {
        self.base.iter().map(|&(_, v)| v).min()
    }

    /// The latency now, if measured.
    pub fn current_us(&self) -> Option<u64> {
        self.recent.iter().copied().min()
    }

    /// The highest current latency that still counts as an empty queue.
    pub fn target_us(&self) -> Option<u64> {
        let base = self.base_us()?;
        let extra = ((base as f64 * self.margin) as u64).max(FLOOR_US);
        Some(base + extra)
    }

    /// A request answered at `now_us` after `latency_us`, while `bg_in_flight`
    /// background requests were in flight (the window is used when that
    /// reaches it).
    pub fn observe(&mut self, now_us: u64, latency_us: u64, bg_in_flight: usize) -> Step {
        let latency_us = latency_us.max(1);
        let bucket = now_us / BUCKET_US;
        match self.base.back_mut() {
            Some((b, v)) if *b == bucket => *v = (*v).min(latency_us),
            _ => self.base.push_back((bucket, latency_us)),
        }
        while self
            .base
            .front()
            .is_some_and(|&(b, _)| b + (BASE_BUCKETS as u64) <= bucket)
        {
            self.base.pop_front();
        }
        self.recent.push_back(latency_us);
        if self.recent.len() > CURRENT_SAMPLES {
            self.recent.pop_front();
        }
        let (Some(current), Some(target)) = (self.current_us(), self.target_us()) else {
            return Step::Hold;
        };
        let round = current.max(MIN_ROUND_US);
        if self
            .last_step_us
            .is_some_and(|t| now_us.saturating_sub(t) < round)
        {
            return Step::Hold;
        }
        let step = if current > target {
            self.slow_start = false;
            if self.window > self.min {
                self.window = (self.window / 2).max(self.min);
                self.halvings += 1;
                Step::Halve
            } else {
                Step::Hold
            }
        } else if bg_in_flight >= self.window && self.window < self.max {
            self.window = if self.slow_start {
                self.window * 2
            } else {
                self.window + (round / GROW_US).max(1) as usize
            }
            .min(self.max);
            self.grows += 1;
            Step::Grow
        } else {
            Step::Hold
        };
        if step != Step::Hold {
            self.last_step_us = Some(now_us);
        }
        step
    }

    pub fn snapshot(&self) -> PaceSnapshot {
        let ms = |v: Option<u64>| v.map_or(0.0, |us| us as f64 / 1000.0);
        PaceSnapshot {
            window: self.window,
            base_ms: ms(self.base_us()),
            current_ms: ms(self.current_us()),
            halvings: self.halvings,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Step::*;

    /// Feed `(time ms, latency ms, background in flight)` samples; return
    /// each step and the window after it.
    fn run(p: &mut Pacer, samples: &[(u64, u64, usize)]) -> Vec<(Step, usize)> {
        samples
            .iter()
            .map(|&(t, l, bg)| (p.observe(t * 1000, l * 1000, bg), p.window()))
            .collect()
    }

    #[test]
    fn doubles_a_round_until_the_first_rise_then_grows_by_one_per_20_ms_of_round() {
        let mut p = Pacer::new(1, 64);
        let got = run(
            &mut p,
            &[
                // First sample: grows (a full window, latency = base).
                (0, 50, 1),
                // Within the same round (50 ms): holds.
                (10, 50, 2),
                (49, 50, 2),
                // A round later: doubles (slow start).
                (50, 50, 2),
                (100, 50, 4),
                // Window not used: holds.
                (200, 50, 3),
                (300, 50, 8),
                // The latency rises above the target (75 ms): once the
                // least of the last four samples is above it, halves...
                (400, 100, 0),
                (401, 100, 0),
                (402, 100, 0),
                (403, 100, 16),
                // ... and from then on grows by one per 20 ms of round:
                // two a round at 50 ms.
                (504, 50, 8),
                (560, 50, 10),
            ],
        );
        assert_eq!(
            got,
            vec![
                (Grow, 2),
                (Hold, 2),
                (Hold, 2),
                (Grow, 4),
                (Grow, 8),
                (Hold, 8),
                (Grow, 16),
                (Hold, 16),
                (Hold, 16),
                (Hold, 16),
                (Halve, 8),
                (Grow, 10),
                (Grow, 12),
            ]
        );
    }

    #[test]
    fn halves_once_a_round_as_soon_as_latency_rises_above_the_target() {
        let mut p = Pacer::new(1, 21);
        for i in 0..20 {
            p.observe(i * 100_000, 40_000, 64);
        }
        assert_eq!(p.window(), 21);
        assert_eq!(p.target_us(), Some(60_000));
        // Within the target (base 40 ms + 50 %): holds or grows.
        assert_eq!(p.observe(2_100_000, 59_000, 0), Hold);
        // The current latency is the least of the last four samples: one
        // slow sample is not a queue...
        assert_eq!(p.observe(2_200_000, 900_000, 0), Hold);
        // ... four are.
        let got = run(
            &mut p,
            &[(2300, 80, 0), (2400, 80, 0), (2500, 80, 0), (2510, 80, 0)],
        );
        assert_eq!(got, vec![(Hold, 21), (Hold, 21), (Halve, 10), (Hold, 10)]);
        // A round (80 ms) later, still high: halves again, down to the minimum.
        let got = run(&mut p, &[(2600, 80, 0), (2700, 80, 0), (2800, 80, 0)]);
        assert_eq!(got, vec![(Halve, 5), (Halve, 2), (Halve, 1)]);
        assert_eq!(p.observe(2_900_000, 80_000, 0), Hold);
        assert_eq!(p.snapshot().halvings, 4);
        // One sample back at base is enough to grow again (the current
        // latency is a minimum), once a round, by two at 40 ms.
        let got = run(&mut p, &[(3000, 40, 1), (3001, 40, 3), (3040, 40, 3)]);
        assert_eq!(got, vec![(Grow, 3), (Hold, 3), (Grow, 5)]);
    }

    #[test]
    fn after_slow_start_near_and_far_stores_grow_alike_per_second() {
        // Over 160 ms within the target, out of slow start at a window of 4:
        // a 20 ms store grows by one a round (8 rounds), an 80 ms store by
        // four a round (2 rounds): by 8 each.
        for (rtt, rounds) in [(20, 8), (80, 2)] {
            let mut p = Pacer::new(1, 64);
            p.observe(0, rtt * 1000, 1);
            p.observe(rtt * 1000, rtt * 1000, 2);
            p.observe(2 * rtt * 1000, rtt * 1000, 4);
            assert_eq!(p.window(), 8);
            for i in 0..CURRENT_SAMPLES as u64 {
                // A round is the current latency: 2 × rtt once it rose.
                p.observe(4 * rtt * 1000 + i, 2 * rtt * 1000, 0);
            }
            assert_eq!(p.window(), 4, "halved at {rtt} ms");
            for i in 0..rounds {
                p.observe((5 + i) * rtt * 1000 + 10, rtt * 1000, 64);
            }
            assert_eq!(p.window(), 4 + 8, "at {rtt} ms");
        }
    }

    #[test]
    fn the_base_is_the_least_of_the_last_minute() {
        let mut p = Pacer::new(1, 4);
        p.observe(0, 30_000, 0);
        p.observe(5_000_000, 20_000, 0);
        p.observe(15_000_000, 45_000, 0);
        assert_eq!(p.base_us(), Some(20_000));
        // Buckets 0 (20 ms) ages out after six buckets; bucket 1 (45 ms) is
        // then the oldest.
        p.observe(60_000_000, 50_000, 0);
        assert_eq!(p.base_us(), Some(45_000));
        p.observe(75_000_000, 50_000, 0);
        assert_eq!(p.base_us(), Some(50_000));
    }

    #[test]
    fn tiny_latencies_tolerate_the_floor() {
        let mut p = Pacer::new(2, 4);
        p.observe(0, 100, 0);
        assert_eq!(p.target_us(), Some(100 + FLOOR_US));
        // Jitter of a millisecond on loopback is no queue.
        for t in 1..10 {
            assert_ne!(p.observe(t * 10_000, 1_000, 4), Halve);
        }
        assert_eq!(p.window(), 4);
    }

    #[test]
    fn bounds_hold() {
        let p = Pacer::new(0, 0);
        assert_eq!((p.min(), p.window()), (1, 1));
        let mut p = Pacer::new(3, 4);
        assert_eq!(p.window(), 3);
        for t in 0..10 {
            p.observe(t * 1_000_000, 1_000, 100);
        }
        assert_eq!(p.window(), 4);
        assert_eq!(p.snapshot().base_ms, 1.0);
        assert_eq!(
            Pacer::new(1, 1).snapshot(),
            PaceSnapshot {
                window: 1,
                ..Default::default()
            }
        );
    }
}
