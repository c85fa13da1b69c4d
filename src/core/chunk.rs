//! Chunks and their verification. A [`VerifiedChunk`] can only be made by
//! checking bytes against their [`ChunkId`], so code that accepts one (the cache,
//! the image reader) can never hand out unverified bytes.

use bytes::Bytes;

use crate::core::id::ChunkId;

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
