//! What this host has learnt about each peer: how fast it answers a request
//! and delivers a chunk, and whether it is being avoided after a fault. A peer is charged like a bad store
//! ([`crate::fetch::stats`]): a failure or a missed deadline demotes it for
//! [`PENALTY`], wrong bytes for [`CORRUPT_PENALTY`]; when the penalty runs out
//! it is asked again (fail-back), never forgotten.
//!
//! Times are durations since any fixed epoch the caller keeps (the daemon a
//! monotonic clock, the simulation its own).

use std::collections::HashMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::peers::host::HostId;

/// How long a peer that failed or missed its deadline is avoided.
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
    }

    /// `peer` handed over a verified chunk `took` after it was asked.
    pub fn served(&mut self, peer: HostId, took: Duration) {
        let h = self.peers.entry(peer).or_default();
        h.served += 1;
        h.took = Some(smooth(h.took, took));
    }

    /// Charge `peer` with `fault` at `now`.
    pub fn charge(&mut self, peer: HostId, fault: Fault, now: Duration) {
        let h = self.peers.entry(peer).or_default();
        let penalty = match fault {
            Fault::Failed => {
                h.failed += 1;
                PENALTY
            }
            Fault::TimedOut => {
                h.timed_out += 1;
                PENALTY
            }
            Fault::Corrupt => {
                h.corrupt += 1;
                CORRUPT_PENALTY
            }
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
            (Fault::Failed, PENALTY),
            (Fault::TimedOut, PENALTY),
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
