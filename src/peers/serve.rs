//! How a host answers a peer asking for a chunk.
//!
//! A host serves only verified chunks (from its cache, or one it is fetching
//! and will have verified); the receiver verifies again. The answer:
//!
//! - [`Answer::Refused`]: the site's [`Access`] policy does not let the asker
//!   fetch from this host;
//! - [`Answer::Send`]: this host has the chunk, or is fetching it, and sends
//!   it when it is ready;
//! - [`Answer::FetchThenSend`]: this host was asked as the chunk's designated
//!   fetcher and does not have it yet: it fetches it from the stores (one download
//!   however many ask) and sends it;
//! - [`Answer::Redirect`]: this host is already sending the chunk to
//!   `fanout` peers, and some hosts it sent (or is sending) the chunk to can
//!   serve it as well: the asker is pointed at up to two of them. So a chunk every
//!   host wants at once spreads as a tree of degree `fanout` rooted at its
//!   designated fetcher, instead of queueing `N - 1` copies on one uplink;
//!   no tracker is involved, the designated fetcher knows whom it served;
//! - [`Answer::Missing`]: neither holding nor designated: the asker moves on.

use std::collections::BTreeSet;

use crate::core::id::ChunkId;
use crate::peers::host::HostId;
use crate::peers::rendezvous;

/// How many holders a redirect names.
pub const REDIRECT_TO: usize = 2;

/// Copies of one chunk a host sends at once before it redirects, chosen with
/// the simulation: at 100 and 1,000 hosts, 2 finished sooner than 4 (p99
/// 1.67× and 1.83× one host alone, against 2.09× and 2.16×) and 1 collapsed
/// onto the stores (chains too deep for the deadlines: 42 copies of the image
/// from the stores at 100 hosts).
pub const FANOUT: usize = 2;

/// Who may fetch chunks from this host.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Access {
    /// Every live host of the site (the default).
    #[default]
    Site,
    /// Only these hosts.
    Allow(BTreeSet<HostId>),
}

impl Access {
    /// Whether `asker`, a live host of the site, may fetch from this host.
    pub fn allows(&self, asker: &HostId) -> bool {
        match self {
            Access::Site => true,
            Access::Allow(ids) => ids.contains(asker),
        }
    }
}

/// This host's hold on the chunk asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Holding {
    /// Verified, in the cache.
    Have,
    /// Being fetched.
    Fetching,
    /// Neither.
    Absent,
}

/// A peer's request as this host sees it.
#[derive(Clone, Copy, Debug)]
pub struct Request<'a> {
    pub chunk: &'a ChunkId,
    pub asker: HostId,
    pub holding: Holding,
    /// Whether the asker names this host the chunk's designated fetcher. The
    /// asker's view of the membership decides: a host asked so fetches,
    /// so when a designated fetcher is avoided its runner-up takes over at
    /// once, before its own view has changed.
    pub as_designated: bool,
    /// Copies of this chunk being sent now.
    pub sending: usize,
    /// Hosts this host has sent, or is sending, the chunk to (the last few):
    /// they hold it, verified, or soon will, and answer for it the same way.
    pub served: &'a [HostId],
}

/// The answer to a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    Refused,
    Send,
    FetchThenSend,
    Redirect(Vec<HostId>),
    Missing,
}

/// The answer to `req`, sending at most `fanout` copies of one chunk at once.
pub fn answer(access: &Access, fanout: usize, req: &Request<'_>) -> Answer {
    if !access.allows(&req.asker) {
        return Answer::Refused;
    }
    match req.holding {
        Holding::Absent if req.as_designated => Answer::FetchThenSend,
        Holding::Absent => Answer::Missing,
        Holding::Have | Holding::Fetching => {
            if req.sending < fanout {
                return Answer::Send;
            }
            let to = redirect_targets(req.chunk, &req.asker, req.served);
            if to.is_empty() {
                Answer::Send
            } else {
                Answer::Redirect(to)
            }
        }
    }
}

/// Up to [`REDIRECT_TO`] of `served` (never the asker), spread over askers:
/// ranked by rendezvous weight for the chunk and the asker together, so
/// different askers are sent to different holders.
fn redirect_targets(chunk: &ChunkId, asker: &HostId, served: &[HostId]) -> Vec<HostId> {
    let mut key = blake3::Hasher::new();
    key.update(&chunk.0.0);
    key.update(&asker.0);
    let key = ChunkId::of(key.finalize().as_bytes());
    let others: Vec<HostId> = served.iter().copied().filter(|h| h != asker).collect();
    let mut ranked = rendezvous::ranking(&key, &others);
    ranked.truncate(REDIRECT_TO);
    ranked
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(i: u8) -> HostId {
        HostId([i; 32])
    }

    #[test]
    fn answers() {
        let c = ChunkId::of(b"c");
        let allow = Access::Allow([h(1), h(2)].into_iter().collect());
        let served = [h(3), h(4), h(5)];
        let only_asker = [h(3)];
        // (what, access, asker, holding, asked as designated, sending, served, answer kind)
        type Case<'a> = (
            &'a str,
            &'a Access,
            u8,
            Holding,
            bool,
            usize,
            &'a [HostId],
            &'a str,
        );
        let cases: Vec<Case> = vec![
            (
                "have, idle",
                &Access::Site,
                1,
                Holding::Have,
                false,
                0,
                &[],
                "send",
            ),
            (
                "fetching, idle",
                &Access::Site,
                1,
                Holding::Fetching,
                false,
                3,
                &[],
                "send",
            ),
            (
                "absent, designated",
                &Access::Site,
                1,
                Holding::Absent,
                true,
                0,
                &[],
                "fetch",
            ),
            (
                "absent, not designated",
                &Access::Site,
                1,
                Holding::Absent,
                false,
                0,
                &[],
                "missing",
            ),
            (
                "busy with holders",
                &Access::Site,
                1,
                Holding::Have,
                true,
                4,
                &served,
                "redirect",
            ),
            (
                "busy, no holders yet",
                &Access::Site,
                1,
                Holding::Fetching,
                true,
                9,
                &[],
                "send",
            ),
            (
                "busy, only the asker held it",
                &Access::Site,
                3,
                Holding::Have,
                false,
                4,
                &only_asker,
                "send",
            ),
            ("allowed", &allow, 2, Holding::Have, false, 0, &[], "send"),
            (
                "not allowed",
                &allow,
                3,
                Holding::Have,
                false,
                0,
                &[],
                "refused",
            ),
            (
                "not allowed, designated",
                &allow,
                9,
                Holding::Absent,
                true,
                0,
                &[],
                "refused",
            ),
        ];
        for (what, access, asker, holding, as_designated, sending, served, want) in cases {
            let req = Request {
                chunk: &c,
                asker: h(asker),
                holding,
                as_designated,
                sending,
                served,
            };
            let got = match answer(access, 4, &req) {
                Answer::Send => "send",
                Answer::FetchThenSend => "fetch",
                Answer::Missing => "missing",
                Answer::Refused => "refused",
                Answer::Redirect(to) => {
                    assert_eq!(to.len(), REDIRECT_TO.min(served.len()), "{what}");
                    assert!(
                        to.iter().all(|t| served.contains(t) && *t != h(asker)),
                        "{what}"
                    );
                    "redirect"
                }
            };
            assert_eq!(got, want, "{what}");
        }
    }

    #[test]
    fn redirects_spread_over_holders() {
        let c = ChunkId::of(b"c");
        let served: Vec<HostId> = (10..40).map(h).collect();
        let mut named = BTreeSet::new();
        for asker in 100..200 {
            for t in redirect_targets(&c, &h(asker), &served) {
                named.insert(t);
            }
        }
        assert!(named.len() > 25, "{}", named.len());
    }
}
