//! Deterministic placement of a chunk's `n` shards over the stores, by rendezvous
//! (highest-random-weight) hashing.
//!
//! For each chunk the stores are ranked by `blake3(chunk id ‖ store name)`; shard
//! `i` goes to the store ranked `i mod S`. So:
//! - with at least `n` stores, the shards sit on `n` distinct stores;
//! - with fewer, every store holds `floor(n/S)` or `ceil(n/S)` shards, and losing
//!   any one store loses at most `ceil(n/S)` shards;
//! - adding or removing a store moves only the shards whose ranking it changes.
//!
//! Placement is computed from the store *names* recorded in the manifest at push
//! time, so renaming a URL or adding a store later does not lose old images.

use crate::core::id::ChunkId;

/// Store indices (into `stores`) in rendezvous order for `chunk`.
pub fn ranking(chunk: &ChunkId, stores: &[String]) -> Vec<usize> {
    let mut scored: Vec<(u64, usize)> = stores
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let mut h = blake3::Hasher::new();
            h.update(&chunk.0.0);
            h.update(name.as_bytes());
            let d = h.finalize();
            let score = u64::from_le_bytes(d.as_bytes()[..8].try_into().unwrap());
            (score, i)
        })
        .collect();
    scored.sort_unstable_by(|a, b| b.cmp(a));
    scored.into_iter().map(|(_, i)| i).collect()
}

/// The store index holding each of the `n` shards of `chunk`.
pub fn place(chunk: &ChunkId, stores: &[String], n: usize) -> Vec<usize> {
    assert!(!stores.is_empty(), "placement needs at least one store");
    let order = ranking(chunk, stores);
    (0..n).map(|i| order[i % order.len()]).collect()
}

/// How many shards a single store can lose us at most.
pub fn max_shards_per_store(n: usize, stores: usize) -> usize {
    n.div_ceil(stores)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(s: usize) -> Vec<String> {
        (0..s).map(|i| format!("store-{i}")).collect()
    }

    fn chunks(count: usize) -> Vec<ChunkId> {
        (0..count).map(|i| ChunkId::of(&i.to_le_bytes())).collect()
    }

    #[test]
    fn spread_is_even_for_every_store_count() {
        for (stores, n) in [
            (1, 1),
            (1, 6),
            (2, 3),
            (3, 6),
            (4, 6),
            (6, 6),
            (9, 6),
            (5, 14),
        ] {
            let s = names(stores);
            for c in chunks(200) {
                let p = place(&c, &s, n);
                assert_eq!(p.len(), n);
                let mut per = vec![0usize; stores];
                for &i in &p {
                    per[i] += 1;
                }
                let cap = max_shards_per_store(n, stores);
                assert!(
                    per.iter().all(|&x| x <= cap),
                    "{stores} stores, n={n}: {per:?}"
                );
                if stores >= n {
                    assert!(per.iter().all(|&x| x <= 1));
                } else {
                    assert!(per.iter().all(|&x| x >= n / stores));
                }
            }
        }
    }

    #[test]
    fn deterministic_and_balanced_over_chunks() {
        let s = names(3);
        let cs = chunks(3000);
        let mut first = [0usize; 3];
        for c in &cs {
            assert_eq!(place(c, &s, 6), place(c, &s, 6));
            first[place(c, &s, 6)[0]] += 1;
        }
        // Shard 0 lands on each store about a third of the time.
        assert!(first.iter().all(|&x| (800..1200).contains(&x)), "{first:?}");
    }

    #[test]
    fn adding_a_store_moves_few_shards() {
        let before = names(4);
        let after = names(5);
        let mut moved = 0;
        let cs = chunks(2000);
        for c in &cs {
            let a = place(c, &before, 1)[0];
            let b = place(c, &after, 1)[0];
            if before[a] != after[b] {
                moved += 1;
            }
        }
        // Ideal is 1/5 of the chunks.
        assert!(moved < 2000 * 3 / 10, "moved {moved}");
    }

    /// Golden placements, written out: a change here (of the hash, the score or
    /// the order) would send every reader to the wrong store for every shard.
    #[test]
    fn placement_is_pinned() {
        let ids: Vec<ChunkId> = [
            "0000000000000000000000000000000000000000000000000000000000000000",
            "ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
            "ba8028ecf3e0d5b7ee50d3b79e682b24da20aaca56dbc236dfd020a539065737",
        ]
        .iter()
        .map(|h| h.parse().unwrap())
        .collect();
        let five = ["s0", "s1", "s2", "s3", "s4"];
        // (store names, n, the store of every shard of each chunk)
        type Case<'a> = (&'a [&'a str], usize, [&'a [usize]; 3]);
        let cases: [Case; 4] = [
            // S < n: each store holds two shards of a chunk.
            (
                &["eu-west", "us-east", "ap-south"],
                6,
                [
                    &[2, 0, 1, 2, 0, 1],
                    &[0, 1, 2, 0, 1, 2],
                    &[0, 1, 2, 0, 1, 2],
                ],
            ),
            // S = n: one shard per store.
            (&["a", "b", "c"], 3, [&[0, 2, 1], &[1, 0, 2], &[1, 0, 2]]),
            // S > n: some stores hold none.
            (&five, 3, [&[2, 4, 3], &[3, 1, 2], &[0, 1, 3]]),
            // S < n, not a multiple.
            (
                &five,
                6,
                [
                    &[2, 4, 3, 0, 1, 2],
                    &[3, 1, 2, 0, 4, 3],
                    &[0, 1, 3, 2, 4, 0],
                ],
            ),
        ];
        for (stores, n, want) in cases {
            let stores: Vec<String> = stores.iter().map(|s| s.to_string()).collect();
            for (id, want) in ids.iter().zip(want) {
                assert_eq!(place(id, &stores, n), want, "{stores:?} n={n} {id:?}");
            }
        }
    }
}
