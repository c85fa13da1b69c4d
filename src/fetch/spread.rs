//! Which stores a background (hydration) chunk's shards are asked of: the
//! ones with the fewest bytes already queued for background work, so that
//! every store's link is kept busy.
//!
//! On-demand reads rank stores by latency ([`super::race::order`]): a read
//! waits for its slowest shard, so the nearest stores win. Background
//! fetches run behind each store's pacer window ([`crate::store::pace`]),
//! whose requests wait in the store's queue by design; ranked by latency,
//! they would all queue on the nearest stores while the far one's window
//! stood empty (measured: the 80 ms store of three served 44 of about 2,850
//! hydration requests). Ranked by queued bytes instead (join the shortest
//! queue), each store gets new work as fast as its window drains: a store
//! that serves faster (a wider window, a faster link) drains sooner and is
//! given more, and no store's window waits for work while others queue.
//!
//! Latency plays no part: the pacer already limits what a store has in
//! flight, and the queue ahead of it is what a new request waits for. A
//! store that failed recently (demoted) is used only when the others cannot
//! serve. Pure: no clock, no I/O.

use super::race::Candidate;

/// The candidates of a chunk, in the order to ask them for a background
/// fetch. `placed[shard]` is the store holding `shard` (`None`: none of
/// ours); `queued[store]` the bytes of background requests asked of it and
/// not yet answered; `demoted[store]` whether it failed recently; each shard
/// is `shard_bytes` long. Greedy: the candidate whose store has the least
/// queued, counting the shards picked before it, then data shards (below
/// `k`: no decoding) before parity, then the lower shard.
pub fn spread(
    placed: &[Option<usize>],
    queued: &[u64],
    demoted: &[bool],
    k: usize,
    shard_bytes: u64,
) -> Vec<Candidate> {
    let mut queued = queued.to_vec();
    let mut rest: Vec<Candidate> = placed
        .iter()
        .enumerate()
        .filter_map(|(shard, &s)| s.map(|store| Candidate { shard, store }))
        .collect();
    for c in &rest {
        if c.store >= queued.len() {
            queued.resize(c.store + 1, 0);
        }
    }
    let down = |s: usize| demoted.get(s).copied().unwrap_or(false);
    let mut order = Vec::with_capacity(rest.len());
    while !rest.is_empty() {
        let (at, _) = rest
            .iter()
            .enumerate()
            .min_by_key(|(_, c)| (down(c.store), queued[c.store], c.shard >= k, c.shard))
            .expect("not empty");
        let c = rest.remove(at);
        queued[c.store] += shard_bytes;
        order.push(c);
    }
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 64 << 10;

    fn stores(order: &[Candidate]) -> Vec<usize> {
        order.iter().map(|c| c.store).collect()
    }

    fn shards(order: &[Candidate]) -> Vec<usize> {
        order.iter().map(|c| c.shard).collect()
    }

    /// k=4 m=2 over three stores, two shards on each: 0,1 | 2,3 | 4,5.
    fn three() -> Vec<Option<usize>> {
        vec![Some(0), Some(0), Some(1), Some(1), Some(2), Some(2)]
    }

    #[test]
    fn idle_stores_share_a_chunk_and_data_goes_first() {
        let order = spread(&three(), &[0, 0, 0], &[false; 3], 4, S);
        // One shard from each store, then the second data shard of the
        // first store; parity's store only when it is the least queued.
        assert_eq!(shards(&order), vec![0, 2, 4, 1, 3, 5]);
        assert_eq!(stores(&order[..4]), vec![0, 1, 2, 0]);
    }

    #[test]
    fn queued_stores_get_less_and_the_idle_one_more() {
        // The near stores hold a backlog, the far one nothing: both of its
        // shards (parity) are asked before a second on a busy store.
        let order = spread(&three(), &[10 * S, 10 * S, 0], &[false; 3], 4, S);
        assert_eq!(stores(&order[..4]), vec![2, 2, 0, 1]);
        assert_eq!(shards(&order[..4]), vec![4, 5, 0, 2]);
        // A store one shard behind the others gets one shard, not two.
        let order = spread(&three(), &[S, S, 0], &[false; 3], 4, S);
        assert_eq!(stores(&order[..4]), vec![2, 0, 1, 2]);
    }

    #[test]
    fn chunk_after_chunk_every_store_carries_a_third() {
        // Background fetches one after another, each adding its first k
        // picks to the queues (nothing answered yet): over many chunks the
        // bytes asked of each store stay within one shard of each other.
        let mut queued = vec![0u64; 3];
        for _ in 0..300 {
            let order = spread(&three(), &queued, &[false; 3], 4, S);
            for c in &order[..4] {
                queued[c.store] += S;
            }
        }
        let (lo, hi) = (queued.iter().min().unwrap(), queued.iter().max().unwrap());
        assert!(hi - lo <= S, "{queued:?}");
        assert_eq!(queued.iter().sum::<u64>(), 1200 * S);
    }

    #[test]
    fn a_demoted_store_is_asked_last_and_unplaced_shards_never() {
        let order = spread(&three(), &[0, 0, 0], &[true, false, false], 4, S);
        assert_eq!(stores(&order), vec![1, 2, 1, 2, 0, 0]);
        // Shards on no store of ours are no candidates.
        let placed = [Some(0), None, Some(1), None, Some(2), Some(2)];
        let order = spread(&placed, &[0, 0, 0], &[false; 3], 4, S);
        assert_eq!(shards(&order), vec![0, 2, 4, 5]);
        // A store beyond `queued` counts as having nothing queued.
        let order = spread(&[Some(3), Some(0)], &[S], &[], 1, S);
        assert_eq!(shards(&order), vec![0, 1]);
        assert!(spread(&[], &[], &[], 4, S).is_empty());
    }
}
