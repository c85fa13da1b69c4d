//! Chunks and their verification. A [`VerifiedChunk`] can only be made by
//! checking bytes against their [`ChunkId`], so code that accepts one (the cache,
//! the image reader) can never hand out unverified bytes. A [`VerifiedPiece`],
//! one data shard of a chunk, can only be made by checking its proof against
//! the chunk id ([`shard_proof`]).

use bytes::Bytes;

use crate::core::id::ChunkId;
use crate::core::shard_proof::{self, Proof};

/// Bytes that hashed to the id they were fetched under.
#[derive(Clone, Debug)]
pub struct VerifiedChunk {
    id: ChunkId,
    data: Bytes,
}

/// The bytes did not hash to the expected id.
#[derive(Debug, Clone, thiserror::Error)]
#[error("chunk {expected:?} failed verification (hashed to {actual:?}, {len} bytes)")]
pub struct HashMismatch {
    pub expected: ChunkId,
    pub actual: ChunkId,
    pub len: usize,
}

impl VerifiedChunk {
    /// Hash `data` and accept it only if it is the chunk `id`.
    pub fn verify(id: ChunkId, data: Bytes) -> Result<Self, HashMismatch> {
        let actual = ChunkId::of(&data);
        if actual == id {
            Ok(VerifiedChunk { id, data })
        } else {
            Err(HashMismatch {
                expected: id,
                actual,
                len: data.len(),
            })
        }
    }

    /// Wrap bytes whose id was just computed from them (publishing).
    pub fn hashed(data: Bytes) -> Self {
        VerifiedChunk {
            id: ChunkId::of(&data),
            data,
        }
    }

    pub fn id(&self) -> ChunkId {
        self.id
    }
    pub fn bytes(&self) -> &Bytes {
        &self.data
    }
    pub fn into_bytes(self) -> Bytes {
        self.data
    }
    pub fn len(&self) -> usize {
        self.data.len()
    }
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
}

/// The bytes `[offset, offset + len)` of the chunk `id`, proved against `id`
/// as one of its data shards.
#[derive(Clone, Debug)]
pub struct VerifiedPiece {
    id: ChunkId,
    offset: u64,
    data: Bytes,
}

impl VerifiedPiece {
    /// Accept `shard`, data shard `index` of the chunk `id` (`len` bytes, cut
    /// `k` ways), only if `proof` rebuilds `id` from it.
    pub fn prove(
        id: ChunkId,
        len: u64,
        k: usize,
        index: usize,
        shard: Bytes,
        proof: &Proof,
    ) -> Option<Self> {
        shard_proof::verify(&id, len, k, index, &shard, proof).then(|| VerifiedPiece {
            id,
            offset: index as u64 * shard.len() as u64,
            data: shard,
        })
    }

    pub fn id(&self) -> ChunkId {
        self.id
    }
    /// Where the piece starts in its chunk.
    pub fn offset(&self) -> u64 {
        self.offset
    }
    pub fn bytes(&self) -> &Bytes {
        &self.data
    }
    pub fn into_bytes(self) -> Bytes {
        self.data
    }
}

/// True when every byte is zero (such chunks are never stored).
pub fn is_zero(data: &[u8]) -> bool {
    // OR each 4 KiB block together (the compiler vectorises the fold) and stop
    // at the first block that is not zero.
    data.chunks(4096)
        .all(|block| block.iter().fold(0u8, |acc, &b| acc | b) == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verify_accepts_and_refuses() {
        let data = Bytes::from_static(b"some chunk");
        let id = ChunkId::of(&data);
        assert_eq!(VerifiedChunk::verify(id, data.clone()).unwrap().id(), id);
        let bad = Bytes::from_static(b"some chunK");
        let err = VerifiedChunk::verify(id, bad).unwrap_err();
        assert_eq!(err.expected, id);
        assert_ne!(err.actual, id);
    }

    #[test]
    fn a_piece_is_accepted_only_with_its_proof() {
        let data = crate::core::sample::random(8192, 3);
        let id = ChunkId::of(&data);
        let proofs = shard_proof::prove(&data, 2).unwrap();
        let half = Bytes::copy_from_slice(&data[4096..]);
        let p = VerifiedPiece::prove(id, 8192, 2, 1, half.clone(), &proofs[1]).unwrap();
        assert_eq!((p.id(), p.offset()), (id, 4096));
        assert!(p.bytes()[..] == data[4096..]);
        assert!(VerifiedPiece::prove(id, 8192, 2, 0, half.clone(), &proofs[0]).is_none());
        assert!(VerifiedPiece::prove(id, 8192, 2, 1, half.slice(1..), &proofs[1]).is_none());
    }

    #[test]
    fn zero_detection() {
        assert!(is_zero(&[]));
        assert!(is_zero(&[0; 1000]));
        for at in [0, 1, 15, 16, 17, 500, 999] {
            let mut v = vec![0u8; 1000];
            v[at] = 1;
            assert!(!is_zero(&v), "{at}");
            assert!(!is_zero(&v[1..]) || at == 0);
        }
    }
}
