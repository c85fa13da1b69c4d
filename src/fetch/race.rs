//! The shard race of one chunk, as a pure state machine: which shard to ask
//! for next, when to hedge, when to decode, when to give up.
//!
//! [`Race`] does no I/O, spawns nothing and reads no clock: the driver (the
//! [`Fetcher`](super::Fetcher)) feeds it events — [`Race::start`], a shard
//! [`arrived`](Race::arrived) (good, failing its header check, or the request
//! failed), the [timer](Race::timer) fired — each with the time elapsed since the
//! race began, and carries out the [`Action`]s it returns: send a request, arm
//! or disarm the one timer, decode, give up.
//!
//! The rules:
//! - candidates are tried in [`order`]: cheapest store first, data shards
//!   before parity among equals (a healthy read then needs no decoding);
//! - `k` requests are kept going: a failed request or a bad shard is replaced
//!   by the next candidate;
//! - when no event came for the hedge delay and a candidate is left, one more
//!   is asked (a hedge against the oldest request in flight, which is not
//!   cancelled); the timer restarts after every event;
//! - with `k` good shards: decode; with nothing in flight and no candidate
//!   left: give up, saying how many shards were readable.

use std::fmt;
use std::time::Duration;

/// Hedge delay without any latency measured yet.
pub const UNMEASURED_HEDGE: Duration = Duration::from_millis(200);
/// Bounds of the adaptive hedge delay.
pub const MIN_HEDGE: Duration = Duration::from_millis(20);
pub const MAX_HEDGE: Duration = Duration::from_secs(2);

/// Shard `shard` as stored on store `store` (an index into the fetcher's stores).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub shard: usize,
    pub store: usize,
}

/// The candidates of a chunk, best first. `placed[shard]` is the store holding
/// `shard` (`None`: not one of ours); `cost[store]` its current cost, lower is
/// better; shards below `k` are data shards.
pub fn order(placed: &[Option<usize>], cost: &[u64], k: usize) -> Vec<Candidate> {
    let mut c: Vec<Candidate> = placed
        .iter()
        .enumerate()
        .filter_map(|(shard, &s)| s.map(|store| Candidate { shard, store }))
        .collect();
    c.sort_by_key(|c| (cost[c.store], c.shard >= k, c.shard));
    c
}

/// How long to wait for an event before hedging.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HedgeDelay {
    Fixed(Duration),
    /// Three times the smoothed latency of the slowest store in flight
    /// (indexed by store), clamped to [`MIN_HEDGE`]..[`MAX_HEDGE`];
    /// [`UNMEASURED_HEDGE`] while none is measured.
    Adaptive(Vec<Duration>),
}

impl HedgeDelay {
    /// How long requests to `stores` may take before a hedge.
    pub fn over(&self, stores: impl IntoIterator<Item = usize>) -> Duration {
        match self {
            HedgeDelay::Fixed(d) => *d,
            HedgeDelay::Adaptive(latency) => {
                let slowest = stores
                    .into_iter()
                    .filter_map(|s| latency.get(s).copied())
                    .max()
                    .unwrap_or_default();
                if slowest.is_zero() {
                    UNMEASURED_HEDGE
                } else {
                    (slowest * 3).clamp(MIN_HEDGE, MAX_HEDGE)
                }
            }
        }
    }
}

/// What happened to one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The shard passed its header check.
    Good,
    /// The store answered, but not with this shard (truncated, misplaced,
    /// not a shard); the text says what, for the error.
    Bad(String),
    /// The request failed.
    Failed(String),
}

/// What the driver should do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Ask `store` for `shard`. `hedge`: the late store this request races.
    Request {
        shard: usize,
        store: usize,
        hedge: Option<usize>,
    },
    /// Call [`Race::timer`] after this long, unless an event comes first;
    /// replaces an armed timer.
    Arm(Duration),
    /// Forget the armed timer: there is nothing left to hedge with.
    Disarm,
    /// `k` good shards arrived: decode these (ascending). The race is over.
    Decode(Vec<usize>),
    /// No `k` shards can arrive any more. The race is over.
    GiveUp(Unavailable),
}

/// Why a race gave up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unavailable {
    pub readable: usize,
    pub total: usize,
    pub needed: usize,
    pub problems: Vec<String>,
}

impl fmt::Display for Unavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} of {} shards readable, {} needed (",
            self.readable, self.total, self.needed
        )?;
        if self.problems.is_empty() {
            f.write_str("no store holds them")?;
        } else {
            f.write_str(&self.problems.join("; "))?;
        }
        f.write_str(")")
    }
}

/// The race for one chunk's shards; see the module documentation.
#[derive(Debug)]
pub struct Race {
    k: usize,
    n: usize,
    cands: Vec<Candidate>,
    next: usize,
    /// Requests in flight, oldest first, with the time each was sent.
    inflight: Vec<(Candidate, Duration)>,
    good: Vec<usize>,
    problems: Vec<String>,
    hedge: HedgeDelay,
    deadline: Option<Duration>,
    over: bool,
}

impl Race {
    /// A race for `k` of `n` shards over `cands` (best first, see [`order`]).
    pub fn new(k: usize, n: usize, cands: Vec<Candidate>, hedge: HedgeDelay) -> Self {
        Race {
            k,
            n,
            cands,
            next: 0,
            inflight: Vec::new(),
            good: Vec::new(),
            problems: Vec::new(),
            hedge,
            deadline: None,
            over: false,
        }
    }

    /// Begin: the first `k` requests.
    pub fn start(&mut self, now: Duration) -> Vec<Action> {
        self.advance(now, Vec::new())
    }

    /// The request for `shard` ended with `outcome`. Unknown or repeated
    /// shards, and events after the race is over, are ignored.
    pub fn arrived(&mut self, shard: usize, outcome: Outcome, now: Duration) -> Vec<Action> {
        let Some(i) = self.inflight.iter().position(|(c, _)| c.shard == shard) else {
            return Vec::new();
        };
        if self.over {
            return Vec::new();
        }
        self.inflight.remove(i);
        match outcome {
            Outcome::Good => self.good.push(shard),
            Outcome::Bad(p) | Outcome::Failed(p) => self.problems.push(p),
        }
        self.advance(now, Vec::new())
    }

    /// The armed timer fired: hedge. A timer that is no longer armed, or has
    /// not come due, is ignored.
    pub fn timer(&mut self, now: Duration) -> Vec<Action> {
        match self.deadline {
            Some(d) if !self.over && now >= d => {}
            _ => return Vec::new(),
        }
        self.deadline = None;
        let mut out = Vec::new();
        if let Some(&(late, _)) = self.inflight.first() {
            self.launch(now, Some(late.store), &mut out);
        }
        self.advance(now, out)
    }

    /// Whether the race is over (decoded or given up).
    pub fn is_over(&self) -> bool {
        self.over
    }

    /// The hedge delay for the requests in flight now.
    pub fn hedge_delay(&self) -> Duration {
        self.hedge.over(self.inflight.iter().map(|(c, _)| c.store))
    }

    fn launch(&mut self, now: Duration, hedge: Option<usize>, out: &mut Vec<Action>) {
        let Some(&c) = self.cands.get(self.next) else {
            return;
        };
        self.next += 1;
        self.inflight.push((c, now));
        out.push(Action::Request {
            shard: c.shard,
            store: c.store,
            hedge,
        });
    }

    /// Keep `k` requests going, then decide: decode, give up, or (re)arm.
    fn advance(&mut self, now: Duration, mut out: Vec<Action>) -> Vec<Action> {
        while self.good.len() + self.inflight.len() < self.k && self.next < self.cands.len() {
            self.launch(now, None, &mut out);
        }
        if self.good.len() >= self.k {
            self.over = true;
            let mut shards = self.good.clone();
            shards.sort_unstable();
            out.push(Action::Decode(shards));
        } else if self.inflight.is_empty() {
            self.over = true;
            out.push(Action::GiveUp(Unavailable {
                readable: self.good.len(),
                total: self.n,
                needed: self.k,
                problems: std::mem::take(&mut self.problems),
            }));
        } else if self.next < self.cands.len() {
            let d = self.hedge_delay();
            self.deadline = Some(now + d);
            out.push(Action::Arm(d));
        } else if self.deadline.take().is_some() {
            out.push(Action::Disarm);
        }
        out
    }
}

#[cfg(test)]
mod tests;
