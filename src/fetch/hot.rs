//! The hot set: recently used, already verified chunks (and pieces) in
//! memory.

use std::hash::Hash;

use bytes::Bytes;

use crate::core::id::ChunkId;

/// Recently used verified bytes in memory, in front of the disk cache, up to
/// a byte budget: a sequential reader asks for each chunk several times
/// (kernel requests are smaller than chunks), and a hit here costs no disk
/// read and no re-hash.
#[derive(Debug)]
pub struct Hot<K: Hash + Eq = ChunkId> {
    lru: lru::LruCache<K, Bytes>,
    bytes: u64,
    cap: u64,
}

impl Default for Hot {
    fn default() -> Self {
        Self::new(Self::CAP)
    }
}

impl Hot {
    /// The budget of the chunk hot set.
    pub const CAP: u64 = 64 << 20;
}

impl<K: Hash + Eq> Hot<K> {
    pub fn new(cap: u64) -> Self {
        Hot {
            lru: lru::LruCache::unbounded(),
            bytes: 0,
            cap,
        }
    }

    pub fn get(&mut self, key: &K) -> Option<Bytes> {
        self.lru.get(key).cloned()
    }

    /// Whether `key` is held, without touching its recency.
    pub fn contains(&self, key: &K) -> bool {
        self.lru.contains(key)
    }

    pub fn put(&mut self, key: K, data: Bytes) {
        if let Some(old) = self.lru.put(key, data.clone()) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_evicts_the_least_recently_used() {
        let mut h: Hot<u32> = Hot::new(300);
        for i in 0..3 {
            h.put(i, Bytes::from(vec![i as u8; 100]));
        }
        assert!(h.get(&0).is_some()); // 0 is now the most recent
        h.put(3, Bytes::from(vec![3; 100]));
        assert!(h.get(&1).is_none());
        assert!(h.get(&0).is_some() && h.get(&2).is_some() && h.get(&3).is_some());
        h.put(4, Bytes::from(vec![4; 1000])); // larger than the budget: all go
        assert!(h.get(&0).is_none() && h.get(&4).is_none());
    }
}
