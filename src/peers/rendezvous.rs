//! Which host of a site fetches a chunk from the stores: rendezvous
//! (highest-random-weight) hashing of the chunk id over the live hosts.
//!
//! Each host gets the weight `blake3(chunk id ‖ host id)` (its first 8 bytes,
//! little-endian); the host of highest weight is the chunk's designated
//! fetcher. Every host that sees the same live hosts picks the same one, with
//! no coordination, and a host joining or leaving moves only the chunks it
//! wins or held (about `1/N` of them), as with store placement
//! ([`crate::core::placement`]).

use crate::core::id::ChunkId;
use crate::peers::host::HostId;

/// The weight of `host` for `chunk`.
pub fn weight(chunk: &ChunkId, host: &HostId) -> u64 {
    let mut h = blake3::Hasher::new();
    h.update(&chunk.0.0);
    h.update(&host.0);
    u64::from_le_bytes(h.finalize().as_bytes()[..8].try_into().unwrap())
}

/// `hosts` in rendezvous order for `chunk`, highest weight first (ties, which
/// need equal blake3 prefixes, broken by id).
pub fn ranking(chunk: &ChunkId, hosts: &[HostId]) -> Vec<HostId> {
    let mut scored: Vec<(u64, HostId)> = hosts.iter().map(|h| (weight(chunk, h), *h)).collect();
    scored.sort_unstable_by(|a, b| b.cmp(a));
    scored.dedup_by_key(|s| s.1);
    scored.into_iter().map(|(_, h)| h).collect()
}

/// The designated fetcher of `chunk` among `hosts` (None if there are none).
pub fn designated(chunk: &ChunkId, hosts: &[HostId]) -> Option<HostId> {
    hosts.iter().copied().max_by_key(|h| (weight(chunk, h), *h))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(n: u32) -> Vec<HostId> {
        (0..n)
            .map(|i| HostId(*blake3::hash(&i.to_le_bytes()).as_bytes()))
            .collect()
    }

    fn chunks(n: u32) -> Vec<ChunkId> {
        (0..n).map(|i| ChunkId::of(&i.to_be_bytes())).collect()
    }

    #[test]
    fn designated_is_the_head_of_the_ranking_and_order_free() {
        let hs = hosts(9);
        let mut rev = hs.clone();
        rev.reverse();
        for c in chunks(300) {
            let r = ranking(&c, &hs);
            assert_eq!(r.len(), hs.len());
            assert_eq!(designated(&c, &hs), Some(r[0]));
            assert_eq!(ranking(&c, &rev), r);
        }
        assert_eq!(designated(&chunks(1)[0], &[]), None);
    }

    #[test]
    fn golden_designations() {
        // Pinned so that hosts of different versions agree on who fetches.
        let hs = hosts(4);
        let got: Vec<usize> = chunks(8)
            .iter()
            .map(|c| {
                let d = designated(c, &hs).unwrap();
                hs.iter().position(|h| *h == d).unwrap()
            })
            .collect();
        assert_eq!(got, GOLDEN);
    }
    const GOLDEN: [usize; 8] = [0, 2, 0, 0, 0, 3, 2, 1];

    /// (hosts, chunks): each host designated for its share within a margin.
    #[test]
    fn load_is_even() {
        for (n, count) in [(2u32, 4_000u32), (8, 8_000), (50, 50_000)] {
            let hs = hosts(n);
            let mut per = vec![0u32; n as usize];
            for c in chunks(count) {
                let d = designated(&c, &hs).unwrap();
                per[hs.iter().position(|h| *h == d).unwrap()] += 1;
            }
            let fair = count / n;
            for p in per {
                assert!(
                    p > fair * 8 / 10 && p < fair * 12 / 10,
                    "n={n}: {p} vs {fair}"
                );
            }
        }
    }

    /// A host leaving moves only the chunks it was designated for; a host
    /// joining takes only chunks, never moves them between others.
    #[test]
    fn churn_moves_only_the_leavers_chunks() {
        let hs = hosts(10);
        let fewer: Vec<HostId> = hs[..9].to_vec();
        let gone = hs[9];
        let mut moved = 0;
        for c in chunks(5_000) {
            let before = designated(&c, &hs).unwrap();
            let after = designated(&c, &fewer).unwrap();
            if before != gone {
                assert_eq!(before, after);
            } else {
                moved += 1;
                // The new designated is the runner-up of the old ranking.
                assert_eq!(after, ranking(&c, &hs)[1]);
            }
        }
        assert!(moved > 350 && moved < 650, "{moved}");
    }
}
