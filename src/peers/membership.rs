//! Which hosts of a site are live at a time, from the host records found in
//! the stores.
//!
//! Records come from stores that may be stale or hostile, so a record is
//! believed within the bounds this host sets, as locks are
//! ([`crate::repo::lock`]):
//!
//! - its lease is at most the local `max_lease`: a record claiming a lease of
//!   years lives no longer than one of ours;
//! - its time is the store's modification time when the store keeps one, else
//!   the writer's `written_ms`; a time more than [`MAX_SKEW`] in the future is
//!   not believed (the host is not live);
//! - a record of another site, or one stored under another host's key, is
//!   ignored;
//! - of several records of one host (one per store), the newest wins.
//!
//! The result is sorted by host id, so every host of the site that read the
//! same records computes the same list.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use crate::core::id::Name;
use crate::peers::host::{HostId, HostRecord};

/// How far in the future a record's time may lie and still be believed.
pub const MAX_SKEW: Duration = Duration::from_secs(60);

/// One record as read from one store.
#[derive(Clone, Debug)]
pub struct Observed {
    /// The host the record's key names.
    pub key_host: HostId,
    pub record: HostRecord,
    /// The store's modification time of the object (since the Unix epoch),
    /// when the store keeps one.
    pub modified: Option<Duration>,
}

/// A live host of the site.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Member {
    pub host: HostId,
    pub addr: SocketAddr,
    /// When its lease runs out (since the Unix epoch), unless renewed.
    pub expires: Duration,
}

/// The live hosts of `site` at `now` (since the Unix epoch), sorted by id.
pub fn live(site: &Name, records: &[Observed], now: Duration, max_lease: Duration) -> Vec<Member> {
    let mut newest: BTreeMap<HostId, (Duration, Member)> = BTreeMap::new();
    for o in records {
        let r = &o.record;
        if &r.site != site || r.host != o.key_host {
            continue;
        }
        let at = o.modified.unwrap_or_else(|| r.written());
        if at > now + MAX_SKEW {
            continue;
        }
        let member = Member {
            host: r.host,
            addr: r.addr,
            expires: at + r.lease().min(max_lease),
        };
        match newest.get(&r.host) {
            Some((seen, _)) if *seen >= at => {}
            _ => {
                newest.insert(r.host, (at, member));
            }
        }
    }
    newest
        .into_values()
        .map(|(_, m)| m)
        .filter(|m| m.expires > now)
        .collect()
}

/// The ids of `members`, in the same order.
pub fn ids(members: &[Member]) -> Vec<HostId> {
    members.iter().map(|m| m.host).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000;

    fn rec(site: &str, host: u8, written_s: u64, lease_s: u64, port: u16) -> HostRecord {
        HostRecord::new(
            site.parse().unwrap(),
            HostId([host; 32]),
            SocketAddr::from(([10, 77, 0, host], port)),
            Duration::from_secs(written_s),
            Duration::from_secs(lease_s),
        )
    }

    fn obs(r: HostRecord, modified_s: Option<u64>) -> Observed {
        Observed {
            key_host: r.host,
            record: r,
            modified: modified_s.map(Duration::from_secs),
        }
    }

    /// (records, now in s) → live hosts with their ports.
    #[test]
    fn live_hosts_at_a_time() {
        let max = Duration::from_secs(120);
        type Case = (&'static str, Vec<Observed>, u64, Vec<(u8, u16)>);
        let cases: Vec<Case> = vec![
            ("none", vec![], S, vec![]),
            (
                "fresh",
                vec![obs(rec("dc1", 1, S, 60, 1), None)],
                S + 10,
                vec![(1, 1)],
            ),
            (
                "expired",
                vec![obs(rec("dc1", 1, S, 60, 1), None)],
                S + 60,
                vec![],
            ),
            (
                "just alive",
                vec![obs(rec("dc1", 1, S, 60, 1), None)],
                S + 59,
                vec![(1, 1)],
            ),
            (
                "long lease capped by ours",
                vec![obs(rec("dc1", 1, S, 1_000_000, 1), None)],
                S + 121,
                vec![],
            ),
            (
                "other site",
                vec![obs(rec("dc2", 1, S, 60, 1), None)],
                S,
                vec![],
            ),
            (
                "store time wins over writer's",
                vec![obs(rec("dc1", 1, 10, 60, 1), Some(S))],
                S + 30,
                vec![(1, 1)],
            ),
            (
                "far future not believed",
                vec![obs(rec("dc1", 1, S + 61, 60, 1), None)],
                S,
                vec![],
            ),
            (
                "near future believed",
                vec![obs(rec("dc1", 1, S + 59, 60, 1), None)],
                S,
                vec![(1, 1)],
            ),
            (
                "newest copy wins",
                vec![
                    obs(rec("dc1", 1, S, 60, 1), None),
                    obs(rec("dc1", 1, S + 20, 60, 2), None),
                    obs(rec("dc1", 1, S + 10, 60, 3), None),
                ],
                S + 70,
                vec![(1, 2)],
            ),
            (
                "sorted by id, expired dropped",
                vec![
                    obs(rec("dc1", 3, S, 60, 3), None),
                    obs(rec("dc1", 1, S, 60, 1), None),
                    obs(rec("dc1", 2, S - 100, 60, 2), None),
                ],
                S + 1,
                vec![(1, 1), (3, 3)],
            ),
        ];
        for (what, records, now, want) in cases {
            let got: Vec<(u8, u16)> = live(
                &"dc1".parse().unwrap(),
                &records,
                Duration::from_secs(now),
                max,
            )
            .iter()
            .map(|m| (m.host.0[0], m.addr.port()))
            .collect();
            assert_eq!(got, want, "{what}");
        }
    }

    #[test]
    fn a_record_under_another_hosts_key_is_ignored() {
        let mut o = obs(rec("dc1", 1, S, 60, 1), None);
        o.key_host = HostId([2; 32]);
        assert!(
            live(
                &"dc1".parse().unwrap(),
                &[o],
                Duration::from_secs(S),
                Duration::from_secs(60)
            )
            .is_empty()
        );
    }
}
