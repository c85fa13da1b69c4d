//! Where one host gets one chunk: the fetcher choice, as a small state
//! machine the daemon (and the simulation) drives.
//!
//! For a chunk `c` on host `me`, with the site's live hosts ranked for `c` by
//! [`rendezvous`]:
//!
//! 1. peers known to hold `c` (from a redirect, see [`crate::peers::serve`])
//!    are asked first, each with a short deadline;
//! 2. then the designated fetcher of `c`: the first host of the ranking not
//!    being avoided. If that is `me`, the chunk comes from the stores: this
//!    host is the one that pulls `c` into the site;
//! 3. then the stores.
//!
//! Every peer step has two deadlines, both within what is left of the
//! chunk's peer budget ([`Timing::budget`], 1 s by default):
//!
//! - `answer_within`: four times the peer's measured answer time (at least
//!   [`Timing::floor`], 200 ms). A peer answers at once, whether it sends,
//!   fetches first, redirects or has nothing; one killed or frozen (SIGSTOP)
//!   does not, and is charged [`Fault::TimedOut`](crate::peers::Fault) when
//!   this runs out. The floor is what a live host may stay silent for:
//!   a process throttled by its cgroup's CPU quota waits out the rest of a
//!   100 ms period, and 8 daemons of the test bed on 2 cores went silent for
//!   50–200 ms while their answers were on the way. With a 50 ms floor every
//!   one of 85 peers charged in such a round answered within 200 ms, and the
//!   site pulled 2.3–2.5 copies of the image instead of 1.05;
//! - `wait_within`: for the chunk itself once the peer has said it is coming:
//!   the rest of the budget, or four times the peer's measured time per chunk
//!   if that is longer. A site whose hosts all read at once is busy: the
//!   stores behind the designated fetchers and the peers' uplinks queue, and
//!   a chunk through two or three peers can take longer than the budget.
//!   Leaving such a peer for the stores would add load to the stores just
//!   when they are the bottleneck, and the site's reads would collapse onto
//!   them (the simulation shows it). A peer that is alive but slower than
//!   that is left for the next step without a charge: slowness is not a
//!   fault, or every host would shun every busy peer at once. A connection
//!   that breaks is charged [`Fault::Failed`](crate::peers::Fault), wrong
//!   bytes [`Fault::Corrupt`](crate::peers::Fault).
//!
//! A missed answer deadline is judged by [`missed`]: a peer is gone only
//! when it was silent for the whole deadline *while this host watched*. When
//! this host's own timer fires late (its process was not run: a stall on
//! memory or disk pressure, a SIGSTOP, a starved CPU), the peer's answer
//! may sit unread in this host's socket; charging it then would make a
//! host that stalls for a moment avoid every peer it was asking at once,
//! and pull their chunks from the stores. The deadline is then given again
//! from the moment this host runs, within the chunk's wait.
//!
//! So a killed or frozen peer costs a read at most the budget, a slow one
//! at most four times its usual time, and then the stores answer. The next step skips a charged peer, and because a
//! designated fetcher being avoided passes its role to the runner-up of the
//! ranking, the hosts that noticed converge on one substitute rather than all
//! going to the stores. Nothing here waits for a tracker: the ranking is
//! computed locally from the membership list.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use crate::core::id::ChunkId;
use crate::peers::health::PeerBook;
use crate::peers::host::HostId;
use crate::peers::rendezvous;

/// At most this many holders from one redirect are asked.
pub const MAX_HOLDERS: usize = 2;

/// The clock inputs of a plan.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    /// The shortest answer deadline given to a peer.
    pub floor: Duration,
    /// The longest a read waits for peers in all, before the stores.
    pub budget: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            floor: Duration::from_millis(200),
            budget: Duration::from_secs(1),
        }
    }
}

/// Why a peer is asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// It is known to hold the chunk.
    Holder,
    /// It is the chunk's designated fetcher: it has the chunk, or fetches it.
    Designated,
}

/// What a missed answer deadline says about the peer asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Missed {
    /// Silent for the whole deadline while this host watched: gone
    /// (killed, frozen, cut off), charged.
    Gone,
    /// Its connection brought datagrams meanwhile: it runs, only late; its
    /// answer is waited for within the chunk's wait, uncharged.
    Busy,
    /// This host was not running when the deadline passed: the silence
    /// proves nothing. Look again for one more answer deadline.
    Unwatched,
}

/// The verdict on a peer that has not answered `answer_within`: `heard` is
/// whether its connection brought any datagram since the ask, `late` how
/// long after the deadline this host's timer actually fired. A timer later
/// than a quarter of the deadline means this host itself stalled.
pub fn missed(heard: bool, late: Duration, answer_within: Duration) -> Missed {
    if heard {
        Missed::Busy
    } else if late > answer_within / 4 {
        Missed::Unwatched
    } else {
        Missed::Gone
    }
}

/// The next thing to do for the chunk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Ask `peer`; count it gone if it has not answered `answer_within`
    /// after asking, and stop waiting for the chunk `wait_within` after.
    Ask {
        peer: HostId,
        role: Role,
        answer_within: Duration,
        wait_within: Duration,
    },
    /// Fetch from the stores.
    Stores,
}

/// The plan for one chunk on one host.
#[derive(Clone, Debug)]
pub struct Plan {
    me: HostId,
    ranking: Arc<[HostId]>,
    holders: VecDeque<HostId>,
    asked: Vec<HostId>,
    started: Duration,
    timing: Timing,
}

impl Plan {
    /// A plan for `chunk` on `me`, begun at `now`. `live` are the site's live
    /// hosts (with or without `me`).
    pub fn new(
        chunk: &ChunkId,
        me: HostId,
        live: &[HostId],
        now: Duration,
        timing: Timing,
    ) -> Self {
        Self::ranked(me, rendezvous::ranking(chunk, live).into(), now, timing)
    }

    /// A plan from a ranking of the live hosts for the chunk that the
    /// caller keeps (it changes only when the membership does).
    pub fn ranked(me: HostId, ranking: Arc<[HostId]>, now: Duration, timing: Timing) -> Self {
        Plan {
            me,
            ranking,
            holders: VecDeque::new(),
            asked: Vec::new(),
            started: now,
            timing,
        }
    }

    /// Peers said to hold the chunk (a redirect): asked next, at most
    /// [`MAX_HOLDERS`] of them.
    pub fn redirected(&mut self, holders: &[HostId]) {
        for h in holders.iter().rev().take(MAX_HOLDERS) {
            self.holders.push_front(*h);
        }
        self.holders.truncate(MAX_HOLDERS);
    }

    /// The designated fetcher at `now`: the first host of the ranking that
    /// is `me` or not avoided; `me` when there is none.
    pub fn designated(&self, book: &PeerBook, now: Duration) -> HostId {
        self.ranking
            .iter()
            .copied()
            .find(|h| *h == self.me || !book.avoided(h, now))
            .unwrap_or(self.me)
    }

    /// What to do next, at `now`.
    pub fn next(&mut self, book: &PeerBook, now: Duration) -> Step {
        let spent = now.saturating_sub(self.started);
        let left = self.timing.budget.saturating_sub(spent);
        if left < self.timing.floor {
            return Step::Stores;
        }
        while let Some(h) = self.holders.pop_front() {
            if h == self.me || self.asked.contains(&h) || book.avoided(&h, now) {
                continue;
            }
            return self.ask(h, Role::Holder, book, left);
        }
        let d = self.designated(book, now);
        if d == self.me || self.asked.contains(&d) {
            return Step::Stores;
        }
        self.ask(d, Role::Designated, book, left)
    }

    /// Ask `peer`: see the module doc for the two deadlines.
    fn ask(&mut self, peer: HostId, role: Role, book: &PeerBook, left: Duration) -> Step {
        self.asked.push(peer);
        let usual = book.chunk_time(&peer).unwrap_or_default() * 4;
        Step::Ask {
            peer,
            role,
            answer_within: (book.answer_time(&peer) * 4)
                .max(self.timing.floor)
                .min(left),
            wait_within: left.max(usual),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::peers::health::Fault;

    fn hosts(n: u8) -> Vec<HostId> {
        (0..n).map(|i| HostId([i; 32])).collect()
    }

    fn ms(x: u64) -> Duration {
        Duration::from_millis(x)
    }

    /// A chunk and the ranking of `hosts(n)` for it.
    fn chunk_and_ranking(n: u8) -> (ChunkId, Vec<HostId>) {
        let c = ChunkId::of(b"chunk");
        (c, rendezvous::ranking(&c, &hosts(n)))
    }

    fn peers_of(steps: &[Step]) -> Vec<Option<(HostId, Role)>> {
        steps
            .iter()
            .map(|s| match s {
                Step::Ask { peer, role, .. } => Some((*peer, *role)),
                Step::Stores => None,
            })
            .collect()
    }

    /// Run a plan where every peer fails (charged as `fault`), 10 ms apart.
    fn run(plan: &mut Plan, book: &mut PeerBook, fault: Fault) -> Vec<Step> {
        let mut now = ms(0);
        let mut out = Vec::new();
        loop {
            let s = plan.next(book, now);
            out.push(s);
            match s {
                Step::Stores => return out,
                Step::Ask { peer, .. } => book.charge(peer, fault, now),
            }
            now += ms(10);
        }
    }

    #[test]
    fn who_is_asked_in_which_order() {
        let (c, r) = chunk_and_ranking(5);
        let (d, second, third) = (r[0], r[1], r[2]);
        type Case = (
            &'static str,
            HostId,
            Vec<HostId>,
            Vec<HostId>,
            Vec<HostId>,
            Vec<Option<(HostId, Role)>>,
        );
        let cases: Vec<Case> = vec![
            // (what, me, live, avoided before, holders, asked in order; None = stores)
            (
                "designated: stores at once",
                d,
                hosts(5),
                vec![],
                vec![],
                vec![None],
            ),
            (
                "other: designated, then its runner-up",
                third,
                hosts(5),
                vec![],
                vec![],
                vec![
                    Some((d, Role::Designated)),
                    Some((second, Role::Designated)),
                    None,
                ],
            ),
            (
                "runner-up: designated, then itself fetches",
                second,
                hosts(5),
                vec![],
                vec![],
                vec![Some((d, Role::Designated)), None],
            ),
            (
                "alone: stores",
                third,
                vec![third],
                vec![],
                vec![],
                vec![None],
            ),
            (
                "live list without me: still planned",
                third,
                vec![d],
                vec![],
                vec![],
                vec![Some((d, Role::Designated)), None],
            ),
            (
                "avoided designated skipped",
                third,
                hosts(5),
                vec![d],
                vec![],
                vec![Some((second, Role::Designated)), None],
            ),
            (
                "every peer avoided: stores",
                third,
                hosts(5),
                vec![d, second, r[3], r[4]],
                vec![],
                vec![None],
            ),
            (
                "holders first, then designated",
                third,
                hosts(5),
                vec![],
                vec![r[4], r[3]],
                vec![
                    Some((r[4], Role::Holder)),
                    Some((r[3], Role::Holder)),
                    Some((d, Role::Designated)),
                    Some((second, Role::Designated)),
                    None,
                ],
            ),
            (
                "designated asks holders too, never itself",
                d,
                hosts(5),
                vec![],
                vec![d, r[4]],
                vec![Some((r[4], Role::Holder)), None],
            ),
            (
                "avoided holder skipped",
                third,
                hosts(5),
                vec![r[4]],
                vec![r[4]],
                vec![
                    Some((d, Role::Designated)),
                    Some((second, Role::Designated)),
                    None,
                ],
            ),
        ];
        for (what, me, live, avoided, holders, want) in cases {
            let mut book = PeerBook::new();
            for a in avoided {
                book.charge(a, Fault::Failed, ms(0));
            }
            let mut plan = Plan::new(&c, me, &live, ms(0), Timing::default());
            plan.redirected(&holders);
            let steps = run(&mut plan, &mut book, Fault::TimedOut);
            assert_eq!(peers_of(&steps), want, "{what}");
        }
    }

    #[test]
    fn a_holder_already_asked_is_not_asked_again() {
        let (c, r) = chunk_and_ranking(4);
        let mut book = PeerBook::new();
        let mut plan = Plan::new(&c, r[3], &hosts(4), ms(0), Timing::default());
        assert!(matches!(plan.next(&book, ms(0)), Step::Ask { peer, .. } if peer == r[0]));
        // The designated redirects to itself and to r[1].
        plan.redirected(&[r[0], r[1]]);
        assert!(
            matches!(plan.next(&book, ms(5)), Step::Ask { peer, role: Role::Holder, .. } if peer == r[1])
        );
        book.charge(r[1], Fault::Corrupt, ms(6));
        // r[0] was asked as designated; r[1] is avoided: the runner-up is r[2].
        book.charge(r[0], Fault::TimedOut, ms(7));
        assert!(matches!(plan.next(&book, ms(7)), Step::Ask { peer, .. } if peer == r[2]));
        assert_eq!(plan.next(&book, ms(8)), Step::Stores);
    }

    /// Answer deadlines follow measurements; both stay within what is left
    /// of the budget, so a hung peer costs a read at most the budget.
    #[test]
    fn deadlines_are_measured_and_bounded() {
        let (c, r) = chunk_and_ranking(4);
        let timing = Timing {
            floor: ms(50),
            budget: ms(1000),
        };
        // (measured answer time of the designated, asked at, answer, wait)
        for (rtt, at, answer, wait) in [
            (None, 0, 80, 1000),
            (Some(5), 0, 50, 1000),
            (Some(30), 0, 120, 1000),
            (Some(300), 0, 1000, 1000),
            (Some(30), 900, 100, 100),
        ] {
            let mut book = PeerBook::new();
            if let Some(t) = rtt {
                book.answered(r[0], ms(t));
            }
            let mut plan = Plan::new(&c, r[1], &hosts(4), ms(0), timing);
            assert_eq!(
                plan.next(&book, ms(at)),
                Step::Ask {
                    peer: r[0],
                    role: Role::Designated,
                    answer_within: ms(answer),
                    wait_within: ms(wait),
                },
                "{rtt:?} at {at}"
            );
        }
        // A peer slow as usual is waited for longer than the budget.
        let mut book = PeerBook::new();
        book.served(r[0], ms(400));
        let mut plan = Plan::new(&c, r[1], &hosts(4), ms(0), timing);
        assert!(
            matches!(plan.next(&book, ms(10)), Step::Ask { wait_within, .. } if wait_within == ms(1600))
        );
        let mut book = PeerBook::new();
        book.served(r[0], ms(100));
        let mut plan = Plan::new(&c, r[1], &hosts(4), ms(0), timing);
        assert!(
            matches!(plan.next(&book, ms(10)), Step::Ask { wait_within, .. } if wait_within == ms(990))
        );
        // Budget spent: stores, whoever is left.
        let book = PeerBook::new();
        let mut plan = Plan::new(&c, r[1], &hosts(4), ms(0), timing);
        assert_eq!(plan.next(&book, ms(960)), Step::Stores);
    }

    /// A peer is charged for silence only when this host watched the whole
    /// deadline: a host whose own timer fired late does not judge.
    #[test]
    fn silence_counts_only_while_this_host_watched() {
        let within = ms(50);
        for (heard, late, verdict) in [
            (false, ms(0), Missed::Gone),
            (false, ms(12), Missed::Gone),
            (false, ms(13), Missed::Unwatched),
            (false, ms(300), Missed::Unwatched),
            (true, ms(0), Missed::Busy),
            (true, ms(300), Missed::Busy),
        ] {
            assert_eq!(missed(heard, late, within), verdict, "{heard} {late:?}");
        }
        // The bound follows the deadline: 4 ms late is a stall at 8 ms.
        assert_eq!(missed(false, ms(4), ms(8)), Missed::Unwatched);
        assert_eq!(missed(false, ms(4), ms(400)), Missed::Gone);
    }

    #[test]
    fn total_wait_on_unmeasured_peers_is_within_the_budget() {
        let (c, _) = chunk_and_ranking(50);
        let mut book = PeerBook::new();
        let me = hosts(50)[7];
        let mut plan = Plan::new(&c, me, &hosts(50), ms(0), Timing::default());
        plan.redirected(&hosts(50)[10..12]);
        let mut now = ms(0);
        while let Step::Ask {
            peer, wait_within, ..
        } = plan.next(&book, now)
        {
            now += wait_within; // every peer answers, then hangs
            book.charge(peer, Fault::TimedOut, now);
        }
        assert!(now <= Timing::default().budget, "{now:?}");
    }
}
