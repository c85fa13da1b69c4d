//! What this host has learnt about each peer: how fast it answers a request
//! and delivers a chunk, and whether it is being avoided after a fault. A peer is charged like a bad store
//! ([`crate::fetch::stats`]): a failure or a missed deadline demotes it for
//! [`FIRST_PENALTY`], wrong bytes for [`CORRUPT_PENALTY`]; when the penalty
//! runs out it is asked again (fail-back), never forgotten. A peer that
//! fails again when asked again is avoided twice as long each time, up to
//! [`PENALTY`]; any answer from it starts over. So a peer that stalled for
//! a moment (its host under memory or disk pressure) is back within a
//! second, while one that was killed or cut off is asked about every 15 s:
//! each avoidance sends the chunks it would have fetched for this host to
//! the runner-up of their ranking, which pulls them from the stores again.
//!
//! Times are durations since any fixed epoch the caller keeps (the daemon a
//! monotonic clock, the simulation its own).

use std::collections::HashMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::peers::host::HostId;

/// How long a peer that failed or missed its deadline is avoided, the
/// first time.
pub const FIRST_PENALTY: Duration = Duration::from_secs(1);

/// The longest a peer that keeps failing is avoided.
pub const PENALTY: Duration = Duration::from_secs(15);

/// How long a peer that served bytes not matching the chunk id is avoided.
pub const CORRUPT_PENALTY: Duration = Duration::from_secs(600);

/// The answer time assumed of a peer not measured yet.
pub const UNMEASURED: Duration = Duration::from_millis(20);

/// What went wrong with a peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Refused, reset, or an error answer.
    Failed,
    /// No answer before the answer deadline (a killed or frozen peer).
    TimedOut,
    /// Bytes that do not hash to the chunk id.
    Corrupt,
}

#[derive(Clone, Debug, Default)]
struct Health {
    /// Smoothed time from asking to the peer's answer.
    answer: Option<Duration>,
    /// Smoothed time from asking to holding a verified chunk.
    took: Option<Duration>,
    avoided_until: Duration,
    /// Failures and missed deadlines since its last answer, counting
    /// only those of asks made while it was not avoided.
    strikes: u32,
    served: u64,
    failed: u64,
    timed_out: u64,
    corrupt: u64,
}

/// A peer's figures for `status`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PeerSnapshot {
    pub host: HostId,
    pub served: u64,
    pub failed: u64,
    pub timed_out: u64,
    pub corrupt: u64,
    pub answer_ms: Option<f64>,
    pub took_ms: Option<f64>,
    pub avoided: bool,
}

/// The health of every peer this host has asked.
#[derive(Clone, Debug, Default)]
pub struct PeerBook {
    peers: HashMap<HostId, Health>,
}

impl PeerBook {
    pub fn new() -> Self {
        Self::default()
    }

    /// `peer` answered `rtt` after it was asked.
    pub fn answered(&mut self, peer: HostId, rtt: Duration) {
        let h = self.peers.entry(peer).or_default();
        h.answer = Some(smooth(h.answer, rtt));
        h.strikes = 0;
    }

    /// `peer` handed over a verified chunk `took` after it was asked.
    pub fn served(&mut self, peer: HostId, took: Duration) {
        let h = self.peers.entry(peer).or_default();
        h.served += 1;
        h.took = Some(smooth(h.took, took));
        h.strikes = 0;
    }

    /// Charge `peer` with `fault` of an ask made at `now`.
    pub fn charge(&mut self, peer: HostId, fault: Fault, now: Duration) {
        let h = self.peers.entry(peer).or_default();
        match fault {
            Fault::Failed => h.failed += 1,
            Fault::TimedOut => h.timed_out += 1,
            Fault::Corrupt => h.corrupt += 1,
        }
        let penalty = if fault == Fault::Corrupt {
            CORRUPT_PENALTY
        } else {
            // Asks already under way when an earlier one was charged add
            // nothing: they failed for the same reason.
            if h.avoided_until <= now {
                h.strikes = h.strikes.saturating_add(1);
            }
            // 1, 2, 4, 8 s, then the cap.
            (FIRST_PENALTY * (1 << h.strikes.saturating_sub(1).min(4))).min(PENALTY)
        };
        h.avoided_until = h.avoided_until.max(now + penalty);
    }

    /// Whether `peer` is not to be asked at `now`.
    pub fn avoided(&self, peer: &HostId, now: Duration) -> bool {
        self.peers.get(peer).is_some_and(|h| h.avoided_until > now)
    }

    /// The time `peer` takes to answer (measured, else [`UNMEASURED`]).
    pub fn answer_time(&self, peer: &HostId) -> Duration {
        self.peers
            .get(peer)
            .and_then(|h| h.answer)
            .unwrap_or(UNMEASURED)
    }

    /// The time `peer` takes from being asked to a verified chunk, if
    /// measured.
    pub fn chunk_time(&self, peer: &HostId) -> Option<Duration> {
        self.peers.get(peer).and_then(|h| h.took)
    }

    /// Every peer asked so far, sorted by id.
    pub fn snapshot(&self, now: Duration) -> Vec<PeerSnapshot> {
        let mut out: Vec<PeerSnapshot> = self
            .peers
            .iter()
            .map(|(host, h)| PeerSnapshot {
                host: *host,
                served: h.served,
                failed: h.failed,
                timed_out: h.timed_out,
                corrupt: h.corrupt,
                answer_ms: h.answer.map(|d| d.as_secs_f64() * 1e3),
                took_ms: h.took.map(|d| d.as_secs_f64() * 1e3),
                avoided: h.avoided_until > now,
            })
            .collect();
        out.sort_by_key(|p| p.host);
        out
    }
}

/// An exponentially weighted mean, weight 1/8 for the new sample.
fn smooth(old: Option<Duration>, new: Duration) -> Duration {
    match old {
        None => new,
        Some(old) => (old * 7 + new) / 8,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(x: u64) -> Duration {
        Duration::from_secs(x)
    }

    #[test]
    fn faults_demote_for_their_penalty_then_fail_back() {
        let p = HostId([1; 32]);
        for (fault, until) in [
            (Fault::Failed, FIRST_PENALTY),
            (Fault::TimedOut, FIRST_PENALTY),
            (Fault::Corrupt, CORRUPT_PENALTY),
        ] {
            let mut b = PeerBook::new();
            assert!(!b.avoided(&p, s(100)));
            b.charge(p, fault, s(100));
            assert!(b.avoided(&p, s(100)), "{fault:?}");
            assert!(
                b.avoided(&p, s(100) + until - Duration::from_millis(1)),
                "{fault:?}"
            );
            assert!(!b.avoided(&p, s(100) + until), "{fault:?}");
        }
    }

    /// A peer failing each time it is asked again is avoided 1, 2, 4, 8,
    /// then 15 s; asks that were under way when it was charged add nothing;
    /// an answer starts over.
    #[test]
    fn penalties_double_while_a_peer_keeps_failing_and_reset_on_an_answer() {
        let p = HostId([1; 32]);
        let ms = Duration::from_millis;
        let mut b = PeerBook::new();
        let mut now = s(100);
        for want in [1, 2, 4, 8, 15, 15] {
            b.charge(p, Fault::TimedOut, now);
            // Two asks made just before, timing out now too.
            b.charge(p, Fault::TimedOut, now - ms(10));
            b.charge(p, Fault::Failed, now - ms(20));
            assert!(b.avoided(&p, now + s(want) - ms(1)), "{want}");
            assert!(!b.avoided(&p, now + s(want)), "{want}");
            now += s(want);
        }
        b.answered(p, ms(3));
        b.charge(p, Fault::TimedOut, now);
        assert!(!b.avoided(&p, now + FIRST_PENALTY));
        b.served(p, ms(30));
        b.charge(p, Fault::Failed, now + s(1));
        assert!(!b.avoided(&p, now + s(1) + FIRST_PENALTY));
    }

    #[test]
    fn a_later_small_fault_does_not_shorten_a_corrupt_penalty() {
        let p = HostId([1; 32]);
        let mut b = PeerBook::new();
        b.charge(p, Fault::Corrupt, s(0));
        b.charge(p, Fault::Failed, s(1));
        assert!(b.avoided(&p, s(300)));
        let snap = b.snapshot(s(300));
        assert_eq!(
            (snap[0].corrupt, snap[0].failed, snap[0].avoided),
            (1, 1, true)
        );
    }

    #[test]
    fn times_are_smoothed_from_measurements() {
        let p = HostId([1; 32]);
        let mut b = PeerBook::new();
        assert_eq!(b.answer_time(&p), UNMEASURED);
        assert_eq!(b.chunk_time(&p), None);
        b.answered(p, Duration::from_millis(8));
        assert_eq!(b.answer_time(&p), Duration::from_millis(8));
        b.answered(p, Duration::from_millis(16));
        assert_eq!(b.answer_time(&p), Duration::from_millis(9));
        b.served(p, Duration::from_millis(40));
        assert_eq!(b.chunk_time(&p), Some(Duration::from_millis(40)));
        let snap = &b.snapshot(s(0))[0];
        assert_eq!(
            (snap.served, snap.took_ms, snap.answer_ms),
            (1, Some(40.0), Some(9.0))
        );
    }
}
