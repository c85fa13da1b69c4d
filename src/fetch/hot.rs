//! The hot set: recently used, already verified chunks in memory.

use bytes::Bytes;

use crate::core::id::ChunkId;

/// Recently used chunks in memory (already verified), in front of the disk
/// cache: a sequential reader asks for each chunk several times (kernel
/// requests are smaller than chunks), and a hit here costs no disk read and
/// no re-hash.
#[derive(Debug)]
pub struct Hot {
    lru: lru::LruCache<ChunkId, Bytes>,
    bytes: u64,
    cap: u64,
}

impl Default for Hot {
    fn default() -> Self {
        Self::new()
    }
}

impl Hot {
    pub const CAP: u64 = 64 << 20;

    pub fn new() -> Self {
        Hot {
            lru: lru::LruCache::unbounded(),
            bytes: 0,
            cap: Self::CAP,
        }
    }

    pub fn get(&mut self, id: &ChunkId) -> Option<Bytes> {
        self.lru.get(id).cloned()
    }

    pub fn put(&mut self, id: ChunkId, data: Bytes) {
        if let Some(old) = self.lru.put(id, data.clone()) {
            self.bytes -= old.len() as u64;
        }
        self.bytes += data.len() as u64;
        while self.bytes > self.cap {
            match self.lru.pop_lru() {
                Some((_, b)) => self.bytes -= b.len() as u64,
                None => break,
            }
        }
    }
}
