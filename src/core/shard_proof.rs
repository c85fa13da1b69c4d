//! A data shard that proves itself against its chunk id, so a read that lies
//! inside one data shard can fetch that shard alone (from the one store that
//! holds it) and serve it verified, without the `k`-of-`n` decode.
//!
//! The chunk id is the plain blake3 of the chunk. blake3 hashes a tree: its
//! leaves are 1 KiB pieces, and an input whose length is a power of two KiB
//! is a complete binary tree. The code is systematic, so data shard `i` holds
//! the bytes `[i·s, (i+1)·s)` of the chunk (`s = len / k`). When `k` is a
//! power of two and `len` a power of two KiB, each data shard is a complete
//! subtree of that tree: its chaining value (blake3's hazmat API computes it
//! from the shard and its offset) and the `log2 k` chaining values of its
//! siblings on the way up ([`Proof`], 32 bytes each) rebuild the root, which
//! must equal the chunk id. Nothing else can: forging a shard that passes
//! means finding a blake3 collision.
//!
//! Chunks for which no proof exists (a short last chunk, `k` not a power of
//! two, a chunk size not a power of two KiB) are read with the decode path,
//! as are all chunks when `k = 1` makes the shard the chunk itself (then it
//! is verified by its plain hash).

use blake3::hazmat::{
    ChainingValue, HasherExt, Mode, merge_subtrees_non_root, merge_subtrees_root,
};

use crate::core::id::ChunkId;

/// The siblings' chaining values from a data shard up to the root, lowest
/// level first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proof(pub Vec<ChainingValue>);

/// Whether data shards of a chunk of `len` bytes split `k` ways prove
/// themselves: `k ≥ 2` a power of two, `len` a power of two KiB with at
/// least 1 KiB per shard.
pub fn provable(len: u64, k: usize) -> bool {
    k >= 2
        && k.is_power_of_two()
        && len.is_power_of_two()
        && len / k as u64 >= blake3::CHUNK_LEN as u64
}

/// The chaining value of the shard that starts at byte `offset`.
fn subtree_cv(shard: &[u8], offset: u64) -> ChainingValue {
    blake3::Hasher::new()
        .set_input_offset(offset)
        .update(shard)
        .finalize_non_root()
}

/// The proofs of the `k` data shards of `chunk` (`None` if it is not
/// [`provable`]).
pub fn prove(chunk: &[u8], k: usize) -> Option<Vec<Proof>> {
    if !provable(chunk.len() as u64, k) {
        return None;
    }
    let s = chunk.len() / k;
    // levels[0]: the shards' chaining values; each next level merges pairs,
    // up to the two children of the root.
    let mut levels = vec![
        chunk
            .chunks(s)
            .enumerate()
            .map(|(i, shard)| subtree_cv(shard, (i * s) as u64))
            .collect::<Vec<_>>(),
    ];
    while levels.last().expect("one level").len() > 2 {
        let next = levels
            .last()
            .expect("one level")
            .chunks(2)
            .map(|p| merge_subtrees_non_root(&p[0], &p[1], Mode::Hash))
            .collect();
        levels.push(next);
    }
    Some(
        (0..k)
            .map(|i| {
                Proof(
                    levels
                        .iter()
                        .enumerate()
                        .map(|(depth, level)| level[(i >> depth) ^ 1])
                        .collect(),
                )
            })
            .collect(),
    )
}

/// Whether `shard`, data shard `index` of a chunk of `len` bytes split `k`
/// ways, is the part of the chunk `id` names, given its `proof`.
pub fn verify(id: &ChunkId, len: u64, k: usize, index: usize, shard: &[u8], proof: &Proof) -> bool {
    if !provable(len, k) || index >= k || shard.len() as u64 != len / k as u64 {
        return false;
    }
    if proof.0.len() != k.trailing_zeros() as usize {
        return false;
    }
    let mut cv = subtree_cv(shard, index as u64 * shard.len() as u64);
    let mut at = index;
    let (top, below) = proof.0.split_last().expect("k >= 2 gives one level");
    for sib in below {
        cv = if at % 2 == 0 {
            merge_subtrees_non_root(&cv, sib, Mode::Hash)
        } else {
            merge_subtrees_non_root(sib, &cv, Mode::Hash)
        };
        at /= 2;
    }
    let root = if at % 2 == 0 {
        merge_subtrees_root(&cv, top, Mode::Hash)
    } else {
        merge_subtrees_root(top, &cv, Mode::Hash)
    };
    root.as_bytes() == &id.0.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::erasure::Codec;

    fn chunk(len: usize, seed: u64) -> Vec<u8> {
        crate::core::sample::random(len, seed)
    }

    #[test]
    fn every_data_shard_proves_itself_against_the_plain_chunk_id() {
        for (len, k) in [
            (256 << 10, 2),
            (256 << 10, 4),
            (256 << 10, 8),
            (64 << 10, 64),
            (2048, 2),
        ] {
            let data = chunk(len, 7);
            let id = ChunkId::of(&data);
            let proofs = prove(&data, k).unwrap();
            // The shards are exactly the code's data shards.
            let m = if k + 2 <= 64 { 2 } else { 0 };
            let shards = Codec::new(k, m).unwrap().encode(&data);
            for (i, p) in proofs.iter().enumerate() {
                assert_eq!(p.0.len(), k.trailing_zeros() as usize);
                assert!(
                    verify(&id, len as u64, k, i, &shards[i], p),
                    "{len} {k} {i}"
                );
                // Any other shard, position, proof or id fails.
                assert!(!verify(&id, len as u64, k, (i + 1) % k, &shards[i], p));
                let mut bad = shards[i].clone();
                let mid = bad.len() / 2;
                bad[mid] ^= 1;
                assert!(!verify(&id, len as u64, k, i, &bad, p));
                if m > 0 {
                    assert!(!verify(&id, len as u64, k, i, &shards[k], p), "parity");
                }
                let mut q = p.clone();
                q.0[0][0] ^= 1;
                assert!(!verify(&id, len as u64, k, i, &shards[i], &q));
                assert!(!verify(
                    &ChunkId::of(b"other"),
                    len as u64,
                    k,
                    i,
                    &shards[i],
                    p
                ));
                assert!(!verify(&id, len as u64, k, i, &shards[i][1..], p));
            }
        }
    }

    #[test]
    fn chunks_without_a_complete_subtree_per_shard_have_no_proof() {
        assert!(!provable(256 << 10, 1));
        assert!(!provable(256 << 10, 3));
        assert!(!provable((256 << 10) - 1, 4));
        assert!(!provable(3 << 10, 2));
        assert!(!provable(4 << 10, 8), "512-byte shards");
        assert!(prove(&chunk(1000, 1), 2).is_none());
        let data = chunk(4096, 1);
        let p = prove(&data, 2).unwrap();
        assert!(!verify(
            &ChunkId::of(&data),
            4096,
            3,
            0,
            &data[..2048],
            &p[0]
        ));
    }

    /// Golden values: a change in how proofs are computed (or in the blake3
    /// crate's tree) would make stored proofs fail; this pins them.
    #[test]
    fn proofs_are_stable() {
        let data = crate::core::sample::random(256 << 10, 42);
        let p = prove(&data, 4).unwrap();
        let hex = |cv: &ChainingValue| cv.iter().map(|b| format!("{b:02x}")).collect::<String>();
        let got: Vec<String> = p[0].0.iter().map(hex).collect();
        assert_eq!(
            got,
            [
                "d5bb2930a773aa15fc81d3ec937ea26781ec275205811b85bdc9f7ff32e4c21a",
                "35b3127ec1d0c1273c7f6468fd5d3d5c632d89e52bc09e2336210c13bd7273db"
            ]
        );
    }
}
